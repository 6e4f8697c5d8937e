//! The loaded eBPF objects: four copies of the dataplane object, one whose binding map holds a
//! single binding and one holding `N` (all maps sized alike, so only occupancy and spread
//! differ), each once with IP-in-IP bindings and once with RFC 3519 UDP-tunnelled ones, and a
//! fifth copy that only runs the generator (its own maps, so the generator thread never shares
//! an object with the measuring thread).

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, ensure};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use mipx_common::{
    bench::{
        FWD_CONFIG_MAP, FwdConfig, GEN_CONFIG_MAP, GenConfig, SINK_CONFIG_MAP, SINK_STATS_MAP,
        SinkConfig, SinkStats, programs as bench_programs,
    },
    counters::Counter,
    maps::{BINDINGS_MAP, HaBinding, HaDataplaneConfig, TUNNEL_REVERSE, TUNNEL_UDP},
};
use mipx_control::dataplane::{Dataplane, LoadOptions, programs};
use mipx_tests::Netns;

use super::plan::{
    CARE_OF, HA_UDP_PORT, HOME_AGENT, HOME_BASE, MAC_DUT_OUT, MAC_SINK, UDP_TUNNEL_PEER,
    UDP_TUNNEL_PEER_PORT,
};

/// Which copy of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obj {
    /// One IP-in-IP binding (also holds the sink and the redirect baseline).
    One,
    /// `N` IP-in-IP bindings.
    Many,
    /// One RFC 3519 UDP-tunnelled binding.
    OneUdp,
    /// `N` UDP-tunnelled bindings.
    ManyUdp,
}

impl Obj {
    /// The copy holding `bindings` bindings (1, or more), UDP-tunnelled or not.
    pub fn of(bindings: u32, udp: bool) -> Obj {
        match (bindings > 1, udp) {
            (false, false) => Obj::One,
            (true, false) => Obj::Many,
            (false, true) => Obj::OneUdp,
            (true, true) => Obj::ManyUdp,
        }
    }
}

/// The four DUT copies of the object.
pub struct Objects {
    pub one: Dataplane,
    pub many: Dataplane,
    pub one_udp: Dataplane,
    pub many_udp: Dataplane,
    attached: Option<(Obj, &'static str, XdpLinkId)>,
}

/// The generator's copy of the object.
pub struct Generator(Dataplane);

/// Every program the benchmark runs from the DUT objects.
const DUT_PROGRAMS: [&str; 6] = [
    programs::HA_XDP,
    programs::MIPX_DROP,
    programs::MIPX_PASS,
    bench_programs::REDIRECT,
    bench_programs::FIB,
    bench_programs::LOOKUP,
];

impl Objects {
    pub fn load(bindings: u32, dut_out_ifindex: u32) -> Result<(Self, Generator)> {
        let max_bindings = max_bindings(bindings);
        let options = LoadOptions {
            pin_dir: None,
            max_bindings,
        };
        let mut one = Dataplane::load_with(&options).context("loading the object (1 binding)")?;
        let mut many = Dataplane::load_with(&options).context("loading the object (N bindings)")?;
        let mut one_udp = Dataplane::load_with(&options)
            .context("loading the object (1 UDP-tunnelled binding)")?;
        let mut many_udp = Dataplane::load_with(&options)
            .context("loading the object (N UDP-tunnelled bindings)")?;
        let mut generator = Dataplane::load_with(&LoadOptions::default())
            .context("loading the object (generator)")?;
        for dp in [&mut one, &mut many, &mut one_udp, &mut many_udp] {
            for name in DUT_PROGRAMS {
                dp.xdp(name)?;
            }
            // No daemon advances the next-hop epoch here: entries stay valid between the
            // program's own clock checks, as they do between two epochs under mipd.
            dp.set_ha_config(HaDataplaneConfig {
                home_agent: HOME_AGENT.octets(),
                enabled: 1,
                udp_port: HA_UDP_PORT.to_be_bytes(),
                ..HaDataplaneConfig::default()
            })?;
        }
        one.xdp(bench_programs::SINK)?;
        generator.xdp(bench_programs::GEN)?;
        insert_bindings(&mut one, 1, false)?;
        insert_bindings(&mut one_udp, 1, true)?;
        for (dp, udp) in [(&mut many, false), (&mut many_udp, true)] {
            let t = std::time::Instant::now();
            insert_bindings(dp, bindings, udp)?;
            eprintln!(
                "  {bindings} {} bindings inserted in {:.1} s (one syscall each: aya 0.16 has no \
                 batch update)",
                if udp { "UDP-tunnelled" } else { "IP-in-IP" },
                t.elapsed().as_secs_f64()
            );
        }
        let mut objects = Objects {
            one,
            many,
            one_udp,
            many_udp,
            attached: None,
        };
        let fwd = FwdConfig {
            ifindex: dut_out_ifindex,
            smac: MAC_DUT_OUT,
            dmac: MAC_SINK,
        };
        let mut a: Array<_, FwdConfig> = Array::try_from(
            objects
                .one
                .ebpf_mut()
                .map_mut(FWD_CONFIG_MAP)
                .context(FWD_CONFIG_MAP)?,
        )?;
        a.set(0, &fwd, 0)?;
        Ok((objects, Generator(generator)))
    }

    pub fn get(&mut self, obj: Obj) -> &mut Dataplane {
        match obj {
            Obj::One => &mut self.one,
            Obj::Many => &mut self.many,
            Obj::OneUdp => &mut self.one_udp,
            Obj::ManyUdp => &mut self.many_udp,
        }
    }

