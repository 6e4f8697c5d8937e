//! The mobile node's registration engine (RFC 5944 §3.6), sans-IO: register a co-located
//! care-of address, retransmit with back-off (§3.6.3), re-register before the lifetime ends
//! (§3.6.2.2), resynchronise the timestamp clock on code 133 (§3.6.2.3, §5.7.1), deregister.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{
    Extension, MIP_PORT, ReplyCode, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket,
    RequestRepr,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{Now, Transmit, ntp_timestamp, signed_message};
use crate::auth::{self, SecurityAssociation};

/// Mobile node configuration.
#[derive(Clone, Debug)]
pub struct MnConfig {
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub sa: SecurityAssociation,
    /// Requested lifetime, seconds.
    pub lifetime: u16,
    /// Ask for reverse tunnelling (RFC 3024 'T').
    pub reverse_tunnel: bool,
    /// First retransmission timeout; §3.6.3 says never below 1 s.
    pub initial_retransmit: Duration,
    /// Cap of the doubling back-off (§3.6.3 also caps it at the requested lifetime).
    pub max_retransmit: Duration,
    /// Attempts after which a `RegistrationTimeout` event is reported (retries continue).
    pub report_after_attempts: u32,
    /// Optional NAI (RFC 2794), sent before the authentication extension.
    pub nai: Option<String>,
}

/// Outcomes, for the shell to report and act on (routes, dataplane).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MnEvent {
    Registered {
        care_of_addr: Ipv4Addr,
        lifetime: u16,
        code: ReplyCode,
    },
    Deregistered,
    Denied {
        code: ReplyCode,
    },
    /// Code 133 moved our idea of the home agent's clock by `offset_ms` (§5.7.1).
    Resynchronised {
        offset_ms: i64,
    },
    /// No valid reply after this many attempts; retransmission continues.
    RegistrationTimeout {
        attempts: u32,
    },
    /// The registration lifetime ran out before a renewal succeeded.
    Expired,
}

/// What the mobile node is doing, for `mipctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MnState {
    Idle,
    Registering,
    Registered,
    Deregistering,
}

/// Counters for `mipctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MnStats {
    pub requests_sent: u64,
    pub retransmissions: u64,
    pub accepted: u64,
    pub denied: u64,
    pub resynchronisations: u64,
    /// Replies silently discarded: malformed, wrong identification, or failed authentication.
    pub dropped_replies: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    care_of_addr: Ipv4Addr,
    /// Lifetime asked for; 0 deregisters.
    lifetime: u16,
    identification: u64,
    sent_at: Duration,
    attempts: u32,
    timeout: Duration,
    resynced: bool,
}

#[derive(Clone, Debug)]
struct Active {
    care_of_addr: Ipv4Addr,
    lifetime: u16,
    expires_at: Duration,
    renew_at: Duration,
}

/// The mobile node.
#[derive(Debug)]
pub struct MobileNode {
    config: MnConfig,
    /// Where registration requests go (the HA's address, port 434).
    peer: SocketAddrV4,
    pending: Option<Pending>,
    active: Option<Active>,
    /// Our estimate of (HA clock - our clock), nanoseconds, learned from code 133.
    clock_offset_ns: i64,
    last_identification: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MnEvent>,
    stats: MnStats,
}

impl MobileNode {
    pub fn new(config: MnConfig) -> Self {
        let peer = SocketAddrV4::new(config.home_agent, MIP_PORT);
        MobileNode {
            config,
            peer,
            pending: None,
            active: None,
            clock_offset_ns: 0,
            last_identification: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: MnStats::default(),
        }
    }

    pub fn config(&self) -> &MnConfig {
        &self.config
    }

    pub fn stats(&self) -> &MnStats {
        &self.stats
    }

    pub fn state(&self) -> MnState {
        match (&self.pending, &self.active) {
            (Some(p), _) if p.lifetime == 0 => MnState::Deregistering,
            (_, Some(_)) => MnState::Registered,
            (Some(_), None) => MnState::Registering,
            (None, None) => MnState::Idle,
        }
    }

    /// The registered care-of address and the time left, if registered.
    pub fn registration(&self, now: Now) -> Option<(Ipv4Addr, Duration)> {
        self.active
            .as_ref()
            .map(|a| (a.care_of_addr, a.expires_at.saturating_sub(now.mono)))
    }

