//! `mipd` as a plain mobile node (RFC 5944 §3, RFC 3519 behind a NAT): the tokio shell around
//! [`MobileNode`], with agent discovery and registration through a foreign agent when
//! `[mn.agent_discovery]` names a link. An accepted registration writes the tunnel the
//! dataplane uses; at home, or through a foreign agent that decapsulates, there is none.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use mipx_common::maps::MnTunnel;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::driver::{self, Shell};
use crate::api::{self, DaemonStats, Request, Response};
use crate::config::{Config, MnSettings, Role};
use crate::dataplane::setup::Dp;
use crate::dataplane::sync::mn_tunnel;
use crate::error_chain;
use crate::net::agent_link::{AgentAction, AgentLink, Frames};
use crate::net::clock::Clock;
use crate::net::garp;
use crate::proto::mn::{MnEvent, MnState, MobileNode};
use crate::proto::{Now, Tunnel};

struct MnShell {
    mn: MobileNode,
    settings: MnSettings,
    socket: UdpSocket,
    clock: Clock,
    stats: DaemonStats,
    dataplane: Option<Dp>,
    /// With `[mn.agent_discovery]`: the link where it looks for agents, and its frames.
    agents: Option<(AgentLink, Frames)>,
    buf: Vec<u8>,
}

enum Input {
    Readable(io::Result<()>),
    AgentFrame(Vec<u8>),
}

/// Runs a plain mobile node until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config, settings: MnSettings) -> io::Result<()> {
    let dataplane = driver::load_dataplane(
        config.dataplane.as_ref(),
        Role::Mn,
        "control plane only, nothing is tunnelled",
    )?;
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    info!(local = %socket.local_addr()?, "Mobile IP socket bound");
    let clock = Clock::start();
    let mn = MobileNode::new(settings.core.clone());
    let agents = match &settings.agent_discovery {
        Some(name) => {
            let (tx, rx) = mpsc::channel(256);
            let link =
                AgentLink::open(name, mn.config().home_agent, clock.now(), tx).map_err(|e| {
                    io::Error::other(format!("mn.agent_discovery.interface: {name}: {e}"))
                })?;
            Some((link, rx))
        }
        None => None,
    };
    let mut shell = MnShell {
        mn,
        settings,
        socket,
        clock,
        stats: DaemonStats::default(),
        dataplane,
        agents,
        buf: vec![0u8; 65_536],
    };
    shell.reset_dataplane();
    if let Some(coa) = shell.settings.care_of_addr {
        shell.mn.register(clock.now(), coa);
    }
    shell.flush().await;
    driver::run(&mut shell, &config.api_socket).await
}

impl Shell for MnShell {
    type Input = Input;

    fn clock(&self) -> Clock {
        self.clock
    }

    fn stats(&mut self) -> &mut DaemonStats {
        &mut self.stats
    }

    async fn input(&mut self) -> Input {
        let frames = self.agents.as_mut().map(|(_, rx)| rx);
        tokio::select! {
            r = self.socket.readable() => Input::Readable(r),
            Some((_, frame)) = driver::recv(frames) => Input::AgentFrame(frame),
        }
    }

