//! `sip-rewriter default set|clear`: the Contact template for DNs not in the map.

use rewriter_common::CFG_HAS_DEFAULT;
use rewriter_user::{config::Template, netdev, pins::PinDir};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Use TEMPLATE (one `{dn}`, e.g. `sip:{dn}@192.168.210.54:5060`) for DNs not in the map;
    /// takes effect on the next REGISTER.
    Set {
        template: String,
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
    /// Stop rewriting REGISTERs whose DN is not in the map (they pass unchanged, counted as
    /// dn_unknown).
    Clear {
        #[arg(long, short = 'i')]
        iface: Option<String>,
    },
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    let (template, iface) = match cmd {
        Cmd::Set { template, iface } => (Some(Template::parse(&template)?), iface),
        Cmd::Clear { iface } => (None, iface),
    };
    netdev::require_root()?;
    let pins = PinDir::discover(iface.as_deref())?;
    pins.config()?.update(|cfg| {
        match &template {
            Some(t) => {
                if !cfg.set_template(t.pre.as_bytes(), t.post.as_bytes()) {
                    anyhow::bail!("template {t} is too long");
                }
            }
            None => cfg.flags &= !CFG_HAS_DEFAULT,
        }
        Ok(())
    })?;
    match template {
        Some(t) => println!("default Contact on {}: {t}", pins.iface),
        None => println!("no default Contact on {}", pins.iface),
    }
    Ok(())
}
