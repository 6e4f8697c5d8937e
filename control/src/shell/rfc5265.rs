//! `mipd` as an RFC 5265 mobile node (`[mn.rfc5265]`): one [`Detector`] per interface, each
//! with its own registration socket bound to the interface (so detection through interface X
//! says nothing about Y, §3.2.1), rtnetlink link and address events as connection status
//! changes (§3.2.2), and the interface's plaintext gate in the dataplane.
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

use futures_util::StreamExt as _;
use mipx_common::maps::{
    GATE_CLOSED, GATE_INSIDE, GATE_OUTSIDE, MN_ACTIVE, MN_UDP_TUNNEL, MN_VIA_VPN, MnGate, MnTunnel,
};
use rtnetlink::sys::AsyncSocket as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::driver::{self, Shell};
use super::vpn::{self, VpnCommand, VpnReport, VpnSnapshot};
use crate::api::{self, DaemonStats, InterfaceStatus, Request, Response, VpnStatus};
use crate::config::{Config, InsideVpn, MnSettings, OutsideMode, Role, VpnSettings};
use crate::dataplane::setup::Dp;
use crate::dataplane::sync::{self, TunnelSpec, mn_tunnel};
use crate::error_chain;
use crate::net::agent_link::{AgentAction, AgentLink, Frames};
use crate::net::clock::{Clock, kernel_monotonic_ns};
use crate::net::iface::{default_gateway, device_mtu, usable_address};
use crate::net::route;
use crate::net::sockopt::bind_to_device;
use crate::proto::Now;
use crate::proto::detect::{DetectEvent, DetectStatus, Detector, Gate, Location};
use crate::proto::mn::{MnConfig, MnEvent, MobileNode, ViaAgent};

/// The receive channel's interface index for the socket of the registration through the VPN.
const VPN_SOCKET: usize = usize::MAX;

/// One tracked interface.
struct Interface {
    name: String,
    ifindex: u32,
    detector: Detector,
    socket: Arc<UdpSocket>,
    /// What the last look at the interface found: if usable (up, with carrier, routed), its
    /// care-of address and default gateway.
    seen: Option<Attachment>,
    /// With `agent_discovery`: advertisements heard and solicitations sent here.
    agents: Option<AgentLink>,
    /// The foreign agent heard here: (agent, its care-of address, R set).
    offer: Option<(ViaAgent, Ipv4Addr, bool)>,
}

/// Where an interface is attached, as far as the kernel says: a change of either is a
/// connection status change (RFC 5265 §3.2.2), e.g. a DHCP renewal onto another router with the
/// same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attachment {
    care_of_addr: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
}

/// The VPN layer's state in the daemon.
struct VpnLayer {
    settings: VpnSettings,
    commands: mpsc::Sender<VpnCommand>,
    want: VpnCommand,
    libipsec: Option<bool>,
    snapshot: VpnSnapshot,
    /// SPIs in the gate's map.
    installed_spis: Vec<[u8; 4]>,
    /// The i-HA registration from the TIA, through the VPN.
    engine: Option<TiaEngine>,
    /// A request went out through the VPN since the node was last inside.
    tia_sent: bool,
    /// The VPN device the tunnel programs are attached to.
    attached: Option<u32>,
    last_error: Option<String>,
}

/// RFC 5265 §2.3 / draft §3.3: the TIA registered with the i-HA as a co-located care-of
/// address, through the VPN.
struct TiaEngine {
    tia: Ipv4Addr,
    mn: MobileNode,
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
    registered: bool,
}

