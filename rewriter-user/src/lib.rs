//! Userspace side of sip-rewriter: loading the embedded eBPF object, configuring it, attaching it
//! and reading its counters. The `sip-rewriter` binary and the integration tests both use this.

pub mod config;
pub mod loader;
pub mod metrics;
pub mod netdev;
pub mod pins;
pub mod stats;

pub use loader::{Attachment, Rewriter};

/// The eBPF object built by `build.rs` (aya-build) from `rewriter-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rewriter"));

/// Name of the TC classifier inside [`EBPF_OBJECT`].
pub const PROGRAM: &str = "sip_rewriter";
