//! The eBPF object, loaded through `mipx_control::dataplane` and exercised with
//! `BPF_PROG_TEST_RUN` over one fixture table covering every program (DESIGN.md §6), plus one
//! native attach to a veth inside network namespaces. Privileged: these tests fail (never skip)
//! without root.
//!
//! Each fixture names its program, the map set-up, the interface the frame arrives on, the
//! input frame, the verdict, the output frame (or "untouched") and the one counter that must
//! move, by exactly one. Frames come from `common/fixtures/gen_dataplane.py` (scapy, never our
//! own emitter: DESIGN.md §1.7); its README lists every frame's scapy expression.
//!
//! A few rows run instead through the program attached to a real device, the packet sent
//! through it as traffic is: the VPN device's encapsulation and decapsulation, which the test
//! run cannot give an skb like an L3 device's (see [`VPN0`] and [`run_attached`]).
//!
//! The programs call `bpf_fib_lookup`, which answers from the routes and neighbours of the
//! namespace of the device the frame "arrived" on. So the table runs inside the namespaces of
//! `mipx_tests::bpf_fixture_env` (shared with the foreign agent's benchmark), one each for the
//! home agent, the mobile node and the foreign agent, with routes, permanent neighbour entries
//! and MAC addresses matching the generator's topology; the test thread enters the fixture's
//! namespace and passes the ingress interface to the test run.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpMode,
};
use mipx_common::{
    counters::Counter::{self, *},
    maps::{
        ALL_MAPS, BINDINGS_MAP, COUNTERS_MAP, FA_CARE_OF_MAP, FA_CONFIG_MAP, FA_VISITORS_MAP,
        FaDataplaneConfig, FaVisitor, GATE_CLOSED, GATE_INSIDE, GATE_OUTSIDE, HA_CONFIG_MAP,
        HaBinding, HaDataplaneConfig, IFACES_MAP, IP_ID_MAP, IfaceInfo, MN_ACTIVE, MN_GATE_MAP,
        MN_REVERSE_TUNNEL, MN_TUNNEL_MAP, MN_UDP_TUNNEL, MN_VIA_VPN, MN_VPN_SPIS_MAP, MnGate,
        MnTunnel, NEXTHOP_MAP, NEXTHOP_SLOTS, NextHop,
    },
};
use mipx_control::dataplane::{
    Dataplane,
    programs::{
        ALL_TC, ALL_XDP, FA_XDP, HA_XDP, MIPX_DROP, MIPX_PASS, MN_TC_EGRESS, MN_TC_VPN_EGRESS,
        MN_TC_VPN_INGRESS, MN_XDP,
    },
};
use mipx_tests::{
    Netns,
    bpf::{
        XdpRun, run_tc, run_xdp, run_xdp_on,
        tc_action::{self, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
        xdp_action::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    },
    bpf_fixture_env::{
        FA_LINK, FA_UP, GW_MAC, HA, HA_HOME, HA_UP, IP_ID, MN0, Setup, Topology, VPN0, apply,
        counters, fixture_dir, ip, mac_str, namespace, preset_ip_id, read_frame,
    },
    require_root, veth_pair,
};

/// How long an attached run waits for a packet before taking the silence for a drop.
const SILENCE: Duration = Duration::from_millis(200);

// ---- the table -------------------------------------------------------------------------------

/// What the program must leave in the packet buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Exactly the input.
    Untouched,
    /// Exactly `<frame>.out.bin`.
    Rewritten,
}
use Output::{Rewritten, Untouched};

struct Fixture {
    name: String,
    /// File stem under `common/fixtures/dataplane/`.
    frame: &'static str,
    program: &'static str,
    setup: Setup,
    /// Interface the frame arrives on (XDP) or the skb's device (TC); `None`: loopback.
    ingress: Option<&'static str>,
    verdict: u32,
    output: Output,
    /// The one counter that must move by one; `None`: no counter may move (the baselines).
    counter: Option<Counter>,
    /// Run through the program attached to the real device (see [`run_attached`]).
    attached: bool,
}

fn fx(
    frame: &'static str,
    program: &'static str,
    setup: Setup,
    ingress: Option<&'static str>,
    verdict: u32,
    output: Output,
    counter: Counter,
) -> Fixture {
    Fixture {
        name: frame.to_owned(),
        frame,
        program,
        setup,
        ingress,
        verdict,
        output,
        counter: Some(counter),
        attached: false,
    }
}

impl Fixture {
    /// The same fixture under another name (one frame, several set-ups).
    fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The same fixture run through the program attached to the VPN device rather than by
    /// `BPF_PROG_TEST_RUN` (see [`run_attached`]).
    fn attached(mut self) -> Self {
        self.attached = true;
        self
    }
}

/// A fixture on mn0 with the RFC 5265 gate in `state` (see [`Setup::Gated`]).
#[expect(clippy::too_many_arguments, reason = "one table row")]
fn gated(
    frame: &'static str,
    program: &'static str,
    state: u32,
    expired: bool,
    udp: bool,
    verdict: u32,
    output: Output,
    counter: Counter,
) -> Fixture {
    let setup = Setup::Gated {
        state,
        expired,
        udp,
        vpn: false,
    };
    fx(frame, program, setup, Some(MN0), verdict, output, counter)
}

/// A fixture on mn0 whose gate is in `state` and knows the VPN (see [`Setup::Gated`]).
fn gated_vpn(
    frame: &'static str,
    program: &'static str,
    state: u32,
    verdict: u32,
    counter: Counter,
) -> Fixture {
    let setup = Setup::Gated {
        state,
        expired: false,
        udp: false,
        vpn: true,
    };
    fx(
        frame,
        program,
        setup,
        Some(MN0),
        verdict,
        Untouched,
        counter,
    )
}

/// A baseline program on someone else's frame: it must touch nothing, count nothing.
fn baseline(frame: &'static str, program: &'static str, verdict: u32) -> Fixture {
    Fixture {
        name: format!("{program} on {frame}"),
        frame,
        program,
        setup: Setup::Ha,
        ingress: None,
        verdict,
        output: Untouched,
        counter: None,
        attached: false,
    }
}

