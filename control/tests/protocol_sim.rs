//! Protocol simulations: a mobile node and a home agent in memory, with a virtual clock,
//! loss and clock skew (DESIGN.md §6). No sockets, no sleeping.

#[expect(
    dead_code,
    reason = "this simulation builds requests only: `Msg::reply` and `Msg::bytes` stay unused"
)]
mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{
    Extension, ExtensionIter, MIP_PORT, ReplyCode, ReplyPacket, ReplyRepr, RequestFlags,
    RequestPacket, UdpTunnelReply,
};
use mipx_control::auth::{self, Key};
use mipx_control::binding::Binding;
use mipx_control::proto::ha::{
    ForeignAgentEntry, HaEvent, HomeAgent, RemovalReason, Subnet, UdpTunnelPolicy,
};
use mipx_control::proto::mn::{MnConfig, MnEvent, MnState, MobileNode, NatTraversalMode};
use mipx_control::proto::{Now, Transmit, ntp_timestamp};
use util::{
    FA_HA, FA_HA_KEY, FA_HA_SPI, HA, HOME, KEY, MN_HA, MN_NAI, Msg, NAI, SPI, START, auth_exts,
    ha_config, mn_config, parse_reply, sa, verifies,
};

const COA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const COA2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn ha() -> HomeAgent {
    HomeAgent::new(ha_config(HA, HOME, sa(SPI, KEY)))
}

fn mn(key: &[u8]) -> MobileNode {
    MobileNode::new(MnConfig {
        lifetime: 1800,
        nai: Some(std::str::from_utf8(NAI).expect("an ASCII NAI").into()),
        ..mn_config(HOME, HA, sa(SPI, key))
    })
}

/// An edit of a message on its way.
type Edit<'a> = dyn Fn(&mut Vec<u8>) + 'a;

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
    /// A NAT in front of the MN: the public address and port its datagrams leave with. The
    /// home agent's datagrams reach the MN only if sent there (a forgotten mapping drops them).
    nat: Option<SocketAddrV4>,
    /// Datagrams from the HA that the NAT dropped (no mapping).
    nat_dropped: usize,
}

impl World {
    fn new(mn: MobileNode) -> Self {
        World {
            now: START,
            mn,
            ha: ha(),
            mn_events: vec![],
            ha_events: vec![],
            lose_requests: 0,
            ha_skew: Duration::ZERO,
            nat: None,
            nat_dropped: 0,
        }
    }

    fn ha_now(&self) -> Now {
        Now {
            mono: self.now.mono,
            unix: self.now.unix + self.ha_skew,
        }
    }

    /// Moves what both engines reported into `mn_events` and `ha_events`.
    fn record_events(&mut self) {
        self.mn_events
            .extend(std::iter::from_fn(|| self.mn.poll_event()));
        self.ha_events
            .extend(std::iter::from_fn(|| self.ha.poll_event()));
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
                let from = self.nat.unwrap_or(SocketAddrV4::new(t.src.unwrap(), 43400));
                self.ha.handle_datagram(self.ha_now(), from, HA, &t.payload);
            }
            while let Some(t) = self.ha.poll_transmit() {
                moved = true;
                if self.nat.is_some_and(|nat| t.dst != nat) {
                    self.nat_dropped += 1;
                    continue;
                }
                self.mn
                    .handle_datagram(self.now, SocketAddrV4::new(HA, MIP_PORT), &t.payload);
            }
            self.record_events();
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

    /// One second later, the mobile node registers `coa`, but its request is edited by `edit`
    /// and re-signed on the way, and reaches the home agent from `from`, sent to `to`. The home
    /// agent's one reply is handed to the mobile node and returned as it was on the wire.
    fn edited_registration(
        &mut self,
        coa: Ipv4Addr,
        from: SocketAddrV4,
        to: Ipv4Addr,
        edit: &Edit<'_>,
    ) -> Transmit {
        self.now = self.now.advance(Duration::from_secs(1));
        self.mn.register(self.now, coa);
        let mut bytes = self.mn.poll_transmit().unwrap().payload;
        edit(&mut bytes);
        self.ha
            .handle_datagram(self.ha_now(), from, to, &resign(bytes));
        let reply = self.ha.poll_transmit().expect("a reply");
        assert!(self.ha.poll_transmit().is_none(), "one reply");
        self.mn
            .handle_datagram(self.now, SocketAddrV4::new(HA, MIP_PORT), &reply.payload);
        self.record_events();
        reply
    }

    /// The mobile node registers `COA`, accepted with code 0 (no 'S'); the events are cleared.
    /// Returns the binding, which a later denial must leave as it is.
    fn registered(&mut self) -> Binding {
        self.mn.register(self.now, COA);
        self.pump();
        assert!(matches!(
            self.mn_events[..],
            [MnEvent::Registered {
                code: ReplyCode::Accepted,
                ..
            }]
        ));
        self.mn_events.clear();
        self.ha_events.clear();
        self.ha.bindings().get(HOME).unwrap().clone()
    }

