//! The home agent's binding cache (RFC 5944 §3.8.1): one mobility binding per home address,
//! with expiry ordered by deadline so that `next_expiry` and `expire` stay cheap at 100,000
//! bindings.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::RequestFlags;

/// One mobility binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub home_addr: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    /// Where the registration came from (address and port); differs from the care-of address
    /// behind a NAT or an FA.
    pub source: SocketAddrV4,
    /// Flags of the accepted request (T: reverse tunnel, D: co-located care-of address, ...).
    pub flags: RequestFlags,
    /// RFC 3519 UDP tunnelling, when the home agent assented to it: the far end of the UDP
    /// tunnel, which is where the registration came from (the NAT's address and port, "the
    /// effective care-of address", §4.6). `None`: plain IP-in-IP to `care_of_addr`.
    pub udp_tunnel: Option<SocketAddrV4>,
    /// RFC 3519 §4.11: UDP tunnelling assented for a co-located care-of address registered
    /// through a foreign agent ('R' in the UDP Tunnel Request). `source` is then the agent's
    /// (NAT's) address and port, and `udp_tunnel` is learnt from the mobile node's keepalives
    /// from that address: `None` until the first, so nothing is tunnelled yet.
    pub half_bound: bool,
    /// SPI of the security association that authenticated it.
    pub spi: u32,
    pub identification: u64,
    /// Granted lifetime, seconds.
    pub lifetime: u16,
    /// Monotonic time of the last accepted registration.
    pub registered_at: Duration,
    /// Monotonic time at which the binding ends.
    pub expires_at: Duration,
}

impl Binding {
    /// Seconds left, rounded down, at `now`.
    pub fn remaining(&self, now: Duration) -> Duration {
        self.expires_at.saturating_sub(now)
    }
}

/// The binding cache.
#[derive(Debug, Default)]
pub struct BindingCache {
    by_home: HashMap<Ipv4Addr, Binding>,
    // (deadline, home address): the earliest deadline first.
    deadlines: BTreeSet<(Duration, Ipv4Addr)>,
    /// (UDP tunnel far end, care-of address) → bindings with both: what a foreign agent's
    /// keepalive is checked against (RFC 3519 §4.5, §4.9) in one lookup, so that a flood of
    /// forged keepalives costs no scan of the cache.
    by_tunnel: HashMap<(SocketAddrV4, Ipv4Addr), usize>,
}

impl BindingCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the binding for its home address; returns the previous one.
    pub fn insert(&mut self, binding: Binding) -> Option<Binding> {
        self.deadlines
            .insert((binding.expires_at, binding.home_addr));
        self.index(&binding, true);
        let old = self.by_home.insert(binding.home_addr, binding);
        if let Some(old) = &old {
            self.index(old, false);
            // A refresh with the same deadline must not drop the entry we just added.
            if self.by_home[&old.home_addr].expires_at != old.expires_at {
                self.deadlines.remove(&(old.expires_at, old.home_addr));
            }
        }
        old
    }

    pub fn remove(&mut self, home_addr: Ipv4Addr) -> Option<Binding> {
        let old = self.by_home.remove(&home_addr)?;
        self.deadlines.remove(&(old.expires_at, old.home_addr));
        self.index(&old, false);
        Some(old)
    }

    /// Whether some binding has its UDP tunnel to `far_end` and care-of address `care_of`.
    pub fn has_tunnel(&self, far_end: SocketAddrV4, care_of: Ipv4Addr) -> bool {
        self.by_tunnel.contains_key(&(far_end, care_of))
    }

    fn index(&mut self, b: &Binding, add: bool) {
        let Some(far_end) = b.udp_tunnel else { return };
        let key = (far_end, b.care_of_addr);
        if add {
            *self.by_tunnel.entry(key).or_default() += 1;
        } else if let Some(n) = self.by_tunnel.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_tunnel.remove(&key);
            }
        }
    }

    pub fn get(&self, home_addr: Ipv4Addr) -> Option<&Binding> {
        self.by_home.get(&home_addr)
    }

    pub fn len(&self) -> usize {
        self.by_home.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_home.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_home.values()
    }

    /// The earliest deadline, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Removes and returns every binding whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Duration) -> Vec<Binding> {
        let mut out = Vec::new();
        while let Some(&(t, home)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(b) = self.by_home.remove(&home) {
                self.index(&b, false);
                out.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(last: u8, expires: u64) -> Binding {
        Binding {
            home_addr: Ipv4Addr::new(10, 0, 0, last),
            care_of_addr: Ipv4Addr::new(192, 0, 2, last),
            source: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, last), 434),
            flags: RequestFlags::default(),
            udp_tunnel: None,
            half_bound: false,
            spi: 256,
            identification: 1,
            lifetime: 10,
            registered_at: Duration::ZERO,
            expires_at: Duration::from_secs(expires),
        }
    }

    #[test]
    fn expiry_in_deadline_order_and_refresh_moves_deadline() {
        let mut c = BindingCache::new();
        c.insert(binding(1, 30));
        c.insert(binding(2, 10));
        c.insert(binding(1, 50)); // refresh: old deadline 30 must go
        c.insert(binding(2, 10)); // same deadline again must stay
        assert_eq!(c.next_expiry(), Some(Duration::from_secs(10)));
        assert_eq!(c.expire(Duration::from_secs(30)).len(), 1);
        assert_eq!(c.next_expiry(), Some(Duration::from_secs(50)));
        assert_eq!(c.len(), 1);
        assert!(c.remove(Ipv4Addr::new(10, 0, 0, 1)).is_some());
        assert_eq!(c.next_expiry(), None);
        assert!(c.is_empty());
    }

    /// The foreign agents' tunnel index follows every insert, replacement, removal and
    /// expiry, and counts two bindings through one agent's tunnel separately.
    #[test]
    fn tunnel_index_follows_the_cache() {
        let nat = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 61_000);
        let nat2 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 61_001);
        let fa_coa = Ipv4Addr::new(192, 168, 5, 3);
        let via = |last, far_end, expires| Binding {
            care_of_addr: fa_coa,
            udp_tunnel: Some(far_end),
            ..binding(last, expires)
        };
        let mut c = BindingCache::new();
        c.insert(via(1, nat, 30));
        c.insert(via(2, nat, 40));
        assert!(c.has_tunnel(nat, fa_coa));
        assert!(
            !c.has_tunnel(nat, Ipv4Addr::new(10, 0, 0, 1)),
            "the care-of address counts"
        );
        c.insert(via(1, nat2, 30)); // the NAT moved one of them
        assert!(c.has_tunnel(nat, fa_coa) && c.has_tunnel(nat2, fa_coa));
        c.remove(Ipv4Addr::new(10, 0, 0, 2));
        assert!(!c.has_tunnel(nat, fa_coa));
        c.expire(Duration::from_secs(30));
        assert!(!c.has_tunnel(nat2, fa_coa));
    }
}
