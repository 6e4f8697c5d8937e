//! `mipd` as a home agent: the tokio shell around [`HomeAgent`] (RFC 5944 §3.8, RFC 3519,
//! RFC 5265's internal and external home agents). Registrations arrive on one UDP socket with
//! their arrival interface (`IP_PKTINFO`), replies leave from it, and every binding-cache event
//! is mirrored into the fast path's binding map at once ([`crate::dataplane::sync`]).

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use mipx_common::maps::HaDataplaneConfig;
use mipx_common::wire::RequestFlags;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use super::driver::{self, Shell};
use crate::api::{self, BindingInfo, DaemonStats, Request, Response};
use crate::config::{Config, HaSettings, Role};
use crate::dataplane::setup::Dp;
use crate::dataplane::sync::{self, Announce};
use crate::error_chain;
use crate::net::clock::Clock;
use crate::net::{garp, sockopt};
use crate::proto::Now;
use crate::proto::ha::HomeAgent;

struct HaShell {
    ha: HomeAgent,
    port: u16,
    socket: UdpSocket,
    clock: Clock,
    stats: DaemonStats,
    dataplane: Option<Dp>,
    /// x-HA: ifindexes of `ha.internal_interfaces`, whose registrations are dropped (RFC 5265
    /// §3.7).
    internal_ifindexes: Vec<u32>,
    /// When a drop on an internal interface was last logged (one line per second at most).
    internal_log: Option<Instant>,
    buf: Vec<u8>,
}

/// Runs a home agent until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config, settings: HaSettings) -> io::Result<()> {
    let HaSettings {
        core,
        port,
        internal_interfaces,
    } = settings;
    let internal_ifindexes = internal_interfaces
        .iter()
        .map(|name| {
            crate::dataplane::ifindex(name)
                .map_err(|e| io::Error::other(format!("ha.internal_interfaces: {name}: {e}")))
        })
        .collect::<io::Result<Vec<u32>>>()?;
    if let Some(nets) = &core.trusted_networks {
        let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
        info!(trusted = ?list, "internal home agent (RFC 5265): answering only trusted networks");
    }
    let bind = SocketAddrV4::new(core.address, port);
    let dataplane = driver::load_dataplane(
        config.dataplane.as_ref(),
        Role::Ha,
        "control plane only, nothing is tunnelled",
    )?;
    let socket = UdpSocket::bind(bind).await?;
    info!(local = %socket.local_addr()?, "Mobile IP socket bound");
    // The arrival interface of every datagram, for the x-HA's internal-interface rule.
    sockopt::enable_pktinfo(socket.as_fd())?;
    let mut shell = HaShell {
        ha: HomeAgent::new(core),
        port,
        socket,
        clock: Clock::start(),
        stats: DaemonStats::default(),
        dataplane,
        internal_ifindexes,
        internal_log: None,
        buf: vec![0u8; 65_536],
    };
    shell.adopt_dataplane_state();
    shell.flush().await;
    driver::run(&mut shell, &config.api_socket).await
}

impl Shell for HaShell {
    type Input = io::Result<()>;

    fn clock(&self) -> Clock {
        self.clock
    }

    fn stats(&mut self) -> &mut DaemonStats {
        &mut self.stats
    }

    async fn input(&mut self) -> io::Result<()> {
        self.socket.readable().await
    }

