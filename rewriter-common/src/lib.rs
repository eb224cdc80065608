//! Shared between the eBPF program (`rewriter-ebpf`) and userspace (`rewriter-user`, tests).
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]` with explicit padding so
//! both sides agree on the layout byte for byte.
#![no_std]

/// Default Genesys SIP port.
pub const DEFAULT_PORT: u16 = 5060;

pub mod restore;
pub mod sip;

/// Longest DN (RFC 3261 `user` of the To URI) the rewriter accepts.
pub const MAX_DN_LEN: usize = 64;
/// Longest Contact URI in the DN map or produced by the template, brackets excluded.
pub const MAX_URI_LEN: usize = 128;
/// Bytes reserved for a bracketed URI (`<` URI `>`), rounded up to a multiple of 8.
pub const URI_BUF: usize = 136;
/// Most parameter names in the keep list.
pub const MAX_KEEP: usize = 8;
/// Longest parameter name the keep list can hold.
pub const KEEP_NAME_LEN: usize = 16;
/// Most Genesys destination addresses.
pub const MAX_GENESYS_ADDRS: u32 = 64;
/// Slots of the `CONFIG` array map. A program run reads `CONFIG_SLOT[0]` once and uses that
/// slot for everything; userspace writes the other slot and then switches, waiting for the runs
/// that may still read a slot before it writes it again (rewriter-user `config_slots`).
pub const CONFIG_SLOTS: u32 = 2;
/// Capacity of the DN → Contact map.
pub const MAX_CONTACTS: u32 = 131_072;
/// The two DN → Contact maps; [`Config::dn_map`] names the one program runs use. A whole new
/// set (`contact import`) is written into the other one and becomes live with the
/// configuration that names it, so a packet sees the old set or the new one, never a mix.
pub const DN_MAPS: [&str; 2] = [names::CONTACTS, names::CONTACTS_B];

/// Names in the eBPF object, defined once: the eBPF crate's `#[map]` statics and programs carry
/// exactly these identifiers, and userspace loads, pins and finds them by these strings.
pub mod names {
    /// The configuration versions (`Array<Config>`, [`crate::CONFIG_SLOTS`] entries).
    pub const CONFIG: &str = "CONFIG";
    /// Which `CONFIG` slot is current.
    pub const CONFIG_SLOT: &str = "CONFIG_SLOT";
    /// Per-CPU counters, indexed by [`crate::Stat`].
    pub const STATS: &str = "STATS";
    /// DN → Contact, the first of [`crate::DN_MAPS`].
    pub const CONTACTS: &str = "CONTACTS";
    /// DN → Contact, the second of [`crate::DN_MAPS`].
    pub const CONTACTS_B: &str = "CONTACTS_B";
    /// The Genesys address set.
    pub const GENESYS: &str = "GENESYS";
    /// The restore records (LRU).
    pub const REGS: &str = "REGS";
    /// DN → the Call-IDs of its restore records (LRU), for the per-DN bound.
    pub const REGS_BY_DN: &str = "REGS_BY_DN";
    /// Maps pinned per attachment (the per-CPU scratch is not: it holds nothing between runs).
    pub const PINNED_MAPS: [&str; 8] = [
        CONFIG,
        CONFIG_SLOT,
        STATS,
        CONTACTS,
        CONTACTS_B,
        GENESYS,
        REGS,
        REGS_BY_DN,
    ];
    /// The TC egress rewrite.
    pub const PROGRAM_EGRESS: &str = "sip_rewriter";
    /// The ingress restore as an XDP program.
    pub const PROGRAM_XDP: &str = "sip_restore_xdp";
    /// The ingress restore as a TC ingress classifier.
    pub const PROGRAM_TC_INGRESS: &str = "sip_restore_tc";
}

/// `Config::flags`: keep every Contact header parameter.
pub const CFG_KEEP_ALL: u16 = 1 << 0;
/// `Config::flags`: a default template is set (`tpl_pre`/`tpl_post`).
pub const CFG_HAS_DEFAULT: u16 = 1 << 1;
/// `Config::flags`: only destinations in the `GENESYS` address set are candidates.
pub const CFG_ADDR_FILTER: u16 = 1 << 2;
/// `Config::flags`: the XDP restore runs in front of the TC ingress one, which then handles
/// only the frames XDP handed over (marked with [`XDP_HANDOFF`] in the XDP metadata).
pub const CFG_TC_AFTER_XDP: u16 = 1 << 3;
/// XDP metadata word marking a frame the XDP restore leaves to the TC ingress restore (no
/// tailroom to grow, or a checksum XDP cannot update).
pub const XDP_HANDOFF: u32 = 0x5349_5052;

