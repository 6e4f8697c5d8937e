//! Agent Advertisement by a mobility agent (RFC 5944 §2.1, §2.3), sans-IO: one [`Advertiser`]
//! per interface of a foreign agent or home agent.
//!
//! - Unsolicited advertisements go to 224.0.0.1 or 255.255.255.255 (§2.1) at a random interval
//!   between the configured minimum and maximum, the maximum at most a third of the ICMP
//!   Lifetime (§2.1: "This allows a mobile node to miss three successive advertisements before
//!   deleting the agent"). As in RFC 1256 §4 (router behaviour), the first [`MAX_INITIAL_ADVERTISEMENTS`] intervals are at most
//!   [`MAX_INITIAL_ADVERT_INTERVAL`], so that nodes already on the link learn of a new agent
//!   quickly. In answer-only mode (§2.3: "MAY be configured to send Agent Advertisements only
//!   in response to an Agent Solicitation") none are sent.
//! - A solicitation is answered at once with an advertisement unicast to the soliciting node:
//!   link-layer destination its source MAC (§2.1: MUST), IP destination its source address
//!   (the home address, which §2.1 says SHOULD be used), or the limited broadcast address when
//!   it solicited from 0.0.0.0. Without a MAC and without an address, the answer is the next
//!   multicast advertisement, brought forward.
//! - Rate limits (§2.3: an agent MUST limit the rate of broadcast or multicast advertisements):
//!   multicast or broadcast advertisements are at least [`MIN_MULTICAST_GAP`] apart, whatever
//!   the solicitations; unicast answers, which cost only the solicitor, are limited to a burst
//!   of [`UNICAST_BURST`] and then one per [`UNICAST_INTERVAL`] (a GCRA bucket), so a flood of
//!   solicitations cannot turn the agent into an amplifier. Excess solicitations are counted
//!   and dropped; the mobile node solicits again (§2.4).
//! - Sequence numbers (§2.3.2): 0 for the first advertisement after start, then one more for
//!   each advertisement sent (unicast answers included: the field counts "Agent Advertisement
//!   messages sent since the agent was initialized", §2.1.1), and 0xffff is followed by 256.
//!
//! The shell sends each [`IcmpTransmit`] as ICMP with IP TTL 1
//! ([`AGENT_DISCOVERY_TTL`](mipx_common::wire::agent::AGENT_DISCOVERY_TTL), §2.1) from the
//! interface's address, and joins 224.0.0.11 on the interface (§2.3: every mobility agent MUST
//! process packets sent to the Mobile-Agents group).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use mipx_common::wire::agent::{ALL_SYSTEMS, LIMITED_BROADCAST, MAX_CARE_OF_ADDRS};
use mipx_common::wire::{
    AdvertCode, AdvertViolation, AgentAdvertisementRepr, AgentFlags, AgentSolicitationPacket,
    AgentSolicitationRepr, CareOfAddrs, RouterAddr, RouterAddrs,
};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::Now;

/// Minimum time between two multicast or broadcast advertisements (§2.3's MUST). One second
/// is the rate a mobile node itself may solicit at (§2.4); a 60-byte message per second is
/// nothing on any link that carries IP.
pub const MIN_MULTICAST_GAP: Duration = Duration::from_secs(1);
/// Unicast answers allowed back to back.
pub const UNICAST_BURST: u32 = 10;
/// Steady rate of unicast answers beyond the burst: one per 100 ms, ten a second.
pub const UNICAST_INTERVAL: Duration = Duration::from_millis(100);
/// RFC 1256 §4 (router behaviour): the first advertisements after start are sent at most this far apart.
pub const MAX_INITIAL_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
/// RFC 1256 §4 (router behaviour): how many advertisements that applies to.
pub const MAX_INITIAL_ADVERTISEMENTS: u32 = 3;

/// The sequence number that follows `seq` (§2.3.2): one greater, except that 0xffff is
/// followed by 256, so that a mobile node can tell a rollover from a reboot (§2.4.4).
pub const fn next_sequence(seq: u16) -> u16 {
    if seq == u16::MAX { 256 } else { seq + 1 }
}

/// An ICMP message to send on the interface with IP TTL 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpTransmit {
    pub dst_ip: Ipv4Addr,
    /// Link-layer destination: `Some` for an answer to a solicitation (its source MAC, §2.1);
    /// `None` means the one `dst_ip` maps to (multicast, broadcast, or resolved by ARP).
    pub dst_mac: Option<[u8; 6]>,
    /// The ICMP message, checksum included.
    pub payload: Vec<u8>,
}

