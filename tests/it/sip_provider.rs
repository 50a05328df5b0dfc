//! The registrar/proxy through the in-memory network: registration
//! refresh and refusals, 404/480, throttling, replay, malformed input, TCP
//! for large requests, timeouts.

use crate::support;

use ibephone::sip::filter::NoFilter;
use ibephone::sip::ua::{Body, CallId, Command, EndReason, Event};
use ibephone::sip::{Dest, Transport};
use std::time::Duration;
use support::sip_net::*;

#[test]
fn registration_is_refreshed_before_expiry() {
    let mut n = Net::new(0.0, 2);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    register(&mut n, a);
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(700), |n| {
        n.uas[a]
            .2
            .iter()
            .filter(|e| matches!(e, Event::Registered { .. }))
            .count()
            >= 2
    }));
    assert!(n.now - t0 < Duration::from_secs(600));
    assert!(!n
        .proxy
        .registrar
        .location
        .lookup(t0 + Duration::from_secs(650), "alice@example.invalid")
        .is_empty());
}

#[test]
fn offline_user_gets_480_and_unknown_user_404() {
    let mut n = Net::new(0.0, 3);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    register(&mut n, a);
    n.dial(a, CallId(1), "carol", Body::default());
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(480)));
    n.uas[a].2.clear();
    n.dial(a, CallId(2), "dave", Body::default());
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(404)));
}

#[test]
fn wrong_password_is_refused_and_real_binding_survives() {
    let mut n = Net::new(0.0, 4);
    let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    let eve = n.add("bob", "guess", 5070, Box::new(NoFilter));
    register(&mut n, b);
    n.cmd(eve, Command::Register);
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(eve, |e| matches!(e, Event::RegistrationFailed { .. }))));
    assert!(n.has(eve, |e| *e == Event::RegistrationFailed { status: 403 }));
    let bindings = n
        .proxy
        .registrar
        .location
        .lookup(n.now, "bob@example.invalid");
    assert_eq!(bindings.len(), 1);
    let token = n.uas[b].1.contact_token();
    assert_eq!(
        bindings[0].contact,
        format!("sip:{token}@127.0.0.1:5064;ctok={token}")
    );
}

#[test]
fn malformed_requests_get_400_or_are_dropped() {
    let mut n = Net::new(0.0, 7);
    let from = Dest::udp("127.0.0.1:5080".parse().unwrap());
    n.proxy
        .handle_datagram(n.now, from, b"\x00\xffgarbage\r\n\r\n");
    assert!(n.proxy.poll_transmit().is_none());
    let bad = b"OPTIONS sip:example.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\nTo: <sip:example.invalid>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    n.proxy.handle_datagram(n.now, from, bad);
    let t = n.proxy.poll_transmit().unwrap();
    assert!(t.bytes.starts_with(b"SIP/2.0 400"));
}

#[test]
fn unknown_user_probes_are_throttled() {
    let mut n = Net::new(0.0, 8);
    let from = Dest::udp("127.0.0.1:5090".parse().unwrap());
    let mut answered = 0;
    for i in 0..40 {
        let req = format!(
            "OPTIONS sip:u{i}@{DOMAIN} SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKp{i}\r\nf: <sip:x@{DOMAIN}>;tag=t\r\nt: <sip:u{i}@{DOMAIN}>\r\ni: probe{i}\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
        );
        n.proxy.handle_datagram(n.now, from, req.as_bytes());
        while let Some(t) = n.proxy.poll_transmit() {
            assert!(t.bytes.starts_with(b"SIP/2.0 404"));
            answered += 1;
        }
    }
    assert_eq!(answered, 20);
}

#[test]
fn requests_over_1300_bytes_go_over_tcp() {
    let (mut n, a, b) = pair(9);
    let big = Body {
        content_type: Some("application/octet-stream".into()),
        bytes: vec![7; 2000],
    };
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: big,
        },
    );
    let t = n.uas[a].1.poll_transmit().unwrap();
    assert_eq!(t.dest.transport, Transport::Tcp);
    assert!(String::from_utf8_lossy(&t.bytes).contains("SIP/2.0/TCP"));
    n.queue.push_back((t.dest, n.uas[a].0, t.bytes));
    let small = Body {
        content_type: Some("text/plain".into()),
        bytes: b"hi".to_vec(),
    };
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: small,
        },
    );
    assert_eq!(
        n.uas[a].1.poll_transmit().unwrap().dest.transport,
        Transport::Udp
    );
    assert!(n.run_until(Duration::from_secs(30), |n| {
        n.has(
            b,
            |e| matches!(e, Event::MessageReceived { body, .. } if body.bytes.len() == 2000),
        ) && n.has(a, |e| {
            matches!(e, Event::RequestCompleted { status: 200, .. })
        })
    }));
}

#[test]
fn replayed_register_is_refused_and_changes_nothing() {
    let (mut n, a, _b) = pair(24);
    let authed = n
        .proxy_saw
        .iter()
        .rev()
        .find(|m| {
            m.starts_with(b"REGISTER") && String::from_utf8_lossy(m).contains("Authorization")
        })
        .unwrap()
        .clone();
    // Let the server transaction expire (Timer J) so the replay is new to it.
    n.run_until(Duration::from_secs(40), |_| false);
    let before = n
        .proxy
        .registrar
        .location
        .lookup(n.now, "alice@example.invalid");
    let attacker = Dest::udp("127.0.0.1:5099".parse().unwrap());
    n.proxy.handle_datagram(n.now, attacker, &authed);
    // Its nonce count was used already: challenged again (401, not stale),
    // before the registrar even looks at the Call-ID and CSeq.
    let t = n.proxy.poll_transmit().unwrap();
    assert!(
        t.bytes.starts_with(b"SIP/2.0 401"),
        "{}",
        String::from_utf8_lossy(&t.bytes)
    );
    assert!(!String::from_utf8_lossy(&t.bytes).contains("stale=true"));
    assert_eq!(
        n.proxy
            .registrar
            .location
            .lookup(n.now, "alice@example.invalid"),
        before
    );
    let _ = a;
}

