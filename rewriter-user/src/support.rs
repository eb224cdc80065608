//! What the running kernel must offer, probed before anything is loaded: an old kernel gets one
//! line naming what it lacks instead of a verifier log.

use anyhow::bail;
use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

use crate::Ingress;

/// The kernels the programs are verified on (`cargo xtask vm-test`, README "Requirements").
pub const SUPPORTED: &str = "Linux 6.1 or later (verified on 6.1, 6.12 and 6.18)";

/// A helper a program calls, and the release that brought it.
struct Need {
    prog: ProgramType,
    helper: BpfHelper,
    name: &'static str,
    since: &'static str,
}

const fn tc(helper: BpfHelper, name: &'static str, since: &'static str) -> Need {
    Need {
        prog: ProgramType::SchedClassifier,
        helper,
        name,
        since,
    }
}

const fn xdp(helper: BpfHelper, name: &'static str, since: &'static str) -> Need {
    Need {
        prog: ProgramType::Xdp,
        helper,
        name,
        since,
    }
}

/// Egress rewrite and TC ingress restore (`bpf_loop`: v5.17, commit e6f2dd0f8067;
/// `bpf_check_mtu`: v5.12, commit 34b2021cc616 "bpf: Add BPF-helper for MTU checking").
const TC: &[Need] = &[
    tc(BpfHelper::BPF_FUNC_loop, "bpf_loop", "5.17"),
    tc(BpfHelper::BPF_FUNC_check_mtu, "bpf_check_mtu", "5.12"),
];

/// XDP restore (`bpf_xdp_load_bytes`/`bpf_xdp_store_bytes`: v5.18, commit 3f364222d032).
const XDP: &[Need] = &[
    xdp(BpfHelper::BPF_FUNC_loop, "bpf_loop", "5.17"),
    xdp(
        BpfHelper::BPF_FUNC_xdp_load_bytes,
        "bpf_xdp_load_bytes",
        "5.18",
    ),
    xdp(
        BpfHelper::BPF_FUNC_xdp_store_bytes,
        "bpf_xdp_store_bytes",
        "5.18",
    ),
];

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// What of `needs` the kernel lacks, as `bpf_loop (Linux 5.17)`. A probe that cannot decide
/// (e.g. no permission) counts as present: the load then reports for itself.
fn missing(needs: &[Need]) -> Vec<String> {
    needs
        .iter()
        .filter(|n| matches!(is_helper_supported(n.prog, n.helper), Ok(false)))
        .map(|n| format!("{} (Linux {})", n.name, n.since))
        .collect()
}

/// Checks the kernel for the egress rewrite and the `wanted` ingress hook; returns the ingress
/// hook that can run here (with a warning when it differs), or an error naming what is missing.
pub fn check(wanted: Ingress) -> anyhow::Result<Ingress> {
    let tc = missing(TC);
    if !tc.is_empty() {
        bail!(
            "this kernel (Linux {}) lacks {}, which sip-rewriter needs; supported: {SUPPORTED}",
            release(),
            tc.join(", ")
        );
    }
    if wanted == Ingress::Xdp {
        let xdp = missing(XDP);
        if !xdp.is_empty() {
            log::warn!(
                "this kernel (Linux {}) lacks {} for the XDP restore: restoring on TC ingress instead (--ingress tc)",
                release(),
                xdp.join(", ")
            );
            return Ok(Ingress::Tc);
        }
    }
    Ok(wanted)
}

/// The verifier's reason for refusing a program, in one line, if `e` is such a refusal (see
/// [`reason_in_log`]; the syscall's error if the log says nothing).
pub fn verifier_reason(e: &anyhow::Error) -> Option<String> {
    let (log, io) =
        e.chain()
            .find_map(|c| match c.downcast_ref::<aya::programs::ProgramError>() {
                Some(aya::programs::ProgramError::LoadError {
                    verifier_log,
                    io_error,
                }) => Some((verifier_log.to_string(), io_error.to_string())),
                _ => None,
            })?;
    Some(reason_in_log(&log).unwrap_or(io))
}

