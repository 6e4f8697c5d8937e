//! End to end: CPU cost per delivered packet on the DUT core (BENCH-METHOD.md, measurement 2).
//!
//! The generator (`mipx_bench_gen` run by `BPF_PROG_TEST_RUN` in live-frames mode on a thread
//! pinned to the other CPU, inside the gen namespace) offers as much as it can; the DUT's NAPI
//! kthread does all of the DUT's work (XDP program, or the kernel's forwarding / VXLAN path) and
//! runs alone on its CPU; the sink counts and checks what arrives. The primary figure is the
//! DUT kthread's run time (`/proc/PID/schedstat`) divided by the packets delivered at the sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::programs::{ProgramError, TestRun as _, TestRunAttrs, TestRunOptions};
use mipx_common::{
    bench::{GenConfig, SinkConfig, SinkStats, programs as bench_programs},
    counters::Counter,
    ipv4,
};
use mipx_control::dataplane::programs;
use serde_json::{Value, json};

use super::dut::{Generator, Obj, Objects};
use super::netlink::LinkStats;
use super::plan::{self, IP_HLEN, UDP_TUNNEL_LEN, VXLAN_OVERHEAD};
use super::topo::{self, HomeRoute, Topology};

/// What the DUT does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `mipx_drop` on the DUT's ingress: the floor.
    XdpDrop,
    /// `mipx_bench_redirect`: rewrite MACs, `bpf_redirect` to the sink side.
    XdpRedirect,
    /// `ha_xdp`: IP-in-IP encapsulation toward the care-of address.
    HaEncap,
    /// `ha_xdp`: reverse-tunnel decapsulation.
    HaDecap,
    /// `ha_xdp`: RFC 3519 IP-in-UDP encapsulation toward the tunnel's far end.
    HaUdpEncap,
    /// `ha_xdp`: RFC 3519 IP-in-UDP reverse-tunnel decapsulation.
    HaUdpDecap,
    /// No XDP: the kernel forwards (ip_forward=1, no netfilter).
    LinuxForward,
    /// No XDP: the kernel routes into a VXLAN device and forwards the encapsulated packet.
    LinuxVxlan,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::XdpDrop => "xdp_drop",
            Path::XdpRedirect => "xdp_redirect",
            Path::HaEncap => "ha_encap",
            Path::HaDecap => "ha_decap",
            Path::HaUdpEncap => "ha_udp_encap",
            Path::HaUdpDecap => "ha_udp_decap",
            Path::LinuxForward => "linux_forward",
            Path::LinuxVxlan => "linux_vxlan",
        }
    }

    /// Whether the packet count is the DUT's input (nothing is delivered).
    fn drops(self) -> bool {
        self == Path::XdpDrop
    }

    /// Whether the path runs on RFC 3519 UDP-tunnelled bindings.
    fn udp(self) -> bool {
        matches!(self, Path::HaUdpEncap | Path::HaUdpDecap)
    }
}

/// One end-to-end configuration.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub path: Path,
    /// Frame length of the plain datagram (the CN's frame; for decapsulation what leaves the
    /// DUT): 60 for "64-byte" packets (64 with the FCS a wire would add).
    pub size: u16,
    /// Bindings in the map the HA program uses (HA paths only; 0 for the baselines).
    pub bindings: u32,
}

impl Case {
    /// Every case of a round, for `sizes` and the `many` binding count.
    pub fn all(sizes: &[u16], many: u32) -> Vec<Case> {
        let mut v = Vec::new();
        for &size in sizes {
            for path in [Path::XdpDrop, Path::XdpRedirect] {
                v.push(Case {
                    path,
                    size,
                    bindings: 0,
                });
            }
            for bindings in [1, many] {
                for path in [
                    Path::HaEncap,
                    Path::HaUdpEncap,
                    Path::HaDecap,
                    Path::HaUdpDecap,
                ] {
                    v.push(Case {
                        path,
                        size,
                        bindings,
                    });
                }
            }
            for path in [Path::LinuxForward, Path::LinuxVxlan] {
                v.push(Case {
                    path,
                    size,
                    bindings: 0,
                });
            }
        }
        v
    }

    fn obj(&self) -> Obj {
        Obj::of(self.bindings, self.path.udp())
    }

