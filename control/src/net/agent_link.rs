//! The mobile node's side of agent discovery and of registration through a foreign agent
//! (RFC 5944 §2.4, §3.6.1.1), for a mobile node (`role = "mn"`) with `[mn.agent_discovery]`.
//!
//! Advertisements are read and solicitations sent on the interface's link socket
//! ([`crate::net::link`]); so are Registration Requests to a foreign agent: §3.6.1.1 wants them
//! sent to the agent's address from the advertisement's IP source, to the link-layer address
//! of that advertisement, from the home address, and RFC 3024 §4.1.1 with TTL 255. The node
//! may have no address on that link at all, so the kernel could not send them. Replies come
//! back to the home address as ordinary datagrams on the registration socket.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::net::link::{self, FrameAddrs, LinkFilter, LinkSocket, Payload};
use crate::proto::discovery::{AgentDiscovery, DiscoveryConfig, DiscoveryEvent};
use crate::proto::mn::ViaAgent;
use crate::proto::{Now, Transmit};
use mipx_common::wire::AgentFlags;

/// RFC 3024 §4.1.1: "The mobile node MUST set the TTL field of the IP header to 255" in a
/// request to a foreign agent, which checks it (code 76).
const REQUEST_TTL: u8 = 255;

/// Frames the links' reader tasks hand to the shell: (ifindex, frame).
pub type Frames = mpsc::Receiver<(u32, Vec<u8>)>;

pub struct AgentLink {
    pub name: String,
    pub ifindex: u32,
    mac: [u8; 6],
    socket: Arc<LinkSocket>,
    pub discovery: AgentDiscovery,
    rtnl: Option<rtnetlink::Handle>,
    ip_id: u16,
}

/// What the daemon should do after an advertisement or a timer.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentAction {
    /// Register through this foreign agent with this care-of address; `required`: it set R
    /// (§2.4.1: register through it even with a co-located address).
    RegisterVia {
        via: ViaAgent,
        care_of_addr: Ipv4Addr,
        required: bool,
        /// It advertises U: behind a NAT, with RFC 3519 UDP tunnelling (§3.4).
        udp: bool,
    },
    /// The agent we used is gone (its advertisements' lifetime ran out, §2.4.2.1).
    Lost,
    /// Our home agent advertises here: we are at home (§2.4.3).
    AtHome,
}

