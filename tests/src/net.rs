//! Throw-away network namespaces joined by a veth pair, for end-to-end tests.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:db8::/32 (documentation).
//! Everything is removed on drop, also when the test panics.

use std::{
    fs::File,
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

pub const EDGE_V4: &str = "198.18.0.1";
pub const GENESYS_V4: &str = "198.18.0.2";
pub const EDGE_V6: &str = "2001:db8::1";
pub const GENESYS_V6: &str = "2001:db8::2";
pub const EDGE_MAC: &str = "02:00:00:00:00:01";
pub const GENESYS_MAC: &str = "02:00:00:00:00:02";

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Two namespaces, "edge" (where the rewriter runs) and "genesys", joined by a veth pair.
pub struct Topology {
    pub edge: String,
    pub genesys: String,
    /// veth end inside `edge`.
    pub edge_if: String,
    /// veth end inside `genesys`.
    pub genesys_if: String,
}

impl Topology {
    /// Creates the namespaces with names unique to this process and call.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Topology {
            edge: format!("sipr-{tag}-edge-{id}"),
            genesys: format!("sipr-{tag}-gen-{id}"),
            edge_if: "veth-edge".into(),
            genesys_if: "veth-gen".into(),
        };
        // From here on, drop cleans up whatever was created.
        ip(&["netns", "add", &t.edge])?;
        ip(&["netns", "add", &t.genesys])?;
        ip(&[
            "link",
            "add",
            &t.edge_if,
            "netns",
            &t.edge,
            "address",
            EDGE_MAC,
            "type",
            "veth",
            "peer",
            "name",
            &t.genesys_if,
            "netns",
            &t.genesys,
            "address",
            GENESYS_MAC,
        ])?;
        for (ns, dev, v4, v6, peer_v4, peer_v6, peer_mac) in [
            (
                &t.edge,
                &t.edge_if,
                EDGE_V4,
                EDGE_V6,
                GENESYS_V4,
                GENESYS_V6,
                GENESYS_MAC,
            ),
            (
                &t.genesys,
                &t.genesys_if,
                GENESYS_V4,
                GENESYS_V6,
                EDGE_V4,
                EDGE_V6,
                EDGE_MAC,
            ),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", dev])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            // Static neighbours: no ARP/ND delay or loss before the first datagram.
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                peer_v4,
                "lladdr",
                peer_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                peer_v6,
                "lladdr",
                peer_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end, which removes the peer and any qdisc/TCX link.
        for ns in [&self.edge, &self.genesys] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Moves the calling thread into a network namespace until the guard drops.
pub struct InNetns {
    original: File,
}

impl InNetns {
    pub fn enter(ns: &str) -> anyhow::Result<Self> {
        let original = File::open("/proc/thread-self/ns/net").context("opening current netns")?;
        let path = format!("/run/netns/{ns}");
        let target = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on valid fds; it only changes the calling thread's namespace.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setns into {ns}"));
        }
        Ok(Self { original })
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // SAFETY: as above, back to the namespace the thread came from.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// A UDP path from "edge" (198.18.0.1) to Genesys at 198.18.0.2:5060 across the topology.
pub struct SipPath {
    rx: std::net::UdpSocket,
    tx: std::net::UdpSocket,
}

impl SipPath {
    pub fn new(t: &Topology) -> anyhow::Result<Self> {
        let rx = {
            let _ns = InNetns::enter(&t.genesys)?;
            std::net::UdpSocket::bind((GENESYS_V4, 5060)).context("binding genesys:5060")?
        };
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        let tx = {
            let _ns = InNetns::enter(&t.edge)?;
            std::net::UdpSocket::bind((EDGE_V4, 0)).context("binding edge")?
        };
        Ok(Self { rx, tx })
    }

    /// Sends `msg` to Genesys and returns what Genesys received.
    pub fn exchange(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.tx
            .send_to(msg, (GENESYS_V4, 5060))
            .context("sending")?;
        let mut buf = vec![0u8; 4096];
        let n = self
            .rx
            .recv(&mut buf)
            .context("nothing arrived at genesys:5060 within 2 s")?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// `ethtool -K IF tx on|off` through the SIOCETHTOOL ioctl (include/uapi/linux/ethtool.h).
pub fn set_tx_csum(iface: &str, on: bool) {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut val = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: on as u32,
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let _fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed ifreq is valid; the name fits (checked) and ifr_data points at `val`, which
    // outlives the ioctl.
    let r = unsafe {
        let mut ifr: libc::ifreq = mem::zeroed();
        assert!(iface.len() < ifr.ifr_name.len());
        for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = &mut val as *mut EthtoolValue as *mut libc::c_char;
        libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr)
    };
    assert_eq!(
        r,
        0,
        "SIOCETHTOOL on {iface}: {}",
        std::io::Error::last_os_error()
    );
}

/// `InCsumErrors` of the calling thread's network namespace (`/proc/thread-self/net/snmp`):
/// datagrams its stack dropped for a bad UDP checksum.
pub fn udp_in_csum_errors() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp")
        .expect("reading /proc/thread-self/net/snmp");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let i = lines[0]
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .expect("an InCsumErrors column");
    lines[1]
        .split_whitespace()
        .nth(i)
        .and_then(|n| n.parse().ok())
        .expect("an InCsumErrors value")
}
