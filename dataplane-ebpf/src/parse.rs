//! Kernel-side header views and the one bounds-checked accessor into XDP packet memory.
//!
//! DESIGN.md §1.2: the verifier does not accept Rust slices over packet memory, so every read
//! goes through [`ptr_at`], which proves `data + offset + size_of::<T>() <= data_end` before
//! handing out a pointer. Header types are `#[repr(C)]` with byte-array fields only, so they have
//! alignment 1 (packet data carries no alignment guarantee) and no byte-order surprises: the
//! caller converts with `u16::from_be_bytes` at the point of use.

use core::mem::size_of;

use mipx_common::ipv4;

use aya_ebpf::{
    EbpfContext as _,
    programs::{TcContext, XdpContext},
};

/// Length of an Ethernet II header (no VLAN tags: a tagged frame is "not IPv4" for now).
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4 (IEEE 802 numbers, RFC 894).
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of ARP (RFC 826).
pub const ETH_P_ARP: u16 = 0x0806;
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

impl Ipv4Hdr {
    /// The flags/fragment-offset word.
    #[inline(always)]
    pub const fn flags_frag(&self) -> u16 {
        u16::from_be_bytes(self.flags_frag_off)
    }

    /// What an encapsulator copies from this header into the outer one (RFC 2003 §3.1).
    #[inline(always)]
    pub const fn as_inner(&self) -> ipv4::Inner {
        ipv4::Inner {
            tos: self.tos,
            flags_frag: self.flags_frag(),
            total_len: self.total_len(),
        }
    }

    /// Copies the header at `p` (packet memory) onto the stack, one field at a time: a
    /// whole-struct copy from an alignment-1 source becomes a call to a byte-loop `memmove`.
    ///
    /// # Safety
    /// `p` must point at 20 readable bytes (checked with [`Packet::ptr_at`]).
    #[inline(always)]
    pub unsafe fn read(p: *const Ipv4Hdr) -> Aligned<Ipv4Hdr> {
        // SAFETY: the caller guarantees `p` is readable; alignment 1.
        let p = unsafe { &*p };
        Aligned(Ipv4Hdr {
            version_ihl: p.version_ihl,
            tos: p.tos,
            total_len: p.total_len,
            identification: p.identification,
            flags_frag_off: p.flags_frag_off,
            ttl: p.ttl,
            protocol: p.protocol,
            checksum: p.checksum,
            src_addr: p.src_addr,
            dst_addr: p.dst_addr,
        })
    }

    /// Whether this is a fragment (MF set or a non-zero offset).
    #[inline(always)]
    pub const fn is_fragment(&self) -> bool {
        self.flags_frag() & (ipv4::MF | ipv4::OFFSET_MASK) != 0
    }
}

/// The UDP and MIP Tunnel Data headers of an IP-in-UDP packet (RFC 3519 §3.3), read together
/// by both ends of the tunnel.
#[repr(C)]
pub struct UdpTunnelHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub _checksum: [u8; 2],
    pub kind: u8,
    pub next_header: u8,
    pub _reserved: [u8; 2],
}
const _: () = assert!(size_of::<UdpTunnelHdr>() == 12);

/// An ARP packet for IPv4 over Ethernet (RFC 826): the only kind the home agent answers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}
const _: () = assert!(size_of::<ArpHdr>() == 28);

/// A header copied out of the packet onto the stack, 8-byte aligned.
///
/// Header types have alignment 1 (packet data carries no alignment guarantee), so LLVM
/// accesses their stack copies byte by byte and moves them with calls to a byte-loop
/// `memmove` subprogram. Wrapped in this, a copy gets an aligned slot, each field sits at its
/// natural alignment (a header field's offset is a multiple of its size), and the copy and
/// every later read are whole-word instructions.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Aligned<T>(pub T);

impl<T> core::ops::Deref for Aligned<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for Aligned<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The front of a tunnel packet: the Ethernet header and `HLEN` bytes of tunnel headers (a
/// struct, because a const parameter cannot size an array as `ETH_HLEN + HLEN`).
#[repr(C)]
pub struct Front<const HLEN: usize> {
    pub eth: [u8; ETH_HLEN],
    pub tunnel: [u8; HLEN],
}

/// The packet is shorter than the header asked for.
pub struct OutOfBounds;

/// A context with direct packet access: `[data, data_end)` is the linear packet.
pub trait Packet {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;

    /// Returns a pointer to a `T` at `offset` bytes into the packet, after checking that the
    /// whole `T` lies inside `[data, data_end)`.
    ///
    /// This is the only place that turns packet offsets into pointers. The comparison must be
    /// against `data_end` itself (not a length computed from it) so the verifier can mark the
    /// range as safe to read. Always inlined: a BPF-to-BPF call would lose the packet-pointer
    /// range the verifier tracks in the caller.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Result<*mut T, OutOfBounds> {
        // One read of `data`: the checked pointer and the returned one must be the same
        // register for the verifier to carry the range over.
        let start = self.data() + offset;
        if start + size_of::<T>() > self.data_end() {
            return Err(OutOfBounds);
        }
        Ok(start as *mut T)
    }

    /// Whether `len` bytes starting `offset` bytes into the packet lie inside the packet.
    ///
    /// A yes/no answer only: it proves nothing to the verifier, so reads still go through
    /// [`ptr_at`]. Compared as lengths (`data_end - data`, a scalar), not as a packet pointer
    /// plus `len`, because `len` is usually a header field: LLVM loads it with a byte swap, and
    /// the verifier of Linux 6.1 does not track bounds through `BPF_END`, so it refuses to add
    /// the resulting unbounded scalar to a packet pointer ("math between pkt pointer and
    /// register with unbounded min value"). Pointer minus pointer needs `CAP_PERFMON`, which
    /// the loader (root) has.
    #[inline(always)]
    fn fits(&self, offset: usize, len: usize) -> bool {
        offset + len <= self.data_end() - self.data()
    }
}

impl Packet for XdpContext {
    // Volatile reads of the context fields: after `bpf_xdp_adjust_head` LLVM otherwise may
    // merge the reload with earlier values and zero-extend the 32-bit load with shifts, which
    // the verifier refuses on a packet pointer ("pointer arithmetic with <<= prohibited").
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: `ctx` is the program's live `xdp_md`; the verifier rewrites the load.
        unsafe { core::ptr::read_volatile(&raw const (*self.ctx).data) as usize }
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.ctx).data_end) as usize }
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

/// The ifindex a TC program runs on (`__sk_buff::ifindex`).
#[inline(always)]
pub fn skb_ifindex(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr() as *const aya_ebpf::bindings::__sk_buff;
    // SAFETY: the context pointer of a TC program is a live `__sk_buff`; the verifier rewrites
    // this field load into a read of the real `sk_buff`.
    unsafe { (*skb).ifindex }
}

/// `__sk_buff::gso_size`: non-zero for a GSO super-packet that the stack segments later.
#[inline(always)]
pub fn skb_gso_size(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr() as *const aya_ebpf::bindings::__sk_buff;
    // SAFETY: as in `skb_ifindex`.
    unsafe { (*skb).gso_size }
}
