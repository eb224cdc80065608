//! Ingress restore through the real kernel programs (BPF_PROG_TEST_RUN, XDP and TC ingress):
//! each case of `tests/corpus-restore/` sends its REGISTER through the egress program (which
//! rewrites and records it), then Genesys' response through the ingress program; the response
//! must come out exactly as the case's `.out.sip`, with valid lengths and checksums (checked by
//! the tests' own checker). The same cases run through the userspace form of the algorithm.

use std::{fs, path::Path};

use integration_tests::{
    kernel::{corpus_config, corpus_rewriter, run, run_ingress},
    packet::{Frame, check},
};
use rewriter_common::{
    ContactUri, Stat,
    restore::{self, Decision},
    sip::{self, MAX_SIP_LEN},
};
use rewriter_user::Ingress;

/// Where the userspace model's REGISTERs go and responses come from.
const PEER: rewriter_common::AddrKey = rewriter_common::AddrKey::v4([198, 18, 0, 2]);

struct Case {
    name: String,
    req: Vec<u8>,
    resp: Vec<u8>,
    out: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let dir = std::env::var_os("RESTORE_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-restore"));
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let read =
        |p: &Path, ext: &str| fs::read(p.to_string_lossy().replace(".req.sip", ext)).unwrap();
    let out: Vec<Case> = names
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".req.sip"))
        .map(|p| Case {
            name: p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".req.sip", ""),
            req: fs::read(p).unwrap(),
            resp: read(p, ".resp.sip"),
            out: read(p, ".out.sip"),
        })
        .collect();
    assert!(
        out.len() >= 20 || std::env::var_os("RESTORE_CORPUS").is_some(),
        "restore corpus went missing: {} cases",
        out.len()
    );
    assert!(out.iter().any(|c| c.resp != c.out), "need restore cases");
    out
}

/// The request's frame (edge -> Genesys) and the response's (Genesys -> edge).
fn frames(v6: bool) -> (Frame, Frame) {
    let req = Frame {
        sport: 5070,
        ..if v6 { Frame::v6(5060) } else { Frame::v4(5060) }
    };
    let resp = req.reply();
    (req, resp)
}

