//! The home agent's XDP program: proxy ARP for away mobile nodes (RFC 5944 §4.6), IP-in-IP
//! encapsulation toward their care-of addresses (RFC 2003, RFC 5944 §4.2.3) or IP-in-UDP toward
//! the NAT in front of them (RFC 3519 §4.2), and reverse-tunnel decapsulation of both (RFC 3024,
//! RFC 3519 §4.3).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use mipx_common::{
    counters::Counter,
    ipv4::{self, HEADER_LEN as IP_HLEN, UDP_TUNNEL_LEN},
    maps::{HaBinding, HaDataplaneConfig, IFACE_HOME_LINK, TUNNEL_REVERSE, TUNNEL_UDP},
};

use crate::{
    fib::Route,
    maps::{BINDINGS, HA_CONFIG, IFACES, next_ip_id},
    nexthop,
    parse::{ArpHdr, ETH_HLEN, ETH_P_ARP, ETH_P_IP, EthHdr, Front, Ipv4Hdr, Packet as _},
    xdp_ip,
};

pub use crate::xdp_ip::Verdict;

/// What the fast path needs of a binding, read out of the map value at once: an update may
/// recycle a preallocated element under us.
#[derive(Clone, Copy)]
struct Tunnel {
    care_of_addr: [u8; 4],
    home_agent: [u8; 4],
    flags: u32,
    /// UDP tunnelling: where the registration came from (the NAT's address and port).
    peer_addr: [u8; 4],
    peer_port: [u8; 2],
}

impl Tunnel {
    /// # Safety
    /// `b` must be a live value of [`BINDINGS`].
    #[inline(always)]
    unsafe fn read(b: *const HaBinding) -> Tunnel {
        // SAFETY: the caller guarantees `b` is live; field reads only.
        unsafe {
            Tunnel {
                care_of_addr: (*b).care_of_addr,
                home_agent: (*b).home_agent,
                flags: (*b).tunnel_flags,
                peer_addr: (*b).source_addr,
                peer_port: (*b).source_port,
            }
        }
    }
}

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> Verdict {
    let Some(cfg) = HA_CONFIG.get(0) else {
        return (XDP_PASS, Counter::Passed);
    };
    if cfg.enabled == 0 {
        return (XDP_PASS, Counter::Passed);
    }
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return (XDP_PASS, Counter::TruncatedEth);
    };
    // SAFETY: `ptr_at` checked the whole header is inside the packet; alignment is 1.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_ARP {
        return proxy_arp(ctx);
    }
    if ether_type != ETH_P_IP {
        return (XDP_PASS, Counter::NotIpv4);
    }
    let ip = match xdp_ip::checked_ipv4(ctx) {
        Ok(ip) => ip,
        Err(verdict) => return verdict,
    };
    // RFC 5944 §4.2.3: examine the destination of every arriving datagram; a home address
    // with a binding is tunnelled (already-encapsulated ones included: nested encapsulation).
    if let Some(binding) = BINDINGS.get_ptr(&ip.dst_addr) {
        // SAFETY: a live map value.
        let tunnel = unsafe { Tunnel::read(binding) };
        return encapsulate(ctx, &ip, &tunnel, cfg);
    }
    // §4.2.3: "Home agents MUST decapsulate packets addressed to themselves" (RFC 3024).
    if ip.dst_addr == cfg.home_agent {
        if ip.protocol == ipv4::PROTO_IPIP {
            return decapsulate_ipip(ctx, &ip, cfg.nexthop_epoch);
        }
        if ip.protocol == ipv4::PROTO_UDP {
            return decapsulate_udp(ctx, &ip, cfg);
        }
    }
    (XDP_PASS, Counter::Passed)
}

