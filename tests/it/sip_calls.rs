//! Calls through the in-memory network: register, ring, answer, ACK, BYE,
//! CANCEL, forking, loss, the filter hook.

use crate::support;

use ibephone::sip::filter::{FilterError, MessageFilter, NoFilter, Reject};
use ibephone::sip::message::Message;
use ibephone::sip::ua::{Body, CallId, Command, EndReason, Event};
use std::time::{Duration, Instant};
use support::sip_net::*;

#[test]
fn register_call_ring_answer_ack_bye() {
    let (mut n, a, b) = pair(1);
    full_call(&mut n, a, b);
    // Outer header privacy: compact names, anonymous From, no User-Agent.
    let invite = n
        .proxy_saw
        .iter()
        .find(|m| m.starts_with(b"INVITE"))
        .unwrap();
    let text = String::from_utf8_lossy(invite);
    assert!(text.contains("\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag="));
    assert!(!text.to_ascii_lowercase().contains("user-agent"));
    let m = Message::parse(invite).unwrap();
    assert!(m.call_id().unwrap().len() >= 22, "128-bit Call-ID");
    n.cmd(a, Command::Unregister);
    assert!(n.run_until(Duration::from_secs(30), |n| n
        .has(a, |e| *e == Event::Unregistered)));
    assert!(n
        .proxy
        .registrar
        .location
        .lookup(n.now, "alice@example.invalid")
        .is_empty());
}

#[test]
fn two_devices_both_ring_one_answers_other_is_cancelled() {
    let (mut n, a, b1, b2) = alice_and_two_bobs(5);
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(
        n.run_until(Duration::from_secs(60), |n| incoming(n, b1).is_some()
            && incoming(n, b2).is_some())
    );
    let c2 = incoming(&n, b2).unwrap();
    n.answer(b2, c2, body("a"));
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(a, |e| matches!(e, Event::Answered { .. }))
            && ended(n, b1).is_some()
            && n.has(b2, |e| matches!(e, Event::Answered { .. }))
    }));
    assert_eq!(ended(&n, b1), Some(EndReason::Cancelled));
    assert!(ended(&n, b2).is_none());
}

#[test]
fn twenty_percent_loss_still_completes_the_call() {
    // 50 fixed seeds: deterministic. (Over 1000 seeds a few calls fail as
    // RFC 3261 allows: all eleven 2xx/ACK round trips of 4 lossy hops lost.)
    for seed in 100..150 {
        let (mut n, a, b) = pair_with(0.2, seed, Box::new(NoFilter), Box::new(NoFilter));
        full_call(&mut n, a, b);
    }
}

/// A stand-in for the tunnel: XORs bodies on the way out and back in, and
/// refuses incoming INVITEs without a body with 493.
struct Xor;

impl MessageFilter for Xor {
    fn outgoing(&mut self, _now: Instant, mut msg: Message) -> Result<Message, FilterError> {
        msg.body.iter_mut().for_each(|b| *b ^= 0x5a);
        Ok(msg)
    }
    fn incoming(&mut self, _now: Instant, mut msg: Message) -> Result<Message, Reject> {
        if msg.is_request() && msg.body.is_empty() && msg.method() == Some(rsip::Method::Invite) {
            return Err(Reject {
                response: Some((493, "Undecipherable".into())),
                headers: vec![],
                reason: "no body".into(),
            });
        }
        msg.body.iter_mut().for_each(|b| *b ^= 0x5a);
        Ok(msg)
    }
}

#[test]
fn filter_sees_every_message_and_can_reject_with_493() {
    let (mut n, a, b) = pair_with(0.0, 6, Box::new(Xor), Box::new(Xor));
    full_call(&mut n, a, b);
    // The proxy only ever saw transformed bodies.
    assert!(!n
        .proxy_saw
        .iter()
        .any(|m| m.windows(5).any(|w| w == b"offer")));
    n.uas[a].2.clear();
    n.uas[b].2.clear();
    n.dial(a, CallId(9), "bob", Body::default());
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(493)));
    assert!(n.has(b, |e| matches!(e, Event::Rejected { .. })));
    assert!(incoming(&n, b).is_none());
}

#[test]
fn caller_cancels_a_ringing_call() {
    let (mut n, a, b) = pair(20);
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(a, |e| matches!(e, Event::Ringing { .. }))));
    n.cmd(a, Command::Hangup { call: CallId(1) });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()
            && ended(n, b).is_some())
    );
    assert_eq!(ended(&n, a), Some(EndReason::Cancelled));
    assert_eq!(ended(&n, b), Some(EndReason::Cancelled));
    assert!(n.run_until(Duration::from_secs(1), |n| n.queue.is_empty()));
    assert_eq!(n.proxy.fork_count(), 0);
}

