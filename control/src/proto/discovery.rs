//! Agent discovery by a mobile node (RFC 5944 §2.4), sans-IO: one [`AgentDiscovery`] per
//! interface of the mobile node.
//!
//! It reads Agent Advertisements, keeps the agents whose ICMP Lifetime has not run out, and
//! picks the *current* agent, reporting the changes as [`DiscoveryEvent`]s:
//!
//! - **Algorithm 1** (§2.4.2.1): an agent not heard from within its Lifetime is gone. If it was
//!   the current agent, another valid agent takes over at once ([`MoveReason::LifetimeExpired`])
//!   or, with none left, [`DiscoveryEvent::AgentLost`] and solicitation starts.
//! - **Algorithm 2** (§2.4.2.2): an advertisement from another agent whose router prefixes share
//!   nothing with the current agent's means a move ([`MoveReason::PrefixChanged`]), but only
//!   when both advertisements carry the Prefix-Lengths Extension; with a co-located care-of
//!   address (see [`AgentDiscovery::set_colocated`]), only when the new one does and the
//!   address's prefix is known. Otherwise a second agent is merely remembered.
//! - **Returning home** (§2.4.3): an advertisement with H from the node's own home agent makes
//!   that agent current ([`MoveReason::ReturnedHome`] if another was) and
//!   [`DiscoveryEvent::AtHome`] follows.
//! - **Reboots** (§2.4.4): the current agent's sequence number dropping to 0..=255 means it
//!   restarted and lost its bindings: [`DiscoveryEvent::AgentRebooted`], re-register. A drop to
//!   256 or more is the rollover after 0xffff (§2.3.2): nothing to do.
//! - **R** (§2.4.1): [`AgentInfo::registration_required`]; the registration engine decides.
//!
//! The care-of address offered is the first one advertised (§2.4: "SHOULD pick the first
//! address for its initial registration attempt").
//!
//! Advertisements that break a rule of §2.1.1 (F without a care-of address, B or R without F,
//! neither F nor H) come from a misconfigured agent: they are counted and ignored rather than
//! half-used. Reserved flag bits are ignored (§2.4), unknown skippable extensions skipped and
//! unknown mandatory ones discard the advertisement (§1.9).
//!
//! **Solicitation** (§2.4): only while there is no current agent. Up to
//! [`DiscoveryConfig::initial_solicitations`] (at most 3) one
//! [`DiscoveryConfig::initial_interval`] (at least 1 s) apart, then the interval doubles up to
//! [`DiscoveryConfig::max_interval`] (at least 60 s). Every interval is drawn from
//! `[nominal, 1.25 × nominal]`: randomized as RFC 1256 asks, and never shorter than the
//! nominal value, so neither the 1 s floor nor the 60 s maximum is undercut. The fast rate
//! comes back only when a search starts after an agent was found, or on
//! [`AgentDiscovery::link_changed`] (a positive indication of a new link); never while the
//! same search goes on. Two solicitations are never less than `initial_interval` apart.
//!
//! The shell sends each solicitation ([`IcmpTransmit`]) with IP TTL 1 (§2.2) to
//! [`DiscoveryConfig::solicit_dst`], and feeds received ICMP type 9 messages with their source
//! IP and MAC to [`AgentDiscovery::handle_advertisement`].

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use mipx_common::wire::agent::MOBILE_AGENTS;
use mipx_common::wire::{
    AdvertCode, AgentAdvertisementPacket, AgentAdvertisementRepr, AgentError, AgentFlags,
    AgentSolicitationRepr, RouterAddr,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::Now;
pub use super::advert::IcmpTransmit;
use super::advert::Rng;

/// §2.4: "The mobile node MAY send three initial solicitations at a maximum rate of one per
/// second".
pub const MAX_INITIAL_SOLICITATIONS: u32 = 3;
/// §2.4: the fastest rate, one per second.
pub const MIN_SOLICIT_INTERVAL: Duration = Duration::from_secs(1);
/// §2.4: the back-off's maximum interval "SHOULD be at least one minute".
pub const MIN_MAX_SOLICIT_INTERVAL: Duration = Duration::from_secs(60);
/// Random delay before the first solicitation of a search, so that nodes brought up together
/// (a power cut, a switch reboot) do not solicit in step. RFC 1256 §5 (MAX_SOLICITATION_DELAY) uses up to 1 s; a node
/// that just changed links should not wait that long.
pub const MAX_FIRST_SOLICIT_DELAY: Duration = Duration::from_millis(250);

/// Settings of one interface's agent discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The node's home agent: its advertisement with H set means "at home" (§2.4.3).
    pub home_agent: Ipv4Addr,
    /// Where solicitations go: 224.0.0.11, which every mobility agent listens to (§2.3), by
    /// default.
    pub solicit_dst: Ipv4Addr,
    pub initial_solicitations: u32,
    pub initial_interval: Duration,
    pub max_interval: Duration,
}

impl DiscoveryConfig {
    pub fn new(home_agent: Ipv4Addr) -> Self {
        DiscoveryConfig {
            home_agent,
            solicit_dst: MOBILE_AGENTS,
            initial_solicitations: MAX_INITIAL_SOLICITATIONS,
            initial_interval: MIN_SOLICIT_INTERVAL,
            max_interval: MIN_MAX_SOLICIT_INTERVAL,
        }
    }

    /// Checks the solicitation rates against §2.4's limits.
    pub fn validate(&self) -> Result<(), DiscoveryConfigError> {
        if self.initial_solicitations > MAX_INITIAL_SOLICITATIONS {
            return Err(DiscoveryConfigError::TooManyInitial(
                self.initial_solicitations,
            ));
        }
        if self.initial_interval < MIN_SOLICIT_INTERVAL {
            return Err(DiscoveryConfigError::IntervalTooShort(
                self.initial_interval,
            ));
        }
        if self.max_interval < MIN_MAX_SOLICIT_INTERVAL || self.max_interval < self.initial_interval
        {
            return Err(DiscoveryConfigError::MaxIntervalTooShort(self.max_interval));
        }
        Ok(())
    }
}

