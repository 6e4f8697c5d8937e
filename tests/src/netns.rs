//! RAII network namespaces for privileged tests (DESIGN.md §1.6).
//!
//! Every test builds its own topology in namespaces named `mipx-<pid>-<n>-<tag>`, so tests run in
//! parallel, a crashed run is easy to identify (and clean up by pid), and the host's interfaces
//! are never touched. Everything goes through `ip(8)` so a failing test can be reproduced by hand
//! with the same commands.

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd as _,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result, bail};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A network namespace created with `ip netns add` and deleted (with every process still
/// inside it killed) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace whose name contains `tag`, with loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!(
            "mipx-{}-{}-{tag}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, Drop cleans up even if the next step fails.
        let ns = Self { name };
        ns.set_up("lo")?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that will run `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace, waits, and returns its stdout; a non-zero exit is an
    /// error carrying the command line and stderr.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<String> {
        let (program, args) = argv.split_first().context("exec: empty argv")?;
        run(self.command(program).args(args))
    }

    /// Starts `argv` inside the namespace without waiting for it. The caller owns the child;
    /// anything still running in the namespace is killed when the `Netns` drops.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Child> {
        let (program, args) = argv.split_first().context("spawn: empty argv")?;
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd.spawn().with_context(|| format!("spawning {cmd:?}"))
    }

    /// Runs `ip <args>` against this namespace (`ip -n NAME ...`).
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets interface `ifname` up.
    pub fn set_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", "dev", ifname, "up"]).map(drop)
    }

    /// Adds `cidr` (e.g. `"10.0.0.1/24"`) to `ifname`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Moves the calling *thread* into this namespace until the guard drops.
    ///
    /// Needed for in-process work that resolves names or indices in the caller's namespace,
    /// such as attaching XDP to an interface by name. Network namespaces are per thread, so
    /// other tests running in parallel are unaffected.
    pub fn enter(&self) -> Result<NetnsGuard> {
        enter_named(&self.name)
    }
}

/// Makes the calling thread enter the namespace named `name` (as [`Netns::enter`]), for
/// threads that do not own the [`Netns`] (the owner must outlive the guard).
pub fn enter_named(name: &str) -> Result<NetnsGuard> {
    let original = File::open("/proc/thread-self/ns/net")
        .context("opening this thread's network namespace")?;
    let target = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening /run/netns/{name}"))?;
    setns(&target).with_context(|| format!("entering network namespace {name}"))?;
    Ok(NetnsGuard { original })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill leftovers (daemons a test spawned and did not reap): a process inside keeps the
        // namespace, and its interfaces, alive after `ip netns del`.
        if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", &self.name])) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill has no memory-safety preconditions; the pid came from this
                // namespace, which only this test's children can be in.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            // Drop cannot fail; say so loudly so a leak is noticed.
            eprintln!(
                "warning: could not delete network namespace {}: {err:#}",
                self.name
            );
        }
    }
}

/// Returns the calling thread to the namespace it was in before [`Netns::enter`].
#[derive(Debug)]
#[must_use = "the thread leaves the namespace when the guard drops"]
pub struct NetnsGuard {
    original: File,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // A thread stranded in a test namespace would run the rest of the test in the wrong
        // place; better to abort the test.
        setns(&self.original).expect("returning to the original network namespace");
    }
}

fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: `ns` is an open namespace file descriptor for the duration of the call;
    // setns(2) only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates a veth pair with end `a.1` in namespace `a.0` and end `b.1` in `b.0`, both up.
///
/// The pair is created directly inside `a.0` (`ip -n`), so it never appears in the host's
/// namespace. Interface names are limited to 15 bytes. It disappears with either namespace.
pub fn veth_pair(a: (&Netns, &str), b: (&Netns, &str)) -> Result<()> {
    let ((ns_a, if_a), (ns_b, if_b)) = (a, b);
    ns_a.ip(&[
        "link",
        "add",
        if_a,
        "type",
        "veth",
        "peer",
        "name",
        if_b,
        "netns",
        ns_b.name(),
    ])?;
    ns_a.set_up(if_a)?;
    ns_b.set_up(if_b)?;
    Ok(())
}

/// Runs `cmd` with stdin closed, returns stdout; a non-zero exit is an error with stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    String::from_utf8(stdout).with_context(|| format!("{cmd:?}: stdout is not UTF-8"))
}
