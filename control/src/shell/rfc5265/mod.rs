//! `mipd` as an RFC 5265 mobile node (`[mn.rfc5265]`): the tokio shell around
//! [`crate::proto::rfc5265::Node`], which holds one detector per interface, the registration
//! through the VPN and every decision. Each interface has its own registration socket bound to
//! it (so detection through interface X says nothing about Y, §3.2.1); rtnetlink link, address
//! and route events are connection status changes (§3.2.2); the interface's plaintext gate is
//! in the dataplane.
//!
//! The gate is written before anything else happens on a change: a link or address event
//! closes it at once, and an "inside" decision opens it only until T_MONITOR after the i-HA
//! registration, in the kernel's clock, so a stalled or killed `mipd` cannot leak plaintext
//! (§3.2.4). Inside, user data from the internal home address is tunnelled to the i-HA (mode
//! c); outside it goes through the VPN layer (`[mn.rfc5265.vpn]`, docs/vpn-layer.md): modes cvc
//! and mc, the TIA registered with the i-HA through the VPN, and the gate passing only
//! signalling, IKE and the VPN's ESP on the access interfaces.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use mipx_common::maps::{
    GATE_CLOSED, GATE_INSIDE, GATE_OUTSIDE, MN_ACTIVE, MN_UDP_TUNNEL, MN_VIA_VPN, MnGate, MnTunnel,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

mod vpn;

use super::driver::{self, Shell};
use crate::api::{self, DaemonStats, InterfaceStatus, Request, Response, VpnStatus};
use crate::config::{Config, MnSettings, Role, VpnSettings};
use crate::dataplane::setup::Dp;
use crate::dataplane::sync::{self, mn_tunnel};
use crate::error_chain;
use crate::net::agent_link::{AgentAction, AgentLink, Frames};
use crate::net::clock::{Clock, kernel_monotonic_ns};
use crate::net::iface::{self, default_gateway, device_mtu, usable_address};
use crate::net::route;
use crate::net::sockopt::bind_to_device;
use crate::net::xfrm;
use crate::proto::Now;
use crate::proto::detect::Gate;
use crate::proto::rfc5265::{
    Attachment, HomeRoute, IfaceConfig, Node, NodeConfig, NodeEvent, Offer, Path, VpnCommand,
    Wants, esp_path_mtu, spi_names,
};
use vpn::VpnReport;

/// One tracked interface's I/O.
struct Interface {
    name: String,
    ifindex: u32,
    socket: Arc<UdpSocket>,
    /// With `agent_discovery`: advertisements heard and solicitations sent here.
    agents: Option<AgentLink>,
}

/// The VPN layer's I/O: the task driving charon, the gate's SPIs, the VPN device.
struct VpnLink {
    settings: VpnSettings,
    commands: mpsc::Sender<VpnCommand>,
    /// SPIs in the gate's map.
    installed_spis: Vec<[u8; 4]>,
    /// The VPN device the tunnel programs are attached to.
    attached: Option<u32>,
    /// The socket bound to the TIA, for the i-HA registration through the VPN.
    tia_socket: Option<TiaSocket>,
    /// With the kernel's ESP: the SPIs of the kernel's SAs on our XFRM interface, read again
    /// at each change XFRM netlink announces.
    kernel_sas: Option<mpsc::Receiver<Vec<[u8; 4]>>>,
    /// The smallest access interface's MTU: what each ESP packet must fit.
    path_mtu: u32,
}

/// A socket bound to the TIA. With kernel-libipsec the routes charon installed for the
/// CHILD_SA take what it sends into the VPN; with the kernel's ESP it is bound to the XFRM
/// interface too, since charon installs no routes for an SA with an if_id.
struct TiaSocket {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for TiaSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What the node's sources produce.
enum Input {
    /// A datagram on a registration socket.
    Datagram(Path, SocketAddrV4, Vec<u8>),
    Vpn(VpnReport),
    /// A link-layer frame from the agent-discovery link with this ifindex.
    AgentFrame(u32, Vec<u8>),
    /// A link, address or route changed (rtnetlink).
    Netlink,
    /// The kernel's ESP SAs on the VPN's XFRM interface, after a change.
    KernelSas(Vec<[u8; 4]>),
}

/// A route mipd installs for a home address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteTarget {
    /// Into the VPN device, with the tunnel MTU (RFC 2003 §5.1).
    Vpn { ifindex: u32, mtu: u32 },
    /// To a foreign agent on the link (RFC 5944 §4.2.1, RFC 3024 §5.1).
    Agent { ifindex: u32, agent: Ipv4Addr },
}

