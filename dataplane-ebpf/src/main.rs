//! mipx eBPF dataplane: entry points only (DESIGN.md §4). Each returns the verdict its module
//! chose and bumps exactly one counter for it.
//!
//! Built for `bpfel-unknown-none` by `control/build.rs` (aya-build) and embedded in
//! `mipx-control`; never built for the host.
#![no_std]
#![no_main]

mod bench;
mod fa;
mod fib;
mod gate;
mod ha;
mod maps;
mod mn;
mod nexthop;
mod parse;
mod stats;
mod vpn;
mod xdp_ip;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::stats::bump;

/// Home agent, XDP on every interface where traffic for home addresses or reverse tunnels
/// arrives: proxy ARP, encapsulation, decapsulation; everything else passes untouched.
#[xdp]
pub fn ha_xdp(ctx: XdpContext) -> u32 {
    let (verdict, counter) = ha::ingress(&ctx);
    bump(counter);
    verdict
}

/// Foreign agent, XDP on every interface it serves or reaches home agents through: delivery of
/// home agents' tunnels to visitors, reverse tunnelling of what visitors send; everything else
/// passes untouched.
#[xdp]
pub fn fa_xdp(ctx: XdpContext) -> u32 {
    let (verdict, counter) = fa::ingress(&ctx);
    bump(counter);
    verdict
}

/// Mobile node, XDP ingress on the interface holding the co-located care-of address.
#[xdp]
pub fn mn_xdp(ctx: XdpContext) -> u32 {
    let (verdict, counter) = mn::ingress(&ctx);
    bump(counter);
    verdict
}

/// Mobile node, TC egress on the same interface: reverse tunnelling.
#[classifier]
pub fn mn_tc_egress(ctx: TcContext) -> i32 {
    let (verdict, counter) = mn::egress(&ctx);
    bump(counter);
    verdict as i32
}

/// Mobile node, TC egress on the VPN device: the Mobile IP tunnel to the i-HA inside the VPN.
#[classifier]
pub fn mn_tc_vpn_egress(ctx: TcContext) -> i32 {
    let (verdict, counter) = vpn::egress(&ctx);
    bump(counter);
    verdict as i32
}

/// Mobile node, TC ingress on the VPN device: the i-HA's tunnel to the tunnel inner address.
#[classifier]
pub fn mn_tc_vpn_ingress(ctx: TcContext) -> i32 {
    let (verdict, counter) = vpn::ingress(&ctx);
    bump(counter);
    verdict as i32
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
