//! The topology of RFC 5265's internal network detection (§2 figure 1, §3.1, §3.6.1, §4.3),
//! shared by the lab and the end-to-end tests: an intranet with an internal home agent (i-HA)
//! behind a firewall, a DMZ with an external home agent (x-HA) and a VPN gateway, two external
//! networks (one behind a NAT), and a mobile node whose one interface is moved between two
//! internal subnets and the external networks (as a laptop moves between the office, a café and
//! a home network).
//!
//! ```text
//!  ns cn  cn0 10.30.0.2 ── irt-cn 10.30.0.1          (intranet server network)
//!  ns iha iha0 10.10.0.1 ── irt-iha ┐
//!                                   br-ihome 10.10.0.254   (i-HA's home link)
//!                          ns irt (intranet router)
//!                                   irt-int1 10.20.1.1 ───── acc-int1 ┐
//!                                   irt-int2 10.20.2.1 ───── acc-int2 ┼ ns acc (access):
//!                                   irt-fw 172.16.1.1                 │  br-int1 (internal 1)
//!                                       │                             │  br-int2 (internal 2)
//!                          ns fw  fw-in 172.16.1.2                    │  br-ext1 (external 1)
//!                                 fw-out 172.16.2.1 (nftables)        │  br-ext2 (external 2)
//!                                       │                             │  acc-mn: in one of them
//!                          ns xrt xrt-fw 172.16.2.2                   │      │
//!                                 xrt-ext1 198.51.100.1 ──── acc-ext1 ┤  ns mn mn0 (+ ipsec0)
//!                                 xrt-nat 198.51.101.1               │
//!                                     │                               │
//!                          ns nat nat-up 198.51.101.2 (masquerade)    │
//!                                 nat-ext2 192.168.5.1 ───── acc-ext2 ┘
//!                                 xrt-xcn 203.0.113.1 ── xcn0 203.0.113.2 (ns xcn, "Internet")
//!                                 br-dmz 192.0.2.254 (in xrt, the DMZ)
//!                                   ├─ xrt-xha ── xha0 192.0.2.1 (ns xha)
//!                                   └─ xrt-vgw ── vgw0 192.0.2.10 (ns vgw, strongSwan, nftables)
//! ```
//!
//! **How the mobile node moves.** Its interface `mn0` is one end of a veth pair whose other end,
//! `acc-mn`, lives for good in a small *access* namespace `acc` holding one bridge per network
//! (`br-int1`, `br-int2`, `br-ext1`, `br-ext2`). Each bridge is one layer-2 segment, wired by a
//! veth to its router: the intranet router `irt` for the internal subnets, the external router
//! `xrt` for external network 1, the NAT router `nat` for external network 2. A move
//! re-enslaves `acc-mn` to another bridge, exactly as
//! [`crate::mobility`] does with `rt-mn`. Moving the peer itself between the router namespaces
//! (`ip link set PEER netns NS`) was rejected: moving an interface takes it down, so `mn0` would
//! always lose carrier and a *silent* upstream change (RFC 5265 §3: "a routing change upstream")
//! could not be modelled; the XDP program on the peer would also have to be re-attached.
//! Re-enslaving leaves `acc-mn` up, so the MN sees no carrier change unless the move asks for
//! one ([`DetectionTopology::move_mn`] with `link_change`).
//!
//! **External network 2** is a private network (192.168.5.0/24) behind the NAT router `nat`,
//! whose upstream leg is on the external router: everything leaving upstream is masqueraded
//! (nftables, a random port per new mapping, as in [`crate::mobility`]), so from there the MN
//! reaches the outside only as [`NAT_PUBLIC_ADDR`] (RFC 5265 §2.5: NAT devices between the MN
//! and the x-HA or the VPN gateway; the VPN layer needs IPsec NAT traversal, §4.2).
//!
//! **The firewall** (`fw`, nftables `inet mipx_fw`, forward policy drop) lets the intranet open
//! connections anywhere (an ordinary firewall lets UDP out, §3.1, so the x-HA in the DMZ is
//! reachable from inside), lets replies and related ICMP errors back, and drops everything else
//! arriving from outside: the external networks and the DMZ cannot reach the intranet, in
//! particular not the i-HA (§3.1 "MUST be configured to block traffic originating from external
//! networks going to the i-HA"). The one exception is the VPN gateway's decrypted traffic: from
//! the VPN pools ([`VPN_POOLS`]) to the i-HA, UDP port 434 and IP-in-IP only (§4.2).
//! [`DetectionTopology::misconfigure_firewall`] adds the §3.6.1
//! configuration error: external → i-HA UDP 434 accepted (ICMP stays blocked, so a test can tell
//! the hole is exactly the registration port). There is no NAT at the firewall: the external
//! router routes 10.0.0.0/8 to the firewall (and the VPN pools to the VPN gateway), the intranet
//! router's default route is the firewall.
//!
//! **The VPN gateway** (`vgw`, in the DMZ; RFC 5265 §2.3 access mode cvc, §4.2) runs an
//! unmodified strongSwan charon ([`crate::strongswan`], kernel-libipsec: ESP in UDP through a
//! TUN device) as an IKEv2 PSK responder, only when a test asks
//! ([`DetectionTopology::start_vpn_gateway`]): identity [`VPN_GATEWAY_ID`], road warrior
//! [`MN_VPN_ID`], MOBIKE, a virtual IP (the MN's tunnel inner address, TIA) from a pool, and a
//! CHILD_SA covering exactly TIA ↔ i-HA. Its forward chain (nftables `inet mipx_vpn`) is §4.2's
//! security policy: between the pools and the i-HA only UDP with the home agent's port 434 and
//! IP-in-IP pass; anything else to or from the pools is dropped and counted
//! ([`DetectionTopology::vpn_policy_drops`]). The MN's own charon
//! ([`DetectionTopology::start_mn_charon`]) starts with no connection: `mipd` (or a test)
//! configures it.
//!
//! **Addresses.** The MN's internal home address [`INTERNAL_HOME_ADDR`] (i-HA's home link) and
//! external home address [`EXTERNAL_HOME_ADDR`] (the DMZ, the x-HA's home link) are both on the
//! MN's loopback as /32 (the MN is never on either home link); on `mn0` it has the address of
//! the network it is in ([`Net::mn_addr`], a /24) and a default route via that network's router.
//!
//! **Daemons.** `mipd` runs as i-HA (trusted networks 10.20.0.0/16, the internal subnets, and
//! the VPN pools 10.40.0.0/15) and as
//! x-HA (no trusted networks) with `[dataplane]` on their home links; the MN's `[mn]` table is
//! the caller's (see [`DetectionTopology::start_mn`]). The routers' ends of the HAs' and the
//! MN's links carry an XDP pass program (see [`crate::mobility`]: frames an XDP program
//! transmits into a veth need one on the receiving end). Everything (namespaces, files, bpffs
//! pins, charon) is removed on drop.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::daemon::{Capture, Mipd, TempDir};
use crate::mobility::{BPFFS, ensure_bpffs};
use crate::strongswan::{Charon, Config, Ipsec, PskIds};
use crate::{Netns, veth_pair};

