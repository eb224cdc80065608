//! The `bpf_loop` driver: every loop of the programs (scan, record, select, write) runs as a
//! `bpf_loop` callback, whose body the verifier checks once instead of once per iteration.
//!
//! `bpf_loop`: v5.17, commit e6f2dd0f8067; inlined by the verifier since v6.0 (commit
//! 1ade23711971) when the callback and flags are constant:
//! <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/bpf_iter.c#L740-L774>.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use rewriter_common::{
    Config, Scratch,
    sip::{self, MAX_EDITS, MAX_STEPS},
};

/// What every `bpf_loop` callback gets, on the caller's stack: the scratch, the configuration
/// and the raw packet context.
#[repr(C)]
struct LoopCtx<R> {
    scratch: *mut Scratch,
    cfg: *const Config,
    raw: R,
}

/// A `bpf_loop` callback: `index`, and a `LoopCtx` as `ctx`; returns 0 to go on, 1 to stop.
pub type Callback = extern "C" fn(u64, *mut c_void) -> i64;

/// Calls `cb` up to `n` times with a [`LoopCtx`]. The scratch goes through the context rather
/// than being looked up again by the callback: the compiler then sees that the loop may change
/// it and reloads what the callback wrote (a fresh map lookup in the callback would alias the
/// caller's `&mut` behind the compiler's back).
#[inline(always)]
pub fn run_loop<R: Copy>(n: u32, cb: Callback, scratch: &mut Scratch, cfg: &Config, raw: R) {
    let mut c = LoopCtx {
        scratch: &raw mut *scratch,
        cfg,
        raw,
    };
    // SAFETY: the callback has the signature bpf_loop expects; `c` outlives the call.
    unsafe {
        bpf_loop(
            n,
            cb as *mut c_void,
            &mut c as *mut LoopCtx<R> as *mut c_void,
            0,
        )
    };
}

/// Unpacks a callback's `ctx`.
///
/// # Safety
/// `ctx` must be the live `LoopCtx<R>` of [`run_loop`]; its pointers are map values valid for
/// the whole program run, and the caller uses no reference to them while `bpf_loop` runs.
#[inline(always)]
pub unsafe fn loop_ctx<'a, R: Copy>(ctx: *mut c_void) -> (&'a mut Scratch, &'a Config, R) {
    // SAFETY: see the function's contract.
    unsafe {
        let c = &*(ctx as *const LoopCtx<R>);
        (&mut *c.scratch, &*c.cfg, c.raw)
    }
}

/// Runs the scan (state already reset) to the end, one step per `bpf_loop` iteration;
/// `RESP`: of a response (ingress restore), see `sip::step`.
#[inline(always)]
pub fn run_scan<const RESP: bool>(scratch: &mut Scratch, cfg: &Config) {
    run_loop(MAX_STEPS, step_cb::<RESP>, scratch, cfg, ());
}

/// After a REGISTER's scan: drops the contacts of expiry 0 when others stay (`sip::drop_plan`),
/// one contact, then one edit, per `bpf_loop` iteration. Most REGISTERs (one contact) skip it.
#[inline(always)]
pub fn run_drop(scratch: &mut Scratch, cfg: &Config) {
    if sip::drop_plan(&mut scratch.scan) {
        run_loop(MAX_EDITS as u32, drop_lines_cb, scratch, cfg, ());
        run_loop(MAX_EDITS as u32, drop_cb, scratch, cfg, ());
        sip::drop_finish(&mut scratch.scan);
    }
}

#[inline(never)]
extern "C" fn drop_lines_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (scratch, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    go_on(sip::drop_lines_step(&mut scratch.scan, index as usize))
}

#[inline(never)]
extern "C" fn drop_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (scratch, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    go_on(sip::drop_step(&mut scratch.scan, index as usize))
}

/// One scan step per `bpf_loop` iteration; the verifier checks this body once.
#[inline(never)]
extern "C" fn step_cb<const RESP: bool>(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (scratch, cfg, ()) = unsafe { loop_ctx::<()>(ctx) };
    go_on(sip::step::<RESP>(&mut scratch.scan, &scratch.msg, cfg))
}

/// A callback's return value for "`more`: call me again", else "stop here".
#[inline(always)]
pub const fn go_on(more: bool) -> i64 {
    if more { LOOP_GO_ON } else { LOOP_STOP }
}

/// A `bpf_loop` callback's "call me again" (`bpf_loop` stops on any other value).
pub const LOOP_GO_ON: i64 = 0;
/// A `bpf_loop` callback's "stop here".
pub const LOOP_STOP: i64 = 1;