impl Drop for TiaEngine {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl TiaEngine {
    /// Registers `tia` with the i-HA from a socket bound to it: the routes charon installed
    /// for the CHILD_SA take it into the VPN.
    async fn start(
        tia: Ipv4Addr,
        config: MnConfig,
        now: Now,
        rx_tx: mpsc::Sender<(usize, SocketAddrV4, Vec<u8>)>,
    ) -> io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(SocketAddrV4::new(tia, 0)).await?);
        let reader_socket = Arc::clone(&socket);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = reader_socket.recv_from(&mut buf).await {
                if let SocketAddr::V4(from) = from
                    && rx_tx
                        .send((VPN_SOCKET, from, buf[..n].to_vec()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut mn = MobileNode::new(config);
        mn.register(now, tia);
        info!(%tia, "registering the tunnel inner address with the i-HA through the VPN");
        Ok(TiaEngine {
            tia,
            mn,
            socket,
            reader,
            registered: false,
        })
    }
}

/// Installs `route` for `home` in `table` (or removes the table's routing); whether it worked.
async fn route_home(
    handle: &rtnetlink::Handle,
    table: route::Table,
    home: Ipv4Addr,
    route: Option<HomeRoute>,
) -> bool {
    let result = match route {
        Some(HomeRoute::Vpn { ifindex, mtu }) => {
            route::route_home_via(handle, home, ifindex, mtu).await
        }
        Some(HomeRoute::Agent { ifindex, agent }) => {
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

/// What the node's sources produce.
enum Input {
    /// A datagram on interface `usize`'s registration socket, or on the socket of the
    /// registration through the VPN ([`VPN_SOCKET`]).
    Datagram(usize, SocketAddrV4, Vec<u8>),
    Vpn(VpnReport),
    /// A link-layer frame from the agent-discovery link with this ifindex.
    AgentFrame(u32, Vec<u8>),
    /// A link, address or route changed (rtnetlink).
    Netlink,
}

struct Node {
    clock: Clock,
    handle: rtnetlink::Handle,
    datagrams: mpsc::Receiver<(usize, SocketAddrV4, Vec<u8>)>,
    vpn_reports: Option<mpsc::Receiver<VpnReport>>,
    agent_frames: Option<Frames>,
    netlink: mpsc::Receiver<()>,
    ifaces: Vec<Interface>,
    dataplane: Option<Dp>,
    ha_port: u16,
    stats: DaemonStats,
    mode: OutsideMode,
    /// The `[mn]` registration (i-HA), for the registration through the VPN.
    internal: MnConfig,
    vpn: Option<VpnLayer>,
    /// Where the TIA engine's datagrams go (the interfaces' receive channel).
    rx_tx: mpsc::Sender<(usize, SocketAddrV4, Vec<u8>)>,
    /// The tunnel last written to the dataplane.
    tunnel: MnTunnel,
    /// Mode cvc: the x-HA registration (the VPN rides in its tunnel).
    external: Option<MnConfig>,
    /// The x-HA's tunnel last written to the dataplane.
    outer_tunnel: MnTunnel,
    /// Where the internal home address is routed by mipd's table, and the external one (mode
    /// fvc).
    internal_route: Option<HomeRoute>,
    external_route: Option<HomeRoute>,
}

/// A route mipd installs for a home address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HomeRoute {
    /// Into the VPN device, with the tunnel MTU (RFC 2003 §5.1).
    Vpn { ifindex: u32, mtu: u32 },
    /// To a foreign agent on the link (RFC 5944 §4.2.1, RFC 3024 §5.1).
    Agent { ifindex: u32, agent: Ipv4Addr },
}

impl Node {
    fn now(&self) -> Now {
        self.clock.now()
    }

    /// What agent discovery found on each interface: RFC 5944 §2.4.1, a foreign agent that
    /// sets R is used even with a co-located address, and one is used where there is no
    /// co-located address; otherwise co-located (c, cvc). Each change of attachment starts
    /// detection again (§3.2.2). Then the solicitations discovery queued go out.
    async fn agent_actions(&mut self) {
        let now = self.now();
        let mut attached = false;
        for i in &mut self.ifaces {
            let Some(a) = &mut i.agents else { continue };
            for action in a.actions() {
                match action {
                    AgentAction::RegisterVia {
                        via,
                        care_of_addr,
                        required,
                        ..
                    } => i.offer = Some((via, care_of_addr, required)),
                    AgentAction::Lost => i.offer = None,
                    // On the i-HA's own link detection finds us inside anyway.
                    AgentAction::AtHome => {}
                }
            }
            a.send_solicitations(i.seen.map_or(Ipv4Addr::UNSPECIFIED, |s| s.care_of_addr))
                .await;
            let wanted = match i.offer {
                Some((via, coa, required)) if required || i.seen.is_none() => {
                    Some((coa, Some(via)))
                }
                _ => i.seen.map(|a| (a.care_of_addr, None)),
            };
            let current = i
                .detector
                .status(now)
                .care_of_addr
                .map(|c| (c, i.detector.agent()));
            if wanted != current {
                info!(interface = %i.name, ?wanted, "attachment (co-located or through a foreign agent)");
                i.detector
                    .attach(now, wanted.map(|w| w.0), wanted.and_then(|w| w.1));
                attached = true;
            }
        }
        if attached {
            // Before the new registrations go out: the old attachment's tunnel must not
            // encapsulate them (a request through the agent leaves as it is).
            self.sync_dataplane_tunnels();
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
            // IKE with the VPN gateway and ESP with the VPN's SPIs pass in every state: the
            // VPN is how user data leaves outside, and the MOBIKE update goes out while
            // detection runs (draft-ietf-mip4-mobike-connectivity §3.4).
            vpn_gateway: self
                .vpn
                .as_ref()
                .map_or([0; 4], |v| v.settings.gateway.octets()),
            outer_home_agent: match (&self.vpn, &self.external) {
                (Some(_), Some(x)) => x.home_agent.octets(),
                _ => [0; 4],
            },
            ..MnGate::default()
        }
    }

    /// Sends what every detector queued and applies their events.
    async fn send_and_apply(&mut self) {
        self.agent_actions().await;
        let now = self.now();
        // The registration through the VPN first, so that a request it sends now is known
        // when a detector's event below says inside; and none at all once inside (the
        // engine goes at the next sync).
        let inside = self
            .ifaces
            .iter()
            .any(|i| i.detector.status(now).location == Location::Inside);
        if let Some(v) = self.vpn.as_mut().filter(|_| !inside)
            && let Some(engine) = v.engine.as_mut()
        {
            while let Some(mut t) = engine.mn.poll_transmit() {
                t.dst.set_port(self.ha_port);
                v.tia_sent = true;
                match engine.socket.send_to(&t.payload, t.dst).await {
                    Ok(_) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        debug!(dst = %t.dst, error = %e, "send through the VPN failed");
                    }
                }
            }
            while let Some(e) = engine.mn.poll_event() {
                match e {
                    MnEvent::Registered { .. } => {
                        if !engine.registered {
                            info!(tia = %engine.tia, "registered with the i-HA through the VPN");
                        }
                        engine.registered = true;
                    }
                    MnEvent::Deregistered { .. } => engine.registered = false,
                    other => {
                        debug!(event = ?other, "registration through the VPN");
                        if matches!(other, MnEvent::Denied { .. } | MnEvent::Expired) {
                            engine.registered = false;
                        }
                    }
                }
            }
        }
        for i in 0..self.ifaces.len() {
            while let Some(mut t) = self.ifaces[i].detector.poll_transmit() {
                t.dst.set_port(self.ha_port);
                // Through a foreign agent: on the link, to its link-layer address.
                let iface = &mut self.ifaces[i];
                if let Some(via) = iface.detector.agent()
                    && *t.dst.ip() == via.addr
                    && let Some(a) = &mut iface.agents
                {
                    let port = iface.socket.local_addr().map_or(0, |l| l.port());
                    match a.send_registration(&t, via, port).await {
                        Ok(()) => self.stats.datagrams_sent += 1,
                        Err(e) => {
                            self.stats.send_errors += 1;
                            debug!(interface = %iface.name, error = %e, "send to the foreign agent failed");
                        }
                    }
                    continue;
                }
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
                if location == Location::Inside
                    && let Some(v) = &mut self.vpn
                    && std::mem::take(&mut v.tia_sent)
                {
                    // A registration through the VPN went out, answered or not: it may reach
                    // the i-HA after the direct one that proved us inside (the i-HA was slow,
                    // RFC 5265 §3.3's parallel registrations let the x-HA win). Register
                    // directly once more: its Identification is newer, so whichever order the
                    // i-HA sees them in, the binding ends as this interface's care-of address
                    // (mode c) — a late TIA request is refused as a replay (RFC 5944 §5.7.1).
                    self.ifaces[i].detector.reregister_internal(now);
                }
            }
        }
    }

    /// The access mode through interface `i`, for `mipctl status`.
    fn iface_mode(&self, i: &Interface) -> &'static str {
        let via_vpn = self.tunnel.flags & MN_VIA_VPN != 0;
        let fa = i.detector.agent().is_some();
        match i.detector.status(self.now()).location {
            Location::Inside if fa => "f",
            Location::Inside => "c",
            Location::Outside | Location::Detecting if via_vpn => match self.mode {
                OutsideMode::Mc => "mc",
                OutsideMode::Cvc if fa => "fvc",
                OutsideMode::Cvc => "cvc",
            },
            _ => "-",
        }
    }

    fn vpn_status(&self) -> Option<VpnStatus> {
        let v = self.vpn.as_ref()?;
        let state = if v.snapshot.established {
            "up"
        } else if v.want == VpnCommand::Up {
            if v.last_error.is_some() {
                "failed"
            } else {
                "connecting"
            }
        } else {
            "down"
        };
        Some(VpnStatus {
            state: state.into(),
            gateway: v.settings.gateway,
            local: v.snapshot.local,
            tia: v.snapshot.tia,
            ipsec: v
                .libipsec
                .map(|l| if l { "kernel-libipsec" } else { "xfrm" }.into()),
            internal_registered: v.engine.as_ref().is_some_and(|e| e.registered),
            external_care_of: (self.outer_tunnel.flags & MN_ACTIVE != 0
                && self.outer_tunnel.flags != u32::MAX)
                .then(|| Ipv4Addr::from(self.outer_tunnel.care_of_addr)),
            external_udp: self.outer_tunnel.flags != u32::MAX
                && self.outer_tunnel.flags & MN_UDP_TUNNEL != 0,
            spis: v
                .snapshot
                .spis
                .iter()
                .map(|s| format!("{:08x}", u32::from_be_bytes(*s)))
                .collect(),
            last_error: v.last_error.clone(),
        })
    }

    /// What the VPN should be: up while an interface is outside or still detecting (the IKE
    /// or MOBIKE exchange goes out with the i-HA registration, draft §3.4.2 step 1), down once
    /// one is inside unless configured to keep it (§3.4.1 step 2: "MAY tear down"). With no
    /// usable interface at all (a link flapping during a move) nothing changes: the SA survives
    /// for MOBIKE to move it when an address comes back.
    fn vpn_wanted(&self) -> Option<VpnCommand> {
        let v = self.vpn.as_ref()?;
        let now = self.now();
        let locations: Vec<Location> = self
            .ifaces
            .iter()
            .map(|i| i.detector.status(now).location)
            .collect();
        let inside = locations.contains(&Location::Inside);
        let away = locations
            .iter()
            .any(|l| matches!(l, Location::Detecting | Location::Outside));
        match (inside, v.settings.inside) {
            (true, InsideVpn::Teardown) => Some(VpnCommand::Down),
            (true, InsideVpn::Keep) => Some(VpnCommand::Up),
            // Mode cvc: IKE goes through the x-HA's tunnel, so only once it exists (§2.3);
            // fvc: once the x-HA has bound the foreign agent's care-of address (§2.4).
            (false, _) if self.external.is_some() => (self.wanted_outer_tunnel().flags & MN_ACTIVE
                != 0
                || self.outside_via_agent().is_some())
            .then_some(VpnCommand::Up),
            (false, _) if away => Some(VpnCommand::Up),
            _ => None,
        }
    }

    /// A report from the VPN task.
    fn vpn_report(&mut self, report: VpnReport) {
        let now = self.now();
        let Some(v) = &mut self.vpn else { return };
        match report {
            VpnReport::Ready { libipsec } => {
                if !libipsec {
                    warn!(device = %v.settings.device, "charon uses the kernel's XFRM: the home address is routed into the configured VPN device, whose SAs charon must bind (if_id)");
                }
                v.libipsec = Some(libipsec);
            }
            VpnReport::Failed { error, retry_in } => {
                v.last_error = Some(format!("{error} (retry in {} ms)", retry_in.as_millis()));
            }
            VpnReport::State(snapshot) => {
                if snapshot != v.snapshot {
                    info!(
                        established = snapshot.established,
                        local = ?snapshot.local,
                        gateway = ?snapshot.gateway,
                        tia = ?snapshot.tia,
                        spis = snapshot.spis.len(),
                        "VPN state"
                    );
                }
                if snapshot.established {
                    v.last_error = None;
                }
                v.snapshot = snapshot;
                if v.snapshot.established
                    && let Some(local) = v.snapshot.local
                {
                    // The gateway answered from this address: for mode mc the outside probe
                    // of detection (draft §3.4).
                    for i in &mut self.ifaces {
                        i.detector.vpn_reachable(now, local);
                    }
                }
            }
        }
    }

    /// Brings the VPN, the gate's SPIs, the registration through the VPN, the tunnel and the
    /// home address's routing in line with the detectors and the VPN's state.
    async fn sync(&mut self) {
        let want = self.vpn_wanted();
        let now = self.now();
        let inside = self
            .ifaces
            .iter()
            .any(|i| i.detector.status(now).location == Location::Inside);
        let internal = self.internal.clone();
        let rx_tx = self.rx_tx.clone();
        if let Some(v) = &mut self.vpn {
            if let Some(want) = want
                && want != v.want
            {
                v.want = want;
                if want == VpnCommand::Down {
                    v.last_error = None;
                }
                let _ = v.commands.send(want).await;
            }
            // The gate passes ESP only with the SAs' SPIs (both directions).
            if let Some(dp) = &mut self.dataplane {
                let failed = sync::sync_spis(&mut dp.dp, &mut v.installed_spis, &v.snapshot.spis);
                if failed > 0 {
                    dp.errors += failed;
                    error!(failed, "cannot add a VPN SPI to the gate");
                }
            }
            // The i-HA registration from the TIA (draft §3.3: again whenever the TIA or the
            // gateway changes), while no interface is inside.
            // Not while the VPN is being torn down (its last snapshot still says up), and in
            // mode mc not before MOBIKE has moved the SA to an address the node has now: a
            // request into an SA still bound to the last network's address is lost, and
            // retransmitted only a second later (RFC 5944 §3.6.3).
            let sa_here = self.mode != OutsideMode::Mc
                || v.snapshot.local.is_some_and(|l| {
                    self.ifaces
                        .iter()
                        .any(|i| i.seen.is_some_and(|a| a.care_of_addr == l))
                });
            let target = match (v.snapshot.established, v.snapshot.tia, inside) {
                (true, Some(tia), false) if v.want == VpnCommand::Up => Some(tia),
                _ => None,
            };
            // A registration already made through the VPN stands while MOBIKE moves the SA.
            if v.engine.as_ref().map(|e| e.tia) != target && (target.is_none() || sa_here) {
                v.engine = None;
                if let Some(tia) = target {
                    match TiaEngine::start(tia, internal, now, rx_tx).await {
                        Ok(e) => v.engine = Some(e),
                        Err(e) => warn!(%tia, error = %e, "cannot register through the VPN"),
                    }
                }
            }
            // The tunnel programs on the VPN device, once it exists.
            if v.snapshot.established
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
        self.sync_tunnel().await;
    }

    /// The tunnel the dataplane should use: mode c through the first interface inside (RFC
    /// 5265 §2.1), else the i-HA tunnel inside the VPN once registered (§2.3), else none.
    fn wanted_tunnel(&self) -> MnTunnel {
        let now = self.now();
        let home = self.internal.home_addr;
        let spec = |care_of_addr, reverse, via_vpn| {
            mn_tunnel(TunnelSpec {
                home_addr: home,
                home_agent: self.internal.home_agent,
                care_of_addr,
                reverse,
                udp: None,
                via_vpn,
            })
        };
        for i in &self.ifaces {
            let s = i.detector.status(now);
            if s.location == Location::Inside {
                if i.detector.agent().is_some() {
                    // Mode f: the foreign agent decapsulates and reverse-tunnels (RFC 5944
                    // §4.2.2, RFC 3024); the home address is routed to it.
                    return MnTunnel::default();
                }
                return match i.seen.map(|a| a.care_of_addr) {
                    // At home on the i-HA's link nothing is tunnelled.
                    Some(coa) if coa != home => spec(coa, self.internal.reverse_tunnel, false),
                    _ => MnTunnel::default(),
                };
            }
        }
        match self.vpn.as_ref().and_then(|v| v.engine.as_ref()) {
            // RFC 5265 §2.3: the T bit SHOULD be set; the VPN gateway passes only what comes
            // from the TIA (§4.2).
            Some(e) if e.registered => spec(e.tia, true, true),
            _ => MnTunnel::default(),
        }
    }

    /// Mode f: the interface inside through a foreign agent, and the agent.
    fn inside_via_agent(&self) -> Option<(u32, Ipv4Addr)> {
        let now = self.now();
        self.ifaces.iter().find_map(|i| {
            let agent = i.detector.agent()?;
            (i.detector.status(now).location == Location::Inside).then_some((i.ifindex, agent.addr))
        })
    }

    /// Mode fvc: the interface outside whose foreign agent's care-of address the x-HA has
    /// bound, and the agent.
    fn outside_via_agent(&self) -> Option<(u32, Ipv4Addr)> {
        let now = self.now();
        self.ifaces.iter().find_map(|i| {
            let agent = i.detector.agent()?;
            let (coa, _) = i.detector.external()?.registration(now)?;
            let s = i.detector.status(now);
            (s.location == Location::Outside && s.care_of_addr == Some(coa))
                .then_some((i.ifindex, agent.addr))
        })
    }

    /// Mode cvc: the x-HA's tunnel through the first interface outside whose care-of address
    /// the x-HA has bound (RFC 5265 §2.3: the x-MIP layer under the VPN), IP-in-IP or, through
    /// a NAT, IP-in-UDP on the registration's ports (RFC 3519 §4.4).
    fn wanted_outer_tunnel(&self) -> MnTunnel {
        let Some(x) = &self.external else {
            return MnTunnel::default();
        };
        let now = self.now();
        for i in &self.ifaces {
            let Some(engine) = i.detector.external() else {
                continue;
            };
            // Mode fvc: the foreign agent is the x-HA tunnel's end (RFC 5265 §2.4).
            if i.detector.agent().is_some() {
                continue;
            }
            let (Some((coa, _)), Some(seen)) = (engine.registration(now), i.seen) else {
                continue;
            };
            if coa != seen.care_of_addr || i.detector.status(now).location != Location::Outside {
                continue;
            }
            let mn_port = i.socket.local_addr().map_or(0, |a| a.port());
            return mn_tunnel(TunnelSpec {
                home_addr: x.home_addr,
                home_agent: x.home_agent,
                care_of_addr: coa,
                reverse: x.reverse_tunnel,
                udp: engine.udp_tunnel().map(|_| (mn_port, self.ha_port)),
                via_vpn: false,
            });
        }
        MnTunnel::default()
    }

    async fn sync_tunnel(&mut self) {
        let tunnel = self.sync_dataplane_tunnels();
        self.sync_routes(tunnel).await;
    }

    /// Writes the tunnels the detectors' state asks for into the dataplane; the MN tunnel.
    fn sync_dataplane_tunnels(&mut self) -> MnTunnel {
        let outer = self.wanted_outer_tunnel();
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
        let tunnel = self.wanted_tunnel();
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
        tunnel
    }

    async fn sync_routes(&mut self, tunnel: MnTunnel) {
        // The internal home address is routed into the VPN exactly while its tunnel runs
        // there, and to the foreign agent while inside through one (mode f); the external
        // one to the foreign agent while outside through one (mode fvc).
        let internal = if tunnel.flags & MN_VIA_VPN != 0 {
            self.vpn.as_ref().and_then(|v| {
                let ifindex = crate::dataplane::ifindex(&v.settings.device).ok()?;
                Some(HomeRoute::Vpn {
                    ifindex,
                    mtu: device_mtu(&v.settings.device).saturating_sub(20),
                })
            })
        } else {
            self.inside_via_agent()
                .map(|(ifindex, agent)| HomeRoute::Agent { ifindex, agent })
        };
        if internal != self.internal_route
            && route_home(
                &self.handle,
                route::INTERNAL_HOME,
                self.internal.home_addr,
                internal,
            )
            .await
        {
            self.internal_route = internal;
        }
        let external = self
            .outside_via_agent()
            .map(|(ifindex, agent)| HomeRoute::Agent { ifindex, agent });
        if let Some(x) = &self.external
            && external != self.external_route
            && route_home(&self.handle, route::EXTERNAL_HOME, x.home_addr, external).await
        {
            self.external_route = external;
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
                    mode: self.iface_mode(i).into(),
                }
            })
            .collect()
    }

    fn api_request(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(api::Status {
                interfaces: Some(self.status()),
                vpn: self.vpn_status(),
                ..driver::status("mn", self.clock)
            }),
            Request::Stats => Response::Stats(driver::stats(&self.stats, self.dataplane.as_ref())),
            Request::Dataplane => driver::dataplane_info(self.dataplane.as_ref()),
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
            Request::Deregister | Request::Bindings | Request::Visitors => Response::Error {
                message: "not available for an RFC 5265 mobile node; see `mipctl status`".into(),
            },
        }
    }

