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
//!
//! The lab's third walk adds foreign agents that require registration (R, RFC 5944 §2.4.1) on
//! internal 2, external 1 and external 2, real [`ForeignAgent`]s between the node and the home
//! agents: there the node (mode cvc, agent discovery on) settles into mode f inside (§2.2: the
//! i-HA binds the agent's care-of address, the agent decapsulates and reverse-tunnels, RFC 3024)
//! and mode fvc outside (§2.4: the x-HA binds the agent's care-of address, the VPN runs through
//! the agent). Besides the properties above, checked after every step:
//! - through an agent the node never wants a plain i-HA tunnel nor an x-HA tunnel of its own
//!   (the agent is the tunnels' end, RFC 5944 §4.2.2);
//! - the VPN comes up outside only once the x-HA binds the external home address to where the
//!   node is attached (the agent's care-of address in mode fvc, §2.4; its own in cvc, §2.3):
//!   IKE runs inside the x-HA's tunnel.

#[expect(
    dead_code,
    reason = "real engines at both ends, no message built by hand: `Msg` and its helpers go unused"
)]
mod util;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mipx_common::wire::{MIP_PORT, RequestPacket, RequestRepr};
use mipx_control::proto::Now;
use mipx_control::proto::detect::{DetectConfig, Gate, Location};
use mipx_control::proto::fa::{
    FaConfig, FaInterface, FaTransmit, ForeignAgent, FromMobile, LinkTarget,
};
use mipx_control::proto::ha::{HaConfig, HomeAgent, Subnet};
use mipx_control::proto::mn::{MnConfig, ViaAgent};
use mipx_control::proto::rfc5265::{
    Attachment, HomeRoute, IfaceConfig, InsideVpn, Node, NodeConfig, NodeEvent, Offer, OutsideMode,
    Path, VpnCommand, VpnSnapshot,
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
/// From a move onto a network with a foreign agent to the node hearing its advertisement (an
/// answer to the solicitation the shell sends on a new link, RFC 5944 §2.2): before any reply
/// to a registration can come back, so the node settles straight into mode f or fvc.
const ADVERT_DELAY: Duration = Duration::from_millis(5);
/// The foreign agents' interface index on their link and their link-layer address, and the
/// node's: where an agent's replies go, without ARP (RFC 5944 §3.7.3.2, §4.2.2).
const FA_IFACE: u32 = 2;
const FA_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfa, 0x01];
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];

/// The lab's networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

    /// The third walk's foreign agent here, as its advertisement describes it: its address on
    /// the link, the care-of address it offers (another of its addresses), R set.
    fn offer(self) -> Option<Offer> {
        let c = self.care_of_addr().octets();
        (self != Net::Internal1).then(|| Offer {
            via: ViaAgent {
                addr: Ipv4Addr::new(c[0], c[1], c[2], 2),
                mac: FA_MAC,
            },
            care_of_addr: Ipv4Addr::new(c[0], c[1], c[2], 254),
            required: true,
        })
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
    /// The node's interface socket, from the foreign agent on this network's link: only while
    /// the node is still there.
    NodeOn(Net),
    IHa,
    XHa,
    /// This network's foreign agent, from the node on its link.
    FaLink(Net),
    /// This network's foreign agent, at its care-of address, from a home agent.
    Fa(Net),
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
    /// Modes f and fvc: the foreign agents and the networks they serve (none in the other
    /// walks), and the advertisement the node hears next, when.
    fas: Vec<(Net, ForeignAgent)>,
    advert: Option<(Duration, Offer)>,
    /// Nothing reaches the i-HA before this time (it restarts).
    i_ha_silent_until: Duration,
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

/// The node of the lab: the x-HA registration in mode cvc (and fvc), the VPN torn down inside,
/// one interface.
fn node_config(mode: OutsideMode, agent_discovery: bool) -> NodeConfig {
    let external = (mode == OutsideMode::Cvc).then(|| mn_config(X_HOME, X_HA, 0x2000));
    NodeConfig {
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
            agent_discovery,
        }],
    }
}

/// A foreign agent serving `net`'s link with the care-of address it offers: reverse tunnelling
/// offered (RFC 3024), no security association with anyone (none is needed: the home agents
/// accept relays without FA-HA authentication, RFC 5944 §3.8.1 leaves it to configuration).
fn foreign_agent(net: Net) -> ForeignAgent {
    let offer = net.offer().expect("an agent's network");
    ForeignAgent::new(FaConfig {
        interfaces: vec![FaInterface {
            index: FA_IFACE,
            address: offer.via.addr,
            care_of_addrs: vec![offer.care_of_addr],
        }],
        ..FaConfig::default()
    })
}

