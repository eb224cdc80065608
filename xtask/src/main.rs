//! `cargo xtask setup|build|run|install|test|demo`.
//!
//! Every command first runs `setup`, which installs what the build needs (nightly `rust-src`,
//! `bpf-linker`) when it is missing and is a fast no-op otherwise.

mod demo;
mod install;
mod setup;
mod vm;

use std::{
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "sip-rewriter project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces the eBPF build needs (idempotent).
    Setup,
    /// Build the eBPF program and the sip-rewriter binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run sip-rewriter with the given arguments (as root). Its exit status is
    /// xtask's; SIGINT/SIGTERM are passed on to it and waited for.
    Run {
        #[arg(long)]
        release: bool,
        /// Show the build's output (the eBPF build's lines included).
        #[arg(long, short)]
        verbose: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release binary and install it with the systemd unit and the example config:
    /// PREFIX/bin/sip-rewriter, UNITDIR/sip-rewriter.service (its ExecStart/ExecReload name
    /// these paths), PREFIX/share/doc/sip-rewriter/{sip-rewriter.example.toml,README.md} and
    /// SYSCONFDIR/sip-rewriter.toml from the example only if that file does not exist (an
    /// operator's config is never overwritten). Does not run systemctl.
    Install {
        /// Prefix of the binary and the documentation.
        #[arg(long, value_name = "DIR", default_value = "/usr/local")]
        prefix: std::path::PathBuf,
        /// Directory of the config file sip-rewriter.toml.
        #[arg(long, value_name = "DIR", default_value = "/etc")]
        sysconfdir: std::path::PathBuf,
        /// Directory of the systemd unit.
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unitdir: std::path::PathBuf,
        /// Stage every file under DIR (packaging, tests); the unit still names the final paths.
        /// Without it, installs into / (needs root).
        #[arg(long, value_name = "DIR")]
        destdir: Option<std::path::PathBuf>,
    },
    /// Run every test of the workspace, privileged ones included (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`: test-binary arguments).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Demonstrate the rewrite on a throw-away network-namespace topology.
    Demo,
    /// Measure: kernel ns/packet (BPF_PROG_TEST_RUN, live), Kamailio and a userspace relay
    /// side by side; writes docs/BENCHMARKS.md and docs/bench.svg (needs root).
    Bench {
        /// Seconds instead of minutes, no Kamailio, no report files (a smoke test).
        #[arg(long)]
        quick: bool,
        /// Skip Kamailio (installed with apt-get when missing otherwise).
        #[arg(long)]
        no_kamailio: bool,
        /// Only the warm phase rows (copy, scan, rewrite to itself) and the empty program, ROUNDS
        /// runs each, as min and median ns; nothing else, no report files. For comparing two
        /// builds on a noisy machine: run each a few times in turn and compare the minimums.
        #[arg(long, value_name = "ROUNDS", conflicts_with_all = ["quick", "no_kamailio"])]
        phases: Option<std::num::NonZeroU32>,
    },
    /// Coverage-guided fuzzing of the SIP scan/rewrite and of the restore (cargo fuzz,
    /// libFuzzer) for N seconds in all; installs cargo-fuzz when missing.
    FuzzParser {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Differential run: N generated packets through the kernel program and the userspace
    /// algorithm (needs root).
    Fuzz {
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Seed of the generator (printed when absent).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The kernel matrix: boot Debian kernels in qemu and run the kernel tests and a real
    /// attach inside each (needs root; downloads each kernel once into ~/.cache/sip-rewriter/vm).
    VmTest {
        /// Kernels to run (repeatable): 5.10, 6.1, 6.12-bpo, 6.12, host. Default: all.
        #[arg(long = "kernel", value_name = "SPEC")]
        kernels: Vec<String>,
        /// Seconds one guest may take before it is killed.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Use KVM instead of TCG (where /dev/kvm is a real hypervisor).
        #[arg(long)]
        kvm: bool,
        /// Generated packets per differential test inside the guest.
        #[arg(long, default_value_t = 2_000)]
        fuzz_count: u64,
        /// Download the kernels again even if the cache has them.
        #[arg(long)]
        refresh: bool,
        /// Only these guest tests (comma-separated, e.g. `verifier`); the attach check still runs.
        #[arg(long, value_delimiter = ',')]
        tests: Vec<String>,
        /// Run this shell command in each guest instead of the checks (prints its output).
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
    },
    /// Inside a vm-test guest: run the given test binaries and the demo, report `@@VM` lines.
    #[command(hide = true)]
    VmGuest {
        #[arg(long)]
        sip_rewriter: std::path::PathBuf,
        /// NAME=EXECUTABLE (repeatable).
        #[arg(long = "test")]
        tests: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The guest has a read-only root and everything already built.
    if let Cmd::VmGuest {
        sip_rewriter,
        tests,
    } = &cli.command
    {
        return vm::guest::run(sip_rewriter, tests);
    }
    setup::ensure()?;
    match cli.command {
        Cmd::VmGuest { .. } => unreachable!("handled above"),
        Cmd::VmTest {
            kernels,
            timeout,
            kvm,
            fuzz_count,
            refresh,
            tests,
            exec,
        } => vm::run(
            &workspace_root()?,
            &vm::Options {
                kernels,
                timeout: std::time::Duration::from_secs(timeout),
                kvm,
                fuzz_count,
                refresh,
                tests,
                exec,
            },
        ),
        Cmd::Setup => Ok(()),
        Cmd::Build { release } => build(release),
        Cmd::Run {
            release,
            verbose,
            args,
        } => {
            if verbose {
                build(release)?;
            } else {
                build_quiet(release)?;
            }
            let bin = workspace_root()?
                .join("target")
                .join(if release { "release" } else { "debug" })
                .join("sip-rewriter");
            std::process::exit(run_forwarding(Command::new(&bin).args(&args))?)
        }
        Cmd::Install {
            prefix,
            sysconfdir,
            unitdir,
            destdir,
        } => install::run(
            &workspace_root()?,
            &install::Options {
                prefix,
                sysconfdir,
                unitdir,
                destdir,
            },
        ),
        Cmd::Test { args } => test(&args),
        Cmd::Bench {
            quick,
            no_kamailio,
            phases,
        } => {
            setup::require_root(
                "cargo xtask bench (it loads eBPF programs and creates network namespaces)",
            )?;
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "bench",
                "--",
            ]);
            if quick {
                cmd.arg("--quick");
            }
            if no_kamailio {
                cmd.arg("--no-kamailio");
            }
            if let Some(rounds) = phases {
                cmd.args(["--phases", &rounds.to_string()]);
            }
            cargo_like(&mut cmd)
        }
        Cmd::FuzzParser { seconds } => {
            let has = Command::new("cargo")
                .args(["fuzz", "--version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !has {
                eprintln!("xtask: installing cargo-fuzz");
                cargo_like(
                    cargo()
                        .args(["install", "cargo-fuzz", "--locked"])
                        .current_dir(std::env::temp_dir()),
                )?;
            }
            // Seed the fuzzer with every corpus case (first byte: configuration selector).
            let root = workspace_root()?;
            let seeds = root.join("fuzz/corpus/parser");
            std::fs::create_dir_all(&seeds)
                .with_context(|| format!("creating {}", seeds.display()))?;
            for dir in ["tests/corpus", "tests/shared-corpus"] {
                for e in std::fs::read_dir(root.join(dir))?.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(stem) = name.strip_suffix(".in.sip") {
                        let mut data = vec![0x05u8];
                        data.extend(std::fs::read(e.path())?);
                        std::fs::write(seeds.join(stem), data)?;
                    }
                }
            }
            // The restore target: every restore corpus response, with the "any state" selector.
            let seeds = root.join("fuzz/corpus/restore");
            std::fs::create_dir_all(&seeds)
                .with_context(|| format!("creating {}", seeds.display()))?;
            for e in std::fs::read_dir(root.join("tests/corpus-restore"))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".resp.sip") {
                    let mut data = vec![0x80u8];
                    data.extend(std::fs::read(e.path())?);
                    std::fs::write(seeds.join(stem), data)?;
                }
            }
            // The time is split between the two targets.
            for target in ["parser", "restore"] {
                cargo_like(
                    Command::new("cargo")
                        .args([
                            "+nightly",
                            "fuzz",
                            "run",
                            target,
                            "--",
                            &format!("-max_total_time={}", seconds.div_ceil(2)),
                        ])
                        .current_dir(workspace_root()?)
                        .stdin(std::process::Stdio::null()),
                )?;
            }
            Ok(())
        }
        Cmd::Fuzz { count, seed } => {
            setup::require_root("cargo xtask fuzz (it loads the eBPF program)")?;
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--release",
                "-p",
                "integration-tests",
                "--test",
                "differential",
                "--test",
                "restore_differential",
            ]);
            cmd.args(["kernel_and_userspace", "--", "--nocapture"]);
            cmd.env("FUZZ_COUNT", count.to_string());
            if let Some(s) = seed {
                cmd.env("FUZZ_SEED", s.to_string());
            }
            cargo_like(&mut cmd)
        }
        Cmd::Demo => {
            setup::require_root("cargo xtask demo (it creates network namespaces and loads eBPF)")?;
            build(false)?;
            demo::run(
                &workspace_root()?.join("target/debug/sip-rewriter"),
                demo::READY_ON_HOST,
            )
            .map(drop)
        }
    }
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "rewriter-user"]);
    if release {
        cmd.arg("--release");
    }
    cargo_like(&mut cmd)
}

