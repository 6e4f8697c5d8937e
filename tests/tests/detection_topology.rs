//! The RFC 5265 detection topology itself ([`mipx_tests::detection`]), checked with real traffic
//! and real `mipd` home agents before any mobile node runs the detection: who can reach whom
//! through the firewall (§3.1), what the §3.6.1 misconfiguration opens, what the capture of the
//! external segment sees, and how the i-HA and the x-HA answer plain registrations from each
//! side; then the VPN layer's pieces (§2.3, §4.2) with the MN's strongSwan driven by swanctl:
//! the gateway's policy, NAT traversal from behind the NAT, MOBIKE, a gateway restarted with
//! another pool, and how soon the MN's charon gives up on an unreachable gateway.
//! Privileged: fails, never skips, without root.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{Mipd, tshark_count, wait_for};
use mipx_tests::detection::{
    CN_ADDR, DetectionTopology, EXTERNAL_HOME_ADDR, IHA_ADDR, IHA_SPI, INTERNAL_HOME_ADDR,
    IpipSink, MIP_PORT, NAT_PUBLIC_ADDR, Net, Probe, UdpEcho, VPN_GATEWAY_ADDR, VPN_IDS, VPN_POOL,
    VPN_POOL_2, XCN_ADDR, XHA_ADDR, XHA_SPI, cidr_contains, ipv4_packet, parse_cidr, ping,
    send_ipip, udp_probe,
};
use mipx_tests::require_root;
use mipx_tests::strongswan::{Charon, Config};

fn probe(topo: &DetectionTopology, dst: std::net::Ipv4Addr) -> Result<Probe> {
    udp_probe(
        &topo.mn,
        SocketAddrV4::new(dst, MIP_PORT),
        Duration::from_millis(1500),
    )
}

/// Reachability with no daemon running: from inside everything answers, from outside only the
/// DMZ and the Internet; a UDP probe of port 434 is refused (ICMP port unreachable) where it
/// arrives and unanswered where the firewall drops it; the misconfiguration opens exactly the
/// i-HA's UDP 434; the external capture sees the external segment and nothing else.
#[test]
fn firewall_separates_the_intranet_from_the_external_network() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("dt-reach")?;
    let file = topo.dir.path("ext1.pcap");
    let capture = topo.capture_external(&file)?;

    for (net, link_change) in [(Net::Int1, false), (Net::Int2, true), (Net::Int1, true)] {
        topo.move_mn(net, link_change)?;
        ensure!(topo.net() == net);
        for (dst, what) in [
            (IHA_ADDR, "the i-HA"),
            (XHA_ADDR, "the x-HA"),
            (CN_ADDR, "the intranet correspondent"),
            (XCN_ADDR, "the Internet correspondent"),
        ] {
            ensure!(
                topo.mn_pings(dst)?,
                "from {} the MN cannot ping {what} ({dst})",
                net.name()
            );
        }
        for dst in [IHA_ADDR, XHA_ADDR] {
            let got = probe(&topo, dst)?;
            ensure!(
                got == Probe::Refused,
                "from {} a UDP probe of {dst}:434 got {got:?}, not a port unreachable",
                net.name()
            );
        }
    }

    let drops_before = topo.firewall_drops()?;
    // A silent upstream change: mn0 stays up.
    topo.move_mn(Net::Ext1, false)?;
    for dst in [XHA_ADDR, XCN_ADDR] {
        ensure!(
            topo.mn_pings(dst)?,
            "from external network 1 the MN cannot ping {dst}"
        );
    }
    ensure!(probe(&topo, XHA_ADDR)? == Probe::Refused);
    for dst in [IHA_ADDR, CN_ADDR] {
        ensure!(
            !topo.mn_pings(dst)?,
            "from external network 1 the MN can ping {dst} through the firewall"
        );
    }
    let got = probe(&topo, IHA_ADDR)?;
    ensure!(
        got == Probe::Silent,
        "from outside a UDP probe of the i-HA got {got:?}"
    );
    let drops = topo.firewall_drops()? - drops_before;
    // 2 echoes to each of two hosts, and the probe.
    ensure!(
        drops >= 5,
        "the firewall counted {drops} drops from outside"
    );

    topo.misconfigure_firewall()?;
    let got = probe(&topo, IHA_ADDR)?;
    ensure!(
        got == Probe::Refused,
        "after the misconfiguration a UDP probe of the i-HA got {got:?}"
    );
    ensure!(
        !topo.mn_pings(IHA_ADDR)?,
        "the misconfiguration opened more than UDP 434 to the i-HA"
    );

    let file = capture.finish()?;
    let ext = Net::Ext1.mn_addr();
    ensure!(
        tshark_count(
            &file,
            &format!("icmp.type == 8 && ip.src == {ext} && ip.dst == {XHA_ADDR}")
        )? >= 2,
        "the external capture missed the MN's echoes to the x-HA"
    );
    ensure!(
        tshark_count(
            &file,
            &format!("udp.dstport == 434 && ip.src == {ext} && ip.dst == {IHA_ADDR}")
        )? >= 2,
        "the external capture missed the MN's probes of the i-HA"
    );
    for net in [Net::Int1, Net::Int2] {
        let inside = tshark_count(&file, &format!("ip.addr == {}", net.mn_addr()))?;
        ensure!(
            inside == 0,
            "{inside} packets of {} on the external segment",
            net.name()
        );
    }
    Ok(())
}

