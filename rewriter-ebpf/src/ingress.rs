//! Ingress restore: Genesys' 2xx response to a REGISTER gets the client's own Contact URI(s)
//! back (see `rewriter_common::restore`), so that a WebRTC client such as JsSIP, which ignores
//! a 200 OK listing no Contact of its own, sees itself registered.
//!
//! Two hooks run the same code: XDP (`sip_restore_xdp`, the earliest point a frame can be
//! edited) and TC ingress (`sip_restore_tc`: alone, or behind XDP for the frames XDP hands
//! over). Both fail open like the egress program: the verdict is always "pass", anything not
//! understood leaves byte-identical and is counted.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_xdp_adjust_meta,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::info;
use rewriter_common::{
    CFG_TC_AFTER_XDP, Config, Scratch, Stat, URI_BUF, XDP_HANDOFF,
    restore::{MAX_ORIGINALS, select_edit, stat_for_response},
    sip::{Edit, MAX_EDITS, MAX_SIP_LEN, Outcome},
};

use crate::{
    Verdict, csum,
    frame::{candidate, sip_payload},
    maps::{REGS, add, config, count, log_worthy, read},
    pkt::{Pkt, Raw},
    scan::{LOOP_GO_ON, LOOP_STOP, loop_ctx, run_loop, run_scan},
    splice::splice,
};

/// Bytes of XDP metadata the hand-off takes: one [`XDP_HANDOFF`] word.
const HANDOFF_LEN: usize = core::mem::size_of::<u32>();

/// The XDP restore's work; the verdict is always "pass". A frame that needs to grow where the
/// driver left no tailroom, or whose checksum XDP cannot update, is handed to the TC ingress
/// restore (attached behind it) through the XDP metadata.
#[inline(always)]
pub fn sip_restore_xdp(ctx: &XdpContext) {
    let Some(cfg) = config() else {
        finish(ctx, Err(Stat::Error));
        return;
    };
    let r = try_restore(ctx, cfg, true);
    if r == Err(Stat::ToTc) && !hand_off(ctx) {
        // No metadata support: TC would not know the frame; it stays as it came.
        finish(ctx, Err(Stat::Error));
        return;
    }
    finish(ctx, r);
}

/// The TC ingress restore's work: on its own (`--ingress tc`), or behind XDP for the frames XDP
/// handed over (`CFG_TC_AFTER_XDP`). The verdict is always "pass".
#[inline(always)]
pub fn sip_restore_tc(ctx: &TcContext) {
    let Some(cfg) = config() else {
        finish(ctx, Err(Stat::Error));
        return;
    };
    let after_xdp = cfg.flags & CFG_TC_AFTER_XDP != 0;
    if after_xdp && !handed_off(ctx) {
        return;
    }
    let r = try_restore(ctx, cfg, !after_xdp);
    finish(ctx, r);
}

/// Marks the frame for the TC restore: 4 bytes of XDP metadata holding [`XDP_HANDOFF`]. The
/// kernel hands XDP metadata on to the skb on XDP_PASS (`skb_metadata_set`: generic XDP,
/// <https://github.com/torvalds/linux/blob/v6.18/net/core/dev.c#L5412-L5416>, veth,
/// <https://github.com/torvalds/linux/blob/v6.18/drivers/net/veth.c#L879-L881>, and drivers that
/// support metadata), where TC reads it at `__sk_buff.data_meta`. Where the driver has no
/// metadata support `bpf_xdp_adjust_meta` fails (-ENOTSUPP,
/// <https://github.com/torvalds/linux/blob/v6.18/net/core/filter.c#L4266-L4283>) and the frame
/// stays unrestored (counted as `error`).
#[inline(always)]
fn hand_off(ctx: &XdpContext) -> bool {
    // SAFETY: a valid xdp_md; a negative delta asks for metadata in front of the data.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(HANDOFF_LEN as i32)) } != 0 {
        return false;
    }
    let (meta, data) = (ctx.metadata(), ctx.data());
    if meta + HANDOFF_LEN > data {
        return false;
    }
    // SAFETY: bounds checked against `data` just above (the verifier checks the same).
    unsafe { core::ptr::write_unaligned(meta as *mut u32, XDP_HANDOFF) };
    true
}

/// Whether the XDP restore handed this skb over (see [`hand_off`]).
#[inline(always)]
fn handed_off(ctx: &TcContext) -> bool {
    // SAFETY: `ctx.skb.skb` is the program's valid `__sk_buff`; `data_meta` since v4.15
    // (commit de8f3a83b0a0).
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + HANDOFF_LEN > data {
        return false;
    }
    // SAFETY: bounds checked against `data` just above.
    unsafe { core::ptr::read_unaligned(meta as *const u32) == XDP_HANDOFF }
}

#[inline(always)]
fn finish<P: Pkt + EbpfContext>(ctx: &P, r: Verdict) {
    if let Err(stat) = r {
        count(stat);
        if stat as u32 == Stat::ToTc as u32 {
            let n = read(Stat::ToTc);
            if log_worthy(n) {
                info!(
                    ctx,
                    "XDP handed a 2xx to REGISTER to the TC ingress restore (#{} on this CPU): no tailroom or a checksum XDP cannot update",
                    n
                );
            }
        }
    }
}

