//! The tokio shell around the sans-IO cores (DESIGN.md §5): one `select!` loop over the Mobile
//! IP socket, one timer from `poll_timeout()`, the API listener and signals. After each input it
//! drains `poll_transmit` and `poll_event`. It decides nothing itself.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::api::{self, BindingInfo, DaemonStats, Request, Response};
use crate::binding::Binding;
use crate::config::{Config, DataplaneSettings, HaSettings, MnSettings, Role, XdpModeSetting};
use crate::dataplane::{self, Dataplane, DataplaneError, LoadOptions, programs};
use crate::garp;
use crate::proto::ha::{HaEvent, HomeAgent, RemovalReason};
use crate::proto::mn::{MnEvent, MnState, MobileNode};
use crate::proto::{Now, Transmit};
use mipx_common::maps::{
    HaBinding, HaDataplaneConfig, IFACE_HOME_LINK, IfaceInfo, MN_ACTIVE, MN_REVERSE_TUNNEL,
    MN_UDP_TUNNEL, MnTunnel, TUNNEL_REVERSE, TUNNEL_UDP,
};
use mipx_common::wire::RequestFlags;

/// The protocol core this daemon drives.
enum Core {
    Ha {
        ha: HomeAgent,
        port: u16,
    },
    Mn {
        mn: MobileNode,
        /// Boxed: it repeats the engine's configuration, and the variants should be alike in
        /// size.
        settings: Box<MnSettings>,
    },
}

struct Daemon {
    core: Core,
    socket: UdpSocket,
    start: Instant,
    stats: DaemonStats,
    dataplane: Option<Dp>,
    /// x-HA: ifindexes of `ha.internal_interfaces`, whose registrations are dropped (RFC 5265
    /// §3.7).
    internal_ifindexes: Vec<u32>,
    /// When a drop on an internal interface was last logged (one line per second at most).
    internal_log: Option<Instant>,
    /// Mobile node with `[mn.agent_discovery]`: the link where it looks for agents.
    agents: Option<crate::agent_link::AgentLink>,
    agent_frames: Option<mpsc::Receiver<(u32, Vec<u8>)>>,
}

/// The loaded dataplane and what the daemon needs to drive it.
pub(crate) struct Dp {
    pub(crate) dp: Dataplane,
    /// (ifindex, MAC) of each attached interface, in configuration order.
    interfaces: Vec<(u32, [u8; 6])>,
    /// (ifindex, MAC) of the home agent's home link.
    home_link: Option<(u32, [u8; 6])>,
    home_link_name: Option<String>,
    /// Home agent: what the program's config slot holds (the next-hop epoch advances).
    ha_config: Option<HaDataplaneConfig>,
    /// Map updates that failed (logged; the next event for the binding retries).
    pub(crate) errors: u64,
}

impl Dp {
    /// `mipctl stats`: the per-verdict counters by name, if there is a dataplane.
    pub(crate) fn counters(dp: Option<&Dp>) -> Option<std::collections::BTreeMap<String, u64>> {
        dp.and_then(|dp| dp.dp.counters().ok())
            .map(|c| dataplane::counters_by_name(&c))
    }

    /// `mipctl dataplane`.
    pub(crate) fn info_response(dp: Option<&Dp>) -> Response {
        match dp {
            Some(dp) => Response::Dataplane(dp.dp.info()),
            None => Response::Error {
                message: "no dataplane: the configuration has no [dataplane] table".into(),
            },
        }
    }
}

