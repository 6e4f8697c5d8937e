//! RFC 3519 NAT traversal end to end: real `mipd` as home agent and mobile node, the mobile
//! node in foreign C, a private network behind the router's nftables masquerade
//! (tests/src/mobility.rs). Registration through the NAT must set up a UDP tunnel that the
//! eBPF programs carry in both directions; F forces one without a NAT; a NAT that loses its
//! mapping (conntrack flushed, random ports) costs one keepalive interval, not the session. The
//! wire is checked with tshark's Mobile IP dissector. Privileged: fails, never skips, without
//! root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{Capture, Mipd, tshark, wait_for};
use mipx_tests::mobility::{HA_ADDR, Location, NAT_PUBLIC, Stream, Topology};
use mipx_tests::require_root;

fn grew(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// The one binding as `mipctl bindings` shows it: care-of address and UDP tunnel endpoint.
fn binding(ha: &Mipd) -> Result<(String, Option<String>)> {
    let v = ha.ctl_json(&["bindings"])?;
    let b = v["bindings"]
        .as_array()
        .and_then(|b| b.first())
        .context("no binding")?;
    Ok((
        b["care_of_addr"].as_str().unwrap_or_default().to_owned(),
        b["udp_tunnel"].as_str().map(str::to_owned),
    ))
}

fn mn_stat(mn: &Mipd, name: &str) -> Result<u64> {
    let v = mn.ctl_json(&["stats"])?;
    v["stats"]["mn"][name]
        .as_u64()
        .with_context(|| format!("no mn.{name} in mipctl stats"))
}

/// Lines tshark prints for `filter`, one per matching packet.
fn matching(file: &std::path::Path, filter: &str, fields: &[&str]) -> Result<Vec<String>> {
    let mut args = vec!["-Y", filter, "-T", "fields"];
    // `-T fields` needs at least one field.
    for f in if fields.is_empty() {
        &["frame.number"][..]
    } else {
        fields
    } {
        args.extend(["-e", f]);
    }
    Ok(tshark(file, &args)?.lines().map(str::to_owned).collect())
}

/// Through the NAT: the home agent detects it (source ≠ care-of address), answers with an
/// assenting UDP Tunnel Reply, and tunnels to the NAT's address and port; ping and TCP work
/// both ways through ha_xdp, mn_xdp and mn_tc_egress in IP-in-UDP; keepalives are answered.
/// The capture on the home agent's side of the NAT decodes cleanly as Mobile IP: request with
/// extension 144, reply with 44, tunnel data (type 4) carrying the ICMP and TCP.
#[test]
fn registration_through_a_nat_gets_a_working_udp_tunnel() -> Result<()> {
    require_root();
    let mut topo = Topology::new("nat-reg", 600)?;
    topo.configure(
        600,
        "[ha.udp_tunnel]\nkeepalive_secs = 2\n",
        "keepalive_timeout_ms = 500\n",
    )?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let file = topo.dir.path("nat.pcap");
    let capture = Capture::start(&topo.rt, "rt-ha", "udp port 434", &file)?;
    topo.move_mn(Location::BehindNat, &ha, &mn)?;

    let (coa, udp) = binding(&ha)?;
    ensure!(coa == "192.168.4.100", "care-of address {coa}");
    let udp = udp.context("the binding has no UDP tunnel")?;
    ensure!(
        udp.starts_with(&format!("{NAT_PUBLIC}:")),
        "the tunnel goes to {udp}, not to the NAT's address"
    );
    let status = mn.ctl_json(&["status"])?;
    ensure!(
        status["status"]["mn"]["udp_keepalive_secs"] == 2,
        "the mobile node did not adopt the home agent's keepalive interval: {status}"
    );
    let table = ha.ctl(&["bindings"])?;
    ensure!(table.contains("udp nat"), "mipctl bindings:\n{table}");

    let (ha0, mn0) = (ha.dataplane_counters()?, mn.dataplane_counters()?);
    topo.ping_mn(3)?;
    topo.ping_cn_from_home_addr(3)?;
    let stream = Stream::start(&topo, 8192, Duration::from_millis(5))?;
    stream.wait_flowing(Duration::from_secs(10))?;
    let bytes = stream.finish()?;
    let (ha1, mn1) = (ha.dataplane_counters()?, mn.dataplane_counters()?);
    for (name, c0, c1) in [
        ("ha_udp_encap_tx", &ha0, &ha1),
        ("ha_udp_decap_tx", &ha0, &ha1),
        ("mn_udp_decap", &mn0, &mn1),
        ("mn_udp_encap", &mn0, &mn1),
    ] {
        ensure!(
            grew(c0, c1, name) >= 6,
            "{name} grew by {} over 6 pings and {bytes} TCP bytes",
            grew(c0, c1, name)
        );
    }
    for (name, c0, c1) in [
        ("ha_encap_tx", &ha0, &ha1),
        ("mn_encap", &mn0, &mn1),
        ("udp_tunnel_rejected", &ha0, &ha1),
        ("malformed_ipv4", &ha0, &ha1),
    ] {
        ensure!(grew(c0, c1, name) == 0, "{name} moved");
    }
    // RFC 3519 §4.9: keepalives every 2 s, answered through the tunnel.
    wait_for(Duration::from_secs(8), "an answered keepalive", || {
        Ok((mn_stat(&mn, "keepalive_replies")? >= 1).then_some(()))
    })?;
    let file = capture.finish()?;

    let requests = matching(
        &file,
        "mip.type == 1 && mip.ext.utrq.encaptype == 4 && mip.d == 1",
        &["mip.coa"],
    )?;
    ensure!(
        requests.iter().any(|c| c == "192.168.4.100"),
        "no registration request with a UDP Tunnel Request: {requests:?}"
    );
    let replies = matching(
        &file,
        "mip.type == 3 && mip.code == 0 && mip.ext.utrp.code == 0",
        &["mip.ext.utrp.keepalive"],
    )?;
    ensure!(
        replies.iter().any(|k| k == "2"),
        "no assenting UDP Tunnel Reply with keepalive 2: {replies:?}"
    );
    let tcp = matching(&file, "mip.type == 4 && mip.nattt.nexthdr == 4 && tcp", &[])?;
    ensure!(tcp.len() >= 10, "{} tunnelled TCP segments", tcp.len());
    let keepalives = matching(
        &file,
        &format!("mip.type == 4 && icmp.type == 8 && ip.dst == {HA_ADDR}"),
        &[],
    )?;
    ensure!(!keepalives.is_empty(), "no keepalive on the wire");
    let pings = matching(&file, "mip.type == 4 && icmp.type == 0", &[])?;
    ensure!(pings.len() >= 4, "{} tunnelled echo replies", pings.len());
    let malformed = matching(
        &file,
        "_ws.malformed || _ws.expert.severity >= 8388608",
        &[],
    )?;
    ensure!(
        malformed.is_empty(),
        "{} packets tshark finds malformed",
        malformed.len()
    );
    Ok(())
}

/// RFC 3519 §3.1.1: with F the home agent tunnels in UDP even though the request came
/// straight from the care-of address; the tunnel's far end is then the care-of address itself.
#[test]
fn forced_udp_tunnelling_without_a_nat() -> Result<()> {
    require_root();
    let mut topo = Topology::new("nat-force", 600)?;
    topo.configure(600, "", "nat_traversal = \"force\"\n")?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    let (coa, udp) = binding(&ha)?;
    let udp = udp.context("F set, yet no UDP tunnel")?;
    ensure!(
        udp.starts_with(&format!("{coa}:")),
        "tunnel endpoint {udp} is not the care-of address {coa}"
    );
    let (ha0, mn0) = (ha.dataplane_counters()?, mn.dataplane_counters()?);
    topo.ping_mn(3)?;
    topo.ping_cn_from_home_addr(3)?;
    let (ha1, mn1) = (ha.dataplane_counters()?, mn.dataplane_counters()?);
    ensure!(grew(&ha0, &ha1, "ha_udp_encap_tx") >= 6);
    ensure!(grew(&mn0, &mn1, "mn_udp_encap") >= 6);
    ensure!(grew(&ha0, &ha1, "ha_encap_tx") == 0, "IP-in-IP was used");
    Ok(())
}

/// RFC 3519 §4.10: the NAT forgets its mapping and the next datagram from the mobile node gets
/// another port. The home agent does not follow unauthenticated traffic (§4.3, §6), so the
/// mobile node's keepalives go unanswered; it re-registers through the new mapping, the tunnel
/// follows, and the TCP session carries on with every byte intact.
#[test]
fn nat_rebinding_costs_one_keepalive_interval_not_the_session() -> Result<()> {
    require_root();
    const KEEPALIVE: Duration = Duration::from_secs(3);
    const TIMEOUT: Duration = Duration::from_millis(500);
    const RETRIES: u32 = 2;
    let mut topo = Topology::new("nat-rebind", 600)?;
    topo.configure(
        600,
        &format!(
            "[ha.udp_tunnel]\nkeepalive_secs = {}\n",
            KEEPALIVE.as_secs()
        ),
        &format!(
            "keepalive_timeout_ms = {}\nkeepalive_retries = {RETRIES}\n",
            TIMEOUT.as_millis()
        ),
    )?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    topo.move_mn(Location::BehindNat, &ha, &mn)?;
    let stream = Stream::start(&topo, 4096, Duration::from_millis(5))?;
    stream.wait_flowing(Duration::from_secs(10))?;
    let (_, before) = binding(&ha)?;
    let before = before.context("no UDP tunnel")?;
    let ha0 = ha.dataplane_counters()?;
    let ha_dropped0 = ha.stat(&["ha", "dropped_tunnel_data"])?;

    topo.flush_nat()?;
    let flushed = Instant::now();
    // Detection: the next keepalive at most one interval away, then its retries.
    let budget = KEEPALIVE + TIMEOUT * (RETRIES + 1) + Duration::from_secs(1);
    let after = wait_for(budget, "the tunnel to follow the NAT", || {
        let (_, now) = binding(&ha)?;
        Ok(now.filter(|n| *n != before))
    })
    .with_context(|| format!("MN log:\n{}", mn.log_text()))?;
    let rebound = flushed.elapsed();
    ensure!(
        after.starts_with(&format!("{NAT_PUBLIC}:")),
        "the tunnel moved to {after}"
    );
    // At least the flush; a busy machine may cost a keepalive answer its 500 ms and the
    // mapping a second loss, which is the protocol working, not a failure.
    ensure!(mn_stat(&mn, "nat_mapping_losses")? >= 1);
    // Refused before the re-registration: data by the fast path, keepalives by mipd (the fast
    // path hands every tunnelled ICMP to the home agent up, which checks the port, §4.3).
    let ha1 = ha.dataplane_counters()?;
    let refused = grew(&ha0, &ha1, "udp_tunnel_rejected")
        + (ha.stat(&["ha", "dropped_tunnel_data"])? - ha_dropped0);
    ensure!(
        refused >= 1,
        "datagrams through the new mapping were not refused before the re-registration"
    );
    stream
        .wait_flowing(Duration::from_secs(20))
        .context("the stream after the NAT rebinding")?;
    let resumed = flushed.elapsed();
    let gap = stream.longest_gap_since(flushed);
    let bytes = stream.finish().context("the TCP session broke")?;
    println!(
        "NAT mapping lost: tunnel {before} → {after} after {} ms (budget {} ms); stream resumed \
         after {} ms, longest gap {} ms; {bytes} bytes intact",
        rebound.as_millis(),
        budget.as_millis(),
        resumed.as_millis(),
        gap.as_millis()
    );
    Ok(())
}