/// The table. One row per line (hence no rustfmt): frame (file stem, and fixture name),
/// verdict, output, counter; the helper says program, set-up and ingress interface.
#[rustfmt::skip]
fn fixtures() -> Vec<Fixture> {
    const ACTIVE: u32 = MN_ACTIVE | MN_REVERSE_TUNNEL;
    let (up, home, mn0) = (Some(HA_UP), Some(HA_HOME), Some(MN0));
    // ha_xdp, configured, frame arriving on ha-up or on the home link.
    let ha = |frame, verdict, output, counter| fx(frame, HA_XDP, Setup::Ha, up, verdict, output, counter);
    let on_home = |frame, verdict, output, counter| fx(frame, HA_XDP, Setup::Ha, home, verdict, output, counter);
    // mn_xdp and mn_tc_egress, registered with reverse tunnelling, on mn0.
    let mn = |frame, verdict, output, counter| fx(frame, MN_XDP, Setup::Mn(ACTIVE), mn0, verdict, output, counter);
    let tc = |frame, verdict, output, counter| fx(frame, MN_TC_EGRESS, Setup::Mn(ACTIVE), mn0, verdict, output, counter);
    // The same in UDP tunnelling mode (RFC 3519).
    let mn_udp = |frame, verdict, output, counter| fx(frame, MN_XDP, Setup::MnUdp(ACTIVE), mn0, verdict, output, counter);
    let tc_udp = |frame, verdict, output, counter| fx(frame, MN_TC_EGRESS, Setup::MnUdp(ACTIVE), mn0, verdict, output, counter);
    // The tunnel inside the VPN (RFC 5265 §2.3): mn_tc_vpn_egress and mn_tc_vpn_ingress on the
    // VPN's L3 device, registered through it with reverse tunnelling.
    const VIA_VPN: u32 = ACTIVE | MN_VIA_VPN;
    let vpn0 = Some(VPN0);
    let vpn_out = |frame, verdict, output, counter| fx(frame, MN_TC_VPN_EGRESS, Setup::MnVpn(VIA_VPN), vpn0, verdict, output, counter);
    let vpn_in = |frame, verdict, output, counter| fx(frame, MN_TC_VPN_INGRESS, Setup::MnVpn(VIA_VPN), vpn0, verdict, output, counter);
    // Mode cvc (RFC 5265 §2.3) on mn0: the internal home address's tunnel through the VPN
    // (slot 0), the x-HoA's to the x-HA with reverse tunnelling (slot 1; IP-in-IP, or
    // IP-in-UDP for the `_udp` helpers), the gate in `state` knowing the VPN and the x-HA.
    const OUTER_UDP: u32 = ACTIVE | MN_UDP_TUNNEL;
    let cvc = |home, outer, state, x_ha| Setup::Cvc { home, outer, state, x_ha };
    let cvc_in = |frame, state, verdict, output, counter| fx(frame, MN_XDP, cvc(VIA_VPN, ACTIVE, state, true), mn0, verdict, output, counter);
    let cvc_out = |frame, state, verdict, output, counter| fx(frame, MN_TC_EGRESS, cvc(VIA_VPN, ACTIVE, state, true), mn0, verdict, output, counter);
    let cvc_udp_in = |frame, state, verdict, output, counter| fx(frame, MN_XDP, cvc(VIA_VPN, OUTER_UDP, state, true), mn0, verdict, output, counter);
    let cvc_udp_out = |frame, state, verdict, output, counter| fx(frame, MN_TC_EGRESS, cvc(VIA_VPN, OUTER_UDP, state, true), mn0, verdict, output, counter);
    // fa_xdp, configured: frames from the router arriving on fa-up, from visitors on fa-link.
    let (fa_up, fa_link) = (Some(FA_UP), Some(FA_LINK));
    let fa_in = |frame, verdict, output, counter| fx(frame, FA_XDP, Setup::Fa, fa_up, verdict, output, counter);
    let fa_out = |frame, verdict, output, counter| fx(frame, FA_XDP, Setup::Fa, fa_link, verdict, output, counter);
    vec![
        // ha_xdp: not ours, or not enabled.
        fx("ha_disabled_passes", HA_XDP, Setup::HaDisabled, up, XDP_PASS, Untouched, Passed),
        fx("ha_disabled_passes", HA_XDP, Setup::Empty, up, XDP_PASS, Untouched, Passed)
            .named("ha_empty_maps_pass"),
        ha("ha_unbound_passes", XDP_PASS, Untouched, Passed),
        ha("ha_unbound_padded_passes", XDP_PASS, Untouched, Passed),
        ha("ha_ipv6_passes", XDP_PASS, Untouched, NotIpv4),
        ha("ha_vlan_passes", XDP_PASS, Untouched, NotIpv4),
        // ha_xdp: malformed Ethernet and IPv4.
        ha("ha_runt_passes", XDP_PASS, Untouched, TruncatedEth),
        ha("ha_eth_only_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_truncated_ip_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_version6_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_ihl4_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_ihl15_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_total_len_short_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_total_len_long_drops", XDP_DROP, Untouched, MalformedIpv4),
        // ha_xdp: encapsulation (RFC 2003 §3.1, RFC 5944 §4.2.3).
        ha("ha_encap_tx", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_no_df", XDP_TX, Rewritten, HaEncapTx),
        on_home("ha_encap_redirect", XDP_REDIRECT, Rewritten, HaEncapTx),
        ha("ha_encap_inner_options", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_nested", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_fragment", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_ttl2", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_ttl1_passes", XDP_PASS, Untouched, TtlExceeded),
        ha("ha_encap_ttl0_passes", XDP_PASS, Untouched, TtlExceeded),
        ha("ha_encap_from_coa_drops", XDP_DROP, Untouched, TunnelLoop),
        ha("ha_encap_from_ha_drops", XDP_DROP, Untouched, TunnelLoop),
        ha("ha_encap_unresolved_to_stack", XDP_PASS, Rewritten, HaEncapToStack),
        ha("ha_encap_no_route_drops", XDP_DROP, Untouched, NoRoute),
        ha("ha_encap_unreachable_drops", XDP_DROP, Untouched, NoRoute),
        // ha_xdp: too big for the tunnel (RFC 2003 §5.1, RFC 1191).
        ha("ha_encap_fits_route_mtu", XDP_TX, Rewritten, HaEncapTx),
        ha("ha_encap_frag_needed", XDP_TX, Rewritten, FragNeededSent),
        ha("ha_encap_too_big_no_df_drops", XDP_DROP, Untouched, TooBig),
        ha("ha_encap_too_big_options_drops", XDP_DROP, Untouched, TooBig),
        // ha_xdp: proxy ARP (RFC 5944 §4.6).
        on_home("ha_arp_proxy_reply", XDP_TX, Rewritten, ArpProxied),
        ha("ha_arp_not_home_link_passes", XDP_PASS, Untouched, NotIpv4),
        on_home("ha_arp_unbound_passes", XDP_PASS, Untouched, NotIpv4),
        on_home("ha_arp_gratuitous_passes", XDP_PASS, Untouched, NotIpv4),
        on_home("ha_arp_reply_passes", XDP_PASS, Untouched, NotIpv4),
        on_home("ha_arp_truncated_passes", XDP_PASS, Untouched, NotIpv4),
        // ha_xdp: reverse-tunnel decapsulation (RFC 3024 §4.2).
        ha("ha_decap_tx", XDP_TX, Rewritten, HaDecapTx),
        ha("ha_decap_redirect", XDP_REDIRECT, Rewritten, HaDecapTx),
        ha("ha_decap_local_to_stack", XDP_PASS, Rewritten, HaDecapToStack),
        ha("ha_decap_unresolved_to_stack", XDP_PASS, Rewritten, HaDecapToStack),
        ha("ha_decap_ttl1_to_stack", XDP_PASS, Rewritten, HaDecapToStack),
        ha("ha_decap_ttl0_drops", XDP_DROP, Untouched, TtlExceeded),
        ha("ha_decap_wrong_coa_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_decap_unbound_inner_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_decap_no_reverse_flag_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_decap_other_ha_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_decap_outer_mf_drops", XDP_DROP, Untouched, TunnelFragment),
        ha("ha_decap_outer_offset_drops", XDP_DROP, Untouched, TunnelFragment),
        ha("ha_decap_outer_options_drops", XDP_DROP, Untouched, TunnelOptions),
        ha("ha_decap_inner_truncated_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_decap_inner_too_long_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_decap_inner_version_drops", XDP_DROP, Untouched, MalformedIpv4),
        // ha_xdp: IP-in-UDP encapsulation toward the NAT (RFC 3519 §4.2).
        ha("ha_udp_encap_tx", XDP_TX, Rewritten, HaUdpEncapTx),
        ha("ha_udp_encap_no_df", XDP_TX, Rewritten, HaUdpEncapTx),
        on_home("ha_udp_encap_redirect", XDP_REDIRECT, Rewritten, HaUdpEncapTx),
        ha("ha_udp_encap_unresolved_to_stack", XDP_PASS, Rewritten, HaEncapToStack),
        ha("ha_udp_encap_from_nat", XDP_TX, Rewritten, HaUdpEncapTx),
        ha("ha_udp_encap_from_coa_drops", XDP_DROP, Untouched, TunnelLoop),
        ha("ha_udp_encap_ttl1_passes", XDP_PASS, Untouched, TtlExceeded),
        ha("ha_udp_encap_fits_route_mtu", XDP_TX, Rewritten, HaUdpEncapTx),
        ha("ha_udp_encap_frag_needed", XDP_TX, Rewritten, FragNeededSent),
        ha("ha_udp_encap_too_big_no_df_drops", XDP_DROP, Untouched, TooBig),
        // ha_xdp: IP-in-UDP decapsulation and keepalives (RFC 3519 §4.3, §4.9).
        ha("ha_udp_decap_tx", XDP_TX, Rewritten, HaUdpDecapTx),
        ha("ha_udp_decap_redirect", XDP_REDIRECT, Rewritten, HaUdpDecapTx),
        ha("ha_udp_decap_local_to_stack", XDP_PASS, Rewritten, HaDecapToStack),
        ha("ha_udp_decap_unresolved_to_stack", XDP_PASS, Rewritten, HaDecapToStack),
        ha("ha_udp_decap_reserved_ignored", XDP_TX, Rewritten, HaUdpDecapTx),
        ha("ha_udp_decap_ttl0_drops", XDP_DROP, Untouched, TtlExceeded),
        ha("ha_udp_keepalive_passes", XDP_PASS, Untouched, UdpKeepalive),
        ha("ha_udp_keepalive_no_reverse_passes", XDP_PASS, Untouched, UdpKeepalive),
        // Keepalives go up before any binding is looked up (§4.5, §4.11): mipd authenticates.
        ha("ha_udp_keepalive_from_fa_passes", XDP_PASS, Untouched, UdpKeepalive),
        ha("ha_udp_keepalive_wrong_sport_passes", XDP_PASS, Untouched, UdpKeepalive),
        ha("ha_udp_decap_no_reverse_flag_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_udp_registration_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_other_port_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_short_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_short_padded_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_wrong_sport_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_udp_wrong_outer_src_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_udp_other_ha_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_udp_unbound_inner_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_udp_not_udp_binding_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_decap_ipip_on_udp_binding_drops", XDP_DROP, Untouched, ReverseTunnelRejected),
        ha("ha_udp_next_header_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        ha("ha_udp_len_mismatch_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_udp_inner_truncated_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_udp_inner_too_long_drops", XDP_DROP, Untouched, MalformedIpv4),
        ha("ha_udp_outer_options_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_outer_mf_passes", XDP_PASS, Untouched, Passed),
        ha("ha_udp_outer_offset_passes", XDP_PASS, Untouched, Passed),
        // mn_xdp: decapsulation of the home agent's tunnel (RFC 5944 §4.2.1).
        fx("mn_xdp_inactive_passes", MN_XDP, Setup::Mn(0), mn0, XDP_PASS, Untouched, Passed),
        fx("mn_xdp_inactive_passes", MN_XDP, Setup::Empty, mn0, XDP_PASS, Untouched, Passed)
            .named("mn_xdp_empty_map_passes"),
        mn("mn_xdp_decap", XDP_PASS, Rewritten, MnDecap),
        fx("mn_xdp_decap", MN_XDP, Setup::Mn(MN_ACTIVE), mn0, XDP_PASS, Rewritten, MnDecap)
            .named("mn_xdp_decap_without_reverse_tunnelling"),
        mn("mn_xdp_wrong_inner_dst_drops", XDP_DROP, Untouched, MnTunnelRejected),
        mn("mn_xdp_other_source_passes", XDP_PASS, Untouched, Passed),
        mn("mn_xdp_other_destination_passes", XDP_PASS, Untouched, Passed),
        mn("mn_xdp_not_ipip_passes", XDP_PASS, Untouched, Passed),
        mn("mn_xdp_outer_mf_drops", XDP_DROP, Untouched, TunnelFragment),
        mn("mn_xdp_outer_offset_drops", XDP_DROP, Untouched, TunnelFragment),
        mn("mn_xdp_outer_options_drops", XDP_DROP, Untouched, TunnelOptions),
        mn("mn_xdp_inner_truncated_drops", XDP_DROP, Untouched, MalformedIpv4),
        mn("mn_xdp_inner_too_long_drops", XDP_DROP, Untouched, MalformedIpv4),
        mn("mn_xdp_inner_ttl0_drops", XDP_DROP, Untouched, TtlExceeded),
        mn("mn_xdp_runt_passes", XDP_PASS, Untouched, TruncatedEth),
        mn("mn_xdp_arp_passes", XDP_PASS, Untouched, NotIpv4),
        mn("mn_xdp_truncated_ip_drops", XDP_DROP, Untouched, MalformedIpv4),
        mn("mn_xdp_ihl4_drops", XDP_DROP, Untouched, MalformedIpv4),
        // mn_xdp in UDP tunnelling mode (RFC 3519 §4.3, §4.9); IP-in-IP from the HA is still
        // decapsulated.
        mn_udp("mn_xdp_udp_decap", XDP_PASS, Rewritten, MnUdpDecap),
        fx("mn_xdp_udp_decap", MN_XDP, Setup::MnUdp(MN_ACTIVE), mn0, XDP_PASS, Rewritten, MnUdpDecap)
            .named("mn_xdp_udp_decap_without_reverse_tunnelling"),
        mn_udp("mn_xdp_decap", XDP_PASS, Rewritten, MnDecap).named("mn_xdp_decap_in_udp_mode"),
        mn("mn_xdp_udp_mode_off_passes", XDP_PASS, Untouched, Passed),
        fx("mn_xdp_udp_mode_off_passes", MN_XDP, Setup::MnUdp(0), mn0, XDP_PASS, Untouched, Passed)
            .named("mn_xdp_udp_inactive_passes"),
        mn_udp("mn_xdp_udp_registration_reply_passes", XDP_PASS, Untouched, Passed),
        mn_udp("mn_xdp_udp_wrong_dport_passes", XDP_PASS, Untouched, Passed),
        mn_udp("mn_xdp_udp_wrong_sport_passes", XDP_PASS, Untouched, Passed),
        mn_udp("mn_xdp_udp_other_source_passes", XDP_PASS, Untouched, Passed),
        mn_udp("mn_xdp_udp_keepalive_answer_passes", XDP_PASS, Untouched, UdpKeepalive),
        mn_udp("mn_xdp_udp_next_header_drops", XDP_DROP, Untouched, UdpTunnelRejected),
        mn_udp("mn_xdp_udp_len_mismatch_drops", XDP_DROP, Untouched, MalformedIpv4),
        mn_udp("mn_xdp_udp_wrong_inner_dst_drops", XDP_DROP, Untouched, MnTunnelRejected),
        mn_udp("mn_xdp_udp_inner_truncated_drops", XDP_DROP, Untouched, MalformedIpv4),
        mn_udp("mn_xdp_udp_inner_ttl0_drops", XDP_DROP, Untouched, TtlExceeded),
        mn_udp("mn_xdp_udp_outer_mf_passes", XDP_PASS, Untouched, Passed),
        mn_udp("mn_xdp_udp_outer_options_passes", XDP_PASS, Untouched, Passed),
        // mn_tc_egress: reverse tunnelling (RFC 3024 §5.2). No malformed-IPv4 case: the kernel
        // refuses an skb test run whose IPv4 header is incomplete (EINVAL), and the program
        // reads nothing else it could find malformed.
        fx("mn_tc_inactive_passes", MN_TC_EGRESS, Setup::Mn(0), mn0, TC_ACT_OK, Untouched, Passed),
        fx("mn_tc_no_reverse_passes", MN_TC_EGRESS, Setup::Mn(MN_ACTIVE), mn0, TC_ACT_OK, Untouched, Passed),
        tc("mn_tc_encap", TC_ACT_OK, Rewritten, MnEncap),
        fx("mn_tc_encap_redirect", MN_TC_EGRESS, Setup::MnAltHa, mn0, TC_ACT_REDIRECT, Rewritten, MnEncap),
        tc("mn_tc_other_source_passes", TC_ACT_OK, Untouched, Passed),
        tc("mn_tc_arp_passes", TC_ACT_OK, Untouched, NotIpv4),
        tc("mn_tc_encap_fits_mtu", TC_ACT_OK, Rewritten, MnEncap),
        tc("mn_tc_too_big_drops", TC_ACT_SHOT, Untouched, TooBig),
        // mn_tc_egress in UDP tunnelling mode (RFC 3519 §4.2, §4.4).
        tc_udp("mn_tc_udp_encap", TC_ACT_OK, Rewritten, MnUdpEncap),
        tc_udp("mn_tc_udp_encap_fits_mtu", TC_ACT_OK, Rewritten, MnUdpEncap),
        tc_udp("mn_tc_udp_too_big_drops", TC_ACT_SHOT, Untouched, TooBig),
        fx("mn_tc_inactive_passes", MN_TC_EGRESS, Setup::MnUdp(MN_ACTIVE), mn0, TC_ACT_OK, Untouched, Passed)
            .named("mn_tc_udp_no_reverse_passes"),
        // The RFC 5265 gate (§3.2.2, §3.2.4), on mn0, ahead of everything else in mn_xdp and
        // mn_tc_egress: user data dropped while closed, outside, or inside past T_MONITOR;
        // registrations, DHCP and ARP always pass; MIP tunnel data is user data.
        gated("mn_xdp_decap", MN_XDP, GATE_CLOSED, false, false, XDP_DROP, Untouched, GateClosed).named("gate_closed_drops_tunnelled_data"),
        gated("mn_xdp_decap", MN_XDP, GATE_OUTSIDE, false, false, XDP_DROP, Untouched, GateClosed).named("gate_outside_drops_tunnelled_data"),
        gated("mn_xdp_decap", MN_XDP, GATE_INSIDE, false, false, XDP_PASS, Rewritten, MnDecap).named("gate_inside_in_time_decapsulates"),
        gated("mn_xdp_decap", MN_XDP, GATE_INSIDE, true, false, XDP_DROP, Untouched, GateExpired).named("gate_inside_expired_drops"),
        gated("mn_xdp_other_source_passes", MN_XDP, GATE_CLOSED, false, false, XDP_DROP, Untouched, GateClosed).named("gate_closed_drops_plain_data"),
        gated("mn_xdp_arp_passes", MN_XDP, GATE_CLOSED, false, false, XDP_PASS, Untouched, NotIpv4).named("gate_closed_passes_arp"),
        gated("mn_xdp_udp_registration_reply_passes", MN_XDP, GATE_CLOSED, false, true, XDP_PASS, Untouched, Passed).named("gate_closed_passes_registration_reply"),
        gated("mn_xdp_udp_registration_reply_passes", MN_XDP, GATE_INSIDE, true, true, XDP_PASS, Untouched, Passed).named("gate_expired_passes_registration_reply"),
        gated("mn_xdp_udp_keepalive_answer_passes", MN_XDP, GATE_CLOSED, false, true, XDP_DROP, Untouched, GateClosed).named("gate_closed_drops_udp_tunnel_data"),
        gated("mn_xdp_udp_decap", MN_XDP, GATE_INSIDE, false, true, XDP_PASS, Rewritten, MnUdpDecap).named("gate_inside_in_time_decapsulates_udp"),
        gated("mn_tc_encap", MN_TC_EGRESS, GATE_CLOSED, false, false, TC_ACT_SHOT, Untouched, GateClosed).named("gate_closed_shoots_user_data"),
        gated("mn_tc_encap", MN_TC_EGRESS, GATE_INSIDE, false, false, TC_ACT_OK, Rewritten, MnEncap).named("gate_inside_in_time_encapsulates"),
        gated("mn_tc_encap", MN_TC_EGRESS, GATE_INSIDE, true, false, TC_ACT_SHOT, Untouched, GateExpired).named("gate_inside_expired_shoots"),
        gated("mn_tc_other_source_passes", MN_TC_EGRESS, GATE_OUTSIDE, false, false, TC_ACT_SHOT, Untouched, GateClosed).named("gate_outside_shoots_plain_data"),
        gated("mn_tc_registration_request", MN_TC_EGRESS, GATE_CLOSED, false, false, TC_ACT_OK, Untouched, Passed),
        gated("mn_tc_registration_request", MN_TC_EGRESS, GATE_INSIDE, true, false, TC_ACT_OK, Untouched, Passed).named("gate_expired_passes_registration_request"),
        gated("mn_tc_dhcp_discover", MN_TC_EGRESS, GATE_CLOSED, false, false, TC_ACT_OK, Untouched, Passed),
        gated("mn_tc_arp_passes", MN_TC_EGRESS, GATE_CLOSED, false, false, TC_ACT_OK, Untouched, NotIpv4).named("gate_closed_passes_arp_out"),
        gated("mn_tc_keepalive_is_user_data", MN_TC_EGRESS, GATE_CLOSED, false, true, TC_ACT_SHOT, Untouched, GateClosed),
        // Agent discovery (modes f and fvc): router messages with TTL 1 pass any gate.
        gated("mn_xdp_agent_advertisement_passes", MN_XDP, GATE_CLOSED, false, false, XDP_PASS, Untouched, Passed),
        gated("mn_xdp_agent_advertisement_passes", MN_XDP, GATE_OUTSIDE, false, false, XDP_PASS, Untouched, Passed).named("gate_outside_passes_agent_advertisement"),
        gated("mn_xdp_router_advertisement_ttl64", MN_XDP, GATE_OUTSIDE, false, false, XDP_DROP, Untouched, GateClosed),
        gated("mn_tc_agent_solicitation_passes", MN_TC_EGRESS, GATE_CLOSED, false, false, TC_ACT_OK, Untouched, Passed),
        gated("mn_tc_agent_solicitation_passes", MN_TC_EGRESS, GATE_OUTSIDE, false, false, TC_ACT_OK, Untouched, Passed).named("gate_outside_passes_agent_solicitation"),
        gated("mn_tc_echo_ttl1_is_user_data", MN_TC_EGRESS, GATE_OUTSIDE, false, false, TC_ACT_SHOT, Untouched, GateClosed),
        gated("mn_tc_keepalive_is_user_data", MN_TC_EGRESS, GATE_INSIDE, false, true, TC_ACT_OK, Untouched, Passed).named("gate_inside_passes_keepalive"),
        // The gate and the VPN (RFC 5265 §2.3): IKE with the gateway and ESP with the VPN's SPIs
        // pass even when outside; anything else stays user data.
        gated_vpn("gate_vpn_ike_sa_init", MN_TC_EGRESS, GATE_OUTSIDE, TC_ACT_OK, Passed),
        gated_vpn("gate_vpn_ike_natt", MN_TC_EGRESS, GATE_OUTSIDE, TC_ACT_OK, Passed),
        gated_vpn("gate_vpn_esp_in_udp", MN_TC_EGRESS, GATE_OUTSIDE, TC_ACT_OK, Passed),
        gated_vpn("gate_vpn_esp", MN_TC_EGRESS, GATE_CLOSED, TC_ACT_OK, Passed),
        gated_vpn("gate_vpn_esp_in_udp_unknown_spi", MN_TC_EGRESS, GATE_OUTSIDE, TC_ACT_SHOT, GateClosed),
        gated_vpn("gate_vpn_esp_other_peer", MN_TC_EGRESS, GATE_OUTSIDE, TC_ACT_SHOT, GateClosed),
        gated_vpn("gate_vpn_esp_in_udp_from_gateway", MN_XDP, GATE_OUTSIDE, XDP_PASS, Passed),
        gated("gate_vpn_ike_sa_init", MN_TC_EGRESS, GATE_OUTSIDE, false, false, TC_ACT_SHOT, Untouched, GateClosed).named("gate_without_vpn_shoots_ike"),
        gated("gate_vpn_esp_in_udp_from_gateway", MN_XDP, GATE_CLOSED, false, false, XDP_DROP, Untouched, GateClosed).named("gate_without_vpn_drops_esp"),
        // mn_tc_vpn_egress on the VPN device: IP-in-IP from the TIA to the i-HA inside the VPN
        // (RFC 5265 §2.3, RFC 2003 §3.1, RFC 3024), only for a registration through the VPN.
        // What rewrites runs attached to the real device: the test run cannot make an skb
        // whose room adjusts as on an L3 device (see VPN0). A few rows run both ways, to show
        // their verdicts do on the device what the test run says.
        vpn_out("mn_vpn_encap", TC_ACT_OK, Rewritten, MnVpnEncap).attached(),
        vpn_out("mn_vpn_encap_no_df", TC_ACT_OK, Rewritten, MnVpnEncap).attached(),
        vpn_out("mn_vpn_encap_fits_mtu", TC_ACT_OK, Rewritten, MnVpnEncap).attached(),
        vpn_out("mn_vpn_too_big_drops", TC_ACT_SHOT, Untouched, TooBig),
        vpn_out("mn_vpn_too_big_drops", TC_ACT_SHOT, Untouched, TooBig).attached().named("mn_vpn_too_big_drops_attached"),
        vpn_out("mn_vpn_too_big_1390_drops", TC_ACT_SHOT, Untouched, TooBig),
        vpn_out("mn_vpn_registration_request_passes", TC_ACT_OK, Untouched, Passed),
        vpn_out("mn_vpn_registration_request_passes", TC_ACT_OK, Untouched, Passed).attached().named("mn_vpn_registration_request_passes_attached"),
        vpn_out("mn_vpn_egress_ipv6_passes", TC_ACT_OK, Untouched, Passed),
        fx("mn_vpn_egress_inactive_passes", MN_TC_VPN_EGRESS, Setup::MnVpn(MN_REVERSE_TUNNEL | MN_VIA_VPN), vpn0, TC_ACT_OK, Untouched, Passed),
        fx("mn_vpn_egress_inactive_passes", MN_TC_VPN_EGRESS, Setup::Empty, vpn0, TC_ACT_OK, Untouched, Passed).named("mn_vpn_egress_empty_map_passes"),
        fx("mn_vpn_egress_not_via_vpn_passes", MN_TC_VPN_EGRESS, Setup::MnVpn(ACTIVE), vpn0, TC_ACT_OK, Untouched, Passed),
        fx("mn_vpn_egress_not_via_vpn_passes", MN_TC_VPN_EGRESS, Setup::MnVpn(ACTIVE), vpn0, TC_ACT_OK, Untouched, Passed).attached().named("mn_vpn_egress_not_via_vpn_passes_attached"),
        // mn_tc_vpn_ingress on the VPN device: the i-HA's tunnel to the TIA, after the VPN
        // decrypted it.
        vpn_in("mn_vpn_decap", TC_ACT_OK, Rewritten, MnVpnDecap).attached(),
        vpn_in("mn_vpn_decap", TC_ACT_OK, Rewritten, MnVpnDecap).named("mn_vpn_decap_behind_a_mac_header"),
        fx("mn_vpn_decap", MN_TC_VPN_INGRESS, Setup::MnVpn(MN_ACTIVE | MN_VIA_VPN), vpn0, TC_ACT_OK, Rewritten, MnVpnDecap).attached()
            .named("mn_vpn_decap_without_reverse_tunnelling"),
        fx("mn_vpn_ingress_inactive_passes", MN_TC_VPN_INGRESS, Setup::MnVpn(MN_REVERSE_TUNNEL | MN_VIA_VPN), vpn0, TC_ACT_OK, Untouched, Passed),
        fx("mn_vpn_ingress_not_via_vpn_passes", MN_TC_VPN_INGRESS, Setup::MnVpn(ACTIVE), vpn0, TC_ACT_OK, Untouched, Passed),
        vpn_in("mn_vpn_registration_reply_passes", TC_ACT_OK, Untouched, Passed),
        vpn_in("mn_vpn_registration_reply_passes", TC_ACT_OK, Untouched, Passed).attached().named("mn_vpn_registration_reply_passes_attached"),
        vpn_in("mn_vpn_other_source_passes", TC_ACT_OK, Untouched, Passed),
        vpn_in("mn_vpn_other_destination_passes", TC_ACT_OK, Untouched, Passed),
        vpn_in("mn_vpn_wrong_inner_dst_drops", TC_ACT_SHOT, Untouched, MnTunnelRejected),
        vpn_in("mn_vpn_wrong_inner_dst_drops", TC_ACT_SHOT, Untouched, MnTunnelRejected).attached().named("mn_vpn_wrong_inner_dst_drops_attached"),
        vpn_in("mn_vpn_outer_mf_drops", TC_ACT_SHOT, Untouched, TunnelFragment),
        vpn_in("mn_vpn_outer_offset_drops", TC_ACT_SHOT, Untouched, TunnelFragment),
        vpn_in("mn_vpn_outer_options_drops", TC_ACT_SHOT, Untouched, TunnelOptions),
        vpn_in("mn_vpn_inner_ttl0_drops", TC_ACT_SHOT, Untouched, TtlExceeded),
        vpn_in("mn_vpn_inner_truncated_drops", TC_ACT_SHOT, Untouched, MalformedIpv4),
        vpn_in("mn_vpn_inner_too_long_drops", TC_ACT_SHOT, Untouched, MalformedIpv4),
        vpn_in("mn_vpn_inner_version_drops", TC_ACT_SHOT, Untouched, MalformedIpv4),
        // A registration through the VPN is no business of the access interfaces' programs:
        // mn_xdp and mn_tc_egress on mn0 treat it as inactive.
        fx("mn_xdp_vpn_tunnel_ignored", MN_XDP, Setup::MnVpn(VIA_VPN), mn0, XDP_PASS, Untouched, Passed),
        fx("mn_tc_vpn_tunnel_ignored", MN_TC_EGRESS, Setup::MnVpn(VIA_VPN), mn0, TC_ACT_OK, Untouched, Passed),
        // Mode cvc, mn_xdp: the x-HA's tunnel is decapsulated first and the gate judges what
        // it carried: the VPN passes in any state, plaintext only inside. A gate drop comes
        // after the decapsulation, so the buffer holds the inner frame (Rewritten).
        cvc_in("cvc_xdp_esp_decap", GATE_OUTSIDE, XDP_PASS, Rewritten, MnDecap),
        fx("cvc_xdp_esp_decap", MN_XDP, cvc(0, ACTIVE, GATE_CLOSED, true), mn0, XDP_PASS, Rewritten, MnDecap)
            .named("cvc_xdp_esp_decap_gate_closed_without_home_tunnel"),
        cvc_in("cvc_xdp_ike_decap", GATE_CLOSED, XDP_PASS, Rewritten, MnDecap),
        cvc_in("cvc_xdp_plaintext_drops", GATE_OUTSIDE, XDP_DROP, Rewritten, GateClosed),
        cvc_in("cvc_xdp_plaintext_drops", GATE_INSIDE, XDP_PASS, Rewritten, MnDecap).named("cvc_xdp_plaintext_inside_decapsulates"),
        cvc_in("cvc_xdp_unknown_spi_drops", GATE_OUTSIDE, XDP_DROP, Rewritten, GateClosed),
        // An x-HA tunnel packet that is malformed, or carries a datagram for another address
        // than the x-HoA, is dropped before the gate, under its own counter as in mode c.
        cvc_in("cvc_xdp_wrong_inner_dst_drops", GATE_OUTSIDE, XDP_DROP, Untouched, MnTunnelRejected),
        cvc_in("cvc_xdp_outer_mf_drops", GATE_OUTSIDE, XDP_DROP, Untouched, TunnelFragment),
        cvc_in("cvc_xdp_outer_options_drops", GATE_OUTSIDE, XDP_DROP, Untouched, TunnelOptions),
        cvc_in("cvc_xdp_inner_ttl0_drops", GATE_OUTSIDE, XDP_DROP, Untouched, TtlExceeded),
        cvc_in("cvc_xdp_inner_truncated_drops", GATE_OUTSIDE, XDP_DROP, Untouched, MalformedIpv4),
        // The same in UDP tunnelling mode (RFC 3519), and the x-HA's keepalive answer.
        cvc_udp_in("cvc_xdp_udp_esp_decap", GATE_OUTSIDE, XDP_PASS, Rewritten, MnUdpDecap),
        cvc_udp_in("cvc_xdp_udp_plaintext_drops", GATE_OUTSIDE, XDP_DROP, Rewritten, GateClosed),
        cvc_udp_in("cvc_xdp_udp_keepalive_answer_passes", GATE_OUTSIDE, XDP_PASS, Untouched, UdpKeepalive),
        cvc_udp_in("cvc_xdp_udp_registration_reply_passes", GATE_CLOSED, XDP_PASS, Untouched, Passed),
        // Not the x-HA's tunnel: the gate judges the packet itself; the i-HA's tunnel in
        // plaintext on mn0 is user data (it runs inside the VPN).
        cvc_in("mn_xdp_decap", GATE_OUTSIDE, XDP_DROP, Untouched, GateClosed).named("cvc_xdp_i_ha_tunnel_drops"),
        // Without slot 1 (not registered with the x-HA yet, or any more), what arrives from
        // the x-HA was not decapsulated, so it is not ours: user data, whether or not the gate
        // knows the x-HA (only traffic toward it is exempt, for our own encapsulation).
        fx("cvc_xdp_esp_decap", MN_XDP, cvc(VIA_VPN, 0, GATE_CLOSED, true), mn0, XDP_DROP, Untouched, GateClosed)
            .named("cvc_xdp_x_ha_tunnel_stale_drops"),
        fx("cvc_xdp_esp_decap", MN_XDP, cvc(VIA_VPN, 0, GATE_CLOSED, false), mn0, XDP_DROP, Untouched, GateClosed)
            .named("cvc_xdp_x_ha_tunnel_unknown_drops"),
        fx("cvc_xdp_udp_keepalive_answer_passes", MN_XDP, cvc(VIA_VPN, 0, GATE_CLOSED, true), mn0, XDP_DROP, Untouched, GateClosed)
            .named("cvc_xdp_x_ha_udp_tunnel_stale_drops"),
        fx("cvc_xdp_udp_keepalive_answer_passes", MN_XDP, cvc(VIA_VPN, 0, GATE_CLOSED, false), mn0, XDP_DROP, Untouched, GateClosed)
            .named("cvc_xdp_x_ha_udp_tunnel_unknown_drops"),
        // Mode cvc, mn_tc_egress: the gate judges what the application produced; then what
        // comes from the x-HoA goes into the x-HA's tunnel, and nothing else does.
        cvc_out("cvc_tc_esp_encap", GATE_OUTSIDE, TC_ACT_OK, Rewritten, MnEncap),
        cvc_out("cvc_tc_ike_encap", GATE_CLOSED, TC_ACT_OK, Rewritten, MnEncap),
        cvc_udp_out("cvc_tc_udp_esp_encap", GATE_OUTSIDE, TC_ACT_OK, Rewritten, MnUdpEncap),
        cvc_out("cvc_tc_plaintext_shot", GATE_OUTSIDE, TC_ACT_SHOT, Untouched, GateClosed),
        cvc_out("cvc_tc_unknown_spi_shot", GATE_OUTSIDE, TC_ACT_SHOT, Untouched, GateClosed),
        cvc_out("mn_tc_vpn_tunnel_ignored", GATE_OUTSIDE, TC_ACT_SHOT, Untouched, GateClosed).named("cvc_tc_home_address_shot"),
        cvc_out("mn_tc_vpn_tunnel_ignored", GATE_INSIDE, TC_ACT_OK, Untouched, Passed).named("cvc_tc_home_address_not_in_x_ha_tunnel"),
        // Our own encapsulation passing tc egress again, and mipd's keepalives: they pass a
        // gate that knows the x-HA, in any state, and are user data to one that does not.
        cvc_out("cvc_tc_own_encap_passes", GATE_OUTSIDE, TC_ACT_OK, Untouched, Passed),
        fx("cvc_tc_own_encap_passes", MN_TC_EGRESS, cvc(VIA_VPN, ACTIVE, GATE_OUTSIDE, false), mn0, TC_ACT_SHOT, Untouched, GateClosed)
            .named("cvc_tc_own_encap_unknown_x_ha_shot"),
        cvc_udp_out("cvc_tc_own_udp_encap_passes", GATE_OUTSIDE, TC_ACT_OK, Untouched, Passed),
        cvc_udp_out("cvc_tc_keepalive_passes", GATE_CLOSED, TC_ACT_OK, Untouched, Passed),
        fx("cvc_tc_keepalive_passes", MN_TC_EGRESS, cvc(VIA_VPN, OUTER_UDP, GATE_CLOSED, false), mn0, TC_ACT_SHOT, Untouched, GateClosed)
            .named("cvc_tc_keepalive_unknown_x_ha_shot"),
        // fa_xdp: not enabled.
        fx("fa_disabled_passes", FA_XDP, Setup::FaDisabled, fa_up, XDP_PASS, Untouched, Passed),
        fx("fa_disabled_passes", FA_XDP, Setup::Empty, fa_up, XDP_PASS, Untouched, Passed)
            .named("fa_empty_maps_pass"),
        // fa_xdp: the home agents' tunnels, delivered to the visitor's MAC on its link (RFC 5944
        // §4.2.2, §4.6) or dropped without ICMP.
        fa_in("fa_decap_redirect", XDP_REDIRECT, Rewritten, FaDecapTx),
        fa_in("fa_decap_tx", XDP_TX, Rewritten, FaDecapTx),
        fa_in("fa_decap_no_reverse", XDP_REDIRECT, Rewritten, FaDecapTx),
        fa_in("fa_decap_second_coa", XDP_REDIRECT, Rewritten, FaDecapTx),
        fa_in("fa_decap_ttl2", XDP_REDIRECT, Rewritten, FaDecapTx),
        fa_in("fa_decap_inner_options", XDP_REDIRECT, Rewritten, FaDecapTx),
        fa_in("fa_decap_ttl1_drops", XDP_DROP, Untouched, FaTtlExpired),
        fa_in("fa_decap_ttl0_drops", XDP_DROP, Untouched, FaTtlExpired),
        fa_in("fa_decap_unknown_visitor_drops", XDP_DROP, Untouched, FaUnknownVisitor),
        fa_in("fa_decap_wrong_outer_src_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_decap_other_coa_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_decap_udp_visitor_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_decap_no_iface_drops", XDP_DROP, Untouched, FaNoIface),
        fa_in("fa_decap_outer_mf_drops", XDP_DROP, Untouched, TunnelFragment),
        fa_in("fa_decap_outer_offset_drops", XDP_DROP, Untouched, TunnelFragment),
        fa_in("fa_decap_outer_options_drops", XDP_DROP, Untouched, TunnelOptions),
        fa_in("fa_decap_inner_truncated_drops", XDP_DROP, Untouched, MalformedIpv4),
        fa_in("fa_decap_inner_too_long_drops", XDP_DROP, Untouched, MalformedIpv4),
        fa_in("fa_decap_inner_version_drops", XDP_DROP, Untouched, MalformedIpv4),
        fa_in("fa_transit_ipip_passes", XDP_PASS, Untouched, Passed),
        // fa_xdp: reverse tunnelling from the visitors (RFC 3024 §5.1), checked against the
        // registered link and MAC (Appendix A.3); triangle routing without the T bit.
        fa_out("fa_encap_redirect", XDP_REDIRECT, Rewritten, FaEncapTx),
        fa_out("fa_encap_no_df", XDP_REDIRECT, Rewritten, FaEncapTx),
        fa_out("fa_encap_udp", XDP_REDIRECT, Rewritten, FaEncapTx),
        fa_out("fa_encap_ttl2", XDP_REDIRECT, Rewritten, FaEncapTx),
        fa_in("fa_encap_tx", XDP_TX, Rewritten, FaEncapTx),
        fa_out("fa_encap_ttl1_passes", XDP_PASS, Untouched, TtlExceeded),
        fa_out("fa_encap_wrong_mac_drops", XDP_DROP, Untouched, FaVisitorMacMismatch),
        fa_in("fa_encap_other_iface_passes", XDP_PASS, Untouched, Passed),
        fa_out("fa_no_reverse_passes", XDP_PASS, Untouched, FaTriangle),
        fa_out("fa_no_reverse_wrong_mac_drops", XDP_DROP, Untouched, FaVisitorMacMismatch),
        fa_out("fa_udp_no_reverse_passes", XDP_PASS, Untouched, FaTriangle),
        fa_out("fa_non_visitor_passes", XDP_PASS, Untouched, Passed),
        fa_out("fa_encap_unresolved_to_stack", XDP_PASS, Rewritten, FaEncapToStack),
        fa_out("fa_encap_unreachable_drops", XDP_DROP, Untouched, NoRoute),
        fa_out("fa_encap_fits_route_mtu", XDP_REDIRECT, Rewritten, FaEncapTx),
        fa_out("fa_encap_frag_needed", XDP_TX, Rewritten, FragNeededSent),
        fa_out("fa_encap_too_big_no_df_drops", XDP_DROP, Untouched, TooBig),
        // fa_xdp: RFC 3519 UDP tunnels with the home agent (the FA behind a NAT, §4.5): the
        // home agent's IP-in-UDP delivered (§4.3), its keepalive answers passed up (§4.9),
        // and the visitors' packets reverse-tunnelled IP-in-UDP (§4.2, §4.7, §4.8).
        fa_in("fa_udp_decap_redirect", XDP_REDIRECT, Rewritten, FaUdpDecapTx),
        fa_in("fa_udp_decap_tx", XDP_TX, Rewritten, FaUdpDecapTx),
        fa_in("fa_udp_decap_no_reverse", XDP_REDIRECT, Rewritten, FaUdpDecapTx),
        fa_in("fa_udp_decap_reserved_ignored", XDP_REDIRECT, Rewritten, FaUdpDecapTx),
        fa_in("fa_udp_keepalive_reply_passes", XDP_PASS, Untouched, FaKeepalive),
        fa_in("fa_udp_ttl1_drops", XDP_DROP, Untouched, FaTtlExpired),
        fa_in("fa_udp_unknown_visitor_drops", XDP_DROP, Untouched, FaUnknownVisitor),
        fa_in("fa_udp_wrong_outer_src_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_udp_other_coa_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_udp_not_udp_visitor_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_udp_next_header_drops", XDP_DROP, Untouched, FaTunnelRejected),
        fa_in("fa_udp_len_mismatch_drops", XDP_DROP, Untouched, MalformedIpv4),
        fa_in("fa_udp_wrong_sport_passes", XDP_PASS, Untouched, Passed),
        fa_in("fa_udp_other_port_passes", XDP_PASS, Untouched, Passed),
        fa_in("fa_udp_registration_reply_passes", XDP_PASS, Untouched, Passed),
        fa_in("fa_udp_outer_mf_passes", XDP_PASS, Untouched, Passed),
        fa_out("fa_udp_encap_redirect", XDP_REDIRECT, Rewritten, FaUdpEncapTx),
        fa_in("fa_udp_encap_tx", XDP_TX, Rewritten, FaUdpEncapTx),
        fa_out("fa_udp_encap_ttl1_passes", XDP_PASS, Untouched, TtlExceeded),
        fa_out("fa_udp_encap_wrong_mac_drops", XDP_DROP, Untouched, FaVisitorMacMismatch),
        fa_out("fa_udp_encap_fits_route_mtu", XDP_REDIRECT, Rewritten, FaUdpEncapTx),
        fa_out("fa_udp_encap_frag_needed", XDP_TX, Rewritten, FragNeededSent),
        fa_out("fa_udp_encap_too_big_no_df_drops", XDP_DROP, Untouched, TooBig),
        // fa_xdp: what a visitor sends to the foreign agent itself always reaches the kernel.
        fa_out("fa_registration_request_passes", XDP_PASS, Untouched, FaToAgent),
        fa_out("fa_registration_broadcast_passes", XDP_PASS, Untouched, FaToAgent),
        fa_out("fa_registration_multicast_passes", XDP_PASS, Untouched, FaToAgent),
        fa_out("fa_registration_new_mac_passes", XDP_PASS, Untouched, FaToAgent),
        fa_out("fa_agent_solicitation_passes", XDP_PASS, Untouched, FaToAgent),
        fa_out("fa_to_coa_passes", XDP_PASS, Untouched, FaToAgent),
        // fa_xdp: malformed, and not IPv4.
        fa_out("fa_runt_passes", XDP_PASS, Untouched, TruncatedEth),
        fa_out("fa_arp_passes", XDP_PASS, Untouched, NotIpv4),
        fa_out("fa_truncated_ip_drops", XDP_DROP, Untouched, MalformedIpv4),
        fa_out("fa_ihl4_drops", XDP_DROP, Untouched, MalformedIpv4),
        // Baselines: touch nothing, count nothing, whatever the frame.
        baseline("ha_encap_tx", MIPX_DROP, XDP_DROP),
        baseline("ha_runt_passes", MIPX_DROP, XDP_DROP),
        baseline("ha_ihl4_drops", MIPX_PASS, XDP_PASS),
        baseline("ha_arp_proxy_reply", MIPX_PASS, XDP_PASS),
    ]
}

// ---- running it ------------------------------------------------------------------------------

fn run(
    dataplane: &mut Dataplane,
    topology: &Topology,
    fixture: &Fixture,
    input: &[u8],
) -> Result<XdpRun> {
    let ingress = fixture.ingress.map(|name| topology.ifindex[name]);
    // bpf_fib_lookup, the ingress device and bpf_check_mtu all resolve in the calling thread's
    // namespace.
    let _inside = namespace(topology, fixture.program).enter()?;
    if ALL_TC.contains(&fixture.program) {
        run_tc(dataplane.tc(fixture.program)?, input, ingress)
    } else {
        let program = dataplane.xdp(fixture.program)?;
        match ingress {
            Some(index) => run_xdp_on(program, input, index),
            None => run_xdp(program, input),
        }
    }
}

/// What a program did with a fixture's frame.
struct Outcome {
    verdict: u32,
    /// The frame it left; `None` for a packet an attached program shot, which is gone.
    output: Option<Vec<u8>>,
}

/// Runs a fixture through its program attached to the TC hook of the VPN device (`fixture_table`
/// attaches both), the packet going through the device as traffic does:
///
/// - egress: sent out of the device by a raw socket bound to it (`IPPROTO_RAW`, so the bytes go
///   as they are), and read back from the TUN queue, which holds what the device transmitted;
/// - ingress: written to the TUN queue, which the device receives, and read back as delivered
///   to the stack by a raw socket of the protocol the `expected` packet has (every such socket
///   gets a copy of every such datagram for a local address).
///
/// The verdict shows in the effect: `TC_ACT_OK` when the packet came out, `TC_ACT_SHOT` when
/// nothing did within [`SILENCE`]. So an ingress fixture whose packet is for no local address
/// cannot run attached.
fn run_attached(
    topology: &Topology,
    fixture: &Fixture,
    input: &[u8],
    expected: &[u8],
) -> Result<Outcome> {
    ensure!(
        fixture.ingress == Some(VPN0),
        "only the VPN device runs fixtures attached"
    );
    let _inside = topology.mn.enter()?;
    let output = match fixture.program {
        MN_TC_VPN_EGRESS => {
            while read_within(&topology.vpn_tun, Duration::ZERO)?.is_some() {}
            let socket = raw_socket(libc::IPPROTO_RAW)?;
            bind_to_device(&socket, VPN0)?;
            send_to(&socket, input)?;
            read_within(&topology.vpn_tun, SILENCE)?
        }
        MN_TC_VPN_INGRESS => {
            let protocol = *expected
                .get(9)
                .context("expected packet shorter than IPv4")?;
            let socket = raw_socket(i32::from(protocol))?;
            let written = (&topology.vpn_tun)
                .write(input)
                .context("writing to the TUN queue")?;
            ensure!(written == input.len(), "the TUN queue took {written} bytes");
            read_within(&socket, SILENCE)?
        }
        other => anyhow::bail!("{other} is not attached to {VPN0}"),
    };
    Ok(Outcome {
        verdict: if output.is_some() {
            TC_ACT_OK
        } else {
            TC_ACT_SHOT
        },
        output,
    })
}

/// A non-blocking IPv4 raw socket for `protocol` in the calling thread's namespace.
fn raw_socket(protocol: i32) -> Result<File> {
    // SAFETY: socket(2) has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a raw socket");
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Makes `socket` send out of interface `ifname` whatever the routes say (`SO_BINDTODEVICE`).
fn bind_to_device(socket: &File, ifname: &str) -> Result<()> {
    // SAFETY: the option value is `ifname`'s bytes, valid for their length during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            libc::socklen_t::try_from(ifname.len())?,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("binding to {ifname}"));
    }
    Ok(())
}

/// Sends the IPv4 packet `packet`, header included, to its own destination address.
fn send_to(socket: &File, packet: &[u8]) -> Result<()> {
    let dst: [u8; 4] = packet
        .get(16..20)
        .context("packet shorter than an IPv4 header")?
        .try_into()?;
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET)?,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `addr` are valid for the lengths given during the call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const addr).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_in>())?,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sending through a raw socket");
    }
    ensure!(
        usize::try_from(sent)? == packet.len(),
        "sent {sent} of {} bytes",
        packet.len()
    );
    Ok(())
}

