//! Sans-IO protocol state machines (DESIGN.md §1.3): no sockets, no tokio, no clock reads.
//! Every input carries `now`; outputs are drained with `poll_transmit` / `poll_event`, and the
//! next deadline is `poll_timeout`.

pub mod advert;
pub mod detect;
pub mod discovery;
pub mod ext;
pub mod fa;
pub mod ha;
pub mod mn;
pub mod rfc5265;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The time, as the caller sees it. Two clocks on purpose: `mono` (monotonic, for timers and
/// binding lifetimes, never jumps) and `unix` (wall clock since 1970, only for the timestamps of
/// RFC 5944 §5.7.1 replay protection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Duration,
    pub unix: Duration,
}

impl Now {
    pub fn advance(self, by: Duration) -> Now {
        Now {
            mono: self.mono + by,
            unix: self.unix + by,
        }
    }
}

/// A mobile node's tunnel to a home agent, as an accepted registration makes it: what one slot
/// of the dataplane's tunnel map carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of_addr: Ipv4Addr,
    /// Reverse tunnelling (RFC 3024): packets from the home address go to the home agent.
    pub reverse: bool,
    /// RFC 3519 IP-in-UDP on the registration's ports (ours, the home agent's) (§4.4).
    pub udp: Option<(u16, u16)>,
    /// RFC 5265 §2.3: the i-HA tunnel runs inside the VPN.
    pub via_vpn: bool,
}

/// A datagram to send on the Mobile IP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Source address to use, when it matters (replies go out from the address the request
    /// was sent to, RFC 5944 §3.8.3.1).
    pub src: Option<Ipv4Addr>,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of a wall-clock time (RFC 5944 §5.7.1 uses this format for the
/// Identification field): seconds in the high 32 bits, binary fraction in the low 32.
pub fn ntp_timestamp(unix: Duration) -> u64 {
    let secs = (unix.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The wall-clock time of an NTP timestamp (inverse of [`ntp_timestamp`], to nanosecond
/// precision, within the current NTP era).
pub fn unix_from_ntp(ntp: u64) -> Duration {
    let secs = (ntp >> 32).wrapping_sub(NTP_UNIX_OFFSET) & 0xffff_ffff;
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    Duration::new(secs, nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_round_trip() {
        let t = Duration::new(1_795_000_000, 123_456_789);
        let back = unix_from_ntp(ntp_timestamp(t));
        assert!(back <= t && t - back < Duration::from_nanos(2));
        // 2026-11-23 is NTP era 0 second 0xEC..: high byte sanity.
        assert_eq!(ntp_timestamp(Duration::from_secs(0)) >> 32, NTP_UNIX_OFFSET);
    }
}
