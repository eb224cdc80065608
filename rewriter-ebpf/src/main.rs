//! TC egress classifier of sip-rewriter: rewrites the Contact header(s) of SIP REGISTERs sent
//! over UDP to the Genesys port, with the scan/rewrite algorithm of `rewriter_common::sip`.
//!
//! It never drops a packet: every path returns [`TC_ACT_UNSPEC`], which hands the packet on to
//! the next TCX program or, if there is none, lets it leave. Anything it does not fully
//! understand leaves byte-identical and is counted in `STATS`.
//!
//! Both loops (scan, write) run under `bpf_loop` (v5.17, commit e6f2dd0f8067; inlined by the
//! verifier since v6.0, commit 1ade23711971, when the callback and flags are constant), whose
//! callback the verifier checks once instead of once per iteration:
//! <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/bpf_iter.c#L740-L774>.
#![no_std]
#![no_main]

mod csum;
mod ingress;
mod pkt;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::generated::bpf_loop,
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use aya_log_ebpf::{info, warn};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use pkt::{Frame, Pkt, Raw};
use rewriter_common::{
    AddrKey, CFG_ADDR_FILTER, CFG_HAS_DEFAULT, CONFIG_SLOTS, Config, ContactUri, DnKey,
    MAX_CONTACTS, MAX_DN_LEN, MAX_GENESYS_ADDRS, Scratch, Stat, URI_BUF,
    restore::{MAX_REGISTRATIONS, RegKey, RegState, copy_aligned},
    sip::{self, EDIT_URI, MAX_EDITS, MAX_SIP_LEN, MAX_STEPS, Outcome, TAIL_PAD},
};

/// Runtime configuration written by userspace: [`CONFIG_SLOTS`] versions, the current one
/// named by [`CONFIG_SLOT`]; read through [`config`] only.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Index of the current [`CONFIG`] slot.
#[map]
static CONFIG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// The configuration of this program run: the slot `CONFIG_SLOT` names, read once. Userspace
/// never writes a slot that a run may still be reading, so one packet sees one version
/// (template, keep list, flags, port) from its first look to its last write.
#[inline(always)]
fn config() -> Option<&'static Config> {
    // SAFETY: an array map value of the program's own map, valid for the whole run.
    let slot = unsafe { core::ptr::read_volatile(CONFIG_SLOT.get_ptr(0)?) };
    CONFIG.get(slot % CONFIG_SLOTS)
}

