//! Egress rewrite: a REGISTER to Genesys gets the DN's Contact URI (from the DN map, or the
//! default template) in place of the client's, with the scan/rewrite algorithm of
//! `rewriter_common::sip`; what was written is recorded for the ingress restore.
//!
//! It never drops a packet: anything it does not fully understand leaves byte-identical and
//! is counted in `STATS`.

use core::ffi::c_void;

use aya_ebpf::programs::TcContext;
use aya_log_ebpf::{info, warn};
use rewriter_common::{
    CFG_HAS_DEFAULT, Config, ContactUri, MAX_DN_LEN, Scratch, Stat, URI_BUF,
    restore::{Admit, copy_aligned, copy_volatile, dn_check},
    sip::{self, EDIT_URI, MAX_EDITS, MAX_SIP_LEN, Outcome},
};

use crate::{
    csum,
    frame::{Frame, candidate, sip_payload},
    maps::{REGS, REGS_BY_DN, add, config, count, dn_map, log_worthy, read},
    pkt::{Pkt, Raw},
    scan::{LOOP_GO_ON, LOOP_STOP, loop_ctx, run_drop, run_loop, run_scan},
    splice::splice,
};

/// How far [`try_rewrite`] goes (the `bench_` programs stop early).
pub const STAGE_COPY: u8 = 1;
pub const STAGE_SCAN: u8 = 2;
/// Up to the DN lookup and the new length, packet untouched.
pub const STAGE_LOOKUP: u8 = 3;
/// Up to the packet written, nothing recorded.
pub const STAGE_WRITE: u8 = 4;
pub const STAGE_ALL: u8 = 5;

/// The egress classifier's work; the verdict is always "pass".
#[inline(always)]
pub fn sip_rewriter(ctx: &TcContext) {
    let r = try_rewrite::<STAGE_ALL>(ctx).map(|pending| {
        // A new record is finished here, where the paths of the rewrite have converged: the
        // verifier of v6.1 checks a `bpf_loop` callback at its call, for each caller state
        // that reaches it unpruned (`check_helper_call()` case BPF_FUNC_loop ->
        // `__check_func_call()`, kernel/bpf/verifier.c since v5.17, commit e6f2dd0f8067), and
        // inside `rewrite` many do.
        if let Some((s, cfg)) = pending {
            run_loop(1, new_record_cb, s, cfg, ());
        }
    });
    if let Err(stat) = r {
        count(stat);
        if stat as u32 == Stat::Error as u32 {
            let n = read(Stat::Error);
            if log_worthy(n) {
                warn!(
                    ctx,
                    "a helper failed (#{} on this CPU); packet left unchanged", n
                );
            }
        }
    }
}

/// A rewritten REGISTER whose record is new: the scratch (its `reg_key`/`reg`) and the
/// configuration, for [`new_record_cb`].
type Pending<'a> = Option<(&'a mut Scratch, &'static Config)>;

/// Up to `STAGE`; `Ok` for a rewritten packet and for one that is not ours, with the new
/// record still to be made, if any.
#[inline(always)]
pub fn try_rewrite<'a, const STAGE: u8>(ctx: &TcContext) -> Result<Pending<'a>, Stat> {
    let cfg = config().ok_or(Stat::Error)?;
    let Some(f) = candidate(ctx, cfg, false) else {
        return Ok(None);
    };
    let f = f?;
    add(Stat::Seen, 1);
    // A GSO skb is several datagrams' worth; bpf_skb_change_tail would drop its GSO state.
    if ctx.is_gso() {
        return Err(Stat::TooBig);
    }
    let (payload, n, scratch) = sip_payload(ctx, &f, b"REGISTER", Stat::NotRegister)?;
    if STAGE == STAGE_COPY {
        return Ok(None);
    }
    scratch.scan.reset(n);
    run_scan::<false>(scratch, cfg);
    let outcome = scratch.scan.outcome();
    if outcome != Outcome::NotRegister {
        count(Stat::Register);
    }
    if outcome != Outcome::Rewrite {
        return Err(Stat::for_outcome(outcome));
    }
    run_drop(scratch, cfg);
    if STAGE == STAGE_SCAN {
        return Ok(None);
    }
    rewrite::<STAGE>(ctx, cfg, &f, payload, n, scratch)
}

