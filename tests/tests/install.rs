//! `cargo xtask install` into a temporary `--destdir` (never the real /usr/local or /etc): the
//! binary, the systemd unit, the example config and the config in place with the right modes;
//! the unit's paths follow `--prefix`/`--sysconfdir`; the unit parses (and `systemd-analyze
//! verify` accepts it where systemd-analyze exists); an operator's config is never overwritten;
//! the installed binary runs `--version` and `check --config <installed example>`.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use rewriter_common::names;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "sip-rewriter-install-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn install(args: &[&str]) -> Output {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .args(["xtask", "install"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo xtask install {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `root` + an absolute path.
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether a real system path exists, and its modification time: the test must leave both
/// as they were.
fn fingerprint(p: &str) -> Option<std::time::SystemTime> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| m.modified().unwrap())
}

/// The unit as systemd reads it: every line blank, a comment, `[Section]` or `Key=Value`
/// (no continuation lines here); returns (section, key, value) triples.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            assert!(
                ["Unit", "Service", "Install"].contains(&s),
                "line {}: unexpected section [{s}]",
                n + 1
            );
            section = s.to_owned();
            continue;
        }
        assert!(!line.ends_with('\\'), "line {}: continuation", n + 1);
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        assert!(
            !k.trim().is_empty() && k.trim().chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key {k:?}",
            n + 1
        );
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn values<'a>(unit: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    unit.iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Checks one installed tree; `prefix`/`sysconfdir` are the paths the unit must name.
fn check_tree(dest: &Path, prefix: &str, sysconfdir: &str, unitdir: &str) {
    let bin = format!("{prefix}/bin/sip-rewriter");
    let conf = format!("{sysconfdir}/sip-rewriter.toml");
    let doc = format!("{prefix}/share/doc/sip-rewriter");
    let example = format!("{doc}/sip-rewriter.example.toml");
    let unit_path = under(dest, &format!("{unitdir}/sip-rewriter.service"));

    assert_eq!(mode(&under(dest, &bin)), 0o755, "{bin}");
    assert_eq!(mode(&unit_path), 0o644, "unit");
    assert_eq!(mode(&under(dest, &example)), 0o644, "{example}");
    assert_eq!(mode(&under(dest, &format!("{doc}/README.md"))), 0o644);
    assert!(under(dest, &conf).is_file(), "{conf} missing");

    // The embedded eBPF object holds the programs attach loads and none of the bench's.
    let binary = std::fs::read(under(dest, &bin)).unwrap();
    let has = |name: &str| {
        let sym = [b"\0", name.as_bytes(), b"\0"].concat();
        binary.windows(sym.len()).any(|w| w == sym)
    };
    for p in [
        names::PROGRAM_EGRESS,
        names::PROGRAM_XDP,
        names::PROGRAM_TC_INGRESS,
    ] {
        assert!(has(p), "{bin} lacks the program {p}");
    }
    for p in ["bench_empty", "bench_empty_xdp", "bench_copy", "bench_scan"] {
        assert!(!has(p), "{bin} holds the bench program {p}");
    }

    let text = std::fs::read_to_string(&unit_path).unwrap();
    let unit = parse_unit(&text);
    assert_eq!(
        values(&unit, "ExecStart"),
        [format!("{bin} attach --config {conf}").as_str()],
        "{text}"
    );
    assert_eq!(
        values(&unit, "ExecReload"),
        [
            format!("{bin} check --config {conf}").as_str(),
            "/bin/kill -HUP $MAINPID"
        ],
        "{text}"
    );
    assert_eq!(
        values(&unit, "Documentation"),
        [format!("file://{doc}/README.md").as_str()]
    );
    // Every program the unit runs exists: ours under the destdir, kill(1) on this system.
    for v in values(&unit, "ExecStart")
        .into_iter()
        .chain(values(&unit, "ExecReload"))
    {
        let prog = v.split_whitespace().next().unwrap();
        let p = if prog == bin {
            under(dest, prog)
        } else {
            PathBuf::from(prog)
        };
        assert!(mode(&p) & 0o111 != 0, "{} is not executable", p.display());
    }
    // What attach needs, and no path the unit names outside what it can write.
    assert_eq!(values(&unit, "StateDirectory"), ["sip-rewriter"]);
    assert_eq!(values(&unit, "RuntimeDirectory"), ["sip-rewriter"]);
    assert_eq!(values(&unit, "ReadWritePaths"), ["/sys/fs/bpf"]);
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"] {
        assert!(
            values(&unit, "CapabilityBoundingSet")[0]
                .split_whitespace()
                .any(|c| c == cap),
            "{cap} missing from the bounding set"
        );
    }
    assert!(values(&unit, "PrivateNetwork").is_empty(), "PrivateNetwork");

    // systemd's own reading of the unit, offline, where systemd-analyze exists.
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={}", dest.display()))
            .arg(&unit_path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // --root: the unit's programs are looked up under the destdir (as installed there).
        let own: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("sip-rewriter.service:"))
            .collect();
        assert!(
            out.status.success() && own.is_empty(),
            "systemd-analyze verify: {}: {err}",
            out.status
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&unit_path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| l.split_once("exposure level for sip-rewriter.service: "))
            .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {report}"));
        eprintln!("systemd-analyze security --offline=yes: {score}");
        assert!(
            score <= 3.0,
            "exposure {score} (2.6 when written, 7.1 before hardening)"
        );
    }

    // The installed binary runs, and accepts the installed example.
    let out = Command::new(under(dest, &bin))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("sip-rewriter "),
        "{out:?}"
    );
    let out = Command::new(under(dest, &bin))
        .arg("check")
        .arg("--config")
        .arg(under(dest, &example))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check --config {example}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_into_a_destdir_keeps_the_operators_config_and_follows_the_prefix() {
    let real = ["/usr/local/bin/sip-rewriter", "/etc/sip-rewriter.toml"];
    let before: Vec<_> = real.iter().map(|p| fingerprint(p)).collect();
    let example = std::fs::read(workspace().join("contrib/sip-rewriter.example.toml")).unwrap();

    // Default prefix, over an operator's config that must survive (twice: a re-install too).
    let a = TempDir::new("default");
    let own = b"# the operator's own settings\ninterface = \"ens3\"\n";
    std::fs::create_dir_all(a.0.join("etc")).unwrap();
    std::fs::write(a.0.join("etc/sip-rewriter.toml"), own).unwrap();
    let dest = a.0.to_str().unwrap();
    for _ in 0..2 {
        install(&["--destdir", dest]);
        assert_eq!(
            std::fs::read(a.0.join("etc/sip-rewriter.toml")).unwrap(),
            own,
            "the operator's config was overwritten"
        );
    }
    check_tree(&a.0, "/usr/local", "/etc", "/etc/systemd/system");

    // Another prefix and config directory, nothing there yet: the example becomes the config.
    let b = TempDir::new("opt");
    install(&[
        "--destdir",
        b.0.to_str().unwrap(),
        "--prefix",
        "/opt/sip-rewriter",
        "--sysconfdir",
        "/etc/opt/sip-rewriter",
    ]);
    check_tree(
        &b.0,
        "/opt/sip-rewriter",
        "/etc/opt/sip-rewriter",
        "/etc/systemd/system",
    );
    assert_eq!(
        std::fs::read(b.0.join("etc/opt/sip-rewriter/sip-rewriter.toml")).unwrap(),
        example
    );

    let after: Vec<_> = real.iter().map(|p| fingerprint(p)).collect();
    assert_eq!(before, after, "the real {real:?} changed");
}