/// A plain (pre-RFC 5265) MN's `[mn]` table.
fn plain_mn(
    home: std::net::Ipv4Addr,
    ha: std::net::Ipv4Addr,
    spi: u32,
    key: &Path,
    coa: std::net::Ipv4Addr,
) -> String {
    format!(
        "[mn]\nhome_addr = \"{home}\"\nhome_agent = \"{ha}\"\ncare_of_addr = \"{coa}\"\n\
         spi = {spi}\nkey_file = \"{}\"\nlifetime = 600\nreverse_tunnel = true\n",
        key.display()
    )
}

/// Waits until `ha` has a binding of `home` at `coa`.
fn wait_binding(
    ha: &Mipd,
    mn: &Mipd,
    home: std::net::Ipv4Addr,
    coa: std::net::Ipv4Addr,
) -> Result<()> {
    wait_for(Duration::from_secs(10), "the home agent's binding", || {
        let v = ha.ctl_json(&["bindings"])?;
        let found = v["bindings"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["home_addr"] == home.to_string() && b["care_of_addr"] == coa.to_string())
        });
        Ok(found.then_some(()))
    })
    .with_context(|| format!("HA log:\n{}\nMN log:\n{}", ha.log_text(), mn.log_text()))?;
    wait_for(Duration::from_secs(10), "the MN to be registered", || {
        let v = mn.ctl_json(&["status"])?;
        Ok((v["status"]["mn"]["state"] == "registered").then_some(()))
    })
}