#[inline(always)]
fn rewrite<'a, const STAGE: u8>(
    ctx: &TcContext,
    cfg: &'static Config,
    f: &Frame,
    payload: usize,
    n: usize,
    s: &'a mut Scratch,
) -> Result<Pending<'a>, Stat> {
    let f = &f.forgotten(&mut s.frame);
    let dn_start = s.scan.dn_start as usize;
    let dn_len = (s.scan.dn_len as usize).min(MAX_DN_LEN);
    // The key a word at a time, zero past the DN (volatile: no `memset`/byte loop).
    let key = s.key.0.as_mut_ptr() as *mut u64;
    for j in 0..MAX_DN_LEN / WORD {
        let w = sip::low_bytes(
            s.msg.word_at(dn_start + WORD * j),
            dn_len.saturating_sub(WORD * j).min(WORD),
        );
        // SAFETY: `DnKey` is 8-byte aligned and holds MAX_DN_LEN / 8 words.
        unsafe { core::ptr::write_volatile(key.add(j), w) };
    }
    // An escaped DN is looked up, and written, decoded (`sip::decode_dn_step`): the key is
    // rebuilt one character per `bpf_loop` iteration (rare, so a loop, not inline code).
    if s.scan.flags & sip::DN_ESCAPED != 0 {
        for j in 0..MAX_DN_LEN / WORD {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(key.add(j), 0) };
        }
        s.write.dn_rd = 0;
        s.write.dn_wr = 0;
        s.write.err = 0;
        run_loop(MAX_DN_LEN as u32, decode_cb, s, cfg, ());
        if s.write.err != 0 {
            return Err(Stat::DnInvalid);
        }
    } else {
        s.write.dn_wr = dn_len as u32;
    }
    // The DN's length as written, through memory: both paths reach what follows with one
    // verifier state (v6.1 walked the rest twice: 426 110 -> 494 190 processed insns).
    // SAFETY: a plain field of the map value.
    let dn_len = (unsafe { core::ptr::read_volatile(&s.write.dn_wr) } as usize).min(MAX_DN_LEN);
    // SAFETY: the value is only read, and map values stay valid for the program run.
    let uri_len = match unsafe { dn_map(cfg).get(&s.key) } {
        Some(v) => {
            // Snapshot: sizing and writing must see the same entry. Copied a word at a time
            // (a plain struct copy becomes a byte-wise `memmove` on the BPF target).
            let from = v as *const ContactUri as *const u64;
            let to = &raw mut s.uri as *mut u64;
            for j in 0..core::mem::size_of::<ContactUri>() / WORD {
                // SAFETY: both are 8-byte aligned `ContactUri`s (map values are 8-aligned).
                unsafe {
                    core::ptr::write_volatile(to.add(j), core::ptr::read_volatile(from.add(j)))
                };
            }
            s.write.mapped = 1;
            (s.uri.len as usize).min(URI_BUF)
        }
        None if cfg.flags & CFG_HAS_DEFAULT != 0 => {
            s.write.mapped = 0;
            s.write.pre_len = (cfg.tpl_pre_len as u32).min(URI_BUF as u32);
            s.write.post_len = (cfg.tpl_post_len as u32).min(URI_BUF as u32);
            (s.write.pre_len + s.write.post_len) as usize + dn_len
        }
        None => return Err(Stat::DnUnknown),
    };
    let new_n = sip::new_len(&s.scan, uri_len);
    if new_n > MAX_SIP_LEN || new_n == 0 {
        return Err(Stat::TooBig);
    }
    let delta = new_n as i32 - n as i32;
    if delta > 0 && !ctx.fits_mtu(delta) {
        return Err(Stat::TooBig);
    }
    if STAGE == STAGE_LOOKUP {
        return Ok(None);
    }
    splice::<_, false>(ctx, cfg, f, payload, n, new_n, s)?;
    if STAGE == STAGE_WRITE {
        return Ok(None);
    }
    count(Stat::Rewritten);
    let contacts = s.scan.n_contacts as u64;
    let total = add(Stat::Contacts, contacts);
    let done = read(Stat::Rewritten);
    if log_worthy(done) {
        info!(
            ctx,
            "rewrote REGISTER #{} on this CPU: {} contact(s), {} -> {} bytes, {} contacts so far",
            done,
            contacts,
            n,
            new_n,
            total
        );
    }
    s.reg.peer = f.peer;
    Ok(record(s, cfg, uri_len).then_some((s, cfg)))
}

