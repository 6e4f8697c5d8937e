//! What the kernel says about an interface: whether it is usable and with which care-of
//! address and gateway (RFC 5265 §3.2.2's connection status), its MTU, an address's prefix.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use futures_util::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::link::LinkFlags;
use rtnetlink::sys::AsyncSocket as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::sockopt::bind_to_device;

/// An rtnetlink handle, and one wake-up per burst of link, IPv4 address and IPv4 route changes
/// (what `ip monitor` shows): each may be a connection status change (RFC 5265 §3.2.2). A
/// pending wake-up already makes the caller look again, so a burst is one message.
pub fn watch() -> io::Result<(rtnetlink::Handle, mpsc::Receiver<()>)> {
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_IFADDR
        | rtnetlink::constants::RTMGRP_IPV4_ROUTE;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            if tx.is_closed() {
                break;
            }
            let _ = tx.try_send(());
        }
    });
    Ok((handle, rx))
}

/// An interface's MTU (1400 when unknown: kernel-libipsec's TUN default).
pub fn device_mtu(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1400)
}

/// Makes `addr` (as a /32) the only IPv4 address of device `ifindex`, or leaves it none. For a
/// device mipd owns (the VPN's XFRM interface, where the TIA lives).
pub async fn set_only_address(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    addr: Option<Ipv4Addr>,
) -> Result<(), rtnetlink::Error> {
    use netlink_packet_route::address::AddressAttribute;
    let mut have = false;
    let existing: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute()
        .try_collect()
        .await?;
    for message in existing {
        let address = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(std::net::IpAddr::V4(a))
            | AddressAttribute::Address(std::net::IpAddr::V4(a)) => Some(*a),
            _ => None,
        });
        let Some(address) = address else { continue };
        if Some(address) == addr && message.header.prefix_len == 32 {
            have = true;
        } else {
            handle.address().del(message).execute().await?;
        }
    }
    if let Some(addr) = addr
        && !have
    {
        handle
            .address()
            .add(ifindex, addr.into(), 32)
            .replace()
            .execute()
            .await?;
    }
    Ok(())
}

/// The care-of address of interface `name` if it is up with carrier: the source address the
/// kernel would pick for a datagram to `toward` leaving through it (a connected, device-bound
/// UDP socket; nothing is sent). While addresses are being swapped the interface may hold an
/// old and a new one; this picks the one its routes now use, and `None` when there is no route.
pub async fn usable_address(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    name: &str,
    toward: Ipv4Addr,
) -> Option<Ipv4Addr> {
    let link = handle
        .link()
        .get()
        .match_index(ifindex)
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()?;
    let flags = link.header.flags;
    if !flags.contains(LinkFlags::Up) || !flags.contains(LinkFlags::LowerUp) {
        return None;
    }
    let probe = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .ok()?;
    bind_to_device(&probe, name).ok()?;
    probe
        .connect(SocketAddrV4::new(toward, mipx_common::wire::MIP_PORT))
        .await
        .ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// The gateway of the main table's IPv4 default route through `ifindex`, if any.
pub async fn default_gateway(handle: &rtnetlink::Handle, ifindex: u32) -> Option<Ipv4Addr> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let mut routes = handle
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Ok(Some(r)) = routes.try_next().await {
        // The main table's: the default routes mipd itself puts in its own tables (to a
        // foreign agent) say nothing about where the interface is attached.
        let main = r.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
            && !r
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Table(t) if *t != 254));
        if r.header.destination_prefix_length != 0 || !main {
            continue;
        }
        let through_us = r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == ifindex));
        let gateway = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
            _ => None,
        });
        if through_us && gateway.is_some() {
            return gateway;
        }
    }
    None
}

/// The prefix length of `addr` on interface `name`, if it has that address.
pub fn ipv4_prefix_len(name: &str, addr: Ipv4Addr) -> Option<u8> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string; ifa_addr a valid sockaddr.
        let (ifname, family) = unsafe {
            (
                std::ffi::CStr::from_ptr(ifa.ifa_name),
                (*ifa.ifa_addr).sa_family,
            )
        };
        if family != libc::AF_INET as u16 || ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: an AF_INET address and netmask are sockaddr_in.
        let (a, m) = unsafe {
            (
                (*ifa.ifa_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr,
                (*ifa.ifa_netmask.cast::<libc::sockaddr_in>())
                    .sin_addr
                    .s_addr,
            )
        };
        if Ipv4Addr::from(u32::from_be(a)) == addr {
            found = Some(u32::from_be(m).count_ones() as u8);
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}
