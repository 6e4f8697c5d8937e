//! The mobile node's programs for a co-located care-of address: XDP ingress decapsulates the
//! home agent's tunnel (IP-in-IP, or IP-in-UDP through a NAT, RFC 3519) so applications keep
//! using the home address (RFC 5944 §4.2.1), and TC egress reverse-tunnels what they send from
//! the home address (RFC 3024 §5.2) the same way.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::generated::{bpf_check_mtu, bpf_redirect, bpf_redirect_neigh, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};
use mipx_common::{
    counters::Counter,
    ipv4::{self, HEADER_LEN as IP_HLEN, MIP_TUNNEL_DATA, MIP_TUNNEL_HLEN, UDP_TUNNEL_LEN},
    maps::{
        MN_ACTIVE, MN_REVERSE_TUNNEL, MN_SLOT_HOME, MN_SLOT_OUTER, MN_UDP_TUNNEL, MN_VIA_VPN,
        MnTunnel,
    },
};

use crate::{
    fib::{self, Route},
    gate,
    maps::{MN_TUNNEL, next_ip_id},
    parse::{
        ETH_HLEN, ETH_P_IP, EthHdr, Front, Ipv4Hdr, Packet as _, UdpTunnelHdr, skb_gso_size,
        skb_ifindex,
    },
    xdp_ip::{self, Verdict},
};

/// TC verdicts (`linux/pkt_cls.h`), as the `u32` the shared [`Verdict`] carries.
const TC_ACT_OK: u32 = aya_ebpf::bindings::TC_ACT_OK as u32;
const TC_ACT_SHOT: u32 = aya_ebpf::bindings::TC_ACT_SHOT as u32;

#[inline(always)]
fn tunnel(slot: u32) -> Option<MnTunnel> {
    let tunnel = *MN_TUNNEL.get(slot)?;
    // A tunnel through the VPN belongs to the VPN device's programs (vpn.rs): on an access
    // interface its packets exist only as ESP.
    (tunnel.flags & (MN_ACTIVE | MN_VIA_VPN) == MN_ACTIVE).then_some(tunnel)
}

/// XDP ingress: in mode cvc the x-HA's tunnel first, gating what it carried; otherwise the
/// RFC 5265 gate, then [`decapsulate_home_agent_tunnel`] for the home address's tunnel.
#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> Verdict {
    let ifindex = ctx.ingress_ifindex() as u32;
    if let Some(outer) = tunnel(MN_SLOT_OUTER) {
        // RFC 5265 §2.3: the x-HA's tunnel carries the VPN (IKE and ESP from the gateway to
        // the external home address); the gate judges the inner packet, as if it had arrived
        // directly.
        let (action, counter) = decapsulate_home_agent_tunnel(ctx, &outer);
        if action == XDP_DROP {
            return (action, counter);
        }
        if counter == Counter::MnDecap || counter == Counter::MnUdpDecap {
            if let Some(dropped) = gate::check(ifindex, &xdp_headers(ctx)) {
                return (XDP_DROP, dropped);
            }
            return (action, counter);
        }
        if counter == Counter::UdpKeepalive {
            // The x-HA's answer to our keepalive, for mipd.
            return (action, counter);
        }
    }
    if let Some(dropped) = gate::check(ifindex, &xdp_headers(ctx)) {
        return (XDP_DROP, dropped);
    }
    match tunnel(MN_SLOT_HOME) {
        Some(home) => decapsulate_home_agent_tunnel(ctx, &home),
        None => (XDP_PASS, Counter::Passed),
    }
}

/// What the gate looks at, read with direct packet access.
#[inline(always)]
fn xdp_headers(ctx: &XdpContext) -> gate::Headers {
    let mut h = gate::Headers::NONE;
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return h;
    };
    // SAFETY: bounds-checked; alignment 1.
    h.ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if h.ether_type != ETH_P_IP {
        return h;
    }
    let Ok(ip) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return h;
    };
    // SAFETY: bounds-checked; alignment 1; copied field by field.
    let (version_ihl, protocol, frag, src, dst, ttl) = unsafe {
        let ip = &*ip;
        (
            ip.version_ihl,
            ip.protocol,
            ip.flags_frag(),
            ip.src_addr,
            ip.dst_addr,
            ip.ttl,
        )
    };
    h.protocol = protocol;
    h.ttl = ttl;
    h.src = src;
    h.dst = dst;
    h.later_fragment = frag & ipv4::OFFSET_MASK != 0;
    if version_ihl == 0x45 {
        if let Ok(l4) = ctx.ptr_at::<[u8; gate::L4_PEEK]>(gate::UDP_AT) {
            // SAFETY: bounds-checked; alignment 1.
            h.fill_l4(&unsafe { *l4 });
        } else if let Ok(spi) = ctx.ptr_at::<[u8; 4]>(gate::UDP_AT) {
            // ESP of a short datagram: only its SPI matters (a short ICMP message, an 8-byte
            // Agent Solicitation: its type).
            // SAFETY: bounds-checked; alignment 1.
            h.spi = Some(unsafe { *spi });
        }
    }
    h
}

