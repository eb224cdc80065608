//! Configuration file parsing and input validation for the `sip-rewriter` CLI.
//!
//! Everything an administrator types (config file, contacts file, command-line values) goes
//! through the `validate_*` functions here before it reaches the kernel maps, because the
//! kernel splices DNs and URIs into SIP headers verbatim: a stray CR/LF in a Contact URI would
//! inject headers into every REGISTER.
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
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use rewriter_common::{
    CFG_ADDR_FILTER, CFG_KEEP_ALL, Config, DEFAULT_PORT, KEEP_NAME_LEN, MAX_CONTACTS, MAX_DN_LEN,
    MAX_GENESYS_ADDRS, MAX_KEEP, MAX_URI_LEN,
};
use serde::Deserialize;
use toml::Spanned;

/// The `{dn}` placeholder of a default Contact template.
pub const DN_PLACEHOLDER: &str = "{dn}";

/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Keep-list names used when the config says nothing.
const DEFAULT_KEEP: [&str; 2] = ["expires", "q"];

const DN_RULE: &str = "in a SIP user part (RFC 3261)";
const URI_RULE: &str = "in a Contact URI (it is spliced into the SIP Contact header inside <...>)";
const TOKEN_RULE: &str = "in a SIP parameter name (RFC 3261 token)";
const IFNAME_RULE: &str = "in a Linux interface name";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a value was rejected; the second half of a [`ValidationError`] message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The value is empty.
    #[error("it is empty")]
    Empty,
    /// The value is longer than `max` bytes.
    #[error("it is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// Largest allowed length in bytes.
        max: usize,
    },
    /// A character that the value's grammar does not allow.
    #[error("character {ch:?} at position {pos} is not allowed {rule}")]
    Char {
        /// The character.
        ch: char,
        /// 1-based character position in the value.
        pos: usize,
        /// Which grammar, e.g. "in a SIP user part (RFC 3261)".
        rule: &'static str,
    },
    /// A `%` that does not start an RFC 3261 escape.
    #[error("'%' at position {pos} must be followed by two hex digits (an escape such as %20)")]
    BadEscape {
        /// 1-based character position of the `%`.
        pos: usize,
    },
    /// A URI with a scheme other than `sip:`/`sips:`.
    #[error("it must start with \"sip:\" or \"sips:\"")]
    Scheme,
    /// A URI that is only a scheme.
    #[error("nothing follows the scheme")]
    NothingAfterScheme,
    /// A template without `{dn}`.
    #[error("it has no {{dn}} placeholder (lowercase), e.g. \"sip:{{dn}}@192.168.210.54:5060\"")]
    NoPlaceholder,
    /// A template with more than one `{dn}`.
    #[error("it has {count} {{dn}} placeholders, exactly one is allowed")]
    ManyPlaceholders {
        /// Number of `{dn}` found.
        count: usize,
    },
    /// A `{` or `}` in a template outside the `{dn}` placeholder.
    #[error("stray {ch:?} at position {pos}: {{dn}} is the only placeholder")]
    StrayBrace {
        /// The brace.
        ch: char,
        /// 1-based character position.
        pos: usize,
    },
    /// A template whose rendering with the longest DN exceeds the URI limit.
    #[error(
        "too long by {excess} bytes: with a {}-byte DN it renders {rendered} bytes, \
         at most {} are allowed",
        MAX_DN_LEN,
        MAX_URI_LEN
    )]
    TemplateTooLong {
        /// Bytes over the limit.
        excess: usize,
        /// Rendered length with a `MAX_DN_LEN`-byte DN.
        rendered: usize,
    },
    /// A list with more entries than the kernel can hold.
    #[error("{count} entries, at most {max} are allowed")]
    TooMany {
        /// Entries given.
        count: usize,
        /// Largest allowed number of entries.
        max: usize,
    },
    /// A value that already appeared.
    #[error(
        "it is listed more than once{}",
        first_line.map(|l| format!(" (first on line {l})")).unwrap_or_default()
    )]
    Duplicate {
        /// Line of the first occurrence, if known.
        first_line: Option<usize>,
    },
    /// A keep-list name equal, ignoring case, to an earlier one.
    #[error("it repeats {first:?} (parameter names are case-insensitive)")]
    DuplicateName {
        /// The earlier name, as written.
        first: String,
    },
    /// `*` together with other names.
    #[error("\"*\" (keep all parameters) must be the only entry")]
    StarNotAlone,
    /// An empty entry in a comma-separated list.
    #[error("it contains an empty name (a stray comma?)")]
    EmptyItem,
    /// Not an IP address.
    #[error("not an IPv4 or IPv6 address (e.g. 10.0.0.5 or 2001:db8::5)")]
    NotAnAddress,
    /// `.` or `..` as an interface name.
    #[error("\".\" and \"..\" are not interface names")]
    DotName,
    /// A contacts-file line that is not `dn,uri`.
    #[error("expected \"dn,uri\" (comma-separated), e.g. 1002,sip:1002@192.168.210.54:5060")]
    CsvShape,
    /// A contacts-file field that opens a quote and does not close it.
    #[error("a quoted field is not closed by '\"'")]
    CsvQuote,
}

