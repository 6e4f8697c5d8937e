//! `cargo xtask lab` (scenario rfc5265, the default): RFC 5265's full scenario, watched from
//! the wire. The
//! topology of figure 1 (tests/src/detection.rs): an intranet with the i-HA and a correspondent
//! behind an nftables firewall, a DMZ with the x-HA and an unmodified strongSwan VPN gateway,
//! external network 1, and external network 2 behind an nftables NAT. `mipd` runs as i-HA, as
//! x-HA (mode cvc) and as the mobile node, whose own charon it drives over VICI.
//!
//! The mobile node walks internal 1 → internal 2 → external 1 → external 2 (NAT) → internal 1,
//! each move a link change, three times, each on a fresh topology:
//!
//! - `cvc`: access mode cvc outside (RFC 5265 §2.3: the VPN from the external home address
//!   inside the x-HA's tunnel), c inside;
//! - `mc`: mode mc outside (the MOBIKE draft: the VPN from the care-of address), c inside;
//! - `fvc`: foreign agents (`mipd` with `role = "fa"`) that require registration (R) on internal 2,
//!   external 1 and external 2, and a mobile node with agent discovery: internal 1 (c) →
//!   internal 2 (f, RFC 5265 §2.2: the i-HA through the agent) → external 1 (fvc, §2.4: the
//!   x-HA through the agent, the VPN from the x-HoA) → external 2 (fvc through an agent behind
//!   the NAT: it advertises U and its tunnel with the x-HA is IP-in-UDP, RFC 3519 §4.5) →
//!   internal 1 (c). After the walk it prints each agent's visitor list (`mipctl visitors`).
//!
//! Throughout a walk one TCP session runs from
//! the internal home address to the correspondent: the MN writes a small chunk every 20 ms, the
//! correspondent echoes it, the MN checks every byte. The MN announces MSS 1340
//! ([`SESSION_MSS`]: path MTU discovery toward the MN does not work through the VPN here;
//! `--no-mss-clamp` leaves it out).
//!
//! For each move it prints the decision `mipctl status` shows (location/mode), the time from
//! the move to it, the time to the session's first data after the move, and the longest gap in
//! the session around the move. At internal 1 and at each place of another mode than c it sends
//! fixed-size pings from the home address and afterwards reads from the captures of the
//! segment the length of the packets to and from the MN's link-layer address (the access link:
//! through a foreign agent, the agent's own tunnel packets on the same segment are not counted)
//! against the user packet's (seen at the correspondent), next to RFC 5265 §5.2's figures and
//! to what this ESP suite should add. It exits non-zero if the session broke (a wrong byte, a
//! reset, or no data for more than 10 s) or if a plaintext user packet (ICMP or the session's
//! TCP, to or from the internal home address) crossed external network 1 or 2, both captured
//! for the whole walk. Mobile IP signalling is not user data and is counted apart: through a
//! foreign agent the node registers from its home address (RFC 5944 §3.6.1.1), the i-HA's
//! registration too (RFC 5265 §3.5), so the i-HoA is in those packets' IP headers.
//!
//! `--mode cvc|mc|fvc|both|all`: one walk, `both` cvc and mc (as before the fvc walk
//! existed), `all` (the default) cvc, mc and fvc. `--json FILE` writes the results (`cargo
//! xtask bench vpn` reads them: `walks[].moves[]` with `mode` the walk's mode).
//! Namespaces, daemons, captures and pins are removed on every exit: errors
//! unwind through the topology's `Drop`, and Ctrl-C (SIGINT, SIGTERM, SIGHUP) only raises a
//! flag that the waits check. With `MIPX_LAB_HOLD` set, a failed walk keeps its topology for
//! two minutes for inspection; with `MIPX_LAB_KEEP=DIR`, each walk's daemon and charon logs and
//! captures are copied to `DIR/<mode>/`. `MIPX_LAB_STALL_IHA_MS=N` stops the i-HA's `mipd` for
//! N ms as the MN arrives in internal 2 (SIGSTOP, SIGCONT), so the x-HA answers first, as
//! happens now and then on a loaded machine: the MN is briefly "outside" on an internal network
//! (RFC 5265 §3.3's parallel registrations), which in mode cvc starts the VPN there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use mipx_tests::daemon::{Capture, Mipd, tshark, tshark_count};
use mipx_tests::detection::{
    CN_ADDR, DetectionTopology, EXTERNAL_HOME_ADDR, IHA_ADDR, INTERNAL_HOME_ADDR, NAT_PUBLIC_ADDR,
    Net, VPN_GATEWAY_ADDR, VPN_POOL, XHA_ADDR,
};
use mipx_tests::require_root;
use mipx_tests::rfc5265_lab::{
    EspSuite, SESSION_MSS, SESSION_PORT, SessionStream, SessionTotals, expected_overhead,
    rfc5265_5_2, unix_now, vpn_toml,
};
use mipx_tests::strongswan::{Charon, Ipsec};
use serde_json::Value;

