//! Driving strongSwan's IKE daemon (charon) over VICI, its control socket: mipd does not
//! implement IKE; it asks charon for the VPN that RFC 5265 puts between the mobile node and the
//! intranet, and learns the tunnel inner address (TIA) from the SA.
//!
//! Commands and their message layouts follow strongSwan's VICI documentation
//! (`src/libcharon/plugins/vici/README.md`, "Client-initiated commands"); the encoding is
//! `rsvici`'s (serde: `bool` as yes/no, sections as structs or maps, lists as `Vec`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use futures_util::{TryStreamExt as _, pin_mut};
use serde::{Deserialize, Serialize};

/// What can go wrong talking to charon.
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    #[error("connecting to charon's VICI socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("VICI {command}: {source}")]
    Vici {
        command: &'static str,
        source: rsvici::Error,
    },
    #[error("VICI {command} failed: {message}")]
    Failed {
        command: &'static str,
        message: String,
    },
    /// Charon runs another IPsec than the configuration asks for.
    #[error("{0}")]
    Backend(String),
}

/// A road-warrior IKEv2 connection to a VPN gateway, asking for a virtual IP (the TIA), with
/// MOBIKE so the SA follows the mobile node's moves (RFC 4555) unless its address is fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoadWarrior {
    /// The IKE_SA's name, also the CHILD_SA's prefix.
    pub name: String,
    /// Our IKE address; `None`: any (charon picks by route, and MOBIKE moves it).
    pub local_addr: Option<Ipv4Addr>,
    pub gateway: Ipv4Addr,
    pub local_id: String,
    pub remote_id: String,
    /// The intranet prefixes the CHILD_SA protects, as `a.b.c.d/len`.
    pub remote_ts: Vec<String>,
    /// Dead peer detection (RFC 7296 §2.4 liveness checks) after this many seconds without
    /// traffic from the gateway; 0: off. A gateway that died is then noticed and the SA
    /// deleted, which is how mipd learns that the VPN dropped.
    pub dpd_secs: u32,
    /// With the kernel's IPsec: the XFRM interface ID charon puts on the CHILD_SA's SAs and
    /// policies (`if_id_in`/`if_id_out`), so that they apply only to what is routed into that
    /// interface and what it decrypted arrives there; `None` with kernel-libipsec (its TUN).
    pub if_id: Option<u32>,
}

#[derive(Serialize)]
struct Auth<'a> {
    auth: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct ChildConf<'a> {
    remote_ts: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    if_id_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_id_out: Option<String>,
}

#[derive(Serialize)]
struct Conn<'a> {
    version: u8,
    local_addrs: Vec<String>,
    remote_addrs: Vec<String>,
    vips: Vec<&'a str>,
    mobike: bool,
    dpd_delay: String,
    local: Auth<'a>,
    remote: Auth<'a>,
    children: BTreeMap<String, ChildConf<'a>>,
}

#[derive(Serialize)]
struct Shared<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a str,
    owners: Vec<&'a str>,
}

#[derive(Serialize)]
struct Initiate<'a> {
    child: &'a str,
    ike: &'a str,
    timeout: u32,
}

#[derive(Serialize)]
struct Terminate<'a> {
    ike: &'a str,
    force: bool,
    timeout: u32,
}

#[derive(Serialize)]
struct ListSas<'a> {
    ike: &'a str,
}

#[derive(Deserialize)]
struct Outcome {
    success: bool,
    #[serde(default)]
    errmsg: Option<String>,
}

/// What `list-sas` says of one IKE_SA (the fields mipd uses).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct IkeSa {
    pub state: String,
    #[serde(rename = "local-host", default)]
    pub local_host: Option<String>,
    #[serde(rename = "remote-host", default)]
    pub remote_host: Option<String>,
    /// Virtual IPs assigned to us: the tunnel inner address.
    #[serde(rename = "local-vips", default)]
    pub local_vips: Vec<String>,
    /// The CHILD_SAs, by their unique names.
    #[serde(rename = "child-sas", default)]
    pub child_sas: BTreeMap<String, ChildSa>,
}

/// What `list-sas` says of one CHILD_SA (the fields mipd uses).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ChildSa {
    pub state: String,
    /// Inbound and outbound SPIs, hex (`c1a2b3c4`).
    #[serde(rename = "spi-in", default)]
    pub spi_in: Option<String>,
    #[serde(rename = "spi-out", default)]
    pub spi_out: Option<String>,
    /// The ESP suite, as strongSwan names it (`AES_GCM_16`, `HMAC_SHA2_256_128`).
    #[serde(rename = "encr-alg", default)]
    pub encr_alg: Option<String>,
    #[serde(rename = "integ-alg", default)]
    pub integ_alg: Option<String>,
    /// "yes" with RFC 3948 UDP encapsulation.
    #[serde(default)]
    pub encap: Option<String>,
}