/// Loads the object, re-opening pinned maps, and attaches the role's programs, taking over
/// links a previous `mipd` pinned so forwarding never stops (DESIGN.md §4).
pub(crate) fn setup_dataplane(
    settings: &DataplaneSettings,
    role: Role,
) -> Result<Dp, DataplaneError> {
    let kernel = dataplane::probe_kernel()?;
    info!(kernel = %kernel.release, tc = kernel.tc_attach(), "kernel probed");
    let mut dp = Dataplane::load_with(&LoadOptions {
        pin_dir: Some(settings.pin_dir.clone()),
        max_bindings: settings.max_bindings,
    })?;
    let generic = settings.xdp_mode == XdpModeSetting::Generic;
    if matches!(role, Role::Ha | Role::Fa) {
        for name in &settings.interfaces {
            // A home agent is a router (RFC 5944 §3.8), a foreign agent routes its visitors'
            // packets (§4.2.2), and bpf_fib_lookup answers only for
            // interfaces with forwarding on. accept_local: a tunnel packet XDP hands to the
            // stack (next hop unresolved) has our own address as source, which the stack
            // would otherwise drop as a martian.
            for (key, value) in [("forwarding", "1"), ("accept_local", "1")] {
                let path = format!("/proc/sys/net/ipv4/conf/{name}/{key}");
                if let Err(e) = std::fs::write(&path, value) {
                    warn!(%path, error = %e, "cannot set sysctl; the fast path may hand packets to a stack that drops them");
                }
            }
        }
    }
    let mut interfaces = Vec::new();
    let mut home_link = None;
    for name in &settings.interfaces {
        let mac = dataplane::mac_address(name)?;
        let attachment = match role {
            Role::Mn => {
                dp.attach_tc_egress(programs::MN_TC_EGRESS, name)?;
                dp.attach_xdp(programs::MN_XDP, name, generic)?
            }
            Role::Fa => dp.attach_xdp(programs::FA_XDP, name, generic)?,
            Role::Ha => dp.attach_xdp(programs::HA_XDP, name, generic)?,
        };
        let ifindex = attachment.ifindex;
        info!(interface = %name, ifindex, hook = %attachment.hook, adopted = attachment.adopted, "dataplane attached");
        let is_home = settings.home_link.as_deref() == Some(name.as_str());
        dp.set_iface(
            ifindex,
            IfaceInfo {
                mac,
                flags: if is_home { IFACE_HOME_LINK } else { 0 },
            },
        )?;
        if is_home {
            home_link = Some((ifindex, mac));
        }
        interfaces.push((ifindex, mac));
    }
    Ok(Dp {
        dp,
        interfaces,
        home_link,
        home_link_name: settings.home_link.clone(),
        ha_config: None,
        errors: 0,
    })
}

