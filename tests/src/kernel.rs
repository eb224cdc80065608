//! Running the real kernel program through BPF_PROG_TEST_RUN.

use aya::programs::{TestRun, TestRunOptions};
use rewriter_common::Config;
use rewriter_user::{Ingress, Rewriter};

/// TC_ACT_UNSPEC as the kernel reports it: "next program / let it go".
pub const PASS: u32 = -1i32 as u32;
/// XDP_PASS (include/uapi/linux/bpf.h).
pub const XDP_PASS: u32 = 2;

/// `struct __sk_buff` offsets the tests set (include/uapi/linux/bpf.h, v6.18).
const SKB_IFINDEX: usize = 40;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;
const SKB_SIZE: usize = 192;

/// Optional `__sk_buff` fields for a test run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkbCtx {
    pub ifindex: u32,
    pub gso_size: u32,
    pub gso_segs: u32,
}

impl SkbCtx {
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; SKB_SIZE];
        b[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&self.gso_segs.to_ne_bytes());
        b[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&self.gso_size.to_ne_bytes());
        b
    }
}

/// The configuration the corpus READMEs describe: keep `expires`/`q`, template
/// `sip:{dn}@192.168.210.54:5060`, `1002` in the map.
pub fn corpus_config() -> Config {
    let mut cfg = Config::default();
    assert!(cfg.set_template(b"sip:", b"@192.168.210.54:5060"));
    cfg
}

pub fn corpus_rewriter() -> Rewriter {
    let mut rw = Rewriter::load(&corpus_config()).unwrap();
    rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
        .unwrap();
    rw
}

/// Runs `frame` `repeat` times; returns the output frame. Asserts the verdict is "pass".
pub fn run_with(rw: &mut Rewriter, frame: &[u8], repeat: u32, skb: Option<SkbCtx>) -> Vec<u8> {
    let mut out = vec![0u8; frame.len() + 1024];
    let ctx = skb.map(|s| s.bytes());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = ctx.as_deref();
    opts.repeat = repeat;
    let res = rw
        .program_mut()
        .unwrap()
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(res.return_value, PASS, "the program must never drop");
    out.truncate(res.data_size_out as usize);
    out
}

pub fn run(rw: &mut Rewriter, frame: &[u8]) -> Vec<u8> {
    run_with(rw, frame, 1, None)
}

/// Runs `frame` through an ingress restore program (`Xdp` or `Tc`, loaded on first use) once;
/// returns the output frame (for XDP, any metadata in front of it). Asserts the verdict is
/// "pass".
pub fn run_ingress(rw: &mut Rewriter, which: Ingress, frame: &[u8]) -> Vec<u8> {
    rw.load_ingress(which).expect("loading the ingress program");
    let mut out = vec![0u8; frame.len() + 1024];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let (res, pass) = match which {
        Ingress::Xdp => (rw.xdp_mut().unwrap().test_run(opts), XDP_PASS),
        Ingress::Tc => (rw.tc_ingress_mut().unwrap().test_run(opts), PASS),
        Ingress::Off => panic!("no ingress program to run"),
    };
    let res = res.expect("BPF_PROG_TEST_RUN");
    assert_eq!(res.return_value, pass, "the program must never drop");
    out.truncate(res.data_size_out as usize);
    out
}

/// Pins this CPU for the calling thread (BPF_PROG_TEST_RUN runs on the caller's CPU).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
