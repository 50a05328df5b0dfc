//! One registration and call between two user agents and the proxy over
//! real sockets on 127.0.0.1 with the tokio driver: all UDP (TCP only for
//! the large MESSAGE towards the proxy), then all TCP, then all TLS (the
//! phones pinning the proxy's certificate) while another host stalls TLS
//! handshakes.

use crate::support;

use ibephone::sip::driver;
use ibephone::sip::filter::NoFilter;
use ibephone::sip::message::HeaderForm;
use ibephone::sip::proxy::{Proxy, ProxyConfig};
use ibephone::sip::registrar::Registrar;
use ibephone::sip::timers::Timers;
use ibephone::sip::ua::{Body, CallId, Command, EndReason, Event, UserAgent};
use ibephone::sip::Transport;
use std::net::SocketAddr;
use std::time::Duration;
use support::sip_net::{ua_config_with, user_records, DOMAIN};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

struct Handle {
    cmd: mpsc::Sender<Command>,
    ev: mpsc::Receiver<Event>,
}

impl Handle {
    async fn expect(&mut self, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.ev.recv()).await {
                Ok(Some(e)) if f(&e) => return e,
                Ok(Some(_)) => continue,
                other => panic!("waiting for {what}: {other:?}"),
            }
        }
    }
}

async fn bind() -> (UdpSocket, TcpListener, SocketAddr) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    // Same port for TCP if free; otherwise any (the test only needs the UDP port to match).
    let tcp = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    (udp, tcp, addr)
}

/// The proxy's TLS: a self-signed certificate (as pkg-server makes its
/// own) and its SHA-256, which the phones pin.
fn proxy_tls() -> (std::sync::Arc<rustls::ServerConfig>, [u8; 32]) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    pkg_server::tls::ensure_cert(&cert, &key, &["127.0.0.1".to_string()]).unwrap();
    let tls = pkg_server::tls::load(&cert, &key).unwrap();
    (tls.config, tls.fingerprint)
}

/// A UA reaching `proxy` over `transport` (over TLS pinned to `pin`).
async fn start_ua(
    user: &str,
    pw: &str,
    proxy: SocketAddr,
    transport: Transport,
    pin: Option<[u8; 32]>,
) -> Handle {
    let (udp, tcp, addr) = bind().await;
    let cfg = ua_config_with(user, pw, proxy, addr.to_string(), transport);
    let (cmd, crx) = mpsc::channel(16);
    let (etx, ev) = mpsc::channel(64);
    let tls_client = pin
        .map(|pin| ibephone::agent::sip_tls::client(None, proxy, Some(pin), None, None).unwrap());
    let sockets = driver::Sockets {
        udp,
        tcp: Some(tcp),
        tls: None,
        tls_client,
    };
    tokio::spawn(driver::run_with(
        UserAgent::new(cfg, Box::new(NoFilter)),
        sockets,
        crx,
        etx,
    ));
    Handle { cmd, ev }
}

#[tokio::test]
async fn register_and_call_over_loopback_udp() {
    register_and_call(Transport::Udp).await;
}

#[tokio::test]
async fn register_and_call_over_loopback_tcp() {
    register_and_call(Transport::Tcp).await;
}

/// Over TLS, while a host at 127.0.0.2 opens three times the per-source
/// bound of connections to the TLS port and never says a word: the
/// proxy's loop never waits on them (registration, call, large MESSAGE
/// and BYE go through), and the connections past the bound are closed at
/// once.
#[tokio::test]
async fn register_and_call_over_loopback_tls_while_handshakes_stall() {
    register_and_call(Transport::Tls).await;
}

/// Opens `n` TCP connections from 127.0.0.2 to `to` that never send.
async fn stalled_connections(to: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        out.push(s.connect(to).await.unwrap());
    }
    out
}

/// How many of `conns` the peer closed (EOF or reset within a second).
async fn closed_by_peer(conns: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    for c in conns.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), c.read(&mut b)).await {
            if matches!(r, Ok(0) | Err(_)) {
                n += 1;
            }
        }
    }
    n
}

