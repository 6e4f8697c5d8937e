//! Mobile IPv4 wire formats (user-side view).
//!
//! Each message follows the smoltcp layout: `mod field` (byte ranges) → `Packet<T>` (checked
//! and unchecked constructors, getters, setters under `AsMut`) → `Repr` (`parse`,
//! `buffer_len`, `emit`) → tests. Code points keep unknown values (`Unknown(u8)`) so that they
//! round-trip.
//!
//! Covered: Registration Request and Reply (RFC 5944 §3.3-3.4), registration extensions
//! (RFC 5944 §3.5, RFC 2794, RFC 3519 §3.1-3.2, RFC 5265 §3.4) and the MIP tunnel data message
//! header (RFC 3519 §3.3).
//! Agent discovery (RFC 5944 §2): Agent Advertisement and Agent Solicitation, ICMP messages.

pub mod agent;
mod code;
pub mod ext;
mod keepalive;
mod registration;
mod tunnel;

pub use agent::{
    AdvertCode, AdvertExtension, AdvertExtensionIter, AdvertViolation, AgentAdvertisementPacket,
    AgentAdvertisementRepr, AgentError, AgentFlags, AgentSolicitationPacket, AgentSolicitationRepr,
    CareOfAddrs, MobilityAgentExt, RouterAddr, RouterAddrs,
};
pub use code::ReplyCode;
pub use ext::{
    AuthExtension, Extension, ExtensionIter, ExtensionType, ExtensionWriter, UdpTunnelReply,
    UdpTunnelRequest,
};
pub use keepalive::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, KeepaliveRepr};
pub use registration::{
    LIFETIME_INFINITE, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket, RequestRepr,
};
pub use tunnel::{TunnelDataPacket, TunnelDataRepr};

/// The Mobile IP UDP port for registration and, with RFC 3519, tunnel data (RFC 5944 §3.3).
pub const MIP_PORT: u16 = 434;

/// A parse error. The daemon maps each to a reply code or a counted, silent drop.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before the fixed header or an extension's declared length.
    Truncated,
    /// A length field disagrees with what its type requires.
    BadLength,
    /// The message type byte is not the one this view parses.
    WrongMessageType(u8),
    /// An extension type in 0..=127 that we do not implement: RFC 5944 §1.9 says the whole
    /// message MUST be silently discarded.
    UnknownMandatoryExtension(u8),
    /// The output buffer is too small for `emit`.
    BufferTooSmall,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated message"),
            Error::BadLength => f.write_str("length field inconsistent with its type"),
            Error::WrongMessageType(t) => write!(f, "unexpected message type {t}"),
            Error::UnknownMandatoryExtension(t) => {
                write!(f, "unknown non-skippable extension type {t}")
            }
            Error::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// Mobile IP message types on UDP port 434 (RFC 5944 §1.8, RFC 3519 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    RegistrationRequest,
    RegistrationReply,
    TunnelData,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::RegistrationRequest,
            3 => MessageType::RegistrationReply,
            4 => MessageType::TunnelData,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::RegistrationRequest => 1,
            MessageType::RegistrationReply => 3,
            MessageType::TunnelData => 4,
            MessageType::Unknown(other) => other,
        }
    }
}

impl MessageType {
    /// The type of a UDP/434 payload, read from its first byte.
    pub fn of(payload: &[u8]) -> Option<MessageType> {
        payload.first().map(|&b| MessageType::from(b))
    }
}

pub(crate) fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
pub(crate) fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
pub(crate) fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
pub(crate) fn read_addr(b: &[u8]) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
}
