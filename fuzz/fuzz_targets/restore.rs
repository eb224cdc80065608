//! The common restore on arbitrary responses: it must never panic, and what it produces must
//! keep the invariants the kernel relies on. The recorded state is that of a JsSIP REGISTER
//! (restore corpus case 01) or, with the first byte's low bit set, of a two-contact REGISTER.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewriter_common::{
    Config,
    restore::{Decision, record, restore},
    sip::{MAX_SIP_LEN, Msg, Outcome, scan},
};

const ONE: &[u8] = include_bytes!("../../tests/corpus-restore/01-jssip-map-1002-restored.req.sip");
const TWO: &[u8] =
    include_bytes!("../../tests/corpus-restore/11-register-two-contacts-expanded.req.sip");

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let cfg = Config::default();
    let req = if sel & 1 != 0 { TWO } else { ONE };
    let mut m = Msg::zeroed();
    assert!(m.load(req));
    let s = scan(&m, req.len(), &cfg);
    assert_eq!(s.outcome(), Outcome::Rewrite);
    let state = record(req, &s, b"<sip:1002@192.168.210.54:5060>")
        .expect("the seed REGISTER is recordable");
    // With the high bit set, any Call-ID/DN matches: the fuzzer then reaches the contacts
    // without having to guess the Call-ID.
    let lookup = |k: &rewriter_common::restore::RegKey| {
        (sel & 0x80 != 0 || *k == state.0).then(|| rewriter_common::restore::RegState {
            key_check: k.check(),
            ..state.1
        })
    };
    let mut out = vec![0u8; 4096];
    if let Decision::Restored { len, contacts } = restore(msg, &cfg, lookup, &mut out) {
        let new = &out[..len];
        assert!(len <= MAX_SIP_LEN, "grew past the limit");
        assert!(contacts >= 1);
        assert!(msg.starts_with(b"SIP/2.0 2"));
        let line = msg.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(&new[..line], &msg[..line], "status line changed");
        let end_old = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let end_new = new.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&new[end_new..], &msg[end_old..], "body changed");
        // As many header fields as before: a CRLF not followed by SP/HT starts a field. (An
        // expanded contact repeats its parameters, and a fold inside them, which is valid LWS.)
        let fields = |b: &[u8]| {
            b.windows(3)
                .filter(|w| &w[..2] == b"\r\n" && w[2] != b' ' && w[2] != b'\t')
                .count()
        };
        assert_eq!(
            fields(&new[..end_new]),
            fields(&msg[..end_old]),
            "the restore changed the number of header fields"
        );
    }
});
