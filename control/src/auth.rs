//! Mobility security associations and the default authenticator, HMAC-MD5
//! (RFC 5944 §3.5.1, §5.1).
//!
//! The wire layer says which bytes are covered ([`AuthExtension::authenticated_range`]); this
//! module computes and checks the authenticator. Keys never appear in `Debug` output or logs.

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use mipx_common::wire::AuthExtension;

/// Length of an HMAC-MD5 authenticator.
pub const AUTHENTICATOR_LEN: usize = 16;

/// A shared secret. `Debug` prints only its length, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(bytes: Vec<u8>) -> Self {
        Key(bytes)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(<{} bytes redacted>)", self.0.len())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Best effort: do not leave the secret in freed memory.
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into our own buffer; the
            // volatile write only stops the compiler from eliding the wipe.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// How the Identification field is checked (RFC 5944 §5.7). Timestamps are mandatory to
/// implement; nonces are optional and not offered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayProtection {
    /// NTP timestamps, accepted within `tolerance` of our clock (§5.7.1; default 7 s).
    Timestamp { tolerance: std::time::Duration },
}

/// A mobility security association (RFC 5944 §1.6): SPI, algorithm (HMAC-MD5, the only one
/// defined), key and replay protection style.
#[derive(Clone, Debug)]
pub struct SecurityAssociation {
    pub spi: u32,
    pub key: Key,
    pub replay: ReplayProtection,
}

type HmacMd5 = Hmac<Md5>;

fn mac(key: &Key, data: &[u8]) -> HmacMd5 {
    // HMAC accepts keys of any length (RFC 2104), so this cannot fail.
    let mut mac = <HmacMd5 as KeyInit>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(data);
    mac
}

/// The HMAC-MD5 authenticator over `data`.
pub fn authenticator(key: &Key, data: &[u8]) -> [u8; AUTHENTICATOR_LEN] {
    mac(key, data).finalize().into_bytes().into()
}

/// Fills in the authenticator of the authentication extension at `ext_offset` in `message`,
/// which must have been written with a zeroed placeholder of [`AUTHENTICATOR_LEN`] bytes.
pub fn sign(message: &mut [u8], ext_offset: usize, key: &Key) {
    let tag = authenticator(
        key,
        &message[AuthExtension::authenticated_range(ext_offset)],
    );
    message[AuthExtension::authenticator_range(ext_offset, AUTHENTICATOR_LEN)]
        .copy_from_slice(&tag);
}

/// Checks, in constant time, the authenticator of the extension at `ext_offset`.
pub fn verify(message: &[u8], ext_offset: usize, authenticator: &[u8], key: &Key) -> bool {
    let Some(covered) = message.get(AuthExtension::authenticated_range(ext_offset)) else {
        return false;
    };
    authenticator.len() == AUTHENTICATOR_LEN
        && mac(key, covered).verify_slice(authenticator).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2202_hmac_md5_vector() {
        // RFC 2202 §2, test case 2.
        let tag = authenticator(&Key::new(b"Jefe".to_vec()), b"what do ya want for nothing?");
        assert_eq!(
            tag,
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
                0xb7, 0x38
            ]
        );
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = Key::new(b"very secret".to_vec());
        let s = format!("{k:?}");
        assert!(!s.contains("secret") && s.contains("11 bytes"));
    }
}
