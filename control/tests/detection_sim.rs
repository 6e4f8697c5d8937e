//! RFC 5265 internal network detection (§3.2-§3.5), simulated: a mobile node's [`Detector`],
//! a real internal home agent (trusted networks configured) and a real external one, a network
//! that may lose, delay or block datagrams, and a virtual clock. No sockets, no sleeping.
//!
//! Besides the named scenarios, one test runs every combination of i-HA behaviour, x-HA
//! behaviour, losses and detection period, and checks the safety properties in all of them:
//! never inside without a trusted i-HA reply through this interface, never an open gate
//! outside "inside", never a gate open longer than T_MONITOR after an i-HA request.

#[expect(
    dead_code,
    reason = "real engines at both ends, no message built by hand: `Msg` and its helpers go unused"
)]
mod util;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{ExtensionIter, MIP_PORT, ReplyRepr};
use mipx_control::proto::Now;
use mipx_control::proto::detect::{DetectConfig, DetectEvent, Detector, Gate, Location, Reason};
use mipx_control::proto::ha::{HaConfig, HomeAgent, Subnet};
use mipx_control::proto::mn::MnConfig;
use util::{START, ha_config, sa};

const I_HA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const X_HA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const I_HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 50);
const X_HOME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// An address in the intranet's trusted subnet, and one outside it.
const INSIDE_COA: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 7);
const OUTSIDE_COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const T_MONITOR: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(3);

/// The key of the MN-HA association with `spi`: one per home agent.
fn key(spi: u32) -> Vec<u8> {
    format!("key {spi}").into_bytes()
}

/// [`util::mn_config`]'s mobile node with its retransmissions capped at 4 s.
fn mn_config(home_addr: Ipv4Addr, home_agent: Ipv4Addr, spi: u32) -> MnConfig {
    MnConfig {
        max_retransmit: Duration::from_secs(4),
        ..util::mn_config(home_addr, home_agent, sa(spi, &key(spi)))
    }
}

fn home_agent(
    address: Ipv4Addr,
    home_addr: Ipv4Addr,
    spi: u32,
    trusted: Option<Vec<Subnet>>,
) -> HomeAgent {
    HomeAgent::new(HaConfig {
        trusted_networks: trusted,
        ..ha_config(address, home_addr, sa(spi, &key(spi)))
    })
}

/// How one home agent behaves toward the mobile node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Blocked (the firewall, or not reachable from here).
    Blocked,
    /// Reachable, with this one-way delay; the first `lose` requests are lost.
    Open { delay: Duration, lose: usize },
}

/// How the i-HA is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IHa {
    /// `trusted_networks` holds the intranet's subnet (10.20.0.0/16).
    Trusting,
    /// `trusted_networks` left out: a plain home agent, no Trusted Networks Configured.
    Plain,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    Mn,
    IHa,
    XHa,
}

/// What someone on a path does to a datagram.
type Tamper = fn(Vec<u8>) -> Vec<u8>;

/// A datagram in flight: (delivery time, sequence, destination, source, bytes), earliest first.
type InFlight = Reverse<(Duration, u64, To, SocketAddrV4, Vec<u8>)>;

struct World {
    now: Now,
    mn: Detector,
    i_ha: HomeAgent,
    x_ha: HomeAgent,
    i_path: Path,
    x_path: Path,
    coa: Ipv4Addr,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    lost_i: usize,
    lost_x: usize,
    events: Vec<(Duration, DetectEvent)>,
    /// Send times of every request to the i-HA.
    i_requests: Vec<Duration>,
    /// Someone on the i-HA's path rewrites its replies.
    i_tamper: Option<Tamper>,
}

impl World {
    fn new(i_ha: IHa, i_path: Path, x_path: Path, coa: Ipv4Addr, period: Duration) -> Self {
        let trusted = match i_ha {
            IHa::Trusting => Some(vec![Subnet {
                addr: Ipv4Addr::new(10, 20, 0, 0),
                len: 16,
            }]),
            IHa::Plain => None,
        };
        World {
            now: Now {
                mono: Duration::from_secs(1000),
                ..START
            },
            mn: Detector::new(DetectConfig {
                internal: mn_config(I_HOME, I_HA, 0x1000),
                external: Some(mn_config(X_HOME, X_HA, 0x2000)),
                detection_period: period,
                t_monitor: T_MONITOR,
                grace: GRACE,
            }),
            i_ha: home_agent(I_HA, I_HOME, 0x1000, trusted),
            x_ha: home_agent(X_HA, X_HOME, 0x2000, None),
            i_path,
            x_path,
            coa,
            queue: BinaryHeap::new(),
            seq: 0,
            lost_i: 0,
            lost_x: 0,
            events: Vec::new(),
            i_requests: Vec::new(),
            i_tamper: None,
        }
    }

