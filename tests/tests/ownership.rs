//! One owner per attachment (needs root): a second `attach` on the same interface refuses
//! without touching the first one's pins; `status` and `detach` from another network namespace
//! neither call a running attachment stale nor cut it; a failed `attach` keeps pins it did not
//! create; a command under `ip netns exec` (private /sys) refuses instead of pinning where no
//! other command looks.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode};
use integration_tests::{
    cli::{Attach, PinRoot, bin, cmd, ok, run},
    contact_of,
    net::{InNetns, SipPath, Topology},
};
use rewriter_common::Config;
use rewriter_user::Rewriter;

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");

fn status(ns: Option<&str>, root: &PinRoot) -> serde_json::Value {
    serde_json::from_str(&run(ns, root, &["status", "--json"]).1).unwrap()
}

#[test]
fn two_attaches_at_once_leave_one_owner_that_every_command_reaches() {
    let topo = Topology::new("own2").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    for round in 0..3 {
        // In `Attach`s, so that a failed assertion stops them (its Drop) instead of leaking them.
        let start = || Attach {
            child: Some(
                cmd(ns, &root, &["attach", "--iface", &topo.edge_if])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            ),
            pins: root.0.join(&topo.edge_if),
        };
        let mut a = start();
        let mut b = start();
        let exited = |x: &mut Attach| x.child.as_mut().unwrap().try_wait().unwrap().is_some();
        // The loser exits (1) on its own; the winner runs until stopped.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut loser, mut winner) = loop {
            if exited(&mut a) {
                break (a, b);
            }
            if exited(&mut b) {
                break (b, a);
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: neither attach exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = loser.child.take().unwrap().wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "round {round}: {err}");
        assert!(err.contains("already attached"), "round {round}: {err}");
        // The winner comes up (it may still be loading) and every command reaches it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = status(ns, &root);
            if s[0]["state"] == "running" {
                let pid = winner.child.as_ref().unwrap().id();
                assert_eq!(s[0]["owner_pid"], pid, "round {round}: {s}");
                break;
            }
            assert!(!exited(&mut winner), "round {round}: the winner exited");
            assert!(Instant::now() < deadline, "round {round}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
        ok(
            ns,
            &root,
            &["contact", "add", "1002", "sip:1002@198.18.0.44"],
        );
        let path = SipPath::new(&topo).unwrap();
        assert_eq!(
            contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
            "Contact: <sip:1002@198.18.0.44>;expires=600",
            "round {round}"
        );
        winner.signal("TERM");
        let out = winner.child.take().unwrap().wait().unwrap();
        assert!(out.success(), "round {round}: winner exit {out}");
        assert!(
            !root.0.join(&topo.edge_if).exists(),
            "round {round}: pins left"
        );
    }
}

#[test]
fn another_namespace_sees_running_and_cannot_detach_it() {
    let topo = Topology::new("ownns").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    let pid = att.child.as_ref().unwrap().id();
    // From the test's own namespace, where the interface does not exist.
    let s = status(None, &root);
    assert_eq!(s[0]["state"], "running", "{s}");
    assert_eq!(s[0]["owner_pid"], pid, "{s}");
    let (code, _, err) = run(None, &root, &["detach", "--iface", &topo.edge_if]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&pid.to_string()), "names the owner: {err}");
    assert!(
        err.contains(&format!("network namespace {}", topo.edge)),
        "names its namespace: {err}"
    );
    // Nothing was cut: the map is reachable and the program rewrites.
    ok(
        ns,
        &root,
        &["contact", "add", "1002", "sip:1002@198.18.0.44"],
    );
    let path = SipPath::new(&topo).unwrap();
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        "Contact: <sip:1002@198.18.0.44>;expires=600"
    );
    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_persisted_attachment_is_detached_from_its_namespace_and_gone_with_its_interface() {
    let topo = Topology::new("ownper").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    ok(
        ns,
        &root,
        &["attach", "--iface", &topo.edge_if, "--persist"],
    );
    assert_eq!(status(None, &root)[0]["state"], "persisted");
    // Another namespace may have an interface of that name: detach refuses there.
    let (code, _, err) = run(None, &root, &["detach", "--iface", &topo.edge_if]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&topo.edge), "names the namespace: {err}");
    assert_eq!(status(ns, &root)[0]["state"], "persisted");
    ok(ns, &root, &["detach", "--iface", &topo.edge_if]);
    assert!(!root.0.join(&topo.edge_if).exists());
    // Persisted again, then the interface is deleted: its links are dead.
    ok(
        ns,
        &root,
        &["attach", "--iface", &topo.edge_if, "--persist"],
    );
    integration_tests::net::ip(&["-n", &topo.edge, "link", "del", &topo.edge_if]).unwrap();
    let s = status(None, &root);
    assert_eq!(s[0]["state"], "gone", "{s}");
    let out = ok(None, &root, &["detach", "--iface", &topo.edge_if]);
    assert!(out.contains("lost its interface"), "{out}");
    assert!(!root.0.join(&topo.edge_if).exists());
}

#[test]
fn a_failed_attach_keeps_the_pins_it_reused() {
    let topo = Topology::new("ownfail").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    ok(
        ns,
        &root,
        &["contact", "add", "1002", "sip:1002@198.18.0.44"],
    );
    att.signal("KILL");
    let _ = att.stop();
    let pin = root
        .0
        .join(&topo.edge_if)
        .join(rewriter_common::names::CONTACTS);
    assert!(pin.exists());
    // A foreign native XDP program makes our XDP attach fail (EEXIST/EBUSY).
    let mut foreign = Rewriter::load(&Config::new(5060)).unwrap();
    {
        let _in = InNetns::enter(&topo.edge).unwrap();
        let prog: &mut Xdp = foreign
            .ebpf_mut()
            .program_mut("bench_empty_xdp")
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().unwrap();
        prog.attach(&topo.edge_if, XdpMode::Driver).unwrap();
    }
    let (code, _, err) = run(ns, &root, &["attach", "--iface", &topo.edge_if]);
    assert_eq!(code, 1, "{err}");
    assert!(pin.exists(), "the failed attach removed pins it reused");
    drop(foreign);
    // The killed attach's map, entries included, is what the next attach runs with.
    let _att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    let path = SipPath::new(&topo).unwrap();
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        "Contact: <sip:1002@198.18.0.44>;expires=600"
    );
}

#[test]
fn under_ip_netns_exec_commands_refuse_with_a_hint() {
    let topo = Topology::new("ownexec").unwrap();
    let root = PinRoot::new();
    for args in [
        &["status"][..],
        &["attach", "--iface", topo.edge_if.as_str()],
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &topo.edge])
            .arg(bin())
            .args(args)
            .env(rewriter_user::pins::ROOT_ENV, &root.0)
            .env(rewriter_user::state::DIR_ENV, root.state_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("nsenter --net="), "{args:?}: {err}");
    }
    // Nothing was attached behind the refusal.
    let out = Command::new("ip")
        .args([
            "-n",
            &topo.edge,
            "-j",
            "-d",
            "link",
            "show",
            "dev",
            &topo.edge_if,
        ])
        .output()
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(links[0]["xdp"].is_null());
    assert!(!root.0.exists());
}
