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
/// The shortest message either side looks at: the shortest request line the scan takes,
/// `REGISTER x SIP/2.0`, and its CRLF.
pub const MIN_SIP_LEN: usize = SHORTEST_REQUEST_LINE.len() + 2;
/// See [`MIN_SIP_LEN`].
const SHORTEST_REQUEST_LINE: &[u8] = b"REGISTER x SIP/2.0";
/// The shortest status line of a 2xx: `SIP/2.0 2xx ` (the reason phrase may be empty).
const SHORTEST_STATUS_LINE: &[u8] = b"SIP/2.0 200 ";
/// Most spans one message may need (URI replacements and parameter deletions, merged when
/// adjacent); more means "too complex" and the packet passes.
pub const MAX_EDITS: usize = 16;
/// Most scan steps for one message (a step handles a header line or a Contact element, or
/// is the search one of those asked for).
pub const MAX_STEPS: u32 = 384;
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
        // Without a branch on `sh == 0` (`hi << 64` is not 0 in Rust, nor in BPF): each
        // branch here would fork the verifier's states at every unaligned read.
        (lo >> sh) | ((hi << 1) << (63 - sh))
    }

    /// First index in `from..to` holding `c`, a word at a time.
    #[inline(always)]
    pub fn find_byte(&self, from: usize, to: usize, c: u8) -> Option<usize> {
        let pat = LO * c as u64;
        self.find_words(from, to, |x| first_zero_bytes(x ^ pat))
    }

    /// First index in `from..to` holding one of the bytes of a set, given as its [`set_row`].
    #[inline(always)]
    fn find_set(&self, from: usize, to: usize, row: &[u64; MAX_SET]) -> Option<usize> {
        self.find_words(from, to, |x| {
            let mut hits = 0;
            let mut lane = 0;
            while lane < MAX_SET {
                hits |= first_zero_bytes(x ^ row[lane]);
                lane += 1;
            }
            hits
        })
    }

    /// Runs `hits` over the aligned words covering `from..to`; returns the first match. `hits`
    /// must flag (high bit) the first byte of a word that matches, and may flag any byte after
    /// it ([`first_zero_bytes`]): only the lowest flag is used. The bytes of the first word
    /// before `from` are read as 0xff, which matches no ASCII delimiter and sets no flag above
    /// it.
    #[inline(always)]
    fn find_words(&self, from: usize, to: usize, hits: impl Fn(u64) -> u64) -> Option<usize> {
        let mut w = from & !7;
        let mut before = !(u64::MAX << (((from & 7) * 8) as u32));
        let mut k = 0;
        while k < MAX_WORDS {
            if w >= to {
                return None;
            }
            let h = hits(self.aligned_word(w) | before) & HI;
            if h != 0 {
                let at = w + first_flagged_byte(h);
                return if at < to { Some(at) } else { None };
            }
            before = 0;
            w += 8;
            k += 1;
        }
        None
    }
}

/// Words covering the longest message (plus one for an unaligned start).
const MAX_WORDS: usize = MAX_SIP_LEN / 8 + 2;

pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
const HI7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

const HI: u64 = LO << 7;

/// High bit set in exactly the bytes of `v` that are zero.
#[inline(always)]
pub(crate) const fn zero_bytes(v: u64) -> u64 {
    !(((v & HI7).wrapping_add(HI7)) | v | HI7)
}

/// High bit set (after `& HI`) in the lowest zero byte of `v`, and perhaps in bytes above it
/// (a borrow out of a zero byte may flag the next one), never below it: the classic
/// "has a zero byte" test, three operations per word for [`Msg::find_words`].
#[inline(always)]
const fn first_zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v
}