/// The internal home agent, on its home link (br-ihome in the intranet router).
pub const IHA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
/// The intranet router on the i-HA's home link.
pub const IHOME_GW: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);
/// The i-HA's home network.
pub const IHOME_NET: &str = "10.10.0.0/24";
/// The MN's internal home address (registered with the i-HA).
pub const INTERNAL_HOME_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 50);
/// The external home agent, in the DMZ.
pub const XHA_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The external router on the DMZ.
pub const DMZ_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// The DMZ (the x-HA's home network).
pub const DMZ_NET: &str = "192.0.2.0/24";
/// The MN's external home address (registered with the x-HA).
pub const EXTERNAL_HOME_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// The internal subnets, as the i-HA's `trusted_networks` lists them (it lists [`VPN_POOLS`]
/// too).
pub const TRUSTED_NETWORKS: &str = "10.20.0.0/16";
/// A correspondent inside the intranet (a server network behind the intranet router).
pub const CN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 2);
/// The intranet router on the correspondent's network.
pub const CN_GW: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
/// A correspondent on the "Internet", behind the external router.
pub const XCN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The external router on the Internet correspondent's network.
pub const XCN_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Intranet router ↔ firewall transfer network.
pub const IRT_FW: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 1);
pub const FW_IN: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);
/// Firewall ↔ external router transfer network.
pub const FW_OUT: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 1);
pub const XRT_FW: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 2);
/// The UDP port of Mobile IP registrations.
pub const MIP_PORT: u16 = 434;
/// The MN ↔ i-HA security association (SPI; the key is in [`DetectionTopology::iha_key_file`]).
pub const IHA_SPI: u32 = 5265;
/// The MN ↔ x-HA security association (SPI; the key is in [`DetectionTopology::xha_key_file`]).
pub const XHA_SPI: u32 = 5266;
/// Test key material only.
const IHA_KEY_HEX: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f80011223344";
const XHA_KEY_HEX: &str = "99887766554433221100ffeeddccbbaa01020304";

/// The firewall's nftables table, its forward chain and its drop counter.
const FW_TABLE: &str = "mipx_fw";
const FW_DROP_COUNTER: &str = "dropped_from_outside";

/// The external router on the NAT router's upstream link.
pub const NAT_UPLINK_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 1);
/// The NAT router's public address (its upstream leg): where everything from external network
/// 2 appears to come from.
pub const NAT_PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 2);

/// The VPN gateway, in the DMZ (RFC 5265 §2 figure 1's `[VPN]`).
pub const VPN_GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The VPN gateway's IKE identity.
pub const VPN_GATEWAY_ID: &str = "vpn.mipx.test";
/// The mobile node's IKE identity, the one road warrior the gateway accepts.
pub const MN_VPN_ID: &str = "mn@mipx.test";
/// The pre-shared key of the MN ↔ VPN gateway IKE_SA (test material only).
pub const VPN_PSK: &str = crate::strongswan::PSK;
/// Both sides' identities and key, for [`Config::road_warrior_with`] and the like.
pub const VPN_IDS: PskIds<'static> = PskIds {
    gateway: VPN_GATEWAY_ID,
    client: MN_VPN_ID,
    psk: VPN_PSK,
};
/// The VPN gateway's usual virtual IP pool: where the MN's tunnel inner address (TIA) comes from.
pub const VPN_POOL: &str = "10.40.0.0/24";
/// Another pool, for a gateway restarted with different addresses (the MN's TIA changes).
pub const VPN_POOL_2: &str = "10.41.0.0/24";
/// Both pools: what the external router routes to the VPN gateway, what the gateway's policy,
/// the firewall's VPN rules and the i-HA's `trusted_networks` cover. A pool given to
/// [`DetectionTopology::start_vpn_gateway`] must lie inside it.
pub const VPN_POOLS: &str = "10.40.0.0/15";

/// The VPN gateway's nftables table and its drop counter (§4.2 policy).
const VPN_TABLE: &str = "mipx_vpn";
const VPN_DROP_COUNTER: &str = "dropped_by_policy";

/// A network the mobile node can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Internal subnet 1 (10.20.1.0/24), behind the intranet router.
    Int1,
    /// Internal subnet 2 (10.20.2.0/24), behind the intranet router.
    Int2,
    /// External network 1 (198.51.100.0/24), behind the external router.
    Ext1,
    /// External network 2 (192.168.5.0/24, private), behind the NAT router, whose public
    /// address is [`NAT_PUBLIC_ADDR`].
    Ext2,
}

impl Net {
    pub const ALL: [Net; 4] = [Net::Int1, Net::Int2, Net::Ext1, Net::Ext2];

    /// The segment's bridge in the access namespace.
    pub fn bridge(self) -> &'static str {
        match self {
            Net::Int1 => "br-int1",
            Net::Int2 => "br-int2",
            Net::Ext1 => "br-ext1",
            Net::Ext2 => "br-ext2",
        }
    }

    /// The router's address on this network: the MN's default gateway there.
    pub fn gateway(self) -> Ipv4Addr {
        match self {
            Net::Int1 => Ipv4Addr::new(10, 20, 1, 1),
            Net::Int2 => Ipv4Addr::new(10, 20, 2, 1),
            Net::Ext1 => Ipv4Addr::new(198, 51, 100, 1),
            Net::Ext2 => Ipv4Addr::new(192, 168, 5, 1),
        }
    }

    /// The MN's (co-located care-of) address here, a /24.
    pub fn mn_addr(self) -> Ipv4Addr {
        match self {
            Net::Int1 => Ipv4Addr::new(10, 20, 1, 100),
            Net::Int2 => Ipv4Addr::new(10, 20, 2, 100),
            Net::Ext1 => Ipv4Addr::new(198, 51, 100, 100),
            Net::Ext2 => Ipv4Addr::new(192, 168, 5, 10),
        }
    }

    /// A foreign agent's address (and care-of address) here, when one is started
    /// ([`DetectionTopology::start_foreign_agent`]).
    pub fn fa_addr(self) -> Ipv4Addr {
        let o = self.gateway().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 3)
    }

    /// Short name, for namespaces and interfaces.
    pub fn short(self) -> &'static str {
        match self {
            Net::Int1 => "int1",
            Net::Int2 => "int2",
            Net::Ext1 => "ext1",
            Net::Ext2 => "ext2",
        }
    }

    /// Whether this network is inside the intranet (behind the firewall).
    pub fn is_internal(self) -> bool {
        matches!(self, Net::Int1 | Net::Int2)
    }

    pub fn name(self) -> &'static str {
        match self {
            Net::Int1 => "internal subnet 1",
            Net::Int2 => "internal subnet 2",
            Net::Ext1 => "external network 1",
            Net::Ext2 => "external network 2 (behind a NAT)",
        }
    }

    /// The router-side veth of this segment (in `irt`, `xrt` or `nat`) and its peer in `acc`.
    fn uplink(self) -> (&'static str, &'static str) {
        match self {
            Net::Int1 => ("irt-int1", "acc-int1"),
            Net::Int2 => ("irt-int2", "acc-int2"),
            Net::Ext1 => ("xrt-ext1", "acc-ext1"),
            Net::Ext2 => ("nat-ext2", "acc-ext2"),
        }
    }
}

/// What a UDP probe got back (see [`udp_probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A datagram came back.
    Answered,
    /// An ICMP port unreachable came back: the datagram reached the host, nobody listens.
    Refused,
    /// Nothing came back within the timeout (filtered, or a silent listener).
    Silent,
}

/// The namespaces, links, configuration and key files of the detection scenario; everything is
/// removed on drop, including the daemons' bpffs pins.
pub struct DetectionTopology {
    pub cn: Netns,
    pub irt: Netns,
    pub iha: Netns,
    pub fw: Netns,
    pub xrt: Netns,
    pub xha: Netns,
    pub xcn: Netns,
    pub acc: Netns,
    pub mn: Netns,
    /// The NAT router of external network 2.
    pub nat: Netns,
    /// The VPN gateway in the DMZ.
    pub vgw: Netns,
    pub dir: TempDir,
    pub iha_conf: PathBuf,
    pub xha_conf: PathBuf,
    pub mn_conf: PathBuf,
    pin_root: PathBuf,
    net: Net,
    /// The VPN gateway's charon, while one runs (see [`DetectionTopology::start_vpn_gateway`]).
    vpn_gw: Option<Charon>,
    /// Where the VPN gateway's and the MN's charons run ESP ([`DetectionTopology::set_ipsec`]).
    ipsec: Ipsec,
    /// Foreign agents on the access segments, each in its own namespace
    /// ([`DetectionTopology::start_foreign_agent`]).
    pub fas: Vec<(Net, Netns)>,
    /// XDP pass programs on the far ends of the HAs', the MN's and the FAs' links.
    _peer_xdp: mipx_control::dataplane::Dataplane,
}

fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    ns.exec(&["sysctl", "-qw", &format!("{key}={value}")])
        .map(|_| ())
}

impl DetectionTopology {
    /// Builds the topology with the mobile node in internal subnet 1, the firewall correctly
    /// configured, and writes both home agents' configs and the two key files.
    pub fn new(tag: &str) -> Result<Self> {
        let ns = |name: &str| Netns::new(&format!("{tag}-{name}"));
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ensure_bpffs(Path::new(BPFFS))?;
        let dir = TempDir::new(tag)?;
        let mut topo = Self {
            cn: ns("cn")?,
            irt: ns("irt")?,
            iha: ns("iha")?,
            fw: ns("fw")?,
            xrt: ns("xrt")?,
            xha: ns("xha")?,
            xcn: ns("xcn")?,
            acc: ns("acc")?,
            mn: ns("mn")?,
            nat: ns("nat")?,
            vgw: ns("vgw")?,
            iha_conf: dir.path("iha.toml"),
            xha_conf: dir.path("xha.toml"),
            mn_conf: dir.path("mn.toml"),
            dir,
            pin_root: PathBuf::from(format!(
                "{BPFFS}/mipx-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
            net: Net::Int1,
            vpn_gw: None,
            ipsec: Ipsec::default(),
            fas: Vec::new(),
            _peer_xdp: mipx_control::dataplane::Dataplane::load()?,
        };
        topo.wire()?;
        topo.firewall()?;
        topo.nat()?;
        topo.vpn_policy()?;
        topo.peer_xdp()?;
        topo.dir
            .write("iha-mn.key", &format!("{IHA_KEY_HEX}\n"), 0o600)?;
        topo.dir
            .write("xha-mn.key", &format!("{XHA_KEY_HEX}\n"), 0o600)?;
        topo.write_iha_config("")?;
        topo.write_xha_config("")?;
        Ok(topo)
    }

    fn all(&self) -> [&Netns; 11] {
        [
            &self.cn, &self.irt, &self.iha, &self.fw, &self.xrt, &self.xha, &self.xcn, &self.acc,
            &self.mn, &self.nat, &self.vgw,
        ]
    }

    /// The router of `net`'s segment (the namespace holding [`Net::uplink`]'s router end).
    fn router(&self, net: Net) -> &Netns {
        match net {
            Net::Int1 | Net::Int2 => &self.irt,
            Net::Ext1 => &self.xrt,
            Net::Ext2 => &self.nat,
        }
    }

    fn wire(&self) -> Result<()> {
        for ns in self.all() {
            // Tunnelled packets arrive on interfaces that are not on the reverse path of their
            // inner source; strict reverse-path filtering would drop them.
            sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")?;
            sysctl(ns, "net.ipv4.conf.default.rp_filter", "0")?;
            // IPv4 only: no router solicitations or MLD reports in the captures.
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        // The home agents are routers too: what XDP hands to the stack is forwarded by it.
        // So are the NAT and the VPN gateway (from its TUN device to the i-HA and back).
        for ns in [
            &self.irt, &self.fw, &self.xrt, &self.iha, &self.xha, &self.nat, &self.vgw,
        ] {
            sysctl(ns, "net.ipv4.ip_forward", "1")?;
        }
        let (irt, fw, xrt, acc) = (&self.irt, &self.fw, &self.xrt, &self.acc);

        // Hosts whose traffic an XDP program may forward compute their transport checksums in
        // software (see mobility.rs: veth leaves them to a NIC that XDP never sees).
        let host = |ns: &Netns, ifname: &str, peer: (&Netns, &str), cidr: &str, gw: Ipv4Addr| {
            veth_pair((ns, ifname), peer)?;
            ns.exec(&["ethtool", "-K", ifname, "tx", "off"])?;
            ns.add_addr(ifname, cidr)?;
            ns.ip(&["route", "add", "default", "via", &gw.to_string()])
                .map(drop)
        };

        // The intranet: the server network, the i-HA's home link, the transfer net to the fw.
        host(&self.cn, "cn0", (irt, "irt-cn"), "10.30.0.2/24", CN_GW)?;
        irt.add_addr("irt-cn", "10.30.0.1/24")?;
        irt.ip(&["link", "add", "br-ihome", "type", "bridge"])?;
        irt.add_addr("br-ihome", &format!("{IHOME_GW}/24"))?;
        irt.set_up("br-ihome")?;
        veth_pair((&self.iha, "iha0"), (irt, "irt-iha"))?;
        irt.ip(&["link", "set", "irt-iha", "master", "br-ihome"])?;
        self.iha.add_addr("iha0", &format!("{IHA_ADDR}/24"))?;
        self.iha
            .ip(&["route", "add", "default", "via", &IHOME_GW.to_string()])?;
        veth_pair((irt, "irt-fw"), (fw, "fw-in"))?;
        irt.add_addr("irt-fw", &format!("{IRT_FW}/30"))?;
        irt.ip(&["route", "add", "default", "via", &FW_IN.to_string()])?;

        // The firewall between the intranet and the external router.
        fw.add_addr("fw-in", &format!("{FW_IN}/30"))?;
        veth_pair((fw, "fw-out"), (xrt, "xrt-fw"))?;
        fw.add_addr("fw-out", &format!("{FW_OUT}/30"))?;
        fw.ip(&["route", "add", "10.0.0.0/8", "via", &IRT_FW.to_string()])?;
        // The VPN pools are inside 10.0.0.0/8 but outside the firewall: the i-HA's answers to a
        // tunnel inner address go out to the VPN gateway, not back into the intranet.
        fw.ip(&["route", "add", VPN_POOLS, "via", &XRT_FW.to_string()])?;
        fw.ip(&["route", "add", "default", "via", &XRT_FW.to_string()])?;

        // The external side: the DMZ with the x-HA, the Internet correspondent.
        xrt.add_addr("xrt-fw", &format!("{XRT_FW}/30"))?;
        xrt.ip(&["route", "add", "10.0.0.0/8", "via", &FW_OUT.to_string()])?;
        xrt.ip(&["link", "add", "br-dmz", "type", "bridge"])?;
        xrt.add_addr("br-dmz", &format!("{DMZ_GW}/24"))?;
        xrt.set_up("br-dmz")?;
        veth_pair((&self.xha, "xha0"), (xrt, "xrt-xha"))?;
        xrt.ip(&["link", "set", "xrt-xha", "master", "br-dmz"])?;
        self.xha.add_addr("xha0", &format!("{XHA_ADDR}/24"))?;
        self.xha
            .ip(&["route", "add", "default", "via", &DMZ_GW.to_string()])?;
        host(
            &self.xcn,
            "xcn0",
            (xrt, "xrt-xcn"),
            "203.0.113.2/24",
            XCN_GW,
        )?;
        xrt.add_addr("xrt-xcn", &format!("{XCN_GW}/24"))?;

        // The VPN gateway: a host on the DMZ that routes the pools (its clients' virtual IPs,
        // reached through its TUN device) for the external router.
        host(
            &self.vgw,
            "vgw0",
            (xrt, "xrt-vgw"),
            &format!("{VPN_GATEWAY_ADDR}/24"),
            DMZ_GW,
        )?;
        xrt.ip(&["link", "set", "xrt-vgw", "master", "br-dmz"])?;
        xrt.ip(&[
            "route",
            "add",
            VPN_POOLS,
            "via",
            &VPN_GATEWAY_ADDR.to_string(),
        ])?;
        self.vgw_local_ts_address()?;

        // External network 2's NAT router, upstream on the external router. The private
        // network is not routed outside: only the NAT's public address is.
        veth_pair((&self.nat, "nat-up"), (xrt, "xrt-nat"))?;
        xrt.add_addr("xrt-nat", &format!("{NAT_UPLINK_GW}/24"))?;
        self.nat
            .add_addr("nat-up", &format!("{NAT_PUBLIC_ADDR}/24"))?;
        self.nat
            .ip(&["route", "add", "default", "via", &NAT_UPLINK_GW.to_string()])?;

        // The access segments: one bridge each in `acc`, wired to its router.
        for net in Net::ALL {
            let (router_end, acc_end) = net.uplink();
            let router = self.router(net);
            acc.ip(&["link", "add", net.bridge(), "type", "bridge"])?;
            veth_pair((router, router_end), (acc, acc_end))?;
            router.add_addr(router_end, &format!("{}/24", net.gateway()))?;
            acc.ip(&["link", "set", acc_end, "master", net.bridge()])?;
            acc.set_up(net.bridge())?;
        }

        // The mobile node.
        let mn = &self.mn;
        veth_pair((mn, "mn0"), (acc, "acc-mn"))?;
        mn.exec(&["ethtool", "-K", "mn0", "tx", "off"])?;
        // RFC 5944 §4.6: away from home the MN must not answer ARP for its home addresses.
        sysctl(mn, "net.ipv4.conf.mn0.arp_ignore", "1")?;
        sysctl(mn, "net.ipv4.conf.mn0.arp_announce", "2")?;
        mn.add_addr("lo", &format!("{INTERNAL_HOME_ADDR}/32"))?;
        mn.add_addr("lo", &format!("{EXTERNAL_HOME_ADDR}/32"))?;
        self.place_mn(Net::Int1, false)?;
        Ok(())
    }

    /// §3.1: the intranet may open connections anywhere; from outside only replies (and their
    /// ICMP errors) come in, and what the VPN gateway decrypted for the i-HA: from the pools,
    /// UDP to port 434 and IP-in-IP (§4.2; the i-HA's answers and tunnelled packets to a TIA
    /// leave by `fw-in`, accepted). The last rule counts what outside sent and was refused.
    fn firewall(&self) -> Result<()> {
        let rules = format!(
            "table inet {FW_TABLE} {{\n\
             \tcounter {FW_DROP_COUNTER} {{ }}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tct state established,related accept\n\
             \t\tiifname \"fw-in\" accept\n\
             \t\tiifname \"fw-out\" ip saddr {VPN_POOLS} ip daddr {IHA_ADDR} \
             udp dport {MIP_PORT} accept\n\
             \t\tiifname \"fw-out\" ip saddr {VPN_POOLS} ip daddr {IHA_ADDR} \
             ip protocol 4 accept\n\
             \t\tiifname \"fw-out\" counter name \"{FW_DROP_COUNTER}\" drop\n\
             \t}}\n\
             }}\n"
        );
        let file = self.dir.write("fw.nft", &rules, 0o644)?;
        self.fw
            .exec(&["nft", "-f", &file.display().to_string()])
            .map(drop)
    }

    /// kernel-libipsec (DESIGN.md §8) installs, for every CHILD_SA, a route to the remote
    /// traffic selector (the TIA) into its TUN device with a *local address inside the local
    /// traffic selector* as source, and fails the CHILD_SA without one ("no local address found
    /// in traffic selector", TS_UNACCEPTABLE to the MN; `install_routes = no` does not change
    /// that). A gateway's local selector is normally its inside subnet, where it has an
    /// address; here it is the i-HA alone. So the gateway gets the i-HA's address on its
    /// loopback, for charon to find, and is kept from acting on it:
    /// - decrypted packets (from the pools: out of the TUN device, or from `vgw0` with the
    ///   kernel's ESP) are routed by the main table ahead of the local one (rule 10 `from
    ///   <pools> lookup main`, the local table moved from rule 0 to 100), so those to the i-HA
    ///   are forwarded to it, not delivered to the gateway;
    /// - the i-HA's answers arrive on `vgw0` from an address the gateway has: `accept_local`
    ///   says that is fine (the kernel's source check passes without it too, but only because
    ///   its reverse lookup runs as if from the TUN device and so takes rule 10);
    /// - `arp_ignore = 1` on `vgw0`: the gateway never claims the i-HA's address on the DMZ.
    fn vgw_local_ts_address(&self) -> Result<()> {
        let vgw = &self.vgw;
        vgw.add_addr("lo", &format!("{IHA_ADDR}/32"))?;
        vgw.ip(&["rule", "add", "pref", "100", "lookup", "local"])?;
        vgw.ip(&["rule", "del", "pref", "0", "lookup", "local"])?;
        vgw.ip(&[
            "rule", "add", "pref", "10", "from", VPN_POOLS, "lookup", "main",
        ])?;
        sysctl(vgw, "net.ipv4.conf.vgw0.accept_local", "1")?;
        sysctl(vgw, "net.ipv4.conf.vgw0.arp_ignore", "1")
    }

    /// External network 2's NAT: whatever leaves by the upstream leg is masqueraded to
    /// [`NAT_PUBLIC_ADDR`], with a random port per new mapping ([`crate::nft_masquerade`]),
    /// so the VPN gateway sees neither the MN's private address nor its ports: IKE must detect
    /// the NAT and float to UDP 4500 (RFC 7296 §2.23; RFC 5265 §2.5, §4.2).
    fn nat(&self) -> Result<()> {
        crate::nft_masquerade(&self.nat, &["oifname", "nat-up"])
    }

    /// RFC 5265 §4.2's VPN security policy, in the gateway's forward chain: between the VPN
    /// pools (the TIAs) and the i-HA, UDP with the home agent's port 434 (any port on the MN's
    /// side) and IP-in-IP are accepted, in both directions; anything else forwarded from or to
    /// the pools is dropped and counted. IKE and ESP to the gateway itself are input, not
    /// forward: this chain never sees them. The CHILD_SA's traffic selectors (TIA ↔ i-HA, all
    /// protocols) let the rest reach this chain, so it is the policy, not IKE, that filters.
    fn vpn_policy(&self) -> Result<()> {
        let rules = format!(
            "table inet {VPN_TABLE} {{\n\
             \tcounter {VPN_DROP_COUNTER} {{ }}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tip saddr {VPN_POOLS} ip daddr {IHA_ADDR} udp dport {MIP_PORT} accept\n\
             \t\tip saddr {IHA_ADDR} ip daddr {VPN_POOLS} udp sport {MIP_PORT} accept\n\
             \t\tip saddr {VPN_POOLS} ip daddr {IHA_ADDR} ip protocol 4 accept\n\
             \t\tip saddr {IHA_ADDR} ip daddr {VPN_POOLS} ip protocol 4 accept\n\
             \t\tip saddr {VPN_POOLS} counter name \"{VPN_DROP_COUNTER}\" drop\n\
             \t\tip daddr {VPN_POOLS} counter name \"{VPN_DROP_COUNTER}\" drop\n\
             \t}}\n\
             }}\n"
        );
        let file = self.dir.write("vgw.nft", &rules, 0o644)?;
        self.vgw
            .exec(&["nft", "-f", &file.display().to_string()])
            .map(drop)
    }

    /// §3.6.1's configuration error: the firewall lets the external networks reach the i-HA's
    /// registration port (UDP 434 only; ICMP and everything else stays blocked).
    pub fn misconfigure_firewall(&self) -> Result<()> {
        self.fw
            .exec(&[
                "nft",
                "insert",
                "rule",
                "inet",
                FW_TABLE,
                "forward",
                "iifname",
                "fw-out",
                "ip",
                "daddr",
                &IHA_ADDR.to_string(),
                "udp",
                "dport",
                &MIP_PORT.to_string(),
                "accept",
            ])
            .map(drop)
    }

    /// §3.1's optional rule: the firewall blocks registrations from the intranet to the x-HA
    /// (the "x-HA not reachable from inside" deployment, where a zero detection period suits).
    pub fn block_xha_from_inside(&self) -> Result<()> {
        self.fw
            .exec(&[
                "nft",
                "insert",
                "rule",
                "inet",
                FW_TABLE,
                "forward",
                "iifname",
                "fw-in",
                "ip",
                "daddr",
                &XHA_ADDR.to_string(),
                "udp",
                "dport",
                &MIP_PORT.to_string(),
                "drop",
            ])
            .map(drop)
    }

    /// Packets from outside the firewall refused so far (the counter of its last rule).
    pub fn firewall_drops(&self) -> Result<u64> {
        nft_counter(&self.fw, FW_TABLE, FW_DROP_COUNTER)
    }

    /// Packets to or from the VPN pools the gateway's §4.2 policy dropped so far (anything but
    /// UDP port 434 and IP-in-IP between a TIA and the i-HA).
    pub fn vpn_policy_drops(&self) -> Result<u64> {
        nft_counter(&self.vgw, VPN_TABLE, VPN_DROP_COUNTER)
    }

    /// Starts the VPN gateway's charon (stopping one that runs) with virtual IPs from `pool`
    /// (inside [`VPN_POOLS`], e.g. [`VPN_POOL`] or [`VPN_POOL_2`]) and loads its connection:
    /// IKEv2, PSK, identity [`VPN_GATEWAY_ID`], road warrior [`MN_VPN_ID`], MOBIKE, CHILD_SA
    /// `intranet` with `local_ts` = the i-HA alone, so the tunnel carries exactly TIA ↔ i-HA
    /// (RFC 5265 §2.3; what passes of that is the §4.2 policy's business).
    pub fn start_vpn_gateway(&mut self, pool: &str) -> Result<()> {
        let pools = parse_cidr(VPN_POOLS)?;
        let (net, len) = parse_cidr(pool)?;
        if len < pools.1 || !cidr_contains(pools, net) {
            bail!(
                "pool {pool} is not inside {VPN_POOLS}, which the routes, the firewall and the \
                 gateway's policy cover"
            );
        }
        self.stop_vpn_gateway()?;
        // See vgw_local_ts_address for what kernel-libipsec needs of a local_ts.
        let conf = Config::gateway_with(VPN_IDS, pool, &format!("{IHA_ADDR}/32"))
            .with_charon_extra(&gateway_charon())
            .with_ipsec(self.ipsec);
        let charon = Charon::start(&self.vgw, &self.dir, "vgw", &conf)?;
        charon
            .load_all()
            .with_context(|| format!("loading the VPN gateway's connection; {}", charon.logs()))?;
        self.vpn_gw = Some(charon);
        Ok(())
    }

    /// Stops the VPN gateway's charon, if one runs (SIGTERM: it deletes its SAs, so a connected
    /// MN is told).
    pub fn stop_vpn_gateway(&mut self) -> Result<()> {
        match self.vpn_gw.take() {
            Some(mut charon) => charon.stop(),
            None => Ok(()),
        }
    }

    /// The VPN gateway's charon while it runs: its logs, `swanctl --list-sas`.
    pub fn vpn_gateway(&self) -> Option<&Charon> {
        self.vpn_gw.as_ref()
    }

    /// Starts a charon in the MN's namespace with no connection, pool or secret (`mipd`, or a
    /// test, loads them over VICI: [`Charon::vici`] is the socket, or [`Charon::load_file`]),
    /// as a mobile road warrior needs it: see [`mn_charon`]. kernel-libipsec creates its TUN
    /// device ([`crate::strongswan::TUN`]) in the MN's namespace; the TIA is installed there
    /// when a CHILD_SA comes up. Drop it before the topology.
    pub fn start_mn_charon(&self) -> Result<Charon> {
        let extra = match self.ipsec {
            Ipsec::Libipsec => mn_charon(),
            // The TIA on mipd's XFRM interface, by charon: so charon knows it for a virtual
            // IP and never takes it for an address of its own (MOBIKE would announce it and
            // try it as a path; a TIA only mipd installed is just another local address to
            // charon). Not on `mn0`, where a move flushes it.
            Ipsec::Kernel => format!("{}    install_virtual_ip_on = ipsec0\n", mn_charon()),
        };
        let conf = Config::empty()
            .with_charon_extra(&extra)
            .with_ipsec(self.ipsec);
        Charon::start(&self.mn, &self.dir, "mn", &conf)
    }

    /// The ESP the charons started from now on run: kernel-libipsec (the default, for kernels
    /// without ESP) or the kernel's XFRM.
    pub fn set_ipsec(&mut self, ipsec: Ipsec) {
        self.ipsec = ipsec;
    }

    /// The XDP pass programs on the receiving ends of links whose far end runs `mipd`'s XDP
    /// (see mobility.rs; DESIGN.md §8).
    fn peer_xdp(&mut self) -> Result<()> {
        use mipx_control::dataplane::programs::MIPX_PASS;
        for (ns, ifname) in [
            (self.irt.name().to_owned(), "irt-iha"),
            (self.xrt.name().to_owned(), "xrt-xha"),
            (self.acc.name().to_owned(), "acc-mn"),
        ] {
            let _inside = crate::netns::enter_named(&ns)?;
            self._peer_xdp
                .xdp(MIPX_PASS)?
                .attach(
                    std::ffi::CString::new(ifname)?.as_c_str(),
                    aya::programs::XdpMode::Driver,
                )
                .with_context(|| format!("attaching a pass-through XDP program to {ifname}"))?;
        }
        Ok(())
    }

    /// Starts a foreign agent on `net`'s segment: a namespace `fa-<net>` whose `fa0` is on the
    /// segment's bridge with [`Net::fa_addr`] (its care-of address) and a default route via the
    /// segment's router, running `mipd` as a foreign agent (`role = "fa"`) with `fa_toml` appended to its `[fa]` table
    /// (reverse tunnelling, limits, ...), `iface_toml` to its `[[fa.interface]]` (advertising,
    /// `registration_required`, ...), and a `[dataplane]` on `fa0`. One interface
    /// serves both the visitors and the way to their home agents, as an agent on a shared
    /// access segment does; its XDP program transmits back out of `fa0`, so the bridge's end
    /// gets a pass program like the MN's.
    pub fn start_foreign_agent(
        &mut self,
        net: Net,
        fa_toml: &str,
        iface_toml: &str,
    ) -> Result<Mipd> {
        let name = format!("fa-{}", net.short());
        let tag = self
            .acc
            .name()
            .strip_suffix("-acc")
            .context("the access namespace's name")?
            .to_owned();
        let fa = Netns::new(&format!("{tag}-{name}"))?;
        for (key, value) in [
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            // A foreign agent routes its visitors' packets (RFC 5944 §4.2.2).
            ("net.ipv4.ip_forward", "1"),
        ] {
            sysctl(&fa, key, value)?;
        }
        let acc_end = format!("acc{name}");
        veth_pair((&fa, "fa0"), (&self.acc, &acc_end))?;
        fa.exec(&["ethtool", "-K", "fa0", "tx", "off"])?;
        fa.add_addr("fa0", &format!("{}/24", net.fa_addr()))?;
        fa.ip(&["route", "add", "default", "via", &net.gateway().to_string()])?;
        self.acc
            .ip(&["link", "set", &acc_end, "master", net.bridge()])?;
        {
            use mipx_control::dataplane::programs::MIPX_PASS;
            let _inside = self.acc.enter()?;
            self._peer_xdp
                .xdp(MIPX_PASS)?
                .attach(
                    std::ffi::CString::new(acc_end.as_str())?.as_c_str(),
                    aya::programs::XdpMode::Driver,
                )
                .with_context(|| format!("attaching a pass-through XDP program to {acc_end}"))?;
        }
        let conf = self.dir.write(
            &format!("{name}.toml"),
            &format!(
                "role = \"fa\"\napi_socket = \"{sock}\"\n\n[fa]\n{fa_toml}\n\
                 [[fa.interface]]\nname = \"fa0\"\ncare_of_addr = \"{coa}\"\n{iface_toml}\n\
                 [dataplane]\ninterfaces = [\"fa0\"]\npin_dir = \"{pins}\"\n",
                sock = self.dir.path(&format!("{name}.sock")).display(),
                coa = net.fa_addr(),
                pins = self.pin_root.join(&name).display(),
            ),
            0o644,
        )?;
        let mipd = Mipd::start_named(&fa, &self.dir, &name, &conf)?;
        self.fas.push((net, fa));
        Ok(mipd)
    }

    /// The key file of the MN ↔ i-HA security association (hex, mode 0600), for `key_file`.
    pub fn iha_key_file(&self) -> PathBuf {
        self.dir.path("iha-mn.key")
    }

    /// The key file of the MN ↔ x-HA security association (hex, mode 0600), for `key_file`.
    pub fn xha_key_file(&self) -> PathBuf {
        self.dir.path("xha-mn.key")
    }

    /// Where the daemons' pins live (one directory per daemon below it).
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Rewrites the i-HA's config (before it starts), with `ha_keys` (TOML) added to the `[ha]`
    /// table after `trusted_networks`. Trusted are the internal subnets and the VPN pools: the
    /// i-HA silently drops registrations from anywhere else, and a registration through the
    /// VPN comes from the TIA (RFC 5265 §2.3: the TIA is the i-MIP co-located care-of address).
    pub fn write_iha_config(&self, ha_keys: &str) -> Result<()> {
        self.write_ha_config(
            "iha",
            IHA_ADDR,
            &format!("trusted_networks = [\"{TRUSTED_NETWORKS}\", \"{VPN_POOLS}\"]\n{ha_keys}"),
            INTERNAL_HOME_ADDR,
            IHA_SPI,
            &self.iha_key_file(),
        )
    }

    /// Rewrites the x-HA's config (before it starts), with `ha_keys` (TOML) added to the `[ha]`
    /// table, e.g. `"internal_interfaces = [\"xha0\"]\n"`.
    pub fn write_xha_config(&self, ha_keys: &str) -> Result<()> {
        self.write_ha_config(
            "xha",
            XHA_ADDR,
            ha_keys,
            EXTERNAL_HOME_ADDR,
            XHA_SPI,
            &self.xha_key_file(),
        )
    }

    fn write_ha_config(
        &self,
        name: &str,
        address: Ipv4Addr,
        ha_keys: &str,
        home_addr: Ipv4Addr,
        spi: u32,
        key_file: &Path,
    ) -> Result<()> {
        self.dir.write(
            &format!("{name}.toml"),
            &format!(
                "role = \"ha\"\napi_socket = \"{sock}\"\n\n[ha]\naddress = \"{address}\"\n\
                 max_lifetime = 600\n{ha_keys}\n[[ha.mobile_node]]\nhome_addr = \"{home_addr}\"\n\
                 spi = {spi}\nkey_file = \"{key}\"\n\n[dataplane]\ninterfaces = [\"{name}0\"]\n\
                 home_link = \"{name}0\"\npin_dir = \"{pins}\"\n",
                sock = self.dir.path(&format!("{name}.sock")).display(),
                key = key_file.display(),
                pins = self.pin_root.join(name).display(),
            ),
            0o644,
        )?;
        Ok(())
    }

    /// Writes the MN's config: `role = "mn"`, its API socket, then `mn_toml` verbatim (the
    /// `[mn]` table and any sub-tables such as `[mn.rfc5265]`; reference the key files by
    /// [`iha_key_file`](Self::iha_key_file) and [`xha_key_file`](Self::xha_key_file)), then,
    /// with `dataplane`, a `[dataplane]` table on `mn0`.
    pub fn write_mn_config(&self, mn_toml: &str, dataplane: bool) -> Result<PathBuf> {
        let mut text = format!(
            "role = \"mn\"\napi_socket = \"{}\"\n\n{mn_toml}\n",
            self.dir.path("mn.sock").display()
        );
        if dataplane {
            text.push_str(&format!(
                "\n[dataplane]\ninterfaces = [\"mn0\"]\npin_dir = \"{}\"\n",
                self.pin_root.join("mn").display()
            ));
        }
        self.dir.write("mn.toml", &text, 0o644)
    }

    pub fn start_iha(&self) -> Result<Mipd> {
        Mipd::start_named(&self.iha, &self.dir, "iha", &self.iha_conf)
    }

    pub fn start_xha(&self) -> Result<Mipd> {
        Mipd::start_named(&self.xha, &self.dir, "xha", &self.xha_conf)
    }

    /// Writes the MN's config with `mn_toml` (see [`write_mn_config`](Self::write_mn_config))
    /// and a `[dataplane]` on `mn0`, and starts `mipd` in the MN's namespace. A later start
    /// uses the same pin directory, so it adopts the programs a previous MN daemon left.
    pub fn start_mn(&self, mn_toml: &str) -> Result<Mipd> {
        self.start_mn_with(mn_toml, true)
    }

    /// [`start_mn`](Self::start_mn), with or without the `[dataplane]` table.
    pub fn start_mn_with(&self, mn_toml: &str, dataplane: bool) -> Result<Mipd> {
        self.write_mn_config(mn_toml, dataplane)?;
        Mipd::start_named(&self.mn, &self.dir, "mn", &self.mn_conf)
    }

    /// Where the MN is attached.
    pub fn net(&self) -> Net {
        self.net
    }

    /// Moves the MN to `to`: its veth peer changes segment, `mn0` gets `to`'s address (added
    /// before the old one goes) and a default route via `to`'s router. With `link_change`,
    /// `mn0` goes down before and up after (a move the MN's link layer sees: carrier loss and
    /// the routes through `mn0` flushed); without, `mn0` stays up and only its address and
    /// route change, as DHCP would after an upstream change. Does not wait for any daemon.
    pub fn move_mn(&mut self, to: Net, link_change: bool) -> Result<()> {
        self.place_mn(to, link_change)?;
        self.net = to;
        Ok(())
    }

    /// The silent upstream change of RFC 5265 §3 at its purest: only the segment under the MN
    /// changes (its veth peer moves to `to`'s bridge); `mn0`, its address, its routes and its
    /// neighbour cache are left alone, so the MN keeps sending to its old gateway's MAC, now
    /// on another network. [`net`](Self::net) reports `to` afterwards.
    pub fn switch_upstream(&mut self, to: Net) -> Result<()> {
        self.rewire(to)?;
        self.net = to;
        Ok(())
    }

    fn rewire(&self, to: Net) -> Result<()> {
        self.acc.ip(&["link", "set", "acc-mn", "nomaster"])?;
        self.acc
            .ip(&["link", "set", "acc-mn", "master", to.bridge()])?;
        self.acc.set_up("acc-mn")
    }

    fn place_mn(&self, to: Net, link_change: bool) -> Result<()> {
        let mn = &self.mn;
        if link_change {
            mn.ip(&["link", "set", "dev", "mn0", "down"])?;
        }
        self.rewire(to)?;
        let cidr = format!("{}/24", to.mn_addr());
        if !mn
            .ip(&["-4", "addr", "show", "dev", "mn0"])?
            .contains(&cidr)
        {
            mn.add_addr("mn0", &cidr)?;
        }
        mn.set_up("mn0")?;
        mn.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &to.gateway().to_string(),
            "dev",
            "mn0",
        ])?;
        for other in Net::ALL.into_iter().filter(|n| *n != to) {
            let _ = mn.ip(&[
                "addr",
                "del",
                &format!("{}/24", other.mn_addr()),
                "dev",
                "mn0",
            ]);
        }
        Ok(())
    }

    /// Captures everything on external network 1's segment (the access bridge `br-ext1`; in
    /// promiscuous mode a Linux bridge passes up every frame it forwards between its ports, so
    /// this sees the MN's frames whichever way they go, not only those to the router).
    pub fn capture_external(&self, file: &Path) -> Result<Capture> {
        self.capture_external_with(file, "")
    }

    /// [`capture_external`](Self::capture_external) with a tcpdump filter.
    pub fn capture_external_with(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.acc, Net::Ext1.bridge(), filter, file)
    }

