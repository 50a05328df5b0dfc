//! An unmodified Kamailio (apt package `kamailio`) as the registrar/proxy
//! instead of the embedded one, gated on `IBEPHONE_TEST_KAMAILIO=1`
//! (scripts/test.sh sets it after scripts/install-deps.sh installed it).
//! Configuration: `config/kamailio/kamailio.cfg`, run in the foreground
//! under a temporary directory on a loopback port chosen here.
//!
//! alice and bob register (digest against Kamailio's db_text table), make
//! a secured call with verified identities both ways, exchange a MESSAGE
//! and hang up; Kamailio's log of every message it routed shows only
//! tunnel bodies, anonymous From headers and nothing readable.
//!
//! With a PKG: `ibephone agent` processes get their keys and their device
//! SIP credentials from a real `pkg-server`, `pkg-admin kamailio-export`
//! writes those credentials (MD5 HA1s) into Kamailio's `subscriber`
//! table, and the phones register to Kamailio and call; the account
//! password is refused, and so is one user's credential for another's AOR.

use crate::support;

use ibephone::agent::headless::{start, start_with, RunningAgent, StartOptions};
use ibephone::agent::AgentEvent;
use ibephone::pcap::{decrypt_capture, verify_capture, Class};
use ibephone::sip::digest::{ha1, Algorithm, Password};
use ibephone::tunnel::keylog::KeyLog;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::agents::{id_now, registration_outcome, wait_event, TestDomain, Wait};
use support::capture::{ports_filter, Tshark};
use support::tools::{free_port, gate, tool_path};

const DOMAIN: &str = "atlanta.invalid";

/// Kamailio on a loopback address; stopped when dropped.
struct Kamailio {
    process: support::kamailio::Kamailio,
    addr: SocketAddr,
}

/// Writes the db_text tables (`version`, `subscriber`) for `users`
/// (name, password): `ha1` is MD5(user:domain:password), as
/// `pkg-admin kamailio-export` writes it; the password column is empty.
fn write_db(dir: &Path, users: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("version"),
        "table_name(string) table_version(int) \nsubscriber:7\n",
    )
    .unwrap();
    let mut sub = String::from(
        "id(int,auto) username(string) domain(string) password(string,null) ha1(string,null) ha1b(string,null) \n",
    );
    for (i, (user, pw)) in users.iter().enumerate() {
        let ha1 = ha1(Algorithm::Md5, user, DOMAIN, &Password::new(*pw));
        sub.push_str(&format!("{}:{user}:{DOMAIN}::{}:\n", i + 1, ha1.as_str()));
    }
    std::fs::write(dir.join("subscriber"), sub).unwrap();
}

fn start_kamailio(dir: &Path, users: &[(&str, &str)]) -> Kamailio {
    write_db(&dir.join("db"), users);
    start_kamailio_at(dir, DOMAIN, free_port())
}

/// Kamailio for `domain` on loopback `port`, its tables in `dir/db`.
fn start_kamailio_at(dir: &Path, domain: &str, port: u16) -> Kamailio {
    let defines = support::kamailio::defines(domain, &dir.join("db"), None);
    let process = support::kamailio::Kamailio::start(
        Command::new(tool_path("kamailio")),
        dir,
        &[
            format!("udp:127.0.0.1:{port}"),
            format!("tcp:127.0.0.1:{port}"),
        ],
        &defines,
    );
    let k = Kamailio {
        process,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    wait_ready(&k, domain);
    k
}

/// Polls with OPTIONS to the server itself until Kamailio answers 200.
fn wait_ready(k: &Kamailio, domain: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let probe = format!(
            "OPTIONS sip:{} SIP/2.0\r\nv: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n};rport\r\nMax-Forwards: 70\r\nf: <sip:probe@{domain}>;tag=p{n}\r\nt: <sip:{}>\r\ni: cHJvYmVwcm9iZXByb2JlcHJvYmU{n}\r\nCSeq: {n} OPTIONS\r\nl: 0\r\n\r\n",
            k.addr, k.addr
        );
        let _ = sock.send_to(probe.as_bytes(), k.addr);
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                return;
            }
        }
    }
    panic!(
        "kamailio did not answer on {}:\n{}",
        k.addr,
        k.process.log()
    );
}

