//! `cargo xtask test`: set the machine up, then run every host test, privileged ones included,
//! and then the tests that touch the kernel again on Debian 12's own kernel (6.1) in a VM
//! (`vm.rs`), with binaries built here. `--repeat N` runs it all N times and says which tests
//! failed in which runs: the way to show the suite passes every time, not just once.

use std::{
    collections::BTreeMap,
    env,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, is_root},
    setup, vm,
};

/// The test binaries of `tests/` run again on Debian 12's kernel: everything that loads,
/// attaches or drives the eBPF programs, the kernel's routes and neighbours, nftables, the VPN
/// on both IPsec backends, and the kernel's own ipip as a third-party peer. Left out: `detection_topology` (the intranet, firewall and VPN
/// gateway without mipx's dataplane: 6 minutes in the emulated VM for no kernel code of
/// ours), `strongswan_vpn` and `vici_e2e` (strongSwan alone).
const VM_TESTS: &[&str] = &[
    "bpf_fixtures",
    "registration_e2e",
    "dataplane_e2e",
    "rfc5265_ha_e2e",
    "nat_e2e",
    "detection_e2e",
    "fa_e2e",
    "vpn_e2e",
    "xfrm_e2e",
    "ipip_peer_e2e",
];

/// One test binary in the VM; the slowest take about 5 minutes.
const VM_TEST_TIMEOUT_SECS: u32 = 20 * 60;
/// The whole VM run, boot included: about 31 minutes alone on a 2-core machine (vpn_e2e with
/// the kernel's ESP walks is the longest, about 8); 50 was cut off with another emulated VM
/// beside it. With the host part (about 12) it stays inside CI's 90.
const VM_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(65 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kernels {
    /// This machine's kernel, then Debian 12's in the VM.
    All,
    /// This machine's kernel only.
    Host,
    /// Debian 12's kernel in the VM only.
    Debian12,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip `cargo xtask setup` (when you know the machine is ready).
    #[arg(long)]
    no_setup: bool,
    /// Run the whole suite this many times in a row (to catch tests that fail now and then);
    /// every run goes to the end, and a summary lists each failed test with its count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Which kernels to test on: `all` (the default: this machine's, then Debian 12's 6.1 in
    /// a VM), `host` or `debian12`.
    #[arg(long, value_enum, default_value = "all")]
    kernel: Kernels,
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
    let mut failed_runs = 0;
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    for round in 1..=options.repeat {
        if options.repeat > 1 {
            eprintln!("xtask test: run {round} of {}", options.repeat);
        }
        let mut ok = true;
        if options.kernel != Kernels::Debian12 {
            // Every run to the end when repeating, so one flaky test does not hide another.
            let mut args = Vec::new();
            if options.repeat > 1 {
                args.push("--no-fail-fast".to_owned());
            }
            args.extend(options.cargo_args.iter().cloned());
            let (passed, failed) = run_collecting_failures(&mut cargo_test(&args))?;
            ok &= passed;
            for name in failed {
                *failures.entry(format!("{name} (host)")).or_default() += 1;
            }
            if options.repeat == 1 && !passed {
                bail!("the tests failed on this machine's kernel");
            }
        }
        if options.kernel != Kernels::Host {
            let (passed, failed) = vm_tests()?;
            ok &= passed;
            for name in failed {
                *failures.entry(format!("{name} (Debian 12)")).or_default() += 1;
            }
        }
        if !ok {
            failed_runs += 1;
        }
        if options.repeat > 1 {
            eprintln!(
                "xtask test: run {round}: {}",
                if ok { "passed" } else { "FAILED" }
            );
        }
    }
    if options.repeat > 1 {
        eprintln!(
            "xtask test: {} of {} runs passed",
            options.repeat - failed_runs,
            options.repeat
        );
    }
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

/// Builds `mipd`, `mipctl` and the [`VM_TESTS`] binaries here, then runs those in the VM on
/// Debian 12's kernel, one after the other, each under a timeout. Returns whether all passed
/// and the names of the tests that failed.
fn vm_tests() -> Result<(bool, Vec<String>)> {
    // The same build as the host's run (nothing to do after it): the whole workspace's test
    // binaries, and with them `mipd` and `mipctl` in target/debug, where the tests look for
    // them (cargo builds a package's binaries for its integration tests). Building only some
    // packages would build them again with another feature set.
    let mut build = cargo_test(&["--no-run".to_owned(), "--message-format=json".to_owned()]);
    let out = build
        .stderr(Stdio::inherit())
        .output()
        .context("building the tests for the VM")?;
    if !out.status.success() {
        bail!("building the tests for the VM failed");
    }
    let mut executables = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) && VM_TESTS.contains(&name)
        {
            executables.insert(name.to_owned(), exe.to_owned());
        }
    }
    let mut script = String::from("failed=0\n");
    for name in VM_TESTS {
        let exe = executables
            .get(*name)
            .with_context(|| format!("cargo built no test binary `{name}`"))?;
        // The same header cargo test prints, so CI's summary lists these runs too.
        script.push_str(&format!(
            "echo \"     Running tests/{name}.rs on Linux $(uname -r) (VM)\"\n\
             timeout {VM_TEST_TIMEOUT_SECS} '{exe}' || {{ echo \"xtask vm: {name} failed ($?)\"; failed=1; }}\n"
        ));
    }
    script.push_str("exit $failed\n");
    let script_path = crate::bench::workspace_root().join("target/xtask-vm/tests.sh");
    std::fs::create_dir_all(script_path.parent().context("script path")?)?;
    std::fs::write(&script_path, script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    // The VM's output comes back on our stdout; collect the failed tests' names from it.
    let output_path = crate::bench::workspace_root().join("target/xtask-vm/tests.log");
    let [prebuilt, patience] = vm::test_env();
    // Debian 12's kernel has ESP (esp4 is loaded in the guest): tests that read the kernel's
    // SAs must find them there, where the build machine's kernel lets them check only less.
    let env = [
        prebuilt,
        patience,
        ("RUST_TEST_THREADS", "2".to_owned()),
        ("MIPX_KERNEL_ESP", "1".to_owned()),
    ];
    let command = [
        "bash".into(),
        "-c".into(),
        format!(
            "bash '{}' 2>&1 | tee '{}'; exit ${{PIPESTATUS[0]}}",
            script_path.display(),
            output_path.display()
        )
        .into(),
    ];
    eprintln!("xtask test: the kernel tests again on Debian 12's kernel, in a VM");
    let passed = vm::run_in_vm(&command, &env, Some(VM_RUN_TIMEOUT)).is_ok();
    let log = std::fs::read_to_string(&output_path).unwrap_or_default();
    let failed = log
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(str::to_owned)
        .collect();
    Ok((passed && !log.is_empty(), failed))
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
