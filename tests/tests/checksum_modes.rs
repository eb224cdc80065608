//! Checksum truth over a real veth pair, in both TX checksum modes (needs root).
//!
//! Over veth a CHECKSUM_PARTIAL packet is never verified by the receiver, so each mode gets
//! its own proof:
//! - TX checksum offload off on the edge veth: the stack writes full checksums before TC, the
//!   receiving stack verifies them, and `InCsumErrors` (Udp, Udp6) in genesys must stay 0;
//! - offload on: an AF_PACKET capture in genesys with PACKET_AUXDATA sees the packets marked
//!   TP_STATUS_CSUMNOTREADY; their UDP checksum field must hold the folded pseudo-header sum for
//!   the *new* length, and completing the sum must give a valid checksum.
//!
//! Both for growth and shrink, odd and even length changes, IPv4 and IPv6.

use std::{
    collections::HashMap,
    mem,
    net::{IpAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use integration_tests::{
    kernel::corpus_config,
    net::{EDGE_V4, EDGE_V6, GENESYS_V4, GENESYS_V6, InNetns, Topology, set_tx_csum},
    packet::udp_checksum,
};
use rewriter_common::{
    ContactUri,
    sip::{Decision, rewrite},
};
use rewriter_user::Rewriter;

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");

/// Messages whose rewrite grows and shrinks the datagram by odd and even amounts.
fn messages() -> Vec<(Vec<u8>, Vec<u8>)> {
    let table: HashMap<&[u8], ContactUri> = [(
        &b"1002"[..],
        ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap(),
    )]
    .into();
    let long = "<sip:84jp7d1i@3tglb5esjoiv.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-0123456789ab>\";expires=600";
    let mut out = Vec::new();
    for contact in [
        long,
        "<sip:a@b>;expires=600",
        "<sip:ab@b>;expires=600",
        "<sip:84jp7d1i@3tglb5esjoiv.invalid;ob>;expires=60",
        "<sip:84jp7d1i@3tglb5esjoiv.invalid;obx>;expires=60",
    ] {
        for dn in ["1002", "1003"] {
            let msg = REGISTER
                .replace(long, contact)
                .replace("sip:1002@", &format!("sip:{dn}@"));
            let mut buf = vec![0u8; 4096];
            let Decision::Rewritten { len, .. } = rewrite(
                msg.as_bytes(),
                &corpus_config(),
                |d| table.get(d).copied(),
                &mut buf,
            ) else {
                panic!("test message not rewritten: {msg}");
            };
            out.push((msg.into_bytes(), buf[..len].to_vec()));
        }
    }
    let deltas: Vec<i64> = out
        .iter()
        .map(|(i, o)| o.len() as i64 - i.len() as i64)
        .collect();
    for (what, ok) in [
        ("odd growth", deltas.iter().any(|d| *d > 0 && d % 2 != 0)),
        ("even growth", deltas.iter().any(|d| *d > 0 && d % 2 == 0)),
        ("odd shrink", deltas.iter().any(|d| *d < 0 && d % 2 != 0)),
        ("even shrink", deltas.iter().any(|d| *d < 0 && d % 2 == 0)),
    ] {
        assert!(ok, "no {what} among {deltas:?}");
    }
    out
}

/// `InCsumErrors` of Udp and Udp6 in the calling thread's namespace.
fn csum_errors() -> (u64, u64) {
    let field = |path: &str, proto: &str| -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        if proto == "Udp:" {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
            let names: Vec<&str> = lines[0].split_whitespace().collect();
            let vals: Vec<&str> = lines[1].split_whitespace().collect();
            let i = names.iter().position(|n| *n == "InCsumErrors").unwrap();
            vals[i].parse().unwrap()
        } else {
            text.lines()
                .find(|l| l.starts_with("Udp6InCsumErrors"))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        }
    };
    (
        field("/proc/thread-self/net/snmp", "Udp:"),
        field("/proc/thread-self/net/snmp6", "Udp6"),
    )
}

/// An AF_PACKET socket on `iface` with PACKET_AUXDATA, in the calling thread's namespace.
struct Capture(OwnedFd);

/// Linux `struct tpacket_auxdata` (include/uapi/linux/if_packet.h).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const PACKET_AUXDATA: libc::c_int = 8;

impl Capture {
    fn open(iface: &str) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh fd owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = rewriter_user::netdev::ifindex(iface).unwrap();
        // SAFETY: zeroed sockaddr_ll is valid; sizes passed match the types.
        unsafe {
            let mut sll: libc::sockaddr_ll = mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = ifindex as i32;
            assert_eq!(
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    mem::size_of_val(&sll) as u32
                ),
                0
            );
            let one: libc::c_int = 1;
            assert_eq!(
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_AUXDATA,
                    &one as *const _ as *const libc::c_void,
                    4
                ),
                0
            );
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                mem::size_of_val(&tv) as u32,
            );
        }
        Capture(fd)
    }

    /// Next frame and its tp_status, or None on timeout.
    fn next(&self) -> Option<(Vec<u8>, u32)> {
        let mut buf = vec![0u8; 4096];
        let mut cbuf = [0u8; 256];
        // SAFETY: msghdr/iovec point at live local buffers of the given sizes.
        let (n, status) = unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cbuf.len();
            let n = libc::recvmsg(self.0.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return None;
            }
            let mut status = 0;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let aux: TpacketAuxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const TpacketAuxdata);
                    status = aux.tp_status;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            (n as usize, status)
        };
        buf.truncate(n);
        Some((buf, status))
    }
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// UDP header + payload of an Ethernet frame to port 5060, with its addresses.
fn udp_of(frame: &[u8]) -> Option<(IpAddr, IpAddr, Vec<u8>)> {
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    let (src, dst, udp) = match et {
        0x0800 if frame[14 + 9] == 17 => {
            let ihl = (frame[14] & 0xf) as usize * 4;
            let s: [u8; 4] = frame[26..30].try_into().unwrap();
            let d: [u8; 4] = frame[30..34].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), &frame[14 + ihl..])
        }
        0x86dd if frame[14 + 6] == 17 => {
            let s: [u8; 16] = frame[22..38].try_into().unwrap();
            let d: [u8; 16] = frame[38..54].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), &frame[54..])
        }
        _ => return None,
    };
    (u16::from_be_bytes([udp[2], udp[3]]) == 5060).then(|| (src, dst, udp.to_vec()))
}

fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u64 {
    let a = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&s.octets()) + sum16(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum16(&s.octets()) + sum16(&d.octets()),
        _ => unreachable!(),
    };
    a + 17 + len as u64
}

fn run_mode(offload: bool) {
    let topo = Topology::new(if offload { "csum-on" } else { "csum-off" }).unwrap();
    let msgs = messages();
    let (rx4, rx6, cap, errs_before) = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        let rx4 = UdpSocket::bind((GENESYS_V4, 5060)).unwrap();
        let rx6 = UdpSocket::bind((GENESYS_V6, 5060)).unwrap();
        for s in [&rx4, &rx6] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        (rx4, rx6, Capture::open(&topo.genesys_if), csum_errors())
    };
    let _ns = InNetns::enter(&topo.edge).unwrap();
    set_tx_csum(&topo.edge_if, offload);
    let mut rw = Rewriter::load(&corpus_config()).unwrap();
    rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
        .unwrap();
    let att = rw.attach_egress(&topo.edge_if).unwrap();
    let tx4 = UdpSocket::bind((EDGE_V4, 0)).unwrap();
    let tx6 = UdpSocket::bind((EDGE_V6, 0)).unwrap();
    for (input, expected) in &msgs {
        for (tx, rx, to) in [(&tx4, &rx4, GENESYS_V4), (&tx6, &rx6, GENESYS_V6)] {
            tx.send_to(input, (to, 5060)).unwrap();
            let mut buf = vec![0u8; 4096];
            let n = rx.recv(&mut buf).expect("every datagram must arrive");
            assert_eq!(&buf[..n], &expected[..], "payload over {to}");
        }
    }
    rw.detach(att).unwrap();
    drop(_ns);

    let _ns = InNetns::enter(&topo.genesys).unwrap();
    let errs = csum_errors();
    assert_eq!(errs, errs_before, "InCsumErrors (Udp, Udp6) moved");
    let (mut partial, mut complete) = (0, 0);
    while let Some((frame, status)) = cap.next() {
        let Some((src, dst, mut udp)) = udp_of(&frame) else {
            continue;
        };
        if status & TP_STATUS_CSUMNOTREADY != 0 {
            // The field holds fold(pseudo-header) for the new length; the device would sum the
            // rest. Do what it would and check the result.
            let field = u16::from_be_bytes([udp[6], udp[7]]);
            assert_eq!(
                field,
                fold(pseudo(src, dst, udp.len())),
                "pseudo-header sum for the new length"
            );
            let c = !fold(sum16(&udp));
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            assert_eq!(
                fold(pseudo(src, dst, udp.len()) + sum16(&udp)),
                0xffff,
                "completed checksum"
            );
            partial += 1;
        } else {
            let c = u16::from_be_bytes([udp[6], udp[7]]);
            udp[6..8].copy_from_slice(&[0, 0]);
            assert_eq!(c, udp_checksum(src, dst, &udp), "full checksum");
            complete += 1;
        }
    }
    let n = msgs.len() * 2;
    if offload {
        assert_eq!(
            partial, n,
            "with TX offload every datagram is CHECKSUM_PARTIAL ({complete} were not)"
        );
    } else {
        assert_eq!(
            complete, n,
            "without TX offload every datagram carries a full checksum ({partial} did not)"
        );
    }
    println!(
        "checksum mode offload={offload}: {n} datagrams, {partial} partial, {complete} complete, InCsumErrors {errs:?}"
    );
}

#[test]
fn software_checksums_are_verified_by_the_receiver() {
    run_mode(false);
}

#[test]
fn offloaded_checksums_carry_the_new_pseudo_header_sum() {
    run_mode(true);
}