    fn dut_program(&self) -> Option<(Obj, &'static str)> {
        match self.path {
            Path::XdpDrop => Some((Obj::One, programs::MIPX_DROP)),
            Path::XdpRedirect => Some((Obj::One, bench_programs::REDIRECT)),
            Path::HaEncap | Path::HaDecap | Path::HaUdpEncap | Path::HaUdpDecap => {
                Some((self.obj(), programs::HA_XDP))
            }
            Path::LinuxForward | Path::LinuxVxlan => None,
        }
    }

    pub fn generator(&self) -> GenConfig {
        let count = self.bindings.max(1);
        match self.path {
            Path::HaDecap => plan::reverse_tunnelled(self.size, count),
            Path::HaUdpDecap => plan::udp_reverse_tunnelled(self.size, count),
            _ => plan::to_home_addresses(self.size, count),
        }
    }

    /// What a correct frame looks like at the sink.
    fn sink(&self) -> SinkConfig {
        let (len, protocol) = match self.path {
            Path::XdpDrop
            | Path::XdpRedirect
            | Path::LinuxForward
            | Path::HaDecap
            | Path::HaUdpDecap => (usize::from(self.size), ipv4::PROTO_UDP),
            Path::HaEncap => (usize::from(self.size) + IP_HLEN, ipv4::PROTO_IPIP),
            // 92 bytes for a 60-byte frame.
            Path::HaUdpEncap => (usize::from(self.size) + UDP_TUNNEL_LEN, ipv4::PROTO_UDP),
            Path::LinuxVxlan => (usize::from(self.size) + VXLAN_OVERHEAD, ipv4::PROTO_UDP),
        };
        SinkConfig {
            frame_len: len as u16,
            protocol,
            _pad: 0,
        }
    }

    /// The counter each packet of this case must land in, if the path runs `ha_xdp`.
    fn ha_counter(&self) -> Option<Counter> {
        match self.path {
            Path::HaEncap => Some(Counter::HaEncapTx),
            Path::HaDecap => Some(Counter::HaDecapTx),
            Path::HaUdpEncap => Some(Counter::HaUdpEncapTx),
            Path::HaUdpDecap => Some(Counter::HaUdpDecapTx),
            _ => None,
        }
    }

    pub fn label(&self) -> String {
        let b = if self.bindings > 0 {
            format!(" {} binding(s)", self.bindings)
        } else {
            String::new()
        };
        format!("{} {}B{b}", self.path.name(), self.size)
    }
}

/// Timing of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// What is sampled at the edges of the measured window: only in-process reads, so the two
/// samples are taken within microseconds of their timestamps.
struct Snapshot {
    at: Instant,
    dut_ns: u64,
    sink_kthread_ns: u64,
    gen_ns: u64,
    busy: Vec<u64>,
    sink: SinkStats,
    dut_in: LinkStats,
    counters: Vec<(Counter, u64)>,
}

fn snapshot(
    topo: &Topology,
    objs: &mut Objects,
    obj: Obj,
    tasks: (u32, u32, u32),
) -> Result<Snapshot> {
    let (dut, sink, generator) = tasks;
    let at = Instant::now();
    Ok(Snapshot {
        at,
        dut_ns: topo::task_runtime_ns(dut)?,
        sink_kthread_ns: topo::task_runtime_ns(sink)?,
        gen_ns: topo::task_runtime_ns(generator).unwrap_or(0),
        busy: topo::cpu_busy_ticks()?,
        sink: objs.sink_stats()?,
        dut_in: topo.dut_rtnl.link_stats(topo.dut_in_ifindex)?,
        counters: objs.counters(obj)?,
    })
}

/// `ethtool -S` of the three interfaces that matter (slow: read outside the window).
fn ethtool_all(topo: &Topology) -> Result<[BTreeMap<String, u64>; 3]> {
    Ok([
        topo.ethtool_stats(&topo.gen_ns, &topo.names.gen_if)?,
        topo.ethtool_stats(&topo.dut_ns, &topo.names.dut_in)?,
        topo.ethtool_stats(&topo.dut_ns, &topo.names.dut_out)?,
    ])
}

/// Non-zero differences `b - a`, by name.
fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .filter_map(|(k, v)| {
            let d = v.wrapping_sub(*a.get(k).unwrap_or(&0));
            (d != 0 && k != "peer_ifindex").then(|| (k.clone(), d))
        })
        .collect()
}