/// A rejected value: what it is, the value itself and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A DN (user part of the To URI, key of the contacts map).
    #[error("invalid DN {dn:?}: {reason}")]
    Dn {
        /// The DN as given.
        dn: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// A Contact URI.
    #[error("invalid URI {uri:?}: {reason}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// A default Contact template.
    #[error("invalid contact template {template:?}: {reason}")]
    Template {
        /// The template as given.
        template: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// One name of the keep list.
    #[error("invalid keep_params name {name:?}: {reason}")]
    KeepName {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// The keep list as a whole.
    #[error("invalid keep_params list {list:?}: {reason}")]
    KeepList {
        /// The list, comma-separated.
        list: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// One Genesys address.
    #[error("invalid Genesys address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// The Genesys address list as a whole.
    #[error("invalid Genesys address list: {reason}")]
    AddressList {
        /// Why it was rejected.
        reason: Reason,
    },
    /// A UDP port.
    /// An `ingress` value other than xdp, tc, off.
    #[error("invalid ingress hook {value:?}: use \"xdp\", \"tc\" or \"off\"")]
    Ingress {
        /// The value as written.
        value: String,
    },
    #[error("invalid port {port}: use a port in 1..=65535")]
    Port {
        /// The port as given (from a file it may be outside the `u16` range).
        port: i64,
    },
    /// A number outside the range its setting allows.
    #[error("invalid {field} {value}: use a value in {min}..={max}")]
    Range {
        /// The setting (config key).
        field: &'static str,
        /// The value as given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A metrics listen address.
    #[error("invalid metrics listen address {value:?}: want :PORT, localhost:PORT or IP:PORT")]
    ListenAddr {
        /// The address as given.
        value: String,
    },
    /// A network interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    Interface {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// A line of a CSV contacts file that is not `dn,uri`.
    #[error("invalid contacts line {line:?}: {reason}")]
    ContactLine {
        /// The line as read.
        line: String,
        /// Why it was rejected.
        reason: Reason,
    },
    /// The contacts of one file as a whole.
    #[error("invalid contacts list: {reason}")]
    ContactList {
        /// Why it was rejected.
        reason: Reason,
    },
}

/// A config or contacts file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the config shape.
    #[error("{}{}: {message}", path.display(), line_suffix(*line))]
    Toml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, if known.
        line: Option<usize>,
        /// What the TOML parser said.
        message: String,
    },
    /// A value in the file is invalid.
    #[error("{}{}: {source}", path.display(), line_suffix(*line))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value, if known.
        line: Option<usize>,
        /// What is wrong with the value.
        source: ValidationError,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Toml { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The 1-based line the error is about, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Toml { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }
}

/// `":N"` for a known line, nothing otherwise.
fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

// ---------------------------------------------------------------------------------------------
// Single-value validation
// ---------------------------------------------------------------------------------------------

// The classes are rewriter-common's, the kernel's own (RFC 3261 is ASCII: `c as u8` is exact).

/// RFC 3261 `unreserved` / `user-unreserved` characters (everything allowed in `user` but `%`).
fn is_user_char(c: char) -> bool {
    c.is_ascii() && rewriter_common::sip::is_user_char(c as u8)
}

/// RFC 3261 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii() && rewriter_common::sip::is_token_char(c as u8)
}

/// Characters that must never reach a Contact header: they would end the `<...>` or the line.
/// The same rule the kernel applies to the URIs it records for the restore.
fn is_uri_char(c: char) -> bool {
    c.is_ascii() && rewriter_common::is_uri_byte(c as u8)
}

/// The first character of `s` not accepted by `ok`, with its 1-based position.
/// The checks every text value gets, in this order: not empty, only characters `ok` accepts
/// (`rule` names them in the message), at most `max` bytes.
fn check_text(
    s: &str,
    ok: impl Fn(char) -> bool,
    rule: &'static str,
    max: usize,
) -> Result<(), Reason> {
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    if let Some((ch, pos)) = first_bad_char(s, ok) {
        return Err(Reason::Char { ch, pos, rule });
    }
    if s.len() > max {
        return Err(Reason::TooLong { len: s.len(), max });
    }
    Ok(())
}

fn first_bad_char(s: &str, ok: impl Fn(char) -> bool) -> Option<(char, usize)> {
    s.chars().zip(1..).find(|&(c, _)| !ok(c))
}

/// Checks a DN: an RFC 3261 `user` of 1..=[`MAX_DN_LEN`] bytes (unreserved, user-unreserved
/// and `%XX` escapes).
pub fn validate_dn(dn: &str) -> Result<(), ValidationError> {
    let err = |reason| {
        Err(ValidationError::Dn {
            dn: dn.to_owned(),
            reason,
        })
    };
    if dn.is_empty() {
        return err(Reason::Empty);
    }
    let chars: Vec<char> = dn.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '%' {
            let hex = |j: usize| chars.get(j).is_some_and(char::is_ascii_hexdigit);
            if !hex(i + 1) || !hex(i + 2) {
                return err(Reason::BadEscape { pos: i + 1 });
            }
        } else if !is_user_char(c) {
            return err(Reason::Char {
                ch: c,
                pos: i + 1,
                rule: DN_RULE,
            });
        }
    }
    if dn.len() > MAX_DN_LEN {
        return err(Reason::TooLong {
            len: dn.len(),
            max: MAX_DN_LEN,
        });
    }
    Ok(())
}

/// Checks a Contact URI: `sip:` or `sips:` (any case) followed by something, 1..=
/// [`MAX_URI_LEN`] bytes, no whitespace, control characters, `<`, `>`, `"` or non-ASCII.
pub fn validate_uri(uri: &str) -> Result<(), ValidationError> {
    let err = |reason| {
        Err(ValidationError::Uri {
            uri: uri.to_owned(),
            reason,
        })
    };
    if let Err(reason) = check_text(uri, is_uri_char, URI_RULE, MAX_URI_LEN) {
        return err(reason);
    }
    let scheme_len = ["sip:", "sips:"].iter().find_map(|s| {
        let head = uri.as_bytes().get(..s.len())?;
        head.eq_ignore_ascii_case(s.as_bytes()).then_some(s.len())
    });
    match scheme_len {
        None => err(Reason::Scheme),
        Some(n) if uri.len() == n => err(Reason::NothingAfterScheme),
        Some(_) => Ok(()),
    }
}

/// Checks a UDP port: 0 is invalid.
pub fn validate_port(port: u16) -> Result<(), ValidationError> {
    if port == 0 {
        return Err(ValidationError::Port {
            port: i64::from(port),
        });
    }
    Ok(())
}

/// Checks a Linux network interface name: 1..=[`MAX_IFNAME_LEN`] bytes, not `.` or `..`,
/// no `/`, `:`, whitespace or control characters.
pub fn validate_interface(name: &str) -> Result<(), ValidationError> {
    let err = |reason| {
        Err(ValidationError::Interface {
            name: name.to_owned(),
            reason,
        })
    };
    let ok = |c: char| !c.is_whitespace() && !c.is_control() && c != '/' && c != ':';
    if let Err(reason) = check_text(name, ok, IFNAME_RULE, MAX_IFNAME_LEN) {
        return err(reason);
    }
    if name == "." || name == ".." {
        return err(Reason::DotName);
    }
    Ok(())
}

/// Checks one keep-list name: an RFC 3261 token of 1..=[`KEEP_NAME_LEN`] bytes.
pub fn validate_keep_name(name: &str) -> Result<(), ValidationError> {
    let err = |reason| {
        Err(ValidationError::KeepName {
            name: name.to_owned(),
            reason,
        })
    };
    check_text(name, is_token_char, TOKEN_RULE, KEEP_NAME_LEN).or_else(err)
}

// ---------------------------------------------------------------------------------------------
// Keep list
// ---------------------------------------------------------------------------------------------

/// Which Contact header parameters survive the rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepParams {
    /// Every parameter is kept.
    All,
    /// Only these (lowercase) names are kept; empty = none.
    Names(Vec<String>),
}

