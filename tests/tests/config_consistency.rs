//! One packet never mixes two versions of the configuration: userspace switches the default
//! template and the keep list between two versions as fast as it can while JsSIP REGISTERs
//! run through the egress program on both CPUs (BPF_PROG_TEST_RUN). Every output must be
//! exactly one version's rewrite, written out by hand below, with valid checksums.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use integration_tests::{
    kernel::PASS,
    kernel::pin_to_cpu,
    packet::{Frame, check},
};
use rewriter_common::Config;
use rewriter_user::Rewriter;

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");
const CONTACT: &str = "Contact: <sip:84jp7d1i@3tglb5esjoiv.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-0123456789ab>\";expires=600";

/// REGISTERs in all, split over the two CPUs; the run also stops after `LIMIT`.
const TOTAL: u64 = 1_000_000;
const LIMIT: Duration = Duration::from_secs(120);

/// (template text before `{dn}`, after it, keep list, the Contact line the rules give).
const VERSIONS: [(&str, &str, &[&str], &str); 2] = [
    (
        "sip:",
        "@198.18.50.7:1",
        &["expires"],
        "Contact: <sip:1002@198.18.50.7:1>;expires=600",
    ),
    (
        "sips:",
        "@198.18.200.200:65000;transport=tcp",
        &["reg-id", "q"],
        "Contact: <sips:1002@198.18.200.200:65000;transport=tcp>;reg-id=1",
    ),
];

fn config(v: usize) -> Config {
    let (pre, post, keep, _) = VERSIONS[v];
    let mut c = Config::new(5060);
    for k in keep {
        assert!(c.add_keep(k.as_bytes()));
    }
    assert!(c.set_template(pre.as_bytes(), post.as_bytes()));
    c
}