impl World {
    fn new(mode: OutsideMode, weather: Weather, seed: u64) -> Self {
        World {
            now: START,
            node: Node::new(node_config(mode, false)),
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
            fas: Vec::new(),
            advert: None,
            i_ha_silent_until: Duration::ZERO,
        }
    }

    /// The lab's third walk: mode cvc with agent discovery, and a foreign agent on every
    /// network but internal 1 (modes f and fvc, RFC 5265 §2.2, §2.4).
    fn with_agents(weather: Weather, seed: u64) -> Self {
        World {
            node: Node::new(node_config(OutsideMode::Cvc, true)),
            fas: [Net::Internal2, Net::External1, Net::External2]
                .into_iter()
                .map(|net| (net, foreign_agent(net)))
                .collect(),
            ..World::new(OutsideMode::Cvc, weather, seed)
        }
    }

    /// The foreign agent on `net`, if this walk has one there.
    fn fa(&self, net: Net) -> Option<&ForeignAgent> {
        self.fas.iter().find(|(n, _)| *n == net).map(|(_, fa)| fa)
    }

    fn fa_mut(&mut self, net: Net) -> Option<&mut ForeignAgent> {
        self.fas
            .iter_mut()
            .find(|(n, _)| *n == net)
            .map(|(_, fa)| fa)
    }

    /// The foreign agent's advertisement where the node is, if there is an agent.
    fn agent_here(&self) -> Option<Offer> {
        self.fa(self.net).and(self.net.offer())
    }

