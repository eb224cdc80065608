//! `cargo xtask vm-test`: the kernel matrix.
//!
//! Each kernel is a Debian `linux-image-*` package fetched with a private apt state (own
//! sources list, lists and cache; the mirror is read from this machine's apt sources, whose
//! configuration is never changed), extracted once into the cache. It boots in qemu with this
//! machine's root file system shared read-only over virtio-9p and a tiny busybox initramfs that
//! loads the modules the tests need and builds a tmpfs root from bind mounts of the host's
//! directories, with its own proc, sys, dev, tmpfs /tmp and /run and bpffs, then runs `xtask
//! vm-guest` (the checks, see [`guest`]) in it as root. The guest prints `@@VM` lines
//! on the serial console; the host reads them and prints one row per kernel.

use std::{
    collections::BTreeSet,
    fs,
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// One kernel of the matrix.
pub struct Kernel {
    /// What `--kernel` takes.
    pub spec: &'static str,
    /// Debian suites searched for `linux-image-amd64` (the newest wins).
    suites: &'static [&'static str],
    /// The distributions this kernel stands for.
    pub stands_for: &'static str,
    /// The product does not run here: the check is that `attach` says so in one line.
    pub refused: bool,
}

/// The matrix; `--kernel host` runs the same checks natively on this machine's own kernel.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        spec: "5.10",
        suites: &["bullseye", "bullseye-security"],
        stands_for: "Debian 11",
        refused: true,
    },
    Kernel {
        spec: "6.1",
        suites: &["bookworm"],
        stands_for: "Debian 12, Amazon Linux 2023",
        refused: false,
    },
    Kernel {
        spec: "6.12-bpo",
        suites: &["bookworm-backports"],
        stands_for: "Debian 12 backports",
        refused: false,
    },
    Kernel {
        spec: "6.12",
        suites: &["trixie"],
        stands_for: "Debian 13",
        refused: false,
    },
];

/// Modules the checks need beyond what Debian builds in (their dependencies are resolved from
/// each module's `.modinfo`: Debian's packages ship no `modules.dep`).
const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "veth",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
];

pub struct Options {
    pub kernels: Vec<String>,
    pub timeout: Duration,
    pub kvm: bool,
    pub fuzz_count: u64,
    pub refresh: bool,
    /// Only these guest tests (empty: all).
    pub tests: Vec<String>,
    /// A shell command to run in the guest instead of the checks.
    pub exec: Option<String>,
}

/// What one guest reported.
#[derive(Default)]
struct Row {
    kernel: String,
    release: String,
    progs: Vec<(String, String)>,
    passed: u64,
    failed: u64,
    hooks: String,
    rewrite: String,
    restore: String,
    /// `attach`'s one-line refusal, if it refused the kernel.
    refused: Option<String>,
    /// Whether a refusal is the expected result here.
    expect_refusal: bool,
    stands_for: &'static str,
    secs: f64,
    error: Option<String>,
}

