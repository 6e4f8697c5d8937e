//! Per-CPU dataplane counters (DESIGN.md §1.5): one `PerCpuArray<u64>` named
//! [`COUNTERS_MAP`](crate::maps::COUNTERS_MAP), indexed by [`Counter`]. Every verdict of every
//! program bumps exactly one slot, so `mipctl stats` can account for every packet.

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $variant:ident = $index:literal => $name:literal,)+) => {
        /// A counter slot. The discriminant is the index into the per-CPU array; never reorder,
        /// only append, because pinned maps outlive a `mipd` upgrade.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant = $index,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];
            /// Number of slots the counter map must hold.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// The stable name shown by `mipctl stats`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }
    };
}

counters! {
    /// A packet that no program of ours was concerned with (passed to the stack untouched).
    Passed = 0 => "passed",
    /// A frame too short for the Ethernet header (passed).
    TruncatedEth = 1 => "truncated_eth",
    /// A non-IPv4 frame that is not an ARP request we answer (passed).
    NotIpv4 = 2 => "not_ipv4",
    /// An IPv4 packet whose header is truncated or has a bad IHL/total length (dropped).
    MalformedIpv4 = 3 => "malformed_ipv4",
    /// HA: a packet for an away mobile node, encapsulated (RFC 2003) and sent (XDP_TX/redirect).
    HaEncapTx = 4 => "ha_encap_tx",
    /// HA: encapsulated, but the next hop's link-layer address is not known yet: handed to the
    /// kernel, which resolves it and forwards the tunnel packet.
    HaEncapToStack = 5 => "ha_encap_to_stack",
    /// HA: a reverse-tunnelled packet (RFC 3024), decapsulated and forwarded.
    HaDecapTx = 6 => "ha_decap_tx",
    /// HA: decapsulated and handed to the kernel (addressed to the HA, or next hop unresolved).
    HaDecapToStack = 7 => "ha_decap_to_stack",
    /// HA: IP-in-IP to the HA whose inner source is not a home address bound, with reverse
    /// tunnelling, to the outer source (RFC 3024 §4.2; dropped).
    ReverseTunnelRejected = 8 => "reverse_tunnel_rejected",
    /// A fragment of a tunnel packet: XDP cannot reassemble (dropped).
    TunnelFragment = 9 => "tunnel_fragment",
    /// A tunnel packet whose outer header carries IP options (dropped).
    TunnelOptions = 10 => "tunnel_options",
    /// TTL would reach 0 on forwarding (RFC 2003 §3.1): passed to the kernel, which returns
    /// ICMP Time Exceeded.
    TtlExceeded = 11 => "ttl_exceeded",
    /// Too big for the tunnel with DF set: ICMP Fragmentation Needed returned to the sender
    /// with the tunnel MTU (RFC 2003 §5.1, RFC 1191).
    FragNeededSent = 12 => "frag_needed_sent",
    /// Too big for the tunnel and DF clear (or the header has options): XDP cannot fragment
    /// (dropped).
    TooBig = 13 => "too_big",
    /// No route to the tunnel's far end (dropped).
    NoRoute = 14 => "no_route",
    /// HA: an ARP request for an away mobile node's home address, answered (RFC 5944 §4.6).
    ArpProxied = 15 => "arp_proxied",
    /// HA: would tunnel a packet back to where it came from (RFC 2003 §3.2, RFC 5944 §4.2.3;
    /// dropped).
    TunnelLoop = 16 => "tunnel_loop",
    /// MN: a packet from the home address, reverse-tunnelled to the home agent (RFC 3024).
    MnEncap = 17 => "mn_encap",
    /// MN: a packet from the home agent's tunnel, decapsulated for local delivery.
    MnDecap = 18 => "mn_decap",
    /// MN: IP-in-IP from the home agent whose inner destination is not the home address
    /// (dropped).
    MnTunnelRejected = 19 => "mn_tunnel_rejected",
    /// MN: a kernel helper refused to resize the packet (dropped).
    MnEncapFailed = 20 => "mn_encap_failed",
    /// HA: a packet for an away mobile node, encapsulated IP-in-UDP (RFC 3519 §4.2) toward the
    /// NAT's address and port, and sent.
    HaUdpEncapTx = 21 => "ha_udp_encap_tx",
    /// HA: an IP-in-UDP reverse-tunnelled packet (RFC 3519 §4.3), decapsulated and forwarded.
    HaUdpDecapTx = 22 => "ha_udp_decap_tx",
    /// A MIP tunnel data message on the registration port whose outer addresses and ports do
    /// not match a UDP-tunnelled binding (§4.3), whose Next Header is not 4 (§3.3), or that
    /// reached a binding without UDP tunnelling (§4.7) (dropped).
    UdpTunnelRejected = 23 => "udp_tunnel_rejected",
    /// A UDP-tunnelled ICMP echo between the mobile node and the home agent: a keepalive
    /// (RFC 3519 §4.9), passed up to `mipd`, which answers or takes note.
    UdpKeepalive = 24 => "udp_keepalive",
    /// MN: a packet from the home address, reverse-tunnelled IP-in-UDP (RFC 3519 §4.2).
    MnUdpEncap = 25 => "mn_udp_encap",
    /// MN: an IP-in-UDP packet from the home agent, decapsulated for local delivery.
    MnUdpDecap = 26 => "mn_udp_decap",
    /// MN: user data on an interface whose RFC 5265 gate is closed (connection status
    /// changed, detecting, or outside without a VPN): dropped (§3.2.2).
    GateClosed = 27 => "gate_closed",
    /// MN: user data on an interface inside the intranet more than T_MONITOR after the last
    /// successful i-HA registration: dropped by the kernel clock (RFC 5265 §3.2.4).
    GateExpired = 28 => "gate_expired",
    /// MN, VPN device egress: a packet from the home address, tunnelled IP-in-IP from the
    /// tunnel inner address to the i-HA inside the VPN (RFC 5265 §2.3, the mc and cvc modes).
    MnVpnEncap = 29 => "mn_vpn_encap",
    /// MN, VPN device ingress: the i-HA's IP-in-IP tunnel to the tunnel inner address,
    /// decapsulated for local delivery.
    MnVpnDecap = 30 => "mn_vpn_decap",
    /// FA: IP-in-IP from a visitor's home agent to its care-of address, decapsulated and
    /// delivered on the visitor's link straight to its link-layer address (RFC 5944 §4.2.2,
    /// §4.6: no ARP for the home address), inner TTL decremented (XDP_TX/redirect).
    FaDecapTx = 31 => "fa_decap_tx",
    /// FA: IP-in-IP to one of our care-of addresses whose inner destination is in no visitor
    /// entry: silently discarded, no ICMP (RFC 5944 §4.2.2; dropped).
    FaUnknownVisitor = 32 => "fa_unknown_visitor",
    /// FA: a tunnel packet for a visitor that is not the tunnel it registered: outer source
    /// not its home agent (RFC 2003 §6.2, RFC 3519 §4.3), outer destination not its care-of
    /// address, or the other tunnelling mode (IP-in-IP for a visitor with UDP tunnelling or
    /// the reverse, RFC 3519 §4.7); or a MIP tunnel data message whose Next Header is not 4
    /// (RFC 3519 §3.3) (dropped).
    FaTunnelRejected = 33 => "fa_tunnel_rejected",
    /// FA: a tunnelled datagram for a visitor whose inner TTL is 0 (RFC 2003 §3.1: MUST
    /// discard) or 1 (forwarding it to the visitor would take it to 0); no ICMP (dropped).
    FaTtlExpired = 34 => "fa_ttl_expired",
    /// FA: a datagram from a visitor with reverse tunnelling, encapsulated IP-in-IP from its
    /// care-of address to its home agent (RFC 3024 §5.1) and sent (XDP_TX/redirect).
    FaEncapTx = 35 => "fa_encap_tx",
    /// FA: reverse-tunnelled, but the next hop toward the home agent is not resolved: handed
    /// to the kernel, which resolves it and forwards the tunnel packet.
    FaEncapToStack = 36 => "fa_encap_to_stack",
    /// FA: from a visitor's home address on its link, but from another Ethernet source than
    /// the one its registration came from (RFC 3024 Appendix A.3; dropped).
    FaVisitorMacMismatch = 37 => "fa_visitor_mac_mismatch",
    /// FA: from a visitor that was not granted reverse tunnelling: passed to the kernel,
    /// which routes it (triangle routing, RFC 5944 §4.2.2).
    FaTriangle = 38 => "fa_triangle",
    /// FA: from a visitor to the foreign agent itself: a registration request (UDP to the
    /// registration port), an agent or router solicitation (ICMP type 10), a datagram for the
    /// care-of address, a broadcast or multicast: passed to the kernel, never tunnelled.
    FaToAgent = 39 => "fa_to_agent",
    /// FA: the visitor's interface is not in `MIPX_IFACES`, so its link-layer source is
    /// unknown: `mipd` has not configured that interface (dropped).
    FaNoIface = 40 => "fa_no_iface",
    /// FA: IP-in-UDP (RFC 3519 §4.3) from a visitor's home agent, port 434, to its care-of
    /// address and our registration port, decapsulated and delivered on the visitor's link to
    /// its link-layer address as [`FaDecapTx`](Counter::FaDecapTx) (XDP_TX/redirect).
    FaUdpDecapTx = 41 => "fa_udp_decap_tx",
    /// FA: a datagram from a visitor with reverse tunnelling and UDP tunnelling, encapsulated
    /// IP-in-UDP from its care-of address and our registration port to its home agent's port
    /// 434 (RFC 3519 §4.2, §4.7) and sent (XDP_TX/redirect).
    FaUdpEncapTx = 42 => "fa_udp_encap_tx",
    /// FA: a UDP-tunnelled ICMP datagram to the care-of address itself: the home agent's
    /// answer to the foreign agent's keepalive (RFC 3519 §4.9), passed up to `mipd`.
    FaKeepalive = 43 => "fa_keepalive",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
