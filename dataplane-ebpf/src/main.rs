//! mipx eBPF dataplane: XDP entry points only (DESIGN.md §4); parsing lives in [`parse`], counters
//! in [`stats`].
//!
//! Built for `bpfel-unknown-none` by `control/build.rs` (aya-build) and embedded in
//! `mipx-control`; never built for the host.
#![no_std]
#![no_main]

mod parse;
mod stats;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use mipx_common::counters::Counter;

use crate::{
    parse::{ETH_HLEN, ETH_P_IP, EthHdr, IPV4_MIN_IHL, Ipv4Hdr, fits, ptr_at},
    stats::bump,
};

/// The main ingress hook. For now it only classifies: it passes everything that is well-formed
/// or not IPv4, and drops IPv4 that the kernel would drop anyway, so later stages (decap, gate)
/// can rely on a sane header. Every verdict bumps exactly one counter.
#[xdp]
pub fn mipx_xdp(ctx: XdpContext) -> u32 {
    let (verdict, counter) = classify(&ctx);
    bump(counter);
    verdict
}

/// Returns the verdict and the counter that accounts for it.
///
/// Verdicts are chosen on purpose (DESIGN.md §4): "not ours" (runt, non-IPv4) is `XDP_PASS` so
/// the stack decides as if we were not there; "ours but bad" (malformed IPv4) is `XDP_DROP`.
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, Counter) {
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return (XDP_PASS, Counter::TruncatedEth);
    };
    // SAFETY: `ptr_at` checked that a whole `EthHdr` lies inside the packet; `EthHdr` has
    // alignment 1.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_IP {
        return (XDP_PASS, Counter::NotIpv4);
    }

    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        // Shorter than the fixed 20-byte header.
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    // SAFETY: as above, for the fixed part of the IPv4 header.
    let ip = unsafe { *ip };
    // RFC 791 §3.1; these are the checks Linux's ip_rcv_core() drops on, so dropping here
    // changes no outcome, only where the packet dies.
    let ihl = ip.ihl();
    if ip.version() != 4 || ihl < IPV4_MIN_IHL {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    let header_len = usize::from(ihl) * 4;
    let total_len = usize::from(ip.total_len());
    // The total length must cover the header (options included), and the frame must hold the
    // whole datagram; the second check therefore also catches options running past the frame.
    // A frame longer than the datagram is fine: that is Ethernet padding.
    if total_len < header_len || !fits(ctx, ETH_HLEN, total_len) {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    (XDP_PASS, Counter::Passed)
}

/// Baseline: drop everything, touch nothing. Measures the floor cost of the XDP hook in
/// benchmarks, so it deliberately bumps no counter (a counter would be part of what is measured).
#[xdp]
pub fn mipx_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Baseline: pass everything, touch nothing (see [`mipx_drop`]).
#[xdp]
pub fn mipx_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// eBPF programs cannot unwind or abort, and the verifier rejects unbounded loops, so a reachable
/// panic would fail to load. Every indexing and arithmetic path above is checked so the optimiser
/// removes the panic calls; this handler only satisfies `no_std`.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: no code path in this crate panics once optimised (see above); if one did, the
    // verifier would reject the program at load time rather than reach this point at run time.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The kernel only lets GPL-compatible programs call GPL-only helpers; "Dual MIT/GPL" qualifies
/// and matches the MIT OR Apache-2.0 licence of the rest of the workspace for the non-kernel parts.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
