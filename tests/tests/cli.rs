//! The `sip-rewriter` binary end to end: every command, validation errors and exit codes,
//! SIGHUP reload, --persist + detach, two interfaces, metrics, kill -9 recovery (needs root).

use std::{io::Read as _, io::Write as _, time::Duration};

use integration_tests::{
    cli::{Attach, PinRoot, ok, run},
    contact_of,
    net::{InNetns, SipPath, Topology, ip},
};

const REGISTER: &str = include_str!("../shared-corpus/01-jssip-register.in.sip");
const MAPPED: &str = "sip:1002@192.168.210.54:5060";

fn register_for(dn: &str) -> String {
    REGISTER.replace("sip:1002@", &format!("sip:{dn}@"))
}

/// Whether an XDP program is attached to `iface` in namespace `ns` (`ip link` shows it).
fn xdp_attached(ns: &str, iface: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "-d", "link", "show", "dev", iface])
        .output()
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link output");
    !links[0]["xdp"].is_null()
}

fn write_config(dir: &PinRoot, body: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "{}.toml",
        dir.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, body).unwrap();
    p
}

const CONFIG: &str = r#"
[genesys]
port = 5060
[contacts]
default = "sip:{dn}@192.168.210.54:5060"
keep_params = ["expires", "q"]
[contacts.map]
"1002" = "sip:1002@192.168.210.54:5060"
"#;