#[test]
fn callee_rejects_with_486() {
    let (mut n, a, b) = pair(21);
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(&n, b).unwrap();
    n.cmd(
        b,
        Command::Reject {
            call: bc,
            status: 486,
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(486)));
}

#[test]
fn in_dialog_requests_and_callee_bye() {
    let (mut n, a, b) = pair(22);
    let (ac, bc) = answered_call(&mut n, a, b);
    for m in [
        rsip::Method::Info,
        rsip::Method::Invite,
        rsip::Method::Update,
        rsip::Method::Message,
    ] {
        n.uas[a].2.clear();
        n.cmd(
            a,
            Command::InDialog {
                call: ac,
                method: m,
                body: body("x"),
            },
        );
        assert!(
            n.run_until(Duration::from_secs(60), |n| {
                n.has(a, |e| {
                    *e == Event::RequestCompleted {
                        method: m,
                        status: 200,
                    }
                })
            }),
            "{m}: {:?}",
            n.uas[a].2
        );
        assert!(n.has(
            b,
            |e| matches!(e, Event::InDialogRequest { method, .. } if *method == m)
        ));
    }
    // The re-INVITE (CSeq 3) got its 2xx ACKed.
    assert!(n
        .proxy_saw
        .iter()
        .any(|m| m.starts_with(b"ACK ") && String::from_utf8_lossy(m).contains("CSeq: 3 ACK")));
    n.cmd(b, Command::Hangup { call: bc });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()
            && ended(n, b).is_some())
    );
    assert_eq!(ended(&n, a), Some(EndReason::RemoteHangup));
    assert_eq!(ended(&n, b), Some(EndReason::LocalHangup));
}

#[test]
fn options_and_message_outside_dialogs() {
    let (mut n, a, b) = pair(23);
    n.cmd(
        a,
        Command::Options {
            target: format!("sip:bob@{DOMAIN}"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(a, |e| {
            *e == Event::RequestCompleted {
                method: rsip::Method::Options,
                status: 200,
            }
        })
    }));
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: body("hello"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(
            b,
            |e| matches!(e, Event::MessageReceived { body, .. } if body.bytes == b"hello"),
        )
    }));
}

#[test]
fn both_devices_answer_the_second_is_acked_and_hung_up() {
    let (mut n, a, b1, b2) = alice_and_two_bobs(27);
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(
        n.run_until(Duration::from_secs(60), |n| incoming(n, b1).is_some()
            && incoming(n, b2).is_some())
    );
    let (c1, c2) = (incoming(&n, b1).unwrap(), incoming(&n, b2).unwrap());
    n.answer(b1, c1, body("a1"));
    n.answer(b2, c2, body("a2"));
    assert!(n.run_until(Duration::from_secs(60), |n| {
        (ended(n, b1).is_some() || ended(n, b2).is_some()) && n.queue.is_empty()
    }));
    let answers = n.uas[a]
        .2
        .iter()
        .filter(|e| matches!(e, Event::Answered { .. }))
        .count();
    assert_eq!(answers, 1);
    let ends: Vec<_> = [b1, b2].iter().filter_map(|i| ended(&n, *i)).collect();
    assert_eq!(ends, vec![EndReason::RemoteHangup]);
    assert!(ended(&n, a).is_none());
}

#[test]
fn callee_retransmits_2xx_until_ack_then_gives_up_with_bye() {
    let (mut n, a, b) = pair(28);
    n.drop_if = Some(|m: &[u8]| m.starts_with(b"ACK "));
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(&n, b).unwrap();
    n.answer(b, bc, body("a"));
    let t0 = n.now;
    let oks_before = n
        .proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"SIP/2.0 200"))
        .count();
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, b).is_some()));
    assert_eq!(ended(&n, b), Some(EndReason::Timeout));
    assert_eq!(n.now - t0, Duration::from_secs(32), "64*T1");
    let oks = n
        .proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"SIP/2.0 200"))
        .count()
        - oks_before;
    // 1 + retransmissions at 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s (T2 cap),
    // plus the 200s of REGISTER-free exchanges (none here) and the BYE's 200.
    assert!(oks >= 10, "{oks}");
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::RemoteHangup));
}

