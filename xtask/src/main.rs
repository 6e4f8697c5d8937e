//! Developer and CI tasks for mipx: `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Each subcommand is a module with an `Options` (clap `Args`) and a `run` function; add a new
//! one by adding a module and a variant to [`Command`].

mod bench;
mod cmd;
mod fuzz;
mod lab;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "mipx developer and CI tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The lab: the RFC 5265 walk in network namespaces, or another scenario (runs `setup`).
    Lab(lab::Options),
    /// Run every fuzz target (cargo-fuzz, libFuzzer) for a while; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Prepare this machine (Debian 12): packages, bpf-linker, bpffs. Idempotent.
    Setup(setup::Options),
    /// Run `setup`, then the whole test suite, privileged tests included (run as root).
    Test(test::Options),
    /// Benchmarks (BENCH-METHOD.md: ratios to a baseline measured in the same run).
    Bench(bench::Options),
    /// Run a command as root in a VM booted with Debian 12's kernel (6.1), over this checkout:
    /// `cargo xtask vm -- CMD ARGS...` (runs `setup`).
    Vm(vm::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Fuzz { seconds } => fuzz::run(seconds),
        Command::Lab(options) => lab::run(&options),
        Command::Setup(options) => setup::run(&options),
        Command::Test(options) => test::run(&options),
        Command::Bench(options) => bench::run(&options),
        Command::Vm(options) => vm::run(&options),
    };
    // Report the error chain in one line instead of returning it from `main`, which would add a
    // backtrace of xtask itself whenever RUST_BACKTRACE is set (it usually is in CI).
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