struct Rfc5265Shell {
    core: Node,
    clock: Clock,
    handle: rtnetlink::Handle,
    datagrams: mpsc::Receiver<(Path, SocketAddrV4, Vec<u8>)>,
    /// Where the TIA socket's reader hands its datagrams (the interfaces' channel).
    datagrams_tx: mpsc::Sender<(Path, SocketAddrV4, Vec<u8>)>,
    vpn_reports: Option<mpsc::Receiver<VpnReport>>,
    agent_frames: Option<Frames>,
    netlink: mpsc::Receiver<()>,
    ifaces: Vec<Interface>,
    dataplane: Option<Dp>,
    ha_port: u16,
    stats: DaemonStats,
    vpn: Option<VpnLink>,
    /// The tunnel last written to the dataplane.
    tunnel: MnTunnel,
    /// The x-HA's tunnel last written to the dataplane.
    outer_tunnel: MnTunnel,
    /// Where the internal home address is routed by mipd's table, and the external one (mode
    /// fvc).
    internal_route: Option<RouteTarget>,
    external_route: Option<RouteTarget>,
}

/// Follows the kernel's ESP SAs on the XFRM interface `if_id`: their SPIs now and after every
/// change XFRM netlink announces. Joined before the first read, so no change in between is
/// missed.
fn watch_kernel_sas(if_id: u32) -> io::Result<mpsc::Receiver<Vec<[u8; 4]>>> {
    let watch = xfrm::SaWatch::open()?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match xfrm::sas() {
                Ok(sas) => {
                    if tx.send(xfrm::esp_spis_of(&sas, if_id)).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "cannot read the kernel's SA table"),
            }
            if let Err(e) = watch.changed().await {
                error!(error = %e, "XFRM netlink's notifications stopped: the gate follows charon's events only");
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs an RFC 5265 mobile node until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config, settings: MnSettings) -> io::Result<()> {
    let Some(rfc) = settings.rfc5265 else {
        return Err(io::Error::other("no [mn.rfc5265] table"));
    };
    let mut dataplane = driver::load_dataplane(
        config.dataplane.as_ref(),
        Role::Mn,
        "nothing enforces the plaintext gate",
    )?;
    let (handle, netlink) = iface::watch()?;

    let (datagrams_tx, datagrams) = mpsc::channel::<(Path, SocketAddrV4, Vec<u8>)>(256);
    let (frames_tx, frames_rx) = mpsc::channel::<(u32, Vec<u8>)>(256);
    let agent_frames = rfc.agent_discovery.then_some(frames_rx);
    let clock = Clock::start();
    let mut ifaces = Vec::new();
    let mut tracked = Vec::new();
    for (idx, name) in rfc.interfaces.iter().enumerate() {
        let ifindex = crate::dataplane::ifindex(name)
            .map_err(|e| io::Error::other(format!("mn.rfc5265.interfaces: {name}: {e}")))?;
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
        bind_to_device(&socket, name)
            .map_err(|e| io::Error::other(format!("binding the socket to {name}: {e}")))?;
        // Detection probes never go through the VPN (draft §3.4), whatever IPsec policies
        // the kernel holds.
        if rfc.vpn.is_some()
            && let Err(e) = crate::net::xfrm::bypass(&socket)
        {
            warn!(interface = %name, error = %e, "cannot exempt the detection socket from IPsec policies");
        }
        let socket = Arc::new(socket);
        spawn_reader(Arc::clone(&socket), Path::Iface(idx), datagrams_tx.clone());
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
        let local = socket.local_addr()?;
        info!(interface = %name, ifindex, %local, "tracking interface (RFC 5265)");
        tracked.push(IfaceConfig {
            name: name.clone(),
            registration_port: local.port(),
            agent_discovery: rfc.agent_discovery,
        });
        let agents = if rfc.agent_discovery {
            Some(
                AgentLink::open(
                    name,
                    settings.core.home_agent,
                    clock.now(),
                    frames_tx.clone(),
                )
                .map_err(|e| {
                    io::Error::other(format!("mn.rfc5265.agent_discovery: {name}: {e}"))
                })?,
            )
        } else {
            None
        };
        ifaces.push(Interface {
            name: name.clone(),
            ifindex,
            socket,
            agents,
        });
    }
    // Gates of interfaces an earlier configuration tracked and this one does not.
    if let Some(dp) = &mut dataplane {
        let ours: Vec<u32> = ifaces.iter().map(|i| i.ifindex).collect();
        for (ifindex, _) in dp.dp.mn_gates().unwrap_or_default() {
            if !ours.contains(&ifindex) && dp.dp.remove_mn_gate(ifindex).is_ok() {
                info!(
                    ifindex,
                    "removed the plaintext gate of an interface no longer tracked"
                );
            }
        }
    }
    // The VPN layer (mode mc; cvc's comes with the x-HA layer).
    let (vpn, vpn_reports) = match &rfc.vpn {
        Some(v) => {
            // RFC 5265 §4.2: the CHILD_SA need only carry Mobile IP to and from the i-HA.
            let remote_ts = vec![format!("{}/32", settings.core.home_agent)];
            // Mode cvc: IKE and IPsec from the x-HoA, "so the SA never sees care-of address
            // changes" (§2.3); mode mc: from the care-of address, moved by MOBIKE.
            let local = rfc.detect.external.as_ref().map(|x| x.home_addr);
            // The ESP packets must fit every access interface they may leave by.
            let path_mtu = ifaces
                .iter()
                .map(|i| device_mtu(&i.name))
                .min()
                .unwrap_or(1500);
            let (commands, reports) = vpn::spawn(
                v.clone(),
                remote_ts,
                local,
                esp_path_mtu(rfc.mode, path_mtu),
            );
            let link = VpnLink {
                settings: v.clone(),
                commands,
                installed_spis: Vec::new(),
                attached: None,
                tia_socket: None,
                kernel_sas: None,
                path_mtu,
            };
            (Some(link), Some(reports))
        }
        None => (None, None),
    };
    if let (Some(dp), Some(_)) = (&mut dataplane, &vpn) {
        // SPIs of an earlier run's SAs: the state is read again from charon.
        for spi in dp.dp.vpn_spis().unwrap_or_default() {
            let _ = dp.dp.remove_vpn_spi(spi);
        }
    }
    let core = Node::new(NodeConfig {
        detect: rfc.detect.clone(),
        mode: rfc.mode,
        vpn: rfc.vpn.as_ref().map(|v| (v.gateway, v.inside)),
        ha_port: settings.ha_port,
        interfaces: tracked,
    });
    let mut shell = Rfc5265Shell {
        core,
        clock,
        handle: handle.clone(),
        datagrams,
        datagrams_tx,
        vpn_reports,
        agent_frames,
        netlink,
        ifaces,
        dataplane,
        ha_port: settings.ha_port,
        stats: DaemonStats::default(),
        vpn,
        // Unknown: the first sync writes whatever is wanted.
        tunnel: MnTunnel {
            flags: u32::MAX,
            ..MnTunnel::default()
        },
        outer_tunnel: MnTunnel {
            flags: u32::MAX,
            ..MnTunnel::default()
        },
        internal_route: None,
        external_route: None,
    };
    // A previous run's routing of the home address into the VPN.
    for table in [route::INTERNAL_HOME, route::EXTERNAL_HOME] {
        if let Err(e) = route::unroute(&handle, table).await {
            warn!(error = %e, "cannot clear the home addresses' routing");
        }
    }
    shell.refresh().await;
    shell.send_and_apply().await;
    shell.sync().await;
    driver::run(&mut shell, &config.api_socket).await
}

/// Reads `socket` into the node's datagram channel, tagged with `path`.
fn spawn_reader(
    socket: Arc<UdpSocket>,
    path: Path,
    tx: mpsc::Sender<(Path, SocketAddrV4, Vec<u8>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if let SocketAddr::V4(from) = from
                && tx.send((path, from, buf[..n].to_vec())).await.is_err()
            {
                break;
            }
        }
    })
}

