//! RFC 5265 internal network detection and monitoring for one network interface, sans-IO
//! (§3.2, §3.3, §3.5): is this interface inside the intranet, so that plaintext Mobile IPv4 with
//! the internal home agent (i-HA) is safe, or outside, where user data must use the VPN?
//!
//! One [`Detector`] per interface (§3.2.1: "Successful registration with the i-HA through
//! interface X does not imply anything about the status of interface Y"). It drives two
//! registration engines, one per home agent, and decides:
//!
//! - On a connection status change the gate closes at once (§3.2.2) and both registrations
//!   start in parallel (§3.3).
//! - Inside only on an accepted i-HA reply that carries the Trusted Networks Configured
//!   extension (§3.2.3); then the x-HA registration is cancelled or deregistered.
//! - An x-HA reply first means outside, tentatively: i-HA retransmissions go on for the
//!   detection period, and an i-HA reply within it still switches to inside.
//! - Inside, the i-HA is re-registered every T_MONITOR − N; the gate stays open only until
//!   T_MONITOR after the last successful registration was sent (the eBPF gate enforces that
//!   deadline with the kernel clock), and when it passes detection starts again (§3.2.4).
//! - Equal i-HA and x-HA addresses: outside, without detection (§3.5).
//!
//! What the gate means in each state is in `mipx_common::maps::MnGate`; the shell writes it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::mn::{MnConfig, MnEvent, MobileNode, ViaAgent};
use super::{Now, Transmit};

/// RFC 5265 §3.2.4: "The T_MONITOR parameter MUST be configurable, and have the default value
/// of 60 seconds."
pub const DEFAULT_T_MONITOR: Duration = Duration::from_secs(60);

/// Settings of one interface's detection.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// Registration with the internal home agent (internal home address, its SA).
    pub internal: MnConfig,
    /// Registration with the external home agent (modes c/cvc); `None` in mode mc, where the
    /// VPN gateway's answer (IKE or a MOBIKE update, draft-ietf-mip4-mobike-connectivity §3.4)
    /// is the outside probe: the shell reports it with [`Detector::vpn_reachable`].
    pub external: Option<MnConfig>,
    /// After an x-HA reply, how long i-HA retransmissions continue before "outside" is final
    /// (§3.3; zero when the x-HA is known to be unreachable from inside).
    pub detection_period: Duration,
    /// §3.2.4: no user data more than this after the last successful i-HA registration.
    pub t_monitor: Duration,
    /// N: re-register every `t_monitor − grace`, so that a re-registration completes in time.
    pub grace: Duration,
}

/// Where the interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// No usable address (link down, or not configured yet).
    Down,
    Detecting,
    Inside,
    /// Outside; `tentative` while the detection period still allows an i-HA reply.
    Outside,
}

/// Why the interface is where it is, for `mipctl status` and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The interface has no address.
    NoAddress,
    /// Its connection status changed (§3.2.2); detection runs.
    ConnectionChanged,
    /// The i-HA accepted a registration through it, with Trusted Networks Configured.
    TrustedReply,
    /// The x-HA answered; the i-HA has not (yet).
    ExternalReply,
    /// Mode mc: the VPN gateway answered from this address (IKE or MOBIKE); the i-HA has not
    /// (yet).
    VpnReply,
    /// The detection period ended without an i-HA reply.
    DetectionPeriodOver,
    /// The i-HA and x-HA addresses are equal: outside without detection (§3.5).
    SameHomeAgents,
    /// Inside, but no i-HA registration succeeded for T_MONITOR: detection restarts (§3.2.4).
    MonitoringFailed,
}

/// What the interface's plaintext gate must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No user data.
    Closed,
    /// Inside: user data until this monotonic time (T_MONITOR after the last i-HA registration).
    InsideUntil(Duration),
    /// Outside: user data only through the VPN.
    Outside,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectEvent {
    /// The gate must change (the shell writes it to the dataplane at once).
    Gate(Gate),
    /// A decision, or a restart of detection.
    Location { location: Location, reason: Reason },
}

