//! Running XDP and TC programs on fixture bytes with `BPF_PROG_TEST_RUN` (DESIGN.md §6).

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};

use anyhow::{Context as _, Result, ensure};

/// XDP verdicts (`enum xdp_action` in `linux/bpf.h`), spelled out because aya's user-space crate
/// does not re-export them.
pub mod xdp_action {
    pub const XDP_ABORTED: u32 = 0;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;

    /// A readable name for assertion messages.
    pub fn name(verdict: u32) -> &'static str {
        match verdict {
            XDP_ABORTED => "XDP_ABORTED",
            XDP_DROP => "XDP_DROP",
            XDP_PASS => "XDP_PASS",
            XDP_TX => "XDP_TX",
            XDP_REDIRECT => "XDP_REDIRECT",
            _ => "unknown verdict",
        }
    }
}

/// TC verdicts (`TC_ACT_*` in `linux/pkt_cls.h`), as the `u32` the test run returns.
pub mod tc_action {
    pub const TC_ACT_OK: u32 = 0;
    pub const TC_ACT_SHOT: u32 = 2;
    pub const TC_ACT_REDIRECT: u32 = 7;
    /// `TC_ACT_UNSPEC` (-1), as the kernel reports it in the `u32` return value.
    pub const TC_ACT_UNSPEC: u32 = u32::MAX;

    /// A readable name for assertion messages.
    pub fn name(verdict: u32) -> &'static str {
        match verdict {
            TC_ACT_OK => "TC_ACT_OK",
            TC_ACT_SHOT => "TC_ACT_SHOT",
            TC_ACT_REDIRECT => "TC_ACT_REDIRECT",
            TC_ACT_UNSPEC => "TC_ACT_UNSPEC",
            _ => "other TC verdict",
        }
    }
}

/// Ethernet header length: the kernel refuses XDP test input shorter than this.
const ETH_HLEN: usize = 14;
/// `struct xdp_md` is six `__u32`s: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
const XDP_MD_LEN: usize = 6 * 4;

/// Offset of `ifindex` in `struct __sk_buff` (`linux/bpf.h`: len, pkt_type, mark,
/// queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, then
/// ifindex: eleven `__u32`s). [`run_tc`] checks it against what the kernel writes back.
const SKB_IFINDEX_OFFSET: usize = 10 * 4;
/// How much of `struct __sk_buff` [`run_tc`] passes: everything up to and including `ifindex`
/// (the kernel zero-fills the rest and accepts a shorter context).
const SKB_CTX_LEN: usize = SKB_IFINDEX_OFFSET + 4;

/// What the program did with one frame (XDP or TC alike: see [`TcRun`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpRun {
    /// The program's return value.
    pub verdict: u32,
    /// The frame as the program left it (metadata stripped).
    pub output: Vec<u8>,
}

/// What a TC program did with one frame: its `TC_ACT_*` verdict and the frame it left.
pub type TcRun = XdpRun;

/// Pins the calling thread to the CPU it runs on now. BPF_PROG_TEST_RUN runs a program on the
/// calling thread's CPU, so per-CPU maps (the next-hop cache, `MIPX_NEXTHOPS`) carry state from
/// one run to the next only while the thread stays on one CPU; the scheduler moves it freely
/// otherwise (a spawned `ip` is enough), and a test of cached state would then see another
/// CPU's empty slot.
pub fn pin_to_current_cpu() -> Result<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    ensure!(
        cpu >= 0,
        "sched_getcpu: {}",
        std::io::Error::last_os_error()
    );
    let cpu = cpu as usize;
    // SAFETY: cpu_set_t is a plain bit array (all-zero is the empty set), valid for its size;
    // pid 0 is the calling thread.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        pinned == 0,
        "pinning the test thread to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(cpu)
}

/// Runs `program` (already loaded) once on `frame` and returns its verdict and output frame.
///
/// No `ingress_ifindex`: the kernel runs it as if received on the loopback device of the calling
/// thread's network namespace. See [`run_xdp_on`].
pub fn run_xdp(program: &Xdp, frame: &[u8]) -> Result<XdpRun> {
    run_xdp_with(program, frame, None)
}

/// Runs `program` once on `frame` as if it had arrived on interface `ingress_ifindex` of the
/// calling thread's network namespace (enter it first with [`crate::Netns::enter`]).
///
/// That is what makes `bpf_fib_lookup` meaningful: for XDP the helper looks routes and
/// neighbours up in the namespace of the receiving device, and the programs pass that device's
/// index as the lookup's input interface. `ctx->ingress_ifindex()` reads it too (the home
/// agent's proxy ARP decides by it).
pub fn run_xdp_on(program: &Xdp, frame: &[u8], ingress_ifindex: u32) -> Result<XdpRun> {
    run_xdp_with(program, frame, Some(ingress_ifindex))
}

