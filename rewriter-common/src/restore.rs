//! Restore: give the client its own Contact back in Genesys' 2xx response to a REGISTER.
//!
//! The egress rewrite records, per (Call-ID, DN), the URI it wrote and the client's original
//! URI(s) ([`RegState`]). On ingress a response is scanned by the same step machine
//! ([`sip::scan_response`]); every contact whose URI equals the written one byte for byte
//! gets the original back, its header parameters untouched. If the REGISTER carried several
//! contacts (all rewritten to the one URI, so Genesys lists one binding), the matching element
//! becomes one element per original, each with the same parameters:
//! `<o1>;expires=600, <o2>;expires=600`.
//!
//! The helpers here work on [`Msg`] with masked indices and word copies, so the kernel programs
//! and userspace run the same code.

use crate::{
    AddrKey, ContactUri, DnKey, MAX_DN_LEN, MAX_URI_LEN, Stat, URI_BUF, WriteState,
    sip::{self, EDIT_URI, Edit, MAX_EDITS, MAX_SIP_LEN, Msg, Outcome, Scan, low_bytes},
};

/// Most contacts of one REGISTER whose originals are recorded; a REGISTER with more is
/// rewritten but not recorded.
pub const MAX_ORIGINALS: usize = 4;
/// Longest Call-ID recorded.
pub const MAX_CALLID_LEN: usize = 64;
/// Default capacity of the restore-state LRU map (one entry per registered client).
pub const MAX_REGISTRATIONS: u32 = 16_384;
/// Words of a [`ContactUri`] text.
const URI_WORDS: usize = URI_BUF / 8;
/// Most records one DN holds (one per Call-ID): a new Call-ID of a DN that has them all
/// replaces the DN's oldest ([`DnRecords::admit`]), so REGISTERs of one DN, whoever sends
/// them, cannot push the other DNs' records out of the map.
pub const MAX_PER_DN: usize = 4;
/// The words of a [`RegState`] that [`RegState::refreshed_by`] compares as they are: the
/// written URI, and the peer (the originals come from the message; `n` and the key check
/// share word 0, compared field by field).
const WRITTEN_WORDS: (usize, usize) = (
    core::mem::offset_of!(RegState, written) / 8,
    core::mem::offset_of!(RegState, orig) / 8,
);
const PEER_WORDS: (usize, usize) = (
    core::mem::offset_of!(RegState, peer) / 8,
    core::mem::size_of::<RegState>() / 8,
);
const _: () = assert!(
    core::mem::offset_of!(RegState, written) % 8 == 0
        && core::mem::offset_of!(RegState, orig) % 8 == 0
        && core::mem::offset_of!(RegState, peer) % 8 == 0
        && core::mem::size_of::<RegState>().is_multiple_of(8)
);
/// Most edits of a REGISTER that [`RegState::refreshed_by`] recognizes as a refresh (one
/// with more has its record written again, as a changed one): each edit it may compare costs
/// the verifier a copy of the comparison, and clients send one to three.
pub const REFRESH_EDITS: usize = 8;
const _: () = assert!(REFRESH_EDITS <= MAX_EDITS && MAX_ORIGINALS <= 8);
/// Words of a Call-ID in a key.
const CALLID_WORDS: usize = MAX_CALLID_LEN / 8;

/// Key of the restore-state map: the Call-ID and the DN, each zero-padded, and the Call-ID's
/// length (so `abc` and `abc\0` are two keys; a DN holds no NUL).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegKey {
    pub call_id: [u8; MAX_CALLID_LEN],
    pub dn: DnKey,
    pub call_id_len: u64,
}

/// Value of the restore-state map: what the egress wrote and what it replaced.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegState {
    /// Originals in use (1..=MAX_ORIGINALS).
    pub n: u32,
    /// [`RegKey::check`] of the key this record was stored under: a reader that finds another
    /// value (the element was freed and reused while it held it) does not use the record.
    pub key_check: u32,
    /// The bracketed URI the egress wrote.
    pub written: ContactUri,
    /// The client's URIs, bracketed, in the REGISTER's order.
    pub orig: [ContactUri; MAX_ORIGINALS],
    /// The address the REGISTER was sent to: only a 2xx from there is restored.
    pub peer: AddrKey,
}

/// Value of the per-DN index (keyed by [`DnKey`]): the Call-IDs of the DN's records, in the
/// order they were first recorded. A ring: `next` is the slot the next new Call-ID takes, the
/// DN's oldest once all [`MAX_PER_DN`] are in use. A refresh (a Call-ID recorded already)
/// changes nothing here.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnRecords {
    /// Zero-padded, as in [`RegKey::call_id`].
    pub call_id: [[u8; MAX_CALLID_LEN]; MAX_PER_DN],
    /// As [`RegKey::call_id_len`]; 0: slot unused.
    pub call_id_len: [u64; MAX_PER_DN],
    /// The slot the next new Call-ID takes.
    pub next: u32,
    /// [`dn_check`] of the key this value was stored under (see [`RegState::key_check`]).
    pub key_check: u32,
}

/// What [`DnRecords::admit`] did.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The Call-ID was in the index already: nothing changed.
    Known = 0,
    /// Put in a free slot.
    Added = 1,
    /// Put in place of the DN's oldest Call-ID, whose record key is now in `evicted`.
    Replaced = 2,
}

impl DnRecords {
    /// An index with no Call-ID, for the DN whose [`dn_check`] is `key_check`.
    pub const fn empty(key_check: u32) -> Self {
        Self {
            call_id: [[0; MAX_CALLID_LEN]; MAX_PER_DN],
            call_id_len: [0; MAX_PER_DN],
            next: 0,
            key_check,
        }
    }

    /// [`Self::empty`] in place, a word at a time (volatile: no `memset` on the BPF target).
    #[inline(always)]
    pub fn reset(&mut self, key_check: u32) {
        const WORDS: usize = core::mem::size_of::<DnRecords>() / 8;
        let words = self as *mut DnRecords as *mut u64;
        let mut j = 0;
        while j < WORDS {
            // SAFETY: `DnRecords` is 8-aligned and WORDS words long.
            unsafe { core::ptr::write_volatile(words.add(j), 0) };
            j += 1;
        }
        // SAFETY: a plain field (volatile: see `copy_words`).
        unsafe { core::ptr::write_volatile(&mut self.key_check, key_check) };
    }