/// The next packet `file` (a TUN queue or a raw socket) yields within `wait`, if any.
fn read_within(mut file: &File, wait: Duration) -> Result<Option<Vec<u8>>> {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one `pollfd`, which outlives the call.
    let ready = unsafe { libc::poll(&raw mut poll, 1, i32::try_from(wait.as_millis())?) };
    match ready {
        0 => Ok(None),
        1.. => {
            let mut buf = vec![0u8; 65536];
            let len = file.read(&mut buf).context("reading a packet")?;
            buf.truncate(len);
            Ok(Some(buf))
        }
        _ => Err(std::io::Error::last_os_error()).context("poll"),
    }
}

/// Where two frames first differ, and both in hex from a little before.
fn frame_diff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(8);
    let hex = |b: &[u8]| {
        b.iter()
            .skip(from)
            .take(40)
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    format!(
        "output ({} bytes) differs from expected ({} bytes) at byte {at}; from byte {from}:\n      got  {}\n      want {}",
        got.len(),
        want.len(),
        hex(got),
        hex(want)
    )
}

/// Runs one fixture; returns a description of every mismatch. With `warm`, the program first
/// runs once on the same input, so the checked run is served by whatever that one left in the
/// next-hop cache: a cached answer must give exactly the bytes, verdict and counter a fresh
/// FIB lookup gives.
fn check(
    dataplane: &mut Dataplane,
    topology: &Topology,
    fixture: &Fixture,
    warm: bool,
) -> Result<Vec<String>> {
    let input = read_frame(fixture.frame, "in")?
        .with_context(|| format!("no {}.in.bin: rerun gen_dataplane.py", fixture.frame))?;
    let rewritten = read_frame(fixture.frame, "out")?;
    let expected = match (fixture.output, &rewritten) {
        (Untouched, _) => &input,
        (Rewritten, Some(out)) => out,
        (Rewritten, None) => anyhow::bail!("no {}.out.bin: rerun gen_dataplane.py", fixture.frame),
    };
    apply(dataplane, topology, fixture.setup)?;
    let execute = |dataplane: &mut Dataplane| -> Result<Outcome> {
        if fixture.attached {
            run_attached(topology, fixture, &input, expected)
        } else if fixture.program == MN_TC_VPN_INGRESS {
            // As the kernel's XFRM interface hands a decrypted packet to its ingress: with
            // the access link's Ethernet header rebuilt in front (see VPN0), which
            // BPF_PROG_TEST_RUN takes for the MAC header as that interface does.
            let mut framed = vec![0u8; 12];
            framed.extend_from_slice(&0x0800u16.to_be_bytes());
            framed.extend_from_slice(&input);
            let run = run(dataplane, topology, fixture, &framed)?;
            Ok(Outcome {
                verdict: run.verdict,
                output: Some(run.output.get(14..).unwrap_or_default().to_vec()),
            })
        } else {
            let run = run(dataplane, topology, fixture, &input)?;
            Ok(Outcome {
                verdict: run.verdict,
                output: Some(run.output),
            })
        }
    };
    if warm {
        execute(dataplane)?;
    }
    preset_ip_id(dataplane, IP_ID)?;
    let before = counters(dataplane);
    let run = execute(dataplane)?;
    let after = counters(dataplane);

    let mut problems = Vec::new();
    // A frame with a rewrite must be rewritten, except by the baselines and behind a gate,
    // which drops it before the program would rewrite it (the same frame goes through an open
    // gate in another row), or in mode cvc without the tunnel that would rewrite it.
    if fixture.output == Untouched
        && fixture.program != MIPX_DROP
        && fixture.program != MIPX_PASS
        && !matches!(fixture.setup, Setup::Gated { .. } | Setup::Cvc { .. })
        && rewritten.is_some()
    {
        problems.push(format!(
            "the generator has an output frame for {}, the table says untouched",
            fixture.frame
        ));
    }
    if run.verdict != fixture.verdict {
        let name = if ALL_TC.contains(&fixture.program) {
            tc_action::name
        } else {
            xdp_action::name
        };
        problems.push(format!(
            "verdict {} ({}), expected {} ({})",
            name(run.verdict),
            run.verdict,
            name(fixture.verdict),
            fixture.verdict
        ));
    }
    if let Some(output) = &run.output
        && output != expected
    {
        problems.push(frame_diff(output, expected));
    }
    for counter in Counter::ALL {
        let delta = after[counter] - before[counter];
        let expected = u64::from(fixture.counter == Some(*counter));
        if delta != expected {
            problems.push(format!(
                "counter {} moved by {delta}, expected {expected}",
                counter.name()
            ));
        }
    }
    Ok(problems)
}

