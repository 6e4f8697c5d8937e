//! `cargo xtask bench registration`: how many authenticated registrations per second a `mipd`
//! home agent sustains with 100,000 mobile nodes, their reply latency, and the daemon's peak RSS.
//!
//! Each round runs the same two phases against two servers, one after the other, each pinned to
//! the same CPU with the generator on another:
//!
//! 1. the **echo baseline**: a thread of this process answering every datagram with itself
//!    (plain blocking `recv_from` / `send_to`, the cheapest a per-datagram UDP server can be);
//! 2. a freshly started **`mipd`** (release build, empty binding cache).
//!
//! Phase 1 registers every mobile node for the first time; phase 2 re-registers every one from a
//! new care-of address with a new Identification. `mipd`'s rate is reported as a ratio to the
//! echo rate of the same round (BENCH-METHOD.md), medians with min–max over the rounds.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::loadgen::{
    Failures, LoadGen, Peer, Phase, PhaseResult, Population, REQUEST_LEN, set_rcvbuf,
};
use super::{Machine, Spread, pin_to_cpu, thousands, update_benchmarks_md, workspace_root};
use crate::cmd;

/// The pool every simulated mobile node's home address comes from (one security association).
const HOME_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8);
/// Care-of addresses (RFC 6598 shared space, never routed here: the home agent only records
/// them).
const COA_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const SPI: u32 = 4096;
const LIFETIME: u16 = 600;
/// Upper bound for `--mns`: care-of addresses of both phases must fit in 100.64.0.0/10.
const MAX_MNS: usize = 2_000_000;
/// SO_RCVBUF of the echo baseline's socket.
const ECHO_RCVBUF: usize = 4 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Simulated mobile nodes (home addresses 10.0.0.1, 10.0.0.2, ...).
    #[arg(long, default_value_t = 100_000)]
    mns: usize,
    /// Rounds of (echo, mipd); medians and min–max are over these.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests kept outstanding (closed loop).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// CPU for the server under test (mipd, echo).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    generator_cpu: usize,
    /// mipd's `--log` filter. At `info` mipd writes one line per accepted registration, which
    /// is then what is measured.
    #[arg(long, default_value = "warn")]
    mipd_log: String,
    /// After the measured rounds, run mipd once more under `perf record -e cpu-clock` (not
    /// counted) and report where its CPU time goes.
    #[arg(long)]
    profile: bool,
    /// Print the results only; leave BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
}

pub(crate) fn run(o: &Options) -> Result<()> {
    ensure!(
        o.mns >= 1 && o.mns <= MAX_MNS,
        "--mns must be 1..={MAX_MNS}"
    );
    ensure!(o.rounds >= 1, "--rounds must be at least 1");
    ensure!(o.window >= 1, "--window must be at least 1");
    ensure!(
        o.server_cpu != o.generator_cpu,
        "--server-cpu and --generator-cpu must differ"
    );
    let machine = Machine::probe();
    ensure!(
        o.server_cpu.max(o.generator_cpu) < machine.cpus,
        "this machine has {} CPUs; pick --server-cpu/--generator-cpu below that",
        machine.cpus
    );

    let root = workspace_root();
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "mipx-control", "--bins"])
            .current_dir(&root),
    )?;
    let bins = Bins {
        mipd: root.join("target/release/mipd"),
        mipctl: root.join("target/release/mipctl"),
    };

    let dir = TempDir::new()?;
    let key: Vec<u8> = {
        let mut k = vec![0u8; 16];
        std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut k)?;
        k
    };
    write_key(&dir.0.join("mn.key"), &key)?;
    let pop = Population {
        home_agent: Ipv4Addr::LOCALHOST,
        home_base: Ipv4Addr::from(u32::from(HOME_PREFIX.0) + 1),
        coa_base: COA_BASE,
        spi: SPI,
        key,
        lifetime: LIFETIME,
        mns: o.mns,
    };

    // From here on this thread is the generator. Child processes started from it inherit the
    // pin; mipd is re-pinned by taskset.
    pin_to_cpu(o.generator_cpu)?;
    eprintln!(
        "xtask: {} rounds of (echo, mipd), {} mobile nodes, window {}, server on CPU {}, generator on CPU {}",
        o.rounds,
        thousands(o.mns as f64),
        o.window,
        o.server_cpu,
        o.generator_cpu
    );
    let started = Instant::now();
    let mut rounds = Vec::new();
    for r in 1..=o.rounds {
        let echo = run_echo(o, &pop)?;
        eprintln!("  round {r} echo: {}", echo.one_line());
        let mipd = run_mipd(o, &pop, &bins, &dir.0, &format!("round{r}"), false)?;
        eprintln!("  round {r} mipd: {}", mipd.run.one_line());
        rounds.push(Round { echo, mipd });
    }
    let measured_in = started.elapsed();
    let profile = if o.profile {
        eprintln!("  profile run: mipd under perf record (not counted)");
        let p = run_mipd(o, &pop, &bins, &dir.0, "profile", true)?;
        p.profile
    } else {
        None
    };

    let report = Report {
        o,
        machine: &machine,
        rounds: &rounds,
        measured_in,
        profile: profile.as_deref(),
    };
    let text = report.render();
    println!("\n{text}");
    let failed: Vec<String> = rounds
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.problems(i + 1, o.mns))
        .collect();
    if !failed.is_empty() {
        bail!(
            "the run FAILED (BENCHMARKS.md not updated):\n  {}",
            failed.join("\n  ")
        );
    }
    if !o.no_write {
        let path = update_benchmarks_md(
            "Registration (cargo xtask bench registration)",
            "bench-registration",
            &text,
        )?;
        eprintln!("xtask: results written to {}", path.display());
    }
    Ok(())
}

