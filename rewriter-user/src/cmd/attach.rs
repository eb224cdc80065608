//! `sip-rewriter attach`: load, pin, attach on egress, then run until SIGINT/SIGTERM (or, with
//! `--persist`, leave it attached and exit).

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use rewriter_user::{
    Rewriter,
    config::{KeepParams, Settings, Template, validate_port},
    metrics, netdev, owner,
    pins::{self, PinDir},
    state::StateFile,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use super::usage;

/// Attach the rewriter to an interface's egress (and the restore to its ingress).
///
/// REGISTERs leaving through the interface towards the Genesys port get their Contact
/// rewritten: DN (To user) → the Contact from the DN map, else the default template. Genesys'
/// 2xx responses to them coming back through the interface get the client's own Contact back
/// (--ingress), so that WebRTC clients such as JsSIP accept them. Settings
/// come from --config (TOML) and the options below, which override the file. The maps are
/// pinned under /sys/fs/bpf/sip-rewriter/<iface>/ so that `contact`, `default`, `stats` and
/// `status` can reach the running program. SIGHUP re-reads --config and applies the difference
/// without detaching; SIGINT/SIGTERM detach and remove the pins.
#[derive(clap::Args)]
pub struct Args {
    /// Interface whose egress traffic reaches Genesys (overrides `interface` in --config).
    #[arg(long, short = 'i')]
    iface: Option<String>,
    /// TOML configuration file (see README, "Configuration").
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// UDP destination port of the Genesys SIP server [default: 5060].
    #[arg(long)]
    port: Option<u16>,
    /// Genesys destination address (repeatable); without any, every destination on --port is
    /// a candidate.
    #[arg(long = "genesys", value_name = "ADDR")]
    genesys: Vec<IpAddr>,
    /// Default Contact for DNs not in the map, with one `{dn}`, e.g.
    /// `sip:{dn}@192.168.210.54:5060`.
    #[arg(long = "default", value_name = "TEMPLATE")]
    default: Option<String>,
    /// Contact parameters to keep, comma-separated (`*` = all, empty = none)
    /// [default: expires,q].
    #[arg(long, value_name = "LIST")]
    keep_params: Option<String>,
    /// Where the restore of Genesys' 2xx to REGISTER runs: xdp (native where the driver
    /// supports it, else generic), tc (TC ingress) or off [default: xdp].
    #[arg(long, value_name = "HOOK")]
    ingress: Option<rewriter_user::Ingress>,
    /// Capacity of the restore state map (one entry per registered client and Call-ID; the
    /// least recently used entry makes room; ~0.9 KiB each, reserved at attach).
    #[arg(long, default_value_t = rewriter_common::restore::MAX_REGISTRATIONS, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    max_registrations: u32,
    /// Leave the program attached and exit (the link is pinned); undo with `detach`.
    #[arg(long)]
    persist: bool,
    /// Serve the counters as Prometheus text on http://ADDR/metrics (`:9465` = every address,
    /// `localhost:9465`, `127.0.0.1:9465`, `[::1]:9465`).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    metrics: Option<SocketAddr>,
    /// Capacity of the DN → Contact map (memory is used per stored entry, not reserved).
    #[arg(long, default_value_t = rewriter_common::MAX_CONTACTS, value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
    max_contacts: u32,
    /// Seconds between two counter lines in the log.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

impl Args {
    /// File settings (if any) with the command-line overrides applied.
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(p) => Settings::load(p)?,
            None => Settings::default(),
        };
        if let Some(i) = &self.iface {
            s.interface = Some(i.clone());
        }
        if let Some(i) = self.ingress {
            s.ingress = i;
        }
        if let Some(p) = self.port {
            validate_port(p)?;
            s.port = p;
        }
        if !self.genesys.is_empty() {
            s.genesys = self.genesys.clone();
        }
        if let Some(t) = &self.default {
            s.template = Some(Template::parse(t)?);
        }
        if let Some(k) = &self.keep_params {
            s.keep = KeepParams::parse_list(k)?;
        }
        Ok(s)
    }
}

