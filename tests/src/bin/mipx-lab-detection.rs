//! `cargo xtask lab --scenario detection`: RFC 5265 internal network detection, watched from the
//! wire. The topology of tests/src/detection.rs (intranet with an i-HA behind an nftables
//! firewall, a DMZ with the x-HA, an external network); `mipd` as i-HA, x-HA and as a mobile
//! node in RFC 5265 mode, whose one interface walks internal 1 → internal 2 → external →
//! internal 1 with link changes, and finally is moved to the external network silently (no link
//! event, as an upstream routing change). Throughout, the mobile node pings a correspondent in
//! the intranet from its internal home address, 100 times a second, and the external segment is
//! captured.
//!
//! For each step it prints the decision and its latency, the time to the first user packet
//! answered, and the plaintext user packets that crossed the external segment. It exits
//! non-zero if a move with a link change leaked anything, or if the silent change leaked for
//! longer than T_MONITOR; it always cleans up.
//!
//! `--rounds N --json FILE` (used by `cargo xtask bench detection`) repeats the walk on a fresh
//! topology N times, and after each walk measures the baseline: a plain Mobile IPv4 node (no
//! detection, no gate) registering with the i-HA after the same moves, so the cost of
//! detection is a ratio to a registration measured in the same round.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::Mipd;
use mipx_tests::detection::{DetectionTopology, IHA_ADDR, Net, Pinger, XHA_ADDR, user_packets};
use mipx_tests::require_root;

