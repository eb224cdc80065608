//! `sip-rewriter check`: validate the settings without touching the kernel.

use super::{options::SettingsArgs, usage};

/// Validate the settings as `attach` would take them (the config file and the same options)
/// and print the effective settings, without root or a kernel. Exit status 0 valid, 2 invalid
/// (the message names the file, line and value). The systemd unit runs it before a reload, so
/// `systemctl reload` fails on an invalid file and the running settings stay.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    settings: SettingsArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let s = args.settings.settings()?;
    if s.interface.is_none() {
        return Err(usage(
            "no interface: give --iface IF or `interface = \"IF\"` in --config",
        ));
    }
    if let Some(w) = super::options::no_address_warning(&s) {
        log::warn!("{w}");
    }
    print!("{}", s.to_toml());
    Ok(())
}
