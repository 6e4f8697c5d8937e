//! The `[fa]` table: a foreign agent (RFC 5944 §3.7) on one or more links, with its agent
//! advertisements (§2.1), its policy for reverse tunnelling (RFC 3024) and its optional
//! mobility security associations with mobile nodes (MN-FA, §3.5.3) and home agents (FA-HA,
//! §3.5.4).
//!
//! ```toml
//! role = "fa"
//! [fa]
//! max_lifetime = 600             # Registration Lifetime advertised and enforced (code 69)
//! max_visitors = 1000            # beyond: code 66, and the B bit in advertisements
//! reverse_tunnel = "offer"       # "off" (code 74 to T), "offer", "require" (code 75 without T)
//! registration_timeout_ms = 7000 # a request the HA has not answered: code 78 to the MN
//! behind_nat = false             # RFC 3519 §4.5: advertise U, ask home agents for UDP tunnels
//! keepalive_secs = 110           # behind_nat: the longest keepalive interval (§4.9-4.10)
//! [[fa.interface]]
//! name = "eth1"
//! care_of_addr = "198.51.100.1"  # advertised, and the tunnel endpoint
//! advertise = "periodic"         # or "solicited" (only in answer, §2.3) or "off"
//! advertisement_interval_ms = 1500 # at least 1000 (the advertisements' rate limit)
//! advertisement_lifetime_secs = 5 # ICMP Lifetime; the interval is at most a third of it
//! registration_required = false  # R bit (§2.4.1)
//! [[fa.home_agent]]              # optional FA-HA security association
//! address = "10.1.0.1"
//! spi = 8193
//! key_file = "fa-ha.key"
//! [[fa.mobile_node]]             # optional MN-FA security association
//! home_addr = "10.1.0.10"
//! spi = 8194
//! key_file = "mn-fa.key"
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, field_err, read_key, security_association, valid_ifname};
use crate::auth::SecurityAssociation;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFa {
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_max_lifetime")]
    max_lifetime: u16,
    #[serde(default = "default_max_visitors")]
    max_visitors: u32,
    #[serde(default = "default_reverse_tunnel")]
    reverse_tunnel: ReverseTunnel,
    #[serde(default = "default_registration_timeout")]
    registration_timeout_ms: u64,
    /// Requests without a valid MN-FA authenticator are refused (code 67), §3.7.2.1.
    #[serde(default)]
    require_mn_fa_auth: bool,
    /// RFC 3519 §4.5: this agent's care-of addresses are behind a NAT.
    #[serde(default)]
    behind_nat: bool,
    #[serde(default = "default_keepalive")]
    keepalive_secs: u64,
    #[serde(default)]
    interface: Vec<RawFaInterface>,
    #[serde(default)]
    home_agent: Vec<RawPeer>,
    #[serde(default)]
    mobile_node: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaInterface {
    name: String,
    care_of_addr: Ipv4Addr,
    #[serde(default = "default_advertise")]
    advertise: Advertise,
    #[serde(default = "default_adv_interval")]
    advertisement_interval_ms: u64,
    #[serde(default = "default_adv_lifetime")]
    advertisement_lifetime_secs: u16,
    #[serde(default)]
    registration_required: bool,
    #[serde(default = "default_true")]
    prefix_lengths: bool,
}

/// A security association with a home agent (`address`) or a mobile node (`home_addr`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Option<Ipv4Addr>,
    home_addr: Option<Ipv4Addr>,
    spi: u32,
    key_file: PathBuf,
    #[serde(default = "default_tolerance")]
    replay_tolerance_secs: u64,
}

/// What the foreign agent does with the T bit (RFC 3024 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReverseTunnel {
    /// Not offered: a request with T is denied with 74; advertisements leave T clear.
    Off,
    /// Offered (T in advertisements), granted when asked for.
    Offer,
    /// Mandatory: a request without T is denied with 75.
    Require,
}

