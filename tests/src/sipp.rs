//! Running sipp (Debian `sip-tester`, installed by `cargo xtask setup`/.ci/run) inside a test
//! namespace, with the scenarios and CSV format of `tests/sipp/`.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
};

/// Fails the test with the fix if sipp is missing.
pub fn require() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is missing: `cargo xtask setup` installs it (apt-get install sip-tester)"
    );
}

/// The path of scenario `name` in `tests/sipp/`.
pub fn scenario(name: &str) -> String {
    format!("{}/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The CSV line the JsSIP-style scenarios read for client number `i` with DN `dn`: the DN, the
/// random Contact user/host and instance id JsSIP makes up, the expiry.
pub fn csv_line(dn: u32, i: u32, expires: u32) -> String {
    format!(
        "{dn};{:08x};{:012x};{:012x};{expires}",
        0x8000_0000u32 + i,
        0x3000_0000u64 + i as u64,
        i
    )
}

/// The Contact URI the scenarios send for client number `i` (see [`csv_line`]).
pub fn original_contact(i: u32) -> String {
    format!(
        "<sip:{:08x}@{:012x}.invalid;transport=ws>",
        0x8000_0000u32 + i,
        0x3000_0000u64 + i as u64
    )
}

/// `sipp ARGS` in namespace `ns` (nsenter, so bpffs stays visible), run in `dir` (its logs go
/// there), stdin closed.
pub fn spawn(ns: &str, dir: &Path, args: &[&str]) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("sipp")
        .args(args)
        .args(["-nostdin"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sipp")
}

/// Asserts a sipp run succeeded, with its errors and `context` in the message.
pub fn check(out: &Output, what: &str, dir: &Path, context: &dyn std::fmt::Display) {
    let errors: String = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        out.status.success(),
        "sipp {what} failed ({}):\n{}\n{}\n{context}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        &errors[..errors.len().min(2000)]
    );
}

/// One sipp scenario at a time per test binary: two at once on two cores (libtest runs a
/// binary's tests in parallel) delay 200 OKs past sipp's 500 ms retransmission timer, and in one
/// CI run past a UAC's 5 s timeout.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
