//! `mipx-bench-vpn`: bulk TCP throughput from the mobile node to the correspondent in the
//! intranet, in each access mode of RFC 5265 against no tunnelling at all, measured in the same
//! round on the same machine (`cargo xtask bench vpn` runs it and writes BENCHMARKS.md).
//!
//! Per round, on fresh topologies (tests/src/detection.rs with the strongSwan VPN gateway):
//!
//! - `plain`: inside (internal 1), from the care-of address: routed, no Mobile IP at all;
//! - `c`: inside, from the internal home address: IP-in-IP to the i-HA (RFC 5265 §2.1);
//! - `mc`: external 1, from the home address: IP-in-IP inside ESP, MOBIKE VPN;
//! - `cvc`: external 1: IP-in-IP inside ESP inside IP-in-IP to the x-HA (§2.3).
//!
//! mc and cvc run on each IPsec backend asked for (`--ipsec`): strongSwan's kernel-libipsec
//! (keys `mc`, `cvc`; ESP in user space through a TUN device, always in UDP) and the kernel's
//! ESP (keys `mc-xfrm`, `cvc-xfrm`; XFRM, mipd's XFRM interface, raw ESP without a NAT). The
//! default is both where the kernel has ESP, kernel-libipsec elsewhere.
//!
//! Each transfer runs `--secs` seconds; the receiver counts the bytes. Usage:
//! `mipx-bench-vpn [--rounds N] [--secs S] [--ipsec libipsec|kernel|both] [--json FILE]`
//! (root).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use mipx_tests::daemon::{Mipd, wait_for};
use mipx_tests::detection::{CN_ADDR, DetectionTopology, INTERNAL_HOME_ADDR, Net, VPN_POOL};
use mipx_tests::rfc5265_lab::{SESSION_MSS, vpn_toml_timed};
use mipx_tests::strongswan::{Ipsec, kernel_has_esp};

const PORT: u16 = 5201;

fn wait_mode(mn: &Mipd, location: &str, mode: &str) -> Result<()> {
    wait_for(
        Duration::from_secs(30),
        &format!("{location}/{mode}"),
        || {
            let s = mn.ctl_json(&["status"])?;
            let i = &s["status"]["interfaces"][0];
            Ok((i["location"] == location && i["mode"] == mode).then_some(()))
        },
    )
    .with_context(|| mn.log_text())
}

/// Sends as fast as TCP allows from `from` (in the MN's namespace) to the sink on the
/// correspondent for `secs`; returns megabits per second as the sink counted them.
fn transfer(topo: &DetectionTopology, from: Ipv4Addr, secs: f64) -> Result<f64> {
    // The mode is settled, but the first packets through a VPN just up may still be lost (in
    // the emulated VM, seconds): the transfer starts once a ping gets through.
    wait_for(
        Duration::from_secs(20),
        &format!("a ping from {from} to the correspondent answered"),
        || {
            let out = topo
                .mn
                .command("ping")
                .args(["-n", "-c", "1", "-W", "1", "-I"])
                .arg(from.to_string())
                .arg(CN_ADDR.to_string())
                .stdin(std::process::Stdio::null())
                .output()?;
            Ok(out.status.success().then_some(()))
        },
    )?;
    let cn = topo.cn.name().to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = std::thread::spawn(move || -> Result<(u64, f64)> {
        let _inside = mipx_tests::netns::enter_named(&cn)?;
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))?;
        ready_tx.send(()).ok();
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map_or(0.0, |t| t.elapsed().as_secs_f64())))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the sink did not start")?;
    let mn = topo.mn.name().to_owned();
    let sender = std::thread::spawn(move || -> Result<()> {
        let _inside = mipx_tests::netns::enter_named(&mn)?;
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(SocketAddrV4::new(from, 0)).into())?;
        // The lab session's MSS (see SESSION_MSS): on Debian 12's 6.1, TCP from the home
        // address in mode c sent full-size segments outside GSO, which mn_tc_egress drops as
        // too big for the tunnel (counter too_big) with nothing telling TCP, and the transfer
        // stalled; the host's 6.18 sends them as GSO super-packets, segmented to fit.
        socket.set_tcp_mss(SESSION_MSS)?;
        socket.connect_timeout(
            &SocketAddr::from(SocketAddrV4::new(CN_ADDR, PORT)).into(),
            Duration::from_secs(15),
        )?;
        let mut conn: TcpStream = socket.into();
        let buf = vec![0x5au8; 1 << 16];
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            conn.write_all(&buf)?;
        }
        conn.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (bytes, elapsed) = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    ensure!(bytes > 0 && elapsed > 0.0, "nothing arrived");
    Ok(bytes as f64 * 8.0 / elapsed / 1e6)
}