/// What the gate looks at, read with `bpf_skb_load_bytes` (the linear part may be short).
#[inline(always)]
fn tc_headers(ctx: &TcContext) -> gate::Headers {
    let mut h = gate::Headers::NONE;
    let Ok(eth) = ctx.load::<EthHdr>(0) else {
        return h;
    };
    h.ether_type = u16::from_be_bytes(eth.ether_type);
    if h.ether_type != ETH_P_IP {
        return h;
    }
    let Ok(ip) = ctx.load::<Ipv4Hdr>(ETH_HLEN) else {
        return h;
    };
    h.protocol = ip.protocol;
    h.ttl = ip.ttl;
    h.src = ip.src_addr;
    h.dst = ip.dst_addr;
    h.later_fragment = ip.flags_frag() & ipv4::OFFSET_MASK != 0;
    if ip.version_ihl == 0x45 {
        if let Ok(l4) = ctx.load::<[u8; gate::L4_PEEK]>(gate::UDP_AT) {
            h.fill_l4(&l4);
        } else if let Ok(spi) = ctx.load::<[u8; 4]>(gate::UDP_AT) {
            h.spi = Some(spi);
        }
    }
    h
}

/// Strips `tunnel`'s home agent's IP-in-IP or IP-in-UDP header from packets for its home
/// address.
#[inline(always)]
fn decapsulate_home_agent_tunnel(ctx: &XdpContext, tunnel: &MnTunnel) -> Verdict {
    let tunnel = *tunnel;
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return (XDP_PASS, Counter::TruncatedEth);
    };
    // SAFETY: bounds-checked; alignment 1.
    if u16::from_be_bytes(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return (XDP_PASS, Counter::NotIpv4);
    }
    let outer = match xdp_ip::checked_ipv4(ctx) {
        Ok(ip) => ip,
        Err(verdict) => return verdict,
    };
    // Only the tunnel from our home agent to our current care-of address is ours (RFC 3024
    // §5.2's mirror image: the home agent is the only legitimate tunnel entry point).
    if outer.src_addr != tunnel.home_agent || outer.dst_addr != tunnel.care_of_addr {
        return (XDP_PASS, Counter::Passed);
    }
    if outer.protocol == ipv4::PROTO_IPIP {
        if outer.is_fragment() {
            return (XDP_DROP, Counter::TunnelFragment);
        }
        if outer.ihl() != 5 {
            return (XDP_DROP, Counter::TunnelOptions);
        }
        let room = outer.total_len().saturating_sub(IP_HLEN as u16);
        return decapsulate::<IP_HLEN>(ctx, &tunnel, room, Counter::MnDecap);
    }
    if outer.protocol != ipv4::PROTO_UDP
        || tunnel.flags & MN_UDP_TUNNEL == 0
        || outer.is_fragment()
        || outer.ihl() != 5
    {
        return (XDP_PASS, Counter::Passed);
    }
    let Ok(hdr) = ctx.ptr_at::<UdpTunnelHdr>(ETH_HLEN + IP_HLEN) else {
        return (XDP_PASS, Counter::Passed);
    };
    // SAFETY: bounds-checked above; alignment 1; copied out field by field.
    let (sport, dport, len, kind, next_header) = unsafe {
        let h = &*hdr;
        (h.sport, h.dport, h.len, h.kind, h.next_header)
    };
    // Registration replies share the ports (type 3): they go up to mipd like anything else
    // that is not tunnel data on the tunnel's ports (RFC 3519 §4.3), including datagrams too
    // short to hold the Tunnel Data header, whatever Ethernet padding follows them.
    let udp_len = u16::from_be_bytes(len);
    if sport != tunnel.ha_port
        || dport != tunnel.mn_port
        || usize::from(udp_len) < UDP_TUNNEL_LEN - IP_HLEN
        || kind != MIP_TUNNEL_DATA
    {
        return (XDP_PASS, Counter::Passed);
    }
    if next_header != ipv4::PROTO_IPIP {
        return (XDP_DROP, Counter::UdpTunnelRejected);
    }
    if udp_len != outer.total_len().wrapping_sub(IP_HLEN as u16) {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    let room = udp_len - (UDP_TUNNEL_LEN - IP_HLEN) as u16;
    decapsulate::<UDP_TUNNEL_LEN>(ctx, &tunnel, room, Counter::MnUdpDecap)
}

