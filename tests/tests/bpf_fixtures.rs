//! The eBPF object, loaded through `mipx_control::dataplane` and exercised with
//! `BPF_PROG_TEST_RUN` over a fixture table, plus one native attach to a veth inside network
//! namespaces. Privileged: these tests fail (never skip) without root.

use std::{collections::BTreeMap, ffi::CString};

use anyhow::{Context as _, Result, ensure};
use aya::{maps::PerCpuArray, programs::XdpMode};
use mipx_common::{counters::Counter, maps::COUNTERS_MAP};
use mipx_control::dataplane::{
    Dataplane,
    programs::{ALL_TC, ALL_XDP, HA_XDP as MIPX_XDP, MIPX_DROP, MIPX_PASS},
};
use mipx_tests::{
    Netns,
    bpf::{
        run_xdp,
        xdp_action::{self, XDP_DROP, XDP_PASS},
    },
    require_root, veth_pair,
};

/// Ethernet/IPv4/UDP 192.0.2.1:434 -> 198.51.100.1:434, payload "mipx", 46 bytes.
/// Provenance: scapy 2.5.0 (Debian python3-scapy), independent of our code:
/// `raw(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
///      / IP(src="192.0.2.1", dst="198.51.100.1", id=1, ttl=64)
///      / UDP(sport=434, dport=434) / b"mipx")`
const UDP_FRAME: &str = "0200000000020200000000010800450000200001000040118e96c0000201c6336401\
                         01b201b2000c325a6d697078";

/// Broadcast ARP request who-has 192.0.2.2 tell 192.0.2.1, 42 bytes.
/// Provenance: scapy 2.5.0:
/// `raw(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")
///      / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="192.0.2.1", pdst="192.0.2.2"))`
const ARP_FRAME: &str = "ffffffffffff02000000000108060001080006040001020000000001c000020100000000\
                         0000c0000202";

/// Offset of the IPv4 header in an untagged Ethernet frame.
const IP: usize = 14;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex fixture");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex fixture"))
        .collect()
}

/// `UDP_FRAME` with `edit` applied: malformed variants are one deliberate change away from a
/// frame an independent tool produced, so each fixture tests exactly one thing.
fn udp_with(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = hex(UDP_FRAME);
    edit(&mut frame);
    frame
}

struct Fixture {
    name: &'static str,
    program: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// `None`: the program must leave the frame untouched.
    output: Option<Vec<u8>>,
    /// The one counter the run must bump; `None`: no counter may move (the baselines).
    counter: Option<Counter>,
}

fn fixtures() -> Vec<Fixture> {
    let untouched = None;
    vec![
        Fixture {
            name: "valid IPv4/UDP passes",
            program: MIPX_XDP,
            input: hex(UDP_FRAME),
            verdict: XDP_PASS,
            output: untouched.clone(),
            counter: Some(Counter::Passed),
        },
        Fixture {
            name: "valid IPv4/UDP with Ethernet padding passes",
            program: MIPX_XDP,
            // Padded to the 60-byte Ethernet minimum, as a NIC would deliver it.
            input: udp_with(|f| f.resize(60, 0)),
            verdict: XDP_PASS,
            output: untouched.clone(),
            counter: Some(Counter::Passed),
        },
        Fixture {
            name: "10-byte runt passes as truncated Ethernet",
            program: MIPX_XDP,
            input: udp_with(|f| f.truncate(10)),
            verdict: XDP_PASS,
            output: untouched.clone(),
            counter: Some(Counter::TruncatedEth),
        },
        Fixture {
            name: "ARP passes as not IPv4",
            program: MIPX_XDP,
            input: hex(ARP_FRAME),
            verdict: XDP_PASS,
            output: untouched.clone(),
            counter: Some(Counter::NotIpv4),
        },
        Fixture {
            name: "Ethernet header only (EtherType IPv4, no IP header) drops",
            program: MIPX_XDP,
            input: udp_with(|f| f.truncate(IP)),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "truncated IPv4 header (10 of 20 bytes) drops",
            program: MIPX_XDP,
            input: udp_with(|f| f.truncate(IP + 10)),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "IHL=4 drops",
            program: MIPX_XDP,
            input: udp_with(|f| f[IP] = 0x44),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "IP version 6 behind EtherType IPv4 drops",
            program: MIPX_XDP,
            input: udp_with(|f| f[IP] = 0x65),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "total length 19 < IHL*4 drops",
            program: MIPX_XDP,
            input: udp_with(|f| f[IP + 2..IP + 4].copy_from_slice(&19u16.to_be_bytes())),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "IHL=15 (header longer than the 32-byte datagram) drops",
            program: MIPX_XDP,
            input: udp_with(|f| f[IP] = 0x4f),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "total length beyond the frame drops",
            program: MIPX_XDP,
            input: udp_with(|f| f[IP + 2..IP + 4].copy_from_slice(&33u16.to_be_bytes())),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: Some(Counter::MalformedIpv4),
        },
        Fixture {
            name: "drop baseline drops a valid frame",
            program: MIPX_DROP,
            input: hex(UDP_FRAME),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: None,
        },
        Fixture {
            name: "drop baseline drops a runt",
            program: MIPX_DROP,
            input: udp_with(|f| f.truncate(10)),
            verdict: XDP_DROP,
            output: untouched.clone(),
            counter: None,
        },
        Fixture {
            name: "pass baseline passes a malformed frame",
            program: MIPX_PASS,
            input: udp_with(|f| f[IP] = 0x44),
            verdict: XDP_PASS,
            output: untouched,
            counter: None,
        },
    ]
}