    /// Checks that `reply` denies with `code` and nothing changed: the home agent's binding is
    /// still `before` and it reported no event; the mobile node reported the denial. Returns
    /// the reply's fixed part.
    fn denied_unchanged(
        &mut self,
        reply: &Transmit,
        code: ReplyCode,
        before: &Binding,
        what: &str,
    ) -> ReplyRepr {
        let r = reply_repr(&reply.payload);
        assert_eq!((r.code, r.lifetime), (code, 0), "{what}");
        assert_eq!(self.ha.bindings().get(HOME), Some(before), "{what}");
        assert!(self.ha_events.is_empty(), "{what}");
        assert_eq!(
            self.mn_events.pop(),
            Some(MnEvent::Denied { code }),
            "{what}"
        );
        r
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
    assert!(
        w.mn_events
            .iter()
            .any(|e| matches!(e, MnEvent::Deregistered { trusted: false, .. }))
    );
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

/// The NAT's public side in the RFC 3519 simulations.
const NAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 61_000);

fn mn_with(mode: NatTraversalMode) -> MobileNode {
    let mut config = mn(b"shared secret").config().clone();
    config.nat_traversal.mode = mode;
    MobileNode::new(config)
}

fn ha_with(policy: UdpTunnelPolicy) -> HomeAgent {
    let mut config = ha().config().clone();
    config.udp_tunnel = policy;
    HomeAgent::new(config)
}

/// The UDP Tunnel Reply extension of a reply, if any.
fn udp_reply(payload: &[u8]) -> Option<UdpTunnelReply> {
    ReplyPacket::new_checked(payload)
        .unwrap()
        .extensions()
        .find_map(|e| match e {
            Ok((_, Extension::UdpTunnelReply(r))) => Some(r),
            _ => None,
        })
}

fn reply_code(payload: &[u8]) -> ReplyCode {
    ReplyPacket::new_checked(payload).unwrap().code()
}

fn reply_repr(payload: &[u8]) -> ReplyRepr {
    ReplyRepr::parse(&ReplyPacket::new_checked(payload).unwrap()).unwrap()
}

/// RFC 3519 §4.6: a request whose source differs from its care-of address came through a NAT;
/// the home agent assents in an authenticated UDP Tunnel Reply with its keepalive interval, and
/// tunnels to the address and port the request came from.
#[test]
fn behind_a_nat_the_binding_gets_a_udp_tunnel() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    let req = w.mn.poll_transmit().unwrap();
    w.ha.handle_datagram(w.now, NAT, HA, &req.payload);
    let reply = w.ha.poll_transmit().unwrap();
    assert_eq!(reply.dst, NAT);
    assert_eq!(reply_code(&reply.payload), ReplyCode::Accepted);
    assert_eq!(
        udp_reply(&reply.payload),
        Some(UdpTunnelReply {
            reply_code: 0,
            forced: false,
            keepalive_interval: 110
        })
    );
    let b = w.ha.bindings().get(HOME).unwrap();
    assert_eq!((b.care_of_addr, b.udp_tunnel), (COA, Some(NAT)));
    assert_eq!(w.ha.stats().udp_tunnels, 1);

    w.mn.handle_datagram(w.now, SocketAddrV4::new(HA, MIP_PORT), &reply.payload);
    assert!(matches!(
        w.mn.poll_event(),
        Some(MnEvent::Registered {
            udp_tunnel: true,
            ..
        })
    ));
    assert_eq!(w.mn.udp_tunnel(), Some(Duration::from_secs(110)));
}

/// §4.6: without a NAT (and without F) the home agent declines in the reply, and the mobile
/// node uses IP-in-IP; a home agent that does not answer 144 at all (no extension 44) must
/// not be UDP-tunnelled to either (§4.4).
#[test]
fn without_a_nat_udp_tunnelling_is_declined() {
    let mut w = World::new(mn(b"shared secret"));
    w.mn.register(w.now, COA);
    let req = w.mn.poll_transmit().unwrap();
    let packet = RequestPacket::new_checked(&req.payload[..]).unwrap();
    let ext = packet
        .extensions()
        .map(|e| e.unwrap().1)
        .collect::<Vec<_>>();
    assert!(
        matches!(ext[0], Extension::UdpTunnelRequest(r) if !r.force && r.encapsulation == 4),
        "the request goes first, before the MN-HA authentication: {ext:?}"
    );
    assert!(matches!(ext.last(), Some(Extension::MnHaAuth(_))));
    w.ha.handle_datagram(w.now, SocketAddrV4::new(COA, 43400), HA, &req.payload);
    let reply = w.ha.poll_transmit().unwrap();
    assert_eq!(reply_code(&reply.payload), ReplyCode::Accepted);
    assert_eq!(udp_reply(&reply.payload).map(|r| r.reply_code), Some(64));
    assert_eq!(w.ha.bindings().get(HOME).unwrap().udp_tunnel, None);
    assert_eq!(w.ha.stats().udp_tunnels_declined, 1);
    w.mn.handle_datagram(w.now, SocketAddrV4::new(HA, MIP_PORT), &reply.payload);
    assert!(matches!(
        w.mn.poll_event(),
        Some(MnEvent::Registered {
            udp_tunnel: false,
            ..
        })
    ));
    assert_eq!(w.mn.udp_tunnel(), None);

    // With NAT traversal off the extension is not sent at all.
    let mut off = mn_with(NatTraversalMode::Off);
    off.register(w.now, COA);
    let req = off.poll_transmit().unwrap();
    assert!(
        !RequestPacket::new_checked(&req.payload[..])
            .unwrap()
            .extensions()
            .any(|e| matches!(e, Ok((_, Extension::UdpTunnelRequest(_)))))
    );
}

/// §3.1.1: F forces UDP tunnelling without a NAT, unless the home agent forbids it (129,
/// §4.6.1); a home agent with traversal disabled refuses a NATed request with 129 too.
#[test]
fn forced_tunnelling_and_policy() {
    let mut w = World::new(mn_with(NatTraversalMode::Force));
    w.mn.register(w.now, COA);
    w.pump();
    let b = w.ha.bindings().get(HOME).unwrap();
    assert_eq!(b.udp_tunnel, Some(SocketAddrV4::new(COA, 43400)));
    assert_eq!(w.mn.udp_tunnel(), Some(Duration::from_secs(110)));

    let mut strict = World::new(mn_with(NatTraversalMode::Force));
    strict.ha = ha_with(UdpTunnelPolicy {
        allow_forced: false,
        ..UdpTunnelPolicy::default()
    });
    strict.mn.register(strict.now, COA);
    strict.pump();
    assert!(strict.ha.bindings().is_empty());
    assert!(matches!(
        strict.mn_events[..],
        [MnEvent::Denied {
            code: ReplyCode::HaAdminProhibited
        }]
    ));

    let mut disabled = World::new(mn(b"shared secret"));
    disabled.ha = ha_with(UdpTunnelPolicy {
        enabled: false,
        ..UdpTunnelPolicy::default()
    });
    disabled.nat = Some(NAT);
    disabled.mn.register(disabled.now, COA);
    disabled.pump();
    assert!(disabled.ha.bindings().is_empty());
    assert_eq!(disabled.ha.stats().rejected.get(&129), Some(&1));
}

/// Re-signs a request or a reply after a test edited it (the MN-HA extension is the last 22
/// bytes).
fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes.len() - 22;
    mipx_control::auth::sign(&mut bytes, at, &Key::new(b"shared secret".to_vec()));
    bytes
}

