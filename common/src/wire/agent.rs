//! Agent Advertisement and Agent Solicitation (RFC 5944 §2.1-2.2): ICMP Router Discovery
//! messages (RFC 1256) that mobility agents and mobile nodes use for agent discovery.
//!
//! An Agent Advertisement is an ICMP Router Advertisement (type 9) followed by extensions in
//! the ICMP Router Discovery extension space (§1.8), one of which, the Mobility Agent
//! Advertisement Extension (type 16), makes it an agent advertisement (§2.4). The layout:
//!
//! ```text
//! type 9 | code 0/16 | checksum | Num Addrs | Addr Entry Size (2) | Lifetime (s)
//! Num Addrs × (Router Address, Preference Level i32)
//! extensions: 16 Mobility Agent Advertisement (§2.1.1), 19 Prefix-Lengths (§2.1.2),
//!             24 Challenge (RFC 4721 §2), 0 One-byte Padding (§2.1.3), ...
//! ```
//!
//! An Agent Solicitation is an ICMP Router Solicitation (type 10, code 0, checksum, 4 reserved
//! bytes), sent with IP TTL 1 (§2.2).
//!
//! Both messages are exactly the ICMP message: the caller strips the IPv4 header (whose Total
//! Length decides where the extensions end, §2.4). The ICMP checksum covers the whole message
//! and is verified by `parse`, computed by `emit`.
//!
//! `parse` accepts what the wire allows and keeps the semantic rules of §2.1.1 (F with no
//! care-of address, B or R without F, neither F nor H) for
//! [`AgentAdvertisementRepr::validate`]: a mobile node checks them before using an agent, an
//! agent before sending, and a capture tool can still show such a message.

use core::net::Ipv4Addr;

use super::{Error, ExtensionType, read_addr, read_u16, read_u32};
use crate::ipv4;

/// ICMP type of a Router Advertisement, and so of an Agent Advertisement (RFC 5944 §2.1).
pub const ICMP_ROUTER_ADVERTISEMENT: u8 = 9;
/// ICMP type of a Router Solicitation, and so of an Agent Solicitation (RFC 5944 §2.2).
pub const ICMP_ROUTER_SOLICITATION: u8 = 10;
/// "All systems on this link" (224.0.0.1): one of the two destinations a multicast Agent
/// Advertisement MUST use (RFC 5944 §2.1).
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// The Mobile-Agents group (224.0.0.11): every mobility agent MUST process packets sent to it,
/// and a mobile node MAY send its Agent Solicitations there (RFC 5944 §2.3).
pub const MOBILE_AGENTS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 11);
/// The limited broadcast address, the other destination allowed for a multicast Agent
/// Advertisement (RFC 5944 §2.1).
pub const LIMITED_BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;
/// IP TTL of every Agent Advertisement (§2.1: MUST be 1) and Agent Solicitation (§2.2).
pub const AGENT_DISCOVERY_TTL: u8 = 1;
/// Addr Entry Size of the advertisements we send: a Router Address and a Preference Level,
/// two 32-bit words (RFC 1256 §3).
pub const ADDR_ENTRY_SIZE: u8 = 2;
/// Most care-of addresses one Mobility Agent Advertisement Extension can carry: its Length
/// (6 + 4N, §2.1.1) is one byte.
pub const MAX_CARE_OF_ADDRS: usize = (u8::MAX as usize - MA_FIXED_LEN) / 4;
/// Bytes of the ICMP header: type, code, checksum and the 4 type-specific bytes.
pub const ICMP_HEADER_LEN: usize = 8;

/// The ICMP Router Discovery extension types we understand (RFC 5944 §1.8; RFC 4721 §2).
pub mod ext_type {
    /// One-byte Padding (§2.1.3): the type byte alone, no length.
    pub const PADDING: u8 = 0;
    /// Mobility Agent Advertisement (§2.1.1).
    pub const MOBILITY_AGENT: u8 = 16;
    /// Prefix-Lengths (§2.1.2).
    pub const PREFIX_LENGTHS: u8 = 19;
    /// Mobility Agent Advertisement Challenge (RFC 4721 §2).
    pub const CHALLENGE: u8 = 24;
}

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    // Router Advertisement.
    pub const NUM_ADDRS: usize = 4;
    pub const ADDR_ENTRY_SIZE: usize = 5;
    pub const LIFETIME: Range<usize> = 6..8;
    pub const ADDRS: usize = 8;
    // Router Solicitation.
    pub const RESERVED: Range<usize> = 4..8;
    // Mobility Agent Advertisement Extension data (after Type and Length).
    pub const MA_SEQUENCE: Range<usize> = 0..2;
    pub const MA_REG_LIFETIME: Range<usize> = 2..4;
    pub const MA_FLAGS: Range<usize> = 4..6;
    pub const MA_CARE_OF: usize = 6;
}

/// Sequence Number, Registration Lifetime and the flags word: the "6" of the Mobility Agent
/// Advertisement Extension's Length (6 + 4N, §2.1.1).
const MA_FIXED_LEN: usize = field::MA_CARE_OF;

/// Why an ICMP message is not a usable agent advertisement or solicitation.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentError {
    /// A malformed message or extension, including RFC 5944 §1.9's
    /// [`Error::UnknownMandatoryExtension`].
    Wire(Error),
    /// The ICMP checksum does not verify (RFC 1256 §4.2 and §5.2: silently discarded).
    Checksum,
    /// An ICMP code other than 0 or 16 (advertisement, RFC 5944 §2.1) or 0 (solicitation).
    BadCode(u8),
    /// A valid ICMP Router Advertisement without a Mobility Agent Advertisement Extension:
    /// an ordinary router's, not an agent advertisement (§2.4).
    NotAgentAdvertisement,
    /// A second Mobility Agent Advertisement, Prefix-Lengths or Challenge extension: which one
    /// counts would be a guess.
    DuplicateExtension(u8),
}

