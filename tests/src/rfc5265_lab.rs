//! Parts of the RFC 5265 lab (`cargo xtask lab --scenario rfc5265`,
//! tests/src/bin/mipx-lab-rfc5265.rs) that a namespace test can reuse: the mobile node's
//! configuration in modes cvc, mc and fvc (cvc with foreign agent discovery, so f inside and fvc
//! outside wherever an agent requires registration), one byte-checked TCP session from the
//! internal home address to the correspondent, and the per-packet overhead an access mode should
//! add on the access link, computed from the ESP suite strongSwan negotiated (RFC 5265 §5.2's
//! method, with this suite's figures instead of the RFC's HMAC-96 and 64-bit block cipher).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};

use crate::detection::{
    CN_ADDR, DetectionTopology, INTERNAL_HOME_ADDR, MN_VPN_ID, VPN_GATEWAY_ADDR, VPN_GATEWAY_ID,
    VPN_PSK,
};
use crate::strongswan::{Charon, Ipsec};
use mipx_control::proto::rfc5265::EspShape;

/// The correspondent's port of the lab's TCP session.
pub const SESSION_PORT: u16 = 5265;

/// The maximum segment size the MN announces for the lab's session: what fits the tunnels the
/// correspondent's segments take to the MN outside. The i-HA's IP-in-IP (20) must fit the VPN
/// gateway's kernel-libipsec TUN device (MTU 1400), so a segment's IPv4 packet may be 1380
/// octets: MSS 1340. Path MTU discovery cannot find that: the gateway's "fragmentation needed"
/// for the i-HA's tunnel packet is addressed to the i-HA, whose address the gateway also holds
/// on its loopback (kernel-libipsec's local traffic selector, tests/src/detection.rs), so it
/// is delivered to the gateway itself, and the i-HA would not relay it to the correspondent
/// anyway. Without the clamp, a segment of more than 1380 octets (a correspondent catching up
/// after an outage coalesces its backlog) is dropped at the gateway for good.
pub const SESSION_MSS: u32 = 1340;

/// Seconds since the Unix epoch (the clock tcpdump stamps frames with).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The MN's `[mn]`, `[mn.rfc5265]` and `[mn.rfc5265.vpn]` text in `mode` ("cvc": the x-HA and
/// the VPN from the x-HoA; "mc": no x-HA, the VPN from the care-of address with MOBIKE; "fvc":
/// cvc with `agent_discovery`, so that where a foreign agent requires registration the node
/// registers through it, mode f inside and fvc outside, RFC 5265 §2.2, §2.4), its VPN driven
/// through `charon`'s VICI socket, `inside` = "teardown" or "keep". Detection as in
/// tests/tests/vpn_e2e.rs: T_MONITOR 10 s, grace 3 s, a detection period of 1 s. `ipsec`: the
/// ESP the configuration insists on (`[mn.rfc5265.vpn] ipsec`).
pub fn vpn_toml(
    topo: &DetectionTopology,
    charon: &Charon,
    mode: &str,
    inside: &str,
    ipsec: Ipsec,
) -> Result<String> {
    vpn_toml_timed(topo, charon, mode, inside, ipsec, (10, 3))
}

