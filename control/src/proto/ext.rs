//! What the home agent, the foreign agent and the mobile node do alike with a message's
//! extensions (RFC 5944 §1.9, §3.5): walk them, telling an unknown mandatory extension (silently
//! discarded) from a malformed one (a denial), and append an authentication extension whose
//! authenticator covers everything before it.

use mipx_common::wire::{
    AuthExtension, Error as WireError, Extension, ExtensionIter, ExtensionType, ExtensionWriter,
};

use crate::auth::{self, AUTHENTICATOR_LEN, Key, SecurityAssociation};

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// RFC 5944 §1.9: a type below 128 we do not understand: the message is discarded.
    UnknownMandatory(u8),
    /// Truncated or badly sized: poorly formed.
    Malformed(WireError),
}

/// The extensions after a fixed part of `fixed_len` bytes, each with its offset, in order,
/// stopping at the first error.
pub fn walk(
    bytes: &[u8],
    fixed_len: usize,
) -> impl Iterator<Item = Result<(usize, Extension<'_>), WalkError>> {
    ExtensionIter::new(bytes, fixed_len).map(|item| {
        item.map_err(|e| match e {
            WireError::UnknownMandatoryExtension(kind) => WalkError::UnknownMandatory(kind),
            e => WalkError::Malformed(e),
        })
    })
}

/// Appends an authentication extension of `kind` whose HMAC-MD5 authenticator covers all of
/// `message` before it (RFC 5944 §3.5.1).
pub fn append_auth(message: &mut Vec<u8>, kind: ExtensionType, sa: &SecurityAssociation) {
    let at = message.len();
    message.resize(at + AuthExtension::HEADER_LEN + AUTHENTICATOR_LEN, 0);
    let mut w = ExtensionWriter::new(message, at);
    if w.push_auth_placeholder(kind, sa.spi, AUTHENTICATOR_LEN)
        .is_err()
    {
        // Cannot happen (the buffer was sized for it); never send a half-written extension.
        message.truncate(at);
        return;
    }
    auth::sign(message, at, &sa.key);
}

/// Builds a signed Registration Request or Reply: `fixed` is the already-emitted fixed part,
/// `extensions` go before the Mobile-Home Authentication Extension (RFC 5944 §3.6.1.3,
/// §3.8.3.3: the authorization-enabling extension ends the data it authenticates), whose
/// authenticator is computed over everything before it.
pub fn signed_message(fixed: &[u8], extensions: &[Extension<'_>], spi: u32, key: &Key) -> Vec<u8> {
    let len = fixed.len()
        + extensions.iter().map(|e| e.buffer_len()).sum::<usize>()
        + AuthExtension::HEADER_LEN
        + AUTHENTICATOR_LEN;
    let mut buf = vec![0u8; len];
    buf[..fixed.len()].copy_from_slice(fixed);
    let mut w = ExtensionWriter::new(&mut buf, fixed.len());
    for e in extensions {
        // Lengths were summed above and every extension we build is < 256 bytes of data.
        w.push(e).expect("buffer sized for extensions");
    }
    let at = w
        .push_auth_placeholder(ExtensionType::MnHaAuth, spi, AUTHENTICATOR_LEN)
        .expect("buffer sized for auth");
    auth::sign(&mut buf, at, key);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ReplayProtection;
    use std::time::Duration;

    #[test]
    fn an_appended_authenticator_covers_what_precedes_it() {
        let sa = SecurityAssociation {
            spi: 0x0102_0304,
            key: Key::new(b"fa-ha secret".to_vec()),
            replay: ReplayProtection::Timestamp {
                tolerance: Duration::from_secs(7),
            },
        };
        let fixed = [3u8; 20];
        let mut message = signed_message(&fixed, &[], 0x1000, &Key::new(b"k".to_vec()));
        let mn_ha_end = message.len();
        append_auth(&mut message, ExtensionType::FaHaAuth, &sa);
        let found: Vec<_> = walk(&message, fixed.len())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found.len(), 2);
        let (at, Extension::FaHaAuth(a)) = found[1] else {
            panic!("{found:?}");
        };
        assert_eq!(at, mn_ha_end);
        assert_eq!(a.spi, sa.spi);
        let authenticator = a.authenticator.to_vec();
        assert!(auth::verify(&message, at, &authenticator, &sa.key));
        // Any bit before it changes the authenticator.
        message[0] ^= 1;
        assert!(!auth::verify(&message, at, &authenticator, &sa.key));
    }

    #[test]
    fn a_walk_tells_unknown_mandatory_from_malformed() {
        let fixed = [0u8; 4];
        let unknown = [&fixed[..], &[100, 0]].concat();
        assert_eq!(
            walk(&unknown, 4).next(),
            Some(Err(WalkError::UnknownMandatory(100)))
        );
        // A skippable type (≥ 128) is walked past; a length running off the end is not.
        let truncated = [&fixed[..], &[200, 0], &[32, 9, 0]].concat();
        let items: Vec<_> = walk(&truncated, 4).collect();
        assert!(matches!(items[0], Ok((4, _))), "{items:?}");
        assert!(
            matches!(items[1], Err(WalkError::Malformed(_))),
            "{items:?}"
        );
    }
}
