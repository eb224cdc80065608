//! Durable DN entries: what `contact add|del|import` changed at run time, one state file per
//! interface, so that a restart (SIGTERM, `kill -9`, a reboot that empties bpffs) keeps it.
//!
//! The DN map an attachment runs with is the config file's `[contacts.map]` with this overlay
//! on top: a runtime entry replaces the file's entry of the same DN until the next `contact
//! del` or `import --replace` of it; a runtime deletion (`contact del`, or `import --replace`
//! leaving a DN out) removes the file's entry as it was then; if the file later gives that DN
//! another URI, the file's new entry applies. `attach` and every SIGHUP reload build the map
//! from both ([`Overlay::effective`]).
//!
//! The file is JSON, replaced atomically (temporary file, fsync, rename, fsync of the
//! directory) while an exclusive `flock` on a lock file beside it is held; the commands take the
//! same lock around "change the map, then the file", so two commands never interleave.

use std::{collections::BTreeMap, env, fs, io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where the state files live.
pub const DEFAULT_DIR: &str = "/var/lib/sip-rewriter";
/// Overrides [`DEFAULT_DIR`] (tests use private directories).
pub const DIR_ENV: &str = "SIP_REWRITER_STATE_DIR";

/// Where an entry of the running map comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The config file's `[contacts.map]`.
    Config,
    /// `contact add` or `contact import` (durable in the state file).
    Runtime,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Runtime => "runtime",
        }
    }
}

/// The run-time changes to an interface's DN map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// DN → URI added or changed at run time.
    pub set: BTreeMap<String, String>,
    /// DNs deleted at run time → the URI they had then (empty: any). The config file's entry
    /// stays deleted while it has that URI.
    pub deleted: BTreeMap<String, String>,
    /// An import saved here but perhaps not yet live: the next command that takes the lock
    /// finishes it ([`crate::dnset::recover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// The whole DN set an import makes live, and the DN map ([`rewriter_common::DN_MAPS`]) it is
/// written into before program runs switch to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub dn_map: u16,
    pub entries: BTreeMap<String, String>,
}

impl Overlay {
    pub fn add(&mut self, dn: &str, uri: &str) {
        self.deleted.remove(dn);
        self.set.insert(dn.to_owned(), uri.to_owned());
    }

    /// `uri`: what the entry was when deleted (`None`: not known, the file's entry is masked
    /// whatever its URI).
    pub fn del(&mut self, dn: &str, uri: Option<&str>) {
        self.set.remove(dn);
        self.deleted
            .insert(dn.to_owned(), uri.unwrap_or_default().to_owned());
    }

    /// After `import --replace`: the map is exactly `wanted`; `running` is what it held before.
    /// Entries left out are deleted: a runtime one masks any file entry of its DN, a file one
    /// is masked as it is; earlier deletions of DNs not in `wanted` stay.
    pub fn replace(
        &mut self,
        wanted: &BTreeMap<String, String>,
        running: BTreeMap<String, String>,
    ) {
        let runtime = std::mem::replace(&mut self.set, wanted.clone());
        self.deleted.retain(|dn, _| !wanted.contains_key(dn));
        for (dn, uri) in running {
            if !wanted.contains_key(&dn) {
                let mask = if runtime.contains_key(&dn) {
                    String::new()
                } else {
                    uri
                };
                self.deleted.insert(dn, mask);
            }
        }
    }

    /// The map to run with: `file` (the config file's entries) under this overlay.
    pub fn effective(&self, file: &[(String, String)]) -> BTreeMap<String, (String, Source)> {
        let mut out: BTreeMap<String, (String, Source)> = file
            .iter()
            .filter(|(dn, uri)| {
                self.deleted
                    .get(dn)
                    .is_none_or(|was| !was.is_empty() && was != uri)
            })
            .map(|(dn, uri)| (dn.clone(), (uri.clone(), Source::Config)))
            .collect();
        for (dn, uri) in &self.set {
            out.insert(dn.clone(), (uri.clone(), Source::Runtime));
        }
        out
    }
}

/// The state file of one interface.
#[derive(Clone, Debug)]
pub struct StateFile {
    pub path: PathBuf,
}

