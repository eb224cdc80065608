//! A generator of REGISTERs and near-REGISTERs in the formats real clients use, plus byte
//! mutations and truncations, for differential testing of the kernel program against the
//! userspace algorithm.

/// splitmix64: small, seedable, good enough to spread test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const DNS: &[&str] = &[
    "1002",
    "1003",
    "2001",
    "4711",
    "+4930123456",
    "agent.smith",
    "a-b_c.d!~*'()",
    "u&v=w+x$y",
    "sales,desk;ext?a/b",
    "%31%30%30%32",
    "1002%0d%0aX-Evil%3a1",
    "ab%2",
    "10 02",
    "10\"02",
    "a<b",
    "0123456789012345678901234567890123456789012345678901234567890123",
    "01234567890123456789012345678901234567890123456789012345678901234",
];
const HOSTS: &[&str] = &[
    "192.168.210.54",
    "198.18.0.2:5060",
    "example.com",
    "[2001:db8::10]",
    "pbx.example.com;transport=udp",
];
const PARAMS: &[&str] = &[
    ";expires=600",
    ";expires=0",
    ";Expires=00",
    ";EXPIRES=3600",
    ";q=0.7",
    ";Q=1",
    ";reg-id=1",
    ";+sip.ice",
    ";ob",
    ";+sip.instance=\"<urn:uuid:3a4a7f6c-1b2d-4c5e-9f00-0123456789ab>\"",
    ";+org.linphone.specs=\"groupchat,lime\"",
    " ; expires = 60",
    ";transport=udp",
    ";x=\"a,b;c<d>\"",
    ";pub-gruu=\"sip:x@y;gr=urn:uuid:1\"",
];
const DISPLAY: &[&str] = &[
    "",
    "\"Agent 1002\" ",
    "\"a,b;c<d>@sip:x\" ",
    "Agent Smith ",
    "\"esc \\\" quote\" ",
    "\"\" ",
];

fn name(rng: &mut Rng, long: &str, compact: Option<&str>) -> String {
    let base = match compact {
        Some(c) if rng.chance(20) => c.to_owned(),
        _ => long.to_owned(),
    };
    let cased: String = match rng.below(4) {
        0 => base.to_uppercase(),
        1 => base.to_lowercase(),
        2 => base
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        _ => base,
    };
    let sep = *rng.pick(&[": ", ":", " : ", "\t:\t", ":  "]);
    format!("{cased}{sep}")
}

fn lws(rng: &mut Rng) -> &'static str {
    const LWS: [&str; 8] = ["", "", "", " ", "  ", "\t", "\r\n ", "\r\n\t"];
    LWS[rng.below(LWS.len())]
}

fn contact(rng: &mut Rng) -> String {
    let user = rng
        .pick(&["84jp7d1i", "6cfmsers", "a1", "x", "1004"])
        .to_string();
    let host = rng.pick(&[
        "3tglb5esjoiv.invalid;transport=ws",
        "198.18.0.9:5060",
        "[2001:db8::5]:5060;transport=udp",
        "host-a.invalid",
    ]);
    let mut c = if rng.chance(80) {
        format!("{}<sip:{user}@{host}>", rng.pick(DISPLAY))
    } else {
        format!(
            "sip:{user}@{}",
            rng.pick(&["198.18.0.9", "host-b.invalid", "[2001:db8::9]"])
        )
    };
    for _ in 0..rng.below(5) {
        c.push_str(lws(rng).trim_end_matches(['\r', '\n']));
        c.push_str(PARAMS[rng.below(PARAMS.len())]);
    }
    c
}

