//! Single values: DN, URI, port, interface name, keep-list name.

use std::net::{IpAddr, SocketAddr};

use rewriter_common::{KEEP_NAME_LEN, MAX_DN_LEN, MAX_URI_LEN};

use super::error::{Field, Reason, ValidationError};

/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

pub(super) const DN_RULE: &str = "in a SIP user part (RFC 3261)";
pub(super) const URI_RULE: &str =
    "in a Contact URI (it is spliced into the SIP Contact header inside <...>)";
pub(super) const TOKEN_RULE: &str = "in a SIP parameter name (RFC 3261 token)";
const IFNAME_RULE: &str = "in a Linux interface name";

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
pub(super) fn is_uri_char(c: char) -> bool {
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

pub(super) fn first_bad_char(s: &str, ok: impl Fn(char) -> bool) -> Option<(char, usize)> {
    s.chars().zip(1..).find(|&(c, _)| !ok(c))
}

/// Checks a DN: an RFC 3261 `user` of 1..=[`MAX_DN_LEN`] bytes (unreserved, user-unreserved
/// and `%XX` escapes).
pub fn validate_dn(dn: &str) -> Result<(), ValidationError> {
    let err = |reason| Err(ValidationError::new(Field::Dn, dn, reason));
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
    let err = |reason| Err(ValidationError::new(Field::Uri, uri, reason));
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
        return Err(ValidationError::number(
            Field::Port,
            i64::from(port),
            Reason::Port,
        ));
    }
    Ok(())
}

/// Checks a Linux network interface name: 1..=[`MAX_IFNAME_LEN`] bytes, not `.` or `..`,
/// no `/`, `:`, whitespace or control characters.
pub fn validate_interface(name: &str) -> Result<(), ValidationError> {
    let err = |reason| {
        Err(ValidationError::new(
            Field::Interface,
            name.to_owned(),
            reason,
        ))
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
        Err(ValidationError::new(
            Field::KeepName,
            name.to_owned(),
            reason,
        ))
    };
    check_text(name, is_token_char, TOKEN_RULE, KEEP_NAME_LEN).or_else(err)
}

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
    Err(ValidationError::number(
        Field::Setting(field),
        value,
        Reason::Range { min: lo, max: hi },
    ))
}

/// A listen address as Prometheus exporters take it: `:PORT` (every address), `localhost:PORT`
/// or a socket address.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, ValidationError> {
    let bad = || ValidationError::new(Field::Metrics, s, Reason::ListenAddr);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;

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
                ValidationError::new(
                    Field::Dn,
                    dn.to_string(),
                    Reason::Char {
                        ch,
                        pos,
                        rule: DN_RULE
                    }
                )
            );
            assert!(e.to_string().contains(&format!("{dn:?}")), "{e}");
        }
        for (dn, pos) in [("%4", 1), ("%zz", 1), ("ab%", 3), ("a%4g", 2), ("%%41", 1)] {
            let e = validate_dn(dn).unwrap_err();
            assert_eq!(
                e,
                ValidationError::new(Field::Dn, dn, Reason::BadEscape { pos })
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
            ValidationError::new(
                Field::Dn,
                long.clone(),
                Reason::TooLong { len: 65, max: 64 }
            )
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
            Err(ValidationError {
                field: Field::Uri,
                value: Some(Value::Text(u)),
                reason,
            }) => {
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
            ValidationError::number(Field::Port, 0, Reason::Port)
        );
        validate_port(1).unwrap();
        validate_port(5060).unwrap();
        validate_port(65535).unwrap();
    }
}