    /// Captures on external network 2's segment, inside the NAT (the access bridge `br-ext2`, as
    /// [`capture_external`](Self::capture_external) does for external network 1): the MN's
    /// private address, before translation.
    pub fn capture_ext2(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.acc, Net::Ext2.bridge(), filter, file)
    }

    /// Captures on the NAT router's public side (its upstream leg `nat-up`): external network
    /// 2's traffic after translation, from [`NAT_PUBLIC_ADDR`].
    pub fn capture_nat_public(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.nat, "nat-up", filter, file)
    }

    /// Captures on the VPN gateway's DMZ interface (`vgw0`): IKE and ESP-in-UDP from the MN
    /// (or its NAT), and the decrypted traffic it forwards to and from the i-HA.
    pub fn capture_vpn_gateway(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.vgw, "vgw0", filter, file)
    }

    /// Captures on the i-HA's home link, at the intranet router's port (`irt-iha`).
    pub fn capture_iha_link(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.irt, "irt-iha", filter, file)
    }

    /// Captures on the DMZ at the x-HA's port of the external router (`xrt-xha`).
    pub fn capture_xha_link(&self, file: &Path, filter: &str) -> Result<Capture> {
        Capture::start(&self.xrt, "xrt-xha", filter, file)
    }

    /// Whether `ping` from the MN (from `mn0`'s address) to `dst` gets an answer (2 echoes,
    /// 1 s to answer each).
    pub fn mn_pings(&self, dst: Ipv4Addr) -> Result<bool> {
        ping(&self.mn, dst)
    }
}