/// Installs `route` for `home` in `table` (or removes the table's routing); whether it worked.
async fn route_home(
    handle: &rtnetlink::Handle,
    table: route::Table,
    home: Ipv4Addr,
    route: Option<RouteTarget>,
) -> bool {
    let result = match route {
        Some(RouteTarget::Vpn { ifindex, mtu }) => {
            route::route_home_via(handle, home, ifindex, mtu).await
        }
        Some(RouteTarget::Agent { ifindex, agent }) => {
            route::route_home_via_agent(handle, table, home, ifindex, agent).await
        }
        None => route::unroute(handle, table).await,
    };
    match result {
        Ok(()) => {
            info!(%home, ?route, "home address routing");
            true
        }
        Err(e) => {
            error!(%home, error = %e, "cannot route the home address");
            false
        }
    }
}

impl Shell for Rfc5265Shell {
    type Input = Input;

    fn clock(&self) -> Clock {
        self.clock
    }

    fn stats(&mut self) -> &mut DaemonStats {
        &mut self.stats
    }

    async fn input(&mut self) -> Input {
        tokio::select! {
            Some((path, from, bytes)) = self.datagrams.recv() => Input::Datagram(path, from, bytes),
            Some(report) = driver::recv(self.vpn_reports.as_mut()) => Input::Vpn(report),
            Some((ifindex, frame)) = driver::recv(self.agent_frames.as_mut()) => {
                Input::AgentFrame(ifindex, frame)
            }
            Some(()) = self.netlink.recv() => Input::Netlink,
            Some(spis) = driver::recv(self.vpn.as_mut().and_then(|v| v.kernel_sas.as_mut())) => {
                Input::KernelSas(spis)
            }
        }
    }