/// `mipctl status` for one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectStatus {
    pub location: Location,
    pub reason: Reason,
    /// `Outside` only: the detection period is still running.
    pub tentative: bool,
    /// Since the last successful i-HA registration was sent, if any since the last change.
    pub since_internal_registration: Option<Duration>,
    pub gate: Gate,
    pub care_of_addr: Option<Ipv4Addr>,
}

/// Detection and monitoring for one interface.
#[derive(Debug)]
pub struct Detector {
    internal: MobileNode,
    external: Option<MobileNode>,
    detection_period: Duration,
    t_monitor: Duration,
    location: Location,
    reason: Reason,
    care_of_addr: Option<Ipv4Addr>,
    /// The foreign agent both registrations go through (modes f and fvc, RFC 5265 §2.2,
    /// §2.4); `care_of_addr` is then its care-of address. `None`: co-located (c, cvc).
    agent: Option<ViaAgent>,
    /// Outside, tentatively: i-HA retransmissions continue until then.
    tentative_until: Option<Duration>,
    /// When the last successful i-HA registration was sent.
    internal_ok: Option<Duration>,
    /// At home on the i-HA's link: when to ask again (a deregistration leaves nothing that the
    /// engine would renew).
    at_home_renew: Option<Duration>,
    /// T_MONITOR − N.
    renew_every: Duration,
    gate: Gate,
    events: VecDeque<DetectEvent>,
}

impl Detector {
    pub fn new(mut config: DetectConfig) -> Self {
        // §3.2.4: "The MN SHOULD start re-registration every (T_MONITOR - N) seconds when
        // inside"; at least one second apart, whatever the configuration says.
        let every = config
            .t_monitor
            .saturating_sub(config.grace)
            .max(Duration::from_secs(1));
        config.internal.renew_every = Some(every);
        Detector {
            internal: MobileNode::new(config.internal),
            external: config.external.map(MobileNode::new),
            detection_period: config.detection_period,
            t_monitor: config.t_monitor,
            location: Location::Down,
            reason: Reason::NoAddress,
            care_of_addr: None,
            agent: None,
            tentative_until: None,
            internal_ok: None,
            at_home_renew: None,
            renew_every: every,
            gate: Gate::Closed,
            events: VecDeque::new(),
        }
    }

    fn same_home_agents(&self) -> bool {
        self.external
            .as_ref()
            .is_some_and(|x| self.internal.config().home_agent == x.config().home_agent)
    }

    pub fn internal(&self) -> &MobileNode {
        &self.internal
    }

    pub fn external(&self) -> Option<&MobileNode> {
        self.external.as_ref()
    }

    pub fn status(&self, now: Now) -> DetectStatus {
        DetectStatus {
            location: self.location,
            reason: self.reason,
            tentative: self.tentative_until.is_some(),
            since_internal_registration: self.internal_ok.map(|t| now.mono.saturating_sub(t)),
            gate: self.gate,
            care_of_addr: self.care_of_addr,
        }
    }

    /// The interface's connection status changed (link, address or route event): stop user
    /// data at once and detect again through `care_of_addr` (§3.2.2); `None` when it has no
    /// usable address.
    pub fn connection_changed(&mut self, now: Now, care_of_addr: Option<Ipv4Addr>) {
        self.attach(now, care_of_addr, None);
    }

    /// The attachment changed: a co-located care-of address (`agent` `None`), or the foreign
    /// agent `agent` offering `care_of_addr`, through which both registrations go (RFC 5265
    /// §3.5: "the MN sends two registration requests through the same FA"). Detection starts
    /// again as for any connection change (§3.2.2).
    pub fn attach(&mut self, now: Now, care_of_addr: Option<Ipv4Addr>, agent: Option<ViaAgent>) {
        self.care_of_addr = care_of_addr;
        self.agent = agent.filter(|_| care_of_addr.is_some());
        self.restart(now, Reason::ConnectionChanged);
    }

    /// The foreign agent the registrations go through, if any.
    pub fn agent(&self) -> Option<ViaAgent> {
        self.agent
    }

