//! `cargo xtask bench detection`: RFC 5265 internal network detection on the wire — time from a
//! link change to the decision and to the first user packet, inside and outside, against a
//! plain Mobile IPv4 registration measured in the same round, and the plaintext that crossed
//! the external segment (none with a link change; at most T_MONITOR when the change is silent).
//!
//! The measuring is done by `mipx-lab-detection --rounds N --json FILE` (tests crate, as root;
//! it needs namespaces and the eBPF object); this module turns its JSON into medians (min–max)
//! over rounds and writes the BENCHMARKS.md section.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{Machine, Spread, build_test_bin, update_benchmarks_md, workspace_root};
use crate::cmd;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Rounds, each on a fresh topology.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print the results only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
}

const RAW_JSON: &str = "target/bench-detection.json";

pub(crate) fn run(o: &Options) -> Result<()> {
    let machine = Machine::probe();
    let root = workspace_root();
    let exe = build_test_bin("mipx-lab-detection")?;
    let raw = root.join(RAW_JSON);
    let _ = std::fs::remove_file(&raw);
    let started = std::time::Instant::now();
    cmd::run(
        cmd::privileged(&exe)
            .args(["--rounds", &o.rounds.to_string()])
            .arg("--json")
            .arg(&raw)
            .env("RUST_BACKTRACE", "0")
            .current_dir(&root),
    )?;
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?,
    )
    .context("parsing the lab's JSON")?;
    let body = render(&data, &machine, o.rounds, started.elapsed().as_secs())?;
    println!("{body}");
    if !o.no_write {
        let path = update_benchmarks_md(
            "RFC 5265 detection (cargo xtask bench detection)",
            "bench-detection",
            &body,
        )?;
        println!("xtask: results written to {}", path.display());
    }
    Ok(())
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn render(data: &Value, m: &Machine, rounds: usize, secs: u64) -> Result<String> {
    let t_monitor = data["t_monitor_secs"].as_u64().unwrap_or(0);
    let rounds_v = data["rounds"].as_array().context("no rounds")?;
    // Per round: the median over the round's steps of one kind, then the spread over rounds.
    let per_round = |pick: &dyn Fn(&Value) -> Option<f64>, kind: &str, list: &str| -> Spread {
        Spread::of(rounds_v.iter().map(|r| {
            let v: Vec<f64> = r[list]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["kind"] == kind)
                .filter_map(pick)
                .collect();
            Spread::of(v).median
        }))
    };
    let decision = |s: &Value| f(&s["decision_ms"]);
    let reply = |s: &Value| f(&s["first_reply_ms"]);
    let inside_reply = per_round(&reply, "inside", "steps");
    let plain_reply = per_round(&reply, "plain", "plain");
    let ratio = Spread::of(rounds_v.iter().map(|r| {
        let med = |kind: &str, list: &str| {
            Spread::of(
                r[list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["kind"] == kind)
                    .filter_map(reply),
            )
            .median
        };
        med("inside", "steps") / med("plain", "plain")
    }));
    let leaks_link: u64 = rounds_v
        .iter()
        .flat_map(|r| r["steps"].as_array().into_iter().flatten())
        .filter(|s| s["kind"] != "silent")
        .filter_map(|s| s["leaked_packets"].as_u64())
        .sum();
    let silent_packets = per_round(&|s| f(&s["leaked_packets"]), "silent", "steps");
    let silent_secs = per_round(&|s| f(&s["leaked_secs"]), "silent", "steps");
    let silent_decision = per_round(&decision, "silent", "steps");
    let ms = |x: f64| format!("{x:.0} ms");
    let mut out = String::new();
    writeln!(
        out,
        "Command: `cargo xtask bench detection` (as root)  \nRun: {}, commit {}, {secs} s in all ({rounds} rounds, each on a fresh topology).  \nMachine: {} CPUs ({}), Linux {}, {}.  ",
        m.date, m.commit, m.cpus, m.cpu_model, m.kernel, m.rustc
    )?;
    writeln!(
        out,
        "Method: the topology of tests/src/detection.rs (intranet with the i-HA behind an nftables firewall, DMZ with the x-HA, external network; veth in namespaces). `mipd` as i-HA, x-HA and RFC 5265 mobile node (T_MONITOR {t_monitor} s); the node pings a correspondent inside from its internal home address 100 times a second and walks int1 → int2 → ext1 → int1, taking its link down and up around each move, then is moved to the external network silently (no link or address event). Times run from the moment the node is attached and its link is up again; \"decision\" is when `mipctl status` (polled every 10 ms) first shows it, \"first reply\" the first answered user packet (so up to 10 ms of ping spacing). The baseline, in the same round: a plain Mobile IPv4 node (no detection, no gate) told by `mipctl register` right after the same moves between the internal subnets. Leaks: ICMP to or from the internal home address, plain or tunnelled, in a capture of the external segment. Median (min–max) over rounds of each round's median.\n"
    )?;
    writeln!(out, "| figure | median (min–max) |")?;
    writeln!(out, "|---|--:|")?;
    let rows = [
        (
            "link change → inside decision",
            per_round(&decision, "inside", "steps").show(ms),
        ),
        (
            "link change → first user packet, inside",
            inside_reply.show(ms),
        ),
        (
            "**baseline**: plain registration → first user packet",
            plain_reply.show(ms),
        ),
        (
            "inside ÷ plain, first user packet",
            ratio.show(|x| format!("{x:.2}")),
        ),
        (
            "link change → outside decision",
            per_round(&decision, "outside", "steps").show(ms),
        ),
        (
            "plaintext user packets on the external segment, all link-change moves of all rounds",
            leaks_link.to_string(),
        ),
        (
            "silent upstream change: plaintext user packets leaked",
            silent_packets.show(|x| format!("{x:.0}")),
        ),
        (
            "silent upstream change: seconds of plaintext after the change",
            silent_secs.show(|x| format!("{x:.2} s")),
        ),
        (
            "silent upstream change: until detection restarts",
            silent_decision.show(ms),
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "| {k} | {v} |")?;
    }
    writeln!(
        out,
        "\nOutside, user data waits for the VPN layer (not built yet), so there is no \"first user packet\" outside. A silent change can leak for at most T_MONITOR ({t_monitor} s) after the last i-HA registration, which was at most T_MONITOR − N before the change."
    )?;
    Ok(out)
}
