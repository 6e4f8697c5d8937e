//! Protocol simulations of the foreign agent (RFC 5944 §3.7, RFC 3024, RFC 3519 §4.4): mobile
//! nodes on a link, our `ForeignAgent` in front of real `HomeAgent`s, a virtual clock, in
//! memory (DESIGN.md §6). No sockets, no sleeping.
//!
//! The mobile node's requests are built here by hand with `util::Msg`: the fixed part with the
//! wire `Repr`s, extensions as raw type-length-value bytes from the RFC figures, authenticators
//! with `auth::sign`. `proto::mn::MobileNode` only registers co-located care-of addresses
//! directly with its home agent.

#[allow(
    dead_code,
    reason = "shared by the protocol simulations: what only the others use must not warn here"
)]
mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{
    Extension, ExtensionIter, ICMP_ECHO_REQUEST, KeepaliveRepr, MIP_PORT, ReplyCode, ReplyRepr,
    RequestFlags, RequestPacket, RequestRepr,
};
use mipx_control::proto::fa::{
    DeliveryStyle, FaConfig, FaEvent, FaInterface, FaTransmit, ForeignAgent, FromMobile,
    IcmpUnreachable, LinkTarget, PeerSa, ReverseTunnelPolicy, UdpTunnelling, VisitorRow,
};
use mipx_control::proto::ha::{ForeignAgentEntry, HaConfig, HaEvent, HomeAgent, RemovalReason};
use mipx_control::proto::{Now, Transmit, ntp_timestamp};
use util::{
    FA_HA, FA_HA_KEY, FA_HA_SPI, HA, HOME, KEY, MN_HA, MN_NAI, Msg, NAI, SPI, START, auth_exts,
    ha_config, mn_config, parse_reply, sa, verifies,
};

/// The foreign agent's link: its address there, and the care-of addresses it offers.
const IFACE: u32 = 3;
const FA_LINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const COA2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// RFC 5265: the external home agent, and the same node's external home address (the internal
/// ones are `util::HA` and `util::HOME`).
const XHA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const XHOME: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const XKEY: &[u8] = b"external secret";

/// A co-located care-of address of the mobile node on our link.
const COLOCATED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MN_PORT: u16 = 50_434;

/// Extension type numbers, from the RFC figures, beyond `util`'s.
const MN_FA: u8 = 33; // RFC 5944 §3.5.3
const EDS: u8 = 130; // RFC 3024 §3.3
const UDP_TUNNEL_REQUEST: u8 = 144; // RFC 3519 §3.1

const MN_FA_SPI: u32 = 0x3000;
const MN_FA_KEY: &[u8] = b"mn-fa secret";

fn home_agent(address: Ipv4Addr, home: Ipv4Addr, key: &[u8]) -> HomeAgent {
    home_agent_with_fas(address, home, key, vec![])
}

/// A home agent sharing FA-HA security associations with `foreign_agents` (RFC 5944 §3.8.1).
fn home_agent_with_fas(
    address: Ipv4Addr,
    home: Ipv4Addr,
    key: &[u8],
    foreign_agents: Vec<ForeignAgentEntry>,
) -> HomeAgent {
    HomeAgent::new(HaConfig {
        foreign_agents,
        ..ha_config(address, home, sa(SPI, key))
    })
}

fn fa_config() -> FaConfig {
    FaConfig {
        interfaces: vec![FaInterface {
            index: IFACE,
            address: FA_LINK,
            care_of_addrs: vec![COA, COA2],
        }],
        max_lifetime: 1800,
        reverse_tunnel: ReverseTunnelPolicy::Offered,
        encapsulating_delivery: true,
        ..FaConfig::default()
    }
}

fn from_mn(mac: [u8; 6], src: Ipv4Addr, ttl: u8) -> FromMobile {
    FromMobile {
        iface: IFACE,
        src: SocketAddrV4::new(src, MN_PORT),
        dst: FA_LINK,
        src_mac: mac,
        ttl,
    }
}

/// What the path between the home agent and the foreign agent does to the home agent's
/// replies: nothing, or, to exercise the foreign agent's checks (§3.7.3.1), removes the
/// trailing Foreign-Home Authentication Extension or corrupts its authenticator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyPath {
    Intact,
    StripFaHa,
    ForgeFaHa,
}

struct World {
    now: Now,
    fa: ForeignAgent,
    has: Vec<(Ipv4Addr, HomeAgent)>,
    reply_path: ReplyPath,
    /// Every datagram a home agent sent, as it left the home agent.
    ha_replies: Vec<Transmit>,
    /// Relays the home agents never receive (an unreachable or silent home agent).
    drop_relays: bool,
    /// Every relay the foreign agent sent to a home agent, in order.
    relayed: Vec<FaTransmit>,
    /// Every datagram the foreign agent sent to a mobile node, in order.
    to_mobile: Vec<FaTransmit>,
    fa_events: Vec<FaEvent>,
    ha_events: Vec<HaEvent>,
    last_id: u64,
    /// A NAT in front of the foreign agent (RFC 3519 §4.5): what its care-of address and
    /// port 434 become on the way to the home agents.
    nat: Option<SocketAddrV4>,
}

impl World {
    fn new(config: FaConfig) -> Self {
        World {
            now: START,
            fa: ForeignAgent::new(config),
            has: vec![
                (HA, home_agent(HA, HOME, KEY)),
                (XHA, home_agent(XHA, XHOME, XKEY)),
            ],
            reply_path: ReplyPath::Intact,
            ha_replies: vec![],
            drop_relays: false,
            relayed: vec![],
            to_mobile: vec![],
            fa_events: vec![],
            ha_events: vec![],
            last_id: 0,
            nat: None,
        }
    }

    fn ha(&self, addr: Ipv4Addr) -> &HomeAgent {
        &self.has.iter().find(|(a, _)| *a == addr).unwrap().1
    }

    /// A fresh Identification: an NTP timestamp, always increasing (§5.7.1).
    fn next_id(&mut self) -> u64 {
        self.last_id = ntp_timestamp(self.now.unix).max(self.last_id + 1);
        self.last_id
    }

    /// The usual request: 'T', our first care-of address, the NAI, MN-HA authentication.
    fn request(&mut self, flags: u8, lifetime: u16) -> Msg {
        Msg::request(flags, lifetime, HOME, HA, COA, self.next_id()).ext(MN_NAI, NAI)
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now.advance(by);
    }

    /// A mobile node on our link sends `bytes`; everything in flight is delivered.
    fn send(&mut self, from: FromMobile, bytes: &[u8]) {
        self.fa.handle_from_mobile(self.now, from, bytes);
        self.pump();
    }

    /// Sends `bytes` from MN (MAC, home address, TTL 255) and returns what came back to it.
    fn exchange(&mut self, bytes: &[u8]) -> Vec<FaTransmit> {
        let before = self.to_mobile.len();
        self.send(from_mn(MAC, HOME, 255), bytes);
        self.to_mobile[before..].to_vec()
    }

    /// MN registers its co-located care-of address through us ('D' and `flags`, lifetime 1800,
    /// MN-HA authentication): the request, and the one reply MN got back.
    fn register_co_located(&mut self, flags: u8) -> (Vec<u8>, ReplyRepr) {
        let id = self.next_id();
        let req = Msg::request(RequestFlags::D | flags, 1800, HOME, HA, COLOCATED, id)
            .auth(MN_HA, SPI, KEY)
            .bytes();
        let before = self.to_mobile.len();
        self.send(from_mn(MAC, COLOCATED, 64), &req);
        let reply = only_reply(&self.to_mobile[before..], HOME, MAC);
        (req, reply)
    }

