//! Kernel-side header views and the one bounds-checked accessor into XDP packet memory.
//!
//! DESIGN.md §1.2: the verifier does not accept Rust slices over packet memory, so every read
//! goes through [`ptr_at`], which proves `data + offset + size_of::<T>() <= data_end` before
//! handing out a pointer. Header types are `#[repr(C)]` with byte-array fields only, so they have
//! alignment 1 (packet data carries no alignment guarantee) and no byte-order surprises: the
//! caller converts with `u16::from_be_bytes` at the point of use.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// Length of an Ethernet II header (no VLAN tags: a tagged frame is "not IPv4" for now).
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4 (IEEE 802 numbers, RFC 894).
pub const ETH_P_IP: u16 = 0x0800;
/// Minimum IPv4 header length in 32-bit words (RFC 791 §3.1: IHL >= 5).
pub const IPV4_MIN_IHL: u8 = 5;

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// EtherType, network byte order.
    pub ether_type: [u8; 2],
}

/// Fixed part of an IPv4 header (RFC 791 §3.1); options, if any, follow it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and IHL in 32-bit words (low nibble).
    pub version_ihl: u8,
    pub tos: u8,
    /// Total length of the datagram in bytes, header included, network byte order.
    pub total_len: [u8; 2],
    pub identification: [u8; 2],
    pub flags_frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
}

const _: () = assert!(size_of::<EthHdr>() == ETH_HLEN);
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::align_of::<Ipv4Hdr>() == 1);

impl Ipv4Hdr {
    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in 32-bit words.
    #[inline(always)]
    pub const fn ihl(&self) -> u8 {
        self.version_ihl & 0x0f
    }

    #[inline(always)]
    pub const fn total_len(&self) -> u16 {
        u16::from_be_bytes(self.total_len)
    }
}

/// The packet is shorter than the header asked for.
pub struct OutOfBounds;

/// Returns a pointer to a `T` at `offset` bytes into the packet, after checking that the whole
/// `T` lies inside `[data, data_end)`.
///
/// This is the only place that turns packet offsets into pointers. The comparison must be
/// against `data_end` itself (not a length computed from it) so the verifier can mark the range
/// as safe to read. Always inlined: a BPF-to-BPF call would lose the packet-pointer range the
/// verifier tracks in the caller.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, OutOfBounds> {
    if !fits(ctx, offset, size_of::<T>()) {
        return Err(OutOfBounds);
    }
    Ok((ctx.data() + offset) as *const T)
}

/// Whether `len` bytes starting `offset` bytes into the packet lie inside the packet.
///
/// Written as `data + offset + len <= data_end`, a packet pointer compared with the end pointer,
/// because that is the form the verifier understands; `data_end - data` (pointer minus pointer)
/// is rejected for unprivileged loaders and tells the verifier nothing about the range.
#[inline(always)]
pub fn fits(ctx: &XdpContext, offset: usize, len: usize) -> bool {
    ctx.data() + offset + len <= ctx.data_end()
}
