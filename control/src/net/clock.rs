//! The clocks the shells read for the sans-IO cores (DESIGN.md §1.3: the cores never read a
//! clock), and the kernel's monotonic clock that the plaintext gate's deadline is written in.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::proto::Now;

/// A daemon's clock: monotonic time since it started, and the wall clock beside it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// The time for the cores.
    pub fn now(&self) -> Now {
        Now {
            mono: self.start.elapsed(),
            unix: unix_now(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }

    /// The tokio instant of a core's deadline (a time since start); with none, an hour from
    /// now, when nothing is due. Never in the past.
    pub fn deadline(&self, at: Option<Duration>) -> tokio::time::Instant {
        let elapsed = self.start.elapsed();
        let at = at.map_or(elapsed + Duration::from_secs(3600), |t| t.max(elapsed));
        tokio::time::Instant::from_std(self.start + at)
    }
}

/// Time since the Unix epoch (zero if the wall clock is before it).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch: how the pinned maps record expiries, so a restarted
/// `mipd` can adopt them.
pub fn unix_ms() -> u64 {
    unix_now().as_millis() as u64
}

/// CLOCK_MONOTONIC now, nanoseconds: the clock of `bpf_ktime_get_coarse_ns`.
pub fn kernel_monotonic_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_never_in_the_past_and_default_to_an_hour() {
        let clock = Clock::start();
        let now = tokio::time::Instant::now();
        assert!(clock.deadline(Some(Duration::ZERO)) >= now - Duration::from_millis(1));
        let idle = clock.deadline(None);
        assert!(idle >= now + Duration::from_secs(3599));
        assert!(idle <= tokio::time::Instant::now() + Duration::from_secs(3600));
    }
}
