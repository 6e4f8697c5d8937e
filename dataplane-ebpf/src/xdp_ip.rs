//! IPv4 header validation shared by the XDP programs.

use aya_ebpf::{bindings::xdp_action::XDP_DROP, programs::XdpContext};
use mipx_common::counters::Counter;

use crate::parse::{Aligned, ETH_HLEN, IPV4_MIN_IHL, Ipv4Hdr, Packet as _};

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
