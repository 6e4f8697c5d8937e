//! The foreign agent's registration engine (RFC 5944 §3.7, RFC 3024 §4.2), sans-IO.
//!
//! A mobile node on one of our links sends its Registration Request to us; we check it, relay
//! it to its home agent from the care-of address we offer, keep it as a *pending* request
//! (home address + low 32 bits of Identification, §3.7.1), and relay the home agent's reply
//! back over the link to the link-layer address the request came from (§3.7.3.2, §4.2.2: never
//! broadcast ARP for a visitor). An accepted reply turns the pending request into a *visitor*
//! entry, which the daemon mirrors into the fast path (decapsulation toward the mobile node,
//! reverse tunnelling, RFC 3024).
//!
//! Order of checks on a request (§3.7.2.1, RFC 3024 §4.2.1): parse (a truncated fixed part or
//! an unknown non-skippable extension is discarded silently, §1.9; a malformed extension gets
//! 70), Mobile-Foreign authentication when we share a security association with the mobile
//! node (67), form (70: no Mobile-Home Authentication Extension, Encapsulating Delivery Style
//! misplaced, a UDP Tunnel Request), zero home address (96, RFC 2794 §3), home agent address
//! (194), lifetime (69), care-of address (77), then for a registration through our care-of
//! address the reverse-tunnel rules in RFC 3024's order (72, 79, 75, 76, 74), then resources
//! (66). A request we deny is answered at most once a second per mobile node (§3.7.2, RFC 3024
//! §4.2.1); the rest are counted.
//!
//! Behind a NAT (RFC 3519 §4.5, `FaConfig::udp_tunnel`) we advertise 'U', add a UDP Tunnel
//! Request to the registrations of our care-of address we relay, and when the home agent
//! assents the visitor's tunnel is IP-in-UDP between our care-of address and registration
//! port and the home agent's port 434 (the fast path does it), kept open by keepalives we send
//! from that port (§4.9). A co-located registration through us carries the mobile node's own
//! request with 'R', which we relay untouched (§4.11).
//!
//! Visitors are keyed by home address, never by link-layer address alone: RFC 5265 §3.5 has one
//! interface register an internal and an external home address, through the same foreign
//! agent, at the same time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::ipv4;
use mipx_common::wire::{
    AuthExtension, Extension, ExtensionType, ExtensionWriter, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
    KeepaliveRepr, LIFETIME_INFINITE, MIP_PORT, MessageType, ReplyCode, ReplyPacket, ReplyRepr,
    RequestFlags, RequestPacket, RequestRepr, UdpTunnelReply, UdpTunnelRequest,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::Now;
use super::ext::{WalkError, append_auth, walk};
use super::ha::RemovalReason;
use crate::auth::{self, SecurityAssociation};

/// RFC 2794 §5: the foreign agent keys pending requests by home address and cannot use the
/// NAI instead (§3), so a request with home address 0.0.0.0 gets NONZERO_HOMEADDR_REQD.
pub const NONZERO_HOMEADDR_REQD: u8 = 96;
/// RFC 2794 §5: the home agent's reply lacks the NAI the request carried (§3).
pub const MISSING_NAI: u8 = 97;
/// RFC 2794 §5: the home agent's reply has a zero Home Agent field (§3).
pub const MISSING_HOME_AGENT: u8 = 98;

/// RFC 3024 §3.3: the Encapsulating Delivery Style Extension (skippable, length 0).
const ENCAPSULATING_DELIVERY_STYLE: u8 = 130;

/// RFC 3024 §4.1.1 / §6.1: a mobile node asking for a reverse tunnel sends its request with
/// TTL 255, so that nobody more than one hop away can pose as it.
pub const DEFAULT_MIN_TTL: u8 = 255;

/// RFC 3519 §4.9: the keepalive interval K when the home agent leaves it to us (0 in its UDP
/// Tunnel Reply).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(110);
/// RFC 3519 §4.10's floor for a mobile node's keepalive interval; we keep to it too.
pub const MIN_KEEPALIVE: Duration = Duration::from_secs(10);
/// Keepalives in a row without an answer after which the tunnel is reported as probably
/// broken (§4.9: two-way keepalives are what lets the sender notice).
const KEEPALIVES_UNANSWERED_WARN: u32 = 3;
/// ICMP identifier of our keepalives (any fixed value: the home agent echoes it).
const KEEPALIVE_ICMP_ID: u16 = 0x4641;

/// RFC 5944 §3.7.1: a pending request "MAY be deleted ... after ... more than 7 seconds".
pub const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(7);

/// RFC 5944 §3.7.1: "a maximum number of pending registrations ... (typically 5)".
pub const DEFAULT_MAX_PENDING_PER_MOBILE: usize = 5;

/// §3.7.2, RFC 3024 §4.2.1: at most one denial a second to the same mobile node.
const DENIAL_INTERVAL: Duration = Duration::from_secs(1);

/// Whether this foreign agent reverse-tunnels (RFC 3024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReverseTunnelPolicy {
    /// Not offered: requests with 'T' are denied with 74 (§4.2.1).
    Unavailable,
    /// Offered to requests that set 'T'.
    Offered,
    /// Required: requests without 'T' are denied with 75 (§4.2.1; RFC 3519 §4.5 recommends it
    /// for a foreign agent behind a NAT that translates every address).
    Mandatory,
}

/// How a visitor hands its reverse-tunnelled packets to us (RFC 3024 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStyle {
    /// §5.1: plain packets from the home address, with us as the default router.
    Direct,
    /// §5.2: packets encapsulated to us; plain ones are routed normally, not reverse-tunnelled.
    Encapsulating,
}

/// One link on which we serve mobile nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaInterface {
    /// The interface index (what the daemon's socket reports, and where replies go out).
    pub index: u32,
    /// Our address on this link: the source of replies to requests sent to the All Mobility
    /// Agents multicast address or a broadcast address (§3.7.2.3).
    pub address: Ipv4Addr,
    /// The care-of addresses we advertise on this link (§3.7.1: at least one). A registration
    /// with 'D' clear must name one of them (77, §3.7.2.1); relays go out from it (§3.7.2.2).
    pub care_of_addrs: Vec<Ipv4Addr>,
}

/// A mobility security association with a mobile node (by home address) or a home agent (by
/// its address), RFC 5944 §3.2.
#[derive(Clone, Debug)]
pub struct PeerSa {
    pub addr: Ipv4Addr,
    pub sa: SecurityAssociation,
}

/// Foreign agent configuration.
#[derive(Clone, Debug)]
pub struct FaConfig {
    pub interfaces: Vec<FaInterface>,
    /// Longest registration lifetime we accept; longer requests get 69 with this value in the
    /// reply (§3.7.2.3). 0xffff admits infinite registrations.
    pub max_lifetime: u16,
    pub reverse_tunnel: ReverseTunnelPolicy,
    /// Whether the Encapsulating Delivery Style is offered (RFC 3024 §3.3: SHOULD); without
    /// it, a request carrying the extension is denied with 79 (§3.4).
    pub encapsulating_delivery: bool,
    /// Mobile nodes (distinct home addresses, registered or pending) we serve at most; a new
    /// one beyond this gets 66.
    pub max_visitors: usize,
    /// Pending requests per home address at most (§3.7.1, 66). A new request from the same
    /// link-layer address replaces its predecessor and does not count twice.
    pub max_pending_per_mobile: usize,
    /// How long a relayed request waits for its reply before the mobile node gets 78 (§3.7.1);
    /// never longer than the requested lifetime (§3.7.2.2).
    pub registration_timeout: Duration,
    /// RFC 3024 §4.2.1: a request with 'T' whose IP TTL is below this gets 76. The RFC says
    /// 255; lower it only for a mobile node that does not follow §4.1.1.
    pub min_ttl: u8,
    /// Mobile nodes we share a security association with: their requests MUST carry exactly
    /// one valid Mobile-Foreign Authentication Extension (67 otherwise, §3.7.2.1), and our
    /// replies to them carry one (§3.7.1).
    pub mobile_nodes: Vec<PeerSa>,
    /// Home agents we share a security association with: relayed registrations carry a
    /// Foreign-Home Authentication Extension, and their replies must (§3.7.1, §3.7.3.1: 68).
    pub home_agents: Vec<PeerSa>,
    /// RFC 3519 NAT traversal, for an agent behind a NAT (§4.5); `None`: not offered.
    pub udp_tunnel: Option<UdpTunnelling>,
}

