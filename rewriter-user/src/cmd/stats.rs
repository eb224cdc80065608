//! `sip-rewriter stats`: every counter and its rate.

use std::time::{Duration, Instant};

use rewriter_common::Stat;
use rewriter_user::{netdev, pins::PinDir, stats::Counters};

/// Print every counter with its rate per second (measured over one second, or over --watch
/// SECS repeatedly until interrupted).
#[derive(clap::Args)]
pub struct Args {
    /// Print again every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch: Option<u64>,
    /// Machine-readable output (one JSON object per sample).
    #[arg(long)]
    json: bool,
    #[arg(long, short = 'i')]
    iface: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    netdev::require_root()?;
    let pins = PinDir::discover(args.iface.as_deref())?;
    let period = Duration::from_secs(args.watch.unwrap_or(1));
    let mut before = pins.counters()?;
    let mut t0 = Instant::now();
    loop {
        std::thread::sleep(period);
        let now = pins.counters()?;
        let secs = t0.elapsed().as_secs_f64();
        print(&pins.iface, &before, &now, secs, args.json)?;
        if args.watch.is_none() {
            return Ok(());
        }
        before = now;
        t0 = Instant::now();
    }
}

fn print(
    iface: &str,
    before: &Counters,
    now: &Counters,
    secs: f64,
    json: bool,
) -> anyhow::Result<()> {
    let rate = |s: Stat| now.get(s).saturating_sub(before.get(s)) as f64 / secs;
    if json {
        let counters: serde_json::Map<String, serde_json::Value> = Stat::ALL
            .iter()
            .map(|s| {
                (
                    s.name().to_owned(),
                    serde_json::json!({ "total": now.get(*s), "per_sec": rate(*s) }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "iface": iface, "counters": counters })
        );
    } else {
        println!(
            "{iface}: {:<14} {:>14} {:>12}",
            "counter", "total", "per second"
        );
        for s in Stat::ALL {
            println!(
                "{iface}: {:<14} {:>14} {:>12.1}",
                s.name(),
                now.get(s),
                rate(s)
            );
        }
    }
    Ok(())
}
