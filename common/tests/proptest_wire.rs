//! Property tests for the wire formats:
//!
//! - emit → parse is the identity for arbitrary Registration Request/Reply `Repr`s followed by
//!   arbitrary lists of extensions (every typed variant, and `Other` with a skippable type);
//! - no parser panics on arbitrary bytes, and what the parsers hand out (offsets, authenticator
//!   ranges) stays inside the message.

use core::net::Ipv4Addr;

use mipx_common::wire::ext::{UdpTunnelReply, UdpTunnelRequest};
use mipx_common::wire::{
    AuthExtension, Error, Extension, ExtensionIter, ExtensionType, ExtensionWriter, MessageType,
    ReplyCode, ReplyPacket, ReplyRepr, RequestFlags, RequestPacket, RequestRepr, TunnelDataPacket,
    TunnelDataRepr,
};
use proptest::prelude::*;

/// An owned extension, so strategies can produce values that `Extension<'a>` then borrows.
#[derive(Clone, Debug)]
enum OwnedExt {
    MnHaAuth(u32, Vec<u8>),
    MnFaAuth(u32, Vec<u8>),
    FaHaAuth(u32, Vec<u8>),
    MnNai(Vec<u8>),
    UdpTunnelRequest(UdpTunnelRequest),
    UdpTunnelReply(UdpTunnelReply),
    TrustedNetworksConfigured,
    Other(u8, Vec<u8>),
}

impl OwnedExt {
    fn borrow(&self) -> Extension<'_> {
        use mipx_common::wire::AuthExtension as A;
        match self {
            OwnedExt::MnHaAuth(spi, a) => Extension::MnHaAuth(A {
                spi: *spi,
                authenticator: a,
            }),
            OwnedExt::MnFaAuth(spi, a) => Extension::MnFaAuth(A {
                spi: *spi,
                authenticator: a,
            }),
            OwnedExt::FaHaAuth(spi, a) => Extension::FaHaAuth(A {
                spi: *spi,
                authenticator: a,
            }),
            OwnedExt::MnNai(n) => Extension::MnNai(n),
            OwnedExt::UdpTunnelRequest(r) => Extension::UdpTunnelRequest(*r),
            OwnedExt::UdpTunnelReply(r) => Extension::UdpTunnelReply(*r),
            OwnedExt::TrustedNetworksConfigured => Extension::TrustedNetworksConfigured,
            OwnedExt::Other(kind, data) => Extension::Other { kind: *kind, data },
        }
    }
}

