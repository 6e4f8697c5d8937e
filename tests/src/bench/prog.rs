//! Per-program cost with `BPF_PROG_TEST_RUN` (BENCH-METHOD.md, measurement 1).
//!
//! The thread is pinned to the DUT's CPU and inside the DUT's namespace, where `ha_xdp`'s FIB
//! lookup finds the route and the permanent neighbour entry; the context's `ingress_ifindex` is
//! the DUT's ingress. Programs that modify the packet are run with `repeat = 1`, called many
//! times, summing the kernel's `duration` (with `repeat > 1` the program would see its own
//! output from the second run on); so is the drop baseline they are compared with, so the
//! per-call overhead inside the timed region is the same on both sides. Drop and pass are also
//! measured with one large `repeat`, for reference.

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use mipx_common::{bench::GenConfig, bench::programs as bench_programs, ipv4};
use mipx_control::dataplane::programs;
use serde_json::{Value, json};

use super::dut::{Obj, Objects};
use super::e2e::xdp_md;
use super::plan::{
    self, CARE_OF, HA_UDP_PORT, HOME_AGENT, IP_HLEN, MAC_DUT_OUT, MAC_SINK, UDP_TUNNEL_LEN,
    UDP_TUNNEL_PEER, UDP_TUNNEL_PEER_PORT,
};
use super::topo::Topology;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
/// Runs longer than this are left out of the sum (see the loop in [`measure`]).
const OUTLIER_NS: u128 = 20_000;

/// One program measurement.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// Name in the report.
    pub name: &'static str,
    obj: Obj,
    program: &'static str,
    /// `true`: one call with `repeat = calls`; `false`: `calls` calls with `repeat = 1`.
    repeat: bool,
    kind: Kind,
    pub size: u16,
    pub bindings: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Drop,
    Pass,
    Redirect,
    Encap,
    Decap,
    /// RFC 3519 IP-in-UDP encapsulation.
    UdpEncap,
    /// RFC 3519 IP-in-UDP decapsulation.
    UdpDecap,
    Fib,
    Lookup,
}

impl Item {
    /// Every item of a round.
    pub fn all(sizes: &[u16], many: u32) -> Vec<Item> {
        let mut v = Vec::new();
        for &size in sizes {
            let item = |name, obj, program, repeat, kind, bindings| Item {
                name,
                obj,
                program,
                repeat,
                kind,
                size,
                bindings,
            };
            v.push(item(
                "drop",
                Obj::One,
                programs::MIPX_DROP,
                false,
                Kind::Drop,
                0,
            ));
            v.push(item(
                "drop (repeat)",
                Obj::One,
                programs::MIPX_DROP,
                true,
                Kind::Drop,
                0,
            ));
            v.push(item(
                "pass (repeat)",
                Obj::One,
                programs::MIPX_PASS,
                true,
                Kind::Pass,
                0,
            ));
            v.push(item(
                "redirect",
                Obj::One,
                bench_programs::REDIRECT,
                false,
                Kind::Redirect,
                0,
            ));
            v.push(item(
                "fib_lookup",
                Obj::One,
                bench_programs::FIB,
                false,
                Kind::Fib,
                0,
            ));
            let lookup = bench_programs::LOOKUP;
            v.push(item(
                "binding_lookup",
                Obj::One,
                lookup,
                false,
                Kind::Lookup,
                1,
            ));
            v.push(item(
                "binding_lookup",
                Obj::Many,
                lookup,
                false,
                Kind::Lookup,
                many,
            ));
            // IP-in-IP and RFC 3519 UDP side by side, so each pair is measured close in time.
            for bindings in [1, many] {
                for (name, udp, kind) in [
                    ("ha_encap", false, Kind::Encap),
                    ("ha_udp_encap", true, Kind::UdpEncap),
                    ("ha_decap", false, Kind::Decap),
                    ("ha_udp_decap", true, Kind::UdpDecap),
                ] {
                    let obj = Obj::of(bindings, udp);
                    v.push(item(name, obj, programs::HA_XDP, false, kind, bindings));
                }
            }
        }
        v
    }

