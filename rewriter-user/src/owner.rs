//! One owner per attachment: the foreground `attach` holds an exclusive `flock` on the
//! attachment's owner file for its whole life (`--persist` and `detach` hold it while they
//! work), and writes who it is into the file. A second `attach`, or a `detach` of a running
//! attachment, finds the lock taken and refuses without touching any pin; `status` tells
//! `running` from `stale` by the lock, not by looking for the interface (which another network
//! namespace cannot see).
//!
//! The owner files live in [`DIR`] (a tmpfs shared by every network namespace), one per pin
//! directory, named after its path.

use std::{
    fs,
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::pins::PinDir;

/// Where the owner files live.
pub const DIR: &str = "/run/sip-rewriter/owners";

/// What the owner file says about the attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The foreground `attach` process (none for a `--persist` attachment).
    pub pid: Option<u32>,
    /// Inode of the network namespace it was attached from (`/proc/PID/ns/net`).
    pub netns: u64,
    /// The interface, as named in that namespace.
    pub iface: String,
    /// The programs are attached (false while `attach` is still loading them).
    #[serde(default)]
    pub attached: bool,
}

/// The held lock; released (and, with [`Owner::release`], the file removed) when dropped.
pub struct Owner {
    file: fs::File,
    path: PathBuf,
}

/// The owner file of the attachment in `pins`.
pub fn path(pins: &PinDir) -> PathBuf {
    let name: String = pins
        .path
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '!' } else { c })
        .collect();
    Path::new(DIR).join(format!("{name}.owner"))
}

/// Inode of the calling thread's network namespace.
pub fn my_netns() -> anyhow::Result<u64> {
    Ok(fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?
        .ino())
}

/// The name `ip netns` knows the namespace `ino` by (a bind mount in /run/netns), if any.
pub fn netns_name(ino: u64) -> Option<String> {
    fs::read_dir("/run/netns").ok()?.flatten().find_map(|e| {
        (fs::metadata(e.path()).ok()?.ino() == ino).then(|| e.file_name().to_string_lossy().into())
    })
}

/// "network namespace NAME" or "network namespace net:[INODE]", for messages.
pub fn describe_netns(ino: u64) -> String {
    match netns_name(ino) {
        Some(n) => format!("network namespace {n}"),
        None => format!("network namespace net:[{ino}]"),
    }
}

/// Takes the lock without waiting. `Ok(Err(record))`: another process holds it (its record,
/// as far as it could be read).
pub fn try_lock(pins: &PinDir) -> anyhow::Result<Result<Owner, Record>> {
    try_flock(pins, libc::LOCK_EX)
}

/// `try_lock` with `mode` (`LOCK_EX`, or `LOCK_SH` to look without excluding other lookers).
fn try_flock(pins: &PinDir, mode: libc::c_int) -> anyhow::Result<Result<Owner, Record>> {
    fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    let path = path(pins);
    // The holder removes the file when it leaves: a lock taken on a file that was removed
    // meanwhile is no lock; open again until the locked file is the one at the path.
    for _ in 0..100 {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("opening the owner file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(Err(read_record(&path).unwrap_or_default()));
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        let same = match (file.metadata(), fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Ok(Owner { file, path }));
        }
    }
    anyhow::bail!("could not lock the owner file {}", path.display())
}

/// Takes the lock for `attach`/`detach`: waits up to half a second (a `status` may hold it for
/// an instant), then `Ok(Err(record))` if another process keeps it.
pub fn lock(pins: &PinDir) -> anyhow::Result<Result<Owner, Record>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        match try_lock(pins)? {
            Ok(o) => return Ok(Ok(o)),
            Err(r) if std::time::Instant::now() > deadline => return Ok(Err(r)),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// "process PID in network namespace NS" for messages about the owner `r`.
pub fn describe(r: &Record) -> String {
    let who = match r.pid {
        Some(p) => format!("the `sip-rewriter attach` process {p}"),
        None => "another sip-rewriter process".to_owned(),
    };
    let same = my_netns().is_ok_and(|n| n == r.netns);
    if same || r.netns == 0 {
        who
    } else {
        format!("{who} in {}", describe_netns(r.netns))
    }
}

/// Whether a live process holds the lock (without keeping it), and its record.
pub fn holder(pins: &PinDir) -> anyhow::Result<Option<Record>> {
    if !path(pins).exists() {
        return Ok(None);
    }
    Ok(try_flock(pins, libc::LOCK_SH)?.err())
}

/// The record of the last owner, whether or not it still holds the lock.
pub fn last_record(pins: &PinDir) -> Option<Record> {
    read_record(&path(pins))
}

fn read_record(path: &Path) -> Option<Record> {
    let mut s = String::new();
    fs::File::open(path).ok()?.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

impl Owner {
    /// Writes who owns the attachment now.
    pub fn record(&mut self, r: &Record) -> anyhow::Result<()> {
        let text = serde_json::to_vec(r).context("encoding the owner record")?;
        let f = &mut self.file;
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(&text))
            .and_then(|()| f.write_all(b"\n"))
            .with_context(|| format!("writing the owner file {}", self.path.display()))
    }

    /// Removes the owner file (the attachment is gone) and releases the lock.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}
