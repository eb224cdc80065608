//! Every corpus case through the real kernel program (BPF_PROG_TEST_RUN), wrapped in IPv4,
//! IPv6, 802.1Q and IPv4-with-options frames: exact payload bytes out, and lengths and the UDP
//! checksum verified by the tests' own checker.

use std::{fs, path::Path};

use integration_tests::{
    kernel::{corpus_rewriter, run},
    packet::{Frame, check},
};
use rewriter_common::Stat;

fn cases() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["shared-corpus", "corpus"] {
        let mut names: Vec<_> = fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".in.sip"))
        {
            let expected = fs::read(p.to_string_lossy().replace(".in.sip", ".out.sip")).unwrap();
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(p).unwrap(),
                expected,
            ));
        }
    }
    assert!(out.len() >= 49, "corpus went missing: {} cases", out.len());
    out
}

fn run_all(frame_of: impl Fn() -> Frame, label: &str) {
    let mut rw = corpus_rewriter();
    let mut failures = Vec::new();
    let deltas: Vec<i64> = cases()
        .iter()
        .map(|(_, i, e)| e.len() as i64 - i.len() as i64)
        .collect();
    for (what, present) in [
        ("growth", deltas.iter().any(|d| *d > 0)),
        ("shrink", deltas.iter().any(|d| *d < 0)),
        ("odd change", deltas.iter().any(|d| d % 2 != 0)),
        ("even change", deltas.iter().any(|d| *d != 0 && d % 2 == 0)),
    ] {
        assert!(present, "the corpus has no case of {what}");
    }
    for (name, input, expected) in cases() {
        let f = frame_of();
        let frame = f.build(&input);
        let before = rw.counters().unwrap();
        let out = run(&mut rw, &frame);
        let after = rw.counters().unwrap();
        match check(&out) {
            Err(e) => failures.push(format!("{name}: invalid frame out: {e}")),
            Ok(c) if c.payload != expected => failures.push(format!(
                "{name}: payload differs\n--- got\n{}\n--- expected\n{}",
                String::from_utf8_lossy(&c.payload),
                String::from_utf8_lossy(&expected)
            )),
            Ok(_) => {}
        }
        if input == expected && out != frame {
            failures.push(format!("{name}: pass case not byte-identical"));
        }
        let rewritten = after.get(Stat::Rewritten) - before.get(Stat::Rewritten);
        if rewritten != u64::from(input != expected) {
            failures.push(format!("{name}: rewritten counter moved by {rewritten}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_over_ipv4() {
    run_all(|| Frame::v4(5060), "ipv4");
}

#[test]
fn corpus_over_ipv6() {
    run_all(|| Frame::v6(5060), "ipv6");
}

#[test]
fn corpus_over_vlan_and_ipv4_options() {
    run_all(
        || Frame {
            vlan: Some(210),
            ipv4_options: vec![0x94, 0x04, 0, 0],
            ..Frame::v4(5060)
        },
        "vlan+options",
    );
}

#[test]
fn corpus_with_zero_udp_checksum_keeps_it_zero() {
    let mut rw = corpus_rewriter();
    for (name, input, expected) in cases() {
        let frame = Frame {
            zero_udp_csum: true,
            ..Frame::v4(5060)
        }
        .build(&input);
        let out = run(&mut rw, &frame);
        let c = check(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.payload, expected, "{name}");
        assert_eq!(c.udp_checksum, 0, "{name}: checksum 0 (none) must stay 0");
    }
}
