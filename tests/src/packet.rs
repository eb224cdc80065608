//! Frame building and independent verification for the tests.
//!
//! The checksum code here is written for the tests alone (RFC 1071 over the pseudo-header, UDP
//! header and payload) so that it shares nothing with the code under test.

use std::net::IpAddr;

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const PROTO_UDP: u8 = 17;

/// What to put around a UDP payload.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// 802.1ad service VLAN id (QinQ outer tag, in front of `vlan`), if any.
    pub outer_vlan: Option<u16>,
    /// IPv4 options (length a multiple of 4, at most 40).
    pub ipv4_options: Vec<u8>,
    /// Write 0 in the UDP checksum field (IPv4 only: "no checksum").
    pub zero_udp_csum: bool,
    /// IPv4 flags/fragment offset field, host order (e.g. 0x2000 = more fragments).
    pub ipv4_frag: u16,
}

impl Frame {
    pub fn v4(dport: u16) -> Self {
        Self {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: 5060,
            dport,
            vlan: None,
            outer_vlan: None,
            ipv4_options: Vec::new(),
            zero_udp_csum: false,
            ipv4_frag: 0,
        }
    }

    pub fn v6(dport: u16) -> Self {
        Self {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            ..Self::v4(dport)
        }
    }

    /// The answer's frame: addresses swapped, from port `self.dport` to `self.sport`.
    pub fn reply(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self.clone()
        }
    }

    /// Ethernet (+VLAN) + IP + UDP + `payload`, all lengths and checksums valid.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(payload.len() + 80);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
        let ethertype = match self.dst {
            IpAddr::V4(_) => ETHERTYPE_IPV4,
            IpAddr::V6(_) => ETHERTYPE_IPV6,
        };
        if let Some(vid) = self.outer_vlan {
            f.extend_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        let udp_len = (UDP_LEN + payload.len()) as u16;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let opt = &self.ipv4_options;
                assert!(opt.len().is_multiple_of(4) && opt.len() <= 40);
                let ihl = (IPV4_LEN + opt.len()) / 4;
                let total = (ihl * 4) as u16 + udp_len;
                let start = f.len();
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&0x1234u16.to_be_bytes());
                f.extend_from_slice(&self.ipv4_frag.to_be_bytes());
                f.push(64);
                f.push(PROTO_UDP);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(opt);
                let c = !fold(sum(&f[start..]));
                f[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.push(PROTO_UDP);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        let udp = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        if !self.zero_udp_csum {
            let c = udp_checksum(self.src, self.dst, &f[udp..]);
            f[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
        }
        f
    }
}

/// A parsed frame, every length and checksum verified independently.
#[derive(Debug)]
pub struct Checked {
    pub payload: Vec<u8>,
    pub udp_checksum: u16,
}

/// Parses `frame` and verifies the IPv4 header checksum, IP and UDP lengths, and the UDP
/// checksum (0 accepted for IPv4 only).
pub fn check(frame: &[u8]) -> Result<Checked, String> {
    let mut off = ETH_LEN;
    let mut ethertype = be16(frame, 12)?;
    for _ in 0..2 {
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            ethertype = be16(frame, off + 2)?;
            off += VLAN_LEN;
        }
    }
    let (src, dst, udp_off, ip_end);
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = (*frame.get(off).ok_or("short")? as usize & 0xf) * 4;
            let hdr = frame.get(off..off + ihl).ok_or("short ipv4 header")?;
            if fold(sum(hdr)) != 0xffff {
                return Err("bad IPv4 header checksum".into());
            }
            let total = be16(frame, off + 2)? as usize;
            ip_end = off + total;
            if ip_end != frame.len() {
                return Err(format!(
                    "IPv4 total length {total} but frame has {} bytes of IP",
                    frame.len() - off
                ));
            }
            src = IpAddr::from(<[u8; 4]>::try_from(&hdr[12..16]).unwrap());
            dst = IpAddr::from(<[u8; 4]>::try_from(&hdr[16..20]).unwrap());
            udp_off = off + ihl;
        }
        ETHERTYPE_IPV6 => {
            let hdr = frame.get(off..off + IPV6_LEN).ok_or("short ipv6 header")?;
            let plen = be16(frame, off + 4)? as usize;
            ip_end = off + IPV6_LEN + plen;
            if ip_end != frame.len() {
                return Err(format!(
                    "IPv6 payload length {plen} but frame has {}",
                    frame.len() - off - IPV6_LEN
                ));
            }
            src = IpAddr::from(<[u8; 16]>::try_from(&hdr[8..24]).unwrap());
            dst = IpAddr::from(<[u8; 16]>::try_from(&hdr[24..40]).unwrap());
            udp_off = off + IPV6_LEN;
        }
        t => return Err(format!("ethertype {t:#06x}")),
    }
    let udp = &frame[udp_off..ip_end];
    let ulen = be16(udp, 4)? as usize;
    if ulen != udp.len() {
        return Err(format!(
            "UDP length {ulen} but {} bytes follow the IP header",
            udp.len()
        ));
    }
    let csum = be16(udp, 6)?;
    if csum == 0 && src.is_ipv6() {
        // RFC 8200 8.1: "no checksum" is not allowed over IPv6; a computed 0 is sent as 0xffff.
        return Err("UDP checksum 0 over IPv6".into());
    }
    if !(csum == 0 && src.is_ipv4()) && fold(pseudo_sum(src, dst, udp.len()) + sum(udp)) != 0xffff {
        return Err(format!("bad UDP checksum {csum:#06x}"));
    }
    Ok(Checked {
        payload: udp[UDP_LEN..].to_vec(),
        udp_checksum: csum,
    })
}

fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("short read at {at}"))
}

fn sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&s.octets()) + sum(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(&s.octets()) + sum(&d.octets()),
        _ => unreachable!(),
    };
    addrs + u64::from(PROTO_UDP) + udp_len as u64
}

/// Full UDP checksum of `udp` (header with checksum field zero + payload).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let c = !fold(pseudo_sum(src, dst, udp.len()) + sum(udp));
    if c == 0 { 0xffff } else { c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_pass_the_checker() {
        for f in [
            Frame::v4(5060),
            Frame::v6(5060),
            Frame {
                vlan: Some(7),
                ipv4_options: vec![1, 1, 1, 0],
                ..Frame::v4(5060)
            },
        ] {
            let frame = f.build(b"REGISTER sip:x SIP/2.0\r\n\r\n");
            assert_eq!(
                check(&frame).unwrap().payload,
                b"REGISTER sip:x SIP/2.0\r\n\r\n"
            );
        }
    }

    #[test]
    fn checker_catches_a_flipped_payload_bit() {
        let mut frame = Frame::v4(5060).build(b"hello sip");
        *frame.last_mut().unwrap() ^= 1;
        assert!(check(&frame).unwrap_err().contains("UDP checksum"));
    }
}
