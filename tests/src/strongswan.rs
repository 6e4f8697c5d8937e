//! strongSwan IKEv2 daemons in network namespaces: groundwork for the RFC 5265 VPN layer (the
//! cvc/mc modes, where Mobile IPv4 runs inside or outside an IPsec VPN).
//!
//! The test kernels have XFRM netlink but no ESP/AH transforms, so the ESP data path is
//! strongSwan's userspace one: the `kernel-libipsec` plugin, which creates a TUN device
//! (`ipsec0`) per daemon, routes the protected traffic into it (routing table 220) and carries
//! ESP in UDP (port 4500, always encapsulated: the plugin makes charon behave as if behind a
//! NAT). `kernel-netlink` still provides addresses, routes and interface events (MOBIKE).
//!
//! One `charon` per namespace: charon's pidfile is compiled in (`/var/run/charon.pid`, and
//! `/var/run` is `/run`), so each daemon runs in a private mount namespace (`unshare -m`) with
//! a tmpfs on `/run`, which vanishes with the process. Everything else lives under the test's
//! [`TempDir`]: its own `strongswan.conf` (selected with `STRONGSWAN_CONF`), the VICI socket
//! (`charon.plugins.vici.socket`), the `swanctl.conf` and the logs. `swanctl` runs outside
//! the daemon's namespaces and reaches it with `--uri unix://<dir>/<name>.vici` (a path-named
//! Unix socket is not bound to a network namespace).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::Netns;
use crate::daemon::{TempDir, wait_for};

/// Where Debian installs the IKE daemon (package `strongswan-charon`).
pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// The plugins charon loads: exactly these, none of the packaged defaults. `kdf` is needed by
/// strongSwan 5.9.8 for the IKE key derivation (`KDF_PRF ... not supported` otherwise);
/// `kernel-libipsec` is listed before `kernel-netlink` so that it provides the IPsec backend
/// while `kernel-netlink` provides the networking one.
pub const PLUGINS: &str = "random nonce kdf openssl pem pkcs1 x509 pubkey \
                           kernel-libipsec kernel-netlink socket-default vici";

/// [`PLUGINS`] for the kernel's own ESP: without kernel-libipsec, kernel-netlink installs the
/// SAs and policies in XFRM.
pub const KERNEL_PLUGINS: &str = "random nonce kdf openssl pem pkcs1 x509 pubkey \
                                  kernel-netlink socket-default vici";

/// Where a charon's ESP runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ipsec {
    /// strongSwan's user-space ESP (kernel-libipsec): the only one on kernels without ESP.
    #[default]
    Libipsec,
    /// The kernel's XFRM (kernel-netlink alone).
    Kernel,
}

/// Whether this kernel has ESP and XFRM interfaces (as modules or built in): then the lab and
/// the benchmarks run on them unless told otherwise.
pub fn kernel_has_esp() -> bool {
    ["esp4", "xfrm_interface"].iter().all(|m| {
        Command::new("modprobe")
            .args(["-q", m])
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl Ipsec {
    /// As the benchmarks and the lab name it.
    pub fn name(self) -> &'static str {
        match self {
            Ipsec::Libipsec => "libipsec",
            Ipsec::Kernel => "kernel",
        }
    }

    pub fn plugins(self) -> &'static str {
        match self {
            Ipsec::Libipsec => PLUGINS,
            Ipsec::Kernel => KERNEL_PLUGINS,
        }
    }
}

/// The name of the TUN device `kernel-libipsec` creates, where the virtual IP is installed.
pub const TUN: &str = "ipsec0";

/// Test material only.
pub const PSK: &str = "mipx-strongswan-test-psk-not-secret";

/// Who is who in a PSK connection: the gateway's and the road warrior's IKE identities and the
/// key they share.
#[derive(Clone, Copy, Debug)]
pub struct PskIds<'a> {
    pub gateway: &'a str,
    pub client: &'a str,
    pub psk: &'a str,
}