    /// Delivers everything in flight (zero latency) until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.fa.poll_transmit() {
                moved = true;
                if let Some(link) = t.link {
                    assert_eq!(link.iface, IFACE);
                    self.to_mobile.push(t);
                    continue;
                }
                assert_eq!(t.dst.port(), MIP_PORT);
                self.relayed.push(t.clone());
                if self.drop_relays {
                    continue;
                }
                self.deliver_relay(&t);
            }
            self.fa_events
                .extend(std::iter::from_fn(|| self.fa.poll_event()));
            if !moved {
                break;
            }
        }
    }

    /// Hands a relay to its home agent and the home agent's answer back to the foreign agent.
    fn deliver_relay(&mut self, t: &FaTransmit) {
        let now = self.now;
        let Some((_, ha)) = self.has.iter_mut().find(|(a, _)| a == t.dst.ip()) else {
            return;
        };
        let source = self.nat.unwrap_or(SocketAddrV4::new(t.src, 434));
        ha.handle_datagram(now, source, *t.dst.ip(), &t.payload);
        let mut replies = vec![];
        while let Some(r) = ha.poll_transmit() {
            replies.push(r);
        }
        self.ha_events
            .extend(std::iter::from_fn(|| ha.poll_event()));
        for r in replies {
            // §3.8.3.1: to the relay's source, which is our care-of address (or the NAT's
            // mapping of it, which takes it back to us).
            assert_eq!(r.dst, source);
            self.ha_replies.push(r.clone());
            let mut bytes = r.payload;
            if self.reply_path != ReplyPath::Intact {
                let exts = auth_exts(&bytes, ReplyRepr::LEN);
                let &(at, kind, _) = exts.last().expect("an authentication extension");
                assert_eq!(kind, FA_HA, "the home agent's reply ends with FA-HA");
                if self.reply_path == ReplyPath::StripFaHa {
                    bytes.truncate(at);
                } else {
                    bytes[at + 6] ^= 0x80;
                }
            }
            self.fa.handle_from_home_agent(
                self.now,
                SocketAddrV4::new(*t.dst.ip(), MIP_PORT),
                &bytes,
            );
        }
    }

    /// Advances the clock to `until`, firing timers in order.
    fn run_until(&mut self, until: Duration) {
        loop {
            self.pump();
            let next = std::iter::once(self.fa.poll_timeout())
                .chain(self.has.iter().map(|(_, h)| h.poll_timeout()))
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    let t = t.max(self.now.mono);
                    self.now = self.now.advance(t - self.now.mono);
                    self.fa.handle_timeout(self.now);
                    for (_, h) in &mut self.has {
                        h.handle_timeout(self.now);
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.advance(until.saturating_sub(self.now.mono));
        self.pump();
    }
}

/// Builds one request for a table of cases.
type Build<'a> = Box<dyn Fn(&mut World) -> Vec<u8> + 'a>;

/// The one reply the mobile node got, checked for the addressing of §3.7.2.3.
fn only_reply(got: &[FaTransmit], home: Ipv4Addr, mac: [u8; 6]) -> ReplyRepr {
    assert_eq!(got.len(), 1, "exactly one reply to the mobile node");
    let t = &got[0];
    assert_eq!(t.link, Some(LinkTarget { iface: IFACE, mac }));
    assert_eq!(t.dst, SocketAddrV4::new(home, MN_PORT));
    assert_eq!(t.src, FA_LINK, "from the address the request was sent to");
    parse_reply(&t.payload)
}

/// End of the MN-HA extension of a message whose MN-HA extension is the first authentication
/// extension.
fn mn_ha_end(msg: &[u8], fixed_len: usize) -> usize {
    let (at, kind, _) = auth_exts(msg, fixed_len)[0];
    assert_eq!(kind, MN_HA);
    at + 22
}

/// RFC 5944 §3.7.2.2 and §3.7.3.2, RFC 3024 §4.2.2: the request is relayed from our care-of
/// address with everything up to the MN-HA extension untouched and the delivery-style
/// extension consumed; the accepted reply reaches the mobile node over the link, still
/// authentic; the visitor appears with what the daemon needs for the fast path.
#[test]
fn accepted_registration_end_to_end() {
    let mut w = World::new(fa_config());
    let t0 = w.now.mono;
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .ext(EDS, &[])
        .bytes();
    let got = w.exchange(&req);

    assert_eq!(w.relayed.len(), 1);
    let relay = &w.relayed[0];
    assert_eq!(relay.src, COA, "§3.7.2.2: from the care-of address");
    assert_eq!(relay.dst, SocketAddrV4::new(HA, MIP_PORT));
    assert_eq!(relay.link, None);
    let end = mn_ha_end(&req, RequestRepr::LEN);
    assert_eq!(
        relay.payload,
        req[..end],
        "unchanged up to MN-HA, EDS removed"
    );

    let b = w.ha(HA).bindings().get(HOME).expect("binding at the HA");
    assert_eq!(b.care_of_addr, COA);
    assert!(b.flags.contains(RequestFlags::T));

    let reply = only_reply(&got, HOME, MAC);
    assert_eq!(reply.code, ReplyCode::Accepted);
    assert_eq!(reply.lifetime, 600, "the HA's grant");
    // The mobile node can still verify the home agent's authenticator, and nothing follows it.
    let r = &got[0].payload;
    let exts = auth_exts(r, ReplyRepr::LEN);
    assert_eq!(exts.len(), 1);
    assert!(verifies(r, exts[0].0, KEY));
    assert_eq!(r.len(), exts[0].0 + 22);

    let [FaEvent::VisitorAdded(v)] = &w.fa_events[..] else {
        panic!("{:?}", w.fa_events)
    };
    assert_eq!(
        (v.home_addr, v.home_agent, v.mac, v.iface, v.care_of_addr),
        (HOME, HA, MAC, IFACE, COA)
    );
    assert!(v.reverse_tunnel && !v.co_located);
    assert_eq!(v.delivery, DeliveryStyle::Encapsulating);
    assert_eq!(v.lifetime, 600);
    assert_eq!(v.expires_at, Some(t0 + Duration::from_secs(600)));
    assert_eq!(v.source, SocketAddrV4::new(HOME, MN_PORT));

    let rows = w.fa.visitors(w.now.advance(Duration::from_secs(100)));
    assert_eq!(
        rows,
        vec![VisitorRow {
            home_addr: HOME,
            link_addr: "02:00:00:00:00:0a".into(),
            iface: IFACE,
            home_agent: HA,
            care_of_addr: COA,
            co_located: false,
            lifetime: 600,
            remaining_secs: Some(500),
            reverse_tunnel: true,
            udp_tunnel: false,
            delivery: DeliveryStyle::Encapsulating,
        }]
    );
    let json = serde_json::to_string(&rows).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<VisitorRow>>(&json).unwrap(),
        rows
    );
    let s = w.fa.stats();
    assert_eq!(
        (s.relayed_requests, s.relayed_replies, s.accepted),
        (1, 1, 1)
    );
    assert!(s.denied.is_empty());
    assert_eq!(w.fa.pending_count(), 0);

    // A renewal from the second care-of address, Direct Delivery this time: an update.
    w.advance(Duration::from_secs(300));
    let req = Msg::request(RequestFlags::T, 1800, HOME, HA, COA2, w.next_id())
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);
    assert_eq!(w.relayed[1].src, COA2);
    let Some(FaEvent::VisitorUpdated { old, new }) = w.fa_events.last() else {
        panic!("{:?}", w.fa_events)
    };
    assert_eq!((old.care_of_addr, new.care_of_addr), (COA, COA2));
    assert_eq!(new.delivery, DeliveryStyle::Direct);
    assert_eq!(new.expires_at, Some(w.now.mono + Duration::from_secs(600)));
    assert_eq!(w.fa_events.len(), 2);
}

/// RFC 5944 §3.7.3.2: a home agent's denial is relayed and removes the pending request, and
/// the existing visitor entry "MUST NOT be modified" (§3.7.2).
#[test]
fn home_agent_denial_is_relayed_and_the_visitor_kept() {
    let mut w = World::new(fa_config());
    let bad = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, b"wrong key")
        .bytes();
    let got = w.exchange(&bad);
    let reply = only_reply(&got, HOME, MAC);
    assert_eq!(reply.code, ReplyCode::HaMobileNodeFailedAuth);
    assert_eq!(w.fa.stats().denied_by_home_agent.get(&131), Some(&1));
    assert_eq!(w.fa.pending_count(), 0);
    assert!(w.fa.visitor(HOME).is_none() && w.fa_events.is_empty());

    w.advance(Duration::from_secs(2));
    let good = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&good);
    let before = w.fa.visitor(HOME).cloned().expect("registered");
    w.advance(Duration::from_secs(2));
    // A move to the other care-of address that the home agent refuses (wrong key again).
    let bad = Msg::request(RequestFlags::T, 1800, HOME, HA, COA2, w.next_id())
        .auth(MN_HA, SPI, b"wrong key")
        .bytes();
    let got = w.exchange(&bad);
    assert_eq!(
        only_reply(&got, HOME, MAC).code,
        ReplyCode::HaMobileNodeFailedAuth
    );
    assert_eq!(w.fa.visitor(HOME), Some(&before), "visitor untouched");
    assert_eq!(w.fa_events.len(), 1, "only the first VisitorAdded");
    assert_eq!(w.fa.stats().denied_by_home_agent.get(&131), Some(&2));
}

/// RFC 5944 §3.4, §3.7.3.2: code 1 (accepted, simultaneous bindings unsupported), the home
/// agent's answer to 'S', is an acceptance: the foreign agent relays it unchanged and the
/// visitor entry appears as for 0. RFC 3024 §4.3.1: a co-located registration through us
/// asking for minimal encapsulation ('M') is the home agent's to refuse, not ours (we neither
/// decapsulate nor reverse-tunnel for it): its 139 is relayed, and the visitor entry stays as
/// it was (§3.7.2).
#[test]
fn home_agent_codes_1_and_139_through_the_foreign_agent() {
    let mut w = World::new(fa_config());
    let req = w
        .request(RequestFlags::S | RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    let r = only_reply(&got, HOME, MAC);
    assert_eq!(
        (r.code, r.lifetime),
        (ReplyCode::AcceptedNoSimultaneousBindings, 600)
    );
    assert_eq!(got[0].payload, w.ha_replies[0].payload, "relayed unchanged");
    let [FaEvent::VisitorAdded(v)] = &w.fa_events[..] else {
        panic!("{:?}", w.fa_events)
    };
    assert_eq!((v.care_of_addr, v.lifetime), (COA, 600));
    let s = w.fa.stats();
    assert_eq!((s.accepted, s.relayed_replies), (1, 1));
    assert!(s.denied.is_empty() && s.denied_by_home_agent.is_empty());

    let before = w.fa.visitor(HOME).cloned();
    w.advance(Duration::from_secs(2));
    let (_, r) = w.register_co_located(RequestFlags::M);
    assert_eq!(w.relayed.len(), 2, "relayed, not denied by us");
    assert_eq!(
        (r.code, r.lifetime),
        (ReplyCode::HaEncapsulationUnavailable, 0)
    );
    assert_eq!(w.fa.stats().denied_by_home_agent.get(&139), Some(&1));
    assert!(w.fa.stats().denied.is_empty());
    assert_eq!(w.fa.visitor(HOME).cloned(), before, "visitor untouched");
    assert_eq!(w.ha(HA).bindings().get(HOME).unwrap().care_of_addr, COA);
    assert_eq!(w.fa_events.len(), 1);
    assert_eq!(w.fa.pending_count(), 0);
}

/// One FA-side denial: a fresh world, one request, nothing relayed, one reply with the
/// request's Home Address, Home Agent and Identification (§3.7.2.3).
fn denied(
    config: FaConfig,
    ttl: u8,
    build: impl FnOnce(&mut World) -> Vec<u8>,
) -> (ReplyRepr, World) {
    let mut w = World::new(config);
    let bytes = build(&mut w);
    let req = RequestRepr::parse(&RequestPacket::new_checked(&bytes[..]).unwrap()).unwrap();
    let before = w.to_mobile.len();
    w.send(from_mn(MAC, HOME, ttl), &bytes);
    assert!(w.relayed.is_empty(), "nothing relayed");
    assert_eq!(w.ha(HA).stats().requests, 0);
    let got = w.to_mobile[before..].to_vec();
    let dst = if req.home_addr.is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        req.home_addr
    };
    let reply = only_reply(&got, dst, MAC);
    assert_eq!(
        (reply.home_addr, reply.home_agent, reply.identification),
        (req.home_addr, req.home_agent, req.identification)
    );
    assert_eq!(w.fa.stats().denied.get(&u8::from(reply.code)), Some(&1));
    assert_eq!(w.fa.pending_count(), 0);
    assert!(w.fa_events.is_empty());
    (reply, w)
}