/// Runtime configuration, one entry in the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// UDP destination port of the Genesys SIP server, host byte order.
    pub port: u16,
    /// `CFG_*` flags.
    pub flags: u16,
    /// Entries used in `keep`.
    pub keep_count: u16,
    /// Bytes used in `tpl_pre`.
    pub tpl_pre_len: u16,
    /// Bytes used in `tpl_post`.
    pub tpl_post_len: u16,
    /// Index into [`DN_MAPS`] of the DN map in use (0 or 1).
    pub dn_map: u16,
    pub _pad: [u16; 2],
    /// Contact parameter names to keep: lowercase, zero-padded, as two little-endian words.
    pub keep: [[u64; 2]; MAX_KEEP],
    /// Default template text before `{dn}`, with the opening `<` (e.g. `<sip:`).
    pub tpl_pre: [u8; URI_BUF],
    /// Default template text after `{dn}`, with the closing `>` (e.g. `@192.168.210.54:5060>`).
    pub tpl_post: [u8; URI_BUF],
}

impl Config {
    /// Port only: no keep list (every parameter dropped), no template, any destination.
    pub const fn new(port: u16) -> Self {
        Self {
            port,
            flags: 0,
            keep_count: 0,
            tpl_pre_len: 0,
            tpl_post_len: 0,
            dn_map: 0,
            _pad: [0; 2],
            keep: [[0; 2]; MAX_KEEP],
            tpl_pre: [0; URI_BUF],
            tpl_post: [0; URI_BUF],
        }
    }

    /// Adds a parameter name to the keep list; `false` if the list is full or the name too long.
    pub fn add_keep(&mut self, name: &[u8]) -> bool {
        let n = self.keep_count as usize;
        if n >= MAX_KEEP || name.is_empty() || name.len() > KEEP_NAME_LEN {
            return false;
        }
        let mut b = [0u8; KEEP_NAME_LEN];
        for (d, s) in b.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        self.keep[n] = [lo, hi];
        self.keep_count += 1;
        true
    }

    /// Sets the default template from its parts around `{dn}` (without brackets); `false` if
    /// the parts are too long for a `MAX_URI_LEN` URI.
    pub fn set_template(&mut self, pre: &[u8], post: &[u8]) -> bool {
        if pre.len() + post.len() + 1 > MAX_URI_LEN {
            return false;
        }
        self.tpl_pre = [0; URI_BUF];
        self.tpl_post = [0; URI_BUF];
        self.tpl_pre[0] = b'<';
        self.tpl_pre[1..1 + pre.len()].copy_from_slice(pre);
        self.tpl_post[..post.len()].copy_from_slice(post);
        self.tpl_post[post.len()] = b'>';
        self.tpl_pre_len = (pre.len() + 1) as u16;
        self.tpl_post_len = (post.len() + 1) as u16;
        self.flags |= CFG_HAS_DEFAULT;
        true
    }

    pub fn template(&self) -> Option<(&[u8], &[u8])> {
        (self.flags & CFG_HAS_DEFAULT != 0).then(|| {
            (
                &self.tpl_pre[..(self.tpl_pre_len as usize).min(URI_BUF)],
                &self.tpl_post[..(self.tpl_post_len as usize).min(URI_BUF)],
            )
        })
    }
}

impl Default for Config {
    /// Port 5060, keep `expires` and `q`, no template, any destination.
    fn default() -> Self {
        let mut c = Self::new(DEFAULT_PORT);
        c.add_keep(b"expires");
        c.add_keep(b"q");
        c
    }
}

/// Key of the DN → Contact map: the DN bytes as they appear in the To URI, zero-padded.
/// 8-byte aligned so the kernel builds and copies it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnKey(pub [u8; MAX_DN_LEN]);

impl DnKey {
    pub fn new(dn: &[u8]) -> Option<Self> {
        if dn.is_empty() || dn.len() > MAX_DN_LEN {
            return None;
        }
        let mut k = [0u8; MAX_DN_LEN];
        k[..dn.len()].copy_from_slice(dn);
        Some(DnKey(k))
    }

    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(MAX_DN_LEN);
        &self.0[..n]
    }
}

