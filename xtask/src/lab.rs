//! `cargo xtask lab`: set the machine up, then run a lab binary of the `tests` crate as root:
//! `mipx-lab-rfc5265` (the default), `mipx-lab` (mobility) or `mipx-lab-detection`. The labs
//! live in the `tests` crate, next to the namespace helpers they use, so that xtask itself never
//! depends on the eBPF build and can run `setup` on a fresh machine.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{cmd, setup, vm};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// Which lab: `rfc5265` (the default: the full RFC 5265 walk internal 1 → internal 2 →
    /// external 1 → external 2 behind a NAT → internal 1 in access modes cvc and mc, and
    /// through foreign agents on internal 2 (f) and external 1 (fvc), with the strongSwan VPN,
    /// one TCP session throughout, handover times, per-mode packet overhead against RFC 5265
    /// §5.2, and no plaintext on the external segments), `mobility` (plain
    /// Mobile IPv4 moves under a TCP stream) or `detection` (RFC 5265 inside/outside detection
    /// and the plaintext gate, checked on a capture).
    #[arg(long, default_value = "rfc5265")]
    scenario: String,
    /// mobility: also visit foreign C, a private network behind an nftables NAT: the mobile
    /// node gets an RFC 3519 UDP tunnel there.
    #[arg(long)]
    nat: bool,
    /// rfc5265: which walks: `cvc`, `mc`, `fvc` (foreign agents on internal 2 and external 1:
    /// c → f → fvc → cvc behind the NAT → c), `both` (cvc and mc) or `all` (the default: cvc,
    /// mc and fvc).
    #[arg(long)]
    mode: Option<String>,
    /// rfc5265: the VPN's ESP, `kernel` (the kernel's XFRM, mipd's XFRM interface) or
    /// `libipsec` (strongSwan's user-space ESP); by default the kernel's where the kernel has
    /// ESP and XFRM interfaces (Debian 12's), else libipsec (this machine's kernel has neither).
    #[arg(long)]
    ipsec: Option<String>,
    /// detection, rfc5265: also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The kernel to run on: `host` (this machine's, the default) or `debian12` (Debian 12's
    /// own 6.1 in an emulated VM, with binaries built here: there the lab is pass/fail, its
    /// times are those of an emulator).
    #[arg(long, value_enum, default_value = "host")]
    kernel: vm::Kernel,
}

pub(crate) fn run(options: &Options) -> Result<()> {
    let scenario = options.scenario.as_str();
    let bin = match scenario {
        "mobility" => "mipx-lab",
        "detection" => "mipx-lab-detection",
        "rfc5265" => "mipx-lab-rfc5265",
        other => bail!("unknown scenario `{other}`: mobility, detection or rfc5265"),
    };
    // The binary's own arguments; each option only where the lab takes it.
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if options.nat {
        if scenario != "mobility" {
            bail!("--nat is an option of the mobility lab");
        }
        args.push("--nat".into());
    }
    if let Some(mode) = &options.mode {
        if scenario != "rfc5265" {
            bail!("--mode is an option of the rfc5265 lab");
        }
        args.extend(["--mode".into(), mode.into()]);
    }
    if let Some(ipsec) = &options.ipsec {
        if scenario != "rfc5265" {
            bail!("--ipsec is an option of the rfc5265 lab");
        }
        args.extend(["--ipsec".into(), ipsec.into()]);
    }
    if let Some(json) = &options.json {
        if scenario == "mobility" {
            bail!("--json is an option of the detection and rfc5265 labs");
        }
        args.extend(["--json".into(), json.into()]);
    }
    if !options.no_setup {
        setup::run(&setup::Options::default())?;
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if options.kernel == vm::Kernel::Debian12 {
        // Built here (the guest has no toolchain), run there with the daemons it starts.
        cmd::run(Command::new(&cargo).args(["build", "-p", "mipx-control", "--bins"]))?;
        cmd::run(Command::new(&cargo).args(["build", "-p", "mipx-tests", "--bin", bin]))?;
        let exe = crate::bench::target_dir().join("debug").join(bin);
        let mut command = vec![exe.into_os_string()];
        command.extend(args);
        return vm::run_in_vm(
            &command,
            &vm::test_env(),
            Some(std::time::Duration::from_secs(40 * 60)),
        );
    }
    let mut command = Command::new(cargo);
    command.args(["run", "--quiet", "-p", "mipx-tests", "--bin", bin]);
    if !args.is_empty() {
        command.arg("--").args(args);
    }
    cmd::run(&mut command)
}
