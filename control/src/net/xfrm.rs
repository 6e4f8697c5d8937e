//! The kernel's IPsec (XFRM) as `mipd` sees it: the per-socket bypass for the mobile node's
//! detection probes, and the kernel's SA table read over XFRM netlink.
//!
//! Bypass: draft-ietf-mip4-mobike-connectivity §3.4, the registration request to the i-HA is
//! sent "without any VPN encapsulation".
//!
//! With strongSwan's kernel-libipsec (kernels without ESP, like the test machines) the VPN is
//! a TUN device and its routes live in table 220, so a socket bound to the access interface
//! (SO_BINDTODEVICE) never enters it anyway. With the kernel's own IPsec, XFRM policies match
//! by selector whatever the device, and a policy covering the i-HA would capture the probe; a
//! socket policy with action "allow" overrides them for this socket only, in both directions
//! (`IP_XFRM_POLICY`, as strongSwan does for its own IKE sockets).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

/// `struct xfrm_selector` (`linux/xfrm.h`): all zero matches everything.
#[repr(C)]
#[derive(Default)]
struct XfrmSelector {
    daddr: [u8; 16],
    saddr: [u8; 16],
    dport: u16,
    dport_mask: u16,
    sport: u16,
    sport_mask: u16,
    family: u16,
    prefixlen_d: u8,
    prefixlen_s: u8,
    proto: u8,
    _pad: [u8; 3],
    ifindex: i32,
    user: u32,
}

/// `struct xfrm_lifetime_cfg`.
#[repr(C)]
#[derive(Default)]
struct XfrmLifetimeCfg {
    soft_byte_limit: u64,
    hard_byte_limit: u64,
    soft_packet_limit: u64,
    hard_packet_limit: u64,
    soft_add_expires_seconds: u64,
    hard_add_expires_seconds: u64,
    soft_use_expires_seconds: u64,
    hard_use_expires_seconds: u64,
}

impl XfrmLifetimeCfg {
    /// No byte or packet limit, no expiry: a policy that lasts until it is deleted.
    fn unlimited() -> Self {
        XfrmLifetimeCfg {
            soft_byte_limit: XFRM_INF,
            hard_byte_limit: XFRM_INF,
            soft_packet_limit: XFRM_INF,
            hard_packet_limit: XFRM_INF,
            ..XfrmLifetimeCfg::default()
        }
    }
}

/// `struct xfrm_lifetime_cur`.
#[repr(C)]
#[derive(Default)]
struct XfrmLifetimeCur {
    bytes: u64,
    packets: u64,
    add_time: u64,
    use_time: u64,
}

/// `struct xfrm_userpolicy_info`.
#[repr(C)]
#[derive(Default)]
struct XfrmUserpolicyInfo {
    sel: XfrmSelector,
    lft: XfrmLifetimeCfg,
    curlft: XfrmLifetimeCur,
    priority: u32,
    index: u32,
    dir: u8,
    action: u8,
    flags: u8,
    share: u8,
    _pad: [u8; 4],
}
// Padding is explicit in these layouts, so their bytes are all initialised (see `bytes_of`).
const _: () = assert!(size_of::<XfrmSelector>() == 56);
const _: () = assert!(size_of::<XfrmUserpolicyInfo>() == 168);

const IP_XFRM_POLICY: libc::c_int = 17;
const XFRM_POLICY_IN: u8 = 0;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_ALLOW: u8 = 0;
const XFRM_INF: u64 = u64::MAX;

