//! Independent fixtures (DESIGN.md §1.7): bytes produced by scapy and Python's `struct`/`hmac`
//! (`common/fixtures/gen_scapy.py`, see `common/fixtures/README.md`), never by our emitter.
//!
//! Each test parses a fixture, checks every field against the values the generator used, checks
//! that the authenticated byte ranges are exactly those the generator hashed (the expected
//! HMAC-MD5 values below were printed by the generator; `common` does no crypto, so they are
//! compared, not recomputed), and re-emits the message through the `Repr`s and
//! `ExtensionWriter` to get the fixture back byte for byte.

use core::net::Ipv4Addr;

use mipx_common::wire::ext::{UdpTunnelReply, UdpTunnelRequest};
use mipx_common::wire::{
    AuthExtension, Extension, ExtensionWriter, ReplyCode, ReplyPacket, ReplyRepr, RequestFlags,
    RequestPacket, RequestRepr, TunnelDataPacket, TunnelDataRepr,
};

const RRQ_MN_HA: &[u8] = include_bytes!("../fixtures/rrq_mn_ha.bin");
const RRP_CODE133: &[u8] = include_bytes!("../fixtures/rrp_code133.bin");
const RRQ_NAI_UDP_TUNNEL: &[u8] = include_bytes!("../fixtures/rrq_nai_udp_tunnel.bin");
const RRP_UDP_TUNNEL_TNC: &[u8] = include_bytes!("../fixtures/rrp_udp_tunnel_tnc.bin");
const RRQ_FA_RELAYED: &[u8] = include_bytes!("../fixtures/rrq_fa_relayed.bin");
const TUNNEL_DATA_IPIP: &[u8] = include_bytes!("../fixtures/tunnel_data_ipip.bin");

/// SPIs of the generator's mobility security associations.
const MN_HA_SPI: u32 = 0x1000;
const FA_HA_SPI: u32 = 0x2000;

/// HMAC-MD5 authenticators as printed by `gen_scapy.py` (MN-HA key "mipx fixture key",
/// FA-HA key "mipx fa-ha key!!"), each over the message up to and including the extension's
/// SPI (RFC 5944 §3.5.1).
const RRQ_MN_HA_AUTH: &str = "e212e1053ec11817a7153efb2c46d8a5";
const RRP_CODE133_AUTH: &str = "c5572aa961f00377edcdaf3f02603a85";
const RRQ_NAI_UDP_TUNNEL_AUTH: &str = "24f5ad350f89305e1d571a6b3085fed6";
const RRP_UDP_TUNNEL_TNC_AUTH: &str = "db8693cba19815bf88868e23c6a57a28";
const RRQ_FA_RELAYED_MN_HA_AUTH: &str = "105b45737b2b1ea6c33a89c8ec0e4097";
const RRQ_FA_RELAYED_FA_HA_AUTH: &str = "c3339fbed4443bdcd916bf98383e698e";

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// All extensions of a message, with their offsets; panics on a parse error.
fn collect<'a>(
    it: impl Iterator<Item = mipx_common::wire::Result<(usize, Extension<'a>)>>,
) -> Vec<(usize, Extension<'a>)> {
    it.map(|r| r.expect("fixture extension parses")).collect()
}

/// Checks an authentication extension found at `at` in `msg`: the covered range is exactly the
/// `hashed_len` bytes the generator fed to HMAC-MD5 (everything before the extension plus its
/// type, length and SPI), and the authenticator bytes are the generator's HMAC.
fn check_auth(
    msg: &[u8],
    at: usize,
    auth: &AuthExtension<'_>,
    kind: u8,
    spi: u32,
    hashed_len: usize,
    hmac_hex: &str,
) {
    let expected = unhex(hmac_hex);
    assert_eq!(auth.spi, spi);
    assert_eq!(auth.authenticator, &expected[..]);

    let covered = AuthExtension::authenticated_range(at);
    assert_eq!(covered, 0..hashed_len, "authenticated range");
    // The covered bytes end with this extension's type, length and SPI, in that order.
    let tail = &msg[covered.end - AuthExtension::HEADER_LEN..covered.end];
    assert_eq!(tail[0], kind);
    assert_eq!(usize::from(tail[1]), 4 + expected.len());
    assert_eq!(&tail[2..], &spi.to_be_bytes());

    let auth_range = AuthExtension::authenticator_range(at, auth.authenticator.len());
    assert_eq!(auth_range, hashed_len..hashed_len + 16);
    assert_eq!(&msg[auth_range], &expected[..]);
}

