//! `cargo xtask bench <which>`: benchmarks that follow BENCH-METHOD.md — every figure is reported
//! next to a baseline measured in the same run, interleaved with it, over several rounds, as a
//! median with its min–max. Results go to `BENCHMARKS.md` at the workspace root.

mod dataplane;
mod detection;
mod fa;
mod loadgen;
mod registration;
mod vpn;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::cmd::probe;

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// Registrations per second, reply latency and peak RSS of a `mipd` home agent with
    /// 100,000 simulated mobile nodes over UDP on loopback, against a UDP echo baseline.
    Registration(registration::Options),
    /// CPU cost per packet of the eBPF dataplane (HA encapsulation, reverse-tunnel
    /// decapsulation) end to end over veth and per program, against XDP_DROP, XDP_REDIRECT,
    /// Linux forwarding and Linux VXLAN measured in the same run (root; writes BENCHMARKS.md
    /// and docs/bench-dataplane.png).
    Dataplane(dataplane::Options),
    /// RFC 5265 internal network detection: link change to decision and to first user packet,
    /// against a plain registration in the same round, and plaintext leaked on the external
    /// segment (root; writes BENCHMARKS.md).
    Detection(detection::Options),
    /// RFC 5265 VPN layer: bulk TCP throughput in access modes c, mc and cvc against no
    /// tunnelling in the same round, and handover times per move and mode from the lab's walks
    /// (root; writes BENCHMARKS.md).
    Vpn(vpn::Options),
    /// The foreign agent's XDP fast path (`fa_xdp`): ns per program run for IP-in-IP and
    /// IP-in-UDP decapsulation and reverse tunnelling and triangle routing, against
    /// `mipx_drop` on the same frame size, in the fixture table's namespaces (root; writes
    /// BENCHMARKS.md).
    Fa(fa::Options),
}

pub(crate) fn run(options: &Options) -> Result<()> {
    if cfg!(debug_assertions) {
        return reexec_optimised();
    }
    match &options.which {
        Which::Registration(o) => registration::run(o),
        Which::Dataplane(o) => dataplane::run(o),
        Which::Detection(o) => detection::run(o),
        Which::Vpn(o) => vpn::run(o),
        Which::Fa(o) => fa::run(o),
    }
}

/// `cargo xtask` builds xtask unoptimised, which would make the load generator (HMAC-MD5 per
/// datagram) slower than what it measures. Build it in release and run that instead, with the
/// same arguments.
fn reexec_optimised() -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::cmd::run(
        Command::new(cargo)
            .args(["build", "--release", "-p", "xtask"])
            .current_dir(&root),
    )?;
    let exe = target_dir().join("release/xtask");
    let err = Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    Err(err).with_context(|| format!("running {}", exe.display()))
}

/// Builds `bin` of the tests crate in release (the benchmarks that need namespaces and the
/// eBPF object live there, which xtask must not depend on) and returns its path. `mipd` and
/// `mipctl`, which those binaries start from `target/release`, are built first.
fn build_test_bin(bin: &str) -> Result<PathBuf> {
    let root = workspace_root();
    crate::cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "mipx-control", "--bins"])
            .current_dir(&root),
    )?;
    crate::cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "mipx-tests", "--bin", bin])
            .current_dir(&root),
    )?;
    Ok(target_dir().join("release").join(bin))
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative to the workspace
/// root, where xtask runs cargo), else `target/` in the workspace root.
pub(crate) fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The workspace root (xtask's parent directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Median, minimum and maximum of a set of measurements.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median (min–max)`, each value formatted by `f`.
    fn show(&self, f: impl Fn(f64) -> String) -> String {
        format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
    }
}

/// An integer with thousands separators: `123,456`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let digits = format!("{}", x.round() as i64);
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Facts about the machine a benchmark ran on, for the report.
#[derive(Clone)]
struct Machine {
    /// CPUs online (not only those this process may use).
    cpus: usize,
    cpu_model: String,
    kernel: String,
    rustc: String,
    date: String,
    commit: String,
}

impl Machine {
    /// Call before pinning this process to a CPU: `available_parallelism` honours affinity.
    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "?".into(), |s| s.trim().into());
        let root = workspace_root();
        let rustc = probe(Command::new("rustc").arg("--version").current_dir(&root))
            .map_or_else(|| "rustc ?".into(), |s| s.trim().to_string());
        let commit = probe(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        )
        .map(|c| {
            let dirty = probe(
                Command::new("git")
                    .args(["status", "--porcelain", "--untracked-files=no"])
                    .current_dir(&root),
            )
            .is_some_and(|s| !s.trim().is_empty());
            format!(
                "{}{}",
                c.trim(),
                if dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            )
        })
        .unwrap_or_else(|| "unknown commit".into());
        Machine {
            cpus,
            cpu_model,
            kernel,
            rustc,
            date: utc_now(),
            commit,
        }
    }
}

/// Now, UTC, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

const BENCHMARKS_MD: &str = "BENCHMARKS.md";

/// Replaces the generated part of section `heading` in BENCHMARKS.md with `body`.
///
/// The generated part sits between two HTML comments, so the hand-written analysis after them
/// survives a re-run. A missing file or section is created.
fn update_benchmarks_md(heading: &str, marker: &str, body: &str) -> Result<PathBuf> {
    let path = workspace_root().join(BENCHMARKS_MD);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n\n\
             Measured on the development machines with `cargo xtask bench ...`; see \
             BENCH-METHOD.md for the method: every figure is a ratio to a baseline measured in \
             the same run, interleaved, five or more rounds, median with min–max.\n"
            .into(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let begin = format!(
        "<!-- {marker}:begin (generated by cargo xtask bench; edits here are overwritten) -->"
    );
    let end = format!("<!-- {marker}:end -->");
    let generated = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(&format!("<!-- {marker}:begin")), text.find(&end)) {
        (Some(b), Some(e)) if b < e => text.replace_range(b..e + end.len(), &generated),
        _ => {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let _ = write!(text, "\n## {heading}\n\n{generated}\n");
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and CPU_SET bounds-checks `cpu` against its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is valid for `size_of` bytes.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_formatting() {
        let s = Spread::of([3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
