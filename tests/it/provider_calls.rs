//! Calls between real `ibephone agent` processes through a real
//! `pkg-server` (PKG + embedded registrar/proxy) on loopback: the secured
//! call (and, with IBEPHONE_TEST_TSHARK=1, what tshark sees of it), offline
//! and unknown callees, `require` against a phone that answers 415, a
//! forged BYE and a replayed INVITE from an endpoint that watched the wire,
//! a registration hijack attempt, 20% signaling loss, and two devices of
//! one user.
//!
//! The attacker and the phone without the tunnel are raw SIP sockets of the
//! test process (separate endpoints with their own addresses; they speak
//! only SIP over loopback to the provider and the phones).

use crate::support;

use ibephone::sip::message::Message;
use serde_json::json;
use std::time::Duration;
use support::capture::{ports_filter, Tshark};
use support::process::Agent;
use support::provider::*;

const ALICE_PW: &str = "alice secret 1";
const BOB_PW: &str = "bob secret 22";
const T: Duration = Duration::from_secs(20);

fn setup(extra: &[(&str, &str)]) -> (Provider, Server, tempfile::TempDir) {
    let mut users = vec![("alice", ALICE_PW), ("bob", BOB_PW)];
    users.extend_from_slice(extra);
    let pkg = Provider::new(&users);
    let server = pkg.start();
    (pkg, server, tempfile::tempdir().unwrap())
}

fn agent(dir: &tempfile::TempDir, server: &Server, spec: Spec) -> Agent {
    let cfg = agent_config(dir.path(), server, spec);
    let mut a = Agent::start(spec.name, &cfg);
    a.register();
    a
}

/// alice calls bob; bob answers; returns (alice's call, bob's call).
fn call(alice: &mut Agent, bob: &mut Agent) -> (u64, u64) {
    alice.send(json!({"cmd": "call", "to": "bob"}));
    let inc = bob.expect("incoming_call", T);
    assert_eq!(
        inc["verified"],
        format!("sip:alice@{DOMAIN}#{}", period_now())
    );
    assert_eq!(inc["tunneled"], true);
    let b = inc["call"].as_u64().unwrap();
    bob.send(json!({"cmd": "answer", "call": b}));
    let ans = alice.expect("answered", T);
    assert_eq!(
        ans["verified"],
        format!("sip:bob@{DOMAIN}#{}", period_now())
    );
    assert_eq!(ans["tunneled"], true);
    bob.expect("answered", T);
    (ans["call"].as_u64().unwrap(), b)
}

/// What the capture of a secured call between the UAs must show.
fn check_capture(bytes: &[u8]) {
    let report = ibephone::pcap::verify_capture(bytes).unwrap();
    assert!(report.clean(), "{report}");
    let segments = ibephone::pcap::capture::read_segments(bytes).unwrap();
    let framing = ibephone::pcap::stream::frame_messages(&segments);
    let (mut between_uas, mut tunneled) = (0, 0);
    for f in &framing.messages {
        let m = &f.message;
        let method = m.cseq().map(|(_, m)| m).unwrap_or_default();
        if method == "REGISTER" || m.first_line.contains(" 100 ") {
            continue;
        }
        between_uas += 1;
        // Every body is tunneled (the proxy's bodyless 480/404 and their
        // ACKs carry none).
        let ct = m.header("content-type").unwrap_or_default();
        assert!(
            m.body.is_empty() || ct.contains("pkcs7-mime"),
            "{}: {ct}",
            m.first_line
        );
        if !m.body.is_empty() {
            tunneled += 1;
        }
        let from = m.header("from").unwrap_or_default();
        assert!(from.contains("anonymous"), "{}: From {from}", m.first_line);
        assert!(m.header("user-agent").is_none(), "{}", m.first_line);
        let text = format!("{:?}{}", m.headers, String::from_utf8_lossy(&m.body));
        assert!(!text.contains("alice@"), "{}: caller AOR", m.first_line);
        assert!(!text.contains("v=0") && !text.contains("m=audio"), "SDP");
    }
    assert!(between_uas >= 8, "only {between_uas} messages between UAs");
    assert!(tunneled >= 8, "only {tunneled} tunneled messages");
}

