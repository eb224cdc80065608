//! Packet surgery: one helper per step (store bytes, resize, fix lengths and checksums).
//!
//! Every function here may move or reallocate packet data, so each one invalidates packet
//! pointers (`ctx.data()`): callers re-derive them rather than keep any across a call.
//!
//! Checksum model (kernel v6.18, net/core/utils.c `inet_proto_csum_replace*`,
//! <https://github.com/torvalds/linux/blob/v6.18/net/core/utils.c#L425-L486>, called from
//! `bpf_l4_csum_replace`, <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L1974-L2026>):
//! `bpf_l4_csum_replace` on a CHECKSUM_PARTIAL skb (locally generated, offloaded) only touches
//! the field when `BPF_F_PSEUDO_HDR` is given, because the field then holds the pseudo-header
//! sum and the device sums header and payload itself; on any other skb it updates the full
//! checksum. So we always issue the three updates below and the kernel applies exactly the
//! ones that matter for the skb at hand.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::{bpf_csum_diff, bpf_skb_change_tail},
    programs::TcContext,
};
use network_types::{
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use rewriter_common::{
    IP_PART, Scratch, Stat, URI_BUF,
    sip::{BUF_SIZE, MAX_EDITS, Msg},
};

use crate::{
    frame::Frame,
    pkt::{Pkt, Raw},
};

const MASK: usize = BUF_SIZE - 1;
/// Bytes summed per `bpf_csum_diff` call: the helper refused more than 512 bytes per call
/// (from + to) before v6.13 (commit 6a4794d5a3e2 "bpf: bpf_csum_diff: optimize and homogenize for
/// all archs"); staying under it keeps older kernels working.
const CSUM_CHUNK: usize = 512;

/// `len` (1..=BUF_SIZE) computed so that the verifier sees the bounds [1, BUF_SIZE] on the very
/// register passed as a helper's size. Without the `black_box`, LLVM folds the expression back
/// to `len`, whose lower bound the verifier lost in an earlier compare ("invalid zero-sized
/// read" for ARG_CONST_SIZE, `check_mem_size_reg`,
/// <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/verifier.c#L8185-L8228>).
#[inline(always)]
pub fn verifier_size(len: usize) -> usize {
    ((core::hint::black_box(len) - 1) & MASK) + 1
}

/// `i & MASK`, kept even where LLVM proves it redundant from an earlier bounds check: the
/// verifier may not know that bound. Before v6.9 (commit 26b560765e67 "bpf: Assign ID to
/// scalars on spill") a bound learned on a register does not reach its copy spilled to the
/// stack, so a length checked in one register and reloaded later is unbounded again (v6.1:
/// "math between map_value pointer and register with unbounded min value is not allowed").
#[inline(always)]
pub fn masked(i: usize) -> usize {
    core::hint::black_box(i) & MASK
}

/// Writes `len` bytes of `msg` starting at `from` to packet offset `off`; returns the offset
/// after them. Invalidates packet pointers.
#[inline(always)]
pub fn store_msg<R: Raw>(
    r: R,
    off: usize,
    msg: &Msg,
    from: usize,
    len: usize,
) -> Result<usize, i64> {
    if len == 0 {
        return Ok(off);
    }
    if len > BUF_SIZE {
        return Err(-1);
    }
    let size = verifier_size(len);
    // SAFETY: `from & MASK` + size <= 2 * BUF_SIZE, inside the scratch map value; the helper
    // checks the packet side.
    let e = r.store(
        off as u32,
        unsafe { msg.0.as_ptr().add(from & MASK) } as *const c_void,
        size as u32,
    );
    if e != 0 { Err(e) } else { Ok(off + size) }
}

/// Writes the first `len` bytes of a bracketed URI buffer to packet offset `off`.
/// Invalidates packet pointers.
#[inline(always)]
pub fn store_uri<R: Raw>(r: R, off: usize, text: &[u8; URI_BUF], len: usize) -> Result<usize, i64> {
    store_buf(r, off, text, len)
}

/// Writes the first `len` (1..=N) bytes of `text` to packet offset `off`. Invalidates packet
/// pointers.
#[inline(always)]
pub fn store_buf<R: Raw, const N: usize>(
    r: R,
    off: usize,
    text: &[u8; N],
    len: usize,
) -> Result<usize, i64> {
    // One compare of `len - 1` then `+ 1`: the verifier sees [1, URI_BUF] on the size register.
    // `len == 0 || len > URI_BUF` is the same test, but v6.1's verifier learns nothing on the
    // fall-through of `if len == 0` ("invalid access to map value … size=0"): that refinement
    // came in v6.8 (`regs_refine_cond_op`, BPF_JNE, "bpf: make the verifier tracks the "not
    // equal" for regs", Dec 2023). The `black_box` keeps LLVM from folding `- 1 … + 1` away.
    let m1 = core::hint::black_box(len.wrapping_sub(1));
    if m1 >= N {
        return Err(-1);
    }
    let size = m1 + 1;
    // `size` <= N, the length of `text`.
    let e = r.store(off as u32, text.as_ptr() as *const c_void, size as u32);
    if e != 0 { Err(e) } else { Ok(off + size) }
}

/// Grows or shrinks the packet to `len` bytes (new bytes are zero; a CHECKSUM_PARTIAL skb keeps
/// its csum_start/offset, a CHECKSUM_COMPLETE one becomes CHECKSUM_NONE; GSO state is reset,
/// which is why GSO packets never get here):
/// <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L3763-L3856>.
/// Invalidates packet pointers.
#[inline(always)]
pub fn change_tail(ctx: &TcContext, len: u32) -> Result<(), Stat> {
    // SAFETY: valid skb.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb, len, 0) } {
        0 => Ok(()),
        _ => Err(Stat::Error),
    }
}