fn reemit_request(repr: &RequestRepr, exts: &[(usize, Extension<'_>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    repr.emit(&mut RequestPacket::new_unchecked(&mut buf[..]))
        .unwrap();
    let mut w = ExtensionWriter::new(&mut buf, repr.buffer_len());
    for (at, e) in exts {
        assert_eq!(w.push(e).unwrap(), *at, "re-emitted extension offset");
    }
    w.finish().to_vec()
}

fn reemit_reply(repr: &ReplyRepr, exts: &[(usize, Extension<'_>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    repr.emit(&mut ReplyPacket::new_unchecked(&mut buf[..]))
        .unwrap();
    let mut w = ExtensionWriter::new(&mut buf, repr.buffer_len());
    for (at, e) in exts {
        assert_eq!(w.push(e).unwrap(), *at, "re-emitted extension offset");
    }
    w.finish().to_vec()
}

#[test]
fn rrq_mn_ha() {
    let msg = RRQ_MN_HA;
    assert_eq!(msg.len(), 46);
    let p = RequestPacket::new_checked(msg).unwrap();
    let r = RequestRepr::parse(&p).unwrap();
    assert_eq!(r.flags, RequestFlags(RequestFlags::D | RequestFlags::T));
    assert_eq!(r.lifetime, 1800);
    assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 5));
    assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(r.care_of_addr, Ipv4Addr::new(192, 0, 2, 7));
    assert_eq!(r.identification, 0xe8f1_c2a3_5a5a_0001);
    assert!(!r.is_deregistration());

    let exts = collect(p.extensions());
    assert_eq!(exts.len(), 1);
    let (at, Extension::MnHaAuth(a)) = exts[0] else {
        panic!("{:?}", exts[0])
    };
    assert_eq!(at, 24);
    check_auth(msg, at, &a, 32, MN_HA_SPI, 30, RRQ_MN_HA_AUTH);

    assert_eq!(reemit_request(&r, &exts), msg);
}

#[test]
fn rrp_code133() {
    let msg = RRP_CODE133;
    assert_eq!(msg.len(), 56);
    let p = ReplyPacket::new_checked(msg).unwrap();
    let r = ReplyRepr::parse(&p).unwrap();
    assert_eq!(r.code, ReplyCode::HaIdentificationMismatch);
    assert!(!r.code.is_accepted());
    assert_eq!(r.lifetime, 0);
    assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 5));
    assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(r.identification, 0xe8f1_c2b0_5a5a_0001);

    let exts = collect(p.extensions());
    assert_eq!(exts.len(), 2);
    // RFC 4917 Message String (145): skippable and not interpreted, so kept as `Other`
    // (sub-type 1, then the text).
    assert_eq!(
        exts[0],
        (
            20,
            Extension::Other {
                kind: 145,
                data: b"\x01id mismatch"
            }
        )
    );
    let (at, Extension::MnHaAuth(a)) = exts[1] else {
        panic!("{:?}", exts[1])
    };
    assert_eq!(at, 34);
    check_auth(msg, at, &a, 32, MN_HA_SPI, 40, RRP_CODE133_AUTH);

    assert_eq!(reemit_reply(&r, &exts), msg);
}

#[test]
fn rrq_nai_udp_tunnel() {
    let msg = RRQ_NAI_UDP_TUNNEL;
    assert_eq!(msg.len(), 71);
    let p = RequestPacket::new_checked(msg).unwrap();
    let r = RequestRepr::parse(&p).unwrap();
    assert_eq!(r.flags, RequestFlags(0x22));
    assert!(r.flags.contains(RequestFlags::D) && r.flags.contains(RequestFlags::T));
    assert_eq!(r.lifetime, 600);
    assert_eq!(r.home_addr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(r.care_of_addr, Ipv4Addr::new(192, 168, 1, 20));
    assert_eq!(r.identification, 0xe8f1_c300_0000_0007);

    let exts = collect(p.extensions());
    assert_eq!(exts.len(), 3);
    assert_eq!(exts[0], (24, Extension::MnNai(b"mn1@example.com")));
    assert_eq!(
        exts[1],
        (
            41,
            Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: true,
                reg_through_fa: false,
                encapsulation: 4
            })
        )
    );
    let (at, Extension::MnHaAuth(a)) = exts[2] else {
        panic!("{:?}", exts[2])
    };
    assert_eq!(at, 49);
    // RFC 3519 §4.1: the MN's UDP Tunnel Request precedes MN-HA, so it is covered.
    check_auth(msg, at, &a, 32, MN_HA_SPI, 55, RRQ_NAI_UDP_TUNNEL_AUTH);

    assert_eq!(reemit_request(&r, &exts), msg);
}