/// One advertised router address (§2.3.1: an agent SHOULD only put its own addresses there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertisedRouter {
    pub addr: Ipv4Addr,
    /// Preference as a default router (RFC 1256 §3); 0 is the usual value.
    pub preference: i32,
    /// The prefix length of `addr`'s subnet, sent in the Prefix-Lengths Extension (§2.1.2)
    /// when [`AdvertiserConfig::prefix_lengths`] is on.
    pub prefix_len: u8,
}

/// What one interface advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertiserConfig {
    /// Router addresses, in order; may be empty (§2.1: Num Addrs MAY be 0).
    pub routers: Vec<AdvertisedRouter>,
    /// Send the Prefix-Lengths Extension. §2.3: on one link, either every agent sends it or
    /// none does; Appendix D advises against it on wireless links.
    pub prefix_lengths: bool,
    /// Foreign agent care-of addresses (§2.1.1), at least one when F is set.
    pub care_of_addrs: Vec<Ipv4Addr>,
    /// R H F M G T U X I as configured. B here is the initial busy state; change it with
    /// [`Advertiser::set_busy`].
    pub flags: AgentFlags,
    pub code: AdvertCode,
    /// The longest registration lifetime accepted, seconds (0xffff: infinity).
    pub registration_lifetime: u16,
    /// ICMP Lifetime, seconds: how long a mobile node keeps the agent without hearing another
    /// advertisement (§2.4.2.1).
    pub lifetime: u16,
    /// Bounds of the random interval between unsolicited advertisements.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// §2.3: advertise only in response to solicitations.
    pub solicited_only: bool,
    /// Destination of multicast advertisements: [`ALL_SYSTEMS`] or [`LIMITED_BROADCAST`]
    /// (§2.1: MUST be one of these).
    pub multicast_dst: Ipv4Addr,
}

/// Defaults for move detection by lifetime (§2.4.2.1) within half a minute: an advertisement
/// every 7.5-10 s (RFC 1256's minimum of three quarters of the maximum), valid for 30 s.
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(7500);
const DEFAULT_LIFETIME: u16 = 30;

impl AdvertiserConfig {
    /// A foreign agent on `router` (its address on the link, with that subnet's prefix
    /// length), offering that address as its care-of address, with reverse tunnelling (T).
    pub fn foreign_agent(router: Ipv4Addr, prefix_len: u8, registration_lifetime: u16) -> Self {
        AdvertiserConfig {
            routers: vec![AdvertisedRouter {
                addr: router,
                preference: 0,
                prefix_len,
            }],
            prefix_lengths: false,
            care_of_addrs: vec![router],
            flags: AgentFlags(AgentFlags::F | AgentFlags::T),
            code: AdvertCode::Router,
            registration_lifetime,
            lifetime: DEFAULT_LIFETIME,
            min_interval: DEFAULT_MIN_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            solicited_only: false,
            multicast_dst: ALL_SYSTEMS,
        }
    }

    /// A home agent on its home link (§2.3: H MUST be set there).
    pub fn home_agent(router: Ipv4Addr, prefix_len: u8, registration_lifetime: u16) -> Self {
        AdvertiserConfig {
            care_of_addrs: Vec::new(),
            flags: AgentFlags(AgentFlags::H),
            ..Self::foreign_agent(router, prefix_len, registration_lifetime)
        }
    }

    /// Checks the configuration against §2.1-2.3; see [`AdvertConfigError`].
    pub fn validate(&self) -> Result<(), AdvertConfigError> {
        if self.routers.len() > usize::from(u8::MAX) {
            return Err(AdvertConfigError::TooManyRouters(self.routers.len()));
        }
        if self.care_of_addrs.len() > MAX_CARE_OF_ADDRS {
            return Err(AdvertConfigError::TooManyCareOfAddrs(
                self.care_of_addrs.len(),
            ));
        }
        if self.multicast_dst != ALL_SYSTEMS && self.multicast_dst != LIMITED_BROADCAST {
            return Err(AdvertConfigError::MulticastDestination(self.multicast_dst));
        }
        if self.lifetime == 0 {
            return Err(AdvertConfigError::ZeroLifetime);
        }
        let routers: Vec<RouterAddr> = self.router_addrs();
        let prefixes: Vec<u8> = self.routers.iter().map(|r| r.prefix_len).collect();
        let repr = AgentAdvertisementRepr {
            code: self.code,
            lifetime: self.lifetime,
            router_addrs: RouterAddrs::from_slice(&routers),
            sequence: 0,
            registration_lifetime: self.registration_lifetime,
            flags: self.flags,
            care_of_addrs: CareOfAddrs::from_slice(&self.care_of_addrs),
            prefix_lengths: self.prefix_lengths.then_some(&prefixes[..]),
            challenge: None,
            padding: false,
        };
        repr.validate().map_err(AdvertConfigError::Flags)?;
        if !self.solicited_only {
            if self.min_interval < MIN_MULTICAST_GAP {
                return Err(AdvertConfigError::IntervalTooShort(self.min_interval));
            }
            if self.min_interval > self.max_interval {
                return Err(AdvertConfigError::IntervalOrder);
            }
            if self.max_interval * 3 > Duration::from_secs(u64::from(self.lifetime)) {
                return Err(AdvertConfigError::IntervalExceedsLifetime {
                    max_interval: self.max_interval,
                    lifetime: self.lifetime,
                });
            }
        }
        Ok(())
    }

