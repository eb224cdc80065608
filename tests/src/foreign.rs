//! A foreign TC program, as another tool (a firewall, a CNI) would attach it: `r0 = TC_ACT_OK;
//! exit`, which ends the TC chain for every packet. Loaded and attached with raw `bpf(2)` calls
//! so that nothing of sip-rewriter's is involved.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_attach_type` (include/uapi/linux/bpf.h, v6.6).
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_F_BEFORE` (include/uapi/linux/bpf.h, v6.6): with no anchor, first in the chain.
const BPF_F_BEFORE: u32 = 1 << 3;
/// Name the kernel shows for it (`bpftool prog`, TCX queries, `tc filter show`).
pub const NAME: &str = "foreign_pass";

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> anyhow::Result<OwnedFd> {
    // SAFETY: `attr` is a zeroed `union bpf_attr`-sized buffer that outlives the call; every
    // pointer stored in it points at data that outlives the call too.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("bpf({cmd})"));
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8], at: usize, v: &[u8]) {
    attr[at..at + v.len()].copy_from_slice(v);
}

/// Loads the program (`mov r0, 0; exit`).
pub fn load() -> anyhow::Result<OwnedFd> {
    // BPF_ALU64|BPF_MOV|BPF_K r0 = 0; BPF_JMP|BPF_EXIT.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
    put(&mut attr, 4, &2u32.to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, NAME.as_bytes());
    bpf(BPF_PROG_LOAD, &mut attr).context("loading the foreign program")
}

/// Attaches it to `ifindex`'s TCX egress or ingress chain: last (as tools do by default), or
/// first with `before`. The link lives as long as the returned descriptor.
pub fn attach_tcx(
    prog: &OwnedFd,
    ifindex: u32,
    egress: bool,
    before: bool,
) -> anyhow::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    let at = if egress {
        BPF_TCX_EGRESS
    } else {
        BPF_TCX_INGRESS
    };
    put(&mut attr, 8, &at.to_ne_bytes());
    put(
        &mut attr,
        12,
        &(if before { BPF_F_BEFORE } else { 0 }).to_ne_bytes(),
    );
    bpf(BPF_LINK_CREATE, &mut attr).context("attaching the foreign program (TCX)")
}

/// Pins it (for `tc filter add … bpf da object-pinned PATH`).
pub fn pin(prog: &OwnedFd, path: &Path) -> anyhow::Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(p.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, &(prog.as_raw_fd() as u32).to_ne_bytes());
    // BPF_OBJ_PIN returns 0, not a descriptor.
    // SAFETY: as in `bpf`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), attr.len()) };
    if r != 0 {
        bail!(
            "pinning the foreign program at {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
