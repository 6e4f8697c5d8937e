//! `mipx-bench-fa`: the foreign agent's XDP fast path, ns per program run with
//! `BPF_PROG_TEST_RUN`, against `mipx_drop` on frames of the same size, measured in the same
//! rounds (`cargo xtask bench fa` runs it as root and writes BENCHMARKS.md).
//!
//! The world is the fixture table's (`mipx_tests::bpf_fixture_env`: namespaces, interfaces,
//! routes, permanent neighbour entries, and the foreign agent's maps as `Setup::Fa` leaves
//! them), the frames are the fixtures' (`common/fixtures/dataplane/*.in.bin`). Per round, in a
//! rotating order, every case is measured the way `tests/src/bench/prog.rs` measures `ha_xdp`:
//! `calls` calls with `repeat = 1`, the kernel's reported durations summed, runs over 20 µs
//! (interrupted) left out. The thread runs pinned to one CPU, SCHED_FIFO, inside the foreign
//! agent's namespace, the context's `ingress_ifindex` the interface the fixture arrives on.
//!
//! Every round, each case's first run must give the fixture's verdict and exactly its expected
//! frame (`<frame>.out.bin`, or the input untouched); every later run the same verdict and
//! length; and over the case's runs only its counter may move, once per run. Anything else
//! aborts the run: the benchmark never times a path other than the one it names.
//!
//! Usage: `mipx-bench-fa [--rounds N] [--calls N] [--cpu C] [--json FILE]`

#[path = "../bench/mod.rs"]
#[expect(
    dead_code,
    reason = "shared with mipx-bench-dataplane; only the pinning, signal and context helpers \
              are used here"
)]
mod bench;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions};
use mipx_common::counters::Counter;
use mipx_control::dataplane::{
    Dataplane,
    programs::{FA_XDP, MIPX_DROP},
};
use mipx_tests::{
    bpf::xdp_action::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    bpf_fixture_env::{
        FA_LINK, FA_UP, IP_ID, Setup, Topology, apply, counters, preset_ip_id, read_frame,
    },
    require_root,
};
use serde_json::{Value, json};

/// Runs longer than this are left out of the sum, as in `bench::prog` (an interrupt, or a
/// switch to another task between the program's end and the kernel's clock read).
const OUTLIER_NS: u128 = 20_000;

/// One `fa_xdp` path: a fixture frame, where it arrives, and what must come of it.
struct Path {
    /// Key in the JSON (xtask's report refers to these).
    key: &'static str,
    /// Fixture stem under `common/fixtures/dataplane/`.
    frame: &'static str,
    ingress: &'static str,
    verdict: u32,
    /// The one counter that moves, once per run.
    counter: Counter,
    /// For an RFC 3519 path, the key of its IP-in-IP counterpart.
    ipip: Option<&'static str>,
}

/// The paths, as in the fixture table (tests/tests/bpf_fixtures.rs).
const PATHS: [Path; 5] = [
    // RFC 2003: the home agent's tunnel to the care-of address, delivered to the visitor.
    Path {
        key: "decap",
        frame: "fa_decap_redirect",
        ingress: FA_UP,
        verdict: XDP_REDIRECT,
        counter: Counter::FaDecapTx,
        ipip: None,
    },
    // RFC 3519 §4.3: the same in IP-in-UDP.
    Path {
        key: "udp_decap",
        frame: "fa_udp_decap_redirect",
        ingress: FA_UP,
        verdict: XDP_REDIRECT,
        counter: Counter::FaUdpDecapTx,
        ipip: Some("decap"),
    },
    // RFC 3024 §5.1: a visitor's packet reverse-tunnelled to its home agent.
    Path {
        key: "encap",
        frame: "fa_encap_redirect",
        ingress: FA_LINK,
        verdict: XDP_REDIRECT,
        counter: Counter::FaEncapTx,
        ipip: None,
    },
    // RFC 3519 §4.2: the same in IP-in-UDP.
    Path {
        key: "udp_encap",
        frame: "fa_udp_encap_redirect",
        ingress: FA_LINK,
        verdict: XDP_REDIRECT,
        counter: Counter::FaUdpEncapTx,
        ipip: Some("encap"),
    },
    // A visitor without reverse tunnelling: passed to the kernel untouched (triangle routing).
    Path {
        key: "triangle",
        frame: "fa_no_reverse_passes",
        ingress: FA_LINK,
        verdict: XDP_PASS,
        counter: Counter::FaTriangle,
        ipip: None,
    },
];

