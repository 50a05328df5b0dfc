//! The provider's media relay end to end: a real `pkg-server` with
//! `[turn]`, credentials from `POST /v1/turn-credentials`, and real TURN
//! clients (the webrtc-rs `turn` crate's; coturn's `turnutils_uclient`)
//! on 127.0.0.1. With `IBEPHONE_TEST_COTURN=1` the same credentials are
//! also tried on Debian's coturn `turnserver` (`use-auth-secret`).

use crate::common;

use common::*;
use ibephone::media::ice::Outbound;
use ibephone::pkg_client::TurnCredentials;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

/// A `[turn]` section on loopback; `extra` adds members.
fn turn_section(extra: &str) -> String {
    format!("[turn]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// Relaying between clients on this machine needs loopback allowed.
const LOOPBACK_PEERS: &str = "allowed_peer_ips = [\"127.0.0.1\"]";

fn coturn_enabled() -> bool {
    std::env::var("IBEPHONE_TEST_COTURN").is_ok_and(|v| v == "1")
}

/// A `turn` crate client of `server` with these credentials, on a fresh
/// UDP socket.
async fn client(server: SocketAddr, username: &str, password: &str) -> Client {
    let conn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let c = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

/// Logs `user` in and fetches relay credentials.
async fn creds(server: &Server, user: &str, password: &str) -> TurnCredentials {
    let c = server.client();
    let s = c.login(user, &password.into()).await.unwrap();
    c.turn_credentials(&s).await.unwrap()
}

/// `n` bytes from a relay conn, or None after 5 s.
async fn recv(conn: &impl Conn) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 1500];
    match tokio::time::timeout(Duration::from_secs(5), conn.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// The shared secret the server created.
fn secret(pkg: &Pkg) -> pkg_server::turn::credentials::SharedSecret {
    pkg_server::turn::credentials::SharedSecret::load_or_create(&pkg.path("turn-secret")).unwrap()
}

/// Alice and bob allocate on `relay` with their credentials and exchange
/// a datagram each way through their two relayed addresses.
async fn relay_both_ways(relay: SocketAddr, a: &TurnCredentials, b: &TurnCredentials) {
    let ca = client(relay, &a.username, a.password.expose()).await;
    let cb = client(relay, &b.username, b.password.expose()).await;
    let ra = ca.allocate().await.unwrap();
    let rb = cb.allocate().await.unwrap();
    let (aa, ab) = (ra.local_addr().unwrap(), rb.local_addr().unwrap());
    assert_ne!(aa, ab);
    // Permissions both ways first (a relay drops what it has no
    // permission for), then data.
    rb.send_to(b"hello from bob", aa).await.unwrap();
    ra.send_to(b"hello from alice", ab).await.unwrap();
    let (got, from) = recv(&rb).await.expect("bob hears alice through the relay");
    assert_eq!((got.as_slice(), from), (&b"hello from alice"[..], aa));
    rb.send_to(b"hello again from bob", aa).await.unwrap();
    let mut heard = false;
    for _ in 0..3 {
        match recv(&ra).await {
            Some((got, from)) if got == b"hello again from bob" => {
                assert_eq!(from, ab);
                heard = true;
                break;
            }
            Some(_) => continue, // the first "hello from bob" may arrive
            None => break,
        }
    }
    assert!(heard, "alice hears bob through the relay");
    let _ = ca.close().await;
    let _ = cb.close().await;
}

#[tokio::test]
async fn credentials_from_the_pkg_allocate_and_relay_between_two_users() {
    let pkg = Pkg::new(&None, &turn_section(LOOPBACK_PEERS)).await;
    let server = pkg.start();
    let relay = server.turn.expect("turn= on the start-up line");
    let a = creds(&server, "alice", ALICE_PW).await;
    let b = creds(&server, "bob", BOB_PW).await;
    assert!(a.username.ends_with(":alice"));
    assert!(a
        .uris
        .iter()
        .any(|u| u.port == relay.port() && u.host == "127.0.0.1"));
    relay_both_ways(relay, &a, &b).await;
    // STUN: the binding answer names the client's address.
    let c = client(relay, &a.username, a.password.expose()).await;
    let mapped = c.send_binding_request().await.unwrap();
    assert_eq!(mapped.ip(), std::net::Ipv4Addr::LOCALHOST);
}

#[tokio::test]
async fn allocations_only_for_valid_rest_credentials_of_enabled_users() {
    let pkg = Pkg::new(
        &None,
        &format!(
            "[sip]\nuser_refresh_secs = 1\n{}",
            turn_section(LOOPBACK_PEERS)
        ),
    )
    .await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let a = creds(&server, "alice", ALICE_PW).await;
    let refused = |r: Result<_, turn::Error>| match r {
        Ok(_) => panic!("allocation granted"),
        Err(e) => e.to_string(),
    };
    // A wrong password.
    let c = client(relay, &a.username, "d3JvbmcgcGFzc3dvcmQ=").await;
    refused(c.allocate().await.map(|_| ()));
    // The right HMAC over an expired user name.
    let s = secret(&pkg);
    let past = format!("{}:alice", pkg_server::http::now_unix() - 10);
    let c = client(relay, &past, &s.password(&past)).await;
    refused(c.allocate().await.map(|_| ()));
    // The right HMAC for a name that is no account, and without expiry.
    let future = pkg_server::http::now_unix() + 600;
    for name in [format!("{future}:mallory"), "alice".to_string()] {
        let c = client(relay, &name, &s.password(&name)).await;
        refused(c.allocate().await.map(|_| ()));
    }
    // Anonymous (no credentials at all).
    let c = client(relay, "", "").await;
    refused(c.allocate().await.map(|_| ()));
    // Valid credentials work until the account is disabled.
    let c = client(relay, &a.username, a.password.expose()).await;
    c.allocate().await.unwrap();
    pkg.admin_ok(&["user", "disable", "alice"], "");
    let mut still = true;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = client(relay, &a.username, a.password.expose()).await;
        if c.allocate().await.is_err() {
            still = false;
            break;
        }
    }
    assert!(!still, "a disabled account's credentials stop working");
}

#[tokio::test]
async fn relay_refuses_loopback_and_private_peers() {
    // Default filter, with one loopback address allowed as the control.
    let pkg = Pkg::new(&None, &turn_section("allowed_peer_ips = [\"127.0.0.2\"]")).await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let a = creds(&server, "alice", ALICE_PW).await;
    let c = client(relay, &a.username, a.password.expose()).await;
    let r = c.allocate().await.unwrap();
    // A service of the provider on its loopback, and the control.
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let control = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let v = victim.local_addr().unwrap();
    for target in [
        v,
        SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), v.port()),
        "10.0.0.1:5060".parse().unwrap(),
        "192.168.1.10:5060".parse().unwrap(),
        "169.254.169.254:80".parse().unwrap(),
        "0.0.0.0:5060".parse().unwrap(),
    ] {
        let e = r.send_to(b"attack", target).await;
        let e = e.expect_err("the relay refuses the permission");
        assert!(e.to_string().contains("403"), "{target}: {e}");
    }
    r.send_to(b"control", control.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), control.recv_from(&mut buf))
        .await
        .expect("the allowed peer hears the relay")
        .unwrap();
    assert_eq!(&buf[..n], b"control");
    assert_eq!(from, r.local_addr().unwrap());
    // Nothing reached the provider's loopback service.
    assert!(victim.try_recv_from(&mut buf).is_err());
}

