//! What every role's shell shares (DESIGN.md §5): one `select!` loop over the shell's own
//! inputs, one timer from the cores' `poll_timeout()`, the control API, the fast path's
//! next-hop epoch and the signals. After each input the shell drains what its cores queued
//! (`poll_transmit`, `poll_event`) in [`Shell::flush`]. A shell decides nothing itself.

use std::io;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::api::{self, DaemonStats, Request, Response};
use crate::config::{DataplaneSettings, Role};
use crate::dataplane::setup::{Dp, setup_dataplane};
use crate::error_chain;
use crate::net::clock::Clock;
use crate::proto::Now;

/// One role's shell, as the driver runs it.
pub(crate) trait Shell {
    /// What the shell's own sources produce (datagrams, frames, netlink, VPN reports).
    type Input;

    fn clock(&self) -> Clock;
    fn stats(&mut self) -> &mut DaemonStats;
    /// The next input. Cancel-safe: it is raced against the driver's sources every turn.
    async fn input(&mut self) -> Self::Input;
    async fn handle(&mut self, input: Self::Input);
    /// The earliest deadline of the shell's cores, as time since start.
    fn poll_timeout(&self) -> Option<Duration>;
    fn handle_timeout(&mut self, now: Now);
    fn api(&mut self, req: Request) -> Response;
    /// Sends what the cores queued and applies their events.
    async fn flush(&mut self);
    /// Whether the fast path caches FIB answers that the driver must renew every
    /// `NEXTHOP_EPOCH_MS` (see dataplane-ebpf/src/nexthop.rs).
    fn has_epoch(&self) -> bool {
        false
    }
    fn advance_epoch(&mut self) {}
    /// After SIGINT or SIGTERM.
    async fn shutdown(&mut self) {}
}

/// The next message of an optional source; never, without one (for `select!`).
pub(crate) async fn recv<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A request from an API connection and where its answer goes.
type ApiCall = (Request, oneshot::Sender<Response>);

/// Runs `shell` until SIGINT or SIGTERM, serving the control API at `api_socket`.
pub(crate) async fn run<S: Shell>(shell: &mut S, api_socket: &Path) -> io::Result<()> {
    let listener = bind_api(api_socket)?;
    info!(path = %api_socket.display(), "control API listening");
    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(64);
    let mut epoch_tick =
        tokio::time::interval(Duration::from_millis(mipx_common::maps::NEXTHOP_EPOCH_MS));
    epoch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        let deadline = shell.clock().deadline(shell.poll_timeout());
        tokio::select! {
            input = shell.input() => shell.handle(input).await,
            _ = tokio::time::sleep_until(deadline) => {
                let now = shell.clock().now();
                shell.handle_timeout(now);
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(serve_api(stream, api_tx.clone())); }
                Err(e) => warn!(error = %e, "API accept failed"),
            },
            Some((req, reply)) = api_rx.recv() => {
                shell.stats().api_requests += 1;
                let _ = reply.send(shell.api(req));
            }
            _ = epoch_tick.tick(), if shell.has_epoch() => shell.advance_epoch(),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        shell.flush().await;
    }
    info!("shutting down");
    shell.shutdown().await;
    let _ = std::fs::remove_file(api_socket);
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

/// Sends one datagram on a shell's Mobile IP socket, counting the outcome. Without waiting
/// unless the socket's buffer is full: a burst of replies goes out in the order it was queued.
pub(crate) async fn send_datagram(
    socket: &UdpSocket,
    stats: &mut DaemonStats,
    dst: SocketAddrV4,
    payload: &[u8],
) {
    let sent = match socket.try_send_to(payload, dst.into()) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(payload, dst).await,
        r => r,
    };
    match sent {
        Ok(_) => stats.datagrams_sent += 1,
        Err(e) => {
            stats.send_errors += 1;
            debug!(%dst, error = %e, "send failed");
        }
    }
}

/// The role's dataplane from `[dataplane]`, or `None` (logged with what is then missing).
pub(crate) fn load_dataplane(
    settings: Option<&DataplaneSettings>,
    role: Role,
    without: &str,
) -> io::Result<Option<Dp>> {
    match settings {
        Some(s) => setup_dataplane(s, role).map(Some).map_err(|e| {
            io::Error::other(format!(
                "dataplane (pinned under {}): {}",
                s.pin_dir.display(),
                error_chain(&e)
            ))
        }),
        None => {
            warn!("no [dataplane] table: {without}");
            Ok(None)
        }
    }
}

/// `mipctl status`: what every role reports; the shell fills in its own part.
pub(crate) fn status(role: &str, clock: Clock) -> api::Status {
    api::Status {
        role: role.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: clock.uptime().as_secs(),
        ha: None,
        mn: None,
        interfaces: None,
        vpn: None,
    }
}

/// `mipctl stats`: the daemon's and the dataplane's counters; the shell adds its cores'.
pub(crate) fn stats(daemon: &DaemonStats, dataplane: Option<&Dp>) -> api::Stats {
    api::Stats {
        ha: None,
        mn: None,
        fa: None,
        daemon: daemon.clone(),
        dataplane: dataplane.and_then(Dp::counters),
    }
}

/// `mipctl dataplane`.
pub(crate) fn dataplane_info(dp: Option<&Dp>) -> Response {
    match dp {
        Some(dp) => Response::Dataplane(dp.dp.info()),
        None => Response::Error {
            message: "no dataplane: the configuration has no [dataplane] table".into(),
        },
    }
}