/// Whether `Other { kind, data }` would be read back as a typed extension instead: a skippable
/// type we implement, with contents we understand (RFC 2794 NAI is always understood; RFC 3519
/// §3.1.3 and RFC 5265 §3.4 say when 144 and 149 are not).
fn other_parses_as_typed(kind: u8, data: &[u8]) -> bool {
    match kind {
        131 => true,
        144 => data.len() == 6 && data[0] == 0 && data[4] == 0 && data[5] == 0,
        149 => data.len() == 2 && data[0] == 0,
        _ => false,
    }
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn request_repr() -> impl Strategy<Value = RequestRepr> {
    (
        any::<u8>(),
        any::<u16>(),
        addr(),
        addr(),
        addr(),
        any::<u64>(),
    )
        .prop_map(
            |(flags, lifetime, home_addr, home_agent, care_of_addr, identification)| RequestRepr {
                flags: RequestFlags(flags),
                lifetime,
                home_addr,
                home_agent,
                care_of_addr,
                identification,
            },
        )
}

fn reply_repr() -> impl Strategy<Value = ReplyRepr> {
    (any::<u8>(), any::<u16>(), addr(), addr(), any::<u64>()).prop_map(
        |(code, lifetime, home_addr, home_agent, identification)| ReplyRepr {
            code: ReplyCode::from(code),
            lifetime,
            home_addr,
            home_agent,
            identification,
        },
    )
}

fn extension() -> impl Strategy<Value = OwnedExt> {
    // Data of a short extension is at most 255 bytes: 4 of SPI and up to 251 of authenticator.
    let auth = (any::<u32>(), bytes(251));
    prop_oneof![
        auth.clone().prop_map(|(s, a)| OwnedExt::MnHaAuth(s, a)),
        auth.clone().prop_map(|(s, a)| OwnedExt::MnFaAuth(s, a)),
        auth.prop_map(|(s, a)| OwnedExt::FaHaAuth(s, a)),
        bytes(255).prop_map(OwnedExt::MnNai),
        (any::<bool>(), any::<bool>(), any::<u8>()).prop_map(
            |(force, reg_through_fa, encapsulation)| {
                OwnedExt::UdpTunnelRequest(UdpTunnelRequest {
                    force,
                    reg_through_fa,
                    encapsulation,
                })
            }
        ),
        (any::<u8>(), any::<bool>(), any::<u16>()).prop_map(
            |(reply_code, forced, keepalive_interval)| {
                OwnedExt::UdpTunnelReply(UdpTunnelReply {
                    reply_code,
                    forced,
                    keepalive_interval,
                })
            }
        ),
        Just(OwnedExt::TrustedNetworksConfigured),
        // Short data for 144/149 too, so that their not-understood forms come up often.
        (128u8..=255, prop_oneof![bytes(8), bytes(255)])
            .prop_filter("would parse as a typed extension", |(k, d)| {
                !other_parses_as_typed(*k, d)
            })
            .prop_map(|(k, d)| OwnedExt::Other(k, d)),
    ]
}

fn extensions() -> impl Strategy<Value = Vec<OwnedExt>> {
    prop::collection::vec(extension(), 0..8)
}

/// Appends `exts` after a fixed part of `fixed_len` bytes; returns the offsets the writer
/// reported.
fn write_exts(buf: &mut [u8], fixed_len: usize, exts: &[OwnedExt]) -> Vec<usize> {
    let mut w = ExtensionWriter::new(buf, fixed_len);
    let offsets = exts.iter().map(|e| w.push(&e.borrow()).unwrap()).collect();
    assert_eq!(w.len(), buf.len());
    offsets
}

/// Checks the extensions `it` yields against `exts` written at `offsets`.
fn check_exts<'a>(
    mut it: ExtensionIter<'a>,
    exts: &[OwnedExt],
    offsets: &[usize],
) -> Result<(), TestCaseError> {
    for (e, &off) in exts.iter().zip(offsets) {
        let (at, parsed) = it.next().expect("an extension").expect("parses");
        prop_assert_eq!(at, off);
        prop_assert_eq!(parsed, e.borrow());
    }
    prop_assert!(it.next().is_none());
    Ok(())
}

/// Exercises everything a consumer does with the extensions of an arbitrary message, and checks
/// that every range handed out lies inside it.
fn consume_extensions(msg: &[u8], start: usize, it: ExtensionIter<'_>) {
    let mut last_end = start;
    let mut failed = false;
    let mut it = it;
    for r in it.by_ref() {
        assert!(!failed, "the iterator must stop after an error");
        match r {
            Ok((at, e)) => {
                assert_eq!(at, last_end, "extensions are contiguous");
                let len = e.buffer_len();
                // A parsed extension re-emits within 257 bytes and parses back to itself.
                let mut out = [0u8; 2 + 255];
                let n = e.emit(&mut out).expect("a parsed extension re-emits");
                assert_eq!(n, len);
                let again = ExtensionIter::new(&out[..n], 0).next().unwrap().unwrap();
                assert_eq!(again, (0, e));
                // The wire length of what we parsed is the declared length.
                assert_eq!(usize::from(msg[at + 1]) + 2, len);
                last_end = at + len;
                assert!(last_end <= msg.len());
                assert_eq!(e.kind(), msg[at]);
                if let Some(a) = e.auth() {
                    let covered = AuthExtension::authenticated_range(at);
                    let auth = AuthExtension::authenticator_range(at, a.authenticator.len());
                    assert!(covered.end <= msg.len() && auth.end <= msg.len());
                    assert_eq!(&msg[auth], a.authenticator);
                    assert_eq!(&msg[covered.end - 4..covered.end], &a.spi.to_be_bytes());
                }
            }
            Err(_) => failed = true,
        }
    }
    assert!(it.next().is_none());
    if !failed {
        assert_eq!(
            last_end,
            msg.len().max(start),
            "a clean parse consumes the whole message"
        );
    }
}