/// [`build`] without aya-build's progress lines, which cargo prints as
/// `warning: rewriter-user@…` even when nothing is built; everything is shown if it fails.
fn build_quiet(release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--package", "rewriter-user"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprint!("{err}");
        bail!("{cmd:?} failed: {}", out.status);
    }
    for line in err.lines() {
        if !line.starts_with("warning: rewriter-user@") {
            eprintln!("{line}");
        }
    }
    Ok(())
}

/// The child `run_forwarding` waits for, for the signal handler.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our child's until we reap it.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs `cmd` with SIGINT/SIGTERM passed on to it, waits for it and returns the exit status a
/// shell would report (128 + signal for a child killed by one).
fn run_forwarding(cmd: &mut Command) -> anyhow::Result<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    CHILD.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only reads an atomic and calls kill(2).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let status = child.wait().with_context(|| format!("waiting for {cmd:?}"));
    CHILD.store(0, std::sync::atomic::Ordering::SeqCst);
    let status = status?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::require_root(
        "cargo xtask test (it loads eBPF programs and creates network namespaces)",
    )?;
    let started = Instant::now();
    // The CLI tests run the real binary.
    build(false)?;
    let bin = workspace_root()?.join("target/debug/sip-rewriter");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "rewriter-ebpf",
        "--no-fail-fast",
    ]);
    cmd.args(extra);
    cmd.env("SIP_REWRITER_BIN", &bin);
    let (tests, passed, failed) = run_counting(&mut cmd);
    // The README's first command, as a test: it fails if any REGISTER arrives unchanged.
    // Then the bench as a smoke test (it reports, it never judges timings).
    let demo = if extra.is_empty() {
        eprintln!("xtask: running the demo");
        let bench = |args: &[&str]| {
            eprintln!(
                "xtask: running cargo xtask bench {} (smoke test)",
                args.join(" ")
            );
            cargo_like(
                cargo()
                    .args(["run", "-p", "integration-tests", "--bin", "bench", "--"])
                    .args(args),
            )
        };
        demo::run(&bin, demo::READY_ON_HOST)
            .and_then(|_| bench(&["--quick"]))
            .and_then(|_| bench(&["--phases", "3"]))
    } else {
        Ok(())
    };
    // The kernel matrix (qemu): the kernels our users run, each timed.
    let vm = if extra.is_empty() && std::env::var_os("XTASK_NO_VM").is_none() {
        eprintln!(
            "xtask: running the kernel matrix (cargo xtask vm-test --kernel {})",
            TEST_KERNELS.join(" --kernel ")
        );
        vm::run(
            &workspace_root()?,
            &vm::Options {
                kernels: TEST_KERNELS.iter().map(|k| (*k).to_owned()).collect(),
                timeout: std::time::Duration::from_secs(900),
                kvm: false,
                fuzz_count: 2_000,
                refresh: false,
                tests: Vec::new(),
                exec: None,
            },
        )
    } else {
        Ok(())
    };
    eprintln!("xtask: tests took {:.1} s", started.elapsed().as_secs_f64());
    // One closing line for the whole run (cargo's last summary is a doc-test binary's).
    println!("tests: {passed} passed, {failed} failed");
    tests?;
    demo?;
    vm
}

