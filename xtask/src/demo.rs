//! `cargo xtask demo`: the rewrite on a throw-away topology.
//!
//! Namespaces "edge" (where Kamailio would run, with sip-rewriter on its interface) and
//! "genesys" (the Genesys SIP server on 198.18.0.2:5060), joined by a veth pair. The seed's
//! JsSIP-style REGISTERs for DN 1002 (in the DN map) and 1003 (default template) and an
//! un-REGISTER are sent; "Genesys" answers each 200 OK listing the Contact it stored, as a
//! registrar does. For each, the Contact sent, the Contact Genesys received and the Contact in
//! the 200 OK back at the client (restored on ingress) are printed. Everything is removed at the
//! end, also on failure.

use std::{
    fs::File,
    net::UdpSocket,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

const EDGE: &str = "edge";
const GENESYS: &str = "genesys";
const PIN_ROOT: &str = "/sys/fs/bpf/sip-rewriter-demo";
/// The demo's durable state (DN entries changed at run time), removed at the end.
const STATE_DIR: &str = "/tmp/sip-rewriter-demo-state";
/// How long `attach` may take to come up on the host (it takes well under a second).
pub const READY_ON_HOST: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"# sip-rewriter demo configuration
interface = "veth-edge"
[genesys]
port = 5060
addresses = ["198.18.0.2"]
[contacts]
default = "sip:{dn}@192.168.210.54:5060"
keep_params = ["expires", "q"]
[contacts.map]
"1002" = "sip:1002@192.168.210.54:5060"
"#;

const REGISTER_1002: &str = include_str!("../../tests/shared-corpus/01-jssip-register.in.sip");
const UNREGISTER_1002: &str = include_str!("../../tests/shared-corpus/02-jssip-unregister.in.sip");

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the topology, the attach process and the pins on drop.
struct Demo {
    attach: Option<Child>,
    config: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut c) = self.attach.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [EDGE, GENESYS] {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(PIN_ROOT);
        let _ = std::fs::remove_dir_all(STATE_DIR);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Moves the calling thread into a network namespace (for its sockets).
fn enter(ns: &str) -> anyhow::Result<()> {
    let f =
        File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on a valid fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering netns {ns}"));
    }
    Ok(())
}

/// `sip-rewriter status --iface veth-edge ARGS` in the edge namespace; its stdout.
fn status(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{EDGE}"))
        .arg(bin)
        .args(["status", "--iface", "veth-edge"])
        .args(args)
        .env("SIP_REWRITER_PIN_ROOT", PIN_ROOT)
        .env("SIP_REWRITER_STATE_DIR", STATE_DIR)
        .stderr(Stdio::null())
        .output()
        .context("running sip-rewriter status")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// What a registrar answers: 200 OK with the request's Via, From, To (tagged), Call-ID and
/// CSeq, and the binding it stored: the received Contact URI with `;expires=` of the request.
fn ok_response(register: &str) -> String {
    let header = |name: &str| {
        register
            .split("\r\n")
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    let contact = contact(register);
    let uri = contact.split('>').next().unwrap_or_default().to_owned() + ">";
    let expires = contact
        .split(";expires=")
        .nth(1)
        .unwrap_or("600")
        .to_owned();
    format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=gen-1\r\n{}\r\n{}\r\nContact: {uri};expires={expires}\r\nContent-Length: 0\r\n\r\n",
        header("Via:"),
        header("From:"),
        header("To:"),
        header("Call-ID:"),
        header("CSeq:")
    )
}

fn contact(msg: &str) -> String {
    msg.split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .map(|l| l["contact:".len()..].trim().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the hooks `attach` reported (egress attach mode, ingress hooks). `attach` must be up
/// within `ready_within`: loading the programs takes well under a second on the host, but the
/// verifier alone needs tens of seconds in a TCG guest (`cargo xtask vm-test`).
pub fn run(bin: &Path, ready_within: Duration) -> anyhow::Result<String> {
    for ns in [EDGE, GENESYS] {
        if Path::new("/run/netns").join(ns).exists() {
            bail!("network namespace {ns:?} already exists; remove it with: ip netns del {ns}");
        }
    }
    let mut demo = Demo {
        attach: None,
        config: std::env::temp_dir().join(format!("sip-rewriter-demo-{}.toml", std::process::id())),
    };
    std::fs::write(&demo.config, CONFIG).context("writing the demo config")?;
    ip(&["netns", "add", EDGE])?;
    ip(&["netns", "add", GENESYS])?;
    ip(&[
        "link",
        "add",
        "veth-edge",
        "netns",
        EDGE,
        "type",
        "veth",
        "peer",
        "name",
        "veth-genesys",
        "netns",
        GENESYS,
    ])?;
    for (ns, dev, addr) in [
        (EDGE, "veth-edge", "198.18.0.1/30"),
        (GENESYS, "veth-genesys", "198.18.0.2/30"),
    ] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    println!(
        "topology: netns {EDGE} (198.18.0.1, veth-edge) <-> netns {GENESYS} (198.18.0.2:5060)"
    );
    println!(
        "config:\n{}",
        CONFIG
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{EDGE}"))
        .arg(bin)
        .args(["attach", "--interval", "3600", "--config"])
        .arg(&demo.config)
        .env("SIP_REWRITER_PIN_ROOT", PIN_ROOT)
        .env("SIP_REWRITER_STATE_DIR", STATE_DIR)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sip-rewriter attach")?;
    // The log goes on to our stderr; its `attached to` line names the hooks attach chose.
    // Its error line, if it fails, goes into ours.
    let hooks = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let failure = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(err) = child.stderr.take() {
        let (hooks, failure) = (hooks.clone(), failure.clone());
        thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Some(rest) = line.split_once("attached to ").map(|(_, r)| r) {
                    *hooks.lock().unwrap_or_else(|e| e.into_inner()) = rest
                        .split(", Genesys port")
                        .next()
                        .unwrap_or(rest)
                        .to_owned();
                }
                if line.starts_with("sip-rewriter: ") {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = line;
                }
            }
        });
    }
    demo.attach = Some(child);
    // `status` says "running" once the egress program is attached, which `attach` does last.
    let deadline = Instant::now() + ready_within;
    while !status(bin, &["--json"])?.contains("\"running\"") {
        if let Some(c) = demo.attach.as_mut()
            && let Some(status) = c.try_wait()?
        {
            thread::sleep(Duration::from_millis(200));
            let line = failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
            bail!("sip-rewriter attach exited early ({status}): {line}");
        }
        if Instant::now() > deadline {
            bail!(
                "sip-rewriter attach did not come up within {} s",
                ready_within.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }

    let receiver = thread::spawn(|| -> anyhow::Result<Vec<String>> {
        enter(GENESYS)?;
        let sock = UdpSocket::bind("198.18.0.2:5060").context("binding genesys:5060")?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = sock
                .recv_from(&mut buf)
                .context("waiting for a REGISTER at genesys")?;
            let register = String::from_utf8_lossy(&buf[..n]).into_owned();
            sock.send_to(ok_response(&register).as_bytes(), from)
                .context("answering 200 OK")?;
            got.push(register);
        }
        Ok(got)
    });
    thread::sleep(Duration::from_millis(200));
    let sent = vec![
        ("1002 (in the map)", REGISTER_1002.to_owned()),
        (
            "1003 (template)",
            REGISTER_1002
                .replace("1002", "1003")
                .replace("84jp7d1i@3tglb5esjoiv", "6cfmsers@cu6so260g0k3"),
        ),
        ("1002 un-REGISTER", UNREGISTER_1002.to_owned()),
    ];
    let sender = thread::spawn({
        let sent = sent.clone();
        move || -> anyhow::Result<Vec<String>> {
            enter(EDGE)?;
            let sock = UdpSocket::bind("198.18.0.1:5060").context("binding edge:5060")?;
            sock.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut back = Vec::new();
            let mut buf = [0u8; 2048];
            for (_, msg) in &sent {
                sock.send_to(msg.as_bytes(), "198.18.0.2:5060")?;
                let n = sock
                    .recv(&mut buf)
                    .context("waiting for the 200 OK at the client")?;
                back.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            Ok(back)
        }
    });
    let back = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    println!();
    for (((what, s), g), b) in sent.iter().zip(&got).zip(&back) {
        println!("REGISTER {what}");
        println!("  Contact sent by the client:     {}", contact(s));
        println!("  Contact Genesys received:       {}", contact(g));
        println!("  Contact in the 200 OK back:     {}", contact(b));
    }
    println!();
    println!("{}", status(bin, &[])?);
    for (i, (_, s)) in sent.iter().enumerate() {
        if contact(s) == contact(&got[i]) {
            bail!(
                "REGISTER {} reached Genesys with its Contact unchanged",
                i + 1
            );
        }
        // The 200 OK lists the stored binding as `<uri>;expires=N`: the client's own URI again.
        let own = contact(s).split('>').next().unwrap_or_default().to_owned() + ">";
        if !contact(&back[i]).starts_with(&own) {
            bail!(
                "the 200 OK to REGISTER {} came back without the client's own Contact {own}",
                i + 1
            );
        }
    }
    drop(demo);
    println!("\ndemo passed; topology, pins and process removed");
    let hooks = hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(hooks)
}