    fn router_addrs(&self) -> Vec<RouterAddr> {
        self.routers
            .iter()
            .map(|r| RouterAddr {
                addr: r.addr,
                preference: r.preference,
            })
            .collect()
    }
}

/// A configuration the advertiser refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvertConfigError {
    #[error("{0} router addresses; Num Addrs is one byte")]
    TooManyRouters(usize),
    #[error("{0} care-of addresses; one extension holds at most {MAX_CARE_OF_ADDRS}")]
    TooManyCareOfAddrs(usize),
    #[error("multicast advertisements must go to 224.0.0.1 or 255.255.255.255, not {0}")]
    MulticastDestination(Ipv4Addr),
    #[error("an ICMP Lifetime of 0 tells mobile nodes to drop the agent at once")]
    ZeroLifetime,
    #[error("flags break RFC 5944 §2.1.1: {0}")]
    Flags(AdvertViolation),
    #[error("minimum advertisement interval {0:?} is below the {MIN_MULTICAST_GAP:?} rate limit")]
    IntervalTooShort(Duration),
    #[error("minimum advertisement interval above the maximum")]
    IntervalOrder,
    #[error(
        "maximum advertisement interval {max_interval:?} above a third of the lifetime {lifetime} s (RFC 5944 §2.1)"
    )]
    IntervalExceedsLifetime {
        max_interval: Duration,
        lifetime: u16,
    },
}

/// Counters for `mipctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AdvertStats {
    pub multicast_sent: u64,
    pub unicast_sent: u64,
    pub solicitations: u64,
    /// Solicitations that failed to parse (checksum, code, length): silently discarded.
    pub solicitations_dropped: u64,
    /// Solicitations left unanswered by the unicast rate limit.
    pub rate_limited: u64,
}

/// A small deterministic PRNG (SplitMix64) for the jitter RFC 1256 and RFC 5944 §2.1/§2.4 ask
/// for. Seeded by the caller, so simulations repeat exactly; not for anything secret.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`, to the nanosecond.
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        let x = (u128::from(self.next_u64()) * (u128::from(span) + 1)) >> 64;
        lo + Duration::from_nanos(x as u64)
    }
}

/// The advertiser of one interface.
#[derive(Debug)]
pub struct Advertiser {
    config: AdvertiserConfig,
    routers: Vec<RouterAddr>,
    prefixes: Vec<u8>,
    busy: bool,
    rng: Rng,
    /// The sequence number of the next advertisement.
    sequence: u16,
    /// Unsolicited advertisements sent, for the initial interval cap.
    unsolicited: u32,
    next_periodic: Option<Duration>,
    /// A multicast answer to a solicitation from a node we cannot unicast to.
    pending_multicast: Option<Duration>,
    last_multicast: Option<Duration>,
    /// GCRA theoretical arrival time of the unicast answers.
    unicast_tat: Duration,
    transmits: VecDeque<IcmpTransmit>,
    stats: AdvertStats,
}

impl Advertiser {
    /// Starts advertising at `now` (the first unsolicited advertisement is due at once, with
    /// sequence number 0). `seed` drives the interval jitter.
    pub fn new(config: AdvertiserConfig, now: Now, seed: u64) -> Result<Self, AdvertConfigError> {
        config.validate()?;
        Ok(Advertiser {
            routers: config.router_addrs(),
            prefixes: config.routers.iter().map(|r| r.prefix_len).collect(),
            busy: config.flags.contains(AgentFlags::B),
            next_periodic: (!config.solicited_only).then_some(now.mono),
            config,
            rng: Rng::new(seed),
            sequence: 0,
            unsolicited: 0,
            pending_multicast: None,
            last_multicast: None,
            unicast_tat: now.mono,
            transmits: VecDeque::new(),
            stats: AdvertStats::default(),
        })
    }

