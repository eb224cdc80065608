//! Prometheus text exposition on `GET /metrics` (and `HEAD`): a deliberately tiny HTTP/1.0
//! responder, one request per connection, a bounded number of connections, each with a read
//! timeout; the maps are read on a blocking thread so a scrape never stalls the runtime.

use std::{fmt::Write as _, time::Duration};

use rewriter_common::Stat;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    task::JoinSet,
};

use crate::pins::PinDir;

/// Connections served at once; one past it is closed at once (a scraper retries; idle
/// clients cannot use up the process's descriptors).
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between accept attempts while accept fails (e.g. EMFILE).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A metric family: name, type, help.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

/// The family of a counter and its label (`result`/`reason`), if any. The one place that maps
/// [`Stat`] to Prometheus: no wildcard, so a new counter does not compile until it is placed.
pub fn family(s: Stat) -> (Family, Option<(&'static str, &'static str)>) {
    const CANDIDATES: Family = counter(
        "sip_rewriter_egress_datagrams_total",
        "UDP datagrams leaving to the Genesys port (and address set): rewrite candidates.",
    );
    const REQUESTS: Family = counter(
        "sip_rewriter_egress_requests_total",
        "Egress candidates by kind: REGISTER requests or anything else.",
    );
    const REGISTERS: Family = counter(
        "sip_rewriter_registers_total",
        "REGISTERs by what the rewrite did with them.",
    );
    const CONTACTS: Family = counter(
        "sip_rewriter_contacts_rewritten_total",
        "Contact elements rewritten (a REGISTER may carry several).",
    );
    const UNTOUCHED: Family = counter(
        "sip_rewriter_untouched_total",
        "Datagrams in either direction left as they came, by reason.",
    );
    const RECORDINGS: Family = counter(
        "sip_rewriter_recordings_total",
        "Rewritten REGISTERs by whether their original Contacts were recorded for the restore.",
    );
    const REPLACED: Family = counter(
        "sip_rewriter_records_replaced_total",
        "Restore records deleted for a new Call-ID of a DN that held its most (4): its oldest.",
    );
    const INGRESS: Family = counter(
        "sip_rewriter_ingress_datagrams_total",
        "UDP datagrams arriving from the Genesys port (and address set): restore candidates.",
    );
    const RESPONSES: Family = counter(
        "sip_rewriter_responses_total",
        "Ingress candidates by what the restore did with them.",
    );
    const RESTORED: Family = counter(
        "sip_rewriter_contacts_restored_total",
        "Contact elements given the client's original URI back.",
    );
    const TO_TC: Family = counter(
        "sip_rewriter_xdp_to_tc_total",
        "Frames the XDP restore handed to the TC ingress restore.",
    );
    let result = |v| Some(("result", v));
    let reason = |v| Some(("reason", v));
    match s {
        Stat::Seen => (CANDIDATES, None),
        Stat::Register => (REQUESTS, Some(("kind", "register"))),
        Stat::NotRegister => (REQUESTS, Some(("kind", "other"))),
        Stat::Rewritten => (REGISTERS, result("rewritten")),
        Stat::Star => (REGISTERS, result("star")),
        Stat::DnMissing => (REGISTERS, result("dn_missing")),
        Stat::DnInvalid => (REGISTERS, result("dn_invalid")),
        Stat::DnUnknown => (REGISTERS, result("dn_unknown")),
        Stat::NoContact => (REGISTERS, result("no_contact")),
        Stat::Contacts => (CONTACTS, None),
        Stat::Malformed => (UNTOUCHED, reason("malformed")),
        Stat::TooBig => (UNTOUCHED, reason("too_big")),
        Stat::Fragment => (UNTOUCHED, reason("fragment")),
        Stat::Error => (UNTOUCHED, reason("error")),
        Stat::VlanUnsupported => (UNTOUCHED, reason("vlan_unsupported")),
        Stat::Ipv6Ext => (UNTOUCHED, reason("ipv6_ext")),
        Stat::Recorded => (RECORDINGS, result("recorded")),
        Stat::NotRecorded => (RECORDINGS, result("not_recorded")),
        Stat::RecordReplaced => (REPLACED, None),
        Stat::Responses => (INGRESS, None),
        Stat::Restored => (RESPONSES, result("restored")),
        Stat::NoState => (RESPONSES, result("no_state")),
        Stat::NoMatch => (RESPONSES, result("no_match")),
        Stat::WrongSource => (RESPONSES, result("wrong_source")),
        Stat::RespOther => (RESPONSES, result("other")),
        Stat::RestoredContacts => (RESTORED, None),
        Stat::ToTc => (TO_TC, None),
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, pins: PinDir) {
    let mut clients = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        while clients.try_join_next().is_some() {}
        let (sock, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::ZERO;
                c
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS leave the connection pending: retrying at once would
                // spin. Back off, up to a second, until accept works again.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                if backoff == MAX_BACKOFF || backoff == Duration::from_millis(10) {
                    log::warn!("metrics listener: accept failed: {e}; retrying in {backoff:?}");
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if clients.len() >= MAX_CONNECTIONS {
            log::debug!("metrics client {peer}: {MAX_CONNECTIONS} connections open, closing");
            drop(sock);
            continue;
        }
        let pins = pins.clone();
        clients.spawn(async move {
            if let Err(e) = answer(sock, pins).await {
                log::debug!("metrics client {peer}: {e}");
            }
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut sock: tokio::net::TcpStream, pins: PinDir) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let n = match tokio::time::timeout(READ_TIMEOUT, sock.read(&mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let req = String::from_utf8_lossy(&buf[..n]);
    let target = |method: &str| {
        req.strip_prefix(method)
            .is_some_and(|r| r.starts_with("/metrics ") || r.starts_with("/metrics?"))
    };
    let head = target("HEAD ");
    let (status, body) = if target("GET ") || head {
        // Map reads are syscalls, a full DN map 131 072 of them: off the runtime thread.
        match tokio::task::spawn_blocking(move || render(&pins)).await {
            Ok(Ok(b)) => ("200 OK", b),
            Ok(Err(e)) => (
                "500 Internal Server Error",
                format!("{}\n", crate::one_line(&e)),
            ),
            Err(e) => ("500 Internal Server Error", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "try /metrics\n".to_owned())
    };
    let mut resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        resp.push_str(&body);
    }
    tokio::time::timeout(READ_TIMEOUT, sock.write_all(resp.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// One attachment's counters, map fill and build info in Prometheus text format.
pub fn render(pins: &PinDir) -> anyhow::Result<String> {
    let c = pins.counters()?;
    let iface = &pins.iface;
    let mut out = String::new();
    let header = |out: &mut String, f: &Family| {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
    };
    // Each family once, its samples together (the text format wants them contiguous).
    let mut families: Vec<Family> = Vec::new();
    for s in Stat::ALL {
        let f = family(s).0;
        if !families.contains(&f) {
            families.push(f);
        }
    }
    for f in &families {
        header(&mut out, f);
        for s in Stat::ALL.into_iter().filter(|s| family(*s).0 == *f) {
            let label = family(s)
                .1
                .map(|(k, v)| format!(",{k}=\"{v}\""))
                .unwrap_or_default();
            let _ = writeln!(out, "{}{{iface=\"{iface}\"{label}}} {}", f.name, c.get(s));
        }
    }
    let entries = pins.contacts()?.keys().count();
    let capacity = pins.contacts_capacity()?;
    let (regs, regs_capacity) = pins.registrations_fill()?;
    let (dns, dns_capacity) = pins.registered_dns_fill()?;
    for (name, help, dn, reg, by_dn) in [
        (
            "sip_rewriter_map_entries",
            "Entries in a map: dn (DN to Contact), registrations (restore state) or registered_dns (its per-DN index).",
            entries as u64,
            regs as u64,
            dns as u64,
        ),
        (
            "sip_rewriter_map_capacity",
            "Most entries a map holds: dn (DN to Contact), registrations (restore state) or registered_dns (its per-DN index).",
            u64::from(capacity),
            u64::from(regs_capacity),
            u64::from(dns_capacity),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{iface=\"{iface}\",map=\"dn\"}} {dn}");
        let _ = writeln!(
            out,
            "{name}{{iface=\"{iface}\",map=\"registrations\"}} {reg}"
        );
        let _ = writeln!(
            out,
            "{name}{{iface=\"{iface}\",map=\"registered_dns\"}} {by_dn}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP sip_rewriter_build_info The running sip-rewriter's version.\n# TYPE sip_rewriter_build_info gauge\nsip_rewriter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_one_family_and_distinct_labels() {
        let mut seen = std::collections::HashSet::new();
        for s in Stat::ALL {
            let (f, label) = family(s);
            assert!(f.name.starts_with("sip_rewriter_") && f.name.ends_with("_total"));
            assert!(seen.insert((f.name, label)), "{} twice", f.name);
        }
    }
}