/// Every denial the foreign agent makes on its own, with its code (RFC 5944 §3.4, §3.7.2;
/// RFC 3024 §3.4, §4.2.1; RFC 2794 §3).
#[test]
fn foreign_agent_denials() {
    let t = RequestFlags::T;
    let signed = |w: &mut World, flags: u8| w.request(flags, 1800).auth(MN_HA, SPI, KEY);

    // 69: the reply carries our maximum (§3.7.2.3); other denials copy the request's.
    let (r, _) = denied(fa_config(), 255, |w| {
        w.request(t, 1801).auth(MN_HA, SPI, KEY).bytes()
    });
    assert_eq!((r.code, r.lifetime), (ReplyCode::FaLifetimeTooLong, 1800));

    // 77: a care-of address we do not offer (§3.7.2.1).
    let (r, _) = denied(fa_config(), 255, |w| {
        Msg::request(
            t,
            600,
            HOME,
            HA,
            Ipv4Addr::new(198, 51, 100, 99),
            w.next_id(),
        )
        .auth(MN_HA, SPI, KEY)
        .bytes()
    });
    assert_eq!(
        (r.code, r.lifetime),
        (ReplyCode::FaInvalidCareOfAddress, 600)
    );

    // 72: minimal or GRE encapsulation; we decapsulate IP-in-IP only.
    for bit in [RequestFlags::M, RequestFlags::G] {
        let (r, _) = denied(fa_config(), 255, |w| signed(w, t | bit).bytes());
        assert_eq!(r.code, ReplyCode::FaEncapsulationUnavailable);
    }

    // 79: Encapsulating Delivery Style not offered (RFC 3024 §3.4).
    let no_eds = FaConfig {
        encapsulating_delivery: false,
        ..fa_config()
    };
    let (r, _) = denied(no_eds, 255, |w| signed(w, t).ext(EDS, &[]).bytes());
    assert_eq!(r.code, ReplyCode::FaDeliveryStyleUnsupported);

    // 75: reverse tunnelling mandatory and 'T' clear.
    let mandatory = FaConfig {
        reverse_tunnel: ReverseTunnelPolicy::Mandatory,
        ..fa_config()
    };
    let (r, _) = denied(mandatory.clone(), 255, |w| signed(w, 0).bytes());
    assert_eq!(r.code, ReplyCode::FaReverseTunnelMandatory);
    // RFC 3024 §4.2.1's order: encapsulation (72) before the 'T' policy (75).
    let (r, _) = denied(mandatory, 255, |w| signed(w, RequestFlags::G).bytes());
    assert_eq!(r.code, ReplyCode::FaEncapsulationUnavailable);

    // 76: 'T' with an IP TTL below 255 (RFC 3024 §4.2.1).
    let (r, _) = denied(fa_config(), 64, |w| signed(w, t).bytes());
    assert_eq!(r.code, ReplyCode::FaMobileNodeTooDistant);

    // 74: 'T' but no reverse tunnels here; checked last (§4.2.1), after the TTL.
    let unavailable = FaConfig {
        reverse_tunnel: ReverseTunnelPolicy::Unavailable,
        ..fa_config()
    };
    let (r, _) = denied(unavailable.clone(), 255, |w| signed(w, t).bytes());
    assert_eq!(r.code, ReplyCode::FaReverseTunnelUnavailable);
    let (r, _) = denied(unavailable, 200, |w| signed(w, t).bytes());
    assert_eq!(r.code, ReplyCode::FaMobileNodeTooDistant);

    // 70: poorly formed (§3.7.2.3, RFC 3024 §3.3).
    let poorly_formed: [(&str, Build<'_>); 5] = [
        (
            "an extension running past the end",
            Box::new(|w| {
                let mut b = signed(w, t).bytes();
                b.extend_from_slice(&[200, 9, 1]);
                b
            }),
        ),
        (
            "no MN-HA extension",
            Box::new(|w| w.request(t, 1800).bytes()),
        ),
        (
            "EDS before MN-HA",
            Box::new(|w| {
                w.request(t, 1800)
                    .ext(EDS, &[])
                    .auth(MN_HA, SPI, KEY)
                    .bytes()
            }),
        ),
        (
            "EDS without T",
            Box::new(|w| signed(w, 0).ext(EDS, &[]).bytes()),
        ),
        (
            "EDS with a nonzero length",
            Box::new(|w| signed(w, t).ext(EDS, &[1]).bytes()),
        ),
    ];
    for (why, build) in poorly_formed {
        let (r, _) = denied(fa_config(), 255, build);
        assert_eq!(r.code, ReplyCode::FaPoorlyFormedRequest, "{why}");
    }

    // 194: a home agent address that is ours (§3.7.2) or none at all.
    for ha in [FA_LINK, COA2, Ipv4Addr::UNSPECIFIED] {
        let (r, _) = denied(fa_config(), 255, |w| {
            Msg::request(t, 600, HOME, ha, COA, w.next_id())
                .auth(MN_HA, SPI, KEY)
                .bytes()
        });
        assert_eq!(r.code, ReplyCode::FaInvalidHomeAgentAddress, "{ha}");
    }

    // 96 (RFC 2794 §3): no home address; we key pending requests by it. The reply goes to
    // 255.255.255.255 on the link, with the NAI so the node knows it is meant.
    let (r, w) = denied(fa_config(), 255, |w| {
        Msg::request(t, 600, Ipv4Addr::UNSPECIFIED, HA, COA, w.next_id())
            .ext(MN_NAI, NAI)
            .auth(MN_HA, SPI, KEY)
            .bytes()
    });
    assert_eq!(u8::from(r.code), 96);
    let payload = &w.to_mobile[0].payload;
    assert!(
        ExtensionIter::new(payload, ReplyRepr::LEN).any(|e| e == Ok((20, Extension::MnNai(NAI))))
    );
}

/// §3.7.1: 66 when a new mobile node would exceed the visitor list, or a home address has as
/// many pending requests as allowed; a retransmission from the same link-layer address
/// replaces its predecessor instead.
#[test]
fn insufficient_resources() {
    let mut w = World::new(FaConfig {
        max_visitors: 1,
        max_pending_per_mobile: 1,
        ..fa_config()
    });
    w.drop_relays = true;
    let first = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    assert!(w.exchange(&first).is_empty(), "relayed, waiting");
    // Another mobile node: the list is full.
    let other = Msg::request(RequestFlags::T, 600, XHOME, XHA, COA, w.next_id())
        .auth(MN_HA, SPI, XKEY)
        .bytes();
    let got = w.exchange(&other);
    assert_eq!(
        only_reply(&got, XHOME, MAC).code,
        ReplyCode::FaInsufficientResources
    );
    // The same home address from another link-layer address: one pending is the limit.
    let clash = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.send(from_mn(MAC2, HOME, 255), &clash);
    let got = w.to_mobile[1..].to_vec();
    assert_eq!(
        only_reply(&got, HOME, MAC2).code,
        ReplyCode::FaInsufficientResources
    );
    // A retransmission from the first node supersedes its own pending request.
    let again = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    assert_eq!(w.exchange(&again).len(), 0);
    assert_eq!(w.relayed.len(), 2);
    assert_eq!(w.fa.pending_count(), 1);
    assert_eq!(w.fa.stats().pending_superseded, 1);
    assert_eq!(w.fa.stats().denied.get(&66), Some(&2));
}

/// §3.7.2, RFC 3024 §4.2.1: at most one denial a second to the same mobile node; the rest
/// are counted, not sent. Another home address from the same link-layer address is another
/// registration and gets its own answer.
#[test]
fn denials_are_rate_limited_per_mobile_node() {
    let mut w = World::new(FaConfig {
        reverse_tunnel: ReverseTunnelPolicy::Mandatory,
        ..fa_config()
    });
    let no_t = |w: &mut World| w.request(0, 600).auth(MN_HA, SPI, KEY).bytes();
    let a = no_t(&mut w);
    assert_eq!(w.exchange(&a).len(), 1);
    w.advance(Duration::from_millis(500));
    let b = no_t(&mut w);
    assert_eq!(w.exchange(&b).len(), 0, "second denial within a second");
    let x = Msg::request(0, 600, XHOME, XHA, COA, w.next_id())
        .auth(MN_HA, SPI, XKEY)
        .bytes();
    let got = w.exchange(&x);
    assert_eq!(
        only_reply(&got, XHOME, MAC).code,
        ReplyCode::FaReverseTunnelMandatory
    );
    w.advance(Duration::from_millis(500));
    let c = no_t(&mut w);
    assert_eq!(w.exchange(&c).len(), 1, "a second later, answered again");
    let s = w.fa.stats();
    assert_eq!(s.denied.get(&75), Some(&4));
    assert_eq!(s.denials_rate_limited, 1);
}

/// §3.7.1: a request pending longer than the registration timeout (7 s) is deleted and the
/// mobile node told 78; never longer than the lifetime it asked for (§3.7.2.2). A reply that
/// comes after is discarded silently (§3.7.3.1).
#[test]
fn registration_timeout_78() {
    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let t0 = w.now.mono;
    let req = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let id = RequestPacket::new_checked(&req[..])
        .unwrap()
        .identification();
    w.exchange(&req);
    assert_eq!(w.fa.poll_timeout(), Some(t0 + Duration::from_secs(7)));
    w.run_until(t0 + Duration::from_millis(6_999));
    assert!(w.to_mobile.is_empty());
    w.run_until(t0 + Duration::from_secs(7));
    let r = only_reply(&w.to_mobile, HOME, MAC);
    assert_eq!(
        (r.code, r.lifetime, r.identification),
        (ReplyCode::FaRegistrationTimeout, 600, id)
    );
    assert_eq!(w.fa.pending_count(), 0);
    assert_eq!(w.fa.poll_timeout(), None);

    // The home agent answers, late: the foreign agent has nothing to match it to.
    let relay = w.relayed[0].clone();
    w.drop_relays = false;
    w.deliver_relay(&relay);
    w.pump();
    assert_eq!(w.fa.stats().dropped_reply_no_pending, 1);
    assert_eq!(w.to_mobile.len(), 1, "nothing more to the mobile node");
    assert!(w.fa_events.is_empty());

    // A 3-second lifetime bounds the wait.
    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let t0 = w.now.mono;
    let req = w.request(RequestFlags::T, 3).auth(MN_HA, SPI, KEY).bytes();
    w.exchange(&req);
    assert_eq!(w.fa.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    w.run_until(t0 + Duration::from_secs(3));
    assert_eq!(
        only_reply(&w.to_mobile, HOME, MAC).code,
        ReplyCode::FaRegistrationTimeout
    );
}

/// §3.7.3.2: the visitor lasts the granted lifetime from when the reply was relayed, and
/// goes without a word to anyone (§3.7: no message because a lifetime expired).
#[test]
fn visitor_expires_silently() {
    let mut w = World::new(fa_config());
    let t0 = w.now.mono;
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    assert_eq!(w.fa.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    w.run_until(t0 + Duration::from_secs(599));
    assert!(w.fa.visitor(HOME).is_some());
    let (sent_mn, sent_ha) = (w.to_mobile.len(), w.relayed.len());
    w.run_until(t0 + Duration::from_secs(600));
    assert!(w.fa.visitor(HOME).is_none());
    assert!(w.fa.visitors(w.now).is_empty());
    assert!(matches!(
        w.fa_events.last(),
        Some(FaEvent::VisitorRemoved { visitor, reason: RemovalReason::Expired }) if visitor.home_addr == HOME
    ));
    assert_eq!(w.fa.stats().expired, 1);
    assert_eq!((w.to_mobile.len(), w.relayed.len()), (sent_mn, sent_ha));
    assert_eq!(w.fa.poll_timeout(), None);

    // A home agent granting more than was asked (against §3.4): the request's lifetime is
    // used.
    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let t0 = w.now.mono;
    let req = w
        .request(RequestFlags::T, 300)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    let id = RequestPacket::new_checked(&req[..])
        .unwrap()
        .identification();
    let generous = Msg::reply(0, 900, HOME, HA, id)
        .ext(MN_NAI, NAI)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.fa.handle_from_home_agent(w.now, SocketAddrV4::new(HA, MIP_PORT), &generous);
    let v = w.fa.visitor(HOME).unwrap();
    assert_eq!(v.lifetime, 300);
    assert_eq!(v.expires_at, Some(t0 + Duration::from_secs(300)));
}

/// §3.7.2, §3.7.3.2: a deregistration is relayed; the visitor stays until the accepted reply,
/// then goes.
#[test]
fn deregistration_removes_the_visitor_after_the_reply() {
    let mut w = World::new(fa_config());
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    w.advance(Duration::from_secs(10));
    let dereg = w.request(0, 0).auth(MN_HA, SPI, KEY).bytes();
    // Step by hand: relayed, not yet answered.
    w.fa.handle_from_mobile(w.now, from_mn(MAC, HOME, 255), &dereg);
    let relay = w.fa.poll_transmit().expect("relayed");
    assert_eq!(relay.payload, dereg);
    assert!(w.fa.visitor(HOME).is_some(), "kept until the reply");
    assert!(w.fa.poll_event().is_none());
    w.deliver_relay(&relay);
    w.pump();
    let r = only_reply(&w.to_mobile[1..], HOME, MAC);
    assert_eq!((r.code, r.lifetime), (ReplyCode::Accepted, 0));
    assert!(w.ha(HA).bindings().get(HOME).is_none());
    assert!(w.fa.visitor(HOME).is_none());
    assert!(matches!(
        w.fa_events.last(),
        Some(FaEvent::VisitorRemoved {
            reason: RemovalReason::Deregistered,
            ..
        })
    ));
    assert_eq!(w.fa.stats().deregistered, 1);
    assert_eq!(w.fa.poll_timeout(), None, "no timer left behind");
}

/// RFC 5265 §3.5: one interface registers its internal home address with the i-HA and its
/// external one with the x-HA, through the same foreign agent, from the same link-layer
/// address. Both visitors exist side by side; each reply goes to its own home address;
/// deregistering one leaves the other.
#[test]
fn two_home_addresses_from_one_link_layer_address() {
    let mut w = World::new(fa_config());
    let internal = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let external = Msg::request(RequestFlags::T, 1800, XHOME, XHA, COA, w.next_id())
        .auth(MN_HA, SPI, XKEY)
        .bytes();
    // Both in flight at once: the second arrives before the first is answered.
    w.drop_relays = true;
    w.send(from_mn(MAC, HOME, 255), &internal);
    w.send(from_mn(MAC, XHOME, 255), &external);
    assert_eq!(w.fa.pending_count(), 2);
    w.drop_relays = false;
    let relays = w.relayed.clone();
    for r in &relays {
        w.deliver_relay(r);
    }
    w.pump();
    assert_eq!(w.to_mobile.len(), 2);
    assert_eq!(
        only_reply(&w.to_mobile[..1], HOME, MAC).code,
        ReplyCode::Accepted
    );
    assert_eq!(
        only_reply(&w.to_mobile[1..], XHOME, MAC).code,
        ReplyCode::Accepted
    );
    let rows = w.fa.visitors(w.now);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .map(|r| (r.home_addr, r.home_agent, r.link_addr.as_str()))
            .collect::<Vec<_>>(),
        [
            (HOME, HA, "02:00:00:00:00:0a"),
            (XHOME, XHA, "02:00:00:00:00:0a")
        ]
    );
    assert!(w.ha(HA).bindings().get(HOME).is_some());
    assert!(w.ha(XHA).bindings().get(XHOME).is_some());

    w.advance(Duration::from_secs(5));
    let dereg = Msg::request(0, 0, XHOME, XHA, COA, w.next_id())
        .auth(MN_HA, SPI, XKEY)
        .bytes();
    w.send(from_mn(MAC, XHOME, 255), &dereg);
    assert!(w.fa.visitor(XHOME).is_none());
    let v = w.fa.visitor(HOME).expect("the internal one stays");
    assert_eq!(v.mac, MAC);
    assert_eq!(w.fa.visitors(w.now).len(), 1);
}

/// The Foreign-Home Authentication Extension (the extension and the FA-HA security association
/// both ends share, keyed by the foreign agent's care-of address at the home agent).
fn fa_ha_at_home(key: &[u8]) -> Vec<ForeignAgentEntry> {
    vec![ForeignAgentEntry {
        address: COA,
        sa: sa(FA_HA_SPI, key),
    }]
}

/// The home agent's replies as they left it: (code, lifetime, FA-HA extension verifies with
/// `key`), checking that the FA-HA extension follows the MN-HA one and ends the reply
/// (§3.8.3.3).
fn ha_reply_fa_ha(t: &Transmit, key: &[u8]) -> (ReplyCode, u16, bool) {
    let r = &t.payload;
    let exts = auth_exts(r, ReplyRepr::LEN);
    let kinds: Vec<u8> = exts.iter().map(|e| e.1).collect();
    assert_eq!(kinds, [MN_HA, FA_HA], "MN-HA, then FA-HA");
    let (at, _, spi) = exts[1];
    assert_eq!((spi, r.len()), (FA_HA_SPI, at + 22));
    let fixed = parse_reply(r);
    (fixed.code, fixed.lifetime, verifies(r, at, key))
}

/// §3.7.1, §3.7.2.2, §3.5.4: with an FA-HA association, relayed registrations end with a
/// Foreign-Home Authentication Extension computed with its key; deregistrations and co-located
/// registrations never carry one. A home agent without the association discards such a relay
/// (§3.8.2.1 d), so the mobile node hears 78; the real home agent sharing it accepts the relay
/// and signs every reply for us (§3.8.1, §3.8.3.3); a reply whose extension is missing or
/// forged on the way gets 68 (§3.7.3.1); a home agent with another key denies 132, which we
/// cannot authenticate either: 68.
#[test]
fn foreign_home_authentication() {
    let config = FaConfig {
        home_agents: vec![PeerSa {
            addr: HA,
            sa: sa(FA_HA_SPI, FA_HA_KEY),
        }],
        ..fa_config()
    };

    // A home agent without the association: the relay authenticates, and is discarded.
    let mut w = World::new(config.clone());
    let t0 = w.now.mono;
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    let relay = &w.relayed[0].payload;
    let end = mn_ha_end(&req, RequestRepr::LEN);
    assert_eq!(relay[..end], req[..end]);
    let exts = auth_exts(relay, RequestRepr::LEN);
    assert_eq!(exts.len(), 2);
    let (at, kind, spi) = exts[1];
    assert_eq!((at, kind, spi), (end, FA_HA, FA_HA_SPI));
    assert_eq!(relay.len(), end + 22, "the FA-HA extension ends the relay");
    assert!(verifies(relay, at, FA_HA_KEY));
    assert!(!verifies(relay, at, b"another key"));
    assert_eq!(w.ha(HA).stats().dropped_fa_auth_unknown_fa, 1);
    assert!(w.ha_replies.is_empty());
    w.run_until(t0 + Duration::from_secs(7));
    assert_eq!(
        only_reply(&w.to_mobile, HOME, MAC).code,
        ReplyCode::FaRegistrationTimeout
    );

    // The real home agent sharing the association: accepted, its reply signed for us.
    let mut w = World::new(config.clone());
    w.has[0].1 = home_agent_with_fas(HA, HOME, KEY, fa_ha_at_home(FA_HA_KEY));
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);
    assert_eq!(
        ha_reply_fa_ha(&w.ha_replies[0], FA_HA_KEY),
        (ReplyCode::Accepted, 600, true)
    );
    // The FA-HA extension is ours: it is not relayed to the mobile node (§3.7.3.2), whose
    // MN-HA authenticator still verifies.
    let r = &got[0].payload;
    assert_eq!(r.len(), mn_ha_end(r, ReplyRepr::LEN));
    assert!(verifies(r, r.len() - 22, KEY));
    assert!(w.fa.visitor(HOME).is_some());
    assert_eq!(
        w.ha(HA).bindings().get(HOME).map(|b| b.care_of_addr),
        Some(COA)
    );
    assert_eq!(w.ha(HA).stats().denied_fa_auth, 0);
    // A deregistration carries no FA-HA (§3.5.4) and the home agent does not ask for one
    // (§3.8.1); its reply still carries one, as every reply to us does.
    w.advance(Duration::from_secs(5));
    let dereg = w.request(0, 0).auth(MN_HA, SPI, KEY).bytes();
    let got = w.exchange(&dereg);
    assert_eq!(w.relayed.last().unwrap().payload, dereg);
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);
    assert_eq!(
        ha_reply_fa_ha(&w.ha_replies[1], FA_HA_KEY),
        (ReplyCode::Accepted, 0, true)
    );
    assert!(w.fa.visitor(HOME).is_none());
    assert!(w.ha(HA).bindings().get(HOME).is_none());
    assert!(matches!(
        w.ha_events.last(),
        Some(HaEvent::BindingRemoved {
            reason: RemovalReason::Deregistered,
            ..
        })
    ));

    // A mobile node with the wrong key: the home agent checks MN-HA first and answers 131
    // (§3.8.2.1 a: MUST, the FA-HA extension being valid), signed for us, relayed.
    w.advance(Duration::from_secs(5));
    let bad = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, b"not the mobile node's key")
        .bytes();
    let got = w.exchange(&bad);
    assert_eq!(
        only_reply(&got, HOME, MAC).code,
        ReplyCode::HaMobileNodeFailedAuth
    );
    assert_eq!(
        ha_reply_fa_ha(&w.ha_replies[2], FA_HA_KEY),
        (ReplyCode::HaMobileNodeFailedAuth, 0, true)
    );
    assert_eq!(w.ha(HA).stats().denied_fa_auth, 0);

    // A co-located care-of address registered through us: no FA-HA on the relay (§3.5.4: not
    // an address we advertise), which the home agent does not require for an address other
    // than the relay's source; the reply is signed for us all the same, and checked.
    w.advance(Duration::from_secs(5));
    let (req, r) = w.register_co_located(0);
    assert_eq!(w.relayed.last().unwrap().payload, req);
    assert_eq!(r.code, ReplyCode::Accepted);
    assert_eq!(
        ha_reply_fa_ha(w.ha_replies.last().unwrap(), FA_HA_KEY),
        (ReplyCode::Accepted, 600, true)
    );
    assert_eq!(
        w.ha(HA).bindings().get(HOME).unwrap().care_of_addr,
        COLOCATED
    );

    // The reply's extension removed or forged on the way: discarded, 68 to the mobile node,
    // no visitor (the home agent did bind).
    for path in [ReplyPath::StripFaHa, ReplyPath::ForgeFaHa] {
        let mut w = World::new(config.clone());
        w.has[0].1 = home_agent_with_fas(HA, HOME, KEY, fa_ha_at_home(FA_HA_KEY));
        w.reply_path = path;
        let req = w
            .request(RequestFlags::T, 1800)
            .auth(MN_HA, SPI, KEY)
            .bytes();
        let got = w.exchange(&req);
        let r = only_reply(&got, HOME, MAC);
        assert_eq!(r.code, ReplyCode::FaHomeAgentFailedAuth);
        assert!(
            w.ha(HA).bindings().get(HOME).is_some(),
            "the HA did bind; we refuse"
        );
        assert!(w.fa.visitor(HOME).is_none() && w.fa_events.is_empty());
        assert_eq!(w.fa.pending_count(), 0);
        assert_eq!(w.fa.stats().denied.get(&68), Some(&1));
    }

    // The two agents disagree on the key: the home agent denies 132 without binding, signing
    // with its key, which we do not accept either: 68 to the mobile node.
    let mut w = World::new(config.clone());
    w.has[0].1 = home_agent_with_fas(HA, HOME, KEY, fa_ha_at_home(b"the home agent's idea"));
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(
        ha_reply_fa_ha(&w.ha_replies[0], b"the home agent's idea"),
        (ReplyCode::HaForeignAgentFailedAuth, 0, true)
    );
    assert_eq!(w.ha(HA).stats().denied_fa_auth, 1);
    assert!(w.ha(HA).bindings().get(HOME).is_none());
    assert_eq!(
        only_reply(&got, HOME, MAC).code,
        ReplyCode::FaHomeAgentFailedAuth
    );
    assert!(w.fa.visitor(HOME).is_none());
}

