//! MIP Tunnel Data message (RFC 3519 §3.3): parse → emit → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mipx_common::wire::{MessageType, TunnelDataPacket, TunnelDataRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = TunnelDataPacket::new_checked(data) else {
        // Anything the view rejects is either short or of another type.
        assert!(
            data.len() < TunnelDataRepr::LEN
                || MessageType::of(data) != Some(MessageType::TunnelData)
        );
        return;
    };
    let repr = TunnelDataRepr::parse(&packet).expect("a checked packet parses");
    let payload = packet.payload();
    assert_eq!(payload.len() + TunnelDataRepr::LEN, data.len());

    let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
    repr.emit(&mut buf).expect("fits");
    buf[TunnelDataRepr::LEN..].copy_from_slice(payload);
    // Only the Reserved field (ignored on reception, sent as zero) may differ.
    assert_eq!(buf[..2], data[..2]);
    assert_eq!(buf[2..4], [0, 0]);

    let again = TunnelDataPacket::new_checked(&buf[..]).expect("re-emitted message parses");
    assert_eq!(TunnelDataRepr::parse(&again).expect("parses"), repr);
    assert_eq!(again.payload(), payload);
    assert!(repr.emit(&mut [0u8; TunnelDataRepr::LEN - 1]).is_err());
});