struct Bins {
    mipd: PathBuf,
    mipctl: PathBuf,
}

/// One phase of one run, with the server's CPU time spent in it.
struct PhaseRun {
    result: PhaseResult,
    server_cpu: Duration,
    /// Whole-core utilisation (`/proc/stat`, every process) of the server's and the generator's
    /// CPU: above the server's or generator's own share means another tenant used the core.
    core_busy: [f64; 2],
}

impl PhaseRun {
    fn server_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.result.completed as f64
    }
    fn server_busy(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.result.elapsed.as_secs_f64()
    }
    fn generator_busy(&self) -> f64 {
        self.result.generator_cpu.as_secs_f64() / self.result.elapsed.as_secs_f64()
    }
    /// Share of the server's and the generator's core used by anything else (other tenants,
    /// kernel threads), from `/proc/stat` minus our own threads' time.
    fn foreign_load(&self) -> [f64; 2] {
        [
            (self.core_busy[0] - self.server_busy()).max(0.0),
            (self.core_busy[1] - self.generator_busy()).max(0.0),
        ]
    }
}

/// Both phases against one server.
struct Run {
    phases: [PhaseRun; 2],
    /// Datagrams the kernel dropped at the server's socket (`/proc/net/udp`).
    server_drops: u64,
}

impl Run {
    fn failures(&self) -> Failures {
        let mut f = Failures::default();
        for p in &self.phases {
            f.add(&p.result.failures);
        }
        f
    }

    fn one_line(&self) -> String {
        let [a, b] = &self.phases;
        format!(
            "register {}/s (p50 {:.0} µs, p99 {:.0} µs, server {:.2} µs CPU/req), refresh {}/s, failures {}",
            thousands(a.result.rate()),
            a.result.latency_us(50.0),
            a.result.latency_us(99.0),
            a.server_us_per_request(),
            thousands(b.result.rate()),
            self.failures().total()
        )
    }
}

/// What only mipd reports.
struct MipdRun {
    run: Run,
    /// VmRSS before phase 1, after phase 1, VmHWM after phase 2, KiB.
    rss_start_kib: u64,
    rss_registered_kib: u64,
    hwm_kib: u64,
    /// `mipctl stats`: accepted registrations, requests seen, send errors.
    accepted: u64,
    requests: u64,
    send_errors: u64,
    /// `mipctl status`: bindings after phase 2.
    bindings: u64,
    profile: Option<String>,
}

struct Round {
    echo: Run,
    mipd: MipdRun,
}

