//! The real kernel program through BPF_PROG_TEST_RUN (needs root).

use integration_tests::{
    kernel::run_with,
    packet::{Frame, check},
};
use rewriter_common::{Config, Stat};
use rewriter_user::Rewriter;

const REGISTER: &[u8] = include_bytes!("../shared-corpus/01-jssip-register.in.sip");

/// Runs `frame` `repeat` times; returns the output frame and how much `stat` moved.
fn run(rw: &mut Rewriter, frame: &[u8], repeat: u32, stat: Stat) -> (Vec<u8>, u64) {
    let before = rw.counters().unwrap().get(stat);
    let out = run_with(rw, frame, repeat, None);
    let after = rw.counters().unwrap().get(stat);
    (out, after - before)
}

#[test]
fn udp_5060_frame_passes_identical_and_is_counted_per_repeat() {
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    let frame = Frame {
        dport: 5060,
        ..Frame::v4(5060)
    }
    .build(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    let (out, seen) = run(&mut rw, &frame, 17, Stat::Seen);
    assert_eq!(out, frame);
    assert_eq!(seen, 17);
}

#[test]
fn udp_5061_frame_is_not_counted() {
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    let frame = Frame::v4(5061).build(REGISTER);
    let (out, seen) = run(&mut rw, &frame, 9, Stat::Seen);
    assert_eq!(out, frame);
    assert_eq!(seen, 0);
}

#[test]
fn configured_port_is_honoured_over_ipv6_and_vlan() {
    let mut rw = Rewriter::load(&Config::new(5070)).unwrap();
    for f in [
        Frame::v6(5070),
        Frame {
            vlan: Some(42),
            ..Frame::v4(5070)
        },
        Frame {
            ipv4_options: vec![1; 8],
            ..Frame::v4(5070)
        },
    ] {
        let frame = f.build(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        let (out, seen) = run(&mut rw, &frame, 3, Stat::Seen);
        check(&out).unwrap();
        assert_eq!(out, frame, "{f:?}");
        assert_eq!(seen, 3, "{f:?}");
    }
    let (_, seen) = run(&mut rw, &Frame::v4(5060).build(b"x"), 3, Stat::Seen);
    assert_eq!(seen, 0, "5060 is not the configured port any more");
}
