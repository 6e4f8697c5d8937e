//! `mipd --config FILE`: the TOML configuration, validated into the protocol cores' configs.
//!
//! Errors name the offending field (`ha.mobile_node[2].key_file: ...`). Key files must not be
//! readable or writable by group or others, and their contents never reach a log.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod fa;

pub use fa::{Advertise, FaInterface, FaSettings, ReverseTunnel};

use crate::auth::{Key, ReplayProtection, SecurityAssociation};
use crate::proto::detect::{DEFAULT_T_MONITOR, DetectConfig};
use crate::proto::ha::{
    ForeignAgentEntry, HaConfig, HomeAddrs, MobileNodeEntry, Subnet, UdpTunnelPolicy,
};
use crate::proto::mn::{MnConfig, NatTraversal, NatTraversalMode};

/// Where `mipd` listens for `mipctl` unless configured otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/mipx/mipd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ha,
    Mn,
    Fa,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: Role,
    api_socket: Option<PathBuf>,
    ha: Option<RawHa>,
    mn: Option<RawMn>,
    fa: Option<fa::RawFa>,
    dataplane: Option<RawDataplane>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    interfaces: Vec<String>,
    home_link: Option<String>,
    pin_dir: Option<PathBuf>,
    max_bindings: Option<u32>,
    #[serde(default)]
    xdp_mode: XdpModeSetting,
}

/// How XDP programs attach.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// In the driver (veth and most NICs): the fast path.
    #[default]
    Native,
    /// After the kernel has built an skb: works everywhere, slower.
    Generic,
}

/// The `[dataplane]` table: where the eBPF programs attach and where their state is pinned.
#[derive(Debug, Clone)]
pub struct DataplaneSettings {
    pub interfaces: Vec<String>,
    /// Home agent: the home link, where it answers ARP for away mobile nodes and sends
    /// gratuitous ARP (RFC 5944 §4.6).
    pub home_link: Option<String>,
    pub pin_dir: PathBuf,
    pub max_bindings: u32,
    pub xdp_mode: XdpModeSetting,
}

/// Where programs and maps are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mipx";

fn dataplane_settings(raw: RawDataplane, role: Role) -> Result<DataplaneSettings, ConfigError> {
    if raw.interfaces.is_empty() {
        return Err(field_err(
            "dataplane.interfaces",
            "list at least one interface",
        ));
    }
    for (i, name) in raw.interfaces.iter().enumerate() {
        if !valid_ifname(name) {
            return Err(field_err(
                format!("dataplane.interfaces[{i}]"),
                format!("`{name}` is not a valid interface name"),
            ));
        }
    }
    match (&raw.home_link, role) {
        (Some(_), Role::Mn | Role::Fa) => {
            return Err(field_err(
                "dataplane.home_link",
                "only a home agent has a home link to defend",
            ));
        }
        (Some(link), _) if !raw.interfaces.contains(link) => {
            return Err(field_err(
                "dataplane.home_link",
                format!("`{link}` must also be listed in dataplane.interfaces"),
            ));
        }
        _ => {}
    }
    let max_bindings = raw
        .max_bindings
        .unwrap_or(mipx_common::maps::DEFAULT_MAX_BINDINGS);
    if !(1..=16_777_216).contains(&max_bindings) {
        return Err(field_err(
            "dataplane.max_bindings",
            "must be between 1 and 16777216",
        ));
    }
    let pin_dir = raw.pin_dir.unwrap_or_else(|| {
        Path::new(DEFAULT_PIN_DIR).join(match role {
            Role::Ha => "ha",
            Role::Mn => "mn",
            Role::Fa => "fa",
        })
    });
    if !pin_dir.is_absolute() {
        return Err(field_err(
            "dataplane.pin_dir",
            "must be an absolute path on bpffs",
        ));
    }
    Ok(DataplaneSettings {
        interfaces: raw.interfaces,
        home_link: raw.home_link,
        pin_dir,
        max_bindings,
        xdp_mode: raw.xdp_mode,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    address: Ipv4Addr,
    #[serde(default = "default_max_lifetime")]
    max_lifetime: u16,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default)]
    mobile_node: Vec<RawMobileNode>,
    /// RFC 5944 §3.8.1: foreign agents sharing a security association with us.
    #[serde(default)]
    foreign_agent: Vec<RawForeignAgent>,
    #[serde(default)]
    udp_tunnel: RawUdpTunnel,
    /// RFC 5265 §4.3: present, this is an internal home agent (i-HA) answering only these
    /// subnets; empty, it answers nobody.
    trusted_networks: Option<Vec<String>>,
    /// RFC 5265 §3.7: an external home agent (x-HA) drops registrations arriving on these
    /// interfaces (the ones facing the intranet).
    #[serde(default)]
    internal_interfaces: Vec<String>,
}

