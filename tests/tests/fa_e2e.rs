//! The foreign agent end to end (RFC 5944 §2-§4, RFC 3024): `mipd` as a foreign agent
//! (`role = "fa"`) on external network 1's segment with its XDP fast path, a `mipd` home agent
//! in the DMZ (the x-HA of the RFC 5265 topology, here an ordinary home agent) and a plain
//! `mipd` mobile node that finds the agent by its advertisements and registers through it. Checked on a capture of the segment
//! (dissected by tshark), on the agent's visitor list and on its fast-path counters.
//! Privileged: fails, never skips, without root.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use mipx_tests::daemon::{ensure_dissects_cleanly, tshark_count, wait_for};
use mipx_tests::detection::{DetectionTopology, EXTERNAL_HOME_ADDR, Net, XCN_ADDR, XHA_ADDR};
use mipx_tests::require_root;

/// A plain mobile node whose home agent is the DMZ's, with agent discovery on `mn0` and no
/// co-located care-of address: it can only register through a foreign agent.
fn mn_toml(topo: &DetectionTopology) -> String {
    format!(
        "[mn]\nhome_addr = \"{EXTERNAL_HOME_ADDR}\"\nhome_agent = \"{XHA_ADDR}\"\n\
         spi = {spi}\nkey_file = \"{key}\"\nlifetime = 600\nreverse_tunnel = true\n\
         nat_traversal = \"off\"\n\n[mn.agent_discovery]\ninterface = \"mn0\"\n",
        spi = mipx_tests::detection::XHA_SPI,
        key = topo.xha_key_file().display(),
    )
}