impl Drop for DetectionTopology {
    fn drop(&mut self) {
        // Before the namespaces go (fields drop after this): charon deletes its SAs and TUN.
        if let Err(err) = self.stop_vpn_gateway() {
            eprintln!("warning: stopping the VPN gateway: {err:#}");
        }
        // Pinned links outlive the namespaces' interfaces; removing the pins frees them.
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

/// The `charon { }` options of the MN's strongSwan (see
/// [`DetectionTopology::start_mn_charon`]): a mobile road warrior installs the virtual IP it
/// gets (the TIA, on kernel-libipsec's TUN device) and routes for the CHILD_SA's remote traffic
/// selectors (routing table 220, source the TIA), so an ordinary socket's traffic to the i-HA
/// takes the tunnel. IKE retransmissions are shortened for tests (see [`charon_retransmits`]).
pub fn mn_charon() -> String {
    format!(
        "    install_virtual_ip = yes\n    install_routes = yes\n{}",
        charon_retransmits()
    )
}

/// The `charon { }` options of the VPN gateway's strongSwan: the same short IKE
/// retransmissions as the MN's. What they bound on the gateway is how long a duplicate IKE_SA
/// lives after a road warrior came back with a new one (`unique = replace`): charon deletes
/// the old one with a DELETE exchange, and a road warrior that gave up on that SA before the
/// gateway finished it (its own retransmissions ran out on a slow machine) never answers.
/// Until the old SA goes, the kernel's policy to the TIA, which both CHILD_SAs share, still
/// names the old outbound SA (kernel-netlink keeps the first CHILD_SA's template among
/// equals), so with the kernel's ESP the gateway would encrypt for an SPI the road warrior no
/// longer has, for charon's default 165 s.
pub fn gateway_charon() -> String {
    charon_retransmits()
}

/// IKE retransmissions for tests: charon's default (5 tries, 4 s growing by 1.8×) takes 165 s
/// to give up on an unreachable peer; with 2 tries from 1 s growing by 1.4× it sends at 0, 1
/// and 2.4 s and gives up at 4.36 s, which also bounds how long a MOBIKE update on a dead path
/// is tried before the IKE_SA is deleted. The first timeout is scaled by `MIPX_TEST_PATIENCE`
/// like every wait of the tests: in the emulated VM an exchange that crosses two charons and
/// the kernel's ESP takes seconds, and giving up on it early leaves the gateway with an SA the
/// road warrior no longer has.
pub fn charon_retransmits() -> String {
    let timeout = crate::daemon::patience(std::time::Duration::from_secs(1)).as_secs_f64();
    format!(
        "    retransmit_tries = 2\n    retransmit_timeout = {timeout:.1}\n    retransmit_base = 1.4\n"
    )
}

/// The packet count of nftables counter `counter` in table `inet TABLE` of `ns`.
fn nft_counter(ns: &Netns, table: &str, counter: &str) -> Result<u64> {
    let text = ns.exec(&["nft", "list", "counter", "inet", table, counter])?;
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no packet count in {text}"));
        }
    }
    bail!("no packet count in {text}")
}