/// RFC 3519 as a foreign agent behind a NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTunnelling {
    /// The longest keepalive interval we use, whatever the home agent suggests: below the
    /// NAT's mapping lifetime (§4.10: "permanently configuring the FA to use a keepalive
    /// interval which is lower than the NAT mapping lifetime").
    pub max_keepalive: Duration,
}

impl Default for FaConfig {
    fn default() -> Self {
        FaConfig {
            interfaces: Vec::new(),
            max_lifetime: 1800,
            reverse_tunnel: ReverseTunnelPolicy::Offered,
            encapsulating_delivery: true,
            max_visitors: 4096,
            max_pending_per_mobile: DEFAULT_MAX_PENDING_PER_MOBILE,
            registration_timeout: DEFAULT_REGISTRATION_TIMEOUT,
            min_ttl: DEFAULT_MIN_TTL,
            mobile_nodes: Vec::new(),
            home_agents: Vec::new(),
            udp_tunnel: None,
        }
    }
}

/// Where a Registration Request from a mobile node came from, as the daemon's link-layer
/// socket saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FromMobile {
    /// Interface index it arrived on.
    pub iface: u32,
    /// IP source address and UDP source port.
    pub src: SocketAddrV4,
    /// IP destination address: ours, or 224.0.0.11 / 255.255.255.255.
    pub dst: Ipv4Addr,
    /// Link-layer source address: where replies go (§3.7.3.2, §4.2.2).
    pub src_mac: [u8; 6],
    /// IP Time to Live (RFC 3024 §4.2.1).
    pub ttl: u8,
}

/// Where a datagram must be sent on a link, without ARP (the destination is a visitor's home
/// address, which is not on the link; §4.2.2 forbids broadcast ARP for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    pub iface: u32,
    pub mac: [u8; 6],
}

/// A datagram for the daemon to send, from UDP port 434.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaTransmit {
    /// IP source address.
    pub src: Ipv4Addr,
    pub dst: SocketAddrV4,
    /// `Some` for replies to mobile nodes: send on this interface to this link-layer address.
    /// `None` for relays to home agents: route normally.
    pub link: Option<LinkTarget>,
    pub payload: Vec<u8>,
}

/// A mobile node being served (RFC 5944 §3.7.1's visitor list entry, once registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visitor {
    pub home_addr: Ipv4Addr,
    /// From the accepted reply's Home Agent field: the reverse tunnel's destination (RFC 3024
    /// §5.1.2).
    pub home_agent: Ipv4Addr,
    pub mac: [u8; 6],
    pub iface: u32,
    pub care_of_addr: Ipv4Addr,
    /// IP source and UDP source port of the request.
    pub source: SocketAddrV4,
    /// 'D': a co-located care-of address registered through us. We neither decapsulate for
    /// it nor reverse-tunnel; the mobile node does both itself (RFC 3024 §4.1.2).
    pub co_located: bool,
    /// Reverse tunnel granted (RFC 3024 §4.2.2): 'T' with our care-of address, accepted by
    /// the home agent.
    pub reverse_tunnel: bool,
    /// RFC 3519 §4.5: the home agent assented to UDP tunnelling (we are behind a NAT), with
    /// this keepalive interval: both tunnel directions are IP-in-UDP between our care-of
    /// address and registration port and the home agent's port 434.
    pub udp_keepalive: Option<Duration>,
    pub delivery: DeliveryStyle,
    pub identification: u64,
    /// Granted lifetime, seconds (0xffff: infinite).
    pub lifetime: u16,
    /// Monotonic time the accepted reply was relayed; the lifetime runs from here (§3.7.3.2).
    pub registered_at: Duration,
    /// `None` for an infinite lifetime.
    pub expires_at: Option<Duration>,
}

impl Visitor {
    /// Time left at `now`; `None` if infinite.
    pub fn remaining(&self, now: Duration) -> Option<Duration> {
        self.expires_at.map(|t| t.saturating_sub(now))
    }
}

/// Side effects for the shell to apply (fast path, neighbour entries, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaEvent {
    VisitorAdded(Visitor),
    /// A refresh, or a change of link-layer address, interface, home agent or options.
    VisitorUpdated {
        old: Visitor,
        new: Visitor,
    },
    VisitorRemoved {
        visitor: Visitor,
        reason: RemovalReason,
    },
}

/// One row of `mipctl visitors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorRow {
    pub home_addr: Ipv4Addr,
    /// Link-layer address, `aa:bb:cc:dd:ee:ff`.
    pub link_addr: String,
    pub iface: u32,
    pub home_agent: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    pub co_located: bool,
    pub lifetime: u16,
    /// Seconds left; `None`: infinite.
    pub remaining_secs: Option<u64>,
    /// 'T' granted (RFC 3024).
    pub reverse_tunnel: bool,
    /// The tunnel with the home agent is IP-in-UDP (RFC 3519 §4.5).
    #[serde(default)]
    pub udp_tunnel: bool,
    pub delivery: DeliveryStyle,
}

/// What an ICMP error about a relayed request said (RFC 5944 §3.7.3: codes 80-95).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpUnreachable {
    /// 80: home network unreachable.
    Network,
    /// 81: home agent host unreachable.
    Host,
    /// 82: home agent port unreachable.
    Port,
    /// 88: home agent unreachable (any other ICMP error).
    Other,
}

impl IcmpUnreachable {
    /// Classifies an ICMP Destination Unreachable (type 3) code (RFC 792, RFC 1122 §3.2.2.1).
    pub fn from_unreachable_code(code: u8) -> Self {
        match code {
            // Net unreachable, destination network unknown, net prohibited, net for TOS.
            0 | 6 | 9 | 11 => IcmpUnreachable::Network,
            // Host unreachable, destination host unknown, host prohibited, host for TOS.
            1 | 7 | 10 | 12 => IcmpUnreachable::Host,
            3 => IcmpUnreachable::Port,
            _ => IcmpUnreachable::Other,
        }
    }

    fn code(self) -> ReplyCode {
        match self {
            IcmpUnreachable::Network => ReplyCode::FaHomeNetworkUnreachable,
            IcmpUnreachable::Host => ReplyCode::FaHomeAgentHostUnreachable,
            IcmpUnreachable::Port => ReplyCode::FaHomeAgentPortUnreachable,
            IcmpUnreachable::Other => ReplyCode::FaHomeAgentUnreachable,
        }
    }
}

