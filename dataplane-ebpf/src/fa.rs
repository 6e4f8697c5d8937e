//! The foreign agent's XDP program: delivery of the home agents' tunnels to visiting mobile
//! nodes (RFC 5944 §4.2.2, RFC 2003) and reverse tunnelling of what they send (RFC 3024 §5.1,
//! Direct Delivery Style). The tunnels are IP-in-IP, or IP-in-UDP (RFC 3519) for visitors whose
//! home agent assented to UDP tunnelling because the foreign agent sits behind a NAT (§4.5).
//!
//! A packet is the foreign agent's business in two cases only:
//!
//! - a tunnel ending here: IP-in-IP, or a MIP Tunnel Data message from port 434 to our
//!   registration port, whose outer destination is one of the care-of addresses
//!   (`MIPX_FA_CARE_OF`). Delivered when the inner destination is a visitor that registered
//!   that care-of address with the outer source as its home agent, in that visitor's
//!   tunnelling mode; dropped otherwise. The home agent's answer to our own UDP keepalive
//!   (§4.9) goes up to `mipd`.
//! - IPv4 from a visitor's home address arriving on the visitor's link: reverse-tunnelled to
//!   its home agent when that was granted, after checking it comes from the visitor's
//!   link-layer address.
//!
//! Everything else passes untouched, and so does what a visitor sends to the foreign agent
//! itself (registrations above all), and registration replies on the tunnel's ports.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::generated::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use mipx_common::{
    counters::Counter,
    ipv4::{self, HEADER_LEN as IP_HLEN, UDP_TUNNEL_LEN},
    maps::{FaDataplaneConfig, FaVisitor, VISITOR_REVERSE_TUNNEL, VISITOR_UDP_TUNNEL},
    wire::MIP_PORT,
};

use crate::{
    fib::Route,
    maps::{FA_CARE_OF, FA_CONFIG, FA_VISITORS, IFACES, next_ip_id},
    nexthop,
    parse::{ETH_HLEN, ETH_P_IP, EthHdr, Front, Ipv4Hdr, Packet as _},
    xdp_ip::{self, Verdict},
};

/// ICMP type of a Router Solicitation, which is also an Agent Solicitation (RFC 5944 §2.2).
const ICMP_ROUTER_SOLICITATION: u8 = 10;

/// What the fast path needs of a visitor entry, read out of the map value at once: an update
/// may recycle a preallocated element under us.
#[derive(Clone, Copy)]
struct Visitor {
    care_of_addr: [u8; 4],
    home_agent: [u8; 4],
    ifindex: u32,
    flags: u32,
    mac: [u8; 6],
}

impl Visitor {
    /// # Safety
    /// `v` must be a live value of [`FA_VISITORS`].
    #[inline(always)]
    unsafe fn read(v: *const FaVisitor) -> Visitor {
        // SAFETY: the caller guarantees `v` is live; field reads only.
        unsafe {
            Visitor {
                care_of_addr: (*v).care_of_addr,
                home_agent: (*v).home_agent,
                ifindex: (*v).ifindex,
                flags: (*v).flags,
                mac: (*v).mac,
            }
        }
    }
}

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> Verdict {
    let Some(cfg) = FA_CONFIG.get(0) else {
        return (XDP_PASS, Counter::Passed);
    };
    if cfg.enabled == 0 {
        return (XDP_PASS, Counter::Passed);
    }
    let cfg = *cfg;
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return (XDP_PASS, Counter::TruncatedEth);
    };
    // SAFETY: `ptr_at` checked the whole header is inside the packet; alignment is 1.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_IP {
        // ARP included: the foreign agent never answers or sends ARP for a visitor's home
        // address (RFC 5944 §4.6); the kernel answers for its own addresses.
        return (XDP_PASS, Counter::NotIpv4);
    }
    let ip = match xdp_ip::checked_ipv4(ctx) {
        Ok(ip) => ip,
        Err(verdict) => return verdict,
    };
    // §4.2.2: "Upon receipt of an encapsulated datagram sent to its advertised care-of
    // address". A tunnel to any other address is transit, not ours.
    let tunnel_proto = ip.protocol == ipv4::PROTO_IPIP || ip.protocol == ipv4::PROTO_UDP;
    if tunnel_proto && FA_CARE_OF.get_ptr(&ip.dst_addr).is_some() {
        if ip.protocol == ipv4::PROTO_IPIP {
            return decapsulate(ctx, &ip);
        }
        // RFC 3519: the UDP tunnel runs between the ports of the registration it was set up
        // with (§4.9: "the same ports that have already been used for the registration
        // request / reply exchange"), which we relayed from our registration port to the home
        // agent's port 434 (§4.5). A NAT in front of us translates our side only, so what
        // arrives is addressed to the care-of address and our port again. Anything else on
        // these addresses, registration replies above all, is not tunnel data and is
        // classified like any other datagram below (it reaches mipd's socket).
        match xdp_ip::udp_tunnel_inner(
            ctx,
            &ip,
            Some(MIP_PORT.to_be_bytes()),
            cfg.udp_port,
            Counter::FaTunnelRejected,
        ) {
            Ok((_, inner)) => return decapsulate_udp(ctx, &ip, &inner),
            Err((XDP_PASS, _)) => {}
            Err(verdict) => return verdict,
        }
    }
    if let Some(visitor) = FA_VISITORS.get_ptr(&ip.src_addr) {
        // SAFETY: a live map value.
        let visitor = unsafe { Visitor::read(visitor) };
        return from_visitor(ctx, &ip, &visitor, &cfg);
    }
    (XDP_PASS, Counter::Passed)
}

