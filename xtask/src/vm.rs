//! `cargo xtask vm`: run a command in a virtual machine booted with Debian 12's own kernel
//! (6.1, the oldest kernel mipx supports), over this checkout.
//!
//! The guest is virtme-ng over QEMU: it boots the kernel with the host's root file system
//! (with writable overlays; /var and /tmp start empty) and the checkout writable, so binaries
//! built on the host run unchanged inside. The kernel comes from Debian's archive (`apt-get
//! download`, unpacked with `dpkg-deb -x`) into [`CACHE`], outside the tree, its modules beside
//! it, where virtme-ng finds them for the guest. `setup` prepares all of it ([`prepare`]).
//!
//! KVM: /dev/kvm exists on the machines we build on but guests hang at boot there, so the VM
//! always runs under TCG (emulation). That is slow (about 15 s to boot, several times slower
//! per instruction), so nothing measured inside says anything absolute; benchmarks report
//! ratios within one run.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// Where the kernels and virtme-ng live: a machine-wide cache, never the checkout. Not under
/// /var or /tmp: the guest gets fresh ones, and virtme-ng hands the guest the kernel's modules
/// by their path on the host.
pub(crate) const CACHE: &str = "/opt/mipx";
/// virtme-ng, pinned: the version checked on these machines.
const VIRTME_NG: &str = "virtme-ng==1.42";
/// Debian 12's kernel packages: `linux-image-6.1.0-<abi>-amd64`.
const DEBIAN12_PREFIX: &str = "linux-image-6.1.0-";
const DEBIAN12_SUFFIX: &str = "-amd64";
/// Modules the tests and the lab load: veth and tun for the topologies, ESP and XFRM
/// interfaces for the kernel's IPsec, ipip for Linux's own tunnel as a third-party peer.
const GUEST_MODULES: &[&str] = &[
    "veth",
    "tun",
    "esp4",
    "xfrm_user",
    "xfrm_interface",
    "ipip",
    "nf_tables",
    "nf_nat",
    "nft_chain_nat",
    "nft_masq",
];
/// What a test or lab binary of `tests/` needs in the guest: its `mipd` and `mipctl` built
/// here (`MIPX_PREBUILT_BINARIES`, tests/src/daemon.rs: the guest has no toolchain), and
/// deadlines ten times as long (`MIPX_TEST_PATIENCE`: TCG emulates every instruction, about
/// ten times slower than this machine).
pub(crate) fn test_env() -> [(&'static str, String); 2] {
    [
        ("MIPX_PREBUILT_BINARIES", "1".to_owned()),
        ("MIPX_TEST_PATIENCE", "10".to_owned()),
    ]
}

/// Environment the guest inherits from the caller (everything else is the guest's own).
const PASSED_ENV: &[&str] = &[
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "NO_COLOR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kernel {
    /// The kernel this machine runs.
    Host,
    /// Debian 12's stock kernel, linux-image-6.1.0-N-amd64 (the newest N in the archive).
    Debian12,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// The guest's kernel (only Debian 12's for now: the host's needs no VM).
    #[arg(long, value_enum, default_value = "debian12")]
    kernel: Kernel,
    /// The command and its arguments, run as root in the checkout inside the VM; its exit
    /// status is ours.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

pub(crate) fn run(options: &Options) -> Result<()> {
    if options.kernel == Kernel::Host {
        bail!("--kernel host needs no VM: run the command directly");
    }
    if !options.no_setup {
        setup::run(&setup::Options::default())?;
    }
    run_in_vm(&options.command, &[], None)
}

/// Boots Debian 12's kernel and runs `command` (in the checkout, as root) in it, with `env`
/// set there besides [`PASSED_ENV`]; fails if the command fails or, with `timeout`, if the
/// whole run (boot included) takes longer.
pub(crate) fn run_in_vm(
    command: &[OsString],
    env: &[(&str, String)],
    timeout: Option<std::time::Duration>,
) -> Result<()> {
    let kernel = debian12_cached()?.with_context(|| {
        format!(
            "no Debian 12 kernel in {}: run `cargo xtask setup` first",
            kernels_dir().display()
        )
    })?;
    let checkout = crate::bench::workspace_root();
    eprintln!("xtask vm: booting Debian 12's kernel {}", kernel.release);
    let mut guest = String::from("set -e\n");
    // The guest's /sys/fs/bpf is a fresh sysfs: the tests pin and look for bpffs there.
    guest.push_str("mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n");
    let _ = writeln!(guest, "modprobe -a {}", GUEST_MODULES.join(" "));
    // The host's limit may be low; BPF maps on 6.1 are still charged to RLIMIT_MEMLOCK.
    guest.push_str("ulimit -l unlimited\n");
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            let _ = writeln!(guest, "export {name}={}", quote(&value));
        }
    }
    for (name, value) in env {
        let _ = writeln!(guest, "export {name}={}", quote(value.as_ref()));
    }
    let _ = writeln!(guest, "cd {}", quote(checkout.as_os_str()));
    guest.push_str("echo \"xtask vm: $(uname -r), $(nproc) CPUs\" >&2\n");
    guest.push_str("exec");
    for arg in command {
        guest.push(' ');
        guest.push_str(&quote(arg));
    }
    guest.push('\n');
    // A file, not `--exec SCRIPT`: an error then names a path, not the whole script. The
    // guest sees the checkout (and its target directory) at the same path.
    let script = checkout.join("target/xtask-vm/guest.sh");
    std::fs::create_dir_all(script.parent().context("script path")?)?;
    std::fs::write(&script, guest).with_context(|| format!("writing {}", script.display()))?;
    // timeout(1) kills QEMU (and with it the guest) when the run overstays.
    let mut qemu = match timeout {
        Some(limit) => {
            let mut c = Command::new("timeout");
            c.arg(format!("{}", limit.as_secs())).arg(vng()?);
            c
        }
        None => Command::new(vng()?),
    };
    // vng runs its sibling scripts (virtme-run) by name: the virtualenv's bin goes first.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![venv().join("bin")];
    dirs.extend(std::env::split_paths(&path));
    qemu.env("PATH", std::env::join_paths(dirs).context("PATH")?);
    cmd::run(
        qemu.args(["--disable-kvm", "--force-9p", "--user", "root"])
            .args(["--cpus", "2", "--memory", "4G"])
            .arg("--run")
            .arg(&kernel.vmlinuz)
            .arg("--rwdir")
            .arg(&checkout)
            .arg("--cwd")
            .arg(&checkout)
            .arg("--exec")
            .arg(format!("bash {}", quote(script.as_os_str()))),
    )
}

