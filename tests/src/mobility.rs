//! The mobility topology shared by the lab and the end-to-end tests: a correspondent node, a
//! router, a home agent on its home link, and a mobile node whose one interface is moved
//! between the home link and two foreign networks (as a laptop moves between access points).
//!
//! ```text
//!  ns cn                ns rt (router, ip_forward)                      ns ha
//!  cn0 10.0.0.2 ─── rt-cn 10.0.0.1                                  ┌── ha0 10.1.0.2 (home agent)
//!                       br-home 10.1.0.1  (home link) ── rt-ha ─────┘
//!                       br-a    10.2.0.1  (foreign A)
//!                       br-b    10.3.0.1  (foreign B)
//!                       br-c    192.168.4.1 (foreign C, private, behind an nftables NAT)
//!                       rt-mn: enslaved to the bridge where the MN is ─── mn0 (ns mn)
//! ```
//!
//! The mobile node's home address is 10.1.0.100; its co-located care-of addresses are
//! 10.2.0.100 (A), 10.3.0.100 (B) and 192.168.4.100 (C). Foreign C is a private network: the
//! router masquerades whatever leaves it (a real nftables NAT with random ports, as a home
//! router or carrier-grade NAT does), so from C the mobile node reaches its home agent only
//! through RFC 3519 UDP tunnelling. `mipd` runs as HA and MN with `[dataplane]` tables, so
//! every data packet to or from the away MN is tunnelled by the eBPF programs.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::daemon::{Mipd, TempDir, wait_for};
use crate::{Netns, veth_pair};

pub const CN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const HA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const HOME_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
pub const SPI: u32 = 4096;
/// The key both sides share (test material only).
const KEY_HEX: &str = "5ad1c0ffee5ad1c0ffee5ad1c0ffee00";

/// Where the mobile node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Home,
    ForeignA,
    ForeignB,
    /// Foreign C, a private network behind the router's NAT.
    BehindNat,
}

/// The NAT's public address as the home agent sees it: the router's address on the home link,
/// where masqueraded traffic from foreign C leaves toward the home agent.
pub const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

impl Location {
    pub const ALL: [Location; 4] = [
        Location::Home,
        Location::ForeignA,
        Location::ForeignB,
        Location::BehindNat,
    ];

    /// The bridge in `rt` for this network.
    fn bridge(self) -> &'static str {
        match self {
            Location::Home => "br-home",
            Location::ForeignA => "br-a",
            Location::ForeignB => "br-b",
            Location::BehindNat => "br-c",
        }
    }

    /// The router's address on this network: the MN's default gateway there.
    pub fn gateway(self) -> Ipv4Addr {
        match self {
            Location::Home => Ipv4Addr::new(10, 1, 0, 1),
            Location::ForeignA => Ipv4Addr::new(10, 2, 0, 1),
            Location::ForeignB => Ipv4Addr::new(10, 3, 0, 1),
            Location::BehindNat => Ipv4Addr::new(192, 168, 4, 1),
        }
    }

    /// The MN's address here: the home address at home, else a co-located care-of address.
    pub fn mn_addr(self) -> Ipv4Addr {
        match self {
            Location::Home => HOME_ADDR,
            Location::ForeignA => Ipv4Addr::new(10, 2, 0, 100),
            Location::ForeignB => Ipv4Addr::new(10, 3, 0, 100),
            Location::BehindNat => Ipv4Addr::new(192, 168, 4, 100),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Location::Home => "home",
            Location::ForeignA => "foreign A",
            Location::ForeignB => "foreign B",
            Location::BehindNat => "foreign C (NAT)",
        }
    }
}

