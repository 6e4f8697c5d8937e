//! The RFC 5265 mobile node's policy ([`mipx_control::proto::rfc5265::Node`]) walked through
//! the lab's moves in memory: a real internal home agent (trusting the intranet and the VPN
//! pool), a real external home agent in the DMZ, a VPN gateway that behaves as charon reports
//! (IKE takes a while; MOBIKE moves the SA in mode mc; in mode cvc IKE runs inside the x-HA's
//! tunnel), a network that loses and reorders datagrams, and a virtual clock. No sockets, no
//! sleeping.
//!
//! Each walk goes internal 1 → internal 2 → external 1 → external 2 → internal 1, as the lab
//! does, and checks after every step:
//! - no plaintext outside (§3.2.4): on an external network the interface's gate is never open
//!   ("inside" with time left), and the node never wants a tunnel outside the VPN to the i-HA;
//! - sessions survive (§2): once settled after a move, the i-HA binds the home address to
//!   where the node is (its care-of address inside, mode c; its TIA outside, through the VPN),
//!   and the node tunnels there; in mode cvc the x-HA binds the external home address to the
//!   care-of address and the node tunnels the VPN to it; in mode mc the SA follows the node.

#[expect(
    dead_code,
    reason = "real engines at both ends, no message built by hand: `Msg` and its helpers go unused"
)]
mod util;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::MIP_PORT;
use mipx_control::proto::Now;
use mipx_control::proto::detect::{DetectConfig, Gate, Location};
use mipx_control::proto::ha::{HaConfig, HomeAgent, Subnet};
use mipx_control::proto::mn::MnConfig;
use mipx_control::proto::rfc5265::{
    Attachment, HomeRoute, IfaceConfig, InsideVpn, Node, NodeConfig, NodeEvent, OutsideMode, Path,
    VpnCommand, VpnSnapshot,
};
use util::{START, ha_config, sa};

const I_HA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const X_HA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const I_HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 50);
const X_HOME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
/// The tunnel inner address, from the VPN gateway's pool (trusted by the i-HA).
const TIA: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 5);
const MN_PORT: u16 = 40_434;
const T_MONITOR: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(3);
/// How long IKE (or a MOBIKE update) takes to complete, as charon reports it.
const IKE_TIME: Duration = Duration::from_millis(300);
/// From a move to a settled node: detection, IKE and registrations, with retransmissions
/// under loss (RFC 5944 §3.6.3 backs off to 4 s here).
const SETTLE: Duration = Duration::from_secs(30);

/// The lab's networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Internal1,
    Internal2,
    External1,
    External2,
}

impl Net {
    fn care_of_addr(self) -> Ipv4Addr {
        match self {
            Net::Internal1 => Ipv4Addr::new(10, 20, 1, 7),
            Net::Internal2 => Ipv4Addr::new(10, 20, 2, 7),
            Net::External1 => Ipv4Addr::new(198, 51, 100, 7),
            Net::External2 => Ipv4Addr::new(203, 0, 113, 7),
        }
    }

    fn gateway(self) -> Ipv4Addr {
        let c = self.care_of_addr().octets();
        Ipv4Addr::new(c[0], c[1], c[2], 1)
    }

    fn inside(self) -> bool {
        matches!(self, Net::Internal1 | Net::Internal2)
    }
}

/// The lab's walk.
const WALK: [Net; 5] = [
    Net::Internal1,
    Net::Internal2,
    Net::External1,
    Net::External2,
    Net::Internal1,
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    /// The node, on the socket of this path.
    Node(PathKey),
    IHa,
    XHa,
}

/// [`Path`] with an order, for the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathKey {
    Iface,
    Vpn,
}

/// A datagram in flight: (delivery time, sequence, destination, source, bytes), earliest first.
type InFlight = Reverse<(Duration, u64, To, SocketAddrV4, Vec<u8>)>;

/// How the network treats datagrams.
#[derive(Clone, Copy, Debug)]
struct Weather {
    /// Per mille of datagrams lost.
    loss: u32,
    /// Extra delay drawn per datagram, up to this: datagrams overtake each other.
    jitter: Duration,
}

const CALM: Weather = Weather {
    loss: 0,
    jitter: Duration::ZERO,
};

