//! Contacts files for `contact import`: CSV `dn,uri` lines (or a config-shaped TOML file).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use rewriter_common::MAX_CONTACTS;

use super::{
    error::{ConfigError, Field, Reason, ValidationError},
    file::{Settings, read_text},
    validate::{validate_dn, validate_uri},
};

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
                ValidationError::new(Field::ContactLine, raw, reason),
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
                ValidationError::new(Field::Dn, dn, reason),
            ));
        }
        if out.len() >= MAX_CONTACTS as usize {
            let reason = Reason::TooMany {
                count: out.len() + 1,
                max: MAX_CONTACTS as usize,
            };
            return Err(invalid(
                line_no,
                ValidationError::list(Field::ContactList, reason),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::testing::{EXAMPLE, TempFile, pairs};

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
                source: ValidationError {
                    field: Field::ContactLine,
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
                source: ValidationError {
                    field: Field::ContactLine,
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
                source: ValidationError {
                    field: Field::Dn,
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
}
