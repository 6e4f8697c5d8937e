//! The namespaces, interfaces, routes, neighbours and BPF map contents that the dataplane's
//! fixture frames (`common/fixtures/dataplane/`, written by `common/fixtures/gen_dataplane.py`)
//! were generated for: shared by the fixture table (tests/tests/bpf_fixtures.rs) and the
//! foreign agent's per-program benchmark (`mipx-bench-fa`), so both run the programs in the same
//! world.
//!
//! The programs call `bpf_fib_lookup`, which answers from the routes and neighbours of the
//! namespace of the device the frame "arrived" on. [`Topology`] builds one namespace each for
//! the home agent, the mobile node and the foreign agent, with routes, permanent neighbour
//! entries and MAC addresses matching the generator's; [`apply`] puts the maps in the state a
//! [`Setup`] names. The caller enters the program's [`namespace`] and passes the ingress
//! interface to the test run.

use std::{
    collections::BTreeMap,
    fs::File,
    net::Ipv4Addr,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::maps::{HashMap, PerCpuArray, PerCpuValues};
use mipx_common::{
    counters::Counter,
    maps::{
        FaDataplaneConfig, FaVisitor, HaBinding, HaDataplaneConfig, IFACE_HOME_LINK, IFACES_MAP,
        IP_ID_MAP, IfaceInfo, MN_ACTIVE, MN_REVERSE_TUNNEL, MN_UDP_TUNNEL, MnGate, MnTunnel,
        TUNNEL_REVERSE, TUNNEL_UDP, VISITOR_REVERSE_TUNNEL, VISITOR_UDP_TUNNEL,
    },
};
use mipx_control::dataplane::{
    self, Dataplane,
    programs::{FA_XDP, MN_TC_EGRESS, MN_TC_VPN_EGRESS, MN_TC_VPN_INGRESS, MN_XDP},
};

use crate::{Netns, veth_pair};

// ---- topology: a copy of the constants at the top of common/fixtures/gen_dataplane.py --------

/// The home agent's interfaces: the home link and the way to everything else.
pub const HA_HOME: &str = "ha-home";
pub const HA_UP: &str = "ha-up";
pub const HA_HOME_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x01];
pub const HA_UP_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x01];
/// A host on the home link, and the upstream router (both with permanent neighbour entries).
pub const HOST_MAC: &str = "02:00:00:00:01:32";
pub const GW_MAC: &str = "02:00:00:00:02:fe";
pub const HA: [u8; 4] = [10, 1, 0, 1];
pub const OTHER_HA: [u8; 4] = [10, 1, 0, 2];
pub const COA: [u8; 4] = [198, 51, 100, 7];
/// The home agent's UDP port (registrations, and its end of RFC 3519 UDP tunnels).
pub const HA_PORT: u16 = 434;
/// The NAT in front of the UDP-tunnelling mobile nodes: 198.51.100.0/24 is via the router.
pub const NAT: [u8; 4] = [198, 51, 100, 200];
/// A binding in the home agent's map.
pub struct Bound {
    pub home_addr: [u8; 4],
    pub care_of_addr: [u8; 4],
    pub home_agent: [u8; 4],
    pub tunnel_flags: u32,
    /// Where the registration came from: for `TUNNEL_UDP`, the tunnel's far end.
    pub source_addr: [u8; 4],
    pub source_port: u16,
}

/// An IP-in-IP binding, registered directly from its care-of address.
pub const fn bound(
    home_addr: [u8; 4],
    care_of_addr: [u8; 4],
    home_agent: [u8; 4],
    tunnel_flags: u32,
) -> Bound {
    Bound {
        home_addr,
        care_of_addr,
        home_agent,
        tunnel_flags,
        source_addr: care_of_addr,
        source_port: HA_PORT,
    }
}

/// A UDP-tunnelling binding (RFC 3519): `TUNNEL_UDP` plus `flags`; the registration came from
/// the NAT's `source_addr:source_port`, the private care-of address is behind it.
pub const fn udp_bound(
    home_addr: [u8; 4],
    care_of_addr: [u8; 4],
    home_agent: [u8; 4],
    flags: u32,
    source_addr: [u8; 4],
    source_port: u16,
) -> Bound {
    Bound {
        home_addr,
        care_of_addr,
        home_agent,
        tunnel_flags: TUNNEL_UDP | flags,
        source_addr,
        source_port,
    }
}

