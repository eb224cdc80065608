//! Where a running rewriter lives in bpffs: `/sys/fs/bpf/sip-rewriter/<iface>/` holds its maps
//! (`CONFIG`, `STATS`, `CONTACTS`, `GENESYS`, `REGS`), its program (`prog`) and, for a persisted
//! attachment, its TCX link (`link`) and ingress restore links (`link-xdp`,
//! `link-ingress`). Short CLI calls find the running program through these.

use std::{
    env, fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use rewriter_common::{
    AddrKey, ContactUri, DN_MAPS, DnKey, names,
    restore::{DnRecords, RegKey, RegState},
};

use crate::stats::Counters;

/// Default root of all pin directories.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/sip-rewriter";
/// Overrides [`DEFAULT_ROOT`] (tests use private roots; the path must be on a bpffs).
pub const ROOT_ENV: &str = "SIP_REWRITER_PIN_ROOT";
/// Maps pinned per attachment.
pub const MAPS: [&str; 8] = names::PINNED_MAPS;
/// `statfs` magic of bpffs (include/uapi/linux/magic.h, BPF_FS_MAGIC).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub fn root() -> PathBuf {
    env::var_os(ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// The pin directory of one interface's attachment.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub iface: String,
    pub path: PathBuf,
}

impl PinDir {
    pub fn for_iface(iface: &str) -> Self {
        Self {
            iface: iface.to_owned(),
            path: root().join(iface),
        }
    }

    /// The attachment to act on: `iface` if given, else the only one there is.
    pub fn discover(iface: Option<&str>) -> anyhow::Result<Self> {
        if let Some(i) = iface {
            require_shared_bpffs()?;
            let d = Self::for_iface(i);
            if !d.path.join(names::CONFIG).exists() {
                bail!(
                    "sip-rewriter is not attached to {i} (no pins in {}); start it with `sip-rewriter attach --iface {i}`",
                    d.path.display()
                );
            }
            return Ok(d);
        }
        let all = Self::all()?;
        match all.as_slice() {
            [] => bail!(
                "sip-rewriter is not attached anywhere (no pins under {}); start it with `sip-rewriter attach --iface IF`",
                root().display()
            ),
            [one] => Ok(one.clone()),
            many => bail!(
                "sip-rewriter is attached to several interfaces ({}); choose one with --iface",
                many.iter()
                    .map(|d| d.iface.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Every attachment with pins, sorted by interface name.
    pub fn all() -> anyhow::Result<Vec<Self>> {
        require_shared_bpffs()?;
        let root = root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
        };
        let mut out: Vec<Self> = entries
            .flatten()
            .filter(|e| e.path().join(names::CONFIG).exists())
            .map(|e| Self {
                iface: e.file_name().to_string_lossy().into_owned(),
                path: e.path(),
            })
            .collect();
        out.sort_by(|a, b| a.iface.cmp(&b.iface));
        Ok(out)
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn prog_path(&self) -> PathBuf {
        self.path.join("prog")
    }

    pub fn link_path(&self) -> PathBuf {
        self.path.join("link")
    }

    /// The persisted XDP restore's link.
    pub fn ingress_link_path(&self) -> PathBuf {
        self.path.join("link-xdp")
    }

    /// The persisted TC ingress restore's link.
    pub fn ingress_tc_link_path(&self) -> PathBuf {
        self.path.join("link-ingress")
    }

    fn map(&self, name: &str) -> anyhow::Result<MapData> {
        let p = self.map_path(name);
        MapData::from_pin(&p).with_context(|| {
            format!(
                "opening {} (pins of the attachment to {})",
                p.display(),
                self.iface
            )
        })
    }

    /// The configuration slots of the running program (read and publish through them only).
    pub fn config(&self) -> anyhow::Result<crate::config_slots::ConfigMaps<MapData>> {
        crate::config_slots::ConfigMaps::from_pins(
            self.map(names::CONFIG)?,
            self.map(names::CONFIG_SLOT)?,
        )
    }

    /// The DN map program runs use now.
    pub fn contacts(&self) -> anyhow::Result<HashMap<MapData, DnKey, ContactUri>> {
        let i = self.config()?.current()?.dn_map;
        self.dn_map(i)
    }

    /// DN map `i` of [`DN_MAPS`] (an older pin set has only the first).
    pub fn dn_map(&self, i: u16) -> anyhow::Result<HashMap<MapData, DnKey, ContactUri>> {
        let name = DN_MAPS[usize::from(i) % DN_MAPS.len()];
        Ok(HashMap::try_from(Map::HashMap(self.map(name)?))?)
    }

    /// How many DN entries the running program's map holds at most.
    pub fn contacts_capacity(&self) -> anyhow::Result<u32> {
        let info = self
            .map(DN_MAPS[0])?
            .info()
            .context("reading the DN map capacity")?;
        Ok(info.max_entries())
    }

    /// Entries in the restore state map (REGS) and its capacity.
    pub fn registrations_fill(&self) -> anyhow::Result<(usize, u32)> {
        let map = self.map(names::REGS)?;
        let capacity = map
            .info()
            .context("reading the restore map capacity")?
            .max_entries();
        let map: HashMap<MapData, RegKey, RegState> = HashMap::try_from(Map::LruHashMap(map))?;
        Ok((map.keys().count(), capacity))
    }

    /// Entries in the per-DN index of the restore records (REGS_BY_DN) and its capacity; (0, 0)
    /// for a pin set of a sip-rewriter without it.
    pub fn registered_dns_fill(&self) -> anyhow::Result<(usize, u32)> {
        let Ok(map) = self.map(names::REGS_BY_DN) else {
            return Ok((0, 0));
        };
        let capacity = map
            .info()
            .context("reading the per-DN index capacity")?
            .max_entries();
        let map: HashMap<MapData, DnKey, DnRecords> = HashMap::try_from(Map::LruHashMap(map))?;
        Ok((map.keys().count(), capacity))
    }

    pub fn genesys(&self) -> anyhow::Result<HashMap<MapData, AddrKey, u8>> {
        Ok(HashMap::try_from(Map::HashMap(self.map(names::GENESYS)?))?)
    }

    pub fn counters(&self) -> anyhow::Result<Counters> {
        let map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.map(names::STATS)?))?;
        Counters::read(&map)
    }

    /// Removes the link pins only (a persisted attachment whose interface is gone).
    pub fn remove_links(&self) -> anyhow::Result<()> {
        for p in [
            self.link_path(),
            self.ingress_link_path(),
            self.ingress_tc_link_path(),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing pin {}", p.display())),
            }
        }
        Ok(())
    }

    /// Removes every pin and the directory. Missing pins are fine.
    pub fn remove(&self) -> anyhow::Result<()> {
        for name in MAPS
            .iter()
            .copied()
            .chain(["prog", "link", "link-xdp", "link-ingress"])
        {
            let p = self.path.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing pin {}", p.display())),
            }
        }
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }
}

/// The interface a pinned link is attached to: `Some(0)` once it is detached (its interface
/// was deleted), `None` if there is no such link. Read from the link's fdinfo (`ifindex:`,
/// kernel/bpf/tcx.c `tcx_link_fdinfo()` and net/core/dev.c `bpf_xdp_link_show_fdinfo()`,
/// v6.6 to v6.18; a TCX link's device is cleared when the device goes away, `tcx_uninstall()`).
pub fn link_ifindex(pin: &Path) -> Option<u32> {
    let fd = obj_get(pin).ok()?;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("ifindex:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Opens a pinned object (`BPF_OBJ_GET`).
fn obj_get(pin: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let c = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // `union bpf_attr` for BPF_OBJ_GET (include/uapi/linux/bpf.h): pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: `attr` and the path it points to outlive the call; the size is the struct's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Fails when the pin root's bpffs is one this process does not share with the rest of the
/// system: `ip netns exec` gives its command a new mount namespace with a fresh /sys, where
/// /sys/fs/bpf is empty and not a bpffs; pins made there would vanish with the command.
pub fn require_shared_bpffs() -> anyhow::Result<()> {
    let root = root();
    let parent = root.parent().unwrap_or(Path::new("/"));
    if is_bpffs(parent) || parent != Path::new("/sys/fs/bpf") {
        return Ok(());
    }
    // The system's mount namespace is PID 1's; where that is not readable (a sandbox), the
    // parent's: `ip netns exec` runs its command in a namespace of its own.
    let ns = |p: String| fs::read_link(p).ok();
    let mine = ns("/proc/self/ns/mnt".into());
    let system = ns("/proc/1/ns/mnt".into()).or_else(|| {
        ns(format!(
            "/proc/{}/ns/mnt",
            std::os::unix::process::parent_id()
        ))
    });
    if mine.is_some() && system.is_some() && mine != system {
        bail!(
            "/sys/fs/bpf is not the system's bpffs in this mount namespace (as under `ip netns exec`, which remounts /sys): sip-rewriter's pins would be invisible to every other command; enter only the network namespace instead: nsenter --net=/run/netns/NAME sip-rewriter …"
        );
    }
    Ok(())
}

/// Held while checking for, and mounting, bpffs on /sys/fs/bpf.
const MOUNT_LOCK: &str = "/run/sip-rewriter/bpffs-mount.lock";

/// Makes sure the pin root exists on a bpffs, mounting bpffs on /sys/fs/bpf if needed.
pub fn ensure_root() -> anyhow::Result<PathBuf> {
    require_shared_bpffs()?;
    let root = root();
    let parent = root.parent().unwrap_or(Path::new("/"));
    if !is_bpffs(parent) && parent == Path::new("/sys/fs/bpf") {
        // Two processes that both saw no bpffs would mount two, one over the other: the
        // first one's pins vanish under the second mount (its next pin fails with ENOENT;
        // seen with the tests' parallel attaches on a machine that booted without bpffs).
        // Checked again under a lock, so one of them mounts.
        let _lock = crate::support::exclusive_lock(Path::new(MOUNT_LOCK), "the bpffs mount lock")?;
        if !is_bpffs(parent) {
            mount_bpffs(parent)?;
        }
    }
    if !is_bpffs(parent) {
        bail!(
            "{} is not on a bpffs; mount one with: mount -t bpf bpf {}",
            root.display(),
            parent.display()
        );
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    Ok(root)
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-buffer; `c` is NUL-terminated and outlives the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs(at: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(at)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!(
            "could not mount bpffs on {}; try: mount -t bpf bpf {}",
            at.display(),
            at.display()
        );
    }
    Ok(())
}
