//! Route and neighbour lookups through the kernel's FIB (`bpf_fib_lookup`), so the programs
//! forward exactly where the kernel would, with the link-layer addresses it already knows.

use core::{ffi::c_void, mem};

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup,
};

/// `AF_INET`.
const AF_INET: u8 = 2;

/// What the FIB said about a destination.
pub enum Route {
    /// Forward out `ifindex`, with these Ethernet addresses.
    Neighbour {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// There is a route, but the next hop's link-layer address is not resolved yet: the kernel
    /// must handle this packet (it queues it while it resolves the address).
    Unresolved,
    /// The kernel would not forward to this destination: it is local (or broadcast,
    /// multicast), *or there is no route at all*. The helper reports all of these as
    /// `BPF_FIB_LKUP_RET_NOT_FWDED` (a failed `fib_lookup()`, -ENETUNREACH, is mapped to it),
    /// so the caller decides: a decapsulated datagram may be for us, an encapsulated one never.
    NotForwarded,
    /// The route's MTU is below the datagram length asked for.
    FragNeeded { mtu: u16 },
    /// No usable route (unreachable, blackhole, prohibit, forwarding disabled, ...).
    NoRoute,
}

/// Looks up `dst` as if a packet from `src`, `tot_len` bytes long (0: skip the MTU check),
/// were being forwarded after arriving on `ifindex`. `flags` are `BPF_FIB_LOOKUP_*`.
#[inline(always)]
pub fn lookup(
    ctx: *mut c_void,
    ifindex: u32,
    src: [u8; 4],
    dst: [u8; 4],
    tot_len: u16,
    flags: u32,
) -> Route {
    // SAFETY: `bpf_fib_lookup` is plain data (integers, byte arrays and unions of them), for
    // which all-zero is a valid value and the documented "no optional input" state.
    let mut params: aya_ebpf::bindings::bpf_fib_lookup = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.ifindex = ifindex;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: `params` is a live, correctly sized `struct bpf_fib_lookup` on our stack and
    // `ctx` is the program's own context, as the helper requires.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx,
            &mut params,
            mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32,
            flags,
        )
    };
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // SAFETY: on success the kernel filled in the smac/dmac arm of the union.
            let macs = unsafe { params.__bindgen_anon_6.__bindgen_anon_2 };
            Route::Neighbour {
                ifindex: params.ifindex,
                smac: macs.smac,
                dmac: macs.dmac,
            }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::Unresolved,
        // SAFETY: on FRAG_NEEDED the kernel stored the route MTU in this arm of the union.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::FragNeeded {
            mtu: unsafe { params.__bindgen_anon_1.mtu_result },
        },
        aya_ebpf::bindings::BPF_FIB_LKUP_RET_NOT_FWDED => Route::NotForwarded,
        _ => Route::NoRoute,
    }
}