/// Single-quotes `arg` for the guest's shell.
fn quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

fn venv() -> PathBuf {
    Path::new(CACHE).join("virtme-ng")
}

fn vng() -> Result<PathBuf> {
    let vng = venv().join("bin/vng");
    if !vng.exists() {
        bail!(
            "virtme-ng is not installed at {}: run `cargo xtask setup`",
            vng.display()
        );
    }
    Ok(vng)
}

/// An unpacked Debian kernel package in the cache: its image and its modules.
pub(crate) struct CachedKernel {
    /// e.g. `6.1.0-57-amd64`
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// The kernel's modules, beside its image: virtme-ng builds the guest's initramfs from there
/// (ROOT/boot/vmlinuz-R → ROOT/lib/modules/R) and links the guest's /lib/modules/R to it.
fn modules_dir(root: &Path, release: &str) -> PathBuf {
    root.join("lib/modules").join(release)
}

fn kernels_dir() -> PathBuf {
    Path::new(CACHE).join("kernels")
}

/// The ABI number of a `linux-image-6.1.0-N-amd64` name (package or release), if it is one.
fn abi(name: &str) -> Option<u32> {
    let name = name.strip_prefix("linux-image-").unwrap_or(name);
    name.strip_prefix("6.1.0-")?
        .strip_suffix(DEBIAN12_SUFFIX)?
        .parse()
        .ok()
}

/// The newest Debian 12 kernel already unpacked in the cache (complete: image and modules).
pub(crate) fn debian12_cached() -> Result<Option<CachedKernel>> {
    let dir = kernels_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut best: Option<(u32, CachedKernel)> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let release = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = abi(&release) else { continue };
        let root = entry.path();
        let kernel = CachedKernel {
            vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
            modules: modules_dir(&root, &release),
            release,
        };
        // `.complete` is written last: a download cut short is not a kernel.
        if root.join(".complete").exists()
            && kernel.vmlinuz.exists()
            && kernel.modules.join("modules.dep").exists()
            && best.as_ref().is_none_or(|(m, _)| n > *m)
        {
            best = Some((n, kernel));
        }
    }
    Ok(best.map(|(_, k)| k))
}