    /// Mode mc (draft-ietf-mip4-mobike-connectivity): no x-HA; the VPN gateway's answer is
    /// reported with `vpn_reachable`.
    fn new_mc(i_path: Path, coa: Ipv4Addr, period: Duration) -> Self {
        let mut w = World::new(IHa::Trusting, i_path, Path::Blocked, coa, period);
        w.mn = Detector::new(DetectConfig {
            internal: mn_config(I_HOME, I_HA, 0x1000),
            external: None,
            detection_period: period,
            t_monitor: T_MONITOR,
            grace: GRACE,
        });
        w
    }

    fn push(&mut self, at: Duration, to: To, from: SocketAddrV4, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, to, from, bytes)));
    }

    /// Moves what the engines queued onto the network.
    fn flush(&mut self) {
        while let Some(t) = self.mn.poll_transmit() {
            let from = SocketAddrV4::new(t.src.unwrap_or(self.coa), 43400);
            let (to, path, lost) = if *t.dst.ip() == I_HA {
                self.i_requests.push(self.now.mono);
                (To::IHa, self.i_path, &mut self.lost_i)
            } else {
                (To::XHa, self.x_path, &mut self.lost_x)
            };
            if let Path::Open { delay, lose } = path {
                if *lost < lose {
                    *lost += 1;
                } else {
                    self.push(self.now.mono + delay, to, from, t.payload);
                }
            }
        }
        for (to_ha, ha_addr) in [(true, I_HA), (false, X_HA)] {
            loop {
                let t = if to_ha {
                    self.i_ha.poll_transmit()
                } else {
                    self.x_ha.poll_transmit()
                };
                let Some(t) = t else { break };
                let path = if to_ha { self.i_path } else { self.x_path };
                if let Path::Open { delay, .. } = path {
                    let from = SocketAddrV4::new(ha_addr, MIP_PORT);
                    let bytes = match self.i_tamper.filter(|_| to_ha) {
                        Some(tamper) => tamper(t.payload),
                        None => t.payload,
                    };
                    self.push(self.now.mono + delay, To::Mn, from, bytes);
                }
            }
        }
        while let Some(e) = self.mn.poll_event() {
            self.events.push((self.now.mono, e));
        }
        while self.i_ha.poll_event().is_some() {}
        while self.x_ha.poll_event().is_some() {}
    }

    fn advance_to(&mut self, t: Duration) {
        if t > self.now.mono {
            self.now = self.now.advance(t - self.now.mono);
        }
    }

    /// Runs the world until `until` (absolute monotonic time).
    fn run_until(&mut self, until: Duration) {
        loop {
            self.flush();
            let next_packet = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self.mn.poll_timeout();
            let next = [next_packet, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.advance_to(t);
                    if next_packet == Some(t) {
                        let Reverse((_, _, to, from, bytes)) = self.queue.pop().unwrap();
                        match to {
                            To::Mn => self.mn.handle_datagram(self.now, from, &bytes),
                            To::IHa => self.i_ha.handle_datagram(self.now, from, I_HA, &bytes),
                            To::XHa => self.x_ha.handle_datagram(self.now, from, X_HA, &bytes),
                        }
                    } else {
                        self.mn.handle_timeout(self.now);
                    }
                }
                _ => break,
            }
        }
        self.advance_to(until);
        self.mn.handle_timeout(self.now);
        self.flush();
    }

    fn start(&mut self) -> Duration {
        let t0 = self.now.mono;
        self.mn.connection_changed(self.now, Some(self.coa));
        t0
    }

    fn location(&self) -> Location {
        self.mn.status(self.now).location
    }

    fn locations(&self) -> Vec<(Location, Reason)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                DetectEvent::Location { location, reason } => Some((*location, *reason)),
                DetectEvent::Gate(_) => None,
            })
            .collect()
    }
}

const FAST: Path = Path::Open {
    delay: Duration::from_millis(2),
    lose: 0,
};

fn slow(ms: u64) -> Path {
    Path::Open {
        delay: Duration::from_millis(ms),
        lose: 0,
    }
}

