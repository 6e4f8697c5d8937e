//! The cores' state as the fast path's map entries: bindings (home agent), visitors (foreign
//! agent), the mobile node's tunnels and the VPN's SPIs. Every conversion between a core's type
//! and a map type lives here, once, and the decisions of what to write on an event are plain
//! functions over a small [`Maps`] trait, so they are tested against [`FakeMaps`] without a
//! kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::maps::{
    FaVisitor, HaBinding, MN_ACTIVE, MN_REVERSE_TUNNEL, MN_UDP_TUNNEL, MN_VIA_VPN, MnTunnel,
    TUNNEL_REVERSE, TUNNEL_UDP, VISITOR_REVERSE_TUNNEL, VISITOR_UDP_TUNNEL,
};
use mipx_common::wire::RequestFlags;

use super::{Dataplane, DataplaneError};
use crate::binding::Binding;
use crate::proto::fa::Visitor;
use crate::proto::ha::{HaEvent, RemovalReason};
use crate::proto::{Now, Tunnel};

/// The map operations the shells perform, by entry.
pub trait Maps {
    fn upsert_binding(&mut self, home_addr: Ipv4Addr, b: HaBinding) -> Result<(), DataplaneError>;
    fn remove_binding(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError>;
    fn bindings(&self) -> Result<Vec<(Ipv4Addr, HaBinding)>, DataplaneError>;
    fn upsert_visitor(&mut self, home_addr: Ipv4Addr, v: FaVisitor) -> Result<(), DataplaneError>;
    fn remove_visitor(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError>;
    fn add_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError>;
    fn remove_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError>;
}

impl Maps for Dataplane {
    fn upsert_binding(&mut self, home_addr: Ipv4Addr, b: HaBinding) -> Result<(), DataplaneError> {
        Dataplane::upsert_binding(self, home_addr, b)
    }
    fn remove_binding(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        Dataplane::remove_binding(self, home_addr)
    }
    fn bindings(&self) -> Result<Vec<(Ipv4Addr, HaBinding)>, DataplaneError> {
        Dataplane::bindings(self)
    }
    fn upsert_visitor(&mut self, home_addr: Ipv4Addr, v: FaVisitor) -> Result<(), DataplaneError> {
        Dataplane::upsert_visitor(self, home_addr, v)
    }
    fn remove_visitor(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        Dataplane::remove_visitor(self, home_addr)
    }
    fn add_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        Dataplane::add_vpn_spi(self, spi)
    }
    fn remove_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        Dataplane::remove_vpn_spi(self, spi)
    }
}

/// Maps in memory, for tests: what a kernel's maps would hold, and a switch to make every
/// write fail (a full map, a vanished pin).
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub bindings: BTreeMap<Ipv4Addr, HaBinding>,
    pub visitors: BTreeMap<Ipv4Addr, FaVisitor>,
    pub spis: BTreeSet<[u8; 4]>,
    pub fail_writes: bool,
}

