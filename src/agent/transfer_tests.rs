//! Blind transfer and call waiting, end to end in memory (three agents of
//! one domain exchanging their real datagrams), and the attacks on who may
//! transfer us: a plain REFER, an unsigned one, one outside a dialog, and
//! Refer-To values that are not a plain identity.

use super::{call, deliver, id_now, peer_config, plain_in_dialog, Peer, World, DOMAIN};
use crate::agent::filter::{SecurityLog, SecurityPolicy, TunnelFilter};
use crate::agent::{Agent, AgentCommand, AgentEvent};
use crate::sip::driver::Core;
use crate::sip::message::Message;
use crate::sip::ua::{self, UserAgent};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// An agent of `user` whose tunnel holds no keys: every message it seals
/// is unsigned (it proves nobody).
fn keyless(w: &World, user: &str, port: u16) -> Peer {
    let log = Arc::new(Mutex::new(SecurityLog::default()));
    let filter = TunnelFilter::new(w.tunnel(user, false), SecurityPolicy::Require, log.clone());
    let ua = UserAgent::new(peer_config(user, port), Box::new(filter));
    Peer {
        agent: Agent::new(ua, log.clone(), DOMAIN),
        log,
    }
}

/// What `from` sent, split as the proxy would: the messages of Call-ID
/// `cid` to `on`, the rest to `off`. Returns everything, parsed.
fn split(now: Instant, from: &mut Peer, cid: &str, on: &mut Peer, off: &mut Peer) -> Vec<Message> {
    let mut out = Vec::new();
    for b in from.sent() {
        let m = Message::parse(&b).unwrap();
        if m.call_id() == Some(cid) {
            on.feed(now, &b);
        } else {
            off.feed(now, &b);
        }
        out.push(m);
    }
    out
}

/// Final statuses among `sent` to requests of `method`.
fn statuses(sent: &[Vec<u8>], method: rsip::Method) -> Vec<u16> {
    sent.iter()
        .filter_map(|b| Message::parse(b).ok())
        .filter(|m| m.cseq().map(|(_, m)| m) == Some(method))
        .filter_map(|m| m.status())
        .filter(|s| *s >= 200)
        .collect()
}

fn placed_a_call(ev: &[AgentEvent]) -> bool {
    ev.iter().any(|e| {
        matches!(
            e,
            AgentEvent::Calling { .. } | AgentEvent::TransferRequested { .. }
        )
    })
}

/// Bob's call number (the one call he has).
fn only_call(p: &Peer) -> u64 {
    *p.agent.security.keys().next().expect("one call")
}

/// Alice calls bob, who answers and then asks to transfer her to `to`
/// (the REFER waits at bob, not delivered). Returns the call's Call-ID
/// and bob's call number; earlier events are drained.
fn call_then_transfer(now: Instant, alice: &mut Peer, bob: &mut Peer, to: &str) -> (String, u64) {
    let (_, ok) = call(now, alice, bob);
    let cid = ok.call_id().unwrap().to_string();
    alice.events();
    bob.events();
    let bcall = only_call(bob);
    bob.agent.handle_command(
        now,
        AgentCommand::Transfer {
            call: bcall,
            to: to.into(),
        },
    );
    (cid, bcall)
}

