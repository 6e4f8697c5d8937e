//! `[mn]`: a mobile node (RFC 5944 §3), plain or, with `[mn.rfc5265]`, one that tells inside
//! from outside (RFC 5265 §3) with a VPN layer (`[mn.rfc5265.vpn]`).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, field_err, read_key, security_association, valid_ifname};
use crate::proto::detect::{DEFAULT_T_MONITOR, DetectConfig};
use crate::proto::mn::{MnConfig, NatTraversal, NatTraversalMode};
use crate::proto::rfc5265::{InsideVpn, IpsecSetting, OutsideMode};

#[derive(Debug)]
pub struct MnSettings {
    pub core: MnConfig,
    pub care_of_addr: Option<Ipv4Addr>,
    pub ha_port: u16,
    /// RFC 5265 detection: the interfaces and the two layers' settings.
    pub rfc5265: Option<Rfc5265Settings>,
    /// The interface on which to discover agents (RFC 5944 §2.4) and register through a
    /// foreign agent.
    pub agent_discovery: Option<String>,
}

/// A mobile node that detects, per interface, whether it is inside the intranet.
#[derive(Debug, Clone)]
pub struct Rfc5265Settings {
    pub interfaces: Vec<String>,
    /// Modes f and fvc: discover foreign agents on the interfaces.
    pub agent_discovery: bool,
    pub mode: OutsideMode,
    pub vpn: Option<VpnSettings>,
    /// `internal` is the `[mn]` registration, `external` the x-HA's.
    pub detect: DetectConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMn {
    home_addr: Ipv4Addr,
    home_agent: Ipv4Addr,
    /// The co-located care-of address to register at start-up; none means "stay idle until
    /// `mipctl register`".
    care_of_addr: Option<Ipv4Addr>,
    spi: u32,
    key_file: PathBuf,
    #[serde(default = "default_mn_lifetime")]
    lifetime: u16,
    #[serde(default = "super::default_true")]
    reverse_tunnel: bool,
    nai: Option<String>,
    #[serde(default = "super::default_tolerance")]
    replay_tolerance_secs: u64,
    #[serde(default = "default_retransmit_initial")]
    retransmit_initial_ms: u64,
    #[serde(default = "default_retransmit_max")]
    retransmit_max_ms: u64,
    #[serde(default = "super::default_port")]
    ha_port: u16,
    /// RFC 3519: "auto" (ask for UDP tunnelling, used if the home agent sees a NAT), "force"
    /// (F flag) or "off".
    #[serde(default = "default_nat_traversal")]
    nat_traversal: NatTraversalMode,
    /// Keepalive interval when the home agent leaves it to us (RFC 3519 §4.9).
    #[serde(default = "super::default_keepalive")]
    keepalive_secs: u16,
    #[serde(default = "default_keepalive_timeout")]
    keepalive_timeout_ms: u64,
    #[serde(default = "default_keepalive_retries")]
    keepalive_retries: u32,
    /// RFC 5265: inside/outside detection per interface; `[mn]` then describes the internal
    /// home agent (i-HA) registration.
    rfc5265: Option<RawRfc5265>,
    agent_discovery: Option<RawAgentDiscovery>,
}

/// `[mn.agent_discovery]`: listen for Agent Advertisements on one interface and register
/// through the foreign agent found there (RFC 5944 §2.4, §3.6.1.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentDiscovery {
    interface: String,
}

/// `[mn.rfc5265]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRfc5265 {
    /// Interfaces tracked separately (§3.2.1), each with its own plaintext gate.
    interfaces: Vec<String>,
    /// The access mode outside: "cvc" (x-HA, then the VPN, RFC 5265 §2.3) or "mc" (MOBIKE VPN
    /// without an x-HA, draft-ietf-mip4-mobike-connectivity §3.1.3).
    #[serde(default = "default_outside_mode")]
    mode: OutsideMode,
    external_home_agent: Option<Ipv4Addr>,
    external_home_addr: Option<Ipv4Addr>,
    external_spi: Option<u32>,
    external_key_file: Option<PathBuf>,
    /// The VPN (required in mode mc; without it in mode cvc, outside passes only signalling).
    vpn: Option<RawVpn>,
    /// Listen for agent advertisements on every interface and register through a foreign
    /// agent that requires it (R) or where there is no co-located address: modes f inside and
    /// fvc outside (RFC 5265 §2.2, §2.4).
    #[serde(default)]
    agent_discovery: bool,
    #[serde(default = "default_t_monitor")]
    t_monitor_secs: u64,
    #[serde(default = "default_grace")]
    grace_secs: u64,
    #[serde(default = "default_detection_period")]
    detection_period_ms: u64,
}

