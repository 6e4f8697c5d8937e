//! mipx control plane: the sans-IO registration engine ([`proto`]), the binding cache,
//! mobility security associations, the configuration, the control API, and the tokio shell
//! ([`daemon`]) that `mipd` runs. `mipctl` is a client of [`api`].

pub mod agent_link;
pub mod api;
pub mod auth;
pub mod binding;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod fa;
pub mod garp;
pub mod mn5265;
pub mod net;
pub mod pktinfo;
pub mod proto;
pub mod vpn;