/// The relay of an independently generated request (scapy, common/fixtures/README.md:
/// `rrq_fa_relayed.bin`, whose first 63 bytes are the mobile node's part) authenticates with
/// the generator's FA-HA key: the fixture's own FA-HA extension verifies with the same
/// association, so the key and SPI mean to us what they mean to the generator.
#[test]
fn fa_ha_extension_matches_the_fixture_generator() {
    const FIXTURE: &[u8] = include_bytes!("../../common/fixtures/rrq_fa_relayed.bin");
    const FIXTURE_KEY: &[u8] = b"mipx fa-ha key!!";
    let fixture_coa = Ipv4Addr::new(203, 0, 113, 1);
    let fixture_ha = Ipv4Addr::new(10, 1, 0, 1);
    assert!(
        verifies(FIXTURE, 71, FIXTURE_KEY),
        "the generator's own FA-HA"
    );
    let mut fa = ForeignAgent::new(FaConfig {
        interfaces: vec![FaInterface {
            index: IFACE,
            address: FA_LINK,
            care_of_addrs: vec![fixture_coa],
        }],
        home_agents: vec![PeerSa {
            addr: fixture_ha,
            sa: sa(0x2000, FIXTURE_KEY),
        }],
        ..FaConfig::default()
    });
    let now = Now {
        mono: Duration::from_secs(1),
        ..START
    };
    fa.handle_from_mobile(
        now,
        from_mn(MAC, Ipv4Addr::new(10, 1, 0, 5), 255),
        &FIXTURE[..63],
    );
    let relay = fa.poll_transmit().expect("relayed");
    assert_eq!(relay.src, fixture_coa);
    assert_eq!(relay.payload[..63], FIXTURE[..63]);
    assert_eq!(relay.payload[63..69], [34, 20, 0, 0, 0x20, 0]);
    assert!(verifies(&relay.payload, 63, FIXTURE_KEY));
}