/// `[mn.rfc5265.vpn]`: the IKEv2 road-warrior connection mipd asks strongSwan's charon for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVpn {
    /// charon's VICI socket.
    #[serde(default = "default_vici_socket")]
    vici_socket: PathBuf,
    gateway: Ipv4Addr,
    local_id: String,
    remote_id: String,
    /// The IKE pre-shared key (its text, trimmed), mode 0600.
    psk_file: PathBuf,
    /// The VPN's L3 device: kernel-libipsec's TUN, or an XFRM interface.
    #[serde(default = "default_vpn_device")]
    device: String,
    /// Inside the intranet: "teardown" (the VPN is closed) or "keep" (left up, MOBIKE keeps
    /// it alive; draft §3.4.2 allows both).
    #[serde(default = "default_inside_vpn")]
    inside: InsideVpn,
    /// "auto" (whatever charon runs), "kernel" (the kernel's ESP, XFRM) or "libipsec"
    /// (strongSwan's user-space ESP): a setting charon contradicts fails the VPN with a reason.
    #[serde(default)]
    ipsec: IpsecSetting,
    /// With the kernel's IPsec: the XFRM interface ID (`if_id`) of the interface `device`
    /// that mipd creates and of the SAs and policies charon installs for it (non-zero).
    #[serde(default = "default_vpn_if_id")]
    if_id: u32,
    #[serde(default = "default_vpn_retry_initial")]
    retry_initial_ms: u64,
    #[serde(default = "default_vpn_retry_max")]
    retry_max_ms: u64,
    #[serde(default = "default_vpn_initiate_timeout")]
    initiate_timeout_ms: u32,
    /// Dead peer detection: a liveness check after this many idle seconds (0: off).
    #[serde(default = "default_vpn_dpd")]
    dpd_secs: u32,
}

/// A validated `[mn.rfc5265.vpn]`. Its `Debug` leaves the pre-shared key out.
#[derive(Clone)]
pub struct VpnSettings {
    pub vici_socket: PathBuf,
    pub gateway: Ipv4Addr,
    pub local_id: String,
    pub remote_id: String,
    /// The pre-shared key: handed to charon only, never logged.
    pub psk: String,
    pub device: String,
    pub inside: InsideVpn,
    pub ipsec: IpsecSetting,
    pub if_id: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub initiate_timeout_ms: u32,
    pub dpd_secs: u32,
}

impl std::fmt::Debug for VpnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpnSettings")
            .field("vici_socket", &self.vici_socket)
            .field("gateway", &self.gateway)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("psk", &"<redacted>")
            .field("device", &self.device)
            .field("inside", &self.inside)
            .field("ipsec", &self.ipsec)
            .field("if_id", &self.if_id)
            .finish_non_exhaustive()
    }
}

fn default_outside_mode() -> OutsideMode {
    OutsideMode::Cvc
}
fn default_vici_socket() -> PathBuf {
    PathBuf::from("/var/run/charon.vici")
}
fn default_vpn_device() -> String {
    "ipsec0".into()
}
/// "MIPX" in ASCII: unlikely to be taken by another XFRM interface on the host.
fn default_vpn_if_id() -> u32 {
    0x4d49_5058
}
fn default_inside_vpn() -> InsideVpn {
    InsideVpn::Teardown
}
fn default_vpn_retry_initial() -> u64 {
    1000
}
fn default_vpn_retry_max() -> u64 {
    30_000
}
fn default_vpn_initiate_timeout() -> u32 {
    10_000
}
fn default_vpn_dpd() -> u32 {
    30
}

fn default_t_monitor() -> u64 {
    DEFAULT_T_MONITOR.as_secs()
}
fn default_grace() -> u64 {
    10
}
fn default_detection_period() -> u64 {
    2000
}

fn default_mn_lifetime() -> u16 {
    600
}
fn default_nat_traversal() -> NatTraversalMode {
    NatTraversalMode::Auto
}
fn default_keepalive_timeout() -> u64 {
    2000
}
fn default_keepalive_retries() -> u32 {
    3
}
fn default_retransmit_initial() -> u64 {
    1000
}
fn default_retransmit_max() -> u64 {
    32_000
}

