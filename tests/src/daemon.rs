//! Real `mipd` processes for end-to-end tests: build the binaries once, write configs and key
//! files into a private directory, run daemons inside namespaces, query them with `mipctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::Netns;

/// Paths of the `mipd` and `mipctl` binaries of this workspace, built on first use with the
/// same profile as the running test, so a test never runs stale binaries.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "mipx-control", "--bins"])
            .status()
            .expect("running cargo build for mipd/mipctl");
        assert!(status.success(), "building mipd/mipctl failed");
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "mipd did not open {} in 10 s; log:\n{}",
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
        let deadline = Instant::now() + Duration::from_secs(10);
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

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
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

/// A packet capture running in a namespace (tcpdump), stopped and flushed on [`Capture::finish`].
#[derive(Debug)]
pub struct Capture {
    child: Child,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, ifname: &str, filter: &str, file: &Path) -> Result<Self> {
        let child = ns
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
        let cap = Capture {
            child,
            file: file.into(),
        };
        // tcpdump creates the file once it is listening.
        wait_for(Duration::from_secs(10), "tcpdump to start", || {
            Ok(file.exists().then_some(()))
        })?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(cap)
    }

    /// Stops tcpdump (SIGINT flushes the file) and returns the capture's path.
    pub fn finish(mut self) -> Result<PathBuf> {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        Ok(self.file.clone())
    }
}

/// Runs tshark over a capture and returns its stdout.
pub fn tshark(file: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .context("running tshark (is it installed? run `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!("tshark {args:?} failed");
    }
    Ok(String::from_utf8(out.stdout)?)
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
