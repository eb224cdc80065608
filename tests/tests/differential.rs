//! Differential testing: every generated packet goes through the kernel program
//! (BPF_PROG_TEST_RUN) and through the userspace algorithm; the payloads must be identical,
//! pass cases byte-identical, lengths and checksums valid (checked independently), and the
//! counter the kernel moved must be the one userspace names.
//!
//! `FUZZ_COUNT` (default 20 000) and `FUZZ_SEED` (default: time) set the run; the seed is
//! printed. A divergence is saved under `tests/regressions/` before the test fails.

use std::{collections::HashMap, path::Path};

use integration_tests::{
    fuzz::{Rng, message},
    kernel::{corpus_config, corpus_rewriter, run},
    packet::{Frame, check},
};
use rewriter_common::{
    ContactUri, Stat, restore,
    sip::{Decision, rewrite},
};
use rewriter_user::Rewriter;

fn table() -> HashMap<Vec<u8>, ContactUri> {
    let mut t = HashMap::new();
    t.insert(
        b"1002".to_vec(),
        ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap(),
    );
    t
}

/// Checks one payload in one frame shape; returns a description of the divergence, if any.
fn compare(
    rw: &mut Rewriter,
    table: &HashMap<Vec<u8>, ContactUri>,
    payload: &[u8],
    frame: &Frame,
) -> Option<String> {
    let mut out = vec![0u8; 4096];
    let decision = rewrite(
        payload,
        &corpus_config(),
        |dn| table.get(dn).copied(),
        &mut out,
    );
    let input = frame.build(payload);
    let before = rw.counters().unwrap();
    let got = run(rw, &input);
    let after = rw.counters().unwrap();
    let moved: Vec<Stat> = Stat::ALL
        .iter()
        .copied()
        .filter(|s| {
            // `record_replaced` depends on the records earlier packets left (the per-DN bound,
            // tests/restore.rs), not on this packet alone.
            !matches!(
                s,
                Stat::Seen | Stat::Register | Stat::Contacts | Stat::RecordReplaced
            ) && after.get(*s) != before.get(*s)
        })
        .collect();
    let replaced = after.get(Stat::RecordReplaced) - before.get(Stat::RecordReplaced);
    if replaced > 1 || (replaced == 1 && !moved.contains(&Stat::Recorded)) {
        return Some(format!(
            "record_replaced moved by {replaced} with {moved:?}: only a new record replaces one"
        ));
    }
    let checked = match check(&got) {
        Ok(c) => c,
        Err(e) => return Some(format!("kernel output is not a valid frame: {e}")),
    };
    match decision {
        Decision::Rewritten { len, .. } => {
            if checked.payload != out[..len] {
                return Some("payloads differ".into());
            }
            let recorded = if restore::record_rewritten(
                payload,
                &out[..len],
                &corpus_config(),
                rewriter_common::AddrKey([0; 16]),
            )
            .is_some()
            {
                Stat::Recorded
            } else {
                Stat::NotRecorded
            };
            if moved != [Stat::Rewritten, recorded] {
                return Some(format!(
                    "userspace rewrote ({recorded:?}), kernel counted {moved:?}"
                ));
            }
        }
        Decision::Pass(stat) => {
            if got != input {
                return Some(format!(
                    "userspace passed ({stat:?}) but the kernel changed the frame"
                ));
            }
            if moved != [stat] {
                return Some(format!(
                    "userspace passed as {stat:?}, kernel counted {moved:?}"
                ));
            }
        }
    }
    None
}

fn shapes(rng: &mut Rng) -> Frame {
    match rng.below(5) {
        0 => Frame::v6(5060),
        1 => Frame {
            vlan: Some(7),
            ..Frame::v4(5060)
        },
        2 => Frame {
            ipv4_options: vec![1, 1, 1, 0],
            ..Frame::v4(5060)
        },
        3 => Frame {
            zero_udp_csum: true,
            ..Frame::v4(5060)
        },
        _ => Frame::v4(5060),
    }
}

#[test]
fn kernel_and_userspace_agree_on_generated_packets() {
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
    println!("differential: {count} packets, FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut rw = corpus_rewriter();
    let table = table();
    let (mut rewritten, mut passed) = (0u64, 0u64);
    for i in 0..count {
        let payload = message(&mut rng);
        let frame = shapes(&mut rng);
        if let Some(why) = compare(&mut rw, &table, &payload, &frame) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
            let file = dir.join(format!("seed-{seed}-{i}.sip"));
            std::fs::write(&file, &payload).unwrap();
            panic!(
                "packet {i} (FUZZ_SEED={seed}, {frame:?}): {why}; saved as {}",
                file.display()
            );
        }
        let mut out = vec![0u8; 4096];
        match rewrite(
            &payload,
            &corpus_config(),
            |dn| table.get(dn).copied(),
            &mut out,
        ) {
            Decision::Rewritten { .. } => rewritten += 1,
            Decision::Pass(_) => passed += 1,
        }
    }
    println!("differential: {count} packets agreed ({rewritten} rewritten, {passed} passed)");
    assert!(
        rewritten > count / 10,
        "the generator should mostly produce rewritable REGISTERs"
    );
}

#[test]
fn saved_regressions_still_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut rw = corpus_rewriter();
    let table = table();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "sip") {
            let payload = std::fs::read(&p).unwrap();
            for frame in [Frame::v4(5060), Frame::v6(5060)] {
                assert_eq!(
                    compare(&mut rw, &table, &payload, &frame),
                    None,
                    "{}",
                    p.display()
                );
            }
        }
    }
}