    async fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Datagram(path, from, bytes) => {
                self.stats.datagrams_received += 1;
                self.core.handle_datagram(now, path, from, &bytes);
            }
            Input::Vpn(report) => self.vpn_report(report),
            Input::AgentFrame(ifindex, frame) => {
                if let Some(a) = self
                    .ifaces
                    .iter_mut()
                    .find(|i| i.ifindex == ifindex)
                    .and_then(|i| i.agents.as_mut())
                {
                    a.frame(now, &frame);
                }
            }
            Input::Netlink => {
                // Coalesce a burst (an address change brings routes with it), then look.
                while let Ok(Some(())) =
                    tokio::time::timeout(Duration::from_millis(5), self.netlink.recv()).await
                {
                }
                self.recheck_routes().await;
                self.refresh().await;
            }
            Input::KernelSas(spis) => self.core.vpn_kernel_sas(spis),
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let discovery = self
            .ifaces
            .iter()
            .filter_map(|i| i.agents.as_ref()?.discovery.poll_timeout());
        self.core.poll_timeout().into_iter().chain(discovery).min()
    }

    fn handle_timeout(&mut self, now: Now) {
        self.core.handle_timeout(now);
        for i in &mut self.ifaces {
            if let Some(a) = &mut i.agents {
                a.discovery.handle_timeout(now);
            }
        }
    }

    fn api(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(api::Status {
                interfaces: Some(self.status()),
                vpn: self.vpn_status(),
                ..driver::status("mn", self.clock)
            }),
            Request::Stats => Response::Stats(driver::stats(&self.stats, self.dataplane.as_ref())),
            Request::Dataplane => driver::dataplane_info(self.dataplane.as_ref()),
            Request::Register { .. } => {
                self.core.redetect(self.clock.now());
                Response::Ok {
                    message: "detecting again on every interface".into(),
                }
            }
            Request::Deregister | Request::Bindings | Request::Visitors => Response::Error {
                message: "not available for an RFC 5265 mobile node; see `mipctl status`".into(),
            },
        }
    }

    async fn flush(&mut self) {
        self.send_and_apply().await;
        self.sync().await;
        self.send_and_apply().await;
    }

    async fn shutdown(&mut self) {
        if let Some(v) = &self.vpn
            && self.core.vpn_on_xfrm()
            && let Err(e) =
                xfrm::remove_inbound_to(self.core.internal().home_addr, v.settings.if_id)
        {
            warn!(error = %e, "cannot remove the home address's inbound policy");
        }
        info!("the gates stay as they are and close on their own clocks");
    }
}