    async fn handle(&mut self, readable: io::Result<()>) {
        if let Err(e) = readable {
            warn!(error = %e, "receive failed");
            return;
        }
        // Drain what is queued before going back to select!: under load this batches the
        // socket work and keeps replies in arrival order.
        for _ in 0..257 {
            let received = self.socket.try_io(tokio::io::Interest::READABLE, || {
                sockopt::recv_pktinfo(self.socket.as_fd(), &mut self.buf)
            });
            match received {
                Ok(r) => self.datagram(r.from, r.ifindex, r.len),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    break;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.ha.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Now) {
        self.ha.handle_timeout(now);
    }

    fn api(&mut self, req: Request) -> Response {
        let now = self.clock.now();
        match req {
            Request::Status => Response::Status(api::Status {
                ha: Some(api::HaStatus {
                    address: self.ha.config().address,
                    port: self.port,
                    max_lifetime: self.ha.config().max_lifetime,
                    bindings: self.ha.bindings().len(),
                    mobile_node_entries: self.ha.config().mobile_nodes.len(),
                }),
                ..driver::status("ha", self.clock)
            }),
            Request::Bindings => {
                let mut bindings: Vec<BindingInfo> = self
                    .ha
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
            Request::Stats => Response::Stats(api::Stats {
                ha: Some(self.ha.stats().clone()),
                ..driver::stats(&self.stats, self.dataplane.as_ref())
            }),
            Request::Dataplane => driver::dataplane_info(self.dataplane.as_ref()),
            Request::Visitors => Response::Error {
                message: "visitors are kept by a foreign agent (role = \"fa\")".into(),
            },
            Request::Register { .. } | Request::Deregister => Response::Error {
                message: "register/deregister are mobile node commands".into(),
            },
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.ha.poll_transmit() {
            driver::send_datagram(&self.socket, &mut self.stats, t.dst, &t.payload).await;
        }
        let now = self.clock.now();
        let home_agent = self.ha.config().address;
        while let Some(e) = self.ha.poll_event() {
            // The core already logged the change.
            let Some(dp) = &mut self.dataplane else {
                continue;
            };
            let (announce, result) = sync::apply_ha_event(&mut dp.dp, &e, home_agent, now);
            match announce {
                Some(Announce::Intercepting(home)) => {
                    if let Some((ifindex, mac)) = dp.home_link {
                        garp::announce(ifindex, mac, mac, home);
                    }
                }
                Some(Announce::Returned(home)) => {
                    if let (Some((ifindex, own_mac)), Some(ifname)) =
                        (dp.home_link, dp.home_link_name.clone())
                    {
                        garp::announce_returned(ifindex, own_mac, ifname, home);
                    }
                }
                None => {}
            }
            if let Err(err) = result {
                dp.errors += 1;
                error!(event = ?e, error = %error_chain(&err), "dataplane update failed");
            }
        }
    }

    fn has_epoch(&self) -> bool {
        self.dataplane
            .as_ref()
            .is_some_and(|dp| dp.ha_config.is_some())
    }

    /// Invalidates the fast path's cached FIB answers, so route and neighbour changes reach it
    /// within one tick.
    fn advance_epoch(&mut self) {
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
}

impl HaShell {
    /// Adopts the bindings a previous `mipd` left in the pinned map, removing those that ran
    /// out meanwhile, and enables the fast path.
    fn adopt_dataplane_state(&mut self) {
        let now = self.clock.now();
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        let found = match dp.dp.bindings() {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read pinned bindings");
                Vec::new()
            }
        };
        for (home_addr, entry) in found {
            let (binding, expires) = sync::restored_binding(home_addr, &entry);
            if !self.ha.restore(now, binding, expires) {
                info!(home = %home_addr, "stale binding removed from the dataplane");
                if let Err(e) = dp.dp.remove_binding(home_addr) {
                    warn!(home = %home_addr, error = %error_chain(&e), "removing stale binding");
                }
            }
        }
        let config = HaDataplaneConfig {
            home_agent: self.ha.config().address.octets(),
            enabled: 1,
            udp_port: self.port.to_be_bytes(),
            ..HaDataplaneConfig::default()
        };
        if let Err(e) = dp.dp.set_ha_config(config) {
            error!(error = %error_chain(&e), "cannot enable the home agent fast path");
        }
        dp.ha_config = Some(config);
    }

    fn datagram(&mut self, from: SocketAddrV4, ifindex: u32, len: usize) {
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
        let now = self.clock.now();
        let to = self.ha.config().address;
        self.ha.handle_datagram(now, from, to, &self.buf[..len]);
    }
}
