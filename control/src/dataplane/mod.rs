//! The eBPF dataplane as seen from user space (DESIGN.md §5): load the object embedded at build
//! time, attach and pin its programs, mirror bindings into its maps, read its counters.
//!
//! This is the only module of `control` that touches aya; the protocol core never sees it.
//!
//! Pinning: with a pin directory, every map lives at `DIR/<MAP NAME>` and every attachment is
//! a BPF link pinned at `DIR/link-<program>-<interface>`. A pinned link keeps its program
//! attached after `mipd` exits (even `kill -9`), and the maps keep their contents, so
//! forwarding never stops. The next `mipd` re-opens the same maps by path and atomically swaps
//! its freshly loaded program into each existing link (`bpf_link_update`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    pin::PinError,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttach, TcError, TcHandle},
        xdp::XdpLink,
    },
};
use mipx_common::{
    counters::Counter,
    maps::{
        ALL_MAPS, BINDINGS_MAP, COUNTERS_MAP, DEFAULT_MAX_BINDINGS, FA_CARE_OF_MAP, FA_CONFIG_MAP,
        FA_VISITORS_MAP, FaDataplaneConfig, FaVisitor, HA_CONFIG_MAP, HaBinding, HaDataplaneConfig,
        IFACES_MAP, IfaceInfo, MN_GATE_MAP, MN_SLOT_HOME, MN_SLOT_OUTER, MN_TUNNEL_MAP,
        MN_VPN_SPIS_MAP, MnGate, MnTunnel, NEXTHOP_MAP, NEXTHOP_SLOTS, NextHop,
    },
};

use crate::api::{Attachment, DataplaneInfo, MapSummary};

pub mod setup;
pub mod sync;

/// The eBPF object (`dataplane-ebpf`, bin `mipx`), built by `build.rs` for `bpfel-unknown-none`.
/// Aligned because aya parses the ELF in place and ELF64 headers want 8-byte alignment.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mipx"));

/// Names of the programs in [`OBJECT`] (the function names in `dataplane-ebpf/src/main.rs`).
pub mod programs {
    /// Home agent XDP: proxy ARP, encapsulation toward care-of addresses, reverse-tunnel
    /// decapsulation.
    pub const HA_XDP: &str = "ha_xdp";
    /// Mobile node XDP ingress: decapsulation of the home agent's tunnel.
    pub const MN_XDP: &str = "mn_xdp";
    /// Foreign agent XDP, on the links it serves and toward the home agents: delivery of the
    /// home agents' tunnels to visitors' link-layer addresses, reverse tunnelling (RFC 3024).
    pub const FA_XDP: &str = "fa_xdp";
    /// Mobile node TC egress: reverse tunnelling from the home address.
    pub const MN_TC_EGRESS: &str = "mn_tc_egress";
    /// Mobile node TC egress on the VPN device: the tunnel to the i-HA inside the VPN.
    pub const MN_TC_VPN_EGRESS: &str = "mn_tc_vpn_egress";
    /// Mobile node TC ingress on the VPN device: decapsulation of the i-HA's tunnel.
    pub const MN_TC_VPN_INGRESS: &str = "mn_tc_vpn_ingress";
    /// Baseline that drops every frame and touches nothing (benchmarks).
    pub const MIPX_DROP: &str = "mipx_drop";
    /// Baseline that passes every frame and touches nothing (benchmarks).
    pub const MIPX_PASS: &str = "mipx_pass";
    /// Every XDP program in the object.
    pub const ALL_XDP: [&str; 5] = [HA_XDP, MN_XDP, FA_XDP, MIPX_DROP, MIPX_PASS];
    /// Every TC program in the object.
    pub const ALL_TC: [&str; 3] = [MN_TC_EGRESS, MN_TC_VPN_EGRESS, MN_TC_VPN_INGRESS];
}

