//! `sip-rewriter`: rewrites the Contact header of SIP REGISTERs on their way to a Genesys SIP
//! Server, in the kernel (TC egress eBPF).

mod cmd;

use std::{io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};
use rewriter_user::config::{ConfigError, ValidationError};

/// In-kernel rewriter of SIP Contact headers for REGISTERs bound for a Genesys SIP Server.
///
/// `attach` loads the program on an interface's egress and keeps running (or, with --persist,
/// leaves it attached); the other commands change or inspect the running program through its
/// pins under /sys/fs/bpf/sip-rewriter/<iface>/.
#[derive(Parser)]
#[command(name = "sip-rewriter", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Debug logging of sip-rewriter itself (e.g. the whole verifier log when the kernel
    /// refuses a program); RUST_LOG overrides it.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    Attach(cmd::attach::Args),
    Check(cmd::check::Args),
    Detach(cmd::detach::Args),
    Status(cmd::status::Args),
    /// Manage the DN → Contact map (e.g. 1002 → sip:1002@192.168.210.54:5060).
    #[command(subcommand)]
    Contact(cmd::contact::Cmd),
    /// Manage the default Contact template used for DNs not in the map.
    #[command(subcommand)]
    Default(cmd::default::Cmd),
    Stats(cmd::stats::Args),
    Rewrite(cmd::rewrite::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Attach(_)) {
        // A reader that goes away (`contact list | head -1`) ends a short command quietly with
        // SIGPIPE, exit 141, as coreutils do, instead of a failed-write panic. `attach` keeps
        // Rust's ignored SIGPIPE: a metrics client hanging up must not end it.
        // SAFETY: signal(2) with a valid signal number and SIG_DFL, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Status(args) => match cmd::status::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Attach(args) => cmd::attach::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Detach(args) => cmd::detach::run(args),
        Command::Contact(c) => cmd::contact::run(c),
        Command::Default(c) => cmd::default::run(c),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Rewrite(args) => cmd::rewrite::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(
                std::io::stderr(),
                "{}sip-rewriter: {}",
                if journal() { "<3>" } else { "" },
                rewriter_user::one_line(&e)
            );
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for bad input (validation, config files, usage), 1 for everything that failed at run time.
fn exit_code(e: &anyhow::Error) -> u8 {
    let usage = e.chain().any(|c| {
        c.downcast_ref::<ValidationError>().is_some()
            || c.downcast_ref::<ConfigError>().is_some()
            || c.downcast_ref::<cmd::UsageError>().is_some()
    });
    if usage { 2 } else { 1 }
}

/// Whether stderr goes to the systemd journal, which reads `<N>` syslog priority prefixes.
fn journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The log filter: our own lines (sip-rewriter, the library and the eBPF programs, all under
/// `rewriter*`) at info, or debug with --verbose; RUST_LOG's bare level sets ours, its
/// `target=level` directives pass through, and aya's internals (189 lines of relocations at
/// debug) appear only when RUST_LOG names aya.
fn log_filter(verbose: bool, rust_log: Option<&str>) -> String {
    let mut ours = if verbose { "debug" } else { "info" };
    let mut directives = Vec::new();
    for d in rust_log.unwrap_or_default().split(',').map(str::trim) {
        if d.is_empty() {
            continue;
        }
        if d.parse::<log::LevelFilter>().is_ok() {
            ours = d;
        } else {
            directives.push(d);
        }
    }
    let mut filter = format!("warn,sip_rewriter={ours},rewriter={ours}");
    for d in &directives {
        filter.push(',');
        filter.push_str(d);
    }
    if !directives.iter().any(|d| d.starts_with("aya")) {
        filter.push_str(",aya=warn");
    }
    filter
}

fn init_logging(verbose: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut b = env_logger::Builder::new();
    b.parse_filters(&log_filter(verbose, rust_log.as_deref()));
    if journal() {
        // journald stamps time and unit itself; the prefix gives `journalctl -p` its priority.
        b.format(|buf, r| {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{prio}>{}", r.args())
        });
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn our_lines_only_unless_rust_log_names_aya() {
        assert_eq!(
            log_filter(false, None),
            "warn,sip_rewriter=info,rewriter=info,aya=warn"
        );
        assert_eq!(
            log_filter(false, Some("debug")),
            "warn,sip_rewriter=debug,rewriter=debug,aya=warn"
        );
        assert_eq!(
            log_filter(true, Some("aya=debug")),
            "warn,sip_rewriter=debug,rewriter=debug,aya=debug"
        );
    }
}
