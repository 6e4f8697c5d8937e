//! The RFC 5265 mobile node's policy, sans-IO: one [`Detector`] per interface (§3), the
//! registration of the tunnel inner address (TIA) with the i-HA through the VPN (§2.3,
//! draft-ietf-mip4-mobike-connectivity §3.3), and from their state what the node wants of the
//! world: the VPN up or down, which tunnel each slot of the dataplane carries (mode c, f, cvc,
//! mc or fvc), and where each home address is routed.
//!
//! The shell feeds it what the kernel and charon say (an interface's address and gateway, a
//! foreign agent heard, datagrams, the VPN's state) with the time, sends what it queues, applies
//! its events, and brings the dataplane and routes in line with [`Node::wants`]. Nothing here
//! reads a clock or touches a socket, so the simulations in `control/tests/rfc5265_sim.rs` walk
//! every move of the lab in memory.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::detect::{DetectConfig, DetectEvent, DetectStatus, Detector, Gate, Location, Reason};
use super::mn::{MnConfig, MnEvent, MobileNode, ViaAgent};
use super::{Now, Transmit, Tunnel};

/// The access mode outside the intranet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutsideMode {
    /// RFC 5265 §2.3: the VPN inside the x-HA's tunnel, from the external home address.
    Cvc,
    /// draft-ietf-mip4-mobike-connectivity: the VPN from the care-of address, moved by MOBIKE.
    Mc,
}

/// What happens to the VPN while an interface is inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsideVpn {
    /// Draft §3.4.1 step 2: the node "MAY tear down" the VPN once inside.
    Teardown,
    Keep,
}

/// Which IPsec the VPN layer is to use (`[mn.rfc5265.vpn] ipsec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpsecSetting {
    /// Whatever charon runs.
    #[default]
    Auto,
    /// The kernel's own ESP (XFRM), as a Linux gateway or laptop uses it.
    Kernel,
    /// strongSwan's user-space ESP over a TUN device (kernel-libipsec), for kernels without
    /// ESP.
    Libipsec,
}

/// The IPsec the VPN runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpsecBackend {
    Kernel,
    Libipsec,
}

impl IpsecBackend {
    /// As `mipctl status` names it.
    pub fn name(self) -> &'static str {
        match self {
            IpsecBackend::Kernel => "xfrm",
            IpsecBackend::Libipsec => "kernel-libipsec",
        }
    }
}

/// The most ESP in tunnel mode adds to a packet with the suites charon proposes by default
/// (AES-CBC or AES-GCM, 16-byte IV; HMAC-SHA2-256-128 or a 16-byte GCM ICV): the outer IPv4
/// header (20), RFC 3948's UDP header when a NAT is in the way (8), SPI and sequence number
/// (8), the IV (16), up to 15 bytes of padding to the 16-byte block and the pad length and
/// next header bytes (17), the ICV (16). RFC 4303 §2. What the XFRM interface's MTU assumes
/// until the CHILD_SA's suite is known.
pub const ESP_TUNNEL_OVERHEAD_MAX: u32 = 20 + 8 + 8 + 16 + 17 + 16;

/// The per-packet sizes of an ESP transform (RFC 4303 §2), which its overhead and the largest
/// packet that fits a path follow from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspShape {
    /// Octets of IV in each packet.
    pub iv: u32,
    /// Octets of the integrity check value.
    pub icv: u32,
    /// The cipher's block size: the plaintext (payload, padding, pad length, next header) is
    /// padded to a multiple of it, then so that the ICV starts on a 4-octet boundary (§2.4).
    pub block: u32,
}

impl EspShape {
    /// From strongSwan's names of the encryption algorithm (`AES_GCM_16`, `AES_CBC`; a key
    /// size after '-' is ignored) and of the integrity algorithm (none with an AEAD cipher);
    /// `None` for an algorithm not known here.
    pub fn of(encr: &str, integ: Option<&str>) -> Option<EspShape> {
        let encr = encr.split('-').next().unwrap_or_default();
        let (iv, aead_icv, block) = if let Some(icv) = encr
            .strip_prefix("AES_GCM_")
            .or_else(|| encr.strip_prefix("AES_CCM_"))
        {
            // RFC 4106 §3.1, RFC 4309 §3.1: an 8-octet IV; the name gives the ICV's octets.
            (8, Some(icv.parse().ok()?), 1)
        } else {
            match encr {
                "CHACHA20_POLY1305" => (8, Some(16), 1),      // RFC 7634 §2
                "AES_CBC" | "CAMELLIA_CBC" => (16, None, 16), // RFC 3602 §3, RFC 4312 §3
                "AES_CTR" => (8, None, 1),                    // RFC 3686 §3
                "3DES_CBC" | "3DES" => (8, None, 8),          // RFC 2451 §2.3
                "NULL" => (0, None, 1),                       // RFC 2410
                _ => return None,
            }
        };
        let icv = match (aead_icv, integ) {
            (Some(icv), _) => icv,
            // RFC 2404, 2403, 3566, 4494: 96-bit truncations; RFC 4868 §2.3: half the hash.
            (None, Some("HMAC_MD5_96" | "HMAC_SHA1_96" | "AES_XCBC_96" | "AES_CMAC_96")) => 12,
            (None, Some("HMAC_SHA2_256_128")) => 16,
            (None, Some("HMAC_SHA2_384_192")) => 24,
            (None, Some("HMAC_SHA2_512_256")) => 32,
            _ => return None,
        };
        Some(EspShape { iv, icv, block })
    }

