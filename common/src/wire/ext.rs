//! Registration extensions (RFC 5944 §1.9-1.11 and §3.5).
//!
//! Every extension we understand uses the type-length-value or short format (a one-byte length
//! after the type). RFC 5944 §1.9: an unrecognised type in 0..=127 makes the whole message
//! silently discarded; one in 128..=255 is skipped by its length. Long-format extensions
//! (§1.10) are all non-skippable, so an unknown one is rejected before its 16-bit length would
//! matter.

use super::{Error, Result, read_u16, read_u32};

/// Extension type numbers (IANA "Mobile IPv4 extensions").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtensionType {
    /// 32: Mobile-Home Authentication (RFC 5944 §3.5.2).
    MnHaAuth,
    /// 33: Mobile-Foreign Authentication (RFC 5944 §3.5.3).
    MnFaAuth,
    /// 34: Foreign-Home Authentication (RFC 5944 §3.5.4).
    FaHaAuth,
    /// 44: UDP Tunnel Reply (RFC 3519 §3.2), non-skippable.
    UdpTunnelReply,
    /// 131: Mobile Node NAI (RFC 2794 §2), skippable.
    MnNai,
    /// 144: UDP Tunnel Request (RFC 3519 §3.1), skippable.
    UdpTunnelRequest,
    /// 149: Trusted Networks Configured (RFC 5265 §3.4), skippable.
    TrustedNetworksConfigured,
    Unknown(u8),
}

impl From<u8> for ExtensionType {
    fn from(v: u8) -> Self {
        match v {
            32 => Self::MnHaAuth,
            33 => Self::MnFaAuth,
            34 => Self::FaHaAuth,
            44 => Self::UdpTunnelReply,
            131 => Self::MnNai,
            144 => Self::UdpTunnelRequest,
            149 => Self::TrustedNetworksConfigured,
            other => Self::Unknown(other),
        }
    }
}

impl From<ExtensionType> for u8 {
    fn from(v: ExtensionType) -> u8 {
        match v {
            ExtensionType::MnHaAuth => 32,
            ExtensionType::MnFaAuth => 33,
            ExtensionType::FaHaAuth => 34,
            ExtensionType::UdpTunnelReply => 44,
            ExtensionType::MnNai => 131,
            ExtensionType::UdpTunnelRequest => 144,
            ExtensionType::TrustedNetworksConfigured => 149,
            ExtensionType::Unknown(other) => other,
        }
    }
}

impl ExtensionType {
    /// RFC 5944 §1.9: types 128..=255 may be skipped when not understood; 0..=127 must be
    /// understood or the message is discarded.
    pub const fn is_skippable(kind: u8) -> bool {
        kind >= 128
    }
}

/// An authentication extension: SPI and authenticator (RFC 5944 §3.5.2-3.5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthExtension<'a> {
    pub spi: u32,
    pub authenticator: &'a [u8],
}

impl AuthExtension<'_> {
    /// Bytes of the type, length and SPI fields, which the authenticator covers (§3.5.1).
    pub const HEADER_LEN: usize = 6;

    /// The byte range of the message the authenticator covers when this extension starts at
    /// `ext_offset` (from the start of the Mobile IP message, i.e. the UDP payload): the fixed
    /// fields, all prior extensions in their entirety, and this extension's type, length and
    /// SPI (RFC 5944 §3.5.1). The UDP header is not included.
    pub const fn authenticated_range(ext_offset: usize) -> core::ops::Range<usize> {
        0..ext_offset + Self::HEADER_LEN
    }

    /// Where the authenticator of `len` bytes sits when the extension starts at `ext_offset`.
    pub const fn authenticator_range(ext_offset: usize, len: usize) -> core::ops::Range<usize> {
        ext_offset + Self::HEADER_LEN..ext_offset + Self::HEADER_LEN + len
    }
}

/// The UDP Tunnel Request extension (RFC 3519 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTunnelRequest {
    /// F: force UDP tunnelling whatever NAT detection finds (§3.1.1).
    pub force: bool,
    /// R: registering a co-located address through an FA that set 'R' (§3.1.2).
    pub reg_through_fa: bool,
    /// Requested encapsulation as an IP protocol number; 0 means "per M and G" (§3.1.4).
    pub encapsulation: u8,
}