/// Index (0..8) of the lowest byte whose high bit is set in `h` (`h` != 0, high bits only):
/// the lowest set bit, `1 << (8k + 7)`, shifted to `1 << 8k`, times a constant whose byte
/// `7 - k` is `k`, leaves `k` in the top byte. No `cttz` (which the BPF target turns into a
/// table lookup in memory).
#[inline(always)]
const fn first_flagged_byte(h: u64) -> usize {
    (((h & h.wrapping_neg()) >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
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
    if n >= 8 {
        x
    } else {
        x & ((1u64 << (n * 8)) - 1)
    }
}

/// A span of the original message to replace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub start: u16,
    pub end: u16,
    /// [`EDIT_URI`] or [`EDIT_DELETE`].
    pub kind: u16,
    /// Requests: end of the URI itself (`end` grows when the deletion of the parameters after
    /// it is merged into this edit). Responses: end of the contact's header parameters (the
    /// element without trailing white space).
    pub pend: u16,
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

// Scan modes. A mode that needs a search stores it in the state and names the mode that
// consumes its result; the next step runs the search first (one call site for the verifier).
const M_START: u32 = 0;
const M_START_NL: u32 = 1;
const M_LINE: u32 = 2;
const M_SKIPPED: u32 = 3;
const M_TO: u32 = 4;
const M_TO_LT: u32 = 5;
const M_TO_QUOTED: u32 = 6;
const M_TO_USER: u32 = 7;
const M_ELEM: u32 = 8;
const M_ELEM_QUOTED: u32 = 9;
const M_ELEM_TOKEN: u32 = 10;
const M_ELEM_GT: u32 = 11;
const M_ELEM_ADDR: u32 = 12;
const M_PARAMS: u32 = 13;
const M_PARAM_NAME: u32 = 14;
const M_PARAM_VALUE: u32 = 15;
const M_PARAM_QUOTED: u32 = 16;
const M_QUOTE_HIT: u32 = 17;
const M_DONE: u32 = 18;
const M_CALLID: u32 = 19;
const M_CALLID_END: u32 = 20;
const M_CSEQ: u32 = 21;
const M_CSEQ_NUM: u32 = 22;
const M_EXPIRES: u32 = 23;
const M_EXPIRES_END: u32 = 24;

const SEEN_TO: u32 = 1;
/// The To URI is a bare addr-spec (its user part ends at `;`, `?`, `,`).
const TO_ADDR_SPEC: u32 = 2;
/// The parameter being parsed is in the keep list.
const KEEP_PARAM: u32 = 4;
const SEEN_CALLID: u32 = 16;
/// A response's CSeq method is REGISTER.
const CSEQ_REGISTER: u32 = 32;
/// Requests: the parameter being parsed is `expires`.
const EXPIRES_PARAM: u32 = 64;
/// Requests: the `Expires` header's value is 0.
const EXPIRES_HDR_ZERO: u32 = 128;
/// `Scan::flags`: the DN holds `%XX` escapes; it is compared and written decoded
/// ([`decode_dn_step`]).
pub const DN_ESCAPED: u32 = 256;

const SEARCH_NONE: u32 = 0;
const SEARCH_ONE: u32 = 1;
const SEARCH_SET: u32 = 2;
/// Most bytes a search set holds (the largest, [`SET_TO_USER_ADDR_SPEC`], has 7): one
/// compare per byte and word. (Searches of up to 3 bytes in a variant of their own were 5 %
/// faster in the scan and cost v6.1's verifier 40 k more processed insns: not worth it.)
const MAX_SET: usize = 7;
/// `Scan::hit` when the search found nothing before the end of the message.
const NOT_FOUND: u32 = u32::MAX;

/// The delimiters of a search (at most [`MAX_SET`] bytes). `id` is its row in
/// [`SEARCH_SETS`], which the search step reads; [`SearchSet::in_first_word`] compares the
/// bytes themselves (constants where it is inlined).
struct SearchSet<const N: usize> {
    id: usize,
    bytes: [u8; N],
}

impl<const N: usize> SearchSet<N> {
    const fn new(id: usize, bytes: &[u8; N]) -> Self {
        Self { id, bytes: *bytes }
    }

    /// The first index in `from..from + 8` (and before `len`) holding one of the bytes, or
    /// `None` if there is none that close: the answer of a search whose match is near,
    /// without the search step.
    #[inline(always)]
    fn in_first_word(&self, m: &Msg, from: usize, len: usize) -> Option<usize> {
        let x = m.word_at(from);
        let mut hits = 0;
        let mut lane = 0;
        while lane < N {
            hits |= first_zero_bytes(x ^ (LO * self.bytes[lane] as u64));
            lane += 1;
        }
        let hits = hits & HI;
        if hits == 0 {
            return None;
        }
        let at = from + first_flagged_byte(hits);
        if at < len { Some(at) } else { None }
    }
}

/// The patterns [`Msg::find_set`] compares a word with: one per byte of `bytes`, that byte
/// in every lane; lanes past the set's bytes repeat its first.
const fn set_row(bytes: &[u8]) -> [u64; MAX_SET] {
    assert!(!bytes.is_empty() && bytes.len() <= MAX_SET);
    let mut row = [LO * bytes[0] as u64; MAX_SET];
    let mut i = 0;
    while i < bytes.len() {
        row[i] = LO * bytes[i] as u64;
        i += 1;
    }
    row
}

const SET_QUOTED: SearchSet<3> = SearchSet::new(0, b"\"\\\r");
const SET_TO_NAME_ADDR: SearchSet<4> = SearchSet::new(1, b"<\r\",");
const SET_TO_USER_NAME_ADDR: SearchSet<3> = SearchSet::new(2, b"@>\r");
const SET_TO_USER_ADDR_SPEC: SearchSet<7> = SearchSet::new(3, b"@>\r;?, ");
const SET_ELEM_TOKEN: SearchSet<6> = SearchSet::new(4, b"<:\r,\";");
const SET_GT: SearchSet<2> = SearchSet::new(5, b">\r");
const SET_ADDR_END: SearchSet<5> = SearchSet::new(6, b";, \t\r");
const SET_PARAM_NAME: SearchSet<6> = SearchSet::new(7, b"=;, \t\r");
const SET_PARAM_VALUE: SearchSet<5> = SearchSet::new(8, b";, \t\r");
const SET_TOKEN_END: SearchSet<3> = SearchSet::new(9, b" \t\r");

/// Rows of [`SEARCH_SETS`] (a power of two: ids are masked with `SEARCH_SETS_LEN - 1`).
const SEARCH_SETS_LEN: usize = 16;

/// Every search set's [`set_row`], at its id: the search step reads the patterns here rather
/// than computing them from the set's bytes (seven multiplications a search).
static SEARCH_SETS: [[u64; MAX_SET]; SEARCH_SETS_LEN] = {
    const fn put<const N: usize>(t: &mut [[u64; MAX_SET]; SEARCH_SETS_LEN], s: &SearchSet<N>) {
        // Each row once (patterns of ASCII bytes are never 0).
        assert!(t[s.id][0] == 0);
        t[s.id] = set_row(&s.bytes);
    }
    let mut t = [[0; MAX_SET]; SEARCH_SETS_LEN];
    put(&mut t, &SET_QUOTED);
    put(&mut t, &SET_TO_NAME_ADDR);
    put(&mut t, &SET_TO_USER_NAME_ADDR);
    put(&mut t, &SET_TO_USER_ADDR_SPEC);
    put(&mut t, &SET_ELEM_TOKEN);
    put(&mut t, &SET_GT);
    put(&mut t, &SET_ADDR_END);
    put(&mut t, &SET_PARAM_NAME);
    put(&mut t, &SET_PARAM_VALUE);
    put(&mut t, &SET_TOKEN_END);
    t
};

/// Where a request's contact element is, for dropping it (see [`drop_plan`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elem {
    /// First byte of the element (display name or URI), after the white space.
    pub start: u16,
    /// Where it ends: its `,` or the CRLF of its header, white space before them excluded.
    pub end: u16,
    /// Start of its header line.
    pub line: u16,
    /// The line after its header if it is the last element there, else 0.
    pub line_next: u16,
    /// Number of its header line among the Contact headers.
    pub ln: u16,
    pub _pad: [u16; 3],
}

/// Scan state; lives in a map value in the kernel, so it is plain `repr(C)` integers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Scan {
    /// Message length.
    pub len: u32,
    /// Current position (or where the pending search starts).
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
    /// Pending search: `SEARCH_*`.
    pub search: u32,
    /// Result of the last search, or `NOT_FOUND`.
    pub hit: u32,
    /// Mode to return to after a quoted string.
    pub ret: u32,
    /// Positions remembered between steps (element/parameter start, name start).
    pub mark: u32,
    pub mark2: u32,
    /// See [`Scan::launder`].
    pub tmp: u32,
    /// Bytes covered by all edits together.
    pub removed: u32,
    /// The Call-ID value (`callid_len` 0: none seen).
    pub callid_start: u32,
    pub callid_len: u32,
    /// Requests: start of the current Contact header line, and how many Contact lines so far.
    pub line_start: u32,
    pub n_lines: u32,
    /// Requests: bit k set if contact k has an `expires` parameter, and if it is 0.
    pub has_expires: u32,
    pub zero_expires: u32,
    pub _pad: u32,
    /// What the pending search looks for: the byte (`SEARCH_ONE`), or the row of its set in
    /// `SEARCH_SETS` (`SEARCH_SET`).
    pub want: u64,
    pub edits: [Edit; MAX_EDITS],
    /// Requests: the contact elements, one per `EDIT_URI` edit.
    pub elems: [Elem; MAX_EDITS],
    /// The drop pass ([`drop_plan`]): which contacts go (bit k), the Contact lines that keep
    /// one (bit per line), the line after each line.
    pub drop: u32,
    pub lines_kept: u32,
    pub lines_next: [u16; MAX_EDITS],
    /// Drop pass progress: edits written, contact of the edit at hand, whether the line at
    /// hand kept a contact before it.
    pub d_out: u32,
    pub d_elem: u32,
    pub d_kept_on_line: u32,
    pub d_line: u32,
    /// Where the first URI written starts in the message, and the bytes the edits before it
    /// remove (only a drop pass puts edits before it): the URI starts at
    /// `first_uri - first_uri_shift` in the new message.
    pub first_uri: u32,
    pub first_uri_shift: u32,
}

impl Scan {
    pub fn new(len: usize) -> Self {
        // SAFETY: `Scan` is `repr(C)` and made of integers only: all zeroes is a valid value.
        let mut s: Scan = unsafe { core::mem::zeroed() };
        s.reset(len);
        s
    }

    /// Sets the state for a new message of `len` bytes. The edit array is not rewritten
    /// (`n_edits` bounds it): cheaper in the kernel, where the state lives in a map value.
    #[inline(always)]
    pub fn reset(&mut self, len: usize) {
        // Volatile stores: LLVM would merge plain ones into a `memset` call, which the BPF
        // target compiles to a byte loop.
        macro_rules! set {
            ($($field:ident = $v:expr),* $(,)?) => {
                // SAFETY: plain fields behind `&mut self`.
                $(unsafe { core::ptr::write_volatile(&mut self.$field, $v) };)*
            };
        }
        set!(
            len = len as u32,
            pos = 0,
            mode = M_START,
            outcome = Outcome::Malformed as u32,
            dn_start = 0,
            dn_len = 0,
            n_edits = 0,
            n_contacts = 0,
            flags = 0,
            body = 0,
            search = SEARCH_NONE,
            hit = NOT_FOUND,
            removed = 0,
            callid_start = 0,
            callid_len = 0,
            line_start = 0,
            n_lines = 0,
            has_expires = 0,
            zero_expires = 0,
            drop = 0,
        );
    }