/// The home agents in place: the i-HA accepts a registration from an internal subnet and marks
/// the reply with Trusted Networks Configured (§4.3); from the external network, through the
/// misconfigured firewall, the request reaches it and is dropped unanswered as untrusted; the
/// x-HA accepts the MN from the external network, without the extension.
#[test]
fn home_agents_answer_by_where_the_mobile_node_is() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("dt-has")?;
    let iha = topo.start_iha()?;
    let xha = topo.start_xha()?;
    let (iha_key, xha_key) = (topo.iha_key_file(), topo.xha_key_file());

    // Inside: accepted, with extension 149.
    topo.move_mn(Net::Int1, true)?;
    let file = topo.dir.path("iha-inside.pcap");
    let capture = topo.capture_iha_link(&file, "udp port 434")?;
    let coa = Net::Int1.mn_addr();
    let mn = topo.start_mn(&plain_mn(
        INTERNAL_HOME_ADDR,
        IHA_ADDR,
        IHA_SPI,
        &iha_key,
        coa,
    ))?;
    wait_binding(&iha, &mn, INTERNAL_HOME_ADDR, coa)?;
    let file = capture.finish()?;
    ensure!(
        tshark_count(
            &file,
            &format!("mip.type == 3 && mip.code == 0 && mip.ext.type == 149 && ip.dst == {coa}")
        )? >= 1,
        "no accepted i-HA reply carrying Trusted Networks Configured"
    );
    drop(mn);

    // Outside through the misconfigured firewall: on the i-HA's link, unanswered, counted.
    topo.move_mn(Net::Ext1, true)?;
    topo.misconfigure_firewall()?;
    let dropped_before = iha.stat(&["ha", "dropped_untrusted"])?;
    let file = topo.dir.path("iha-outside.pcap");
    let capture = topo.capture_iha_link(&file, "udp port 434")?;
    let coa = Net::Ext1.mn_addr();
    let mn = topo.start_mn(&plain_mn(
        INTERNAL_HOME_ADDR,
        IHA_ADDR,
        IHA_SPI,
        &iha_key,
        coa,
    ))?;
    // The first request and the retransmission after 1 s reach the i-HA's link.
    let from_outside = format!("mip.type == 1 && ip.src == {coa}");
    capture.wait_count(&from_outside, 2, Duration::from_secs(20))?;
    let status = mn.ctl_json(&["status"])?;
    ensure!(status["status"]["mn"]["state"] == "registering", "{status}");
    // No more requests from here on: each one on the wire must come to be counted.
    drop(mn);
    let file = capture.finish()?;
    let requests = tshark_count(&file, &from_outside)?;
    ensure!(
        tshark_count(&file, "mip.type == 3")? == 0,
        "the i-HA answered"
    );
    wait_for(
        Duration::from_secs(10),
        "every request from outside counted as untrusted",
        || {
            let dropped = iha.stat(&["ha", "dropped_untrusted"])? - dropped_before;
            Ok((dropped as usize >= requests).then_some(()))
        },
    )?;

    // Outside to the x-HA: accepted, no extension 149.
    let file = topo.dir.path("xha-outside.pcap");
    let capture = topo.capture_xha_link(&file, "udp port 434")?;
    let mn = topo.start_mn(&plain_mn(
        EXTERNAL_HOME_ADDR,
        XHA_ADDR,
        XHA_SPI,
        &xha_key,
        coa,
    ))?;
    wait_binding(&xha, &mn, EXTERNAL_HOME_ADDR, coa)?;
    let file = capture.finish()?;
    ensure!(
        tshark_count(
            &file,
            &format!("mip.type == 3 && mip.code == 0 && ip.dst == {coa}")
        )? >= 1,
        "no accepted x-HA reply on the DMZ"
    );
    ensure!(
        tshark_count(&file, "mip.ext.type == 149")? == 0,
        "the x-HA sent Trusted Networks Configured"
    );
    ensure!(xha.stat(&["ha", "dropped_untrusted"])? == 0);
    Ok(())
}

/// RFC 5265 §3's undetectable exit, as [`DetectionTopology::switch_upstream`] models it: the
/// segment under the MN changes with no carrier change and no new address, the MN keeps sending
/// to its old gateway, and the external capture shows those plaintext packets: what the
/// detection's monitoring must bound.
#[test]
fn a_silent_upstream_switch_puts_internal_traffic_on_the_external_segment() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("dt-silent")?;
    topo.move_mn(Net::Int1, true)?;
    ensure!(topo.mn_pings(CN_ADDR)?);
    let file = topo.dir.path("ext1.pcap");
    let capture = topo.capture_external_with(&file, "icmp")?;
    topo.switch_upstream(Net::Ext1)?;
    ensure!(topo.net() == Net::Ext1);
    let link = topo.mn.ip(&["link", "show", "dev", "mn0"])?;
    ensure!(
        link.contains("LOWER_UP") && !link.contains("NO-CARRIER"),
        "mn0 saw the switch:\n{link}"
    );
    ensure!(
        !topo.mn_pings(CN_ADDR)?,
        "the intranet correspondent answered across the switch"
    );
    let file = capture.finish()?;
    let int1 = Net::Int1.mn_addr();
    ensure!(
        tshark_count(
            &file,
            &format!("icmp.type == 8 && ip.src == {int1} && ip.dst == {CN_ADDR}")
        )? >= 2,
        "the MN's packets did not show up on the external segment"
    );
    topo.switch_upstream(Net::Int1)?;
    ensure!(
        topo.mn_pings(CN_ADDR)?,
        "back on internal subnet 1 the MN cannot reach the correspondent"
    );
    Ok(())
}

