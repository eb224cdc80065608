//! Frame parsing: is this UDP to or from the Genesys port and address set, over Ethernet
//! (+802.1Q) and IPv4/IPv6, and where are its headers and SIP payload.

use core::ffi::c_void;

use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use rewriter_common::{
    AddrKey, CFG_ADDR_FILTER, Config, DEFAULT_PORT, Scratch, Stat,
    sip::{MAX_SIP_LEN, MIN_SIP_LEN, TAIL_PAD},
};

use crate::{
    Verdict, csum,
    maps::{self, GENESYS, add},
    pkt::{Pkt, Raw as _},
};

/// Where the headers of a candidate datagram are.
pub struct Frame {
    pub l3: usize,
    pub udp: usize,
    pub v6: bool,
    /// Where the IP header's length says the datagram ends.
    pub ip_end: usize,
    /// The Genesys side: the destination on egress, the source on ingress.
    pub peer: AddrKey,
}

impl Frame {
    /// This frame with its offsets read back from `spill`, a map value: the verifier knows
    /// nothing of what it loads from one (v6.1 kernel/bpf/verifier.c `check_mem_access()`:
    /// `mark_reg_unknown()` for a map value that is not a frozen read-only one), so the paths
    /// that reach what follows with different offsets (IPv4 or IPv6, with a VLAN tag or
    /// not) are one state to it instead of one each. Every use of the offsets is checked
    /// at run time (helpers) or bounded where it is used. For sip_rewriter, v6.1 processed
    /// 478 641 -> 417 512 insns.
    #[inline(always)]
    pub fn forgotten(&self, spill: &mut [u64; 3]) -> Frame {
        let p = spill.as_mut_ptr();
        // SAFETY: three aligned words behind `&mut`; volatile, so the compiler keeps the
        // round trip.
        unsafe {
            core::ptr::write_volatile(p, self.l3 as u64);
            core::ptr::write_volatile(p.add(1), self.udp as u64);
            core::ptr::write_volatile(p.add(2), self.ip_end as u64);
            Frame {
                l3: core::ptr::read_volatile(p) as usize,
                udp: core::ptr::read_volatile(p.add(1)) as usize,
                v6: self.v6,
                ip_end: core::ptr::read_volatile(p.add(2)) as usize,
                peer: self.peer,
            }
        }
    }
}

/// IPv6 extension headers looked through before UDP.
const MAX_IPV6_EXT: usize = 2;
/// The unit of an IPv6 extension header's length field, and the length of its first unit
/// (RFC 8200 4.3: "in 8-octet units, not including the first 8 octets").
const IPV6_EXT_UNIT: usize = 8;
/// IPv4 `frags` bits that mark a fragment: More Fragments and the 13-bit offset (RFC 791 3.1;
/// the remaining bits are Reserved and Don't Fragment).
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;

/// The first two bytes of an IPv6 hop-by-hop, routing or destination options header.
#[repr(C)]
struct Ipv6ExtHdr {
    next_hdr: u8,
    len: u8,
}

/// The port of the UDP header at `udp` that names the SIP server's side: the destination on
/// egress, the source on ingress.
#[inline(always)]
fn udp_port<P: Pkt>(ctx: &P, udp: usize, ingress: bool) -> Option<u16> {
    let h: *const UdpHdr = ptr_at(ctx, udp)?;
    // SAFETY: bounds checked by `ptr_at`.
    Some(unsafe {
        if ingress {
            (*h).src_port()
        } else {
            (*h).dst_port()
        }
    })
}