#[test]
fn secured_call_offline_and_unknown_callee() {
    let (_pkg, server, dir) = setup(&[]);
    let pcap = dir.path().join("call.pcap");
    let tshark = Tshark::start(&pcap, &ports_filter(&[server.sip.port()]), &[]);
    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, server.sip));
    // bob is not registered yet: 480; zed does not exist: 404.
    alice.send(json!({"cmd": "call", "to": "bob"}));
    let e = alice.expect("ended", T);
    assert_eq!(e["reason"], "rejected 480", "{e}");
    alice.send(json!({"cmd": "call", "to": "zed"}));
    let e = alice.expect("ended", T);
    assert_eq!(e["reason"], "rejected 404", "{e}");

    let mut bob = agent(&dir, &server, Spec::new("bob", BOB_PW, server.sip));
    let (a, _) = call(&mut alice, &mut bob);
    alice.send(json!({"cmd": "hangup", "call": a}));
    assert_eq!(bob.expect("ended", T)["reason"], "remote hangup");
    alice.expect("ended", T);
    if let Some(tshark) = tshark {
        check_capture(&tshark.stop());
    }
}

#[test]
fn require_policy_against_a_phone_that_answers_415() {
    let (_pkg, server, dir) = setup(&[("carol", "carol secret 3")]);
    // carol's phone has no tunnel: it answers every INVITE 415.
    let mut carol = RawPhone::new(server.sip);
    // The account password never authenticates SIP; carol's device
    // credential does.
    assert_eq!(carol.register("carol", "carol secret 3"), 403);
    let secret = server.sip_credential("carol", "carol secret 3", "desk");
    assert_eq!(carol.register("carol", &secret), 200);
    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, server.sip));
    // A tunneled INVITE is over 1300 bytes: the proxy still brings it over
    // carol's flow, the UDP address she registered from (RFC 5626), never
    // over a new connection towards her.
    alice.send(json!({"cmd": "call", "to": "carol"}));
    let (inv, proxy_addr) = loop {
        let (m, from) = carol.recv(T).expect("an INVITE for carol");
        if m.method().map(|m| m.to_string()).as_deref() == Some("INVITE") {
            break (m, from);
        }
    };
    assert_eq!(proxy_addr, server.sip);
    let ct = inv
        .header("Content-Type")
        .or(inv.header("c"))
        .unwrap_or_default();
    assert!(ct.contains("pkcs7-mime"), "{ct}");
    let mut r = Message::response_to(&inv, 415, "Unsupported Media Type", Some("c415"));
    r.push_header("Accept", "application/sdp");
    carol.send_to(&r, proxy_addr);
    let e = alice.expect("ended", T);
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("rejected 415") && reason.contains("require"),
        "{e}"
    );
    // Under `require` there is no plain retry: carol sees no other INVITE
    // (only retransmissions of the first and the proxy's ACK of the 415).
    while let Some((m, _)) = carol.recv(Duration::from_secs(2)) {
        let is_invite = m.method().map(|m| m.to_string()).as_deref() == Some("INVITE");
        assert!(
            !is_invite || m.branch() == inv.branch(),
            "a second INVITE reached carol"
        );
    }
}

