//! The mobile node's Mobile IP tunnel inside the VPN (RFC 5265 §2.3, modes mc and cvc): TC
//! programs on the VPN's own device (strongSwan's kernel-libipsec TUN `ipsec0`, or an XFRM
//! interface), an L3 device whose packets start at the IPv4 header.
//!
//! Outside the intranet the internal home address is reached through the VPN: `mipd` routes
//! what applications send from the home address into the VPN device, egress here wraps it in
//! IP-in-IP from the tunnel inner address (TIA, the co-located care-of address registered with
//! the i-HA) to the i-HA (RFC 2003 §3.1, reverse tunnelling per RFC 3024), and only then does
//! the VPN encrypt it; ingress unwraps the i-HA's tunnel to the TIA after the VPN decrypted it.
//! Nothing here is ever plaintext on an access link.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_hdr_start_off::BPF_HDR_START_NET,
    },
    helpers::generated::{bpf_check_mtu, bpf_skb_load_bytes_relative},
    programs::TcContext,
};
use mipx_common::{
    counters::Counter,
    ipv4::{self, HEADER_LEN as IP_HLEN},
    maps::{MN_ACTIVE, MN_VIA_VPN, MnTunnel},
};

use crate::{
    maps::{MN_TUNNEL, next_ip_id},
    parse::{IPV4_MIN_IHL, Ipv4Hdr, skb_gso_size},
    xdp_ip::Verdict,
};

const TC_ACT_OK: u32 = aya_ebpf::bindings::TC_ACT_OK as u32;
const TC_ACT_SHOT: u32 = aya_ebpf::bindings::TC_ACT_SHOT as u32;

/// The registration whose care-of address is the VPN's TIA, if that is the current one.
#[inline(always)]
fn vpn_tunnel() -> Option<MnTunnel> {
    let tunnel = *MN_TUNNEL.get(0)?;
    let want = MN_ACTIVE | MN_VIA_VPN;
    (tunnel.flags & want == want).then_some(tunnel)
}

/// Egress on the VPN device: IP-in-IP from the TIA to the i-HA for datagrams from the home
/// address; everything else (the registrations `mipd` sends from the TIA) goes as it is.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> Verdict {
    let Some(tunnel) = vpn_tunnel() else {
        return (TC_ACT_OK, Counter::Passed);
    };
    let Ok(ip) = ctx.load::<Ipv4Hdr>(0) else {
        return (TC_ACT_OK, Counter::NotIpv4);
    };
    if ip.version() != 4 || ip.src_addr != tunnel.home_addr {
        return (TC_ACT_OK, Counter::Passed);
    }
    // RFC 2003 §5.1: the tunnel MTU is the VPN device's minus our header; `mipd` routes the
    // home address with that MTU locked, so the stack sizes segments for it. What is still too
    // big (a raw socket ignoring it) is dropped and counted rather than truncated by the VPN.
    if skb_gso_size(ctx) == 0 {
        let mut mtu_len = 0u32;
        // SAFETY: `mtu_len` is a live u32 on our stack; ifindex 0 means the skb's device.
        let ret = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu_len, IP_HLEN as i32, 0) };
        if ret != 0 {
            return (TC_ACT_SHOT, Counter::TooBig);
        }
    }
    let Some(outer) = ipv4::ipip_header(
        ip.as_inner(),
        next_ip_id(),
        tunnel.care_of_addr,
        tunnel.home_agent,
    ) else {
        return (TC_ACT_SHOT, Counter::TooBig);
    };
    // On an L3 device the "MAC header" is empty, so the room opens in front of the IPv4
    // header; marked as IPv4-in-IPv4 so GSO segments the inner packet and adds our header to
    // each segment.
    if ctx
        .adjust_room(
            IP_HLEN as i32,
            BPF_ADJ_ROOM_MAC,
            u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4),
        )
        .is_err()
        || ctx.store(0, &outer, 0).is_err()
    {
        return (TC_ACT_SHOT, Counter::MnEncapFailed);
    }
    (TC_ACT_OK, Counter::MnVpnEncap)
}

/// A header at `offset` from the network header.
///
/// Ingress on the VPN device the packet starts there on kernel-libipsec's TUN, but not on the
/// kernel's XFRM interface: ESP's tunnel-mode decapsulation rebuilds the access link's MAC
/// header in front of the inner packet (`xfrm4_remove_tunnel_encap`), so the program sees 14
/// bytes of Ethernet first. Reading relative to the network header fits both, and
/// `BPF_ADJ_ROOM_MAC` opens or closes room right there either way.
#[inline(always)]
fn load_net<T>(ctx: &TcContext, offset: usize) -> Result<T, i64> {
    let mut data = MaybeUninit::<T>::uninit();
    // SAFETY: `data` is a live buffer of exactly `size_of::<T>()` bytes; the helper fills it
    // completely or fails, and only then is it read.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr(),
            offset as u32,
            data.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    if ret == 0 {
        // SAFETY: the helper succeeded, so every byte was written.
        Ok(unsafe { data.assume_init() })
    } else {
        Err(ret)
    }
}

/// Ingress on the VPN device: strips the i-HA's IP-in-IP header from packets for the TIA
/// whose inner destination is the home address; registration replies and anything else pass.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> Verdict {
    let Some(tunnel) = vpn_tunnel() else {
        return (TC_ACT_OK, Counter::Passed);
    };
    let Ok(outer) = load_net::<Ipv4Hdr>(ctx, 0) else {
        return (TC_ACT_OK, Counter::NotIpv4);
    };
    // Only the tunnel from our i-HA to our TIA is ours (RFC 3024 §5.2's mirror image).
    if outer.version() != 4
        || outer.protocol != ipv4::PROTO_IPIP
        || outer.src_addr != tunnel.home_agent
        || outer.dst_addr != tunnel.care_of_addr
    {
        return (TC_ACT_OK, Counter::Passed);
    }
    if outer.is_fragment() {
        return (TC_ACT_SHOT, Counter::TunnelFragment);
    }
    if outer.ihl() != 5 {
        return (TC_ACT_SHOT, Counter::TunnelOptions);
    }
    let Ok(inner) = load_net::<Ipv4Hdr>(ctx, IP_HLEN) else {
        return (TC_ACT_SHOT, Counter::MalformedIpv4);
    };
    let room = usize::from(outer.total_len()).saturating_sub(IP_HLEN);
    let inner_len = usize::from(inner.total_len());
    if inner.version() != 4
        || inner.ihl() < IPV4_MIN_IHL
        || inner_len < usize::from(inner.ihl()) * 4
        || inner_len > room
        || usize::from(outer.total_len()) > ctx.len() as usize
    {
        return (TC_ACT_SHOT, Counter::MalformedIpv4);
    }
    if inner.dst_addr != tunnel.home_addr {
        return (TC_ACT_SHOT, Counter::MnTunnelRejected);
    }
    // RFC 2003 §3.1: the decapsulator MUST discard an inner datagram with TTL 0.
    if inner.ttl == 0 {
        return (TC_ACT_SHOT, Counter::TtlExceeded);
    }
    if ctx
        .adjust_room(-(IP_HLEN as i32), BPF_ADJ_ROOM_MAC, 0)
        .is_err()
    {
        return (TC_ACT_SHOT, Counter::MalformedIpv4);
    }
    // The stack goes on with the inner datagram, for the home address, one of ours.
    (TC_ACT_OK, Counter::MnVpnDecap)
}
