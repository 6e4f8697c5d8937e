//! Addresses of the benchmark topology and the frames the generator sends, built in user space
//! exactly as `mipx_bench_gen` writes them (the per-program harness feeds these bytes to
//! `BPF_PROG_TEST_RUN`; the generator only needs their length).

use std::net::Ipv4Addr;

use mipx_common::{
    bench::{ENCAP_IPIP, ENCAP_NONE, ENCAP_UDP, GenConfig, VARY_DST, VARY_SRC},
    ipv4,
};

/// MAC addresses of the four interfaces (locally administered, "mb").
pub const MAC_GEN: [u8; 6] = [0x02, 0x6d, 0x62, 0, 0, 0x01];
pub const MAC_DUT_IN: [u8; 6] = [0x02, 0x6d, 0x62, 0, 0, 0x02];
pub const MAC_DUT_OUT: [u8; 6] = [0x02, 0x6d, 0x62, 0, 0, 0x03];
pub const MAC_SINK: [u8; 6] = [0x02, 0x6d, 0x62, 0, 0, 0x04];
/// The VXLAN baseline's inner next hop (never answers; a permanent neighbour entry).
pub const MAC_VXLAN_PEER: [u8; 6] = [0x02, 0x6d, 0x62, 0, 0, 0x05];

/// The correspondent node (generator side), 198.18.0.0/24 (RFC 2544 benchmarking space).
pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The DUT's address on the generator side; also the home agent address.
pub const DUT_IN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const HOME_AGENT: Ipv4Addr = DUT_IN_ADDR;
/// The DUT's address on the sink side.
pub const DUT_OUT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The sink; also every binding's care-of address, and the far end of the RFC 3519 UDP
/// tunnels (the address their registrations came from: a mobile node that forced UDP
/// tunnelling, or the NAT in front of it).
pub const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const CARE_OF: Ipv4Addr = SINK_ADDR;
pub const UDP_TUNNEL_PEER: Ipv4Addr = SINK_ADDR;
/// The far end's UDP port of the RFC 3519 tunnels (the registration's source port, as a NAT
/// would have mapped it).
pub const UDP_TUNNEL_PEER_PORT: u16 = 40_000;
/// The home agent's registration port: its end of every UDP tunnel.
pub const HA_UDP_PORT: u16 = 434;
/// A correspondent behind the sink: inner destination of reverse-tunnelled packets.
pub const CN_BEHIND_SINK: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// First home address; the bound ones are `HOME_BASE + i`.
pub const HOME_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const HOME_PREFIX: &str = "10.0.0.0/8";
/// The VXLAN baseline's overlay: DUT side and the inner next hop.
pub const VXLAN_ADDR: &str = "172.31.0.1/30";
pub const VXLAN_PEER: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
pub const VXLAN_VNI: u32 = 42;
pub const VXLAN_PORT: u16 = 4789;
pub const UDP_SRC_PORT: u16 = 9;
pub const UDP_DST_PORT: u16 = 9;

/// Ethernet + IPv4 + UDP header lengths.
pub const ETH_HLEN: usize = 14;
pub const IP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// What RFC 3519 IP-in-UDP adds: outer IPv4, UDP, MIP Tunnel Data header.
pub const UDP_TUNNEL_LEN: usize = ipv4::UDP_TUNNEL_LEN;
/// VXLAN adds outer Ethernet, IPv4, UDP and the VXLAN header.
pub const VXLAN_OVERHEAD: usize = ETH_HLEN + IP_HLEN + UDP_HLEN + 8;

/// A step through `count` addresses that visits each once per cycle (coprime with `count`),
/// near `count / φ` so consecutive frames land far apart.
pub fn step_for(count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut step = ((f64::from(count) * 0.618_034) as u32).max(1);
    while gcd(step, count) != 1 {
        step += 1;
    }
    step % count
}

/// The generator's configuration for plain IPv4/UDP frames of `frame_len` bytes from the
/// correspondent to `count` home addresses (the destination varies).
pub fn to_home_addresses(frame_len: u16, count: u32) -> GenConfig {
    GenConfig {
        eth_dst: MAC_DUT_IN,
        eth_src: MAC_GEN,
        outer_src: [0; 4],
        outer_dst: [0; 4],
        src: GEN_ADDR.octets(),
        dst: HOME_BASE.octets(),
        count: count.max(1),
        step: step_for(count),
        frame_len,
        encap: ENCAP_NONE,
        vary: VARY_DST,
        udp_src_port: UDP_SRC_PORT,
        udp_dst_port: UDP_DST_PORT,
        tunnel_src_port: 0,
        tunnel_dst_port: 0,
    }
}

/// The generator's configuration for reverse-tunnelled frames (RFC 3024): IP-in-IP from the
/// care-of address to the home agent, around IPv4/UDP from one of `count` home addresses to a
/// correspondent. `inner_len` is the inner datagram's frame length (what leaves the DUT after
/// decapsulation); the frames sent are 20 bytes longer.
pub fn reverse_tunnelled(inner_len: u16, count: u32) -> GenConfig {
    GenConfig {
        eth_dst: MAC_DUT_IN,
        eth_src: MAC_GEN,
        outer_src: CARE_OF.octets(),
        outer_dst: HOME_AGENT.octets(),
        src: HOME_BASE.octets(),
        dst: CN_BEHIND_SINK.octets(),
        count: count.max(1),
        step: step_for(count),
        frame_len: inner_len + IP_HLEN as u16,
        encap: ENCAP_IPIP,
        vary: VARY_SRC,
        udp_src_port: UDP_SRC_PORT,
        udp_dst_port: UDP_DST_PORT,
        tunnel_src_port: 0,
        tunnel_dst_port: 0,
    }
}