#[test]
fn rrp_udp_tunnel_tnc() {
    let msg = RRP_UDP_TUNNEL_TNC;
    assert_eq!(msg.len(), 54);
    let p = ReplyPacket::new_checked(msg).unwrap();
    let r = ReplyRepr::parse(&p).unwrap();
    assert_eq!(r.code, ReplyCode::Accepted);
    assert!(r.code.is_accepted());
    assert_eq!(r.lifetime, 600);
    assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 42));
    assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(r.identification, 0xe8f1_c301_0000_0007);

    let exts = collect(p.extensions());
    assert_eq!(exts.len(), 3);
    assert_eq!(
        exts[0],
        (
            20,
            Extension::UdpTunnelReply(UdpTunnelReply {
                reply_code: 0,
                forced: true,
                keepalive_interval: 110
            })
        )
    );
    assert_eq!(exts[1], (28, Extension::TrustedNetworksConfigured));
    let (at, Extension::MnHaAuth(a)) = exts[2] else {
        panic!("{:?}", exts[2])
    };
    assert_eq!(at, 32);
    check_auth(msg, at, &a, 32, MN_HA_SPI, 38, RRP_UDP_TUNNEL_TNC_AUTH);

    assert_eq!(reemit_reply(&r, &exts), msg);
}

#[test]
fn rrq_fa_relayed() {
    let msg = RRQ_FA_RELAYED;
    assert_eq!(msg.len(), 93);
    let p = RequestPacket::new_checked(msg).unwrap();
    let r = RequestRepr::parse(&p).unwrap();
    assert_eq!(r.flags, RequestFlags(RequestFlags::T));
    assert_eq!(r.lifetime, 1800);
    assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 5));
    assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(r.care_of_addr, Ipv4Addr::new(203, 0, 113, 1));
    assert_eq!(r.identification, 0xe8f1_c400_0000_0001);

    let exts = collect(p.extensions());
    assert_eq!(exts.len(), 4);
    assert_eq!(exts[0], (24, Extension::MnNai(b"mn1@example.com")));
    let (at_mh, Extension::MnHaAuth(mh)) = exts[1] else {
        panic!("{:?}", exts[1])
    };
    assert_eq!(at_mh, 41);
    assert_eq!(
        exts[2],
        (
            63,
            Extension::UdpTunnelRequest(UdpTunnelRequest {
                force: false,
                reg_through_fa: false,
                encapsulation: 0
            })
        )
    );
    let (at_fh, Extension::FaHaAuth(fh)) = exts[3] else {
        panic!("{:?}", exts[3])
    };
    assert_eq!(at_fh, 71);

    // MN-HA covers only what the mobile node sent; the FA's extensions come after it.
    check_auth(
        msg,
        at_mh,
        &mh,
        32,
        MN_HA_SPI,
        47,
        RRQ_FA_RELAYED_MN_HA_AUTH,
    );
    assert!(AuthExtension::authenticated_range(at_mh).end <= exts[2].0);
    // FA-HA covers everything before it, including the whole MN-HA extension (§3.5.1).
    check_auth(
        msg,
        at_fh,
        &fh,
        34,
        FA_HA_SPI,
        77,
        RRQ_FA_RELAYED_FA_HA_AUTH,
    );
    assert!(
        AuthExtension::authenticated_range(at_fh)
            .contains(&AuthExtension::authenticator_range(at_mh, 16).end)
    );

    assert_eq!(reemit_request(&r, &exts), msg);
}

