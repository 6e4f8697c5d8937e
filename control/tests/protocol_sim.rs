//! Protocol simulations: a mobile node and a home agent in memory, with a virtual clock,
//! loss and clock skew (DESIGN.md §6). No sockets, no sleeping.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{MIP_PORT, ReplyCode, ReplyPacket, RequestPacket};
use mipx_control::auth::{Key, ReplayProtection, SecurityAssociation};
use mipx_control::proto::Now;
use mipx_control::proto::ha::{
    HaConfig, HaEvent, HomeAddrs, HomeAgent, MobileNodeEntry, RemovalReason,
};
use mipx_control::proto::mn::{MnConfig, MnEvent, MnState, MobileNode};

const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const COA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const COA2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SPI: u32 = 0x1000;

fn sa(key: &[u8]) -> SecurityAssociation {
    SecurityAssociation {
        spi: SPI,
        key: Key::new(key.to_vec()),
        replay: ReplayProtection::Timestamp {
            tolerance: Duration::from_secs(7),
        },
    }
}

fn ha() -> HomeAgent {
    HomeAgent::new(HaConfig {
        address: HA,
        max_lifetime: 600,
        mobile_nodes: vec![MobileNodeEntry {
            home_addrs: HomeAddrs::Single(HOME),
            sa: sa(b"shared secret"),
        }],
    })
}

fn mn(key: &[u8]) -> MobileNode {
    MobileNode::new(MnConfig {
        home_addr: HOME,
        home_agent: HA,
        sa: sa(key),
        lifetime: 1800,
        reverse_tunnel: true,
        initial_retransmit: Duration::from_secs(1),
        max_retransmit: Duration::from_secs(8),
        report_after_attempts: 3,
        nai: Some("mn1@example.org".into()),
    })
}

/// A world with one MN, one HA, a virtual clock and a loss pattern.
struct World {
    now: Now,
    mn: MobileNode,
    ha: HomeAgent,
    mn_events: Vec<MnEvent>,
    ha_events: Vec<HaEvent>,
    /// Drop the next `n` datagrams from the MN.
    lose_requests: usize,
    /// Offset applied to the HA's wall clock only.
    ha_skew: Duration,
}

impl World {
    fn new(mn: MobileNode) -> Self {
        World {
            now: Now {
                mono: Duration::from_secs(100),
                unix: Duration::from_secs(1_795_000_000),
            },
            mn,
            ha: ha(),
            mn_events: vec![],
            ha_events: vec![],
            lose_requests: 0,
            ha_skew: Duration::ZERO,
        }
    }

    fn ha_now(&self) -> Now {
        Now {
            mono: self.now.mono,
            unix: self.now.unix + self.ha_skew,
        }
    }

    /// Delivers everything in flight (zero latency) until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.mn.poll_transmit() {
                moved = true;
                assert_eq!(t.dst, SocketAddrV4::new(HA, MIP_PORT));
                if self.lose_requests > 0 {
                    self.lose_requests -= 1;
                    continue;
                }
                let from = SocketAddrV4::new(t.src.unwrap(), 43400);
                self.ha.handle_datagram(self.ha_now(), from, HA, &t.payload);
            }
            while let Some(t) = self.ha.poll_transmit() {
                moved = true;
                self.mn
                    .handle_datagram(self.now, SocketAddrV4::new(HA, MIP_PORT), &t.payload);
            }
            self.mn_events
                .extend(std::iter::from_fn(|| self.mn.poll_event()));
            self.ha_events
                .extend(std::iter::from_fn(|| self.ha.poll_event()));
            if !moved {
                break;
            }
        }
    }

    /// Advances the clock to `until`, firing timers in order.
    fn run_until(&mut self, until: Duration) {
        loop {
            self.pump();
            let next = [self.mn.poll_timeout(), self.ha.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    let t = t.max(self.now.mono);
                    self.now = self.now.advance(t - self.now.mono);
                    self.mn.handle_timeout(self.now);
                    self.ha.handle_timeout(self.ha_now());
                }
                _ => break,
            }
        }
        self.now = self.now.advance(until.saturating_sub(self.now.mono));
        self.pump();
    }
}

#[test]
fn registers_and_ha_shows_binding() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    w.pump();
    assert_eq!(w.mn.state(), MnState::Registered);
    assert!(matches!(
        w.mn_events[..],
        [MnEvent::Registered {
            care_of_addr: COA,
            lifetime: 600,
            ..
        }]
    ));
    let b = w.ha.bindings().get(HOME).expect("binding");
    assert_eq!(b.care_of_addr, COA);
    assert_eq!(
        b.lifetime, 600,
        "HA caps the 1800 s request at its 600 s maximum"
    );
    assert!(matches!(w.ha_events[..], [HaEvent::BindingAdded(_)]));
}