#[test]
fn contacts_defaults_stats_and_reload_on_a_running_attachment() {
    let topo = Topology::new("cli").unwrap();
    let root = PinRoot::new();
    let cfg = write_config(&root, CONFIG);
    let cfg_s = cfg.to_str().unwrap();
    let ns = Some(topo.edge.as_str());
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg_s, "--interval", "1"],
    );
    let path = SipPath::new(&topo).unwrap();

    // From the config file.
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        format!("Contact: <{MAPPED}>;expires=600")
    );
    assert_eq!(
        contact_of(&path.exchange(register_for("2001").as_bytes()).unwrap()),
        "Contact: <sip:2001@192.168.210.54:5060>;expires=600"
    );

    // contact add/get/list/del take effect on the next REGISTER.
    ok(
        ns,
        &root,
        &["contact", "add", "2001", "sip:2001@198.18.0.77:5070"],
    );
    assert_eq!(
        ok(ns, &root, &["contact", "get", "2001"]).trim(),
        "sip:2001@198.18.0.77:5070"
    );
    assert_eq!(
        contact_of(&path.exchange(register_for("2001").as_bytes()).unwrap()),
        "Contact: <sip:2001@198.18.0.77:5070>;expires=600"
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(ns, &root, &["contact", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[1]["dn"], "2001");
    ok(ns, &root, &["contact", "del", "2001"]);
    let (code, _, err) = run(ns, &root, &["contact", "get", "2001"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not in the map"), "{err}");

    // default clear / set.
    ok(ns, &root, &["default", "clear"]);
    let plain = register_for("2002");
    assert_eq!(
        path.exchange(plain.as_bytes()).unwrap(),
        plain.as_bytes(),
        "no template: unchanged"
    );
    ok(ns, &root, &["default", "set", "sips:{dn}@198.18.0.9"]);
    assert_eq!(
        contact_of(&path.exchange(plain.as_bytes()).unwrap()),
        "Contact: <sips:2002@198.18.0.9>;expires=600"
    );

    // export → import --replace round trip.
    let csv = ok(ns, &root, &["contact", "export"]);
    assert_eq!(csv, format!("dn,uri\n1002,{MAPPED}\n"));
    let imp = std::env::temp_dir().join(format!(
        "{}-import.csv",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &imp,
        "dn,uri\n# a comment\n3001,sip:3001@198.18.0.5\n3002 , sip:3002@198.18.0.5\n",
    )
    .unwrap();
    ok(
        ns,
        &root,
        &["contact", "import", imp.to_str().unwrap(), "--replace"],
    );
    assert_eq!(
        ok(ns, &root, &["contact", "export"]),
        "dn,uri\n3001,sip:3001@198.18.0.5\n3002,sip:3002@198.18.0.5\n"
    );

    // stats and status.
    let stats: serde_json::Value =
        serde_json::from_str(ok(ns, &root, &["stats", "--json"]).trim()).unwrap();
    assert_eq!(stats["counters"]["rewritten"]["total"], 4, "{stats}");
    assert_eq!(stats["counters"]["dn_unknown"]["total"], 1, "{stats}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(status[0]["state"], "running", "{status}");
    assert_eq!(status[0]["contacts"], 2);
    assert_eq!(status[0]["default_template"], "sips:{dn}@198.18.0.9");

    // SIGHUP re-reads the file and applies the difference: 1002 changes, 3001/3002 (added by
    // import, not by the file) stay; the file's template replaces the one set by `default set`.
    std::fs::write(
        &cfg,
        CONFIG.replace(
            "\"1002\" = \"sip:1002@192.168.210.54:5060\"",
            "\"1002\" = \"sip:1002@198.18.0.66\"",
        ),
    )
    .unwrap();
    att.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // (`import --replace` removed 1002: until the reload re-adds it, `get` says it is absent.)
    loop {
        let (_, out, _) = run(ns, &root, &["contact", "get", "1002"]);
        if out.trim() == "sip:1002@198.18.0.66" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP reload did not apply"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        "Contact: <sip:1002@198.18.0.66>;expires=600"
    );
    assert_eq!(
        ok(ns, &root, &["contact", "get", "3001"]).trim(),
        "sip:3001@198.18.0.5"
    );

    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("detached from"), "{out}");
    assert!(
        !root.0.join(&topo.edge_if).exists(),
        "pins removed on SIGTERM"
    );
    let _ = std::fs::remove_file(cfg);
    let _ = std::fs::remove_file(imp);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_written() {
    let topo = Topology::new("cli-bad").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    // No program running yet: a clear runtime error.
    let (code, _, err) = run(ns, &root, &["contact", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not attached"), "{err}");
    let (code, _, err) = run(ns, &root, &["attach"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--iface"), "{err}");
    let (code, _, err) = run(ns, &root, &["attach", "--iface", "nosuch0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nosuch0") && err.contains("not found"),
        "{err}"
    );
    let (code, _, err) = run(
        ns,
        &root,
        &["attach", "--iface", &topo.edge_if, "--port", "0"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(
        ns,
        &root,
        &["attach", "--iface", &topo.edge_if, "--ingress", "ebpf"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ebpf"), "{err}");
    // Listen addresses as exporters take them; --metrics cannot serve a --persist attachment.
    for bad in [":x", "localhost:", "9465"] {
        let (code, _, err) = run(
            ns,
            &root,
            &["attach", "--iface", &topo.edge_if, "--metrics", bad],
        );
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains(":PORT"), "{err}");
    }
    let (code, _, err) = run(
        ns,
        &root,
        &[
            "attach",
            "--iface",
            &topo.edge_if,
            "--persist",
            "--metrics",
            ":9465",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--persist"), "{err}");
    assert!(!root.0.join(&topo.edge_if).exists(), "nothing pinned");
    let cfg = write_config(&root, "ingress = \"XDP\"\n");
    let (code, _, err) = run(
        ns,
        &root,
        &[
            "attach",
            "--iface",
            &topo.edge_if,
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":1:") && err.contains("\"XDP\""), "{err}");
    // Frames on loopback do not start with an Ethernet header: refused, nothing left behind.
    let (code, _, err) = run(ns, &root, &["attach", "--iface", "lo"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an Ethernet interface"), "{err}");
    assert!(!root.0.join("lo").exists(), "no pins left for lo");

    let _att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    ok(ns, &root, &["contact", "add", "1002", MAPPED]);
    for (args, needle) in [
        (vec!["contact", "add", "10 02", MAPPED], "10 02"),
        (
            vec!["contact", "add", "1002", "sip:1002@h\r\nX-Evil: 1"],
            "X-Evil",
        ),
        (vec!["contact", "add", "1002", "http://x"], "http://x"),
        (vec!["contact", "add", &"9".repeat(65), MAPPED], "999"),
        (vec!["default", "set", "sip:nodn@h"], "{dn}"),
        (vec!["default", "set", "sip:{dn}@{dn}"], "{dn}"),
        (vec!["contact", "get", "a<b"], "a<b"),
    ] {
        let (code, _, err) = run(ns, &root, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?} must name {needle:?}: {err}");
    }
    // An import with one bad line writes nothing and names file:line.
    let f = std::env::temp_dir().join(format!(
        "{}-bad.csv",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &f,
        "4001,sip:4001@198.18.0.5\n4002,sip:4002@198.18.0.5\n40 03,sip:4003@198.18.0.5\n",
    )
    .unwrap();
    let (code, _, err) = run(ns, &root, &["contact", "import", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":3:"), "{err}");
    assert_eq!(
        ok(ns, &root, &["contact", "export"]),
        format!("dn,uri\n1002,{MAPPED}\n"),
        "nothing half-written"
    );
    let _ = std::fs::remove_file(f);
    // A second attach on the same interface is refused.
    let (code, _, err) = run(ns, &root, &["attach", "--iface", &topo.edge_if]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already attached"), "{err}");
}

#[test]
fn persist_detach_and_two_interfaces() {
    let topo = Topology::new("cli-pers").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    // A second veth pair in the edge namespace.
    ip(&[
        "-n",
        &topo.edge,
        "link",
        "add",
        "veth-b",
        "type",
        "veth",
        "peer",
        "name",
        "veth-b-peer",
    ])
    .unwrap();
    ip(&["-n", &topo.edge, "link", "set", "veth-b", "up"]).unwrap();
    for (iface, ingress) in [(topo.edge_if.as_str(), "xdp"), ("veth-b", "off")] {
        let out = ok(
            ns,
            &root,
            &[
                "attach",
                "--iface",
                iface,
                "--persist",
                "--default",
                "sip:{dn}@198.18.0.9",
                "--ingress",
                ingress,
            ],
        );
        assert!(out.contains("stays attached"), "{out}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 2, "{status}");
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "persisted"),
        "{status}"
    );
    let ingress: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ingress"].as_str().unwrap())
        .collect();
    assert_eq!(
        ingress,
        ["off", "xdp+tc"],
        "sorted by interface: veth-b, veth-edge; {status}"
    );
    assert!(
        xdp_attached(&topo.edge, &topo.edge_if),
        "the persisted XDP restore stays attached"
    );
    // The persisted program works with no process behind it.
    let path = SipPath::new(&topo).unwrap();
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        "Contact: <sip:1002@198.18.0.9>;expires=600"
    );
    // Two attachments: commands need --iface.
    let (code, _, err) = run(ns, &root, &["contact", "add", "1002", MAPPED]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("several interfaces") && err.contains("veth-b"),
        "{err}"
    );
    ok(
        ns,
        &root,
        &["contact", "add", "1002", MAPPED, "--iface", &topo.edge_if],
    );
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        format!("Contact: <{MAPPED}>;expires=600")
    );
    let (code, _, err) = run(ns, &root, &["contact", "get", "1002", "--iface", "veth-b"]);
    assert_eq!(code, 1, "the other interface has its own map: {err}");
    for iface in [topo.edge_if.as_str(), "veth-b"] {
        ok(ns, &root, &["detach", "--iface", iface]);
        assert!(!root.0.join(iface).exists());
    }
    assert!(
        !xdp_attached(&topo.edge, &topo.edge_if),
        "detach removes the XDP restore"
    );
    // Detached: REGISTERs pass unchanged.
    assert_eq!(
        path.exchange(REGISTER.as_bytes()).unwrap(),
        REGISTER.as_bytes()
    );
    let (code, _, err) = run(ns, &root, &["detach", "--iface", &topo.edge_if]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn kill_9_detaches_and_a_new_attach_reuses_the_pinned_contacts() {
    let topo = Topology::new("cli-kill").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    ok(
        ns,
        &root,
        &["contact", "add", "1002", "sip:1002@198.18.0.44"],
    );
    assert!(xdp_attached(&topo.edge, &topo.edge_if));
    att.signal("KILL");
    let (_, _) = att.stop();
    assert!(
        !xdp_attached(&topo.edge, &topo.edge_if),
        "the XDP link died with the process"
    );
    // The TCX link died with the process: REGISTERs pass unchanged, pins stay behind.
    let path = SipPath::new(&topo).unwrap();
    assert_eq!(
        path.exchange(REGISTER.as_bytes()).unwrap(),
        REGISTER.as_bytes()
    );
    let (code, out, err) = run(ns, &root, &["status", "--json"]);
    assert_eq!(code, 4, "stale pins: exit 4\n{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status[0]["state"].as_str().unwrap() == "stale", "{status}");
    // Re-attach: the pinned DN map is reused.
    let att = Attach::start(&topo.edge, &root, &topo.edge_if, &[]);
    assert_eq!(
        contact_of(&path.exchange(REGISTER.as_bytes()).unwrap()),
        "Contact: <sip:1002@198.18.0.44>;expires=600"
    );
    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reusing the maps"), "{out}");
}

#[test]
fn metrics_endpoint_serves_the_counters() {
    let topo = Topology::new("cli-met").unwrap();
    let root = PinRoot::new();
    let _att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--metrics", ":9465", "--default", "sip:{dn}@198.18.0.9"],
    );
    let path = SipPath::new(&topo).unwrap();
    path.exchange(REGISTER.as_bytes()).unwrap();
    let body = {
        let _ns = InNetns::enter(&topo.edge).unwrap();
        // The listener comes up right after the attachment: retry briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            match std::net::TcpStream::connect("127.0.0.1:9465") {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("metrics endpoint: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).unwrap();
        b
    };
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    let iface = &topo.edge_if;
    assert!(
        body.contains(&format!(
            "sip_rewriter_registers_total{{iface=\"{iface}\",result=\"rewritten\"}} 1"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "sip_rewriter_egress_datagrams_total{{iface=\"{iface}\"}} 1"
        )),
        "{body}"
    );
}

#[test]
fn offline_rewrite_matches_the_corpus() {
    let root = PinRoot::new();
    let cfg = write_config(&root, CONFIG);
    let case = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/shared-corpus/04-sipp-display-name-default-template"
    );
    let out = integration_tests::cli::cmd(
        None,
        &root,
        &[
            "rewrite",
            "--config",
            cfg.to_str().unwrap(),
            &format!("{case}.in.sip"),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        std::fs::read(format!("{case}.out.sip")).unwrap()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rewritten 1 contact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Standard input, a message that passes.
    let mut child = integration_tests::cli::cmd(None, &root, &["rewrite", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let invite = include_bytes!("../shared-corpus/07-invite-untouched.in.sip");
    child.stdin.take().unwrap().write_all(invite).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, invite);
    assert!(String::from_utf8_lossy(&out.stderr).contains("passed: not_register"));
    let _ = std::fs::remove_file(cfg);
    // --response: every restore corpus case, with the configuration its README names.
    let cfg = write_config(&root, CONFIG);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-restore");
    let mut cases = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".req.sip") else {
            continue;
        };
        let path = |ext: &str| {
            dir.join(format!("{stem}{ext}"))
                .to_string_lossy()
                .into_owned()
        };
        let out = integration_tests::cli::cmd(
            None,
            &root,
            &[
                "rewrite",
                "--config",
                cfg.to_str().unwrap(),
                &path(".req.sip"),
                "--response",
                &path(".resp.sip"),
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{stem}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&std::fs::read(path(".out.sip")).unwrap()),
            "{stem}"
        );
        cases += 1;
    }
    assert!(cases >= 20, "restore corpus went missing");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn big_import_shows_progress_and_a_full_map_is_a_clear_error() {
    // A capacity above the 10 000-line progress threshold, small enough to fill quickly.
    const MAX_CONTACTS: u32 = 20_000;
    let topo = Topology::new("cli-big").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let _att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--max-contacts", "20000"],
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(status[0]["contacts_capacity"], MAX_CONTACTS, "{status}");
    let f = std::env::temp_dir().join(format!(
        "{}-big.csv",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    let mut csv = String::from("dn,uri\n");
    for i in 0..MAX_CONTACTS {
        csv.push_str(&format!("{i},sip:{i}@198.18.1.1\n"));
    }
    std::fs::write(&f, &csv).unwrap();
    let (code, out, err) = run(ns, &root, &["contact", "import", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("{MAX_CONTACTS}/{MAX_CONTACTS}")),
        "progress bar past 10 000 lines: {err}"
    );
    assert!(
        out.contains(&format!("imported {MAX_CONTACTS} entries")),
        "{out}"
    );
    // One more does not fit: a clear one-line error, exit 1.
    let (code, _, err) = run(
        ns,
        &root,
        &["contact", "add", "overflow", "sip:overflow@198.18.1.1"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("full"), "{err}");
    // An import that would not fit is refused before anything is written.
    std::fs::write(&f, "dn,uri\nnew1,sip:new1@198.18.1.1\n").unwrap();
    let (code, _, err) = run(ns, &root, &["contact", "import", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("would not fit"), "{err}");
    let _ = std::fs::remove_file(f);
    // A reader that stops early (`| head -1`; 20 000 lines are far more than a pipe holds):
    // each command ends quietly on SIGPIPE, like coreutils, never with a panic.
    for args in [
        &["contact", "list"][..],
        &["contact", "export"],
        &["contact", "list", "--json"],
    ] {
        let mut c = integration_tests::cli::cmd(ns, &root, args);
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        use std::os::unix::process::ExitStatusExt as _;
        assert!(
            out.status.success()
                || out.status.signal() == Some(libc::SIGPIPE)
                || out.status.code() == Some(141),
            "{args:?} ended with {}",
            out.status
        );
    }
}

/// Kamailio sends REGISTERs to Asterisk on 5060 as well as to Genesys: with the Genesys address
/// set only Genesys' are rewritten; without any address `attach` warns that every destination
/// on the port is a candidate.
#[test]
fn only_genesys_is_rewritten_and_no_address_set_warns() {
    let topo = Topology::new("cli-dst").unwrap();
    let root = PinRoot::new();
    const ASTERISK: &str = "198.18.1.3";
    ip(&[
        "-n",
        &topo.genesys,
        "addr",
        "add",
        &format!("{ASTERISK}/24"),
        "dev",
        &topo.genesys_if,
    ])
    .unwrap();
    ip(&[
        "-n",
        &topo.edge,
        "route",
        "add",
        "198.18.1.0/24",
        "dev",
        &topo.edge_if,
    ])
    .unwrap();
    let cfg = write_config(&root, CONFIG);
    let args = ["--config", cfg.to_str().unwrap(), "--genesys", "198.18.0.2"];
    let att = Attach::start(&topo.edge, &root, &topo.edge_if, &args);
    let (genesys, asterisk, tx) = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        let g = std::net::UdpSocket::bind(("198.18.0.2", 5060)).unwrap();
        let a = std::net::UdpSocket::bind((ASTERISK, 5060)).unwrap();
        for s in [&g, &a] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let _ns = InNetns::enter(&topo.edge).unwrap();
        (g, a, std::net::UdpSocket::bind(("198.18.0.1", 0)).unwrap())
    };
    let mut buf = [0u8; 2048];
    tx.send_to(REGISTER.as_bytes(), (ASTERISK, 5060)).unwrap();
    let n = asterisk.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        REGISTER.as_bytes(),
        "the REGISTER to Asterisk left unchanged"
    );
    tx.send_to(REGISTER.as_bytes(), ("198.18.0.2", 5060))
        .unwrap();
    let n = genesys.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains(&format!("Contact: <{MAPPED}>")),
        "Genesys' is rewritten"
    );
    let (_, log) = att.stop();
    assert!(!log.contains("no Genesys address set"), "{log}");
    // Without an address set: a loud warning.
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg.to_str().unwrap()],
    );
    let (_, log) = att.stop();
    assert!(
        log.contains("no Genesys address set") && log.contains("Asterisk"),
        "{log}"
    );
}
