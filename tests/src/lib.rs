//! Shared helpers for mipx's privileged tests (DESIGN.md §6): network namespaces with unique
//! names that vanish on drop, and [`require_root`], which fails a test that lacks privileges
//! instead of letting it pass by skipping.

pub mod bpf;
pub mod bpf_fixture_env;
pub mod daemon;
pub mod detection;
pub mod mobility;
pub mod netns;
pub mod rfc5265_lab;
pub mod strongswan;

pub use netns::{Netns, veth_pair};

/// Ports a test NAT maps UDP and TCP sources to: Linux's own ephemeral range, as a home router
/// would pick. Above every well-known port on purpose: tshark decodes a datagram by its lower
/// port, so a mapping onto, say, 53 or 1812 would show Mobile IP (434) or NAT-T (4500) as DNS
/// or RADIUS in the captures.
pub const NAT_PORTS: &str = "32768-60999";

/// A real nftables source NAT in `ns`: whatever matches the nft expression `matches` (e.g.
/// `oifname "up"`) leaves masqueraded, with a random port from [`NAT_PORTS`] per new mapping
/// (so a lost mapping comes back on another port, RFC 3519 §4.10); other protocols (ICMP,
/// ESP) get the address only.
pub fn nft_masquerade(ns: &Netns, matches: &[&str]) -> anyhow::Result<()> {
    ns.exec(&["nft", "add", "table", "ip", "mipx_nat"])?;
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        "mipx_nat",
        "postrouting",
        "{ type nat hook postrouting priority srcnat; }",
    ])?;
    let rule = |tail: &[&str]| {
        let mut args = vec!["nft", "add", "rule", "ip", "mipx_nat", "postrouting"];
        args.extend_from_slice(matches);
        args.extend_from_slice(tail);
        ns.exec(&args).map(drop)
    };
    let ports = format!(":{NAT_PORTS}");
    rule(&[
        "meta",
        "l4proto",
        "{",
        "tcp,",
        "udp",
        "}",
        "masquerade",
        "to",
        &ports,
        "random",
    ])?;
    rule(&["masquerade", "random"])
}

/// Capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Panics (failing the test) unless this process runs as root with the capabilities the
/// privileged tests need: `CAP_BPF` to load programs and create maps, `CAP_NET_ADMIN` for links
/// and XDP, `CAP_SYS_ADMIN` for `ip netns` (mount namespaces, bind mounts).
///
/// A privileged test that cannot get its privileges must fail loudly, never skip (DESIGN.md §6):
/// a CI run without root would otherwise report green while testing nothing. Run the suite as
/// root, e.g. through `cargo xtask test`.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (euid is {euid}); run it as root, e.g. `sudo cargo xtask test`"
    );
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status to check capabilities");
    let cap_eff = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16))
        .expect("no CapEff line in /proc/self/status")
        .expect("CapEff in /proc/self/status is not hex");
    for (cap, name) in [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        assert!(
            cap_eff & (1 << cap) != 0,
            "this test needs {name}, which is not in the effective set (CapEff {cap_eff:#x})"
        );
    }
}
