//! One packet never sees half of a DN entry or of a restore record (needs root): userspace (or
//! the egress program) replaces an entry with one of another length as fast as it can while
//! packets run through the programs on the other CPU (BPF_PROG_TEST_RUN). Every output must be
//! exactly one version, with valid checksums; a restore that notices the record changed under
//! it passes the response as it came (`no_state`), which is allowed, and nothing else is.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use integration_tests::{
    kernel::pin_to_cpu,
    kernel::{PASS, corpus_rewriter},
    packet::{Frame, check},
};
use rewriter_user::Ingress;

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");
const RESPONSE: &str = include_str!("../corpus-restore/01-jssip-map-1002-restored.resp.sip");
const RESTORED: &str = include_str!("../corpus-restore/01-jssip-map-1002-restored.out.sip");
const REQUEST: &str = include_str!("../corpus-restore/01-jssip-map-1002-restored.req.sip");
const CONTACT_URI: &str = "<sip:84jp7d1i@3tglb5esjoiv.invalid;transport=ws>";

/// Packets in all per test; each test also stops after `LIMIT`.
const TOTAL: u64 = 400_000;
const LIMIT: Duration = Duration::from_secs(60);

/// A pinned program, unpinned on drop.
struct Pinned(PathBuf);

impl Pinned {
    fn new(prog: &mut SchedClassifier, what: &str) -> Self {
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/sipr-entry-{what}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        prog.pin(&p).unwrap();
        Self(p)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn test_run(prog: &SchedClassifier, frame: &[u8], out: &mut [u8]) -> usize {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(out);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    assert_eq!(res.return_value, PASS, "the program must never drop");
    res.data_size_out as usize
}

fn other_cpu() -> usize {
    usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1)
}

#[test]
fn a_register_never_sees_half_a_dn_entry() {
    // Two URIs for 1002 of different lengths: a torn read would mix one's length with the
    // other's text.
    const URIS: [&str; 2] = [
        "sip:1002@198.18.60.1",
        "sips:1002@198.18.61.222:65001;transport=tls",
    ];
    let contact = |uri: &str| format!("Contact: <{uri}>;expires=600");
    let orig = REGISTER
        .lines()
        .find(|l| l.starts_with("Contact:"))
        .unwrap()
        .to_owned();
    let expected: Vec<Vec<u8>> = URIS
        .iter()
        .map(|u| REGISTER.replace(&orig, &contact(u)).into_bytes())
        .collect();
    let frame = Frame::v4(5060).build(REGISTER.as_bytes());
    let mut rw = corpus_rewriter();
    // One of the two versions from the first packet on (corpus_rewriter's own entry for 1002
    // is neither: REGISTERs run before the writer's first update).
    rw.set_contact(b"1002", URIS[0].as_bytes()).unwrap();
    let pin = Pinned::new(rw.program_mut().unwrap(), "dn");
    let done = AtomicBool::new(false);
    let (updates, torn) = (AtomicU64::new(0), AtomicU64::new(0));
    let seen = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            pin_to_cpu(0);
            let prog = SchedClassifier::from_pin(&pin.0).unwrap();
            let (started, mut seen) = (Instant::now(), [0u64; 2]);
            let mut out = vec![0u8; frame.len() + 1024];
            for i in 0..TOTAL {
                let n = test_run(&prog, &frame, &mut out);
                match check(&out[..n]).map(|c| expected.iter().position(|e| *e == c.payload)) {
                    Ok(Some(v)) => seen[v] += 1,
                    other => {
                        if torn.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("REGISTER {i}: neither entry ({other:?})");
                        }
                    }
                }
                if i % 1024 == 0 && started.elapsed() > LIMIT {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
            seen
        });
        // The writer: `contact add` as fast as userspace can, on the other CPU.
        pin_to_cpu(other_cpu());
        let mut v = 0;
        while !done.load(Ordering::Relaxed) {
            v ^= 1;
            rw.set_contact(b"1002", URIS[v].as_bytes()).unwrap();
            updates.fetch_add(1, Ordering::Relaxed);
        }
        runner.join().unwrap()
    });
    let (updates, torn) = (updates.into_inner(), torn.into_inner());
    println!(
        "{} REGISTERs during {updates} DN entry updates: {} / {} per version, {torn} torn",
        seen[0] + seen[1] + torn,
        seen[0],
        seen[1]
    );
    assert_eq!(torn, 0, "REGISTERs that saw half an entry");
    assert!(
        seen[0] > 0 && seen[1] > 0 && updates > 1000,
        "too few updates to mean anything"
    );
}

