//! The registration load generator: `mns` simulated mobile nodes behind one connected UDP
//! socket, closed loop with `window` requests outstanding.
//!
//! Every request is built and signed (HMAC-MD5, RFC 5944 §3.5.1) inside the timed window, just
//! before it is sent: its Identification is an NTP timestamp of the moment it is sent (§5.7.1),
//! so nothing can be precomputed. Signing and checking replies run on the generator's core, not
//! the home agent's. Every reply is matched to its mobile node and Identification and its
//! authenticator checked; against the echo baseline the echoed request's authenticator is checked
//! instead, so the generator does the same work per datagram for both peers.
//!
//! Datagrams go out with `sendmmsg` and come back with `recvmmsg` in batches of up to
//! [`BATCH`], so the generator's syscall cost is amortised and its core is not the bottleneck.
//!
//! This does not use `mipx_control` on purpose: that crate's build script builds the eBPF object
//! with bpf-linker, which `cargo xtask setup` installs, so xtask must build without it. The
//! HMAC-MD5 here is the same construction from the same `hmac`/`md-5` crates.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use hmac::{Hmac, Mac as _};
use md5::Md5;
use mipx_common::wire::{
    AuthExtension, Extension, ExtensionIter, ExtensionType, ExtensionWriter, ReplyPacket,
    ReplyRepr, RequestFlags, RequestPacket, RequestRepr,
};

type HmacMd5 = Hmac<Md5>;

/// Length of an HMAC-MD5 authenticator.
const AUTH_LEN: usize = 16;
/// A Registration Request with only the Mobile-Home Authentication Extension: 46 bytes.
pub(crate) const REQUEST_LEN: usize = RequestRepr::LEN + AuthExtension::HEADER_LEN + AUTH_LEN;
/// Datagrams per `sendmmsg` / `recvmmsg` call.
const BATCH: usize = 64;
/// Receive buffer per datagram: replies are 42 bytes, echoed requests 46; anything longer is
/// counted as malformed (MSG_TRUNC).
const SLOT: usize = 256;
/// How long the generator waits in `recvmmsg` before looking for lost requests.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// A request unanswered for this long is counted lost and sent again with a new Identification.
const LOSS_TIMEOUT: Duration = Duration::from_millis(500);
/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What answers the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A home agent: replies are signed Registration Replies.
    Mipd,
    /// The echo baseline: replies are our own requests, returned unchanged.
    Echo,
}

/// Which registration a phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Phase 1: every mobile node registers for the first time.
    Register,
    /// Phase 2: every mobile node re-registers from a new care-of address (a move), with a new
    /// Identification.
    Refresh,
}

/// The simulated mobile nodes and where they register.
#[derive(Clone, Debug)]
pub(crate) struct Population {
    pub home_agent: Ipv4Addr,
    /// Mobile node `i` has home address `home_base + i`.
    pub home_base: Ipv4Addr,
    /// Care-of address of mobile node `i` in phase 1 is `coa_base + i`, in phase 2
    /// `coa_base + mns + i`.
    pub coa_base: Ipv4Addr,
    pub spi: u32,
    pub key: Vec<u8>,
    pub lifetime: u16,
    pub mns: usize,
}

/// Everything that went wrong in a phase. Any non-zero count fails the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Failures {
    /// Not a Registration Reply (or, against echo, not our request), truncated, or oversized.
    pub malformed: u64,
    /// Missing, wrong-SPI or wrong authenticator.
    pub bad_auth: u64,
    /// Code other than 0 (accepted), or a lifetime other than the one requested.
    pub denied: u64,
    /// For a mobile node with nothing outstanding or with an older Identification (a late
    /// answer to a request that was counted lost).
    pub stale: u64,
    /// Unanswered after [`LOSS_TIMEOUT`]; sent again with a new Identification.
    pub lost: u64,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.malformed + self.bad_auth + self.denied + self.stale + self.lost
    }

    pub fn add(&mut self, o: &Failures) {
        self.malformed += o.malformed;
        self.bad_auth += o.bad_auth;
        self.denied += o.denied;
        self.stale += o.stale;
        self.lost += o.lost;
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed {}, bad authenticator {}, denied {}, stale {}, lost {}",
            self.malformed, self.bad_auth, self.denied, self.stale, self.lost
        )
    }
}

