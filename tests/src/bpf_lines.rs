//! Where a loaded eBPF program spends its time by source line: the kernel's JIT line table
//! (`BPF_OBJ_GET_INFO_BY_FD`: `jited_line_info` holds the JIT address where each `line_info`
//! record's code starts, include/uapi/linux/bpf.h v6.18 `struct bpf_prog_info`) joined with the
//! program's BTF strings (file and source text of each line), then sampled addresses (perf)
//! attributed to the line whose code they fall in.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use anyhow::{Context as _, bail};

/// One line record: JIT address of its first instruction, `file:line`, and the source text.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub addr: u64,
    pub at: String,
    pub text: String,
}

/// The program's JIT line table, sorted by address.
pub fn line_table(prog: BorrowedFd<'_>) -> anyhow::Result<Vec<Line>> {
    // First the counts, then the arrays sized from them.
    let mut info = ProgInfo::default();
    obj_info(prog.as_raw_fd(), &mut info).context("BPF_OBJ_GET_INFO_BY_FD (program)")?;
    let (n, li_size, jli_size) = (
        info.nr_jited_line_info as usize,
        info.line_info_rec_size as usize,
        info.jited_line_info_rec_size as usize,
    );
    if n == 0 || info.nr_line_info as usize != n {
        bail!("the program has no JIT line table (loaded without BTF line info?)");
    }
    if li_size < std::mem::size_of::<LineInfo>() || jli_size < std::mem::size_of::<u64>() {
        bail!("unexpected line record sizes {li_size}/{jli_size}");
    }
    let mut li = vec![0u8; n * li_size];
    let mut jli = vec![0u8; n * jli_size];
    let btf_id = info.btf_id;
    info = ProgInfo {
        nr_line_info: n as u32,
        line_info: li.as_mut_ptr() as u64,
        jited_line_info: jli.as_mut_ptr() as u64,
        nr_jited_line_info: n as u32,
        line_info_rec_size: li_size as u32,
        jited_line_info_rec_size: jli_size as u32,
        ..Default::default()
    };
    obj_info(prog.as_raw_fd(), &mut info).context("BPF_OBJ_GET_INFO_BY_FD (line info)")?;
    let strings = btf_strings(btf_id)?;
    let string = |off: u32| -> String {
        let s = strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    let mut lines: Vec<Line> = (0..n)
        .map(|i| {
            let r = &li[i * li_size..];
            let word = |k: usize| u32::from_ne_bytes(r[4 * k..4 * k + 4].try_into().unwrap());
            let rec = LineInfo {
                insn_off: word(0),
                file_name_off: word(1),
                line_off: word(2),
                line_col: word(3),
            };
            let addr = u64::from_ne_bytes(jli[i * jli_size..i * jli_size + 8].try_into().unwrap());
            Line {
                addr,
                at: format!(
                    "{}:{}",
                    short_path(&string(rec.file_name_off)),
                    rec.line_col >> LINE_SHIFT
                ),
                text: string(rec.line_off).trim().to_owned(),
            }
        })
        .collect();
    lines.sort_by_key(|l| l.addr);
    Ok(lines)
}

/// Shares (percent of the samples that fall in the program) by source line, largest first;
/// samples more than `MAX_LINE_CODE` bytes past the last line start are not the program's.
pub fn by_line(lines: &[Line], ips: &[u64]) -> Vec<(String, String, f64)> {
    // Records of the same line elsewhere in the program count as that line (its first record).
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        first.entry(l.at.as_str()).or_insert(i);
    }
    let mut counts: HashMap<usize, u64> = HashMap::new();
    let mut total = 0u64;
    for &ip in ips {
        let i = lines.partition_point(|l| l.addr <= ip);
        if i == 0 || ip - lines[i - 1].addr > MAX_LINE_CODE {
            continue;
        }
        total += 1;
        *counts.entry(first[lines[i - 1].at.as_str()]).or_default() += 1;
    }
    let mut counts: Vec<(usize, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .into_iter()
        .map(|(k, c)| {
            (
                lines[k].at.clone(),
                lines[k].text.clone(),
                100.0 * c as f64 / total as f64,
            )
        })
        .collect()
}

/// JIT code of one source line is far shorter than this.
const MAX_LINE_CODE: u64 = 4096;
/// `bpf_line_info.line_col`: line number above the low 10 bits (column), include/uapi/linux/bpf.h
/// v6.18 `BPF_LINE_INFO_LINE_NUM`.
const LINE_SHIFT: u32 = 10;

/// A source path as the workspace, the standard library or a crate names it.
fn short_path(p: &str) -> String {
    if let Some(i) = p.find("/registry/src/") {
        // `…/registry/src/<index>/<crate>-<version>/src/…`
        let rest = &p[i + "/registry/src/".len()..];
        return rest.split_once('/').map_or(rest, |(_, r)| r).to_owned();
    }
    match p.rfind("/library/") {
        Some(i) => p[i + "/library/".len()..].to_owned(),
        None => {
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
            match std::fs::canonicalize(root) {
                Ok(r) => p
                    .strip_prefix(&format!("{}/", r.display()))
                    .unwrap_or(p)
                    .to_owned(),
                Err(_) => p.to_owned(),
            }
        }
    }
}

/// `struct bpf_line_info`, include/uapi/linux/bpf.h v6.18.
#[repr(C)]
struct LineInfo {
    insn_off: u32,
    file_name_off: u32,
    line_off: u32,
    line_col: u32,
}

/// The head of `struct bpf_prog_info` (include/uapi/linux/bpf.h v6.18) up to the line records;
/// the kernel fills at most the `info_len` bytes it is given.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
}

