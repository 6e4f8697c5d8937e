//! The mobile node's registration engine (RFC 5944 §3.6), sans-IO: register a co-located
//! care-of address, retransmit with back-off (§3.6.3), re-register before the lifetime ends
//! (§3.6.2.2), resynchronise the timestamp clock on code 133 (§3.6.2.3, §5.7.1), deregister.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{
    Extension, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, KeepaliveRepr, MIP_PORT, MessageType, ReplyCode,
    ReplyPacket, ReplyRepr, RequestFlags, RequestPacket, RequestRepr, UdpTunnelReply,
    UdpTunnelRequest,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::ext::signed_message;
use super::{Now, Transmit, ntp_timestamp};
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
    /// RFC 3519 NAT traversal.
    pub nat_traversal: NatTraversal,
    /// Re-register at least this often, whatever the lifetime: RFC 5265 §3.2.4's monitoring
    /// of the internal home agent (T_MONITOR − N). `None`: at 3/4 of the lifetime only.
    pub renew_every: Option<Duration>,
}

/// Whether and how the mobile node asks for RFC 3519 UDP tunnelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatTraversalMode {
    /// Never send the UDP Tunnel Request extension: IP-in-IP only.
    Off,
    /// Send it, so the home agent tunnels in UDP if it sees a NAT (§4.4).
    Auto,
    /// Send it with F set: UDP tunnelling even without a NAT, for paths that pass Mobile IP
    /// signalling but not IP-in-IP (a firewall, §3.1.1).
    Force,
}

/// RFC 3519 settings of the mobile node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTraversal {
    pub mode: NatTraversalMode,
    /// Keepalive interval K when the home agent's reply says 0 (§4.9: default 110 s).
    pub keepalive: Duration,
    /// How long to wait for the answer to a keepalive before sending it again.
    pub keepalive_timeout: Duration,
    /// Keepalives sent again without an answer before the NAT mapping is taken as lost and
    /// the mobile node re-registers (§4.10).
    pub keepalive_retries: u32,
}

impl Default for NatTraversal {
    fn default() -> Self {
        NatTraversal {
            mode: NatTraversalMode::Auto,
            keepalive: Duration::from_secs(110),
            keepalive_timeout: Duration::from_secs(2),
            keepalive_retries: 3,
        }
    }
}

/// Outcomes, for the shell to report and act on (routes, dataplane).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MnEvent {
    Registered {
        care_of_addr: Ipv4Addr,
        lifetime: u16,
        code: ReplyCode,
        /// The home agent assented to RFC 3519 UDP tunnelling: both directions are IP-in-UDP
        /// on the registration's ports.
        udp_tunnel: bool,
        /// The reply carried the Trusted Networks Configured extension under its authenticator:
        /// an internal home agent that checked our source (RFC 5265 §3.4, §4.3).
        trusted: bool,
        /// When the accepted request was sent (monotonic): RFC 5265 §3.2.4 times T_MONITOR
        /// from the registration, and the request is its conservative start.
        requested_at: Duration,
    },
    /// RFC 3519 §4.10: keepalives went unanswered, so the NAT has probably dropped its
    /// mapping; a re-registration is under way.
    NatMappingLost,
    /// Deregistered (or registered from home, which is the same request, RFC 5944 §3.6.1.2).
    Deregistered {
        /// The reply carried Trusted Networks Configured (RFC 5265 §3.4): at home on an
        /// internal home agent's link, this proves "inside" as a registration does.
        trusted: bool,
        /// When the accepted request was sent (monotonic).
        requested_at: Duration,
    },
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
// Counters a `mipd` of another version does not report read as zero.
#[serde(default)]
pub struct MnStats {
    pub requests_sent: u64,
    pub retransmissions: u64,
    pub accepted: u64,
    pub denied: u64,
    pub resynchronisations: u64,
    /// Replies silently discarded: malformed, wrong identification, or failed authentication.
    pub dropped_replies: u64,
    /// RFC 3519 keepalives sent, answers received, and mappings found lost (§4.9-4.10).
    pub keepalives_sent: u64,
    pub keepalive_replies: u64,
    pub nat_mapping_losses: u64,
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
    udp: Option<UdpTunnel>,
}

