//! DN entries changed at run time are durable (needs root): `contact add|del|import` change the
//! running map and the interface's state file, and a clean restart (SIGTERM, as `systemctl
//! restart` sends), a `kill -9` or a reboot (bpffs emptied) followed by `attach` brings them back,
//! with the config file's entries under them.

use integration_tests::{
    cli::{Attach, PinRoot, ok, run},
    net::{SipPath, Topology},
};

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");

const CONFIG: &str = r#"
[contacts]
default = "sip:{dn}@192.168.210.54:5060"
[contacts.map]
"1002" = "sip:1002@192.168.210.54:5060"
"1003" = "sip:1003@192.168.210.54:5060"
"#;

/// `contact list --json` as (dn, uri, source) triples.
fn list(ns: Option<&str>, root: &PinRoot, iface: &str) -> Vec<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(&ok(
        ns,
        root,
        &["contact", "list", "--json", "--iface", iface],
    ))
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("dn"), s("uri"), s("source"))
        })
        .collect()
}

fn triple(dn: &str, uri: &str, source: &str) -> (String, String, String) {
    (dn.to_owned(), uri.to_owned(), source.to_owned())
}

#[test]
fn runtime_entries_survive_sigterm_kill_9_and_an_emptied_bpffs() {
    let topo = Topology::new("dur").unwrap();
    let root = PinRoot::new();
    let cfg = std::env::temp_dir().join(format!(
        "{}.toml",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, CONFIG).unwrap();
    let ns = Some(topo.edge.as_str());
    let iface = topo.edge_if.as_str();
    let args = ["--config", cfg.to_str().unwrap()];
    let want = vec![
        triple("1002", "sip:1002@198.18.0.44", "runtime"),
        triple("7777", "sip:7777@198.18.0.77", "runtime"),
    ];

    let att = Attach::start(&topo.edge, &root, iface, &args);
    // A runtime entry, one that overrides the file's 1002, and one of the file's deleted.
    ok(
        ns,
        &root,
        &["contact", "add", "7777", "sip:7777@198.18.0.77"],
    );
    ok(
        ns,
        &root,
        &["contact", "add", "1002", "sip:1002@198.18.0.44"],
    );
    ok(ns, &root, &["contact", "del", "1003"]);
    let pairs = |l: Vec<(String, String, String)>| {
        l.into_iter().map(|(d, u, _)| (d, u)).collect::<Vec<_>>()
    };
    assert_eq!(pairs(list(ns, &root, iface)), pairs(want.clone()));

    // systemctl restart: SIGTERM, then attach again.
    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
    let att = Attach::start(&topo.edge, &root, iface, &args);
    assert_eq!(
        pairs(list(ns, &root, iface)),
        pairs(want.clone()),
        "after SIGTERM + attach"
    );
    // `contact list` says where each entry comes from.
    assert_eq!(list(ns, &root, iface), want);

    // kill -9, then attach again.
    att.signal("KILL");
    let _ = att.stop();
    let att = Attach::start(&topo.edge, &root, iface, &args);
    assert_eq!(list(ns, &root, iface), want, "after kill -9 + attach");

    // A reboot: no pins at all.
    let _ = att.stop();
    let _ = std::fs::remove_dir_all(&root.0);
    let att = Attach::start(&topo.edge, &root, iface, &args);
    assert_eq!(
        list(ns, &root, iface),
        want,
        "after the pins were gone + attach"
    );
    // And the program uses them.
    let path = SipPath::new(&topo).unwrap();
    let got = String::from_utf8(path.exchange(REGISTER.as_bytes()).unwrap()).unwrap();
    assert!(got.contains("Contact: <sip:1002@198.18.0.44>"), "{got}");

    // A file entry nobody changed at run time shows as such; `contact del` of it is durable too.
    std::fs::write(
        &cfg,
        format!("{CONFIG}\"4444\" = \"sip:4444@198.18.0.4\"\n"),
    )
    .unwrap();
    att.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !list(ns, &root, iface).contains(&triple("4444", "sip:4444@198.18.0.4", "config")) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not add 4444: {:?}",
            list(ns, &root, iface)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = att.stop();
    let _ = std::fs::remove_file(&cfg);
}

#[test]
fn contact_add_while_nothing_is_attached_is_kept_for_the_next_attach() {
    let topo = Topology::new("dur2").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let iface = topo.edge_if.as_str();
    // Without --iface there is nothing to name the state by: a clear error.
    let (code, _, err) = run(
        ns,
        &root,
        &["contact", "add", "8888", "sip:8888@198.18.0.88"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--iface"), "{err}");
    let out = ok(
        ns,
        &root,
        &[
            "contact",
            "add",
            "8888",
            "sip:8888@198.18.0.88",
            "--iface",
            iface,
        ],
    );
    assert!(out.contains("not attached"), "{out}");
    let att = Attach::start(&topo.edge, &root, iface, &[]);
    assert_eq!(
        list(ns, &root, iface),
        vec![triple("8888", "sip:8888@198.18.0.88", "runtime")]
    );

    // export → import round-trips a DN with a comma (RFC 3261 allows it in a user part).
    ok(
        ns,
        &root,
        &["contact", "add", "10,02", "sip:1002@198.18.0.2"],
    );
    let csv = ok(ns, &root, &["contact", "export"]);
    assert!(csv.contains("\"10,02\",sip:1002@198.18.0.2"), "{csv}");
    let f = std::env::temp_dir().join(format!(
        "{}-export.csv",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&f, &csv).unwrap();
    let before = list(ns, &root, iface);
    ok(
        ns,
        &root,
        &["contact", "import", f.to_str().unwrap(), "--replace"],
    );
    assert_eq!(list(ns, &root, iface), before);
    // An empty replacement set would wipe the map: refused unless --force.
    std::fs::write(&f, "dn,uri\n").unwrap();
    let (code, _, err) = run(
        ns,
        &root,
        &["contact", "import", f.to_str().unwrap(), "--replace"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(list(ns, &root, iface), before);
    ok(
        ns,
        &root,
        &[
            "contact",
            "import",
            f.to_str().unwrap(),
            "--replace",
            "--force",
        ],
    );
    assert!(list(ns, &root, iface).is_empty());
    let _ = std::fs::remove_file(&f);
    let _ = att.stop();
}

#[test]
fn a_reload_applies_the_files_changes_when_nothing_changed_at_run_time() {
    let topo = Topology::new("dur3").unwrap();
    let root = PinRoot::new();
    let cfg = std::env::temp_dir().join(format!(
        "{}.toml",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, CONFIG).unwrap();
    let ns = Some(topo.edge.as_str());
    let iface = topo.edge_if.as_str();
    let att = Attach::start(
        &topo.edge,
        &root,
        iface,
        &["--config", cfg.to_str().unwrap()],
    );
    // No contact command at all: 1002 changes and 1003 goes with the file.
    std::fs::write(
        &cfg,
        "[contacts.map]\n\"1002\" = \"sip:1002@198.18.0.22\"\n",
    )
    .unwrap();
    att.signal("HUP");
    let want = vec![triple("1002", "sip:1002@198.18.0.22", "config")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while list(ns, &root, iface) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not apply the file: {:?}",
            list(ns, &root, iface)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = att.stop();
    let _ = std::fs::remove_file(&cfg);
}