/// §4.6.1: authenticated requests that misuse the extension get the RFC's codes: D clear or
/// Reserved 3 set (134), an encapsulation other than IP-in-UDP (142).
#[test]
fn malformed_udp_tunnel_requests_get_their_codes() {
    let mut w = World::new(mn(b"shared secret"));
    let mut case = |edit: &Edit<'_>| {
        let reply = w.edited_registration(COA, NAT, HA, &|bytes| {
            // The UDP Tunnel Request is the first extension: [144, 6, sub-type, rsv1, F|R,
            // encap, rsv3, rsv3] at offset 24.
            assert_eq!(bytes[24], 144);
            edit(bytes);
        });
        reply_code(&reply.payload)
    };
    assert_eq!(
        case(&|b| b[1] &= !RequestFlags::D),
        ReplyCode::HaPoorlyFormedRequest
    );
    assert_eq!(case(&|b| b[31] = 1), ReplyCode::HaPoorlyFormedRequest);
    assert_eq!(case(&|b| b[29] = 55), ReplyCode::HaUdpEncapUnavailable);
    assert_eq!(case(&|b| b[29] = 47), ReplyCode::HaUdpEncapUnavailable);
    assert_eq!(
        case(&|b| {
            b[29] = 0;
            b[1] |= RequestFlags::M;
        }),
        ReplyCode::HaUdpEncapUnavailable
    );
    assert_eq!(case(&|_| {}), ReplyCode::Accepted);
    assert!(w.ha.bindings().get(HOME).unwrap().udp_tunnel.is_some());
}

/// RFC 5944 §3.8.2.2, §3.8.3.2: this home agent keeps one binding per home address, so a
/// request that asks for simultaneous bindings ('S') is accepted with code 1 and replaces the
/// previous binding; the mobile node takes code 1 as an acceptance (§3.4). Without 'S', 0.
#[test]
fn simultaneous_bindings_are_accepted_with_code_1_and_replace_the_binding() {
    let mut w = World::new(mn(b"shared secret"));
    let old = w.registered();
    let from = SocketAddrV4::new(COA2, 43400);
    let reply = w.edited_registration(COA2, from, HA, &|b| b[1] |= RequestFlags::S);
    let r = reply_repr(&reply.payload);
    assert_eq!(
        (r.code, r.lifetime),
        (ReplyCode::AcceptedNoSimultaneousBindings, 600)
    );
    assert_eq!(u8::from(r.code), 1);
    assert_eq!((reply.src, reply.dst), (Some(HA), from));
    // The old binding is gone, not kept beside the new one.
    assert_eq!(w.ha.bindings().len(), 1);
    assert_eq!(w.ha.bindings().get(HOME).unwrap().care_of_addr, COA2);
    assert!(matches!(
        &w.ha_events[..],
        [HaEvent::BindingUpdated { old: o, new }] if *o == old && new.care_of_addr == COA2
    ));
    let s = w.ha.stats();
    assert_eq!(s.accepted, 2);
    assert!(s.rejected.is_empty(), "code 1 is no denial");
    assert!(matches!(
        w.mn_events[..],
        [MnEvent::Registered {
            care_of_addr: COA2,
            code: ReplyCode::AcceptedNoSimultaneousBindings,
            ..
        }]
    ));
    assert_eq!(w.mn.state(), MnState::Registered);
    assert_eq!(w.mn.registration(w.now).unwrap().0, COA2);
}

/// RFC 5944 §3.8.2.1, §3.8.3.2: a request naming another home agent, or sent to a broadcast
/// address (dynamic home agent discovery, §3.6.1.2), is denied with 136, and the reply names
/// this home agent's unicast address, which is also its IP source (§3.8.3.1: never the
/// broadcast address the request went to). The binding is untouched, and the mobile node keeps
/// its registration.
#[test]
fn unknown_home_agent_address_is_denied_136_from_our_unicast_address() {
    const OTHER_HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const BROADCAST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 255);
    let mut w = World::new(mn(b"shared secret"));
    let before = w.registered();
    let name = |ha: Ipv4Addr| move |b: &mut Vec<u8>| b[8..12].copy_from_slice(&ha.octets());
    let from = SocketAddrV4::new(COA2, 43400);
    for (what, to, edit) in [
        ("another home agent named", HA, name(OTHER_HA)),
        (
            "to the broadcast address, naming it",
            BROADCAST,
            name(BROADCAST),
        ),
        ("to the broadcast address, naming us", BROADCAST, name(HA)),
    ] {
        let reply = w.edited_registration(COA2, from, to, &edit);
        let code = ReplyCode::HaUnknownHomeAgentAddress;
        let r = w.denied_unchanged(&reply, code, &before, what);
        assert_eq!(r.home_agent, HA, "{what}");
        assert_eq!((reply.src, reply.dst), (Some(HA), from), "{what}");
    }
    let s = w.ha.stats();
    assert_eq!((s.accepted, s.rejected.get(&136)), (1, Some(&3)));
    assert_eq!(w.mn.registration(w.now).unwrap().0, COA);
    assert_eq!(w.mn.stats().denied, 3);
}

