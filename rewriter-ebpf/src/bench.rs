//! The programs `cargo xtask bench` times against (feature `bench`, which `integration-tests`
//! turns on): floors that do nothing, and the egress rewrite stopped after a phase. Never
//! attached, and never verified unless the bench loads them.

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::egress::{STAGE_COPY, STAGE_LOOKUP, STAGE_SCAN, STAGE_WRITE, try_rewrite};

/// The floor of the egress rows: a classifier that does nothing.
#[classifier]
pub fn bench_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// The floor of the ingress rows: an XDP program that does nothing.
#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Phase timing: everything up to copying the payload.
#[classifier]
pub fn bench_copy(ctx: TcContext) -> i32 {
    let _ = try_rewrite::<STAGE_COPY>(&ctx);
    TC_ACT_UNSPEC
}

/// Phase timing: everything up to the end of the scan (packet untouched).
#[classifier]
pub fn bench_scan(ctx: TcContext) -> i32 {
    let _ = try_rewrite::<STAGE_SCAN>(&ctx);
    TC_ACT_UNSPEC
}

/// Phase timing: everything up to the DN lookup and the new length (packet untouched).
#[classifier]
pub fn bench_lookup(ctx: TcContext) -> i32 {
    let _ = try_rewrite::<STAGE_LOOKUP>(&ctx);
    TC_ACT_UNSPEC
}

/// Phase timing: everything up to the packet written, nothing recorded.
#[classifier]
pub fn bench_write(ctx: TcContext) -> i32 {
    let _ = try_rewrite::<STAGE_WRITE>(&ctx);
    TC_ACT_UNSPEC
}