#[test]
fn forged_bye_and_replayed_invite_are_rejected() {
    let (_pkg, server, dir) = setup(&[]);
    let relay = Relay::new(server.sip, 0.0, 1);
    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, server.sip));
    let mut bob = agent(&dir, &server, Spec::new("bob", BOB_PW, relay.front));
    let (a, _) = call(&mut alice, &mut bob);
    let bob_addr = relay.agent.lock().unwrap().unwrap();
    let invite = relay
        .messages(true)
        .into_iter()
        .find(|m| m.method().map(|m| m.to_string()).as_deref() == Some("INVITE"))
        .expect("the INVITE bob received");
    let ok = relay
        .messages(false)
        .into_iter()
        .find(|m| m.status() == Some(200) && m.call_id() == invite.call_id())
        .expect("bob's 200");

    // A BYE with the dialog's outer Call-ID and tags, sent straight to bob.
    let attacker = RawPhone::new(server.sip);
    let target = invite.uri().unwrap().to_string();
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKforged1;rport\r\n\
         Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 9999 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        attacker.local,
        invite.header("From").or(invite.header("f")).unwrap(),
        ok.header("To").or(ok.header("t")).unwrap(),
        invite.call_id().unwrap()
    );
    attacker.sock.send_to(bye.as_bytes(), bob_addr).unwrap();
    if let Some((r, _)) = attacker.recv(Duration::from_secs(2)) {
        assert!(
            matches!(r.status(), Some(s) if s >= 400),
            "forged BYE answered {:?}",
            r.status()
        );
    }
    assert!(
        bob.try_expect("ended", Duration::from_secs(2)).is_none(),
        "forged BYE ended the call"
    );
    assert!(
        bob.seen.iter().any(|e| e["event"] == "rejected"),
        "{:?}",
        bob.seen
    );

    // The INVITE bob received, replayed to him byte for byte from the
    // attacker's address (a retransmission of a finished transaction), and
    // again in a new transaction (new Via branch, which the tunnel does
    // not protect): neither makes a call, the second is reported.
    attacker.send_to(&invite, bob_addr);
    let mut replay = invite.clone();
    replay.replace_first(
        "Via",
        format!("SIP/2.0/UDP {};branch=z9hG4bKreplay1;rport", attacker.local),
    );
    attacker.send_to(&replay, bob_addr);
    assert!(
        bob.try_expect("incoming_call", Duration::from_secs(3))
            .is_none(),
        "replayed INVITE made a call"
    );
    assert!(
        bob.seen
            .iter()
            .any(|e| e["event"] == "rejected" && e["reason"].as_str().unwrap().contains("replayed")),
        "{:?}",
        bob.seen
    );

    // The call is still up: alice's real BYE ends it.
    alice.send(json!({"cmd": "hangup", "call": a}));
    assert_eq!(bob.expect("ended", T)["reason"], "remote hangup");
}

#[test]
fn registration_hijack_fails_and_bob_keeps_receiving_calls() {
    let (_pkg, server, dir) = setup(&[]);
    let mut bob = agent(&dir, &server, Spec::new("bob", BOB_PW, server.sip));
    let mut mallory = RawPhone::new(server.sip);
    assert_eq!(mallory.register("bob", "guessed password"), 403);
    // bob's account password is not a SIP credential: a phishing or a
    // breach of it does not register contacts for bob.
    assert_eq!(mallory.register("bob", BOB_PW), 403);
    // alice's own device credential does not register contacts for bob
    // either.
    let alice_secret = server.sip_credential("alice", ALICE_PW, "mallory-box");
    assert_eq!(mallory.register_as("bob", "alice", &alice_secret), 403);
    assert_eq!(mallory.register("alice", &alice_secret), 200);

    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, server.sip));
    let (a, _) = call(&mut alice, &mut bob);
    assert!(
        mallory.recv(Duration::from_millis(300)).is_none(),
        "mallory got something"
    );
    alice.send(json!({"cmd": "hangup", "call": a}));
    bob.expect("ended", T);
}

#[test]
fn twenty_percent_signaling_loss_still_completes_calls() {
    let (_pkg, server, dir) = setup(&[]);
    let ra = Relay::new(server.sip, 0.2, 7);
    let rb = Relay::new(server.sip, 0.2, 11);
    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, ra.front));
    let mut bob = agent(&dir, &server, Spec::new("bob", BOB_PW, rb.front));
    for _ in 0..2 {
        let (a, _) = call(&mut alice, &mut bob);
        alice.send(json!({"cmd": "hangup", "call": a}));
        assert_eq!(
            bob.expect("ended", Duration::from_secs(40))["reason"],
            "remote hangup"
        );
        alice.expect("ended", Duration::from_secs(40));
    }
    let lost = ra
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, tcp, _)| !tcp)
        .count();
    assert!(lost > 10, "the relay saw only {lost} datagrams");
}

