//! Publishing the programs' configuration so that one program run never mixes two versions.
//!
//! A map update copies the new value over the old one in place while programs may be reading
//! it (`array_map_update_elem` → `copy_map_value`,
//! <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/arraymap.c#L379-L395>), so a run
//! could see half of an update: a template's length from one version and its text from the
//! next. Instead `CONFIG` has [`CONFIG_SLOTS`] slots and `CONFIG_SLOT[0]` names the current one;
//! a program run reads that index once and uses its slot for everything. An update writes the
//! other slot, waits for an RCU grace period, switches the index and waits again (and first
//! waits once more, in case the previous updater died before its last wait).
//!
//! Every program run is an RCU read-side critical section (TC and XDP run with bottom halves
//! disabled, BPF_PROG_TEST_RUN under `rcu_read_lock()`), and `synchronize_rcu()` guarantees
//! that when it returns every CPU has executed a full memory barrier since the end of its last
//! read-side section that began before the call, and that a section extending past the return
//! began after a full barrier that follows the start of the call (its kernel-doc,
//! <https://github.com/torvalds/linux/blob/v6.18/kernel/rcu/tree.c#L3263-L3301>). So a run that
//! sees the new index sees the slot's new bytes (first wait), and after the second wait no run
//! still reads the old slot, which the next update may then write. The wait is
//! `membarrier(MEMBARRIER_CMD_GLOBAL)`, which is `synchronize_rcu()` on a multi-CPU system
//! (<https://github.com/torvalds/linux/blob/v6.18/kernel/sched/membarrier.c#L600-L606>; the BPF
//! selftests' `kern_sync_rcu()` waits for programs the same way). Updates of all sip-rewriter
//! processes are serialized by an `flock`.

use std::{
    borrow::{Borrow, BorrowMut},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use rewriter_common::{CONFIG_SLOTS, Config, names};

/// `MEMBARRIER_CMD_GLOBAL` (include/uapi/linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
/// Held while a process publishes a configuration.
const LOCK_PATH: &str = "/run/sip-rewriter/config.lock";

/// The `CONFIG` slots and the `CONFIG_SLOT` index.
pub struct ConfigMaps<T> {
    configs: Array<T, Config>,
    slot: Array<T, u32>,
}

impl ConfigMaps<MapData> {
    /// Takes both maps out of a loaded object (the programs keep their references).
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let configs = ebpf
            .take_map(names::CONFIG)
            .context("map CONFIG missing from the object")?;
        let slot = ebpf
            .take_map(names::CONFIG_SLOT)
            .context("map CONFIG_SLOT missing from the object")?;
        Ok(Self {
            configs: Array::try_from(configs)?,
            slot: Array::try_from(slot)?,
        })
    }

    /// Both maps from their pins.
    pub fn from_pins(configs: MapData, slot: MapData) -> anyhow::Result<Self> {
        use aya::maps::Map;
        Ok(Self {
            configs: Array::try_from(Map::Array(configs))?,
            slot: Array::try_from(Map::Array(slot))?,
        })
    }
}

impl<T: Borrow<MapData>> ConfigMaps<T> {
    /// The configuration program runs use now (read under the lock: no slot is being written).
    pub fn current(&self) -> anyhow::Result<Config> {
        let _lock = lock()?;
        self.read_current().map(|(c, _)| c)
    }

    fn read_current(&self) -> anyhow::Result<(Config, u32)> {
        let i = self
            .slot
            .get(&0, 0)
            .context("reading the configuration slot")?
            % CONFIG_SLOTS;
        Ok((
            self.configs
                .get(&i, 0)
                .context("reading the configuration")?,
            i,
        ))
    }
}

impl<T: BorrowMut<MapData>> ConfigMaps<T> {
    /// Makes `config` the one program runs use (see the module documentation). The DN map in
    /// use stays what it is: only [`Self::switch_dn_map`] changes it.
    pub fn publish(&mut self, config: &Config) -> anyhow::Result<()> {
        self.update(|c| {
            let dn_map = c.dn_map;
            *c = *config;
            c.dn_map = dn_map;
            Ok(())
        })
        .map(drop)
    }

    /// Makes program runs use DN map `to` ([`rewriter_common::DN_MAPS`]); when it returns, no
    /// run uses the other one any more.
    pub fn switch_dn_map(&mut self, to: u16) -> anyhow::Result<()> {
        self.update(|c| {
            c.dn_map = to;
            Ok(())
        })
        .map(drop)
    }

    /// Publishes what `change` makes of the current configuration; no other sip-rewriter
    /// process publishes in between. Returns the new configuration.
    pub fn update(
        &mut self,
        change: impl FnOnce(&mut Config) -> anyhow::Result<()>,
    ) -> anyhow::Result<Config> {
        let _lock = lock()?;
        let (mut c, cur) = self.read_current()?;
        change(&mut c)?;
        let next = (cur + 1) % CONFIG_SLOTS;
        // Runs that read `next` before the last switch may still be going if the process that
        // switched died before its second wait: wait for them before writing it.
        wait_for_program_runs();
        self.configs
            .set(next, c, 0)
            .context("writing the configuration")?;
        wait_for_program_runs();
        self.slot
            .set(0, next, 0)
            .context("switching the configuration slot")?;
        wait_for_program_runs();
        Ok(c)
    }
}

/// Waits until every program run that started before the call has ended (an RCU grace period).
fn wait_for_program_runs() {
    // membarrier skips the grace period on a single online CPU, where a preemptible RCU
    // reader (PREEMPT_RT, BPF_PROG_TEST_RUN on a preemptible kernel) could still be inside.
    // SAFETY: sysconf has no preconditions.
    let one_cpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } == 1;
    // SAFETY: membarrier takes no pointers.
    let r = if one_cpu {
        -1
    } else {
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) }
    };
    if r != 0 {
        // nohz_full kernels refuse it (EINVAL), CONFIG_MEMBARRIER=n lacks it (ENOSYS). A run
        // lasts microseconds: wait far longer than that.
        log::debug!("no membarrier(MEMBARRIER_CMD_GLOBAL) grace period here; sleeping instead");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An exclusive `flock` on [`LOCK_PATH`], released on drop. Without it two processes could
/// write the same slot while it is live: an error, not a warning.
fn lock() -> anyhow::Result<std::fs::File> {
    crate::support::exclusive_lock(std::path::Path::new(LOCK_PATH), "the configuration lock")
}
