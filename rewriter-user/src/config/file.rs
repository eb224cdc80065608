//! The TOML config file and the validated [`Settings`] it and the command line make.
//!
//! The config file is TOML:
//!
//! ```toml
//! interface = "eth0"                        # optional
//! ingress = "xdp"                           # optional: xdp (default), tc or off
//! metrics = "127.0.0.1:9465"                # optional: Prometheus listen address (:PORT = all)
//! max_contacts = 131072                     # optional: DN map capacity
//! max_registrations = 16384                 # optional: restore state map capacity
//! interval = 10                             # optional: seconds between counter lines, 0 = none
//! [genesys]                                 # optional table
//! port = 5060                               # optional, default 5060, 1..=65535
//! addresses = ["10.0.0.5", "2001:db8::5"]   # optional; empty or absent = any destination
//! [contacts]                                # optional table
//! default = "sip:{dn}@192.168.210.54:5060"  # optional; exactly one {dn}
//! keep_params = ["expires", "q"]            # optional; ["*"] = keep all, [] = keep none
//! [contacts.map]                            # optional
//! "1002" = "sip:1002@192.168.210.54:5060"
//! ```
//!
//! Errors name the file, the line and the offending value.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use rewriter_common::{
    CFG_ADDR_FILTER, CFG_KEEP_ALL, Config, DEFAULT_PORT, MAX_CONTACTS, MAX_GENESYS_ADDRS,
};
use serde::Deserialize;
use toml::Spanned;

use super::{
    error::{ConfigError, Field, Reason, ValidationError, line_at},
    keep::KeepParams,
    template::Template,
    validate::{
        parse_listen_addr, validate_dn, validate_interface, validate_port, validate_range,
        validate_uri,
    },
};

