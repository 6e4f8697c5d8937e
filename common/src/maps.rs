//! BPF map names and key/value types shared by `dataplane-ebpf` and `control`.
//!
//! Rules (DESIGN.md §3): `#[repr(C)]`, `Copy`, explicit padding, a `size_of` assertion,
//! addresses as `[u8; 4]` in network byte order, no `bool`/`Option`/Rust enums inside.
//! Maps are pinned under the daemon's bpffs directory by these names, so a restarted `mipd`
//! adopts them. The loader refuses a pinned map whose key size, value size or capacity differ
//! from the object's (aya's `IncompatiblePinnedMap`), so a layout change needs `mipd --unload`
//! once when upgrading; never reuse a field for another meaning at the same size.

use core::mem::size_of;

/// Per-CPU array of `u64`, indexed by [`crate::counters::Counter`].
pub const COUNTERS_MAP: &str = "MIPX_COUNTERS";
/// Home agent: hash of home address (`[u8; 4]`) → [`HaBinding`]. The mobility binding list of
/// RFC 5944 §3.8.1 as the fast path sees it; `mipd` mirrors its binding cache into it.
pub const BINDINGS_MAP: &str = "MIPX_BINDINGS";
/// Home agent: one-element array of [`HaDataplaneConfig`].
pub const HA_CONFIG_MAP: &str = "MIPX_HA_CONFIG";
/// Hash of ifindex (`u32`) → [`IfaceInfo`]: the interfaces `mipd` attached to.
pub const IFACES_MAP: &str = "MIPX_IFACES";
/// Mobile node: two-element array of [`MnTunnel`]: slot [`MN_SLOT_HOME`], the internal home
/// address's tunnel (mode c, or inside the VPN), and slot [`MN_SLOT_OUTER`], the tunnel the VPN
/// itself rides in (mode cvc: the external home address's, to the x-HA).
pub const MN_TUNNEL_MAP: &str = "MIPX_MN_TUNNEL";
/// Per-CPU array of one `u32`: the next IPv4 Identification for outer headers.
pub const IP_ID_MAP: &str = "MIPX_IP_ID";
/// Per-CPU array of [`NextHop`]: a short-lived cache of `bpf_fib_lookup` answers.
pub const NEXTHOP_MAP: &str = "MIPX_NEXTHOPS";

/// Mobile node: hash of ifindex (`u32`) → [`MnGate`]: the RFC 5265 plaintext gate of each
/// interface `mipd` detects inside/outside on.
pub const MN_GATE_MAP: &str = "MIPX_MN_GATE";

/// Every map the object defines, for loaders that pin or check them all.
pub const ALL_MAPS: [&str; 12] = [
    COUNTERS_MAP,
    BINDINGS_MAP,
    HA_CONFIG_MAP,
    IFACES_MAP,
    MN_TUNNEL_MAP,
    IP_ID_MAP,
    NEXTHOP_MAP,
    MN_GATE_MAP,
    MN_VPN_SPIS_MAP,
    FA_VISITORS_MAP,
    FA_CONFIG_MAP,
    FA_CARE_OF_MAP,
];

/// Slots of [`NEXTHOP_MAP`] (a power of two: the slot is the top bits of a hash).
pub const NEXTHOP_SLOTS: u32 = 1024;
/// How often `mipd` advances [`HaDataplaneConfig::nexthop_epoch`], invalidating every cached
/// FIB answer: route and neighbour changes reach the fast path within this time, and a busy
/// tunnel pays for the lookup once per period instead of once per packet.
pub const NEXTHOP_EPOCH_MS: u64 = 250;
/// The fallback when no `mipd` advances the epoch (it was killed; the pinned programs keep
/// forwarding): every [`NEXTHOP_CHECK_EVERY`]th use of an entry reads the clock, and an entry
/// older than this is looked up again.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;
/// See [`NEXTHOP_TTL_NS`] (a power of two).
pub const NEXTHOP_CHECK_EVERY: u16 = 64;

