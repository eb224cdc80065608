//! Next to other programs on the same hook (needs root): a foreign program that ends the TC
//! chain with TC_ACT_OK, attached before sip-rewriter, would hide every REGISTER from it.
//! `attach` puts the egress rewrite and the TC ingress restore first (TCX `BPF_F_BEFORE`, or a
//! clsact preference below the others before Linux 6.6), `status` shows the chain and our place
//! in it, and stopping leaves the foreign programs where they were. Runs on the host (TCX) and
//! in the vm-test guests (6.1: clsact).

use std::{os::fd::OwnedFd, path::PathBuf};

use integration_tests::{
    cli::{Attach, PinRoot, ok},
    contact_of, foreign,
    net::{InNetns, SipPath, Topology},
};
use rewriter_user::netdev;

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");
const MAPPED: &str = "Contact: <sip:1002@198.18.0.44>;expires=600";

/// A foreign program on `iface`: a TCX link (dropped = detached), or a clsact filter at `pref`
/// (removed with the namespace) whose program is pinned at `pin`.
struct Foreign {
    _link: Option<OwnedFd>,
    pin: Option<PathBuf>,
}

impl Drop for Foreign {
    fn drop(&mut self) {
        if let Some(p) = &self.pin {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn add_foreign(
    ns: &str,
    iface: &str,
    egress: bool,
    first: bool,
    pref: u16,
    pin: &std::path::Path,
) -> Foreign {
    let _in = InNetns::enter(ns).unwrap();
    let prog = foreign::load().unwrap();
    if netdev::has_tcx() {
        let idx = netdev::ifindex(iface).unwrap();
        return Foreign {
            _link: Some(foreign::attach_tcx(&prog, idx, egress, first).unwrap()),
            pin: None,
        };
    }
    foreign::pin(&prog, pin).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("tc")
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success() || err.contains("File exists"),
            "tc {args:?}: {err}"
        );
    };
    run(&["qdisc", "replace", "dev", iface, "clsact"]);
    let dir = if egress { "egress" } else { "ingress" };
    let pref = pref.to_string();
    run(&[
        "filter",
        "add",
        "dev",
        iface,
        dir,
        "pref",
        &pref,
        "bpf",
        "da",
        "object-pinned",
        pin.to_str().unwrap(),
    ]);
    Foreign {
        _link: None,
        pin: Some(pin.to_owned()),
    }
}

fn chain(ns: &str, iface: &str, egress: bool) -> Vec<String> {
    let _in = InNetns::enter(ns).unwrap();
    netdev::tc_chain(iface, egress)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[test]
fn sip_rewriter_goes_first_and_leaves_foreign_programs_alone() {
    let topo = Topology::new("coex").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let iface = topo.edge_if.as_str();
    let pin = |n: &str| -> PathBuf { PathBuf::from(format!("{}-{n}", root.0.display())) };
    // Foreign programs attached before sip-rewriter, on egress and ingress.
    let _e = add_foreign(&topo.edge, iface, true, false, 10, &pin("e"));
    let _i = add_foreign(&topo.edge, iface, false, false, 10, &pin("i"));
    let path = SipPath::new(&topo).unwrap();
    let att = Attach::start(&topo.edge, &root, iface, &[]);
    ok(
        ns,
        &root,
        &["contact", "add", "1002", "sip:1002@198.18.0.44"],
    );
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        MAPPED,
        "rewritten although a TC_ACT_OK program was there first"
    );
    assert_eq!(
        chain(&topo.edge, iface, true),
        [rewriter_user::PROGRAM, foreign::NAME]
    );
    assert_eq!(
        chain(&topo.edge, iface, false)[0],
        rewriter_user::PROGRAM_TC_INGRESS
    );
    let s: serde_json::Value = serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(s[0]["egress_position"], 1, "{s}");
    assert_eq!(s[0]["egress_chain"][1]["name"], foreign::NAME, "{s}");

    // One put before ours later: status shows it and says what it means.
    let _first = add_foreign(&topo.edge, iface, true, true, 5, &pin("f"));
    let s: serde_json::Value = serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(s[0]["egress_position"], 2, "{s}");
    let text = ok(ns, &root, &["status"]);
    assert!(text.contains("run before sip-rewriter"), "{text}");
    assert_eq!(
        path.exchange(REGISTER.as_bytes()).unwrap(),
        REGISTER.as_bytes(),
        "the program in front ends the chain"
    );

    // Stopping removes ours only.
    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        chain(&topo.edge, iface, true),
        [foreign::NAME, foreign::NAME]
    );
    assert_eq!(chain(&topo.edge, iface, false), [foreign::NAME]);
}