impl Default for KeepParams {
    /// `expires` and `q`.
    fn default() -> Self {
        KeepParams::Names(DEFAULT_KEEP.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl KeepParams {
    /// Parses a comma-separated list (`"expires,q"`, spaces around names allowed); `"*"` keeps
    /// everything, `""` keeps nothing. Names are stored lowercase.
    pub fn parse_list(list: &str) -> Result<Self, ValidationError> {
        let list = list.trim();
        if list.is_empty() {
            return Ok(KeepParams::Names(Vec::new()));
        }
        let items: Vec<&str> = list.split(',').map(str::trim).collect();
        Self::from_items(&items).map_err(|(_, e)| e)
    }

    /// The list form accepted by [`KeepParams::parse_list`]: `"expires,q"`, `"*"` or `""`.
    pub fn to_string_list(&self) -> String {
        match self {
            KeepParams::All => "*".to_owned(),
            KeepParams::Names(names) => names.join(","),
        }
    }

    /// Validates list entries; on error also returns the index of the offending entry.
    fn from_items(items: &[&str]) -> Result<Self, (usize, ValidationError)> {
        let list_err = |i: usize, reason| {
            (
                i,
                ValidationError::KeepList {
                    list: items.join(","),
                    reason,
                },
            )
        };
        let mut names: Vec<String> = Vec::new();
        let mut written: Vec<&str> = Vec::new();
        for (i, &item) in items.iter().enumerate() {
            if item == "*" {
                if items.len() > 1 {
                    return Err(list_err(i, Reason::StarNotAlone));
                }
                return Ok(KeepParams::All);
            }
            if item.is_empty() {
                return Err(list_err(i, Reason::EmptyItem));
            }
            validate_keep_name(item).map_err(|e| (i, e))?;
            let lower = item.to_ascii_lowercase();
            if let Some(first) = names.iter().position(|n| *n == lower) {
                let first = written.get(first).copied().unwrap_or_default().to_owned();
                return Err((
                    i,
                    ValidationError::KeepName {
                        name: item.to_owned(),
                        reason: Reason::DuplicateName { first },
                    },
                ));
            }
            if names.len() >= MAX_KEEP {
                return Err(list_err(
                    i,
                    Reason::TooMany {
                        count: items.len(),
                        max: MAX_KEEP,
                    },
                ));
            }
            names.push(lower);
            written.push(item);
        }
        Ok(KeepParams::Names(names))
    }
}

impl FromStr for KeepParams {
    type Err = ValidationError;

    /// Same as [`KeepParams::parse_list`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Template
// ---------------------------------------------------------------------------------------------

/// A default Contact template with exactly one `{dn}`, e.g. `sip:{dn}@192.168.210.54:5060`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Text before `{dn}`.
    pub pre: String,
    /// Text after `{dn}`.
    pub post: String,
}

impl Template {
    /// Parses and validates a template: exactly one `{dn}`, no other braces, and rendered with
    /// a [`MAX_DN_LEN`]-byte DN it must still be a valid URI of at most [`MAX_URI_LEN`] bytes.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let err = |reason| {
            Err(ValidationError::Template {
                template: s.to_owned(),
                reason,
            })
        };
        if s.is_empty() {
            return err(Reason::Empty);
        }
        let (pre, post) = match s.matches(DN_PLACEHOLDER).count() {
            0 => return err(Reason::NoPlaceholder),
            1 => match s.split_once(DN_PLACEHOLDER) {
                Some(parts) => parts,
                None => return err(Reason::NoPlaceholder),
            },
            count => return err(Reason::ManyPlaceholders { count }),
        };
        if let Some((ch, pos)) = first_bad_char(s, is_uri_char) {
            return err(Reason::Char {
                ch,
                pos,
                rule: URI_RULE,
            });
        }
        let pre_chars = pre.chars().count();
        let placeholder = pre_chars + 1..=pre_chars + DN_PLACEHOLDER.len();
        if let Some((ch, pos)) = s
            .chars()
            .zip(1..)
            .find(|&(c, pos)| (c == '{' || c == '}') && !placeholder.contains(&pos))
        {
            return err(Reason::StrayBrace { ch, pos });
        }
        let rendered = pre.len() + MAX_DN_LEN + post.len();
        if rendered > MAX_URI_LEN {
            return err(Reason::TemplateTooLong {
                excess: rendered - MAX_URI_LEN,
                rendered,
            });
        }
        match validate_uri(&format!("{pre}x{post}")) {
            Ok(()) => Ok(Template {
                pre: pre.to_owned(),
                post: post.to_owned(),
            }),
            Err(ValidationError::Uri { reason, .. }) => err(reason),
            Err(e) => Err(e),
        }
    }

    /// The Contact URI for `dn`.
    pub fn render(&self, dn: &str) -> String {
        format!("{}{dn}{}", self.pre, self.post)
    }
}

impl fmt::Display for Template {
    /// The template as written: `pre{dn}post`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{DN_PLACEHOLDER}{}", self.pre, self.post)
    }
}