async fn register_and_call(transport: Transport) {
    let (udp, tcp, udp_addr) = bind().await;
    let users = user_records(&[("alice", "apw"), ("bob", "bpw")]);
    let proxy = Proxy::new(
        ProxyConfig {
            local: udp_addr.to_string(),
            form: HeaderForm::Compact,
            timers: Timers::default(),
            max_transactions: 256,
        },
        Registrar::new(DOMAIN, Box::new(users)),
    );
    let (_pcmd, pcrx) = mpsc::channel(1);
    let (petx, _perx) = mpsc::channel(1);
    let (tls, pin, proxy_addr) = if transport == Transport::Tls {
        let (config, pin) = proxy_tls();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (
            Some(driver::TlsListener { listener, config }),
            Some(pin),
            addr,
        )
    } else {
        (None, None, udp_addr)
    };
    let sockets = driver::Sockets {
        udp,
        tcp: Some(tcp),
        tls,
        tls_client: None,
    };
    tokio::spawn(driver::run_with(proxy, sockets, pcrx, petx));
    let stall = 3 * driver::MAX_HANDSHAKES_PER_SOURCE;
    let mut stalled = if transport == Transport::Tls {
        stalled_connections(proxy_addr, stall).await
    } else {
        Vec::new()
    };

    let mut alice = start_ua("alice", "apw", proxy_addr, transport, pin).await;
    let mut bob = start_ua("bob", "bpw", proxy_addr, transport, pin).await;
    for h in [&mut alice, &mut bob] {
        h.cmd.send(Command::Register).await.unwrap();
        h.expect("Registered", |e| matches!(e, Event::Registered { .. }))
            .await;
    }
    let call = CallId(1);
    alice
        .cmd
        .send(Command::Call {
            call,
            target: format!("sip:bob@{DOMAIN}"),
            body: Body::default(),
        })
        .await
        .unwrap();
    let Event::IncomingCall { call: bcall, .. } = bob
        .expect("IncomingCall", |e| matches!(e, Event::IncomingCall { .. }))
        .await
    else {
        unreachable!()
    };
    alice
        .expect("Ringing", |e| matches!(e, Event::Ringing { .. }))
        .await;
    bob.cmd
        .send(Command::Answer {
            call: bcall,
            body: Body::default(),
        })
        .await
        .unwrap();
    alice
        .expect("Answered", |e| matches!(e, Event::Answered { .. }))
        .await;
    bob.expect("Answered", |e| matches!(e, Event::Answered { .. }))
        .await;

    // A MESSAGE over 1300 bytes goes to the proxy over TCP (RFC 3261
    // 18.1.1) and on to bob over his registered flow; it arrives whole.
    let big = Body {
        content_type: Some("application/octet-stream".into()),
        bytes: vec![b'x'; 3000],
    };
    alice
        .cmd
        .send(Command::InDialog {
            call,
            method: rsip::Method::Message,
            body: big,
        })
        .await
        .unwrap();
    bob.expect(
        "big MESSAGE",
        |e| matches!(e, Event::InDialogRequest { body, .. } if body.bytes.len() == 3000),
    )
    .await;
    alice
        .expect("MESSAGE 200", |e| {
            *e == Event::RequestCompleted {
                method: rsip::Method::Message,
                status: 200,
            }
        })
        .await;

    alice.cmd.send(Command::Hangup { call }).await.unwrap();
    bob.expect("Ended", |e| {
        matches!(
            e,
            Event::Ended {
                reason: EndReason::RemoteHangup,
                ..
            }
        )
    })
    .await;
    alice
        .expect("Ended", |e| {
            matches!(
                e,
                Event::Ended {
                    reason: EndReason::LocalHangup,
                    ..
                }
            )
        })
        .await;
    if transport == Transport::Tls {
        let closed = closed_by_peer(&mut stalled).await;
        assert!(
            closed >= stall - driver::MAX_HANDSHAKES_PER_SOURCE,
            "only {closed} of {stall} stalled connections were closed"
        );
    }
}
