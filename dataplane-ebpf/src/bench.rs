//! Benchmark-only XDP programs (`cargo xtask bench dataplane`, BENCH-METHOD.md): a packet
//! generator for `BPF_PROG_TEST_RUN` in live-frames mode (plain, IP-in-IP or RFC 3519
//! IP-in-UDP frames), the XDP_REDIRECT baseline, the FIB
//! lookup and the binding lookup of `ha_xdp` on their own, and a sink that counts and drops.
//! `mipd` never attaches them. Map types live in `mipx_common::bench`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use mipx_common::{
    bench::{
        ENCAP_IPIP, ENCAP_UDP, FWD_CONFIG_MAP, FwdConfig, GEN_CONFIG_MAP, GEN_STATE_MAP, GenConfig,
        SINK_CONFIG_MAP, SINK_STATS_MAP, SinkConfig, SinkStats, VARY_SRC,
    },
    ipv4::{self, HEADER_LEN as IP_HLEN, UDP_TUNNEL_LEN},
};

use crate::{
    fib::{self, Route},
    maps::{BINDINGS, str_eq},
    parse::{ETH_HLEN, ETH_P_IP, EthHdr, Ipv4Hdr, Packet as _},
};

/// Length of a UDP header.
const UDP_HLEN: usize = 8;
/// Everything the generator writes in IP-in-IP mode.
const GEN_IPIP_HLEN: usize = ETH_HLEN + 2 * IP_HLEN + UDP_HLEN;
/// Everything the generator writes in IP-in-UDP mode (RFC 3519).
const GEN_IPUDP_HLEN: usize = ETH_HLEN + UDP_TUNNEL_LEN + IP_HLEN + UDP_HLEN;
/// Everything the generator writes in plain mode.
const GEN_UDP_HLEN: usize = ETH_HLEN + IP_HLEN + UDP_HLEN;

#[map(name = "MIPX_BENCH_GEN")]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

#[map(name = "MIPX_BENCH_GEN_STATE")]
static GEN_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "MIPX_BENCH_FWD")]
static FWD_CONFIG: Array<FwdConfig> = Array::with_max_entries(1, 0);

#[map(name = "MIPX_BENCH_SINK_CFG")]
static SINK_CONFIG: Array<SinkConfig> = Array::with_max_entries(1, 0);

#[map(name = "MIPX_BENCH_SINK")]
static SINK_STATS: PerCpuArray<SinkStats> = PerCpuArray::with_max_entries(1, 0);

const _: () = assert!(str_eq(GEN_CONFIG_MAP, "MIPX_BENCH_GEN"));
const _: () = assert!(str_eq(GEN_STATE_MAP, "MIPX_BENCH_GEN_STATE"));
const _: () = assert!(str_eq(FWD_CONFIG_MAP, "MIPX_BENCH_FWD"));
const _: () = assert!(str_eq(SINK_CONFIG_MAP, "MIPX_BENCH_SINK_CFG"));
const _: () = assert!(str_eq(SINK_STATS_MAP, "MIPX_BENCH_SINK"));