    /// Octets of padding for a `payload`-octet inner packet (§2.4): to the block size, then
    /// until the ICV is 4-octet aligned.
    pub fn padding(&self, payload: u32) -> u32 {
        let pad_len = |len: u32, to: u32| (to - len % to) % to;
        let plain = payload + 2;
        let pad = pad_len(plain, self.block.max(1));
        pad + pad_len(self.iv + plain + pad, 4)
    }

    /// What ESP in tunnel mode adds to a `payload`-octet packet: the outer IPv4 header, RFC
    /// 3948's UDP header (`udp`), SPI and sequence number, IV, padding, pad length and next
    /// header, ICV.
    pub fn tunnel_overhead(&self, payload: u32, udp: bool) -> u32 {
        20 + if udp { 8 } else { 0 } + 8 + self.iv + self.padding(payload) + 2 + self.icv
    }

    /// The largest packet that still fits in one ESP packet on a path of `path_mtu`.
    pub fn largest_payload(&self, path_mtu: u32, udp: bool) -> u32 {
        // The fixed parts leave `room`; the padding takes at most block + 3 more.
        let room =
            path_mtu.saturating_sub(20 + if udp { 8 } else { 0 } + 8 + self.iv + 2 + self.icv);
        (room.saturating_sub(self.block + 3)..=room)
            .rev()
            .find(|&p| p + self.tunnel_overhead(p, udp) <= path_mtu)
            .unwrap_or(0)
    }
}

/// What an ESP packet may take of an access link of `access_mtu`: all of it in mode mc; in mode
/// cvc the ESP packets ride in the x-HA's tunnel (§2.3), IP-in-IP or, behind a NAT, RFC 3519's
/// IP-in-UDP, whose 32 octets (IPv4, UDP, the tunnel data header) are set aside whichever it
/// is now, so that the VPN's MTU does not change with every move between the two.
pub fn esp_path_mtu(mode: OutsideMode, access_mtu: u32) -> u32 {
    match mode {
        OutsideMode::Cvc => access_mtu.saturating_sub(20 + 8 + 4),
        OutsideMode::Mc => access_mtu,
    }
}

/// SPIs (wire order) as `ip xfrm state` writes them, without the 0x.
pub fn spi_names(spis: &[[u8; 4]]) -> Vec<String> {
    spis.iter()
        .map(|s| format!("{:08x}", u32::from_be_bytes(*s)))
        .collect()
}

/// The CHILD_SA's ESP suite as charon reports it (`encr-alg`, `integ-alg`, `encap`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EspSuite {
    pub encr: String,
    /// None with an AEAD cipher.
    pub integ: Option<String>,
    /// RFC 3948 UDP encapsulation (a NAT between the node and the gateway).
    pub udp: bool,
}

/// The MTU of the XFRM interface for a path of `path_mtu`: what fits in one ESP packet on the
/// path, so the kernel never fragments the ciphertext (RFC 4303 §3.3.5 leaves that to the
/// outer header) and the tunnel inside sizes its packets for it. Exact for a suite known here
/// (RFC 4303 §2); the worst case of charon's default suites otherwise, and before the first
/// CHILD_SA.
pub fn xfrm_interface_mtu(path_mtu: u32, esp: Option<&EspSuite>) -> u32 {
    let mtu = match esp.and_then(|e| Some((EspShape::of(&e.encr, e.integ.as_deref())?, e.udp))) {
        Some((shape, udp)) => shape.largest_payload(path_mtu, udp),
        None => path_mtu.saturating_sub(ESP_TUNNEL_OVERHEAD_MAX),
    };
    mtu.max(576)
}

/// The backend the VPN runs on, from the setting and what charon reports (`kernel-libipsec`
/// among its plugins or not). A setting charon does not match is refused with what to change:
/// the SAs would be where the node does not look for them.
pub fn ipsec_backend(setting: IpsecSetting, charon_libipsec: bool) -> Result<IpsecBackend, String> {
    let found = if charon_libipsec {
        IpsecBackend::Libipsec
    } else {
        IpsecBackend::Kernel
    };
    match (setting, found) {
        (IpsecSetting::Auto, found)
        | (IpsecSetting::Kernel, found @ IpsecBackend::Kernel)
        | (IpsecSetting::Libipsec, found @ IpsecBackend::Libipsec) => Ok(found),
        (IpsecSetting::Kernel, IpsecBackend::Libipsec) => Err(
            "ipsec = \"kernel\", but charon runs kernel-libipsec: load it without that plugin (kernel-netlink does the kernel's ESP)".into(),
        ),
        (IpsecSetting::Libipsec, IpsecBackend::Kernel) => Err(
            "ipsec = \"libipsec\", but charon runs the kernel's ESP: add kernel-libipsec to its plugins".into(),
        ),
    }
}

/// What the node wants of the VPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpnCommand {
    Up,
    Down,
}

/// The IKE_SA as charon last described it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VpnSnapshot {
    /// The IKE_SA is ESTABLISHED with at least one installed CHILD_SA.
    pub established: bool,
    /// Our IKE address (the care-of address in mode mc, the x-HoA in cvc).
    pub local: Option<Ipv4Addr>,
    /// The gateway's address.
    pub gateway: Option<Ipv4Addr>,
    /// The tunnel inner address.
    pub tia: Option<Ipv4Addr>,
    /// SPIs of the installed CHILD_SAs, both directions, wire order.
    pub spis: Vec<[u8; 4]>,
    /// The first installed CHILD_SA's ESP suite.
    pub esp: Option<EspSuite>,
}

/// Where an interface is attached, as far as the kernel says: a change of either is a
/// connection status change (RFC 5265 §3.2.2), e.g. a DHCP renewal onto another router with the
/// same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub care_of_addr: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
}

