//! The restore end to end with real SIP endpoints: a sipp UAC in "edge" registers JsSIP-style
//! clients through the real `sip-rewriter attach`; a sipp UAS in "genesys" answers each
//! REGISTER 200 OK listing the Contact it received (the rewritten one) with `;expires=600`, as
//! Genesys does; the UAC checks that the 200's Contact is its own original URI, byte for byte
//! (a mismatch fails the call and sipp). Both ingress hooks, IPv4 and IPv6. Genesys sends full
//! checksums (TX offload off) and the edge stack verifies them, so a wrong checksum would drop
//! the 200 and fail the call too; the UDP checksum error counter must stay 0. Two more runs
//! with Genesys' checksum offload on (the 200s arrive CHECKSUM_PARTIAL over veth).
//! Needs root and sipp.

use std::process::Command;

use integration_tests::{
    cli::{Attach, PinRoot, ok},
    net::{EDGE_V4, EDGE_V6, GENESYS_V4, GENESYS_V6, InNetns, Topology, set_tx_csum},
    sipp,
};

/// Clients per run, and REGISTERs per second.
const CLIENTS: u32 = 300;
const RATE: u32 = 200;
const FIRST_DN: u32 = 5000;

/// `Udp: ... InCsumErrors` (or `Udp6InCsumErrors`) of namespace `ns`.
fn csum_errors(ns: &str, v6: bool) -> u64 {
    let file = if v6 {
        "/proc/net/snmp6"
    } else {
        "/proc/net/snmp"
    };
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["cat", file])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if v6 {
        return text
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map(|v| v.trim().parse().unwrap())
            .expect("Udp6InCsumErrors in /proc/net/snmp6");
    }
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == "InCsumErrors")
        .expect("InCsumErrors in /proc/net/snmp");
    values[i].parse().unwrap()
}

/// `offload`: Genesys' TX checksum offload; off, its 200 OKs carry full checksums that the edge
/// verifies; on, they arrive CHECKSUM_PARTIAL (veth), which the stack trusts.
fn run(hook: &str, v6: bool, offload: bool) {
    run_with(hook, v6, offload, CLIENTS, RATE);
}

