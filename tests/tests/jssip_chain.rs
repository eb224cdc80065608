//! The users' own chain (issue 16): real JsSIP (node, over a WebSocket) → Kamailio from Debian
//! → the real `sip-rewriter attach` on Kamailio's Genesys-facing interface → a Genesys stand-in
//! that stores bindings as received and then INVITEs each stored Contact → an Asterisk stand-in.
//! Two Kamailio configurations (tests/kamailio/): (a) `t_relay` of the client's REGISTER, the
//! 200 OK back to JsSIP over the WebSocket (the restore is what lets JsSIP accept it); (b) the
//! seed's deployment, `save("location")` plus a uac REGISTER forwarding the client's Contact.
//! Each mode first runs without sip-rewriter (the control: Genesys must then hold JsSIP's
//! `.invalid` Contact, so the check can fail), then with it.
//! Needs root, kamailio, node and JsSIP (`cargo xtask setup`).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{
    chain::{
        ASTERISK_V4, Asterisk, Chain, GENESYS_V4, Genesys, JsSip, KAMAILIO_GENESYS_IF, Kamailio,
        Register, TempDir, uri_user, wait_until,
    },
    cli::{Attach, PinRoot, ok},
};

/// In sip-rewriter's DN map.
const DN_MAP: &str = "1002";
/// Served by the default template.
const DN_TEMPLATE: &str = "2001";
const DNS: [&str; 2] = [DN_MAP, DN_TEMPLATE];
/// JsSIP refreshes 5 s before expiry when it is at most 64 s (Registrator.js).
const EXPIRES: u32 = 10;

/// What Genesys must store for `dn`: the config below.
fn expected(dn: &str) -> String {
    format!("sip:{dn}@{ASTERISK_V4}:5060")
}

/// One chain at a time: two Kamailios and two JsSIPs on two cores would stretch JsSIP's timers
/// against each other for nothing.
static ONE: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
enum Mode {
    Relay,
    Uac,
}

impl Mode {
    fn cfg(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("kamailio")
            .join(match self {
                Mode::Relay => "relay.cfg",
                Mode::Uac => "uac.cfg",
            })
    }
}

struct Parts {
    chain: Chain,
    dir: TempDir,
}

fn parts(tag: &str) -> Parts {
    Parts {
        chain: Chain::new(tag).expect("creating the chain's namespaces"),
        dir: TempDir::new(tag),
    }
}

/// Fails with the logs of both processes when something did not happen.
fn context(kam: &Kamailio, js: &JsSip, genesys: &Genesys) -> String {
    let regs: Vec<String> = genesys
        .registers()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
        .collect();
    format!(
        "\n--- JsSIP events: {:?}\n--- node stderr:\n{}\n--- kamailio log (tail):\n{}\n--- REGISTERs at Genesys:\n{}",
        js.events(),
        js.log_text(),
        tail(&kam.0.log_text(), 40),
        regs.join("\n")
    )
}

/// sip-rewriter's counters, for a failure message.
fn stats_text(chain: &Chain, root: &PinRoot) -> String {
    let (code, out, err) = integration_tests::cli::run(
        Some(&chain.kamailio),
        root,
        &["stats", "--iface", KAMAILIO_GENESYS_IF],
    );
    format!("\n--- sip-rewriter stats (exit {code}):\n{out}{err}")
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn no_csum_errors(chain: &Chain) {
    for (ns, n) in chain.csum_errors() {
        assert_eq!(n, 0, "UDP checksum errors in {ns}");
    }
}

/// Without sip-rewriter: Genesys stores JsSIP's own `.invalid` Contact and cannot INVITE it.
/// Returns the first REGISTER of each DN as Genesys received it (the corpus captures).
fn control(mode: Mode) -> Vec<Register> {
    let p = parts("jsc");
    let genesys = Genesys::start(&p.chain.genesys).unwrap();
    let kam = Kamailio::start(&p.chain.kamailio, &p.chain.client, &mode.cfg(), &p.dir.0).unwrap();
    let mut js = JsSip::start(&p.chain.client, &p.dir.0, EXPIRES, &DNS).unwrap();
    let bound = wait_until(Duration::from_secs(15), "both DNs bound at Genesys", || {
        js.check_alive()?;
        Ok(DNS
            .iter()
            .all(|dn| !genesys.bindings(dn).is_empty() && js.count("registered", dn) == 1))
    });
    if let Err(e) = bound {
        panic!("{mode:?} control: {e:#}{}", context(&kam, &js, &genesys));
    }
    for dn in DNS {
        let own = js
            .events()
            .into_iter()
            .find_map(|e| (e.ev == "registered" && e.dn == dn).then_some(e.contact?))
            .unwrap();
        let stored = genesys.bindings(dn);
        assert!(
            own.contains(".invalid"),
            "JsSIP's own Contact of {dn} is {own}"
        );
        // The Genesys check of the real run fails here: the Contact is the client's own.
        assert_eq!(stored.len(), 1, "{mode:?} control {dn}: {stored:?}");
        assert_eq!(stored[0].0, own, "{mode:?} control {dn}");
        assert_ne!(stored[0].0, expected(dn));
        assert!(genesys.invite(dn).is_err(), "{dn}: {own} is not routable");
    }
    no_csum_errors(&p.chain);
    DNS.iter()
        .map(|dn| {
            genesys
                .registers()
                .into_iter()
                .find(|r| r.dn == *dn)
                .unwrap()
        })
        .collect()
}

/// sip-rewriter's config: the Genesys address, DN_MAP in the map, the template for the rest.
fn rewriter_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("sip-rewriter.toml");
    std::fs::write(
        &cfg,
        format!(
            "[genesys]\nport = 5060\naddresses = [\"{GENESYS_V4}\"]\n\
             [contacts]\ndefault = \"sip:{{dn}}@{ASTERISK_V4}:5060\"\nkeep_params = [\"expires\", \"q\"]\n\
             [contacts.map]\n\"{DN_MAP}\" = \"{}\"\n",
            expected(DN_MAP)
        ),
    )
    .unwrap();
    cfg
}