struct World {
    now: Now,
    node: Node,
    mode: OutsideMode,
    i_ha: HomeAgent,
    x_ha: HomeAgent,
    net: Net,
    weather: Weather,
    rng: u64,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    /// What the node last asked of the VPN, and the SA as charon would report it next.
    vpn_command: VpnCommand,
    vpn: VpnSnapshot,
    vpn_next: Option<(Duration, VpnSnapshot)>,
    /// The interface's gate as the node last wrote it.
    gate: Gate,
    /// Broken properties, as they were seen.
    violations: Vec<String>,
    /// Every command the node gave the VPN.
    commands: Vec<VpnCommand>,
}

fn mn_config(home_addr: Ipv4Addr, home_agent: Ipv4Addr, spi: u32) -> MnConfig {
    MnConfig {
        max_retransmit: Duration::from_secs(4),
        ..util::mn_config(home_addr, home_agent, sa(spi, &key(spi)))
    }
}

fn key(spi: u32) -> Vec<u8> {
    format!("key {spi}").into_bytes()
}

fn subnet(addr: [u8; 4], len: u8) -> Subnet {
    Subnet {
        addr: Ipv4Addr::from(addr),
        len,
    }
}

impl World {
    fn new(mode: OutsideMode, weather: Weather, seed: u64) -> Self {
        let external = (mode == OutsideMode::Cvc).then(|| mn_config(X_HOME, X_HA, 0x2000));
        let node = Node::new(NodeConfig {
            detect: DetectConfig {
                internal: mn_config(I_HOME, I_HA, 0x1000),
                external,
                detection_period: Duration::from_secs(2),
                t_monitor: T_MONITOR,
                grace: GRACE,
            },
            mode,
            vpn: Some((GATEWAY, InsideVpn::Teardown)),
            ha_port: MIP_PORT,
            interfaces: vec![IfaceConfig {
                name: "wlan0".into(),
                registration_port: MN_PORT,
                agent_discovery: false,
            }],
        });
        World {
            now: START,
            node,
            mode,
            // RFC 5265 §4.3: the i-HA answers the intranet and the VPN pool only.
            i_ha: HomeAgent::new(HaConfig {
                trusted_networks: Some(vec![
                    subnet([10, 20, 0, 0], 16),
                    subnet([10, 40, 0, 0], 15),
                ]),
                ..ha_config(I_HA, I_HOME, sa(0x1000, &key(0x1000)))
            }),
            x_ha: HomeAgent::new(ha_config(X_HA, X_HOME, sa(0x2000, &key(0x2000)))),
            net: Net::Internal1,
            weather,
            rng: seed | 1,
            queue: BinaryHeap::new(),
            seq: 0,
            vpn_command: VpnCommand::Down,
            vpn: VpnSnapshot::default(),
            vpn_next: None,
            gate: Gate::Closed,
            violations: Vec::new(),
            commands: Vec::new(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: reproducible per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn send(&mut self, to: To, from: SocketAddrV4, bytes: Vec<u8>) {
        if self.random() % 1000 < u64::from(self.weather.loss) {
            return;
        }
        let jitter = if self.weather.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.random() % self.weather.jitter.as_micros() as u64)
        };
        self.seq += 1;
        let at = self.now.mono + Duration::from_millis(10) + jitter;
        self.queue.push(Reverse((at, self.seq, to, from, bytes)));
    }

    /// The node attaches to `net` (the kernel's address and route events).
    fn move_to(&mut self, net: Net) {
        self.net = net;
        let seen = Attachment {
            care_of_addr: net.care_of_addr(),
            gateway: Some(net.gateway()),
        };
        assert!(self.node.set_attachment(self.now, 0, Some(seen)));
        // MOBIKE (mode mc): charon moves an established SA to the new address when it can
        // reach the gateway from there, i.e. outside; inside the firewall blocks IKE.
        if self.mode == OutsideMode::Mc && self.vpn.established && !net.inside() {
            let moved = VpnSnapshot {
                local: Some(net.care_of_addr()),
                ..self.vpn.clone()
            };
            self.vpn_next = Some((self.now.mono + IKE_TIME, moved));
        }
        self.pump();
    }

    /// What a shell does after every input: apply events, send, step, apply, send.
    fn pump(&mut self) {
        self.drain();
        self.node.step(self.now);
        self.drain();
        self.check();
    }

    fn drain(&mut self) {
        self.node.update_attachments(self.now);
        while let Some(e) = self.node.poll_event() {
            match e {
                NodeEvent::Gate { gate, .. } => self.gate = gate,
                NodeEvent::Vpn(command) => {
                    self.commands.push(command);
                    self.vpn_command = command;
                    self.charon();
                }
                NodeEvent::Location { .. } | NodeEvent::TiaSocket(_) | NodeEvent::Reattached => {}
            }
        }
        while let Some(t) = self.node.poll_transmit() {
            let dst = *t.transmit.dst.ip();
            match t.path {
                Path::Iface(_) => {
                    let from = SocketAddrV4::new(self.net.care_of_addr(), MN_PORT);
                    // The firewall: the i-HA only from inside; the x-HA drops what reaches it
                    // from the intranet (§3.7).
                    if dst == I_HA && self.net.inside() {
                        self.send(To::IHa, from, t.transmit.payload);
                    } else if dst == X_HA && !self.net.inside() {
                        self.send(To::XHa, from, t.transmit.payload);
                    }
                }
                Path::Vpn => {
                    if dst == I_HA && self.vpn_carries() {
                        self.send(To::IHa, SocketAddrV4::new(TIA, MN_PORT), t.transmit.payload);
                    }
                }
            }
        }
        self.drain_home_agents();
    }

    fn drain_home_agents(&mut self) {
        while let Some(t) = self.i_ha.poll_transmit() {
            let to = if *t.dst.ip() == TIA {
                To::Node(PathKey::Vpn)
            } else {
                To::Node(PathKey::Iface)
            };
            self.send(to, SocketAddrV4::new(I_HA, MIP_PORT), t.payload);
        }
        while let Some(t) = self.x_ha.poll_transmit() {
            self.send(
                To::Node(PathKey::Iface),
                SocketAddrV4::new(X_HA, MIP_PORT),
                t.payload,
            );
        }
    }

    /// The VPN passes traffic: established, and outside (in mode cvc inside the x-HA's
    /// tunnel, which needs the x-HA's binding of the care-of address).
    fn vpn_carries(&self) -> bool {
        self.vpn.established && !self.net.inside() && self.outer_path()
    }

    /// Mode cvc: the x-HA binds the external home address to where the node is.
    fn outer_path(&self) -> bool {
        self.mode != OutsideMode::Cvc
            || self
                .x_ha
                .bindings()
                .get(X_HOME)
                .is_some_and(|b| b.care_of_addr == self.net.care_of_addr())
    }

    /// Charon's answer to a command: IKE completes after a while if the gateway is reachable.
    fn charon(&mut self) {
        match self.vpn_command {
            VpnCommand::Up if !self.vpn.established && !self.net.inside() => {
                let local = match self.mode {
                    OutsideMode::Mc => self.net.care_of_addr(),
                    OutsideMode::Cvc => X_HOME,
                };
                let up = VpnSnapshot {
                    established: true,
                    local: Some(local),
                    gateway: Some(GATEWAY),
                    tia: Some(TIA),
                    spis: vec![[0xc1, 0, 0, 1], [0xc2, 0, 0, 1]],
                };
                // In mode cvc IKE goes through the x-HA's tunnel: only once it exists.
                if self.outer_path() {
                    self.vpn_next = Some((self.now.mono + IKE_TIME, up));
                }
            }
            VpnCommand::Down if self.vpn.established || self.vpn_next.is_some() => {
                self.vpn_next = Some((
                    self.now.mono + Duration::from_millis(50),
                    VpnSnapshot::default(),
                ));
            }
            _ => {}
        }
    }

    fn check(&mut self) {
        let now = self.now;
        if !self.net.inside() {
            if let Gate::InsideUntil(d) = self.gate
                && d > now.mono
            {
                self.violations.push(format!(
                    "{:?} at {:?}: gate open until {d:?} on {:?}",
                    self.mode, now.mono, self.net
                ));
            }
            let wants = self.node.wants(now);
            if wants.tunnel.is_some_and(|t| !t.via_vpn) {
                self.violations.push(format!(
                    "{:?} at {:?}: a plain i-HA tunnel wanted on {:?}",
                    self.mode, now.mono, self.net
                ));
            }
        }
    }

    /// Runs the clock forward by `d`, delivering, timing out and reporting as due.
    fn run(&mut self, d: Duration) {
        let until = self.now.mono + d;
        loop {
            let next = [
                self.node.poll_timeout(),
                self.i_ha.poll_timeout(),
                self.x_ha.poll_timeout(),
                self.queue.peek().map(|Reverse((at, ..))| *at),
                self.vpn_next.as_ref().map(|(at, _)| *at),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until)
            .max(self.now.mono);
            if next > until {
                break;
            }
            self.now = self.now.advance(next - self.now.mono);
            if let Some((at, _)) = &self.vpn_next
                && *at <= self.now.mono
            {
                let (_, snapshot) = self.vpn_next.take().unwrap();
                self.vpn = snapshot.clone();
                self.node.vpn_state(self.now, snapshot);
                // Charon retries an IKE_SA the node still wants.
                self.charon();
            }
            while self
                .queue
                .peek()
                .is_some_and(|Reverse((at, ..))| *at <= self.now.mono)
            {
                let Reverse((_, _, to, from, bytes)) = self.queue.pop().unwrap();
                match to {
                    To::IHa => self.i_ha.handle_datagram(self.now, from, I_HA, &bytes),
                    To::XHa => self.x_ha.handle_datagram(self.now, from, X_HA, &bytes),
                    To::Node(PathKey::Iface) => {
                        self.node
                            .handle_datagram(self.now, Path::Iface(0), from, &bytes)
                    }
                    // The reply reaches the TIA's socket only through the VPN.
                    To::Node(PathKey::Vpn) => {
                        if self.vpn_carries() {
                            self.node.handle_datagram(self.now, Path::Vpn, from, &bytes)
                        }
                    }
                }
            }
            self.node.handle_timeout(self.now);
            self.i_ha.handle_timeout(self.now);
            self.x_ha.handle_timeout(self.now);
            // Charon retries an IKE_SA the node still wants (the x-HA tunnel may have come).
            if self.vpn_next.is_none() {
                self.charon();
            }
            self.pump();
            if self.now.mono >= until {
                break;
            }
        }
        self.now = self.now.advance(until.saturating_sub(self.now.mono));
    }

    /// Where the node is, as the i-HA and the node itself see it once settled.
    fn assert_settled(&self) {
        let now = self.now;
        let coa = self.net.care_of_addr();
        let status = self.node.status(now, 0);
        let wants = self.node.wants(now);
        let binding = self.i_ha.bindings().get(I_HOME).map(|b| b.care_of_addr);
        let what = format!("{:?} on {:?}: {status:?}, {wants:?}", self.mode, self.net);
        if self.net.inside() {
            // Mode c (§2.1): registered directly with the i-HA, tunnelled to it, gate open.
            assert_eq!(status.location, Location::Inside, "{what}");
            assert_eq!(binding, Some(coa), "{what}");
            let t = wants.tunnel.expect(&what);
            assert_eq!((t.care_of_addr, t.via_vpn), (coa, false), "{what}");
            assert!(
                matches!(self.gate, Gate::InsideUntil(d) if d > now.mono),
                "{what}"
            );
            assert_eq!(wants.internal_route, None, "{what}");
            assert_eq!(self.node.access_mode(now, 0, false), "c");
        } else {
            // Modes cvc and mc (§2.3): the TIA bound at the i-HA, tunnelled through the VPN.
            assert_eq!(status.location, Location::Outside, "{what}");
            assert_eq!(binding, Some(TIA), "{what}");
            let t = wants.tunnel.expect(&what);
            assert_eq!(
                (t.care_of_addr, t.via_vpn, t.reverse),
                (TIA, true, true),
                "{what}"
            );
            assert_eq!(wants.internal_route, Some(HomeRoute::Vpn), "{what}");
            assert_eq!(self.gate, Gate::Outside, "{what}");
            match self.mode {
                OutsideMode::Cvc => {
                    let x = self.x_ha.bindings().get(X_HOME).map(|b| b.care_of_addr);
                    assert_eq!(x, Some(coa), "{what}");
                    let outer = wants.outer_tunnel.expect(&what);
                    assert_eq!(
                        (outer.care_of_addr, outer.home_agent),
                        (coa, X_HA),
                        "{what}"
                    );
                    assert_eq!(self.node.access_mode(now, 0, true), "cvc");
                }
                OutsideMode::Mc => {
                    assert_eq!(self.vpn.local, Some(coa), "{what}: MOBIKE follows the node");
                    assert_eq!(wants.outer_tunnel, None, "{what}");
                    assert_eq!(self.node.access_mode(now, 0, true), "mc");
                }
            }
        }
    }
}

/// Walks the lab's moves, checking at each stop that the node settled; returns the world with
/// the violations seen on the way. In bad weather a stop may find the node between two
/// attempts (a lost monitoring registration closes the gate and detection starts again, as
/// §3.2.4 wants), so the check comes after the weather has cleared for a while: the node
/// recovers wherever the losses left it.
fn walk(mode: OutsideMode, weather: Weather, seed: u64) -> World {
    let mut w = World::new(mode, weather, seed);
    for net in WALK {
        w.move_to(net);
        w.run(SETTLE);
        w.weather = CALM;
        w.run(SETTLE);
        w.assert_settled();
        w.weather = weather;
    }
    w
}

#[test]
fn mode_cvc_walks_the_lab_with_no_plaintext_outside() {
    let w = walk(OutsideMode::Cvc, CALM, 1);
    assert_eq!(w.violations, Vec::<String>::new());
    // Up outside once the x-HA's tunnel exists, down once back inside (draft §3.4.1 step 2,
    // `inside = "teardown"`).
    assert_eq!(w.commands, vec![VpnCommand::Up, VpnCommand::Down]);
}

#[test]
fn mode_mc_walks_the_lab_and_mobike_follows() {
    let w = walk(OutsideMode::Mc, CALM, 1);
    assert_eq!(w.violations, Vec::<String>::new());
    assert_eq!(
        w.commands.last(),
        Some(&VpnCommand::Down),
        "torn down back inside: {:?}",
        w.commands
    );
    assert!(w.commands.contains(&VpnCommand::Up));
}

#[test]
fn every_mode_under_loss_and_reordering_is_safe_and_settles() {
    for mode in [OutsideMode::Cvc, OutsideMode::Mc] {
        for weather in [
            Weather {
                loss: 100,
                jitter: Duration::ZERO,
            },
            Weather {
                loss: 0,
                jitter: Duration::from_millis(400),
            },
            Weather {
                loss: 250,
                jitter: Duration::from_millis(200),
            },
        ] {
            for seed in 1..=8 {
                let w = walk(mode, weather, seed * 7919);
                assert_eq!(
                    w.violations,
                    Vec::<String>::new(),
                    "{mode:?} {weather:?} seed {seed}"
                );
            }
        }
    }
}

#[test]
fn a_move_outside_closes_the_gate_before_anything_else() {
    let mut w = World::new(OutsideMode::Mc, CALM, 3);
    w.move_to(Net::Internal1);
    w.run(SETTLE);
    w.assert_settled();
    // The move: the very next event is the gate closing (§3.2.2), and nothing tunnels plainly.
    w.net = Net::External1;
    w.node.set_attachment(
        w.now,
        0,
        Some(Attachment {
            care_of_addr: Net::External1.care_of_addr(),
            gateway: Some(Net::External1.gateway()),
        }),
    );
    assert_eq!(
        w.node.poll_event(),
        Some(NodeEvent::Gate {
            iface: 0,
            gate: Gate::Closed
        })
    );
    assert_eq!(w.node.wants(w.now).tunnel, None);
}

#[test]
fn the_vpn_is_kept_inside_when_configured_so() {
    let mut w = World::new(OutsideMode::Mc, CALM, 5);
    w.node = Node::new(NodeConfig {
        detect: DetectConfig {
            internal: mn_config(I_HOME, I_HA, 0x1000),
            external: None,
            detection_period: Duration::from_secs(2),
            t_monitor: T_MONITOR,
            grace: GRACE,
        },
        mode: OutsideMode::Mc,
        vpn: Some((GATEWAY, InsideVpn::Keep)),
        ha_port: MIP_PORT,
        interfaces: vec![IfaceConfig {
            name: "wlan0".into(),
            registration_port: MN_PORT,
            agent_discovery: false,
        }],
    });
    for net in [Net::External1, Net::Internal1] {
        w.move_to(net);
        w.run(SETTLE);
        w.assert_settled();
    }
    assert_eq!(w.violations, Vec::<String>::new());
    assert_eq!(w.commands, vec![VpnCommand::Up], "never torn down");
}

#[test]
fn a_lost_link_changes_nothing_about_the_vpn() {
    // A link flapping during a move: with no usable interface, the SA survives for MOBIKE.
    let mut w = walk(OutsideMode::Mc, CALM, 9);
    w.move_to(Net::External1);
    w.run(SETTLE);
    let before = w.commands.len();
    assert!(w.node.set_attachment(w.now, 0, None));
    w.pump();
    w.run(Duration::from_secs(5));
    assert_eq!(w.commands.len(), before, "{:?}", w.commands);
    assert_eq!(w.gate, Gate::Closed);
}
