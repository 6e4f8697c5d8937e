//! `cargo xtask bench fa`: what the foreign agent's XDP fast path (`fa_xdp`) costs per packet,
//! ns per program run with `BPF_PROG_TEST_RUN`, against `mipx_drop` on frames of the same size
//! and, for RFC 3519 IP-in-UDP, against the IP-in-IP path it mirrors, all measured in the same
//! rounds (BENCH-METHOD.md, measurement 1).
//!
//! The measuring is done by `mipx-bench-fa` (tests crate: it needs the eBPF object and the
//! fixture table's namespaces), built in release and run as root; it writes every measurement
//! of every round to a JSON file. This module turns that into medians (min–max) of per-round
//! figures and ratios and writes the BENCHMARKS.md section.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::{
    Machine, Spread, build_test_bin, target_dir, thousands, update_benchmarks_md, workspace_root,
};
use crate::cmd;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Rounds; every case is measured once per round, interleaved, in a rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `BPF_PROG_TEST_RUN` calls per case per round (repeat = 1 each).
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
    /// CPU the measuring thread is pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Print the results only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
}

/// Where the raw measurements go, in the target directory (not versioned).
const RAW_JSON: &str = "bench-fa.json";

/// The `fa_xdp` paths in report order: key in the JSON, what it is.
const PATHS: [(&str, &str); 5] = [
    (
        "decap",
        "**IP-in-IP decapsulation → redirect** to the visitor, RFC 2003",
    ),
    (
        "udp_decap",
        "**IP-in-UDP decapsulation → redirect** to the visitor, RFC 3519 §4.3",
    ),
    (
        "encap",
        "**IP-in-IP reverse tunnel → redirect** to the home agent, RFC 3024",
    ),
    (
        "udp_encap",
        "**IP-in-UDP reverse tunnel → redirect** to the home agent, RFC 3519 §4.2",
    ),
    (
        "triangle",
        "visitor without reverse tunnelling, passed (triangle routing)",
    ),
];

pub(crate) fn run(o: &Options) -> Result<()> {
    ensure!(o.rounds >= 1, "--rounds must be at least 1");
    let machine = Machine::probe();
    let root = workspace_root();
    let exe = build_test_bin("mipx-bench-fa")?;
    let raw = target_dir().join(RAW_JSON);
    let _ = std::fs::remove_file(&raw);
    let started = std::time::Instant::now();
    cmd::run(
        cmd::privileged(&exe)
            .args(["--rounds", &o.rounds.to_string()])
            .args(["--calls", &o.calls.to_string()])
            .args(["--cpu", &o.cpu.to_string()])
            .arg("--json")
            .arg(&raw)
            .env("RUST_BACKTRACE", "0")
            .current_dir(&root),
    )?;
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?,
    )
    .context("parsing the benchmark's JSON")?;

    let mut command = "cargo xtask bench fa".to_owned();
    for (flag, value, default) in [
        ("--rounds", o.rounds.to_string(), "5"),
        ("--calls", o.calls.to_string(), "200000"),
        ("--cpu", o.cpu.to_string(), "0"),
    ] {
        if value != default {
            let _ = write!(command, " {flag} {value}");
        }
    }
    let body = render(&data, &machine, &command, o, started.elapsed().as_secs())?;
    println!("\n{body}");
    if o.no_write {
        eprintln!(
            "xtask: BENCHMARKS.md left alone; raw results in {}",
            raw.display()
        );
    } else {
        let path = update_benchmarks_md(
            "Foreign agent fast path (cargo xtask bench fa)",
            "bench-fa",
            &body,
        )?;
        eprintln!("xtask: results written to {}", path.display());
    }
    Ok(())
}

