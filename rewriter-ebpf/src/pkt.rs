//! The two packet kinds the programs edit, behind one interface: TC's `__sk_buff` and XDP's
//! `xdp_md`. The SIP logic, the write stage and the checksum arithmetic are shared; only the
//! helpers that read, write and resize differ.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{
        bpf_skb_load_bytes, bpf_skb_store_bytes, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    programs::{TcContext, XdpContext},
};
use rewriter_common::{Scratch, Stat};

use crate::frame::Frame;

/// A raw context pointer that `bpf_loop` callbacks can carry.
pub trait Raw: Copy {
    /// Writes `len` bytes from `src` at packet offset `off`; 0 or a negative error.
    /// Invalidates packet pointers.
    fn store(self, off: u32, src: *const c_void, len: u32) -> i64;
    /// Reads `len` bytes at packet offset `off` into `dst`; 0 or a negative error.
    fn load(self, off: u32, dst: *mut c_void, len: u32) -> i64;
}

impl Raw for *mut __sk_buff {
    #[inline(always)]
    fn store(self, off: u32, src: *const c_void, len: u32) -> i64 {
        // SAFETY: a valid skb; the caller vouches for `src..src + len`.
        unsafe { bpf_skb_store_bytes(self, off, src, len, 0) }
    }

    #[inline(always)]
    fn load(self, off: u32, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: as above for `dst`.
        unsafe { bpf_skb_load_bytes(self as *const c_void, off, dst, len) }
    }
}

/// `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes`: v5.18, commit 3f364222d032
/// <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L4072-L4134>.
impl Raw for *mut xdp_md {
    #[inline(always)]
    fn store(self, off: u32, src: *const c_void, len: u32) -> i64 {
        // SAFETY: a valid xdp_md; the caller vouches for `src..src + len` (read only).
        unsafe { bpf_xdp_store_bytes(self, off, src as *mut c_void, len) }
    }

    #[inline(always)]
    fn load(self, off: u32, dst: *mut c_void, len: u32) -> i64 {
        // SAFETY: as above for `dst`.
        unsafe { bpf_xdp_load_bytes(self, off, dst, len) }
    }
}

/// A program context.
pub trait Pkt {
    type R: Raw;
    fn raw(&self) -> Self::R;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Packet length from the Ethernet header on.
    fn len(&self) -> u32;
    /// Grows (zero bytes) or shrinks the packet to `len`. Invalidates packet pointers.
    fn resize(&self, len: u32) -> Result<(), Stat>;

    /// Whether the pseudo-header part of an L4 checksum change must be applied apart from the
    /// rest (TC: a CHECKSUM_PARTIAL skb takes only that part, see `crate::csum`); XDP frames
    /// carry full checksums, so one combined update does.
    const PSEUDO_APART: bool;

    /// `bpf_l4_csum_replace`: updates the 16-bit L4 checksum at `off` for a 16- or 32-bit
    /// field that changed from `from` to `to` (`flags & CSUM_SIZE` 2 or 4), or by the checksum
    /// difference `to` (size 0, `from` 0); `BPF_F_PSEUDO_HDR` marks a change of a field the
    /// pseudo-header holds, `BPF_F_MARK_MANGLED_0` a UDP checksum (0 stays 0: none; a computed
    /// 0 is written as 0xffff). Invalidates packet pointers.
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Stat>;

    /// Whether this is a GSO packet (several datagrams' worth; resizing would drop its GSO
    /// state).
    #[inline(always)]
    fn is_gso(&self) -> bool {
        false
    }

    /// Whether the frame may grow by `delta` bytes past what the device takes (MTU).
    #[inline(always)]
    fn fits_mtu(&self, _delta: i32) -> bool {
        true
    }

    /// Whether the UDP checksum field can be updated incrementally here (see `XdpContext`).
    #[inline(always)]
    fn checksum_updatable(&self, _f: &Frame, _n: usize, _s: &Scratch) -> Result<bool, Stat> {
        Ok(true)
    }

    /// Before an edit that keeps the length: makes sure no receive checksum computed by the
    /// device over the old bytes stays attached to the packet. Invalidates packet pointers.
    #[inline(always)]
    fn forget_rx_checksum(&self) -> Result<(), Stat> {
        Ok(())
    }

    /// A copy of the `T` at packet offset `off`.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, Stat> {
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        if self.raw().load(
            off as u32,
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
        ) != 0
        {
            return Err(Stat::Error);
        }
        // SAFETY: the helper filled all of it; callers use plain-integer `T`s.
        Ok(unsafe { v.assume_init() })
    }

    /// Writes `v` at packet offset `off`. Invalidates packet pointers.
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result<(), Stat> {
        match self.raw().store(
            off as u32,
            v as *const T as *const c_void,
            core::mem::size_of::<T>() as u32,
        ) {
            0 => Ok(()),
            _ => Err(Stat::Error),
        }
    }
}

