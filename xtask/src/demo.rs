//! `cargo xtask demo`: the rewrite on a throw-away topology.
//!
//! Namespaces "edge" (where Kamailio would run, with sip-rewriter on its egress) and "genesys"
//! (the Genesys SIP server on 198.18.0.2:5060), joined by a veth pair. The seed's JsSIP-style
//! REGISTERs for DN 1002 (in the DN map) and 1003 (default template) and an un-REGISTER are
//! sent; for each, the Contact sent and the Contact Genesys received are printed side by side.
//! Everything is removed at the end, also on failure.

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
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
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
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
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
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Moves the calling thread into a network namespace (for its sockets).
fn enter(ns: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on a valid fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("entering netns {ns}"));
    }
    Ok(())
}

fn contact(msg: &str) -> String {
    msg.split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .map(|l| l["contact:".len()..].trim().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(bin: &Path) -> anyhow::Result<()> {
    for ns in [EDGE, GENESYS] {
        if Path::new("/run/netns").join(ns).exists() {
            bail!("network namespace {ns:?} already exists; remove it with: ip netns del {ns}");
        }
    }
    let mut demo = Demo { attach: None, config: std::env::temp_dir().join(format!("sip-rewriter-demo-{}.toml", std::process::id())) };
    std::fs::write(&demo.config, CONFIG).context("writing the demo config")?;
    ip(&["netns", "add", EDGE])?;
    ip(&["netns", "add", GENESYS])?;
    ip(&["link", "add", "veth-edge", "netns", EDGE, "type", "veth", "peer", "name", "veth-genesys", "netns", GENESYS])?;
    for (ns, dev, addr) in [(EDGE, "veth-edge", "198.18.0.1/30"), (GENESYS, "veth-genesys", "198.18.0.2/30")] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    println!("topology: netns {EDGE} (198.18.0.1, veth-edge) <-> netns {GENESYS} (198.18.0.2:5060)");
    println!("config:\n{}", CONFIG.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));

    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{EDGE}"))
        .arg(bin)
        .args(["attach", "--interval", "3600", "--config"])
        .arg(&demo.config)
        .env("SIP_REWRITER_PIN_ROOT", PIN_ROOT)
        .stdin(Stdio::null())
        .spawn()
        .context("starting sip-rewriter attach")?;
    demo.attach = Some(child);
    let pins = Path::new(PIN_ROOT).join("veth-edge").join("prog");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pins.exists() {
        if let Some(c) = demo.attach.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("sip-rewriter attach exited early: {status}");
        }
        if Instant::now() > deadline {
            bail!("sip-rewriter attach did not come up within 20 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    // Give the link a moment after the program pin appears.
    thread::sleep(Duration::from_millis(300));

    let receiver = thread::spawn(|| -> anyhow::Result<Vec<String>> {
        enter(GENESYS)?;
        let sock = UdpSocket::bind("198.18.0.2:5060").context("binding genesys:5060")?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let n = sock.recv(&mut buf).context("waiting for a REGISTER at genesys")?;
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        Ok(got)
    });
    thread::sleep(Duration::from_millis(200));
    let sent = vec![
        ("1002 (in the map)", REGISTER_1002.to_owned()),
        ("1003 (template)", REGISTER_1002.replace("1002", "1003").replace("84jp7d1i@3tglb5esjoiv", "6cfmsers@cu6so260g0k3")),
        ("1002 un-REGISTER", UNREGISTER_1002.to_owned()),
    ];
    let sender = thread::spawn({
        let sent = sent.clone();
        move || -> anyhow::Result<()> {
            enter(EDGE)?;
            let sock = UdpSocket::bind("198.18.0.1:5060").context("binding edge:5060")?;
            for (_, msg) in &sent {
                sock.send_to(msg.as_bytes(), "198.18.0.2:5060")?;
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    });
    sender.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let got = receiver.join().map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    println!();
    for ((what, s), g) in sent.iter().zip(&got) {
        println!("REGISTER {what}");
        println!("  Contact sent:     {}", contact(s));
        println!("  Contact received: {}", contact(g));
    }
    println!();
    let stats = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{EDGE}"))
        .arg(bin)
        .args(["status", "--iface", "veth-edge"])
        .env("SIP_REWRITER_PIN_ROOT", PIN_ROOT)
        .status()
        .context("running sip-rewriter status")?;
    if !stats.success() {
        bail!("sip-rewriter status failed: {stats}");
    }
    for (i, (_, s)) in sent.iter().enumerate() {
        if contact(s) == contact(&got[i]) {
            bail!("REGISTER {} reached Genesys with its Contact unchanged", i + 1);
        }
    }
    drop(demo);
    println!("\ndemo passed; topology, pins and process removed");
    Ok(())
}
