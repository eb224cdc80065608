//! A real SIP client: sipp sends JsSIP-style REGISTERs (Digest Authorization, +sip.instance,
//! reg-id, ;expires=) for 1 000 distinct DNs through the real `sip-rewriter attach` on a veth
//! pair; a small registrar in "genesys" answers 200 OK and records what it received. Every
//! received Contact is checked against the rule, and sipp must see no error. IPv4 and IPv6.
//! Needs root and sipp (Debian `sip-tester`, installed by `cargo xtask setup`/.ci/run).

use std::{collections::HashMap, net::UdpSocket, process::Command, time::Duration};

use integration_tests::{
    cli::{Attach, PinRoot, ok},
    net::{EDGE_V4, EDGE_V6, GENESYS_V4, GENESYS_V6, InNetns, Topology, set_tx_csum},
    registrar::Registrar,
};

const DNS: u32 = 1_000;
const FIRST_DN: u32 = 3000;

/// DN number `i` sends `Contact: *` (remove all bindings) instead of a REGISTER with a contact.
fn star(i: u32) -> bool {
    i % 50 == 49
}

/// The CSV line sipp reads for DN number `i` (see tests/sipp/*.xml).
fn csv_line(i: u32) -> String {
    integration_tests::sipp::csv_line(FIRST_DN + i, i, if i % 10 == 9 { 0 } else { 600 })
}

/// The Contact Genesys must receive for DN number `i`: mapped for the first half, the
/// default template for the second, `*` untouched; only `expires` survives.
fn expected(i: u32) -> String {
    if star(i) {
        return "*".into();
    }
    let dn = (FIRST_DN + i).to_string();
    let expires = if i % 10 == 9 { "0" } else { "600" };
    let uri = if i < DNS / 2 {
        format!("sip:{dn}@198.18.0.77:5070")
    } else {
        format!("sip:{dn}@192.168.210.54:5060")
    };
    format!("<{uri}>;expires={expires}")
}

fn run(v6: bool, offload: bool) {
    let _one = integration_tests::sipp::exclusive();
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is missing: `cargo xtask setup` installs it (apt-get install sip-tester)"
    );
    let topo = Topology::new(if v6 { "sipp6" } else { "sipp4" }).unwrap();
    {
        // TX checksum offload off: the stack writes full checksums before TC and the receiver
        // verifies them (a wrong one would be dropped and sipp would time out).
        let _ns = InNetns::enter(&topo.edge).unwrap();
        set_tx_csum(&topo.edge_if, offload);
    }
    let root = PinRoot::new();
    let dir = std::env::temp_dir().join(format!(
        "{}-sipp",
        root.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Half the DNs in the map, the rest served by the template.
    let mut cfg =
        String::from("[contacts]\ndefault = \"sip:{dn}@192.168.210.54:5060\"\n[contacts.map]\n");
    for i in 0..DNS / 2 {
        let dn = FIRST_DN + i;
        cfg.push_str(&format!("\"{dn}\" = \"sip:{dn}@198.18.0.77:5070\"\n"));
    }
    let cfg_path = dir.join("config.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let (mut csv, mut stars_csv) = (String::from("SEQUENTIAL\n"), String::from("SEQUENTIAL\n"));
    for i in 0..DNS {
        if star(i) {
            stars_csv.push_str(&csv_line(i));
            stars_csv.push('\n');
        } else {
            csv.push_str(&csv_line(i));
            csv.push('\n');
        }
    }
    let csv_path = dir.join("dns.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let stars_path = dir.join("stars.csv");
    std::fs::write(&stars_path, stars_csv).unwrap();
    let stars = (0..DNS).filter(|i| star(*i)).count() as u64;

    let att = Attach::start(
        &topo.edge,
        &root,
        &topo.edge_if,
        &["--config", cfg_path.to_str().unwrap()],
    );
    let (genesys, edge, remote) = if v6 {
        (GENESYS_V6, EDGE_V6, format!("[{GENESYS_V6}]:5060"))
    } else {
        (GENESYS_V4, EDGE_V4, format!("{GENESYS_V4}:5060"))
    };
    let sock = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        UdpSocket::bind((genesys, 5060)).unwrap()
    };
    let reg = Registrar::start(sock, Duration::from_secs(60));
    for (scenario, csv, calls) in [
        ("uac-register.xml", &csv_path, DNS as u64 - stars),
        ("uac-unregister-all.xml", &stars_path, stars),
    ] {
        let scenario = format!("{}/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", topo.edge))
            .args([
                "sipp",
                &remote,
                "-sf",
                &scenario,
                "-inf",
                csv.to_str().unwrap(),
                "-i",
                edge,
                "-p",
                "5070",
            ])
            .args([
                "-m",
                &calls.to_string(),
                "-r",
                "200",
                "-rp",
                "1000",
                "-l",
                "100",
                "-timeout",
                "50s",
                "-nostdin",
                "-trace_err",
            ])
            .args(["-error_file", dir.join("errors.log").to_str().unwrap()])
            .current_dir(&dir)
            .output()
            .expect("running sipp");
        let errors = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "sipp {scenario} failed ({}):\n{}\n{errors}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Let the registrar finish, then compare.
    std::thread::sleep(Duration::from_millis(300));
    let seen: HashMap<String, String> = reg
        .received()
        .into_iter()
        .map(|r| (r.dn, r.contact))
        .collect();
    assert_eq!(seen.len(), DNS as usize, "Genesys must see every DN once");
    let mut wrong = Vec::new();
    for i in 0..DNS {
        let dn = (FIRST_DN + i).to_string();
        if seen.get(&dn).map(String::as_str) != Some(expected(i).as_str()) {
            wrong.push(format!(
                "{dn}: got {:?}, want {:?}",
                seen.get(&dn),
                expected(i)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong Contacts, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(5)].join("\n")
    );
    let stats: serde_json::Value =
        serde_json::from_str(ok(Some(&topo.edge), &root, &["stats", "--json"]).trim()).unwrap();
    // A REGISTER sipp retransmitted (its 200 took over 500 ms) is counted again.
    let total = |k: &str| stats["counters"][k]["total"].as_u64().unwrap_or(0);
    assert!(total("rewritten") >= DNS as u64 - stars, "{stats}");
    assert!(total("star") >= stars, "{stats}");
    assert_eq!(
        total("rewritten") + total("star"),
        total("register"),
        "{stats}"
    );
    assert_eq!(stats["counters"]["error"]["total"], 0, "{stats}");
    println!(
        "sipp e2e over {}, TX checksum offload {}: {DNS} REGISTERs sent by sipp, {} received, {} rewritten, {stars} Contact: *, 0 errors",
        if v6 { "IPv6" } else { "IPv4" },
        if offload { "on" } else { "off" },
        seen.len(),
        DNS as u64 - stars
    );
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_registers_over_ipv4_checksum_offload() {
    run(false, true);
}

#[test]
fn sipp_registers_over_ipv6_checksum_offload() {
    run(true, true);
}

#[test]
fn sipp_registers_over_ipv4_software_checksums() {
    run(false, false);
}

#[test]
fn sipp_registers_over_ipv6_software_checksums() {
    run(true, false);
}