fn parse_everything(msg: &[u8]) {
    let _ = MessageType::of(msg);
    if let Ok(p) = RequestPacket::new_checked(msg) {
        let r = RequestRepr::parse(&p).unwrap();
        let _ = r.to_string();
        let _ = r.is_deregistration();
        consume_extensions(msg, RequestRepr::LEN, p.extensions());
    }
    if let Ok(p) = ReplyPacket::new_checked(msg) {
        let r = ReplyRepr::parse(&p).unwrap();
        let _ = r.to_string();
        consume_extensions(msg, ReplyRepr::LEN, p.extensions());
    }
    if let Ok(p) = TunnelDataPacket::new_checked(msg) {
        let r = TunnelDataRepr::parse(&p).unwrap();
        assert_eq!(p.payload(), &msg[TunnelDataRepr::LEN..]);
        let mut out = [0u8; TunnelDataRepr::LEN];
        r.emit(&mut out).unwrap();
        assert_eq!(out[..2], msg[..2]);
    }
    // `Repr::parse` re-checks what `new_checked` checks, so parsing an unchecked view of any
    // bytes fails the same way instead of panicking.
    parse_unchecked_agrees(msg);
    // Extensions alone, from any start, as the fuzz target does.
    for start in [0, 1, msg.len() / 2, msg.len(), msg.len() + 1] {
        consume_extensions(msg, start, ExtensionIter::new(msg, start));
    }
}

fn parse_unchecked_agrees(msg: &[u8]) {
    assert_eq!(
        RequestRepr::parse(&RequestPacket::new_unchecked(msg)).err(),
        RequestPacket::new_checked(msg).err()
    );
    assert_eq!(
        ReplyRepr::parse(&ReplyPacket::new_unchecked(msg)).err(),
        ReplyPacket::new_checked(msg).err()
    );
    assert_eq!(
        TunnelDataRepr::parse(&TunnelDataPacket::new_unchecked(msg)).err(),
        TunnelDataPacket::new_checked(msg).err()
    );
}