#[tokio::test]
async fn allocation_quota_per_user() {
    let pkg = Pkg::new(
        &None,
        &turn_section(&format!("{LOOPBACK_PEERS}\nmax_allocations_per_user = 2")),
    )
    .await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let a = creds(&server, "alice", ALICE_PW).await;
    let b = creds(&server, "bob", BOB_PW).await;
    let a1 = client(relay, &a.username, a.password.expose()).await;
    let r1 = a1.allocate().await.unwrap();
    let a2 = client(relay, &a.username, a.password.expose()).await;
    let _r2 = a2.allocate().await.unwrap();
    let a3 = client(relay, &a.username, a.password.expose()).await;
    let e = a3.allocate().await.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("486"), "{e}");
    // Another user is not affected.
    let b1 = client(relay, &b.username, b.password.expose()).await;
    b1.allocate().await.unwrap();
    // Freeing one (Refresh with lifetime 0) makes room again.
    r1.close().await.unwrap();
    let a4 = client(relay, &a.username, a.password.expose()).await;
    a4.allocate().await.unwrap();
}

#[tokio::test]
async fn bandwidth_quota_per_user_drops_the_excess() {
    // 80 kbit/s = 10 000 bytes per second and direction, one second of
    // burst: of 100 packets of 1000 bytes sent at once, about ten pass.
    let pkg = Pkg::new(
        &None,
        &turn_section(&format!("{LOOPBACK_PEERS}\nuser_kbps = 80")),
    )
    .await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let a = creds(&server, "alice", ALICE_PW).await;
    let ca = client(relay, &a.username, a.password.expose()).await;
    let ra = ca.allocate().await.unwrap();
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = peer.local_addr().unwrap();
    let packet = vec![7u8; 1000];
    for _ in 0..100 {
        ra.send_to(&packet, p).await.unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 1500];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
    {
        got += 1;
    }
    assert!(got >= 5, "the budget lets some through ({got})");
    assert!(got <= 40, "the excess is dropped ({got} of 100 passed)");
}

