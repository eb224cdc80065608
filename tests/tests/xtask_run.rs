//! `cargo xtask run`: quiet build, the child's exit status, signals passed on (needs root).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{cli::PinRoot, net::Topology};

fn xtask() -> Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root)
        .args(["xtask", "run", "--"])
        .stdin(Stdio::null());
    c
}

#[test]
fn exit_status_passes_through_without_build_chatter() {
    let out = xtask()
        .args(["check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("warning: rewriter-user@"), "{err}");
}

#[test]
fn sigterm_is_passed_on_and_waited_for() {
    let topo = Topology::new("xrun").unwrap();
    let root = PinRoot::new();
    let mut c = xtask();
    c.args([
        "attach",
        "--iface",
        &topo.edge_if,
        "--genesys",
        "198.18.0.2",
    ])
    .env("SIP_REWRITER_PIN_ROOT", &root.0)
    .env("SIP_REWRITER_STATE_DIR", root.state_dir())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // The attach must run in the test namespace: xtask runs in it too.
    let mut c2 = Command::new("nsenter");
    c2.arg(format!("--net=/run/netns/{}", topo.edge))
        .arg(c.get_program())
        .args(c.get_args())
        .current_dir(c.get_current_dir().unwrap())
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut x = c2.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Running once the owner record names an attached process: poll status.
    let status = || {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", topo.edge))
            .arg(integration_tests::cli::bin())
            .args(["status", "--json"])
            .env("SIP_REWRITER_PIN_ROOT", &root.0)
            .env("SIP_REWRITER_STATE_DIR", root.state_dir())
            .output()
            .unwrap()
    };
    while !String::from_utf8_lossy(&status().stdout).contains("\"running\"") {
        assert!(
            Instant::now() < deadline,
            "attach under xtask did not come up"
        );
        assert!(x.try_wait().unwrap().is_none(), "xtask ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(x.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(s) = x.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "xtask did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "attach's clean exit passed through");
    // The attach ended with it: nothing attached any more.
    assert_eq!(
        status().status.code(),
        Some(3),
        "an orphaned attach is still running"
    );
}
