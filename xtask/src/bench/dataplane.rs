//! `cargo xtask bench dataplane`: what the eBPF dataplane costs per packet, against XDP and
//! Linux baselines measured in the same run (BENCH-METHOD.md).
//!
//! The measuring is done by `mipx-bench-dataplane` (tests crate: it needs the eBPF object,
//! which xtask must not depend on), built in release and run as root; it writes every
//! measurement of every round to a JSON file. This module turns that into medians (min–max) of
//! per-round figures and ratios, checks the targets, writes the BENCHMARKS.md section
//! and draws `docs/bench-dataplane.png` (python3 + matplotlib, `chart.py`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use super::{Machine, Spread, build_test_bin, thousands, update_benchmarks_md, workspace_root};
use crate::cmd;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Rounds; every case and program is measured once per round, interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each end-to-end measurement window.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// `BPF_PROG_TEST_RUN` calls per program per round (repeat = 1 each).
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
    /// Bindings in the large binding map (the destinations are spread over all of them).
    #[arg(long, default_value_t = 1_000_000)]
    bindings: u32,
    /// CPU for the DUT's NAPI kthread (and the per-program harness).
    #[arg(long, default_value_t = 0)]
    dut_cpu: usize,
    /// CPU for the generator and the sink.
    #[arg(long, default_value_t = 1)]
    other_cpu: usize,
    /// A short run to check that everything works: 2 rounds of 0.5 s windows and 20,000 calls.
    /// Implies --no-write.
    #[arg(long)]
    quick: bool,
    /// Print the results only; leave BENCHMARKS.md and the chart alone.
    #[arg(long)]
    no_write: bool,
}

/// Where the raw measurements and the chart's input go (under `target/`, not versioned).
const RAW_JSON: &str = "target/bench-dataplane.json";
const CHART_JSON: &str = "target/bench-dataplane-chart.json";
/// The chart, versioned.
const CHART_PNG: &str = "docs/bench-dataplane.png";
const CHART_SCRIPT: &str = "xtask/src/bench/chart.py";
/// Debian's python3 (python3-matplotlib); a `python3` earlier on PATH may lack matplotlib.
const PYTHON: &str = "/usr/bin/python3";

pub(crate) fn run(o: &Options) -> Result<()> {
    let (rounds, seconds, calls, warmup) = if o.quick {
        (2, 0.5, 20_000, 0.2)
    } else {
        (o.rounds, o.seconds, o.calls, 0.5)
    };
    ensure!(rounds >= 1, "--rounds must be at least 1");
    let write = !(o.quick || o.no_write);
    let machine = Machine::probe();
    let root = workspace_root();
    let exe = build_test_bin("mipx-bench-dataplane")?;
    let raw = root.join(RAW_JSON);
    let _ = std::fs::remove_file(&raw);
    cmd::run(
        cmd::privileged(&exe)
            .args(["--rounds", &rounds.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--warmup", &warmup.to_string()])
            .args(["--calls", &calls.to_string()])
            .args(["--bindings", &o.bindings.to_string()])
            .args(["--dut-cpu", &o.dut_cpu.to_string()])
            .args(["--other-cpu", &o.other_cpu.to_string()])
            .arg("--json")
            .arg(&raw)
            .env("RUST_BACKTRACE", "0")
            .current_dir(&root),
    )?;
    let text =
        std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let data: Value = serde_json::from_str(&text).context("parsing the benchmark's JSON")?;
    let results = Results::parse(&data)?;

    let mut command = "cargo xtask bench dataplane".to_owned();
    if o.quick {
        command.push_str(" --quick");
    } else {
        for (flag, value, default) in [
            ("--rounds", rounds.to_string(), "5"),
            ("--seconds", seconds.to_string(), "2"),
            ("--calls", calls.to_string(), "200000"),
            ("--bindings", o.bindings.to_string(), "1000000"),
        ] {
            if value != default {
                let _ = write!(command, " {flag} {value}");
            }
        }
    }
    let report = results.render(&machine, &command);
    println!("\n{report}");

    let chart = results.chart_data(&machine);
    let chart_json = root.join(CHART_JSON);
    std::fs::write(&chart_json, serde_json::to_string_pretty(&chart)?)?;
    if !results.problems.is_empty() {
        bail!(
            "the run FAILED its sanity checks in {} measurement(s) (BENCHMARKS.md not \
             updated):\n  {}",
            results.problems.len(),
            results.problems.join("\n  ")
        );
    }
    if write {
        let path = update_benchmarks_md(
            "Dataplane (cargo xtask bench dataplane)",
            "bench-dataplane",
            &report,
        )?;
        eprintln!("xtask: results written to {}", path.display());
        match draw_chart(&root, &chart_json, &root.join(CHART_PNG)) {
            Ok(()) => eprintln!("xtask: chart written to {CHART_PNG}"),
            Err(e) => eprintln!("xtask: warning: no chart: {e:#}"),
        }
    } else {
        eprintln!(
            "xtask: BENCHMARKS.md and {CHART_PNG} left alone; raw results in {RAW_JSON}, chart \
             input in {CHART_JSON}"
        );
    }
    Ok(())
}

fn draw_chart(root: &Path, input: &Path, output: &Path) -> Result<()> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    cmd::run(
        Command::new(PYTHON)
            .arg(root.join(CHART_SCRIPT))
            .arg(input)
            .arg(output),
    )
}

/// One end-to-end measurement.
struct E2e {
    round: u64,
    path: String,
    size: u64,
    bindings: u64,
    ns: f64,
    util: f64,
    pps: f64,
    dut_cpu_busy: f64,
}

/// One per-program measurement.
struct Prog {
    round: u64,
    name: String,
    size: u64,
    bindings: u64,
    ns: f64,
    runs: u64,
    outliers: u64,
}

struct Results {
    rounds: u64,
    seconds: f64,
    calls: u64,
    bindings: u64,
    max_bindings: u64,
    /// The far end's port of the RFC 3519 UDP tunnels.
    udp_tunnel_port: u64,
    sizes: Vec<u64>,
    dut_cpu: u64,
    other_cpu: u64,
    elapsed_s: f64,
    e2e: Vec<E2e>,
    prog: Vec<Prog>,
    problems: Vec<String>,
    /// Frame lengths the sink checked, by (path, size).
    sink_lens: Vec<(String, u64, u64)>,
}

/// Which binding map an HA row uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum B {
    None,
    One,
    Many,
}

