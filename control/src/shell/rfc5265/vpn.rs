//! The VPN layer of an RFC 5265 mobile node (§2.3; draft-ietf-mip4-mobike-connectivity §3):
//! a task that drives strongSwan's charon over VICI and reports what the IKE_SA looks like.
//!
//! mipd does not implement IKE. It loads one road-warrior connection (PSK, a virtual IP: the
//! tunnel inner address, TIA; MOBIKE, RFC 4555) and asks charon to bring it up or down; charon
//! does the rest, including the MOBIKE address updates when the node moves. The task follows
//! charon's SA events and reports a fresh [`VpnSnapshot`] after each, so the daemon learns the
//! TIA, the gateway's address and the CHILD_SA SPIs (for the plaintext gate) as they change. A
//! VPN that fails to come up, or drops, is retried with exponential back-off for as long as
//! the daemon wants it.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::VpnSettings;
use crate::error_chain;
use crate::net::vici::{IkeSa, RoadWarrior, Vici, VpnError};
use crate::net::xfrm;
use crate::proto::rfc5265::{
    EspSuite, IpsecBackend, VpnCommand, VpnSnapshot, ipsec_backend, xfrm_interface_mtu,
};

/// The connection's name in charon (IKE_SA and CHILD_SA).
pub const CONNECTION: &str = "mipx-vpn";

/// How long charon waits for the gateway to answer our IKE DELETE before it destroys the SA
/// anyway.
const TERMINATE_TIMEOUT_MS: u32 = 1000;

/// The IKE_SA as charon last described it.
fn snapshot_of(sa: Option<&IkeSa>) -> VpnSnapshot {
    let Some(sa) = sa else {
        return VpnSnapshot::default();
    };
    let spis = sa.spis();
    VpnSnapshot {
        // An IKE_SA being rekeyed still protects its CHILD_SAs (RFC 7296 §2.8).
        established: matches!(sa.state.as_str(), "ESTABLISHED" | "REKEYING") && !spis.is_empty(),
        local: IkeSa::host(&sa.local_host),
        gateway: IkeSa::host(&sa.remote_host),
        tia: sa.tunnel_inner_address(),
        spis,
        esp: sa
            .child_sas
            .values()
            .filter(|c| matches!(c.state.as_str(), "INSTALLED" | "UPDATING" | "REKEYING"))
            .find_map(|c| {
                Some(EspSuite {
                    encr: c.encr_alg.clone()?,
                    integ: c.integ_alg.clone(),
                    udp: c.encap.as_deref() == Some("yes"),
                })
            }),
    }
}

/// What the task tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpnReport {
    /// Connected to charon; `libipsec`: it runs IPsec in user space (kernel-libipsec, a TUN
    /// device) rather than in the kernel's XFRM.
    Ready {
        libipsec: bool,
    },
    State(VpnSnapshot),
    /// Bringing the VPN up failed; the next attempt is in `retry_in`.
    Failed {
        error: String,
        retry_in: Duration,
    },
}

/// Starts the task. `remote_ts`: what the CHILD_SA must cover (the i-HA; RFC 5265 §4.2: the
/// gateway need only pass Mobile IP to it). `local_addr`: a fixed IKE address (mode cvc, the
/// x-HoA), or `None` to let charon pick and MOBIKE move it (mode mc). `path_mtu`: what the ESP
/// packets must fit (`esp_path_mtu`), for the kernel backend's XFRM interface, made for the
/// worst suite until the shell knows the CHILD_SA's.
pub fn spawn(
    settings: VpnSettings,
    remote_ts: Vec<String>,
    local_addr: Option<Ipv4Addr>,
    path_mtu: u32,
) -> (mpsc::Sender<VpnCommand>, mpsc::Receiver<VpnReport>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (report_tx, report_rx) = mpsc::channel(64);
    let conn = RoadWarrior {
        name: CONNECTION.into(),
        local_addr,
        gateway: settings.gateway,
        local_id: settings.local_id.clone(),
        remote_id: settings.remote_id.clone(),
        remote_ts,
        dpd_secs: settings.dpd_secs,
        if_id: None,
    };
    tokio::spawn(async move {
        let mut driver = Driver {
            settings,
            conn,
            reports: report_tx,
            want: VpnCommand::Down,
            backoff: Duration::ZERO,
            retry_at: None,
            last: VpnSnapshot::default(),
            path_mtu,
        };
        driver.run(cmd_rx).await;
    });
    (cmd_tx, report_rx)
}