/// RFC 3024 §3.3 and §4.3.1 (code 139 is RFC 3024's): a home agent that cannot provide the
/// requested encapsulation MUST deny with 139. This one tunnels IP-in-IP only, so minimal
/// ('M') and GRE ('G') encapsulation are refused, with or without a UDP Tunnel Request that
/// found no NAT (RFC 3519 §3.1.4: then 'M' and 'G' decide); the binding is untouched. Behind a
/// NAT the UDP tunnel's Encapsulation field (4, IP-in-UDP) decides instead, and 'M' is no
/// obstacle.
#[test]
fn unsupported_encapsulation_is_denied_139_and_the_binding_kept() {
    let mut w = World::new(mn(b"shared secret"));
    let before = w.registered();
    let from = SocketAddrV4::new(COA, 43400);
    let cases: [(&str, &Edit<'_>); 3] = [
        ("M", &|b| b[1] |= RequestFlags::M),
        ("G", &|b| b[1] |= RequestFlags::G),
        ("M, no UDP Tunnel Request", &|b| {
            assert_eq!(b[24], 144);
            b[1] |= RequestFlags::M;
            b.drain(24..32);
        }),
    ];
    for (what, edit) in cases {
        let reply = w.edited_registration(COA, from, HA, edit);
        let code = ReplyCode::HaEncapsulationUnavailable;
        let r = w.denied_unchanged(&reply, code, &before, what);
        assert_eq!(u8::from(r.code), 139);
    }
    let s = w.ha.stats();
    assert_eq!((s.accepted, s.rejected.get(&139)), (1, Some(&3)));

    let reply = w.edited_registration(COA, NAT, HA, &|b| b[1] |= RequestFlags::M);
    assert_eq!(reply_code(&reply.payload), ReplyCode::Accepted);
    assert_eq!(w.ha.bindings().get(HOME).unwrap().udp_tunnel, Some(NAT));
}

/// §4.9-4.10: keepalives every K seconds, answered by the home agent through the tunnel. When
/// the NAT forgets the mapping and the next datagram leaves from another port, the home agent
/// neither answers (§4.3: wrong port) nor moves the tunnel on its own; the mobile node sees its
/// keepalives go unanswered and re-registers, and the tunnel follows the authenticated request.
#[test]
fn keepalives_detect_a_lost_nat_mapping() {
    let mut w = World::new(mn(b"shared secret"));
    w.ha = ha_with(UdpTunnelPolicy {
        keepalive_interval: 20,
        ..UdpTunnelPolicy::default()
    });
    w.nat = Some(NAT);
    let start = w.now.mono;
    w.mn.register(w.now, COA);
    w.pump();
    assert_eq!(w.mn.udp_tunnel(), Some(Duration::from_secs(20)));

    // Three intervals: three keepalives, three answers, nothing else on the wire.
    w.run_until(start + Duration::from_secs(65));
    assert_eq!(w.mn.stats().keepalives_sent, 3);
    assert_eq!(w.mn.stats().keepalive_replies, 3);
    assert_eq!(w.ha.stats().keepalives, 3);
    assert_eq!(w.mn.stats().requests_sent, 1);

    // The NAT reboots: the MN's datagrams now leave from another port.
    let rebound = SocketAddrV4::new(*NAT.ip(), 61_999);
    w.nat = Some(rebound);
    w.ha_events.clear();
    w.run_until(start + Duration::from_secs(100));
    assert!(
        w.ha.stats().dropped_tunnel_data >= 1,
        "keepalives from the new port are not answered"
    );
    assert_eq!(w.mn.stats().nat_mapping_losses, 1);
    assert!(w.mn_events.contains(&MnEvent::NatMappingLost));
    assert_eq!(w.mn.stats().requests_sent, 2, "one re-registration");
    assert_eq!(
        w.ha.bindings().get(HOME).unwrap().udp_tunnel,
        Some(rebound),
        "the tunnel follows the authenticated re-registration"
    );
    assert!(matches!(
        w.ha_events[..],
        [HaEvent::BindingUpdated { ref old, ref new }]
            if old.udp_tunnel == Some(NAT) && new.udp_tunnel == Some(rebound)
    ));
    // Detection took one interval plus the unanswered retries (3 × 2 s), at most.
    let replies = w.mn.stats().keepalive_replies;
    w.run_until(start + Duration::from_secs(125));
    assert!(
        w.mn.stats().keepalive_replies > replies,
        "keepalives answered again"
    );
}

/// Keepalive datagrams that are malformed, for another home address, or from the right
/// address but a wrong port are dropped and counted, and never answered.
#[test]
fn bad_keepalives_are_dropped() {
    use mipx_common::wire::{ICMP_ECHO_REQUEST, KeepaliveRepr};
    let keepalive_message =
        |src: Ipv4Addr, dst: Ipv4Addr, ip_id: u16, icmp_type: u8, echo: &[u8]| {
            let k = KeepaliveRepr {
                src,
                dst,
                ip_id,
                icmp_type,
                echo,
            };
            let mut out = vec![0u8; k.buffer_len()];
            k.emit(&mut out).unwrap();
            out
        };
    let mut w = World::new(mn(b"shared secret"));
    w.nat = Some(NAT);
    w.mn.register(w.now, COA);
    w.pump();
    let good = keepalive_message(HOME, HA, 1, ICMP_ECHO_REQUEST, &[0, 1, 0, 1]);
    w.ha.handle_datagram(w.now, NAT, HA, &good);
    assert!(
        w.ha.poll_transmit().is_some(),
        "the genuine keepalive is answered"
    );
    let other_port = SocketAddrV4::new(*NAT.ip(), 1);
    w.ha.handle_datagram(w.now, other_port, HA, &good);
    let stranger = keepalive_message(
        Ipv4Addr::new(10, 1, 0, 77),
        HA,
        1,
        ICMP_ECHO_REQUEST,
        &[0; 4],
    );
    w.ha.handle_datagram(w.now, NAT, HA, &stranger);
    for n in 0..good.len() {
        w.ha.handle_datagram(w.now, NAT, HA, &good[..n]);
    }
    // Every bit flip breaks a checksum or a checked field, except in the tunnel header's
    // Reserved bytes (2-3), which a receiver MUST ignore (§3.3).
    for i in (0..good.len()).filter(|i| !(2..4).contains(i)) {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        w.ha.handle_datagram(w.now, NAT, HA, &bad);
    }
    assert!(w.ha.poll_transmit().is_none(), "nothing else is answered");
    assert_eq!(w.ha.stats().keepalives, 1);
    assert!(w.ha.stats().dropped_tunnel_data >= 2 * good.len() as u64 - 2);
}

fn i_ha(trusted: &[Subnet]) -> HomeAgent {
    let mut config = ha().config().clone();
    config.trusted_networks = Some(trusted.to_vec());
    HomeAgent::new(config)
}

fn has_tnc(payload: &[u8]) -> bool {
    ReplyPacket::new_checked(payload)
        .unwrap()
        .extensions()
        .any(|e| matches!(e, Ok((_, Extension::TrustedNetworksConfigured))))
}

/// RFC 5265 §4.3: an i-HA answers only trusted sources, and its replies to them carry the
/// Trusted Networks Configured extension under the authenticator; anything else, even a
/// request that would be denied or a malformed one, gets no answer at all, and is counted.
#[test]
fn internal_home_agent_answers_only_trusted_networks() {
    let inside = Subnet {
        addr: Ipv4Addr::new(192, 0, 2, 0),
        len: 24,
    };
    let mut w = World::new(mn(b"shared secret"));
    w.ha = i_ha(&[inside]);
    w.mn.register(w.now, COA);
    let req = w.mn.poll_transmit().unwrap().payload;
    w.ha.handle_datagram(w.now, SocketAddrV4::new(COA, 43400), HA, &req);
    let reply = w.ha.poll_transmit().expect("a trusted source is answered");
    assert_eq!(reply_code(&reply.payload), ReplyCode::Accepted);
    assert!(has_tnc(&reply.payload));
    // The extension sits before the authenticator, so it is covered: the MN accepts the reply
    // and counts it (§4.1).
    assert!(ext_at(&reply.payload, TNC[0]) < ext_at(&reply.payload, MN_HA));
    w.mn.handle_datagram(w.now, SocketAddrV4::new(HA, MIP_PORT), &reply.payload);
    assert!(matches!(
        w.mn.poll_event(),
        Some(MnEvent::Registered { trusted: true, .. })
    ));

    // From outside every trusted subnet: silence, whatever the datagram.
    let outside = SocketAddrV4::new(COA2, 43400);
    w.ha.handle_datagram(w.now, outside, HA, &req);
    w.ha.handle_datagram(w.now, outside, HA, b"\x01garbage");
    w.ha.handle_datagram(w.now, outside, HA, &req[..10]);
    assert!(w.ha.poll_transmit().is_none());
    assert_eq!(w.ha.stats().dropped_untrusted, 3);
    assert_eq!(
        w.ha.stats().requests,
        1,
        "untrusted datagrams are not even parsed"
    );

    // A denial to a trusted source (wrong key: 131) still carries the extension: §4.3 asks
    // for it in every reply to a trusted address.
    let mut wrong = World::new(mn(b"wrong secret"));
    wrong.ha = i_ha(&[inside]);
    wrong.mn.register(wrong.now, COA);
    let req = wrong.mn.poll_transmit().unwrap().payload;
    wrong
        .ha
        .handle_datagram(wrong.now, SocketAddrV4::new(COA, 43400), HA, &req);
    let denial = wrong.ha.poll_transmit().unwrap().payload;
    assert_eq!(reply_code(&denial), ReplyCode::HaMobileNodeFailedAuth);
    assert!(has_tnc(&denial));
    assert_eq!(wrong.ha.stats().rejected.get(&131), Some(&1));

    // None trusted: an i-HA with an empty list answers nobody.
    let mut nobody = World::new(mn(b"shared secret"));
    nobody.ha = i_ha(&[]);
    nobody.mn.register(nobody.now, COA);
    nobody.pump();
    assert!(nobody.ha.bindings().is_empty());
    assert!(nobody.mn_events.is_empty());
    assert_eq!(nobody.ha.stats().dropped_untrusted, 1);

    // A plain home agent never sends the extension.
    let mut plain = World::new(mn(b"shared secret"));
    plain.mn.register(plain.now, COA);
    let req = plain.mn.poll_transmit().unwrap().payload;
    plain
        .ha
        .handle_datagram(plain.now, SocketAddrV4::new(COA, 43400), HA, &req);
    assert!(!has_tnc(&plain.ha.poll_transmit().unwrap().payload));
}

/// The Trusted Networks Configured extension as RFC 5265 §3.4 draws it: Type 149, Length 2,
/// Sub-Type 0, Reserved.
const TNC: [u8; 4] = [149, 2, 0, 0];

/// Offset of the first extension of type `kind` in a reply.
fn ext_at(payload: &[u8], kind: u8) -> Option<usize> {
    ExtensionIter::new(payload, ReplyRepr::LEN)
        .map_while(Result::ok)
        .find(|(_, e)| e.kind() == kind)
        .map(|(at, _)| at)
}

/// The home agent's reply to the mobile node's next request for `coa` (lifetime 0 with
/// `deregister`), altered by `tamper` on its way back; what the mobile node made of it.
fn tampered_reply(
    w: &mut World,
    deregister: bool,
    tamper: &dyn Fn(Vec<u8>) -> Vec<u8>,
) -> Option<MnEvent> {
    w.now = w.now.advance(Duration::from_secs(1));
    if deregister {
        w.mn.deregister_via(w.now, COA);
    } else {
        w.mn.register(w.now, COA);
    }
    let req = w.mn.poll_transmit().unwrap().payload;
    w.ha.handle_datagram(w.now, SocketAddrV4::new(COA, 43400), HA, &req);
    let reply = w.ha.poll_transmit().expect("a reply").payload;
    w.mn.handle_datagram(w.now, SocketAddrV4::new(HA, MIP_PORT), &tamper(reply));
    w.mn.poll_event()
}

/// RFC 5265 §4.1 and §3.2.3: only a Trusted Networks Configured extension that the Mobile-Home
/// authenticator covers (before it, RFC 5944 §3.5.1) lets the mobile node trust the network.
/// One after the authenticator, which anyone on the path can append (and which even the i-HA
/// must not put there), leaves the registration accepted but untrusted; a reply whose
/// authenticator fails or is missing is discarded, extension or not (RFC 5944 §3.6.2.1).
#[test]
fn trusted_networks_configured_counts_only_under_the_authenticator() {
    let inside = Subnet {
        addr: Ipv4Addr::new(192, 0, 2, 0),
        len: 24,
    };
    let append = |mut r: Vec<u8>| {
        r.extend_from_slice(&TNC);
        r
    };
    // The i-HA's own extension, taken from under the authenticator (to be put after it).
    let take_out = |mut r: Vec<u8>| {
        let at = ext_at(&r, TNC[0]).expect("the i-HA's reply carries TNC");
        r.drain(at..at + TNC.len());
        r
    };
    let trusted = |e: Option<MnEvent>| match e {
        Some(MnEvent::Registered { trusted, .. } | MnEvent::Deregistered { trusted, .. }) => {
            Some(trusted)
        }
        other => panic!("not accepted: {other:?}"),
    };

    // A plain home agent's reply, and an on-path attacker appends the extension: the
    // authenticator still verifies (it covers nothing after it), so the registration stands,
    // untrusted. A deregistration's reply likewise.
    let mut plain = World::new(mn(b"shared secret"));
    for deregister in [false, true] {
        let e = tampered_reply(&mut plain, deregister, &append);
        assert_eq!(trusted(e), Some(false), "appended, deregister {deregister}");
    }
    assert_eq!(plain.mn.stats().accepted, 1);

    let mut w = World::new(mn(b"shared secret"));
    w.ha = i_ha(&[inside]);
    // Moved behind the authenticator and re-signed, as a home agent that put it in the wrong
    // place would send it: authentic, and still not trusted.
    let e = tampered_reply(&mut w, false, &|r| append(resign(take_out(r))));
    assert_eq!(trusted(e), Some(false), "moved behind, re-signed");
    // Moved without re-signing: the authenticator no longer matches what it covers.
    let dropped = w.mn.stats().dropped_replies;
    let e = tampered_reply(&mut w, false, &|r| append(take_out(r)));
    assert_eq!(e, None, "moved behind, not re-signed");
    // In place, but the authenticator corrupted, or gone.
    let e = tampered_reply(&mut w, false, &|mut r| {
        let last = r.len() - 1;
        r[last] ^= 1;
        r
    });
    assert_eq!(e, None, "corrupted authenticator");
    let e = tampered_reply(&mut w, false, &|mut r| {
        r.truncate(r.len() - 22);
        r
    });
    assert_eq!(e, None, "no authenticator");
    assert_eq!(w.mn.stats().dropped_replies, dropped + 3);
    // The i-HA's reply as sent: trusted, for a registration and for a deregistration.
    for deregister in [false, true] {
        let e = tampered_reply(&mut w, deregister, &|r| r);
        assert_eq!(trusted(e), Some(true), "genuine, deregister {deregister}");
    }
}

// --- Foreign-Home authentication at the home agent (RFC 5944 §3.5.4, §3.8.1, §3.8.2.1) ---
//
// The relays are built here by hand with `util::Msg`, as a foreign agent sends them
// (§3.7.2.2): the mobile node's request (fixed part from the wire `Repr`, extensions as raw
// bytes from the RFC figures), then the foreign agent's Foreign-Home Authentication
// Extension, each authenticator computed with `auth::sign` over everything before it (§3.5.1).

/// The foreign agent's care-of address: the source of its relays.
const FA_COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A foreign agent we share no association with.
const OTHER_FA_COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

fn ha_with_fa(fas: &[(Ipv4Addr, u32, &[u8])]) -> HomeAgent {
    let mut config = ha().config().clone();
    config.foreign_agents = fas
        .iter()
        .map(|&(address, spi, key)| ForeignAgentEntry {
            address,
            sa: sa(spi, key),
        })
        .collect();
    HomeAgent::new(config)
}

impl Msg {
    /// The mobile node's part of a relayed request ('T', our home agent): the NAI and its
    /// MN-HA extension.
    fn from_mn(lifetime: u16, coa: Ipv4Addr, id: u64, key: &[u8]) -> Msg {
        Msg::request(RequestFlags::T, lifetime, HOME, HA, coa, id)
            .ext(MN_NAI, NAI)
            .auth(MN_HA, SPI, key)
    }
}

/// A reply checked for what the foreign agent and the mobile node need: addressed to the
/// relay's source (§3.8.3.1), MN-HA authenticator valid, and, when `fa_key` is given, a
/// Foreign-Home extension after it, last, with our SPI, verifying with that key (§3.8.3.3,
/// §3.5.1). Returns the fixed part.
fn checked_reply(t: &Transmit, to: SocketAddrV4, fa_key: Option<&[u8]>) -> ReplyRepr {
    assert_eq!(t.dst, to);
    assert_eq!(t.src, Some(HA));
    let r = &t.payload;
    let exts = auth_exts(r, ReplyRepr::LEN);
    let (mn_at, kind, spi) = exts[0];
    assert_eq!((kind, spi), (MN_HA, SPI));
    assert!(verifies(r, mn_at, KEY), "MN-HA verifies");
    match fa_key {
        None => assert_eq!(exts.len(), 1, "no FA-HA extension"),
        Some(key) => {
            assert_eq!(exts.len(), 2);
            let (at, kind, spi) = exts[1];
            assert_eq!((kind, spi), (FA_HA, FA_HA_SPI));
            assert_eq!(at, mn_at + 22, "right after MN-HA");
            assert_eq!(r.len(), at + 22, "and last");
            assert!(verifies(r, at, key), "FA-HA verifies with the FA's key");
            assert!(!verifies(r, at, b"another key"));
        }
    }
    parse_reply(r)
}

/// A home agent, its clock, and fresh identifications.
struct Home {
    now: Now,
    ha: HomeAgent,
    last_id: u64,
}

impl Home {
    fn new(ha: HomeAgent) -> Home {
        Home {
            now: START,
            ha,
            last_id: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.now = self.now.advance(Duration::from_secs(1));
        self.last_id = ntp_timestamp(self.now.unix).max(self.last_id + 1);
        self.last_id
    }

    /// Delivers a relay from `from` (port 434) and returns what the home agent sent.
    fn relay(&mut self, from: Ipv4Addr, bytes: &[u8]) -> Vec<Transmit> {
        self.ha
            .handle_datagram(self.now, SocketAddrV4::new(from, MIP_PORT), HA, bytes);
        std::iter::from_fn(|| self.ha.poll_transmit()).collect()
    }
}

/// Builds one relay for a table of cases, given its Identification.
type BuildRelay = Box<dyn Fn(u64) -> Msg>;

fn at_fa(addr: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(addr, MIP_PORT)
}

/// §3.8.2.1 (c), §3.8.3.3: a relay from a foreign agent we share an association with, with
/// one valid FA-HA extension after MN-HA, is accepted, and the reply carries an FA-HA extension
/// the foreign agent can verify. Missing, duplicated, misplaced, of another SPI or with a wrong
/// authenticator: 132, signed for the foreign agent too, and nothing changes; the request's
/// Identification is not consumed, so the genuine relay still goes through.
#[test]
fn foreign_home_extension_is_required_from_an_associated_foreign_agent() {
    let mut h = Home::new(ha_with_fa(&[(FA_COA, FA_HA_SPI, FA_HA_KEY)]));
    let id = h.next_id();
    let good = Msg::from_mn(1800, FA_COA, id, KEY).auth(FA_HA, FA_HA_SPI, FA_HA_KEY);
    let got = h.relay(FA_COA, &good.0);
    assert_eq!(got.len(), 1);
    let r = checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY));
    assert_eq!(
        (r.code, r.lifetime, r.identification),
        (ReplyCode::Accepted, 600, id)
    );
    assert_eq!(h.ha.bindings().get(HOME).unwrap().care_of_addr, FA_COA);
    assert!(matches!(h.ha.poll_event(), Some(HaEvent::BindingAdded(_))));

    let bad: [(&str, BuildRelay); 6] = [
        (
            "missing",
            Box::new(|id| Msg::from_mn(1800, FA_COA, id, KEY)),
        ),
        (
            "duplicated",
            Box::new(|id| {
                Msg::from_mn(1800, FA_COA, id, KEY)
                    .auth(FA_HA, FA_HA_SPI, FA_HA_KEY)
                    .auth(FA_HA, FA_HA_SPI, FA_HA_KEY)
            }),
        ),
        (
            "wrong SPI",
            Box::new(|id| {
                Msg::from_mn(1800, FA_COA, id, KEY).auth(FA_HA, FA_HA_SPI + 1, FA_HA_KEY)
            }),
        ),
        (
            "bad authenticator",
            Box::new(|id| {
                Msg::from_mn(1800, FA_COA, id, KEY).auth(FA_HA, FA_HA_SPI, b"not the fa key")
            }),
        ),
        (
            "before MN-HA",
            Box::new(|id| {
                Msg::request(RequestFlags::T, 1800, HOME, HA, FA_COA, id)
                    .auth(FA_HA, FA_HA_SPI, FA_HA_KEY)
                    .auth(MN_HA, SPI, KEY)
            }),
        ),
        (
            "a skippable extension after it, then a second one",
            Box::new(|id| {
                Msg::from_mn(1800, FA_COA, id, KEY)
                    .auth(FA_HA, FA_HA_SPI, FA_HA_KEY)
                    .ext(200, b"x")
                    .auth(FA_HA, FA_HA_SPI, FA_HA_KEY)
            }),
        ),
    ];
    for (n, (what, build)) in bad.iter().enumerate() {
        let id = h.next_id();
        let got = h.relay(FA_COA, &build(id).0);
        assert_eq!(got.len(), 1, "{what}: one reply");
        let r = checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY));
        assert_eq!(
            (r.code, r.lifetime, r.identification),
            (ReplyCode::HaForeignAgentFailedAuth, 0, id),
            "{what}"
        );
        assert_eq!(h.ha.stats().denied_fa_auth, n as u64 + 1, "{what}");
        assert_eq!(h.ha.bindings().get(HOME).unwrap().care_of_addr, FA_COA);
        assert!(h.ha.poll_event().is_none(), "{what}: nothing changed");
    }
    assert_eq!(h.ha.stats().rejected.get(&132), Some(&6));
    assert_eq!(h.ha.stats().accepted, 1);

    // The last denied Identification was not consumed: the genuine relay of the same request
    // is accepted (and a move to another care-of address is just as authenticated).
    let id = h.next_id();
    let missing = Msg::from_mn(1800, FA_COA, id, KEY);
    let got = h.relay(FA_COA, &missing.0);
    assert_eq!(
        checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY)).code,
        ReplyCode::HaForeignAgentFailedAuth
    );
    let got = h.relay(FA_COA, &missing.auth(FA_HA, FA_HA_SPI, FA_HA_KEY).0);
    assert_eq!(
        checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY)).code,
        ReplyCode::Accepted
    );
    assert_eq!(h.ha.stats().accepted, 2);
}

