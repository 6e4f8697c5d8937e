//! `cargo xtask bench vpn`: the RFC 5265 VPN layer — bulk TCP throughput from the mobile node to
//! a correspondent in the intranet in access modes c, mc and cvc, each against no tunnelling
//! measured in the same round (`mipx-bench-vpn`), and handover times per move type and mode
//! from the lab's walk (`mipx-lab-rfc5265 --json`). Both are tests-crate binaries run as root.
//!
//! `--kernel debian12` runs both in Debian 12's kernel in the emulated VM, where the kernel has
//! ESP: throughput of mc and cvc on kernel-libipsec and on the kernel's ESP (XFRM) in the same
//! rounds, and mode mc's walk on each backend for the handover. The emulator is about ten
//! times slower than the host, so only the ratios mean anything there.

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
    /// Where to run: this machine's kernel (kernel-libipsec only, it has no ESP) or Debian
    /// 12's in the VM (both backends).
    #[arg(long, value_enum, default_value = "host")]
    kernel: crate::vm::Kernel,
    /// With `--kernel debian12`: measure nothing, render the last run's results again (its
    /// JSON files under target/), e.g. after one of its walks was run again by hand with
    /// `cargo xtask lab --kernel debian12 --mode mc --ipsec ... --json ...`.
    #[arg(long)]
    from_last_run: bool,
}

const THROUGHPUT_JSON: &str = "target/bench-vpn-throughput.json";
const HANDOVER_JSON: &str = "target/bench-vpn-handover";

pub(crate) fn run(o: &Options) -> Result<()> {
    let machine = Machine::probe();
    let root = workspace_root();
    let started = std::time::Instant::now();
    let raw = root.join(THROUGHPUT_JSON);
    if o.kernel == crate::vm::Kernel::Debian12 {
        return run_in_vm(o, &machine, &raw, started);
    }
    anyhow::ensure!(
        !o.from_last_run,
        "--from-last-run goes with --kernel debian12"
    );
    let bench = build_test_bin("mipx-bench-vpn")?;
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
    let lab = build_test_bin("mipx-lab-rfc5265")?;
    let mut files = Vec::new();
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
        files.push(("libipsec", file));
    }
    render_files(o, &machine, &raw, &files, started)
}

/// Prints `body` and, unless told not to, puts it in BENCHMARKS.md.
fn write(o: &Options, body: &str) -> Result<()> {
    println!("{body}");
    if !o.no_write {
        let path = if o.kernel == crate::vm::Kernel::Debian12 {
            update_benchmarks_md(
                "RFC 5265 VPN layer on the kernel's ESP (cargo xtask bench vpn --kernel debian12)",
                "bench-vpn-debian12",
                body,
            )?
        } else {
            update_benchmarks_md(
                "RFC 5265 VPN layer (cargo xtask bench vpn)",
                "bench-vpn",
                body,
            )?
        };
        println!("xtask: results written to {}", path.display());
    }
    Ok(())
}

