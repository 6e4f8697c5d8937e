//! IPv4 header validation, the tunnel header handling and the replies and transmission shared
//! by the XDP programs.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use mipx_common::{
    counters::Counter,
    ipv4::{
        self, HEADER_LEN as IP_HLEN, MIP_TUNNEL_DATA, MIP_TUNNEL_HLEN, UDP_HLEN, UDP_TUNNEL_LEN,
    },
};

use crate::{
    maps::next_ip_id,
    parse::{
        Aligned, ETH_HLEN, ETH_P_IP, EthHdr, IPV4_MIN_IHL, Ipv4Hdr, Packet as _, UdpTunnelHdr,
    },
};

/// A verdict and the counter that accounts for it.
pub type Verdict = (u32, Counter);

/// Reads the IPv4 header after the Ethernet header and checks it the way Linux's
/// `ip_rcv_core()` does (RFC 791 §3.1): version 4, IHL >= 5, Total Length covering the header
/// and held by the frame (longer frames are Ethernet padding). A packet failing these would be
/// dropped by the kernel anyway, so dropping it here changes no outcome.
#[inline(always)]
pub fn checked_ipv4(ctx: &XdpContext) -> Result<Aligned<Ipv4Hdr>, Verdict> {
    let malformed = (XDP_DROP, Counter::MalformedIpv4);
    let Ok(ip) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return Err(malformed);
    };
    // SAFETY: `ptr_at` checked the fixed header lies inside the packet; alignment is 1.
    let ip = unsafe { Ipv4Hdr::read(ip) };
    let header_len = usize::from(ip.ihl()) * 4;
    let total_len = usize::from(ip.total_len());
    if ip.version() != 4
        || ip.ihl() < IPV4_MIN_IHL
        || total_len < header_len
        || !ctx.fits(ETH_HLEN, total_len)
    {
        return Err(malformed);
    }
    Ok(ip)
}

/// Reads and checks the inner header of a tunnel packet, at offset `at` (after the Ethernet
/// header and the tunnel headers, whose outer IPv4 header has no options): it must be IPv4 and
/// fit in the `room` bytes the outer headers leave for it.
#[inline(always)]
pub fn checked_inner(ctx: &XdpContext, at: usize, room: u16) -> Result<Aligned<Ipv4Hdr>, Verdict> {
    let malformed = (XDP_DROP, Counter::MalformedIpv4);
    let Ok(inner) = ctx.ptr_at::<Ipv4Hdr>(at) else {
        return Err(malformed);
    };
    // SAFETY: as above.
    let inner = unsafe { Ipv4Hdr::read(inner) };
    let header_len = usize::from(inner.ihl()) * 4;
    let total_len = usize::from(inner.total_len());
    if inner.version() != 4
        || inner.ihl() < IPV4_MIN_IHL
        || total_len < header_len
        || total_len > usize::from(room)
    {
        return Err(malformed);
    }
    Ok(inner)
}

/// The inner header of an IP-in-IP packet whose `outer` header ends at `ETH_HLEN + IP_HLEN`,
/// checked as [`checked_inner`] does. XDP cannot reassemble, and a tunnel endpoint that cannot
/// decapsulate a fragment drops it (the encapsulator sets DF only when the inner datagram has
/// it, RFC 2003 §3.1); options would put the inner header at a variable offset, and the
/// tunnels we terminate carry none (RFC 2003 §3.1 "Options": not copied).
#[inline(always)]
pub fn ipip_inner(ctx: &XdpContext, outer: &Ipv4Hdr) -> Result<Aligned<Ipv4Hdr>, Verdict> {
    if outer.is_fragment() {
        return Err((XDP_DROP, Counter::TunnelFragment));
    }
    if outer.ihl() != 5 {
        return Err((XDP_DROP, Counter::TunnelOptions));
    }
    let room = outer.total_len().saturating_sub(IP_HLEN as u16);
    checked_inner(ctx, ETH_HLEN + IP_HLEN, room)
}

