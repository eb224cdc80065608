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

/// `contact export` as a DN → URI map.
fn export(ns: Option<&str>, root: &PinRoot) -> std::collections::BTreeMap<String, String> {
    ok(ns, root, &["contact", "export"])
        .lines()
        .skip(1)
        .map(|l| {
            let (dn, uri) = l.split_once(',').unwrap();
            (dn.to_owned(), uri.to_owned())
        })
        .collect()
}

/// A DN set as CSV and as the map `export` must show once it is live.
fn dn_set(first: u32, n: u32, host: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let map: std::collections::BTreeMap<String, String> = (first..first + n)
        .map(|dn| (dn.to_string(), format!("sip:{dn}@{host}")))
        .collect();
    let mut csv = String::from("dn,uri\n");
    for (dn, uri) in &map {
        csv.push_str(&format!("{dn},{uri}\n"));
    }
    (csv, map)
}

#[test]
fn an_import_killed_at_any_point_leaves_the_old_set_or_the_new_one() {
    // Big enough that writing the map, not starting the process, is most of an import.
    const N: u32 = 20_000;
    const KILLS: u32 = 12;
    let topo = Topology::new("durkill").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let iface = topo.edge_if.as_str();
    let att = Attach::start(&topo.edge, &root, iface, &[]);
    // Two sets that overlap in half their DNs, with different URIs there.
    let sets = [
        dn_set(10_000, N, "198.18.3.1"),
        dn_set(10_000 + N / 2, N, "198.18.3.2"),
    ];
    let files: Vec<std::path::PathBuf> = sets
        .iter()
        .enumerate()
        .map(|(i, (csv, _))| {
            let f = std::env::temp_dir().join(format!(
                "{}-set{i}.csv",
                root.0.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&f, csv).unwrap();
            f
        })
        .collect();
    let import = |i: usize| {
        integration_tests::cli::cmd(
            ns,
            &root,
            &["contact", "import", "--replace", files[i].to_str().unwrap()],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    assert!(import(0).wait().unwrap().success());
    assert_eq!(export(ns, &root), sets[0].1);
    // How long replacing one set by the other takes here: the kills land anywhere inside it.
    let started = std::time::Instant::now();
    assert!(import(1).wait().unwrap().success());
    let whole = started.elapsed();
    assert_eq!(export(ns, &root), sets[1].1);
    let mut live = 1;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let (mut finished, mut old_kept) = (0, 0);
    for k in 0..KILLS {
        let next = 1 - live;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut at = whole.mul_f64((rng % 1000) as f64 / 1000.0);
        let mut child = import(next);
        if k % 2 == 1 {
            // Every other kill lands while the map is being written: after the progress line
            // that follows the first 5 000 entries (reading and checking the file come first
            // and take most of the time of a debug build).
            let mut err = child.stderr.take().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&seen).contains("5000/") {
                match std::io::Read::read(&mut err, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            at /= 4;
            child.stderr = Some(err);
        }
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        // The next command finishes or drops what the killed one left; either way one set.
        let now = export(ns, &root);
        if now == sets[next].1 {
            live = next;
            finished += 1;
        } else {
            assert_eq!(
                now.len(),
                sets[live].1.len(),
                "kill {k} after {at:?}: a mix of both sets"
            );
            assert_eq!(
                now, sets[live].1,
                "kill {k} after {at:?}: a mix of both sets"
            );
            old_kept += 1;
        }
    }
    eprintln!("{KILLS} imports killed within {whole:?}: {finished} new set, {old_kept} old set");
    // The durable state is the same set: a restart brings back exactly what was live.
    let (code, out) = att.stop();
    assert_eq!(code, 0, "{out}");
    let _att = Attach::start(&topo.edge, &root, iface, &[]);
    assert_eq!(export(ns, &root), sets[live].1, "after a restart");
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}