/// A foreign agent heard on an interface (RFC 5944 §2.4): the agent, the care-of address it
/// offers, and whether it requires registration through it (R).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub via: ViaAgent,
    pub care_of_addr: Ipv4Addr,
    pub required: bool,
}

/// The node's configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `internal` is the `[mn]` registration (i-HA), `external` the x-HA's (modes cvc, fvc).
    pub detect: DetectConfig,
    pub mode: OutsideMode,
    /// The VPN layer, if any: its gateway and what it does while inside.
    pub vpn: Option<(Ipv4Addr, InsideVpn)>,
    /// The home agents' registration port.
    pub ha_port: u16,
    /// The tracked interfaces, in order.
    pub interfaces: Vec<IfaceConfig>,
}

/// A tracked interface.
#[derive(Clone, Debug)]
pub struct IfaceConfig {
    /// Its name, for the logs.
    pub name: String,
    /// The local port of its registration socket: RFC 3519 §4.4, the x-HA's IP-in-UDP tunnel
    /// uses the registration's ports.
    pub registration_port: u16,
    /// Agent discovery runs on it (modes f and fvc): [`Node::update_attachments`] attaches it
    /// through the foreign agent it hears.
    pub agent_discovery: bool,
}

/// Which socket a datagram came in on or leaves through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The registration socket bound to tracked interface `usize`.
    Iface(usize),
    /// The socket bound to the TIA: through the VPN.
    Vpn,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTransmit {
    pub path: Path,
    /// To a foreign agent on the interface's link: sent to its link-layer address
    /// (RFC 5944 §3.6.1.1), not routed.
    pub via: Option<ViaAgent>,
    pub transmit: Transmit,
}

/// What the shell must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Write interface `iface`'s plaintext gate, before anything else happens (§3.2.4).
    Gate { iface: usize, gate: Gate },
    Location {
        iface: usize,
        location: Location,
        reason: Reason,
    },
    /// Bring the VPN up or down.
    Vpn(VpnCommand),
    /// Open a socket bound to this TIA for the registration through the VPN, or close it.
    TiaSocket(Option<Ipv4Addr>),
    /// An interface changed attachment (co-located or through a foreign agent): the tunnels
    /// must follow before the new registrations go out, so the old attachment's tunnel does
    /// not encapsulate them.
    Reattached,
}

/// Where a home address should be routed by mipd's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HomeRoute {
    /// Into the VPN device (the shell knows its MTU, RFC 2003 §5.1).
    Vpn,
    /// To a foreign agent on interface `iface`'s link (RFC 5944 §4.2.1, RFC 3024 §5.1).
    Agent { iface: usize, agent: Ipv4Addr },
}

/// What the node wants of the dataplane and the routing table now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    /// The i-HA tunnel (the home slot); `None`: nothing tunnelled.
    pub tunnel: Option<Tunnel>,
    /// Mode cvc: the x-HA's tunnel under the VPN (the outer slot).
    pub outer_tunnel: Option<Tunnel>,
    pub internal_route: Option<HomeRoute>,
    /// Only with an x-HA configured.
    pub external_route: Option<HomeRoute>,
}

struct Iface {
    name: String,
    detector: Detector,
    /// What the last look at the interface found: if usable (up, with carrier, routed), its
    /// care-of address and default gateway.
    seen: Option<Attachment>,
    offer: Option<Offer>,
    registration_port: u16,
    agent_discovery: bool,
}

/// RFC 5265 §2.3 / draft §3.3: the TIA registered with the i-HA as a co-located care-of
/// address, through the VPN.
struct TiaRegistration {
    tia: Ipv4Addr,
    mn: MobileNode,
    registered: bool,
}

struct Vpn {
    gateway: Ipv4Addr,
    inside: InsideVpn,
    want: VpnCommand,
    snapshot: VpnSnapshot,
    /// Charon runs IPsec in user space (kernel-libipsec), once it said.
    libipsec: Option<bool>,
    /// With the kernel's ESP: the SPIs of the kernel's ESP SAs on the VPN's XFRM interface,
    /// once read, in order.
    kernel_spis: Option<Vec<[u8; 4]>>,
    /// Charon's SPIs the kernel did not hold when last compared, as last logged.
    mismatch: Vec<[u8; 4]>,
    last_error: Option<String>,
    tia: Option<TiaRegistration>,
    /// A request went out through the VPN since the node was last inside.
    tia_sent: bool,
}

/// The RFC 5265 mobile node.
pub struct Node {
    mode: OutsideMode,
    internal: MnConfig,
    external: Option<MnConfig>,
    ha_port: u16,
    ifaces: Vec<Iface>,
    vpn: Option<Vpn>,
    transmits: VecDeque<NodeTransmit>,
    events: VecDeque<NodeEvent>,
}