    async fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Readable(Err(e)) => warn!(error = %e, "receive failed"),
            Input::Readable(Ok(())) => loop {
                match self.socket.try_recv_from(&mut self.buf) {
                    Ok((n, SocketAddr::V4(from))) => {
                        self.stats.datagrams_received += 1;
                        self.mn.handle_datagram(now, from, &self.buf[..n]);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "receive failed");
                        break;
                    }
                }
            },
            Input::AgentFrame(frame) => {
                if let Some((a, _)) = &mut self.agents {
                    a.frame(now, &frame);
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let discovery = self
            .agents
            .as_ref()
            .and_then(|(a, _)| a.discovery.poll_timeout());
        self.mn.poll_timeout().into_iter().chain(discovery).min()
    }

    fn handle_timeout(&mut self, now: Now) {
        self.mn.handle_timeout(now);
        if let Some((a, _)) = &mut self.agents {
            a.discovery.handle_timeout(now);
        }
    }

    fn api(&mut self, req: Request) -> Response {
        let now = self.clock.now();
        match req {
            Request::Status => {
                let reg = self.mn.registration(now);
                Response::Status(api::Status {
                    mn: Some(api::MnStatus {
                        state: self.mn.state(),
                        home_addr: self.mn.config().home_addr,
                        home_agent: self.mn.config().home_agent,
                        care_of_addr: reg.map(|(c, _)| c),
                        remaining_secs: reg.map(|(_, r)| r.as_secs()),
                        udp_keepalive_secs: self.mn.udp_tunnel().map(|k| k.as_secs()),
                    }),
                    ..driver::status("mn", self.clock)
                })
            }
            Request::Stats => Response::Stats(api::Stats {
                mn: Some(self.mn.stats().clone()),
                ..driver::stats(&self.stats, self.dataplane.as_ref())
            }),
            Request::Dataplane => driver::dataplane_info(self.dataplane.as_ref()),
            Request::Register { care_of_addr } => {
                let Some(coa) = care_of_addr.or(self.mn.registration(now).map(|(c, _)| c)) else {
                    return Response::Error {
                        message: "no care-of address: pass --care-of".into(),
                    };
                };
                self.mn.register(now, coa);
                Response::Ok {
                    message: format!("registering care-of address {coa}"),
                }
            }
            Request::Deregister => {
                // §4.6: returning home, the mobile node MUST broadcast a gratuitous ARP for its
                // home address with its own MAC before sending the deregistration, so nodes
                // on the home link stop sending to the home agent's MAC.
                // At home the MN sends directly: stop tunnelling now, not when the reply
                // arrives, so the deregistration itself is not reverse-tunnelled.
                let home = self.mn.config().home_addr;
                if let Some(dp) = &mut self.dataplane {
                    for &(ifindex, mac) in &dp.interfaces {
                        garp::announce(ifindex, mac, mac, home);
                    }
                }
                self.write_tunnel(MnTunnel::default());
                self.mn.deregister(now);
                Response::Ok {
                    message: "deregistering".into(),
                }
            }
            Request::Bindings => Response::Error {
                message: "bindings are kept by the home agent; use `mipctl status`".into(),
            },
            Request::Visitors => Response::Error {
                message: "visitors are kept by a foreign agent (role = \"fa\")".into(),
            },
        }
    }

    async fn flush(&mut self) {
        self.agent_actions().await;
        while let Some(mut t) = self.mn.poll_transmit() {
            t.dst.set_port(self.settings.ha_port);
            // To a foreign agent: on its link, to its link-layer address (§3.6.1.1).
            if let (Some((a, _)), Some(via)) = (&mut self.agents, self.mn.via())
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
            driver::send_datagram(&self.socket, &mut self.stats, t.dst, &t.payload).await;
        }
        while let Some(e) = self.mn.poll_event() {
            if let Some(tunnel) = self.tunnel_for(&e) {
                self.write_tunnel(tunnel);
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

    /// RFC 5944 §3.6: a mobile node leaving service deregisters; wait briefly for the reply.
    async fn shutdown(&mut self) {
        if self.mn.state() != MnState::Registered {
            return;
        }
        self.mn.deregister(self.clock.now());
        self.flush().await;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(until, self.socket.recv_from(&mut self.buf)).await
        {
            if let SocketAddr::V4(from) = from {
                self.stats.datagrams_received += 1;
                self.mn
                    .handle_datagram(self.clock.now(), from, &self.buf[..n]);
            }
            self.flush().await;
            if self.mn.state() == MnState::Idle {
                break;
            }
        }
    }
}

impl MnShell {
    /// What an event does to the tunnel: an accepted registration of a care-of address other
    /// than home, where we decapsulate ourselves, tunnels (RFC 3519 §4.4: data on the
    /// registration's ports); a foreign agent tunnels and decapsulates for us (§4.2.2); home,
    /// a denial or an expiry tunnels nothing.
    fn tunnel_for(&self, e: &MnEvent) -> Option<MnTunnel> {
        let config = self.mn.config();
        match e {
            MnEvent::Registered {
                care_of_addr,
                udp_tunnel,
                ..
            } if *care_of_addr != config.home_addr && !self.mn.agent_decapsulates() => {
                // The socket is bound to an ephemeral port; registrations and tunnelled data
                // share it (RFC 3519 §4.4).
                let local_port = self.socket.local_addr().map_or(0, |a| a.port());
                Some(mn_tunnel(Some(Tunnel {
                    home_addr: config.home_addr,
                    home_agent: config.home_agent,
                    care_of_addr: *care_of_addr,
                    reverse: config.reverse_tunnel,
                    udp: udp_tunnel.then_some((local_port, self.settings.ha_port)),
                    via_vpn: false,
                })))
            }
            MnEvent::Registered { .. }
            | MnEvent::Deregistered { .. }
            | MnEvent::Expired
            | MnEvent::Denied { .. } => Some(MnTunnel::default()),
            _ => None,
        }
    }

    fn write_tunnel(&mut self, tunnel: MnTunnel) {
        if let Some(dp) = &mut self.dataplane
            && let Err(err) = dp.dp.set_mn_tunnel(tunnel)
        {
            dp.errors += 1;
            error!(error = %error_chain(&err), "dataplane update failed");
        }
    }

    /// Starts inactive: the map is rewritten when a registration is accepted.
    fn reset_dataplane(&mut self) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
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

    /// Applies what agent discovery found: register through a new foreign agent (and route
    /// the home address to it), or deregister at home (RFC 5944 §2.4.3); then sends its
    /// solicitations.
    async fn agent_actions(&mut self) {
        let now = self.clock.now();
        let Some((a, _)) = &mut self.agents else {
            return;
        };
        let home = self.mn.config().home_addr;
        for action in a.actions() {
            match action {
                // RFC 5944 §2.4.1, §3.6.1.1: with a co-located care-of address of our own we
                // register it directly, unless the agent requires registration through it
                // (R); then through the agent, 'D' set (RFC 3519 §4.11 when it is behind a
                // NAT). The home address is not routed to the agent: we tunnel ourselves.
                AgentAction::RegisterVia {
                    via, required, udp, ..
                } if self.settings.care_of_addr.is_some() => {
                    let Some(co_located) = self.settings.care_of_addr else {
                        continue;
                    };
                    if required {
                        info!(agent = %via.addr, care_of = %co_located, udp, "the foreign agent requires registration (R): registering the co-located care-of address through it");
                        self.mn.register_co_located_via(now, via, co_located, udp);
                    } else if self.mn.via().is_some() {
                        self.mn.register(now, co_located);
                    }
                }
                AgentAction::RegisterVia {
                    via,
                    care_of_addr: coa,
                    ..
                } => {
                    // A new agent, a move, or the agent rebooted (§2.4.4): register again.
                    info!(agent = %via.addr, care_of = %coa, "registering through the foreign agent");
                    self.mn.register_via(now, via, coa);
                    a.route_home_via(home, via.addr).await;
                }
                AgentAction::Lost => {}
                AgentAction::AtHome => {
                    info!(
                        "our home agent advertises here: at home, deregistering (RFC 5944 §2.4.3)"
                    );
                    self.mn.register(now, home);
                    a.unroute_home().await;
                }
            }
        }
        a.send_solicitations(Ipv4Addr::UNSPECIFIED).await;
    }
}