/// The identities of [`Config::gateway`] and [`Config::road_warrior`].
pub const TEST_IDS: PskIds<'static> = PskIds {
    gateway: "gw.test",
    client: "client.test",
    psk: PSK,
};

/// What one daemon is told: a `swanctl.conf` (connections, pools, secrets) and optional extra
/// options for the `charon { }` section of its `strongswan.conf`.
#[derive(Clone, Debug)]
pub struct Config {
    pub swanctl: String,
    pub charon_extra: String,
    pub ipsec: Ipsec,
}

impl Config {
    /// A VPN gateway (responder): any road warrior authenticating with the shared key as
    /// `client.test` gets a virtual IP from `pool` (e.g. `10.99.0.0/24`) and a CHILD_SA to
    /// `intranet` (e.g. `10.50.0.0/24`). MOBIKE is on (IKEv2's default).
    pub fn gateway(pool: &str, intranet: &str) -> Self {
        Self::gateway_with(TEST_IDS, pool, intranet)
    }

    /// [`Config::gateway`] with other identities and key: the gateway authenticates as
    /// `ids.gateway`, accepts `ids.client`, hands out virtual IPs from `pool` and offers a
    /// CHILD_SA named `intranet` with `local_ts` = `local_ts` (what the road warrior may reach
    /// through the tunnel; the remote side is the virtual IP it got). `unique = replace`: a road
    /// warrior that comes back with a new IKE_SA (a restarted client) replaces its old one, and
    /// so gets its lease, instead of leaving a stale SA holding the address. With
    /// kernel-libipsec, `local_ts` must contain an address of the gateway's: the plugin routes
    /// each CHILD_SA's remote side into its TUN device with such a source, and fails the
    /// CHILD_SA (TS_UNACCEPTABLE) when it finds none.
    pub fn gateway_with(ids: PskIds, pool: &str, local_ts: &str) -> Self {
        let swanctl = format!(
            r#"connections {{
    gw {{
        version = 2
        pools = vpool
        mobike = yes
        unique = replace
        local {{
            auth = psk
            id = {gateway}
        }}
        remote {{
            auth = psk
            id = {client}
        }}
        children {{
            intranet {{
                local_ts = {local_ts}
            }}
        }}
    }}
}}
pools {{
    vpool {{
        addrs = {pool}
    }}
}}
{secrets}"#,
            gateway = ids.gateway,
            client = ids.client,
            secrets = secrets(ids)
        );
        Self {
            swanctl,
            charon_extra: String::new(),
            ipsec: Ipsec::default(),
        }
    }

    /// A road warrior (initiator) for [`Config::gateway`]: connects to `gateway`, asks for a
    /// virtual IP (`vips = 0.0.0.0`), and tunnels traffic from it to `intranet` through the
    /// CHILD_SA named `intranet`. MOBIKE is on; NAT-T is implicit (kernel-libipsec always
    /// encapsulates ESP in UDP 4500).
    pub fn road_warrior(gateway: Ipv4Addr, intranet: &str) -> Self {
        Self::road_warrior_with(TEST_IDS, gateway, intranet)
    }

    /// [`Config::road_warrior`] with other identities and key (see [`Config::gateway_with`]):
    /// connection `rw`, CHILD_SA `intranet` with `remote_ts` = `remote_ts`.
    pub fn road_warrior_with(ids: PskIds, gateway: Ipv4Addr, remote_ts: &str) -> Self {
        let swanctl = format!(
            r#"connections {{
    rw {{
        version = 2
        remote_addrs = {gateway}
        vips = 0.0.0.0
        mobike = yes
        local {{
            auth = psk
            id = {client}
        }}
        remote {{
            auth = psk
            id = {gw_id}
        }}
        children {{
            intranet {{
                remote_ts = {remote_ts}
            }}
        }}
    }}
}}
{secrets}"#,
            client = ids.client,
            gw_id = ids.gateway,
            secrets = secrets(ids)
        );
        Self {
            swanctl,
            charon_extra: String::new(),
            ipsec: Ipsec::default(),
        }
    }

    /// No connections, pools or secrets: a daemon that is configured over VICI (as `mipd`
    /// drives the mobile node's charon).
    pub fn empty() -> Self {
        Self {
            swanctl: String::new(),
            charon_extra: String::new(),
            ipsec: Ipsec::default(),
        }
    }

    /// This configuration with its ESP in `ipsec`.
    pub fn with_ipsec(mut self, ipsec: Ipsec) -> Self {
        self.ipsec = ipsec;
        self
    }

    /// Adds `extra` (options of the `charon { }` section) to this configuration.
    pub fn with_charon_extra(mut self, extra: &str) -> Self {
        self.charon_extra.push_str(extra);
        self
    }
}

