//! What the protocol simulations (`detection_sim`, `fa_sim`, `protocol_sim`) share: the
//! security associations, home agent and mobile node configurations they build their engines
//! from, the virtual clock's start, and registration messages built by hand with their
//! authentication extensions. Each simulation includes this with `mod util;` and keeps its own
//! `World`: what moves between the engines is particular to each.

use std::net::Ipv4Addr;
use std::time::Duration;

use mipx_common::wire::{
    ExtensionIter, ReplyCode, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket, RequestRepr,
};
use mipx_control::auth::{self, Key, ReplayProtection, SecurityAssociation};
use mipx_control::proto::Now;
use mipx_control::proto::ha::{HaConfig, HomeAddrs, MobileNodeEntry, UdpTunnelPolicy};
use mipx_control::proto::mn::{MnConfig, NatTraversal};

/// The home agent and the mobile node's home address there.
pub const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
/// The mobile node's MN-HA security association with its home agent (RFC 5944 §3.5.2).
pub const SPI: u32 = 0x1000;
pub const KEY: &[u8] = b"shared secret";
/// The mobile node's NAI (RFC 2794 §2).
pub const NAI: &[u8] = b"mn1@example.org";
/// The FA-HA security association between a foreign agent and the home agent (RFC 5944
/// §3.5.4, §3.8.1).
pub const FA_HA_SPI: u32 = 0x2000;
pub const FA_HA_KEY: &[u8] = b"fa-ha secret";

/// Extension type numbers, from the RFC figures.
pub const MN_HA: u8 = 32; // RFC 5944 §3.5.2
pub const FA_HA: u8 = 34; // RFC 5944 §3.5.4
pub const MN_NAI: u8 = 131; // RFC 2794 §2

/// Where the virtual clocks start. The wall clock is a date in 2026, so Identifications are
/// plausible NTP timestamps (RFC 5944 §5.7.1).
pub const START: Now = Now {
    mono: Duration::from_secs(100),
    unix: Duration::from_secs(1_795_000_000),
};

/// A security association with timestamp replay protection (RFC 5944 §5.7.1) at its default
/// tolerance of 7 s.
pub fn sa(spi: u32, key: &[u8]) -> SecurityAssociation {
    SecurityAssociation {
        spi,
        key: Key::new(key.to_vec()),
        replay: ReplayProtection::Timestamp {
            tolerance: Duration::from_secs(7),
        },
    }
}

/// A plain home agent at `address` for one mobile node, `home`, under `sa`: lifetimes capped at
/// 600 s, the default UDP tunnelling policy, no foreign agents, no trusted networks (not an
/// RFC 5265 i-HA).
pub fn ha_config(address: Ipv4Addr, home: Ipv4Addr, sa: SecurityAssociation) -> HaConfig {
    HaConfig {
        address,
        max_lifetime: 600,
        mobile_nodes: vec![MobileNodeEntry {
            home_addrs: HomeAddrs::Single(home),
            sa,
        }],
        foreign_agents: vec![],
        udp_tunnel: UdpTunnelPolicy::default(),
        trusted_networks: None,
    }
}

/// A mobile node with `home_addr` at `home_agent` under `sa`: lifetime 600 s, reverse
/// tunnelling, retransmissions from 1 s doubling up to 8 s (RFC 5944 §3.6.3), reported after 3
/// attempts; no NAI, the default NAT traversal, renewal at 3/4 of the lifetime only.
pub fn mn_config(home_addr: Ipv4Addr, home_agent: Ipv4Addr, sa: SecurityAssociation) -> MnConfig {
    MnConfig {
        home_addr,
        home_agent,
        sa,
        lifetime: 600,
        reverse_tunnel: true,
        initial_retransmit: Duration::from_secs(1),
        max_retransmit: Duration::from_secs(8),
        report_after_attempts: 3,
        nai: None,
        nat_traversal: NatTraversal::default(),
        renew_every: None,
    }
}

/// A registration message under construction: the fixed part from the wire `Repr`s, then
/// extensions appended as raw bytes, authentication extensions signed over everything before
/// them (RFC 5944 §3.5.1).
#[derive(Clone)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn request(
        flags: u8,
        lifetime: u16,
        home: Ipv4Addr,
        ha: Ipv4Addr,
        coa: Ipv4Addr,
        id: u64,
    ) -> Msg {
        let mut b = vec![0u8; RequestRepr::LEN];
        RequestRepr {
            flags: RequestFlags(flags),
            lifetime,
            home_addr: home,
            home_agent: ha,
            care_of_addr: coa,
            identification: id,
        }
        .emit(&mut RequestPacket::new_unchecked(&mut b[..]))
        .unwrap();
        Msg(b)
    }

    pub fn reply(code: u8, lifetime: u16, home: Ipv4Addr, ha: Ipv4Addr, id: u64) -> Msg {
        let mut b = vec![0u8; ReplyRepr::LEN];
        ReplyRepr {
            code: ReplyCode::from(code),
            lifetime,
            home_addr: home,
            home_agent: ha,
            identification: id,
        }
        .emit(&mut ReplyPacket::new_unchecked(&mut b[..]))
        .unwrap();
        Msg(b)
    }

    pub fn ext(mut self, kind: u8, data: &[u8]) -> Msg {
        self.0.push(kind);
        self.0.push(data.len() as u8);
        self.0.extend_from_slice(data);
        self
    }

    /// Type, Length 20, SPI, a 16-byte HMAC-MD5 authenticator (§3.5.2-3.5.4).
    pub fn auth(mut self, kind: u8, spi: u32, key: &[u8]) -> Msg {
        let at = self.0.len();
        self.0.extend_from_slice(&[kind, 20]);
        self.0.extend_from_slice(&spi.to_be_bytes());
        self.0.extend_from_slice(&[0; 16]);
        auth::sign(&mut self.0, at, &Key::new(key.to_vec()));
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The authentication extensions of a message whose fixed part is `fixed_len` bytes:
/// (offset, type, SPI).
pub fn auth_exts(msg: &[u8], fixed_len: usize) -> Vec<(usize, u8, u32)> {
    ExtensionIter::new(msg, fixed_len)
        .map(|e| e.expect("extensions parse"))
        .filter_map(|(at, e)| e.auth().map(|a| (at, e.kind(), a.spi)))
        .collect()
}

/// Checks the authenticator of the extension at `at` with `key`.
pub fn verifies(msg: &[u8], at: usize, key: &[u8]) -> bool {
    let auth = &msg[at + 6..at + 22];
    auth::verify(msg, at, auth, &Key::new(key.to_vec()))
}

/// The fixed part of a Registration Reply.
pub fn parse_reply(bytes: &[u8]) -> ReplyRepr {
    ReplyRepr::parse(&ReplyPacket::new_checked(bytes).expect("a reply")).unwrap()
}