/// [`vpn_toml`] with T_MONITOR and the grace period (`timers`, seconds) given.
pub fn vpn_toml_timed(
    topo: &DetectionTopology,
    charon: &Charon,
    mode: &str,
    inside: &str,
    ipsec: Ipsec,
    timers: (u64, u64),
) -> Result<String> {
    let (t_monitor, grace) = timers;
    let psk = topo.dir.write("vpn.psk", VPN_PSK, 0o600)?;
    let detection = match mode {
        "cvc" => format!(
            "{}mode = \"cvc\"\n",
            topo.rfc5265_mn_toml(t_monitor, grace, 1000)
        ),
        "fvc" => format!(
            "{}mode = \"cvc\"\nagent_discovery = true\n",
            topo.rfc5265_mn_toml(t_monitor, grace, 1000)
        ),
        "mc" => format!(
            "{}\n[mn.rfc5265]\ninterfaces = [\"mn0\"]\nmode = \"mc\"\n\
             t_monitor_secs = {t_monitor}\ngrace_secs = {grace}\ndetection_period_ms = 1000\n",
            topo.plain_mn_toml()
        ),
        other => bail!("unknown access mode {other}: cvc, mc or fvc"),
    };
    Ok(format!(
        "{detection}\n[mn.rfc5265.vpn]\n\
         vici_socket = \"{}\"\ngateway = \"{VPN_GATEWAY_ADDR}\"\nlocal_id = \"{MN_VPN_ID}\"\n\
         remote_id = \"{VPN_GATEWAY_ID}\"\npsk_file = \"{}\"\ninside = \"{inside}\"\n\
         retry_initial_ms = 500\nretry_max_ms = 2000\ninitiate_timeout_ms = 5000\ndpd_secs = 2\n\
         ipsec = \"{}\"\n",
        charon.vici.display(),
        psk.display(),
        match ipsec {
            Ipsec::Libipsec => "libipsec",
            Ipsec::Kernel => "kernel",
        },
    ))
}

/// The pattern byte at session offset `i`: a prime period, so a lost, duplicated or reordered
/// chunk cannot line up by accident (as [`crate::mobility::Stream`]).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// What the session carried, once finished.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SessionTotals {
    /// Bytes the MN wrote.
    pub sent: u64,
    /// Bytes the correspondent echoed.
    pub echoed: u64,
    /// Bytes the MN read back and checked.
    pub received: u64,
}

/// One TCP connection from the MN's internal home address to [`SESSION_PORT`] on the
/// correspondent [`CN_ADDR`], open while the MN walks: the MN writes a small patterned chunk at
/// a steady pace, the correspondent echoes every byte, and the MN checks each byte it reads
/// back and records when it arrived. Both directions carry data, so a gap in the arrivals is a
/// gap in either. A reset, a byte out of place, or the correspondent closing early breaks it
/// ([`SessionStream::check`]). Its threads stop when it is finished or dropped; the sockets
/// go with the namespaces.
pub struct SessionStream {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    /// (Unix time, session offset after the read) of every read that returned data.
    arrivals: Arc<Mutex<Vec<(f64, u64)>>>,
    /// The first error of any of the three threads.
    error: Arc<Mutex<Option<String>>>,
    sender: Option<JoinHandle<u64>>,
    receiver: Option<JoinHandle<u64>>,
    echo: Option<JoinHandle<u64>>,
}

/// Records `err` as the session's error unless one is already there.
fn record(error: &Mutex<Option<String>>, err: &anyhow::Error) {
    if let Ok(mut e) = error.lock()
        && e.is_none()
    {
        *e = Some(format!("{err:#}"));
    }
}