fn counters(dataplane: &Dataplane) -> BTreeMap<Counter, u64> {
    dataplane
        .counters()
        .expect("reading counters")
        .into_iter()
        .collect()
}

/// Runs one fixture; returns a description of every mismatch.
fn check(dataplane: &mut Dataplane, fixture: &Fixture) -> Result<Vec<String>> {
    let before = counters(dataplane);
    let program = dataplane.xdp(fixture.program)?;
    let run = run_xdp(program, &fixture.input)?;
    let after = counters(dataplane);

    let mut problems = Vec::new();
    if run.verdict != fixture.verdict {
        problems.push(format!(
            "verdict {} ({}), expected {} ({})",
            xdp_action::name(run.verdict),
            run.verdict,
            xdp_action::name(fixture.verdict),
            fixture.verdict
        ));
    }
    let expected_output = fixture.output.as_ref().unwrap_or(&fixture.input);
    if &run.output != expected_output {
        problems.push(format!(
            "output {:02x?}, expected {expected_output:02x?}",
            run.output
        ));
    }
    for counter in Counter::ALL {
        let delta = after[&counter] - before[&counter];
        let expected = u64::from(fixture.counter == Some(*counter));
        if delta != expected {
            problems.push(format!(
                "counter {} moved by {delta}, expected {expected}",
                counter.name()
            ));
        }
    }
    Ok(problems)
}

#[test]
fn xdp_fixture_table() {
    require_root();
    let mut dataplane = Dataplane::load().expect("loading the embedded eBPF object");
    let mut failures = Vec::new();
    for fixture in fixtures() {
        let problems = check(&mut dataplane, &fixture)
            .with_context(|| format!("fixture `{}`", fixture.name))
            .expect("running fixture");
        failures.extend(
            problems
                .into_iter()
                .map(|p| format!("{} [{}]: {p}", fixture.name, fixture.program)),
        );
    }
    assert!(
        failures.is_empty(),
        "fixture mismatches:\n  {}",
        failures.join("\n  ")
    );
}

/// Every program passes the verifier and every named map is there with the right shape, so a
/// rename on one side of the user/kernel boundary fails here rather than at attach time.
#[test]
fn object_has_every_program_and_map() {
    require_root();
    let mut dataplane = Dataplane::load().expect("loading the embedded eBPF object");
    for name in ALL_XDP {
        dataplane
            .xdp(name)
            .unwrap_or_else(|e| panic!("loading {name}: {:#}", anyhow::Error::new(e)));
    }
    for name in ALL_TC {
        dataplane
            .tc(name)
            .unwrap_or_else(|e| panic!("loading {name}: {:#}", anyhow::Error::new(e)));
    }
    {
        let map = dataplane
            .ebpf_mut()
            .map(COUNTERS_MAP)
            .unwrap_or_else(|| panic!("no map {COUNTERS_MAP}"));
        let counters =
            PerCpuArray::<_, u64>::try_from(map).expect("counters map is PerCpuArray<u64>");
        assert_eq!(counters.len(), Counter::COUNT);
    }
    let fresh = counters(&dataplane);
    assert!(
        fresh.values().all(|&n| n == 0),
        "fresh counters must start at zero: {fresh:?}"
    );
}

/// Native (driver-mode) attach of `mipx_xdp` to a veth inside a namespace, with real traffic:
/// proves the object loads, attaches and counts on this kernel, not only under test-run.
#[test]
fn mipx_xdp_attached_to_veth_counts_ping() -> Result<()> {
    require_root();
    // Namespaces first, dataplane second: locals drop in reverse order, so the program is
    // detached before its interface disappears.
    let left = Netns::new("left")?;
    let right = Netns::new("right")?;
    veth_pair((&left, "mipx-l"), (&right, "mipx-r"))?;
    left.add_addr("mipx-l", "10.201.0.1/24")?;
    right.add_addr("mipx-r", "10.201.0.2/24")?;

    let mut dataplane = Dataplane::load()?;
    {
        let program = dataplane.xdp(MIPX_XDP)?;
        // The interface name resolves in the calling thread's namespace.
        let _inside = right.enter()?;
        let ifname = CString::new("mipx-r")?;
        program
            .attach(&ifname, XdpMode::Driver)
            .context("attaching mipx_xdp to mipx-r in driver mode")?;
    }
    // Driver mode shows as `xdp` in `ip link`; a silent fallback would show `xdpgeneric`.
    let link = right.ip(&["-d", "link", "show", "dev", "mipx-r"])?;
    ensure!(
        link.contains(" xdp ") && !link.contains("xdpgeneric"),
        "mipx_xdp is not attached in driver mode:\n{link}"
    );

    let before = counters(&dataplane);
    // Frames sent into mipx-l arrive on mipx-r, where XDP runs; XDP_PASS then hands them to
    // the stack, which must still answer, so the ping succeeding proves pass-through as well.
    let ping = left
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "10.201.0.2"])
        .output()
        .context("running ping (iputils-ping; `cargo xtask setup` installs it)")?;
    ensure!(
        ping.status.success(),
        "ping across the veth failed: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let after = counters(&dataplane);

    let grew = |c: Counter| after[&c] - before[&c];
    ensure!(
        grew(Counter::Passed) >= 3,
        "Passed grew by {} for 3 echo requests ({before:?} -> {after:?})",
        grew(Counter::Passed)
    );
    ensure!(
        grew(Counter::MalformedIpv4) == 0,
        "well-formed pings counted as malformed ({before:?} -> {after:?})"
    );
    Ok(())
}
