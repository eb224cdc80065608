//! The error shapes: what was rejected and why ([`ValidationError`]), and where in a file
//! ([`ConfigError`]).

use std::path::{Path, PathBuf};

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
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