/// The walk of RFC 5944 §2-§3 through a foreign agent: advertisements (periodic, and the
/// answer to the node's solicitation) → registration relayed to the home agent and its reply
/// relayed back → the visitor list → user data both ways through the agent's fast path
/// (decapsulation to the node's link-layer address, reverse tunnel to the home agent) →
/// deregistration removes the visitor.
#[test]
fn a_mobile_node_registers_through_the_foreign_agent_and_its_traffic_flows() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("fa-walk")?;
    topo.move_mn(Net::Ext1, true)?;
    let file = topo.dir.path("ext1.pcap");
    let capture = topo.capture_external(&file)?;
    // One visitor at most: with it registered, the agent advertises B (RFC 5944 §2.1.1).
    let fa = topo.start_foreign_agent(
        Net::Ext1,
        "reverse_tunnel = \"offer\"\nmax_visitors = 1\n",
        "",
    )?;
    let _xha = topo.start_xha()?;
    let mn = topo.start_mn_with(&mn_toml(&topo), false)?;

    // Registered through the agent: its care-of address, and the agent lists the visitor
    // with the node's link-layer address and the reverse tunnel granted.
    let visitor = wait_for(Duration::from_secs(10), "the visitor", || {
        let v = fa.ctl_json(&["visitors"])?;
        Ok(v["visitors"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|row| row["home_addr"] == EXTERNAL_HOME_ADDR.to_string())
            .cloned())
    })
    .with_context(|| {
        format!(
            "no visitor; fa log:\n{}\nmn log:\n{}",
            fa.log_text(),
            mn.log_text()
        )
    })?;
    ensure!(
        visitor["care_of_addr"] == Net::Ext1.fa_addr().to_string(),
        "{visitor}"
    );
    ensure!(visitor["home_agent"] == XHA_ADDR.to_string(), "{visitor}");
    ensure!(visitor["reverse_tunnel"] == true, "{visitor}");
    let mac_in_ns = topo
        .mn
        .exec(&["cat", "/sys/class/net/mn0/address"])?
        .trim()
        .to_owned();
    ensure!(visitor["mac"] == mac_in_ns, "{visitor} vs mn0 {mac_in_ns}");
    let status = mn.ctl_json(&["status"])?;
    ensure!(
        status["status"]["mn"]["care_of_addr"] == Net::Ext1.fa_addr().to_string(),
        "the node's status does not show the agent's care-of address: {status}"
    );
    let text = fa.ctl(&["visitors"])?;
    ensure!(
        text.contains(&EXTERNAL_HOME_ADDR.to_string()) && text.contains("yes"),
        "{text}"
    );

    // User data from the home address, both ways through the agent.
    ensure!(
        ping_from_home(&topo)?,
        "no answer from the Internet correspondent through the foreign agent; fa log:\n{}",
        fa.log_text()
    );
    let counters = fa.dataplane_counters()?;
    eprintln!("visitors:\n{text}\nfa counters: {counters:?}");
    for name in ["fa_decap_tx", "fa_encap_tx"] {
        ensure!(
            counters.get(name).copied().unwrap_or(0) > 0,
            "{name} did not count: {counters:?}"
        );
    }

    // Advertisements go out at most 1.5 s apart (the default interval): wait for one while
    // the agent is full, for the capture to show B, and two in all.
    capture.wait_count(
        "icmp.type == 9 && icmp.mip.b == 1",
        1,
        Duration::from_secs(15),
    )?;
    capture.wait_count(
        "icmp.type == 9 && icmp.mip.flags",
        2,
        Duration::from_secs(15),
    )?;

    // Deregistration on shutdown removes the visitor.
    mn.stop()?;
    wait_for(Duration::from_secs(5), "the visitor's removal", || {
        let v = fa.ctl_json(&["visitors"])?;
        Ok(v["visitors"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(()))
    })
    .context("the visitor outlived its deregistration")?;

    // On the wire, dissected by tshark: agent advertisements with the mobility extension,
    // the node's solicitation, and the registration relayed both ways.
    let file = capture.finish()?;
    let adverts = tshark_count(&file, "icmp.type == 9 && icmp.mip.flags")?;
    ensure!(adverts >= 2, "{adverts} agent advertisements");
    let care_of = Net::Ext1.fa_addr();
    ensure!(
        tshark_count(
            &file,
            &format!(
                "icmp.type == 9 && icmp.mip.f == 1 && icmp.mip.rt == 1 && icmp.mip.coa == {care_of} && ip.ttl == 1"
            )
        )? >= 2,
        "no advertisement with F, T and the care-of address, TTL 1"
    );
    ensure!(
        tshark_count(&file, "icmp.type == 9 && icmp.mip.b == 1")? >= 1,
        "the full agent never advertised B"
    );
    ensure!(
        tshark_count(&file, "icmp.type == 9 && icmp.mip.b == 0")? >= 1,
        "the agent advertised B before it was full"
    );
    ensure!(
        tshark_count(&file, "icmp.type == 10 && ip.ttl == 1")? >= 1,
        "no agent solicitation"
    );
    ensure!(
        tshark_count(
            &file,
            &format!(
                "mip.type == 1 && ip.src == {EXTERNAL_HOME_ADDR} && ip.dst == {} && ip.ttl == 255",
                Net::Ext1.fa_addr()
            )
        )? >= 1,
        "no registration request from the home address to the agent with TTL 255"
    );
    ensure!(
        tshark_count(
            &file,
            &format!(
                "mip.type == 1 && ip.src == {} && ip.dst == {XHA_ADDR}",
                Net::Ext1.fa_addr()
            )
        )? >= 1,
        "no relayed registration request"
    );
    ensure!(
        tshark_count(
            &file,
            &format!("mip.type == 3 && ip.dst == {EXTERNAL_HOME_ADDR}")
        )? >= 1,
        "no relayed registration reply"
    );
    ensure_dissects_cleanly(&file)?;
    Ok(())
}

