//! A minimal "Genesys" for end-to-end tests: answers every REGISTER with 200 OK and records
//! what arrived, in order.

use std::{
    net::UdpSocket,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One REGISTER as Genesys received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// User part of the To URI.
    pub dn: String,
    /// The Contact header value.
    pub contact: String,
    pub call_id: String,
}

/// The value of header `name` (e.g. `"Contact:"`) in a CRLF-separated message.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).map(str::trim))
}

/// Serves on `sock` until `for_at_most` has passed; `received()` is the log so far.
pub struct Registrar {
    log: Arc<Mutex<Vec<Received>>>,
    _thread: JoinHandle<()>,
}

impl Registrar {
    pub fn start(sock: UdpSocket, for_at_most: Duration) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("socket timeout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let log = log.clone();
            std::thread::spawn(move || serve(sock, log, Instant::now() + for_at_most))
        };
        Self {
            log,
            _thread: thread,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("registrar log").clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().expect("registrar log").len()
    }
}

fn serve(sock: UdpSocket, log: Arc<Mutex<Vec<Received>>>, deadline: Instant) {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !msg.starts_with("REGISTER ") {
            continue;
        }
        let to = header(&msg, "To:").unwrap_or_default();
        let dn = to
            .split("sip:")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .unwrap_or_default()
            .to_owned();
        let contact = header(&msg, "Contact:").unwrap_or_default().to_owned();
        let mut reply = String::from("SIP/2.0 200 OK\r\n");
        for h in ["Via:", "From:", "Call-ID:", "CSeq:"] {
            reply.push_str(&format!("{h} {}\r\n", header(&msg, h).unwrap_or_default()));
        }
        reply.push_str(&format!(
            "To: {to};tag=genesys\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        ));
        let _ = sock.send_to(reply.as_bytes(), from);
        let call_id = header(&msg, "Call-ID:").unwrap_or_default().to_owned();
        log.lock().expect("registrar log").push(Received {
            dn,
            contact,
            call_id,
        });
    }
}