/// One's-complement addition with end-around carry (RFC 1071), 32-bit accumulator.
#[inline(always)]
fn csum_add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u32
}

#[inline(always)]
fn csum_sub(a: u32, b: u32) -> u32 {
    csum_add(a, !b)
}

/// Folds to 16 bits (not inverted).
#[inline(always)]
fn fold(s: u32) -> u32 {
    let s = (s & 0xffff) + (s >> 16);
    (s & 0xffff) + (s >> 16)
}

/// Plain one's-complement sum of `size` bytes of `buf` from `start` (`size` rounded up to a
/// multiple of 4: the bytes after the region are summed too, callers account for them), in the
/// kernel's `__wsum` byte order, folded. `bpf_csum_diff` returns a 32-bit partial sum before
/// v6.13 and a folded one since (commit 6a4794d5a3e2); folding both makes them equal.
#[inline(always)]
fn sum(buf: &Msg, start: usize, size: usize) -> Result<u32, Stat> {
    let size = (size + 3) & !3;
    let mut acc = 0u32;
    for k in 0..BUF_SIZE / CSUM_CHUNK {
        let at = k * CSUM_CHUNK;
        if at >= size {
            break;
        }
        // black_box: the verifier must see the `min` (LLVM would prove it redundant and drop it).
        let chunk = core::hint::black_box(size - at).min(CSUM_CHUNK) & !3;
        // SAFETY: offset < BUF_SIZE and chunk <= CSUM_CHUNK: inside the scratch map value
        // (BUF_SIZE + 8 bytes per buffer, followed by more of the value).
        let r = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf.0.as_ptr().add((start + at) & MASK) as *mut u32,
                chunk as u32,
                0,
            )
        };
        if r < 0 {
            return Err(Stat::Error);
        }
        acc = csum_add(acc, fold(r as u32));
    }
    Ok(fold(acc))
}

/// `bpf_csum_diff` of `old_r` bytes of the message from `first` to `new_r` bytes of `out`
/// (multiples of 4, at most [`CSUM_CHUNK`] together): their sum's difference, new minus old,
/// folded (see [`sum`]).
#[inline(always)]
fn middle_diff(s: &Scratch, first: usize, old_r: usize, new_r: usize) -> Result<u32, Stat> {
    // black_box: the verifier needs the bounds on the very size registers.
    let old_r = core::hint::black_box(old_r).min(CSUM_CHUNK) & !3;
    let new_r = core::hint::black_box(new_r).min(CSUM_CHUNK) & !3;
    // SAFETY: offsets below BUF_SIZE and sizes at most CSUM_CHUNK: inside the scratch map
    // value, as for `sum`; the helper refuses more than CSUM_CHUNK in all before v6.13 and the
    // caller stays within it.
    let r = unsafe {
        bpf_csum_diff(
            s.msg.0.as_ptr().add(first & MASK) as *mut u32,
            old_r as u32,
            s.out.0.as_ptr() as *mut u32,
            new_r as u32,
            0,
        )
    };
    if r < 0 {
        return Err(Stat::Error);
    }
    Ok(fold(r as u32))
}

