//! Per-CPU dataplane counters (DESIGN.md §1.5): one `PerCpuArray<u64>` named
//! [`COUNTERS_MAP`](crate::maps::COUNTERS_MAP), indexed by [`Counter`]. Every verdict of every
//! program bumps exactly one slot, so `mipctl stats` can account for every packet.

/// A counter slot. The discriminant is the index into the per-CPU array; never reorder, only
/// append, because pinned maps outlive a `mipd` upgrade.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// A packet that no program of ours was concerned with (passed to the stack untouched).
    Passed = 0,
    /// A frame too short for the Ethernet header.
    TruncatedEth = 1,
    /// A non-IPv4 frame (passed).
    NotIpv4 = 2,
    /// An IPv4 packet whose header is truncated or has a bad IHL/total length (dropped).
    MalformedIpv4 = 3,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 4] = [
        Counter::Passed,
        Counter::TruncatedEth,
        Counter::NotIpv4,
        Counter::MalformedIpv4,
    ];
    /// Number of slots the counter map must hold.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The stable name shown by `mipctl stats`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::TruncatedEth => "truncated_eth",
            Counter::NotIpv4 => "not_ipv4",
            Counter::MalformedIpv4 => "malformed_ipv4",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
