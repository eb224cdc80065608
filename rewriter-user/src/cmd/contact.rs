//! `sip-rewriter contact ...`: the DN → Contact map of a running rewriter.

use std::{collections::BTreeMap, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use rewriter_common::{ContactUri, DnKey};
use rewriter_user::{
    config::{read_contacts_file, validate_dn, validate_uri},
    netdev,
    pins::PinDir,
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
        file: PathBuf,
        /// Also remove entries that are not in the file.
        #[arg(long)]
        replace: bool,
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
    let map = pins.contacts()?;
    let mut out = BTreeMap::new();
    for item in map.iter() {
        let (k, v) = item.context("reading map CONTACTS")?;
        out.insert(
            String::from_utf8_lossy(k.as_bytes()).into_owned(),
            String::from_utf8_lossy(v.uri()).into_owned(),
        );
    }
    Ok(out)
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Add { dn, uri, iface } => {
            let (k, v) = (key(&dn)?, value(&uri)?);
            let pins = open(iface)?;
            let mut map = pins.contacts()?;
            map.insert(k, v, 0)
                .map_err(|e| full_or(e, "adding to map CONTACTS"))?;
            println!("{dn} -> {uri}");
        }
        Cmd::Del { dn, iface } => {
            let k = key(&dn)?;
            let pins = open(iface)?;
            match pins.contacts()?.remove(&k) {
                Ok(()) => println!("removed {dn}"),
                Err(aya::maps::MapError::KeyNotFound) => anyhow::bail!("DN {dn} is not in the map"),
                Err(e) => return Err(e).context("removing from map CONTACTS"),
            }
        }
        Cmd::Get { dn, iface } => {
            let k = key(&dn)?;
            let pins = open(iface)?;
            match pins.contacts()?.get(&k, 0) {
                Ok(v) => println!("{}", String::from_utf8_lossy(v.uri())),
                Err(aya::maps::MapError::KeyNotFound) => anyhow::bail!("DN {dn} is not in the map"),
                Err(e) => return Err(e).context("reading map CONTACTS"),
            }
        }
        Cmd::List { json, iface } => {
            let all = entries(&open(iface)?)?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(dn, uri)| serde_json::json!({ "dn": dn, "uri": uri }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (dn, uri) in all {
                    println!("{dn}\t{uri}");
                }
            }
        }
        Cmd::Export { iface } => {
            let all = entries(&open(iface)?)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "dn,uri")?;
            for (dn, uri) in all {
                writeln!(out, "{dn},{uri}")?;
            }
        }
        Cmd::Import {
            file,
            replace,
            iface,
        } => import(&file, replace, iface)?,
    }
    Ok(())
}

fn open(iface: Option<String>) -> anyhow::Result<PinDir> {
    netdev::require_root()?;
    PinDir::discover(iface.as_deref())
}

fn full_or(e: aya::maps::MapError, what: &str) -> anyhow::Error {
    let full = matches!(&e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG));
    if full {
        anyhow::anyhow!(
            "map CONTACTS is full; remove entries first (or attach with a larger --max-contacts)"
        )
    } else {
        anyhow::Error::new(e).context(what.to_owned())
    }
}

fn import(file: &std::path::Path, replace: bool, iface: Option<String>) -> anyhow::Result<()> {
    // Validate the whole file before touching the map.
    let wanted = read_contacts_file(file)?;
    let pins = open(iface)?;
    let existing = entries(&pins)?;
    let capacity = pins.contacts_capacity()? as usize;
    let new_keys = wanted
        .iter()
        .filter(|(dn, _)| !existing.contains_key(dn))
        .count();
    let kept = if replace { 0 } else { existing.len() };
    let overlap = wanted.len() - new_keys;
    if kept + new_keys + if replace { overlap } else { 0 } > capacity {
        anyhow::bail!(
            "{}: {} entries would not fit in map CONTACTS ({capacity} entries, {} in use); nothing imported",
            file.display(),
            wanted.len(),
            existing.len()
        );
    }
    let mut map = pins.contacts()?;
    let total = wanted.len();
    let progress = total > 10_000;
    for (i, (dn, uri)) in wanted.iter().enumerate() {
        map.insert(key(dn)?, value(uri)?, 0)
            .map_err(|e| full_or(e, "adding to map CONTACTS"))?;
        if progress && (i + 1) % 5_000 == 0 {
            eprint!(
                "\rimporting {file}: {done}/{total} [{bar:<30}]",
                file = file.display(),
                done = i + 1,
                bar = "#".repeat((i + 1) * 30 / total)
            );
        }
    }
    if progress {
        eprintln!(
            "\rimporting {}: {total}/{total} [{}]",
            file.display(),
            "#".repeat(30)
        );
    }
    let mut removed = 0;
    if replace {
        let keep: std::collections::HashSet<&str> =
            wanted.iter().map(|(dn, _)| dn.as_str()).collect();
        for dn in existing.keys().filter(|dn| !keep.contains(dn.as_str())) {
            map.remove(&key(dn)?)
                .context("removing from map CONTACTS")?;
            removed += 1;
        }
    }
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
