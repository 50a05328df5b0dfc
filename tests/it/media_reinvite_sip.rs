//! The SIP side of media re-INVITEs (hold/resume), in the in-memory
//! network: with `defer_reinvite_answers`, the callee's core holds the
//! re-INVITE until the application answers it with a body (the SDP
//! answer), a second re-INVITE meanwhile gets 500 with Retry-After, and
//! the caller sees the answer body in `InDialogResponse`.

use crate::support;

use ibephone::sip::ua::{Command, Event};
use std::time::Duration;
use support::sip_net::*;

#[test]
fn deferred_reinvite_answer_carries_the_body() {
    let (mut n, a, b) = pair(71);
    let (ac, bc) = answered_call(&mut n, a, b);
    n.uas[b].1.defer_reinvite_answers(true);
    n.cmd(
        a,
        Command::InDialog {
            call: ac,
            method: rsip::Method::Invite,
            body: body("offer-2"),
        },
    );
    assert!(n.run_until(Duration::from_secs(5), |n| n.has(b, |e| matches!(
        e,
        Event::InDialogRequest { method: rsip::Method::Invite, body, .. } if body.bytes == b"offer-2"
    ))));
    // Held: no final response reached alice yet.
    assert!(!n.has(a, |e| matches!(e, Event::InDialogResponse { .. })));
    // A second re-INVITE while the first waits: 500 (RFC 3261 14.2).
    n.cmd(
        a,
        Command::InDialog {
            call: ac,
            method: rsip::Method::Invite,
            body: body("offer-3"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(a, |e| matches!(
            e,
            Event::InDialogResponse { status: 500, .. }
        )))
    );
    n.cmd(
        b,
        Command::RespondInDialog {
            call: bc,
            status: 200,
            body: body("answer-2"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(a, |e| matches!(
            e,
            Event::InDialogResponse { call, method: rsip::Method::Invite, status: 200, body }
                if *call == ac && body.bytes == b"answer-2"
        )))
    );
    // The 2xx of the re-INVITE was ACKed too; a BYE still ends the call.
    let acks = n
        .proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"ACK "))
        .count();
    assert!(acks >= 2, "{acks} ACKs");
    n.cmd(b, Command::Hangup { call: bc });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()
            && ended(n, b).is_some())
    );
}

/// The offerer's key reveal of spec 6 rides in the ACK: once set with
/// `set_ack_reveal`, the ACK of the INVITE's 2xx and the ACK of a
/// re-INVITE's 2xx carry `Ibesip-Dh`, and the callee's core reports each
/// value (`AckReceived`, before `Answered` for the first). A caller that
/// set nothing sends an ACK without it (reported as `None`).
#[test]
fn the_ack_carries_the_key_reveal() {
    use ibephone::sip::ua::{CallId, IBESIP_DH};
    let (mut n, a, b) = pair(72);
    let call = CallId(1);
    n.dial(a, call, "bob", body("offer-1"));
    n.uas[a].1.set_ack_reveal(call, Some("first-key".into()));
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(&n, b).unwrap();
    n.answer(b, bc, body("answer-1"));
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(b, |e| matches!(e, Event::Answered { .. }))));
    let events = &n.uas[b].2;
    let ack = events
        .iter()
        .position(
            |e| matches!(e, Event::AckReceived { ibesip_dh: Some(v), .. } if v == "first-key"),
        )
        .expect("AckReceived with the reveal");
    let answered = events
        .iter()
        .position(|e| matches!(e, Event::Answered { .. }))
        .unwrap();
    assert!(ack < answered, "the reveal is known before the call is up");
    assert!(n.proxy_saw.iter().any(|m| m.starts_with(b"ACK ")
        && String::from_utf8_lossy(m).contains(&format!("{IBESIP_DH}: first-key"))));
    // A re-INVITE from alice: its ACK carries the new value.
    n.uas[b].1.defer_reinvite_answers(true);
    n.cmd(
        a,
        Command::InDialog {
            call,
            method: rsip::Method::Invite,
            body: body("offer-2"),
        },
    );
    n.uas[a].1.set_ack_reveal(call, Some("second-key".into()));
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(b, |e| matches!(
            e,
            Event::InDialogRequest {
                method: rsip::Method::Invite,
                ..
            }
        )))
    );
    n.cmd(
        b,
        Command::RespondInDialog {
            call: bc,
            status: 200,
            body: body("answer-2"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(b, |e| matches!(
            e,
            Event::AckReceived { ibesip_dh: Some(v), .. } if v == "second-key"
        )))
    );
    // bob never set a reveal: a re-INVITE of his is ACKed without one.
    n.uas[a].1.defer_reinvite_answers(true);
    n.cmd(
        b,
        Command::InDialog {
            call: bc,
            method: rsip::Method::Invite,
            body: body("offer-3"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(a, |e| matches!(
            e,
            Event::InDialogRequest {
                method: rsip::Method::Invite,
                ..
            }
        )))
    );
    n.cmd(
        a,
        Command::RespondInDialog {
            call,
            status: 200,
            body: body("answer-3"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.has(a, |e| matches!(
            e,
            Event::AckReceived {
                ibesip_dh: None,
                ..
            }
        )))
    );
}