fn secrets(ids: PskIds) -> String {
    format!(
        r#"secrets {{
    ike-vpn {{
        id-1 = {gateway}
        id-2 = {client}
        secret = "{psk}"
    }}
}}
"#,
        gateway = ids.gateway,
        client = ids.client,
        psk = ids.psk
    )
}

/// The `strongswan.conf` for one daemon.
fn strongswan_conf(vici: &str, log: &str, conf: &Config) -> String {
    let plugins = conf.ipsec.plugins();
    let extra = &conf.charon_extra;
    format!(
        r#"charon {{
    load = {plugins}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
    filelog {{
        charon {{
            path = {log}
            time_format = %H:%M:%S
            # Every line on disk at once: logs() is read for error messages while charon runs.
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            knl = 2
            net = 1
        }}
    }}
    syslog {{
    }}
{extra}
}}
"#
    )
}

/// A `charon` running in a namespace (with its own mount namespace and `/run`); stopped on
/// drop.
#[derive(Debug)]
pub struct Charon {
    child: Child,
    netns: String,
    pub name: String,
    /// Its `strongswan.conf`, passed to swanctl too (as `STRONGSWAN_CONF`).
    pub conf: PathBuf,
    pub swanctl_conf: PathBuf,
    pub vici: PathBuf,
    /// charon's own log (the `filelog` above).
    pub log: PathBuf,
    /// stdout/stderr of the wrapper and charon.
    pub out: PathBuf,
}

