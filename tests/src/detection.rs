//! The topology of RFC 5265's internal network detection (§2 figure 1, §3.1, §3.6.1, §4.3),
//! shared by the lab and the end-to-end tests: an intranet with an internal home agent (i-HA)
//! behind a firewall, a DMZ with an external home agent (x-HA), an external network, and a
//! mobile node whose one interface is moved between two internal subnets and the external
//! network (as a laptop moves between the office and a café).
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
//!                                 fw-out 172.16.2.1 (nftables)        │  acc-mn: in one of them
//!                                       │                             │      │
//!                          ns xrt xrt-fw 172.16.2.2                   │  ns mn mn0
//!                                 xrt-ext1 198.51.100.1 ──── acc-ext1 ┘
//!                                 xrt-xcn 203.0.113.1 ── xcn0 203.0.113.2 (ns xcn, "Internet")
//!                                 br-dmz 192.0.2.254 ── xrt-xha ── xha0 192.0.2.1 (ns xha)
//! ```
//!
//! **How the mobile node moves.** Its interface `mn0` is one end of a veth pair whose other end,
//! `acc-mn`, lives for good in a small *access* namespace `acc` holding one bridge per network
//! (`br-int1`, `br-int2`, `br-ext1`). Each bridge is one layer-2 segment, wired by a veth to its
//! router: the intranet router `irt` for the internal subnets, the external router `xrt` for
//! external network 1. A move re-enslaves `acc-mn` to another bridge, exactly as
//! [`crate::mobility`] does with `rt-mn`. Moving the peer itself between the router namespaces
//! (`ip link set PEER netns NS`) was rejected: moving an interface takes it down, so `mn0` would
//! always lose carrier and a *silent* upstream change (RFC 5265 §3: "a routing change upstream")
//! could not be modelled; the XDP program on the peer would also have to be re-attached.
//! Re-enslaving leaves `acc-mn` up, so the MN sees no carrier change unless the move asks for
//! one ([`DetectionTopology::move_mn`] with `link_change`).
//!
//! **The firewall** (`fw`, nftables `inet mipx_fw`, forward policy drop) lets the intranet open
//! connections anywhere (an ordinary firewall lets UDP out, §3.1, so the x-HA in the DMZ is
//! reachable from inside), lets replies and related ICMP errors back, and drops everything else
//! arriving from outside: the external network and the DMZ cannot reach the intranet, in
//! particular not the i-HA (§3.1 "MUST be configured to block traffic originating from external
//! networks going to the i-HA"). [`DetectionTopology::misconfigure_firewall`] adds the §3.6.1
//! configuration error: external → i-HA UDP 434 accepted (ICMP stays blocked, so a test can tell
//! the hole is exactly the registration port). There is no NAT: the external router routes
//! 10.0.0.0/8 to the firewall, the intranet router's default route is the firewall.
//!
//! **Addresses.** The MN's internal home address [`INTERNAL_HOME_ADDR`] (i-HA's home link) and
//! external home address [`EXTERNAL_HOME_ADDR`] (the DMZ, the x-HA's home link) are both on the
//! MN's loopback as /32 (the MN is never on either home link); on `mn0` it has the address of
//! the network it is in ([`Net::mn_addr`], a /24) and a default route via that network's router.
//!
//! **Daemons.** `mipd` runs as i-HA (trusted networks 10.20.0.0/16, the internal subnets) and as
//! x-HA (no trusted networks) with `[dataplane]` on their home links; the MN's `[mn]` table is
//! the caller's (see [`DetectionTopology::start_mn`]). The routers' ends of the HAs' and the
//! MN's links carry an XDP pass program (see [`crate::mobility`]: frames an XDP program
//! transmits into a veth need one on the receiving end). Everything (namespaces, files, bpffs
//! pins) is removed on drop.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::daemon::{Capture, Mipd, TempDir};
use crate::mobility::{BPFFS, ensure_bpffs};
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
/// The internal subnets, as the i-HA's `trusted_networks` lists them.
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

/// A network the mobile node can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Internal subnet 1 (10.20.1.0/24), behind the intranet router.
    Int1,
    /// Internal subnet 2 (10.20.2.0/24), behind the intranet router.
    Int2,
    /// External network 1 (198.51.100.0/24), behind the external router.
    Ext1,
}