/// Runs coturn's `turnutils_uclient` against `relay` with `flags`:
/// two clients relaying to each other (`-y`), 10 messages each.
fn uclient(relay: SocketAddr, t: &TurnCredentials, flags: &[&str]) -> String {
    let port = relay.port().to_string();
    let out = std::process::Command::new("turnutils_uclient")
        .args(flags)
        .args(["-y", "-c", "-m", "2", "-n", "10", "-l", "172", "-p", &port])
        .args(["-u", &t.username, "-w", t.password.expose()])
        .arg(relay.ip().to_string())
        .output()
        .expect("turnutils_uclient (apt install coturn)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The loss figure of a uclient run (`Total lost packets N (P%)`).
fn uclient_lost(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("Total lost packets"))?;
    let n = line
        .split("Total lost packets")
        .nth(1)?
        .split_whitespace()
        .next()?;
    n.parse().ok()
}

/// Messages received by all uclient clients (the last `tot_recv_msgs=`).
fn uclient_received(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("tot_recv_msgs="))?;
    line.split("tot_recv_msgs=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn coturn_uclient_relays_through_the_embedded_relay_over_udp_tcp_and_tls() {
    if !coturn_enabled() {
        eprintln!("skipped: IBEPHONE_TEST_COTURN=1 runs coturn's turnutils_uclient");
        return;
    }
    let pkg = Pkg::new(
        &None,
        &turn_section(&format!("{LOOPBACK_PEERS}\ntls_listen = \"127.0.0.1:0\"")),
    )
    .await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let tls = server.turns.expect("turns= on the start-up line");
    let a = creds(&server, "alice", ALICE_PW).await;
    assert!(
        a.uris
            .iter()
            .any(|u| u.port == tls.port()
                && u.scheme == ibephone::pkg_client::turn::TurnScheme::Turns)
    );
    for (addr, flags) in [
        (relay, &[][..]),
        (relay, &["-t"][..]),
        (tls, &["-t", "-S"][..]),
    ] {
        let log = tokio::task::spawn_blocking({
            let a = a.clone();
            let flags: Vec<&'static str> = flags.to_vec();
            move || uclient(addr, &a, &flags)
        })
        .await
        .unwrap();
        assert_eq!(uclient_lost(&log), Some(0), "{flags:?}:\n{log}");
        assert!(
            uclient_received(&log).is_some_and(|n| n >= 20),
            "{flags:?}:\n{log}"
        );
    }
    // Wrong credentials: nothing relayed.
    let mut bad = a.clone();
    bad.password = "d3Jvbmc=".into();
    let log = tokio::task::spawn_blocking(move || uclient(relay, &bad, &[]))
        .await
        .unwrap();
    assert!(uclient_received(&log).unwrap_or(0) == 0, "{log}");
}

/// Debian's coturn with `use-auth-secret` and the PKG's secret, on a free
/// loopback port; killed on drop.
struct Coturn(std::process::Child, SocketAddr);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coturn(secret: &str, realm: &str) -> Coturn {
    coturn_with(secret, realm, &["--no-tls".to_string()])
}

/// [`coturn`] with more `turnserver` arguments (`tls` in place of
/// `--no-tls`).
fn coturn_with(secret: &str, realm: &str, tls: &[String]) -> Coturn {
    let port = free_port();
    let child = std::process::Command::new("turnserver")
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
        ])
        .arg(format!("--realm={realm}"))
        .args(["--allow-loopback-peers", "--no-cli", "--no-dtls"])
        .args(tls)
        .args([
            "--min-port=40000",
            "--max-port=49999",
            "--log-file=stdout",
            "--no-stdout-log",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver (apt install coturn)");
    Coturn(child, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn coturn_accepts_the_pkgs_credentials() {
    if !coturn_enabled() {
        eprintln!("skipped: IBEPHONE_TEST_COTURN=1 runs Debian's coturn turnserver");
        return;
    }
    // The provider runs coturn instead of the embedded relay.
    let pkg = Pkg::new(
        &None,
        "[turn]\nembedded = false\nuris = [\"turn:127.0.0.1:3478?transport=udp\"]\n",
    )
    .await;
    let server = pkg.start();
    assert!(server.turn.is_none());
    let cot = coturn(secret(&pkg).expose(), DOMAIN);
    let a = creds(&server, "alice", ALICE_PW).await;
    let b = creds(&server, "bob", BOB_PW).await;
    // Wait until coturn answers STUN.
    let probe = client(cot.1, &a.username, a.password.expose()).await;
    let mut up = false;
    for _ in 0..50 {
        if probe.send_binding_request().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "coturn did not start");
    relay_both_ways(cot.1, &a, &b).await;
    // A password made with another secret is refused by coturn too.
    let other = client(
        cot.1,
        &a.username,
        &pkg_server::turn::credentials::SharedSecret::new("other".into()).password(&a.username),
    )
    .await;
    assert!(other.allocate().await.is_err());
}

/// Runs `a` and `b` until both nominate a relay-to-relay pair, then sends
/// RTP-sized media both ways five times; `a`'s must leave on `a_to` and
/// `b`'s on `b_to`, and each must hear the other through the relays.
fn relayed_media_both_ways(
    a: &mut RelayedPhone,
    b: &mut RelayedPhone,
    a_to: Outbound,
    b_to: Outbound,
) {
    let t0 = std::time::Instant::now();
    while a.path.is_none() || b.path.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no pair nominated");
        a.run(20);
        b.run(20);
    }
    for p in [a.path.unwrap(), b.path.unwrap()] {
        assert_eq!((p.local, p.remote), ("relay", "relay"), "{p:?}");
    }
    // RTP's first byte, a tag saying who sent it.
    let rtp = |tag: u8| {
        let mut v = vec![0x80u8; 172];
        v[12] = tag;
        v
    };
    for _ in 0..5 {
        for (p, tag, want) in [(&mut *a, 1u8, a_to), (&mut *b, 2u8, b_to)] {
            let now = std::time::Instant::now();
            let (to, bytes) = p.ice.as_mut().unwrap().route_media(now, rtp(tag)).unwrap();
            assert_eq!(to, want, "media of phone {tag} goes to its relay");
            p.send(to, &bytes);
        }
        a.run(40);
        b.run(40);
    }
    assert!(a.media.iter().any(|(_, d)| *d == rtp(2)), "alice hears bob");
    assert!(b.media.iter().any(|(_, d)| *d == rtp(1)), "bob hears alice");
}

/// One phone's media socket for [`the_phones_ice_relays_through_the_embedded_relay`]:
/// a loopback socket behind a "NAT" that passes only what comes from or
/// goes to the relay (so only relayed pairs can work).
struct RelayedPhone {
    sock: std::net::UdpSocket,
    relay: SocketAddr,
    /// The connection to the relay when it is reached over TCP or TLS
    /// (non-blocking).
    stream: Option<(
        std::net::TcpStream,
        ibephone::media::turn_stream::StreamLink,
    )>,
    ice: Option<ibephone::media::ice::IceSession>,
    media: Vec<(SocketAddr, Vec<u8>)>,
    path: Option<ibephone::media::ice::IcePath>,
    started: bool,
}

impl RelayedPhone {
    fn new(
        sock: std::net::UdpSocket,
        relay: SocketAddr,
        stream: Option<(
            std::net::TcpStream,
            ibephone::media::turn_stream::StreamLink,
        )>,
        ice: ibephone::media::ice::IceSession,
    ) -> Self {
        RelayedPhone {
            sock,
            relay,
            stream,
            ice: Some(ice),
            media: Vec::new(),
            path: None,
            started: false,
        }
    }

    fn send(&mut self, to: Outbound, bytes: &[u8]) {
        match (to, self.stream.as_mut()) {
            (Outbound::Udp(to), _) if to == self.relay => {
                self.sock.send_to(bytes, to).unwrap();
            }
            (Outbound::RelayStream, Some((tcp, link))) => {
                assert!(link.send(bytes));
                write_all_pending(tcp, link);
            }
            _ => {}
        }
    }

    /// Messages the relay sent on the stream (none without one).
    fn stream_messages(&mut self) -> Vec<Vec<u8>> {
        let Some((tcp, link)) = self.stream.as_mut() else {
            return Vec::new();
        };
        read_available(tcp, link);
        write_all_pending(tcp, link);
        std::iter::from_fn(|| link.poll_message()).collect()
    }

    /// Runs the phone's ICE for `ms` milliseconds of real time.
    fn run(&mut self, ms: u64) {
        use ibephone::media::ice::{IceEvent, IceInput};
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        let mut buf = [0u8; 1500];
        while std::time::Instant::now() < end {
            let Some(ice) = self.ice.as_mut() else { return };
            let now = std::time::Instant::now();
            // The agent's timers start with the first handle_timeout.
            if ice.poll_timeout().is_none_or(|t| t <= now) || !self.started {
                self.started = true;
                ice.handle_timeout(now);
            }
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                if from == self.relay {
                    if let IceInput::Relayed { peer, data } = ice.handle_input(now, from, &buf[..n])
                    {
                        self.media.push((peer, data));
                    }
                }
            }
            let messages = self.stream_messages();
            let Some(ice) = self.ice.as_mut() else { return };
            for m in messages {
                if let IceInput::Relayed { peer, data } = ice.handle_relay_message(now, &m) {
                    self.media.push((peer, data));
                }
            }
            let mut out = Vec::new();
            while let Some(t) = ice.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = ice.poll_event() {
                if let IceEvent::Nominated(p) = e {
                    self.path = Some(p);
                }
            }
            for (to, bytes) in out {
                self.send(to, &bytes);
            }
        }
    }
}

/// The phone's own TURN client and ICE (`ibephone::media`) against the
/// embedded relay, in one process over loopback: each phone allocates
/// with its PKG-issued credentials (401 challenge, then the allocation),
/// offers its relayed candidate, and with everything but the relay's
/// traffic dropped ICE nominates relay-to-relay pairs; media then crosses
/// both relays, and the phones deallocate at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phones_ice_relays_through_the_embedded_relay() {
    use ibephone::media::ice::LocalIce;
    use ibephone::media::turn_client::{TurnClient, TurnEvent, TurnServer};
    let pkg = Pkg::new(&None, &turn_section(LOOPBACK_PEERS)).await;
    let server = pkg.start();
    let relay = server.turn.expect("turn= on the start-up line");
    let creds = [
        creds(&server, "alice", ALICE_PW).await,
        creds(&server, "bob", BOB_PW).await,
    ];
    tokio::task::spawn_blocking(move || {
        let mut locals = Vec::new();
        let mut socks = Vec::new();
        for c in &creds {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let t0 = std::time::Instant::now();
            let ts = TurnServer::new(relay, c.username.clone(), c.password.expose().to_string());
            let mut turn = TurnClient::new(ts, t0);
            let mut buf = [0u8; 1500];
            while turn.relayed().is_none() {
                assert!(t0.elapsed() < Duration::from_secs(5), "no allocation");
                while let Some(b) = turn.poll_transmit() {
                    sock.send_to(&b, relay).unwrap();
                }
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    assert_eq!(from, relay);
                    turn.handle_datagram(std::time::Instant::now(), &buf[..n]);
                }
                if let Some(TurnEvent::Failed(e)) = turn.poll_event() {
                    panic!("allocation failed: {e}");
                }
                turn.handle_timeout(std::time::Instant::now());
            }
            let relayed = turn.relayed().unwrap();
            assert_eq!(relayed.ip(), relay.ip());
            assert_ne!(relayed, relay);
            let mut local = LocalIce::new(sock.local_addr().unwrap()).unwrap();
            local.add_relayed(turn).unwrap();
            assert!(
                local
                    .params()
                    .candidates
                    .iter()
                    .any(|c| c.contains("typ relay")),
                "{:?}",
                local.params()
            );
            locals.push(local);
            socks.push(sock);
        }
        let (lb, la) = (locals.pop().unwrap(), locals.pop().unwrap());
        let (pa, pb) = (la.params(), lb.params());
        let (sb, sa) = (socks.pop().unwrap(), socks.pop().unwrap());
        let mut a = RelayedPhone::new(sa, relay, None, la.start(&pb, true));
        let mut b = RelayedPhone::new(sb, relay, None, lb.start(&pa, false));
        // Media goes to the TURN server both ways.
        relayed_media_both_ways(&mut a, &mut b, Outbound::Udp(relay), Outbound::Udp(relay));
        // Deallocation: a Refresh with lifetime 0 to the relay.
        for p in [&mut a, &mut b] {
            let ice = p.ice.as_mut().unwrap();
            ice.close(std::time::Instant::now());
            let (to, bytes) = ice.poll_transmit().expect("the deallocation");
            assert_eq!(to, Outbound::Udp(relay));
            p.send(to, &bytes);
        }
    })
    .await
    .unwrap();
}

