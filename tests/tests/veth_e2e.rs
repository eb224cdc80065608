//! End to end on a real veth pair between two throw-away namespaces (needs root).

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use integration_tests::net::{GENESYS_V4, InNetns, Topology};
use rewriter_common::{Config, Stat};
use rewriter_user::Rewriter;

/// Receives until `want` datagrams arrived or `deadline` passed.
fn drain(sock: &UdpSocket, want: usize, deadline: Instant) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < want && Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

#[test]
fn datagrams_cross_the_attached_veth_unchanged_and_only_5060_is_counted() {
    const N: usize = 100;
    let topo = Topology::new("e2e").unwrap();

    let receivers: Vec<UdpSocket> = {
        let _ns = InNetns::enter(&topo.genesys).unwrap();
        [5060u16, 5061]
            .iter()
            .map(|p| {
                let s = UdpSocket::bind((GENESYS_V4, *p)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                s
            })
            .collect()
    };

    let _ns = InNetns::enter(&topo.edge).unwrap();
    let mut rw = Rewriter::load(&Config::default()).unwrap();
    let attachment = rw.attach_egress(&topo.edge_if).unwrap();
    let err = rw.attach_egress(&topo.edge_if).unwrap_err().to_string();
    assert!(err.contains("already attached"), "{err}");

    let sender = UdpSocket::bind("198.18.0.1:0").unwrap();
    let payload = |port: u16, i: usize| {
        format!("OPTIONS sip:genesys SIP/2.0\r\nX-Seq: {port}-{i}\r\n\r\n").into_bytes()
    };
    for i in 0..N {
        for port in [5060u16, 5061] {
            let to: SocketAddr = format!("{GENESYS_V4}:{port}").parse().unwrap();
            sender.send_to(&payload(port, i), to).unwrap();
        }
        // Bounded pace: well under the receive buffer, finishes in well under a second.
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (sock, port) in receivers.iter().zip([5060u16, 5061]) {
        let got = drain(sock, N, deadline);
        assert_eq!(got.len(), N, "datagrams received on {port}");
        for (i, g) in got.iter().enumerate() {
            assert_eq!(
                g,
                &payload(port, i),
                "datagram {i} to {port} changed or reordered"
            );
        }
    }
    assert_eq!(rw.counters().unwrap().get(Stat::Seen), N as u64);
    rw.detach(attachment).unwrap();
}
