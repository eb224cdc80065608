//! Packet surgery: one helper per step (store bytes, resize, fix lengths and checksums).
//!
//! Every function here may move or reallocate packet data, so each one invalidates packet
//! pointers (`ctx.data()`): callers re-derive them rather than keep any across a call.
//!
//! Checksum model (kernel v6.18, net/core/utils.c `inet_proto_csum_replace*`):
//! `bpf_l4_csum_replace` on a CHECKSUM_PARTIAL skb (locally generated, offloaded) only touches
//! the field when `BPF_F_PSEUDO_HDR` is given, because the field then holds the pseudo-header
//! sum and the device sums header and payload itself; on any other skb it updates the full
//! checksum. So we always issue the three updates below and the kernel applies exactly the
//! ones that matter for the skb at hand.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, __sk_buff},
    helpers::generated::{bpf_csum_diff, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes},
    programs::TcContext,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use rewriter_common::{
    Scratch, Stat, URI_BUF,
    sip::{BUF_SIZE, Msg},
};

const MASK: usize = BUF_SIZE - 1;
/// Bytes summed per `bpf_csum_diff` call: the helper refused more than 512 bytes per call
/// (from + to) before v6.13 (commit 6a4794d5a3e2 "bpf: bpf_csum_diff: optimize and homogenize for
/// all archs"); staying under it keeps older kernels working.
const CSUM_CHUNK: usize = 512;

/// `len` (1..=BUF_SIZE) computed so that the verifier sees the bounds [1, BUF_SIZE] on the very
/// register passed as a helper's size. Without the `black_box`, LLVM folds the expression back
/// to `len`, whose lower bound the verifier lost in an earlier compare ("invalid zero-sized
/// read", kernel/bpf/verifier.c `check_mem_size_reg`).
#[inline(always)]
pub fn verifier_size(len: usize) -> usize {
    ((core::hint::black_box(len) - 1) & MASK) + 1
}

/// Writes `len` bytes of `msg` starting at `from` to packet offset `off`; returns the offset
/// after them. Invalidates packet pointers.
#[inline(always)]
pub fn store_msg(ctx: &TcContext, off: usize, msg: &Msg, from: usize, len: usize) -> Result<usize, i64> {
    store_msg_raw(ctx.skb.skb, off, msg, from, len)
}

/// [`store_msg`] on a raw skb pointer (for `bpf_loop` callbacks). Invalidates packet pointers.
#[inline(always)]
pub fn store_msg_raw(skb: *mut __sk_buff, off: usize, msg: &Msg, from: usize, len: usize) -> Result<usize, i64> {
    if len == 0 {
        return Ok(off);
    }
    if len > BUF_SIZE {
        return Err(-1);
    }
    let size = verifier_size(len);
    // SAFETY: `from & MASK` + size <= 2 * BUF_SIZE, inside the scratch map value; the helper
    // checks the packet side.
    let r = unsafe {
        bpf_skb_store_bytes(
            skb,
            off as u32,
            msg.0.as_ptr().add(from & MASK) as *const c_void,
            size as u32,
            0,
        )
    };
    if r != 0 { Err(r) } else { Ok(off + size) }
}

/// Writes the first `len` bytes of a bracketed URI buffer to packet offset `off` (raw skb
/// pointer, for `bpf_loop` callbacks).
/// Invalidates packet pointers.
#[inline(always)]
pub fn store_uri_raw(skb: *mut __sk_buff, off: usize, text: &[u8; URI_BUF], len: usize) -> Result<usize, i64> {
    if len == 0 || len > URI_BUF {
        return Err(-1);
    }
    // SAFETY: size <= URI_BUF, the length of `text`.
    let r = unsafe { bpf_skb_store_bytes(skb, off as u32, text.as_ptr() as *const c_void, len as u32, 0) };
    if r != 0 { Err(r) } else { Ok(off + len) }
}

/// Grows or shrinks the packet to `len` bytes (new bytes are zero). Invalidates packet pointers.
#[inline(always)]
pub fn change_tail(ctx: &TcContext, len: u32) -> Result<(), Stat> {
    // SAFETY: valid skb.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb, len, 0) } {
        0 => Ok(()),
        _ => Err(Stat::Error),
    }
}