/// §3.7.2.1: with a mobile node we share an association with, exactly one valid MN-FA
/// extension, last in the request, or the request is discarded and 67 sent; our replies to
/// it carry an MN-FA extension (§3.7.1, §3.7.3.2), and the relay does not (§3.7.2.2).
#[test]
fn mobile_foreign_authentication_required() {
    let config = FaConfig {
        mobile_nodes: vec![PeerSa {
            addr: HOME,
            sa: sa(MN_FA_SPI, MN_FA_KEY),
        }],
        reverse_tunnel: ReverseTunnelPolicy::Mandatory,
        ..fa_config()
    };
    let base = |w: &mut World| w.request(RequestFlags::T, 1800).auth(MN_HA, SPI, KEY);
    let cases: [(&str, Build<'_>); 5] = [
        ("missing", Box::new(|w| base(w).bytes())),
        (
            "wrong key",
            Box::new(|w| base(w).auth(MN_FA, MN_FA_SPI, b"guess").bytes()),
        ),
        (
            "wrong SPI",
            Box::new(|w| base(w).auth(MN_FA, 0x3001, MN_FA_KEY).bytes()),
        ),
        (
            "two of them",
            Box::new(|w| {
                base(w)
                    .auth(MN_FA, MN_FA_SPI, MN_FA_KEY)
                    .auth(MN_FA, MN_FA_SPI, MN_FA_KEY)
                    .bytes()
            }),
        ),
        (
            "not last: an unauthenticated extension after it",
            Box::new(|w| {
                base(w)
                    .auth(MN_FA, MN_FA_SPI, MN_FA_KEY)
                    .ext(EDS, &[])
                    .bytes()
            }),
        ),
    ];
    for (why, build) in cases {
        let (r, w) = denied(config.clone(), 255, build);
        assert_eq!(r.code, ReplyCode::FaMobileNodeFailedAuth, "{why}");
        // Even the denial is authenticated for the mobile node.
        let p = &w.to_mobile[0].payload;
        let exts = auth_exts(p, ReplyRepr::LEN);
        assert_eq!((exts.len(), exts[0].1, exts[0].2), (1, MN_FA, MN_FA_SPI));
        assert!(verifies(p, exts[0].0, MN_FA_KEY), "{why}");
    }

    // Authenticated, but denied by policy (75): the denial carries MN-FA as well.
    let (r, w) = denied(config.clone(), 255, |w| {
        w.request(0, 1800)
            .auth(MN_HA, SPI, KEY)
            .auth(MN_FA, MN_FA_SPI, MN_FA_KEY)
            .bytes()
    });
    assert_eq!(r.code, ReplyCode::FaReverseTunnelMandatory);
    let p = &w.to_mobile[0].payload;
    assert!(verifies(p, auth_exts(p, ReplyRepr::LEN)[0].0, MN_FA_KEY));

    // Valid: relayed without MN-FA; the reply keeps the home agent's MN-HA and gains ours.
    let mut w = World::new(config);
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .ext(EDS, &[])
        .auth(MN_FA, MN_FA_SPI, MN_FA_KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(
        w.relayed[0].payload,
        req[..mn_ha_end(&req, RequestRepr::LEN)]
    );
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);
    let p = &got[0].payload;
    let exts = auth_exts(p, ReplyRepr::LEN);
    assert_eq!(
        exts.iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(),
        [(MN_HA, SPI), (MN_FA, MN_FA_SPI)]
    );
    assert!(verifies(p, exts[0].0, KEY));
    assert!(verifies(p, exts[1].0, MN_FA_KEY));
    assert_eq!(p.len(), exts[1].0 + 22);
    assert_eq!(
        w.fa.visitor(HOME).unwrap().delivery,
        DeliveryStyle::Encapsulating
    );
}

/// RFC 3519: a foreign agent that is not behind a NAT never advertises 'U' (§3.4), so a
/// mobile node must not send a UDP Tunnel Request through it (§4.4), with our care-of
/// address or a co-located one; relaying it would make the home agent tunnel in UDP to us
/// (§4.11). The request is poorly formed here: 70, and the home agent never sees it. An
/// extension whose Reserved 3 is set is "not understood and silently skipped" (§3.1.3), so
/// that request is relayed as it is, and the home agent's answer forwarded.
#[test]
fn udp_tunnel_request_is_answered_70() {
    let udp = [0, 0, 0, 4, 0, 0]; // sub-type 0, F=0 R=0, IP-in-UDP
    let (r, _) = denied(fa_config(), 255, |w| {
        w.request(RequestFlags::T, 1800)
            .ext(UDP_TUNNEL_REQUEST, &udp)
            .auth(MN_HA, SPI, KEY)
            .bytes()
    });
    assert_eq!(r.code, ReplyCode::FaPoorlyFormedRequest);
    let colocated = Ipv4Addr::new(192, 0, 2, 77);
    let (r, _) = denied(fa_config(), 255, |w| {
        Msg::request(
            RequestFlags::D | RequestFlags::T,
            1800,
            HOME,
            HA,
            colocated,
            w.next_id(),
        )
        .ext(UDP_TUNNEL_REQUEST, &[0, 0, 0x40, 4, 0, 0]) // R set, as §4.4 would want with 'U'
        .auth(MN_HA, SPI, KEY)
        .bytes()
    });
    assert_eq!(r.code, ReplyCode::FaPoorlyFormedRequest);

    let mut w = World::new(fa_config());
    let req = w
        .request(RequestFlags::T, 1800)
        .ext(UDP_TUNNEL_REQUEST, &[0, 0, 0, 4, 0, 1])
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(w.relayed[0].payload, req);
    // ha.rs answers a Reserved 3 it does not know with 134 (RFC 3519 §4.6.1); we relay it.
    assert_eq!(
        only_reply(&got, HOME, MAC).code,
        ReplyCode::HaPoorlyFormedRequest
    );
}

/// A co-located care-of address registered through us ('D', the 'R' bit case of §3.7.1): no
/// care-of address check, no RFC 3024 checks (we neither decapsulate nor reverse-tunnel for
/// it), relayed from our care-of address without FA-HA (§3.5.4: the care-of address is not
/// one we advertise).
#[test]
fn co_located_registration_through_the_foreign_agent() {
    let mut w = World::new(FaConfig {
        reverse_tunnel: ReverseTunnelPolicy::Unavailable,
        ..fa_config()
    });
    let (req, r) = w.register_co_located(RequestFlags::T);
    assert_eq!(w.relayed[0].src, COA);
    assert_eq!(w.relayed[0].payload, req);
    assert_eq!(r.code, ReplyCode::Accepted);
    assert_eq!(
        w.ha(HA).bindings().get(HOME).unwrap().care_of_addr,
        COLOCATED
    );
    let v = w.fa.visitor(HOME).unwrap();
    assert!(v.co_located && !v.reverse_tunnel);
    assert_eq!(v.care_of_addr, COLOCATED);
}

/// §3.7.3.1 and §1.9 on replies: no pending request or another Identification, silence; an
/// unknown non-skippable extension, silence (the request stays pending); malformed, or not
/// exactly one MN-HA extension, 71; RFC 2794 §3: a reply that drops the NAI, or names no
/// home agent, is relayed with code 97 or 98.
#[test]
fn replies_from_home_agents_are_checked() {
    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let ha_from = SocketAddrV4::new(HA, MIP_PORT);
    let pend = |w: &mut World| {
        w.advance(Duration::from_secs(2));
        let req = w
            .request(RequestFlags::T, 1800)
            .auth(MN_HA, SPI, KEY)
            .bytes();
        w.exchange(&req);
        RequestPacket::new_checked(&req[..])
            .unwrap()
            .identification()
    };
    let deliver = |w: &mut World, bytes: &[u8]| {
        let before = w.to_mobile.len();
        w.fa.handle_from_home_agent(w.now, ha_from, bytes);
        w.pump();
        w.to_mobile[before..].to_vec()
    };
    let good = |id: u64| {
        Msg::reply(0, 600, HOME, HA, id)
            .ext(MN_NAI, NAI)
            .auth(MN_HA, SPI, KEY)
    };

    // Nothing pending, or another Identification, or truncated: silence.
    let id = 0xdead_beef_0000_0001;
    assert!(deliver(&mut w, &good(id).bytes()).is_empty());
    let id = pend(&mut w);
    assert!(deliver(&mut w, &good(id ^ 1).bytes()).is_empty());
    assert_eq!(w.fa.stats().dropped_reply_no_pending, 2);
    assert!(deliver(&mut w, &good(id).bytes()[..19]).is_empty());
    assert_eq!(w.fa.stats().dropped_malformed_reply, 1);
    // An unknown mandatory extension: silently discarded, still pending.
    let unknown = Msg::reply(0, 600, HOME, HA, id)
        .ext(37, &[0, 0])
        .auth(MN_HA, SPI, KEY)
        .bytes();
    assert!(deliver(&mut w, &unknown).is_empty());
    assert_eq!(w.fa.stats().dropped_reply_unknown_extension, 1);
    assert_eq!(w.fa.pending_count(), 1);
    // Only the high 32 bits differ: a match (§3.7.3.1 compares the low 32).
    let r = deliver(&mut w, &good(id ^ 0xffff_0000_0000_0000).bytes());
    assert_eq!(only_reply(&r, HOME, MAC).code, ReplyCode::Accepted);
    assert!(w.fa.visitor(HOME).is_some());

    // 71: malformed, no MN-HA, two MN-HA.
    let poorly_formed: [Box<dyn Fn(u64) -> Vec<u8>>; 3] = [
        Box::new(|id| {
            let mut b = good(id).bytes();
            b.extend_from_slice(&[131, 40, 1]);
            b
        }),
        Box::new(|id| Msg::reply(0, 600, HOME, HA, id).ext(MN_NAI, NAI).bytes()),
        Box::new(|id| good(id).auth(MN_HA, SPI, KEY).bytes()),
    ];
    for build in poorly_formed {
        let id = pend(&mut w);
        let r = deliver(&mut w, &build(id));
        let r = only_reply(&r, HOME, MAC);
        assert_eq!(
            (r.code, r.identification),
            (ReplyCode::FaPoorlyFormedReply, id)
        );
        assert_eq!(w.fa.pending_count(), 0);
    }
    assert_eq!(w.fa.stats().denied.get(&71), Some(&3));

    // 97: the request had the NAI, the reply not. The home agent's bytes are relayed with
    // only the code changed; the visitor is not refreshed.
    let id = pend(&mut w);
    let no_nai = Msg::reply(0, 600, HOME, HA, id)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let events = w.fa_events.len();
    let r = deliver(&mut w, &no_nai);
    assert_eq!(u8::from(only_reply(&r, HOME, MAC).code), 97);
    assert_eq!(r[0].payload[0], no_nai[0]);
    assert_eq!(r[0].payload[2..], no_nai[2..]);
    assert_eq!(w.fa_events.len(), events);
    // 98: no home agent address.
    let id = pend(&mut w);
    let no_ha = Msg::reply(0, 600, HOME, Ipv4Addr::UNSPECIFIED, id)
        .ext(MN_NAI, NAI)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let r = deliver(&mut w, &no_ha);
    assert_eq!(u8::from(only_reply(&r, HOME, MAC).code), 98);
    assert_eq!(w.fa_events.len(), events);
}

/// §3.7.3: an ICMP error instead of a reply becomes 80, 81, 82 or 88 to the mobile node. With
/// the request quoted, only that pending request is answered.
#[test]
fn icmp_errors_about_relayed_requests() {
    for (icmp_code, reply) in [(0, 80), (1, 81), (3, 82), (13, 88)] {
        let mut w = World::new(fa_config());
        w.drop_relays = true;
        let req = w
            .request(RequestFlags::T, 600)
            .auth(MN_HA, SPI, KEY)
            .bytes();
        w.exchange(&req);
        w.fa.handle_icmp_unreachable(
            w.now,
            HA,
            IcmpUnreachable::from_unreachable_code(icmp_code),
            &[],
        );
        w.pump();
        let r = only_reply(&w.to_mobile, HOME, MAC);
        assert_eq!(u8::from(r.code), reply);
        assert_eq!(w.fa.pending_count(), 0);
    }

    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let a = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.send(from_mn(MAC, HOME, 255), &a);
    // A second mobile node at the same home agent.
    let other = Ipv4Addr::new(10, 1, 0, 11);
    let b = Msg::request(RequestFlags::T, 600, other, HA, COA, w.next_id())
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.send(from_mn(MAC2, other, 255), &b);
    assert_eq!(w.fa.pending_count(), 2);
    // The ICMP error quotes the IP and UDP headers and the first 24 bytes of the request.
    let quoted = w.relayed[1].payload[..24].to_vec();
    w.fa.handle_icmp_unreachable(w.now, HA, IcmpUnreachable::Port, &quoted);
    w.pump();
    let r = only_reply(&w.to_mobile, other, MAC2);
    assert_eq!(r.code, ReplyCode::FaHomeAgentPortUnreachable);
    assert_eq!(w.fa.pending_count(), 1);
    // About another home agent: nothing pending there.
    w.fa.handle_icmp_unreachable(w.now, XHA, IcmpUnreachable::Host, &[]);
    assert_eq!(w.fa.stats().dropped_icmp_no_pending, 1);
    assert_eq!(w.fa.pending_count(), 1);
}

/// Truncations, bit flips and garbage from either side never panic, never create or change a
/// visitor the home agent did not accept, and whatever reaches a mobile node is a reply.
#[test]
fn bad_input_never_creates_a_visitor() {
    let mut w = World::new(fa_config());
    let good = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .ext(EDS, &[])
        .bytes();
    let from = from_mn(MAC, HOME, 255);
    w.send(from, &good);
    let registered =
        w.fa.visitor(HOME)
            .cloned()
            .expect("the genuine request registers");
    for n in 0..good.len() {
        w.advance(Duration::from_millis(1100));
        w.send(from, &good[..n]);
    }
    for i in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            w.advance(Duration::from_millis(1100));
            w.send(from, &bad);
        }
    }
    w.send(from, b"");
    w.send(from, &[1; 3]);
    w.send(FromMobile { iface: 99, ..from }, &good);
    assert_eq!(w.fa.stats().dropped_unknown_interface, 1);
    assert!(w.fa.stats().dropped_malformed_request >= RequestRepr::LEN as u64);
    assert!(w.fa.stats().dropped_request_unknown_extension >= 1);
    assert!(w.fa.stats().denied.get(&70).is_some_and(|&n| n >= 1));
    for t in &w.to_mobile {
        let _ = parse_reply(&t.payload);
    }
    // Everything the home agent saw again was refused (a replayed Identification, 133, or a
    // broken authenticator, 131), so the one visitor is exactly as registered.
    assert_eq!(w.ha(HA).stats().accepted, 1);
    assert_eq!(w.fa.stats().accepted, 1);
    assert_eq!(w.fa.visitor(HOME), Some(&registered));
    assert_eq!(w.fa.visitors(w.now).len(), 1);
    assert_eq!(w.fa_events.len(), 1);

    // Replies: truncations and flips of a genuine one, against a pending request.
    let mut w = World::new(fa_config());
    w.drop_relays = true;
    let req = w
        .request(RequestFlags::T, 1800)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    let id = RequestPacket::new_checked(&req[..])
        .unwrap()
        .identification();
    let reply = Msg::reply(0, 600, HOME, HA, id)
        .ext(MN_NAI, NAI)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let ha_from = SocketAddrV4::new(HA, MIP_PORT);
    for n in 0..ReplyRepr::LEN {
        w.fa.handle_from_home_agent(w.now, ha_from, &reply[..n]);
    }
    assert_eq!(w.fa.stats().dropped_malformed_reply, ReplyRepr::LEN as u64);
    for i in 0..reply.len() {
        let mut bad = reply.clone();
        bad[i] ^= 0x10;
        w.fa.handle_from_home_agent(w.now, ha_from, &bad);
    }
    w.fa.handle_from_home_agent(w.now, ha_from, &[3; 200]);
    w.pump();
    for t in &w.to_mobile {
        let _ = parse_reply(&t.payload);
    }
    assert!(w.fa.visitors(w.now).len() <= 1);
}