#[test]
fn tunnel_data_ipip() {
    let msg = TUNNEL_DATA_IPIP;
    assert_eq!(msg.len(), 36);
    let p = TunnelDataPacket::new_checked(msg).unwrap();
    let r = TunnelDataRepr::parse(&p).unwrap();
    assert_eq!(r, TunnelDataRepr { next_header: 4 });
    assert_eq!(p.next_header(), 4);

    // The inner packet scapy built: IPv4, IHL 5, total length 32, id 0x1234, TTL 64, ICMP,
    // 10.1.0.5 -> 198.51.100.9, then an echo request (id 0x4d49, seq 1) carrying "mipx".
    let inner = p.payload();
    assert_eq!(inner.len(), 32);
    assert_eq!(inner[0], 0x45);
    assert_eq!(u16::from_be_bytes([inner[2], inner[3]]), 32);
    assert_eq!(u16::from_be_bytes([inner[4], inner[5]]), 0x1234);
    assert_eq!(inner[8], 64);
    assert_eq!(inner[9], 1);
    assert_eq!(&inner[12..16], &[10, 1, 0, 5]);
    assert_eq!(&inner[16..20], &[198, 51, 100, 9]);
    assert_eq!(&inner[20..22], &[8, 0]);
    assert_eq!(&inner[24..28], &[0x4d, 0x49, 0, 1]);
    assert_eq!(&inner[28..], b"mipx");

    let mut out = vec![0xffu8; r.buffer_len() + inner.len()];
    r.emit(&mut out).unwrap();
    out[TunnelDataRepr::LEN..].copy_from_slice(inner);
    assert_eq!(out, msg);
}

// ---- Agent discovery (RFC 5944 §2): ICMP messages built by scapy's ICMP layer and `struct` ----

mod agent_discovery {
    use core::net::Ipv4Addr;

    use mipx_common::ipv4;
    use mipx_common::wire::{
        AdvertCode, AdvertExtension, AgentAdvertisementPacket, AgentAdvertisementRepr, AgentError,
        AgentFlags, AgentSolicitationPacket, AgentSolicitationRepr, CareOfAddrs, RouterAddr,
        RouterAddrs,
    };

    const AGENT_ADV_FA: &[u8] = include_bytes!("../fixtures/agent_adv_fa.bin");
    const AGENT_ADV_HA: &[u8] = include_bytes!("../fixtures/agent_adv_ha.bin");
    const AGENT_SOLICITATION: &[u8] = include_bytes!("../fixtures/agent_solicitation.bin");
    const ROUTER_ADV_PLAIN: &[u8] = include_bytes!("../fixtures/router_adv_plain.bin");