/// Checks the inner datagram behind `HLEN` bytes of tunnel headers and strips them.
#[inline(always)]
fn decapsulate<const HLEN: usize>(
    ctx: &XdpContext,
    tunnel: &MnTunnel,
    room: u16,
    decapsulated: Counter,
) -> Verdict {
    let inner = match xdp_ip::checked_inner(ctx, ETH_HLEN + HLEN, room) {
        Ok(inner) => inner,
        Err(verdict) => return verdict,
    };
    if inner.dst_addr != tunnel.home_addr {
        return (XDP_DROP, Counter::MnTunnelRejected);
    }
    // RFC 3519 §4.9: the home agent's answer to our keepalive is ICMP from the home agent
    // itself; mipd reads it, still encapsulated, on its registration socket.
    if HLEN == UDP_TUNNEL_LEN
        && inner.src_addr == tunnel.home_agent
        && inner.protocol == ipv4::PROTO_ICMP
    {
        return (XDP_PASS, Counter::UdpKeepalive);
    }
    // RFC 2003 §3.1: the decapsulator MUST discard an inner datagram with TTL 0.
    if inner.ttl == 0 {
        return (XDP_DROP, Counter::TtlExceeded);
    }
    let Ok(base) = ctx.ptr_at::<Front<HLEN>>(0) else {
        return (XDP_DROP, Counter::MalformedIpv4);
    };
    let base = base.cast::<u8>();
    // SAFETY: both headers lie in the checked range; the source is copied before the
    // overlapping write.
    unsafe { *base.add(HLEN).cast::<EthHdr>() = *base.cast::<EthHdr>() };
    // SAFETY: only moves `data`; nothing is accessed afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, HLEN as i32) } != 0 {
        return (XDP_DROP, Counter::MalformedIpv4);
    }
    // The stack receives the inner datagram as if it had arrived directly: the home address
    // is one of ours, so it is delivered locally (the inner TTL is untouched: not forwarded).
    (XDP_PASS, decapsulated)
}

/// TC egress: the RFC 5265 gate, then [`reverse_tunnel`]: datagrams sourced from the home
/// address go to the home agent from the co-located care-of address (RFC 3024 §5.2, "Direct
/// Delivery Style" not used).
#[inline(always)]
pub fn egress(ctx: &TcContext) -> Verdict {
    if let Some(dropped) = gate::check(skb_ifindex(ctx), &tc_headers(ctx)) {
        return (TC_ACT_SHOT, dropped);
    }
    reverse_tunnel(ctx)
}