#[test]
fn unreachable_proxy_times_out_registration_and_call() {
    let mut n = Net::new(1.0, 25);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    n.cmd(a, Command::Register);
    n.dial(a, CallId(1), "bob", Body::default());
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(100), |n| {
        ended(n, a).is_some() && n.has(a, |e| matches!(e, Event::RegistrationFailed { .. }))
    }));
    assert_eq!(ended(&n, a), Some(EndReason::Timeout));
    assert!(n.has(a, |e| *e == Event::RegistrationFailed { status: 408 }));
    assert_eq!(n.now - t0, Duration::from_secs(32), "Timer B/F = 64*T1");
}

#[test]
fn user_agent_answers_malformed_request_with_400() {
    let mut n = Net::new(0.0, 26);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let from = Dest::udp("127.0.0.1:5060".parse().unwrap());
    let bad = b"INVITE sip:127.0.0.1:5062 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\nf: <sip:x@example.invalid>;tag=1\r\nt: <sip:alice@example.invalid>\r\ni: q\r\nCSeq: 1 BYE\r\nl: 0\r\n\r\n";
    n.uas[a].1.handle_datagram(n.now, from, bad);
    let t = n.uas[a].1.poll_transmit().unwrap();
    assert!(t.bytes.starts_with(b"SIP/2.0 400"));
    n.uas[a].1.handle_datagram(n.now, from, &[0xff; 64]);
    assert!(n.uas[a].1.poll_transmit().is_none());
    assert!(n.uas[a].1.poll_event().is_none());
}

#[test]
fn in_dialog_requests_reach_the_right_home_behind_the_same_private_address() {
    // alice and carol live in two homes whose phones have the same private
    // address; their NATs give them different flows at the proxy.
    let mut n = Net::new(0.0, 31);
    let proxy: std::net::SocketAddr = PROXY.parse().unwrap();
    let private = "127.0.0.9:5070".to_string();
    let cfg =
        |user: &str, pw: &str| ua_config_with(user, pw, proxy, private.clone(), Transport::Udp);
    let alice = n.add_behind(
        cfg("alice", "alice-pw"),
        "127.0.0.1:40001".parse().unwrap(),
        Box::new(NoFilter),
    );
    let carol = n.add_behind(
        cfg("carol", "carol-pw"),
        "127.0.0.1:40002".parse().unwrap(),
        Box::new(NoFilter),
    );
    let bob = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    for i in [carol, alice, bob] {
        register(&mut n, i);
    }
    // The phones' Contacts differ by their tokens although their
    // addresses are the same.
    assert_ne!(
        n.uas[alice].1.contact_token(),
        n.uas[carol].1.contact_token()
    );
    let (_, b_call) = answered_call(&mut n, alice, bob);
    // bob's BYE is addressed to alice's Contact: it must reach alice.
    n.cmd(bob, Command::Hangup { call: b_call });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, alice)
            == Some(EndReason::RemoteHangup)),
        "alice {:?}\ncarol {:?}",
        n.uas[alice].2,
        n.uas[carol].2
    );
    assert!(
        n.uas[carol]
            .2
            .iter()
            .all(|e| matches!(e, Event::Registered { .. })),
        "carol saw {:?}",
        n.uas[carol].2
    );
}

#[test]
fn large_requests_go_over_the_callees_udp_flow() {
    // RFC 5626: the proxy sends over the flow the REGISTER came on. bob
    // registered over UDP, so a 2000-byte MESSAGE reaches him over UDP,
    // never over a TCP connection towards him (his NAT would refuse it).
    let (mut n, a, b) = pair(33);
    let big = Body {
        content_type: Some("application/octet-stream".into()),
        bytes: vec![7; 2000],
    };
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: big,
        },
    );
    let bob_addr = n.uas[b].0;
    let mut to_bob = Vec::new();
    for _ in 0..200 {
        n.collect();
        let Some((to, from, bytes)) = n.queue.pop_front() else {
            break;
        };
        if to.addr == bob_addr {
            to_bob.push(to.transport);
            n.uas[b].1.handle_datagram(
                n.now,
                Dest {
                    addr: from,
                    transport: to.transport,
                },
                &bytes,
            );
        } else if to.addr.to_string() == PROXY {
            let src = Dest {
                addr: from,
                transport: to.transport,
            };
            n.proxy.handle_datagram(n.now, src, &bytes);
        } else if let Some((_, ua, _)) = n.uas.iter_mut().find(|(x, _, _)| *x == to.addr) {
            let src = Dest {
                addr: from,
                transport: to.transport,
            };
            ua.handle_datagram(n.now, src, &bytes);
        }
    }
    n.collect();
    assert!(!to_bob.is_empty());
    assert!(to_bob.iter().all(|t| *t == Transport::Udp), "{to_bob:?}");
    assert!(n.has(
        b,
        |e| matches!(e, Event::MessageReceived { body, .. } if body.bytes.len() == 2000)
    ));
}
