//! The users' own chain for tests/tests/jssip_chain.rs: JsSIP (node) over a WebSocket to
//! Kamailio, UDP from Kamailio to a Genesys stand-in, INVITEs from Genesys to an Asterisk
//! stand-in. Four namespaces, each process started by PID and stopped by it, everything removed
//! on drop (also when the test panics).
//!
//! ```text
//! client 198.18.16.1 ── 198.18.16.2 kamailio 198.18.17.1 ── 198.18.17.2 genesys 198.18.17.254 ── 198.18.17.54 asterisk
//!                    ws :8080                  (sip-rewriter)      udp :5060          (host route)        udp :5060
//! ```

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::net::{InNetns, ip};

pub const CLIENT_V4: &str = "198.18.16.1";
/// Kamailio's WebSocket listener (tests/kamailio/*.cfg).
pub const KAMAILIO_WS_V4: &str = "198.18.16.2";
/// Kamailio's UDP socket towards Genesys (tests/kamailio/*.cfg).
pub const KAMAILIO_UDP_V4: &str = "198.18.17.1";
pub const GENESYS_V4: &str = "198.18.17.2";
/// Genesys' end of its link to the Asterisk stand-in.
const GENESYS_TO_ASTERISK_V4: &str = "198.18.17.254";
/// The Asterisk address of the Contact sip-rewriter writes.
pub const ASTERISK_V4: &str = "198.18.17.54";
/// Kamailio's Genesys-facing interface, where sip-rewriter is attached.
pub const KAMAILIO_GENESYS_IF: &str = "veth-kg";

/// Four namespaces: client — kamailio — genesys — asterisk.
pub struct Chain {
    pub client: String,
    pub kamailio: String,
    pub genesys: String,
    pub asterisk: String,
}