impl Vpn {
    /// With the kernel's ESP, cross-checks charon's CHILD_SAs against the kernel's SA table:
    /// an SPI charon reports installed that the kernel does not hold under the VPN's if_id
    /// means that ESP does not reach the XFRM interface (charon runs another if_id, or installs
    /// the SAs elsewhere). For a moment during a rekey or a MOBIKE update that is normal (the
    /// two are read at different times); it is logged when it changes and shown in the status.
    fn compare_sas(&mut self) {
        let mismatch: Vec<[u8; 4]> = match (&self.kernel_spis, self.libipsec) {
            (Some(kernel), Some(false)) => self
                .snapshot
                .spis
                .iter()
                .filter(|s| !kernel.contains(s))
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        if mismatch != self.mismatch {
            if mismatch.is_empty() {
                info!("the kernel holds every SA charon reports");
            } else {
                info!(
                    spis = ?spi_names(&mismatch),
                    "charon reports SAs the kernel does not hold on the VPN's interface"
                );
            }
            self.mismatch = mismatch;
        }
    }
}

impl Node {
    pub fn new(config: NodeConfig) -> Self {
        let ifaces = config
            .interfaces
            .iter()
            .map(|i| Iface {
                name: i.name.clone(),
                detector: Detector::new(config.detect.clone()),
                seen: None,
                offer: None,
                registration_port: i.registration_port,
                agent_discovery: i.agent_discovery,
            })
            .collect();
        Node {
            mode: config.mode,
            internal: config.detect.internal.clone(),
            external: config.detect.external.clone(),
            ha_port: config.ha_port,
            ifaces,
            vpn: config.vpn.map(|(gateway, inside)| Vpn {
                gateway,
                inside,
                want: VpnCommand::Down,
                snapshot: VpnSnapshot::default(),
                libipsec: None,
                kernel_spis: None,
                mismatch: Vec::new(),
                last_error: None,
                tia: None,
                tia_sent: false,
            }),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn mode(&self) -> OutsideMode {
        self.mode
    }

    pub fn internal(&self) -> &MnConfig {
        &self.internal
    }

    pub fn external(&self) -> Option<&MnConfig> {
        self.external.as_ref()
    }

    pub fn detector(&self, iface: usize) -> &Detector {
        &self.ifaces[iface].detector
    }

    pub fn seen(&self, iface: usize) -> Option<Attachment> {
        self.ifaces[iface].seen
    }

    /// What interface `iface` looks like now (the kernel's view). A change of carrier, address
    /// or gateway is a connection status change (§3.2.2): detection starts again and the
    /// foreign agents heard on the old link say nothing any more (RFC 5944 §2.4). Returns
    /// whether it changed.
    pub fn set_attachment(&mut self, now: Now, iface: usize, seen: Option<Attachment>) -> bool {
        let i = &mut self.ifaces[iface];
        if seen == i.seen {
            return false;
        }
        info!(interface = %i.name, from = ?i.seen, to = ?seen, "connection status changed");
        i.seen = seen;
        i.offer = None;
        i.detector
            .connection_changed(now, seen.map(|a| a.care_of_addr));
        self.collect(now);
        true
    }

    /// The foreign agent agent discovery last heard on `iface` (`None`: lost).
    pub fn set_offer(&mut self, iface: usize, offer: Option<Offer>) {
        self.ifaces[iface].offer = offer;
    }

    /// Attaches each interface as agent discovery and the kernel say: RFC 5944 §2.4.1, a
    /// foreign agent that sets R is used even with a co-located address, and one is used where
    /// there is no co-located address; otherwise co-located (c, cvc). Each change of
    /// attachment starts detection again (§3.2.2).
    pub fn update_attachments(&mut self, now: Now) {
        let mut attached = false;
        for i in self.ifaces.iter_mut().filter(|i| i.agent_discovery) {
            let wanted = match i.offer {
                Some(o) if o.required || i.seen.is_none() => Some((o.care_of_addr, Some(o.via))),
                _ => i.seen.map(|a| (a.care_of_addr, None)),
            };
            let current = i
                .detector
                .status(now)
                .care_of_addr
                .map(|c| (c, i.detector.agent()));
            if wanted != current {
                info!(interface = %i.name, ?wanted, "attachment (co-located or through a foreign agent)");
                i.detector
                    .attach(now, wanted.map(|w| w.0), wanted.and_then(|w| w.1));
                attached = true;
            }
        }
        if attached {
            self.events.push_back(NodeEvent::Reattached);
        }
        self.collect(now);
    }

    /// A manual trigger (`mipctl register`): a connection status change on every interface.
    pub fn redetect(&mut self, now: Now) {
        for i in &mut self.ifaces {
            i.detector
                .connection_changed(now, i.seen.map(|a| a.care_of_addr));
        }
        self.collect(now);
    }

    pub fn handle_datagram(&mut self, now: Now, path: Path, from: SocketAddrV4, bytes: &[u8]) {
        match path {
            Path::Vpn => {
                if let Some(t) = self.vpn.as_mut().and_then(|v| v.tia.as_mut()) {
                    t.mn.handle_datagram(now, from, bytes);
                }
            }
            Path::Iface(i) => {
                if let Some(i) = self.ifaces.get_mut(i) {
                    i.detector.handle_datagram(now, from, bytes);
                }
            }
        }
        self.collect(now);
    }

    pub fn handle_timeout(&mut self, now: Now) {
        for i in &mut self.ifaces {
            i.detector.handle_timeout(now);
        }
        if let Some(t) = self.vpn.as_mut().and_then(|v| v.tia.as_mut()) {
            t.mn.handle_timeout(now);
        }
        self.collect(now);
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.ifaces
            .iter()
            .filter_map(|i| i.detector.poll_timeout())
            .chain(
                self.vpn
                    .as_ref()
                    .and_then(|v| v.tia.as_ref())
                    .and_then(|t| t.mn.poll_timeout()),
            )
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<NodeTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Connected to charon; whether it runs IPsec in user space.
    pub fn vpn_ready(&mut self, libipsec: bool) {
        if let Some(v) = &mut self.vpn {
            v.libipsec = Some(libipsec);
            v.compare_sas();
        }
    }

    /// The MTU the VPN's XFRM interface should have for access links of `path_mtu`: what fits
    /// in one ESP packet of the CHILD_SA's suite ([`xfrm_interface_mtu`]) on what the mode
    /// leaves of the link ([`esp_path_mtu`]).
    pub fn vpn_interface_mtu(&self, path_mtu: u32) -> u32 {
        let esp = self.vpn.as_ref().and_then(|v| v.snapshot.esp.as_ref());
        xfrm_interface_mtu(esp_path_mtu(self.mode, path_mtu), esp)
    }

    /// Charon runs the kernel's ESP (XFRM), as it said.
    pub fn vpn_on_xfrm(&self) -> bool {
        self.vpn.as_ref().is_some_and(|v| v.libipsec == Some(false))
    }

    /// Bringing the VPN up failed (charon's words; it retries).
    pub fn vpn_failed(&mut self, error: String) {
        if let Some(v) = &mut self.vpn {
            v.last_error = Some(error);
        }
    }

    /// The IKE_SA as charon describes it now.
    pub fn vpn_state(&mut self, now: Now, snapshot: VpnSnapshot) {
        let Some(v) = &mut self.vpn else { return };
        if snapshot != v.snapshot {
            info!(
                established = snapshot.established,
                local = ?snapshot.local,
                gateway = ?snapshot.gateway,
                tia = ?snapshot.tia,
                spis = snapshot.spis.len(),
                "VPN state"
            );
        }
        if snapshot.established {
            v.last_error = None;
        }
        v.snapshot = snapshot;
        v.compare_sas();
        if v.snapshot.established
            && let Some(local) = v.snapshot.local
        {
            // The gateway answered from this address: for mode mc the outside probe of
            // detection (draft §3.4).
            for i in &mut self.ifaces {
                i.detector.vpn_reachable(now, local);
            }
        }
        self.collect(now);
    }

    pub fn vpn_snapshot(&self) -> Option<&VpnSnapshot> {
        self.vpn.as_ref().map(|v| &v.snapshot)
    }

    /// With the kernel's ESP: the SPIs of the kernel's ESP SAs on the VPN's XFRM interface,
    /// read again after every change XFRM netlink announced.
    pub fn vpn_kernel_sas(&mut self, mut spis: Vec<[u8; 4]>) {
        let Some(v) = &mut self.vpn else { return };
        spis.sort_unstable();
        spis.dedup();
        if v.kernel_spis.as_ref() != Some(&spis) {
            debug!(sas = spis.len(), "the kernel's SAs on the VPN's interface");
        }
        v.kernel_spis = Some(spis);
        v.compare_sas();
    }

    /// The SPIs the gate passes ESP with (both directions, wire order): charon's CHILD_SAs and,
    /// with the kernel's ESP, every SA the kernel holds on the VPN's XFRM interface.
    ///
    /// The kernel is ahead of charon's events: during a rekey charon installs the new SAs
    /// (the inbound one first, RFC 7296 §2.8) and the kernel sends with the new outbound SA at
    /// once, while charon reports the CHILD_SA only once the exchange is done; a MOBIKE update
    /// (RFC 4555 §3.5) replaces each SA with one of the same SPI at the new addresses, and
    /// charon reports it meanwhile. The union never lacks an SPI either of them has, so the gate
    /// never drops the new SA's packets; and it only ever passes ESP, ciphertext, so an SPI one
    /// of them still lists after the other dropped it lets nothing plain through (the kernel
    /// drops ESP it holds no SA for). An SPI leaves the gate once neither has it.
    pub fn gate_spis(&self) -> Vec<[u8; 4]> {
        let Some(v) = &self.vpn else {
            return Vec::new();
        };
        let mut spis = v.snapshot.spis.clone();
        if v.libipsec == Some(false)
            && let Some(kernel) = &v.kernel_spis
        {
            spis.extend(kernel.iter().copied());
        }
        spis.sort_unstable();
        spis.dedup();
        spis
    }

    /// Brings the VPN and the registration through it in line with the detectors: queues
    /// [`NodeEvent::Vpn`] when the wanted state changes and [`NodeEvent::TiaSocket`] when the
    /// registration through the VPN starts or stops.
    pub fn step(&mut self, now: Now) {
        let want = self.vpn_wanted(now);
        let inside = self.inside(now);
        let sa_here = self.sa_here();
        let internal = self.internal.clone();
        let Some(v) = &mut self.vpn else { return };
        if let Some(want) = want
            && want != v.want
        {
            v.want = want;
            if want == VpnCommand::Down {
                v.last_error = None;
            }
            self.events.push_back(NodeEvent::Vpn(want));
        }
        // The i-HA registration from the TIA (draft §3.3: again whenever the TIA or the
        // gateway changes), while no interface is inside. Not while the VPN is being torn down
        // (its last snapshot still says up), and in mode mc not before MOBIKE has moved the SA
        // to an address the node has now: a request into an SA still bound to the last
        // network's address is lost, and retransmitted only a second later (RFC 5944 §3.6.3).
        let target = match (v.snapshot.established, v.snapshot.tia, inside) {
            (true, Some(tia), false) if v.want == VpnCommand::Up => Some(tia),
            _ => None,
        };
        // A registration already made through the VPN stands while MOBIKE moves the SA.
        let current = v.tia.as_ref().map(|t| t.tia);
        if current != target && (target.is_none() || sa_here) {
            v.tia = target.map(|tia| {
                let mut mn = MobileNode::new(internal);
                mn.register(now, tia);
                info!(%tia, "registering the tunnel inner address with the i-HA through the VPN");
                TiaRegistration {
                    tia,
                    mn,
                    registered: false,
                }
            });
            self.events.push_back(NodeEvent::TiaSocket(target));
        }
        self.collect(now);
    }

    /// The shell could not open the TIA's socket: the registration through the VPN starts
    /// again at the next [`Node::step`].
    pub fn tia_unavailable(&mut self, tia: Ipv4Addr) {
        if let Some(v) = &mut self.vpn
            && v.tia.as_ref().is_some_and(|t| t.tia == tia)
        {
            warn!(%tia, "cannot register through the VPN");
            v.tia = None;
        }
    }

    /// What the dataplane and the routes should be now.
    pub fn wants(&self, now: Now) -> Wants {
        let tunnel = self.wanted_tunnel(now);
        let internal_route = if tunnel.is_some_and(|t| t.via_vpn) {
            self.vpn.as_ref().map(|_| HomeRoute::Vpn)
        } else {
            self.inside_via_agent(now)
                .map(|(iface, agent)| HomeRoute::Agent { iface, agent })
        };
        Wants {
            tunnel,
            outer_tunnel: self.wanted_outer_tunnel(now),
            internal_route,
            external_route: self
                .outside_via_agent(now)
                .map(|(iface, agent)| HomeRoute::Agent { iface, agent }),
        }
    }

    /// The access mode in use through interface `iface`, for `mipctl status`: "c" or "f"
    /// inside, "mc", "cvc" or "fvc" outside once the i-HA binding runs through the VPN
    /// (`via_vpn`: the dataplane's tunnel says so), "-" otherwise.
    pub fn access_mode(&self, now: Now, iface: usize, via_vpn: bool) -> &'static str {
        let i = &self.ifaces[iface];
        let fa = i.detector.agent().is_some();
        match i.detector.status(now).location {
            Location::Inside if fa => "f",
            Location::Inside => "c",
            Location::Outside | Location::Detecting if via_vpn => match self.mode {
                OutsideMode::Mc => "mc",
                OutsideMode::Cvc if fa => "fvc",
                OutsideMode::Cvc => "cvc",
            },
            _ => "-",
        }
    }

    /// The VPN for `mipctl status`: "down", "connecting", "up" or "failed", and whether the
    /// TIA is registered with the i-HA.
    pub fn vpn_status(&self) -> Option<VpnView<'_>> {
        let v = self.vpn.as_ref()?;
        let state = if v.snapshot.established {
            "up"
        } else if v.want == VpnCommand::Up {
            if v.last_error.is_some() {
                "failed"
            } else {
                "connecting"
            }
        } else {
            "down"
        };
        Some(VpnView {
            state,
            gateway: v.gateway,
            snapshot: &v.snapshot,
            libipsec: v.libipsec,
            kernel_spis: v.kernel_spis.as_deref(),
            mismatch: &v.mismatch,
            internal_registered: v.tia.as_ref().is_some_and(|t| t.registered),
            last_error: v.last_error.as_deref(),
        })
    }

    pub fn status(&self, now: Now, iface: usize) -> DetectStatus {
        self.ifaces[iface].detector.status(now)
    }

    pub fn interfaces(&self) -> usize {
        self.ifaces.len()
    }

    /// The gateway the gate passes IKE and ESP with, and mode cvc's x-HA (its tunnel carries
    /// the VPN), for every gate value.
    pub fn gate_peers(&self) -> (Option<Ipv4Addr>, Option<Ipv4Addr>) {
        let gateway = self.vpn.as_ref().map(|v| v.gateway);
        let outer = match (&self.vpn, &self.external) {
            (Some(_), Some(x)) => Some(x.home_agent),
            _ => None,
        };
        (gateway, outer)
    }

    fn inside(&self, now: Now) -> bool {
        self.ifaces
            .iter()
            .any(|i| i.detector.status(now).location == Location::Inside)
    }

    /// Mode mc: the SA is bound to an address the node has now (MOBIKE has moved it).
    fn sa_here(&self) -> bool {
        self.mode != OutsideMode::Mc
            || self
                .vpn
                .as_ref()
                .and_then(|v| v.snapshot.local)
                .is_some_and(|l| {
                    self.ifaces
                        .iter()
                        .any(|i| i.seen.is_some_and(|a| a.care_of_addr == l))
                })
    }

    /// Moves what the engines queued into the node's queues, in order: the registration
    /// through the VPN first, so that a request it sends now is known when a detector's event
    /// says inside; and none at all once inside (the registration goes at the next step).
    fn collect(&mut self, now: Now) {
        let inside = self.inside(now);
        let ha_port = self.ha_port;
        if let Some(v) = self.vpn.as_mut().filter(|_| !inside)
            && let Some(t) = v.tia.as_mut()
        {
            while let Some(mut transmit) = t.mn.poll_transmit() {
                transmit.dst.set_port(ha_port);
                v.tia_sent = true;
                self.transmits.push_back(NodeTransmit {
                    path: Path::Vpn,
                    via: None,
                    transmit,
                });
            }
            while let Some(e) = t.mn.poll_event() {
                match e {
                    MnEvent::Registered { .. } => {
                        if !t.registered {
                            info!(tia = %t.tia, "registered with the i-HA through the VPN");
                        }
                        t.registered = true;
                    }
                    MnEvent::Deregistered { .. } => t.registered = false,
                    other => {
                        debug!(event = ?other, "registration through the VPN");
                        if matches!(other, MnEvent::Denied { .. } | MnEvent::Expired) {
                            t.registered = false;
                        }
                    }
                }
            }
        }
        for index in 0..self.ifaces.len() {
            self.queue_transmits(index);
            while let Some(e) = self.ifaces[index].detector.poll_event() {
                match e {
                    DetectEvent::Gate(gate) => self
                        .events
                        .push_back(NodeEvent::Gate { iface: index, gate }),
                    DetectEvent::Location { location, reason } => {
                        if location == Location::Inside
                            && let Some(v) = &mut self.vpn
                            && std::mem::take(&mut v.tia_sent)
                        {
                            // A registration through the VPN went out, answered or not: it may
                            // reach the i-HA after the direct one that proved us inside (the
                            // i-HA was slow, RFC 5265 §3.3's parallel registrations let the
                            // x-HA win). Register directly once more: its Identification is
                            // newer, so whichever order the i-HA sees them in, the binding
                            // ends as this interface's care-of address (mode c) — a late TIA
                            // request is refused as a replay (RFC 5944 §5.7.1).
                            self.ifaces[index].detector.reregister_internal(now);
                        }
                        self.events.push_back(NodeEvent::Location {
                            iface: index,
                            location,
                            reason,
                        });
                    }
                }
            }
            // A re-registration queued above leaves with this batch.
            self.queue_transmits(index);
        }
    }

    /// What interface `index`'s detector queued, to the home agents' port; through a foreign
    /// agent when it is the destination.
    fn queue_transmits(&mut self, index: usize) {
        let i = &mut self.ifaces[index];
        while let Some(mut transmit) = i.detector.poll_transmit() {
            transmit.dst.set_port(self.ha_port);
            let via = i.detector.agent().filter(|a| *transmit.dst.ip() == a.addr);
            self.transmits.push_back(NodeTransmit {
                path: Path::Iface(index),
                via,
                transmit,
            });
        }
    }

    /// What the VPN should be: up while an interface is outside or still detecting (the IKE
    /// or MOBIKE exchange goes out with the i-HA registration, draft §3.4.2 step 1), down once
    /// one is inside unless configured to keep it (§3.4.1 step 2: "MAY tear down"). With no
    /// usable interface at all (a link flapping during a move) nothing changes: the SA survives
    /// for MOBIKE to move it when an address comes back.
    fn vpn_wanted(&self, now: Now) -> Option<VpnCommand> {
        let v = self.vpn.as_ref()?;
        let locations: Vec<Location> = self
            .ifaces
            .iter()
            .map(|i| i.detector.status(now).location)
            .collect();
        let inside = locations.contains(&Location::Inside);
        let away = locations
            .iter()
            .any(|l| matches!(l, Location::Detecting | Location::Outside));
        match (inside, v.inside) {
            (true, InsideVpn::Teardown) => Some(VpnCommand::Down),
            (true, InsideVpn::Keep) => Some(VpnCommand::Up),
            // Mode cvc: IKE goes through the x-HA's tunnel, so only once it exists (§2.3);
            // fvc: once the x-HA has bound the foreign agent's care-of address (§2.4).
            (false, _) if self.external.is_some() => (self.wanted_outer_tunnel(now).is_some()
                || self.outside_via_agent(now).is_some())
            .then_some(VpnCommand::Up),
            (false, _) if away => Some(VpnCommand::Up),
            _ => None,
        }
    }

    /// The i-HA tunnel: mode c through the first interface inside (RFC 5265 §2.1), else the
    /// i-HA tunnel inside the VPN once registered (§2.3), else none.
    fn wanted_tunnel(&self, now: Now) -> Option<Tunnel> {
        let home = self.internal.home_addr;
        let tunnel = |care_of_addr, reverse, via_vpn| Tunnel {
            home_addr: home,
            home_agent: self.internal.home_agent,
            care_of_addr,
            reverse,
            udp: None,
            via_vpn,
        };
        for i in &self.ifaces {
            if i.detector.status(now).location == Location::Inside {
                if i.detector.agent().is_some() {
                    // Mode f: the foreign agent decapsulates and reverse-tunnels (RFC 5944
                    // §4.2.2, RFC 3024); the home address is routed to it.
                    return None;
                }
                return match i.seen.map(|a| a.care_of_addr) {
                    // At home on the i-HA's link nothing is tunnelled.
                    Some(coa) if coa != home => {
                        Some(tunnel(coa, self.internal.reverse_tunnel, false))
                    }
                    _ => None,
                };
            }
        }
        match self.vpn.as_ref().and_then(|v| v.tia.as_ref()) {
            // RFC 5265 §2.3: the T bit SHOULD be set; the VPN gateway passes only what comes
            // from the TIA (§4.2).
            Some(t) if t.registered => Some(tunnel(t.tia, true, true)),
            _ => None,
        }
    }

    /// Mode f: the interface inside through a foreign agent, and the agent.
    fn inside_via_agent(&self, now: Now) -> Option<(usize, Ipv4Addr)> {
        self.ifaces.iter().enumerate().find_map(|(index, i)| {
            let agent = i.detector.agent()?;
            (i.detector.status(now).location == Location::Inside).then_some((index, agent.addr))
        })
    }

    /// Mode fvc: the interface outside whose foreign agent's care-of address the x-HA has
    /// bound, and the agent.
    fn outside_via_agent(&self, now: Now) -> Option<(usize, Ipv4Addr)> {
        self.external.as_ref()?;
        self.ifaces.iter().enumerate().find_map(|(index, i)| {
            let agent = i.detector.agent()?;
            let (coa, _) = i.detector.external()?.registration(now)?;
            let s = i.detector.status(now);
            (s.location == Location::Outside && s.care_of_addr == Some(coa))
                .then_some((index, agent.addr))
        })
    }

    /// Mode cvc: the x-HA's tunnel through the first interface outside whose care-of address
    /// the x-HA has bound (RFC 5265 §2.3: the x-MIP layer under the VPN), IP-in-IP or, through
    /// a NAT, IP-in-UDP on the registration's ports (RFC 3519 §4.4).
    fn wanted_outer_tunnel(&self, now: Now) -> Option<Tunnel> {
        let x = self.external.as_ref()?;
        self.ifaces.iter().find_map(|i| {
            let engine = i.detector.external()?;
            // Mode fvc: the foreign agent is the x-HA tunnel's end (RFC 5265 §2.4).
            if i.detector.agent().is_some() {
                return None;
            }
            let (coa, _) = engine.registration(now)?;
            let seen = i.seen?;
            if coa != seen.care_of_addr || i.detector.status(now).location != Location::Outside {
                return None;
            }
            Some(Tunnel {
                home_addr: x.home_addr,
                home_agent: x.home_agent,
                care_of_addr: coa,
                reverse: x.reverse_tunnel,
                udp: engine
                    .udp_tunnel()
                    .map(|_| (i.registration_port, self.ha_port)),
                via_vpn: false,
            })
        })
    }
}

/// The VPN layer as `mipctl status` shows it.
#[derive(Debug)]
pub struct VpnView<'a> {
    pub state: &'static str,
    pub gateway: Ipv4Addr,
    pub snapshot: &'a VpnSnapshot,
    pub libipsec: Option<bool>,
    /// With the kernel's ESP: the SPIs of its SAs on the VPN's interface, once read.
    pub kernel_spis: Option<&'a [[u8; 4]]>,
    /// Charon's SPIs the kernel did not hold when last compared.
    pub mismatch: &'a [[u8; 4]],
    pub internal_registered: bool,
    pub last_error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_follows_charon_unless_the_setting_contradicts_it() {
        use IpsecBackend::{Kernel, Libipsec};
        assert_eq!(ipsec_backend(IpsecSetting::Auto, true), Ok(Libipsec));
        assert_eq!(ipsec_backend(IpsecSetting::Auto, false), Ok(Kernel));
        assert_eq!(ipsec_backend(IpsecSetting::Kernel, false), Ok(Kernel));
        assert_eq!(ipsec_backend(IpsecSetting::Libipsec, true), Ok(Libipsec));
        let e = ipsec_backend(IpsecSetting::Kernel, true).unwrap_err();
        assert!(e.contains("kernel-libipsec"), "{e}");
        let e = ipsec_backend(IpsecSetting::Libipsec, false).unwrap_err();
        assert!(e.contains("add kernel-libipsec"), "{e}");
    }