/// Value of the DN → Contact map: the Contact URI as the kernel splices it, `<` URI `>`.
/// 8-byte aligned so the kernel copies it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactUri {
    /// Bytes used in `text`, brackets included.
    pub len: u16,
    pub _pad: [u8; 6],
    pub text: [u8; URI_BUF],
}

/// Whether `c` may appear in a Contact URI that sip-rewriter writes (configured, or recorded
/// from a REGISTER for the restore): printable ASCII (RFC 3261 URIs escape the rest) without
/// `<`, `>` and `"`, which would end the `<...>` or open a quoted string in the header. The
/// same rule as the CLI's URI validation.
pub const fn is_uri_byte(c: u8) -> bool {
    c > b' ' && c < 0x7f && c != b'<' && c != b'>' && c != b'"'
}

/// High bit set in each byte of `x` that [`is_uri_byte`] refuses (word at a time).
#[inline(always)]
pub const fn bad_uri_bytes(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = LO << 7;
    let low7 = x & !HI;
    // Bytes below 0x21: adding 0x80 - 0x21 to the low seven bits sets no high bit.
    let below = !low7.wrapping_add(LO * (0x80 - 0x21)) & HI;
    (x & HI)
        | below
        | sip::zero_bytes(x ^ (LO * 0x7f))
        | sip::zero_bytes(x ^ (LO * b'<' as u64))
        | sip::zero_bytes(x ^ (LO * b'>' as u64))
        | sip::zero_bytes(x ^ (LO * b'"' as u64))
}

impl ContactUri {
    /// Whether every byte between the brackets passes [`is_uri_byte`], for a text as
    /// `restore` fills it: `<`, the URI, `>`, then zeroes to the end of the buffer.
    ///
    /// Branch-free over a fixed number of words (branches would multiply the verifier's
    /// states): the refused bytes are exactly the `<`, the `>` and the zero padding when the
    /// URI itself is clean, so it suffices to count them.
    #[inline(always)]
    pub fn clean(&self) -> bool {
        let len = self.len as usize;
        if !(3..=URI_BUF).contains(&len) {
            return false;
        }
        let words = self.text.as_ptr() as *const u64;
        let mut refused = 0u64;
        let mut j = 0;
        while j < URI_BUF / 8 {
            // SAFETY: `text` is 8-aligned (offset 8 in an 8-aligned struct) and j < URI_BUF / 8.
            let t = unsafe { core::ptr::read(words.add(j)) };
            // One per refused byte, summed across the lanes into the top byte.
            refused += ((bad_uri_bytes(t) >> 7).wrapping_mul(0x0101_0101_0101_0101)) >> 56;
            j += 1;
        }
        refused == (URI_BUF - len + 2) as u64
    }

    /// From a URI without brackets; `None` if longer than `MAX_URI_LEN` or empty.
    pub fn new(uri: &[u8]) -> Option<Self> {
        if uri.is_empty() || uri.len() > MAX_URI_LEN {
            return None;
        }
        let mut text = [0u8; URI_BUF];
        text[0] = b'<';
        text[1..1 + uri.len()].copy_from_slice(uri);
        text[1 + uri.len()] = b'>';
        Some(Self {
            len: (uri.len() + 2) as u16,
            _pad: [0; 6],
            text,
        })
    }

    /// The bracketed form.
    pub fn bracketed(&self) -> &[u8] {
        &self.text[..(self.len as usize).min(URI_BUF)]
    }

    /// The URI without brackets.
    pub fn uri(&self) -> &[u8] {
        let b = self.bracketed();
        if b.len() >= 2 {
            &b[1..b.len() - 1]
        } else {
            &[]
        }
    }
}

/// Key of the Genesys address set: IPv6 address, IPv4 as IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrKey(pub [u8; 16]);

impl AddrKey {
    /// Byte-wise equality without `memcmp` (which the BPF target lacks).
    #[inline(always)]
    pub const fn same(&self, other: &AddrKey) -> bool {
        let mut diff = 0u8;
        let mut i = 0;
        while i < 16 {
            diff |= self.0[i] ^ other.0[i];
            i += 1;
        }
        diff == 0
    }

    pub const fn v4(a: [u8; 4]) -> Self {
        AddrKey([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ])
    }
}