/// Sets `case` up and measures it once. Returns the JSON record.
pub fn measure(
    topo: &Topology,
    objs: &mut Objects,
    generator: &mut Generator,
    case: &Case,
    timing: Timing,
    round: usize,
) -> Result<Value> {
    super::check_interrupted()?;
    topo.set_home_route(if case.path == Path::LinuxVxlan {
        HomeRoute::Vxlan
    } else {
        HomeRoute::Direct
    })?;
    objs.attach_dut(&topo.dut_ns, topo.dut_in_ifindex, case.dut_program())?;
    let sink_cfg = case.sink();
    objs.set_sink(sink_cfg)?;
    let gen_cfg = case.generator();
    generator.configure(gen_cfg)?;
    // Placement is re-applied every time: attaching or detaching XDP could recreate NAPI.
    let (dut_pid, sink_pid) = topo.place_kthreads()?;
    let obj = case.dut_program().map_or(Obj::One, |(o, _)| o);

    // The generator: live frames, XDP_TX out of the gen interface to the DUT.
    let frame = plan::frame(&gen_cfg, 0);
    let ctx = xdp_md(frame.len() as u32, topo.gen_ifindex);
    let stop = AtomicBool::new(false);
    let gen_cpu = topo.other_cpu;
    let gen_ns = &topo.gen_ns;
    let program = generator.program()?;
    let tid = AtomicU32::new(0);
    let pthread = AtomicU64::new(0);
    let (before, after, eth_before, eth_after) = std::thread::scope(|s| -> Result<_> {
        let thread = s.spawn(|| -> Result<()> {
            // SAFETY: gettid and pthread_self have no preconditions.
            tid.store(unsafe { libc::gettid() } as u32, Ordering::Relaxed);
            pthread.store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
            super::pin_self(gen_cpu)?;
            // Not SCHED_FIFO like the thread that spawned it: that one must preempt it to stop
            // it. Ahead of other tenants' work on its CPU; the sink (SCHED_FIFO) preempts it.
            topo::set_normal(0)?;
            topo::set_nice(tid.load(Ordering::Relaxed), -20)?;
            let _in = gen_ns.enter()?;
            while !stop.load(Ordering::Relaxed) && !super::interrupted() {
                // One call runs until stopped: the kernel sets up and tears down its page pool
                // per call (with an RCU grace period), which would otherwise leave gaps. The
                // stop is a signal, on which the kernel's loop returns EINTR. Live mode reports
                // no verdict; what was sent shows in the veth's counters.
                let r = program.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    repeat: GEN_REPEAT,
                    attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
                    ..TestRunOptions::default()
                });
                match r {
                    Ok(_) => {}
                    Err(ProgramError::SyscallError(e))
                        if e.io_error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("BPF_PROG_TEST_RUN (live frames)"),
                }
            }
            Ok(())
        });
        let measured = (|| -> Result<_> {
            std::thread::sleep(timing.warmup);
            let tasks = (dut_pid, sink_pid, tid.load(Ordering::Relaxed));
            let ethtool_before = ethtool_all(topo)?;
            let before = snapshot(topo, objs, obj, tasks)?;
            std::thread::sleep(timing.window);
            let after = snapshot(topo, objs, obj, tasks)?;
            let ethtool_after = ethtool_all(topo)?;
            Ok((before, after, ethtool_before, ethtool_after))
        })();
        stop.store(true, Ordering::Relaxed);
        // Until it has seen the flag: a signal that arrives between two calls is lost.
        while !thread.is_finished() {
            let p = pthread.load(Ordering::Relaxed);
            if p != 0 {
                // SAFETY: the thread is alive (not finished, and joined only below).
                unsafe { libc::pthread_kill(p as libc::pthread_t, super::WAKEUP_SIGNAL) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("generator thread panicked")?;
        measured
    })?;

    let wall = after.at.duration_since(before.at).as_secs_f64();
    let dut_ns = after.dut_ns.saturating_sub(before.dut_ns);
    let sink_kthread_ns = after.sink_kthread_ns.saturating_sub(before.sink_kthread_ns);
    let gen_cpu_ns = after.gen_ns.saturating_sub(before.gen_ns);
    let ticks = topo::clock_ticks_per_sec();
    let busy = |cpu: usize| {
        let d = after
            .busy
            .get(cpu)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.busy.get(cpu).copied().unwrap_or(0));
        d as f64 / ticks / wall
    };
    let dut_util = dut_ns as f64 / 1e9 / wall;
    let delivered = after.sink.packets - before.sink.packets;
    let wrong_len = after.sink.wrong_len - before.sink.wrong_len;
    let wrong_proto = after.sink.wrong_proto - before.sink.wrong_proto;
    // Every frame the DUT's ingress took in (veth counts XDP-handled frames as received).
    let received = after.dut_in.rx_packets - before.dut_in.rx_packets;
    let otherhost = after.dut_in.rx_otherhost_dropped - before.dut_in.rx_otherhost_dropped;
    let ring_full = after.dut_in.rx_dropped - before.dut_in.rx_dropped;
    let [gen_if, dut_in, dut_out] = [0, 1, 2].map(|i| delta(&eth_before[i], &eth_after[i]));
    let counters: BTreeMap<String, u64> = after
        .counters
        .iter()
        .zip(&before.counters)
        .filter_map(|((c, a), (_, b))| {
            let d = a.wrapping_sub(*b);
            (d != 0).then(|| (c.name().to_owned(), d))
        })
        .collect();
    let packets = if case.path.drops() {
        received
    } else {
        delivered
    };
    if packets == 0 {
        bail!(
            "{}: nothing {} (sink {delivered}, DUT received {received}, ethtool DUT in {dut_in:?}, \
             out {dut_out:?}, gen {gen_if:?}, ha_xdp counters {counters:?})",
            case.label(),
            if case.path.drops() {
                "reached the DUT"
            } else {
                "was delivered"
            },
        );
    }
    let mut problems = Vec::new();
    if wrong_len > 0 || wrong_proto > 0 {
        problems.push(format!(
            "{wrong_len} frames of the wrong length and {wrong_proto} of the wrong protocol at \
             the sink (expected {} bytes, protocol {})",
            sink_cfg.frame_len, sink_cfg.protocol
        ));
    }
    if otherhost > 0 {
        problems.push(format!("{otherhost} otherhost drops at the DUT"));
    }
    if let Some(expected) = case.ha_counter() {
        let hit = counters.get(expected.name()).copied().unwrap_or(0);
        let other: u64 = counters
            .iter()
            .filter(|(k, _)| k.as_str() != expected.name())
            .map(|(_, v)| v)
            .sum();
        if hit == 0 || other > 0 {
            problems.push(format!(
                "ha_xdp counters: {counters:?} (expected only {})",
                expected.name()
            ));
        }
    }
    let ns_per_packet = dut_ns as f64 / packets as f64;
    Ok(json!({
        "round": round,
        "path": case.path.name(),
        "size": case.size,
        "bindings": case.bindings,
        "wall_s": wall,
        "dut_ns": dut_ns,
        "dut_util": dut_util,
        "dut_cpu_busy": busy(topo.dut_cpu),
        "other_cpu_busy": busy(topo.other_cpu),
        "sink_kthread_util": sink_kthread_ns as f64 / 1e9 / wall,
        "generator_util": gen_cpu_ns as f64 / 1e9 / wall,
        "delivered": delivered,
        "received": received,
        "packets": packets,
        "ns_per_packet": ns_per_packet,
        "delivered_pps": delivered as f64 / wall,
        "sink_expected_len": sink_cfg.frame_len,
        "sink_wrong_len": wrong_len,
        "sink_wrong_proto": wrong_proto,
        "otherhost": otherhost,
        "dut_ring_full_drops": ring_full,
        "ha_counters": counters,
        // Over a slightly longer interval than the window (read outside it), for diagnosis.
        "ethtool_gen": gen_if,
        "ethtool_dut_in": dut_in,
        "ethtool_dut_out": dut_out,
        "problems": problems,
    }))
}

/// Frames per generator call: more than a measurement needs (it is stopped by a signal), and
/// per batch (the kernel's default).
const GEN_REPEAT: u32 = 1 << 30;
const GEN_BATCH: u32 = 64;

/// `struct xdp_md` for a test run: data 0, data_end `len`, ingress `ifindex`, queue 0.
pub fn xdp_md(len: u32, ifindex: u32) -> Vec<u8> {
    [0u32, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|f| f.to_ne_bytes())
        .collect()
}