/// A key rollover: two associations with one foreign agent, told apart by SPI (§3.5.4); the
/// reply is signed with the one the request used.
#[test]
fn foreign_agent_associations_are_selected_by_spi() {
    let new_key: &[u8] = b"fa-ha secret, rolled over";
    let mut h = Home::new(ha_with_fa(&[
        (FA_COA, FA_HA_SPI, FA_HA_KEY),
        (FA_COA, FA_HA_SPI + 1, new_key),
    ]));
    let id = h.next_id();
    let req = Msg::from_mn(1800, FA_COA, id, KEY).auth(FA_HA, FA_HA_SPI + 1, new_key);
    let got = h.relay(FA_COA, &req.0);
    let r = &got[0].payload;
    let (at, kind, spi) = auth_exts(r, ReplyRepr::LEN)[1];
    assert_eq!((kind, spi), (FA_HA, FA_HA_SPI + 1));
    assert!(verifies(r, at, new_key));
    assert_eq!(reply_code(r), ReplyCode::Accepted);
    // The old key under the new SPI is a bad authenticator.
    let id = h.next_id();
    let req = Msg::from_mn(1800, FA_COA, id, KEY).auth(FA_HA, FA_HA_SPI + 1, FA_HA_KEY);
    let got = h.relay(FA_COA, &req.0);
    assert_eq!(
        reply_code(&got[0].payload),
        ReplyCode::HaForeignAgentFailedAuth
    );
}