impl Chain {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let name = |role: &str| format!("sipr-{tag}-{role}-{id}");
        let c = Chain {
            client: name("cli"),
            kamailio: name("kam"),
            genesys: name("gen"),
            asterisk: name("ast"),
        };
        // From here on, drop removes whatever was created.
        for ns in c.all() {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let pair = |a_ns: &str, a: &str, b_ns: &str, b: &str| {
            ip(&[
                "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
            ])
        };
        pair(&c.client, "veth-ck", &c.kamailio, "veth-kc")?;
        pair(&c.kamailio, KAMAILIO_GENESYS_IF, &c.genesys, "veth-gk")?;
        pair(&c.genesys, "veth-ga", &c.asterisk, "veth-ag")?;
        for (ns, dev, addr) in [
            (&c.client, "veth-ck", format!("{CLIENT_V4}/24")),
            (&c.kamailio, "veth-kc", format!("{KAMAILIO_WS_V4}/24")),
            (
                &c.kamailio,
                KAMAILIO_GENESYS_IF,
                format!("{KAMAILIO_UDP_V4}/24"),
            ),
            (&c.genesys, "veth-gk", format!("{GENESYS_V4}/24")),
        ] {
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // Asterisk sits in Genesys' subnet behind a host route (a peer address on each end).
        for (ns, dev, local, peer) in [
            (&c.genesys, "veth-ga", GENESYS_TO_ASTERISK_V4, ASTERISK_V4),
            (&c.asterisk, "veth-ag", ASTERISK_V4, GENESYS_TO_ASTERISK_V4),
        ] {
            ip(&["-n", ns, "addr", "add", local, "peer", peer, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(c)
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.client, &self.kamailio, &self.genesys, &self.asterisk]
    }

    /// `udp_in_csum_errors()` of every namespace, by name.
    pub fn csum_errors(&self) -> Vec<(String, u64)> {
        self.all()
            .iter()
            .map(|ns| {
                let _in = InNetns::enter(ns).expect("entering a chain namespace");
                (ns.to_string(), crate::net::udp_in_csum_errors())
            })
            .collect()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth ends, their peers and any TCX/XDP link.
        for ns in self.all() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "sipr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child started in its own process group; on drop the group gets SIGTERM, then SIGKILL
/// (Kamailio's workers are its children, in the same group).
pub struct Group {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Group {
    /// `cmd` in namespace `ns` (nsenter execs it: the PID is the program's), stderr to `log`.
    fn spawn(ns: &str, program: &Path, log: &Path) -> anyhow::Result<Command> {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(program);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c.stderr(File::create(log).with_context(|| format!("creating {}", log.display()))?);
        Ok(c)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running; `Err` with its log when it exited.
    pub fn check_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "{what} exited ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_group(pid: u32, sig: libc::c_int) {
        // SAFETY: kill(2) on the process group this struct created (pgid = the child's PID).
        unsafe { libc::kill(-(pid as libc::pid_t), sig) };
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; waits for the child.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        Self::kill_group(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever of the group is left (workers of a main process that already exited too).
        Self::kill_group(c.id(), libc::SIGKILL);
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

fn kamailio_bin() -> PathBuf {
    ["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("kamailio is missing: `cargo xtask setup` installs it (apt-get install kamailio kamailio-websocket-modules)")
}

/// Kamailio with one of tests/kamailio/*.cfg in namespace `ns`.
pub struct Kamailio(pub Group);

impl Kamailio {
    /// Starts it and waits (bounded) until its WebSocket port accepts connections from `client_ns`.
    pub fn start(ns: &str, client_ns: &str, cfg: &Path, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join("kamailio.log");
        let mut c = Group::spawn(ns, &kamailio_bin(), &log)?;
        c.args(["-f", cfg.to_str().context("config path")?])
            .args(["-DD", "-E", "-m", "32", "-M", "8", "-w"])
            .arg(dir)
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = c.spawn().context("starting kamailio")?;
        let mut k = Kamailio(Group {
            child: Some(child),
            log,
        });
        let ws: SocketAddr = format!("{KAMAILIO_WS_V4}:8080").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            k.0.check_alive("kamailio")?;
            let up = {
                let _in = InNetns::enter(client_ns)?;
                TcpStream::connect_timeout(&ws, Duration::from_millis(200)).is_ok()
            };
            if up {
                return Ok(k);
            }
            if Instant::now() > deadline {
                bail!(
                    "kamailio did not listen on {ws} within 10 s:\n{}",
                    k.0.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// tests/jssip/package-lock.json's `npm ci` directory, as `cargo xtask setup` computes it
/// (xtask/src/setup.rs `jssip_dir`): the cache dir + `jssip-<FNV-1a 64 of the lock file>`.
pub fn jssip_dir() -> PathBuf {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("jssip/package-lock.json");
    let bytes = std::fs::read(&lock).expect("reading tests/jssip/package-lock.json");
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"),
    };
    cache
        .join("sip-rewriter")
        .join(format!("jssip-{hash:016x}"))
}

/// One line the JsSIP client printed (tests/jssip/client.js).
#[derive(Clone, Debug)]
pub struct Event {
    pub ev: String,
    pub dn: String,
    pub contact: Option<String>,
    pub cause: Option<String>,
}

/// node running tests/jssip/client.js: one JsSIP UA per DN.
pub struct JsSip {
    group: Group,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Event>>>,
    reader: Option<JoinHandle<()>>,
}

impl JsSip {
    pub fn start(ns: &str, dir: &Path, expires: u32, dns: &[&str]) -> anyhow::Result<Self> {
        let modules = jssip_dir().join("node_modules");
        if !modules.join("jssip/package.json").is_file() {
            bail!(
                "JsSIP is not installed in {}: run `cargo xtask setup` (npm ci of tests/jssip)",
                modules.display()
            );
        }
        let node = ["/usr/bin/node", "/usr/local/bin/node"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("node is missing: `cargo xtask setup` installs it (apt-get install nodejs)")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("jssip/client.js");
        let log = dir.join("jssip.log");
        let mut c = Group::spawn(ns, &node, &log)?;
        let expires = expires.to_string();
        c.arg(&script)
            .args([
                &format!("ws://{KAMAILIO_WS_V4}:8080"),
                GENESYS_V4,
                expires.as_str(),
            ])
            .args(dns)
            .env("NODE_PATH", &modules)
            // The registrator's debug lines (the "response ignored" one), warnings, errors.
            .env("DEBUG", "JsSIP:Registrator,JsSIP:WARN:*,JsSIP:ERROR:*")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().context("starting node")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("node stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let events = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    let s = |k: &str| v[k].as_str().map(str::to_owned);
                    events.lock().expect("events").push(Event {
                        ev: s("ev").unwrap_or_default(),
                        dn: s("dn").unwrap_or_default(),
                        contact: s("contact"),
                        cause: s("cause"),
                    });
                }
            })
        };
        Ok(Self {
            group: Group {
                child: Some(child),
                log,
            },
            stdin,
            events,
            reader: Some(reader),
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    /// Events named `ev` of DN `dn`.
    pub fn count(&self, ev: &str, dn: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.ev == ev && e.dn == dn)
            .count()
    }

    pub fn send(&mut self, command: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("client stdin closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.group.check_alive("node (JsSIP)")
    }

    pub fn log_text(&self) -> String {
        self.group.log_text()
    }
}

impl Drop for JsSip {
    fn drop(&mut self) {
        // Closing stdin ends the client by itself; the group kill is the bound.
        self.stdin.take();
        self.group.stop(Duration::from_secs(2));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A SIP message's start line and header fields (folded lines joined, compact names expanded,
/// names lowercased), in order.
pub struct Parsed {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

pub fn parse(msg: &str) -> Parsed {
    let head = msg.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
            }
            continue;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let name = match name.as_str() {
            "t" => "to",
            "f" => "from",
            "m" => "contact",
            "i" => "call-id",
            "v" => "via",
            "l" => "content-length",
            n => n,
        }
        .to_owned();
        headers.push((name, value.trim().to_owned()));
    }
    Parsed { start, headers }
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `s` at `sep` outside `"..."` and `<...>`.
fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut angle, mut escaped) =
        (Vec::new(), 0, false, false, false);
    for (i, ch) in s.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// One contact of a Contact header: its URI (without `<>`) and its `expires` parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Contact {
    pub uri: String,
    pub expires: Option<u32>,
}

/// The contacts of one Contact header value (`*` is a contact with URI `*`).
pub fn contacts(value: &str) -> Vec<Contact> {
    split_outside(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let (uri, params) = match (c.find('<'), c.find('>')) {
                (Some(a), Some(b)) if a < b => (&c[a + 1..b], &c[b + 1..]),
                _ => c.split_once(';').unwrap_or((c, "")),
            };
            let expires = split_outside(params, ';').into_iter().find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("expires")
                    .then(|| v.trim().parse().ok())?
            });
            Contact {
                uri: uri.trim().to_owned(),
                expires,
            }
        })
        .collect()
}

/// The user part of the URI in a To/From value.
pub fn uri_user(value: &str) -> String {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value,
    };
    uri.split_once(':')
        .map(|(_, r)| r)
        .and_then(|r| r.split_once('@'))
        .map(|(u, _)| u.to_owned())
        .unwrap_or_default()
}

/// One REGISTER as the Genesys stand-in received it.
#[derive(Clone, Debug)]
pub struct Register {
    pub dn: String,
    pub call_id: String,
    pub cseq: String,
    pub contacts: Vec<Contact>,
    /// The `Expires` header, if any.
    pub expires_header: Option<u32>,
    pub raw: Vec<u8>,
}

impl Register {
    /// Whether it removes bindings (every contact's effective expiry is 0).
    pub fn is_removal(&self) -> bool {
        !self.contacts.is_empty()
            && self
                .contacts
                .iter()
                .all(|c| c.expires.or(self.expires_header) == Some(0))
    }
}

#[derive(Default)]
struct GenesysState {
    registers: Vec<Register>,
    /// DN → (URI as received, expiry in seconds).
    bindings: BTreeMap<String, Vec<(String, u32)>>,
}

/// The Genesys stand-in: a registrar on UDP 5060 that stores each binding exactly as received,
/// answers 200 OK listing the DN's bindings with their expiry, removes on `expires=0` /
/// `Expires: 0`, and on request sends an INVITE to each stored Contact.
pub struct Genesys {
    state: Arc<Mutex<GenesysState>>,
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Genesys {
    pub fn start(ns: &str) -> anyhow::Result<Self> {
        let sock = {
            let _in = InNetns::enter(ns)?;
            UdpSocket::bind((GENESYS_V4, 5060)).context("binding genesys:5060")?
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let state = Arc::new(Mutex::new(GenesysState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, state, stop) = (sock.try_clone()?, state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(reply) = registrar(&buf[..n], &state) {
                        let _ = sock.send_to(reply.as_bytes(), from);
                    }
                }
            })
        };
        Ok(Self {
            state,
            sock,
            stop,
            thread: Some(thread),
        })
    }

    pub fn registers(&self) -> Vec<Register> {
        self.state.lock().expect("genesys").registers.clone()
    }

    /// The REGISTERs of `dn` that add or refresh a binding, a retransmission (same Call-ID and
    /// CSeq) counted once.
    pub fn binding_registers(&self, dn: &str) -> usize {
        let mut seen: Vec<(String, String)> = self
            .registers()
            .into_iter()
            .filter(|r| r.dn == dn && !r.is_removal())
            .map(|r| (r.call_id, r.cseq))
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    /// The stored bindings of `dn`: (URI as received, expiry).
    pub fn bindings(&self, dn: &str) -> Vec<(String, u32)> {
        self.state
            .lock()
            .expect("genesys")
            .bindings
            .get(dn)
            .cloned()
            .unwrap_or_default()
    }

    /// An INVITE to every stored Contact of `dn`, sent to its host:port (an IPv4 address: the
    /// stand-in resolves no names, so a `.invalid` Contact is an error, as it is for Genesys).
    pub fn invite(&self, dn: &str) -> anyhow::Result<()> {
        let bindings = self.bindings(dn);
        if bindings.is_empty() {
            bail!("no binding for {dn}");
        }
        for (i, (uri, _)) in bindings.iter().enumerate() {
            let hostport = uri
                .split_once('@')
                .map(|(_, h)| h)
                .unwrap_or(uri)
                .split(';')
                .next()
                .unwrap_or_default();
            let to: SocketAddr = if hostport.contains(':') {
                hostport.parse()
            } else {
                format!("{hostport}:5060").parse()
            }
            .with_context(|| format!("{dn}'s Contact {uri} is not routable"))?;
            let msg = format!(
                "INVITE {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {GENESYS_V4}:5060;branch=z9hG4bK-genesys-{dn}-{i}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:genesys@{GENESYS_V4}>;tag=genesys-{i}\r\n\
                 To: <{uri}>\r\n\
                 Call-ID: invite-{dn}-{i}@{GENESYS_V4}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:genesys@{GENESYS_V4}:5060>\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            self.sock.send_to(msg.as_bytes(), to)?;
        }
        Ok(())
    }
}

impl Drop for Genesys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records a REGISTER, updates the bindings, returns the 200 OK (None for anything else).
fn registrar(raw: &[u8], state: &Mutex<GenesysState>) -> Option<String> {
    let msg = String::from_utf8_lossy(raw);
    if !msg.starts_with("REGISTER ") {
        return None;
    }
    let p = parse(&msg);
    let to = p.get("to")?;
    let dn = uri_user(to);
    let expires_header = p.get("expires").and_then(|e| e.parse().ok());
    let cs: Vec<Contact> = p.all("contact").flat_map(contacts).collect();
    let mut st = state.lock().expect("genesys");
    let bound = st.bindings.entry(dn.clone()).or_default();
    for c in &cs {
        let expires = c.expires.or(expires_header).unwrap_or(3600);
        if c.uri == "*" {
            if expires == 0 {
                bound.clear();
            }
            continue;
        }
        bound.retain(|(u, _)| *u != c.uri);
        if expires > 0 {
            bound.push((c.uri.clone(), expires));
        }
    }
    let mut reply = String::from("SIP/2.0 200 OK\r\n");
    for v in p.all("via") {
        reply.push_str(&format!("Via: {v}\r\n"));
    }
    let tag = if to.contains(";tag=") {
        ""
    } else {
        ";tag=genesys"
    };
    reply.push_str(&format!(
        "From: {}\r\nTo: {to}{tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        p.get("from").unwrap_or_default(),
        p.get("call-id").unwrap_or_default(),
        p.get("cseq").unwrap_or_default()
    ));
    for (uri, expires) in bound.iter() {
        reply.push_str(&format!("Contact: <{uri}>;expires={expires}\r\n"));
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    st.registers.push(Register {
        dn,
        call_id: p.get("call-id").unwrap_or_default().to_owned(),
        cseq: p.get("cseq").unwrap_or_default().to_owned(),
        contacts: cs,
        expires_header,
        raw: raw.to_vec(),
    });
    Some(reply)
}

/// The Asterisk stand-in: records the Request-URI of every INVITE on UDP 5060.
pub struct Asterisk {
    invites: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Asterisk {
    pub fn start(ns: &str) -> anyhow::Result<Self> {
        let sock = {
            let _in = InNetns::enter(ns)?;
            UdpSocket::bind((ASTERISK_V4, 5060)).context("binding asterisk:5060")?
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let invites = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (invites, stop) = (invites.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sock.recv(&mut buf) else {
                        continue;
                    };
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if let Some(ruri) = msg
                        .strip_prefix("INVITE ")
                        .and_then(|r| r.split(' ').next())
                    {
                        invites.lock().expect("asterisk").push(ruri.to_owned());
                    }
                }
            })
        };
        Ok(Self {
            invites,
            stop,
            thread: Some(thread),
        })
    }

    /// The Request-URIs of the INVITEs received so far.
    pub fn invites(&self) -> Vec<String> {
        self.invites.lock().expect("asterisk").clone()
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `within` has passed; `Err(what)` then.
pub fn wait_until(
    within: Duration,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
