//! Interface and privilege checks that turn kernel errnos into messages an admin can act on.

use std::ffi::CString;

use anyhow::{Context as _, bail};

/// Fails with a clear message unless the process runs as root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "sip-rewriter needs root (CAP_BPF and CAP_NET_ADMIN) to load and attach eBPF programs; run it with sudo"
        );
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

/// Id of the program `name` among `iface`'s clsact filters in direction `dir` (`egress` or
/// `ingress`), from `tc filter show` (before TCX, the kernel's only record of a cls_bpf
/// attachment is the filter; its netlink dump is what `tc` prints).
fn clsact_program(iface: &str, dir: &str, name: &str) -> anyhow::Result<Option<u32>> {
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", iface, dir])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running `tc filter show dev {iface} {dir}` (iproute2)"))?;
    if !out.status.success() {
        // No clsact qdisc: nothing attached.
        return Ok(None);
    }
    // `filter protocol all pref 49152 bpf chain 0 handle 0x1 sip_rewriter direct-action not_in_hw id 42 …`
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if !words.contains(&name) {
                return None;
            }
            words
                .windows(2)
                .find(|w| w[0] == "id")
                .and_then(|w| w[1].parse().ok())
        }))
}

/// One program in an interface's TC chain, in the order the kernel runs them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChainEntry {
    pub name: String,
    pub id: u32,
    /// clsact filter preference (none under TCX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pref: Option<u16>,
}

/// The programs on `iface`'s egress (`egress`) or ingress TC hook, first to run first: the TCX
/// chain on kernels >= 6.6, else the clsact filters by preference (`tc filter show`).
pub fn tc_chain(iface: &str, egress: bool) -> anyhow::Result<Vec<ChainEntry>> {
    if has_tcx() {
        let dir = if egress {
            aya::programs::TcAttachType::Egress
        } else {
            aya::programs::TcAttachType::Ingress
        };
        let (_, progs) = aya::programs::SchedClassifier::query_tcx(iface, dir)
            .with_context(|| format!("querying the TCX chain of {iface}"))?;
        return Ok(progs
            .iter()
            .map(|p| ChainEntry {
                name: p.name_as_str().unwrap_or("?").to_owned(),
                id: p.id(),
                pref: None,
            })
            .collect());
    }
    let dir = if egress { "egress" } else { "ingress" };
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", iface, dir])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running `tc filter show dev {iface} {dir}` (iproute2)"))?;
    let mut chain: Vec<ChainEntry> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `filter protocol all pref 49152 bpf chain 0 handle 0x1 NAME direct-action … id 42 …`
            let w: Vec<&str> = line.split_whitespace().collect();
            let after = |k: &str| w.windows(2).find(|p| p[0] == k).map(|p| p[1]);
            let id = after("id")?.parse().ok()?;
            let pref = after("pref")?.parse().ok()?;
            // iproute2 prints the program's own name as `name NAME` after its id.
            let name = after("name")
                .or_else(|| {
                    w.iter()
                        .position(|x| *x == "handle")
                        .and_then(|i| w.get(i + 2).copied())
                })
                .unwrap_or("?");
            Some(ChainEntry {
                name: (*name).to_owned(),
                id,
                pref: Some(pref),
            })
        })
        .collect();
    chain.sort_by_key(|e| e.pref);
    Ok(chain)
}

/// The attach options that put our program before every program already on the hook: TCX
/// `BPF_F_BEFORE` with no anchor (first), or a clsact preference below the lowest in use
/// (lower runs first). `None` when clsact's preference 1 is taken (we cannot go first).
pub fn first_in_chain(
    iface: &str,
    egress: bool,
) -> anyhow::Result<Option<aya::programs::tc::TcAttachOptions>> {
    use aya::programs::{
        LinkOrder,
        tc::{NlOptions, TcAttachOptions},
    };
    if has_tcx() {
        return Ok(Some(TcAttachOptions::TcxOrder(LinkOrder::first())));
    }
    let lowest = tc_chain(iface, egress)?.iter().filter_map(|e| e.pref).min();
    Ok(match lowest {
        // No filter yet: the kernel's default preference.
        None => Some(TcAttachOptions::Netlink(NlOptions::default())),
        Some(1) => None,
        Some(p) => Some(TcAttachOptions::Netlink(NlOptions {
            priority: p - 1,
            ..NlOptions::default()
        })),
    })
}

/// Id of the sip-rewriter program attached to `iface`'s egress (TCX, or clsact before 6.6), if
/// any.
pub fn attached_program(iface: &str) -> anyhow::Result<Option<u32>> {
    if !has_tcx() {
        return clsact_program(iface, "egress", crate::PROGRAM);
    }
    let (_, progs) =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::TcAttachType::Egress)
            .with_context(|| format!("querying TCX egress programs on {iface}"))?;
    Ok(progs
        .iter()
        .find(|p| p.name_as_str() == Some(crate::PROGRAM))
        .map(|p| p.id()))
}

/// Whether the TC ingress restore is attached to `iface` (behind XDP or on its own).
pub fn attached_ingress(iface: &str) -> anyhow::Result<bool> {
    if ifindex(iface).is_err() {
        return Ok(false);
    }
    if !has_tcx() {
        return Ok(clsact_program(iface, "ingress", crate::PROGRAM_TC_INGRESS)?.is_some());
    }
    let (_, progs) =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::TcAttachType::Ingress)
            .with_context(|| format!("querying TCX ingress programs on {iface}"))?;
    Ok(progs
        .iter()
        .any(|p| p.name_as_str() == Some(crate::PROGRAM_TC_INGRESS)))
}

/// The program parses an Ethernet header first: refuse interfaces whose frames start
/// elsewhere (loopback, tun, WireGuard, …), where it would read IP bytes as a MAC header.
pub fn require_ethernet(iface: &str) -> anyhow::Result<()> {
    let family = hw_family(iface)?;
    if family != libc::ARPHRD_ETHER {
        bail!(
            "interface {iface:?} is not an Ethernet interface (ARPHRD {family}); sip-rewriter attaches to Ethernet-type interfaces only"
        );
    }
    Ok(())
}

/// `ARPHRD_*` type of `iface` (SIOCGIFHWADDR), in the calling thread's network namespace.
fn hw_family(iface: &str) -> anyhow::Result<u16> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFHWADDR");
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked) and is NUL-terminated by the
    // zeroing; the kernel writes only inside the struct.
    let family = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        if iface.len() >= ifr.ifr_name.len() {
            bail!("interface name {iface:?} is too long");
        }
        for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
            *d = s as libc::c_char;
        }
        if libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFHWADDR,
            &mut ifr,
        ) != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading the type of interface {iface:?}"));
        }
        ifr.ifr_ifru.ifru_hwaddr.sa_family
    };
    Ok(family)
}
