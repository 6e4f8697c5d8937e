//! The home agent's registration engine (RFC 5944 §3.8), sans-IO.
//!
//! Order of checks follows §3.8.2.1: parse, authorization-enabling extension and security
//! association (silent discard when missing), authenticator (131), Identification (133),
//! Foreign-Home extension rules, then the request itself (136, 134, 139, lifetime).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{
    Error as WireError, Extension, ReplyCode, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket,
    RequestRepr,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{Now, Transmit, ntp_timestamp, signed_message, unix_from_ntp};
use crate::auth::{self, ReplayProtection, SecurityAssociation};
use crate::binding::{Binding, BindingCache};

/// Which mobile nodes a security association serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HomeAddrs {
    /// One mobile node.
    Single(Ipv4Addr),
    /// Every home address in a prefix (a pool of mobile nodes provisioned with one key).
    Prefix(Ipv4Addr, u8),
}

impl HomeAddrs {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        match *self {
            HomeAddrs::Single(h) => h == a,
            HomeAddrs::Prefix(p, len) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(p) & mask
            }
        }
    }
}

/// A mobile node (or pool) this home agent serves, with its security association.
#[derive(Clone, Debug)]
pub struct MobileNodeEntry {
    pub home_addrs: HomeAddrs,
    pub sa: SecurityAssociation,
}

/// Home agent configuration.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// The home agent's own address, which requests must name (§3.8.2.1, code 136).
    pub address: Ipv4Addr,
    /// Longest lifetime granted; longer requests are shortened, never refused (§3.8.2.2).
    pub max_lifetime: u16,
    pub mobile_nodes: Vec<MobileNodeEntry>,
}

/// Why a binding ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    Deregistered,
    Expired,
}

/// Side effects for the shell to apply (BPF maps, neighbour proxy, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaEvent {
    BindingAdded(Binding),
    /// A refresh or a move: `old.care_of_addr` may differ from `new.care_of_addr`.
    BindingUpdated {
        old: Binding,
        new: Binding,
    },
    BindingRemoved {
        binding: Binding,
        reason: RemovalReason,
    },
}

/// Counters for `mipctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HaStats {
    pub requests: u64,
    pub accepted: u64,
    pub deregistered: u64,
    pub expired: u64,
    /// Replies sent with a denial code, by code.
    pub rejected: BTreeMap<u8, u64>,
    /// Silently discarded: not a Registration Request or truncated fixed part.
    pub dropped_malformed: u64,
    /// Silently discarded: an extension's length runs past the message or is wrong.
    pub dropped_bad_extension: u64,
    /// Silently discarded: unknown non-skippable extension (RFC 5944 §1.9).
    pub dropped_unknown_extension: u64,
    /// Silently discarded: no Mobile-Home Authentication Extension (§3.8.2.1 a).
    pub dropped_no_auth: u64,
    /// Silently discarded: no security association for home address and SPI (§3.8.2.1 a).
    pub dropped_unknown_sa: u64,
    /// Silently discarded: a Foreign-Home extension without an FA security association (d).
    pub dropped_fa_auth: u64,
}

/// The home agent.
#[derive(Debug)]
pub struct HomeAgent {
    config: HaConfig,
    exact: HashMap<Ipv4Addr, Vec<usize>>,
    bindings: BindingCache,
    /// Highest accepted Identification per home address: timestamps MUST increase even across
    /// bindings (RFC 5944 §5.7.1), so this outlives the binding.
    last_identification: HashMap<Ipv4Addr, u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HaEvent>,
    stats: HaStats,
}

/// What one request resolved to, before the reply is built.
enum Verdict {
    Drop,
    Reply {
        code: ReplyCode,
        lifetime: u16,
        identification: u64,
        home_agent: Ipv4Addr,
    },
}