/// The config file as TOML gives it, with spans for error lines.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interface: Option<Spanned<String>>,
    ingress: Option<crate::Ingress>,
    metrics: Option<Spanned<String>>,
    max_contacts: Option<Spanned<i64>>,
    max_registrations: Option<Spanned<i64>>,
    interval: Option<Spanned<i64>>,
    genesys: Option<FileGenesys>,
    contacts: Option<FileContacts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGenesys {
    port: Option<Spanned<i64>>,
    addresses: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContacts {
    default: Option<Spanned<String>>,
    keep_params: Option<Vec<Spanned<String>>>,
    map: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

/// Validated settings, from a file and/or the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Interface to attach to.
    pub interface: Option<String>,
    /// Where the restore of Genesys' 2xx to REGISTER runs.
    pub ingress: crate::Ingress,
    /// UDP destination port of the Genesys SIP server.
    pub port: u16,
    /// Genesys SIP server addresses; empty = any destination.
    pub genesys: Vec<IpAddr>,
    /// Default Contact template for DNs not in `contacts`.
    pub template: Option<Template>,
    /// Contact parameters kept by the rewrite.
    pub keep: KeepParams,
    /// (DN, URI) pairs in file order, validated.
    pub contacts: Vec<(String, String)>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Capacity of the DN map.
    pub max_contacts: u32,
    /// Capacity of the restore state map.
    pub max_registrations: u32,
    /// Seconds between two counter lines in the log; 0 = none.
    pub interval: u64,
}

/// Allowed `max_contacts`.
pub const MAX_CONTACTS_RANGE: (u32, u32) = (1, 4_194_304);
/// Allowed `max_registrations`.
pub const MAX_REGISTRATIONS_RANGE: (u32, u32) = (1, 1_048_576);
/// Largest `interval`.
pub const MAX_INTERVAL: u64 = 3600;
/// Default `interval`.
pub const DEFAULT_INTERVAL: u64 = 10;

impl Default for Settings {
    /// No interface, port [`DEFAULT_PORT`], any destination, no template, keep `expires` and
    /// `q`, no contacts.
    fn default() -> Self {
        Settings {
            interface: None,
            ingress: crate::Ingress::default(),
            port: DEFAULT_PORT,
            genesys: Vec::new(),
            template: None,
            keep: KeepParams::default(),
            contacts: Vec::new(),
            metrics: None,
            max_contacts: MAX_CONTACTS,
            max_registrations: rewriter_common::restore::MAX_REGISTRATIONS,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl Settings {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Ok(Self::load_with_bytes(path)?.0)
    }

    /// [`Settings::load`], and the bytes the settings come from ([`read_settled`]: the file
    /// is read until two reads agree, so a file being rewritten in place is not taken half
    /// written). Whoever keeps the bytes to notice a change later must keep these: a second
    /// read may already see another version.
    pub fn load_with_bytes(path: &Path) -> Result<(Self, Vec<u8>), ConfigError> {
        let bytes = read_config_bytes(path)?;
        Ok((Self::parse_bytes(&bytes, path)?, bytes))
    }

    /// [`Settings::parse`] of a file's bytes (UTF-8 text).
    pub fn parse_bytes(bytes: &[u8], origin: &Path) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Io {
            path: origin.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Self::parse(text, origin)
    }

    /// Parses TOML text; `origin` is used in error messages (the file path).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
        let invalid = |offset: usize, source| ConfigError::Invalid {
            path: origin.to_path_buf(),
            line: Some(line_at(text, offset)),
            source,
        };
        let mut settings = Settings::default();

        if let Some(iface) = file.interface {
            validate_interface(iface.get_ref()).map_err(|e| invalid(iface.span().start, e))?;
            settings.interface = Some(iface.into_inner());
        }

        if let Some(ingress) = file.ingress {
            settings.ingress = ingress;
        }

        if let Some(m) = file.metrics {
            let addr = parse_listen_addr(m.get_ref()).map_err(|e| invalid(m.span().start, e))?;
            settings.metrics = Some(addr);
        }
        if let Some(n) = file.max_contacts {
            settings.max_contacts =
                validate_range("max_contacts", *n.get_ref(), MAX_CONTACTS_RANGE)
                    .map_err(|e| invalid(n.span().start, e))?;
        }
        if let Some(n) = file.max_registrations {
            settings.max_registrations =
                validate_range("max_registrations", *n.get_ref(), MAX_REGISTRATIONS_RANGE)
                    .map_err(|e| invalid(n.span().start, e))?;
        }
        if let Some(n) = file.interval {
            settings.interval =
                validate_range("interval", *n.get_ref(), (0u32, MAX_INTERVAL as u32))
                    .map_err(|e| invalid(n.span().start, e))?
                    .into();
        }

        if let Some(genesys) = file.genesys {
            if let Some(port) = genesys.port {
                let value = *port.get_ref();
                let port_err = || {
                    invalid(
                        port.span().start,
                        ValidationError::number(Field::Port, value, Reason::Port),
                    )
                };
                let p = u16::try_from(value).map_err(|_| port_err())?;
                validate_port(p).map_err(|_| port_err())?;
                settings.port = p;
            }
            let addresses = genesys.addresses.unwrap_or_default();
            settings.genesys =
                parse_addresses(&addresses, text).map_err(|(offset, e)| invalid(offset, e))?;
        }

        if let Some(contacts) = file.contacts {
            if let Some(tpl) = contacts.default {
                let parsed = Template::parse(tpl.get_ref());
                settings.template = Some(parsed.map_err(|e| invalid(tpl.span().start, e))?);
            }
            if let Some(keep) = contacts.keep_params {
                let items: Vec<&str> = keep.iter().map(|s| s.get_ref().as_str()).collect();
                settings.keep = KeepParams::from_items(&items)
                    .map_err(|(i, e)| invalid(keep.get(i).map_or(0, |s| s.span().start), e))?;
            }
            let mut map: Vec<_> = contacts.map.unwrap_or_default().into_iter().collect();
            map.sort_by_key(|(dn, _)| dn.span().start);
            if let Some((dn, _)) = map.get(MAX_CONTACTS as usize) {
                let reason = Reason::TooMany {
                    count: map.len(),
                    max: MAX_CONTACTS as usize,
                };
                return Err(invalid(
                    dn.span().start,
                    ValidationError::list(Field::ContactList, reason),
                ));
            }
            for (dn, uri) in map {
                validate_dn(dn.get_ref()).map_err(|e| invalid(dn.span().start, e))?;
                validate_uri(uri.get_ref()).map_err(|e| invalid(uri.span().start, e))?;
                settings.contacts.push((dn.into_inner(), uri.into_inner()));
            }
        }
        Ok(settings)
    }

    /// The kernel-side configuration: port, flags, keep list and template.
    pub fn kernel_config(&self) -> Config {
        let mut config = Config::new(self.port);
        match &self.keep {
            KeepParams::All => config.flags |= CFG_KEEP_ALL,
            KeepParams::Names(names) => {
                for name in names {
                    if !config.add_keep(name.as_bytes()) {
                        log::warn!("keep_params name {name:?} does not fit the kernel keep list");
                    }
                }
            }
        }
        if let Some(t) = &self.template
            && !config.set_template(t.pre.as_bytes(), t.post.as_bytes())
        {
            log::warn!("contact template \"{t}\" is too long for the kernel; not set");
        }
        if !self.genesys.is_empty() {
            config.flags |= CFG_ADDR_FILTER;
        }
        // With XDP in front, the TC ingress restore only takes the frames XDP hands over.
        if self.ingress == crate::Ingress::Xdp {
            config.flags |= rewriter_common::CFG_TC_AFTER_XDP;
        }
        config
    }
}

/// One setting's value as the config file writes it (TOML), for `check` and reload logs.
fn setting_values(s: &Settings) -> [(&'static str, Option<String>); 10] {
    let quoted = |v: &dyn fmt::Display| format!("{:?}", v.to_string());
    let list = |items: Vec<String>| {
        let q: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", q.join(", "))
    };
    let keep = match &s.keep {
        KeepParams::All => vec!["*".to_owned()],
        KeepParams::Names(n) => n.clone(),
    };
    [
        ("interface", s.interface.as_ref().map(|i| quoted(i))),
        ("ingress", Some(quoted(&s.ingress))),
        ("metrics", s.metrics.map(|m| quoted(&m))),
        ("max_contacts", Some(s.max_contacts.to_string())),
        ("max_registrations", Some(s.max_registrations.to_string())),
        ("interval", Some(s.interval.to_string())),
        ("genesys.port", Some(s.port.to_string())),
        (
            "genesys.addresses",
            Some(list(s.genesys.iter().map(|a| a.to_string()).collect())),
        ),
        ("contacts.default", s.template.as_ref().map(|t| quoted(t))),
        ("contacts.keep_params", Some(list(keep))),
    ]
}

/// Settings that differ between `old` and `new` (DN entries aside): (key, old, new), values as
/// TOML writes them, `(none)` for an absent one.
pub fn changes(old: &Settings, new: &Settings) -> Vec<(&'static str, String, String)> {
    let none = || "(none)".to_owned();
    setting_values(old)
        .into_iter()
        .zip(setting_values(new))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((k, a), (_, b))| (k, a.unwrap_or_else(none), b.unwrap_or_else(none)))
        .collect()
}

impl Settings {
    /// The effective settings as a config file (DN entries counted, not listed).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut table = "";
        for (key, value) in setting_values(self) {
            let (t, k) = key.split_once('.').unwrap_or(("", key));
            if t != table {
                out.push_str(&format!("[{t}]\n"));
                table = t;
            }
            match value {
                Some(v) => out.push_str(&format!("{k} = {v}\n")),
                None => out.push_str(&format!("# {k}: not set\n")),
            }
        }
        out.push_str(&format!(
            "# [contacts.map]: {} DN entries\n",
            self.contacts.len()
        ));
        out
    }
}

/// A TOML parse or shape error with its line; names the key of a "duplicate key".
fn toml_error(e: &toml::de::Error, text: &str, origin: &Path) -> ConfigError {
    let mut message = e.message().trim().to_owned();
    if message == "duplicate key"
        && let Some(key) = e.span().and_then(|s| text.get(s))
        && !key.is_empty()
        && !key.contains('\n')
    {
        message = format!("duplicate key {key}");
    }
    ConfigError::Toml {
        path: origin.to_path_buf(),
        line: e.span().map(|s| line_at(text, s.start)),
        message,
    }
}

/// Parses and checks the Genesys addresses; on error also returns the byte offset in `text`.
fn parse_addresses(
    addresses: &[Spanned<String>],
    text: &str,
) -> Result<Vec<IpAddr>, (usize, ValidationError)> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(addresses.len());
    let mut first_offsets: Vec<usize> = Vec::with_capacity(addresses.len());
    for (i, spanned) in addresses.iter().enumerate() {
        let offset = spanned.span().start;
        let s = spanned.get_ref();
        let addr_err = |reason| {
            (
                offset,
                ValidationError::new(Field::Address, s.clone(), reason),
            )
        };
        if i >= MAX_GENESYS_ADDRS as usize {
            let reason = Reason::TooMany {
                count: addresses.len(),
                max: MAX_GENESYS_ADDRS as usize,
            };
            return Err((offset, ValidationError::list(Field::AddressList, reason)));
        }
        let addr: IpAddr = s.parse().map_err(|_| addr_err(Reason::NotAnAddress))?;
        // The kernel stores IPv4 as IPv4-mapped IPv6, so ::ffff:a.b.c.d is a.b.c.d.
        if let Some(j) = out
            .iter()
            .position(|a| a.to_canonical() == addr.to_canonical())
        {
            let first_line = first_offsets.get(j).map(|&o| line_at(text, o));
            return Err(addr_err(Reason::Duplicate { first_line }));
        }
        out.push(addr);
        first_offsets.push(offset);
    }
    Ok(out)
}

