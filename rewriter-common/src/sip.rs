//! The SIP scan: one pass over a REGISTER's header section that finds the DN (user part of the
//! To URI) and every span of the Contact headers that the rewrite replaces or deletes.
//!
//! Written for two runtimes at once:
//! - the eBPF program runs [`step`] from a `bpf_loop` callback, with [`Scan`] and the message in
//!   a per-CPU map value, so the verifier checks one step, not every path through a message;
//! - userspace (tests, fuzzing, `sip-rewriter rewrite`) runs the same [`step`] in a plain loop
//!   ([`scan`]).
//!
//! Rules that keep it verifier-friendly: every byte access goes through [`Msg`], whose indices
//! are masked into the buffer, so no access can fail and no bounds-check panic exists; every
//! loop has a constant bound; word loads are 8-byte aligned.

use crate::{Config, KEEP_NAME_LEN, MAX_DN_LEN};

/// Size of the message buffer (a power of two: indices are masked with `BUF_SIZE - 1`).
pub const BUF_SIZE: usize = 2048;
const BUF_MASK: usize = BUF_SIZE - 1;
/// Largest UDP payload the rewriter handles (1500-byte MTU minus IPv4 and UDP headers).
pub const MAX_SIP_LEN: usize = 1472;
/// Most spans one message may need (URI replacements and parameter deletions, merged when
/// adjacent); more means "too complex" and the packet passes.
pub const MAX_EDITS: usize = 16;
/// Most scan steps for one message (a step handles a header line or a Contact element).
pub const MAX_STEPS: u32 = 192;
/// Zeroed bytes after the message, so reads just past the end see no stale data.
pub const TAIL_PAD: usize = 16;

/// The message buffer: `BUF_SIZE` bytes plus one word so that a word load at any masked index
/// stays inside.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Msg(pub [u8; BUF_SIZE + 8]);

impl Msg {
    pub const fn zeroed() -> Self {
        Msg([0; BUF_SIZE + 8])
    }

    /// Copies `data` in and zero-pads the tail (userspace).
    pub fn load(&mut self, data: &[u8]) -> bool {
        if data.len() > MAX_SIP_LEN {
            return false;
        }
        self.0[..data.len()].copy_from_slice(data);
        self.0[data.len()..data.len() + TAIL_PAD].fill(0);
        true
    }

    #[inline(always)]
    pub fn byte(&self, i: usize) -> u8 {
        // SAFETY: the index is masked below BUF_SIZE, inside the array.
        unsafe { *self.0.get_unchecked(i & BUF_MASK) }
    }

    /// The aligned word containing index `i` (little-endian: byte `i & 7` is bits `8*(i&7)..`).
    #[inline(always)]
    fn aligned_word(&self, i: usize) -> u64 {
        let j = i & BUF_MASK & !7;
        // SAFETY: j is 8-aligned (the array is, too) and j + 8 <= BUF_SIZE + 8.
        unsafe { core::ptr::read(self.0.as_ptr().add(j) as *const u64) }
    }

    /// The 8 bytes starting at `i` (any alignment) as a little-endian word.
    #[inline(always)]
    pub fn word_at(&self, i: usize) -> u64 {
        let lo = self.aligned_word(i);
        let hi = self.aligned_word(i + 8);
        let sh = ((i & 7) * 8) as u32;
        if sh == 0 { lo } else { (lo >> sh) | (hi << (64 - sh)) }
    }

