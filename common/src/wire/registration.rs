//! Registration Request (RFC 5944 §3.3) and Registration Reply (§3.4).

use core::net::Ipv4Addr;

use super::{Error, ExtensionIter, MessageType, ReplyCode, Result, read_addr, read_u16, read_u64};

/// A Lifetime of 0xffff means infinity (RFC 5944 §3.3).
pub const LIFETIME_INFINITE: u16 = 0xffff;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    // Request: flags byte; Reply: code byte.
    pub const FLAGS_OR_CODE: usize = 1;
    pub const LIFETIME: Range<usize> = 2..4;
    pub const HOME_ADDR: Range<usize> = 4..8;
    pub const HOME_AGENT: Range<usize> = 8..12;
    pub const REQ_CARE_OF_ADDR: Range<usize> = 12..16;
    pub const REQ_IDENTIFICATION: Range<usize> = 16..24;
    pub const REQ_EXTENSIONS: usize = 24;
    pub const REP_IDENTIFICATION: Range<usize> = 12..20;
    pub const REP_EXTENSIONS: usize = 20;
}

/// The flag byte of a Registration Request: `S B D M G r T x` (RFC 5944 §3.3, RFC 3024 §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestFlags(pub u8);

impl RequestFlags {
    /// S: simultaneous bindings.
    pub const S: u8 = 0x80;
    /// B: broadcast datagrams.
    pub const B: u8 = 0x40;
    /// D: decapsulation by the mobile node (co-located care-of address).
    pub const D: u8 = 0x20;
    /// M: minimal encapsulation (RFC 2004).
    pub const M: u8 = 0x10;
    /// G: GRE encapsulation.
    pub const G: u8 = 0x08;
    /// r: sent as zero, ignored on reception.
    pub const R_RESERVED: u8 = 0x04;
    /// T: reverse tunnelling requested (RFC 3024).
    pub const T: u8 = 0x02;
    /// x: sent as zero, ignored on reception.
    pub const X_RESERVED: u8 = 0x01;

    pub const fn contains(self, bit: u8) -> bool {
        self.0 & bit == bit
    }

    #[must_use]
    pub const fn with(self, bit: u8, on: bool) -> Self {
        if on {
            RequestFlags(self.0 | bit)
        } else {
            RequestFlags(self.0 & !bit)
        }
    }
}

impl core::fmt::Display for RequestFlags {
    /// Letters of the set flags, `-` for clear ones: e.g. `--D---T-`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, c) in "SBDMGrTx".chars().enumerate() {
            let bit = 0x80 >> i;
            let c = if self.0 & bit != 0 { c } else { '-' };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// A read/write view of a Registration Request.
#[derive(Debug, Clone)]
pub struct RequestPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RequestPacket<T> {
    /// Wraps without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        RequestPacket { buffer }
    }

    /// Wraps after checking the length and the message type.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks that the fixed part is present and the type is 1.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::REQ_EXTENSIONS {
            return Err(Error::Truncated);
        }
        match MessageType::from(b[field::TYPE]) {
            MessageType::RegistrationRequest => Ok(()),
            _ => Err(Error::WrongMessageType(b[field::TYPE])),
        }
    }

    pub fn flags(&self) -> RequestFlags {
        RequestFlags(self.buffer.as_ref()[field::FLAGS_OR_CODE])
    }
    pub fn lifetime(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LIFETIME])
    }
    pub fn home_addr(&self) -> Ipv4Addr {
        read_addr(&self.buffer.as_ref()[field::HOME_ADDR])
    }
    pub fn home_agent(&self) -> Ipv4Addr {
        read_addr(&self.buffer.as_ref()[field::HOME_AGENT])
    }
    pub fn care_of_addr(&self) -> Ipv4Addr {
        read_addr(&self.buffer.as_ref()[field::REQ_CARE_OF_ADDR])
    }
    pub fn identification(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::REQ_IDENTIFICATION])
    }

    /// The extensions, with offsets from the start of the message.
    pub fn extensions(&self) -> ExtensionIter<'_> {
        ExtensionIter::new(self.buffer.as_ref(), field::REQ_EXTENSIONS)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RequestPacket<T> {
    pub fn set_flags(&mut self, v: RequestFlags) {
        self.buffer.as_mut()[field::FLAGS_OR_CODE] = v.0;
    }
    pub fn set_lifetime(&mut self, v: u16) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_home_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::HOME_ADDR].copy_from_slice(&v.octets());
    }
    pub fn set_home_agent(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::HOME_AGENT].copy_from_slice(&v.octets());
    }
    pub fn set_care_of_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::REQ_CARE_OF_ADDR].copy_from_slice(&v.octets());
    }
    pub fn set_identification(&mut self, v: u64) {
        self.buffer.as_mut()[field::REQ_IDENTIFICATION].copy_from_slice(&v.to_be_bytes());
    }
}

