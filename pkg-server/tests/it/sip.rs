//! The embedded SIP registrar/proxy of a real `pkg-server` process
//! (`--sip 127.0.0.1:0`), driven with raw SIP over loopback UDP: digest
//! authentication against the PKG's user database, 404/480, forwarding to
//! a registered contact, throttled probes, and users disabled with
//! `pkg-admin` dropping out after the reload interval.

use crate::common;

use common::*;
use ibephone::sip::digest::{Challenge, Password};
use ibephone::sip::message::{HeaderForm, Message};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

struct Phone {
    sock: UdpSocket,
    local: SocketAddr,
    proxy: SocketAddr,
    n: u32,
}

impl Phone {
    async fn new(proxy: SocketAddr) -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        Phone {
            sock,
            local,
            proxy,
            n: 0,
        }
    }

    fn request(&mut self, method: &str, uri: &str, from_user: &str, to: &str) -> Message {
        self.n += 1;
        let m = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKt{}x{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from_user}@{DOMAIN}>;tag=f{}\r\nTo: <{to}>\r\n\
             Call-ID: c{}-{}@127.0.0.1\r\nCSeq: {} {method}\r\nContact: <sip:{}>\r\n\
             Content-Length: 0\r\n\r\n",
            self.local,
            self.local.port(),
            self.n,
            self.local.port(),
            self.local.port(),
            self.n,
            self.n,
            self.local
        );
        Message::parse(m.as_bytes()).unwrap()
    }

    async fn send(&self, m: &Message) {
        self.sock
            .send_to(&m.to_bytes(HeaderForm::Full), self.proxy)
            .await
            .unwrap();
    }

    /// The next message, skipping 100 Trying; None after `wait`.
    async fn recv(&self, wait: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf))
                .await
                .ok()?
                .unwrap();
            let m = Message::parse(&buf[..n]).unwrap();
            if m.status() != Some(100) {
                return Some(m);
            }
        }
    }

    /// Sends `m` and waits for its final response (retransmitted finals
    /// of earlier unacknowledged INVITEs are skipped).
    async fn ask(&self, m: &Message) -> Option<u16> {
        self.send(m).await;
        loop {
            let r = self.recv(Duration::from_secs(2)).await?;
            if r.call_id() == m.call_id() {
                return r.status();
            }
        }
    }

    /// REGISTER for `user` answering the challenge with `password` (the
    /// answer on the challenged request's Call-ID, as RFC 3261 10.2 asks).
    async fn register(&mut self, user: &str, password: &str) -> u16 {
        let aor = format!("sip:{user}@{DOMAIN}");
        let req = self.request("REGISTER", &format!("sip:{DOMAIN}"), user, &aor);
        self.send(&req).await;
        let ch = self.recv(Duration::from_secs(2)).await.unwrap();
        assert_eq!(ch.status(), Some(401));
        assert_eq!(ch.header_values("WWW-Authenticate").count(), 2);
        let c = Challenge::best(ch.header_values("WWW-Authenticate")).unwrap();
        let mut req = self.request("REGISTER", &format!("sip:{DOMAIN}"), user, &aor);
        req.set_header("Call-ID", req_call_id(&ch));
        req.push_header(
            "Authorization",
            c.answer(
                user,
                &Password::new(password),
                "REGISTER",
                &format!("sip:{DOMAIN}"),
                1,
                "cn0",
            ),
        );
        self.ask(&req).await.unwrap()
    }
}

