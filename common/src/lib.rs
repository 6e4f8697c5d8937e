//! Wire formats and BPF map types shared by the control plane (`control`) and the eBPF
//! dataplane (`dataplane-ebpf`).
//!
//! Two views of the same bytes, on purpose (see DESIGN.md §1.2): the user side uses
//! smoltcp-style `Packet<T: AsRef<[u8]>>` views and `Repr` values in [`wire`]; the kernel side
//! uses the `#[repr(C)]` types of [`maps`] and [`counters`], which the verifier can reason about.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod bench;
pub mod counters;
pub mod ipv4;
pub mod maps;
pub mod wire;
