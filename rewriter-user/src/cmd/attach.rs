//! `sip-rewriter attach`: load, attach on egress, report counters, detach on SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use rewriter_common::Config;
use rewriter_user::{Rewriter, netdev};
use tokio::signal::unix::{SignalKind, signal};

/// Attach the rewriter to an interface's egress and run until SIGINT/SIGTERM.
///
/// REGISTERs sent from this host (e.g. by Kamailio) through IFACE to the Genesys port get their
/// Contact rewritten. Counters are printed every --interval seconds; Ctrl-C detaches cleanly.
#[derive(clap::Args)]
pub struct Args {
    /// Interface whose egress traffic reaches Genesys (e.g. eth0).
    #[arg(long, short = 'i')]
    iface: String,
    /// UDP destination port of the Genesys SIP server.
    #[arg(long, default_value_t = rewriter_common::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Seconds between two counter lines.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    netdev::require_root()?;
    netdev::ifindex(&args.iface)?;
    let mut rw = Rewriter::load(&Config::new(args.port))?;
    let attachment = rw.attach_egress(&args.iface)?;
    log::info!(
        "attached to {} egress ({}), Genesys port {}",
        args.iface,
        if attachment.tcx { "tcx" } else { "clsact" },
        args.port
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let served = rt.block_on(serve(&mut rw, Duration::from_secs(args.interval)));
    let detached = rw.detach(attachment);
    served?;
    detached?;
    log::info!("detached from {}; final counters: {}", args.iface, rw.counters()?);
    Ok(())
}

/// Prints counters until a termination signal arrives.
async fn serve(rw: &mut Rewriter, interval: Duration) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = tick.tick() => {
                rw.flush_logs();
                println!("{}", rw.counters()?);
            }
        }
    }
}
