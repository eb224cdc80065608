//! The options that make up the settings, shared by `attach` and `check`.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use rewriter_user::config::{
    self, KeepParams, MAX_CONTACTS_RANGE, MAX_INTERVAL, MAX_REGISTRATIONS_RANGE, Settings,
    Template, validate_port,
};

/// Settings options; each overrides its config-file key.
#[derive(clap::Args, Clone, Debug)]
pub struct SettingsArgs {
    /// Interface whose egress traffic reaches Genesys (overrides `interface` in --config).
    #[arg(long, short = 'i')]
    pub iface: Option<String>,
    /// TOML configuration file (see README, "Configuration").
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// UDP destination port of the Genesys SIP server [default: 5060].
    #[arg(long)]
    port: Option<u16>,
    /// Genesys destination address (repeatable); without any, every destination on --port is
    /// a candidate.
    #[arg(long = "genesys", value_name = "ADDR")]
    genesys: Vec<IpAddr>,
    /// Default Contact for DNs not in the map, with one `{dn}`, e.g.
    /// `sip:{dn}@192.168.210.54:5060`.
    #[arg(long = "default", value_name = "TEMPLATE")]
    default: Option<String>,
    /// Contact parameters to keep, comma-separated (`*` = all, empty = none)
    /// [default: expires,q].
    #[arg(long, value_name = "LIST")]
    keep_params: Option<String>,
    /// Where the restore of Genesys' 2xx to REGISTER runs [default: xdp].
    #[arg(long, value_name = "HOOK")]
    ingress: Option<rewriter_user::Ingress>,
    /// Capacity of the restore state map (one entry per registered client and Call-ID, at most
    /// 4 per DN; the least recently used entry makes room; ~1.3 KiB each with the per-DN index,
    /// reserved at attach) [default: 16384].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(MAX_REGISTRATIONS_RANGE.0)..=i64::from(MAX_REGISTRATIONS_RANGE.1)))]
    max_registrations: Option<u32>,
    /// Serve the counters as Prometheus text on http://ADDR/metrics (`:9465` = every address,
    /// `localhost:9465`, `127.0.0.1:9465`, `[::1]:9465`).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| config::parse_listen_addr(s).map_err(|e| e.to_string()))]
    pub metrics: Option<SocketAddr>,
    /// Capacity of the DN → Contact map (memory is used per stored entry, not reserved)
    /// [default: 131072].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(MAX_CONTACTS_RANGE.0)..=i64::from(MAX_CONTACTS_RANGE.1)))]
    max_contacts: Option<u32>,
    /// Seconds between two counter lines in the log, written only when a counter moved; 0 =
    /// none [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL))]
    interval: Option<u64>,
}

impl SettingsArgs {
    /// The config file's settings alone (defaults without --config).
    pub fn file(&self) -> anyhow::Result<Settings> {
        Ok(self.file_with_bytes()?.0)
    }

    /// [`SettingsArgs::file`] and the file's bytes the settings come from (none without
    /// `--config`).
    pub fn file_with_bytes(&self) -> anyhow::Result<(Settings, Option<Vec<u8>>)> {
        Ok(match &self.config {
            Some(p) => {
                let (s, bytes) = Settings::load_with_bytes(p)?;
                (s, Some(bytes))
            }
            None => (Settings::default(), None),
        })
    }

    /// `s` with the command-line options applied.
    pub fn overlay(&self, mut s: Settings) -> anyhow::Result<Settings> {
        if let Some(i) = &self.iface {
            s.interface = Some(i.clone());
        }
        if let Some(i) = self.ingress {
            s.ingress = i;
        }
        if let Some(p) = self.port {
            validate_port(p)?;
            s.port = p;
        }
        if !self.genesys.is_empty() {
            s.genesys = self.genesys.clone();
        }
        if let Some(t) = &self.default {
            s.template = Some(Template::parse(t)?);
        }
        if let Some(k) = &self.keep_params {
            s.keep = KeepParams::parse_list(k)?;
        }
        if self.metrics.is_some() {
            s.metrics = self.metrics;
        }
        if let Some(n) = self.max_contacts {
            s.max_contacts = n;
        }
        if let Some(n) = self.max_registrations {
            s.max_registrations = n;
        }
        if let Some(n) = self.interval {
            s.interval = n;
        }
        Ok(s)
    }

    /// File settings (if any) with the command-line overrides applied.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        self.overlay(self.file()?)
    }

    /// The config keys (as [`config::changes`] names them) the command line overrides, each
    /// with its option.
    pub fn overridden(&self) -> Vec<(&'static str, &'static str)> {
        [
            ("interface", "--iface", self.iface.is_some()),
            ("ingress", "--ingress", self.ingress.is_some()),
            ("metrics", "--metrics", self.metrics.is_some()),
            (
                "max_contacts",
                "--max-contacts",
                self.max_contacts.is_some(),
            ),
            (
                "max_registrations",
                "--max-registrations",
                self.max_registrations.is_some(),
            ),
            ("interval", "--interval", self.interval.is_some()),
            ("genesys.port", "--port", self.port.is_some()),
            ("genesys.addresses", "--genesys", !self.genesys.is_empty()),
            ("contacts.default", "--default", self.default.is_some()),
            (
                "contacts.keep_params",
                "--keep-params",
                self.keep_params.is_some(),
            ),
        ]
        .into_iter()
        .filter(|(_, _, given)| *given)
        .map(|(k, o, _)| (k, o))
        .collect()
    }
}

/// The warning `attach` and `check` give when no Genesys address is set.
pub fn no_address_warning(s: &Settings) -> Option<String> {
    s.genesys.is_empty().then(|| {
        format!(
            "no Genesys address set: every UDP datagram to port {} leaving {} is a candidate, REGISTERs that Kamailio sends to Asterisk on that port included (they would be rewritten too); set [genesys] addresses in the config file or --genesys ADDR",
            s.port,
            s.interface.as_deref().unwrap_or("the interface")
        )
    })
}
