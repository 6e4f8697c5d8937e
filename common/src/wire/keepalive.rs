//! RFC 3519 §4.9 keepalives: "a properly UDP encapsulated ICMP echo request directed to the
//! home agent", and its answer. On the registration's UDP ports the datagram is a MIP Tunnel
//! Data message (type 4, Next Header 4) carrying an option-less IPv4 header and an ICMP echo.

use core::net::Ipv4Addr;

use super::{Error, Result, TunnelDataPacket};
use crate::ipv4;

/// ICMP Echo Reply / Echo Request types (RFC 792).
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// Offsets after the 4-byte Tunnel Data header.
const IP: usize = ipv4::MIP_TUNNEL_HLEN;
const ICMP: usize = IP + ipv4::HEADER_LEN;
/// Type, code, checksum.
const ICMP_HLEN: usize = 4;

/// A keepalive or its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveRepr<'a> {
    /// Inner source and destination: the home address and the home agent (or the reverse).
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Identification of the inner IPv4 header.
    pub ip_id: u16,
    /// [`ICMP_ECHO_REQUEST`] or [`ICMP_ECHO_REPLY`].
    pub icmp_type: u8,
    /// Everything after the ICMP checksum: identifier, sequence number and data, which an
    /// answer carries back unchanged (RFC 792).
    pub echo: &'a [u8],
}

impl<'a> KeepaliveRepr<'a> {
    /// Parses a tunnel data message carrying an ICMP echo (request or reply) in an option-less,
    /// unfragmented IPv4 header with valid IPv4 and ICMP checksums; bytes after the IPv4 Total
    /// Length are ignored. Anything else is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let data = TunnelDataPacket::new_checked(bytes)?;
        if data.next_header() != ipv4::PROTO_IPIP {
            return Err(Error::BadLength);
        }
        let header: &[u8; ipv4::HEADER_LEN] = bytes
            .get(IP..ICMP)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let flags_frag = u16::from_be_bytes([header[6], header[7]]);
        if header[0] != 0x45
            || flags_frag & (ipv4::MF | ipv4::OFFSET_MASK) != 0
            || header[ipv4::field::PROTOCOL] != ipv4::PROTO_ICMP
            || !ipv4::checksum_ok(header)
            || total < ipv4::HEADER_LEN + ICMP_HLEN + 4
        {
            return Err(Error::BadLength);
        }
        let icmp = bytes.get(ICMP..IP + total).ok_or(Error::Truncated)?;
        let icmp_type = icmp[0];
        if !matches!(icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)
            || icmp[1] != 0
            || ipv4::checksum(icmp) != 0
        {
            return Err(Error::BadLength);
        }
        let addr =
            |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
        Ok(KeepaliveRepr {
            src: addr(ipv4::field::SRC),
            dst: addr(ipv4::field::DST),
            ip_id: u16::from_be_bytes([header[4], header[5]]),
            icmp_type,
            echo: &icmp[ICMP_HLEN..],
        })
    }

    /// The ICMP identifier and sequence number, if the echo has them.
    pub fn id_seq(&self) -> Option<(u16, u16)> {
        let e = self.echo.get(..4)?;
        Some((
            u16::from_be_bytes([e[0], e[1]]),
            u16::from_be_bytes([e[2], e[3]]),
        ))
    }

    pub fn buffer_len(&self) -> usize {
        ICMP + ICMP_HLEN + self.echo.len()
    }

    /// Writes the message (Tunnel Data header, IPv4 header with TTL 64, ICMP with checksums)
    /// and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let total = u16::try_from(len - IP).map_err(|_| Error::BadLength)?;
        let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        out[..IP].copy_from_slice(&[ipv4::MIP_TUNNEL_DATA, ipv4::PROTO_IPIP, 0, 0]);
        out[IP..ICMP].copy_from_slice(&ipv4::header(
            0,
            total,
            self.ip_id,
            0,
            ipv4::PROTO_ICMP,
            self.src.octets(),
            self.dst.octets(),
        ));
        out[ICMP..ICMP + ICMP_HLEN].copy_from_slice(&[self.icmp_type, 0, 0, 0]);
        out[ICMP + ICMP_HLEN..].copy_from_slice(self.echo);
        let ck = ipv4::checksum(&out[ICMP..]).to_be_bytes();
        out[ICMP + 2..ICMP + 4].copy_from_slice(&ck);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keepalive as scapy builds it: MobileIP(type=4)/MobileIPTunnelData(nexthdr=4)/
    /// IP(src="10.1.0.100", dst="10.1.0.2", id=1)/ICMP(type=8, id=0x6d78, seq=1).
    const SCAPY: [u8; 32] = [
        0x04, 0x04, 0x00, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x66,
        0x79, 0x0a, 0x01, 0x00, 0x64, 0x0a, 0x01, 0x00, 0x02, 0x08, 0x00, 0x8a, 0x86, 0x6d, 0x78,
        0x00, 0x01,
    ];

    #[test]
    fn parses_and_emits_a_keepalive() {
        let k = KeepaliveRepr::parse(&SCAPY).unwrap();
        assert_eq!(
            (k.src, k.dst, k.icmp_type, k.id_seq()),
            (
                Ipv4Addr::new(10, 1, 0, 100),
                Ipv4Addr::new(10, 1, 0, 2),
                ICMP_ECHO_REQUEST,
                Some((0x6d78, 1))
            )
        );
        let mut out = [0u8; 32];
        assert_eq!(k.emit(&mut out), Ok(32));
        assert_eq!(out, SCAPY);
        assert_eq!(k.emit(&mut [0u8; 31]), Err(Error::BufferTooSmall));
    }

    #[test]
    fn rejects_every_corruption() {
        for n in 0..SCAPY.len() {
            assert!(KeepaliveRepr::parse(&SCAPY[..n]).is_err(), "cut at {n}");
        }
        for i in (0..SCAPY.len()).filter(|i| !(2..4).contains(i)) {
            let mut bad = SCAPY;
            bad[i] ^= 0x10;
            assert!(KeepaliveRepr::parse(&bad).is_err(), "bit flip in byte {i}");
        }
        // The Tunnel Data header's Reserved bytes are ignored (RFC 3519 §3.3).
        let mut reserved = SCAPY;
        reserved[2] = 0xff;
        assert!(KeepaliveRepr::parse(&reserved).is_ok());
    }
}
