//! Prometheus text exposition of the counters on `GET /metrics` (a deliberately tiny HTTP/1.0
//! responder: one request per connection).

use std::fmt::Write as _;

use rewriter_common::Stat;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::pins::PinDir;

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, pins: PinDir) {
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let pins = pins.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) =
                if req.starts_with("GET /metrics ") || req.starts_with("GET /metrics?") {
                    match render(&pins) {
                        Ok(b) => ("200 OK", b),
                        Err(e) => ("500 Internal Server Error", format!("{e:#}\n")),
                    }
                } else {
                    ("404 Not Found", "try /metrics\n".to_owned())
                };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                log::debug!("metrics client {peer}: {e}");
            }
        });
    }
}

/// The counters of one attachment in Prometheus text format.
pub fn render(pins: &PinDir) -> anyhow::Result<String> {
    let c = pins.counters()?;
    let entries = pins.contacts()?.keys().count();
    let mut out = String::new();
    let iface = &pins.iface;
    let _ = writeln!(
        out,
        "# HELP sip_rewriter_packets_total Packets by outcome (see README, Counters)."
    );
    let _ = writeln!(out, "# TYPE sip_rewriter_packets_total counter");
    for s in Stat::ALL {
        let _ = writeln!(
            out,
            "sip_rewriter_packets_total{{iface=\"{iface}\",counter=\"{}\"}} {}",
            s.name(),
            c.get(s)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sip_rewriter_contact_entries Entries in the DN to Contact map."
    );
    let _ = writeln!(out, "# TYPE sip_rewriter_contact_entries gauge");
    let _ = writeln!(
        out,
        "sip_rewriter_contact_entries{{iface=\"{iface}\"}} {entries}"
    );
    Ok(out)
}
