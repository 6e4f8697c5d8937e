//! `mipx-bench-dataplane` (run by `cargo xtask bench dataplane`): the parts of the benchmark.

pub mod dut;
pub mod e2e;
pub mod netlink;
pub mod plan;
pub mod prog;
pub mod topo;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM only raise a flag, which the measurement loops check, so the run unwinds
/// normally and its namespaces, interfaces and programs are removed.
pub fn catch_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Stops the generator's `BPF_PROG_TEST_RUN` call (the kernel's loop returns EINTR on a
/// pending signal). Its handler does nothing.
pub const WAKEUP_SIGNAL: libc::c_int = libc::SIGUSR1;

extern "C" fn on_wakeup(_: libc::c_int) {}

/// Installs the no-op handler of [`WAKEUP_SIGNAL`] (without SA_RESTART).
pub fn catch_wakeup() -> Result<()> {
    // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int) = on_wakeup;
    action.sa_sigaction = handler as libc::sighandler_t;
    // SAFETY: `action` is valid; the handler is async-signal-safe (it does nothing).
    if unsafe { libc::sigaction(WAKEUP_SIGNAL, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    topo::set_affinity(0, cpu)
}

/// Writes a bench's JSON report to `path` (what `cargo xtask bench` reads back), or prints it.
pub fn write_report(path: Option<&std::path::Path>, report: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    match path {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("results written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}