struct Driver {
    settings: VpnSettings,
    conn: RoadWarrior,
    reports: mpsc::Sender<VpnReport>,
    want: VpnCommand,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// The IKE_SA as last read.
    last: VpnSnapshot,
    path_mtu: u32,
}

impl Driver {
    /// Connects to charon (retrying until it is there), then serves commands and events until
    /// the daemon goes away; a lost VICI session starts over.
    async fn run(&mut self, mut commands: mpsc::Receiver<VpnCommand>) {
        loop {
            let (mut vici, events) = match self.connect().await {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %error_chain(&e), "cannot set up the VPN connection in charon; retrying");
                    // Charon runs another IPsec than configured: no retry will change that
                    // by itself, so `mipctl status` says why the VPN stays down.
                    if let VpnError::Backend(reason) = &e {
                        let _ = self
                            .reports
                            .send(VpnReport::Failed {
                                error: reason.clone(),
                                retry_in: self.settings.retry_initial,
                            })
                            .await;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.retry_initial) => continue,
                        c = commands.recv() => match c {
                            Some(c) => { self.want = c; continue }
                            None => return,
                        },
                    }
                }
            };
            let mut events = std::pin::pin!(events);
            // The state as it is now (an SA may survive a restart of mipd).
            if self.refresh(&mut vici).await.is_err() {
                continue;
            }
            if self.want == VpnCommand::Up && self.retry_at.is_none() {
                self.retry_at = Some(Instant::now());
            }
            // An initiation in progress, on a VICI session of its own: charon answers
            // `initiate` only when the SAs are up or the attempt failed (seconds when the
            // gateway is unreachable), and a Down that comes meanwhile must terminate the
            // half-open IKE_SA at once, not after the attempt, when the node may be elsewhere.
            let mut initiating: Option<(Instant, JoinHandle<Result<(), VpnError>>)> = None;
            // A termination in progress, likewise: charon waits for the gateway's answer to
            // the DELETE, which in mode cvc never comes once the x-HA's tunnel is gone.
            let mut terminating: Option<JoinHandle<Result<(), VpnError>>> = None;
            loop {
                let retry = self
                    .retry_at
                    .filter(|_| initiating.is_none() && terminating.is_none());
                tokio::select! {
                    c = commands.recv() => {
                        let Some(mut c) = c else { return };
                        // Only the latest wish counts (the node may have moved twice).
                        while let Ok(next) = commands.try_recv() {
                            c = next;
                        }
                        if c != self.want {
                            info!(want = ?c, "VPN");
                            self.want = c;
                            self.backoff = Duration::ZERO;
                            match c {
                                VpnCommand::Up => self.retry_at = Some(Instant::now()),
                                VpnCommand::Down => {
                                    self.retry_at = None;
                                    // It also ends an initiation in progress.
                                    if terminating.is_none() {
                                        let socket = self.settings.vici_socket.clone();
                                        terminating = Some(tokio::spawn(async move {
                                            Vici::connect(&socket).await?.terminate(CONNECTION, TERMINATE_TIMEOUT_MS).await
                                        }));
                                    }
                                }
                            }
                        }
                    }
                    e = events.next() => match e {
                        Some(Ok(())) => {
                            // Coalesce a burst (an IKE_SA and its CHILD_SA come up together).
                            while let Ok(Some(Ok(()))) = tokio::time::timeout(Duration::from_millis(2), events.next()).await {}
                            match self.refresh(&mut vici).await {
                                Ok(s) if !s.established && self.want == VpnCommand::Up && self.retry_at.is_none() && initiating.is_none() => {
                                    warn!("the VPN went down; bringing it up again");
                                    self.retry_at = Some(Instant::now() + self.backoff);
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        _ => {
                            warn!("lost charon's event stream; reconnecting");
                            break;
                        }
                    },
                    _ = sleep_until(retry) => {
                        self.retry_at = None;
                        if self.want == VpnCommand::Up {
                            let socket = self.settings.vici_socket.clone();
                            let timeout_ms = self.settings.initiate_timeout_ms;
                            initiating = Some((Instant::now(), tokio::spawn(async move {
                                Vici::connect(&socket).await?.initiate(CONNECTION, timeout_ms).await
                            })));
                        }
                    }
                    outcome = async { (&mut initiating.as_mut().expect("guarded").1).await }, if initiating.is_some() => {
                        let started = initiating.take().expect("guarded").0;
                        let outcome = outcome.unwrap_or_else(|e| Err(VpnError::Failed { command: "initiate", message: e.to_string() }));
                        if self.initiated(&mut vici, started, outcome).await.is_err() { break }
                        // A Down while the attempt ran may have found no SA to terminate yet
                        // (charon names the IKE_SA only once it exists); whatever the attempt
                        // left up goes now.
                        if self.want == VpnCommand::Down
                            && terminating.is_none()
                            && (self.last.established || self.last.gateway.is_some())
                        {
                            let socket = self.settings.vici_socket.clone();
                            terminating = Some(tokio::spawn(async move {
                                Vici::connect(&socket).await?.terminate(CONNECTION, TERMINATE_TIMEOUT_MS).await
                            }));
                        }
                    }
                    outcome = async { terminating.as_mut().expect("guarded").await }, if terminating.is_some() => {
                        terminating = None;
                        if let Ok(Err(e)) = outcome {
                            debug!(error = %error_chain(&e), "terminate");
                        }
                        if self.refresh(&mut vici).await.is_err() { break }
                    }
                }
            }
            if let Some((_, task)) = initiating {
                task.abort();
            }
            if let Some(task) = terminating {
                task.abort();
            }
            tokio::time::sleep(self.settings.retry_initial).await;
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<
        (
            Vici,
            impl futures_util::Stream<Item = Result<(), VpnError>> + use<>,
        ),
        VpnError,
    > {
        let mut vici = Vici::connect(&self.settings.vici_socket).await?;
        let libipsec = vici.uses_libipsec().await?;
        let backend = ipsec_backend(self.settings.ipsec, libipsec).map_err(VpnError::Backend)?;
        // With the kernel's ESP the VPN's device is an XFRM interface of ours, and the
        // CHILD_SA is bound to it (if_id): its policies then match only what is routed into
        // the interface, so nothing else on the host is captured by the VPN, and what the
        // kernel decrypts for it arrives there, where the tunnel programs run.
        self.conn.if_id = match backend {
            IpsecBackend::Kernel => {
                let mtu = xfrm_interface_mtu(self.path_mtu, None);
                let ifindex = self.xfrm_interface(mtu).await.map_err(|e| {
                    VpnError::Backend(format!(
                        "cannot create the XFRM interface {} (if_id {}): {}",
                        self.settings.device, self.settings.if_id, e
                    ))
                })?;
                info!(device = %self.settings.device, ifindex, if_id = self.settings.if_id, mtu, "XFRM interface for the VPN");
                Some(self.settings.if_id)
            }
            IpsecBackend::Libipsec => None,
        };
        vici.load_psk(
            &[&self.settings.local_id, &self.settings.remote_id],
            &self.settings.psk,
        )
        .await?;
        vici.load_road_warrior(&self.conn).await?;
        info!(
            socket = %self.settings.vici_socket.display(),
            gateway = %self.settings.gateway,
            ipsec = if libipsec { "kernel-libipsec (user space, TUN device)" } else { "kernel XFRM" },
            "VPN connection loaded into charon"
        );
        let _ = self.reports.send(VpnReport::Ready { libipsec }).await;
        let events = Vici::connect(&self.settings.vici_socket)
            .await?
            .sa_changes();
        Ok((vici, events))
    }

    /// Creates (or keeps) the VPN's XFRM interface, up with `mtu`.
    async fn xfrm_interface(&self, mtu: u32) -> Result<u32, String> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening rtnetlink: {e}"))?;
        let conn = tokio::spawn(conn);
        // No underlying device: the ESP packets are routed like any other, so they follow the
        // node from one access interface to the next (MOBIKE, RFC 4555).
        let result =
            xfrm::ensure_interface(&handle, &self.settings.device, 0, self.settings.if_id, mtu)
                .await
                .map_err(|e| error_chain(&e));
        conn.abort();
        result
    }

    /// Reads the IKE_SA and reports it.
    async fn refresh(&mut self, vici: &mut Vici) -> Result<VpnSnapshot, VpnError> {
        let sa = vici.ike_sa(CONNECTION).await.inspect_err(|e| {
            warn!(error = %error_chain(e), "cannot read the VPN's state from charon");
        })?;
        let snapshot = snapshot_of(sa.as_ref());
        if snapshot.established {
            self.backoff = Duration::ZERO;
        }
        self.last = snapshot.clone();
        let _ = self.reports.send(VpnReport::State(snapshot.clone())).await;
        Ok(snapshot)
    }

    /// The end of one attempt to bring the VPN up; on failure, while the VPN is still wanted,
    /// the next one is scheduled with back-off.
    async fn initiated(
        &mut self,
        vici: &mut Vici,
        started: Instant,
        outcome: Result<(), VpnError>,
    ) -> Result<(), VpnError> {
        let snapshot = self.refresh(vici).await?;
        if self.want != VpnCommand::Up {
            // Terminated meanwhile: the attempt's failure is what we asked for.
            return Ok(());
        }
        match outcome {
            Ok(()) if snapshot.established => {
                info!(
                    tia = ?snapshot.tia,
                    local = ?snapshot.local,
                    gateway = ?snapshot.gateway,
                    ms = started.elapsed().as_millis() as u64,
                    "VPN up"
                );
            }
            _ if snapshot.established => {}
            result => {
                let error = match result {
                    Err(e) => error_chain(&e),
                    Ok(()) => "no CHILD_SA installed".into(),
                };
                self.backoff = if self.backoff.is_zero() {
                    self.settings.retry_initial
                } else {
                    (self.backoff * 2).min(self.settings.retry_max)
                };
                warn!(%error, retry_in_ms = self.backoff.as_millis() as u64, "the VPN did not come up");
                // An Up that came during the attempt (after a Down) has already asked for an
                // immediate one.
                if self.retry_at.is_none() {
                    self.retry_at = Some(Instant::now() + self.backoff);
                }
                let _ = self
                    .reports
                    .send(VpnReport::Failed {
                        error,
                        retry_in: self.backoff,
                    })
                    .await;
            }
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::net::vici::ChildSa;

    /// Established means an ESTABLISHED IKE_SA with an installed CHILD_SA: an IKE_SA whose
    /// CHILD_SA failed carries no data, and the daemon must not register a TIA through it.
    #[test]
    fn established_needs_an_installed_child() {
        let mut sa = IkeSa {
            state: "ESTABLISHED".into(),
            local_host: Some("192.0.2.50".into()),
            remote_host: Some("192.0.2.10".into()),
            local_vips: vec!["10.40.0.3".into()],
            child_sas: BTreeMap::new(),
        };
        assert!(!snapshot_of(Some(&sa)).established);
        sa.child_sas.insert(
            "mipx-vpn-1".into(),
            ChildSa {
                state: "INSTALLED".into(),
                spi_in: Some("c1a2b3c4".into()),
                spi_out: Some("d1a2b3c4".into()),
                encr_alg: Some("AES_GCM_16".into()),
                integ_alg: None,
                encap: Some("yes".into()),
            },
        );
        let s = snapshot_of(Some(&sa));
        assert!(s.established);
        assert_eq!(
            s.esp,
            Some(EspSuite {
                encr: "AES_GCM_16".into(),
                integ: None,
                udp: true
            })
        );
        assert_eq!(s.tia, Some(Ipv4Addr::new(10, 40, 0, 3)));
        assert_eq!(s.local, Some(Ipv4Addr::new(192, 0, 2, 50)));
        assert_eq!(s.spis.len(), 2);
        sa.state = "CONNECTING".into();
        assert!(!snapshot_of(Some(&sa)).established);
        assert_eq!(snapshot_of(None), VpnSnapshot::default());
    }
}