/// The namespaces, links and configuration files; everything is removed on drop, including
/// the bpffs pins of both daemons.
pub struct Topology {
    pub cn: Netns,
    pub rt: Netns,
    pub ha: Netns,
    pub mn: Netns,
    pub dir: TempDir,
    pub ha_conf: PathBuf,
    pub mn_conf: PathBuf,
    pin_root: PathBuf,
    location: Location,
    /// XDP pass programs on the router's ends of the HA's and MN's links (see `wire`).
    _peer_xdp: mipx_control::dataplane::Dataplane,
}

/// A bpffs for the daemons' pins outside /sys: `ip netns exec` remounts /sys in the daemon's
/// mount namespace, which hides /sys/fs/bpf; /run is shared.
pub const BPFFS: &str = "/run/mipx-test-bpffs";

/// Mounts a bpffs at `dir` unless one is there already.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    if mipx_control::dataplane::is_bpffs(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let out = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(dir)
        .output()
        .context("running mount")?;
    ensure!(
        out.status.success(),
        "mount -t bpf bpf {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    ns.exec(&["sysctl", "-qw", &format!("{key}={value}")])
        .map(|_| ())
}

impl Topology {
    /// Builds the topology with the mobile node at home, and writes the daemons' configs
    /// (`mn_lifetime` seconds requested by the MN).
    pub fn new(tag: &str, mn_lifetime: u16) -> Result<Self> {
        let cn = Netns::new(&format!("{tag}-cn"))?;
        let rt = Netns::new(&format!("{tag}-rt"))?;
        let ha = Netns::new(&format!("{tag}-ha"))?;
        let mn = Netns::new(&format!("{tag}-mn"))?;
        let dir = TempDir::new(tag)?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ensure_bpffs(Path::new(BPFFS))?;
        let pin_root = PathBuf::from(format!(
            "{BPFFS}/mipx-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let topo = Self {
            ha_conf: dir.path("ha.toml"),
            mn_conf: dir.path("mn.toml"),
            cn,
            rt,
            ha,
            mn,
            dir,
            pin_root,
            location: Location::Home,
            _peer_xdp: mipx_control::dataplane::Dataplane::load()?,
        };
        let mut topo = topo;
        topo.wire()?;
        topo.peer_xdp()?;
        topo.write_configs(mn_lifetime)?;
        Ok(topo)
    }

    /// DESIGN.md §8: frames an XDP program transmits into a veth are dropped unless the
    /// receiving end has an XDP program (or GRO; GRO alone proved unreliable here once the end
    /// is a bridge port). The HA's XDP_TX (tunnel packets, proxy ARP, ICMP errors) lands on
    /// rt-ha, so the router's ends get a pass-through XDP program, as a real NIC needs none.
    fn peer_xdp(&mut self) -> Result<()> {
        let _inside = self.rt.enter()?;
        let pass = self
            ._peer_xdp
            .xdp(mipx_control::dataplane::programs::MIPX_PASS)?;
        for ifname in ["rt-ha", "rt-mn"] {
            pass.attach(
                std::ffi::CString::new(ifname)?.as_c_str(),
                aya::programs::XdpMode::Driver,
            )
            .with_context(|| format!("attaching a pass-through XDP program to {ifname}"))?;
        }
        Ok(())
    }

    fn wire(&self) -> Result<()> {
        let (cn, rt, ha, mn) = (&self.cn, &self.rt, &self.ha, &self.mn);
        for ns in [cn, rt, ha, mn] {
            // Tunnelled packets arrive on interfaces that are not on the reverse path of their
            // inner source; strict reverse-path filtering would drop them.
            sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")?;
            sysctl(ns, "net.ipv4.conf.default.rp_filter", "0")?;
        }
        sysctl(rt, "net.ipv4.ip_forward", "1")?;
        // The home agent is a router: what XDP hands to its stack (next hop not yet resolved)
        // is forwarded by the kernel.
        sysctl(ha, "net.ipv4.ip_forward", "1")?;

        veth_pair((cn, "cn0"), (rt, "rt-cn"))?;
        // veth hands packets across namespaces with the transport checksum still to be filled
        // in (CHECKSUM_PARTIAL, as if a NIC would do it). XDP sees only bytes, so a packet it
        // forwards keeps an unfinished checksum and the receiver drops it. Real NICs deliver
        // complete checksums to XDP; here the traffic sources compute them in software.
        cn.exec(&["ethtool", "-K", "cn0", "tx", "off"])?;
        cn.add_addr("cn0", "10.0.0.2/24")?;
        rt.add_addr("rt-cn", "10.0.0.1/24")?;
        cn.ip(&["route", "add", "default", "via", "10.0.0.1"])?;

        for (bridge, cidr) in [
            ("br-home", "10.1.0.1/24"),
            ("br-a", "10.2.0.1/24"),
            ("br-b", "10.3.0.1/24"),
            ("br-c", "192.168.4.1/24"),
        ] {
            rt.ip(&["link", "add", bridge, "type", "bridge"])?;
            rt.add_addr(bridge, cidr)?;
        }
        // Foreign C's NAT: everything from 192.168.4.0/24 that leaves by another interface is
        // masqueraded, with a random port per new mapping, so a lost mapping comes back on
        // another port (RFC 3519 §4.10).
        crate::nft_masquerade(
            rt,
            &["ip", "saddr", "192.168.4.0/24", "oifname", "!=", "br-c"],
        )?;

        veth_pair((ha, "ha0"), (rt, "rt-ha"))?;
        rt.ip(&["link", "set", "rt-ha", "master", "br-home"])?;
        ha.add_addr("ha0", "10.1.0.2/24")?;
        ha.ip(&["route", "add", "default", "via", "10.1.0.1"])?;

        veth_pair((mn, "mn0"), (rt, "rt-mn"))?;
        mn.exec(&["ethtool", "-K", "mn0", "tx", "off"])?;
        // RFC 5944 §4.6: away from home the MN MUST NOT answer ARP for its home address, and
        // must not announce it: answer only for addresses on the asking interface, and source
        // ARP requests from the interface's own address.
        sysctl(mn, "net.ipv4.conf.mn0.arp_ignore", "1")?;
        sysctl(mn, "net.ipv4.conf.mn0.arp_announce", "2")?;
        self.place_mn(Location::Home)?;
        for link in ["br-home", "br-a", "br-b", "br-c"] {
            rt.set_up(link)?;
        }
        Ok(())
    }

    fn write_configs(&self, mn_lifetime: u16) -> Result<()> {
        self.configure(mn_lifetime, "", "")
    }

    /// Rewrites the daemons' configuration files (before they start), appending `ha_extra`
    /// and `mn_extra` (TOML) after the `[ha]` and `[mn]` tables' own keys, e.g.
    /// `"[ha.udp_tunnel]\nkeepalive_secs = 3\n"` or `"nat_traversal = \"force\"\n"`.
    pub fn configure(&self, mn_lifetime: u16, ha_extra: &str, mn_extra: &str) -> Result<()> {
        self.configure_with(mn_lifetime, "", ha_extra, mn_extra)
    }

    /// [`configure`](Self::configure) with `ha_keys` added to the `[ha]` table itself (before
    /// its `[[ha.mobile_node]]` entries), e.g. `"trusted_networks = [\"10.2.0.0/24\"]\n"`.
    pub fn configure_ha_keys(&self, mn_lifetime: u16, ha_keys: &str) -> Result<()> {
        self.configure_with(mn_lifetime, ha_keys, "", "")
    }

    fn configure_with(
        &self,
        mn_lifetime: u16,
        ha_keys: &str,
        ha_extra: &str,
        mn_extra: &str,
    ) -> Result<()> {
        self.dir.write("mn.key", &format!("{KEY_HEX}\n"), 0o600)?;
        self.dir.write(
            "ha.toml",
            &format!(
                "role = \"ha\"\napi_socket = \"{sock}\"\n\n[ha]\naddress = \"{HA_ADDR}\"\n\
                 max_lifetime = 600\n{ha_keys}\n[[ha.mobile_node]]\nhome_addr = \"{HOME_ADDR}\"\n\
                 spi = {SPI}\nkey_file = \"mn.key\"\n\n{ha_extra}\n[dataplane]\n\
                 interfaces = [\"ha0\"]\nhome_link = \"ha0\"\npin_dir = \"{pins}\"\n",
                sock = self.dir.path("ha.sock").display(),
                pins = self.pin_root.join("ha").display(),
            ),
            0o644,
        )?;
        self.dir.write(
            "mn.toml",
            &format!(
                "role = \"mn\"\napi_socket = \"{sock}\"\n\n[mn]\nhome_addr = \"{HOME_ADDR}\"\n\
                 home_agent = \"{HA_ADDR}\"\nspi = {SPI}\nkey_file = \"mn.key\"\n\
                 lifetime = {mn_lifetime}\nreverse_tunnel = true\n{mn_extra}\n[dataplane]\n\
                 interfaces = [\"mn0\"]\npin_dir = \"{pins}\"\n",
                sock = self.dir.path("mn.sock").display(),
                pins = self.pin_root.join("mn").display(),
            ),
            0o644,
        )?;
        Ok(())
    }

    /// Rewrites the mobile node's configuration without its `[dataplane]` table: `mipd`
    /// registers and nothing else, as for a third-party node whose tunnel is the kernel's own.
    pub fn configure_mn_without_dataplane(&self) -> Result<()> {
        let text = std::fs::read_to_string(&self.mn_conf)?;
        let control = text
            .split("\n[dataplane]")
            .next()
            .context("an empty mn.toml")?;
        self.dir.write("mn.toml", control, 0o644).map(drop)
    }

    /// Makes the NAT forget every mapping (`conntrack -F` in the router), as a NAT that
    /// reboots or times a mapping out does; the next datagram from foreign C gets a new port.
    pub fn flush_nat(&self) -> Result<()> {
        self.rt.exec(&["conntrack", "-F"]).map(|_| ())
    }

    /// Attaches the MN's interface to `to`'s link and addresses it for that network.
    /// Addresses are added before the old ones go, so the home address never disappears
    /// from the MN (its sockets stay bound to it).
    fn place_mn(&self, to: Location) -> Result<()> {
        let (rt, mn) = (&self.rt, &self.mn);
        rt.ip(&["link", "set", "rt-mn", "nomaster"])?;
        rt.ip(&["link", "set", "rt-mn", "master", to.bridge()])?;
        rt.set_up("rt-mn")?;
        let home = format!("{HOME_ADDR}/32");
        match to {
            Location::Home => {
                mn.add_addr("mn0", &format!("{HOME_ADDR}/24"))?;
                let _ = mn.ip(&["addr", "del", &home, "dev", "lo"]);
            }
            _ => {
                mn.add_addr("mn0", &format!("{}/24", to.mn_addr()))?;
                if mn.ip(&["addr", "show", "dev", "lo"])?.contains(&home) {
                    // already there
                } else {
                    mn.add_addr("lo", &home)?;
                }
            }
        }
        for other in Location::ALL {
            if other != to {
                let _ = mn.ip(&[
                    "addr",
                    "del",
                    &format!("{}/24", other.mn_addr()),
                    "dev",
                    "mn0",
                ]);
            }
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
        Ok(())
    }

    pub fn location(&self) -> Location {
        self.location
    }

    pub fn start_ha(&self) -> Result<Mipd> {
        Mipd::start_named(&self.ha, &self.dir, "ha", &self.ha_conf)
    }

    pub fn start_mn(&self) -> Result<Mipd> {
        Mipd::start_named(&self.mn, &self.dir, "mn", &self.mn_conf)
    }

    /// Moves the MN to `to` (foreign) and asks its `mipd` to register there, without waiting
    /// for any answer: for home agents that must stay silent.
    pub fn move_mn_unanswered(&mut self, to: Location, mn: &Mipd) -> Result<()> {
        ensure!(to != Location::Home, "moving home deregisters; use move_mn");
        self.place_mn(to)?;
        self.location = to;
        mn.ctl(&["register", "--care-of", &to.mn_addr().to_string()])?;
        Ok(())
    }

    /// Moves the MN to `to` and tells its `mipd` (register the new care-of address, or
    /// deregister at home); waits until the home agent's binding reflects the move and
    /// returns how long that took from the `mipctl` call.
    pub fn move_mn(&mut self, to: Location, ha: &Mipd, mn: &Mipd) -> Result<Duration> {
        self.place_mn(to)?;
        self.location = to;
        let started = Instant::now();
        match to {
            Location::Home => {
                mn.ctl(&["deregister"])?;
            }
            _ => {
                mn.ctl(&["register", "--care-of", &to.mn_addr().to_string()])?;
            }
        }
        let want = (to != Location::Home).then(|| to.mn_addr().to_string());
        wait_for(Duration::from_secs(15), "the home agent's binding", || {
            let v = ha.ctl_json(&["bindings"])?;
            let coa = v["bindings"]
                .as_array()
                .and_then(|b| b.first())
                .and_then(|b| b["care_of_addr"].as_str().map(str::to_owned));
            Ok((coa == want).then_some(()))
        })
        .with_context(|| format!("HA log:\n{}\nMN log:\n{}", ha.log_text(), mn.log_text()))?;
        let took = started.elapsed();
        // The MN side: its own registration state settles when the reply arrives.
        wait_for(Duration::from_secs(15), "the mobile node's state", || {
            let v = mn.ctl_json(&["status"])?;
            let state = v["status"]["mn"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let settled = match to {
                Location::Home => state == "idle",
                _ => state == "registered",
            };
            Ok(settled.then_some(()))
        })?;
        Ok(took)
    }

    /// Runs `ping` from the correspondent to the MN's home address.
    pub fn ping_mn(&self, count: u32) -> Result<()> {
        let out = self
            .cn
            .command("ping")
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2"])
            .arg(HOME_ADDR.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "ping {HOME_ADDR} from the correspondent failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(())
    }

    /// Runs `ping` from the MN's home address to the correspondent (reverse tunnel when away).
    pub fn ping_cn_from_home_addr(&self, count: u32) -> Result<()> {
        let out = self
            .mn
            .command("ping")
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", "-I"])
            .arg(HOME_ADDR.to_string())
            .arg(CN_ADDR.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "ping {CN_ADDR} from {HOME_ADDR} failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(())
    }

    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Pinned links outlive the namespaces' interfaces; removing the pins frees them.
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

/// A TCP stream from the correspondent to the MN's home address: the CN writes a known byte
/// pattern at a steady pace; the MN reads it back, checks every byte, and records when data
/// arrived, so the caller can measure the gap a move causes.
pub struct Stream {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(Instant, u64)>>>,
    sender: Option<JoinHandle<Result<u64>>>,
    receiver: Option<JoinHandle<Result<u64>>>,
}

/// The pattern byte at stream offset `i`: a prime period, so a lost, duplicated or reordered
/// chunk cannot line up by accident.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

impl Stream {
    /// Starts the stream (`chunk` bytes every `every`), waits until the first bytes arrive.
    pub fn start(topo: &Topology, chunk: usize, every: Duration) -> Result<Stream> {
        let port = 5001;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));

        // The listener is created in the MN's namespace by a thread that entered it.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = {
            let guard_ns = topo.mn.name().to_owned();
            let (stop, received, arrivals) = (stop.clone(), received.clone(), arrivals.clone());
            std::thread::spawn(move || -> Result<u64> {
                let _inside = crate::netns::enter_named(&guard_ns)?;
                let listener = TcpListener::bind(SocketAddrV4::new(HOME_ADDR, port))
                    .context("binding the MN's listener")?;
                let _ = ready_tx.send(());
                let (mut conn, _) = listener.accept()?;
                conn.set_read_timeout(Some(Duration::from_millis(200)))?;
                let mut buf = vec![0u8; 65_536];
                let mut offset = 0u64;
                let mut last_data = Instant::now();
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => return Ok(offset),
                        Ok(n) => {
                            for (k, b) in buf[..n].iter().enumerate() {
                                if *b != pattern(offset + k as u64) {
                                    bail!("stream corrupted at byte {}", offset + k as u64);
                                }
                            }
                            offset += n as u64;
                            last_data = Instant::now();
                            received.store(offset, Ordering::Relaxed);
                            arrivals
                                .lock()
                                .expect("arrivals")
                                .push((Instant::now(), offset));
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            // The normal end is EOF after the sender's shutdown; this only
                            // bounds a test whose sender died without closing.
                            if stop.load(Ordering::Relaxed)
                                && last_data.elapsed() > Duration::from_secs(20)
                            {
                                return Ok(offset);
                            }
                        }
                        Err(e) => return Err(e).context("reading the stream at the MN"),
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the MN's listener did not start")?;
        let sender = {
            let ns_name = topo.cn.name().to_owned();
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<u64> {
                let _inside = crate::netns::enter_named(&ns_name)?;
                let mut conn = TcpStream::connect_timeout(
                    &SocketAddrV4::new(HOME_ADDR, port).into(),
                    Duration::from_secs(5),
                )
                .context("connecting to the MN's home address")?;
                conn.set_nodelay(true)?;
                let mut offset = 0u64;
                let mut buf = vec![0u8; chunk];
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    for (k, b) in buf.iter_mut().enumerate() {
                        *b = pattern(offset + k as u64);
                    }
                    conn.write_all(&buf)
                        .context("writing the stream at the CN")?;
                    offset += chunk as u64;
                    next += every;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                conn.shutdown(std::net::Shutdown::Write)?;
                Ok(offset)
            })
        };
        let s = Stream {
            stop,
            received,
            arrivals,
            sender: Some(sender),
            receiver: Some(receiver),
        };
        wait_for(Duration::from_secs(5), "the first stream bytes", || {
            Ok((s.received() > 0).then_some(()))
        })?;
        Ok(s)
    }

    /// Bytes the MN has received and checked.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether both ends are still running (no error, no reset).
    pub fn alive(&self) -> bool {
        self.sender.as_ref().is_some_and(|h| !h.is_finished())
            && self.receiver.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until `bytes` more than now have arrived, or fails after `timeout`.
    pub fn wait_flowing(&self, timeout: Duration) -> Result<()> {
        let from = self.received();
        wait_for(timeout, "the stream to flow", || {
            ensure!(self.alive(), "the TCP stream ended");
            Ok((self.received() > from + 10_000).then_some(()))
        })
    }

    /// The longest interval without arriving data between `from` and now.
    pub fn longest_gap_since(&self, from: Instant) -> Duration {
        let arrivals = self.arrivals.lock().expect("arrivals");
        let mut last = from;
        let mut gap = Duration::ZERO;
        for &(at, _) in arrivals.iter().filter(|(at, _)| *at >= from) {
            gap = gap.max(at - last);
            last = at;
        }
        gap
    }

    /// Stops the sender, drains, and checks that the MN received exactly what was sent.
    pub fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .expect("sender")
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
        let deadline = Instant::now() + crate::daemon::patience(Duration::from_secs(15));
        while self.received() < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = self
            .receiver
            .take()
            .expect("receiver")
            .join()
            .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
        ensure!(
            got == sent,
            "the CN sent {sent} bytes, the MN received {got}"
        );
        Ok(got)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