/// Decodes the next character of an escaped DN into the key; stops at its end, or with
/// `s.write.err` set when it decodes to a character no user part holds.
#[inline(never)]
extern "C" fn decode_cb(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    let (start, len) = (s.scan.dn_start as usize, s.scan.dn_len as usize);
    match sip::decode_dn_step(
        &s.msg,
        start,
        len,
        &mut s.write.dn_rd,
        &mut s.write.dn_wr,
        &mut s.key.0,
    ) {
        Some(true) => LOOP_GO_ON,
        Some(false) => LOOP_STOP,
        None => {
            s.write.err = 1;
            LOOP_STOP
        }
    }
}

/// Bytes per word of the word-at-a-time copies.
const WORD: usize = core::mem::size_of::<u64>();

/// Records what the egress just wrote for the ingress restore (see `rewriter_common::restore`).
/// The copies run in a `bpf_loop` callback, whose body the verifier checks on its own (the
/// word copies' branches would otherwise multiply the states of this function's remainder).
/// Its first iteration looks the record up: a refresh (the record is what this REGISTER would
/// record) ends there, before the originals are copied. `true`: the record is new, to be made
/// by [`new_record_cb`].
#[inline(always)]
fn record(s: &mut Scratch, cfg: &Config, uri_len: usize) -> bool {
    s.write.from = uri_len as u32;
    s.write.err = 0;
    s.write.found = FOUND_NONE;
    // SAFETY: a plain field of the map value (volatile: no merged `memset`).
    unsafe { core::ptr::write_volatile(&mut s.reg.n, 0) };
    // More than MAX_ORIGINALS contacts end the loop with REC_UNRECORDABLE, keyed.
    run_loop(MAX_EDITS as u32 + 1, record_cb, s, cfg, ());
    if s.write.found == FOUND_SAME {
        count(Stat::Recorded);
        return false;
    }
    if s.write.err == 0 && s.reg.n != s.scan.n_contacts {
        s.write.err = REC_UNRECORDABLE;
    }
    if s.write.err != 0 {
        // The record an earlier REGISTER of this (Call-ID, DN) left would give the next 2xx
        // that REGISTER's Contact back: it goes too.
        if s.write.err == REC_UNRECORDABLE {
            let _ = REGS.remove(&s.reg_key);
        }
        count(Stat::NotRecorded);
        return false;
    }
    s.reg.clear_unused();
    // A new (Call-ID, DN): recorded at the end of the run (`new_record_cb`), after its DN's
    // index. (A record found but changed keeps its place in the index.)
    if s.write.found == FOUND_NONE {
        return true;
    }
    if REGS.insert(&s.reg_key, &s.reg, 0).is_err() {
        let _ = REGS.remove(&s.reg_key);
        count(Stat::NotRecorded);
        return false;
    }
    count(Stat::Recorded);
    false
}

