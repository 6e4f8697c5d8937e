//! `cargo xtask lab`: set the machine up, then run the lab binary (`tests/src/bin/mipx-lab.rs`)
//! as root. The lab lives in the `tests` crate, next to the namespace helpers it uses, so that
//! xtask itself never depends on the eBPF build and can run `setup` on a fresh machine.

use std::{env, process::Command};

use anyhow::Result;

use crate::{cmd, setup};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// Also visit foreign C, a private network behind an nftables NAT: the mobile node gets
    /// an RFC 3519 UDP tunnel there.
    #[arg(long)]
    nat: bool,
    /// Which lab: `mobility` (the default: moves under a TCP stream) or `detection` (RFC 5265
    /// inside/outside detection and the plaintext gate, checked on a capture).
    #[arg(long, default_value = "mobility")]
    scenario: String,
}

pub(crate) fn run(options: &Options) -> Result<()> {
    if !options.no_setup {
        setup::run(&setup::Options::default())?;
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let bin = match options.scenario.as_str() {
        "mobility" => "mipx-lab",
        "detection" => "mipx-lab-detection",
        other => anyhow::bail!("unknown scenario `{other}`: mobility or detection"),
    };
    let mut command = Command::new(cargo);
    command.args(["run", "--quiet", "-p", "mipx-tests", "--bin", bin]);
    if options.nat {
        command.args(["--", "--nat"]);
    }
    cmd::run(&mut command)
}
