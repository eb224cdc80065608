//! The common algorithm (userspace) on every corpus case: exact output bytes.

use std::{fs, path::Path};

use rewriter_common::{
    Config, ContactUri,
    sip::{Decision, rewrite},
};

/// The configuration the corpus READMEs describe.
fn corpus_config() -> Config {
    let mut c = Config::default();
    assert!(c.set_template(b"sip:", b"@192.168.210.54:5060"));
    c
}

fn lookup(dn: &[u8]) -> Option<ContactUri> {
    (dn == b"1002").then(|| ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap())
}

fn run_dir(dir: &Path) -> usize {
    let mut n = 0;
    let mut failed = Vec::new();
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for input in names
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".in.sip"))
    {
        let expected_path = input.to_string_lossy().replace(".in.sip", ".out.sip");
        let data = fs::read(input).unwrap();
        let expected = fs::read(&expected_path).unwrap();
        let mut out = vec![0u8; 4096];
        let got = match rewrite(&data, &corpus_config(), lookup, &mut out) {
            Decision::Rewritten { len, .. } => out[..len].to_vec(),
            Decision::Pass(_) => data.clone(),
        };
        if got != expected {
            eprintln!(
                "case {}\n--- got\n{}\n--- expected\n{}",
                input.display(),
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            );
            failed.push(input.file_name().unwrap().to_string_lossy().into_owned());
        }
        n += 1;
    }
    assert!(
        failed.is_empty(),
        "{} of {n} cases differ: {failed:?}",
        failed.len()
    );
    n
}

#[test]
fn shared_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/shared-corpus");
    assert_eq!(run_dir(&dir), 9);
}

#[test]
fn project_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    assert!(run_dir(&dir) >= 40);
}
