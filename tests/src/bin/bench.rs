//! `cargo xtask bench`: what the rewriter costs, side by side with the floor (an empty TC
//! program), Kamailio doing the same rewrite, and a userspace relay running the same algorithm,
//! all in one run. Writes a table to stdout and, unless `--quick`, `docs/BENCHMARKS.md` and
//! `docs/bench.svg`. No pass/fail on timings anywhere: it reports.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::UdpSocket,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use integration_tests::{
    kernel::{corpus_config, corpus_rewriter},
    net::{GENESYS_V4, InNetns, Topology, ip},
    packet::Frame,
};
use rewriter_common::{
    ContactUri, DnKey, names,
    sip::{Decision, rewrite},
};
use rewriter_user::Rewriter;

const PASS: u32 = -1i32 as u32;
const XDP_PASS: u32 = 2;

struct Opts {
    quick: bool,
    kamailio: bool,
    out: PathBuf,
}

/// One measured row: ns per packet, median with min/max over runs.
struct Row {
    group: &'static str,
    name: String,
    bytes: usize,
    median: f64,
    min: f64,
    max: f64,
    how: String,
}

impl Row {
    /// A row measured once (CPU time over a run), not a distribution.
    fn once(group: &'static str, name: String, bytes: usize, ns: f64, how: String) -> Self {
        Row {
            group,
            name,
            bytes,
            median: ns,
            min: ns,
            max: ns,
            how,
        }
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
        kamailio: !args.iter().any(|a| a == "--no-kamailio"),
        out: root.join("docs"),
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads eBPF programs and creates namespaces: run it as root");
    }
    if let Some(i) = args.iter().position(|a| a == "--phases") {
        let rounds = args
            .get(i + 1)
            .and_then(|r| r.parse().ok())
            .filter(|&r: &usize| r > 0)
            .context("--phases needs a number of rounds (1 or more)")?;
        return phases_only(rounds);
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    kernel_cost(&opts, &mut rows)?;
    let profile = match profile(&opts) {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("No profile by function and line: {e:#}"));
            None
        }
    };
    ingress_cost(&opts, &mut rows)?;
    scale(&opts, &mut rows, &mut notes)?;
    if !opts.quick {
        live_cost(&mut rows, &mut notes)?;
    }
    native_scan_cost(&opts, &mut rows)?;
    relay_cost(&opts, &mut rows, &mut notes)?;
    if !opts.quick && opts.kamailio {
        match kamailio_cost(&mut rows, &mut notes) {
            Ok(()) => {}
            Err(e) => notes.push(format!("Kamailio not measured: {e:#}")),
        }
    }
    let report = render(&rows, &notes, profile.as_ref(), &opts, started.elapsed());
    println!("{report}");
    if !opts.quick {
        std::fs::create_dir_all(&opts.out)?;
        std::fs::write(opts.out.join("BENCHMARKS.md"), &report)?;
        std::fs::write(opts.out.join("bench.svg"), svg(&rows))?;
        println!(
            "wrote {} and {}",
            opts.out.join("BENCHMARKS.md").display(),
            opts.out.join("bench.svg").display()
        );
    }
    Ok(())
}

/// The JsSIP + Digest REGISTER as the rewrite leaves it (rewritten again, it stays the same).
fn read_rewritten_jssip() -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/10-jssip-register-digest-map-1002.out.sip"),
    )?)
}

/// The JsSIP restore corpus case: `part` "req" (the REGISTER Genesys got) or "resp" (its 200 OK).
fn read_restore_jssip(part: &str) -> anyhow::Result<Vec<u8>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "corpus-restore/01-jssip-map-1002-restored.{part}.sip"
    ));
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

fn read_case(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["shared-corpus", "corpus"] {
        let p = root.join(dir).join(format!("{name}.in.sip"));
        if p.exists() {
            return std::fs::read(p).unwrap();
        }
    }
    panic!("no corpus case {name}");
}

/// BPF_PROG_TEST_RUN once per call with `repeat`; returns the kernel's ns per run. The
/// verdict must be "pass": TC_ACT_UNSPEC for a classifier, XDP_PASS for XDP.
fn test_run<P>(prog: &mut P, frame: &[u8], repeat: u32, pass: u32) -> anyhow::Result<f64>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 1024];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    if res.return_value != pass {
        bail!("program returned {}", res.return_value);
    }
    Ok(res.duration.as_nanos() as f64)
}

/// `--phases ROUNDS`: only the warm phase programs and the empty one, each run `ROUNDS` times
/// (`repeat` 2 000) in turn, printed as min and median ns. For comparing two builds on a noisy
/// machine: run both binaries one after the other several times and compare the minimums.
fn phases_only(rounds: usize) -> anyhow::Result<()> {
    const REPEAT: u32 = 2_000;
    let mut rw = corpus_rewriter();
    let jssip = read_case("10-jssip-register-digest-map-1002");
    let mut cases = vec![(
        "bench_empty",
        "empty TC program".to_string(),
        Frame::v4(5060).build(&jssip),
    )];
    cases.extend(phase_cases(&jssip)?);
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (k, (prog, _, frame)) in cases.iter().enumerate() {
            let prog = program(&mut rw, prog)?;
            samples[k].push(test_run(prog, frame, REPEAT, PASS)?);
        }
    }
    println!("  min ns median ns  ({rounds} runs x {REPEAT} each)");
    for ((_, name, _), s) in cases.iter().zip(samples) {
        let (m, lo, _) = median(s);
        println!("{lo:8.0} {m:9.0}  {name}");
    }
    Ok(())
}