/// Records a new record (`s.reg` under `s.reg_key`) with the per-DN bound, in a one-iteration
/// `bpf_loop` callback (verified apart from the caller's states): admits the Call-ID into a
/// copy of the DN's index entry (`DnRecords::admit`), writes the entry back, deletes the
/// record it replaced, if any (counted `record_replaced`), and inserts the new record. If the
/// index cannot be written nothing is recorded (`not_recorded`): every record stays bounded.
#[inline(never)]
extern "C" fn new_record_cb(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    let check = dn_check(&s.reg_key.dn);
    // Snapshot, as ingress snapshots a record: an LRU element may be freed and reused for
    // another DN while it is read (no grace period for preallocated elements: they go back to
    // the free list at once, kernel/bpf/hashtab.c `htab_lru_push_free()`, v6.1 to v6.18), so
    // the copy is used only if it carries this DN's check; else the DN starts afresh. A copy
    // torn by a reuse in progress could only mislead this DN's own bound (the evicted key has
    // this DN's bytes): never another DN's records, never the packet. (No second compare as
    // ingress does: its unrolled volatile loads overflowed this callback's 512-byte stack.)
    match REGS_BY_DN.get_ptr(&s.reg_key.dn) {
        Some(p) => {
            const W: usize = core::mem::size_of::<rewriter_common::restore::DnRecords>() / WORD;
            // SAFETY: map values and the scratch field are 8-aligned `DnRecords`.
            unsafe {
                copy_volatile::<W>(p as *const u64, &raw mut s.dn_recs as *mut u64);
                if s.dn_recs.key_check != check {
                    s.dn_recs.reset(check);
                }
            }
        }
        None => s.dn_recs.reset(check),
    }
    let admit = s.dn_recs.admit(&s.reg_key, &mut s.evict_key);
    if admit as u32 != Admit::Known as u32 {
        if REGS_BY_DN.insert(&s.reg_key.dn, &s.dn_recs, 0).is_err() {
            count(Stat::NotRecorded);
            return LOOP_STOP;
        }
        // Its record may have gone already (aged out of REGS): then nothing was replaced.
        if admit as u32 == Admit::Replaced as u32 && REGS.remove(&s.evict_key).is_ok() {
            count(Stat::RecordReplaced);
        }
    }
    if REGS.insert(&s.reg_key, &s.reg, 0).is_err() {
        let _ = REGS.remove(&s.reg_key);
        count(Stat::NotRecorded);
        return LOOP_STOP;
    }
    count(Stat::Recorded);
    LOOP_STOP
}

/// `WriteState::err` of [`record`]: no usable Call-ID, so no key (nothing can be recorded
/// under it either).
const REC_NO_KEY: u32 = 1;
/// `WriteState::err` of [`record`]: keyed, but a contact cannot be recorded.
const REC_UNRECORDABLE: u32 = 2;

/// `WriteState::found` of [`record`]: no record under the key.
const FOUND_NONE: u32 = 0;
/// A record, not the one this REGISTER would make.
const FOUND_CHANGED: u32 = 1;
/// The record this REGISTER would make (a refresh).
const FOUND_SAME: u32 = 2;