/// The same measurements in Debian 12's kernel: one VM boot runs the throughput rounds on both
/// backends, then mode mc's walk on each backend, alternating, `walks` times.
fn run_in_vm(
    o: &Options,
    machine: &Machine,
    raw: &std::path::Path,
    started: std::time::Instant,
) -> Result<()> {
    let root = workspace_root();
    let mut files = Vec::new();
    for w in 0..o.walks {
        for ipsec in ["kernel", "libipsec"] {
            let file = root.join(format!("{HANDOVER_JSON}-{ipsec}-{w}.json"));
            files.push((ipsec, file));
        }
    }
    if o.from_last_run {
        let mut machine = machine.clone();
        // When the results were written, not now.
        if let Ok(out) = std::process::Command::new("date")
            .args(["-u", "-r"])
            .arg(raw)
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
        {
            machine.date = format!(
                "{} (rendered again with --from-last-run)",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        return render_files(o, &machine, raw, &files, started);
    }
    let bench = build_test_bin("mipx-bench-vpn")?;
    let _ = std::fs::remove_file(raw);
    let lab = build_test_bin("mipx-lab-rfc5265")?;
    let quote = |p: &std::path::Path| format!("'{}'", p.display());
    let mut script = format!(
        "set -e\n{} --rounds {} --secs {} --ipsec both --json {}\n",
        quote(&bench),
        o.rounds,
        o.secs,
        quote(raw)
    );
    for (ipsec, file) in &files {
        let _ = std::fs::remove_file(file);
        script.push_str(&format!(
            "{} --mode mc --ipsec {ipsec} --json {}\n",
            quote(&lab),
            quote(file)
        ));
    }
    crate::vm::run_in_vm(
        &["sh".into(), "-c".into(), script.into()],
        &crate::vm::test_env(),
        Some(std::time::Duration::from_secs(80 * 60)),
    )?;
    render_files(o, machine, raw, &files, started)
}

/// Renders the results in `raw` (throughput) and `files` (the walks, by backend as the lab's
/// `--ipsec` names it).
fn render_files(
    o: &Options,
    machine: &Machine,
    raw: &std::path::Path,
    files: &[(&str, std::path::PathBuf)],
    started: std::time::Instant,
) -> Result<()> {
    let throughput: Value = serde_json::from_str(
        &std::fs::read_to_string(raw).with_context(|| format!("reading {}", raw.display()))?,
    )
    .context("parsing the throughput JSON")?;
    let mut walks = Vec::new();
    for (backend, file) in files {
        walks.push((
            *backend,
            serde_json::from_str::<Value>(&std::fs::read_to_string(file)?)
                .context("parsing the lab's JSON")?,
        ));
    }
    let body = render(&throughput, &walks, machine, o, started.elapsed().as_secs())?;
    write(o, &body)
}

fn render(
    t: &Value,
    walks: &[(&str, Value)],
    m: &Machine,
    o: &Options,
    secs: u64,
) -> Result<String> {
    let rounds = t["rounds"].as_array().context("no rounds")?;
    let mbps = |mode: &str| Spread::of(rounds.iter().filter_map(|r| r[mode].as_f64()));
    let ratio_to = |mode: &str, base: &str| {
        Spread::of(
            rounds
                .iter()
                .filter_map(|r| Some(r[mode].as_f64()? / r[base].as_f64()?)),
        )
    };
    let vm = o.kernel == crate::vm::Kernel::Debian12;
    let mut out = String::new();
    writeln!(
        out,
        "Command: `cargo xtask bench vpn{}` (as root)  \nRun: {}, commit {}, {secs} s in all ({} throughput rounds of {} s transfers, {} lab walks{}).  \nMachine: {} CPUs ({}), Linux {}, {}{}.  ",
        if vm { " --kernel debian12" } else { "" },
        m.date,
        m.commit,
        o.rounds,
        o.secs,
        o.walks,
        if vm { " per backend, mode mc" } else { "" },
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.rustc,
        if vm {
            "; measured in Debian 12's 6.1 kernel in the emulated VM (TCG, about ten times slower than the host: read the ratios, not the figures)"
        } else {
            ""
        }
    )?;
    let backends = if vm {
        "on each backend in the same round: strongSwan's kernel-libipsec (ESP in user space through a TUN device, always in UDP) and the kernel's ESP (XFRM: charon's kernel-netlink, mipd's XFRM interface, raw ESP where there is no NAT), both charons alike"
    } else {
        "both with kernel-libipsec (this kernel has no ESP: IPsec runs in user space through a TUN device, ESP always in UDP)"
    };
    writeln!(
        out,
        "Method: the RFC 5265 topology of tests/src/detection.rs with an unmodified strongSwan gateway in the DMZ and the mobile node's own charon, {backends}. One TCP connection from the mobile node sends 64 KiB writes for the whole transfer; the correspondent counts what arrives. In each round, on fresh topologies: `plain` is the same node inside (internal 1) sending from its care-of address, routed with no tunnel at all (the baseline); `c` from the internal home address inside (IP-in-IP to the i-HA); `mc` and `cvc` from the home address on external 1. Median (min–max) over rounds; ratios are per round against that round's baseline.\n"
    )?;
    let rows: &[(&str, &str, Option<&str>)] = if vm {
        &[
            ("plain", "plain", None),
            ("c", "c", None),
            ("mc", "mc, kernel-libipsec", None),
            ("mc-xfrm", "mc, kernel ESP", Some("mc")),
            ("cvc", "cvc, kernel-libipsec", None),
            ("cvc-xfrm", "cvc, kernel ESP", Some("cvc")),
        ]
    } else {
        &[
            ("plain", "plain", None),
            ("c", "c", None),
            ("mc", "mc", None),
            ("cvc", "cvc", None),
        ]
    };
    if vm {
        writeln!(out, "| mode | Mbit/s | ÷ plain | ÷ kernel-libipsec |")?;
        writeln!(out, "|---|--:|--:|--:|")?;
    } else {
        writeln!(out, "| mode | Mbit/s | ÷ plain |")?;
        writeln!(out, "|---|--:|--:|")?;
    }
    for (key, label, against) in rows {
        let plain = if *key == "plain" {
            "1".into()
        } else {
            ratio_to(key, "plain").show(|x| format!("{x:.2}"))
        };
        let other = match against {
            Some(base) => format!(" {} |", ratio_to(key, base).show(|x| format!("{x:.2}"))),
            None if vm => " |".into(),
            None => String::new(),
        };
        writeln!(
            out,
            "| {label} | {} | {plain} |{other}",
            mbps(key).show(|x| format!("{x:.0}"))
        )?;
    }
    // Handover: every move of every walk, grouped by mode and kind of move, in walk order.
    // The baseline, measured in the same walk: its first move, internal 1 → internal 2, a
    // plain Mobile IPv4 handover (mode c to mode c, no VPN).
    let walk_list: Vec<(&str, &Value)> = walks
        .iter()
        .flat_map(|(b, w)| {
            w["walks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |walk| (*b, walk))
        })
        .collect();
    let mut kinds: Vec<(String, String, String)> = Vec::new();
    for (backend, mv) in walk_list.iter().flat_map(|(b, w)| {
        w["moves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |mv| (*b, mv))
    }) {
        if let (Some(mode), Some(kind)) = (mv["mode"].as_str(), mv["move"].as_str()) {
            let key = (backend.to_owned(), mode.to_owned(), kind.to_owned());
            if !kinds.contains(&key) {
                kinds.push(key);
            }
        }
    }
    writeln!(
        out,
        "\nHandover, from the lab's walks (`mipx-lab-rfc5265 --json`: internal 1 → internal 2 → external 1 → external 2 behind the NAT → internal 1 under one TCP session, each move a link change): time from the move to the decision in `mipctl status`, to the first data of the session after the move, and the longest gap in the session around the move. The baseline is the same walk's internal 1 → internal 2, a plain Mobile IPv4 move with no VPN (mode c to mode c; to mode f through the foreign agent in the fvc walk). Median (min–max) over walks; ratios per walk.{}\n",
        if vm {
            " In mode mc, MOBIKE moves the SA on external 1 → external 2: on kernel-libipsec charon re-creates the CHILD_SA's state in user space, on the kernel's ESP it updates the XFRM SAs in place (same SPIs)."
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "| walk mode | move | decision | first data | longest gap | gap ÷ int1 → int2 |"
    )?;
    writeln!(out, "|---|---|--:|--:|--:|--:|")?;
    let ms = |x: f64| format!("{x:.0} ms");
    for (backend, mode, kind) in kinds {
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
                    .filter(|(b, _)| *b == backend)
                    .filter_map(|(_, w)| this(w))
                    .filter_map(|mv| mv[field].as_f64()),
            )
        };
        let ratio = Spread::of(walk_list.iter().filter(|(b, _)| *b == backend).filter_map(
            |(_, w)| {
                let gap = this(w)?["gap_ms"].as_f64()?;
                let base = w["moves"].as_array()?.iter().find(|mv| {
                    mv["move"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("int1 → int2"))
                })?["gap_ms"]
                    .as_f64()?;
                (base > 0.0).then_some(gap / base)
            },
        ));
        writeln!(
            out,
            "| {} | {kind} | {} | {} | {} | {} |",
            match (vm, backend.as_str()) {
                (false, _) => mode.clone(),
                (true, "kernel") => format!("{mode}, kernel ESP"),
                (true, _) => format!("{mode}, kernel-libipsec"),
            },
            pick("decision_ms").show(ms),
            pick("first_data_ms").show(ms),
            pick("gap_ms").show(ms),
            ratio.show(|x| format!("{x:.2}"))
        )?;
    }
    Ok(out)
}
