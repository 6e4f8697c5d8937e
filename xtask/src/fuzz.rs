//! `cargo xtask fuzz`: run every cargo-fuzz target of `fuzz/` for a fixed time (DESIGN.md §6).
//!
//! cargo-fuzz needs nightly-only rustc flags (`-Zsanitizer=address`, sancov passes). The pinned
//! stable toolchain accepts them with `RUSTC_BOOTSTRAP=1`, which is what we try first
//! (verified with rustc 1.98.0 and cargo-fuzz 0.13.2):
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- -max_total_time=<seconds>
//! ```
//!
//! If building that way fails, we fall back to `cargo +nightly fuzz ...`, when a nightly
//! toolchain is installed. That nightly must be at least 1.98: the fuzz crate enables
//! `mipx-common/user`, which pulls in aya 0.16 (`rust-version = "1.98.0"`), so an older nightly
//! (such as the 1.97.0-nightly found on the development machine) refuses to build it. The corpus of each target is seeded with the independent fixtures of
//! `common/fixtures/*.bin` (scapy-made, see their README), so the fuzzer starts from real
//! messages; corpora and crash artifacts stay under `fuzz/` (git-ignored).

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, probe};

/// How cargo-fuzz gets the nightly features it needs.
#[derive(Clone, Copy, Debug)]
enum Invocation {
    /// The pinned toolchain with `RUSTC_BOOTSTRAP=1`.
    PinnedBootstrap,
    /// `cargo +nightly`.
    Nightly,
}

impl Invocation {
    fn cargo_fuzz(self, fuzz_dir: &Path) -> Command {
        let mut cmd = Command::new("cargo");
        match self {
            Invocation::PinnedBootstrap => {
                cmd.env("RUSTC_BOOTSTRAP", "1");
            }
            Invocation::Nightly => {
                cmd.arg("+nightly");
            }
        }
        cmd.arg("fuzz").current_dir(fuzz_dir);
        cmd
    }
}

/// Builds every target, then runs each for `seconds`. Fails if any target finds a crash (its
/// input is left in `fuzz/artifacts/<target>/`) or if no toolchain can build the targets.
pub fn run(seconds: u64) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let fuzz_dir = root.join("fuzz");

    ensure_cargo_fuzz()?;
    let invocation = pick_invocation(&fuzz_dir)?;
    let targets = list_targets(&fuzz_dir, invocation)?;
    if targets.is_empty() {
        bail!(
            "`cargo fuzz list` found no targets in {}",
            fuzz_dir.display()
        );
    }

    let mut results = Vec::new();
    for target in &targets {
        seed_corpus(&root, &fuzz_dir, target)?;
        let mut cmd = invocation.cargo_fuzz(&fuzz_dir);
        cmd.args(["run", target, "--", &format!("-max_total_time={seconds}")]);
        results.push((target.clone(), run_target(&mut cmd)?));
    }

    eprintln!("xtask fuzz: {seconds} s per target, with {invocation:?}");
    let mut failed = Vec::new();
    for (target, outcome) in &results {
        match outcome {
            Ok(runs) => eprintln!("  {target}: ok, {runs}"),
            Err(status) => {
                eprintln!("  {target}: FAILED ({status}); see fuzz/artifacts/{target}/");
                failed.push(target.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if probe(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    cmd::run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
        .context("installing cargo-fuzz")
}

/// The first invocation that builds every target.
fn pick_invocation(fuzz_dir: &Path) -> Result<Invocation> {
    let mut errors = Vec::new();
    for invocation in [Invocation::PinnedBootstrap, Invocation::Nightly] {
        if matches!(invocation, Invocation::Nightly)
            && probe(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
                .is_none()
        {
            errors.push("no nightly toolchain installed".to_string());
            continue;
        }
        let mut cmd = invocation.cargo_fuzz(fuzz_dir);
        cmd.arg("build");
        match cmd::run(&mut cmd) {
            Ok(()) => return Ok(invocation),
            Err(err) => {
                eprintln!("xtask fuzz: {invocation:?} cannot build the targets: {err:#}");
                errors.push(format!("{invocation:?}: {err:#}"));
            }
        }
    }
    bail!(
        "no toolchain could build the fuzz targets: {}",
        errors.join("; ")
    )
}

fn list_targets(fuzz_dir: &Path, invocation: Invocation) -> Result<Vec<String>> {
    let mut cmd = invocation.cargo_fuzz(fuzz_dir);
    cmd.arg("list");
    let out = probe(&mut cmd).with_context(|| format!("{} failed", cmd::display(&cmd)))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Copies the fixtures into `fuzz/corpus/<target>/` (idempotent). The `extensions` target reads
/// its first byte as the offset where extensions start, so its seeds get that byte prepended.
fn seed_corpus(root: &Path, fuzz_dir: &Path, target: &str) -> Result<()> {
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let fixtures = root.join("common").join("fixtures");
    let entries =
        fs::read_dir(&fixtures).with_context(|| format!("reading {}", fixtures.display()))?;
    for entry in entries {
        let path: PathBuf = entry?.path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let mut bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if target == "extensions" {
            // Registration Request extensions start at 24, Reply extensions at 20 (RFC 5944
            // §3.3-3.4); anything else is seeded from offset 0.
            let start = match bytes.first() {
                Some(1) => 24,
                Some(3) => 20,
                _ => 0,
            };
            bytes.insert(0, start);
        }
        let name = format!(
            "fixture-{}",
            path.file_stem().unwrap_or_default().to_string_lossy()
        );
        fs::write(corpus.join(name), bytes)?;
    }
    Ok(())
}

/// Runs a fuzz target with its stderr passed through line by line; returns libFuzzer's final
/// "Done N runs in S second(s)" line on success, the exit status on failure.
fn run_target(cmd: &mut Command) -> Result<std::result::Result<String, String>> {
    eprintln!("xtask: running {}", cmd::display(cmd));
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", cmd::display(cmd)))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut done = None;
    let mut out = std::io::stderr().lock();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if line.starts_with("Done ") && line.contains(" runs in ") {
            done = Some(line.clone());
        }
        let _ = writeln!(out, "{line}");
    }
    drop(out);
    let status = child.wait()?;
    Ok(if status.success() {
        Ok(done.unwrap_or_else(|| "finished (no libFuzzer summary seen)".to_string()))
    } else {
        Err(status.to_string())
    })
}
