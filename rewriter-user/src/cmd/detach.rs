//! `sip-rewriter detach`: remove a persisted attachment (or stale pins) from an interface.

use aya::programs::links::PinnedLink;
use rewriter_user::{netdev, pins::PinDir};

/// Detach a persisted rewriter (`attach --persist`) from an interface and remove its pins.
///
/// A rewriter run by a foreground `sip-rewriter attach` is stopped with SIGINT/SIGTERM instead.
/// Pins left behind by a killed `attach` are removed too.
#[derive(clap::Args)]
pub struct Args {
    /// Interface to detach from.
    #[arg(long, short = 'i')]
    iface: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    netdev::require_root()?;
    let pins = PinDir::for_iface(&args.iface);
    let link = pins.link_path();
    if link.exists() {
        // Egress first, then the restore (the reverse of attach). Unpinning drops the last
        // reference to a link, which detaches its program.
        for p in [
            link.clone(),
            pins.ingress_link_path(),
            pins.ingress_tc_link_path(),
        ] {
            if p.exists() {
                let pinned = PinnedLink::from_pin(&p)
                    .map_err(|e| anyhow::anyhow!("opening pinned link {}: {e}", p.display()))?;
                drop(
                    pinned
                        .unpin()
                        .map_err(|e| anyhow::anyhow!("unpinning {}: {e}", p.display()))?,
                );
            }
        }
        pins.remove()?;
        println!("detached sip-rewriter from {}", args.iface);
        return Ok(());
    }
    if netdev::ifindex(&args.iface).is_ok()
        && let Some(id) = netdev::attached_program(&args.iface)?
    {
        anyhow::bail!(
            "sip-rewriter (program id {id}) on {} belongs to a running `sip-rewriter attach`; stop that process (Ctrl-C or SIGTERM)",
            args.iface
        );
    }
    if pins.path.exists() {
        pins.remove()?;
        println!(
            "sip-rewriter was not attached to {}; removed stale pins in {}",
            args.iface,
            pins.path.display()
        );
        return Ok(());
    }
    anyhow::bail!(
        "sip-rewriter is not attached to {} (no pins in {})",
        args.iface,
        pins.path.display()
    )
}
