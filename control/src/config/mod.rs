//! `mipd --config FILE`: the TOML configuration, validated into the protocol cores' configs.
//!
//! Errors name the offending field (`ha.mobile_node[2].key_file: ...`). Key files must not be
//! readable or writable by group or others, and their contents never reach a log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod fa;
mod ha;
mod mn;

pub use fa::{Advertise, FaInterface, FaSettings, ReverseTunnel};
pub use ha::HaSettings;
pub use mn::{MnSettings, Rfc5265Settings, VpnSettings};

use crate::auth::{Key, ReplayProtection, SecurityAssociation};

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
    ha: Option<ha::RawHa>,
    mn: Option<mn::RawMn>,
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
                let raw_ha = raw
                    .ha
                    .ok_or_else(|| field_err("ha", "role = \"ha\" needs an [ha] table"))?;
                Ok(Config {
                    role: Role::Ha,
                    api_socket,
                    ha: Some(ha::ha_settings(raw_ha, base)?),
                    mn: None,
                    fa: None,
                    dataplane,
                })
            }
            Role::Mn => {
                let raw_mn = raw
                    .mn
                    .ok_or_else(|| field_err("mn", "role = \"mn\" needs an [mn] table"))?;
                Ok(Config {
                    role: Role::Mn,
                    api_socket,
                    ha: None,
                    mn: Some(mn::mn_settings(raw_mn, base)?),
                    fa: None,
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
    use crate::proto::ha::UdpTunnelPolicy;
    use crate::proto::mn::{NatTraversal, NatTraversalMode};
    use crate::proto::rfc5265::{InsideVpn, IpsecSetting, OutsideMode};
    use std::net::Ipv4Addr;

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
        assert_eq!(
            v.ipsec,
            IpsecSetting::Auto,
            "whatever charon runs, by default"
        );
        let kernel = Config::parse(
            &text.replace("inside = \"keep\"", "ipsec = \"kernel\""),
            &path,
        )
        .unwrap()
        .mn
        .unwrap()
        .rfc5265
        .unwrap()
        .vpn
        .unwrap();
        assert_eq!(kernel.ipsec, IpsecSetting::Kernel);
        assert_eq!(kernel.if_id, 0x4d49_5058, "\"MIPX\" by default");
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
            ("inside = \"keep\"", "ipsec = \"xfrm\"", "ipsec"),
            ("inside = \"keep\"", "if_id = 0", "mn.rfc5265.vpn.if_id"),
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