impl FromStr for Template {
    type Err = ValidationError;

    /// Same as [`Template::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// The config file as TOML gives it, with spans for error lines.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interface: Option<Spanned<String>>,
    ingress: Option<Spanned<String>>,
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

/// `value` as a number of `field` within `min..=max`.
pub fn validate_range<T: TryFrom<i64> + Into<i64> + Copy>(
    field: &'static str,
    value: i64,
    (min, max): (T, T),
) -> Result<T, ValidationError> {
    let (lo, hi) = (min.into(), max.into());
    if (lo..=hi).contains(&value)
        && let Ok(v) = T::try_from(value)
    {
        return Ok(v);
    }
    Err(ValidationError::Range {
        field,
        value,
        min: lo,
        max: hi,
    })
}

/// A listen address as Prometheus exporters take it: `:PORT` (every address), `localhost:PORT`
/// or a socket address.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, ValidationError> {
    let bad = || ValidationError::ListenAddr {
        value: s.to_owned(),
    };
    if let Some(port) = s.strip_prefix(':').or_else(|| s.strip_prefix("localhost:")) {
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip: IpAddr = if s.starts_with(':') {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        return Ok(SocketAddr::new(ip, port));
    }
    s.parse().map_err(|_| bad())
}

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
        let text = read_text(path)?;
        Self::parse(&text, path)
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
            settings.ingress = ingress.get_ref().parse().map_err(|_| {
                invalid(
                    ingress.span().start,
                    ValidationError::Ingress {
                        value: ingress.get_ref().clone(),
                    },
                )
            })?;
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
                let port_err = || invalid(port.span().start, ValidationError::Port { port: value });
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
                    ValidationError::ContactList { reason },
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
                ValidationError::Address {
                    addr: s.clone(),
                    reason,
                },
            )
        };
        if i >= MAX_GENESYS_ADDRS as usize {
            let reason = Reason::TooMany {
                count: addresses.len(),
                max: MAX_GENESYS_ADDRS as usize,
            };
            return Err((offset, ValidationError::AddressList { reason }));
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

// ---------------------------------------------------------------------------------------------
// Contacts files
// ---------------------------------------------------------------------------------------------

/// Reads a file as UTF-8 text.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a contacts file for `contact import`: CSV lines `dn,uri` or, if the file name ends in
/// `.toml`, a TOML file of the config shape whose `[contacts.map]` is used (the rest of the
/// file is validated too).
///
/// CSV: blank lines and lines starting with `#` are ignored, as is a first line `dn,uri`;
/// whitespace around each field is trimmed; a field may be enclosed in `"` (needed for a DN
/// containing `,`). Every entry is validated; the first error names file and line. A DN given
/// twice is an error at its second line.
pub fn read_contacts_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let is_toml = path
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("toml"));
    if is_toml {
        return Settings::load(path).map(|s| s.contacts);
    }
    if path.as_os_str() == "-" {
        // Standard input is CSV (`contact export | ... | contact import -`).
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ConfigError::Io {
                path: PathBuf::from("standard input"),
                source,
            }
        })?;
        return parse_contacts_csv(&text, Path::new("standard input"));
    }
    let text = read_text(path)?;
    parse_contacts_csv(&text, path)
}

/// Parses CSV contacts text (see [`read_contacts_file`]); `origin` is used in error messages.
pub fn parse_contacts_csv(text: &str, origin: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let invalid = |line: usize, source| ConfigError::Invalid {
        path: origin.to_path_buf(),
        line: Some(line),
        source,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut first = true;
    for (raw, line_no) in text.lines().zip(1..) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if std::mem::take(&mut first) && is_csv_header(line) {
            continue;
        }
        let (dn, uri) = split_csv_line(line).map_err(|reason| {
            invalid(
                line_no,
                ValidationError::ContactLine {
                    line: raw.to_owned(),
                    reason,
                },
            )
        })?;
        validate_dn(dn).map_err(|e| invalid(line_no, e))?;
        validate_uri(uri).map_err(|e| invalid(line_no, e))?;
        if let Some(&first_line) = seen.get(dn) {
            let reason = Reason::Duplicate {
                first_line: Some(first_line),
            };
            return Err(invalid(
                line_no,
                ValidationError::Dn {
                    dn: dn.to_owned(),
                    reason,
                },
            ));
        }
        if out.len() >= MAX_CONTACTS as usize {
            let reason = Reason::TooMany {
                count: out.len() + 1,
                max: MAX_CONTACTS as usize,
            };
            return Err(invalid(line_no, ValidationError::ContactList { reason }));
        }
        seen.insert(dn.to_owned(), line_no);
        out.push((dn.to_owned(), uri.to_owned()));
    }
    Ok(out)
}

/// Whether a (trimmed) line is the `dn,uri` header.
fn is_csv_header(line: &str) -> bool {
    line.split_once(',').is_some_and(|(a, b)| {
        a.trim().eq_ignore_ascii_case("dn") && b.trim().eq_ignore_ascii_case("uri")
    })
}