fn run_all(which: Ingress, v6: bool, vlan: bool) {
    let mut rw = corpus_rewriter();
    let (mut req_f, mut resp_f) = frames(v6);
    if vlan {
        req_f.vlan = Some(210);
        resp_f.vlan = Some(210);
    }
    let mut failures = Vec::new();
    for c in cases() {
        rw.clear_registrations().unwrap();
        let _ = run(&mut rw, &req_f.build(&c.req));
        let frame = resp_f.build(&c.resp);
        let before = rw.counters().unwrap();
        let out = run_ingress(&mut rw, which, &frame);
        let after = rw.counters().unwrap();
        let restored = after.get(Stat::Restored) - before.get(Stat::Restored);
        match check(&out) {
            Err(e) => failures.push(format!("{}: invalid frame out: {e}", c.name)),
            Ok(got) if got.payload != c.out => failures.push(format!(
                "{}: payload differs\n--- got\n{}\n--- expected\n{}",
                c.name,
                String::from_utf8_lossy(&got.payload),
                String::from_utf8_lossy(&c.out)
            )),
            Ok(_) => {}
        }
        if c.resp == c.out && out != frame {
            failures.push(format!("{}: pass case not byte-identical", c.name));
        }
        if restored != u64::from(c.resp != c.out) {
            failures.push(format!("{}: restored counter moved by {restored}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{which} v6={v6}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn xdp_restores_corpus_over_ipv4() {
    run_all(Ingress::Xdp, false, false);
}

#[test]
fn xdp_restores_corpus_over_ipv6() {
    run_all(Ingress::Xdp, true, false);
}

#[test]
fn tc_restores_corpus_over_ipv4() {
    run_all(Ingress::Tc, false, false);
}

#[test]
fn tc_restores_corpus_over_ipv6_and_vlan() {
    run_all(Ingress::Tc, true, true);
}

/// The userspace form (record from the egress scan, restore from the response scan) agrees
/// with every case too: the kernel and userspace share the algorithm, the cases check both.
#[test]
fn userspace_restore_matches_corpus() {
    let cfg = corpus_config();
    let mapped = ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap();
    let mut failures = Vec::new();
    for c in cases() {
        let mut m = sip::Msg::zeroed();
        let state = m
            .load(&c.req)
            .then(|| sip::scan(&m, c.req.len(), &cfg))
            .and_then(|s| {
                (s.outcome() == sip::Outcome::Rewrite).then_some(())?;
                let dn = &c.req[s.dn_start as usize..(s.dn_start + s.dn_len) as usize];
                let written = if dn == b"1002" {
                    mapped.bracketed().to_vec()
                } else {
                    let (pre, post) = cfg.template().unwrap();
                    [pre, dn, post].concat()
                };
                restore::record(&c.req, &s, &written, PEER)
            });
        let mut out = vec![0u8; MAX_SIP_LEN];
        let got = match restore::restore(
            &c.resp,
            &cfg,
            PEER,
            |k| state.filter(|(sk, _)| sk == k).map(|(_, st)| st),
            &mut out,
        ) {
            Decision::Restored { len, .. } => out[..len].to_vec(),
            Decision::Pass(_) => c.resp.clone(),
        };
        if got != c.out {
            failures.push(format!(
                "{}:\n--- got\n{}\n--- expected\n{}",
                c.name,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&c.out)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A restore that keeps the length (original URI as long as the written one) goes through the
/// path that first drops a device checksum (TC) and still yields a valid, exact frame.
#[test]
fn equal_length_restore_over_both_hooks() {
    let written = "<sip:1002@192.168.210.54:5060>";
    let original = format!("<sip:{}@h.invalid>", "a".repeat(written.len() - 16));
    assert_eq!(original.len(), written.len());
    let req = format!(
        "REGISTER sip:192.168.210.54 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1:5070;branch=z9hG4bK77\r\nTo: <sip:1002@192.168.210.54>\r\n\
         From: <sip:1002@192.168.210.54>;tag=a1\r\nCall-ID: eq-len-1\r\nCSeq: 3 REGISTER\r\nContact: {original};expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    let resp = |contact: &str| {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5070;branch=z9hG4bK77\r\nTo: <sip:1002@192.168.210.54>;tag=g1\r\n\
             From: <sip:1002@192.168.210.54>;tag=a1\r\nCall-ID: eq-len-1\r\nCSeq: 3 REGISTER\r\nContact: {contact};expires=600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut rw = corpus_rewriter();
    for which in [Ingress::Xdp, Ingress::Tc] {
        for v6 in [false, true] {
            let (req_f, resp_f) = frames(v6);
            let _ = run(&mut rw, &req_f.build(req.as_bytes()));
            let out = run_ingress(&mut rw, which, &resp_f.build(resp(written).as_bytes()));
            let got = check(&out).unwrap_or_else(|e| panic!("{which} v6={v6}: {e}"));
            assert_eq!(
                String::from_utf8_lossy(&got.payload),
                resp(&original),
                "{which} v6={v6}"
            );
        }
    }
}

/// Fail-open rules on ingress: fragments pass and are counted; responses from another port or,
/// with an address set, from an address outside it are not even candidates.
#[test]
fn ingress_candidates_and_fragments() {
    let c = &cases()[0];
    let mut cfg = corpus_config();
    cfg.flags |= rewriter_common::CFG_ADDR_FILTER;
    let mut rw = rewriter_user::Rewriter::load(&cfg).unwrap();
    rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
        .unwrap();
    rw.add_genesys("198.18.0.2".parse().unwrap()).unwrap();
    rw.add_genesys("2001:db8::2".parse().unwrap()).unwrap();
    for which in [Ingress::Xdp, Ingress::Tc] {
        for v6 in [false, true] {
            let (req_f, resp_f) = frames(v6);
            let _ = run(&mut rw, &req_f.build(&c.req));
            assert!(rw.counters().unwrap().get(Stat::Recorded) > 0);
            // From Genesys: restored.
            let out = run_ingress(&mut rw, which, &resp_f.build(&c.resp));
            assert_eq!(check(&out).unwrap().payload, c.out, "{which} v6={v6}");
            let before = rw.counters().unwrap();
            // From another address or port: untouched, not counted.
            let other = if v6 { "2001:db8::3" } else { "198.18.0.3" };
            for f in [
                Frame {
                    src: other.parse().unwrap(),
                    ..resp_f.clone()
                },
                Frame {
                    sport: 5061,
                    ..resp_f.clone()
                },
            ] {
                let frame = f.build(&c.resp);
                assert_eq!(run_ingress(&mut rw, which, &frame), frame, "{which} {f:?}");
            }
            assert_eq!(
                rw.counters().unwrap().get(Stat::Responses),
                before.get(Stat::Responses),
                "{which}: not candidates"
            );
            if !v6 {
                // A first fragment: untouched, counted.
                let frame = Frame {
                    ipv4_frag: 0x2000,
                    ..resp_f.clone()
                }
                .build(&c.resp);
                assert_eq!(
                    run_ingress(&mut rw, which, &frame),
                    frame,
                    "{which}: fragment"
                );
                assert_eq!(
                    rw.counters().unwrap().get(Stat::Fragment),
                    before.get(Stat::Fragment) + 1,
                    "{which}"
                );
            }
        }
    }
}

/// A refresh REGISTER (same Call-ID, same contact) leaves the record as it is; one whose contact
/// changed under the same Call-ID replaces it: the response then gets the new contact back.
#[test]
fn refresh_keeps_and_a_changed_contact_replaces_the_record() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let (req_f, resp_f) = frames(false);
    let mut rw = corpus_rewriter();
    let req = String::from_utf8_lossy(&c.req).into_owned();
    // The first Contact URI of the request, and a variant of it.
    let start = req.find("Contact: <").unwrap() + "Contact: ".len();
    let uri = &req[start..start + req[start..].find('>').unwrap() + 1];
    let other_uri = uri.replacen("sip:", "sip:z", 1);
    let changed = req.replacen(uri, &other_uri, 1);
    for _ in 0..3 {
        let _ = run(&mut rw, &req_f.build(&c.req));
    }
    assert_eq!(rw.counters().unwrap().get(Stat::Recorded), 3);
    let out = run_ingress(&mut rw, Ingress::Xdp, &resp_f.build(&c.resp));
    assert_eq!(check(&out).unwrap().payload, c.out);
    let _ = run(&mut rw, &req_f.build(changed.as_bytes()));
    let out = run_ingress(&mut rw, Ingress::Tc, &resp_f.build(&c.resp));
    let want = String::from_utf8_lossy(&c.out).replacen(uri, &other_uri, 1);
    assert_eq!(String::from_utf8_lossy(&check(&out).unwrap().payload), want);
}

/// XDP edits only frames whose UDP checksum verifies: one that does not (here: corrupted; on a
/// host, a CHECKSUM_PARTIAL frame from a local sender) passes XDP untouched, counted `to_tc`,
/// for the TC ingress restore, whose checksum helpers know the skb's checksum mode.
#[test]
fn xdp_leaves_frames_with_an_unverified_checksum_to_tc() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let mut rw = corpus_rewriter();
    for v6 in [false, true] {
        let (req_f, resp_f) = frames(v6);
        let _ = run(&mut rw, &req_f.build(&c.req));
        let mut frame = resp_f.build(&c.resp);
        let csum_at = frame.len() - c.resp.len() - 2;
        frame[csum_at] ^= 0x5a;
        let before = rw.counters().unwrap();
        // BPF_PROG_TEST_RUN hands back XDP metadata in front of the frame: the handoff mark.
        let marked = [&rewriter_common::XDP_HANDOFF.to_ne_bytes()[..], &frame].concat();
        assert_eq!(
            run_ingress(&mut rw, Ingress::Xdp, &frame),
            marked,
            "v6={v6}: untouched, marked for TC"
        );
        let after = rw.counters().unwrap();
        assert_eq!(after.get(Stat::ToTc), before.get(Stat::ToTc) + 1, "v6={v6}");
        assert_eq!(
            after.get(Stat::Restored),
            before.get(Stat::Restored),
            "v6={v6}"
        );
        // The same response with its checksum intact is restored by XDP itself.
        let out = run_ingress(&mut rw, Ingress::Xdp, &resp_f.build(&c.resp));
        assert_eq!(check(&out).unwrap().payload, c.out, "v6={v6}");
    }
}

/// A record whose key check does not match its key (what a reader sees when the LRU element
/// it holds was reused for another registration) is not used: the response passes untouched.
#[test]
fn a_record_of_another_key_is_not_used() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let (req_f, resp_f) = frames(false);
    let mut rw = corpus_rewriter();
    let _ = run(&mut rw, &req_f.build(&c.req));
    let (key, mut st) = rw.registrations().unwrap().iter().next().unwrap().unwrap();
    st.key_check ^= 1;
    rw.registrations().unwrap().insert(key, st, 0).unwrap();
    for which in [Ingress::Xdp, Ingress::Tc] {
        let frame = resp_f.build(&c.resp);
        let before = rw.counters().unwrap().get(Stat::NoState);
        assert_eq!(run_ingress(&mut rw, which, &frame), frame, "{which}");
        assert_eq!(
            rw.counters().unwrap().get(Stat::NoState),
            before + 1,
            "{which}"
        );
    }
}

/// A REGISTER that is rewritten but cannot be recorded (an original URI holding bytes a
/// configured URI may not, as a client smuggling a header line through the restore would send;
/// or more contacts than a record holds) removes the record an earlier REGISTER of the same
/// Call-ID and DN left: the next 2xx passes as it came (`no_state`) instead of getting the
/// earlier Contact, and nothing the client sent that a configured URI could not hold is ever
/// written into a response.
#[test]
fn an_unrecordable_register_removes_the_earlier_record() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let (req_f, resp_f) = frames(false);
    let req = String::from_utf8_lossy(&c.req).into_owned();
    let start = req.find("Contact: <").unwrap() + "Contact: ".len();
    let uri = &req[start..start + req[start..].find('>').unwrap() + 1];
    let bare = &uri[1..uri.len() - 1];
    let five = (0..5)
        .map(|i| format!("<{}>", bare.replacen("sip:", &format!("sip:c{i}"), 1)))
        .collect::<Vec<_>>()
        .join(", ");
    // One program for every case (each load is a verifier run: tens of seconds under TCG).
    let mut rw = corpus_rewriter();
    for bad in [
        format!("<{bare}\nX-Injected: yes>"),
        format!("<{}>", bare.replacen("sip:", "sip:a\0b", 1)),
        format!("<{}>", bare.replacen("sip:", "sip:a\"b", 1)),
        five,
    ] {
        rw.clear_registrations().unwrap();
        let recorded = rw.counters().unwrap().get(Stat::Recorded);
        let not_recorded = rw.counters().unwrap().get(Stat::NotRecorded);
        let _ = run(&mut rw, &req_f.build(&c.req));
        assert_eq!(rw.counters().unwrap().get(Stat::Recorded), recorded + 1);
        let out = run_ingress(&mut rw, Ingress::Tc, &resp_f.build(&c.resp));
        assert_eq!(check(&out).unwrap().payload, c.out, "recorded first");
        let second = req.replacen(uri, &bad, 1);
        let rewritten = run(&mut rw, &req_f.build(second.as_bytes()));
        assert_ne!(
            check(&rewritten).unwrap().payload,
            second.as_bytes(),
            "{bad:?}: still rewritten"
        );
        let counters = rw.counters().unwrap();
        assert_eq!(counters.get(Stat::NotRecorded), not_recorded + 1, "{bad:?}");
        for which in [Ingress::Xdp, Ingress::Tc] {
            let frame = resp_f.build(&c.resp);
            assert_eq!(
                run_ingress(&mut rw, which, &frame),
                frame,
                "{bad:?} {which}: the earlier record was used"
            );
        }
        assert_eq!(
            rw.counters().unwrap().get(Stat::NoState),
            counters.get(Stat::NoState) + 2,
            "{bad:?}"
        );
    }
}

/// A 2xx is restored only when it comes from the address its REGISTER went to: from anywhere
/// else (any host sending from the Genesys port, with no address set configured) it passes
/// as it came, counted `wrong_source`.
#[test]
fn a_2xx_from_another_address_is_not_restored() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let mut rw = corpus_rewriter();
    for v6 in [false, true] {
        let (req_f, resp_f) = frames(v6);
        rw.clear_registrations().unwrap();
        let _ = run(&mut rw, &req_f.build(&c.req));
        let other = Frame {
            src: if v6 { "2001:db8::9" } else { "198.18.0.9" }
                .parse()
                .unwrap(),
            ..resp_f.clone()
        };
        for which in [Ingress::Xdp, Ingress::Tc] {
            let frame = other.build(&c.resp);
            let before = rw.counters().unwrap().get(Stat::WrongSource);
            assert_eq!(
                run_ingress(&mut rw, which, &frame),
                frame,
                "v6={v6} {which}"
            );
            assert_eq!(
                rw.counters().unwrap().get(Stat::WrongSource),
                before + 1,
                "v6={v6} {which}"
            );
        }
        // From Genesys itself it is restored.
        let out = run_ingress(&mut rw, Ingress::Tc, &resp_f.build(&c.resp));
        assert_eq!(check(&out).unwrap().payload, c.out, "v6={v6}");
    }
}

/// Records one DN may hold (`restore::MAX_PER_DN`).
const K: usize = restore::MAX_PER_DN;

/// Corpus case 02 (JsSIP 3.10 REGISTER with Digest, template DN 2001): its REGISTER, 200 OK
/// and restored 200 OK, read once (a test that makes thousands of variants must not read the
/// corpus for each: slow under TCG in `cargo xtask vm-test`).
struct Jssip([String; 3]);

impl Jssip {
    fn load() -> Self {
        let c = cases()
            .into_iter()
            .find(|c| c.name.starts_with("02-"))
            .unwrap();
        let text = |m: &[u8]| String::from_utf8_lossy(m).into_owned();
        Jssip([text(&c.req), text(&c.resp), text(&c.out)])
    }

    /// The three for DN `dn` (four digits) and Call-ID `call_id`: (REGISTER, 200 OK, the 200 OK
    /// restored).
    fn with(&self, dn: &str, call_id: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let swap = |t: &String| {
            t.replace("2001", dn)
                .replace("a7s0d3k9l1q5w8e2r6t4yu", call_id)
                .into_bytes()
        };
        (swap(&self.0[0]), swap(&self.0[1]), swap(&self.0[2]))
    }
}

/// The counter `name`, found by its stable name (as `stats` and the metrics show it).
fn counter(rw: &rewriter_user::Rewriter, name: &str) -> u64 {
    let stat = Stat::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no counter {name}"));
    rw.counters().unwrap().get(stat)
}

/// [`counter`], 0 where there is no such counter (yet).
fn counter_or_zero(rw: &rewriter_user::Rewriter, name: &str) -> u64 {
    Stat::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .map_or(0, |s| rw.counters().unwrap().get(s))
}

/// Rule 8: one DN holds at most K records. REGISTERs of DN A with K + N fresh Call-IDs leave
/// A's newest K recorded and replace its oldest N (counted `record_replaced`); the record of
/// DN B stays. Refreshes (same Call-ID, same contact) replace nothing.
#[test]
fn one_dn_holds_at_most_k_records_and_other_dns_keep_theirs() {
    const N: usize = 3;
    let (req_f, resp_f) = frames(false);
    let mut rw = corpus_rewriter();
    let b = cases()
        .into_iter()
        .find(|c| c.name.starts_with("01-"))
        .unwrap();
    let _ = run(&mut rw, &req_f.build(&b.req));
    let jssip = Jssip::load();
    let a: Vec<_> = (0..K + N)
        .map(|i| jssip.with("2001", &format!("bound{i:02}-k9l1q5w8e2r6t4yu")))
        .collect();
    for (req, _, _) in &a {
        let _ = run(&mut rw, &req_f.build(req));
    }
    assert_eq!(
        rw.counters().unwrap().get(Stat::Recorded),
        (K + N + 1) as u64
    );
    let replaced = counter_or_zero(&rw, "record_replaced");
    // Refreshes of B and of A's newest K: found as they are, nothing replaced.
    let _ = run(&mut rw, &req_f.build(&b.req));
    for (req, _, _) in &a[N..] {
        let _ = run(&mut rw, &req_f.build(req));
    }
    for which in [Ingress::Xdp, Ingress::Tc] {
        let out = run_ingress(&mut rw, which, &resp_f.build(&b.resp));
        assert_eq!(check(&out).unwrap().payload, b.out, "{which}: DN B");
        for (i, (_, resp, restored)) in a.iter().enumerate() {
            let frame = resp_f.build(resp);
            let out = run_ingress(&mut rw, which, &frame);
            if i < N {
                assert!(
                    out == frame,
                    "{which}: A's Call-ID {i} was replaced, yet restored"
                );
            } else {
                assert_eq!(
                    check(&out).unwrap().payload,
                    *restored,
                    "{which}: A's Call-ID {i} is among the newest {K}"
                );
            }
        }
    }
    assert_eq!(rw.registrations().unwrap().keys().count(), K + 1);
    assert_eq!(replaced, N as u64);
    assert_eq!(counter(&rw, "record_replaced"), N as u64, "refreshes");
}

/// The case, scaled down: a REGISTER flood for one DN with a fresh Call-ID each (4x
/// the map's capacity, as ~16 k REGISTERs against the default 16 384) evicts no other DN's
/// record: every victim's 200 OK is still restored.
#[test]
fn a_flood_for_one_dn_evicts_no_other_dns_records() {
    // Small enough to run fast, large enough that the kernel's LRU (free nodes handed to CPUs
    // 128 at a time, kernel/bpf/bpf_lru_list.c LOCAL_FREE_TARGET, v6.1 to v6.18) never has to
    // shrink the live records of 2 CPUs.
    const CAP: u32 = 1024;
    const VICTIMS: usize = 128;
    const FLOOD: usize = 4 * CAP as usize;
    let (req_f, resp_f) = frames(false);
    let mut rw = rewriter_user::Rewriter::load_capacities(
        &corpus_config(),
        rewriter_common::MAX_CONTACTS,
        CAP,
    )
    .unwrap();
    let jssip = Jssip::load();
    let victims: Vec<_> = (0..VICTIMS)
        .map(|i| {
            jssip.with(
                &format!("{}", 3000 + i),
                &format!("victim{i:03}-q5w8e2r6t4yu"),
            )
        })
        .collect();
    for (req, _, _) in &victims {
        let _ = run(&mut rw, &req_f.build(req));
    }
    for i in 0..FLOOD {
        let (req, _, _) = jssip.with("2001", &format!("flood{i:05}-q5w8e2r6t4yu"));
        let _ = run(&mut rw, &req_f.build(&req));
    }
    let mut lost = Vec::new();
    for (i, (_, resp, restored)) in victims.iter().enumerate() {
        let out = run_ingress(&mut rw, Ingress::Xdp, &resp_f.build(resp));
        if check(&out).unwrap().payload != *restored {
            lost.push(3000 + i);
        }
    }
    assert!(
        lost.is_empty(),
        "{} victims lost their record: {lost:?}",
        lost.len()
    );
    let recorded = rw.counters().unwrap().get(Stat::Recorded);
    assert_eq!(recorded, (VICTIMS + FLOOD) as u64);
    assert_eq!(rw.registrations().unwrap().keys().count(), VICTIMS + K);
    assert_eq!(counter(&rw, "record_replaced"), (FLOOD - K) as u64);
}