/// One measured case: a program on a frame.
struct Case {
    key: String,
    program: &'static str,
    frame: &'static str,
    ingress: &'static str,
    ingress_ifindex: u32,
    input: Vec<u8>,
    /// The frame the first run of each round must leave.
    expected: Vec<u8>,
    verdict: u32,
    /// `None`: no counter may move (the baseline).
    counter: Option<Counter>,
    /// Key of the `mipx_drop` case on a frame of the same size (itself for a baseline).
    drop: String,
    ipip: Option<&'static str>,
}

impl Case {
    fn describe(&self) -> Value {
        json!({
            "key": self.key,
            "program": self.program,
            "frame": self.frame,
            "ingress": self.ingress,
            "size": self.input.len(),
            "out_len": self.expected.len(),
            "verdict": xdp_action::name(self.verdict),
            "counter": self.counter.map(|c| c.name()),
            "drop": self.drop,
            "ipip": self.ipip,
        })
    }
}

/// The `fa_xdp` cases, then one `mipx_drop` case per input size, on the first frame of that
/// size (`mipx_drop` reads nothing, so only the size matters).
fn cases(topology: &Topology) -> Result<Vec<Case>> {
    let mut fa = Vec::new();
    let mut drops: BTreeMap<usize, Case> = BTreeMap::new();
    for p in &PATHS {
        let input = read_frame(p.frame, "in")?
            .with_context(|| format!("no {}.in.bin: rerun gen_dataplane.py", p.frame))?;
        // No `.out.bin`: the fixture leaves the frame untouched.
        let expected = read_frame(p.frame, "out")?.unwrap_or_else(|| input.clone());
        let ingress_ifindex = topology.ifindex[p.ingress];
        let drop = format!("drop_{}", input.len());
        drops.entry(input.len()).or_insert_with(|| Case {
            key: drop.clone(),
            program: MIPX_DROP,
            frame: p.frame,
            ingress: p.ingress,
            ingress_ifindex,
            input: input.clone(),
            expected: input.clone(),
            verdict: XDP_DROP,
            counter: None,
            drop: drop.clone(),
            ipip: None,
        });
        fa.push(Case {
            key: p.key.to_owned(),
            program: FA_XDP,
            frame: p.frame,
            ingress: p.ingress,
            ingress_ifindex,
            input,
            expected,
            verdict: p.verdict,
            counter: Some(p.counter),
            drop,
            ipip: p.ipip,
        });
    }
    let mut all: Vec<Case> = drops.into_values().collect();
    all.extend(fa);
    Ok(all)
}

/// Where two frames first differ, for the error message.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{} bytes out, {} expected, first difference at byte {at}",
        got.len(),
        want.len()
    )
}

