//! strongSwan road warrior ↔ VPN gateway in namespaces (groundwork for RFC 5265's VPN layer):
//! IKEv2 with PSK, a virtual IP from a pool, ESP in UDP through kernel-libipsec (the test
//! kernels have no ESP transform), and a MOBIKE move of the client to another network.
//! Privileged: fails, never skips, without root.
//!
//! ```text
//!  ns client                      ns gw (ip_forward)                ns inside
//!  c0 192.0.2.2/24     ─── g-c  192.0.2.1/24
//!  c1 198.51.100.2/24  ─── g-c1 198.51.100.1/24   (MOBIKE target)
//!  ipsec0 <virtual IP>            g-i 10.50.0.1/24  ───  i0 10.50.0.2/24
//! ```

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{Capture, TempDir, tshark_count, wait_for};
use mipx_tests::strongswan::{Charon, Config, TUN};
use mipx_tests::{Netns, require_root, veth_pair};

const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const INSIDE_HOST: &str = "10.50.0.2";
const INTRANET: &str = "10.50.0.0/24";
const POOL: &str = "10.99.0.0/24";

struct Topology {
    client: Netns,
    gw: Netns,
    inside: Netns,
}

fn topology() -> Result<Topology> {
    let t = Topology {
        client: Netns::new("ss-client")?,
        gw: Netns::new("ss-gw")?,
        inside: Netns::new("ss-inside")?,
    };
    veth_pair((&t.client, "c0"), (&t.gw, "g-c"))?;
    veth_pair((&t.client, "c1"), (&t.gw, "g-c1"))?;
    veth_pair((&t.gw, "g-i"), (&t.inside, "i0"))?;
    t.client.add_addr("c0", "192.0.2.2/24")?;
    t.gw.add_addr("g-c", "192.0.2.1/24")?;
    t.gw.add_addr("g-c1", "198.51.100.1/24")?;
    t.gw.add_addr("g-i", "10.50.0.1/24")?;
    t.inside.add_addr("i0", "10.50.0.2/24")?;
    t.client
        .ip(&["route", "add", "default", "via", "192.0.2.1"])?;
    t.inside
        .ip(&["route", "add", "default", "via", "10.50.0.1"])?;
    t.gw.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    Ok(t)
}

/// `ping -c COUNT -I VIP INSIDE_HOST`; Ok iff all replies came back.
fn ping(ns: &Netns, from: Ipv4Addr, count: u32) -> Result<String> {
    ns.exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "2",
        "-I",
        &from.to_string(),
        INSIDE_HOST,
    ])
}

