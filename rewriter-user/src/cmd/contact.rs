//! `sip-rewriter contact ...`: the DN → Contact map of a running rewriter.

use std::{collections::BTreeMap, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use rewriter_common::{ContactUri, DnKey};
use rewriter_user::{
    config::{read_contacts_file, validate_dn, validate_uri},
    netdev,
    pins::PinDir,
    state::{self, Source, StateFile},
};

/// Changes take effect on the next REGISTER; nothing needs restarting.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Map DN to URI (replaces an existing entry), e.g. `contact add 1002 sip:1002@192.168.210.54:5060`.
    Add {
        dn: String,
        uri: String,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Remove the entry of DN (its REGISTERs then use the default template, if any).
    Del {
        dn: String,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Print the URI of DN.
    Get {
        dn: String,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Print every entry, sorted by DN.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Load entries from a CSV (`dn,uri` per line) or TOML (`[contacts.map]`) file. Every line
    /// is validated first; if one is bad, nothing is written.
    Import {
        /// The file, or `-` for CSV on standard input.
        file: PathBuf,
        /// Also remove entries that are not in the file.
        #[arg(long)]
        replace: bool,
        /// With --replace: allow a file without entries (it empties the map).
        #[arg(long)]
        force: bool,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Print every entry as CSV (`dn,uri`), the format `import` reads.
    Export {
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
}

fn key(dn: &str) -> anyhow::Result<DnKey> {
    validate_dn(dn)?;
    DnKey::new(dn.as_bytes()).with_context(|| format!("invalid DN {dn:?}"))
}

fn value(uri: &str) -> anyhow::Result<ContactUri> {
    validate_uri(uri)?;
    ContactUri::new(uri.as_bytes()).with_context(|| format!("invalid URI {uri:?}"))
}

/// Every entry, sorted by DN.
fn entries(pins: &PinDir) -> anyhow::Result<BTreeMap<String, String>> {
    rewriter_user::loader::contact_entries(&pins.contacts()?)
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Add { dn, uri, iface } => {
            let (k, v) = (key(&dn)?, value(&uri)?);
            let (pins, state) = target(iface)?;
            let lock = state.lock()?;
            let mut overlay = state.load()?;
            if let Some(p) = &pins {
                rewriter_user::dnset::recover(p, &state, &lock, &mut overlay)?;
            }
            overlay.add(&dn, &uri);
            match pins {
                Some(pins) => {
                    let mut map = pins.contacts()?;
                    let before = map.get(&k, 0).ok();
                    map.insert(k, v, 0).map_err(|e| full_or(e, &dn, &pins))?;
                    if let Err(e) = state.save(&overlay, &lock) {
                        // Not durable: undo the map change too.
                        let _ = match before {
                            Some(b) => map.insert(k, b, 0),
                            None => map.remove(&k),
                        };
                        return Err(e);
                    }
                    println!("{dn} -> {uri}");
                }
                None => {
                    state.save(&overlay, &lock)?;
                    println!(
                        "{dn} -> {uri} (sip-rewriter is not attached: kept in {} for the next attach)",
                        state.path.display()
                    );
                }
            }
        }
        Cmd::Del { dn, iface } => {
            let k = key(&dn)?;
            let (pins, state) = target(iface)?;
            let lock = state.lock()?;
            let mut overlay = state.load()?;
            if let Some(p) = &pins {
                rewriter_user::dnset::recover(p, &state, &lock, &mut overlay)?;
            }
            let known = overlay.set.contains_key(&dn);
            match pins {
                Some(pins) => {
                    let mut map = pins.contacts()?;
                    let before = match map.get(&k, 0) {
                        Ok(v) => v,
                        Err(aya::maps::MapError::KeyNotFound) => {
                            anyhow::bail!("DN {dn} is not in the map")
                        }
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("reading DN {dn} from the DN map"));
                        }
                    };
                    // A runtime entry hid any file entry: deleting it masks the file's whatever
                    // its URI; a file entry is masked as it is now.
                    let file_uri = String::from_utf8_lossy(before.uri()).into_owned();
                    overlay.del(&dn, (!known).then_some(file_uri.as_str()));
                    map.remove(&k)
                        .with_context(|| format!("removing DN {dn} from the DN map"))?;
                    if let Err(e) = state.save(&overlay, &lock) {
                        let _ = map.insert(k, before, 0);
                        return Err(e);
                    }
                    println!("removed {dn}");
                }
                None => {
                    overlay.del(&dn, None);
                    state.save(&overlay, &lock)?;
                    let was = if known { "removed" } else { "will remove" };
                    println!(
                        "{was} {dn} (sip-rewriter is not attached: kept in {} for the next attach)",
                        state.path.display()
                    );
                }
            }
        }
        Cmd::Get { dn, iface } => {
            let k = key(&dn)?;
            let pins = open(iface)?;
            let _locked = locked(&pins)?;
            match pins.contacts()?.get(&k, 0) {
                Ok(v) => println!("{}", String::from_utf8_lossy(v.uri())),
                Err(aya::maps::MapError::KeyNotFound) => anyhow::bail!("DN {dn} is not in the map"),
                Err(e) => {
                    return Err(e).with_context(|| format!("reading DN {dn} from the DN map"));
                }
            }
        }
        Cmd::List { json, iface } => {
            let pins = open(iface)?;
            let (_, _lock, overlay) = locked(&pins)?;
            let runtime = overlay.set;
            let all = entries(&pins)?;
            let source = |dn: &str, uri: &str| {
                if runtime.get(dn).map(String::as_str) == Some(uri) {
                    Source::Runtime
                } else {
                    Source::Config
                }
                .name()
            };
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(dn, uri)| serde_json::json!({ "dn": dn, "uri": uri, "source": source(dn, uri) }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (dn, uri) in &all {
                    println!("{dn}\t{uri}\t{}", source(dn, uri));
                }
            }
        }
        Cmd::Export { iface } => {
            let pins = open(iface)?;
            let all = {
                let _locked = locked(&pins)?;
                entries(&pins)?
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "dn,uri")?;
            for (dn, uri) in all {
                writeln!(out, "{},{}", csv_field(&dn), csv_field(&uri))?;
            }
        }
        Cmd::Import {
            file,
            replace,
            force,
            iface,
        } => import(&file, replace, force, iface)?,
    }
    Ok(())
}

/// The running attachment a change goes to (if any) and the state file it goes into: with
/// `--iface` and nothing attached there, the state file alone (the next attach loads it).
fn target(iface: Option<String>) -> anyhow::Result<(Option<PinDir>, StateFile)> {
    netdev::require_root()?;
    if let Some(i) = &iface
        && !PinDir::for_iface(i)
            .path
            .join(rewriter_common::names::CONFIG)
            .exists()
    {
        return Ok((None, StateFile::for_iface(i)));
    }
    let pins = PinDir::discover(iface.as_deref()).map_err(|e| match iface {
        Some(_) => e,
        None => e.context(state::require_iface(None).unwrap_err().to_string()),
    })?;
    let state = StateFile::for_iface(&pins.iface);
    Ok((Some(pins), state))
}

fn open(iface: Option<String>) -> anyhow::Result<PinDir> {
    netdev::require_root()?;
    PinDir::discover(iface.as_deref())
}

/// The interface's state lock and overlay, with an import a killed command left half done
/// finished first ([`rewriter_user::dnset::recover`]).
fn locked(pins: &PinDir) -> anyhow::Result<(StateFile, state::Lock, state::Overlay)> {
    let state = StateFile::for_iface(&pins.iface);
    let lock = state.lock()?;
    let mut overlay = state.load()?;
    rewriter_user::dnset::recover(pins, &state, &lock, &mut overlay)?;
    Ok((state, lock, overlay))
}

/// A failed insert of `dn` in user words: a full map says so, with its capacity.
fn full_or(e: aya::maps::MapError, dn: &str, pins: &PinDir) -> anyhow::Error {
    let full = matches!(&e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG));
    if full {
        let capacity = pins
            .contacts_capacity()
            .map(|c| format!(" ({c} entries)"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "DN {dn} not added: the DN map of {} is full{capacity}; remove entries first (or attach with a larger --max-contacts)",
            pins.iface
        )
    } else {
        anyhow::Error::new(e).context(format!("adding DN {dn} to the DN map of {}", pins.iface))
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma or a quote (a DN may hold `,`).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

fn import(
    file: &std::path::Path,
    replace: bool,
    force: bool,
    iface: Option<String>,
) -> anyhow::Result<()> {
    // Validate the whole file before touching the map.
    let wanted = read_contacts_file(file)?;
    if replace && wanted.is_empty() && !force {
        return Err(super::usage(format!(
            "{} holds no DN entries: --replace would empty the DN map; add --force if that is what you want",
            file.display()
        )));
    }
    let pins = open(iface)?;
    let (state, lock, mut overlay) = locked(&pins)?;
    let existing = entries(&pins)?;
    let new_keys = wanted
        .iter()
        .filter(|(dn, _)| !existing.contains_key(dn))
        .count();
    let wanted_map: BTreeMap<String, String> = wanted.iter().cloned().collect();
    let mut target = if replace {
        BTreeMap::new()
    } else {
        existing.clone()
    };
    target.extend(wanted_map.clone());
    let capacity = pins.contacts_capacity()? as usize;
    if target.len() > capacity {
        anyhow::bail!(
            "{}: the resulting {} entries would not fit in the DN map ({capacity} entries, {} in use); nothing imported",
            file.display(),
            target.len(),
            existing.len()
        );
    }
    let removed = existing
        .keys()
        .filter(|dn| !target.contains_key(*dn))
        .count();
    if replace {
        overlay.replace(&wanted_map, existing);
    } else {
        for (dn, uri) in &wanted {
            overlay.add(dn, uri);
        }
    }
    let total = wanted.len();
    let all = target.len();
    let mut progress = |done: usize| {
        if all > 10_000 && (done.is_multiple_of(5_000) || done == all) {
            eprint!(
                "\rimporting {file}: {done}/{all} [{bar:<30}]{nl}",
                file = file.display(),
                bar = "#".repeat(done * 30 / all),
                nl = if done == all { "\n" } else { "" }
            );
        }
    };
    rewriter_user::dnset::replace(&pins, &state, &lock, &mut overlay, target, &mut progress)
        .with_context(|| format!("importing {}; the DN map is unchanged", file.display()))?;
    println!(
        "imported {total} entries from {} ({new_keys} new, {} updated{})",
        file.display(),
        total - new_keys,
        if replace {
            format!(", {removed} removed")
        } else {
            String::new()
        }
    );
    Ok(())
}