/// A listen address as Prometheus exporters take it: `:PORT` (every address), `localhost:PORT`
/// or a socket address.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("invalid listen address {s:?}: want :PORT, localhost:PORT or IP:PORT");
    if let Some(port) = s.strip_prefix(':').or_else(|| s.strip_prefix("localhost:")) {
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip: IpAddr = if s.starts_with(':') {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        return Ok(SocketAddr::new(ip, port));
    }
    s.parse().map_err(|_| bad())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.persist && args.metrics.is_some() {
        return Err(usage(
            "--metrics needs a running attach; with --persist nothing would serve it (run `sip-rewriter stats` instead)",
        ));
    }
    let mut settings = args.settings()?;
    let iface = settings.interface.clone().ok_or_else(|| {
        usage("no interface: give --iface IF or `interface = \"IF\"` in --config")
    })?;
    netdev::require_root()?;
    netdev::ifindex(&iface)?;
    pins::require_shared_bpffs()?;
    let pins = PinDir::for_iface(&iface);
    // One owner per attachment: a second attach refuses here, before it touches any pin.
    let mut owner = match owner::lock(&pins)? {
        Ok(o) => o,
        Err(r) => anyhow::bail!(
            "sip-rewriter is already attached to {iface}, owned by {}; stop that one first",
            owner::describe(&r)
        ),
    };
    if pins.link_path().exists() {
        match pins::link_ifindex(&pins.link_path()) {
            Some(0) => {
                // The interface of a persisted attachment was deleted: its links are dead,
                // its maps (the DN entries) are reused below.
                log::warn!(
                    "the persisted attachment in {} lost its interface; replacing its links",
                    pins.path.display()
                );
                pins.remove_links()?;
            }
            _ => anyhow::bail!(
                "sip-rewriter is already attached to {iface} (persisted, {}); run `sip-rewriter detach --iface {iface}` first",
                pins.link_path().display()
            ),
        }
    }
    if let Some(id) = netdev::attached_program(&iface)? {
        anyhow::bail!(
            "sip-rewriter is already attached to {iface} egress (program id {id}); detach it first"
        );
    }
    // Before anything is loaded or pinned: one line if this kernel cannot run the programs.
    settings.ingress = rewriter_user::support::check(settings.ingress)?;
    pins::ensure_root()?;
    let reused = pins.map_path("CONTACTS").exists();
    std::fs::create_dir_all(&pins.path)
        .with_context(|| format!("creating {}", pins.path.display()))?;
    let netns = owner::my_netns()?;
    let mut record = owner::Record {
        pid: Some(std::process::id()),
        netns,
        iface: iface.clone(),
        attached: false,
    };
    owner.record(&record)?;
    // Pins this attach did not create (a killed attach's, with its DN entries) stay when it
    // fails; only its own are removed.
    let fail = |e: anyhow::Error, owner: owner::Owner| {
        if !reused {
            let _ = pins.remove();
        }
        owner.release();
        e
    };
    let mut rw = match Rewriter::load_pinned(
        &settings.kernel_config(),
        &pins,
        args.max_contacts,
        args.max_registrations,
    ) {
        Ok(rw) => rw,
        Err(e) => return Err(fail(e, owner)),
    };
    if reused {
        log::warn!(
            "reusing the maps pinned in {} (a previous attach did not exit cleanly); the DN map is brought in line with the config file and the durable run-time entries",
            pins.path.display()
        );
    }
    let applied = Applied {
        ingress: settings.ingress,
    };
    let state = StateFile::for_iface(&iface);
    let result =
        apply(&mut rw, &settings, &state, true).and_then(|()| rw.attach(&iface, settings.ingress));
    let (attachment, hook) = match result {
        Ok(a) => a,
        Err(e) => {
            drop(rw);
            return Err(fail(e, owner));
        }
    };
    log::info!(
        "attached to {iface} egress ({}), restore on ingress: {hook}, Genesys port {}, {} DN entries from config, pins in {}",
        if attachment.tcx { "tcx" } else { "clsact" },
        settings.port,
        settings.contacts.len(),
        pins.path.display()
    );
    if settings.genesys.is_empty() {
        log::warn!(
            "no Genesys address set: every UDP datagram to port {} leaving {iface} is a candidate, REGISTERs that Kamailio sends to Asterisk on that port included (they would be rewritten too); set [genesys] addresses in the config file or --genesys ADDR",
            settings.port
        );
    }
    if args.persist {
        rw.persist(attachment, &pins.link_path(), &pins)?;
        // No process owns it now; the record keeps where it was attached from, for `detach`.
        record.pid = None;
        record.attached = true;
        owner.record(&record)?;
        // attach ignores SIGPIPE: a reader that went away must not turn success into a panic.
        let _ = writeln!(
            std::io::stdout(),
            "sip-rewriter stays attached to {iface}; remove it with: sip-rewriter detach --iface {iface}"
        );
        return Ok(());
    }
    record.attached = true;
    owner.record(&record)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let served = rt.block_on(serve(&mut rw, &args, &pins, applied));
    let detached = rw.detach(attachment);
    let final_counters = rw.counters();
    drop(rw);
    let removed = pins.remove();
    owner.release();
    served?;
    detached?;
    removed?;
    log::info!("detached from {iface}; final counters: {}", final_counters?);
    Ok(())
}