/// Validates `[mn]`; relative key file paths resolve against `base`.
pub(super) fn mn_settings(mn: RawMn, base: &Path) -> Result<MnSettings, ConfigError> {
    let key = read_key(&base.join(&mn.key_file)).map_err(|msg| field_err("mn.key_file", msg))?;
    let sa = security_association(mn.spi, key, mn.replay_tolerance_secs)
        .map_err(|(name, msg)| field_err(format!("mn.{name}"), msg))?;
    if mn.lifetime == 0 {
        return Err(field_err(
            "mn.lifetime",
            "must be at least 1 second (0 deregisters)",
        ));
    }
    if mn.retransmit_initial_ms < 1000 {
        // RFC 5944 §3.6.3: "MUST NOT be less than 1 second".
        return Err(field_err(
            "mn.retransmit_initial_ms",
            "must be at least 1000 (RFC 5944 §3.6.3)",
        ));
    }
    if mn.retransmit_max_ms < mn.retransmit_initial_ms {
        return Err(field_err(
            "mn.retransmit_max_ms",
            "must not be below retransmit_initial_ms",
        ));
    }
    // RFC 3519 §4.10: "the mobile node MUST NOT use a keepalive less than 10
    // seconds" of its own choosing (a home agent may assign less).
    if mn.keepalive_secs < 10 {
        return Err(field_err(
            "mn.keepalive_secs",
            "must be at least 10 (RFC 3519 §4.10)",
        ));
    }
    if !(100..=60_000).contains(&mn.keepalive_timeout_ms) {
        return Err(field_err("mn.keepalive_timeout_ms", "must be 100-60000"));
    }
    if !(1..=20).contains(&mn.keepalive_retries) {
        return Err(field_err("mn.keepalive_retries", "must be 1-20"));
    }
    if let Some(nai) = &mn.nai
        && (nai.is_empty()
            || nai.len() > 253
            || !nai.is_ascii()
            || nai.chars().any(|c| c.is_ascii_control()))
    {
        return Err(field_err(
            "mn.nai",
            "must be 1-253 printable characters (RFC 7542 §2.2)",
        ));
    }
    let core = MnConfig {
        home_addr: mn.home_addr,
        home_agent: mn.home_agent,
        sa,
        lifetime: mn.lifetime,
        reverse_tunnel: mn.reverse_tunnel,
        initial_retransmit: Duration::from_millis(mn.retransmit_initial_ms),
        max_retransmit: Duration::from_millis(mn.retransmit_max_ms),
        report_after_attempts: 4,
        nai: mn.nai.clone(),
        nat_traversal: NatTraversal {
            mode: mn.nat_traversal,
            keepalive: Duration::from_secs(mn.keepalive_secs.into()),
            keepalive_timeout: Duration::from_millis(mn.keepalive_timeout_ms),
            keepalive_retries: mn.keepalive_retries,
        },
        renew_every: None,
    };
    let rfc5265 = match &mn.rfc5265 {
        None => None,
        Some(r) => Some(rfc5265_settings(r, base, &mn, &core)?),
    };
    let agent_discovery = match &mn.agent_discovery {
        None => None,
        Some(_) if rfc5265.is_some() => {
            return Err(field_err(
                "mn.agent_discovery",
                "not available together with [mn.rfc5265] in this version",
            ));
        }
        Some(d) if !valid_ifname(&d.interface) => {
            return Err(field_err(
                "mn.agent_discovery.interface",
                format!("`{}` is not a valid interface name", d.interface),
            ));
        }
        Some(d) => Some(d.interface.clone()),
    };
    Ok(MnSettings {
        core: core.clone(),
        care_of_addr: mn.care_of_addr,
        ha_port: mn.ha_port,
        rfc5265,
        agent_discovery,
    })
}