impl HomeAgent {
    pub fn new(config: HaConfig) -> Self {
        let mut exact: HashMap<Ipv4Addr, Vec<usize>> = HashMap::new();
        for (i, e) in config.mobile_nodes.iter().enumerate() {
            if let HomeAddrs::Single(h) = e.home_addrs {
                exact.entry(h).or_default().push(i);
            }
        }
        HomeAgent {
            config,
            exact,
            bindings: BindingCache::new(),
            last_identification: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: HaStats::default(),
        }
    }

    pub fn config(&self) -> &HaConfig {
        &self.config
    }

    pub fn stats(&self) -> &HaStats {
        &self.stats
    }

    pub fn bindings(&self) -> &BindingCache {
        &self.bindings
    }

    /// The security association for `home` and `spi`: exact home addresses first, then pools.
    fn find_sa(&self, home: Ipv4Addr, spi: u32) -> Option<&SecurityAssociation> {
        let exact = self
            .exact
            .get(&home)
            .into_iter()
            .flatten()
            .map(|&i| &self.config.mobile_nodes[i]);
        let pools = self
            .config
            .mobile_nodes
            .iter()
            .filter(|e| matches!(e.home_addrs, HomeAddrs::Prefix(..)));
        exact
            .chain(pools.filter(|e| e.home_addrs.contains(home)))
            .map(|e| &e.sa)
            .find(|sa| sa.spi == spi)
    }

    /// Processes one datagram received on UDP port 434 from `from`, sent to our address `to`.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddrV4, to: Ipv4Addr, bytes: &[u8]) {
        self.handle_timeout(now);
        self.stats.requests += 1;
        let Ok(packet) = RequestPacket::new_checked(bytes) else {
            self.stats.dropped_malformed += 1;
            debug!(%from, len = bytes.len(), "dropped: not a registration request");
            return;
        };
        // The fixed part parsed, so this cannot fail.
        let Ok(req) = RequestRepr::parse(&packet) else {
            return;
        };

        // Walk the extensions up to and including the authorization-enabling one; the rest
        // belong to the foreign agent (§3.7.2.2). Everything must parse (§1.9).
        let mut mn_ha = None;
        let mut nai = None;
        let mut fa_ha = 0usize;
        let mut duplicate = false;
        let mut seen = [false; 256];
        for item in packet.extensions() {
            match item {
                Ok((at, ext)) => {
                    if mn_ha.is_none() {
                        let kind = usize::from(ext.kind());
                        duplicate |= seen[kind] && !matches!(ext, Extension::Other { .. });
                        seen[kind] = true;
                    }
                    match ext {
                        Extension::MnHaAuth(a) if mn_ha.is_none() => mn_ha = Some((at, a)),
                        Extension::MnNai(n) if mn_ha.is_none() => nai = Some(n),
                        Extension::FaHaAuth(_) => fa_ha += 1,
                        _ => {}
                    }
                }
                Err(WireError::UnknownMandatoryExtension(kind)) => {
                    self.stats.dropped_unknown_extension += 1;
                    info!(%from, kind, "dropped: unknown non-skippable extension (RFC 5944 §1.9)");
                    return;
                }
                Err(e) => {
                    self.stats.dropped_bad_extension += 1;
                    info!(%from, error = %e, "dropped: malformed extension");
                    return;
                }
            }
        }
        let Some((auth_at, auth_ext)) = mn_ha else {
            self.stats.dropped_no_auth += 1;
            info!(%from, home = %req.home_addr, "dropped: no Mobile-Home Authentication Extension");
            return;
        };
        let Some(sa) = self.find_sa(req.home_addr, auth_ext.spi).cloned() else {
            self.stats.dropped_unknown_sa += 1;
            info!(%from, home = %req.home_addr, spi = auth_ext.spi, "dropped: no security association");
            return;
        };