impl IkeSa {
    /// The tunnel inner address (our first IPv4 virtual IP), if assigned.
    pub fn tunnel_inner_address(&self) -> Option<Ipv4Addr> {
        self.local_vips.iter().find_map(|v| v.parse().ok())
    }

    /// The SPIs of the installed CHILD_SAs, both directions, as they appear on the wire. A
    /// CHILD_SA that MOBIKE is moving (`UPDATING`, RFC 4555 §3.5: the SAs keep their SPIs) or
    /// that is being rekeyed (`REKEYING`: the new one is not in use yet) still carries the
    /// traffic; one already rekeyed or being deleted is on its way out.
    pub fn spis(&self) -> Vec<[u8; 4]> {
        self.child_sas
            .values()
            .filter(|c| matches!(c.state.as_str(), "INSTALLED" | "UPDATING" | "REKEYING"))
            .flat_map(|c| [c.spi_in.as_deref(), c.spi_out.as_deref()])
            .flatten()
            .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
            .map(u32::to_be_bytes)
            .collect()
    }

    /// An IPv4 address field (`local-host`, `remote-host`).
    pub fn host(field: &Option<String>) -> Option<Ipv4Addr> {
        field.as_deref().and_then(|h| h.parse().ok())
    }
}

/// A VICI session with one charon.
pub struct Vici {
    client: rsvici::Client,
}

impl Vici {
    pub async fn connect(path: &Path) -> Result<Self, VpnError> {
        let client = rsvici::unix::connect(path)
            .await
            .map_err(|source| VpnError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Vici { client })
    }

    async fn command<T: Serialize>(
        &mut self,
        command: &'static str,
        message: T,
    ) -> Result<(), VpnError> {
        let outcome: Outcome = self
            .client
            .request(command, message)
            .await
            .map_err(|source| VpnError::Vici { command, source })?;
        if outcome.success {
            Ok(())
        } else {
            Err(VpnError::Failed {
                command,
                message: outcome.errmsg.unwrap_or_default(),
            })
        }
    }

    /// Loads an IKE pre-shared key for `owners` (IKE identities). The secret goes to charon
    /// only; it is never logged.
    pub async fn load_psk(&mut self, owners: &[&str], secret: &str) -> Result<(), VpnError> {
        let shared = Shared {
            kind: "IKE",
            data: secret,
            owners: owners.to_vec(),
        };
        self.command("load-shared", shared).await
    }

    /// Loads (or replaces) the road-warrior connection `rw`, PSK-authenticated.
    pub async fn load_road_warrior(&mut self, rw: &RoadWarrior) -> Result<(), VpnError> {
        let conn = Conn {
            version: 2,
            local_addrs: rw.local_addr.iter().map(ToString::to_string).collect(),
            remote_addrs: vec![rw.gateway.to_string()],
            vips: vec!["0.0.0.0"],
            // A fixed local address (mode cvc, the x-HoA) never moves: no MOBIKE, so charon
            // never roams the SA onto a care-of address (RFC 5265 §2.3).
            mobike: rw.local_addr.is_none(),
            dpd_delay: format!("{}s", rw.dpd_secs),
            local: Auth {
                auth: "psk",
                id: &rw.local_id,
            },
            remote: Auth {
                auth: "psk",
                id: &rw.remote_id,
            },
            children: BTreeMap::from([(
                rw.name.clone(),
                ChildConf {
                    remote_ts: &rw.remote_ts,
                    if_id_in: rw.if_id.map(|id| id.to_string()),
                    if_id_out: rw.if_id.map(|id| id.to_string()),
                },
            )]),
        };
        self.command("load-conn", BTreeMap::from([(rw.name.clone(), conn)]))
            .await
    }

    /// Brings up the IKE_SA and CHILD_SA `name` (blocking up to `timeout_ms`).
    pub async fn initiate(&mut self, name: &str, timeout_ms: u32) -> Result<(), VpnError> {
        let msg = Initiate {
            child: name,
            ike: name,
            timeout: timeout_ms,
        };
        self.command("initiate", msg).await
    }

    /// Tears down the IKE_SA `name` and its children: charon sends the IKE DELETE and waits
    /// up to `timeout_ms` for the answer, then destroys the SA whether the peer answered or
    /// not (`force`: a gateway we can no longer reach must not hold us up).
    pub async fn terminate(&mut self, name: &str, timeout_ms: u32) -> Result<(), VpnError> {
        let msg = Terminate {
            ike: name,
            force: true,
            timeout: timeout_ms,
        };
        self.command("terminate", msg).await
    }