const E2E_ROWS: [(&str, B, &str); 12] = [
    (
        "xdp_drop",
        B::None,
        "XDP_DROP (`mipx_drop`), per packet received",
    ),
    (
        "xdp_redirect",
        B::None,
        "XDP_REDIRECT to the sink, MACs rewritten",
    ),
    (
        "ha_encap",
        B::One,
        "**HA IP-in-IP encapsulation** (`ha_xdp`), 1 binding",
    ),
    (
        "ha_udp_encap",
        B::One,
        "**HA IP-in-UDP encapsulation** (RFC 3519), 1 binding",
    ),
    (
        "ha_encap",
        B::Many,
        "**HA IP-in-IP encapsulation**, {N} bindings",
    ),
    (
        "ha_udp_encap",
        B::Many,
        "**HA IP-in-UDP encapsulation**, {N} bindings",
    ),
    (
        "ha_decap",
        B::One,
        "HA IP-in-IP reverse-tunnel decapsulation, 1 binding",
    ),
    (
        "ha_udp_decap",
        B::One,
        "HA IP-in-UDP reverse-tunnel decapsulation, 1 binding",
    ),
    (
        "ha_decap",
        B::Many,
        "HA IP-in-IP reverse-tunnel decapsulation, {N} bindings",
    ),
    (
        "ha_udp_decap",
        B::Many,
        "HA IP-in-UDP reverse-tunnel decapsulation, {N} bindings",
    ),
    (
        "linux_forward",
        B::None,
        "Linux IP forwarding (no XDP, no netfilter)",
    ),
    (
        "linux_vxlan",
        B::None,
        "Linux VXLAN encapsulation + forwarding",
    ),
];

