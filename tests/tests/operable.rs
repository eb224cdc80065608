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

/// Runs `args` with stdout on a pipe whose reader goes away after the first line; returns
/// (exit code, signal, stderr).
fn first_line_then_close(ns: &str, root: &PinRoot, args: &[&str]) -> (Option<i32>, Option<i32>, String) {
    use std::{io::BufRead as _, os::unix::process::ExitStatusExt as _, process::Stdio};
    let mut child = cmd(Some(ns), root, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "{args:?} printed nothing");
    // The reader is dropped here: the next write meets a closed pipe.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), status.signal(), err)
}

#[test]
fn errors_name_the_object_and_output_paths_never_panic() {
    let topo = Topology::new("operr").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let cfg = write_config(&root, CONFIG);
    // --persist with a stdout whose reader is gone: still attached, no panic.
    let (code, signal, err) = first_line_then_close(
        &topo.edge,
        &root,
        &["attach", "--iface", &topo.edge_if, "--config", cfg.to_str().unwrap(), "--persist", "--max-contacts", "3"],
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!((code, signal), (Some(0), None), "{err}");
    // A full map names the DN, the interface and the way out, not a map operation.
    for dn in ["9000", "9001"] {
        ok(ns, &root, &["contact", "add", dn, "sip:x@198.18.20.1"]);
    }
    let (code, _, err) = run(ns, &root, &["contact", "add", "9002", "sip:x@198.18.20.1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("DN 9002") && err.contains("DN map of veth-edge is full (3 entries)"),
        "{err}"
    );
    assert!(!err.contains("map CONTACTS") && !err.contains("bpf_map"), "{err}");
    // Deleting or reading a DN that is not there says so in the same words.
    for verb in ["del", "get"] {
        let (code, _, err) = run(ns, &root, &["contact", verb, "99999"]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(err.trim(), "sip-rewriter: DN 99999 is not in the map", "{verb}");
    }
    // A reader that goes away: quiet SIGPIPE (141 in a shell), never a panic or an error line.
    for args in [
        &["contact", "export"][..],
        &["contact", "list"],
        &["contact", "list", "--json"],
        &["stats", "--watch", "1", "--json"],
        &["stats", "--watch", "1"],
        &["status"],
    ] {
        let (code, signal, err) = first_line_then_close(&topo.edge, &root, args);
        assert!(err.is_empty(), "{args:?}: {err}");
        assert!(
            signal == Some(libc::SIGPIPE) || code == Some(0),
            "{args:?}: code {code:?} signal {signal:?}"
        );
    }
    ok(ns, &root, &["detach", "--iface", &topo.edge_if]);
    let _ = std::fs::remove_file(cfg);
}