/// Mode (a) with the rewrite but without the restore (`--ingress off`): Genesys stores the
/// right Contact, but its 200 OK lists only that one, so JsSIP ignores it and never registers
/// (nor refreshes). This is why the restore exists.
fn restore_off() {
    let p = parts("jso");
    let root = PinRoot::new();
    let cfg = rewriter_config(&p.dir.0);
    let att = Attach::start(
        &p.chain.kamailio,
        &root,
        KAMAILIO_GENESYS_IF,
        &["--config", cfg.to_str().unwrap(), "--ingress", "off"],
    );
    let genesys = Genesys::start(&p.chain.genesys).unwrap();
    let kam = Kamailio::start(
        &p.chain.kamailio,
        &p.chain.client,
        &Mode::Relay.cfg(),
        &p.dir.0,
    )
    .unwrap();
    let mut js = JsSip::start(&p.chain.client, &p.dir.0, EXPIRES, &DNS).unwrap();
    const IGNORED: &str = "no Contact header pointing to us, response ignored";
    if let Err(e) = wait_until(
        Duration::from_secs(10),
        "both bindings at Genesys and JsSIP ignoring both 200 OKs",
        || {
            js.check_alive()?;
            Ok(DNS
                .iter()
                .all(|dn| genesys.bindings(dn) == [(expected(dn), EXPIRES)])
                && js.log_text().matches(IGNORED).count() >= DNS.len())
        },
    ) {
        panic!(
            "restore off: {e:#}{}{}",
            context(&kam, &js, &genesys),
            stats_text(&p.chain, &root)
        );
    }
    for dn in DNS {
        assert_eq!(js.count("registered", dn), 0, "restore off: {dn}");
    }
    drop(js);
    drop(kam);
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
}

