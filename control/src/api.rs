//! The control API between `mipd` and `mipctl`: one JSON request line, one JSON response line,
//! over a Unix socket (root-only by its directory's permissions).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::proto::ha::HaStats;
use crate::proto::mn::{MnState, MnStats};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Bindings,
    Stats,
    /// Mobile node: register `care_of_addr` (or re-register the current one).
    Register {
        care_of_addr: Option<Ipv4Addr>,
    },
    /// Mobile node: deregister.
    Deregister,
    /// Attached programs, interfaces and map sizes.
    Dataplane,
    /// Foreign agent: the visitor list (RFC 5944 §3.7.1).
    Visitors,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Bindings(Vec<BindingInfo>),
    Visitors(Vec<VisitorInfo>),
    Stats(Stats),
    Dataplane(crate::dataplane::DataplaneInfo),
    Ok { message: String },
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub role: String,
    pub version: String,
    pub uptime_secs: u64,
    pub ha: Option<HaStatus>,
    pub mn: Option<MnStatus>,
    /// RFC 5265 mobile node: each tracked interface's detection and gate.
    #[serde(default)]
    pub interfaces: Option<Vec<crate::mn5265::InterfaceStatus>>,
    /// RFC 5265 mobile node with a VPN layer.
    #[serde(default)]
    pub vpn: Option<crate::mn5265::VpnStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaStatus {
    pub address: Ipv4Addr,
    pub port: u16,
    pub max_lifetime: u16,
    pub bindings: usize,
    pub mobile_node_entries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MnStatus {
    pub state: MnState,
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of_addr: Option<Ipv4Addr>,
    pub remaining_secs: Option<u64>,
    /// The registration uses RFC 3519 UDP tunnelling, with this keepalive interval.
    #[serde(default)]
    pub udp_keepalive_secs: Option<u64>,
}

/// One binding as `mipctl bindings` shows it. Never carries key material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindingInfo {
    pub home_addr: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    pub source: SocketAddrV4,
    pub flags: String,
    pub reverse_tunnel: bool,
    /// RFC 3519 UDP tunnelling: the tunnel's far end (behind a NAT, the NAT's address and
    /// port). `None`: IP-in-IP to the care-of address.
    #[serde(default)]
    pub udp_tunnel: Option<SocketAddrV4>,
    pub spi: u32,
    pub lifetime: u16,
    pub remaining_secs: u64,
}

/// One entry of a foreign agent's visitor list (RFC 5944 §3.7.1): who is served on which
/// link, for which home agent, and how the fast path reaches it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisitorInfo {
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    /// The link-layer source of its request, `aa:bb:cc:dd:ee:ff`: where its packets go.
    pub mac: String,
    pub interface: String,
    /// Reverse tunnelling granted (RFC 3024, the T bit).
    pub reverse_tunnel: bool,
    /// The tunnel with the home agent is IP-in-UDP (RFC 3519 §4.5: the agent is behind a NAT).
    #[serde(default)]
    pub udp_tunnel: bool,
    pub lifetime: u16,
    pub remaining_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub ha: Option<HaStats>,
    pub mn: Option<MnStats>,
    /// Foreign agent: relays, denials by code, drops.
    #[serde(default)]
    pub fa: Option<Box<crate::proto::fa::FaStats>>,
    /// Per-datagram outcomes of the daemon's socket loop.
    pub daemon: DaemonStats,
    /// eBPF per-verdict packet counters summed over CPUs, by name; absent without a dataplane.
    #[serde(default)]
    pub dataplane: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DaemonStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
    pub api_requests: u64,
    /// x-HA: datagrams dropped because they arrived on an internal interface (RFC 5265 §3.7).
    pub dropped_internal_interface: u64,
}
