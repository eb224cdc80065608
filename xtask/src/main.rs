//! `cargo xtask setup|build|run|test|demo`.
//!
//! Every command first runs `setup`, which installs what the build needs (nightly `rust-src`,
//! `bpf-linker`) when it is missing and is a fast no-op otherwise.

mod demo;
mod setup;

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
    /// Build, then run sip-rewriter with the given arguments (as root).
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    setup::ensure()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build { release } => build(release),
        Cmd::Run { release, args } => {
            build(release)?;
            let bin = workspace_root()?
                .join("target")
                .join(if release { "release" } else { "debug" })
                .join("sip-rewriter");
            cargo_like(Command::new(&bin).args(&args))
        }
        Cmd::Test { args } => test(&args),
        Cmd::Bench { quick, no_kamailio } => {
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
            demo::run(&workspace_root()?.join("target/debug/sip-rewriter"))
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
        demo::run(&bin).and_then(|()| {
            eprintln!("xtask: running cargo xtask bench --quick (smoke test)");
            cargo_like(cargo().args([
                "run",
                "-p",
                "integration-tests",
                "--bin",
                "bench",
                "--",
                "--quick",
            ]))
        })
    } else {
        Ok(())
    };
    eprintln!("xtask: tests took {:.1} s", started.elapsed().as_secs_f64());
    // One closing line for the whole run (cargo's last summary is a doc-test binary's).
    println!("tests: {passed} passed, {failed} failed");
    tests?;
    demo
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
