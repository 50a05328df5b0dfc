//! The SIP side of media re-INVITEs (hold/resume), in the in-memory
//! network: with `defer_reinvite_answers`, the callee's core holds the
//! re-INVITE until the application answers it with a body (the SDP
//! answer), a second re-INVITE meanwhile gets 500 with Retry-After, and
//! the caller sees the answer body in `InDialogResponse`.

mod support;

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
