//! `sip-rewriter status`: what is attached where, with which configuration.

use aya::programs::SchedClassifier;
use rewriter_common::{CFG_ADDR_FILTER, CFG_HAS_DEFAULT, CFG_KEEP_ALL, Config};
use rewriter_user::{
    netdev, owner,
    pins::{self, PinDir},
};
use serde::Serialize;

/// Show every attachment (or the one given with --iface): state, program id, configuration and
/// map fill levels.
///
/// Exit status, as `systemctl is-active` has it: 0 every attachment shown is running or
/// persisted (attached); 3 not attached (no pins, or an attach still starting); 4 an
/// attachment is stale or gone (pins without attached programs); 1 status could not be read
/// (e.g. not root); 2 bad arguments.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short = 'i')]
    iface: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Status {
    iface: String,
    /// `running` (an attach process owns it), `starting` (that process is still loading),
    /// `persisted` (pinned links, attached), `gone`
    /// (pinned links whose interface was deleted) or `stale` (pins a killed attach left).
    state: &'static str,
    /// The foreground `attach` process that owns it.
    owner_pid: Option<u32>,
    program_id: Option<u32>,
    /// Where the restore of 2xx to REGISTER runs: `xdp+tc`, `tc` or `off`.
    ingress: String,
    pins: String,
    port: u16,
    genesys: Vec<String>,
    default_template: Option<String>,
    /// `["*"]` = keep all, `[]` = keep none.
    keep_params: Vec<String>,
    contacts: usize,
    contacts_capacity: u32,
    /// Entries in the restore state map (one per recorded REGISTER, least recently used go).
    registrations: usize,
    registrations_capacity: u32,
    /// DNs in the per-DN index of the restore records (each holds at most 4 of them).
    registered_dns: usize,
    registered_dns_capacity: u32,
    /// The interface's egress TC chain, first to run first (absent where the interface is not
    /// visible, e.g. from another network namespace).
    egress_chain: Option<Vec<netdev::ChainEntry>>,
    /// Our place in it, from 1 (a program before ours can end the chain before us).
    egress_position: Option<usize>,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

/// Every attachment shown is running or persisted.
pub const ACTIVE: u8 = 0;
/// Nothing attached (or still starting).
pub const NOT_ATTACHED: u8 = 3;
/// Pins without attached programs: `stale` or `gone`.
pub const STALE: u8 = 4;

/// The exit status for the states shown: the worst one decides.
fn exit_status(states: impl IntoIterator<Item = &'static str>) -> u8 {
    states
        .into_iter()
        .map(|s| match s {
            "running" | "persisted" => ACTIVE,
            "stale" | "gone" => STALE,
            _ => NOT_ATTACHED,
        })
        .max()
        .unwrap_or(NOT_ATTACHED)
}

/// Prints the status; returns the exit status (see [`Args`]).
pub fn run(args: Args) -> anyhow::Result<u8> {
    netdev::require_root()?;
    let dirs = match &args.iface {
        Some(i) => {
            let d = PinDir::for_iface(i);
            pins::require_shared_bpffs()?;
            if d.path.join(rewriter_common::names::CONFIG).exists() {
                vec![d]
            } else {
                Vec::new()
            }
        }
        None => PinDir::all()?,
    };
    if dirs.is_empty() {
        if args.json {
            // Machine-readable: no attachment is an empty list (the exit status says so too).
            println!("[]");
        } else {
            // Same message as every other command that needs a running program.
            let e = PinDir::discover(args.iface.as_deref())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            println!("{e}");
        }
        return Ok(NOT_ATTACHED);
    }
    let all: Vec<Status> = dirs.iter().map(status).collect::<anyhow::Result<_>>()?;
    let code = exit_status(all.iter().map(|s| s.state));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(code);
    }
    for s in all {
        println!(
            "{}: {}{}{}",
            s.iface,
            s.state,
            s.owner_pid
                .map(|p| format!(", attach process {p}"))
                .unwrap_or_default(),
            s.program_id
                .map(|i| format!(", program id {i}"))
                .unwrap_or_default()
        );
        match s.state {
            "stale" => println!(
                "  (pins a killed attach left: the next attach reuses them; `sip-rewriter detach --iface {}` removes them)",
                s.iface
            ),
            "gone" => println!(
                "  (its interface was deleted; `sip-rewriter detach --iface {}` removes the pins)",
                s.iface
            ),
            _ => {}
        }
        println!("  ingress restore {}", s.ingress);
        println!("  pins            {}", s.pins);
        println!("  genesys port    {}", s.port);
        println!(
            "  genesys addrs   {}",
            if s.genesys.is_empty() {
                "any".to_owned()
            } else {
                s.genesys.join(", ")
            }
        );
        println!(
            "  default         {}",
            s.default_template.as_deref().unwrap_or("(none)")
        );
        println!(
            "  keep params     {}",
            if s.keep_params.is_empty() {
                "(none)".to_owned()
            } else {
                s.keep_params.join(",")
            }
        );
        println!(
            "  DN entries      {} of {}",
            s.contacts, s.contacts_capacity
        );
        println!(
            "  restore entries {} of {} ({} DNs, {} record(s) replaced by the per-DN bound)",
            s.registrations,
            s.registrations_capacity,
            s.registered_dns,
            s.counters
                .get(rewriter_common::Stat::RecordReplaced.name())
                .copied()
                .unwrap_or(0)
        );
        if let Some(chain) = &s.egress_chain {
            let list: Vec<String> = chain
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let ours = if Some(e.id) == s.program_id {
                        ", ours"
                    } else {
                        ""
                    };
                    format!("{}. {} (id {}{ours})", i + 1, e.name, e.id)
                })
                .collect();
            println!("  egress chain    {}", list.join("  "));
            if let Some(p) = s.egress_position.filter(|p| *p > 1) {
                println!(
                    "  warning: {} program(s) run before sip-rewriter on {} egress; one that returns TC_ACT_OK hides every REGISTER from it",
                    p - 1,
                    s.iface
                );
            }
        }
        let line: Vec<String> = rewriter_common::Stat::ALL
            .iter()
            .map(|st| {
                format!(
                    "{}={}",
                    st.name(),
                    s.counters.get(st.name()).copied().unwrap_or(0)
                )
            })
            .collect();
        println!("  counters        {}", line.join(" "));
    }
    Ok(code)
}