/// UDP to (egress) or from (`ingress`) the Genesys port and address set. `None`: not ours
/// (nothing is counted); `Some(Err(stat))`: ours, but it passes for the reason `stat`.
#[inline(always)]
pub fn candidate<P: Pkt>(ctx: &P, cfg: &Config, ingress: bool) -> Option<Result<Frame, Stat>> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = EthHdr::LEN;
    let is_vlan = |t: u16| t == EtherType::Ieee8021q as u16 || t == EtherType::Ieee8021ad as u16;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: *const VlanHdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = unsafe { (*vlan).ether_type };
        l3 += VlanHdr::LEN;
    }
    if is_vlan(ether_type) {
        // QinQ (802.1ad, or a second 802.1Q tag): a third IP header offset would make the
        // verifier walk every later path once more per offset (v6.1: past its budget), so
        // such frames pass, counted, whether or not they carry SIP.
        return Some(Err(Stat::VlanUnsupported));
    }
    let port = if cfg.port == 0 {
        DEFAULT_PORT
    } else {
        cfg.port
    };
    let (f, dst, fragment) = if ether_type == EtherType::Ipv4 as u16 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (ihl, proto, frags, tot_len, dst) = unsafe {
            (
                (*ip).ihl() as usize,
                (*ip).proto,
                (*ip).frags,
                (*ip).tot_len(),
                if ingress {
                    (*ip).src_addr
                } else {
                    (*ip).dst_addr
                },
            )
        };
        if proto != IpProto::Udp as u8 || ihl < Ipv4Hdr::LEN {
            return None;
        }
        // The port before anything is built from the headers: most UDP is not SIP.
        if udp_port(ctx, l3 + ihl, ingress)? != port {
            return None;
        }
        // Only the first fragment has the UDP header, and no fragment can be rewritten on its
        // own.
        let fragment = u16::from_be_bytes(frags) & IPV4_MF_AND_OFFSET != 0;
        (
            Frame {
                l3,
                udp: l3 + ihl,
                v6: false,
                ip_end: l3 + tot_len as usize,
                peer: AddrKey::v4(dst),
            },
            AddrKey::v4(dst),
            fragment,
        )
    } else if ether_type == EtherType::Ipv6 as u16 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (mut next, payload_len, dst) = unsafe {
            (
                (*ip).next_hdr,
                (*ip).payload_len(),
                if ingress {
                    (*ip).src_addr
                } else {
                    (*ip).dst_addr
                },
            )
        };
        // Extension headers before UDP (RFC 8200 4.1: hop-by-hop first, then destination
        // options, routing): found so that a SIP datagram behind them is counted, not
        // rewritten (a routing header would change the checksum's pseudo-header).
        let mut udp = l3 + Ipv6Hdr::LEN;
        let mut ext = false;
        for _ in 0..MAX_IPV6_EXT {
            if next == IpProto::HopOpt as u8
                || next == IpProto::Ipv6Opts as u8
                || next == IpProto::Ipv6Route as u8
            {
                let h: *const Ipv6ExtHdr = ptr_at(ctx, udp)?;
                // SAFETY: bounds checked by `ptr_at`.
                let (n, units) = unsafe { ((*h).next_hdr, (*h).len as usize) };
                next = n;
                udp += (units + 1) * IPV6_EXT_UNIT;
                ext = true;
            }
        }
        if next == IpProto::Ipv6Frag as u8 {
            // The UDP port is only in the first fragment; it cannot be rewritten anyway.
            return if ingress {
                None
            } else {
                Some(Err(Stat::Fragment))
            };
        }
        if next != IpProto::Udp as u8 {
            return None;
        }
        if udp_port(ctx, udp, ingress)? != port {
            return None;
        }
        if ext {
            return Some(Err(Stat::Ipv6Ext));
        }
        (
            Frame {
                l3,
                udp,
                v6: true,
                ip_end: l3 + Ipv6Hdr::LEN + payload_len as usize,
                peer: AddrKey(dst),
            },
            AddrKey(dst),
            false,
        )
    } else {
        return None;
    };

    // SAFETY: plain lookup; the value is not used.
    if cfg.flags & CFG_ADDR_FILTER != 0 && unsafe { GENESYS.get(&dst) }.is_none() {
        return None;
    }
    if fragment {
        add(if ingress { Stat::Responses } else { Stat::Seen }, 1);
        return Some(Err(Stat::Fragment));
    }
    Some(Ok(f))
}

/// The UDP payload of a candidate, copied into the per-CPU scratch: (packet offset, length,
/// scratch). Refuses, with `other`, a payload that does not start with `start` (cheap, before
/// the copy); with `Malformed` a UDP length that disagrees with the packet's (Ethernet padding,
/// a lying length); with `TooBig` one past `MAX_SIP_LEN`.
#[inline(always)]
pub fn sip_payload<'a, P: Pkt>(
    ctx: &P,
    f: &Frame,
    start: &[u8; 8],
    other: Stat,
) -> Result<(usize, usize, &'a mut Scratch), Stat> {
    let udp: *const UdpHdr = ptr_at(ctx, f.udp).ok_or(Stat::Malformed)?;
    // SAFETY: bounds checked by `ptr_at`.
    let udp_len = unsafe { (*udp).len() } as usize;
    let payload = f.udp + UdpHdr::LEN;
    if udp_len < UdpHdr::LEN || payload + (udp_len - UdpHdr::LEN) != ctx.len() as usize {
        return Err(Stat::Malformed);
    }
    // An IP length that disagrees with the frame (and so with the UDP length): a receiver
    // would drop or truncate it, so it is not ours to rewrite either.
    if f.ip_end != ctx.len() as usize {
        return Err(Stat::Malformed);
    }
    let n = udp_len - UdpHdr::LEN;
    let first: [u8; 8] = ctx.load(payload).map_err(|_| other)?;
    if n < MIN_SIP_LEN || first != *start {
        return Err(other);
    }
    if n > MAX_SIP_LEN {
        return Err(Stat::TooBig);
    }
    let scratch = maps::scratch().ok_or(Stat::Error)?;
    load_payload(ctx, payload, n, scratch)?;
    Ok((payload, n, scratch))
}

/// Copies the `n`-byte payload (1..=MAX_SIP_LEN) into the scratch buffer and zeroes the pad.
#[inline(always)]
fn load_payload<P: Pkt>(ctx: &P, off: usize, n: usize, s: &mut Scratch) -> Verdict {
    let size = csum::verifier_size(n);
    // The destination holds BUF_SIZE + 8 bytes >= size.
    if ctx
        .raw()
        .load(off as u32, s.msg.0.as_mut_ptr() as *mut c_void, size as u32)
        != 0
    {
        return Err(Stat::Error);
    }
    for i in 0..TAIL_PAD {
        // SAFETY: masked index inside the buffer; volatile keeps it from becoming a `memset`.
        unsafe { core::ptr::write_volatile(s.msg.0.as_mut_ptr().add(csum::masked(n + i)), 0) };
    }
    Ok(())
}

/// Bounds-checked pointer to a `T` at `offset` in the linear packet data.
#[inline(always)]
pub fn ptr_at<P: Pkt, T>(ctx: &P, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}