/// Bob transfers alice to carol: alice's new call is a secured call to
/// carol, verified both ways; bob sees 202, 100, 180, 200 and his call
/// ends; alice's first call ends too.
#[test]
fn a_verified_refer_transfers_the_call_to_a_new_secured_call() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let mut carol = w.agent("carol", 5074, SecurityPolicy::Require, None);
    let (cid, bcall) = call_then_transfer(now, &mut alice, &mut bob, "carol");
    let refer = deliver(now, &mut bob, &mut alice);
    assert_eq!(refer.len(), 1);
    let outer = String::from_utf8_lossy(&refer[0]).to_string();
    assert!(outer.starts_with("REFER "), "{outer}");
    assert!(
        outer.contains("application/pkcs7-mime"),
        "tunneled: {outer}"
    );
    assert!(
        !outer.contains("carol"),
        "the target is inside the tunnel: {outer}"
    );
    let ev = alice.events();
    assert!(
        ev.contains(&AgentEvent::TransferRequested {
            call: 1,
            to: format!("sip:carol@{DOMAIN}"),
            by: Some(format!("sip:bob@{DOMAIN}")),
            new_call: 2,
        }),
        "{ev:?}"
    );
    assert!(ev.contains(&AgentEvent::Calling {
        call: 2,
        to: format!("sip:carol@{DOMAIN}"),
        tunneled: true
    }));
    let sent = split(now, &mut alice, &cid, &mut bob, &mut carol);
    // Everything alice sent, to bob and to carol, is tunneled but the 100.
    for m in &sent {
        assert_eq!(
            m.header("Content-Type")
                .map(|c| c.starts_with("application/pkcs7-mime")),
            Some(true),
            "{m:?}"
        );
    }
    let ev = carol.events();
    assert!(
        ev.iter().any(|e| matches!(e, AgentEvent::IncomingCall { verified: Some(v), tunneled: true, waiting: false, .. }
            if *v == id_now("alice"))),
        "{ev:?}"
    );
    let ccall = only_call(&carol);
    deliver(now, &mut carol, &mut alice); // 180
    split(now, &mut alice, &cid, &mut bob, &mut carol); // NOTIFY 180
    carol
        .agent
        .handle_command(now, AgentCommand::Answer { call: ccall });
    deliver(now, &mut carol, &mut alice); // 200
    let ev = alice.events();
    assert!(
        ev.contains(&AgentEvent::Answered {
            call: 2,
            verified: Some(id_now("carol")),
            tunneled: true
        }),
        "{ev:?}"
    );
    // ACK to carol; NOTIFY 200 and BYE to bob.
    let sent = split(now, &mut alice, &cid, &mut bob, &mut carol);
    assert!(sent
        .iter()
        .any(|m| m.method() == Some(rsip::Method::Bye) && m.call_id() == Some(&cid)));
    let ev = bob.events();
    let progress: Vec<(u16, bool)> = ev
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TransferProgress { status, done, .. } => Some((*status, *done)),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![(202, false), (100, false), (180, false), (200, true)],
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, AgentEvent::Ended { call, .. } if *call == bcall)),
        "{ev:?}"
    );
    deliver(now, &mut bob, &mut alice);
    assert!(alice
        .events()
        .iter()
        .any(|e| matches!(e, AgentEvent::Ended { call: 1, .. })));
    // Carol's call goes on.
    assert_eq!(
        alice.agent.live.iter().copied().collect::<Vec<_>>(),
        vec![2]
    );
}

/// A REFER whose sender is not proved: in a plain call (policy
/// `allow-plain`) and in a tunneled call whose caller signed nothing. Both
/// are refused 403 and place no call.
#[test]
fn an_unproved_refer_is_refused_and_places_no_call() {
    let w = World::new();
    let now = Instant::now();
    // A plain call to bob under allow-plain.
    let mut bob = w.agent("bob", 5072, SecurityPolicy::AllowPlain, None);
    let invite = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKplain1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=ptag\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: plain-call-0123456789\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:127.0.0.1:5099>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    bob.feed(now, invite.as_bytes());
    let ev = bob.events();
    assert!(ev.iter().any(|e| matches!(
        e,
        AgentEvent::IncomingCall {
            tunneled: false,
            verified: None,
            ..
        }
    )));
    bob.sent();
    let bcall = only_call(&bob);
    bob.agent
        .handle_command(now, AgentCommand::Answer { call: bcall });
    let ok = bob
        .sent()
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .find(|m| m.status() == Some(200))
        .unwrap();
    let from = format!("<sip:alice@{DOMAIN}>");
    bob.feed(now, &plain_in_dialog("ACK", &ok, &from, "", 1));
    bob.events();
    let refer_to = format!("r: <sip:carol@{DOMAIN}>\r\n");
    bob.feed(now, &plain_in_dialog("REFER", &ok, &from, &refer_to, 2));
    assert_eq!(statuses(&bob.sent(), rsip::Method::Refer), vec![403]);
    let ev = bob.events();
    assert!(!placed_a_call(&ev), "{ev:?}");
    assert!(ev
        .iter()
        .any(|e| matches!(e, AgentEvent::Rejected { reason } if reason.contains("403"))));

    // Tunneled, in the call's session, but unsigned: the caller holds no
    // keys, so nothing proves who asked.
    let mut mallory = keyless(&w, "alice", 5070);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    call(now, &mut mallory, &mut bob);
    let ev = bob.events();
    assert!(!ev.iter().any(|e| matches!(
        e,
        AgentEvent::IncomingCall {
            verified: Some(_),
            ..
        }
    )));
    assert!(mallory
        .events()
        .iter()
        .any(|e| matches!(e, AgentEvent::Answered { .. })));
    mallory.agent.handle_command(
        now,
        AgentCommand::Transfer {
            call: 1,
            to: "carol".into(),
        },
    );
    let refer = deliver(now, &mut mallory, &mut bob);
    assert_eq!(refer.len(), 1, "the REFER went, tunneled");
    assert_eq!(statuses(&bob.sent(), rsip::Method::Refer), vec![403]);
    let ev = bob.events();
    assert!(!placed_a_call(&ev), "{ev:?}");
}

