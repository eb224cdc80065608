//! The default Contact template, `sip:{dn}@host`.

use std::{fmt, str::FromStr};

use rewriter_common::{MAX_DN_LEN, MAX_URI_LEN};

use super::{
    error::{Field, Reason, ValidationError},
    validate::{URI_RULE, first_bad_char, is_uri_char, validate_uri},
};

/// The `{dn}` placeholder of a default Contact template.
pub const DN_PLACEHOLDER: &str = "{dn}";

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
        let err = |reason| Err(ValidationError::new(Field::Template, s, reason));
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
            Err(ValidationError {
                field: Field::Uri,
                reason,
                ..
            }) => err(reason),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;

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
            Err(ValidationError {
                field: Field::Template,
                value: Some(Value::Text(template)),
                reason,
            }) => {
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
            ValidationError::new(
                Field::Template,
                over.clone(),
                Reason::TemplateTooLong {
                    excess: 3,
                    rendered: 131
                }
            )
        );
        assert!(e.to_string().contains("too long by 3 bytes"), "{e}");

        // One byte over: 129.
        let one_over = format!("sip:{{dn}}@{}", "h".repeat(60));
        assert_eq!(
            Template::parse(&one_over),
            Err(ValidationError::new(
                Field::Template,
                one_over.clone(),
                Reason::TemplateTooLong {
                    excess: 1,
                    rendered: 129
                }
            ))
        );
    }
}
