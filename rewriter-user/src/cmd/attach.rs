//! `sip-rewriter attach`: load, pin, attach on egress, then run until SIGINT/SIGTERM (or, with
//! `--persist`, leave it attached and exit).

use std::{collections::BTreeMap, io::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use rewriter_user::{
    Rewriter,
    config::{self, Settings},
    metrics, netdev, owner,
    pins::{self, PinDir},
    state::StateFile,
    watch::DirWatch,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use super::{
    options::{SettingsArgs, no_address_warning},
    usage,
};

/// Attach the rewriter to an interface's egress (and the restore to its ingress).
///
/// REGISTERs leaving through the interface towards the Genesys port get their Contact
/// rewritten: DN (To user) → the Contact from the DN map, else the default template. Genesys'
/// 2xx responses to them coming back through the interface get the client's own Contact back
/// (--ingress), so that WebRTC clients such as JsSIP accept them. Settings
/// come from --config (TOML) and the options below, which override the file. The maps are
/// pinned under /sys/fs/bpf/sip-rewriter/<iface>/ so that `contact`, `default`, `stats` and
/// `status` can reach the running program. SIGHUP re-reads --config and applies the difference
/// without detaching, and so does a change of the file itself (written in place, renamed over,
/// or a Kubernetes ConfigMap's symlink swap; applied 0.3 s after the last change); the log says
/// what changed and warns about what only a new attach can change. SIGINT/SIGTERM detach and
/// remove the pins.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Leave the program attached and exit (the link is pinned); undo with `detach`.
    #[arg(long)]
    persist: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (file, text) = args.settings.file_with_bytes()?;
    let mut settings = args.settings.overlay(file.clone())?;
    if args.persist && settings.metrics.is_some() {
        return Err(usage(
            "metrics needs a running attach; with --persist nothing would serve it (run `sip-rewriter stats` instead)",
        ));
    }
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
    let reused = pins.map_path(rewriter_common::names::CONTACTS).exists();
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
        settings.max_contacts,
        settings.max_registrations,
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
    let state = StateFile::for_iface(&iface);
    let result =
        apply(&mut rw, &settings, &state, true).and_then(|_| rw.attach(&iface, settings.ingress));
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
    if let Some(w) = no_address_warning(&settings) {
        log::warn!("{w}");
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
    let loaded = Loaded {
        file,
        effective: settings,
        text,
    };
    let served = rt.block_on(serve(&mut rw, &args.settings, &pins, loaded));
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

/// The settings in force and where they came from, for the next reload to compare with.
struct Loaded {
    /// The config file's settings alone.
    file: Settings,
    /// With the command line on top, and what a reload cannot change kept as attached.
    effective: Settings,
    /// The file's bytes when last read (a change notification with the same bytes is no
    /// change).
    text: Option<Vec<u8>>,
}

/// DN entries a reload added, changed and removed in the running map.
#[derive(Default)]
struct DnChanges {
    added: usize,
    changed: usize,
    removed: usize,
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
) -> anyhow::Result<DnChanges> {
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
    let mut n = DnChanges::default();
    for (dn, (uri, _)) in &want {
        match have.get(dn) {
            Some(u) if u == uri => continue,
            Some(_) => n.changed += 1,
            None => n.added += 1,
        }
        rw.set_contact(dn.as_bytes(), uri.as_bytes())?;
    }
    for dn in have.keys().filter(|dn| !want.contains_key(*dn)) {
        rw.remove_contact(dn.as_bytes())?;
        n.removed += 1;
    }
    Ok(n)
}

/// Re-reads the config file and applies what changed; logs each change and warns about what
/// it cannot apply (kept as attached).
fn reload(
    rw: &mut Rewriter,
    args: &SettingsArgs,
    pins: &PinDir,
    cur: &mut Loaded,
    path: &Path,
) -> anyhow::Result<()> {
    let shown = path.display();
    // One read for both: what is applied is what the next change is compared with. (Two reads
    // of a file being rewritten could apply a half-written version and keep the whole one as
    // "seen", so the next change notification, finding those bytes, would never fix it.)
    let bytes = config::read_config_bytes(path)?;
    let file = match Settings::parse_bytes(&bytes, path) {
        Ok(f) => f,
        Err(e) => {
            // Seen: the same bytes again would fail again.
            cur.text = Some(bytes);
            return Err(e.into());
        }
    };
    let mut new = args.overlay(file.clone())?;
    let overridden = args.overridden();
    for (key, old, now) in config::changes(&cur.file, &file) {
        if let Some((_, option)) = overridden.iter().find(|(k, _)| *k == key) {
            log::warn!(
                "{key} changed in {shown} ({old} -> {now}), but {option} on the command line overrides it; not applied"
            );
        }
    }
    let mut applied = Vec::new();
    for (key, old, now) in config::changes(&cur.effective, &new) {
        let fixed = match key {
            "interface" => Some("the attachment stays"),
            "ingress" => Some("the restore stays"),
            "max_contacts" | "max_registrations" => Some("the map keeps its capacity"),
            "metrics" => Some("the listener stays"),
            _ => None,
        };
        match fixed {
            Some(what) => log::warn!(
                "{key} changed in {shown} ({old} -> {now}): takes effect at the next attach; {what} on {old}"
            ),
            None => applied.push(format!("{key} {old} -> {now}")),
        }
    }
    // What only a new attach can change stays as attached.
    new.interface = cur.effective.interface.clone();
    new.ingress = cur.effective.ingress;
    new.max_contacts = cur.effective.max_contacts;
    new.max_registrations = cur.effective.max_registrations;
    new.metrics = cur.effective.metrics;
    let dn = apply(rw, &new, &StateFile::for_iface(&pins.iface), false)?;
    applied.push(format!(
        "DN entries {} added, {} changed, {} removed",
        dn.added, dn.changed, dn.removed
    ));
    log::info!("reloaded {shown}: {}", applied.join("; "));
    // Only now: a file that could not be applied is tried again when it is saved again.
    cur.text = Some(bytes);
    cur.file = file;
    cur.effective = new;
    Ok(())
}

/// How long a config file must stay quiet after a change notification before it is read (an
/// editor or a deploy tool may write it in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The periodic counter line's timer; none for interval 0.
fn ticker(secs: u64) -> Option<tokio::time::Interval> {
    (secs > 0).then(|| {
        let period = Duration::from_secs(secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    })
}

/// Logs counters, forwards eBPF logs, serves metrics, reloads on SIGHUP and (with --config) when
/// the file changes, until SIGINT/SIGTERM.
async fn serve(
    rw: &mut Rewriter,
    args: &SettingsArgs,
    pins: &PinDir,
    mut cur: Loaded,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut tick = ticker(cur.effective.interval);
    let mut last_counters = rw.counters()?;
    let mut logs = match rw.take_logger() {
        // SAFETY: the logger owns its ring buffer map fd; it stays open and the same for as long
        // as the logger lives, and the AsyncFd owns the logger.
        Some(l) => Some(
            unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling the eBPF log ring buffer: {e}"))?,
        ),
        None => None,
    };
    if let Some(addr) = cur.effective.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        log::info!("serving Prometheus metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, pins.clone()));
    }
    // With --config, a changed file is applied without a signal too.
    let config = args.config.clone();
    let mut watch = match &config {
        Some(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let name = p.file_name().unwrap_or_default();
            match DirWatch::new(dir, name) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "not watching {} for changes ({e}); reload with SIGHUP",
                        dir.display()
                    );
                    None
                }
            }
        }
        None => None,
    };
    let mut due: Option<tokio::time::Instant> = None;
    // How long a SIGHUP waits for a writer that holds the config file.
    const SIGHUP_WAIT: Duration = Duration::from_secs(2);
    // A SIGHUP that came while a writer held the config file: done when it closes it.
    let mut reload_after_close = false;
    loop {
        let mut reload_now = false;
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = sighup.recv() => match &config {
                None => log::warn!("SIGHUP ignored: attach was started without --config"),
                // A writer still holds the file: reload once it has closed it.
                Some(_) if watch.as_mut().is_some_and(|w| w.writing_now().unwrap_or(false)) => {
                    reload_after_close = true;
                    due = Some(tokio::time::Instant::now() + SIGHUP_WAIT);
                }
                Some(_) => reload_now = true,
            },
            r = async { watch.as_mut().expect("guarded").changed().await }, if watch.is_some() => {
                match r {
                    Ok(true) if reload_after_close => {
                        reload_after_close = false;
                        reload_now = true;
                        due = None;
                    }
                    // Read it once the writer is done with it, never half written.
                    Ok(true) => due = Some(tokio::time::Instant::now() + DEBOUNCE),
                    // A SIGHUP waiting for the writer keeps its deadline.
                    Ok(false) if reload_after_close => {}
                    Ok(false) => due = None,
                    Err(e) => {
                        log::warn!("watching the config file failed ({e}); reload with SIGHUP");
                        watch = None;
                        due = None;
                        if reload_after_close {
                            reload_after_close = false;
                            reload_now = true;
                        }
                    }
                }
            }
            _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                due = None;
                let path = config.as_deref().expect("watching only with --config");
                if reload_after_close {
                    // The writer kept the file open longer than a SIGHUP should wait.
                    reload_after_close = false;
                    reload_now = true;
                } else if std::fs::read(path).ok() != cur.text {
                    // Only a change of the bytes is a change (the directory holds other files).
                    reload_now = true;
                }
            }
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                let now = rw.counters()?;
                // Nothing moved, nothing to say.
                if now != last_counters {
                    log::info!("{now}");
                    last_counters = now;
                }
            }
            r = async { logs.as_mut().expect("guarded").readable_mut().await }, if logs.is_some() => {
                let mut guard = r.context("waiting for eBPF logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
        if reload_now && let Some(path) = &config {
            let interval = cur.effective.interval;
            if let Err(e) = reload(rw, args, pins, &mut cur, path) {
                log::error!(
                    "reload of {} failed, previous settings stay: {}",
                    path.display(),
                    rewriter_user::one_line(&e)
                );
            }
            if cur.effective.interval != interval {
                tick = ticker(cur.effective.interval);
            }
        }
    }
}