/// How long apart [`read_settled`] reads a config file, and how many reads it makes at most.
/// A tool that rewrites a file in place truncates it, then writes it: a read in between sees
/// an empty or partial file (an empty one has no default template and no DN entries).
const SETTLE: Duration = Duration::from_millis(50);
const SETTLE_READS: usize = 8;

/// A config file's bytes, read until they hold still ([`read_settled`]).
pub fn read_config_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    read_settled(path, SETTLE, SETTLE_READS)
}

/// Reads `path` until two reads `settle` apart give the same bytes (at most `reads` reads, at
/// least 2); a file still changing after that is an error, and the caller keeps what it has.
/// Not a regular file (a pipe, `/dev/stdin`, a FIFO): read once, as it can be read only once.
fn read_settled(path: &Path, settle: Duration, reads: usize) -> Result<Vec<u8>, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return std::fs::read(path).map_err(io);
    }
    settled(|| std::fs::read(path), || std::thread::sleep(settle), reads).map_err(|e| {
        io(e.unwrap_or_else(|| {
            std::io::Error::other(format!(
                "it kept changing over {} reads {} ms apart (a writer still at work?)",
                reads.max(2),
                settle.as_millis()
            ))
        }))
    })
}

/// The logic of [`read_settled`]: `read` until two reads with a `wait` between them agree, at
/// most `reads` (at least 2) times. Empty reads never agree (a file rewritten in place is empty
/// between its truncation and the write, so two reads of two rewrites could both land there):
/// an empty file is empty in every read. `Err(None)`: it kept changing.
fn settled(
    mut read: impl FnMut() -> std::io::Result<Vec<u8>>,
    mut wait: impl FnMut(),
    reads: usize,
) -> Result<Vec<u8>, Option<std::io::Error>> {
    let reads = reads.max(2);
    let mut last = read()?;
    let mut empty = usize::from(last.is_empty());
    for _ in 1..reads {
        wait();
        let now = read()?;
        if now.is_empty() {
            empty += 1;
        } else if now == last {
            return Ok(now);
        }
        last = now;
    }
    if empty == reads {
        return Ok(Vec::new());
    }
    Err(None)
}

