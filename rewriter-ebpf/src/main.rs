//! TC egress classifier of sip-rewriter.
//!
//! It never drops a packet: every path returns [`TC_ACT_UNSPEC`], which hands the packet on
//! unchanged to the next TCX program or, if there is none, lets it leave.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use rewriter_common::{Config, Stat};

/// Runtime configuration written by userspace (one entry).
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Per-CPU counters indexed by [`Stat`].
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// Egress entry point.
#[classifier]
pub fn sip_rewriter(ctx: TcContext) -> i32 {
    // Errors only mean "not ours"; the packet always leaves as it came.
    let _ = try_sip_rewriter(&ctx);
    TC_ACT_UNSPEC
}

/// Why a packet was not handled further. Only used for control flow.
struct NotOurs;

#[inline(always)]
fn try_sip_rewriter(ctx: &TcContext) -> Result<(), NotOurs> {
    let udp_off = l4_offset(ctx)?;
    let udp: *const UdpHdr = ptr_at(ctx, udp_off)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the packet.
    let dst_port = unsafe { (*udp).dst_port() };
    if dst_port != config_port() {
        return Err(NotOurs);
    }
    count(Stat::Seen);
    Ok(())
}

/// Configured Genesys port, or the default before userspace wrote the config.
#[inline(always)]
fn config_port() -> u16 {
    match CONFIG.get(0) {
        Some(c) if c.port != 0 => c.port,
        _ => rewriter_common::DEFAULT_PORT,
    }
}

/// Offset of the UDP header for Ethernet (optionally one 802.1Q tag) + IPv4/IPv6 + UDP.
#[inline(always)]
fn l4_offset(ctx: &TcContext) -> Result<usize, NotOurs> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = EthHdr::LEN;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: *const VlanHdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = unsafe { (*vlan).ether_type };
        l3 += VlanHdr::LEN;
    }
    if ether_type == EtherType::Ipv4 as u16 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (ihl, proto) = unsafe { ((*ip).ihl() as usize, (*ip).proto) };
        if proto != IpProto::Udp as u8 || ihl < Ipv4Hdr::LEN {
            return Err(NotOurs);
        }
        Ok(l3 + ihl)
    } else if ether_type == EtherType::Ipv6 as u16 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        if unsafe { (*ip).next_hdr } != IpProto::Udp as u8 {
            return Err(NotOurs);
        }
        Ok(l3 + Ipv6Hdr::LEN)
    } else {
        Err(NotOurs)
    }
}

/// Bounds-checked pointer to a `T` at `offset` in the linear packet data.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*const T, NotOurs> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(NotOurs);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