/// Per-CPU counters indexed by [`Stat`].
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// DN → bracketed Contact URI, filled by `sip-rewriter contact ...`, when `Config::dn_map` is
/// 0 ([`rewriter_common::DN_MAPS`]). Not preallocated: most deployments use a small part of it,
/// and an update links a new element before the old one is unlinked, so a lookup sees one entry
/// whole (kernel/bpf/hashtab.c `htab_map_update_elem()`, v6.1 to v6.18: "add new element to the
/// head of the list, so that concurrent search will find it before old elem").
#[map]
static CONTACTS: HashMap<DnKey, ContactUri> =
    HashMap::with_max_entries(MAX_CONTACTS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// The other DN map, used when `Config::dn_map` is 1: `contact import` fills the map not in
/// use and switches with the configuration.
#[map]
static CONTACTS_B: HashMap<DnKey, ContactUri> =
    HashMap::with_max_entries(MAX_CONTACTS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Genesys destination addresses (IPv4-mapped for IPv4); used when `CFG_ADDR_FILTER` is set.
#[map]
static GENESYS: HashMap<AddrKey, u8> = HashMap::with_max_entries(MAX_GENESYS_ADDRS, 0);

/// (Call-ID, DN) -> the URI the egress wrote and the client's original URIs, for the ingress
/// restore. LRU: a client that stops registering ages out; always preallocated (the kernel
/// refuses `BPF_F_NO_PREALLOC` for LRU maps:
/// <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/hashtab.c#L447-L448>).
#[map]
static REGS: LruHashMap<RegKey, RegState> = LruHashMap::with_max_entries(MAX_REGISTRATIONS, 0);

/// Per-CPU scratch: the payload copy and the scan state (too big for the 512-byte stack).
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Egress entry point.
#[classifier]
pub fn sip_rewriter(ctx: TcContext) -> i32 {
    if let Err(stat) = try_sip_rewriter::<STAGE_ALL>(&ctx) {
        count(stat);
        if stat as u32 == Stat::Error as u32 {
            let n = read(Stat::Error);
            if n.is_power_of_two() || n % 65536 == 0 {
                warn!(
                    &ctx,
                    "a helper failed (#{} on this CPU); packet left unchanged", n
                );
            }
        }
    }
    TC_ACT_UNSPEC
}

/// The floor for `cargo xtask bench`: a classifier that does nothing. Not attached by the CLI
/// (and, like the other `bench_` programs, never verified unless the bench loads it).
#[classifier]
pub fn bench_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// `cargo xtask bench` phase timing: everything up to copying the payload.
#[classifier]
pub fn bench_copy(ctx: TcContext) -> i32 {
    let _ = try_sip_rewriter::<STAGE_COPY>(&ctx);
    TC_ACT_UNSPEC
}

/// `cargo xtask bench` phase timing: everything up to the end of the scan (packet untouched).
#[classifier]
pub fn bench_scan(ctx: TcContext) -> i32 {
    let _ = try_sip_rewriter::<STAGE_SCAN>(&ctx);
    TC_ACT_UNSPEC
}

/// IPv6 extension headers looked through before UDP.
const MAX_IPV6_EXT: usize = 2;
/// The unit of an IPv6 extension header's length field, and the length of its first unit
/// (RFC 8200 4.3: "in 8-octet units, not including the first 8 octets").
const IPV6_EXT_UNIT: usize = 8;

/// The first two bytes of an IPv6 hop-by-hop, routing or destination options header.
#[repr(C)]
struct Ipv6ExtHdr {
    next_hdr: u8,
    len: u8,
}

/// How far [`try_sip_rewriter`] goes (the `bench_` programs stop early).
const STAGE_COPY: u8 = 1;
const STAGE_SCAN: u8 = 2;
const STAGE_ALL: u8 = 3;

/// `Err(stat)`: the packet leaves as it came and `stat` is counted. `Err(Stat::Seen)` is used
/// for "not a candidate" and is not counted a second time (see [`count`]).
type Verdict = Result<(), Stat>;

#[inline(always)]
fn try_sip_rewriter<const STAGE: u8>(ctx: &TcContext) -> Verdict {
    let cfg = config().ok_or(Stat::Error)?;
    let f = candidate(ctx, cfg, false)?;
    add(Stat::Seen, 1);
    // A GSO skb is several datagrams' worth; bpf_skb_change_tail would drop its GSO state.
    if ctx.is_gso() {
        return Err(Stat::TooBig);
    }
    let (payload, n, scratch) = sip_payload(ctx, &f, b"REGISTER", Stat::NotRegister)?;
    if STAGE == STAGE_COPY {
        return Ok(());
    }
    scratch.scan.reset(n);
    run_scan::<false>(scratch, cfg);
    let outcome = scratch.scan.outcome();
    if outcome != Outcome::NotRegister {
        count(Stat::Register);
    }
    if outcome != Outcome::Rewrite {
        return Err(Stat::for_outcome(outcome));
    }
    if STAGE == STAGE_SCAN {
        return Ok(());
    }
    rewrite(ctx, cfg, &f, payload, n, scratch)
}

/// Runs the scan (state already reset) to the end, one step per `bpf_loop` iteration;
/// `RESP`: of a response (ingress restore), see `sip::step`.
#[inline(always)]
fn run_scan<const RESP: bool>(scratch: &mut Scratch, cfg: &Config) {
    run_loop(MAX_STEPS, step_cb::<RESP>, scratch, cfg, ());
}

/// What every `bpf_loop` callback gets, on the caller's stack: the scratch, the configuration
/// and the raw packet context.
#[repr(C)]
pub(crate) struct LoopCtx<R> {
    scratch: *mut Scratch,
    cfg: *const Config,
    raw: R,
}

/// A `bpf_loop` callback: `index`, and a `LoopCtx` as `ctx`; returns 0 to go on, 1 to stop.
pub(crate) type Callback = extern "C" fn(u64, *mut c_void) -> i64;

/// Calls `cb` up to `n` times with a [`LoopCtx`]. The scratch goes through the context rather
/// than being looked up again by the callback: the compiler then sees that the loop may change
/// it and reloads what the callback wrote (a fresh map lookup in the callback would alias the
/// caller's `&mut` behind the compiler's back).
#[inline(always)]
pub(crate) fn run_loop<R: Copy>(n: u32, cb: Callback, scratch: &mut Scratch, cfg: &Config, raw: R) {
    let mut c = LoopCtx {
        scratch: &raw mut *scratch,
        cfg,
        raw,
    };
    // SAFETY: the callback has the signature bpf_loop expects; `c` outlives the call.
    unsafe {
        bpf_loop(
            n,
            cb as *mut c_void,
            &mut c as *mut LoopCtx<R> as *mut c_void,
            0,
        )
    };
}

/// Unpacks a callback's `ctx`.
///
/// # Safety
/// `ctx` must be the live `LoopCtx<R>` of [`run_loop`]; its pointers are map values valid for
/// the whole program run, and the caller uses no reference to them while `bpf_loop` runs.
#[inline(always)]
pub(crate) unsafe fn loop_ctx<'a, R: Copy>(ctx: *mut c_void) -> (&'a mut Scratch, &'a Config, R) {
    // SAFETY: see the function's contract.
    unsafe {
        let c = &*(ctx as *const LoopCtx<R>);
        (&mut *c.scratch, &*c.cfg, c.raw)
    }
}

/// One scan step per `bpf_loop` iteration; the verifier checks this body once.
#[inline(never)]
extern "C" fn step_cb<const RESP: bool>(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (scratch, cfg, ()) = unsafe { loop_ctx::<()>(ctx) };
    if sip::step::<RESP>(&mut scratch.scan, &scratch.msg, cfg) {
        0
    } else {
        1
    }
}

/// UDP to (egress) or from (`ingress`) the Genesys port and address set, over Ethernet
/// (+802.1Q) and IPv4/IPv6.
#[inline(always)]
fn candidate<P: Pkt>(ctx: &P, cfg: &Config, ingress: bool) -> Result<Frame, Stat> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(Stat::Seen)?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = EthHdr::LEN;
    let is_vlan = |t: u16| t == EtherType::Ieee8021q as u16 || t == EtherType::Ieee8021ad as u16;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: *const VlanHdr = ptr_at(ctx, l3).ok_or(Stat::Seen)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = unsafe { (*vlan).ether_type };
        l3 += VlanHdr::LEN;
    }
    if is_vlan(ether_type) {
        // QinQ (802.1ad, or a second 802.1Q tag): a third IP header offset would make the
        // verifier walk every later path once more per offset (v6.1: past its budget), so
        // such frames pass, counted, whether or not they carry SIP.
        return Err(Stat::VlanUnsupported);
    }
    let port = if cfg.port == 0 {
        rewriter_common::DEFAULT_PORT
    } else {
        cfg.port
    };
    let (f, dst, fragment) = if ether_type == EtherType::Ipv4 as u16 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(Stat::Seen)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (ihl, proto, frags, tot_len, dst) = unsafe {
            (
                (*ip).ihl() as usize,
                (*ip).proto,
                (*ip).frags,
                (*ip).tot_len(),
                if ingress {
                    (*ip).src_addr
                } else {
                    (*ip).dst_addr
                },
            )
        };
        if proto != IpProto::Udp as u8 || ihl < Ipv4Hdr::LEN {
            return Err(Stat::Seen);
        }
        // More-fragments flag or a fragment offset: only the first fragment has the UDP header,
        // and no fragment can be rewritten on its own.
        let fragment = u16::from_be_bytes(frags) & 0x3fff != 0;
        (
            Frame {
                l3,
                udp: l3 + ihl,
                v6: false,
                ip_end: l3 + tot_len as usize,
                peer: AddrKey::v4(dst),
            },
            AddrKey::v4(dst),
            fragment,
        )
    } else if ether_type == EtherType::Ipv6 as u16 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(Stat::Seen)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (mut next, payload_len, dst) = unsafe {
            (
                (*ip).next_hdr,
                (*ip).payload_len(),
                if ingress {
                    (*ip).src_addr
                } else {
                    (*ip).dst_addr
                },
            )
        };
        // Extension headers before UDP (RFC 8200 4.1: hop-by-hop first, then destination
        // options, routing): found so that a SIP datagram behind them is counted, not
        // rewritten (a routing header would change the checksum's pseudo-header).
        let mut udp = l3 + Ipv6Hdr::LEN;
        let mut ext = false;
        for _ in 0..MAX_IPV6_EXT {
            if next == IpProto::HopOpt as u8
                || next == IpProto::Ipv6Opts as u8
                || next == IpProto::Ipv6Route as u8
            {
                let h: *const Ipv6ExtHdr = ptr_at(ctx, udp).ok_or(Stat::Seen)?;
                // SAFETY: bounds checked by `ptr_at`.
                let (n, units) = unsafe { ((*h).next_hdr, (*h).len as usize) };
                next = n;
                udp += (units + 1) * IPV6_EXT_UNIT;
                ext = true;
            }
        }
        if next == IpProto::Ipv6Frag as u8 {
            // The UDP port is only in the first fragment; it cannot be rewritten anyway.
            return Err(if ingress { Stat::Seen } else { Stat::Fragment });
        }
        if next != IpProto::Udp as u8 {
            return Err(Stat::Seen);
        }
        if ext {
            let h: *const UdpHdr = ptr_at(ctx, udp).ok_or(Stat::Seen)?;
            // SAFETY: bounds checked by `ptr_at`.
            let p = unsafe {
                if ingress {
                    (*h).src_port()
                } else {
                    (*h).dst_port()
                }
            };
            return Err(if p == port { Stat::Ipv6Ext } else { Stat::Seen });
        }
        (
            Frame {
                l3,
                udp,
                v6: true,
                ip_end: l3 + Ipv6Hdr::LEN + payload_len as usize,
                peer: AddrKey(dst),
            },
            AddrKey(dst),
            false,
        )
    } else {
        return Err(Stat::Seen);
    };
    let udp: *const UdpHdr = ptr_at(ctx, f.udp).ok_or(Stat::Seen)?;
    // SAFETY: bounds checked by `ptr_at`.
    // SAFETY: as above.
    let udp_port = unsafe {
        if ingress {
            (*udp).src_port()
        } else {
            (*udp).dst_port()
        }
    };
    if udp_port != port {
        return Err(Stat::Seen);
    }
    // SAFETY: plain lookup; the value is not used.
    if cfg.flags & CFG_ADDR_FILTER != 0 && unsafe { GENESYS.get(&dst) }.is_none() {
        return Err(Stat::Seen);
    }
    if fragment {
        add(if ingress { Stat::Responses } else { Stat::Seen }, 1);
        return Err(Stat::Fragment);
    }
    Ok(f)
}