/// Strips the home agent's IP-in-IP header from a datagram for a visitor and sends the inner
/// datagram on the visitor's link, addressed to the visitor's link-layer address (RFC 5944
/// §4.2.2: "the foreign agent forwards the decapsulated datagram to the mobile node"; it "MUST
/// NOT use broadcast ARP for a mobile node's MAC address", so the address comes from the
/// registration, and neither we nor the kernel ever resolve the home address).
#[inline(always)]
fn decapsulate(ctx: &XdpContext, outer: &Ipv4Hdr) -> Verdict {
    let inner = match xdp_ip::ipip_inner(ctx, outer) {
        Ok(inner) => inner,
        Err(verdict) => return verdict,
    };
    // §4.2.2: "When the Destination does not match the address of any mobile node currently
    // in the visitor list, the foreign agent MUST NOT forward the datagram without
    // modifications to the original IP header, because otherwise a routing loop is likely to
    // result. The datagram SHOULD be silently discarded. ICMP Destination Unreachable MUST NOT
    // be sent". XDP_PASS would do neither reliably: a kernel with an ipip device decapsulates
    // and routes the inner datagram (back toward the home network, where the home agent
    // tunnels it here again: the loop), and one without answers Protocol Unreachable, a
    // Destination Unreachable. So: dropped, counted.
    let Some(visitor) = FA_VISITORS.get_ptr(&inner.dst_addr) else {
        return (XDP_DROP, Counter::FaUnknownVisitor);
    };
    // SAFETY: a live map value.
    let visitor = unsafe { Visitor::read(visitor) };
    // RFC 2003 §6.2: admit encapsulated datagrams only from "an authentically identified,
    // trusted source": the home agent named in the visitor's authenticated registration
    // reply, toward the care-of address the visitor registered. Anyone else could inject
    // datagrams onto the visitor's link through us; the same silent discard as above applies
    // (§4.2.2: no ICMP Destination Unreachable). A visitor with UDP tunnelling carries all its
    // data in UDP (RFC 3519 §4.7), never in plain IP-in-IP.
    if visitor.home_agent != outer.src_addr
        || visitor.care_of_addr != outer.dst_addr
        || visitor.flags & VISITOR_UDP_TUNNEL != 0
    {
        return (XDP_DROP, Counter::FaTunnelRejected);
    }
    deliver::<IP_HLEN>(ctx, &inner, &visitor, Counter::FaDecapTx)
}