/// A configuration that would solicit faster than §2.4 allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryConfigError {
    #[error("{0} initial solicitations; RFC 5944 §2.4 allows three")]
    TooManyInitial(u32),
    #[error("initial solicitation interval {0:?} under one second (RFC 5944 §2.4)")]
    IntervalTooShort(Duration),
    #[error("maximum solicitation interval {0:?} under one minute (RFC 5944 §2.4)")]
    MaxIntervalTooShort(Duration),
}

/// What the node knows of one agent, from its latest advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    /// The IP source of its advertisements: how the agent is known.
    pub addr: Ipv4Addr,
    /// Its link-layer address, if the shell saw it: registration requests can go there before
    /// the node has an address on the link.
    pub mac: Option<[u8; 6]>,
    pub code: AdvertCode,
    /// Defined bits only (§2.4: reserved bits are ignored).
    pub flags: AgentFlags,
    pub care_of_addrs: Vec<Ipv4Addr>,
    pub router_addrs: Vec<RouterAddr>,
    pub prefix_lengths: Option<Vec<u8>>,
    /// The longest registration lifetime it accepts, seconds.
    pub registration_lifetime: u16,
    /// ICMP Lifetime of the latest advertisement, seconds.
    pub lifetime: u16,
    pub sequence: u16,
    /// RFC 4721 challenge of the latest advertisement.
    pub challenge: Option<Vec<u8>>,
    /// When the latest advertisement arrived, and when it stops being valid (monotonic).
    pub heard_at: Duration,
    pub expires_at: Duration,
}

impl AgentInfo {
    /// The care-of address to register: the first one advertised (§2.4), if it is a foreign
    /// agent.
    pub fn care_of(&self) -> Option<Ipv4Addr> {
        if self.flags.contains(AgentFlags::F) {
            self.care_of_addrs.first().copied()
        } else {
            None
        }
    }

    /// R (§2.4.1): register through this foreign agent even with a co-located care-of address.
    pub fn registration_required(&self) -> bool {
        self.flags.contains(AgentFlags::R)
    }

    /// B: it accepts no additional mobile nodes.
    pub fn busy(&self) -> bool {
        self.flags.contains(AgentFlags::B)
    }

    /// Whether this is `home_agent` offering home agent service on this link (§2.4.3).
    pub fn is_home_agent(&self, home_agent: Ipv4Addr) -> bool {
        self.flags.contains(AgentFlags::H)
            && (self.addr == home_agent || self.router_addrs.iter().any(|r| r.addr == home_agent))
    }

    /// Router addresses with their prefix lengths, if it sent the Prefix-Lengths Extension.
    fn prefixes(&self) -> Option<impl Iterator<Item = (Ipv4Addr, u8)> + '_> {
        let lengths = self.prefix_lengths.as_ref()?;
        Some(
            self.router_addrs
                .iter()
                .zip(lengths)
                .map(|(r, &len)| (r.addr, len)),
        )
    }

    fn from_repr(
        now: Now,
        addr: Ipv4Addr,
        mac: Option<[u8; 6]>,
        a: &AgentAdvertisementRepr<'_>,
    ) -> Self {
        AgentInfo {
            addr,
            mac,
            code: a.code,
            flags: a.flags,
            care_of_addrs: a.care_of_addrs.iter().collect(),
            router_addrs: a.router_addrs.iter().collect(),
            prefix_lengths: a.prefix_lengths.map(<[u8]>::to_vec),
            registration_lifetime: a.registration_lifetime,
            lifetime: a.lifetime,
            sequence: a.sequence,
            challenge: a.challenge.map(<[u8]>::to_vec),
            heard_at: now.mono,
            expires_at: now.mono + Duration::from_secs(u64::from(a.lifetime)),
        }
    }
}

/// Whether two prefixes overlap: equal under the shorter of the two lengths.
fn same_subnet(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let len = a_len.min(b_len).min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// Why the current agent changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// Algorithm 1: the current agent's Lifetime ran out (§2.4.2.1).
    LifetimeExpired,
    /// Algorithm 2: the new agent is on another prefix (§2.4.2.2).
    PrefixChanged,
    /// The node's own home agent advertised with H (§2.4.3).
    ReturnedHome,
}

/// What the mobile node's registration logic acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// There was no current agent; now there is (first advertisement of a search).
    AgentFound(AgentInfo),
    /// The current agent changed: register with `to` (§2.4.2). `from` is `None` when a
    /// co-located care-of address's prefix, not an agent, was left (Algorithm 2).
    Moved {
        from: Option<Ipv4Addr>,
        to: AgentInfo,
        reason: MoveReason,
    },
    /// The current agent's Lifetime ran out and no other agent is valid (§2.4.2.1);
    /// solicitation has started. Also on `link_changed` while an agent was current.
    AgentLost { agent: Ipv4Addr },
    /// The current agent restarted (§2.4.4): register again.
    AgentRebooted(AgentInfo),
    /// The current agent is the node's own home agent with H set: at home (§2.4.3), so
    /// deregister.
    AtHome { home_agent: Ipv4Addr },
}

/// Counters for `mipctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DiscoveryStats {
    pub advertisements: u64,
    /// ICMP Router Advertisements without the Mobility Agent extension: plain routers.
    pub router_advertisements: u64,
    /// Malformed: bad checksum, length, code, or an unknown mandatory extension (§1.9).
    pub malformed: u64,
    /// Well-formed but breaking a rule of §2.1.1, or from 0.0.0.0.
    pub invalid: u64,
    pub solicitations_sent: u64,
    pub agents_expired: u64,
    pub reboots: u64,
    pub moves: u64,
}

/// The solicitation back-off of one search.
#[derive(Clone, Copy, Debug)]
struct Search {
    /// Solicitations sent in this search.
    sent: u32,
    next_at: Duration,
}