/// The session: `CHUNK` bytes every `EVERY` each way (5 kB/s: light on a 2-core VM).
const CHUNK: usize = 100;
const EVERY: Duration = Duration::from_millis(20);
/// Longer without session data than this, and the session counts as broken; scaled by
/// `MIPX_TEST_PATIENCE` ([`gap_limit_secs`]), as every wait here is: in the emulated VM a move
/// takes many times as long, and the lab must not pass or fail on the emulator's speed.
const GAP_LIMIT_SECS: f64 = 10.0;
/// How long a move may take to be decided.
const DECISION_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the session may stay silent after a move before the walk is given up.
const FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(15);
/// After a move is decided and data flows again, the walk stays this long.
const DWELL: Duration = Duration::from_millis(1500);
/// ICMP payload sizes of the overhead probes: four consecutive sizes cover every padding
/// residue of a cipher padding to 4 octets.
const PROBE_PAYLOADS: [usize; 4] = [1000, 1001, 1002, 1003];
const PROBES_PER_SIZE: &str = "3";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C, SIGTERM and SIGHUP only raise a flag, which every wait checks, so the run unwinds
/// normally and the topology's `Drop` removes namespaces, daemons and pins.
fn catch_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in short steps, failing at once on Ctrl-C.
fn pause(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    check_interrupted()
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `timeout` (then `None`);
/// fails on Ctrl-C or when `f` fails.
/// [`GAP_LIMIT_SECS`] on this machine.
fn gap_limit_secs() -> f64 {
    mipx_tests::daemon::patience(Duration::from_secs_f64(GAP_LIMIT_SECS)).as_secs_f64()
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
    let until = Instant::now() + mipx_tests::daemon::patience(timeout);
    loop {
        check_interrupted()?;
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if Instant::now() > until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `mipctl status --json`'s `status` object.
fn status(mn: &Mipd) -> Result<Value> {
    Ok(mn.ctl_json(&["status"])?["status"].clone())
}

fn short(net: Net) -> &'static str {
    match net {
        Net::Int1 => "int1",
        Net::Int2 => "int2",
        Net::Ext1 => "ext1",
        Net::Ext2 => "ext2 (NAT)",
    }
}

fn segment(net: Net) -> &'static str {
    match net {
        Net::Int1 => "internal 1",
        Net::Int2 => "internal 2",
        Net::Ext1 => "external 1",
        Net::Ext2 => "external 2 (NAT)",
    }
}

/// The networks with a foreign agent in the fvc walk (registration required, so the node
/// uses them although it also has a co-located address there, RFC 5944 §2.4.1). External 2's
/// is behind the NAT (RFC 3519 §4.5).
const AGENT_NETS: [Net; 3] = [Net::Int2, Net::Ext1, Net::Ext2];

/// Whether the walk in `walk` mode reaches `net` through a foreign agent.
fn through_agent(walk: &str, net: Net) -> bool {
    walk == "fvc" && AGENT_NETS.contains(&net)
}

/// The access mode the walk in `walk` mode should be in on `net`: c inside and the walk's
/// mode outside, but in the fvc walk f inside and fvc outside where a foreign agent is, and
/// cvc (co-located) behind the NAT, where there is none.
fn place_mode(walk: &'static str, net: Net) -> &'static str {
    match (walk, net.is_internal(), through_agent(walk, net)) {
        (_, true, false) => "c",
        (_, true, true) => "f",
        ("fvc", false, false) => "cvc",
        (_, false, _) => walk,
    }
}

/// The care-of address the MN should register from `to`: the foreign agent's where the walk
/// goes through one, else its co-located address there.
fn expected_coa(walk: &str, to: Net) -> std::net::Ipv4Addr {
    if through_agent(walk, to) {
        to.fa_addr()
    } else {
        to.mn_addr()
    }
}

/// Whether `s` shows the move to `to` decided as the walk in `walk` mode expects there
/// ([`place_mode`]): the interface has the expected care-of address ([`expected_coa`]) and is
/// inside in mode c or f, or outside in mode cvc, mc or fvc with the i-HA binding through the
/// VPN, the VPN (mc) or the x-HA's binding (cvc, fvc) following to the new care-of address.
/// Returns the decision as "location/mode".
fn decided(s: &Value, walk: &'static str, to: Net) -> Option<String> {
    let i = &s["interfaces"][0];
    let coa = expected_coa(walk, to).to_string();
    if i["care_of_addr"] != coa.as_str() {
        return None;
    }
    let mode = place_mode(walk, to);
    let (location, got) = (i["location"].as_str()?, i["mode"].as_str()?);
    let ok = if to.is_internal() {
        location == "inside" && got == mode
    } else {
        let vpn = &s["vpn"];
        location == "outside"
            && got == mode
            && vpn["state"] == "up"
            && vpn["internal_registered"] == true
            && match mode {
                "mc" => vpn["local"] == coa.as_str(),
                // The VPN from the x-HoA, which the x-HA has bound to the agent's care-of
                // address (the agent's visitor list is checked after the decision). The node
                // has no x-MIP tunnel of its own here: `external_care_of` is null.
                "fvc" => {
                    vpn["local"] == EXTERNAL_HOME_ADDR.to_string().as_str()
                        && (vpn["external_care_of"].is_null()
                            || vpn["external_care_of"] == coa.as_str())
                }
                // With a mipd that reports the x-HA tunnel's care-of address, wait for it too.
                _ => {
                    vpn.get("external_care_of").is_none() || vpn["external_care_of"] == coa.as_str()
                }
            }
    };
    ok.then(|| format!("{location}/{got}"))
}

/// One move's figures, as printed and as the JSON carries them (`cargo xtask bench vpn`
/// reads `mode`, `move`, `decision_ms`, `first_data_ms`, `gap_ms`).
#[derive(serde::Serialize)]
struct MoveReport {
    mode: String,
    #[serde(rename = "move")]
    step: String,
    from: &'static str,
    to: &'static str,
    link_change: bool,
    /// "location/mode" as `mipctl status` showed it, or "(none)".
    decision: String,
    reason: String,
    /// From the MN attached (link up again) on the new network.
    decision_ms: Option<f64>,
    first_data_ms: Option<f64>,
    /// The longest time without session data from the move's start to the next move's.
    gap_ms: f64,
    detail: String,
    /// The i-HA's binding for the internal home address, each time it changed during the move
    /// (its care-of address, or "removed").
    iha_binding: Vec<String>,
    /// The same for the x-HA's binding of the external home address (cvc, fvc walks).
    xha_binding: Vec<String>,
}

/// Where a set of overhead probes went.
struct ProbeRun {
    /// The access mode at `net` ([`place_mode`]).
    mode: &'static str,
    net: Net,
    capture: PathBuf,
    /// The MN's `mn0` link-layer address: the access link's frames are those from or to it.
    mn_mac: String,
    /// (ICMP payload, Unix time before, after) per size.
    windows: Vec<(usize, f64, f64)>,
    x_udp: bool,
    /// Outside: the ESP suite as charon had it when the probes ran (with the kernel's ESP,
    /// in UDP behind the NAT only).
    esp: Option<EspSuite>,
}

/// One (mode, segment) row of the overhead table.
#[derive(serde::Serialize)]
struct OverheadRow {
    mode: String,
    segment: &'static str,
    /// Per probe size: the user packet's IPv4 length at the correspondent, the outer IPv4
    /// lengths on the segment from and to the MN, and the expected overhead.
    sizes: Vec<OverheadSize>,
    /// The expected overhead's parts for the first size.
    parts: Vec<(String, usize)>,
    /// RFC 5265 §5.2's figure for this mode and segment (with its NAT traversal octets).
    rfc: String,
    matches: bool,
}

#[derive(serde::Serialize)]
struct OverheadSize {
    inner_len: usize,
    outer_from_mn: Vec<usize>,
    outer_to_mn: Vec<usize>,
    expected: usize,
}

#[derive(Default, serde::Serialize)]
struct SegmentCheck {
    segment: &'static str,
    /// ICMP to or from the internal home address in plaintext, but for agent discovery.
    plaintext_icmp: usize,
    /// Any plaintext packet of the internal home address (ICMP included) or of the session's
    /// port, but for Mobile IP signalling.
    plaintext_session: usize,
    /// Mobile IP signalling with the internal home address in its IP header, which is not
    /// user data: registrations through a foreign agent (RFC 5944 §3.6.1.1: from the home
    /// address; RFC 5265 §3.5: the i-HA's too, through the same agent as the x-HA's), the
    /// agent's replies, agent solicitations.
    signalling: usize,
    esp_packets: usize,
}

/// Mobile IP signalling (RFC 5944 §2, §3): registration (UDP 434) and agent discovery
/// (ICMP Agent Advertisements and Solicitations, types 9 and 10), as a display filter.
const SIGNALLING: &str = "udp.port == 434 || icmp.type == 9 || icmp.type == 10";

/// A foreign agent's visitor list after the walk (fvc).
#[derive(serde::Serialize)]
struct AgentVisitors {
    segment: &'static str,
    care_of_addr: String,
    /// `mipctl visitors` as printed.
    text: String,
    /// `mipctl visitors --json`'s rows.
    visitors: Value,
}

#[derive(Default, serde::Serialize)]
struct WalkReport {
    mode: String,
    ok: bool,
    failures: Vec<String>,
    secs: f64,
    esp_suite: Option<EspSuite>,
    session: Option<SessionTotals>,
    moves: Vec<MoveReport>,
    segments: Vec<SegmentCheck>,
    overhead: Vec<OverheadRow>,
    /// fvc: each foreign agent's visitors after the walk.
    agents: Vec<AgentVisitors>,
}

/// Sends `PROBES_PER_SIZE` pings of each [`PROBE_PAYLOADS`] size from the internal home
/// address to the correspondent; the time window of each size.
fn probe(topo: &DetectionTopology) -> Result<Vec<(usize, f64, f64)>> {
    let mut windows = Vec::new();
    for size in PROBE_PAYLOADS {
        check_interrupted()?;
        let t0 = unix_now();
        let out = topo
            .mn
            .command("ping")
            .args([
                "-n",
                "-q",
                "-c",
                PROBES_PER_SIZE,
                "-i",
                "0.05",
                "-W",
                "2",
                "-s",
            ])
            .arg(size.to_string())
            .arg("-I")
            .arg(INTERNAL_HOME_ADDR.to_string())
            .arg(CN_ADDR.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .context("running ping")?;
        let t1 = unix_now();
        if !out.status.success() {
            bail!(
                "no answer to a {size}-byte ping from {INTERNAL_HOME_ADDR}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        windows.push((size, t0, t1));
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(windows)
}

/// One captured frame: Unix time, Ethernet source and destination, outermost IPv4 source and
/// length.
struct Frame {
    t: f64,
    eth_src: String,
    eth_dst: String,
    src: String,
    len: usize,
}

/// The frames in `file` whose outermost IPv4 packet is at least `min` octets.
fn frames(file: &Path, min: usize, filter: &str) -> Result<Vec<Frame>> {
    let out = tshark(
        file,
        &[
            "-Y",
            &format!("ip.len >= {min}{filter}"),
            "-T",
            "fields",
            "-E",
            "occurrence=f",
            "-e",
            "frame.time_epoch",
            "-e",
            "eth.src",
            "-e",
            "eth.dst",
            "-e",
            "ip.src",
            "-e",
            "ip.len",
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t').map(str::trim);
            Some(Frame {
                t: f.next()?.parse().ok()?,
                eth_src: f.next()?.to_ascii_lowercase(),
                eth_dst: f.next()?.to_ascii_lowercase(),
                src: f.next()?.to_owned(),
                len: f.next()?.parse().ok()?,
            })
        })
        .filter(|f| f.len >= min)
        .collect())
}

/// Reads one probe run's packets from the captures: the user packets' length at the
/// correspondent (`cn`) and the outer length on the access link (the frames from and to the
/// MN's link-layer address on the segment: a foreign agent's tunnel packets to and from the
/// home agent cross the same bridge but not the MN's link), per size.
fn overhead_row(run: &ProbeRun, cn: &Path) -> Result<OverheadRow> {
    let esp = run.esp.as_ref();
    let min = PROBE_PAYLOADS[0] + 28;
    let inner = frames(cn, min, " && icmp")?;
    let outer = frames(&run.capture, min, "")?;
    let mn_mac = run.mn_mac.to_ascii_lowercase();
    let mut sizes = Vec::new();
    let mut parts = Vec::new();
    for &(payload, t0, t1) in &run.windows {
        let within = |t: f64| t >= t0 && t <= t1 + 0.01;
        let mut lens: Vec<usize> = inner
            .iter()
            .filter(|f| within(f.t) && f.src == INTERNAL_HOME_ADDR.to_string())
            .map(|f| f.len)
            .collect();
        lens.sort_unstable();
        lens.dedup();
        let inner_len = match lens.as_slice() {
            [one] => *one,
            [] => bail!(
                "{} {}: no {payload}-byte probe seen at the correspondent",
                run.mode,
                segment(run.net)
            ),
            many => bail!(
                "{} {}: probe lengths {many:?} at the correspondent",
                run.mode,
                segment(run.net)
            ),
        };
        let pick = |from_mn: bool| {
            let mut v: Vec<usize> = outer
                .iter()
                .filter(|f| {
                    let mac = if from_mn { &f.eth_src } else { &f.eth_dst };
                    within(f.t) && *mac == mn_mac && f.len >= inner_len
                })
                .map(|f| f.len)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let p = expected_overhead(run.mode, inner_len, esp, run.x_udp)?;
        if parts.is_empty() {
            parts = p.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
        }
        sizes.push(OverheadSize {
            inner_len,
            outer_from_mn: pick(true),
            outer_to_mn: pick(false),
            expected: p.iter().map(|x| x.1).sum(),
        });
    }
    let matches = sizes.iter().all(|s| {
        !s.outer_from_mn.is_empty()
            && !s.outer_to_mn.is_empty()
            && s.outer_from_mn
                .iter()
                .chain(&s.outer_to_mn)
                .all(|o| o - s.inner_len == s.expected)
    });
    use rfc5265_5_2::*;
    let rfc = match (run.mode, run.net) {
        ("f", _) => format!("{F}"),
        ("c", _) => format!("{C}"),
        ("fvc", _) => format!(
            "{FVC} (+ {IPSEC_NAT_T} IPsec NAT-T = {})",
            FVC + IPSEC_NAT_T
        ),
        ("mc", _) => format!(
            "— (fvc {FVC}; + {IPSEC_NAT_T} IPsec NAT-T = {})",
            FVC + IPSEC_NAT_T
        ),
        ("cvc", Net::Ext2) => format!(
            "{CVC} (+ {IPSEC_NAT_T} + {MIP_NAT_T} NAT-T = {})",
            CVC + IPSEC_NAT_T + MIP_NAT_T
        ),
        _ => format!(
            "{CVC} (+ {IPSEC_NAT_T} IPsec NAT-T = {})",
            CVC + IPSEC_NAT_T
        ),
    };
    Ok(OverheadRow {
        mode: run.mode.to_owned(),
        segment: segment(run.net),
        sizes,
        parts,
        rfc,
        matches,
    })
}

/// What one place's status says beyond the decision, for the move's line; `mode` is the
/// place's ([`place_mode`]).
fn detail(s: &Value, before: &Value, mode: &str, to: Net) -> String {
    let vpn = &s["vpn"];
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    if to.is_internal() {
        return format!(
            "registered with the i-HA {} {}; VPN {}",
            if mode == "f" {
                "through the foreign agent"
            } else {
                "from"
            },
            text(&s["interfaces"][0]["care_of_addr"]),
            if vpn["state"] == "up" {
                "still up".to_owned()
            } else {
                text(&vpn["state"])
            }
        );
    }
    let spis = if before["vpn"]["state"] != "up" {
        "new SAs"
    } else if before["vpn"]["spis"] == vpn["spis"] {
        "same SPIs"
    } else {
        "new SPIs"
    };
    let tunnel = match mode {
        "cvc" if vpn["external_udp"] == true => "; x-HA tunnel IP-in-UDP (RFC 3519)".to_owned(),
        "cvc" if vpn["external_care_of"].is_string() => "; x-HA tunnel IP-in-IP".to_owned(),
        "fvc" => format!(
            "; x-HA binding through the foreign agent {}",
            text(&s["interfaces"][0]["care_of_addr"])
        ),
        _ => String::new(),
    };
    format!(
        "VPN {} from {}, TIA {}, {spis}{tunnel}",
        text(&vpn["state"]),
        text(&vpn["local"]),
        text(&vpn["tia"]),
    )
}

/// `text` without its ANSI colours (ESC [ ... m), as `mipd` writes its log.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The last `n` lines of `mipd`'s log (INFO and above), for a failure's context on stderr.
fn log_tail(mn: &Mipd, n: usize) -> String {
    let plain = strip_ansi(&mn.log_text());
    let lines: Vec<&str> = plain.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A home agent's binding changes for `home` logged (at INFO: the engine's events, not the
/// daemon's DEBUG echo of them) after the first `*seen` (which is then advanced): the new
/// care-of address of each, or "removed".
fn binding_changes(ha: &Mipd, home: std::net::Ipv4Addr, seen: &mut usize) -> Vec<String> {
    let plain = strip_ansi(&ha.log_text());
    let home = format!("home={home} ");
    let changes: Vec<String> = plain
        .lines()
        .filter(|l| l.contains(&home) && !l.contains(" DEBUG "))
        .filter_map(|l| {
            let coa = || {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("coa="))
                    .map(str::to_owned)
            };
            if l.contains("binding added") || l.contains("binding moved") {
                coa()
            } else if l.contains("binding removed") || l.contains("binding expired") {
                Some("removed".to_owned())
            } else {
                None
            }
        })
        .collect();
    let new = changes.get(*seen..).unwrap_or_default().to_vec();
    *seen = changes.len();
    new
}

/// Sends `signal` to every process in `ns` (`ip netns pids`).
fn signal_namespace(ns: &mipx_tests::Netns, signal: libc::c_int) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns.name()])
        .output()
        .context("ip netns pids")?;
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill(2) has no memory-safety preconditions; the pids are the namespace's,
        // which only this run's daemons are in.
        unsafe { libc::kill(pid, signal) };
    }
    Ok(())
}

/// The home address a foreign agent should list as its visitor when the node is in `mode`
/// through it: the i-HoA in f, the x-HoA in fvc (the i-HA is reached through the VPN).
fn visitor_home(mode: &str) -> std::net::Ipv4Addr {
    if mode == "f" {
        INTERNAL_HOME_ADDR
    } else {
        EXTERNAL_HOME_ADDR
    }
}

/// Foreign agent `fa`'s visitor row for `home` if it has the reverse tunnel granted, and, on
/// `net` behind the NAT, UDP tunnelling with the home agent (RFC 3519 §4.5).
fn listed_visitor(fa: &Mipd, net: Net, home: std::net::Ipv4Addr) -> Result<Option<Value>> {
    let v = fa.ctl_json(&["visitors"])?;
    Ok(v["visitors"].as_array().and_then(|a| {
        a.iter()
            .find(|r| {
                r["home_addr"] == home.to_string().as_str()
                    && r["reverse_tunnel"] == true
                    && (net != Net::Ext2 || r["udp_tunnel"] == true)
            })
            .cloned()
    }))
}

/// Everything that needs the topology alive; `report` keeps what was measured so far. `xha`:
/// the x-HA (cvc, fvc); `fas`: the walk's foreign agents (fvc) and their networks.
#[expect(
    clippy::too_many_arguments,
    reason = "the walk's daemons and settings, each used throughout"
)]
fn walk_on(
    topo: &mut DetectionTopology,
    charon: &Charon,
    iha: &Mipd,
    xha: Option<&Mipd>,
    fas: &[(Net, Mipd)],
    mode: &'static str,
    mss: Option<u32>,
    ipsec: Ipsec,
    report: &mut WalkReport,
) -> Result<()> {
    let file = |name: &str| topo.dir.path(name);
    let (f_ext1, f_ext2, f_int1, f_int2, f_cn) = (
        file("ext1.pcap"),
        file("ext2.pcap"),
        file("int1.pcap"),
        file("int2.pcap"),
        file("cn.pcap"),
    );
    // External 1 and 2 for the whole walk (nothing plaintext may cross them); internal 1 for
    // mode c's overhead, internal 2 for mode f's where the walk has it; the correspondent's
    // link for the user packets' own length.
    let cap_ext1 = topo.capture_external(&f_ext1)?;
    let cap_ext2 = topo.capture_ext2(&f_ext2, "")?;
    let cap_int1 = Capture::start(&topo.acc, Net::Int1.bridge(), "", &f_int1)?;
    let cap_int2 = if place_mode(mode, Net::Int2) == "c" {
        None
    } else {
        Some(Capture::start(&topo.acc, Net::Int2.bridge(), "", &f_int2)?)
    };
    let capture_of = |net: Net| match net {
        Net::Int1 => f_int1.clone(),
        Net::Int2 => f_int2.clone(),
        Net::Ext1 => f_ext1.clone(),
        Net::Ext2 => f_ext2.clone(),
    };
    let mn_mac = topo
        .mn
        .exec(&["cat", "/sys/class/net/mn0/address"])?
        .trim()
        .to_ascii_lowercase();
    let cap_cn = Capture::start(
        &topo.irt,
        "irt-cn",
        &format!("icmp or tcp port {SESSION_PORT}"),
        &f_cn,
    )?;
    // Debugging aid: the DMZ (x-HA and VPN gateway) and the i-HA's link too.
    let extra = if std::env::var_os("MIPX_LAB_KEEP").is_some() {
        Some([
            topo.capture_vpn_gateway(&topo.dir.path("vgw.pcap"), "")?,
            topo.capture_iha_link(&topo.dir.path("iha.pcap"), "")?,
            topo.capture_xha_link(&topo.dir.path("xha.pcap"), "")?,
        ])
    } else {
        None
    };

    let mn = topo.start_mn(&vpn_toml(topo, charon, mode, "teardown", ipsec)?)?;
    let started = Instant::now();
    let first = poll(DECISION_TIMEOUT, || {
        Ok(decided(&status(&mn)?, mode, Net::Int1))
    })?
    .with_context(|| {
        eprintln!("MN log (last lines):\n{}", log_tail(&mn, 40));
        "not inside in mode c at the start"
    })?;
    poll(Duration::from_secs(10), || {
        Ok((status(&mn)?["vpn"]["state"] == "down").then_some(()))
    })?
    .context("the VPN was not torn down inside")?;
    let stream = SessionStream::start(topo, CHUNK, EVERY, mss)?;
    println!(
        "    start      {first} in {} ms; TCP session {INTERNAL_HOME_ADDR} → {CN_ADDR}:{SESSION_PORT} \
         open ({CHUNK} bytes every {} ms, echoed; {})",
        started.elapsed().as_millis(),
        EVERY.as_millis(),
        mss.map_or("MSS not clamped".into(), |m| format!("MSS {m}")),
    );
    pause(Duration::from_millis(500))?;
    let mut probes = vec![ProbeRun {
        mode: "c",
        net: Net::Int1,
        capture: f_int1.clone(),
        mn_mac: mn_mac.clone(),
        windows: probe(topo)?,
        x_udp: false,
        esp: None,
    }];
    stream.check()?;

    let mut iha_seen = 0;
    binding_changes(iha, INTERNAL_HOME_ADDR, &mut iha_seen);
    let mut xha_seen = 0;
    if let Some(xha) = xha {
        binding_changes(xha, EXTERNAL_HOME_ADDR, &mut xha_seen);
    }
    let walk = [Net::Int2, Net::Ext1, Net::Ext2, Net::Int1];
    let mut last_attached = unix_now();
    for (k, to) in walk.into_iter().enumerate() {
        let from = topo.net();
        let name = format!("{} → {}", short(from), short(to));
        let place = place_mode(mode, to);
        println!(
            "\n==> {mode} {}/{}: {} → {} (link change)",
            k + 1,
            walk.len(),
            segment(from),
            segment(to)
        );
        let before = status(&mn)?;
        let t_start = unix_now();
        // MIPX_LAB_STALL_IHA_MS: the race seen under load, on purpose (see the module doc).
        let stall = std::env::var("MIPX_LAB_STALL_IHA_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .filter(|_| to == Net::Int2)
            .map(Duration::from_millis);
        if stall.is_some() {
            signal_namespace(&topo.iha, libc::SIGSTOP)?;
        }
        let moved = topo.move_mn(to, true);
        if let Some(stall) = stall {
            std::thread::sleep(stall);
            signal_namespace(&topo.iha, libc::SIGCONT)?;
        }
        moved?;
        // Timed from the MN attached to the new network with its link up again.
        let t_attached = unix_now();
        last_attached = t_attached;
        let decision = poll(DECISION_TIMEOUT, || {
            let s = status(&mn)?;
            Ok(decided(&s, mode, to).map(|d| (d, unix_now(), s)))
        })?;
        let first = poll(FIRST_DATA_TIMEOUT, || {
            stream.check()?;
            Ok(stream.first_data_after(t_attached))
        })?;
        let mut mv = MoveReport {
            mode: mode.to_owned(),
            step: name.clone(),
            from: short(from),
            to: short(to),
            link_change: true,
            decision: "(none)".into(),
            reason: String::new(),
            decision_ms: None,
            first_data_ms: first.map(|t| (t - t_attached) * 1000.0),
            gap_ms: 0.0,
            detail: String::new(),
            iha_binding: Vec::new(),
            xha_binding: Vec::new(),
        };
        match &decision {
            Some((d, at, s)) => {
                mv.decision = d.clone();
                mv.decision_ms = Some((at - t_attached) * 1000.0);
                mv.reason = s["interfaces"][0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                mv.detail = detail(s, &before, place, to);
                if let Some((_, fa)) = fas.iter().find(|(n, _)| *n == to) {
                    let home = visitor_home(place);
                    if let Some(row) = listed_visitor(fa, to, home)? {
                        mv.detail
                            .push_str(&format!("; the agent lists {home} as a visitor"));
                        if row["udp_tunnel"] == true {
                            mv.detail.push_str(
                                ", its tunnel with the home agent IP-in-UDP through the NAT (RFC 3519)",
                            );
                        }
                    } else {
                        report.failures.push(format!(
                            "{mode} {name}: the foreign agent on {} does not list {home} as a \
                             visitor with a reverse tunnel (and UDP tunnelling behind the NAT): {}",
                            segment(to),
                            fa.ctl(&["visitors"]).unwrap_or_default()
                        ));
                    }
                }
                println!(
                    "    decision   {d} after {:.0} ms ({}): {}",
                    (at - t_attached) * 1000.0,
                    mv.reason,
                    mv.detail
                );
            }
            None => {
                let s = status(&mn)?;
                println!(
                    "    decision   none within {:?}; status {s}",
                    mipx_tests::daemon::patience(DECISION_TIMEOUT)
                );
                report.failures.push(format!(
                    "{mode} {name}: no decision within {:?}",
                    mipx_tests::daemon::patience(DECISION_TIMEOUT)
                ));
            }
        }
        let Some(first) = first else {
            report.moves.push(mv);
            eprintln!(
                "MN status: {}\nMN log (last lines):\n{}",
                status(&mn)?,
                log_tail(&mn, 40)
            );
            bail!(
                "{mode} {name}: no session data for {:?} after the move",
                mipx_tests::daemon::patience(FIRST_DATA_TIMEOUT)
            );
        };
        println!(
            "    session    first data {:.0} ms after the move",
            (first - t_attached) * 1000.0
        );
        let esp = if to.is_internal() {
            None
        } else {
            let suite = EspSuite::from_list_sas(&charon.list_sas()?)?;
            println!(
                "    ESP        {}, {} mode{} (the MN's charon, {})",
                suite.name,
                if suite.tunnel { "tunnel" } else { "transport" },
                if suite.udp_encap { ", in UDP 4500" } else { "" },
                ipsec_name(ipsec),
            );
            report.esp_suite.get_or_insert_with(|| suite.clone());
            Some(suite)
        };
        let settled = decision.as_ref().map_or(first, |d| d.1.max(first));
        pause(Duration::from_secs_f64(
            (settled + DWELL.as_secs_f64() - unix_now()).max(0.0),
        ))?;
        if place != "c" {
            let x_udp = match status(&mn)?["vpn"].get("external_udp") {
                Some(v) => v == true,
                None => to == Net::Ext2,
            };
            let windows = probe(topo)?;
            println!(
                "    probe      {PROBES_PER_SIZE} pings each of {}–{} bytes from {INTERNAL_HOME_ADDR}, all answered",
                PROBE_PAYLOADS[0],
                PROBE_PAYLOADS[PROBE_PAYLOADS.len() - 1]
            );
            probes.push(ProbeRun {
                mode: place,
                net: to,
                capture: capture_of(to),
                mn_mac: mn_mac.clone(),
                windows,
                x_udp,
                esp,
            });
        }
        stream.check()?;
        mv.gap_ms = stream.longest_gap(t_start, unix_now()) * 1000.0;
        mv.iha_binding = binding_changes(iha, INTERNAL_HOME_ADDR, &mut iha_seen);
        let changes = |c: &[String]| {
            if c.is_empty() {
                "unchanged".to_owned()
            } else {
                format!("→ {}", c.join(" → "))
            }
        };
        let xha_line = match xha {
            Some(xha) => {
                mv.xha_binding = binding_changes(xha, EXTERNAL_HOME_ADDR, &mut xha_seen);
                format!("; x-HA binding {}", changes(&mv.xha_binding))
            }
            None => String::new(),
        };
        println!(
            "    session    longest gap {:.0} ms; i-HA binding {}{xha_line}",
            mv.gap_ms,
            changes(&mv.iha_binding)
        );
        let limit = gap_limit_secs();
        if mv.gap_ms > limit * 1000.0 {
            report.failures.push(format!(
                "{mode} {name}: no session data for {:.1} s (limit {limit} s)",
                mv.gap_ms / 1000.0
            ));
        }
        report.moves.push(mv);
    }
    // Back inside: the VPN goes (inside = "teardown").
    let down = poll(Duration::from_secs(10), || {
        Ok((status(&mn)?["vpn"]["state"] == "down").then(unix_now))
    })?;
    println!(
        "    VPN        {}",
        match down {
            Some(t) => format!(
                "torn down inside ({:.0} ms after the move)",
                (t - last_attached) * 1000.0
            ),
            None => "still up 10 s after coming back inside".into(),
        }
    );
    // The foreign agents' visitors, the node back in internal 1: a visit the node moved away
    // from is not deregistered with the agent; the home agent may tell the old agent only if
    // they share a security association, else "the foreign agent's visitor list will expire
    // naturally when the original Lifetime expires" (RFC 5944 §3.8.2.2).
    for (net, fa) in fas {
        report.agents.push(AgentVisitors {
            segment: segment(*net),
            care_of_addr: net.fa_addr().to_string(),
            text: fa.ctl(&["visitors"])?,
            visitors: fa.ctl_json(&["visitors"])?["visitors"].clone(),
        });
    }
    let totals = stream.finish()?;
    drop(mn);
    for cap in [cap_ext1, cap_ext2, cap_int1, cap_cn]
        .into_iter()
        .chain(cap_int2)
        .chain(extra.into_iter().flatten())
    {
        cap.finish()?;
    }

    // The wire: not one plaintext user packet on either external segment.
    for (net, f) in [(Net::Ext1, &f_ext1), (Net::Ext2, &f_ext2)] {
        let check = SegmentCheck {
            segment: segment(net),
            // `user_packets` (ICMP of the home address) without agent discovery.
            plaintext_icmp: tshark_count(
                f,
                &format!("icmp && ip.addr == {INTERNAL_HOME_ADDR} && !({SIGNALLING})"),
            )?,
            plaintext_session: tshark_count(
                f,
                &format!(
                    "(ip.addr == {INTERNAL_HOME_ADDR} && !({SIGNALLING})) \
                     || tcp.port == {SESSION_PORT}"
                ),
            )?,
            signalling: tshark_count(
                f,
                &format!("ip.addr == {INTERNAL_HOME_ADDR} && ({SIGNALLING})"),
            )?,
            esp_packets: tshark_count(f, "esp")?,
        };
        if check.plaintext_icmp + check.plaintext_session > 0 {
            report.failures.push(format!(
                "{mode}: plaintext user packets on {}: {} ICMP, {} of the home address or the session",
                check.segment, check.plaintext_icmp, check.plaintext_session
            ));
        }
        if check.esp_packets == 0 {
            report.failures.push(format!(
                "{mode}: no ESP at all on {}: did the walk go there?",
                check.segment
            ));
        }
        report.segments.push(check);
    }
    for run in &probes {
        report.overhead.push(overhead_row(run, &f_cn)?);
    }
    report.session = Some(totals);
    Ok(())
}

/// One walk on a fresh topology: cvc (with the x-HA), mc, or fvc (with the x-HA and foreign
/// agents requiring registration on [`AGENT_NETS`]).
fn walk(mode: &'static str, mss: Option<u32>, ipsec: Ipsec) -> WalkReport {
    let t0 = Instant::now();
    let mut report = WalkReport {
        mode: mode.to_owned(),
        ..WalkReport::default()
    };
    let r = (|| -> Result<()> {
        let mut topo = DetectionTopology::new(&format!("l5265{mode}"))?;
        topo.set_ipsec(ipsec);
        topo.start_vpn_gateway(VPN_POOL)?;
        let charon = topo.start_mn_charon()?;
        let iha = topo.start_iha()?;
        let xha = if mode == "mc" {
            None
        } else {
            Some(topo.start_xha()?)
        };
        let mut fas = Vec::new();
        if mode == "fvc" {
            for net in AGENT_NETS {
                // As tests/tests/fa_e2e.rs: reverse tunnels (RFC 3024) offered, and R set, so
                // the node registers through the agent although it has a co-located address.
                // Behind external 2's NAT (which translates every address): RFC 3519 §4.5's
                // agent, reverse tunnels mandatory.
                let fa_toml = if net == Net::Ext2 {
                    "reverse_tunnel = \"require\"\nbehind_nat = true\n"
                } else {
                    "reverse_tunnel = \"offer\"\n"
                };
                let fa =
                    topo.start_foreign_agent(net, fa_toml, "registration_required = true\n")?;
                fas.push((net, fa));
            }
        }
        let r = walk_on(
            &mut topo,
            &charon,
            &iha,
            xha.as_ref(),
            &fas,
            mode,
            mss,
            ipsec,
            &mut report,
        );
        if let Some(dir) = std::env::var_os("MIPX_LAB_KEEP") {
            keep_files(&topo, &Path::new(&dir).join(mode));
        }
        if let Err(e) = &r
            && std::env::var_os("MIPX_LAB_HOLD").is_some()
            && !INTERRUPTED.load(Ordering::Relaxed)
        {
            eprintln!(
                "{e:#}\nMIPX_LAB_HOLD: keeping the topology (namespaces *-l5265{mode}-*) for 120 s"
            );
            let _ = pause(Duration::from_secs(120));
        }
        r
    })();
    if let Err(e) = r {
        report.failures.push(format!("{mode}: {e:#}"));
    }
    report.secs = t0.elapsed().as_secs_f64();
    report.ok = report.failures.is_empty();
    report
}

/// Copies the walk's logs, configurations and captures (the topology's directory) to `to`.
fn keep_files(topo: &DetectionTopology, to: &Path) {
    let copy = || -> Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(&topo.dir.0)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(())
    };
    match copy() {
        Ok(()) => println!("    kept       logs and captures in {}", to.display()),
        Err(e) => eprintln!(
            "warning: keeping the walk's files in {}: {e:#}",
            to.display()
        ),
    }
}

fn print_walk(w: &WalkReport) {
    println!("\n==> {} walk: {:.1} s", w.mode, w.secs);
    if let Some(s) = &w.session {
        println!(
            "    one TCP session throughout: {} bytes written by the MN, echoed, read back and checked",
            s.received
        );
    }
    println!(
        "\n  {:<17} {:<12} {:>9} {:>11} {:>12}",
        "move", "decision", "decided", "first data", "longest gap"
    );
    let ms = |t: Option<f64>| t.map_or("—".to_owned(), |t| format!("{t:.0} ms"));
    for m in &w.moves {
        println!(
            "  {:<17} {:<12} {:>9} {:>11} {:>12}",
            m.step,
            m.decision,
            ms(m.decision_ms),
            ms(m.first_data_ms),
            ms(Some(m.gap_ms))
        );
    }
    for s in &w.segments {
        let plain = if s.plaintext_icmp + s.plaintext_session == 0 {
            "no plaintext user packet".to_owned()
        } else {
            format!(
                "PLAINTEXT: {} ICMP, {} of the home address or session",
                s.plaintext_icmp, s.plaintext_session
            )
        };
        let signalling = if s.signalling > 0 {
            format!(
                " ({} Mobile IP signalling packet{} with {INTERNAL_HOME_ADDR}: registrations \
                 through an agent, agent solicitations)",
                s.signalling,
                if s.signalling == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        };
        println!(
            "  {:<17} {} ESP packets, {plain}{signalling}",
            format!("{}:", s.segment),
            s.esp_packets
        );
    }
    for a in &w.agents {
        println!(
            "\n  foreign agent on {} ({}), `mipctl visitors` after the walk:",
            a.segment, a.care_of_addr
        );
        for line in a.text.lines() {
            println!("    {line}");
        }
    }
}

fn print_overhead(walks: &[WalkReport]) {
    let rows: Vec<&OverheadRow> = walks.iter().flat_map(|w| &w.overhead).collect();
    let Some(first) = rows.first() else {
        return;
    };
    let inner: Vec<usize> = first.sizes.iter().map(|s| s.inner_len).collect();
    println!(
        "\n==> per-packet overhead: outer IPv4 length on the access link (frames from and to the MN) − the user packet's \
         (ICMP from {INTERNAL_HOME_ADDR}, {}–{} octets at the correspondent), both directions",
        inner.first().unwrap_or(&0),
        inner.last().unwrap_or(&0)
    );
    println!(
        "\n  {:<5} {:<17} {:<20} {:<20} RFC 5265 §5.2 (max)",
        "mode", "segment", "measured", "expected"
    );
    // Mode c is measured in both walks: one line unless they differ.
    let mut printed: Vec<(String, &str, String)> = Vec::new();
    for r in &rows {
        let measured: Vec<String> = r
            .sizes
            .iter()
            .map(|s| {
                let mut o: Vec<usize> = s
                    .outer_from_mn
                    .iter()
                    .chain(&s.outer_to_mn)
                    .map(|o| o - s.inner_len)
                    .collect();
                o.sort_unstable();
                o.dedup();
                match o.as_slice() {
                    [] => "?".into(),
                    [one] => one.to_string(),
                    many => many
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join("|"),
                }
            })
            .collect();
        let key = (r.mode.clone(), r.segment, measured.join(" "));
        if printed.contains(&key) {
            continue;
        }
        let expected: Vec<String> = r.sizes.iter().map(|s| s.expected.to_string()).collect();
        println!(
            "  {:<5} {:<17} {:<20} {:<20} {}{}",
            r.mode,
            r.segment,
            key.2,
            expected.join(" "),
            r.rfc,
            if r.matches { "" } else { "   ← differs" }
        );
        printed.push(key);
    }
    // The expected layers as a matrix: one column per distinct layering.
    // Modes with the same layers on the access link (mc and fvc) share a column.
    let mut columns: Vec<(String, &Vec<(String, usize)>)> = Vec::new();
    for r in &rows {
        let label = if r.mode == "cvc" && r.segment.contains("NAT") {
            "cvc NAT".to_owned()
        } else {
            r.mode.clone()
        };
        match columns.iter_mut().find(|(_, p)| *p == &r.parts) {
            Some((l, _)) => {
                if !l.split('/').any(|x| x == label) {
                    *l = format!("{l}/{label}");
                }
            }
            None => columns.push((label, &r.parts)),
        }
    }
    let mut layers: Vec<&str> = Vec::new();
    for (_, parts) in &columns {
        for (name, _) in parts.iter() {
            if !layers.contains(&name.as_str()) {
                layers.push(name);
            }
        }
    }
    println!(
        "\n  expected, layer by layer, for the {}-octet user packet:\n",
        first.sizes.first().map_or(0, |s| s.inner_len)
    );
    let head: Vec<String> = columns.iter().map(|(l, _)| format!("{l:>8}")).collect();
    println!("    {:<52}{}", "", head.join(""));
    for layer in &layers {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, parts)| {
                parts
                    .iter()
                    .find(|(n, _)| n == layer)
                    .map_or(format!("{:>8}", ""), |(_, v)| format!("{v:>8}"))
            })
            .collect();
        println!("    {layer:<52}{}", cells.join(""));
    }
    let totals: Vec<String> = columns
        .iter()
        .map(|(_, parts)| format!("{:>8}", parts.iter().map(|p| p.1).sum::<usize>()))
        .collect();
    println!("    {:<52}{}", "total", totals.join(""));
    use rfc5265_5_2::*;
    let Some(s) = walks.iter().find_map(|w| w.esp_suite.as_ref()) else {
        return;
    };
    let has = |mode: &str| rows.iter().any(|r| r.mode == mode);
    let pads: Vec<usize> = (0..4).map(|k| s.padding(k)).collect();
    let (pmin, pmax) = (
        pads.iter().copied().min().unwrap_or(0),
        pads.iter().copied().max().unwrap_or(0),
    );
    let esp_min = 20 + 8 + s.iv + pmin + 2 + s.icv;
    let esp_max = 20 + 8 + s.iv + pmax + 2 + s.icv;
    let padding = if s.block <= 4 {
        format!("padding {pmin}–{pmax} (a counter mode: to 4 octets, not to 8)")
    } else {
        format!("padding to its {}-octet block", s.block)
    };
    let verdict = match esp_max.cmp(&ESP) {
        std::cmp::Ordering::Equal => {
            format!("the maximum is the RFC's {ESP} again, by another sum")
        }
        std::cmp::Ordering::Less => format!("{} less than the RFC's {ESP}", ESP - esp_max),
        std::cmp::Ordering::Greater => format!("{} more than the RFC's {ESP}", esp_max - ESP),
    };
    println!("\n  Why the figures differ from RFC 5265 §5.2:");
    println!(
        "  - ESP: the RFC counts {ESP} octets: IPv4 20, SPI + sequence 8, IV 8 (a 64-bit block
    cipher), padding up to 7, pad length + next header 2, ICV 12 (HMAC-96). strongSwan
    negotiated {name} here: IPv4 20, SPI + sequence 8, IV {iv},
    {padding}, 2, ICV {icv}:
    {esp_min}–{esp_max} octets; {verdict}.",
        name = s.name,
        iv = s.iv,
        icv = s.icv,
    );
    if s.udp_encap {
        println!(
            "  - NAT-T: kernel-libipsec always carries ESP in UDP 4500 (charon behaves as if behind a
    NAT), so 8 more on external 1 too; the RFC counts IPsec NAT traversal's 8 only behind a NAT."
        );
    }
    if has("cvc") {
        println!(
            "  - cvc behind the NAT (external 2): the x-HA's tunnel is RFC 3519 IP-in-UDP, UDP 8 and
    the 4-octet tunnel header on top of IP-in-IP's 20 ({MIP_NAT_T} more). The RFC's worst case
    for cvc, {worst}, also counts {MIP_NAT_T} for the i-MIP's NAT traversal, which cannot happen
    here: the i-MIP runs from the TIA inside the VPN, with no NAT before the i-HA.",
            worst = CVC + IPSEC_NAT_T + 2 * MIP_NAT_T,
        );
    }
    if has("mc") {
        println!(
            "  - mc is not an RFC 5265 mode (it is draft-ietf-mip4-mobike-connectivity's): the VPN
    runs from the care-of address with MOBIKE and no x-MIP below it: the layering of the RFC's
    fvc (i-MIP inside ESP, {FVC}) without a foreign agent, and no Mobile IP NAT traversal."
        );
    }
    if has("fvc") {
        println!(
            "  - fvc (external 1 and 2, through the foreign agent): the RFC's {FVC} is i-MIP {IPIP} + ESP {ESP};
    here i-MIP {IPIP} + ESP {esp_min}–{esp_max}{udp}, on the access link exactly what mc carries. The
    x-MIP's IP-in-IP ({IPIP}) is between the agent and the x-HA (RFC 3024's reverse tunnel one
    way, the agent decapsulating to the node's link-layer address the other), not on the MN's
    link, which is why §5.2 does not count it. Behind external 2's NAT that tunnel is the
    agent's IP-in-UDP (RFC 3519 §4.5: 32 octets), again not on the MN's link.",
            udp = if s.udp_encap { " + UDP 8" } else { "" },
        );
    }
    if has("f") {
        println!(
            "  - f (internal 2, through the foreign agent): {F} on the access link, as §5.2 says: the
    node sends and receives its user packets as they are, from and to its home address; the
    i-MIP's IP-in-IP ({IPIP}) runs between the agent and the i-HA. The agent's own tunnel
    packets cross the same segment, so the lab counts only frames from and to the MN's
    link-layer address."
        );
    }
    println!(
        "  - The figures are IPv4 lengths (the RFC's octets); each Ethernet frame adds 14 to both."
    );
}

