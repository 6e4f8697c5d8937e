//! The per-CPU counter array (DESIGN.md §1.5): counters, not logs, on the fast path.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use mipx_common::{counters::Counter, maps::COUNTERS_MAP};

use crate::maps::str_eq;

/// Per-CPU `u64` packet counts indexed by [`Counter`]; user space sums the CPUs
/// (`mipx_control::dataplane::Dataplane::counters`). The `#[map]` macro only takes a string
/// literal, so the name is spelled out and tied to [`COUNTERS_MAP`] by the assertion below.
#[map(name = "MIPX_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

const _: () = assert!(str_eq(COUNTERS_MAP, "MIPX_COUNTERS"));

/// Adds one to this CPU's slot for `counter`.
///
/// A plain increment, not an atomic: each CPU owns its slot of a per-CPU array and an XDP program
/// is not migrated while it runs. (On PREEMPT_RT a nested program on the same CPU could in theory
/// lose an increment; acceptable for statistics, and far cheaper than an atomic.)
#[inline(always)]
pub fn bump(counter: Counter) {
    // The lookup only fails for an index >= max_entries, which `Counter::COUNT` rules out; the
    // verifier still insists on the null check.
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: `slot` points at this CPU's value inside a live map element (the kernel
        // returned it for this CPU), and nothing else on this CPU writes it concurrently.
        unsafe { *slot += 1 };
    }
}
