//! RFC 5265's VPN layer end to end, in both outside access modes:
//!
//! - mc (draft-ietf-mip4-mobike-connectivity §3.1.3): no x-HA; `mipd` has the MN's own
//!   strongSwan charon bring up an IKEv2 VPN with MOBIKE from the care-of address;
//! - cvc (RFC 5265 §2.3): the MN registers with the x-HA first, and the VPN runs from the
//!   external home address inside the x-HA's tunnel, so it never sees a move.
//!
//! In both, the tunnel inner address (TIA) is registered with the i-HA through the VPN and the
//! internal home address is tunnelled inside it. Everything is real: charon on both ends
//! (kernel-libipsec) with an unmodified strongSwan gateway in the DMZ, the firewall and the NAT
//! in nftables, and the evidence comes from captures of the external segments. Privileged:
//! fails, never skips, without root.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use mipx_control::proto::rfc5265::{OutsideMode, esp_path_mtu, xfrm_interface_mtu};
use mipx_tests::daemon::{Mipd, tshark_count, wait_for};
use mipx_tests::detection::{
    CN_ADDR, DetectionTopology, EXTERNAL_HOME_ADDR, INTERNAL_HOME_ADDR, Net, Pinger, VPN_POOL,
    VPN_POOL_2, user_packets,
};
use mipx_tests::require_root;
use mipx_tests::rfc5265_lab::vpn_toml;
use mipx_tests::strongswan::Ipsec;