/// Reads an RFC 3519 MIP Tunnel Data message (§3.3) behind the option-less `outer` header and
/// checks its inner datagram as [`checked_inner`] does; returns the UDP source port and the
/// inner header. Used by both ends of a UDP tunnel that are XDP programs (home agent, foreign
/// agent).
///
/// Not tunnel data, so `Err((XDP_PASS, Counter::Passed))` for the stack and `mipd` to have:
///
/// - an outer fragment or an outer header with options: the UDP header cannot be found at a
///   fixed offset, and a fragment may be part of a fragmented registration message, which the
///   stack reassembles (tunnel data is never fragmented after encapsulation, §4.8);
/// - a destination port other than `dport`, or a source port other than `sport` when one is
///   given: not the tunnel's endpoints (§4.3);
/// - a datagram too short to hold the Tunnel Data header, whatever Ethernet padding follows
///   it, and any other message type: registration requests and replies share the ports and
///   are never tunnelled (§4.2, §4.7).
///
/// Tunnel data that cannot be decapsulated is dropped: a Next Header other than 4, the only
/// tunnelling mode we establish (§3.3: "If a discrepancy is detected, the packet MUST be
/// dropped"), counted as `rejected`; a UDP length that disagrees with the outer header, or a
/// bad inner header, as malformed.
#[inline(always)]
pub fn udp_tunnel_inner(
    ctx: &XdpContext,
    outer: &Ipv4Hdr,
    sport: Option<[u8; 2]>,
    dport: [u8; 2],
    rejected: Counter,
) -> Result<([u8; 2], Aligned<Ipv4Hdr>), Verdict> {
    let not_ours = (XDP_PASS, Counter::Passed);
    if outer.is_fragment() || outer.ihl() != 5 {
        return Err(not_ours);
    }
    let Ok(hdr) = ctx.ptr_at::<UdpTunnelHdr>(ETH_HLEN + IP_HLEN) else {
        return Err(not_ours);
    };
    // SAFETY: bounds-checked above; alignment 1; copied out field by field.
    let (source, dest, len, kind, next_header) = unsafe {
        let h = &*hdr;
        (h.sport, h.dport, h.len, h.kind, h.next_header)
    };
    let udp_len = u16::from_be_bytes(len);
    if dest != dport
        || sport.is_some_and(|sport| source != sport)
        || usize::from(udp_len) < UDP_HLEN + MIP_TUNNEL_HLEN
        || kind != MIP_TUNNEL_DATA
    {
        return Err(not_ours);
    }
    if next_header != ipv4::PROTO_IPIP {
        return Err((XDP_DROP, rejected));
    }
    if udp_len != outer.total_len().wrapping_sub(IP_HLEN as u16) {
        return Err((XDP_DROP, Counter::MalformedIpv4));
    }
    let room = udp_len - (UDP_HLEN + MIP_TUNNEL_HLEN) as u16;
    let inner = checked_inner(ctx, ETH_HLEN + UDP_TUNNEL_LEN, room)?;
    Ok((source, inner))
}

/// The front of a tunnel packet: Ethernet, `HLEN` bytes of tunnel headers, the inner IPv4
/// header.
#[repr(C)]
struct Region<const HLEN: usize> {
    _eth: [u8; ETH_HLEN],
    _outer: [u8; HLEN],
    _inner: [u8; IP_HLEN],
}

/// Puts `outer` (the tunnel headers, `HLEN` bytes: IP-in-IP's 20 or IP-in-UDP's 32) between
/// the Ethernet header and the datagram, readdresses the frame to `macs` (source, destination)
/// when known, and decrements the inner TTL (RFC 2003 §3.1: the encapsulator forwards; the
/// caller checked it is > 1).
#[inline(always)]
pub fn push_header<const HLEN: usize>(
    ctx: &XdpContext,
    outer: &[u8; HLEN],
    macs: Option<([u8; 6], [u8; 6])>,
) -> Result<(), Verdict> {
    // SAFETY: the helper only moves `data`; every pointer is re-derived and re-checked below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(HLEN as i32)) } != 0 {
        return Err((XDP_DROP, Counter::TooBig));
    }
    // New layout: [new Ethernet 14][outer HLEN][inner ...]; the old Ethernet header now sits at
    // offset HLEN, where it may overlap the new one. One bounds check covers all of it, and
    // every pointer is derived from that one (the verifier tracks the range per register).
    let Ok(base) = ctx.ptr_at::<Region<HLEN>>(0) else {
        return Err((XDP_DROP, Counter::MalformedIpv4));
    };
    let base = base.cast::<u8>();
    // SAFETY: every access below lies inside the `Region` checked above.
    unsafe {
        let mut eth = Aligned(*base.add(HLEN).cast::<EthHdr>());
        if let Some((smac, dmac)) = macs {
            eth.src = smac;
            eth.dst = dmac;
        }
        *base.cast::<EthHdr>() = *eth;
        *base.add(ETH_HLEN).cast::<[u8; HLEN]>() = *outer;
        let inner = &mut *base.add(ETH_HLEN + HLEN).cast::<Ipv4Hdr>();
        ipv4::decrement_ttl(&mut inner.ttl, &mut inner.checksum);
    }
    Ok(())
}