/// A cached forwarding decision for one destination address, in [`NEXTHOP_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The destination this answers for; all zero: empty slot.
    pub addr: [u8; 4],
    /// Egress interface.
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The route's MTU.
    pub mtu: u16,
    /// Uses since it was looked up (wrapping), for the clock check.
    pub uses: u16,
    /// [`HaDataplaneConfig::nexthop_epoch`] when it was looked up.
    pub epoch: u32,
    pub _pad: [u8; 4],
    /// `bpf_ktime_get_coarse_ns()` when it was looked up.
    pub stamp_ns: u64,
}
const _: () = assert!(size_of::<NextHop>() == 40);

/// Default capacity of [`BINDINGS_MAP`]; `mipd` overrides it from `dataplane.max_bindings`.
pub const DEFAULT_MAX_BINDINGS: u32 = 65_536;
/// Capacity of [`IFACES_MAP`].
pub const MAX_IFACES: u32 = 64;

/// [`HaBinding::tunnel_flags`]: the binding was granted reverse tunnelling (RFC 3024 §4.2, the
/// T bit), so IP-in-IP from its care-of address with the home address inside is decapsulated.
pub const TUNNEL_REVERSE: u32 = 1 << 0;
/// [`HaBinding::tunnel_flags`]: the binding uses RFC 3519 UDP tunnelling: both directions are
/// IP-in-UDP between the home agent's registration port ([`HaDataplaneConfig::udp_port`]) and
/// the address and port the registration came from (`source_addr`, `source_port`: the NAT's
/// side, the "effective care-of address" of §4.6), and plain IP-in-IP is refused (§4.7).
pub const TUNNEL_UDP: u32 = 1 << 1;

/// One mobility binding in [`BINDINGS_MAP`], keyed by the home address.
///
/// The first 12 bytes are what the XDP program reads per packet; the rest lets a restarted
/// `mipd` rebuild its binding cache from the pinned map (RFC 5944 §3.8.1 keeps the binding for
/// its lifetime, whoever restarts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaBinding {
    /// Tunnel exit point (outer destination), network byte order.
    pub care_of_addr: [u8; 4],
    /// The home agent address given in the Registration Reply: the outer source (RFC 5944
    /// §4.2.3, multihomed HAs MUST use it) and the outer destination expected on reverse tunnels.
    pub home_agent: [u8; 4],
    /// `TUNNEL_*` bits.
    pub tunnel_flags: u32,
    /// SPI of the mobility security association that authenticated the registration.
    pub spi: u32,
    /// Where the Registration Request came from (address, network byte order).
    pub source_addr: [u8; 4],
    /// Where the Registration Request came from (UDP port, network byte order).
    pub source_port: [u8; 2],
    /// Granted lifetime, seconds.
    pub lifetime: u16,
    /// The request's flag byte (RFC 5944 §3.3).
    pub request_flags: u8,
    pub _pad: [u8; 7],
    /// Identification of the accepted request, for replay protection after a restart (§5.7).
    pub identification: u64,
    /// Wall clock of the accepted registration, milliseconds since the Unix epoch.
    pub registered_unix_ms: u64,
    /// Wall clock at which the binding ends, milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}
const _: () = assert!(size_of::<HaBinding>() == 56);

/// Home agent settings the XDP program needs, in [`HA_CONFIG_MAP`] slot 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaDataplaneConfig {
    /// The home agent's address: destination of reverse tunnels, source of ICMP errors.
    pub home_agent: [u8; 4],
    /// Non-zero once `mipd` has configured the program; until then it passes everything.
    pub enabled: u8,
    pub _pad: [u8; 3],
    /// [`NEXTHOP_MAP`] entries cached under another epoch are stale. `mipd` advances it every
    /// [`NEXTHOP_EPOCH_MS`], so cached FIB answers are renewed that often without a clock
    /// read per packet.
    pub nexthop_epoch: u32,
    /// The UDP port registrations arrive on (434 unless configured), network byte order: the
    /// home agent's end of every RFC 3519 UDP tunnel.
    pub udp_port: [u8; 2],
    pub _pad2: [u8; 2],
}
const _: () = assert!(size_of::<HaDataplaneConfig>() == 16);