#[test]
fn a_register_never_mixes_two_configuration_versions() {
    assert!(REGISTER.contains(CONTACT), "the corpus REGISTER changed");
    let expected: Vec<Vec<u8>> = VERSIONS
        .iter()
        .map(|v| REGISTER.replace(CONTACT, v.3).into_bytes())
        .collect();
    let frame = Frame::v4(5060).build(REGISTER.as_bytes());

    let mut rw = Rewriter::load(&config(0)).unwrap();
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/sipr-cfg-{}", std::process::id()));
    let _ = std::fs::remove_file(&pin);
    rw.program_mut().unwrap().pin(&pin).unwrap();
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unpin = Unpin(pin.clone());

    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let done = AtomicBool::new(false);
    let (publishes, mixed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut seen = [0u64; 2];
    std::thread::scope(|s| {
        let runners: Vec<_> = (0..cpus)
            .map(|cpu| {
                let (frame, expected, pin, mixed) = (&frame, &expected, &pin, &mixed);
                s.spawn(move || {
                    pin_to_cpu(cpu);
                    let prog = SchedClassifier::from_pin(pin).unwrap();
                    let started = Instant::now();
                    let mut seen = [0u64; 2];
                    let mut out = vec![0u8; frame.len() + 1024];
                    for i in 0..TOTAL / cpus as u64 {
                        let mut opts = TestRunOptions::new();
                        opts.data_in = Some(frame);
                        opts.data_out = Some(&mut out);
                        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
                        assert_eq!(res.return_value, PASS);
                        let got = &out[..res.data_size_out as usize];
                        match check(got).map(|c| expected.iter().position(|e| *e == c.payload)) {
                            Ok(Some(v)) => seen[v] += 1,
                            other => {
                                if mixed.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!(
                                        "REGISTER {i} on CPU {cpu} is neither version ({other:?}): {:?}",
                                        check(got).map(|c| String::from_utf8_lossy(&c.payload).into_owned())
                                    );
                                }
                            }
                        }
                        if i % 1024 == 0 && started.elapsed() > LIMIT {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        // The publisher: alternate the two versions until the runners are done.
        let publisher = s.spawn(|| {
            let mut v = 0;
            while !done.load(Ordering::Relaxed) {
                v ^= 1;
                rw.set_config(&config(v)).unwrap();
                publishes.fetch_add(1, Ordering::Relaxed);
            }
        });
        for r in runners {
            let got = r.join().unwrap();
            seen[0] += got[0];
            seen[1] += got[1];
        }
        done.store(true, Ordering::Relaxed);
        publisher.join().unwrap();
    });
    let (publishes, mixed) = (publishes.into_inner(), mixed.into_inner());
    println!(
        "{} REGISTERs on {cpus} CPUs during {publishes} configuration updates: {} version A, {} version B, {mixed} neither",
        seen[0] + seen[1] + mixed,
        seen[0],
        seen[1]
    );
    assert_eq!(mixed, 0, "REGISTERs that mixed two configuration versions");
    assert!(
        publishes >= 2 && seen[0] > 0 && seen[1] > 0,
        "both versions must have been live: {seen:?}, {publishes} updates"
    );
}

/// The same on a live veth with the real commands: `sip-rewriter default set` and SIGHUP
/// reloads of a config file switch template and keep list while REGISTERs flow. Every Contact
/// Genesys receives is one of the four combinations those commands can configure (template A
/// or B, keep list A or B), every full UDP checksum verifies (TX offload off on the sender).
#[test]
fn live_default_set_and_sighup_never_mix_versions() {
    use integration_tests::{
        cli::{Attach, PinRoot, ok},
        net::{EDGE_V4, GENESYS_V4, InNetns, Topology, set_tx_csum, udp_in_csum_errors},
    };
    use std::net::UdpSocket;
    const SEND: u64 = 1_000_000;
    let register = REGISTER.replace("1002", "1003");
    let expected: Vec<Vec<u8>> = [VERSIONS[0].3, VERSIONS[1].3]
        .iter()
        .flat_map(|tpl| {
            let uri = &tpl[..tpl.find('>').unwrap() + 1];
            ["expires=600", "reg-id=1"].map(|p| format!("{uri};{p}").replace("1002", "1003"))
        })
        .map(|line| register.replace(CONTACT, &line).into_bytes())
        .collect();
    let file = |v: usize| {
        let (pre, post, keep, _) = VERSIONS[v];
        let keep: Vec<String> = keep.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "[contacts]\ndefault = \"{pre}{{dn}}{post}\"\nkeep_params = [{}]\n",
            keep.join(", ")
        )
    };

    let topo = Topology::new("cfg").unwrap();
    let root = PinRoot::new();
    let cfg = std::env::temp_dir().join(format!(
        "{}-cfg.toml",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, file(0)).unwrap();
    let (rx, errs0) = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        let s = UdpSocket::bind((GENESYS_V4, 5060)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let size: libc::c_int = 16 << 20;
        // SAFETY: setsockopt with a valid int option on our socket.
        unsafe {
            use std::os::fd::AsRawFd as _;
            let p = &size as *const libc::c_int as *const libc::c_void;
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, 4);
        }
        (s, udp_in_csum_errors())
    };
    let tx = {
        let _ns = InNetns::enter(&topo.edge).unwrap();
        set_tx_csum(&topo.edge_if, false);
        UdpSocket::bind((EDGE_V4, 0)).unwrap()
    };
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg.to_str().unwrap(), "--interval", "3600"],
    );
    let ns = Some(topo.edge.as_str());

    let sending = AtomicBool::new(true);
    let (changes, wrong) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut sent, mut received) = (0u64, 0u64);
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut buf = vec![0u8; 4096];
            let mut got = 0u64;
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        got += 1;
                        if !expected.iter().any(|e| e[..] == buf[..n])
                            && wrong.fetch_add(1, Ordering::Relaxed) < 3
                        {
                            eprintln!(
                                "received neither version: {}",
                                String::from_utf8_lossy(&buf[..n])
                            );
                        }
                    }
                    Err(_) if !sending.load(Ordering::Relaxed) => return got,
                    Err(_) => {}
                }
            }
        });
        let changer = s.spawn(|| {
            let mut i = 0usize;
            while sending.load(Ordering::Relaxed) {
                i += 1;
                if i.is_multiple_of(4) {
                    // Rewritten in place (truncated, then written, as `echo > file` does),
                    // the harder case for a reader than a file renamed over. A reload, from
                    // this SIGHUP or from the file watch, must never apply a half-written file:
                    // an empty one has no default template, and its REGISTERs pass as
                    // dn_unknown (4 516 to 173 848 of 1 M when a reload read the file twice,
                    // once for the change check and once to parse it, without waiting for the
                    // bytes to hold still).
                    std::fs::write(&cfg, file(i / 4 % 2)).unwrap();
                    att.signal("HUP");
                } else {
                    let (pre, post, _, _) = VERSIONS[i % 2];
                    ok(
                        ns,
                        &root,
                        &["default", "set", &format!("{pre}{{dn}}{post}")],
                    );
                }
                changes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let started = Instant::now();
        while sent < SEND && started.elapsed() < LIMIT {
            if tx.send_to(register.as_bytes(), (GENESYS_V4, 5060)).is_ok() {
                sent += 1;
            }
            // Bounded pace: the receiver keeps up.
            if sent.is_multiple_of(64) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        sending.store(false, Ordering::Relaxed);
        changer.join().unwrap();
        received = receiver.join().unwrap();
    });
    let (_, log) = att.stop();
    // The file's versions must really have been applied, not all refused as still changing.
    let (reloads, refused) = (
        log.matches("reloaded ").count(),
        log.matches("reload of ").count(),
    );
    let _ = std::fs::remove_file(&cfg);
    let errs = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        udp_in_csum_errors() - errs0
    };
    let (changes, wrong) = (changes.into_inner(), wrong.into_inner());
    println!(
        "{sent} REGISTERs sent, {received} received during {changes} changes ({reloads} file reloads applied, {refused} refused): {wrong} neither version, {errs} UDP checksum errors"
    );
    assert_eq!(wrong, 0, "REGISTERs that mixed two configuration versions");
    assert_eq!(errs, 0, "UDP checksum errors at Genesys");
    assert!(
        received > sent * 9 / 10 && changes >= 8 && reloads >= 2,
        "too little traffic, too few changes or too few reloads to mean anything"
    );
}
