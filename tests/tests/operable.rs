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

/// `sip-rewriter attach ARGS` in `ns` with its log in `log` (read while it runs), started and
/// stopped as [`Attach`] does.
fn attach_logged(
    ns: &str,
    root: &PinRoot,
    iface: &str,
    args: &[&str],
    log: &std::path::Path,
) -> Attach {
    attach_logged_env(ns, root, iface, args, log, &[])
}

/// [`attach_logged`] with extra environment variables.
fn attach_logged_env(
    ns: &str,
    root: &PinRoot,
    iface: &str,
    args: &[&str],
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Attach {
    let mut all = vec!["attach"];
    all.extend_from_slice(args);
    let file = std::fs::File::create(log).unwrap();
    let child = cmd(Some(ns), root, &all)
        .envs(env.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawning attach");
    let mut a = Attach {
        child: Some(child),
        pins: root.0.join(iface),
    };
    wait_for(20, "attach to come up", || {
        assert!(
            a.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "attach exited early: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        run(Some(ns), root, &["status", "--json", "--iface", iface])
            .1
            .contains("\"running\"")
    });
    a
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
    assert_eq!(
        s[0]["keep_params"],
        serde_json::json!(["expires", "q"]),
        "{s}"
    );
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
fn first_line_then_close(
    ns: &str,
    root: &PinRoot,
    args: &[&str],
) -> (Option<i32>, Option<i32>, String) {
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
        &[
            "attach",
            "--iface",
            &topo.edge_if,
            "--config",
            cfg.to_str().unwrap(),
            "--persist",
            "--max-contacts",
            "3",
        ],
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
    assert!(
        !err.contains("map CONTACTS") && !err.contains("bpf_map"),
        "{err}"
    );
    // Deleting or reading a DN that is not there says so in the same words.
    for verb in ["del", "get"] {
        let (code, _, err) = run(ns, &root, &["contact", verb, "99999"]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            err.trim(),
            "sip-rewriter: DN 99999 is not in the map",
            "{verb}"
        );
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

/// A config file in its own directory (the attach watches the directory).
struct ConfigDir(std::path::PathBuf);

impl ConfigDir {
    fn new(root: &PinRoot) -> Self {
        let d = std::env::temp_dir().join(format!(
            "{}-cfg",
            root.0.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// Replaces `name` atomically (temporary file, rename), as configuration tools do.
    fn replace(&self, name: &str, body: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_validates_and_prints_the_effective_settings() {
    let root = PinRoot::new();
    let dir = ConfigDir::new(&root);
    let good = format!(
        "interface = \"eth9\"\nmetrics = \":9465\"\nmax_contacts = 1000\nmax_registrations = 2048\ninterval = 0\n{CONFIG}"
    );
    dir.replace("good.toml", &good);
    let good = dir.0.join("good.toml");
    let good = good.to_str().unwrap();
    let (code, out, err) = run(None, &root, &["check", "--config", good]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "interface = \"eth9\"",
        "metrics = \"[::]:9465\"",
        "max_contacts = 1000",
        "max_registrations = 2048",
        "interval = 0",
        "port = 5060",
        "addresses = [\"198.18.0.2\"]",
        "keep_params = [\"expires\", \"q\"]",
        "# [contacts.map]: 1 DN entries",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing:\n{out}");
    }
    // The options override the file, as for attach.
    let out = ok(
        None,
        &root,
        &[
            "check",
            "--config",
            good,
            "--interval",
            "5",
            "--iface",
            "eth7",
        ],
    );
    assert!(
        out.contains("interval = 5\n") && out.contains("interface = \"eth7\""),
        "{out}"
    );
    // Invalid: exit 2, file:line and the value.
    dir.replace("bad.toml", "interface = \"eth9\"\nmax_contacts = 0\n");
    let bad = dir.0.join("bad.toml");
    let (code, out, err) = run(None, &root, &["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("bad.toml:2") && err.contains("invalid max_contacts 0"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    // A missing file: exit 2, the OS error once.
    let missing = dir.0.join("missing.toml");
    let (code, _, err) = run(
        None,
        &root,
        &["check", "--config", missing.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    // No Genesys address: valid, with the warning.
    dir.replace("any.toml", "interface = \"eth9\"\n");
    let (code, _, err) = run(
        None,
        &root,
        &[
            "check",
            "--config",
            dir.0.join("any.toml").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no Genesys address set"), "{err}");
}

#[test]
fn config_keys_reload_logs_changes_and_a_changed_file_applies_itself() {
    let topo = Topology::new("opcfg").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let dir = ConfigDir::new(&root);
    let body = |extra: &str, map: &str| {
        format!(
            "max_contacts = 50\nmax_registrations = 64\ninterval = 0\n{extra}\n[genesys]\naddresses = [\"198.18.0.2\"]\n[contacts]\ndefault = \"sip:{{dn}}@192.168.210.54:5060\"\n[contacts.map]\n{map}"
        )
    };
    let map1 = "\"1002\" = \"sip:1002@198.18.20.2\"\n\"1003\" = \"sip:1003@198.18.20.3\"\n";
    let iface = format!("interface = \"{}\"", topo.edge_if);
    dir.replace("rw.toml", &body(&iface, map1));
    let cfg = dir.0.join("rw.toml");
    let log_path = dir.0.join("attach.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let att = attach_logged(
        &topo.edge,
        &root,
        &topo.edge_if,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--keep-params",
            "expires",
        ],
        &log_path,
    );
    // The file's capacities are used.
    let s: serde_json::Value = serde_json::from_str(&ok(ns, &root, &["status", "--json"])).unwrap();
    assert_eq!(s[0]["contacts_capacity"], 50, "{s}");
    assert_eq!(s[0]["registrations_capacity"], 64, "{s}");

    // SIGHUP: a changed setting, DN entries added/changed/removed, one change the command line
    // overrides, two that need a new attach.
    let map2 = "\"1002\" = \"sip:1002@198.18.20.22\"\n\"1004\" = \"sip:1004@198.18.20.4\"\n\"1005\" = \"sip:1005@198.18.20.5\"\n";
    let body2 = body("interface = \"veth-other\"", map2)
        .replace("max_contacts = 50", "max_contacts = 60")
        .replace("[contacts]\n", "[contacts]\nkeep_params = [\"q\"]\n")
        .replace("@192.168.210.54:5060", "@192.168.210.55:5060");
    // Written in place (the watch may see it before the signal; either way it is applied once
    // and a reload that finds the same bytes changes nothing).
    std::fs::write(&cfg, &body2).unwrap();
    att.signal("HUP");
    wait_for(10, "the reload line", || {
        log().contains("DN entries 2 added, 1 changed, 1 removed")
    });
    let l = log();
    assert!(
        l.contains(
            "contacts.default \"sip:{dn}@192.168.210.54:5060\" -> \"sip:{dn}@192.168.210.55:5060\""
        ),
        "{l}"
    );
    assert!(
        l.contains("contacts.keep_params changed in")
            && l.contains("--keep-params on the command line overrides it"),
        "{l}"
    );
    for key in ["interface", "max_contacts"] {
        assert!(
            l.contains(&format!("{key} changed in"))
                && l.contains("takes effect at the next attach"),
            "{key}: {l}"
        );
    }
    ok(ns, &root, &["contact", "get", "1004"]);

    // Renamed over, no signal: applied by the watch.
    let map3 = format!("{map2}\"1006\" = \"sip:1006@198.18.20.6\"\n");
    dir.replace("rw.toml", &body2.replace(map2, &map3));
    // The reload line is logged after the map is updated: wait for the line, then the entry
    // (asserting on the line as soon as the entry showed up failed once in CI).
    wait_for(10, "the reload line for the renamed-over file", || {
        log().contains("DN entries 1 added, 0 changed, 0 removed")
    });
    ok(ns, &root, &["contact", "get", "1006"]);
    // An invalid file changes nothing and says why, in one line.
    dir.replace("rw.toml", "interval = -1\n");
    wait_for(10, "the error for the invalid file", || {
        log().contains("previous settings stay")
    });
    let l = log();
    assert!(
        l.contains("rw.toml:1") && l.contains("invalid interval -1"),
        "{l}"
    );
    ok(ns, &root, &["contact", "get", "1006"]);
    // A deleted file: one error line with the OS error once.
    std::fs::remove_file(&cfg).unwrap();
    att.signal("HUP");
    wait_for(10, "the error for the missing file", || {
        log().contains("No such file")
    });
    let (code, _) = att.stop();
    let l = log();
    assert_eq!(code, 0, "{l}");
    assert_eq!(l.matches("No such file").count(), 1, "{l}");
}

#[test]
fn a_configmap_symlink_swap_is_applied() {
    let topo = Topology::new("opcm").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let dir = ConfigDir::new(&root);
    // As the kubelet lays out a ConfigMap volume: file -> ..data/file, ..data -> ..TIMESTAMP.
    let version = |n: u32, dn: &str| {
        let v = dir.0.join(format!("..2026_01_0{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(
            v.join("sip-rewriter.toml"),
            format!("interval = 0\n[genesys]\naddresses = [\"198.18.0.2\"]\n[contacts.map]\n\"{dn}\" = \"sip:{dn}@198.18.20.9\"\n"),
        )
        .unwrap();
        v
    };
    let v1 = version(1, "2001");
    std::os::unix::fs::symlink(v1.file_name().unwrap(), dir.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/sip-rewriter.toml", dir.0.join("sip-rewriter.toml"))
        .unwrap();
    let cfg = dir.0.join("sip-rewriter.toml");
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg.to_str().unwrap()],
    );
    ok(ns, &root, &["contact", "get", "2001"]);
    let v2 = version(2, "2002");
    std::os::unix::fs::symlink(v2.file_name().unwrap(), dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    wait_for(10, "2002 from the swapped ConfigMap", || {
        run(ns, &root, &["contact", "get", "2002"]).0 == 0
    });
    assert_eq!(
        run(ns, &root, &["contact", "get", "2001"]).0,
        1,
        "2001 left the file"
    );
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("DN entries 1 added, 0 changed, 1 removed"),
        "{log}"
    );
}

#[test]
fn logs_are_ours_with_journal_priorities_and_counters_only_when_they_move() {
    let topo = Topology::new("oplog").unwrap();
    let root = PinRoot::new();
    let dir = ConfigDir::new(&root);
    let log_path = dir.0.join("attach.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let iface = topo.edge_if.as_str();
    let base = [
        "--iface",
        iface,
        "--genesys",
        "198.18.0.2",
        "--interval",
        "1",
    ];
    let aya_lines = |l: &str| {
        l.lines()
            .filter(|l| {
                l.contains(" aya::") || l.contains(" aya_obj::") || l.contains(" aya_log::")
            })
            .count()
    };

    // RUST_LOG=debug: our lines, none of aya's internals.
    let att = attach_logged_env(
        &topo.edge,
        &root,
        iface,
        &base,
        &log_path,
        &[("RUST_LOG", "debug")],
    );
    // Idle: no counter line. (A window to show an absence, not a synchronisation.)
    std::thread::sleep(Duration::from_millis(2500));
    let periodic = |l: &str| l.lines().filter(|l| l.contains("] seen=")).count();
    assert_eq!(periodic(&log()), 0, "idle counters logged:\n{}", log());
    let path = SipPath::new(&topo).unwrap();
    path.exchange(REGISTER.as_bytes()).unwrap();
    wait_for(10, "a counter line after traffic", || periodic(&log()) == 1);
    std::thread::sleep(Duration::from_millis(2500));
    let (code, _) = att.stop();
    let l = log();
    assert_eq!(code, 0, "{l}");
    assert_eq!(periodic(&l), 1, "one line for one change:\n{l}");
    assert_eq!(aya_lines(&l), 0, "{l}");
    assert!(l.contains("sip_rewriter::cmd::attach] attached to"), "{l}");

    // RUST_LOG=aya=debug: aya's internals too, and still ours.
    let att = attach_logged_env(
        &topo.edge,
        &root,
        iface,
        &base,
        &log_path,
        &[("RUST_LOG", "aya=debug")],
    );
    let (code, _) = att.stop();
    let l = log();
    assert_eq!(code, 0, "{l}");
    assert!(aya_lines(&l) > 0, "{l}");
    assert!(l.contains("attached to"), "{l}");

    // Under systemd (JOURNAL_STREAM set): syslog priority prefixes.
    let att = attach_logged_env(
        &topo.edge,
        &root,
        iface,
        &["--iface", iface, "--interval", "0"],
        &log_path,
        &[("JOURNAL_STREAM", "8:12345")],
    );
    let (code, _) = att.stop();
    let l = log();
    assert_eq!(code, 0, "{l}");
    assert!(l.lines().any(|x| x.starts_with("<6>attached to")), "{l}");
    assert!(
        l.lines()
            .any(|x| x.starts_with("<4>no Genesys address set")),
        "{l}"
    );
    let out = cmd(Some(&topo.edge), &root, &["attach", "--iface", "nosuch0"])
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("<3>sip-rewriter: "), "{err}");
}

/// One HTTP/1.0 request to the metrics listener at `addr` in namespace `ns`; the whole answer.
/// Retried for a while: a listener at its connection limit closes new connections.
fn http(ns: &str, addr: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let _ns = integration_tests::net::InNetns::enter(ns).unwrap();
    let once = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b)
    };
    let mut answer = String::new();
    wait_for(10, "an answer from the metrics listener", || {
        answer = once().unwrap_or_default();
        !answer.is_empty()
    });
    answer
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn metrics_families_head_and_1100_idle_connections() {
    use std::os::unix::process::CommandExt as _;
    let topo = Topology::new("opmet").unwrap();
    let root = PinRoot::new();
    let dir = ConfigDir::new(&root);
    let iface = topo.edge_if.as_str();
    let addr = "127.0.0.1:19465";
    let cfg_body = format!("metrics = \"{addr}\"\ninterval = 0\n{CONFIG}");
    dir.replace("m.toml", &cfg_body);
    let cfg = dir.0.join("m.toml");
    let log_path = dir.0.join("attach.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let file = std::fs::File::create(&log_path).unwrap();
    let mut c = cmd(
        Some(&topo.edge),
        &root,
        &[
            "attach",
            "--iface",
            iface,
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    c.stdout(file.try_clone().unwrap()).stderr(file);
    // SAFETY: setrlimit only, between fork and exec: the usual soft limit of 1 024 files.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let att = Attach {
        child: Some(c.spawn().unwrap()),
        pins: root.0.join(iface),
    };
    let pid = att.child.as_ref().unwrap().id();
    wait_for(20, "attach and its listener", || {
        let _ns = integration_tests::net::InNetns::enter(&topo.edge).unwrap();
        std::net::TcpStream::connect(addr).is_ok()
    });
    let path = SipPath::new(&topo).unwrap();
    path.exchange(REGISTER.as_bytes()).unwrap();

    // 1 100 idle connections (this process may hold them), nothing sent.
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit on this process with a valid struct (root may raise the hard limit).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let idle: Vec<std::net::TcpStream> = {
        let _ns = integration_tests::net::InNetns::enter(&topo.edge).unwrap();
        let sa = addr.parse().unwrap();
        (0..1100)
            .filter_map(|_| std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok())
            .collect()
    };
    assert!(idle.len() > 1024, "only {} connections", idle.len());
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3)); // the measurement window
    let used = (cpu_ticks(pid) - t0) as f64 / 100.0 / 3.0;
    eprintln!(
        "attach CPU with {} idle metrics connections: {:.1} %",
        idle.len(),
        used * 100.0
    );
    assert!(
        used < 0.2,
        "attach used {:.0} % CPU with idle connections",
        used * 100.0
    );
    // A reload still works (it opens files).
    dir.replace(
        "m.toml",
        &cfg_body.replace(
            "\"1002\" =",
            "\"1009\" = \"sip:1009@198.18.20.9\"\n\"1002\" =",
        ),
    );
    att.signal("HUP");
    wait_for(10, "the reload", || log().contains("DN entries 1 added"));
    assert!(!log().contains("Too many open files"), "{}", log());
    drop(idle);

    // Families with result/reason labels, gauges, build info; promtool agrees if present.
    let resp = http(&topo.edge, addr, "GET /metrics HTTP/1.0\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{resp}");
    let i = format!("iface=\"{iface}\"");
    for line in [
        format!("sip_rewriter_registers_total{{{i},result=\"rewritten\"}} 1"),
        format!("sip_rewriter_registers_total{{{i},result=\"dn_unknown\"}} 0"),
        format!("sip_rewriter_contacts_rewritten_total{{{i}}} 1"),
        format!("sip_rewriter_responses_total{{{i},result=\"restored\"}} 0"),
        format!("sip_rewriter_untouched_total{{{i},reason=\"malformed\"}} 0"),
        format!("sip_rewriter_map_entries{{{i},map=\"dn\"}} 2"),
        format!("sip_rewriter_map_entries{{{i},map=\"registrations\"}} 1"),
        format!("sip_rewriter_map_capacity{{{i},map=\"registrations\"}} 16384"),
        "# TYPE sip_rewriter_registers_total counter".to_owned(),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    assert!(
        body.contains("sip_rewriter_build_info{version=\""),
        "{body}"
    );
    assert_eq!(
        body.matches("# TYPE sip_rewriter_registers_total").count(),
        1
    );
    if let Ok(mut p) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "promtool: {text}"
        );
    }
    // HEAD: the headers alone.
    let resp = http(&topo.edge, addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(
        resp.starts_with("HTTP/1.0 200 OK") && resp.contains("Content-Length: "),
        "{resp}"
    );
    assert!(resp.ends_with("\r\n\r\n"), "no body: {resp}");
    let (code, _) = att.stop();
    assert_eq!(code, 0, "{}", log());
}

#[test]
fn rewrite_diagnostics_import_from_stdin_and_version() {
    use std::io::Write as _;
    let root = PinRoot::new();
    let dir = ConfigDir::new(&root);
    // LF line ends: said so, exit 2.
    dir.replace("lf.sip", &REGISTER.replace("\r\n", "\n"));
    let (code, out, err) = run(
        None,
        &root,
        &["rewrite", dir.0.join("lf.sip").to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("lines end in LF; SIP needs CRLF"), "{err}");
    // A response given as the message is labelled as one.
    let resp = include_str!("../corpus-restore/01-jssip-map-1002-restored.resp.sip");
    dir.replace("resp.sip", resp);
    let (code, _, err) = run(
        None,
        &root,
        &["rewrite", dir.0.join("resp.sip").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.starts_with("response"), "{err}");
    // A missing input: exit 2 like any other missing file.
    let (code, _, err) = run(
        None,
        &root,
        &["rewrite", dir.0.join("nosuch.sip").to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nosuch.sip") && err.contains("No such file"),
        "{err}"
    );
    let (code, out, _) = run(None, &root, &["--version"]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("sip-rewriter {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );

    // contact import - reads CSV from standard input.
    let topo = Topology::new("opimp").unwrap();
    let ns = Some(topo.edge.as_str());
    let _att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--genesys", "198.18.0.2"],
    );
    let mut child = cmd(ns, &root, &["contact", "import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dn,uri\n3001,sip:3001@198.18.20.31\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ok(ns, &root, &["contact", "get", "3001"]).trim(),
        "sip:3001@198.18.20.31"
    );
}

/// An in-place write (truncate, write, close, as `echo > file` or a plain editor does) is
/// applied once the writer closes the file, never while it holds it half written: a truncated
/// file that sits there longer than the watch's debounce (a writer that stalls), or a SIGHUP
/// that comes meanwhile, must not wipe the DN map.
#[test]
fn a_file_being_written_in_place_is_not_applied_until_closed() {
    use std::io::Write as _;
    let topo = Topology::new("opinpl").unwrap();
    let root = PinRoot::new();
    let ns = Some(topo.edge.as_str());
    let dir = ConfigDir::new(&root);
    let body = |dn: &str| {
        format!(
            "interval = 0\n[genesys]\naddresses = [\"198.18.0.2\"]\n[contacts.map]\n\"{dn}\" = \"sip:{dn}@198.18.20.9\"\n"
        )
    };
    dir.replace("rw.toml", &body("3001"));
    let cfg = dir.0.join("rw.toml");
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg.to_str().unwrap()],
    );
    ok(ns, &root, &["contact", "get", "3001"]);
    // A complete write (its close arms the watch's debounce), then at once the next one:
    // truncated and half written, and the writer stalls with the file open past the
    // debounce. The half is valid TOML without the DN entries: applied, it would empty the map.
    std::fs::write(&cfg, body("3001") + "# touched\n").unwrap();
    let mut f = std::fs::File::create(&cfg).unwrap();
    let new = body("3002");
    let cut = new.find("[contacts.map]\n").unwrap() + "[contacts.map]\n".len();
    let (head, tail) = new.split_at(cut);
    f.write_all(head.as_bytes()).unwrap();
    f.flush().unwrap();
    // A SIGHUP meanwhile (`systemctl reload` right after starting an edit) waits for the close
    // too (up to 2 s).
    att.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        run(ns, &root, &["contact", "get", "3001"]).0,
        0,
        "a half-written file was applied"
    );
    f.write_all(tail.as_bytes()).unwrap();
    drop(f);
    wait_for(10, "3002 once the writer closed the file", || {
        run(ns, &root, &["contact", "get", "3002"]).0 == 0
    });
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("failed"), "{log}");
}