/// What a namespace's IPsec looks like, for failure messages: SAs with their counters,
/// policies, the XFRM error counters, the links with theirs.
fn ipsec_view(ns: &mipx_tests::Netns) -> String {
    [
        &["ip", "-s", "xfrm", "state"][..],
        &["ip", "xfrm", "policy"],
        &["cat", "/proc/net/xfrm_stat"],
        &["ip", "-s", "link"],
        &["ip", "rule"],
        &["ip", "route", "show", "table", "all"],
    ]
    .iter()
    .map(|argv| {
        format!(
            "$ {}\n{}",
            argv.join(" "),
            ns.exec(argv).unwrap_or_else(|e| format!("{e:#}"))
        )
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// Waits until the VPN has failed; its status and the reason `mipctl status` gives.
fn vpn_failure(mn: &Mipd) -> Result<(serde_json::Value, String)> {
    let s = wait_for(
        Duration::from_secs(15),
        "the VPN to fail with the reason",
        || {
            let s = status(mn)?;
            Ok((s["vpn"]["state"] == "failed").then_some(s))
        },
    )
    .with_context(|| mn.log_text())?;
    let reason = s["vpn"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((s, reason))
}

/// `mipctl status --json`'s `status` object.
fn status(mn: &Mipd) -> Result<serde_json::Value> {
    Ok(mn.ctl_json(&["status"])?["status"].clone())
}

/// Waits until the interface is in `location` with access mode `mode` (and, for "mc", the VPN
/// is up with the i-HA binding through it); returns how long that took.
fn wait_mode(mn: &Mipd, location: &str, mode: &str, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    wait_for(timeout, &format!("{location} in mode {mode}"), || {
        let s = status(mn)?;
        let i = &s["interfaces"][0];
        Ok((i["location"] == location && i["mode"] == mode).then_some(()))
    })
    .with_context(|| format!("MN log:\n{}", mn.log_text()))?;
    Ok(t0.elapsed())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Waits for the first reply after `since`, then for one more than a second after that (a
/// reply already in flight at a move proves nothing); returns the first one's delay.
fn flowing(pinger: &Pinger, since: f64, what: &str, mn: &Mipd) -> Result<f64> {
    let first = wait_for(Duration::from_secs(15), what, || {
        Ok(pinger.first_reply_after(since))
    })
    .with_context(|| mn.log_text())?;
    wait_for(
        Duration::from_secs(15),
        &format!("{what}: replies a second later"),
        || Ok(pinger.first_reply_after(first + 1.0)),
    )
    .with_context(|| format!("replies stopped again; MN log:\n{}", mn.log_text()))?;
    Ok(first - since)
}

fn in_pool(addr: &str) -> bool {
    addr.starts_with(VPN_POOL.trim_end_matches(".0/24"))
}

/// ESP-in-UDP datagrams (UDP 4500 with a non-zero SPI) in a capture.
fn esp_in_udp(file: &Path) -> Result<usize> {
    tshark_count(file, "esp")
}

/// The walk inside → external 1 → external 2 (NAT) → inside in mode mc.
#[test]
fn mc_walk_inside_external_nat_inside() -> Result<()> {
    walk("mc", Ipsec::Libipsec)
}

/// The same walk in mode cvc.
#[test]
fn cvc_walk_inside_external_nat_inside() -> Result<()> {
    walk("cvc", Ipsec::Libipsec)
}

/// The walk in mode mc with the kernel's ESP on both ends (charon with kernel-netlink alone):
/// `mipd` creates the XFRM interface, charon binds the CHILD_SA to it (if_id), the tunnel
/// programs run on it, and ESP goes raw (protocol 50) where there is no NAT. See
/// [`kernel_esp_walk`] for the build machine.
#[test]
fn mc_walk_on_the_kernels_esp() -> Result<()> {
    kernel_esp_walk("mc")
}

/// The same in mode cvc: IKE and ESP from the x-HoA, inside the x-HA's tunnel.
#[test]
fn cvc_walk_on_the_kernels_esp() -> Result<()> {
    kernel_esp_walk("cvc")
}

/// `cargo xtask test` sets MIPX_KERNEL_ESP in the VM, whose kernel has ESP and XFRM interfaces:
/// there the walk must pass. On a kernel without them (the build machine's) the VPN must fail
/// with the reason, and no mode outside is claimed.
fn kernel_esp_walk(mode: &str) -> Result<()> {
    if std::env::var_os("MIPX_KERNEL_ESP").is_some() {
        return walk(mode, Ipsec::Kernel);
    }
    require_root();
    let mut topo = DetectionTopology::new(&format!("{mode}-xfrm"))?;
    topo.set_ipsec(Ipsec::Kernel);
    let charon = topo.start_mn_charon()?;
    let _iha = topo.start_iha()?;
    let _xha = if mode == "cvc" {
        Some(topo.start_xha()?)
    } else {
        None
    };
    topo.start_vpn_gateway(VPN_POOL)?;
    let mn = topo.start_mn(&vpn_toml(&topo, &charon, mode, "teardown", Ipsec::Kernel)?)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    topo.move_mn(Net::Ext1, true)?;
    let (s, reason) = vpn_failure(&mn)?;
    ensure!(
        reason.contains("cannot create the XFRM interface ipsec0"),
        "{s}"
    );
    ensure!(s["interfaces"][0]["mode"] == "-", "{s}");
    Ok(())
}

/// The walk inside → external 1 → external 2 (NAT) → inside under a steady ping from the
/// internal home address: the mode follows the location, the VPN comes up only outside (and
/// in mc follows the moves with MOBIKE, in cvc never sees them), the TIA is registered with
/// the i-HA once, user data resumes after each move, and the external segments never carry it
/// in plaintext.
fn walk(mode: &str, ipsec: Ipsec) -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new(&format!("{mode}-walk"))?;
    topo.set_ipsec(ipsec);
    topo.start_vpn_gateway(VPN_POOL)?;
    let charon = topo.start_mn_charon()?;
    let iha = topo.start_iha()?;
    let _xha = if mode == "cvc" {
        Some(topo.start_xha()?)
    } else {
        None
    };
    let mn = topo.start_mn(&vpn_toml(&topo, &charon, mode, "teardown", ipsec)?)?;

    // Inside: mode c, and the VPN brought up in parallel by detection is torn down again.
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    wait_for(Duration::from_secs(10), "the VPN torn down inside", || {
        Ok((status(&mn)?["vpn"]["state"] == "down").then_some(()))
    })
    .with_context(|| mn.log_text())?;
    let pinger = Pinger::start(&topo, Duration::from_millis(50))?;

    // External network 1: outside, VPN up, the TIA registered through it, mode mc.
    let ext1_pcap = topo.dir.path("ext1.pcap");
    let ext1 = topo.capture_external(&ext1_pcap)?;
    let moved = unix_now();
    topo.move_mn(Net::Ext1, true)?;
    if std::env::var_os("MIPX_DEBUG_HOLD").is_some() {
        std::thread::sleep(Duration::from_secs(3));
        println!("HOLDING {}", topo.mn.name());
        std::thread::sleep(Duration::from_secs(300));
    }
    let dmz_pcap = topo.dir.path("dmz.pcap");
    let dmz = topo.capture_vpn_gateway(&dmz_pcap, "")?;
    let took = wait_mode(&mn, "outside", mode, Duration::from_secs(20)).with_context(|| {
        format!(
            "MN's charon:\n{}\nMN IPsec:\n{}\ngateway's charon: {:?}\nMN stats: {:?}\nx-HA: {:?}\nDMZ: {:?}\nEXT1: {:?}",
            charon.logs(),
            ipsec_view(&topo.mn),
            topo.vpn_gateway().map(|g| g.logs()),
            mn.ctl_json(&["stats"])
                .map(|v| v["stats"]["dataplane"].clone()),
            _xha.as_ref().map(|x| (
                x.ctl_json(&["stats"]).map(|v| v["stats"].clone()),
                x.log_text()
            )),
            mipx_tests::daemon::tshark(&dmz_pcap, &[]),
            mipx_tests::daemon::tshark(&ext1_pcap, &[]),
        )
    })?;
    drop(dmz);
    let s = status(&mn)?;
    let tia = s["vpn"]["tia"].as_str().unwrap_or_default().to_owned();
    ensure!(in_pool(&tia), "TIA {tia} not from {VPN_POOL}: {s}");
    ensure!(s["vpn"]["internal_registered"] == true, "{s}");
    let backend = match ipsec {
        Ipsec::Libipsec => "kernel-libipsec",
        Ipsec::Kernel => "xfrm",
    };
    ensure!(s["vpn"]["ipsec"] == backend, "{s}");
    let first = flowing(&pinger, moved, "user data through the VPN", &mn).with_context(|| {
        format!(
            "MN stats: {:?}\nMN IPsec:\n{}\ngateway IPsec:\n{}",
            mn.ctl_json(&["stats"])
                .map(|v| v["stats"]["dataplane"].clone()),
            ipsec_view(&topo.mn),
            ipsec_view(&topo.vgw)
        )
    })?;
    println!("ext1: mode {mode} after {took:?}, first reply {first:.3} s after the move");
    let ike_local = status(&mn)?["vpn"]["local"].clone();
    if mode == "cvc" {
        // §2.3: IKE and IPsec run from the x-HoA.
        ensure!(
            ike_local == EXTERNAL_HOME_ADDR.to_string().as_str(),
            "IKE from {ike_local}"
        );
        let s = status(&mn)?;
        ensure!(
            s["vpn"]["external_care_of"] == Net::Ext1.mn_addr().to_string().as_str()
                && s["vpn"]["external_udp"] == false,
            "x-HA binding: {s}"
        );
    }
    // The operator's view names both layers.
    let text = mn.ctl(&["status"])?;
    for want in ["vpn       up", "registered", mode] {
        ensure!(
            text.contains(want),
            "`mipctl status` lacks {want:?}:\n{text}"
        );
    }
    ensure!(
        mn.stat(&["dataplane", "mn_vpn_encap"])? > 0,
        "nothing went into the VPN"
    );
    ensure!(
        mn.stat(&["dataplane", "mn_vpn_decap"])? > 0,
        "nothing came out of the VPN"
    );
    if ipsec == Ipsec::Kernel {
        kernel_sas_and_mtu(&topo, &mn, mode)?;
    }

    // External network 2, behind the NAT: in mc MOBIKE moves the SA, in cvc only the x-HA
    // binding moves (IP-in-UDP through the NAT, RFC 3519); the TIA stays, and the i-HA binding
    // is left alone (draft §3.3).
    let ext2_pcap = topo.dir.path("ext2.pcap");
    let ext2 = topo.capture_ext2(&ext2_pcap, "")?;
    let iha_accepted = iha.stat(&["ha", "accepted"])?;
    let moved = unix_now();
    topo.move_mn(Net::Ext2, true)?;
    let want_local = if mode == "cvc" {
        EXTERNAL_HOME_ADDR.to_string()
    } else {
        Net::Ext2.mn_addr().to_string()
    };
    wait_for(
        Duration::from_secs(20),
        "the VPN to follow to external 2",
        || {
            let s = status(&mn)?;
            let i = &s["interfaces"][0];
            Ok((s["vpn"]["local"] == want_local.as_str()
                && i["mode"] == mode
                && i["care_of_addr"] == Net::Ext2.mn_addr().to_string().as_str())
            .then_some(()))
        },
    )
    .with_context(|| format!("status {:?}\n{}", status(&mn), mn.log_text()))?;
    ensure!(
        status(&mn)?["vpn"]["tia"] == tia.as_str(),
        "the TIA changed"
    );
    if mode == "cvc" {
        // RFC 3519 through the NAT for the x-HA's tunnel; IKE saw nothing.
        let s = status(&mn)?;
        ensure!(
            s["vpn"]["external_udp"] == true,
            "x-HA tunnel not in UDP: {s}"
        );
    }
    let followed = unix_now() - moved;
    let first =
        flowing(&pinger, unix_now(), "user data through the NAT", &mn).with_context(|| {
            format!(
                "MN stats: {:?}\nMN IPsec:\n{}\ngateway IPsec:\n{}",
                mn.ctl_json(&["stats"])
                    .map(|v| v["stats"]["dataplane"].clone()),
                ipsec_view(&topo.mn),
                ipsec_view(&topo.vgw)
            )
        })? + followed;
    // Draft §3.3 / RFC 5265 §2.3: the i-HA does not hear of a move outside (the TIA stayed).
    ensure!(
        iha.stat(&["ha", "accepted"])? == iha_accepted,
        "the i-HA accepted a registration for a move outside; MN log:\n{}\nMN's charon:\n{}\ngateway's charon: {:?}",
        mn.log_text(),
        charon.logs(),
        topo.vpn_gateway().map(|g| g.logs()),
    );
    println!(
        "ext2 (NAT): the VPN followed after {followed:.3} s, user data at most {first:.3} s after the move"
    );

    if std::env::var_os("MIPX_DEBUG_CHARON").is_some() {
        println!("{}", charon.logs());
    }
    // Back inside: mode c, the VPN torn down.
    let moved = unix_now();
    topo.move_mn(Net::Int1, true)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    let first = flowing(&pinger, moved, "user data inside again", &mn)?;
    println!("inside again: first reply {first:.3} s after the move");
    wait_for(Duration::from_secs(10), "the VPN torn down inside", || {
        Ok((status(&mn)?["vpn"]["state"] == "down").then_some(()))
    })?;
    drop(ext1);
    drop(ext2);
    drop(pinger);

    // The wire: ESP on both external segments, and not one plaintext user packet.
    for (name, file) in [("external 1", &ext1_pcap), ("external 2", &ext2_pcap)] {
        let leaks = user_packets(file)?;
        ensure!(
            leaks.is_empty(),
            "{} plaintext user packets on {name}",
            leaks.len()
        );
        let esp = esp_in_udp(file)?;
        ensure!(esp > 10, "only {esp} ESP packets on {name}");
        // kernel-libipsec always encapsulates in UDP. The kernel's ESP goes raw (IP protocol
        // 50) where there is no NAT, as on external 1, and in UDP behind the NAT (RFC 3948),
        // once MOBIKE has found it: until the update, the SA still sends raw from the old
        // address, so a few raw packets on external 2 are the move, not a fault.
        let raw = tshark_count(file, "esp && !udp")?;
        let in_udp = esp - raw;
        let ok = match (ipsec, *file == ext1_pcap) {
            (Ipsec::Libipsec, _) => raw == 0,
            (Ipsec::Kernel, true) => in_udp == 0,
            (Ipsec::Kernel, false) => in_udp > 10,
        };
        ensure!(ok, "{raw} raw ESP packets and {in_udp} in UDP on {name}");
        println!("{name}: {esp} ESP packets ({raw} raw), no plaintext user data");
    }
    if ipsec == Ipsec::Kernel {
        // The full-size pings on external 1 left in whole packets: the XFRM interface's MTU
        // is no larger than what fits in one ESP packet on the link.
        let fragments = tshark_count(&ext1_pcap, "ip.flags.mf == 1 || ip.frag_offset > 0")?;
        ensure!(fragments == 0, "{fragments} IPv4 fragments on external 1");
        let largest = mipx_tests::daemon::tshark(
            &ext1_pcap,
            &[
                "-Y",
                "ip.src == 198.51.100.0/24",
                "-T",
                "fields",
                "-e",
                "ip.len",
            ],
        )?
        .lines()
        // One length per IPv4 header, outermost first.
        .filter_map(|l| l.split(',').next()?.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
        // The full-size pings fill what the mode leaves of the link, but for the ESP padding
        // (at most 3 octets with the default AES-GCM, up to 18 with a 16-octet block cipher)
        // and, in cvc, the room kept for RFC 3519's larger tunnel (12 more than IP-in-IP).
        ensure!(
            (1500 - 12 - 18..=1500).contains(&largest),
            "the largest packet on external 1's 1500-byte link: {largest} bytes"
        );
        println!("external 1: the largest packet from the node {largest} bytes, no fragments");
    }
    Ok(())
}

/// With the kernel's ESP, on external 1: mipd's view of the kernel's SAs on its XFRM
/// interface (XFRM netlink) holds every SA charon reports, with no mismatch, as iproute2 shows
/// them; and the interface has left the worst-case MTU for the negotiated suite's, which a ping
/// that fills the home address's route MTU then crosses (its packets are checked whole on the
/// wire at the end).
fn kernel_sas_and_mtu(topo: &DetectionTopology, mn: &Mipd, mode: &str) -> Result<()> {
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let kernel = wait_for(
        Duration::from_secs(20),
        "mipd's view of the kernel's SAs to hold charon's",
        || {
            let s = status(mn)?;
            let (kernel, charon) = (names(&s["vpn"]["kernel_spis"]), names(&s["vpn"]["spis"]));
            let agree = !charon.is_empty()
                && charon.iter().all(|c| kernel.contains(c))
                && names(&s["vpn"]["sa_mismatch"]).is_empty();
            Ok(agree.then_some(kernel))
        },
    )
    .with_context(|| {
        format!(
            "{:?}
{}",
            status(mn),
            ipsec_view(&topo.mn)
        )
    })?;
    let shown = topo.mn.ip(&["-d", "xfrm", "state"])?;
    for spi in &kernel {
        ensure!(
            shown.contains(&format!("spi 0x{spi}")),
            "no SA {spi} in:\n{shown}"
        );
    }
    let text = mn.ctl(&["status"])?;
    ensure!(
        text.contains("xfrm sas") && !text.contains("mismatch"),
        "{text}"
    );
    // Made for the worst suite; then the CHILD_SA's (RFC 4303 §2).
    let path = esp_path_mtu(
        if mode == "cvc" {
            OutsideMode::Cvc
        } else {
            OutsideMode::Mc
        },
        1500,
    );
    let worst = xfrm_interface_mtu(path, None);
    let mtu = wait_for(
        Duration::from_secs(10),
        "the XFRM interface's MTU from the ESP suite",
        || {
            let line = topo.mn.ip(&["link", "show", "ipsec0"])?;
            let mtu = line
                .split_whitespace()
                .skip_while(|w| *w != "mtu")
                .nth(1)
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0);
            Ok((mtu != worst && mtu > 0).then_some(mtu))
        },
    )?;
    ensure!(mtu > worst && mtu <= path, "MTU {mtu}, path {path}");
    // The home address's route into the VPN carries the interface's MTU minus the i-MIP
    // IP-in-IP (RFC 2003 §5.1): a ping of that size, IPv4 and ICMP headers included.
    let size = (mtu - 20 - 20 - 8).to_string();
    let out = topo
        .mn
        .command("ping")
        .args(["-n", "-c", "5", "-i", "0.3", "-W", "2", "-s", &size, "-I"])
        .arg(INTERNAL_HOME_ADDR.to_string())
        .arg(CN_ADDR.to_string())
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "no answer to {size}-byte pings through an MTU of {mtu}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "ext1: {} kernel SAs on ipsec0, as charon reports; MTU {mtu} (worst case {worst}), full-size pings answered",
        kernel.len()
    );
    Ok(())
}

/// The i-HA's binding for the internal home address: its care-of address.
fn iha_care_of(iha: &Mipd) -> Result<Option<String>> {
    let v = iha.ctl_json(&["bindings"])?;
    Ok(v["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_addr"] == INTERNAL_HOME_ADDR.to_string().as_str())
        .and_then(|b| b["care_of_addr"].as_str().map(str::to_owned)))
}

/// Outside with the VPN gateway unreachable, then dropping while in use, then back with
/// another address pool: user data stays blocked (never plaintext on the external segment)
/// while there is no VPN, mipd keeps retrying with back-off, and when the gateway returns with
/// another pool the new TIA is registered with the i-HA (draft §3.3) and user data resumes.
/// `ipsec = "kernel"` where charon runs kernel-libipsec (as here: this kernel has no ESP, and
/// the VM's charon is configured the same way): the VPN never comes up, `mipctl status` says
/// why, and outside nothing from the home address leaves in plaintext meanwhile.
#[test]
fn mc_insisting_on_kernel_esp_where_charon_runs_libipsec_fails_with_the_reason() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("mc-ipsec")?;
    let charon = topo.start_mn_charon()?;
    let _iha = topo.start_iha()?;
    topo.start_vpn_gateway(VPN_POOL)?;
    // The configuration insists on the kernel's ESP; the topology's charons run libipsec.
    let toml = vpn_toml(&topo, &charon, "mc", "teardown", Ipsec::Kernel)?;
    let mn = topo.start_mn(&toml)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    topo.move_mn(Net::Ext1, true)?;
    let (s, reason) = vpn_failure(&mn)?;
    ensure!(reason.contains("kernel-libipsec"), "{s}");
    ensure!(s["vpn"]["tia"].is_null(), "{s}");
    ensure!(s["interfaces"][0]["gate"] != "inside", "{s}");
    ensure!(s["interfaces"][0]["mode"] == "-", "{s}");
    Ok(())
}

#[test]
fn mc_vpn_unreachable_drops_and_comes_back_with_another_tia() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("mc-fail")?;
    let charon = topo.start_mn_charon()?;
    let iha = topo.start_iha()?;
    let mn = topo.start_mn(&vpn_toml(
        &topo,
        &charon,
        "mc",
        "teardown",
        Ipsec::Libipsec,
    )?)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    let pinger = Pinger::start(&topo, Duration::from_millis(50))?;
    let ext1_pcap = topo.dir.path("ext1.pcap");
    let ext1 = topo.capture_external(&ext1_pcap)?;

    // 1. No gateway: the VPN cannot come up; the interface is not "outside" (nothing answered
    //    but the i-HA did not either), and nothing from the home address leaves.
    topo.move_mn(Net::Ext1, true)?;
    wait_for(Duration::from_secs(15), "a failed VPN attempt", || {
        let s = status(&mn)?;
        Ok((s["vpn"]["state"] == "failed").then_some(s))
    })
    .with_context(|| mn.log_text())?;
    let blocked_from = unix_now();
    // Pinging on (every 50 ms), the gate drops what the node sends: a second's worth at least.
    let closed_before = mn.stat(&["dataplane", "gate_closed"])?;
    wait_for(Duration::from_secs(15), "the gate to drop 20 pings", || {
        Ok((mn.stat(&["dataplane", "gate_closed"])? >= closed_before + 20).then_some(()))
    })?;
    ensure!(
        pinger.first_reply_after(blocked_from).is_none(),
        "user data flowed without a VPN"
    );
    let s = status(&mn)?;
    ensure!(s["interfaces"][0]["gate"] != "inside", "{s}");
    ensure!(s["interfaces"][0]["mode"] == "-", "{s}");

    // 2. The gateway appears: mipd's retries bring the VPN up without any prompt.
    topo.start_vpn_gateway(VPN_POOL)?;
    let up_from = unix_now();
    wait_mode(&mn, "outside", "mc", Duration::from_secs(15))?;
    let first_tia = status(&mn)?["vpn"]["tia"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(in_pool(&first_tia), "TIA {first_tia}");
    flowing(
        &pinger,
        up_from,
        "user data once the gateway is reachable",
        &mn,
    )?;
    ensure!(iha_care_of(&iha)?.as_deref() == Some(first_tia.as_str()));

    // 3. The gateway dies while in use: dead peer detection notices, the SA goes, and with
    //    it the tunnel; user data is blocked again, not leaked.
    topo.stop_vpn_gateway()?;
    wait_for(
        Duration::from_secs(20),
        "the VPN to be noticed down",
        || {
            let s = status(&mn)?;
            Ok((s["vpn"]["state"] != "up" && s["interfaces"][0]["mode"] == "-").then_some(()))
        },
    )
    .with_context(|| mn.log_text())?;
    let down_at = unix_now();

    // 4. It comes back with another pool: a new TIA, registered with the i-HA. Before that,
    //    the pings go on into the closed gate for a second's worth at least.
    let closed_before = mn.stat(&["dataplane", "gate_closed"])?;
    wait_for(Duration::from_secs(15), "the gate to drop 20 pings", || {
        Ok((mn.stat(&["dataplane", "gate_closed"])? >= closed_before + 20).then_some(()))
    })?;
    ensure!(
        pinger.first_reply_after(down_at + 0.5).is_none(),
        "user data flowed while the VPN was down"
    );
    topo.start_vpn_gateway(VPN_POOL_2)?;
    let back = unix_now();
    wait_mode(&mn, "outside", "mc", Duration::from_secs(20))?;
    let second_tia = status(&mn)?["vpn"]["tia"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        second_tia.starts_with("10.41.0."),
        "TIA {second_tia} not from {VPN_POOL_2}"
    );
    wait_for(
        Duration::from_secs(10),
        "the i-HA to bind the new TIA",
        || Ok((iha_care_of(&iha)?.as_deref() == Some(second_tia.as_str())).then_some(())),
    )?;
    let first = flowing(&pinger, back, "user data through the new TIA", &mn)?;
    println!("TIA {first_tia} → {second_tia}; user data {first:.3} s after the gateway returned");
    drop(ext1);
    drop(pinger);
    let leaks = user_packets(&ext1_pcap)?;
    ensure!(
        leaks.is_empty(),
        "{} plaintext user packets on external 1",
        leaks.len()
    );
    Ok(())
}

/// `inside = "keep"`: the VPN stays up inside (MOBIKE keeps it alive, draft §3.4.2) while user
/// data uses mode c; a CHILD_SA rekey outside (new SPIs, which the gate must learn from
/// charon's events) does not interrupt user data.
#[test]
fn mc_keep_inside_and_a_rekey_outside() -> Result<()> {
    require_root();
    let mut topo = DetectionTopology::new("mc-keep")?;
    topo.start_vpn_gateway(VPN_POOL)?;
    let charon = topo.start_mn_charon()?;
    let _iha = topo.start_iha()?;
    let mn = topo.start_mn(&vpn_toml(&topo, &charon, "mc", "keep", Ipsec::Libipsec)?)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    wait_for(Duration::from_secs(10), "the VPN up inside", || {
        Ok((status(&mn)?["vpn"]["state"] == "up").then_some(()))
    })
    .with_context(|| mn.log_text())?;
    let pinger = Pinger::start(&topo, Duration::from_millis(50))?;
    let moved = unix_now();
    topo.move_mn(Net::Ext1, true)?;
    wait_mode(&mn, "outside", "mc", Duration::from_secs(10))?;
    flowing(&pinger, moved, "user data outside", &mn)?;

    let spis = |mn: &Mipd| -> Result<Vec<String>> {
        Ok(status(mn)?["vpn"]["spis"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect())
    };
    let before = spis(&mn)?;
    ensure!(!before.is_empty(), "no SPIs known");
    charon.swanctl(&["--rekey", "--child", "mipx-vpn"])?;
    wait_for(Duration::from_secs(10), "new SPIs in the gate", || {
        let now = spis(&mn)?;
        Ok((!now.is_empty() && now.iter().all(|s| !before.contains(s))).then_some(now))
    })
    .with_context(|| mn.log_text())?;
    let rekeyed = unix_now();
    flowing(&pinger, rekeyed, "user data after the rekey", &mn)?;

    let moved = unix_now();
    topo.move_mn(Net::Int1, true)?;
    wait_mode(&mn, "inside", "c", Duration::from_secs(10))?;
    flowing(&pinger, moved, "user data inside again", &mn)?;
    ensure!(
        status(&mn)?["vpn"]["state"] == "up",
        "the VPN was torn down inside despite inside = \"keep\""
    );
    Ok(())
}