fn status(d: &PinDir) -> anyhow::Result<Status> {
    let cfg: Config = d.config()?.current()?;
    let program_id = SchedClassifier::from_pin(d.prog_path())
        .ok()
        .and_then(|p| p.info().ok())
        .map(|i| i.id());
    // Who owns it, not whether this namespace can see the interface, decides.
    let holder = owner::holder(d)?;
    // The record names the holder once it has written it; until then it may still be the
    // killed previous owner's.
    let alive = |pid: u32| {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as i32, 0) == 0 }
    };
    let state = if let Some(r) = &holder {
        if r.attached && r.pid.is_some_and(alive) {
            "running"
        } else {
            // Loading (or an `attach --persist`/`detach` at work).
            "starting"
        }
    } else if d.link_path().exists() {
        match pins::link_ifindex(&d.link_path()) {
            Some(0) => "gone",
            _ => "persisted",
        }
    } else {
        "stale"
    };
    let genesys = d
        .genesys()?
        .keys()
        .filter_map(Result::ok)
        .map(|k| {
            let v6 = std::net::Ipv6Addr::from(k.0);
            v6.to_ipv4_mapped()
                .map(|a| a.to_string())
                .unwrap_or_else(|| v6.to_string())
        })
        .collect::<Vec<_>>();
    let default_template = cfg.template().map(|(pre, post)| {
        let pre = String::from_utf8_lossy(pre.strip_prefix(b"<").unwrap_or(pre)).into_owned();
        let post = String::from_utf8_lossy(post.strip_suffix(b">").unwrap_or(post)).into_owned();
        format!("{pre}{{dn}}{post}")
    });
    let keep_params = if cfg.flags & CFG_KEEP_ALL != 0 {
        vec!["*".to_owned()]
    } else {
        cfg.keep[..(cfg.keep_count as usize).min(cfg.keep.len())]
            .iter()
            .map(|k| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&k[0].to_le_bytes());
                b[8..].copy_from_slice(&k[1].to_le_bytes());
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let (registrations, registrations_capacity) = d.registrations_fill()?;
    let (registered_dns, registered_dns_capacity) = d.registered_dns_fill()?;
    let counters = d.counters()?;
    let egress_chain = netdev::ifindex(&d.iface)
        .ok()
        .and_then(|_| netdev::tc_chain(&d.iface, true).ok());
    let ingress = match netdev::attached_ingress(&d.iface) {
        Ok(true) if cfg.flags & rewriter_common::CFG_TC_AFTER_XDP != 0 => "xdp+tc",
        Ok(true) => "tc",
        Ok(false) => "off",
        Err(_) => "unknown",
    };
    Ok(Status {
        iface: d.iface.clone(),
        state,
        owner_pid: holder.and_then(|r| r.pid.filter(|p| alive(*p))),
        program_id,
        ingress: ingress.to_owned(),
        pins: d.path.display().to_string(),
        port: cfg.port,
        genesys: if cfg.flags & CFG_ADDR_FILTER != 0 {
            genesys
        } else {
            Vec::new()
        },
        default_template: if cfg.flags & CFG_HAS_DEFAULT != 0 {
            default_template
        } else {
            None
        },
        keep_params,
        egress_position: egress_chain
            .as_ref()
            .and_then(|c| c.iter().position(|e| Some(e.id) == program_id))
            .map(|i| i + 1),
        egress_chain,
        contacts: d.contacts()?.keys().count(),
        contacts_capacity: d.contacts_capacity()?,
        registrations,
        registrations_capacity,
        registered_dns,
        registered_dns_capacity,
        counters: rewriter_common::Stat::ALL
            .iter()
            .map(|s| (s.name(), counters.get(*s)))
            .collect(),
    })
}
