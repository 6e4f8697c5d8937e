//! The mobility lab (`cargo xtask lab --scenario mobility`): a correspondent node streams TCP
//! to a mobile node's home address while the mobile node moves home → foreign A → foreign B →
//! home. Real `mipd` processes run as home agent and mobile node with their eBPF dataplanes, so every packet to
//! or from the away mobile node is tunnelled by XDP/TC, never by the kernel or user space.
//! With `--nat` the walk is home → A → C → B → home, where foreign C is a private network
//! behind an nftables masquerade: there the home agent sees the NAT and the tunnel becomes
//! RFC 3519 IP-in-UDP to the NAT's address and port.
//!
//! For each move it prints the registration time, the longest gap in the stream and the
//! dataplane counters; it exits non-zero if the stream broke, and always cleans up
//! (namespaces, daemons and bpffs pins go away on drop, also on error).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use mipx_tests::mobility::{HOME_ADDR, Location, Stream, Topology};
use mipx_tests::require_root;

/// The counters worth watching per move, by role.
const HA_COUNTERS: &[&str] = &[
    "ha_encap_tx",
    "ha_udp_encap_tx",
    "ha_encap_to_stack",
    "ha_decap_tx",
    "ha_udp_decap_tx",
    "ha_decap_to_stack",
    "arp_proxied",
    "frag_needed_sent",
    "reverse_tunnel_rejected",
    "udp_tunnel_rejected",
    "udp_keepalive",
];
const MN_COUNTERS: &[&str] = &[
    "mn_encap",
    "mn_udp_encap",
    "mn_decap",
    "mn_udp_decap",
    "mn_tunnel_rejected",
    "udp_keepalive",
];

/// With `MIPX_LAB_HOLD` set, a failure keeps the namespaces for two minutes so they can be
/// inspected (`ip netns`, `tcpdump`, `bpftool`) before cleanup.
fn hold_on_error<T>(r: Result<T>) -> Result<T> {
    if let Err(e) = &r
        && std::env::var_os("MIPX_LAB_HOLD").is_some()
    {
        eprintln!("{e:#}\nMIPX_LAB_HOLD: keeping the topology for 120 s");
        std::thread::sleep(Duration::from_secs(120));
    }
    r
}