/// RFC 5944 §4.6: when the HA accepts a deregistration from a mobile node back home, it MUST
/// also broadcast a gratuitous ARP mapping the home address to the MN's own link-layer address
/// (its radio range may differ from the MN's). We learn that address the way the kernel does:
/// the reply to the MN makes the kernel resolve it, so wait for a complete entry (up to 2 s),
/// then announce it three times.
fn announce_returned(ifindex: u32, own_mac: [u8; 6], ifname: String, home_addr: Ipv4Addr) {
    tokio::spawn(async move {
        for _ in 0..40 {
            if let Some(mac) = garp::resolved_mac(home_addr, &ifname) {
                announce(ifindex, own_mac, mac, home_addr);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        debug!(home = %home_addr, "mobile node's MAC not resolved; no gratuitous ARP on its behalf");
    });
}

/// The dataplane's copy of a binding: what the fast path needs, plus what a restarted `mipd`
/// needs to adopt it.
fn ha_binding(b: &Binding, home_agent: Ipv4Addr, now: Now) -> HaBinding {
    let left = b.remaining(now.mono);
    let expires = now.unix + left;
    let registered = expires.saturating_sub(Duration::from_secs(b.lifetime.into()));
    HaBinding {
        care_of_addr: b.care_of_addr.octets(),
        home_agent: home_agent.octets(),
        tunnel_flags: if b.flags.contains(RequestFlags::T) {
            TUNNEL_REVERSE
        } else {
            0
        } | if b.udp_tunnel.is_some() {
            TUNNEL_UDP
        } else {
            0
        },
        spi: b.spi,
        // With UDP tunnelling the tunnel's far end; it is the registration's source (§4.6).
        source_addr: b.udp_tunnel.unwrap_or(b.source).ip().octets(),
        source_port: b.udp_tunnel.unwrap_or(b.source).port().to_be_bytes(),
        lifetime: b.lifetime,
        request_flags: b.flags.0,
        _pad: [0; 7],
        identification: b.identification,
        registered_unix_ms: registered.as_millis() as u64,
        expires_unix_ms: expires.as_millis() as u64,
    }
}

/// Broadcasts a gratuitous ARP now and twice more, 500 ms apart (RFC 5944 §4.6: "SHOULD be
/// retransmitted a small number of times"), without holding up the caller.
fn announce(ifindex: u32, own_mac: [u8; 6], mac: [u8; 6], addr: Ipv4Addr) {
    tokio::spawn(async move {
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if let Err(e) = garp::send(ifindex, own_mac, mac, addr) {
                warn!(%addr, ifindex, error = %e, "gratuitous ARP failed");
                return;
            }
        }
        debug!(%addr, ifindex, "gratuitous ARP sent");
    });
}

pub(crate) type ApiCall = (Request, oneshot::Sender<Response>);

/// Runs `mipd` until SIGINT or SIGTERM.
pub async fn run(mut config: Config) -> io::Result<()> {
    if config.role == Role::Mn
        && let Some(settings) = config.mn.take_if(|m| m.rfc5265.is_some())
    {
        return crate::mn5265::run(config, settings).await;
    }
    if config.role == Role::Fa {
        return crate::fa::run(config).await;
    }
    let (core, bind, internal_ifindexes) = match (config.role, config.ha, config.mn) {
        (
            Role::Ha,
            Some(HaSettings {
                core,
                port,
                internal_interfaces,
            }),
            _,
        ) => {
            let bind = SocketAddrV4::new(core.address, port);
            let internal = internal_interfaces
                .iter()
                .map(|name| {
                    dataplane::ifindex(name).map_err(|e| {
                        io::Error::other(format!("ha.internal_interfaces: {name}: {e}"))
                    })
                })
                .collect::<io::Result<Vec<u32>>>()?;
            if let Some(nets) = &core.trusted_networks {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                info!(trusted = ?list, "internal home agent (RFC 5265): answering only trusted networks");
            }
            (
                Core::Ha {
                    ha: HomeAgent::new(core),
                    port,
                },
                bind,
                internal,
            )
        }
        (Role::Mn, _, Some(settings)) => {
            let mn = MobileNode::new(settings.core.clone());
            (
                Core::Mn {
                    mn,
                    settings: Box::new(settings),
                },
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                Vec::new(),
            )
        }
        _ => {
            return Err(io::Error::other(
                "configuration has no settings for its role",
            ));
        }
    };
    let dataplane = match &config.dataplane {
        Some(settings) => Some(setup_dataplane(settings, config.role).map_err(|e| {
            io::Error::other(format!(
                "dataplane (pinned under {}): {}",
                settings.pin_dir.display(),
                error_chain(&e)
            ))
        })?),
        None => {
            warn!("no [dataplane] table: control plane only, nothing is tunnelled");
            None
        }
    };

    let socket = UdpSocket::bind(bind).await?;
    info!(local = %socket.local_addr()?, "Mobile IP socket bound");
    // The arrival interface of every datagram, for the x-HA's internal-interface rule.
    crate::pktinfo::enable(socket.as_fd())?;
    let listener = bind_api(&config.api_socket)?;
    info!(path = %config.api_socket.display(), "control API listening");

    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    let mut d = Daemon {
        core,
        socket,
        start: Instant::now(),
        stats: DaemonStats::default(),
        dataplane,
        internal_ifindexes,
        internal_log: None,
        agents: None,
        agent_frames: None,
    };
    if let Core::Mn { mn, settings } = &d.core
        && let Some(name) = &settings.agent_discovery
    {
        let now = d.now();
        let (tx, rx) = mpsc::channel(256);
        d.agents = Some(
            crate::agent_link::AgentLink::open(name, mn.config().home_agent, now, tx).map_err(
                |e| io::Error::other(format!("mn.agent_discovery.interface: {name}: {e}")),
            )?,
        );
        d.agent_frames = Some(rx);
    }
    d.adopt_dataplane_state();
    d.startup();
    d.flush().await;

    // The fast path caches FIB answers per epoch; advancing it renews them (see
    // dataplane-ebpf/src/nexthop.rs).
    let mut epoch_tick =
        tokio::time::interval(Duration::from_millis(mipx_common::maps::NEXTHOP_EPOCH_MS));
    epoch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let deadline = d.deadline();
        tokio::select! {
            r = d.socket.readable() => match r {
                Ok(()) => {
                    // Drain what is queued before going back to select!: under load this
                    // batches the socket work and keeps replies in arrival order.
                    for _ in 0..257 {
                        let received = d.socket.try_io(tokio::io::Interest::READABLE, || {
                            crate::pktinfo::recv(d.socket.as_fd(), &mut buf)
                        });
                        match received {
                            Ok(r) => d.datagram(r.from, r.ifindex, &buf[..r.len]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                warn!(error = %e, "receive failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "receive failed"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now = d.now();
                match &mut d.core {
                    Core::Ha { ha, .. } => ha.handle_timeout(now),
                    Core::Mn { mn, .. } => mn.handle_timeout(now),
                }
                if let Some(a) = &mut d.agents {
                    a.discovery.handle_timeout(now);
                }
            }
            Some((_, frame)) = next_agent_frame(&mut d.agent_frames) => {
                let now = d.now();
                if let Some(a) = &mut d.agents {
                    a.frame(now, &frame);
                }
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve_api(stream, api_tx.clone())); }
                Err(e) => warn!(error = %e, "API accept failed"),
            },
            Some((req, reply)) = api_rx.recv() => {
                d.stats.api_requests += 1;
                let _ = reply.send(d.api(req));
            }
            _ = epoch_tick.tick(), if d.has_ha_dataplane() => d.advance_nexthop_epoch(),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        d.flush().await;
    }
    info!("shutting down");
    d.shutdown(&mut buf).await;
    let _ = std::fs::remove_file(&config.api_socket);
    Ok(())
}

/// The next frame from the mobile node's agent-discovery links; never, without one.
pub(crate) async fn next_agent_frame(
    frames: &mut Option<mpsc::Receiver<(u32, Vec<u8>)>>,
) -> Option<(u32, Vec<u8>)> {
    match frames {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The time for the sans-IO cores, on a daemon started at `start`: the shell reads the clocks,
/// the cores never do (DESIGN.md §1.3).
pub(crate) fn now_since(start: Instant) -> Now {
    Now {
        mono: start.elapsed(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

/// `error: cause: cause` on one line, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn bind_api(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed daemon would make bind fail; nobody else owns this path.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // The API can deregister a mobile node: root only.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

pub(crate) async fn serve_api(stream: UnixStream, tx: mpsc::Sender<ApiCall>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (otx, orx) = oneshot::channel();
            if tx.send((req, otx)).await.is_err() {
                return;
            }
            match orx.await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}

impl Daemon {
    fn now(&self) -> Now {
        now_since(self.start)
    }

    fn deadline(&self) -> tokio::time::Instant {
        let next = match &self.core {
            Core::Ha { ha, .. } => ha.poll_timeout(),
            Core::Mn { mn, .. } => mn.poll_timeout(),
        };
        let next = match self
            .agents
            .as_ref()
            .and_then(|a| a.discovery.poll_timeout())
        {
            Some(d) => Some(next.map_or(d, |n| n.min(d))),
            None => next,
        };
        // Without a timer, wake up rarely; nothing is due.
        let at = next.map_or(self.start.elapsed() + Duration::from_secs(3600), |t| {
            t.max(self.start.elapsed())
        });
        tokio::time::Instant::from_std(self.start + at)
    }

    /// Home agent: adopts the bindings a previous `mipd` left in the pinned map, removing
    /// those that ran out meanwhile, and enables the fast path. Mobile node: starts inactive;
    /// the map is rewritten when a registration is accepted.
    fn adopt_dataplane_state(&mut self) {
        let now = self.now();
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        match &mut self.core {
            Core::Ha { ha, port } => {
                let home_agent = ha.config().address;
                let found = match dp.dp.bindings() {
                    Ok(found) => found,
                    Err(e) => {
                        warn!(error = %error_chain(&e), "cannot read pinned bindings");
                        Vec::new()
                    }
                };
                for (home_addr, b) in found {
                    let source =
                        SocketAddrV4::new(b.source_addr.into(), u16::from_be_bytes(b.source_port));
                    let binding = Binding {
                        home_addr,
                        care_of_addr: b.care_of_addr.into(),
                        source,
                        flags: RequestFlags(b.request_flags),
                        udp_tunnel: (b.tunnel_flags & TUNNEL_UDP != 0).then_some(source),
                        half_bound: false,
                        spi: b.spi,
                        identification: b.identification,
                        lifetime: b.lifetime,
                        registered_at: Duration::ZERO,
                        expires_at: Duration::ZERO,
                    };
                    let expires = Duration::from_millis(b.expires_unix_ms);
                    if !ha.restore(now, binding, expires) {
                        info!(home = %home_addr, "stale binding removed from the dataplane");
                        if let Err(e) = dp.dp.remove_binding(home_addr) {
                            warn!(home = %home_addr, error = %error_chain(&e), "removing stale binding");
                        }
                    }
                }
                let config = HaDataplaneConfig {
                    home_agent: home_agent.octets(),
                    enabled: 1,
                    udp_port: port.to_be_bytes(),
                    ..HaDataplaneConfig::default()
                };
                if let Err(e) = dp.dp.set_ha_config(config) {
                    error!(error = %error_chain(&e), "cannot enable the home agent fast path");
                }
                dp.ha_config = Some(config);
            }
            Core::Mn { .. } => {
                if let Err(e) = dp.dp.set_mn_tunnel(MnTunnel::default()) {
                    error!(error = %error_chain(&e), "cannot reset the mobile node tunnel");
                }
                // A plain mobile node runs no RFC 5265 detection: gates pinned by an earlier
                // configuration would block its traffic for good.
                for (ifindex, _) in dp.dp.mn_gates().unwrap_or_default() {
                    if let Err(e) = dp.dp.remove_mn_gate(ifindex) {
                        error!(ifindex, error = %error_chain(&e), "cannot remove a stale plaintext gate");
                    } else {
                        info!(
                            ifindex,
                            "removed the plaintext gate of an earlier RFC 5265 configuration"
                        );
                    }
                }
            }
        }
    }

    fn has_ha_dataplane(&self) -> bool {
        self.dataplane
            .as_ref()
            .is_some_and(|dp| dp.ha_config.is_some())
    }

    /// Invalidates the fast path's cached FIB answers, so route and neighbour changes reach it
    /// within one tick.
    fn advance_nexthop_epoch(&mut self) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        let Some(config) = &mut dp.ha_config else {
            return;
        };
        config.nexthop_epoch = config.nexthop_epoch.wrapping_add(1);
        let config = *config;
        if let Err(e) = dp.dp.set_ha_config(config) {
            dp.errors += 1;
            debug!(error = %error_chain(&e), "advancing the next-hop epoch");
        }
    }

    /// Applies what agent discovery found: register through a new foreign agent (and route
    /// the home address to it), or deregister at home (RFC 5944 §2.4.3); then sends its
    /// solicitations.
    async fn agent_actions(&mut self) {
        let now = self.now();
        let (Core::Mn { mn, settings }, Some(a)) = (&mut self.core, &mut self.agents) else {
            return;
        };
        let home = mn.config().home_addr;
        for action in a.actions() {
            match action {
                // RFC 5944 §2.4.1, §3.6.1.1: with a co-located care-of address of our own we
                // register it directly, unless the agent requires registration through it
                // (R); then through the agent, 'D' set (RFC 3519 §4.11 when it is behind a
                // NAT). The home address is not routed to the agent: we tunnel ourselves.
                crate::agent_link::AgentAction::RegisterVia {
                    via, required, udp, ..
                } if settings.care_of_addr.is_some() => {
                    let Some(co_located) = settings.care_of_addr else {
                        continue;
                    };
                    if required {
                        info!(agent = %via.addr, care_of = %co_located, udp, "the foreign agent requires registration (R): registering the co-located care-of address through it");
                        mn.register_co_located_via(now, via, co_located, udp);
                    } else if mn.via().is_some() {
                        mn.register(now, co_located);
                    }
                }
                crate::agent_link::AgentAction::RegisterVia {
                    via,
                    care_of_addr: coa,
                    ..
                } => {
                    // A new agent, a move, or the agent rebooted (§2.4.4): register again.
                    info!(agent = %via.addr, care_of = %coa, "registering through the foreign agent");
                    mn.register_via(now, via, coa);
                    a.route_home_via(home, via.addr).await;
                }
                crate::agent_link::AgentAction::Lost => {}
                crate::agent_link::AgentAction::AtHome => {
                    info!(
                        "our home agent advertises here: at home, deregistering (RFC 5944 §2.4.3)"
                    );
                    mn.register(now, home);
                    a.unroute_home().await;
                }
            }
        }
        a.send_solicitations(Ipv4Addr::UNSPECIFIED).await;
    }

    fn startup(&mut self) {
        let now = self.now();
        if let Core::Mn { mn, settings } = &mut self.core
            && let Some(coa) = settings.care_of_addr
        {
            mn.register(now, coa);
        }
    }

    fn datagram(&mut self, from: SocketAddrV4, ifindex: u32, bytes: &[u8]) {
        self.stats.datagrams_received += 1;
        if self.internal_ifindexes.contains(&ifindex) {
            // RFC 5265 §3.7: an x-HA that sees a registration arrive from the intranet drops
            // it, so that a mobile node inside never decides it is outside.
            self.stats.dropped_internal_interface += 1;
            if self
                .internal_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                info!(%from, ifindex, "dropped: datagram on an internal interface (RFC 5265 §3.7)");
                self.internal_log = Some(Instant::now());
            }
            return;
        }
        let now = self.now();
        match &mut self.core {
            Core::Ha { ha, .. } => {
                let to = ha.config().address;
                ha.handle_datagram(now, from, to, bytes);
            }
            Core::Mn { mn, .. } => mn.handle_datagram(now, from, bytes),
        }
    }

    /// Sends what the core queued and applies its events.
    async fn flush(&mut self) {
        self.agent_actions().await;
        loop {
            let t = match &mut self.core {
                Core::Ha { ha, .. } => ha.poll_transmit(),
                Core::Mn { mn, settings } => mn.poll_transmit().map(|mut t| {
                    t.dst.set_port(settings.ha_port);
                    t
                }),
            };
            let Some(t) = t else {
                break;
            };
            // To a foreign agent: on its link, to its link-layer address (§3.6.1.1).
            if let (Core::Mn { mn, .. }, Some(a)) = (&self.core, &mut self.agents)
                && let Some(via) = mn.via()
                && *t.dst.ip() == via.addr
            {
                let port = self.socket.local_addr().map_or(0, |l| l.port());
                match a.send_registration(&t, via, port).await {
                    Ok(()) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        debug!(dst = %t.dst, error = %e, "send to the foreign agent failed");
                    }
                }
                continue;
            }
            let Transmit { dst, payload, .. } = t;
            let sent = match self.socket.try_send_to(&payload, dst.into()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.send_to(&payload, dst).await
                }
                r => r,
            };
            match sent {
                Ok(_) => self.stats.datagrams_sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    debug!(%dst, error = %e, "send failed");
                }
            }
        }
        match &mut self.core {
            Core::Ha { ha, .. } => {
                let now = Now {
                    mono: self.start.elapsed(),
                    unix: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default(),
                };
                let home_agent = ha.config().address;
                while let Some(e) = ha.poll_event() {
                    // The binding cache is the source of truth; the map mirrors it at once
                    // (the core already logged the change).
                    let Some(dp) = &mut self.dataplane else {
                        continue;
                    };
                    let result = match &e {
                        // RFC 3519 §4.11: a half-bound tunnel has no far end until the mobile
                        // node's first keepalive; tunnelling to the registration's source would
                        // reach the foreign agent, not the node.
                        HaEvent::BindingAdded(b) | HaEvent::BindingUpdated { new: b, .. }
                            if b.half_bound && b.udp_tunnel.is_none() =>
                        {
                            dp.dp.remove_binding(b.home_addr)
                        }
                        HaEvent::BindingAdded(b) => {
                            // §4.6: a new binding (the MN was assumed at home) MUST be
                            // announced with a gratuitous ARP on the home link.
                            let r = dp
                                .dp
                                .upsert_binding(b.home_addr, ha_binding(b, home_agent, now));
                            if let Some((ifindex, mac)) = dp.home_link {
                                announce(ifindex, mac, mac, b.home_addr);
                            }
                            r
                        }
                        HaEvent::BindingUpdated { new, .. } => dp
                            .dp
                            .upsert_binding(new.home_addr, ha_binding(new, home_agent, now)),
                        HaEvent::BindingRemoved { binding, reason } => {
                            debug!(home = %binding.home_addr, ?reason, "binding removed");
                            if *reason == RemovalReason::Deregistered
                                && let Some((ifindex, own_mac)) = dp.home_link
                                && let Some(ifname) = dp.home_link_name.clone()
                            {
                                announce_returned(ifindex, own_mac, ifname, binding.home_addr);
                            }
                            dp.dp.remove_binding(binding.home_addr)
                        }
                    };
                    if let Err(err) = result {
                        dp.errors += 1;
                        error!(event = ?e, error = %error_chain(&err), "dataplane update failed");
                    }
                }
            }
            Core::Mn { mn, settings } => {
                // The socket is bound to an ephemeral port; registrations and tunnelled data
                // share it (RFC 3519 §4.4).
                let local_port = self.socket.local_addr().map_or(0, |a| a.port());
                while let Some(e) = mn.poll_event() {
                    if let Some(dp) = &mut self.dataplane {
                        let config = mn.config();
                        let tunnel = match &e {
                            MnEvent::Registered {
                                care_of_addr,
                                udp_tunnel,
                                ..
                            } if *care_of_addr != config.home_addr && !mn.agent_decapsulates() => {
                                Some(MnTunnel {
                                    home_addr: config.home_addr.octets(),
                                    home_agent: config.home_agent.octets(),
                                    care_of_addr: care_of_addr.octets(),
                                    flags: MN_ACTIVE
                                        | if config.reverse_tunnel {
                                            MN_REVERSE_TUNNEL
                                        } else {
                                            0
                                        }
                                        | if *udp_tunnel { MN_UDP_TUNNEL } else { 0 },
                                    // RFC 3519 §4.4: data uses the registration's ports.
                                    mn_port: local_port.to_be_bytes(),
                                    ha_port: settings.ha_port.to_be_bytes(),
                                })
                            }
                            // Through a foreign agent it tunnels and decapsulates (§4.2.2).
                            MnEvent::Registered { .. }
                            | MnEvent::Deregistered { .. }
                            | MnEvent::Expired
                            | MnEvent::Denied { .. } => Some(MnTunnel::default()),
                            _ => None,
                        };
                        if let Some(tunnel) = tunnel
                            && let Err(err) = dp.dp.set_mn_tunnel(tunnel)
                        {
                            dp.errors += 1;
                            error!(error = %error_chain(&err), "dataplane update failed");
                        }
                    }
                    match e {
                        MnEvent::Registered {
                            care_of_addr,
                            lifetime,
                            code,
                            udp_tunnel,
                            trusted,
                            ..
                        } => {
                            info!(coa = %care_of_addr, lifetime, %code, udp_tunnel, trusted, "registration accepted")
                        }
                        MnEvent::Denied { code } => error!(%code, "registration denied"),
                        MnEvent::RegistrationTimeout { attempts } => {
                            warn!(attempts, "no registration reply yet; still retrying")
                        }
                        other => info!(event = ?other, "mobile node event"),
                    }
                }
            }
        }
    }

    fn api(&mut self, req: Request) -> Response {
        let now = self.now();
        let uptime_secs = self.start.elapsed().as_secs();
        match (req, &mut self.core) {
            (Request::Status, core) => Response::Status(api::Status {
                role: match core {
                    Core::Ha { .. } => "ha".into(),
                    Core::Mn { .. } => "mn".into(),
                },
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs,
                ha: match core {
                    Core::Ha { ha, port } => Some(api::HaStatus {
                        address: ha.config().address,
                        port: *port,
                        max_lifetime: ha.config().max_lifetime,
                        bindings: ha.bindings().len(),
                        mobile_node_entries: ha.config().mobile_nodes.len(),
                    }),
                    Core::Mn { .. } => None,
                },
                mn: match core {
                    Core::Mn { mn, .. } => {
                        let reg = mn.registration(now);
                        Some(api::MnStatus {
                            state: mn.state(),
                            home_addr: mn.config().home_addr,
                            home_agent: mn.config().home_agent,
                            care_of_addr: reg.map(|(c, _)| c),
                            remaining_secs: reg.map(|(_, r)| r.as_secs()),
                            udp_keepalive_secs: mn.udp_tunnel().map(|k| k.as_secs()),
                        })
                    }
                    Core::Ha { .. } => None,
                },
                interfaces: None,
                vpn: None,
            }),
            (Request::Bindings, Core::Ha { ha, .. }) => {
                let mut bindings: Vec<BindingInfo> = ha
                    .bindings()
                    .iter()
                    .map(|b| BindingInfo {
                        home_addr: b.home_addr,
                        care_of_addr: b.care_of_addr,
                        source: b.source,
                        flags: b.flags.to_string(),
                        reverse_tunnel: b.flags.contains(RequestFlags::T),
                        udp_tunnel: b.udp_tunnel,
                        spi: b.spi,
                        lifetime: b.lifetime,
                        remaining_secs: b.remaining(now.mono).as_secs(),
                    })
                    .collect();
                bindings.sort_by_key(|b| b.home_addr);
                Response::Bindings(bindings)
            }
            (Request::Bindings, Core::Mn { .. }) => Response::Error {
                message: "bindings are kept by the home agent; use `mipctl status`".into(),
            },
            (Request::Visitors, _) => Response::Error {
                message: "visitors are kept by a foreign agent (role = \"fa\")".into(),
            },
            (Request::Stats, core) => Response::Stats(api::Stats {
                fa: None,
                ha: match core {
                    Core::Ha { ha, .. } => Some(ha.stats().clone()),
                    _ => None,
                },
                mn: match core {
                    Core::Mn { mn, .. } => Some(mn.stats().clone()),
                    _ => None,
                },
                daemon: self.stats.clone(),
                dataplane: Dp::counters(self.dataplane.as_ref()),
            }),
            (Request::Dataplane, _) => Dp::info_response(self.dataplane.as_ref()),
            (Request::Register { care_of_addr }, Core::Mn { mn, .. }) => {
                let Some(coa) = care_of_addr.or(mn.registration(now).map(|(c, _)| c)) else {
                    return Response::Error {
                        message: "no care-of address: pass --care-of".into(),
                    };
                };
                mn.register(now, coa);
                Response::Ok {
                    message: format!("registering care-of address {coa}"),
                }
            }
            (Request::Deregister, Core::Mn { mn, .. }) => {
                // §4.6: returning home, the mobile node MUST broadcast a gratuitous ARP for its
                // home address with its own MAC before sending the deregistration, so nodes
                // on the home link stop sending to the home agent's MAC.
                // At home the MN sends directly: stop tunnelling now, not when the reply
                // arrives, so the deregistration itself is not reverse-tunnelled.
                if let Some(dp) = &mut self.dataplane {
                    for &(ifindex, mac) in &dp.interfaces {
                        announce(ifindex, mac, mac, mn.config().home_addr);
                    }
                    if let Err(err) = dp.dp.set_mn_tunnel(MnTunnel::default()) {
                        dp.errors += 1;
                        error!(error = %error_chain(&err), "dataplane update failed");
                    }
                }
                mn.deregister(now);
                Response::Ok {
                    message: "deregistering".into(),
                }
            }
            (Request::Register { .. } | Request::Deregister, Core::Ha { .. }) => Response::Error {
                message: "register/deregister are mobile node commands".into(),
            },
        }
    }

    /// RFC 5944 §3.6: a mobile node leaving service deregisters; wait briefly for the reply.
    async fn shutdown(&mut self, buf: &mut [u8]) {
        let now = self.now();
        let Core::Mn { mn, .. } = &mut self.core else {
            return;
        };
        if mn.state() != MnState::Registered {
            return;
        }
        mn.deregister(now);
        self.flush().await;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(until, self.socket.recv_from(buf)).await
        {
            if let SocketAddr::V4(from) = from {
                self.datagram(from, 0, &buf[..n]);
            }
            self.flush().await;
            if let Core::Mn { mn, .. } = &self.core
                && mn.state() == MnState::Idle
            {
                break;
            }
        }
    }
}

/// Sends one request to a running `mipd` and returns its response (used by `mipctl`).
pub async fn call(socket: &PathBuf, req: &Request) -> io::Result<Response> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| io::Error::other("mipd closed the connection"))?;
    serde_json::from_str(&line).map_err(io::Error::other)
}
