//! The common scan/rewrite on arbitrary bytes: it must never panic, and what it produces must
//! keep the invariants the kernel relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewriter_common::{
    Config, ContactUri,
    sip::{Decision, MAX_SIP_LEN, rewrite},
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a configuration, the rest is the UDP payload.
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let mut cfg = Config::default();
    if sel & 1 != 0 {
        cfg.set_template(b"sip:", b"@192.168.210.54:5060");
    }
    if sel & 2 != 0 {
        cfg.flags |= rewriter_common::CFG_KEEP_ALL;
    }
    let lookup = |dn: &[u8]| {
        (sel & 4 != 0 && dn == b"1002")
            .then(|| ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap())
    };
    let mut out = vec![0u8; 4096];
    match rewrite(msg, &cfg, lookup, &mut out) {
        Decision::Rewritten { len, contacts } => {
            let new = &out[..len];
            assert!(len <= MAX_SIP_LEN, "grew past the scan limit");
            assert!(contacts >= 1);
            assert!(msg.starts_with(b"REGISTER "));
            // The start line and the body are untouched; the header section still ends once.
            let line = msg.iter().position(|&b| b == b'\n').unwrap() + 1;
            assert_eq!(&new[..line], &msg[..line], "start line changed");
            let end_old = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let end_new = new.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(&new[end_new..], &msg[end_old..], "body changed");
            // No line appears that was not there (no header injection); a dropped parameter
            // may take a line fold with it.
            let crlf = |b: &[u8]| b.windows(2).filter(|w| w == b"\r\n").count();
            assert!(
                crlf(&new[..end_new]) <= crlf(&msg[..end_old]),
                "the rewrite added a line to the header section"
            );
        }
        Decision::Pass(_) => {}
    }
});