/// The MN's road-warrior connection for the VPN gateway, as a `swanctl.conf` for
/// [`Charon::load_file`]: IKEv2 with the PSK as [`MN_VPN_ID`], a virtual IP (`vips = 0.0.0.0`),
/// MOBIKE, and a CHILD_SA `intranet` to the i-HA alone (`remote_ts` = IHA_ADDR/32, RFC 5265
/// §2.3: the VPN carries the inner Mobile IP layer).
fn mn_vpn_conf(topo: &DetectionTopology) -> Result<PathBuf> {
    let conf = Config::road_warrior_with(VPN_IDS, VPN_GATEWAY_ADDR, &format!("{IHA_ADDR}/32"));
    topo.dir.write("mn-rw.swanctl.conf", &conf.swanctl, 0o600)
}

/// Starts the MN's charon, loads [`mn_vpn_conf`], brings the VPN up and returns the charon and
/// the tunnel inner address (the virtual IP), checked to be from `pool`.
fn vpn_up(topo: &DetectionTopology, pool: &str) -> Result<(Charon, Ipv4Addr)> {
    let mn = topo.start_mn_charon()?;
    mn.load_file(&mn_vpn_conf(topo)?)?;
    initiate(topo, &mn)?;
    let tia = mn.wait_virtual_ip(Duration::from_secs(5))?;
    ensure!(
        cidr_contains(parse_cidr(pool)?, tia),
        "tunnel inner address {tia} is not from {pool}"
    );
    Ok((mn, tia))
}

fn initiate(topo: &DetectionTopology, mn: &Charon) -> Result<()> {
    let started = Instant::now();
    mn.initiate("intranet")
        .with_context(|| gateway_logs(topo))?;
    eprintln!("VPN up in {:?}", started.elapsed());
    Ok(())
}

fn gateway_logs(topo: &DetectionTopology) -> String {
    topo.vpn_gateway()
        .map_or_else(|| "no VPN gateway running".to_owned(), Charon::logs)
}

/// The IKE_SA line of `swanctl --list-sas` for connection `rw` ("rw: #1, ESTABLISHED, IKEv2,
/// SPIi SPIr"): its unique id and SPIs identify one IKE_SA across MOBIKE updates.
fn ike_sa_line(mn: &Charon) -> Result<Option<String>> {
    Ok(mn
        .list_sas()?
        .lines()
        .find(|l| l.starts_with("rw: #"))
        .map(str::to_owned))
}

/// §4.2's policy at work, checked from the MN: a UDP datagram from the TIA to the i-HA's port
/// 434 arrives there (from the TIA: the gateway does not translate) and the answer (from port
/// 434) comes back; IP-in-IP passes both ways (the MN's reverse tunnel to the i-HA, the i-HA's
/// tunnel to the TIA, through the firewall too); a ping to the i-HA through the same CHILD_SA
/// is dropped by the gateway's policy, and counted. Four ESP packets from the MN in all.
fn check_vpn_policy(topo: &DetectionTopology, echo: &UdpEcho, tia: Ipv4Addr) -> Result<()> {
    let before = echo.senders().len();
    let got = udp_probe(
        &topo.mn,
        SocketAddrV4::new(IHA_ADDR, MIP_PORT),
        Duration::from_secs(10),
    )?;
    ensure!(
        got == Probe::Answered,
        "a UDP datagram to the i-HA's port 434 through the VPN got {got:?}\n{}",
        gateway_logs(topo)
    );
    let senders = echo.senders();
    ensure!(
        senders[before..].iter().any(|s| *s.ip() == tia),
        "the i-HA received {senders:?}, nothing from the TIA {tia}"
    );
    let (at_iha, at_mn) = (IpipSink::start(&topo.iha)?, IpipSink::start(&topo.mn)?);
    send_ipip(
        &topo.mn,
        IHA_ADDR,
        &ipv4_packet(INTERNAL_HOME_ADDR, CN_ADDR, b"reverse tunnel"),
    )?;
    wait_for(
        Duration::from_secs(10),
        "IP-in-IP from the TIA at the i-HA",
        || Ok(at_iha.sources().contains(&tia).then_some(())),
    )
    .with_context(|| format!("the i-HA received IP-in-IP from {:?}", at_iha.sources()))?;
    send_ipip(
        &topo.iha,
        tia,
        &ipv4_packet(CN_ADDR, INTERNAL_HOME_ADDR, b"forward tunnel"),
    )?;
    wait_for(
        Duration::from_secs(10),
        "IP-in-IP from the i-HA at the MN",
        || Ok(at_mn.sources().contains(&IHA_ADDR).then_some(())),
    )
    .with_context(|| format!("the MN received IP-in-IP from {:?}", at_mn.sources()))?;

    let drops = topo.vpn_policy_drops()?;
    ensure!(
        !ping(&topo.mn, IHA_ADDR)?,
        "the i-HA answered a ping through the VPN: the §4.2 policy let ICMP through"
    );
    // Two echo requests, both decrypted by the gateway and refused by its forward chain.
    wait_for(
        Duration::from_secs(10),
        "the gateway's policy to count 2 drops for 2 echoes",
        || Ok((topo.vpn_policy_drops()? - drops >= 2).then_some(())),
    )?;
    Ok(())
}

