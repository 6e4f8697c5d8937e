//! The maps the programs share with `mipd` (names and layouts in `mipx_common::maps`).
//!
//! The `#[map]` macro only takes string literals, so each name is spelled out here and tied to
//! its `mipx_common::maps` constant by a compile-time assertion.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use mipx_common::maps::{
    BINDINGS_MAP, DEFAULT_MAX_BINDINGS, FA_CARE_OF_MAP, FA_CONFIG_MAP, FA_VISITORS_MAP,
    FaDataplaneConfig, FaVisitor, HA_CONFIG_MAP, HaBinding, HaDataplaneConfig, IFACES_MAP,
    IP_ID_MAP, IfaceInfo, MAX_FA_CARE_OF, MAX_GATED_IFACES, MAX_IFACES, MAX_VISITORS, MAX_VPN_SPIS,
    MN_GATE_MAP, MN_TUNNEL_MAP, MN_VPN_SPIS_MAP, MnGate, MnTunnel,
};

/// Home agent: mobility bindings keyed by home address. `mipd` sizes it from
/// `dataplane.max_bindings` at load time.
#[map(name = "MIPX_BINDINGS")]
pub static BINDINGS: HashMap<[u8; 4], HaBinding> =
    HashMap::with_max_entries(DEFAULT_MAX_BINDINGS, 0);

/// Home agent: slot 0 holds the settings; all zero (disabled) until `mipd` writes it.
#[map(name = "MIPX_HA_CONFIG")]
pub static HA_CONFIG: Array<HaDataplaneConfig> = Array::with_max_entries(1, 0);

/// Attached interfaces by ifindex: own MAC address and role.
#[map(name = "MIPX_IFACES")]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Mobile node: slot 0 holds the current registration; all zero (inactive) when at home.
#[map(name = "MIPX_MN_TUNNEL")]
pub static MN_TUNNEL: Array<MnTunnel> = Array::with_max_entries(2, 0);

/// Mobile node: the RFC 5265 plaintext gate of each interface, by ifindex (see `gate.rs`).
#[map(name = "MIPX_MN_GATE")]
pub static MN_GATE: HashMap<u32, MnGate> = HashMap::with_max_entries(MAX_GATED_IFACES, 0);

/// Mobile node: the ESP SPIs of the VPN's current CHILD_SAs (see `gate.rs`).
#[map(name = "MIPX_MN_VPN_SPIS")]
pub static MN_VPN_SPIS: HashMap<[u8; 4], u8> = HashMap::with_max_entries(MAX_VPN_SPIS, 0);

/// Foreign agent: the visitor list, by home address (see `fa.rs`).
#[map(name = "MIPX_FA_VISITORS")]
pub static FA_VISITORS: HashMap<[u8; 4], FaVisitor> = HashMap::with_max_entries(MAX_VISITORS, 0);

/// Foreign agent: slot 0 holds the settings; all zero (disabled) until `mipd` writes it.
#[map(name = "MIPX_FA_CONFIG")]
pub static FA_CONFIG: Array<FaDataplaneConfig> = Array::with_max_entries(1, 0);

/// Foreign agent: the care-of addresses it advertises (value: the advertising ifindex).
#[map(name = "MIPX_FA_CARE_OF")]
pub static FA_CARE_OF: HashMap<[u8; 4], u32> = HashMap::with_max_entries(MAX_FA_CARE_OF, 0);

/// Per-CPU source of outer-header Identification values.
#[map(name = "MIPX_IP_ID")]
static IP_ID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A fresh IPv4 Identification for a header we originate (RFC 791; RFC 6864 §4).
///
/// Per-CPU sequential: each CPU owns its counter, so no atomics. RSS keeps a flow on one CPU,
/// so IDs of one (source, destination, protocol) tuple do not repeat before the counter wraps.
#[inline(always)]
pub fn next_ip_id() -> u16 {
    match IP_ID.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: this CPU's slot of a live per-CPU element; nothing else on this CPU
            // writes it while the program runs.
            unsafe {
                *slot = (*slot).wrapping_add(1);
                *slot as u16
            }
        }
        None => 0,
    }
}

pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(str_eq(BINDINGS_MAP, "MIPX_BINDINGS"));
const _: () = assert!(str_eq(HA_CONFIG_MAP, "MIPX_HA_CONFIG"));
const _: () = assert!(str_eq(IFACES_MAP, "MIPX_IFACES"));
const _: () = assert!(str_eq(MN_TUNNEL_MAP, "MIPX_MN_TUNNEL"));
const _: () = assert!(str_eq(IP_ID_MAP, "MIPX_IP_ID"));
const _: () = assert!(str_eq(MN_GATE_MAP, "MIPX_MN_GATE"));
const _: () = assert!(str_eq(MN_VPN_SPIS_MAP, "MIPX_MN_VPN_SPIS"));
const _: () = assert!(str_eq(FA_VISITORS_MAP, "MIPX_FA_VISITORS"));
const _: () = assert!(str_eq(FA_CONFIG_MAP, "MIPX_FA_CONFIG"));
const _: () = assert!(str_eq(FA_CARE_OF_MAP, "MIPX_FA_CARE_OF"));