    /// First index in `from..to` whose byte is one of `set`, using word-at-a-time compares.
    #[inline(always)]
    pub fn find_any<const N: usize>(&self, from: usize, to: usize, set: [u8; N]) -> Option<usize> {
        let mut w = from & !7;
        // Ignore the bytes of the first word that lie before `from`.
        let mut keep = u64::MAX << (((from & 7) * 8) as u32);
        let mut k = 0;
        while k < BUF_SIZE / 8 {
            if w >= to {
                return None;
            }
            let x = self.aligned_word(w);
            let mut hits = 0;
            let mut s = 0;
            while s < N {
                hits |= zero_bytes(x ^ (LO * set[s] as u64));
                s += 1;
            }
            hits &= keep;
            if hits != 0 {
                let at = w + (hits.trailing_zeros() / 8) as usize;
                return if at < to { Some(at) } else { None };
            }
            keep = u64::MAX;
            w += 8;
            k += 1;
        }
        None
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// High bit set in exactly the bytes of `v` that are zero (no false positives, unlike the
/// shorter `(v - LO) & !v & HI` form, because the first word of a search is partly masked).
#[inline(always)]
const fn zero_bytes(v: u64) -> u64 {
    !(((v & HI7).wrapping_add(HI7)) | v | HI7)
}

/// ASCII-lowercases every byte of `x` that is `A..=Z`.
#[inline(always)]
pub const fn lower8(x: u64) -> u64 {
    let h = x & HI7;
    let ge_a = h.wrapping_add(LO * (0x80 - b'A' as u64));
    let gt_z = h.wrapping_add(LO * (0x80 - b'Z' as u64 - 1));
    let upper = ge_a & !gt_z & !x & !HI7;
    x | (upper >> 2)
}

/// Keeps the low `n` bytes of `x` (n in 0..=8).
#[inline(always)]
pub const fn low_bytes(x: u64, n: usize) -> u64 {
    if n >= 8 { x } else { x & ((1u64 << (n * 8)) - 1) }
}

/// A span of the original message to replace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub start: u16,
    pub end: u16,
    /// [`EDIT_URI`] or [`EDIT_DELETE`].
    pub kind: u16,
    pub _pad: u16,
}

/// The span becomes `<NEW-URI>`.
pub const EDIT_URI: u16 = 1;
/// The span is removed.
pub const EDIT_DELETE: u16 = 0;

/// Why a message is (not) rewritten. `Rewrite` is the only one that changes the packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Rewrite = 0,
    NotRegister = 1,
    Malformed = 2,
    DnMissing = 3,
    DnInvalid = 4,
    Star = 5,
    NoContact = 6,
    TooComplex = 7,
}

impl Outcome {
    pub const fn from_u32(v: u32) -> Self {
        match v {
            0 => Outcome::Rewrite,
            1 => Outcome::NotRegister,
            3 => Outcome::DnMissing,
            4 => Outcome::DnInvalid,
            5 => Outcome::Star,
            6 => Outcome::NoContact,
            7 => Outcome::TooComplex,
            _ => Outcome::Malformed,
        }
    }
}

// Scan modes.
const M_START: u32 = 0;
const M_LINE: u32 = 1;
const M_TO: u32 = 2;
const M_CONTACT: u32 = 3;
const M_PARAMS: u32 = 4;
const M_DONE: u32 = 5;

const SEEN_TO: u32 = 1;

/// Scan state; lives in a map value in the kernel, so it is plain `repr(C)` integers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Scan {
    /// Message length.
    pub len: u32,
    pub pos: u32,
    pub mode: u32,
    /// An [`Outcome`], valid once done.
    pub outcome: u32,
    pub dn_start: u32,
    pub dn_len: u32,
    pub n_edits: u32,
    /// Number of `EDIT_URI` edits (contacts rewritten).
    pub n_contacts: u32,
    pub flags: u32,
    /// Start of the body (after the empty line), valid once done with `Rewrite`.
    pub body: u32,
    pub edits: [Edit; MAX_EDITS],
}

impl Scan {
    pub const fn new(len: usize) -> Self {
        Scan {
            len: len as u32,
            pos: 0,
            mode: M_START,
            outcome: Outcome::Malformed as u32,
            dn_start: 0,
            dn_len: 0,
            n_edits: 0,
            n_contacts: 0,
            flags: 0,
            body: 0,
            edits: [Edit { start: 0, end: 0, kind: 0, _pad: 0 }; MAX_EDITS],
        }
    }

    pub fn outcome(&self) -> Outcome {
        Outcome::from_u32(self.outcome)
    }

    pub fn edits(&self) -> &[Edit] {
        &self.edits[..(self.n_edits as usize).min(MAX_EDITS)]
    }

    #[inline(always)]
    fn done(&mut self, o: Outcome) -> bool {
        self.outcome = o as u32;
        self.mode = M_DONE;
        false
    }