#[test]
fn road_warrior_gets_virtual_ip_and_reaches_intranet_over_esp_in_udp_and_survives_mobike()
-> Result<()> {
    require_root();
    let t = topology()?;
    let dir = TempDir::new("strongswan")?;
    // Declared after the namespaces: the daemons stop before the namespaces go.
    let gw = Charon::start(&t.gw, &dir, "gw", &Config::gateway(POOL, INTRANET))?;
    let client = Charon::start(
        &t.client,
        &dir,
        "client",
        &Config::road_warrior(GW, INTRANET),
    )?;
    gw.load_all()?;
    client.load_all()?;

    // Everything on the client↔gw link, from the first IKE packet on.
    let cap = Capture::start(&t.gw, "g-c", "ip", &dir.path("link.pcap"))?;
    let started = Instant::now();
    let ike_log = client.initiate("intranet")?;
    let ike_time = started.elapsed();
    eprintln!("IKE_SA + CHILD_SA up in {ike_time:?}");
    ensure!(
        ike_log.contains("CHILD_SA intranet{"),
        "no CHILD_SA in the initiate log:\n{ike_log}"
    );

    // kernel-libipsec installs the virtual IP on its TUN device, as a /32.
    let vip = client.wait_virtual_ip(Duration::from_secs(5))?;
    ensure!(
        vip.octets()[..3] == [10, 99, 0],
        "virtual IP {vip} is not from {POOL}"
    );
    ensure!(
        client.tun_addrs()? == [format!("{vip}/32")],
        "unexpected addresses on {TUN}: {:?}",
        client.tun_addrs()?
    );
    let c0 = t.client.ip(&["-4", "-o", "addr", "show", "dev", "c0"])?;
    ensure!(
        !c0.contains(&vip.to_string()),
        "virtual IP also on c0: {c0}"
    );
    eprintln!("virtual IP {vip} on {TUN}");
    let sas = client.list_sas()?;
    ensure!(
        sas.contains("TUNNEL-in-UDP"),
        "CHILD_SA is not UDP-encapsulated:\n{sas}"
    );

    ping(&t.client, vip, 3).context("ping through the tunnel")?;
    // The default source (c0's address) is routed through the tunnel too (routing table 220
    // says `src <vip>`).
    t.client
        .exec(&["ping", "-n", "-c", "1", "-W", "2", INSIDE_HOST])
        .context("ping without -I")?;

    let pcap = cap.finish()?;
    let icmp = tshark_count(&pcap, "icmp")?;
    let esp_udp = tshark_count(&pcap, "esp && udp.port == 4500")?;
    let other = tshark_count(&pcap, "!(udp.port == 500 || udp.port == 4500)")?;
    let total = tshark_count(&pcap, "frame")?;
    eprintln!(
        "client↔gw capture: {total} IPv4 packets, {esp_udp} ESP-in-UDP, {icmp} plaintext ICMP, \
         {other} neither IKE nor ESP-in-UDP"
    );
    ensure!(icmp == 0, "plaintext ICMP on the client↔gw link");
    ensure!(other == 0, "traffic outside IKE/ESP-in-UDP on the link");
    ensure!(
        esp_udp >= 8,
        "expected ≥ 8 ESP-in-UDP packets (4 pings, both ways), saw {esp_udp}"
    );

    // MOBIKE: the client moves from 192.0.2.0/24 (c0) to 198.51.100.0/24 (c1) while pinging.
    let pinger = t
        .client
        .command("ping")
        .args([
            "-n",
            "-i",
            "0.1",
            "-w",
            "6",
            "-W",
            "1",
            "-I",
            &vip.to_string(),
            INSIDE_HOST,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    let cap = Capture::start(&t.gw, "g-c1", "ip", &dir.path("moved.pcap"))?;
    let moved = Instant::now();
    t.client.add_addr("c1", "198.51.100.2/24")?;
    t.client.ip(&["addr", "del", "192.0.2.2/24", "dev", "c0"])?;
    t.client
        .ip(&["route", "replace", "default", "via", "198.51.100.1"])?;
    wait_for(
        Duration::from_secs(10),
        "MOBIKE update to 198.51.100.2",
        || {
            Ok(client
                .list_sas()?
                .contains("@ 198.51.100.2[4500]")
                .then_some(()))
        },
    )?;
    eprintln!(
        "MOBIKE: IKE_SA moved to 198.51.100.2 in {:?}",
        moved.elapsed()
    );
    let out = pinger.wait_with_output()?;
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("ping across the move: {summary}");
    ping(&t.client, vip, 3).context("ping through the tunnel after the MOBIKE move")?;
    ensure!(
        client.wait_virtual_ip(Duration::from_secs(1))? == vip,
        "virtual IP changed"
    );
    let pcap = cap.finish()?;
    let icmp = tshark_count(&pcap, "icmp")?;
    let esp_udp = tshark_count(&pcap, "esp && udp.port == 4500 && ip.src == 198.51.100.2")?;
    eprintln!("new path capture: {esp_udp} ESP-in-UDP from 198.51.100.2, {icmp} plaintext ICMP");
    ensure!(icmp == 0, "plaintext ICMP on the new path");
    ensure!(esp_udp >= 3, "no ESP-in-UDP on the new path");
    eprintln!("client SAs after the move:\n{}", client.list_sas()?);
    drop(client);
    drop(gw);
    Ok(())
}