    /// Looks at every interface again (a netlink event arrived): a change of carrier or of its
    /// IPv4 address is a connection status change (§3.2.2).
    async fn refresh(&mut self) {
        let now = self.now();
        for i in &mut self.ifaces {
            let toward = i.detector.internal().config().home_agent;
            let seen = match usable_address(&self.handle, i.ifindex, &i.name, toward).await {
                Some(care_of_addr) => Some(Attachment {
                    care_of_addr,
                    gateway: default_gateway(&self.handle, i.ifindex).await,
                }),
                None => None,
            };
            if seen != i.seen {
                info!(interface = %i.name, from = ?i.seen, to = ?seen, "connection status changed");
                i.seen = seen;
                // A new link: the agents heard on the old one say nothing (RFC 5944 §2.4),
                // and solicitations go out at the fast rate again.
                if let Some(a) = &mut i.agents {
                    a.discovery.link_changed(now);
                    i.offer = None;
                }
                i.detector
                    .connection_changed(now, seen.map(|a| a.care_of_addr));
            }
        }
    }
}

impl Shell for Node {
    type Input = Input;

    fn clock(&self) -> Clock {
        self.clock
    }

    fn stats(&mut self) -> &mut DaemonStats {
        &mut self.stats
    }

    async fn input(&mut self) -> Input {
        let reports = async {
            match &mut self.vpn_reports {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let frames = async {
            match &mut self.agent_frames {
                Some(f) => f.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((idx, from, bytes)) = self.datagrams.recv() => Input::Datagram(idx, from, bytes),
            Some(report) = reports => Input::Vpn(report),
            Some((ifindex, frame)) = frames => Input::AgentFrame(ifindex, frame),
            Some(()) = self.netlink.recv() => Input::Netlink,
        }
    }

    async fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Datagram(idx, from, bytes) => {
                self.stats.datagrams_received += 1;
                if idx == VPN_SOCKET {
                    if let Some(e) = self.vpn.as_mut().and_then(|v| v.engine.as_mut()) {
                        e.mn.handle_datagram(now, from, &bytes);
                    }
                } else if let Some(i) = self.ifaces.get_mut(idx) {
                    i.detector.handle_datagram(now, from, &bytes);
                }
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
                self.refresh().await;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.ifaces
            .iter()
            .filter_map(|i| i.detector.poll_timeout())
            .chain(
                self.vpn
                    .as_ref()
                    .and_then(|v| v.engine.as_ref())
                    .and_then(|e| e.mn.poll_timeout()),
            )
            .chain(
                self.ifaces
                    .iter()
                    .filter_map(|i| i.agents.as_ref()?.discovery.poll_timeout()),
            )
            .min()
    }

    fn handle_timeout(&mut self, now: Now) {
        for i in &mut self.ifaces {
            i.detector.handle_timeout(now);
            if let Some(a) = &mut i.agents {
                a.discovery.handle_timeout(now);
            }
        }
        if let Some(e) = self.vpn.as_mut().and_then(|v| v.engine.as_mut()) {
            e.mn.handle_timeout(now);
        }
    }

    fn api(&mut self, req: Request) -> Response {
        self.api_request(req)
    }

    async fn flush(&mut self) {
        self.send_and_apply().await;
        self.sync().await;
        self.send_and_apply().await;
    }

    async fn shutdown(&mut self) {
        info!("the gates stay as they are and close on their own clocks");
    }
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
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    // Link, IPv4 address and IPv4 route changes: what `ip monitor` shows.
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_IFADDR
        | rtnetlink::constants::RTMGRP_IPV4_ROUTE;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
    tokio::spawn(conn);
    // One wake-up per burst: a pending one already makes the node look again.
    let (netlink_tx, netlink) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            if netlink_tx.is_closed() {
                break;
            }
            let _ = netlink_tx.try_send(());
        }
    });

