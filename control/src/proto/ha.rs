//! The home agent's registration engine (RFC 5944 §3.8), sans-IO.
//!
//! Order of checks follows §3.8.2.1: parse, authorization-enabling extension and security
//! association (silent discard when missing), authenticator (131), Identification (133),
//! Foreign-Home extension rules, then the request itself (136, 134, 139, lifetime).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::ipv4;
use mipx_common::wire::{
    Error as WireError, Extension, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, KeepaliveRepr, MessageType,
    ReplyCode, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket, RequestRepr, UdpTunnelReply,
    UdpTunnelRequest,
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

/// What the home agent does with RFC 3519 UDP Tunnel Requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTunnelPolicy {
    /// Assent to UDP tunnelling when a NAT is detected (§4.6). Off: such requests are denied
    /// with 129 (§4.6.1, "NAT detected ... but traversal not allowed").
    pub enabled: bool,
    /// Honour the F flag without a NAT (§3.1.1). Off: 129 (§4.6.1).
    pub allow_forced: bool,
    /// Keepalive Interval for the UDP Tunnel Reply, seconds; 0 lets the mobile node use its
    /// default (§3.2).
    pub keepalive_interval: u16,
}

impl Default for UdpTunnelPolicy {
    fn default() -> Self {
        UdpTunnelPolicy {
            enabled: true,
            allow_forced: true,
            keepalive_interval: DEFAULT_KEEPALIVE_SECS,
        }
    }
}

/// RFC 3519 §4.9: "K is a parameter with a default value of 110 seconds".
pub const DEFAULT_KEEPALIVE_SECS: u16 = 110;

/// Home agent configuration.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// The home agent's own address, which requests must name (§3.8.2.1, code 136).
    pub address: Ipv4Addr,
    /// Longest lifetime granted; longer requests are shortened, never refused (§3.8.2.2).
    pub max_lifetime: u16,
    pub mobile_nodes: Vec<MobileNodeEntry>,
    pub udp_tunnel: UdpTunnelPolicy,
    /// RFC 5265 §4.3: `Some` makes this an internal home agent (i-HA). Only registrations from
    /// these subnets are answered, and their replies carry the Trusted Networks Configured
    /// extension; everything else is dropped silently and logged. An empty list trusts nobody.
    /// `None`: a plain home agent (or an x-HA), which answers any source and never sends 149.
    pub trusted_networks: Option<Vec<Subnet>>,
}

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(a) & mask == u32::from(self.addr) & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
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
// Counters a `mipd` of another version does not report read as zero.
#[serde(default)]
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
    /// Registrations accepted with UDP tunnelling (RFC 3519): behind a NAT, or forced.
    pub udp_tunnels: u64,
    /// UDP Tunnel Requests declined because no NAT was detected and F was clear (§4.6).
    pub udp_tunnels_declined: u64,
    /// Keepalives (RFC 3519 §4.9) answered.
    pub keepalives: u64,
    /// i-HA (RFC 5265 §4.3): silently discarded because the source is outside every trusted
    /// subnet.
    pub dropped_untrusted: u64,
    /// Silently discarded: tunnel data that reached the daemon and is not a keepalive from a
    /// UDP-tunnelled binding's far end (malformed, unknown home address, wrong address or
    /// port, §4.3).
    pub dropped_tunnel_data: u64,
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
    /// Identification of the IPv4 headers of keepalive answers.
    next_ip_id: u16,
    /// When an untrusted source was last logged, and how many went unlogged since.
    untrusted_log: (Option<Duration>, u64),
}

/// At most one log line per this interval for requests from untrusted sources (each is
/// counted): a scan must not flood the log.
const UNTRUSTED_LOG_EVERY: Duration = Duration::from_secs(1);

