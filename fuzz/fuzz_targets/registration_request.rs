//! Registration Request (RFC 5944 §3.3): parse → emit → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mipx_common::wire::{RequestPacket, RequestRepr};
use mipx_fuzz::{emit_extensions, extensions_len, parse_extensions};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = RequestPacket::new_checked(data) else {
        return;
    };
    let repr = RequestRepr::parse(&packet).expect("a checked packet parses");
    let _ = repr.to_string();
    let (exts, complete) = parse_extensions(data, RequestRepr::LEN, packet.extensions());

    // Re-emit the fixed part and every extension that parsed (all of them, or the prefix before
    // the first error).
    let mut buf = vec![0u8; repr.buffer_len() + extensions_len(&exts)];
    repr.emit(&mut RequestPacket::new_unchecked(&mut buf[..]))
        .expect("fits");
    emit_extensions(&mut buf, RequestRepr::LEN, &exts);
    // The fixed part has no reserved bits to normalise: it comes back byte for byte, and so does
    // a message whose extensions all parsed, up to reserved bits inside extensions.
    assert_eq!(buf[..RequestRepr::LEN], data[..RequestRepr::LEN]);
    if complete {
        assert_eq!(buf.len(), data.len());
    }

    let again = RequestPacket::new_checked(&buf[..]).expect("re-emitted request parses");
    assert_eq!(RequestRepr::parse(&again).expect("parses"), repr);
    let (exts2, complete2) = parse_extensions(&buf, RequestRepr::LEN, again.extensions());
    assert!(complete2, "re-emitted extensions parse");
    assert_eq!(exts2, exts);

    // The emitter is canonical: emitting what we re-parsed gives the same bytes.
    let mut buf2 = vec![0u8; buf.len()];
    RequestRepr::parse(&again)
        .unwrap()
        .emit(&mut RequestPacket::new_unchecked(&mut buf2[..]))
        .unwrap();
    emit_extensions(&mut buf2, RequestRepr::LEN, &exts2);
    assert_eq!(buf2, buf);
});
