//! Per-socket IPsec bypass for the mobile node's detection probes
//! (draft-ietf-mip4-mobike-connectivity §3.4: the registration request to the i-HA is sent
//! "without any VPN encapsulation").
//!
//! With strongSwan's kernel-libipsec (kernels without ESP, like the test machines) the VPN is
//! a TUN device and its routes live in table 220, so a socket bound to the access interface
//! (SO_BINDTODEVICE) never enters it anyway. With the kernel's own IPsec, XFRM policies match
//! by selector whatever the device, and a policy covering the i-HA would capture the probe; a
//! socket policy with action "allow" overrides them for this socket only, in both directions
//! (`IP_XFRM_POLICY`, as strongSwan does for its own IKE sockets).

use std::io;
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
}
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
            lft: XfrmLifetimeCfg {
                soft_byte_limit: XFRM_INF,
                hard_byte_limit: XFRM_INF,
                soft_packet_limit: XFRM_INF,
                hard_packet_limit: XFRM_INF,
                ..XfrmLifetimeCfg::default()
            },
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
}