#[test]
fn inside_when_the_trusting_internal_home_agent_answers_first() {
    let mut w = World::new(
        IHa::Trusting,
        FAST,
        slow(20),
        INSIDE_COA,
        Duration::from_secs(2),
    );
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(1));
    assert_eq!(w.location(), Location::Inside);
    assert_eq!(
        w.locations(),
        [
            (Location::Detecting, Reason::ConnectionChanged),
            (Location::Inside, Reason::TrustedReply)
        ]
    );
    // The gate: closed at once, then open until T_MONITOR after the i-HA request.
    let gates: Vec<Gate> = w
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            DetectEvent::Gate(g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(gates, [Gate::InsideUntil(t0 + T_MONITOR)]);
    // §3.3: the x-HA registration is dropped (its reply came later: deregistered).
    assert!(w.x_ha.bindings().is_empty(), "still bound at the x-HA");
    assert!(w.i_ha.bindings().get(I_HOME).is_some());
}

#[test]
fn an_external_reply_first_is_tentative_and_the_internal_one_still_wins() {
    let mut w = World::new(
        IHa::Trusting,
        slow(300),
        FAST,
        INSIDE_COA,
        Duration::from_secs(2),
    );
    let t0 = w.start();
    w.run_until(t0 + Duration::from_millis(100));
    let s = w.mn.status(w.now);
    assert_eq!((s.location, s.tentative), (Location::Outside, true));
    assert_eq!(s.gate, Gate::Outside);
    w.run_until(t0 + Duration::from_secs(1));
    assert_eq!(w.location(), Location::Inside);
    assert_eq!(
        w.locations(),
        [
            (Location::Detecting, Reason::ConnectionChanged),
            (Location::Outside, Reason::ExternalReply),
            (Location::Inside, Reason::TrustedReply)
        ]
    );
    assert!(
        w.x_ha.bindings().is_empty(),
        "deregistered from the x-HA once inside"
    );
}

#[test]
fn outside_after_the_detection_period_and_the_internal_home_agent_is_left_alone() {
    let period = Duration::from_secs(3);
    let mut w = World::new(IHa::Trusting, Path::Blocked, FAST, OUTSIDE_COA, period);
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(30));
    assert_eq!(
        w.locations(),
        [
            (Location::Detecting, Reason::ConnectionChanged),
            (Location::Outside, Reason::ExternalReply),
            (Location::Outside, Reason::DetectionPeriodOver)
        ]
    );
    let last = *w.i_requests.last().unwrap();
    assert!(
        last <= t0 + period,
        "i-HA retransmissions went on after the detection period: {:?}",
        last - t0
    );
    assert!(
        w.i_requests.len() >= 2,
        "the i-HA was retried during the period"
    );
    assert_eq!(w.mn.status(w.now).gate, Gate::Outside);
}

/// RFC 5265 §3.1/§3.6.1: the firewall lets the MN reach the i-HA from outside, but the i-HA's
/// trusted list is right: it stays silent, and the MN never decides "inside".
#[test]
fn a_misconfigured_firewall_alone_does_not_make_the_node_inside() {
    let mut w = World::new(
        IHa::Trusting,
        FAST,
        FAST,
        OUTSIDE_COA,
        Duration::from_secs(2),
    );
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(30));
    assert_eq!(w.location(), Location::Outside);
    assert!(w.i_ha.stats().dropped_untrusted >= 2);
    assert!(w.locations().iter().all(|(l, _)| *l != Location::Inside));
}

/// §3.2.3: an i-HA that answers without Trusted Networks Configured proves nothing.
#[test]
fn an_internal_home_agent_without_trusted_networks_proves_nothing() {
    let mut w = World::new(
        IHa::Plain,
        FAST,
        slow(50),
        INSIDE_COA,
        Duration::from_secs(1),
    );
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(10));
    assert_eq!(w.location(), Location::Outside);
    assert!(w.locations().iter().all(|(l, _)| *l != Location::Inside));
}

/// The Trusted Networks Configured extension (RFC 5265 §3.4): Type 149, Length 2, Sub-Type 0.
const TNC: [u8; 4] = [149, 2, 0, 0];

/// An attacker on the path appends the extension after the Mobile-Home authenticator, which
/// covers nothing after it (RFC 5944 §3.5.1), so the reply still verifies.
fn append_tnc(mut reply: Vec<u8>) -> Vec<u8> {
    reply.extend_from_slice(&TNC);
    reply
}

