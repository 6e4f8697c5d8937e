//! Checks shared by the fuzz targets: parse arbitrary bytes; when parsing succeeds, re-emit,
//! re-parse and require equality; and require every offset and range the parsers hand out to
//! lie inside the message.

use mipx_common::wire::{AuthExtension, Extension, ExtensionIter, ExtensionType, ExtensionWriter};

/// The extensions an iterator yields before its first error, and whether it ended cleanly.
/// Also checks the iterator's own invariants: extensions are contiguous from `start`, each one
/// lies inside `msg` with the length its length byte declares, the iterator stays finished after
/// an error, and the authenticator ranges of authentication extensions select the
/// authenticator's bytes.
pub fn parse_extensions<'a>(
    msg: &'a [u8],
    start: usize,
    mut it: ExtensionIter<'a>,
) -> (Vec<(usize, Extension<'a>)>, bool) {
    let mut exts = Vec::new();
    let mut next = start;
    let mut complete = true;
    for r in it.by_ref() {
        match r {
            Ok((at, e)) => {
                assert_eq!(at, next, "extensions are contiguous");
                assert_eq!(msg[at], e.kind());
                assert_eq!(usize::from(msg[at + 1]) + 2, e.buffer_len());
                next = at + e.buffer_len();
                assert!(next <= msg.len());
                if let Some(a) = e.auth() {
                    let covered = AuthExtension::authenticated_range(at);
                    let auth = AuthExtension::authenticator_range(at, a.authenticator.len());
                    assert_eq!(covered.end, auth.start);
                    assert_eq!(auth.end, next);
                    assert_eq!(&msg[auth], a.authenticator);
                }
                exts.push((at, e));
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    assert!(
        it.next().is_none(),
        "the iterator stops after an error or at the end"
    );
    if complete {
        assert_eq!(
            next,
            msg.len().max(start),
            "a clean parse consumes every byte"
        );
    }
    (exts, complete)
}

/// Total wire length of `exts`.
pub fn extensions_len(exts: &[(usize, Extension<'_>)]) -> usize {
    exts.iter().map(|(_, e)| e.buffer_len()).sum()
}

/// Appends `exts` to `buf`, whose first `fixed_len` bytes hold the fixed part; every extension
/// must land at the offset it was parsed from (each re-emits with its parsed length).
/// Authentication extensions are written the way a sender does it, as a placeholder whose
/// authenticator is filled in afterwards through `authenticator_range`.
pub fn emit_extensions(buf: &mut [u8], fixed_len: usize, exts: &[(usize, Extension<'_>)]) {
    let total = buf.len();
    let mut w = ExtensionWriter::new(buf, fixed_len);
    let mut auths = Vec::new();
    for (at, e) in exts {
        let written_at = match (e, e.auth()) {
            (_, Some(a)) => {
                let kind = ExtensionType::from(e.kind());
                let off = w
                    .push_auth_placeholder(kind, a.spi, a.authenticator.len())
                    .expect("placeholder fits");
                auths.push((off, a.authenticator));
                off
            }
            _ => w.push(e).expect("a parsed extension re-emits"),
        };
        assert_eq!(written_at, *at, "re-emitted at the parsed offset");
    }
    assert_eq!(w.len(), total);
    let buf = w.finish();
    for (off, authenticator) in auths {
        buf[AuthExtension::authenticator_range(off, authenticator.len())]
            .copy_from_slice(authenticator);
    }
}
