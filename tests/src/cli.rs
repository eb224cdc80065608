//! Running the real `sip-rewriter` binary inside a test namespace, with a private pin root.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The binary under test: `$SIP_REWRITER_BIN` (set by `cargo xtask test`, which builds it
/// first), else `target/debug/sip-rewriter`, built once per test process so that a plain
/// `cargo test` never runs a stale binary.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SIP_REWRITER_BIN") {
        return p.into();
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "rewriter-user"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .expect("running cargo build -p rewriter-user");
        assert!(status.success(), "cargo build -p rewriter-user failed");
    });
    root.join("target/debug/sip-rewriter")
}

/// A pin root on bpffs private to one test, removed on drop.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/sipr-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Self(p)
    }
}

impl PinRoot {
    /// The durable state directory that goes with this pin root (`SIP_REWRITER_STATE_DIR`).
    pub fn state_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "{}-state",
            self.0.file_name().unwrap().to_string_lossy()
        ))
    }
}

impl Default for PinRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir_all(self.state_dir());
    }
}

/// `sip-rewriter ARGS` in network namespace `ns` (if any) with pin root `root`.
pub fn cmd(ns: Option<&str>, root: &PinRoot, args: &[&str]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    c.args(args)
        .env("SIP_REWRITER_PIN_ROOT", &root.0)
        .env("SIP_REWRITER_STATE_DIR", root.state_dir())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

/// Runs to completion; returns (exit code, stdout, stderr).
pub fn run(ns: Option<&str>, root: &PinRoot, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd(ns, root, args).output().expect("running sip-rewriter");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs and asserts success; returns stdout.
pub fn ok(ns: Option<&str>, root: &PinRoot, args: &[&str]) -> String {
    let (code, out, err) = run(ns, root, args);
    assert_eq!(code, 0, "sip-rewriter {args:?} failed:\n{out}\n{err}");
    out
}

/// How long `attach` may take to come up: 20 s, or `$SIP_REWRITER_ATTACH_WAIT` seconds (the
/// vm-test guests set it: under TCG the verifier alone takes tens of seconds).
pub fn attach_wait() -> Duration {
    let secs = std::env::var("SIP_REWRITER_ATTACH_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// A long-running `sip-rewriter attach`, stopped with SIGTERM (then SIGKILL) on drop.
pub struct Attach {
    pub child: Option<Child>,
    pub pins: PathBuf,
}

impl Attach {
    /// Starts it and waits (bounded) until `status` reports it running.
    pub fn start(ns: &str, root: &PinRoot, iface: &str, args: &[&str]) -> Self {
        let mut all = vec!["attach", "--iface", iface];
        all.extend_from_slice(args);
        let child = cmd(Some(ns), root, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning attach");
        let mut a = Attach {
            child: Some(child),
            pins: root.0.join(iface),
        };
        let wait = attach_wait();
        let deadline = Instant::now() + wait;
        while !run(Some(ns), root, &["status", "--json", "--iface", iface])
            .1
            .contains("\"running\"")
        {
            if let Some(status) = a.child.as_mut().unwrap().try_wait().unwrap() {
                let out = a.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "attach exited early ({status}): {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "attach did not come up within {} s",
                wait.as_secs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{sig}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGTERM and wait (bounded); returns exit code and combined output.
    pub fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