    fn restart(&mut self, now: Now, reason: Reason) {
        self.set_gate(Gate::Closed);
        // What was registered through the old attachment says nothing any more; the new
        // registrations replace the bindings.
        self.internal.forget();
        if let Some(x) = &mut self.external {
            x.forget();
        }
        self.tentative_until = None;
        self.internal_ok = None;
        self.at_home_renew = None;
        let Some(coa) = self.care_of_addr else {
            self.decide(Location::Down, Reason::NoAddress);
            return;
        };
        if self.same_home_agents() {
            // §3.5: "it MUST assume that it is in the external network and bypass network
            // detection".
            if let Some(x) = &mut self.external {
                register(x, now, coa, self.agent);
            }
            self.decide(Location::Outside, Reason::SameHomeAgents);
            self.set_gate(Gate::Outside);
            return;
        }
        // §3.3: "it issues two simultaneous registration requests, one to the i-HA and another
        // to the x-HA".
        // Mode mc: the shell sends the MOBIKE update (or starts IKE) at the same time
        // (draft-ietf-mip4-mobike-connectivity §3.4).
        register(&mut self.internal, now, coa, self.agent);
        if let Some(x) = &mut self.external {
            register(x, now, coa, self.agent);
        }
        self.decide(Location::Detecting, reason);
    }