    /// Whether slot `k` holds the Call-ID of `key` (branch-free over the words).
    #[inline(always)]
    fn holds(&self, k: usize, key: &RegKey) -> bool {
        let slot = self.call_id[k & (MAX_PER_DN - 1)].as_ptr() as *const u64;
        let id = key.call_id.as_ptr() as *const u64;
        let mut diff = self.call_id_len[k & (MAX_PER_DN - 1)] ^ key.call_id_len;
        let mut j = 0;
        while j < CALLID_WORDS {
            // SAFETY: both are CALLID_WORDS aligned words (offsets multiple of 8 in 8-aligned
            // structs).
            // structs). Volatile: word by word, not every load hoisted into a register (or a
            // stack slot: the BPF stack is 512 bytes for all frames).
            diff |= unsafe {
                core::ptr::read_volatile(slot.add(j)) ^ core::ptr::read_volatile(id.add(j))
            };
            j += 1;
        }
        diff == 0
    }

    /// Admits the Call-ID of `key` (a record about to be made for it, its DN this index's):
    /// known already, nothing changes; else it takes slot `next`, and if that slot held the
    /// DN's oldest Call-ID, that record's key is written to `evicted` (for the caller to
    /// delete the record) and [`Admit::Replaced`] returned. The one implementation of the
    /// per-DN bound: the egress program runs it on its copy of the index entry.
    #[inline(always)]
    pub fn admit(&mut self, key: &RegKey, evicted: &mut RegKey) -> Admit {
        // An early return per slot, not a flag: on BPF each compare is a branch, and flags
        // merged from them would multiply the verifier's states.
        let mut k = 0;
        while k < MAX_PER_DN {
            if self.holds(k, key) {
                return Admit::Known;
            }
            k += 1;
        }
        let slot = self.next as usize & (MAX_PER_DN - 1);
        let old_len = self.call_id_len[slot];
        let ids = self.call_id[slot].as_mut_ptr() as *mut u64;
        if old_len != 0 {
            // SAFETY: Call-IDs and DN keys are 8-aligned whole numbers of words.
            unsafe {
                copy_volatile::<CALLID_WORDS>(ids, evicted.call_id.as_mut_ptr() as *mut u64);
                copy_volatile::<{ MAX_DN_LEN / 8 }>(
                    key.dn.0.as_ptr() as *const u64,
                    evicted.dn.0.as_mut_ptr() as *mut u64,
                );
                core::ptr::write_volatile(&mut evicted.call_id_len, old_len);
            }
        }
        // SAFETY: as above; plain fields (volatile: see `copy_words`).
        unsafe {
            copy_volatile::<CALLID_WORDS>(key.call_id.as_ptr() as *const u64, ids);
            core::ptr::write_volatile(&mut self.call_id_len[slot], key.call_id_len);
            core::ptr::write_volatile(&mut self.next, ((slot + 1) % MAX_PER_DN) as u32);
        }
        if old_len != 0 {
            Admit::Replaced
        } else {
            Admit::Added
        }
    }

    /// Whether `self` and `other` are the same bytes (word-wise, branch-free).
    #[inline(always)]
    pub fn same(&self, other: &DnRecords) -> bool {
        const WORDS: usize = core::mem::size_of::<DnRecords>() / 8;
        let (a, b) = (
            self as *const DnRecords as *const u64,
            other as *const DnRecords as *const u64,
        );
        let mut diff = 0u64;
        let mut j = 0;
        while j < WORDS {
            // SAFETY: both are 8-aligned `DnRecords` of WORDS words. Volatile: see `holds`.
            diff |=
                unsafe { core::ptr::read_volatile(a.add(j)) ^ core::ptr::read_volatile(b.add(j)) };
            j += 1;
        }
        diff == 0
    }

    /// The Call-IDs in use, oldest first (userspace: tests, status).
    pub fn call_ids(&self) -> impl Iterator<Item = &[u8]> {
        (0..MAX_PER_DN)
            .map(move |i| (self.next as usize + i) % MAX_PER_DN)
            .filter(move |&k| self.call_id_len[k] != 0)
            .map(move |k| &self.call_id[k][..(self.call_id_len[k] as usize).min(MAX_CALLID_LEN)])
    }
}

/// A 32-bit fingerprint of a DN key, as [`RegKey::check`] of a record key: what
/// [`DnRecords::key_check`] holds.
#[inline(always)]
pub fn dn_check(dn: &DnKey) -> u32 {
    // SAFETY: `DnKey` is 8-aligned and MAX_DN_LEN / 8 words long.
    unsafe { check_words::<{ MAX_DN_LEN / 8 }>(dn.0.as_ptr() as *const u64) }
}

/// Word-wise rotate-xor of `W` words, folded to 32 bits (not a hash for tables, a check that
/// a value belongs to a key).
///
/// # Safety
/// `words` must point to `W` aligned words.
#[inline(always)]
unsafe fn check_words<const W: usize>(words: *const u64) -> u32 {
    let mut acc = 0u64;
    let mut j = 0;
    while j < W {
        // SAFETY: see the function's contract.
        acc = acc.rotate_left(7) ^ unsafe { core::ptr::read(words.add(j)) };
        j += 1;
    }
    (acc ^ (acc >> 32)) as u32
}

/// The XOR of the words `from..to` of `a` and `b`, ORed together: 0 if they are equal.
///
/// # Safety
/// `to` must not pass the end of `T`, which must be 8-aligned.
#[inline(always)]
unsafe fn words_diff<T>(a: &T, b: &T, from: usize, to: usize) -> u64 {
    // SAFETY: see the function's contract.
    unsafe {
        volatile_diff(
            a as *const T as *const u64,
            b as *const T as *const u64,
            from,
            to,
        )
    }
}