/// The UDP payload of a candidate, copied into the per-CPU scratch: (packet offset, length,
/// scratch). Refuses, with `other`, a payload that does not start with `start` (cheap, before
/// the copy); with `Malformed` a UDP length that disagrees with the packet's (Ethernet padding,
/// a lying length); with `TooBig` one past `MAX_SIP_LEN`.
#[inline(always)]
fn sip_payload<'a, P: Pkt>(
    ctx: &P,
    f: &Frame,
    start: &[u8; 8],
    other: Stat,
) -> Result<(usize, usize, &'a mut Scratch), Stat> {
    let udp: *const UdpHdr = ptr_at(ctx, f.udp).ok_or(Stat::Malformed)?;
    // SAFETY: bounds checked by `ptr_at`.
    let udp_len = unsafe { (*udp).len() } as usize;
    let payload = f.udp + UdpHdr::LEN;
    if udp_len < UdpHdr::LEN || payload + (udp_len - UdpHdr::LEN) != ctx.len() as usize {
        return Err(Stat::Malformed);
    }
    // An IP length that disagrees with the frame (and so with the UDP length): a receiver
    // would drop or truncate it, so it is not ours to rewrite either.
    if f.ip_end != ctx.len() as usize {
        return Err(Stat::Malformed);
    }
    let n = udp_len - UdpHdr::LEN;
    let first: [u8; 8] = ctx.load(payload).map_err(|_| other)?;
    if n < 20 || first != *start {
        return Err(other);
    }
    if n > MAX_SIP_LEN {
        return Err(Stat::TooBig);
    }
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Stat::Error)?;
    // SAFETY: per-CPU map value, used by this program run only (no preemption within a run).
    let scratch = unsafe { &mut *scratch };
    load_payload(ctx, payload, n, scratch)?;
    Ok((payload, n, scratch))
}

