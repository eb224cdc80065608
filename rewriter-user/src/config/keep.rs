//! The keep list: which Contact parameters survive the rewrite.

use std::str::FromStr;

use rewriter_common::MAX_KEEP;

use super::{
    error::{Field, Reason, ValidationError},
    validate::validate_keep_name,
};

/// Keep-list names used when the config says nothing.
const DEFAULT_KEEP: [&str; 2] = ["expires", "q"];

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
    pub(super) fn from_items(items: &[&str]) -> Result<Self, (usize, ValidationError)> {
        let list_err = |i: usize, reason| {
            (
                i,
                ValidationError::new(Field::KeepList, items.join(","), reason),
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
                    ValidationError::new(
                        Field::KeepName,
                        item.to_owned(),
                        Reason::DuplicateName { first },
                    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{testing::strings, validate::TOKEN_RULE};

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
            ValidationError::new(
                Field::KeepName,
                "EXPIRES",
                Reason::DuplicateName {
                    first: "expires".into()
                }
            )
        );
        assert!(e.to_string().contains("\"EXPIRES\""), "{e}");

        let e = KeepParams::parse_list("*,q").unwrap_err();
        assert!(matches!(
            e,
            ValidationError {
                field: Field::KeepList,
                reason: Reason::StarNotAlone,
                ..
            }
        ));
        assert!(e.to_string().contains("\"*,q\""), "{e}");
        let e = KeepParams::parse_list("q,*").unwrap_err();
        assert!(matches!(
            e,
            ValidationError {
                field: Field::KeepList,
                reason: Reason::StarNotAlone,
                ..
            }
        ));

        let e = KeepParams::parse_list("a,b,c,d,e,f,g,h,i").unwrap_err();
        assert_eq!(
            e,
            ValidationError::new(
                Field::KeepList,
                "a,b,c,d,e,f,g,h,i",
                Reason::TooMany { count: 9, max: 8 }
            )
        );

        let long = "p".repeat(17);
        let e = KeepParams::parse_list(&long).unwrap_err();
        assert_eq!(
            e,
            ValidationError::new(
                Field::KeepName,
                long.clone(),
                Reason::TooLong { len: 17, max: 16 }
            )
        );

        let e = KeepParams::parse_list("expires,,q").unwrap_err();
        assert!(matches!(
            e,
            ValidationError {
                field: Field::KeepList,
                reason: Reason::EmptyItem,
                ..
            }
        ));
        let e = KeepParams::parse_list("expires,").unwrap_err();
        assert!(matches!(
            e,
            ValidationError {
                field: Field::KeepList,
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
                ValidationError::new(
                    Field::KeepName,
                    name,
                    Reason::Char {
                        ch,
                        pos,
                        rule: TOKEN_RULE
                    }
                ),
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
}