async fn register(a: &mut RunningAgent) {
    let e = registration_outcome(a).await;
    assert!(matches!(e, AgentEvent::Registered { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_call_through_kamailio() {
    if !gate("IBEPHONE_TEST_KAMAILIO", "kamailio") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ibephone-kamailio")
        .tempdir()
        .unwrap();
    let kamailio = start_kamailio(dir.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let log = || std::fs::read_to_string(dir.path().join("kamailio.log")).unwrap_or_default();
    let domain = TestDomain::new(DOMAIN);
    let cfg = |user: &str, pw: &str| domain.agent(user, kamailio.addr).password(pw).build();
    let keylog = dir.path().join("alice.keylog");
    let mut alice = start_with(
        cfg("alice", "alice-pw"),
        StartOptions {
            keylog: Some(keylog.clone()),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let mut bob = start(cfg("bob", "bob-pw")).await.unwrap();
    // With tshark: the wire between phones and Kamailio, checked below.
    let pcap = dir.path().join("kamailio.pcap");
    let ports = [kamailio.addr.port(), alice.local.port(), bob.local.port()];
    let tshark = Tshark::start(&pcap, &ports_filter(&ports), &[]);
    register(&mut alice).await;
    register(&mut bob).await;

    // A wrong password is refused by Kamailio: the digest check is real.
    let mut mallory = start(cfg("bob", "not-bobs-pw")).await.unwrap();
    let e = registration_outcome(&mut mallory).await;
    assert!(
        matches!(e, AgentEvent::RegistrationFailed { .. }),
        "{e:?}\n{}",
        log()
    );

    let w = Wait::default();
    let (calling, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::Calling { call, .. } = calling else {
        unreachable!()
    };
    let AgentEvent::IncomingCall {
        call: bcall,
        from,
        verified,
        tunneled,
        ..
    } = incoming
    else {
        unreachable!()
    };
    assert!(from.contains("sip:alice@atlanta.invalid"), "{from}");
    assert_eq!(verified, Some(id_now("alice", DOMAIN)));
    assert!(tunneled);
    let answered = w.answer(&mut bob, &mut alice, bcall).await;
    assert_eq!(
        answered,
        AgentEvent::Answered {
            call,
            verified: Some(id_now("bob", DOMAIN)),
            tunneled: true
        }
    );
    wait_event(&mut bob, "answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;

    let msg = w
        .message(&mut alice, &mut bob, "bob", "through kamailio")
        .await;
    assert_eq!(
        msg,
        AgentEvent::MessageReceived {
            from: msg_from(&msg),
            text: "through kamailio".into(),
            verified: Some(id_now("alice", DOMAIN)),
            tunneled: true,
        }
    );

    w.hang_up(&mut alice, &mut bob, call).await;
    if let Some(tshark) = tshark {
        let bytes = tshark.stop();
        let report = verify_capture(&bytes).unwrap();
        assert!(report.clean(), "{report}");
        let tunneled = report
            .messages
            .iter()
            .filter(|m| m.class == Class::Tunneled)
            .count();
        // INVITE, 180, 200, ACK, MESSAGE, 200, BYE, 200: each on two legs.
        assert!(tunneled >= 16, "{report}");
        let keys = KeyLog::parse(&std::fs::read_to_string(&keylog).unwrap()).unwrap();
        let inner = decrypt_capture(&bytes, &keys).unwrap();
        let shown = inner.to_string();
        assert_eq!(inner.failures(), 0, "{shown}");
        assert!(
            shown.contains("| INVITE sip:bob@atlanta.invalid SIP/2.0"),
            "{shown}"
        );
        assert!(shown.contains("| through kamailio"), "{shown}");
    }
    drop(kamailio);

    // What Kamailio could read: only outer headers and CMS bodies.
    let log = log();
    let seen: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("IBEPHONE-SEEN ").map(|(_, s)| s))
        .collect();
    eprintln!("what kamailio saw:\n{}", seen.join("\n"));
    assert!(!log.contains("IBEPHONE-CLEAR"), "{log}");
    for method in ["INVITE", "ACK", "BYE", "MESSAGE"] {
        let lines: Vec<&&str> = seen
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .collect();
        assert!(!lines.is_empty(), "Kamailio saw no {method}:\n{log}");
        for l in lines {
            assert!(l.contains("ct=[application/pkcs7-mime"), "{l}");
            assert!(l.contains("from=[sip:anonymous@anonymous.invalid]"), "{l}");
        }
    }
    for status in ["180", "200"] {
        let replies: Vec<&&str> = seen
            .iter()
            .filter(|l| l.starts_with(&format!("reply {status} INVITE")))
            .collect();
        assert!(!replies.is_empty(), "Kamailio relayed no {status}:\n{log}");
        for l in replies {
            assert!(l.contains("ct=[application/pkcs7-mime"), "{l}");
        }
    }
}

fn msg_from(e: &AgentEvent) -> String {
    match e {
        AgentEvent::MessageReceived { from, .. } => {
            assert!(from.contains("sip:alice@atlanta.invalid"), "{from}");
            from.clone()
        }
        _ => unreachable!(),
    }
}

/// `pkg-admin user devices USER` lists a device once the agent asked its
/// credential at start (within 20 s).
fn wait_device(pkg: &support::provider::Provider, user: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pkg.admin(&["user", "devices", user], "").trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "{user}'s agent asked no credential"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pkg_device_credentials_exported_to_kamailio() {
    use serde_json::json;
    use support::process::Agent;
    use support::provider::{agent_config, Provider, RawPhone, Spec, DOMAIN as PKG_DOMAIN};
    if !gate("IBEPHONE_TEST_KAMAILIO", "kamailio") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ibephone-kamailio-pkg")
        .tempdir()
        .unwrap();
    let pkg = Provider::new(&[
        ("alice", "alice pkg pw"),
        ("bob", "bob pkg pw"),
        ("carol", "carol pkg pw"),
        ("dave", "dave pkg pw"),
    ]);
    let server = pkg.start();
    // carol's phone is a raw SIP endpoint with her device credential.
    let carol_secret = server.sip_credential("carol", "carol pkg pw", "desk");
    let dave_secret = server.sip_credential("dave", "dave pkg pw", "desk");
    let port = free_port();
    let kamailio_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut agents = Vec::new();
    for (user, pw) in [("alice", "alice pkg pw"), ("bob", "bob pkg pw")] {
        let cfg = agent_config(dir.path(), &server, Spec::new(user, pw, kamailio_addr));
        agents.push(Agent::start(user, &cfg));
        wait_device(&pkg, user);
    }
    pkg.admin(
        &[
            "kamailio-export",
            "--out",
            dir.path().join("db").to_str().unwrap(),
        ],
        "",
    );
    let kamailio = start_kamailio_at(dir.path(), PKG_DOMAIN, port);
    let mut bob = agents.pop().unwrap();
    let mut alice = agents.pop().unwrap();
    alice.register();
    bob.register();

    // The account password is no SIP credential at Kamailio either (it
    // challenges again), and carol's credential registers carol but not
    // bob's AOR.
    let mut carol = RawPhone::new(kamailio.addr);
    assert_eq!(carol.register("bob", "bob pkg pw"), 401);
    assert_eq!(carol.register("carol", "carol pkg pw"), 401);
    assert_eq!(carol.register_as("bob", "carol", &carol_secret), 403);
    assert_eq!(carol.register("carol", &carol_secret), 200);

    // A device token (`ctok`, which routes in-dialog requests to its
    // device's flow) belongs to the user who registered it: dave, with a
    // valid credential of his own, cannot take over carol's.
    let contact = |phone: &RawPhone| format!("<sip:{};ctok=c4r0ldesk>", phone.local);
    let carol_contact = contact(&carol);
    let auth = |p: &mut RawPhone, user: &str, secret: &str, c: &str| {
        p.register_contact(user, user, secret, Some(c))
    };
    assert_eq!(
        auth(&mut carol, "carol", &carol_secret, &carol_contact),
        200
    );
    let mut dave = RawPhone::new(kamailio.addr);
    let dave_contact = contact(&dave);
    assert_eq!(auth(&mut dave, "dave", &dave_secret, &dave_contact), 403);
    assert_eq!(
        auth(&mut carol, "carol", &carol_secret, &carol_contact),
        200
    );

    alice.send(json!({"cmd": "call", "to": "bob"}));
    let t = Duration::from_secs(20);
    let inc = bob.expect("incoming_call", t);
    assert_eq!(inc["tunneled"], true, "{inc}");
    assert!(
        inc["verified"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("sip:alice@{PKG_DOMAIN}#"))),
        "{inc}"
    );
    bob.send(json!({"cmd": "answer", "call": inc["call"]}));
    let ans = alice.expect("answered", t);
    assert!(
        ans["verified"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("sip:bob@{PKG_DOMAIN}#"))),
        "{ans}"
    );
    alice.send(json!({"cmd": "hangup", "call": ans["call"]}));
    assert_eq!(bob.expect("ended", t)["reason"], "remote hangup");
    drop(kamailio);
}