impl From<Error> for AgentError {
    fn from(e: Error) -> Self {
        AgentError::Wire(e)
    }
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AgentError::Wire(e) => e.fmt(f),
            AgentError::Checksum => f.write_str("bad ICMP checksum"),
            AgentError::BadCode(c) => write!(f, "unexpected ICMP code {c}"),
            AgentError::NotAgentAdvertisement => {
                f.write_str("router advertisement without a mobility agent extension")
            }
            AgentError::DuplicateExtension(t) => write!(f, "extension type {t} appears twice"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AgentError {}

/// The Code of an Agent Advertisement (RFC 5944 §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AdvertCode {
    /// 0: the agent also routes common traffic, like any router.
    #[default]
    Router,
    /// 16: the agent does not route common traffic (a foreign agent still MUST forward its
    /// registered mobile nodes' datagrams to a default router, §4.2.2).
    MobilityOnly,
}

impl From<AdvertCode> for u8 {
    fn from(c: AdvertCode) -> u8 {
        match c {
            AdvertCode::Router => 0,
            AdvertCode::MobilityOnly => 16,
        }
    }
}

impl TryFrom<u8> for AdvertCode {
    type Error = AgentError;
    fn try_from(v: u8) -> Result<Self, AgentError> {
        match v {
            0 => Ok(AdvertCode::Router),
            16 => Ok(AdvertCode::MobilityOnly),
            other => Err(AgentError::BadCode(other)),
        }
    }
}

/// The flags word of the Mobility Agent Advertisement Extension: `R B H F M G r T U X I` and
/// five reserved bits (RFC 5944 §2.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AgentFlags(pub u16);

impl AgentFlags {
    /// R: registration required, even with a co-located care-of address.
    pub const R: u16 = 0x8000;
    /// B: busy, the foreign agent accepts no additional mobile nodes.
    pub const B: u16 = 0x4000;
    /// H: home agent on this link.
    pub const H: u16 = 0x2000;
    /// F: foreign agent on this link.
    pub const F: u16 = 0x1000;
    /// M: receives minimal encapsulation (RFC 2004).
    pub const M: u16 = 0x0800;
    /// G: receives GRE encapsulation.
    pub const G: u16 = 0x0400;
    /// r: sent as zero, ignored on reception.
    pub const R_RESERVED: u16 = 0x0200;
    /// T: the foreign agent supports reverse tunnelling (RFC 3024).
    pub const T: u16 = 0x0100;
    /// U: UDP tunnelling (RFC 3519).
    pub const U: u16 = 0x0080;
    /// X: registration revocation (RFC 3543).
    pub const X: u16 = 0x0040;
    /// I: regional registration (RFC 4857).
    pub const I: u16 = 0x0020;
    /// The trailing reserved bits: sent as zero, ignored on reception.
    pub const RESERVED: u16 = 0x001f;
    /// Every bit that means something; the rest a mobile node MUST ignore (§2.4).
    pub const DEFINED: u16 = !(Self::R_RESERVED | Self::RESERVED);

    pub const fn contains(self, bit: u16) -> bool {
        self.0 & bit == bit
    }

    #[must_use]
    pub const fn with(self, bit: u16, on: bool) -> Self {
        if on {
            AgentFlags(self.0 | bit)
        } else {
            AgentFlags(self.0 & !bit)
        }
    }

    /// The flags without the reserved bits, as they are sent and as they are read (§2.1.1:
    /// "sent as zero; ignored on reception").
    #[must_use]
    pub const fn defined(self) -> Self {
        AgentFlags(self.0 & Self::DEFINED)
    }
}

impl core::fmt::Display for AgentFlags {
    /// Letters of the set flags, `-` for clear ones: e.g. `R--F---T---`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, c) in "RBHFMGrTUXI".chars().enumerate() {
            let bit = 0x8000 >> i;
            let c = if self.0 & bit != 0 { c } else { '-' };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// One entry of the Router Advertisement part (RFC 1256 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouterAddr {
    pub addr: Ipv4Addr,
    /// Signed, twos-complement; higher is preferred as a default router.
    pub preference: i32,
}

/// The router addresses of an advertisement: a view of the wire bytes (after `parse`) or a
/// borrowed slice (to `emit`), compared by content. No allocation, so `common` stays `no_std`.
#[derive(Clone, Copy)]
pub struct RouterAddrs<'a>(RouterInner<'a>);

#[derive(Clone, Copy)]
enum RouterInner<'a> {
    /// `count` entries of `stride` bytes; the first 8 of each are address and preference.
    Wire {
        bytes: &'a [u8],
        stride: usize,
        count: usize,
    },
    Slice(&'a [RouterAddr]),
}

impl<'a> RouterAddrs<'a> {
    pub const fn from_slice(s: &'a [RouterAddr]) -> Self {
        RouterAddrs(RouterInner::Slice(s))
    }

    pub const fn empty() -> Self {
        Self::from_slice(&[])
    }