const PROG_ROWS: [(&str, B, &str); 15] = [
    ("drop", B::None, "`mipx_drop` (baseline)"),
    (
        "drop (repeat)",
        B::None,
        "`mipx_drop`, one call with repeat = N",
    ),
    (
        "pass (repeat)",
        B::None,
        "`mipx_pass`, one call with repeat = N",
    ),
    (
        "redirect",
        B::None,
        "`mipx_bench_redirect` (MAC rewrite + bpf_redirect)",
    ),
    (
        "fib_lookup",
        B::None,
        "`mipx_bench_fib` (bpf_fib_lookup only)",
    ),
    (
        "binding_lookup",
        B::One,
        "`mipx_bench_lookup` (binding lookup only), 1 binding",
    ),
    (
        "binding_lookup",
        B::Many,
        "`mipx_bench_lookup`, {N} bindings",
    ),
    (
        "ha_encap",
        B::One,
        "**`ha_xdp` IP-in-IP encapsulation**, 1 binding",
    ),
    (
        "ha_udp_encap",
        B::One,
        "**`ha_xdp` IP-in-UDP encapsulation**, 1 binding",
    ),
    (
        "ha_encap",
        B::Many,
        "`ha_xdp` IP-in-IP encapsulation, {N} bindings",
    ),
    (
        "ha_udp_encap",
        B::Many,
        "`ha_xdp` IP-in-UDP encapsulation, {N} bindings",
    ),
    (
        "ha_decap",
        B::One,
        "`ha_xdp` IP-in-IP decapsulation, 1 binding",
    ),
    (
        "ha_udp_decap",
        B::One,
        "`ha_xdp` IP-in-UDP decapsulation, 1 binding",
    ),
    (
        "ha_decap",
        B::Many,
        "`ha_xdp` IP-in-IP decapsulation, {N} bindings",
    ),
    (
        "ha_udp_decap",
        B::Many,
        "`ha_xdp` IP-in-UDP decapsulation, {N} bindings",
    ),
];

/// The IP-in-IP counterpart of an RFC 3519 UDP row (same name in both tables), which its
/// "× IP-in-IP" ratio is taken against.
fn ipip_of(path: &str) -> Option<&'static str> {
    match path {
        "ha_udp_encap" => Some("ha_encap"),
        "ha_udp_decap" => Some("ha_decap"),
        _ => None,
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}
fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