/// A phase row: program, name, frame.
type Phase = (&'static str, String, Vec<u8>);

/// The phase rows: programs that stop early (or rewrite a rewritten REGISTER to itself), so
/// `repeat` times them warm.
fn phase_cases(jssip: &[u8]) -> anyhow::Result<Vec<Phase>> {
    // A REGISTER already in rewritten form is rewritten to itself: `repeat` then times the
    // whole path warm, and against its scan alone gives the write stage.
    let rewritten = read_rewritten_jssip()?;
    Ok(vec![
        (
            "bench_copy",
            "JsSIP REGISTER: parse headers + copy payload".into(),
            Frame::v4(5060).build(jssip),
        ),
        (
            "bench_scan",
            "JsSIP REGISTER: ... + SIP scan".into(),
            Frame::v4(5060).build(jssip),
        ),
        (
            "bench_scan",
            "already-rewritten JsSIP REGISTER: ... + SIP scan".into(),
            Frame::v4(5060).build(&rewritten),
        ),
        (
            "bench_lookup",
            "already-rewritten JsSIP REGISTER: ... + DN lookup".into(),
            Frame::v4(5060).build(&rewritten),
        ),
        (
            "bench_write",
            "already-rewritten JsSIP REGISTER: ... + packet written".into(),
            Frame::v4(5060).build(&rewritten),
        ),
        (
            rewriter_user::PROGRAM,
            "already-rewritten JsSIP REGISTER: ... + rewrite (to itself)".into(),
            Frame::v4(5060).build(&rewritten),
        ),
    ])
}

/// Kernel cost per packet via BPF_PROG_TEST_RUN.
///
/// The kernel reruns the program on the *same* skb for `repeat`, so a rewrite case would be
/// measured on its own output from the second run on. Rewrite cases are therefore timed with
/// single runs (median over many); pass-through cases with `repeat` (median over runs). The
/// floor is measured both ways.
fn kernel_cost(opts: &Opts, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut rw = corpus_rewriter();
    let (runs, repeat, singles) = if opts.quick {
        (3, 10_000, 200)
    } else {
        (7, 100_000, 5_000)
    };
    let jssip = read_case("10-jssip-register-digest-map-1002");
    let jssip_tpl = read_case("11-jssip-register-digest-template-2001");
    let sipp = read_case("04-sipp-display-name-default-template");
    let invite = read_case("07-invite-untouched");
    let mut big = String::from_utf8(jssip.clone()).unwrap();
    let pad = 1400usize.saturating_sub(big.len() + 12);
    big = big.replacen("\r\n", &format!("\r\nX-Pad: {}\r\n", "p".repeat(pad)), 1);
    let grow = String::from_utf8(jssip.clone()).unwrap();
    let grow = {
        let start = grow.find("Contact: ").unwrap();
        let end = start + grow[start..].find("\r\n").unwrap();
        format!(
            "{}Contact: <sip:a@b>;expires=600{}",
            &grow[..start],
            &grow[end..]
        )
    };
    let mut tcp = Frame::v4(5060).build(&jssip);
    tcp[14 + 9] = 6;
    let mut pass_cases: Vec<(&'static str, String, Vec<u8>)> = vec![
        (
            "floor",
            "empty TC program".into(),
            Frame::v4(5060).build(&jssip),
        ),
        ("pass", "non-UDP (TCP) packet".into(), tcp),
        (
            "pass",
            "UDP to another port (5061)".into(),
            Frame::v4(5061).build(&jssip),
        ),
        (
            "pass",
            "SIP INVITE to 5060".into(),
            Frame::v4(5060).build(&invite),
        ),
    ];
    let case01 = read_case("01-jssip-register");
    let rewrite_cases: Vec<(&'static str, String, Vec<u8>)> = vec![
        (
            "rewrite",
            format!("REGISTER shared corpus case 01, JsSIP ({} B)", case01.len()),
            Frame::v4(5060).build(&case01),
        ),
        (
            "rewrite",
            format!("REGISTER sipp-style, template ({} B)", sipp.len()),
            Frame::v4(5060).build(&sipp),
        ),
        (
            "rewrite",
            format!("REGISTER JsSIP + Digest, DN in map ({} B)", jssip.len()),
            Frame::v4(5060).build(&jssip),
        ),
        (
            "rewrite",
            format!("REGISTER JsSIP + Digest, template ({} B)", jssip_tpl.len()),
            Frame::v4(5060).build(&jssip_tpl),
        ),
        (
            "rewrite",
            format!("REGISTER JsSIP padded ({} B)", big.len()),
            Frame::v4(5060).build(big.as_bytes()),
        ),
        (
            "rewrite",
            "REGISTER JsSIP + Digest over IPv6".into(),
            Frame::v6(5060).build(&jssip),
        ),
        (
            "rewrite",
            "REGISTER JsSIP + Digest, 802.1Q".into(),
            Frame {
                vlan: Some(7),
                ..Frame::v4(5060)
            }
            .build(&jssip),
        ),
        (
            "rewrite",
            format!("REGISTER growing ({} B)", grow.len()),
            Frame::v4(5060).build(grow.as_bytes()),
        ),
    ];
    // Phases of the JsSIP rewrite.
    let phases = phase_cases(&jssip)?;
    // The floor, timed like the rewrite cases too.
    pass_cases.push((
        "floor",
        "empty TC program (single runs)".into(),
        Frame::v4(5060).build(&jssip),
    ));

    for (group, name, frame) in pass_cases {
        let single = name.contains("single");
        let prog_name = if group == "floor" {
            "bench_empty"
        } else {
            rewriter_user::PROGRAM
        };
        let prog = program(&mut rw, prog_name)?;
        let samples: Vec<f64> = if single {
            (0..singles)
                .map(|_| test_run(prog, &frame, 1, PASS))
                .collect::<anyhow::Result<_>>()?
        } else {
            (0..runs)
                .map(|_| test_run(prog, &frame, repeat, PASS))
                .collect::<anyhow::Result<_>>()?
        };
        let (m, lo, hi) = median(samples);
        let how = if single {
            format!("median of {singles} single runs")
        } else {
            format!("median of {runs} runs x {repeat}")
        };
        rows.push(Row {
            group,
            name,
            bytes: frame.len(),
            median: m,
            min: lo,
            max: hi,
            how,
        });
    }
    for (prog_name, name, frame) in phases {
        let prog = program(&mut rw, prog_name)?;
        let samples: Vec<f64> = (0..runs)
            .map(|_| test_run(prog, &frame, repeat, PASS))
            .collect::<anyhow::Result<_>>()?;
        let (m, lo, hi) = median(samples);
        rows.push(Row {
            group: "phase",
            name,
            bytes: frame.len(),
            median: m,
            min: lo,
            max: hi,
            how: format!("median of {runs} runs x {repeat}"),
        });
    }
    // A new registration each time (other Call-ID): the restore state is inserted, where the
    // rows above (the same REGISTER again, like a refresh) find it in place.
    {
        let prog = program(&mut rw, rewriter_user::PROGRAM)?;
        let text = String::from_utf8_lossy(&jssip).into_owned();
        let samples: Vec<f64> = (0..singles)
            .map(|i| {
                let msg = text.replacen("Call-ID: ", &format!("Call-ID: {i:06}-"), 1);
                test_run(prog, &Frame::v4(5060).build(msg.as_bytes()), 1, PASS)
            })
            .collect::<anyhow::Result<_>>()?;
        let (m, lo, hi) = median(samples);
        rows.push(Row {
            group: "rewrite",
            name: format!(
                "REGISTER JsSIP + Digest, DN in map, new Call-ID each ({} B)",
                jssip.len() + 7
            ),
            bytes: jssip.len() + 7 + 42,
            median: m,
            min: lo,
            max: hi,
            how: format!("median of {singles} single runs"),
        });
    }
    for (group, name, frame) in rewrite_cases {
        let prog = program(&mut rw, rewriter_user::PROGRAM)?;
        let samples: Vec<f64> = (0..singles)
            .map(|_| test_run(prog, &frame, 1, PASS))
            .collect::<anyhow::Result<_>>()?;
        let (m, lo, hi) = median(samples);
        rows.push(Row {
            group,
            name,
            bytes: frame.len(),
            median: m,
            min: lo,
            max: hi,
            how: format!("median of {singles} single runs"),
        });
    }
    Ok(())
}

/// The ingress restore per packet: XDP and TC ingress on Genesys' 200 OK to a recorded JsSIP
/// REGISTER (restore corpus case 01), next to an empty XDP program and the pass-through kinds.
/// A restore changes the frame, and the kernel reruns a program on its own output under
/// `repeat` (XDP keeps the grown buffer too), so restore rows are single runs, like the egress
/// rewrite rows; pass-through rows use `repeat`.
fn ingress_cost(opts: &Opts, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut rw = corpus_rewriter();
    let (runs, repeat, singles) = if opts.quick {
        (3, 10_000, 200)
    } else {
        (7, 100_000, 5_000)
    };
    let req = read_restore_jssip("req")?;
    let resp = read_restore_jssip("resp")?;
    // Record the REGISTER (edge -> Genesys) the response answers.
    let egress = program(&mut rw, rewriter_user::PROGRAM)?;
    test_run(
        egress,
        &Frame {
            sport: 5070,
            ..Frame::v4(5060)
        }
        .build(&req),
        1,
        PASS,
    )?;
    let back = |f: Frame| Frame { sport: 5070, ..f }.reply();
    let resp_v4 = back(Frame::v4(5060)).build(&resp);
    let resp_v6 = back(Frame::v6(5060)).build(&resp);
    let other_call = back(Frame::v4(5060)).build(
        &String::from_utf8_lossy(&resp)
            .replacen("Call-ID: ", "Call-ID: x", 1)
            .into_bytes(),
    );
    let other_port = Frame {
        sport: 5080,
        ..back(Frame::v4(5060))
    }
    .build(&resp);
    let bytes = resp_v4.len();
    let mut push = |name: String, bytes: usize, samples: Vec<f64>, how: String| {
        let (m, lo, hi) = median(samples);
        rows.push(Row {
            group: "ingress",
            name,
            bytes,
            median: m,
            min: lo,
            max: hi,
            how,
        });
    };
    let how_single = format!("median of {singles} single runs");
    let how_repeat = format!("median of {runs} runs x {repeat}");
    for (prog_name, label) in [
        ("bench_empty_xdp", "empty XDP program (floor)"),
        (rewriter_user::PROGRAM_XDP, "XDP restore"),
    ] {
        let prog = xdp_program(&mut rw, prog_name)?;
        let s = (0..singles)
            .map(|_| test_run(prog, &resp_v4, 1, XDP_PASS))
            .collect::<anyhow::Result<_>>()?;
        push(
            format!("{label}: JsSIP 200 OK to REGISTER ({} B)", resp.len()),
            bytes,
            s,
            how_single.clone(),
        );
    }
    let prog = xdp_program(&mut rw, rewriter_user::PROGRAM_XDP)?;
    let s = (0..singles)
        .map(|_| test_run(prog, &resp_v6, 1, XDP_PASS))
        .collect::<anyhow::Result<_>>()?;
    push(
        "XDP restore: JsSIP 200 OK over IPv6".into(),
        resp_v6.len(),
        s,
        how_single.clone(),
    );
    for (frame, label) in [
        (
            &other_call,
            "XDP: 200 OK with no recorded state (scan, lookup, pass)",
        ),
        (&other_port, "XDP: UDP from another port (pass)"),
    ] {
        let s = (0..runs)
            .map(|_| test_run(prog, frame, repeat, XDP_PASS))
            .collect::<anyhow::Result<_>>()?;
        push(label.into(), frame.len(), s, how_repeat.clone());
    }
    rw.load_ingress(rewriter_user::Ingress::Tc)?;
    let prog = rw.tc_ingress_mut()?;
    let s = (0..singles)
        .map(|_| test_run(prog, &resp_v4, 1, PASS))
        .collect::<anyhow::Result<_>>()?;
    push(
        format!(
            "TC ingress restore: JsSIP 200 OK to REGISTER ({} B)",
            resp.len()
        ),
        bytes,
        s,
        how_single,
    );
    Ok(())
}

fn xdp_program<'a>(rw: &'a mut Rewriter, name: &str) -> anyhow::Result<&'a mut Xdp> {
    let prog: &mut Xdp = rw
        .ebpf_mut()
        .program_mut(name)
        .with_context(|| format!("program {name}"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(prog)
}

fn program<'a>(rw: &'a mut Rewriter, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = rw
        .ebpf_mut()
        .program_mut(name)
        .with_context(|| format!("program {name}"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(prog)
}

/// Time to fill the DN map, and the kernel cost with a small and a full map.
fn scale(opts: &Opts, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let n: u32 = if opts.quick { 10_000 } else { 1_000_000 };
    let singles = if opts.quick { 200 } else { 5_000 };
    let mut rw = Rewriter::load_sized(&corpus_config(), n + 16)?;
    let jssip = read_case("10-jssip-register-digest-map-1002");
    let frame = Frame::v4(5060).build(&jssip);
    let mut measure = |rw: &mut Rewriter, label: String| -> anyhow::Result<()> {
        let prog = program(rw, rewriter_user::PROGRAM)?;
        let samples: Vec<f64> = (0..singles)
            .map(|_| test_run(prog, &frame, 1, PASS))
            .collect::<anyhow::Result<_>>()?;
        let (m, lo, hi) = median(samples);
        rows.push(Row {
            group: "scale",
            name: label,
            bytes: frame.len(),
            median: m,
            min: lo,
            max: hi,
            how: format!("median of {singles} single runs"),
        });
        Ok(())
    };
    for dn in [
        "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    ] {
        rw.set_contact(
            dn.as_bytes(),
            format!("sip:{dn}@192.168.210.54:5060").as_bytes(),
        )?;
    }
    measure(&mut rw, "REGISTER JsSIP, DN map with 10 entries".into())?;
    let t = Instant::now();
    {
        let map = rw
            .ebpf_mut()
            .map_mut(names::CONTACTS)
            .context(names::CONTACTS)?;
        let mut map: aya::maps::HashMap<&mut aya::maps::MapData, DnKey, ContactUri> =
            aya::maps::HashMap::try_from(map)?;
        for i in 0..n {
            let dn = format!("{}", 100_000_000 + i);
            map.insert(
                DnKey::new(dn.as_bytes()).unwrap(),
                ContactUri::new(format!("sip:{dn}@192.168.210.54:5060").as_bytes()).unwrap(),
                0,
            )?;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    notes.push(format!("Loading {n} DN entries into the map (one bpf(BPF_MAP_UPDATE_ELEM) each): {secs:.2} s, {:.0} entries/s.", n as f64 / secs));
    measure(
        &mut rw,
        format!("REGISTER JsSIP, DN map with {} entries", n + 10),
    )?;
    Ok(())
}

/// Live cost on a veth pair with kernel BPF stats: run_time_ns / run_cnt at fixed rates.
fn live_cost(rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let topo = Topology::new("bench")?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let (rx, drops0) = {
        let _ns = InNetns::enter(&topo.genesys)?;
        let s = UdpSocket::bind((GENESYS_V4, 5060))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        big_rcvbuf(&s);
        (s, udp_counter("RcvbufErrors"))
    };
    let _ns = InNetns::enter(&topo.edge)?;
    let mut rw = corpus_rewriter();
    let att = rw.attach_egress(&topo.edge_if)?;
    let tx = UdpSocket::bind(("198.18.0.1", 0))?;
    let jssip = read_case("10-jssip-register-digest-map-1002");
    for rate in [10_000u64, 50_000] {
        let info0 = rw.program_mut()?.info()?;
        let dur = Duration::from_millis(1500);
        let count = rate * dur.as_millis() as u64 / 1000;
        let receiver = {
            let rx = rx.try_clone()?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut n = 0u64;
                let deadline = Instant::now() + Duration::from_secs(10);
                while n < count && Instant::now() < deadline {
                    if rx.recv(&mut buf).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        };
        let t0 = Instant::now();
        for i in 0..count {
            // Paced: the i-th datagram leaves at i/rate seconds.
            let due = Duration::from_nanos(i * 1_000_000_000 / rate);
            while t0.elapsed() < due {
                std::hint::spin_loop();
            }
            tx.send_to(&jssip, (GENESYS_V4, 5060))?;
        }
        let sent_in = t0.elapsed().as_secs_f64();
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
        let socket_drops = {
            let _g = InNetns::enter(&topo.genesys)?;
            udp_counter("RcvbufErrors") - drops0
        };
        let info1 = rw.program_mut()?.info()?;
        let runs = info1.run_count() - info0.run_count();
        let ns = (info1.run_time() - info0.run_time()).as_nanos() as f64 / runs.max(1) as f64;
        rows.push(Row::once(
            "live",
            format!("veth, JsSIP REGISTER at {rate}/s"),
            jssip.len(),
            ns,
            "run_time_ns / run_cnt (kernel BPF stats)".into(),
        ));
        notes.push(format!(
            "Live at {rate}/s: sent {count} in {sent_in:.2} s ({:.0}/s achieved), received {got}, lost {} (receiver socket buffer drops so far: {socket_drops}; the program never drops); program ran {runs} times.",
            count as f64 / sent_in,
            count - got
        ));
    }
    rw.detach(att)?;
    Ok(())
}

/// A receive buffer of 16 MiB (SO_RCVBUFFORCE, root), so a slow reader loses nothing.
fn big_rcvbuf(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 << 20;
    // SAFETY: valid socket fd, pointer to a live c_int of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            4,
        );
    }
}

/// A `Udp:` counter of /proc/net/snmp in the calling thread's namespace.
fn udp_counter(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if lines.len() < 2 {
        return 0;
    }
    let i = lines[0]
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or(0);
    lines[1]
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU ns the calling thread has run (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The scan of `rewriter_common::sip` compiled for this CPU and run in userspace on the
/// messages the kernel rows scan: what the algorithm costs without eBPF (JIT, verifier-shaped
/// code, `bpf_loop`), for reading the phase rows. ns per scan, median of runs.
fn native_scan_cost(opts: &Opts, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use rewriter_common::sip::{Msg, Outcome, scan, scan_response};
    let (runs, iters) = if opts.quick {
        (3, 20_000)
    } else {
        (7, 200_000)
    };
    let resp = read_restore_jssip("resp")?;
    let cases: [(String, Vec<u8>, bool); 3] = [
        (
            "sip::scan natively, JsSIP + Digest REGISTER".into(),
            read_case("10-jssip-register-digest-map-1002"),
            false,
        ),
        (
            "sip::scan natively, already-rewritten JsSIP REGISTER".into(),
            read_rewritten_jssip()?,
            false,
        ),
        (
            "sip::scan_response natively, JsSIP 200 OK to REGISTER".into(),
            resp,
            true,
        ),
    ];
    let cfg = corpus_config();
    for (name, msg, response) in cases {
        let mut m = Box::new(Msg::zeroed());
        if !m.load(&msg) {
            bail!("{name}: {} bytes do not fit the scan buffer", msg.len());
        }
        let run = |m: &Msg| {
            if response {
                scan_response(m, msg.len(), &cfg)
            } else {
                scan(m, msg.len(), &cfg)
            }
        };
        // The kernel rows time the full scan: so must this one.
        let outcome = run(&m).outcome();
        if outcome != Outcome::Rewrite {
            bail!("{name}: the scan ended with {outcome:?}, not Rewrite");
        }
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(run(std::hint::black_box(&m)).n_edits);
            }
            samples.push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        let (med, lo, hi) = median(samples);
        rows.push(Row {
            group: "userspace",
            name,
            bytes: msg.len(),
            median: med,
            min: lo,
            max: hi,
            how: format!("median of {runs} runs x {iters}, one thread, wall clock"),
        });
    }
    Ok(())
}

/// A tokio + memchr UDP relay applying the same algorithm in userspace: CPU ns per message.
fn relay_cost(opts: &Opts, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let ns = format!("sipr-bench-relay-{}", std::process::id());
    ip(&["netns", "add", &ns])?;
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }
    let _del = Del(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let _in = InNetns::enter(&ns)?;
    let count: u64 = if opts.quick { 2_000 } else { 100_000 };
    let sink = UdpSocket::bind("127.0.0.1:5080")?;
    sink.set_read_timeout(Some(Duration::from_secs(2)))?;
    big_rcvbuf(&sink);
    let relay_sock = std::net::UdpSocket::bind("127.0.0.1:5060")?;
    big_rcvbuf(&relay_sock);
    relay_sock.set_nonblocking(true)?;
    let relay = std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(relay_sock)?;
            let cfg = corpus_config();
            let table: HashMap<&[u8], ContactUri> = [(
                &b"1002"[..],
                ContactUri::new(b"sip:1002@192.168.210.54:5060").unwrap(),
            )]
            .into();
            let mut buf = vec![0u8; 2048];
            let mut out = vec![0u8; 4096];
            let mut n = 0u64;
            let cpu0 = thread_cpu_ns();
            while n < count {
                let Ok(Ok(len)) =
                    tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await
                else {
                    break;
                };
                let msg = &buf[..len];
                // Only complete messages are rewritten (memchr finds the end of the headers).
                let reply: &[u8] = if memchr::memmem::find(msg, b"\r\n\r\n").is_some() {
                    match rewrite(msg, &cfg, |dn| table.get(dn).copied(), &mut out) {
                        Decision::Rewritten { len, .. } => &out[..len],
                        Decision::Pass(_) => msg,
                    }
                } else {
                    msg
                };
                sock.send_to(reply, "127.0.0.1:5080").await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>((n, thread_cpu_ns() - cpu0))
        })
    });
    let jssip = read_case("10-jssip-register-digest-map-1002");
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let sink_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while n < count && sink.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let t0 = Instant::now();
    let rate = 50_000u64;
    for i in 0..count {
        let due = Duration::from_nanos(i * 1_000_000_000 / rate);
        while t0.elapsed() < due {
            std::hint::spin_loop();
        }
        tx.send_to(&jssip, "127.0.0.1:5060")?;
    }
    let (relayed, cpu) = relay
        .join()
        .map_err(|_| anyhow::anyhow!("relay panicked"))??;
    let sunk = sink_thread
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))?;
    let per = cpu as f64 / relayed.max(1) as f64;
    rows.push(Row::once(
        "userspace",
        "tokio+memchr relay, same algorithm, JsSIP REGISTER".into(),
        jssip.len(),
        per,
        format!("relay thread CPU ns / messages ({relayed} at {rate}/s)"),
    ));
    notes.push(format!(
        "Userspace relay: {count} sent, {relayed} relayed, {sunk} received by the sink."
    ));
    Ok(())
}