/// Counters for `mipctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
// Counters a `mipd` of another version does not report read as zero.
#[serde(default)]
pub struct FaStats {
    /// Datagrams from mobile nodes.
    pub requests: u64,
    /// Requests relayed to home agents.
    pub relayed_requests: u64,
    /// Datagrams from home agents.
    pub replies: u64,
    /// Replies relayed to mobile nodes (any code).
    pub relayed_replies: u64,
    /// Registrations the home agent accepted (visitor added or refreshed).
    pub accepted: u64,
    /// Accepted deregistrations (lifetime 0).
    pub deregistered: u64,
    /// Visitors whose lifetime ran out.
    pub expired: u64,
    /// Relayed replies with a home agent's denial code, by code.
    pub denied_by_home_agent: BTreeMap<u8, u64>,
    /// Our own denials, by code (including those the rate limit kept from being sent).
    pub denied: BTreeMap<u8, u64>,
    /// Denials not sent: more than one a second to the same mobile node (§3.7.2).
    pub denials_rate_limited: u64,
    /// Pending requests dropped for a newer one from the same mobile node and link address.
    pub pending_superseded: u64,
    /// Silently discarded: arrived on an interface we do not serve.
    pub dropped_unknown_interface: u64,
    /// Silently discarded: not a Registration Request, or its fixed part is truncated.
    pub dropped_malformed_request: u64,
    /// Silently discarded: a request with an unknown non-skippable extension (§1.9).
    pub dropped_request_unknown_extension: u64,
    /// Silently discarded: not a Registration Reply, or its fixed part is truncated.
    pub dropped_malformed_reply: u64,
    /// Silently discarded: a reply matching no pending request (§3.7.3.1).
    pub dropped_reply_no_pending: u64,
    /// Silently discarded: a reply with an unknown non-skippable extension (§1.9).
    pub dropped_reply_unknown_extension: u64,
    /// ICMP errors that matched no pending request.
    pub dropped_icmp_no_pending: u64,
    /// RFC 3519 (behind a NAT): UDP Tunnel Requests we added to relays, and the home agents'
    /// answers: assents, and accepted registrations without one (declined or not understood:
    /// the visitor's tunnel stays IP-in-IP, which the NAT may not pass).
    pub udp_tunnel_requests: u64,
    pub udp_tunnels_assented: u64,
    pub udp_tunnels_refused: u64,
    /// Keepalives sent to home agents (§4.9) and their answers; answers matching no tunnel of
    /// ours, and other tunnel data reaching the daemon, are dropped and counted.
    pub keepalives_sent: u64,
    pub keepalive_replies: u64,
    pub dropped_tunnel_data: u64,
}

/// A request relayed to a home agent and waiting for its reply (§3.7.1).
#[derive(Clone, Debug)]
struct Pending {
    req: RequestRepr,
    from: FromMobile,
    nai: Option<Vec<u8>>,
    delivery: DeliveryStyle,
    /// We appended a Foreign-Home Authentication Extension: the reply must carry one.
    fa_ha_added: bool,
    /// We appended a UDP Tunnel Request (RFC 3519 §4.5).
    udp_asked: bool,
    deadline: Duration,
}

impl Pending {
    fn id_low(&self) -> u32 {
        self.req.identification as u32
    }
}

/// A mobile node's visitor list entry: the current registration and the pending requests
/// recorded "as a separate part" (§3.7.2).
#[derive(Debug, Default)]
struct Entry {
    visitor: Option<Visitor>,
    pending: Vec<Pending>,
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Visitor(Ipv4Addr),
    /// The keepalive of the UDP tunnel from care-of address to home agent.
    Keepalive(Ipv4Addr, Ipv4Addr),
    /// Home address and low 32 bits of the Identification.
    Pending(Ipv4Addr, u32),
}

/// The extensions of a request, as far as we act on them.
#[derive(Debug, Default)]
struct RequestScan<'a> {
    /// End of the Mobile-Home Authentication Extension: what we relay unchanged (§3.7.2.2).
    mn_ha_end: Option<usize>,
    nai: Option<&'a [u8]>,
    udp_tunnel_request: Option<UdpTunnelRequest>,
    encapsulating_delivery: bool,
    /// Why the request is poorly formed (70), if it is.
    poorly_formed: Option<&'static str>,
    /// Mobile-Foreign Authentication Extensions: count, and the first with its offset.
    mn_fa_count: usize,
    mn_fa: Option<(usize, AuthExtension<'a>)>,
    /// The first MN-FA extension is the last extension of the message (§3.6.1.3 e).
    mn_fa_is_last: bool,
}

/// The extensions of a reply, as far as we act on them.
#[derive(Debug, Default)]
struct ReplyScan<'a> {
    mn_ha_count: usize,
    mn_ha_end: Option<usize>,
    nai: bool,
    fa_ha_count: usize,
    fa_ha: Option<(usize, AuthExtension<'a>)>,
    /// The UDP Tunnel Reply to our request: after the Mobile-Home authenticator, before the
    /// Foreign-Home one (RFC 3519 §4.5's placement, mirrored).
    udp_reply: Option<UdpTunnelReply>,
}

/// The UDP tunnel from one care-of address of ours to one home agent (RFC 3519 §4.9): one
/// NAT mapping, shared by every visitor of that home agent, so one keepalive keeps it.
#[derive(Clone, Copy, Debug)]
struct Keepalive {
    interval: Duration,
    due: Duration,
    seq: u16,
    /// Keepalives sent since the last answer.
    unanswered: u32,
}

/// The foreign agent.
#[derive(Debug)]
pub struct ForeignAgent {
    config: FaConfig,
    entries: HashMap<Ipv4Addr, Entry>,
    deadlines: BTreeSet<(Duration, Timer)>,
    /// When we last sent a denial to (home address, link address).
    last_denial: HashMap<(Ipv4Addr, [u8; 6]), Duration>,
    transmits: VecDeque<FaTransmit>,
    events: VecDeque<FaEvent>,
    stats: FaStats,
    keepalives: BTreeMap<(Ipv4Addr, Ipv4Addr), Keepalive>,
    next_ip_id: u16,
}

/// Prune the denial rate limiter when it holds more entries than this.
const DENIAL_TABLE_PRUNE_AT: usize = 4096;

impl ForeignAgent {
    pub fn new(config: FaConfig) -> Self {
        ForeignAgent {
            config,
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            last_denial: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: FaStats::default(),
            keepalives: BTreeMap::new(),
            next_ip_id: 0,
        }
    }

    pub fn config(&self) -> &FaConfig {
        &self.config
    }

    pub fn stats(&self) -> &FaStats {
        &self.stats
    }

    /// The registered visitor with this home address.
    pub fn visitor(&self, home_addr: Ipv4Addr) -> Option<&Visitor> {
        self.entries.get(&home_addr)?.visitor.as_ref()
    }

    /// Number of requests waiting for their home agent's reply.
    pub fn pending_count(&self) -> usize {
        self.entries.values().map(|e| e.pending.len()).sum()
    }

    /// The visitor list for `mipctl visitors`, ordered by home address.
    pub fn visitors(&self, now: Now) -> Vec<VisitorRow> {
        let mut rows: Vec<VisitorRow> = self
            .entries
            .values()
            .filter_map(|e| e.visitor.as_ref())
            .map(|v| VisitorRow {
                home_addr: v.home_addr,
                link_addr: mac_string(v.mac),
                iface: v.iface,
                home_agent: v.home_agent,
                care_of_addr: v.care_of_addr,
                co_located: v.co_located,
                lifetime: v.lifetime,
                remaining_secs: v.remaining(now.mono).map(|d| d.as_secs()),
                reverse_tunnel: v.reverse_tunnel,
                udp_tunnel: v.udp_keepalive.is_some(),
                delivery: v.delivery,
            })
            .collect();
        rows.sort_by_key(|r| r.home_addr);
        rows
    }