/// Checksum difference between `old[first..first+old_len]` and `new[..new_len]`, both
/// zero-padded to a multiple of 4 bytes, summed in chunks of `CSUM_CHUNK`.
#[inline(always)]
fn diff(s: &Scratch, first: usize, old_len: usize, new_len: usize) -> Result<i64, Stat> {
    let mut seed: i64 = 0;
    let old_len = (old_len + 3) & !3;
    let new_len = (new_len + 3) & !3;
    for k in 0..BUF_SIZE / CSUM_CHUNK {
        let at = k * CSUM_CHUNK;
        if at < old_len {
            let size = (old_len - at).min(CSUM_CHUNK) & (CSUM_CHUNK - 1 + CSUM_CHUNK) & !3;
            // SAFETY: offset < BUF_SIZE, size <= CSUM_CHUNK: inside the scratch value.
            seed = unsafe {
                bpf_csum_diff(
                    s.msg.0.as_ptr().add((first + at) & MASK) as *mut u32,
                    size as u32,
                    core::ptr::null_mut(),
                    0,
                    seed as u32,
                )
            };
            if seed < 0 {
                return Err(Stat::Error);
            }
        }
        if at < new_len {
            let size = (new_len - at).min(CSUM_CHUNK) & (CSUM_CHUNK - 1 + CSUM_CHUNK) & !3;
            // SAFETY: as above, in the `out` buffer.
            seed = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    s.out.0.as_ptr().add(at & MASK) as *mut u32,
                    size as u32,
                    seed as u32,
                )
            };
            if seed < 0 {
                return Err(Stat::Error);
            }
        }
    }
    Ok(seed)
}

/// After the payload changed from `n` to `new_n` bytes (first changed byte at `first`, even):
/// UDP checksum, UDP length, IP length (and IPv4 header checksum). Invalidates packet pointers.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "the frame layout, spelled out")]
pub fn fix_lengths_and_checksums(
    ctx: &TcContext,
    l3: usize,
    udp: usize,
    v6: bool,
    payload: usize,
    n: usize,
    new_n: usize,
    first: usize,
    s: &mut Scratch,
) -> Result<(), Stat> {
    let skb = ctx.skb.skb as *mut c_void;
    let new_region = new_n - first;
    if new_region == 0 || new_region > BUF_SIZE - 8 {
        return Err(Stat::Error);
    }
    let size = verifier_size(new_region);
    // SAFETY: size <= BUF_SIZE, the destination holds BUF_SIZE + 8 bytes.
    if unsafe { bpf_skb_load_bytes(skb, (payload + first) as u32, s.out.0.as_mut_ptr() as *mut c_void, size as u32) } != 0 {
        return Err(Stat::Error);
    }
    for i in 0..4 {
        s.out.0[(size + i) & MASK] = 0;
    }
    let d = diff(s, first, n - first, size)?;

    let csum_off = (udp + core::mem::offset_of!(UdpHdr, check)) as u32;
    let mangled0 = if v6 { 0 } else { BPF_F_MARK_MANGLED_0 as u64 };
    let old_ulen = ((n + UdpHdr::LEN) as u16).to_be();
    let new_ulen = ((new_n + UdpHdr::LEN) as u16).to_be();
    // Payload bytes: full checksum only (a no-op on CHECKSUM_PARTIAL).
    ctx.l4_csum_replace(csum_off as usize, 0, d as u64, mangled0).map_err(|_| Stat::Error)?;
    // UDP length as counted in the pseudo-header.
    ctx.l4_csum_replace(csum_off as usize, old_ulen as u64, new_ulen as u64, BPF_F_PSEUDO_HDR as u64 | mangled0 | 2)
        .map_err(|_| Stat::Error)?;
    // UDP length as the header field itself (a no-op on CHECKSUM_PARTIAL).
    ctx.l4_csum_replace(csum_off as usize, old_ulen as u64, new_ulen as u64, mangled0 | 2)
        .map_err(|_| Stat::Error)?;
    ctx.store(udp + core::mem::offset_of!(UdpHdr, len), &new_ulen, 0).map_err(|_| Stat::Error)?;

    if v6 {
        ctx.store(l3 + core::mem::offset_of!(Ipv6Hdr, payload_len), &new_ulen, 0).map_err(|_| Stat::Error)?;
    } else {
        let tot_off = l3 + core::mem::offset_of!(Ipv4Hdr, tot_len);
        let old_tot: u16 = ctx.load(tot_off).map_err(|_| Stat::Error)?;
        let new_tot = (u16::from_be(old_tot) as i32 + new_n as i32 - n as i32) as u16;
        let new_tot = new_tot.to_be();
        ctx.store(tot_off, &new_tot, 0).map_err(|_| Stat::Error)?;
        ctx.l3_csum_replace(l3 + core::mem::offset_of!(Ipv4Hdr, check), old_tot as u64, new_tot as u64, 2)
            .map_err(|_| Stat::Error)?;
    }
    Ok(())
}