impl Pkt for TcContext {
    type R = *mut __sk_buff;
    const PSEUDO_APART: bool = true;

    #[inline(always)]
    fn raw(&self) -> Self::R {
        self.skb.skb
    }

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    #[inline(always)]
    fn resize(&self, len: u32) -> Result<(), Stat> {
        crate::csum::change_tail(self, len)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Stat> {
        TcContext::l4_csum_replace(self, off, from as u64, to as u64, flags)
            .map_err(|_| Stat::Error)
    }

    /// `__sk_buff.gso_size` is readable since v5.7 (commit cf62089b0edd).
    #[inline(always)]
    fn is_gso(&self) -> bool {
        // SAFETY: `self.skb.skb` is the program's valid `__sk_buff`.
        unsafe { (*self.skb.skb).gso_size != 0 }
    }

    /// `bpf_check_mtu` with ifindex 0 (the skb's device) compares skb->len + delta with MTU +
    /// L2 header: <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L6379-L6432>.
    #[inline(always)]
    fn fits_mtu(&self, delta: i32) -> bool {
        let mut mtu: u32 = 0;
        // SAFETY: valid skb and out-pointer.
        unsafe {
            aya_ebpf::helpers::generated::bpf_check_mtu(
                self.skb.skb as *mut c_void,
                0,
                &mut mtu,
                delta,
                0,
            ) == 0
        }
    }

    /// A received skb may be CHECKSUM_COMPLETE (`skb->csum` = the device's sum of the bytes);
    /// the stores do not update it, and a stale one makes the stack re-verify in software and
    /// report a "hw csum failure". Resizing turns COMPLETE into CHECKSUM_NONE (v6.18
    /// include/linux/skbuff.h, `__skb_grow_rcsum` and `__skb_trim_rcsum`, used by
    /// `bpf_skb_change_tail`), so edits that change the length are covered; one that keeps it
    /// grows by one byte and shrinks back.
    #[inline(always)]
    fn forget_rx_checksum(&self) -> Result<(), Stat> {
        let len = TcContext::len(self);
        crate::csum::change_tail(self, len + 1)?;
        crate::csum::change_tail(self, len)
    }
}

impl Pkt for XdpContext {
    type R = *mut xdp_md;
    const PSEUDO_APART: bool = false;

    #[inline(always)]
    fn raw(&self) -> Self::R {
        self.ctx
    }

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    /// Linear frames only: the program is not frags-aware, so the kernel never hands it a
    /// multi-buffer frame.
    #[inline(always)]
    fn len(&self) -> u32 {
        // black_box: LLVM would otherwise fold `x - (end - data)` into arithmetic on the
        // `pkt_end` pointer, which the verifier prohibits.
        core::hint::black_box((XdpContext::data_end(self) - XdpContext::data(self)) as u32)
    }

    /// XDP cannot see `ip_summed`: a frame from a local sender with checksum offload (veth,
    /// generic XDP) holds only the pseudo-header seed in its UDP checksum field
    /// (CHECKSUM_PARTIAL), which an incremental full-checksum update would spoil for any later
    /// hop. So XDP edits only frames whose checksum verifies (or IPv4 ones without checksum);
    /// the others go to TC, whose checksum helpers know the skb's mode.
    #[inline(always)]
    fn checksum_updatable(&self, f: &Frame, n: usize, s: &Scratch) -> Result<bool, Stat> {
        crate::csum::udp_checksum_verifies(self, f, n, s)
    }

    /// `bpf_xdp_adjust_tail` grows only into the tailroom the driver reserved (`frame_sz`),
    /// else -EINVAL, and zeroes the new bytes:
    /// <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L4230-L4256>. On veth
    /// and in generic XDP that tailroom is the skb's, which can be nil
    /// (<https://github.com/torvalds/linux/blob/v6.18/drivers/net/veth.c#L764-L766>).
    #[inline(always)]
    fn resize(&self, len: u32) -> Result<(), Stat> {
        let delta = len as i32 - Pkt::len(self) as i32;
        // SAFETY: a valid xdp_md.
        match unsafe { bpf_xdp_adjust_tail(self.ctx, delta) } {
            0 => Ok(()),
            _ if delta > 0 => Err(Stat::ToTc),
            _ => Err(Stat::Error),
        }
    }

    /// XDP has no checksum helpers: RFC 1624 in code, see [`crate::csum::replace_xdp`].
    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Stat> {
        crate::csum::replace_xdp(self, off, from, to, flags)
    }
}