/// Exempts `socket` from every IPsec policy, both directions. Fails (ENOPROTOOPT) on a kernel
/// built without XFRM, where there is nothing to bypass.
pub fn bypass(socket: &impl AsRawFd) -> io::Result<()> {
    for dir in [XFRM_POLICY_IN, XFRM_POLICY_OUT] {
        let policy = XfrmUserpolicyInfo {
            sel: XfrmSelector {
                family: libc::AF_INET as u16,
                ..XfrmSelector::default()
            },
            lft: XfrmLifetimeCfg::unlimited(),
            dir,
            action: XFRM_POLICY_ALLOW,
            ..XfrmUserpolicyInfo::default()
        };
        // SAFETY: a valid socket and a live, fully initialised struct of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_XFRM_POLICY,
                (&raw const policy).cast(),
                size_of::<XfrmUserpolicyInfo>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One IPv4 SA in the kernel's table (`ip xfrm state`), as far as the gate and the VPN layer
/// care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSa {
    /// The SPI as on the wire.
    pub spi: [u8; 4],
    /// IP protocol: 50 for ESP.
    pub proto: u8,
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    /// `XFRM_MODE_*`: 0 transport, 1 tunnel.
    pub mode: u8,
    pub reqid: u32,
    /// RFC 3948 UDP encapsulation: (source port, destination port).
    pub encap: Option<(u16, u16)>,
    /// The XFRM interface the SA belongs to (`if_id`), if any.
    pub if_id: Option<u32>,
}

const NETLINK_XFRM: libc::c_int = 6;
const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_GETSA: u16 = 0x12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct xfrm_usersa_info)` on 64-bit Linux: the selector (56), `xfrm_id` (24), the
/// source address (16), the lifetime configuration (64) and counters (32), the statistics
/// (12), then seq, reqid, family, mode, replay window and flags, padded to 8.
const USERSA_INFO_LEN: usize = 224;
const XFRMA_ENCAP: u16 = 4;
const XFRMA_IF_ID: u16 = 31;

/// The kernel's IPv4 SAs (an `XFRM_MSG_GETSA` dump).
pub fn sas() -> io::Result<Vec<KernelSa>> {
    let fd = send_request(
        XFRM_MSG_GETSA,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        &[],
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: a valid socket and a live buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_dump(&buf[..n as usize], &mut out)? {
            Dump::More => continue,
            Dump::Done => return Ok(out),
        }
    }
}

/// The kernel's SAs that belong to the XFRM interface `if_id`, ESP only: the SAs a VPN bound
/// to that interface runs on, whoever installed them.
pub fn esp_spis_of(sas: &[KernelSa], if_id: u32) -> Vec<[u8; 4]> {
    let mut spis: Vec<[u8; 4]> = sas
        .iter()
        .filter(|s| s.proto == libc::IPPROTO_ESP as u8 && s.if_id == Some(if_id))
        .map(|s| s.spi)
        .collect();
    spis.sort_unstable();
    spis.dedup();
    spis
}

/// `enum xfrm_nlgroups`: SA added, updated, deleted or flushed; an SA's lifetime ran out.
const XFRMNLGRP_EXPIRE: u32 = 2;
const XFRMNLGRP_SA: u32 = 3;

/// XFRM netlink's notifications about the SA table: whoever changes it (charon's kernel-netlink,
/// `ip xfrm`, the kernel itself when a hard lifetime runs out), the kernel tells every socket in
/// these groups. A notification only says "look again": the table is then read whole with
/// [`sas`], which needs no parsing of each kind of message and cannot miss one that a full
/// socket buffer dropped (ENOBUFS counts as a change too).
pub struct SaWatch {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl SaWatch {
    /// Joins the SA and expiry groups of the calling thread's network namespace. Needs
    /// CAP_NET_ADMIN; fails on a kernel without XFRM.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_XFRM,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid `sockaddr_nl`.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = (1 << (XFRMNLGRP_SA - 1)) | (1 << (XFRMNLGRP_EXPIRE - 1));
        // SAFETY: a valid socket and a live sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an open descriptor that the `AsyncFd` owns from here on, so it stays
        // the same open socket for the `AsyncFd`'s whole life.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(SaWatch { fd })
    }

    /// Waits for the next notification, then takes every one queued behind it: one call per
    /// burst (a rekey adds two SAs and deletes two).
    pub async fn changed(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            loop {
                // SAFETY: a valid socket and a live buffer of the length given.
                let n = unsafe {
                    libc::recv(
                        guard.get_inner().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    got = true;
                    continue;
                }
                match io::Error::last_os_error() {
                    e if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Notifications were lost: the table changed in ways we did not see.
                    e if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                    e if e.kind() == io::ErrorKind::Interrupted => {}
                    e => return Err(e),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

/// Opens an XFRM netlink socket and sends one request of `kind` with `body` (the fixed part
/// and its attributes) to the kernel.
fn send_request(kind: u16, flags: u16, body: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_XFRM,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut request = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    request.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(body);
    // SAFETY: a valid socket and a live buffer of the length given (to the kernel, pid 0).
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends one request with `NLM_F_ACK` and returns the kernel's verdict.
fn acked_request(kind: u16, body: &[u8]) -> io::Result<()> {
    let fd = send_request(kind, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, body)?;
    let mut buf = [0u8; 1024];
    // SAFETY: a valid socket and a live buffer of the length given.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    match parse_dump(&buf[..n as usize], &mut Vec::new())? {
        Dump::Done => Ok(()),
        Dump::More => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no acknowledgement from XFRM netlink",
        )),
    }
}

/// One netlink attribute (`rtattr`), padded to 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The selector "anything to `dst`".
fn to_host(dst: Ipv4Addr) -> XfrmSelector {
    let mut daddr = [0; 16];
    daddr[..4].copy_from_slice(&dst.octets());
    XfrmSelector {
        daddr,
        family: libc::AF_INET as u16,
        prefixlen_d: 32,
        ..XfrmSelector::default()
    }
}

/// The bytes of one of this module's `repr(C)` structs: plain integers with their padding
/// spelled out as fields, so no byte is uninitialised.
fn bytes_of<T>(value: &T) -> &[u8] {
    // SAFETY: `value` is a live, initialised `T`; reading its bytes is always valid.
    unsafe { std::slice::from_raw_parts((value as *const T).cast(), size_of::<T>()) }
}

/// `struct xfrm_user_tmpl`: what a policy requires of the SAs a packet came through.
#[repr(C)]
#[derive(Default)]
struct XfrmUserTmpl {
    daddr: [u8; 16],
    spi: u32,
    proto: u8,
    _pad: [u8; 3],
    family: u16,
    _pad2: [u8; 2],
    saddr: [u8; 16],
    reqid: u32,
    mode: u8,
    share: u8,
    optional: u8,
    _pad3: u8,
    aalgos: u32,
    ealgos: u32,
    calgos: u32,
}
const _: () = assert!(size_of::<XfrmUserTmpl>() == 64);

/// `struct xfrm_userpolicy_id`: which policy to delete.
#[repr(C)]
#[derive(Default)]
struct XfrmUserpolicyId {
    sel: XfrmSelector,
    index: u32,
    dir: u8,
    _pad: [u8; 3],
}
const _: () = assert!(size_of::<XfrmUserpolicyId>() == 64);

const XFRM_MSG_DELPOLICY: u16 = 0x14;
const XFRM_MSG_UPDPOLICY: u16 = 0x19;
const XFRMA_TMPL: u16 = 5;
const XFRM_MODE_TUNNEL: u8 = 1;
/// Below strongSwan's priorities (which start near 200000 and grow with narrower selectors'
/// generality): the home address's policy never overlaps charon's, so this is only order.
const HOME_POLICY_PRIORITY: u32 = 1000;

/// Lets what the kernel decrypted for the XFRM interface `if_id` be delivered to `home`
/// (an inbound policy: selector "to `home`", template "ESP, tunnel mode, any tunnel").
///
/// RFC 5265 §2.3 nests the internal home address's Mobile IP tunnel inside the VPN: the i-HA's
/// IP-in-IP to the TIA is what the CHILD_SA carries (charon's inbound policy is i-HA → TIA),
/// and the mobile node's TC program strips it on the XFRM interface. The datagram inside, for
/// the home address, still carries the SA in its security path, and the kernel's inbound
/// policy check at local delivery drops a tunnel-mode-protected packet that no policy covers
/// (`XfrmInNoPols`). This policy covers it. It is looked up only for packets that arrived
/// through the interface `if_id` (the kernel takes the if_id from the receiving XFRM interface,
/// and a packet that came in plaintext has none), so the home address's plain Mobile IP
/// inside the intranet is untouched. Replaces an existing one (a restarted mipd).
pub fn allow_inbound_to(home: Ipv4Addr, if_id: u32) -> io::Result<()> {
    let info = XfrmUserpolicyInfo {
        sel: to_host(home),
        lft: XfrmLifetimeCfg::unlimited(),
        priority: HOME_POLICY_PRIORITY,
        dir: XFRM_POLICY_IN,
        action: XFRM_POLICY_ALLOW,
        ..XfrmUserpolicyInfo::default()
    };
    let tmpl = XfrmUserTmpl {
        proto: libc::IPPROTO_ESP as u8,
        family: libc::AF_INET as u16,
        mode: XFRM_MODE_TUNNEL,
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
        ..XfrmUserTmpl::default()
    };
    let mut body = bytes_of(&info).to_vec();
    attribute(&mut body, XFRMA_TMPL, bytes_of(&tmpl));
    attribute(&mut body, XFRMA_IF_ID, &if_id.to_ne_bytes());
    acked_request(XFRM_MSG_UPDPOLICY, &body)
}

/// Deletes the policy [`allow_inbound_to`] installed; one that is not there is no error.
pub fn remove_inbound_to(home: Ipv4Addr, if_id: u32) -> io::Result<()> {
    let id = XfrmUserpolicyId {
        sel: to_host(home),
        dir: XFRM_POLICY_IN,
        ..XfrmUserpolicyId::default()
    };
    let mut body = bytes_of(&id).to_vec();
    attribute(&mut body, XFRMA_IF_ID, &if_id.to_ne_bytes());
    match acked_request(XFRM_MSG_DELPOLICY, &body) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

#[derive(Debug)]
enum Dump {
    More,
    Done,
}

/// Parses one datagram of a GETSA dump into `out`: each message is a `nlmsghdr`, and for
/// `XFRM_MSG_NEWSA` an `xfrm_usersa_info` followed by attributes (`rtattr`, 4-aligned).
fn parse_dump(mut bytes: &[u8], out: &mut Vec<KernelSa>) -> io::Result<Dump> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed XFRM netlink message");
    while bytes.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(bytes[0..4].try_into().map_err(|_| bad())?) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(bad());
        }
        let body = &bytes[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(Dump::Done),
            NLMSG_ERROR => {
                let code = body
                    .get(0..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(bad)?;
                if code == 0 {
                    return Ok(Dump::Done);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            XFRM_MSG_NEWSA => {
                if let Some(sa) = parse_sa(body) {
                    out.push(sa);
                }
            }
            _ => {}
        }
        let next = len.next_multiple_of(4).min(bytes.len());
        bytes = &bytes[next..];
    }
    Ok(Dump::More)
}

/// One `xfrm_usersa_info` with its attributes; `None` for another family or a short message.
fn parse_sa(body: &[u8]) -> Option<KernelSa> {
    let info = body.get(..USERSA_INFO_LEN)?;
    let family = u16::from_ne_bytes([info[212], info[213]]);
    if family != libc::AF_INET as u16 {
        return None;
    }
    let v4 =
        |at: usize| std::net::Ipv4Addr::new(info[at], info[at + 1], info[at + 2], info[at + 3]);
    let mut sa = KernelSa {
        // xfrm_id: daddr at 56, spi (network order) at 72, proto at 76.
        spi: info[72..76].try_into().ok()?,
        proto: info[76],
        dst: v4(56),
        src: v4(80),
        mode: info[214],
        reqid: u32::from_ne_bytes(info[208..212].try_into().ok()?),
        encap: None,
        if_id: None,
    };
    let mut attrs = &body[USERSA_INFO_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            // struct xfrm_encap_tmpl: type (u16), sport and dport (network order).
            XFRMA_ENCAP if data.len() >= 6 => {
                sa.encap = Some((
                    u16::from_be_bytes([data[2], data[3]]),
                    u16::from_be_bytes([data[4], data[5]]),
                ));
            }
            XFRMA_IF_ID if data.len() >= 4 => {
                sa.if_id = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some(sa)
}

/// Creates the XFRM interface `name` over the device with index `dev`, for the SAs and policies
/// whose `if_id` is `if_id` (the kernel's ESP hands what it decrypted for them to it, and what is
/// routed into it is encrypted with them), with `mtu`, up; an existing one of that name is kept
/// and brought to that MTU. Returns its ifindex. A kernel without XFRM interfaces
/// (`xfrm_interface`) refuses with EOPNOTSUPP.
pub async fn ensure_interface(
    handle: &rtnetlink::Handle,
    name: &str,
    dev: u32,
    if_id: u32,
    mtu: u32,
) -> Result<u32, rtnetlink::Error> {
    use futures_util::TryStreamExt as _;
    let existing = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    let index = match existing {
        Ok(Some(link)) => link.header.index,
        _ => {
            handle
                .link()
                .add(rtnetlink::LinkXfrm::new(name, dev, if_id).build())
                .execute()
                .await?;
            handle
                .link()
                .get()
                .match_name(name.to_owned())
                .execute()
                .try_next()
                .await?
                .map(|l| l.header.index)
                .unwrap_or_default()
        }
    };
    handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    /// The kernel accepts the policy (the test kernels have XFRM; root, as the test suite
    /// runs): a wrong layout would be EINVAL.
    #[test]
    fn the_kernel_accepts_the_bypass_policy() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Err(e) = super::bypass(&socket) {
            panic!("IP_XFRM_POLICY refused (needs root and a kernel with XFRM): {e}");
        }
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    /// Bad input never panics: short or overlong messages are an error, a kernel error is
    /// reported as one, another family is skipped, and DONE ends the dump.
    #[test]
    fn a_dump_is_parsed_defensively() {
        use super::{Dump, NLMSG_DONE, NLMSG_ERROR, USERSA_INFO_LEN, XFRM_MSG_NEWSA, parse_dump};
        let mut out = Vec::new();
        let mut overlong = message(XFRM_MSG_NEWSA, &[0; 8]);
        overlong[0] = 200;
        assert!(parse_dump(&overlong, &mut out).is_err());
        assert!(parse_dump(&[1, 0, 0, 0, 0x10, 0, 0, 0], &mut out).is_ok());
        let refused = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_dump(&refused, &mut out).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        // An IPv6 SA (family 10) and a truncated one are skipped; then DONE.
        let mut v6 = vec![0u8; USERSA_INFO_LEN];
        v6[212..214].copy_from_slice(&10u16.to_ne_bytes());
        let mut dump = message(XFRM_MSG_NEWSA, &v6);
        dump.extend(message(XFRM_MSG_NEWSA, &[0; 20]));
        dump.extend(message(NLMSG_DONE, &[0; 4]));
        assert!(matches!(parse_dump(&dump, &mut out), Ok(Dump::Done)));
        assert!(out.is_empty());
    }
}