impl Row {
    fn ok(&self) -> bool {
        if self.expect_refusal {
            // One line that names what is missing, before anything was loaded.
            return self.error.is_none()
                && self
                    .refused
                    .as_deref()
                    .is_some_and(|l| l.contains(" lacks "));
        }
        self.error.is_none()
            && self.failed == 0
            && self.passed > 0
            && self.rewrite == "ok"
            && self.restore == "ok"
            && self.progs.iter().all(|(_, v)| v.parse::<u64>().is_ok())
    }
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    crate::setup::require_root("cargo xtask vm-test (the guests load eBPF programs)")?;
    crate::setup::vm_tools()?;
    let specs: Vec<&str> = if opts.kernels.is_empty() {
        KERNELS.iter().map(|k| k.spec).chain(["host"]).collect()
    } else {
        opts.kernels.iter().map(String::as_str).collect()
    };
    for s in &specs {
        if *s != "host" && !KERNELS.iter().any(|k| k.spec == *s) {
            let known: Vec<&str> = KERNELS.iter().map(|k| k.spec).chain(["host"]).collect();
            bail!("unknown kernel {s:?}; known: {}", known.join(", "));
        }
    }
    // Everything the guest runs is built here, once, before any guest boots.
    let build = crate::build_guest_payload(root)?;
    let cache = crate::setup::cache_dir()?.join("vm");
    let mut rows = Vec::new();
    for spec in specs {
        let started = Instant::now();
        eprintln!("vm-test: kernel {spec}");
        let mut row = match boot_one(root, &cache, spec, &build, opts) {
            Ok(r) => r,
            Err(e) => Row {
                error: Some(format!("{e:#}")),
                ..Row::default()
            },
        };
        row.kernel = spec.to_owned();
        let k = KERNELS.iter().find(|k| k.spec == spec);
        row.expect_refusal = k.is_some_and(|k| k.refused);
        row.stands_for = k.map_or("this machine", |k| k.stands_for);
        row.secs = started.elapsed().as_secs_f64();
        eprintln!("vm-test: kernel {spec} took {:.0} s", row.secs);
        rows.push(row);
    }
    if opts.exec.is_some() {
        // The guests' output was the point; there is no verdict.
        return Ok(());
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok()).count();
    println!("vm-test: {} passed, {failed} failed", rows.len() - failed);
    if failed > 0 {
        bail!("{failed} kernel(s) failed");
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!();
    for r in rows {
        let release = if r.release.is_empty() {
            "?"
        } else {
            &r.release
        };
        let verdict = match (r.ok(), r.expect_refusal) {
            (true, true) => "PASS (refused, as expected)",
            (true, false) => "PASS",
            (false, _) => "FAIL",
        };
        println!(
            "kernel {} ({release}, {}): {verdict}  [{:.0} s]",
            r.kernel, r.stands_for, r.secs
        );
        for (p, v) in &r.progs {
            match v.parse::<u64>() {
                Ok(n) => println!("  {p:<16} {n} insns processed"),
                Err(_) => println!("  {p:<16} rejected: {v}"),
            }
        }
        if !r.expect_refusal {
            println!(
                "  tests            {} passed, {} failed",
                r.passed, r.failed
            );
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            println!(
                "  attach           hooks {}; rewrite {}; restore {}",
                dash(&r.hooks),
                dash(&r.rewrite),
                dash(&r.restore)
            );
        }
        if let Some(l) = &r.refused {
            println!("  attach refused   {l}");
        }
        if let Some(e) = &r.error {
            println!("  error            {e}");
        }
    }
    println!();
}

/// What the guest runs, built on the host.
pub struct Payload {
    pub xtask: PathBuf,
    pub sip_rewriter: PathBuf,
    /// (test name, executable).
    pub tests: Vec<(String, PathBuf)>,
}

fn boot_one(
    root: &Path,
    cache: &Path,
    spec: &str,
    payload: &Payload,
    opts: &Options,
) -> anyhow::Result<Row> {
    let run_dir = cache.join("run").join(spec);
    if spec == "host" {
        // This machine's own kernel: the same checks, run here (no qemu).
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let console = run_dir.join("console.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "echo \"@@VM boot $(uname -r)\"; {}; echo \"@@VM done\"",
            guest_command(root, payload, opts.fuzz_count, &opts.tests)
        ));
        return run_logged(&mut cmd, &console, opts).map(|()| read_console(&console, opts))?;
    }
    let k = KERNELS
        .iter()
        .find(|k| k.spec == spec)
        .expect("checked above");
    let (vmlinuz, modules) = fetch(cache, k, opts.refresh)
        .with_context(|| format!("kernel {spec}: fetching the Debian package"))?;
    let run_dir = cache.join("run").join(spec);
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let initrd = run_dir.join("initrd.cpio");
    // Where the product refuses the kernel, only the attach check runs (its refusal is the test).
    let refused = KERNELS.iter().any(|k| k.spec == spec && k.refused);
    let none = [String::from("-")];
    let only = if refused { &none[..] } else { &opts.tests[..] };
    let guest_cmd = match &opts.exec {
        Some(c) => c.replace('\'', "'\\''"),
        None => guest_command(root, payload, opts.fuzz_count, only),
    };
    initramfs(&initrd, modules.as_deref(), &guest_cmd, root)
        .with_context(|| format!("kernel {spec}: building the initramfs"))?;
    let console = run_dir.join("console.log");
    for attempt in 1..=BOOT_ATTEMPTS {
        run_logged(&mut qemu(&vmlinuz, &initrd, opts), &console, opts)
            .with_context(|| format!("kernel {spec}: running qemu"))?;
        let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        match died_booting(&text) {
            Some(why) if attempt < BOOT_ATTEMPTS => {
                // Nothing of ours ran yet: the kernel died in its own boot under TCG emulation
                // (seen once in 6.12 under a loaded CI host, never in 15 boots here).
                let kept = run_dir.join(format!("console.boot{attempt}.log"));
                let _ = fs::rename(&console, &kept);
                eprintln!(
                    "vm-test: kernel {spec}: the guest kernel died while booting, before the checks started ({why}; console {}); booting again",
                    kept.display()
                );
            }
            _ => break,
        }
    }
    read_console(&console, opts)
}