/// §3.8.2.1 (a) comes first: a mobile node that fails authentication gets 131, never 132 —
/// answered (signed for the foreign agent) when the FA-HA extension is valid, or when the
/// foreign agent had none to add (a deregistration, §3.5.4); discarded without a reply when
/// neither authenticator holds. (b) precedes (c) too: a stale Identification is 133 whatever
/// the FA-HA extension.
#[test]
fn mobile_home_authentication_is_checked_first() {
    let mut h = Home::new(ha_with_fa(&[(FA_COA, FA_HA_SPI, FA_HA_KEY)]));
    let wrong_mn: &[u8] = b"not the mobile node's key";

    let id = h.next_id();
    let req = Msg::from_mn(1800, FA_COA, id, wrong_mn).auth(FA_HA, FA_HA_SPI, FA_HA_KEY);
    let got = h.relay(FA_COA, &req.0);
    assert_eq!(got.len(), 1);
    let r = checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY));
    assert_eq!(
        (r.code, r.identification),
        (ReplyCode::HaMobileNodeFailedAuth, id)
    );

    for (what, req) in [
        (
            "bad FA-HA",
            Msg::from_mn(1800, FA_COA, h.next_id(), wrong_mn).auth(FA_HA, FA_HA_SPI, b"wrong"),
        ),
        (
            "no FA-HA",
            Msg::from_mn(1800, FA_COA, h.next_id(), wrong_mn),
        ),
    ] {
        assert!(h.relay(FA_COA, &req.0).is_empty(), "{what}: no reply");
    }
    assert_eq!(h.ha.stats().dropped_unauthenticated, 2);

    let id = h.next_id();
    let dereg = Msg::from_mn(0, FA_COA, id, wrong_mn);
    let got = h.relay(FA_COA, &dereg.0);
    assert_eq!(
        checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY)).code,
        ReplyCode::HaMobileNodeFailedAuth
    );
    let s = h.ha.stats();
    assert_eq!(s.rejected.get(&131), Some(&2));
    assert_eq!((s.denied_fa_auth, s.rejected.get(&132)), (0, None));

    // Accepted once, then replayed with the FA-HA extension stripped: 133, not 132.
    let id = h.next_id();
    let good = Msg::from_mn(1800, FA_COA, id, KEY);
    let got = h.relay(FA_COA, &good.clone().auth(FA_HA, FA_HA_SPI, FA_HA_KEY).0);
    assert_eq!(reply_code(&got[0].payload), ReplyCode::Accepted);
    let got = h.relay(FA_COA, &good.0);
    assert_eq!(
        checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY)).code,
        ReplyCode::HaIdentificationMismatch
    );
    assert_eq!(h.ha.stats().denied_fa_auth, 0);
}