/// Copies the `n`-byte payload (1..=MAX_SIP_LEN) into the scratch buffer and zeroes the pad.
#[inline(always)]
fn load_payload<P: Pkt>(ctx: &P, off: usize, n: usize, s: &mut Scratch) -> Verdict {
    let size = csum::verifier_size(n);
    // The destination holds BUF_SIZE + 8 bytes >= size.
    if ctx
        .raw()
        .load(off as u32, s.msg.0.as_mut_ptr() as *mut c_void, size as u32)
        != 0
    {
        return Err(Stat::Error);
    }
    for i in 0..TAIL_PAD {
        // SAFETY: masked index inside the buffer; volatile keeps it from becoming a `memset`.
        unsafe { core::ptr::write_volatile(s.msg.0.as_mut_ptr().add(csum::masked(n + i)), 0) };
    }
    Ok(())
}

#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    cfg: &Config,
    f: &Frame,
    payload: usize,
    n: usize,
    s: &mut Scratch,
) -> Verdict {
    let dn_start = s.scan.dn_start as usize;
    let dn_len = (s.scan.dn_len as usize).min(MAX_DN_LEN);
    // The key a word at a time, zero past the DN (volatile: no `memset`/byte loop).
    let key = s.key.0.as_mut_ptr() as *mut u64;
    for j in 0..MAX_DN_LEN / 8 {
        let w = sip::low_bytes(
            s.msg.word_at(dn_start + 8 * j),
            dn_len.saturating_sub(8 * j).min(8),
        );
        // SAFETY: `DnKey` is 8-byte aligned and holds MAX_DN_LEN / 8 words.
        unsafe { core::ptr::write_volatile(key.add(j), w) };
    }
    // SAFETY: the value is only read, and map values stay valid for the program run.
    let dn_map = if cfg.dn_map == 0 {
        &CONTACTS
    } else {
        &CONTACTS_B
    };
    let uri_len = match unsafe { dn_map.get(&s.key) } {
        Some(v) => {
            // Snapshot: sizing and writing must see the same entry. Copied a word at a time
            // (a plain struct copy becomes a byte-wise `memmove` on the BPF target).
            let from = v as *const ContactUri as *const u64;
            let to = &raw mut s.uri as *mut u64;
            for j in 0..core::mem::size_of::<ContactUri>() / 8 {
                // SAFETY: both are 8-byte aligned `ContactUri`s (map values are 8-aligned).
                unsafe {
                    core::ptr::write_volatile(to.add(j), core::ptr::read_volatile(from.add(j)))
                };
            }
            s.write.mapped = 1;
            (s.uri.len as usize).min(URI_BUF)
        }
        None if cfg.flags & CFG_HAS_DEFAULT != 0 => {
            s.write.mapped = 0;
            s.write.pre_len = (cfg.tpl_pre_len as u32).min(URI_BUF as u32);
            s.write.post_len = (cfg.tpl_post_len as u32).min(URI_BUF as u32);
            (s.write.pre_len + s.write.post_len) as usize + dn_len
        }
        None => return Err(Stat::DnUnknown),
    };
    let new_n = sip::new_len(&s.scan, uri_len);
    if new_n > MAX_SIP_LEN || new_n == 0 {
        return Err(Stat::TooBig);
    }
    let delta = new_n as i32 - n as i32;
    if delta > 0 && !ctx.fits_mtu(delta) {
        return Err(Stat::TooBig);
    }
    splice::<_, false>(ctx, cfg, f, payload, n, new_n, s)?;
    count(Stat::Rewritten);
    let contacts = s.scan.n_contacts as u64;
    let total = add(Stat::Contacts, contacts);
    let done = read(Stat::Rewritten);
    if done.is_power_of_two() || done % 65536 == 0 {
        info!(
            ctx,
            "rewrote REGISTER #{} on this CPU: {} contact(s), {} -> {} bytes, {} contacts so far",
            done,
            contacts,
            n,
            new_n,
            total
        );
    }
    s.reg.peer = f.peer;
    record(s, cfg, uri_len);
    Ok(())
}

