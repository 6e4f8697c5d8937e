//! Link-layer I/O for agent discovery and for a foreign agent's side of registration, through
//! an `AF_PACKET` socket bound to one interface.
//!
//! Why not the kernel's UDP and ICMP sockets: a foreign agent must learn the link-layer source
//! of each Registration Request and send the Reply to that address without ARPing for the home
//! address (RFC 5944 §3.7.2, §3.7.3.2, §4.6), check the request's IP TTL (RFC 3024 §4.2: 255,
//! else code 76), answer Agent Solicitations with a unicast frame to the soliciting link-layer
//! address (§2.1), and send advertisements with TTL 1 to 224.0.0.1 or 255.255.255.255 (§2.1).
//! A mobile node hears advertisements the same way and sends solicitations to 224.0.0.11.
//!
//! A classic BPF filter on the socket keeps everything else (the visitors' forwarded traffic)
//! out of user space; frames this host sends are skipped.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use mipx_common::ipv4::checksum;
use tokio::io::unix::AsyncFd;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
/// The Mobile IP registration port (RFC 5944 §3.3).
const MIP_PORT: u16 = mipx_common::wire::MIP_PORT;
/// ICMP Router Advertisement / Solicitation (RFC 1256), i.e. Agent Advertisement / Solicitation
/// (RFC 5944 §2.1, §2.2).
const ICMP_ROUTER_ADVERTISEMENT: u8 = 9;
const ICMP_ROUTER_SOLICITATION: u8 = 10;
/// Where mobile nodes solicit (RFC 5944 §2.3) and agents advertise (§2.1).
const MOBILE_AGENTS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 11);
const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);

/// Which frames a socket takes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFilter {
    /// A mobility agent: unfragmented UDP to port 434 (Registration Requests) and ICMP
    /// Router/Agent Solicitations.
    Agent,
    /// A mobile node: ICMP Router/Agent Advertisements.
    MobileNode,
}

/// One classic BPF instruction (`struct sock_filter`).
const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

// Classic BPF opcodes used below.
const LDH_ABS: u16 = 0x28; // A = half word at k
const LDB_ABS: u16 = 0x30; // A = byte at k
const LDH_IND: u16 = 0x48; // A = half word at X + k
const LDB_IND: u16 = 0x50; // A = byte at X + k
const LDX_MSH: u16 = 0xb1; // X = 4 * (byte at k & 0xf): the IPv4 header length
const JEQ: u16 = 0x15;
const JSET: u16 = 0x45;
const RET: u16 = 0x06;
/// Whole frame.
const ACCEPT: u32 = 0x0004_0000;

/// `ip and ((udp dst port 434 and not a fragment) or icmp[icmptype] == 10)` (tcpdump's
/// compilation, checked with `tcpdump -d`): non-first fragments have no UDP header to look at,
/// and a fragmented request is not something a mobile node sends (it fits one frame).
const AGENT_FILTER: [libc::sock_filter; 15] = [
    op(LDH_ABS, 0, 0, 12),                          // 0: EtherType
    op(JEQ, 0, 12, ETH_P_IP as u32),                // 1: IPv4, else 14
    op(LDH_ABS, 0, 0, 20),                          // 2: flags + fragment offset
    op(JSET, 10, 0, 0x3fff),                        // 3: MF or an offset: drop (14)
    op(LDB_ABS, 0, 0, 23),                          // 4: protocol
    op(LDX_MSH, 0, 0, 14),                          // 5: X = IP header length
    op(JEQ, 0, 3, IPPROTO_UDP as u32),              // 6: UDP, else 10
    op(LDH_IND, 0, 0, 14 + 2),                      // 7: UDP destination port
    op(JEQ, 4, 5, MIP_PORT as u32),                 // 8: 434: accept (13), else drop (14)
    op(RET, 0, 0, 0),                               // 9: (unreached)
    op(JEQ, 0, 3, IPPROTO_ICMP as u32),             // 10: ICMP, else 14
    op(LDB_IND, 0, 0, 14),                          // 11: ICMP type
    op(JEQ, 0, 1, ICMP_ROUTER_SOLICITATION as u32), // 12: solicitation: 13, else 14
    op(RET, 0, 0, ACCEPT),                          // 13
    op(RET, 0, 0, 0),                               // 14
];