    fn suite(encr: &str, integ: Option<&str>, udp: bool) -> EspSuite {
        EspSuite {
            encr: encr.into(),
            integ: integ.map(Into::into),
            udp,
        }
    }

    #[test]
    fn the_xfrm_interface_mtu_is_what_fits_in_one_esp_packet() {
        // AES-GCM-16 (RFC 4106): 20 + 8 + 8 (IV) + 1446 + 2 + 16 = 1500, padding none.
        let gcm = suite("AES_GCM_16", None, false);
        assert_eq!(xfrm_interface_mtu(1500, Some(&gcm)), 1446);
        // Behind a NAT, RFC 3948's 8 octets more.
        let gcm_nat = suite("AES_GCM_16", None, true);
        assert_eq!(xfrm_interface_mtu(1500, Some(&gcm_nat)), 1438);
        // AES-CBC (RFC 3602, 16-octet IV and block), HMAC-SHA2-256-128 (RFC 4868):
        // 20 + 8 + 16 + (1438 + 2, a multiple of 16) + 16 = 1500.
        let cbc = suite("AES_CBC", Some("HMAC_SHA2_256_128"), false);
        assert_eq!(xfrm_interface_mtu(1500, Some(&cbc)), 1438);
        // RFC 5265 §5.2's reference: a 64-bit block cipher with HMAC-96.
        let des = suite("3DES_CBC", Some("HMAC_SHA1_96"), false);
        assert_eq!(xfrm_interface_mtu(1500, Some(&des)), 1446);
        // Unknown, or not known yet: the worst case of charon's default suites.
        let odd = suite("SERPENT_CBC", Some("HMAC_SHA2_256_128"), false);
        assert_eq!(
            xfrm_interface_mtu(1500, Some(&odd)),
            1500 - ESP_TUNNEL_OVERHEAD_MAX
        );
        assert_eq!(xfrm_interface_mtu(1500, None), 1415);
        assert_eq!(xfrm_interface_mtu(300, Some(&gcm)), 576);
    }