/// The agent's RTP ports (`ibephone::agent::media_io::UdpPorts`) with the
/// relay the PKG names: a call's candidates include a relayed one,
/// allocated on the call's own socket, and a call that never starts gives
/// its port and allocation back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_ports_offer_a_relayed_candidate() {
    use ibephone::agent::media::MediaPorts;
    use ibephone::agent::media_io::{turn_server, IceOptions, UdpPorts};
    let pkg = Pkg::new(&None, &turn_section(LOOPBACK_PEERS)).await;
    let server = pkg.start();
    let relay = server.turn.expect("turn= on the start-up line");
    let a = creds(&server, "alice", ALICE_PW).await;
    let servers = turn_server(&a, Some(server.fingerprint), None).await;
    assert_eq!(servers[0].addr, relay, "UDP first");
    let ice = IceOptions {
        stun: None,
        turn: servers,
    };
    tokio::task::spawn_blocking(move || {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = UdpPorts::new(ip, ip, None).with_ice(Some(ice));
        let named = ports.allocate(1).unwrap();
        assert_eq!(named.ip(), ip, "the default candidate is the host");
        let params = ports.ice(1).unwrap();
        let relayed: Vec<&String> = params
            .candidates
            .iter()
            .filter(|c| c.contains("typ relay"))
            .collect();
        assert_eq!(relayed.len(), 1, "{params:?}");
        assert!(relayed[0].contains(&relay.ip().to_string()), "{params:?}");
        ports.release(1);
        assert!(ports.ice(1).is_none());
    })
    .await
    .unwrap();
}