    pub fn outcome(&self) -> Outcome {
        Outcome::from_u32(self.outcome)
    }

    pub fn edits(&self) -> &[Edit] {
        &self.edits[..(self.n_edits as usize).min(MAX_EDITS)]
    }

    /// Returns `v` after a round trip through memory the verifier does not track (the scan
    /// state is a map value in the kernel). Paths that reach the same point with different
    /// positions then converge into one verifier state instead of multiplying.
    #[inline(always)]
    fn launder(&mut self, v: usize) -> usize {
        // SAFETY: `self.tmp` is a valid, aligned field behind `&mut self`.
        unsafe {
            core::ptr::write_volatile(&mut self.tmp, v as u32);
            core::ptr::read_volatile(&self.tmp) as usize
        }
    }

    #[inline(always)]
    fn done(&mut self, o: Outcome) -> bool {
        self.outcome = o as u32;
        self.mode = M_DONE;
        false
    }

    /// Asks for the first byte of `want` at or after `from`; `then` consumes `hit`.
    #[inline(always)]
    fn find<const N: usize>(&mut self, from: usize, want: &SearchSet<N>, then: u32) -> bool {
        self.pos = from as u32;
        self.want = want.id as u64;
        self.search = SEARCH_SET;
        self.mode = then;
        true
    }

    /// [`Scan::find`] of a match that is often among the 8 bytes at `from`: looked for there
    /// at once, so that the search step runs only when it is farther.
    #[inline(always)]
    fn find_near<const N: usize>(
        &mut self,
        m: &Msg,
        from: usize,
        want: &SearchSet<N>,
        then: u32,
    ) -> bool {
        let len = (self.len as usize).min(MAX_SIP_LEN);
        match want.in_first_word(m, from, len) {
            Some(at) => {
                self.pos = from as u32;
                self.hit = at as u32;
                self.mode = then;
                true
            }
            None => self.find(from, want, then),
        }
    }

    /// Asks for the next line feed at or after `from`; `M_SKIPPED` consumes it.
    #[inline(always)]
    fn skip_line(&mut self, from: usize) -> bool {
        self.pos = from as u32;
        self.want = b'\n' as u64;
        self.search = SEARCH_ONE;
        self.mode = M_SKIPPED;
        true
    }

    /// Scans the quoted string opening at `p`, then continues in `ret` at the index after it.
    #[inline(always)]
    fn quoted(&mut self, p: usize, ret: u32) -> bool {
        self.ret = ret;
        self.find(p + 1, &SET_QUOTED, M_QUOTE_HIT)
    }

    #[inline(always)]
    fn goto(&mut self, pos: usize, mode: u32) -> bool {
        self.pos = pos as u32;
        self.mode = mode;
        true
    }

    /// The contact element whose URI is the last edit ends at `at` (`line_next`: the next line
    /// when it ends its header, else 0). Responses keep it in the edit, requests in `elems`.
    #[inline(always)]
    fn end_element<const RESP: bool>(&mut self, at: usize, line_next: usize) {
        let n = self.n_edits as usize;
        if RESP && n > 0 {
            self.edits[(n - 1) & (MAX_EDITS - 1)].pend = at as u16;
        }
        if !RESP {
            let k = (self.n_contacts as usize).wrapping_sub(1) & (MAX_EDITS - 1);
            self.elems[k].end = at as u16;
            self.elems[k].line_next = line_next as u16;
        }
    }

    /// Drop pass: writes output edit `d_out` (a deletion adjoining the previous one joins it).
    #[inline(always)]
    fn out_edit(&mut self, e: Edit) {
        let o = self.d_out as usize;
        if e.kind == EDIT_URI && self.first_uri == u32::MAX {
            self.first_uri = e.start as u32;
            self.first_uri_shift = self.removed;
        }
        self.removed += e.end.wrapping_sub(e.start) as u32;
        if e.kind == EDIT_DELETE && o > 0 {
            let last = &mut self.edits[(o - 1) & (MAX_EDITS - 1)];
            if last.end == e.start {
                last.end = e.end;
                return;
            }
        }
        self.edits[o & (MAX_EDITS - 1)] = e;
        self.d_out = o as u32 + 1;
    }

    /// The bit of the contact being parsed (requests: its URI edit is pushed).
    #[inline(always)]
    fn contact_bit(&self) -> u32 {
        1 << ((self.n_contacts.wrapping_sub(1)) & (MAX_EDITS as u32 - 1))
    }

