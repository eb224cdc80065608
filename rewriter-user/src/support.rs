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

/// One line for a program the verifier refused (the full log goes to the debug log), else the
/// error as it is.
pub fn explain_load_error(e: anyhow::Error, program: &str) -> anyhow::Error {
    match crate::loader::verifier_reason(&e) {
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