/// Kamailio doing the seed's rewrite (textops) and a stateless forward on loopback in a private
/// namespace: CPU ns per REGISTER from /proc/PID/task/*/schedstat over all its processes.
fn kamailio_cost(rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let bin = which("kamailio").or_else(|| {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "kamailio"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        which("kamailio")
    });
    let Some(bin) = bin else {
        bail!("kamailio is not installed and `apt-get install kamailio` failed")
    };
    let mpath = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/lib64/kamailio/modules",
    ]
    .into_iter()
    .find(|p| Path::new(p).join("textops.so").exists())
    .context("kamailio modules (textops.so) not found")?;
    let cfg = format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=1
auto_aliases=no
disable_tcp=yes
listen=udp:127.0.0.1:5060
mpath="{mpath}"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "sl.so"
request_route {{
    if (is_method("REGISTER")) {{
        remove_hf("Contact");
        append_hf("Contact: <sip:$tU@192.168.210.54:5060>\r\n");
    }}
    forward("127.0.0.1", 5080);
    exit;
}}
"#
    );
    let cfg_path =
        std::env::temp_dir().join(format!("sipr-bench-kamailio-{}.cfg", std::process::id()));
    std::fs::write(&cfg_path, cfg)?;
    let ns = format!("sipr-bench-kam-{}", std::process::id());
    ip(&["netns", "add", &ns])?;
    struct Cleanup(String, Option<Child>, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(mut c) = self.1.take() {
                let _ = Command::new("pkill")
                    .args(["-TERM", "-P", &c.id().to_string()])
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = ip(&["netns", "del", &self.0]);
            let _ = std::fs::remove_file(&self.2);
            let _ = std::fs::remove_file(self.2.with_extension("pid"));
        }
    }
    let mut cleanup = Cleanup(ns.clone(), None, cfg_path.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let _in = InNetns::enter(&ns)?;
    let jssip = read_case("10-jssip-register-digest-map-1002");
    for (label, extra) in [
        ("default allocator", &[][..]),
        ("-x fm -X fm", &["-x", "fm", "-X", "fm"][..]),
    ] {
        let sink = UdpSocket::bind("127.0.0.1:5080")?;
        sink.set_read_timeout(Some(Duration::from_secs(2)))?;
        big_rcvbuf(&sink);
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(&bin)
            .args([
                "-f",
                cfg_path.to_str().unwrap(),
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "16",
                "-u",
                "root",
                "-g",
                "root",
                "-P",
            ])
            .arg(cfg_path.with_extension("pid"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kamailio")?;
        let pid = child.id();
        cleanup.1 = Some(child);
        // Wait until it answers: a warm-up REGISTER must come out at the sink.
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        loop {
            tx.send_to(&jssip, "127.0.0.1:5060")?;
            if sink.recv(&mut buf).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("kamailio did not forward within 10 s");
            }
        }
        let forwarded = String::from_utf8_lossy(&buf).into_owned();
        if !forwarded.contains("Contact: <sip:1002@192.168.210.54:5060>") {
            bail!("kamailio did not rewrite the Contact: {forwarded}");
        }
        while sink.recv(&mut buf).is_ok() {}
        let count = 20_000u64;
        // Its UDP receive buffer is 512 KiB: pace well below what one process can take.
        let rate = 5_000u64;
        let cpu0 = tree_cpu_ns(pid);
        let t0 = Instant::now();
        let sink_thread = {
            let sink = sink.try_clone()?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut n = 0u64;
                while n < count && sink.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            })
        };
        for i in 0..count {
            let due = Duration::from_nanos(i * 1_000_000_000 / rate);
            while t0.elapsed() < due {
                std::thread::sleep(Duration::from_micros(50));
            }
            tx.send_to(&jssip, "127.0.0.1:5060")?;
        }
        let got = sink_thread
            .join()
            .map_err(|_| anyhow::anyhow!("sink panicked"))?;
        let cpu = tree_cpu_ns(pid) - cpu0;
        let per = cpu as f64 / got.max(1) as f64;
        rows.push(Row::once(
            "kamailio",
            format!("Kamailio 5.6 textops rewrite + forward, {label}"),
            jssip.len(),
            per,
            format!("CPU ns of all its processes / forwarded ({got} of {count} at {rate}/s)"),
        ));
        notes.push(format!(
            "Kamailio ({label}): {count} sent at {rate}/s, {got} forwarded."
        ));
        if let Some(mut c) = cleanup.1.take() {
            let _ = Command::new("pkill")
                .args(["-TERM", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(sink);
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// CPU ns of `pid` and all its descendants, every thread.
fn tree_cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                    total += s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                if let Ok(ch) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(ch.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
    }
    total
}

fn which(bin: &str) -> Option<PathBuf> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Where the warm rewrite spends its time: by function, and (inside the eBPF code) by source
/// line, or why the lines could not be had.
struct Profile {
    by_function: Vec<(String, f64)>,
    /// The eBPF code's share of all samples, and its lines' shares of it.
    by_line: Result<(f64, Vec<LineShare>), String>,
}

/// A source line (`file:line`, its text) and its share of the eBPF samples, in percent.
type LineShare = (String, String, f64);

/// Where a warm rewrite spends its time: `perf record` (software clock, this process only)
/// while the already-rewritten JsSIP REGISTER runs through `sip_rewriter` with `repeat`. By
/// function: the kernel names JIT images `bpf_prog_<tag>_<name>`, so programs and `bpf_loop`
/// callbacks show by name, helpers and map code by their kernel symbol; shares of all samples,
/// the largest first, below 1 % summed as "other". By line: the samples in eBPF code through
/// the program's JIT line table (`integration_tests::bpf_lines`).
fn profile(opts: &Opts) -> anyhow::Result<Profile> {
    let secs = if opts.quick { 1 } else { 3 };
    let data = std::env::temp_dir().join(format!("sip-rewriter-bench-{}.perf", std::process::id()));
    let mut rw = corpus_rewriter();
    let frame = Frame::v4(5060).build(&read_rewritten_jssip()?);
    let prog = program(&mut rw, rewriter_user::PROGRAM)?;
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "5000", "-p"])
        .arg(std::process::id().to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting perf (Debian package linux-perf)")?;
    // Bounded: perf ends after `secs`; the loop stops at twice that whatever happens.
    let deadline = Instant::now() + Duration::from_secs(2 * secs + 5);
    let status = loop {
        if let Some(st) = perf.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = perf.kill();
            let _ = perf.wait();
            bail!("perf record did not end within {} s", 2 * secs + 5);
        }
        test_run(prog, &frame, 10_000, PASS)?;
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = perf.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        let _ = std::fs::remove_file(&data);
        bail!("perf record failed ({status}): {}", err.trim());
    }
    let out = Command::new("perf")
        .args(["report", "-q", "--stdio", "--sort", "sym", "-i"])
        .arg(&data)
        .output()
        .context("perf report")?;
    // The sampled addresses in eBPF code, for the table by line (the program is still loaded).
    let by_line = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .map_err(|e| format!("perf script: {e}"))
        .and_then(|o| {
            if !o.status.success() {
                return Err(format!(
                    "perf script failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            let script = String::from_utf8_lossy(&o.stdout);
            let samples = script.lines().filter(|l| !l.trim().is_empty()).count();
            let ips = bpf_ips(&script);
            let fd = prog.fd().map_err(|e| format!("{e}"))?;
            let lines = integration_tests::bpf_lines::line_table(fd.as_fd())
                .map_err(|e| format!("{e:#}"))?;
            if lines.iter().all(|l| l.addr == 0) {
                return Err("the kernel gave no JIT addresses (kernel.kptr_restrict?)".into());
            }
            let shares = integration_tests::bpf_lines::by_line(&lines, &ips);
            if shares.is_empty() {
                return Err("no sample fell in the program's JIT code".into());
            }
            Ok((100.0 * ips.len() as f64 / samples.max(1) as f64, shares))
        });
    let _ = std::fs::remove_file(&data);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = perf_shares(&text);
    if rows.is_empty() {
        bail!("perf report gave no samples");
    }
    Ok(Profile {
        by_function: rows,
        by_line,
    })
}

/// The sample addresses of `perf script -F ip,sym` lines in eBPF code (`ffffffffc003b335
/// bpf_prog_…_step_cb…`).
fn bpf_ips(script: &str) -> Vec<u64> {
    script
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (ip, sym) = (w.next()?, w.next()?);
            sym.starts_with("bpf_prog_")
                .then(|| u64::from_str_radix(ip, 16).ok())
                .flatten()
        })
        .collect()
}

/// `perf report --sort sym` lines (`  39.24%  [k] bpf_prog_95d9…_step_cb_3C_false_3E_`) as
/// (function, percent): eBPF names without tag and generic arguments; under 1 % summed.
fn perf_shares(report: &str) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut other = 0.0;
    for line in report.lines() {
        let mut w = line.split_whitespace();
        let (Some(pct), Some(_kind), Some(sym)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(pct) = pct.trim_end_matches('%').parse::<f64>() else {
            continue;
        };
        let name = match sym.strip_prefix("bpf_prog_") {
            // `<16 hex digits>_<name>`; `_3C_` opens the generic arguments (`<`).
            Some(rest) => {
                let name = rest.get(17..).unwrap_or(rest);
                format!("eBPF {}", name.split("_3C_").next().unwrap_or(name))
            }
            None => sym.to_owned(),
        };
        if pct < 1.0 {
            other += pct;
        } else if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1 += pct;
        } else {
            rows.push((name, pct));
        }
    }
    if other > 0.0 {
        rows.push(("other".into(), other));
    }
    rows
}

/// Source lines shown in the profile.
const LINES: usize = 25;

fn render(
    rows: &[Row],
    notes: &[String],
    profile: Option<&Profile>,
    opts: &Opts,
    took: Duration,
) -> String {
    let floor = rows
        .iter()
        .find(|r| r.name == "empty TC program")
        .map(|r| r.median)
        .unwrap_or(f64::NAN);
    let floor1 = rows
        .iter()
        .find(|r| r.name.starts_with("empty TC program (single"))
        .map(|r| r.median)
        .unwrap_or(f64::NAN);
    // Ingress rows are compared with the empty XDP program (single runs, like the restores).
    let floor_xdp = rows
        .iter()
        .find(|r| r.name.starts_with("empty XDP program"))
        .map(|r| r.median)
        .unwrap_or(f64::NAN);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "# sip-rewriter benchmarks\n");
    let _ = writeln!(
        s,
        "Machine: {cpu}, {} CPUs; kernel {}; {}. Command: `cargo xtask bench{}` (took {:.0} s).\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        if opts.quick { " --quick" } else { "" },
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| group | case | frame B | ns/packet (median) | min | max | x floor | how |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let base = if r.group == "ingress" {
            floor_xdp
        } else if r.how.contains("single") {
            floor1
        } else {
            floor
        };
        let ratio = if r.group == "kamailio" || r.group == "userspace" || r.group == "live" {
            String::from("-")
        } else {
            format!("{:.1}", r.median / base)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} |",
            r.group, r.name, r.bytes, r.median, r.min, r.max, ratio, r.how
        );
    }
    let rewrite_jssip = rows
        .iter()
        .find(|r| r.name.starts_with("REGISTER JsSIP + Digest, DN in map ("))
        .map(|r| r.median);
    let new_registration = rows
        .iter()
        .find(|r| r.name.contains("new Call-ID each"))
        .map(|r| r.median);
    let non_candidate = rows
        .iter()
        .find(|r| r.name.starts_with("UDP to another port"))
        .map(|r| r.median);
    let kam_fm = rows
        .iter()
        .find(|r| r.name.contains("-x fm"))
        .map(|r| r.median);
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.median)
    };
    let _ = writeln!(
        s,
        "\n## Against the targets\n\nAs ratios to the empty program of the same mode in this run (issue 12).\n"
    );
    // (what, measured, floor, mode, target ratio: at most)
    let targets = [
        (
            "warm rewrite of an already-rewritten JsSIP + Digest REGISTER to itself, recording included",
            find("already-rewritten JsSIP REGISTER: ... + rewrite"),
            floor,
            "warm",
            20.0,
        ),
        (
            "single-run rewrite of the JsSIP + Digest REGISTER, DN in map, refresh",
            rewrite_jssip,
            floor1,
            "single runs",
            11.0,
        ),
        (
            "single-run XDP restore of the JsSIP 200 OK",
            find("XDP restore: JsSIP 200 OK to REGISTER"),
            floor_xdp,
            "single runs",
            11.0,
        ),
        ("UDP to another port", non_candidate, floor, "warm", 1.3),
        (
            "INVITE to 5060",
            find("SIP INVITE to 5060"),
            floor,
            "warm",
            2.5,
        ),
    ];
    for (what, v, base, mode, target) in targets {
        if let Some(v) = v {
            let ratio = v / base;
            let verdict = if ratio <= target {
                "met".to_owned()
            } else {
                format!("missed (target {:.0} ns here)", target * base)
            };
            let _ = writeln!(
                s,
                "- {what}: {v:.0} ns = {ratio:.1}x the empty program ({base:.0} ns, {mode}); target <= {target}x: {verdict}."
            );
        }
    }
    if let Some(v) = new_registration {
        let _ = writeln!(
            s,
            "- The same REGISTER with a new Call-ID each time (the restore state is inserted, not found in place as for a refresh): {v:.0} ns."
        );
    }
    match (kam_fm, rewrite_jssip) {
        (Some(k), Some(v)) => {
            let x = k / v;
            let _ = writeln!(
                s,
                "- Kamailio with fm: {k:.0} ns CPU per REGISTER, {x:.1}x the kernel rewrite; target >= 30x: {}.",
                if x >= 30.0 { "met" } else { "missed" }
            );
        }
        _ => {
            let _ = writeln!(s, "- Kamailio: not measured in this run.");
        }
    }
    if let Some(t) = find("TC ingress restore: JsSIP") {
        let _ = writeln!(
            s,
            "- The same restore at TC ingress (frames XDP hands over, or `--ingress tc`): {t:.0} ns = {:.1}x the empty XDP program.",
            t / floor_xdp
        );
    }
    if let (Some(copy), Some(scan), Some(rscan), Some(rall)) = (
        find("JsSIP REGISTER: parse headers"),
        find("JsSIP REGISTER: ... + SIP scan"),
        find("already-rewritten JsSIP REGISTER: ... + SIP scan"),
        find("already-rewritten JsSIP REGISTER: ... + rewrite"),
    ) {
        let _ = writeln!(
            s,
            "- Where the time goes (warm, `repeat` runs of the phase programs): headers + payload copy {:.0} ns over the floor, \
             SIP scan {:.0} ns (JsSIP + Digest), write stage and recording (stores, resize, checksums, the restore record) {:.0} ns (rewrite of an already-rewritten \
             REGISTER minus its scan).",
            copy - floor,
            scan - copy,
            rall - rscan
        );
        if let (Some(nscan), Some(nrscan)) = (
            find("sip::scan natively, JsSIP"),
            find("sip::scan natively, already-rewritten"),
        ) {
            let _ = writeln!(
                s,
                "- The same scan compiled for this CPU and run in userspace (the `sip::scan natively` rows): {nscan:.0} ns for the JsSIP + Digest REGISTER \
                 against {:.0} ns in the kernel ({:.2}x), {nrscan:.0} ns for the already-rewritten one against {:.0} ns ({:.2}x): \
                 the scan's cost is the algorithm's, not eBPF's.",
                scan - copy,
                (scan - copy) / nscan,
                rscan - copy,
                (rscan - copy) / nrscan
            );
        }
    }
    if let (Some(p), Some(rall)) = (
        profile,
        find("already-rewritten JsSIP REGISTER: ... + rewrite"),
    ) {
        let _ = writeln!(
            s,
            "\n## Where a warm rewrite spends its time, by function\n\n`perf record -e cpu-clock` of this process while the \
             already-rewritten JsSIP REGISTER runs through `sip_rewriter` with `repeat` (eBPF programs and `bpf_loop` callbacks \
             by name, helpers and map code by kernel symbol); ns = share x {rall:.0} ns.\n\n| function | share | ns |\n|---|---:|---:|"
        );
        for (name, pct) in &p.by_function {
            let _ = writeln!(s, "| {name} | {pct:.1} % | {:.0} |", pct / 100.0 * rall);
        }
        match &p.by_line {
            Ok((ebpf, lines)) => {
                let _ = writeln!(
                    s,
                    "\n### The eBPF code by source line\n\nThe same samples in eBPF code ({ebpf:.1} % of all), by the source \
                     line their JIT address belongs to (the kernel's `jited_line_info` and the program's BTF line records); a \
                     sample just after a call or a `bpf_loop` turn is charged to the line of the call (on CPUs with the SRSO \
                     \"Safe RET\" mitigation that is where a mispredicted return costs). The {LINES} largest; ns = share of \
                     the eBPF samples x {:.0} ns.\n\n| line | source | share | ns |\n|---|---|---:|---:|",
                    ebpf / 100.0 * rall
                );
                for (at, text, pct) in lines.iter().take(LINES) {
                    let text = text.replace('|', "\\|");
                    let _ = writeln!(
                        s,
                        "| {at} | `{text}` | {pct:.1} % | {:.0} |",
                        pct / 100.0 * ebpf / 100.0 * rall
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "\nNo table by source line: {e}.");
            }
        }
    }
    let _ = writeln!(s, "\n## Notes\n");
    let _ = writeln!(
        s,
        "- BPF_PROG_TEST_RUN reruns the program on the same skb, so a rewrite case would be timed on its own output after the \
         first run: rewrite cases are timed with single runs (one syscall each, kernel-measured), and so is one floor row. \
         Single-run times include the test harness's timer reads, which is why the single-run floor is higher."
    );
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "\n![ns per packet](bench.svg)");
    s
}