impl Results {
    fn parse(d: &Value) -> Result<Self> {
        let o = &d["options"];
        let mut problems = Vec::new();
        let mut sink_lens = Vec::new();
        let mut e2e = Vec::new();
        for r in d["e2e"].as_array().context("no e2e array")? {
            let path = r["path"].as_str().unwrap_or("?").to_owned();
            for p in r["problems"].as_array().into_iter().flatten() {
                problems.push(format!(
                    "round {} {} {} B {} bindings: {}",
                    u(r, "round"),
                    path,
                    u(r, "size"),
                    u(r, "bindings"),
                    p.as_str().unwrap_or("?")
                ));
            }
            let key = (path.clone(), u(r, "size"), u(r, "sink_expected_len"));
            if path != "xdp_drop" && !sink_lens.contains(&key) {
                sink_lens.push(key);
            }
            e2e.push(E2e {
                round: u(r, "round"),
                size: u(r, "size"),
                bindings: u(r, "bindings"),
                ns: f(r, "ns_per_packet"),
                util: f(r, "dut_util"),
                pps: f(r, "delivered_pps"),
                dut_cpu_busy: f(r, "dut_cpu_busy"),
                path,
            });
        }
        let prog = d["prog"]
            .as_array()
            .context("no prog array")?
            .iter()
            .map(|r| Prog {
                round: u(r, "round"),
                name: r["name"].as_str().unwrap_or("?").to_owned(),
                size: u(r, "size"),
                bindings: u(r, "bindings"),
                ns: f(r, "ns_per_run"),
                runs: u(r, "runs"),
                outliers: u(r, "outliers"),
            })
            .collect();
        Ok(Results {
            rounds: u(o, "rounds"),
            seconds: f(o, "seconds"),
            calls: u(o, "calls"),
            bindings: u(o, "bindings"),
            max_bindings: u(o, "max_bindings"),
            udp_tunnel_port: u(o, "udp_tunnel_port"),
            sizes: o["sizes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            dut_cpu: u(o, "dut_cpu"),
            other_cpu: u(o, "other_cpu"),
            elapsed_s: f(d, "elapsed_s"),
            e2e,
            prog,
            problems,
            sink_lens,
        })
    }

    fn bindings_of(&self, b: B) -> u64 {
        match b {
            B::None => 0,
            B::One => 1,
            B::Many => self.bindings,
        }
    }

    fn label(&self, text: &str) -> String {
        text.replace("{N}", &thousands(self.bindings as f64))
    }

    /// One end-to-end row's measurement in `round`.
    fn e2e_at(&self, path: &str, b: B, size: u64, round: u64) -> Option<&E2e> {
        let bindings = self.bindings_of(b);
        self.e2e.iter().find(|m| {
            m.path == path && m.bindings == bindings && m.size == size && m.round == round
        })
    }

    fn prog_at(&self, name: &str, b: B, size: u64, round: u64) -> Option<&Prog> {
        let bindings = self.bindings_of(b);
        self.prog.iter().find(|m| {
            m.name == name && m.bindings == bindings && m.size == size && m.round == round
        })
    }

    fn round_ids(&self) -> Vec<u64> {
        let mut r: Vec<u64> = self
            .e2e
            .iter()
            .map(|m| m.round)
            .chain(self.prog.iter().map(|m| m.round))
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// `metric` of an end-to-end row over the rounds.
    fn e2e_spread(&self, path: &str, b: B, size: u64, metric: impl Fn(&E2e) -> f64) -> Spread {
        Spread::of(
            self.round_ids()
                .into_iter()
                .filter_map(|r| self.e2e_at(path, b, size, r).map(&metric)),
        )
    }

    /// Per-round ratio `a / b` of two end-to-end rows' ns per packet.
    fn e2e_ratio(&self, a: (&str, B), b: (&str, B), size: u64) -> Spread {
        Spread::of(self.round_ids().into_iter().filter_map(|r| {
            let x = self.e2e_at(a.0, a.1, size, r)?;
            let y = self.e2e_at(b.0, b.1, size, r)?;
            Some(x.ns / y.ns)
        }))
    }

    fn prog_spread(&self, name: &str, b: B, size: u64) -> Spread {
        Spread::of(
            self.round_ids()
                .into_iter()
                .filter_map(|r| self.prog_at(name, b, size, r).map(|m| m.ns)),
        )
    }

    fn prog_ratio(&self, a: (&str, B), b: (&str, B), size: u64) -> Spread {
        Spread::of(self.round_ids().into_iter().filter_map(|r| {
            let x = self.prog_at(a.0, a.1, size, r)?;
            let y = self.prog_at(b.0, b.1, size, r)?;
            Some(x.ns / y.ns)
        }))
    }

    fn render(&self, m: &Machine, command: &str) -> String {
        let mut t = String::new();
        let ns = |x: f64| format!("{x:.0}");
        let ratio = |x: f64| format!("{x:.2}");
        let pct = |x: f64| format!("{:.0} %", x * 100.0);
        let mpps = |x: f64| format!("{:.2}", x / 1e6);
        let size_name = |s: u64| {
            if s == 60 {
                "64-byte packets (60-byte frames + FCS)".to_owned()
            } else {
                format!("{s}-byte frames")
            }
        };
        let _ = writeln!(t, "Command: `{command}` (as root)  ");
        let _ = writeln!(
            t,
            "Run: {}, commit {}, {:.0} s in all ({} rounds).  ",
            m.date, m.commit, self.elapsed_s, self.rounds
        );
        let _ = writeln!(
            t,
            "Machine: {} CPUs ({}), Linux {}, {}; veth only, other tenants present.  ",
            m.cpus, m.cpu_model, m.kernel, m.rustc
        );
        let _ = writeln!(
            t,
            "Method (BENCH-METHOD.md): namespaces gen → dut → sink over two veth pairs, threaded \
             NAPI; the DUT's NAPI kthread pinned alone on CPU {}, SCHED_FIFO; generator \
             (`mipx_bench_gen` run by BPF_PROG_TEST_RUN in live-frames mode, nice -20) and sink \
             (`mipx_bench_sink`, kthread SCHED_FIFO) on CPU {}. The generator rewrites the whole \
             header of every frame and spreads destinations over the bound home addresses \
             (1 binding: one destination; {} bindings: every home address in turn, a \
             golden-ratio stride; each binding map is a separate copy of the object, all sized \
             for {} entries). IP-in-IP (RFC 2003/3024) and RFC 3519 IP-in-UDP run on separate \
             binding maps alike but for the binding's tunnel flags: UDP tunnelling between the \
             home agent's port 434 and the sink's address, port {} (the outer source of the \
             reverse-tunnelled frames, as the care-of address is for IP-in-IP). Packet sizes \
             are those of the plain datagram's frame: IP-in-IP encapsulation adds 20 bytes, \
             IP-in-UDP 32 (outer IPv4, UDP without checksum, MIP Tunnel Data header); \
             decapsulation is fed the tunnelled frames, 20 or 32 bytes longer, and delivers the \
             plain ones. Figure: the DUT kthread's run time \
             (`/proc/PID/schedstat`) over a {} s window divided by the packets delivered at the \
             sink (XDP_DROP: by the packets the DUT received). Per program: BPF_PROG_TEST_RUN \
             with the thread pinned to CPU {} inside the DUT's namespace (FIB and neighbour \
             entries present, `ingress_ifindex` set), {} calls with repeat = 1 per program per \
             round, summing the kernel's duration (runs over 20 µs, i.e. interrupted, left out). \
             All cases and programs interleaved in every round, in a rotating order; every ratio \
             is taken within a round, then the median (min–max) over the rounds is shown.",
            self.dut_cpu,
            self.other_cpu,
            thousands(self.bindings as f64),
            thousands(self.max_bindings as f64),
            self.udp_tunnel_port,
            self.seconds,
            self.dut_cpu,
            thousands(self.calls as f64),
        );
        let _ = writeln!(t);
        let _ = writeln!(t, "### End to end: DUT CPU time per delivered packet");
        for &size in &self.sizes {
            let _ = writeln!(t);
            let _ = writeln!(t, "{}:", size_name(size));
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "| DUT path | ns / packet | × XDP_DROP | × XDP_REDIRECT | × IP-in-IP \
                 | Linux fwd ÷ path | DUT kthread busy | delivered Mpps |"
            );
            let _ = writeln!(t, "|---|--:|--:|--:|--:|--:|--:|--:|");
            for (path, b, label) in E2E_ROWS {
                let n = self.e2e_spread(path, b, size, |m| m.ns);
                if !n.median.is_finite() {
                    continue;
                }
                let drop = self.e2e_ratio((path, b), ("xdp_drop", B::None), size);
                let redirect = self.e2e_ratio((path, b), ("xdp_redirect", B::None), size);
                let ipip = ipip_of(path).map_or_else(
                    || "—".to_owned(),
                    |ipip| self.e2e_ratio((path, b), (ipip, b), size).show(ratio),
                );
                let fwd = self.e2e_ratio(("linux_forward", B::None), (path, b), size);
                let util = self.e2e_spread(path, b, size, |m| m.util);
                let pps = self.e2e_spread(path, b, size, |m| m.pps);
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    self.label(label),
                    n.show(ns),
                    drop.show(ratio),
                    redirect.show(ratio),
                    ipip,
                    fwd.show(ratio),
                    util.show(pct),
                    if path == "xdp_drop" {
                        "—".into()
                    } else {
                        pps.show(mpps)
                    },
                );
            }
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "### Per program: BPF_PROG_TEST_RUN, ns per run");
        let _ = writeln!(t);
        let mut header = "| program |".to_owned();
        let mut rule = "|---|".to_owned();
        for &size in &self.sizes {
            let _ = write!(header, " {size} B: ns / run | × drop | × IP-in-IP |");
            rule.push_str("--:|--:|--:|");
        }
        let _ = writeln!(t, "{header}\n{rule}");
        for (name, b, label) in PROG_ROWS {
            let mut row = format!("| {} |", self.label(label));
            let mut any = false;
            for &size in &self.sizes {
                let n = self.prog_spread(name, b, size);
                any |= n.median.is_finite();
                let r = self.prog_ratio((name, b), ("drop", B::None), size);
                let ipip = ipip_of(name).map_or_else(
                    || "—".to_owned(),
                    |ipip| self.prog_ratio((name, b), (ipip, b), size).show(ratio),
                );
                let _ = write!(
                    row,
                    " {} | {} | {ipip} |",
                    n.show(|x| format!("{x:.0}")),
                    r.show(ratio)
                );
            }
            if any {
                let _ = writeln!(t, "{row}");
            }
        }
        let (runs, outliers): (u64, u64) = self
            .prog
            .iter()
            .filter(|p| !p.name.contains("repeat"))
            .fold((0, 0), |(r, o), p| {
                (r + p.runs + p.outliers, o + p.outliers)
            });
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Runs left out as interrupted (over 20 µs): {} of {}.",
            thousands(outliers as f64),
            thousands(runs as f64)
        );

