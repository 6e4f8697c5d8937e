//! `mipd` as an RFC 5265 mobile node (`[mn.rfc5265]`): one [`Detector`] per interface, each
//! with its own registration socket bound to the interface (so detection through interface X
//! says nothing about Y, §3.2.1), rtnetlink link and address events as connection status
//! changes (§3.2.2), and the interface's plaintext gate in the dataplane.
//!
//! The gate is written before anything else happens on a change: a link or address event
//! closes it at once, and an "inside" decision opens it only until T_MONITOR after the i-HA
//! registration, in the kernel's clock, so a stalled or killed `mipd` cannot leak plaintext
//! (§3.2.4). Inside, user data from the internal home address is tunnelled to the i-HA (mode
//! c); outside it must use the VPN, which is not built yet, so the gate passes only signalling.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt as _, TryStreamExt as _};
use mipx_common::maps::{
    GATE_CLOSED, GATE_INSIDE, GATE_OUTSIDE, MN_ACTIVE, MN_REVERSE_TUNNEL, MnGate, MnTunnel,
};
use netlink_packet_route::link::LinkFlags;
use rtnetlink::sys::AsyncSocket as _;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::api::{self, Request, Response};
use crate::config::{Config, MnSettings};
use crate::daemon::{ApiCall, Dp, bind_api, error_chain, serve_api, setup_dataplane};
use crate::proto::Now;
use crate::proto::detect::{DetectEvent, DetectStatus, Detector, Gate, Location, Reason};

/// One tracked interface.
struct Interface {
    name: String,
    ifindex: u32,
    detector: Detector,
    socket: Arc<UdpSocket>,
    /// What the last look at the interface found: if usable (up, with carrier, routed), its
    /// care-of address and default gateway.
    seen: Option<Attachment>,
}

/// Where an interface is attached, as far as the kernel says: a change of either is a
/// connection status change (RFC 5265 §3.2.2), e.g. a DHCP renewal onto another router with the
/// same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attachment {
    care_of_addr: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
}

/// `mipctl status` for one interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    pub location: Location,
    pub reason: Reason,
    pub tentative: bool,
    pub care_of_addr: Option<Ipv4Addr>,
    pub since_internal_registration_secs: Option<f64>,
    /// "closed", "inside", "expired" or "outside", as the dataplane enforces it now.
    pub gate: String,
    /// Inside: seconds of plaintext left before T_MONITOR runs out.
    pub gate_open_secs: Option<f64>,
}

struct Node {
    start: Instant,
    ifaces: Vec<Interface>,
    dataplane: Option<Dp>,
    ha_port: u16,
    stats: api::DaemonStats,
}