/// Boots of one guest tried when its kernel dies before `init` runs.
const BOOT_ATTEMPTS: u32 = 3;

/// Why the guest kernel died before our `init` printed its first line, if it did: the first
/// oops line (the panic line alone says only "Fatal exception").
fn died_booting(console: &str) -> Option<String> {
    if console.contains("@@VM boot") {
        return None;
    }
    first_oops(console)
}

/// The first line of a kernel oops or panic in `console`, trimmed of its timestamp.
fn first_oops(console: &str) -> Option<String> {
    const MARKS: &[&str] = &[
        "BUG:",
        "Oops",
        "general protection fault",
        "invalid opcode",
        "Kernel panic",
    ];
    console
        .lines()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.split_once("] ").map_or(l, |(_, r)| r).trim().to_owned()
        })
}

/// The guest's report in `console`.
fn read_console(console: &Path, opts: &Options) -> anyhow::Result<Row> {
    let text = fs::read(console).with_context(|| format!("reading {}", console.display()))?;
    let text = String::from_utf8_lossy(&text);
    if opts.exec.is_some() {
        print!("{text}");
    }
    let mut row = parse_console(&text);
    if row.error.is_none() && !text.contains("@@VM done") {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let oops = first_oops(&text).map_or(String::new(), |o| format!("first oops: {o}; "));
        row.error = Some(format!(
            "the guest did not finish (console {}; {oops}last lines: {})",
            console.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(row)
}

/// This machine's Debian mirrors: (archive URI, security URI), from its apt sources.
fn mirrors() -> anyhow::Result<(String, Option<String>)> {
    let (mut one_line, mut deb822) = (Vec::new(), Vec::new());
    one_line.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    let mut parts: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    parts.sort();
    for p in parts {
        let text = fs::read_to_string(&p).unwrap_or_default();
        match p.extension().and_then(|x| x.to_str()) {
            Some("list") => one_line.push(text),
            Some("sources") => deb822.push(text),
            _ => {}
        }
    }
    debian_mirrors(&one_line, &deb822)
        .context("no Debian archive (component main, a Debian suite) in this machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/)")
}

/// The first `deb` source with component `main` and a Debian suite (`bookworm`, `trixie-updates`,
/// …), and the first with a `*-security` suite; from one-line `sources.list` texts and deb822
/// `.sources` texts.
fn debian_mirrors(one_line: &[String], deb822: &[String]) -> Option<(String, Option<String>)> {
    // (URI, suites, components)
    let mut entries: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for text in one_line {
        for line in text.lines() {
            let mut w = line
                .split_whitespace()
                .filter(|w| !w.starts_with('[') && !w.ends_with(']'));
            if w.next() == Some("deb")
                && let (Some(uri), Some(suite)) = (w.next(), w.next())
            {
                entries.push((
                    uri.to_owned(),
                    vec![suite.to_owned()],
                    w.map(str::to_owned).collect(),
                ));
            }
        }
    }
    for text in deb822 {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                    .map(str::trim)
            };
            let words = |name: &str| {
                field(name)
                    .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            if field("Enabled") == Some("no") || !words("Types").iter().any(|t| t == "deb") {
                continue;
            }
            for uri in words("URIs") {
                entries.push((uri, words("Suites"), words("Components")));
            }
        }
    }
    let debian = [
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "sid",
        "stable",
        "oldstable",
        "testing",
        "unstable",
    ];
    let base = |s: &str| s.split('-').next().unwrap_or(s).to_owned();
    let main = |e: &&(String, Vec<String>, Vec<String>)| e.2.iter().any(|c| c == "main");
    let archive = entries
        .iter()
        .filter(main)
        .find(|(_, s, _)| {
            s.iter()
                .any(|s| !s.ends_with("-security") && debian.contains(&base(s).as_str()))
        })?
        .0
        .clone();
    let security = entries
        .iter()
        .filter(main)
        .find(|(_, s, _)| s.iter().any(|s| s.ends_with("-security")))
        .map(|e| e.0.clone());
    Some((archive, security))
}

/// The kernel's image and module tree, extracted in the cache (downloaded once).
fn fetch(cache: &Path, k: &Kernel, refresh: bool) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let dir = cache.join(k.spec);
    let done = dir.join("extracted");
    if !refresh && let Ok(pkg) = fs::read_to_string(&done) {
        eprintln!("vm-test: kernel {}: {} (cached)", k.spec, pkg.trim());
        return extracted(&dir.join("root"));
    }
    let (archive, security) = mirrors()?;
    let apt = dir.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "parts", "prefs"] {
        fs::create_dir_all(apt.join(d))
            .with_context(|| format!("creating {}", apt.join(d).display()))?;
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let mut sources = String::new();
    for suite in k.suites {
        let uri = if suite.ends_with("-security") {
            security.clone().with_context(|| {
                format!("suite {suite}: no Debian security archive in this machine's apt sources")
            })?
        } else {
            archive.clone()
        };
        sources.push_str(&format!("deb [signed-by={keyring}] {uri} {suite} main\n"));
    }
    fs::write(apt.join("sources.list"), sources)?;
    fs::write(apt.join("status"), "")?;
    let apt_cmd = |tool: &str| {
        let mut c = Command::new(tool);
        for (k, v) in [
            ("Dir::Etc::SourceList", apt.join("sources.list")),
            ("Dir::Etc::SourceParts", apt.join("parts")),
            ("Dir::Etc::PreferencesParts", apt.join("prefs")),
            ("Dir::Etc::Preferences", apt.join("prefs/none")),
            ("Dir::State", apt.clone()),
            ("Dir::State::Lists", apt.join("lists")),
            ("Dir::State::status", apt.join("status")),
            ("Dir::Cache", apt.join("cache")),
        ] {
            c.arg("-o").arg(format!("{k}={}", v.display()));
        }
        c.args([
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Architectures=amd64",
            "-q",
        ]);
        c.stdin(Stdio::null());
        c
    };
    eprintln!(
        "vm-test: kernel {}: apt-get update ({})",
        k.spec,
        k.suites.join(", ")
    );
    crate::setup::output(apt_cmd("apt-get").arg("update"))
        .context("apt-get update (private state)")?;
    let show = crate::setup::output(apt_cmd("apt-cache").args([
        "show",
        "--no-all-versions",
        "linux-image-amd64",
    ]))?;
    let pkg = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .and_then(|d| d.split([',', ' ']).find(|w| w.starts_with("linux-image-")))
        .with_context(|| {
            format!(
                "linux-image-amd64 in {} depends on no linux-image-*",
                k.suites.join(", ")
            )
        })?
        .to_owned();
    let debs = dir.join("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    eprintln!("vm-test: kernel {}: downloading {pkg}", k.spec);
    crate::setup::output(
        apt_cmd("apt-get")
            .args(["download", &pkg])
            .current_dir(&debs),
    )
    .with_context(|| format!("apt-get download {pkg}"))?;
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb"))?;
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    crate::setup::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
        .with_context(|| format!("extracting {}", deb.display()))?;
    let _ = fs::remove_dir_all(&debs);
    let r = extracted(&root)?;
    fs::write(&done, format!("{pkg}\n"))?;
    Ok(r)
}

fn extracted(root: &Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let boot = root.join("boot");
    let image = fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let mods = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| fs::read_dir(root.join(d)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .find(|p| p.is_dir());
    Ok((image, mods))
}

/// `name` → module file, for every module under `dir`.
fn module_index(dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            module_index(&p, out);
        } else if let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned())
            && let Some(stem) = n
                .find(".ko")
                .filter(|i| matches!(&n[i + 3..], "" | ".xz" | ".zst" | ".gz"))
                .map(|i| &n[..i])
        {
            out.push((stem.replace('-', "_"), p));
        }
    }
}