    pub const fn len(&self) -> usize {
        match self.0 {
            RouterInner::Wire { count, .. } => count,
            RouterInner::Slice(s) => s.len(),
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<RouterAddr> {
        match self.0 {
            RouterInner::Wire {
                bytes,
                stride,
                count,
            } => {
                if i >= count {
                    return None;
                }
                let e = bytes.get(i * stride..i * stride + 8)?;
                Some(RouterAddr {
                    addr: read_addr(&e[..4]),
                    preference: read_u32(&e[4..8]) as i32,
                })
            }
            RouterInner::Slice(s) => s.get(i).copied(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = RouterAddr> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl PartialEq for RouterAddrs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for RouterAddrs<'_> {}

impl core::fmt::Debug for RouterAddrs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The care-of addresses of a Mobility Agent Advertisement Extension: a view of the wire bytes
/// or a borrowed slice, compared by content.
#[derive(Clone, Copy)]
pub struct CareOfAddrs<'a>(CareOfInner<'a>);

#[derive(Clone, Copy)]
enum CareOfInner<'a> {
    /// A multiple of 4 bytes.
    Wire(&'a [u8]),
    Slice(&'a [Ipv4Addr]),
}

impl<'a> CareOfAddrs<'a> {
    pub const fn from_slice(s: &'a [Ipv4Addr]) -> Self {
        CareOfAddrs(CareOfInner::Slice(s))
    }

    pub const fn empty() -> Self {
        Self::from_slice(&[])
    }

    pub const fn len(&self) -> usize {
        match self.0 {
            CareOfInner::Wire(b) => b.len() / 4,
            CareOfInner::Slice(s) => s.len(),
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<Ipv4Addr> {
        match self.0 {
            CareOfInner::Wire(b) => b.get(i * 4..i * 4 + 4).map(read_addr),
            CareOfInner::Slice(s) => s.get(i).copied(),
        }
    }

    /// The first care-of address: the one a mobile node picks for its first registration
    /// attempt (§2.4).
    pub fn first(&self) -> Option<Ipv4Addr> {
        self.get(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl PartialEq for CareOfAddrs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for CareOfAddrs<'_> {}

impl core::fmt::Debug for CareOfAddrs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The Mobility Agent Advertisement Extension (RFC 5944 §2.1.1), as on the wire (reserved flag
/// bits included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MobilityAgentExt<'a> {
    pub sequence: u16,
    pub registration_lifetime: u16,
    pub flags: AgentFlags,
    pub care_of_addrs: CareOfAddrs<'a>,
}

/// One extension of an ICMP Router Discovery message (RFC 5944 §1.8-1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvertExtension<'a> {
    /// Type 0, a single byte (§2.1.3).
    Padding,
    MobilityAgent(MobilityAgentExt<'a>),
    /// Type 19: one prefix length per router address (§2.1.2).
    PrefixLengths(&'a [u8]),
    /// Type 24: the foreign agent's challenge (RFC 4721 §2).
    Challenge(&'a [u8]),
    /// A skippable type (128-255) we do not interpret.
    Other {
        kind: u8,
        data: &'a [u8],
    },
}

impl AdvertExtension<'_> {
    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self {
            AdvertExtension::Padding => ext_type::PADDING,
            AdvertExtension::MobilityAgent(_) => ext_type::MOBILITY_AGENT,
            AdvertExtension::PrefixLengths(_) => ext_type::PREFIX_LENGTHS,
            AdvertExtension::Challenge(_) => ext_type::CHALLENGE,
            AdvertExtension::Other { kind, .. } => *kind,
        }
    }
}

/// Iterates over the extensions after the router addresses, yielding each with its offset from
/// the start of the ICMP message. Stops after the first error.
#[derive(Clone, Debug)]
pub struct AdvertExtensionIter<'a> {
    message: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> AdvertExtensionIter<'a> {
    /// Iterates over `message[start..]`; offsets are relative to `message`.
    pub fn new(message: &'a [u8], start: usize) -> Self {
        AdvertExtensionIter {
            message,
            offset: start,
            failed: false,
        }
    }

    fn next_inner(&self) -> Result<(usize, AdvertExtension<'a>), Error> {
        let rest = self.message.get(self.offset..).unwrap_or_default();
        let (&kind, rest) = rest.split_first().ok_or(Error::Truncated)?;
        if kind == ext_type::PADDING {
            return Ok((1, AdvertExtension::Padding));
        }
        let known = matches!(
            kind,
            ext_type::MOBILITY_AGENT | ext_type::PREFIX_LENGTHS | ext_type::CHALLENGE
        );
        // RFC 5944 §1.9 (the ICMP Router Discovery set included, §1.8): an unrecognised type
        // in 0..=127 discards the whole message, whatever its length byte says.
        if !known && !ExtensionType::is_skippable(kind) {
            return Err(Error::UnknownMandatoryExtension(kind));
        }
        let (&len, rest) = rest.split_first().ok_or(Error::Truncated)?;
        let data = rest.get(..usize::from(len)).ok_or(Error::Truncated)?;
        let ext = match kind {
            ext_type::MOBILITY_AGENT => {
                // Length = 6 + 4N (§2.1.1).
                if data.len() < MA_FIXED_LEN || !(data.len() - MA_FIXED_LEN).is_multiple_of(4) {
                    return Err(Error::BadLength);
                }
                AdvertExtension::MobilityAgent(MobilityAgentExt {
                    sequence: read_u16(&data[field::MA_SEQUENCE]),
                    registration_lifetime: read_u16(&data[field::MA_REG_LIFETIME]),
                    flags: AgentFlags(read_u16(&data[field::MA_FLAGS])),
                    care_of_addrs: CareOfAddrs(CareOfInner::Wire(&data[field::MA_CARE_OF..])),
                })
            }
            ext_type::PREFIX_LENGTHS => AdvertExtension::PrefixLengths(data),
            ext_type::CHALLENGE => AdvertExtension::Challenge(data),
            _ => AdvertExtension::Other { kind, data },
        };
        Ok((2 + data.len(), ext))
    }
}

impl<'a> Iterator for AdvertExtensionIter<'a> {
    type Item = Result<(usize, AdvertExtension<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.message.len() {
            return None;
        }
        let at = self.offset;
        match self.next_inner() {
            Ok((len, ext)) => {
                self.offset += len;
                Some(Ok((at, ext)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A read/write view of an ICMP Router Advertisement (and so of an Agent Advertisement).
#[derive(Debug, Clone)]
pub struct AgentAdvertisementPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AgentAdvertisementPacket<T> {
    /// Wraps without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        AgentAdvertisementPacket { buffer }
    }

    /// Wraps after [`Self::check`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks the type (9), the Addr Entry Size (at least 2, RFC 1256 §5.2: larger entries
    /// carry fields a later revision may add, and are skipped) and that the ICMP header and
    /// all router entries are present. Num Addrs may be 0 in an Agent Advertisement (§2.1).
    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < ICMP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::TYPE] != ICMP_ROUTER_ADVERTISEMENT {
            return Err(Error::WrongMessageType(b[field::TYPE]));
        }
        if b[field::ADDR_ENTRY_SIZE] < ADDR_ENTRY_SIZE {
            return Err(Error::BadLength);
        }
        if b.len() < self.extensions_offset() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    pub fn num_addrs(&self) -> u8 {
        self.buffer.as_ref()[field::NUM_ADDRS]
    }
    /// In 32-bit words.
    pub fn addr_entry_size(&self) -> u8 {
        self.buffer.as_ref()[field::ADDR_ENTRY_SIZE]
    }
    /// Seconds the advertisement stays valid without another one (§2.1); not the registration
    /// lifetime.
    pub fn lifetime(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LIFETIME])
    }

    /// Where the extensions start: after Num Addrs entries of Addr Entry Size words.
    pub fn extensions_offset(&self) -> usize {
        field::ADDRS + usize::from(self.num_addrs()) * usize::from(self.addr_entry_size()) * 4
    }

    /// Whether the ICMP checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        ipv4::checksum(self.buffer.as_ref()) == 0
    }

    /// The router addresses; entries past the end of a short buffer are left out.
    pub fn router_addrs(&self) -> RouterAddrs<'_> {
        let b = self.buffer.as_ref();
        let stride = usize::from(self.addr_entry_size()).max(2) * 4;
        let bytes = b.get(field::ADDRS..).unwrap_or_default();
        let count = usize::from(self.num_addrs()).min(bytes.len() / stride);
        RouterAddrs(RouterInner::Wire {
            bytes,
            stride,
            count,
        })
    }

    /// The extensions after the router addresses.
    pub fn extensions(&self) -> AdvertExtensionIter<'_> {
        AdvertExtensionIter::new(self.buffer.as_ref(), self.extensions_offset())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AgentAdvertisementPacket<T> {
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_num_addrs(&mut self, v: u8) {
        self.buffer.as_mut()[field::NUM_ADDRS] = v;
    }
    pub fn set_addr_entry_size(&mut self, v: u8) {
        self.buffer.as_mut()[field::ADDR_ENTRY_SIZE] = v;
    }
    pub fn set_lifetime(&mut self, v: u16) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&v.to_be_bytes());
    }
    /// Computes and stores the ICMP checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let ck = ipv4::checksum(self.buffer.as_ref());
        self.set_checksum(ck);
    }
}

/// An Agent Advertisement (RFC 5944 §2.1).
///
/// `parse` keeps only the defined flag bits (§2.4: reserved bits are ignored, not a reason to
/// discard) and skips unknown skippable extensions; it records whether a One-byte Padding
/// Extension was present so that a parsed message re-emits to the same bytes when its
/// extensions came in the order `emit` writes them: 16, 19, 24, 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentAdvertisementRepr<'a> {
    pub code: AdvertCode,
    /// ICMP Lifetime, seconds: how long this advertisement stays valid (§2.1).
    pub lifetime: u16,
    pub router_addrs: RouterAddrs<'a>,
    /// §2.3.2: 0 after boot, then +1, 0xffff followed by 256.
    pub sequence: u16,
    /// The longest registration lifetime the agent accepts, seconds; 0xffff is infinity.
    pub registration_lifetime: u16,
    pub flags: AgentFlags,
    pub care_of_addrs: CareOfAddrs<'a>,
    /// The Prefix-Lengths Extension (§2.1.2): exactly one byte per router address.
    pub prefix_lengths: Option<&'a [u8]>,
    /// The Challenge Extension of RFC 4721 §2.
    pub challenge: Option<&'a [u8]>,
    /// Whether a One-byte Padding Extension ends the message (§2.1.3); see
    /// [`Self::with_even_length`].
    pub padding: bool,
}

/// A rule of RFC 5944 §2.1.1 (or §2.1.2) that an advertisement breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdvertViolation {
    /// F set but no care-of address: "MUST include at least one care-of address if the 'F'
    /// bit is set".
    ForeignAgentWithoutCareOf,
    /// "MUST NOT have the 'B' bit set if the 'F' bit is not also set".
    BusyWithoutForeignAgent,
    /// "MUST NOT set the 'R' bit to one unless the 'F' bit is also set".
    RegistrationRequiredWithoutForeignAgent,
    /// "at least one of the 'F' bit and the 'H' bit MUST be set".
    NeitherForeignNorHomeAgent,
    /// A prefix length above 32 bits cannot describe an IPv4 network number (§2.1.2).
    PrefixLengthTooLong,
}

impl core::fmt::Display for AdvertViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AdvertViolation::ForeignAgentWithoutCareOf => "F set without a care-of address",
            AdvertViolation::BusyWithoutForeignAgent => "B set without F",
            AdvertViolation::RegistrationRequiredWithoutForeignAgent => "R set without F",
            AdvertViolation::NeitherForeignNorHomeAgent => "neither F nor H set",
            AdvertViolation::PrefixLengthTooLong => "prefix length above 32",
        })
    }
}

impl<'a> AgentAdvertisementRepr<'a> {
    /// Parses and checks an Agent Advertisement: type 9, a valid checksum, code 0 or 16, all
    /// router entries present, exactly one Mobility Agent Advertisement Extension (without
    /// one: [`AgentError::NotAgentAdvertisement`]), a Prefix-Lengths Extension whose Length is
    /// Num Addrs (§2.1.2), and no unknown extension of type 0..=127 (§1.9).
    pub fn parse(packet: &AgentAdvertisementPacket<&'a [u8]>) -> Result<Self, AgentError> {
        packet.check()?;
        if !packet.verify_checksum() {
            return Err(AgentError::Checksum);
        }
        let code = AdvertCode::try_from(packet.code())?;
        let message: &'a [u8] = packet.buffer;
        let num_addrs = usize::from(packet.num_addrs());
        let stride = usize::from(packet.addr_entry_size()) * 4;
        let router_addrs = RouterAddrs(RouterInner::Wire {
            bytes: &message[field::ADDRS..],
            stride,
            count: num_addrs,
        });
        let mut ma = None;
        let mut prefix_lengths = None;
        let mut challenge = None;
        let mut padding = false;
        for item in AdvertExtensionIter::new(message, packet.extensions_offset()) {
            let (_, ext) = item?;
            let kind = ext.kind();
            let duplicate = match ext {
                AdvertExtension::Padding => {
                    padding = true;
                    false
                }
                AdvertExtension::MobilityAgent(m) => ma.replace(m).is_some(),
                AdvertExtension::PrefixLengths(p) => {
                    if p.len() != num_addrs {
                        return Err(Error::BadLength.into());
                    }
                    prefix_lengths.replace(p).is_some()
                }
                AdvertExtension::Challenge(c) => challenge.replace(c).is_some(),
                AdvertExtension::Other { .. } => false,
            };
            if duplicate {
                return Err(AgentError::DuplicateExtension(kind));
            }
        }
        let ma = ma.ok_or(AgentError::NotAgentAdvertisement)?;
        Ok(AgentAdvertisementRepr {
            code,
            lifetime: packet.lifetime(),
            router_addrs,
            sequence: ma.sequence,
            registration_lifetime: ma.registration_lifetime,
            flags: ma.flags.defined(),
            care_of_addrs: ma.care_of_addrs,
            prefix_lengths,
            challenge,
            padding,
        })
    }

    /// The length without the padding byte.
    fn unpadded_len(&self) -> usize {
        ICMP_HEADER_LEN
            + 8 * self.router_addrs.len()
            + 2
            + MA_FIXED_LEN
            + 4 * self.care_of_addrs.len()
            + self.prefix_lengths.map_or(0, |p| 2 + p.len())
            + self.challenge.map_or(0, |c| 2 + c.len())
    }

    /// The ICMP message length `emit` writes.
    pub fn buffer_len(&self) -> usize {
        self.unpadded_len() + usize::from(self.padding)
    }

    /// The same advertisement with a One-byte Padding Extension exactly when the ICMP length
    /// would otherwise be odd (§2.1.3: "MAY be included in order to make the ICMP length
    /// even", and never more than one).
    #[must_use]
    pub fn with_even_length(mut self) -> Self {
        self.padding = self.unpadded_len() % 2 == 1;
        self
    }

    /// Checks the rules §2.1.1 sets for every Agent Advertisement sent; returns the first one
    /// broken. `parse` does not call it: a mobile node does, and ignores an advertisement that
    /// breaks one (its agent is misconfigured; guessing which bit it meant is worse than
    /// waiting for a correct one), and an agent does before it sends.
    pub fn validate(&self) -> Result<(), AdvertViolation> {
        let f = self.flags.contains(AgentFlags::F);
        if f && self.care_of_addrs.is_empty() {
            return Err(AdvertViolation::ForeignAgentWithoutCareOf);
        }
        if self.flags.contains(AgentFlags::B) && !f {
            return Err(AdvertViolation::BusyWithoutForeignAgent);
        }
        if self.flags.contains(AgentFlags::R) && !f {
            return Err(AdvertViolation::RegistrationRequiredWithoutForeignAgent);
        }
        if !f && !self.flags.contains(AgentFlags::H) {
            return Err(AdvertViolation::NeitherForeignNorHomeAgent);
        }
        if self
            .prefix_lengths
            .is_some_and(|p| p.iter().any(|&l| l > 32))
        {
            return Err(AdvertViolation::PrefixLengthTooLong);
        }
        Ok(())
    }

    /// Writes the advertisement (Addr Entry Size 2, reserved flag bits zero, extensions in
    /// the order 16, 19, 24, 0) with its checksum; returns its length. Fails with `BadLength`
    /// when a count does not fit its field: more than 255 router addresses, more than
    /// [`MAX_CARE_OF_ADDRS`], a Prefix-Lengths Extension not one byte per router address, or a
    /// challenge over 255 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let num_addrs = u8::try_from(self.router_addrs.len()).map_err(|_| Error::BadLength)?;
        if self.care_of_addrs.len() > MAX_CARE_OF_ADDRS
            || self
                .prefix_lengths
                .is_some_and(|p| p.len() != self.router_addrs.len())
            || self
                .challenge
                .is_some_and(|c| c.len() > usize::from(u8::MAX))
        {
            return Err(Error::BadLength);
        }
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        out[..ICMP_HEADER_LEN].copy_from_slice(&[
            ICMP_ROUTER_ADVERTISEMENT,
            self.code.into(),
            0,
            0,
            num_addrs,
            ADDR_ENTRY_SIZE,
            0,
            0,
        ]);
        out[field::LIFETIME].copy_from_slice(&self.lifetime.to_be_bytes());
        let mut at = field::ADDRS;
        for r in self.router_addrs.iter() {
            out[at..at + 4].copy_from_slice(&r.addr.octets());
            out[at + 4..at + 8].copy_from_slice(&r.preference.to_be_bytes());
            at += 8;
        }
        out[at] = ext_type::MOBILITY_AGENT;
        out[at + 1] = (MA_FIXED_LEN + 4 * self.care_of_addrs.len()) as u8;
        let data = &mut out[at + 2..];
        data[field::MA_SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        data[field::MA_REG_LIFETIME].copy_from_slice(&self.registration_lifetime.to_be_bytes());
        data[field::MA_FLAGS].copy_from_slice(&self.flags.defined().0.to_be_bytes());
        at += 2 + MA_FIXED_LEN;
        for coa in self.care_of_addrs.iter() {
            out[at..at + 4].copy_from_slice(&coa.octets());
            at += 4;
        }
        for (kind, data) in [
            (ext_type::PREFIX_LENGTHS, self.prefix_lengths),
            (ext_type::CHALLENGE, self.challenge),
        ] {
            if let Some(data) = data {
                out[at] = kind;
                out[at + 1] = data.len() as u8;
                out[at + 2..at + 2 + data.len()].copy_from_slice(data);
                at += 2 + data.len();
            }
        }
        if self.padding {
            out[at] = ext_type::PADDING;
        }
        let mut packet = AgentAdvertisementPacket::new_unchecked(out);
        packet.fill_checksum();
        Ok(len)
    }
}

impl core::fmt::Display for AgentAdvertisementRepr<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Agent Advertisement code={} lifetime={} seq={} reg_lifetime={} flags={} routers={:?} coa={:?}",
            u8::from(self.code),
            self.lifetime,
            self.sequence,
            self.registration_lifetime,
            self.flags,
            self.router_addrs,
            self.care_of_addrs,
        )?;
        if let Some(p) = self.prefix_lengths {
            write!(f, " prefix_lengths={p:?}")?;
        }
        Ok(())
    }
}