#[test]
fn fixture_table() {
    require_root();
    // The warm pass reads the next-hop cache the first pass filled: on the same CPU only.
    mipx_tests::bpf::pin_to_current_cpu().expect("pinning to one CPU");
    let topology = Topology::new().expect("building the fixture namespaces");
    let mut dataplane = Dataplane::load().expect("loading the embedded eBPF object");
    {
        // For the fixtures that run attached (and the whole table shares the maps with them).
        let _inside = topology
            .mn
            .enter()
            .expect("entering the mobile node namespace");
        dataplane
            .attach_tc_egress(MN_TC_VPN_EGRESS, VPN0)
            .expect("attaching mn_tc_vpn_egress to vpn0");
        dataplane
            .attach_tc_ingress(MN_TC_VPN_INGRESS, VPN0)
            .expect("attaching mn_tc_vpn_ingress to vpn0");
    }
    let table = fixtures();
    let mut failures = Vec::new();
    for warm in [false, true] {
        for fixture in &table {
            let problems = check(&mut dataplane, &topology, fixture, warm)
                .with_context(|| format!("fixture `{}`", fixture.name))
                .expect("running fixture");
            let cache = if warm { ", next-hop cache warm" } else { "" };
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{} [{}{cache}]: {p}", fixture.name, fixture.program)),
            );
        }
    }
    // Every frame the generator wrote is used, so the table and the generator stay in step.
    let used: BTreeSet<&str> = table.iter().map(|f| f.frame).collect();
    for entry in std::fs::read_dir(fixture_dir()).expect("reading the fixture directory") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".in.bin")
            && !used.contains(stem)
        {
            failures.push(format!("{name}: no fixture in the table uses it"));
        }
    }
    let programs: BTreeSet<&str> = table.iter().map(|f| f.program).collect();
    for program in ALL_XDP.iter().chain(&ALL_TC) {
        if !programs.contains(program) {
            failures.push(format!("program {program} has no fixture"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures mismatched:\n  {}",
        failures.len(),
        table.len(),
        failures.join("\n  ")
    );
}

/// Every program passes the verifier and every named map is there with the right shape, so a
/// rename on one side of the user/kernel boundary fails here rather than at attach time.
#[test]
fn object_has_every_program_and_map() {
    require_root();
    let mut dataplane = Dataplane::load().expect("loading the embedded eBPF object");
    for name in ALL_XDP {
        dataplane
            .xdp(name)
            .unwrap_or_else(|e| panic!("loading {name}: {:#}", anyhow::Error::new(e)));
    }
    for name in ALL_TC {
        dataplane
            .tc(name)
            .unwrap_or_else(|e| panic!("loading {name}: {:#}", anyhow::Error::new(e)));
    }
    for name in ALL_MAPS {
        let map = dataplane
            .ebpf_mut()
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name}"));
        // Each conversion checks the map type and the key and value sizes.
        let shape = match name {
            COUNTERS_MAP => PerCpuArray::<_, u64>::try_from(map)
                .map(|m| assert_eq!(m.len(), Counter::COUNT, "{name} slots")),
            BINDINGS_MAP => HashMap::<_, [u8; 4], HaBinding>::try_from(map).map(drop),
            HA_CONFIG_MAP => {
                Array::<_, HaDataplaneConfig>::try_from(map).map(|m| assert_eq!(m.len(), 1))
            }
            IFACES_MAP => HashMap::<_, u32, IfaceInfo>::try_from(map).map(drop),
            MN_TUNNEL_MAP => Array::<_, MnTunnel>::try_from(map).map(|m| assert_eq!(m.len(), 2)),
            IP_ID_MAP => PerCpuArray::<_, u32>::try_from(map).map(|m| assert_eq!(m.len(), 1)),
            NEXTHOP_MAP => {
                PerCpuArray::<_, NextHop>::try_from(map).map(|m| assert_eq!(m.len(), NEXTHOP_SLOTS))
            }
            MN_GATE_MAP => HashMap::<_, u32, MnGate>::try_from(map).map(drop),
            MN_VPN_SPIS_MAP => HashMap::<_, [u8; 4], u8>::try_from(map).map(drop),
            FA_VISITORS_MAP => HashMap::<_, [u8; 4], FaVisitor>::try_from(map).map(drop),
            FA_CONFIG_MAP => {
                Array::<_, FaDataplaneConfig>::try_from(map).map(|m| assert_eq!(m.len(), 1))
            }
            FA_CARE_OF_MAP => HashMap::<_, [u8; 4], u32>::try_from(map).map(drop),
            other => panic!("map {other} is in ALL_MAPS but this test does not know its shape"),
        };
        shape.unwrap_or_else(|e| panic!("map {name}: {:#}", anyhow::Error::new(e)));
    }
    let fresh = counters(&dataplane);
    assert!(
        fresh.values().all(|&n| n == 0),
        "fresh counters must start at zero: {fresh:?}"
    );
}

/// Native (driver-mode) attach of `ha_xdp`, configured, to a veth inside a namespace, with real
/// traffic: proves the object loads, attaches and counts on this kernel, not only under
/// test-run, and that a home agent passes traffic that is not for an away mobile node.
#[test]
fn ha_xdp_attached_to_veth_counts_ping() -> Result<()> {
    require_root();
    // Namespaces first, dataplane second: locals drop in reverse order, so the program is
    // detached before its interface disappears.
    let left = Netns::new("left")?;
    let right = Netns::new("right")?;
    veth_pair((&left, "mipx-l"), (&right, "mipx-r"))?;
    left.add_addr("mipx-l", "10.201.0.1/24")?;
    right.add_addr("mipx-r", "10.201.0.2/24")?;

    let mut dataplane = Dataplane::load()?;
    dataplane.set_ha_config(HaDataplaneConfig {
        home_agent: [10, 201, 0, 2],
        enabled: 1,
        ..HaDataplaneConfig::default()
    })?;
    {
        let program = dataplane.xdp(HA_XDP)?;
        // The interface name resolves in the calling thread's namespace.
        let _inside = right.enter()?;
        let ifname = CString::new("mipx-r")?;
        program
            .attach(&ifname, XdpMode::Driver)
            .context("attaching ha_xdp to mipx-r in driver mode")?;
    }
    // Driver mode shows as `xdp` in `ip link`; a silent fallback would show `xdpgeneric`.
    let link = right.ip(&["-d", "link", "show", "dev", "mipx-r"])?;
    ensure!(
        link.contains(" xdp ") && !link.contains("xdpgeneric"),
        "ha_xdp is not attached in driver mode:\n{link}"
    );

    let before = counters(&dataplane);
    // Frames sent into mipx-l arrive on mipx-r, where XDP runs; XDP_PASS then hands them to
    // the stack, which must still answer, so the ping succeeding proves pass-through as well.
    let ping = left
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "10.201.0.2"])
        .output()
        .context("running ping (iputils-ping; `cargo xtask setup` installs it)")?;
    ensure!(
        ping.status.success(),
        "ping across the veth failed: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let after = counters(&dataplane);

    let grew = |c: Counter| after[&c] - before[&c];
    ensure!(
        grew(Passed) >= 3,
        "Passed grew by {} for 3 echo requests ({before:?} -> {after:?})",
        grew(Passed)
    );
    for counter in Counter::ALL {
        // ARP (NotIpv4) and the echo requests (Passed) are all there is on this link.
        ensure!(
            matches!(counter, Passed | NotIpv4) || grew(*counter) == 0,
            "counter {} moved for plain pings ({before:?} -> {after:?})",
            counter.name()
        );
    }
    Ok(())
}

