//! `mipx-bench-dataplane`: the measurements behind `cargo xtask bench dataplane`
//! (BENCH-METHOD.md). Run as root, in release; xtask turns the JSON it writes into the report.
//!
//! Every round measures, interleaved and in a rotating order:
//!
//! 1. end to end, gen → DUT → sink over veth, the DUT's CPU time per delivered packet for the
//!    HA's encapsulation and reverse-tunnel decapsulation, IP-in-IP and RFC 3519 IP-in-UDP
//!    (1 binding, N bindings with the destinations spread over them), and the baselines
//!    XDP_DROP, XDP_REDIRECT, Linux IP forwarding and Linux VXLAN, for each frame size;
//! 2. per program, ns per run with `BPF_PROG_TEST_RUN`, against the trivial drop program of the
//!    same object.
//!
//! Usage: `mipx-bench-dataplane [--rounds N] [--seconds S] [--warmup S] [--calls N]
//! [--bindings N] [--sizes 60,1400] [--dut-cpu C] [--other-cpu C] [--json FILE]
//! [--skip-e2e] [--skip-prog]`

#[path = "../bench/mod.rs"]
mod bench;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use mipx_tests::require_root;
use serde_json::{Value, json};

use bench::{dut::Objects, e2e, prog, topo::Topology};

#[derive(Debug)]
struct Options {
    rounds: usize,
    seconds: f64,
    warmup: f64,
    calls: u32,
    bindings: u32,
    sizes: Vec<u16>,
    dut_cpu: usize,
    other_cpu: usize,
    json: Option<std::path::PathBuf>,
    e2e: bool,
    prog: bool,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut o = Options {
            rounds: 5,
            seconds: 2.0,
            warmup: 0.5,
            calls: 200_000,
            bindings: 1_000_000,
            sizes: vec![60, 1400],
            dut_cpu: 0,
            other_cpu: 1,
            json: None,
            e2e: true,
            prog: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--rounds" => o.rounds = value()?.parse()?,
                "--seconds" => o.seconds = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--calls" => o.calls = value()?.parse()?,
                "--bindings" => o.bindings = value()?.parse()?,
                "--sizes" => {
                    o.sizes = value()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?
                }
                "--dut-cpu" => o.dut_cpu = value()?.parse()?,
                "--other-cpu" => o.other_cpu = value()?.parse()?,
                "--json" => o.json = Some(value()?.into()),
                "--skip-e2e" => o.e2e = false,
                "--skip-prog" => o.prog = false,
                "-h" | "--help" => {
                    println!(
                        "usage: mipx-bench-dataplane [--rounds N] [--seconds S] [--warmup S] \
                         [--calls N] [--bindings N] [--sizes 60,1400] [--dut-cpu C] \
                         [--other-cpu C] [--json FILE] [--skip-e2e] [--skip-prog]"
                    );
                    std::process::exit(0);
                }
                _ => bail!("unknown argument {arg} (try --help)"),
            }
        }
        ensure!(o.rounds >= 1, "--rounds must be at least 1");
        ensure!(o.bindings >= 2, "--bindings must be at least 2");
        ensure!(
            o.bindings <= 1 << 24,
            "--bindings must be at most 16,777,216 (10.0.0.0/8)"
        );
        ensure!(
            o.dut_cpu != o.other_cpu,
            "--dut-cpu and --other-cpu must differ"
        );
        for &s in &o.sizes {
            // 42: Ethernet + IPv4 + UDP; 1450: the largest that VXLAN keeps under MTU 1500.
            ensure!((42..=1450).contains(&s), "frame size {s} outside 42..=1450");
        }
        Ok(o)
    }
}