/// Splits a trimmed CSV line into DN and URI. The DN ends at the first comma unless quoted.
fn split_csv_line(line: &str) -> Result<(&str, &str), Reason> {
    let (dn, rest) = match line.strip_prefix('"') {
        Some(quoted) => {
            let (dn, after) = quoted.split_once('"').ok_or(Reason::CsvQuote)?;
            let rest = after
                .trim_start()
                .strip_prefix(',')
                .ok_or(Reason::CsvShape)?;
            (dn, rest)
        }
        None => {
            let (dn, rest) = line.split_once(',').ok_or(Reason::CsvShape)?;
            (dn.trim_end(), rest)
        }
    };
    let rest = rest.trim();
    let uri = match rest.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').ok_or(Reason::CsvQuote)?,
        None => rest,
    };
    Ok((dn, uri))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        sync::atomic::{AtomicUsize, Ordering},
    };

    const EXAMPLE: &str = r#"interface = "eth0"                        # optional
[genesys]                                 # optional table
port = 5060                               # optional, default 5060, 1..=65535
addresses = ["10.0.0.5", "2001:db8::5"]   # optional
[contacts]                                # optional table
default = "sip:{dn}@192.168.210.54:5060"  # optional; exactly one {dn}
keep_params = ["expires", "q"]            # optional
[contacts.map]                            # optional
"1002" = "sip:1002@192.168.210.54:5060"
"#;

    fn origin() -> &'static Path {
        Path::new("contacts.toml")
    }

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, origin())
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
            Err(e) => e,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// A temp file removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(suffix: &str, contents: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "sip-rewriter-config-test-{}-{}{suffix}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // --- config file -------------------------------------------------------------------------

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
                source: ValidationError::Port { port: 0 },
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
                        source: ValidationError::Port { port },
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
            assert!(matches!(e, ValidationError::Interface { .. }), "{bad:?}");
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
                source: ValidationError::Address {
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
                source: ValidationError::Address {
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
                    source: ValidationError::AddressList {
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
                source: ValidationError::KeepList {
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
                source: ValidationError::Uri {
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

    #[test]
    fn config_error_without_line() {
        let e = ConfigError::Toml {
            path: "x.toml".into(),
            line: None,
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "x.toml: boom");
        let e = ConfigError::Invalid {
            path: "x.toml".into(),
            line: Some(7),
            source: ValidationError::Port { port: 0 },
        };
        assert_eq!(
            e.to_string(),
            "x.toml:7: invalid port 0: use a port in 1..=65535"
        );
    }

    // --- character classes -------------------------------------------------------------------

    /// rewriter-common's classes are the RFC 3261 sets the CLI had as its own copy before.
    #[test]
    fn character_classes_are_rfc_3261() {
        for b in 0..=255u8 {
            let c = char::from(b);
            let alnum = c.is_ascii_alphanumeric();
            assert_eq!(
                is_user_char(c),
                alnum || "-_.!~*'()&=+$,;?/".contains(c),
                "user {b:#04x}"
            );
            assert_eq!(
                is_token_char(c),
                alnum || "-.!%*_+`'~".contains(c),
                "token {b:#04x}"
            );
            assert_eq!(
                is_uri_char(c),
                (b'!'..=b'~').contains(&b) && !"<>\"".contains(c),
                "uri {b:#04x}"
            );
        }
        assert!(!is_user_char('\u{3b1}') && !is_token_char('\u{3b1}') && !is_uri_char('\u{3b1}'));
    }

    // --- DN ----------------------------------------------------------------------------------

    #[test]
    fn dn_accepted() {
        for dn in [
            "1002",
            "alice.smith",
            "a-b_c.d!e~f*g'h(i)j",
            "&=+$,;?/",
            "%41b",
            "ab%2F",
            "%aF",
            &"9".repeat(64),
        ] {
            validate_dn(dn).unwrap_or_else(|e| panic!("{dn:?}: {e}"));
        }
    }

    #[test]
    fn dn_rejected() {
        let e = validate_dn("10 02").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid DN \"10 02\": character ' ' at position 3 is not allowed in a SIP user part \
             (RFC 3261)"
        );
        for (dn, ch, pos) in [
            ("a@b", '@', 2),
            ("a:b", ':', 2),
            ("<a>", '<', 1),
            ("a\"b", '"', 2),
            ("é1", 'é', 1),
            ("1é", 'é', 2),
            ("a\tb", '\t', 2),
            ("a\r\nb", '\r', 2),
            ("a\0", '\0', 2),
            ("a#", '#', 2),
        ] {
            let e = validate_dn(dn).unwrap_err();
            assert_eq!(
                e,
                ValidationError::Dn {
                    dn: dn.to_string(),
                    reason: Reason::Char {
                        ch,
                        pos,
                        rule: DN_RULE
                    }
                }
            );
            assert!(e.to_string().contains(&format!("{dn:?}")), "{e}");
        }
        for (dn, pos) in [("%4", 1), ("%zz", 1), ("ab%", 3), ("a%4g", 2), ("%%41", 1)] {
            let e = validate_dn(dn).unwrap_err();
            assert_eq!(
                e,
                ValidationError::Dn {
                    dn: dn.into(),
                    reason: Reason::BadEscape { pos }
                }
            );
            assert!(e.to_string().contains("two hex digits"), "{e}");
        }
        let e = validate_dn("").unwrap_err();
        assert_eq!(e.to_string(), "invalid DN \"\": it is empty");
    }

    #[test]
    fn dn_length_limit() {
        validate_dn(&"a".repeat(64)).unwrap();
        let long = "a".repeat(65);
        let e = validate_dn(&long).unwrap_err();
        assert_eq!(
            e,
            ValidationError::Dn {
                dn: long.clone(),
                reason: Reason::TooLong { len: 65, max: 64 }
            }
        );
        assert!(e.to_string().contains(&long), "{e}");
        assert!(e.to_string().contains("65 bytes"), "{e}");
    }

    // --- URI ---------------------------------------------------------------------------------

    #[test]
    fn uri_accepted() {
        let long = format!("sip:{}@h", "a".repeat(122));
        assert_eq!(long.len(), 128);
        for uri in [
            "sip:1002@192.168.210.54:5060",
            "SIP:1002@host",
            "sips:x@h",
            "SiPs:x",
            "sip:x@h;transport=tcp?subject=a,b",
            "sip:[2001:db8::1]:5060",
            &long,
        ] {
            validate_uri(uri).unwrap_or_else(|e| panic!("{uri:?}: {e}"));
        }
    }

    #[test]
    fn uri_rejected() {
        let reason = |uri: &str| match validate_uri(uri) {
            Err(ValidationError::Uri { uri: u, reason }) => {
                assert_eq!(u, uri);
                reason
            }
            other => panic!("{uri:?}: {other:?}"),
        };
        assert_eq!(reason(""), Reason::Empty);
        assert_eq!(reason("http://x"), Reason::Scheme);
        assert_eq!(reason("tel:+15551234"), Reason::Scheme);
        assert_eq!(reason("si"), Reason::Scheme);
        assert_eq!(reason("sipx:a@b"), Reason::Scheme);
        assert_eq!(reason("sip:"), Reason::NothingAfterScheme);
        assert_eq!(reason("SIPS:"), Reason::NothingAfterScheme);
        for (uri, ch, pos) in [
            ("sip:a b@h", ' ', 6),
            ("sip:1002@host\r\nX: y", '\r', 14),
            ("sip:a@h\n", '\n', 8),
            ("<sip:x@h>", '<', 1),
            ("sip:x@h>", '>', 8),
            ("sip:\"x\"@h", '"', 5),
            ("sip:é@h", 'é', 5),
            ("sip:x\u{1}@h", '\u{1}', 6),
            ("sip:x\u{7f}", '\u{7f}', 6),
            ("sip:x\t", '\t', 6),
            (" sip:x@h", ' ', 1),
        ] {
            assert_eq!(
                reason(uri),
                Reason::Char {
                    ch,
                    pos,
                    rule: URI_RULE
                },
                "{uri:?}"
            );
        }
        let long = format!("sip:{}@h", "a".repeat(123));
        assert_eq!(reason(&long), Reason::TooLong { len: 129, max: 128 });

        let e = validate_uri("sip:1002@host\r\nX: y").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid URI \"sip:1002@host\\r\\nX: y\": character '\\r'"),
            "{e}"
        );
    }

    #[test]
    fn port_validation() {
        assert_eq!(
            validate_port(0).unwrap_err(),
            ValidationError::Port { port: 0 }
        );
        validate_port(1).unwrap();
        validate_port(5060).unwrap();
        validate_port(65535).unwrap();
    }

    // --- template ----------------------------------------------------------------------------

    #[test]
    fn template_parse_render_display() {
        let t = Template::parse("sip:{dn}@192.168.210.54:5060").unwrap();
        assert_eq!(
            t,
            Template {
                pre: "sip:".into(),
                post: "@192.168.210.54:5060".into()
            }
        );
        assert_eq!(t.render("1002"), "sip:1002@192.168.210.54:5060");
        assert_eq!(t.to_string(), "sip:{dn}@192.168.210.54:5060");
        assert_eq!("sip:{dn}@h".parse::<Template>().unwrap().post, "@h");

        let t = Template::parse("sip:{dn}").unwrap();
        assert_eq!(
            t,
            Template {
                pre: "sip:".into(),
                post: String::new()
            }
        );
        let t = Template::parse("sip:pre{dn}post@h").unwrap();
        assert_eq!(t.render("7"), "sip:pre7post@h");
    }

    #[test]
    fn template_rejected() {
        let reason = |s: &str| match Template::parse(s) {
            Err(ValidationError::Template { template, reason }) => {
                assert_eq!(template, s);
                reason
            }
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(reason(""), Reason::Empty);
        assert_eq!(reason("sip:1002@h"), Reason::NoPlaceholder);
        assert_eq!(reason("sip:{DN}@h"), Reason::NoPlaceholder);
        assert_eq!(reason("sip:{dn@h"), Reason::NoPlaceholder);
        assert_eq!(
            reason("sip:{dn}{dn}@h"),
            Reason::ManyPlaceholders { count: 2 }
        );
        assert_eq!(
            reason("sip:{dn}@{dn}:{dn}"),
            Reason::ManyPlaceholders { count: 3 }
        );
        assert_eq!(
            reason("sip:{dn}@{host}"),
            Reason::StrayBrace { ch: '{', pos: 10 }
        );
        assert_eq!(
            reason("sip:{{dn}@h"),
            Reason::StrayBrace { ch: '{', pos: 5 }
        );
        assert_eq!(
            reason("sip:{dn}}@h"),
            Reason::StrayBrace { ch: '}', pos: 9 }
        );
        assert_eq!(reason("{dn}@h"), Reason::Scheme);
        assert_eq!(reason("tel:{dn}"), Reason::Scheme);
        assert_eq!(
            reason("sip:{dn}@h ost"),
            Reason::Char {
                ch: ' ',
                pos: 11,
                rule: URI_RULE
            }
        );
        assert_eq!(
            reason("sip:{dn}@h\r\nX: y"),
            Reason::Char {
                ch: '\r',
                pos: 11,
                rule: URI_RULE
            }
        );
        assert_eq!(
            reason("<sip:{dn}@h>"),
            Reason::Char {
                ch: '<',
                pos: 1,
                rule: URI_RULE
            }
        );

        let e = Template::parse("sip:{dn}{dn}@h").unwrap_err();
        assert!(e.to_string().contains("\"sip:{dn}{dn}@h\""), "{e}");
        assert!(e.to_string().contains("2 {dn} placeholders"), "{e}");
        let e = Template::parse("sip:1002@h").unwrap_err();
        assert!(e.to_string().contains("no {dn} placeholder"), "{e}");
    }

    #[test]
    fn template_length_limit() {
        // "sip:" + 64 + "@" + 59 = 128 bytes rendered: fits exactly.
        let fits = format!("sip:{{dn}}@{}", "h".repeat(59));
        let t = Template::parse(&fits).unwrap();
        assert_eq!(t.render(&"d".repeat(64)).len(), 128);
        validate_uri(&t.render(&"d".repeat(64))).unwrap();

        let over = format!("sip:{{dn}}@{}", "h".repeat(62));
        let e = Template::parse(&over).unwrap_err();
        assert_eq!(
            e,
            ValidationError::Template {
                template: over.clone(),
                reason: Reason::TemplateTooLong {
                    excess: 3,
                    rendered: 131
                }
            }
        );
        assert!(e.to_string().contains("too long by 3 bytes"), "{e}");

        // One byte over: 129.
        let one_over = format!("sip:{{dn}}@{}", "h".repeat(60));
        assert_eq!(
            Template::parse(&one_over),
            Err(ValidationError::Template {
                template: one_over.clone(),
                reason: Reason::TemplateTooLong {
                    excess: 1,
                    rendered: 129
                }
            })
        );
    }

    // --- keep list ---------------------------------------------------------------------------

    #[test]
    fn keep_parse_list_accepts() {
        assert_eq!(
            KeepParams::default(),
            KeepParams::Names(strings(&["expires", "q"]))
        );
        let cases: [(&str, KeepParams); 7] = [
            ("expires,q", KeepParams::Names(strings(&["expires", "q"]))),
            (
                " expires , q ",
                KeepParams::Names(strings(&["expires", "q"])),
            ),
            ("Expires,Q", KeepParams::Names(strings(&["expires", "q"]))),
            ("*", KeepParams::All),
            (" * ", KeepParams::All),
            ("", KeepParams::Names(vec![])),
            (
                "+sip.instance,reg-id,a.b!c%d*,e_f+g`h'i~",
                KeepParams::Names(strings(&[
                    "+sip.instance",
                    "reg-id",
                    "a.b!c%d*",
                    "e_f+g`h'i~",
                ])),
            ),
        ];
        for (list, expected) in cases {
            assert_eq!(KeepParams::parse_list(list).unwrap(), expected, "{list:?}");
        }
        let eight = "a,b,c,d,e,f,g,h";
        assert_eq!(
            KeepParams::parse_list(eight).unwrap(),
            KeepParams::Names(strings(&["a", "b", "c", "d", "e", "f", "g", "h"]))
        );
        let sixteen = "p".repeat(16);
        assert_eq!(
            KeepParams::parse_list(&sixteen).unwrap(),
            KeepParams::Names(vec![sixteen.clone()])
        );
        assert_eq!(
            "expires".parse::<KeepParams>().unwrap(),
            KeepParams::Names(strings(&["expires"]))
        );
    }

    #[test]
    fn keep_parse_list_rejects() {
        let e = KeepParams::parse_list("expires,EXPIRES").unwrap_err();
        assert_eq!(
            e,
            ValidationError::KeepName {
                name: "EXPIRES".into(),
                reason: Reason::DuplicateName {
                    first: "expires".into()
                }
            }
        );
        assert!(e.to_string().contains("\"EXPIRES\""), "{e}");

        let e = KeepParams::parse_list("*,q").unwrap_err();
        assert!(matches!(
            e,
            ValidationError::KeepList {
                reason: Reason::StarNotAlone,
                ..
            }
        ));
        assert!(e.to_string().contains("\"*,q\""), "{e}");
        let e = KeepParams::parse_list("q,*").unwrap_err();
        assert!(matches!(
            e,
            ValidationError::KeepList {
                reason: Reason::StarNotAlone,
                ..
            }
        ));

        let e = KeepParams::parse_list("a,b,c,d,e,f,g,h,i").unwrap_err();
        assert_eq!(
            e,
            ValidationError::KeepList {
                list: "a,b,c,d,e,f,g,h,i".into(),
                reason: Reason::TooMany { count: 9, max: 8 }
            }
        );

        let long = "p".repeat(17);
        let e = KeepParams::parse_list(&long).unwrap_err();
        assert_eq!(
            e,
            ValidationError::KeepName {
                name: long.clone(),
                reason: Reason::TooLong { len: 17, max: 16 }
            }
        );

        let e = KeepParams::parse_list("expires,,q").unwrap_err();
        assert!(matches!(
            e,
            ValidationError::KeepList {
                reason: Reason::EmptyItem,
                ..
            }
        ));
        let e = KeepParams::parse_list("expires,").unwrap_err();
        assert!(matches!(
            e,
            ValidationError::KeepList {
                reason: Reason::EmptyItem,
                ..
            }
        ));

        for (list, name, ch, pos) in [
            ("ex@p", "ex@p", '@', 3),
            ("a b", "a b", ' ', 2),
            ("q,x=y", "x=y", '=', 2),
            ("q;x", "q;x", ';', 2),
            ("é", "é", 'é', 1),
        ] {
            let e = KeepParams::parse_list(list).unwrap_err();
            assert_eq!(
                e,
                ValidationError::KeepName {
                    name: name.into(),
                    reason: Reason::Char {
                        ch,
                        pos,
                        rule: TOKEN_RULE
                    }
                },
                "{list:?}"
            );
            assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
        }
    }

    #[test]
    fn keep_to_string_list() {
        assert_eq!(KeepParams::All.to_string_list(), "*");
        assert_eq!(KeepParams::Names(vec![]).to_string_list(), "");
        assert_eq!(KeepParams::default().to_string_list(), "expires,q");
        assert_eq!(KeepParams::Names(strings(&["q"])).to_string_list(), "q");
        for list in ["*", "", "expires,q", "+sip.instance,reg-id,q"] {
            assert_eq!(KeepParams::parse_list(list).unwrap().to_string_list(), list);
        }
    }

    // --- contacts files ----------------------------------------------------------------------

    #[test]
    fn csv_contacts_read() {
        let text = "\u{feff}dn,uri\r\n\
                    # exported from the PBX\r\n\
                    \r\n\
                    1001,sip:1001@192.168.210.54:5060\r\n\
                    \t 1002 ,  sip:1002@192.168.210.54:5060  \r\n\
                    \x20  # indented comment\n\
                    \"a,b\",\"sip:ab@h\"\n\
                    1003,sip:1003@h;transport=tcp?x=a,b\n";
        let f = TempFile::new(".csv", text);
        let contacts = read_contacts_file(&f.0).unwrap();
        assert_eq!(
            contacts,
            pairs(&[
                ("1001", "sip:1001@192.168.210.54:5060"),
                ("1002", "sip:1002@192.168.210.54:5060"),
                ("a,b", "sip:ab@h"),
                ("1003", "sip:1003@h;transport=tcp?x=a,b"),
            ])
        );
    }

    #[test]
    fn csv_header_only_first_and_optional() {
        let f = TempFile::new(".csv", "1001,sip:1001@h\n");
        assert_eq!(
            read_contacts_file(&f.0).unwrap(),
            pairs(&[("1001", "sip:1001@h")])
        );
        let f = TempFile::new(".txt", "# c\n\n DN , URI \n1001,sip:1001@h\n");
        assert_eq!(
            read_contacts_file(&f.0).unwrap(),
            pairs(&[("1001", "sip:1001@h")])
        );
        // A header after data is an ordinary (invalid) line.
        let f = TempFile::new(".csv", "1001,sip:1001@h\ndn,uri\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("invalid URI \"uri\""), "{e}");
        let f = TempFile::new(".csv", "");
        assert_eq!(read_contacts_file(&f.0).unwrap(), vec![]);
    }

    #[test]
    fn csv_bad_line_reports_line() {
        let f = TempFile::new(
            ".csv",
            "dn,uri\n1001,sip:1001@h\n10 02,sip:1002@h\n1003,sip:1003@h\n",
        );
        let e = read_contacts_file(&f.0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", f.0.display())), "{msg}");
        assert!(msg.contains(":3:"), "{msg}");
        assert!(msg.contains("\"10 02\""), "{msg}");

        let f = TempFile::new(".csv", "1001,sip:1001@h\n\n1002 sip:1002@h\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(matches!(
            &e,
            ConfigError::Invalid {
                source: ValidationError::ContactLine {
                    reason: Reason::CsvShape,
                    ..
                },
                ..
            }
        ));
        assert!(e.to_string().contains("\"1002 sip:1002@h\""), "{e}");

        let f = TempFile::new(".csv", "1001,http://x\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert_eq!(e.line(), Some(1));
        assert!(e.to_string().contains("\"http://x\""), "{e}");

        let f = TempFile::new(".csv", "\"1001,sip:x@h\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Invalid {
                source: ValidationError::ContactLine {
                    reason: Reason::CsvQuote,
                    ..
                },
                ..
            }
        ));
        let f = TempFile::new(".csv", "1001,\"sip:x@h\n");
        assert!(read_contacts_file(&f.0).is_err());
        let f = TempFile::new(".csv", ",sip:x@h\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert!(
            e.to_string().contains("invalid DN \"\": it is empty"),
            "{e}"
        );
        let f = TempFile::new(".csv", "1001,\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert!(
            e.to_string().contains("invalid URI \"\": it is empty"),
            "{e}"
        );
        // A lone CR inside a line must not slip into a URI.
        let f = TempFile::new(".csv", "1001,sip:x@h\rX: y\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert!(e.to_string().contains("character '\\r'"), "{e}");
    }

    #[test]
    fn csv_duplicate_dn_rejected() {
        let f = TempFile::new(".csv", "1001,sip:a@h\n1002,sip:b@h\n# x\n1001,sip:c@h\n");
        let e = read_contacts_file(&f.0).unwrap_err();
        assert_eq!(e.line(), Some(4));
        assert!(matches!(
            &e,
            ConfigError::Invalid {
                source: ValidationError::Dn {
                    reason: Reason::Duplicate {
                        first_line: Some(1)
                    },
                    ..
                },
                ..
            }
        ));
        let msg = e.to_string();
        assert!(
            msg.contains(":4:") && msg.contains("\"1001\"") && msg.contains("line 1"),
            "{msg}"
        );
        // DNs are case-sensitive (the kernel compares bytes).
        let f = TempFile::new(".csv", "abc,sip:a@h\nABC,sip:b@h\n");
        assert_eq!(read_contacts_file(&f.0).unwrap().len(), 2);
    }

    #[test]
    fn toml_contacts_import() {
        let f = TempFile::new(".toml", EXAMPLE);
        assert_eq!(
            read_contacts_file(&f.0).unwrap(),
            pairs(&[("1002", "sip:1002@192.168.210.54:5060")])
        );
        let f = TempFile::new(
            ".TOML",
            "[contacts.map]\n\"3\" = \"sip:3@h\"\n\"1\" = \"sip:1@h\"\n\"2\" = \"sips:2@h\"\n",
        );
        assert_eq!(
            read_contacts_file(&f.0).unwrap(),
            pairs(&[("3", "sip:3@h"), ("1", "sip:1@h"), ("2", "sips:2@h")])
        );
        let f = TempFile::new(
            ".toml",
            "[contacts.map]\n\"1\" = \"sip:1@h\"\n\"2\" = \"sip:2 @h\"\n",
        );
        let e = read_contacts_file(&f.0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3: invalid URI", f.0.display())),
            "{e}"
        );
        // A .toml file is parsed as TOML, not CSV.
        let f = TempFile::new(".toml", "1001,sip:1001@h\n");
        assert!(matches!(
            read_contacts_file(&f.0).unwrap_err(),
            ConfigError::Toml { .. }
        ));
    }

    #[test]
    fn contacts_file_missing() {
        let missing = std::env::temp_dir().join("sip-rewriter-config-test-missing.csv");
        let e = read_contacts_file(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
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
