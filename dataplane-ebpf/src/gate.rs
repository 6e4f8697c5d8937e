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
    maps::{GATE_INSIDE, MnGate},
};

use crate::{
    maps::MN_GATE,
    parse::{ETH_HLEN, ETH_P_ARP, ETH_P_IP},
};

/// DHCP's UDP ports (RFC 2131 §4.1): the client needs an address to detect anything with.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// Registration Request / Reply message types (RFC 5944 §3.3, §3.4).
const MIP_REQUEST: u8 = 1;
const MIP_REPLY: u8 = 3;

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
}

/// Offset of the UDP header behind an option-less IPv4 header.
pub const UDP_AT: usize = ETH_HLEN + IP_HLEN;

/// `None`: let the packet through to the rest of the program; `Some(counter)`: drop it.
#[inline(always)]
pub fn check(ifindex: u32, h: &Headers) -> Option<Counter> {
    // No entry: the interface is not gated (plain Mobile IPv4 without RFC 5265).
    let gate = MN_GATE.get_ptr(&ifindex)?;
    // SAFETY: a live map value, copied out at once (mipd replaces whole values).
    let gate: MnGate = unsafe { *gate };
    if is_signalling(h, u16::from_be_bytes(gate.mip_port)) {
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

/// What detection and registration need whatever the gate's state: ARP, DHCP, and Mobile IP
/// Registration Requests and Replies. Everything else, IPv6 included, is user data.
#[inline(always)]
fn is_signalling(h: &Headers, mip_port: u16) -> bool {
    if h.ether_type == ETH_P_ARP {
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
