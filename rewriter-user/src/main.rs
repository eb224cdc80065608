//! `sip-rewriter`: rewrites the Contact header of SIP REGISTERs on their way to Genesys, in the
//! kernel (TC egress eBPF).

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// In-kernel rewriter of SIP Contact headers for REGISTERs bound for a Genesys SIP Server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Attach(cmd::attach::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => cmd::attach::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-rewriter: {e:#}");
            ExitCode::from(1)
        }
    }
}
