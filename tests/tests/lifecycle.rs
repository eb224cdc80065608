//! Lifecycle under load (needs root and sipp): while sipp sends JsSIP-style REGISTERs at a few
//! thousand per second, change what the running rewriter does — `contact add`/`del`, SIGHUP
//! reload, detach and re-attach, `kill -9`, a full DN map — and check that no REGISTER is lost
//! or corrupted: every one arrives (sipp sees all its 200 OKs), the receiver's stack verifies
//! full UDP checksums (TX offload off on the edge side, `InCsumErrors` stays 0), and every
//! Contact is either the client's own (while detached) or a correct rewrite for the settings in
//! force — the new ones from the first REGISTER sent after a change.

use std::{net::UdpSocket, process::Command, time::Duration};

use integration_tests::{
    cli::{Attach, PinRoot, ok, run},
    net::{EDGE_V4, GENESYS_V4, InNetns, Topology, set_tx_csum, udp_in_csum_errors},
    registrar::Registrar,
};

const DNS: u32 = 10;
const FIRST_DN: u32 = 5000;
const RATE: u32 = 5000;
const CALLS: u32 = 55_000;

fn contact_user(i: u32) -> String {
    format!("{:08x}", 0x8000_0000u32 + i)
}

/// The client's own Contact for DN number `i` (what Genesys sees while nothing is attached).
fn original(i: u32) -> String {
    format!(
        "<sip:{}@{:012x}.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-{:012x}>\";expires=600",
        contact_user(i),
        0x3000_0000u64 + i as u64,
        i
    )
}

/// Whether a Contact is right for a DN under some settings.
type Check = Box<dyn Fn(u32, &str) -> bool>;

/// A phase: from packet index `from` until the next phase, every Contact must satisfy `want`.
struct Rule {
    from: usize,
    /// Where the next change began (packets in between may show either setting).
    until: usize,
    what: &'static str,
    want: Check,
}