/// Per-CPU scratch space of the eBPF program (one entry): the message copy and the scan state.
#[repr(C)]
pub struct Scratch {
    pub msg: sip::Msg,
    /// The rewritten region read back from the packet, for the checksum difference.
    pub out: sip::Msg,
    pub scan: sip::Scan,
    /// The DN as a map key (a map value, so building it costs the verifier no stack states).
    pub key: DnKey,
    /// Snapshot of the DN map entry used for this packet, so a concurrent `contact add` cannot
    /// change its length between sizing and writing.
    pub uri: ContactUri,
    /// Progress of the write stage (kernel `bpf_loop`).
    pub write: WriteState,
    /// Restore-state key of the message (egress: to record; ingress: to look up).
    pub reg_key: restore::RegKey,
    /// Egress: the state being recorded; ingress: snapshot of the recorded state.
    pub reg: restore::RegState,
    /// Egress, a new record: copy of its DN's index entry, updated by `DnRecords::admit`.
    pub dn_recs: restore::DnRecords,
    /// Egress: the key of the record the per-DN bound replaces.
    pub evict_key: restore::RegKey,
    /// The IP and UDP header fields the write stage changes, as they came: to compute the
    /// new ones from, and to undo a rewrite a helper failed in (see `rewriter-ebpf`).
    pub hdr_old: HdrBlock,
    /// The frame's offsets on their way through memory before the write stage (see
    /// `rewriter-ebpf`'s `Frame::forgotten`).
    pub frame: [u64; 3],
    /// Room after the buffers, so that the verifier's worst case for a checksum chunk of
    /// `out` (masked offset + 512 bytes) stays inside the map value.
    pub _guard: [u8; 128],
}

/// The header fields the write stage changes, copied in two constant-size pieces (one copy
/// whose size was computed from the frame's offsets took v6.1's verifier from 381 k to 458 k
/// processed insns for sip_rewriter).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct HdrBlock {
    /// [`IP_PART`] bytes from the IP length field: IPv4 `tot_len` to the end of `check`;
    /// IPv6 `payload_len` and the 8 bytes after it (unchanged, written back as they were).
    pub ip: [u8; 16],
    /// The UDP header.
    pub udp: [u8; 8],
}

/// Bytes of [`HdrBlock::ip`] copied: IPv4 `tot_len` (offset 2) to the end of `check`
/// (offset 12), RFC 791 3.1.
pub const IP_PART: usize = 10;

/// Where the kernel's write stage is; see `rewriter-ebpf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteState {
    /// Packet offset of the next byte to write.
    pub out: u32,
    /// Message offset of the next original byte to copy.
    pub from: u32,
    /// 1: the new URI is `Scratch::uri`; 0: the default template around the DN.
    pub mapped: u32,
    /// Template lengths snapshotted when the packet was sized.
    pub pre_len: u32,
    pub post_len: u32,
    /// Non-zero once a helper failed.
    pub err: u32,
    /// Ingress selection: matching contacts kept so far, bytes they add and remove, and the
    /// originals' total length.
    pub kept: u32,
    pub grow: u32,
    pub shrink: u32,
    pub orig_total: u32,
    /// Egress, escaped DN: read and write positions of its decoding into `Scratch::key`
    /// (`sip::decode_dn_step`); `dn_wr` is the decoded length once done.
    pub dn_rd: u32,
    pub dn_wr: u32,
    /// Egress recording: what the record lookup found (`rewriter-ebpf`'s `FOUND_*`).
    pub found: u32,
    pub _pad: u32,
}