#[test]
fn two_devices_ring_one_answers_the_other_is_cancelled() {
    let (_pkg, server, dir) = setup(&[]);
    let mut desk = agent(
        &dir,
        &server,
        Spec {
            name: "bob-desk",
            ..Spec::new("bob", BOB_PW, server.sip)
        },
    );
    let mut mobile = agent(
        &dir,
        &server,
        Spec {
            name: "bob-mobile",
            ..Spec::new("bob", BOB_PW, server.sip)
        },
    );
    let mut alice = agent(&dir, &server, Spec::new("alice", ALICE_PW, server.sip));
    alice.send(json!({"cmd": "call", "to": "bob"}));
    let d = desk.expect("incoming_call", T);
    let m = mobile.expect("incoming_call", T);
    for inc in [&d, &m] {
        assert_eq!(
            inc["verified"],
            format!("sip:alice@{DOMAIN}#{}", period_now())
        );
    }
    mobile.send(json!({"cmd": "answer", "call": m["call"]}));
    let ans = alice.expect("answered", T);
    assert_eq!(
        ans["verified"],
        format!("sip:bob@{DOMAIN}#{}", period_now())
    );
    assert_eq!(ans["tunneled"], true);
    assert_eq!(desk.expect("ended", T)["reason"], "cancelled");
    mobile.expect("answered", T);
    alice.send(json!({"cmd": "hangup", "call": ans["call"]}));
    assert_eq!(mobile.expect("ended", T)["reason"], "remote hangup");
}

/// SIP over TLS on loopback: both phones reach the provider with `sips:`
/// and hold its certificate to the PKG's pin; the call is secured and
/// both sides see the other verified. alice writes her TLS secrets to her
/// key log (NSS format, next to the tunnel's keys). With
/// IBEPHONE_TEST_TSHARK=1 the capture holds no SIP in clear (`pcap
/// verify` exit 0), and with the key log the SIP inside alice's TLS
/// connection is judged: every message between the phones tunneled.
#[test]
fn secured_call_over_tls_pinned_to_the_pkg_certificate() {
    let pkg = Provider::new(&[("alice", ALICE_PW), ("bob", BOB_PW)]);
    let server = pkg.start_tls();
    let tls = server.sip_tls.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tls.pcap");
    let tshark = Tshark::start(&pcap, &ports_filter(&[tls.port(), server.sip.port()]), &[]);
    let keylog = dir.path().join("alice.keylog");
    let cfg = agent_config(
        dir.path(),
        &server,
        Spec::new("alice", ALICE_PW, server.sip).tls(tls),
    );
    let mut alice = Agent::start_with(
        "alice",
        &cfg,
        &[std::ffi::OsStr::new("--keylog"), keylog.as_os_str()],
    );
    alice.errors_fail = true;
    alice.register();
    let mut bob = agent(&dir, &server, Spec::new("bob", BOB_PW, server.sip).tls(tls));
    bob.errors_fail = true;
    // alice calls bob, bob hangs up; bob calls alice, bob hangs up.
    let (_, b) = call(&mut alice, &mut bob);
    bob.send(json!({"cmd": "hangup", "call": b}));
    assert_eq!(alice.expect("ended", T)["reason"], "remote hangup");
    bob.expect("ended", T);
    bob.send(json!({"cmd": "call", "to": "alice"}));
    let inc = alice.expect("incoming_call", T);
    assert_eq!(
        inc["verified"],
        format!("sip:bob@{DOMAIN}#{}", period_now())
    );
    alice.send(json!({"cmd": "answer", "call": inc["call"]}));
    let ans = bob.expect("answered", T);
    assert_eq!(
        ans["verified"],
        format!("sip:alice@{DOMAIN}#{}", period_now())
    );
    bob.send(json!({"cmd": "hangup", "call": ans["call"]}));
    assert_eq!(alice.expect("ended", T)["reason"], "remote hangup");
    let log = std::fs::read_to_string(&keylog).unwrap();
    assert!(log.contains("CLIENT_TRAFFIC_SECRET_0 "), "{log}");
    assert!(log.contains("IBESIP_CEK "), "{log}");
    let Some(tshark) = tshark else { return };
    let bytes = tshark.stop();
    let report = ibephone::pcap::verify_capture(&bytes).unwrap();
    assert!(report.clean(), "{report}");
    assert!(report.messages.is_empty(), "SIP in clear:\n{report}");
    assert_eq!(report.tls.len(), 2, "{report}");
    let keys = ibephone::pcap::tls::TlsKeys::parse(&log);
    let report = ibephone::pcap::verify_capture_with(&bytes, Some(&keys)).unwrap();
    assert!(report.clean(), "{report}");
    let opened: Vec<_> = report.tls.iter().filter(|c| c.decrypted.is_ok()).collect();
    assert_eq!(
        opened.len(),
        1,
        "only alice's connection is in her key log:\n{report}"
    );
    let tunneled = report
        .messages
        .iter()
        .filter(|m| m.class == ibephone::pcap::Class::Tunneled)
        .count();
    assert!(
        tunneled >= 8,
        "only {tunneled} tunneled messages inside TLS:\n{report}"
    );
    // `pcap decrypt` with the same key log opens both layers: TLS, then
    // the tunnel; the inner INVITE names alice in clear only there.
    let path = dir.path().join("tls-call.pcap");
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ibephone"))
        .args(["pcap", "decrypt"])
        .arg(&path)
        .arg("--keylog")
        .arg(&keylog)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(" tls "), "{text}");
    assert!(text.contains("| INVITE sip:bob@"), "{text}");
    assert!(text.contains(&format!("sip:alice@{DOMAIN}")), "{text}");
    // A key log whose TLS secrets are wrong opens nothing: the
    // connections are judged by their framing only, never misread.
    let wrong = log.replace("CLIENT_TRAFFIC_SECRET_0 ", "CLIENT_TRAFFIC_SECRET_X ");
    let report = ibephone::pcap::verify_capture_with(
        &bytes,
        Some(&ibephone::pcap::tls::TlsKeys::parse(&wrong)),
    )
    .unwrap();
    assert!(
        report.messages.is_empty() && report.tls.iter().all(|c| c.decrypted.is_err()),
        "{report}"
    );
}