/// The generator. Run with `BPF_PROG_TEST_RUN`, `BPF_F_TEST_XDP_LIVE_FRAMES` and the context's
/// `ingress_ifindex` set to a veth: `XDP_TX` then sends the frame to the veth's peer.
///
/// Live-frame pages are recycled without being reset, and whatever is downstream (the HA
/// program, the kernel) rewrites frames in place, so every header byte is written on every
/// run; only the payload after the UDP header is left as the page holds it.
#[xdp]
pub fn mipx_bench_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN_CONFIG.get(0) else {
        return XDP_ABORTED;
    };
    let cfg = *cfg;
    let Some(state) = GEN_STATE.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // SAFETY: this CPU's slot of a live per-CPU element; nothing else on this CPU writes it
    // while the program runs.
    let index = unsafe {
        let index = if *state < cfg.count { *state } else { 0 };
        let next = index.wrapping_add(cfg.step);
        *state = if next >= cfg.count {
            next.wrapping_sub(cfg.count)
        } else {
            next
        };
        index
    };
    let (mut src, mut dst) = (cfg.src, cfg.dst);
    if cfg.vary == VARY_SRC {
        src = u32::from_be_bytes(src).wrapping_add(index).to_be_bytes();
    } else {
        dst = u32::from_be_bytes(dst).wrapping_add(index).to_be_bytes();
    }
    let frame_len = usize::from(cfg.frame_len);
    if !ctx.fits(0, frame_len) {
        return XDP_ABORTED;
    }
    let eth = EthHdr {
        dst: cfg.eth_dst,
        src: cfg.eth_src,
        ether_type: ETH_P_IP.to_be_bytes(),
    };
    let ip_len = frame_len.wrapping_sub(ETH_HLEN) as u16;
    if cfg.encap == ENCAP_IPIP {
        if frame_len < GEN_IPIP_HLEN {
            return XDP_ABORTED;
        }
        let Ok(base) = ctx.ptr_at::<[u8; GEN_IPIP_HLEN]>(0) else {
            return XDP_ABORTED;
        };
        let base = base.cast::<u8>();
        let inner_len = ip_len - IP_HLEN as u16;
        let outer = ipv4::header(
            0,
            ip_len,
            0,
            ipv4::DF,
            ipv4::PROTO_IPIP,
            cfg.outer_src,
            cfg.outer_dst,
        );
        let inner = ipv4::header(0, inner_len, 0, ipv4::DF, ipv4::PROTO_UDP, src, dst);
        let udp = udp_header(&cfg, inner_len - IP_HLEN as u16);
        // SAFETY: every write lies in the `GEN_IPIP_HLEN` bytes checked above; alignment 1.
        unsafe {
            *base.cast::<EthHdr>() = eth;
            *base.add(ETH_HLEN).cast::<[u8; IP_HLEN]>() = outer;
            *base.add(ETH_HLEN + IP_HLEN).cast::<[u8; IP_HLEN]>() = inner;
            *base.add(ETH_HLEN + 2 * IP_HLEN).cast::<[u8; UDP_HLEN]>() = udp;
        }
    } else if cfg.encap == ENCAP_UDP {
        if frame_len < GEN_IPUDP_HLEN {
            return XDP_ABORTED;
        }
        let Ok(base) = ctx.ptr_at::<[u8; GEN_IPUDP_HLEN]>(0) else {
            return XDP_ABORTED;
        };
        let base = base.cast::<u8>();
        let inner_len = ip_len - UDP_TUNNEL_LEN as u16;
        // The same builder `ha_xdp` encapsulates with: outer IPv4 (protocol 17, DF copied),
        // UDP without checksum, MIP Tunnel Data header.
        let Some(outer) = ipv4::udp_tunnel_header(
            ipv4::Inner {
                tos: 0,
                flags_frag: ipv4::DF,
                total_len: inner_len,
            },
            0,
            cfg.outer_src,
            cfg.outer_dst,
            cfg.tunnel_src_port,
            cfg.tunnel_dst_port,
        ) else {
            return XDP_ABORTED;
        };
        let inner = ipv4::header(0, inner_len, 0, ipv4::DF, ipv4::PROTO_UDP, src, dst);
        let udp = udp_header(&cfg, inner_len - IP_HLEN as u16);
        // SAFETY: every write lies in the `GEN_IPUDP_HLEN` bytes checked above; alignment 1.
        unsafe {
            *base.cast::<EthHdr>() = eth;
            *base.add(ETH_HLEN).cast::<[u8; UDP_TUNNEL_LEN]>() = outer;
            *base.add(ETH_HLEN + UDP_TUNNEL_LEN).cast::<[u8; IP_HLEN]>() = inner;
            *base
                .add(ETH_HLEN + UDP_TUNNEL_LEN + IP_HLEN)
                .cast::<[u8; UDP_HLEN]>() = udp;
        }
    } else {
        if frame_len < GEN_UDP_HLEN {
            return XDP_ABORTED;
        }
        let Ok(base) = ctx.ptr_at::<[u8; GEN_UDP_HLEN]>(0) else {
            return XDP_ABORTED;
        };
        let base = base.cast::<u8>();
        let ip = ipv4::header(0, ip_len, 0, ipv4::DF, ipv4::PROTO_UDP, src, dst);
        let udp = udp_header(&cfg, ip_len - IP_HLEN as u16);
        // SAFETY: every write lies in the `GEN_UDP_HLEN` bytes checked above; alignment 1.
        unsafe {
            *base.cast::<EthHdr>() = eth;
            *base.add(ETH_HLEN).cast::<[u8; IP_HLEN]>() = ip;
            *base.add(ETH_HLEN + IP_HLEN).cast::<[u8; UDP_HLEN]>() = udp;
        }
    }
    XDP_TX
}

