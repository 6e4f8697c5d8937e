//! Real `mipd` processes for end-to-end tests: build the binaries once, write configs and key
//! files into a private directory, run daemons inside namespaces, query them with `mipctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::Netns;

/// Set by `cargo xtask test` for the runs inside the Debian 12 VM: it built `mipd` and
/// `mipctl` on the host just before, and the guest has no toolchain to build with.
pub const PREBUILT_ENV: &str = "MIPX_PREBUILT_BINARIES";

/// Paths of the `mipd` and `mipctl` binaries of this workspace, built on first use with the
/// same profile as the running test, so a test never runs stale binaries.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        if std::env::var_os(PREBUILT_ENV).is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "mipx-control", "--bins"])
                .status()
                .expect("running cargo build for mipd/mipctl");
            assert!(status.success(), "building mipd/mipctl failed");
        }
        // A test runs from target/<profile>/deps/, xtask from target/<profile>/.
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe.parent().expect("target dir").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        (dir.join("mipd"), dir.join("mipctl"))
    })
}

/// A private directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mipx-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file with the given Unix permissions.
    pub fn write(&self, name: &str, contents: &str, mode: u32) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::write(&p, contents)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `mipd` running inside a namespace; killed on drop. Its log goes to `<dir>/<name>.log`.
#[derive(Debug)]
pub struct Mipd {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Mipd {
    /// [`start`](Self::start) with the socket and log named after `name` in `dir`.
    pub fn start_named(ns: &Netns, dir: &TempDir, name: &str, config: &Path) -> Result<Self> {
        Self::start(
            ns,
            config,
            &dir.path(&format!("{name}.sock")),
            &dir.path(&format!("{name}.log")),
        )
    }

    pub fn start(ns: &Netns, config: &Path, socket: &Path, log: &Path) -> Result<Self> {
        let (mipd, _) = binaries();
        // A socket left by a killed daemon would make us think the new one is up already.
        let _ = std::fs::remove_file(socket);
        let logfile = std::fs::File::create(log)?;
        let child = ns
            .command(mipd)
            .arg("--config")
            .arg(config)
            .args(["--log", "debug"])
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .spawn()
            .context("spawning mipd")?;
        let d = Mipd {
            child,
            socket: socket.into(),
            log: log.into(),
        };
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "mipd did not open {} in time; log:\n{}",
                    socket.display(),
                    d.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `mipctl --socket S --json ARGS` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.ctl(&[&["--json"], args].concat())?;
        serde_json::from_str(&out).with_context(|| format!("mipctl output is not JSON: {out}"))
    }