/// `struct bpf_btf_info`, include/uapi/linux/bpf.h v6.18.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

/// The `info` part of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// BPF commands (include/uapi/linux/bpf.h v6.18 `enum bpf_cmd`).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;

fn obj_info<T>(fd: i32, info: &mut T) -> std::io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: `attr` points at `info`, which is valid for `info_len` bytes and outlives the call;
    // every pointer inside `info` the caller set is valid for the size it gave.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The string section of BTF object `id`.
fn btf_strings(id: u32) -> anyhow::Result<Vec<u8>> {
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_BTF_GET_FD_BY_ID (btf_id, next_id,
    // open_flags) that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_BTF_GET_FD_BY_ID,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("BTF object {id}"));
    }
    // SAFETY: a new descriptor owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut info = BtfInfo::default();
    obj_info(fd.as_raw_fd(), &mut info).context("BPF_OBJ_GET_INFO_BY_FD (BTF size)")?;
    let mut raw = vec![0u8; info.btf_size as usize];
    info = BtfInfo {
        btf: raw.as_mut_ptr() as u64,
        btf_size: raw.len() as u32,
        ..Default::default()
    };
    obj_info(fd.as_raw_fd(), &mut info).context("BPF_OBJ_GET_INFO_BY_FD (BTF)")?;
    // `struct btf_header` (include/uapi/linux/btf.h): magic u16, version u8, flags u8,
    // hdr_len, type_off, type_len, str_off, str_len (u32 each).
    let word = |k: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(raw.get(4 * k..4 * k + 4)?.try_into().ok()?) as usize)
    };
    let (Some(hdr_len), Some(str_off), Some(str_len)) = (word(1), word(4), word(5)) else {
        bail!("BTF object {id}: short header");
    };
    raw.get(hdr_len + str_off..hdr_len + str_off + str_len)
        .map(<[u8]>::to_vec)
        .with_context(|| format!("BTF object {id}: strings out of bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(addr: u64, at: &str) -> Line {
        Line {
            addr,
            at: at.into(),
            text: format!("text of {at}"),
        }
    }

    #[test]
    fn paths_are_short() {
        assert_eq!(
            short_path(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/aya-ebpf-bindings-0.2.0/src/x86_64/helpers.rs"
            ),
            "aya-ebpf-bindings-0.2.0/src/x86_64/helpers.rs"
        );
        assert_eq!(
            short_path(
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ptr/mod.rs"
            ),
            "core/src/ptr/mod.rs"
        );
        let ours = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bpf_lines.rs");
        let root = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap();
        let ours = std::fs::canonicalize(ours).unwrap();
        assert_eq!(
            short_path(&ours.display().to_string()),
            "tests/src/bpf_lines.rs"
        );
        assert!(ours.starts_with(&root));
    }

    #[test]
    fn samples_go_to_the_line_whose_code_they_fall_in() {
        let lines = [
            line(0x1000, "sip.rs:10"),
            line(0x1010, "sip.rs:11"),
            line(0x1030, "sip.rs:10"),
            line(0x1040, "scan.rs:5"),
        ];
        // 0x1000/0x100f: line 10; 0x1010, 0x102f: line 11; 0x1030: line 10 again (a second
        // record of it); 0x1041: scan.rs:5; 0xfff (before) and 0x1040 + 5000 (past): not ours.
        let ips = [
            0x1000,
            0x100f,
            0x1010,
            0x102f,
            0x1030,
            0x1041,
            0xfff,
            0x1040 + 5000,
        ];
        let got = by_line(&lines, &ips);
        let at: Vec<(&str, f64)> = got.iter().map(|(a, _, p)| (a.as_str(), *p)).collect();
        assert_eq!(
            at,
            [
                ("sip.rs:10", 50.0),
                ("sip.rs:11", 100.0 / 3.0),
                ("scan.rs:5", 100.0 / 6.0)
            ]
        );
        assert_eq!(got[0].1, "text of sip.rs:10");
    }
}