    /// The loaded program `name` of `obj`.
    pub fn program(&mut self, obj: Obj, name: &str) -> Result<&mut Xdp> {
        Ok(self.get(obj).xdp(name)?)
    }

    /// Attaches `prog` (or nothing) to the DUT's ingress, replacing what was there.
    pub fn attach_dut(
        &mut self,
        dut_ns: &Netns,
        ifindex: u32,
        prog: Option<(Obj, &'static str)>,
    ) -> Result<()> {
        if let Some((obj, name, _)) = self.attached
            && Some((obj, name)) == prog
        {
            return Ok(());
        }
        if let Some((obj, name, id)) = self.attached.take() {
            self.program(obj, name)?
                .detach(id)
                .with_context(|| format!("detaching {name}"))?;
        }
        if let Some((obj, name)) = prog {
            let _in = dut_ns.enter()?;
            let id = self
                .program(obj, name)?
                .attach(ifindex, XdpMode::Driver)
                .with_context(|| format!("attaching {name}"))?;
            self.attached = Some((obj, name, id));
        }
        Ok(())
    }

    /// Attaches the sink program to the sink's interface (for good: dropped with the object).
    pub fn attach_sink(&mut self, sink_ns: &Netns, ifindex_name: &str) -> Result<()> {
        let _in = sink_ns.enter()?;
        let index = mipx_control::dataplane::ifindex(ifindex_name)?;
        self.one
            .xdp(bench_programs::SINK)?
            .attach(index, XdpMode::Driver)
            .context("attaching the sink")?;
        Ok(())
    }

    pub fn set_sink(&mut self, cfg: SinkConfig) -> Result<()> {
        let mut a: Array<_, SinkConfig> = Array::try_from(
            self.one
                .ebpf_mut()
                .map_mut(SINK_CONFIG_MAP)
                .context(SINK_CONFIG_MAP)?,
        )?;
        a.set(0, &cfg, 0)?;
        Ok(())
    }

    pub fn sink_stats(&mut self) -> Result<SinkStats> {
        let a: PerCpuArray<_, SinkStats> = PerCpuArray::try_from(
            self.one
                .ebpf_mut()
                .map(SINK_STATS_MAP)
                .context(SINK_STATS_MAP)?,
        )?;
        let per_cpu = a.get(&0, 0)?;
        let mut sum = SinkStats::default();
        for s in per_cpu.iter() {
            sum.packets += s.packets;
            sum.wrong_len += s.wrong_len;
            sum.wrong_proto += s.wrong_proto;
        }
        Ok(sum)
    }

    pub fn counters(&self, obj: Obj) -> Result<Vec<(Counter, u64)>> {
        let dp = match obj {
            Obj::One => &self.one,
            Obj::Many => &self.many,
            Obj::OneUdp => &self.one_udp,
            Obj::ManyUdp => &self.many_udp,
        };
        Ok(dp.counters()?)
    }
}

impl Generator {
    pub fn configure(&mut self, cfg: GenConfig) -> Result<()> {
        let mut a: Array<_, GenConfig> = Array::try_from(
            self.0
                .ebpf_mut()
                .map_mut(GEN_CONFIG_MAP)
                .context(GEN_CONFIG_MAP)?,
        )?;
        a.set(0, &cfg, 0)?;
        Ok(())
    }

    /// The generator program, for a thread of its own.
    pub fn program(&mut self) -> Result<&Xdp> {
        Ok(&*self.0.xdp(bench_programs::GEN)?)
    }
}

/// Capacity of every binding map: the same for the 1-binding ones, so that only occupancy and
/// spread differ.
pub fn max_bindings(bindings: u32) -> u32 {
    bindings.next_power_of_two().max(1 << 20)
}

/// Binds home addresses `HOME_BASE .. HOME_BASE + n` to the care-of address, with reverse
/// tunnelling, as `mipd` would after accepting their registrations; with `udp`, RFC 3519 UDP
/// tunnelling to [`UDP_TUNNEL_PEER`] port [`UDP_TUNNEL_PEER_PORT`] (where the registrations
/// came from).
fn insert_bindings(dp: &mut Dataplane, n: u32, udp: bool) -> Result<()> {
    let binding = HaBinding {
        care_of_addr: CARE_OF.octets(),
        home_agent: HOME_AGENT.octets(),
        tunnel_flags: if udp {
            TUNNEL_REVERSE | TUNNEL_UDP
        } else {
            TUNNEL_REVERSE
        },
        spi: 4096,
        source_addr: UDP_TUNNEL_PEER.octets(),
        source_port: UDP_TUNNEL_PEER_PORT.to_be_bytes(),
        lifetime: 600,
        ..HaBinding::default()
    };
    let mut map: HashMap<_, [u8; 4], HaBinding> =
        HashMap::try_from(dp.ebpf_mut().map_mut(BINDINGS_MAP).context(BINDINGS_MAP)?)?;
    let base = u32::from(HOME_BASE);
    for i in 0..n {
        if i % 65_536 == 0 {
            super::check_interrupted()?;
        }
        let home = Ipv4Addr::from(base + i);
        map.insert(&home.octets(), &binding, 0)
            .with_context(|| format!("inserting binding {i} ({home})"))?;
    }
    let count = map.keys().count();
    ensure!(
        count == n as usize,
        "binding map holds {count} entries, expected {n}"
    );
    Ok(())
}