/// Words of a [`RegState`] for [`RegState::snapshot`]: up to the end of the first original,
/// from the peer on, and the end.
const SNAP_FIRST: usize =
    (core::mem::offset_of!(RegState, orig) + core::mem::size_of::<ContactUri>()) / 8;
const SNAP_PEER: usize = core::mem::offset_of!(RegState, peer) / 8;
const SNAP_END: usize = core::mem::size_of::<RegState>() / 8;
const _: () = assert!(
    (core::mem::offset_of!(RegState, orig) + core::mem::size_of::<ContactUri>()).is_multiple_of(8)
        && SNAP_FIRST <= SNAP_PEER
);

/// The XOR of the words `from..to` at `a` and `b`, ORed together, read volatile (`a` may be
/// a map value another CPU writes).
///
/// # Safety
/// Both must point to at least `to` aligned words.
#[inline(always)]
unsafe fn volatile_diff(a: *const u64, b: *const u64, from: usize, to: usize) -> u64 {
    let mut diff = 0;
    let mut j = from;
    while j < to {
        // SAFETY: see the function's contract.
        diff |= unsafe { core::ptr::read_volatile(a.add(j)) ^ core::ptr::read_volatile(b.add(j)) };
        j += 1;
    }
    diff
}

/// [`copy_aligned`] with volatile loads too: one word at a time, not all loads first (which
/// on BPF spills them to the 512-byte stack all frames share).
///
/// # Safety
/// As [`copy_aligned`].
#[inline(always)]
pub unsafe fn copy_volatile<const W: usize>(src: *const u64, dst: *mut u64) {
    let mut j = 0;
    while j < W {
        // SAFETY: see the function's contract.
        unsafe { core::ptr::write_volatile(dst.add(j), core::ptr::read_volatile(src.add(j))) };
        j += 1;
    }
}

/// Copies `W` 8-byte words from `src` to `dst` (volatile: see [`copy_words`]).
///
/// # Safety
/// Both must point to `W` aligned words, `dst` writable.
#[inline(always)]
pub unsafe fn copy_aligned<const W: usize>(src: *const u64, dst: *mut u64) {
    let mut j = 0;
    while j < W {
        // SAFETY: see the function's contract.
        unsafe { core::ptr::write_volatile(dst.add(j), core::ptr::read(src.add(j))) };
        j += 1;
    }
}

/// Writes `n` bytes of `m` from `from` as 8-byte words to `dst` (zero past `n`, `n <= 8 * W`).
/// Volatile word stores: plain ones become a byte loop or a `memset` call on the BPF target.
/// Words wholly past `n` are stored as zero without reading the message: a Call-ID or URI
/// fills a few of its buffer's 16 or 17 words, and the unaligned read costs the most.
///
/// The loop is a function of its own ([`copy_span`]), which gets the span through the first
/// destination word, not as arguments: see there.
#[inline(always)]
fn copy_words<const W: usize>(m: &Msg, from: usize, n: usize, dst: *mut u64) {
    // SAFETY: callers pass a pointer to at least W aligned, writable words.
    unsafe { core::ptr::write_volatile(dst, ((from as u64) << 32) | n as u64) };
    copy_span::<W>(m, dst);
}

/// [`copy_words`] of the span packed in `dst[0]` (`from << 32 | n`). Not inlined: in a
/// `bpf_loop` callback each word's branch would otherwise leave a verifier state of its own
/// for all that follows, and v6.18 as built for the host here keeps them apart (it walked
/// `sip_rewriter` past 1 M insns); the verifier returns from a call with the callee's states
/// gone. Pointer arguments only, the span read back from memory: with a search function
/// that took scalar arguments, v6.1 verified the programs for more than 15 minutes (under
/// TCG), likely its precision tracking, which cannot follow a scalar into a callee and
/// marks every scalar precise instead (`backtrack_insn()` returns -ENOTSUPP for a
/// BPF_PSEUDO_CALL; calls are followed since v6.5, commit fde2a3882bd0).
#[inline(never)]
fn copy_span<const W: usize>(m: &Msg, dst: *mut u64) {
    // SAFETY: see `copy_words`.
    let span = unsafe { core::ptr::read_volatile(dst) };
    let (from, n) = ((span >> 32) as usize, (span as u32) as usize);
    // Words holding bytes of the text, as a shifted count of their own: branching on
    // `n - 8 * j == 0` instead cost v6.18's verifier 38 k more processed insns for
    // sip_rewriter (16 k with this form), as if each word's outcome narrowed `n` for all
    // that follows.
    let used = (n + 7) >> 3;
    let mut j = 0;
    while j < W {
        let w = if j < used {
            low_bytes(m.word_at(from + 8 * j), n.saturating_sub(8 * j).min(8))
        } else {
            0
        };
        // SAFETY: callers pass a pointer to at least W aligned, writable words.
        unsafe { core::ptr::write_volatile(dst.add(j), w) };
        j += 1;
    }
}

impl RegKey {
    /// Fills the key from a scan's Call-ID and DN; `false` if the Call-ID is missing or longer
    /// than [`MAX_CALLID_LEN`] (such a registration is not recorded).
    #[inline(always)]
    pub fn fill(&mut self, m: &Msg, s: &Scan) -> bool {
        if !self.fill_call_id(m, s) {
            return false;
        }
        let dn_len = (s.dn_len as usize).min(MAX_DN_LEN);
        copy_words::<{ MAX_DN_LEN / 8 }>(
            m,
            s.dn_start as usize,
            dn_len,
            self.dn.0.as_mut_ptr() as *mut u64,
        );
        true
    }

    /// A 32-bit fingerprint of the key (word-wise rotate-xor; not a hash for tables, a check
    /// that a record belongs to this key).
    #[inline(always)]
    pub fn check(&self) -> u32 {
        const WORDS: usize = core::mem::size_of::<RegKey>() / 8;
        // SAFETY: `RegKey` is 8-aligned and WORDS words long.
        unsafe { check_words::<WORDS>(self as *const RegKey as *const u64) }
    }