/// Home addresses with a binding, by what the route to the care-of address (or NAT) is like.
/// One binding per line (hence no rustfmt).
#[rustfmt::skip]
pub const BINDINGS: [Bound; 12] = [
    // Via the router (permanent neighbour), reverse tunnelling granted, and not granted.
    bound([10, 1, 0, 5], COA, HA, TUNNEL_REVERSE),
    bound([10, 1, 0, 6], COA, HA, 0),
    // 203.0.113.0/24: via the router, `mtu lock 1400`.
    bound([10, 1, 0, 7], [203, 0, 113, 7], HA, TUNNEL_REVERSE),
    // 198.18.0.0/24: via 192.0.2.253, which has no neighbour entry.
    bound([10, 1, 0, 8], [198, 18, 0, 7], HA, TUNNEL_REVERSE),
    // No route at all (no default route).
    bound([10, 1, 0, 9], [100, 64, 0, 7], HA, TUNNEL_REVERSE),
    // `unreachable 100.65.0.0/16`.
    bound([10, 1, 0, 10], [100, 65, 0, 7], HA, TUNNEL_REVERSE),
    // Registered with the HA's other address.
    bound([10, 1, 0, 11], COA, OTHER_HA, TUNNEL_REVERSE),
    // UDP tunnelling through the NAT 198.51.100.200 (via the router), with reverse tunnelling
    // and without.
    udp_bound([10, 1, 0, 12], [192, 168, 1, 12], HA, TUNNEL_REVERSE, NAT, 61000),
    udp_bound([10, 1, 0, 13], [192, 168, 1, 13], HA, 0, NAT, 61001),
    // UDP tunnelling through a NAT in 203.0.113.0/24 (`mtu lock 1400`).
    udp_bound([10, 1, 0, 14], [192, 168, 1, 14], HA, TUNNEL_REVERSE, [203, 0, 113, 200], 61002),
    // UDP tunnelling through a NAT in 198.18.0.0/24 (next hop unresolved).
    udp_bound([10, 1, 0, 15], [192, 168, 1, 15], HA, TUNNEL_REVERSE, [198, 18, 0, 200], 61003),
    // UDP tunnelling, registered with the HA's other address.
    udp_bound([10, 1, 0, 16], [192, 168, 1, 16], OTHER_HA, TUNNEL_REVERSE, NAT, 61004),
];

