//! The tokio shells `mipd` runs, one per role, each over the one [`driver`] and importing no
//! other shell: the home agent ([`ha`]), the plain mobile node ([`mn`]), the RFC 5265 mobile
//! node ([`rfc5265`], with its VPN task) and the foreign agent ([`fa`]). They move bytes between sockets and
//! the sans-IO cores and apply the cores' events to the dataplane and the kernel; the
//! decisions are the cores'.

mod driver;
mod fa;
mod ha;
mod mn;
mod rfc5265;

use std::io;

use crate::config::{Config, Role};

/// Runs `mipd` in the configuration's role until SIGINT or SIGTERM.
pub async fn run(mut config: Config) -> io::Result<()> {
    let missing = || io::Error::other("configuration has no settings for its role");
    match config.role {
        Role::Ha => {
            let settings = config.ha.take().ok_or_else(missing)?;
            ha::run(config, settings).await
        }
        Role::Mn => {
            let settings = config.mn.take().ok_or_else(missing)?;
            if settings.rfc5265.is_some() {
                rfc5265::run(config, settings).await
            } else {
                mn::run(config, settings).await
            }
        }
        Role::Fa => fa::run(config).await,
    }
}