        let _ = writeln!(t);
        let _ = writeln!(t, "### Targets");
        let _ = writeln!(t);
        let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
        for &size in &self.sizes {
            let r = self.e2e_ratio(("ha_encap", B::One), ("xdp_redirect", B::None), size);
            let _ = writeln!(
                t,
                "- HA encapsulation ≤ 1.15 × XDP_REDIRECT ({size} B): {} × — {}.",
                r.show(ratio),
                verdict(r.median <= 1.15)
            );
        }
        for &size in &self.sizes {
            let r = self.e2e_ratio(("linux_forward", B::None), ("ha_encap", B::One), size);
            let _ = writeln!(
                t,
                "- HA encapsulation ≥ 5 × cheaper than Linux forwarding ({size} B): {} × — {}.",
                r.show(ratio),
                verdict(r.median >= 5.0)
            );
        }
        for &size in &self.sizes {
            for path in ["ha_encap", "ha_decap"] {
                let r = self.e2e_ratio((path, B::Many), (path, B::One), size);
                let _ = writeln!(
                    t,
                    "- {} bindings within 10 % of 1 binding ({}, {size} B): {} × — {}.",
                    thousands(self.bindings as f64),
                    if path == "ha_encap" {
                        "encapsulation"
                    } else {
                        "decapsulation"
                    },
                    r.show(ratio),
                    verdict(r.median <= 1.10)
                );
            }
        }
        for &size in &self.sizes {
            for (udp, ipip, what) in [
                ("ha_udp_encap", "ha_encap", "encapsulation"),
                ("ha_udp_decap", "ha_decap", "decapsulation"),
            ] {
                let r = self.e2e_ratio((udp, B::One), (ipip, B::One), size);
                let _ = writeln!(
                    t,
                    "- UDP {what} ≤ 1.1 × IP-in-IP {what} ({size} B, 1 binding): {} × — {}.",
                    r.show(ratio),
                    verdict(r.median <= 1.1)
                );
            }
        }
        if let Some(&size) = self.sizes.first() {
            let r = self.prog_ratio(("ha_encap", B::One), ("drop", B::None), size);
            let _ = writeln!(
                t,
                "- Per program, encapsulation ≤ 1.6 × drop ({size} B): {} × — {}.",
                r.show(ratio),
                verdict(r.median <= 1.6)
            );
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "### Sanity checks (every measurement)");
        let _ = writeln!(t);
        let lens: Vec<String> = self
            .sink_lens
            .iter()
            .map(|(p, s, l)| format!("{p} {s} B → {l} B"))
            .collect();
        let _ = writeln!(
            t,
            "Frame length and IP protocol of every frame at the sink ({}); no `otherhost` drops \
             at the DUT; on the HA paths every packet counted by `ha_xdp` as `ha_encap_tx`, \
             `ha_decap_tx`, `ha_udp_encap_tx` or `ha_udp_decap_tx` (per path) and no other \
             counter moved: {}.",
            lens.join(", "),
            if self.problems.is_empty() {
                "all passed".to_owned()
            } else {
                format!(
                    "**{} failures**: {}",
                    self.problems.len(),
                    self.problems.join("; ")
                )
            }
        );
        let busy = Spread::of(self.e2e.iter().map(|m| (m.dut_cpu_busy - m.util).max(0.0)));
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Other work on the DUT's CPU during the windows (CPU busy minus the kthread): {}.",
            busy.show(pct)
        );
        let _ = writeln!(t);
        let _ = writeln!(t, "![dataplane benchmark]({CHART_PNG})");
        t
    }

    fn chart_data(&self, m: &Machine) -> Value {
        let sizes: Vec<Value> = self
            .sizes
            .iter()
            .map(|&size| {
                let e2e: Vec<Value> = E2E_ROWS
                    .iter()
                    .map(|&(path, b, label)| {
                        let s = self.e2e_spread(path, b, size, |m| m.ns);
                        let r = self.e2e_ratio((path, b), ("xdp_redirect", B::None), size);
                        let ipip = ipip_of(path)
                            .map(|ipip| self.e2e_ratio((path, b), (ipip, b), size).median);
                        json!({
                            "label": self.label(label).replace("**", "").replace('`', ""),
                            "median": s.median, "min": s.min, "max": s.max,
                            "x_redirect": r.median,
                            "x_ipip": ipip,
                        })
                    })
                    .collect();
                let prog: Vec<Value> = PROG_ROWS
                    .iter()
                    .map(|&(name, b, label)| {
                        let s = self.prog_spread(name, b, size);
                        let r = self.prog_ratio((name, b), ("drop", B::None), size);
                        let ipip = ipip_of(name)
                            .map(|ipip| self.prog_ratio((name, b), (ipip, b), size).median);
                        json!({
                            "label": self.label(label).replace("**", "").replace('`', ""),
                            "median": s.median, "min": s.min, "max": s.max,
                            "x_drop": r.median,
                            "x_ipip": ipip,
                        })
                    })
                    .collect();
                json!({ "size": size, "e2e": e2e, "prog": prog })
            })
            .collect();
        json!({
            "title": format!(
                "mipx dataplane, {} rounds, {} — Linux {}, {} vCPUs",
                self.rounds, m.date, m.kernel, m.cpus
            ),
            "sizes": sizes,
        })
    }
}