impl Rfc5265Shell {
    /// Hands what agent discovery heard to the core, and sends the solicitations discovery
    /// queued.
    async fn agent_actions(&mut self) {
        let now = self.clock.now();
        for (index, i) in self.ifaces.iter_mut().enumerate() {
            let Some(a) = &mut i.agents else { continue };
            for action in a.actions() {
                match action {
                    AgentAction::RegisterVia {
                        via,
                        care_of_addr,
                        required,
                        ..
                    } => self.core.set_offer(
                        index,
                        Some(Offer {
                            via,
                            care_of_addr,
                            required,
                        }),
                    ),
                    AgentAction::Lost => self.core.set_offer(index, None),
                    // On the i-HA's own link detection finds us inside anyway.
                    AgentAction::AtHome => {}
                }
            }
            let src = self
                .core
                .seen(index)
                .map_or(Ipv4Addr::UNSPECIFIED, |s| s.care_of_addr);
            a.send_solicitations(src).await;
        }
        self.core.update_attachments(now);
    }

    /// Applies the core's events, then sends what it queued.
    async fn send_and_apply(&mut self) {
        self.agent_actions().await;
        self.apply_events().await;
        while let Some(t) = self.core.poll_transmit() {
            let result = match t.path {
                Path::Vpn => match self.vpn.as_ref().and_then(|v| v.tia_socket.as_ref()) {
                    Some(s) => s.socket.send_to(&t.transmit.payload, t.transmit.dst).await,
                    None => continue,
                }
                .map(drop),
                Path::Iface(index) => {
                    let iface = &mut self.ifaces[index];
                    match (t.via, &mut iface.agents) {
                        // Through a foreign agent: on the link, to its link-layer address.
                        (Some(via), Some(a)) => {
                            let port = iface.socket.local_addr().map_or(0, |l| l.port());
                            a.send_registration(&t.transmit, via, port).await
                        }
                        _ => iface
                            .socket
                            .send_to(&t.transmit.payload, t.transmit.dst)
                            .await
                            .map(drop),
                    }
                }
            };
            match result {
                Ok(()) => self.stats.datagrams_sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    debug!(path = ?t.path, dst = %t.transmit.dst, error = %e, "send failed");
                }
            }
        }
    }

    async fn apply_events(&mut self) {
        let now = self.clock.now();
        while let Some(e) = self.core.poll_event() {
            match e {
                NodeEvent::Gate { iface, gate } => {
                    let value = self.gate_value(gate, now);
                    let i = &self.ifaces[iface];
                    if let Some(dp) = &mut self.dataplane
                        && let Err(err) = dp.dp.set_mn_gate(i.ifindex, value)
                    {
                        dp.errors += 1;
                        error!(interface = %i.name, error = %error_chain(&err), "cannot write the plaintext gate");
                    }
                    debug!(interface = %i.name, ?gate, "gate");
                }
                NodeEvent::Location {
                    iface,
                    location,
                    reason,
                } => {
                    info!(interface = %self.ifaces[iface].name, ?location, ?reason, "location");
                }
                // Before the new registrations go out: the old attachment's tunnel must not
                // encapsulate them (a request through the agent leaves as it is).
                NodeEvent::Reattached => {
                    let wants = self.core.wants(now);
                    self.sync_dataplane_tunnels(&wants);
                }
                NodeEvent::Vpn(command) => {
                    if let Some(v) = &self.vpn {
                        let _ = v.commands.send(command).await;
                    }
                }
                NodeEvent::TiaSocket(tia) => self.open_tia_socket(tia).await,
            }
        }
    }

    async fn open_tia_socket(&mut self, tia: Option<Ipv4Addr>) {
        let xfrm = self.core.vpn_on_xfrm();
        let Some(v) = &mut self.vpn else { return };
        v.tia_socket = None;
        // With the kernel's ESP, the TIA is the only address of our XFRM interface while the
        // VPN gives it to us: the registration socket is bound there, and the interface has no
        // route without an address. Charon is told to install its virtual IP there too
        // (`install_virtual_ip_on`, docs/vpn-layer.md): never on an access interface, whose
        // addresses MOBIKE would announce and a move takes away.
        if xfrm {
            let installed = match crate::dataplane::ifindex(&v.settings.device) {
                Ok(ifindex) => iface::set_only_address(&self.handle, ifindex, tia)
                    .await
                    .map_err(|e| error_chain(&e)),
                Err(e) => Err(error_chain(&e)),
            };
            if let Err(e) = installed {
                warn!(tia = ?tia, device = %v.settings.device, error = %e, "cannot put the TIA on the XFRM interface");
            }
        }
        let Some(tia) = tia else { return };
        let bound = UdpSocket::bind(SocketAddrV4::new(tia, 0))
            .await
            .and_then(|s| {
                if xfrm {
                    bind_to_device(&s, &v.settings.device)?;
                }
                Ok(s)
            });
        match bound {
            Ok(socket) => {
                let socket = Arc::new(socket);
                let reader =
                    spawn_reader(Arc::clone(&socket), Path::Vpn, self.datagrams_tx.clone());
                v.tia_socket = Some(TiaSocket { socket, reader });
            }
            Err(e) => {
                warn!(%tia, error = %e, "cannot bind to the tunnel inner address");
                self.core.tia_unavailable(tia);
            }
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
        // IKE with the VPN gateway and ESP with the VPN's SPIs pass in every state: the VPN is
        // how user data leaves outside, and the MOBIKE update goes out while detection runs
        // (draft-ietf-mip4-mobike-connectivity §3.4); so does mode cvc's x-HA tunnel.
        let (gateway, outer) = self.core.gate_peers();
        MnGate {
            state,
            mip_port: self.ha_port.to_be_bytes(),
            open_until_ns,
            vpn_gateway: gateway.map_or([0; 4], |g| g.octets()),
            outer_home_agent: outer.map_or([0; 4], |x| x.octets()),
            ..MnGate::default()
        }
    }

    /// A report from the VPN task.
    fn vpn_report(&mut self, report: VpnReport) {
        let now = self.clock.now();
        match report {
            VpnReport::Ready { libipsec } => {
                if let Some(v) = &mut self.vpn {
                    if !libipsec && v.kernel_sas.is_none() {
                        match watch_kernel_sas(v.settings.if_id) {
                            Ok(rx) => v.kernel_sas = Some(rx),
                            Err(e) => {
                                error!(error = %e, "cannot follow the kernel's SAs: the gate follows charon's events only")
                            }
                        }
                    }
                    if !libipsec {
                        let home = self.core.internal().home_addr;
                        match xfrm::allow_inbound_to(home, v.settings.if_id) {
                            Ok(()) => {
                                info!(%home, if_id = v.settings.if_id, "inbound policy: the home address accepts what the VPN decrypted")
                            }
                            Err(e) => {
                                error!(%home, error = %e, "cannot install the home address's inbound policy: what the VPN decrypts for it will be dropped")
                            }
                        }
                    }
                }
                self.core.vpn_ready(libipsec);
            }
            VpnReport::Failed { error, retry_in } => self
                .core
                .vpn_failed(format!("{error} (retry in {} ms)", retry_in.as_millis())),
            VpnReport::State(snapshot) => self.core.vpn_state(now, snapshot),
        }
    }

    /// Brings the VPN, the gate's SPIs, the registration through the VPN, the tunnels and the
    /// home addresses' routing in line with the core.
    async fn sync(&mut self) {
        let now = self.clock.now();
        self.core.step(now);
        self.apply_events().await;
        if let Some(v) = &mut self.vpn
            && let Some(snapshot) = self.core.vpn_snapshot()
        {
            // The gate passes ESP only with the SAs' SPIs (both directions).
            if let Some(dp) = &mut self.dataplane {
                let wanted = self.core.gate_spis();
                let failed = sync::sync_spis(&mut dp.dp, &mut v.installed_spis, &wanted);
                if failed > 0 {
                    dp.errors += failed;
                    error!(failed, "cannot add a VPN SPI to the gate");
                }
            }
            // The tunnel programs on the VPN device, once it exists.
            if snapshot.established
                && let Ok(ifindex) = crate::dataplane::ifindex(&v.settings.device)
                && v.attached != Some(ifindex)
                && let Some(dp) = &mut self.dataplane
            {
                use crate::dataplane::programs::{MN_TC_VPN_EGRESS, MN_TC_VPN_INGRESS};
                let dev = v.settings.device.clone();
                match dp
                    .dp
                    .attach_tc_egress(MN_TC_VPN_EGRESS, &dev)
                    .map(drop)
                    .and_then(|()| dp.dp.attach_tc_ingress(MN_TC_VPN_INGRESS, &dev).map(drop))
                {
                    Ok(()) => {
                        info!(device = %dev, ifindex, "tunnel programs attached to the VPN device");
                        v.attached = Some(ifindex);
                    }
                    Err(e) => {
                        dp.errors += 1;
                        error!(device = %dev, error = %error_chain(&e), "cannot attach to the VPN device");
                    }
                }
            }
        }
        self.sync_xfrm_mtu().await;
        let wants = self.core.wants(now);
        self.sync_dataplane_tunnels(&wants);
        self.sync_routes(&wants).await;
    }

    /// With the kernel's ESP: the XFRM interface, made for the worst case, takes the MTU of the
    /// CHILD_SA's suite once known (and again when MOBIKE adds or drops NAT-T's UDP); the home
    /// address's route into it follows at the same sync.
    async fn sync_xfrm_mtu(&mut self) {
        let Some(v) = &self.vpn else { return };
        if !self.core.vpn_on_xfrm()
            || !self.core.vpn_snapshot().is_some_and(|s| s.established)
            || crate::dataplane::ifindex(&v.settings.device).is_err()
        {
            return;
        }
        let mtu = self.core.vpn_interface_mtu(v.path_mtu);
        let dev = &v.settings.device;
        if device_mtu(dev) == mtu {
            return;
        }
        match xfrm::ensure_interface(&self.handle, dev, 0, v.settings.if_id, mtu).await {
            Ok(_) => {
                info!(device = %dev, mtu, "XFRM interface MTU from the ESP suite (RFC 4303 §2)")
            }
            Err(e) => warn!(device = %dev, mtu, error = %e, "cannot set the XFRM interface's MTU"),
        }
    }

    /// Writes the tunnels the core wants into the dataplane.
    fn sync_dataplane_tunnels(&mut self, wants: &Wants) {
        let outer = mn_tunnel(wants.outer_tunnel);
        if outer != self.outer_tunnel {
            if let Some(dp) = &mut self.dataplane
                && let Err(err) = dp.dp.set_mn_outer_tunnel(outer)
            {
                dp.errors += 1;
                error!(error = %error_chain(&err), "cannot update the x-HA tunnel");
            } else {
                info!(
                    care_of = %Ipv4Addr::from(outer.care_of_addr),
                    udp = outer.flags & MN_UDP_TUNNEL != 0,
                    active = outer.flags & MN_ACTIVE != 0,
                    "x-HA tunnel (mode cvc)"
                );
                self.outer_tunnel = outer;
            }
        }
        let tunnel = mn_tunnel(wants.tunnel);
        if tunnel != self.tunnel {
            if let Some(dp) = &mut self.dataplane
                && let Err(err) = dp.dp.set_mn_tunnel(tunnel)
            {
                dp.errors += 1;
                error!(error = %error_chain(&err), "cannot update the tunnel");
            } else {
                info!(
                    care_of = %Ipv4Addr::from(tunnel.care_of_addr),
                    via_vpn = tunnel.flags & MN_VIA_VPN != 0,
                    active = tunnel.flags & MN_ACTIVE != 0,
                    "tunnel"
                );
                self.tunnel = tunnel;
            }
        }
    }

    /// The core's route for a home address, with the interface's or the VPN device's index.
    fn route_target(&self, route: Option<HomeRoute>) -> Option<RouteTarget> {
        match route? {
            HomeRoute::Vpn => {
                let v = self.vpn.as_ref()?;
                let ifindex = crate::dataplane::ifindex(&v.settings.device).ok()?;
                Some(RouteTarget::Vpn {
                    ifindex,
                    mtu: device_mtu(&v.settings.device).saturating_sub(20),
                })
            }
            HomeRoute::Agent { iface, agent } => Some(RouteTarget::Agent {
                ifindex: self.ifaces[iface].ifindex,
                agent,
            }),
        }
    }

    /// Forgets the home addresses' routes the kernel removed behind our back (see
    /// [`route::table_has_routes`]), so the next sync installs them again.
    async fn recheck_routes(&mut self) {
        for (table, installed) in [
            (route::INTERNAL_HOME, &mut self.internal_route),
            (route::EXTERNAL_HOME, &mut self.external_route),
        ] {
            if installed.is_some()
                && let Ok(false) = route::table_has_routes(&self.handle, table).await
            {
                warn!(
                    table = table.id,
                    "the kernel removed a home address's route; installing it again"
                );
                *installed = None;
            }
        }
    }

    /// The internal home address is routed into the VPN exactly while its tunnel runs there,
    /// and to the foreign agent while inside through one (mode f); the external one to the
    /// foreign agent while outside through one (mode fvc).
    async fn sync_routes(&mut self, wants: &Wants) {
        let internal = self.route_target(wants.internal_route);
        let home = self.core.internal().home_addr;
        if internal != self.internal_route
            && route_home(&self.handle, route::INTERNAL_HOME, home, internal).await
        {
            self.internal_route = internal;
        }
        let external = self.route_target(wants.external_route);
        if let Some(x) = self.core.external().map(|x| x.home_addr)
            && external != self.external_route
            && route_home(&self.handle, route::EXTERNAL_HOME, x, external).await
        {
            self.external_route = external;
        }
    }

    fn status(&self) -> Vec<InterfaceStatus> {
        let now = self.clock.now();
        let via_vpn = self.tunnel.flags & MN_VIA_VPN != 0;
        self.ifaces
            .iter()
            .enumerate()
            .map(|(index, i)| {
                let s = self.core.status(now, index);
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
                    mode: self.core.access_mode(now, index, via_vpn).into(),
                }
            })
            .collect()
    }

    fn vpn_status(&self) -> Option<VpnStatus> {
        let v = self.core.vpn_status()?;
        let outer = self.outer_tunnel;
        Some(VpnStatus {
            state: v.state.into(),
            gateway: v.gateway,
            local: v.snapshot.local,
            tia: v.snapshot.tia,
            ipsec: v
                .libipsec
                .map(|l| if l { "kernel-libipsec" } else { "xfrm" }.into()),
            internal_registered: v.internal_registered,
            external_care_of: (outer.flags & MN_ACTIVE != 0 && outer.flags != u32::MAX)
                .then(|| Ipv4Addr::from(outer.care_of_addr)),
            external_udp: outer.flags != u32::MAX && outer.flags & MN_UDP_TUNNEL != 0,
            spis: spi_names(&v.snapshot.spis),
            kernel_spis: v.kernel_spis.map(spi_names),
            sa_mismatch: spi_names(v.mismatch),
            last_error: v.last_error.map(str::to_owned),
        })
    }

    /// Looks at every interface again (a netlink event arrived): a change of carrier or of its
    /// IPv4 address is a connection status change (§3.2.2).
    async fn refresh(&mut self) {
        let now = self.clock.now();
        let toward = self.core.internal().home_agent;
        for (index, i) in self.ifaces.iter_mut().enumerate() {
            let seen = match usable_address(&self.handle, i.ifindex, &i.name, toward).await {
                Some(care_of_addr) => Some(Attachment {
                    care_of_addr,
                    gateway: default_gateway(&self.handle, i.ifindex).await,
                }),
                None => None,
            };
            if self.core.set_attachment(now, index, seen) {
                // A new link: the agents heard on the old one say nothing (RFC 5944 §2.4),
                // and solicitations go out at the fast rate again.
                if let Some(a) = &mut i.agents {
                    a.discovery.link_changed(now);
                }
            }
        }
    }
}