/// Strips the home agent's IP-in-UDP headers (RFC 3519 §4.3: outer IP, UDP and MIP Tunnel Data
/// header, 32 bytes) from a datagram for a visitor and delivers it as [`decapsulate`] does;
/// `inner` is the checked inner header. The home agent's answer to a keepalive of ours goes up
/// to `mipd`.
#[inline(always)]
fn decapsulate_udp(ctx: &XdpContext, outer: &Ipv4Hdr, inner: &Ipv4Hdr) -> Verdict {
    let Some(visitor) = FA_VISITORS.get_ptr(&inner.dst_addr) else {
        // §4.9: as the non-HA end of the tunnel, mipd sends UDP-encapsulated ICMP echo
        // requests from the care-of address to the home agent, which answers through the same
        // tunnel: an ICMP datagram to the care-of address itself. mipd reads it, still
        // encapsulated, on its registration socket and matches it with what it sent.
        if inner.dst_addr == outer.dst_addr && inner.protocol == ipv4::PROTO_ICMP {
            return (XDP_PASS, Counter::FaKeepalive);
        }
        // RFC 5944 §4.2.2: tunnelled to us for no visitor, so silently discarded, as in
        // `decapsulate` (mipd's socket, where XDP_PASS would take it, has no use for it).
        return (XDP_DROP, Counter::FaUnknownVisitor);
    };
    // SAFETY: a live map value.
    let visitor = unsafe { Visitor::read(visitor) };
    // RFC 3519 §4.3: "the decapsulating node MUST verify that the outer IP addresses and UDP
    // port numbers exactly match the values used for the tunnel": the ports were checked on
    // the way here, the addresses are the visitor's home agent and care-of address. Only a
    // visitor whose binding was set up with UDP tunnelling has such a tunnel (§4.7).
    if visitor.home_agent != outer.src_addr
        || visitor.care_of_addr != outer.dst_addr
        || visitor.flags & VISITOR_UDP_TUNNEL == 0
    {
        return (XDP_DROP, Counter::FaTunnelRejected);
    }
    deliver::<UDP_TUNNEL_LEN>(ctx, inner, &visitor, Counter::FaUdpDecapTx)
}

/// Sends the inner datagram of an accepted tunnel packet, behind `HLEN` bytes of tunnel
/// headers, on the visitor's link to its link-layer address, counted as `sent`. RFC 3519 §4.2
/// keeps every provision of RFC 2003 for IP-in-UDP, so the TTL rules are the same for both.
#[inline(always)]
fn deliver<const HLEN: usize>(
    ctx: &XdpContext,
    inner: &Ipv4Hdr,
    visitor: &Visitor,
    sent: Counter,
) -> Verdict {
    // RFC 2003 §3.1: "The TTL in the inner IP header is not changed when decapsulating. If,
    // after decapsulation, the inner datagram has TTL = 0, the decapsulator MUST discard the
    // datagram. If, after decapsulation, the decapsulator forwards the datagram ... it will
    // decrement the TTL as a result of doing normal IP forwarding." Delivering to the visitor
    // is that forwarding, so TTL 1 would leave with 0: discarded as well. No ICMP Time
    // Exceeded is sent: it would go to the inner source (a correspondent), through a route and
    // next hop this path never looks up, from an address of ours the correspondent has never
    // seen; the only effect is a silent last hop for traceroute. Counted, so it is visible.
    if inner.ttl <= 1 {
        return (XDP_DROP, Counter::FaTtlExpired);
    }
    // Our own link-layer address on the visitor's link, as `mipd` recorded it when it attached
    // to that interface.
    let Some(iface) = IFACES.get_ptr(&visitor.ifindex) else {
        return (XDP_DROP, Counter::FaNoIface);
    };
    // SAFETY: a live map value; one field copied out.
    let agent_mac = unsafe { (*iface).mac };
    // Write the new Ethernet header right before the inner header (it overwrites the end of
    // the tunnel headers, which are no longer needed), then drop the rest of them.
    let Ok(base) = ctx.ptr_at::<Front<HLEN>>(0) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    let base = base.cast::<u8>();
    // SAFETY: offsets HLEN..HLEN + ETH_HLEN lie inside the checked `Front`.
    unsafe {
        *base.add(HLEN).cast::<EthHdr>() = EthHdr {
            dst: visitor.mac,
            src: agent_mac,
            ether_type: ETH_P_IP.to_be_bytes(),
        };
    }
    // SAFETY: the helper only moves `data`; pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, HLEN as i32) } != 0 {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    let Ok(inner) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    // SAFETY: bounds-checked against the new packet.
    unsafe {
        let inner = &mut *inner;
        ipv4::decrement_ttl(&mut inner.ttl, &mut inner.checksum);
    }
    (xdp_ip::transmit(ctx, visitor.ifindex), sent)
}