    /// For the violations: the walk.
    fn name(&self) -> String {
        match self.mode {
            OutsideMode::Cvc if !self.fas.is_empty() => "f/fvc".into(),
            mode => format!("{mode:?}"),
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
        if to == To::IHa && self.now.mono < self.i_ha_silent_until {
            return;
        }
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
        // The agent heard on the old link says nothing any more (`set_attachment` forgot it);
        // this link's, if any, is heard shortly.
        self.advert = self
            .agent_here()
            .map(|offer| (self.now.mono + ADVERT_DELAY, offer));
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
                    self.check_vpn_up(command);
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
                Path::Iface(_) if t.via.is_some() => {
                    // To the foreign agent on the link (RFC 5944 §3.6.1.1): from the home
                    // address the request registers, with TTL 255 (RFC 3024 §4.1.1); lost if
                    // the agent is not on this link.
                    let home = RequestPacket::new_checked(&t.transmit.payload[..])
                        .ok()
                        .and_then(|p| RequestRepr::parse(&p).ok())
                        .expect("a registration request")
                        .home_addr;
                    if self.agent_here().map(|o| o.via) == t.via {
                        let from = SocketAddrV4::new(home, MN_PORT);
                        self.send(To::FaLink(self.net), from, t.transmit.payload);
                    }
                }
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
        self.drain_foreign_agents();
    }

    fn drain_home_agents(&mut self) {
        while let Some(t) = self.i_ha.poll_transmit() {
            let to = self.reply_to(*t.dst.ip());
            self.send(to, SocketAddrV4::new(I_HA, MIP_PORT), t.payload);
        }
        while let Some(t) = self.x_ha.poll_transmit() {
            let to = self.reply_to(*t.dst.ip());
            self.send(to, SocketAddrV4::new(X_HA, MIP_PORT), t.payload);
        }
    }

    /// Where a home agent's reply to `dst` goes: the TIA's socket through the VPN, a foreign
    /// agent's care-of address (RFC 5944 §3.8.3.1: the relay's source), or the node's
    /// interface.
    fn reply_to(&self, dst: Ipv4Addr) -> To {
        if dst == TIA {
            return To::Node(PathKey::Vpn);
        }
        match self
            .fas
            .iter()
            .find_map(|(net, _)| net.offer().filter(|o| o.care_of_addr == dst).map(|_| *net))
        {
            Some(net) => To::Fa(net),
            None => To::Node(PathKey::Iface),
        }
    }

    /// What the foreign agents send: replies to the node on their link (to its link-layer
    /// address, RFC 5944 §3.7.3.2), relays to the home agents from their care-of address,
    /// through the same firewall as the node's own requests.
    fn drain_foreign_agents(&mut self) {
        let mut out: Vec<(Net, FaTransmit)> = Vec::new();
        for (net, fa) in &mut self.fas {
            out.extend(std::iter::from_fn(|| fa.poll_transmit()).map(|t| (*net, t)));
        }
        for (net, t) in out {
            let from = SocketAddrV4::new(t.src, MIP_PORT);
            let dst = *t.dst.ip();
            match t.link {
                Some(link) => {
                    let to_node = LinkTarget {
                        iface: FA_IFACE,
                        mac: NODE_MAC,
                    };
                    assert_eq!(link, to_node, "replies go to the node's link-layer address");
                    self.send(To::NodeOn(net), from, t.payload);
                }
                None if dst == I_HA && net.inside() => self.send(To::IHa, from, t.payload),
                None if dst == X_HA && !net.inside() => self.send(To::XHa, from, t.payload),
                None => {}
            }
        }
    }

    /// The VPN passes traffic: established, and outside (in mode cvc inside the x-HA's
    /// tunnel, which needs the x-HA's binding of the care-of address).
    fn vpn_carries(&self) -> bool {
        self.vpn.established && !self.net.inside() && self.outer_path()
    }

    /// Mode cvc: the x-HA binds the external home address to where the node is: its own
    /// care-of address, or (mode fvc) that of the foreign agent here, which has the node as a
    /// visitor and delivers to it (RFC 5944 §4.2.2, RFC 3024).
    fn outer_path(&self) -> bool {
        let Some(bound) = self.x_ha.bindings().get(X_HOME).map(|b| b.care_of_addr) else {
            return self.mode != OutsideMode::Cvc;
        };
        let through_agent = self.agent_here().is_some_and(|o| {
            o.care_of_addr == bound
                && self
                    .fa(self.net)
                    .and_then(|fa| fa.visitor(X_HOME))
                    .is_some_and(|v| v.care_of_addr == bound)
        });
        self.mode != OutsideMode::Cvc || bound == self.net.care_of_addr() || through_agent
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
                    esp: None,
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
        let wants = self.node.wants(now);
        let mut broken = Vec::new();
        if !self.net.inside() {
            if let Gate::InsideUntil(d) = self.gate
                && d > now.mono
            {
                broken.push(format!("gate open until {d:?}"));
            }
            if wants.tunnel.is_some_and(|t| !t.via_vpn) {
                broken.push("a plain i-HA tunnel wanted".into());
            }
        }
        // Through a foreign agent the agent is the end of both home agents' tunnels: it
        // decapsulates and reverse-tunnels (RFC 5944 §4.2.2, RFC 3024; RFC 5265 §2.2, §2.4).
        if let Some(agent) = self.node.detector(0).agent() {
            if wants.tunnel.is_some_and(|t| !t.via_vpn) {
                broken.push(format!("a plain i-HA tunnel wanted through {}", agent.addr));
            }
            if let Some(t) = wants.outer_tunnel {
                broken.push(format!(
                    "an x-HA tunnel to {} wanted through {}",
                    t.care_of_addr, agent.addr
                ));
            }
        }
        let at = format!("{} at {:?} on {:?}", self.name(), now.mono, self.net);
        self.violations
            .extend(broken.into_iter().map(|b| format!("{at}: {b}")));
    }

    /// Mode cvc and fvc: IKE runs inside the x-HA's tunnel (RFC 5265 §2.3, §2.4), so the VPN
    /// is wanted outside only once the x-HA binds the external home address to where the node
    /// is attached: its own care-of address, or the foreign agent's (`vpn_wanted`).
    fn check_vpn_up(&mut self, command: VpnCommand) {
        if command != VpnCommand::Up || self.net.inside() || self.mode != OutsideMode::Cvc {
            return;
        }
        let attached = self.node.status(self.now, 0).care_of_addr;
        let bound = self.x_ha.bindings().get(X_HOME).map(|b| b.care_of_addr);
        if bound.is_none() || bound != attached {
            self.violations.push(format!(
                "{} at {:?} on {:?}: the VPN wanted with the x-HA binding {bound:?}, attached at {attached:?}",
                self.name(),
                self.now.mono,
                self.net
            ));
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
                self.advert.as_ref().map(|(at, _)| *at),
            ]
            .into_iter()
            .chain(self.fas.iter().map(|(_, fa)| fa.poll_timeout()))
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
            if let Some((at, offer)) = self.advert
                && at <= self.now.mono
            {
                self.advert = None;
                self.node.set_offer(0, Some(offer));
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
                    To::FaLink(net) => {
                        let now = self.now;
                        let from = FromMobile {
                            iface: FA_IFACE,
                            src: from,
                            dst: net.offer().unwrap().via.addr,
                            src_mac: NODE_MAC,
                            ttl: 255,
                        };
                        let fa = self.fa_mut(net).unwrap();
                        fa.handle_from_mobile(now, from, &bytes);
                    }
                    To::Fa(net) => {
                        let now = self.now;
                        self.fa_mut(net)
                            .unwrap()
                            .handle_from_home_agent(now, from, &bytes);
                    }
                    To::NodeOn(net) => {
                        if net == self.net {
                            self.node
                                .handle_datagram(self.now, Path::Iface(0), from, &bytes)
                        }
                    }
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
            for (_, fa) in &mut self.fas {
                fa.handle_timeout(self.now);
            }
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
        let what = format!("{} on {:?}: {status:?}, {wants:?}", self.name(), self.net);
        let agent = self.agent_here();
        let to_agent = agent.map(|o| HomeRoute::Agent {
            iface: 0,
            agent: o.via.addr,
        });
        // Through the agent: `home`'s binding at its home agent is the agent's care-of address,
        // and the agent has the node as a visitor with it (RFC 5944 §3.7.3.2).
        let via_agent = |home, bound: Option<Ipv4Addr>| {
            let coa = agent.map(|o| o.care_of_addr);
            let visiting = self
                .fa(self.net)
                .and_then(|fa| fa.visitor(home))
                .map(|v| v.care_of_addr);
            assert_eq!((bound, visiting), (coa, coa), "{what}");
        };
        if self.net.inside() {
            assert_eq!(status.location, Location::Inside, "{what}");
            assert!(
                matches!(self.gate, Gate::InsideUntil(d) if d > now.mono),
                "{what}"
            );
            if agent.is_some() {
                // Mode f (§2.2): registered through the agent, which decapsulates and
                // reverse-tunnels (RFC 3024): nothing tunnelled here, the home address routed
                // to the agent.
                via_agent(I_HOME, binding);
                assert_eq!(wants.tunnel, None, "{what}");
                assert_eq!(wants.internal_route, to_agent, "{what}");
                assert_eq!(self.node.access_mode(now, 0, false), "f");
            } else {
                // Mode c (§2.1): registered directly with the i-HA, tunnelled to it.
                assert_eq!(binding, Some(coa), "{what}");
                let t = wants.tunnel.expect(&what);
                assert_eq!((t.care_of_addr, t.via_vpn), (coa, false), "{what}");
                assert_eq!(wants.internal_route, None, "{what}");
                assert_eq!(self.node.access_mode(now, 0, false), "c");
            }
            assert_eq!(wants.outer_tunnel, None, "{what}");
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
                OutsideMode::Cvc if agent.is_some() => {
                    // Mode fvc (§2.4): the x-HA binds the agent's care-of address, the agent is
                    // the x-HA tunnel's end, and the VPN runs through it from the x-HoA.
                    via_agent(
                        X_HOME,
                        self.x_ha.bindings().get(X_HOME).map(|b| b.care_of_addr),
                    );
                    assert_eq!(wants.outer_tunnel, None, "{what}");
                    assert_eq!(wants.external_route, to_agent, "{what}");
                    assert_eq!(self.vpn.local, Some(X_HOME), "{what}");
                    assert_eq!(self.node.access_mode(now, 0, true), "fvc");
                }
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
fn walk(mut w: World) -> World {
    let weather = w.weather;
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

/// Datagrams lost, overtaking each other, or both.
const BAD_WEATHER: [Weather; 3] = [
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
];

/// Walks the worlds `world` builds in every bad weather with eight seeds: no property broken.
fn walks_in_bad_weather(world: impl Fn(Weather, u64) -> World) {
    for weather in BAD_WEATHER {
        for seed in 1..=8 {
            let w = walk(world(weather, seed * 7919));
            assert_eq!(
                w.violations,
                Vec::<String>::new(),
                "{} {weather:?} seed {seed}",
                w.name()
            );
        }
    }
}

#[test]
fn mode_cvc_walks_the_lab_with_no_plaintext_outside() {
    let w = walk(World::new(OutsideMode::Cvc, CALM, 1));
    assert_eq!(w.violations, Vec::<String>::new());
    // Up outside once the x-HA's tunnel exists, down once back inside (draft §3.4.1 step 2,
    // `inside = "teardown"`).
    assert_eq!(w.commands, vec![VpnCommand::Up, VpnCommand::Down]);
}

#[test]
fn mode_mc_walks_the_lab_and_mobike_follows() {
    let w = walk(World::new(OutsideMode::Mc, CALM, 1));
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
fn modes_f_and_fvc_walk_the_lab_through_foreign_agents() {
    let w = walk(World::with_agents(CALM, 1));
    assert_eq!(w.violations, Vec::<String>::new());
    // Up outside once the x-HA has bound the first external agent's care-of address, kept
    // through the second (the SA lives on the x-HoA), down back inside (draft §3.4.1 step 2).
    assert_eq!(w.commands, vec![VpnCommand::Up, VpnCommand::Down]);
    // Each agent serves the node with one home address: on internal 2 the internal one (the
    // firewall keeps the x-HA from the intranet, §3.7), outside the external one (the i-HA is
    // out of reach from outside, §4.3).
    for (net, fa) in &w.fas {
        let served = |home| fa.visitor(home).is_some();
        let inside = net.inside();
        assert_eq!(
            (served(I_HOME), served(X_HOME)),
            (inside, !inside),
            "{net:?}"
        );
    }
}

/// RFC 5944 §3.7.1: a foreign agent gives up on a request after 7 s and says so (78). When the
/// i-HA is silent longer (it restarts) as the node arrives inside through an agent, the node's
/// retransmission interval, doubling up to mipd's default of 32 s (§3.6.3), outgrows the
/// agent's patience and the 78 answers its latest request. That is no answer from the i-HA:
/// the node keeps asking, and settles in mode f once the i-HA is back, rather than detecting
/// for ever behind a closed gate (the x-HA is out of reach from the intranet).
#[test]
fn mode_f_outlasts_a_silent_i_ha() {
    let mut w = World::with_agents(CALM, 11);
    let mut config = node_config(OutsideMode::Cvc, true);
    config.detect.internal.max_retransmit = Duration::from_secs(32);
    w.node = Node::new(config);
    w.move_to(Net::Internal1);
    w.run(SETTLE);
    w.assert_settled();
    let silence = Duration::from_secs(20);
    w.i_ha_silent_until = w.now.mono + silence;
    w.move_to(Net::Internal2);
    w.run(silence + SETTLE);
    w.assert_settled();
    assert_eq!(w.violations, Vec::<String>::new());
    let timeouts = w
        .fa(Net::Internal2)
        .unwrap()
        .stats()
        .denied
        .get(&78)
        .copied();
    assert!(
        timeouts.is_some_and(|n| n > 0),
        "{timeouts:?}: the agent timed out"
    );
}

#[test]
fn every_mode_under_loss_and_reordering_is_safe_and_settles() {
    for mode in [OutsideMode::Cvc, OutsideMode::Mc] {
        walks_in_bad_weather(|weather, seed| World::new(mode, weather, seed));
    }
}

#[test]
fn modes_f_and_fvc_under_loss_and_reordering_are_safe_and_settle() {
    walks_in_bad_weather(World::with_agents);
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
        vpn: Some((GATEWAY, InsideVpn::Keep)),
        ..node_config(OutsideMode::Mc, false)
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
    let mut w = walk(World::new(OutsideMode::Mc, CALM, 9));
    w.move_to(Net::External1);
    w.run(SETTLE);
    let before = w.commands.len();
    assert!(w.node.set_attachment(w.now, 0, None));
    w.pump();
    w.run(Duration::from_secs(5));
    assert_eq!(w.commands.len(), before, "{:?}", w.commands);
    assert_eq!(w.gate, Gate::Closed);
}

/// The gate's SPIs on the kernel's ESP (XFRM), through a CHILD_SA rekey and a MOBIKE update in
/// the order strongSwan's kernel-netlink and its events report them. The kernel moves first:
/// charon installs the new SAs (RFC 7296 §2.8), and the kernel encrypts with the new outbound
/// SA at once, before charon's event says the CHILD_SA was rekeyed; a MOBIKE update (RFC 4555
/// §3.5) deletes each SA and adds it again, same SPI, at the new addresses. After every report
/// the gate must hold every SPI the kernel holds on the VPN's interface (or its packets are
/// dropped) and every SPI charon reports, and nothing neither of them has.
#[test]
fn the_gate_follows_the_kernels_sas_through_a_rekey_and_a_mobike_update() {
    let spi = |n: u32| n.to_be_bytes();
    let (old_in, old_out, new_in, new_out) = (spi(0xc1), spi(0xd1), spi(0xc2), spi(0xd2));
    let snapshot = |local: [u8; 4], spis: &[[u8; 4]]| VpnSnapshot {
        established: true,
        local: Some(Ipv4Addr::from(local)),
        gateway: Some(GATEWAY),
        tia: Some(TIA),
        spis: spis.to_vec(),
        esp: None,
    };
    enum Report {
        Kernel(Vec<[u8; 4]>),
        Charon(VpnSnapshot),
    }
    use Report::{Charon, Kernel};
    let script = [
        Charon(snapshot([198, 51, 100, 5], &[old_in, old_out])),
        Kernel(vec![old_in, old_out]),
        // Rekey: the new inbound SPI is allocated (a larval SA), then both new SAs installed.
        Kernel(vec![old_in, old_out, new_in]),
        Kernel(vec![old_in, old_out, new_in, new_out]),
        Charon(snapshot(
            [198, 51, 100, 5],
            &[old_in, old_out, new_in, new_out],
        )),
        // The old CHILD_SA deleted: the kernel first, then charon's event.
        Kernel(vec![new_in, new_out]),
        Charon(snapshot([198, 51, 100, 5], &[new_in, new_out])),
        // MOBIKE to another network: each SA deleted and added again with the same SPI.
        Kernel(vec![new_out]),
        Kernel(vec![new_in, new_out]),
        Kernel(vec![new_in]),
        Kernel(vec![new_in, new_out]),
        Charon(snapshot([203, 0, 113, 5], &[new_in, new_out])),
    ];
    let mut node = Node::new(node_config(OutsideMode::Mc, false));
    node.vpn_ready(false);
    assert!(node.vpn_on_xfrm());
    let (mut kernel, mut charon) = (Vec::new(), Vec::new());
    for (step, report) in script.into_iter().enumerate() {
        match report {
            Kernel(spis) => {
                kernel = spis.clone();
                node.vpn_kernel_sas(spis);
            }
            Charon(s) => {
                charon = s.spis.clone();
                node.vpn_state(START, s);
            }
        }
        let gate = node.gate_spis();
        for s in kernel.iter().chain(&charon) {
            assert!(
                gate.contains(s),
                "step {step}: {s:02x?} not in the gate {gate:02x?}"
            );
        }
        for s in &gate {
            assert!(
                kernel.contains(s) || charon.contains(s),
                "step {step}: {s:02x?} in the gate, held by neither"
            );
        }
    }
    let mut settled = vec![new_in, new_out];
    settled.sort_unstable();
    assert_eq!(node.gate_spis(), settled);
    assert!(node.vpn_status().unwrap().mismatch.is_empty());
}

/// The cross-check of charon against the kernel: an SA charon reports installed that the
/// kernel does not hold on the VPN's interface (charon bound it to another if_id, say) shows
/// in the status until the kernel holds it; with kernel-libipsec the kernel's table says
/// nothing about the VPN and is not consulted.
#[test]
fn charons_sas_are_checked_against_the_kernels() {
    let (a, b) = (0xc1u32.to_be_bytes(), 0xd1u32.to_be_bytes());
    let up = VpnSnapshot {
        established: true,
        local: Some(Ipv4Addr::new(198, 51, 100, 5)),
        gateway: Some(GATEWAY),
        tia: Some(TIA),
        spis: vec![a, b],
        esp: None,
    };
    let mut node = Node::new(node_config(OutsideMode::Mc, false));
    node.vpn_ready(false);
    node.vpn_state(START, up.clone());
    // Not read yet: nothing to compare.
    assert!(node.vpn_status().unwrap().mismatch.is_empty());
    node.vpn_kernel_sas(vec![]);
    assert_eq!(node.vpn_status().unwrap().mismatch, &[a, b]);
    node.vpn_kernel_sas(vec![b]);
    assert_eq!(node.vpn_status().unwrap().mismatch, &[a]);
    node.vpn_kernel_sas(vec![a, b]);
    assert!(node.vpn_status().unwrap().mismatch.is_empty());

    let mut node = Node::new(node_config(OutsideMode::Mc, false));
    node.vpn_ready(true);
    assert!(!node.vpn_on_xfrm());
    node.vpn_state(START, up);
    node.vpn_kernel_sas(vec![0xe1u32.to_be_bytes()]);
    let mut charons = vec![a, b];
    charons.sort_unstable();
    assert_eq!(node.gate_spis(), charons);
    assert!(node.vpn_status().unwrap().mismatch.is_empty());
}