/// An attacker between alice and her provider answers on the SIP over
/// TLS port with its own certificate (a provider of its own: another PKG
/// that even knows alice's password). alice logged in to her real PKG
/// and holds the SIP proxy to that PKG's pin: the handshake is refused
/// with a clear error naming both fingerprints, and nothing is
/// registered with the attacker.
#[test]
fn a_tls_proxy_with_another_certificate_is_refused() {
    let (_pkg, server, dir) = setup(&[]);
    let attacker_pkg = Provider::new(&[("alice", ALICE_PW)]);
    let attacker = attacker_pkg.start_tls();
    assert_ne!(attacker.fingerprint, server.fingerprint);
    let cfg = agent_config(
        dir.path(),
        &server,
        Spec::new("alice", ALICE_PW, server.sip).tls(attacker.sip_tls.unwrap()),
    );
    let mut alice = Agent::start("alice", &cfg);
    alice.send(json!({"cmd": "register"}));
    let e = alice.expect("error", T);
    let msg = e["message"].as_str().unwrap_or_default();
    println!("alice was told: {msg}");
    assert!(msg.contains("cannot reach the SIP proxy"), "{e}");
    assert!(msg.contains("not the provider's pinned one"), "{e}");
    assert!(
        msg.contains(&attacker.fingerprint) && msg.contains(&server.fingerprint),
        "{e}"
    );
    assert_eq!(alice.expect("registration_failed", T)["status"], 503);
    assert!(alice
        .try_expect("registered", Duration::from_secs(2))
        .is_none());
}

/// Without a pin (keys from a key file, no PKG), the proxy's certificate
/// must chain to the system's trusted roots for its name: the provider's
/// self-signed certificate does not, and the phone refuses it.
#[test]
fn without_a_pin_a_self_signed_tls_proxy_is_refused() {
    let pkg = Provider::new(&[("alice", ALICE_PW)]);
    let server = pkg.start_tls();
    let tls = server.sip_tls.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let domain = support::agents::TestDomain::new(DOMAIN);
    let cfg = support::process::key_file_config(dir.path(), &domain, "alice", ALICE_PW, server.sip);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        &format!("proxy = \"{}\"", server.sip),
        &format!("proxy = \"sips:{tls}\""),
    );
    assert!(text.contains("sips:"), "{text}");
    std::fs::write(&cfg, text).unwrap();
    let mut alice = Agent::start("alice", &cfg);
    alice.send(json!({"cmd": "register"}));
    match alice.try_expect("error", T) {
        Some(e) => {
            let msg = e["message"].as_str().unwrap_or_default();
            println!("alice was told: {msg}");
            assert!(msg.contains("cannot reach the SIP proxy"), "{e}");
            assert!(msg.to_lowercase().contains("certificate"), "{e}");
        }
        // A system without any trusted root: the agent refuses to start.
        None => {
            let err = alice.stderr.lock().unwrap().clone();
            assert!(err.contains("no trusted roots"), "{err}");
        }
    }
    assert!(alice
        .try_expect("registered", Duration::from_secs(2))
        .is_none());
}