impl FakeMaps {
    fn write(&self) -> Result<(), DataplaneError> {
        if self.fail_writes {
            Err(DataplaneError::NoSuchInterface(
                "fake map write refused".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Maps for FakeMaps {
    fn upsert_binding(&mut self, home_addr: Ipv4Addr, b: HaBinding) -> Result<(), DataplaneError> {
        self.write()?;
        self.bindings.insert(home_addr, b);
        Ok(())
    }
    fn remove_binding(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.write()?;
        self.bindings.remove(&home_addr);
        Ok(())
    }
    fn bindings(&self) -> Result<Vec<(Ipv4Addr, HaBinding)>, DataplaneError> {
        Ok(self.bindings.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn upsert_visitor(&mut self, home_addr: Ipv4Addr, v: FaVisitor) -> Result<(), DataplaneError> {
        self.write()?;
        self.visitors.insert(home_addr, v);
        Ok(())
    }
    fn remove_visitor(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.write()?;
        self.visitors.remove(&home_addr);
        Ok(())
    }
    fn add_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        self.write()?;
        self.spis.insert(spi);
        Ok(())
    }
    fn remove_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        self.write()?;
        self.spis.remove(&spi);
        Ok(())
    }
}

/// The dataplane's copy of a binding: what the fast path needs, plus what a restarted `mipd`
/// needs to adopt it (its expiry in Unix time).
pub fn ha_binding(b: &Binding, home_agent: Ipv4Addr, now: Now) -> HaBinding {
    let left = b.remaining(now.mono);
    let expires = now.unix + left;
    let registered = expires.saturating_sub(Duration::from_secs(b.lifetime.into()));
    // With UDP tunnelling the tunnel's far end; it is the registration's source (RFC 3519
    // §4.6).
    let far_end = b.udp_tunnel.unwrap_or(b.source);
    HaBinding {
        care_of_addr: b.care_of_addr.octets(),
        home_agent: home_agent.octets(),
        tunnel_flags: flag(b.flags.contains(RequestFlags::T), TUNNEL_REVERSE)
            | flag(b.udp_tunnel.is_some(), TUNNEL_UDP),
        spi: b.spi,
        source_addr: far_end.ip().octets(),
        source_port: far_end.port().to_be_bytes(),
        lifetime: b.lifetime,
        request_flags: b.flags.0,
        _pad: [0; 7],
        identification: b.identification,
        registered_unix_ms: registered.as_millis() as u64,
        expires_unix_ms: expires.as_millis() as u64,
    }
}

/// A binding a previous `mipd` left in the pinned map, for `HomeAgent::restore`, with its
/// expiry in Unix time. Its times on our clock are set by the core.
pub fn restored_binding(home_addr: Ipv4Addr, b: &HaBinding) -> (Binding, Duration) {
    let source = SocketAddrV4::new(b.source_addr.into(), u16::from_be_bytes(b.source_port));
    let binding = Binding {
        home_addr,
        care_of_addr: b.care_of_addr.into(),
        source,
        flags: RequestFlags(b.request_flags),
        udp_tunnel: (b.tunnel_flags & TUNNEL_UDP != 0).then_some(source),
        half_bound: false,
        spi: b.spi,
        identification: b.identification,
        lifetime: b.lifetime,
        registered_at: Duration::ZERO,
        expires_at: Duration::ZERO,
    };
    (binding, Duration::from_millis(b.expires_unix_ms))
}

/// A gratuitous ARP the home agent owes the home link after a binding change (RFC 5944 §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// A new binding: the home address is at the home agent's MAC.
    Intercepting(Ipv4Addr),
    /// A deregistration: the home address is back at the mobile node's own MAC, which the
    /// shell learns from the kernel's neighbour table.
    Returned(Ipv4Addr),
}

/// Applies one binding-cache event to the map; the binding cache is the source of truth and
/// the map mirrors it at once. Returns the gratuitous ARP the event calls for (sent whether or
/// not the write worked: the home link must learn either way) and the write's outcome.
pub fn apply_ha_event(
    maps: &mut impl Maps,
    event: &HaEvent,
    home_agent: Ipv4Addr,
    now: Now,
) -> (Option<Announce>, Result<(), DataplaneError>) {
    match event {
        // RFC 3519 §4.11: a half-bound tunnel has no far end until the mobile node's first
        // keepalive; tunnelling to the registration's source would reach the foreign agent,
        // not the node.
        HaEvent::BindingAdded(b) | HaEvent::BindingUpdated { new: b, .. }
            if b.half_bound && b.udp_tunnel.is_none() =>
        {
            (None, maps.remove_binding(b.home_addr))
        }
        // §4.6: a new binding (the MN was assumed at home) MUST be announced with a gratuitous
        // ARP on the home link.
        HaEvent::BindingAdded(b) => (
            Some(Announce::Intercepting(b.home_addr)),
            maps.upsert_binding(b.home_addr, ha_binding(b, home_agent, now)),
        ),
        HaEvent::BindingUpdated { new, .. } => (
            None,
            maps.upsert_binding(new.home_addr, ha_binding(new, home_agent, now)),
        ),
        HaEvent::BindingRemoved { binding, reason } => (
            (*reason == RemovalReason::Deregistered)
                .then_some(Announce::Returned(binding.home_addr)),
            maps.remove_binding(binding.home_addr),
        ),
    }
}

/// The map entry for `spec`; `None` is "no tunnel" ([`MnTunnel::default`]).
pub fn mn_tunnel(spec: Option<Tunnel>) -> MnTunnel {
    let Some(spec) = spec else {
        return MnTunnel::default();
    };
    let (mn_port, ha_port) = spec.udp.unwrap_or((0, 0));
    MnTunnel {
        home_addr: spec.home_addr.octets(),
        home_agent: spec.home_agent.octets(),
        care_of_addr: spec.care_of_addr.octets(),
        flags: MN_ACTIVE
            | flag(spec.reverse, MN_REVERSE_TUNNEL)
            | flag(spec.udp.is_some(), MN_UDP_TUNNEL)
            | flag(spec.via_vpn, MN_VIA_VPN),
        mn_port: mn_port.to_be_bytes(),
        ha_port: ha_port.to_be_bytes(),
    }
}

/// The foreign agent's fast-path entry for a visitor, with its expiry in Unix milliseconds
/// (for a restarted `mipd`). A co-located care-of address registered through us needs none:
/// the mobile node decapsulates and reverse-tunnels itself (RFC 3024 §4.1.2).
pub fn fa_visitor(v: &Visitor, mono: Duration, unix_ms: u64) -> Option<FaVisitor> {
    if v.co_located {
        return None;
    }
    let expires_unix_ms = match v.remaining(mono) {
        Some(left) => unix_ms + left.as_millis() as u64,
        None => u64::MAX,
    };
    Some(FaVisitor {
        care_of_addr: v.care_of_addr.octets(),
        home_agent: v.home_agent.octets(),
        ifindex: v.iface,
        flags: flag(v.reverse_tunnel, VISITOR_REVERSE_TUNNEL)
            | flag(v.udp_keepalive.is_some(), VISITOR_UDP_TUNNEL),
        mac: v.mac,
        lifetime: v.lifetime,
        source_port: v.source.port().to_be_bytes(),
        identification: v.identification,
        expires_unix_ms,
        ..FaVisitor::default()
    })
}

/// Brings the gate's SPI set to `wanted` (the CHILD_SAs' SPIs, both directions), adding the new
/// ones before removing the old, so a rekey never leaves the new SA's packets unpassed.
/// `installed` tracks what the map holds; returns the failed writes.
pub fn sync_spis(maps: &mut impl Maps, installed: &mut Vec<[u8; 4]>, wanted: &[[u8; 4]]) -> u64 {
    let mut errors = 0;
    for spi in wanted {
        if !installed.contains(spi) {
            match maps.add_vpn_spi(*spi) {
                Ok(()) => installed.push(*spi),
                Err(_) => errors += 1,
            }
        }
    }
    let stale: Vec<[u8; 4]> = installed
        .iter()
        .filter(|s| !wanted.contains(s))
        .copied()
        .collect();
    for spi in stale {
        if maps.remove_vpn_spi(spi).is_ok() {
            installed.retain(|s| *s != spi);
        }
    }
    errors
}

fn flag(on: bool, bit: u32) -> u32 {
    if on { bit } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fa::DeliveryStyle;

    const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
    const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn now() -> Now {
        Now {
            mono: Duration::from_secs(100),
            unix: Duration::from_secs(1_800_000_000),
        }
    }

    fn binding() -> Binding {
        Binding {
            home_addr: HOME,
            care_of_addr: COA,
            source: SocketAddrV4::new(COA, 50_434),
            flags: RequestFlags(RequestFlags::T),
            udp_tunnel: None,
            half_bound: false,
            spi: 0x1000,
            identification: 0x1122_3344_5566_7788,
            lifetime: 600,
            registered_at: Duration::from_secs(40),
            expires_at: Duration::from_secs(640),
        }
    }

    #[test]
    fn a_binding_survives_the_round_trip_through_the_map() {
        let b = binding();
        let entry = ha_binding(&b, HA, now());
        assert_eq!(entry.tunnel_flags, TUNNEL_REVERSE);
        assert_eq!(entry.home_agent, HA.octets());
        // 540 s left at unix 1.8e9 s; the registration is dated lifetime before the expiry.
        assert_eq!(entry.expires_unix_ms, (1_800_000_000 + 540) * 1000);
        assert_eq!(entry.registered_unix_ms, (1_800_000_000 + 540 - 600) * 1000);
        let (back, expires) = restored_binding(HOME, &entry);
        assert_eq!(expires, Duration::from_secs(1_800_000_540));
        assert_eq!(
            back,
            Binding {
                registered_at: Duration::ZERO,
                expires_at: Duration::ZERO,
                ..b
            }
        );
    }

    #[test]
    fn a_udp_tunnel_is_written_to_its_far_end_and_restored_as_one() {
        let nat = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 40_001);
        let b = Binding {
            source: nat,
            udp_tunnel: Some(nat),
            ..binding()
        };
        let entry = ha_binding(&b, HA, now());
        assert_eq!(entry.tunnel_flags, TUNNEL_REVERSE | TUNNEL_UDP);
        assert_eq!(entry.source_addr, nat.ip().octets());
        assert_eq!(entry.source_port, 40_001u16.to_be_bytes());
        let (back, _) = restored_binding(HOME, &entry);
        assert_eq!(back.udp_tunnel, Some(nat));
    }

    #[test]
    fn events_are_mirrored_and_announced_as_rfc_5944_4_6_asks() {
        let mut maps = FakeMaps::default();
        let b = binding();
        let (announce, r) = apply_ha_event(&mut maps, &HaEvent::BindingAdded(b.clone()), HA, now());
        r.unwrap();
        assert_eq!(announce, Some(Announce::Intercepting(HOME)));
        assert_eq!(maps.bindings[&HOME].care_of_addr, COA.octets());

        let moved = Binding {
            care_of_addr: Ipv4Addr::new(198, 51, 100, 8),
            ..b.clone()
        };
        let update = HaEvent::BindingUpdated {
            old: b.clone(),
            new: moved.clone(),
        };
        let (announce, r) = apply_ha_event(&mut maps, &update, HA, now());
        r.unwrap();
        assert_eq!(announce, None, "a move is not a new interception");
        assert_eq!(
            maps.bindings[&HOME].care_of_addr,
            moved.care_of_addr.octets()
        );

        let expired = HaEvent::BindingRemoved {
            binding: moved.clone(),
            reason: RemovalReason::Expired,
        };
        let (announce, r) = apply_ha_event(&mut maps, &expired, HA, now());
        r.unwrap();
        assert_eq!(announce, None, "an expiry announces nothing");
        assert!(maps.bindings.is_empty());

        apply_ha_event(&mut maps, &HaEvent::BindingAdded(b.clone()), HA, now())
            .1
            .unwrap();
        let home = HaEvent::BindingRemoved {
            binding: b,
            reason: RemovalReason::Deregistered,
        };
        let (announce, r) = apply_ha_event(&mut maps, &home, HA, now());
        r.unwrap();
        assert_eq!(announce, Some(Announce::Returned(HOME)));
        assert!(maps.bindings.is_empty());
    }

    #[test]
    fn a_half_bound_tunnel_is_not_in_the_map_until_its_far_end_is_known() {
        let mut maps = FakeMaps::default();
        let b = binding();
        apply_ha_event(&mut maps, &HaEvent::BindingAdded(b.clone()), HA, now())
            .1
            .unwrap();
        let half = Binding {
            half_bound: true,
            ..b.clone()
        };
        let (announce, r) = apply_ha_event(
            &mut maps,
            &HaEvent::BindingUpdated {
                old: b.clone(),
                new: half.clone(),
            },
            HA,
            now(),
        );
        r.unwrap();
        assert_eq!(announce, None);
        assert!(
            maps.bindings.is_empty(),
            "RFC 3519 §4.11: nothing tunnelled yet"
        );
        let far = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 40_001);
        let bound = Binding {
            udp_tunnel: Some(far),
            ..half.clone()
        };
        apply_ha_event(
            &mut maps,
            &HaEvent::BindingUpdated {
                old: half,
                new: bound,
            },
            HA,
            now(),
        )
        .1
        .unwrap();
        assert_eq!(maps.bindings[&HOME].source_port, 40_001u16.to_be_bytes());
    }

    #[test]
    fn a_failed_write_is_reported_and_still_announced() {
        let mut maps = FakeMaps {
            fail_writes: true,
            ..FakeMaps::default()
        };
        let (announce, r) = apply_ha_event(&mut maps, &HaEvent::BindingAdded(binding()), HA, now());
        assert!(r.is_err());
        assert_eq!(announce, Some(Announce::Intercepting(HOME)));
    }

    #[test]
    fn tunnels_carry_exactly_their_flags_and_ports() {
        let spec = Tunnel {
            home_addr: HOME,
            home_agent: HA,
            care_of_addr: COA,
            reverse: false,
            udp: None,
            via_vpn: false,
        };
        let plain = mn_tunnel(Some(spec));
        assert_eq!(plain.flags, MN_ACTIVE);
        assert_eq!((plain.mn_port, plain.ha_port), ([0; 2], [0; 2]));
        let udp = mn_tunnel(Some(Tunnel {
            reverse: true,
            udp: Some((50_434, 434)),
            ..spec
        }));
        assert_eq!(udp.flags, MN_ACTIVE | MN_REVERSE_TUNNEL | MN_UDP_TUNNEL);
        assert_eq!(udp.mn_port, 50_434u16.to_be_bytes());
        assert_eq!(udp.ha_port, 434u16.to_be_bytes());
        let vpn = mn_tunnel(Some(Tunnel {
            reverse: true,
            via_vpn: true,
            ..spec
        }));
        assert_eq!(vpn.flags, MN_ACTIVE | MN_REVERSE_TUNNEL | MN_VIA_VPN);
        assert_ne!(plain, MnTunnel::default());
        assert_eq!(mn_tunnel(None), MnTunnel::default());
    }

    fn visitor() -> Visitor {
        Visitor {
            home_addr: HOME,
            home_agent: HA,
            mac: [2, 0, 0, 0, 0, 10],
            iface: 3,
            care_of_addr: COA,
            source: SocketAddrV4::new(HOME, 50_434),
            co_located: false,
            reverse_tunnel: true,
            udp_keepalive: None,
            delivery: DeliveryStyle::Direct,
            identification: 7,
            lifetime: 300,
            registered_at: Duration::from_secs(10),
            expires_at: Some(Duration::from_secs(310)),
        }
    }

    #[test]
    fn visitors_expire_in_unix_time_and_co_located_ones_need_no_entry() {
        let v = visitor();
        let e = fa_visitor(&v, Duration::from_secs(110), 5_000).unwrap();
        assert_eq!(e.expires_unix_ms, 5_000 + 200_000);
        assert_eq!(e.flags, VISITOR_REVERSE_TUNNEL);
        assert_eq!(e.ifindex, 3);
        let forever = Visitor {
            expires_at: None,
            udp_keepalive: Some(Duration::from_secs(20)),
            ..v.clone()
        };
        let e = fa_visitor(&forever, Duration::from_secs(110), 5_000).unwrap();
        assert_eq!(e.expires_unix_ms, u64::MAX);
        assert_eq!(e.flags, VISITOR_REVERSE_TUNNEL | VISITOR_UDP_TUNNEL);
        let co = Visitor {
            co_located: true,
            ..v
        };
        assert_eq!(fa_visitor(&co, Duration::ZERO, 0), None);
    }

    #[test]
    fn spis_follow_a_rekey_new_first() {
        let mut maps = FakeMaps::default();
        let mut installed = Vec::new();
        let (a, b, c) = ([0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3]);
        assert_eq!(sync_spis(&mut maps, &mut installed, &[a, b]), 0);
        assert_eq!(maps.spis, BTreeSet::from([a, b]));
        // A rekey: c replaces b.
        assert_eq!(sync_spis(&mut maps, &mut installed, &[a, c]), 0);
        assert_eq!(maps.spis, BTreeSet::from([a, c]));
        assert_eq!(installed, vec![a, c]);
        // A refused write is counted and retried on the next sync.
        maps.fail_writes = true;
        assert_eq!(sync_spis(&mut maps, &mut installed, &[a, b, c]), 1);
        maps.fail_writes = false;
        assert_eq!(sync_spis(&mut maps, &mut installed, &[a, b, c]), 0);
        assert_eq!(maps.spis, BTreeSet::from([a, b, c]));
    }
}