/// RFC 3519 §4.5 end to end: the foreign agent on external network 2, behind the nftables
/// NAT, advertises U, asks the home agent for UDP tunnelling on the node's behalf, and both
/// tunnel directions run IP-in-UDP through the NAT (fa_xdp at the agent), kept open by the
/// agent's keepalives (§4.9), which the home agent answers. On the NAT's public side there is
/// no IP-in-IP at all: only UDP to and from port 434.
#[test]
fn an_agent_behind_a_nat_tunnels_in_udp() -> Result<()> {
    use mipx_tests::detection::NAT_PUBLIC_ADDR;
    require_root();
    let mut topo = DetectionTopology::new("fa-nat")?;
    topo.move_mn(Net::Ext2, true)?;
    let public = topo.dir.path("nat-public.pcap");
    let capture = topo.capture_nat_public(&public, "")?;
    let access = topo.dir.path("ext2.pcap");
    let access_capture = topo.capture_ext2(&access, "")?;
    // §4.5: behind a NAT that translates every address, reverse tunnelling is mandatory.
    let fa = topo.start_foreign_agent(
        Net::Ext2,
        "reverse_tunnel = \"require\"\nbehind_nat = true\nkeepalive_secs = 10\n",
        "",
    )?;
    let xha = topo.start_xha()?;
    let mn = topo.start_mn_with(&mn_toml(&topo), false)?;

    let visitor = wait_for(Duration::from_secs(10), "the visitor", || {
        let v = fa.ctl_json(&["visitors"])?;
        Ok(v["visitors"].as_array().and_then(|a| a.first()).cloned())
    })
    .with_context(|| {
        format!(
            "no visitor; fa log:\n{}\nmn log:\n{}",
            fa.log_text(),
            mn.log_text()
        )
    })?;
    ensure!(
        visitor["udp_tunnel"] == true,
        "not UDP-tunnelled: {visitor}"
    );
    ensure!(visitor["reverse_tunnel"] == true, "{visitor}");
    let text = fa.ctl(&["visitors"])?;
    ensure!(text.contains("ip-in-udp"), "{text}");
    // The home agent binds the agent's care-of address with the NAT's mapping as the tunnel's
    // far end (§4.6: "the effective care-of address").
    ensure_tunnel_to_the_nat(&xha, Net::Ext2.fa_addr())?;

    ensure!(
        ping_from_home(&topo)?,
        "no answer through the agent behind the NAT; fa log:\n{}\nxha log:\n{}",
        fa.log_text(),
        xha.log_text()
    );
    let counters = fa.dataplane_counters()?;
    for name in ["fa_udp_decap_tx", "fa_udp_encap_tx"] {
        ensure!(
            counters.get(name).copied().unwrap_or(0) > 0,
            "{name} did not count: {counters:?}"
        );
    }
    // §4.9: a keepalive 10 s after the registration, answered by the home agent through the
    // same mapping.
    wait_for(Duration::from_secs(20), "an answered keepalive", || {
        Ok((fa.stat(&["fa", "keepalive_replies"])? > 0).then_some(()))
    })
    .with_context(|| format!("fa log:\n{}\nxha log:\n{}", fa.log_text(), xha.log_text()))?;
    // The answer came up through the fast path, recognised as the home agent's keepalive reply.
    let counters = fa.dataplane_counters()?;
    ensure!(
        counters.get("fa_keepalive").copied().unwrap_or(0) > 0,
        "fa_keepalive did not count: {counters:?}"
    );

    mn.stop()?;
    let public = capture.finish()?;
    let access = access_capture.finish()?;
    ensure!(
        tshark_count(&public, "ip.proto == 4")? == 0,
        "IP-in-IP on the NAT's public side"
    );
    // Tunnel data: UDP between port 434 on both ends carrying the MIP Tunnel Data header
    // (type 4, Next Header 4) and the ping inside.
    let tunnelled = tshark_count(
        &public,
        &format!(
            "udp.port == 434 && ip.addr == {XHA_ADDR} && ip.addr == {NAT_PUBLIC_ADDR} && icmp && ip.addr == {EXTERNAL_HOME_ADDR}"
        ),
    )?;
    ensure!(
        tunnelled >= 2,
        "{tunnelled} tunnelled pings on the NAT's public side"
    );
    ensure!(
        tshark_count(&access, "icmp.type == 9 && icmp.mip.u == 1")? >= 1,
        "no advertisement with U on external network 2"
    );
    ensure!(
        tshark_count(&public, "mip.type == 1 && mip.ext.type == 144")? >= 1,
        "no relayed request with the agent's UDP Tunnel Request"
    );
    ensure!(
        tshark_count(&public, "mip.type == 3 && mip.ext.type == 44")? >= 1,
        "no reply with a UDP Tunnel Reply"
    );
    ensure_dissects_cleanly(&public)?;
    ensure_dissects_cleanly(&access)?;
    Ok(())
}

