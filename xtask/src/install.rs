//! `cargo xtask install`: the release binary, the systemd unit, the example config and the
//! README, in the places the unit names.
//!
//! | file | default path | mode |
//! |---|---|---|
//! | binary | `PREFIX/bin/sip-rewriter` | 0755 |
//! | unit | `UNITDIR/sip-rewriter.service` | 0644 |
//! | config | `SYSCONFDIR/sip-rewriter.toml`, only if absent | 0644 |
//! | example, README | `PREFIX/share/doc/sip-rewriter/` | 0644 |
//!
//! `--destdir DIR` puts every file under DIR while the unit keeps naming the final paths
//! (packaging, the test). Each file is written to a temporary name beside it and renamed over
//! the old one, so a running `sip-rewriter` is never overwritten in place (ETXTBSY) and no
//! reader sees half a unit.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

pub struct Options {
    pub prefix: PathBuf,
    pub sysconfdir: PathBuf,
    pub unitdir: PathBuf,
    pub destdir: Option<PathBuf>,
}

/// The paths in `contrib/sip-rewriter.service` as written for the default prefix; each is
/// replaced by the one the options give.
const UNIT_BIN: &str = "/usr/local/bin/sip-rewriter";
const UNIT_CONF: &str = "/etc/sip-rewriter.toml";
const UNIT_DOC: &str = "/usr/local/share/doc/sip-rewriter/";

pub fn run(root: &Path, o: &Options) -> anyhow::Result<()> {
    for (flag, p) in [
        ("--prefix", &o.prefix),
        ("--sysconfdir", &o.sysconfdir),
        ("--unitdir", &o.unitdir),
    ] {
        if !p.is_absolute() {
            bail!("{flag} {} must be an absolute path", p.display());
        }
        if p.to_str().is_none_or(|s| s.contains(char::is_whitespace)) {
            bail!(
                "{flag} {}: the unit cannot name a path with whitespace",
                p.display()
            );
        }
    }
    if o.destdir.is_none() && !crate::setup::is_root() {
        bail!(
            "installing into / needs root (or give --destdir DIR); try: sudo -E cargo xtask install"
        );
    }
    crate::build_quiet(true)?;

    let bin = o.prefix.join("bin/sip-rewriter");
    let conf = o.sysconfdir.join("sip-rewriter.toml");
    let doc = o.prefix.join("share/doc/sip-rewriter");
    let unit_path = o.unitdir.join("sip-rewriter.service");
    let dest = |p: &Path| match &o.destdir {
        Some(d) => d.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    };

    let binary = std::fs::read(root.join("target/release/sip-rewriter"))
        .context("reading the release binary target/release/sip-rewriter")?;
    let example = std::fs::read(root.join("contrib/sip-rewriter.example.toml"))?;
    let readme = std::fs::read(root.join("README.md"))?;
    let unit = unit_text(
        &std::fs::read_to_string(root.join("contrib/sip-rewriter.service"))?,
        &bin,
        &conf,
        &doc,
    )?;

    put(&dest(&bin), &binary, 0o755)?;
    put(
        &dest(&doc.join("sip-rewriter.example.toml")),
        &example,
        0o644,
    )?;
    put(&dest(&doc.join("README.md")), &readme, 0o644)?;
    put(&dest(&unit_path), unit.as_bytes(), 0o644)?;
    let conf_note = if dest(&conf).exists() {
        format!("{} exists: kept as it is", dest(&conf).display())
    } else {
        put(&dest(&conf), &example, 0o644)?;
        format!(
            "{} from the example: set interface and [genesys] addresses",
            dest(&conf).display()
        )
    };
    for p in [
        bin.clone(),
        doc.join("sip-rewriter.example.toml"),
        doc.join("README.md"),
        unit_path,
    ] {
        eprintln!("xtask: installed {}", dest(&p).display());
    }
    eprintln!("xtask: config {conf_note}");
    if o.destdir.is_none() {
        eprintln!(
            "xtask: next: edit {conf}, `{bin} check --config {conf}`, then `systemctl daemon-reload && systemctl enable --now sip-rewriter`",
            conf = conf.display(),
            bin = bin.display()
        );
    }
    Ok(())
}

/// The unit with its paths for this install.
fn unit_text(template: &str, bin: &Path, conf: &Path, doc: &Path) -> anyhow::Result<String> {
    for s in [UNIT_BIN, UNIT_CONF, UNIT_DOC] {
        if !template.contains(s) {
            bail!("contrib/sip-rewriter.service no longer names {s}; update xtask/src/install.rs");
        }
    }
    let doc = format!("{}/", doc.display());
    Ok(template
        .replace(UNIT_BIN, &bin.display().to_string())
        .replace(UNIT_CONF, &conf.display().to_string())
        .replace(UNIT_DOC, &doc))
}

/// Writes `data` to `path` with `mode` (parents created 0755): a temporary file beside it,
/// then a rename over it.
fn put(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.xtask-install.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .with_context(|| format!("installing {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}