/// Reads a file as UTF-8 text.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::config::testing::{EXAMPLE, TempFile, pairs, parse, parse_err, strings};

    // --- config file -------------------------------------------------------------------------

    /// A tool rewriting the file in place: truncated, then (a moment later) written whole.
    /// The read that started while it was empty must still give the whole file.
    #[test]
    fn a_file_rewritten_in_place_is_read_whole() {
        let f = TempFile::new(".toml", EXAMPLE);
        let (truncated_tx, truncated_rx) = std::sync::mpsc::channel();
        let path = f.0.clone();
        let writer = std::thread::spawn(move || {
            let mut out = std::fs::File::create(&path).expect("truncate");
            truncated_tx.send(()).expect("reader waits");
            std::thread::sleep(Duration::from_millis(10));
            std::io::Write::write_all(&mut out, EXAMPLE.as_bytes()).expect("write");
        });
        truncated_rx.recv().expect("writer truncated");
        let got = read_settled(&f.0, Duration::from_millis(200), SETTLE_READS);
        writer.join().expect("writer");
        assert_eq!(got.expect("read").as_slice(), EXAMPLE.as_bytes());
    }

    /// `settled` over a scripted sequence of reads.
    fn settle_over(reads: &[&str], max: usize) -> (Result<Vec<u8>, Option<std::io::Error>>, usize) {
        let mut it = reads.iter();
        let mut n = 0;
        let r = settled(
            || {
                n += 1;
                Ok(it
                    .next()
                    .expect("no more reads scripted")
                    .as_bytes()
                    .to_vec())
            },
            || {},
            max,
        );
        (r, n)
    }

    #[test]
    fn settling_takes_the_first_two_reads_that_agree() {
        let (r, n) = settle_over(&["a", "a"], 8);
        assert_eq!((r.ok(), n), (Some(b"a".to_vec()), 2));
        // Half written, then whole: the whole file once it holds still.
        let (r, n) = settle_over(&["", "ab", "ab"], 8);
        assert_eq!((r.ok(), n), (Some(b"ab".to_vec()), 3));
        // Two empty reads (two rewrites caught between truncation and write) do not agree.
        let (r, n) = settle_over(&["", "", "b", "b"], 8);
        assert_eq!((r.ok(), n), (Some(b"b".to_vec()), 4));
        // Empty in every read: an empty file.
        let (r, n) = settle_over(&["", "", ""], 3);
        assert_eq!((r.ok(), n), (Some(Vec::new()), 3));
        // Still changing after the last read.
        let (r, n) = settle_over(&["a", "b", "c"], 3);
        assert!(matches!(r, Err(None)));
        assert_eq!(n, 3);
        // Fewer than 2 reads is 2.
        let (r, n) = settle_over(&["a", "b"], 0);
        assert!(matches!(r, Err(None)));
        assert_eq!(n, 2);
    }

    #[test]
    fn a_path_that_cannot_be_read_is_an_error_naming_it() {
        // A directory is not a regular file: read once, and the read's error names it.
        let e = read_settled(Path::new("/"), Duration::from_millis(1), 3)
            .expect_err("a directory")
            .to_string();
        assert!(e.contains("cannot read /"), "{e}");
    }

    #[test]
    fn a_pipe_is_read_once() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "printf 'port = 5070\\n'"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let fd = std::os::fd::AsRawFd::as_raw_fd(child.stdout.as_ref().expect("piped"));
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{fd}"));
        let got = read_settled(&path, Duration::from_millis(1), 3).expect("read");
        child.wait().expect("sh");
        assert_eq!(got, b"port = 5070\n");
    }

    #[test]
    fn full_example_parses() {
        let s = parse(EXAMPLE).expect("example parses");
        let expected = Settings {
            interface: Some("eth0".to_string()),
            ingress: crate::Ingress::Xdp,
            port: 5060,
            genesys: vec![
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5)),
            ],
            template: Some(Template {
                pre: "sip:".to_string(),
                post: "@192.168.210.54:5060".to_string(),
            }),
            keep: KeepParams::Names(strings(&["expires", "q"])),
            contacts: pairs(&[("1002", "sip:1002@192.168.210.54:5060")]),
            ..Settings::default()
        };
        assert_eq!(s, expected);
    }

    #[test]
    fn defaults_when_tables_absent() {
        let expected = Settings {
            interface: None,
            ingress: crate::Ingress::Xdp,
            port: 5060,
            genesys: vec![],
            template: None,
            keep: KeepParams::Names(strings(&["expires", "q"])),
            contacts: vec![],
            metrics: None,
            max_contacts: MAX_CONTACTS,
            max_registrations: rewriter_common::restore::MAX_REGISTRATIONS,
            interval: DEFAULT_INTERVAL,
        };
        assert_eq!(Settings::default(), expected);
        assert_eq!(parse("").unwrap(), expected);
        assert_eq!(parse("# nothing here\n").unwrap(), expected);
        assert_eq!(
            parse("[genesys]\n[contacts]\n[contacts.map]\n").unwrap(),
            expected
        );
        assert_eq!(parse("[genesys]\naddresses = []\n").unwrap(), expected);
    }

    #[test]
    fn operational_keys_are_read_and_validated() {
        let s =
            parse("metrics = \":9465\"\nmax_contacts = 7\nmax_registrations = 9\ninterval = 0\n")
                .unwrap();
        assert_eq!(s.metrics, Some("[::]:9465".parse().unwrap()));
        assert_eq!((s.max_contacts, s.max_registrations, s.interval), (7, 9, 0));
        let e = parse("\n\ninterval = 3601\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(
            e.to_string()
                .contains("invalid interval 3601: use a value in 0..=3600"),
            "{e}"
        );
        assert!(parse("metrics = \"nowhere\"\n").is_err());
        assert!(parse("max_registrations = 0\n").is_err());
    }

    #[test]
    fn changes_name_each_setting_once() {
        let a = parse("[genesys]\nport = 5060\n").unwrap();
        let b = parse("interval = 3\n[genesys]\nport = 5070\n").unwrap();
        let c = changes(&a, &b);
        assert_eq!(
            c,
            [
                ("interval", "10".to_owned(), "3".to_owned()),
                ("genesys.port", "5060".to_owned(), "5070".to_owned())
            ]
        );
        assert!(b.to_toml().contains("[genesys]\nport = 5070\n"));
    }

    #[test]
    fn port_is_read_and_validated() {
        assert_eq!(parse("[genesys]\nport = 5070\n").unwrap().port, 5070);
        assert_eq!(parse("[genesys]\nport = 1\n").unwrap().port, 1);
        assert_eq!(parse("[genesys]\nport = 65535\n").unwrap().port, 65535);

        let e = parse_err("[genesys]\n\nport = 0\n");
        assert_eq!(e.line(), Some(3));
        assert!(matches!(
            e,
            ConfigError::Invalid {
                source: ValidationError {
                    field: Field::Port,
                    value: Some(Value::Number(0)),
                    reason: Reason::Port,
                },
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "contacts.toml:3: invalid port 0: use a port in 1..=65535"
        );

        for (bad, value) in [
            ("port = 70000", 70000),
            ("port = -1", -1),
            ("port = 65536", 65536),
        ] {
            let e = parse_err(&format!("[genesys]\n{bad}\n"));
            assert!(
                matches!(
                    e,
                    ConfigError::Invalid {
                        line: Some(2),
                        source: ValidationError {
                            field: Field::Port,
                            value: Some(Value::Number(port)),
                            reason: Reason::Port,
                        },
                        ..
                    } if port == value
                ),
                "{bad}: {e}"
            );
            assert!(
                e.to_string().contains(&format!("invalid port {value}:")),
                "{e}"
            );
        }
        for bad in ["port = \"5060\"", "port = 5060.0"] {
            let e = parse_err(&format!("[genesys]\n{bad}\n"));
            assert!(
                matches!(e, ConfigError::Toml { line: Some(2), .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn toml_syntax_error_has_line() {
        let e = parse_err("interface = \"eth0\"\n[genesys]\nport = = 5060\n");
        assert!(
            matches!(e, ConfigError::Toml { line: Some(3), .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("contacts.toml:3: "), "{e}");

        let e = parse_err("[contacts]\nkeep_params = [\"expires\"\n");
        assert!(
            matches!(e, ConfigError::Toml { line: Some(_), .. }),
            "{e:?}"
        );
    }

    #[test]
    fn duplicate_toml_key_rejected() {
        let e = parse_err("[contacts.map]\n\"1002\" = \"sip:a@h\"\n1002 = \"sip:b@h\"\n");
        assert!(
            matches!(e, ConfigError::Toml { line: Some(3), .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "contacts.toml:3: duplicate key 1002");
    }

    #[test]
    fn unknown_keys_rejected() {
        let e = parse_err("[genesys]\nprot = 5060\n");
        assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
        assert!(e.to_string().contains("prot"), "{e}");
        assert_eq!(e.line(), Some(2), "{e}");

        let e = parse_err("interface = \"eth0\"\niface = \"eth1\"\n");
        assert!(e.to_string().contains("iface"), "{e}");

        let e = parse_err("[contact]\ndefault = \"sip:{dn}@h\"\n");
        assert!(e.to_string().contains("contact"), "{e}");

        let e = parse_err("[contacts]\nkeep = [\"q\"]\n");
        assert!(e.to_string().contains("keep"), "{e}");
    }

    #[test]
    fn wrong_types_rejected() {
        for text in [
            "interface = 3\n",
            "[genesys]\naddresses = \"10.0.0.5\"\n",
            "[contacts]\nkeep_params = \"expires\"\n",
            "[contacts.map]\n\"1002\" = 5\n",
            "genesys = 5\n",
        ] {
            assert!(
                matches!(parse_err(text), ConfigError::Toml { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn ingress_hook_parsed_and_validated() {
        assert_eq!(
            parse("ingress = \"tc\"\n").unwrap().ingress,
            crate::Ingress::Tc
        );
        assert_eq!(
            parse("ingress = \"off\"\n").unwrap().ingress,
            crate::Ingress::Off
        );
        assert_eq!(
            parse("ingress = \"xdp\"\n").unwrap().ingress,
            crate::Ingress::Xdp
        );
        let e = parse_err("\ningress = \"XDP\"\n");
        let text = e.to_string();
        assert!(text.contains(":2:") && text.contains("\"XDP\""), "{text}");
        assert_eq!(
            text,
            "contacts.toml:2: invalid ingress hook \"XDP\": use \"xdp\", \"tc\" or \"off\""
        );
        // The file takes the names `--ingress` takes, and Display writes them back.
        for &hook in <crate::Ingress as clap::ValueEnum>::value_variants() {
            assert_eq!(
                parse(&format!("ingress = \"{hook}\"\n")).unwrap().ingress,
                hook
            );
        }
    }

    #[test]
    fn interface_validated() {
        for ok in ["eth0", "ens3f0.100", "br-lan", "a23456789012345"] {
            assert_eq!(
                parse(&format!("interface = \"{ok}\"\n"))
                    .unwrap()
                    .interface
                    .unwrap(),
                ok
            );
            validate_interface(ok).unwrap();
        }
        for bad in [
            "",
            "eth 0",
            "a/b",
            "eth0:1",
            ".",
            "..",
            "a234567890123456",
            "e\tx",
        ] {
            let e = validate_interface(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ValidationError {
                        field: Field::Interface,
                        ..
                    }
                ),
                "{bad:?}"
            );
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = parse_err("\ninterface = \"eth 0\"\n");
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("\"eth 0\""), "{e}");
    }

    #[test]
    fn addresses_parsed_and_validated() {
        let s = parse("[genesys]\naddresses = [\"::1\", \"192.0.2.1\"]\n").unwrap();
        assert_eq!(
            s.genesys,
            vec![
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            ]
        );

        let e = parse_err("[genesys]\naddresses = [\n  \"10.0.0.5\",\n  \"10.0.0.256\",\n]\n");
        assert_eq!(e.line(), Some(4));
        assert!(e.to_string().contains("\"10.0.0.256\""), "{e}");
        assert!(matches!(
            e,
            ConfigError::Invalid {
                source: ValidationError {
                    field: Field::Address,
                    reason: Reason::NotAnAddress,
                    ..
                },
                ..
            }
        ));

        for bad in ["", "10.0.0", "10.0.0.5:5060", " 10.0.0.5", "eth0", "[::1]"] {
            let e = parse_err(&format!("[genesys]\naddresses = [{bad:?}]\n"));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn duplicate_address_rejected() {
        let text =
            "[genesys]\naddresses = [\n  \"10.0.0.5\",\n  \"10.0.0.6\",\n  \"10.0.0.5\",\n]\n";
        let e = parse_err(text);
        assert_eq!(e.line(), Some(5));
        assert!(matches!(
            &e,
            ConfigError::Invalid {
                source: ValidationError {
                    field: Field::Address,
                    reason: Reason::Duplicate {
                        first_line: Some(3)
                    },
                    ..
                },
                ..
            }
        ));
        assert!(e.to_string().contains("\"10.0.0.5\""), "{e}");
        assert!(e.to_string().contains("first on line 3"), "{e}");

        // Same address in another spelling.
        let e = parse_err("[genesys]\naddresses = [\"2001:db8::5\", \"2001:DB8:0::5\"]\n");
        assert!(e.to_string().contains("2001:DB8:0::5"), "{e}");
        // IPv4 and IPv4-mapped IPv6 are the same kernel key.
        let e = parse_err("[genesys]\naddresses = [\"10.0.0.5\", \"::ffff:10.0.0.5\"]\n");
        assert!(e.to_string().contains("::ffff:10.0.0.5"), "{e}");
    }

    #[test]
    fn too_many_addresses_rejected() {
        let list = |n: u32| {
            let items: Vec<String> = (0..n)
                .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
                .collect();
            format!("[genesys]\naddresses = [\n{}\n]\n", items.join(",\n"))
        };
        assert_eq!(parse(&list(64)).unwrap().genesys.len(), 64);
        let e = parse_err(&list(65));
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    source: ValidationError {
                        field: Field::AddressList,
                        value: None,
                        reason: Reason::TooMany { count: 65, max: 64 }
                    },
                    line: Some(67),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn keep_params_in_file() {
        let keep =
            |list: &str| parse(&format!("[contacts]\nkeep_params = {list}\n")).map(|s| s.keep);
        assert_eq!(keep("[\"*\"]").unwrap(), KeepParams::All);
        assert_eq!(keep("[]").unwrap(), KeepParams::Names(vec![]));
        assert_eq!(
            keep("[\"Expires\", \"Q\", \"+sip.instance\"]").unwrap(),
            KeepParams::Names(strings(&["expires", "q", "+sip.instance"]))
        );

        let e = keep("[\n\"expires\",\n\"bad name\"\n]").unwrap_err();
        assert_eq!(e.line(), Some(4));
        assert!(e.to_string().contains("\"bad name\""), "{e}");

        let e = keep("[\"*\", \"q\"]").unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Invalid {
                source: ValidationError {
                    field: Field::KeepList,
                    reason: Reason::StarNotAlone,
                    ..
                },
                ..
            }
        ));
        let e = keep("[\"expires\", \"EXPIRES\"]").unwrap_err();
        assert!(e.to_string().contains("\"EXPIRES\""), "{e}");
    }

    #[test]
    fn template_in_file() {
        let e = parse_err("[contacts]\n\ndefault = \"sip:{dn}@h ost\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("\"sip:{dn}@h ost\""), "{e}");
        assert!(
            e.to_string()
                .starts_with("contacts.toml:3: invalid contact template"),
            "{e}"
        );

        let s =
            parse("[contacts]\ndefault = \"sips:{dn}@gw.example.com;transport=tls\"\n").unwrap();
        assert_eq!(
            s.template,
            Some(Template {
                pre: "sips:".into(),
                post: "@gw.example.com;transport=tls".into()
            })
        );
    }

    #[test]
    fn contacts_map_kept_in_file_order() {
        let text = "[contacts.map]\n\"2000\" = \"sip:2000@h\"\n\"1000\" = \"sip:1000@h\"\n\
                    1500 = \"sip:1500@h\"\n\"a%20b\" = \"SIP:x@h\"\n";
        let s = parse(text).unwrap();
        assert_eq!(
            s.contacts,
            pairs(&[
                ("2000", "sip:2000@h"),
                ("1000", "sip:1000@h"),
                ("1500", "sip:1500@h"),
                ("a%20b", "SIP:x@h"),
            ])
        );
    }

    #[test]
    fn contacts_map_values_validated() {
        // CRLF injection, line 9 as in the example file.
        let text = EXAMPLE.replace(
            "\"1002\" = \"sip:1002@192.168.210.54:5060\"",
            "\"1002\" = \"sip:1002@host\\r\\nX: y\"",
        );
        let e = parse_err(&text);
        assert_eq!(e.line(), Some(9));
        assert!(
            e.to_string()
                .starts_with("contacts.toml:9: invalid URI \"sip:1002@host\\r\\nX: y\": "),
            "{e}"
        );
        assert!(matches!(
            e,
            ConfigError::Invalid {
                source: ValidationError {
                    field: Field::Uri,
                    reason: Reason::Char {
                        ch: '\r',
                        pos: 14,
                        ..
                    },
                    ..
                },
                ..
            }
        ));

        let e =
            parse_err("[contacts.map]\n\"1001\" = \"sip:1001@h\"\n\"10 02\" = \"sip:1002@h\"\n");
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("invalid DN \"10 02\""), "{e}");

        let e = parse_err("[contacts]\nmap = { \"1002\" = \"tel:1002\" }\n");
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("\"tel:1002\""), "{e}");
    }

    #[test]
    fn load_reads_file_and_reports_io_errors() {
        let f = TempFile::new(".toml", EXAMPLE);
        let s = Settings::load(&f.0).unwrap();
        assert_eq!(s.interface.as_deref(), Some("eth0"));
        assert_eq!(s.contacts.len(), 1);

        let bad = TempFile::new(".toml", "[genesys]\nport = 0\n");
        let e = Settings::load(&bad.0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: ", bad.0.display())),
            "{e}"
        );
        assert_eq!(e.path(), bad.0.as_path());

        let missing = std::env::temp_dir().join("sip-rewriter-config-test-does-not-exist.toml");
        let e = Settings::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
        assert_eq!(e.line(), None);
    }

    // --- kernel config -----------------------------------------------------------------------

    #[test]
    fn kernel_config_full() {
        let s = parse(EXAMPLE).unwrap();
        let mut expected = Config::new(5060);
        assert!(expected.add_keep(b"expires"));
        assert!(expected.add_keep(b"q"));
        assert!(expected.set_template(b"sip:", b"@192.168.210.54:5060"));
        expected.flags |= CFG_ADDR_FILTER | rewriter_common::CFG_TC_AFTER_XDP;
        let got = s.kernel_config();
        assert_eq!(got, expected);
        // Independent spot checks of the layout.
        assert_eq!(got.keep_count, 2);
        assert_eq!(got.keep[0], [u64::from_le_bytes(*b"expires\0"), 0]);
        assert_eq!(got.keep[1], [u64::from(b'q'), 0]);
        assert_eq!(&got.tpl_pre[..got.tpl_pre_len as usize], b"<sip:");
        assert_eq!(
            &got.tpl_post[..got.tpl_post_len as usize],
            b"@192.168.210.54:5060>"
        );
        assert_eq!(
            got.flags,
            rewriter_common::CFG_HAS_DEFAULT | CFG_ADDR_FILTER | rewriter_common::CFG_TC_AFTER_XDP
        );
        let tc_only = Settings {
            ingress: crate::Ingress::Tc,
            ..s.clone()
        };
        assert_eq!(
            tc_only.kernel_config().flags & rewriter_common::CFG_TC_AFTER_XDP,
            0
        );
    }

    /// Default settings with the TC-only ingress (no `CFG_TC_AFTER_XDP` flag).
    fn tc_only() -> Settings {
        Settings {
            ingress: crate::Ingress::Tc,
            ..Settings::default()
        }
    }

    #[test]
    fn kernel_config_variants() {
        let mut xdp_default = Config::default();
        xdp_default.flags |= rewriter_common::CFG_TC_AFTER_XDP;
        assert_eq!(Settings::default().kernel_config(), xdp_default);

        let s = Settings {
            port: 5070,
            keep: KeepParams::All,
            ..tc_only()
        };
        let mut expected = Config::new(5070);
        expected.flags = CFG_KEEP_ALL;
        assert_eq!(s.kernel_config(), expected);
        assert_eq!(s.kernel_config().keep_count, 0);

        let s = Settings {
            keep: KeepParams::Names(vec![]),
            ..tc_only()
        };
        assert_eq!(s.kernel_config(), Config::new(5060));

        let s =
            parse("ingress = \"tc\"\n[contacts]\nkeep_params = [\"+SIP.Instance\", \"Reg-Id\"]\n")
                .unwrap();
        let mut expected = Config::new(5060);
        assert!(expected.add_keep(b"+sip.instance"));
        assert!(expected.add_keep(b"reg-id"));
        assert_eq!(s.kernel_config(), expected);
        assert_eq!(
            s.kernel_config().keep[0],
            [
                u64::from_le_bytes(*b"+sip.ins"),
                u64::from_le_bytes(*b"tance\0\0\0")
            ]
        );

        let s = Settings {
            genesys: vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
            ..tc_only()
        };
        assert_eq!(s.kernel_config().flags, CFG_ADDR_FILTER);
    }
}