/// RFC 3519 §4.4, §4.6, §4.11 end to end: on external network 2 (behind the NAT) the agent
/// advertises R and U; a node with a co-located care-of address there registers it through
/// the agent ('D'), its UDP Tunnel Request carrying 'R'; the home agent assents but binds the
/// tunnel only from the node's first keepalive, which arrives from the NAT's address through
/// the node's own mapping (another port than the agent's); then the node's own IP-in-UDP
/// carries its traffic both ways, and the agent's fast path does nothing for it.
#[test]
fn a_co_located_node_registers_through_an_agent_behind_a_nat() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("fa-natr")?;
    topo.move_mn(Net::Ext2, true)?;
    let fa = topo.start_foreign_agent(
        Net::Ext2,
        "reverse_tunnel = \"require\"\nbehind_nat = true\n",
        "registration_required = true\n",
    )?;
    let xha = topo.start_xha()?;
    let toml = mn_toml(&topo)
        .replace("nat_traversal = \"off\"\n", "nat_traversal = \"auto\"\n")
        .replace(
            "lifetime = 600\n",
            &format!(
                "lifetime = 600\ncare_of_addr = \"{}\"\n",
                Net::Ext2.mn_addr()
            ),
        );
    let mn = topo.start_mn(&toml)?;
    let context = || {
        format!(
            "mn log:\n{}\nfa log:\n{}\nxha log:\n{}",
            mn.log_text(),
            fa.log_text(),
            xha.log_text()
        )
    };

    // The agent lists the node, co-located; the home agent's tunnel goes to the node's own
    // NAT mapping, learnt from its keepalive.
    wait_for(Duration::from_secs(10), "the co-located visitor", || {
        let v = fa.ctl_json(&["visitors"])?;
        Ok(v["visitors"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|r| r["care_of_addr"] == Net::Ext2.mn_addr().to_string())
            })
            .then_some(()))
    })
    .with_context(context)?;
    wait_for(
        Duration::from_secs(10),
        "the half-bound tunnel bound",
        || Ok((xha.stat(&["ha", "half_bound_tunnels_bound"])? > 0).then_some(())),
    )
    .with_context(context)?;
    ensure_tunnel_to_the_nat(&xha, Net::Ext2.mn_addr())?;
    ensure!(
        ping_from_home(&topo)?,
        "no answer through the node's own UDP tunnel; {}",
        context()
    );
    let counters = fa.dataplane_counters()?;
    for name in [
        "fa_udp_decap_tx",
        "fa_udp_encap_tx",
        "fa_decap_tx",
        "fa_encap_tx",
    ] {
        ensure!(
            counters.get(name).copied().unwrap_or(0) == 0,
            "the agent tunnelled for a co-located node ({name}): {counters:?}"
        );
    }
    Ok(())
}

