//! `mipd`: the mipx daemon (home agent or mobile node).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use mipx_control::config::Config;

#[derive(Parser)]
#[command(version, about = "mipx Mobile IPv4 daemon (home agent, mobile node)")]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Detach the eBPF programs and delete the maps pinned for this configuration, then exit.
    /// (Stopping mipd leaves them in place on purpose: forwarding survives a restart.)
    #[arg(long, conflicts_with = "check")]
    unload: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(&args.config)
        .with_context(|| format!("invalid configuration {}", args.config.display()))?;
    if args.check {
        println!("{}: ok (role {:?})", args.config.display(), config.role);
        return Ok(());
    }
    if args.unload {
        let Some(dataplane) = &config.dataplane else {
            println!(
                "{}: no [dataplane] table, nothing to unload",
                args.config.display()
            );
            return Ok(());
        };
        // Unpinning detaches the XDP and TCX links; below Linux 6.6 the TC programs are
        // netlink filters, which are not pinned and must be removed from each interface.
        for name in &dataplane.interfaces {
            match mipx_control::dataplane::detach_tc_filters(name) {
                Ok(0) => {}
                Ok(n) => println!("unloaded: removed {n} TC filters from {name}"),
                // The interface may be gone (a VPN device, a moved link): nothing to detach.
                Err(e) => eprintln!("{name}: {:#}", anyhow::Error::from(e)),
            }
        }
        mipx_control::dataplane::unpin_all(&dataplane.pin_dir)
            .with_context(|| format!("removing {}", dataplane.pin_dir.display()))?;
        println!("unloaded: removed {}", dataplane.pin_dir.display());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(mipx_control::shell::run(config))?;
    Ok(())
}
