//! `mipd --role fa`: the tokio shell around the foreign agent's sans-IO engines
//! ([`crate::proto::fa`] for registration, [`crate::proto::advert`] for agent advertisements),
//! in the manner of [`crate::daemon`]: it moves bytes and applies events, and decides nothing.
//!
//! Sockets, and why (RFC 5944 §3.7):
//! - one [`LinkSocket`] per served link: Registration Requests arrive with the link-layer
//!   source and the IP TTL the engine needs (§3.7.2, RFC 3024 §4.2.1), Agent Solicitations
//!   too, and replies to visitors and advertisements leave through it to a link-layer address
//!   with no ARP for the home address (§3.7.3.2, §4.6);
//! - one UDP socket per care-of address on the registration port: relays to home agents leave
//!   from the care-of address (§3.7.2.2) and the home agents' replies come back to it. A
//!   request sent to the care-of address also reaches this socket; it is read from the link
//!   socket instead and ignored here.
//!
//! Visitors added, refreshed or removed are mirrored into the fast path's visitor map at once.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use mipx_common::maps::{
    FaDataplaneConfig, FaVisitor, NEXTHOP_EPOCH_MS, VISITOR_REVERSE_TUNNEL, VISITOR_UDP_TUNNEL,
};

use crate::api::{self, DaemonStats, Request, Response, VisitorInfo};
use crate::config::Advertise;
use crate::config::{Config, FaSettings, ReverseTunnel, Role};
use crate::daemon::{ApiCall, Dp, bind_api, error_chain, now_since, serve_api, setup_dataplane};
use crate::net::link::{self, FrameAddrs, LinkFilter, LinkSocket, Payload};
use crate::proto::Now;
use crate::proto::advert::{AdvertisedRouter, Advertiser, AdvertiserConfig};
use mipx_common::wire::AgentFlags;

use crate::proto::fa::{
    FaConfig, FaEvent, FaInterface, FaTransmit, ForeignAgent, FromMobile, IcmpUnreachable, PeerSa,
    ReverseTunnelPolicy, UdpTunnelling, Visitor,
};

/// A link the foreign agent serves.
struct Link {
    name: String,
    ifindex: u32,
    mac: [u8; 6],
    /// Our address on the link: the source of advertisements.
    address: Ipv4Addr,
    socket: Arc<LinkSocket>,
    /// `None`: `advertise = "off"`.
    advertiser: Option<Advertiser>,
}

/// What the reader tasks hand to the main loop.
enum Input {
    /// A frame from link `usize` (index into `links`).
    Frame(usize, Vec<u8>),
    /// A datagram on the registration socket of a care-of address.
    Datagram(SocketAddrV4, Vec<u8>),
    /// An ICMP error about a relay we sent to this home agent, with the relayed request.
    Unreachable(Ipv4Addr, IcmpUnreachable, Vec<u8>),
}

struct Fa {
    engine: ForeignAgent,
    links: Vec<Link>,
    /// Care-of address → its registration socket.
    sockets: BTreeMap<Ipv4Addr, Arc<UdpSocket>>,
    port: u16,
    start: Instant,
    stats: DaemonStats,
    /// Identification for the IPv4 headers we build.
    ip_id: u16,
    dataplane: Option<Dp>,
    /// What the program's config slot holds (the next-hop epoch advances).
    fa_config: FaDataplaneConfig,
    /// Visitors a previous `mipd` left in the pinned map, kept forwarding until they register
    /// again or their lifetime ends (home address → expiry, Unix ms). A restarted agent starts
    /// its advertisements' sequence numbers at 0, which tells the mobile nodes to register
    /// again (RFC 5944 §2.3.2, §2.4.4).
    adopted: BTreeMap<Ipv4Addr, u64>,
    /// Visitors registered now, and how many we serve at most: at the limit, advertisements
    /// carry B (RFC 5944 §2.1.1: "will not accept registrations from additional mobile
    /// nodes").
    visitor_count: usize,
    max_visitors: usize,
}