/// The fixed part of a Registration Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRepr {
    pub flags: RequestFlags,
    pub lifetime: u16,
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    pub identification: u64,
}

impl RequestRepr {
    /// Length of the fixed part; extensions start here.
    pub const LEN: usize = field::REQ_EXTENSIONS;

    pub fn parse<T: AsRef<[u8]>>(packet: &RequestPacket<T>) -> Result<Self> {
        packet.check()?;
        Ok(RequestRepr {
            flags: packet.flags(),
            lifetime: packet.lifetime(),
            home_addr: packet.home_addr(),
            home_agent: packet.home_agent(),
            care_of_addr: packet.care_of_addr(),
            identification: packet.identification(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    /// Writes the fixed part into `packet`, whose buffer must hold at least [`Self::LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut RequestPacket<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < Self::LEN {
            return Err(Error::BufferTooSmall);
        }
        packet.buffer.as_mut()[field::TYPE] = MessageType::RegistrationRequest.into();
        packet.set_flags(self.flags);
        packet.set_lifetime(self.lifetime);
        packet.set_home_addr(self.home_addr);
        packet.set_home_agent(self.home_agent);
        packet.set_care_of_addr(self.care_of_addr);
        packet.set_identification(self.identification);
        Ok(())
    }

    /// RFC 5944 §3.6.1.2 / §3.8.2.2: a request is a deregistration when its lifetime is zero
    /// or its care-of address is the home address.
    pub fn is_deregistration(&self) -> bool {
        self.lifetime == 0 || self.care_of_addr == self.home_addr
    }
}

impl core::fmt::Display for RequestRepr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Registration Request flags={} lifetime={} home={} ha={} coa={} id={:#018x}",
            self.flags,
            self.lifetime,
            self.home_addr,
            self.home_agent,
            self.care_of_addr,
            self.identification
        )
    }
}

/// A read/write view of a Registration Reply.
#[derive(Debug, Clone)]
pub struct ReplyPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReplyPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        ReplyPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::REP_EXTENSIONS {
            return Err(Error::Truncated);
        }
        match MessageType::from(b[field::TYPE]) {
            MessageType::RegistrationReply => Ok(()),
            _ => Err(Error::WrongMessageType(b[field::TYPE])),
        }
    }

    pub fn code(&self) -> ReplyCode {
        ReplyCode::from(self.buffer.as_ref()[field::FLAGS_OR_CODE])
    }
    pub fn lifetime(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LIFETIME])
    }
    pub fn home_addr(&self) -> Ipv4Addr {
        read_addr(&self.buffer.as_ref()[field::HOME_ADDR])
    }
    pub fn home_agent(&self) -> Ipv4Addr {
        read_addr(&self.buffer.as_ref()[field::HOME_AGENT])
    }
    pub fn identification(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::REP_IDENTIFICATION])
    }
    pub fn extensions(&self) -> ExtensionIter<'_> {
        ExtensionIter::new(self.buffer.as_ref(), field::REP_EXTENSIONS)
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReplyPacket<T> {
    pub fn set_code(&mut self, v: ReplyCode) {
        self.buffer.as_mut()[field::FLAGS_OR_CODE] = v.into();
    }
    pub fn set_lifetime(&mut self, v: u16) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_home_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::HOME_ADDR].copy_from_slice(&v.octets());
    }
    pub fn set_home_agent(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::HOME_AGENT].copy_from_slice(&v.octets());
    }
    pub fn set_identification(&mut self, v: u64) {
        self.buffer.as_mut()[field::REP_IDENTIFICATION].copy_from_slice(&v.to_be_bytes());
    }
}

/// The fixed part of a Registration Reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyRepr {
    pub code: ReplyCode,
    pub lifetime: u16,
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub identification: u64,
}

impl ReplyRepr {
    /// Length of the fixed part; extensions start here.
    pub const LEN: usize = field::REP_EXTENSIONS;