/// Agent discovery on one interface of the mobile node.
#[derive(Debug)]
pub struct AgentDiscovery {
    config: DiscoveryConfig,
    rng: Rng,
    /// Valid agents, in the order first heard.
    agents: Vec<AgentInfo>,
    current: Option<Ipv4Addr>,
    at_home: bool,
    /// A co-located care-of address and its prefix length, for Algorithm 2.
    colocated: Option<(Ipv4Addr, u8)>,
    search: Option<Search>,
    last_solicit_at: Option<Duration>,
    transmits: VecDeque<IcmpTransmit>,
    events: VecDeque<DiscoveryEvent>,
    stats: DiscoveryStats,
}

impl AgentDiscovery {
    /// Starts discovery at `now`: no agent yet, so the first search begins. `seed` drives the
    /// solicitation jitter.
    pub fn new(config: DiscoveryConfig, now: Now, seed: u64) -> Result<Self, DiscoveryConfigError> {
        config.validate()?;
        let mut d = AgentDiscovery {
            config,
            rng: Rng::new(seed),
            agents: Vec::new(),
            current: None,
            at_home: false,
            colocated: None,
            search: None,
            last_solicit_at: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: DiscoveryStats::default(),
        };
        d.start_search(now);
        Ok(d)
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    pub fn stats(&self) -> &DiscoveryStats {
        &self.stats
    }

    /// The agent the node is attached to.
    pub fn current(&self) -> Option<&AgentInfo> {
        let addr = self.current?;
        self.agents.iter().find(|a| a.addr == addr)
    }

    /// Every agent whose advertisement is still valid.
    pub fn agents(&self) -> &[AgentInfo] {
        &self.agents
    }

    /// Whether the current agent is the node's own home agent (§2.4.3).
    pub fn at_home(&self) -> bool {
        self.at_home
    }

    /// Whether solicitations are being sent.
    pub fn searching(&self) -> bool {
        self.search.is_some()
    }

    /// The node's co-located care-of address and its prefix length, or `None` when it uses a
    /// foreign agent care-of address; selects the Algorithm 2 rule of §2.4.2.2.
    pub fn set_colocated(&mut self, colocated: Option<(Ipv4Addr, u8)>) {
        self.colocated = colocated;
    }

    /// A positive indication that the interface is on a new link (link-layer handover, carrier
    /// back with another network): the agents heard before are not reachable any more, and
    /// solicitation restarts at the fast rate (§2.4).
    pub fn link_changed(&mut self, now: Now) {
        self.agents.clear();
        self.at_home = false;
        if let Some(agent) = self.current.take() {
            info!(%agent, "link changed: agent forgotten");
            self.events.push_back(DiscoveryEvent::AgentLost { agent });
        }
        self.start_search(now);
    }

    /// Starts a search at the fast rate: after `MAX_FIRST_SOLICIT_DELAY` at most, and never
    /// sooner than `initial_interval` after the last solicitation.
    fn start_search(&mut self, now: Now) {
        let mut at = now.mono + self.rng.between(Duration::ZERO, MAX_FIRST_SOLICIT_DELAY);
        if let Some(last) = self.last_solicit_at {
            at = at.max(last + self.config.initial_interval);
        }
        self.search = Some(Search {
            sent: 0,
            next_at: at,
        });
    }

    /// The nominal interval after the `sent`-th solicitation of a search (§2.4).
    fn nominal_interval(&self, sent: u32) -> Duration {
        let c = &self.config;
        if sent < c.initial_solicitations {
            c.initial_interval
        } else {
            let doublings = (sent + 1 - c.initial_solicitations).min(31);
            c.initial_interval
                .saturating_mul(1 << doublings)
                .min(c.max_interval)
        }
    }

    /// Processes an ICMP message received as an ICMP Router Advertisement (the IP header
    /// stripped; its Total Length decides where the message ends) from `src_ip`/`src_mac`.
    pub fn handle_advertisement(
        &mut self,
        now: Now,
        src_ip: Ipv4Addr,
        src_mac: Option<[u8; 6]>,
        bytes: &[u8],
    ) {
        self.stats.advertisements += 1;
        let parsed = AgentAdvertisementPacket::new_checked(bytes)
            .map_err(AgentError::from)
            .and_then(|p| AgentAdvertisementRepr::parse(&p));
        let adv = match parsed {
            Ok(a) => a,
            Err(AgentError::NotAgentAdvertisement) => {
                self.stats.router_advertisements += 1;
                return;
            }
            Err(e) => {
                self.stats.malformed += 1;
                debug!(%src_ip, error = %e, "agent advertisement dropped");
                return;
            }
        };
        if let Err(v) = adv.validate() {
            self.stats.invalid += 1;
            debug!(%src_ip, violation = %v, "agent advertisement ignored");
            return;
        }
        if src_ip.is_unspecified() || src_ip.is_multicast() || src_ip.is_broadcast() {
            self.stats.invalid += 1;
            return;
        }
        // A Lifetime of 0: the agent withdraws (RFC 1256 §4: a router that stops advertising sends Lifetime 0).
        if adv.lifetime == 0 {
            if let Some(i) = self.agents.iter().position(|a| a.addr == src_ip) {
                self.agents.remove(i);
                if self.current == Some(src_ip) {
                    self.current_gone(now, src_ip);
                }
            }
            return;
        }

        let info = AgentInfo::from_repr(now, src_ip, src_mac, &adv);
        let rebooted = match self.agents.iter_mut().find(|a| a.addr == src_ip) {
            Some(known) => {
                // §2.4.4: a lower sequence number in 0..=255 is a reboot; 256 and above, the
                // rollover after 0xffff.
                let rebooted = info.sequence < known.sequence && info.sequence <= 255;
                *known = info.clone();
                rebooted
            }
            None => {
                self.agents.push(info.clone());
                false
            }
        };

        if info.is_home_agent(self.config.home_agent) {
            if self.current != Some(src_ip) {
                self.switch_to(info, MoveReason::ReturnedHome);
            } else if rebooted {
                self.rebooted(info);
            }
            return;
        }
        if self.current == Some(src_ip) {
            if rebooted {
                self.rebooted(info);
            }
            return;
        }
        if self.moved_by_prefix(&info) {
            self.switch_to(info, MoveReason::PrefixChanged);
        } else if self.current.is_none() {
            self.switch_to(info, MoveReason::LifetimeExpired);
        }
    }

    /// Algorithm 2 (§2.4.2.2) for an advertisement from an agent that is not the current one.
    fn moved_by_prefix(&self, new: &AgentInfo) -> bool {
        let Some(new_prefixes) = new.prefixes() else {
            // "SHOULD NOT use this method ... unless the new agent includes the Prefix-Lengths
            // Extension": in both cases.
            return false;
        };
        let new_prefixes: Vec<(Ipv4Addr, u8)> = new_prefixes.collect();
        if new_prefixes.is_empty() {
            return false;
        }
        if let Some((coa, len)) = self.colocated {
            // Co-located: the new agent's prefixes against the care-of address's.
            return !new_prefixes
                .iter()
                .any(|&(r, rl)| same_subnet(r, rl, coa, len));
        }
        // Foreign agent care-of address: only if the current agent also sent prefixes.
        let Some(current) = self.current() else {
            return false;
        };
        let Some(old) = current.prefixes() else {
            return false;
        };
        let old: Vec<(Ipv4Addr, u8)> = old.collect();
        !old.is_empty()
            && !old.iter().any(|&(a, al)| {
                new_prefixes
                    .iter()
                    .any(|&(b, bl)| same_subnet(a, al, b, bl))
            })
    }

    /// Makes `to` the current agent and reports it: `AgentFound` when there was none (and no
    /// prefix says the node moved), `Moved` otherwise; `AtHome` after, if it is the home agent.
    fn switch_to(&mut self, to: AgentInfo, reason: MoveReason) {
        let from = self.current.replace(to.addr);
        self.search = None;
        let home = to.is_home_agent(self.config.home_agent);
        self.at_home = home;
        let addr = to.addr;
        info!(agent = %addr, care_of = ?to.care_of(), ?reason, ?from, "agent selected");
        let event = match (from, reason) {
            (None, MoveReason::LifetimeExpired | MoveReason::ReturnedHome) => {
                DiscoveryEvent::AgentFound(to)
            }
            (from, reason) => {
                self.stats.moves += 1;
                DiscoveryEvent::Moved { from, to, reason }
            }
        };
        self.events.push_back(event);
        if home {
            self.events
                .push_back(DiscoveryEvent::AtHome { home_agent: addr });
        }
    }

    fn rebooted(&mut self, info: AgentInfo) {
        self.stats.reboots += 1;
        info!(agent = %info.addr, sequence = info.sequence, "agent rebooted");
        self.events.push_back(DiscoveryEvent::AgentRebooted(info));
    }

    /// The current agent is gone (Lifetime expired or withdrawn): another valid one takes
    /// over, or the search starts.
    fn current_gone(&mut self, now: Now, old: Ipv4Addr) {
        self.current = None;
        self.at_home = false;
        let ha = self.config.home_agent;
        // Preference: the own home agent, a foreign agent that is not busy, a busy one, then
        // anything else; among equals the one heard last.
        let rank = |a: &AgentInfo| {
            if a.is_home_agent(ha) {
                0
            } else if a.flags.contains(AgentFlags::F) && !a.busy() {
                1
            } else if a.flags.contains(AgentFlags::F) {
                2
            } else {
                3
            }
        };
        let best = self
            .agents
            .iter()
            .min_by_key(|a| (rank(a), std::cmp::Reverse(a.heard_at)))
            .cloned();
        match best {
            Some(to) => {
                self.current = Some(old);
                self.switch_to(to, MoveReason::LifetimeExpired);
            }
            None => {
                info!(agent = %old, "agent lost");
                self.events
                    .push_back(DiscoveryEvent::AgentLost { agent: old });
                self.start_search(now);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Now) {
        let before = self.agents.len();
        self.agents.retain(|a| a.expires_at > now.mono);
        self.stats.agents_expired += (before - self.agents.len()) as u64;
        if let Some(cur) = self.current
            && !self.agents.iter().any(|a| a.addr == cur)
        {
            self.current_gone(now, cur);
        }
        if let Some(s) = self.search
            && now.mono >= s.next_at
        {
            self.solicit(now, s.sent);
        }
    }

    fn solicit(&mut self, now: Now, sent_before: u32) {
        let mut payload = vec![0u8; AgentSolicitationRepr::LEN];
        // The buffer is exactly the message's length.
        let _ = AgentSolicitationRepr.emit(&mut payload);
        self.transmits.push_back(IcmpTransmit {
            dst_ip: self.config.solicit_dst,
            dst_mac: None,
            payload,
        });
        self.stats.solicitations_sent += 1;
        self.last_solicit_at = Some(now.mono);
        let sent = sent_before + 1;
        let nominal = self.nominal_interval(sent);
        let interval = self.rng.between(nominal, nominal + nominal / 4);
        debug!(sent, ?interval, "agent solicitation sent");
        self.search = Some(Search {
            sent,
            next_at: now.mono + interval,
        });
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        let expiry = self.agents.iter().map(|a| a.expires_at).min();
        let solicit = self.search.map(|s| s.next_at);
        match (expiry, solicit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<IcmpTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::advert::{Advertiser, AdvertiserConfig};
    use mipx_common::wire::{AgentSolicitationPacket, CareOfAddrs, RouterAddrs};

    const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const FA1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const FA2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const FA1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0f, 0xa1];

    fn t0() -> Now {
        Now {
            mono: Duration::from_secs(5000),
            unix: Duration::from_secs(1_700_000_000),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// An advertisement as an agent at `router` would send it.
    struct Adv {
        router: Ipv4Addr,
        prefix: Option<u8>,
        flags: u16,
        care_of: Vec<Ipv4Addr>,
        lifetime: u16,
        sequence: u16,
    }

    impl Adv {
        fn fa(router: Ipv4Addr) -> Self {
            Adv {
                router,
                prefix: None,
                flags: AgentFlags::F | AgentFlags::T,
                care_of: vec![router, Ipv4Addr::new(203, 0, 113, 9)],
                lifetime: 30,
                sequence: 0,
            }
        }

        fn ha(router: Ipv4Addr) -> Self {
            Adv {
                flags: AgentFlags::H,
                care_of: vec![],
                ..Adv::fa(router)
            }
        }

        fn prefix(self, len: u8) -> Self {
            Adv {
                prefix: Some(len),
                ..self
            }
        }

        fn seq(self, sequence: u16) -> Self {
            Adv { sequence, ..self }
        }

        fn bytes(&self) -> Vec<u8> {
            let routers = [RouterAddr {
                addr: self.router,
                preference: 0,
            }];
            let prefixes = self.prefix.map(|p| [p]);
            let repr = AgentAdvertisementRepr {
                code: AdvertCode::Router,
                lifetime: self.lifetime,
                router_addrs: RouterAddrs::from_slice(&routers),
                sequence: self.sequence,
                registration_lifetime: 600,
                flags: AgentFlags(self.flags),
                care_of_addrs: CareOfAddrs::from_slice(&self.care_of),
                prefix_lengths: prefixes.as_ref().map(|p| &p[..]),
                challenge: None,
                padding: false,
            }
            .with_even_length();
            let mut b = vec![0u8; repr.buffer_len()];
            repr.emit(&mut b).unwrap();
            b
        }
    }

    fn discovery(now: Now) -> AgentDiscovery {
        AgentDiscovery::new(DiscoveryConfig::new(HA), now, 42).unwrap()
    }

    fn events(d: &mut AgentDiscovery) -> Vec<DiscoveryEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    /// An event with each agent reduced to its address (and sequence number), for compact
    /// assertions.
    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Found(Ipv4Addr),
        Moved(Option<Ipv4Addr>, Ipv4Addr, MoveReason),
        Lost(Ipv4Addr),
        Rebooted(Ipv4Addr, u16),
        AtHome(Ipv4Addr),
    }

    fn brief(d: &mut AgentDiscovery) -> Vec<Ev> {
        events(d)
            .into_iter()
            .map(|e| match e {
                DiscoveryEvent::AgentFound(a) => Ev::Found(a.addr),
                DiscoveryEvent::Moved { from, to, reason } => Ev::Moved(from, to.addr, reason),
                DiscoveryEvent::AgentLost { agent } => Ev::Lost(agent),
                DiscoveryEvent::AgentRebooted(a) => Ev::Rebooted(a.addr, a.sequence),
                DiscoveryEvent::AtHome { home_agent } => Ev::AtHome(home_agent),
            })
            .collect()
    }

    fn feed(d: &mut AgentDiscovery, now: Now, adv: &Adv) {
        d.handle_advertisement(now, adv.router, Some(FA1_MAC), &adv.bytes());
    }

    /// Fires every timer up to `until`; returns the times solicitations went out.
    fn run(d: &mut AgentDiscovery, now: &mut Now, until: Duration) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(t) = d.poll_timeout() {
            if t > until {
                break;
            }
            *now = now.advance(t.saturating_sub(now.mono));
            d.handle_timeout(*now);
            while let Some(x) = d.poll_transmit() {
                assert_eq!(x.dst_ip, MOBILE_AGENTS);
                let p = AgentSolicitationPacket::new_checked(&x.payload[..]).unwrap();
                assert_eq!(AgentSolicitationRepr::parse(&p), Ok(AgentSolicitationRepr));
                sent.push(now.mono);
            }
        }
        *now = now.advance(until.saturating_sub(now.mono));
        sent
    }

    fn gaps(times: &[Duration]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn solicitation_backoff_schedule() {
        let mut now = t0();
        let start = now.mono;
        let mut d = discovery(now);
        assert!(d.searching());
        let sent = run(&mut d, &mut now, start + secs(600.0));
        assert!(sent[0] - start <= MAX_FIRST_SOLICIT_DELAY);
        // Nominal 1, 1, then 2, 4, 8, 16, 32, then the 60 s maximum; each drawn from
        // [nominal, 1.25 × nominal].
        let nominal = [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0];
        let g = gaps(&sent);
        assert!(g.len() >= nominal.len());
        for (i, (gap, n)) in g.iter().zip(nominal).enumerate() {
            assert!(
                *gap >= secs(n) && *gap <= secs(n * 1.25),
                "gap {i}: {gap:?}"
            );
        }
        assert!(g[nominal.len()..].iter().all(|x| *x >= secs(60.0)));
        // Randomized: another seed, another schedule.
        let mut now2 = t0();
        let mut d2 = AgentDiscovery::new(DiscoveryConfig::new(HA), now2, 43).unwrap();
        assert_ne!(run(&mut d2, &mut now2, start + secs(600.0)), sent);
        assert_eq!(d.stats().solicitations_sent, sent.len() as u64);
    }

    #[test]
    fn solicitation_stops_on_an_agent_and_resumes_fast_when_it_is_lost() {
        let mut now = t0();
        let start = now.mono;
        let mut d = discovery(now);
        let first = run(&mut d, &mut now, start + secs(20.0));
        assert!(first.len() >= 5);
        feed(&mut d, now, &Adv::fa(FA1));
        let ev = events(&mut d);
        let [DiscoveryEvent::AgentFound(agent)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(agent.addr, FA1);
        assert_eq!(
            agent.care_of(),
            Some(FA1),
            "the first care-of address (§2.4)"
        );
        assert_eq!(agent.mac, Some(FA1_MAC));
        assert!(!d.searching());
        // Nothing is sent while the agent is valid; it expires after its 30 s Lifetime.
        let quiet = run(&mut d, &mut now, start + secs(20.0 + 29.9));
        assert!(quiet.is_empty());
        let lost_at = start + secs(20.0 + 30.0);
        let after = run(&mut d, &mut now, lost_at + secs(5.0));
        assert_eq!(events(&mut d), [DiscoveryEvent::AgentLost { agent: FA1 }]);
        // A new search: back to the fast rate.
        assert!(after[0] - lost_at <= MAX_FIRST_SOLICIT_DELAY);
        assert!(gaps(&after)[..2].iter().all(|g| *g <= secs(1.25)));
        assert_eq!(d.stats().agents_expired, 1);
    }

    #[test]
    fn link_changed_resets_the_rate_but_never_exceeds_one_per_second() {
        let mut now = t0();
        let start = now.mono;
        let mut d = discovery(now);
        let slow = run(&mut d, &mut now, start + secs(100.0));
        assert!(*gaps(&slow).last().unwrap() >= secs(32.0));
        // Still searching, no new link: the rate stays low.
        let before = run(&mut d, &mut now, start + secs(160.0));
        assert!(gaps(&before).iter().all(|g| *g >= secs(32.0)));

        // A new link: fast again.
        let changed = now.mono;
        d.link_changed(now);
        let fast = run(&mut d, &mut now, changed + secs(3.0));
        assert!(fast.len() >= 2, "{fast:?}");
        assert!(fast[0] - changed <= secs(1.0));

        // Link changes in quick succession cannot push solicitations closer than 1 s.
        let mut all = fast.clone();
        for i in 0..20 {
            d.link_changed(now);
            all.extend(run(
                &mut d,
                &mut now,
                changed + secs(3.0 + 0.1 * f64::from(i + 1)),
            ));
        }
        assert!(gaps(&all).iter().all(|g| *g >= secs(1.0)), "{all:?}");
    }

    #[test]
    fn link_changed_forgets_the_agents() {
        let now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1));
        events(&mut d);
        d.link_changed(now);
        assert_eq!(events(&mut d), [DiscoveryEvent::AgentLost { agent: FA1 }]);
        assert!(d.agents().is_empty());
        assert!(d.searching());
        // The same agent heard again on the new link is found anew.
        feed(&mut d, now, &Adv::fa(FA1).seq(3));
        assert_eq!(brief(&mut d), [Ev::Found(FA1)]);
    }

    #[test]
    fn lifetime_expiry_moves_to_another_valid_agent() {
        let mut now = t0();
        let start = now.mono;
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1));
        now = now.advance(secs(10.0));
        let fa2 = Adv {
            lifetime: 60,
            ..Adv::fa(FA2)
        };
        feed(&mut d, now, &fa2);
        let ev = events(&mut d);
        assert_eq!(
            ev.len(),
            1,
            "a second agent without prefixes is no move: {ev:?}"
        );
        assert_eq!(d.current().unwrap().addr, FA1);
        assert_eq!(d.agents().len(), 2);
        // FA1 is refreshed at 20 s, then falls silent: it expires at 50 s.
        now = now.advance(secs(10.0));
        feed(&mut d, now, &Adv::fa(FA1).seq(1));
        assert!(events(&mut d).is_empty());
        run(&mut d, &mut now, start + secs(49.9));
        assert!(events(&mut d).is_empty());
        run(&mut d, &mut now, start + secs(50.0));
        let ev = events(&mut d);
        let [DiscoveryEvent::Moved { from, to, reason }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (*from, to.addr, *reason),
            (Some(FA1), FA2, MoveReason::LifetimeExpired)
        );
        assert_eq!(to.care_of(), Some(FA2));
        assert!(!d.searching());
        // Then FA2 expires too (heard at 10 s, lifetime 60 s): lost, search.
        run(&mut d, &mut now, start + secs(70.0));
        assert_eq!(events(&mut d), [DiscoveryEvent::AgentLost { agent: FA2 }]);
        assert!(d.searching());
    }

    #[test]
    fn a_zero_lifetime_withdraws_the_agent_at_once() {
        let now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1));
        events(&mut d);
        feed(
            &mut d,
            now,
            &Adv {
                lifetime: 0,
                ..Adv::fa(FA1).seq(1)
            },
        );
        assert_eq!(events(&mut d), [DiscoveryEvent::AgentLost { agent: FA1 }]);
        assert!(d.agents().is_empty());
    }