/// Writes everything `link` has for the connection (non-blocking: waits
/// for room).
fn write_all_pending(
    tcp: &mut std::net::TcpStream,
    link: &mut ibephone::media::turn_stream::StreamLink,
) {
    use std::io::Write;
    let t0 = std::time::Instant::now();
    while !link.pending().is_empty() {
        match tcp.write(link.pending()) {
            Ok(n) => link.written(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(t0.elapsed() < Duration::from_secs(5), "relay not reading");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("writing to the relay: {e}"),
        }
    }
}

/// Reads what the (non-blocking) connection has now into `link`.
fn read_available(
    tcp: &mut std::net::TcpStream,
    link: &mut ibephone::media::turn_stream::StreamLink,
) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => {
                link.receive(&[]);
                return;
            }
            Ok(n) => link.receive(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            // A reset ends the link as a close does.
            Err(_) => {
                link.receive(&[]);
                return;
            }
        }
    }
}

/// A `[turn]` section on loopback with TURN over TLS on a free port too.
fn turn_section_with_tls() -> String {
    turn_section(&format!("{LOOPBACK_PEERS}\ntls_listen = \"127.0.0.1:0\""))
}

/// TURN over TLS (`turns:`, RFC 8656 3.1) from the phone's own client to
/// the embedded relay, for a phone whose UDP to the relay is unusable:
/// alice is offered only the relay's `turns:` URI and reaches it through
/// TLS pinned to the PKG's certificate; bob uses UDP. Her relayed
/// candidate is still a UDP `typ relay` one, ICE nominates
/// relay-to-relay pairs (checks as ChannelData/Send inside TLS), media
/// crosses both ways, and her deallocation leaves on the TLS connection.
/// Nothing of alice's reaches the relay's UDP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phones_ice_relays_over_tls_when_udp_is_unusable() {
    use ibephone::agent::media_io::turn_server;
    use ibephone::media::ice::LocalIce;
    use ibephone::media::turn_client::{ServerTransport, TurnClient, TurnEvent};
    use ibephone::media::turn_stream::StreamLink;
    let pkg = Pkg::new(&None, &turn_section_with_tls()).await;
    let server = pkg.start();
    let relay = server.turn.expect("turn= on the start-up line");
    let turns = server.turns.expect("turns= on the start-up line");
    let pin = Some(server.fingerprint);
    let a = creds(&server, "alice", ALICE_PW).await;
    let b = creds(&server, "bob", BOB_PW).await;
    let mut alice_servers = turn_server(&a, pin, None).await;
    let names: Vec<&str> = alice_servers.iter().map(|s| s.transport.name()).collect();
    assert_eq!(names, ["udp", "tcp", "tls"], "tried in this order");
    // Only the turns: relay for alice.
    alice_servers.retain(|s| s.transport.is_stream() && s.addr == turns);
    let alice_server = alice_servers.pop().expect("the turns: relay");
    assert!(matches!(alice_server.transport, ServerTransport::Tls(_)));
    let bob_server = turn_server(&b, pin, None).await.remove(0);
    tokio::task::spawn_blocking(move || {
        let mut phones = Vec::new();
        let mut locals = Vec::new();
        for ts in [alice_server, bob_server] {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let mut stream = match &ts.transport {
                ServerTransport::Tls(tls) => {
                    let tcp = std::net::TcpStream::connect(ts.addr).unwrap();
                    tcp.set_nonblocking(true).unwrap();
                    Some((tcp, StreamLink::tls(tls).unwrap()))
                }
                _ => None,
            };
            let t0 = std::time::Instant::now();
            let mut turn = TurnClient::new(ts.clone(), t0);
            let mut buf = [0u8; 1500];
            while turn.relayed().is_none() {
                assert!(t0.elapsed() < Duration::from_secs(5), "no allocation");
                while let Some(m) = turn.poll_transmit() {
                    match stream.as_mut() {
                        Some((tcp, link)) => {
                            assert!(link.send(&m));
                            write_all_pending(tcp, link);
                        }
                        None => {
                            sock.send_to(&m, ts.addr).unwrap();
                        }
                    }
                }
                match stream.as_mut() {
                    Some((tcp, link)) => {
                        std::thread::sleep(Duration::from_millis(2));
                        read_available(tcp, link);
                        write_all_pending(tcp, link);
                        assert!(link.failed().is_none(), "{:?}", link.failed());
                        while let Some(m) = link.poll_message() {
                            turn.handle_datagram(std::time::Instant::now(), &m);
                        }
                    }
                    None => {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            assert_eq!(from, ts.addr);
                            turn.handle_datagram(std::time::Instant::now(), &buf[..n]);
                        }
                    }
                }
                if let Some(TurnEvent::Failed(e)) = turn.poll_event() {
                    panic!("allocation failed: {e}");
                }
                turn.handle_timeout(std::time::Instant::now());
            }
            assert_eq!(turn.relayed().unwrap().ip(), relay.ip());
            let mut local = LocalIce::new(sock.local_addr().unwrap()).unwrap();
            local.add_relayed(turn).unwrap();
            let relay_lines: Vec<String> = local
                .params()
                .candidates
                .into_iter()
                .filter(|c| c.contains("typ relay"))
                .collect();
            assert_eq!(relay_lines.len(), 1);
            assert!(
                relay_lines[0].contains(" udp ") || relay_lines[0].contains(" UDP "),
                "a UDP relayed candidate: {relay_lines:?}"
            );
            locals.push(local);
            phones.push((sock, stream));
        }
        let (lb, la) = (locals.pop().unwrap(), locals.pop().unwrap());
        let (pa, pb) = (la.params(), lb.params());
        let (pbob, palice) = (phones.pop().unwrap(), phones.pop().unwrap());
        let mut a = RelayedPhone::new(palice.0, relay, palice.1, la.start(&pb, true));
        let mut b = RelayedPhone::new(pbob.0, relay, pbob.1, lb.start(&pa, false));
        // alice's media goes on the TLS connection, bob's over UDP.
        relayed_media_both_ways(&mut a, &mut b, Outbound::RelayStream, Outbound::Udp(relay));
        let ice = a.ice.as_mut().unwrap();
        ice.close(std::time::Instant::now());
        let (to, bytes) = ice.poll_transmit().expect("the deallocation");
        assert_eq!(to, Outbound::RelayStream);
        a.send(to, &bytes);
    })
    .await
    .unwrap();
}