/// Records what the egress just wrote for the ingress restore (see `rewriter_common::restore`).
/// The copies run in a `bpf_loop` callback, whose body the verifier checks on its own (the
/// word copies' branches would otherwise multiply the states of this function's remainder).
#[inline(always)]
fn record(s: &mut Scratch, cfg: &Config, uri_len: usize) {
    s.write.from = uri_len as u32;
    s.write.err = 0;
    // SAFETY: a plain field of the map value (volatile: no merged `memset`).
    unsafe { core::ptr::write_volatile(&mut s.reg.n, 0) };
    // More than MAX_ORIGINALS contacts end the loop with REC_UNRECORDABLE, keyed.
    run_loop(MAX_EDITS as u32 + 1, record_cb, s, cfg, ());
    if s.write.err == 0 && s.reg.n != s.scan.n_contacts {
        s.write.err = REC_UNRECORDABLE;
    }
    if s.write.err != 0 {
        // The record an earlier REGISTER of this (Call-ID, DN) left would give the next 2xx
        // that REGISTER's Contact back: it goes too.
        if s.write.err == REC_UNRECORDABLE {
            let _ = REGS.remove(&s.reg_key);
        }
        count(Stat::NotRecorded);
        return;
    }
    s.reg.clear_unused();
    // A refresh REGISTER (same Call-ID, same contact) finds its record as it is: the lookup
    // marks it recently used, and the costlier update is skipped.
    // SAFETY: the value is only read.
    if let Some(old) = unsafe { REGS.get(&s.reg_key) }
        && old.same(&s.reg)
    {
        count(Stat::Recorded);
        return;
    }
    if REGS.insert(&s.reg_key, &s.reg, 0).is_err() {
        let _ = REGS.remove(&s.reg_key);
        count(Stat::NotRecorded);
        return;
    }
    count(Stat::Recorded);
}