    fn interface(&self, index: u32) -> Option<&FaInterface> {
        self.config.interfaces.iter().find(|i| i.index == index)
    }

    /// Whether `addr` is one of ours, on any link (§3.7.2: 194).
    fn is_own_address(&self, addr: Ipv4Addr) -> bool {
        self.config
            .interfaces
            .iter()
            .any(|i| i.address == addr || i.care_of_addrs.contains(&addr))
    }

    fn mn_fa_sa(&self, home_addr: Ipv4Addr) -> Option<&SecurityAssociation> {
        self.config
            .mobile_nodes
            .iter()
            .find(|p| p.addr == home_addr)
            .map(|p| &p.sa)
    }

    fn fa_ha_sa(&self, home_agent: Ipv4Addr) -> Option<&SecurityAssociation> {
        self.config
            .home_agents
            .iter()
            .find(|p| p.addr == home_agent)
            .map(|p| &p.sa)
    }

    /// Processes a datagram a mobile node sent to UDP port 434 on one of our links.
    pub fn handle_from_mobile(&mut self, now: Now, from: FromMobile, bytes: &[u8]) {
        self.handle_timeout(now);
        self.stats.requests += 1;
        let Some(iface) = self.interface(from.iface).cloned() else {
            self.stats.dropped_unknown_interface += 1;
            debug!(iface = from.iface, src = %from.src, "dropped: request on an interface we do not serve");
            return;
        };
        let Ok(packet) = RequestPacket::new_checked(bytes) else {
            // Not even the fields a denial copies (§3.7.2.3) are there.
            self.stats.dropped_malformed_request += 1;
            debug!(src = %from.src, len = bytes.len(), "dropped: not a registration request");
            return;
        };
        // The fixed part parsed, so this cannot fail.
        let Ok(req) = RequestRepr::parse(&packet) else {
            return;
        };
        let scan = match scan_request(bytes, req.flags) {
            Ok(scan) => scan,
            Err(WalkError::UnknownMandatory(kind)) => {
                self.stats.dropped_request_unknown_extension += 1;
                info!(src = %from.src, kind, "dropped: unknown non-skippable extension (RFC 5944 §1.9)");
                return;
            }
            Err(WalkError::Malformed(e)) => {
                info!(src = %from.src, home = %req.home_addr, error = %e, "denied: malformed extension");
                self.deny(now, &from, &req, ReplyCode::FaPoorlyFormedRequest, None);
                return;
            }
        };
        let nai = scan.nai;

        // §3.7.2.1: with a shared association, exactly one valid Mobile-Foreign extension.
        // Checked before any other rule, so that an unauthenticated request learns nothing
        // about our policy. It must also be the last extension (§3.6.1.3 e), or what follows
        // it (a delivery style, say) would be unauthenticated.
        if let Some(sa) = self.mn_fa_sa(req.home_addr) {
            let valid = scan.mn_fa_count == 1
                && scan.mn_fa_is_last
                && scan.mn_fa.is_some_and(|(at, a)| {
                    a.spi == sa.spi && auth::verify(bytes, at, a.authenticator, &sa.key)
                });
            if !valid {
                warn!(src = %from.src, home = %req.home_addr, count = scan.mn_fa_count,
                    "security exception: Mobile-Foreign authentication failed");
                self.deny(now, &from, &req, ReplyCode::FaMobileNodeFailedAuth, nai);
                return;
            }
        }
        let Some(mn_ha_end) = scan.mn_ha_end else {
            // §3.3: every request carries an authorization-enabling extension; the home agent
            // would discard this one, so say why now.
            info!(src = %from.src, home = %req.home_addr, "denied: no Mobile-Home Authentication Extension");
            self.deny(now, &from, &req, ReplyCode::FaPoorlyFormedRequest, nai);
            return;
        };
        if let Some(why) = scan.poorly_formed {
            info!(src = %from.src, home = %req.home_addr, why, "denied: poorly formed request");
            self.deny(now, &from, &req, ReplyCode::FaPoorlyFormedRequest, nai);
            return;
        }
        // RFC 3519 §4.4: a mobile node's UDP Tunnel Request "SHALL NOT be used ... with a
        // foreign agent care-of address", and with a co-located one only through an agent
        // that advertises 'U' (we do behind a NAT), with 'R' set (§4.11). We cannot strip it
        // (it sits under the Mobile-Home authenticator, RFC 5944 §3.7.2.2), and relaying
        // any other would make the home agent tunnel in UDP to us instead of to the mobile
        // node (§4.11) or deny it (134, §4.6.1). So it is poorly formed for us: 70.
        if let Some(ask) = scan.udp_tunnel_request {
            let allowed = self.config.udp_tunnel.is_some()
                && req.flags.contains(RequestFlags::D)
                && ask.reg_through_fa;
            if !allowed {
                info!(src = %from.src, home = %req.home_addr, "denied: a UDP Tunnel Request this foreign agent cannot relay (RFC 3519 §4.4: only co-located, with 'R', through an agent advertising 'U')");
                self.deny(now, &from, &req, ReplyCode::FaPoorlyFormedRequest, nai);
                return;
            }
        }
        if req.home_addr.is_unspecified() {
            self.deny(
                now,
                &from,
                &req,
                ReplyCode::from(NONZERO_HOMEADDR_REQD),
                nai,
            );
            return;
        }
        // §3.7.2: we serve nobody as a home agent, so a request naming one of our addresses is
        // 194; so is one naming an address no home agent can have.
        let ha = req.home_agent;
        if self.is_own_address(ha)
            || ha.is_unspecified()
            || ha.is_broadcast()
            || ha.is_multicast()
            || ha.is_loopback()
        {
            self.deny(now, &from, &req, ReplyCode::FaInvalidHomeAgentAddress, nai);
            return;
        }
        if req.lifetime > self.config.max_lifetime {
            self.deny(now, &from, &req, ReplyCode::FaLifetimeTooLong, nai);
            return;
        }
        let co_located = req.flags.contains(RequestFlags::D);
        let offered = iface.care_of_addrs.contains(&req.care_of_addr);
        let registration = !req.is_deregistration();
        if !co_located && registration && !offered {
            self.deny(now, &from, &req, ReplyCode::FaInvalidCareOfAddress, nai);
            return;
        }
        // RFC 3024 §4.2.1, in its order, for a registration of our care-of address (with a
        // co-located one we neither decapsulate nor reverse-tunnel, §4.1.2).
        if !co_located && registration {
            let t = req.flags.contains(RequestFlags::T);
            let code = if req.flags.contains(RequestFlags::M) || req.flags.contains(RequestFlags::G)
            {
                // We decapsulate IP-in-IP only (RFC 2003).
                Some(ReplyCode::FaEncapsulationUnavailable)
            } else if scan.encapsulating_delivery && !self.config.encapsulating_delivery {
                Some(ReplyCode::FaDeliveryStyleUnsupported)
            } else if !t && self.config.reverse_tunnel == ReverseTunnelPolicy::Mandatory {
                Some(ReplyCode::FaReverseTunnelMandatory)
            } else if t && from.ttl < self.config.min_ttl {
                warn!(src = %from.src, home = %req.home_addr, ttl = from.ttl, "denied: mobile node too distant (RFC 3024 §4.2.1)");
                Some(ReplyCode::FaMobileNodeTooDistant)
            } else if t && self.config.reverse_tunnel == ReverseTunnelPolicy::Unavailable {
                Some(ReplyCode::FaReverseTunnelUnavailable)
            } else {
                None
            };
            if let Some(code) = code {
                self.deny(now, &from, &req, code, nai);
                return;
            }
        }

        // Resources (§3.7.1: 66). A newer request from the same mobile node on the same
        // link-layer address supersedes its pending predecessor: the mobile node only accepts
        // the reply to its latest request (§3.6.2.1), so the older one is dead weight.
        let id_low = req.identification as u32;
        let (known, others) = match self.entries.get(&req.home_addr) {
            Some(e) => (
                true,
                e.pending
                    .iter()
                    .filter(|p| p.from.src_mac != from.src_mac && p.id_low() != id_low)
                    .count(),
            ),
            None => (false, 0),
        };
        if (!known && self.entries.len() >= self.config.max_visitors)
            || others >= self.config.max_pending_per_mobile
        {
            self.deny(now, &from, &req, ReplyCode::FaInsufficientResources, nai);
            return;
        }

        // §3.7.2.2: everything up to and including the Mobile-Home Authentication Extension
        // unchanged; what follows was ours (delivery style, Mobile-Foreign authentication) and
        // is removed. A Foreign-Home extension goes on registrations of our care-of address
        // only: never on a deregistration, nor when the care-of address is not one we
        // advertise (§3.5.4).
        let Some(covered) = bytes.get(..mn_ha_end) else {
            return;
        };
        let mut payload = covered.to_vec();
        // RFC 3519 §4.5: behind a NAT, a registration of our care-of address asks for UDP
        // tunnelling, after the Mobile-Home authenticator and before our Foreign-Home one;
        // never a co-located one (the tunnel would come to us, not to the mobile node).
        let udp_asked = self.config.udp_tunnel.is_some() && registration && !co_located;
        if udp_asked {
            let ext = Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: false,
                reg_through_fa: false,
                encapsulation: ipv4::PROTO_IPIP,
            });
            let at = payload.len();
            payload.resize(at + ext.buffer_len(), 0);
            if ExtensionWriter::new(&mut payload, at).push(&ext).is_err() {
                // Cannot happen: sized for it.
                payload.truncate(at);
            }
            self.stats.udp_tunnel_requests += 1;
        }
        let fa_ha = match self.fa_ha_sa(ha) {
            Some(sa) if registration && !co_located => {
                append_auth(&mut payload, ExtensionType::FaHaAuth, sa);
                true
            }
            _ => false,
        };
        // §3.7.2.2: from the care-of address we offer this mobile node.
        let src = if offered {
            req.care_of_addr
        } else {
            iface
                .care_of_addrs
                .first()
                .copied()
                .unwrap_or(iface.address)
        };
        let delivery = if scan.encapsulating_delivery {
            DeliveryStyle::Encapsulating
        } else {
            DeliveryStyle::Direct
        };
        // §3.7.2.2: the pending request lives no longer than the lifetime it asks for.
        let mut wait = self.config.registration_timeout;
        if req.lifetime != 0 {
            wait = wait.min(Duration::from_secs(req.lifetime.into()));
        }
        let pending = Pending {
            req,
            from,
            nai: nai.map(<[u8]>::to_vec),
            delivery,
            fa_ha_added: fa_ha,
            udp_asked,
            deadline: now.mono + wait,
        };
        self.insert_pending(pending);
        // §4.9: a keepalive is due K after the last packet to the home agent through the
        // mapping, and a relay is one.
        if let Some(k) = self.keepalives.get_mut(&(src, ha)) {
            self.deadlines.remove(&(k.due, Timer::Keepalive(src, ha)));
            k.due = now.mono + k.interval;
            self.deadlines.insert((k.due, Timer::Keepalive(src, ha)));
        }
        self.stats.relayed_requests += 1;
        debug!(home = %req.home_addr, ha = %ha, coa = %req.care_of_addr, lifetime = req.lifetime, fa_ha, "request relayed");
        self.transmits.push_back(FaTransmit {
            src,
            dst: SocketAddrV4::new(ha, MIP_PORT),
            link: None,
            payload,
        });
    }

    /// Records a relayed request, replacing any pending one from the same link-layer address
    /// (or with the same Identification) for this home address.
    fn insert_pending(&mut self, pending: Pending) {
        let home = pending.req.home_addr;
        let (mac, id_low) = (pending.from.src_mac, pending.id_low());
        let entry = self.entries.entry(home).or_default();
        let deadlines = &mut self.deadlines;
        let mut superseded = 0;
        entry.pending.retain(|p| {
            let replace = p.from.src_mac == mac || p.id_low() == id_low;
            if replace {
                superseded += 1;
                deadlines.remove(&(p.deadline, Timer::Pending(home, p.id_low())));
            }
            !replace
        });
        deadlines.insert((pending.deadline, Timer::Pending(home, id_low)));
        entry.pending.push(pending);
        self.stats.pending_superseded += superseded;
    }

    /// Removes and returns the pending request (home address, Identification low 32 bits).
    fn take_pending(&mut self, home: Ipv4Addr, id_low: u32) -> Option<Pending> {
        let entry = self.entries.get_mut(&home)?;
        let at = entry.pending.iter().position(|p| p.id_low() == id_low)?;
        let p = entry.pending.remove(at);
        self.deadlines
            .remove(&(p.deadline, Timer::Pending(home, id_low)));
        self.drop_if_empty(home);
        Some(p)
    }

    fn drop_if_empty(&mut self, home: Ipv4Addr) {
        if self
            .entries
            .get(&home)
            .is_some_and(|e| e.visitor.is_none() && e.pending.is_empty())
        {
            self.entries.remove(&home);
        }
    }

    /// Processes a datagram from a home agent (arriving on UDP port 434 at a care-of address).
    pub fn handle_from_home_agent(&mut self, now: Now, from: SocketAddrV4, bytes: &[u8]) {
        self.handle_timeout(now);
        if bytes.first().map(|&t| MessageType::from(t)) == Some(MessageType::TunnelData) {
            self.handle_tunnel_data(from, bytes);
            return;
        }
        self.stats.replies += 1;
        let Ok(packet) = ReplyPacket::new_checked(bytes) else {
            self.stats.dropped_malformed_reply += 1;
            debug!(%from, len = bytes.len(), "dropped: not a registration reply");
            return;
        };
        // The fixed part parsed, so this cannot fail.
        let Ok(reply) = ReplyRepr::parse(&packet) else {
            return;
        };
        // §3.7.3.1: the pending request with this home address and the same low 32 bits of
        // Identification, or silence.
        let id_low = reply.identification as u32;
        let matches = self
            .entries
            .get(&reply.home_addr)
            .is_some_and(|e| e.pending.iter().any(|p| p.id_low() == id_low));
        if !matches {
            self.stats.dropped_reply_no_pending += 1;
            debug!(%from, home = %reply.home_addr, "dropped: reply matches no pending request");
            return;
        }
        let scan = match scan_reply(bytes) {
            Ok(scan) => Ok(scan),
            Err(WalkError::UnknownMandatory(kind)) => {
                // §1.9: discarded silently; the request stays pending, so the mobile node's
                // retransmission or our timeout (78) ends it.
                self.stats.dropped_reply_unknown_extension += 1;
                info!(%from, kind, "dropped: reply with an unknown non-skippable extension (RFC 5944 §1.9)");
                return;
            }
            Err(WalkError::Malformed(e)) => Err(e),
        };
        let Some(pending) = self.take_pending(reply.home_addr, id_low) else {
            return;
        };
        let scan = match scan {
            Ok(scan) => scan,
            Err(e) => {
                info!(%from, home = %reply.home_addr, error = %e, "poorly formed reply");
                self.deny_pending(now, &pending, ReplyCode::FaPoorlyFormedReply);
                return;
            }
        };

        // §3.7.3.1: with a shared association, exactly one valid Foreign-Home extension. §3.7.1
        // asks for it when the reply has a nonzero lifetime, and §3.5.4 keeps it off
        // deregistrations; we also insist when we put one on the request, since the home
        // agent MUST then answer with one (§3.8.1). Selected by the reply's Home Agent field
        // (§3.5.4), or the address we relayed to.
        let sa = self
            .fa_ha_sa(reply.home_agent)
            .or_else(|| self.fa_ha_sa(pending.req.home_agent));
        if let Some(sa) = sa {
            let required = pending.fa_ha_added || reply.lifetime != 0;
            let valid = scan.fa_ha_count == 1
                && scan.fa_ha.is_some_and(|(at, a)| {
                    a.spi == sa.spi && auth::verify(bytes, at, a.authenticator, &sa.key)
                });
            if (required || scan.fa_ha_count > 0) && !valid {
                // "MUST silently discard the Reply ... MUST reject the mobile node's
                // registration and SHOULD send ... Code 68."
                warn!(%from, home = %reply.home_addr, count = scan.fa_ha_count,
                    "security exception: Foreign-Home authentication of the reply failed");
                self.deny_pending(now, &pending, ReplyCode::FaHomeAgentFailedAuth);
                return;
            }
        }
        // §3.5.2: every reply a home agent generates carries exactly one authorization-enabling
        // extension; the mobile node would discard it otherwise (§3.6.2.1 b).
        let Some(mn_ha_end) = scan.mn_ha_end.filter(|_| scan.mn_ha_count == 1) else {
            info!(%from, home = %reply.home_addr, count = scan.mn_ha_count, "poorly formed reply: Mobile-Home Authentication Extension count");
            self.deny_pending(now, &pending, ReplyCode::FaPoorlyFormedReply);
            return;
        };
        let Some(covered) = bytes.get(..mn_ha_end) else {
            return;
        };
        let mut payload = covered.to_vec();
        // RFC 2794 §3: the reply must echo the NAI and name a home agent; if not, the foreign
        // agent SHOULD relay it "changing the Code". The mobile node does not check the
        // Mobile-Home authenticator on a foreign agent's code (RFC 5944 §3.6.2.1 b).
        let code = if pending.nai.is_some() && !scan.nai {
            Some(ReplyCode::from(MISSING_NAI))
        } else if reply.home_agent.is_unspecified() {
            Some(ReplyCode::from(MISSING_HOME_AGENT))
        } else {
            None
        };
        if let Some(code) = code {
            *self.stats.denied.entry(code.into()).or_default() += 1;
            info!(%from, home = %reply.home_addr, code = %code, "reply relayed with our denial (RFC 2794 §3)");
            ReplyPacket::new_unchecked(&mut payload[..]).set_code(code);
        }
        let code = code.unwrap_or(reply.code);
        if let Some(sa) = self.mn_fa_sa(reply.home_addr) {
            // §3.7.3.2: MUST append the Mobile-Foreign Authentication Extension.
            append_auth(&mut payload, ExtensionType::MnFaAuth, sa);
        }
        self.stats.relayed_replies += 1;
        self.transmits.push_back(to_mobile(
            &self.config,
            &pending.from,
            reply.home_addr,
            payload,
        ));

        if !code.is_accepted() {
            // §3.7.2 / §3.7.3.2: the pending request goes, the visitor entry stays as it was.
            if u8::from(code) >= 128 {
                *self
                    .stats
                    .denied_by_home_agent
                    .entry(code.into())
                    .or_default() += 1;
            }
            info!(home = %reply.home_addr, code = %code, "registration denied");
            return;
        }
        // §3.4: never more than was requested; §3.7.3.2: never more than our maximum.
        let lifetime = reply
            .lifetime
            .min(pending.req.lifetime)
            .min(self.config.max_lifetime);
        if lifetime == 0 {
            self.stats.deregistered += 1;
            self.remove_visitor(reply.home_addr, RemovalReason::Deregistered);
            return;
        }
        let co_located = pending.req.flags.contains(RequestFlags::D);
        // RFC 3519 §3.2.1: codes below 64 assent. Without an assenting reply the tunnel is
        // IP-in-IP (§3.1.1: "MUST NOT use MIP UDP tunnelling"), which the NAT in front of us
        // may well not pass: said once per registration.
        let udp_keepalive = match (pending.udp_asked, scan.udp_reply, self.config.udp_tunnel) {
            (true, Some(r), Some(cfg)) if r.reply_code < 64 => {
                self.stats.udp_tunnels_assented += 1;
                let suggested = match r.keepalive_interval {
                    0 => DEFAULT_KEEPALIVE,
                    k => Duration::from_secs(k.into()),
                };
                Some(suggested.min(cfg.max_keepalive).max(MIN_KEEPALIVE))
            }
            (true, reply, _) => {
                self.stats.udp_tunnels_refused += 1;
                warn!(home = %pending.req.home_addr, ha = %from, code = ?reply.map(|r| r.reply_code),
                    "the home agent did not assent to UDP tunnelling (RFC 3519 §4.5): its IP-in-IP tunnel may not pass our NAT");
                None
            }
            _ => None,
        };
        let visitor = Visitor {
            home_addr: reply.home_addr,
            home_agent: reply.home_agent,
            mac: pending.from.src_mac,
            iface: pending.from.iface,
            care_of_addr: pending.req.care_of_addr,
            source: pending.from.src,
            co_located,
            reverse_tunnel: !co_located && pending.req.flags.contains(RequestFlags::T),
            udp_keepalive,
            delivery: pending.delivery,
            identification: pending.req.identification,
            lifetime,
            // §3.7.3.2: from when we forward the reply, so we never expire it before the
            // mobile node does.
            registered_at: now.mono,
            expires_at: (lifetime != LIFETIME_INFINITE)
                .then(|| now.mono + Duration::from_secs(lifetime.into())),
        };
        self.stats.accepted += 1;
        if let Some(interval) = udp_keepalive {
            self.keep_alive(now, visitor.care_of_addr, visitor.home_agent, interval);
        }
        self.set_visitor(visitor);
    }

    /// Keeps the UDP tunnel from `coa` to `home_agent` open (RFC 3519 §4.9): the first
    /// keepalive K after the registration, the shortest K any of its visitors was given.
    fn keep_alive(&mut self, now: Now, coa: Ipv4Addr, home_agent: Ipv4Addr, interval: Duration) {
        let key = (coa, home_agent);
        let k = self.keepalives.entry(key).or_insert(Keepalive {
            interval,
            due: now.mono + interval,
            seq: 0,
            unanswered: 0,
        });
        if interval < k.interval || k.due > now.mono + interval {
            self.deadlines
                .remove(&(k.due, Timer::Keepalive(coa, home_agent)));
            k.interval = k.interval.min(interval);
            k.due = k.due.min(now.mono + interval);
        }
        self.deadlines
            .insert((k.due, Timer::Keepalive(coa, home_agent)));
    }

    /// A keepalive is due: sent if a visitor still uses the tunnel, else the tunnel is
    /// forgotten (the NAT mapping may lapse).
    fn send_keepalive(&mut self, now: Now, coa: Ipv4Addr, home_agent: Ipv4Addr) {
        let key = (coa, home_agent);
        let in_use = self
            .entries
            .values()
            .filter_map(|e| e.visitor.as_ref())
            .any(|v| {
                v.udp_keepalive.is_some() && v.care_of_addr == coa && v.home_agent == home_agent
            });
        if !in_use {
            self.keepalives.remove(&key);
            debug!(%coa, ha = %home_agent, "UDP tunnel unused: no more keepalives");
            return;
        }
        let Some(k) = self.keepalives.get_mut(&key) else {
            return;
        };
        if k.unanswered == KEEPALIVES_UNANSWERED_WARN {
            warn!(%coa, ha = %home_agent, unanswered = k.unanswered,
                "keepalives to the home agent go unanswered: the UDP tunnel through the NAT is probably broken (RFC 3519 §4.9)");
        }
        k.seq = k.seq.wrapping_add(1);
        k.unanswered = k.unanswered.saturating_add(1);
        k.due = now.mono + k.interval;
        self.deadlines
            .insert((k.due, Timer::Keepalive(coa, home_agent)));
        let mut echo = [0u8; 4];
        echo[..2].copy_from_slice(&KEEPALIVE_ICMP_ID.to_be_bytes());
        echo[2..].copy_from_slice(&k.seq.to_be_bytes());
        self.next_ip_id = self.next_ip_id.wrapping_add(1);
        // §4.9: "a properly UDP encapsulated ICMP echo request directed to the home agent",
        // from the care-of address (the tunnel's inner source on our side), sent from the port
        // our relays use so that it keeps their mapping.
        let keepalive = KeepaliveRepr {
            src: coa,
            dst: home_agent,
            ip_id: self.next_ip_id,
            icmp_type: ICMP_ECHO_REQUEST,
            echo: &echo,
        };
        let mut payload = vec![0u8; keepalive.buffer_len()];
        if keepalive.emit(&mut payload).is_err() {
            return;
        }
        self.stats.keepalives_sent += 1;
        self.transmits.push_back(FaTransmit {
            src: coa,
            dst: SocketAddrV4::new(home_agent, MIP_PORT),
            link: None,
            payload,
        });
    }

    /// Tunnel data the fast path handed up: a home agent's answer to our keepalive.
    fn handle_tunnel_data(&mut self, from: SocketAddrV4, bytes: &[u8]) {
        let answer = KeepaliveRepr::parse(bytes)
            .ok()
            .filter(|k| k.icmp_type == ICMP_ECHO_REPLY && k.src == *from.ip())
            .filter(|k| k.id_seq().is_some_and(|(id, _)| id == KEEPALIVE_ICMP_ID));
        let tunnel = answer.and_then(|k| self.keepalives.get_mut(&(k.dst, k.src)));
        match tunnel {
            Some(t) => {
                t.unanswered = 0;
                self.stats.keepalive_replies += 1;
            }
            None => {
                self.stats.dropped_tunnel_data += 1;
                debug!(%from, len = bytes.len(), "dropped: tunnel data that is no answer to our keepalive");
            }
        }
    }

    fn set_visitor(&mut self, visitor: Visitor) {
        let home = visitor.home_addr;
        if let Some(t) = visitor.expires_at {
            self.deadlines.insert((t, Timer::Visitor(home)));
        }
        let entry = self.entries.entry(home).or_default();
        let old = entry.visitor.replace(visitor.clone());
        match old {
            Some(old) => {
                if let Some(t) = old.expires_at.filter(|&t| Some(t) != visitor.expires_at) {
                    self.deadlines.remove(&(t, Timer::Visitor(home)));
                }
                if old.mac != visitor.mac || old.care_of_addr != visitor.care_of_addr {
                    info!(home = %home, mac = %mac_string(visitor.mac), coa = %visitor.care_of_addr, "visitor moved");
                } else {
                    debug!(home = %home, lifetime = visitor.lifetime, "visitor refreshed");
                }
                self.events
                    .push_back(FaEvent::VisitorUpdated { old, new: visitor });
            }
            None => {
                info!(home = %home, mac = %mac_string(visitor.mac), ha = %visitor.home_agent, coa = %visitor.care_of_addr,
                    lifetime = visitor.lifetime, reverse_tunnel = visitor.reverse_tunnel, "visitor added");
                self.events.push_back(FaEvent::VisitorAdded(visitor));
            }
        }
    }

    fn remove_visitor(&mut self, home: Ipv4Addr, reason: RemovalReason) {
        let Some(visitor) = self.entries.get_mut(&home).and_then(|e| e.visitor.take()) else {
            return;
        };
        if let Some(t) = visitor.expires_at {
            self.deadlines.remove(&(t, Timer::Visitor(home)));
        }
        self.drop_if_empty(home);
        info!(home = %home, coa = %visitor.care_of_addr, ?reason, "visitor removed");
        self.events
            .push_back(FaEvent::VisitorRemoved { visitor, reason });
    }

    /// An ICMP error about a request we relayed to `home_agent` (RFC 5944 §3.7.3: 80-88 to
    /// the mobile node). `quoted` is the UDP payload the ICMP error quotes, as much as it
    /// holds (possibly nothing): with the first 24 bytes of the request the error is tied to
    /// that one pending request; without, to every request pending at that home agent. The
    /// daemon must only report errors whose quoted headers name us and `home_agent`, port 434.
    pub fn handle_icmp_unreachable(
        &mut self,
        now: Now,
        home_agent: Ipv4Addr,
        kind: IcmpUnreachable,
        quoted: &[u8],
    ) {
        self.handle_timeout(now);
        let exact = RequestPacket::new_checked(quoted)
            .ok()
            .map(|p| (p.home_addr(), p.identification() as u32));
        let keys: Vec<(Ipv4Addr, u32)> = self
            .entries
            .iter()
            .flat_map(|(home, e)| e.pending.iter().map(move |p| (*home, p)))
            .filter(|(_, p)| p.req.home_agent == home_agent)
            .map(|(home, p)| (home, p.id_low()))
            .filter(|key| exact.is_none_or(|x| x == *key))
            .collect();
        if keys.is_empty() {
            self.stats.dropped_icmp_no_pending += 1;
            debug!(ha = %home_agent, ?kind, "ICMP error matches no pending request");
            return;
        }
        for (home, id_low) in keys {
            if let Some(p) = self.take_pending(home, id_low) {
                info!(home = %home, ha = %home_agent, ?kind, "home agent unreachable");
                self.deny_pending(now, &p, kind.code());
            }
        }
    }

    /// Expires visitors and pending requests that waited too long (78, §3.7.1).
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(&(t, timer)) = self.deadlines.first() {
            if t > now.mono {
                break;
            }
            self.deadlines.pop_first();
            match timer {
                Timer::Visitor(home) => {
                    // §3.7: no message to anyone when a lifetime ends.
                    if self
                        .entries
                        .get(&home)
                        .and_then(|e| e.visitor.as_ref())
                        .is_some_and(|v| v.expires_at == Some(t))
                    {
                        self.stats.expired += 1;
                        self.remove_visitor(home, RemovalReason::Expired);
                    }
                }
                Timer::Keepalive(coa, home_agent) => {
                    if self
                        .keepalives
                        .get(&(coa, home_agent))
                        .is_some_and(|k| k.due == t)
                    {
                        self.send_keepalive(now, coa, home_agent);
                    }
                }
                Timer::Pending(home, id_low) => {
                    let Some(entry) = self.entries.get_mut(&home) else {
                        continue;
                    };
                    let Some(at) = entry
                        .pending
                        .iter()
                        .position(|p| p.id_low() == id_low && p.deadline == t)
                    else {
                        continue;
                    };
                    let p = entry.pending.remove(at);
                    self.drop_if_empty(home);
                    info!(home = %home, ha = %p.req.home_agent, "registration timeout");
                    self.deny_pending(now, &p, ReplyCode::FaRegistrationTimeout);
                }
            }
        }
        if self.last_denial.len() > DENIAL_TABLE_PRUNE_AT {
            self.last_denial
                .retain(|_, &mut t| now.mono < t + DENIAL_INTERVAL);
        }
    }

    /// The next monotonic deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    pub fn poll_transmit(&mut self) -> Option<FaTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<FaEvent> {
        self.events.pop_front()
    }

    fn deny_pending(&mut self, now: Now, p: &Pending, code: ReplyCode) {
        self.deny(now, &p.from, &p.req, code, p.nai.as_deref());
    }

    /// Sends the mobile node our denial (§3.7.2.3): Home Address, Home Agent and
    /// Identification copied from the request, its Lifetime too except for 69 (our maximum).
    fn deny(
        &mut self,
        now: Now,
        from: &FromMobile,
        req: &RequestRepr,
        code: ReplyCode,
        nai: Option<&[u8]>,
    ) {
        *self.stats.denied.entry(code.into()).or_default() += 1;
        let key = (req.home_addr, from.src_mac);
        if self
            .last_denial
            .get(&key)
            .is_some_and(|&t| now.mono < t + DENIAL_INTERVAL)
        {
            self.stats.denials_rate_limited += 1;
            debug!(home = %req.home_addr, code = %code, "denial not sent: one a second at most");
            return;
        }
        self.last_denial.insert(key, now.mono);
        debug!(home = %req.home_addr, mac = %mac_string(from.src_mac), code = %code, "registration denied");
        let reply = ReplyRepr {
            code,
            lifetime: if code == ReplyCode::FaLifetimeTooLong {
                self.config.max_lifetime
            } else {
                req.lifetime
            },
            home_addr: req.home_addr,
            home_agent: req.home_agent,
            identification: req.identification,
        };
        // The NAI goes back, so that a mobile node without a home address (96) can tell the
        // reply is for it; it is at most 255 bytes.
        let nai_ext = nai.map(Extension::MnNai);
        let len = ReplyRepr::LEN + nai_ext.as_ref().map_or(0, Extension::buffer_len);
        let mut payload = vec![0u8; len];
        // The buffer holds the fixed part and the extension we sized it for.
        let _ = reply.emit(&mut ReplyPacket::new_unchecked(&mut payload[..]));
        if let Some(ext) = &nai_ext {
            let mut w = ExtensionWriter::new(&mut payload, ReplyRepr::LEN);
            if w.push(ext).is_err() {
                payload.truncate(ReplyRepr::LEN);
            }
        }
        if let Some(sa) = self.mn_fa_sa(req.home_addr) {
            // §3.7.1: replies to a mobile node we share an association with carry it.
            append_auth(&mut payload, ExtensionType::MnFaAuth, sa);
        }
        self.transmits
            .push_back(to_mobile(&self.config, from, req.home_addr, payload));
    }
}