/// The engine's configuration from `[fa]` and the links as found on the host.
fn engine_config(s: &FaSettings, links: &[Link]) -> FaConfig {
    FaConfig {
        interfaces: s
            .interfaces
            .iter()
            .zip(links)
            .map(|(i, l)| FaInterface {
                index: l.ifindex,
                address: i.care_of_addr,
                care_of_addrs: vec![i.care_of_addr],
            })
            .collect(),
        max_lifetime: s.max_lifetime,
        reverse_tunnel: match s.reverse_tunnel {
            ReverseTunnel::Off => ReverseTunnelPolicy::Unavailable,
            ReverseTunnel::Offer => ReverseTunnelPolicy::Offered,
            ReverseTunnel::Require => ReverseTunnelPolicy::Mandatory,
        },
        max_visitors: (s.max_visitors as usize).min(mipx_common::maps::MAX_VISITORS as usize),
        // RFC 3024 §5.2's Encapsulating Delivery Style is not in the fast path: requests
        // asking for it are denied with 79 (§3.4).
        encapsulating_delivery: false,
        registration_timeout: s.registration_timeout,
        mobile_nodes: s
            .mobile_nodes
            .iter()
            .map(|(addr, sa)| PeerSa {
                addr: *addr,
                sa: sa.clone(),
            })
            .collect(),
        home_agents: s
            .home_agents
            .iter()
            .map(|(addr, sa)| PeerSa {
                addr: *addr,
                sa: sa.clone(),
            })
            .collect(),
        udp_tunnel: s
            .behind_nat
            .map(|max_keepalive| UdpTunnelling { max_keepalive }),
        ..FaConfig::default()
    }
}