/// A UDP header without checksum (0: none, RFC 768), `len` bytes of header and payload.
#[inline(always)]
fn udp_header(cfg: &GenConfig, len: u16) -> [u8; UDP_HLEN] {
    let (s, d, l) = (
        cfg.udp_src_port.to_be_bytes(),
        cfg.udp_dst_port.to_be_bytes(),
        len.to_be_bytes(),
    );
    [s[0], s[1], d[0], d[1], l[0], l[1], 0, 0]
}

/// The XDP_REDIRECT baseline: what the encapsulation path does minus the binding lookup, the
/// FIB lookup and the new header: rewrite both MAC addresses, `bpf_redirect` (the same helper
/// `ha_xdp` uses).
#[xdp]
pub fn mipx_bench_redirect(ctx: XdpContext) -> u32 {
    let Some(cfg) = FWD_CONFIG.get(0) else {
        return XDP_ABORTED;
    };
    let Ok(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return XDP_DROP;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet; alignment 1.
    unsafe {
        (*eth).src = cfg.smac;
        (*eth).dst = cfg.dmac;
    }
    // SAFETY: a plain helper call; it returns XDP_REDIRECT, or XDP_ABORTED on bad flags.
    unsafe { bpf_redirect(cfg.ifindex, 0) as u32 }
}

/// Only the FIB lookup `ha_xdp` does per packet (`bpf_fib_lookup` for the frame's own source
/// and destination, arriving on its ingress interface), to tell its cost apart in the
/// per-program figures: `XDP_DROP` when the route and neighbour resolve, `XDP_PASS` otherwise.
#[xdp]
pub fn mipx_bench_fib(ctx: XdpContext) -> u32 {
    let Ok(ip) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return XDP_ABORTED;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet; alignment 1.
    let ip = unsafe { *ip };
    match fib::lookup(
        ctx.ctx.cast(),
        ctx.ingress_ifindex() as u32,
        ip.src_addr,
        ip.dst_addr,
        ip.total_len(),
        0,
    ) {
        Route::Neighbour { .. } => XDP_DROP,
        _ => XDP_PASS,
    }
}

/// Only the binding lookup `ha_xdp` does per packet (the frame's destination in the binding
/// map, the binding copied out), to tell its cost apart: `XDP_DROP` when bound, else
/// `XDP_PASS`.
#[xdp]
pub fn mipx_bench_lookup(ctx: XdpContext) -> u32 {
    let Ok(ip) = ctx.ptr_at::<Ipv4Hdr>(ETH_HLEN) else {
        return XDP_ABORTED;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet; alignment 1.
    let dst = unsafe { (*ip).dst_addr };
    match BINDINGS.get_ptr(&dst) {
        // SAFETY: a live map value, copied out as `ha_xdp` does.
        Some(binding) => match unsafe { *binding } {
            b if b.care_of_addr != [0; 4] => XDP_DROP,
            _ => XDP_PASS,
        },
        None => XDP_PASS,
    }
}

/// The sink: counts every frame, and those that are not IPv4 of the expected protocol and
/// length (the per-run sanity check), then drops it.
#[xdp]
pub fn mipx_bench_sink(ctx: XdpContext) -> u32 {
    let Some(cfg) = SINK_CONFIG.get(0) else {
        return XDP_DROP;
    };
    let expected = usize::from(cfg.frame_len);
    // Length exactly `expected`, in the comparisons the verifier accepts (packet pointer
    // against the end pointer).
    let wrong_len = !ctx.fits(0, expected) || ctx.fits(0, expected + 1);
    let wrong_proto = match ctx.ptr_at::<[u8; ETH_HLEN + IP_HLEN]>(0) {
        // SAFETY: `ptr_at` checked the bytes lie inside the packet.
        Ok(head) => unsafe {
            let head = &*head;
            u16::from_be_bytes([head[12], head[13]]) != ETH_P_IP
                || head[ETH_HLEN + ipv4::field::PROTOCOL] != cfg.protocol
        },
        Err(_) => true,
    };
    if let Some(stats) = SINK_STATS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a live per-CPU element (see `stats::bump`).
        unsafe {
            (*stats).packets += 1;
            (*stats).wrong_len += u64::from(wrong_len);
            (*stats).wrong_proto += u64::from(wrong_proto);
        }
    }
    XDP_DROP
}