/// A reply to a mobile node (§3.7.2.3): from the address the request was sent to (ours on the
/// link if that was multicast or broadcast), to the home address (255.255.255.255 without
/// one) and the request's source port, on the link to the request's link-layer source.
fn to_mobile(
    config: &FaConfig,
    from: &FromMobile,
    home_addr: Ipv4Addr,
    payload: Vec<u8>,
) -> FaTransmit {
    let src = if from.dst.is_multicast() || from.dst.is_broadcast() || from.dst.is_unspecified() {
        config
            .interfaces
            .iter()
            .find(|i| i.index == from.iface)
            .map_or(from.dst, |i| i.address)
    } else {
        from.dst
    };
    let dst = if home_addr.is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        home_addr
    };
    FaTransmit {
        src,
        dst: SocketAddrV4::new(dst, from.src.port()),
        link: Some(LinkTarget {
            iface: from.iface,
            mac: from.src_mac,
        }),
        payload,
    }
}

/// Walks a request's extensions (§3.6.1.3: those for the home agent, the Mobile-Home
/// Authentication Extension, those for us, the Mobile-Foreign Authentication Extension).
fn scan_request(bytes: &[u8], flags: RequestFlags) -> Result<RequestScan<'_>, WalkError> {
    let mut s = RequestScan::default();
    let mut last_at = 0;
    for item in walk(bytes, RequestRepr::LEN) {
        let (at, ext) = item?;
        last_at = at;
        let before_auth = s.mn_ha_end.is_none();
        match ext {
            Extension::MnHaAuth(_) if before_auth => s.mn_ha_end = Some(at + ext.buffer_len()),
            Extension::MnNai(n) if before_auth => s.nai = Some(n),
            Extension::UdpTunnelRequest(r) => {
                // One after the Mobile-Home authenticator is nobody's (we add ours there):
                // poorly formed, as is any second one.
                if !before_auth || s.udp_tunnel_request.is_some() {
                    s.poorly_formed =
                        Some("UDP Tunnel Request after the Mobile-Home authentication, or twice");
                }
                s.udp_tunnel_request = Some(r);
            }
            Extension::MnFaAuth(a) => {
                s.mn_fa_count += 1;
                if s.mn_fa.is_none() {
                    s.mn_fa = Some((at, a));
                }
            }
            Extension::Other {
                kind: ENCAPSULATING_DELIVERY_STYLE,
                data,
            } => {
                // RFC 3024 §3.3: after the Mobile-Home authentication (we consume it, so it
                // cannot sit under the home agent's authenticator), length 0, and only with T.
                if before_auth {
                    s.poorly_formed =
                        Some("Encapsulating Delivery Style before the Mobile-Home authentication");
                } else if !data.is_empty() {
                    s.poorly_formed = Some("Encapsulating Delivery Style with a nonzero length");
                } else if !flags.contains(RequestFlags::T) {
                    s.poorly_formed = Some("Encapsulating Delivery Style without 'T'");
                }
                s.encapsulating_delivery = true;
            }
            _ => {}
        }
    }
    s.mn_fa_is_last = s.mn_fa.is_some_and(|(at, _)| at == last_at);
    Ok(s)
}

