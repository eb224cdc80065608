//! Operability of the `sip-rewriter` binary (issue 14): status exit codes, error wording,
//! broken pipes, config check and reload, logs, metrics, `rewrite` diagnostics (needs root).

use std::time::{Duration, Instant};

use integration_tests::{
    cli::{Attach, PinRoot, cmd, ok, run},
    net::{SipPath, Topology},
};

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");

const CONFIG: &str = r#"
[genesys]
port = 5060
addresses = ["198.18.0.2"]
[contacts]
default = "sip:{dn}@192.168.210.54:5060"
keep_params = ["expires", "q"]
[contacts.map]
"1002" = "sip:1002@192.168.210.54:5060"
"#;

fn write_config(root: &PinRoot, body: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "{}.toml",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, body).unwrap();
    p
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_exit_codes_follow_systemctl_is_active() {
    let topo = Topology::new("opstat").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    // Nothing attached: 3, and `[]` for --json, also for a named interface.
    let (code, out, err) = run(ns, &root, &["status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("not attached"), "{out}{err}");
    let (code, out, err) = run(ns, &root, &["status", "--json"]);
    assert_eq!((code, out.trim()), (3, "[]"), "{err}");
    let (code, out, err) = run(ns, &root, &["status", "--json", "--iface", "nosuch0"]);
    assert_eq!((code, out.trim()), (3, "[]"), "{err}");

    let cfg = write_config(&root, CONFIG);
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg.to_str().unwrap()],
    );
    let path = SipPath::new(&topo).unwrap();
    path.exchange(REGISTER.as_bytes()).unwrap();
    let (code, out, err) = run(ns, &root, &["status", "--json"]);
    assert_eq!(code, 0, "running: {out}{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s[0]["state"], "running", "{s}");
    assert_eq!(s[0]["keep_params"], serde_json::json!(["expires", "q"]), "{s}");
    assert_eq!(s[0]["contacts"], 1, "{s}");
    assert_eq!(s[0]["registrations"], 1, "one REGISTER recorded: {s}");
    assert_eq!(s[0]["registrations_capacity"], 16384, "{s}");
    let text = ok(ns, &root, &["status"]);
    assert!(text.contains("restore entries 1 of 16384"), "{text}");

    // A killed attach leaves stale pins: 4.
    att.signal("KILL");
    let _ = att.stop();
    let (code, out, err) = run(ns, &root, &["status"]);
    assert_eq!(code, 4, "stale: {out}{err}");
    assert!(out.contains("stale"), "{out}");

    // The codes are documented in --help.
    let help = ok(None, &root, &["status", "--help"]);
    assert!(
        help.contains("3 not attached") && help.contains("4 an attachment is stale"),
        "{help}"
    );
    ok(ns, &root, &["detach", "--iface", &topo.edge_if]);
    let _ = std::fs::remove_file(cfg);
}
