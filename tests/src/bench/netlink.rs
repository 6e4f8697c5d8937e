//! Interface counters read in-process over rtnetlink (`RTM_GETLINK`, `IFLA_STATS64`): exact and
//! quick, so they can be sampled at the same instant as the DUT's CPU time, unlike `ip` or
//! `ethtool` processes, which take milliseconds to start on a busy CPU.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail, ensure};
use mipx_tests::Netns;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_STATS64: u16 = 23;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// The counters of `struct rtnl_link_stats64` the benchmark uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    /// For a veth this includes frames its peer could not queue (ring full).
    pub rx_dropped: u64,
    /// `rx_otherhost_dropped` (Linux 5.19+): frames for another MAC address.
    pub rx_otherhost_dropped: u64,
}

/// A NETLINK_ROUTE socket bound to one network namespace (the one it was created in).
pub struct Rtnl {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

impl Rtnl {
    pub fn open_in(ns: &Netns) -> Result<Self> {
        let _in = ns.enter()?;
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink socket");
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Rtnl {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            seq: std::cell::Cell::new(0),
        })
    }

    pub fn link_stats(&self, ifindex: u32) -> Result<LinkStats> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
        req[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        // ifinfomsg: family AF_UNSPEC, type 0, index, flags 0, change 0.
        req[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        // SAFETY: `req` is valid for its length; the socket is open.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent != req.len() as isize {
            return Err(std::io::Error::last_os_error()).context("netlink send");
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error()).context("netlink recv");
            }
            let msg = &buf[..n as usize];
            ensure!(msg.len() >= NLMSG_HDRLEN, "short netlink message");
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            if u32::from_ne_bytes(msg[8..12].try_into()?) != seq {
                continue;
            }
            match kind {
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(msg[16..20].try_into()?);
                    bail!(
                        "RTM_GETLINK {ifindex}: {}",
                        std::io::Error::from_raw_os_error(-errno)
                    );
                }
                RTM_NEWLINK => return parse_stats(&msg[NLMSG_HDRLEN + IFINFOMSG_LEN..]),
                other => bail!("unexpected netlink message type {other}"),
            }
        }
    }
}

fn parse_stats(mut attrs: &[u8]) -> Result<LinkStats> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        ensure!(len >= 4 && len <= attrs.len(), "bad netlink attribute");
        if kind == IFLA_STATS64 {
            let p = &attrs[4..len];
            let field = |i: usize| -> u64 {
                p.get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            };
            // struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, rx_errors,
            // tx_errors, rx_dropped, tx_dropped, ... (24 fields), rx_otherhost_dropped.
            return Ok(LinkStats {
                rx_packets: field(0),
                rx_dropped: field(6),
                rx_otherhost_dropped: field(24),
            });
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    bail!("no IFLA_STATS64 in the reply")
}