/// Contribution of the byte `b` at `offset` from an even position, in `__wsum` order
/// (little-endian 16-bit words: even offsets are the low byte).
#[inline(always)]
fn byte_sum(b: u8, offset: usize) -> u32 {
    if offset & 1 == 0 {
        b as u32
    } else {
        (b as u32) << 8
    }
}

/// Swaps the two bytes of a folded 16-bit sum: what a run of bytes contributes when it moves by
/// an odd number of positions.
#[inline(always)]
fn swap16(s: u32) -> u32 {
    ((s & 0xff) << 8) | ((s >> 8) & 0xff)
}

/// Checksum difference of the payload change: the old middle `msg[first..end]` became
/// `out[..new_mid]` (read back from the packet), and the tail `msg[end..n]` moved by `delta`.
/// `first` is even. An even move leaves the tail's contribution as it was; an odd one swaps its
/// bytes. So only the changed middle is summed, plus the tail for odd moves.
#[inline(always)]
fn diff(
    s: &Scratch,
    first: usize,
    end: usize,
    n: usize,
    new_mid: usize,
    delta: i32,
) -> Result<u32, Stat> {
    let old_mid = end - first;
    // What the rounding to 4 bytes adds past the old middle (tail bytes, or zeros): summed
    // with it, so added back to the difference.
    let mut extra = 0;
    for j in 0..3 {
        let at = old_mid + j;
        if at < (old_mid + 3) & !3 {
            extra = csum_add(extra, byte_sum(s.msg.byte(first + at), at));
        }
    }
    let (old_r, new_r) = ((old_mid + 3) & !3, (new_mid + 3) & !3);
    let mut d = if old_r + new_r <= CSUM_CHUNK {
        // Both middles in one call (the usual Contact line): new minus old.
        csum_add(middle_diff(s, first, old_r, new_r)?, extra)
    } else {
        let old = csum_sub(sum(&s.msg, first, old_mid)?, extra);
        let new = if new_mid > 0 {
            sum(&s.out, 0, new_mid)?
        } else {
            0
        };
        csum_sub(new, old)
    };
    if delta & 1 != 0 && n > end {
        let t0 = sum(&s.msg, end, n - end)?;
        let (was, now) = if (end - first) & 1 == 0 {
            (t0, swap16(t0))
        } else {
            (swap16(t0), t0)
        };
        d = csum_add(d, csum_sub(now, was));
    }
    Ok(fold(d))
}

/// Checksum difference of the whole payload change (`n` -> `new_n` bytes, first changed byte
/// at `first`, even): reads the new middle back from the packet into `s.out`, then [`diff`].
#[inline(always)]
pub fn payload_diff<R: Raw>(
    r: R,
    payload: usize,
    n: usize,
    new_n: usize,
    first: usize,
    s: &mut Scratch,
) -> Result<u32, Stat> {
    let delta = new_n as i32 - n as i32;
    // The middle: from the first changed byte to the end of the last edit, before and after.
    let end =
        s.scan.edits[(s.scan.n_edits as usize).wrapping_sub(1) & (MAX_EDITS - 1)].end as usize;
    if end < first || end > n {
        return Err(Stat::Error);
    }
    let new_mid = ((end - first) as i32 + delta) as usize;
    if new_mid > BUF_SIZE - 8 {
        return Err(Stat::Error);
    }
    if new_mid > 0 {
        let size = verifier_size(new_mid);
        // size <= BUF_SIZE, and the destination holds BUF_SIZE + 8 bytes.
        if r.load(
            (payload + first) as u32,
            s.out.0.as_mut_ptr() as *mut c_void,
            size as u32,
        ) != 0
        {
            return Err(Stat::Error);
        }
    }
    // black_box: keep the mask, whose bound the verifier needs, from being folded away.
    let pad = core::hint::black_box(new_mid);
    for i in 0..4 {
        s.out.0[(pad + i) & MASK] = 0;
    }
    diff(s, first, end, n, new_mid, delta)
}