/// [`IfaceInfo::flags`]: the home link, where the home agent answers ARP for away mobile nodes
/// (RFC 5944 §4.6).
pub const IFACE_HOME_LINK: u16 = 1 << 0;

/// An interface `mipd` attached to, in [`IFACES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// The interface's own link-layer address (proxy ARP replies carry it).
    pub mac: [u8; 6],
    /// `IFACE_*` bits.
    pub flags: u16,
}
const _: () = assert!(size_of::<IfaceInfo>() == 8);

/// [`MN_TUNNEL_MAP`] slot of the home address's tunnel.
pub const MN_SLOT_HOME: u32 = 0;
/// [`MN_TUNNEL_MAP`] slot of the external home address's tunnel in mode cvc (RFC 5265 §2.3):
/// it carries only the VPN, so what it delivers is gated after decapsulation.
pub const MN_SLOT_OUTER: u32 = 1;

/// [`MnTunnel::flags`]: a binding is active; without it the mobile node's programs touch
/// nothing (it is at home, or not registered).
pub const MN_ACTIVE: u32 = 1 << 0;
/// [`MnTunnel::flags`]: reverse-tunnel packets from the home address (RFC 3024, T bit granted).
pub const MN_REVERSE_TUNNEL: u32 = 1 << 1;

/// [`MnTunnel::flags`]: the home agent assented to RFC 3519 UDP tunnelling: both directions
/// are IP-in-UDP between `mn_port` and `ha_port` (§4.7). IP-in-IP from the home agent is still
/// decapsulated: after a move out of a NAT the home agent switches first, and the packets it
/// sends before our registration reply arrives would otherwise be lost.
pub const MN_UDP_TUNNEL: u32 = 1 << 2;

/// [`MnTunnel::flags`]: the care-of address is the VPN's tunnel inner address (TIA, RFC 5265
/// §2.3): the tunnel runs inside the VPN, so the programs on the VPN device (`mn_tc_vpn_egress`,
/// `mn_tc_vpn_ingress`) encapsulate and decapsulate it, and those on the access interfaces leave
/// it alone: nothing of it may appear there except as ESP.
pub const MN_VIA_VPN: u32 = 1 << 3;

/// The mobile node's current registration, in [`MN_TUNNEL_MAP`] slot 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MnTunnel {
    pub home_addr: [u8; 4],
    pub home_agent: [u8; 4],
    /// The co-located care-of address: outer source of reverse tunnels, outer destination of
    /// the home agent's tunnel.
    pub care_of_addr: [u8; 4],
    /// `MN_*` bits.
    pub flags: u32,
    /// UDP tunnelling: the port our registrations are sent from (network byte order); RFC 3519
    /// §4.4: tunnelled data MUST use the same source port.
    pub mn_port: [u8; 2],
    /// UDP tunnelling: the home agent's registration port (434), network byte order.
    pub ha_port: [u8; 2],
}
const _: () = assert!(size_of::<MnTunnel>() == 20);

/// [`MnGate::state`]: the interface's connection status changed, or detection has not decided
/// yet: no user data in either direction (RFC 5265 §3.2.2), only the signalling that detection
/// needs (see [`MnGate`]).
pub const GATE_CLOSED: u32 = 0;
/// [`MnGate::state`]: inside the intranet (a trusted i-HA registration through this interface,
/// §3.2.3): user data passes in plaintext until [`MnGate::open_until_ns`], T_MONITOR after the
/// last successful i-HA registration (§3.2.4); after that it is dropped, whatever `mipd` does.
pub const GATE_INSIDE: u32 = 1;
/// [`MnGate::state`]: outside: user data must go through the VPN, which is not in this gate's
/// scope yet, so only signalling passes.
pub const GATE_OUTSIDE: u32 = 2;
/// Capacity of [`MN_GATE_MAP`]: interfaces with a gate.
pub const MAX_GATED_IFACES: u32 = 64;