    /// Appends an edit, merging a deletion into an edit that ends where it starts.
    #[inline(always)]
    fn push(&mut self, start: usize, end: usize, kind: u16) -> bool {
        let n = self.n_edits as usize;
        if kind == EDIT_DELETE && n > 0 {
            let last = &mut self.edits[(n - 1) & (MAX_EDITS - 1)];
            if last.end as usize == start {
                last.end = end as u16;
                self.removed += (end - start) as u32;
                return true;
            }
        }
        if n >= MAX_EDITS {
            return false;
        }
        if kind == EDIT_URI && self.n_contacts == 0 {
            self.first_uri = start as u32;
            self.first_uri_shift = self.removed;
        }
        self.edits[n & (MAX_EDITS - 1)] = Edit {
            start: start as u16,
            end: end as u16,
            kind,
            pend: end as u16,
        };
        self.n_edits = n as u32 + 1;
        self.removed += (end - start) as u32;
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

/// [`skip_wsp`] tests this many bytes one by one, then this many words: it skips at most
/// `WSP_BYTES + 8 * WSP_WORDS` (34) bytes.
const WSP_BYTES: usize = 2;
const WSP_WORDS: usize = 4;

/// Skips SP/HT (at most 34 bytes): two byte tests, then a word at a time. (The 32 byte tests
/// of before, unrolled by LLVM, made 1.4 KB of code per call site, a dozen of them: step_cb's
/// JIT image shrank from 77 to 46 KB and v6.18's verifier processed 12 % fewer insns.) Bytes
/// past the first one that is not white space are read but do not matter.
#[inline(always)]
fn skip_wsp(m: &Msg, mut p: usize) -> usize {
    // Headers mostly have no white space or one SP here: bytes first, words for the rest.
    let mut k = 0;
    while k < WSP_BYTES {
        if !is_wsp(m.byte(p)) {
            return p;
        }
        p += 1;
        k += 1;
    }
    let mut k = 0;
    while k < WSP_WORDS {
        let at = p + 8 * k;
        let w = m.word_at(at);
        let other =
            !(zero_bytes(w ^ (LO * b' ' as u64)) | zero_bytes(w ^ (LO * b'\t' as u64))) & HI;
        if other != 0 {
            return at + first_flagged_byte(other);
        }
        k += 1;
    }
    p + 8 * WSP_WORDS
}

/// Skips linear white space (RFC 3261 LWS: `[*WSP CRLF] 1*WSP`, so at most one fold).
/// The result goes through [`Scan::launder`] so the verifier sees one state, not one per
/// possible amount of white space.
#[inline(always)]
fn skip_lws(s: &mut Scan, m: &Msg, p: usize) -> usize {
    let mut p = s.launder(skip_wsp(m, p));
    if m.byte(p) == b'\r' && m.byte(p + 1) == b'\n' && is_wsp(m.byte(p + 2)) {
        p = skip_wsp(m, p + 2);
    }
    s.launder(p)
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

/// Whether `c` is an RFC 3261 `user` character other than `%` (unreserved / user-unreserved);
/// the kernel's DN check and the CLI's share it.
#[inline(always)]
pub const fn is_user_char(c: u8) -> bool {
    c < 128 && USER_CHARS[(c >> 6) as usize & 1] & (1 << (c & 63)) != 0
}

/// Whether `c` is an RFC 3261 `token` character (alphanumerics, `-.!%*_+'~` and the backtick):
/// what the CLI accepts in a keep-list name. The kernel does not check names, it compares them.
pub const fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
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

/// [`is_user_char`] by compares instead of the bitmap: for a computed byte, whose index into
/// the bitmap the verifier could not bound (LLVM drops the mask the `< 128` test makes
/// redundant, and the verifier learns that bound on another register).
#[inline(always)]
const fn user_char_by_compare(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b';'
                | b'?'
                | b'/'
        )
}

/// The value of an ASCII hex digit (callers checked it is one).
#[inline(always)]
const fn hex_value(c: u8) -> u8 {
    (c & 0x0f) + if c > b'9' { 9 } else { 0 }
}

/// One step of percent-decoding the DN `m[start..start + len]` (a [`valid_user`], so every
/// `%` starts a well-formed escape) into `out`: the character at `*rd` (one byte or one
/// `%XX`) goes to `out[*wr]`. RFC 3261 19.1.4: a user part compares equal to its unescaped
/// form, so `%31002` is DN `1002`. `Some(true)`: go on; `Some(false)`: done; `None`: the
/// decoded character is not one a user part holds unescaped (`%0d`, `%40`, `%25`, ...), and
/// the DN is not used. One character per step: the kernel runs it from a `bpf_loop`.
#[inline(always)]
pub fn decode_dn_step(
    m: &Msg,
    start: usize,
    len: usize,
    rd: &mut u32,
    wr: &mut u32,
    out: &mut [u8; MAX_DN_LEN],
) -> Option<bool> {
    let r = *rd as usize;
    let w = *wr as usize;
    if r >= len.min(MAX_DN_LEN) || w >= MAX_DN_LEN {
        return Some(false);
    }
    let c = m.byte(start + r);
    let (b, step) = if c == b'%' {
        (
            (hex_value(m.byte(start + r + 1)) << 4) | hex_value(m.byte(start + r + 2)),
            3,
        )
    } else {
        (c, 1)
    };
    if !user_char_by_compare(b) {
        return None;
    }
    out[w & (MAX_DN_LEN - 1)] = b;
    *wr = w as u32 + 1;
    *rd = (r + step) as u32;
    Some(true)
}

/// The decoded DN of a scan with [`DN_ESCAPED`] (userspace driver of [`decode_dn_step`]):
/// the bytes and their number, or `None` if it decodes to something no user part holds.
pub fn decode_dn(m: &Msg, s: &Scan) -> Option<([u8; MAX_DN_LEN], usize)> {
    let (mut rd, mut wr, mut out) = (0, 0, [0u8; MAX_DN_LEN]);
    let mut k = 0;
    while k < MAX_DN_LEN {
        if !decode_dn_step(
            m,
            s.dn_start as usize,
            s.dn_len as usize,
            &mut rd,
            &mut wr,
            &mut out,
        )? {
            break;
        }
        k += 1;
    }
    Some((out, wr as usize))
}

/// Whether the parameter name at `s..s+n` is in the keep list (case-insensitive).
/// The `expires` parameter's name (RFC 3261 20.10).
const EXPIRES: &[u8] = b"expires";

/// Whether the `n` bytes at `s` are a delta-seconds of 0: one to eight `0` digits.
#[inline(always)]
fn is_zero(m: &Msg, s: usize, n: usize) -> bool {
    (1..=8).contains(&n) && low_bytes(m.word_at(s), n) == low_bytes(word(b"00000000"), n)
}

#[inline(always)]
fn keep_param(m: &Msg, s: usize, n: usize, cfg: &Config) -> bool {
    if cfg.flags & crate::CFG_KEEP_ALL != 0 {
        return true;
    }
    if n == 0 || n > KEEP_NAME_LEN {
        return false;
    }
    let a = lower8(low_bytes(m.word_at(s), n));
    let b = if n > 8 {
        lower8(low_bytes(m.word_at(s + 8), n - 8))
    } else {
        0
    };
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

/// A search step (`s.search`: one byte or a set, `s.want`, from `s.pos` to `len`): the first
/// match, or `NOT_FOUND`.
#[inline(always)]
fn search(s: &Scan, m: &Msg, len: usize) -> u32 {
    let from = s.pos as usize;
    let hit = if s.search == SEARCH_ONE {
        m.find_byte(from, len, s.want as u8)
    } else {
        m.find_set(
            from,
            len,
            &SEARCH_SETS[s.want as usize & (SEARCH_SETS_LEN - 1)],
        )
    };
    match hit {
        Some(h) => h as u32,
        None => NOT_FOUND,
    }
}

/// One scan step. Returns `true` while there is more to do; afterwards `s.outcome` tells the
/// result and, for [`Outcome::Rewrite`], `s.edits()` the spans.
///
/// `RESP`: the message is a response to restore (ingress): the scan checks the status line
/// (2xx) and the CSeq method (REGISTER), records every contact URI as a candidate edit with
/// the end of its parameters, and deletes no parameter. A constant, so that each program's
/// copy holds only its own modes (the verifier checks every mode of the copy it gets).
#[inline(always)]
pub fn step<const RESP: bool>(s: &mut Scan, m: &Msg, cfg: &Config) -> bool {
    let len = (s.len as usize).min(MAX_SIP_LEN);
    // A search is a step of its own: the kernel runs each step in a `bpf_loop` callback, whose
    // frame the verifier starts afresh each turn, so the states the search loop leaves (one
    // per word it could stop at) end with the turn instead of each walking the modes. (In
    // the same turn, v6.18 as built for the host here walked the modes once per word, past
    // 1 M insns; a search in a function of its own cost v6.1 220 k more for each restore.)
    if s.search != SEARCH_NONE {
        s.hit = search(s, m, len);
        s.search = SEARCH_NONE;
        return true;
    }
    let pos = s.pos as usize;
    // SAFETY: a valid field behind `&mut`; volatile so the value is re-read (see
    // `Scan::launder`).
    let hit32 = unsafe { core::ptr::read_volatile(&s.hit) };
    let hit = hit32 as usize;
    let found = hit32 != NOT_FOUND;
    let mode = s.mode;
    if mode == M_START_NL || mode == M_SKIPPED || mode == M_LINE {
        let line = if mode == M_LINE {
            pos
        } else {
            if !found {
                return s.done(Outcome::Malformed);
            }
            // SIP lines end in CRLF (RFC 3261 7); a bare LF would let us disagree with the
            // receiver about where the headers end, so such a message is left alone.
            if m.byte(hit.wrapping_sub(1)) != b'\r' {
                return s.done(if mode == M_SKIPPED {
                    Outcome::Malformed
                } else {
                    Outcome::NotRegister
                });
            }
            // `REGISTER x SIP/2.0` or `SIP/2.0 2xx ` (the reason phrase may be empty).
            if mode == M_START_NL {
                let shortest = if RESP {
                    SHORTEST_STATUS_LINE.len()
                } else {
                    SHORTEST_REQUEST_LINE.len()
                };
                if hit < shortest + 1 || (!RESP && m.word_at(hit - 9) != word(b" SIP/2.0")) {
                    return s.done(Outcome::NotRegister);
                }
            }
            hit + 1
        };
        if !header_line::<RESP>(s, m, len, line) {
            return false;
        }
        // SAFETY: a valid field behind `&mut`; volatile, with the reads below, so that both
        // ways into the value modes reach them as one verifier state.
        if unsafe { core::ptr::read_volatile(&s.search) } != SEARCH_NONE {
            return true;
        }
        // A header whose value is parsed: its mode runs in this step, not the next one.
    }
    // SAFETY: valid fields behind `&mut`; volatile: see above.
    let (pos, mode) = unsafe {
        (
            core::ptr::read_volatile(&s.pos) as usize,
            core::ptr::read_volatile(&s.mode),
        )
    };
    match mode {
        M_START => {
            if RESP {
                // `SIP/2.0 2xx ` (RFC 3261 7.2): only successful final responses.
                if len < MIN_SIP_LEN
                    || m.word_at(0) != word(b"SIP/2.0 ")
                    || m.byte(8) != b'2'
                    || !m.byte(9).is_ascii_digit()
                    || !m.byte(10).is_ascii_digit()
                    || m.byte(11) != b' '
                {
                    return s.done(Outcome::NotRegister);
                }
            } else if len < MIN_SIP_LEN || m.word_at(0) != word(b"REGISTER") || m.byte(8) != b' ' {
                return s.done(Outcome::NotRegister);
            }
            s.pos = 9;
            s.want = b'\n' as u64;
            s.search = SEARCH_ONE;
            s.mode = M_START_NL;
            true
        }
        M_TO => {
            let p = skip_lws(s, m, pos);
            if let Some(user) = sip_scheme(m, p) {
                s.flags |= TO_ADDR_SPEC;
                s.dn_start = user as u32;
                s.find_near(m, user, &SET_TO_USER_ADDR_SPEC, M_TO_USER)
            } else if m.byte(p) == b'"' {
                s.quoted(p, M_TO_QUOTED)
            } else if m.byte(p) == b'<' {
                // What the search below would find first, without it.
                to_name_addr(s, m, p)
            } else {
                s.find(p, &SET_TO_NAME_ADDR, M_TO_LT)
            }
        }
        M_TO_QUOTED => {
            let lt = skip_lws(s, m, pos);
            to_name_addr(s, m, lt)
        }
        M_TO_LT => {
            if !found {
                return s.done(Outcome::Malformed);
            }
            to_name_addr(s, m, hit)
        }
        M_TO_USER => {
            let user = s.dn_start as usize;
            if !found {
                return s.done(Outcome::Malformed);
            }
            if m.byte(hit) != b'@' || hit == user {
                return s.done(Outcome::DnMissing);
            }
            let n = hit - user;
            if !valid_user(m, user, n) {
                return s.done(Outcome::DnInvalid);
            }
            s.dn_len = n as u32;
            s.flags |= SEEN_TO;
            if !RESP && m.find_byte(user, hit, b'%').is_some() {
                s.flags |= DN_ESCAPED;
            }
            s.skip_line(hit)
        }
        M_ELEM => {
            let p = skip_lws(s, m, pos);
            if !RESP {
                let k = s.n_contacts as usize & (MAX_EDITS - 1);
                s.elems[k] = Elem {
                    start: p as u16,
                    end: 0,
                    line: s.line_start as u16,
                    line_next: 0,
                    ln: s.n_lines as u16,
                    _pad: [0; 3],
                };
            }
            let c = m.byte(p);
            if c == b'*' {
                s.done(Outcome::Star)
            } else if c == b'"' {
                s.quoted(p, M_ELEM_QUOTED)
            } else if c == b'<' {
                s.mark = p as u32;
                s.find(p + 1, &SET_GT, M_ELEM_GT)
            } else {
                s.mark = p as u32;
                s.find(p, &SET_ELEM_TOKEN, M_ELEM_TOKEN)
            }
        }
        M_ELEM_QUOTED => {
            let lt = skip_lws(s, m, pos);
            if m.byte(lt) != b'<' {
                return s.done(Outcome::Malformed);
            }
            s.mark = lt as u32;
            s.find(lt + 1, &SET_GT, M_ELEM_GT)
        }
        M_ELEM_TOKEN => {
            let start = s.mark as usize;
            if !found {
                s.done(Outcome::Malformed)
            } else if m.byte(hit) == b'<' {
                s.mark = hit as u32;
                s.find(hit + 1, &SET_GT, M_ELEM_GT)
            } else if m.byte(hit) == b':' && hit > start {
                // addr-spec: the URI runs to the first separator; parameters after it are
                // header parameters.
                s.find(start, &SET_ADDR_END, M_ELEM_ADDR)
            } else {
                s.done(Outcome::Malformed)
            }
        }
        M_ELEM_GT => {
            if !found || m.byte(hit) != b'>' {
                return s.done(Outcome::Malformed);
            }
            uri_span::<RESP>(s, m, s.mark as usize, hit + 1)
        }
        M_ELEM_ADDR => {
            if !found {
                return s.done(Outcome::Malformed);
            }
            uri_span::<RESP>(s, m, s.mark as usize, hit)
        }
        M_PARAMS => params::<RESP>(s, m, pos),
        M_PARAM_NAME => {
            let name = s.mark2 as usize;
            if !found || hit == name {
                return s.done(Outcome::Malformed);
            }
            if RESP || keep_param(m, name, hit - name, cfg) {
                s.flags |= KEEP_PARAM;
            } else {
                s.flags &= !KEEP_PARAM;
            }
            if !RESP {
                if hit - name == EXPIRES.len()
                    && low_bytes(lower8(m.word_at(name)), EXPIRES.len()) == word(b"expires\0")
                {
                    s.flags |= EXPIRES_PARAM;
                    s.has_expires |= s.contact_bit();
                    s.zero_expires &= !s.contact_bit();
                } else {
                    s.flags &= !EXPIRES_PARAM;
                }
            }
            let eq = skip_lws(s, m, hit);
            if m.byte(eq) != b'=' {
                return param_end(s, hit);
            }
            let v = skip_lws(s, m, eq + 1);
            if m.byte(v) == b'"' {
                s.quoted(v, M_PARAM_QUOTED)
            } else {
                s.mark2 = v as u32;
                // Most values are short: the end is often in the first word, and the value
                // is then done in this step.
                match SET_PARAM_VALUE.in_first_word(m, v, len) {
                    Some(end) => param_value::<RESP>(s, m, v, end),
                    None => s.find(v, &SET_PARAM_VALUE, M_PARAM_VALUE),
                }
            }
        }
        M_PARAM_VALUE => {
            if !found {
                return s.done(Outcome::Malformed);
            }
            param_value::<RESP>(s, m, s.mark2 as usize, hit)
        }
        M_PARAM_QUOTED => param_end(s, pos),
        M_QUOTE_HIT => {
            if !found {
                return s.done(Outcome::Malformed);
            }
            match m.byte(hit) {
                b'"' => s.goto(hit + 1, s.ret),
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F) (RFC 3261 25.1): never CR or
                // LF, so a quoted string cannot run on past the end of its line.
                b'\\' if !matches!(m.byte(hit + 1), b'\r' | b'\n') => {
                    s.find(hit + 2, &SET_QUOTED, M_QUOTE_HIT)
                }
                _ => s.done(Outcome::Malformed),
            }
        }
        M_CALLID => {
            let p = skip_lws(s, m, pos);
            s.callid_start = p as u32;
            s.find(p, &SET_TOKEN_END, M_CALLID_END)
        }
        M_CALLID_END => {
            let start = s.callid_start as usize;
            if !found || hit == start || s.flags & SEEN_CALLID != 0 {
                return s.done(Outcome::Malformed);
            }
            s.flags |= SEEN_CALLID;
            s.callid_len = (hit - start) as u32;
            end_line(s, m, hit)
        }
        M_CSEQ => {
            let p = skip_lws(s, m, pos);
            s.find_near(m, p, &SET_TOKEN_END, M_CSEQ_NUM)
        }
        M_CSEQ_NUM => {
            if !found {
                return s.done(Outcome::Malformed);
            }
            let method = skip_lws(s, m, hit);
            let after = m.byte(method + 8);
            if m.word_at(method) != word(b"REGISTER") || !(after == b'\r' || is_wsp(after)) {
                return s.done(Outcome::NotRegister);
            }
            s.flags |= CSEQ_REGISTER;
            s.skip_line(method)
        }
        M_EXPIRES => {
            let p = skip_lws(s, m, pos);
            s.mark = p as u32;
            s.find_near(m, p, &SET_TOKEN_END, M_EXPIRES_END)
        }
        M_EXPIRES_END => {
            let v = s.mark as usize;
            if !found {
                return s.done(Outcome::Malformed);
            }
            if is_zero(m, v, hit - v) {
                s.flags |= EXPIRES_HDR_ZERO;
            } else {
                s.flags &= !EXPIRES_HDR_ZERO;
            }
            end_line(s, m, hit)
        }
        _ => false,
    }
}

/// Skips the rest of the line from `from`: at once when `from` is its CR (a value that ends
/// the line), else through a search for its line feed.
#[inline(always)]
fn end_line(s: &mut Scan, m: &Msg, from: usize) -> bool {
    if m.byte(from) == b'\r' && m.byte(from + 1) == b'\n' {
        s.goto(from + 2, M_LINE)
    } else {
        s.skip_line(from)
    }
}

/// At the start of a header line: the end of headers, a To or Contact header, or a line to skip.
#[inline(always)]
fn header_line<const RESP: bool>(s: &mut Scan, m: &Msg, len: usize, pos: usize) -> bool {
    if pos + 2 > len {
        return s.done(Outcome::Malformed);
    }
    // Through memory: the compiler would drop the index masks of the reads below as
    // redundant after the compare above, whose bound v6.1's verifier keeps on `pos + 2`
    // only (bounds reach such linked copies since v6.11, commit 98d7ca374ba4).
    let pos = s.launder(pos);
    let first = m.byte(pos);
    if first == b'\r' {
        if m.byte(pos + 1) != b'\n' {
            return s.done(Outcome::Malformed);
        }
        s.body = pos as u32 + 2;
        return finish::<RESP>(s);
    }
    // Only names that start with one of these letters (any case: `| 0x20` maps no other
    // byte onto them) are parsed; any other line is skipped without reading its name.
    if !matches!(first | 0x20, b't' | b'c' | b'm' | b'i' | b'e') {
        return s.skip_line(pos);
    }
    let w = lower8(m.word_at(pos));
    let c0 = w as u8;
    // Header name length if it is one we parse (long or compact form), and the mode that
    // parses its value.
    let (name_len, then) = if low_bytes(w, 2) == word(b"to\0\0\0\0\0\0") {
        (2, M_TO)
    } else if c0 == b't' {
        (1, M_TO)
    } else if low_bytes(w, 7) == word(b"contact\0") {
        (7, M_ELEM)
    } else if c0 == b'm' {
        (1, M_ELEM)
    } else if low_bytes(w, 7) == word(b"call-id\0") {
        (7, M_CALLID)
    } else if c0 == b'i' {
        (1, M_CALLID)
    } else if low_bytes(w, 4) == word(b"cseq\0\0\0\0") && RESP {
        (4, M_CSEQ)
    } else if low_bytes(w, 7) == word(b"expires\0") && !RESP {
        (7, M_EXPIRES)
    } else {
        (0, M_LINE)
    };
    if name_len > 0 {
        // Through memory, so the verifier checks what follows once, not once per header kind.
        let name_len = s.launder(name_len);
        let then = s.launder(then as usize) as u32;
        // The name must be followed by optional SP/HT and the colon.
        let mut p = pos + name_len;
        let mut k = 0;
        while k < 8 && is_wsp(m.byte(p)) {
            p += 1;
            k += 1;
        }
        if m.byte(p) == b':' {
            if then == M_TO && s.flags & SEEN_TO != 0 {
                return s.done(Outcome::Malformed);
            }
            if !RESP && then == M_ELEM {
                s.line_start = pos as u32;
                s.n_lines += 1;
            }
            return s.goto(p + 1, then);
        }
    }
    // Any other header (or a continuation line of one): skip to the next line.
    s.skip_line(pos)
}

/// `lt` should be the `<` of the To name-addr: checks the scheme, then looks for the user part.
#[inline(always)]
fn to_name_addr(s: &mut Scan, m: &Msg, lt: usize) -> bool {
    if m.byte(lt) != b'<' {
        return s.done(Outcome::Malformed);
    }
    match sip_scheme(m, lt + 1) {
        Some(user) => {
            s.dn_start = user as u32;
            // In name-addr form the user part may hold ';', '?' and ','.
            s.find_near(m, user, &SET_TO_USER_NAME_ADDR, M_TO_USER)
        }
        // tel: and other schemes carry no SIP user part.
        None => s.done(Outcome::DnMissing),
    }
}

#[inline(always)]
fn uri_span<const RESP: bool>(s: &mut Scan, m: &Msg, start: usize, end: usize) -> bool {
    if !s.push(start, end, EDIT_URI) {
        return s.done(Outcome::TooComplex);
    }
    params::<RESP>(s, m, end)
}

/// After a contact's URI or one of its parameters: the next parameter, the next contact or the
/// end of the header. Runs in the step that found the URI, and in a step of its own
/// (`M_PARAMS`) after a parameter.
#[inline(always)]
fn params<const RESP: bool>(s: &mut Scan, m: &Msg, pos: usize) -> bool {
    let p = skip_lws(s, m, pos);
    match m.byte(p) {
        b';' => {
            // A dropped parameter goes with the white space before its ';'.
            s.mark = pos as u32;
            let name = skip_lws(s, m, p + 1);
            s.mark2 = name as u32;
            s.find_near(m, name, &SET_PARAM_NAME, M_PARAM_NAME)
        }
        b',' => {
            s.end_element::<RESP>(pos, 0);
            s.goto(p + 1, M_ELEM)
        }
        b'\r' if m.byte(p + 1) == b'\n' => {
            s.end_element::<RESP>(pos, p + 2);
            s.goto(p + 2, M_LINE)
        }
        _ => s.done(Outcome::Malformed),
    }
}

/// A contact parameter's value runs from `v` to `end`, the first byte of [`SET_PARAM_VALUE`].
#[inline(always)]
fn param_value<const RESP: bool>(s: &mut Scan, m: &Msg, v: usize, end: usize) -> bool {
    if end == v {
        return s.done(Outcome::Malformed);
    }
    if !RESP && s.flags & EXPIRES_PARAM != 0 && is_zero(m, v, end - v) {
        s.zero_expires |= s.contact_bit();
    }
    param_end(s, end)
}

/// A contact parameter ends at `end` (it began at `s.mark`, white space before its `;`
/// included): dropped unless kept. What follows it is the next step's (`M_PARAMS`): a
/// `bpf_loop` turn costs ~1 ns here, while a copy of [`params`] in each of the three ways a
/// parameter ends cost v6.18's verifier 48 k processed insns for `sip_rewriter`.
#[inline(always)]
fn param_end(s: &mut Scan, end: usize) -> bool {
    if s.flags & KEEP_PARAM == 0 && !s.push(s.mark as usize, end, EDIT_DELETE) {
        return s.done(Outcome::TooComplex);
    }
    s.goto(end, M_PARAMS)
}

#[inline(always)]
fn finish<const RESP: bool>(s: &mut Scan) -> bool {
    if RESP && (s.flags & CSEQ_REGISTER == 0 || s.flags & SEEN_CALLID == 0) {
        s.done(Outcome::NotRegister)
    } else if s.flags & SEEN_TO == 0 {
        s.done(Outcome::DnMissing)
    } else if s.n_contacts == 0 {
        s.done(Outcome::NoContact)
    } else {
        s.done(Outcome::Rewrite)
    }
}

/// Several contacts of one REGISTER all become the one new URI, and a registrar applies them in
/// order (RFC 3261 10.3 step 7): `<new>;expires=3600, <old>;expires=0` would become
/// `<X>;expires=3600, <X>;expires=0` and remove the binding it just made. So when some contacts
/// have an expiry of 0 (their `expires` parameter, else the `Expires` header) and others do not,
/// the zero ones are dropped: with their separator, or with their header line when no contact
/// of that line stays. Every other contact is written as before (the shared corpus keeps two
/// non-zero contacts as two), and only the contacts written are recorded for the restore.
///
/// `true` if the drop pass is to run: [`drop_lines_step`] for each contact, then
/// [`drop_step`] for each edit, then [`drop_finish`].
#[inline(always)]
pub fn drop_plan(s: &mut Scan) -> bool {
    let n = s.n_contacts;
    if n < 2 || n as usize > MAX_EDITS || s.outcome != Outcome::Rewrite as u32 {
        return false;
    }
    let all = ((1u64 << n) - 1) as u32;
    let by_header = if s.flags & EXPIRES_HDR_ZERO != 0 {
        !s.has_expires
    } else {
        0
    };
    let zero = ((s.has_expires & s.zero_expires) | by_header) & all;
    if zero == 0 || zero == all {
        return false;
    }
    s.drop = zero;
    s.lines_kept = 0;
    s.removed = 0;
    s.d_out = 0;
    s.d_elem = u32::MAX;
    s.d_kept_on_line = 0;
    s.d_line = u32::MAX;
    s.first_uri = u32::MAX;
    true
}

/// Drop pass, contact `k`: which Contact lines keep a contact, where each line ends. `false`
/// past the last contact.
#[inline(always)]
pub fn drop_lines_step(s: &mut Scan, k: usize) -> bool {
    if k >= s.n_contacts as usize {
        return false;
    }
    let e = s.elems[k & (MAX_EDITS - 1)];
    let ln = e.ln as usize & (MAX_EDITS - 1);
    if s.drop & (1 << (k & (MAX_EDITS - 1))) == 0 {
        s.lines_kept |= 1 << ln;
    }
    if e.line_next != 0 {
        s.lines_next[ln] = e.line_next;
    }
    true
}

/// Drop pass, edit `i` (in place: the edits written never outrun the edits read): a kept
/// contact's edits stay, a dropped contact's become one deletion. `false` past the last edit.
#[inline(always)]
pub fn drop_step(s: &mut Scan, i: usize) -> bool {
    if i >= s.n_edits as usize {
        return false;
    }
    let e = s.edits[i & (MAX_EDITS - 1)];
    if e.kind == EDIT_URI {
        s.d_elem = s.d_elem.wrapping_add(1);
    }
    let k = s.d_elem as usize & (MAX_EDITS - 1);
    let el = s.elems[k];
    if el.ln as u32 != s.d_line {
        s.d_line = el.ln as u32;
        s.d_kept_on_line = 0;
    }
    if s.drop & (1 << k) == 0 {
        if e.kind == EDIT_URI {
            s.d_kept_on_line = 1;
        }
        s.out_edit(e);
        return true;
    }
    if e.kind != EDIT_URI {
        // Inside the dropped contact's span.
        return true;
    }
    let (start, end) = if s.lines_kept & (1 << (el.ln as usize & (MAX_EDITS - 1))) == 0 {
        // No contact of this line stays: the line goes, once.
        if k > 0 && s.elems[(k - 1) & (MAX_EDITS - 1)].ln == el.ln {
            return true;
        }
        (el.line, s.lines_next[el.ln as usize & (MAX_EDITS - 1)])
    } else if s.d_kept_on_line != 0 {
        // A kept contact before it on the line: its separator before it goes with it.
        (s.elems[k.wrapping_sub(1) & (MAX_EDITS - 1)].end, el.end)
    } else {
        // A kept contact follows on the line: up to where that contact starts.
        (el.start, s.elems[(k + 1) & (MAX_EDITS - 1)].start)
    };
    s.out_edit(Edit {
        start,
        end,
        kind: EDIT_DELETE,
        pend: end,
    });
    true
}

/// Ends the drop pass: the edits written are the edits, the contacts kept the contacts.
#[inline(always)]
pub fn drop_finish(s: &mut Scan) {
    s.n_edits = s.d_out;
    s.n_contacts -= s.drop.count_ones();
}

/// Runs the scan to completion (userspace driver; the kernel uses `bpf_loop`).
pub fn scan(m: &Msg, len: usize, cfg: &Config) -> Scan {
    run::<false>(m, len, cfg)
}

/// [`scan`] for a response to restore (see [`step`]).
pub fn scan_response(m: &Msg, len: usize, cfg: &Config) -> Scan {
    run::<true>(m, len, cfg)
}

fn run<const RESP: bool>(m: &Msg, len: usize, cfg: &Config) -> Scan {
    let mut s = Scan::new(len);
    if len > MAX_SIP_LEN {
        s.done(Outcome::TooComplex);
        return s;
    }
    let mut k = 0;
    while k < MAX_STEPS && step::<RESP>(&mut s, m, cfg) {
        k += 1;
    }
    if s.mode != M_DONE {
        s.done(Outcome::TooComplex);
    }
    if !RESP && drop_plan(&mut s) {
        let mut k = 0;
        while k < MAX_EDITS && drop_lines_step(&mut s, k) {
            k += 1;
        }
        let mut i = 0;
        while i < MAX_EDITS && drop_step(&mut s, i) {
            i += 1;
        }
        drop_finish(&mut s);
    }
    s
}

/// Length of the message once `scan`'s edits are applied with a new URI of `uri_len` bytes
/// (brackets included).
/// Loop-free, so the verifier sees one path.
#[inline(always)]
pub fn new_len(s: &Scan, uri_len: usize) -> usize {
    (s.len as usize).wrapping_sub(s.removed as usize) + s.n_contacts as usize * uri_len
}

/// Applies the edits of a `Rewrite` scan: `uri` pieces (concatenated) replace each URI span.
/// Writes into `out`, returns the new length, or `None` if `out` is too small.
pub fn apply(m: &[u8], s: &Scan, uri: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let mut o = Out::new(out);
    let mut from = 0;
    for e in s.edits() {
        o.put(m.get(from..e.start as usize)?)?;
        if e.kind == EDIT_URI {
            for piece in uri {
                o.put(piece)?;
            }
        }
        from = e.end as usize;
    }
    o.put(m.get(from..s.len as usize)?)?;
    Some(o.len)
}

/// An output buffer the userspace `apply`s append to; `None` once it is full.
pub(crate) struct Out<'a> {
    buf: &'a mut [u8],
    pub len: usize,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }

    pub fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.buf
            .get_mut(self.len..self.len + bytes.len())?
            .copy_from_slice(bytes);
        self.len += bytes.len();
        Some(())
    }
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
    // Same order of checks as the kernel program: method first, then size.
    if input.len() < 20 || !input.starts_with(b"REGISTER") {
        return Decision::Pass(Stat::NotRegister);
    }
    let mut m = Msg::zeroed();
    if !m.load(input) {
        return Decision::Pass(Stat::TooBig);
    }
    let s = scan(&m, input.len(), cfg);
    if s.outcome() != Outcome::Rewrite {
        return Decision::Pass(Stat::for_outcome(s.outcome()));
    }
    let decoded;
    let dn: &[u8] = if s.flags & DN_ESCAPED != 0 {
        match decode_dn(&m, &s) {
            Some(d) => {
                decoded = d;
                &decoded.0[..decoded.1]
            }
            None => return Decision::Pass(Stat::DnInvalid),
        }
    } else {
        &input[s.dn_start as usize..(s.dn_start + s.dn_len) as usize]
    };
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
        Some(len) => Decision::Rewritten {
            len,
            contacts: s.n_contacts,
        },
        None => Decision::Pass(Stat::TooBig),
    }
}

#[cfg(test)]
mod search_tests {
    extern crate std;
    use super::*;