/// §3.8.2.1 (d): an FA-HA extension from a foreign agent we share no association with is
/// discarded, silently, whether its MN-HA is valid or not, and whether or not we have
/// associations with other foreign agents; its Identification is not consumed. Without the
/// extension the same request is an ordinary one (no FA-HA on the reply).
#[test]
fn foreign_home_extension_from_an_unknown_foreign_agent_is_discarded() {
    for fas in [vec![], vec![(FA_COA, FA_HA_SPI, FA_HA_KEY)]] {
        let mut h = Home::new(ha_with_fa(&fas));
        let id = h.next_id();
        let mn_part = Msg::from_mn(1800, OTHER_FA_COA, id, KEY);
        let with = mn_part.clone().auth(FA_HA, FA_HA_SPI, FA_HA_KEY);
        assert!(h.relay(OTHER_FA_COA, &with.0).is_empty());
        let forged = Msg::from_mn(1800, OTHER_FA_COA, h.next_id(), b"wrong")
            .auth(FA_HA, FA_HA_SPI, FA_HA_KEY);
        assert!(h.relay(OTHER_FA_COA, &forged.0).is_empty());
        let s = h.ha.stats();
        assert_eq!(s.dropped_fa_auth_unknown_fa, 2);
        assert!(s.rejected.is_empty() && h.ha.bindings().is_empty());

        let got = h.relay(OTHER_FA_COA, &mn_part.0);
        let r = checked_reply(&got[0], at_fa(OTHER_FA_COA), None);
        assert_eq!((r.code, r.identification), (ReplyCode::Accepted, id));
    }
}