/// A module file's contents, decompressed (busybox insmod takes plain ELF).
fn module_bytes(p: &Path) -> anyhow::Result<Vec<u8>> {
    let n = p.to_string_lossy();
    let tool = if n.ends_with(".xz") {
        Some("xz")
    } else if n.ends_with(".zst") {
        Some("zstd")
    } else if n.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::read(p).with_context(|| format!("reading {}", p.display())),
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(p)
                .output()
                .with_context(|| format!("running {t} -dc"))?;
            if !out.status.success() {
                bail!(
                    "{t} -dc {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(out.stdout)
        }
    }
}

/// `depends=` of a module's `.modinfo` (NUL-separated `key=value` strings).
fn depends(elf: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    elf.windows(key.len())
        .position(|w| w == key)
        .map(|i| {
            let rest = &elf[i + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The modules to load, dependencies first, as (name, contents).
fn modules(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut index = Vec::new();
    module_index(dir, &mut index);
    let builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.rsplit('/')
                .next()?
                .strip_suffix(".ko")
                .map(|s| s.replace('-', "_"))
        })
        .collect();
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    fn visit(
        name: &str,
        index: &[(String, PathBuf)],
        builtin: &BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
        depth: u32,
    ) -> anyhow::Result<()> {
        if order.iter().any(|(n, _)| n == name) || depth > 32 {
            return Ok(());
        }
        let Some((_, path)) = index.iter().find(|(n, _)| n == name) else {
            if !builtin.contains(name) {
                eprintln!(
                    "vm-test: module {name} is neither a module file nor built in; going on without it"
                );
            }
            return Ok(());
        };
        let bytes = module_bytes(path)?;
        for d in depends(&bytes) {
            visit(&d, index, builtin, order, depth + 1)?;
        }
        order.push((name.to_owned(), bytes));
        Ok(())
    }
    for m in MODULES {
        visit(m, &index, &builtin, &mut order, 0)?;
    }
    Ok(order)
}

/// The guest's command line (run under `chroot` in the shared host root).
fn guest_command(root: &Path, p: &Payload, fuzz_count: u64, only: &[String]) -> String {
    let mut cmd = format!(
        "cd {} && /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp FUZZ_COUNT={fuzz_count} {} vm-guest --sip-rewriter {}",
        root.display(),
        p.xtask.display(),
        p.sip_rewriter.display()
    );
    for (name, exe) in p
        .tests
        .iter()
        .filter(|(n, _)| only.is_empty() || only.contains(n))
    {
        cmd.push_str(&format!(" --test {name}={}", exe.display()));
    }
    cmd
}

fn init_script(mods: &[String], guest_cmd: &str, workspace: &Path) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "@@VM boot $(uname -r)"
for m in {mods}; do insmod /mods/$m.ko || echo "@@VM insmod $m failed"; done
H=/mnt/host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot $H; then
  echo "@@VM error mounting the host root over 9p failed"; poweroff -f
fi
# The new root is a tmpfs holding the host's top-level directories as bind mounts: the guest's
# own proc, sys, dev, /tmp and /run are mounted on tmpfs directories, never over 9p ones (a
# mount over a 9p directory was not visible after the chroot).
R=/mnt/root
mount -t tmpfs root $R
for e in $H/*; do
  n=${{e##*/}}
  case $n in
    proc|sys|dev|run|tmp) mkdir $R/$n ;;
    *) if [ -L $e ]; then ln -s "$(readlink $e)" $R/$n; elif [ -d $e ]; then mkdir $R/$n; mount --bind $e $R/$n; fi ;;
  esac