/// One message: a REGISTER in some client's style, sometimes something else.
pub fn message(rng: &mut Rng) -> Vec<u8> {
    let dn = *rng.pick(DNS);
    let host = *rng.pick(HOSTS);
    let method = if rng.chance(92) {
        "REGISTER"
    } else {
        *rng.pick(&["INVITE", "OPTIONS", "register", "REGISTERX"])
    };
    let version = if rng.chance(97) { "SIP/2.0" } else { "SIP/3.0" };
    let mut headers: Vec<String> = vec![
        format!(
            "{}SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK{}",
            name(rng, "Via", Some("v")),
            rng.next_u64() % 100000
        ),
        format!("{}70", name(rng, "Max-Forwards", None)),
        format!(
            "{}\"{dn}\" <sip:{dn}@{host}>;tag={}",
            name(rng, "From", Some("f")),
            rng.next_u64() % 9999
        ),
        format!(
            "{}{}@198.18.0.1",
            name(rng, "Call-ID", Some("i")),
            rng.next_u64()
        ),
        format!("{}{} REGISTER", name(rng, "CSeq", None), rng.below(100)),
        format!("{}JsSIP 3.10.0", name(rng, "User-Agent", None)),
        format!("{}path,gruu,outbound", name(rng, "Supported", Some("k"))),
    ];
    let to = match rng.below(6) {
        0 => format!("<sip:{dn}@{host}>"),
        1 => format!("\"{dn}\" <sip:{dn}@{host}>"),
        2 => format!("sip:{dn}@{host};tag=abc"),
        3 => format!("\"sip:9999@x\" <sips:{dn}@{host}>"),
        4 => format!("<SIP:{dn}@{host}>"),
        _ => format!("{}<tel:{dn}>", if rng.chance(50) { "Bob " } else { "" }),
    };
    if rng.chance(97) {
        headers.push(format!("{}{to}", name(rng, "To", Some("t"))));
    }
    for _ in 0..if rng.chance(90) { 1 + rng.below(2) } else { 0 } {
        let list = if rng.chance(5) {
            "*".to_owned()
        } else {
            let n = 1 + rng.below(3);
            (0..n)
                .map(|_| contact(rng))
                .collect::<Vec<_>>()
                .join(&format!(
                    "{},{}",
                    lws(rng).trim_end_matches(['\r', '\n']),
                    lws(rng)
                ))
        };
        headers.push(format!("{}{list}", name(rng, "Contact", Some("m"))));
    }
    if rng.chance(30) {
        headers.push(format!(
            "{}Digest username=\"{dn}\", realm=\"asterisk\", nonce=\"{:x}\", uri=\"sip:{host}\", response=\"{:x}\", algorithm=MD5",
            name(rng, "Authorization", None),
            rng.next_u64(),
            rng.next_u64()
        ));
    }
    // Mostly 600; sometimes 0 (contacts without `expires` then count as zero) or zeros.
    let expires = *rng.pick(&["600", "600", "600", "0", "000", "3600"]);
    headers.push(format!("{}{expires}", name(rng, "Expires", None)));
    for _ in 0..rng.below(20) {
        headers.push(format!(
            "X-Pad-{}: {}",
            rng.below(99),
            "p".repeat(rng.below(60))
        ));
    }
    // Shuffle (Fisher-Yates).
    for i in (1..headers.len()).rev() {
        let j = rng.below(i + 1);
        headers.swap(i, j);
    }
    let body = if rng.chance(10) {
        "v=0\r\no=- 0 0 IN IP4 198.18.0.1\r\n".to_owned()
    } else {
        String::new()
    };
    headers.push(format!(
        "{}{}",
        name(rng, "Content-Length", Some("l")),
        body.len()
    ));
    let mut msg = format!(
        "{method} sip:{host} {version}\r\n{}\r\n\r\n{body}",
        headers.join("\r\n")
    )
    .into_bytes();
    if rng.chance(25) {
        mutate(rng, &mut msg);
    }
    msg
}

/// One random byte-level mutation: flip, insert, delete, truncate, duplicate a span, LF-only.
pub fn mutate(rng: &mut Rng, msg: &mut Vec<u8>) {
    if msg.is_empty() {
        return;
    }
    let at = rng.below(msg.len());
    match rng.below(7) {
        0 => msg[at] ^= 1 << rng.below(8),
        1 => msg.insert(at, *rng.pick(b"\r\n ;,<>\":@%\t\0\xff")),
        2 => {
            let end = (at + 1 + rng.below(8)).min(msg.len());
            msg.drain(at..end);
        }
        3 => msg.truncate(at),
        4 => {
            let end = (at + 1 + rng.below(40)).min(msg.len());
            let span = msg[at..end].to_vec();
            msg.splice(at..at, span);
        }
        5 => {
            if let Some(p) = msg.windows(2).skip(at).position(|w| w == b"\r\n") {
                msg.remove(at + p);
            }
        }
        _ => msg[at] = *rng.pick(b"\r\n ;,<>\":@"),
    }
}
