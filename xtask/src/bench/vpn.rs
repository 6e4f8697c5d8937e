//! `cargo xtask bench vpn`: the RFC 5265 VPN layer — bulk TCP throughput from the mobile node to
//! a correspondent in the intranet in access modes c, mc and cvc, each against no tunnelling
//! measured in the same round (`mipx-bench-vpn`), and handover times per move type and mode
//! from the lab's walk (`mipx-lab-rfc5265 --json`). Both are tests-crate binaries run as root.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{Machine, Spread, build_test_bin, update_benchmarks_md, workspace_root};
use crate::cmd;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Rounds, each on fresh topologies.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per transfer.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Walks of the lab for the handover times (each walks every mode: cvc, mc, fvc).
    #[arg(long, default_value_t = 5)]
    walks: usize,
    /// Print the results only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
}

const THROUGHPUT_JSON: &str = "target/bench-vpn-throughput.json";
const HANDOVER_JSON: &str = "target/bench-vpn-handover";

pub(crate) fn run(o: &Options) -> Result<()> {
    let machine = Machine::probe();
    let root = workspace_root();
    let started = std::time::Instant::now();
    let bench = build_test_bin("mipx-bench-vpn")?;
    let raw = root.join(THROUGHPUT_JSON);
    let _ = std::fs::remove_file(&raw);
    cmd::run(
        cmd::privileged(&bench)
            .args(["--rounds", &o.rounds.to_string()])
            .args(["--secs", &o.secs.to_string()])
            .arg("--json")
            .arg(&raw)
            .env("RUST_BACKTRACE", "0")
            .current_dir(&root),
    )?;
    let throughput: Value = serde_json::from_str(
        &std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?,
    )
    .context("parsing the throughput JSON")?;
    let lab = build_test_bin("mipx-lab-rfc5265")?;
    let mut walks = Vec::new();
    for w in 0..o.walks {
        let file = root.join(format!("{HANDOVER_JSON}-{w}.json"));
        let _ = std::fs::remove_file(&file);
        cmd::run(
            cmd::privileged(&lab)
                .arg("--json")
                .arg(&file)
                .env("RUST_BACKTRACE", "0")
                .current_dir(&root),
        )?;
        walks.push(
            serde_json::from_str::<Value>(&std::fs::read_to_string(&file)?)
                .context("parsing the lab's JSON")?,
        );
    }
    let body = render(
        &throughput,
        &walks,
        &machine,
        o,
        started.elapsed().as_secs(),
    )?;
    println!("{body}");
    if !o.no_write {
        let path = update_benchmarks_md(
            "RFC 5265 VPN layer (cargo xtask bench vpn)",
            "bench-vpn",
            &body,
        )?;
        println!("xtask: results written to {}", path.display());
    }
    Ok(())
}

fn render(t: &Value, walks: &[Value], m: &Machine, o: &Options, secs: u64) -> Result<String> {
    let rounds = t["rounds"].as_array().context("no rounds")?;
    let mbps = |mode: &str| Spread::of(rounds.iter().filter_map(|r| r[mode].as_f64()));
    let ratio = |mode: &str| {
        Spread::of(
            rounds
                .iter()
                .filter_map(|r| Some(r[mode].as_f64()? / r["plain"].as_f64()?)),
        )
    };
    let mut out = String::new();
    writeln!(
        out,
        "Command: `cargo xtask bench vpn` (as root)  \nRun: {}, commit {}, {secs} s in all ({} throughput rounds of {} s transfers, {} lab walks).  \nMachine: {} CPUs ({}), Linux {}, {}.  ",
        m.date, m.commit, o.rounds, o.secs, o.walks, m.cpus, m.cpu_model, m.kernel, m.rustc
    )?;
    writeln!(
        out,
        "Method: the RFC 5265 topology of tests/src/detection.rs with an unmodified strongSwan gateway in the DMZ and the mobile node's own charon, both with kernel-libipsec (this kernel has no ESP: IPsec runs in user space through a TUN device, ESP always in UDP). One TCP connection from the mobile node sends 64 KiB writes for the whole transfer; the correspondent counts what arrives. In each round, on fresh topologies: `plain` is the same node inside (internal 1) sending from its care-of address, routed with no tunnel at all (the baseline); `c` from the internal home address inside (IP-in-IP to the i-HA); `mc` and `cvc` from the home address on external 1. Median (min–max) over rounds; ratios are per round against that round's baseline.\n"
    )?;
    writeln!(out, "| mode | Mbit/s | ÷ plain |")?;
    writeln!(out, "|---|--:|--:|")?;
    for mode in ["plain", "c", "mc", "cvc"] {
        writeln!(
            out,
            "| {mode} | {} | {} |",
            mbps(mode).show(|x| format!("{x:.0}")),
            if mode == "plain" {
                "1".into()
            } else {
                ratio(mode).show(|x| format!("{x:.2}"))
            }
        )?;
    }
    // Handover: every move of every walk, grouped by mode and kind of move, in walk order.
    // The baseline, measured in the same walk: its first move, internal 1 → internal 2, a
    // plain Mobile IPv4 handover (mode c to mode c, no VPN).
    let walk_list: Vec<&Value> = walks
        .iter()
        .flat_map(|w| w["walks"].as_array().into_iter().flatten())
        .collect();
    let mut kinds: Vec<(String, String)> = Vec::new();
    for mv in walk_list
        .iter()
        .flat_map(|w| w["moves"].as_array().into_iter().flatten())
    {
        if let (Some(mode), Some(kind)) = (mv["mode"].as_str(), mv["move"].as_str()) {
            let key = (mode.to_owned(), kind.to_owned());
            if !kinds.contains(&key) {
                kinds.push(key);
            }
        }
    }
    writeln!(
        out,
        "\nHandover, from the lab's walks (`mipx-lab-rfc5265 --json`: internal 1 → internal 2 → external 1 → external 2 behind the NAT → internal 1 under one TCP session, each move a link change): time from the move to the decision in `mipctl status`, to the first data of the session after the move, and the longest gap in the session around the move. The baseline is the same walk's internal 1 → internal 2, a plain Mobile IPv4 move with no VPN (mode c to mode c; to mode f through the foreign agent in the fvc walk). Median (min–max) over walks; ratios per walk.\n"
    )?;
    writeln!(
        out,
        "| walk mode | move | decision | first data | longest gap | gap ÷ int1 → int2 |"
    )?;
    writeln!(out, "|---|---|--:|--:|--:|--:|")?;
    let ms = |x: f64| format!("{x:.0} ms");
    for (mode, kind) in kinds {
        let this = |w: &Value| {
            w["moves"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|mv| mv["mode"] == mode.as_str() && mv["move"] == kind.as_str())
                .cloned()
        };
        let pick = |field: &str| {
            Spread::of(
                walk_list
                    .iter()
                    .filter_map(|w| this(w))
                    .filter_map(|mv| mv[field].as_f64()),
            )
        };
        let ratio = Spread::of(walk_list.iter().filter_map(|w| {
            let gap = this(w)?["gap_ms"].as_f64()?;
            let base = w["moves"].as_array()?.iter().find(|mv| {
                mv["move"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("int1 → int2"))
            })?["gap_ms"]
                .as_f64()?;
            (base > 0.0).then_some(gap / base)
        }));
        writeln!(
            out,
            "| {mode} | {kind} | {} | {} | {} | {} |",
            pick("decision_ms").show(ms),
            pick("first_data_ms").show(ms),
            pick("gap_ms").show(ms),
            ratio.show(|x| format!("{x:.2}"))
        )?;
    }
    Ok(out)
}