fn main() -> Result<()> {
    require_root();
    let nat = std::env::args().skip(1).any(|a| a == "--nat");
    let t0 = Instant::now();
    step("building mipd and mipctl");
    mipx_tests::daemon::binaries();

    step("creating the topology");
    println!(
        "
   ns cn                 ns rt (router)                              ns ha
  ┌──────────────┐      ┌──────────────────────────────────┐      ┌──────────────────┐
  │ correspondent│ cn0  │ 10.0.0.1                         │ ha0  │ home agent       │
  │ 10.0.0.2     ├──────┤ br-home 10.1.0.1 (home link) ────┼──────┤ 10.1.0.2  XDP    │
  └──────────────┘      │ br-a    10.2.0.1 (foreign A)     │      └──────────────────┘
                        │ br-b    10.3.0.1 (foreign B)     │      ┌──────────────────┐
                        │ br-c 192.168.4.1 (foreign C,     │      │                  │
                        │      private, nftables NAT)      │      │                  │
                        │   rt-mn moves between bridges ───┼──────┤ mobile node  mn0 │
                        └──────────────────────────────────┘      │ home {HOME_ADDR}  │
                                                                   │ XDP + TC egress  │
                                                                   └──────────────────┘"
    );
    let mut topo = Topology::new("lab", 600)?;
    if nat {
        // A short keepalive so the lab shows a few in the time it runs (RFC 3519 §4.9's
        // default is 110 s).
        topo.configure(600, "[ha.udp_tunnel]\nkeepalive_secs = 2\n", "")?;
    }

    step("starting mipd as home agent and as mobile node (dataplanes attached and pinned)");
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let show = ha.ctl(&["dataplane"]).with_context(|| ha.log_text())?;
    section("mipctl dataplane (home agent)", &show);

    step("streaming TCP from the correspondent to the mobile node's home address");
    // 8 KiB every 5 ms (~13 Mbit/s): full-size segments, so the tunnel's MTU matters.
    let stream = Stream::start(&topo, 8192, Duration::from_millis(5))?;
    stream.wait_flowing(Duration::from_secs(10))?;
    println!("    stream established, at home, delivered directly");

    let walk: &[Location] = if nat {
        &[
            Location::ForeignA,
            Location::BehindNat,
            Location::ForeignB,
            Location::Home,
        ]
    } else {
        &[Location::ForeignA, Location::ForeignB, Location::Home]
    };
    let mut rows = Vec::new();
    for &to in walk {
        let before = (ha.dataplane_counters()?, mn.dataplane_counters()?);
        let from = topo.location();
        let moved_at = Instant::now();
        let registration = topo
            .move_mn(to, &ha, &mn)
            .with_context(|| format!("moving {} → {}", from.name(), to.name()))?;
        hold_on_error(stream.wait_flowing(Duration::from_secs(20)))
            .with_context(|| {
                format!(
                    "after the move to {}\nethtool -S ha0:\n{}\nrt-ha:\n{}{}\nHA stats:\n{}\nMN stats:\n{}\nrt neighbours:\n{}\nMN log:\n{}",
                    to.name(),
                    topo.ha.exec(&["ethtool", "-S", "ha0"]).unwrap_or_default(),
                    topo.rt.exec(&["ethtool", "-S", "rt-ha"]).unwrap_or_default(),
                    topo.rt.exec(&["ethtool", "-k", "rt-ha"]).unwrap_or_default(),
                    ha.ctl(&["stats"]).unwrap_or_default(),
                    mn.ctl(&["stats"]).unwrap_or_default(),
                    topo.rt.ip(&["neigh"]).unwrap_or_default(),
                    mn.log_text(),
                )
            })?;
        // Let it run a little so the counters show the steady state in the new place.
        std::thread::sleep(Duration::from_millis(700));
        let gap = stream.longest_gap_since(moved_at);
        let after = (ha.dataplane_counters()?, mn.dataplane_counters()?);
        println!(
            "\n==> moved {} → {}: registration {} ms, longest stream gap {} ms",
            from.name(),
            to.name(),
            registration.as_millis(),
            gap.as_millis()
        );
        if to != Location::Home {
            let tunnel = ha.ctl_json(&["bindings"])?["bindings"][0]["udp_tunnel"]
                .as_str()
                .map_or("IP-in-IP to the care-of address".to_owned(), |end| {
                    format!("IP-in-UDP (RFC 3519) to {end}, the NAT's side")
                });
            println!("    tunnel       {tunnel}");
        }
        print_deltas("home agent", HA_COUNTERS, &before.0, &after.0);
        print_deltas("mobile node", MN_COUNTERS, &before.1, &after.1);
        rows.push((from, to, registration, gap));
    }

    step("checking the stream end to end");
    let bytes = stream.finish().context("the TCP stream broke")?;
    println!("    {bytes} bytes sent and received intact over one TCP connection");

    let stats = ha.ctl(&["stats"])?;
    let nonzero: Vec<&str> = stats
        .lines()
        .filter(|l| !l.trim_end().ends_with(" 0"))
        .collect();
    section(
        "mipctl stats (home agent; counters at zero left out)",
        &nonzero.join("\n"),
    );
    println!("\n  move                            registration   stream gap");
    for (from, to, reg, gap) in &rows {
        println!(
            "  {:<15} → {:<15} {:>9} ms {:>9} ms",
            from.name(),
            to.name(),
            reg.as_millis(),
            gap.as_millis()
        );
    }
    ensure!(rows.len() == walk.len(), "not every move completed");

    drop(mn);
    drop(ha);
    drop(topo);
    step(&format!(
        "cleaned up: daemons, namespaces and pins removed ({:.1} s in all)",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn print_deltas(
    who: &str,
    names: &[&str],
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) {
    let parts: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let d = after.get(*n).copied().unwrap_or(0) - before.get(*n).copied().unwrap_or(0);
            (d > 0).then(|| format!("{n} +{d}"))
        })
        .collect();
    let text = if parts.is_empty() {
        "(no tunnel traffic)".to_owned()
    } else {
        parts.join(", ")
    };
    println!("    {who:<12} {text}");
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn section(title: &str, body: &str) {
    println!("\n  ┌─ {title}");
    for line in body.lines() {
        println!("  │ {line}");
    }
    println!("  └─");
}
