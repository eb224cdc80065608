//! Verifier cost of the programs, printed so that regressions show in the test output (and so
//! that `cargo xtask vm-test` can report them per kernel): one line per program,
//! `verifier: NAME processed N instructions` or `verifier: NAME rejected: REASON`.

use rewriter_common::Config;

/// Half the kernel's 1 000 000 processed-instructions limit, on every kernel of the matrix
/// (`cargo xtask vm-test`) and the host: the same object costs each a different amount (v6.1
/// prunes fewer states than v6.12; the host's v6.18 build keeps apart states inside
/// `bpf_loop` callbacks that v6.12 merges). Fails loudly if a change makes verification
/// explode.
const BUDGET: u32 = 500_000;

#[test]
fn verifier_processed_instructions_stay_within_budget() {
    let results = rewriter_user::loader::verify_programs(&Config::default()).unwrap();
    let mut bad = Vec::new();
    for (name, r) in results {
        match r {
            Ok(n) => {
                println!("verifier: {name} processed {n} instructions (budget {BUDGET})");
                if n >= BUDGET {
                    bad.push(format!("{name}: {n} instructions"));
                }
            }
            Err((reason, full)) => {
                eprintln!("{name}: {full}");
                println!("verifier: {name} rejected: {reason}");
                bad.push(format!("{name}: {reason}"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}