    #[test]
    fn the_largest_payload_fits_and_one_more_octet_does_not() {
        let shapes = [
            ("AES_GCM_16-128", None),
            ("AES_GCM_8", None),
            ("CHACHA20_POLY1305", None),
            ("AES_CBC-256", Some("HMAC_SHA2_512_256")),
            ("AES_CTR", Some("AES_XCBC_96")),
            ("3DES_CBC", Some("HMAC_MD5_96")),
            ("NULL", Some("HMAC_SHA2_384_192")),
        ];
        for (encr, integ) in shapes {
            let shape = EspShape::of(encr, integ).unwrap_or_else(|| panic!("{encr}"));
            for udp in [false, true] {
                for path in 576..1600 {
                    let p = shape.largest_payload(path, udp);
                    let total = |p: u32| p + shape.tunnel_overhead(p, udp);
                    assert!(total(p) <= path, "{encr} {path}: {p} does not fit");
                    assert!(total(p + 1) > path, "{encr} {path}: {} fits too", p + 1);
                    // The ICV starts 4-octet aligned (RFC 4303 §2.4).
                    assert_eq!((shape.iv + p + 2 + shape.padding(p)) % 4, 0);
                }
            }
        }
        assert_eq!(
            EspShape::of("AES_CBC", None),
            None,
            "CBC needs an integrity algorithm"
        );
    }
}
