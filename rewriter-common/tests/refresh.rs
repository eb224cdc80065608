//! `RegState::refreshed_by` (the egress's in-place refresh check) against the whole-record
//! comparison it replaces: for every corpus REGISTER and variants of it, "the record found is
//! what this REGISTER would record" must be exactly `found.same(&built)`.

use std::{fs, path::Path};

use rewriter_common::{
    AddrKey, Config, URI_BUF,
    restore::{RegState, record},
    sip::{self, Msg, Outcome, Scan},
};

const GENESYS: AddrKey = AddrKey::v4([198, 18, 0, 2]);
const OTHER_PEER: AddrKey = AddrKey::v4([198, 18, 0, 3]);
const WRITTEN: &[u8] = b"<sip:1002@198.18.0.77:5060>";

/// The REGISTERs of both corpora.
fn registers() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["../tests/corpus", "../tests/shared-corpus"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".in.sip"))
            .collect();
        names.sort();
        for p in names {
            let data = fs::read(&p).unwrap();
            if data.starts_with(b"REGISTER ") {
                out.push((p.file_name().unwrap().to_string_lossy().into_owned(), data));
            }
        }
    }
    out
}

/// A REGISTER as the egress sees it: the message, its scan, and (if recordable) the record it
/// would make with `written` sent to `peer`.
struct Seen {
    m: Msg,
    s: Scan,
    built: Option<RegState>,
}

fn see(input: &[u8], written: &[u8], peer: AddrKey) -> Option<Seen> {
    let mut m = Msg::zeroed();
    if !m.load(input) {
        return None;
    }
    let s = sip::scan(&m, input.len(), &Config::default());
    if s.outcome() != Outcome::Rewrite {
        return None;
    }
    let built = record(input, &s, written, peer).map(|(_, st)| st);
    Some(Seen { m, s, built })
}

/// The head the kernel compares with: the built record with no originals counted and stale
/// bytes in their slots (the scratch holds the previous packet's).
fn head(built: &RegState) -> RegState {
    let mut h = *built;
    h.n = 0;
    for o in &mut h.orig {
        o.len = 77;
        o.text = [b'x'; URI_BUF];
    }
    h
}

/// `found.refreshed_by(new)` equals `found.same(new's record)`; returns that answer.
fn agrees(what: &str, found: &RegState, new: &Seen) -> bool {
    let Some(built) = new.built else {
        // Not recordable: never a refresh (the kernel then removes the old record).
        let h = head(found);
        assert!(
            !found.refreshed_by(&h, &new.m, &new.s),
            "{what}: unrecordable"
        );
        return false;
    };
    let want = found.same(&built);
    assert_eq!(
        found.refreshed_by(&head(&built), &new.m, &new.s),
        want,
        "{what}"
    );
    want
}

/// Replaces the first `from` after `anchor` in `msg` by `to`.
fn edit(msg: &[u8], anchor: &str, from: &str, to: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(msg).into_owned();
    let a = text.find(anchor)?;
    let at = a + text[a..].find(from)?;
    Some(
        [&text[..at], to, &text[at + from.len()..]]
            .concat()
            .into_bytes(),
    )
}

#[test]
fn the_refresh_check_agrees_with_comparing_whole_records() {
    let regs = registers();
    assert!(regs.len() >= 30, "{} REGISTERs", regs.len());
    let (mut same, mut differ) = (0, 0);
    let mut tally = |b: bool| if b { same += 1 } else { differ += 1 };
    let mut recorded = Vec::new();
    for (name, input) in &regs {
        let Some(first) = see(input, WRITTEN, GENESYS) else {
            continue;
        };
        let Some(found) = first.built else { continue };
        recorded.push((name.clone(), found));
        // The REGISTER itself, and refreshes that differ only outside the contact URIs.
        assert!(agrees(&format!("{name}: itself"), &found, &first), "{name}");
        tally(true);
        let variants = [
            (
                "CSeq bumped",
                edit(input, "\nCSeq:", "REGISTER", "REGISTER "),
            ),
            ("expires changed", edit(input, "expires=", "=", "=1")),
            // Changes in the first contact URI, and a contact more.
            ("contact host", edit(input, "\nContact:", "@", "@z")),
            ("contact user", edit(input, "\nContact:", "sip:", "sip:q")),
            ("contact longer", edit(input, "\nContact:", ">", ";x>")),
            (
                "a contact more",
                edit(input, "\nContact:", "\r\n", ", <sip:extra@198.18.0.9>\r\n"),
            ),
            ("call-id", edit(input, "\nCall-ID:", ":", ": 1")),
        ];
        for (what, v) in variants {
            let Some(v) = v else { continue };
            if let Some(seen) = see(&v, WRITTEN, GENESYS) {
                tally(agrees(&format!("{name}: {what}"), &found, &seen));
            }
        }
        // Another URI written (the DN's mapping changed), another peer.
        for (what, written, peer) in [
            ("written", &b"<sip:1002@198.18.0.78:5060>"[..], GENESYS),
            ("written shorter", &b"<sip:1002@198.18.0.7>"[..], GENESYS),
            ("peer", WRITTEN, OTHER_PEER),
        ] {
            let seen = see(input, written, peer).unwrap();
            tally(agrees(&format!("{name}: {what}"), &found, &seen));
        }
    }
    // Every pair of recorded REGISTERs (most differ in key or contact).
    for (a, found) in &recorded {
        for (b, input) in &regs {
            if let Some(seen) = see(input, WRITTEN, GENESYS) {
                tally(agrees(&format!("{a} found, {b} sent"), found, &seen));
            }
        }
    }
    assert!(recorded.len() >= 25, "{} recordable", recorded.len());
    assert!(
        same > recorded.len() && differ > recorded.len(),
        "{same} same, {differ} differ"
    );
}