/// The NAT in front of the agent in the tests below, and an agent configured behind it.
const NAT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 200), 61_000);
const UDP_TUNNEL_REPLY: u8 = 44; // RFC 3519 §3.2

fn fa_behind_nat() -> FaConfig {
    FaConfig {
        udp_tunnel: Some(UdpTunnelling {
            max_keepalive: Duration::from_secs(30),
        }),
        ..fa_config()
    }
}

/// The extensions of a message, as (offset, type, data).
fn extensions(msg: &[u8], fixed_len: usize) -> Vec<(usize, u8, Vec<u8>)> {
    let mut out = vec![];
    let mut at = fixed_len;
    while at + 2 <= msg.len() {
        let len = usize::from(msg[at + 1]);
        out.push((at, msg[at], msg[at + 2..at + 2 + len].to_vec()));
        at += 2 + len;
    }
    out
}

/// RFC 3519 §4.5-4.6, §4.9: behind a NAT the agent adds its UDP Tunnel Request after the
/// mobile node's authenticator (and before its own FA-HA one); the home agent sees the NAT
/// (source ≠ care-of address), binds the NAT's address and port, and answers after the
/// mobile node's authenticator; the agent removes that answer before the reply goes to the
/// mobile node, marks the visitor UDP-tunnelled, and keeps the mapping open with keepalives
/// the home agent answers. A relay postpones the keepalive (it is a packet to the HA).
#[test]
fn behind_a_nat_the_agent_asks_for_udp_tunnelling() {
    let mut w = World::new(fa_behind_nat());
    // The home agent knows the agent by the address its relays come from: the NAT's.
    let fa_at_home = vec![ForeignAgentEntry {
        address: *NAT.ip(),
        sa: sa(FA_HA_SPI, FA_HA_KEY),
    }];
    w.has = vec![(HA, home_agent_with_fas(HA, HOME, KEY, fa_at_home))];
    w.fa = ForeignAgent::new(FaConfig {
        home_agents: vec![PeerSa {
            addr: HA,
            sa: sa(FA_HA_SPI, FA_HA_KEY),
        }],
        ..fa_behind_nat()
    });
    w.nat = Some(NAT);
    let req = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);

    // The relay: the mobile node's part untouched, then 144, then FA-HA over all of it.
    let relay = &w.relayed[0].payload;
    assert_eq!(&relay[..req.len()], &req[..]);
    let exts = extensions(relay, RequestRepr::LEN);
    let kinds: Vec<u8> = exts.iter().map(|e| e.1).collect();
    assert_eq!(kinds, [MN_NAI, MN_HA, UDP_TUNNEL_REQUEST, FA_HA]);
    assert_eq!(
        exts[2].2,
        [0, 0, 0, 4, 0, 0],
        "sub-type 0, no F, no R, IP-in-UDP"
    );

    // The home agent: UDP tunnel to the NAT's mapping, our care-of address kept.
    let b = w.ha(HA).bindings().get(HOME).unwrap().clone();
    assert_eq!(
        (b.care_of_addr, b.udp_tunnel, b.half_bound),
        (COA, Some(NAT), false)
    );
    // Its reply: 44 after MN-HA, before FA-HA; the mobile node's copy ends at MN-HA.
    let ha_reply = &w.ha_replies[0].payload;
    let kinds: Vec<u8> = extensions(ha_reply, ReplyRepr::LEN)
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(kinds, [MN_NAI, MN_HA, UDP_TUNNEL_REPLY, FA_HA]);
    let kinds: Vec<u8> = extensions(&got[0].payload, ReplyRepr::LEN)
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(kinds, [MN_NAI, MN_HA]);

    // The visitor: UDP, with our 30 s cap under the home agent's 110 s.
    let v = w.fa.visitor(HOME).unwrap();
    assert_eq!(v.udp_keepalive, Some(Duration::from_secs(30)));
    assert!(w.fa.visitors(w.now)[0].udp_tunnel);
    assert_eq!(
        (
            w.fa.stats().udp_tunnel_requests,
            w.fa.stats().udp_tunnels_assented
        ),
        (1, 1)
    );

    // §4.9: first keepalive K after the registration, answered through the NAT.
    let t0 = w.now.mono;
    let relays = w.relayed.len();
    w.run_until(t0 + Duration::from_secs(29));
    assert_eq!(w.relayed.len(), relays, "nothing before K");
    w.run_until(t0 + Duration::from_secs(30));
    assert_eq!(w.relayed.len(), relays + 1);
    let ka = w.relayed.last().unwrap().clone();
    assert_eq!((ka.src, ka.dst), (COA, SocketAddrV4::new(HA, MIP_PORT)));
    let k = KeepaliveRepr::parse(&ka.payload).unwrap();
    assert_eq!((k.src, k.dst, k.icmp_type), (COA, HA, ICMP_ECHO_REQUEST));
    assert_eq!(w.ha(HA).stats().keepalives, 1);
    assert_eq!(w.fa.stats().keepalive_replies, 1);

    // A re-registration at 45 s is a packet to the home agent: the next keepalive waits
    // until 75 s, not 60 s.
    w.run_until(t0 + Duration::from_secs(45));
    let req = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    w.exchange(&req);
    let relays = w.relayed.len();
    w.run_until(t0 + Duration::from_secs(74));
    assert_eq!(w.relayed.len(), relays);
    w.run_until(t0 + Duration::from_secs(75));
    assert_eq!(w.relayed.len(), relays + 1);
    assert_eq!(w.fa.stats().keepalives_sent, 2);
    assert_eq!(w.fa.stats().keepalive_replies, 2);

    // An echo reply that is not for us (someone else's identifier), and junk tunnel data:
    // counted, dropped, no effect.
    w.fa.handle_from_home_agent(w.now, SocketAddrV4::new(HA, MIP_PORT), &[4, 4, 0, 0, 1]);
    assert_eq!(w.fa.stats().dropped_tunnel_data, 1);

    // After deregistration no more keepalives.
    let req = w.request(RequestFlags::T, 0).auth(MN_HA, SPI, KEY).bytes();
    w.exchange(&req);
    assert!(w.fa.visitor(HOME).is_none());
    let relays = w.relayed.len();
    w.run_until(t0 + Duration::from_secs(400));
    assert_eq!(w.relayed.len(), relays, "no keepalive for an unused tunnel");
}

