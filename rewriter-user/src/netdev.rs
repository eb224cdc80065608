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

/// TCX (kernel >= 6.6) is used where available; older kernels get a clsact qdisc.
pub fn has_tcx() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// Id of the sip-rewriter program attached to `iface`'s TCX egress, if any.
pub fn attached_program(iface: &str) -> anyhow::Result<Option<u32>> {
    if !has_tcx() {
        return Ok(None);
    }
    let (_, progs) = aya::programs::SchedClassifier::query_tcx(iface, aya::programs::TcAttachType::Egress)
        .with_context(|| format!("querying TCX egress programs on {iface}"))?;
    Ok(progs.iter().find(|p| p.name_as_str() == Some(crate::PROGRAM)).map(|p| p.id()))
}
