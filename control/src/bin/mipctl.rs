//! `mipctl`: talk to a running `mipd` over its control socket.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mipx_control::api::{Request, Response};
use mipx_control::config::DEFAULT_API_SOCKET;

#[derive(Parser)]
#[command(version, about = "Control a running mipd")]
struct Args {
    /// mipd's control socket.
    #[arg(long, short, default_value = DEFAULT_API_SOCKET, global = true)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Role, addresses and registration state.
    Status,
    /// The home agent's binding cache.
    Bindings,
    /// Protocol and daemon counters.
    Stats,
    /// Mobile node: register (optionally a new co-located care-of address).
    Register {
        #[arg(long = "care-of")]
        care_of: Option<Ipv4Addr>,
    },
    /// Mobile node: deregister.
    Deregister,
    /// eBPF programs, the interfaces they are attached to, and map sizes.
    Dataplane,
    /// Foreign agent: the visitor list.
    Visitors,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let req = match args.command {
        Command::Status => Request::Status,
        Command::Bindings => Request::Bindings,
        Command::Stats => Request::Stats,
        Command::Register { care_of } => Request::Register {
            care_of_addr: care_of,
        },
        Command::Deregister => Request::Deregister,
        Command::Dataplane => Request::Dataplane,
        Command::Visitors => Request::Visitors,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resp = rt
        .block_on(mipx_control::api::call(&args.socket, &req))
        .with_context(|| format!("cannot reach mipd at {}", args.socket.display()))?;
    if let Response::Error { message } = &resp {
        bail!("mipd: {message}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }
    print!("{}", render(&resp));
    Ok(())
}

fn render(resp: &Response) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match resp {
        Response::Status(s) => {
            let _ = writeln!(
                out,
                "role      {}\nversion   {}\nuptime    {}s",
                s.role, s.version, s.uptime_secs
            );
            if let Some(ha) = &s.ha {
                let _ = writeln!(out, "address   {}:{}", ha.address, ha.port);
                let _ = writeln!(
                    out,
                    "bindings  {} (max lifetime {}s, {} MN entries)",
                    ha.bindings, ha.max_lifetime, ha.mobile_node_entries
                );
            }
            if let Some(ifaces) = &s.interfaces {
                // RFC 5265: each interface on its own (§3.2.1).
                let _ = writeln!(
                    out,
                    "{:<10} {:<11} {:<5} {:<22} {:<16} {:>9} GATE",
                    "INTERFACE", "LOCATION", "MODE", "REASON", "CARE-OF", "I-HA AGO"
                );
                for i in ifaces {
                    let location = match (i.location, i.tentative) {
                        (mipx_control::proto::detect::Location::Outside, true) => {
                            "outside?".to_owned()
                        }
                        (l, _) => format!("{l:?}").to_lowercase(),
                    };
                    let gate = match i.gate_open_secs {
                        Some(left) => format!("{} ({left:.1}s left)", i.gate),
                        None => i.gate.clone(),
                    };
                    let _ = writeln!(
                        out,
                        "{:<10} {:<11} {:<5} {:<22} {:<16} {:>9} {}",
                        i.name,
                        location,
                        if i.mode.is_empty() { "-" } else { &i.mode },
                        format!("{:?}", i.reason),
                        i.care_of_addr.map_or("-".into(), |a| a.to_string()),
                        i.since_internal_registration_secs
                            .map_or("-".into(), |s| format!("{s:.1}s")),
                        gate
                    );
                }
            }
            if let Some(v) = &s.vpn {
                let _ = writeln!(
                    out,
                    "vpn       {} (gateway {}, ipsec {})",
                    v.state,
                    v.gateway,
                    v.ipsec.as_deref().unwrap_or("?")
                );
                let _ = writeln!(
                    out,
                    "tia       {} from {} (i-HA binding through the VPN: {})",
                    v.tia.map_or("-".into(), |a| a.to_string()),
                    v.local.map_or("-".into(), |a| a.to_string()),
                    if v.internal_registered {
                        "registered"
                    } else {
                        "none"
                    }
                );
                if let Some(coa) = v.external_care_of {
                    let _ = writeln!(
                        out,
                        "x-ha      bound to {coa} ({})",
                        if v.external_udp {
                            "IP-in-UDP, RFC 3519"
                        } else {
                            "IP-in-IP"
                        }
                    );
                }
                if !v.spis.is_empty() {
                    let _ = writeln!(out, "spis      {}", v.spis.join(" "));
                }
                if let Some(kernel) = &v.kernel_spis {
                    let _ = writeln!(
                        out,
                        "xfrm sas  {}",
                        if kernel.is_empty() {
                            "none".into()
                        } else {
                            kernel.join(" ")
                        }
                    );
                }
                if !v.sa_mismatch.is_empty() {
                    let _ = writeln!(
                        out,
                        "mismatch  charon reports {} the kernel does not hold",
                        v.sa_mismatch.join(" ")
                    );
                }
                if let Some(e) = &v.last_error {
                    let _ = writeln!(out, "vpn error {e}");
                }
            }
            if let Some(mn) = &s.mn {
                let _ = writeln!(out, "state     {:?}", mn.state);
                let _ = writeln!(
                    out,
                    "home      {} (home agent {})",
                    mn.home_addr, mn.home_agent
                );
                match (mn.care_of_addr, mn.remaining_secs) {
                    (Some(c), Some(r)) => {
                        let _ = writeln!(out, "care-of   {c} ({r}s left)");
                        let tunnel = match mn.udp_keepalive_secs {
                            Some(k) => format!("IP-in-UDP (RFC 3519), keepalive every {k}s"),
                            None => "IP-in-IP".into(),
                        };
                        let _ = writeln!(out, "tunnel    {tunnel}");
                    }
                    _ => {
                        let _ = writeln!(out, "care-of   -");
                    }
                }
            }
        }
        Response::Visitors(visitors) => {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<16} {:<17} {:<10} {:<9} {:<7} {:>8} {:>9}",
                "HOME ADDRESS",
                "HOME AGENT",
                "CARE-OF ADDRESS",
                "LINK-LAYER",
                "INTERFACE",
                "TUNNEL",
                "REVERSE",
                "LIFETIME",
                "REMAINING"
            );
            for v in visitors {
                let _ = writeln!(
                    out,
                    "{:<16} {:<16} {:<16} {:<17} {:<10} {:<9} {:<7} {:>7}s {:>8}s",
                    v.home_addr,
                    v.home_agent,
                    v.care_of_addr,
                    v.mac,
                    v.interface,
                    // RFC 3519 §4.5 behind a NAT, RFC 2003 otherwise.
                    if v.udp_tunnel {
                        "ip-in-udp"
                    } else {
                        "ip-in-ip"
                    },
                    if v.reverse_tunnel { "yes" } else { "no" },
                    v.lifetime,
                    v.remaining_secs
                );
            }
        }
        Response::Bindings(bindings) => {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<22} {:<10} {:<9} {:>10} {:>8} {:>9}",
                "HOME ADDRESS",
                "CARE-OF ADDRESS",
                "SOURCE",
                "TUNNEL",
                "FLAGS",
                "SPI",
                "LIFETIME",
                "REMAINING"
            );
            for b in bindings {
                let _ = writeln!(
                    out,
                    "{:<16} {:<16} {:<22} {:<10} {:<9} {:>10} {:>7}s {:>8}s",
                    b.home_addr,
                    b.care_of_addr,
                    b.source.to_string(),
                    tunnel_kind(b),
                    b.flags,
                    b.spi,
                    b.lifetime,
                    b.remaining_secs
                );
            }
            let _ = writeln!(out, "{} binding(s)", bindings.len());
        }
        Response::Stats(s) => {
            if let Some(ha) = &s.ha {
                let rows = [
                    ("requests", ha.requests),
                    ("accepted", ha.accepted),
                    ("deregistered", ha.deregistered),
                    ("expired", ha.expired),
                    ("dropped_malformed", ha.dropped_malformed),
                    ("dropped_bad_extension", ha.dropped_bad_extension),
                    ("dropped_unknown_extension", ha.dropped_unknown_extension),
                    ("dropped_no_auth", ha.dropped_no_auth),
                    ("dropped_unknown_sa", ha.dropped_unknown_sa),
                    ("denied_fa_auth", ha.denied_fa_auth),
                    ("dropped_fa_auth_unknown_fa", ha.dropped_fa_auth_unknown_fa),
                    ("dropped_unauthenticated", ha.dropped_unauthenticated),
                    ("dropped_untrusted", ha.dropped_untrusted),
                    ("udp_tunnels", ha.udp_tunnels),
                    ("udp_tunnels_declined", ha.udp_tunnels_declined),
                    ("keepalives", ha.keepalives),
                    ("half_bound_tunnels_bound", ha.half_bound_tunnels_bound),
                    ("dropped_tunnel_data", ha.dropped_tunnel_data),
                ];
                for (k, v) in rows {
                    let _ = writeln!(out, "ha.{k:<28} {v}");
                }
                for (code, n) in &ha.rejected {
                    let desc = mipx_common::wire::ReplyCode::from(*code);
                    let _ = writeln!(
                        out,
                        "ha.rejected[{code}]{:<17} {n}   ({})",
                        "",
                        desc.description()
                    );
                }
            }
            if let Some(fa) = &s.fa {
                // Every counter by name, the per-code maps with the code's meaning.
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(fa) {
                    for (k, v) in fields {
                        match v {
                            serde_json::Value::Object(codes) => {
                                for (code, n) in codes {
                                    let desc = code.parse::<u8>().map_or("", |c| {
                                        mipx_common::wire::ReplyCode::from(c).description()
                                    });
                                    let _ = writeln!(
                                        out,
                                        "fa.{:<28} {n}   ({desc})",
                                        format!("{k}[{code}]")
                                    );
                                }
                            }
                            other => {
                                let _ = writeln!(out, "fa.{k:<28} {other}");
                            }
                        }
                    }
                }
            }
            if let Some(mn) = &s.mn {
                let rows = [
                    ("requests_sent", mn.requests_sent),
                    ("retransmissions", mn.retransmissions),
                    ("accepted", mn.accepted),
                    ("denied", mn.denied),
                    ("resynchronisations", mn.resynchronisations),
                    ("dropped_replies", mn.dropped_replies),
                    ("keepalives_sent", mn.keepalives_sent),
                    ("keepalive_replies", mn.keepalive_replies),
                    ("nat_mapping_losses", mn.nat_mapping_losses),
                ];
                for (k, v) in rows {
                    let _ = writeln!(out, "mn.{k:<28} {v}");
                }
            }
            let d = &s.daemon;
            for (k, v) in [
                ("datagrams_received", d.datagrams_received),
                ("datagrams_sent", d.datagrams_sent),
                ("send_errors", d.send_errors),
                ("api_requests", d.api_requests),
                ("dropped_internal_interface", d.dropped_internal_interface),
            ] {
                let _ = writeln!(out, "daemon.{k:<24} {v}");
            }
            if let Some(counters) = &s.dataplane {
                for (k, v) in counters {
                    let _ = writeln!(out, "dataplane.{k:<21} {v}");
                }
            }
        }
        Response::Dataplane(d) => {
            let pins = d
                .pin_dir
                .as_ref()
                .map_or_else(|| "(not pinned)".to_owned(), |p| p.display().to_string());
            let _ = writeln!(out, "pinned under {pins}\n");
            let _ = writeln!(
                out,
                "{:<14} {:<12} {:>7} {:<14} LINK",
                "PROGRAM", "INTERFACE", "IFINDEX", "HOOK"
            );
            for a in &d.attachments {
                let link = match (&a.pinned, a.adopted) {
                    (Some(_), true) => "pinned, taken over from the previous mipd",
                    (Some(_), false) => "pinned",
                    (None, _) => "process-owned",
                };
                let _ = writeln!(
                    out,
                    "{:<14} {:<12} {:>7} {:<14} {link}",
                    a.program, a.interface, a.ifindex, a.hook
                );
            }
            let _ = writeln!(
                out,
                "\n{:<16} {:<13} {:>12} {:>10}",
                "MAP", "TYPE", "MAX ENTRIES", "ENTRIES"
            );
            for m in &d.maps {
                let entries = m.entries.map_or_else(|| "-".to_owned(), |n| n.to_string());
                let _ = writeln!(
                    out,
                    "{:<16} {:<13} {:>12} {:>10}",
                    m.name, m.kind, m.max_entries, entries
                );
            }
        }
        Response::Ok { message } => {
            let _ = writeln!(out, "{message}");
        }
        Response::Error { message } => {
            let _ = writeln!(out, "error: {message}");
        }
    }
    out
}

/// The TUNNEL column: IP-in-IP, or IP-in-UDP to the address the registration came from, which
/// differs from the care-of address behind a NAT (RFC 3519 §4.6) and not when forced.
fn tunnel_kind(b: &mipx_control::api::BindingInfo) -> &'static str {
    match b.udp_tunnel {
        None => "ip-in-ip",
        Some(end) if *end.ip() != b.care_of_addr => "udp nat",
        Some(_) => "udp",
    }
}