/// Runs the foreign agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> io::Result<()> {
    let settings = config
        .fa
        .ok_or_else(|| io::Error::other("role = \"fa\" needs an [fa] table"))?;
    let start = Instant::now();
    let now_for_setup = || now_since(start);
    let mut links = Vec::new();
    for (i, iface) in settings.interfaces.iter().enumerate() {
        let field = |e: &dyn std::fmt::Display| {
            io::Error::other(format!("fa.interface[{i}].name: {}: {e}", iface.name))
        };
        let ifindex = crate::dataplane::ifindex(&iface.name).map_err(|e| field(&e))?;
        let mac = crate::dataplane::mac_address(&iface.name).map_err(|e| field(&e))?;
        let socket = LinkSocket::open(ifindex, LinkFilter::Agent).map_err(|e| field(&e))?;
        let prefix_len = ipv4_prefix_len(&iface.name, iface.care_of_addr).ok_or_else(|| {
            io::Error::other(format!(
                "fa.interface[{i}].care_of_addr: {} is not an address of {}",
                iface.care_of_addr, iface.name
            ))
        })?;
        let advertiser = match iface.advertise {
            Advertise::Off => None,
            mode => {
                let mut c = AdvertiserConfig::foreign_agent(
                    iface.care_of_addr,
                    prefix_len,
                    settings.max_lifetime,
                );
                c.routers = vec![AdvertisedRouter {
                    addr: iface.care_of_addr,
                    preference: 0,
                    prefix_len,
                }];
                c.prefix_lengths = iface.prefix_lengths;
                c.flags = c
                    .flags
                    .with(AgentFlags::T, settings.reverse_tunnel != ReverseTunnel::Off)
                    .with(AgentFlags::R, iface.registration_required)
                    // RFC 3519 §3.4: SHOULD behind a NAT, MUST NOT otherwise.
                    .with(AgentFlags::U, settings.behind_nat.is_some());
                c.lifetime = iface.advertisement_lifetime;
                // RFC 1256 §5.1's MinAdvertisementInterval default: three quarters of the
                // maximum, so that the randomised intervals never bunch up.
                c.max_interval = iface.advertisement_interval;
                c.min_interval = (iface.advertisement_interval * 3 / 4).max(Duration::from_secs(1));
                c.solicited_only = mode == Advertise::Solicited;
                Some(
                    Advertiser::new(c, now_for_setup(), u64::from(ifindex) ^ unix_ms()).map_err(
                        |e| io::Error::other(format!("fa.interface[{i}]: advertisements: {e}")),
                    )?,
                )
            }
        };
        links.push(Link {
            name: iface.name.clone(),
            ifindex,
            mac,
            address: iface.care_of_addr,
            socket: Arc::new(socket),
            advertiser,
        });
    }
    let mut sockets = BTreeMap::new();
    for (i, iface) in settings.interfaces.iter().enumerate() {
        if sockets.contains_key(&iface.care_of_addr) {
            continue;
        }
        let socket = UdpSocket::bind(SocketAddrV4::new(iface.care_of_addr, settings.port))
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "fa.interface[{i}].care_of_addr: binding {}:{}: {e} (it must be an address of this host)",
                    iface.care_of_addr, settings.port
                ))
            })?;
        // RFC 5944 §3.7.3: an ICMP error about a relay becomes a reply code (80-88) to the
        // mobile node; IP_RECVERR queues such errors, with the datagram they are about.
        enable_recverr(&socket)?;
        sockets.insert(iface.care_of_addr, Arc::new(socket));
    }
    let engine = ForeignAgent::new(engine_config(&settings, &links));
    let dataplane = match &config.dataplane {
        Some(d) => Some(setup_dataplane(d, Role::Fa).map_err(|e| {
            io::Error::other(format!(
                "dataplane (pinned under {}): {}",
                d.pin_dir.display(),
                error_chain(&e)
            ))
        })?),
        None => {
            warn!(
                "no [dataplane] table: registrations are relayed, but nothing is decapsulated or reverse-tunnelled"
            );
            None
        }
    };
    for (l, i) in links.iter().zip(&settings.interfaces) {
        info!(interface = %l.name, ifindex = l.ifindex, care_of = %i.care_of_addr, advertise = ?i.advertise, "serving as a foreign agent");
    }

    let (in_tx, mut in_rx) = mpsc::channel::<Input>(1024);
    for (idx, l) in links.iter().enumerate() {
        let socket = Arc::clone(&l.socket);
        let tx = in_tx.clone();
        let name = l.name.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        if tx.send(Input::Frame(idx, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(interface = %name, error = %e, "link receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    for socket in sockets.values() {
        let socket = Arc::clone(socket);
        let tx = in_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, SocketAddr::V4(from))) => {
                        if tx
                            .send(Input::Datagram(from, buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // With IP_RECVERR an ICMP error about an earlier send fails the next
                        // receive once; the error queue says which relay it was about.
                        debug!(error = %e, "registration socket");
                        for (ha, kind, quoted) in read_error_queue(&socket) {
                            if tx.send(Input::Unreachable(ha, kind, quoted)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
    }
    drop(in_tx);

    let listener = bind_api(&config.api_socket)?;
    info!(path = %config.api_socket.display(), "control API listening");
    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    let mut fa = Fa {
        engine,
        links,
        sockets,
        port: settings.port,
        start,
        stats: DaemonStats::default(),
        ip_id: 1,
        dataplane,
        fa_config: FaDataplaneConfig {
            enabled: 1,
            udp_port: settings.port.to_be_bytes(),
            ..FaDataplaneConfig::default()
        },
        adopted: BTreeMap::new(),
        visitor_count: 0,
        max_visitors: (settings.max_visitors as usize)
            .min(mipx_common::maps::MAX_VISITORS as usize),
    };
    fa.setup_fast_path(&settings);
    let mut epoch_tick = tokio::time::interval(Duration::from_millis(NEXTHOP_EPOCH_MS));
    epoch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        let deadline = fa.deadline();
        tokio::select! {
            Some(input) = in_rx.recv() => fa.input(input),
            _ = tokio::time::sleep_until(deadline) => fa.handle_timeout(),
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve_api(stream, api_tx.clone())); }
                Err(e) => warn!(error = %e, "API accept failed"),
            },
            Some((req, reply)) = api_rx.recv() => {
                fa.stats.api_requests += 1;
                let _ = reply.send(fa.api(req));
            }
            _ = epoch_tick.tick(), if fa.dataplane.is_some() => fa.advance_epoch(),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        fa.flush().await;
    }
    info!("shutting down");
    let _ = std::fs::remove_file(&config.api_socket);
    Ok(())
}

impl Fa {
    fn now(&self) -> Now {
        now_since(self.start)
    }

    fn deadline(&self) -> tokio::time::Instant {
        let base = tokio::time::Instant::from_std(self.start);
        let next = self
            .links
            .iter()
            .filter_map(|l| l.advertiser.as_ref()?.poll_timeout())
            .chain(self.engine.poll_timeout())
            .min();
        match next {
            Some(at) => base + at,
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        }
    }

    fn handle_timeout(&mut self) {
        let now = self.now();
        self.engine.handle_timeout(now);
        for l in &mut self.links {
            if let Some(a) = &mut l.advertiser {
                a.handle_timeout(now);
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Frame(idx, frame) => {
                self.stats.datagrams_received += 1;
                let Some(rx) = link::parse(&frame) else {
                    debug!(interface = %self.links[idx].name, "malformed frame dropped");
                    return;
                };
                match rx.payload {
                    Payload::Udp { src_port, data, .. } => {
                        let from = FromMobile {
                            iface: self.links[idx].ifindex,
                            src: SocketAddrV4::new(rx.src, src_port),
                            dst: rx.dst,
                            src_mac: rx.src_mac,
                            ttl: rx.ttl,
                        };
                        self.engine.handle_from_mobile(now, from, data);
                    }
                    // Agent Solicitations (the link filter passes no other ICMP).
                    Payload::Icmp(icmp) => {
                        if let Some(a) = &mut self.links[idx].advertiser {
                            a.handle_solicitation(now, rx.src, Some(rx.src_mac), icmp);
                        }
                    }
                }
            }
            Input::Unreachable(ha, kind, quoted) => {
                info!(%ha, ?kind, "ICMP error about a relayed registration");
                self.engine.handle_icmp_unreachable(now, ha, kind, &quoted);
            }
            Input::Datagram(from, bytes) => {
                // Requests sent to the care-of address are read from the link socket.
                if bytes.first() == Some(&1) {
                    return;
                }
                self.stats.datagrams_received += 1;
                self.engine.handle_from_home_agent(now, from, &bytes);
            }
        }
    }

    /// Sends what the engine queued and applies its events.
    async fn flush(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            match self.send(&t).await {
                Ok(()) => self.stats.datagrams_sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    warn!(dst = %t.dst, error = %e, "send failed");
                }
            }
        }
        let before = self.visitor_count;
        while let Some(e) = self.engine.poll_event() {
            self.apply(e);
        }
        if self.visitor_count != before {
            let busy = self.visitor_count >= self.max_visitors;
            for l in &mut self.links {
                if let Some(a) = &mut l.advertiser
                    && a.busy() != busy
                {
                    a.set_busy(busy);
                    info!(interface = %l.name, busy, visitors = self.visitor_count, "advertising B (busy)");
                }
            }
        }
        // Agent advertisements (§2.1): TTL 1, from our address on the link, to the
        // soliciting node's link-layer address or the group's.
        for l in &mut self.links {
            let Some(a) = &mut l.advertiser else { continue };
            while let Some(t) = a.poll_transmit() {
                self.ip_id = self.ip_id.wrapping_add(1);
                let frame = link::agent_discovery_frame(
                    l.mac, l.address, t.dst_ip, t.dst_mac, self.ip_id, &t.payload,
                );
                match l.socket.send(&frame).await {
                    Ok(()) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        warn!(interface = %l.name, error = %e, "advertisement not sent");
                    }
                }
            }
        }
    }

    async fn send(&mut self, t: &FaTransmit) -> io::Result<()> {
        match t.link {
            // To a visitor: on its link, to its link-layer address (§3.7.3.2).
            Some(target) => {
                let link = self
                    .links
                    .iter()
                    .find(|l| l.ifindex == target.iface)
                    .ok_or_else(|| io::Error::other("no such link"))?;
                self.ip_id = self.ip_id.wrapping_add(1);
                let frame = link::udp_frame(
                    FrameAddrs {
                        src_mac: link.mac,
                        dst_mac: target.mac,
                        src: t.src,
                        dst: *t.dst.ip(),
                        ttl: 64,
                    },
                    self.ip_id,
                    self.port,
                    t.dst.port(),
                    &t.payload,
                );
                link.socket.send(&frame).await
            }
            // To a home agent: routed, from the care-of address (§3.7.2.2).
            None => {
                let socket = self
                    .sockets
                    .get(&t.src)
                    .or_else(|| self.sockets.values().next())
                    .ok_or_else(|| io::Error::other("no registration socket"))?;
                socket.send_to(&t.payload, t.dst).await.map(drop)
            }
        }
    }

    fn apply(&mut self, e: FaEvent) {
        match e {
            FaEvent::VisitorAdded(v) => {
                self.visitor_count += 1;
                info!(home = %v.home_addr, ha = %v.home_agent, mac = %mac_str(v.mac), care_of = %v.care_of_addr, reverse = v.reverse_tunnel, lifetime = v.lifetime, "visitor added");
                self.mirror(&v);
            }
            FaEvent::VisitorUpdated { old, new } => {
                debug!(home = %new.home_addr, lifetime = new.lifetime, "visitor refreshed");
                if old.home_addr != new.home_addr {
                    self.unmirror(&old);
                }
                self.mirror(&new);
            }
            FaEvent::VisitorRemoved { visitor, reason } => {
                self.visitor_count = self.visitor_count.saturating_sub(1);
                info!(home = %visitor.home_addr, ?reason, "visitor removed");
                self.unmirror(&visitor);
            }
        }
    }

    /// The care-of addresses (each with its link), the program's config, and what a previous
    /// `mipd` left in the visitor map.
    fn setup_fast_path(&mut self, settings: &FaSettings) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        let mut result = Ok(());
        for (iface, link) in settings.interfaces.iter().zip(&self.links) {
            result = result.and(dp.dp.add_fa_care_of(iface.care_of_addr, link.ifindex));
        }
        result = result.and(dp.dp.set_fa_config(self.fa_config));
        if let Err(e) = result {
            dp.errors += 1;
            warn!(error = %error_chain(&e), "cannot configure the foreign agent's fast path");
        }
        let now_ms = unix_ms();
        match dp.dp.visitors() {
            Ok(pinned) => {
                for (home, v) in pinned {
                    if v.expires_unix_ms > now_ms {
                        self.adopted.insert(home, v.expires_unix_ms);
                    } else if let Err(e) = dp.dp.remove_visitor(home) {
                        debug!(%home, error = %error_chain(&e), "stale visitor");
                    }
                }
                if !self.adopted.is_empty() {
                    info!(
                        visitors = self.adopted.len(),
                        "kept the pinned visitors forwarding until they register again"
                    );
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "cannot read the pinned visitor map"),
        }
    }

    /// Renews the fast path's cached FIB answers; drops adopted visitors whose lifetime ended.
    fn advance_epoch(&mut self) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        self.fa_config.nexthop_epoch = self.fa_config.nexthop_epoch.wrapping_add(1);
        if let Err(e) = dp.dp.set_fa_config(self.fa_config) {
            dp.errors += 1;
            debug!(error = %error_chain(&e), "next-hop epoch");
        }
        let now_ms = unix_ms();
        let ended: Vec<Ipv4Addr> = self
            .adopted
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(h, _)| *h)
            .collect();
        for home in ended {
            self.adopted.remove(&home);
            let _ = dp.dp.remove_visitor(home);
            info!(%home, "an adopted visitor's lifetime ended");
        }
    }

    /// The fast path's entry for a visitor. A co-located care-of address registered through
    /// us needs none: the mobile node decapsulates and reverse-tunnels itself (RFC 3024 §4.1.2).
    fn mirror(&mut self, v: &Visitor) {
        self.adopted.remove(&v.home_addr);
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        if v.co_located {
            return;
        }
        let expires_unix_ms = match v.remaining(self.start.elapsed()) {
            Some(left) => unix_ms() + left.as_millis() as u64,
            None => u64::MAX,
        };
        let entry = FaVisitor {
            care_of_addr: v.care_of_addr.octets(),
            home_agent: v.home_agent.octets(),
            ifindex: v.iface,
            flags: if v.reverse_tunnel {
                VISITOR_REVERSE_TUNNEL
            } else {
                0
            } | if v.udp_keepalive.is_some() {
                VISITOR_UDP_TUNNEL
            } else {
                0
            },
            mac: v.mac,
            lifetime: v.lifetime,
            source_port: v.source.port().to_be_bytes(),
            identification: v.identification,
            expires_unix_ms,
            ..FaVisitor::default()
        };
        if let Err(e) = dp.dp.upsert_visitor(v.home_addr, entry) {
            dp.errors += 1;
            warn!(home = %v.home_addr, error = %error_chain(&e), "cannot write the visitor into the fast path");
        }
    }

    fn unmirror(&mut self, v: &Visitor) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        if let Err(e) = dp.dp.remove_visitor(v.home_addr) {
            dp.errors += 1;
            warn!(home = %v.home_addr, error = %error_chain(&e), "cannot remove the visitor from the fast path");
        }
    }

    fn api(&mut self, req: Request) -> Response {
        let now = self.now();
        match req {
            Request::Status => Response::Status(api::Status {
                role: "fa".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: self.start.elapsed().as_secs(),
                ha: None,
                mn: None,
                interfaces: None,
                vpn: None,
            }),
            Request::Visitors => {
                let mut rows: Vec<VisitorInfo> = self
                    .engine
                    .visitors(now)
                    .into_iter()
                    .map(|r| VisitorInfo {
                        home_addr: r.home_addr,
                        home_agent: r.home_agent,
                        care_of_addr: r.care_of_addr,
                        mac: r.link_addr,
                        interface: self
                            .links
                            .iter()
                            .find(|l| l.ifindex == r.iface)
                            .map_or_else(|| r.iface.to_string(), |l| l.name.clone()),
                        reverse_tunnel: r.reverse_tunnel,
                        udp_tunnel: r.udp_tunnel,
                        lifetime: r.lifetime,
                        remaining_secs: r.remaining_secs.unwrap_or(u64::MAX),
                    })
                    .collect();
                rows.sort_by_key(|r| r.home_addr);
                Response::Visitors(rows)
            }
            Request::Stats => Response::Stats(api::Stats {
                ha: None,
                mn: None,
                fa: Some(Box::new(self.engine.stats().clone())),
                daemon: self.stats.clone(),
                dataplane: Dp::counters(self.dataplane.as_ref()),
            }),
            Request::Dataplane => Dp::info_response(self.dataplane.as_ref()),
            Request::Bindings | Request::Register { .. } | Request::Deregister => Response::Error {
                message: "not available on a foreign agent; see `mipctl visitors`".into(),
            },
        }
    }
}