    #[test]
    fn reboot_and_rollover_2_4_4() {
        let now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1).seq(5));
        events(&mut d);
        feed(&mut d, now, &Adv::fa(FA1).seq(6));
        assert!(events(&mut d).is_empty());
        // Dropped into 0..=255: rebooted, register again.
        feed(&mut d, now, &Adv::fa(FA1).seq(0));
        assert_eq!(brief(&mut d), [Ev::Rebooted(FA1, 0)]);
        // Counting up again, across 255 → 256 and up to the top.
        for s in [1u16, 255, 256, 0xfffe, 0xffff] {
            feed(&mut d, now, &Adv::fa(FA1).seq(s));
        }
        assert!(events(&mut d).is_empty());
        // 0xffff is followed by 256: a rollover, no action.
        feed(&mut d, now, &Adv::fa(FA1).seq(256));
        assert!(events(&mut d).is_empty());
        // Down from 300 to 255: a reboot (the agent advertised 255 times since).
        feed(&mut d, now, &Adv::fa(FA1).seq(300));
        feed(&mut d, now, &Adv::fa(FA1).seq(255));
        assert_eq!(brief(&mut d), [Ev::Rebooted(FA1, 255)]);
        // A duplicate is nothing.
        feed(&mut d, now, &Adv::fa(FA1).seq(255));
        assert!(events(&mut d).is_empty());
        assert_eq!(d.stats().reboots, 2);
        // Another agent's reboot is not ours to act on.
        feed(&mut d, now, &Adv::fa(FA2).seq(40));
        feed(&mut d, now, &Adv::fa(FA2).seq(1));
        assert!(events(&mut d).is_empty());
    }

    #[test]
    fn own_home_agent_means_at_home() {
        let now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::ha(HA));
        assert_eq!(brief(&mut d), [Ev::Found(HA), Ev::AtHome(HA)]);
        assert!(d.at_home());
        assert_eq!(d.current().unwrap().care_of(), None);

        // Another home agent (not ours) is an agent, but not home.
        let mut d = discovery(now);
        let other_ha = Ipv4Addr::new(10, 9, 0, 1);
        feed(&mut d, now, &Adv::ha(other_ha));
        assert_eq!(brief(&mut d), [Ev::Found(other_ha)]);
        assert!(!d.at_home());

        // Our home agent's address without H (it serves as a foreign agent here): not home.
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(HA));
        assert_eq!(brief(&mut d), [Ev::Found(HA)]);
        assert!(!d.at_home());
    }

    #[test]
    fn returning_home_preempts_the_foreign_agent() {
        let mut now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1));
        events(&mut d);
        now = now.advance(secs(1.0));
        feed(&mut d, now, &Adv::ha(HA));
        assert_eq!(
            brief(&mut d),
            [
                Ev::Moved(Some(FA1), HA, MoveReason::ReturnedHome),
                Ev::AtHome(HA)
            ]
        );
        assert!(d.at_home());
        // Further advertisements from home: nothing new; away again by prefix? no prefixes.
        feed(&mut d, now, &Adv::ha(HA).seq(1));
        feed(&mut d, now, &Adv::fa(FA1).seq(1));
        assert!(events(&mut d).is_empty());
        // The home agent's reboot is reported too.
        feed(&mut d, now, &Adv::ha(HA).seq(0));
        assert_eq!(brief(&mut d), [Ev::Rebooted(HA, 0)]);
    }

    #[test]
    fn prefix_move_detection_when_both_send_prefixes() {
        let now = t0();
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1).prefix(24));
        events(&mut d);
        // Same subnet (192.0.2.0/24): a second agent, no move.
        feed(
            &mut d,
            now,
            &Adv::fa(Ipv4Addr::new(192, 0, 2, 77)).prefix(24),
        );
        assert!(events(&mut d).is_empty());
        // Another prefix: moved.
        feed(&mut d, now, &Adv::fa(FA2).prefix(24));
        assert_eq!(
            brief(&mut d),
            [Ev::Moved(Some(FA1), FA2, MoveReason::PrefixChanged)]
        );
        assert_eq!(d.current().unwrap().addr, FA2);
        assert_eq!(d.stats().moves, 1);
    }

    #[test]
    fn prefix_move_detection_is_not_used_without_both_extensions() {
        let now = t0();
        // The current agent sent no prefixes.
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1));
        events(&mut d);
        feed(&mut d, now, &Adv::fa(FA2).prefix(24));
        assert!(events(&mut d).is_empty());
        assert_eq!(d.current().unwrap().addr, FA1);
        // The new agent sent none.
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1).prefix(24));
        events(&mut d);
        feed(&mut d, now, &Adv::fa(FA2));
        assert!(events(&mut d).is_empty());
        assert_eq!(d.current().unwrap().addr, FA1);
        // Overlapping prefixes of different lengths are the same subnet.
        let mut d = discovery(now);
        feed(&mut d, now, &Adv::fa(FA1).prefix(24));
        events(&mut d);
        feed(
            &mut d,
            now,
            &Adv::fa(Ipv4Addr::new(192, 0, 2, 200)).prefix(25),
        );
        assert!(events(&mut d).is_empty());
    }

    #[test]
    fn prefix_move_detection_with_a_colocated_care_of_address() {
        let now = t0();
        let coa = Ipv4Addr::new(192, 0, 2, 50);
        // An agent on the care-of address's subnet: found, no move.
        let mut d = discovery(now);
        d.set_colocated(Some((coa, 24)));
        feed(&mut d, now, &Adv::fa(FA1).prefix(24));
        assert_eq!(brief(&mut d), [Ev::Found(FA1)]);
        // An agent elsewhere: the node has moved off its care-of address's subnet.
        feed(&mut d, now, &Adv::fa(FA2).prefix(24));
        assert_eq!(
            brief(&mut d),
            [Ev::Moved(Some(FA1), FA2, MoveReason::PrefixChanged)]
        );
        // With no agent yet, the first one heard can already say "moved".
        let mut d = discovery(now);
        d.set_colocated(Some((coa, 24)));
        feed(&mut d, now, &Adv::fa(FA2).prefix(24));
        assert_eq!(
            brief(&mut d),
            [Ev::Moved(None, FA2, MoveReason::PrefixChanged)]
        );
        // Without the new agent's prefixes the method is not used.
        let mut d = discovery(now);
        d.set_colocated(Some((coa, 24)));
        feed(&mut d, now, &Adv::fa(FA2));
        assert_eq!(brief(&mut d), [Ev::Found(FA2)]);
    }

    #[test]
    fn registration_required_and_busy_are_reported() {
        let now = t0();
        let mut d = discovery(now);
        feed(
            &mut d,
            now,
            &Adv {
                flags: AgentFlags::F | AgentFlags::R | AgentFlags::B,
                ..Adv::fa(FA1)
            },
        );
        let ev = events(&mut d);
        let [DiscoveryEvent::AgentFound(a)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert!(a.registration_required());
        assert!(a.busy());
    }

    #[test]
    fn bad_advertisements_are_ignored_and_counted() {
        let now = t0();
        let mut d = discovery(now);
        // §2.1.1 violations.
        for flags in [
            AgentFlags::H | AgentFlags::B,
            AgentFlags::H | AgentFlags::R,
            AgentFlags::T,
        ] {
            feed(
                &mut d,
                now,
                &Adv {
                    flags,
                    ..Adv::fa(FA1)
                },
            );
        }
        feed(
            &mut d,
            now,
            &Adv {
                care_of: vec![],
                ..Adv::fa(FA1)
            },
        );
        assert_eq!(d.stats().invalid, 4);
        // From 0.0.0.0.
        d.handle_advertisement(now, Ipv4Addr::UNSPECIFIED, None, &Adv::fa(FA1).bytes());
        assert_eq!(d.stats().invalid, 5);
        // A plain router advertisement.
        let mut plain = Adv::fa(FA1).bytes()[..16].to_vec();
        AgentAdvertisementPacket::new_unchecked(&mut plain[..]).fill_checksum();
        d.handle_advertisement(now, FA1, None, &plain);
        assert_eq!(d.stats().router_advertisements, 1);
        // Malformed: bad checksum, truncated.
        let mut bad = Adv::fa(FA1).bytes();
        bad[10] ^= 1;
        d.handle_advertisement(now, FA1, None, &bad);
        d.handle_advertisement(now, FA1, None, &bad[..7]);
        assert_eq!(d.stats().malformed, 2);
        assert!(events(&mut d).is_empty());
        assert!(d.agents().is_empty());
        // Reserved flag bits are ignored, not a reason to discard (§2.4).
        let mut reserved = Adv::fa(FA1).bytes();
        reserved[23] |= 0x1f;
        AgentAdvertisementPacket::new_unchecked(&mut reserved[..]).fill_checksum();
        d.handle_advertisement(now, FA1, None, &reserved);
        assert_eq!(brief(&mut d), [Ev::Found(FA1)]);
        assert_eq!(
            d.current().unwrap().flags,
            AgentFlags(AgentFlags::F | AgentFlags::T)
        );
        // Random bytes never panic.
        let mut rng = Rng::new(1);
        for _ in 0..5000 {
            let len = (rng.next_u64() % 64) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if b.len() >= 8 {
                b[0] = 9;
                b[5] = 2;
                AgentAdvertisementPacket::new_unchecked(&mut b[..]).fill_checksum();
            }
            d.handle_advertisement(now, FA2, None, &b);
        }
    }

    #[test]
    fn configuration_limits() {
        let ok = DiscoveryConfig::new(HA);
        assert_eq!(ok.validate(), Ok(()));
        let c = DiscoveryConfig {
            initial_interval: secs(0.5),
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(DiscoveryConfigError::IntervalTooShort(_))
        ));
        let c = DiscoveryConfig {
            max_interval: secs(30.0),
            ..ok.clone()
        };
        assert!(AgentDiscovery::new(c, t0(), 0).is_err());
        let c = DiscoveryConfig {
            initial_solicitations: 4,
            ..ok
        };
        assert_eq!(c.validate(), Err(DiscoveryConfigError::TooManyInitial(4)));
    }

    #[test]
    fn same_subnet_masks() {
        let a = Ipv4Addr::new(192, 0, 2, 1);
        assert!(same_subnet(a, 24, Ipv4Addr::new(192, 0, 2, 254), 24));
        assert!(!same_subnet(a, 24, Ipv4Addr::new(192, 0, 3, 1), 24));
        assert!(same_subnet(a, 23, Ipv4Addr::new(192, 0, 3, 1), 24));
        assert!(same_subnet(a, 0, Ipv4Addr::new(8, 8, 8, 8), 32));
        assert!(!same_subnet(a, 32, Ipv4Addr::new(192, 0, 2, 2), 32));
    }

    /// Delivers everything between an advertiser and a discovery on one simulated link until
    /// `until`; returns how many advertisements went by unicast.
    fn link(d: &mut AgentDiscovery, fa: &mut Advertiser, now: &mut Now, until: Duration) -> usize {
        let mn_mac = [0x02, 0, 0, 0, 0, 0x55];
        let home_addr = Ipv4Addr::new(10, 1, 0, 5);
        let mut unicast = 0;
        loop {
            let next = [d.poll_timeout(), fa.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next.filter(|t| *t <= until) else {
                break;
            };
            *now = now.advance(t.saturating_sub(now.mono));
            d.handle_timeout(*now);
            fa.handle_timeout(*now);
            while let Some(s) = d.poll_transmit() {
                fa.handle_solicitation(*now, home_addr, Some(mn_mac), &s.payload);
            }
            while let Some(a) = fa.poll_transmit() {
                if a.dst_mac.is_some() {
                    assert_eq!((a.dst_ip, a.dst_mac), (home_addr, Some(mn_mac)));
                    unicast += 1;
                }
                d.handle_advertisement(*now, FA1, Some(FA1_MAC), &a.payload);
            }
        }
        *now = now.advance(until.saturating_sub(now.mono));
        unicast
    }

    /// An advertiser and a mobile node's discovery on one simulated link. An answer-only
    /// agent: the node solicits, the agent answers by unicast, the node finds it; with no
    /// further advertisements the agent expires and is found again by solicitation. Then the
    /// agent restarts advertising periodically: the node sees the reboot, then nothing.
    #[test]
    fn advertiser_and_discovery_on_one_link() {
        let mut now = t0();
        let start = now.mono;
        let answer_only = AdvertiserConfig {
            solicited_only: true,
            ..AdvertiserConfig::foreign_agent(FA1, 24, 600)
        };
        let mut fa = Advertiser::new(answer_only, now, 9).unwrap();
        let mut d = discovery(now);
        assert_eq!(link(&mut d, &mut fa, &mut now, start + secs(5.0)), 1);
        assert_eq!(brief(&mut d), [Ev::Found(FA1)]);
        let agent = d.current().unwrap();
        assert_eq!((agent.care_of(), agent.sequence), (Some(FA1), 0));
        assert_eq!(d.stats().solicitations_sent, 1);
        // Lifetime 30 s, no periodic advertisements: lost, solicited, found again.
        assert_eq!(link(&mut d, &mut fa, &mut now, start + secs(40.0)), 1);
        assert_eq!(brief(&mut d), [Ev::Lost(FA1), Ev::Found(FA1)]);
        assert_eq!(d.current().unwrap().sequence, 1);
        // The agent restarts, now advertising periodically: sequence 0 again, a reboot.
        let mut fa =
            Advertiser::new(AdvertiserConfig::foreign_agent(FA1, 24, 600), now, 10).unwrap();
        link(&mut d, &mut fa, &mut now, start + secs(41.0));
        assert_eq!(brief(&mut d), [Ev::Rebooted(FA1, 0)]);
        // Steady state: periodic advertisements keep it; no events, no solicitations.
        assert_eq!(link(&mut d, &mut fa, &mut now, start + secs(400.0)), 0);
        assert!(events(&mut d).is_empty());
        assert!(d.current().unwrap().sequence > 30);
        assert_eq!(d.stats().solicitations_sent, 2);
    }
}
