//! Verifier cost of the programs, printed so that regressions show in the test output.

use rewriter_common::Config;
use rewriter_user::{Ingress, Rewriter};

/// Far below the kernel's 1 000 000 processed-instructions limit; fails loudly if a change
/// makes verification explode.
const BUDGET: u32 = 300_000;

#[test]
fn verifier_processed_instructions_stay_within_budget() {
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    rw.load_ingress(Ingress::Xdp).unwrap();
    rw.load_ingress(Ingress::Tc).unwrap();
    let counts = [
        (
            "sip_rewriter (egress)",
            rw.program_mut().unwrap().info().unwrap(),
        ),
        ("sip_restore_xdp", rw.xdp_mut().unwrap().info().unwrap()),
        (
            "sip_restore_tc",
            rw.tc_ingress_mut().unwrap().info().unwrap(),
        ),
    ];
    for (name, info) in counts {
        let n = info
            .verified_instruction_count()
            .expect("kernel >= 5.16 reports verified_insns");
        println!("verifier: {name} processed {n} instructions (budget {BUDGET})");
        assert!(n < BUDGET, "{name}: verifier processed {n} instructions");
    }
}