fn enable_recverr(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a live c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drains the socket's error queue (MSG_ERRQUEUE): for each ICMP Destination Unreachable, the
/// home agent the datagram was sent to, what the ICMP code says, and the datagram (our relay).
/// Other errors are skipped.
fn read_error_queue(socket: &UdpSocket) -> Vec<(Ipv4Addr, IcmpUnreachable, Vec<u8>)> {
    use std::os::fd::AsRawFd as _;
    /// `SO_EE_ORIGIN_ICMP` (linux/errqueue.h).
    const ORIGIN_ICMP: u8 = 2;
    const DEST_UNREACHABLE: u8 = 3;
    #[repr(C, align(8))]
    struct Control([u8; 256]);
    let mut out = Vec::new();
    for _ in 0..64 {
        let mut data = [0u8; 2048];
        let mut control = Control([0; 256]);
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        // SAFETY: `msg` points at buffers that outlive the call, with their lengths.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &raw mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
        let mut err: Option<libc::sock_extended_err> = None;
        // SAFETY: walking the control buffer the kernel filled, with the CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                    err = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::sock_extended_err>(),
                    ));
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        let Some(e) = err else { continue };
        if e.ee_origin != ORIGIN_ICMP {
            continue;
        }
        let kind = if e.ee_type == DEST_UNREACHABLE {
            IcmpUnreachable::from_unreachable_code(e.ee_code)
        } else {
            IcmpUnreachable::Other
        };
        let ha = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
        out.push((ha, kind, data[..n as usize].to_vec()));
    }
    out
}

/// The prefix length of `addr` on interface `name`, if it has that address.
fn ipv4_prefix_len(name: &str, addr: Ipv4Addr) -> Option<u8> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string; ifa_addr a valid sockaddr.
        let (ifname, family) = unsafe {
            (
                std::ffi::CStr::from_ptr(ifa.ifa_name),
                (*ifa.ifa_addr).sa_family,
            )
        };
        if family != libc::AF_INET as u16 || ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: an AF_INET address and netmask are sockaddr_in.
        let (a, m) = unsafe {
            (
                (*ifa.ifa_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr,
                (*ifa.ifa_netmask.cast::<libc::sockaddr_in>())
                    .sin_addr
                    .s_addr,
            )
        };
        if Ipv4Addr::from(u32::from_be(a)) == addr {
            found = Some(u32::from_be(m).count_ones() as u8);
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