/// Answers an ARP request for the home address of a mobile node registered away, on the home
/// link, with our own link-layer address (RFC 5944 §4.6: "the home agent MUST transmit an ARP
/// Reply on behalf of the mobile node", sender hardware address = the replying interface's).
#[inline(always)]
fn proxy_arp(ctx: &XdpContext) -> Verdict {
    let not_ours = (XDP_PASS, Counter::NotIpv4);
    let (Ok(eth), Ok(arp)) = (ctx.ptr_at::<EthHdr>(0), ctx.ptr_at::<ArpHdr>(ETH_HLEN)) else {
        return not_ours;
    };
    // SAFETY: both headers were bounds-checked above; alignment 1.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    let ethernet_ipv4 = arp.htype == [0, 1] && arp.ptype == [0x08, 0x00] && arp.hlen == 6;
    if !ethernet_ipv4 || arp.plen != 4 || arp.oper != [0, 1] {
        return not_ours;
    }
    // A gratuitous ARP for the home address (sender = target) is the mobile node announcing
    // itself on returning home (§4.6): never contradict it.
    if arp.spa == arp.tpa || BINDINGS.get_ptr(&arp.tpa).is_none() {
        return not_ours;
    }
    let Some(iface) = IFACES.get_ptr(&(ctx.ingress_ifindex() as u32)) else {
        return not_ours;
    };
    // SAFETY: a live map value, copied out.
    let iface = unsafe { *iface };
    if iface.flags & IFACE_HOME_LINK == 0 {
        return not_ours;
    }
    let home_addr = arp.tpa;
    arp.oper = [0, 2];
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = iface.mac;
    arp.spa = home_addr;
    eth.dst = eth.src;
    eth.src = iface.mac;
    (XDP_TX, Counter::ArpProxied)
}

/// Tunnels a datagram for an away mobile node: IP-in-IP to its care-of address (RFC 2003
/// §3.1), or IP-in-UDP to the address and port its registration came from (RFC 3519 §4.2,
/// §4.6: the NAT's, "the effective care-of address").
#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    ip: &Ipv4Hdr,
    tunnel: &Tunnel,
    cfg: &HaDataplaneConfig,
) -> Verdict {
    let udp = tunnel.flags & TUNNEL_UDP != 0;
    let far_end = if udp {
        tunnel.peer_addr
    } else {
        tunnel.care_of_addr
    };
    // RFC 2003 §3.2: never tunnel a datagram from the tunnel's exit point (the care-of
    // address, also behind a NAT: the NAT only relays) or from ourselves; RFC 5944 §4.2.3: an
    // encapsulated datagram from the current care-of address is a loop. The NAT itself may
    // send to the home address (an ICMP error, say) like any router on the path.
    if ip.src_addr == tunnel.care_of_addr || ip.src_addr == tunnel.home_agent {
        return (XDP_DROP, Counter::TunnelLoop);
    }
    // §3.1: the encapsulator forwards, so it decrements the inner TTL, and must not tunnel a
    // datagram whose TTL would reach 0. The kernel sends the ICMP Time Exceeded.
    if ip.ttl <= 1 {
        return (XDP_PASS, Counter::TtlExceeded);
    }
    let overhead = if udp { UDP_TUNNEL_LEN } else { IP_HLEN } as u16;
    let Some(outer_len) = ip.total_len().checked_add(overhead) else {
        return (XDP_DROP, Counter::TooBig);
    };
    let route = nexthop::lookup(
        ctx.ctx.cast(),
        ctx.ingress_ifindex() as u32,
        tunnel.home_agent,
        far_end,
        outer_len,
        cfg.nexthop_epoch,
    );
    let (ifindex, macs) = match route {
        Route::Neighbour {
            ifindex,
            smac,
            dmac,
        } => (ifindex, Some((smac, dmac))),
        Route::Unresolved => (0, None),
        // RFC 3519 §4.8 wants fragmentation before UDP encapsulation, which is what the
        // sender does on our ICMP: the tunnel MTU is reported net of the overhead.
        Route::FragNeeded { mtu } => {
            // RFC 1812 §4.3.2.5: from the home agent, the router that could not forward.
            let Some(cfg) = HA_CONFIG.get(0) else {
                return (XDP_DROP, Counter::TooBig);
            };
            return xdp_ip::frag_needed(ctx, ip, mtu.saturating_sub(overhead), cfg.home_agent);
        }
        // NotForwarded is also how the helper reports "no route at all"; a care-of address
        // that is local or broadcast is no better. Passing the tunnel packet up would not help:
        // the stack drops a packet arriving with our own address as source (martian source).
        Route::NoRoute | Route::NotForwarded => return (XDP_DROP, Counter::NoRoute),
    };
    // Draw the Identification only for a header that is built: a dropped datagram must not
    // use up a value (RFC 6864 §4.1: unique per source, destination and protocol while the
    // datagram may live, so every wasted value brings the wrap closer).
    let pushed = if udp {
        match ipv4::udp_tunnel_header(
            ip.as_inner(),
            next_ip_id(),
            tunnel.home_agent,
            far_end,
            u16::from_be_bytes(cfg.udp_port),
            u16::from_be_bytes(tunnel.peer_port),
        ) {
            Some(outer) => xdp_ip::push_header(ctx, &outer, macs),
            None => Err((XDP_DROP, Counter::TooBig)),
        }
    } else {
        match ipv4::ipip_header(ip.as_inner(), next_ip_id(), tunnel.home_agent, far_end) {
            Some(outer) => xdp_ip::push_header(ctx, &outer, macs),
            None => Err((XDP_DROP, Counter::TooBig)),
        }
    };
    if let Err(verdict) = pushed {
        return verdict;
    }
    if macs.is_none() {
        // The kernel resolves the far end's next hop and forwards the tunnel packet.
        return (XDP_PASS, Counter::HaEncapToStack);
    }
    let sent = if udp {
        Counter::HaUdpEncapTx
    } else {
        Counter::HaEncapTx
    };
    (xdp_ip::transmit(ctx, ifindex), sent)
}