/// A REFER outside any dialog, signed by a user of the provider in a
/// session of its own: refused, no call.
#[test]
fn a_refer_outside_a_dialog_is_refused() {
    let w = World::new();
    let now = Instant::now();
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let mut mallory = w.tunnel("mallory", true);
    let inner = format!(
        "REFER sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKref1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@{DOMAIN}>;tag=mtag\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: refer-outside-0123456789\r\n\
         CSeq: 1 REFER\r\n\
         Refer-To: <sip:carol@{DOMAIN}>\r\n\
         Contact: <sip:127.0.0.1:5099>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let outer = mallory.seal(SystemTime::now(), inner.as_bytes()).unwrap();
    bob.feed(now, &outer);
    let sent = bob.sent();
    assert_eq!(sent.len(), 1);
    // The answer is sealed back to mallory: open it to read the status.
    let opened = mallory.open(SystemTime::now(), &sent[0]).unwrap();
    let answer = Message::parse(&opened.inner).unwrap();
    assert_eq!(answer.status(), Some(403));
    let ev = bob.events();
    assert!(!placed_a_call(&ev), "{ev:?}");
}

/// Refer-To values we do not act on, even from the verified peer: not a
/// SIP URI, attended transfer (embedded Replaces), another method, no
/// valid identity. Each is refused 488 and places no call; the call goes
/// on and a good one afterwards works.
#[test]
fn refer_to_must_name_an_identity_for_a_blind_transfer() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    call(now, &mut alice, &mut bob);
    alice.events();
    bob.events();
    let bcall = only_call(&bob);
    for bad in [
        "tel:+15551234".to_string(),
        format!("sip:carol@{DOMAIN}?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2"),
        format!("sip:carol@{DOMAIN};method=BYE"),
        format!("sip:{DOMAIN}"),
        format!("sip:carol%40evil.invalid@{DOMAIN}"),
        "sip:carol@".to_string(),
    ] {
        bob.agent.ua.handle_command(
            now,
            ua::Command::Refer {
                call: ua::CallId(bcall),
                refer_to: bad.clone(),
            },
        );
        deliver(now, &mut bob, &mut alice);
        let sent = alice.sent();
        assert_eq!(statuses(&sent, rsip::Method::Refer), vec![488], "{bad}");
        let ev = alice.events();
        assert!(!placed_a_call(&ev), "{bad}: {ev:?}");
        for b in &sent {
            bob.feed(now, b);
        }
    }
    // The transferor's side refuses to send such a target at all.
    bob.events();
    bob.agent.handle_command(
        now,
        AgentCommand::Transfer {
            call: bcall,
            to: "sip:carol@biloxi.invalid?Replaces=x".into(),
        },
    );
    assert!(bob.sent().is_empty());
    assert!(matches!(&bob.events()[..], [AgentEvent::Error { .. }]));
    // A good one still works.
    bob.agent.handle_command(
        now,
        AgentCommand::Transfer {
            call: bcall,
            to: format!("sip:carol@{DOMAIN};transport=udp"),
        },
    );
    deliver(now, &mut bob, &mut alice);
    assert!(alice.events().iter().any(|e| matches!(e,
        AgentEvent::TransferRequested { to, .. } if *to == format!("sip:carol@{DOMAIN}"))));
}

