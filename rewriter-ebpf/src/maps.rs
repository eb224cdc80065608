//! The maps every program shares, the configuration read, and the counters.
//!
//! Userspace names these maps by the identifiers below (aya's `#[map]` uses the static's
//! name); `rewriter_common::names` holds the same names for the loader and the pins.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use rewriter_common::{
    AddrKey, CONFIG_SLOTS, Config, ContactUri, DnKey, MAX_CONTACTS, MAX_GENESYS_ADDRS, Scratch,
    Stat,
    restore::{DnRecords, MAX_REGISTRATIONS, RegKey, RegState},
};

/// Runtime configuration written by userspace: [`CONFIG_SLOTS`] versions, the current one
/// named by [`CONFIG_SLOT`]; read through [`config`] only.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Index of the current [`CONFIG`] slot.
#[map]
pub static CONFIG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU counters indexed by [`Stat`].
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// DN → bracketed Contact URI, filled by `sip-rewriter contact ...`, when `Config::dn_map` is
/// 0 ([`rewriter_common::DN_MAPS`]). Not preallocated: most deployments use a small part of it,
/// and an update links a new element before the old one is unlinked, so a lookup sees one entry
/// whole (kernel/bpf/hashtab.c `htab_map_update_elem()`, v6.1 to v6.18: "add new element to the
/// head of the list, so that concurrent search will find it before old elem").
#[map]
pub static CONTACTS: HashMap<DnKey, ContactUri> =
    HashMap::with_max_entries(MAX_CONTACTS, BPF_F_NO_PREALLOC);

/// The other DN map, used when `Config::dn_map` is 1: `contact import` fills the map not in
/// use and switches with the configuration.
#[map]
pub static CONTACTS_B: HashMap<DnKey, ContactUri> =
    HashMap::with_max_entries(MAX_CONTACTS, BPF_F_NO_PREALLOC);

/// Genesys destination addresses (IPv4-mapped for IPv4); used when `CFG_ADDR_FILTER` is set.
#[map]
pub static GENESYS: HashMap<AddrKey, u8> = HashMap::with_max_entries(MAX_GENESYS_ADDRS, 0);

/// (Call-ID, DN) -> the URI the egress wrote and the client's original URIs, for the ingress
/// restore. LRU: a client that stops registering ages out; always preallocated (the kernel
/// refuses `BPF_F_NO_PREALLOC` for LRU maps:
/// <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/hashtab.c#L447-L448>).
#[map]
pub static REGS: LruHashMap<RegKey, RegState> = LruHashMap::with_max_entries(MAX_REGISTRATIONS, 0);

/// DN -> the Call-IDs of its [`REGS`] records, oldest first (`DnRecords`): the per-DN bound
/// (`restore::MAX_PER_DN`). Written only when a REGISTER makes a new record, never by a
/// refresh. Userspace sizes it as `REGS` (a DN listed here has at least one record). LRU, so a
/// DN that stops registering ages out here too.
#[map]
pub static REGS_BY_DN: LruHashMap<DnKey, DnRecords> =
    LruHashMap::with_max_entries(MAX_REGISTRATIONS, 0);

/// Per-CPU scratch: the payload copy and the scan state (too big for the 512-byte stack).
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The configuration of this program run: the slot `CONFIG_SLOT` names, read once. Userspace
/// never writes a slot that a run may still be reading, so one packet sees one version
/// (template, keep list, flags, port) from its first look to its last write.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    // SAFETY: an array map value of the program's own map, valid for the whole run.
    let slot = unsafe { core::ptr::read_volatile(CONFIG_SLOT.get_ptr(0)?) };
    CONFIG.get(slot % CONFIG_SLOTS)
}

/// The DN map `cfg` names.
#[inline(always)]
pub fn dn_map(cfg: &Config) -> &'static HashMap<DnKey, ContactUri> {
    if cfg.dn_map == 0 {
        &CONTACTS
    } else {
        &CONTACTS_B
    }
}

/// The per-CPU scratch of this program run.
#[inline(always)]
pub fn scratch<'a>() -> Option<&'a mut Scratch> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, used by this program run only (no preemption within a run).
    Some(unsafe { &mut *p })
}

/// Counts one event.
#[inline(always)]
pub fn count(stat: Stat) {
    add(stat, 1);
}

/// Adds `v` to `stat` on this CPU; returns the new value.
#[inline(always)]
pub fn add(stat: Stat, v: u64) -> u64 {
    match STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        Some(p) => unsafe {
            *p += v;
            *p
        },
        None => 0,
    }
}

/// `stat` on this CPU.
#[inline(always)]
pub fn read(stat: Stat) -> u64 {
    STATS.get(stat as u32).copied().unwrap_or(0)
}

/// Whether an event counted `n` times on this CPU is worth a log line (the first, each power of
/// two, then every 65 536th): logs stay readable under load.
#[inline(always)]
pub fn log_worthy(n: u64) -> bool {
    n.is_power_of_two() || n % LOG_EVERY == 0
}

/// See [`log_worthy`].
const LOG_EVERY: u64 = 65_536;
