//! `cargo xtask test`: set the machine up, then run every host test, privileged ones included.
//! `--repeat N` runs the whole suite N times and says which tests failed in which runs: the way
//! to show the suite passes every time, not just once.

use std::{
    collections::BTreeMap,
    env,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, is_root},
    setup,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// Run the whole suite this many times in a row (to catch tests that fail now and then);
    /// every run goes to the end, and a summary lists each failed test with its count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
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
    if options.repeat == 1 {
        return cmd::run(&mut cargo_test(&options.cargo_args));
    }
    let mut failed_runs = 0;
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    for round in 1..=options.repeat {
        eprintln!("xtask test: run {round} of {}", options.repeat);
        // Every run to the end, so one flaky test does not hide another.
        let mut args = vec!["--no-fail-fast".to_owned()];
        args.extend(options.cargo_args.iter().cloned());
        let (ok, failed) = run_collecting_failures(&mut cargo_test(&args))?;
        if !ok {
            failed_runs += 1;
        }
        for name in failed {
            *failures.entry(name).or_default() += 1;
        }
        eprintln!(
            "xtask test: run {round}: {}",
            if ok { "passed" } else { "FAILED" }
        );
    }
    eprintln!(
        "xtask test: {} of {} runs passed",
        options.repeat - failed_runs,
        options.repeat
    );
    for (name, count) in &failures {
        eprintln!(
            "xtask test:   {name} failed in {count} of {} runs",
            options.repeat
        );
    }
    if failed_runs > 0 {
        bail!("{failed_runs} of {} runs failed", options.repeat);
    }
    Ok(())
}

/// `cargo test` over the workspace. The eBPF crate only builds for bpfel-unknown-none (through
/// control/build.rs), so it is left out here.
fn cargo_test(args: &[String]) -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--workspace", "--exclude", "dataplane-ebpf"])
        .args(args);
    cmd
}

/// Runs `cmd`, passing its output through, and returns whether it succeeded and the names of
/// the tests the libtest harness reported as failed (`test NAME ... FAILED`).
fn run_collecting_failures(cmd: &mut Command) -> Result<(bool, Vec<String>)> {
    eprintln!("xtask: running {}", cmd::display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", cmd::display(cmd)))?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut failed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            failed.push(name.to_owned());
        }
    }
    Ok((child.wait()?.success(), failed))
}