/// Makes the VM runnable: virtme-ng in its own virtualenv (Debian's Python refuses system-wide
/// `pip install`, PEP 668) and the newest Debian 12 kernel unpacked with its modules'
/// index. The Debian packages (QEMU, kmod, busybox, python3-venv) are in
/// setup's list. Returns whether anything was missing.
pub(crate) fn prepare(check: bool) -> Result<bool> {
    let mut missing = false;
    if !venv().join("bin/vng").exists() {
        missing = true;
        eprintln!(
            "xtask setup: virtme-ng is not installed in {}",
            venv().display()
        );
        if !check {
            cmd::run(
                Command::new("/usr/bin/python3")
                    .args(["-m", "venv"])
                    .arg(venv()),
            )?;
            cmd::run(Command::new(venv().join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                VIRTME_NG,
            ]))?;
        }
    }
    if debian12_cached()?.is_none() {
        missing = true;
        eprintln!(
            "xtask setup: no Debian 12 kernel in {}",
            kernels_dir().display()
        );
        if !check {
            fetch_debian12()?;
        }
    }
    Ok(missing)
}

/// Downloads and unpacks the newest `linux-image-6.1.0-N-amd64` (refreshing the package index
/// if it knows none), and runs `depmod` on its modules.
fn fetch_debian12() -> Result<CachedKernel> {
    let package = match newest_debian12_package() {
        Some(package) => package,
        None => {
            cmd::run(setup::apt().arg("update"))?;
            newest_debian12_package().context(
                "the package index has no linux-image-6.1.0-N-amd64 (is bookworm in sources.list?)",
            )?
        }
    };
    let release = package
        .strip_prefix("linux-image-")
        .context("package name")?
        .to_owned();
    let root = kernels_dir().join(&release);
    let download = kernels_dir().join("download");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .with_context(|| format!("creating {}", download.display()))?;
    // `apt-get download` writes into the current directory, as the invoking user.
    cmd::run(
        Command::new("apt-get")
            .current_dir(&download)
            .args(["-q", "download", &package]),
    )?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::remove_dir_all(&download)?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.exists() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    // depmod -b BASE works on BASE/lib/modules/RELEASE: the unpacked tree itself.
    cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    let modules = modules_dir(&root, &release);
    std::fs::write(root.join(".complete"), &package)?;
    Ok(CachedKernel {
        release,
        vmlinuz,
        modules,
    })
}

/// The newest `linux-image-6.1.0-N-amd64` the package index knows.
fn newest_debian12_package() -> Option<String> {
    let pattern = format!(
        "^{}[0-9]+{}$",
        regex_escape(DEBIAN12_PREFIX),
        DEBIAN12_SUFFIX
    );
    let found = cmd::probe(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    found
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| abi(name).map(|n| (n, name.to_owned())))
        .max_by_key(|(n, _)| *n)
        .map(|(_, name)| name)
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_numbers() {
        assert_eq!(abi("linux-image-6.1.0-57-amd64"), Some(57));
        assert_eq!(abi("6.1.0-9-amd64"), Some(9));
        assert_eq!(abi("linux-image-6.1.0-57-cloud-amd64"), None);
        assert_eq!(abi("linux-image-6.1.0-57-amd64-dbg"), None);
        assert_eq!(abi("linux-image-6.12.0-1-amd64"), None);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's".as_ref()), r"'it'\''s'");
    }
}