/// The agent's RTP ports with a relay whose UDP is dropped and whose TCP
/// port takes connections but never answers (what a network that lets
/// only TLS through looks like): the call's relayed candidate still
/// comes, over TLS, within the gathering's bound; UDP was tried first and
/// TCP next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_ports_fall_back_to_tls_when_udp_and_tcp_are_silent() {
    use ibephone::agent::media::MediaPorts;
    use ibephone::agent::media_io::{turn_server, IceOptions, UdpPorts};
    let pkg = Pkg::new(&None, &turn_section_with_tls()).await;
    let server = pkg.start();
    let relay = server.turn.unwrap();
    let a = creds(&server, "alice", ALICE_PW).await;
    let mut servers = turn_server(&a, Some(server.fingerprint), None).await;
    // UDP to a socket that drops everything, TCP to a listener that never
    // reads: only TLS is left.
    let udp_sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp_sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    servers[0].addr = udp_sink.local_addr().unwrap();
    servers[1].addr = tcp_sink.local_addr().unwrap();
    let ice = IceOptions {
        stun: None,
        turn: servers,
    };
    tokio::task::spawn_blocking(move || {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = UdpPorts::new(ip, ip, None).with_ice(Some(ice));
        let t0 = std::time::Instant::now();
        ports.allocate(1).unwrap();
        let took = t0.elapsed();
        let params = ports.ice(1).unwrap();
        let relayed: Vec<&String> = params
            .candidates
            .iter()
            .filter(|c| c.contains("typ relay"))
            .collect();
        assert_eq!(relayed.len(), 1, "{params:?} after {took:?}");
        assert!(relayed[0].contains(&relay.ip().to_string()), "{params:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // UDP was asked first, TCP was connected to.
        udp_sink
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 1500];
        assert!(udp_sink.recv_from(&mut buf).is_ok(), "an Allocate over UDP");
        tcp_sink.set_nonblocking(true).unwrap();
        assert!(tcp_sink.accept().is_ok(), "a TCP connection was opened");
        ports.release(1);
    })
    .await
    .unwrap();
}