/// The trusting i-HA's own extension moved from under the authenticator to after it.
fn move_tnc_behind_the_authenticator(mut reply: Vec<u8>) -> Vec<u8> {
    let at = ExtensionIter::new(&reply, ReplyRepr::LEN)
        .map_while(Result::ok)
        .find(|(_, e)| e.kind() == TNC[0])
        .map(|(at, _)| at)
        .expect("the trusting i-HA's reply carries TNC");
    reply.drain(at..at + TNC.len());
    append_tnc(reply)
}

/// §3.2.3 and §4.1: only an extension under the i-HA's authenticator proves inside. Appended
/// to a plain i-HA's reply, the reply is accepted and proves nothing; moved behind the
/// authenticator of a trusting i-HA's reply, the reply fails authentication and is dropped.
/// Either way the node decides outside once the x-HA answers, and the gate never opens for
/// plaintext.
#[test]
fn trusted_networks_configured_after_the_authenticator_proves_nothing() {
    let cases: [(IHa, Tamper); 2] = [
        (IHa::Plain, append_tnc),
        (IHa::Trusting, move_tnc_behind_the_authenticator),
    ];
    for (i_ha, tamper) in cases {
        let mut w = World::new(i_ha, FAST, slow(50), INSIDE_COA, Duration::from_secs(1));
        w.i_tamper = Some(tamper);
        let t0 = w.start();
        w.run_until(t0 + Duration::from_secs(10));
        assert_eq!(w.location(), Location::Outside, "{i_ha:?}");
        assert!(
            w.locations().iter().all(|(l, _)| *l != Location::Inside),
            "{i_ha:?}: {:?}",
            w.locations()
        );
        assert!(
            !w.events
                .iter()
                .any(|(_, e)| matches!(e, DetectEvent::Gate(Gate::InsideUntil(_)))),
            "{i_ha:?}: the gate opened"
        );
        // The tampered replies did reach the node's i-HA registration.
        let s = w.mn.internal().stats();
        match i_ha {
            IHa::Plain => assert!(s.accepted >= 1, "{s:?}"),
            IHa::Trusting => assert!(s.accepted == 0 && s.dropped_replies >= 1, "{s:?}"),
        }
    }
}

/// §3.2.4: inside, the i-HA is re-registered every T_MONITOR − N and the gate's deadline moves
/// with each success; it never lapses while the i-HA answers.
#[test]
fn monitoring_keeps_the_gate_open_while_the_internal_home_agent_answers() {
    let mut w = World::new(IHa::Trusting, FAST, FAST, INSIDE_COA, Duration::ZERO);
    let t0 = w.start();
    w.run_until(t0 + T_MONITOR * 5);
    assert_eq!(w.location(), Location::Inside);
    // One registration at the start, then every T_MONITOR − N = 7 s.
    assert_eq!(w.i_requests.len(), 1 + (5 * 10) / 7);
    let mut deadlines = w.events.iter().filter_map(|(at, e)| match e {
        DetectEvent::Gate(Gate::InsideUntil(d)) => Some((*at, *d)),
        _ => None,
    });
    let mut previous = None;
    for (at, deadline) in &mut deadlines {
        if let Some(p) = previous {
            assert!(at < p, "the gate lapsed before it was renewed");
        }
        previous = Some(deadline);
    }
    assert!(w.mn.status(w.now).since_internal_registration.unwrap() < T_MONITOR);
}

/// §3.2.4 and §3.3: upstream routing changes with no link event (the i-HA becomes unreachable):
/// the gate's deadline is never moved again, detection restarts when T_MONITOR runs out, and
/// this time the MN decides outside.
#[test]
fn a_silent_internal_home_agent_closes_the_gate_after_t_monitor() {
    let mut w = World::new(IHa::Trusting, FAST, FAST, INSIDE_COA, Duration::ZERO);
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(1));
    assert_eq!(w.location(), Location::Inside);
    let last_ok = t0;
    // The route to the intranet goes away; the node now sits outside, with no link event.
    w.i_path = Path::Blocked;
    w.run_until(t0 + Duration::from_secs(40));
    let restart = w
        .events
        .iter()
        .find(|(_, e)| {
            *e == DetectEvent::Location {
                location: Location::Detecting,
                reason: Reason::MonitoringFailed,
            }
        })
        .map(|(at, _)| *at)
        .expect("detection restarted");
    assert_eq!(restart, last_ok + T_MONITOR);
    // No gate deadline beyond T_MONITOR after the last i-HA registration that succeeded.
    for (_, e) in &w.events {
        if let DetectEvent::Gate(Gate::InsideUntil(d)) = e {
            assert!(*d <= last_ok + T_MONITOR);
        }
    }
    assert_eq!(w.location(), Location::Outside);
}