/// Measures `case` with `calls` runs (plus the checked first one). Call pinned, inside the
/// foreign agent's namespace.
fn measure(dataplane: &mut Dataplane, case: &Case, calls: u32, round: usize) -> Result<Value> {
    bench::check_interrupted()?;
    // The encapsulations draw the outer Identification from a per-CPU counter; the expected
    // frames were generated with IP_ID.
    preset_ip_id(dataplane, IP_ID)?;
    let before = counters(dataplane);
    let program = dataplane.xdp(case.program)?;
    let len = u32::try_from(case.input.len())?;
    let ctx = bench::e2e::xdp_md(len, case.ingress_ifindex);
    let mut out = vec![0u8; case.input.len() + 256];
    let label = format!("{} on {}", case.program, case.frame);

    let run = |out: &mut [u8]| {
        program
            .test_run(TestRunOptions {
                data_in: Some(&case.input),
                data_out: Some(out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN {label}"))
    };
    let first = run(&mut out)?;
    let out_len = first.data_size_out as usize;
    ensure!(
        first.return_value == case.verdict,
        "{label}: verdict {} ({}), the fixture's is {}",
        xdp_action::name(first.return_value),
        first.return_value,
        xdp_action::name(case.verdict)
    );
    ensure!(
        out.get(..out_len) == Some(&case.expected[..]),
        "{label}: output is not the fixture's: {}",
        first_difference(&out[..out_len.min(out.len())], &case.expected)
    );

    let mut total = 0u128;
    let mut kept = 0u32;
    for call in 0..calls {
        if call % 65_536 == 0 {
            bench::check_interrupted()?;
        }
        let r = run(&mut out)?;
        if r.return_value != first.return_value || r.data_size_out != first.data_size_out {
            bail!(
                "{label}: run {call} returned {} with {} bytes, the first {} with {out_len}",
                r.return_value,
                r.data_size_out,
                first.return_value
            );
        }
        let ns = r.duration.as_nanos();
        if ns <= OUTLIER_NS {
            total += ns;
            kept += 1;
        }
    }
    ensure!(kept > 0, "{label}: every run was an outlier");

    let after = counters(dataplane);
    let runs = u64::from(calls) + 1;
    for counter in Counter::ALL {
        let moved = after[counter] - before[counter];
        let want = if case.counter == Some(*counter) {
            runs
        } else {
            0
        };
        ensure!(
            moved == want,
            "{label}: counter {} moved by {moved} over {runs} runs, expected {want}",
            counter.name()
        );
    }
    Ok(json!({
        "round": round,
        "case": case.key,
        "runs": kept,
        "outliers": calls - kept,
        "ns_per_run": total as f64 / f64::from(kept),
        "verdict": first.return_value,
        "out_len": out_len,
    }))
}

struct Options {
    rounds: usize,
    calls: u32,
    cpu: usize,
    json: Option<std::path::PathBuf>,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut o = Options {
            rounds: 5,
            calls: 200_000,
            cpu: 0,
            json: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--rounds" => o.rounds = value()?.parse()?,
                "--calls" => o.calls = value()?.parse()?,
                "--cpu" => o.cpu = value()?.parse()?,
                "--json" => o.json = Some(value()?.into()),
                "-h" | "--help" => {
                    println!(
                        "usage: mipx-bench-fa [--rounds N] [--calls N] [--cpu C] [--json FILE]"
                    );
                    std::process::exit(0);
                }
                _ => bail!("unknown argument {arg} (try --help)"),
            }
        }
        ensure!(o.rounds >= 1, "--rounds must be at least 1");
        ensure!(o.calls >= 1, "--calls must be at least 1");
        Ok(o)
    }
}

fn main() -> Result<()> {
    require_root();
    let o = Options::parse()?;
    bench::catch_signals();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        o.cpu < cpus,
        "needs CPU {} (this machine has {cpus})",
        o.cpu
    );
    let started = Instant::now();

    eprintln!("building the fixture namespaces, loading the object");
    let topology = Topology::new().context("building the fixture namespaces")?;
    let mut dataplane = Dataplane::load().context("loading the embedded eBPF object")?;
    apply(&mut dataplane, &topology, Setup::Fa)?;
    let cases = cases(&topology)?;

    // Pinned and SCHED_FIFO from here on, as the per-program part of `mipx-bench-dataplane`:
    // other tenants' tasks do not preempt the loop between runs.
    bench::pin_self(o.cpu)?;
    bench::topo::set_fifo(0, 40)?;
    let records = (|| -> Result<Vec<Value>> {
        let _inside = topology.fa.enter()?;
        let mut records = Vec::new();
        for round in 1..=o.rounds {
            eprintln!("round {round}/{}", o.rounds);
            // A rotating start, so no case always runs first or right after the same one.
            let shift = (round - 1) * cases.len() / o.rounds;
            for i in 0..cases.len() {
                let case = &cases[(i + shift) % cases.len()];
                let r = measure(&mut dataplane, case, o.calls, round)?;
                eprintln!(
                    "  {:<9} {:<10} {:<24} {:>7.1} ns/run",
                    case.key,
                    case.program,
                    case.frame,
                    r["ns_per_run"].as_f64().unwrap_or(f64::NAN)
                );
                records.push(r);
            }
        }
        Ok(records)
    })();
    // Back to normal scheduling before the namespaces are torn down (`ip` children).
    bench::topo::set_normal(0)?;
    let records = records?;

    let report = json!({
        "options": {
            "rounds": o.rounds,
            "calls": o.calls,
            "cpu": o.cpu,
            "outlier_ns": OUTLIER_NS as u64,
        },
        "elapsed_s": started.elapsed().as_secs_f64(),
        "cases": cases.iter().map(Case::describe).collect::<Vec<_>>(),
        "records": records,
    });
    bench::write_report(o.json.as_deref(), &report)
}
