//! The error shapes: what was rejected and why ([`ValidationError`]), and where in a file
//! ([`ConfigError`]).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use rewriter_common::{MAX_DN_LEN, MAX_URI_LEN};

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
    /// A UDP port outside 1..=65535.
    #[error("use a port in 1..=65535")]
    Port,
    /// A number outside the range its setting allows.
    #[error("use a value in {min}..={max}")]
    Range {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// Not a listen address.
    #[error("want :PORT, localhost:PORT or IP:PORT")]
    ListenAddr,
    /// Not one of a fixed set of names.
    #[error("use {allowed}")]
    NotOneOf {
        /// The names, quoted, e.g. `"xdp", "tc" or "off"`.
        allowed: String,
    },
}

/// What a rejected value is, in the words the user knows it by (the first part of a
/// [`ValidationError`] message). The same validation serves the config file, the command line
/// and contacts files, so these name the kind of value rather than one config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// A DN: the user part of the To URI, a key of the contacts map.
    Dn,
    /// A Contact URI.
    Uri,
    /// A default Contact template (`contacts.default`, `--default`, `default set`).
    Template,
    /// One name of the keep list (`contacts.keep_params`, `--keep-params`).
    KeepName,
    /// The keep list as a whole.
    KeepList,
    /// One Genesys address (`genesys.addresses`).
    Address,
    /// The Genesys address list as a whole.
    AddressList,
    /// The ingress hook (`ingress`, `--ingress`).
    Ingress,
    /// The Genesys UDP port (`genesys.port`, `--port`).
    Port,
    /// A numeric setting, by its config key (`max_contacts`, `interval`, ...).
    Setting(&'static str),
    /// The metrics listen address (`metrics`, `--metrics`).
    Metrics,
    /// A network interface name (`interface`, `--iface`).
    Interface,
    /// A line of a CSV contacts file.
    ContactLine,
    /// The contacts of one file as a whole.
    ContactList,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Dn => "DN",
            Field::Uri => "URI",
            Field::Template => "contact template",
            Field::KeepName => "keep_params name",
            Field::KeepList => "keep_params list",
            Field::Address => "Genesys address",
            Field::AddressList => "Genesys address list",
            Field::Ingress => "ingress hook",
            Field::Port => "port",
            Field::Setting(key) => key,
            Field::Metrics => "metrics listen address",
            Field::Interface => "interface name",
            Field::ContactLine => "contacts line",
            Field::ContactList => "contacts list",
        })
    }
}

/// A rejected value as the user gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Text, shown quoted (so that white space and control characters are visible).
    Text(String),
    /// A number, shown as is (from a file it may be outside the setting's type).
    Number(i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// A rejected value: what it is, the value itself and why;
/// `invalid {field} {value}: {reason}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}{}: {reason}", value.as_ref().map(|v| format!(" {v}")).unwrap_or_default())]
pub struct ValidationError {
    /// What the value is.
    pub field: Field,
    /// The value as given; `None` when the reason is about a whole list (e.g. its length).
    pub value: Option<Value>,
    /// Why it was rejected.
    pub reason: Reason,
}

impl ValidationError {
    /// A rejected text value.
    pub fn new(field: Field, value: impl Into<String>, reason: Reason) -> Self {
        ValidationError {
            field,
            value: Some(Value::Text(value.into())),
            reason,
        }
    }

    /// A rejected number.
    pub fn number(field: Field, value: i64, reason: Reason) -> Self {
        ValidationError {
            field,
            value: Some(Value::Number(value)),
            reason,
        }
    }

    /// A list rejected as a whole.
    pub fn list(field: Field, reason: Reason) -> Self {
        ValidationError {
            field,
            value: None,
            reason,
        }
    }
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
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_for_text_numbers_and_lists() {
        let e = ValidationError::new(Field::Interface, "eth 0", Reason::Empty);
        assert_eq!(
            e.to_string(),
            "invalid interface name \"eth 0\": it is empty"
        );
        let e = ValidationError::number(
            Field::Setting("max_contacts"),
            0,
            Reason::Range { min: 1, max: 9 },
        );
        assert_eq!(
            e.to_string(),
            "invalid max_contacts 0: use a value in 1..=9"
        );
        let e = ValidationError::list(Field::AddressList, Reason::TooMany { count: 65, max: 64 });
        assert_eq!(
            e.to_string(),
            "invalid Genesys address list: 65 entries, at most 64 are allowed"
        );
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
            source: ValidationError::number(Field::Port, 0, Reason::Port),
        };
        assert_eq!(
            e.to_string(),
            "x.toml:7: invalid port 0: use a port in 1..=65535"
        );
    }
}