/// Why the dataplane could not be loaded, attached or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The object could not be parsed, or its maps could not be created or opened.
    #[error("loading the eBPF object")]
    Load(#[source] EbpfError),
    /// The object has no program of that name.
    #[error("the eBPF object has no program named `{0}`")]
    NoSuchProgram(String),
    /// The program exists but is of another type, or the kernel refused it (the source
    /// carries the verifier log), or attaching failed.
    #[error("eBPF program `{name}`")]
    Program {
        name: String,
        #[source]
        source: ProgramError,
    },
    /// The kernel's verifier refused the program: its last line says why (the whole log is
    /// logged at debug level; it runs to thousands of lines).
    #[error("eBPF program `{name}` refused by the verifier of Linux {kernel}: {last_line}")]
    Refused {
        name: String,
        kernel: String,
        last_line: String,
    },
    /// The running kernel lacks something the dataplane relies on.
    #[error("Linux {kernel} lacks {missing}, which mipx's dataplane needs (Linux 6.1 or newer)")]
    Unsupported { kernel: String, missing: String },
    /// The object has no map of that name.
    #[error("the eBPF object has no map named `{0}`")]
    NoSuchMap(&'static str),
    /// A map has the wrong type, or reading or writing it failed.
    #[error("eBPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Pinning or re-opening a link failed.
    #[error("pinned link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The pin directory could not be created or read.
    #[error("pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no interface named `{0}`")]
    NoSuchInterface(String),
}

/// How to load the object.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// bpffs directory for maps and links; `None` keeps everything private to this process
    /// (tests, benchmarks): it is detached and freed when the [`Dataplane`] is dropped.
    pub pin_dir: Option<PathBuf>,
    /// Capacity of the binding map; 0 means [`DEFAULT_MAX_BINDINGS`].
    pub max_bindings: u32,
}

/// The loaded eBPF object. Dropping it detaches what is not pinned.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attachments: Vec<Attachment>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

fn link_err(path: &Path) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> DataplaneError {
    let path = path.to_path_buf();
    move |source| DataplaneError::Link {
        path: path.clone(),
        source,
    }
}

/// A failed program load: a verifier rejection becomes [`DataplaneError::Refused`] (the
/// program, the kernel, the verifier's verdict), with the whole log at debug level.
fn load_err(name: &str, e: ProgramError) -> DataplaneError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            tracing::debug!(program = name, "verifier log:\n{log}");
            DataplaneError::Refused {
                name: name.to_owned(),
                kernel: kernel_release(),
                last_line: verifier_verdict(&log).unwrap_or_else(|| io_error.to_string()),
            }
        }
        source => DataplaneError::Program {
            name: name.to_owned(),
            source,
        },
    }
}

/// The line of a verifier log that says why the program was refused: the last one before the
/// statistics the kernel appends ("processed N insns ...", "verification time ...").
fn verifier_verdict(log: &str) -> Option<String> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rfind(|l| {
            !(l.starts_with("processed ")
                || l.starts_with("verification time")
                || l.starts_with("stack depth")
                || l.starts_with("max_states_per_insn"))
        })
        .map(str::to_owned)
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "(unknown release)".to_owned())
}

/// What the running kernel offers the dataplane, probed once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSupport {
    /// `uname -r`.
    pub release: String,
    /// TC programs attach as TCX links (Linux 6.6), pinned and taken over across restarts; else
    /// as `cls_bpf` filters under `clsact`, swapped in place across restarts.
    pub tcx: bool,
}

impl KernelSupport {
    /// How TC programs are attached here, for the log.
    pub fn tc_attach(&self) -> &'static str {
        if self.tcx {
            "TCX links (pinned)"
        } else {
            "cls_bpf filters under clsact (no TCX before Linux 6.6)"
        }
    }
}

/// Probes the kernel for what the programs rely on, failing in one line that names the first
/// thing missing: the helpers each program type calls (`bpf_check_mtu` is Linux 5.12, the
/// newest), then TCX, which is optional (netlink filters stand in below 6.6). The verifier has
/// the last word on everything else.
pub fn probe_kernel() -> Result<KernelSupport, DataplaneError> {
    use aya::{
        programs::ProgramType,
        sys::{BpfHelper as H, is_helper_supported},
    };
    let release = kernel_release();
    let needed: [(ProgramType, &[(H, &str)]); 2] = [
        (
            ProgramType::Xdp,
            &[
                (H::BPF_FUNC_fib_lookup, "bpf_fib_lookup"),
                (H::BPF_FUNC_redirect, "bpf_redirect"),
                (H::BPF_FUNC_xdp_adjust_head, "bpf_xdp_adjust_head"),
                (H::BPF_FUNC_xdp_adjust_tail, "bpf_xdp_adjust_tail"),
                (H::BPF_FUNC_ktime_get_coarse_ns, "bpf_ktime_get_coarse_ns"),
            ],
        ),
        (
            ProgramType::SchedClassifier,
            &[
                (H::BPF_FUNC_check_mtu, "bpf_check_mtu"),
                (H::BPF_FUNC_redirect_neigh, "bpf_redirect_neigh"),
                (H::BPF_FUNC_skb_adjust_room, "bpf_skb_adjust_room"),
                (H::BPF_FUNC_ktime_get_coarse_ns, "bpf_ktime_get_coarse_ns"),
            ],
        ),
    ];
    for (program_type, helpers) in needed {
        for (helper, helper_name) in helpers {
            // A probe that cannot tell (no permission, say) is left to the verifier.
            if is_helper_supported(program_type, *helper).is_ok_and(|ok| !ok) {
                return Err(DataplaneError::Unsupported {
                    kernel: release,
                    missing: format!("the helper {helper_name} for {program_type:?} programs"),
                });
            }
        }
    }
    Ok(KernelSupport {
        tcx: has_tcx(),
        release,
    })
}