    /// The IKE_SA `name`, if it exists.
    pub async fn ike_sa(&mut self, name: &str) -> Result<Option<IkeSa>, VpnError> {
        let sas = self.client.stream_request::<_, BTreeMap<String, IkeSa>>(
            "list-sas",
            "list-sa",
            ListSas { ike: name },
        );
        pin_mut!(sas);
        while let Some(mut sa) = sas.try_next().await.map_err(|source| VpnError::Vici {
            command: "list-sas",
            source,
        })? {
            if let Some(found) = sa.remove(name) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The tunnel inner address charon was given for `name`, if the SA is up.
    pub async fn tunnel_inner_address(&mut self, name: &str) -> Result<Option<Ipv4Addr>, VpnError> {
        Ok(self
            .ike_sa(name)
            .await?
            .and_then(|sa| sa.tunnel_inner_address()))
    }

    /// Whether charon runs IPsec in user space (the `kernel-libipsec` plugin: ESP through a
    /// TUN device, for kernels without ESP) rather than in the kernel's XFRM (`stats`, the
    /// loaded plugins).
    pub async fn uses_libipsec(&mut self) -> Result<bool, VpnError> {
        #[derive(Deserialize)]
        struct Stats {
            #[serde(default)]
            plugins: Vec<String>,
        }
        let stats: Stats =
            self.client
                .request("stats", ())
                .await
                .map_err(|source| VpnError::Vici {
                    command: "stats",
                    source,
                })?;
        Ok(stats.plugins.iter().any(|p| p == "kernel-libipsec"))
    }

    /// A stream that yields once per event of the kinds that change an IKE_SA or its
    /// CHILD_SAs (up, down, MOBIKE address update, rekey); what changed is read with
    /// [`Vici::ike_sa`]. Takes over this session: use another one for commands.
    pub fn sa_changes(self) -> impl futures_util::Stream<Item = Result<(), VpnError>> {
        use futures_util::StreamExt as _;
        let mut client = self.client;
        let streams = [
            "ike-updown",
            "ike-update",
            "ike-rekey",
            "child-updown",
            "child-rekey",
        ]
        .map(|event| {
            client
                .subscribe::<serde::de::IgnoredAny>(event)
                .map(|r| match r {
                    Ok(_) => Ok(()),
                    // An event whose body we could not read is still an event: the
                    // caller reads the state afresh anyway.
                    Err(e) if e.is_data() && !e.is_closed() => Ok(()),
                    Err(source) => Err(VpnError::Vici {
                        command: "event",
                        source,
                    }),
                })
                .boxed()
        });
        // The client owns the socket: keep it alive as long as the stream.
        futures_util::stream::select_all(streams).map(move |r| {
            let _ = &client;
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(state: &str, spi_in: &str, spi_out: &str) -> ChildSa {
        ChildSa {
            state: state.into(),
            spi_in: Some(spi_in.into()),
            spi_out: Some(spi_out.into()),
            ..ChildSa::default()
        }
    }

    /// Only installed CHILD_SAs count, also while MOBIKE moves them (a rekeyed or deleting
    /// one is on its way out), both directions, in wire order; garbage is skipped rather than
    /// trusted.
    #[test]
    fn spis_are_the_installed_children_in_wire_order() {
        let sa = IkeSa {
            state: "ESTABLISHED".into(),
            local_host: Some("198.51.100.100".into()),
            remote_host: Some("192.0.2.10".into()),
            local_vips: vec!["fe80::1".into(), "10.40.0.1".into()],
            child_sas: BTreeMap::from([
                (
                    "mipx-vpn-1".into(),
                    child("REKEYED", "c0000001", "c0000002"),
                ),
                (
                    "mipx-vpn-2".into(),
                    child("INSTALLED", "cafe0001", "0badf00d"),
                ),
                (
                    "mipx-vpn-3".into(),
                    child("INSTALLED", "not-hex", "00000007"),
                ),
                (
                    "mipx-vpn-4".into(),
                    child("UPDATING", "00000008", "00000009"),
                ),
            ]),
        };
        assert_eq!(
            sa.spis(),
            [
                [0xca, 0xfe, 0x00, 0x01],
                [0x0b, 0xad, 0xf0, 0x0d],
                [0, 0, 0, 7],
                [0, 0, 0, 8],
                [0, 0, 0, 9]
            ]
        );
        assert_eq!(sa.tunnel_inner_address(), Some(Ipv4Addr::new(10, 40, 0, 1)));
        assert_eq!(
            IkeSa::host(&sa.remote_host),
            Some(Ipv4Addr::new(192, 0, 2, 10))
        );
        assert_eq!(IkeSa::host(&Some("2001:db8::1".into())), None);
    }
}