/// On a capture of the MN's path: every IPv4 packet from or to `mn_addr` (the MN's address, or
/// the NAT's public one behind the NAT) is IKE or ESP-in-UDP (UDP 500/4500) with `peer` (the
/// VPN gateway), the i-HA's address never appears in clear, and at least `min_esp` ESP packets
/// left `mn_addr`. Returns (packets, ESP from it).
fn only_ike_and_esp(
    file: &Path,
    mn_addr: Ipv4Addr,
    peer: Ipv4Addr,
    min_esp: usize,
) -> Result<(usize, usize)> {
    let total = tshark_count(file, &format!("ip.addr == {mn_addr}"))?;
    let other = tshark_count(
        file,
        &format!(
            "ip.addr == {mn_addr} && !((ip.src == {mn_addr} && ip.dst == {peer} || \
             ip.src == {peer} && ip.dst == {mn_addr}) && (udp.port == 500 || udp.port == 4500))"
        ),
    )?;
    let esp = tshark_count(
        file,
        &format!("esp && udp.port == 4500 && ip.src == {mn_addr} && ip.dst == {peer}"),
    )?;
    let plain_iha = tshark_count(file, &format!("ip.addr == {IHA_ADDR}"))?;
    eprintln!(
        "{}: {total} packets of {mn_addr}, {esp} ESP-in-UDP from it, {other} neither IKE nor \
         ESP-in-UDP with {peer}, {plain_iha} with the i-HA in clear",
        file.display()
    );
    ensure!(
        other == 0,
        "{other} packets of {mn_addr} other than IKE/ESP-in-UDP with {peer}"
    );
    ensure!(plain_iha == 0, "the i-HA's address in clear on the segment");
    ensure!(
        esp >= min_esp,
        "expected ≥ {min_esp} ESP-in-UDP packets from {mn_addr}, saw {esp}"
    );
    Ok((total, esp))
}