/// When a foreign agent sends Agent Advertisements on a link (RFC 5944 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Advertise {
    /// Periodically and in answer to solicitations.
    Periodic,
    /// Only in answer to Agent Solicitations (§2.3 allows it).
    Solicited,
    /// Never: mobile nodes must be configured with the care-of address.
    Off,
}

/// A validated `[fa]`. Its `Debug` shows the security associations' SPIs only (the keys'
/// `Debug` is redacted by `auth::Key`).
#[derive(Debug, Clone)]
pub struct FaSettings {
    pub port: u16,
    pub max_lifetime: u16,
    pub max_visitors: u32,
    pub reverse_tunnel: ReverseTunnel,
    pub registration_timeout: Duration,
    pub require_mn_fa_auth: bool,
    /// RFC 3519 §4.5 (`behind_nat`): the longest keepalive interval; `None`: not behind a NAT.
    pub behind_nat: Option<Duration>,
    pub interfaces: Vec<FaInterface>,
    /// FA-HA security associations, by home agent address.
    pub home_agents: Vec<(Ipv4Addr, SecurityAssociation)>,
    /// MN-FA security associations, by home address.
    pub mobile_nodes: Vec<(Ipv4Addr, SecurityAssociation)>,
}

/// One link the foreign agent serves.
#[derive(Debug, Clone)]
pub struct FaInterface {
    pub name: String,
    pub care_of_addr: Ipv4Addr,
    pub advertise: Advertise,
    pub advertisement_interval: Duration,
    /// The ICMP Router Advertisement Lifetime (§2.1), seconds.
    pub advertisement_lifetime: u16,
    pub registration_required: bool,
    pub prefix_lengths: bool,
}