/// The mobile node's interfaces: `mn0` holds the co-located care-of address; the home agent
/// `ALT_HA` is reached through `mn1`.
pub const MN0: &str = "mn0";
pub const MN1: &str = "mn1";
pub const MN0_MAC: &str = "02:00:00:00:03:01";
pub const MN_GW_MAC: &str = "02:00:00:00:03:fe";
pub const CN_MAC: &str = "02:00:00:00:03:09";
pub const MN1_MAC: &str = "02:00:00:00:04:01";
pub const MN1_GW_MAC: &str = "02:00:00:00:04:fe";
pub const HOME: [u8; 4] = [10, 1, 0, 5];
pub const ALT_HA: [u8; 4] = [10, 2, 0, 1];
/// The VPN gateway and one SPI of its CHILD_SA (`VPN_GW`, `VPN_SPI` in the generator).
pub const VPN_GW: [u8; 4] = [203, 0, 113, 50];
pub const VPN_SPI: [u8; 4] = [0xc0, 0xff, 0xee, 0x01];
/// The mobile node's registration port in UDP tunnelling mode (the HA's is [`HA_PORT`]).
pub const MN_PORT: u16 = 40000;
/// Mode cvc (RFC 5265 §2.3): the external home agent, in the DMZ beside the VPN gateway (mn0's
/// router has a host route to it), and the external home address the VPN runs from (`X_HA`,
/// `X_HOA` in the generator).
pub const X_HA: [u8; 4] = [203, 0, 113, 80];
pub const X_HOA: [u8; 4] = [203, 0, 113, 85];
/// The VPN's own device on the mobile node (RFC 5265 §2.3): a TUN device like strongSwan's
/// kernel-libipsec `ipsec0`, with MTU `VPN_MTU` and the tunnel inner address `TIA`, the care-of
/// address of a registration through the VPN. An L3 device: its packets start at the IPv4
/// header, and so do its fixtures (`mn_vpn_*`).
///
/// `BPF_PROG_TEST_RUN` (`bpf_prog_test_run_skb`) takes the first 14 bytes of any input for an
/// Ethernet header (`eth_type_trans`) and then pushes back `ETH_HLEN` bytes whatever the device
/// (not its `hard_header_len`): given a bare IPv4 packet, the program sees it from the IPv4
/// header with `len` the packet's, as on this device, and the run returns the packet. But the
/// skb is not one an L3 device makes: `protocol` comes from bytes 12-13 (the source address)
/// and the MAC header is 14 bytes long, so `bpf_skb_adjust_room` refuses (or, given an
/// Ethernet header, would open the room 14 bytes in). What rewrites on this device therefore
/// runs through the programs attached to the real device (`run_attached` in
/// tests/tests/bpf_fixtures.rs).
///
/// The kernel's XFRM interface is the other VPN device, and there a decrypted packet reaches
/// the ingress program with the access link's Ethernet header rebuilt in front of it
/// (`xfrm4_remove_tunnel_encap`): exactly the skb `BPF_PROG_TEST_RUN` makes of an Ethernet
/// frame. So `mn_tc_vpn_ingress`'s fixtures run unattached with 14 bytes of Ethernet put in
/// front (the XFRM interface's view) and attached (the TUN's).
pub const VPN0: &str = "vpn0";
pub const VPN_MTU: u16 = 1400;
pub const TIA: [u8; 4] = [10, 40, 0, 7];

/// The foreign agent's interfaces (`FA_*` in the generator): `fa-up` toward the home agents,
/// holding the care-of addresses, and `fa-link`, the foreign link the visitors are on.
pub const FA_UP: &str = "fa-up";
pub const FA_LINK: &str = "fa-link";
pub const FA_UP_MAC: [u8; 6] = [2, 0, 0, 0, 5, 0x01];
pub const FA_LINK_MAC: [u8; 6] = [2, 0, 0, 0, 6, 0x01];
pub const FA_GW_MAC: &str = "02:00:00:00:05:fe";
pub const FA_COA: [u8; 4] = [203, 0, 113, 10];
pub const FA_COA2: [u8; 4] = [203, 0, 113, 11];
/// Home agents behind a route with `mtu lock 1400`, an unresolved router, an `unreachable`
/// route.
pub const FA_HA_MTU: [u8; 4] = [10, 4, 0, 1];
pub const FA_HA_UNRESOLVED: [u8; 4] = [10, 5, 0, 1];
pub const FA_HA_UNREACHABLE: [u8; 4] = [10, 6, 0, 1];
/// An ifindex no interface of the FA namespace has, so no `MIPX_IFACES` entry either.
pub const NO_IFINDEX: u32 = 4242;

/// One entry of the foreign agent's visitor list.
pub struct Visiting {
    pub home_addr: [u8; 4],
    /// Interface name, or `None`: [`NO_IFINDEX`].
    pub link: Option<&'static str>,
    pub mac: [u8; 6],
    pub home_agent: [u8; 4],
    pub care_of_addr: [u8; 4],
    pub flags: u32,
}

