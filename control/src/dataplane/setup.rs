//! What every role does with the dataplane at start: probe the kernel, load the object
//! re-opening the pinned maps, set the interfaces' sysctls, attach the role's programs (taking
//! over links a previous `mipd` pinned, so forwarding never stops, DESIGN.md §4) and describe
//! each interface to the programs.

use std::collections::BTreeMap;

use mipx_common::maps::{HaDataplaneConfig, IFACE_HOME_LINK, IfaceInfo};
use tracing::{info, warn};

use super::{Dataplane, DataplaneError, LoadOptions, programs};
use crate::config::{DataplaneSettings, Role, XdpModeSetting};

/// The loaded dataplane and what the shells need to drive it.
pub struct Dp {
    pub dp: Dataplane,
    /// (ifindex, MAC) of each attached interface, in configuration order.
    pub interfaces: Vec<(u32, [u8; 6])>,
    /// (ifindex, MAC) of the home agent's home link.
    pub home_link: Option<(u32, [u8; 6])>,
    pub home_link_name: Option<String>,
    /// Home agent: what the program's config slot holds (the next-hop epoch advances).
    pub ha_config: Option<HaDataplaneConfig>,
    /// Map updates that failed (logged; the next event for the entry retries).
    pub errors: u64,
}

impl Dp {
    /// `mipctl stats`: the per-verdict counters by name.
    pub fn counters(&self) -> Option<BTreeMap<String, u64>> {
        self.dp.counters().ok().map(|c| super::counters_by_name(&c))
    }
}

/// Loads the object, re-opening pinned maps, and attaches the role's programs.
pub fn setup_dataplane(settings: &DataplaneSettings, role: Role) -> Result<Dp, DataplaneError> {
    let kernel = super::probe_kernel()?;
    info!(kernel = %kernel.release, tc = kernel.tc_attach(), "kernel probed");
    let mut dp = Dataplane::load_with(&LoadOptions {
        pin_dir: Some(settings.pin_dir.clone()),
        max_bindings: settings.max_bindings,
    })?;
    let generic = settings.xdp_mode == XdpModeSetting::Generic;
    if matches!(role, Role::Ha | Role::Fa) {
        for name in &settings.interfaces {
            // A home agent is a router (RFC 5944 §3.8), a foreign agent routes its visitors'
            // packets (§4.2.2), and bpf_fib_lookup answers only for
            // interfaces with forwarding on. accept_local: a tunnel packet XDP hands to the
            // stack (next hop unresolved) has our own address as source, which the stack
            // would otherwise drop as a martian.
            for (key, value) in [("forwarding", "1"), ("accept_local", "1")] {
                let path = format!("/proc/sys/net/ipv4/conf/{name}/{key}");
                if let Err(e) = std::fs::write(&path, value) {
                    warn!(%path, error = %e, "cannot set sysctl; the fast path may hand packets to a stack that drops them");
                }
            }
        }
    }
    let mut interfaces = Vec::new();
    let mut home_link = None;
    for name in &settings.interfaces {
        let mac = super::mac_address(name)?;
        let attachment = match role {
            Role::Mn => {
                dp.attach_tc_egress(programs::MN_TC_EGRESS, name)?;
                dp.attach_xdp(programs::MN_XDP, name, generic)?
            }
            Role::Fa => dp.attach_xdp(programs::FA_XDP, name, generic)?,
            Role::Ha => dp.attach_xdp(programs::HA_XDP, name, generic)?,
        };
        let ifindex = attachment.ifindex;
        info!(interface = %name, ifindex, hook = %attachment.hook, adopted = attachment.adopted, "dataplane attached");
        let is_home = settings.home_link.as_deref() == Some(name.as_str());
        dp.set_iface(
            ifindex,
            IfaceInfo {
                mac,
                flags: if is_home { IFACE_HOME_LINK } else { 0 },
            },
        )?;
        if is_home {
            home_link = Some((ifindex, mac));
        }
        interfaces.push((ifindex, mac));
    }
    Ok(Dp {
        dp,
        interfaces,
        home_link,
        home_link_name: settings.home_link.clone(),
        ha_config: None,
        errors: 0,
    })
}