    /// Appends an edit, merging a deletion into an edit that ends where it starts.
    #[inline(always)]
    fn push(&mut self, start: usize, end: usize, kind: u16) -> bool {
        let n = self.n_edits as usize;
        if kind == EDIT_DELETE && n > 0 {
            let last = &mut self.edits[(n - 1) & (MAX_EDITS - 1)];
            if last.end as usize == start {
                last.end = end as u16;
                return true;
            }
        }
        if n >= MAX_EDITS {
            return false;
        }
        self.edits[n & (MAX_EDITS - 1)] = Edit { start: start as u16, end: end as u16, kind, _pad: 0 };
        self.n_edits = n as u32 + 1;
        if kind == EDIT_URI {
            self.n_contacts += 1;
        }
        true
    }
}

const fn word(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

#[inline(always)]
fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Skips linear white space: SP/HT and line folds (CRLF followed by SP/HT).
#[inline(always)]
fn skip_lws(m: &Msg, mut p: usize) -> usize {
    let mut k = 0;
    while k < 32 {
        let c = m.byte(p);
        if is_wsp(c) {
            p += 1;
        } else if c == b'\r' && m.byte(p + 1) == b'\n' && is_wsp(m.byte(p + 2)) {
            p += 3;
        } else {
            break;
        }
        k += 1;
    }
    p
}

/// `p` is at an opening `"`; returns the index after the closing one.
#[inline(always)]
fn skip_quoted(m: &Msg, len: usize, p: usize) -> Option<usize> {
    let mut from = p + 1;
    let mut k = 0;
    while k < 16 {
        let x = m.find_any(from, len, [b'"', b'\\', b'\r'])?;
        match m.byte(x) {
            b'"' => return Some(x + 1),
            b'\\' => from = x + 2,
            _ => return None,
        }
        k += 1;
    }
    None
}

/// If a `sip:` or `sips:` scheme (any case) starts at `p`, the index after its colon.
#[inline(always)]
fn sip_scheme(m: &Msg, p: usize) -> Option<usize> {
    let w = lower8(m.word_at(p));
    if low_bytes(w, 4) == word(b"sip:\0\0\0\0") {
        Some(p + 4)
    } else if low_bytes(w, 5) == word(b"sips:\0\0\0") {
        Some(p + 5)
    } else {
        None
    }
}

/// RFC 3261 `user` characters other than `%`: unreserved / user-unreserved, as a bitmap.
const USER_CHARS: [u64; 2] = {
    let mut map = [0u64; 2];
    let extra = b"-_.!~*'()&=+$,;?/";
    let mut c = 0u8;
    while c < 128 {
        let mut ok = c.is_ascii_alphanumeric();
        let mut i = 0;
        while i < extra.len() {
            if extra[i] == c {
                ok = true;
            }
            i += 1;
        }
        if ok {
            map[(c >> 6) as usize] |= 1 << (c & 63);
        }
        c += 1;
    }
    map
};

#[inline(always)]
fn is_user_char(c: u8) -> bool {
    c < 128 && USER_CHARS[(c >> 6) as usize & 1] & (1 << (c & 63)) != 0
}

#[inline(always)]
fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// Checks `n` bytes at `s` form a valid RFC 3261 `user` (escapes `%XX` included).
#[inline(always)]
pub fn valid_user(m: &Msg, s: usize, n: usize) -> bool {
    if n == 0 || n > MAX_DN_LEN {
        return false;
    }
    let mut i = 0;
    while i < MAX_DN_LEN {
        if i >= n {
            return true;
        }
        let c = m.byte(s + i);
        if c == b'%' {
            if i + 2 >= n || !is_hex(m.byte(s + i + 1)) || !is_hex(m.byte(s + i + 2)) {
                return false;
            }
        } else if !is_user_char(c) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the parameter name at `s..s+n` is in the keep list (case-insensitive).
#[inline(always)]
fn keep_param(m: &Msg, s: usize, n: usize, cfg: &Config) -> bool {
    if cfg.flags & crate::CFG_KEEP_ALL != 0 {
        return true;
    }
    if n == 0 || n > KEEP_NAME_LEN {
        return false;
    }
    let a = lower8(low_bytes(m.word_at(s), n));
    let b = if n > 8 { lower8(low_bytes(m.word_at(s + 8), n - 8)) } else { 0 };
    let mut i = 0;
    while i < crate::MAX_KEEP {
        if i >= cfg.keep_count as usize {
            return false;
        }
        let k = cfg.keep[i];
        if k[0] == a && k[1] == b {
            return true;
        }
        i += 1;
    }
    false
}

/// One scan step. Returns `true` while there is more to do; afterwards `s.outcome` tells the
/// result and, for [`Outcome::Rewrite`], `s.edits()` the spans.
#[inline(always)]
pub fn step(s: &mut Scan, m: &Msg, cfg: &Config) -> bool {
    let len = (s.len as usize).min(MAX_SIP_LEN);
    let pos = s.pos as usize;
    match s.mode {
        M_START => start_line(s, m, len),
        M_LINE => header_line(s, m, len, pos),
        M_TO => to_value(s, m, len, pos),
        M_CONTACT => contact_element(s, m, len, pos),
        M_PARAMS => contact_params(s, m, len, pos, cfg),
        _ => false,
    }
}

/// `REGISTER <uri> SIP/2.0` CRLF.
#[inline(always)]
fn start_line(s: &mut Scan, m: &Msg, len: usize) -> bool {
    if len < 20 || m.word_at(0) != word(b"REGISTER") || m.byte(8) != b' ' {
        return s.done(Outcome::NotRegister);
    }
    let Some(nl) = m.find_any(9, len, [b'\n']) else {
        return s.done(Outcome::Malformed);
    };
    if nl < 19 || m.byte(nl - 1) != b'\r' || m.word_at(nl - 9) != word(b" SIP/2.0") {
        return s.done(Outcome::NotRegister);
    }
    s.pos = nl as u32 + 1;
    s.mode = M_LINE;
    true
}

/// At the start of a header line: the end of headers, a To or Contact header, or a line to skip.
#[inline(always)]
fn header_line(s: &mut Scan, m: &Msg, len: usize, pos: usize) -> bool {
    if pos + 2 > len {
        return s.done(Outcome::Malformed);
    }
    let w = lower8(m.word_at(pos));
    let c0 = w as u8;
    if c0 == b'\r' {
        if m.byte(pos + 1) != b'\n' {
            return s.done(Outcome::Malformed);
        }
        s.body = pos as u32 + 2;
        return finish(s);
    }
    // Header name length if it is one we parse (long or compact form).
    let (name_len, is_to) = if low_bytes(w, 2) == word(b"to\0\0\0\0\0\0") {
        (2, true)
    } else if c0 == b't' {
        (1, true)
    } else if low_bytes(w, 7) == word(b"contact\0") {
        (7, false)
    } else if c0 == b'm' {
        (1, false)
    } else {
        (0, false)
    };
    if name_len > 0 {
        // The name must be followed by optional SP/HT and the colon.
        let mut p = pos + name_len;
        let mut k = 0;
        while k < 8 && is_wsp(m.byte(p)) {
            p += 1;
            k += 1;
        }
        if m.byte(p) == b':' {
            s.pos = p as u32 + 1;
            if is_to {
                if s.flags & SEEN_TO != 0 {
                    return s.done(Outcome::Malformed);
                }
                s.mode = M_TO;
            } else {
                s.mode = M_CONTACT;
            }
            return true;
        }
    }
    // Any other header (or a continuation line of one): skip to the next line.
    skip_line(s, m, len, pos)
}

#[inline(always)]
fn skip_line(s: &mut Scan, m: &Msg, len: usize, pos: usize) -> bool {
    match m.find_any(pos, len, [b'\n']) {
        Some(nl) => {
            s.pos = nl as u32 + 1;
            s.mode = M_LINE;
            true
        }
        None => s.done(Outcome::Malformed),
    }
}

/// The To header value: finds and validates the user part of its URI.
#[inline(always)]
fn to_value(s: &mut Scan, m: &Msg, len: usize, pos: usize) -> bool {
    let p = skip_lws(m, pos);
    let (user, name_addr) = if let Some(u) = sip_scheme(m, p) {
        (u, false)
    } else {
        let lt = if m.byte(p) == b'"' {
            let Some(q) = skip_quoted(m, len, p) else {
                return s.done(Outcome::Malformed);
            };
            skip_lws(m, q)
        } else {
            match m.find_any(p, len, [b'<', b'\r', b'"', b',']) {
                Some(x) => x,
                None => return s.done(Outcome::Malformed),
            }
        };
        if m.byte(lt) != b'<' {
            return s.done(Outcome::Malformed);
        }
        match sip_scheme(m, lt + 1) {
            Some(u) => (u, true),
            // tel: and other schemes carry no SIP user part.
            None => return s.done(Outcome::DnMissing),
        }
    };
    // In name-addr form the user part may hold ';', '?' and ','; in addr-spec form they end
    // the URI.
    let end = if name_addr {
        m.find_any(user, len, [b'@', b'>', b'\r'])
    } else {
        m.find_any(user, len, [b'@', b'>', b'\r', b';', b'?', b',', b' '])
    };
    let Some(at) = end else {
        return s.done(Outcome::Malformed);
    };
    if m.byte(at) != b'@' || at == user {
        return s.done(Outcome::DnMissing);
    }
    let n = at - user;
    if !valid_user(m, user, n) {
        return s.done(Outcome::DnInvalid);
    }
    s.dn_start = user as u32;
    s.dn_len = n as u32;
    s.flags |= SEEN_TO;
    skip_line(s, m, len, at)
}

/// Start of one contact: `*`, a name-addr (with optional display name) or an addr-spec.
#[inline(always)]
fn contact_element(s: &mut Scan, m: &Msg, len: usize, pos: usize) -> bool {
    let p = skip_lws(m, pos);
    let c = m.byte(p);
    let lt = if c == b'*' {
        return s.done(Outcome::Star);
    } else if c == b'"' {
        match skip_quoted(m, len, p) {
            Some(q) => skip_lws(m, q),
            None => return s.done(Outcome::Malformed),
        }
    } else if c == b'<' {
        p
    } else {
        let Some(x) = m.find_any(p, len, [b'<', b':', b'\r', b',', b'"', b';']) else {
            return s.done(Outcome::Malformed);
        };
        if m.byte(x) == b':' && x > p {
            // addr-spec: the URI runs to the first separator; parameters after it are
            // header parameters.
            let Some(end) = m.find_any(p, len, [b';', b',', b' ', b'\t', b'\r']) else {
                return s.done(Outcome::Malformed);
            };
            return uri_span(s, p, end);
        }
        x
    };
    if m.byte(lt) != b'<' {
        return s.done(Outcome::Malformed);
    }
    match m.find_any(lt + 1, len, [b'>', b'\r']) {
        Some(gt) if m.byte(gt) == b'>' => uri_span(s, lt, gt + 1),
        _ => s.done(Outcome::Malformed),
    }
}

#[inline(always)]
fn uri_span(s: &mut Scan, start: usize, end: usize) -> bool {
    if !s.push(start, end, EDIT_URI) {
        return s.done(Outcome::TooComplex);
    }
    s.pos = end as u32;
    s.mode = M_PARAMS;
    true
}

/// After a contact's URI or one of its parameters: the next parameter, the next contact or the
/// end of the header.
#[inline(always)]
fn contact_params(s: &mut Scan, m: &Msg, len: usize, pos: usize, cfg: &Config) -> bool {
    let p = skip_lws(m, pos);
    match m.byte(p) {
        b';' => {
            let name = skip_lws(m, p + 1);
            let Some(name_end) = m.find_any(name, len, [b'=', b';', b',', b' ', b'\t', b'\r']) else {
                return s.done(Outcome::Malformed);
            };
            if name_end == name {
                return s.done(Outcome::Malformed);
            }
            let mut end = name_end;
            let eq = skip_lws(m, name_end);
            if m.byte(eq) == b'=' {
                let v = skip_lws(m, eq + 1);
                end = if m.byte(v) == b'"' {
                    match skip_quoted(m, len, v) {
                        Some(e) => e,
                        None => return s.done(Outcome::Malformed),
                    }
                } else {
                    match m.find_any(v, len, [b';', b',', b' ', b'\t', b'\r']) {
                        Some(e) if e > v => e,
                        _ => return s.done(Outcome::Malformed),
                    }
                };
            }
            if !keep_param(m, name, name_end - name, cfg) && !s.push(pos, end, EDIT_DELETE) {
                return s.done(Outcome::TooComplex);
            }
            s.pos = end as u32;
            true
        }
        b',' => {
            s.pos = p as u32 + 1;
            s.mode = M_CONTACT;
            true
        }
        b'\r' if m.byte(p + 1) == b'\n' => {
            s.pos = p as u32 + 2;
            s.mode = M_LINE;
            true
        }
        _ => s.done(Outcome::Malformed),
    }
}

#[inline(always)]
fn finish(s: &mut Scan) -> bool {
    if s.flags & SEEN_TO == 0 {
        s.done(Outcome::DnMissing)
    } else if s.n_contacts == 0 {
        s.done(Outcome::NoContact)
    } else {
        s.done(Outcome::Rewrite)
    }
}

/// Runs the scan to completion (userspace driver; the kernel uses `bpf_loop`).
pub fn scan(m: &Msg, len: usize, cfg: &Config) -> Scan {
    let mut s = Scan::new(len);
    if len > MAX_SIP_LEN {
        s.done(Outcome::TooComplex);
        return s;
    }
    let mut k = 0;
    while k < MAX_STEPS && step(&mut s, m, cfg) {
        k += 1;
    }
    if s.mode != M_DONE {
        s.done(Outcome::TooComplex);
    }
    s
}

/// Length of the message once `scan`'s edits are applied with a new URI of `uri_len` bytes
/// (brackets included).
pub fn new_len(s: &Scan, uri_len: usize) -> usize {
    let mut n = s.len as usize;
    for e in s.edits() {
        n -= (e.end - e.start) as usize;
        if e.kind == EDIT_URI {
            n += uri_len;
        }
    }
    n
}

/// Applies the edits of a `Rewrite` scan: `uri` pieces (concatenated) replace each URI span.
/// Writes into `out`, returns the new length, or `None` if `out` is too small.
pub fn apply(m: &[u8], s: &Scan, uri: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let mut o = 0;
    let mut put = |bytes: &[u8], o: &mut usize| -> Option<()> {
        out.get_mut(*o..*o + bytes.len())?.copy_from_slice(bytes);
        *o += bytes.len();
        Some(())
    };
    let mut from = 0;
    for e in s.edits() {
        put(m.get(from..e.start as usize)?, &mut o)?;
        if e.kind == EDIT_URI {
            for piece in uri {
                put(piece, &mut o)?;
            }
        }
        from = e.end as usize;
    }
    put(m.get(from..s.len as usize)?, &mut o)?;
    Some(o)
}

/// What the rewrite did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `len` bytes written to the output, `contacts` URIs replaced.
    Rewritten { len: usize, contacts: u32 },
    /// Left as it came, counted under this counter.
    Pass(crate::Stat),
}

/// The whole userspace rewrite, same algorithm as the kernel: scan, resolve the DN (`lookup`,
/// then the default template), apply. `out` receives the new message when rewritten.
pub fn rewrite(
    input: &[u8],
    cfg: &Config,
    lookup: impl Fn(&[u8]) -> Option<crate::ContactUri>,
    out: &mut [u8],
) -> Decision {
    use crate::Stat;
    let mut m = Msg::zeroed();
    if !m.load(input) {
        return Decision::Pass(Stat::TooBig);
    }
    let s = scan(&m, input.len(), cfg);
    if s.outcome() != Outcome::Rewrite {
        return Decision::Pass(Stat::for_outcome(s.outcome()));
    }
    let dn = &input[s.dn_start as usize..(s.dn_start + s.dn_len) as usize];
    let value;
    let pieces: [&[u8]; 3] = if let Some(v) = lookup(dn) {
        value = v;
        [value.bracketed(), &[], &[]]
    } else if let Some((pre, post)) = cfg.template() {
        [pre, dn, post]
    } else {
        return Decision::Pass(Stat::DnUnknown);
    };
    let uri_len = pieces.iter().map(|p| p.len()).sum();
    if new_len(&s, uri_len) > MAX_SIP_LEN {
        return Decision::Pass(Stat::TooBig);
    }
    match apply(input, &s, &pieces, out) {
        Some(len) => Decision::Rewritten { len, contacts: s.n_contacts },
        None => Decision::Pass(Stat::TooBig),
    }
}
