//! Fail-open rules and configuration variants through the real kernel program.

use integration_tests::{
    kernel::{SkbCtx, corpus_config, corpus_rewriter, run, run_with},
    net::{InNetns, ip},
    packet::{Frame, check},
};
use rewriter_common::{CFG_ADDR_FILTER, CFG_KEEP_ALL, Config, Stat};
use rewriter_user::Rewriter;

const JSSIP: &[u8] = include_bytes!("../shared-corpus/01-jssip-register.in.sip");
const JSSIP_OUT: &[u8] = include_bytes!("../shared-corpus/01-jssip-register.out.sip");

/// Runs `frame` once; asserts it came out byte-identical and that exactly `stat` moved by one
/// among the "why not" counters.
fn assert_passes(rw: &mut Rewriter, frame: &[u8], stat: Stat, ctx: Option<SkbCtx>) {
    let before = rw.counters().unwrap();
    let out = run_with(rw, frame, 1, ctx);
    let after = rw.counters().unwrap();
    assert_eq!(out, frame, "must leave byte-identical ({stat:?})");
    assert_eq!(
        after.get(stat) - before.get(stat),
        1,
        "{stat:?} must count it"
    );
    assert_eq!(
        after.get(Stat::Rewritten),
        before.get(Stat::Rewritten),
        "nothing rewritten"
    );
}

fn payload(out: &[u8]) -> Vec<u8> {
    check(out).unwrap().payload
}

#[test]
fn ipv4_fragments_pass_and_are_counted() {
    let mut rw = corpus_rewriter();
    // More-fragments set (first fragment) and a non-zero offset (later fragment).
    for frag in [0x2000u16, 0x0010] {
        let frame = Frame {
            ipv4_frag: frag,
            ..Frame::v4(5060)
        }
        .build(JSSIP);
        assert_passes(&mut rw, &frame, Stat::Fragment, None);
    }
}

#[test]
fn ipv6_fragment_header_passes_and_is_counted() {
    let mut rw = corpus_rewriter();
    let mut frame = Frame::v6(5060).build(JSSIP);
    // Next header = Fragment (44): the kernel program must not look further.
    frame[14 + 6] = 44;
    assert_passes(&mut rw, &frame, Stat::Fragment, None);
}

#[test]
fn oversize_register_passes_and_is_counted() {
    let mut rw = corpus_rewriter();
    let mut big = JSSIP.to_vec();
    // Pad the header section past the 1472-byte scan limit with a long, legal header.
    let pad = format!("X-Pad: {}\r\n", "a".repeat(1000));
    let at = big.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    big.splice(at..at, pad.bytes());
    assert!(big.len() > 1472);
    let frame = Frame::v4(5060).build(&big);
    assert_passes(&mut rw, &frame, Stat::TooBig, None);
}

#[test]
fn gso_skb_passes_and_is_counted() {
    let mut rw = corpus_rewriter();
    let frame = Frame::v4(5060).build(JSSIP);
    assert_passes(
        &mut rw,
        &frame,
        Stat::TooBig,
        Some(SkbCtx {
            gso_size: 1400,
            gso_segs: 2,
            ..Default::default()
        }),
    );
}