/// Decapsulates a reverse-tunnelled IP-in-IP datagram (RFC 3024 §4.2): accepted only if its
/// inner source is a home address whose binding names the outer source as care-of address and
/// was granted reverse tunnelling; the home agent then forwards it like any router.
#[inline(always)]
fn decapsulate_ipip(ctx: &XdpContext, outer: &Ipv4Hdr, epoch: u32) -> Verdict {
    let inner = match xdp_ip::ipip_inner(ctx, outer) {
        Ok(inner) => inner,
        Err(verdict) => return verdict,
    };
    let Some(binding) = BINDINGS.get_ptr(&inner.src_addr) else {
        return (XDP_DROP, Counter::ReverseTunnelRejected);
    };
    // SAFETY: a live map value.
    let tunnel = unsafe { Tunnel::read(binding) };
    // RFC 3519 §4.7: a binding with UDP tunnelling carries all its data in UDP.
    if tunnel.care_of_addr != outer.src_addr
        || tunnel.home_agent != outer.dst_addr
        || tunnel.flags & TUNNEL_REVERSE == 0
        || tunnel.flags & TUNNEL_UDP != 0
    {
        return (XDP_DROP, Counter::ReverseTunnelRejected);
    }
    forward_inner::<IP_HLEN>(ctx, &inner, epoch, Counter::HaDecapTx)
}