    /// The Call-ID half of [`RegKey::fill`] (the egress has the DN key built already).
    #[inline(always)]
    pub fn fill_call_id(&mut self, m: &Msg, s: &Scan) -> bool {
        let (start, len) = (s.callid_start as usize, s.callid_len as usize);
        if len == 0 || len > MAX_CALLID_LEN {
            return false;
        }
        copy_words::<{ MAX_CALLID_LEN / 8 }>(m, start, len, self.call_id.as_mut_ptr() as *mut u64);
        // SAFETY: a plain field (volatile: see `copy_words`).
        unsafe { core::ptr::write_volatile(&mut self.call_id_len, len as u64) };
        true
    }
}

impl ContactUri {
    /// Sets the text to `n` bytes of `m` from `from`, wrapped in `<`..`>` when `bracket`.
    /// `false` (and nothing usable) if the result would not fit.
    #[inline(always)]
    pub fn fill(&mut self, m: &Msg, from: usize, n: usize, bracket: bool) -> bool {
        let total = n + if bracket { 2 } else { 0 };
        if n == 0 || total > URI_BUF || (bracket && from == 0) {
            return false;
        }
        // Bracketed: copy from one byte early and overwrite that byte with `<`.
        let src = if bracket { from - 1 } else { from };
        copy_words::<URI_WORDS>(m, src, total, self.text.as_mut_ptr() as *mut u64);
        if bracket {
            self.text[0] = b'<';
            if let Some(b) = self.text.get_mut(total - 1) {
                *b = b'>';
            }
        }
        // SAFETY: a plain field (volatile: see `copy_words`).
        unsafe { core::ptr::write_volatile(&mut self.len, total as u16) };
        true
    }

    /// Whether the URI span of edit `e` in `m` is this (bracketed) URI: a `<...>` span byte
    /// for byte, a bare addr-spec against the URI without its brackets.
    #[inline(always)]
    pub fn matches(&self, m: &Msg, e: &Edit) -> bool {
        let (start, end) = (e.start as usize, e.end as usize);
        let len = (self.len as usize).min(URI_BUF);
        let bare = (m.byte(start) != b'<') as usize;
        if start == 0 || len < 3 || end.wrapping_sub(start) + 2 * bare != len {
            return false;
        }
        // Only the words that hold the text (past them it is zero and masks nothing in): an
        // early exit, which the restore's verifier takes in its stride; `span_diff` below
        // runs in a loop of its own, where the exits multiplied v6.18's states past 1 M.
        self.text_diff(m, start, bare, len.div_ceil(8)) == 0
    }

    /// 0 if the span `m[start..end]` is this URI as [`ContactUri::matches`] compares (where it
    /// would return `true`), else not 0, computed without a branch: for callers that sum many
    /// comparisons (every branch, and every 0/1 it leaves, would fork the verifier's states).
    /// For a URI recorded from a REGISTER (3 bytes or more, and the span never at 0).
    #[inline(always)]
    pub fn span_diff(&self, m: &Msg, start: usize, end: usize) -> u64 {
        let len = (self.len as usize).min(URI_BUF);
        // 1 for a bare span: the first byte is not `<`.
        let bare = ((m.byte(start) ^ b'<') as usize + 0xff) >> 8;
        (end.wrapping_sub(start) + 2 * bare) as u64 ^ len as u64
            | self.text_diff(m, start, bare, URI_WORDS)
    }

    /// The bytes of the text that differ from `m` at `start` (`bare`: 1 if the span has no
    /// brackets). Branch-free over the words (each branch would fork the verifier's states):
    /// the text is zero-padded and a URI holds no NUL, `<` or `>` (RFC 3261 25.1), so its
    /// non-zero bytes are the ones to compare, and for a bare span its `<`/`>` bytes are the
    /// ones to skip.
    #[inline(always)]
    fn text_diff(&self, m: &Msg, start: usize, bare: usize, words: usize) -> u64 {
        // A bare span is compared from one byte early, against the bracketed text.
        let src = start.wrapping_sub(bare);
        let skip_brackets = 0u64.wrapping_sub(bare as u64);
        let text = self.text.as_ptr() as *const u64;
        let mut diff = 0u64;
        let mut j = 0;
        while j < URI_WORDS && j < words {
            // SAFETY: `text` is 8-aligned (offset 8 in an 8-aligned struct) and j < URI_WORDS.
            let t = unsafe { core::ptr::read(text.add(j)) };
            let brackets = bytes_of(
                sip::zero_bytes(t ^ (sip::LO * b'<' as u64))
                    | sip::zero_bytes(t ^ (sip::LO * b'>' as u64)),
            );
            let mask = bytes_of(!sip::zero_bytes(t) & (sip::LO << 7)) & !(brackets & skip_brackets);
            diff |= (m.word_at(src + 8 * j) ^ t) & mask;
            j += 1;
        }
        diff
    }
}

/// Widens the high bit of each byte of `h` to the whole byte.
#[inline(always)]
const fn bytes_of(h: u64) -> u64 {
    (h >> 7) * 0xff
}

impl RegState {
    /// Records the original URI of egress edit `e` (an `EDIT_URI` edit) as original number
    /// `self.n`; `false` if there is no room, it is too long or holds a byte a configured URI
    /// may not ([`crate::is_uri_byte`]).
    #[inline(always)]
    pub fn record(&mut self, m: &Msg, e: &Edit) -> bool {
        let k = self.n as usize;
        if k >= MAX_ORIGINALS || e.kind != EDIT_URI {
            return false;
        }
        // `pend`: the URI's own end (deleted parameters may be merged into the edit).
        let (start, end) = (e.start as usize, e.pend as usize);
        let bare = m.byte(start) != b'<';
        let n = end.wrapping_sub(start);
        // The same limit as for the URIs the rewrite writes: MAX_URI_LEN without brackets.
        if n > MAX_URI_LEN + if bare { 0 } else { 2 } {
            return false;
        }
        // Only bytes a configured URI may hold ever go back into a response (no CR, LF, NUL,
        // white space, `<>"`): anything else would let a client smuggle a header line through.
        let slot = &mut self.orig[k & (MAX_ORIGINALS - 1)];
        let ok = slot.fill(m, start, n, bare) && slot.clean();
        if ok {
            self.n = k as u32 + 1;
        }
        ok
    }