/// Handles a datagram whose source is a visitor's home address.
#[inline(always)]
fn from_visitor(
    ctx: &XdpContext,
    ip: &Ipv4Hdr,
    visitor: &Visitor,
    cfg: &FaDataplaneConfig,
) -> Verdict {
    // Only the visitor's own link identifies it (RFC 3024 Appendix A.3). The home address
    // arriving elsewhere (from upstream, say) is not the visitor: the kernel's business.
    if ctx.ingress_ifindex() as u32 != visitor.ifindex {
        return (XDP_PASS, Counter::Passed);
    }
    // Registration traffic and solicitations go to mipd whatever the state of the entry or
    // the link-layer source: a visitor that changed interface card re-registers from its new
    // address, and mipd authenticates registrations, not us.
    if to_agent(ctx, ip, visitor, cfg) {
        return (XDP_PASS, Counter::FaToAgent);
    }
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    // SAFETY: bounds-checked; alignment 1; copied out.
    let source_mac = unsafe { (*eth).src };
    // RFC 3024 Appendix A.3: the visitor is "link-layer information related to the MN" plus
    // the source address, both "established and recorded at registration time"; §6.3: on a
    // shared link anyone can claim the home address. A frame from another link-layer source
    // would ride the visitor's reverse tunnel into its home network, or be routed on its
    // behalf: dropped, counted.
    if mac_bits(source_mac) != mac_bits(visitor.mac) {
        return (XDP_DROP, Counter::FaVisitorMacMismatch);
    }
    // No reverse tunnel granted: §4.2.2 "The foreign agent MUST route datagrams it receives
    // from registered mobile nodes": the kernel does (TTL, checksum, default router), and the
    // datagram goes straight to its destination (triangle routing).
    if visitor.flags & VISITOR_REVERSE_TUNNEL == 0 {
        return (XDP_PASS, Counter::FaTriangle);
    }
    encapsulate(ctx, ip, visitor, cfg)
}

/// Whether a datagram from a visitor is for the foreign agent itself, which it must reach
/// (RFC 3024 §5.1 changes the *forwarding* function only):
///
/// - the care-of address (normally the foreign agent's own address on the link);
/// - multicast and the limited broadcast: Direct Delivery carries unicast only (§5.1, §5.3),
///   and Registration Requests and Agent Solicitations may go to 224.0.0.11, the Mobile-Agents
///   group (RFC 5944 §3.6.1.1, §2.3);
/// - UDP to the registration port: a Registration Request goes to "the address of the agent
///   as learned from the IP source address of the corresponding Agent Advertisement", which
///   "MAY be an address that does not appear as an advertised care-of address" (§3.6.1.1);
/// - ICMP type 10: Agent Solicitations, which are Router Solicitations with TTL 1 (§2.2).
///
/// The transport header is read only at its fixed offset: a datagram with IP options, or a
/// non-first fragment, to another address of ours is tunnelled like any other and comes back
/// through the home agent (the home network routes to us).
#[inline(always)]
fn to_agent(ctx: &XdpContext, ip: &Ipv4Hdr, visitor: &Visitor, cfg: &FaDataplaneConfig) -> bool {
    let dst = ip.dst_addr;
    if dst == visitor.care_of_addr || dst[0] & 0xf0 == 0xe0 || dst == [255; 4] {
        return true;
    }
    if ip.ihl() != 5 || ip.flags_frag() & ipv4::OFFSET_MASK != 0 {
        return false;
    }
    const L4_AT: usize = ETH_HLEN + IP_HLEN;
    if ip.protocol == ipv4::PROTO_UDP {
        let Ok(ports) = ctx.ptr_at::<[u8; 4]>(L4_AT) else {
            return false;
        };
        // SAFETY: bounds-checked; alignment 1.
        let ports = unsafe { *ports };
        return [ports[2], ports[3]] == cfg.udp_port;
    }
    if ip.protocol == ipv4::PROTO_ICMP {
        let Ok(kind) = ctx.ptr_at::<u8>(L4_AT) else {
            return false;
        };
        // SAFETY: bounds-checked; alignment 1.
        return unsafe { *kind } == ICMP_ROUTER_SOLICITATION;
    }
    false
}