/// The home agent's one binding has `care_of_addr` and its UDP tunnel ends at the NAT's
/// public address (RFC 3519 §4.6: "the effective care-of address").
fn ensure_tunnel_to_the_nat(ha: &mipx_tests::daemon::Mipd, care_of_addr: Ipv4Addr) -> Result<()> {
    use mipx_tests::detection::NAT_PUBLIC_ADDR;
    let bindings = ha.ctl_json(&["bindings"])?;
    let b = bindings["bindings"]
        .as_array()
        .and_then(|a| a.first())
        .with_context(|| format!("no binding at the home agent: {bindings}"))?;
    ensure!(b["care_of_addr"] == care_of_addr.to_string(), "{b}");
    ensure!(
        b["udp_tunnel"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{NAT_PUBLIC_ADDR}:"))),
        "the home agent's tunnel does not go to the NAT: {b}"
    );
    Ok(())
}

fn ping_from_home(topo: &DetectionTopology) -> Result<bool> {
    for _ in 0..5 {
        if topo
            .mn
            .exec(&[
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                &EXTERNAL_HOME_ADDR.to_string(),
                &XCN_ADDR.to_string(),
            ])
            .is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn status(mn: &mipx_tests::daemon::Mipd) -> Result<serde_json::Value> {
    Ok(mn.ctl_json(&["status"])?["status"].clone())
}

fn wait_mode(mn: &mipx_tests::daemon::Mipd, location: &str, mode: &str) -> Result<()> {
    wait_for(
        Duration::from_secs(20),
        &format!("{location} in mode {mode}"),
        || {
            let s = status(mn)?;
            let i = &s["interfaces"][0];
            Ok((i["location"] == location && i["mode"] == mode).then_some(()))
        },
    )
    .with_context(|| format!("MN log:\n{}", mn.log_text()))
}

/// RFC 5265 modes f and fvc (§2.2, §2.4; §4.1: the mobile node MUST support them) with
/// foreign agents that require registration (R) on internal subnet 2 and external network 1:
/// internal 1 (c) → internal 2 (f: the i-HA through the agent) → external 1 (fvc: the x-HA
/// through the agent, the VPN from the x-HoA, the TIA registered with the i-HA) → internal 1
/// (c). Both registrations of the parallel detection go through the same agent from the same
/// link-layer address (§3.5). Pings from the internal home address to the correspondent get
/// answers in every mode, and external 1 never carries them in plaintext.
#[test]
fn modes_f_and_fvc_through_foreign_agents() -> Result<()> {
    use mipx_tests::detection::{CN_ADDR, INTERNAL_HOME_ADDR, Pinger, VPN_POOL};
    require_root();
    let mut topo = DetectionTopology::new("fa-fvc")?;
    topo.start_vpn_gateway(VPN_POOL)?;
    let charon = topo.start_mn_charon()?;
    let _iha = topo.start_iha()?;
    let _xha = topo.start_xha()?;
    let fa_toml = "reverse_tunnel = \"offer\"\n";
    // R on both: used even though the node also has a co-located address there (RFC 5944
    // §2.4.1).
    let required = "registration_required = true\n";
    let fa_int2 = topo.start_foreign_agent(Net::Int2, fa_toml, required)?;
    let fa_ext1 = topo.start_foreign_agent(Net::Ext1, fa_toml, required)?;
    let toml = mipx_tests::rfc5265_lab::vpn_toml(
        &topo,
        &charon,
        "cvc",
        "teardown",
        mipx_tests::strongswan::Ipsec::Libipsec,
    )?
    .replace(
        "mode = \"cvc\"\n",
        "mode = \"cvc\"\nagent_discovery = true\n",
    );
    let mn = topo.start_mn(&toml)?;
    wait_mode(&mn, "inside", "c")?;
    let pinger = Pinger::start(&topo, Duration::from_millis(50))?;
    let answered_since = |t: f64, what: &str| -> Result<()> {
        wait_for(Duration::from_secs(15), what, || {
            Ok(pinger.first_reply_after(t))
        })
        .with_context(|| mn.log_text())
        .map(drop)
    };

    // Internal 2: the agent there requires registration; inside through it, mode f.
    topo.move_mn(Net::Int2, true)?;
    // Replies may first come co-located (mode c) until the agent's advertisement arrives:
    // count only those after mode f is in place.
    wait_mode(&mn, "inside", "f")?;
    let t = unix_now();
    let v = fa_int2.ctl_json(&["visitors"])?;
    ensure!(
        v["visitors"].as_array().is_some_and(|a| a
            .iter()
            .any(|r| r["home_addr"] == INTERNAL_HOME_ADDR.to_string())),
        "the internal 2 agent does not list the i-HoA: {v}"
    );
    answered_since(t, "answers in mode f")?;
    wait_for(
        Duration::from_secs(5),
        "the agent's fast path delivering",
        || {
            let c = fa_int2.dataplane_counters()?;
            Ok((c.get("fa_decap_tx").copied().unwrap_or(0) > 0
                && c.get("fa_encap_tx").copied().unwrap_or(0) > 0)
                .then_some(()))
        },
    )?;

    // External 1: outside through that network's agent, the VPN over the x-MIP layer: fvc.
    let ext1_pcap = topo.dir.path("ext1.pcap");
    let ext1 = topo.capture_external(&ext1_pcap)?;
    topo.move_mn(Net::Ext1, true)?;
    wait_mode(&mn, "outside", "fvc")?;
    let t = unix_now();
    answered_since(t, "answers in mode fvc")?;
    let v = fa_ext1.ctl_json(&["visitors"])?;
    ensure!(
        v["visitors"]
            .as_array()
            .is_some_and(|a| a
                .iter()
                .any(|r| r["home_addr"] == EXTERNAL_HOME_ADDR.to_string()
                    && r["reverse_tunnel"] == true)),
        "the external 1 agent does not list the x-HoA: {v}"
    );

    // Back inside: mode c again.
    topo.move_mn(Net::Int1, true)?;
    wait_mode(&mn, "inside", "c")?;
    let t = unix_now();
    answered_since(t, "answers back in mode c")?;
    let file = ext1.finish()?;
    let plain = tshark_count(
        &file,
        &format!(
            "icmp && (ip.src == {INTERNAL_HOME_ADDR} || ip.dst == {INTERNAL_HOME_ADDR}) && ip.addr == {CN_ADDR}"
        ),
    )?;
    ensure!(plain == 0, "{plain} plaintext user packets on external 1");
    ensure!(
        tshark_count(&file, "esp || udp.port == 4500")? > 0,
        "no ESP on external 1 in mode fvc"
    );
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// RFC 5944 §3.7.3: an ICMP error about a relayed request becomes a reply code to the mobile
/// node. The home agent's host is there but no `mipd` listens on it, so its kernel answers the
/// relay with ICMP port unreachable: the agent denies the registration with 82 ("home agent
/// port unreachable") instead of waiting for its registration timeout (78).
#[test]
fn an_unreachable_home_agent_port_is_reported_as_82() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("fa-icmp")?;
    topo.move_mn(Net::Ext1, true)?;
    let fa = topo.start_foreign_agent(Net::Ext1, "reverse_tunnel = \"offer\"\n", "")?;
    // No x-HA daemon: its namespace's kernel refuses UDP 434.
    let mn = topo.start_mn_with(&mn_toml(&topo), false)?;
    wait_for(Duration::from_secs(10), "a denial with code 82", || {
        let v = fa.ctl_json(&["stats"])?;
        Ok((v["stats"]["fa"]["denied"]["82"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .with_context(|| format!("fa log:\n{}\nmn log:\n{}", fa.log_text(), mn.log_text()))?;
    let v = fa.ctl_json(&["stats"])?;
    ensure!(
        v["stats"]["fa"]["denied"]["78"].is_null(),
        "the agent timed the relay out as well: {v}"
    );
    wait_for(
        Duration::from_secs(5),
        "the node hearing the denial",
        || Ok((mn.stat(&["mn", "denied"])? > 0).then_some(())),
    )
    .with_context(|| mn.log_text())?;
    ensure!(
        mn.log_text().contains("82 (home agent port unreachable)"),
        "the node's log does not name code 82"
    );
    let visitors = fa.ctl_json(&["visitors"])?;
    ensure!(
        visitors["visitors"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "a denied node became a visitor: {visitors}"
    );
    Ok(())
}