    /// Empties the original slots past `n` (length and text), so that two records of the same
    /// registration are equal word for word (the kernel reuses one scratch value).
    #[inline(always)]
    pub fn clear_unused(&mut self) {
        let mut k = 0;
        while k < MAX_ORIGINALS {
            if k >= self.n as usize {
                let o = &mut self.orig[k];
                let words = o.text.as_mut_ptr() as *mut u64;
                let mut j = 0;
                while j < URI_WORDS {
                    // SAFETY: `text` is 8-aligned (offset 8 in an 8-aligned struct), j < URI_WORDS.
                    unsafe { core::ptr::write_volatile(words.add(j), 0) };
                    j += 1;
                }
                // SAFETY: a plain field (volatile: see `copy_words`).
                unsafe { core::ptr::write_volatile(&mut o.len, 0) };
            }
            k += 1;
        }
    }

    /// Whether this record, found under the key of a REGISTER just rewritten, is already what
    /// recording that REGISTER would store ([`RegState::record`] per URI edit, then
    /// [`RegState::clear_unused`]): `head` holds the new record's key check, written URI and
    /// peer (its originals not filled), `m` and `s` the REGISTER and its scan. A refresh then
    /// skips copying the originals and comparing whole records (the refresh is the common
    /// REGISTER). Equal to `self.same(&built)` whenever the REGISTER is recordable and `self`
    /// was recorded by this code; an unrecordable one never matches (more contacts than
    /// [`MAX_ORIGINALS`], or a URI that no record can hold).
    ///
    /// Differences are summed, not branched on (in BPF a compare's 0/1 is a branch): the
    /// kernel's verifier then walks one path per edit instead of one per outcome.
    #[inline(always)]
    pub fn refreshed_by(&self, head: &RegState, m: &Msg, s: &Scan) -> bool {
        let n = s.n_contacts as usize;
        let edits = s.n_edits as usize;
        // Not 0 for more than MAX_ORIGINALS contacts or REFRESH_EDITS edits (both at most
        // MAX_EDITS).
        let mut diff = ((n + 7 - MAX_ORIGINALS) >> 3) as u64
            | ((edits + 15 - REFRESH_EDITS) >> 4) as u64
            | (self.n as u64 ^ n as u64)
            | (self.key_check ^ head.key_check) as u64;
        for (from, to) in [WRITTEN_WORDS, PEER_WORDS] {
            // SAFETY: both are 8-aligned `RegState`s, and `to` is within their words.
            diff |= unsafe { words_diff(self, head, from, to) };
        }
        let mut contact = 0;
        let mut k = 0;
        while k < REFRESH_EDITS {
            if k >= edits {
                break;
            }
            let e = s.edits[k];
            let uri = (e.kind & EDIT_URI) as usize;
            // The URI as `record` takes it: to its own end (`pend`), not the merged deletions.
            let orig = &self.orig[contact & (MAX_ORIGINALS - 1)];
            diff |= orig.span_diff(m, e.start as usize, e.pend as usize)
                & 0u64.wrapping_sub(uri as u64);
            contact += uri;
            k += 1;
        }
        diff == 0
    }

    /// Whether `self` and `other` are the same bytes (word-wise, branch-free).
    #[inline(always)]
    pub fn same(&self, other: &RegState) -> bool {
        const WORDS: usize = core::mem::size_of::<RegState>() / 8;
        // SAFETY: both are 8-aligned `RegState`s of WORDS words.
        unsafe { words_diff(self, other, 0, WORDS) == 0 }
    }

    /// Copies the record at `live` (a map value that another CPU may rewrite meanwhile) into
    /// `self`: the words a record of its `n` originals uses, not those of the unused
    /// originals (three quarters of the value for a one-contact REGISTER, which the restore
    /// never reads). `true` if the copy is of one version: every word copied reads the same
    /// in `live` afterwards. Volatile word by word (a struct copy is a byte loop on BPF).
    ///
    /// # Safety
    /// `live` must point to a `RegState` valid for reads (8-aligned, as map values are).
    #[inline(always)]
    pub unsafe fn snapshot(&mut self, live: *const RegState) -> bool {
        let (src, dst) = (live as *const u64, self as *mut RegState as *mut u64);
        // SAFETY: both are 8-aligned `RegState`s; every range is within its words.
        unsafe {
            copy_volatile::<SNAP_FIRST>(src, dst);
            copy_volatile::<{ SNAP_END - SNAP_PEER }>(src.add(SNAP_PEER), dst.add(SNAP_PEER));
            let more = self.n > 1;
            if more {
                copy_volatile::<{ SNAP_PEER - SNAP_FIRST }>(
                    src.add(SNAP_FIRST),
                    dst.add(SNAP_FIRST),
                );
            }
            let mut diff = volatile_diff(src, dst, 0, SNAP_FIRST)
                | volatile_diff(src, dst, SNAP_PEER, SNAP_END);
            if more {
                diff |= volatile_diff(src, dst, SNAP_FIRST, SNAP_PEER);
            }
            diff == 0
        }
    }

    /// Total length of the originals.
    #[inline(always)]
    pub fn orig_total(&self) -> usize {
        let mut t = 0;
        let mut k = 0;
        while k < MAX_ORIGINALS {
            if k < self.n as usize {
                t += (self.orig[k].len as usize).min(URI_BUF);
            }
            k += 1;
        }
        t
    }

    /// Bytes the restore writes in place of matching edit `e` (a `pend` set by the response
    /// scan): the originals, each but the last followed by the element's parameters and `, `.
    #[inline(always)]
    pub fn replacement_len(&self, e: &Edit, orig_total: usize) -> usize {
        let params = (e.pend as usize).wrapping_sub(e.end as usize) & 0xffff;
        orig_total + (self.n as usize).saturating_sub(1) * (params + 2)
    }
}