#[inline(always)]
fn try_restore<P: Pkt + EbpfContext>(ctx: &P, cfg: &Config, first_look: bool) -> Verdict {
    let Some(f) = candidate(ctx, cfg, true) else {
        return Ok(());
    };
    let f = f?;
    // A frame XDP handed over was counted there already.
    if first_look {
        add(Stat::Responses, 1);
    }
    if ctx.is_gso() {
        return Err(Stat::TooBig);
    }
    let (payload, n, s) = sip_payload(ctx, &f, b"SIP/2.0 ", Stat::RespOther)?;
    s.scan.reset(n);
    run_scan::<true>(s, cfg);
    let outcome = s.scan.outcome();
    if outcome != Outcome::Rewrite {
        return Err(stat_for_response(outcome));
    }
    if !s.reg_key.fill(&s.msg, &s.scan) {
        return Err(Stat::NoState);
    }
    let st = REGS.get_ptr(&s.reg_key).ok_or(Stat::NoState)?;
    // Snapshot: the egress may update the entry on another CPU while this runs; sizing and
    // writing must see one version. LRU elements are reused without a grace period: the
    // record must still be this key's and unchanged after the copy, else it is not used.
    // SAFETY: a map value, valid and 8-aligned for the run.
    let consistent = unsafe { s.reg.snapshot(st) };
    if !consistent
        || s.reg.n == 0
        || s.reg.n as usize > MAX_ORIGINALS
        || s.reg.key_check != s.reg_key.check()
    {
        return Err(Stat::NoState);
    }
    // Only the registrar the REGISTER went to answers it: a 2xx from anywhere else (any host
    // that can send from the Genesys port when no address set is configured) is not restored.
    if !s.reg.peer.same(&f.peer) {
        return Err(Stat::WrongSource);
    }
    s.write.kept = 0;
    s.write.grow = 0;
    s.write.shrink = 0;
    s.write.orig_total = s.reg.orig_total() as u32;
    run_loop(MAX_EDITS as u32, select_cb, s, cfg, ());
    let kept = s.write.kept;
    if kept == 0 {
        return Err(Stat::NoMatch);
    }
    s.scan.n_edits = kept;
    let new_n = (n + s.write.grow as usize).wrapping_sub(s.write.shrink as usize);
    if new_n > MAX_SIP_LEN || new_n == 0 {
        return Err(Stat::TooBig);
    }
    if new_n > n && !ctx.fits_mtu((new_n - n) as i32) {
        return Err(Stat::TooBig);
    }
    if !ctx.checksum_updatable(&f, n, s)? {
        return Err(Stat::ToTc);
    }
    splice::<P, true>(ctx, cfg, &f, payload, n, new_n, s)?;
    count(Stat::Restored);
    let total = add(Stat::RestoredContacts, kept as u64);
    let done = read(Stat::Restored);
    if log_worthy(done) {
        info!(
            ctx,
            "restored 2xx to REGISTER #{} on this CPU: {} contact(s), {} -> {} bytes, {} so far",
            done,
            kept,
            n,
            new_n,
            total
        );
    }
    Ok(())
}

/// Keeps response edit `index` if its URI is the one the egress wrote (one edit per
/// `bpf_loop` iteration); sums what the kept ones add and remove.
#[inline(never)]
extern "C" fn select_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    let k = index as usize;
    if k >= s.scan.n_edits as usize {
        return LOOP_STOP;
    }
    select_edit(&mut s.scan, &s.msg, &s.reg, k, &mut s.write);
    LOOP_GO_ON
}

/// Writes one restored element: the original bytes since the previous edit, then the
/// originals, each but the last followed by the element's parameters and `, `. Returns the
/// packet offset after it. Invalidates packet pointers.
#[inline(always)]
pub fn restore_edit<R: Raw>(r: R, s: &Scratch, e: &Edit, from: usize) -> Result<usize, i64> {
    let start = e.start as usize;
    let mut out = csum::store_msg(
        r,
        s.write.out as usize,
        &s.msg,
        from,
        start.wrapping_sub(from),
    )?;
    let n = s.reg.n as usize;
    let sep = *CONTACT_SEPARATOR;
    for i in 0..MAX_ORIGINALS {
        if i >= n {
            break;
        }
        let o = &s.reg.orig[i];
        out = csum::store_uri(r, out, &o.text, (o.len as usize).min(URI_BUF))?;
        if i + 1 < n {
            let end = e.end as usize;
            out = csum::store_msg(r, out, &s.msg, end, (e.pend as usize).wrapping_sub(end))?;
            if r.store(out as u32, sep.as_ptr() as *const c_void, sep.len() as u32) != 0 {
                return Err(-1);
            }
            out += sep.len();
        }
    }
    Ok(out)
}

/// Between two restored contacts of one Contact header (RFC 3261 20.10: `COMMA` with LWS).
const CONTACT_SEPARATOR: &[u8; 2] = b", ";