/// The 200s to the INVITE with CSeq `cseq` that the proxy saw.
fn invite_oks(n: &Net, cseq: u32) -> usize {
    let tag = format!("CSeq: {cseq} INVITE");
    n.proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"SIP/2.0 200") && String::from_utf8_lossy(m).contains(&tag))
        .count()
}

/// Sends a re-INVITE from `a` in call `ac` (CSeq 2).
fn reinvite(n: &mut Net, a: usize, ac: CallId) {
    n.cmd(
        a,
        Command::InDialog {
            call: ac,
            method: rsip::Method::Invite,
            body: body("re"),
        },
    );
}

#[test]
fn reinvite_2xx_is_retransmitted_until_ack_then_given_up_with_bye() {
    // RFC 3261 13.3.1.4 for a re-INVITE: its ACK carries the spec 6 key
    // reveal, so a lost one must not go unnoticed.
    let (mut n, a, b) = pair(31);
    let (ac, _) = answered_call(&mut n, a, b);
    n.drop_if = Some(|m: &[u8]| {
        m.starts_with(b"ACK ") && String::from_utf8_lossy(m).contains("CSeq: 2 ACK")
    });
    let first_acks = |n: &Net| {
        n.proxy_saw
            .iter()
            .filter(|m| {
                m.starts_with(b"ACK ") && String::from_utf8_lossy(m).contains("CSeq: 1 ACK")
            })
            .count()
    };
    let before = first_acks(&n);
    reinvite(&mut n, a, ac);
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, b).is_some()));
    assert_eq!(ended(&n, b), Some(EndReason::Timeout));
    assert_eq!(n.now - t0, Duration::from_secs(32), "64*T1");
    // 1 + retransmissions at 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s (T2 cap).
    let oks = invite_oks(&n, 2);
    assert!(oks >= 10, "{oks}");
    // The caller answered every copy with the re-INVITE's ACK (CSeq 2,
    // dropped), never with the first INVITE's.
    assert_eq!(first_acks(&n), before);
    // The callee ended the dialog with BYE.
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::RemoteHangup));
}

#[test]
fn reinvite_2xx_retransmission_stops_at_the_ack() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DROPPED: AtomicBool = AtomicBool::new(false);
    let (mut n, a, b) = pair(32);
    let (ac, bc) = answered_call(&mut n, a, b);
    // Only the first ACK of the re-INVITE is lost.
    n.drop_if = Some(|m: &[u8]| {
        m.starts_with(b"ACK ")
            && String::from_utf8_lossy(m).contains("CSeq: 2 ACK")
            && !DROPPED.swap(true, Ordering::SeqCst)
    });
    n.uas[b].2.clear();
    reinvite(&mut n, a, ac);
    assert!(
        n.run_until(Duration::from_secs(60), |n| n.has(b, |e| matches!(
            e,
            Event::AckReceived { call, .. } if *call == bc
        )))
    );
    assert!(DROPPED.load(Ordering::SeqCst));
    // The 2xx went out again after T1, its ACK came back, and then the
    // retransmissions stopped: nothing more within the next minute.
    let oks = invite_oks(&n, 2);
    assert_eq!(oks, 2, "the 2xx and one retransmission");
    n.run_until(Duration::from_secs(60), |_| false);
    assert_eq!(invite_oks(&n, 2), oks);
    assert!(ended(&n, a).is_none() && ended(&n, b).is_none());
}

#[test]
fn unanswered_call_is_given_up_and_nothing_leaks() {
    let (mut n, a, b) = pair(29);
    n.dial(a, CallId(1), "bob", body("o"));
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    // Bob's device vanishes while ringing: nothing reaches it any more.
    n.drop_if = Some(|m: &[u8]| String::from_utf8_lossy(m).contains("sip:127.0.0.1:5064"));
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(400), |n| {
        ended(n, a).is_some() && n.proxy.fork_count() == 0 && n.queue.is_empty()
    }));
    // The proxy's Timer C answered 408 (reported as a timeout).
    assert_eq!(ended(&n, a), Some(EndReason::Timeout));
    assert!(n.now - t0 >= Duration::from_secs(180));
    assert_eq!(n.uas[a].1.call_count(), 0);
    // Bob's own core refuses the call it never answered.
    n.drop_if = None;
    assert!(n.run_until(Duration::from_secs(400), |n| ended(n, b).is_some()));
    assert_eq!(ended(&n, b), Some(EndReason::Timeout));
    assert_eq!(n.uas[b].1.call_count(), 0);
}