    fn parse(msg: &[u8]) -> Result<AgentAdvertisementRepr<'_>, AgentError> {
        AgentAdvertisementRepr::parse(&AgentAdvertisementPacket::new_checked(msg)?)
    }

    fn reemit(repr: &AgentAdvertisementRepr<'_>) -> Vec<u8> {
        let mut out = vec![0xa5u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out), Ok(out.len()));
        out
    }

    #[test]
    fn agent_adv_fa() {
        let msg = AGENT_ADV_FA;
        assert_eq!(msg.len(), 54);
        let p = AgentAdvertisementPacket::new_checked(msg).unwrap();
        // scapy computed the checksum; it verifies (the sum over the message folds to zero).
        assert!(p.verify_checksum());
        assert_eq!(ipv4::checksum(msg), 0);
        assert_eq!((p.code(), p.num_addrs(), p.addr_entry_size()), (0, 3, 2));
        assert_eq!(p.lifetime(), 1800);
        assert_eq!(p.extensions_offset(), 8 + 3 * 8);
        let kinds: Vec<(usize, u8)> = p
            .extensions()
            .map(|e| e.map(|(at, e)| (at, e.kind())).unwrap())
            .collect();
        assert_eq!(kinds, [(32, 16), (48, 19), (53, 0)]);

        let a = parse(msg).unwrap();
        let routers = [
            RouterAddr {
                addr: Ipv4Addr::new(192, 0, 2, 1),
                preference: 0,
            },
            RouterAddr {
                addr: Ipv4Addr::new(198, 51, 100, 1),
                preference: 10,
            },
            RouterAddr {
                addr: Ipv4Addr::new(203, 0, 113, 1),
                preference: i32::MIN,
            },
        ];
        let coas = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1)];
        let expected = AgentAdvertisementRepr {
            code: AdvertCode::Router,
            lifetime: 1800,
            router_addrs: RouterAddrs::from_slice(&routers),
            sequence: 257,
            registration_lifetime: 600,
            flags: AgentFlags(AgentFlags::R | AgentFlags::F | AgentFlags::T),
            care_of_addrs: CareOfAddrs::from_slice(&coas),
            prefix_lengths: Some(&[24, 25, 28]),
            challenge: None,
            padding: true,
        };
        assert_eq!(a, expected);
        assert_eq!(a.router_addrs.iter().collect::<Vec<_>>(), routers);
        assert_eq!(a.care_of_addrs.iter().collect::<Vec<_>>(), coas);
        assert!(a.flags.contains(AgentFlags::R));
        assert!(!a.flags.contains(AgentFlags::B));
        assert!(!a.flags.contains(AgentFlags::H));
        assert_eq!(a.validate(), Ok(()));
        // The generator added the padding because the length was odd: so does ours.
        assert_eq!(
            AgentAdvertisementRepr {
                padding: false,
                ..expected
            }
            .with_even_length(),
            expected
        );

        assert_eq!(reemit(&a), msg);
        assert_eq!(reemit(&expected), msg);
    }

    #[test]
    fn agent_adv_ha() {
        let msg = AGENT_ADV_HA;
        assert_eq!(msg.len(), 24);
        let p = AgentAdvertisementPacket::new_checked(msg).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.code(), p.num_addrs(), p.lifetime()), (16, 1, 30));
        let exts: Vec<_> = p.extensions().map(|e| e.unwrap()).collect();
        assert_eq!(exts.len(), 1);
        assert!(
            matches!(exts[0], (16, AdvertExtension::MobilityAgent(m)) if m.care_of_addrs.is_empty())
        );

        let a = parse(msg).unwrap();
        let routers = [RouterAddr {
            addr: Ipv4Addr::new(10, 1, 0, 1),
            preference: 0,
        }];
        let expected = AgentAdvertisementRepr {
            code: AdvertCode::MobilityOnly,
            lifetime: 30,
            router_addrs: RouterAddrs::from_slice(&routers),
            sequence: 0,
            registration_lifetime: 0xffff,
            flags: AgentFlags(AgentFlags::H),
            care_of_addrs: CareOfAddrs::empty(),
            prefix_lengths: None,
            challenge: None,
            padding: false,
        };
        assert_eq!(a, expected);
        assert_eq!(a.care_of_addrs.first(), None);
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(a.with_even_length(), a);
        assert_eq!(reemit(&a), msg);
    }

    #[test]
    fn agent_solicitation() {
        let msg = AGENT_SOLICITATION;
        assert_eq!(msg.len(), 8);
        let p = AgentSolicitationPacket::new_checked(msg).unwrap();
        assert_eq!((p.code(), p.reserved()), (0, 0));
        assert!(p.verify_checksum());
        let s = AgentSolicitationRepr::parse(&p).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(s.emit(&mut out), Ok(8));
        assert_eq!(&out[..], msg);
        // A solicitation is not an advertisement, and the reverse.
        assert!(parse(msg).is_err());
        assert!(AgentSolicitationPacket::new_checked(AGENT_ADV_HA).is_err());
    }

    #[test]
    fn router_adv_plain_is_not_an_agent_advertisement() {
        let p = AgentAdvertisementPacket::new_checked(ROUTER_ADV_PLAIN).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.num_addrs(), p.lifetime()), (2, 1800));
        let routers: Vec<_> = p.router_addrs().iter().collect();
        assert_eq!(
            routers,
            [
                RouterAddr {
                    addr: Ipv4Addr::new(192, 0, 2, 254),
                    preference: 5
                },
                RouterAddr {
                    addr: Ipv4Addr::new(192, 0, 2, 253),
                    preference: 0
                }
            ]
        );
        assert_eq!(p.extensions().count(), 0);
        assert_eq!(
            parse(ROUTER_ADV_PLAIN),
            Err(AgentError::NotAgentAdvertisement)
        );
    }
}