impl Round {
    fn problems(&self, round: usize, mns: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (name, run) in [("echo", &self.echo), ("mipd", &self.mipd.run)] {
            let f = run.failures();
            if f.total() > 0 {
                out.push(format!("round {round} {name}: {f}"));
            }
        }
        let m = &self.mipd;
        if m.accepted != 2 * mns as u64 {
            out.push(format!(
                "round {round} mipd: mipctl stats says accepted = {}, expected {}",
                m.accepted,
                2 * mns
            ));
        }
        if m.bindings != mns as u64 {
            out.push(format!(
                "round {round} mipd: {} bindings after phase 2, expected {mns}",
                m.bindings
            ));
        }
        if m.send_errors != 0 {
            out.push(format!("round {round} mipd: {} send errors", m.send_errors));
        }
        out
    }
}

/// Runs one phase with `generator`, reading the server's CPU time and both cores' load around it.
fn measure(
    o: &Options,
    generator: &mut LoadGen,
    phase: Phase,
    server_cpu: &dyn Fn() -> Result<Duration>,
) -> Result<PhaseRun> {
    let cores_before = [core_ticks(o.server_cpu)?, core_ticks(o.generator_cpu)?];
    let before = server_cpu()?;
    let result = generator.run(phase)?;
    let server_cpu = server_cpu()?.saturating_sub(before);
    let cores_after = [core_ticks(o.server_cpu)?, core_ticks(o.generator_cpu)?];
    let core_busy = [0, 1].map(|i| {
        let (busy, total) = (
            cores_after[i].0 - cores_before[i].0,
            cores_after[i].1 - cores_before[i].1,
        );
        if total == 0 {
            f64::NAN
        } else {
            busy as f64 / total as f64
        }
    });
    Ok(PhaseRun {
        result,
        server_cpu,
        core_busy,
    })
}

// ---------------------------------------------------------------------------------------------
// The echo baseline.

