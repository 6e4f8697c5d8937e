//! BPF map names and key/value types shared by `dataplane-ebpf` and `control`.
//!
//! Rules (DESIGN.md §3): `#[repr(C)]`, `Copy`, explicit padding, a `size_of` assertion,
//! addresses as `[u8; 4]` in network byte order, no `bool`/`Option`/Rust enums inside.

/// Per-CPU array of `u64`, indexed by [`crate::counters::Counter`].
pub const COUNTERS_MAP: &str = "MIPX_COUNTERS";
