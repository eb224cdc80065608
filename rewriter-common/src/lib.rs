//! Shared between the eBPF program (`rewriter-ebpf`) and userspace (`rewriter-user`, tests).
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]` with explicit padding so
//! both sides agree on the layout byte for byte.
#![no_std]

/// Default Genesys SIP port.
pub const DEFAULT_PORT: u16 = 5060;

/// Runtime configuration, one entry in the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// UDP destination port of the Genesys SIP server, host byte order.
    pub port: u16,
    /// `CFG_*` flags.
    pub flags: u16,
    pub _reserved: u32,
}

impl Config {
    pub const fn new(port: u16) -> Self {
        Self { port, flags: 0, _reserved: 0 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_PORT)
    }
}

/// Per-CPU counters, one slot of the `STATS` array per variant.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// UDP datagrams to the Genesys port (candidates).
    Seen = 0,
}

impl Stat {
    /// Number of counters (size of the `STATS` map).
    pub const COUNT: u32 = 1;
    /// Every counter, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [Stat::Seen];

    /// Stable name used in CLI output, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Seen => "seen",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Config` is `repr(C)`, `Copy`, made of integers only and has no implicit padding
    // (2 + 2 + 4 bytes), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Config>(), 2 + 2 + 4);
    }

    #[test]
    fn stat_indices_are_dense() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