/// CLOCK_MONOTONIC now, nanoseconds: the clock of `bpf_ktime_get_coarse_ns`.
fn kernel_monotonic_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Binds `socket` to interface `name` (SO_BINDTODEVICE): what it sends leaves there, whatever
/// the routing table says, and it receives only what arrives there.
fn bind_to_device(socket: &UdpSocket, name: &str) -> io::Result<()> {
    // SAFETY: a valid socket fd and a byte buffer of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Node {
    fn now(&self) -> Now {
        Now {
            mono: self.start.elapsed(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The gate value for `gate`, in the kernel's clock.
    fn gate_value(&self, gate: Gate, now: Now) -> MnGate {
        let (state, open_until_ns) = match gate {
            Gate::Closed => (GATE_CLOSED, 0),
            Gate::Outside => (GATE_OUTSIDE, 0),
            Gate::InsideUntil(deadline) => {
                let left = deadline.saturating_sub(now.mono);
                // The coarse clock the program reads may lag by a tick: close 10 ms early.
                let left = left.saturating_sub(Duration::from_millis(10));
                (
                    GATE_INSIDE,
                    kernel_monotonic_ns().saturating_add(left.as_nanos() as u64),
                )
            }
        };
        MnGate {
            state,
            mip_port: self.ha_port.to_be_bytes(),
            open_until_ns,
            // No VPN layer yet: outside passes signalling only.
            ..MnGate::default()
        }
    }

    /// Sends what every detector queued and applies their events.
    async fn flush(&mut self) {
        let now = self.now();
        for i in 0..self.ifaces.len() {
            while let Some(mut t) = self.ifaces[i].detector.poll_transmit() {
                t.dst.set_port(self.ha_port);
                match self.ifaces[i].socket.send_to(&t.payload, t.dst).await {
                    Ok(_) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        debug!(interface = %self.ifaces[i].name, dst = %t.dst, error = %e, "send failed");
                    }
                }
            }
            while let Some(e) = self.ifaces[i].detector.poll_event() {
                self.apply(i, e, now);
            }
        }
    }

    fn apply(&mut self, i: usize, e: DetectEvent, now: Now) {
        let (name, ifindex) = (self.ifaces[i].name.clone(), self.ifaces[i].ifindex);
        match e {
            DetectEvent::Gate(gate) => {
                let value = self.gate_value(gate, now);
                if let Some(dp) = &mut self.dataplane
                    && let Err(err) = dp.dp.set_mn_gate(ifindex, value)
                {
                    dp.errors += 1;
                    error!(interface = %name, error = %error_chain(&err), "cannot write the plaintext gate");
                }
                debug!(interface = %name, ?gate, "gate");
            }
            DetectEvent::Location { location, reason } => {
                info!(interface = %name, ?location, ?reason, "location");
                let d = &self.ifaces[i].detector;
                // Inside: mode c with the i-HA (RFC 5265 §2.1), user data from the internal
                // home address tunnelled from this interface's care-of address. Elsewhere
                // nothing is tunnelled in plaintext.
                let home = d.internal().config().home_addr;
                let tunnel = match (location, self.ifaces[i].seen.map(|a| a.care_of_addr)) {
                    // At home on the i-HA's link nothing is tunnelled.
                    (Location::Inside, Some(coa)) if coa != home => MnTunnel {
                        home_addr: home.octets(),
                        home_agent: d.internal().config().home_agent.octets(),
                        care_of_addr: coa.octets(),
                        flags: MN_ACTIVE
                            | if d.internal().config().reverse_tunnel {
                                MN_REVERSE_TUNNEL
                            } else {
                                0
                            },
                        ..MnTunnel::default()
                    },
                    _ => MnTunnel::default(),
                };
                if let Some(dp) = &mut self.dataplane
                    && let Err(err) = dp.dp.set_mn_tunnel(tunnel)
                {
                    dp.errors += 1;
                    error!(error = %error_chain(&err), "cannot update the tunnel");
                }
            }
        }
    }

    fn status(&self) -> Vec<InterfaceStatus> {
        let now = self.now();
        self.ifaces
            .iter()
            .map(|i| {
                let s: DetectStatus = i.detector.status(now);
                let (gate, open) = match s.gate {
                    Gate::Closed => ("closed".to_owned(), None),
                    Gate::Outside => ("outside".to_owned(), None),
                    Gate::InsideUntil(d) if d > now.mono => {
                        ("inside".to_owned(), Some((d - now.mono).as_secs_f64()))
                    }
                    Gate::InsideUntil(_) => ("expired".to_owned(), None),
                };
                InterfaceStatus {
                    name: i.name.clone(),
                    location: s.location,
                    reason: s.reason,
                    tentative: s.tentative,
                    care_of_addr: s.care_of_addr,
                    since_internal_registration_secs: s
                        .since_internal_registration
                        .map(|d| d.as_secs_f64()),
                    gate,
                    gate_open_secs: open,
                }
            })
            .collect()
    }

    fn api(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(api::Status {
                role: "mn".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: self.start.elapsed().as_secs(),
                ha: None,
                mn: None,
                interfaces: Some(self.status()),
            }),
            Request::Stats => Response::Stats(api::Stats {
                ha: None,
                mn: None,
                daemon: self.stats.clone(),
                dataplane: self.dataplane.as_ref().and_then(|dp| {
                    dp.dp
                        .counters()
                        .ok()
                        .map(|c| crate::dataplane::counters_by_name(&c))
                }),
            }),
            Request::Dataplane => match &self.dataplane {
                Some(dp) => Response::Dataplane(dp.dp.info()),
                None => Response::Error {
                    message: "no dataplane: the configuration has no [dataplane] table".into(),
                },
            },
            Request::Register { .. } => {
                // A manual trigger: treat it as a connection status change on every interface.
                let now = self.now();
                for i in &mut self.ifaces {
                    i.detector
                        .connection_changed(now, i.seen.map(|a| a.care_of_addr));
                }
                Response::Ok {
                    message: "detecting again on every interface".into(),
                }
            }
            Request::Deregister | Request::Bindings => Response::Error {
                message: "not available for an RFC 5265 mobile node; see `mipctl status`".into(),
            },
        }
    }

    /// Looks at every interface again (a netlink event arrived): a change of carrier or of its
    /// IPv4 address is a connection status change (§3.2.2).
    async fn refresh(&mut self, handle: &rtnetlink::Handle) {
        let now = self.now();
        for i in &mut self.ifaces {
            let toward = i.detector.internal().config().home_agent;
            let seen = match usable_address(handle, i.ifindex, &i.name, toward).await {
                Some(care_of_addr) => Some(Attachment {
                    care_of_addr,
                    gateway: default_gateway(handle, i.ifindex).await,
                }),
                None => None,
            };
            if seen != i.seen {
                info!(interface = %i.name, from = ?i.seen, to = ?seen, "connection status changed");
                i.seen = seen;
                i.detector
                    .connection_changed(now, seen.map(|a| a.care_of_addr));
            }
        }
    }
}

/// The care-of address of interface `name` if it is up with carrier: the source address the
/// kernel would pick for a datagram to `toward` leaving through it (a connected, device-bound
/// UDP socket; nothing is sent). While addresses are being swapped the interface may hold an
/// old and a new one; this picks the one its routes now use, and `None` when there is no route.
async fn usable_address(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    name: &str,
    toward: Ipv4Addr,
) -> Option<Ipv4Addr> {
    let link = handle
        .link()
        .get()
        .match_index(ifindex)
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()?;
    let flags = link.header.flags;
    if !flags.contains(LinkFlags::Up) || !flags.contains(LinkFlags::LowerUp) {
        return None;
    }
    let probe = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .ok()?;
    bind_to_device(&probe, name).ok()?;
    probe
        .connect(SocketAddrV4::new(toward, mipx_common::wire::MIP_PORT))
        .await
        .ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// The gateway of the main table's IPv4 default route through `ifindex`, if any.
async fn default_gateway(handle: &rtnetlink::Handle, ifindex: u32) -> Option<Ipv4Addr> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let mut routes = handle
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Ok(Some(r)) = routes.try_next().await {
        if r.header.destination_prefix_length != 0 {
            continue;
        }
        let through_us = r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == ifindex));
        let gateway = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
            _ => None,
        });
        if through_us && gateway.is_some() {
            return gateway;
        }
    }
    None
}

