//! Reading the per-CPU counters.

use std::{borrow::Borrow, fmt};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use rewriter_common::Stat;

/// Sum over CPUs of every counter, indexed by [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Stat::COUNT as usize]);

impl Counters {
    pub fn read<T: Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> anyhow::Result<Self> {
        let mut out = [0u64; Stat::COUNT as usize];
        for stat in Stat::ALL {
            let per_cpu = map
                .get(&(stat as u32), 0)
                .with_context(|| format!("reading counter {}", stat.name()))?;
            out[stat as usize] = per_cpu.iter().sum();
        }
        Ok(Self(out))
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
}

impl fmt::Display for Counters {
    /// One line, `name=value` for every counter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", stat.name(), self.get(*stat))?;
        }
        Ok(())
    }
}