/// The RFC 5265 plaintext gate of one interface, in [`MN_GATE_MAP`]. An interface without an
/// entry is not gated (plain Mobile IPv4, no RFC 5265 detection configured).
///
/// Whatever the state, the gate passes what detection and registration need: ARP, DHCP (UDP
/// 67/68), and Registration Requests and Replies (UDP to or from `mip_port` whose first byte is
/// 1 or 3). MIP tunnel data on that port (RFC 3519, type 4) is user data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MnGate {
    /// `GATE_*`.
    pub state: u32,
    /// The Mobile IP UDP port (434 unless configured), network byte order.
    pub mip_port: [u8; 2],
    pub _pad: [u8; 2],
    /// `GATE_INSIDE`: user data passes while `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE)
    /// is below this. `mipd` moves it to T_MONITOR after each successful i-HA registration was
    /// sent; a stalled or killed `mipd` cannot keep the gate open.
    pub open_until_ns: u64,
    /// The VPN gateway (network byte order; all zero: none). IKE with it always passes (UDP 500,
    /// and 4500 behind the non-ESP marker, RFC 3948 §2.2), and so does ESP, plain or in UDP
    /// 4500, whose SPI is in [`MN_VPN_SPIS_MAP`]: the VPN is how user data leaves when
    /// outside (RFC 5265 §2.3), and it is ciphertext.
    pub vpn_gateway: [u8; 4],
    /// Mode cvc: the x-HA (network byte order; all zero: none). Its tunnel carries the VPN
    /// only, so its tunnel data passes here and is gated after decapsulation (ingress) or was
    /// gated before encapsulation (egress); `mipd`'s RFC 3519 keepalives to it pass too.
    pub outer_home_agent: [u8; 4],
}
const _: () = assert!(size_of::<MnGate>() == 24);

/// Mobile node: hash of ESP SPI (`[u8; 4]`, network byte order, as on the wire) → `u8` (1): the
/// SPIs of the VPN's current CHILD_SAs, both directions, which `mipd` installs and removes as
/// charon brings SAs up, rekeys them and tears them down.
pub const MN_VPN_SPIS_MAP: &str = "MIPX_MN_VPN_SPIS";
/// Capacity of [`MN_VPN_SPIS_MAP`] (a few CHILD_SAs, in and out, across a rekey).
pub const MAX_VPN_SPIS: u32 = 64;
/// IKE's UDP port and its NAT-traversal port (RFC 7296 §2.11, RFC 3948 §2).
pub const IKE_PORT: u16 = 500;
pub const IKE_NATT_PORT: u16 = 4500;

/// Foreign agent: hash of home address (`[u8; 4]`) → [`FaVisitor`]. The visitor list of RFC
/// 5944 §3.7.1 as the fast path sees it: only accepted registrations (§3.7.3.2), never pending
/// ones, so a denied or unanswered request leaves the entry as it was (§3.7.2).
pub const FA_VISITORS_MAP: &str = "MIPX_FA_VISITORS";
/// Foreign agent: one-element array of [`FaDataplaneConfig`].
pub const FA_CONFIG_MAP: &str = "MIPX_FA_CONFIG";
/// Foreign agent: hash of care-of address (`[u8; 4]`, network byte order) → ifindex (`u32`) of
/// the link that advertises it. IP-in-IP to one of these is a tunnel ending here (RFC 5944
/// §4.2.2), whatever its inner destination; IP-in-IP to any other address is transit.
pub const FA_CARE_OF_MAP: &str = "MIPX_FA_CARE_OF";
/// Capacity of [`FA_VISITORS_MAP`]: the largest `fa.max_visitors` the dataplane can mirror.
pub const MAX_VISITORS: u32 = 16_384;
/// Capacity of [`FA_CARE_OF_MAP`].
pub const MAX_FA_CARE_OF: u32 = 64;