    /// Registers `care_of_addr` (a co-located care-of address, so 'D' is set) with the home
    /// agent. Registering the home address itself deregisters (§3.6.1.2).
    pub fn register(&mut self, now: Now, care_of_addr: Ipv4Addr) {
        let lifetime = if care_of_addr == self.config.home_addr {
            0
        } else {
            self.config.lifetime
        };
        self.start(now, care_of_addr, lifetime);
    }

    /// Deregisters: lifetime 0 for the current care-of address, or from home if none.
    pub fn deregister(&mut self, now: Now) {
        let coa = self
            .active
            .as_ref()
            .map_or(self.config.home_addr, |a| a.care_of_addr);
        self.start(now, coa, 0);
    }

    fn start(&mut self, now: Now, care_of_addr: Ipv4Addr, lifetime: u16) {
        let timeout = self.config.initial_retransmit.max(Duration::from_secs(1));
        self.pending = Some(Pending {
            care_of_addr,
            lifetime,
            identification: 0,
            sent_at: now.mono,
            attempts: 0,
            timeout,
            resynced: false,
        });
        self.send(now);
    }

    /// The next Identification: an NTP timestamp on the (resynchronised) clock, strictly
    /// greater than every one sent before (§5.7.1: the HA uses it as a sequence number).
    fn next_identification(&mut self, now: Now) -> u64 {
        let unix = if self.clock_offset_ns >= 0 {
            now.unix + Duration::from_nanos(self.clock_offset_ns as u64)
        } else {
            now.unix
                .saturating_sub(Duration::from_nanos(self.clock_offset_ns.unsigned_abs()))
        };
        let id = ntp_timestamp(unix).max(self.last_identification + 1);
        self.last_identification = id;
        id
    }

    /// (Re)sends the pending request; with timestamps every transmission is a new request
    /// with a new Identification (§3.6.3).
    fn send(&mut self, now: Now) {
        let identification = self.next_identification(now);
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.identification = identification;
        p.sent_at = now.mono;
        p.attempts += 1;
        let mut flags = RequestFlags::default().with(RequestFlags::D, true);
        flags = flags.with(
            RequestFlags::T,
            self.config.reverse_tunnel && p.lifetime != 0,
        );
        let req = RequestRepr {
            flags,
            lifetime: p.lifetime,
            home_addr: self.config.home_addr,
            home_agent: self.config.home_agent,
            care_of_addr: p.care_of_addr,
            identification,
        };
        let mut fixed = [0u8; RequestRepr::LEN];
        // The buffer is exactly LEN bytes.
        let _ = req.emit(&mut RequestPacket::new_unchecked(&mut fixed[..]));
        let nai = self
            .config
            .nai
            .as_deref()
            .map(|n| Extension::MnNai(n.as_bytes()));
        let extensions: Vec<Extension<'_>> = nai.into_iter().collect();
        let payload = signed_message(&fixed, &extensions, self.config.sa.spi, &self.config.sa.key);
        self.stats.requests_sent += 1;
        if p.attempts > 1 {
            self.stats.retransmissions += 1;
        }
        debug!(coa = %p.care_of_addr, lifetime = p.lifetime, attempt = p.attempts, "registration request sent");
        self.transmits.push_back(Transmit {
            src: Some(p.care_of_addr),
            dst: self.peer,
            payload,
        });
    }

