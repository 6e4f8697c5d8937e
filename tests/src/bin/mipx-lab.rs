//! The lab (`cargo xtask lab`): a home agent and a mobile node in their own network namespaces,
//! real `mipd` processes, a registration over the wire, the binding as `mipctl` shows it, a move
//! to a second care-of address, deregistration, and cleanup (namespaces and daemons go away on
//! drop, also on error).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mipx_tests::daemon::{Mipd, TempDir, wait_for};
use mipx_tests::{Netns, require_root, veth_pair};

const HOME_ADDR: &str = "10.1.0.10";

fn main() -> Result<()> {
    require_root();
    let t0 = Instant::now();
    step("building mipd and mipctl");
    mipx_tests::daemon::binaries();

    step("creating the topology");
    println!(
        "
   ns lab-ha                              ns lab-mn
  ┌──────────────────────────┐  veth   ┌───────────────────────────────┐
  │ home agent   10.1.0.1    │ ha0─mn0 │ mobile node, home 10.1.0.10   │
  │ foreign A gw 192.0.2.1   ├─────────┤ care-of 192.0.2.10    (net A) │
  │ foreign B gw 198.51.100.1│         │   then  198.51.100.10 (net B) │
  └──────────────────────────┘         └───────────────────────────────┘"
    );
    let ha_ns = Netns::new("lab-ha")?;
    let mn_ns = Netns::new("lab-mn")?;
    veth_pair((&ha_ns, "ha0"), (&mn_ns, "mn0"))?;
    ha_ns.add_addr("lo", "10.1.0.1/32")?;
    ha_ns.add_addr("ha0", "192.0.2.1/24")?;
    ha_ns.add_addr("ha0", "198.51.100.1/24")?;
    ha_ns.set_up("ha0")?;
    mn_ns.add_addr("mn0", "192.0.2.10/24")?;
    mn_ns.set_up("mn0")?;
    mn_ns.ip(&["route", "add", "10.1.0.0/24", "via", "192.0.2.1"])?;

    let dir = TempDir::new("lab")?;
    dir.write("mn1.key", "5ad1c0ffee5ad1c0ffee5ad1c0ffee00\n", 0o600)?;
    let ha_conf = dir.write(
        "ha.toml",
        &format!(
            "role = \"ha\"\napi_socket = \"{}\"\n\n[ha]\naddress = \"10.1.0.1\"\nmax_lifetime = 300\n\n\
             [[ha.mobile_node]]\nhome_addr = \"{HOME_ADDR}\"\nspi = 4096\nkey_file = \"mn1.key\"\n",
            dir.path("ha.sock").display()
        ),
        0o644,
    )?;
    let mn_conf = dir.write(
        "mn.toml",
        &format!(
            "role = \"mn\"\napi_socket = \"{}\"\n\n[mn]\nhome_addr = \"{HOME_ADDR}\"\nhome_agent = \"10.1.0.1\"\n\
             care_of_addr = \"192.0.2.10\"\nspi = 4096\nkey_file = \"mn1.key\"\nlifetime = 600\n\
             nai = \"mn1@lab.mipx\"\n",
            dir.path("mn.sock").display()
        ),
        0o644,
    )?;

    step("starting mipd as home agent and as mobile node");
    let ha = Mipd::start(&ha_ns, &ha_conf, &dir.path("ha.sock"), &dir.path("ha.log"))?;
    let started = Instant::now();
    let mn = Mipd::start(&mn_ns, &mn_conf, &dir.path("mn.sock"), &dir.path("mn.log"))?;
    let ha_ref = &ha;
    let binding_for = |coa: &'static str| {
        move || -> Result<Option<()>> {
            let v = ha_ref.ctl_json(&["bindings"])?;
            let found = v["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["care_of_addr"] == coa);
            Ok(found.then_some(()))
        }
    };
    wait_for(
        Duration::from_secs(10),
        "the registration",
        binding_for("192.0.2.10"),
    )
    .with_context(|| format!("HA log:\n{}\nMN log:\n{}", ha.log_text(), mn.log_text()))?;
    let reg_time = started.elapsed();

    step(&format!(
        "registered from foreign network A in {} ms (daemon start included)",
        reg_time.as_millis()
    ));
    section("mipctl status (mobile node)", &mn.ctl(&["status"])?);
    section("mipctl bindings (home agent)", &ha.ctl(&["bindings"])?);

    step("moving the MN to foreign network B (care-of 198.51.100.10)");
    mn_ns.add_addr("mn0", "198.51.100.10/24")?;
    mn_ns.ip(&[
        "route",
        "replace",
        "10.1.0.0/24",
        "via",
        "198.51.100.1",
        "src",
        "198.51.100.10",
    ])?;
    let moved = Instant::now();
    mn.ctl(&["register", "--care-of", "198.51.100.10"])?;
    wait_for(
        Duration::from_secs(10),
        "the re-registration",
        binding_for("198.51.100.10"),
    )?;
    step(&format!(
        "re-registered in {} ms",
        moved.elapsed().as_millis()
    ));
    section("mipctl bindings (home agent)", &ha.ctl(&["bindings"])?);

    step("deregistering");
    mn.ctl(&["deregister"])?;
    wait_for(Duration::from_secs(10), "the deregistration", || {
        let v = ha.ctl_json(&["bindings"])?;
        Ok(v["bindings"]
            .as_array()
            .is_some_and(|b| b.is_empty())
            .then_some(()))
    })?;
    section("mipctl stats (home agent)", &ha.ctl(&["stats"])?);

    drop(mn);
    drop(ha);
    drop(mn_ns);
    drop(ha_ns);
    step(&format!(
        "cleaned up: namespaces and daemons removed ({:.1} s in all)",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
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