/// The kernels `cargo xtask test` boots: Debian 11 (where `attach` must refuse in one line),
/// Debian 12 and Debian 13. `XTASK_NO_VM=1` skips them in a local run.
const TEST_KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

/// The kernel tests that run in every vm-test guest.
const GUEST_TESTS: &[&str] = &[
    "verifier",
    "kernel_corpus",
    "kernel_rules",
    "prog_test_run",
    "restore",
    "differential",
    "restore_differential",
    "coexist",
];

/// Builds what a vm-test guest runs: the sip-rewriter binary, this xtask binary and the kernel
/// test binaries (the same debug build `cargo xtask test` uses).
fn build_guest_payload(root: &std::path::Path) -> anyhow::Result<vm::Payload> {
    build_quiet(false)?;
    let mut cmd = cargo();
    cmd.args(["test", "--no-run", "-p", "integration-tests"]);
    for t in GUEST_TESTS {
        cmd.args(["--test", t]);
    }
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprint!("{err}");
        bail!("{cmd:?} failed: {}", out.status);
    }
    // cargo prints `Executable tests/foo.rs (target/debug/deps/foo-HASH)` for each.
    let mut tests = Vec::new();
    for line in err.lines() {
        if let Some(rest) = line.trim().strip_prefix("Executable ")
            && let Some((src, exe)) = rest.split_once(" (")
        {
            let name = std::path::Path::new(src)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if GUEST_TESTS.contains(&name.as_str()) {
                tests.push((name, root.join(exe.trim_end_matches(')'))));
            }
        }
    }
    tests.sort_by_key(|(n, _)| GUEST_TESTS.iter().position(|t| t == n));
    if tests.len() != GUEST_TESTS.len() {
        bail!(
            "cargo test --no-run listed {} of the {} guest test binaries",
            tests.len(),
            GUEST_TESTS.len()
        );
    }
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    Ok(vm::Payload {
        xtask,
        sip_rewriter: root.join("target/debug/sip-rewriter"),
        tests,
    })
}

/// Runs `cmd`, echoing its stdout, and adds up cargo test's `N passed; M failed` summaries.
fn run_counting(cmd: &mut Command) -> (anyhow::Result<()>, u64, u64) {
    use std::io::BufRead as _;
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (Err(e).with_context(|| format!("spawning {cmd:?}")), 0, 0),
    };
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let num = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(word)
                                .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                        })
                        .unwrap_or(0)
                };
                passed += num(" passed");
                failed += num(" failed");
            }
        }
    }
    let r = match child.wait() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(anyhow::anyhow!("{cmd:?} failed: {st}")),
        Err(e) => Err(e).with_context(|| format!("waiting for {cmd:?}")),
    };
    (r, passed, failed)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root().unwrap_or_else(|_| ".".into()));
    // Builds and tests read nothing from standard input (the nested cargo of aya-build would
    // inherit it): give them an empty one.
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` with inherited stdio and turns a non-zero exit into an error.
fn cargo_like(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(|p| p.to_path_buf())
        .context("xtask has no parent directory")
}
