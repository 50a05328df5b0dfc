//! The key log (`--keylog`) and `ibephone pcap decrypt`: a tunneled dialog
//! written as a pcap plus the key log of one side gives back every inner
//! message byte for byte; a wrong or foreign key log fails each message
//! with a clear error and no panic; the agent writes its log 0600.

use crate::support;

use ibephone::agent::headless::{start_with, StartError, StartOptions};
use ibephone::agent::AgentEvent;
use ibephone::pcap::decrypt::{decrypt_capture, DecryptError};
use ibephone::pcap::write::udp_capture;
use ibephone::tunnel::keylog::{KeyLog, MemoryKeyLog};
use std::net::SocketAddrV4;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::agents::{register, TestDomain, Wait};
use support::capture::{ports_filter, Tshark};
use support::process::key_file_config;
use support::tunnel::*;

struct Dialog {
    /// (alice sent it, inner, outer)
    messages: Vec<(bool, Vec<u8>, Vec<u8>)>,
    alice_log: MemoryKeyLog,
    bob_log: MemoryKeyLog,
}

fn dialog(tag: &str) -> Dialog {
    let d = TwoDomains::new("atlanta.invalid", "biloxi.invalid");
    let mut alice = d.tunnel("sip:alice@atlanta.invalid", &["2026-11"]);
    let mut bob = d.tunnel("sip:bob@biloxi.invalid", &["2026-11"]);
    let (alice_log, bob_log) = (MemoryKeyLog::default(), MemoryKeyLog::default());
    alice.set_key_log(Box::new(alice_log.clone()));
    bob.set_key_log(Box::new(bob_log.clone()));
    let mut call = Call::new("sip:alice@atlanta.invalid", "sip:bob@biloxi.invalid");
    call.call_id = format!("{CALL_ID}{tag}");
    let t = now();
    let mut messages = vec![];
    for (from_alice, inner) in [
        (true, call.invite()),
        (false, call.ringing()),
        (false, call.ok_invite()),
        (true, call.ack()),
        (true, call.bye()),
        (false, call.ok_bye()),
    ] {
        let (sender, receiver) = sides(from_alice, &mut alice, &mut bob);
        let outer = sender.seal(t, &inner).unwrap();
        assert_eq!(receiver.open(t, &outer).unwrap().inner, inner);
        messages.push((from_alice, inner, outer));
    }
    Dialog {
        messages,
        alice_log,
        bob_log,
    }
}

fn capture(d: &Dialog) -> Vec<u8> {
    let a: SocketAddrV4 = "127.0.0.1:5070".parse().unwrap();
    let b: SocketAddrV4 = "127.0.0.1:5080".parse().unwrap();
    let register = sip(
        "REGISTER sip:atlanta.invalid SIP/2.0",
        &[
            "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg".into(),
            "f: <sip:alice@atlanta.invalid>;tag=r1".into(),
            "t: <sip:alice@atlanta.invalid>".into(),
            "i: cmVnaXN0ZXJyZWdpc3RlcnJlZw".into(),
            "CSeq: 1 REGISTER".into(),
        ],
        "",
    );
    let mut datagrams: Vec<(SocketAddrV4, SocketAddrV4, &[u8])> = vec![(a, b, &register)];
    for (from_alice, _, outer) in &d.messages {
        let (s, r) = if *from_alice { (a, b) } else { (b, a) };
        datagrams.push((s, r, outer));
    }
    udp_capture(&datagrams).unwrap()
}

#[test]
fn either_sides_key_log_decrypts_the_whole_dialog() {
    let d = dialog("");
    let pcap = capture(&d);
    for log in [&d.alice_log, &d.bob_log] {
        let keys = KeyLog::parse(&log.text()).unwrap();
        assert_eq!(keys.counts(), (1, 6));
        let out = decrypt_capture(&pcap, &keys).unwrap();
        assert_eq!(out.plain, 1);
        assert_eq!(out.failures(), 0, "{out}");
        let inner: Vec<Vec<u8>> = out
            .messages
            .iter()
            .map(|m| m.inner.clone().unwrap())
            .collect();
        let expected: Vec<Vec<u8>> = d.messages.iter().map(|(_, i, _)| i.clone()).collect();
        assert_eq!(inner, expected);
    }
}