#[test]
fn a_restore_never_uses_half_a_record() {
    // The egress rewrites REGISTERs of one Call-ID and DN whose contact alternates between two
    // URIs of different lengths, replacing the record in place each time (an LRU element),
    // while the TC ingress restore runs Genesys' 200 OK on the other CPU.
    let other_uri = "<sip:zz84jp7d1i-longer-than-the-first@3tglb5esjoiv.invalid;transport=ws>";
    assert!(REQUEST.contains(CONTACT_URI) && RESTORED.contains(CONTACT_URI));
    let requests: Vec<Vec<u8>> = [CONTACT_URI, other_uri]
        .iter()
        .map(|u| {
            let req = Frame {
                sport: 5070,
                ..Frame::v4(5060)
            };
            req.build(REQUEST.replace(CONTACT_URI, u).as_bytes())
        })
        .collect();
    let expected: Vec<Vec<u8>> = [CONTACT_URI, other_uri]
        .iter()
        .map(|u| RESTORED.replace(CONTACT_URI, u).into_bytes())
        .collect();
    let resp_frame = Frame {
        sport: 5070,
        ..Frame::v4(5060)
    }
    .reply()
    .build(RESPONSE.as_bytes());
    let mut rw = corpus_rewriter();
    rw.load_ingress(Ingress::Tc).unwrap();
    let egress = Pinned::new(rw.program_mut().unwrap(), "eg");
    let ingress = Pinned::new(rw.tc_ingress_mut().unwrap(), "in");
    // A first record, so that the restore has something from the start.
    let eg = SchedClassifier::from_pin(&egress.0).unwrap();
    let mut scratch = vec![0u8; 4096];
    test_run(&eg, &requests[0], &mut scratch);
    let done = AtomicBool::new(false);
    let (records, torn, unchanged) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let seen = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            pin_to_cpu(0);
            let prog = SchedClassifier::from_pin(&ingress.0).unwrap();
            let (started, mut seen) = (Instant::now(), [0u64; 2]);
            let mut out = vec![0u8; resp_frame.len() + 1024];
            for i in 0..TOTAL {
                let n = test_run(&prog, &resp_frame, &mut out);
                let got = &out[..n];
                if got == resp_frame.as_slice() {
                    unchanged.fetch_add(1, Ordering::Relaxed);
                } else {
                    match check(got).map(|c| expected.iter().position(|e| *e == c.payload)) {
                        Ok(Some(v)) => seen[v] += 1,
                        other => {
                            if torn.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("response {i}: neither original ({other:?})");
                            }
                        }
                    }
                }
                if i % 1024 == 0 && started.elapsed() > LIMIT {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
            seen
        });
        pin_to_cpu(other_cpu());
        let mut v = 0;
        let mut out = vec![0u8; 4096];
        while !done.load(Ordering::Relaxed) {
            v ^= 1;
            test_run(&eg, &requests[v], &mut out);
            records.fetch_add(1, Ordering::Relaxed);
        }
        runner.join().unwrap()
    });
    let (records, torn, unchanged) = (
        records.into_inner(),
        torn.into_inner(),
        unchanged.into_inner(),
    );
    println!(
        "{} responses during {records} record updates: {} / {} per original, {unchanged} passed as they came, {torn} torn",
        seen[0] + seen[1] + unchanged + torn,
        seen[0],
        seen[1]
    );
    assert_eq!(torn, 0, "responses restored from half a record");
    assert!(
        seen[0] > 0 && seen[1] > 0 && records > 1000,
        "too few updates to mean anything"
    );
}