/// The visitor list: one visitor per line (hence no rustfmt). MACs are `FA_V_*_MAC` in the
/// generator.
#[rustfmt::skip]
pub const VISITORS: [Visiting; 12] = [
    Visiting { home_addr: HOME, link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x05], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 6], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x06], home_agent: HA, care_of_addr: FA_COA, flags: 0 },
    Visiting { home_addr: [10, 1, 0, 7], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x07], home_agent: FA_HA_MTU, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 8], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x08], home_agent: FA_HA_UNRESOLVED, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 9], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x09], home_agent: FA_HA_UNREACHABLE, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
    // RFC 3519 UDP tunnelling (the FA behind a NAT, §4.5): with reverse tunnelling, without,
    // toward the home agent behind `mtu lock 1400`, and on fa-up.
    Visiting { home_addr: [10, 1, 0, 12], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x0c], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL | VISITOR_UDP_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 13], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x0d], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_UDP_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 14], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x0e], home_agent: FA_HA_MTU, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL | VISITOR_UDP_TUNNEL },
    Visiting { home_addr: [10, 1, 0, 23], link: Some(FA_UP), mac: [2, 0, 0, 0, 5, 0x17], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL | VISITOR_UDP_TUNNEL },
    // On fa-up: a one-armed foreign agent.
    Visiting { home_addr: [10, 1, 0, 20], link: Some(FA_UP), mac: [2, 0, 0, 0, 5, 0x14], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
    // Registered the second care-of address.
    Visiting { home_addr: [10, 1, 0, 21], link: Some(FA_LINK), mac: [2, 0, 0, 0, 6, 0x15], home_agent: HA, care_of_addr: FA_COA2, flags: VISITOR_REVERSE_TUNNEL },
    // On an interface mipd never recorded in MIPX_IFACES.
    Visiting { home_addr: [10, 1, 0, 22], link: None, mac: [2, 0, 0, 0, 6, 0x16], home_agent: HA, care_of_addr: FA_COA, flags: VISITOR_REVERSE_TUNNEL },
];

/// Identification the generator put in every header the programs originate.
pub const IP_ID: u16 = 0x4d49;

/// The three namespaces the table runs in (plus one holding the far ends of their veths).
pub struct Topology {
    /// The queue of the TUN device [`VPN0`], whose device lives as long as it stays open:
    /// what the device transmits is read here, what it is to receive is written here.
    pub vpn_tun: File,
    pub ha: Netns,
    pub mn: Netns,
    pub fa: Netns,
    _peers: Netns,
    /// Interface name → ifindex, in the namespace that holds it.
    pub ifindex: BTreeMap<&'static str, u32>,
}

pub fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Runs `ip -n NS <words of cmd>`.
pub fn ip(ns: &Netns, cmd: &str) -> Result<()> {
    ns.ip(&cmd.split_whitespace().collect::<Vec<_>>()).map(drop)
}

