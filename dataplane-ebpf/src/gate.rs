//! The mobile node's RFC 5265 plaintext gate, checked first by `mn_xdp` (ingress) and
//! `mn_tc_egress` (egress) on every packet of a gated interface.
//!
//! RFC 5265 §3.2.2: on a connection status change the mobile node "MUST immediately stop
//! relaying user data packets"; §3.2.4: inside, it "MUST NOT send or receive a user data packet
//! if more than T_MONITOR seconds have elapsed since the last successful (re-)registration with
//! the i-HA". `mipd` decides the state; the deadline is enforced here with the kernel's clock,
//! so a stalled or killed daemon cannot leak plaintext: dropping is enough (§3.2.4).

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use mipx_common::{
    counters::Counter,
    ipv4::{self, HEADER_LEN as IP_HLEN},
    maps::{GATE_INSIDE, IKE_NATT_PORT, IKE_PORT, MnGate},
};

use crate::{
    maps::{MN_GATE, MN_VPN_SPIS},
    parse::{ETH_HLEN, ETH_P_ARP, ETH_P_IP},
};

/// DHCP's UDP ports (RFC 2131 §4.1): the client needs an address to detect anything with.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// Registration Request / Reply message types (RFC 5944 §3.3, §3.4).
const MIP_REQUEST: u8 = 1;
const MIP_REPLY: u8 = 3;
/// RFC 3519 §3.3: MIP Tunnel Data message type.
const MIP_TUNNEL_DATA: u8 = 4;
/// ICMP Router Advertisement and Solicitation: Agent Advertisement and Solicitation (RFC 5944
/// §2.1, §2.2).
const ICMP_ROUTER_ADVERTISEMENT: u8 = 9;
const ICMP_ROUTER_SOLICITATION: u8 = 10;

/// The headers the gate classifies by, read by the caller (XDP: direct access; TC: loads).
pub struct Headers {
    pub ether_type: u16,
    /// IPv4 protocol, or 0 when not IPv4 or the header is short.
    pub protocol: u8,
    /// Whether the IPv4 header says this is a non-first fragment (no transport header).
    pub later_fragment: bool,
    /// UDP source and destination ports and the first payload byte, when present behind an
    /// option-less IPv4 header (with options the datagram counts as user data).
    pub udp: Option<(u16, u16, u8)>,
    /// IPv4 source and destination.
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    /// The first 4 bytes after the IPv4 header (ESP) or after the UDP header (UDP): the SPI of
    /// ESP, or of ESP in UDP, where zero is the non-ESP marker of IKE (RFC 3948 §2.2). For
    /// ICMP, the first 4 bytes of the message (type, code, checksum).
    pub spi: Option<[u8; 4]>,
}

impl Headers {
    /// Nothing known yet (not IPv4).
    pub const NONE: Headers = Headers {
        ether_type: 0,
        protocol: 0,
        later_fragment: false,
        udp: None,
        src: [0; 4],
        dst: [0; 4],
        ttl: 0,
        spi: None,
    };

    /// Fills in the transport fields from the first [`L4_PEEK`] bytes after the IPv4 header.
    #[inline(always)]
    pub fn fill_l4(&mut self, l4: &[u8; L4_PEEK]) {
        if self.protocol == ipv4::PROTO_ESP || self.protocol == ipv4::PROTO_ICMP {
            self.spi = Some([l4[0], l4[1], l4[2], l4[3]]);
        } else if self.protocol == ipv4::PROTO_UDP {
            self.udp = Some((
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
                l4[8],
            ));
            self.spi = Some([l4[8], l4[9], l4[10], l4[11]]);
        }
    }
}

/// What the headers reader fetches: 8 bytes of UDP header and 4 of payload (after an
/// option-less IPv4 header), enough for ports, the Mobile IP type and an SPI.
pub const L4_PEEK: usize = 12;

/// Offset of the UDP header behind an option-less IPv4 header.
pub const UDP_AT: usize = ETH_HLEN + IP_HLEN;

