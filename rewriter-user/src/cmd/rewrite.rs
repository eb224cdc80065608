//! `sip-rewriter rewrite`: offline dry run of the kernel's algorithm on one message.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use rewriter_common::{
    ContactUri,
    sip::{Decision, MAX_SIP_LEN, rewrite},
};
use rewriter_user::config::Settings;

/// Rewrite one raw SIP message (the UDP payload) the way the kernel would, without root or a
/// network: the result goes to stdout, the decision (rewritten N contacts / passed: reason) to
/// stderr. DN entries, template and keep list come from --config.
#[derive(clap::Args)]
pub struct Args {
    /// Settings (the same TOML file `attach --config` reads).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// File with the message, or `-` for standard input.
    #[arg(default_value = "-")]
    input: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = match &args.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let mut msg = Vec::new();
    if args.input.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut msg).context("reading standard input")?;
    } else {
        msg = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    }
    let table: HashMap<&[u8], ContactUri> = settings
        .contacts
        .iter()
        .filter_map(|(dn, uri)| ContactUri::new(uri.as_bytes()).map(|v| (dn.as_bytes(), v)))
        .collect();
    let mut out = vec![0u8; MAX_SIP_LEN * 2];
    let decision = rewrite(&msg, &settings.kernel_config(), |dn| table.get(dn).copied(), &mut out);
    let mut stdout = std::io::stdout().lock();
    match decision {
        Decision::Rewritten { len, contacts } => {
            stdout.write_all(&out[..len])?;
            eprintln!("rewritten {contacts} contact(s), {} -> {len} bytes", msg.len());
        }
        Decision::Pass(stat) => {
            stdout.write_all(&msg)?;
            eprintln!("passed: {}", stat.name());
        }
    }
    Ok(())
}