/// The same through an RFC 3519 UDP tunnel (§4.3): IP-in-UDP from the tunnel's far end
/// ([`UDP_TUNNEL_PEER`], port [`UDP_TUNNEL_PEER_PORT`]) to the home agent's registration port;
/// the frames sent are 32 bytes longer than `inner_len`.
pub fn udp_reverse_tunnelled(inner_len: u16, count: u32) -> GenConfig {
    GenConfig {
        outer_src: UDP_TUNNEL_PEER.octets(),
        frame_len: inner_len + UDP_TUNNEL_LEN as u16,
        encap: ENCAP_UDP,
        tunnel_src_port: UDP_TUNNEL_PEER_PORT,
        tunnel_dst_port: HA_UDP_PORT,
        ..reverse_tunnelled(inner_len, count)
    }
}

/// A frame from the home agent to the care-of address: what `ha_xdp`'s FIB lookup asks about
/// when it encapsulates (for `mipx_bench_fib`, which looks up the frame's own addresses).
pub fn fib_probe(frame_len: u16) -> GenConfig {
    GenConfig {
        src: HOME_AGENT.octets(),
        dst: CARE_OF.octets(),
        ..to_home_addresses(frame_len, 1)
    }
}

/// The `index`-th frame of `cfg` (index counted in steps: address `base + index`), byte for
/// byte what `mipx_bench_gen` writes over a zeroed payload.
pub fn frame(cfg: &GenConfig, index: u32) -> Vec<u8> {
    let len = usize::from(cfg.frame_len);
    let mut f = vec![0u8; len];
    let (mut src, mut dst) = (cfg.src, cfg.dst);
    let varied = index % cfg.count.max(1);
    if cfg.vary == VARY_SRC {
        src = u32::from_be_bytes(src).wrapping_add(varied).to_be_bytes();
    } else {
        dst = u32::from_be_bytes(dst).wrapping_add(varied).to_be_bytes();
    }
    f[0..6].copy_from_slice(&cfg.eth_dst);
    f[6..12].copy_from_slice(&cfg.eth_src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - ETH_HLEN) as u16;
    let mut at = ETH_HLEN;
    let mut inner_len = ip_len;
    if cfg.encap == ENCAP_UDP {
        inner_len -= UDP_TUNNEL_LEN as u16;
        let outer = ipv4::udp_tunnel_header(
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
        )
        .expect("a benchmark frame fits in 64 KiB");
        f[at..at + UDP_TUNNEL_LEN].copy_from_slice(&outer);
        at += UDP_TUNNEL_LEN;
    } else if cfg.encap == ENCAP_IPIP {
        let outer = ipv4::header(
            0,
            ip_len,
            0,
            ipv4::DF,
            ipv4::PROTO_IPIP,
            cfg.outer_src,
            cfg.outer_dst,
        );
        f[at..at + IP_HLEN].copy_from_slice(&outer);
        at += IP_HLEN;
        inner_len -= IP_HLEN as u16;
    }
    let ip = ipv4::header(0, inner_len, 0, ipv4::DF, ipv4::PROTO_UDP, src, dst);
    f[at..at + IP_HLEN].copy_from_slice(&ip);
    at += IP_HLEN;
    let udp_len = inner_len - IP_HLEN as u16;
    f[at..at + 2].copy_from_slice(&cfg.udp_src_port.to_be_bytes());
    f[at + 2..at + 4].copy_from_slice(&cfg.udp_dst_port.to_be_bytes());
    f[at + 4..at + 6].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_coprime() {
        for n in [1u32, 2, 10, 1000, 1_000_000, 1_048_576] {
            let s = step_for(n);
            assert!(n == 1 || s > 0);
            let mut seen = std::collections::HashSet::new();
            let mut i = 0u32;
            for _ in 0..n.min(5000) {
                assert!(seen.insert(i));
                i = (i + s) % n;
            }
        }
    }

    #[test]
    fn frames_have_valid_checksums_and_lengths() {
        let f = frame(&to_home_addresses(60, 1000), 7);
        assert_eq!(f.len(), 60);
        assert!(ipv4::checksum_ok(f[14..34].try_into().unwrap()));
        assert_eq!(&f[30..34], &[10, 0, 0, 8]);
        let f = frame(&reverse_tunnelled(60, 1000), 3);
        assert_eq!(f.len(), 80);
        assert_eq!(f[23], ipv4::PROTO_IPIP);
        assert!(ipv4::checksum_ok(f[34..54].try_into().unwrap()));
        assert_eq!(&f[46..50], &[10, 0, 0, 4]);
        let f = frame(&udp_reverse_tunnelled(60, 1000), 5);
        assert_eq!(f.len(), 92);
        assert_eq!(f[23], ipv4::PROTO_UDP);
        assert!(ipv4::checksum_ok(f[14..34].try_into().unwrap()));
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 78);
        assert_eq!(&f[34..36], &UDP_TUNNEL_PEER_PORT.to_be_bytes());
        assert_eq!(&f[36..38], &HA_UDP_PORT.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 78 - 20);
        assert_eq!(&f[42..46], &[4, 4, 0, 0]);
        assert!(ipv4::checksum_ok(f[46..66].try_into().unwrap()));
        assert_eq!(f[46 + 9], ipv4::PROTO_UDP);
        assert_eq!(&f[58..62], &[10, 0, 0, 6]);
    }
}
