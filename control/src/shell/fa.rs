//! `mipd` as a foreign agent (`role = "fa"`): the tokio shell around the foreign agent's
//! sans-IO engines ([`crate::proto::fa`] for registration, [`crate::proto::advert`] for agent
//! advertisements), over the [`super::driver`]: it moves bytes and applies events, and decides
//! nothing.
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
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use mipx_common::maps::FaDataplaneConfig;

use super::driver::{self, Shell};
use crate::api::{self, DaemonStats, Request, Response, VisitorInfo};
use crate::config::{Advertise, Config, FaSettings, ReverseTunnel, Role};
use crate::dataplane::setup::Dp;
use crate::dataplane::sync;
use crate::error_chain;
use crate::net::clock::{Clock, unix_ms};
use crate::net::iface::ipv4_prefix_len;
use crate::net::link::{self, FrameAddrs, LinkFilter, LinkSocket, Payload};
use crate::net::sockopt::{enable_recverr, read_error_queue};
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
    clock: Clock,
    stats: DaemonStats,
    inputs: mpsc::Receiver<Input>,
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
    let clock = Clock::start();
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
                    Advertiser::new(c, clock.now(), u64::from(ifindex) ^ unix_ms()).map_err(
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
        enable_recverr(&socket)?;
        sockets.insert(iface.care_of_addr, Arc::new(socket));
    }
    let engine = ForeignAgent::new(engine_config(&settings, &links));
    let dataplane = driver::load_dataplane(
        config.dataplane.as_ref(),
        Role::Fa,
        "registrations are relayed, but nothing is decapsulated or reverse-tunnelled",
    )?;
    for (l, i) in links.iter().zip(&settings.interfaces) {
        info!(interface = %l.name, ifindex = l.ifindex, care_of = %i.care_of_addr, advertise = ?i.advertise, "serving as a foreign agent");
    }

    let (in_tx, in_rx) = mpsc::channel::<Input>(1024);
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

    let mut fa = Fa {
        engine,
        links,
        sockets,
        port: settings.port,
        clock,
        stats: DaemonStats::default(),
        inputs: in_rx,
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
    driver::run(&mut fa, &config.api_socket).await
}

impl Shell for Fa {
    type Input = Input;

    fn clock(&self) -> Clock {
        self.clock
    }

    fn stats(&mut self) -> &mut DaemonStats {
        &mut self.stats
    }

    async fn input(&mut self) -> Input {
        match self.inputs.recv().await {
            Some(input) => input,
            // The readers run as long as their sockets; without any, only timers remain.
            None => std::future::pending().await,
        }
    }

    async fn handle(&mut self, input: Input) {
        self.input(input);
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter_map(|l| l.advertiser.as_ref()?.poll_timeout())
            .chain(self.engine.poll_timeout())
            .min()
    }

    fn handle_timeout(&mut self, now: Now) {
        self.engine.handle_timeout(now);
        for l in &mut self.links {
            if let Some(a) = &mut l.advertiser {
                a.handle_timeout(now);
            }
        }
    }

    fn api(&mut self, req: Request) -> Response {
        self.api_request(req)
    }

    async fn flush(&mut self) {
        self.flush_engines().await;
    }

    fn has_epoch(&self) -> bool {
        self.dataplane.is_some()
    }

    fn advance_epoch(&mut self) {
        self.renew_fast_path();
    }
}

impl Fa {
    fn input(&mut self, input: Input) {
        let now = self.clock.now();
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
    async fn flush_engines(&mut self) {
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
    fn renew_fast_path(&mut self) {
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
        let Some(entry) = sync::fa_visitor(v, self.clock.uptime(), unix_ms()) else {
            return;
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

    fn api_request(&mut self, req: Request) -> Response {
        let now = self.clock.now();
        match req {
            Request::Status => Response::Status(driver::status("fa", self.clock)),
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
                fa: Some(Box::new(self.engine.stats().clone())),
                ..driver::stats(&self.stats, self.dataplane.as_ref())
            }),
            Request::Dataplane => driver::dataplane_info(self.dataplane.as_ref()),
            Request::Bindings | Request::Register { .. } | Request::Deregister => Response::Error {
                message: "not available on a foreign agent; see `mipctl visitors`".into(),
            },
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