    /// Processes a datagram from the Mobile IP socket.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddrV4, bytes: &[u8]) {
        match self.check_reply(from, bytes) {
            Some(reply) => self.accept_reply(now, reply),
            None => self.stats.dropped_replies += 1,
        }
    }

    /// §3.6.2.1: a reply counts only if it matches our latest request's low 32 bits of
    /// Identification and carries exactly one valid Mobile-Home Authentication Extension.
    fn check_reply(&self, from: SocketAddrV4, bytes: &[u8]) -> Option<ReplyRepr> {
        let pending = self.pending.as_ref()?;
        let packet = ReplyPacket::new_checked(bytes).ok()?;
        let reply = ReplyRepr::parse(&packet).ok()?;
        if reply.identification & 0xffff_ffff != pending.identification & 0xffff_ffff
            || reply.home_addr != self.config.home_addr
        {
            debug!(%from, "reply dropped: does not match the pending request");
            return None;
        }
        let mut auth = None;
        for item in packet.extensions() {
            match item {
                Ok((at, Extension::MnHaAuth(a))) => {
                    if auth.replace((at, a)).is_some() {
                        warn!(%from, "security exception: more than one MN-HA extension");
                        return None;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(%from, error = %e, "reply dropped: malformed extensions");
                    return None;
                }
            }
        }
        let (at, a) = auth?;
        if a.spi != self.config.sa.spi
            || !auth::verify(bytes, at, a.authenticator, &self.config.sa.key)
        {
            warn!(%from, "security exception: reply failed authentication");
            return None;
        }
        Some(reply)
    }

    fn accept_reply(&mut self, now: Now, reply: ReplyRepr) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        if reply.code == ReplyCode::HaIdentificationMismatch {
            // §5.7.1: the high 32 bits carry the home agent's time; adopt it and retry at
            // once, but only once per registration so a confused HA cannot make us spin.
            let ha_secs = (reply.identification >> 32) as i64;
            let our_secs = (ntp_timestamp(now.unix) >> 32) as i64;
            self.clock_offset_ns = (ha_secs - our_secs) * 1_000_000_000;
            self.stats.resynchronisations += 1;
            info!(
                offset_s = ha_secs - our_secs,
                "identification mismatch: clock resynchronised"
            );
            self.events.push_back(MnEvent::Resynchronised {
                offset_ms: (ha_secs - our_secs) * 1000,
            });
            if !p.resynced {
                if let Some(p) = self.pending.as_mut() {
                    p.resynced = true;
                }
                self.send(now);
            }
            return;
        }
        self.pending = None;
        if !reply.code.is_accepted() {
            self.stats.denied += 1;
            warn!(code = %reply.code, "registration denied");
            self.events.push_back(MnEvent::Denied { code: reply.code });
            return;
        }
        if p.lifetime == 0 {
            self.active = None;
            info!("deregistered");
            self.events.push_back(MnEvent::Deregistered);
            return;
        }
        // §3.4: never more than we asked for. §3.6.2.2: time the lifetime from when the
        // request was sent, so we renew before the home agent expires us.
        let lifetime = reply.lifetime.min(p.lifetime);
        let granted = Duration::from_secs(lifetime.into());
        let expires_at = p.sent_at + granted;
        // Renew at 3/4 of the lifetime, leaving room for at least a few retransmissions.
        let renew_at = p.sent_at + granted * 3 / 4;
        self.stats.accepted += 1;
        info!(coa = %p.care_of_addr, lifetime, "registered");
        self.active = Some(Active {
            care_of_addr: p.care_of_addr,
            lifetime,
            expires_at,
            renew_at,
        });
        self.events.push_back(MnEvent::Registered {
            care_of_addr: p.care_of_addr,
            lifetime,
            code: reply.code,
        });
    }

    pub fn handle_timeout(&mut self, now: Now) {
        if let Some(a) = &self.active
            && now.mono >= a.expires_at
        {
            warn!(coa = %a.care_of_addr, "registration expired");
            let coa = a.care_of_addr;
            self.active = None;
            self.events.push_back(MnEvent::Expired);
            if self.pending.is_none() {
                self.start(now, coa, self.config.lifetime);
            }
        }
        if let Some(p) = &self.pending {
            if now.mono >= p.sent_at + p.timeout {
                let cap = self
                    .config
                    .max_retransmit
                    .min(Duration::from_secs(u64::from(p.lifetime.max(1))))
                    .max(Duration::from_secs(1));
                let attempts = p.attempts;
                if let Some(p) = self.pending.as_mut() {
                    p.timeout = (p.timeout * 2).min(cap);
                }
                if attempts == self.config.report_after_attempts {
                    self.events
                        .push_back(MnEvent::RegistrationTimeout { attempts });
                }
                self.send(now);
            }
        } else if let Some(a) = &self.active
            && now.mono >= a.renew_at
        {
            let (coa, _) = (a.care_of_addr, a.lifetime);
            self.start(now, coa, self.config.lifetime);
        }
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        let retransmit = self.pending.as_ref().map(|p| p.sent_at + p.timeout);
        let active = self.active.as_ref().map(|a| {
            if self.pending.is_some() {
                a.expires_at
            } else {
                a.renew_at
            }
        });
        match (retransmit, active) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MnEvent> {
        self.events.pop_front()
    }
}