    /// A datagram from a home agent (the shell's socket for this interface).
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddrV4, bytes: &[u8]) {
        if let Some(agent) = self.agent
            && *from.ip() == agent.addr
        {
            // Both replies come from the foreign agent: the Home Address field tells whose
            // (RFC 5944 §3.4); the i-HoA and x-HoA differ.
            let home = mipx_common::wire::ReplyPacket::new_checked(bytes)
                .ok()
                .map(|p| p.home_addr());
            if home == Some(self.internal.config().home_addr) {
                self.internal.handle_datagram(now, from, bytes);
            } else if let Some(x) = &mut self.external
                && home == Some(x.config().home_addr)
            {
                x.handle_datagram(now, from, bytes);
            }
        } else if *from.ip() == self.internal.config().home_agent && !self.same_home_agents() {
            self.internal.handle_datagram(now, from, bytes);
        } else if let Some(x) = &mut self.external
            && *from.ip() == x.config().home_agent
        {
            x.handle_datagram(now, from, bytes);
        }
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.internal.handle_timeout(now);
        if let Some(x) = &mut self.external {
            x.handle_timeout(now);
        }
        self.process(now);
        if let Some(until) = self.tentative_until
            && now.mono >= until
        {
            // §3.3: the i-HA had its detection period; "outside" is final and the MN stops
            // retransmitting to it.
            self.tentative_until = None;
            self.internal.cancel();
            self.decide(Location::Outside, Reason::DetectionPeriodOver);
        }
        if let Some(at) = self.at_home_renew
            && now.mono >= at
            && let Some(coa) = self.care_of_addr
        {
            self.at_home_renew = None;
            register(&mut self.internal, now, coa, self.agent);
        }
        if self.location == Location::Inside
            && let Some(ok) = self.internal_ok
            && now.mono >= ok + self.t_monitor
        {
            // §3.3: "If the re-registration fails, the MN MUST stop sending and receiving
            // plaintext traffic, and MUST restart the detection algorithm." The dataplane has
            // already closed on its own clock; this makes it explicit and starts over.
            warn!(coa = ?self.care_of_addr, "no i-HA registration for T_MONITOR: plaintext stops, detecting again");
            self.restart(now, Reason::MonitoringFailed);
        }
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        let monitor = (self.location == Location::Inside)
            .then_some(self.internal_ok.map(|ok| ok + self.t_monitor))
            .flatten();
        [
            self.internal.poll_timeout(),
            self.external.as_ref().and_then(MobileNode::poll_timeout),
            self.tentative_until,
            monitor,
            self.at_home_renew,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.internal
            .poll_transmit()
            .or_else(|| self.external.as_mut().and_then(MobileNode::poll_transmit))
    }

    pub fn poll_event(&mut self) -> Option<DetectEvent> {
        self.events.pop_front()
    }

    /// Acts on what the two registration engines reported.
    fn process(&mut self, now: Now) {
        while let Some(e) = self.internal.poll_event() {
            match e {
                MnEvent::Registered {
                    trusted: true,
                    requested_at,
                    ..
                } => {
                    self.internal_ok = Some(requested_at);
                    self.tentative_until = None;
                    if self.location != Location::Inside {
                        self.decide(Location::Inside, Reason::TrustedReply);
                        // §3.3: "When successfully registered with the i-HA directly, MN
                        // SHOULD de-register with the x-HA". Also when its reply has not come:
                        // the x-HA may have bound the request already.
                        if let (Some(coa), Some(x)) = (self.care_of_addr, &mut self.external) {
                            x.deregister_via(now, coa);
                        }
                    }
                    self.set_gate(Gate::InsideUntil(requested_at + self.t_monitor));
                }
                MnEvent::Deregistered {
                    trusted: true,
                    requested_at,
                } if self.location != Location::Down => {
                    // At home on the i-HA's own link, "registering" is a deregistration
                    // (RFC 5944 §3.6.1.2); a trusted reply proves inside just the same. The
                    // engine keeps no binding to renew, so monitoring asks again itself.
                    self.internal_ok = Some(requested_at);
                    self.tentative_until = None;
                    self.at_home_renew = Some(requested_at + self.renew_every);
                    if self.location != Location::Inside {
                        self.decide(Location::Inside, Reason::TrustedReply);
                        if let (Some(coa), Some(x)) = (self.care_of_addr, &mut self.external) {
                            x.deregister_via(now, coa);
                        }
                    }
                    self.set_gate(Gate::InsideUntil(requested_at + self.t_monitor));
                }
                MnEvent::Registered { trusted: false, .. } => {
                    // §3.2.3: without the extension a registration proves nothing.
                    warn!(coa = ?self.care_of_addr, "the internal home agent accepted us without Trusted Networks Configured: not inside (RFC 5265 §3.2.3); check its trusted_networks");
                }
                _ => {}
            }
        }
        while let Some(e) = self.external.as_mut().and_then(MobileNode::poll_event) {
            if let MnEvent::Registered { .. } = e {
                self.outside_reply(now, Reason::ExternalReply);
            }
        }
    }

    /// Inside: registers with the i-HA directly again now (the shell's registration through
    /// the VPN may have overtaken the one that proved us inside).
    pub fn reregister_internal(&mut self, now: Now) {
        if self.location == Location::Inside
            && let Some(coa) = self.care_of_addr
            && !self.same_home_agents()
        {
            register(&mut self.internal, now, coa, self.agent);
        }
    }

    /// Mode mc: the VPN gateway answered IKE or a MOBIKE update sent from `from`, this
    /// interface's address or not (draft-ietf-mip4-mobike-connectivity §3.4: "If the mobile
    /// node receives a response from the VPN gateway, but not from the i-HA, it assumes it is
    /// outside the enterprise network").
    pub fn vpn_reachable(&mut self, now: Now, from: Ipv4Addr) {
        if self.external.is_none() && self.care_of_addr == Some(from) {
            self.outside_reply(now, Reason::VpnReply);
        }
    }

    /// The outside probe answered while detecting: outside, tentatively for the detection
    /// period (§3.3) unless it is zero.
    fn outside_reply(&mut self, now: Now, reason: Reason) {
        if self.location != Location::Detecting {
            return;
        }
        self.set_gate(Gate::Outside);
        if self.detection_period.is_zero() {
            self.internal.cancel();
        } else {
            self.tentative_until = Some(now.mono + self.detection_period);
        }
        self.decide(Location::Outside, reason);
    }

    fn decide(&mut self, location: Location, reason: Reason) {
        if (self.location, self.reason) == (location, reason) {
            return;
        }
        info!(coa = ?self.care_of_addr, ?location, ?reason, "network detection");
        self.location = location;
        self.reason = reason;
        self.events
            .push_back(DetectEvent::Location { location, reason });
    }

    fn set_gate(&mut self, gate: Gate) {
        if self.gate != gate {
            self.gate = gate;
            self.events.push_back(DetectEvent::Gate(gate));
        }
    }
}

/// Registers `coa` co-located, or through the foreign agent `agent`.
fn register(mn: &mut MobileNode, now: Now, coa: Ipv4Addr, agent: Option<ViaAgent>) {
    match agent {
        Some(a) => mn.register_via(now, a, coa),
        None => mn.register(now, coa),
    }
}