/// The common part of [`run_xdp`] and [`run_xdp_on`].
///
/// The kernel refuses test input whose packet part is shorter than an Ethernet header
/// (`bpf_prog_test_run_xdp` in `net/bpf/test_run.c` checks `data_size_in - meta >= ETH_HLEN`),
/// yet runts are exactly what a parser must survive. For those we pad the input to `ETH_HLEN`
/// with zeroes and pass a context (`struct xdp_md`) whose `data_end` is `frame.len()`: the kernel
/// then puts only `frame` in the linear area (the program's `data` .. `data_end`) and the padding
/// in a page fragment the program cannot see without multi-buffer helpers. The padding is
/// stripped from the output again.
fn run_xdp_with(program: &Xdp, frame: &[u8], ingress_ifindex: Option<u32>) -> Result<XdpRun> {
    let padding = ETH_HLEN.saturating_sub(frame.len());
    let mut input = frame.to_vec();
    input.resize(frame.len() + padding, 0);

    let ctx = (padding > 0 || ingress_ifindex.is_some()).then(|| {
        let linear = u32::try_from(frame.len()).expect("frame length fits in u32");
        // data = 0 (no metadata), data_end = linear length, data_meta = 0, ingress_ifindex,
        // rx_queue_index = 0 (every device registers queue 0), egress_ifindex = 0 (the kernel
        // refuses anything else).
        let fields = [0, linear, 0, ingress_ifindex.unwrap_or(0), 0, 0];
        let mut ctx = Vec::with_capacity(XDP_MD_LEN);
        for field in fields {
            ctx.extend_from_slice(&field.to_ne_bytes());
        }
        ctx
    });

    // Room for programs that grow the frame (encapsulation).
    let mut output = vec![0u8; input.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut output),
            ctx_in: ctx.as_deref(),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    let out_len = usize::try_from(result.data_size_out).context("data_size_out")?;
    ensure!(
        out_len <= output.len(),
        "BPF_PROG_TEST_RUN returned {out_len} bytes, more than the {}-byte buffer",
        output.len()
    );
    output.truncate(out_len);
    if padding > 0 {
        ensure!(
            out_len == input.len(),
            "program resized a padded runt ({} bytes in, {out_len} out); cannot strip padding",
            input.len()
        );
        output.truncate(frame.len());
    }
    Ok(XdpRun {
        verdict: result.return_value,
        output,
    })
}

/// Runs the TC program `program` (already loaded) once on the Ethernet frame `frame`, as the
/// kernel's `bpf_prog_test_run_skb` does: it builds an skb on device `ifindex` of the calling
/// thread's network namespace (`None`: its loopback device), with the MAC header pushed back as
/// a TC hook sees it. The device matters: `__sk_buff::ifindex`, `bpf_check_mtu` and
/// `bpf_fib_lookup` all follow it.
///
/// Unlike XDP there is no way to hand over a runt: the kernel refuses (EINVAL) a frame shorter
/// than an Ethernet header, and on Linux 6.18 also an IPv4 frame (EtherType 0x0800) without a
/// whole 20-byte IPv4 header.
pub fn run_tc(program: &SchedClassifier, frame: &[u8], ifindex: Option<u32>) -> Result<TcRun> {
    ensure!(
        frame.len() >= ETH_HLEN,
        "BPF_PROG_TEST_RUN for skb programs needs at least an Ethernet header ({} bytes given)",
        frame.len()
    );
    let ctx = ifindex.map(|index| {
        let mut ctx = vec![0u8; SKB_CTX_LEN];
        ctx[SKB_IFINDEX_OFFSET..].copy_from_slice(&index.to_ne_bytes());
        ctx
    });
    // The kernel copies its whole `struct __sk_buff` back (192 bytes on 6.x) and fails with
    // ENOSPC if the buffer is shorter, so leave room.
    let mut ctx_out = vec![0u8; 512];
    let mut output = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            ctx_in: ctx.as_deref(),
            ctx_out: ctx.is_some().then_some(&mut ctx_out[..]),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    if let Some(index) = ifindex {
        let back = u32::from_ne_bytes(
            ctx_out[SKB_IFINDEX_OFFSET..SKB_CTX_LEN]
                .try_into()
                .expect("4 bytes"),
        );
        ensure!(
            back == index,
            "the kernel ran the skb on ifindex {back}, not {index}: is the __sk_buff layout \
             in tests/src/bpf.rs right?"
        );
    }
    let out_len = usize::try_from(result.data_size_out).context("data_size_out")?;
    ensure!(
        out_len <= output.len(),
        "BPF_PROG_TEST_RUN returned {out_len} bytes, more than the {}-byte buffer",
        output.len()
    );
    output.truncate(out_len);
    Ok(TcRun {
        verdict: result.return_value,
        output,
    })
}
