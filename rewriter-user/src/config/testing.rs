//! Helpers shared by the config unit tests.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{ConfigError, Settings};

pub(super) const EXAMPLE: &str = r#"interface = "eth0"                        # optional
[genesys]                                 # optional table
port = 5060                               # optional, default 5060, 1..=65535
addresses = ["10.0.0.5", "2001:db8::5"]   # optional
[contacts]                                # optional table
default = "sip:{dn}@192.168.210.54:5060"  # optional; exactly one {dn}
keep_params = ["expires", "q"]            # optional
[contacts.map]                            # optional
"1002" = "sip:1002@192.168.210.54:5060"
"#;

pub(super) fn origin() -> &'static Path {
    Path::new("contacts.toml")
}

pub(super) fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(text, origin())
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
        Err(e) => e,
    }
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A temp file removed on drop.
pub(super) struct TempFile(pub(super) PathBuf);

impl TempFile {
    pub(super) fn new(suffix: &str, contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sip-rewriter-config-test-{}-{}{suffix}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
