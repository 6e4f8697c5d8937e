//! End to end: real `mipd` processes as home agent and mobile node in their own network
//! namespaces register over UDP/434, `mipctl` shows the binding, deregistration removes it,
//! and tshark's Mobile IP dissector accepts every captured frame.

use std::time::Duration;

use anyhow::Result;
use mipx_tests::daemon::{Capture, Mipd, TempDir, tshark, wait_for};
use mipx_tests::{Netns, require_root, veth_pair};

const KEY: &str = "9f3c2a1b8e7d6c5f4a3b2c1d0e9f8a7b\n";

struct Lab {
    ha_ns: Netns,
    mn_ns: Netns,
    dir: TempDir,
}

/// HA (10.1.0.1 on its home link, 192.0.2.1 towards the foreign network) and an MN whose
/// co-located care-of address is 192.0.2.10, routed to the home network through the HA.
fn lab() -> Result<Lab> {
    let ha_ns = Netns::new("ha")?;
    let mn_ns = Netns::new("mn")?;
    veth_pair((&ha_ns, "ha0"), (&mn_ns, "mn0"))?;
    ha_ns.add_addr("ha0", "192.0.2.1/24")?;
    ha_ns.add_addr("lo", "10.1.0.1/32")?;
    ha_ns.set_up("ha0")?;
    mn_ns.add_addr("mn0", "192.0.2.10/24")?;
    mn_ns.set_up("mn0")?;
    mn_ns.ip(&["route", "add", "10.1.0.0/24", "via", "192.0.2.1"])?;
    let dir = TempDir::new("e2e")?;
    dir.write("mn1.key", KEY, 0o600)?;
    Ok(Lab { ha_ns, mn_ns, dir })
}

fn start_ha(lab: &Lab) -> Result<Mipd> {
    let conf = lab.dir.write(
        "ha.toml",
        &format!(
            "role = \"ha\"\napi_socket = \"{}\"\n[ha]\naddress = \"10.1.0.1\"\nmax_lifetime = 120\n\
             [[ha.mobile_node]]\nhome_addr = \"10.1.0.10\"\nspi = 4096\nkey_file = \"mn1.key\"\n",
            lab.dir.path("ha.sock").display()
        ),
        0o644,
    )?;
    Mipd::start(
        &lab.ha_ns,
        &conf,
        &lab.dir.path("ha.sock"),
        &lab.dir.path("ha.log"),
    )
}

fn start_mn(lab: &Lab, lifetime: u16) -> Result<Mipd> {
    let conf = lab.dir.write(
        "mn.toml",
        &format!(
            "role = \"mn\"\napi_socket = \"{}\"\n[mn]\nhome_addr = \"10.1.0.10\"\nhome_agent = \"10.1.0.1\"\n\
             care_of_addr = \"192.0.2.10\"\nspi = 4096\nkey_file = \"mn1.key\"\nlifetime = {lifetime}\n\
             nai = \"mn1@example.org\"\n",
            lab.dir.path("mn.sock").display()
        ),
        0o644,
    )?;
    Mipd::start(
        &lab.mn_ns,
        &conf,
        &lab.dir.path("mn.sock"),
        &lab.dir.path("mn.log"),
    )
}

