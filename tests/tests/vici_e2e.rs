//! mipd's VICI driver (`mipx_control::net::vici`) against a real strongSwan: a road-warrior
//! charon in a namespace, with no connection configured, is given its key and connection over
//! VICI, brings the VPN up, reports the tunnel inner address (the virtual IP), carries traffic
//! to the intranet, and tears down. Privileged: fails, never skips, without root.

use std::net::Ipv4Addr;

use anyhow::{Result, ensure};
use mipx_control::net::vici::{RoadWarrior, Vici};
use mipx_tests::daemon::TempDir;
use mipx_tests::strongswan::{Charon, Config, PSK};
use mipx_tests::{Netns, require_root, veth_pair};

#[test]
fn vici_loads_a_road_warrior_brings_it_up_and_reports_the_tunnel_inner_address() -> Result<()> {
    require_root();
    let client = Netns::new("vc-client")?;
    let gw = Netns::new("vc-gw")?;
    let inside = Netns::new("vc-inside")?;
    veth_pair((&client, "c0"), (&gw, "g-c"))?;
    veth_pair((&gw, "g-i"), (&inside, "i0"))?;
    client.add_addr("c0", "192.0.2.2/24")?;
    gw.add_addr("g-c", "192.0.2.1/24")?;
    gw.add_addr("g-i", "10.50.0.1/24")?;
    inside.add_addr("i0", "10.50.0.2/24")?;
    client.ip(&["route", "add", "default", "via", "192.0.2.1"])?;
    inside.ip(&["route", "add", "default", "via", "10.50.0.1"])?;
    gw.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

    let dir = TempDir::new("vici")?;
    let gateway = Charon::start(
        &gw,
        &dir,
        "gw",
        &Config::gateway("10.99.0.0/24", "10.50.0.0/24"),
    )?;
    gateway.load_all()?;
    // Nothing configured on the client: everything comes over VICI.
    let empty = Config::empty();
    let road = Charon::start(&client, &dir, "client", &empty)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tia = rt.block_on(async {
        let mut vici = Vici::connect(&road.vici).await?;
        vici.load_psk(&["client.test", "gw.test"], PSK).await?;
        let rw = RoadWarrior {
            name: "rfc5265".into(),
            local_addr: None,
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            local_id: "client.test".into(),
            remote_id: "gw.test".into(),
            remote_ts: vec!["10.50.0.0/24".into()],
            dpd_secs: 30,
            if_id: None,
        };
        vici.load_road_warrior(&rw).await?;
        ensure!(
            vici.tunnel_inner_address("rfc5265").await?.is_none(),
            "an SA before initiate"
        );
        vici.initiate("rfc5265", 10_000).await?;
        let sa = vici.ike_sa("rfc5265").await?;
        ensure!(
            sa.as_ref().is_some_and(|s| s.state == "ESTABLISHED"),
            "{sa:?}"
        );
        let tia = vici
            .tunnel_inner_address("rfc5265")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no virtual IP in {sa:?}"))?;
        anyhow::Ok(tia)
    })?;
    ensure!(
        tia.octets()[..3] == [10, 99, 0],
        "tunnel inner address {tia} not from the gateway's pool"
    );
    let ping = client.exec(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-W",
        "2",
        "-I",
        &tia.to_string(),
        "10.50.0.2",
    ]);
    ensure!(
        ping.is_ok(),
        "no traffic through the VPN: {ping:?}\n{}",
        road.logs()
    );

    rt.block_on(async {
        let mut vici = Vici::connect(&road.vici).await?;
        vici.terminate("rfc5265", 5_000).await?;
        ensure!(vici.ike_sa("rfc5265").await?.is_none(), "SA still up");
        anyhow::Ok(())
    })?;
    Ok(())
}