/// Handles UDP to the home agent: a MIP Tunnel Data message on the registration port is a
/// reverse-tunnelled datagram (RFC 3519 §4.3) or a keepalive (§4.9); everything else
/// (registration requests above all) goes up to `mipd`.
#[inline(always)]
fn decapsulate_udp(ctx: &XdpContext, outer: &Ipv4Hdr, cfg: &HaDataplaneConfig) -> Verdict {
    // Any source port: it is the binding's (the NAT's), checked below.
    let (sport, inner) = match xdp_ip::udp_tunnel_inner(
        ctx,
        outer,
        None,
        cfg.udp_port,
        Counter::UdpTunnelRejected,
    ) {
        Ok(tunnel) => tunnel,
        Err(verdict) => return verdict,
    };
    // §4.9: a keepalive is a UDP-encapsulated ICMP echo request to us; mipd answers it through
    // the same tunnel. It is handed up before any binding is looked at, because not every
    // keepalive matches one in the map: a foreign agent behind a NAT sends them from its
    // care-of address, which is no home address (§4.5, §4.9), and a mobile node registered
    // with a co-located address through a foreign agent with the R flag keeps its tunnel
    // "half bound" until its first keepalive, from which the home agent learns the port
    // (§4.6, §4.11). mipd authenticates every keepalive against its bindings, so the fast path
    // hands all of them up.
    if inner.dst_addr == cfg.home_agent && inner.protocol == ipv4::PROTO_ICMP {
        return (XDP_PASS, Counter::UdpKeepalive);
    }
    let Some(binding) = BINDINGS.get_ptr(&inner.src_addr) else {
        return (XDP_DROP, Counter::UdpTunnelRejected);
    };
    // SAFETY: a live map value.
    let tunnel = unsafe { Tunnel::read(binding) };
    // §4.3: "MUST verify that the outer IP addresses and UDP port numbers exactly match the
    // values used for the tunnel". A NAT that rebinds shows up with another port: mipd follows
    // it only on an authenticated registration (docs/nat-traversal.md).
    if tunnel.flags & TUNNEL_UDP == 0
        || tunnel.peer_addr != outer.src_addr
        || tunnel.peer_port != sport
        || tunnel.home_agent != outer.dst_addr
    {
        return (XDP_DROP, Counter::UdpTunnelRejected);
    }
    if tunnel.flags & TUNNEL_REVERSE == 0 {
        return (XDP_DROP, Counter::ReverseTunnelRejected);
    }
    forward_inner::<UDP_TUNNEL_LEN>(ctx, &inner, cfg.nexthop_epoch, Counter::HaUdpDecapTx)
}

/// Strips `HLEN` bytes of tunnel headers from an accepted reverse-tunnelled datagram and
/// forwards the inner one like a router (RFC 2003 §3.1 for its TTL), or hands it to the stack.
#[inline(always)]
fn forward_inner<const HLEN: usize>(
    ctx: &XdpContext,
    inner: &Ipv4Hdr,
    epoch: u32,
    sent: Counter,
) -> Verdict {
    // RFC 2003 §3.1: the decapsulator MUST discard an inner datagram with TTL 0.
    if inner.ttl == 0 {
        return (XDP_DROP, Counter::TtlExceeded);
    }
    let route = if inner.ttl > 1 {
        nexthop::lookup(
            ctx.ctx.cast(),
            ctx.ingress_ifindex() as u32,
            inner.src_addr,
            inner.dst_addr,
            inner.total_len(),
            epoch,
        )
    } else {
        // Let the kernel forward it and send Time Exceeded (or deliver it, if it is ours).
        Route::Unresolved
    };
    let forward = match route {
        Route::Neighbour {
            ifindex,
            smac,
            dmac,
        } => Some((ifindex, smac, dmac)),
        // For us or without a route (NotForwarded), unresolved, too big or unroutable: the
        // stack delivers it, or resolves the next hop, or sends the ICMP error, as for any
        // datagram it receives.
        _ => None,
    };
    // Move the Ethernet header up to sit right before the inner header, then drop the outer.
    let Ok(base) = ctx.ptr_at::<Front<HLEN>>(0) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    let base = base.cast::<u8>();
    // SAFETY: both headers lie in the checked range; the source is copied out before the
    // overlapping write.
    unsafe {
        let mut header = *base.cast::<EthHdr>();
        if let Some((_, smac, dmac)) = forward {
            header.src = smac;
            header.dst = dmac;
        }
        *base.add(HLEN).cast::<EthHdr>() = header;
    }
    // SAFETY: the helper only moves `data`; pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, HLEN as i32) } != 0 {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    let Some((ifindex, _, _)) = forward else {
        // Addressed to the home agent itself, or the next hop is unresolved, or the TTL runs
        // out: the stack does the rest (and the ICMP, if any).
        return (XDP_PASS, Counter::HaDecapToStack);
    };
    let Ok(inner) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    // SAFETY: bounds-checked against the new packet.
    unsafe {
        let inner = &mut *inner;
        ipv4::decrement_ttl(&mut inner.ttl, &mut inner.checksum);
    }
    (xdp_ip::transmit(ctx, ifindex), sent)
}