#[test]
fn wrong_key_is_denied_131_and_binding_cache_unchanged() {
    let mut w = World::new(mn(b"wrong secret"));
    w.mn.register(w.now, COA);
    w.pump();
    assert!(w.ha.bindings().is_empty());
    assert_eq!(w.ha.stats().rejected.get(&131), Some(&1));
    // The reply is signed with the HA's key, which the MN does not share: §3.6.2.1 makes the MN
    // discard it silently, so it keeps retrying rather than trusting an unauthenticated denial.
    assert_eq!(w.mn.stats().dropped_replies, 1);
    assert_eq!(w.mn.state(), MnState::Registering);
}

#[test]
fn stale_timestamp_gets_133_then_resync_succeeds() {
    let mut w = World::new(mn(b"shared secret"));
    w.ha_skew = Duration::from_secs(3600); // the HA's clock is an hour ahead
    w.mn.register(w.now, COA);
    w.pump();
    assert_eq!(w.ha.stats().rejected.get(&133), Some(&1));
    assert!(w.mn_events.iter().any(|e| matches!(e, MnEvent::Resynchronised { offset_ms } if (*offset_ms - 3_600_000).abs() <= 1000)));
    assert_eq!(w.mn.state(), MnState::Registered);
    assert_eq!(w.ha.bindings().get(HOME).unwrap().care_of_addr, COA);
}

#[test]
fn replayed_request_is_rejected_133() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    let req = w.mn.poll_transmit().unwrap();
    let from = SocketAddrV4::new(COA, 43400);
    w.ha.handle_datagram(w.now, from, HA, &req.payload);
    let first = w.ha.poll_transmit().unwrap();
    assert_eq!(
        ReplyPacket::new_checked(&first.payload[..]).unwrap().code(),
        ReplyCode::Accepted
    );
    // The attacker replays the same authentic bytes a second later.
    w.ha.handle_datagram(
        w.now.advance(Duration::from_secs(1)),
        from,
        HA,
        &req.payload,
    );
    let second = w.ha.poll_transmit().unwrap();
    assert_eq!(
        ReplyPacket::new_checked(&second.payload[..])
            .unwrap()
            .code(),
        ReplyCode::HaIdentificationMismatch
    );
    assert_eq!(w.ha.stats().accepted, 1);
}

#[test]
fn retransmits_with_backoff_under_loss() {
    let mut w = World::new(mn(b"shared secret"));
    w.lose_requests = 3;
    let t0 = w.now.mono;
    w.mn.register(w.now, COA);
    w.run_until(t0 + Duration::from_secs(20));
    assert_eq!(w.mn.state(), MnState::Registered);
    assert_eq!(w.mn.stats().requests_sent, 4);
    assert_eq!(w.mn.stats().retransmissions, 3);
    // 1 s, 2 s, 4 s: registered by the fourth request at t0 + 7 s.
    let b = w.ha.bindings().get(HOME).unwrap();
    assert_eq!(b.registered_at, t0 + Duration::from_secs(7));
    assert!(
        w.mn_events
            .iter()
            .any(|e| matches!(e, MnEvent::RegistrationTimeout { attempts: 3 }))
    );
}

#[test]
fn renews_before_expiry_and_moves() {
    let mut w = World::new(mn(b"shared secret"));
    let t0 = w.now.mono;
    w.mn.register(w.now, COA);
    // Over three lifetimes the MN keeps renewing at 3/4 of 600 s; the HA never expires it.
    w.run_until(t0 + Duration::from_secs(1800));
    assert!(w.ha.bindings().get(HOME).is_some());
    assert_eq!(w.ha.stats().expired, 0);
    assert!(w.ha.stats().accepted >= 4);
    w.mn.register(w.now, COA2);
    w.pump();
    assert_eq!(w.ha.bindings().get(HOME).unwrap().care_of_addr, COA2);
    assert!(
        matches!(w.ha_events.last(), Some(HaEvent::BindingUpdated { old, new }) if old.care_of_addr == COA && new.care_of_addr == COA2)
    );
}

#[test]
fn lifetime_expiry_removes_binding_when_mn_goes_silent() {
    let mut w = World::new(mn(b"shared secret"));
    let t0 = w.now.mono;
    w.mn.register(w.now, COA);
    w.pump();
    w.lose_requests = usize::MAX; // the MN drops off the network
    w.run_until(t0 + Duration::from_secs(601));
    assert!(w.ha.bindings().is_empty());
    assert_eq!(w.ha.stats().expired, 1);
    assert!(w.ha_events.iter().any(|e| matches!(
        e,
        HaEvent::BindingRemoved {
            reason: RemovalReason::Expired,
            ..
        }
    )));
    assert!(w.mn_events.contains(&MnEvent::Expired));
}