done
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mount -t tmpfs tmp $R/tmp
mount -t tmpfs run $R/run
mount -t bpf bpf $R/sys/fs/bpf
# The workspace stays visible where it is, also under /tmp or /run (a CI clone).
W={workspace}
if [ ! -d $R$W ]; then mkdir -p $R$W && mount --bind $H$W $R$W; fi
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
ip link set lo up 2>/dev/null
chroot $R /bin/sh -c '{guest_cmd}'
echo "@@VM exit $?"
echo "@@VM done"
poweroff -f
"#,
        mods = mods.join(" "),
        workspace = workspace.display(),
    )
}

fn initramfs(
    out: &Path,
    mods: Option<&Path>,
    guest_cmd: &str,
    workspace: &Path,
) -> anyhow::Result<()> {
    let modules = match mods {
        Some(d) => modules(d)?,
        None => Vec::new(),
    };
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let busybox =
        fs::read("/bin/busybox").context("reading /bin/busybox (Debian busybox-static)")?;
    let mut c = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "mnt", "mnt/host", "mnt/root", "mods",
    ] {
        c.dir(d);
    }
    c.node("dev/console", 0o020600, 5, 1);
    c.file("bin/busybox", 0o100755, &busybox);
    c.file(
        "init",
        0o100755,
        init_script(&names, guest_cmd, workspace).as_bytes(),
    );
    for (n, bytes) in &modules {
        c.file(&format!("mods/{n}.ko"), 0o100644, bytes);
    }
    fs::write(out, c.finish()).with_context(|| format!("writing {}", out.display()))
}