/// Keeps the edits of a response scan whose URI is `st.written`, in order; returns the new
/// length of the message (`s.len` if none match). Userspace form of the kernel's `bpf_loop`.
pub fn select(s: &mut Scan, m: &Msg, st: &RegState) -> usize {
    let mut w = WriteState {
        orig_total: st.orig_total() as u32,
        ..WriteState::default()
    };
    for k in 0..(s.n_edits as usize).min(MAX_EDITS) {
        select_edit(s, m, st, k, &mut w);
    }
    s.n_edits = w.kept;
    s.n_contacts = w.kept;
    (s.len as usize + w.grow as usize).wrapping_sub(w.shrink as usize)
}

/// One selection step (kernel: one `bpf_loop` iteration): keeps edit `k` of a response scan,
/// moved down to `w.kept`, if its URI is `st.written`, and sums what the kept edits add
/// (`w.grow`, with `w.orig_total` = [`RegState::orig_total`]) and remove (`w.shrink`).
#[inline(always)]
pub fn select_edit(s: &mut Scan, m: &Msg, st: &RegState, k: usize, w: &mut WriteState) {
    let e = s.edits[k & (MAX_EDITS - 1)];
    if st.written.matches(m, &e) {
        let kept = w.kept as usize;
        s.edits[kept & (MAX_EDITS - 1)] = e;
        w.kept = kept as u32 + 1;
        w.grow += st.replacement_len(&e, w.orig_total as usize) as u32;
        w.shrink += (e.end as u32).wrapping_sub(e.start as u32);
    }
}

/// Applies a selected restore to `input`, writing into `out`; the new length, or `None` if
/// `out` is too small.
pub fn apply(input: &[u8], s: &Scan, st: &RegState, out: &mut [u8]) -> Option<usize> {
    let mut o = sip::Out::new(out);
    let mut from = 0;
    for e in s.edits() {
        o.put(input.get(from..e.start as usize)?)?;
        let n = (st.n as usize).min(MAX_ORIGINALS);
        for (k, orig) in st.orig[..n].iter().enumerate() {
            o.put(orig.bracketed())?;
            if k + 1 < n {
                o.put(input.get(e.end as usize..e.pend as usize)?)?;
                o.put(b", ")?;
            }
        }
        from = e.end as usize;
    }
    o.put(input.get(from..s.len as usize)?)?;
    Some(o.len)
}

/// What the egress records for a rewritten REGISTER (`s` its scan, `written` the bracketed
/// URI it wrote, `peer` the address it was sent to): `None` if not recordable (no or too long
/// Call-ID, too many, too long or unclean contacts).
pub fn record(input: &[u8], s: &Scan, written: &[u8], peer: AddrKey) -> Option<(RegKey, RegState)> {
    let mut m = Msg::zeroed();
    if !m.load(input) || written.len() > URI_BUF || s.n_contacts as usize > MAX_ORIGINALS {
        return None;
    }
    let mut key = RegKey {
        call_id: [0; MAX_CALLID_LEN],
        dn: DnKey([0; MAX_DN_LEN]),
        call_id_len: 0,
    };
    if !key.fill(&m, s) {
        return None;
    }
    let empty = ContactUri {
        len: 0,
        _pad: [0; 6],
        text: [0; URI_BUF],
    };
    let mut st = RegState {
        n: 0,
        key_check: key.check(),
        written: empty,
        orig: [empty; MAX_ORIGINALS],
        peer,
    };
    st.written.text[..written.len()].copy_from_slice(written);
    st.written.len = written.len() as u16;
    for e in s.edits().iter().filter(|e| e.kind == EDIT_URI) {
        if !st.record(&m, e) {
            return None;
        }
    }
    Some((key, st))
}

/// [`record`] for a REGISTER `input` that the userspace rewrite turned into `rewritten` (with
/// the same `cfg`): the URI written is read from `rewritten` at the first edit, as the kernel
/// reads it back from the packet.
pub fn record_rewritten(
    input: &[u8],
    rewritten: &[u8],
    cfg: &crate::Config,
    peer: AddrKey,
) -> Option<(RegKey, RegState)> {
    let mut m = Msg::zeroed();
    if !m.load(input) {
        return None;
    }
    let s = sip::scan(&m, input.len(), cfg);
    let n = s.n_contacts as usize;
    if s.outcome() != Outcome::Rewrite || n == 0 {
        return None;
    }
    let uri_len = (rewritten.len() + s.removed as usize).checked_sub(input.len())? / n;
    let start = (s.first_uri as usize).checked_sub(s.first_uri_shift as usize)?;
    record(input, &s, rewritten.get(start..start + uri_len)?, peer)
}

/// What the restore did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `len` bytes written to the output, `contacts` elements restored.
    Restored { len: usize, contacts: u32 },
    /// Left as it came, counted under this counter.
    Pass(Stat),
}

/// The counter for a response scan outcome that leaves the packet alone.
pub const fn stat_for_response(o: Outcome) -> Stat {
    match o {
        Outcome::Rewrite => Stat::Restored,
        Outcome::NotRegister => Stat::RespOther,
        Outcome::Malformed => Stat::Malformed,
        // Nothing was recorded for a REGISTER without a usable DN.
        Outcome::DnMissing | Outcome::DnInvalid => Stat::NoState,
        Outcome::Star | Outcome::NoContact => Stat::NoMatch,
        Outcome::TooComplex => Stat::TooBig,
    }
}