/// How the lab names a backend.
fn ipsec_name(ipsec: Ipsec) -> &'static str {
    match ipsec {
        Ipsec::Kernel => "the kernel's ESP, XFRM interface",
        Ipsec::Libipsec => "kernel-libipsec",
    }
}

fn main() -> Result<()> {
    require_root();
    catch_signals();
    let mut modes: Vec<&'static str> = vec!["cvc", "mc", "fvc"];
    let mut json = None;
    let mut mss = Some(SESSION_MSS);
    let mut ipsec = if mipx_tests::strongswan::kernel_has_esp() {
        Ipsec::Kernel
    } else {
        Ipsec::Libipsec
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => {
                modes = match args.next().context("--mode cvc|mc|fvc|both|all")?.as_str() {
                    "cvc" => vec!["cvc"],
                    "mc" => vec!["mc"],
                    "fvc" => vec!["fvc"],
                    "both" => vec!["cvc", "mc"],
                    "all" => vec!["cvc", "mc", "fvc"],
                    other => bail!(
                        "--mode {other}: cvc, mc, fvc, both (cvc and mc) or all (the default)"
                    ),
                }
            }
            "--json" => json = Some(PathBuf::from(args.next().context("--json FILE")?)),
            "--ipsec" => {
                ipsec = match args.next().context("--ipsec kernel|libipsec")?.as_str() {
                    "kernel" => Ipsec::Kernel,
                    "libipsec" => Ipsec::Libipsec,
                    other => bail!("--ipsec {other}: kernel or libipsec"),
                }
            }
            // Why the clamp is there: after an outage the correspondent's backlog goes out in
            // segments the VPN drops for good (MIPX_LAB_STALL_IHA_MS=2 --mode cvc makes one).
            "--no-mss-clamp" => mss = None,
            other => {
                bail!(
                    "unknown argument {other} (--mode cvc|mc|fvc|both|all, --ipsec kernel|libipsec, --json FILE, --no-mss-clamp)"
                )
            }
        }
    }
    let t0 = Instant::now();
    println!("\n==> building mipd and mipctl");
    mipx_tests::daemon::binaries();
    println!(
        "==> RFC 5265 figure 1 in network namespaces, a fresh topology per mode:
     intranet   i-HA {IHA_ADDR} (home link 10.10.0.0/24), correspondent {CN_ADDR},
                internal subnets 1 and 2 (10.20.1.0/24, 10.20.2.0/24)
     firewall   nftables: nothing from outside in but the VPN's UDP 434 and IP-in-IP to the i-HA
     DMZ        x-HA {XHA_ADDR} (cvc and fvc walks), strongSwan VPN gateway {VPN_GATEWAY_ADDR} (pool {VPN_POOL})
     external 1 198.51.100.0/24; external 2 192.168.5.0/24 behind an nftables NAT ({NAT_PUBLIC_ADDR})
     agents     fvc walk: foreign agents (mipd in role fa: registration required, reverse tunnels)
                on internal 2 ({fa_int2}) and external 1 ({fa_ext1})
     MN         internal home address {INTERNAL_HOME_ADDR}, external home address {EXTERNAL_HOME_ADDR},
                mipd + its own charon ({ipsec}); walk int1 → int2 → ext1 → ext2 → int1",
        ipsec = ipsec_name(ipsec),
        fa_int2 = Net::Int2.fa_addr(),
        fa_ext1 = Net::Ext1.fa_addr(),
    );
    let mut walks = Vec::new();
    for mode in modes {
        println!(
            "\n==> mode {mode}: starting the topology, the VPN gateway, the MN's charon, the i-HA{}",
            match mode {
                "cvc" => ", the x-HA",
                "fvc" => ", the x-HA, the foreign agents on internal 2 and external 1",
                _ => "",
            }
        );
        let w = walk(mode, mss, ipsec);
        print_walk(&w);
        walks.push(w);
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
    }
    print_overhead(&walks);
    let failures: Vec<&String> = walks.iter().flat_map(|w| &w.failures).collect();
    let overhead_mismatch = walks.iter().flat_map(|w| &w.overhead).any(|r| !r.matches);
    if overhead_mismatch {
        println!("\n  note: a measured overhead differs from the computed one (see above)");
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "lab": "rfc5265",
            "ipsec": match ipsec { Ipsec::Kernel => "kernel", Ipsec::Libipsec => "libipsec" },
            "session": { "chunk_bytes": CHUNK, "every_ms": EVERY.as_millis() as u64,
                         "gap_limit_secs": gap_limit_secs(), "mss": mss },
            "probe_payloads": PROBE_PAYLOADS,
            "rfc5265_5_2": { "f": rfc5265_5_2::F, "c": rfc5265_5_2::C, "fvc": rfc5265_5_2::FVC,
                             "cvc": rfc5265_5_2::CVC,
                             "ipsec_nat_t": rfc5265_5_2::IPSEC_NAT_T, "mip_nat_t": rfc5265_5_2::MIP_NAT_T },
            "walks": walks,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\n  results written to {}", path.display());
    }
    println!(
        "\n==> cleaned up: daemons, namespaces and pins removed ({:.1} s in all)",
        t0.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        bail!("{} failure(s)", failures.len());
    }
    Ok(())
}