/// A `newc` cpio archive, what the kernel unpacks as its initramfs.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, mode, (major, minor), &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, mode, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// The qemu command line for one guest.
fn qemu(vmlinuz: &Path, initrd: &Path, opts: &Options) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    if opts.kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
    }
    cmd.args([
        "-smp",
        "2",
        "-m",
        "2048",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3 mitigations=off",
    ])
    .args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
    ]);
    cmd
}

/// Process group of the guest (or host check) running now: killed if we are interrupted, since
/// its own group does not get the terminal's Ctrl-C.
static RUNNING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_interrupt(sig: libc::c_int) {
    let pg = RUNNING.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: kill(2) and _exit(2) are async-signal-safe.
    unsafe {
        if pg > 0 {
            libc::kill(-pg, libc::SIGKILL);
        }
        libc::_exit(128 + sig);
    }
}

/// Runs `cmd` with its stdout in `log`, killed (with its process group) after the time limit
/// or when we get SIGINT/SIGTERM.
fn run_logged(cmd: &mut Command, log: &Path, opts: &Options) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    RUNNING.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            RUNNING.store(0, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _done = Done;
    let deadline = Instant::now() + opts.timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                let text = fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                bail!(
                    "{:?} exited with {st}: {}",
                    cmd.get_program(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this function started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            bail!(
                "did not finish within {} s; killed (log: {})",
                opts.timeout.as_secs(),
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the guest's `@@VM` lines.
fn parse_console(text: &str) -> Row {
    let mut row = Row::default();
    for line in text.lines() {
        let Some(rest) = line
            .trim_end_matches('\r')
            .split_once("@@VM ")
            .map(|(_, r)| r)
        else {
            continue;
        };
        let (key, val) = rest.split_once(' ').unwrap_or((rest, ""));
        match key {
            "boot" => row.release = val.to_owned(),
            "prog" => {
                if let Some((name, v)) = val.split_once(' ') {
                    row.progs.push((name.to_owned(), v.to_owned()));
                }
            }
            "tests" => {
                let mut w = val.split_whitespace();
                row.passed += w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                row.failed += w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            "hooks" => row.hooks = val.to_owned(),
            "rewrite" => row.rewrite = val.to_owned(),
            "restore" => row.restore = val.to_owned(),
            "refused" => row.refused = Some(val.to_owned()),
            "error" => row.error = Some(val.to_owned()),
            _ => {}
        }
    }
    row
}

pub mod guest {
    //! `xtask vm-guest`: what runs inside the guest, as root, with the host's root file system
    //! read-only. Prints `@@VM` lines for the host.
    use super::*;

    pub fn run(sip_rewriter: &Path, tests: &[String]) -> anyhow::Result<()> {
        for t in tests {
            let (name, exe) = t
                .split_once('=')
                .with_context(|| format!("--test {t}: want NAME=PATH"))?;
            let started = Instant::now();
            let mut child = Command::new(exe)
                .args(["--test-threads", "1", "--nocapture"])
                .env("SIP_REWRITER_BIN", sip_rewriter)
                // Under TCG, loading the programs takes tens of seconds (tests/src/cli.rs).
                .env("SIP_REWRITER_ATTACH_WAIT", "240")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting test {name} ({exe})"))?;
            let (mut passed, mut failed) = (0u64, 0u64);
            if let Some(out) = child.stdout.take() {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    println!("{line}");
                    // (libtest may print `test NAME ... ` before the first of them.)
                    if let Some(rest) = line.split_once("verifier: ").map(|(_, r)| r) {
                        // `verifier: NAME processed N instructions` / `verifier: NAME rejected: LINE`
                        let (prog, what) = rest.split_once(' ').unwrap_or((rest, ""));
                        let v = match what.strip_prefix("processed ") {
                            Some(n) => n.split(' ').next().unwrap_or("?").to_owned(),
                            None => what.strip_prefix("rejected: ").unwrap_or(what).to_owned(),
                        };
                        println!("@@VM prog {prog} {v}");
                    }
                    if let Some(rest) = line.strip_prefix("test result: ") {
                        let num = |word: &str| {
                            rest.split(';')
                                .find_map(|p| {
                                    p.trim().strip_suffix(word).and_then(|n| {
                                        n.trim().rsplit(' ').next()?.parse::<u64>().ok()
                                    })
                                })
                                .unwrap_or(0)
                        };
                        passed += num(" passed");
                        failed += num(" failed");
                    }
                }
            }
            let st = child.wait()?;
            if !st.success() && failed == 0 {
                failed = 1;
            }
            println!("@@VM tests {passed} {failed}");
            println!(
                "@@VM test {name} {passed} passed {failed} failed in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        // Under TCG, 6.1's verifier took 13 s for the three programs in the verifier test and more
        // than 20 s inside `attach` (it also probes helpers) in one CI run.
        match crate::demo::run(sip_rewriter, Duration::from_secs(240)) {
            Ok(hooks) => {
                println!("@@VM hooks {hooks}");
                println!("@@VM rewrite ok");
                println!("@@VM restore ok");
            }
            Err(e) => {
                let e = format!("{e:#}");
                if let Some(line) = e.split_once("sip-rewriter: ").map(|(_, l)| l) {
                    println!("@@VM refused {line}");
                }
                println!(
                    "@@VM rewrite {}",
                    if e.contains("unchanged") {
                        "FAILED"
                    } else {
                        "-"
                    }
                );
                println!(
                    "@@VM restore {}",
                    if e.contains("own Contact") {
                        "FAILED"
                    } else {
                        "-"
                    }
                );
                println!("@@VM demo failed: {}", e.replace('\n', " "));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_from_debian_main_entries_only() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        // A third-party repository with a Debian suite name but no `main` comes first and is skipped.
        let list = "deb [arch=amd64] https://thirdparty.example/linux/debian bookworm stable\n# deb http://old.example/debian sid main\n";
        assert_eq!(
            debian_mirrors(&[list.into()], &[deb822.into()]),
            Some((
                "http://mirror.example/debian".into(),
                Some("http://mirror.example/debian-security".into())
            ))
        );
        let list = "deb http://one.example/debian trixie main contrib\n";
        assert_eq!(
            debian_mirrors(&[list.into()], &[]),
            Some(("http://one.example/debian".into(), None))
        );
        let disabled = "Enabled: no\nTypes: deb\nURIs: http://x.example/debian\nSuites: trixie\nComponents: main\n";
        assert_eq!(debian_mirrors(&[], &[disabled.into()]), None);
    }

    #[test]
    fn the_console_report_is_read_back() {
        let console = "SeaBIOS\r\n\x1b[2J@@VM boot 6.1.0-50-amd64\r\ntest x ... verifier: ignored\r\n\
                       @@VM prog sip_rewriter 480673\n@@VM prog sip_restore_xdp math between map_value pointer and register\n\
                       @@VM tests 4 0\n@@VM tests 8 1\n@@VM hooks veth-edge egress (clsact)\n@@VM rewrite ok\n@@VM restore ok\n@@VM done\n";
        let r = parse_console(console);
        assert_eq!(r.release, "6.1.0-50-amd64");
        assert_eq!(r.progs[0], ("sip_rewriter".into(), "480673".into()));
        assert_eq!((r.passed, r.failed), (12, 1));
        assert_eq!(
            (r.hooks.as_str(), r.rewrite.as_str(), r.restore.as_str()),
            ("veth-edge egress (clsact)", "ok", "ok")
        );
        // One failed test, one rejected program: not a pass.
        assert!(!r.ok());
    }

    #[test]
    fn a_kernel_that_dies_before_init_is_told_apart() {
        let early = "[    1.9] BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n\
                     [    2.0] RIP: 0010:x+0x1/0x2\r\n[    2.040677] Kernel panic - not syncing: Fatal exception in interrupt\r\n";
        assert_eq!(
            died_booting(early).as_deref(),
            Some("BUG: kernel NULL pointer dereference, address: 0000000000000008")
        );
        // Once our init has run, a panic is the checks' business: no second boot.
        let late = "@@VM boot 6.12.117+deb13-amd64\n[  99.0] Kernel panic - not syncing: Fatal exception\n";
        assert_eq!(died_booting(late), None);
        assert_eq!(
            first_oops(late).as_deref(),
            Some("Kernel panic - not syncing: Fatal exception")
        );
        // A clean boot that simply has not printed yet is not a death.
        assert_eq!(died_booting("SeaBIOS\r\n"), None);
    }

    #[test]
    fn module_dependencies_are_read_from_modinfo() {
        let elf = b"\x7fELF....\0license=GPL\0depends=9pnet,netfs\0intree=Y\0".to_vec();
        assert_eq!(depends(&elf), vec!["9pnet".to_owned(), "netfs".to_owned()]);
        assert!(depends(b"\0depends=\0name=veth\0").is_empty());
    }

    #[test]
    fn cpio_entries_are_newc_aligned() {
        let mut c = Cpio::default();
        c.file("init", 0o100755, b"abc");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // Header (110) + "init\0" padded to 4 (116 in all), then the 3 data bytes padded.
        assert_eq!(&out[116..119], b"abc");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