/// Registers until the answer is `want` (the registrar reloads its users
/// every `user_refresh_secs`), at most 8 tries half a second apart; the
/// last answer.
async fn register_until(phone: &mut Phone, user: &str, pw: &str, want: u16) -> u16 {
    let mut got = 0;
    for _ in 0..8 {
        got = phone.register(user, pw).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    got
}

fn req_call_id(m: &Message) -> String {
    m.call_id().unwrap().to_string()
}

/// A device SIP credential of `user` from the PKG (`POST /v1/sip-credentials`).
async fn device_password(server: &Server, user: &str, pw: &str, device: &str) -> String {
    let client = server.client();
    let session = client.login(user, &pw.into()).await.unwrap();
    let c = client.sip_credentials(&session, device).await.unwrap();
    assert_eq!(c.username, user);
    c.password.expose().to_string()
}

#[tokio::test]
async fn embedded_registrar_authenticates_against_the_pkg_users() {
    let pkg = Pkg::new(&None, "[sip]\nuser_refresh_secs = 1\n").await;
    let server = Server::start_with(&pkg.config, &["--sip", "127.0.0.1:0"]);
    let proxy = server.sip.expect("sip= in the startup line");
    assert!(proxy.ip().is_loopback());

    let mut alice = Phone::new(proxy).await;
    let mut mallory = Phone::new(proxy).await;
    // The PKG password never authenticates SIP: 403 as any wrong password.
    assert_eq!(alice.register("alice", ALICE_PW).await, 403);
    // A device credential does (after the registrar's reload).
    let laptop = device_password(&server, "alice", ALICE_PW, "laptop").await;
    assert_eq!(register_until(&mut alice, "alice", &laptop, 200).await, 200);
    assert_eq!(mallory.register("bob", "not bob's password").await, 403);
    assert_eq!(mallory.register("nobody", "whatever pw").await, 403);

    // bob exists but is not registered: 480; an unknown user: 404.
    let invite = mallory.request(
        "INVITE",
        &format!("sip:bob@{DOMAIN}"),
        "m",
        &format!("sip:bob@{DOMAIN}"),
    );
    assert_eq!(mallory.ask(&invite).await, Some(480));
    let invite = mallory.request(
        "INVITE",
        &format!("sip:zed@{DOMAIN}"),
        "m",
        &format!("sip:zed@{DOMAIN}"),
    );
    assert_eq!(mallory.ask(&invite).await, Some(404));

    // A request for alice reaches her registered contact through the proxy,
    // with the proxy's Via on top; her answer comes back to the sender.
    let opts = mallory.request(
        "OPTIONS",
        &format!("sip:alice@{DOMAIN}"),
        "m",
        &format!("sip:alice@{DOMAIN}"),
    );
    mallory.send(&opts).await;
    let fwd = alice.recv(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        fwd.method().map(|m| m.to_string()).as_deref(),
        Some("OPTIONS")
    );
    assert!(fwd.header("Via").unwrap().contains(&proxy.to_string()));
    let ok = Message::response_to(&fwd, 200, "OK", Some("t1"));
    alice
        .sock
        .send_to(&ok.to_bytes(HeaderForm::Full), proxy)
        .await
        .unwrap();
    loop {
        let back = mallory.recv(Duration::from_secs(2)).await.unwrap();
        if back.call_id() == opts.call_id() {
            assert_eq!(back.status(), Some(200));
            break;
        }
    }

    // A device revoked with pkg-admin cannot register after the reload
    // interval; another device of the same user still can.
    let phone = device_password(&server, "alice", ALICE_PW, "phone").await;
    pkg.admin_ok(&["user", "devices", "alice", "--revoke", "laptop"], "");
    assert_eq!(register_until(&mut alice, "alice", &laptop, 403).await, 403);
    assert_eq!(alice.register("alice", &phone).await, 200);

    // A user disabled with pkg-admin is unknown to the registrar after the
    // reload interval.
    pkg.admin_ok(&["user", "disable", "alice"], "");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let opts = mallory.request(
        "INVITE",
        &format!("sip:alice@{DOMAIN}"),
        "m",
        &format!("sip:alice@{DOMAIN}"),
    );
    assert_eq!(mallory.ask(&opts).await, Some(404));
    assert!(alice.recv(Duration::from_millis(300)).await.is_none());
    server.stop();
}

#[tokio::test]
async fn probes_for_unknown_users_are_throttled() {
    let pkg = Pkg::new(&None, "[sip]\nuser_refresh_secs = 1\n").await;
    let server = Server::start_with(&pkg.config, &["--sip", "127.0.0.1:0"]);
    let proxy = server.sip.unwrap();
    let mut scanner = Phone::new(proxy).await;
    let mut answered = 0;
    for i in 0..30 {
        let uri = format!("sip:user{i}@{DOMAIN}");
        let m = scanner.request("OPTIONS", &uri, "scan", &uri);
        scanner.send(&m).await;
        if let Some(r) = scanner.recv(Duration::from_millis(300)).await {
            assert_eq!(r.status(), Some(404));
            answered += 1;
        }
    }
    // The registrar's limit is 20 probes per minute per address.
    assert_eq!(answered, 20);
    // Known users are still served to others.
    let mut alice = Phone::new(proxy).await;
    let pw = device_password(&server, "alice", ALICE_PW, "laptop").await;
    assert_eq!(register_until(&mut alice, "alice", &pw, 200).await, 200);
    server.stop();
}

#[tokio::test]
async fn without_sip_the_startup_line_says_off() {
    let pkg = Pkg::new(&None, "").await;
    let server = pkg.start();
    assert_eq!(server.sip, None);
    server.stop();
}