/// Per-CPU counters, one slot of the `STATS` array per variant.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// UDP datagrams to the Genesys port (and address set, if configured): candidates.
    Seen = 0,
    /// Candidates that are SIP/2.0 REGISTER requests.
    Register,
    /// Packets rewritten.
    Rewritten,
    /// Contacts rewritten (a packet may carry several).
    Contacts,
    /// REGISTERs with `Contact: *` (left alone).
    Star,
    /// Candidates that are not REGISTER requests.
    NotRegister,
    /// REGISTERs whose To URI has no user part (or no To header).
    DnMissing,
    /// REGISTERs whose To user is not a valid RFC 3261 user of 1..=64 bytes.
    DnInvalid,
    /// DN neither in the map nor covered by a default template.
    DnUnknown,
    /// REGISTERs with no Contact header.
    NoContact,
    /// Truncated or malformed SIP (e.g. no end of headers).
    Malformed,
    /// Too large: past the scan limit or the MTU after growth, GSO, too many contacts.
    TooBig,
    /// IP fragments.
    Fragment,
    /// A helper failed; the packet was left as it came.
    Error,
    /// Rewritten REGISTERs whose original Contact(s) were recorded for the restore.
    Recorded,
    /// Rewritten REGISTERs not recorded: no Call-ID or one over 64 bytes, more than 4 contacts,
    /// an original URI over 128 bytes, or the state map refused the entry.
    NotRecorded,
    /// Ingress: UDP datagrams from the Genesys port (and address set): restore candidates.
    Responses,
    /// Ingress: responses whose Contact(s) got the client's original back.
    Restored,
    /// Ingress: contact elements restored.
    RestoredContacts,
    /// Ingress: 2xx to REGISTER with no recorded state for its Call-ID and DN.
    NoState,
    /// Ingress: recorded state, but no contact equals the URI the egress wrote.
    NoMatch,
    /// Ingress: anything but a 2xx response to REGISTER (requests, 1xx, 4xx, 200 to OPTIONS).
    RespOther,
    /// Ingress XDP: frames handed to the TC ingress restore through XDP metadata (lost where
    /// the driver has no metadata support): no tailroom to grow, or a UDP checksum XDP cannot
    /// update (it does not verify, e.g. CHECKSUM_PARTIAL from a local sender).
    ToTc,
    /// QinQ frames (an 802.1ad tag, or two 802.1Q tags); whether they carry SIP is not looked at.
    VlanUnsupported,
    /// IPv6 datagrams to (ingress: from) the Genesys port behind extension headers
    /// (hop-by-hop, destination options, routing): left alone.
    Ipv6Ext,
    /// Ingress: a 2xx to a recorded REGISTER from another address than the REGISTER went to.
    WrongSource,
    /// Records deleted because a new Call-ID of their DN came when the DN held
    /// `restore::MAX_PER_DN` (its oldest is replaced).
    RecordReplaced,
}