/// Iteration 0: the key, the URI written (`s.out` holds the rewritten middle from the first
/// edit's even-rounded start; `s.write.from` its length) and the lookup (`s.write.found`);
/// iteration k > 0: the original of edit k - 1 if it is a URI edit. Sets `s.write.err`
/// ([`REC_NO_KEY`], [`REC_UNRECORDABLE`]) if something does not fit.
#[inline(never)]
extern "C" fn record_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    if index == 0 {
        if s.scan.flags & sip::DN_ESCAPED != 0 {
            // The DN as sent (the 2xx echoes the To as Genesys got it), not the decoded key.
            if !s.reg_key.fill(&s.msg, &s.scan) {
                s.write.err = REC_NO_KEY;
                return LOOP_STOP;
            }
        } else {
            if !s.reg_key.fill_call_id(&s.msg, &s.scan) {
                s.write.err = REC_NO_KEY;
                return LOOP_STOP;
            }
            // The DN key is at hand as aligned words.
            // SAFETY: `DnKey` is 8-aligned, a whole number of words.
            unsafe {
                copy_aligned::<{ MAX_DN_LEN / WORD }>(
                    s.key.0.as_ptr() as *const u64,
                    s.reg_key.dn.0.as_mut_ptr() as *mut u64,
                );
            }
        }
        // A mapped URI is at hand as aligned words; a template URI is read back from what was
        // written.
        s.reg.key_check = s.reg_key.check();
        if s.write.mapped != 0 {
            const W: usize = core::mem::size_of::<ContactUri>() / WORD;
            // SAFETY: as above.
            unsafe {
                copy_aligned::<W>(
                    &raw const s.uri as *const u64,
                    &raw mut s.reg.written as *mut u64,
                )
            };
        } else {
            // `s.out` starts at the first edit, even-rounded; edits before the first URI
            // (contacts dropped, `sip::drop_plan`) only remove bytes.
            let first = s.scan.edits[0].start as usize;
            let at = (first & 1)
                + (s.scan.first_uri as usize)
                    .wrapping_sub(first)
                    .wrapping_sub(s.scan.first_uri_shift as usize);
            if !s.reg.written.fill(&s.out, at, s.write.from as usize, false) {
                s.write.err = REC_UNRECORDABLE;
                return LOOP_STOP;
            }
        }
        // A refresh REGISTER (same Call-ID, same contact) finds its record as it is: the
        // lookup marks it recently used, and the originals are neither copied nor compared
        // whole. Read in place: an element reused for another key while it is read (see
        // `new_record_cb`) shows another key check, or at worst spares this record one update
        // until the next refresh; never the packet.
        // SAFETY: the value is only read.
        return match unsafe { REGS.get(&s.reg_key) } {
            Some(old) if old.refreshed_by(&s.reg, &s.msg, &s.scan) => {
                s.write.found = FOUND_SAME;
                LOOP_STOP
            }
            Some(_) => {
                s.write.found = FOUND_CHANGED;
                LOOP_GO_ON
            }
            None => LOOP_GO_ON,
        };
    }
    let k = index as usize - 1;
    if k >= s.scan.n_edits as usize {
        return LOOP_STOP;
    }
    let e = s.scan.edits[k & (MAX_EDITS - 1)];
    if e.kind == EDIT_URI && !s.reg.record(&s.msg, &e) {
        s.write.err = REC_UNRECORDABLE;
        return LOOP_STOP;
    }
    LOOP_GO_ON
}

/// Writes one rewritten edit: the original bytes since the previous edit, then (for a URI
/// edit) the new URI, from the DN map's entry or the template around the DN. Returns the
/// packet offset after it. Invalidates packet pointers.
#[inline(always)]
pub fn write_edit<R: Raw>(
    r: R,
    s: &Scratch,
    cfg: &Config,
    start: usize,
    from: usize,
    kind: u16,
) -> Result<usize, i64> {
    let out = csum::store_msg(
        r,
        s.write.out as usize,
        &s.msg,
        from,
        start.wrapping_sub(from),
    )?;
    if kind != EDIT_URI {
        return Ok(out);
    }
    if s.write.mapped != 0 {
        csum::store_uri(r, out, &s.uri.text, s.uri.len as usize)
    } else {
        let o = csum::store_uri(r, out, &cfg.tpl_pre, s.write.pre_len as usize)?;
        let o = if s.scan.flags & sip::DN_ESCAPED != 0 {
            // The decoded DN, from the key.
            csum::store_buf(r, o, &s.key.0, s.write.dn_wr as usize)?
        } else {
            let dn_len = (s.scan.dn_len as usize).min(MAX_DN_LEN);
            csum::store_msg(r, o, &s.msg, s.scan.dn_start as usize, dn_len)?
        };
        csum::store_uri(r, o, &cfg.tpl_post, s.write.post_len as usize)
    }
}
