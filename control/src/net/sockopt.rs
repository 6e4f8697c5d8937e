//! Socket options the shells need and tokio does not offer: receiving a UDP datagram together
//! with the interface it arrived on (`IP_PKTINFO`, ip(7)), binding a socket to a device, and
//! ICMP errors about what a socket sent (`IP_RECVERR`).
//!
//! An external home agent drops registrations that arrive on interfaces facing the intranet
//! (RFC 5265 §3.7), which only the kernel's ancillary data can tell; tokio's `recv_from` does
//! not return it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::proto::fa::IcmpUnreachable;

/// Asks the kernel to attach `IP_PKTINFO` to every datagram received on `fd`.
pub fn enable_pktinfo(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a live c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddrV4,
    /// The interface it arrived on; 0 if the kernel attached no `IP_PKTINFO`.
    pub ifindex: u32,
}

/// `recvmsg(2)` of one datagram into `buf`, non-blocking (`WouldBlock` when none is queued).
/// Datagrams from non-IPv4 sources are reported with `from` 0.0.0.0:0.
pub fn recv_pktinfo(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // Room for one in_pktinfo control message, aligned as cmsg(3) requires.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    const _: () = assert!(unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } <= 64);
    let mut control = Control([0; 64]);
    // SAFETY: all-zero is a valid sockaddr_in and msghdr.
    let mut addr: libc::sockaddr_in = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: every pointer in `msg` refers to a live buffer of the length it states.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = if i32::from(addr.sin_family) == libc::AF_INET {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        )
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
    };
    let mut ifindex = 0;
    // SAFETY: `msg` was filled in by recvmsg; the CMSG_* macros walk its control buffer within
    // msg_controllen, and an IP_PKTINFO message holds an in_pktinfo (possibly unaligned).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in_pktinfo>()
                    .read_unaligned();
                ifindex = info.ipi_ifindex as u32;
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        from,
        ifindex,
    })
}

/// Binds `socket` to interface `name` (SO_BINDTODEVICE): what it sends leaves there, whatever
/// the routing table says, and it receives only what arrives there.
pub fn bind_to_device(socket: &impl AsRawFd, name: &str) -> io::Result<()> {
    // SAFETY: a valid socket fd and a byte buffer of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// RFC 5944 §3.7.3: an ICMP error about a relay becomes a reply code (80-88) to the mobile
/// node; IP_RECVERR queues such errors, with the datagram they are about.
pub fn enable_recverr(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a live c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drains the socket's error queue (MSG_ERRQUEUE): for each ICMP Destination Unreachable, the
/// home agent the datagram was sent to, what the ICMP code says, and the datagram (our relay).
/// Other errors are skipped.
pub fn read_error_queue(socket: &impl AsRawFd) -> Vec<(Ipv4Addr, IcmpUnreachable, Vec<u8>)> {
    /// `SO_EE_ORIGIN_ICMP` (linux/errqueue.h).
    const ORIGIN_ICMP: u8 = 2;
    const DEST_UNREACHABLE: u8 = 3;
    #[repr(C, align(8))]
    struct Control([u8; 256]);
    let mut out = Vec::new();
    for _ in 0..64 {
        let mut data = [0u8; 2048];
        let mut control = Control([0; 256]);
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        // SAFETY: `msg` points at buffers that outlive the call, with their lengths.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &raw mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
        let mut err: Option<libc::sock_extended_err> = None;
        // SAFETY: walking the control buffer the kernel filled, with the CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                    err = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::sock_extended_err>(),
                    ));
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        let Some(e) = err else { continue };
        if e.ee_origin != ORIGIN_ICMP {
            continue;
        }
        let kind = if e.ee_type == DEST_UNREACHABLE {
            IcmpUnreachable::from_unreachable_code(e.ee_code)
        } else {
            IcmpUnreachable::Other
        };
        let ha = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
        out.push((ha, kind, data[..n as usize].to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reports_the_loopback_interface() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_pktinfo(rx.as_fd()).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let got = loop {
            match recv_pktinfo(rx.as_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                r => break r.unwrap(),
            }
        };
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(std::net::SocketAddr::V4(got.from), tx.local_addr().unwrap());
        // The loopback device is ifindex 1.
        assert_eq!(got.ifindex, 1);
        assert_eq!(
            recv_pktinfo(rx.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