    let (rx_tx, rx) = mpsc::channel::<(usize, SocketAddrV4, Vec<u8>)>(256);
    let (frames_tx, frames_rx) = mpsc::channel::<(u32, Vec<u8>)>(256);
    let agent_frames = rfc.agent_discovery.then_some(frames_rx);
    let clock = Clock::start();
    let mut ifaces = Vec::new();
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
        let agents = if rfc.agent_discovery {
            let now = clock.now();
            Some(
                AgentLink::open(name, settings.core.home_agent, now, frames_tx.clone()).map_err(
                    |e| io::Error::other(format!("mn.rfc5265.agent_discovery: {name}: {e}")),
                )?,
            )
        } else {
            None
        };
        ifaces.push(Interface {
            name: name.clone(),
            ifindex,
            detector: Detector::new(rfc.detect.clone()),
            socket,
            seen: None,
            agents,
            offer: None,
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
    // The VPN layer (mode mc; cvc's comes with the x-HA layer).
    let (vpn, vpn_reports) = match &rfc.vpn {
        Some(v) => {
            // RFC 5265 §4.2: the CHILD_SA need only carry Mobile IP to and from the i-HA.
            let remote_ts = vec![format!("{}/32", settings.core.home_agent)];
            // Mode cvc: IKE and IPsec from the x-HoA, "so the SA never sees care-of address
            // changes" (§2.3); mode mc: from the care-of address, moved by MOBIKE.
            let local = rfc.detect.external.as_ref().map(|x| x.home_addr);
            let (commands, reports) = vpn::spawn(v.clone(), remote_ts, local);
            let layer = VpnLayer {
                settings: v.clone(),
                commands,
                want: VpnCommand::Down,
                libipsec: None,
                snapshot: VpnSnapshot::default(),
                installed_spis: Vec::new(),
                engine: None,
                tia_sent: false,
                attached: None,
                last_error: None,
            };
            (Some(layer), Some(reports))
        }
        None => (None, None),
    };
    if let (Some(dp), Some(_)) = (&mut dataplane, &vpn) {
        // SPIs of an earlier run's SAs: the state is read again from charon.
        for spi in dp.dp.vpn_spis().unwrap_or_default() {
            let _ = dp.dp.remove_vpn_spi(spi);
        }
    }
    let mut node = Node {
        clock,
        handle: handle.clone(),
        datagrams: rx,
        vpn_reports,
        agent_frames,
        netlink,
        ifaces,
        dataplane,
        ha_port: settings.ha_port,
        stats: DaemonStats::default(),
        mode: rfc.mode,
        internal: settings.core.clone(),
        vpn,
        rx_tx: rx_tx.clone(),
        tunnel: MnTunnel {
            // Unknown: the first sync writes whatever is wanted.
            flags: u32::MAX,
            ..MnTunnel::default()
        },
        external: rfc.detect.external.clone(),
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
    node.refresh().await;
    node.send_and_apply().await;
    node.sync().await;
    driver::run(&mut node, &config.api_socket).await
}