/// A read/write view of an ICMP Router Solicitation (an Agent Solicitation, §2.2).
#[derive(Debug, Clone)]
pub struct AgentSolicitationPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AgentSolicitationPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        AgentSolicitationPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks that the 8 bytes are present and the type is 10.
    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < ICMP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::TYPE] != ICMP_ROUTER_SOLICITATION {
            return Err(Error::WrongMessageType(b[field::TYPE]));
        }
        Ok(())
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }
    /// Sent as zero, ignored on reception (RFC 1256 §3).
    pub fn reserved(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::RESERVED])
    }
    pub fn verify_checksum(&self) -> bool {
        ipv4::checksum(self.buffer.as_ref()) == 0
    }
}

/// An Agent Solicitation: nothing but the ICMP Router Solicitation header (§2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSolicitationRepr;

impl AgentSolicitationRepr {
    pub const LEN: usize = ICMP_HEADER_LEN;

    /// Type 10, a valid checksum, code 0 (RFC 1256 §4.2's checks); the reserved bytes are
    /// ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &AgentSolicitationPacket<T>) -> Result<Self, AgentError> {
        packet.check()?;
        if !packet.verify_checksum() {
            return Err(AgentError::Checksum);
        }
        if packet.code() != 0 {
            return Err(AgentError::BadCode(packet.code()));
        }
        Ok(AgentSolicitationRepr)
    }

    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    /// Writes type 10, code 0, zero reserved bytes and the checksum.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let out = buf.get_mut(..Self::LEN).ok_or(Error::BufferTooSmall)?;
        out.copy_from_slice(&[ICMP_ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]);
        let ck = ipv4::checksum(out);
        out[field::CHECKSUM].copy_from_slice(&ck.to_be_bytes());
        Ok(Self::LEN)
    }
}