/// [`FaVisitor::flags`]: the home agent granted reverse tunnelling (RFC 3024 §4.2.2, the T bit
/// of an accepted registration): what the visitor sends from its home address on its link is
/// tunnelled IP-in-IP from the care-of address to the home agent (§5.1, Direct Delivery Style).
/// Without it, what the visitor sends is routed by the kernel (triangle routing).
pub const VISITOR_REVERSE_TUNNEL: u32 = 1 << 0;
/// [`FaVisitor::flags`]: RFC 3519 UDP tunnelling between the foreign agent and the home agent,
/// set when the foreign agent sits behind a NAT and the home agent assented to it for the
/// registration we relayed (§4.5). The tunnel runs between the care-of address at our
/// registration port ([`FaDataplaneConfig::udp_port`]) and the home agent's port 434. All of
/// the visitor's data goes through it (§4.7): the home agent's IP-in-UDP is delivered and its
/// IP-in-IP refused, and with [`VISITOR_REVERSE_TUNNEL`] what the visitor sends is tunnelled
/// IP-in-UDP.
pub const VISITOR_UDP_TUNNEL: u32 = 1 << 1;

/// One visitor in [`FA_VISITORS_MAP`], keyed by its home address.
///
/// The first 24 bytes are what the XDP program reads per packet; the rest lets a restarted
/// `mipd` rebuild its visitor list from the pinned map (the entry lives for the granted
/// lifetime, §3.7.3.2, whoever restarts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaVisitor {
    /// The care-of address the visitor registered (the Registration Request's Care-of Address
    /// field): outer destination of the home agent's tunnel, outer source of the reverse
    /// tunnel (RFC 3024 §5.1.2), network byte order.
    pub care_of_addr: [u8; 4],
    /// The Home Agent field of the accepted Registration Reply: the only outer source accepted
    /// on the tunnel (RFC 2003 §6.2) and the outer destination of the reverse tunnel (RFC 3024
    /// §5.1.2), network byte order.
    pub home_agent: [u8; 4],
    /// The interface the visitor's Registration Request arrived on: its link.
    pub ifindex: u32,
    /// `VISITOR_*` bits.
    pub flags: u32,
    /// The visitor's link-layer address, copied from the Ethernet source of its Registration
    /// Request (RFC 5944 §4.2.2: never broadcast ARP for it). Delivery goes straight to it,
    /// and what arrives from the home address with another source is not from the visitor
    /// (RFC 3024 Appendix A.3: link-layer information and source address identify it).
    pub mac: [u8; 6],
    /// Granted lifetime, seconds (§3.7.3.2: the minimum of the reply's and ours).
    pub lifetime: u16,
    /// UDP source port of the Registration Request: the destination port of relayed replies
    /// (§3.7.2.3), network byte order.
    pub source_port: [u8; 2],
    /// The request's flag byte (RFC 5944 §3.3).
    pub request_flags: u8,
    pub _pad: [u8; 5],
    /// Identification of the accepted request (§3.7.3.1 matches replies by it).
    pub identification: u64,
    /// Wall clock at which the entry ends, milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}
const _: () = assert!(size_of::<FaVisitor>() == 48);

/// Foreign agent settings the XDP program needs, in [`FA_CONFIG_MAP`] slot 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaDataplaneConfig {
    /// Non-zero once `mipd` has configured the program; until then it passes everything.
    pub enabled: u8,
    pub _pad: u8,
    /// The UDP port registrations arrive on (434 unless configured), network byte order: what
    /// a visitor sends to it always goes up to `mipd`, never into a reverse tunnel.
    pub udp_port: [u8; 2],
    /// As [`HaDataplaneConfig::nexthop_epoch`]: `mipd` advances it every
    /// [`NEXTHOP_EPOCH_MS`] to renew the cached FIB answers toward home agents.
    pub nexthop_epoch: u32,
}
const _: () = assert!(size_of::<FaDataplaneConfig>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all eight): `#[repr(C)]`, only integer and byte-array fields, explicit padding so
    // every byte is initialised, valid for any bit pattern.
    unsafe impl aya::Pod for super::HaBinding {}
    unsafe impl aya::Pod for super::HaDataplaneConfig {}
    unsafe impl aya::Pod for super::IfaceInfo {}
    unsafe impl aya::Pod for super::MnTunnel {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::MnGate {}
    unsafe impl aya::Pod for super::FaVisitor {}
    unsafe impl aya::Pod for super::FaDataplaneConfig {}
}