/// RFC 5265 §2.3/§4.2 from external network 1: the MN's charon gets a TIA from the gateway's
/// pool; UDP 434 from the TIA reaches the i-HA and is answered, ICMP is dropped by the gateway's
/// policy; on the external segment only IKE and ESP-in-UDP with the gateway are seen.
#[test]
fn vpn_from_external_network_1_carries_only_udp_434_and_ip_in_ip_to_the_i_ha() -> Result<()> {
    require_root();
    let started = Instant::now();
    let mut topo = DetectionTopology::new("dt-vpn1")?;
    topo.move_mn(Net::Ext1, true)?;
    topo.start_vpn_gateway(VPN_POOL)?;
    let echo = UdpEcho::start(&topo.iha, MIP_PORT)?;
    let file = topo.dir.path("ext1-vpn.pcap");
    let capture = topo.capture_external_with(&file, "ip")?;
    let (mn, tia) = vpn_up(&topo, VPN_POOL)?;
    eprintln!("TIA {tia}");
    let sas = mn.list_sas()?;
    ensure!(
        sas.contains("TUNNEL-in-UDP")
            && sas.contains(&format!("remote {IHA_ADDR}/32"))
            && sas.contains(&format!("local  {tia}/32")),
        "unexpected CHILD_SA:\n{sas}"
    );
    check_vpn_policy(&topo, &echo, tia)?;
    let file = capture.finish()?;
    // The UDP datagram, the IP-in-IP packet, 2 echoes: at least 4 ESP packets from the MN.
    only_ike_and_esp(&file, Net::Ext1.mn_addr(), VPN_GATEWAY_ADDR, 4)?;
    let ike = tshark_count(
        &file,
        &format!(
            "isakmp && ip.src == {} && udp.dstport == 500",
            Net::Ext1.mn_addr()
        ),
    )?;
    ensure!(ike >= 1, "no IKE_SA_INIT on the external segment");
    drop(mn);
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// The same from external network 2, behind the NAT: IKE detects the NAT and floats to UDP
/// 4500; the gateway sees the NAT's public address only; the same policy applies.
#[test]
fn vpn_from_behind_the_nat_uses_nat_traversal() -> Result<()> {
    require_root();
    let started = Instant::now();
    let mut topo = DetectionTopology::new("dt-vpn2")?;
    topo.move_mn(Net::Ext2, true)?;
    // The NAT works: the Internet correspondent answers the MN's private address.
    ensure!(
        topo.mn_pings(XCN_ADDR)?,
        "from behind the NAT the MN cannot ping the Internet correspondent"
    );
    topo.start_vpn_gateway(VPN_POOL)?;
    let echo = UdpEcho::start(&topo.iha, MIP_PORT)?;
    let inside = topo.dir.path("ext2-vpn.pcap");
    let inside_cap = topo.capture_ext2(&inside, "ip")?;
    let public = topo.dir.path("nat-public-vpn.pcap");
    let public_cap = topo.capture_nat_public(&public, "ip")?;
    let at_gw = topo.dir.path("vgw-vpn.pcap");
    let gw_cap = topo.capture_vpn_gateway(&at_gw, "ip")?;
    let (mn, tia) = vpn_up(&topo, VPN_POOL)?;
    eprintln!("TIA {tia}");
    let gw_sas = topo.vpn_gateway().context("no VPN gateway")?.list_sas()?;
    ensure!(
        gw_sas.contains(&format!("@ {NAT_PUBLIC_ADDR}[")),
        "the gateway does not see the MN at the NAT's public address:\n{gw_sas}"
    );
    check_vpn_policy(&topo, &echo, tia)?;
    let (inside, public, at_gw) = (inside_cap.finish()?, public_cap.finish()?, gw_cap.finish()?);
    let mn_addr = Net::Ext2.mn_addr();
    only_ike_and_esp(&inside, mn_addr, VPN_GATEWAY_ADDR, 4)?;
    only_ike_and_esp(&public, NAT_PUBLIC_ADDR, VPN_GATEWAY_ADDR, 4)?;
    ensure!(
        tshark_count(&public, &format!("ip.addr == {mn_addr}"))? == 0,
        "the MN's private address left the NAT"
    );
    // At the gateway: ESP in UDP to 4500 from the NAT's public address (whatever port the NAT
    // chose), and never the private address.
    let esp = tshark_count(
        &at_gw,
        &format!("esp && ip.src == {NAT_PUBLIC_ADDR} && udp.dstport == 4500"),
    )?;
    ensure!(
        esp >= 3,
        "{esp} ESP-in-UDP packets from the NAT at the gateway"
    );
    ensure!(
        tshark_count(&at_gw, &format!("ip.addr == {mn_addr}"))? == 0,
        "the MN's private address at the gateway"
    );
    drop(mn);
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// MOBIKE (RFC 4555): with the VPN up on external network 1, the MN moves behind the NAT; the
/// IKE_SA follows it (same IKE_SA, same TIA, no new initiate) and UDP 434 from the TIA still
/// reaches the i-HA.
#[test]
fn vpn_follows_the_mobile_node_behind_the_nat_with_mobike() -> Result<()> {
    require_root();
    let started = Instant::now();
    let mut topo = DetectionTopology::new("dt-vpnmob")?;
    topo.move_mn(Net::Ext1, true)?;
    topo.start_vpn_gateway(VPN_POOL)?;
    let echo = UdpEcho::start(&topo.iha, MIP_PORT)?;
    let (mn, tia) = vpn_up(&topo, VPN_POOL)?;
    check_vpn_policy(&topo, &echo, tia)?;
    let ike_sa = ike_sa_line(&mn)?.context("no IKE_SA rw")?;

    let moved = Instant::now();
    topo.move_mn(Net::Ext2, true)?;
    let mn_addr = Net::Ext2.mn_addr();
    wait_for(Duration::from_secs(15), "the MOBIKE update", || {
        let gw = topo.vpn_gateway().context("no VPN gateway")?.list_sas()?;
        Ok((mn.list_sas()?.contains(&format!("@ {mn_addr}[4500]"))
            && gw.contains(&format!("@ {NAT_PUBLIC_ADDR}[")))
        .then_some(()))
    })
    .with_context(|| format!("{}\n{}", mn.logs(), gateway_logs(&topo)))?;
    eprintln!("MOBIKE update in {:?}", moved.elapsed());
    wait_for(
        Duration::from_secs(10),
        "UDP 434 through the moved VPN",
        || {
            let got = udp_probe(
                &topo.mn,
                SocketAddrV4::new(IHA_ADDR, MIP_PORT),
                Duration::from_millis(500),
            )?;
            Ok((got == Probe::Answered).then_some(()))
        },
    )
    .with_context(|| format!("{}\n{}", mn.logs(), gateway_logs(&topo)))?;
    eprintln!("UDP 434 answered {:?} after the move", moved.elapsed());
    check_vpn_policy(&topo, &echo, tia)?;
    ensure!(
        ike_sa_line(&mn)?.as_deref() == Some(ike_sa.as_str()),
        "the IKE_SA changed across the move: {ike_sa} → {:?}",
        ike_sa_line(&mn)?
    );
    ensure!(
        mn.tun_addrs()? == [format!("{tia}/32")],
        "the TIA changed across the move: {:?}",
        mn.tun_addrs()?
    );
    drop(mn);
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// The gateway restarted with another pool ([`DetectionTopology::start_vpn_gateway`] stops the
/// running one, which deletes its SAs): the MN's IKE_SA goes, a new initiate gets a TIA from
/// the second pool, and the policy (which covers both pools) lets UDP 434 through again.
#[test]
fn vpn_gateway_restarted_with_another_pool_hands_out_a_new_tia() -> Result<()> {
    require_root();
    let started = Instant::now();
    let mut topo = DetectionTopology::new("dt-vpnpool")?;
    topo.move_mn(Net::Ext1, true)?;
    topo.start_vpn_gateway(VPN_POOL)?;
    let echo = UdpEcho::start(&topo.iha, MIP_PORT)?;
    let (mn, tia) = vpn_up(&topo, VPN_POOL)?;
    check_vpn_policy(&topo, &echo, tia)?;

    topo.start_vpn_gateway(VPN_POOL_2)?;
    // The old gateway's DELETE reached the MN: no IKE_SA, no TIA left.
    wait_for(Duration::from_secs(5), "the MN to drop its IKE_SA", || {
        Ok(ike_sa_line(&mn)?.is_none().then_some(()))
    })
    .with_context(|| mn.logs())?;
    initiate(&topo, &mn)?;
    let tia2 = mn.wait_virtual_ip(Duration::from_secs(5))?;
    ensure!(
        cidr_contains(parse_cidr(VPN_POOL_2)?, tia2),
        "TIA {tia2} after the restart is not from {VPN_POOL_2}"
    );
    ensure!(
        mn.tun_addrs()? == [format!("{tia2}/32")],
        "addresses on the TUN device: {:?}",
        mn.tun_addrs()?
    );
    check_vpn_policy(&topo, &echo, tia2)?;
    ensure!(
        topo.start_vpn_gateway("10.50.0.0/24").is_err(),
        "a pool outside the routed VPN pools was accepted"
    );
    drop(mn);
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// The MN's charon gives up on a gateway that does not answer within a few seconds (its short
/// retransmission settings, [`mipx_tests::detection::mn_charon`]), so a test, or `mipd`, learns
/// soon that the VPN cannot come up.
#[test]
fn mn_charon_gives_up_on_an_unreachable_vpn_gateway_within_seconds() -> Result<()> {
    require_root();
    let topo = DetectionTopology::new("dt-vpnnone")?;
    // From internal subnet 1 the gateway's address is reachable, but no charon runs there.
    let mn = topo.start_mn_charon()?;
    mn.load_file(&mn_vpn_conf(&topo)?)?;
    let started = Instant::now();
    let res = mn.initiate("intranet");
    let took = started.elapsed();
    eprintln!("initiate failed after {took:?}");
    ensure!(res.is_err(), "the VPN came up with no gateway");
    ensure!(
        took < Duration::from_secs(8),
        "the MN's charon took {took:?} to give up"
    );
    ensure!(ike_sa_line(&mn)?.is_none(), "an IKE_SA is left");
    Ok(())
}