/// `[ha.udp_tunnel]`: RFC 3519 NAT traversal on the home agent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUdpTunnel {
    /// Assent to UDP tunnelling for mobile nodes behind a NAT.
    #[serde(default = "default_true")]
    enabled: bool,
    /// Also when a mobile node forces it (F) without a NAT.
    #[serde(default = "default_true")]
    allow_forced: bool,
    /// Keepalive interval assigned in the UDP Tunnel Reply; 0: the mobile node's default.
    #[serde(default = "default_keepalive")]
    keepalive_secs: u16,
}

impl Default for RawUdpTunnel {
    fn default() -> Self {
        RawUdpTunnel {
            enabled: true,
            allow_forced: true,
            keepalive_secs: default_keepalive(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMobileNode {
    home_addr: Option<Ipv4Addr>,
    /// A pool: every address of `a.b.c.d/len`, sharing one SPI and key.
    home_prefix: Option<String>,
    spi: u32,
    key_file: PathBuf,
    #[serde(default = "default_tolerance")]
    replay_tolerance_secs: u64,
}

/// `[[ha.foreign_agent]]`: a mobility security association with a foreign agent, for the
/// Foreign-Home Authentication Extension (RFC 5944 §3.5.4, §3.8.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForeignAgent {
    /// The source address of the agent's relays, i.e. the care-of address it advertises
    /// (§3.5.4 selects the association by it and the SPI; §3.7.2.2 sets it).
    address: Ipv4Addr,
    spi: u32,
    key_file: PathBuf,
    /// Validated like the mobile nodes' for a uniform association table, but not consulted:
    /// replay protection of a relay is the mobile node's Identification (§5.7), checked with
    /// the mobile node's association and covered by the Foreign-Home authenticator.
    #[serde(default = "default_tolerance")]
    replay_tolerance_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMn {
    home_addr: Ipv4Addr,
    home_agent: Ipv4Addr,
    /// The co-located care-of address to register at start-up; none means "stay idle until
    /// `mipctl register`".
    care_of_addr: Option<Ipv4Addr>,
    spi: u32,
    key_file: PathBuf,
    #[serde(default = "default_mn_lifetime")]
    lifetime: u16,
    #[serde(default = "default_true")]
    reverse_tunnel: bool,
    nai: Option<String>,
    #[serde(default = "default_tolerance")]
    replay_tolerance_secs: u64,
    #[serde(default = "default_retransmit_initial")]
    retransmit_initial_ms: u64,
    #[serde(default = "default_retransmit_max")]
    retransmit_max_ms: u64,
    #[serde(default = "default_port")]
    ha_port: u16,
    /// RFC 3519: "auto" (ask for UDP tunnelling, used if the home agent sees a NAT), "force"
    /// (F flag) or "off".
    #[serde(default = "default_nat_traversal")]
    nat_traversal: NatTraversalMode,
    /// Keepalive interval when the home agent leaves it to us (RFC 3519 §4.9).
    #[serde(default = "default_keepalive")]
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
struct RawAgentDiscovery {
    interface: String,
}

/// `[mn.rfc5265]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRfc5265 {
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
struct RawVpn {
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

/// The access mode outside the intranet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutsideMode {
    Cvc,
    Mc,
}

/// What happens to the VPN while an interface is inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsideVpn {
    Teardown,
    Keep,
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

fn default_max_lifetime() -> u16 {
    600
}
fn default_mn_lifetime() -> u16 {
    600
}
fn default_port() -> u16 {
    mipx_common::wire::MIP_PORT
}
fn default_tolerance() -> u64 {
    // RFC 5944 §5.7.1: "a default value of 7 seconds MAY be used".
    7
}
fn default_true() -> bool {
    true
}
fn default_keepalive() -> u16 {
    crate::proto::ha::DEFAULT_KEEPALIVE_SECS
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

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub role: Role,
    pub api_socket: PathBuf,
    pub ha: Option<HaSettings>,
    pub mn: Option<MnSettings>,
    pub fa: Option<FaSettings>,
    /// `None`: control plane only (no eBPF programs are loaded).
    pub dataplane: Option<DataplaneSettings>,
}

#[derive(Debug)]
pub struct HaSettings {
    pub core: HaConfig,
    pub port: u16,
    /// x-HA: interfaces whose registrations are dropped (RFC 5265 §3.7).
    pub internal_interfaces: Vec<String>,
}

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

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; relative key file paths resolve against `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let api_socket = raw.api_socket.unwrap_or_else(|| DEFAULT_API_SOCKET.into());
        let dataplane = raw
            .dataplane
            .map(|d| dataplane_settings(d, raw.role))
            .transpose()?;
        match raw.role {
            Role::Ha => {
                let ha = raw
                    .ha
                    .ok_or_else(|| field_err("ha", "role = \"ha\" needs an [ha] table"))?;
                let mut mobile_nodes = Vec::new();
                for (i, m) in ha.mobile_node.iter().enumerate() {
                    let f = |name: &str| format!("ha.mobile_node[{i}].{name}");
                    let home_addrs = match (m.home_addr, &m.home_prefix) {
                        (Some(a), None) => HomeAddrs::Single(a),
                        (None, Some(p)) => {
                            parse_prefix(p).map_err(|msg| field_err(f("home_prefix"), msg))?
                        }
                        _ => {
                            return Err(field_err(
                                f("home_addr"),
                                "set exactly one of home_addr and home_prefix",
                            ));
                        }
                    };
                    let key = read_key(&base.join(&m.key_file))
                        .map_err(|msg| field_err(f("key_file"), msg))?;
                    let sa = security_association(m.spi, key, m.replay_tolerance_secs)
                        .map_err(|(name, msg)| field_err(f(name), msg))?;
                    mobile_nodes.push(MobileNodeEntry { home_addrs, sa });
                }
                let mut foreign_agents: Vec<ForeignAgentEntry> = Vec::new();
                for (i, entry) in ha.foreign_agent.iter().enumerate() {
                    let f = |name: &str| format!("ha.foreign_agent[{i}].{name}");
                    let a = entry.address;
                    if a.is_unspecified()
                        || a.is_broadcast()
                        || a.is_multicast()
                        || a.is_loopback()
                        || a == ha.address
                    {
                        return Err(field_err(
                            f("address"),
                            format!("{a} cannot be a foreign agent's care-of address"),
                        ));
                    }
                    let key = read_key(&base.join(&entry.key_file))
                        .map_err(|msg| field_err(f("key_file"), msg))?;
                    let sa = security_association(entry.spi, key, entry.replay_tolerance_secs)
                        .map_err(|(name, msg)| field_err(f(name), msg))?;
                    // §3.5.4: source address and SPI select the association, so that pair
                    // must be unique (one address may hold several SPIs, for a key rollover).
                    if foreign_agents
                        .iter()
                        .any(|e| e.address == a && e.sa.spi == sa.spi)
                    {
                        return Err(field_err(
                            f("spi"),
                            format!("{a} already has an association with SPI {}", sa.spi),
                        ));
                    }
                    foreign_agents.push(ForeignAgentEntry { address: a, sa });
                }
                if ha.max_lifetime == 0 {
                    return Err(field_err("ha.max_lifetime", "must be at least 1 second"));
                }
                let trusted_networks = ha
                    .trusted_networks
                    .as_ref()
                    .map(|nets| {
                        nets.iter()
                            .enumerate()
                            .map(|(i, n)| {
                                parse_subnet(n).map_err(|msg| {
                                    field_err(format!("ha.trusted_networks[{i}]"), msg)
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                for (i, name) in ha.internal_interfaces.iter().enumerate() {
                    if !valid_ifname(name) {
                        return Err(field_err(
                            format!("ha.internal_interfaces[{i}]"),
                            format!("`{name}` is not a valid interface name"),
                        ));
                    }
                }
                Ok(Config {
                    role: Role::Ha,
                    api_socket,
                    ha: Some(HaSettings {
                        core: HaConfig {
                            address: ha.address,
                            max_lifetime: ha.max_lifetime,
                            mobile_nodes,
                            foreign_agents,
                            udp_tunnel: UdpTunnelPolicy {
                                enabled: ha.udp_tunnel.enabled,
                                allow_forced: ha.udp_tunnel.allow_forced,
                                keepalive_interval: ha.udp_tunnel.keepalive_secs,
                            },
                            trusted_networks,
                        },
                        port: ha.port,
                        internal_interfaces: ha.internal_interfaces,
                    }),
                    mn: None,
                    fa: None,
                    dataplane,
                })
            }
            Role::Mn => {
                let mn = raw
                    .mn
                    .ok_or_else(|| field_err("mn", "role = \"mn\" needs an [mn] table"))?;
                let key = read_key(&base.join(&mn.key_file))
                    .map_err(|msg| field_err("mn.key_file", msg))?;
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
                Ok(Config {
                    role: Role::Mn,
                    api_socket,
                    ha: None,
                    fa: None,
                    mn: Some(MnSettings {
                        core: core.clone(),
                        care_of_addr: mn.care_of_addr,
                        ha_port: mn.ha_port,
                        rfc5265,
                        agent_discovery,
                    }),
                    dataplane,
                })
            }
            Role::Fa => {
                let raw_fa = raw
                    .fa
                    .ok_or_else(|| field_err("fa", "role = \"fa\" needs an [fa] table"))?;
                Ok(Config {
                    role: Role::Fa,
                    api_socket,
                    ha: None,
                    mn: None,
                    fa: Some(fa::fa_settings(raw_fa, base)?),
                    dataplane,
                })
            }
        }
    }
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
            Some(MnConfig {
                home_addr: need(r.external_home_addr, "external_home_addr")?,
                home_agent: need(r.external_home_agent, "external_home_agent")?,
                sa,
                lifetime: mn.lifetime,
                reverse_tunnel: mn.reverse_tunnel,
                initial_retransmit: Duration::from_millis(mn.retransmit_initial_ms),
                max_retransmit: Duration::from_millis(mn.retransmit_max_ms),
                report_after_attempts: 4,
                nai: None,
                nat_traversal: NatTraversal::default(),
                renew_every: None,
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

fn security_association(
    spi: u32,
    key: Key,
    tolerance_secs: u64,
) -> Result<SecurityAssociation, (&'static str, String)> {
    // RFC 5944 §1.6 / RFC 4721 §11: SPIs 0-255 are reserved.
    if spi < 256 {
        return Err((
            "spi",
            format!("{spi} is reserved (SPIs 0-255 are reserved, RFC 5944 §1.6)"),
        ));
    }
    if tolerance_secs == 0 || tolerance_secs > 3600 {
        return Err((
            "replay_tolerance_secs",
            "must be 1-3600 (RFC 5944 §5.7.1 suggests 7)".into(),
        ));
    }
    Ok(SecurityAssociation {
        spi,
        key,
        replay: ReplayProtection::Timestamp {
            tolerance: Duration::from_secs(tolerance_secs),
        },
    })
}

/// Whether `name` can be a Linux interface name (IFNAMSIZ is 16 including the NUL).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.contains(['/', ' ', '\0'])
}

/// `a.b.c.d/len`, with no host bits set (a trusted-network list is security configuration: a
/// typo such as 10.1.2.3/8 is refused rather than silently widened).
fn parse_subnet(s: &str) -> Result<Subnet, String> {
    let (addr, len) = parse_cidr(s)?;
    let subnet = Subnet { addr, len };
    let host_bits = u32::from(addr) & !u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    if host_bits != 0 {
        return Err(format!(
            "{s} has host bits set; did you mean {}/{len}?",
            Ipv4Addr::from(u32::from(addr) & !host_bits)
        ));
    }
    Ok(subnet)
}

fn parse_prefix(s: &str) -> Result<HomeAddrs, String> {
    let (addr, len) = parse_cidr(s)?;
    Ok(HomeAddrs::Prefix(addr, len))
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s.split_once('/').ok_or("expected a.b.c.d/len")?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or("prefix length must be 0-32")?;
    Ok((addr, len))
}

/// Reads a key file: the key as hexadecimal (whitespace ignored, optional `0x`). Refuses files
/// that group or others can read or write, so a shared secret cannot be read by other users.
pub fn read_key(path: &Path) -> Result<Key, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: permissions {mode:03o} let others read or write the key; chmod 600 it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex: String = text.split_whitespace().collect();
    let hex = hex.strip_prefix("0x").unwrap_or(&hex);
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(format!(
            "{}: expected an even number of hex digits",
            path.display()
        ));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("{}: not hexadecimal", path.display()))?;
    if bytes.len() < 16 {
        // RFC 5944 §5.1: keys for HMAC-MD5 "of at least 128 bits".
        return Err(format!(
            "{}: key is {} bytes; at least 16 required",
            path.display(),
            bytes.len()
        ));
    }
    Ok(Key::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempdir::TempDir {
        tempdir::TempDir::new()
    }

    mod tempdir {
        /// A throwaway directory removed on drop (tests only).
        pub struct TempDir(pub std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p =
                    std::env::temp_dir().join(format!("mipx-config-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn key_file(d: &Path, mode: u32) -> PathBuf {
        let p = d.join("mn.key");
        std::fs::write(&p, "00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    const FA: &str = r#"
role = "fa"
[fa]
max_lifetime = 300
reverse_tunnel = "require"
[[fa.interface]]
name = "fa1"
care_of_addr = "198.51.100.1"
advertisement_interval_ms = 1000
advertisement_lifetime_secs = 3
registration_required = true
[[fa.home_agent]]
address = "10.1.0.1"
spi = 8193
key_file = "mn.key"
[[fa.mobile_node]]
home_addr = "10.1.0.10"
spi = 8194
key_file = "mn.key"
"#;

    #[test]
    fn parses_fa() {
        let d = dir();
        key_file(&d.0, 0o600);
        let c = Config::parse(FA, &d.0.join("fa.toml")).unwrap();
        assert_eq!(c.role, Role::Fa);
        let fa = c.fa.unwrap();
        assert_eq!(fa.max_lifetime, 300);
        assert_eq!(fa.reverse_tunnel, ReverseTunnel::Require);
        assert_eq!(
            fa.interfaces[0].care_of_addr,
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert!(fa.interfaces[0].registration_required);
        assert_eq!(fa.interfaces[0].advertise, Advertise::Periodic);
        assert_eq!(fa.home_agents[0].0, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(fa.home_agents[0].1.spi, 8193);
        assert_eq!(fa.mobile_nodes[0].0, Ipv4Addr::new(10, 1, 0, 10));
        assert!(c.ha.is_none() && c.mn.is_none());
    }

    /// Each broken `[fa]` names its field.
    #[test]
    fn fa_errors_name_the_field() {
        let d = dir();
        key_file(&d.0, 0o600);
        let cases = [
            (FA.replace("advertisement_interval_ms = 1000", "advertisement_interval_ms = 1001"), "fa.interface[0].advertisement_interval_ms"),
            (FA.replace("advertisement_interval_ms = 1000", "advertisement_interval_ms = 900").replace("advertisement_lifetime_secs = 3", "advertisement_lifetime_secs = 30"), "fa.interface[0].advertisement_interval_ms"),
            (FA.replace("care_of_addr = \"198.51.100.1\"", "care_of_addr = \"224.0.0.11\""), "fa.interface[0].care_of_addr"),
            (FA.replace("name = \"fa1\"", "name = \"a/b\""), "fa.interface[0].name"),
            (FA.replace("max_lifetime = 300", "max_lifetime = 0"), "fa.max_lifetime"),
            (FA.replace("spi = 8193", "spi = 17"), "fa.home_agent[0].spi"),
            (FA.replace("address = \"10.1.0.1\"", "home_addr = \"10.1.0.1\""), "fa.home_agent[0].address"),
            (FA.replace("registration_required = true", "registration_required = true\nadvertise = \"off\""), "fa.interface[0].registration_required"),
            (FA.replace("[fa]", "[fa]\nrequire_mn_fa_auth = true").replace("[[fa.mobile_node]]\nhome_addr = \"10.1.0.10\"\nspi = 8194\nkey_file = \"mn.key\"\n", ""), "fa.require_mn_fa_auth"),
            (FA.replace("[fa]", "[fa]\nbehind_nat = true\nkeepalive_secs = 5"), "fa.keepalive_secs"),
            ("role = \"fa\"\n".to_string(), "fa"),
        ];
        for (text, field) in cases {
            match Config::parse(&text, &d.0.join("fa.toml")) {
                Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("expected an error naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn fa_refuses_a_loose_key_file() {
        let d = dir();
        key_file(&d.0, 0o644);
        match Config::parse(FA, &d.0.join("fa.toml")) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "fa.home_agent[0].key_file");
                assert!(message.contains("chmod 600"), "{message}");
                assert!(!message.contains("0011223344"), "the key leaked: {message}");
            }
            other => panic!("expected a key file error, got {other:?}"),
        }
    }

    const HA: &str = r#"
role = "ha"
[ha]
address = "10.1.0.1"
max_lifetime = 300
[[ha.mobile_node]]
home_addr = "10.1.0.10"
spi = 4096
key_file = "mn.key"
[[ha.mobile_node]]
home_prefix = "10.128.0.0/15"
spi = 4097
key_file = "mn.key"
"#;

    #[test]
    fn parses_ha_and_resolves_key_relative_to_config() {
        let d = dir();
        key_file(&d.0, 0o600);
        let c = Config::parse(HA, &d.0.join("ha.toml")).unwrap();
        let ha = c.ha.unwrap();
        assert_eq!(ha.core.max_lifetime, 300);
        assert_eq!(ha.core.mobile_nodes.len(), 2);
        assert!(
            ha.core.mobile_nodes[1]
                .home_addrs
                .contains(Ipv4Addr::new(10, 129, 255, 1))
        );
        assert!(
            !ha.core.mobile_nodes[1]
                .home_addrs
                .contains(Ipv4Addr::new(10, 130, 0, 1))
        );
    }

    #[test]
    fn refuses_loose_key_permissions_naming_the_field() {
        let d = dir();
        key_file(&d.0, 0o644);
        let e = Config::parse(HA, &d.0.join("ha.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ha.mobile_node[0].key_file:") && e.contains("644"),
            "{e}"
        );
        assert!(!e.contains("00112233"), "error must not echo the key");
    }

    #[test]
    fn errors_name_the_field() {
        let d = dir();
        key_file(&d.0, 0o600);
        let cases = [
            (HA.replace("spi = 4096", "spi = 7"), "ha.mobile_node[0].spi"),
            (HA.replace("10.1.0.1\"", "10.1.0\""), "address"),
            (
                HA.replace("max_lifetime = 300", "max_lifetme = 300"),
                "max_lifetme",
            ),
            (
                HA.replace(
                    "home_prefix = \"10.128.0.0/15\"",
                    "home_prefix = \"10.128.0.0/40\"",
                ),
                "ha.mobile_node[1].home_prefix",
            ),
            ("role = \"mn\"".to_string(), "mn"),
            ("role = \"router\"".to_string(), "role"),
        ];
        for (text, field) in cases {
            let e = Config::parse(&text, &d.0.join("ha.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn dataplane_table_is_checked_and_errors_name_the_field() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("ha.toml");
        let ok = format!(
            "{HA}\n[dataplane]\ninterfaces = [\"ha0\", \"eth1\"]\nhome_link = \"ha0\"\nmax_bindings = 1000000\n"
        );
        let c = Config::parse(&ok, &path).unwrap();
        let dp = c.dataplane.unwrap();
        assert_eq!(dp.pin_dir, Path::new("/sys/fs/bpf/mipx/ha"));
        assert_eq!(dp.max_bindings, 1_000_000);
        assert_eq!(dp.xdp_mode, XdpModeSetting::Native);
        assert!(Config::parse(HA, &path).unwrap().dataplane.is_none());

        let cases = [
            ("interfaces = []", "dataplane.interfaces"),
            ("interfaces = [\"ha0\", \"a/b\"]", "dataplane.interfaces[1]"),
            (
                "interfaces = [\"ha0\"]\nhome_link = \"eth9\"",
                "dataplane.home_link",
            ),
            (
                "interfaces = [\"ha0\"]\nmax_bindings = 0",
                "dataplane.max_bindings",
            ),
            (
                "interfaces = [\"ha0\"]\npin_dir = \"relative\"",
                "dataplane.pin_dir",
            ),
            ("interfaces = [\"ha0\"]\nxdp_mode = \"turbo\"", "xdp_mode"),
        ];
        for (table, field) in cases {
            let text = format!("{HA}\n[dataplane]\n{table}\n");
            let e = Config::parse(&text, &path).unwrap_err().to_string();
            assert!(e.contains(field), "{table}: {e}");
        }
    }

    #[test]
    fn parses_mn_with_defaults_and_checks_rfc_minimums() {
        let d = dir();
        key_file(&d.0, 0o400);
        let text = r#"
role = "mn"
[mn]
home_addr = "10.1.0.10"
home_agent = "10.1.0.1"
care_of_addr = "192.0.2.10"
spi = 4096
key_file = "mn.key"
"#;
        let c = Config::parse(text, &d.0.join("mn.toml")).unwrap();
        let mn = c.mn.unwrap();
        assert_eq!(mn.core.lifetime, 600);
        assert_eq!(mn.core.initial_retransmit, Duration::from_secs(1));
        assert!(mn.core.reverse_tunnel);
        let fast = format!("{text}retransmit_initial_ms = 200\n");
        let e = Config::parse(&fast, &d.0.join("mn.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("mn.retransmit_initial_ms"), "{e}");

        // RFC 3519 settings: defaults, and errors naming the field.
        assert_eq!(mn.core.nat_traversal, NatTraversal::default());
        let forced = format!("{text}nat_traversal = \"force\"\nkeepalive_secs = 30\n");
        let c = Config::parse(&forced, &d.0.join("mn.toml")).unwrap();
        let nat = c.mn.unwrap().core.nat_traversal;
        assert_eq!(nat.mode, NatTraversalMode::Force);
        assert_eq!(nat.keepalive, Duration::from_secs(30));
        for (extra, field) in [
            ("keepalive_secs = 5", "mn.keepalive_secs"),
            ("keepalive_timeout_ms = 10", "mn.keepalive_timeout_ms"),
            ("keepalive_retries = 0", "mn.keepalive_retries"),
            ("nat_traversal = \"sometimes\"", "nat_traversal"),
        ] {
            let e = Config::parse(&format!("{text}{extra}\n"), &d.0.join("mn.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn parses_trusted_networks_and_internal_interfaces() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("ha.toml");
        let plain = Config::parse(HA, &path).unwrap().ha.unwrap();
        assert_eq!(plain.core.trusted_networks, None);
        assert!(plain.internal_interfaces.is_empty());
        let with = HA.replace(
            "max_lifetime = 300",
            "max_lifetime = 300\ntrusted_networks = [\"10.0.0.0/8\", \"192.168.7.0/24\"]\n\
             internal_interfaces = [\"eth1\"]",
        );
        let ha = Config::parse(&with, &path).unwrap().ha.unwrap();
        let nets = ha.core.trusted_networks.unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(Ipv4Addr::new(192, 168, 7, 9)));
        assert_eq!(ha.internal_interfaces, ["eth1"]);
        let empty = HA.replace(
            "max_lifetime = 300",
            "max_lifetime = 300\ntrusted_networks = []",
        );
        let ha = Config::parse(&empty, &path).unwrap().ha.unwrap();
        assert_eq!(ha.core.trusted_networks, Some(vec![]));
        for (line, field) in [
            (
                "trusted_networks = [\"10.0.0.0/8\", \"10.1.2.3/16\"]",
                "ha.trusted_networks[1]",
            ),
            (
                "trusted_networks = [\"10.0.0.0\"]",
                "ha.trusted_networks[0]",
            ),
            (
                "internal_interfaces = [\"a b\"]",
                "ha.internal_interfaces[0]",
            ),
        ] {
            let text = HA.replace("max_lifetime = 300", &format!("max_lifetime = 300\n{line}"));
            let e = Config::parse(&text, &path).unwrap_err().to_string();
            assert!(e.starts_with(field), "{line}: {e}");
        }
    }

    #[test]
    fn parses_the_rfc5265_mobile_node() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("mn.toml");
        let text = r#"
role = "mn"
[mn]
home_addr = "10.10.0.50"
home_agent = "10.10.0.1"
spi = 4096
key_file = "mn.key"
[mn.rfc5265]
interfaces = ["mn0", "wlan0"]
external_home_agent = "192.0.2.1"
external_home_addr = "192.0.2.50"
external_spi = 8192
external_key_file = "mn.key"
t_monitor_secs = 30
"#;
        let mn = Config::parse(text, &path).unwrap().mn.unwrap();
        let r = mn.rfc5265.unwrap();
        assert_eq!(r.interfaces, ["mn0", "wlan0"]);
        assert_eq!(r.detect.internal.home_agent, Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(
            r.detect.external.as_ref().unwrap().home_addr,
            Ipv4Addr::new(192, 0, 2, 50)
        );
        assert_eq!(r.detect.external.as_ref().unwrap().sa.spi, 8192);
        assert_eq!(r.detect.t_monitor, Duration::from_secs(30));
        assert_eq!(r.detect.grace, Duration::from_secs(10));
        assert_eq!(r.detect.detection_period, Duration::from_secs(2));
        for (from, to, field) in [
            (
                "t_monitor_secs = 30",
                "t_monitor_secs = 1",
                "mn.rfc5265.t_monitor_secs",
            ),
            (
                "t_monitor_secs = 30",
                "t_monitor_secs = 30\ngrace_secs = 30",
                "mn.rfc5265.grace_secs",
            ),
            ("\"mn0\", \"wlan0\"", "", "mn.rfc5265.interfaces"),
            (
                "external_spi = 8192",
                "external_spi = 9",
                "mn.rfc5265.external_spi",
            ),
            (
                "external_home_agent",
                "external_home_agnt",
                "external_home_agnt",
            ),
        ] {
            let e = Config::parse(&text.replace(from, to), &path)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{to}: {e}");
        }
    }

    #[test]
    fn parses_the_mc_vpn_layer_and_names_bad_fields() {
        let d = dir();
        key_file(&d.0, 0o600);
        let psk = d.0.join("vpn.psk");
        std::fs::write(&psk, "  not-a-real-psk\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = d.0.join("mn.toml");
        let text = r#"
role = "mn"
[mn]
home_addr = "10.10.0.50"
home_agent = "10.10.0.1"
spi = 4096
key_file = "mn.key"
[mn.rfc5265]
interfaces = ["mn0"]
mode = "mc"
[mn.rfc5265.vpn]
vici_socket = "charon.vici"
gateway = "192.0.2.10"
local_id = "mn@mipx.test"
remote_id = "vpn.mipx.test"
psk_file = "vpn.psk"
inside = "keep"
"#;
        let r = Config::parse(text, &path)
            .unwrap()
            .mn
            .unwrap()
            .rfc5265
            .unwrap();
        assert_eq!(r.mode, OutsideMode::Mc);
        assert!(r.detect.external.is_none());
        let v = r.vpn.unwrap();
        assert_eq!(v.psk, "not-a-real-psk");
        assert_eq!(v.vici_socket, d.0.join("charon.vici"));
        assert_eq!((v.device.as_str(), v.inside), ("ipsec0", InsideVpn::Keep));
        assert_eq!(v.retry_initial, Duration::from_secs(1));
        // Secrets never reach logs, not even through a debug print of the settings.
        assert!(!format!("{v:?}").contains("not-a-real-psk"));
        for (from, to, field) in [
            ("mode = \"mc\"", "mode = \"mx\"", "mode"),
            (
                "mode = \"mc\"",
                "mode = \"mc\"\nexternal_spi = 8192",
                "mn.rfc5265.external_spi",
            ),
            (
                "gateway = \"192.0.2.10\"",
                "gateway = \"0.0.0.0\"",
                "mn.rfc5265.vpn.gateway",
            ),
            (
                "local_id = \"mn@mipx.test\"",
                "local_id = \"\"",
                "mn.rfc5265.vpn.local_id",
            ),
            (
                "psk_file = \"vpn.psk\"",
                "psk_file = \"nope.psk\"",
                "mn.rfc5265.vpn.psk_file",
            ),
            ("inside = \"keep\"", "inside = \"maybe\"", "inside"),
            (
                "inside = \"keep\"",
                "retry_initial_ms = 10",
                "mn.rfc5265.vpn.retry_max_ms",
            ),
        ] {
            let e = Config::parse(&text.replace(from, to), &path)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{to}: {e}");
        }
        // Mode mc without a VPN, and mode cvc without the x-HA.
        let no_vpn = &text[..text.find("[mn.rfc5265.vpn]").unwrap()];
        let e = Config::parse(no_vpn, &path).unwrap_err().to_string();
        assert!(e.contains("mn.rfc5265.vpn"), "{e}");
        let e = Config::parse(&text.replace("mode = \"mc\"", "mode = \"cvc\""), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mn.rfc5265.external_"), "{e}");
        // A PSK file others can read is refused.
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Config::parse(text, &path).unwrap_err().to_string();
        assert!(
            e.contains("mn.rfc5265.vpn.psk_file") && e.contains("chmod 600"),
            "{e}"
        );
    }

    #[test]
    fn parses_the_udp_tunnel_policy() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("ha.toml");
        let c = Config::parse(HA, &path).unwrap();
        assert_eq!(c.ha.unwrap().core.udp_tunnel, UdpTunnelPolicy::default());
        let text = format!(
            "{HA}\n[ha.udp_tunnel]\nenabled = false\nallow_forced = false\nkeepalive_secs = 20\n"
        );
        let policy = Config::parse(&text, &path)
            .unwrap()
            .ha
            .unwrap()
            .core
            .udp_tunnel;
        assert_eq!(
            policy,
            UdpTunnelPolicy {
                enabled: false,
                allow_forced: false,
                keepalive_interval: 20
            }
        );
        let e = Config::parse(&format!("{HA}\n[ha.udp_tunnel]\nkeepalive = 20\n"), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("keepalive"), "{e}");
    }

    const HA_FA: &str = r#"
[[ha.foreign_agent]]
address = "198.51.100.1"
spi = 8193
key_file = "mn.key"
[[ha.foreign_agent]]
address = "198.51.100.1"
spi = 8194
key_file = "mn.key"
replay_tolerance_secs = 30
"#;

    /// `[[ha.foreign_agent]]`: FA-HA security associations (RFC 5944 §3.8.1), by the care-of
    /// address the foreign agent relays from, several SPIs per address allowed.
    #[test]
    fn parses_ha_foreign_agents() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("ha.toml");
        assert!(
            Config::parse(HA, &path)
                .unwrap()
                .ha
                .unwrap()
                .core
                .foreign_agents
                .is_empty()
        );
        let ha = Config::parse(&format!("{HA}{HA_FA}"), &path)
            .unwrap()
            .ha
            .unwrap();
        let fas = &ha.core.foreign_agents;
        assert_eq!(fas.len(), 2);
        assert_eq!(fas[0].address, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!((fas[0].sa.spi, fas[1].sa.spi), (8193, 8194));
        assert_eq!(
            fas[1].sa.replay,
            ReplayProtection::Timestamp {
                tolerance: Duration::from_secs(30)
            }
        );
        assert_eq!(
            fas[0].sa.key,
            Key::new(vec![
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
        // Secrets never reach logs, not even through a debug print of the settings.
        let debug = format!("{ha:?}");
        assert!(debug.contains("8193") && debug.contains("redacted"));
        assert!(!debug.contains("[0, 17, 34") && !debug.contains("0011223344"));
    }

    /// Each broken `[[ha.foreign_agent]]` names its field; a loose key file is refused.
    #[test]
    fn ha_foreign_agent_errors_name_the_field() {
        let d = dir();
        key_file(&d.0, 0o600);
        let path = d.0.join("ha.toml");
        let cases = [
            ("spi = 8193", "spi = 255", "ha.foreign_agent[0].spi"),
            ("spi = 8194", "spi = 8193", "ha.foreign_agent[1].spi"),
            (
                "address = \"198.51.100.1\"\nspi = 8193",
                "address = \"0.0.0.0\"\nspi = 8193",
                "ha.foreign_agent[0].address",
            ),
            (
                "address = \"198.51.100.1\"\nspi = 8194",
                "address = \"10.1.0.1\"\nspi = 8194",
                "ha.foreign_agent[1].address",
            ),
            (
                "address = \"198.51.100.1\"\nspi = 8193",
                "address = \"224.0.0.11\"\nspi = 8193",
                "ha.foreign_agent[0].address",
            ),
            (
                "replay_tolerance_secs = 30",
                "replay_tolerance_secs = 0",
                "ha.foreign_agent[1].replay_tolerance_secs",
            ),
            (
                "spi = 8193\nkey_file = \"mn.key\"",
                "spi = 8193\nkey_file = \"missing.key\"",
                "ha.foreign_agent[0].key_file",
            ),
        ];
        for (from, to, field) in cases {
            let text = format!("{HA}{}", HA_FA.replacen(from, to, 1));
            assert_ne!(text, format!("{HA}{HA_FA}"), "{to}: the case edits nothing");
            match Config::parse(&text, &path) {
                Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{to}"),
                other => panic!("{to}: expected an error naming {field}, got {other:?}"),
            }
        }
        for (from, to, name) in [
            (
                "address = \"198.51.100.1\"\nspi = 8193",
                "spi = 8193",
                "address",
            ),
            ("spi = 8193", "spi = 8193\nkey = \"00\"", "key"),
        ] {
            let text = format!("{HA}{}", HA_FA.replacen(from, to, 1));
            let e = Config::parse(&text, &path).unwrap_err().to_string();
            assert!(e.contains(name), "{to}: {e}");
        }
        // A key file group members can read is refused, and the error does not echo the key.
        let loose = d.0.join("fa.key");
        std::fs::write(&loose, "00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = format!("{HA}{}", HA_FA.replacen("mn.key", "fa.key", 1));
        match Config::parse(&text, &path) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "ha.foreign_agent[0].key_file");
                assert!(message.contains("chmod 600"), "{message}");
                assert!(!message.contains("0011223344"), "the key leaked: {message}");
            }
            other => panic!("expected a key file error, got {other:?}"),
        }
    }
}