pub(super) fn fa_settings(raw: RawFa, base: &Path) -> Result<FaSettings, ConfigError> {
    if raw.max_lifetime == 0 {
        return Err(field_err("fa.max_lifetime", "must be at least 1 second"));
    }
    if raw.max_visitors == 0 {
        return Err(field_err("fa.max_visitors", "must be at least 1"));
    }
    if !(1000..=60_000).contains(&raw.registration_timeout_ms) {
        return Err(field_err(
            "fa.registration_timeout_ms",
            "must be between 1000 and 60000",
        ));
    }
    // RFC 3519 §4.10: never below 10 seconds; and a NAT keeps an idle UDP mapping for "a
    // couple of minutes" (§4.9), so more than an hour would never be right.
    if !(10..=3600).contains(&raw.keepalive_secs) {
        return Err(field_err(
            "fa.keepalive_secs",
            "must be between 10 (RFC 3519 §4.10) and 3600",
        ));
    }
    if raw.interface.is_empty() {
        return Err(field_err(
            "fa.interface",
            "list at least one [[fa.interface]] to serve",
        ));
    }
    let mut interfaces = Vec::new();
    for (i, r) in raw.interface.into_iter().enumerate() {
        let f = |name: &str| format!("fa.interface[{i}].{name}");
        if !valid_ifname(&r.name) {
            return Err(field_err(
                f("name"),
                format!("`{}` is not a valid interface name", r.name),
            ));
        }
        if interfaces.iter().any(|x: &FaInterface| x.name == r.name) {
            return Err(field_err(
                f("name"),
                format!("`{}` is listed twice", r.name),
            ));
        }
        if r.care_of_addr.is_unspecified()
            || r.care_of_addr.is_multicast()
            || r.care_of_addr.is_broadcast()
        {
            return Err(field_err(
                f("care_of_addr"),
                "must be a unicast address of the foreign agent",
            ));
        }
        if r.advertisement_lifetime_secs == 0 {
            return Err(field_err(
                f("advertisement_lifetime_secs"),
                "must be at least 1 second",
            ));
        }
        // §2.1: the interval SHOULD be no longer than a third of the Lifetime, so that a
        // mobile node may miss three advertisements before it gives the agent up.
        if r.advertisement_interval_ms < 1000
            || r.advertisement_interval_ms * 3 > u64::from(r.advertisement_lifetime_secs) * 1000
        {
            return Err(field_err(
                f("advertisement_interval_ms"),
                format!(
                    "must be at least 1000 (a mobility agent limits the rate of its advertisements, RFC 5944 §2.3) and at most a third of advertisement_lifetime_secs ({} ms, §2.1)",
                    u64::from(r.advertisement_lifetime_secs) * 1000 / 3
                ),
            ));
        }
        // §2.1.1: R only with F, which a foreign agent always sets; and a link whose agent
        // requires registration must hear about it (§2.3: advertisements are then needed).
        if r.registration_required && r.advertise == Advertise::Off {
            return Err(field_err(
                f("registration_required"),
                "needs advertisements (RFC 5944 §2.3): set advertise to \"periodic\" or \"solicited\"",
            ));
        }
        interfaces.push(FaInterface {
            name: r.name,
            care_of_addr: r.care_of_addr,
            advertise: r.advertise,
            advertisement_interval: Duration::from_millis(r.advertisement_interval_ms),
            advertisement_lifetime: r.advertisement_lifetime_secs,
            registration_required: r.registration_required,
            prefix_lengths: r.prefix_lengths,
        });
    }
    let peers = |list: Vec<RawPeer>,
                 table: &str,
                 by_home: bool|
     -> Result<Vec<(Ipv4Addr, SecurityAssociation)>, ConfigError> {
        let mut out: Vec<(Ipv4Addr, SecurityAssociation)> = Vec::new();
        for (i, p) in list.into_iter().enumerate() {
            let f = |name: &str| format!("fa.{table}[{i}].{name}");
            let (want, other) = if by_home {
                ("home_addr", p.address.is_some())
            } else {
                ("address", p.home_addr.is_some())
            };
            let addr = if by_home { p.home_addr } else { p.address };
            let Some(addr) = addr.filter(|_| !other) else {
                return Err(field_err(f(want), format!("set {want} (and only it)")));
            };
            if out.iter().any(|(a, _)| *a == addr) {
                return Err(field_err(f(want), format!("{addr} is listed twice")));
            }
            let key =
                read_key(&base.join(&p.key_file)).map_err(|msg| field_err(f("key_file"), msg))?;
            let sa = security_association(p.spi, key, p.replay_tolerance_secs)
                .map_err(|(name, msg)| field_err(f(name), msg))?;
            out.push((addr, sa));
        }
        Ok(out)
    };
    let home_agents = peers(raw.home_agent, "home_agent", false)?;
    let mobile_nodes = peers(raw.mobile_node, "mobile_node", true)?;
    if raw.require_mn_fa_auth && mobile_nodes.is_empty() {
        return Err(field_err(
            "fa.require_mn_fa_auth",
            "no [[fa.mobile_node]] security association to check requests with: every request would be refused (code 67)",
        ));
    }
    Ok(FaSettings {
        port: raw.port,
        max_lifetime: raw.max_lifetime,
        max_visitors: raw.max_visitors,
        reverse_tunnel: raw.reverse_tunnel,
        registration_timeout: Duration::from_millis(raw.registration_timeout_ms),
        require_mn_fa_auth: raw.require_mn_fa_auth,
        behind_nat: raw
            .behind_nat
            .then(|| Duration::from_secs(raw.keepalive_secs)),
        interfaces,
        home_agents,
        mobile_nodes,
    })
}

fn default_keepalive() -> u64 {
    110
}

fn default_port() -> u16 {
    mipx_common::wire::MIP_PORT
}
fn default_max_lifetime() -> u16 {
    600
}
fn default_max_visitors() -> u32 {
    1000
}
fn default_reverse_tunnel() -> ReverseTunnel {
    ReverseTunnel::Offer
}
fn default_registration_timeout() -> u64 {
    // RFC 5944 §3.7.1 leaves it to the implementation; a few of the MN's retransmissions.
    7000
}
fn default_advertise() -> Advertise {
    Advertise::Periodic
}
fn default_adv_interval() -> u64 {
    1500
}
fn default_adv_lifetime() -> u16 {
    5
}
fn default_true() -> bool {
    true
}
fn default_tolerance() -> u64 {
    7
}