#[test]
fn growth_past_the_device_mtu_is_not_attempted() {
    // A short Contact for DN 1002 grows; the device's MTU leaves no room for it.
    let msg = "REGISTER sip:198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\n\
               To: <sip:1002@198.18.0.2>\r\nFrom: <sip:1002@198.18.0.2>;tag=1\r\nCall-ID: mtu-1\r\nCSeq: 1 REGISTER\r\n\
               Contact: <sip:a@b>\r\nContent-Length: 0\r\n\r\n";
    let frame = Frame::v4(5060).build(msg.as_bytes());
    let ns = format!("sipr-mtu-{}", std::process::id());
    ip(&["netns", "add", &ns]).unwrap();
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }
    let _del = Del(ns.clone());
    // MTU = IP length of the frame as it is: any growth is too much.
    let mtu = (frame.len() - 14).to_string();
    ip(&[
        "-n", &ns, "link", "add", "d0", "mtu", &mtu, "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    ip(&["-n", &ns, "link", "set", "d0", "up"]).unwrap();
    let _in = InNetns::enter(&ns).unwrap();
    let ifindex = rewriter_user::netdev::ifindex("d0").unwrap();
    let mut rw = corpus_rewriter();
    assert_passes(
        &mut rw,
        &frame,
        Stat::TooBig,
        Some(SkbCtx {
            ifindex,
            ..Default::default()
        }),
    );
    // Same device, MTU raised by the growth: now it is rewritten.
    let grown = msg.replace("<sip:a@b>", "<sip:1002@192.168.210.54:5060>");
    let mtu = (frame.len() - 14 + grown.len() - msg.len()).to_string();
    ip(&["link", "set", "d0", "mtu", &mtu]).unwrap();
    let out = run_with(
        &mut rw,
        &frame,
        1,
        Some(SkbCtx {
            ifindex,
            ..Default::default()
        }),
    );
    assert_eq!(payload(&out), grown.as_bytes());
}

#[test]
fn unknown_dn_without_template_passes() {
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
        .unwrap();
    let other = String::from_utf8_lossy(JSSIP).replace("sip:1002@", "sip:1003@");
    let frame = Frame::v4(5060).build(other.as_bytes());
    assert_passes(&mut rw, &frame, Stat::DnUnknown, None);
    // The mapped DN is still rewritten with the same configuration.
    let out = run(&mut rw, &Frame::v4(5060).build(JSSIP));
    assert_eq!(payload(&out), JSSIP_OUT);
}

#[test]
fn keep_all_and_keep_none() {
    let contact_in = "Contact: <sip:84jp7d1i@3tglb5esjoiv.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-0123456789ab>\";expires=600\r\n";
    let text = String::from_utf8_lossy(JSSIP);
    assert!(text.contains(contact_in));
    for (flags, keep, want) in [
        (
            CFG_KEEP_ALL,
            false,
            "Contact: <sip:1002@192.168.210.54:5060>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-0123456789ab>\";expires=600\r\n",
        ),
        (0, false, "Contact: <sip:1002@192.168.210.54:5060>\r\n"),
        (
            0,
            true,
            "Contact: <sip:1002@192.168.210.54:5060>;reg-id=1\r\n",
        ),
    ] {
        let mut cfg = Config::new(5060);
        cfg.flags |= flags;
        if keep {
            assert!(cfg.add_keep(b"REG-ID"));
        }
        let mut rw = Rewriter::load(&cfg).unwrap();
        rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
            .unwrap();
        let out = run(&mut rw, &Frame::v4(5060).build(JSSIP));
        assert_eq!(
            String::from_utf8(payload(&out)).unwrap(),
            text.replace(contact_in, want),
            "flags {flags:#x} keep {keep}"
        );
    }
}

#[test]
fn genesys_address_set_limits_candidates() {
    let mut cfg = corpus_config();
    cfg.flags |= CFG_ADDR_FILTER;
    let mut rw = Rewriter::load(&cfg).unwrap();
    rw.set_contact(b"1002", b"sip:1002@192.168.210.54:5060")
        .unwrap();
    rw.add_genesys("198.18.0.2".parse().unwrap()).unwrap();
    rw.add_genesys("2001:db8::2".parse().unwrap()).unwrap();
    for f in [Frame::v4(5060), Frame::v6(5060)] {
        let out = run(&mut rw, &f.build(JSSIP));
        assert_eq!(payload(&out), JSSIP_OUT, "{:?} is in the set", f.dst);
    }
    for dst in ["198.18.0.3", "2001:db8::3"] {
        let f = Frame {
            dst: dst.parse().unwrap(),
            src: if dst.contains(':') {
                "2001:db8::1"
            } else {
                "198.18.0.1"
            }
            .parse()
            .unwrap(),
            ..Frame::v4(5060)
        };
        let frame = f.build(JSSIP);
        let seen = rw.counters().unwrap().get(Stat::Seen);
        assert_eq!(run(&mut rw, &frame), frame, "{dst} is not Genesys");
        assert_eq!(
            rw.counters().unwrap().get(Stat::Seen),
            seen,
            "{dst} is not even a candidate"
        );
    }
}

#[test]
fn counters_add_up_over_the_corpus_kinds() {
    let mut rw = corpus_rewriter();
    let before = rw.counters().unwrap();
    for (input, want) in [
        (
            &include_bytes!("../shared-corpus/03-unregister-all.in.sip")[..],
            Stat::Star,
        ),
        (
            &include_bytes!("../shared-corpus/07-invite-untouched.in.sip")[..],
            Stat::NotRegister,
        ),
        (
            &include_bytes!("../shared-corpus/09-invalid-dn-untouched.in.sip")[..],
            Stat::DnMissing,
        ),
        (
            &include_bytes!("../corpus/52-to-dn-dquote-untouched.in.sip")[..],
            Stat::DnInvalid,
        ),
        (
            &include_bytes!("../corpus/67-register-no-contact-untouched.in.sip")[..],
            Stat::NoContact,
        ),
        (
            &include_bytes!("../corpus/65-truncated-no-empty-line-untouched.in.sip")[..],
            Stat::Malformed,
        ),
    ] {
        let frame = Frame::v4(5060).build(input);
        assert_passes(&mut rw, &frame, want, None);
    }
    let after = rw.counters().unwrap();
    assert_eq!(after.get(Stat::Seen) - before.get(Stat::Seen), 6);
    assert_eq!(
        after.get(Stat::Register) - before.get(Stat::Register),
        5,
        "all but the INVITE"
    );
}

/// QinQ (an 802.1ad outer tag, or two 802.1Q tags) passes, counted `vlan_unsupported`; one
/// 802.1Q tag is looked through (the corpus runs with one).
#[test]
fn qinq_passes_and_is_counted() {
    let mut rw = corpus_rewriter();
    let f = Frame {
        outer_vlan: Some(100),
        vlan: Some(200),
        ..Frame::v4(5060)
    };
    assert_passes(&mut rw, &f.build(JSSIP), Stat::VlanUnsupported, None);
    let mut frame = Frame {
        vlan: Some(200),
        ..Frame::v4(5060)
    }
    .build(JSSIP);
    // A second 802.1Q tag after the MAC addresses.
    frame.splice(12..12, [0x81, 0x00, 0x01, 0x2c]);
    assert_passes(&mut rw, &frame, Stat::VlanUnsupported, None);
}

/// A SIP datagram behind IPv6 extension headers is left alone and counted `ipv6_ext`; other
/// traffic behind them (MLD reports carry a hop-by-hop header) is not a candidate at all.
#[test]
fn ipv6_extension_headers_pass_and_are_counted() {
    let mut rw = corpus_rewriter();
    let plain = Frame::v6(5060).build(JSSIP);
    for (next, name) in [
        (0u8, "hop-by-hop"),
        (60, "destination options"),
        (43, "routing"),
    ] {
        // Insert an 8-byte extension header (next header UDP, length 0) after the IPv6 header.
        let mut frame = plain.clone();
        let l3 = 14;
        frame[l3 + 6] = next;
        let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + 8;
        frame[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        frame.splice(l3 + 40..l3 + 40, [17, 0, 0, 0, 0, 0, 0, 0]);
        assert_passes(&mut rw, &frame, Stat::Ipv6Ext, None);
        // The same to another port: not counted anywhere.
        let mut other = frame.clone();
        other[l3 + 48 + 2..l3 + 48 + 4].copy_from_slice(&5070u16.to_be_bytes());
        let before = rw.counters().unwrap();
        assert_eq!(run(&mut rw, &other), other, "{name}");
        assert_eq!(rw.counters().unwrap(), before, "{name}: not a candidate");
    }
}

/// An IP length that disagrees with the frame (while the UDP length matches it) is malformed:
/// the receiver would drop or cut it.
#[test]
fn an_ip_length_that_disagrees_with_the_frame_is_malformed() {
    let mut rw = corpus_rewriter();
    for v6 in [false, true] {
        let mut frame = if v6 { Frame::v6(5060) } else { Frame::v4(5060) }.build(JSSIP);
        let at = 14 + if v6 { 4 } else { 2 };
        let len = u16::from_be_bytes([frame[at], frame[at + 1]]) + 2;
        frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
        if !v6 {
            // Keep the IPv4 header checksum valid: only the length lies.
            frame[24..26].fill(0);
            let mut sum: u32 = frame[14..34]
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        }
        assert_passes(&mut rw, &frame, Stat::Malformed, None);
    }
}

/// An escaped DN is the DN it decodes to (RFC 3261 19.1.4): `%31002` gets 1002's map entry,
/// and an escaped DN not in the map gets the template around its decoded form; one that
/// decodes to a character no user part holds passes, counted `dn_invalid`.
#[test]
fn an_escaped_dn_is_looked_up_and_written_decoded() {
    let mut rw = corpus_rewriter();
    rw.set_contact(b"1002", b"sip:1002@198.18.0.44").unwrap();
    let jssip = String::from_utf8_lossy(JSSIP).into_owned();
    let to = jssip
        .lines()
        .find(|l| l.starts_with("To:"))
        .unwrap()
        .to_owned();
    let contact = |out: &[u8]| {
        String::from_utf8_lossy(&payload(out))
            .lines()
            .find(|l| l.starts_with("Contact:"))
            .unwrap()
            .to_owned()
    };
    for (user, want) in [
        ("%31002", "Contact: <sip:1002@198.18.0.44>;expires=600"),
        (
            "%32%30%30%31",
            "Contact: <sip:2001@192.168.210.54:5060>;expires=600",
        ),
        (
            "%2b4930",
            "Contact: <sip:+4930@192.168.210.54:5060>;expires=600",
        ),
    ] {
        let msg = jssip.replace(&to, &to.replace("sip:1002@", &format!("sip:{user}@")));
        assert_ne!(msg, jssip);
        let out = run(&mut rw, &Frame::v4(5060).build(msg.as_bytes()));
        assert_eq!(contact(&out), want, "{user}");
    }
    for user in ["1070%0d%0aX", "a%40b", "null-%00-null"] {
        let msg = jssip.replace(&to, &to.replace("sip:1002@", &format!("sip:{user}@")));
        assert_passes(
            &mut rw,
            &Frame::v4(5060).build(msg.as_bytes()),
            Stat::DnInvalid,
            None,
        );
    }
}