/// Bytes that often get past the type check: a Mobile IP type byte, a fixed part, then a
/// sequence of TLVs whose lengths may lie, among them every type we implement.
fn plausible_message() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        Just(32u8),
        Just(33),
        Just(34),
        Just(44),
        Just(131),
        Just(144),
        Just(149),
        any::<u8>(),
    ];
    let tlv = (kind, any::<u8>(), bytes(24), any::<bool>()).prop_map(|(k, len, data, honest)| {
        let mut v = vec![k, if honest { data.len() as u8 } else { len }];
        v.extend_from_slice(&data);
        v
    });
    (
        prop_oneof![Just(1u8), Just(3), Just(4), any::<u8>()],
        bytes(23).prop_filter("fixed part", |b| b.len() >= 19),
        prop::collection::vec(tlv, 0..6),
        bytes(3),
    )
        .prop_map(|(t, fixed, tlvs, tail)| {
            let mut v = vec![t];
            v.extend_from_slice(&fixed);
            for tlv in tlvs {
                v.extend_from_slice(&tlv);
            }
            v.extend_from_slice(&tail);
            v.truncate(300);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn request_emit_parse(repr in request_repr(), exts in extensions()) {
        let len = repr.buffer_len() + exts.iter().map(|e| e.borrow().buffer_len()).sum::<usize>();
        let mut buf = vec![0u8; len];
        repr.emit(&mut RequestPacket::new_unchecked(&mut buf[..])).unwrap();
        let offsets = write_exts(&mut buf, RequestRepr::LEN, &exts);

        let p = RequestPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(RequestRepr::parse(&p).unwrap(), repr);
        check_exts(p.extensions(), &exts, &offsets)?;
    }

    #[test]
    fn reply_emit_parse(repr in reply_repr(), exts in extensions()) {
        let len = repr.buffer_len() + exts.iter().map(|e| e.borrow().buffer_len()).sum::<usize>();
        let mut buf = vec![0u8; len];
        repr.emit(&mut ReplyPacket::new_unchecked(&mut buf[..])).unwrap();
        let offsets = write_exts(&mut buf, ReplyRepr::LEN, &exts);

        let p = ReplyPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ReplyRepr::parse(&p).unwrap(), repr);
        check_exts(p.extensions(), &exts, &offsets)?;
    }

    #[test]
    fn tunnel_data_emit_parse(next_header in any::<u8>(), payload in bytes(64)) {
        let repr = TunnelDataRepr { next_header };
        let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
        repr.emit(&mut buf).unwrap();
        buf[TunnelDataRepr::LEN..].copy_from_slice(&payload);
        let p = TunnelDataPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(TunnelDataRepr::parse(&p).unwrap(), repr);
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    /// A buffer one byte short fails with `BufferTooSmall` (or `BadLength`), never panics, and
    /// an auth placeholder is the same bytes as the extension with a zero authenticator.
    #[test]
    fn short_buffers_and_placeholders(repr in request_repr(), exts in extensions(), spi in any::<u32>(), auth_len in 0usize..=260) {
        let len = repr.buffer_len() + exts.iter().map(|e| e.borrow().buffer_len()).sum::<usize>();
        if len > RequestRepr::LEN {
            let mut buf = vec![0u8; len - 1];
            repr.emit(&mut RequestPacket::new_unchecked(&mut buf[..])).unwrap();
            let mut w = ExtensionWriter::new(&mut buf, RequestRepr::LEN);
            let mut err = None;
            for e in &exts {
                if let Err(e) = w.push(&e.borrow()) {
                    err = Some(e);
                    break;
                }
            }
            prop_assert_eq!(err, Some(Error::BufferTooSmall));
        }
        let mut short = [0u8; RequestRepr::LEN - 1];
        prop_assert_eq!(repr.emit(&mut RequestPacket::new_unchecked(&mut short[..])), Err(Error::BufferTooSmall));

        let mut a = vec![0u8; 6 + auth_len];
        let mut b = vec![0u8; 6 + auth_len];
        let zero = vec![0u8; auth_len];
        let placeholder = ExtensionWriter::new(&mut a, 0).push_auth_placeholder(ExtensionType::FaHaAuth, spi, auth_len);
        let pushed = ExtensionWriter::new(&mut b, 0)
            .push(&Extension::FaHaAuth(AuthExtension { spi, authenticator: &zero }));
        prop_assert_eq!(placeholder, pushed);
        if auth_len <= 251 {
            prop_assert_eq!(placeholder, Ok(0));
            prop_assert_eq!(a, b);
        } else {
            prop_assert_eq!(placeholder, Err(Error::BadLength));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(msg in bytes(300)) {
        parse_everything(&msg);
    }

    #[test]
    fn plausible_bytes_never_panic(msg in plausible_message()) {
        parse_everything(&msg);
    }
}

// ---- Agent discovery (RFC 5944 §2) ---------------------------------------------------------

mod agent_discovery {
    use core::net::Ipv4Addr;

    use mipx_common::wire::agent::MAX_CARE_OF_ADDRS;
    use mipx_common::wire::{
        AdvertCode, AdvertExtensionIter, AgentAdvertisementPacket, AgentAdvertisementRepr,
        AgentError, AgentFlags, AgentSolicitationPacket, AgentSolicitationRepr, CareOfAddrs, Error,
        RouterAddr, RouterAddrs,
    };
    use proptest::prelude::*;

    use super::{addr, bytes};

    /// The owned parts of an advertisement, which `AgentAdvertisementRepr` then borrows.
    #[derive(Clone, Debug)]
    struct OwnedAdvert {
        code: AdvertCode,
        lifetime: u16,
        routers: Vec<RouterAddr>,
        sequence: u16,
        registration_lifetime: u16,
        flags: u16,
        care_of: Vec<Ipv4Addr>,
        prefix_lengths: Option<Vec<u8>>,
        challenge: Option<Vec<u8>>,
        even: bool,
    }

    impl OwnedAdvert {
        fn repr(&self) -> AgentAdvertisementRepr<'_> {
            let r = AgentAdvertisementRepr {
                code: self.code,
                lifetime: self.lifetime,
                router_addrs: RouterAddrs::from_slice(&self.routers),
                sequence: self.sequence,
                registration_lifetime: self.registration_lifetime,
                flags: AgentFlags(self.flags),
                care_of_addrs: CareOfAddrs::from_slice(&self.care_of),
                prefix_lengths: self.prefix_lengths.as_deref(),
                challenge: self.challenge.as_deref(),
                padding: false,
            };
            if self.even { r.with_even_length() } else { r }
        }
    }

    fn advert() -> impl Strategy<Value = OwnedAdvert> {
        let router = || {
            (addr(), any::<i32>()).prop_map(|(addr, preference)| RouterAddr { addr, preference })
        };
        (
            (
                prop_oneof![Just(AdvertCode::Router), Just(AdvertCode::MobilityOnly)],
                any::<u16>(),
                prop_oneof![
                    prop::collection::vec(router(), 0..4),
                    prop::collection::vec(router(), 0..=255)
                ],
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
            ),
            (
                prop::collection::vec(addr(), 0..=MAX_CARE_OF_ADDRS),
                any::<bool>(),
                prop::option::of(bytes(255)),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (code, lifetime, routers, sequence, registration_lifetime, flags),
                    (care_of, with_prefix, challenge, even),
                )| {
                    let prefix_lengths =
                        with_prefix.then(|| routers.iter().map(|r| r.preference as u8).collect());
                    OwnedAdvert {
                        code,
                        lifetime,
                        routers,
                        sequence,
                        registration_lifetime,
                        flags,
                        care_of,
                        prefix_lengths,
                        challenge,
                        even,
                    }
                },
            )
    }

    fn parse(msg: &[u8]) -> Result<AgentAdvertisementRepr<'_>, AgentError> {
        AgentAdvertisementRepr::parse(&AgentAdvertisementPacket::new_unchecked(msg))
    }

    /// An ICMP Router Advertisement header with a correct checksum around arbitrary entries and
    /// TLVs (every type we implement among them, lengths that may lie), so that generated
    /// bytes get past the checksum into the extension parser.
    fn plausible_advert() -> impl Strategy<Value = Vec<u8>> {
        let kind = prop_oneof![Just(0u8), Just(16), Just(19), Just(24), any::<u8>()];
        let tlv =
            (kind, any::<u8>(), bytes(24), any::<bool>()).prop_map(|(k, len, data, honest)| {
                let mut v = vec![k, if honest { data.len() as u8 } else { len }];
                v.extend_from_slice(&data);
                v
            });
        // A well-formed Mobility Agent Advertisement Extension (Length 6 + 4N), often first.
        let ma = (0usize..4, bytes(6 + 12)).prop_map(|(n, data)| {
            let len = (6 + 4 * n).min(data.len() / 4 * 4 + 2).max(6);
            let mut v = vec![16, len as u8];
            v.extend((0..len).map(|i| data.get(i).copied().unwrap_or(0)));
            v
        });
        (
            0u8..4,
            prop_oneof![3 => Just(2u8), 1 => Just(3), 1 => any::<u8>()],
        )
            .prop_flat_map(move |(num, size)| {
                let exact = usize::from(num) * usize::from(size) * 4;
                (
                    prop_oneof![Just(0u8), Just(16), any::<u8>()],
                    Just(num),
                    Just(size),
                    // Mostly exactly Num Addrs entries, sometimes a lying count.
                    prop_oneof![
                        3 => prop::collection::vec(any::<u8>(), exact.min(48)),
                        1 => bytes(40)
                    ],
                    prop::option::of(ma.clone()),
                    prop::collection::vec(tlv.clone(), 0..5),
                )
            })
            .prop_map(|(code, num, size, entries, ma, tlvs)| {
                let mut v = vec![9, code, 0, 0, num, size, 0, 30];
                v.extend_from_slice(&entries);
                v.extend(ma.into_iter().flatten());
                for t in tlvs {
                    v.extend_from_slice(&t);
                }
                let mut p = AgentAdvertisementPacket::new_unchecked(&mut v[..]);
                p.fill_checksum();
                v
            })
    }

    /// Whatever parses re-emits, within `buffer_len`, to bytes that parse to the same value.
    fn parse_reemit(msg: &[u8]) {
        let checked = AgentAdvertisementPacket::new_checked(msg);
        let unchecked = parse(msg);
        if let Err(e) = &checked {
            assert_eq!(unchecked, Err(AgentError::Wire(*e)));
        }
        if let Ok(p) = &checked {
            // The iterator's offsets stay inside the message and are contiguous.
            let mut end = p.extensions_offset();
            for item in AdvertExtensionIter::new(msg, p.extensions_offset()) {
                match item {
                    Ok((at, e)) => {
                        assert_eq!(at, end);
                        end = at
                            + if e.kind() == 0 {
                                1
                            } else {
                                2 + usize::from(msg[at + 1])
                            };
                        assert!(end <= msg.len());
                    }
                    Err(_) => break,
                }
            }
            let _ = p.router_addrs().iter().count();
        }
        if let Ok(a) = unchecked {
            let _ = a.to_string();
            let _ = a.validate();
            let mut out = vec![0u8; a.buffer_len()];
            assert_eq!(a.emit(&mut out), Ok(out.len()));
            assert_eq!(parse(&out), Ok(a));
        }
        if let Ok(p) = AgentSolicitationPacket::new_checked(msg) {
            let _ = AgentSolicitationRepr::parse(&p);
        }
        let _ = AgentSolicitationRepr::parse(&AgentSolicitationPacket::new_unchecked(msg));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn advert_emit_parse(owned in advert()) {
            let repr = owned.repr();
            let mut buf = vec![0u8; repr.buffer_len()];
            prop_assert_eq!(repr.emit(&mut buf), Ok(buf.len()));
            if owned.even {
                prop_assert_eq!(buf.len() % 2, 0);
            }
            let parsed = parse(&buf).unwrap();
            // Reserved flag bits are sent as zero and ignored on reception (§2.1.1, §2.4).
            prop_assert_eq!(parsed, AgentAdvertisementRepr { flags: repr.flags.defined(), ..repr });
            prop_assert_eq!(parsed.care_of_addrs.first(), owned.care_of.first().copied());
            // One byte short is an error, not a panic.
            let mut short = vec![0u8; buf.len() - 1];
            prop_assert_eq!(repr.emit(&mut short), Err(Error::BufferTooSmall));
        }

        #[test]
        fn solicitation_emit_parse(reserved in any::<u32>()) {
            let mut buf = [0u8; 8];
            AgentSolicitationRepr.emit(&mut buf).unwrap();
            let p = AgentSolicitationPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(AgentSolicitationRepr::parse(&p), Ok(AgentSolicitationRepr));
            // Non-zero reserved bytes (with a checksum that covers them) are ignored.
            buf[4..8].copy_from_slice(&reserved.to_be_bytes());
            buf[2..4].fill(0);
            let ck = mipx_common::ipv4::checksum(&buf);
            buf[2..4].copy_from_slice(&ck.to_be_bytes());
            let p = AgentSolicitationPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(AgentSolicitationRepr::parse(&p), Ok(AgentSolicitationRepr));
        }

        #[test]
        fn agent_arbitrary_bytes_never_panic(msg in bytes(300)) {
            parse_reemit(&msg);
        }

        #[test]
        fn agent_plausible_bytes_never_panic(msg in plausible_advert()) {
            parse_reemit(&msg);
        }
    }
}
