//! Registration extensions on their own (RFC 5944 §1.9-1.11, §3.5; RFC 2794; RFC 3519 §3.1-3.2;
//! RFC 5265 §3.4): parse → emit → parse, for the list and for each extension alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mipx_common::wire::{ExtensionIter, ExtensionWriter};
use mipx_fuzz::{emit_extensions, extensions_len, parse_extensions};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the extensions start, so that offsets other than 0 (as after
    // a fixed part) are exercised too; the bytes before the start stand for the fixed part.
    let Some((&start, msg)) = data.split_first() else {
        return;
    };
    let start = usize::from(start % 32);
    let (exts, complete) = parse_extensions(msg, start, ExtensionIter::new(msg, start));
    let fixed_len = start.min(msg.len());

    let mut buf = vec![0u8; fixed_len + extensions_len(&exts)];
    buf[..fixed_len].copy_from_slice(&msg[..fixed_len]);
    emit_extensions(&mut buf, fixed_len, &exts);
    if complete {
        assert_eq!(buf.len(), msg.len());
    }
    let (exts2, complete2) = parse_extensions(&buf, fixed_len, ExtensionIter::new(&buf, fixed_len));
    assert!(complete2, "re-emitted extensions parse");
    assert_eq!(exts2, exts);

    // Each extension alone: emit, parse, equal; and a buffer one byte short is an error.
    for (_, e) in &exts {
        let mut one = [0u8; 2 + 255];
        let n = e.emit(&mut one).expect("a parsed extension re-emits");
        assert_eq!(n, e.buffer_len());
        let mut it = ExtensionIter::new(&one[..n], 0);
        assert_eq!(it.next().expect("one").expect("parses"), (0, *e));
        assert!(it.next().is_none());
        let mut short = vec![0u8; n - 1];
        assert!(ExtensionWriter::new(&mut short, 0).push(e).is_err());
    }
});