/// The ifindex of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, DataplaneError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| DataplaneError::NoSuchInterface(name.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(DataplaneError::NoSuchInterface(name.to_owned()));
    }
    Ok(index)
}

/// The link-layer address of `name`, from sysfs (which follows the caller's namespace only
/// when sysfs was mounted in it, so netlink-free callers in tests pass it explicitly instead).
pub fn mac_address(name: &str) -> Result<[u8; 6], DataplaneError> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .map_err(|_| DataplaneError::NoSuchInterface(name.to_owned()))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| DataplaneError::NoSuchInterface(name.to_owned()))?;
    }
    Ok(mac)
}

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` lies on a bpffs (pins elsewhere fail with an obscure EPERM).
pub fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: all-zero is a valid `statfs`; `c` is NUL-terminated and outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a live out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Removes everything `mipd` pinned under `dir` (its links, detaching the programs, and its
/// maps). Used by `mipd --unload`; missing files are fine.
pub fn unpin_all(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Dataplane {
    /// Parses the embedded object and creates its maps, unpinned. Needs `CAP_BPF`.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with(&LoadOptions::default())
    }

    /// Parses the embedded object; with a pin directory, re-opens the maps pinned there by a
    /// previous `mipd` (or creates and pins them).
    pub fn load_with(options: &LoadOptions) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        let max_bindings = if options.max_bindings == 0 {
            DEFAULT_MAX_BINDINGS
        } else {
            options.max_bindings
        };
        loader.map_max_entries(BINDINGS_MAP, max_bindings);
        let pin_paths: Vec<(&str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
                    path: dir.clone(),
                    source,
                })?;
                if !is_bpffs(dir) {
                    return Err(DataplaneError::PinDir {
                        path: dir.clone(),
                        source: std::io::Error::other(
                            "not on a BPF filesystem; mount one first (mount -t bpf bpf DIR); \
                             note that `ip netns exec` remounts /sys, hiding /sys/fs/bpf",
                        ),
                    });
                }
                ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT).map_err(DataplaneError::Load)?;
        Ok(Self {
            ebpf,
            pin_dir: options.pin_dir.clone(),
            attachments: Vec::new(),
        })
    }

    /// Returns the XDP program `name`, loading it into the kernel first if need be.
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
            xdp.load().map_err(|e| load_err(name, e))?;
        }
        Ok(xdp)
    }

    /// Returns the TC program `name`, loading it into the kernel first if need be.
    pub fn tc(&mut self, name: &str) -> Result<&mut SchedClassifier, DataplaneError> {
        let program_err = |source| DataplaneError::Program {
            name: name.to_owned(),
            source,
        };
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DataplaneError::NoSuchProgram(name.to_owned()))?;
        let tc: &mut SchedClassifier = program.try_into().map_err(program_err)?;
        if tc.fd().is_err() {
            tc.load().map_err(|e| load_err(name, e))?;
        }
        Ok(tc)
    }

    fn link_path(&self, program: &str, interface: &str) -> Option<PathBuf> {
        self.pin_dir
            .as_ref()
            .map(|d| d.join(format!("link-{program}-{interface}")))
    }

    /// Attaches XDP program `name` to `interface` (resolved in the caller's namespace),
    /// taking over a link pinned by a previous `mipd` if there is one.
    pub fn attach_xdp(
        &mut self,
        name: &str,
        interface: &str,
        generic: bool,
    ) -> Result<&Attachment, DataplaneError> {
        let index = ifindex(interface)?;
        let mode = if generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let path = self.link_path(name, interface);
        let program_err = |source| DataplaneError::Program {
            name: name.to_owned(),
            source,
        };
        let mut adopted = false;
        if let Some(path) = &path
            && let Some(link) = open_pinned(path)?
        {
            // A link left by a previous mipd: swap our program in, atomically; traffic never
            // sees a moment without one.
            let link = XdpLink::try_from(link).map_err(|e| link_err(path)(Box::new(e)))?;
            let xdp = self.xdp(name)?;
            match xdp.attach_to_link(link) {
                Ok(_) => adopted = true,
                Err(_) => forget_dead_pin(path)?,
            }
        }
        if !adopted {
            let xdp = self.xdp(name)?;
            let id = xdp.attach(index, mode).map_err(program_err)?;
            if let Some(path) = &path {
                pin(xdp.take_link(id).map_err(program_err)?, path)?;
            }
        }
        self.attachments.push(Attachment {
            program: name.to_owned(),
            interface: interface.to_owned(),
            ifindex: index,
            hook: if generic {
                "xdp (generic)"
            } else {
                "xdp (driver)"
            }
            .into(),
            pinned: path,
            adopted,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    /// Attaches TC program `name` to the egress of `interface` (a TCX link on Linux >= 6.6, a
    /// `clsact` filter before),
    /// taking over a pinned link as [`Dataplane::attach_xdp`] does.
    pub fn attach_tc_egress(
        &mut self,
        name: &str,
        interface: &str,
    ) -> Result<&Attachment, DataplaneError> {
        self.attach_tc(name, interface, TcAttachType::Egress)
    }

    /// Attaches TC program `name` to the ingress of `interface`, as
    /// [`Dataplane::attach_tc_egress`] does to the egress.
    pub fn attach_tc_ingress(
        &mut self,
        name: &str,
        interface: &str,
    ) -> Result<&Attachment, DataplaneError> {
        self.attach_tc(name, interface, TcAttachType::Ingress)
    }

    fn attach_tc(
        &mut self,
        name: &str,
        interface: &str,
        hook: TcAttachType,
    ) -> Result<&Attachment, DataplaneError> {
        let index = ifindex(interface)?;
        if !has_tcx() {
            return self.attach_tc_netlink(name, interface, index, hook);
        }
        let path = self.link_path(name, interface);
        let program_err = |source| DataplaneError::Program {
            name: name.to_owned(),
            source,
        };
        let mut adopted = false;
        if let Some(path) = &path
            && let Some(link) = open_pinned(path)?
        {
            let link =
                SchedClassifierLink::try_from(link).map_err(|e| link_err(path)(Box::new(e)))?;
            let tc = self.tc(name)?;
            match tc.attach_to_link(link) {
                Ok(_) => adopted = true,
                Err(_) => forget_dead_pin(path)?,
            }
        }
        if !adopted {
            let tc = self.tc(name)?;
            let id = tc
                .attach(index, TcAttach::Auto(hook))
                .map_err(program_err)?;
            if let Some(path) = &path {
                pin(tc.take_link(id).map_err(program_err)?, path)?;
            }
        }
        self.record_tc(name, interface, index, hook, path, adopted)
    }

    /// Attaches a TC program on a kernel without TCX (before 6.6): a `cls_bpf` filter under
    /// the device's `clsact` qdisc, added if missing. Such a filter is not a BPF link and cannot
    /// be pinned; instead each program has a fixed place among the hook's filters
    /// ([`netlink_priority`], handle 1), so a filter left by a previous `mipd` (even one killed
    /// with -9) is found there and its program swapped for ours in one RTM_NEWTFILTER without
    /// NLM_F_CREATE: cls_bpf replaces the program under RCU, so no packet meets the hook empty
    /// or runs two copies. Only where there is no such filter is one created.
    fn attach_tc_netlink(
        &mut self,
        name: &str,
        interface: &str,
        index: u32,
        hook: TcAttachType,
    ) -> Result<&Attachment, DataplaneError> {
        let program_err = |source| DataplaneError::Program {
            name: name.to_owned(),
            source,
        };
        let tc_err = |e: TcError| program_err(ProgramError::from(e));
        match tc::qdisc_add_clsact(index) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            // EEXIST: the device has its clsact already (ours from before, or tc(8)'s).
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(tc_err(e)),
        }
        let parent = TcHandle::from(hook);
        let priority = netlink_priority(name);
        let existing = SchedClassifierLink::attached(index, parent, priority, NETLINK_HANDLE, None)
            .map_err(|e| program_err(ProgramError::IOError(e)))?;
        let tc = self.tc(name)?;
        // The kernel answers ENOENT when there is nothing to replace at that place.
        let (id, adopted) = match tc.attach_to_link(existing) {
            Ok(id) => (id, true),
            Err(_) => {
                let options = NlOptions {
                    priority,
                    handle: NETLINK_HANDLE,
                    classid: None,
                };
                let id = tc
                    .attach(index, TcAttach::Netlink { parent, options })
                    .map_err(program_err)?;
                (id, false)
            }
        };
        // Kept attached beyond this process (dropping the link would detach it): the kernel
        // removes the filter with the device, `mipd --unload` ([`detach_tc_filters`]) or the
        // next mipd's swap replace it.
        std::mem::forget(tc.take_link(id).map_err(program_err)?);
        self.record_tc(name, interface, index, hook, None, adopted)
    }

    fn record_tc(
        &mut self,
        name: &str,
        interface: &str,
        index: u32,
        hook: TcAttachType,
        pinned: Option<PathBuf>,
        adopted: bool,
    ) -> Result<&Attachment, DataplaneError> {
        // A device that was re-created (the VPN's, when charon restarts) is attached again.
        self.attachments
            .retain(|a| !(a.program == name && a.interface == interface));
        self.attachments.push(Attachment {
            program: name.to_owned(),
            interface: interface.to_owned(),
            ifindex: index,
            hook: match (hook, has_tcx()) {
                (TcAttachType::Ingress, true) => "tc ingress".into(),
                (_, true) => "tc egress".into(),
                (TcAttachType::Ingress, false) => "tc ingress (clsact)".into(),
                (_, false) => "tc egress (clsact)".into(),
            },
            pinned,
            adopted,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    /// What is attached where.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    fn map_data(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::NoSuchMap(name))
    }

    fn map_data_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::NoSuchMap(name))
    }

    /// Inserts or replaces `key` → `value` in the hash map `name`.
    fn hash_insert<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
        value: &V,
    ) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, K, V> =
            HashMap::try_from(self.map_data_mut(name)?).map_err(map_err(name))?;
        map.insert(key, value, 0).map_err(map_err(name))
    }

    /// Removes `key` from the hash map `name`; absent is fine.
    fn hash_remove<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        key: &K,
    ) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, K, V> =
            HashMap::try_from(self.map_data_mut(name)?).map_err(map_err(name))?;
        let r = map.remove(key);
        if absent(&r) {
            return Ok(());
        }
        r.map_err(map_err(name))
    }

    /// Every entry of the hash map `name`.
    fn hash_entries<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<Vec<(K, V)>, DataplaneError> {
        let map: HashMap<_, K, V> =
            HashMap::try_from(self.map_data(name)?).map_err(map_err(name))?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(name))
    }

    /// Writes slot 0 of the one-element array `name`.
    fn array_set<V: Pod>(&mut self, name: &'static str, value: &V) -> Result<(), DataplaneError> {
        self.array_set_at(name, 0, value)
    }

    fn array_set_at<V: Pod>(
        &mut self,
        name: &'static str,
        index: u32,
        value: &V,
    ) -> Result<(), DataplaneError> {
        let mut array: Array<_, V> =
            Array::try_from(self.map_data_mut(name)?).map_err(map_err(name))?;
        array.set(index, value, 0).map_err(map_err(name))
    }

    /// Writes the home agent's settings (and so enables `ha_xdp`).
    pub fn set_ha_config(&mut self, config: HaDataplaneConfig) -> Result<(), DataplaneError> {
        self.array_set(HA_CONFIG_MAP, &config)
    }

    /// Records an attached interface's MAC address and role.
    pub fn set_iface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<(), DataplaneError> {
        self.hash_insert(IFACES_MAP, &ifindex, &info)
    }

    /// Inserts or replaces the binding of `home_addr`.
    pub fn upsert_binding(
        &mut self,
        home_addr: Ipv4Addr,
        binding: HaBinding,
    ) -> Result<(), DataplaneError> {
        self.hash_insert(BINDINGS_MAP, &home_addr.octets(), &binding)
    }

    /// Removes the binding of `home_addr`; absent is fine.
    pub fn remove_binding(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.hash_remove::<[u8; 4], HaBinding>(BINDINGS_MAP, &home_addr.octets())
    }

    /// Every binding in the map (what a restarted `mipd` adopts).
    pub fn bindings(&self) -> Result<Vec<(Ipv4Addr, HaBinding)>, DataplaneError> {
        Ok(self
            .hash_entries::<[u8; 4], HaBinding>(BINDINGS_MAP)?
            .into_iter()
            .map(|(k, v)| (Ipv4Addr::from(k), v))
            .collect())
    }

    /// Writes the mobile node's home-address tunnel (all-zero: inactive).
    pub fn set_mn_tunnel(&mut self, tunnel: MnTunnel) -> Result<(), DataplaneError> {
        self.array_set_at(MN_TUNNEL_MAP, MN_SLOT_HOME, &tunnel)
    }

    /// Writes the tunnel the VPN rides in (mode cvc, the x-HA's; all-zero: inactive).
    pub fn set_mn_outer_tunnel(&mut self, tunnel: MnTunnel) -> Result<(), DataplaneError> {
        self.array_set_at(MN_TUNNEL_MAP, MN_SLOT_OUTER, &tunnel)
    }

    /// Sets the RFC 5265 plaintext gate of interface `ifindex` (see [`MnGate`]).
    pub fn set_mn_gate(&mut self, ifindex: u32, gate: MnGate) -> Result<(), DataplaneError> {
        self.hash_insert(MN_GATE_MAP, &ifindex, &gate)
    }

    /// Removes the gate of `ifindex` (the interface is no longer gated); absent is fine.
    pub fn remove_mn_gate(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.hash_remove::<u32, MnGate>(MN_GATE_MAP, &ifindex)
    }

    /// The gate of every gated interface.
    pub fn mn_gates(&self) -> Result<Vec<(u32, MnGate)>, DataplaneError> {
        self.hash_entries(MN_GATE_MAP)
    }

    /// Lets ESP with `spi` (network byte order, as on the wire) to or from the gate's VPN
    /// gateway through (see [`MnGate::vpn_gateway`]).
    pub fn add_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        self.hash_insert(MN_VPN_SPIS_MAP, &spi, &1u8)
    }

    /// Stops letting ESP with `spi` through (the CHILD_SA was rekeyed or deleted); absent is
    /// fine.
    pub fn remove_vpn_spi(&mut self, spi: [u8; 4]) -> Result<(), DataplaneError> {
        self.hash_remove::<[u8; 4], u8>(MN_VPN_SPIS_MAP, &spi)
    }

    /// The SPIs the gate lets through.
    pub fn vpn_spis(&self) -> Result<Vec<[u8; 4]>, DataplaneError> {
        Ok(self
            .hash_entries::<[u8; 4], u8>(MN_VPN_SPIS_MAP)?
            .into_iter()
            .map(|(spi, _)| spi)
            .collect())
    }

    /// Writes the foreign agent's settings (and so enables `fa_xdp`).
    pub fn set_fa_config(&mut self, config: FaDataplaneConfig) -> Result<(), DataplaneError> {
        self.array_set(FA_CONFIG_MAP, &config)
    }

    /// Inserts or replaces the visitor entry of `home_addr` (RFC 5944 §3.7.3.2: on a successful
    /// Registration Reply, never for a pending request).
    pub fn upsert_visitor(
        &mut self,
        home_addr: Ipv4Addr,
        visitor: FaVisitor,
    ) -> Result<(), DataplaneError> {
        self.hash_insert(FA_VISITORS_MAP, &home_addr.octets(), &visitor)
    }

    /// Removes the visitor entry of `home_addr`; absent is fine.
    pub fn remove_visitor(&mut self, home_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.hash_remove::<[u8; 4], FaVisitor>(FA_VISITORS_MAP, &home_addr.octets())
    }

    /// Every visitor entry in the map (what a restarted `mipd` adopts).
    pub fn visitors(&self) -> Result<Vec<(Ipv4Addr, FaVisitor)>, DataplaneError> {
        Ok(self
            .hash_entries::<[u8; 4], FaVisitor>(FA_VISITORS_MAP)?
            .into_iter()
            .map(|(k, v)| (Ipv4Addr::from(k), v))
            .collect())
    }

    /// Declares `care_of_addr` one of the foreign agent's care-of addresses, advertised on
    /// `ifindex`: IP-in-IP to it is a tunnel ending here.
    pub fn add_fa_care_of(
        &mut self,
        care_of_addr: Ipv4Addr,
        ifindex: u32,
    ) -> Result<(), DataplaneError> {
        self.hash_insert(FA_CARE_OF_MAP, &care_of_addr.octets(), &ifindex)
    }

    /// Withdraws a care-of address; absent is fine.
    pub fn remove_fa_care_of(&mut self, care_of_addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.hash_remove::<[u8; 4], u32>(FA_CARE_OF_MAP, &care_of_addr.octets())
    }

    /// The foreign agent's care-of addresses and the interfaces advertising them.
    pub fn fa_care_ofs(&self) -> Result<Vec<(Ipv4Addr, u32)>, DataplaneError> {
        Ok(self
            .hash_entries::<[u8; 4], u32>(FA_CARE_OF_MAP)?
            .into_iter()
            .map(|(k, v)| (Ipv4Addr::from(k), v))
            .collect())
    }

    /// Empties the programs' cache of FIB answers on every CPU, so the next packet to each
    /// destination is looked up afresh (tests that change routes between runs).
    pub fn flush_nexthops(&mut self) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| map_err(NEXTHOP_MAP)(MapError::IoError(e)))?
            .get();
        let mut cache: PerCpuArray<_, NextHop> =
            PerCpuArray::try_from(self.map_data_mut(NEXTHOP_MAP)?).map_err(map_err(NEXTHOP_MAP))?;
        for slot in 0..NEXTHOP_SLOTS {
            let empty = aya::maps::PerCpuValues::try_from(vec![NextHop::default(); cpus as usize])
                .map_err(|e| map_err(NEXTHOP_MAP)(MapError::IoError(e)))?;
            cache.set(slot, empty, 0).map_err(map_err(NEXTHOP_MAP))?;
        }
        Ok(())
    }

    /// Every counter, summed over all CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.map_data(COUNTERS_MAP)?).map_err(map_err(COUNTERS_MAP))?;
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = counters
                    .get(&(counter as u32), 0)
                    .map_err(map_err(COUNTERS_MAP))?;
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

    /// Attachments and map sizes, for `mipctl dataplane`.
    pub fn info(&self) -> DataplaneInfo {
        let mut maps = Vec::new();
        for name in ALL_MAPS {
            let Some(map) = self.ebpf.map(name) else {
                continue;
            };
            let (kind, data): (&str, &MapData) = match map {
                aya::maps::Map::HashMap(d) => ("hash", d),
                aya::maps::Map::Array(d) => ("array", d),
                aya::maps::Map::PerCpuArray(d) => ("percpu_array", d),
                aya::maps::Map::PerCpuHashMap(d) => ("percpu_hash", d),
                _ => continue,
            };
            let max_entries = data.info().map(|i| i.max_entries()).unwrap_or(0);
            let entries = match name {
                BINDINGS_MAP => HashMap::<_, [u8; 4], HaBinding>::try_from(map)
                    .ok()
                    .map(|m| m.keys().count() as u64),
                IFACES_MAP => HashMap::<_, u32, IfaceInfo>::try_from(map)
                    .ok()
                    .map(|m| m.keys().count() as u64),
                FA_VISITORS_MAP => HashMap::<_, [u8; 4], FaVisitor>::try_from(map)
                    .ok()
                    .map(|m| m.keys().count() as u64),
                FA_CARE_OF_MAP => HashMap::<_, [u8; 4], u32>::try_from(map)
                    .ok()
                    .map(|m| m.keys().count() as u64),
                _ => None,
            };
            maps.push(MapSummary {
                name: name.to_owned(),
                kind: kind.to_owned(),
                max_entries,
                entries,
            });
        }
        DataplaneInfo {
            pin_dir: self.pin_dir.clone(),
            attachments: self.attachments.clone(),
            maps,
        }
    }

    /// The underlying aya object, for what this type does not wrap (tests, benchmarks).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Pins `link` at `path`. The pin keeps the link (and its program attached) after our
/// descriptor closes, and after `mipd` exits.
fn pin<L: TryInto<FdLink, Error = LinkError>>(link: L, path: &Path) -> Result<(), DataplaneError> {
    let fd: FdLink = link.try_into().map_err(|e| link_err(path)(Box::new(e)))?;
    fd.pin(path)
        .map_err(|e: PinError| link_err(path)(Box::new(e)))?;
    Ok(())
}

/// Removes a pinned link that can no longer take our program: the interface it pointed at is
/// gone (its namespace was deleted), so we start over with a fresh attachment.
fn forget_dead_pin(path: &Path) -> Result<(), DataplaneError> {
    std::fs::remove_file(path).map_err(|source| DataplaneError::PinDir {
        path: path.to_path_buf(),
        source,
    })
}

/// The handle of every `cls_bpf` filter mipd adds (kernels without TCX); the priority tells
/// them apart.
const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 1);

/// A TC program's fixed priority among a hook's `cls_bpf` filters (kernels without TCX): its
/// place in [`programs::ALL_TC`] from 0x6d00 on, below tc(8)'s default of 49152, so mipd's
/// filters run before filters added without a priority and each program always sits at the
/// same place for the next `mipd` to find.
fn netlink_priority(name: &str) -> u16 {
    let index = programs::ALL_TC
        .iter()
        .position(|p| *p == name)
        .unwrap_or(programs::ALL_TC.len());
    0x6d00 + index as u16
}

/// Removes mipd's `cls_bpf` filters from `interface` (kernels without TCX, where nothing is
/// pinned: `mipd --unload`). Returns how many were removed; a device without them, or
/// without a clsact qdisc, is fine.
pub fn detach_tc_filters(interface: &str) -> Result<usize, DataplaneError> {
    if has_tcx() {
        return Ok(0);
    }
    let index = ifindex(interface)?;
    let mut removed = 0;
    for name in programs::ALL_TC {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            match tc::qdisc_detach_program(index, hook.into(), name) {
                Ok(()) => removed += 1,
                Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                // No clsact qdisc on the device: no filters either.
                Err(TcError::NetlinkError(e))
                    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => {
                    return Err(DataplaneError::Program {
                        name: name.to_owned(),
                        source: ProgramError::from(e),
                    });
                }
            }
        }
    }
    Ok(removed)
}

/// Whether TC programs attach as TCX links (Linux 6.6), which can be pinned and taken over;
/// before that, only as `cls_bpf` filters through netlink. The same test aya's `TcAttach::Auto`
/// makes, so the two never disagree.
fn has_tcx() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// Opens a pinned link, if the file exists.
fn open_pinned(path: &Path) -> Result<Option<FdLink>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    PinnedLink::from_pin(path)
        .map(|p| Some(FdLink::from(p)))
        .map_err(|e| link_err(path)(Box::new(e)))
}

/// Counter values by stable name, for the API.
pub fn counters_by_name(counters: &[(Counter, u64)]) -> BTreeMap<String, u64> {
    counters
        .iter()
        .map(|(c, n)| (c.name().to_owned(), *n))
        .collect()
}

/// Whether a map deletion succeeded or found nothing to delete: the kernel answers ENOENT for
/// an absent key, which aya passes on as a syscall error.
fn absent(r: &Result<(), MapError>) -> bool {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => true,
        Err(MapError::SyscallError(e)) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_last_line_before_the_statistics() {
        // The tail of 6.1's log for ha_xdp before the length was bounded.
        let log = "; let start = self.data() + offset;\n\
                   412: (0f) r3 += r1\n\
                   math between pkt pointer and register with unbounded min value is not allowed\n\
                   processed 1204 insns (limit 1000000) max_states_per_insn 4 total_states 83\n\
                   \n";
        assert_eq!(
            verifier_verdict(log).as_deref(),
            Some("math between pkt pointer and register with unbounded min value is not allowed")
        );
        assert_eq!(verifier_verdict("\n\n"), None);
    }

    #[test]
    fn each_tc_program_has_its_own_netlink_priority() {
        let priorities: std::collections::BTreeSet<u16> = programs::ALL_TC
            .iter()
            .map(|p| netlink_priority(p))
            .collect();
        assert_eq!(priorities.len(), programs::ALL_TC.len());
        // Before tc(8)'s default, so ours run first.
        assert!(priorities.iter().all(|p| *p < 49152));
    }
}