/// The outcome of one phase.
#[derive(Clone, Debug)]
pub(crate) struct PhaseResult {
    /// First send to last reply.
    pub elapsed: Duration,
    /// Mobile nodes answered (each exactly once).
    pub completed: usize,
    /// Send → matching reply, per mobile node, nanoseconds, sorted.
    pub latencies_ns: Vec<u32>,
    pub failures: Failures,
    /// CPU time of the generator thread during the phase.
    pub generator_cpu: Duration,
}

impl PhaseResult {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency (0-100), microseconds.
    pub fn latency_us(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies_ns.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies_ns.len()) - 1;
        f64::from(self.latencies_ns[i]) / 1000.0
    }
}

/// A batch of datagram buffers with their `mmsghdr`s for `sendmmsg` / `recvmmsg`.
struct Batch {
    bufs: Vec<[u8; SLOT]>,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            bufs: vec![[0u8; SLOT]; BATCH],
            // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a valid value
            // (null pointers, zero lengths); every pointer is set before each syscall.
            iov: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            hdr: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        }
    }

    /// Points the first `n` headers at their buffers, `len` bytes each (`lens` per datagram
    /// when sending).
    fn prepare(&mut self, n: usize, len: impl Fn(usize) -> usize) {
        for i in 0..n {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: len(i),
            };
            let h = &mut self.hdr[i];
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }
}

/// The generator: one socket connected to the server, per-mobile-node state.
pub(crate) struct LoadGen {
    socket: UdpSocket,
    peer: Peer,
    pop: Population,
    window: usize,
    /// The keyed HMAC state (inner and outer pads absorbed), cloned per message.
    mac: HmacMd5,
    /// Identification of the latest request per mobile node; strictly increasing (§5.7.1).
    last_id: Vec<u64>,
    /// When mobile node `i`'s outstanding request was sent (ns since `epoch`, plus one);
    /// 0 when nothing is outstanding.
    sent_at: Vec<u64>,
    epoch: Instant,
    tx: Batch,
    rx: Batch,
}

