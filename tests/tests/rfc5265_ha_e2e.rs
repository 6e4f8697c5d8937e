//! RFC 5265 on the home agent's side, end to end with real `mipd` in namespaces and captures
//! of the home link: an internal home agent (i-HA) answers only its trusted networks and marks
//! its replies with the Trusted Networks Configured extension (§4.3); an external home agent
//! (x-HA) drops registrations that arrive on an interface facing the intranet (§3.7).
//! Privileged: fails, never skips, without root.

use std::time::Duration;

use anyhow::{Result, ensure};
use mipx_tests::daemon::{Capture, tshark_count, wait_for};
use mipx_tests::mobility::{Location, Topology};
use mipx_tests::require_root;

/// §4.3: trusted source → answered, with extension 149 on the wire.
#[test]
fn internal_home_agent_marks_replies_to_trusted_networks() -> Result<()> {
    require_root();
    let mut topo = Topology::new("iha-ok", 600)?;
    // Foreign A (10.2.0.0/24) plays an internal subnet here.
    topo.configure_ha_keys(600, "trusted_networks = [\"10.2.0.0/24\"]\n")?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let file = topo.dir.path("iha.pcap");
    let capture = Capture::start(&topo.rt, "rt-ha", "udp port 434", &file)?;
    topo.move_mn(Location::ForeignA, &ha, &mn)?;
    let file = capture.finish()?;
    ensure!(
        tshark_count(
            &file,
            "mip.type == 3 && mip.code == 0 && mip.ext.type == 149"
        )? >= 1,
        "no accepted reply carrying Trusted Networks Configured"
    );
    ensure!(ha.stat(&["ha", "dropped_untrusted"])? == 0);
    Ok(())
}

/// §4.3: with no trusted network an i-HA answers nobody: the requests are on the wire, no
/// reply is, and the drops are counted and logged.
#[test]
fn internal_home_agent_with_no_trusted_network_answers_nobody() -> Result<()> {
    require_root();
    let mut topo = Topology::new("iha-none", 600)?;
    topo.configure_ha_keys(600, "trusted_networks = []\n")?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let file = topo.dir.path("iha-none.pcap");
    let capture = Capture::start(&topo.rt, "rt-ha", "udp port 434", &file)?;
    topo.move_mn_unanswered(Location::ForeignA, &mn)?;
    // The first request and the retransmission after 1 s.
    capture.wait_count("mip.type == 1", 2, Duration::from_secs(20))?;
    let status = mn.ctl_json(&["status"])?;
    ensure!(status["status"]["mn"]["state"] == "registering", "{status}");
    // No more requests from here on, so every one on the wire must come to be counted.
    drop(mn);
    let file = capture.finish()?;
    let requests = tshark_count(&file, "mip.type == 1")?;
    ensure!(
        tshark_count(&file, "mip.type == 3")? == 0,
        "the i-HA answered"
    );
    wait_for(
        Duration::from_secs(10),
        "every request counted as untrusted",
        || Ok((ha.stat(&["ha", "dropped_untrusted"])? as usize >= requests).then_some(())),
    )?;
    ensure!(
        ha.log_text().contains("outside every trusted network"),
        "not logged:\n{}",
        ha.log_text()
    );
    Ok(())
}

/// §3.7: an x-HA drops registrations arriving on an internal interface, before any parsing.
#[test]
fn external_home_agent_drops_registrations_from_internal_interfaces() -> Result<()> {
    require_root();
    let mut topo = Topology::new("xha-int", 600)?;
    topo.configure_ha_keys(600, "internal_interfaces = [\"ha0\"]\n")?;
    let ha = topo.start_ha()?;
    let mn = topo.start_mn()?;
    let file = topo.dir.path("xha.pcap");
    let capture = Capture::start(&topo.rt, "rt-ha", "udp port 434", &file)?;
    topo.move_mn_unanswered(Location::ForeignA, &mn)?;
    capture.wait_count("mip.type == 1", 1, Duration::from_secs(20))?;
    drop(mn);
    let file = capture.finish()?;
    let requests = tshark_count(&file, "mip.type == 1")?;
    ensure!(
        tshark_count(&file, "mip.type == 3")? == 0,
        "the x-HA answered"
    );
    wait_for(Duration::from_secs(10), "every request dropped", || {
        Ok(
            (ha.stat(&["daemon", "dropped_internal_interface"])? as usize >= requests)
                .then_some(()),
        )
    })?;
    ensure!(
        ha.stat(&["ha", "requests"])? == 0,
        "the engine saw the request"
    );
    Ok(())
}