fn run_with(hook: &str, v6: bool, offload: bool, clients: u32, rate: u32) {
    sipp::require();
    let _one = sipp::exclusive();
    let topo = Topology::new(&format!(
        "rst{}{}{}",
        &hook[..1],
        if v6 { 6 } else { 4 },
        if offload { "o" } else { "" }
    ))
    .unwrap();
    {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        set_tx_csum(&topo.genesys_if, offload);
    }
    let root = PinRoot::new();
    let dir = std::env::temp_dir().join(format!(
        "{}-restore",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Half the DNs in the map, half served by the template.
    let mut cfg = format!(
        "ingress = \"{hook}\"\n[contacts]\ndefault = \"sip:{{dn}}@192.168.210.54:5060\"\n[contacts.map]\n"
    );
    for i in 0..clients / 2 {
        let dn = FIRST_DN + i;
        cfg.push_str(&format!("\"{dn}\" = \"sip:{dn}@198.18.0.77:5070\"\n"));
    }
    std::fs::write(dir.join("config.toml"), cfg).unwrap();
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..clients {
        csv.push_str(&sipp::csv_line(FIRST_DN + i, i, 600));
        csv.push('\n');
    }
    std::fs::write(dir.join("dns.csv"), csv).unwrap();
    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", dir.join("config.toml").to_str().unwrap()],
    );
    let (genesys, edge) = if v6 {
        (GENESYS_V6, EDGE_V6)
    } else {
        (GENESYS_V4, EDGE_V4)
    };
    let remote = if v6 {
        format!("[{genesys}]:5060")
    } else {
        format!("{genesys}:5060")
    };
    let errors_before = csum_errors(&topo.edge, v6);
    let calls = clients.to_string();
    let uas = sipp::spawn(
        &topo.genesys,
        &dir,
        &[
            "-sf",
            &sipp::scenario("restore-uas.xml"),
            "-i",
            genesys,
            "-p",
            "5060",
            "-m",
            &calls,
            "-timeout",
            "60s",
            "-trace_err",
        ],
    );
    // Let the UAS bind before the first REGISTER.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let uac = sipp::spawn(
        &topo.edge,
        &dir,
        &[
            &remote,
            "-sf",
            &sipp::scenario("restore-uac.xml"),
            "-inf",
            dir.join("dns.csv").to_str().unwrap(),
            "-i",
            edge,
            "-p",
            "5070",
            "-m",
            &calls,
            "-r",
            &rate.to_string(),
            "-rp",
            "1000",
            "-l",
            "100",
            "-timeout",
            "50s",
            "-trace_err",
        ],
    );
    let uac = uac.wait_with_output().expect("waiting for sipp");
    let uas = uas.wait_with_output().expect("waiting for sipp");
    let stats: serde_json::Value =
        serde_json::from_str(ok(Some(&topo.edge), &root, &["stats", "--json"]).trim()).unwrap();
    // Whichever side failed, the message says how the other one ended and what each stack
    // dropped for a bad checksum (a lost REGISTER or 200 shows as a UAC timeout either way).
    let context = format!(
        "UAS: {}; UDP checksum errors: edge {}, genesys {}\n{stats}",
        uas.status,
        csum_errors(&topo.edge, v6).saturating_sub(errors_before),
        csum_errors(&topo.genesys, v6)
    );
    sipp::check(&uac, "UAC (checks the restored Contact)", &dir, &context);
    sipp::check(&uas, "UAS", &dir, &context);
    let c = &stats["counters"];
    let n = clients as u64;
    let total = |k: &str| c[k]["total"].as_u64().unwrap_or(0);
    // A REGISTER sipp retransmitted (its 200 took over 500 ms) is rewritten and recorded again:
    // every REGISTER is, and every 2xx is restored.
    assert!(
        total("rewritten") >= n && total("rewritten") == total("register"),
        "{stats}"
    );
    assert_eq!(total("recorded"), total("rewritten"), "{stats}");
    assert!(
        total("restored") >= n && total("restored") == total("responses"),
        "{stats}"
    );
    assert_eq!(total("restored_contacts"), total("restored"), "{stats}");
    assert_eq!(c["error"]["total"], 0, "{stats}");
    assert_eq!(
        csum_errors(&topo.edge, v6),
        errors_before,
        "the edge stack saw UDP checksum errors"
    );
    println!(
        "restore e2e, ingress {hook}, {}, Genesys TX checksum offload {}: {clients} REGISTERs at {rate}/s rewritten and recorded, {clients} 200 OKs restored \
         ({} of them handed from XDP to TC), every Contact checked by sipp, 0 checksum errors",
        if v6 { "IPv6" } else { "IPv4" },
        if offload { "on" } else { "off" },
        c["to_tc"]["total"]
    );
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!("restore on ingress: {hook}")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_restore_xdp_ipv4() {
    run("xdp", false, false);
}

#[test]
fn sipp_restore_xdp_ipv6() {
    run("xdp", true, false);
}

#[test]
fn sipp_restore_tc_ipv4() {
    run("tc", false, false);
}

#[test]
fn sipp_restore_tc_ipv6() {
    run("tc", true, false);
}

#[test]
fn sipp_restore_xdp_ipv4_checksum_offload() {
    run("xdp", false, true);
}

#[test]
fn sipp_restore_tc_ipv6_checksum_offload() {
    run("tc", true, true);
}

/// The default hook at a higher rate: every one of 3 000 200 OKs still comes back restored.
#[test]
fn sipp_restore_xdp_ipv4_at_2000_per_second() {
    run_with("xdp", false, false, 3_000, 2_000);
}