    fn generator(&self) -> GenConfig {
        let count = self.bindings.max(1);
        match self.kind {
            Kind::Decap => plan::reverse_tunnelled(self.size, count),
            Kind::UdpDecap => plan::udp_reverse_tunnelled(self.size, count),
            Kind::Fib => plan::fib_probe(self.size),
            _ => plan::to_home_addresses(self.size, count),
        }
    }

    pub fn label(&self) -> String {
        let b = if self.bindings > 0 {
            format!(" {} binding(s)", self.bindings)
        } else {
            String::new()
        };
        format!("{} {}B{b}", self.name, self.size)
    }

    /// Checks one run's verdict and output.
    fn check(&self, input: &[u8], verdict: u32, out: &[u8]) -> Result<()> {
        let expect = |want: u32| -> Result<()> {
            ensure!(
                verdict == want,
                "{}: verdict {verdict}, expected {want}",
                self.label()
            );
            Ok(())
        };
        match self.kind {
            Kind::Drop => {
                expect(XDP_DROP)?;
                ensure!(out == input, "{}: drop changed the frame", self.label());
            }
            Kind::Pass => expect(XDP_PASS)?,
            // XDP_DROP: route and neighbour resolved; binding found.
            Kind::Fib | Kind::Lookup => expect(XDP_DROP)?,
            Kind::Redirect => {
                expect(XDP_REDIRECT)?;
                ensure!(
                    out.len() == input.len() && out[..6] == MAC_SINK && out[6..12] == MAC_DUT_OUT
                );
            }
            Kind::Encap => {
                expect(XDP_REDIRECT)?;
                ensure!(
                    out.len() == input.len() + IP_HLEN,
                    "{}: {} bytes out of {} in",
                    self.label(),
                    out.len(),
                    input.len()
                );
                ensure!(
                    out[..6] == MAC_SINK && out[6..12] == MAC_DUT_OUT,
                    "encap MACs"
                );
                ensure!(
                    out[14 + ipv4::field::PROTOCOL] == ipv4::PROTO_IPIP,
                    "encap protocol"
                );
                ensure!(out[30..34] == CARE_OF.octets(), "encap outer destination");
                ensure!(
                    out[34 + 16..34 + 20] == input[14 + 16..14 + 20],
                    "encap inner dst"
                );
            }
            Kind::Decap | Kind::UdpDecap => {
                // The same checks for both tunnels; only the stripped headers' length differs.
                let hlen = if self.kind == Kind::UdpDecap {
                    UDP_TUNNEL_LEN
                } else {
                    IP_HLEN
                };
                expect(XDP_REDIRECT)?;
                ensure!(
                    out.len() + hlen == input.len(),
                    "{}: {} bytes out of {} in",
                    self.label(),
                    out.len(),
                    input.len()
                );
                ensure!(
                    out[..6] == MAC_SINK && out[6..12] == MAC_DUT_OUT,
                    "decap MACs"
                );
                ensure!(
                    out[14 + ipv4::field::PROTOCOL] == ipv4::PROTO_UDP,
                    "decap protocol"
                );
                ensure!(
                    out[14 + 12..14 + 20] == input[14 + hlen + 12..14 + hlen + 20],
                    "decap inner addresses"
                );
            }
            Kind::UdpEncap => {
                expect(XDP_REDIRECT)?;
                ensure!(
                    out.len() == input.len() + UDP_TUNNEL_LEN,
                    "{}: {} bytes out of {} in",
                    self.label(),
                    out.len(),
                    input.len()
                );
                ensure!(
                    out[..6] == MAC_SINK && out[6..12] == MAC_DUT_OUT,
                    "UDP encap MACs"
                );
                let outer: &[u8; IP_HLEN] = out[14..34].try_into()?;
                ensure!(
                    outer[ipv4::field::PROTOCOL] == ipv4::PROTO_UDP && ipv4::checksum_ok(outer),
                    "UDP encap outer header"
                );
                ensure!(
                    outer[12..16] == HOME_AGENT.octets()
                        && outer[16..20] == UDP_TUNNEL_PEER.octets(),
                    "UDP encap outer addresses"
                );
                let udp_len = (out.len() - 14 - IP_HLEN) as u16;
                ensure!(
                    out[34..36] == HA_UDP_PORT.to_be_bytes()
                        && out[36..38] == UDP_TUNNEL_PEER_PORT.to_be_bytes()
                        && out[38..40] == udp_len.to_be_bytes(),
                    "UDP encap ports and length"
                );
                ensure!(
                    out[42..46] == [ipv4::MIP_TUNNEL_DATA, ipv4::PROTO_IPIP, 0, 0],
                    "UDP encap MIP Tunnel Data header"
                );
                ensure!(
                    out[46 + 16..46 + 20] == input[14 + 16..14 + 20],
                    "UDP encap inner dst"
                );
            }
        }
        Ok(())
    }
}

