//! Toolchain bootstrap. Each step checks first and only installs what is missing, so a second
//! run is a quick no-op that reports what it found.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// bpf-linker series known to work with aya-ebpf 0.2 and the nightly's LLVM.
const BPF_LINKER_SERIES: &str = "0.13.";
const BPF_LINKER_REQ: &str = "^0.13";

pub fn ensure() -> anyhow::Result<()> {
    let started = Instant::now();
    let nightly = nightly()?;
    rust_src()?;
    bpf_linker(&nightly)?;
    if is_root() {
        tool_present("ip", "apt-get install -y iproute2")?;
        // sipp drives the end-to-end tests with a real SIP client.
        if !tool_found("sipp") {
            apt_install("sip-tester")?;
        }
        eprintln!("setup: sipp present");
        // Kamailio and node drive the JsSIP chain test (tests/tests/jssip_chain.rs).
        kamailio()?;
        if !tool_found("node") {
            apt_install("nodejs")?;
        }
        if !tool_found("npm") {
            apt_install("npm")?;
        }
        jssip()?;
    }
    eprintln!("setup: ready in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What the nightly toolchain is: its sysroot and LLVM major version.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
}

fn nightly() -> anyhow::Result<Nightly> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"])).context(
        "no nightly Rust toolchain; install it with: rustup toolchain install nightly --profile minimal",
    )?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    let llvm_major: u32 = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unparsable LLVM version {llvm:?}"))?;
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let release = vv
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("?");
    eprintln!("setup: nightly {release} with LLVM {llvm_major}");
    Ok(Nightly {
        sysroot,
        llvm_major,
    })
}

fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: rust-src present");
        return Ok(());
    }
    eprintln!("setup: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("fix with: rustup component add rust-src --toolchain nightly")
}

fn bpf_linker(nightly: &Nightly) -> anyhow::Result<()> {
    if let Ok(v) = output(Command::new("bpf-linker").arg("--version")) {
        let v = v.trim();
        if v.split_whitespace()
            .nth(1)
            .is_some_and(|n| n.starts_with(BPF_LINKER_SERIES))
        {
            eprintln!("setup: {v} works");
            return Ok(());
        }
        eprintln!("setup: found {v:?}, need {BPF_LINKER_SERIES}x; reinstalling");
    }
    let major = nightly.llvm_major;
    let lib_dir = nightly.sysroot.join("lib");
    let lib = find_libllvm(&lib_dir, major)?;
    let prefix = cache_dir()?.join(format!("llvm-{major}"));
    let link = prefix.join("lib").join("libLLVM.so");
    fs::create_dir_all(link.parent().expect("has parent"))
        .with_context(|| format!("creating {}", prefix.display()))?;
    if fs::read_link(&link).ok().as_deref() != Some(lib.as_path()) {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), lib.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_REQ} against {} (about a minute or more)",
        lib.display()
    );
    let rustflags = format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display());
    let feature = format!("llvm-{major}");
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_REQ,
        "--no-default-features",
        "--features",
        &feature,
    ])
    .env("LLVM_PREFIX", &prefix)
    .env("RUSTFLAGS", &rustflags)
    // The workspace's own settings must not leak into the install build.
    .env_remove("CARGO_TARGET_DIR")
    .stdin(std::process::Stdio::null())
    .current_dir(env::temp_dir());
    run(&mut cmd).with_context(|| {
        format!(
            "bpf-linker could not be built; fix with:\n  LLVM_PREFIX={} RUSTFLAGS=\"{rustflags}\" cargo install bpf-linker --version '{BPF_LINKER_REQ}' --no-default-features --features {feature}",
            prefix.display()
        )
    })?;
    let v = output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was installed but does not run (is ~/.cargo/bin on PATH?)")?;
    eprintln!("setup: installed {}", v.trim());
    Ok(())
}

/// `<sysroot>/lib/libLLVM.so.NN.*` (the nightly ships its LLVM as a shared library).
fn find_libllvm(lib_dir: &Path, major: u32) -> anyhow::Result<PathBuf> {
    let want = format!("libLLVM.so.{major}.");
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("reading {}", lib_dir.display()))?;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&want) {
            return Ok(e.path());
        }
    }
    bail!(
        "no {want}* in {}: the nightly toolchain ships no shared LLVM; reinstall it with: rustup toolchain install nightly --force",
        lib_dir.display()
    )
}

pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("sip-rewriter"));
    }
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache").join("sip-rewriter"))
}

fn tool_found(tool: &str) -> bool {
    env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

fn tool_present(tool: &str, fix: &str) -> anyhow::Result<()> {
    if !tool_found(tool) {
        bail!("`{tool}` is missing; fix with: {fix}");
    }
    Ok(())
}

/// `apt-get install -y PKG`, with an `apt-get update` first if the package is not known yet.
fn apt_install(pkg: &str) -> anyhow::Result<()> {
    eprintln!("setup: installing {pkg} (apt-get)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    let _ = Command::new("apt-get")
        .args(["update", "-qq"])
        .stdin(std::process::Stdio::null())
        .status();
    if install() {
        return Ok(());
    }
    bail!("could not install {pkg}; fix with: apt-get update && apt-get install -y {pkg}")
}

/// Kamailio from Debian, with the websocket module, without leaving a daemon running or enabled
/// on this machine: the tests start their own in a namespace.
fn kamailio() -> anyhow::Result<()> {
    let ws_module = Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so");
    if tool_found("kamailio") && ws_module.exists() {
        eprintln!("setup: kamailio present");
        return Ok(());
    }
    // Debian's postinst starts the service through invoke-rc.d, which asks policy-rc.d first
    // (101: action forbidden). A policy the machine already has is left as it is.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        fs::write(
            policy,
            "#!/bin/sh\n# sip-rewriter setup: no service starts during this install\nexit 101\n",
        )
        .with_context(|| format!("writing {}", policy.display()))?;
        fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed =
        apt_install("kamailio").and_then(|()| apt_install("kamailio-websocket-modules"));
    if ours {
        let _ = fs::remove_file(policy);
    }
    installed?;
    // The postinst also enables the unit (systemd and SysV links): undo that.
    let _ = Command::new("update-rc.d")
        .args(["kamailio", "disable"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status();
    eprintln!("setup: installed kamailio (service disabled, not started)");
    Ok(())
}

/// Where `npm ci` puts JsSIP for tests/jssip (outside the repository): one directory per
/// package-lock.json content, so a changed lock file installs afresh and a rerun installs nothing.
/// tests/src/chain.rs computes the same path.
pub fn jssip_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let lock = root.join("tests/jssip/package-lock.json");
    let bytes = fs::read(&lock).with_context(|| format!("reading {}", lock.display()))?;
    // FNV-1a 64: no hashing crate needed for a cache key.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    Ok(cache_dir()?.join(format!("jssip-{hash:016x}")))
}

/// JsSIP and ws from tests/jssip/package-lock.json, installed with `npm ci` (exact versions and
/// integrity hashes from the lock file) into a fresh directory that replaces nothing until done.
fn jssip() -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let dir = jssip_dir(&root)?;
    if dir.join("node_modules/jssip/package.json").is_file() {
        eprintln!("setup: JsSIP present in {}", dir.display());
        return Ok(());
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for f in ["package.json", "package-lock.json"] {
        fs::copy(root.join("tests/jssip").join(f), tmp.join(f))
            .with_context(|| format!("copying tests/jssip/{f}"))?;
    }
    eprintln!("setup: installing JsSIP (npm ci) into {}", dir.display());
    let done = run(Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&tmp)
        .stdin(std::process::Stdio::null()));
    if let Err(e) = done {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context("npm ci for tests/jssip failed"));
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
}

/// What `cargo xtask vm-test` needs on the host: qemu, a static busybox for the initramfs,
/// the decompressors for Debian's modules.
pub fn vm_tools() -> anyhow::Result<()> {
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("xz", "xz-utils"),
        ("zstd", "zstd"),
        ("dpkg-deb", "dpkg"),
    ] {
        if !tool_found(tool) {
            apt_install(pkg)?;
        }
    }
    // Debian's `busybox` package is dynamically linked; the initramfs needs the static one.
    // (A dynamic one names its ELF interpreter.)
    let dynamic = fs::read("/bin/busybox")
        .map(|b| b.windows(8).any(|w| w == b"/lib64/l"))
        .unwrap_or(true);
    if dynamic {
        apt_install("busybox-static")?;
    }
    eprintln!("setup: qemu and busybox-static present");
    Ok(())
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0")
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{what} must run as root; try: sudo -E cargo xtask test");
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