/// Short, so the lab shows monitoring within a minute; RFC 5265's default is 60 s.
const T_MONITOR: u64 = 5;
const GRACE: u64 = 2;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn location(mn: &Mipd) -> String {
    mn.ctl_json(&["status"]).map_or_else(
        |_| String::new(),
        |v| {
            v["status"]["interfaces"][0]["location"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        },
    )
}

/// Polls the MN's status until its interface is `want`; the Unix time it was first seen.
fn wait_location(mn: &Mipd, want: &str, timeout: Duration) -> Option<f64> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if location(mn) == want {
            return Some(unix_now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

struct Step {
    what: String,
    /// Moved with no link or address event: plaintext may flow until T_MONITOR.
    silent: bool,
    started: f64,
    expect: &'static str,
    decided: Option<f64>,
    first_packet: Option<f64>,
    /// Until the next step starts.
    ended: f64,
}

/// One step's figures, as the JSON and the report carry them.
#[derive(serde::Serialize)]
struct StepReport {
    step: String,
    /// "inside", "outside" or "silent".
    kind: &'static str,
    decision_ms: Option<f64>,
    first_reply_ms: Option<f64>,
    leaked_packets: usize,
    leaked_secs: f64,
}

/// The RFC 5265 walk on `topo`; prints nothing.
fn walk(topo: &mut DetectionTopology) -> Result<Vec<StepReport>> {
    let file = topo.dir.path("external.pcap");
    let capture = topo.capture_external(&file)?;
    let started = unix_now();
    let mn = topo.start_mn(&topo.rfc5265_mn_toml(T_MONITOR, GRACE, 1000))?;
    let pinger = Pinger::start(topo, Duration::from_millis(10))?;
    let mut steps = vec![Step {
        what: "start in int1".into(),
        silent: false,
        started,
        expect: "inside",
        decided: wait_location(&mn, "inside", Duration::from_secs(10)),
        first_packet: None,
        ended: 0.0,
    }];
    std::thread::sleep(Duration::from_secs(2));
    for (to, expect) in [
        (Net::Int2, "inside"),
        (Net::Ext1, "outside"),
        (Net::Int1, "inside"),
    ] {
        let from = topo.net();
        // Timed from the moment the MN is attached to the new network and its link is up
        // again (the move takes the link down, rewires, addresses, brings it up).
        topo.move_mn(to, true)?;
        let started = unix_now();
        let decided = wait_location(&mn, expect, Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(2));
        steps.push(Step {
            what: format!("{} → {} (link change)", short(from), short(to)),
            silent: false,
            started,
            expect,
            decided,
            first_packet: None,
            ended: 0.0,
        });
    }
    // The silent case: the segment under the MN changes, no link or address event.
    let started = unix_now();
    topo.switch_upstream(Net::Ext1)?;
    let decided = wait_location(&mn, "detecting", Duration::from_secs(T_MONITOR + 5));
    std::thread::sleep(Duration::from_secs(2));
    steps.push(Step {
        what: "int1 → ext1 (silent, no event)".into(),
        silent: true,
        started,
        expect: "detecting",
        decided,
        first_packet: None,
        ended: 0.0,
    });
    let end = unix_now();
    let file = capture.finish()?;
    pinger_first_packets(&mut steps, &pinger, end);
    drop(pinger);
    drop(mn);
    let leaked = user_packets(&file)?;
    let ms = |s: &Step, t: Option<f64>| t.map(|t| (t - s.started) * 1000.0);
    Ok(steps
        .iter()
        .map(|s| {
            let window: Vec<f64> = leaked
                .iter()
                .copied()
                .filter(|&t| t >= s.started && t < s.ended)
                .collect();
            StepReport {
                step: s.what.clone(),
                kind: if s.silent { "silent" } else { s.expect },
                decision_ms: ms(s, s.decided),
                first_reply_ms: ms(s, s.first_packet),
                leaked_packets: window.len(),
                leaked_secs: window.last().map_or(0.0, |t| t - s.started),
            }
        })
        .collect())
}

/// The baseline: a plain mobile node registering with the i-HA (no detection, no gate) after
/// the same moves between the internal subnets, told by `mipctl register` right after the
/// move; the time to the first answered user packet.
fn plain_moves(topo: &mut DetectionTopology) -> Result<Vec<StepReport>> {
    topo.move_mn(Net::Int1, true)?;
    let mn = topo.start_mn(&format!(
        "{}care_of_addr = \"{}\"\n",
        topo.plain_mn_toml(),
        Net::Int1.mn_addr()
    ))?;
    let pinger = Pinger::start(topo, Duration::from_millis(10))?;
    std::thread::sleep(Duration::from_secs(1));
    let mut out = Vec::new();
    for to in [Net::Int2, Net::Int1, Net::Int2, Net::Int1] {
        let from = topo.net();
        topo.move_mn(to, true)?;
        let started = unix_now();
        mn.ctl(&["register", "--care-of", &to.mn_addr().to_string()])?;
        std::thread::sleep(Duration::from_secs(1));
        out.push(StepReport {
            step: format!("{} → {} (plain registration)", short(from), short(to)),
            kind: "plain",
            decision_ms: None,
            first_reply_ms: pinger
                .first_reply_after(started)
                .map(|t| (t - started) * 1000.0),
            leaked_packets: 0,
            leaked_secs: 0.0,
        });
    }
    Ok(out)
}

fn main() -> Result<()> {
    require_root();
    let mut rounds = 1usize;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--json" => {
                json = Some(std::path::PathBuf::from(
                    args.next().context("--json FILE")?,
                ))
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let t0 = Instant::now();
    println!("\n==> building mipd and mipctl");
    mipx_tests::daemon::binaries();
    println!(
        "==> RFC 5265 topology: intranet (i-HA {IHA_ADDR}, trusts 10.20.0.0/16) behind an \
         nftables firewall, DMZ (x-HA {XHA_ADDR}), external network; T_MONITOR {T_MONITOR} s, \
         grace {GRACE} s; the MN pings a correspondent inside from its internal home address, \
         100 times a second"
    );
    let mut all = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=rounds {
        let mut topo = DetectionTopology::new("labdet")?;
        let iha = topo.start_iha()?;
        let _xha = topo.start_xha()?;
        let steps = walk(&mut topo)?;
        let plain = plain_moves(&mut topo)?;
        if rounds > 1 {
            println!("\n==> round {round}/{rounds}");
        }
        print_steps(&steps);
        let accepted = iha.ctl_json(&["stats"])?["stats"]["ha"]["accepted"]
            .as_u64()
            .unwrap_or(0);
        println!(
            "\n  baseline, plain Mobile IPv4 (no detection, no gate), i-HA registrations so far {accepted}:"
        );
        for p in &plain {
            println!(
                "  {:<42} first reply {}",
                p.step,
                p.first_reply_ms
                    .map_or("—".into(), |m| format!("{m:.0} ms"))
            );
        }
        for s in &steps {
            if s.decision_ms.is_none() {
                failures.push(format!("round {round}, {}: no decision", s.step));
            }
            if s.kind != "silent" && s.leaked_packets > 0 {
                failures.push(format!(
                    "round {round}, {}: {} plaintext packets leaked",
                    s.step, s.leaked_packets
                ));
            }
            if s.kind == "silent" && s.leaked_secs > T_MONITOR as f64 + 0.3 {
                failures.push(format!(
                    "round {round}, {}: plaintext for {:.2} s > T_MONITOR",
                    s.step, s.leaked_secs
                ));
            }
        }
        all.push(serde_json::json!({ "round": round, "steps": steps, "plain": plain }));
    }
    println!(
        "\n  decision: as `mipctl status` showed it (polled every 10 ms); first reply: the first\n  \
         user packet answered after the step; outside, user data waits for the VPN layer (the\n  \
         gate passes only signalling). Silently moved, plaintext may flow until T_MONITOR\n  \
         ({T_MONITOR} s) after the last i-HA registration, and not a moment longer."
    );
    if let Some(path) = json {
        let doc =
            serde_json::json!({ "t_monitor_secs": T_MONITOR, "grace_secs": GRACE, "rounds": all });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        println!("\n  results written to {}", path.display());
    }
    println!(
        "\n==> cleaned up: daemons, namespaces and pins removed ({:.1} s in all)",
        t0.elapsed().as_secs_f64()
    );
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

fn print_steps(steps: &[StepReport]) {
    println!(
        "\n  {:<31} {:<10} {:>10} {:>12} {:>18}",
        "step", "decision", "seen after", "first reply", "leaked on ext. seg."
    );
    for s in steps {
        let ms = |t: Option<f64>| t.map_or("—".to_owned(), |t| format!("{t:.0} ms"));
        let leak = if s.leaked_packets == 0 {
            "none".to_owned()
        } else {
            format!("{} pkts {:.2} s", s.leaked_packets, s.leaked_secs)
        };
        let decision = match (s.kind, s.decision_ms) {
            (_, None) => "(none)",
            ("silent", _) => "detecting",
            (k, _) => k,
        };
        println!(
            "  {:<31} {:<10} {:>10} {:>12} {:>18}",
            s.step,
            decision,
            ms(s.decision_ms),
            ms(s.first_reply_ms),
            leak
        );
    }
}

/// Fills in each step's end and first answered user packet.
fn pinger_first_packets(steps: &mut [Step], pinger: &Pinger, end: f64) {
    let starts: Vec<f64> = steps
        .iter()
        .map(|s| s.started)
        .skip(1)
        .chain([end])
        .collect();
    for (s, next) in steps.iter_mut().zip(starts) {
        s.ended = next;
        s.first_packet = pinger.first_reply_after(s.started).filter(|&t| t < next);
    }
}

fn short(net: Net) -> &'static str {
    match net {
        Net::Int1 => "int1",
        Net::Int2 => "int2",
        Net::Ext1 => "ext1",
        Net::Ext2 => "ext2",
    }
}