/// Validates `[mn.rfc5265]`; the internal layer's [`MnConfig`] is filled in by the caller.
fn rfc5265_settings(
    r: &RawRfc5265,
    base: &Path,
    mn: &RawMn,
    internal: &MnConfig,
) -> Result<Rfc5265Settings, ConfigError> {
    let f = |name: &str| format!("mn.rfc5265.{name}");
    if r.interfaces.is_empty() {
        return Err(field_err(f("interfaces"), "list at least one interface"));
    }
    for (i, name) in r.interfaces.iter().enumerate() {
        if !valid_ifname(name) {
            return Err(field_err(
                format!("mn.rfc5265.interfaces[{i}]"),
                format!("`{name}` is not a valid interface name"),
            ));
        }
    }
    // RFC 5265 §3.2.4: configurable; "in the order of a few seconds is not practical", but
    // tests need a few seconds, so only nonsense is refused.
    if !(2..=3600).contains(&r.t_monitor_secs) {
        return Err(field_err(
            f("t_monitor_secs"),
            "must be 2-3600 (default 60)",
        ));
    }
    if r.grace_secs == 0 || r.grace_secs >= r.t_monitor_secs {
        return Err(field_err(
            f("grace_secs"),
            "must be at least 1 and below t_monitor_secs",
        ));
    }
    if r.detection_period_ms > 600_000 {
        return Err(field_err(
            f("detection_period_ms"),
            "must be at most 600000",
        ));
    }
    let external = match r.mode {
        OutsideMode::Cvc => {
            fn need<T>(v: Option<T>, name: &str) -> Result<T, ConfigError> {
                v.ok_or_else(|| {
                    field_err(
                        format!("mn.rfc5265.{name}"),
                        "required in mode cvc (the x-HA)",
                    )
                })
            }
            let key_file = need(r.external_key_file.as_ref(), "external_key_file")?;
            let key = read_key(&base.join(key_file))
                .map_err(|msg| field_err(f("external_key_file"), msg))?;
            let sa = security_association(
                need(r.external_spi, "external_spi")?,
                key,
                mn.replay_tolerance_secs,
            )
            .map_err(|(name, msg)| field_err(f(&format!("external_{name}")), msg))?;
            // The x-HA registration runs on the `[mn]` registration's timers.
            Some(MnConfig {
                home_addr: need(r.external_home_addr, "external_home_addr")?,
                home_agent: need(r.external_home_agent, "external_home_agent")?,
                sa,
                nai: None,
                nat_traversal: NatTraversal::default(),
                ..internal.clone()
            })
        }
        OutsideMode::Mc => {
            // draft-ietf-mip4-mobike-connectivity §3.1.3: no x-HA; the VPN is the outside.
            for (name, set) in [
                ("external_home_agent", r.external_home_agent.is_some()),
                ("external_home_addr", r.external_home_addr.is_some()),
                ("external_spi", r.external_spi.is_some()),
                ("external_key_file", r.external_key_file.is_some()),
            ] {
                if set {
                    return Err(field_err(f(name), "mode mc has no x-HA; remove it"));
                }
            }
            if r.vpn.is_none() {
                return Err(field_err(
                    f("vpn"),
                    "mode mc needs a [mn.rfc5265.vpn] table",
                ));
            }
            None
        }
    };
    let vpn = r.vpn.as_ref().map(|v| vpn_settings(v, base)).transpose()?;
    if r.agent_discovery && r.mode == OutsideMode::Mc {
        return Err(field_err(
            f("agent_discovery"),
            "foreign agents are used in modes f and fvc; mode \"mc\" registers no x-MIP layer to carry through one",
        ));
    }
    Ok(Rfc5265Settings {
        interfaces: r.interfaces.clone(),
        mode: r.mode,
        agent_discovery: r.agent_discovery,
        vpn,
        detect: DetectConfig {
            // Filled in by the caller with the `[mn]` registration.
            internal: internal.clone(),
            external,
            detection_period: Duration::from_millis(r.detection_period_ms),
            t_monitor: Duration::from_secs(r.t_monitor_secs),
            grace: Duration::from_secs(r.grace_secs),
        },
    })
}

/// Validates `[mn.rfc5265.vpn]`.
fn vpn_settings(v: &RawVpn, base: &Path) -> Result<VpnSettings, ConfigError> {
    let f = |name: &str| format!("mn.rfc5265.vpn.{name}");
    for (name, id) in [("local_id", &v.local_id), ("remote_id", &v.remote_id)] {
        if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_control()) {
            return Err(field_err(f(name), "must be 1-255 printable characters"));
        }
    }
    if !valid_ifname(&v.device) {
        return Err(field_err(
            f("device"),
            format!("`{}` is not a valid interface name", v.device),
        ));
    }
    if v.gateway.is_unspecified() || v.gateway.is_multicast() || v.gateway.is_broadcast() {
        return Err(field_err(f("gateway"), "must be a unicast address"));
    }
    if v.retry_initial_ms < 100 || v.retry_max_ms < v.retry_initial_ms || v.retry_max_ms > 3_600_000
    {
        return Err(field_err(
            f("retry_max_ms"),
            "need 100 <= retry_initial_ms <= retry_max_ms <= 3600000",
        ));
    }
    if v.if_id == 0 {
        // The kernel refuses an XFRM interface with if_id 0: it means "no interface".
        return Err(field_err(f("if_id"), "must be non-zero"));
    }
    if v.dpd_secs > 3600 {
        return Err(field_err(f("dpd_secs"), "must be 0-3600"));
    }
    if !(500..=120_000).contains(&v.initiate_timeout_ms) {
        return Err(field_err(f("initiate_timeout_ms"), "must be 500-120000"));
    }
    let psk = read_secret(&base.join(&v.psk_file)).map_err(|msg| field_err(f("psk_file"), msg))?;
    Ok(VpnSettings {
        vici_socket: base.join(&v.vici_socket),
        gateway: v.gateway,
        local_id: v.local_id.clone(),
        remote_id: v.remote_id.clone(),
        psk,
        device: v.device.clone(),
        inside: v.inside,
        ipsec: v.ipsec,
        if_id: v.if_id,
        retry_initial: Duration::from_millis(v.retry_initial_ms),
        retry_max: Duration::from_millis(v.retry_max_ms),
        initiate_timeout_ms: v.initiate_timeout_ms,
        dpd_secs: v.dpd_secs,
    })
}

/// Reads a secret text file (trimmed), refusing loose permissions as [`read_key`] does.
fn read_secret(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: permissions {mode:03o} let others read or write the secret; chmod 600 it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(secret.to_owned())
}