/// RFC 3519 §4.6: without a NAT on the path (source = care-of address) the home agent
/// declines; the agent then tunnels IP-in-IP (§3.1.1: "MUST NOT use MIP UDP tunnelling")
/// and sends no keepalives. A deregistration carries no request.
#[test]
fn without_a_nat_the_home_agent_declines() {
    let mut w = World::new(fa_behind_nat());
    let req = w
        .request(RequestFlags::T, 600)
        .auth(MN_HA, SPI, KEY)
        .bytes();
    let got = w.exchange(&req);
    assert_eq!(only_reply(&got, HOME, MAC).code, ReplyCode::Accepted);
    let b = w.ha(HA).bindings().get(HOME).unwrap().clone();
    assert_eq!(b.udp_tunnel, None);
    assert_eq!(w.fa.visitor(HOME).unwrap().udp_keepalive, None);
    assert_eq!(w.fa.stats().udp_tunnels_refused, 1);
    let relays = w.relayed.len();
    w.run_until(w.now.mono + Duration::from_secs(300));
    assert_eq!(w.relayed.len(), relays);

    let req = w.request(RequestFlags::T, 0).auth(MN_HA, SPI, KEY).bytes();
    w.exchange(&req);
    let last = &w.relayed.last().unwrap().payload;
    assert!(
        extensions(last, RequestRepr::LEN)
            .iter()
            .all(|e| e.1 != UDP_TUNNEL_REQUEST)
    );
}

