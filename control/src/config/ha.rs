//! `[ha]`: a home agent (RFC 5944 §3.8), internal or external in RFC 5265's terms.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, field_err, read_key, security_association, valid_ifname};
use crate::proto::ha::{
    ForeignAgentEntry, HaConfig, HomeAddrs, MobileNodeEntry, Subnet, UdpTunnelPolicy,
};

/// A validated `[ha]`.
#[derive(Debug)]
pub struct HaSettings {
    pub core: HaConfig,
    pub port: u16,
    /// x-HA: interfaces whose registrations are dropped (RFC 5265 §3.7).
    pub internal_interfaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    address: Ipv4Addr,
    #[serde(default = "default_max_lifetime")]
    max_lifetime: u16,
    #[serde(default = "super::default_port")]
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
pub(super) struct RawUdpTunnel {
    /// Assent to UDP tunnelling for mobile nodes behind a NAT.
    #[serde(default = "super::default_true")]
    enabled: bool,
    /// Also when a mobile node forces it (F) without a NAT.
    #[serde(default = "super::default_true")]
    allow_forced: bool,
    /// Keepalive interval assigned in the UDP Tunnel Reply; 0: the mobile node's default.
    #[serde(default = "super::default_keepalive")]
    keepalive_secs: u16,
}

impl Default for RawUdpTunnel {
    fn default() -> Self {
        RawUdpTunnel {
            enabled: true,
            allow_forced: true,
            keepalive_secs: super::default_keepalive(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMobileNode {
    home_addr: Option<Ipv4Addr>,
    /// A pool: every address of `a.b.c.d/len`, sharing one SPI and key.
    home_prefix: Option<String>,
    spi: u32,
    key_file: PathBuf,
    #[serde(default = "super::default_tolerance")]
    replay_tolerance_secs: u64,
}

/// `[[ha.foreign_agent]]`: a mobility security association with a foreign agent, for the
/// Foreign-Home Authentication Extension (RFC 5944 §3.5.4, §3.8.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForeignAgent {
    /// The source address of the agent's relays, i.e. the care-of address it advertises
    /// (§3.5.4 selects the association by it and the SPI; §3.7.2.2 sets it).
    address: Ipv4Addr,
    spi: u32,
    key_file: PathBuf,
    /// Validated like the mobile nodes' for a uniform association table, but not consulted:
    /// replay protection of a relay is the mobile node's Identification (§5.7), checked with
    /// the mobile node's association and covered by the Foreign-Home authenticator.
    #[serde(default = "super::default_tolerance")]
    replay_tolerance_secs: u64,
}

fn default_max_lifetime() -> u16 {
    600
}

/// Validates `[ha]`; relative key file paths resolve against `base`.
pub(super) fn ha_settings(ha: RawHa, base: &Path) -> Result<HaSettings, ConfigError> {
    let mut mobile_nodes = Vec::new();
    for (i, m) in ha.mobile_node.iter().enumerate() {
        let f = |name: &str| format!("ha.mobile_node[{i}].{name}");
        let home_addrs = match (m.home_addr, &m.home_prefix) {
            (Some(a), None) => HomeAddrs::Single(a),
            (None, Some(p)) => parse_prefix(p).map_err(|msg| field_err(f("home_prefix"), msg))?,
            _ => {
                return Err(field_err(
                    f("home_addr"),
                    "set exactly one of home_addr and home_prefix",
                ));
            }
        };
        let key = read_key(&base.join(&m.key_file)).map_err(|msg| field_err(f("key_file"), msg))?;
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
        let key =
            read_key(&base.join(&entry.key_file)).map_err(|msg| field_err(f("key_file"), msg))?;
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
                    parse_subnet(n)
                        .map_err(|msg| field_err(format!("ha.trusted_networks[{i}]"), msg))
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
    Ok(HaSettings {
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
    })
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