/// Walks a reply's extensions: the home agent's, its Mobile-Home Authentication Extension,
/// then the Foreign-Home Authentication Extension for us.
fn scan_reply(bytes: &[u8]) -> Result<ReplyScan<'_>, WalkError> {
    let mut s = ReplyScan::default();
    for item in walk(bytes, ReplyRepr::LEN) {
        let (at, ext) = item?;
        match ext {
            Extension::MnHaAuth(_) => {
                s.mn_ha_count += 1;
                if s.mn_ha_end.is_none() {
                    s.mn_ha_end = Some(at + ext.buffer_len());
                }
            }
            Extension::MnNai(_) if s.mn_ha_end.is_none() => s.nai = true,
            Extension::UdpTunnelReply(r) if s.mn_ha_end.is_some() && s.fa_ha_count == 0 => {
                s.udp_reply = Some(r);
            }
            Extension::FaHaAuth(a) => {
                s.fa_ha_count += 1;
                if s.fa_ha.is_none() {
                    s.fa_ha = Some((at, a));
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_codes_map_to_reply_codes() {
        assert_eq!(
            u8::from(IcmpUnreachable::from_unreachable_code(0).code()),
            80
        );
        assert_eq!(
            u8::from(IcmpUnreachable::from_unreachable_code(1).code()),
            81
        );
        assert_eq!(
            u8::from(IcmpUnreachable::from_unreachable_code(3).code()),
            82
        );
        assert_eq!(
            u8::from(IcmpUnreachable::from_unreachable_code(13).code()),
            88
        );
    }

    #[test]
    fn mac_is_printed_colon_separated() {
        assert_eq!(
            mac_string([0x02, 0, 0x5e, 0x10, 0xab, 0xff]),
            "02:00:5e:10:ab:ff"
        );
    }
}