#[test]
fn deregistration_removes_binding() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    w.pump();
    w.now = w.now.advance(Duration::from_secs(5));
    w.mn.deregister(w.now);
    w.pump();
    assert!(w.ha.bindings().is_empty());
    assert_eq!(w.mn.state(), MnState::Idle);
    assert!(w.mn_events.contains(&MnEvent::Deregistered));
    assert!(w.ha_events.iter().any(|e| matches!(
        e,
        HaEvent::BindingRemoved {
            reason: RemovalReason::Deregistered,
            ..
        }
    )));
    // Returning home: registering the home address deregisters too (lifetime 0, CoA = home).
    w.mn.register(w.now, COA);
    w.pump();
    w.mn.register(w.now, HOME);
    let t = w.mn.poll_transmit().unwrap();
    let req = RequestPacket::new_checked(&t.payload[..]).unwrap();
    assert_eq!((req.lifetime(), req.care_of_addr()), (0, HOME));
}

#[test]
fn bad_input_never_changes_the_cache() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    let good = w.mn.poll_transmit().unwrap().payload;
    let from = SocketAddrV4::new(COA, 43400);
    let before = w.ha.stats().clone();
    // Truncations at every length, a flipped bit in every byte, and an unknown mandatory type.
    for n in 0..good.len() {
        w.ha.handle_datagram(w.now, from, HA, &good[..n]);
    }
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        w.ha.handle_datagram(w.now, from, HA, &bad);
    }
    let mut unknown = good[..24].to_vec();
    unknown.extend_from_slice(&[37, 2, 0, 0]);
    unknown.extend_from_slice(&good[24..]);
    w.ha.handle_datagram(w.now, from, HA, &unknown);
    assert!(
        w.ha.bindings().is_empty(),
        "no corrupted request may create a binding"
    );
    let s = w.ha.stats();
    assert_eq!(s.accepted, before.accepted);
    assert!(
        s.dropped_malformed >= 24
            && s.dropped_unknown_extension >= 1
            && s.dropped_bad_extension >= 1
    );
    assert!(
        s.rejected.get(&131).copied().unwrap_or(0) > 0,
        "bit flips in covered bytes fail authentication"
    );
    // Denials never answer without a valid authenticator, so every reply parses and verifies.
    while let Some(t) = w.ha.poll_transmit() {
        assert!(ReplyPacket::new_checked(&t.payload[..]).is_ok());
    }
    // The genuine request still works afterwards.
    w.ha.handle_datagram(w.now, from, HA, &good);
    assert_eq!(w.ha.bindings().get(HOME).unwrap().care_of_addr, COA);
}

#[test]
fn unknown_spi_or_home_is_silently_dropped() {
    let mut w = World::new(MobileNode::new(MnConfig {
        home_addr: Ipv4Addr::new(10, 1, 0, 99),
        ..mn(b"shared secret").config().clone()
    }));
    w.mn.register(w.now, COA);
    w.pump();
    assert_eq!(w.ha.stats().dropped_unknown_sa, 1);
    assert!(w.ha.stats().rejected.is_empty());
}

/// A restarted home agent adopts a binding from the dataplane with its remaining lifetime and
/// its replay state: the old request replayed to the new process is still refused (133), and
/// a binding that ran out while nobody was watching is not adopted.
#[test]
fn restored_binding_keeps_lifetime_and_replay_protection() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    let req = w.mn.poll_transmit().unwrap();
    let from = SocketAddrV4::new(COA, 43400);
    w.ha.handle_datagram(w.now, from, HA, &req.payload);
    let _ = w.ha.poll_transmit();
    let binding = w.ha.bindings().get(HOME).unwrap().clone();
    let expires_unix = w.now.unix + binding.remaining(w.now.mono);

    // A new process: different monotonic origin, 2 s later on the wall clock (inside the
    // 7-second replay window, so only the restored identification can refuse the replay).
    let mut fresh = ha();
    let later = Now {
        mono: Duration::from_secs(5),
        unix: w.now.unix + Duration::from_secs(2),
    };
    assert!(fresh.restore(later, binding.clone(), expires_unix));
    let restored = fresh.bindings().get(HOME).unwrap();
    assert_eq!(restored.care_of_addr, COA);
    assert_eq!(
        restored.remaining(later.mono),
        binding.remaining(w.now.mono) - Duration::from_secs(2)
    );
    assert!(fresh.poll_event().is_none(), "restoring is not a change");

    fresh.handle_datagram(later, from, HA, &req.payload);
    let reply = fresh.poll_transmit().unwrap();
    assert_eq!(
        ReplyPacket::new_checked(&reply.payload[..]).unwrap().code(),
        ReplyCode::HaIdentificationMismatch
    );

    let mut too_late = ha();
    let after_expiry = Now {
        mono: Duration::from_secs(5),
        unix: expires_unix + Duration::from_secs(1),
    };
    assert!(!too_late.restore(after_expiry, binding, expires_unix));
    assert!(too_late.bindings().is_empty());
}