/// With sip-rewriter attached on Kamailio's Genesys-facing interface.
fn with_rewriter(mode: Mode) {
    let started = Instant::now();
    let p = parts("jsr");
    let root = PinRoot::new();
    let cfg = rewriter_config(&p.dir.0);
    let att = Attach::start(
        &p.chain.kamailio,
        &root,
        KAMAILIO_GENESYS_IF,
        &["--config", cfg.to_str().unwrap()],
    );
    let genesys = Genesys::start(&p.chain.genesys).unwrap();
    let asterisk = Asterisk::start(&p.chain.asterisk).unwrap();
    let kam = Kamailio::start(&p.chain.kamailio, &p.chain.client, &mode.cfg(), &p.dir.0).unwrap();
    let mut js = JsSip::start(&p.chain.client, &p.dir.0, EXPIRES, &DNS).unwrap();
    let fail = |what: &str, e: anyhow::Error, js: &JsSip| -> ! {
        let stats = stats_text(&p.chain, &root);
        panic!(
            "{mode:?}: {what}: {e:#}{}{stats}",
            context(&kam, js, &genesys)
        )
    };

    // Registered, then refreshed at least once: JsSIP arms its refresh timer only after it
    // accepted a 200 OK listing its own Contact.
    if let Err(e) = wait_until(
        Duration::from_secs(25),
        "an initial REGISTER and a refresh of each DN at Genesys",
        || {
            js.check_alive()?;
            Ok(DNS.iter().all(|dn| genesys.binding_registers(dn) >= 2))
        },
    ) {
        fail("refresh", e, &js);
    }
    let refreshed_at = started.elapsed();
    for dn in DNS {
        assert_eq!(
            genesys.bindings(dn),
            vec![(expected(dn), EXPIRES)],
            "{mode:?}: Genesys' binding of {dn}{}",
            context(&kam, &js, &genesys)
        );
        for r in genesys.registers().iter().filter(|r| r.dn == dn) {
            let uris: Vec<&str> = r.contacts.iter().map(|c| c.uri.as_str()).collect();
            assert_eq!(uris, [expected(dn)], "{mode:?}: every REGISTER of {dn}");
        }
        assert_eq!(js.count("registered", dn), 1, "{mode:?} {dn}");
        assert_eq!(js.count("registrationFailed", dn), 0, "{mode:?} {dn}");
    }

    // Genesys calls each DN at its stored Contact: the Asterisk stand-in gets the INVITE.
    for dn in DNS {
        genesys.invite(dn).unwrap();
    }
    if let Err(e) = wait_until(
        Duration::from_secs(5),
        "an INVITE per DN at Asterisk",
        || {
            let got = asterisk.invites();
            Ok(DNS.iter().all(|dn| got.contains(&expected(dn))))
        },
    ) {
        fail("INVITE", e, &js);
    }
    for ruri in asterisk.invites() {
        assert!(DNS.contains(&uri_user(&ruri).as_str()), "R-URI {ruri}");
    }

    // ua.unregister(): expires=0 survives the rewrite and Genesys drops the binding.
    js.send("unregister").unwrap();
    if let Err(e) = wait_until(
        Duration::from_secs(10),
        "both bindings removed at Genesys and JsSIP unregistered",
        || {
            js.check_alive()?;
            Ok(DNS
                .iter()
                .all(|dn| genesys.bindings(dn).is_empty() && js.count("unregistered", dn) == 1))
        },
    ) {
        fail("unregister", e, &js);
    }
    for dn in DNS {
        let removal = genesys
            .registers()
            .into_iter()
            .find(|r| r.dn == dn && r.is_removal())
            .unwrap();
        assert_eq!(
            removal.contacts[0].uri,
            expected(dn),
            "{mode:?} un-REGISTER"
        );
        assert_eq!(js.count("registrationFailed", dn), 0, "{mode:?} {dn}");
    }
    no_csum_errors(&p.chain);

    let stats: serde_json::Value = serde_json::from_str(
        ok(
            Some(&p.chain.kamailio),
            &root,
            &["stats", "--json", "--iface", KAMAILIO_GENESYS_IF],
        )
        .trim(),
    )
    .unwrap();
    let total = |k: &str| stats["counters"][k]["total"].as_u64().unwrap_or(0);
    let registers = genesys.registers().len() as u64;
    let with_binding = DNS
        .iter()
        .map(|dn| genesys.binding_registers(dn) as u64)
        .sum::<u64>();
    // A REGISTER Kamailio retransmitted is rewritten again and counted again.
    assert_eq!(total("rewritten"), registers, "{stats}");
    assert_eq!(total("error"), 0, "{stats}");
    // Every 200 OK that listed a binding got the client's Contact back (mode (b): Kamailio's
    // uac receives them; only mode (a) passes them on to JsSIP).
    assert!(total("restored") >= with_binding, "{stats}");
    let call_ids = |dn: &str| {
        let mut ids: Vec<String> = genesys
            .registers()
            .into_iter()
            .filter(|r| r.dn == dn)
            .map(|r| r.call_id)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    println!(
        "{mode:?}: {registers} REGISTERs at Genesys ({} / {} Call-IDs for {DN_MAP} / {DN_TEMPLATE}), \
         all rewritten; refreshed by {:.1} s; {} INVITEs at Asterisk; unregistered; restored {}; {:.1} s",
        call_ids(DN_MAP),
        call_ids(DN_TEMPLATE),
        refreshed_at.as_secs_f64(),
        asterisk.invites().len(),
        total("restored"),
        started.elapsed().as_secs_f64()
    );
    drop(js);
    drop(kam);
    let (code, log) = att.stop();
    assert_eq!(code, 0, "{log}");
}

/// `JSSIP_CHAIN_DUMP=DIR` writes the control run's REGISTERs there (corpus captures).
fn dump(mode: Mode, regs: &[Register]) {
    let Some(dir) = std::env::var_os("JSSIP_CHAIN_DUMP") else {
        return;
    };
    for r in regs {
        let path = Path::new(&dir).join(format!("{mode:?}-{}.sip", r.dn));
        std::fs::write(path, &r.raw).unwrap();
    }
}

fn run(mode: Mode) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let regs = control(mode);
    dump(mode, &regs);
    println!(
        "{mode:?} control (no sip-rewriter): Genesys stored JsSIP's .invalid Contacts ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    if let Mode::Relay = mode {
        let t = Instant::now();
        restore_off();
        println!(
            "Relay with --ingress off: Genesys stored the rewritten Contacts, JsSIP ignored both 200 OKs ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }
    with_rewriter(mode);
}

#[test]
fn jssip_kamailio_t_relay_to_genesys() {
    run(Mode::Relay);
}

#[test]
fn jssip_kamailio_save_and_uac_register_to_genesys() {
    run(Mode::Uac);
}
