//! Map names and types of the benchmark-only XDP programs in `dataplane-ebpf/src/bench.rs`
//! (`cargo xtask bench dataplane`, BENCH-METHOD.md). Nothing in `mipd` uses them.
//!
//! Same rules as [`crate::maps`]: `#[repr(C)]`, explicit padding, a size assertion, addresses
//! in network byte order.

use core::mem::size_of;

/// Names of the benchmark programs in the object (the function names in
/// `dataplane-ebpf/src/bench.rs`).
pub mod programs {
    /// Packet generator for `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`: rewrites the
    /// whole header of every frame from [`super::GEN_CONFIG_MAP`] and returns `XDP_TX`.
    pub const GEN: &str = "mipx_bench_gen";
    /// The XDP_REDIRECT baseline: rewrites the MAC addresses and redirects every frame to the
    /// interface in [`super::FWD_CONFIG_MAP`].
    pub const REDIRECT: &str = "mipx_bench_redirect";
    /// `bpf_fib_lookup` for the frame's source and destination, as `ha_xdp` does it, then
    /// `XDP_DROP` (resolved) or `XDP_PASS`: the FIB lookup's share of the HA's cost.
    pub const FIB: &str = "mipx_bench_fib";
    /// The binding lookup of `ha_xdp` for the frame's destination, then `XDP_DROP` (bound) or
    /// `XDP_PASS`: the binding map's share of the HA's cost, and how it grows with the map.
    pub const LOOKUP: &str = "mipx_bench_lookup";
    /// The sink: counts frames (and checks their length and IP protocol) into
    /// [`super::SINK_STATS_MAP`], then drops them.
    pub const SINK: &str = "mipx_bench_sink";
}

/// Array of one [`GenConfig`].
pub const GEN_CONFIG_MAP: &str = "MIPX_BENCH_GEN";
/// Per-CPU array of one `u32`: the generator's position in its address sequence.
pub const GEN_STATE_MAP: &str = "MIPX_BENCH_GEN_STATE";
/// Array of one [`FwdConfig`].
pub const FWD_CONFIG_MAP: &str = "MIPX_BENCH_FWD";
/// Array of one [`SinkConfig`].
pub const SINK_CONFIG_MAP: &str = "MIPX_BENCH_SINK_CFG";
/// Per-CPU array of one [`SinkStats`].
pub const SINK_STATS_MAP: &str = "MIPX_BENCH_SINK";

/// [`GenConfig::vary`]: the varied address is the (inner) destination.
pub const VARY_DST: u8 = 0;
/// [`GenConfig::vary`]: the varied address is the (inner) source (reverse tunnels: the home
/// address is the inner source).
pub const VARY_SRC: u8 = 1;

/// [`GenConfig::encap`]: plain IPv4/UDP frames.
pub const ENCAP_NONE: u8 = 0;
/// [`GenConfig::encap`]: IP-in-IP (RFC 2003): an outer IPv4 header, protocol 4.
pub const ENCAP_IPIP: u8 = 1;
/// [`GenConfig::encap`]: RFC 3519 IP-in-UDP: an outer IPv4 header (protocol 17), a UDP header
/// from [`GenConfig::tunnel_src_port`] to [`GenConfig::tunnel_dst_port`] without checksum and
/// the MIP Tunnel Data header (type 4, next header 4), as `mipx_common::ipv4::udp_tunnel_header`
/// builds them.
pub const ENCAP_UDP: u8 = 2;

/// What the generator writes into every frame. Frames are `frame_len` bytes: Ethernet, then
/// the tunnel headers named by `encap` (none, 20 or 32 bytes), then IPv4 + UDP; the payload is
/// left as is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// Outer source and destination when `encap` is not [`ENCAP_NONE`].
    pub outer_src: [u8; 4],
    pub outer_dst: [u8; 4],
    /// Inner (or only) source and destination; the one named by `vary` is the first of
    /// `count` consecutive addresses.
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// How many addresses the varied one runs over (at least 1).
    pub count: u32,
    /// Step through them, modulo `count`: coprime with `count` and far from 1, so consecutive
    /// frames hit unrelated hash buckets and map elements.
    pub step: u32,
    /// Length of the frames (the length of `data_in`), Ethernet header included.
    pub frame_len: u16,
    /// [`ENCAP_NONE`], [`ENCAP_IPIP`] or [`ENCAP_UDP`]: the tunnel around the IPv4/UDP
    /// datagram.
    pub encap: u8,
    /// [`VARY_DST`] or [`VARY_SRC`].
    pub vary: u8,
    /// Ports of the inner (or only) UDP header.
    pub udp_src_port: u16,
    pub udp_dst_port: u16,
    /// Ports of the outer UDP header with [`ENCAP_UDP`] (the tunnel's far end and the home
    /// agent's registration port).
    pub tunnel_src_port: u16,
    pub tunnel_dst_port: u16,
}
const _: () = assert!(size_of::<GenConfig>() == 48);

/// Where the XDP_REDIRECT baseline sends frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdConfig {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}
const _: () = assert!(size_of::<FwdConfig>() == 16);

/// What a correct frame at the sink looks like.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkConfig {
    /// Expected frame length, Ethernet header included.
    pub frame_len: u16,
    /// Expected IP protocol of the (outer) IPv4 header.
    pub protocol: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<SinkConfig>() == 4);

/// What the sink saw, per CPU; user space sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Frames received.
    pub packets: u64,
    /// Frames whose length was not [`SinkConfig::frame_len`].
    pub wrong_len: u64,
    /// Frames that were not IPv4 with protocol [`SinkConfig::protocol`].
    pub wrong_proto: u64,
}
const _: () = assert!(size_of::<SinkStats>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all four): `#[repr(C)]`, only integer and byte-array fields, explicit padding so
    // every byte is initialised, valid for any bit pattern.
    unsafe impl aya::Pod for super::GenConfig {}
    unsafe impl aya::Pod for super::FwdConfig {}
    unsafe impl aya::Pod for super::SinkConfig {}
    unsafe impl aya::Pod for super::SinkStats {}
}
