//! Interface and privilege checks that turn kernel errnos into messages an admin can act on.

use std::ffi::CString;

use anyhow::{Context as _, bail};

/// Fails with a clear message unless the process runs as root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("sip-rewriter needs root (CAP_BPF and CAP_NET_ADMIN) to load and attach eBPF programs; run it with sudo");
    }
    Ok(())
}

/// Index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface).with_context(|| format!("invalid interface name {iface:?}"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("interface {iface:?} not found (see `ip link`)");
    }
    Ok(idx)
}