/// A link-layer address as one integer, so comparing two is two loads and a compare (an
/// array comparison may become a `bcmp` call, which BPF does not have).
#[inline(always)]
fn mac_bits(mac: [u8; 6]) -> u64 {
    u64::from(u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]))
        | u64::from(u16::from_ne_bytes([mac[4], mac[5]])) << 32
}

/// Reverse-tunnels a visitor's datagram from the care-of address to the home agent (RFC 3024
/// §5.1.2: outer source "Copied from the Care-of Address field within the Registration
/// Request", destination "Copied from the Home Agent field within the most recent successful
/// Registration Reply"), the outer header as RFC 2003 §3.1 asks (TOS and DF copied, fresh
/// Identification, TTL 64), sent where the FIB says: IP-in-IP (protocol 4), or for a visitor
/// with UDP tunnelling IP-in-UDP from our registration port to the home agent's port 434, the
/// ports the registration went between (RFC 3519 §4.2, §4.7: all of such a binding's data,
/// the reverse tunnel included, is UDP-tunnelled).
#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    ip: &Ipv4Hdr,
    visitor: &Visitor,
    cfg: &FaDataplaneConfig,
) -> Verdict {
    let udp = visitor.flags & VISITOR_UDP_TUNNEL != 0;
    // RFC 2003 §3.1: tunnelling is part of forwarding here (RFC 5944 §4.2.2: "decrement the IP
    // Time To Live"), so the inner TTL drops by one, and a datagram whose TTL would reach 0 is
    // not tunnelled. The kernel forwards it no further and returns Time Exceeded to the
    // visitor, as it would without us.
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
        visitor.care_of_addr,
        visitor.home_agent,
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
        // The tunnel MTU is reported net of the overhead. For the UDP tunnel that is also
        // what RFC 3519 §4.8 requires: the foreign agent "MUST" fragment before encapsulating
        // (a NAT cannot translate later fragments), and XDP cannot fragment, so the visitor
        // does it on our ICMP.
        Route::FragNeeded { mtu } => {
            return xdp_ip::frag_needed(
                ctx,
                ip,
                mtu.saturating_sub(overhead),
                visitor.care_of_addr,
            );
        }
        // No route to the home agent (or it is local, or a broadcast address): the tunnel
        // cannot be entered, and handing the visitor's datagram to the kernel would route it
        // around the reverse tunnel it was granted.
        Route::NoRoute | Route::NotForwarded => return (XDP_DROP, Counter::NoRoute),
    };
    // The Identification is drawn only for a header that is built (RFC 6864 §4.1, as ha.rs).
    let pushed = if udp {
        match ipv4::udp_tunnel_header(
            ip.as_inner(),
            next_ip_id(),
            visitor.care_of_addr,
            visitor.home_agent,
            u16::from_be_bytes(cfg.udp_port),
            MIP_PORT,
        ) {
            Some(outer) => xdp_ip::push_header(ctx, &outer, macs),
            None => Err((XDP_DROP, Counter::TooBig)),
        }
    } else {
        match ipv4::ipip_header(
            ip.as_inner(),
            next_ip_id(),
            visitor.care_of_addr,
            visitor.home_agent,
        ) {
            Some(outer) => xdp_ip::push_header(ctx, &outer, macs),
            None => Err((XDP_DROP, Counter::TooBig)),
        }
    };
    if let Err(verdict) = pushed {
        return verdict;
    }
    if macs.is_none() {
        // The kernel resolves the home agent's next hop and forwards the tunnel packet (its
        // source is our own care-of address: mipd sets accept_local, as for the home agent).
        return (XDP_PASS, Counter::FaEncapToStack);
    }
    let sent = if udp {
        Counter::FaUdpEncapTx
    } else {
        Counter::FaEncapTx
    };
    (xdp_ip::transmit(ctx, ifindex), sent)
}
