//! RFC 3519 §4.9 keepalive (tunnel data carrying an ICMP echo): parse → emit → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mipx_common::wire::KeepaliveRepr;

fuzz_target!(|data: &[u8]| {
    let Ok(k) = KeepaliveRepr::parse(data) else {
        return;
    };
    // What parsed re-emits to a message that parses to the same thing, no longer than the
    // input (trailing bytes after the IPv4 Total Length are dropped).
    let mut buf = vec![0u8; k.buffer_len()];
    assert_eq!(k.emit(&mut buf), Ok(buf.len()));
    assert!(buf.len() <= data.len());
    let again = KeepaliveRepr::parse(&buf).expect("re-emitted keepalive parses");
    assert_eq!(again, k);
    assert!(k.emit(&mut vec![0u8; buf.len() - 1]).is_err());
});
