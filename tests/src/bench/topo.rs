//! The end-to-end topology (BENCH-METHOD.md): namespaces gen → dut → sink over two veth pairs,
//! threaded NAPI on the DUT's ingress and the sink, the DUT's NAPI kthread pinned alone on one
//! CPU, the sink's kthread SCHED_FIFO on the other.
//!
//! ```text
//!  gen ns                dut ns                                   sink ns
//!  G 198.18.0.1 ─veth─ DI 198.18.0.2 (HA)   DO 198.18.1.1 ─veth─ S 198.18.1.2 (care-of)
//!                         10.0.0.0/8 via 198.18.1.2 dev DO  (or via vx0 for VXLAN)
//! ```
//!
//! Everything is removed when the namespaces drop (also on error).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use mipx_tests::{Netns, veth_pair};

use super::netlink::Rtnl;
use super::plan::*;

/// Interface names: short and unique per process, so the NAPI kthreads (named
/// `napi/<ifname>-<id>`, truncated to 15 characters) can be told apart from anyone else's.
#[derive(Debug, Clone)]
pub struct Names {
    pub gen_if: String,
    pub dut_in: String,
    pub dut_out: String,
    pub sink_if: String,
    pub vxlan: String,
}

impl Names {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        Names {
            gen_if: format!("bg{tag}"),
            dut_in: format!("bd{tag}i"),
            dut_out: format!("bd{tag}o"),
            sink_if: format!("bs{tag}"),
            vxlan: format!("bv{tag}"),
        }
    }
}

pub struct Topology {
    pub names: Names,
    pub gen_ns: Netns,
    pub dut_ns: Netns,
    pub sink_ns: Netns,
    pub gen_ifindex: u32,
    pub dut_in_ifindex: u32,
    pub dut_out_ifindex: u32,
    pub dut_cpu: usize,
    pub other_cpu: usize,
    /// rtnetlink in the DUT's namespace, for its interfaces' counters.
    pub dut_rtnl: Rtnl,
}

/// The DUT's route to the home addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeRoute {
    /// Straight to the sink (Linux forwarding; the XDP paths do not look at it).
    Direct,
    /// Through the VXLAN device (the Linux VXLAN baseline).
    Vxlan,
}