/// `ip and icmp[icmptype] == 9 and not a fragment`.
const MOBILE_NODE_FILTER: [libc::sock_filter; 11] = [
    op(LDH_ABS, 0, 0, 12),                           // 0: EtherType
    op(JEQ, 0, 7, ETH_P_IP as u32),                  // 1: IPv4, else 9
    op(LDH_ABS, 0, 0, 20),                           // 2: flags + fragment offset
    op(JSET, 5, 0, 0x3fff),                          // 3: fragment: 9
    op(LDB_ABS, 0, 0, 23),                           // 4: protocol
    op(JEQ, 0, 3, IPPROTO_ICMP as u32),              // 5: ICMP, else 9
    op(LDX_MSH, 0, 0, 14),                           // 6: X = IP header length
    op(LDB_IND, 0, 0, 14),                           // 7: ICMP type
    op(JEQ, 1, 0, ICMP_ROUTER_ADVERTISEMENT as u32), // 8: advertisement: 10, else 9
    op(RET, 0, 0, 0),                                // 9
    op(RET, 0, 0, ACCEPT),                           // 10
];

/// An `AF_PACKET` socket on one interface.
pub struct LinkSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl LinkSocket {
    /// Opens a socket that receives the frames `filter` selects on `ifindex` and sends on it.
    /// It also joins the link-layer multicast group the role listens to (224.0.0.11 for an
    /// agent, 224.0.0.1 for a mobile node), which NICs otherwise filter out.
    pub fn open(ifindex: u32, filter: LinkFilter) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program: &[libc::sock_filter] = match filter {
            LinkFilter::Agent => &AGENT_FILTER,
            LinkFilter::MobileNode => &MOBILE_NODE_FILTER,
        };
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // Attach the filter before binding, so no unfiltered frame is queued in between.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: `addr` is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let group = match filter {
            LinkFilter::Agent => multicast_mac(MOBILE_AGENTS),
            LinkFilter::MobileNode => multicast_mac(ALL_SYSTEMS),
        };
        // SAFETY: all-zero is a valid `packet_mreq`.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = addr.sll_ifindex;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&group);
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        // SAFETY: `fd` is an open descriptor that the `AsyncFd` owns from here on, so it stays
        // the same open socket for the `AsyncFd`'s whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(LinkSocket { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The next frame that arrived from the link (frames this host sent are skipped), with its
    /// Ethernet header, into `buf`; its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                // SAFETY: all-zero is a valid `sockaddr_ll`.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: `buf` and `from` are live and their lengths are passed exactly.
                let n = unsafe {
                    libc::recvfrom(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok((n as usize, from.sll_pkttype))
            }) {
                Ok(Ok((_, pkttype))) if pkttype == libc::PACKET_OUTGOING => continue,
                Ok(Ok((n, _))) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a whole Ethernet frame on the interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < ETH_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "short frame"));
        }
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_IP.to_be();
        to.sll_ifindex = i32::try_from(self.ifindex).map_err(io::Error::other)?;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `frame` and `to` are live and their lengths are passed exactly.
                let n = unsafe {
                    libc::sendto(
                        fd.get_ref().as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` whose size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The Ethernet address of an IPv4 multicast group (RFC 1112 §6.4: 01:00:5e and the group's
/// low 23 bits).
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The link-layer destination for an IPv4 destination that needs no ARP: multicast and the
/// limited broadcast.
pub fn group_mac(dst: Ipv4Addr) -> Option<[u8; 6]> {
    if dst.is_multicast() {
        Some(multicast_mac(dst))
    } else if dst.is_broadcast() {
        Some([0xff; 6])
    } else {
        None
    }
}

/// What a received frame carries, for the protocol engines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: Payload<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// UDP with its ports; the data after the UDP header.
    Udp {
        src_port: u16,
        dst_port: u16,
        data: &'a [u8],
    },
    /// The whole ICMP message (from its Type byte), checksum verified.
    Icmp(&'a [u8]),
}

/// Parses an Ethernet/IPv4 frame with a UDP or ICMP payload; `None` for anything malformed:
/// a short frame, a bad header checksum or length, a fragment, a bad ICMP checksum, a UDP
/// length that disagrees, or another protocol. The UDP checksum is verified when present.
pub fn parse(frame: &[u8]) -> Option<Received<'_>> {
    let eth = frame.get(..ETH_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < ihl || total > ip.len() || checksum(&ip[..ihl]) != 0 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let body = &ip[ihl..total];
    let payload = match ip[9] {
        IPPROTO_UDP => {
            let h = body.get(..8)?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if len < 8 || len > body.len() {
                return None;
            }
            let udp = &body[..len];
            if u16::from_be_bytes([h[6], h[7]]) != 0 && udp_checksum(src, dst, udp) != 0 {
                return None;
            }
            Payload::Udp {
                src_port: u16::from_be_bytes([h[0], h[1]]),
                dst_port: u16::from_be_bytes([h[2], h[3]]),
                data: &udp[8..],
            }
        }
        IPPROTO_ICMP => {
            if body.len() < 4 || checksum(body) != 0 {
                return None;
            }
            Payload::Icmp(body)
        }
        _ => return None,
    };
    Some(Received {
        dst_mac: eth[0..6].try_into().ok()?,
        src_mac: eth[6..12].try_into().ok()?,
        src,
        dst,
        ttl: ip[8],
        payload,
    })
}

/// The UDP checksum over the pseudo-header and `udp` (header with its checksum field, and
/// data): 0 when `udp` carries a correct one.
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    checksum(&pseudo)
}

/// The addressing of a frame to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAddrs {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

/// An Ethernet/IPv4/UDP frame (no options, DF clear, Identification `id`), UDP checksum
/// computed.
pub fn udp_frame(a: FrameAddrs, id: u16, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let mut ck = udp_checksum(a.src, a.dst, &udp);
    if ck == 0 {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        ck = 0xffff;
    }
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    ip_frame(a, id, IPPROTO_UDP, &udp)
}

/// An Ethernet/IPv4/ICMP frame; `icmp` is the whole message with its checksum already set.
pub fn icmp_frame(a: FrameAddrs, id: u16, icmp: &[u8]) -> Vec<u8> {
    ip_frame(a, id, IPPROTO_ICMP, icmp)
}

/// An Agent Advertisement or Solicitation `icmp` to `dst` (RFC 5944 §2.1-2.2: TTL 1), from
/// `src_mac`/`src`, to `dst_mac` or, without one, the group's address (the limited broadcast
/// for a unicast destination whose address we do not know).
pub fn agent_discovery_frame(
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dst_mac: Option<[u8; 6]>,
    id: u16,
    icmp: &[u8],
) -> Vec<u8> {
    icmp_frame(
        FrameAddrs {
            src_mac,
            dst_mac: dst_mac.or_else(|| group_mac(dst)).unwrap_or([0xff; 6]),
            src,
            dst,
            ttl: mipx_common::wire::agent::AGENT_DISCOVERY_TTL,
        },
        id,
        icmp,
    )
}

fn ip_frame(a: FrameAddrs, id: u16, protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + 20 + body.len());
    f.extend_from_slice(&a.dst_mac);
    f.extend_from_slice(&a.src_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let total = (20 + body.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = a.ttl;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&a.src.octets());
    ip[16..20].copy_from_slice(&a.dst.octets());
    let ck = checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(body);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FrameAddrs = FrameAddrs {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: Ipv4Addr::new(10, 1, 0, 10),
        dst: Ipv4Addr::new(198, 51, 100, 1),
        ttl: 255,
    };

    #[test]
    fn udp_round_trip() {
        let f = udp_frame(A, 7, 40000, 434, b"registration");
        let r = parse(&f).expect("parses");
        assert_eq!(
            (r.src_mac, r.dst_mac, r.src, r.dst, r.ttl),
            (A.src_mac, A.dst_mac, A.src, A.dst, 255)
        );
        assert_eq!(
            r.payload,
            Payload::Udp {
                src_port: 40000,
                dst_port: 434,
                data: b"registration"
            }
        );
    }

    #[test]
    fn corrupt_frames_are_refused() {
        let good = udp_frame(A, 7, 40000, 434, b"registration");
        // A flipped data bit breaks the UDP checksum; one in the header the IP checksum.
        for at in [ETH_LEN + 28 + 3, ETH_LEN + 12] {
            let mut f = good.clone();
            f[at] ^= 0x10;
            assert_eq!(parse(&f), None, "byte {at}");
        }
        // Truncated anywhere.
        for len in 0..good.len() {
            assert_eq!(parse(&good[..len]), None, "{len} bytes");
        }
        // A fragment.
        let mut f = good.clone();
        f[ETH_LEN + 6] = 0x20; // MF
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let ck = checksum(&f[ETH_LEN..ETH_LEN + 20]);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(parse(&f), None);
    }

    #[test]
    fn icmp_checksum_is_checked() {
        let mut icmp = vec![10, 0, 0, 0, 0, 0, 0, 0];
        let ck = checksum(&icmp);
        icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        let f = icmp_frame(A, 1, &icmp);
        assert_eq!(parse(&f).unwrap().payload, Payload::Icmp(&icmp[..]));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&bad), None);
    }

    #[test]
    fn group_addresses() {
        assert_eq!(
            multicast_mac(Ipv4Addr::new(224, 0, 0, 11)),
            [0x01, 0x00, 0x5e, 0, 0, 11]
        );
        assert_eq!(group_mac(Ipv4Addr::BROADCAST), Some([0xff; 6]));
        assert_eq!(group_mac(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    /// The filters as the kernel runs them, in a tiny classic-BPF interpreter: accepted and
    /// refused frames, so a wrong jump offset fails here and not on a live link.
    fn run(filter: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |k: usize| pkt.get(k).map(|b| u32::from(*b));
        let half = |k: usize| {
            Some(u32::from(u16::from_be_bytes([
                *pkt.get(k)?,
                *pkt.get(k + 1)?,
            ])))
        };
        loop {
            let i = filter[pc];
            pc += 1;
            let k = i.k as usize;
            match i.code {
                LDH_ABS => match half(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDB_ABS => match byte(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDH_IND => match half(x as usize + k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDB_IND => match byte(x as usize + k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_MSH => match byte(k) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET => return i.k,
                other => panic!("opcode {other:#x} not modelled"),
            }
        }
    }

    #[test]
    fn filters_select_what_they_say() {
        let icmp = |t: u8| {
            let mut m = vec![t, 0, 0, 0, 0, 0, 0, 0];
            let ck = checksum(&m);
            m[2..4].copy_from_slice(&ck.to_be_bytes());
            icmp_frame(A, 1, &m)
        };
        let request = udp_frame(A, 1, 40000, 434, b"x");
        let other_udp = udp_frame(A, 1, 40000, 53, b"x");
        let mut fragment = request.clone();
        fragment[ETH_LEN + 6] = 0x20;
        let mut arp = request.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        // An IP header with options moves the UDP header: the filter follows IHL.
        let mut with_options = request[..ETH_LEN].to_vec();
        with_options.extend_from_slice(&[0x46]);
        with_options.extend_from_slice(&request[ETH_LEN + 1..ETH_LEN + 20]);
        with_options.extend_from_slice(&[1, 1, 1, 0]);
        with_options.extend_from_slice(&request[ETH_LEN + 20..]);
        let agent = &AGENT_FILTER[..];
        let mn = &MOBILE_NODE_FILTER[..];
        for (frame, agent_takes, mn_takes, what) in [
            (&request, true, false, "registration request"),
            (&with_options, true, false, "request with IP options"),
            (&icmp(10), true, false, "solicitation"),
            (&icmp(9), false, true, "advertisement"),
            (&icmp(8), false, false, "echo request"),
            (&other_udp, false, false, "DNS"),
            (&fragment, false, false, "fragment"),
            (&arp, false, false, "not IPv4"),
        ] {
            assert_eq!(run(agent, frame) != 0, agent_takes, "agent, {what}");
            assert_eq!(run(mn, frame) != 0, mn_takes, "mobile node, {what}");
        }
    }
}