impl LoadGen {
    pub fn new(server: SocketAddrV4, peer: Peer, pop: Population, window: usize) -> Result<Self> {
        let socket =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the generator's socket")?;
        socket
            .connect(server)
            .with_context(|| format!("connecting to {server}"))?;
        socket.set_read_timeout(Some(RECV_TIMEOUT))?;
        // Replies must never be dropped at our end: a window of replies fits many times over.
        set_rcvbuf(&socket, 4 << 20)?;
        let mac = <HmacMd5 as hmac::KeyInit>::new_from_slice(&pop.key)
            .expect("HMAC takes any key length");
        Ok(LoadGen {
            socket,
            peer,
            window: window.max(1),
            mac,
            last_id: vec![0; pop.mns],
            sent_at: vec![0; pop.mns],
            pop,
            epoch: Instant::now(),
            tx: Batch::new(),
            rx: Batch::new(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Builds and signs mobile node `i`'s request for `phase` into `buf`.
    fn build(&mut self, i: usize, phase: Phase, buf: &mut [u8; SLOT]) {
        let id = ntp_now().max(self.last_id[i] + 1);
        self.last_id[i] = id;
        let coa_offset = match phase {
            Phase::Register => i,
            Phase::Refresh => self.pop.mns + i,
        };
        let req = RequestRepr {
            // A co-located care-of address ('D'), reverse tunnelling asked for ('T'), as
            // `mipd --role mn` sends it.
            flags: RequestFlags::default()
                .with(RequestFlags::D, true)
                .with(RequestFlags::T, true),
            lifetime: self.pop.lifetime,
            home_addr: nth(self.pop.home_base, i),
            home_agent: self.pop.home_agent,
            care_of_addr: nth(self.pop.coa_base, coa_offset),
            identification: id,
        };
        let msg = &mut buf[..REQUEST_LEN];
        // The buffer holds LEN bytes and more.
        let _ = req.emit(&mut RequestPacket::new_unchecked(&mut msg[..]));
        let mut w = ExtensionWriter::new(msg, RequestRepr::LEN);
        let at = w
            .push_auth_placeholder(ExtensionType::MnHaAuth, self.pop.spi, AUTH_LEN)
            .expect("REQUEST_LEN holds the extension");
        let mut mac = self.mac.clone();
        mac.update(&msg[AuthExtension::authenticated_range(at)]);
        let tag = mac.finalize().into_bytes();
        msg[AuthExtension::authenticator_range(at, AUTH_LEN)].copy_from_slice(&tag);
    }

    /// Sends the requests of the mobile nodes in `todo` (all of it), building each just before
    /// its batch goes out.
    fn send(&mut self, todo: &[usize], phase: Phase) -> Result<()> {
        for chunk in todo.chunks(BATCH) {
            let mut bufs = std::mem::take(&mut self.tx.bufs);
            for (k, &i) in chunk.iter().enumerate() {
                self.build(i, phase, &mut bufs[k]);
            }
            self.tx.bufs = bufs;
            self.tx.prepare(chunk.len(), |_| REQUEST_LEN);
            let t = self.now_ns();
            for &i in chunk {
                self.sent_at[i] = t;
            }
            let mut done = 0;
            while done < chunk.len() {
                // SAFETY: `hdr[done..chunk.len()]` are initialised headers pointing at live
                // buffers of `self.tx`, which outlive the call.
                let n = unsafe {
                    libc::sendmmsg(
                        self.socket.as_raw_fd(),
                        self.tx.hdr[done..].as_mut_ptr(),
                        (chunk.len() - done) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e).context("sendmmsg");
                }
                done += n as usize;
            }
        }
        Ok(())
    }

    /// Checks one datagram; on a match, completes its mobile node and returns its index.
    fn check(&mut self, bytes: &[u8], failures: &mut Failures) -> Option<usize> {
        let parsed = match self.peer {
            Peer::Mipd => ReplyPacket::new_checked(bytes).ok().and_then(|packet| {
                let reply = ReplyRepr::parse(&packet).ok()?;
                let ok = u8::from(reply.code) == 0 && reply.lifetime == self.pop.lifetime;
                Some((
                    reply.home_addr,
                    reply.identification,
                    ok,
                    find_auth(ExtensionIter::new(bytes, ReplyRepr::LEN)),
                ))
            }),
            Peer::Echo => RequestPacket::new_checked(bytes).ok().and_then(|packet| {
                let req = RequestRepr::parse(&packet).ok()?;
                Some((
                    req.home_addr,
                    req.identification,
                    true,
                    find_auth(ExtensionIter::new(bytes, RequestRepr::LEN)),
                ))
            }),
        };
        let Some((home_addr, identification, code_ok, auth)) = parsed else {
            failures.malformed += 1;
            return None;
        };
        let i = u32::from(home_addr).wrapping_sub(u32::from(self.pop.home_base)) as usize;
        if i >= self.pop.mns || self.sent_at[i] == 0 || identification != self.last_id[i] {
            failures.stale += 1;
            return None;
        }
        let authentic = auth.is_some_and(|(at, spi, tag)| {
            let mut mac = self.mac.clone();
            spi == self.pop.spi
                && bytes
                    .get(AuthExtension::authenticated_range(at))
                    .is_some_and(|covered| {
                        mac.update(covered);
                        mac.verify_slice(tag).is_ok()
                    })
        });
        if !authentic {
            failures.bad_auth += 1;
        } else if !code_ok {
            failures.denied += 1;
        }
        Some(i)
    }

    /// Runs one phase over all mobile nodes and returns its figures.
    pub fn run(&mut self, phase: Phase) -> Result<PhaseResult> {
        let n = self.pop.mns;
        let mut failures = Failures::default();
        let mut latencies = Vec::with_capacity(n);
        let mut next = 0usize;
        let mut outstanding = 0usize;
        let mut completed = 0usize;
        let mut todo: Vec<usize> = Vec::with_capacity(self.window);
        let cpu0 = thread_cpu_time();
        let start = self.now_ns();
        let mut last_reply = start;
        let mut last_scan = start;
        while completed < n {
            // Top the window up (lost requests first, then new mobile nodes).
            while outstanding + todo.len() < self.window && next < n {
                todo.push(next);
                next += 1;
            }
            if !todo.is_empty() {
                outstanding += todo.len();
                let batch = std::mem::take(&mut todo);
                self.send(&batch, phase)?;
                todo = batch;
                todo.clear();
            }
            self.rx.prepare(BATCH, |_| SLOT);
            // SAFETY: BATCH initialised headers pointing at live buffers of `self.rx`.
            let got = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    self.rx.hdr.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            let now = self.now_ns();
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {}
                    _ => return Err(e).context("recvmmsg (is the server running?)"),
                }
            }
            for k in 0..got.max(0) as usize {
                let len = self.rx.hdr[k].msg_len as usize;
                let truncated = self.rx.hdr[k].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let buf = self.rx.bufs[k];
                let matched = if truncated {
                    failures.malformed += 1;
                    None
                } else {
                    self.check(&buf[..len.min(SLOT)], &mut failures)
                };
                if let Some(i) = matched {
                    let lat = now - self.sent_at[i];
                    latencies.push(u32::try_from(lat).unwrap_or(u32::MAX));
                    self.sent_at[i] = 0;
                    outstanding -= 1;
                    completed += 1;
                    last_reply = now;
                }
            }
            // Look for lost requests at most every RECV_TIMEOUT: a scan of `sent_at`.
            if now - last_scan >= RECV_TIMEOUT.as_nanos() as u64 {
                last_scan = now;
                let limit = LOSS_TIMEOUT.as_nanos() as u64;
                for (i, &t) in self.sent_at.iter().enumerate() {
                    if t != 0 && now - t >= limit {
                        todo.push(i);
                    }
                }
                failures.lost += todo.len() as u64;
                outstanding -= todo.len();
                if now - last_reply > 10 * LOSS_TIMEOUT.as_nanos() as u64 {
                    bail!(
                        "{:?} phase stalled: no reply for {:.1} s ({completed} of {n} answered)",
                        phase,
                        (now - last_reply) as f64 / 1e9
                    );
                }
            }
        }
        let elapsed = Duration::from_nanos(last_reply - start);
        latencies.sort_unstable();
        Ok(PhaseResult {
            elapsed,
            completed,
            latencies_ns: latencies,
            failures,
            generator_cpu: thread_cpu_time().saturating_sub(cpu0),
        })
    }
}

/// The Mobile-Home Authentication Extension of a message: offset, SPI, authenticator. `None`
/// when there is none, more than one, or the extensions do not parse.
fn find_auth(extensions: ExtensionIter<'_>) -> Option<(usize, u32, &[u8])> {
    let mut found = None;
    for item in extensions {
        if let (at, Extension::MnHaAuth(a)) = item.ok()?
            && found.replace((at, a.spi, a.authenticator)).is_some()
        {
            return None;
        }
    }
    found
}

/// `base + i`.
fn nth(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(i as u32))
}

/// The current wall-clock time as a 64-bit NTP timestamp (RFC 5944 §5.7.1).
fn ntp_now() -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = (unix.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// CPU time consumed by the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sets SO_RCVBUF (the kernel caps it at `net.core.rmem_max` and doubles it). It lives with the
/// generator, whose socket needs it, and `registration`'s echo baseline imports it from here:
/// `registration` drives the generator, so the dependency runs one way only.
pub(super) fn set_rcvbuf(socket: &UdpSocket, bytes: usize) -> Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, option value pointer and length for an int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("SO_RCVBUF");
    }
    Ok(())
}