/// The next-hop cache serves a destination from its first FIB answer until `mipd` advances the
/// epoch (DESIGN: no clock read per packet): a neighbour change is invisible before, and
/// followed after.
#[test]
fn next_hop_cache_follows_the_epoch() -> Result<()> {
    require_root();
    // The cache is per CPU: every run here must be on one CPU, or a run elsewhere finds that
    // CPU's slot empty and looks the neighbour up afresh.
    mipx_tests::bpf::pin_to_current_cpu()?;
    let topology = Topology::new()?;
    let mut dataplane = Dataplane::load()?;
    let fixture = fixtures()
        .into_iter()
        .find(|f| f.name == "ha_encap_tx" && f.program == HA_XDP)
        .context("no ha_encap_tx fixture")?;
    let input = read_frame(fixture.frame, "in")?.context("no ha_encap_tx input")?;
    apply(&mut dataplane, &topology, Setup::Ha)?;
    let dst_mac = |run: &XdpRun| mac_str(run.output[0..6].try_into().expect("6 bytes"));

    let first = run(&mut dataplane, &topology, &fixture, &input)?;
    ensure!(
        first.verdict == XDP_TX && dst_mac(&first) == GW_MAC,
        "{first:?}"
    );
    let moved = "02:00:00:00:02:fd";
    ip(
        &topology.ha,
        &format!("neigh replace 192.0.2.254 lladdr {moved} dev {HA_UP} nud permanent"),
    )?;
    let cached = run(&mut dataplane, &topology, &fixture, &input)?;
    ensure!(
        dst_mac(&cached) == GW_MAC,
        "within an epoch the cached answer is used, got {}",
        dst_mac(&cached)
    );
    dataplane.set_ha_config(HaDataplaneConfig {
        home_agent: HA,
        enabled: 1,
        nexthop_epoch: 1,
        ..HaDataplaneConfig::default()
    })?;
    let renewed = run(&mut dataplane, &topology, &fixture, &input)?;
    ensure!(
        dst_mac(&renewed) == moved,
        "a new epoch must look the neighbour up again, got {}",
        dst_mac(&renewed)
    );
    Ok(())
}
