//! Replacing a running attachment's whole DN set at once (`contact import`): program runs see
//! the old set or the new one, and the state file holds one of the two, also when the import
//! dies half way (`kill -9`, a full map, a failed write).
//!
//! The programs have two DN maps ([`rewriter_common::DN_MAPS`]) and use the one the current
//! configuration names (`Config::dn_map`, published as one version: [`crate::config_slots`]).
//! An import, holding the interface's state lock:
//! 1. saves the new overlay together with the whole new set as [`Pending`] (the file is
//!    replaced atomically);
//! 2. empties the map not in use and writes the new set into it;
//! 3. switches the configuration to that map (when the switch returns, no run uses the old one);
//! 4. saves the overlay without `pending`, then empties the old map.
//!
//! Dying before 1 leaves everything old. After 1 the state file is new, and the next command
//! that takes the lock ([`recover`]) finishes the import: if the switch (3) happened it only
//! drops `pending`, else it redoes 2 and 3. So once any later command has run, the running
//! map and the state file agree.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{HashMap, MapData};
use rewriter_common::{ContactUri, DN_MAPS, DnKey};

use crate::{
    pins::PinDir,
    state::{Lock, Overlay, Pending, StateFile},
};

/// Makes `entries` the running DN set of `pins` and `overlay` the durable state, all or
/// nothing (see the module documentation). `overlay` must be the state's overlay with the
/// import applied; call with the state [`Lock`] held, after [`recover`]. `progress` is told
/// how many entries are written so far.
pub fn replace(
    pins: &PinDir,
    state: &StateFile,
    lock: &Lock,
    overlay: &mut Overlay,
    entries: BTreeMap<String, String>,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<()> {
    let capacity = pins.contacts_capacity()? as usize;
    if entries.len() > capacity {
        anyhow::bail!(
            "{} DN entries would not fit in the DN map ({capacity} entries; attach with a larger --max-contacts)",
            entries.len()
        );
    }
    let mut config = pins.config()?;
    let standby = 1 - config.current()?.dn_map % 2;
    overlay.pending = Some(Pending {
        dn_map: standby,
        entries,
    });
    state.save(overlay, lock)?;
    finish(pins, state, lock, overlay, &mut config, progress)
}

/// Finishes an import that a previous command left in the state file (it was killed or
/// failed); `true` if there was one. Call with the state [`Lock`] held.
pub fn recover(
    pins: &PinDir,
    state: &StateFile,
    lock: &Lock,
    overlay: &mut Overlay,
) -> anyhow::Result<bool> {
    if overlay.pending.is_none() {
        return Ok(false);
    }
    log::warn!(
        "finishing an interrupted DN import on {} (from {})",
        pins.iface,
        state.path.display()
    );
    let mut config = pins.config()?;
    finish(pins, state, lock, overlay, &mut config, &mut |_| {})?;
    Ok(true)
}

fn finish(
    pins: &PinDir,
    state: &StateFile,
    lock: &Lock,
    overlay: &mut Overlay,
    config: &mut crate::config_slots::ConfigMaps<MapData>,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<()> {
    let Some(p) = overlay.pending.clone() else {
        return Ok(());
    };
    let to = p.dn_map % 2;
    let from = config.current()?.dn_map % 2;
    if from != to {
        let mut map = pins.dn_map(to)?;
        clear(&mut map, DN_MAPS[usize::from(to)])?;
        for (i, (dn, uri)) in p.entries.iter().enumerate() {
            let k = DnKey::new(dn.as_bytes()).with_context(|| format!("invalid DN {dn:?}"))?;
            let v =
                ContactUri::new(uri.as_bytes()).with_context(|| format!("invalid URI {uri:?}"))?;
            map.insert(k, v, 0).with_context(|| {
                format!(
                    "writing DN {dn} into the standby DN map ({})",
                    DN_MAPS[usize::from(to)]
                )
            })?;
            progress(i + 1);
        }
        config.switch_dn_map(to)?;
    }
    overlay.pending = None;
    state.save(overlay, lock)?;
    // No run uses the old map since the switch returned: free its entries.
    let old = 1 - to;
    clear(&mut pins.dn_map(old)?, DN_MAPS[usize::from(old)])
}

/// Removes every entry of a DN map.
pub fn clear<T: std::borrow::BorrowMut<MapData>>(
    map: &mut HashMap<T, DnKey, ContactUri>,
    name: &str,
) -> anyhow::Result<()> {
    let keys: Vec<DnKey> = map
        .keys()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the DN map ({name})"))?;
    for k in keys {
        match map.remove(&k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("emptying the DN map ({name})")),
        }
    }
    Ok(())
}