/// The first line after the last instruction the verifier printed (`N: (op) …`), which is
/// where it says why it stopped; for a log without instructions (a refusal before
/// verification), its last line. Summary lines (`processed N insns`, …) are skipped.
pub fn reason_in_log(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_insn = |l: &str| {
        l.split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let is_summary = |l: &str| {
        [
            "processed ",
            "verification time",
            "stack depth",
            "max_states_per_insn",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    };
    let last = || lines.iter().rev().find(|l| !is_summary(l) && !is_insn(l));
    match lines.iter().rposition(|l| is_insn(l)) {
        Some(i) => lines[i + 1..].iter().find(|l| !is_summary(l)).or_else(last),
        None => last(),
    }
    .map(|l| (*l).to_owned())
}

/// One line for a program the verifier refused (the full log goes to the debug log), else the
/// error as it is.
pub fn explain_load_error(e: anyhow::Error, program: &str) -> anyhow::Error {
    match verifier_reason(&e) {
        Some(reason) => {
            log::debug!("verifier log for {program}: {e:?}");
            anyhow::anyhow!(
                "the kernel (Linux {}) refused program {program}: {reason} (supported: {SUPPORTED}; the whole verifier log: --verbose)",
                release()
            )
        }
        None => e.context(format!("loading program {program}")),
    }
}

/// An exclusive `flock` on the file at `path` (created, with its directory, if missing),
/// released when the returned file is dropped. `what` names the lock in errors.
pub fn exclusive_lock(path: &std::path::Path, what: &str) -> anyhow::Result<std::fs::File> {
    use anyhow::Context as _;
    use std::os::fd::AsRawFd as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {what} {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::reason_in_log;

    /// The end of v6.1's log for the egress program before its URI store was bounded
    /// (Debian 6.1.0-50, `cargo xtask vm-test --kernel 6.1`).
    const EGRESS_6_1: &str = "\
; let o = csum::store_uri(r, out, &cfg.tpl_pre, s.write.pre_len as usize)?;
17625: (79) r3 = *(u64 *)(r10 -16)    ; frame1: R3_w=map_value(off=0,ks=4,vs=416,imm=0) R10=fp0 cb
17632: (b7) r5 = 0                    ; frame1: R5_w=0 cb
17633: (85) call bpf_skb_store_bytes#9
invalid access to map value, value_size=416 off=144 size=0
R3 min value is outside of the allowed memory range
verification time 64798 usec
stack depth 184+96+40+0
processed 3742 insns (limit 1000000) max_states_per_insn 4 total_states 182 peak_states 135 mark_read 42
";

    #[test]
    fn the_reason_is_the_line_after_the_last_instruction() {
        assert_eq!(
            reason_in_log(EGRESS_6_1).as_deref(),
            Some("invalid access to map value, value_size=416 off=144 size=0")
        );
        let xdp = "312: (79) r4 = *(u64 *)(r10 -104)     ; R4_w=scalar() R10=fp0\n313: (0f) r2 += r4\n\
                   math between map_value pointer and register with unbounded min value is not allowed\n\
                   verification time 14227 usec\nstack depth 176\nprocessed 300 insns (limit 1000000)\n";
        assert_eq!(
            reason_in_log(xdp).as_deref(),
            Some(
                "math between map_value pointer and register with unbounded min value is not allowed"
            )
        );
    }

    #[test]
    fn a_refusal_before_verification_is_its_last_line() {
        let log = "func#0 @0\nfunc#1 @1200\nnumber of funcs in func_info doesn't match number of subprogs\n";
        assert_eq!(
            reason_in_log(log).as_deref(),
            Some("number of funcs in func_info doesn't match number of subprogs")
        );
        assert_eq!(reason_in_log("processed 0 insns\n"), None);
        assert_eq!(reason_in_log(""), None);
    }
}
