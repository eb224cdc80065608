//! Differential testing of the restore: generated REGISTERs go through the egress program
//! (which rewrites and records them); a "Genesys" response is derived from each rewritten
//! REGISTER with random variations (status, extra bindings, other Call-ID or CSeq method, byte
//! mutations) and goes through an ingress program (XDP or TC, at random) and through the
//! userspace algorithm. Output payloads must be identical, pass cases byte-identical, frames
//! valid (the tests' own checker), the counter moved the one userspace names, and the state
//! the kernel recorded (the record and its DN's index entry) the one userspace computes.
//!
//! `FUZZ_COUNT` (default 20 000) and `FUZZ_SEED` (default: time) set the run; the seed is
//! printed. A divergence is saved under `tests/regressions/restore/` before the test fails.

use std::path::Path;

use integration_tests::{
    fuzz::{Rng, message, mutate},
    kernel::{corpus_config, corpus_rewriter, run, run_ingress},
    packet::{Frame, check},
};
use rewriter_common::{
    ContactUri, DnKey, Stat,
    restore::{self, Decision, DnRecords, RegKey, RegState},
    sip::{self, rewrite},
};
use rewriter_user::{Ingress, Rewriter};

/// Stats an ingress run may move (the egress ones cannot).
const INGRESS: [Stat; 9] = [
    Stat::WrongSource,
    Stat::RespOther,
    Stat::Malformed,
    Stat::NoState,
    Stat::NoMatch,
    Stat::TooBig,
    Stat::Restored,
    Stat::Error,
    Stat::ToTc,
];

fn lookup_table(dn: &[u8]) -> Option<ContactUri> {
    (dn == b"1002").then(|| ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap())
}

/// A registrar's answer to `register` (already rewritten): its headers, the Contacts as stored,
/// with variations.
fn response(rng: &mut Rng, register: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(register).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = *rng.pick(&[
        "200 OK",
        "200 OK",
        "200 OK",
        "200 OK",
        "202 Accepted",
        "401 Unauthorized",
        "100 Trying",
    ]);
    let mut lines: Vec<String> = vec![format!("SIP/2.0 {status}")];
    for l in head.split("\r\n").skip(1) {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("authorization:") || lower.starts_with("max-forwards:") {
            continue;
        }
        let mut l = l.to_owned();
        if lower.starts_with("call-id:") && rng.chance(5) {
            l.push('x');
        }
        if lower.starts_with("cseq:") && rng.chance(5) {
            l = l.replace("REGISTER", "OPTIONS");
        }
        lines.push(l);
    }
    if rng.chance(20) {
        lines.insert(
            1 + rng.below(lines.len()),
            "Contact: <sip:other@198.18.0.9;transport=udp>;expires=60".into(),
        );
    }
    if rng.chance(10) {
        lines.push("Server: Genesys SIP Server".into());
    }
    let mut msg = (lines.join("\r\n") + "\r\n\r\n").into_bytes();
    if rng.chance(15) {
        mutate(rng, &mut msg);
    }
    msg
}