/// Whether the UDP checksum of a candidate verifies: the pseudo-header, the UDP header and the
/// payload (from its scratch copy, zero-padded past `n`) sum to 0xffff. An IPv4 datagram
/// without checksum (0) counts as verified: there is nothing to keep right.
#[inline(always)]
pub fn udp_checksum_verifies<P: Pkt>(
    p: &P,
    f: &Frame,
    n: usize,
    s: &Scratch,
) -> Result<bool, Stat> {
    let hdr: [u32; 2] = p.load(f.udp)?;
    let check: u16 = p.load(f.udp + core::mem::offset_of!(UdpHdr, check))?;
    if !f.v6 && check == 0 {
        return Ok(true);
    }
    let mut acc = csum_add(sum(&s.msg, 0, n)?, csum_add(hdr[0], hdr[1]));
    if f.v6 {
        let a: [u32; 8] = p.load(f.l3 + core::mem::offset_of!(Ipv6Hdr, src_addr))?;
        for w in a {
            acc = csum_add(acc, w);
        }
    } else {
        let a: [u32; 2] = p.load(f.l3 + core::mem::offset_of!(Ipv4Hdr, src_addr))?;
        acc = csum_add(acc, csum_add(a[0], a[1]));
    }
    // Protocol and UDP length, as 16-bit network-order words read natively.
    let proto = (IpProto::Udp as u16).to_be() as u32;
    let len = ((n + UdpHdr::LEN) as u16).to_be() as u32;
    Ok(fold(csum_add(acc, csum_add(proto, len))) == 0xffff)
}

/// The size part of a csum_replace helper's flags (`BPF_F_HDR_FIELD_MASK`, include/uapi/linux/bpf.h
/// v6.18): 0 when `to` is a checksum difference, else the changed field's width in bytes.
const CSUM_SIZE: u64 = 0xf;
/// The width argument for a 16-bit field.
const FIELD_16: u64 = core::mem::size_of::<u16>() as u64;
/// What a computed UDP checksum of 0 is sent as (RFC 768; `CSUM_MANGLED_0`,
/// include/net/checksum.h v6.18).
const CSUM_MANGLED_0: u16 = 0xffff;

