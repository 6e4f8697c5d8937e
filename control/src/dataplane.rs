//! The eBPF dataplane as seen from user space (DESIGN.md §5): load the object embedded at build
//! time, hand out its programs, read its counters.
//!
//! This is the only module of `control` that touches aya; the protocol core never sees it.
//! Attaching and pinning arrive with the daemon.

use aya::{
    Ebpf, EbpfError,
    maps::{MapError, PerCpuArray},
    programs::{ProgramError, Xdp},
};
use mipx_common::{counters::Counter, maps::COUNTERS_MAP};

/// The eBPF object (`dataplane-ebpf`, bin `mipx`), built by `build.rs` for `bpfel-unknown-none`.
/// Aligned because aya parses the ELF in place and ELF64 headers want 8-byte alignment.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mipx"));

/// Names of the programs in [`OBJECT`] (the function names in `dataplane-ebpf/src/main.rs`).
pub mod programs {
    /// Main XDP ingress hook: parses Ethernet + IPv4, counts, drops malformed IPv4.
    pub const MIPX_XDP: &str = "mipx_xdp";
    /// Baseline that drops every frame and touches nothing (benchmarks).
    pub const MIPX_DROP: &str = "mipx_drop";
    /// Baseline that passes every frame and touches nothing (benchmarks).
    pub const MIPX_PASS: &str = "mipx_pass";
    /// Every XDP program in the object.
    pub const ALL_XDP: [&str; 3] = [MIPX_XDP, MIPX_DROP, MIPX_PASS];
}

/// Why the dataplane could not be loaded or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The object could not be parsed, or its maps could not be created.
    #[error("loading the eBPF object")]
    Load(#[source] EbpfError),
    /// The object has no program of that name.
    #[error("the eBPF object has no program named `{0}`")]
    NoSuchProgram(String),
    /// The program exists but is not XDP, or the kernel refused it (the source carries the
    /// verifier log).
    #[error("eBPF program `{name}`")]
    Program {
        name: String,
        #[source]
        source: ProgramError,
    },
    /// The object has no map of that name.
    #[error("the eBPF object has no map named `{0}`")]
    NoSuchMap(&'static str),
    /// A map has the wrong type, or reading it failed.
    #[error("eBPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// The loaded eBPF object: its maps exist in the kernel; each program is loaded (verified) the
/// first time it is asked for. Dropping it detaches and unloads everything that is not pinned.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Parses the embedded object and creates its maps. Needs `CAP_BPF` (root, in practice).
    pub fn load() -> Result<Self, DataplaneError> {
        let ebpf = Ebpf::load(OBJECT).map_err(DataplaneError::Load)?;
        Ok(Self { ebpf })
    }

    /// Returns the XDP program `name`, loading it into the kernel first if it is not yet loaded.
    pub fn xdp(&mut self, name: &str) -> Result<&mut Xdp, DataplaneError> {
        let program_err = |source| DataplaneError::Program {
            name: name.to_owned(),
            source,
        };
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DataplaneError::NoSuchProgram(name.to_owned()))?;
        let xdp: &mut Xdp = program.try_into().map_err(program_err)?;
        if xdp.fd().is_err() {
            xdp.load().map_err(program_err)?;
        }
        Ok(xdp)
    }

    /// Every counter, summed over all CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let map_err = |source| DataplaneError::Map {
            name: COUNTERS_MAP,
            source,
        };
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(DataplaneError::NoSuchMap(COUNTERS_MAP))?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = counters.get(&(counter as u32), 0).map_err(map_err)?;
                Ok((
                    counter,
                    per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)),
                ))
            })
            .collect()
    }

    /// One counter, summed over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64, DataplaneError> {
        Ok(self
            .counters()?
            .into_iter()
            .find_map(|(c, n)| (c == counter).then_some(n))
            .unwrap_or(0))
    }

    /// The underlying aya object, for what this type does not wrap yet (attach, pin).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
