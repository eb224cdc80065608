//! The write stage both directions share: resize, the edits one per `bpf_loop` iteration, the
//! tail, then lengths and checksums; all undone if a helper fails half-way.

use core::ffi::c_void;

use rewriter_common::{Config, Scratch, Stat, sip::MAX_EDITS};

use crate::{
    Verdict, csum, egress,
    frame::Frame,
    ingress,
    pkt::{Pkt, Raw},
    scan::{LOOP_GO_ON, LOOP_STOP, loop_ctx, run_loop},
};

/// Writes the new payload over the old one: resize, the edits (`RESTORE`: the ingress
/// restore's, else the egress rewrite's) one per `bpf_loop` iteration, the tail, then lengths
/// and checksums. If any helper fails, puts everything back and fails with `Stat::Error`
/// (`Stat::ToTc` if an XDP frame could not grow). Invalidates packet pointers.
#[inline(always)]
pub fn splice<P: Pkt, const RESTORE: bool>(
    ctx: &P,
    cfg: &Config,
    f: &Frame,
    payload: usize,
    n: usize,
    new_n: usize,
    s: &mut Scratch,
) -> Verdict {
    let delta = new_n as i32 - n as i32;
    let pkt_len = ctx.len() as i32;
    csum::load_headers(ctx.raw(), f, s)?;
    if delta > 0 {
        ctx.resize((pkt_len + delta) as u32)?;
    } else if RESTORE && delta == 0 && ctx.forget_rx_checksum().is_err() {
        undo(ctx, f, payload, n, pkt_len as u32, s);
        return Err(Stat::Error);
    }
    let first = s.scan.edits[0].start as usize;
    s.write.out = (payload + first) as u32;
    s.write.from = first as u32;
    s.write.err = 0;
    run_loop(
        MAX_EDITS as u32,
        write_cb::<P::R, RESTORE>,
        s,
        cfg,
        ctx.raw(),
    );
    let tail = n.wrapping_sub(s.write.from as usize);
    let written = s.write.err == 0
        && csum::store_msg(
            ctx.raw(),
            s.write.out as usize,
            &s.msg,
            s.write.from as usize,
            tail,
        )
        .is_ok()
        && (delta >= 0 || ctx.resize((pkt_len + delta) as u32).is_ok())
        && csum::fix_lengths_and_checksums(ctx, f, payload, n, new_n, first & !1, s).is_ok();
    if !written {
        // The packet must never leave half-rewritten: put everything back.
        undo(ctx, f, payload, n, pkt_len as u32, s);
        return Err(Stat::Error);
    }
    Ok(())
}

/// Original length, payload and headers (`s.hdr_old`), best effort (a failing helper here
/// leaves nothing better to do). Invalidates packet pointers.
#[inline(always)]
fn undo<P: Pkt>(ctx: &P, f: &Frame, payload: usize, n: usize, len: u32, s: &Scratch) {
    if ctx.len() != len {
        let _ = ctx.resize(len);
    }
    let _ = csum::store_msg(ctx.raw(), payload, &s.msg, 0, n);
    let _ = csum::store_headers(ctx.raw(), f, s);
}

/// Write stage, one edit per `bpf_loop` iteration: the original bytes since the previous edit,
/// then the edit's new text. Progress lives in `Scratch::write`, so the verifier checks this
/// body once. Invalidates packet pointers.
#[inline(never)]
extern "C" fn write_cb<R: Raw, const RESTORE: bool>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, cfg, raw) = unsafe { loop_ctx::<R>(ctx) };
    let k = index as usize;
    if k >= s.scan.n_edits as usize {
        return LOOP_STOP;
    }
    let e = s.scan.edits[k & (MAX_EDITS - 1)];
    let from = s.write.from as usize;
    let r = if RESTORE {
        ingress::restore_edit(raw, s, &e, from)
    } else {
        egress::write_edit(raw, s, cfg, e.start as usize, from, e.kind)
    };
    match r {
        Ok(out) => {
            s.write.out = out as u32;
            s.write.from = e.end as u32;
            LOOP_GO_ON
        }
        Err(_) => {
            s.write.err = 1;
            LOOP_STOP
        }
    }
}