/// `WriteState::err` of [`record`]: no usable Call-ID, so no key (nothing can be recorded
/// under it either).
const REC_NO_KEY: u32 = 1;
/// `WriteState::err` of [`record`]: keyed, but a contact cannot be recorded.
const REC_UNRECORDABLE: u32 = 2;

/// Iteration 0: the key and the URI written (`s.out` holds the rewritten middle from the
/// first edit's even-rounded start; `s.write.from` its length); iteration k > 0: the original
/// of edit k - 1 if it is a URI edit. Sets `s.write.err` ([`REC_NO_KEY`],
/// [`REC_UNRECORDABLE`]) if something does not fit.
#[inline(never)]
extern "C" fn record_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, _, ()) = unsafe { loop_ctx::<()>(ctx) };
    if index == 0 {
        if !s.reg_key.fill_call_id(&s.msg, &s.scan) {
            s.write.err = REC_NO_KEY;
            return 1;
        }
        // The DN key and a mapped URI are at hand as aligned words; a template URI is read
        // back from what was written.
        // SAFETY: `DnKey` and `ContactUri` are 8-aligned, whole numbers of words.
        unsafe {
            copy_aligned::<{ MAX_DN_LEN / 8 }>(
                s.key.0.as_ptr() as *const u64,
                s.reg_key.dn.0.as_mut_ptr() as *mut u64,
            );
        }
        s.reg.key_check = s.reg_key.check();
        if s.write.mapped != 0 {
            const W: usize = core::mem::size_of::<ContactUri>() / 8;
            // SAFETY: as above.
            unsafe {
                copy_aligned::<W>(
                    &raw const s.uri as *const u64,
                    &raw mut s.reg.written as *mut u64,
                )
            };
        } else {
            let first = s.scan.edits[0].start as usize;
            if !s
                .reg
                .written
                .fill(&s.out, first & 1, s.write.from as usize, false)
            {
                s.write.err = REC_UNRECORDABLE;
                return 1;
            }
        }
        return 0;
    }
    let k = index as usize - 1;
    if k >= s.scan.n_edits as usize {
        return 1;
    }
    let e = s.scan.edits[k & (MAX_EDITS - 1)];
    if e.kind == EDIT_URI && !s.reg.record(&s.msg, &e) {
        s.write.err = REC_UNRECORDABLE;
        return 1;
    }
    0
}

