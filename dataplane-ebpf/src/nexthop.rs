//! A per-CPU, direct-mapped cache of FIB answers in front of `bpf_fib_lookup`.
//!
//! `bpf_fib_lookup` is the single most expensive step of the home agent's fast path (the
//! dataplane benchmark measured it at about half of `ha_xdp`'s cost), and its answer for a
//! destination rarely changes. So the answer is kept per destination and CPU until `mipd`
//! advances the epoch (every `NEXTHOP_EPOCH_MS`), so route and neighbour changes take effect
//! within that time. Reading a clock per packet would cost as much again as the rest of the
//! encapsulation on the machines we measured, so the clock is only a fallback for when no
//! `mipd` is running: every `NEXTHOP_CHECK_EVERY`th use, an entry older than `NEXTHOP_TTL_NS`
//! is looked up again. Only complete answers (a resolved neighbour) are cached, with the route
//! MTU, so the tunnel MTU check (RFC 2003 §5.1) still holds for every packet.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, macros::map, maps::PerCpuArray};
use mipx_common::maps::{NEXTHOP_CHECK_EVERY, NEXTHOP_MAP, NEXTHOP_SLOTS, NEXTHOP_TTL_NS, NextHop};

use crate::{
    fib::{self, Route},
    maps::str_eq,
};

/// Cached FIB answers, by a hash of the destination; `mipd` never writes it.
#[map(name = "MIPX_NEXTHOPS")]
static NEXTHOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(NEXTHOP_SLOTS, 0);
const _: () = assert!(str_eq(NEXTHOP_MAP, "MIPX_NEXTHOPS"));
const _: () = assert!(NEXTHOP_SLOTS.is_power_of_two());
const _: () = assert!(NEXTHOP_CHECK_EVERY.is_power_of_two());

/// Fibonacci hashing: the top bits of the address times 2^32/φ.
#[inline(always)]
fn slot(addr: [u8; 4]) -> u32 {
    u32::from_ne_bytes(addr).wrapping_mul(0x9e37_79b9) >> (32 - NEXTHOP_SLOTS.trailing_zeros())
}

/// [`fib::lookup`] (no flags) through the cache; `epoch` is the current
/// `HaDataplaneConfig::nexthop_epoch`.
#[inline(always)]
pub fn lookup(
    ctx: *mut c_void,
    ifindex: u32,
    src: [u8; 4],
    dst: [u8; 4],
    tot_len: u16,
    epoch: u32,
) -> Route {
    let Some(entry) = NEXTHOPS.get_ptr_mut(slot(dst)) else {
        return fib::lookup(ctx, ifindex, src, dst, tot_len, 0);
    };
    // SAFETY: this CPU's element of a live per-CPU map; nothing else on this CPU touches it
    // while the program runs.
    let entry = unsafe { &mut *entry };
    if entry.addr == dst && entry.ifindex != 0 && entry.epoch == epoch {
        entry.uses = entry.uses.wrapping_add(1);
        let fresh = entry.uses & (NEXTHOP_CHECK_EVERY - 1) != 0 || {
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            now.wrapping_sub(entry.stamp_ns) < NEXTHOP_TTL_NS
        };
        if fresh {
            if tot_len > entry.mtu {
                return Route::FragNeeded { mtu: entry.mtu };
            }
            return Route::Neighbour {
                ifindex: entry.ifindex,
                smac: entry.smac,
                dmac: entry.dmac,
            };
        }
    }
    let route = fib::lookup(ctx, ifindex, src, dst, tot_len, 0);
    if let Route::Neighbour {
        ifindex: out,
        smac,
        dmac,
    } = route
    {
        // The answer says the length fits but not the route MTU; asking again with the
        // largest length makes the helper report it. No neighbour lookup is done for that: the
        // helper checks the MTU first and returns FRAG_NEEDED. (BPF_FIB_LOOKUP_SKIP_NEIGH
        // would say so explicitly but needs Linux 6.3, and 6.1 refuses unknown flags.)
        let mtu = match fib::lookup(ctx, ifindex, src, dst, u16::MAX, 0) {
            Route::FragNeeded { mtu } => mtu,
            _ => u16::MAX,
        };
        *entry = NextHop {
            addr: dst,
            ifindex: out,
            smac,
            dmac,
            mtu,
            uses: 0,
            epoch,
            _pad: [0; 4],
            // SAFETY: a helper without arguments.
            stamp_ns: unsafe { bpf_ktime_get_coarse_ns() },
        };
    }
    route
}