    pub fn config(&self) -> &AdvertiserConfig {
        &self.config
    }

    pub fn stats(&self) -> &AdvertStats {
        &self.stats
    }

    /// The sequence number the next advertisement will carry.
    pub fn sequence(&self) -> u16 {
        self.sequence
    }

    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Sets or clears B (§2.1.1), from the next advertisement on. B without F is forbidden
    /// (§2.1.1: MUST NOT), so on an agent that is not a foreign agent this does nothing and
    /// returns false.
    pub fn set_busy(&mut self, busy: bool) -> bool {
        if busy && !self.config.flags.contains(AgentFlags::F) {
            return false;
        }
        self.busy = busy;
        true
    }

    /// Processes an ICMP message received as an Agent Solicitation (the IP header stripped)
    /// from `src_ip`, with `src_mac` its link-layer source if the shell has it. §2.3: the source
    /// need not be a neighbour (a mobile node solicits from its home address).
    pub fn handle_solicitation(
        &mut self,
        now: Now,
        src_ip: Ipv4Addr,
        src_mac: Option<[u8; 6]>,
        bytes: &[u8],
    ) {
        self.stats.solicitations += 1;
        let parsed = AgentSolicitationPacket::new_checked(bytes)
            .map_err(Into::into)
            .and_then(|p| AgentSolicitationRepr::parse(&p));
        if let Err(e) = parsed {
            self.stats.solicitations_dropped += 1;
            debug!(%src_ip, error = %e, "agent solicitation dropped");
            return;
        }
        // A group MAC as a source is bogus: it cannot be answered by unicast.
        let src_mac = src_mac.filter(|m| m[0] & 1 == 0);
        if src_mac.is_none() && src_ip.is_unspecified() {
            // Nothing to unicast to: bring the next multicast advertisement forward, as far
            // as the multicast rate limit allows.
            let earliest = self
                .last_multicast
                .map_or(now.mono, |t| (t + MIN_MULTICAST_GAP).max(now.mono));
            let due = self.pending_multicast.map_or(earliest, |p| p.min(earliest));
            self.pending_multicast = Some(due);
            return;
        }
        if !self.unicast_allowed(now) {
            self.stats.rate_limited += 1;
            debug!(%src_ip, "agent solicitation not answered: rate limit");
            return;
        }
        let dst_ip = if src_ip.is_unspecified() {
            LIMITED_BROADCAST
        } else {
            src_ip
        };
        let payload = self.build();
        self.stats.unicast_sent += 1;
        self.transmits.push_back(IcmpTransmit {
            dst_ip,
            dst_mac: src_mac,
            payload,
        });
    }

    /// GCRA: at most `UNICAST_BURST` answers at once, then one per `UNICAST_INTERVAL`.
    fn unicast_allowed(&mut self, now: Now) -> bool {
        let t = self.unicast_tat.max(now.mono);
        if t - now.mono > UNICAST_INTERVAL * (UNICAST_BURST - 1) {
            return false;
        }
        self.unicast_tat = t + UNICAST_INTERVAL;
        true
    }

    /// Builds the next advertisement and takes its sequence number.
    fn build(&mut self) -> Vec<u8> {
        let flags = self.config.flags.with(AgentFlags::B, self.busy);
        let repr = AgentAdvertisementRepr {
            code: self.config.code,
            lifetime: self.config.lifetime,
            router_addrs: RouterAddrs::from_slice(&self.routers),
            sequence: self.sequence,
            registration_lifetime: self.config.registration_lifetime,
            flags,
            care_of_addrs: CareOfAddrs::from_slice(&self.config.care_of_addrs),
            prefix_lengths: self.config.prefix_lengths.then_some(&self.prefixes[..]),
            challenge: None,
            padding: false,
        }
        // §2.1.3: padded to an even ICMP length, for stacks that insist on it.
        .with_even_length();
        self.sequence = next_sequence(self.sequence);
        let mut payload = vec![0u8; repr.buffer_len()];
        // `validate` bounded every count, and the buffer is exactly `buffer_len`.
        let _ = repr.emit(&mut payload);
        payload
    }

    /// The next interval between unsolicited advertisements: the intervals after each of the
    /// first `MAX_INITIAL_ADVERTISEMENTS` are capped (RFC 1256 §4).
    fn interval(&mut self) -> Duration {
        let i = self
            .rng
            .between(self.config.min_interval, self.config.max_interval);
        if self.unsolicited <= MAX_INITIAL_ADVERTISEMENTS {
            i.min(MAX_INITIAL_ADVERT_INTERVAL.max(self.config.min_interval))
        } else {
            i
        }
    }