/// `None`: let the packet through to the rest of the program; `Some(counter)`: drop it.
#[inline(always)]
pub fn check(ifindex: u32, h: &Headers) -> Option<Counter> {
    // No entry: the interface is not gated (plain Mobile IPv4 without RFC 5265).
    let gate = MN_GATE.get_ptr(&ifindex)?;
    // SAFETY: a live map value, copied out at once (mipd replaces whole values).
    let gate: MnGate = unsafe { *gate };
    let mip_port = u16::from_be_bytes(gate.mip_port);
    if is_signalling(h, mip_port)
        || is_vpn(h, gate.vpn_gateway)
        || is_outer_tunnel(h, mip_port, gate.outer_home_agent)
    {
        return None;
    }
    if gate.state != GATE_INSIDE {
        return Some(Counter::GateClosed);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now >= gate.open_until_ns {
        return Some(Counter::GateExpired);
    }
    None
}

/// IKE with the VPN gateway, and the VPN's own ESP (by SPI), plain or in UDP: ciphertext that
/// carries user data outside (RFC 5265 §2.3), and the key exchange that sets it up.
#[inline(always)]
fn is_vpn(h: &Headers, gateway: [u8; 4]) -> bool {
    if gateway == [0; 4] || h.ether_type != ETH_P_IP || h.later_fragment {
        return false;
    }
    let peer = if h.dst == gateway {
        true
    } else {
        h.src == gateway
    };
    if !peer {
        return false;
    }
    let known_spi = |spi: [u8; 4]| MN_VPN_SPIS.get_ptr(&spi).is_some();
    match (h.protocol, h.udp, h.spi) {
        (ipv4::PROTO_ESP, _, Some(spi)) => known_spi(spi),
        (ipv4::PROTO_UDP, Some((sport, dport, _)), spi) => {
            let port = |p: u16| sport == p || dport == p;
            if port(IKE_PORT) {
                return true;
            }
            match spi {
                Some(spi) if port(IKE_NATT_PORT) => spi == [0; 4] || known_spi(spi),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Mode cvc: the x-HA's tunnel toward the x-HA, IP-in-IP or RFC 3519 tunnel data. It carries
/// only the VPN: what leaves in it was gated before `mn_tc_egress` encapsulated it (the
/// encapsulated packet passes this hook a second time on its way out, `bpf_redirect_neigh`),
/// and the rest is `mipd`'s keepalives (RFC 3519 §4.9). Only toward the x-HA: what arrives
/// from it was decapsulated and gated by `mn_xdp` before this check if it was our tunnel's, so
/// anything of the kind still here (another port, a stale care-of address) is not ours and
/// stays user data.
#[inline(always)]
fn is_outer_tunnel(h: &Headers, mip_port: u16, outer_home_agent: [u8; 4]) -> bool {
    if outer_home_agent == [0; 4] || h.ether_type != ETH_P_IP || h.dst != outer_home_agent {
        return false;
    }
    if h.protocol == ipv4::PROTO_IPIP {
        return true;
    }
    if h.protocol != ipv4::PROTO_UDP || h.later_fragment {
        return false;
    }
    let Some((_, dport, first)) = h.udp else {
        return false;
    };
    dport == mip_port && first == MIP_TUNNEL_DATA
}

/// What detection and registration need whatever the gate's state: ARP, DHCP, Agent
/// Advertisements and Solicitations, and Mobile IP Registration Requests and Replies.
/// Everything else, IPv6 included, is user data.
#[inline(always)]
fn is_signalling(h: &Headers, mip_port: u16) -> bool {
    if h.ether_type == ETH_P_ARP {
        return true;
    }
    // Agent discovery, which modes f and fvc find their foreign agent with: TTL 1, as RFC
    // 5944 §2.1 and §2.2 require of both, so it never left the link it was sent on; an ICMP
    // router message carries no user data.
    if h.ether_type == ETH_P_IP
        && h.protocol == ipv4::PROTO_ICMP
        && h.ttl == 1
        && !h.later_fragment
        && let Some([t, ..]) = h.spi
        && (t == ICMP_ROUTER_ADVERTISEMENT || t == ICMP_ROUTER_SOLICITATION)
    {
        return true;
    }
    if h.ether_type != ETH_P_IP || h.protocol != ipv4::PROTO_UDP || h.later_fragment {
        return false;
    }
    let Some((sport, dport, first)) = h.udp else {
        return false;
    };
    let dhcp = (sport == DHCP_CLIENT_PORT && dport == DHCP_SERVER_PORT)
        || (sport == DHCP_SERVER_PORT && dport == DHCP_CLIENT_PORT);
    // Tunnel data (RFC 3519, type 4) shares the port but is user data.
    let registration =
        (sport == mip_port || dport == mip_port) && (first == MIP_REQUEST || first == MIP_REPLY);
    dhcp || registration
}
