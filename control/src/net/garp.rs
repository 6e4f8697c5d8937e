//! Gratuitous ARP (RFC 5944 §4.6): the home agent announces "this home address is at my MAC"
//! when it starts intercepting for a mobile node, and the mobile node announces its own MAC when
//! it comes home. Sent through an `AF_PACKET` socket: the kernel has no API to emit one for an
//! address that is not its own.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::FromRawFd as _;
use std::time::Duration;

use tracing::{debug, warn};

/// Length of an ARP packet for IPv4 over Ethernet, with its Ethernet header.
pub const FRAME_LEN: usize = 42;

/// A gratuitous ARP Request (RFC 5944 §4.6: Sender and Target Protocol Address both `addr`,
/// Sender Hardware Address `mac`, sent to the broadcast address) from our interface `own_mac`.
/// A Request rather than a Reply: every ARP implementation updates an existing cache entry from
/// either (RFC 826), and a Request is what Linux's `arping -U` sends.
///
/// The Ethernet source is always the sending interface's own address, even when the ARP
/// payload speaks for another node (the HA announcing a returned MN's MAC): a frame sourced
/// from the MN's MAC out of the HA's port would teach switches that the MN sits behind the HA.
pub fn frame(own_mac: [u8; 6], mac: [u8; 6], addr: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&own_mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, oper request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target hardware address: unused in a Request, zero.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Broadcasts one gratuitous ARP for `addr` with `mac` from interface `ifindex`, whose own
/// address is `own_mac`.
pub fn send(ifindex: u32, own_mac: [u8; 6], mac: [u8; 6], addr: Ipv4Addr) -> io::Result<()> {
    let frame = frame(own_mac, mac, addr);
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we own from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = 0x0806u16.to_be();
    to.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `frame` and `to` are live for the call and their lengths are passed exactly.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The link-layer address the kernel has resolved for `addr` on interface `ifname`, from
/// `/proc/net/arp` (which shows the reader's network namespace). Only complete entries count.
pub fn resolved_mac(addr: Ipv4Addr, ifname: &str) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp_table(&table, addr, ifname)
}

/// `IP address  HW type  Flags  HW address  Mask  Device`; flag 0x2 is ATF_COM (complete).
fn parse_arp_table(table: &str, addr: Ipv4Addr, ifname: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw_type, flags, mac, _mask, dev] = f.as_slice() else {
            return None;
        };
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        if ip.parse::<Ipv4Addr>().ok()? != addr || *dev != ifname || !complete {
            return None;
        }
        let mut out = [0u8; 6];
        let mut parts = mac.split(':');
        for b in &mut out {
            *b = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some(out)
    })
}

/// Broadcasts a gratuitous ARP now and twice more, 500 ms apart (RFC 5944 §4.6: "SHOULD be
/// retransmitted a small number of times"), without holding up the caller.
pub fn announce(ifindex: u32, own_mac: [u8; 6], mac: [u8; 6], addr: Ipv4Addr) {
    tokio::spawn(async move {
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if let Err(e) = send(ifindex, own_mac, mac, addr) {
                warn!(%addr, ifindex, error = %e, "gratuitous ARP failed");
                return;
            }
        }
        debug!(%addr, ifindex, "gratuitous ARP sent");
    });
}

/// RFC 5944 §4.6: when the HA accepts a deregistration from a mobile node back home, it MUST
/// also broadcast a gratuitous ARP mapping the home address to the MN's own link-layer address
/// (its radio range may differ from the MN's). We learn that address the way the kernel does:
/// the reply to the MN makes the kernel resolve it, so wait for a complete entry (up to 2 s),
/// then announce it three times.
pub fn announce_returned(ifindex: u32, own_mac: [u8; 6], ifname: String, home_addr: Ipv4Addr) {
    tokio::spawn(async move {
        for _ in 0..40 {
            if let Some(mac) = resolved_mac(home_addr, &ifname) {
                announce(ifindex, own_mac, mac, home_addr);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        debug!(home = %home_addr, "mobile node's MAC not resolved; no gratuitous ARP on its behalf");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Provenance: scapy 2.5.0,
    /// `raw(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") / ARP(op=1,
    ///  hwsrc="02:00:00:00:00:01", psrc="10.1.0.100", hwdst="00:00:00:00:00:00",
    ///  pdst="10.1.0.100"))`.
    const SCAPY: &str =
        "ffffffffffff020000000001080600010800060400010200000000010a0100640000000000000a010064";

    #[test]
    fn on_behalf_of_another_node_the_ethernet_source_stays_ours() {
        let (ours, theirs) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
        let f = frame(ours, theirs, Ipv4Addr::new(10, 1, 0, 100));
        assert_eq!(&f[6..12], &ours, "Ethernet source");
        assert_eq!(&f[22..28], &theirs, "ARP sender hardware address");
    }

    #[test]
    fn reads_complete_entries_only() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.1.0.100       0x1         0x2         16:f6:36:dd:88:29     *        ha0\n\
                     10.1.0.7         0x1         0x0         00:00:00:00:00:00     *        ha0\n";
        let a = Ipv4Addr::new(10, 1, 0, 100);
        assert_eq!(
            parse_arp_table(table, a, "ha0"),
            Some([0x16, 0xf6, 0x36, 0xdd, 0x88, 0x29])
        );
        assert_eq!(parse_arp_table(table, a, "eth1"), None);
        assert_eq!(
            parse_arp_table(table, Ipv4Addr::new(10, 1, 0, 7), "ha0"),
            None
        );
    }

    #[test]
    fn matches_scapy() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = frame(mac, mac, Ipv4Addr::new(10, 1, 0, 100));
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, SCAPY);
    }
}