        let verdict = self.decide(
            now,
            from,
            to,
            &req,
            &sa,
            bytes,
            auth_at,
            auth_ext.authenticator,
            fa_ha,
            duplicate,
        );
        let Verdict::Reply {
            code,
            lifetime,
            identification,
            home_agent,
        } = verdict
        else {
            return;
        };
        if !code.is_accepted() {
            *self.stats.rejected.entry(code.into()).or_default() += 1;
        }
        let reply = ReplyRepr {
            code,
            lifetime,
            home_addr: req.home_addr,
            home_agent,
            identification,
        };
        let mut fixed = [0u8; ReplyRepr::LEN];
        // The buffer is exactly LEN bytes.
        let _ = reply.emit(&mut ReplyPacket::new_unchecked(&mut fixed[..]));
        // RFC 2794 §3: a reply to a request carrying the NAI carries it too.
        let extensions: Vec<Extension<'_>> = nai.map(Extension::MnNai).into_iter().collect();
        let payload = signed_message(&fixed, &extensions, sa.spi, &sa.key);
        // §3.8.3.1: reply from the address the request was sent to, to its source.
        self.transmits.push_back(Transmit {
            src: Some(to),
            dst: from,
            payload,
        });
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one request's already-parsed parts"
    )]
    fn decide(
        &mut self,
        now: Now,
        from: SocketAddrV4,
        to: Ipv4Addr,
        req: &RequestRepr,
        sa: &SecurityAssociation,
        bytes: &[u8],
        auth_at: usize,
        authenticator: &[u8],
        fa_ha: usize,
        duplicate: bool,
    ) -> Verdict {
        let our = self.config.address;
        let reply = |code, lifetime, identification| Verdict::Reply {
            code,
            lifetime,
            identification,
            home_agent: our,
        };

        // (a) Authenticator. §3.8.2.1 lets us answer 131 (signed with the SA we have) when
        // there is no FA security association; we do, so that a misconfigured MN learns why.
        if !auth::verify(bytes, auth_at, authenticator, &sa.key) {
            warn!(%from, home = %req.home_addr, spi = sa.spi, "security exception: authenticator mismatch");
            return reply(ReplyCode::HaMobileNodeFailedAuth, 0, req.identification);
        }

        // (b) Identification (§5.7.1): close to our clock and above every accepted value.
        match sa.replay {
            ReplayProtection::Timestamp { tolerance } => {
                let theirs = unix_from_ntp(req.identification);
                let skew = theirs.abs_diff(now.unix);
                let last = self
                    .last_identification
                    .get(&req.home_addr)
                    .copied()
                    .unwrap_or(0);
                if skew > tolerance || req.identification <= last {
                    warn!(%from, home = %req.home_addr, skew_ms = skew.as_millis() as u64,
                        "security exception: identification mismatch (replay or clock skew)");
                    // Our time in the high 32 bits, their low 32 bits (§5.7.1).
                    let id = (ntp_timestamp(now.unix) & !0xffff_ffff)
                        | (req.identification & 0xffff_ffff);
                    return reply(ReplyCode::HaIdentificationMismatch, 0, id);
                }
            }
        }

        // (c)/(d): we hold no FA-HA security associations yet, so a Foreign-Home extension
        // cannot be checked and MUST cause a discard (d). Deregistrations never carry one.
        if fa_ha > 0 {
            self.stats.dropped_fa_auth += 1;
            warn!(%from, home = %req.home_addr, "security exception: Foreign-Home extension without an FA association");
            return Verdict::Drop;
        }

        // From here the request is authentic and fresh: its identification is consumed even if
        // we deny it, so it cannot be replayed.
        self.last_identification
            .insert(req.home_addr, req.identification);

        if req.home_agent != our || to != our {
            // §3.8.2.1: also for requests sent to a broadcast address; the reply names us.
            return reply(ReplyCode::HaUnknownHomeAgentAddress, 0, req.identification);
        }
        if duplicate {
            return reply(ReplyCode::HaPoorlyFormedRequest, 0, req.identification);
        }
        if req.flags.contains(RequestFlags::M) || req.flags.contains(RequestFlags::G) {
            // Only IP-in-IP (RFC 2003) is offered; minimal and GRE encapsulation are not.
            return reply(ReplyCode::HaEncapsulationUnavailable, 0, req.identification);
        }

        if req.is_deregistration() {
            if let Some(binding) = self.bindings.remove(req.home_addr) {
                info!(home = %req.home_addr, coa = %binding.care_of_addr, "binding removed: deregistration");
                self.events.push_back(HaEvent::BindingRemoved {
                    binding,
                    reason: RemovalReason::Deregistered,
                });
            }
            self.stats.deregistered += 1;
            return reply(ReplyCode::Accepted, 0, req.identification);
        }

        // §3.4: the HA MUST NOT increase the lifetime; it may shorten it. Infinity (0xffff)
        // is shortened to our maximum like any other value.
        let lifetime = req.lifetime.min(self.config.max_lifetime);
        let binding = Binding {
            home_addr: req.home_addr,
            care_of_addr: req.care_of_addr,
            source: from,
            flags: req.flags,
            spi: sa.spi,
            identification: req.identification,
            lifetime,
            registered_at: now.mono,
            expires_at: now.mono + Duration::from_secs(lifetime.into()),
        };
        match self.bindings.insert(binding.clone()) {
            // A refresh from the same care-of address is routine: at 100,000 mobile nodes an
            // info line per refresh would cost more than the registration itself.
            Some(old) if old.care_of_addr == binding.care_of_addr => {
                debug!(home = %binding.home_addr, coa = %binding.care_of_addr, lifetime, "binding refreshed");
                self.events
                    .push_back(HaEvent::BindingUpdated { old, new: binding });
            }
            Some(old) => {
                info!(home = %binding.home_addr, from = %old.care_of_addr, coa = %binding.care_of_addr, lifetime, "binding moved");
                self.events
                    .push_back(HaEvent::BindingUpdated { old, new: binding });
            }
            None => {
                info!(home = %binding.home_addr, coa = %binding.care_of_addr, lifetime, flags = %binding.flags, "binding added");
                self.events.push_back(HaEvent::BindingAdded(binding));
            }
        }
        self.stats.accepted += 1;
        // Simultaneous bindings are refused deliberately: one care-of address per home address
        // keeps the dataplane a single lookup. Code 1 tells an MN that asked (S) (§3.4).
        let code = if req.flags.contains(RequestFlags::S) {
            ReplyCode::AcceptedNoSimultaneousBindings
        } else {
            ReplyCode::Accepted
        };
        reply(code, lifetime, req.identification)
    }

    /// Adopts a binding that a previous `mipd` left in the pinned dataplane (a restart, even
    /// after `kill -9`): the binding and its replay state come back as they were, with no
    /// event, because the dataplane already holds it. Its expiry is re-timed on our clock.
    /// Returns false (and adopts nothing) if it has already run out or no security association
    /// covers it any more; the caller then removes it from the dataplane.
    pub fn restore(&mut self, now: Now, mut binding: Binding, expires_unix: Duration) -> bool {
        let Some(left) = expires_unix.checked_sub(now.unix).filter(|d| !d.is_zero()) else {
            return false;
        };
        if self.find_sa(binding.home_addr, binding.spi).is_none() {
            return false;
        }
        let lifetime = Duration::from_secs(binding.lifetime.into());
        binding.expires_at = now.mono + left;
        binding.registered_at = binding.expires_at.saturating_sub(lifetime);
        let last = self
            .last_identification
            .entry(binding.home_addr)
            .or_insert(0);
        *last = (*last).max(binding.identification);
        info!(home = %binding.home_addr, coa = %binding.care_of_addr, remaining_secs = left.as_secs(), "binding restored from the dataplane");
        self.bindings.insert(binding);
        true
    }

    /// Expires bindings whose lifetime has run out.
    pub fn handle_timeout(&mut self, now: Now) {
        for binding in self.bindings.expire(now.mono) {
            info!(home = %binding.home_addr, coa = %binding.care_of_addr, "binding expired");
            self.stats.expired += 1;
            self.events.push_back(HaEvent::BindingRemoved {
                binding,
                reason: RemovalReason::Expired,
            });
        }
    }

    /// The next monotonic deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.bindings.next_expiry()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<HaEvent> {
        self.events.pop_front()
    }
}
