//! The control API between `mipd` and `mipctl`: one JSON request line, one JSON response line,
//! over a Unix socket (root-only by its directory's permissions).

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::proto::detect::{Location, Reason};
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
    Dataplane(DataplaneInfo),
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
    pub interfaces: Option<Vec<InterfaceStatus>>,
    /// RFC 5265 mobile node with a VPN layer.
    #[serde(default)]
    pub vpn: Option<VpnStatus>,
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

/// `mipctl status` for one interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    pub location: Location,
    pub reason: Reason,
    pub tentative: bool,
    pub care_of_addr: Option<Ipv4Addr>,
    pub since_internal_registration_secs: Option<f64>,
    /// "closed", "inside", "expired" or "outside", as the dataplane enforces it now.
    pub gate: String,
    /// Inside: seconds of plaintext left before T_MONITOR runs out.
    pub gate_open_secs: Option<f64>,
    /// The access mode in use through this interface: "c" inside, "mc" or "cvc" outside once
    /// the i-HA binding runs through the VPN, "-" otherwise.
    #[serde(default)]
    pub mode: String,
}

/// `mipctl status`: the VPN layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VpnStatus {
    /// "down", "connecting", "up" or "failed".
    pub state: String,
    pub gateway: Ipv4Addr,
    /// Our IKE address as the gateway knows it.
    pub local: Option<Ipv4Addr>,
    pub tia: Option<Ipv4Addr>,
    /// "kernel-libipsec" or "xfrm", once charon said.
    pub ipsec: Option<String>,
    /// The i-HA binding through the VPN (the TIA as co-located care-of address): registered.
    pub internal_registered: bool,
    /// Mode cvc: the x-HA binding the VPN rides in: its care-of address, and whether the
    /// tunnel is RFC 3519 IP-in-UDP (through a NAT).
    #[serde(default)]
    pub external_care_of: Option<Ipv4Addr>,
    #[serde(default)]
    pub external_udp: bool,
    /// Charon's CHILD_SAs' SPIs, both directions.
    pub spis: Vec<String>,
    /// With the kernel's ESP: the SPIs of the kernel's SAs on the VPN's XFRM interface, once
    /// read; the gate passes both these and charon's.
    #[serde(default)]
    pub kernel_spis: Option<Vec<String>>,
    /// Charon's SPIs the kernel does not hold on the VPN's interface (normal for a moment
    /// during a rekey or a MOBIKE update; lasting, the SAs are not where the VPN is).
    #[serde(default)]
    pub sa_mismatch: Vec<String>,
    pub last_error: Option<String>,
}

/// One program attached to one interface, as `mipctl dataplane` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub program: String,
    pub interface: String,
    pub ifindex: u32,
    /// `xdp (driver)`, `xdp (generic)`, `tc egress`.
    pub hook: String,
    /// Where its link is pinned, if it is.
    pub pinned: Option<PathBuf>,
    /// Whether an existing pinned link from a previous `mipd` was taken over.
    pub adopted: bool,
}

/// One map, as `mipctl dataplane` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MapSummary {
    pub name: String,
    pub kind: String,
    pub max_entries: u32,
    /// Elements present (hash maps); `None` for arrays, which always hold `max_entries`.
    pub entries: Option<u64>,
}

/// What `mipctl dataplane` prints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataplaneInfo {
    pub pin_dir: Option<PathBuf>,
    pub attachments: Vec<Attachment>,
    pub maps: Vec<MapSummary>,
}

/// Sends one request to a running `mipd` and returns its response (`mipctl`).
pub async fn call(socket: &Path, req: &Request) -> io::Result<Response> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| io::Error::other("mipd closed the connection"))?;
    serde_json::from_str(&line).map_err(io::Error::other)
}