    /// Runs `mipctl --socket S ARGS` and returns stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let (_, mipctl) = binaries();
        let out = Command::new(mipctl)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "mipctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The dataplane counters from `mipctl stats`, by name.
    pub fn dataplane_counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let v = self.ctl_json(&["stats"])?;
        let map = v["stats"]["dataplane"]
            .as_object()
            .context("mipctl stats has no dataplane counters")?;
        Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect())
    }

    /// `kill -9`: no chance to clean up, as after a crash.
    pub fn kill_hard(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("mipd did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mipd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` (scaled by
/// [`patience`]).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let timeout = patience(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A packet capture running in a namespace (tcpdump), drained and stopped on
/// [`Capture::finish`].
#[derive(Debug)]
pub struct Capture {
    child: Child,
    /// tcpdump's statistics lines (`N packets captured, N packets received by filter, N
    /// packets dropped by kernel`), in the order it printed them, read from its stderr.
    stats: Arc<Mutex<Vec<[u64; 3]>>>,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, ifname: &str, filter: &str, file: &Path) -> Result<Self> {
        use std::io::BufRead as _;
        let mut child = ns
            .command("tcpdump")
            .args([
                "-i",
                ifname,
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-n",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump (is it installed? run `cargo xtask setup`)")?;
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let stats = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening) = std::sync::mpsc::channel();
        let sink = Arc::clone(&stats);
        std::thread::spawn(move || {
            let mut early = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = listening_tx.send(Ok(()));
                } else if let Some(counts) = parse_tcpdump_stats(&line)
                    && let Ok(mut s) = sink.lock()
                {
                    s.push(counts);
                } else {
                    early.push_str(&line);
                    early.push('\n');
                }
            }
            // tcpdump exited: if it never listened, say why.
            let _ = listening_tx.send(Err(early));
        });
        let cap = Capture {
            child,
            stats,
            file: file.into(),
        };
        // tcpdump says "listening on" once its socket is bound with the filter attached and the
        // file is open, right before it starts reading: from then on nothing is missed.
        match listening.recv_timeout(patience(Duration::from_secs(10))) {
            Ok(Ok(())) => Ok(cap),
            Ok(Err(why)) => bail!("tcpdump on {ifname} exited: {why}"),
            Err(_) => bail!("tcpdump on {ifname} did not start listening"),
        }
    }

    /// Packets matching the display filter `filter` captured so far (the file is written per
    /// packet, `-U`; a packet being written is not counted yet).
    pub fn count(&self, filter: &str) -> Result<usize> {
        Ok(tshark_lenient(
            &self.file,
            &["-Y", filter, "-T", "fields", "-e", "frame.number"],
        )?
        .lines()
        .count())
    }

    /// Polls the running capture until at least `at_least` packets match the display filter
    /// `filter`; returns the count then. For waits on traffic that must show up.
    pub fn wait_count(&self, filter: &str, at_least: usize, timeout: Duration) -> Result<usize> {
        wait_for(
            timeout,
            &format!("{at_least} packets matching `{filter}`"),
            || {
                let n = self.count(filter)?;
                Ok((n >= at_least).then_some(n))
            },
        )
    }

    /// tcpdump's statistics, asked for with SIGUSR1: (captured, received by filter, dropped).
    fn ask_stats(&self) -> Result<[u64; 3]> {
        let before = self.stats.lock().map(|s| s.len()).unwrap_or(0);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
        wait_for(Duration::from_secs(10), "tcpdump's statistics", || {
            let s = self.stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            Ok(s.get(before).copied())
        })
    }

    /// Stops tcpdump once it has written every packet the kernel queued for it, and returns
    /// the capture's path. SIGINT ends tcpdump's loop at once, dropping whatever still waits in
    /// its socket; so first wait until tcpdump has taken everything: its count of packets
    /// written plus the kernel's drops reaches the kernel's count of packets that passed the
    /// filter, or (where libpcap discards some in user space, as the outgoing copies on `lo`)
    /// two answers in a row show no change.
    pub fn finish(mut self) -> Result<PathBuf> {
        let limit = patience(Duration::from_secs(20));
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            let now = self.ask_stats()?;
            let [captured, received, dropped] = now;
            if captured + dropped >= received || last == Some(now) {
                break;
            }
            if Instant::now() > deadline {
                bail!("tcpdump has written {captured} of {received} packets after {limit:?}");
            }
            last = Some(now);
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        Ok(self.file.clone())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // A capture abandoned by a failing test (finish already reaped it otherwise).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tcpdump: 10 packets captured, 20 packets received by filter, 0 packets dropped by kernel`
/// (the line SIGUSR1 makes tcpdump print; "1 packet" in the singular, and `, N packets dropped
/// by interface` after it where the driver counts drops).
fn parse_tcpdump_stats(line: &str) -> Option<[u64; 3]> {
    let rest = line.strip_prefix("tcpdump: ").unwrap_or(line);
    let mut counts = [0; 3];
    let mut parts = rest.split(", ");
    for (i, what) in ["captured", "received by filter", "dropped by kernel"]
        .into_iter()
        .enumerate()
    {
        let (n, tail) = parts.next()?.split_once(' ')?;
        let tail = tail
            .strip_prefix("packets ")
            .or_else(|| tail.strip_prefix("packet "))?;
        if tail != what {
            return None;
        }
        counts[i] = n.parse().ok()?;
    }
    Some(counts)
}

/// `d` scaled by `MIPX_TEST_PATIENCE` (a factor, default 1; `cargo xtask test` sets it for the
/// runs in the emulated VM, about ten times slower). Only deadlines scale, never a bound the
/// RFCs set: a wait that polls returns as soon as its condition holds, so a generous deadline
/// costs nothing when things work.
pub fn patience(d: Duration) -> Duration {
    let factor = std::env::var("MIPX_TEST_PATIENCE")
        .ok()
        .and_then(|f| f.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * factor
}

/// Runs tshark over a capture and returns its stdout.
pub fn tshark(file: &Path, args: &[&str]) -> Result<String> {
    let (ok, out) = run_tshark(file, args)?;
    if !ok {
        bail!("tshark {args:?} failed");
    }
    Ok(out)
}

/// tshark over a capture that may still be being written: its last packet may be cut short,
/// which tshark reports with a failing status after printing everything before it.
fn tshark_lenient(file: &Path, args: &[&str]) -> Result<String> {
    Ok(run_tshark(file, args)?.1)
}

/// tshark's success and stdout.
fn run_tshark(file: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .context("running tshark (is it installed? run `cargo xtask setup`)")?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?))
}

/// Fails if tshark's dissectors find a frame of the capture malformed or an expert error in it:
/// what mipx puts on the wire must parse in an independent implementation.
pub fn ensure_dissects_cleanly(file: &Path) -> Result<()> {
    let flagged = tshark(
        file,
        &["-Y", "_ws.malformed || _ws.expert.severity >= error"],
    )?;
    if !flagged.trim().is_empty() {
        bail!(
            "tshark flags frames of {} as malformed:\n{flagged}",
            file.display()
        );
    }
    Ok(())
}

/// Packets in a capture matching a tshark display filter.
pub fn tshark_count(file: &Path, filter: &str) -> Result<usize> {
    Ok(
        tshark(file, &["-Y", filter, "-T", "fields", "-e", "frame.number"])?
            .lines()
            .count(),
    )
}

impl Mipd {
    /// One counter of `mipctl stats --json`, by its path under `stats` (e.g. `["ha",
    /// "dropped_untrusted"]`).
    pub fn stat(&self, path: &[&str]) -> Result<u64> {
        let v = self.ctl_json(&["stats"])?;
        let mut at = &v["stats"];
        for p in path {
            at = &at[*p];
        }
        at.as_u64()
            .with_context(|| format!("no {} in mipctl stats: {v}", path.join(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tcpdump_stats;

    #[test]
    fn tcpdump_statistics_lines() {
        assert_eq!(
            parse_tcpdump_stats(
                "tcpdump: 10 packets captured, 20 packets received by filter, 0 packets dropped by kernel"
            ),
            Some([10, 20, 0])
        );
        assert_eq!(
            parse_tcpdump_stats(
                "tcpdump: 1 packet captured, 1 packet received by filter, 0 packets dropped by kernel, 2 packets dropped by interface"
            ),
            Some([1, 1, 0])
        );
        assert_eq!(parse_tcpdump_stats("tcpdump: listening on lo"), None);
    }
}