/// `turns:` to Debian's coturn (4.6, OpenSSL 3.0), the relay a provider
/// runs at scale, serving a certificate the phone pins: that coturn
/// speaks TLS 1.0 to 1.2 only. The phone's TURN client accepts TLS 1.2
/// (ECDHE and AEAD suites only: the payload is SRTP and the requests carry
/// STUN integrity, TLS only gets through firewalls), so the handshake ends
/// and the allocation succeeds over it; the SIP client's configuration,
/// TLS 1.3 only, is still refused by the same coturn (no downgrade for
/// SIP or the PKG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_turns_over_tls12_allocates_but_sip_tls_stays_13() {
    use ibephone::media::turn_client::{ServerTransport, TurnClient, TurnEvent, TurnServer};
    use ibephone::media::turn_stream::StreamLink;
    if !coturn_enabled() {
        eprintln!("skipped: IBEPHONE_TEST_COTURN=1 runs Debian's coturn turnserver");
        return;
    }
    let pkg = Pkg::new(
        &None,
        "[turn]\nembedded = false\nuris = [\"turns:127.0.0.1:5349?transport=tcp\"]\n",
    )
    .await;
    let server = pkg.start();
    let a = creds(&server, "alice", ALICE_PW).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (certf, keyf) = (pkg.path("coturn.crt"), pkg.path("coturn.key"));
    std::fs::write(&certf, cert.cert.pem()).unwrap();
    std::fs::write(&keyf, cert.key_pair.serialize_pem()).unwrap();
    let tls_port = free_port();
    let _cot = coturn_with(
        secret(&pkg).expose(),
        DOMAIN,
        &[
            format!("--tls-listening-port={tls_port}"),
            format!("--cert={}", certf.display()),
            format!("--pkey={}", keyf.display()),
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let pin = ibephone::pkg_client::tls::cert_fingerprint(cert.cert.der());
    let turn_tls =
        ibephone::agent::sip_tls::turn_client(None, addr, Some(pin), None, None).unwrap();
    let sip_tls = ibephone::agent::sip_tls::client(None, addr, Some(pin), None, None).unwrap();
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        let connect = || loop {
            match std::net::TcpStream::connect(addr) {
                Ok(t) => {
                    t.set_nonblocking(true).unwrap();
                    break t;
                }
                Err(_) if t0.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("coturn's TLS port: {e}"),
            }
        };
        // TURN: TLS 1.2, allocated.
        let mut tcp = connect();
        let mut link = StreamLink::tls(&turn_tls).unwrap();
        let ts = TurnServer::new(addr, a.username.clone(), a.password.expose().to_string())
            .over(ServerTransport::Tls(turn_tls));
        let mut turn = TurnClient::new(ts, std::time::Instant::now());
        while turn.relayed().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no allocation over coturn's TLS"
            );
            while let Some(m) = turn.poll_transmit() {
                assert!(link.send(&m));
            }
            write_all_pending(&mut tcp, &mut link);
            std::thread::sleep(Duration::from_millis(5));
            read_available(&mut tcp, &mut link);
            assert!(link.failed().is_none(), "{:?}", link.failed());
            while let Some(m) = link.poll_message() {
                turn.handle_datagram(std::time::Instant::now(), &m);
            }
            if let Some(TurnEvent::Failed(e)) = turn.poll_event() {
                panic!("allocation failed: {e}");
            }
            turn.handle_timeout(std::time::Instant::now());
        }
        println!("coturn over TLS: relayed {:?}", turn.relayed());
        // SIP's configuration: refused, nothing allocated.
        let mut tcp = connect();
        let mut link = StreamLink::tls(&sip_tls).unwrap();
        let ts = TurnServer::new(addr, a.username.clone(), a.password.expose().to_string())
            .over(ServerTransport::Tls(sip_tls));
        let mut turn = TurnClient::new(ts, std::time::Instant::now());
        while let Some(m) = turn.poll_transmit() {
            assert!(link.send(&m), "queued until the handshake ends");
        }
        while link.failed().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the handshake neither failed nor ended"
            );
            assert!(link.is_handshaking(), "a TLS 1.3 session with this coturn");
            write_all_pending(&mut tcp, &mut link);
            std::thread::sleep(Duration::from_millis(10));
            read_available(&mut tcp, &mut link);
        }
        println!("coturn over TLS 1.3 only: {:?}", link.failed());
        assert!(link.poll_message().is_none());
        assert!(turn.relayed().is_none());
    })
    .await
    .unwrap();
}