/// Writes the new payload over the old one: resize, the edits (`RESTORE`: the ingress
/// restore's, else the egress rewrite's) one per `bpf_loop` iteration, the tail, then lengths
/// and checksums. If any helper fails, puts everything back and fails with `Stat::Error`
/// (`Stat::ToTc` if an XDP frame could not grow). Invalidates packet pointers.
#[inline(always)]
fn splice<P: Pkt, const RESTORE: bool>(
    ctx: &P,
    cfg: &Config,
    f: &Frame,
    payload: usize,
    n: usize,
    new_n: usize,
    s: &mut Scratch,
) -> Verdict {
    let delta = new_n as i32 - n as i32;
    let pkt_len = ctx.len() as i32;
    let saved = Saved::take(ctx, f)?;
    if delta > 0 {
        ctx.resize((pkt_len + delta) as u32)?;
    } else if RESTORE && delta == 0 && ctx.forget_rx_checksum().is_err() {
        saved.restore(ctx, f, payload, n, pkt_len as u32, s);
        return Err(Stat::Error);
    }
    let first = s.scan.edits[0].start as usize;
    s.write.out = (payload + first) as u32;
    s.write.from = first as u32;
    s.write.err = 0;
    run_loop(
        MAX_EDITS as u32,
        write_cb::<P::R, RESTORE>,
        s,
        cfg,
        ctx.raw(),
    );
    let tail = n.wrapping_sub(s.write.from as usize);
    let written = s.write.err == 0
        && csum::store_msg(
            ctx.raw(),
            s.write.out as usize,
            &s.msg,
            s.write.from as usize,
            tail,
        )
        .is_ok()
        && (delta >= 0 || ctx.resize((pkt_len + delta) as u32).is_ok())
        && ctx.fix(f, payload, n, new_n, first & !1, s).is_ok();
    if !written {
        // The packet must never leave half-rewritten: put everything back.
        saved.restore(ctx, f, payload, n, pkt_len as u32, s);
        return Err(Stat::Error);
    }
    Ok(())
}

/// The header bytes the rewrite changes, kept to undo a rewrite a helper failed in the middle of.
struct Saved {
    udp: [u8; UdpHdr::LEN],
    /// IPv4: total length and header checksum; IPv6: payload length (twice).
    ip_len: [u8; 2],
    ip_check: [u8; 2],
}

impl Saved {
    #[inline(always)]
    fn take<P: Pkt>(ctx: &P, f: &Frame) -> Result<Self, Stat> {
        let (len_off, check_off) = Self::ip_offsets(f);
        Ok(Self {
            udp: ctx.load(f.udp)?,
            ip_len: ctx.load(len_off)?,
            ip_check: ctx.load(check_off)?,
        })
    }