/// The result's key for `family` on `ipsec`.
fn key(family: &str, ipsec: Ipsec) -> String {
    match ipsec {
        Ipsec::Libipsec => family.to_owned(),
        Ipsec::Kernel => format!("{family}-xfrm"),
    }
}

/// One round: for each backend, mc on one topology (plain and c inside first, once per round)
/// and cvc on another.
fn round(secs: f64, backends: &[Ipsec]) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (b, &ipsec) in backends.iter().enumerate() {
        for family in ["mc", "cvc"] {
            let mut topo = DetectionTopology::new(&format!("bench-{family}"))?;
            topo.set_ipsec(ipsec);
            topo.start_vpn_gateway(VPN_POOL)?;
            let charon = topo.start_mn_charon()?;
            let _iha = topo.start_iha()?;
            let _xha = if family == "cvc" {
                Some(topo.start_xha()?)
            } else {
                None
            };
            // A T_MONITOR long enough that no re-detection falls in a transfer.
            let toml = vpn_toml_timed(&topo, &charon, family, "teardown", ipsec, (30, 5))?;
            let mn = topo.start_mn(&toml)?;
            wait_mode(&mn, "inside", "c")?;
            if family == "mc" && b == 0 {
                let plain = transfer(&topo, Net::Int1.mn_addr(), secs)
                    .with_context(|| format!("plain; mipd's log:\n{}", mn.log_text()))?;
                out.push(("plain".into(), plain));
                let c = transfer(&topo, INTERNAL_HOME_ADDR, secs).with_context(|| {
                    format!(
                        "mode c; MN stats {:?}\nmipd's log:\n{}",
                        mn.ctl_json(&["stats"])
                            .map(|v| v["stats"]["dataplane"].clone()),
                        mn.log_text()
                    )
                })?;
                out.push(("c".into(), c));
            }
            topo.move_mn(Net::Ext1, true)?;
            wait_mode(&mn, "outside", family)?;
            let k = key(family, ipsec);
            let mbps = transfer(&topo, INTERNAL_HOME_ADDR, secs)
                .with_context(|| format!("{k}; mipd's log:\n{}", mn.log_text()))?;
            out.push((k, mbps));
        }
    }
    Ok(out)
}

fn main() -> Result<()> {
    let mut rounds = 3usize;
    let mut secs = 3.0f64;
    let mut json: Option<std::path::PathBuf> = None;
    let mut backends = if kernel_has_esp() {
        vec![Ipsec::Libipsec, Ipsec::Kernel]
    } else {
        vec![Ipsec::Libipsec]
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--secs" => secs = args.next().context("--secs S")?.parse()?,
            "--json" => json = Some(args.next().context("--json FILE")?.into()),
            "--ipsec" => {
                backends = match args
                    .next()
                    .context("--ipsec libipsec|kernel|both")?
                    .as_str()
                {
                    "libipsec" => vec![Ipsec::Libipsec],
                    "kernel" => vec![Ipsec::Kernel],
                    "both" => vec![Ipsec::Libipsec, Ipsec::Kernel],
                    other => bail!("--ipsec {other}: libipsec, kernel or both"),
                }
            }
            other => {
                bail!(
                    "unknown argument {other}; usage: [--rounds N] [--secs S] [--ipsec libipsec|kernel|both] [--json FILE]"
                )
            }
        }
    }
    mipx_tests::require_root();
    let mut results: Vec<Vec<(String, f64)>> = Vec::new();
    for r in 0..rounds {
        let got = round(secs, &backends).with_context(|| format!("round {}", r + 1))?;
        let line: Vec<String> = got.iter().map(|(m, v)| format!("{m} {v:.0}")).collect();
        println!("round {}: Mbit/s {}", r + 1, line.join(", "));
        results.push(got);
    }
    if let Some(path) = json {
        let rounds: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::Value::Object(
                    r.iter()
                        .map(|(m, v)| (m.clone(), serde_json::json!(v)))
                        .collect(),
                )
            })
            .collect();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&serde_json::json!({
                "secs": secs,
                "ipsec": backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
                "rounds": rounds,
            }))?,
        )?;
    }
    Ok(())
}