/// `"a.b.c.d/len"` as its network address and prefix length.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr} is not a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("{cidr}: bad address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("{cidr}: bad prefix length"))?;
    Ok((addr, len))
}

/// Whether `addr` is in the network `(net, len)`.
pub fn cidr_contains((net, len): (Ipv4Addr, u8), addr: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(net) & mask == u32::from(addr) & mask
}

/// A UDP listener in a namespace (e.g. on the i-HA's port 434 when no `mipd` runs there) that
/// answers every datagram with its own payload and records who sent it; stopped on drop.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    senders: Arc<Mutex<Vec<SocketAddrV4>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl UdpEcho {
    /// Binds `0.0.0.0:port` in `ns` and starts echoing.
    pub fn start(ns: &Netns, port: u16) -> Result<Self> {
        let name = ns.name().to_owned();
        // A socket belongs to the namespace it was created in, whichever thread uses it later;
        // a short-lived thread enters the namespace so the caller's thread never moves.
        let sock = std::thread::spawn(move || -> Result<UdpSocket> {
            let _inside = crate::netns::enter_named(&name)?;
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
                .with_context(|| format!("binding UDP port {port} in {name}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the bind thread panicked"))??;
        // Short, so the thread notices `stop` soon after the drop.
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let senders = Arc::new(Mutex::new(Vec::new()));
        let (stop2, senders2) = (Arc::clone(&stop), Arc::clone(&senders));
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut buf = [0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((n, std::net::SocketAddr::V4(from))) => {
                        if let Ok(mut s) = senders2.lock() {
                            s.push(from);
                        }
                        sock.send_to(&buf[..n], from)
                            .with_context(|| format!("echoing to {from}"))?;
                    }
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut
                            // An ICMP error for an earlier echo: not this loop's concern.
                            || e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e).context("receiving"),
                }
            }
            Ok(())
        });
        Ok(UdpEcho {
            stop,
            senders,
            thread: Some(thread),
        })
    }

    /// Where the datagrams received so far came from, in order.
    pub fn senders(&self) -> Vec<SocketAddrV4> {
        self.senders.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("warning: UDP echo: {err:#}"),
                Err(_) => eprintln!("warning: the UDP echo thread panicked"),
            }
        }
    }
}