fn main() -> Result<()> {
    require_root();
    let o = Options::parse()?;
    bench::catch_signals();
    bench::catch_wakeup()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        o.dut_cpu < cpus && o.other_cpu < cpus,
        "needs CPUs {} and {} (this machine has {cpus})",
        o.dut_cpu,
        o.other_cpu
    );
    // Everything but the DUT's kthread (and the per-program harness) stays off the DUT's CPU.
    // SCHED_FIFO below the kthreads': this thread only wakes to set up and sample, and must
    // not wait behind the generator or other tenants for it (its `ip`/`ethtool` children
    // inherit this); the per-program harness then runs without being preempted by them.
    bench::pin_self(o.other_cpu)?;
    bench::topo::set_fifo(0, 40)?;
    let started = Instant::now();

    eprintln!("building the topology (gen → dut → sink)");
    let topo = Topology::new(o.dut_cpu, o.other_cpu)?;
    eprintln!(
        "loading the object five times, inserting {} bindings twice",
        o.bindings
    );
    let (mut objs, mut generator) = Objects::load(o.bindings, topo.dut_out_ifindex)?;
    objs.attach_sink(&topo.sink_ns, &topo.names.sink_if)?;

    let timing = e2e::Timing {
        warmup: Duration::from_secs_f64(o.warmup),
        window: Duration::from_secs_f64(o.seconds),
    };
    let cases = e2e::Case::all(&o.sizes, o.bindings);
    let items = prog::Item::all(&o.sizes, o.bindings);
    let mut e2e_records = Vec::new();
    let mut prog_records = Vec::new();

    if o.e2e {
        // One unrecorded run first: page pools, caches and the kthreads' placement settle.
        let warm = e2e::Case {
            path: e2e::Path::HaEncap,
            size: o.sizes[0],
            bindings: 1,
        };
        e2e::measure(&topo, &mut objs, &mut generator, &warm, timing, 0)?;
    }
    for round in 1..=o.rounds {
        eprintln!("round {round}/{}", o.rounds);
        if o.e2e {
            // A rotating start, so no case always runs first or right after the same one.
            let shift = (round - 1) * cases.len() / o.rounds;
            for i in 0..cases.len() {
                let case = &cases[(i + shift) % cases.len()];
                let r = e2e::measure(&topo, &mut objs, &mut generator, case, timing, round)?;
                print_e2e(case, &r);
                e2e_records.push(r);
            }
            objs.attach_dut(&topo.dut_ns, topo.dut_in_ifindex, None)?;
        }
        if o.prog {
            bench::pin_self(o.dut_cpu)?;
            let result = (|| -> Result<()> {
                let _in = topo.dut_ns.enter()?;
                topo.set_home_route(bench::topo::HomeRoute::Direct)?;
                let shift = (round - 1) * items.len() / o.rounds;
                for i in 0..items.len() {
                    let item = &items[(i + shift) % items.len()];
                    let r = prog::measure(&topo, &mut objs, item, o.calls, round)?;
                    eprintln!(
                        "  prog {:<40} {:>8.1} ns/run",
                        item.label(),
                        r["ns_per_run"].as_f64().unwrap_or(f64::NAN)
                    );
                    prog_records.push(r);
                }
                Ok(())
            })();
            bench::pin_self(o.other_cpu)?;
            result?;
        }
    }

    let report = json!({
        "options": {
            "rounds": o.rounds,
            "seconds": o.seconds,
            "warmup": o.warmup,
            "calls": o.calls,
            "bindings": o.bindings,
            "max_bindings": bench::dut::max_bindings(o.bindings),
            "udp_tunnel_port": bench::plan::UDP_TUNNEL_PEER_PORT,
            "sizes": o.sizes,
            "dut_cpu": o.dut_cpu,
            "other_cpu": o.other_cpu,
        },
        "elapsed_s": started.elapsed().as_secs_f64(),
        "e2e": e2e_records,
        "prog": prog_records,
    });
    bench::write_report(o.json.as_deref(), &report)
}

fn print_e2e(case: &e2e::Case, r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "  e2e  {:<40} {:>7.1} ns/pkt  DUT {:>3.0}%  {:>5.2} Mpps delivered{}",
        case.label(),
        f("ns_per_packet"),
        f("dut_util") * 100.0,
        f("delivered_pps") / 1e6,
        match r["problems"].as_array() {
            Some(p) if !p.is_empty() => format!("  PROBLEMS: {p:?}"),
            _ => String::new(),
        }
    );
}