/// §3.5.4, §3.8.1, §3.8.2.2: a deregistration relayed by an associated foreign agent carries no
/// FA-HA extension and needs none; the reply carries one. One that carries a bad one anyway is
/// still refused (132): an extension that is present must authenticate.
#[test]
fn deregistration_through_an_associated_foreign_agent() {
    let mut h = Home::new(ha_with_fa(&[(FA_COA, FA_HA_SPI, FA_HA_KEY)]));
    let req = Msg::from_mn(1800, FA_COA, h.next_id(), KEY).auth(FA_HA, FA_HA_SPI, FA_HA_KEY);
    h.relay(FA_COA, &req.0);
    assert!(h.ha.bindings().get(HOME).is_some());
    let _ = h.ha.poll_event();

    let bad = Msg::from_mn(0, FA_COA, h.next_id(), KEY).auth(FA_HA, FA_HA_SPI, b"wrong");
    let got = h.relay(FA_COA, &bad.0);
    assert_eq!(
        checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY)).code,
        ReplyCode::HaForeignAgentFailedAuth
    );
    assert!(h.ha.bindings().get(HOME).is_some());

    let id = h.next_id();
    let dereg = Msg::from_mn(0, FA_COA, id, KEY);
    let got = h.relay(FA_COA, &dereg.0);
    let r = checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY));
    assert_eq!(
        (r.code, r.lifetime, r.identification),
        (ReplyCode::Accepted, 0, id)
    );
    assert!(h.ha.bindings().is_empty());
    assert!(matches!(
        h.ha.poll_event(),
        Some(HaEvent::BindingRemoved {
            reason: RemovalReason::Deregistered,
            ..
        })
    ));
    let s = h.ha.stats();
    assert_eq!((s.deregistered, s.denied_fa_auth), (1, 1));
}

/// A registration relayed by an associated foreign agent for a care-of address that is not
/// the relay's source (a co-located one, 'D'): §3.5.4 forbids the agent to add an FA-HA
/// extension, so none is required; the reply carries one all the same (§3.8.1).
#[test]
fn co_located_registration_relayed_by_an_associated_foreign_agent() {
    let mut h = Home::new(ha_with_fa(&[(FA_COA, FA_HA_SPI, FA_HA_KEY)]));
    let colocated = Ipv4Addr::new(192, 0, 2, 77);
    let id = h.next_id();
    let mut req = Msg::from_mn(1800, colocated, id, KEY);
    req.0[1] |= RequestFlags::D;
    let at = req.0.len() - 22;
    auth::sign(&mut req.0, at, &Key::new(KEY.to_vec()));
    let got = h.relay(FA_COA, &req.0);
    let r = checked_reply(&got[0], at_fa(FA_COA), Some(FA_HA_KEY));
    assert_eq!(r.code, ReplyCode::Accepted);
    assert_eq!(h.ha.bindings().get(HOME).unwrap().care_of_addr, colocated);
}