impl Stat {
    /// Number of counters (size of the `STATS` map).
    pub const COUNT: u32 = 27;
    /// Every counter, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Seen,
        Stat::Register,
        Stat::Rewritten,
        Stat::Contacts,
        Stat::Star,
        Stat::NotRegister,
        Stat::DnMissing,
        Stat::DnInvalid,
        Stat::DnUnknown,
        Stat::NoContact,
        Stat::Malformed,
        Stat::TooBig,
        Stat::Fragment,
        Stat::Error,
        Stat::Recorded,
        Stat::NotRecorded,
        Stat::Responses,
        Stat::Restored,
        Stat::RestoredContacts,
        Stat::NoState,
        Stat::NoMatch,
        Stat::RespOther,
        Stat::ToTc,
        Stat::VlanUnsupported,
        Stat::Ipv6Ext,
        Stat::WrongSource,
        Stat::RecordReplaced,
    ];

    /// Stable name used in CLI output, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Seen => "seen",
            Stat::Register => "register",
            Stat::Rewritten => "rewritten",
            Stat::Contacts => "contacts",
            Stat::Star => "star",
            Stat::NotRegister => "not_register",
            Stat::DnMissing => "dn_missing",
            Stat::DnInvalid => "dn_invalid",
            Stat::DnUnknown => "dn_unknown",
            Stat::NoContact => "no_contact",
            Stat::Malformed => "malformed",
            Stat::TooBig => "too_big",
            Stat::Fragment => "fragment",
            Stat::Error => "error",
            Stat::Recorded => "recorded",
            Stat::NotRecorded => "not_recorded",
            Stat::Responses => "responses",
            Stat::Restored => "restored",
            Stat::RestoredContacts => "restored_contacts",
            Stat::NoState => "no_state",
            Stat::NoMatch => "no_match",
            Stat::RespOther => "resp_other",
            Stat::ToTc => "to_tc",
            Stat::VlanUnsupported => "vlan_unsupported",
            Stat::Ipv6Ext => "ipv6_ext",
            Stat::WrongSource => "wrong_source",
            Stat::RecordReplaced => "record_replaced",
        }
    }

    /// The counter for a scan outcome that leaves the packet alone.
    pub const fn for_outcome(o: sip::Outcome) -> Stat {
        match o {
            sip::Outcome::Rewrite => Stat::Rewritten,
            sip::Outcome::NotRegister => Stat::NotRegister,
            sip::Outcome::Malformed => Stat::Malformed,
            sip::Outcome::DnMissing => Stat::DnMissing,
            sip::Outcome::DnInvalid => Stat::DnInvalid,
            sip::Outcome::Star => Stat::Star,
            sip::Outcome::NoContact => Stat::NoContact,
            sip::Outcome::TooComplex => Stat::TooBig,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all seven): `repr(C)`, `Copy`, integers and byte arrays only, no implicit padding
    // (checked by the size tests below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::DnKey {}
    unsafe impl aya::Pod for super::ContactUri {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::restore::RegKey {}
    unsafe impl aya::Pod for super::restore::RegState {}
    unsafe impl aya::Pod for super::restore::DnRecords {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_dn_is_compared_decoded() {
        extern crate std;
        use std::vec::Vec;
        let dn = |to: &str| -> Option<Vec<u8>> {
            let msg = std::format!(
                "REGISTER sip:h SIP/2.0\r\nTo: <sip:{to}@h>\r\nCall-ID: c\r\nContact: <sip:x@y>\r\n\r\n"
            );
            let mut m = sip::Msg::zeroed();
            assert!(m.load(msg.as_bytes()));
            let s = sip::scan(&m, msg.len(), &Config::default());
            assert_eq!(s.outcome(), sip::Outcome::Rewrite, "{to}");
            if s.flags & sip::DN_ESCAPED == 0 {
                return Some(to.as_bytes().to_vec());
            }
            sip::decode_dn(&m, &s).map(|(b, n)| b[..n].to_vec())
        };
        assert_eq!(dn("%31002").as_deref(), Some(&b"1002"[..]));
        assert_eq!(dn("%2b1%2B2").as_deref(), Some(&b"+1+2"[..]));
        assert_eq!(dn("1002").as_deref(), Some(&b"1002"[..]));
        for bad in ["1070%0d%0aX", "null-%00-null", "a%40b", "100%25"] {
            assert_eq!(dn(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_word_check_refuses_exactly_the_bytes_is_uri_byte_refuses() {
        for c in 0..=255u8 {
            for lane in 0..8 {
                // The byte in one lane, good bytes around it.
                let mut b = [b'a'; 8];
                b[lane] = c;
                let hits = bad_uri_bytes(u64::from_le_bytes(b));
                assert_eq!(
                    hits,
                    if is_uri_byte(c) {
                        0
                    } else {
                        0x80 << (8 * lane)
                    },
                    "{c:#x} lane {lane}"
                );
            }
        }
        let uri = |s: &[u8]| ContactUri::new(s).unwrap();
        assert!(uri(b"sip:84jp7d1i@3tglb5esjoiv.invalid;transport=ws").clean());
        for bad in [
            &b"sip:me@v.invalid\nX-Injected: yes"[..],
            b"sip:a\0b@h",
            b"sip:a\"b@h",
            b"sip:a b@h",
            b"sip:a<b@h",
        ] {
            assert!(!uri(bad).clean(), "{bad:?}");
        }
        assert!(!uri(b"sip:abcdefg\x7f").clean());
    }

    #[test]
    fn config_has_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<Config>(),
            6 * 2 + 4 + MAX_KEEP * 16 + 2 * URI_BUF
        );
        assert_eq!(core::mem::size_of::<ContactUri>(), 2 + 6 + URI_BUF);
        assert_eq!(core::mem::size_of::<DnKey>(), MAX_DN_LEN);
        assert_eq!(
            core::mem::size_of::<sip::Scan>(),
            24 * 4 + 8 + sip::MAX_EDITS * (8 + 16 + 2) + 8 * 4
        );
        assert_eq!(core::mem::size_of::<sip::Elem>(), 16);
        assert_eq!(
            core::mem::size_of::<restore::RegKey>(),
            restore::MAX_CALLID_LEN + MAX_DN_LEN + 8
        );
        assert_eq!(
            core::mem::size_of::<restore::RegState>(),
            8 + (1 + restore::MAX_ORIGINALS) * core::mem::size_of::<ContactUri>() + 16
        );
        assert_eq!(
            core::mem::size_of::<restore::DnRecords>(),
            restore::MAX_PER_DN * (restore::MAX_CALLID_LEN + 8) + 8
        );
    }

    #[test]
    fn stat_indices_are_dense() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
