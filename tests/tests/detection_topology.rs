//! The RFC 5265 detection topology itself ([`mipx_tests::detection`]), checked with real traffic
//! and real `mipd` home agents before any mobile node runs the detection: who can reach whom
//! through the firewall (§3.1), what the §3.6.1 misconfiguration opens, what the capture of the
//! external segment sees, and how the i-HA and the x-HA answer plain registrations from each
//! side. Privileged: fails, never skips, without root.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{Mipd, tshark_count, wait_for};
use mipx_tests::detection::{
    CN_ADDR, DetectionTopology, EXTERNAL_HOME_ADDR, IHA_ADDR, IHA_SPI, INTERNAL_HOME_ADDR,
    MIP_PORT, Net, Probe, XCN_ADDR, XHA_ADDR, XHA_SPI, udp_probe,
};
use mipx_tests::require_root;

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
    // The first request and the retransmission after 1 s.
    std::thread::sleep(Duration::from_millis(2500));
    let file = capture.finish()?;
    let requests = tshark_count(&file, &format!("mip.type == 1 && ip.src == {coa}"))?;
    ensure!(
        requests >= 2,
        "{requests} requests from outside reached the i-HA's link"
    );
    ensure!(
        tshark_count(&file, "mip.type == 3")? == 0,
        "the i-HA answered"
    );
    let dropped = iha.stat(&["ha", "dropped_untrusted"])? - dropped_before;
    ensure!(
        dropped as usize >= requests,
        "{requests} requests on the wire, {dropped} counted as untrusted"
    );
    let status = mn.ctl_json(&["status"])?;
    ensure!(status["status"]["mn"]["state"] == "registering", "{status}");
    drop(mn);

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