/// Runs an RFC 5265 mobile node until SIGINT or SIGTERM.
pub async fn run(config: Config, settings: MnSettings) -> io::Result<()> {
    let Some(rfc) = settings.rfc5265 else {
        return Err(io::Error::other("no [mn.rfc5265] table"));
    };
    let mut dataplane = match &config.dataplane {
        Some(dp) => Some(
            setup_dataplane(dp, crate::config::Role::Mn)
                .map_err(|e| io::Error::other(format!("dataplane: {}", error_chain(&e))))?,
        ),
        None => {
            warn!("no [dataplane] table: nothing enforces the plaintext gate");
            None
        }
    };
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    // Link, IPv4 address and IPv4 route changes: what `ip monitor` shows.
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_IFADDR
        | rtnetlink::constants::RTMGRP_IPV4_ROUTE;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
    tokio::spawn(conn);

    let (rx_tx, mut rx) = mpsc::channel::<(usize, SocketAddrV4, Vec<u8>)>(256);
    let mut ifaces = Vec::new();
    for (idx, name) in rfc.interfaces.iter().enumerate() {
        let ifindex = crate::dataplane::ifindex(name)
            .map_err(|e| io::Error::other(format!("mn.rfc5265.interfaces: {name}: {e}")))?;
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
        bind_to_device(&socket, name)
            .map_err(|e| io::Error::other(format!("binding the socket to {name}: {e}")))?;
        let socket = Arc::new(socket);
        let reader = Arc::clone(&socket);
        let tx = rx_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                if let SocketAddr::V4(from) = from
                    && tx.send((idx, from, buf[..n].to_vec())).await.is_err()
                {
                    break;
                }
            }
        });
        // Until detection decides, no user data on it (§3.2.2).
        if let Some(dp) = &mut dataplane {
            let closed = MnGate {
                state: GATE_CLOSED,
                mip_port: settings.ha_port.to_be_bytes(),
                ..MnGate::default()
            };
            dp.dp
                .set_mn_gate(ifindex, closed)
                .map_err(|e| io::Error::other(error_chain(&e)))?;
        }
        info!(interface = %name, ifindex, local = %socket.local_addr()?, "tracking interface (RFC 5265)");
        ifaces.push(Interface {
            name: name.clone(),
            ifindex,
            detector: Detector::new(rfc.detect.clone()),
            socket,
            seen: None,
        });
    }
    // Gates of interfaces an earlier configuration tracked and this one does not.
    if let Some(dp) = &mut dataplane {
        let ours: Vec<u32> = ifaces.iter().map(|i: &Interface| i.ifindex).collect();
        for (ifindex, _) in dp.dp.mn_gates().unwrap_or_default() {
            if !ours.contains(&ifindex) && dp.dp.remove_mn_gate(ifindex).is_ok() {
                info!(
                    ifindex,
                    "removed the plaintext gate of an interface no longer tracked"
                );
            }
        }
    }
    let mut node = Node {
        start: Instant::now(),
        ifaces,
        dataplane,
        ha_port: settings.ha_port,
        stats: api::DaemonStats::default(),
    };
    let listener = bind_api(&config.api_socket)?;
    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    node.refresh(&handle).await;
    node.flush().await;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        let now = node.now();
        let next = node
            .ifaces
            .iter()
            .filter_map(|i| i.detector.poll_timeout())
            .min()
            .unwrap_or(now.mono + Duration::from_secs(3600))
            .max(now.mono);
        let deadline = tokio::time::Instant::from_std(node.start + next);
        tokio::select! {
            Some((idx, from, bytes)) = rx.recv() => {
                node.stats.datagrams_received += 1;
                let now = node.now();
                node.ifaces[idx].detector.handle_datagram(now, from, &bytes);
            }
            Some(_) = messages.next() => {
                // Coalesce a burst (an address change brings routes with it), then look.
                while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), messages.next()).await {}
                node.refresh(&handle).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = node.now();
                for i in &mut node.ifaces {
                    i.detector.handle_timeout(now);
                }
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve_api(stream, api_tx.clone())); }
                Err(e) => warn!(error = %e, "API accept failed"),
            },
            Some((req, reply)) = api_rx.recv() => {
                node.stats.api_requests += 1;
                let _ = reply.send(node.api(req));
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        node.flush().await;
    }
    info!("shutting down; the gates stay as they are and close on their own clocks");
    let _ = std::fs::remove_file(&config.api_socket);
    Ok(())
}