impl Topology {
    pub fn new(dut_cpu: usize, other_cpu: usize) -> Result<Self> {
        let names = Names::new();
        let gen_ns = Netns::new("bench-gen")?;
        let dut_ns = Netns::new("bench-dut")?;
        let sink_ns = Netns::new("bench-sink")?;
        for ns in [&gen_ns, &dut_ns, &sink_ns] {
            // No IPv6: nothing but our frames should reach the sink (router solicitations and
            // MLD reports would show up as wrong frames there).
            ns.exec(&[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        veth_pair((&gen_ns, &names.gen_if), (&dut_ns, &names.dut_in))?;
        veth_pair((&dut_ns, &names.dut_out), (&sink_ns, &names.sink_if))?;
        for (ns, ifname, mac) in [
            (&gen_ns, &names.gen_if, MAC_GEN),
            (&dut_ns, &names.dut_in, MAC_DUT_IN),
            (&dut_ns, &names.dut_out, MAC_DUT_OUT),
            (&sink_ns, &names.sink_if, MAC_SINK),
        ] {
            ns.ip(&["link", "set", "dev", ifname, "address", &mac_str(&mac)])?;
        }
        gen_ns.add_addr(&names.gen_if, &format!("{GEN_ADDR}/24"))?;
        dut_ns.add_addr(&names.dut_in, &format!("{DUT_IN_ADDR}/24"))?;
        dut_ns.add_addr(&names.dut_out, &format!("{DUT_OUT_ADDR}/24"))?;
        sink_ns.add_addr(&names.sink_if, &format!("{SINK_ADDR}/24"))?;
        dut_ns.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"])?;
        // Static neighbours: nobody answers ARP here (the sink drops everything).
        dut_ns.ip(&[
            "neigh",
            "replace",
            &SINK_ADDR.to_string(),
            "lladdr",
            &mac_str(&MAC_SINK),
            "dev",
            &names.dut_out,
            "nud",
            "permanent",
        ])?;
        dut_ns.ip(&[
            "neigh",
            "replace",
            &GEN_ADDR.to_string(),
            "lladdr",
            &mac_str(&MAC_GEN),
            "dev",
            &names.dut_in,
            "nud",
            "permanent",
        ])?;
        dut_ns.ip(&[
            "route",
            "add",
            "198.18.2.0/24",
            "via",
            &SINK_ADDR.to_string(),
            "dev",
            &names.dut_out,
        ])?;
        // The Linux VXLAN baseline: the home prefix through a VXLAN device whose only remote is
        // the care-of address (the sink), like a VXLAN overlay doing the HA's job.
        dut_ns.ip(&[
            "link",
            "add",
            &names.vxlan,
            "type",
            "vxlan",
            "id",
            &VXLAN_VNI.to_string(),
            "local",
            &DUT_OUT_ADDR.to_string(),
            "remote",
            &SINK_ADDR.to_string(),
            "dstport",
            &VXLAN_PORT.to_string(),
            "dev",
            &names.dut_out,
            "nolearning",
        ])?;
        dut_ns.add_addr(&names.vxlan, VXLAN_ADDR)?;
        dut_ns.set_up(&names.vxlan)?;
        dut_ns.ip(&[
            "neigh",
            "replace",
            &VXLAN_PEER.to_string(),
            "lladdr",
            &mac_str(&MAC_VXLAN_PEER),
            "dev",
            &names.vxlan,
            "nud",
            "permanent",
        ])?;
        let topo = Topology {
            gen_ifindex: ifindex_in(&gen_ns, &names.gen_if)?,
            dut_in_ifindex: ifindex_in(&dut_ns, &names.dut_in)?,
            dut_out_ifindex: ifindex_in(&dut_ns, &names.dut_out)?,
            dut_rtnl: Rtnl::open_in(&dut_ns)?,
            names,
            gen_ns,
            dut_ns,
            sink_ns,
            dut_cpu,
            other_cpu,
        };
        topo.set_home_route(HomeRoute::Direct)?;
        // GRO on the receiving ends keeps their NAPI instance (and so its kthread) alive whether
        // or not an XDP program is attached, and lets frames sent with XDP_TX / redirect into
        // the veth be received without one (DESIGN.md §8): the Linux baselines need it.
        topo.dut_ns
            .exec(&["ethtool", "-K", &topo.names.dut_in, "gro", "on"])?;
        topo.sink_ns
            .exec(&["ethtool", "-K", &topo.names.sink_if, "gro", "on"])?;
        for (ns, ifname) in [
            (&topo.dut_ns, &topo.names.dut_in),
            (&topo.sink_ns, &topo.names.sink_if),
        ] {
            ns.exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
            ])?;
        }
        Ok(topo)
    }

    pub fn set_home_route(&self, route: HomeRoute) -> Result<()> {
        let sink = SINK_ADDR.to_string();
        let peer = VXLAN_PEER.to_string();
        let (via, dev) = match route {
            HomeRoute::Direct => (&sink, &self.names.dut_out),
            HomeRoute::Vxlan => (&peer, &self.names.vxlan),
        };
        self.dut_ns
            .ip(&["route", "replace", HOME_PREFIX, "via", via, "dev", dev])?;
        Ok(())
    }

    /// The DUT's NAPI kthread (re-found each time: it is recreated if NAPI is).
    pub fn dut_kthread(&self) -> Result<u32> {
        napi_kthread(&self.names.dut_in)
    }

    pub fn sink_kthread(&self) -> Result<u32> {
        napi_kthread(&self.names.sink_if)
    }

    /// Pins the DUT's kthread alone on `dut_cpu`, the sink's on `other_cpu`, both SCHED_FIFO:
    /// the sink so the generator on its CPU cannot starve it, the DUT so that other tenants'
    /// work on its CPU does not decide how much of it the DUT gets (the kernel's RT throttling
    /// still leaves them 5 %).
    pub fn place_kthreads(&self) -> Result<(u32, u32)> {
        let dut = self.dut_kthread()?;
        let sink = self.sink_kthread()?;
        set_affinity(dut, self.dut_cpu)?;
        set_affinity(sink, self.other_cpu)?;
        set_fifo(dut, 50)?;
        set_fifo(sink, 50)?;
        Ok((dut, sink))
    }

    /// `ethtool -S` of an interface, by counter name.
    pub fn ethtool_stats(&self, ns: &Netns, ifname: &str) -> Result<BTreeMap<String, u64>> {
        let out = ns.exec(&["ethtool", "-S", ifname])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }
}

fn ifindex_in(ns: &Netns, ifname: &str) -> Result<u32> {
    let _in = ns.enter()?;
    mipx_control::dataplane::ifindex(ifname).with_context(|| format!("ifindex of {ifname}"))
}

/// The pid of `napi/<ifname>-<id>` (waits a little: the kthread appears asynchronously).
fn napi_kthread(ifname: &str) -> Result<u32> {
    let prefix = format!("napi/{ifname}-");
    // comm is at most 15 characters.
    let prefix: String = prefix.chars().take(15).collect();
    for _ in 0..50 {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                && comm.trim_end().starts_with(&prefix)
            {
                found.push(pid);
            }
        }
        match found.len() {
            1 => return Ok(found[0]),
            0 => std::thread::sleep(Duration::from_millis(20)),
            _ => bail!("several NAPI kthreads match {prefix}: {found:?}"),
        }
    }
    bail!("no NAPI kthread {prefix}* (threaded NAPI not enabled?)")
}

/// On-CPU time of a task, ns (`/proc/PID/schedstat`, first field).
pub fn task_runtime_ns(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("reading /proc/{pid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .context("parsing schedstat")
}

/// Busy time of each CPU from `/proc/stat`, in clock ticks (everything but idle and iowait).
pub fn cpu_busy_ticks() -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        ensure!(fields.len() >= 8, "short /proc/stat line");
        // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
        // already inside user.
        let busy: u64 = fields[..8].iter().sum::<u64>() - fields[3] - fields[4];
        out.push(busy);
    }
    Ok(out)
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub fn set_affinity(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid and CPU_SET bounds-checks `cpu`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid for `size_of` bytes; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_setaffinity(pid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning task {pid} to CPU {cpu}"));
    }
    Ok(())
}

/// Back to SCHED_OTHER for task `pid` (0: the calling thread), e.g. for a thread spawned by a
/// SCHED_FIFO one, which inherits its policy.
pub fn set_normal(pid: u32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call.
    let rc = unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_OTHER, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("making task {pid} SCHED_OTHER"));
    }
    Ok(())
}

/// Sets the nice value of one thread (`setpriority` takes a thread id on Linux).
pub fn set_nice(tid: u32, nice: i32) -> Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting nice {nice} on thread {tid}"));
    }
    Ok(())
}

/// SCHED_FIFO at `priority` for task `pid` (0: the calling thread).
pub fn set_fifo(pid: u32, priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call.
    let rc = unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("making task {pid} SCHED_FIFO"));
    }
    Ok(())
}