/// Keepalive state of an RFC 3519 UDP tunnel (§4.9).
#[derive(Clone, Debug)]
struct UdpTunnel {
    /// K: the home agent's interval, or our default.
    keepalive: Duration,
    /// When the next keepalive is due (or, with one outstanding, when it is sent again).
    due: Duration,
    /// Sequence number of the keepalive awaiting an answer, and how often it was sent.
    outstanding: Option<(u16, u32)>,
    /// When the first copy of the current keepalive was sent: the next is due K after it.
    cycle_start: Duration,
}

/// ICMP identifier of our keepalives (any fixed value: the home agent echoes it).
const KEEPALIVE_ICMP_ID: u16 = 0x6d78;

/// A foreign agent the mobile node registers through (RFC 5944 §3.6.1.1): its address, from
/// the IP source of its Agent Advertisement, and its link-layer address, from that
/// advertisement's source, where the request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaAgent {
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
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
    keepalive_seq: u16,
    ip_id: u16,
    /// The foreign agent the current registration goes through; `None`: a co-located
    /// care-of address, registered directly.
    via: Option<ViaAgent>,
    /// Through `via`, but a co-located care-of address ('D', the agent requires registration,
    /// RFC 5944 §2.4.1), and whether the agent advertises 'U' (RFC 3519 §3.4).
    via_co_located: Option<bool>,
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
            keepalive_seq: 0,
            ip_id: 0,
            via: None,
            via_co_located: None,
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

    /// The keepalive interval of the RFC 3519 UDP tunnel, if the registration uses one.
    pub fn udp_tunnel(&self) -> Option<Duration> {
        self.active.as_ref()?.udp.as_ref().map(|u| u.keepalive)
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
        self.via = None;
        self.via_co_located = None;
        let lifetime = if care_of_addr == self.config.home_addr {
            0
        } else {
            self.config.lifetime
        };
        self.start(now, care_of_addr, lifetime);
    }

    /// Registers the foreign agent care-of address `care_of_addr` through `agent` ('D' clear):
    /// the request goes to the agent's address and link-layer address from our home address
    /// (RFC 5944 §3.6.1.1), and the agent relays it. Renewals and a deregistration go the same
    /// way until the next `register`.
    pub fn register_via(&mut self, now: Now, agent: ViaAgent, care_of_addr: Ipv4Addr) {
        self.via = Some(agent);
        self.via_co_located = None;
        self.start(now, care_of_addr, self.config.lifetime);
    }

    /// Registers the co-located care-of address `care_of_addr` ('D' set) through `agent`,
    /// because the agent requires registration (R, RFC 5944 §2.4.1, §3.6.1.1): from the
    /// care-of address to the agent, which relays it. We decapsulate and reverse-tunnel
    /// ourselves. With `agent_udp` (the agent advertises 'U': it is behind a NAT, RFC 3519
    /// §3.4) the request carries our UDP Tunnel Request with 'R' (§4.4, §4.11), and once it is
    /// accepted our first keepalive goes out at once: the home agent learns our own NAT
    /// mapping from it. Without 'U' no UDP Tunnel Request (§4.4: MUST NOT).
    pub fn register_co_located_via(
        &mut self,
        now: Now,
        agent: ViaAgent,
        care_of_addr: Ipv4Addr,
        agent_udp: bool,
    ) {
        self.via = Some(agent);
        self.via_co_located = Some(agent_udp);
        self.start(now, care_of_addr, self.config.lifetime);
    }

    /// Whether a foreign agent decapsulates for us (its care-of address is registered), so we
    /// tunnel nothing ourselves (RFC 5944 §4.2.2).
    pub fn agent_decapsulates(&self) -> bool {
        self.via.is_some() && self.via_co_located.is_none()
    }

    /// The foreign agent the current registration goes through.
    pub fn via(&self) -> Option<ViaAgent> {
        self.via
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

    /// Deregisters through `care_of_addr` (lifetime 0, RFC 5944 §3.6.1.2), whether or not a
    /// registration was accepted: the home agent may have bound one whose reply we never took.
    pub fn deregister_via(&mut self, now: Now, care_of_addr: Ipv4Addr) {
        self.start(now, care_of_addr, 0);
    }

    /// Stops retransmitting a pending registration, without deregistering or touching an
    /// accepted one (RFC 5265 §3.3: "the MN MUST stop retransmitting its registration requests
    /// to both i-HA and x-HA").
    pub fn cancel(&mut self) {
        self.pending = None;
    }

    /// Forgets the registration without telling the home agent: the interface it was made
    /// through changed, so it says nothing any more (RFC 5265 §3.2.2); the binding at the home
    /// agent runs out or is replaced by the next registration.
    pub fn forget(&mut self) {
        self.pending = None;
        self.active = None;
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
        // 'D': we decapsulate ourselves, unless a foreign agent does (§3.3).
        let agent_decapsulates = self.via.is_some() && self.via_co_located.is_none();
        let mut flags = RequestFlags::default().with(RequestFlags::D, !agent_decapsulates);
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
        // RFC 3519 §4.4: with a co-located care-of address the UDP Tunnel Request goes before
        // the Mobile-Home Authentication Extension. A deregistration sets up no tunnel.
        // With the agent's care-of address it "SHALL NOT be used" (the agent asks, §4.5); with
        // a co-located one through an agent, only if the agent advertises 'U', and then with
        // 'R' (§4.4, §4.11).
        let through_agent = self.via.is_some();
        let udp = match self.config.nat_traversal.mode {
            _ if through_agent && self.via_co_located != Some(true) => None,
            NatTraversalMode::Off => None,
            _ if p.lifetime == 0 => None,
            mode => Some(Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: mode == NatTraversalMode::Force,
                reg_through_fa: through_agent,
                // §4.1: IP-in-UDP, the one every implementation must support.
                encapsulation: mipx_common::ipv4::PROTO_IPIP,
            })),
        };
        let extensions: Vec<Extension<'_>> = udp.into_iter().chain(nai).collect();
        let payload = signed_message(&fixed, &extensions, self.config.sa.spi, &self.config.sa.key);
        self.stats.requests_sent += 1;
        if p.attempts > 1 {
            self.stats.retransmissions += 1;
        }
        debug!(coa = %p.care_of_addr, lifetime = p.lifetime, attempt = p.attempts, "registration request sent");
        // §3.6.1.1: from the care-of address when co-located, else from the home address to
        // the foreign agent.
        let (src, dst) = match self.via {
            Some(agent) => (
                if agent_decapsulates {
                    self.config.home_addr
                } else {
                    p.care_of_addr
                },
                SocketAddrV4::new(agent.addr, self.peer.port()),
            ),
            None => (p.care_of_addr, self.peer),
        };
        self.transmits.push_back(Transmit {
            src: Some(src),
            dst,
            payload,
        });
    }

    /// Processes a datagram from the Mobile IP socket.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddrV4, bytes: &[u8]) {
        if bytes.first().map(|&t| MessageType::from(t)) == Some(MessageType::TunnelData) {
            self.handle_keepalive_reply(from, bytes);
            return;
        }
        match self.check_reply(from, bytes) {
            Some((reply, udp, trusted)) => self.accept_reply(now, reply, udp, trusted),
            None => self.stats.dropped_replies += 1,
        }
    }

    /// The home agent's answer to our keepalive (RFC 3519 §4.9), which the dataplane passes
    /// up still encapsulated.
    fn handle_keepalive_reply(&mut self, from: SocketAddrV4, bytes: &[u8]) {
        let home_agent = self.config.home_agent;
        let home_addr = self.config.home_addr;
        let Some(udp) = self.active.as_mut().and_then(|a| a.udp.as_mut()) else {
            self.stats.dropped_replies += 1;
            return;
        };
        let answered = KeepaliveRepr::parse(bytes).is_ok_and(|echo| {
            from == self.peer
                && echo.icmp_type == ICMP_ECHO_REPLY
                && echo.src == home_agent
                && echo.dst == home_addr
                && udp.outstanding.map(|(seq, _)| (KEEPALIVE_ICMP_ID, seq)) == echo.id_seq()
        });
        if !answered {
            self.stats.dropped_replies += 1;
            debug!(%from, "keepalive answer dropped: not the one outstanding");
            return;
        }
        udp.outstanding = None;
        udp.due = udp.cycle_start + udp.keepalive;
        self.stats.keepalive_replies += 1;
    }

    /// §3.6.2.1: a reply counts only if it matches our latest request's low 32 bits of
    /// Identification and carries exactly one valid Mobile-Home Authentication Extension.
    fn check_reply(
        &self,
        from: SocketAddrV4,
        bytes: &[u8],
    ) -> Option<(ReplyRepr, Option<UdpTunnelReply>, bool)> {
        let pending = self.pending.as_ref()?;
        let packet = ReplyPacket::new_checked(bytes).ok()?;
        let reply = ReplyRepr::parse(&packet).ok()?;
        if reply.identification & 0xffff_ffff != pending.identification & 0xffff_ffff
            || reply.home_addr != self.config.home_addr
        {
            debug!(%from, "reply dropped: does not match the pending request");
            return None;
        }
        // §3.6.2.1 b: the Mobile-Home Authentication Extension is required when the code is
        // the home agent's; a foreign agent's denial (codes 64-127) comes without one.
        if let Some(agent) = self.via
            && *from.ip() == agent.addr
            && (64..128).contains(&u8::from(reply.code))
        {
            warn!(%from, code = %reply.code, "registration denied by the foreign agent");
            return Some((reply, None, false));
        }
        let mut auth = None;
        let mut udp = None;
        let mut trusted = false;
        for item in packet.extensions() {
            match item {
                Ok((at, Extension::MnHaAuth(a))) => {
                    if auth.replace((at, a)).is_some() {
                        warn!(%from, "security exception: more than one MN-HA extension");
                        return None;
                    }
                }
                // Only one the authenticator covers counts (RFC 5944 §3.6.1.3).
                Ok((_, Extension::UdpTunnelReply(r))) if auth.is_none() => udp = Some(r),
                Ok((_, Extension::TrustedNetworksConfigured)) if auth.is_none() => trusted = true,
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
        Some((reply, udp, trusted))
    }

    fn accept_reply(
        &mut self,
        now: Now,
        reply: ReplyRepr,
        udp_reply: Option<UdpTunnelReply>,
        trusted: bool,
    ) {
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
        if reply.code == ReplyCode::FaRegistrationTimeout {
            // RFC 5944 §3.7.1: the foreign agent stopped waiting for the home agent's reply
            // (after 7 s). That is no answer from the home agent: the request stays pending and
            // is retransmitted on schedule (§3.6.3), which the agent relays afresh. Ending it
            // here would leave nothing to retry once the retransmission interval outgrows the
            // agent's patience.
            info!("the foreign agent timed out waiting for the home agent: retrying");
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
            self.events.push_back(MnEvent::Deregistered {
                trusted,
                requested_at: p.sent_at,
            });
            return;
        }
        // §3.4: never more than we asked for. §3.6.2.2: time the lifetime from when the
        // request was sent, so we renew before the home agent expires us.
        let lifetime = reply.lifetime.min(p.lifetime);
        let granted = Duration::from_secs(lifetime.into());
        let expires_at = p.sent_at + granted;
        // Renew at 3/4 of the lifetime, leaving room for at least a few retransmissions, or
        // sooner when monitoring asks for it.
        let renew_at =
            p.sent_at + (granted * 3 / 4).min(self.config.renew_every.unwrap_or(Duration::MAX));
        self.stats.accepted += 1;
        // RFC 3519 §4.4: without a UDP Tunnel Reply the home agent does not know the extension
        // and UDP tunnelling MUST NOT be used; codes 64 and up decline (§3.2.1).
        let nat = &self.config.nat_traversal;
        let udp = udp_reply
            .filter(|r| nat.mode != NatTraversalMode::Off && r.reply_code < 64)
            .map(|r| {
                let keepalive = match r.keepalive_interval {
                    0 => nat.keepalive,
                    k => Duration::from_secs(k.into()),
                };
                // §4.9: the first keepalive at the earliest K seconds after the request; but
                // through an agent (R) at once (§4.4): the home agent's tunnel is half bound
                // until it learns our own NAT mapping from it (§4.11).
                let due = if self.via.is_some() {
                    now.mono
                } else {
                    p.sent_at + keepalive
                };
                UdpTunnel {
                    keepalive,
                    due,
                    outstanding: None,
                    cycle_start: p.sent_at,
                }
            });
        info!(coa = %p.care_of_addr, lifetime, udp_tunnel = udp.is_some(), keepalive_secs = udp.as_ref().map(|u| u.keepalive.as_secs()), "registered");
        let udp_tunnel = udp.is_some();
        self.active = Some(Active {
            care_of_addr: p.care_of_addr,
            lifetime,
            expires_at,
            renew_at,
            udp,
        });
        self.events.push_back(MnEvent::Registered {
            care_of_addr: p.care_of_addr,
            lifetime,
            code: reply.code,
            udp_tunnel,
            trusted,
            requested_at: p.sent_at,
        });
        self.keepalive(now);
    }

    /// Sends the keepalive that is due, again if unanswered, and re-registers when the NAT
    /// mapping looks lost (RFC 3519 §4.9-4.10).
    fn keepalive(&mut self, now: Now) {
        let (retries, timeout) = (
            self.config.nat_traversal.keepalive_retries,
            self.config.nat_traversal.keepalive_timeout,
        );
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let coa = active.care_of_addr;
        let Some(udp) = active.udp.as_mut() else {
            return;
        };
        if now.mono < udp.due {
            return;
        }
        let (seq, sent) = match udp.outstanding {
            Some((_, sent)) if sent > retries => {
                // Unanswered: the home agent keeps sending to a port the NAT has forgotten.
                // Re-register through the same socket, so the new mapping reaches it.
                warn!(coa = %coa, keepalives = sent, "keepalives unanswered: NAT mapping lost, re-registering");
                udp.outstanding = None;
                udp.due = now.mono + udp.keepalive;
                self.stats.nat_mapping_losses += 1;
                self.events.push_back(MnEvent::NatMappingLost);
                if self.pending.is_none() {
                    self.start(now, coa, self.config.lifetime);
                }
                return;
            }
            Some((seq, sent)) => (seq, sent + 1),
            None => {
                self.keepalive_seq = self.keepalive_seq.wrapping_add(1);
                udp.cycle_start = now.mono;
                (self.keepalive_seq, 1)
            }
        };
        udp.outstanding = Some((seq, sent));
        udp.due = now.mono + timeout;
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut echo = [0u8; 4];
        echo[..2].copy_from_slice(&KEEPALIVE_ICMP_ID.to_be_bytes());
        echo[2..].copy_from_slice(&seq.to_be_bytes());
        let keepalive = KeepaliveRepr {
            src: self.config.home_addr,
            dst: self.config.home_agent,
            ip_id: self.ip_id,
            icmp_type: ICMP_ECHO_REQUEST,
            echo: &echo,
        };
        let mut payload = vec![0u8; keepalive.buffer_len()];
        // The buffer is exactly the message's length.
        let _ = keepalive.emit(&mut payload);
        self.stats.keepalives_sent += 1;
        debug!(seq, attempt = sent, "keepalive sent");
        // §4.9: from the registration's source port, which the socket guarantees.
        self.transmits.push_back(Transmit {
            src: Some(coa),
            dst: self.peer,
            payload,
        });
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.keepalive(now);
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
        let keepalive = self
            .active
            .as_ref()
            .and_then(|a| a.udp.as_ref())
            .map(|u| u.due);
        let retransmit = self.pending.as_ref().map(|p| p.sent_at + p.timeout);
        let retransmit = match (retransmit, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