/// A raw socket for IP protocol 4 (IP-in-IP, RFC 2003) in the calling thread's namespace: the
/// test kernels have no `ipip` link type (DESIGN.md §8), and mipd's dataplane encapsulates in
/// XDP, so tests that need tunnelled packets without a daemon send and receive them raw.
fn ipip_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a raw IP-in-IP socket");
    }
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An IPv4 packet from `src` to `dst` with IP protocol 253 (RFC 3692, for experiments) and
/// `payload`: the inner packet of a test tunnel, never delivered anywhere.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 253, 0, 0];
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends one IP-in-IP packet (outer protocol 4, payload `inner`) from `ns` to `dst`; the kernel
/// picks the outer source as for any packet on that route (through the VPN: the TIA).
pub fn send_ipip(ns: &Netns, dst: Ipv4Addr, inner: &[u8]) -> Result<()> {
    let name = ns.name().to_owned();
    let inner = inner.to_vec();
    std::thread::spawn(move || -> Result<()> {
        let _inside = crate::netns::enter_named(&name)?;
        let sock = ipip_socket()?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `sock` is open, `inner` and `addr` outlive the call and their lengths are
        // passed with them.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                inner.as_ptr().cast(),
                inner.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending IP-in-IP to {dst} in {name}"));
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the IP-in-IP sender thread panicked"))?
}

/// Records the outer source address of every IP-in-IP packet delivered to a namespace (a raw
/// socket for protocol 4: a tunnel endpoint with no daemon); stopped on drop.
pub struct IpipSink {
    stop: Arc<AtomicBool>,
    sources: Arc<Mutex<Vec<Ipv4Addr>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl IpipSink {
    /// Opens the raw socket in `ns` and starts recording.
    pub fn start(ns: &Netns) -> Result<Self> {
        let name = ns.name().to_owned();
        let sock = std::thread::spawn(move || -> Result<OwnedFd> {
            let _inside = crate::netns::enter_named(&name)?;
            ipip_socket()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the IP-in-IP socket thread panicked"))??;
        // Short, so the thread notices `stop` soon after the drop.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: `sock` is open; `timeout` outlives the call and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let (stop2, sources2) = (Arc::clone(&stop), Arc::clone(&sources));
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut buf = [0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: `sock` is open and `buf` is writable for its whole length.
                let n =
                    unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) {
                        continue;
                    }
                    return Err(e).context("receiving IP-in-IP");
                }
                // A raw IPv4 socket receives the whole packet: the outer source is at 12..16.
                if let Some(src) = buf.get(12..16).filter(|_| n >= 20)
                    && let Ok(mut s) = sources2.lock()
                {
                    s.push(Ipv4Addr::new(src[0], src[1], src[2], src[3]));
                }
            }
            Ok(())
        });
        Ok(IpipSink {
            stop,
            sources,
            thread: Some(thread),
        })
    }

    /// The outer sources of the IP-in-IP packets received so far, in order.
    pub fn sources(&self) -> Vec<Ipv4Addr> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for IpipSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("warning: IP-in-IP sink: {err:#}"),
                Err(_) => eprintln!("warning: the IP-in-IP sink thread panicked"),
            }
        }
    }
}

