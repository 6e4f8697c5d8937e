//! mipx control plane.
//!
//! Layers, each importing only the ones below it (no two modules import each other):
//! - [`shell`]: the tokio shells `mipd` runs, one per role over one driver; they move bytes
//!   and apply the cores' decisions;
//! - [`proto`] (sans-IO protocol engines), [`dataplane`] (the eBPF object and its maps),
//!   [`net`] (sockets, netlink, XFRM, VICI, clocks), [`api`] (the `mipd` ⇄ `mipctl`
//!   protocol) and [`config`];
//! - [`auth`] and [`binding`], which the engines build on.

pub mod api;
pub mod auth;
pub mod binding;
pub mod config;
pub mod dataplane;
pub mod net;
pub mod proto;
pub mod shell;

/// `error: cause: cause` on one line, for logs and API errors.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
