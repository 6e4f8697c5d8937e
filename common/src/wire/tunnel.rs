//! The MIP Tunnel Data message header (RFC 3519 §3.3): what precedes a tunnelled packet in a
//! UDP datagram on the registration's ports.

use super::{Error, MessageType, Result};

mod field {
    pub const TYPE: usize = 0;
    pub const NEXT_HEADER: usize = 1;
    pub const RESERVED: core::ops::Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// A view of a MIP tunnel data message.
#[derive(Debug, Clone)]
pub struct TunnelDataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TunnelDataPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        TunnelDataPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks that the header is present and the type is 4.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        if MessageType::from(b[field::TYPE]) != MessageType::TunnelData {
            return Err(Error::WrongMessageType(b[field::TYPE]));
        }
        Ok(())
    }

    /// The tunnelled protocol (4 = IP-in-UDP, 47 = GRE, 55 = minimal encapsulation).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The tunnelled packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// The tunnel data header's one meaningful field. Reserved bits are sent as zero and ignored on
/// reception (§3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelDataRepr {
    pub next_header: u8,
}

impl TunnelDataRepr {
    pub const LEN: usize = field::PAYLOAD;

    pub fn parse<T: AsRef<[u8]>>(packet: &TunnelDataPacket<T>) -> Result<Self> {
        // Like `RequestRepr::parse`: a view made with `new_unchecked` is checked here, so a
        // short buffer is an error rather than a panic and another message type is rejected.
        packet.check()?;
        Ok(TunnelDataRepr {
            next_header: packet.next_header(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let out = buf.get_mut(..Self::LEN).ok_or(Error::BufferTooSmall)?;
        out[field::TYPE] = MessageType::TunnelData.into();
        out[field::NEXT_HEADER] = self.next_header;
        out[field::RESERVED].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3519_figure() {
        // Type 4, Next Header 4 (IP-in-UDP), Reserved 0, then the inner packet's first byte.
        let msg = [4, 4, 0, 0, 0x45];
        let p = TunnelDataPacket::new_checked(&msg[..]).unwrap();
        assert_eq!(p.next_header(), 4);
        assert_eq!(p.payload(), &[0x45]);
        let mut out = [0xffu8; 4];
        TunnelDataRepr::parse(&p).unwrap().emit(&mut out).unwrap();
        assert_eq!(out, msg[..4]);
        assert_eq!(
            TunnelDataPacket::new_checked(&msg[..3]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            TunnelDataPacket::new_checked(&[1u8, 4, 0, 0][..]).unwrap_err(),
            Error::WrongMessageType(1)
        );
        let unchecked = TunnelDataPacket::new_unchecked(&[1u8, 4, 0, 0][..]);
        assert_eq!(
            TunnelDataRepr::parse(&unchecked).unwrap_err(),
            Error::WrongMessageType(1)
        );
        let short = TunnelDataPacket::new_unchecked(&msg[..1]);
        assert_eq!(TunnelDataRepr::parse(&short).unwrap_err(), Error::Truncated);
    }
}