/// The XDP form of `bpf_l4_csum_replace` (no such helper takes an
/// `xdp_md`), after cilium's `bpf/include/bpf/ctx/xdp.h`: RFC 1624 eqn. 3,
/// `HC' = ~(~HC + m' - m)`. The field is read and written with the XDP byte helpers, not
/// through a packet pointer: direct access at the variable UDP offset doubled the restore's
/// verifier cost (v6.18: 245 277 -> 487 921 processed insns). `BPF_F_PSEUDO_HDR` changes nothing: a frame
/// on the wire carries a full checksum (frames that may not are handed to TC, see
/// `Pkt::checksum_updatable`). Invalidates packet pointers.
#[inline(always)]
pub fn replace_xdp<P: Pkt>(p: &P, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Stat> {
    let old: u16 = p.load(off)?;
    let mangled0 = flags & BPF_F_MARK_MANGLED_0 as u64 != 0;
    if mangled0 && old == 0 {
        return Ok(());
    }
    let d = if flags & CSUM_SIZE == 0 {
        to
    } else {
        csum_sub(to, from)
    };
    let mut new = !fold(csum_add(!old as u32 & 0xffff, d)) as u16;
    if mangled0 && new == 0 {
        new = CSUM_MANGLED_0;
    }
    p.store(off, &new)
}

/// Where [`HdrBlock::ip`] starts in the frame: the IP length field (IPv4 `tot_len`, IPv6
/// `payload_len`).
#[inline(always)]
fn ip_part_at(f: &Frame) -> usize {
    f.l3 + if f.v6 {
        core::mem::offset_of!(Ipv6Hdr, payload_len)
    } else {
        core::mem::offset_of!(Ipv4Hdr, tot_len)
    }
}

/// Where the IPv4 header checksum is in [`HdrBlock::ip`] (which starts at `tot_len`).
const IPV4_CHECK_IN_PART: usize =
    core::mem::offset_of!(Ipv4Hdr, check) - core::mem::offset_of!(Ipv4Hdr, tot_len);

/// Loads the header fields the write stage changes into `s.hdr_old` (two loads), for
/// [`fix_lengths_and_checksums`] and [`store_headers`].
#[inline(always)]
pub fn load_headers<R: Raw>(r: R, f: &Frame, s: &mut Scratch) -> Result<(), Stat> {
    let ip = r.load(
        ip_part_at(f) as u32,
        s.hdr_old.ip.as_mut_ptr() as *mut c_void,
        IP_PART as u32,
    );
    let udp = r.load(
        f.udp as u32,
        s.hdr_old.udp.as_mut_ptr() as *mut c_void,
        UdpHdr::LEN as u32,
    );
    if ip != 0 || udp != 0 {
        return Err(Stat::Error);
    }
    Ok(())
}

/// Writes the header fields as they came (`s.hdr_old`) back, to undo a rewrite. Invalidates
/// packet pointers.
#[inline(always)]
pub fn store_headers<R: Raw>(r: R, f: &Frame, s: &Scratch) -> Result<(), Stat> {
    let ip = r.store(
        ip_part_at(f) as u32,
        s.hdr_old.ip.as_ptr() as *const c_void,
        IP_PART as u32,
    );
    let udp = r.store(
        f.udp as u32,
        s.hdr_old.udp.as_ptr() as *const c_void,
        UdpHdr::LEN as u32,
    );
    if ip != 0 || udp != 0 {
        return Err(Stat::Error);
    }
    Ok(())
}

/// The 16-bit field at `at` of `b`, as stored (network order, read natively).
#[inline(always)]
fn get16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// Sets the 16-bit field at `at` of `b` to `v` (network order, as read by [`get16`]).
#[inline(always)]
fn put16<const N: usize>(b: &mut [u8; N], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// After the payload changed from `n` to `new_n` bytes (first changed byte at `first`, even):
/// the UDP checksum with the checksum primitive of [`Pkt`] (TC: the kernel's helper; XDP:
/// [`replace_xdp`]); the UDP length and the IP length stored, the IPv4 header checksum computed
/// here from the fields [`load_headers`] loaded (no `bpf_l3_csum_replace`, and no load of the
/// old length). Invalidates packet pointers.
#[inline(always)]
pub fn fix_lengths_and_checksums<P: Pkt>(
    p: &P,
    f: &Frame,
    payload: usize,
    n: usize,
    new_n: usize,
    first: usize,
    s: &mut Scratch,
) -> Result<(), Stat> {
    let (udp, v6) = (f.udp, f.v6);
    let d = payload_diff(p.raw(), payload, n, new_n, first, s)?;

    let csum_off = udp + core::mem::offset_of!(UdpHdr, check);
    // UDP over IPv4 and IPv6 alike: 0 is "no checksum" (IPv6: not allowed, so never seen), a
    // computed 0 goes out as 0xffff (cilium's `csum_l4_offset_and_flags` does the same).
    let mangled0 = BPF_F_MARK_MANGLED_0 as u64;
    let old_ulen = ((n + UdpHdr::LEN) as u16).to_be();
    let new_ulen = ((new_n + UdpHdr::LEN) as u16).to_be();
    // Payload bytes and the UDP length field itself, in one difference: full checksum only (a
    // no-op on CHECKSUM_PARTIAL, where the device sums header and payload). The field is
    // 16-bit aligned, and the __wsum of its bytes is their little-endian load, which is the
    // `to_be()` value read natively.
    let len_d = csum_sub(new_ulen as u32, old_ulen as u32);
    let d = fold(csum_add(d, len_d));
    if P::PSEUDO_APART {
        if d != 0 && d != 0xffff {
            p.l4_csum_replace(csum_off, 0, d, mangled0)?;
        }
        // UDP length as counted in the pseudo-header (both checksum modes).
        p.l4_csum_replace(
            csum_off,
            old_ulen as u32,
            new_ulen as u32,
            BPF_F_PSEUDO_HDR as u64 | mangled0 | FIELD_16,
        )?;
    } else {
        // Full checksum only: the pseudo-header's copy of the length joins the difference, one
        // update instead of two.
        p.l4_csum_replace(csum_off, 0, fold(csum_add(d, len_d)), mangled0)?;
    }

    p.store(udp + core::mem::offset_of!(UdpHdr, len), &new_ulen)?;
    if v6 {
        // With no extension headers (see `frame::candidate`), the UDP length.
        p.store(
            f.l3 + core::mem::offset_of!(Ipv6Hdr, payload_len),
            &new_ulen,
        )?;
    } else {
        let old = &s.hdr_old;
        let old_tot = get16(&old.ip, 0);
        let new_tot = ((u16::from_be(old_tot) as i32 + new_n as i32 - n as i32) as u16).to_be();
        // RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), as the kernel's `csum_replace2()` does for
        // `bpf_l3_csum_replace` (include/net/checksum.h, v6.18). Three 16-bit terms: no carry
        // out of 32 bits.
        let sum = (!get16(&old.ip, IPV4_CHECK_IN_PART)) as u32 + (!old_tot) as u32 + new_tot as u32;
        let check = !fold(sum) as u16;
        // Both fields in one store: the loaded IP part with them replaced (the bytes between
        // them, id to protocol, go back as they were).
        let mut ip = [0u8; IP_PART];
        ip.copy_from_slice(&old.ip[..IP_PART]);
        put16(&mut ip, 0, new_tot);
        put16(&mut ip, IPV4_CHECK_IN_PART, check);
        p.store(ip_part_at(f), &ip)?;
    }
    Ok(())
}
