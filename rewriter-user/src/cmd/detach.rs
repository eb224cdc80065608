//! `sip-rewriter detach`: remove a persisted attachment (or stale pins) from an interface.

use aya::programs::links::PinnedLink;
use rewriter_user::{
    netdev, owner,
    pins::{self, PinDir},
};

/// Detach a persisted rewriter (`attach --persist`) from an interface and remove its pins.
///
/// A rewriter run by a foreground `sip-rewriter attach` is stopped with SIGINT/SIGTERM instead
/// (detach refuses and names the process). Pins left behind by a killed `attach` are removed
/// too. A persisted attachment is detached from the network namespace it was attached in.
#[derive(clap::Args)]
pub struct Args {
    /// Interface to detach from.
    #[arg(long, short = 'i')]
    iface: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    netdev::require_root()?;
    pins::require_shared_bpffs()?;
    let iface = &args.iface;
    let pins = PinDir::for_iface(iface);
    let owner = match owner::lock(&pins)? {
        Ok(o) => o,
        Err(r) => anyhow::bail!(
            "sip-rewriter on {iface} belongs to {}; stop that process (Ctrl-C, SIGTERM or `systemctl stop`) to detach it",
            owner::describe(&r)
        ),
    };
    let link = pins.link_path();
    if link.exists() {
        let alive = pins::link_ifindex(&link).is_some_and(|i| i != 0);
        if alive
            && let Some(r) = owner::last_record(&pins)
            && r.netns != 0
            && r.netns != owner::my_netns()?
        {
            // The same interface name can exist in every namespace: this is not ours to cut.
            anyhow::bail!(
                "sip-rewriter on {iface} was attached from {}; run detach there: nsenter --net=/run/netns/NAME sip-rewriter detach --iface {iface}",
                owner::describe_netns(r.netns)
            );
        }
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
        owner.release();
        if alive {
            println!("detached sip-rewriter from {iface}");
        } else {
            println!(
                "sip-rewriter's persisted attachment to {iface} had lost its interface; removed its pins"
            );
        }
        return Ok(());
    }
    if netdev::ifindex(iface).is_ok()
        && let Some(id) = netdev::attached_program(iface)?
    {
        anyhow::bail!(
            "sip-rewriter (program id {id}) on {iface} belongs to a running `sip-rewriter attach`; stop that process (Ctrl-C or SIGTERM)"
        );
    }
    if pins.path.exists() {
        pins.remove()?;
        owner.release();
        println!(
            "sip-rewriter was not attached to {iface}; removed stale pins in {}",
            pins.path.display()
        );
        return Ok(());
    }
    owner.release();
    anyhow::bail!(
        "sip-rewriter is not attached to {iface} (no pins in {})",
        pins.path.display()
    )
}