/// Whether `ping` in `ns` to `dst` gets at least one answer to 2 echoes (1 s each).
pub fn ping(ns: &Netns, dst: Ipv4Addr) -> Result<bool> {
    let out = ns
        .command("ping")
        .args(["-n", "-c", "2", "-i", "0.2", "-W", "1"])
        .arg(dst.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ping")?;
    Ok(out.status.success())
}

/// Sends one UDP datagram from `ns` (an ephemeral port on the outgoing interface's address) to
/// `dst` and reports what came back within `timeout`: a datagram, an ICMP port unreachable
/// (the host is reachable, nothing listens: how a probe tells "reached the i-HA, no daemon"
/// from "filtered"), or nothing.
pub fn udp_probe(ns: &Netns, dst: SocketAddrV4, timeout: Duration) -> Result<Probe> {
    let name = ns.name().to_owned();
    std::thread::spawn(move || -> Result<Probe> {
        let _inside = crate::netns::enter_named(&name)?;
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(dst)?;
        sock.set_read_timeout(Some(crate::daemon::patience(timeout)))?;
        sock.send(b"mipx detection-topology probe")?;
        let mut buf = [0u8; 1500];
        match sock.recv(&mut buf) {
            Ok(_) => Ok(Probe::Answered),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(Probe::Refused),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Ok(Probe::Silent)
            }
            Err(e) => Err(e).context("receiving the probe's answer"),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

impl DetectionTopology {
    /// The `[mn]` and `[mn.rfc5265]` text of an RFC 5265 mobile node for this topology: the
    /// internal layer with the i-HA, the external one with the x-HA, detection on `mn0`.
    pub fn rfc5265_mn_toml(&self, t_monitor_secs: u64, grace_secs: u64, period_ms: u64) -> String {
        format!(
            "{}\n[mn.rfc5265]\ninterfaces = [\"mn0\"]\nexternal_home_agent = \"{XHA_ADDR}\"\n\
             external_home_addr = \"{EXTERNAL_HOME_ADDR}\"\nexternal_spi = {XHA_SPI}\n\
             external_key_file = \"{}\"\nt_monitor_secs = {t_monitor_secs}\n\
             grace_secs = {grace_secs}\ndetection_period_ms = {period_ms}\n",
            self.plain_mn_toml(),
            self.xha_key_file().display(),
        )
    }

    /// The `[mn]` text of a plain Mobile IPv4 node registering with the i-HA (no detection, no
    /// gate), told where to register by `mipctl register`.
    pub fn plain_mn_toml(&self) -> String {
        format!(
            "[mn]\nhome_addr = \"{INTERNAL_HOME_ADDR}\"\nhome_agent = \"{IHA_ADDR}\"\n\
             spi = {IHA_SPI}\nkey_file = \"{}\"\nlifetime = 600\n",
            self.iha_key_file().display()
        )
    }
}

/// User data for the detection scenarios: `ping -D` from the MN's internal home address to the
/// correspondent inside, at a steady rate, with the Unix times of the replies as they arrive.
pub struct Pinger {
    child: std::process::Child,
    replies: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

impl Pinger {
    /// Pings every `interval` (root may go down to 10 ms).
    pub fn start(topo: &DetectionTopology, interval: Duration) -> Result<Self> {
        use std::io::BufRead as _;
        let mut child = topo
            .mn
            .command("ping")
            .args(["-D", "-n", "-W", "1", "-i"])
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg("-I")
            .arg(INTERNAL_HOME_ADDR.to_string())
            .arg(CN_ADDR.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let out = child.stdout.take().context("ping's stdout")?;
        let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&replies);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                // "[1795000000.123456] 64 bytes from 10.30.0.2: icmp_seq=1 ttl=62 time=0.3 ms"
                if line.contains("bytes from")
                    && let Some(t) = line
                        .strip_prefix('[')
                        .and_then(|l| l.split(']').next())
                        .and_then(|t| t.parse::<f64>().ok())
                    && let Ok(mut r) = sink.lock()
                {
                    r.push(t);
                }
            }
        });
        Ok(Pinger { child, replies })
    }

    /// The first reply that arrived after Unix time `t`.
    pub fn first_reply_after(&self, t: f64) -> Option<f64> {
        let r = self.replies.lock().ok()?;
        r.iter().copied().find(|&x| x > t)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Capture times (Unix seconds) of user-data packets in `file`: ICMP to or from the internal
/// home address, plain or inside IP-in-IP (tshark dissects both). On the external segment
/// every one of them is plaintext that RFC 5265 says must not be there.
pub fn user_packets(file: &Path) -> Result<Vec<f64>> {
    let out = crate::daemon::tshark(
        file,
        &[
            "-Y",
            &user_data_filter(),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ],
    )?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// tshark's display filter for user data: ICMP to or from the internal home address.
fn user_data_filter() -> String {
    format!("icmp && ip.addr == {INTERNAL_HOME_ADDR}")
}

/// When each user-data packet in `file` was sent (Unix seconds), as [`user_packets`] selects
/// them: the time Linux's ping wrote into the echo's data just before sending it (tshark's
/// `icmp.data_time`; a reply carries its request's). The gate passed a packet after that
/// moment, so a send time past a bound proves the gate let something through past it, however
/// late a busy machine delivered the packet to the capture.
pub fn user_packet_send_times(file: &Path) -> Result<Vec<f64>> {
    let out = crate::daemon::tshark(
        file,
        &[
            "-Y",
            &format!("{} && icmp.data_time_relative", user_data_filter()),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "icmp.data_time_relative",
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (at, age) = l.trim().split_once('\t')?;
            // Inside IP-in-IP both ICMP headers' fields are listed; the inner one is the last.
            let age = age.rsplit(',').next()?;
            Some(at.parse::<f64>().ok()? - age.parse::<f64>().ok()?)
        })
        .collect())
}
