//! Userspace side of sip-rewriter: loading the embedded eBPF object, configuring it, attaching it
//! and reading its counters. The `sip-rewriter` binary and the integration tests both use this.

pub mod config;
pub mod config_slots;
pub mod dnset;
pub mod loader;
pub mod metrics;
pub mod netdev;
pub mod owner;
pub mod pins;
pub mod state;
pub mod stats;
pub mod support;
pub mod watch;

pub use loader::{Attachment, Ingress, Rewriter};

/// The eBPF object built by `build.rs` (aya-build) from `rewriter-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rewriter"));

/// Name of the TC egress classifier inside [`EBPF_OBJECT`].
pub const PROGRAM: &str = rewriter_common::names::PROGRAM_EGRESS;
/// The ingress restore as an XDP program.
pub const PROGRAM_XDP: &str = rewriter_common::names::PROGRAM_XDP;
/// The ingress restore as a TC ingress classifier.
pub const PROGRAM_TC_INGRESS: &str = rewriter_common::names::PROGRAM_TC_INGRESS;

/// An error chain on one line, `a: b: c`, without repeating a cause that its parent's message
/// already ends with (the config errors carry their cause in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod object_tests {
    use rewriter_common::names;

    /// Every name userspace uses is a symbol of the object (a renamed `#[map]` static or
    /// program would otherwise surface only as a load error at attach time).
    #[test]
    fn the_object_holds_every_name_userspace_uses() {
        let all = names::PINNED_MAPS.iter().chain(&[
            names::PROGRAM_EGRESS,
            names::PROGRAM_XDP,
            names::PROGRAM_TC_INGRESS,
        ]);
        for name in all {
            let sym = [b"\0", name.as_bytes(), b"\0"].concat();
            assert!(
                super::EBPF_OBJECT.windows(sym.len()).any(|w| w == sym),
                "{name} is not in the eBPF object"
            );
        }
    }
}