/// A horizontal bar chart of every row, with the floor marked.
fn svg(rows: &[Row]) -> String {
    let max = rows.iter().map(|r| r.median).fold(1.0, f64::max).log10();
    let h = 30 + rows.len() * 24;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="10" y="18" font-weight="bold">ns per packet (log scale)</text>"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 30 + i * 24;
        let w = (r.median.max(1.0).log10() / max * 480.0).max(2.0);
        let color = match r.group {
            "floor" => "#888",
            "kamailio" => "#c33",
            "userspace" => "#e90",
            "live" => "#39c",
            "scale" => "#6a6",
            "ingress" => "#939",
            _ => "#36c",
        };
        let name = r.name.replace('&', "&amp;").replace('<', "&lt;");
        let _ = write!(s, r#"<text x="10" y="{}">{name}</text>"#, y + 14);
        let _ = write!(
            s,
            r#"<rect x="420" y="{y}" width="{w:.0}" height="18" fill="{color}"/>"#
        );
        let _ = write!(
            s,
            r#"<text x="{:.0}" y="{}">{:.0}</text>"#,
            425.0 + w,
            y + 14,
            r.median
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::perf_shares;

    #[test]
    fn perf_report_lines_become_named_shares() {
        // As `perf report -q --stdio --sort sym` printed them here (6.18).
        let report = "    39.24%  [k] bpf_prog_95d99ff26a0ac2f1_step_cb_3C_false_3E_\n\
                      \x20   15.92%  [k] bpf_prog_a4757a9ca72097f3_sip_rewriter\n\
                      \x20    7.24%  [k] htab_map_hash\n\
                      \x20    0.82%  [k] bpf_skb_store_bytes\n\
                      \x20    0.31%  [k] bpf_prog_0e037d58f28817e1_write_cb_3C__2A_mut_20_aya\n";
        let rows = perf_shares(report);
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "eBPF step_cb",
                "eBPF sip_rewriter",
                "htab_map_hash",
                "other"
            ]
        );
        assert!((rows[3].1 - 1.13).abs() < 1e-9);
    }
}
