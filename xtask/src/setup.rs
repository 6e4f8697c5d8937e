//! `cargo xtask setup`: make a Debian 12 machine able to build and test mipx (DESIGN.md §8),
//! on its own kernel and on Debian 12's in a VM (`vm.rs`).
//!
//! Idempotent and cheap when nothing is missing: each step probes first and only acts (and only
//! then needs root) when something is absent, so CI can run it before every test run.

use std::{env, ffi::OsString, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, privileged, probe},
    vm,
};

#[derive(Debug, Default, clap::Args)]
pub(crate) struct Options {
    /// Only report what is missing; change nothing.
    #[arg(long)]
    check: bool,
}

/// Debian packages, grouped by why we need them.
const PACKAGES: &[&str] = &[
    // A C toolchain and linker for host crates and for building bpf-linker.
    "build-essential",
    "pkg-config",
    // LLVM 22 (bookworm-security) for bpf-linker: rustc 1.98 emits LLVM 22 bitcode.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Network namespaces, links, XDP inspection, captures, NAT in the lab and tests.
    "iproute2",
    "iputils-ping",
    "ethtool",
    "nftables",
    // `conntrack -F`: the NAT-rebinding test makes the lab's NAT forget its mappings.
    "conntrack",
    "tcpdump",
    "tshark",
    // Independent packet generator for fixtures with provenance (DESIGN.md §1.7).
    "python3-scapy",
    // The chart of `cargo xtask bench dataplane` (docs/bench-dataplane.png).
    "python3-matplotlib",
    // strongSwan with userspace IPsec (kernel-libipsec) and VICI (DESIGN.md §8).
    "strongswan-charon",
    "strongswan-swanctl",
    "strongswan-pki",
    "libcharon-extra-plugins",
    "libstrongswan-standard-plugins",
    "libstrongswan-extra-plugins",
    // The VM with Debian 12's own kernel (`cargo xtask vm`): QEMU, modprobe for the guest,
    // the busybox virtme-ng's init uses, and a virtualenv for virtme-ng itself.
    "qemu-system-x86",
    "kmod",
    "busybox-static",
    "python3-venv",
];

/// bpf-linker release line built against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const BPFFS: &str = "/sys/fs/bpf";

pub(crate) fn run(options: &Options) -> Result<()> {
    let mut missing_anything = false;
    missing_anything |= packages(options.check)?;
    missing_anything |= bpf_linker(options.check)?;
    missing_anything |= bpffs(options.check)?;
    missing_anything |= vm::prepare(options.check)?;
    if options.check && missing_anything {
        bail!("setup is incomplete; run `cargo xtask setup`");
    }
    eprintln!("xtask setup: everything is in place");
    Ok(())
}

/// Installs the Debian packages that are not installed. Returns whether any were missing.
fn packages(check: bool) -> Result<bool> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    eprintln!("xtask setup: missing packages: {}", missing.join(" "));
    if check {
        return Ok(true);
    }

    // tshark's postinst asks whether non-root users may capture; answer in advance so the
    // install never blocks on a prompt (we capture as root anyway).
    let mut preseed = privileged("debconf-set-selections");
    let script = "wireshark-common wireshark-common/install-setuid boolean false\n";
    pipe_into(&mut preseed, script)?;

    // Only refresh the index when we actually install: `apt-get update` is the slow part and
    // must not run on every CI invocation.
    cmd::run(apt().arg("update"))?;
    cmd::run(
        apt()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(true)
}

fn is_installed(package: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status == "install ok installed")
}

/// `apt-get` that never prompts (DEBIAN_FRONTEND survives `sudo` because it is an argument of
/// `env`, not inherited environment).
pub(crate) fn apt() -> Command {
    let mut cmd = privileged("env");
    cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]);
    cmd
}

fn pipe_into(cmd: &mut Command, input: &str) -> Result<()> {
    use std::io::Write as _;

    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", cmd::display(cmd)))?;
    child
        .stdin
        .take()
        .context("child stdin")?
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed: {status}", cmd::display(cmd));
    }
    Ok(())
}

/// Installs bpf-linker 0.13 built against Debian's LLVM 22, unless it is already there.
/// Returns whether it was missing.
fn bpf_linker(check: bool) -> Result<bool> {
    let version = probe(Command::new("bpf-linker").arg("--version"));
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}.");
    if version
        .as_deref()
        .is_some_and(|v| v.trim().starts_with(&wanted))
    {
        return Ok(false);
    }
    eprintln!(
        "xtask setup: bpf-linker {BPF_LINKER_VERSION} not found (found: {})",
        version.as_deref().map_or("none", str::trim)
    );
    if check {
        return Ok(true);
    }
    // llvm-sys locates LLVM through the first `llvm-config` on PATH; Debian's llvm-22 keeps it
    // under /usr/lib/llvm-22/bin, and an older LLVM elsewhere on PATH would otherwise win.
    let mut path = OsString::from(LLVM_BIN);
    if let Some(old) = env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    cmd::run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("PATH", path)
            .args(["install", "bpf-linker", "--locked", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"]),
    )?;
    Ok(true)
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there. Returns whether it was missing.
fn bpffs(check: bool) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    // Fields: device mountpoint fstype options ...
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, mountpoint, fstype) = (fields.next(), fields.next(), fields.next());
        mountpoint == Some(BPFFS) && fstype == Some("bpf")
    });
    if mounted {
        return Ok(false);
    }
    eprintln!("xtask setup: bpffs is not mounted at {BPFFS}");
    if check {
        return Ok(true);
    }
    if !Path::new(BPFFS).is_dir() {
        cmd::run(privileged("mkdir").args(["-p", BPFFS]))?;
    }
    cmd::run(privileged("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    Ok(true)
}