#[test]
fn equal_home_agent_addresses_mean_outside_without_detection() {
    let mut w = World::new(
        IHa::Trusting,
        FAST,
        FAST,
        INSIDE_COA,
        Duration::from_secs(2),
    );
    w.mn = Detector::new(DetectConfig {
        internal: mn_config(I_HOME, X_HA, 0x1000),
        external: Some(mn_config(X_HOME, X_HA, 0x2000)),
        detection_period: Duration::from_secs(2),
        t_monitor: T_MONITOR,
        grace: GRACE,
    });
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(5));
    assert_eq!(w.locations(), [(Location::Outside, Reason::SameHomeAgents)]);
    assert!(w.i_requests.is_empty(), "§3.5: no detection");
}

#[test]
fn a_connection_change_closes_the_gate_at_once_and_detects_again() {
    let mut w = World::new(IHa::Trusting, FAST, FAST, INSIDE_COA, Duration::ZERO);
    let t0 = w.start();
    w.run_until(t0 + Duration::from_secs(1));
    assert_eq!(w.location(), Location::Inside);
    w.events.clear();
    w.coa = OUTSIDE_COA;
    w.mn.connection_changed(w.now, Some(OUTSIDE_COA));
    // Synchronously, before any datagram moves.
    assert_eq!(w.mn.poll_event(), Some(DetectEvent::Gate(Gate::Closed)));
    w.run_until(t0 + Duration::from_secs(10));
    assert_eq!(w.location(), Location::Outside);
    w.mn.connection_changed(w.now, None);
    assert_eq!(w.mn.status(w.now).location, Location::Down);
}