    /// `word_at` at every alignment is the 8 bytes from there, little-endian: the aligned
    /// case (shift 0) and the shifted ones take the same branch-free path.
    #[test]
    fn word_at_reads_the_eight_bytes_at_every_alignment() {
        let mut m = Msg::zeroed();
        for (i, b) in m.0.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        for i in 0..BUF_SIZE - 8 {
            let want = u64::from_le_bytes(m.0[i..i + 8].try_into().unwrap());
            assert_eq!(m.word_at(i), want, "at {i}");
        }
    }

    /// Every start, end and delimiter set over bytes chosen to trip word-at-a-time searches:
    /// the delimiters themselves, their neighbours (a borrow out of a matching byte flags the
    /// next byte if it is the delimiter plus one), NUL and bytes with the high bit set.
    /// `count` random messages of 1 to `max_len` bytes of `alphabet` (xorshift from `seed`),
    /// each loaded into a buffer first filled with the alphabet: what a previous message left
    /// past the tail padding, matches that a search must not report.
    fn random_messages(
        alphabet: &[u8],
        max_len: u64,
        count: usize,
        mut seed: u64,
    ) -> impl Iterator<Item = (std::vec::Vec<u8>, std::boxed::Box<Msg>)> {
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..count).map(move |_| {
            let len = 1 + (next() % max_len) as usize;
            let data: std::vec::Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut m = std::boxed::Box::new(Msg::zeroed());
            for (i, b) in m.0.iter_mut().enumerate() {
                *b = alphabet[i % alphabet.len()];
            }
            assert!(m.load(&data));
            (data, m)
        })
    }

    /// Every search set, as the scan uses it: its bytes and its row in `SEARCH_SETS`.
    fn search_sets() -> [(&'static [u8], usize); 10] {
        [
            (&SET_QUOTED.bytes, SET_QUOTED.id),
            (&SET_TO_NAME_ADDR.bytes, SET_TO_NAME_ADDR.id),
            (&SET_TO_USER_NAME_ADDR.bytes, SET_TO_USER_NAME_ADDR.id),
            (&SET_TO_USER_ADDR_SPEC.bytes, SET_TO_USER_ADDR_SPEC.id),
            (&SET_ELEM_TOKEN.bytes, SET_ELEM_TOKEN.id),
            (&SET_GT.bytes, SET_GT.id),
            (&SET_ADDR_END.bytes, SET_ADDR_END.id),
            (&SET_PARAM_NAME.bytes, SET_PARAM_NAME.id),
            (&SET_PARAM_VALUE.bytes, SET_PARAM_VALUE.id),
            (&SET_TOKEN_END.bytes, SET_TOKEN_END.id),
        ]
    }

    /// The search step's table holds each set's own patterns, and the look at the first word
    /// finds what a byte-by-byte search of those 8 bytes finds (and nothing at or past the
    /// end), at every alignment, stale bytes past the message included.
    #[test]
    fn near_searches_and_the_set_table_find_exactly_the_first_match() {
        let alphabet = [
            b'\n', b'\r', b'\t', b' ', b';', b'<', b'>', b'=', b'"', b'\\', b'@', b',', b'?', b':',
            0, 0xff, b'a',
        ];
        let near = |m: &Msg, id: usize, from: usize, len: usize| match id {
            0 => SET_QUOTED.in_first_word(m, from, len),
            1 => SET_TO_NAME_ADDR.in_first_word(m, from, len),
            2 => SET_TO_USER_NAME_ADDR.in_first_word(m, from, len),
            3 => SET_TO_USER_ADDR_SPEC.in_first_word(m, from, len),
            4 => SET_ELEM_TOKEN.in_first_word(m, from, len),
            5 => SET_GT.in_first_word(m, from, len),
            6 => SET_ADDR_END.in_first_word(m, from, len),
            7 => SET_PARAM_NAME.in_first_word(m, from, len),
            8 => SET_PARAM_VALUE.in_first_word(m, from, len),
            _ => SET_TOKEN_END.in_first_word(m, from, len),
        };
        for (data, m) in random_messages(&alphabet, 24, 300, 0x9e37_79b9_7f4a_7c15) {
            let len = data.len();
            for (bytes, id) in search_sets() {
                assert_eq!(SEARCH_SETS[id], set_row(bytes), "row {id}");
                for from in 0..=len {
                    let first = (from..len).find(|&i| bytes.contains(&data[i]));
                    assert_eq!(m.find_set(from, len, &SEARCH_SETS[id]), first);
                    // Up to an end before the message's (the bytes past it do not count).
                    for end in from..=len {
                        let near_first =
                            (from..end.min(from + 8)).find(|&i| bytes.contains(&data[i]));
                        assert_eq!(
                            near(m.as_ref(), id, from, end),
                            near_first,
                            "{data:?} {from}..{end} set {bytes:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn word_searches_find_exactly_the_first_match() {
        let alphabet = [
            b'\n', b'\r', 0x0b, 0x0e, b';', b'<', b'=', b'"', 0, 0xff, 0x8a, b'a',
        ];
        let sets: [&[u8]; 4] = [b"\r", b";<\r", b"=;, \t\r", b"@>\r;?, "];
        for (data, m) in random_messages(&alphabet, 40, 300, 0x2545_f491_4f6c_dd1d) {
            let len = data.len();
            for from in 0..=len {
                for to in from..=len {
                    for set_bytes in sets {
                        let naive = (from..to).find(|&i| set_bytes.contains(&data[i]));
                        let got = m.find_set(from, to, &set_row(set_bytes));
                        assert_eq!(got, naive, "{data:?} {from}..{to} {set_bytes:?}");
                    }
                    let naive = (from..to).find(|&i| data[i] == b'\n');
                    assert_eq!(m.find_byte(from, to, b'\n'), naive, "{data:?} {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn white_space_is_skipped_up_to_its_bound() {
        for n in 0..40 {
            for tab_at in [usize::MAX, 0, 1, 2, 9] {
                let mut text: std::vec::Vec<u8> = std::vec![b' '; n];
                if tab_at < n {
                    text[tab_at] = b'\t';
                }
                text.extend_from_slice(b"x;\r\n");
                let mut m = Msg::zeroed();
                assert!(m.load(&text));
                for start in [0, 3] {
                    let run = text[start..]
                        .iter()
                        .take_while(|&&c| c == b' ' || c == b'\t')
                        .count();
                    let want = start + run.min(WSP_BYTES + 8 * WSP_WORDS);
                    assert_eq!(
                        skip_wsp(&m, start),
                        want,
                        "{n} spaces, tab at {tab_at}, from {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_first_flagged_byte_is_found() {
        for k in 0..8 {
            let h = 0x80u64 << (8 * k);
            assert_eq!(first_flagged_byte(h), k);
            // Flags above the lowest do not matter.
            assert_eq!(first_flagged_byte(HI & (u64::MAX << (8 * k))), k);
        }
    }
}