#[test]
fn wrong_key_logs_fail_per_message_without_panic() {
    let d = dialog("");
    let pcap = capture(&d);
    // A key log of another dialog: no key for any of these sessions.
    let other = dialog("x");
    let foreign = KeyLog::parse(&other.alice_log.text()).unwrap();
    let out = decrypt_capture(&pcap, &foreign).unwrap();
    assert_eq!(out.failures(), 6);
    for m in &out.messages {
        assert!(matches!(m.inner, Err(DecryptError::NoKey { .. })), "{m:?}");
    }
    // The right session ids with wrong keys: each message names the failure.
    let text = d.alice_log.text();
    let tampered: String = text
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((head, key)) if !l.starts_with('#') => {
                format!("{head} {}\n", key.chars().rev().collect::<String>())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let wrong = KeyLog::parse(&tampered).unwrap();
    let out = decrypt_capture(&pcap, &wrong).unwrap();
    assert_eq!(out.failures(), 6, "{out}");
    for m in &out.messages {
        assert!(
            matches!(
                m.inner,
                Err(DecryptError::Authentication | DecryptError::KeyUnwrap(_))
            ),
            "{m:?}"
        );
    }
    let shown = out.to_string();
    assert_eq!(shown.matches("cannot decrypt:").count(), 6, "{shown}");
}

#[test]
fn pcap_decrypt_command_prints_the_inner_dialog() {
    let d = dialog("");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("dialog.pcap");
    std::fs::write(&pcap, capture(&d)).unwrap();
    let good = dir.path().join("good.keylog");
    std::fs::write(&good, d.bob_log.text().as_bytes()).unwrap();
    let bad = dir.path().join("foreign.keylog");
    std::fs::write(&bad, dialog("y").bob_log.text().as_bytes()).unwrap();
    let broken = dir.path().join("broken.keylog");
    std::fs::write(&broken, "# fine\nIBESIP_KEK 00 11\n").unwrap();

    let run = |log: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_ibephone"))
            .args(["pcap", "decrypt"])
            .arg(&pcap)
            .arg("--keylog")
            .arg(log)
            .output()
            .unwrap()
    };
    let out = run(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "| INVITE sip:bob@biloxi.invalid SIP/2.0",
        "| SIP/2.0 180 Ringing",
        "| SIP/2.0 200 OK",
        "| ACK sip:bob@127.0.0.1:5080 SIP/2.0",
        "| BYE sip:bob@127.0.0.1:5080 SIP/2.0",
        "| From: Alice <sip:alice@atlanta.invalid>;tag=1928301774",
        "| m=audio 49170 RTP/SAVP 0",
        "6 tunneled messages: 6 decrypted, 0 failed; 1 plain",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }

    let out = run(&bad);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout
            .matches("cannot decrypt: no key in the key log")
            .count(),
        6
    );
    assert!(!stdout.contains("| INVITE"), "{stdout}");

    let out = run(&broken);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("key log line 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_key_log_is_private_and_decrypts_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let domain = TestDomain::new("keylog.invalid");
    let provider = domain.proxy(&["alice", "bob"]).await;

    // A key log file that others can read is refused.
    let open = dir.path().join("open.keylog");
    std::fs::write(&open, "").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = |user: &str| domain.agent(user, provider.addr).build();
    let refused = start_with(
        cfg("alice"),
        StartOptions {
            keylog: Some(open.clone()),
            ..StartOptions::default()
        },
    )
    .await;
    assert!(matches!(refused, Err(StartError::KeyLog(_))));

    let pcap = dir.path().join("call.pcap");
    let tshark = Tshark::start(&pcap, &ports_filter(&[provider.addr.port()]), &[]);
    let keylog = dir.path().join("alice.keylog");
    let mut alice = start_with(
        cfg("alice"),
        StartOptions {
            keylog: Some(keylog.clone()),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let mut bob = ibephone::agent::headless::start(cfg("bob")).await.unwrap();
    for a in [&mut alice, &mut bob] {
        register(a).await;
    }
    let w = Wait::default();
    let (_, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::IncomingCall { call, .. } = incoming else {
        unreachable!()
    };
    let AgentEvent::Answered { call, .. } = w.answer(&mut bob, &mut alice, call).await else {
        unreachable!()
    };
    w.hang_up(&mut alice, &mut bob, call).await;

    let mode = std::fs::metadata(&keylog).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&keylog).unwrap();
    let keys = KeyLog::parse(&text).unwrap();
    let (keks, ceks) = keys.counts();
    assert_eq!(keks, 1, "{text}");
    // INVITE, 180, 200, ACK, BYE, 200 at least (100 Trying is plain).
    assert!(ceks >= 6, "{text}");

    if let Some(tshark) = tshark {
        let out = decrypt_capture(&tshark.stop(), &keys).unwrap();
        let shown = out.to_string();
        assert_eq!(out.failures(), 0, "{shown}");
        for line in [
            "| INVITE sip:bob@keylog.invalid SIP/2.0",
            "| SIP/2.0 200 OK",
            "| BYE sip:",
        ] {
            assert!(shown.contains(line), "missing {line:?} in\n{shown}");
        }
    }
}

#[test]
fn agent_command_line_flag_turns_the_key_log_on() {
    let dir = tempfile::tempdir().unwrap();
    let domain = TestDomain::new("flag.invalid");
    let cfg = key_file_config(
        dir.path(),
        &domain,
        "alice",
        "pw",
        "127.0.0.1:9".parse().unwrap(),
    );
    let keylog = dir.path().join("k.log");
    let out = Command::new(env!("CARGO_BIN_EXE_ibephone"))
        .args(["agent", "--config"])
        .arg(&cfg)
        .arg("--keylog")
        .arg(&keylog)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: key log on"), "{stderr}");
    let mode = std::fs::metadata(&keylog).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&keylog)
        .unwrap()
        .starts_with("# ibephone key log"));
}