/// A NOTIFY that says the transfer worked ends our call only when the
/// verified peer sent it; a failed final status keeps the call and says
/// so.
#[test]
fn transfer_failure_keeps_the_call() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let mut carol = w.agent("carol", 5074, SecurityPolicy::Require, None);
    let (cid, bcall) = call_then_transfer(now, &mut alice, &mut bob, "carol");
    deliver(now, &mut bob, &mut alice);
    split(now, &mut alice, &cid, &mut bob, &mut carol);
    let ccall = only_call(&carol);
    carol.agent.handle_command(
        now,
        AgentCommand::Reject {
            call: ccall,
            status: Some(486),
        },
    );
    deliver(now, &mut carol, &mut alice);
    split(now, &mut alice, &cid, &mut bob, &mut carol);
    let ev = bob.events();
    assert!(
        ev.iter().any(|e| matches!(e,
            AgentEvent::TransferFailed { call, status: 486, .. } if *call == bcall)),
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|e| matches!(e, AgentEvent::Ended { .. })),
        "{ev:?}"
    );
    assert!(!alice
        .events()
        .iter()
        .any(|e| matches!(e, AgentEvent::Ended { call: 1, .. })));
    assert!(alice.agent.live.contains(&1) && bob.agent.live.contains(&bcall));
}

/// Call waiting: a second call while one is up rings with `waiting`; it
/// is not refused; declining it sends the status asked for.
#[test]
fn a_second_call_rings_as_waiting_and_can_be_declined() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let mut carol = w.agent("carol", 5074, SecurityPolicy::Require, None);
    call(now, &mut alice, &mut bob);
    carol
        .agent
        .handle_command(now, AgentCommand::Call { to: "bob".into() });
    deliver(now, &mut carol, &mut bob);
    let ev = bob.events();
    let Some(AgentEvent::IncomingCall {
        call,
        waiting,
        verified,
        ..
    }) = ev
        .iter()
        .find(|e| matches!(e, AgentEvent::IncomingCall { .. }))
    else {
        panic!("{ev:?}")
    };
    assert!(*waiting, "another call is up");
    assert_eq!(verified.as_deref(), Some(id_now("carol").as_str()));
    let sent = bob.sent();
    assert!(
        statuses(&sent, rsip::Method::Invite).is_empty(),
        "not refused"
    );
    bob.agent.handle_command(
        now,
        AgentCommand::Reject {
            call: *call,
            status: Some(603),
        },
    );
    assert_eq!(statuses(&bob.sent(), rsip::Method::Invite), vec![603]);
}

/// Under `allow-plain` a call the tunnel cannot carry falls back to plain
/// SIP, but never a transferred one: the peer, not the user, chose the
/// target. The transfer fails (503 in the final NOTIFY) and both calls
/// stay as they were.
#[test]
fn a_transferred_call_never_falls_back_to_plain() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::AllowPlain, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::AllowPlain, None);
    let (_, bcall) = call_then_transfer(now, &mut alice, &mut bob, "dave@elsewhere.invalid");
    deliver(now, &mut bob, &mut alice);
    let ev = alice.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, AgentEvent::TransferRequested { .. })),
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            AgentEvent::PlainFallback { .. }
                | AgentEvent::Calling {
                    tunneled: false,
                    ..
                }
        )),
        "{ev:?}"
    );
    let sent = deliver(now, &mut alice, &mut bob);
    assert!(sent
        .iter()
        .all(|b| String::from_utf8_lossy(b).contains("application/pkcs7-mime")));
    let ev = bob.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, AgentEvent::TransferFailed { status: 503, .. })),
        "{ev:?}"
    );
    assert!(alice.agent.live.contains(&1) && bob.agent.live.contains(&bcall));
}