impl Charon {
    /// Writes `<dir>/<name>.strongswan.conf` and `<dir>/<name>.swanctl/swanctl.conf`, starts
    /// charon in `ns` under `unshare -m` with a tmpfs on `/run`, and waits until its VICI
    /// socket `<dir>/<name>.vici` answers. Does not load the configuration: see
    /// [`Charon::load_all`].
    pub fn start(ns: &Netns, dir: &TempDir, name: &str, conf: &Config) -> Result<Self> {
        let vici = dir.path(&format!("{name}.vici"));
        let log = dir.path(&format!("{name}.charon.log"));
        let out = dir.path(&format!("{name}.charon.out"));
        // A socket left behind would not answer; remove it so charon can bind.
        let _ = std::fs::remove_file(&vici);
        let conf_path = dir.write(
            &format!("{name}.strongswan.conf"),
            &strongswan_conf(path_str(&vici)?, path_str(&log)?, conf),
            0o600,
        )?;
        let swanctl_dir = dir.path(&format!("{name}.swanctl"));
        std::fs::create_dir_all(&swanctl_dir)?;
        let swanctl_conf = dir.write(
            &format!("{name}.swanctl/swanctl.conf"),
            &conf.swanctl,
            0o600,
        )?;
        let outfile = std::fs::File::create(&out)?;
        // `unshare` (without --fork) and `sh -c 'exec'` keep one pid: the child *is* charon.
        // The tmpfs is only visible in the private mount namespace and goes away with it.
        let child = ns
            .command("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &format!("mount -t tmpfs tmpfs /run && exec {CHARON}"),
            ])
            .env("STRONGSWAN_CONF", &conf_path)
            .stdin(Stdio::null())
            .stdout(outfile.try_clone()?)
            .stderr(outfile)
            .spawn()
            .context("spawning charon (is strongswan-charon installed?)")?;
        let mut charon = Charon {
            child,
            netns: ns.name().to_owned(),
            name: name.to_owned(),
            conf: conf_path,
            swanctl_conf,
            vici,
            log,
            out,
        };
        let deadline = Instant::now() + crate::daemon::patience(Duration::from_secs(10));
        loop {
            if let Some(status) = charon.child.try_wait()? {
                bail!(
                    "charon {name} exited ({status}) before its VICI socket answered; {}",
                    charon.logs()
                );
            }
            if charon.vici.exists() && charon.swanctl(&["--stats"]).is_ok() {
                return Ok(charon);
            }
            if Instant::now() > deadline {
                bail!(
                    "charon {name}: VICI socket {} did not answer in 10 s; {}",
                    charon.vici.display(),
                    charon.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Both logs, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "charon log {}:\n{}\noutput {}:\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            self.out.display(),
            std::fs::read_to_string(&self.out).unwrap_or_default()
        )
    }

    /// Runs `swanctl ARGS --uri unix://<vici>` against this daemon and returns stdout; a
    /// non-zero exit is an error with both outputs.
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("swanctl");
        cmd.args(args)
            .arg("--uri")
            .arg(format!("unix://{}", path_str(&self.vici)?))
            .env("STRONGSWAN_CONF", &self.conf)
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .context("running swanctl (is strongswan-swanctl installed?)")?;
        if !out.status.success() {
            bail!(
                "swanctl {args:?} for {} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Loads the connections, pools and secrets of this daemon's `swanctl.conf`.
    pub fn load_all(&self) -> Result<String> {
        self.swanctl(&["--load-all", "--file", path_str(&self.swanctl_conf)?])
    }

    /// Loads the connections, pools and secrets of another `swanctl.conf` (e.g. a connection a
    /// test gives a daemon started with [`Config::empty`]).
    pub fn load_file(&self, swanctl_conf: &std::path::Path) -> Result<String> {
        self.swanctl(&["--load-all", "--file", path_str(swanctl_conf)?])
    }

    /// Initiates CHILD_SA `child` (and its IKE_SA) and waits for the result (30 s at most);
    /// returns swanctl's output (the redirected IKE log).
    pub fn initiate(&self, child: &str) -> Result<String> {
        self.swanctl(&["--initiate", "--child", child, "--timeout", "30"])
            .with_context(|| self.logs())
    }

    /// `swanctl --list-sas`.
    pub fn list_sas(&self) -> Result<String> {
        self.swanctl(&["--list-sas"])
    }

    /// The IPv4 addresses (CIDR) on the kernel-libipsec TUN device in this daemon's namespace:
    /// where an initiator's virtual IP is installed.
    pub fn tun_addrs(&self) -> Result<Vec<String>> {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-4", "-o", "addr", "show", "dev", TUN])
            .output()?;
        if !out.status.success() {
            bail!(
                "ip addr show dev {TUN}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_owned)
            })
            .collect())
    }

    /// The virtual IP this initiator got, once it is installed on the TUN device.
    pub fn wait_virtual_ip(&self, timeout: Duration) -> Result<Ipv4Addr> {
        wait_for(timeout, "a virtual IP on the TUN device", || {
            Ok(self
                .tun_addrs()?
                .first()
                .and_then(|cidr| cidr.split('/').next()?.parse().ok()))
        })
    }

    /// Sends SIGTERM (charon deletes its SAs, routes and TUN device) and waits for the exit,
    /// SIGKILL after 5 s.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own, not yet reaped, child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + crate::daemon::patience(Duration::from_secs(5));
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("charon {} ignored SIGTERM for 5 s; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("warning: stopping charon {}: {err:#}", self.name);
        }
    }
}

fn path_str(p: &std::path::Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}