    #[inline(always)]
    fn ip_offsets(f: &Frame) -> (usize, usize) {
        if f.v6 {
            let l = f.l3 + core::mem::offset_of!(Ipv6Hdr, payload_len);
            (l, l)
        } else {
            (
                f.l3 + core::mem::offset_of!(Ipv4Hdr, tot_len),
                f.l3 + core::mem::offset_of!(Ipv4Hdr, check),
            )
        }
    }

    /// Original length, payload and headers, best effort (a failing helper here leaves nothing
    /// better to do). Invalidates packet pointers.
    #[inline(always)]
    fn restore<P: Pkt>(&self, ctx: &P, f: &Frame, payload: usize, n: usize, len: u32, s: &Scratch) {
        if ctx.len() != len {
            let _ = ctx.resize(len);
        }
        let _ = csum::store_msg(ctx.raw(), payload, &s.msg, 0, n);
        let _ = ctx.store(f.udp, &self.udp);
        let (len_off, check_off) = Self::ip_offsets(f);
        let _ = ctx.store(len_off, &self.ip_len);
        if !f.v6 {
            let _ = ctx.store(check_off, &self.ip_check);
        }
    }
}

/// Write stage, one edit per `bpf_loop` iteration: the original bytes since the previous edit,
/// then the edit's new text. Progress lives in `Scratch::write`, so the verifier checks this
/// body once. Invalidates packet pointers.
#[inline(never)]
extern "C" fn write_cb<R: Raw, const RESTORE: bool>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: called by `run_loop` only.
    let (s, cfg, raw) = unsafe { loop_ctx::<R>(ctx) };
    let k = index as usize;
    if k >= s.scan.n_edits as usize {
        return 1;
    }
    let e = s.scan.edits[k & (MAX_EDITS - 1)];
    let from = s.write.from as usize;
    let r = if RESTORE {
        ingress::restore_edit(raw, s, &e, from)
    } else {
        write_edit(raw, s, cfg, e.start as usize, from, e.kind)
    };
    match r {
        Ok(out) => {
            s.write.out = out as u32;
            s.write.from = e.end as u32;
            0
        }
        Err(_) => {
            s.write.err = 1;
            1
        }
    }
}

#[inline(always)]
fn write_edit<R: Raw>(
    r: R,
    s: &Scratch,
    cfg: &Config,
    start: usize,
    from: usize,
    kind: u16,
) -> Result<usize, i64> {
    let out = csum::store_msg(
        r,
        s.write.out as usize,
        &s.msg,
        from,
        start.wrapping_sub(from),
    )?;
    if kind != EDIT_URI {
        return Ok(out);
    }
    if s.write.mapped != 0 {
        csum::store_uri(r, out, &s.uri.text, s.uri.len as usize)
    } else {
        let dn_len = (s.scan.dn_len as usize).min(MAX_DN_LEN);
        let o = csum::store_uri(r, out, &cfg.tpl_pre, s.write.pre_len as usize)?;
        let o = csum::store_msg(r, o, &s.msg, s.scan.dn_start as usize, dn_len)?;
        csum::store_uri(r, o, &cfg.tpl_post, s.write.post_len as usize)
    }
}

/// Bounds-checked pointer to a `T` at `offset` in the linear packet data.
#[inline(always)]
fn ptr_at<P: Pkt, T>(ctx: &P, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Counts one event; `Stat::Seen` as an error value means "not a candidate" and is skipped.
#[inline(always)]
fn count(stat: Stat) {
    if stat as u32 != Stat::Seen as u32 {
        add(stat, 1);
    }
}

#[inline(always)]
fn add(stat: Stat, v: u64) -> u64 {
    match STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        Some(p) => unsafe {
            *p += v;
            *p
        },
        None => 0,
    }
}

#[inline(always)]
fn read(stat: Stat) -> u64 {
    STATS.get(stat as u32).copied().unwrap_or(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