/// Held while a command changes the map and the state file; released on drop.
pub struct Lock(#[expect(dead_code, reason = "held for its flock")] fs::File);

impl StateFile {
    pub fn for_iface(iface: &str) -> Self {
        let dir = env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        Self {
            path: dir.join(format!("{iface}.json")),
        }
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Takes the interface's lock (blocks while another command holds it).
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let dir = self.dir();
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let p = self.path.with_extension("lock");
        crate::support::exclusive_lock(&p, "the lock file").map(Lock)
    }

    /// The overlay; empty if there is no state file yet.
    pub fn load(&self) -> anyhow::Result<Overlay> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state file {} is not valid (fix or remove it)",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
            Err(e) => Err(e).with_context(|| format!("reading state file {}", self.path.display())),
        }
    }

    /// Replaces the state file with `o`: a reader sees the old file or the new one, and after
    /// a crash or power loss the file is one of the two. Call with the [`Lock`] held.
    pub fn save(&self, o: &Overlay, _lock: &Lock) -> anyhow::Result<()> {
        let dir = self.dir();
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(o).context("encoding the state")?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            fs::File::open(&dir)?.sync_all()
        };
        write().with_context(|| format!("writing state file {}", self.path.display()))
    }
}

/// The interface of a command that names none: the only state file there is, else an error.
pub fn require_iface(iface: Option<&str>) -> anyhow::Result<String> {
    match iface {
        Some(i) => Ok(i.to_owned()),
        None => bail!(
            "sip-rewriter is not attached anywhere; give --iface IF to keep the change for the next attach to IF"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Vec<(String, String)> {
        vec![
            ("1002".into(), "sip:a@f".into()),
            ("1003".into(), "sip:b@f".into()),
        ]
    }

    #[test]
    fn runtime_entries_and_deletions_win_over_the_file() {
        let mut o = Overlay::default();
        o.add("1002", "sip:x@r");
        o.add("7777", "sip:y@r");
        o.del("1003", Some("sip:b@f"));
        let e = o.effective(&file());
        assert_eq!(
            e.into_iter().collect::<Vec<_>>(),
            vec![
                ("1002".into(), ("sip:x@r".into(), Source::Runtime)),
                ("7777".into(), ("sip:y@r".into(), Source::Runtime)),
            ]
        );
        // Adding it again undoes the deletion.
        o.add("1003", "sip:z@r");
        assert_eq!(
            o.effective(&file())["1003"],
            ("sip:z@r".into(), Source::Runtime)
        );
    }

    #[test]
    fn replace_keeps_earlier_deletions_and_masks_what_runtime_entries_hid() {
        // File 1002:a, 1003:b; runtime 1002:x hides the file's 1002; 1003 deleted earlier.
        let mut o = Overlay::default();
        o.add("1002", "sip:x@r");
        o.del("1003", Some("sip:b@f"));
        let running = o
            .effective(&file())
            .into_iter()
            .map(|(d, (u, _))| (d, u))
            .collect();
        let wanted: BTreeMap<String, String> = [("3001".to_owned(), "sip:c@i".to_owned())].into();
        o.replace(&wanted, running);
        assert_eq!(
            o.effective(&file()).keys().collect::<Vec<_>>(),
            vec!["3001"]
        );
    }

    #[test]
    fn replace_leaves_exactly_the_imported_set() {
        let mut o = Overlay::default();
        o.add("7777", "sip:y@r");
        let wanted: BTreeMap<String, String> = [("3001".to_owned(), "sip:c@i".to_owned())].into();
        let running = o
            .effective(&file())
            .into_iter()
            .map(|(d, (u, _))| (d, u))
            .collect();
        o.replace(&wanted, running);
        let e = o.effective(&file());
        assert_eq!(e.keys().collect::<Vec<_>>(), vec!["3001"]);
    }

    #[test]
    fn the_file_is_replaced_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sipr-state-unit-{}", std::process::id()));
        let s = StateFile {
            path: dir.join("eth9.json"),
        };
        assert_eq!(s.load().unwrap(), Overlay::default());
        let mut o = Overlay::default();
        o.add("a,b", "sip:x@r");
        o.del("1003", None);
        let lock = s.lock().unwrap();
        s.save(&o, &lock).unwrap();
        assert_eq!(s.load().unwrap(), o);
        assert!(!s.path.with_extension("json.tmp").exists());
        fs::write(&s.path, "{").unwrap();
        assert!(format!("{:#}", s.load().unwrap_err()).contains("eth9.json"));
        let _ = fs::remove_dir_all(&dir);
    }
}