/// The UDP Tunnel Reply extension (RFC 3519 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTunnelReply {
    /// 0..=63 assent, 64..=255 decline (§3.2.1).
    pub reply_code: u8,
    /// F: tunnelling is forced because the request set F.
    pub forced: bool,
    /// Seconds; 0 means "use your default" (§3.2).
    pub keepalive_interval: u16,
}

/// One parsed extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension<'a> {
    MnHaAuth(AuthExtension<'a>),
    MnFaAuth(AuthExtension<'a>),
    FaHaAuth(AuthExtension<'a>),
    /// RFC 2794: the NAI bytes (RFC 7542 syntax, validated by the consumer).
    MnNai(&'a [u8]),
    UdpTunnelRequest(UdpTunnelRequest),
    UdpTunnelReply(UdpTunnelReply),
    /// RFC 5265 §3.4, sub-type 0.
    TrustedNetworksConfigured,
    /// A skippable extension we do not interpret (or one whose sub-type or reserved bits tell
    /// us to treat it as not understood); kept so it can be relayed or shown.
    Other {
        kind: u8,
        data: &'a [u8],
    },
}

const UDP_TUNNEL_LEN: usize = 6;
const TNC_LEN: usize = 2;

impl<'a> Extension<'a> {
    /// Parses the extension whose type and data are given. `data` is exactly `Length` bytes.
    fn parse(kind: u8, data: &'a [u8]) -> Result<Extension<'a>> {
        let auth = || -> Result<AuthExtension<'a>> {
            if data.len() < 4 {
                return Err(Error::BadLength);
            }
            Ok(AuthExtension {
                spi: read_u32(&data[..4]),
                authenticator: &data[4..],
            })
        };
        Ok(match ExtensionType::from(kind) {
            ExtensionType::MnHaAuth => Extension::MnHaAuth(auth()?),
            ExtensionType::MnFaAuth => Extension::MnFaAuth(auth()?),
            ExtensionType::FaHaAuth => Extension::FaHaAuth(auth()?),
            ExtensionType::MnNai => Extension::MnNai(data),
            ExtensionType::UdpTunnelRequest => {
                // §3.1.3: a non-zero Reserved 3, or an unknown sub-type, means "not understood":
                // skip it (the type is skippable) rather than fail.
                if data.len() != UDP_TUNNEL_LEN || data[0] != 0 || read_u16(&data[4..6]) != 0 {
                    Extension::Other { kind, data }
                } else {
                    Extension::UdpTunnelRequest(UdpTunnelRequest {
                        force: data[2] & 0x80 != 0,
                        reg_through_fa: data[2] & 0x40 != 0,
                        encapsulation: data[3],
                    })
                }
            }
            ExtensionType::UdpTunnelReply => {
                // Non-skippable: a reply we cannot read must not be half-understood.
                if data.len() != UDP_TUNNEL_LEN {
                    return Err(Error::BadLength);
                }
                if data[0] != 0 {
                    return Err(Error::UnknownMandatoryExtension(kind));
                }
                Extension::UdpTunnelReply(UdpTunnelReply {
                    reply_code: data[1],
                    forced: data[2] & 0x80 != 0,
                    keepalive_interval: read_u16(&data[4..6]),
                })
            }
            ExtensionType::TrustedNetworksConfigured => {
                if data.len() == TNC_LEN && data[0] == 0 {
                    Extension::TrustedNetworksConfigured
                } else {
                    Extension::Other { kind, data }
                }
            }
            ExtensionType::Unknown(k) if ExtensionType::is_skippable(k) => {
                Extension::Other { kind, data }
            }
            ExtensionType::Unknown(k) => return Err(Error::UnknownMandatoryExtension(k)),
        })
    }

    /// The type byte of this extension.
    pub fn kind(&self) -> u8 {
        match self {
            Extension::MnHaAuth(_) => 32,
            Extension::MnFaAuth(_) => 33,
            Extension::FaHaAuth(_) => 34,
            Extension::MnNai(_) => 131,
            Extension::UdpTunnelRequest(_) => 144,
            Extension::UdpTunnelReply(_) => 44,
            Extension::TrustedNetworksConfigured => 149,
            Extension::Other { kind, .. } => *kind,
        }
    }

    /// Whether this is an authentication extension.
    pub fn auth(&self) -> Option<AuthExtension<'a>> {
        match *self {
            Extension::MnHaAuth(a) | Extension::MnFaAuth(a) | Extension::FaHaAuth(a) => Some(a),
            _ => None,
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Extension::MnHaAuth(a) | Extension::MnFaAuth(a) | Extension::FaHaAuth(a) => {
                4 + a.authenticator.len()
            }
            Extension::MnNai(nai) => nai.len(),
            Extension::UdpTunnelRequest(_) | Extension::UdpTunnelReply(_) => UDP_TUNNEL_LEN,
            Extension::TrustedNetworksConfigured => TNC_LEN,
            Extension::Other { data, .. } => data.len(),
        }
    }

    /// Bytes this extension takes on the wire, type and length included.
    pub fn buffer_len(&self) -> usize {
        2 + self.data_len()
    }

    /// Writes the extension at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let data_len = self.data_len();
        if data_len > usize::from(u8::MAX) {
            return Err(Error::BadLength);
        }
        let len = 2 + data_len;
        let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        out[0] = self.kind();
        out[1] = data_len as u8;
        let data = &mut out[2..];
        match self {
            Extension::MnHaAuth(a) | Extension::MnFaAuth(a) | Extension::FaHaAuth(a) => {
                data[..4].copy_from_slice(&a.spi.to_be_bytes());
                data[4..].copy_from_slice(a.authenticator);
            }
            Extension::MnNai(nai) => data.copy_from_slice(nai),
            Extension::UdpTunnelRequest(r) => {
                data.fill(0);
                data[2] = (u8::from(r.force) << 7) | (u8::from(r.reg_through_fa) << 6);
                data[3] = r.encapsulation;
            }
            Extension::UdpTunnelReply(r) => {
                data.fill(0);
                data[1] = r.reply_code;
                data[2] = u8::from(r.forced) << 7;
                data[4..6].copy_from_slice(&r.keepalive_interval.to_be_bytes());
            }
            Extension::TrustedNetworksConfigured => data.fill(0),
            Extension::Other { data: d, .. } => data.copy_from_slice(d),
        }
        Ok(len)
    }
}

/// Iterates over the extensions of a message, yielding each with its offset from the start of
/// the Mobile IP message. Stops after the first error.
#[derive(Clone, Debug)]
pub struct ExtensionIter<'a> {
    message: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> ExtensionIter<'a> {
    /// Iterates over `message[start..]`; offsets are reported relative to `message`.
    pub fn new(message: &'a [u8], start: usize) -> Self {
        ExtensionIter {
            message,
            offset: start,
            failed: false,
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<(usize, Extension<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.message.len() {
            return None;
        }
        let at = self.offset;
        let rest = &self.message[at..];
        let result = (|| {
            let (&kind, rest) = rest.split_first().ok_or(Error::Truncated)?;
            // An unknown mandatory type is reported as such even when its length byte is
            // missing or lies: the message is discarded either way (§1.9).
            if !ExtensionType::is_skippable(kind)
                && matches!(ExtensionType::from(kind), ExtensionType::Unknown(_))
            {
                return Err(Error::UnknownMandatoryExtension(kind));
            }
            let (&len, rest) = rest.split_first().ok_or(Error::Truncated)?;
            let data = rest.get(..usize::from(len)).ok_or(Error::Truncated)?;
            let ext = Extension::parse(kind, data)?;
            Ok((2 + usize::from(len), ext))
        })();
        match result {
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

/// Appends extensions after a message's fixed part.
#[derive(Debug)]
pub struct ExtensionWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> ExtensionWriter<'b> {
    /// A writer over `buf` whose first `len` bytes (the fixed part) are already written.
    pub fn new(buf: &'b mut [u8], len: usize) -> Self {
        ExtensionWriter { buf, len }
    }

    /// Appends `ext`; returns the offset at which it starts.
    pub fn push(&mut self, ext: &Extension<'_>) -> Result<usize> {
        let at = self.len;
        let rest = self.buf.get_mut(at..).ok_or(Error::BufferTooSmall)?;
        self.len += ext.emit(rest)?;
        Ok(at)
    }

    /// Appends an authentication extension of `kind` with a zeroed authenticator of
    /// `auth_len` bytes, to be filled in once the covered bytes are final (RFC 5944 §3.5.1).
    /// Returns the extension's offset.
    pub fn push_auth_placeholder(
        &mut self,
        kind: ExtensionType,
        spi: u32,
        auth_len: usize,
    ) -> Result<usize> {
        let at = self.len;
        let total = AuthExtension::HEADER_LEN + auth_len;
        if 4 + auth_len > usize::from(u8::MAX) {
            return Err(Error::BadLength);
        }
        let out = self
            .buf
            .get_mut(at..at + total)
            .ok_or(Error::BufferTooSmall)?;
        out[0] = kind.into();
        out[1] = (4 + auth_len) as u8;
        out[2..6].copy_from_slice(&spi.to_be_bytes());
        out[6..].fill(0);
        self.len += total;
        Ok(at)
    }

    /// The message length so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written (not even the fixed part).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message written so far.
    pub fn finish(self) -> &'b mut [u8] {
        &mut self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(msg: &[u8]) -> Result<([(usize, u8); 8], usize)> {
        let mut out = [(0, 0); 8];
        let mut n = 0;
        for r in ExtensionIter::new(msg, 0) {
            let (at, e) = r?;
            out[n] = (at, e.kind());
            n += 1;
        }
        Ok((out, n))
    }

    #[test]
    fn skips_unknown_skippable_and_rejects_unknown_mandatory() {
        // 200 (skippable, 1 byte), 149 TNC, then 32 with SPI 0x100 and a 2-byte authenticator.
        let msg = [200, 1, 0xaa, 149, 2, 0, 0, 32, 6, 0, 0, 1, 0, 0xde, 0xad];
        let (exts, n) = all(&msg).unwrap();
        assert_eq!(&exts[..n], &[(0, 200), (3, 149), (7, 32)]);
        let bad = [200, 0, 37, 2, 0, 0];
        assert_eq!(all(&bad).unwrap_err(), Error::UnknownMandatoryExtension(37));
    }

    #[test]
    fn truncated_and_bad_lengths() {
        assert_eq!(all(&[131]).unwrap_err(), Error::Truncated);
        assert_eq!(all(&[131, 5, b'a']).unwrap_err(), Error::Truncated);
        assert_eq!(all(&[32, 3, 0, 0, 0]).unwrap_err(), Error::BadLength);
        assert_eq!(all(&[44, 5, 0, 0, 0, 0, 0]).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn udp_tunnel_request_reserved3_means_not_understood() {
        let ok = [144, 6, 0, 0, 0x80, 4, 0, 0];
        let mut it = ExtensionIter::new(&ok, 0);
        assert_eq!(
            it.next().unwrap().unwrap().1,
            Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: true,
                reg_through_fa: false,
                encapsulation: 4
            })
        );
        let reserved = [144, 6, 0, 0, 0x80, 4, 0, 1];
        let mut it = ExtensionIter::new(&reserved, 0);
        assert!(matches!(
            it.next().unwrap().unwrap().1,
            Extension::Other { kind: 144, .. }
        ));
    }

    #[test]
    fn emit_parse_round_trip() {
        let exts = [
            Extension::MnNai(b"mn@example.com"),
            Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: false,
                reg_through_fa: true,
                encapsulation: 4,
            }),
            Extension::UdpTunnelReply(UdpTunnelReply {
                reply_code: 0,
                forced: true,
                keepalive_interval: 110,
            }),
            Extension::TrustedNetworksConfigured,
            Extension::Other {
                kind: 250,
                data: &[1, 2, 3],
            },
            Extension::MnHaAuth(AuthExtension {
                spi: 0x1234_5678,
                authenticator: &[7; 16],
            }),
        ];
        let mut buf = [0u8; 128];
        let mut w = ExtensionWriter::new(&mut buf, 0);
        for e in &exts {
            w.push(e).unwrap();
        }
        let msg = w.finish();
        let parsed: Result<([(usize, u8); 8], usize)> = all(msg);
        assert_eq!(parsed.unwrap().1, exts.len());
        for (r, e) in ExtensionIter::new(msg, 0).zip(exts.iter()) {
            assert_eq!(&r.unwrap().1, e);
        }
    }

    #[test]
    fn authenticated_range_covers_type_length_spi() {
        assert_eq!(AuthExtension::authenticated_range(24), 0..30);
        assert_eq!(AuthExtension::authenticator_range(24, 16), 30..46);
    }
}
