//! `cargo xtask test`: set the machine up, then run every host test, privileged ones included.

use std::{env, process::Command};

use anyhow::Result;

use crate::{
    cmd::{self, is_root},
    setup,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// Extra arguments for `cargo test`, after `--`: e.g. `cargo xtask test -- --no-fail-fast`,
    /// or `cargo xtask test -- -- --nocapture` for the test binaries.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub(crate) fn run(options: &Options) -> Result<()> {
    if !options.no_setup {
        setup::run(&setup::Options::default())?;
    }
    if !is_root() {
        // Not fatal here: the privileged tests themselves fail loudly (mipx_tests::require_root),
        // which is the point; this just says why before the wall of output.
        eprintln!("xtask test: warning: not root, so the privileged tests will FAIL");
    }
    // The eBPF crate only builds for bpfel-unknown-none (through control/build.rs).
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .args(["test", "--workspace", "--exclude", "dataplane-ebpf"])
            .args(&options.cargo_args),
    )
}
