//! Builds the eBPF dataplane (`dataplane-ebpf`, bin `mipx`) for `bpfel-unknown-none` and leaves
//! the object at `$OUT_DIR/mipx`, where `src/dataplane.rs` embeds it with
//! `aya::include_bytes_aligned!`.
//!
//! aya-build runs a nested `cargo build --target bpfel-unknown-none` with its own target
//! directory under `$OUT_DIR` and links with `bpf-linker` (installed by `cargo xtask setup`).
//! (aya-build's `AYA_BUILD_SKIP=1` is no escape hatch here: without the object `mipx-control`
//! does not compile.)

use std::path::Path;

use anyhow::{Context as _, Result};
use aya_build::{Package, Toolchain};

/// The toolchain pinned by `rust-toolchain.toml` (DESIGN.md §8): aya-ebpf needs rustc >= 1.98,
/// and the kernel side must use the same LLVM major as the installed `bpf-linker`.
const TOOLCHAIN: &str = "1.98.0";

fn main() -> Result<()> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .context("control/ has no parent directory")?;
    let ebpf_dir = workspace.join("dataplane-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to dataplane-ebpf")?;

    // aya-build reruns us when anything under dataplane-ebpf/ changes. The eBPF crate also
    // compiles `common` (counter slots, map names, headers), which is not a build-dependency
    // of ours, so cargo would not notice changes there without this; the workspace manifest
    // holds the eBPF release profile.
    for path in ["common/src", "common/Cargo.toml", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", workspace.join(path).display());
    }

    // There is no `bpfel-unknown-none` standard library to download: `core` must be built from
    // rust-src with `-Z build-std=core`, which a stable toolchain only accepts with
    // RUSTC_BOOTSTRAP=1. aya-build reads this variable from our environment to decide whether to
    // pass `-Z build-std` and hands it on to the nested cargo, so the unstable flag is confined to
    // the eBPF build; the host crates still build as plain stable Rust.
    //
    // aya-build forwards every stderr line of the nested cargo as a `cargo::warning`, and cargo
    // replays a build script's warnings on every later build, so the nested "Compiling ..."
    // progress would show up as ~40 warnings on each `cargo build`. CARGO_TERM_QUIET silences
    // only that progress; compiler diagnostics travel in the JSON messages and still surface.
    //
    // SAFETY: a build script is a single-threaded process and nothing has spawned a thread yet,
    // so no other thread can be reading the environment while we write it.
    unsafe {
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }

    aya_build::build_ebpf(
        [Package {
            name: "dataplane-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(TOOLCHAIN),
    )
}