/// Reverse-tunnels a datagram from a home address when its binding asks for it: the internal
/// home address's (mode c), or in mode cvc the external home address's (the VPN's packets).
#[inline(always)]
fn reverse_tunnel(ctx: &TcContext) -> Verdict {
    let home = tunnel(MN_SLOT_HOME).filter(|t| t.flags & MN_REVERSE_TUNNEL != 0);
    let outer = tunnel(MN_SLOT_OUTER).filter(|t| t.flags & MN_REVERSE_TUNNEL != 0);
    if home.is_none() && outer.is_none() {
        return (TC_ACT_OK, Counter::Passed);
    }
    let Ok(eth) = ctx.load::<EthHdr>(0) else {
        return (TC_ACT_OK, Counter::TruncatedEth);
    };
    if u16::from_be_bytes(eth.ether_type) != ETH_P_IP {
        return (TC_ACT_OK, Counter::NotIpv4);
    }
    let Ok(ip) = ctx.load::<Ipv4Hdr>(ETH_HLEN) else {
        return (TC_ACT_SHOT, Counter::MalformedIpv4);
    };
    // What stays on the link is never tunnelled: TTL 1 (agent solicitations, RFC 5944 §2.2)
    // and link-layer multicast or broadcast destinations (RFC 5944 §4.3: broadcasts reach the
    // home network only if the node asked its home agent for them, and we do not).
    if ip.ttl <= 1 || ip.dst_addr[0] >= 224 || ip.dst_addr == [255; 4] {
        return (TC_ACT_OK, Counter::Passed);
    }
    let tunnel = match (home, outer) {
        (Some(t), _) if ip.src_addr == t.home_addr => t,
        (_, Some(t)) if ip.src_addr == t.home_addr => t,
        _ => return (TC_ACT_OK, Counter::Passed),
    };
    let udp = tunnel.flags & MN_UDP_TUNNEL != 0;
    let overhead = if udp { UDP_TUNNEL_LEN } else { IP_HLEN };
    // A host originates these, so the inner TTL is left alone (RFC 2003 §3.1). A GSO
    // super-packet is checked per segment by the stack after we shrink its segment size (the
    // adjust below does so); a single packet must fit the link with the tunnel headers added.
    if skb_gso_size(ctx) == 0 {
        let mut mtu_len = 0u32;
        // SAFETY: `mtu_len` is a live u32 on our stack; ifindex 0 means the skb's device.
        let ret = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu_len, overhead as i32, 0) };
        if ret != 0 {
            return (TC_ACT_SHOT, Counter::TooBig);
        }
    }
    // Room after the MAC header, marked as IPv4-in-IPv4 (or in UDP, with the 4-byte MIP
    // Tunnel Data header as the "inner L2" between UDP and the inner IPv4 header) so GSO and
    // checksum offload still apply to the inner packet, segment by segment.
    let flags: u64 = if udp {
        u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP)
            | ((MIP_TUNNEL_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT)
    } else {
        u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
    };
    let inner = ip.as_inner();
    if udp {
        // §4.4: tunnelled data uses the ports of the most recent registration request.
        let Some(outer) = ipv4::udp_tunnel_header(
            inner,
            next_ip_id(),
            tunnel.care_of_addr,
            tunnel.home_agent,
            u16::from_be_bytes(tunnel.mn_port),
            u16::from_be_bytes(tunnel.ha_port),
        ) else {
            return (TC_ACT_SHOT, Counter::TooBig);
        };
        if ctx
            .adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
            .is_err()
            || ctx.store(ETH_HLEN, &outer, 0).is_err()
        {
            return (TC_ACT_SHOT, Counter::MnEncapFailed);
        }
    } else {
        let Some(outer) =
            ipv4::ipip_header(inner, next_ip_id(), tunnel.care_of_addr, tunnel.home_agent)
        else {
            return (TC_ACT_SHOT, Counter::TooBig);
        };
        if ctx
            .adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
            .is_err()
            || ctx.store(ETH_HLEN, &outer, 0).is_err()
        {
            return (TC_ACT_SHOT, Counter::MnEncapFailed);
        }
    }
    // The stack addressed the frame to the next hop toward the inner destination; the outer
    // one (the home agent) may route elsewhere: through another router, or out of another
    // interface. The lookup is made as if the packet were being forwarded after arriving on
    // this interface, not with BPF_FIB_LOOKUP_OUTPUT: that flag makes this interface the
    // lookup's output interface, which restricts the answer to routes through it, so a home
    // agent reached through another interface would come back as "no route" and the tunnel
    // packet would leave here with the inner destination's MAC. (Either way the helper
    // answers only when IPv4 forwarding is enabled on the interface.)
    let encapsulated = if udp {
        Counter::MnUdpEncap
    } else {
        Counter::MnEncap
    };
    let ifindex = skb_ifindex(ctx);
    let route = fib::lookup(
        ctx.as_ptr(),
        ifindex,
        tunnel.care_of_addr,
        tunnel.home_agent,
        0,
        0,
    );
    if let Route::Neighbour {
        ifindex: out,
        smac,
        dmac,
    } = route
    {
        let eth = EthHdr {
            dst: dmac,
            src: smac,
            ether_type: ETH_P_IP.to_be_bytes(),
        };
        if ctx.store(0, &eth, 0).is_err() {
            return (TC_ACT_SHOT, Counter::MnEncapFailed);
        }
        if out != ifindex {
            // SAFETY: plain helper call; returns TC_ACT_REDIRECT.
            return (unsafe { bpf_redirect(out, 0) } as u32, encapsulated);
        }
        return (TC_ACT_OK, encapsulated);
    }
    // No answer: the next hop is not resolved yet, or forwarding is off on this interface (the
    // usual state of a host, and the helper then declines). Let the kernel route the tunnel
    // packet by its outer destination and resolve the neighbour (queueing it meanwhile), as it
    // would for a packet it originated.
    // SAFETY: plain helper call with no parameters struct; returns TC_ACT_REDIRECT or
    // TC_ACT_SHOT.
    let verdict = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) } as u32;
    (verdict, encapsulated)
}