/// A UDP echo server on a thread of its own, pinned like mipd.
struct Echo {
    addr: SocketAddrV4,
    tid: libc::pid_t,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Echo {
    fn start(cpu: usize) -> Result<Echo> {
        let socket =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the echo socket")?;
        let std::net::SocketAddr::V4(addr) = socket.local_addr()? else {
            unreachable!("bound to IPv4")
        };
        // Wake up now and then to notice `stop`; costs nothing while datagrams flow.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        // The default receive buffer (208 KiB) holds only ~256 small datagrams (each is charged
        // its ~830-byte skb), so a full window could overflow it; the baseline must not lose
        // any. A larger buffer changes no per-datagram cost.
        set_rcvbuf(&socket, ECHO_RCVBUF)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("echo".into()).spawn({
            let stop = stop.clone();
            move || -> Result<()> {
                pin_to_cpu(cpu)?;
                // SAFETY: gettid has no preconditions.
                let _ = tx.send(unsafe { libc::gettid() });
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            socket.send_to(&buf[..n], from).context("echo send")?;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return Err(e).context("echo receive"),
                    }
                }
                Ok(())
            }
        })?;
        let tid = rx
            .recv_timeout(Duration::from_secs(5))
            .context("echo thread did not start")?;
        Ok(Echo {
            addr,
            tid,
            stop,
            thread: Some(thread),
        })
    }

    fn cpu_time(&self) -> Result<Duration> {
        schedstat_runtime(&PathBuf::from(format!(
            "/proc/self/task/{}/schedstat",
            self.tid
        )))
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("echo thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run_echo(o: &Options, pop: &Population) -> Result<Run> {
    let echo = Echo::start(o.server_cpu)?;
    let mut generator = LoadGen::new(echo.addr, Peer::Echo, pop.clone(), o.window)?;
    let cpu = || echo.cpu_time();
    let phases = [
        measure(o, &mut generator, Phase::Register, &cpu)?,
        measure(o, &mut generator, Phase::Refresh, &cpu)?,
    ];
    let server_drops = udp_socket_drops(echo.addr.port());
    echo.stop()?;
    Ok(Run {
        phases,
        server_drops,
    })
}

// ---------------------------------------------------------------------------------------------
// mipd.

/// A running `mipd`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Mipd {
    child: Child,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

impl Mipd {
    fn start(o: &Options, bins: &Bins, dir: &Path, label: &str) -> Result<(Mipd, SocketAddrV4)> {
        let port = free_udp_port()?;
        let socket = dir.join(format!("{label}.sock"));
        let config = dir.join(format!("{label}.toml"));
        let (prefix, len) = HOME_PREFIX;
        std::fs::write(
            &config,
            format!(
                "role = \"ha\"\napi_socket = \"{}\"\n\n[ha]\naddress = \"127.0.0.1\"\nport = {port}\nmax_lifetime = {LIFETIME}\n\n\
                 [[ha.mobile_node]]\nhome_prefix = \"{prefix}/{len}\"\nspi = {SPI}\nkey_file = \"mn.key\"\n",
                socket.display()
            ),
        )?;
        let log = dir.join(format!("{label}.log"));
        let child = Command::new("taskset")
            .arg("-c")
            .arg(o.server_cpu.to_string())
            .arg(&bins.mipd)
            .arg("--config")
            .arg(&config)
            .arg("--log")
            .arg(&o.mipd_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("starting taskset (util-linux) with mipd")?;
        let pid = child.id();
        let mut mipd = Mipd {
            child,
            pid,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = mipd.child.try_wait()? {
                bail!(
                    "mipd exited at start-up ({status}); its log:\n{}",
                    mipd.log_tail()
                );
            }
            if mipd.mipctl(bins, "status").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "mipd did not answer `mipctl status` within 10 s; its log:\n{}",
                    mipd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((mipd, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))
    }

    fn mipctl(&self, bins: &Bins, what: &str) -> Result<serde_json::Value> {
        let out = Command::new(&bins.mipctl)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .arg(what)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        ensure!(out.status.success(), "mipctl {what} failed: {}", out.status);
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing `mipctl --json {what}`"))
    }

    /// A field of `/proc/PID/status`, in kB.
    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no {field} in /proc/{}/status", self.pid))
    }

    /// CPU time of all of mipd's threads.
    fn cpu_time(&self) -> Result<Duration> {
        let mut total = Duration::ZERO;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            // A thread may end between listing and reading; it then no longer counts.
            total += schedstat_runtime(&task?.path().join("schedstat")).unwrap_or_default();
        }
        Ok(total)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(mut self) -> Result<()> {
        self.terminate();
        Ok(())
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mipd {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn run_mipd(
    o: &Options,
    pop: &Population,
    bins: &Bins,
    dir: &Path,
    label: &str,
    profile: bool,
) -> Result<MipdRun> {
    let (mipd, addr) = Mipd::start(o, bins, dir, label)?;
    let rss_start_kib = mipd.status_kib("VmRSS")?;
    let perf = if profile {
        Some(Perf::start(mipd.pid, dir)?)
    } else {
        None
    };
    let mut generator = LoadGen::new(addr, Peer::Mipd, pop.clone(), o.window)?;
    let cpu = || mipd.cpu_time();
    let register = measure(o, &mut generator, Phase::Register, &cpu)?;
    let rss_registered_kib = mipd.status_kib("VmRSS")?;
    let refresh = measure(o, &mut generator, Phase::Refresh, &cpu)?;
    let profile = perf.map(Perf::finish).transpose()?;
    let hwm_kib = mipd.status_kib("VmHWM")?;
    let server_drops = udp_socket_drops(addr.port());
    let stats = mipd.mipctl(bins, "stats")?;
    let status = mipd.mipctl(bins, "status")?;
    let num = |v: &serde_json::Value, path: &str| -> Result<u64> {
        v.pointer(path)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {path} in mipctl output: {v}"))
    };
    let run = MipdRun {
        run: Run {
            phases: [register, refresh],
            server_drops,
        },
        rss_start_kib,
        rss_registered_kib,
        hwm_kib,
        accepted: num(&stats, "/stats/ha/accepted")?,
        requests: num(&stats, "/stats/ha/requests")?,
        send_errors: num(&stats, "/stats/daemon/send_errors")?,
        bindings: num(&status, "/status/ha/bindings")?,
        profile,
    };
    mipd.stop()?;
    Ok(run)
}

/// `perf record -e cpu-clock` attached to a process (software clock: this VM has no hardware
/// counters).
struct Perf {
    child: Child,
    data: PathBuf,
}

impl Perf {
    fn start(pid: u32, dir: &Path) -> Result<Perf> {
        let data = dir.join("perf.data");
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "4000", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf (linux-perf)")?;
        // Let it attach before the load starts.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Perf { child, data })
    }

    /// Stops recording, keeps `perf.data` as `target/bench-registration.perf.data` and
    /// summarises it: the split between mipd's code, libraries and the kernel, then the hottest
    /// symbols.
    fn finish(mut self) -> Result<String> {
        // SAFETY: kill(2) on our own, unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.child.wait()?;
        let kept = workspace_root().join("target/bench-registration.perf.data");
        std::fs::copy(&self.data, &kept).with_context(|| format!("keeping {}", kept.display()))?;
        let report = |sort: &str, limit: &str, max: usize| -> Result<Vec<String>> {
            let out = Command::new("perf")
                .arg("report")
                .arg("-i")
                .arg(&kept)
                .args([
                    "--stdio",
                    "--no-children",
                    "--sort",
                    sort,
                    "--percent-limit",
                    limit,
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()?;
            ensure!(out.status.success(), "perf report failed: {}", out.status);
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| l.trim_end().trim_end_matches(['-', ' ']).to_string())
                .take(max)
                .collect())
        };
        let mut lines = vec![format!("# perf report -i {} --sort dso", kept.display())];
        lines.extend(report("dso", "0.5", 10)?);
        lines.push(format!(
            "# perf report -i {} --sort dso,symbol --percent-limit 0.8",
            kept.display()
        ));
        lines.extend(report("dso,symbol", "0.8", 40)?);
        Ok(lines.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Busy and total jiffies of `cpu` so far (`/proc/stat`; idle and iowait are not busy).
fn core_ticks(cpu: usize) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let fields: Vec<u64> = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} in /proc/stat"))?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    ensure!(fields.len() == 8, "short {name} line in /proc/stat");
    let total: u64 = fields.iter().sum();
    Ok((total - fields[3] - fields[4], total))
}

/// Field 1 of `/proc/.../schedstat`: time spent on a CPU, nanoseconds.
fn schedstat_runtime(path: &Path) -> Result<Duration> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .context("bad schedstat")?;
    Ok(Duration::from_nanos(ns))
}

/// Drops counted on the IPv4 UDP socket bound to 127.0.0.1:`port` (last column of
/// `/proc/net/udp`); 0 if it is gone.
fn udp_socket_drops(port: u16) -> u64 {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// A UDP port on 127.0.0.1 that is free right now (the kernel picks it).
fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn write_key(path: &Path, key: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    writeln!(f, "{hex}")?;
    Ok(())
}

/// A private scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path =
            std::env::temp_dir().join(format!("mipx-bench-registration-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

/// A table row: label, the figure of one phase run, its format, whether to show mipd ÷ echo.
type Row<'a> = (
    &'a str,
    &'a dyn Fn(&PhaseRun) -> f64,
    &'a dyn Fn(f64) -> String,
    bool,
);

struct Report<'a> {
    o: &'a Options,
    machine: &'a Machine,
    rounds: &'a [Round],
    measured_in: Duration,
    profile: Option<&'a str>,
}

impl Report<'_> {
    fn render(&self) -> String {
        let o = self.o;
        let m = self.machine;
        let n = o.mns as f64;
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        let mut command = format!(
            "cargo xtask bench registration --mns {} --rounds {} --window {}",
            o.mns, o.rounds, o.window
        );
        if o.mipd_log != "warn" {
            command.push_str(&format!(" --mipd-log {}", o.mipd_log));
        }
        if o.profile {
            command.push_str(" --profile");
        }
        line(format!("Command: `{command}`  "));
        line(format!(
            "Run: {}, commit {}, {:.0} s for the measured rounds.  ",
            m.date,
            m.commit,
            self.measured_in.as_secs_f64()
        ));
        line(format!(
            "Machine: {} CPUs ({}), Linux {}, {}; `mipd` release build with `--log {}`, pinned to CPU {}; \
             generator pinned to CPU {}; UDP over loopback 127.0.0.1.  ",
            m.cpus, m.cpu_model, m.kernel, m.rustc, o.mipd_log, o.server_cpu, o.generator_cpu
        ));
        line(format!(
            "Workload: {} mobile nodes in one pool (10.0.0.0/8, SPI {SPI}, HMAC-MD5), lifetime {LIFETIME} s, {} requests \
             outstanding (closed loop), {} rounds of echo then mipd, mipd restarted every round. Phase 1 registers every \
             node; phase 2 re-registers every node from a new care-of address with a new Identification. Each request \
             ({REQUEST_LEN} bytes) is built and signed by the generator inside the timed window, on its own CPU; every \
             reply's authenticator, Identification, code 0 and lifetime are checked (against echo, the echoed request's \
             authenticator). Echo: a blocking `recv_from`/`send_to` loop on a thread pinned like mipd, sending each \
             datagram back unchanged.",
            thousands(n),
            o.window,
            o.rounds
        ));
        line(String::new());

        let echo = |p: usize| self.rounds.iter().map(move |r| &r.echo.phases[p]);
        let mipd = |p: usize| self.rounds.iter().map(move |r| &r.mipd.run.phases[p]);
        let ratio = |p: usize, f: &dyn Fn(&PhaseRun) -> f64| {
            Spread::of(
                self.rounds
                    .iter()
                    .map(|r| f(&r.mipd.run.phases[p]) / f(&r.echo.phases[p])),
            )
        };
        let int = |x: f64| thousands(x);
        let f2 = |x: f64| format!("{x:.2}");
        let pct = |x: f64| format!("{:.0} %", x * 100.0);
        let us = |x: f64| thousands(x);

        line("| median (min–max) over rounds | echo baseline | mipd | mipd ÷ echo |".into());
        line("|---|--:|--:|--:|".into());
        for (p, title) in [
            (0, "phase 1: register new mobile nodes"),
            (1, "phase 2: refresh all (new CoA)"),
        ] {
            line(format!("| **{title}** | | | |"));
            let rate = |r: &PhaseRun| r.result.rate();
            let p50 = |r: &PhaseRun| r.result.latency_us(50.0);
            let p99 = |r: &PhaseRun| r.result.latency_us(99.0);
            let cpu = |r: &PhaseRun| r.server_us_per_request();
            let rows: [Row<'_>; 8] = [
                ("authenticated registrations / s", &rate, &int, true),
                ("reply latency p50, µs", &p50, &us, true),
                ("reply latency p99, µs", &p99, &us, true),
                ("server CPU per request, µs", &cpu, &f2, true),
                (
                    "server busy (its own CPU time)",
                    &|r: &PhaseRun| r.server_busy(),
                    &pct,
                    false,
                ),
                (
                    "generator thread busy",
                    &|r: &PhaseRun| r.generator_busy(),
                    &pct,
                    false,
                ),
                (
                    "server core busy, all processes",
                    &|r: &PhaseRun| r.core_busy[0],
                    &pct,
                    false,
                ),
                (
                    "generator core busy, all processes",
                    &|r: &PhaseRun| r.core_busy[1],
                    &pct,
                    false,
                ),
            ];
            for (name, get, fmt, with_ratio) in rows {
                let e = Spread::of(echo(p).map(get));
                let d = Spread::of(mipd(p).map(get));
                let r = if with_ratio {
                    ratio(p, get).show(|x| format!("{x:.2}"))
                } else {
                    String::new()
                };
                line(format!(
                    "| {name} | {} | {} | {r} |",
                    e.show(fmt),
                    d.show(fmt)
                ));
            }
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let rss_start = Spread::of(self.rounds.iter().map(|r| mib(r.mipd.rss_start_kib)));
        let rss_reg = Spread::of(self.rounds.iter().map(|r| mib(r.mipd.rss_registered_kib)));
        let hwm = Spread::of(self.rounds.iter().map(|r| mib(r.mipd.hwm_kib)));
        let per_binding = Spread::of(
            self.rounds
                .iter()
                .map(|r| (r.mipd.hwm_kib.saturating_sub(r.mipd.rss_start_kib) * 1024) as f64 / n),
        );
        let mb = |x: f64| format!("{x:.1}");
        line("| **memory (mipd)** | | | |".into());
        line(format!(
            "| RSS at start, MiB | | {} | |",
            rss_start.show(mb)
        ));
        line(format!(
            "| RSS after phase 1, MiB | | {} | |",
            rss_reg.show(mb)
        ));
        line(format!(
            "| peak RSS (VmHWM) after phase 2, MiB | | {} | |",
            hwm.show(mb)
        ));
        line(format!(
            "| (VmHWM − RSS at start) per binding, bytes | | {} | |",
            per_binding.show(int)
        ));
        line(String::new());

        line("Per round (registrations / s; mipd ÷ echo of the same round):".into());
        line(String::new());
        line(
            "| round | echo phase 1 | mipd phase 1 | ÷ | echo phase 2 | mipd phase 2 | ÷ | mipd VmHWM, MiB \
             | mipctl accepted of requests | failures | other load on server / generator core, max |"
                .into(),
        );
        line("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|".into());
        for (i, r) in self.rounds.iter().enumerate() {
            let (e, d) = (&r.echo.phases, &r.mipd.run.phases);
            let mut f = r.echo.failures();
            f.add(&r.mipd.run.failures());
            let drops = r.echo.server_drops + r.mipd.run.server_drops;
            let foreign = r
                .echo
                .phases
                .iter()
                .chain(&r.mipd.run.phases)
                .map(PhaseRun::foreign_load)
                .fold([0.0f64; 2], |a, b| [a[0].max(b[0]), a[1].max(b[1])]);
            line(format!(
                "| {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.1} | {} of {} | {}{} | {:.0} % / {:.0} % |",
                i + 1,
                int(e[0].result.rate()),
                int(d[0].result.rate()),
                d[0].result.rate() / e[0].result.rate(),
                int(e[1].result.rate()),
                int(d[1].result.rate()),
                d[1].result.rate() / e[1].result.rate(),
                mib(r.mipd.hwm_kib),
                thousands(r.mipd.accepted as f64),
                thousands(r.mipd.requests as f64),
                f.total(),
                if drops > 0 {
                    format!(" ({drops} socket drops)")
                } else {
                    String::new()
                },
                foreign[0] * 100.0,
                foreign[1] * 100.0,
            ));
        }
        line(String::new());

        let reg = Spread::of(mipd(0).map(|r| r.result.rate()));
        let refresh = Spread::of(mipd(1).map(|r| r.result.rate()));
        let worst = reg.median.min(refresh.median);
        let target_rate = 50_000.0;
        line(format!(
            "Target ≥ 50,000 registrations/s: **{}** (median {} /s registering, {} /s refreshing{}).  ",
            if worst >= target_rate {
                "met"
            } else {
                "missed"
            },
            thousands(reg.median),
            thousands(refresh.median),
            if worst >= target_rate {
                format!(", {:.1}× the target", worst / target_rate)
            } else {
                format!(", {:.0} % short", (1.0 - worst / target_rate) * 100.0)
            }
        ));
        let target_mib = 64.0;
        line(format!(
            "Target ≤ 64 MB RSS at {} bindings: **{}** (peak {:.1} MiB = {:.1} MB, max over rounds {:.1} MiB).",
            thousands(n),
            if hwm.max <= target_mib && hwm.max * 1.048_576 <= 64.0 {
                "met"
            } else {
                "missed"
            },
            hwm.median,
            hwm.median * 1.048_576,
            hwm.max
        ));
        if let Some(p) = self.profile {
            line(String::new());
            line("Where mipd's CPU time goes (`perf record -e cpu-clock` of an extra, uncounted run; overhead, DSO, symbol):".into());
            line(String::new());
            line("```".into());
            line(p.to_string());
            line("```".into());
        }
        s
    }
}