/// What a reload cannot change.
#[derive(Default)]
struct Applied {
    /// The ingress hook attached; a reload cannot change it (that needs a re-attach).
    ingress: rewriter_user::Ingress,
}

/// Writes `settings` into the maps: config, address set, and the DN map, which becomes the
/// file's entries under the interface's durable run-time changes ([`rewriter_user::state`]):
/// entries that differ are replaced, entries beyond that are removed. Holds the state lock, so
/// a concurrent `contact` command is neither undone nor interleaved; the state is read before
/// anything is written, so a bad state file changes nothing. `first`: the attach itself, where
/// an interface without a state file gets one, keeping as run-time entries what reused pinned
/// maps hold beyond the file (pins of a version that kept no state).
fn apply(
    rw: &mut Rewriter,
    settings: &Settings,
    state: &StateFile,
    first: bool,
) -> anyhow::Result<()> {
    let lock = state.lock()?;
    let mut overlay = state.load()?;
    // An import that died half way: its overlay is saved, and the map is built from the
    // overlay below, so only the other DN map needs emptying.
    let interrupted = overlay.pending.take().is_some();
    if interrupted {
        log::warn!(
            "finishing an interrupted DN import (from {})",
            state.path.display()
        );
        state.save(&overlay, &lock)?;
    }
    if first || interrupted {
        let standby = 1 - rw.dn_map_in_use()? % 2;
        rewriter_user::dnset::clear(
            &mut rw.dn_map_mut(Some(standby))?,
            rewriter_common::DN_MAPS[usize::from(standby)],
        )?;
    }
    let have = rw.contact_entries()?;
    if first && !state.path.exists() {
        let file: BTreeMap<&String, &String> =
            settings.contacts.iter().map(|(d, u)| (d, u)).collect();
        for (dn, uri) in &have {
            if file.get(dn) != Some(&uri) {
                overlay.add(dn, uri);
            }
        }
        state.save(&overlay, &lock)?;
    }
    rw.set_config(&settings.kernel_config())?;
    rw.set_genesys(&settings.genesys)?;
    let want = overlay.effective(&settings.contacts);
    for (dn, (uri, _)) in &want {
        if have.get(dn) != Some(uri) {
            rw.set_contact(dn.as_bytes(), uri.as_bytes())?;
        }
    }
    for dn in have.keys().filter(|dn| !want.contains_key(*dn)) {
        rw.remove_contact(dn.as_bytes())?;
    }
    Ok(())
}

/// Logs counters, forwards eBPF logs, serves metrics, reloads on SIGHUP, until SIGINT/SIGTERM.
async fn serve(
    rw: &mut Rewriter,
    args: &Args,
    pins: &PinDir,
    applied: Applied,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval));
    tick.tick().await;
    let mut logs = match rw.take_logger() {
        // SAFETY: the logger owns its ring buffer map fd; it stays open and the same for as long
        // as the logger lives, and the AsyncFd owns the logger.
        Some(l) => Some(
            unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling the eBPF log ring buffer: {e}"))?,
        ),
        None => None,
    };
    if let Some(addr) = args.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        log::info!("serving Prometheus metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, pins.clone()));
    }
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = sighup.recv() => {
                match &args.config {
                    None => log::warn!("SIGHUP ignored: attach was started without --config"),
                    Some(path) => match args.settings().and_then(|mut s| {
                        if s.ingress != applied.ingress {
                            log::warn!(
                                "ingress = \"{}\" in {} takes effect at the next attach; the restore stays on {}",
                                s.ingress,
                                path.display(),
                                applied.ingress
                            );
                            s.ingress = applied.ingress;
                        }
                        apply(rw, &s, &StateFile::for_iface(&pins.iface), false)
                    }) {
                        Ok(()) => log::info!("reloaded {}", path.display()),
                        Err(e) => log::error!("reload of {} failed, previous settings stay: {e:#}", path.display()),
                    },
                }
            }
            _ = tick.tick() => log::info!("{}", rw.counters()?),
            r = async { logs.as_mut().expect("guarded").readable_mut().await }, if logs.is_some() => {
                let mut guard = r.context("waiting for eBPF logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
}