/// Measures `item` with `calls` runs. Call with the thread pinned and inside the DUT namespace.
pub fn measure(
    topo: &Topology,
    objs: &mut Objects,
    item: &Item,
    calls: u32,
    round: usize,
) -> Result<Value> {
    super::check_interrupted()?;
    let cfg = item.generator();
    let step = cfg.step;
    let count = cfg.count;
    let program: &Xdp = objs.program(item.obj, item.program)?;
    let ctx = xdp_md(u32::from(cfg.frame_len), topo.dut_in_ifindex);
    let mut out = vec![0u8; usize::from(cfg.frame_len) + 256];

    let mut frame = plan::frame(&cfg, 0);
    let first = program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN {}", item.label()))?;
    let out_len = first.data_size_out as usize;
    item.check(&frame, first.return_value, &out[..out_len])?;

    let mut outliers = 0u32;
    let (total_ns, runs) = if item.repeat {
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: calls,
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN {}", item.label()))?;
        // The kernel reports the mean per run.
        (r.duration.as_nanos() as f64 * f64::from(calls), calls)
    } else {
        let mut total = 0u128;
        let mut kept = 0u32;
        let mut index = 0u32;
        for call in 0..calls {
            if call % 65_536 == 0 {
                super::check_interrupted()?;
            }
            if count > 1 {
                index = (index + step) % count;
                frame = plan::frame(&cfg, index);
            }
            let r = program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::default()
                })
                .with_context(|| format!("BPF_PROG_TEST_RUN {}", item.label()))?;
            if r.return_value != first.return_value || r.data_size_out != first.data_size_out {
                bail!(
                    "{}: run {call} returned {} with {} bytes, the first {} with {out_len}",
                    item.label(),
                    r.return_value,
                    r.data_size_out,
                    first.return_value
                );
            }
            // A run that took longer than OUTLIER was interrupted (an interrupt, or a switch to
            // another task between the program's end and the kernel's clock read): leave it out
            // rather than let one 5 ms preemption outweigh 50,000 runs.
            let ns = r.duration.as_nanos();
            if ns <= OUTLIER_NS {
                total += ns;
                kept += 1;
            }
        }
        outliers = calls - kept;
        ensure!(kept > 0, "{}: every run was an outlier", item.label());
        (total as f64, kept)
    };
    Ok(json!({
        "round": round,
        "name": item.name,
        "program": item.program,
        "size": item.size,
        "bindings": item.bindings,
        "repeat": item.repeat,
        "runs": runs,
        "outliers": outliers,
        "ns_per_run": total_ns / f64::from(runs),
        "verdict": first.return_value,
        "out_len": out_len,
    }))
}