impl SessionStream {
    /// Starts the correspondent's echo listener, connects from the MN's internal home address
    /// and starts writing `chunk` bytes every `every`; returns once the first bytes came back.
    /// With `mss`, the MN announces that maximum segment size (`TCP_MAXSEG` before connecting),
    /// so the correspondent never sends a longer segment (see [`SESSION_MSS`]).
    pub fn start(
        topo: &DetectionTopology,
        chunk: usize,
        every: Duration,
        mss: Option<u32>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));

        // The correspondent: one connection, echoed byte for byte until the MN closes.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let echo = {
            let ns = topo.cn.name().to_owned();
            let (stop, error) = (Arc::clone(&stop), Arc::clone(&error));
            std::thread::spawn(move || {
                let r = (|| -> Result<u64> {
                    let listener = {
                        let _inside = crate::netns::enter_named(&ns)?;
                        TcpListener::bind((Ipv4Addr::UNSPECIFIED, SESSION_PORT))
                            .context("binding the correspondent's listener")?
                    };
                    listener.set_nonblocking(true)?;
                    let _ = ready_tx.send(());
                    let deadline =
                        Instant::now() + crate::daemon::patience(Duration::from_secs(15));
                    let mut conn = loop {
                        match listener.accept() {
                            Ok((c, _)) => break c,
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::Interrupted =>
                            {
                                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                                    bail!("no connection from the MN");
                                }
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Err(e) => return Err(e).context("accepting the MN's connection"),
                        }
                    };
                    conn.set_nonblocking(false)?;
                    conn.set_nodelay(true)?;
                    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
                    let mut buf = vec![0u8; 65_536];
                    let mut echoed = 0u64;
                    let mut last = Instant::now();
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) => {
                                conn.shutdown(Shutdown::Write)?;
                                return Ok(echoed);
                            }
                            Ok(n) => {
                                conn.write_all(&buf[..n])
                                    .context("echoing at the correspondent")?;
                                echoed += n as u64;
                                last = Instant::now();
                            }
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut
                                    // A read with a timeout is not restarted after a signal
                                    // (or a stop and continue): signal(7).
                                    || e.kind() == std::io::ErrorKind::Interrupted =>
                            {
                                // Only bounds a run whose MN side died without closing.
                                if stop.load(Ordering::Relaxed)
                                    && last.elapsed() > Duration::from_secs(20)
                                {
                                    return Ok(echoed);
                                }
                            }
                            Err(e) => return Err(e).context("reading at the correspondent"),
                        }
                    }
                })();
                r.unwrap_or_else(|e| {
                    record(&error, &e.context("correspondent"));
                    0
                })
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the correspondent's listener did not start")?;

        // The MN's socket is created, bound and connected in its namespace by a short-lived
        // thread; the socket stays there whichever thread uses it later.
        let ns = topo.mn.name().to_owned();
        let conn = std::thread::spawn(move || -> Result<TcpStream> {
            let _inside = crate::netns::enter_named(&ns)?;
            let sock = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            if let Some(mss) = mss {
                let mss = libc::c_int::try_from(mss)?;
                // SAFETY: setsockopt(2) on an open socket with a c_int whose size is passed.
                let rc = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_MAXSEG,
                        (&raw const mss).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error()).context("TCP_MAXSEG");
                }
            }
            sock.bind(&SocketAddrV4::new(INTERNAL_HOME_ADDR, 0).into())
                .context("binding the MN's socket to the internal home address")?;
            sock.connect_timeout(
                &SocketAddrV4::new(CN_ADDR, SESSION_PORT).into(),
                Duration::from_secs(5),
            )
            .context("connecting from the internal home address to the correspondent")?;
            Ok(sock.into())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut reader = conn.try_clone()?;
        let mut writer = conn;

        let sender = {
            let (stop, error) = (Arc::clone(&stop), Arc::clone(&error));
            std::thread::spawn(move || {
                let r = (|| -> Result<u64> {
                    let mut offset = 0u64;
                    let mut buf = vec![0u8; chunk];
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        for (k, b) in buf.iter_mut().enumerate() {
                            *b = pattern(offset + k as u64);
                        }
                        writer.write_all(&buf).context("writing at the MN")?;
                        offset += chunk as u64;
                        next += every;
                        match next.checked_duration_since(Instant::now()) {
                            Some(wait) => std::thread::sleep(wait),
                            // Blocked for a while (a full send buffer): no burst to catch up.
                            None => next = Instant::now(),
                        }
                    }
                    writer.shutdown(Shutdown::Write)?;
                    Ok(offset)
                })();
                r.unwrap_or_else(|e| {
                    record(&error, &e.context("MN sender"));
                    0
                })
            })
        };
        let receiver = {
            let (stop, error) = (Arc::clone(&stop), Arc::clone(&error));
            let (received, arrivals) = (Arc::clone(&received), Arc::clone(&arrivals));
            std::thread::spawn(move || {
                let r = (|| -> Result<u64> {
                    let mut buf = vec![0u8; 65_536];
                    let mut offset = 0u64;
                    let mut last = Instant::now();
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) => return Ok(offset),
                            Ok(n) => {
                                let at = unix_now();
                                if let Some(k) = buf[..n]
                                    .iter()
                                    .enumerate()
                                    .position(|(k, b)| *b != pattern(offset + k as u64))
                                {
                                    bail!("byte {} of the session is wrong", offset + k as u64);
                                }
                                offset += n as u64;
                                last = Instant::now();
                                received.store(offset, Ordering::Relaxed);
                                if let Ok(mut a) = arrivals.lock() {
                                    a.push((at, offset));
                                }
                            }
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut
                                    // A read with a timeout is not restarted after a signal
                                    // (or a stop and continue): signal(7).
                                    || e.kind() == std::io::ErrorKind::Interrupted =>
                            {
                                if stop.load(Ordering::Relaxed)
                                    && last.elapsed() > Duration::from_secs(20)
                                {
                                    return Ok(offset);
                                }
                            }
                            Err(e) => return Err(e).context("reading at the MN"),
                        }
                    }
                })();
                r.unwrap_or_else(|e| {
                    record(&error, &e.context("MN receiver"));
                    0
                })
            })
        };
        let s = SessionStream {
            stop,
            received,
            arrivals,
            error,
            sender: Some(sender),
            receiver: Some(receiver),
            echo: Some(echo),
        };
        let deadline = Instant::now() + crate::daemon::patience(Duration::from_secs(5));
        while s.received() == 0 {
            s.check()?;
            ensure!(
                Instant::now() < deadline,
                "no data came back on the session within 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }

    /// Bytes the MN has read back and checked.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Fails if the session broke: a thread's error (a reset, a wrong byte), or one of them
    /// ending before [`finish`](Self::finish).
    pub fn check(&self) -> Result<()> {
        if let Some(e) = self.error.lock().ok().and_then(|e| e.clone()) {
            bail!("the TCP session broke: {e}");
        }
        for (what, h) in [
            ("MN sender", &self.sender),
            ("MN receiver", &self.receiver),
            ("correspondent", &self.echo),
        ] {
            ensure!(
                h.as_ref().is_some_and(|h| !h.is_finished()),
                "the TCP session broke: the {what} ended"
            );
        }
        Ok(())
    }

    /// The Unix time of the first data read back after `t`.
    pub fn first_data_after(&self, t: f64) -> Option<f64> {
        let a = self.arrivals.lock().ok()?;
        a.iter().map(|&(at, _)| at).find(|&at| at > t)
    }

    /// The longest time without data read back in `[from, to]`, counted from the last
    /// arrival before `from` (so an outage that began just before `from` counts whole) and up
    /// to `to` (so one that has not ended counts too).
    pub fn longest_gap(&self, from: f64, to: f64) -> f64 {
        let Ok(a) = self.arrivals.lock() else {
            return f64::INFINITY;
        };
        let mut last = a
            .iter()
            .map(|&(at, _)| at)
            .take_while(|&at| at <= from)
            .last()
            .unwrap_or(from);
        let mut gap = 0.0f64;
        for at in a
            .iter()
            .map(|&(at, _)| at)
            .filter(|&at| at > from && at <= to)
        {
            gap = gap.max(at - last);
            last = at;
        }
        gap.max(to - last)
    }

    /// Stops writing, closes the MN's side, waits for the correspondent to echo the rest and
    /// close, and checks that every byte came back.
    pub fn finish(mut self) -> Result<SessionTotals> {
        self.check()?;
        self.stop.store(true, Ordering::Relaxed);
        let join = |h: Option<JoinHandle<u64>>, what: &str| -> Result<u64> {
            h.context("joined twice")?
                .join()
                .map_err(|_| anyhow::anyhow!("the {what} thread panicked"))
        };
        let sent = join(self.sender.take(), "MN sender")?;
        let received = join(self.receiver.take(), "MN receiver")?;
        let echoed = join(self.echo.take(), "correspondent")?;
        if let Some(e) = self.error.lock().ok().and_then(|e| e.clone()) {
            bail!("the TCP session broke: {e}");
        }
        ensure!(
            sent == echoed && echoed == received,
            "the MN sent {sent} bytes, the correspondent echoed {echoed}, the MN read back {received}"
        );
        Ok(SessionTotals {
            sent,
            echoed,
            received,
        })
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The ESP parameters that set its per-packet overhead (RFC 4303 §2), as read from
/// `swanctl --list-sas` (e.g. `INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EspSuite {
    /// The proposal as strongSwan names it, e.g. `AES_GCM_16-128`.
    pub name: String,
    /// Tunnel mode: a new IPv4 header (20 octets).
    pub tunnel: bool,
    /// ESP in UDP (RFC 3948): 8 octets more.
    pub udp_encap: bool,
    /// Octets of the IV in each packet.
    pub iv: usize,
    /// Octets of the integrity check value.
    pub icv: usize,
    /// The cipher's block size: the plaintext (payload, padding, pad length, next header) is
    /// padded to a multiple of it, and then so that the ICV starts on a 4-octet boundary.
    pub block: usize,
}

impl EspSuite {
    /// Reads the first CHILD_SA's suite from `swanctl --list-sas` output.
    pub fn from_list_sas(text: &str) -> Result<EspSuite> {
        let line = text
            .lines()
            .find(|l| l.contains("ESP:"))
            .with_context(|| format!("no ESP CHILD_SA in:\n{text}"))?;
        let name = line
            .split("ESP:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default()
            .trim_end_matches(',')
            .to_owned();
        let mut parts = name.split('/');
        let encr = parts.next().unwrap_or_default();
        let integ = parts.next();
        // mipd's own model of the transforms (it sizes the XFRM interface with it): what the
        // lab measures on the wire checks it.
        let shape = EspShape::of(encr, integ)
            .with_context(|| format!("unknown ESP suite {name} in {line}"))?;
        let (iv, icv, block) = (shape.iv as usize, shape.icv as usize, shape.block as usize);
        Ok(EspSuite {
            tunnel: line.contains("TUNNEL"),
            udp_encap: line.contains("-in-UDP"),
            name,
            iv,
            icv,
            block,
        })
    }

    /// Octets of padding for a `payload`-octet inner packet (RFC 4303 §2.4), as strongSwan's
    /// libipsec (esp_packet.c) and the kernel's esp4 pad.
    pub fn padding(&self, payload: usize) -> usize {
        let shape = EspShape {
            iv: self.iv as u32,
            icv: self.icv as u32,
            block: self.block as u32,
        };
        shape.padding(payload as u32) as usize
    }

    /// What ESP adds to a `payload`-octet inner packet, part by part.
    pub fn overhead(&self, payload: usize) -> Vec<(&'static str, usize)> {
        let mut parts = Vec::new();
        if self.tunnel {
            parts.push(("ESP tunnel IPv4 header", 20));
        }
        if self.udp_encap {
            parts.push(("UDP (NAT-T, RFC 3948)", 8));
        }
        parts.push(("SPI + sequence number", 8));
        parts.push(("IV", self.iv));
        parts.push(("padding", self.padding(payload)));
        parts.push(("pad length + next header", 2));
        parts.push(("ICV", self.icv));
        parts
    }
}

/// The layers an access mode puts around a user packet of `inner` octets on the access link
/// (between the mobile node and the next hop), innermost first, with their sizes: what the
/// outer IPv4 packet's length should exceed the user packet's by. `esp` is needed outside;
/// `x_udp` says whether the x-HA's tunnel is RFC 3519 IP-in-UDP (behind a NAT) rather than
/// IP-in-IP. Through a foreign agent (f, fvc) the agent's tunnel to the home agent starts and
/// ends at the agent (RFC 5944 §4.2, RFC 3024's reverse tunnel), so it is not on the access
/// link: f adds nothing there, fvc only the i-MIP and the ESP around it (the layering of mc).
pub fn expected_overhead(
    mode: &str,
    inner: usize,
    esp: Option<&EspSuite>,
    x_udp: bool,
) -> Result<Vec<(&'static str, usize)>> {
    if mode == "f" {
        return Ok(vec![(
            "none: the i-MIP tunnel ends at the foreign agent",
            0,
        )]);
    }
    let mut parts = vec![("i-MIP IP-in-IP (RFC 2003)", 20)];
    if mode == "c" {
        return Ok(parts);
    }
    let esp = esp.context("outside, the overhead depends on the ESP suite")?;
    parts.extend(esp.overhead(inner + 20));
    match (mode, x_udp) {
        // fvc: the x-MIP IP-in-IP runs between the foreign agent and the x-HA.
        ("mc" | "fvc", _) => {}
        ("cvc", false) => parts.push(("x-MIP IP-in-IP (RFC 2003)", 20)),
        ("cvc", true) => parts.push(("x-MIP IP-in-UDP (RFC 3519: IP 20, UDP 8, tunnel 4)", 32)),
        (other, _) => bail!("unknown access mode {other}"),
    }
    Ok(parts)
}

/// RFC 5265 §5.2's figures: the maximum overhead of each access mode on the access link for
/// its reference ESP (64-bit block cipher, HMAC-96: 57 octets), and what NAT traversal adds (8
/// for IPsec's, 12 for Mobile IP's). mc is not an RFC 5265 mode (draft-ietf-mip4-mobike-connectivity); its
/// layering is the RFC's fvc without the foreign agent: i-MIP inside the VPN, nothing below.
pub mod rfc5265_5_2 {
    pub const IPIP: usize = 20;
    pub const ESP: usize = 57;
    pub const IPSEC_NAT_T: usize = 8;
    pub const MIP_NAT_T: usize = 12;
    /// The foreign agent decapsulates: nothing on the access link.
    pub const F: usize = 0;
    pub const C: usize = IPIP;
    pub const FVC: usize = IPIP + ESP;
    pub const CVC: usize = IPIP + ESP + IPIP;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_suite_and_padding() {
        let text = "mipx: #1, ESTABLISHED, IKEv2\n  \
                    intranet: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128\n";
        let s = EspSuite::from_list_sas(text).unwrap();
        assert_eq!(
            s,
            EspSuite {
                name: "AES_GCM_16-128".into(),
                tunnel: true,
                udp_encap: true,
                iv: 8,
                icv: 16,
                block: 1,
            }
        );
        // 1048 + 2 is 2 short of a multiple of 4.
        assert_eq!(s.padding(1048), 2);
        assert_eq!(s.padding(1050), 0);
        let total = |mode, inner, udp| -> usize {
            expected_overhead(mode, inner, Some(&s), udp)
                .unwrap()
                .iter()
                .map(|p| p.1)
                .sum()
        };
        assert_eq!(total("c", 1028, false), 20);
        // 20 + 20 + 8 + 8 + 8 + pad + 2 + 16, the i-MIP packet 1048 octets: pad 2.
        assert_eq!(total("mc", 1028, false), 84);
        assert_eq!(total("cvc", 1028, false), 104);
        assert_eq!(total("cvc", 1028, true), 116);
        // Through a foreign agent: nothing in f; in fvc the x-MIP tunnel is the agent's.
        assert_eq!(total("f", 1028, false), 0);
        assert_eq!(total("fvc", 1028, false), 84);
    }

    #[test]
    fn cbc_suite() {
        let text = "  net: #2, INSTALLED, TUNNEL, ESP:AES_CBC-128/HMAC_SHA2_256_128\n";
        let s = EspSuite::from_list_sas(text).unwrap();
        assert_eq!((s.iv, s.icv, s.block, s.udp_encap), (16, 16, 16, false));
        // 1048 + 2 = 1050: 6 to 1056.
        assert_eq!(s.padding(1048), 6);
    }
}