impl AgentLink {
    /// Opens the link socket of interface `name`; its frames go to `frames`, tagged with the
    /// interface index.
    pub fn open(
        name: &str,
        home_agent: Ipv4Addr,
        now: Now,
        frames: mpsc::Sender<(u32, Vec<u8>)>,
    ) -> io::Result<AgentLink> {
        let ifindex = crate::dataplane::ifindex(name).map_err(io::Error::other)?;
        let mac = crate::dataplane::mac_address(name).map_err(io::Error::other)?;
        let socket = Arc::new(LinkSocket::open(ifindex, LinkFilter::MobileNode)?);
        let discovery = AgentDiscovery::new(
            DiscoveryConfig::new(home_agent),
            now,
            u64::from(ifindex) ^ now.unix.as_nanos() as u64,
        )
        .map_err(io::Error::other)?;
        let tx = frames;
        let reader = Arc::clone(&socket);
        let ifname = name.to_owned();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match reader.recv(&mut buf).await {
                    Ok(n) => {
                        if tx.send((ifindex, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(interface = %ifname, error = %e, "link receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let rtnl = match rtnetlink::new_connection() {
            Ok((conn, handle, _)) => {
                tokio::spawn(conn);
                Some(handle)
            }
            Err(e) => {
                warn!(error = %e, "no rtnetlink: the home address will not be routed to the foreign agent");
                None
            }
        };
        info!(interface = %name, ifindex, "listening for agent advertisements (RFC 5944 §2.4)");
        Ok(AgentLink {
            name: name.to_owned(),
            ifindex,
            mac,
            socket,
            discovery,
            rtnl,
            ip_id: 1,
        })
    }

    /// An advertisement (the link filter passes nothing else).
    pub fn frame(&mut self, now: Now, frame: &[u8]) {
        let Some(rx) = link::parse(frame) else {
            debug!(interface = %self.name, "malformed frame dropped");
            return;
        };
        if let Payload::Icmp(icmp) = rx.payload {
            self.discovery
                .handle_advertisement(now, rx.src, Some(rx.src_mac), icmp);
        }
    }

    /// What the discovery's events ask of the registration.
    pub fn actions(&mut self) -> Vec<AgentAction> {
        let mut out = Vec::new();
        while let Some(e) = self.discovery.poll_event() {
            info!(interface = %self.name, event = ?e, "agent discovery");
            let agent = match e {
                DiscoveryEvent::AgentFound(a) | DiscoveryEvent::AgentRebooted(a) => a,
                DiscoveryEvent::Moved { to, .. } => to,
                DiscoveryEvent::AtHome { .. } => {
                    out.push(AgentAction::AtHome);
                    continue;
                }
                DiscoveryEvent::AgentLost { .. } => {
                    if self.discovery.current().is_none() {
                        out.push(AgentAction::Lost);
                    }
                    continue;
                }
            };
            match (agent.care_of(), agent.mac, agent.busy()) {
                (Some(coa), Some(mac), false) => out.push(AgentAction::RegisterVia {
                    via: ViaAgent {
                        addr: agent.addr,
                        mac,
                    },
                    care_of_addr: coa,
                    required: agent.registration_required(),
                    udp: agent.flags.contains(AgentFlags::U),
                }),
                (Some(_), _, true) => {
                    info!(agent = %agent.addr, "foreign agent busy (B): not registering")
                }
                _ => {}
            }
        }
        out
    }

    /// Sends the solicitations discovery queued: TTL 1 (§2.2), from `src`: the interface's
    /// own address, or 0.0.0.0 (ICMP Router Discovery allows either). Never the home address:
    /// an RFC 5265 node would show its internal home address on every external network.
    pub async fn send_solicitations(&mut self, src: Ipv4Addr) {
        while let Some(t) = self.discovery.poll_transmit() {
            self.ip_id = self.ip_id.wrapping_add(1);
            let frame = link::agent_discovery_frame(
                self.mac, src, t.dst_ip, t.dst_mac, self.ip_id, &t.payload,
            );
            if let Err(e) = self.socket.send(&frame).await {
                warn!(interface = %self.name, error = %e, "solicitation not sent");
            }
        }
    }

    /// Sends a Registration Request to the foreign agent `via` (§3.6.1.1), from `local_port`.
    pub async fn send_registration(
        &mut self,
        t: &Transmit,
        via: ViaAgent,
        local_port: u16,
    ) -> io::Result<()> {
        let src = t.src.unwrap_or(Ipv4Addr::UNSPECIFIED);
        self.ip_id = self.ip_id.wrapping_add(1);
        let frame = link::udp_frame(
            FrameAddrs {
                src_mac: self.mac,
                dst_mac: via.mac,
                src,
                dst: *t.dst.ip(),
                ttl: REQUEST_TTL,
            },
            self.ip_id,
            local_port,
            t.dst.port(),
            &t.payload,
        );
        self.socket.send(&frame).await
    }

    /// Routes what the home address sends to the foreign agent (RFC 5944 §4.2.1, RFC 3024
    /// §5.1).
    pub async fn route_home_via(&self, home: Ipv4Addr, agent: Ipv4Addr) {
        let Some(rtnl) = &self.rtnl else { return };
        match crate::net::route::route_home_via_agent(
            rtnl,
            crate::net::route::INTERNAL_HOME,
            home,
            self.ifindex,
            agent,
        )
        .await
        {
            Ok(()) => {
                info!(%home, %agent, interface = %self.name, "home address routed to the foreign agent")
            }
            Err(e) => {
                warn!(%home, %agent, error = %e, "cannot route the home address to the foreign agent")
            }
        }
    }

    /// Back to the main table for the home address.
    pub async fn unroute_home(&self) {
        let Some(rtnl) = &self.rtnl else { return };
        if let Err(e) = crate::net::route::unroute_home(rtnl).await {
            warn!(error = %e, "cannot remove the home address's route to the foreign agent");
        }
    }
}