/// RFC 3519 §4.4, §4.6, §4.11: behind a NAT, a co-located registration through us carries
/// the mobile node's own request with 'R': relayed untouched (we add none); the home agent
/// assents, and the tunnel stays half bound until the mobile node's first keepalive from
/// the registration's source address (any port) binds it; a keepalive from another address
/// does not. Without 'R' the request is still 70 here; a foreign agent's request with 'D'
/// is 134 at the home agent (§4.6.1).
#[test]
fn co_located_through_an_agent_behind_a_nat() {
    let colocated = Ipv4Addr::new(192, 0, 2, 77);
    let mut w = World::new(fa_behind_nat());
    w.nat = Some(NAT);
    let req = Msg::request(
        RequestFlags::D | RequestFlags::T,
        600,
        HOME,
        HA,
        colocated,
        w.next_id(),
    )
    .ext(UDP_TUNNEL_REQUEST, &[0, 0, 0x40, 4, 0, 0])
    .auth(MN_HA, SPI, KEY)
    .bytes();
    let before = w.to_mobile.len();
    w.send(from_mn(MAC, colocated, 64), &req);
    assert_eq!(w.relayed[0].payload, req, "relayed as it is");
    assert_eq!(
        only_reply(&w.to_mobile[before..], HOME, MAC).code,
        ReplyCode::Accepted
    );
    let kinds: Vec<u8> = extensions(&w.to_mobile[before].payload, ReplyRepr::LEN)
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(
        kinds,
        [UDP_TUNNEL_REPLY, MN_HA],
        "the mobile node's answer, authenticated"
    );
    let b = w.ha(HA).bindings().get(HOME).unwrap().clone();
    assert_eq!((b.half_bound, b.udp_tunnel), (true, None));
    assert!(w.fa.visitor(HOME).unwrap().co_located);

    let keepalive = |src: Ipv4Addr| {
        let k = KeepaliveRepr {
            src,
            dst: HA,
            ip_id: 7,
            icmp_type: ICMP_ECHO_REQUEST,
            echo: &[0, 1, 0, 1],
        };
        let mut b = vec![0u8; k.buffer_len()];
        k.emit(&mut b).unwrap();
        b
    };
    let now = w.now;
    let ha = &mut w.has.iter_mut().find(|(a, _)| *a == HA).unwrap().1;
    // Another address: not the NAT the registration came through.
    let stranger = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 201), 40_000);
    ha.handle_datagram(now, stranger, HA, &keepalive(HOME));
    assert!(ha.poll_transmit().is_none());
    assert_eq!(ha.bindings().get(HOME).unwrap().udp_tunnel, None);
    // The NAT's address, the mobile node's own mapping (another port): bound, answered.
    let mn_mapping = SocketAddrV4::new(*NAT.ip(), 61_001);
    ha.handle_datagram(now, mn_mapping, HA, &keepalive(HOME));
    let answer = ha.poll_transmit().expect("the keepalive is answered");
    assert_eq!(answer.dst, mn_mapping);
    assert_eq!(
        ha.bindings().get(HOME).unwrap().udp_tunnel,
        Some(mn_mapping)
    );
    assert!(
        matches!(ha.poll_event(), Some(HaEvent::BindingUpdated { new, .. }) if new.udp_tunnel == Some(mn_mapping))
    );
    assert_eq!(ha.stats().half_bound_tunnels_bound, 1);

    // Without 'R', through us: 70, never relayed.
    let (r, _) = denied(fa_behind_nat(), 255, |w| {
        Msg::request(
            RequestFlags::D | RequestFlags::T,
            600,
            HOME,
            HA,
            colocated,
            w.next_id(),
        )
        .ext(UDP_TUNNEL_REQUEST, &[0, 0, 0, 4, 0, 0])
        .auth(MN_HA, SPI, KEY)
        .bytes()
    });
    assert_eq!(r.code, ReplyCode::FaPoorlyFormedRequest);

    // A foreign agent's extension (after MN-HA) on a co-located request: 134.
    let mut ha = home_agent(HA, HOME, KEY);
    let id = w.next_id();
    let bad = Msg::request(
        RequestFlags::D | RequestFlags::T,
        600,
        HOME,
        HA,
        colocated,
        id,
    )
    .auth(MN_HA, SPI, KEY)
    .ext(UDP_TUNNEL_REQUEST, &[0, 0, 0, 4, 0, 0])
    .bytes();
    ha.handle_datagram(w.now, NAT, HA, &bad);
    let t = ha.poll_transmit().unwrap();
    assert_eq!(
        parse_reply(&t.payload).code,
        ReplyCode::HaPoorlyFormedRequest
    );
}

/// RFC 3519 §4.4, §4.11 with the real mobile node engine: a co-located care-of address
/// registered through an agent that advertises 'U' carries the node's UDP Tunnel Request with
/// 'R' and 'D', from the care-of address to the agent; once accepted the node sends its first
/// keepalive at once, straight to the home agent, which binds the half-bound tunnel to the
/// node's own NAT mapping. Through an agent without 'U' there is no UDP Tunnel Request at all.
#[test]
fn the_mobile_node_registers_co_located_through_an_agent_with_u() {
    use mipx_control::proto::mn::{MobileNode, ViaAgent};
    let colocated = Ipv4Addr::new(192, 0, 2, 77);
    let node = || MobileNode::new(mn_config(HOME, HA, sa(SPI, KEY)));
    let agent = ViaAgent {
        addr: FA_LINK,
        mac: [2, 0, 0, 0, 0, 1],
    };
    let mut w = World::new(fa_behind_nat());
    w.nat = Some(NAT);
    let mut mn = node();
    mn.register_co_located_via(w.now, agent, colocated, true);
    let req = mn.poll_transmit().expect("a request");
    assert_eq!(
        (req.src, req.dst),
        (Some(colocated), SocketAddrV4::new(FA_LINK, MIP_PORT))
    );
    let fixed = RequestRepr::parse(&RequestPacket::new_checked(&req.payload[..]).unwrap()).unwrap();
    assert!(fixed.flags.contains(RequestFlags::D) && fixed.care_of_addr == colocated);
    let exts = extensions(&req.payload, RequestRepr::LEN);
    assert_eq!(exts[0].1, UDP_TUNNEL_REQUEST);
    assert_eq!(exts[0].2[2] & 0x40, 0x40, "R set");

    // Through the agent and the NAT to the home agent and back.
    let before = w.to_mobile.len();
    w.send(from_mn(MAC, colocated, 64), &req.payload);
    let reply = w.to_mobile[before].clone();
    mn.handle_datagram(w.now, SocketAddrV4::new(FA_LINK, MIP_PORT), &reply.payload);
    assert!(mn.registration(w.now).is_some(), "registered");
    assert!(mn.udp_tunnel().is_some(), "UDP tunnelling assented");
    assert!(!mn.agent_decapsulates());
    // The keepalive, at once, from the care-of address to the home agent.
    let ka = mn
        .poll_transmit()
        .expect("a keepalive right after the reply");
    assert_eq!(
        (ka.src, ka.dst),
        (Some(colocated), SocketAddrV4::new(HA, MIP_PORT))
    );
    let mapping = SocketAddrV4::new(*NAT.ip(), 61_234);
    let now = w.now;
    let ha = &mut w.has.iter_mut().find(|(a, _)| *a == HA).unwrap().1;
    assert!(ha.bindings().get(HOME).unwrap().half_bound);
    ha.handle_datagram(now, mapping, HA, &ka.payload);
    assert_eq!(ha.bindings().get(HOME).unwrap().udp_tunnel, Some(mapping));
    let answer = ha.poll_transmit().expect("answered");
    mn.handle_datagram(now, SocketAddrV4::new(HA, MIP_PORT), &answer.payload);
    assert_eq!(mn.stats().keepalive_replies, 1);

    // An agent without 'U': 'D', through the agent, no UDP Tunnel Request (§4.4).
    let mut mn = node();
    mn.register_co_located_via(w.now, agent, colocated, false);
    let req = mn.poll_transmit().unwrap();
    assert!(
        extensions(&req.payload, RequestRepr::LEN)
            .iter()
            .all(|e| e.1 != UDP_TUNNEL_REQUEST)
    );
    // With the agent's care-of address: from the home address, 'D' clear, none either.
    let mut mn = node();
    mn.register_via(w.now, agent, COA);
    let req = mn.poll_transmit().unwrap();
    assert_eq!(req.src, Some(HOME));
    let fixed = RequestRepr::parse(&RequestPacket::new_checked(&req.payload[..]).unwrap()).unwrap();
    assert!(!fixed.flags.contains(RequestFlags::D));
    assert!(
        extensions(&req.payload, RequestRepr::LEN)
            .iter()
            .all(|e| e.1 != UDP_TUNNEL_REQUEST)
    );
}