    pub fn handle_timeout(&mut self, now: Now) {
        let periodic = self.next_periodic.is_some_and(|t| t <= now.mono);
        let solicited = self.pending_multicast.is_some_and(|t| t <= now.mono);
        if !periodic && !solicited {
            return;
        }
        let payload = self.build();
        self.stats.multicast_sent += 1;
        self.transmits.push_back(IcmpTransmit {
            dst_ip: self.config.multicast_dst,
            dst_mac: None,
            payload,
        });
        self.last_multicast = Some(now.mono);
        self.pending_multicast = None;
        if !self.config.solicited_only {
            // A solicited multicast advertisement also restarts the unsolicited interval:
            // the link just heard one.
            if periodic {
                self.unsolicited += 1;
            }
            self.next_periodic = Some(now.mono + self.interval());
        }
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        match (self.next_periodic, self.pending_multicast) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<IcmpTransmit> {
        self.transmits.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mipx_common::wire::AgentAdvertisementPacket;

    const FA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const MN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
    const MN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

    fn t0() -> Now {
        Now {
            mono: Duration::from_secs(1000),
            unix: Duration::from_secs(1_700_000_000),
        }
    }

    fn solicitation() -> Vec<u8> {
        let mut b = vec![0u8; 8];
        AgentSolicitationRepr.emit(&mut b).unwrap();
        b
    }

    fn parse(payload: &[u8]) -> AgentAdvertisementRepr<'_> {
        AgentAdvertisementRepr::parse(&AgentAdvertisementPacket::new_checked(payload).unwrap())
            .unwrap()
    }

    /// Runs `a` until `until`, firing every timer on time; returns each transmit with its time.
    fn run(a: &mut Advertiser, now: &mut Now, until: Duration) -> Vec<(Duration, IcmpTransmit)> {
        let mut out = Vec::new();
        while let Some(t) = a.poll_timeout() {
            if t > until {
                break;
            }
            assert!(t >= now.mono, "timers never go back in time");
            *now = now.advance(t - now.mono);
            a.handle_timeout(*now);
            while let Some(x) = a.poll_transmit() {
                out.push((now.mono, x));
            }
        }
        *now = now.advance(until.saturating_sub(now.mono));
        out
    }

    fn fa_config() -> AdvertiserConfig {
        AdvertiserConfig {
            prefix_lengths: true,
            care_of_addrs: vec![FA, Ipv4Addr::new(192, 0, 2, 2)],
            ..AdvertiserConfig::foreign_agent(FA, 24, 600)
        }
    }

    #[test]
    fn sequence_numbers_follow_2_3_2() {
        assert_eq!(next_sequence(0), 1);
        assert_eq!(next_sequence(255), 256);
        assert_eq!(next_sequence(0xfffe), 0xffff);
        assert_eq!(next_sequence(0xffff), 256);

        // Through the advertiser: 0 first, then +1, and 0xffff followed by 256.
        let mut now = t0();
        let mut a = Advertiser::new(fa_config(), now, 1).unwrap();
        let mut seqs = Vec::new();
        for _ in 0..=0x1_0001u32 {
            let due = a.poll_timeout().unwrap();
            now = now.advance(due - now.mono);
            a.handle_timeout(now);
            let x = a.poll_transmit().unwrap();
            assert!(a.poll_transmit().is_none());
            seqs.push(parse(&x.payload).sequence);
        }
        assert_eq!(&seqs[..3], &[0, 1, 2]);
        assert_eq!(seqs[0xffff], 0xffff);
        assert_eq!(&seqs[0x1_0000..], &[256, 257]);
    }

    #[test]
    fn periodic_advertisements_are_randomized_within_bounds() {
        let mut now = t0();
        let start = now.mono;
        let mut a = Advertiser::new(fa_config(), now, 7).unwrap();
        let sent = run(&mut a, &mut now, start + Duration::from_secs(600));
        assert_eq!(
            sent[0].0, start,
            "the first advertisement goes out at start"
        );
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.len() > 55);
        for g in &gaps {
            assert!(
                *g >= DEFAULT_MIN_INTERVAL && *g <= DEFAULT_MAX_INTERVAL,
                "{g:?}"
            );
        }
        // Randomized: not all equal, and another seed gives another schedule.
        assert!(gaps.iter().any(|g| *g != gaps[0]));
        let mut now2 = t0();
        let mut b = Advertiser::new(fa_config(), now2, 8).unwrap();
        let sent2 = run(&mut b, &mut now2, start + Duration::from_secs(600));
        assert_ne!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            sent2.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        for (_, x) in &sent {
            assert_eq!(x.dst_ip, ALL_SYSTEMS);
            assert_eq!(x.dst_mac, None);
            let adv = parse(&x.payload);
            assert_eq!(adv.lifetime, 30);
            assert_eq!(adv.registration_lifetime, 600);
            assert_eq!(
                adv.flags,
                AgentFlags(AgentFlags::F | AgentFlags::T),
                "B clear"
            );
            assert_eq!(adv.care_of_addrs.first(), Some(FA));
            assert_eq!(adv.care_of_addrs.len(), 2);
            assert_eq!(adv.prefix_lengths, Some(&[24u8][..]));
            assert_eq!(adv.validate(), Ok(()));
            assert_eq!(x.payload.len() % 2, 0, "padded to an even length");
        }
    }