/// Every combination of i-HA behaviour, x-HA behaviour, early losses and detection period:
/// the safety properties hold in all of them, and the outcome is the one the RFC asks for
/// when it is determined.
#[test]
fn every_ordering_of_replies_and_losses_is_safe() {
    let i_paths = [
        Path::Blocked,
        FAST,
        slow(1500),
        Path::Open {
            delay: Duration::from_millis(2),
            lose: 1,
        },
        Path::Open {
            delay: Duration::from_millis(2),
            lose: 3,
        },
    ];
    let x_paths = [
        Path::Blocked,
        FAST,
        slow(800),
        Path::Open {
            delay: Duration::from_millis(2),
            lose: 2,
        },
    ];
    let mut runs = 0;
    for i_ha in [IHa::Trusting, IHa::Plain] {
        for coa in [INSIDE_COA, OUTSIDE_COA] {
            for &i_path in &i_paths {
                for &x_path in &x_paths {
                    for period in [0, 2, 20].map(Duration::from_secs) {
                        let mut w = World::new(i_ha, i_path, x_path, coa, period);
                        let t0 = w.start();
                        w.run_until(t0 + Duration::from_secs(60));
                        runs += 1;
                        let case = format!("{i_ha:?} {coa} i={i_path:?} x={x_path:?} {period:?}");
                        let may_be_inside =
                            i_ha == IHa::Trusting && coa == INSIDE_COA && i_path != Path::Blocked;
                        let mut location = Location::Down;
                        for (at, e) in &w.events {
                            match e {
                                DetectEvent::Location { location: l, .. } => location = *l,
                                DetectEvent::Gate(Gate::InsideUntil(d)) => {
                                    assert_eq!(
                                        location,
                                        Location::Inside,
                                        "{case}: open gate while {location:?}"
                                    );
                                    // T_MONITOR after an i-HA request sent at or before now.
                                    assert!(
                                        w.i_requests
                                            .iter()
                                            .any(|r| *r + T_MONITOR == *d && r <= at),
                                        "{case}: deadline {d:?} not T_MONITOR after a request"
                                    );
                                }
                                DetectEvent::Gate(_) => {}
                            }
                            if location == Location::Inside {
                                assert!(
                                    may_be_inside,
                                    "{case}: inside without a trusted i-HA path"
                                );
                            }
                        }
                        // Determined outcomes.
                        if may_be_inside
                            && (x_path == Path::Blocked || period >= Duration::from_secs(20))
                        {
                            assert_eq!(w.location(), Location::Inside, "{case}");
                        }
                        if !may_be_inside && x_path != Path::Blocked {
                            assert_eq!(w.location(), Location::Outside, "{case}");
                        }
                        if !may_be_inside && x_path == Path::Blocked {
                            assert_eq!(w.location(), Location::Detecting, "{case}");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(runs, 2 * 2 * 5 * 4 * 3);
}

/// At home on the i-HA's own link the node "registers" its home address, which is a
/// deregistration (RFC 5944 §3.6.1.2); the i-HA's trusted reply proves inside all the same, and
/// monitoring keeps asking every T_MONITOR − N, so the gate never lapses.
#[test]
fn at_home_on_the_internal_home_link_is_inside_and_monitored() {
    let mut w = World::new(IHa::Trusting, FAST, FAST, I_HOME, Duration::ZERO);
    // The i-HA's home network must be trusted for this (it is part of the intranet).
    w.i_ha = home_agent(
        I_HA,
        I_HOME,
        0x1000,
        Some(vec![Subnet {
            addr: Ipv4Addr::new(10, 10, 0, 0),
            len: 24,
        }]),
    );
    let t0 = w.start();
    w.run_until(t0 + T_MONITOR * 4);
    assert_eq!(w.location(), Location::Inside);
    assert!(w.i_ha.bindings().is_empty(), "at home there is no binding");
    assert!(
        !w.locations()
            .contains(&(Location::Detecting, Reason::MonitoringFailed)),
        "monitoring lapsed at home: {:?}",
        w.locations()
    );
    assert!(w.i_requests.len() >= 5, "{} requests", w.i_requests.len());
}

/// Mode mc, draft §3.4: the MOBIKE answer and the plain i-HA registration race; the VPN's
/// answer first means outside, tentatively, and the i-HA's trusted reply still wins.
#[test]
fn mc_a_vpn_answer_first_is_tentative_and_the_internal_reply_still_wins() {
    let mut w = World::new_mc(slow(300), INSIDE_COA, Duration::from_secs(2));
    let t0 = w.start();
    w.run_until(t0 + Duration::from_millis(50));
    w.mn.vpn_reachable(w.now, INSIDE_COA);
    w.run_until(t0 + Duration::from_millis(100));
    let s = w.mn.status(w.now);
    assert_eq!((s.location, s.tentative), (Location::Outside, true));
    assert_eq!(s.gate, Gate::Outside);
    w.run_until(t0 + Duration::from_secs(1));
    assert_eq!(
        w.locations(),
        [
            (Location::Detecting, Reason::ConnectionChanged),
            (Location::Outside, Reason::VpnReply),
            (Location::Inside, Reason::TrustedReply)
        ]
    );
    assert_eq!(w.lost_x, 0);
    assert!(w.x_ha.bindings().is_empty(), "mode mc sent to an x-HA");
}

/// Mode mc outside: the VPN answers, the i-HA never does; outside is final after the period
/// and the i-HA is left alone.
#[test]
fn mc_outside_after_the_detection_period() {
    let period = Duration::from_secs(2);
    let mut w = World::new_mc(Path::Blocked, OUTSIDE_COA, period);
    let t0 = w.start();
    w.run_until(t0 + Duration::from_millis(30));
    w.mn.vpn_reachable(w.now, OUTSIDE_COA);
    w.run_until(t0 + Duration::from_secs(20));
    assert_eq!(
        w.locations(),
        [
            (Location::Detecting, Reason::ConnectionChanged),
            (Location::Outside, Reason::VpnReply),
            (Location::Outside, Reason::DetectionPeriodOver)
        ]
    );
    assert!(*w.i_requests.last().unwrap() <= t0 + period + Duration::from_millis(30));
    assert_eq!(w.mn.status(w.now).gate, Gate::Outside);
}

/// Mode mc: a VPN answer through another address (another interface, or the old one) says
/// nothing about this interface, and without any answer the gate stays closed.
#[test]
fn mc_without_an_answer_from_this_address_the_gate_stays_closed() {
    let mut w = World::new_mc(Path::Blocked, OUTSIDE_COA, Duration::from_secs(2));
    let t0 = w.start();
    w.run_until(t0 + Duration::from_millis(30));
    w.mn.vpn_reachable(w.now, INSIDE_COA);
    w.run_until(t0 + Duration::from_secs(20));
    let s = w.mn.status(w.now);
    assert_eq!(s.location, Location::Detecting);
    assert_eq!(s.gate, Gate::Closed);
    assert!(
        w.events
            .iter()
            .all(|(_, e)| !matches!(e, DetectEvent::Gate(Gate::Outside | Gate::InsideUntil(_)))),
        "{:?}",
        w.events
    );
}