#[test]
fn changes_under_load_never_lose_or_corrupt_a_register() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is missing: `cargo xtask setup` installs it"
    );
    let topo = Topology::new("life").unwrap();
    let root = PinRoot::new();
    let dir = std::env::temp_dir().join(format!(
        "{}-life",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    let config = |template: &str| {
        format!(
            "[contacts]\ndefault = \"sip:{{dn}}@{template}\"\n[contacts.map]\n\"{FIRST_DN}\" = \"sip:{FIRST_DN}@198.18.0.77\"\n"
        )
    };
    std::fs::write(&cfg, config("192.168.210.54:5060")).unwrap();
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..DNS {
        csv.push_str(&format!(
            "{};{};{:012x};{:012x};600\n",
            FIRST_DN + i,
            contact_user(i),
            0x3000_0000u64 + i as u64,
            i
        ));
    }
    std::fs::write(dir.join("dns.csv"), csv).unwrap();

    let ns = Some(topo.edge.as_str());
    let (sock, errs0) = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        let s = UdpSocket::bind((GENESYS_V4, 5060)).unwrap();
        (s, udp_in_csum_errors())
    };
    {
        let _ns = InNetns::enter(&topo.edge).unwrap();
        set_tx_csum(&topo.edge_if, false);
    }
    let reg = Registrar::start(sock, Duration::from_secs(40));
    let attach_args = ["--config", cfg.to_str().unwrap(), "--max-contacts", "4"];
    let mut att = Some(Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &attach_args,
    ));
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/sipp/uac-register.xml");
    let sipp = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", topo.edge))
        .args([
            "sipp",
            &format!("{GENESYS_V4}:5060"),
            "-sf",
            scenario,
            "-inf",
            dir.join("dns.csv").to_str().unwrap(),
            "-i",
            EDGE_V4,
        ])
        .args([
            "-p",
            "5070",
            "-m",
            &CALLS.to_string(),
            "-r",
            &RATE.to_string(),
            "-l",
            "2000",
            "-timeout",
            "40s",
            "-nostdin",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting sipp");

    // From each mark on (until the next), every Contact must follow the settings in force.
    let mut rules: Vec<Rule> = Vec::new();
    // DN 5000 → `first`, every other DN → the template on `host` (None: unchanged).
    fn settings(first: Option<&'static str>, host: Option<&'static str>) -> Check {
        Box::new(move |dn, c| match (dn == FIRST_DN, first, host) {
            (_, _, None) => c == original(dn - FIRST_DN),
            (true, Some(ip), _) => c == format!("<sip:{FIRST_DN}@{ip}>;expires=600"),
            (_, _, Some(h)) => c == format!("<sip:{dn}@{h}>;expires=600"),
        })
    }
    // Marks "everything sent from now on": waits for in-flight REGISTERs to land first.
    let mark = |reg: &Registrar| {
        std::thread::sleep(Duration::from_millis(300));
        reg.count()
    };
    // Called right before a change: lets the current phase see traffic, then ends it here.
    fn cut(rules: &mut [Rule], reg: &Registrar) {
        std::thread::sleep(Duration::from_millis(400));
        if let Some(r) = rules.last_mut() {
            r.until = reg.count();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "as configured",
        want: settings(Some("198.18.0.77"), Some("192.168.210.54:5060")),
    });

    // contact add takes effect on the next packet.
    cut(&mut rules, &reg);
    ok(
        ns,
        &root,
        &[
            "contact",
            "add",
            &FIRST_DN.to_string(),
            &format!("sip:{FIRST_DN}@198.18.0.88"),
        ],
    );
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "contact add",
        want: settings(Some("198.18.0.88"), Some("192.168.210.54:5060")),
    });
    // A full map (--max-contacts 4): a clear error, traffic unaffected.
    for dn in ["6001", "6002", "6003"] {
        ok(ns, &root, &["contact", "add", dn, "sip:x@198.18.0.5"]);
    }
    let (code, _, err) = run(ns, &root, &["contact", "add", "6004", "sip:x@198.18.0.5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("full"), "{err}");
    // contact del: the template serves it from the next packet on.
    cut(&mut rules, &reg);
    ok(ns, &root, &["contact", "del", &FIRST_DN.to_string()]);
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "contact del",
        want: settings(None, Some("192.168.210.54:5060")),
    });
    // SIGHUP: the file's new template applies; its unchanged map entry is not re-applied over
    // the `contact del` (README: only what the file changed is written).
    cut(&mut rules, &reg);
    std::fs::write(&cfg, config("198.18.0.99")).unwrap();
    att.as_ref().unwrap().signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "SIGHUP",
        want: settings(None, Some("198.18.0.99")),
    });
    // Detach (SIGTERM): REGISTERs pass unchanged; re-attach: the file's settings with the
    // durable run-time change on top (DN 5000 stays deleted).
    cut(&mut rules, &reg);
    let (code, log) = att.take().unwrap().stop();
    assert_eq!(code, 0, "{log}");
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "detached",
        want: settings(None, None),
    });
    cut(&mut rules, &reg);
    att = Some(Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &attach_args,
    ));
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "re-attached",
        want: settings(None, Some("198.18.0.99")),
    });
    // kill -9: the link dies with the process, REGISTERs pass unchanged; a new attach reuses
    // the pinned maps.
    cut(&mut rules, &reg);
    att.as_ref().unwrap().signal("KILL");
    let _ = att.take().unwrap().stop();
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "killed",
        want: settings(None, None),
    });
    cut(&mut rules, &reg);
    att = Some(Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &attach_args,
    ));
    rules.push(Rule {
        from: mark(&reg),
        until: usize::MAX,
        what: "re-attached after kill -9",
        want: settings(None, Some("198.18.0.99")),
    });

    let out = sipp.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sipp saw errors ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = reg.received();
    let errs = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        udp_in_csum_errors() - errs0
    };
    assert_eq!(errs, 0, "the receiver found bad UDP checksums");
    let calls: std::collections::HashSet<&str> = seen.iter().map(|s| s.call_id.as_str()).collect();
    assert_eq!(calls.len(), CALLS as usize, "every REGISTER must arrive");
    // Every Contact is the client's or a well-formed rewrite, whatever the timing.
    let any_form = |dn: u32, c: &str| {
        c == original(dn - FIRST_DN)
            || [
                format!("<sip:{dn}@192.168.210.54:5060>;expires=600"),
                format!("<sip:{dn}@198.18.0.99>;expires=600"),
            ]
            .contains(&c.to_owned())
            || (dn == FIRST_DN
                && ["198.18.0.77", "198.18.0.88"]
                    .iter()
                    .any(|ip| c == format!("<sip:{FIRST_DN}@{ip}>;expires=600")))
    };
    let dn_of = |r: &integration_tests::registrar::Received| r.dn.parse::<u32>().unwrap_or(0);
    for (i, s) in seen.iter().enumerate() {
        assert!(
            any_form(dn_of(s), &s.contact),
            "packet {i}: corrupted Contact {:?} for DN {}",
            s.contact,
            s.dn
        );
    }
    // And exactly the settings in force, between one change and the next.
    for (k, r) in rules.iter().enumerate() {
        let _ = k;
        let until = r.until.min(seen.len());
        let window = &seen[r.from.min(until)..until];
        assert!(!window.is_empty(), "no traffic during {}", r.what);
        if let Some((j, s)) = window
            .iter()
            .enumerate()
            .find(|(_, s)| !(r.want)(dn_of(s), &s.contact))
        {
            panic!(
                "{}: packet {} for DN {} has Contact {:?}",
                r.what,
                r.from + j,
                s.dn,
                s.contact
            );
        }
    }
    println!(
        "lifecycle: {} REGISTERs at {RATE}/s through 9 changes, {} received, 0 lost, 0 checksum errors",
        CALLS,
        calls.len()
    );
    drop(att);
    let _ = std::fs::remove_dir_all(&dir);
}