impl Net {
    pub const ALL: [Net; 3] = [Net::Int1, Net::Int2, Net::Ext1];

    /// The segment's bridge in the access namespace.
    pub fn bridge(self) -> &'static str {
        match self {
            Net::Int1 => "br-int1",
            Net::Int2 => "br-int2",
            Net::Ext1 => "br-ext1",
        }
    }

    /// The router's address on this network: the MN's default gateway there.
    pub fn gateway(self) -> Ipv4Addr {
        match self {
            Net::Int1 => Ipv4Addr::new(10, 20, 1, 1),
            Net::Int2 => Ipv4Addr::new(10, 20, 2, 1),
            Net::Ext1 => Ipv4Addr::new(198, 51, 100, 1),
        }
    }

    /// The MN's (co-located care-of) address here, a /24.
    pub fn mn_addr(self) -> Ipv4Addr {
        match self {
            Net::Int1 => Ipv4Addr::new(10, 20, 1, 100),
            Net::Int2 => Ipv4Addr::new(10, 20, 2, 100),
            Net::Ext1 => Ipv4Addr::new(198, 51, 100, 100),
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
        }
    }

    /// The router-side veth of this segment (in `irt` or `xrt`) and its peer in `acc`.
    fn uplink(self) -> (&'static str, &'static str) {
        match self {
            Net::Int1 => ("irt-int1", "acc-int1"),
            Net::Int2 => ("irt-int2", "acc-int2"),
            Net::Ext1 => ("xrt-ext1", "acc-ext1"),
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
    pub dir: TempDir,
    pub iha_conf: PathBuf,
    pub xha_conf: PathBuf,
    pub mn_conf: PathBuf,
    pin_root: PathBuf,
    net: Net,
    /// XDP pass programs on the far ends of the HAs' and the MN's links.
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
            _peer_xdp: mipx_control::dataplane::Dataplane::load()?,
        };
        topo.wire()?;
        topo.firewall()?;
        topo.peer_xdp()?;
        topo.dir
            .write("iha-mn.key", &format!("{IHA_KEY_HEX}\n"), 0o600)?;
        topo.dir
            .write("xha-mn.key", &format!("{XHA_KEY_HEX}\n"), 0o600)?;
        topo.write_iha_config("")?;
        topo.write_xha_config("")?;
        Ok(topo)
    }

    fn all(&self) -> [&Netns; 9] {
        [
            &self.cn, &self.irt, &self.iha, &self.fw, &self.xrt, &self.xha, &self.xcn, &self.acc,
            &self.mn,
        ]
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
        for ns in [&self.irt, &self.fw, &self.xrt, &self.iha, &self.xha] {
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

        // The access segments: one bridge each in `acc`, wired to its router.
        for net in Net::ALL {
            let (router_end, acc_end) = net.uplink();
            let router = if net.is_internal() { irt } else { xrt };
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
    /// ICMP errors) come in. The last rule counts what outside sent and was refused.
    fn firewall(&self) -> Result<()> {
        let rules = format!(
            "table inet {FW_TABLE} {{\n\
             \tcounter {FW_DROP_COUNTER} {{ }}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tct state established,related accept\n\
             \t\tiifname \"fw-in\" accept\n\
             \t\tiifname \"fw-out\" counter name \"{FW_DROP_COUNTER}\" drop\n\
             \t}}\n\
             }}\n"
        );
        let file = self.dir.write("fw.nft", &rules, 0o644)?;
        self.fw
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
        let text = self
            .fw
            .exec(&["nft", "list", "counter", "inet", FW_TABLE, FW_DROP_COUNTER])?;
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
    /// table after `trusted_networks`.
    pub fn write_iha_config(&self, ha_keys: &str) -> Result<()> {
        self.write_ha_config(
            "iha",
            IHA_ADDR,
            &format!("trusted_networks = [\"{TRUSTED_NETWORKS}\"]\n{ha_keys}"),
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
        // Pinned links outlive the namespaces' interfaces; removing the pins frees them.
        let _ = std::fs::remove_dir_all(&self.pin_root);
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
        sock.set_read_timeout(Some(timeout))?;
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
            &format!("icmp && ip.addr == {INTERNAL_HOME_ADDR}"),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ],
    )?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}
