//! Running XDP programs on fixture bytes with `BPF_PROG_TEST_RUN` (DESIGN.md §6).

use aya::programs::{TestRun as _, TestRunOptions, Xdp};

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

/// Ethernet header length: the kernel refuses XDP test input shorter than this.
const ETH_HLEN: usize = 14;
/// `struct xdp_md` is six `__u32`s: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
const XDP_MD_LEN: usize = 6 * 4;

/// What the program did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpRun {
    /// The program's return value.
    pub verdict: u32,
    /// The frame as the program left it (metadata stripped).
    pub output: Vec<u8>,
}

/// Runs `program` (already loaded) once on `frame` and returns its verdict and output frame.
///
/// The kernel refuses test input whose packet part is shorter than an Ethernet header
/// (`bpf_prog_test_run_xdp` in `net/bpf/test_run.c` checks `data_size_in - meta >= ETH_HLEN`),
/// yet runts are exactly what a parser must survive. For those we pad the input to `ETH_HLEN`
/// with zeroes and pass a context (`struct xdp_md`) whose `data_end` is `frame.len()`: the kernel
/// then puts only `frame` in the linear area (the program's `data` .. `data_end`) and the padding
/// in a page fragment the program cannot see without multi-buffer helpers. The padding is
/// stripped from the output again.
pub fn run_xdp(program: &Xdp, frame: &[u8]) -> Result<XdpRun> {
    let padding = ETH_HLEN.saturating_sub(frame.len());
    let mut input = frame.to_vec();
    input.resize(frame.len() + padding, 0);

    let ctx = (padding > 0).then(|| {
        let linear = u32::try_from(frame.len()).expect("runt length fits in u32");
        // data = 0 (no metadata), data_end = linear length, then data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex, which must all be 0 here.
        let fields = [0, linear, 0, 0, 0, 0];
        let mut ctx = Vec::with_capacity(XDP_MD_LEN);
        for field in fields {
            ctx.extend_from_slice(&field.to_ne_bytes());
        }
        ctx
    });

    // Room for programs that grow the frame (encapsulation) in later fixtures.
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
