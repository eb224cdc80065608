//! The programs of sip-rewriter, declared here and nowhere else; each is a thin entry point
//! over its room:
//!
//! - `sip_rewriter` (TC egress, [`egress`]): REGISTERs to Genesys get the DN's Contact URI;
//! - `sip_restore_xdp`, `sip_restore_tc` (XDP / TC ingress, [`ingress`]): Genesys' 2xx to
//!   REGISTER gets the client's own Contact URI(s) back.
//!
//! The rooms: [`maps`] (maps, configuration, counters), [`frame`] (is this ours, where are the
//! headers), [`scan`] (the `bpf_loop` driver over `rewriter_common::sip`), [`splice`] (the write
//! stage), [`csum`] (packet surgery and checksum arithmetic), [`pkt`] (TC and XDP behind one
//! interface). The `bench_` programs of `cargo xtask bench` are built only with the `bench`
//! feature, so the object `attach` loads holds only what it attaches.
//!
//! Every program fails open: the verdict is always "pass" ([`TC_ACT_UNSPEC`] hands the packet
//! on to the next TCX program or lets it go), and anything not fully understood leaves
//! byte-identical, its reason counted in `STATS`.
#![no_std]
#![no_main]

#[cfg(feature = "bench")]
mod bench;
mod csum;
mod egress;
mod frame;
mod ingress;
mod maps;
mod pkt;
mod scan;
mod splice;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use rewriter_common::Stat;

/// `Err(stat)`: the packet leaves as it came and `stat` is counted.
type Verdict = Result<(), Stat>;

/// TC egress: the rewrite.
#[classifier]
pub fn sip_rewriter(ctx: TcContext) -> i32 {
    egress::sip_rewriter(&ctx);
    TC_ACT_UNSPEC
}

/// XDP ingress: the restore, at the earliest point a frame can be edited.
#[xdp]
pub fn sip_restore_xdp(ctx: XdpContext) -> u32 {
    ingress::sip_restore_xdp(&ctx);
    XDP_PASS
}

/// TC ingress: the restore alone (`--ingress tc`), or behind XDP for the frames it handed over.
#[classifier]
pub fn sip_restore_tc(ctx: TcContext) -> i32 {
    ingress::sip_restore_tc(&ctx);
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