impl core::fmt::Display for AgentSolicitationRepr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Agent Solicitation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A foreign agent's advertisement, packed by hand from the figures of RFC 1256 §3 and
    /// RFC 5944 §2.1.1-2.1.3: one router 192.0.2.1 (preference 0), lifetime 5400; sequence
    /// 257, registration lifetime 1800, flags R|F|T, care-of 192.0.2.1 and 192.0.2.2;
    /// prefix length 24; one byte of padding. The checksum (0xc6c6) was computed by scapy's
    /// ICMP layer and agrees with tshark's "[correct]".
    const FA: [u8; 36] = [
        0x09, 0x00, 0xc6, 0xc6, 0x01, 0x02, 0x15, 0x18, // type, code, checksum, 1, 2, 5400
        0xc0, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, // router, preference
        0x10, 0x0e, 0x01, 0x01, 0x07, 0x08, 0x91, 0x00, // 16, 14, seq 257, 1800, R|F|T
        0xc0, 0x00, 0x02, 0x01, 0xc0, 0x00, 0x02, 0x02, // care-of addresses
        0x13, 0x01, 0x18, 0x00, // 19, 1, /24; padding
    ];

    /// scapy's `bytes(ICMP(type=10))`.
    const SOLICITATION: [u8; 8] = [0x0a, 0x00, 0xf5, 0xff, 0, 0, 0, 0];

    fn parse(b: &[u8]) -> Result<AgentAdvertisementRepr<'_>, AgentError> {
        AgentAdvertisementRepr::parse(&AgentAdvertisementPacket::new_unchecked(b))
    }

    /// Recomputes the checksum after a test edits the bytes.
    fn fix(b: &mut [u8]) {
        AgentAdvertisementPacket::new_unchecked(b).fill_checksum();
    }

    #[test]
    fn parses_and_reemits_the_figure() {
        let a = parse(&FA).unwrap();
        assert_eq!(a.code, AdvertCode::Router);
        assert_eq!(a.lifetime, 5400);
        assert_eq!(
            a.router_addrs.get(0),
            Some(RouterAddr {
                addr: Ipv4Addr::new(192, 0, 2, 1),
                preference: 0
            })
        );
        assert_eq!(a.router_addrs.len(), 1);
        assert_eq!(a.sequence, 257);
        assert_eq!(a.registration_lifetime, 1800);
        assert_eq!(
            a.flags,
            AgentFlags(AgentFlags::R | AgentFlags::F | AgentFlags::T)
        );
        assert_eq!(a.flags.to_string(), "R--F---T---");
        let coas = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        assert_eq!(a.care_of_addrs, CareOfAddrs::from_slice(&coas));
        assert_eq!(a.care_of_addrs.first(), Some(coas[0]));
        assert_eq!(a.prefix_lengths, Some(&[24u8][..]));
        assert_eq!(a.challenge, None);
        assert!(a.padding);
        assert_eq!(a.validate(), Ok(()));
        let mut out = [0u8; 36];
        assert_eq!(a.emit(&mut out), Ok(36));
        assert_eq!(out, FA);
        assert_eq!(a.emit(&mut [0u8; 35]), Err(Error::BufferTooSmall));
        // Built from slices, it is equal to the parsed view and emits the same bytes.
        let routers = [RouterAddr {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            preference: 0,
        }];
        let built = AgentAdvertisementRepr {
            router_addrs: RouterAddrs::from_slice(&routers),
            care_of_addrs: CareOfAddrs::from_slice(&coas),
            padding: false,
            ..a
        }
        .with_even_length();
        assert_eq!(built, a);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        for n in 0..FA.len() - 1 {
            assert!(parse(&FA[..n]).is_err(), "cut at {n}");
        }
        // The Internet checksum pads an odd length with a zero byte, so dropping the trailing
        // padding extension (a zero byte) keeps it valid: the same advertisement, unpadded.
        let unpadded = parse(&FA[..35]).unwrap();
        assert_eq!(unpadded.with_even_length(), parse(&FA).unwrap());
        assert!(!unpadded.padding);
        for i in 1..FA.len() {
            let mut bad = FA;
            bad[i] ^= 0x01;
            // A flipped bit breaks the checksum (or is in the checksum).
            assert_eq!(parse(&bad), Err(AgentError::Checksum), "flip in byte {i}");
        }
        let mut bad = FA;
        bad[0] ^= 0x01;
        assert_eq!(
            parse(&bad),
            Err(AgentError::Wire(Error::WrongMessageType(8)))
        );
    }

    #[test]
    fn wire_rules() {
        // Another ICMP type.
        let mut b = FA;
        b[0] = 8;
        fix(&mut b);
        assert_eq!(parse(&b), Err(AgentError::Wire(Error::WrongMessageType(8))));
        // Code 16 is the mobility-only agent; others are not agent advertisements.
        b = FA;
        b[1] = 16;
        fix(&mut b);
        assert_eq!(parse(&b).unwrap().code, AdvertCode::MobilityOnly);
        b[1] = 1;
        fix(&mut b);
        assert_eq!(parse(&b), Err(AgentError::BadCode(1)));
        // Addr Entry Size 1 cannot hold a router entry.
        b = FA;
        b[5] = 1;
        fix(&mut b);
        assert_eq!(parse(&b), Err(AgentError::Wire(Error::BadLength)));
        // Prefix-Lengths Length must equal Num Addrs.
        let mut v = FA[..32].to_vec();
        v.extend_from_slice(&[19, 2, 24, 24]);
        fix(&mut v);
        assert_eq!(parse(&v), Err(AgentError::Wire(Error::BadLength)));
        // Mobility Agent Length not 6 + 4N.
        b = FA;
        b[17] = 13;
        fix(&mut b);
        assert!(matches!(parse(&b), Err(AgentError::Wire(_))));
        // Reserved flag bits are ignored, not a reason to discard (§2.4).
        b = FA;
        b[22] |= 0x02;
        b[23] |= 0x1f;
        fix(&mut b);
        let a = parse(&b).unwrap();
        assert_eq!(a.flags, parse(&FA).unwrap().flags);
        let mut out = [0u8; 36];
        a.emit(&mut out).unwrap();
        assert_eq!(out, FA, "reserved bits are sent as zero");
    }

    #[test]
    fn a_plain_router_advertisement_is_not_an_agent_advertisement() {
        let mut b = FA[..16].to_vec();
        fix(&mut b);
        assert_eq!(parse(&b), Err(AgentError::NotAgentAdvertisement));
        // Padding alone does not make it one either.
        b.extend_from_slice(&[0, 0]);
        fix(&mut b);
        assert_eq!(parse(&b), Err(AgentError::NotAgentAdvertisement));
    }

    #[test]
    fn unknown_extensions_follow_rfc5944_1_9() {
        // A skippable type (200) is skipped; what follows is still read.
        let mut v = FA[..32].to_vec();
        v.extend_from_slice(&[200, 3, 1, 2, 3, 19, 1, 24]);
        fix(&mut v);
        let a = parse(&v).unwrap();
        assert_eq!(a.prefix_lengths, Some(&[24u8][..]));
        assert!(!a.padding);
        // A non-skippable unknown type (42) discards the message, even with no length byte.
        for tail in [&[42u8, 0][..], &[42]] {
            let mut v = FA[..32].to_vec();
            v.extend_from_slice(tail);
            fix(&mut v);
            assert_eq!(
                parse(&v),
                Err(AgentError::Wire(Error::UnknownMandatoryExtension(42)))
            );
        }
        // The RFC 4721 challenge is understood.
        let mut v = FA[..32].to_vec();
        v.extend_from_slice(&[24, 4, 0xde, 0xad, 0xbe, 0xef]);
        fix(&mut v);
        let a = parse(&v).unwrap();
        assert_eq!(a.challenge, Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        let mut out = vec![0u8; a.buffer_len()];
        a.emit(&mut out).unwrap();
        assert_eq!(out, v);
        // Two Mobility Agent extensions: ambiguous.
        let mut v = FA[..32].to_vec();
        v.extend_from_slice(&FA[16..24]);
        v[33] = 6;
        fix(&mut v);
        assert_eq!(parse(&v), Err(AgentError::DuplicateExtension(16)));
    }

    #[test]
    fn larger_address_entries_are_skipped() {
        // Addr Entry Size 3: one extra word per router, ignored (RFC 1256 §5.2).
        let mut v = FA[..16].to_vec();
        v[5] = 3;
        v.extend_from_slice(&[0xff; 4]);
        v.extend_from_slice(&FA[16..]);
        fix(&mut v);
        let a = parse(&v).unwrap();
        assert_eq!(a.router_addrs, parse(&FA).unwrap().router_addrs);
        assert_eq!(a.sequence, 257);
    }

    #[test]
    fn validate_catches_every_2_1_1_rule() {
        let a = parse(&FA).unwrap();
        let with = |flags: u16| AgentAdvertisementRepr {
            flags: AgentFlags(flags),
            ..a
        };
        assert_eq!(
            AgentAdvertisementRepr {
                care_of_addrs: CareOfAddrs::empty(),
                ..a
            }
            .validate(),
            Err(AdvertViolation::ForeignAgentWithoutCareOf)
        );
        assert_eq!(
            with(AgentFlags::B | AgentFlags::H).validate(),
            Err(AdvertViolation::BusyWithoutForeignAgent)
        );
        assert_eq!(
            with(AgentFlags::R | AgentFlags::H).validate(),
            Err(AdvertViolation::RegistrationRequiredWithoutForeignAgent)
        );
        assert_eq!(
            with(AgentFlags::T).validate(),
            Err(AdvertViolation::NeitherForeignNorHomeAgent)
        );
        assert_eq!(
            AgentAdvertisementRepr {
                care_of_addrs: CareOfAddrs::empty(),
                ..with(AgentFlags::H)
            }
            .validate(),
            Ok(())
        );
        assert_eq!(
            AgentAdvertisementRepr {
                prefix_lengths: Some(&[33]),
                ..a
            }
            .validate(),
            Err(AdvertViolation::PrefixLengthTooLong)
        );
    }

    #[test]
    fn emit_rejects_counts_that_do_not_fit() {
        let a = parse(&FA).unwrap();
        let mut buf = [0u8; 512];
        let bad_prefix = AgentAdvertisementRepr {
            prefix_lengths: Some(&[24, 24]),
            ..a
        };
        assert_eq!(bad_prefix.emit(&mut buf), Err(Error::BadLength));
        let many = [Ipv4Addr::new(10, 0, 0, 1); MAX_CARE_OF_ADDRS + 1];
        let too_many = AgentAdvertisementRepr {
            care_of_addrs: CareOfAddrs::from_slice(&many),
            ..a
        };
        assert_eq!(too_many.emit(&mut buf), Err(Error::BadLength));
        let fits = AgentAdvertisementRepr {
            care_of_addrs: CareOfAddrs::from_slice(&many[..MAX_CARE_OF_ADDRS]),
            ..a
        };
        let n = fits.emit(&mut buf).unwrap();
        assert_eq!(parse(&buf[..n]).unwrap(), fits);
        assert_eq!(buf[17], 254);
    }

    #[test]
    fn with_even_length_pads_only_odd_messages() {
        let a = parse(&FA).unwrap();
        assert!(a.with_even_length().padding);
        assert_eq!(a.with_even_length().buffer_len(), 36);
        let no_prefix = AgentAdvertisementRepr {
            prefix_lengths: None,
            ..a
        }
        .with_even_length();
        assert!(!no_prefix.padding);
        assert_eq!(no_prefix.buffer_len(), 32);
    }

    #[test]
    fn solicitation() {
        let p = AgentSolicitationPacket::new_checked(&SOLICITATION[..]).unwrap();
        assert_eq!(AgentSolicitationRepr::parse(&p), Ok(AgentSolicitationRepr));
        let mut out = [0xffu8; 8];
        assert_eq!(AgentSolicitationRepr.emit(&mut out), Ok(8));
        assert_eq!(out, SOLICITATION);
        // Reserved bytes are ignored on reception, but covered by the checksum.
        let mut r = SOLICITATION;
        r[7] = 1;
        let ck = ipv4::checksum(&[r[0], r[1], 0, 0, r[4], r[5], r[6], r[7]]);
        r[2..4].copy_from_slice(&ck.to_be_bytes());
        let p = AgentSolicitationPacket::new_unchecked(&r[..]);
        assert_eq!(p.reserved(), 1);
        assert_eq!(AgentSolicitationRepr::parse(&p), Ok(AgentSolicitationRepr));
        let mut bad = SOLICITATION;
        bad[3] ^= 1;
        let p = AgentSolicitationPacket::new_unchecked(&bad[..]);
        assert_eq!(AgentSolicitationRepr::parse(&p), Err(AgentError::Checksum));
        let p = AgentSolicitationPacket::new_unchecked(&SOLICITATION[..7]);
        assert_eq!(
            AgentSolicitationRepr::parse(&p),
            Err(AgentError::Wire(Error::Truncated))
        );
        let mut code = SOLICITATION;
        code[1] = 1;
        code[2..4].copy_from_slice(&[0xf5, 0xfe]);
        let p = AgentSolicitationPacket::new_unchecked(&code[..]);
        assert_eq!(
            AgentSolicitationRepr::parse(&p),
            Err(AgentError::BadCode(1))
        );
        let p = AgentSolicitationPacket::new_unchecked(&FA[..8]);
        assert_eq!(
            AgentSolicitationRepr::parse(&p),
            Err(AgentError::Wire(Error::WrongMessageType(9)))
        );
    }
}
