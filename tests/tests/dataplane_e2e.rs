//! End to end through the eBPF dataplane: real `mipd` as home agent and mobile node in network
//! namespaces (tests/src/mobility.rs), real ping and TCP between a correspondent and the mobile
//! node's home address. The dataplane counters prove that the tunnelled packets went through
//! XDP/TC rather than the kernel (which has no ipip here) or user space. Privileged: fails,
//! never skips, without root.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{Capture, Mipd, tshark, wait_for};
use mipx_tests::mobility::{Location, Stream, Topology};
use mipx_tests::require_root;

fn grew(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// Entries in the home agent's binding map, as `mipctl dataplane` reads them from the kernel.
fn map_bindings(ha: &Mipd) -> Result<u64> {
    let v = ha.ctl_json(&["dataplane"])?;
    v["dataplane"]["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "MIPX_BINDINGS")
        .and_then(|m| m["entries"].as_u64())
        .context("no MIPX_BINDINGS entry count in mipctl dataplane")
}

#[test]
fn ping_and_tcp_reach_the_away_mobile_node_and_back() -> Result<()> {
    require_root();
    let mut topo = Topology::new("e2e-ping", 600)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    ensure!(map_bindings(&ha)? == 1, "the binding is not in the map");

    let (ha0, mn0) = (ha.dataplane_counters()?, mn.dataplane_counters()?);
    topo.ping_mn(3)?;
    topo.ping_cn_from_home_addr(3)?;
    let stream = Stream::start(&topo, 4096, Duration::from_millis(2))?;
    stream.wait_flowing(Duration::from_secs(10))?;
    let bytes = stream.finish()?;
    let (ha1, mn1) = (ha.dataplane_counters()?, mn.dataplane_counters()?);

    // Each direction went through the programs: encapsulated by the HA and decapsulated by
    // the MN (CN → MN), encapsulated by the MN and decapsulated by the HA (MN → CN).
    for (name, c0, c1, at_least) in [
        ("ha_encap_tx", &ha0, &ha1, 6),
        ("ha_decap_tx", &ha0, &ha1, 6),
        ("mn_decap", &mn0, &mn1, 6),
        ("mn_encap", &mn0, &mn1, 6),
    ] {
        ensure!(
            grew(c0, c1, name) >= at_least,
            "{name} grew by {} (< {at_least}) over 6 pings and {bytes} TCP bytes",
            grew(c0, c1, name)
        );
    }
    for name in [
        "reverse_tunnel_rejected",
        "mn_tunnel_rejected",
        "malformed_ipv4",
    ] {
        ensure!(
            grew(&ha0, &ha1, name) + grew(&mn0, &mn1, name) == 0,
            "{name} moved"
        );
    }
    Ok(())
}

#[test]
fn moves_keep_the_tcp_session_and_home_restores_direct_delivery() -> Result<()> {
    require_root();
    let mut topo = Topology::new("e2e-move", 600)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let stream = Stream::start(&topo, 8192, Duration::from_millis(5))?;
    for to in [Location::ForeignA, Location::ForeignB, Location::Home] {
        topo.move_mn(to, &ha, &mn)?;
        stream
            .wait_flowing(Duration::from_secs(20))
            .with_context(|| format!("the stream after moving to {}", to.name()))?;
    }
    // Deregistered at home: nothing left in the map, and traffic no longer touches the tunnel.
    wait_for(Duration::from_secs(5), "an empty binding map", || {
        Ok((map_bindings(&ha)? == 0).then_some(()))
    })?;
    let before = ha.dataplane_counters()?;
    topo.ping_mn(3)?;
    stream.wait_flowing(Duration::from_secs(10))?;
    let after = ha.dataplane_counters()?;
    for name in ["ha_encap_tx", "ha_encap_to_stack", "arp_proxied"] {
        ensure!(
            grew(&before, &after, name) == 0,
            "{name} grew at home: delivery is not direct"
        );
    }
    stream
        .finish()
        .context("the TCP session did not survive the moves")?;
    Ok(())
}

#[test]
fn kill_9_of_the_home_agent_daemon_loses_no_session() -> Result<()> {
    require_root();
    let mut topo = Topology::new("e2e-kill", 600)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    let stream = Stream::start(&topo, 8192, Duration::from_millis(5))?;
    stream.wait_flowing(Duration::from_secs(10))?;

    ha.kill_hard()?;
    // No daemon: the pinned programs and maps keep forwarding.
    stream
        .wait_flowing(Duration::from_secs(5))
        .context("the stream stopped when mipd was killed")?;

    let ha = topo.start_ha()?;
    let v = ha.ctl_json(&["bindings"])?;
    let coa = v["bindings"][0]["care_of_addr"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        coa == Location::ForeignA.mn_addr().to_string(),
        "the restarted home agent did not adopt the binding: {v}"
    );
    let dp = ha.ctl_json(&["dataplane"])?;
    ensure!(
        dp["dataplane"]["attachments"][0]["adopted"] == true,
        "the restarted home agent did not take over the pinned link: {dp}"
    );
    stream.wait_flowing(Duration::from_secs(5))?;
    // The adopted binding is live state: a move re-registers against it.
    topo.move_mn(Location::ForeignB, &ha, &mn)?;
    stream.wait_flowing(Duration::from_secs(20))?;
    stream.finish()?;
    Ok(())
}

/// The mobile node's side of the restart story: its TC egress program (the reverse tunnel)
/// keeps running without `mipd`, and the next `mipd` takes it over in place: a pinned TCX link
/// from Linux 6.6, a `cls_bpf` filter swapped in place before (one filter, not a second one
/// beside it, which would tunnel every packet twice); `mipd --unload` removes it.
#[test]
fn kill_9_of_the_mobile_node_daemon_loses_no_session() -> Result<()> {
    require_root();
    let mut topo = Topology::new("e2e-kill-mn", 600)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    let stream = Stream::start(&topo, 8192, Duration::from_millis(5))?;
    stream.wait_flowing(Duration::from_secs(10))?;
    let encap = |mn: &mipx_tests::daemon::Mipd| mn.stat(&["dataplane", "mn_encap"]);

    mn.kill_hard()?;
    // No daemon: the programs and maps keep reverse-tunnelling the stream's ACKs.
    stream
        .wait_flowing(Duration::from_secs(5))
        .context("the stream stopped when the mobile node's mipd was killed")?;

    let mn = topo.start_mn()?;
    let dp = mn.ctl_json(&["dataplane"])?;
    let attachments = dp["dataplane"]["attachments"]
        .as_array()
        .context("no attachments")?;
    let tc = attachments
        .iter()
        .find(|a| a["program"] == "mn_tc_egress")
        .with_context(|| format!("mn_tc_egress is not attached: {dp}"))?;
    ensure!(
        tc["adopted"] == true,
        "the restarted mobile node did not take over its TC program: {dp}"
    );
    if tc["hook"].as_str().unwrap_or_default().contains("clsact") {
        let filters = topo
            .mn
            .exec(&["tc", "filter", "show", "dev", "mn0", "egress"])?;
        // One line per filter ("... handle 0x1 mn_tc_egress direct-action ... name
        // mn_tc_egress ..."), after a line per priority.
        let ours = filters
            .lines()
            .filter(|l| l.contains(" handle ") && l.contains("mn_tc_egress"))
            .count();
        ensure!(ours == 1, "{ours} mn_tc_egress filters on mn0:\n{filters}");
    }
    // A restarted mobile node starts from "not registered" (it resets its tunnel until it
    // registers again, unlike the home agent, which adopts its bindings); once it has, the
    // program it took over tunnels the stream again.
    let before = encap(&mn)?;
    topo.move_mn(Location::ForeignB, &ha, &mn)?;
    stream.wait_flowing(Duration::from_secs(20))?;
    wait_for(
        Duration::from_secs(10),
        "reverse tunnelling after the restart",
        || Ok((encap(&mn)? > before).then_some(())),
    )?;
    stream.finish()?;

    // `mipd --unload` takes everything off mn0, the netlink filters too.
    mn.stop()?;
    unload(&topo.mn, &topo.mn_conf)?;
    let filters = topo
        .mn
        .exec(&["tc", "filter", "show", "dev", "mn0", "egress"])?;
    ensure!(
        !filters.contains("mn_tc_egress"),
        "mn_tc_egress still on mn0 after --unload:\n{filters}"
    );
    let link = topo.mn.ip(&["link", "show", "dev", "mn0"])?;
    ensure!(
        !link.contains("xdp"),
        "XDP still on mn0 after --unload:\n{link}"
    );
    Ok(())
}

#[test]
fn an_expired_binding_leaves_the_map() -> Result<()> {
    require_root();
    // A 3-second lifetime, and an MN that dies without renewing or deregistering.
    let mut topo = Topology::new("e2e-expire", 3)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    ensure!(map_bindings(&ha)? == 1, "the binding is not in the map");
    mn.kill_hard()?;
    wait_for(Duration::from_secs(10), "the binding to expire", || {
        let v = ha.ctl_json(&["bindings"])?;
        Ok(v["bindings"]
            .as_array()
            .is_some_and(|b| b.is_empty())
            .then_some(()))
    })?;
    ensure!(
        map_bindings(&ha)? == 0,
        "the expired binding is still in the dataplane map"
    );
    // And the fast path no longer tunnels to the stale care-of address.
    let before = ha.dataplane_counters()?;
    let _ = topo.ping_mn(2);
    let after = ha.dataplane_counters()?;
    ensure!(
        grew(&before, &after, "ha_encap_tx") + grew(&before, &after, "ha_encap_to_stack") == 0,
        "packets were still tunnelled after expiry"
    );
    Ok(())
}

/// `mipd --config CONFIG --unload` in `ns`, which must succeed.
fn unload(ns: &mipx_tests::Netns, config: &std::path::Path) -> Result<()> {
    let (mipd, _) = mipx_tests::daemon::binaries();
    let out = ns
        .command(mipd)
        .arg("--config")
        .arg(config)
        .arg("--unload")
        .output()?;
    ensure!(
        out.status.success(),
        "mipd --unload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The link-layer address of `ifname` in `ns`.
fn mac_of(ns: &mipx_tests::Netns, ifname: &str) -> Result<String> {
    let text = ns.ip(&["-br", "link", "show", "dev", ifname])?;
    text.split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .context("no MAC in ip -br link")
}

/// RFC 5944 §4.6 on the home link, as a capture of the HA's interface shows it: a gratuitous
/// ARP mapping the home address to the HA's MAC when the binding is created, and one mapping it
/// back to the MN's own MAC when the MN deregisters at home; both sent from the HA's own MAC.
#[test]
fn home_agent_sends_gratuitous_arp_on_registration_and_deregistration() -> Result<()> {
    require_root();
    let mut topo = Topology::new("e2e-garp", 600)?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let (ha_mac, mn_mac) = (mac_of(&topo.ha, "ha0")?, mac_of(&topo.mn, "mn0")?);
    let file = topo.dir.path("home-link.pcap");
    let capture = Capture::start(&topo.ha, "ha0", "arp", &file)?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    topo.move_mn(Location::Home, &ha, &mn)?;
    // Three announcements each, 500 ms apart: wait until all six are on the wire.
    let home = mipx_tests::mobility::HOME_ADDR.to_string();
    for sha in [&ha_mac, &mn_mac] {
        capture.wait_count(
            &format!(
                "arp.isgratuitous == 1 && eth.src == {ha_mac} && arp.src.hw_mac == {sha} \
                 && arp.src.proto_ipv4 == {home}"
            ),
            3,
            Duration::from_secs(10),
        )?;
    }
    let file = capture.finish()?;
    let fields = tshark(
        &file,
        &[
            "-Y",
            "arp.isgratuitous == 1",
            "-T",
            "fields",
            "-e",
            "eth.src",
            "-e",
            "arp.src.hw_mac",
            "-e",
            "arp.src.proto_ipv4",
        ],
    )?;
    let sent_by_ha = |sha: &str| {
        fields
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                f.len() == 3 && f[0] == ha_mac && f[1] == sha && f[2] == home
            })
            .count()
    };
    ensure!(
        sent_by_ha(&ha_mac) >= 3,
        "expected 3 gratuitous ARPs for {home} at the HA's MAC {ha_mac} on registration:\n{fields}"
    );
    ensure!(
        sent_by_ha(&mn_mac) >= 3,
        "expected 3 gratuitous ARPs from the HA for {home} at the MN's MAC {mn_mac} on deregistration:\n{fields}"
    );
    Ok(())
}

/// Stopping `mipd` leaves the dataplane attached on purpose (forwarding survives a restart);
/// `mipd --unload` is how an operator removes it: the XDP program leaves the interface and the
/// pins are gone.
#[test]
fn a_clean_stop_keeps_the_dataplane_and_unload_removes_it() -> Result<()> {
    require_root();
    let topo = Topology::new("e2e-unload", 600)?;
    let ha = topo.start_ha()?;
    ha.stop()?;
    let link = topo.ha.ip(&["link", "show", "dev", "ha0"])?;
    ensure!(
        link.contains("xdp"),
        "XDP left ha0 when mipd stopped:\n{link}"
    );

    unload(&topo.ha, &topo.ha_conf)?;
    let link = topo.ha.ip(&["link", "show", "dev", "ha0"])?;
    ensure!(
        !link.contains("xdp"),
        "XDP still on ha0 after --unload:\n{link}"
    );
    ensure!(
        !topo.pin_root().join("ha").exists(),
        "the pin directory survived --unload"
    );
    Ok(())
}