/// Returns ICMP "Fragmentation Needed and DF set" to the sender of a datagram too big for a
/// tunnel, carrying `tunnel_mtu`, the route MTU minus the encapsulation headers (RFC 2003 §5.1,
/// RFC 1191 §4), from `source` (the router that could not forward: the home agent, or the
/// foreign agent's care-of address for a reverse tunnel), back out of the interface it came in
/// on, to the previous hop's link-layer address; without DF the datagram is dropped, since XDP
/// cannot fragment.
#[inline(always)]
pub fn frag_needed(ctx: &XdpContext, ip: &Ipv4Hdr, tunnel_mtu: u16, source: [u8; 4]) -> Verdict {
    // Quoting "the internet header + 64 bits" has a fixed size only without options.
    if ip.flags_frag() & ipv4::DF == 0 || ip.ihl() != 5 {
        return (XDP_DROP, Counter::TooBig);
    }
    const QUOTE: usize = IP_HLEN + 8;
    const ICMP_AT: usize = ETH_HLEN + IP_HLEN;
    const REPLY_LEN: usize = ICMP_AT + ipv4::ICMP_FRAG_NEEDED_LEN;
    let Ok(base) = ctx.ptr_at::<[u8; REPLY_LEN]>(0) else {
        return (XDP_DROP, Counter::TooBig);
    };
    let base = base.cast::<u8>();
    // SAFETY: the quote and the Ethernet header lie in the checked range; copied out before
    // the packet is rewritten.
    let (eth_in, quote) = unsafe {
        (
            *base.cast::<EthHdr>(),
            *base.add(ETH_HLEN).cast::<[u8; QUOTE]>(),
        )
    };
    let icmp = ipv4::icmp_frag_needed(tunnel_mtu, &quote);
    // RFC 1812 §4.3.2.5: ICMP errors go out with precedence 6 (internetwork control), like
    // Linux's.
    let header = ipv4::header(
        0xc0,
        (IP_HLEN + ipv4::ICMP_FRAG_NEEDED_LEN) as u16,
        next_ip_id(),
        0,
        ipv4::PROTO_ICMP,
        source,
        ip.src_addr,
    );
    // SAFETY: all writes lie in the `REPLY_LEN` bytes checked above.
    unsafe {
        *base.cast::<EthHdr>() = EthHdr {
            dst: eth_in.src,
            src: eth_in.dst,
            ether_type: ETH_P_IP.to_be_bytes(),
        };
        *base.add(ETH_HLEN).cast::<[u8; IP_HLEN]>() = header;
        *base.add(ICMP_AT).cast::<[u8; 8]>() = icmp;
        *base.add(ICMP_AT + 8).cast::<[u8; QUOTE]>() = quote;
    }
    // The frame is longer than the reply (that is why it is too big); the packet length is
    // the IP total length plus the Ethernet header, so no pointer subtraction is needed.
    let shrink = REPLY_LEN as i64 - (ETH_HLEN as i64 + i64::from(ip.total_len()));
    // SAFETY: shrinking only moves `data_end`; nothing is accessed afterwards.
    if shrink < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, shrink as i32) } != 0 {
        return (XDP_DROP, Counter::TooBig);
    }
    (XDP_TX, Counter::FragNeededSent)
}

/// Sends the rewritten frame out of `ifindex`: XDP_TX when that is where it came in.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == ctx.ingress_ifindex() as u32 {
        XDP_TX
    } else {
        // SAFETY: a plain helper call; it returns XDP_REDIRECT, or XDP_ABORTED on bad flags.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}