/// What one request resolved to, before the reply is built.
enum Verdict {
    Drop,
    Reply {
        code: ReplyCode,
        lifetime: u16,
        identification: u64,
        home_agent: Ipv4Addr,
        /// The UDP Tunnel Reply extension to include (RFC 3519 §4.6).
        udp_reply: Option<UdpTunnelReply>,
    },
}

/// The mobile node's UDP Tunnel Request extension (RFC 3519 §3.1), as found before the
/// Mobile-Home Authentication Extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpTunnelAsk {
    None,
    Request(UdpTunnelRequest),
    /// Sub-type 0 with a non-zero Reserved 3: §4.6.1 asks for 134 (while §3.1.3 would skip
    /// it as not understood; the home agent's rule is the more specific one).
    ReservedSet,
}

/// Reply code of a UDP Tunnel Reply that assents (RFC 3519 §3.2.1).
const UDP_TUNNEL_ASSENT: u8 = 0;
/// Reply code of a UDP Tunnel Reply that declines, reason unspecified (§3.2.1).
const UDP_TUNNEL_DECLINED: u8 = 64;

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
            next_ip_id: 0,
            untrusted_log: (None, 0),
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
        // RFC 5265 §4.3: an i-HA "MUST reject (drop silently) any registration request coming
        // from a source address that is not inside any of the configured trusted subnets", and
        // SHOULD log it. Before anything else: not even a parse error may answer.
        if !self.trusts(*from.ip()) {
            self.stats.dropped_untrusted += 1;
            self.log_untrusted(now, from);
            return;
        }
        if bytes.first().map(|&t| MessageType::from(t)) == Some(MessageType::TunnelData) {
            self.handle_tunnel_data(from, to, bytes);
            return;
        }
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
        let mut udp = UdpTunnelAsk::None;
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
                        // RFC 3519 §4.4: the mobile node's goes before its authentication
                        // extension; one after it would be a foreign agent's (§4.5).
                        Extension::UdpTunnelRequest(r) if mn_ha.is_none() => {
                            udp = UdpTunnelAsk::Request(r);
                        }
                        Extension::Other { kind: 144, data }
                            if mn_ha.is_none() && data.len() == 6 && data[0] == 0 =>
                        {
                            udp = UdpTunnelAsk::ReservedSet;
                        }
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
            udp,
        );
        let Verdict::Reply {
            code,
            lifetime,
            identification,
            home_agent,
            udp_reply,
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
        // RFC 3519 §4.6: the UDP Tunnel Reply, covered by the authenticator. RFC 2794 §3: a
        // reply to a request carrying the NAI carries it too. RFC 5265 §4.3: an i-HA's reply
        // to a trusted source (the only kind it answers) carries Trusted Networks Configured,
        // also under the authenticator, so that no one on the path can add it.
        let tnc = self
            .config
            .trusted_networks
            .is_some()
            .then_some(Extension::TrustedNetworksConfigured);
        let extensions: Vec<Extension<'_>> = udp_reply
            .map(Extension::UdpTunnelReply)
            .into_iter()
            .chain(nai.map(Extension::MnNai))
            .chain(tnc)
            .collect();
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
        udp: UdpTunnelAsk,
    ) -> Verdict {
        let our = self.config.address;
        let reply = |code, lifetime, identification| Verdict::Reply {
            code,
            lifetime,
            identification,
            home_agent: our,
            udp_reply: None,
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
        let (udp_reply, udp_tunnel) = match self.udp_tunnel_decision(from, req, udp) {
            Ok(decision) => decision,
            Err(code) => {
                info!(%from, home = %req.home_addr, coa = %req.care_of_addr, code = u8::from(code), "UDP tunnel request refused (RFC 3519 §4.6.1)");
                return reply(code, 0, req.identification);
            }
        };
        let reply = |code, lifetime, identification| Verdict::Reply {
            code,
            lifetime,
            identification,
            home_agent: our,
            udp_reply,
        };
        if udp_tunnel.is_none()
            && (req.flags.contains(RequestFlags::M) || req.flags.contains(RequestFlags::G))
        {
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
        let binding_udp = udp_tunnel.is_some();
        let binding = Binding {
            home_addr: req.home_addr,
            care_of_addr: req.care_of_addr,
            source: from,
            flags: req.flags,
            udp_tunnel,
            spi: sa.spi,
            identification: req.identification,
            lifetime,
            registered_at: now.mono,
            expires_at: now.mono + Duration::from_secs(lifetime.into()),
        };
        match self.bindings.insert(binding.clone()) {
            // A refresh from the same care-of address is routine: at 100,000 mobile nodes an
            // info line per refresh would cost more than the registration itself.
            Some(old)
                if old.care_of_addr == binding.care_of_addr
                    && old.udp_tunnel != binding.udp_tunnel =>
            {
                // RFC 3519 §4.10: the NAT lost its mapping and the re-registration came through
                // a new one (or UDP tunnelling started or stopped): the tunnel follows.
                info!(home = %binding.home_addr, coa = %binding.care_of_addr, from = ?old.udp_tunnel, to = ?binding.udp_tunnel, "UDP tunnel endpoint changed");
                self.events
                    .push_back(HaEvent::BindingUpdated { old, new: binding });
            }
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
                info!(home = %binding.home_addr, coa = %binding.care_of_addr, udp_tunnel = ?binding.udp_tunnel, lifetime, flags = %binding.flags, "binding added");
                self.events.push_back(HaEvent::BindingAdded(binding));
            }
        }
        self.stats.accepted += 1;
        if binding_udp {
            self.stats.udp_tunnels += 1;
        }
        // Simultaneous bindings are refused deliberately: one care-of address per home address
        // keeps the dataplane a single lookup. Code 1 tells an MN that asked (S) (§3.4).
        let code = if req.flags.contains(RequestFlags::S) {
            ReplyCode::AcceptedNoSimultaneousBindings
        } else {
            ReplyCode::Accepted
        };
        reply(code, lifetime, req.identification)
    }

    /// Whether requests from `source` may be answered: always on a plain home agent; on an
    /// i-HA only from a trusted subnet (RFC 5265 §4.3).
    pub fn trusts(&self, source: Ipv4Addr) -> bool {
        self.config
            .trusted_networks
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(source)))
    }

    fn log_untrusted(&mut self, now: Now, from: SocketAddrV4) {
        let (last, suppressed) = &mut self.untrusted_log;
        if last.is_some_and(|t| now.mono < t + UNTRUSTED_LOG_EVERY) {
            *suppressed += 1;
            return;
        }
        warn!(%from, suppressed_since_last = *suppressed, "dropped: registration from outside every trusted network (RFC 5265 §4.3); is the firewall letting external traffic reach this i-HA?");
        *last = Some(now.mono);
        *suppressed = 0;
    }

    /// RFC 3519 §4.6 and §4.6.1: what to answer a UDP Tunnel Request, and the tunnel's far
    /// end if UDP tunnelling is to be used. `Err` is the code to deny the registration with.
    fn udp_tunnel_decision(
        &mut self,
        from: SocketAddrV4,
        req: &RequestRepr,
        udp: UdpTunnelAsk,
    ) -> Result<(Option<UdpTunnelReply>, Option<SocketAddrV4>), ReplyCode> {
        let ask = match udp {
            UdpTunnelAsk::None => return Ok((None, None)),
            UdpTunnelAsk::ReservedSet => return Err(ReplyCode::HaPoorlyFormedRequest),
            UdpTunnelAsk::Request(ask) => ask,
        };
        // §3.1.5: UDP tunnelling is only meaningful when the mobile node decapsulates (D).
        if !req.flags.contains(RequestFlags::D) {
            return Err(ReplyCode::HaPoorlyFormedRequest);
        }
        // §4.6/§4.11: with R the registration came through a foreign agent and the tunnel's
        // port is only learnt from the first keepalive ("half bound"). We do not set up such
        // tunnels yet, and assenting without would send the tunnel to the foreign agent.
        if ask.reg_through_fa {
            return Err(ReplyCode::HaAdminProhibited);
        }
        // §4.6: "MUST use a mismatch between source IP address and care-of address ... as the
        // indication that a mobile node may reside behind a NAT".
        let nat = *from.ip() != req.care_of_addr;
        if req.is_deregistration() || (!nat && !ask.force) {
            // §4.6: "SHOULD respond with ... a declining UDP Tunnel Reply" (and a
            // deregistration sets up no tunnel at all).
            self.stats.udp_tunnels_declined += u64::from(!req.is_deregistration());
            let decline = UdpTunnelReply {
                reply_code: UDP_TUNNEL_DECLINED,
                forced: false,
                keepalive_interval: 0,
            };
            return Ok((Some(decline), None));
        }
        let policy = self.config.udp_tunnel;
        if !policy.enabled || (!nat && !policy.allow_forced) {
            return Err(ReplyCode::HaAdminProhibited);
        }
        // §3.1.4/§4.1: 0 means "per M and G", which would be GRE- or minimal-in-UDP; only
        // IP-in-UDP is implemented, so anything else is ERROR_HA_UDP_ENCAP_UNAVAIL.
        let encapsulation = match ask.encapsulation {
            0 if req.flags.contains(RequestFlags::M) || req.flags.contains(RequestFlags::G) => None,
            0 | ipv4::PROTO_IPIP => Some(ipv4::PROTO_IPIP),
            _ => None,
        };
        if encapsulation.is_none() {
            return Err(ReplyCode::HaUdpEncapUnavailable);
        }
        let assent = UdpTunnelReply {
            reply_code: UDP_TUNNEL_ASSENT,
            forced: ask.force,
            keepalive_interval: policy.keepalive_interval,
        };
        Ok((Some(assent), Some(from)))
    }

    /// A MIP Tunnel Data message that reached the daemon: a keepalive (RFC 3519 §4.9) from a
    /// UDP-tunnelled binding's far end is answered with the matching echo reply through the
    /// same tunnel; anything else is counted and dropped (the dataplane handles data).
    fn handle_tunnel_data(&mut self, from: SocketAddrV4, to: Ipv4Addr, bytes: &[u8]) {
        let Some(echo) = KeepaliveRepr::parse(bytes)
            .ok()
            .filter(|k| k.icmp_type == ICMP_ECHO_REQUEST)
        else {
            self.stats.dropped_tunnel_data += 1;
            debug!(%from, len = bytes.len(), "dropped: tunnel data that is not a keepalive");
            return;
        };
        let our = self.config.address;
        let bound = self
            .bindings
            .get(echo.src)
            .is_some_and(|b| b.udp_tunnel == Some(from));
        // §4.3: the outer address and port must be exactly the tunnel's; a keepalive through
        // a new NAT mapping is not answered, so the mobile node notices and re-registers
        // (§4.10) rather than us trusting an unauthenticated port.
        if !bound || echo.dst != our || to != our {
            self.stats.dropped_tunnel_data += 1;
            debug!(%from, home = %echo.src, "dropped: keepalive not from the binding's UDP tunnel");
            return;
        }
        self.next_ip_id = self.next_ip_id.wrapping_add(1);
        let answer = KeepaliveRepr {
            src: our,
            dst: echo.src,
            ip_id: self.next_ip_id,
            icmp_type: ICMP_ECHO_REPLY,
            echo: echo.echo,
        };
        let mut payload = vec![0u8; answer.buffer_len()];
        if answer.emit(&mut payload).is_err() {
            // The echo came in a datagram, so its answer (the same size) fits one.
            self.stats.dropped_tunnel_data += 1;
            return;
        }
        self.stats.keepalives += 1;
        self.transmits.push_back(Transmit {
            src: Some(to),
            dst: from,
            payload,
        });
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
