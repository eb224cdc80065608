//! `sip-rewriter rewrite`: offline dry run of the kernel's algorithm on one message.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use rewriter_common::{
    ContactUri, restore,
    sip::{Decision, MAX_SIP_LEN, rewrite},
};
use rewriter_user::config::Settings;

use super::usage;

/// The input as messages name it.
fn shown(p: &std::path::Path) -> String {
    if p.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        p.display().to_string()
    }
}

/// Rewrite one raw SIP message (the UDP payload) the way the kernel would, without root or a
/// network: the result goes to stdout, the decision (rewritten N contacts / passed: reason) to
/// stderr. DN entries, template and keep list come from --config. With --response, the
/// message is taken as the REGISTER the response answers, and what goes to stdout is the
/// response as the ingress restore would deliver it.
#[derive(clap::Args)]
pub struct Args {
    /// Settings (the same TOML file `attach --config` reads).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// File with the message, or `-` for standard input.
    #[arg(default_value = "-")]
    input: PathBuf,
    /// Genesys' response to the REGISTER (a file): restore it as the ingress program would.
    #[arg(long, value_name = "FILE")]
    response: Option<PathBuf>,
}

/// Offline there are no addresses: the response comes from where the REGISTER went.
const OFFLINE_PEER: rewriter_common::AddrKey = rewriter_common::AddrKey([0; 16]);

pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = match &args.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let mut msg = Vec::new();
    if args.input.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut msg)
            .context("reading standard input")?;
    } else {
        // A missing or unreadable input is bad input, as for the other files (exit 2).
        msg = std::fs::read(&args.input)
            .map_err(|e| usage(format!("cannot read {}: {e}", args.input.display())))?;
    }
    // Saved with an editor or `echo`, a message often lost its CRs; the kernel would pass it
    // as not a REGISTER, which says nothing about why.
    if msg.contains(&b'\n') && !msg.windows(2).any(|w| w == b"\r\n") {
        return Err(usage(format!(
            "{}: lines end in LF; SIP needs CRLF (e.g. sed -i 's/$/\\r/' FILE)",
            shown(&args.input)
        )));
    }
    // A response given as the message: label it as what it is.
    let label = if msg.starts_with(b"SIP/2.0 ") {
        "response (give the REGISTER as the message and this with --response)"
    } else {
        "REGISTER"
    };
    let table: HashMap<&[u8], ContactUri> = settings
        .contacts
        .iter()
        .filter_map(|(dn, uri)| ContactUri::new(uri.as_bytes()).map(|v| (dn.as_bytes(), v)))
        .collect();
    let mut out = vec![0u8; MAX_SIP_LEN * 2];
    let decision = rewrite(
        &msg,
        &settings.kernel_config(),
        |dn| table.get(dn).copied(),
        &mut out,
    );
    let mut stdout = std::io::stdout().lock();
    let rewritten = match decision {
        Decision::Rewritten { len, contacts } => {
            eprintln!(
                "{label}: rewritten {contacts} contact(s), {} -> {len} bytes",
                msg.len()
            );
            Some(&out[..len])
        }
        Decision::Pass(stat) => {
            eprintln!("{label}: passed: {}", stat.name());
            None
        }
    };
    let Some(path) = &args.response else {
        stdout.write_all(rewritten.unwrap_or(&msg))?;
        return Ok(());
    };
    let resp =
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let state = rewritten.and_then(|new| {
        restore::record_rewritten(&msg, new, &settings.kernel_config(), OFFLINE_PEER)
    });
    if rewritten.is_some() && state.is_none() {
        eprintln!(
            "REGISTER: not recorded (no Call-ID or one over 64 bytes, more than 4 contacts, or a URI over 128 bytes)"
        );
    }
    let mut restored = vec![0u8; MAX_SIP_LEN * 2];
    let lookup = |k: &restore::RegKey| state.filter(|(sk, _)| sk == k).map(|(_, st)| st);
    match restore::restore(
        &resp,
        &settings.kernel_config(),
        OFFLINE_PEER,
        lookup,
        &mut restored,
    ) {
        restore::Decision::Restored { len, contacts } => {
            stdout.write_all(&restored[..len])?;
            eprintln!(
                "response: restored {contacts} contact(s), {} -> {len} bytes",
                resp.len()
            );
        }
        restore::Decision::Pass(stat) => {
            stdout.write_all(&resp)?;
            eprintln!("response: passed: {}", stat.name());
        }
    }
    Ok(())
}