    pub fn parse<T: AsRef<[u8]>>(packet: &ReplyPacket<T>) -> Result<Self> {
        packet.check()?;
        Ok(ReplyRepr {
            code: packet.code(),
            lifetime: packet.lifetime(),
            home_addr: packet.home_addr(),
            home_agent: packet.home_agent(),
            identification: packet.identification(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ReplyPacket<T>) -> Result<()> {
        if packet.buffer.as_ref().len() < Self::LEN {
            return Err(Error::BufferTooSmall);
        }
        packet.buffer.as_mut()[field::TYPE] = MessageType::RegistrationReply.into();
        packet.set_code(self.code);
        packet.set_lifetime(self.lifetime);
        packet.set_home_addr(self.home_addr);
        packet.set_home_agent(self.home_agent);
        packet.set_identification(self.identification);
        Ok(())
    }
}

impl core::fmt::Display for ReplyRepr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Registration Reply code={} lifetime={} home={} ha={} id={:#018x}",
            self.code, self.lifetime, self.home_addr, self.home_agent, self.identification
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Extension;

    /// RFC 5944 §3.3 field layout, assembled by hand from the figure (not by our emitter):
    /// type 1, flags D|T, lifetime 1800, home 10.0.0.5, HA 10.0.0.1, CoA 192.0.2.7,
    /// identification 0x0102030405060708, then an MN-HA auth extension with SPI 256.
    const REQUEST: [u8; 46] = [
        1, 0x22, 0x07, 0x08, 10, 0, 0, 5, 10, 0, 0, 1, 192, 0, 2, 7, 1, 2, 3, 4, 5, 6, 7, 8, 32,
        20, 0, 0, 1, 0, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
        0xac, 0xad, 0xae, 0xaf,
    ];

    #[test]
    fn parses_request_figure() {
        let p = RequestPacket::new_checked(&REQUEST[..]).unwrap();
        let r = RequestRepr::parse(&p).unwrap();
        assert!(r.flags.contains(RequestFlags::D) && r.flags.contains(RequestFlags::T));
        assert!(!r.flags.contains(RequestFlags::S));
        assert_eq!(r.lifetime, 1800);
        assert_eq!(r.home_addr, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(r.home_agent, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.care_of_addr, Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(r.identification, 0x0102_0304_0506_0708);
        let mut exts = p.extensions();
        let (at, e) = exts.next().unwrap().unwrap();
        assert_eq!(at, 24);
        let Extension::MnHaAuth(a) = e else {
            panic!("{e:?}")
        };
        assert_eq!(a.spi, 256);
        assert_eq!(a.authenticator.len(), 16);
        assert!(exts.next().is_none());
        assert_eq!(r.flags.to_string(), "--D---T-");
    }

    #[test]
    fn request_emit_matches_figure() {
        let p = RequestPacket::new_checked(&REQUEST[..]).unwrap();
        let r = RequestRepr::parse(&p).unwrap();
        let mut buf = [0u8; RequestRepr::LEN];
        r.emit(&mut RequestPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, REQUEST[..24]);
    }

    #[test]
    fn short_and_wrong_type() {
        assert_eq!(
            RequestPacket::new_checked(&REQUEST[..23]).unwrap_err(),
            Error::Truncated
        );
        let mut reply = REQUEST;
        reply[0] = 3;
        assert_eq!(
            RequestPacket::new_checked(&reply[..]).unwrap_err(),
            Error::WrongMessageType(3)
        );
        assert!(ReplyPacket::new_checked(&reply[..]).is_ok());
    }

    #[test]
    fn reply_round_trip() {
        let r = ReplyRepr {
            code: ReplyCode::HaIdentificationMismatch,
            lifetime: 0,
            home_addr: Ipv4Addr::new(10, 0, 0, 5),
            home_agent: Ipv4Addr::new(10, 0, 0, 1),
            identification: 0xdead_beef_0000_0001,
        };
        let mut buf = [0u8; ReplyRepr::LEN];
        r.emit(&mut ReplyPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(&buf[..4], &[3, 133, 0, 0]);
        assert_eq!(
            ReplyRepr::parse(&ReplyPacket::new_checked(&buf[..]).unwrap()).unwrap(),
            r
        );
    }

    #[test]
    fn deregistration_rules() {
        let p = RequestPacket::new_checked(&REQUEST[..]).unwrap();
        let mut r = RequestRepr::parse(&p).unwrap();
        assert!(!r.is_deregistration());
        r.care_of_addr = r.home_addr;
        assert!(r.is_deregistration());
        r.care_of_addr = Ipv4Addr::new(192, 0, 2, 7);
        r.lifetime = 0;
        assert!(r.is_deregistration());
    }
}