impl Topology {
    pub fn new() -> Result<Self> {
        let ha = Netns::new("fx-ha")?;
        let mn = Netns::new("fx-mn")?;
        let fa = Netns::new("fx-fa")?;
        let peers = Netns::new("fx-peers")?;
        for (ns, ifname, peer, mac) in [
            (&ha, HA_HOME, "p-home", mac_str(HA_HOME_MAC)),
            (&ha, HA_UP, "p-up", mac_str(HA_UP_MAC)),
            (&mn, MN0, "p-mn0", MN0_MAC.to_owned()),
            (&mn, MN1, "p-mn1", MN1_MAC.to_owned()),
            (&fa, FA_UP, "p-fa-up", mac_str(FA_UP_MAC)),
            (&fa, FA_LINK, "p-fa-link", mac_str(FA_LINK_MAC)),
        ] {
            veth_pair((ns, ifname), (&peers, peer))?;
            ip(ns, &format!("link set dev {ifname} address {mac}"))?;
        }
        // `bpf_fib_lookup` answers "forwarding disabled" unless the input interface forwards,
        // as the home agent's must anyway. The same holds for mn_tc_egress's lookup toward the
        // home agent: without forwarding on the mobile node, the reverse tunnel keeps the
        // Ethernet header the stack chose for the inner destination.
        // The foreign agent is a router too (RFC 5944 §4.2.2), and fa_xdp's lookup toward the
        // home agents needs the same.
        for ns in [&ha, &mn, &fa] {
            ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        for cmd in [
            format!("addr add 10.1.0.1/24 dev {HA_HOME}"),
            format!("addr add 192.0.2.1/24 dev {HA_UP}"),
            format!("neigh add 10.1.0.50 lladdr {HOST_MAC} dev {HA_HOME} nud permanent"),
            format!("neigh add 192.0.2.254 lladdr {GW_MAC} dev {HA_UP} nud permanent"),
            "route add 198.51.100.0/24 via 192.0.2.254".into(),
            // A route's MTU counts for forwarding only when locked (or with
            // ip_forward_use_pmtu): `ip_mtu_from_fib_result`.
            "route add 203.0.113.0/24 via 192.0.2.254 mtu lock 1400".into(),
            // 192.0.2.253 never gets a neighbour entry: unresolved.
            "route add 198.18.0.0/24 via 192.0.2.253".into(),
            "route add unreachable 100.65.0.0/16".into(),
        ] {
            ip(&ha, &cmd)?;
        }
        // A TUN device belongs to the namespace of whoever opens /dev/net/tun for it.
        let vpn_tun = {
            let _inside = mn.enter()?;
            open_tun(VPN0)?
        };
        for setting in [
            // Nothing but what a fixture sends may cross the VPN device: no IPv6 chatter.
            format!("net.ipv6.conf.{VPN0}.disable_ipv6=1"),
            // What the VPN device delivers comes from anywhere (the inner source of a
            // decapsulated datagram is routed via mn0): no reverse-path filter.
            "net.ipv4.conf.all.rp_filter=0".into(),
            format!("net.ipv4.conf.{VPN0}.rp_filter=0"),
        ] {
            mn.exec(&["sysctl", "-qw", &setting])?;
        }
        let tia = Ipv4Addr::from(TIA);
        for cmd in [
            format!("link set dev {VPN0} mtu {VPN_MTU} up"),
            format!("addr add {tia}/32 dev {VPN0}"),
            format!("addr add 198.51.100.7/24 dev {MN0}"),
            format!("addr add 10.9.0.2/24 dev {MN1}"),
            "addr add 10.1.0.5/32 dev lo".into(),
            format!("neigh add 198.51.100.254 lladdr {MN_GW_MAC} dev {MN0} nud permanent"),
            format!("neigh add 198.51.100.9 lladdr {CN_MAC} dev {MN0} nud permanent"),
            format!("neigh add 10.9.0.254 lladdr {MN1_GW_MAC} dev {MN1} nud permanent"),
            "route add 10.1.0.1/32 via 198.51.100.254".into(),
            "route add 10.2.0.1/32 via 10.9.0.254".into(),
            // The x-HA (mode cvc), via the same router.
            "route add 203.0.113.80/32 via 198.51.100.254".into(),
        ] {
            ip(&mn, &cmd)?;
        }
        for cmd in [
            // The care-of addresses are fa-up's; 203.0.113.253 never gets a neighbour entry.
            format!("addr add 203.0.113.10/24 dev {FA_UP}"),
            format!("addr add 203.0.113.11/24 dev {FA_UP}"),
            format!("addr add 172.16.0.1/24 dev {FA_LINK}"),
            format!("neigh add 203.0.113.254 lladdr {FA_GW_MAC} dev {FA_UP} nud permanent"),
            "route add 10.1.0.0/24 via 203.0.113.254".into(),
            "route add 10.4.0.0/24 via 203.0.113.254 mtu lock 1400".into(),
            "route add 10.5.0.0/24 via 203.0.113.253".into(),
            "route add unreachable 10.6.0.0/24".into(),
        ] {
            ip(&fa, &cmd)?;
        }
        let mut ifindex = BTreeMap::new();
        for (ns, names) in [
            (&ha, &[HA_HOME, HA_UP][..]),
            (&mn, &[MN0, MN1, VPN0]),
            (&fa, &[FA_UP, FA_LINK]),
        ] {
            let _inside = ns.enter()?;
            for &name in names {
                ifindex.insert(name, dataplane::ifindex(name)?);
            }
        }
        Ok(Self {
            vpn_tun,
            ha,
            mn,
            fa,
            _peers: peers,
            ifindex,
        })
    }
}

/// What the maps hold before a run; everything else is cleared.
#[derive(Clone, Copy, Debug)]
pub enum Setup {
    /// Nothing: HA config zero (disabled), no bindings or interfaces, MN inactive.
    Empty,
    /// The home agent's bindings and interfaces, but its config still zero (not enabled).
    HaDisabled,
    /// The home agent configured: enabled with address `HA` and UDP port `HA_PORT`, every
    /// binding in [`BINDINGS`], `ha-home` as home link and `ha-up`, with their MACs.
    Ha,
    /// The mobile node's tunnel (home `HOME`, home agent `HA`, care-of `COA`) with these
    /// `MN_*` flags.
    Mn(u32),
    /// The same in RFC 3519 UDP tunnelling mode: `MN_UDP_TUNNEL` plus these `MN_*` flags,
    /// ports `MN_PORT` (ours) and `HA_PORT`.
    MnUdp(u32),
    /// An active mobile node with reverse tunnelling whose home agent is `ALT_HA`.
    MnAltHa,
    /// The mobile node's tunnel inside the VPN (RFC 5265 §2.3): home `HOME`, home agent `HA`,
    /// care-of the VPN's tunnel inner address `TIA`, with these `MN_*` flags (a registration
    /// through the VPN has `MN_VIA_VPN`).
    MnVpn(u32),
    /// [`Setup::Mn`] (or [`Setup::MnUdp`] with `udp`) with reverse tunnelling, and mn0's RFC
    /// 5265 gate in `state` (`GATE_*`), open until `u64::MAX` or, `expired`, until 1 ns after
    /// boot (long past).
    Gated {
        state: u32,
        expired: bool,
        udp: bool,
        /// The gate knows the VPN gateway `VPN_GW`, and `VPN_SPI` is one of its SPIs.
        vpn: bool,
    },
    /// Mode cvc (RFC 5265 §2.3): the VPN rides in the x-HA's tunnel. Slot `MN_SLOT_HOME`
    /// holds [`Setup::MnVpn`]'s tunnel with `home` flags (the internal home address's, through
    /// the VPN; 0: inactive); slot `MN_SLOT_OUTER` the external home address's: home `X_HOA`,
    /// home agent `X_HA`, care-of `COA`, with `outer` flags (and ports `MN_PORT`, `HA_PORT`
    /// when they include `MN_UDP_TUNNEL`). mn0's gate is in `state`, open until `u64::MAX`,
    /// knows the VPN gateway `VPN_GW` with `VPN_SPI`, and knows the x-HA
    /// (`outer_home_agent`) when `x_ha`.
    Cvc {
        home: u32,
        outer: u32,
        state: u32,
        x_ha: bool,
    },
    /// The foreign agent configured: enabled with registration port `HA_PORT`, the care-of
    /// addresses `FA_COA` and `FA_COA2` (advertised on fa-up), every visitor in [`VISITORS`],
    /// `fa-up` and `fa-link` in `MIPX_IFACES` with their MACs.
    Fa,
    /// The same, but its config still zero (not enabled).
    FaDisabled,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../common/fixtures/dataplane")
}

pub fn read_frame(stem: &str, kind: &str) -> Result<Option<Vec<u8>>> {
    let path = fixture_dir().join(format!("{stem}.{kind}.bin"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn counters(dataplane: &Dataplane) -> BTreeMap<Counter, u64> {
    dataplane
        .counters()
        .expect("reading counters")
        .into_iter()
        .collect()
}

pub fn map_mut<'a>(dataplane: &'a mut Dataplane, name: &str) -> Result<&'a mut aya::maps::Map> {
    dataplane
        .ebpf_mut()
        .map_mut(name)
        .ok_or_else(|| anyhow!("no map {name}"))
}

/// Puts the maps in the state `setup` describes, whatever they held before.
pub fn apply(dataplane: &mut Dataplane, topology: &Topology, setup: Setup) -> Result<()> {
    for (home_addr, _) in dataplane.bindings()? {
        dataplane.remove_binding(home_addr)?;
    }
    {
        let mut ifaces = HashMap::<_, u32, IfaceInfo>::try_from(map_mut(dataplane, IFACES_MAP)?)?;
        let keys = ifaces.keys().collect::<Result<Vec<_>, _>>()?;
        for key in keys {
            ifaces.remove(&key)?;
        }
    }
    dataplane.set_ha_config(HaDataplaneConfig::default())?;
    // Both tunnel slots inactive, and no gate at all: whole entries go, so no field of one
    // (the x-HA of a cvc row's gate) outlives its row.
    dataplane.set_mn_tunnel(MnTunnel::default())?;
    dataplane.set_mn_outer_tunnel(MnTunnel::default())?;
    for (ifindex, _) in dataplane.mn_gates()? {
        dataplane.remove_mn_gate(ifindex)?;
    }
    dataplane.remove_vpn_spi(VPN_SPI)?;
    dataplane.set_fa_config(FaDataplaneConfig::default())?;
    for (home_addr, _) in dataplane.visitors()? {
        dataplane.remove_visitor(home_addr)?;
    }
    for (care_of_addr, _) in dataplane.fa_care_ofs()? {
        dataplane.remove_fa_care_of(care_of_addr)?;
    }
    // Each fixture has its own routes in mind: no answer cached by an earlier one may serve it.
    dataplane.flush_nexthops()?;
    let ha_maps = |dataplane: &mut Dataplane| -> Result<()> {
        for b in &BINDINGS {
            let binding = HaBinding {
                care_of_addr: b.care_of_addr,
                home_agent: b.home_agent,
                tunnel_flags: b.tunnel_flags,
                source_addr: b.source_addr,
                source_port: b.source_port.to_be_bytes(),
                lifetime: 600,
                ..HaBinding::default()
            };
            dataplane.upsert_binding(Ipv4Addr::from(b.home_addr), binding)?;
        }
        for (name, mac, flags) in [
            (HA_HOME, HA_HOME_MAC, IFACE_HOME_LINK),
            (HA_UP, HA_UP_MAC, 0),
        ] {
            dataplane.set_iface(topology.ifindex[name], IfaceInfo { mac, flags })?;
        }
        Ok(())
    };
    let fa_maps = |dataplane: &mut Dataplane| -> Result<()> {
        for v in &VISITORS {
            let visitor = FaVisitor {
                care_of_addr: v.care_of_addr,
                home_agent: v.home_agent,
                ifindex: v.link.map_or(NO_IFINDEX, |name| topology.ifindex[name]),
                flags: v.flags,
                mac: v.mac,
                lifetime: 600,
                source_port: HA_PORT.to_be_bytes(),
                ..FaVisitor::default()
            };
            dataplane.upsert_visitor(Ipv4Addr::from(v.home_addr), visitor)?;
        }
        for care_of_addr in [FA_COA, FA_COA2] {
            dataplane.add_fa_care_of(Ipv4Addr::from(care_of_addr), topology.ifindex[FA_UP])?;
        }
        for (name, mac) in [(FA_UP, FA_UP_MAC), (FA_LINK, FA_LINK_MAC)] {
            dataplane.set_iface(topology.ifindex[name], IfaceInfo { mac, flags: 0 })?;
        }
        Ok(())
    };
    let mn_tunnel = |home_agent, flags| MnTunnel {
        home_addr: HOME,
        home_agent,
        care_of_addr: COA,
        flags,
        ..MnTunnel::default()
    };
    let mn_udp_tunnel = |flags| MnTunnel {
        flags: MN_UDP_TUNNEL | flags,
        mn_port: MN_PORT.to_be_bytes(),
        ha_port: HA_PORT.to_be_bytes(),
        ..mn_tunnel(HA, 0)
    };
    match setup {
        Setup::Empty => {}
        Setup::HaDisabled => ha_maps(dataplane)?,
        Setup::Ha => {
            ha_maps(dataplane)?;
            dataplane.set_ha_config(HaDataplaneConfig {
                home_agent: HA,
                enabled: 1,
                udp_port: HA_PORT.to_be_bytes(),
                ..HaDataplaneConfig::default()
            })?;
        }
        Setup::Mn(flags) => dataplane.set_mn_tunnel(mn_tunnel(HA, flags))?,
        Setup::MnUdp(flags) => dataplane.set_mn_tunnel(mn_udp_tunnel(flags))?,
        Setup::MnAltHa => {
            dataplane.set_mn_tunnel(mn_tunnel(ALT_HA, MN_ACTIVE | MN_REVERSE_TUNNEL))?;
        }
        Setup::MnVpn(flags) => dataplane.set_mn_tunnel(MnTunnel {
            care_of_addr: TIA,
            ..mn_tunnel(HA, flags)
        })?,
        Setup::Gated {
            state,
            expired,
            udp,
            vpn,
        } => {
            let flags = MN_ACTIVE | MN_REVERSE_TUNNEL;
            dataplane.set_mn_tunnel(if udp {
                mn_udp_tunnel(flags)
            } else {
                mn_tunnel(HA, flags)
            })?;
            dataplane.set_mn_gate(
                topology.ifindex[MN0],
                MnGate {
                    state,
                    mip_port: HA_PORT.to_be_bytes(),
                    open_until_ns: if expired { 1 } else { u64::MAX },
                    vpn_gateway: if vpn { VPN_GW } else { [0; 4] },
                    ..MnGate::default()
                },
            )?;
            if vpn {
                dataplane.add_vpn_spi(VPN_SPI)?;
            }
        }
        Setup::Cvc {
            home,
            outer,
            state,
            x_ha,
        } => {
            if home != 0 {
                dataplane.set_mn_tunnel(MnTunnel {
                    care_of_addr: TIA,
                    ..mn_tunnel(HA, home)
                })?;
            }
            let udp = outer & MN_UDP_TUNNEL != 0;
            let port = |port: u16| if udp { port.to_be_bytes() } else { [0; 2] };
            dataplane.set_mn_outer_tunnel(MnTunnel {
                home_addr: X_HOA,
                home_agent: X_HA,
                care_of_addr: COA,
                flags: outer,
                mn_port: port(MN_PORT),
                ha_port: port(HA_PORT),
            })?;
            dataplane.set_mn_gate(
                topology.ifindex[MN0],
                MnGate {
                    state,
                    mip_port: HA_PORT.to_be_bytes(),
                    open_until_ns: u64::MAX,
                    vpn_gateway: VPN_GW,
                    outer_home_agent: if x_ha { X_HA } else { [0; 4] },
                    ..MnGate::default()
                },
            )?;
            dataplane.add_vpn_spi(VPN_SPI)?;
        }
        Setup::FaDisabled => fa_maps(dataplane)?,
        Setup::Fa => {
            fa_maps(dataplane)?;
            dataplane.set_fa_config(FaDataplaneConfig {
                enabled: 1,
                udp_port: HA_PORT.to_be_bytes(),
                ..FaDataplaneConfig::default()
            })?;
        }
    }
    Ok(())
}

/// Makes the next Identification the programs draw `next`, on every CPU (the test run executes
/// on whichever CPU the thread is on).
pub fn preset_ip_id(dataplane: &mut Dataplane, next: u16) -> Result<()> {
    let mut ids = PerCpuArray::<_, u32>::try_from(map_mut(dataplane, IP_ID_MAP)?)?;
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    let previous = u32::from(next).wrapping_sub(1);
    ids.set(
        0,
        PerCpuValues::try_from(vec![previous; cpus.get() as usize])?,
        0,
    )?;
    Ok(())
}

pub fn namespace<'a>(topology: &'a Topology, program: &str) -> &'a Netns {
    if [MN_XDP, MN_TC_EGRESS, MN_TC_VPN_EGRESS, MN_TC_VPN_INGRESS].contains(&program) {
        &topology.mn
    } else if program == FA_XDP {
        &topology.fa
    } else {
        &topology.ha
    }
}

/// Creates TUN device `name` (`IFF_TUN | IFF_NO_PI`: bare IP packets) in the calling thread's
/// namespace and returns its queue, non-blocking. The device goes when the queue closes.
pub fn open_tun(name: &str) -> Result<File> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    // SAFETY: `ifreq` is plain data, for which all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(
        name.len() < ifr.ifr_name.len(),
        "interface name {name} too long"
    );
    for (slot, byte) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = libc::c_char::from_ne_bytes([byte]);
    }
    ifr.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_TUN | libc::IFF_NO_PI)?;
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which outlives the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("creating TUN device {name}"));
    }
    Ok(tun)
}