fn bindings(ha: &Mipd) -> Result<Vec<serde_json::Value>> {
    Ok(ha.ctl_json(&["bindings"])?["bindings"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[test]
fn registers_shows_binding_deregisters_and_capture_dissects() -> Result<()> {
    require_root();
    let lab = lab()?;
    let cap = Capture::start(&lab.ha_ns, "ha0", "udp port 434", &lab.dir.path("reg.pcap"))?;
    let ha = start_ha(&lab)?;
    let mn = start_mn(&lab, 300)?;

    let b = wait_for(Duration::from_secs(10), "a binding on the HA", || {
        Ok(bindings(&ha)?.into_iter().next())
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nHA log:\n{}\nMN log:\n{}",
            ha.log_text(),
            mn.log_text()
        )
    })?;
    assert_eq!(b["home_addr"], "10.1.0.10");
    assert_eq!(b["care_of_addr"], "192.0.2.10");
    assert_eq!(
        b["lifetime"], 120,
        "HA caps the MN's 300 s at its max_lifetime"
    );
    let remaining = b["remaining_secs"].as_u64().unwrap();
    assert!((110..=120).contains(&remaining), "remaining {remaining}");
    assert_eq!(b["reverse_tunnel"], true);

    // The human-readable table shows the same binding, and no key material anywhere.
    let table = ha.ctl(&["bindings"])?;
    assert!(
        table.contains("10.1.0.10") && table.contains("192.0.2.10"),
        "{table}"
    );
    let status = mn.ctl_json(&["status"])?;
    assert_eq!(status["status"]["mn"]["state"], "registered", "{status}");

    mn.ctl(&["deregister"])?;
    wait_for(Duration::from_secs(10), "the binding to go", || {
        Ok(bindings(&ha)?.is_empty().then_some(()))
    })?;
    let stats = ha.ctl_json(&["stats"])?;
    assert_eq!(stats["stats"]["ha"]["accepted"], 1, "{stats}");
    assert_eq!(stats["stats"]["ha"]["deregistered"], 1, "{stats}");

    let ha_log = ha.log_text();
    let mn_log = mn.log_text();
    drop(mn);
    drop(ha);
    for log in [&ha_log, &mn_log] {
        assert!(
            !log.to_lowercase().contains("9f3c2a1b"),
            "key material in a log:\n{log}"
        );
    }

    let pcap = cap.finish()?;
    // Four kinds of frame, in this order: request, reply, deregistration request, reply;
    // none malformed. A busy machine may add a retransmission (§3.6.3) and the home agent's
    // answer to it: each kind is listed once, where it first appears.
    let types = tshark(
        &pcap,
        &[
            "-Y", "mip", "-T", "fields", "-e", "mip.type", "-e", "mip.code", "-e", "mip.life",
        ],
    )?;
    let mut rows: Vec<&str> = Vec::new();
    for row in types.lines() {
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    assert_eq!(
        rows,
        ["1\t\t300", "3\t0\t120", "1\t\t0", "3\t0\t0"],
        "tshark saw:\n{types}\nall frames:\n{}",
        tshark(&pcap, &[])?
    );
    let malformed = tshark(
        &pcap,
        &["-Y", "_ws.malformed || _ws.expert.severity >= \"error\""],
    )?;
    assert!(
        malformed.trim().is_empty(),
        "malformed frames:\n{malformed}"
    );
    let detail = tshark(&pcap, &["-Y", "mip", "-V"])?;
    assert!(
        detail.contains("Mobile-Home Authentication Extension"),
        "{detail}"
    );
    assert!(
        detail.contains("mn1@example.org"),
        "NAI extension not dissected:\n{detail}"
    );
    Ok(())
}

#[test]
fn wrong_key_is_denied_and_no_binding_appears() -> Result<()> {
    require_root();
    let lab = lab()?;
    let ha = start_ha(&lab)?;
    lab.dir
        .write("mn1.key", "00112233445566778899aabbccddeeff\n", 0o600)?;
    let mn = start_mn(&lab, 60)?;
    wait_for(Duration::from_secs(10), "a 131 rejection", || {
        let s = ha.ctl_json(&["stats"])?;
        Ok(s["stats"]["ha"]["rejected"]["131"]
            .as_u64()
            .filter(|n| *n >= 1))
    })?;
    assert!(bindings(&ha)?.is_empty());
    let s = mn.ctl_json(&["stats"])?;
    assert!(
        s["stats"]["mn"]["dropped_replies"].as_u64().unwrap() >= 1,
        "{s}"
    );
    Ok(())
}

#[test]
fn config_with_loose_key_permissions_is_refused() -> Result<()> {
    require_root();
    let lab = lab()?;
    lab.dir.write("mn1.key", KEY, 0o644)?;
    let conf = lab.dir.write(
        "ha.toml",
        "role = \"ha\"\n[ha]\naddress = \"10.1.0.1\"\n[[ha.mobile_node]]\nhome_addr = \"10.1.0.10\"\nspi = 4096\nkey_file = \"mn1.key\"\n",
        0o644,
    )?;
    let (mipd, _) = mipx_tests::daemon::binaries();
    let out = std::process::Command::new(mipd)
        .arg("--config")
        .arg(&conf)
        .arg("--check")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ha.mobile_node[0].key_file") && err.contains("644"),
        "{err}"
    );
    assert!(!err.contains("9f3c2a1b"), "{err}");
    Ok(())
}

#[test]
fn sigterm_on_mn_deregisters() -> Result<()> {
    require_root();
    let lab = lab()?;
    let ha = start_ha(&lab)?;
    let mn = start_mn(&lab, 60)?;
    wait_for(Duration::from_secs(10), "a binding", || {
        Ok(bindings(&ha)?.into_iter().next())
    })?;
    let status = mn.stop()?;
    assert!(status.success(), "mipd exited with {status}");
    assert!(
        bindings(&ha)?.is_empty(),
        "RFC 5944 §3.6: the MN deregisters when it stops"
    );
    Ok(())
}
