//! Verifier cost of the program, printed so that regressions show in the test output.

use rewriter_common::Config;
use rewriter_user::Rewriter;

/// Far below the kernel's 1 000 000 processed-instructions limit; fails loudly if a change
/// makes verification explode.
const BUDGET: u32 = 300_000;

#[test]
fn verifier_processed_instructions_stay_within_budget() {
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    let info = rw.program_mut().unwrap().info().unwrap();
    let n = info.verified_instruction_count().expect("kernel >= 5.16 reports verified_insns");
    println!("verifier: sip_rewriter processed {n} instructions (budget {BUDGET})");
    assert!(n < BUDGET, "verifier processed {n} instructions");
}