/// One generated REGISTER and its response; a description of the divergence, if any.
fn compare(
    rw: &mut Rewriter,
    rng: &mut Rng,
    register: &[u8],
    v6: bool,
) -> Option<(String, Vec<u8>)> {
    let cfg = corpus_config();
    let mut rewritten = vec![0u8; 4096];
    let sip::Decision::Rewritten { len, .. } =
        rewrite(register, &cfg, lookup_table, &mut rewritten)
    else {
        return None;
    };
    rewritten.truncate(len);
    // The REGISTER goes to Frame's destination, the response comes from there.
    let genesys =
        rewriter_user::loader::addr_key(if v6 { Frame::v6(5060) } else { Frame::v4(5060) }.dst);
    let state = restore::record_rewritten(register, &rewritten, &cfg, genesys);
    rw.clear_registrations().unwrap();
    let req = Frame {
        sport: 5070,
        ..if v6 { Frame::v6(5060) } else { Frame::v4(5060) }
    };
    let _ = run(rw, &req.build(register));
    // The kernel recorded exactly what userspace computes.
    let kernel_state: Vec<(RegKey, RegState)> = rw
        .registrations()
        .unwrap()
        .iter()
        .map(|r| r.unwrap())
        .collect();
    // What counts: the key, the URI written and the originals in use (slots past `n` are
    // scratch space the kernel does not clear).
    let meaning = |v: &[(RegKey, RegState)]| -> Vec<(RegKey, Vec<u8>, Vec<Vec<u8>>)> {
        v.iter()
            .map(|(k, st)| {
                let n = (st.n as usize).min(restore::MAX_ORIGINALS);
                (
                    *k,
                    st.written.bracketed().to_vec(),
                    st.orig[..n]
                        .iter()
                        .map(|o| o.bracketed().to_vec())
                        .collect(),
                )
            })
            .collect()
    };
    if meaning(&kernel_state) != meaning(&state.into_iter().collect::<Vec<_>>()) {
        let show = |v: &[(RegKey, RegState)]| {
            v.iter()
                .map(|(k, st)| {
                    format!(
                        "call-id {:?} dn {:?} written {:?} originals {:?}",
                        String::from_utf8_lossy(&k.call_id).trim_end_matches('\0'),
                        String::from_utf8_lossy(k.dn.as_bytes()),
                        String::from_utf8_lossy(st.written.bracketed()),
                        st.orig[..(st.n as usize).min(4)]
                            .iter()
                            .map(|o| String::from_utf8_lossy(o.bracketed()).into_owned())
                            .collect::<Vec<_>>()
                    )
                })
                .collect::<Vec<_>>()
        };
        let why = format!(
            "recorded state differs: kernel {:?}, userspace {:?}",
            show(&kernel_state),
            show(&state.into_iter().collect::<Vec<_>>())
        );
        return Some((why, register.to_vec()));
    }
    // And its DN's index what the shared bound (`DnRecords::admit`) makes of a first record.
    let kernel_index: Vec<(DnKey, DnRecords)> = rw
        .registrations_by_dn()
        .unwrap()
        .iter()
        .map(|r| r.unwrap())
        .collect();
    let want_index: Vec<(DnKey, DnRecords)> = state
        .iter()
        .map(|(k, _)| {
            let mut idx = DnRecords::empty(restore::dn_check(&k.dn));
            let mut evicted = *k;
            assert_eq!(idx.admit(k, &mut evicted), restore::Admit::Added);
            (k.dn, idx)
        })
        .collect();
    if kernel_index != want_index {
        let why =
            format!("per-DN index differs: kernel {kernel_index:?}, userspace {want_index:?}");
        return Some((why, register.to_vec()));
    }
    let resp = response(rng, &rewritten);
    let which = if rng.chance(50) {
        Ingress::Xdp
    } else {
        Ingress::Tc
    };
    let frame = req.reply().build(&resp);
    let before = rw.counters().unwrap();
    let got = run_ingress(rw, which, &frame);
    let after = rw.counters().unwrap();
    let moved: Vec<Stat> = INGRESS
        .iter()
        .copied()
        .filter(|s| after.get(*s) != before.get(*s))
        .collect();
    let mut out = vec![0u8; 4096];
    let decision = restore::restore(
        &resp,
        &cfg,
        genesys,
        |k| state.filter(|(sk, _)| sk == k).map(|(_, st)| st),
        &mut out,
    );
    let fail = |why: String| Some((format!("{which}: {why}"), resp.clone()));
    let checked = match check(&got) {
        Ok(c) => c,
        Err(e) => return fail(format!("kernel output is not a valid frame: {e}")),
    };
    match decision {
        Decision::Restored { len, .. } => {
            if checked.payload != out[..len] {
                return fail("payloads differ".into());
            }
            if moved != [Stat::Restored] {
                return fail(format!("userspace restored, kernel counted {moved:?}"));
            }
        }
        Decision::Pass(stat) => {
            if got != frame {
                return fail(format!(
                    "userspace passed ({stat:?}) but the kernel changed the frame"
                ));
            }
            if moved != [stat] {
                return fail(format!(
                    "userspace passed as {stat:?}, kernel counted {moved:?}"
                ));
            }
        }
    }
    None
}

#[test]
fn kernel_and_userspace_agree_on_generated_responses() {
    let count: u64 = std::env::var("FUZZ_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("restore differential: {count} REGISTER/response pairs, FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut rw = corpus_rewriter();
    let (mut pairs, mut restored) = (0u64, 0u64);
    for i in 0..count {
        let register = message(&mut rng);
        let v6 = rng.chance(50);
        let before = rw.counters().unwrap().get(Stat::Restored);
        if let Some((why, resp)) = compare(&mut rw, &mut rng, &register, v6) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("regressions")
                .join("restore");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{seed}-{i}.req.sip")), &register).unwrap();
            std::fs::write(dir.join(format!("seed-{seed}-{i}.resp.sip")), &resp).unwrap();
            panic!(
                "pair {i} (FUZZ_SEED={seed}, v6={v6}): {why}; saved under {}",
                dir.display()
            );
        }
        pairs += 1;
        restored += rw.counters().unwrap().get(Stat::Restored) - before;
    }
    println!("restore differential: {pairs} pairs agreed, {restored} responses restored");
    assert!(
        restored > count / 10,
        "the generator should mostly produce restorable responses"
    );
}