/// With `[turn]` and no `[services]`, `GET /v1/params` announces the
/// embedded relay: `services.stun` names its UDP port (so a phone with no
/// STUN server configured finds one) and `services.turn` the URIs the
/// credentials name. A `[services]` value wins, and `announce = false`
/// leaves the members as configured.
#[tokio::test]
async fn params_announce_the_embedded_relay_unless_configured() {
    let pkg = Pkg::new(&None, &turn_section("")).await;
    let server = pkg.start();
    let relay = server.turn.expect("turn= on the start-up line");
    let (_, services) = server.client().params_and_services().await.unwrap();
    assert_eq!(services.stun, [format!("stun:{relay}")]);
    let a = creds(&server, "alice", ALICE_PW).await;
    assert_eq!(services.turn.len(), a.uris.len(), "{services:?}");
    assert!(
        services.turn[0].starts_with(&format!("turn:{relay}")),
        "{services:?}"
    );
    server.stop();

    let explicit = format!(
        "[services]\nstun = [\"stun:stun.atlanta.invalid:3478\"]\n{}",
        turn_section("")
    );
    let pkg = Pkg::new(&None, &explicit).await;
    let server = pkg.start();
    let (_, services) = server.client().params_and_services().await.unwrap();
    assert_eq!(services.stun, ["stun:stun.atlanta.invalid:3478"]);
    assert!(!services.turn.is_empty(), "{services:?}");
    server.stop();

    let pkg = Pkg::new(&None, &turn_section("announce = false")).await;
    let server = pkg.start();
    let (_, services) = server.client().params_and_services().await.unwrap();
    assert!(services.is_empty(), "{services:?}");
    server.stop();
}
