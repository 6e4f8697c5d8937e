//! The tokio shell around the sans-IO cores (DESIGN.md §5): one `select!` loop over the Mobile
//! IP socket, one timer from `poll_timeout()`, the API listener and signals. After each input it
//! drains `poll_transmit` and `poll_event`. It decides nothing itself.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::api::{self, BindingInfo, DaemonStats, Request, Response};
use crate::config::{Config, HaSettings, MnSettings, Role};
use crate::proto::ha::{HaEvent, HomeAgent};
use crate::proto::mn::{MnEvent, MnState, MobileNode};
use crate::proto::{Now, Transmit};
use mipx_common::wire::RequestFlags;

/// The protocol core this daemon drives.
enum Core {
    Ha {
        ha: HomeAgent,
        port: u16,
    },
    Mn {
        mn: MobileNode,
        settings: MnSettings,
    },
}

struct Daemon {
    core: Core,
    socket: UdpSocket,
    start: Instant,
    stats: DaemonStats,
}

type ApiCall = (Request, oneshot::Sender<Response>);

/// Runs `mipd` until SIGINT or SIGTERM.
pub async fn run(config: Config) -> io::Result<()> {
    let (core, bind) = match (config.role, config.ha, config.mn) {
        (Role::Ha, Some(HaSettings { core, port }), _) => {
            let bind = SocketAddrV4::new(core.address, port);
            (
                Core::Ha {
                    ha: HomeAgent::new(core),
                    port,
                },
                bind,
            )
        }
        (Role::Mn, _, Some(settings)) => {
            let mn = MobileNode::new(settings.core.clone());
            (
                Core::Mn { mn, settings },
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            )
        }
        _ => {
            return Err(io::Error::other(
                "configuration has no settings for its role",
            ));
        }
    };
    let socket = UdpSocket::bind(bind).await?;
    info!(local = %socket.local_addr()?, "Mobile IP socket bound");
    let listener = bind_api(&config.api_socket)?;
    info!(path = %config.api_socket.display(), "control API listening");

    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    let mut d = Daemon {
        core,
        socket,
        start: Instant::now(),
        stats: DaemonStats::default(),
    };
    d.startup();
    d.flush().await;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let deadline = d.deadline();
        tokio::select! {
            r = d.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    d.datagram(from, &buf[..n]);
                    // Drain what else is queued before going back to select!: under load this
                    // batches the socket work and keeps replies in arrival order.
                    for _ in 0..256 {
                        match d.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => d.datagram(from, &buf[..n]),
                            Err(_) => break,
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
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve_api(stream, api_tx.clone())); }
                Err(e) => warn!(error = %e, "API accept failed"),
            },
            Some((req, reply)) = api_rx.recv() => {
                d.stats.api_requests += 1;
                let _ = reply.send(d.api(req));
            }
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

fn bind_api(path: &Path) -> io::Result<UnixListener> {
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

async fn serve_api(stream: UnixStream, tx: mpsc::Sender<ApiCall>) {
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
        Now {
            mono: self.start.elapsed(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        let next = match &self.core {
            Core::Ha { ha, .. } => ha.poll_timeout(),
            Core::Mn { mn, .. } => mn.poll_timeout(),
        };
        // Without a timer, wake up rarely; nothing is due.
        let at = next.map_or(self.start.elapsed() + Duration::from_secs(3600), |t| {
            t.max(self.start.elapsed())
        });
        tokio::time::Instant::from_std(self.start + at)
    }

    fn startup(&mut self) {
        let now = self.now();
        if let Core::Mn { mn, settings } = &mut self.core
            && let Some(coa) = settings.care_of_addr
        {
            mn.register(now, coa);
        }
    }

    fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_received += 1;
        let SocketAddr::V4(from) = from else { return };
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
        loop {
            let t = match &mut self.core {
                Core::Ha { ha, .. } => ha.poll_transmit(),
                Core::Mn { mn, settings } => mn.poll_transmit().map(|mut t| {
                    t.dst.set_port(settings.ha_port);
                    t
                }),
            };
            let Some(Transmit { dst, payload, .. }) = t else {
                break;
            };
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
                while let Some(e) = ha.poll_event() {
                    // The dataplane mirror of bindings arrives with the XDP fast path; the
                    // binding cache is the source of truth and the core already logged.
                    if let HaEvent::BindingRemoved { binding, reason } = &e {
                        debug!(home = %binding.home_addr, ?reason, "binding removed");
                    }
                }
            }
            Core::Mn { mn, .. } => {
                while let Some(e) = mn.poll_event() {
                    match e {
                        MnEvent::Registered {
                            care_of_addr,
                            lifetime,
                            code,
                        } => {
                            info!(coa = %care_of_addr, lifetime, %code, "registration accepted")
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
                        })
                    }
                    Core::Ha { .. } => None,
                },
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
            (Request::Stats, core) => Response::Stats(api::Stats {
                ha: match core {
                    Core::Ha { ha, .. } => Some(ha.stats().clone()),
                    _ => None,
                },
                mn: match core {
                    Core::Mn { mn, .. } => Some(mn.stats().clone()),
                    _ => None,
                },
                daemon: self.stats.clone(),
            }),
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
            self.datagram(from, &buf[..n]);
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