fn render(data: &Value, m: &Machine, command: &str, o: &Options, secs: u64) -> Result<String> {
    let cases = data["cases"].as_array().context("no cases")?;
    let records = data["records"].as_array().context("no records")?;
    let case = |key: &str| cases.iter().find(|c| c["key"] == key);
    let rounds: Vec<u64> = {
        let mut r: Vec<u64> = records.iter().filter_map(|r| r["round"].as_u64()).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    // ns per run of `key` in `round`.
    let ns = |key: &str, round: u64| {
        records
            .iter()
            .find(|r| r["case"] == key && r["round"] == round)
            .and_then(|r| r["ns_per_run"].as_f64())
    };
    let spread_ns = |key: &str| Spread::of(rounds.iter().filter_map(|&r| ns(key, r)));
    // `key` ÷ `base`, per round.
    let ratio = |key: &str, base: &str| {
        Spread::of(
            rounds
                .iter()
                .filter_map(|&r| Some(ns(key, r)? / ns(base, r)?)),
        )
    };
    let ns_fmt = |x: f64| format!("{x:.0}");
    let x_fmt = |x: f64| format!("{x:.2}");
    let str_of = |c: &Value, field: &str| c[field].as_str().unwrap_or("?").to_owned();

    let mut out = String::new();
    writeln!(
        out,
        "Command: `{command}` (as root)  \nRun: {}, commit {}, {secs} s in all ({} round{} of {} calls per case).  \nMachine: {} CPUs ({}), Linux {}, {}; veth only, other tenants present.  ",
        m.date,
        m.commit,
        o.rounds,
        if o.rounds == 1 { "" } else { "s" },
        thousands(f64::from(o.calls)),
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.rustc
    )?;
    writeln!(
        out,
        "Method (BENCH-METHOD.md, measurement 1; as the per-program part of `cargo xtask bench dataplane`): `BPF_PROG_TEST_RUN` of `fa_xdp` in the fixture table's world (tests/src/bpf_fixture_env.rs: the foreign agent's namespace, fa-up holding the care-of addresses with the routes to the home agents via a router with a permanent neighbour entry, fa-link the visitors' link; the maps as `Setup::Fa` leaves them: enabled, 12 visitors, 2 care-of addresses, both interfaces), on the fixtures' own frames (`common/fixtures/dataplane/*.in.bin`, scapy), `ingress_ifindex` the interface each arrives on (fa-up for the home agent's tunnels, fa-link for the visitors' packets). The thread is pinned to CPU {}, SCHED_FIFO, inside that namespace. Each case: {} calls with repeat = 1 per round, summing the kernel's reported duration, runs over 20 µs (interrupted) left out. Baseline: `mipx_drop` on a frame of the same size, one per input size. All cases interleaved in every round, in a rotating order; every ratio is taken within a round (× `mipx_drop`: against the drop on the same frame size; × IP-in-IP: the RFC 3519 path against its IP-in-IP counterpart), then the median (min–max) over the rounds is shown. The reverse tunnels take the route to the home agent from `fa_xdp`'s next-hop cache, filled by the first run as in steady state; the decapsulations redirect to the visitor entry's interface with no FIB lookup.\n",
        o.cpu,
        thousands(f64::from(o.calls)),
    )?;
    writeln!(
        out,
        "| path | fixture frame, bytes in → out | verdict | ns / run | × `mipx_drop` | × IP-in-IP |"
    )?;
    writeln!(out, "|---|---|---|--:|--:|--:|")?;
    let drops: Vec<&Value> = cases
        .iter()
        .filter(|c| c["program"] == "mipx_drop")
        .collect();
    for c in &drops {
        let key = str_of(c, "key");
        writeln!(
            out,
            "| `mipx_drop` (baseline), {} B | `{}`, {} → {} | {} | {} | {} | — |",
            c["size"],
            str_of(c, "frame"),
            c["size"],
            c["out_len"],
            str_of(c, "verdict"),
            spread_ns(&key).show(ns_fmt),
            ratio(&key, &key).show(x_fmt),
        )?;
    }
    for (key, what) in PATHS {
        let c = case(key).with_context(|| format!("no case {key} in the JSON"))?;
        let drop = str_of(c, "drop");
        let ipip = c["ipip"]
            .as_str()
            .map_or_else(|| "—".to_owned(), |base| ratio(key, base).show(x_fmt));
        writeln!(
            out,
            "| {what} | `{}`, {} → {} | {} | {} | {} | {ipip} |",
            str_of(c, "frame"),
            c["size"],
            c["out_len"],
            str_of(c, "verdict"),
            spread_ns(key).show(ns_fmt),
            ratio(key, &drop).show(x_fmt),
        )?;
    }

    // Per round, ns per run of every case, so a disturbed round shows.
    let keys: Vec<String> = drops
        .iter()
        .map(|c| str_of(c, "key"))
        .chain(PATHS.iter().map(|(k, _)| (*k).to_owned()))
        .collect();
    let heading = |k: &str| {
        k.strip_prefix("drop_")
            .map_or_else(|| k.replace('_', " "), |size| format!("drop {size} B"))
    };
    writeln!(out, "\nPer round, ns / run:\n")?;
    writeln!(
        out,
        "| round | {} | runs left out |",
        keys.iter()
            .map(|k| heading(k))
            .collect::<Vec<_>>()
            .join(" | ")
    )?;
    writeln!(out, "|--:|{}--:|", "--:|".repeat(keys.len()))?;
    for &r in &rounds {
        let left_out: u64 = records
            .iter()
            .filter(|x| x["round"] == r)
            .filter_map(|x| x["outliers"].as_u64())
            .sum();
        writeln!(
            out,
            "| {r} | {} | {left_out} |",
            keys.iter()
                .map(|k| ns(k, r).map_or_else(|| "—".to_owned(), ns_fmt))
                .collect::<Vec<_>>()
                .join(" | ")
        )?;
    }

    let left_out: u64 = records.iter().filter_map(|r| r["outliers"].as_u64()).sum();
    let kept: u64 = records.iter().filter_map(|r| r["runs"].as_u64()).sum();
    writeln!(
        out,
        "\nRuns left out as interrupted (over 20 µs): {} of {}.",
        thousands(left_out as f64),
        thousands((left_out + kept) as f64)
    )?;
    writeln!(
        out,
        "\nSanity checks (every case, every round; a failure aborts the run): the first run gave the fixture table's verdict and exactly the fixture's expected frame (`<frame>.out.bin` with the Identification preset as the generator's, or the input untouched); every other run the same verdict and length; over the case's runs only its own counter moved (`fa_decap_tx`, `fa_udp_decap_tx`, `fa_encap_tx`, `fa_udp_encap_tx`, `fa_triangle`; none for `mipx_drop`), once per run: all passed."
    )?;
    Ok(out)
}
