//! The real kernel program through BPF_PROG_TEST_RUN (needs root).

use integration_tests::{
    kernel::{corpus_config, corpus_rewriter, run_with},
    packet::{Frame, check},
};
use rewriter_common::{
    Config, ContactUri, Stat,
    sip::{Decision, rewrite},
};
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

/// A UDP checksum that computes to 0 goes out as 0xffff (RFC 768): over IPv6 a 0 field means
/// "no checksum", which IPv6 forbids (RFC 8200 8.1), and the receiver drops the datagram. The
/// Call-ID of the JsSIP REGISTER is varied (same length and alphabet, so the same rewrite) until
/// the rewritten datagram's checksum computes to 0; the kernel's output must be exactly the
/// rewritten frame built from scratch, with 0xffff.
#[test]
fn ipv6_rewrite_whose_checksum_computes_to_zero_sends_0xffff() {
    // JsSIP's Call-ID alphabet; ten of its characters are varied.
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const VARIED: usize = 10;
    let uri = ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap();
    let frame = Frame::v6(5060);
    let call_id = b"Call-ID: 9jt7gsm5vrfsq3btlq5ec1";
    let skip = b"Call-ID: ".len();
    let at_in = REGISTER
        .windows(call_id.len())
        .position(|w| w == call_id)
        .unwrap()
        + skip;
    let mut buf = vec![0u8; 4096];
    let Decision::Rewritten { len, .. } =
        rewrite(REGISTER, &corpus_config(), |_| Some(uri), &mut buf)
    else {
        panic!("the corpus REGISTER must be rewritten");
    };
    let mut expected = buf[..len].to_vec();
    let at_out = expected
        .windows(call_id.len())
        .position(|w| w == call_id)
        .unwrap()
        + skip;
    // Base: the varied characters all '0'; `base` is the folded sum of the datagram then.
    expected[at_out..at_out + VARIED].fill(b'0');
    let built = frame.build(&expected);
    let udp = built.len() - expected.len() - 8;
    let base = !u16::from_be_bytes([built[udp + 6], built[udp + 7]]) as u32;
    // Where a byte sits in its 16-bit word of the UDP datagram (header first, 8 bytes).
    let shift = |k: usize| {
        if (8 + at_out + k).is_multiple_of(2) {
            8
        } else {
            0
        }
    };
    // Candidates from a fixed pseudo-random sequence (splitmix64), so that every try reaches
    // the whole range of sums (counting up would vary only the low characters for long).
    let mut state = 0u64;
    let mut digits = None;
    for _ in 0..10_000_000u32 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut c = [0u8; VARIED];
        let (mut v, mut acc) = (z ^ (z >> 31), base);
        for (k, ch) in c.iter_mut().enumerate() {
            *ch = ALPHABET[(v % ALPHABET.len() as u64) as usize];
            v /= ALPHABET.len() as u64;
            acc += ((*ch - b'0') as u32) << shift(k);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        if acc == 0xffff {
            digits = Some(c);
            break;
        }
    }
    let digits = digits.expect("a Call-ID whose rewrite checksums to 0");
    let mut input = REGISTER.to_vec();
    input[at_in..at_in + VARIED].copy_from_slice(&digits);
    expected[at_out..at_out + VARIED].copy_from_slice(&digits);
    let expected = frame.build(&expected);
    let udp = expected.len() - len - 8;
    assert_eq!(
        expected[udp + 6..udp + 8],
        [0xff, 0xff],
        "the search's premise"
    );
    let mut rw = corpus_rewriter();
    let (got, rewritten) = run(&mut rw, &frame.build(&input), 1, Stat::Rewritten);
    assert_eq!(rewritten, 1);
    check(&got).unwrap();
    assert_eq!(got, expected);
}
