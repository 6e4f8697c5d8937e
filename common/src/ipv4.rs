//! IPv4 header arithmetic for the tunnels (DESIGN.md §4: it lives here, as plain functions, so
//! it is unit-tested on the host and not only through the verifier).
//!
//! Everything works on byte arrays in network order and is `#[inline(always)]` with fixed-size
//! loops, so the eBPF build unrolls it and the verifier sees no loop.

/// Length of an IPv4 header without options (RFC 791 §3.1).
pub const HEADER_LEN: usize = 20;
/// IP protocol number of IP-in-IP (RFC 2003 §3).
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ESP (RFC 4303).
pub const PROTO_ESP: u8 = 50;
/// Flags/fragment-offset word: Don't Fragment.
pub const DF: u16 = 0x4000;
/// Flags/fragment-offset word: More Fragments.
pub const MF: u16 = 0x2000;
/// Flags/fragment-offset word: the offset bits.
pub const OFFSET_MASK: u16 = 0x1fff;
/// TTL of headers we originate (outer tunnel headers, ICMP errors): Linux's default
/// (`IPDEFTTL`), "appropriate for delivery to the tunnel exit point" (RFC 2003 §3.1).
pub const DEFAULT_TTL: u8 = 64;

/// Byte offsets inside an IPv4 header.
pub mod field {
    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Folds a 32-bit one's-complement sum to 16 bits and complements it: the Internet checksum
/// (RFC 1071) of whatever was summed.
#[inline(always)]
pub const fn fold_complement(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The one's-complement sum of a 20-byte header, as 16-bit big-endian words, unfolded.
#[inline(always)]
pub const fn sum_header(header: &[u8; HEADER_LEN]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < HEADER_LEN {
        sum += u16::from_be_bytes([header[i], header[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Computes and stores the header checksum of an option-less header.
#[inline(always)]
pub const fn set_checksum(header: &mut [u8; HEADER_LEN]) {
    header[field::CHECKSUM] = 0;
    header[field::CHECKSUM + 1] = 0;
    let ck = fold_complement(sum_header(header)).to_be_bytes();
    header[field::CHECKSUM] = ck[0];
    header[field::CHECKSUM + 1] = ck[1];
}

/// The Internet checksum (RFC 1071) of `data`, odd lengths padded with a zero byte: 0 when
/// `data` includes a correct checksum field. For the control plane (any length, a loop).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let (words, rest) = data.as_chunks::<2>();
    for w in words {
        sum += u32::from(u16::from_be_bytes(*w));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    fold_complement(sum)
}

/// Whether an option-less header's checksum verifies (the sum over it folds to zero).
pub const fn checksum_ok(header: &[u8; HEADER_LEN]) -> bool {
    fold_complement(sum_header(header)) == 0
}

/// Decrements the TTL in place and patches the checksum incrementally (RFC 1624 eqn. 3), as a
/// router does when it forwards. The caller has checked `ttl > 1`.
///
/// TTL is the high byte of the 16-bit word it shares with Protocol, so the word drops by 0x0100.
#[inline(always)]
pub const fn decrement_ttl(ttl: &mut u8, checksum: &mut [u8; 2]) {
    let old = u16::from_be_bytes(*checksum);
    // HC' = ~(~HC + ~m + m'), with m' = m - 0x0100: ~m + m' = 0xffff - 0x0100 = 0xfeff.
    let sum = (!old) as u32 + 0xfeff;
    *checksum = fold_complement(sum).to_be_bytes();
    *ttl -= 1;
}

/// What the encapsulator copies from the inner header (RFC 2003 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// TOS byte, copied to the outer header.
    pub tos: u8,
    /// The inner flags/fragment-offset word; only DF is looked at.
    pub flags_frag: u16,
    /// The inner datagram's Total Length.
    pub total_len: u16,
}

/// Builds the outer header of an IP-in-IP tunnel packet (RFC 2003 §3.1):
///
/// - TOS copied from the inner header;
/// - Total Length covering the outer header, the inner header and its payload;
/// - DF set if and only if the inner header has it (MUST when set; when clear we leave it clear
///   so the packet can still be fragmented on the way, as the sender allowed);
/// - a fresh Identification (`ident`), offset 0;
/// - TTL [`DEFAULT_TTL`], Protocol 4, the checksum;
/// - source: the tunnel entry point, destination: the tunnel exit point; no options.
///
/// Returns `None` if the result would exceed 65535 bytes.
#[inline(always)]
pub const fn ipip_header(
    inner: Inner,
    ident: u16,
    src: [u8; 4],
    dst: [u8; 4],
) -> Option<[u8; HEADER_LEN]> {
    let Some(total) = inner.total_len.checked_add(HEADER_LEN as u16) else {
        return None;
    };
    Some(header(
        inner.tos,
        total,
        ident,
        inner.flags_frag & DF,
        PROTO_IPIP,
        src,
        dst,
    ))
}

/// Length of a UDP header (RFC 768).
pub const UDP_HLEN: usize = 8;
/// Length of the MIP Tunnel Data message header (RFC 3519 §3.3).
pub const MIP_TUNNEL_HLEN: usize = 4;
/// Mobile IP message type of a tunnel data message (RFC 3519 §3.3).
pub const MIP_TUNNEL_DATA: u8 = 4;
/// Everything RFC 3519 IP-in-UDP encapsulation puts before the inner datagram (§4.2): outer
/// IPv4 header, UDP header, MIP Tunnel Data header.
pub const UDP_TUNNEL_LEN: usize = HEADER_LEN + UDP_HLEN + MIP_TUNNEL_HLEN;

/// Builds the headers of an RFC 3519 IP-in-UDP tunnel packet (§4.2: "analogous to ... RFC
/// 2003", plus a UDP header and a MIP Tunnel Data header with Next Header 4):
///
/// - the outer IPv4 header as [`ipip_header`] builds it (TOS and DF copied, fresh
///   Identification, TTL 64), but with Protocol 17;
/// - UDP from `sport` to `dport` (the registration's ports, §2) with a zero checksum: RFC 768
///   lets IPv4 senders omit it, as VXLAN and ESP-in-UDP (RFC 3948 §2.1) do, and the inner
///   datagram carries its own checksums;
/// - Type 4, Next Header 4, Reserved 0.
///
/// Returns `None` if the result would exceed 65535 bytes.
#[inline(always)]
pub const fn udp_tunnel_header(
    inner: Inner,
    ident: u16,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> Option<[u8; UDP_TUNNEL_LEN]> {
    let Some(total) = inner.total_len.checked_add(UDP_TUNNEL_LEN as u16) else {
        return None;
    };
    let ip = header(
        inner.tos,
        total,
        ident,
        inner.flags_frag & DF,
        PROTO_UDP,
        src,
        dst,
    );
    let sp = sport.to_be_bytes();
    let dp = dport.to_be_bytes();
    let ul = (total - HEADER_LEN as u16).to_be_bytes();
    let mut h = [0u8; UDP_TUNNEL_LEN];
    let mut i = 0;
    while i < HEADER_LEN {
        h[i] = ip[i];
        i += 1;
    }
    h[20] = sp[0];
    h[21] = sp[1];
    h[22] = dp[0];
    h[23] = dp[1];
    h[24] = ul[0];
    h[25] = ul[1];
    // h[26..28]: UDP checksum 0 (none).
    h[28] = MIP_TUNNEL_DATA;
    h[29] = PROTO_IPIP;
    // h[30..32]: Reserved.
    Some(h)
}

/// Builds an option-less IPv4 header with TTL [`DEFAULT_TTL`] and a valid checksum.
#[inline(always)]
pub const fn header(
    tos: u8,
    total_len: u16,
    ident: u16,
    flags_frag: u16,
    protocol: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; HEADER_LEN] {
    let total = total_len.to_be_bytes();
    let id = ident.to_be_bytes();
    let ff = flags_frag.to_be_bytes();
    let mut h = [
        0x45,
        tos,
        total[0],
        total[1],
        id[0],
        id[1],
        ff[0],
        ff[1],
        DEFAULT_TTL,
        protocol,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    set_checksum(&mut h);
    h
}

/// Length of an ICMP Destination Unreachable message quoting an option-less header:
/// type, code, checksum, unused, next-hop MTU (8) + the header (20) + 64 bits of data (8)
/// (RFC 792, RFC 1191 §4).
pub const ICMP_FRAG_NEEDED_LEN: usize = 8 + HEADER_LEN + 8;

/// The 8-byte ICMP header of a "Fragmentation Needed and DF set" message (type 3, code 4)
/// carrying `next_hop_mtu` (RFC 1191 §4), with the checksum computed over itself and `quote`
/// (the offending datagram's header and first 8 payload bytes).
#[inline(always)]
pub const fn icmp_frag_needed(next_hop_mtu: u16, quote: &[u8; HEADER_LEN + 8]) -> [u8; 8] {
    let mtu = next_hop_mtu.to_be_bytes();
    let mut sum = 0x0304u32 + next_hop_mtu as u32;
    let mut i = 0;
    while i < HEADER_LEN + 8 {
        sum += u16::from_be_bytes([quote[i], quote[i + 1]]) as u32;
        i += 2;
    }
    let ck = fold_complement(sum).to_be_bytes();
    [3, 4, ck[0], ck[1], 0, 0, mtu[0], mtu[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3 / the classic example header from Wikipedia's "IPv4 header checksum"
    /// article: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
    const EXAMPLE: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn checksum_of_known_header() {
        let mut h = EXAMPLE;
        set_checksum(&mut h);
        assert_eq!(h, EXAMPLE);
        assert!(checksum_ok(&EXAMPLE));
    }

    #[test]
    fn ttl_decrement_matches_recomputation() {
        for ttl in 2..=255u8 {
            for proto in [1u8, 4, 6, 17, 255] {
                let mut h = EXAMPLE;
                h[field::TTL] = ttl;
                h[field::PROTOCOL] = proto;
                set_checksum(&mut h);
                let mut ck = [h[field::CHECKSUM], h[field::CHECKSUM + 1]];
                let mut t = ttl;
                decrement_ttl(&mut t, &mut ck);
                let mut expect = h;
                expect[field::TTL] = ttl - 1;
                set_checksum(&mut expect);
                assert_eq!(t, ttl - 1);
                // One's complement has two zeros; both verify, so compare by verification.
                let mut got = expect;
                got[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&ck);
                assert!(checksum_ok(&got), "ttl {ttl} proto {proto}");
            }
        }
    }

    #[test]
    fn ipip_copies_tos_and_df_only() {
        let inner = Inner {
            tos: 0xb8,
            flags_frag: DF | MF | 0x0123,
            total_len: 84,
        };
        let h = ipip_header(inner, 0x1234, [10, 1, 0, 2], [10, 2, 0, 100]).unwrap();
        assert_eq!(h[field::TOS], 0xb8);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 104);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), DF, "only DF is copied");
        assert_eq!(h[field::TTL], DEFAULT_TTL);
        assert_eq!(h[field::PROTOCOL], PROTO_IPIP);
        assert_eq!(&h[12..16], &[10, 1, 0, 2]);
        assert_eq!(&h[16..20], &[10, 2, 0, 100]);
        assert!(checksum_ok(&h));

        let no_df = Inner {
            flags_frag: 0,
            ..inner
        };
        let h = ipip_header(no_df, 1, [1; 4], [2; 4]).unwrap();
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), 0);
        assert!(
            ipip_header(
                Inner {
                    total_len: 65_516,
                    ..inner
                },
                1,
                [1; 4],
                [2; 4]
            )
            .is_none()
        );
    }

    #[test]
    fn udp_tunnel_header_layout() {
        let inner = Inner {
            tos: 0x10,
            flags_frag: DF,
            total_len: 84,
        };
        let h = udp_tunnel_header(inner, 7, [10, 1, 0, 2], [198, 51, 100, 1], 434, 40_000).unwrap();
        let ip: [u8; 20] = h[..20].try_into().unwrap();
        assert!(checksum_ok(&ip));
        assert_eq!(ip[field::PROTOCOL], PROTO_UDP);
        assert_eq!(ip[field::TOS], 0x10);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 84 + 32);
        assert_eq!(u16::from_be_bytes([ip[6], ip[7]]), DF);
        assert_eq!(&h[20..28], &[0x01, 0xb2, 0x9c, 0x40, 0, 84 + 12, 0, 0]);
        assert_eq!(&h[28..32], &[4, 4, 0, 0]);
        let big = Inner {
            total_len: 65_504,
            ..inner
        };
        assert!(udp_tunnel_header(big, 1, [1; 4], [2; 4], 1, 2).is_none());
    }

    #[test]
    fn icmp_checksum_verifies() {
        let quote: [u8; 28] = core::array::from_fn(|i| (i * 37) as u8);
        let icmp = icmp_frag_needed(1480, &quote);
        let mut sum = 0u32;
        for w in icmp.chunks(2).chain(quote.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(fold_complement(sum), 0);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
    }
}