/// The whole userspace restore, same algorithm as the ingress programs: scan the response
/// (sent from `peer`), look up the state, select matching contacts, apply.
pub fn restore(
    input: &[u8],
    cfg: &crate::Config,
    peer: AddrKey,
    lookup: impl Fn(&RegKey) -> Option<RegState>,
    out: &mut [u8],
) -> Decision {
    if input.len() < 20 || !input.starts_with(b"SIP/2.0 ") {
        return Decision::Pass(Stat::RespOther);
    }
    let mut m = Msg::zeroed();
    if !m.load(input) {
        return Decision::Pass(Stat::TooBig);
    }
    let mut s = sip::scan_response(&m, input.len(), cfg);
    if s.outcome() != Outcome::Rewrite {
        return Decision::Pass(stat_for_response(s.outcome()));
    }
    let mut key = RegKey {
        call_id: [0; MAX_CALLID_LEN],
        dn: DnKey([0; MAX_DN_LEN]),
        call_id_len: 0,
    };
    if !key.fill(&m, &s) {
        return Decision::Pass(Stat::NoState);
    }
    let Some(st) = lookup(&key)
        .filter(|st| (1..=MAX_ORIGINALS as u32).contains(&st.n) && st.key_check == key.check())
    else {
        return Decision::Pass(Stat::NoState);
    };
    if !st.peer.same(&peer) {
        return Decision::Pass(Stat::WrongSource);
    }
    let new_len = select(&mut s, &m, &st);
    if s.n_edits == 0 {
        return Decision::Pass(Stat::NoMatch);
    }
    if new_len > MAX_SIP_LEN {
        return Decision::Pass(Stat::TooBig);
    }
    match apply(input, &s, &st, out) {
        Some(len) => Decision::Restored {
            len,
            contacts: s.n_edits,
        },
        None => Decision::Pass(Stat::TooBig),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec};

    use super::*;
    use crate::Config;

    const REQ: &[u8] = b"REGISTER sip:198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1:5070;branch=z9hG4bK1\r\nTo: <sip:1002@198.18.0.2>\r\nFrom: <sip:1002@198.18.0.2>;tag=a\r\nCall-ID: abc123\r\nCSeq: 2 REGISTER\r\nContact: <sip:x1@h.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n";

    fn resp(contact: &str) -> std::string::String {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5070;branch=z9hG4bK1\r\nTo: <sip:1002@198.18.0.2>;tag=g\r\nFrom: <sip:1002@198.18.0.2>;tag=a\r\nCall-ID: abc123\r\nCSeq: 2 REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    const GENESYS: AddrKey = AddrKey::v4([198, 18, 0, 2]);

    fn state() -> (RegKey, RegState) {
        let cfg = Config::default();
        let mut m = Msg::zeroed();
        assert!(m.load(REQ));
        let s = sip::scan(&m, REQ.len(), &cfg);
        assert_eq!(s.outcome(), Outcome::Rewrite);
        record(REQ, &s, b"<sip:1002@198.18.0.77>", GENESYS).expect("recordable")
    }

    fn run(input: &str) -> std::string::String {
        let (k, st) = state();
        let mut out = vec![0u8; 2048];
        match restore(
            input.as_bytes(),
            &Config::default(),
            GENESYS,
            |key| (*key == k).then_some(st),
            &mut out,
        ) {
            Decision::Restored { len, .. } => {
                std::string::String::from_utf8(out[..len].to_vec()).unwrap()
            }
            Decision::Pass(why) => format!("pass {}", why.name()),
        }
    }

    /// The written URI matches its own span, bracketed or bare, at every length and
    /// alignment, and no span that differs from it in one byte: the last word of the text
    /// included (the compare stops after the words that hold it).
    #[test]
    fn the_written_uri_matches_itself_and_nothing_one_byte_off() {
        for n in 1..=70usize {
            let uri: std::vec::Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let written = ContactUri::new(&uri).unwrap();
            for lead in 1..9usize {
                for bare in [false, true] {
                    let mut text = vec![b' '; lead];
                    if !bare {
                        text.push(b'<');
                    }
                    text.extend_from_slice(&uri);
                    if !bare {
                        text.push(b'>');
                    }
                    text.extend_from_slice(b";expires=600\r\n");
                    let end = lead + n + if bare { 0 } else { 2 };
                    let e = Edit {
                        start: lead as u16,
                        end: end as u16,
                        kind: EDIT_URI,
                        pend: end as u16,
                    };
                    let mut m = Msg::zeroed();
                    assert!(m.load(&text));
                    assert!(written.matches(&m, &e), "{n} {lead} {bare}");
                    for i in lead + usize::from(!bare)..lead + usize::from(!bare) + n {
                        let mut other = text.clone();
                        other[i] ^= 0x20;
                        assert!(m.load(&other));
                        assert!(!written.matches(&m, &e), "{n} {lead} {bare} byte {i}");
                    }
                }
            }
        }
    }

    /// A snapshot holds every field the restore reads of a record with 1 to 4 originals
    /// (whatever the scratch held before), and reports a consistent copy.
    #[test]
    fn a_snapshot_copies_what_a_record_of_n_originals_uses() {
        for n in 1..=MAX_ORIGINALS {
            let uri = |k: usize| ContactUri::new(format!("sip:client{k}@h{k}.invalid").as_bytes());
            let mut live = RegState {
                n: n as u32,
                key_check: 0x5eed_0000 + n as u32,
                written: ContactUri::new(b"sip:1002@198.18.0.77:5060").unwrap(),
                orig: [ContactUri::new(b"x").unwrap(); MAX_ORIGINALS],
                peer: GENESYS,
            };
            for k in 0..n {
                live.orig[k] = uri(k).unwrap();
            }
            // SAFETY: `RegState` is plain integers: any bytes are a value.
            let mut snap: RegState =
                unsafe { core::mem::transmute([0xaau8; core::mem::size_of::<RegState>()]) };
            // SAFETY: `live` is a valid, aligned `RegState`.
            assert!(unsafe { snap.snapshot(&live) }, "{n}");
            assert_eq!((snap.n, snap.key_check), (live.n, live.key_check));
            assert_eq!(snap.written, live.written);
            assert_eq!(snap.orig[..n], live.orig[..n], "{n}");
            assert_eq!(snap.peer, live.peer);
            assert_eq!(snap.orig_total(), live.orig_total());
        }
    }

    #[test]
    fn a_shorter_fill_leaves_no_byte_of_a_longer_one() {
        // The kernel refills one scratch value: what a longer URI or Call-ID left must go, or
        // records of the same registration would differ and keys would carry stale bytes.
        let long = b"Contact: <sip:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@h.invalid;transport=ws>\r\n";
        let short = b"Contact: <sip:b@h>\r\n";
        let mut m = Msg::zeroed();
        let mut uri = ContactUri::new(b"x").unwrap();
        assert!(m.load(long));
        assert!(uri.fill(&m, 9, long.len() - 11, false));
        assert!(m.load(short));
        assert!(uri.fill(&m, 9, short.len() - 11, false));
        assert_eq!(uri.bracketed(), b"<sip:b@h>");
        assert!(uri.text[uri.len as usize..].iter().all(|&b| b == 0));
        assert!(uri.clean());
        let mut k = key(
            b"a-much-longer-call-id-than-the-next-one@198.18.0.1",
            b"1002",
        );
        let text = b"REGISTER sip:h SIP/2.0\r\nTo: <sip:1002@h>\r\nCall-ID: c1\r\nContact: <sip:x@y>\r\n\r\n";
        assert!(m.load(text));
        let s = sip::scan(&m, text.len(), &Config::default());
        assert!(k.fill(&m, &s));
        assert_eq!(k, key(b"c1", b"1002"));
    }

    fn key(call_id: &[u8], dn: &[u8]) -> RegKey {
        let mut k = RegKey {
            call_id: [0; MAX_CALLID_LEN],
            dn: DnKey::new(dn).unwrap(),
            call_id_len: call_id.len() as u64,
        };
        k.call_id[..call_id.len()].copy_from_slice(call_id);
        k
    }

    const NO_KEY: RegKey = RegKey {
        call_id: [0; MAX_CALLID_LEN],
        dn: DnKey([0; MAX_DN_LEN]),
        call_id_len: 0,
    };

    #[test]
    fn a_dn_keeps_its_newest_call_ids_and_replaces_the_oldest() {
        let dn = DnKey::new(b"1002").unwrap();
        let mut idx = DnRecords::empty(dn_check(&dn));
        let ids: vec::Vec<std::string::String> = (0..MAX_PER_DN + 3)
            .map(|i| format!("call-{i}@client.invalid"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let mut evicted = NO_KEY;
            let got = idx.admit(&key(id.as_bytes(), b"1002"), &mut evicted);
            if i < MAX_PER_DN {
                assert_eq!(got, Admit::Added, "{id}");
                assert_eq!(evicted, NO_KEY, "{id}: nothing evicted");
            } else {
                assert_eq!(got, Admit::Replaced, "{id}");
                // The oldest: the whole record key, DN included, to delete it by.
                assert_eq!(
                    evicted,
                    key(ids[i - MAX_PER_DN].as_bytes(), b"1002"),
                    "{id}"
                );
                assert_eq!(
                    evicted.check(),
                    key(ids[i - MAX_PER_DN].as_bytes(), b"1002").check()
                );
            }
        }
        let newest: vec::Vec<&[u8]> = ids[3..].iter().map(|s| s.as_bytes()).collect();
        assert_eq!(
            idx.call_ids().collect::<vec::Vec<_>>(),
            newest,
            "oldest first"
        );
        assert_eq!(idx.key_check, dn_check(&dn));
        // A refresh of one of them changes nothing.
        let before = idx;
        let mut evicted = NO_KEY;
        assert_eq!(
            idx.admit(&key(newest[1], b"1002"), &mut evicted),
            Admit::Known
        );
        assert_eq!(idx, before);
        assert_eq!(evicted, NO_KEY);
        // A replaced Call-ID coming back is new again: it replaces the oldest of the newest.
        assert_eq!(
            idx.admit(&key(ids[0].as_bytes(), b"1002"), &mut evicted),
            Admit::Replaced
        );
        assert_eq!(evicted, key(newest[0], b"1002"));
    }

    #[test]
    fn call_ids_are_told_apart_by_every_byte_and_the_length() {
        let mut idx = DnRecords::empty(0);
        let mut evicted = NO_KEY;
        let long = [b'x'; MAX_CALLID_LEN];
        let mut long2 = long;
        long2[MAX_CALLID_LEN - 1] = b'y';
        for id in [&b"abc"[..], b"abc\0", b"abd", &long] {
            assert_eq!(
                idx.admit(&key(id, b"7"), &mut evicted),
                Admit::Added,
                "{id:?}"
            );
        }
        for id in [&b"abc"[..], b"abc\0", b"abd", &long] {
            assert_eq!(
                idx.admit(&key(id, b"7"), &mut evicted),
                Admit::Known,
                "{id:?}"
            );
        }
        assert_eq!(idx.admit(&key(&long2, b"7"), &mut evicted), Admit::Replaced);
        assert_eq!(evicted, key(b"abc", b"7"));
        // `reset` is `empty`.
        let mut r = idx;
        r.reset(9);
        assert_eq!(r, DnRecords::empty(9));
        assert!(r.same(&DnRecords::empty(9)) && !r.same(&idx));
    }

    #[test]
    fn restores_bracketed_and_bare_forms_and_leaves_others() {
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.77>;expires=600")),
            resp("<sip:x1@h.invalid;transport=ws>;expires=600")
        );
        assert_eq!(
            run(&resp("sip:1002@198.18.0.77;expires=60")),
            resp("<sip:x1@h.invalid;transport=ws>;expires=60")
        );
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.78>;expires=600")),
            "pass no_match"
        );
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.7>;expires=600")),
            "pass no_match"
        );
        assert_eq!(run(&resp("*")), "pass no_match");
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.77>").replace("abc123", "abc124")),
            "pass no_state"
        );
        // Keys carry the Call-ID's length: a NUL after it is another Call-ID, not padding.
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.77>").replace("abc123", "abc123\0")),
            "pass no_state"
        );
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.77>").replace("2 REGISTER", "2 OPTIONS")),
            "pass resp_other"
        );
        assert_eq!(
            run(&resp("<sip:1002@198.18.0.77>").replace("200 OK", "401 Unauthorized")),
            "pass resp_other"
        );
    }
}