    #[test]
    fn first_intervals_are_capped_as_rfc1256_says() {
        let config = AdvertiserConfig {
            min_interval: Duration::from_secs(100),
            max_interval: Duration::from_secs(200),
            lifetime: 600,
            ..fa_config()
        };
        let mut now = t0();
        let start = now.mono;
        let mut a = Advertiser::new(config, now, 3).unwrap();
        let sent = run(&mut a, &mut now, start + Duration::from_secs(2000));
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        // min_interval is above the cap, so the first three intervals are the minimum.
        assert_eq!(&gaps[..3], &[Duration::from_secs(100); 3]);
        assert!(gaps[3..].iter().all(|g| *g >= Duration::from_secs(100)));
        assert!(gaps[3..].iter().any(|g| *g > Duration::from_secs(100)));

        let config = AdvertiserConfig {
            min_interval: Duration::from_secs(10),
            max_interval: Duration::from_secs(200),
            lifetime: 600,
            ..fa_config()
        };
        let mut now = t0();
        let mut a = Advertiser::new(config, now, 3).unwrap();
        let sent = run(&mut a, &mut now, start + Duration::from_secs(4000));
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps[..3].iter().all(|g| *g <= MAX_INITIAL_ADVERT_INTERVAL));
        assert!(gaps[3..].iter().any(|g| *g > MAX_INITIAL_ADVERT_INTERVAL));
    }

    #[test]
    fn configuration_rules() {
        assert_eq!(fa_config().validate(), Ok(()));
        assert_eq!(AdvertiserConfig::home_agent(FA, 24, 600).validate(), Ok(()));
        // §2.1: the interval at most a third of the lifetime.
        let c = AdvertiserConfig {
            max_interval: Duration::from_secs(11),
            ..fa_config()
        };
        assert!(matches!(
            c.validate(),
            Err(AdvertConfigError::IntervalExceedsLifetime { .. })
        ));
        // ... which does not matter when only answering solicitations.
        assert_eq!(
            AdvertiserConfig {
                solicited_only: true,
                ..c
            }
            .validate(),
            Ok(())
        );
        let c = AdvertiserConfig {
            min_interval: Duration::from_millis(500),
            ..fa_config()
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::IntervalTooShort(Duration::from_millis(
                500
            )))
        );
        let c = AdvertiserConfig {
            min_interval: Duration::from_secs(10),
            max_interval: Duration::from_secs(5),
            ..fa_config()
        };
        assert_eq!(c.validate(), Err(AdvertConfigError::IntervalOrder));
        // §2.1.1 flag rules.
        let c = AdvertiserConfig {
            care_of_addrs: vec![],
            ..fa_config()
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::Flags(
                AdvertViolation::ForeignAgentWithoutCareOf
            ))
        );
        let c = AdvertiserConfig {
            flags: AgentFlags(AgentFlags::H | AgentFlags::R),
            ..AdvertiserConfig::home_agent(FA, 24, 600)
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::Flags(
                AdvertViolation::RegistrationRequiredWithoutForeignAgent
            ))
        );
        let c = AdvertiserConfig {
            flags: AgentFlags(AgentFlags::T),
            ..fa_config()
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::Flags(
                AdvertViolation::NeitherForeignNorHomeAgent
            ))
        );
        let c = AdvertiserConfig {
            multicast_dst: Ipv4Addr::new(192, 0, 2, 255),
            ..fa_config()
        };
        assert!(matches!(
            c.validate(),
            Err(AdvertConfigError::MulticastDestination(_))
        ));
        let c = AdvertiserConfig {
            routers: vec![
                AdvertisedRouter {
                    addr: FA,
                    preference: 0,
                    prefix_len: 40,
                };
                1
            ],
            ..fa_config()
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::Flags(
                AdvertViolation::PrefixLengthTooLong
            ))
        );
        assert!(Advertiser::new(c, t0(), 0).is_err());
        let c = AdvertiserConfig {
            care_of_addrs: vec![FA; MAX_CARE_OF_ADDRS + 1],
            ..fa_config()
        };
        assert_eq!(
            c.validate(),
            Err(AdvertConfigError::TooManyCareOfAddrs(MAX_CARE_OF_ADDRS + 1))
        );
    }

    #[test]
    fn solicitations_are_answered_by_unicast() {
        let mut now = t0();
        let mut a = Advertiser::new(fa_config(), now, 1).unwrap();
        a.handle_timeout(now);
        assert_eq!(parse(&a.poll_transmit().unwrap().payload).sequence, 0);
        now = now.advance(Duration::from_millis(300));

        // From the home address: IP and link-layer unicast back (§2.1).
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        let x = a.poll_transmit().unwrap();
        assert_eq!((x.dst_ip, x.dst_mac), (MN, Some(MN_MAC)));
        let adv = parse(&x.payload);
        assert_eq!(adv.sequence, 1, "answers count as advertisements sent");
        assert_eq!(adv.care_of_addrs.first(), Some(FA));

        // From 0.0.0.0 with a MAC: broadcast IP, unicast MAC.
        a.handle_solicitation(now, Ipv4Addr::UNSPECIFIED, Some(MN_MAC), &solicitation());
        let x = a.poll_transmit().unwrap();
        assert_eq!((x.dst_ip, x.dst_mac), (LIMITED_BROADCAST, Some(MN_MAC)));
        assert_eq!(parse(&x.payload).sequence, 2);

        // An address but no MAC: IP unicast, the shell resolves the MAC.
        a.handle_solicitation(now, MN, None, &solicitation());
        let x = a.poll_transmit().unwrap();
        assert_eq!((x.dst_ip, x.dst_mac), (MN, None));

        // A group MAC cannot be a source: treated as no MAC.
        a.handle_solicitation(now, MN, Some([0x01, 0, 0x5e, 0, 0, 1]), &solicitation());
        assert_eq!(a.poll_transmit().unwrap().dst_mac, None);

        // Neither: the next multicast advertisement comes forward, rate-limited to 1 s after
        // the last one (sent 300 ms ago).
        let periodic = a.poll_timeout().unwrap();
        a.handle_solicitation(now, Ipv4Addr::UNSPECIFIED, None, &solicitation());
        assert!(a.poll_transmit().is_none());
        let due = a.poll_timeout().unwrap();
        assert_eq!(due, t0().mono + MIN_MULTICAST_GAP);
        assert!(due < periodic);
        now = now.advance(due - now.mono);
        a.handle_timeout(now);
        let x = a.poll_transmit().unwrap();
        assert_eq!((x.dst_ip, x.dst_mac), (ALL_SYSTEMS, None));
        assert!(a.poll_timeout().unwrap() >= now.mono + DEFAULT_MIN_INTERVAL);
        assert_eq!(a.stats().unicast_sent, 4);
        assert_eq!(a.stats().multicast_sent, 2);
        assert_eq!(a.stats().solicitations, 5);
    }

    #[test]
    fn unicast_answers_are_rate_limited() {
        let mut now = t0();
        let mut a = Advertiser::new(
            AdvertiserConfig {
                solicited_only: true,
                ..fa_config()
            },
            now,
            1,
        )
        .unwrap();
        for _ in 0..25 {
            a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        }
        let answered = std::iter::from_fn(|| a.poll_transmit()).count();
        assert_eq!(answered, UNICAST_BURST as usize);
        assert_eq!(a.stats().rate_limited, 25 - u64::from(UNICAST_BURST));
        // One more per UNICAST_INTERVAL.
        now = now.advance(UNICAST_INTERVAL - Duration::from_nanos(1));
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        assert!(a.poll_transmit().is_none());
        now = now.advance(Duration::from_nanos(1));
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        assert_eq!(std::iter::from_fn(|| a.poll_transmit()).count(), 1);
        // After a quiet second the whole burst is available again.
        now = now.advance(Duration::from_secs(1));
        for _ in 0..UNICAST_BURST {
            a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        }
        assert_eq!(
            std::iter::from_fn(|| a.poll_transmit()).count(),
            UNICAST_BURST as usize
        );
    }

    #[test]
    fn multicast_answers_are_coalesced_and_spaced() {
        let mut now = t0();
        let start = now.mono;
        let mut a = Advertiser::new(
            AdvertiserConfig {
                solicited_only: true,
                ..fa_config()
            },
            now,
            1,
        )
        .unwrap();
        // A storm of anonymous solicitations, 10 per second for 10 s.
        let mut sent = Vec::new();
        for i in 0..100u32 {
            let at = start + Duration::from_millis(100) * i;
            sent.extend(run(&mut a, &mut now, at));
            a.handle_solicitation(now, Ipv4Addr::UNSPECIFIED, None, &solicitation());
        }
        sent.extend(run(&mut a, &mut now, start + Duration::from_secs(20)));
        assert!(sent.iter().all(|(_, x)| x.dst_ip == ALL_SYSTEMS));
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= MIN_MULTICAST_GAP);
        }
        // One answer per second at most, and the storm is answered throughout.
        assert!((9..=11).contains(&sent.len()), "{}", sent.len());
        assert_eq!(a.stats().unicast_sent, 0);
    }

    #[test]
    fn answer_only_mode_sends_nothing_unsolicited() {
        let mut now = t0();
        let start = now.mono;
        let mut a = Advertiser::new(
            AdvertiserConfig {
                solicited_only: true,
                ..AdvertiserConfig::home_agent(Ipv4Addr::new(10, 1, 0, 1), 24, 600)
            },
            now,
            1,
        )
        .unwrap();
        assert_eq!(a.poll_timeout(), None);
        assert!(run(&mut a, &mut now, start + Duration::from_secs(3600)).is_empty());
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        let x = a.poll_transmit().unwrap();
        let adv = parse(&x.payload);
        assert_eq!(adv.sequence, 0, "the first advertisement after start is 0");
        assert_eq!(adv.flags, AgentFlags(AgentFlags::H));
        assert!(adv.care_of_addrs.is_empty());
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn busy_flag_at_runtime() {
        let mut now = t0();
        let mut a = Advertiser::new(fa_config(), now, 1).unwrap();
        assert!(a.set_busy(true));
        a.handle_timeout(now);
        let adv_busy = a.poll_transmit().unwrap();
        assert!(parse(&adv_busy.payload).flags.contains(AgentFlags::B));
        assert!(a.set_busy(false));
        now = now.advance(Duration::from_secs(1));
        a.handle_solicitation(now, MN, Some(MN_MAC), &solicitation());
        let adv = a.poll_transmit().unwrap();
        assert!(!parse(&adv.payload).flags.contains(AgentFlags::B));

        // A home agent alone cannot be busy (§2.1.1).
        let mut h = Advertiser::new(AdvertiserConfig::home_agent(FA, 24, 600), now, 1).unwrap();
        assert!(!h.set_busy(true));
        assert!(!h.busy());
        h.handle_timeout(now);
        let adv = h.poll_transmit().unwrap();
        assert_eq!(parse(&adv.payload).validate(), Ok(()));
    }

    #[test]
    fn bad_solicitations_are_dropped() {
        let now = t0();
        let mut a = Advertiser::new(
            AdvertiserConfig {
                solicited_only: true,
                ..fa_config()
            },
            now,
            1,
        )
        .unwrap();
        let mut bad_checksum = solicitation();
        bad_checksum[3] ^= 1;
        let mut code = solicitation();
        code[1] = 1;
        for bytes in [
            &[][..],
            &solicitation()[..7],
            &bad_checksum[..],
            &code[..],
            &[9, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            a.handle_solicitation(now, MN, Some(MN_MAC), bytes);
        }
        assert!(a.poll_transmit().is_none());
        assert_eq!(a.stats().solicitations_dropped, 5);
        // Random bytes never panic.
        let mut rng = Rng::new(99);
        for _ in 0..2000 {
            let len = (rng.next_u64() % 24) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Some(first) = b.first_mut() {
                *first = 10;
            }
            a.handle_solicitation(now, MN, None, &b);
        }
    }

    #[test]
    fn rng_between_stays_in_bounds() {
        let mut r = Rng::new(5);
        let lo = Duration::from_secs(1);
        let hi = Duration::from_millis(1250);
        let xs: Vec<Duration> = (0..1000).map(|_| r.between(lo, hi)).collect();
        assert!(xs.iter().all(|x| *x >= lo && *x <= hi));
        assert!(xs.iter().any(|x| *x < Duration::from_millis(1050)));
        assert!(xs.iter().any(|x| *x > Duration::from_millis(1200)));
        assert_eq!(r.between(hi, lo), hi);
    }
}
