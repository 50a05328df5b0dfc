//! Attacks on the tunnel: each is rejected with its own error and leaves
//! the receiver's state unchanged (the genuine message still opens after).

use crate::support;

use ibephone::tunnel::cms::{self, ContentKind};
use ibephone::tunnel::{OpenError, PeerIdentity, SealError, Tunnel, TunnelConfig, WireAction};
use std::time::Duration;
use support::tunnel::*;

struct Pair {
    alice: Tunnel,
    bob: Tunnel,
    call: Call,
}

fn domains() -> TwoDomains {
    TwoDomains::new("atlanta.com", "biloxi.com")
}

fn pair() -> Pair {
    let d = domains();
    Pair {
        alice: d.tunnel("sip:alice@atlanta.com", &["2026-11"]),
        bob: d.tunnel("sip:bob@biloxi.com", &["2026-11"]),
        call: Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com"),
    }
}

/// Runs INVITE / 180 / 200 / ACK; returns the pair with an established session.
fn established() -> Pair {
    let mut p = pair();
    establish(&mut p);
    p
}

/// Runs INVITE / 180 / 200 / ACK between the pair.
fn establish(p: &mut Pair) {
    let t = now();
    let o = p.alice.seal(t, &p.call.invite()).unwrap();
    p.bob.open(t, &o).unwrap();
    for inner in [p.call.ringing(), p.call.ok_invite()] {
        let o = p.bob.seal(t, &inner).unwrap();
        p.alice.open(t, &o).unwrap();
    }
    let o = p.alice.seal(t, &p.call.ack()).unwrap();
    p.bob.open(t, &o).unwrap();
}

fn body_start(outer: &[u8]) -> usize {
    outer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

fn replace(outer: &[u8], from: &str, to: &str) -> Vec<u8> {
    let start = body_start(outer);
    let head = String::from_utf8(outer[..start].to_vec())
        .unwrap()
        .replacen(from, to, 1);
    [head.as_bytes(), &outer[start..]].concat()
}

#[test]
fn every_bit_flip_in_the_body_is_rejected_without_state_change() {
    let mut p = established();
    let t = now();
    let bye = p.alice.seal(t, &p.call.bye()).unwrap();
    let start = body_start(&bye);
    for i in start..bye.len() {
        let mut bad = bye.clone();
        bad[i] ^= 0x01;
        assert!(p.bob.open(t, &bad).is_err(), "flip at {i} accepted");
    }
    // The genuine BYE still opens: no failed attempt moved the replay window.
    assert_eq!(p.bob.open(t, &bye).unwrap().inner, p.call.bye());
}

#[test]
fn bit_flips_in_a_first_message_are_rejected() {
    let mut p = pair();
    let t = now();
    let invite = p.alice.seal(t, &p.call.invite()).unwrap();
    let start = body_start(&invite);
    for i in (start..invite.len()).step_by(5) {
        let mut bad = invite.clone();
        bad[i] ^= 0x80;
        assert!(p.bob.open(t, &bad).is_err(), "flip at {i} accepted");
    }
    assert!(p.bob.open(t, &invite).is_ok());
}

#[test]
fn replays_retransmissions_and_expiry() {
    let mut p = established();
    let t = now();
    let bye = p.alice.seal(t, &p.call.bye()).unwrap();
    let first = p.bob.open(t, &bye).unwrap();
    assert!(!first.retransmission);
    // Within a transaction lifetime the same bytes are a retransmission.
    let again = p.bob.open(t + Duration::from_secs(2), &bye).unwrap();
    assert!(again.retransmission);
    assert_eq!(again.inner, first.inner);
    // Later, the same bytes are a replay.
    let later = t + Duration::from_secs(120);
    p.bob.expire(later);
    assert!(matches!(
        p.bob.open(later, &bye),
        Err(OpenError::Replay { direction: 0, .. })
    ));
}

#[test]
fn reflected_message_is_rejected() {
    let mut p = established();
    let bye = p.alice.seal(now(), &p.call.bye()).unwrap();
    assert_eq!(p.alice.open(now(), &bye), Err(OpenError::Reflected));
}

#[test]
fn outer_header_changes_break_the_binding() {
    let mut p = established();
    let t = now();
    let bye = p.alice.seal(t, &p.call.bye()).unwrap();
    for (from, to) in [
        (CALL_ID, "b84b4c76e66710Qm9v7wXyzA"),
        ("CSeq: 314161 BYE", "CSeq: 314162 BYE"),
        ("tag=1928301774", "tag=1928301775"),
        ("tag=a6c85cf", "tag=a6c85cg"),
    ] {
        let bad = replace(&bye, from, to);
        assert_eq!(p.bob.open(t, &bad), Err(OpenError::OuterBinding), "{from}");
    }
    // The To AOR is not in the binding; the agreement check catches it.
    let bad = replace(&bye, "t: <sip:bob@biloxi.com>", "t: <sip:carol@biloxi.com>");
    assert_eq!(p.bob.open(t, &bad), Err(OpenError::Mismatch("To AOR")));
    // A proxy may rewrite the Request-URI.
    let routed = replace(
        &bye,
        "BYE sip:bob@127.0.0.1:5080",
        "BYE sip:bob@127.0.0.2:5080",
    );
    assert!(p.bob.open(t, &routed).is_ok());
}

#[test]
fn message_spliced_from_another_session_is_rejected() {
    let mut p = established();
    let t = now();
    // A second call between the same users, with its own session.
    let mut other = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    other.call_id = "c3BsaWNlZHNwbGljZWRzcGw".into();
    other.caller_tag = "77".into();
    let o = p.alice.seal(t, &other.invite()).unwrap();
    p.bob.open(t, &o).unwrap();
    let o = p.bob.seal(t, &other.ok_invite()).unwrap();
    p.alice.open(t, &o).unwrap();
    // The second call's BYE body under the first call's outer headers.
    let genuine = p.alice.seal(t, &p.call.bye()).unwrap();
    let foreign = p.alice.seal(t, &other.bye()).unwrap();
    let spliced = fix_length(
        &[
            &genuine[..body_start(&genuine)],
            &foreign[body_start(&foreign)..],
        ]
        .concat(),
    );
    assert_eq!(p.bob.open(t, &spliced), Err(OpenError::OuterBinding));
    // Both genuine messages still open.
    assert!(p.bob.open(t, &genuine).is_ok());
    assert!(p.bob.open(t, &foreign).is_ok());
}

/// Rewrites `l:` to the real body length.
fn fix_length(outer: &[u8]) -> Vec<u8> {
    let start = body_start(outer);
    let head = String::from_utf8(outer[..start].to_vec()).unwrap();
    let body_len = outer.len() - start;
    let head: String = head
        .split("\r\n")
        .map(|l| {
            if l.starts_with("l: ") {
                format!("l: {body_len}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    [head.as_bytes(), &outer[start..]].concat()
}

#[test]
fn forged_bye_from_a_third_party_is_rejected() {
    let mut p = established();
    let t = now();
    // Mallory knows Call-ID and tags (they are on the wire) and the session
    // id (kekri keyIdentifier), but not the KEK: she swaps in her own key wrap.
    let genuine = p.alice.seal(t, &p.call.bye()).unwrap();
    let kek_wrap_at = genuine.windows(2).position(|w| w == [0x04, 0x28]).unwrap() + 2;
    let mut forged = genuine.clone();
    for b in &mut forged[kek_wrap_at..kek_wrap_at + 40] {
        *b = 0x5a;
    }
    assert_eq!(p.bob.open(t, &forged), Err(OpenError::KeyUnwrap));
    // A plain BYE is not tunneled at all.
    assert_eq!(p.bob.open(t, &p.call.bye()), Err(OpenError::NotTunneled));
    assert_eq!(
        OpenError::NotTunneled.wire_action(Some("BYE")),
        WireAction::Respond415
    );
    assert_eq!(
        OpenError::KeyUnwrap.wire_action(Some("BYE")),
        WireAction::Respond493
    );
    assert_eq!(
        OpenError::KeyUnwrap.wire_action(Some("ACK")),
        WireAction::Drop
    );
    assert_eq!(
        OpenError::Reflected.wire_action(Some("BYE")),
        WireAction::Drop
    );
    // Mallory with a session of her own cannot reach alice's dialog.
    let d = domains();
    let mut mallory = d.tunnel("sip:mallory@atlanta.com", &["2026-11"]);
    assert!(mallory.seal(t, &p.call.bye()).is_err());
    // The call is still up: the genuine BYE opens.
    assert!(p.bob.open(t, &genuine).is_ok());
}

#[test]
fn signature_of_another_identity_is_rejected() {
    let d = domains();
    // Mallory holds genuine keys of her own and claims to be alice.
    let mut mallory = d.tunnel("sip:mallory@atlanta.com", &["2026-11"]);
    let mut bob = d.tunnel("sip:bob@biloxi.com", &["2026-11"]);
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    let o = mallory.seal(now(), &call.invite()).unwrap();
    assert!(matches!(
        bob.open(now(), &o),
        Err(OpenError::SignerMismatch { .. })
    ));
    // Nothing was remembered: alice's real INVITE with the same Call-ID opens.
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let o = alice.seal(now(), &call.invite()).unwrap();
    assert!(bob.open(now(), &o).is_ok());
}

#[test]
fn key_periods_that_are_too_old_are_rejected() {
    let d = domains();
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    // Bob still holds September keys, but September is neither current nor previous.
    let mut bob = d.tunnel("sip:bob@biloxi.com", &["2026-09", "2026-10", "2026-11"]);
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-09"]);
    let september = now() - Duration::from_secs(70 * 86_400);
    let o = alice.seal(september, &call.invite()).unwrap();
    assert_eq!(bob.open(now(), &o), Err(OpenError::NoKeyForPeriod));
    // Encrypted to October (previous, accepted) but signed with a September key.
    let oct31 = ibephone::ibe::Period::month("2026-10").unwrap();
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-09"]);
    let late_october = std::time::UNIX_EPOCH + Duration::from_secs(1_793_491_200 - 60); // 2026-10-31T23:59Z
    assert_eq!(ibephone::ibe::Period::month_at(1_793_491_200 - 60), oct31);
    let o = alice.seal(late_october, &call.invite()).unwrap();
    let nov1 = std::time::UNIX_EPOCH + Duration::from_secs(1_793_491_200 + 30);
    assert_eq!(
        bob.open(nov1, &o),
        Err(OpenError::SignerPeriod("2026-09".into()))
    );
}

#[test]
fn stale_first_messages_are_rejected() {
    let d = domains();
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    let config = TunnelConfig {
        session_idle: Duration::from_secs(30),
        ..TunnelConfig::default()
    };
    let mut bob = d.tunnel_with("sip:bob@biloxi.com", &["2026-11"], config);
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let t = now();
    let o = alice.seal(t, &call.invite()).unwrap();
    bob.open(t, &o).unwrap();
    // The session expires; the same INVITE replayed within 600 s reuses its id.
    let t1 = t + Duration::from_secs(100);
    bob.expire(t1);
    assert_eq!(bob.session_count(), 0);
    assert_eq!(bob.open(t1, &o), Err(OpenError::SessionIdReused));
    // After the id memory, the signing time gives it away.
    let t2 = t + Duration::from_secs(700);
    bob.expire(t2);
    assert_eq!(bob.open(t2, &o), Err(OpenError::Stale(700)));
    // A message signed 10 minutes in the future is refused too.
    let o = alice
        .seal(t + Duration::from_secs(600), &call.invite())
        .unwrap();
    assert!(matches!(bob.open(t, &o), Err(OpenError::Stale(_))));
}

#[test]
fn forked_invite_keeps_replay_state_per_branch() {
    let d = domains();
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let mut desk = d.tunnel("sip:bob@biloxi.com", &["2026-11"]);
    let mut mobile = d.tunnel("sip:bob@biloxi.com", &["2026-11"]);
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    let t = now();
    let invite = alice.seal(t, &call.invite()).unwrap();
    // The proxy forks: both devices open the same INVITE (Request-URI rewritten).
    let to_desk = replace(
        &invite,
        "INVITE sip:bob@biloxi.com",
        "INVITE sip:bob@127.0.0.1:5080",
    );
    let to_mobile = replace(
        &invite,
        "INVITE sip:bob@biloxi.com",
        "INVITE sip:bob@127.0.0.1:5090",
    );
    desk.open(t, &to_desk).unwrap();
    mobile.open(t, &to_mobile).unwrap();
    // Each answers with its own tag; both start at seq 0 and both open.
    for (device, tag) in [(&mut desk, "desk1"), (&mut mobile, "mob1")] {
        let r = device.seal(t, &call.ringing_from(tag)).unwrap();
        let opened = alice.open(t, &r).unwrap();
        assert_eq!(opened.seq, 0);
        assert!(matches!(
            opened.peer,
            ibephone::tunnel::PeerIdentity::Verified(_)
        ));
        let ok = device.seal(t, &call.ok_invite_from(tag)).unwrap();
        assert_eq!(alice.open(t, &ok).unwrap().seq, 1);
    }
}

#[test]
fn error_responses_carry_only_routing_headers() {
    let mut p = pair();
    let o = p.alice.seal(now(), &p.call.invite()).unwrap();
    let r493 = ibephone::tunnel::error_response(&o, 493).unwrap();
    let text = String::from_utf8(r493).unwrap();
    assert!(text.starts_with("SIP/2.0 493 Undecipherable\r\n"));
    assert!(text.contains("f: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1928301774"));
    assert!(text.contains(";tag="));
    let r415 = String::from_utf8(ibephone::tunnel::error_response(&p.call.invite(), 415).unwrap())
        .unwrap();
    assert!(r415.contains("Accept: application/sdp"));
    assert!(ibephone::tunnel::error_response(&p.call.ack(), 493).is_none());
    let _ = &mut p.bob;
}

// ---- Issue 12: tunnel-session holes -------------------------------------

/// A third party that holds no key, only the providers' parameters.
fn keyless() -> Tunnel {
    domains().tunnel("sip:eve@atlanta.com", &[])
}

/// The call of `p` seen from the callee's side with the roles of the tags
/// swapped: bob's tag where alice's belongs and the other way round.
fn swapped(call: &Call) -> Call {
    let mut s = Call::new(&call.caller, &call.callee);
    s.caller_tag = call.callee_tag.clone();
    s.callee_tag = call.caller_tag.clone();
    s
}

/// The call stays alice's: her BYE opens at bob in her session (after
/// which bob holds `sessions` sessions), bob's own BYE is sealed under her
/// session and opens at alice, showing bob verified.
fn call_is_intact(p: &mut Pair, session_id: [u8; 16], sessions: usize) {
    call_is_intact_at(p, now(), session_id, sessions)
}

/// [`call_is_intact`] at time `t`.
fn call_is_intact_at(
    p: &mut Pair,
    t: std::time::SystemTime,
    session_id: [u8; 16],
    sessions: usize,
) {
    let bye = p.alice.seal(t, &p.call.bye()).unwrap();
    let opened = p.bob.open(t, &bye).unwrap();
    assert_eq!(opened.session_id, session_id);
    assert_eq!(opened.inner, p.call.bye());
    assert_eq!(p.bob.session_count(), sessions);
    let bobs = p.bob.seal(t, &p.call.callee_bye()).unwrap();
    let opened = p.alice.open(t, &bobs).unwrap();
    assert_eq!(opened.session_id, session_id);
    assert_eq!(
        opened.peer,
        PeerIdentity::Verified(identity("sip:bob@biloxi.com"))
    );
}

fn session_of(p: &mut Pair) -> [u8; 16] {
    // A re-INVITE names the session the dialog uses.
    let t = now();
    let o = p.alice.seal(t, &p.call.reinvite()).unwrap();
    p.bob.open(t, &o).unwrap().session_id
}

#[test]
fn keyless_third_party_cannot_take_over_a_dialog() {
    let mut p = established();
    let sid = session_of(&mut p);
    let t = now();
    let mut eve = keyless();
    // Eve copies Call-ID and alice's tag from the clear outer headers and
    // BF-encrypts her own first message to bob (public parameters only).
    let forged = eve.seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &forged), Err(OpenError::DialogCollision));
    assert_eq!(
        OpenError::DialogCollision.wire_action(Some("INVITE")),
        WireAction::Drop
    );
    // Her later messages in "her" session reach nothing.
    let bye = eve.seal(t, &p.call.bye()).unwrap();
    assert_eq!(p.bob.open(t, &bye), Err(OpenError::UnknownSession));
    // Tags swapped: her first message claims bob's tag as the caller's.
    let sw = swapped(&p.call);
    let forged = keyless().seal(t, &sw.invite()).unwrap();
    assert_eq!(p.bob.open(t, &forged), Err(OpenError::DialogCollision));
    // The same against alice, the caller: a first message "from bob" on
    // her dialog's Call-ID, with either tag as the caller's.
    for (caller_tag, callee_tag) in [
        (p.call.callee_tag.clone(), p.call.caller_tag.clone()),
        (p.call.caller_tag.clone(), p.call.callee_tag.clone()),
    ] {
        let mut reverse = Call::new("sip:bob@biloxi.com", "sip:alice@atlanta.com");
        reverse.caller_tag = caller_tag;
        reverse.callee_tag = callee_tag;
        let forged = keyless().seal(t, &reverse.invite()).unwrap();
        assert_eq!(p.alice.open(t, &forged), Err(OpenError::DialogCollision));
    }
    assert_eq!(p.alice.session_count(), 1);
    call_is_intact(&mut p, sid, 1);
}

#[test]
fn first_message_on_a_ringing_call_is_refused_too() {
    // Before the dialog is established: alice's INVITE is pending at bob.
    let mut p = pair();
    let t = now();
    let invite = p.alice.seal(t, &p.call.invite()).unwrap();
    let sid = p.bob.open(t, &invite).unwrap().session_id;
    let forged = keyless().seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &forged), Err(OpenError::DialogCollision));
    // Mallory, with valid keys of her own, fares no better.
    let mut as_mallory = Call::new("sip:mallory@atlanta.com", "sip:bob@biloxi.com");
    as_mallory.caller_tag = p.call.caller_tag.clone();
    let mut mallory = domains().tunnel("sip:mallory@atlanta.com", &["2026-11"]);
    let forged = mallory.seal(t, &as_mallory.invite()).unwrap();
    assert_eq!(p.bob.open(t, &forged), Err(OpenError::DialogCollision));
    // Bob answers in alice's session; alice sees bob verified.
    for inner in [p.call.ringing(), p.call.ok_invite()] {
        let o = p.bob.seal(t, &inner).unwrap();
        let opened = p.alice.open(t, &o).unwrap();
        assert_eq!(opened.session_id, sid);
    }
    let o = p.alice.seal(t, &p.call.ack()).unwrap();
    assert_eq!(p.bob.open(t, &o).unwrap().session_id, sid);
    call_is_intact(&mut p, sid, 1);
}

#[test]
fn dialog_tags_must_sit_in_their_roles() {
    let mut p = established();
    let t = now();
    let sid = session_of(&mut p);
    // A request of alice with the tags in each other's roles (bob's tag
    // as From) finds no session to be sealed in: only exact roles match.
    let sw = swapped(&p.call);
    assert!(matches!(
        p.alice.seal(t, &sw.bye()),
        Err(SealError::NoSession)
    ));
    // Bob's own requests and responses pick alice's session, by role.
    let ok = p.bob.seal(t, &p.call.ok_bye()).unwrap();
    assert_eq!(p.alice.open(t, &ok).unwrap().session_id, sid);
    // A request from a device of bob that never answered (a new To tag
    // not opened by a response to the INVITE) is not in the dialog.
    let mut other_device = Call::new(&p.call.caller, &p.call.callee);
    other_device.callee_tag = "0therdev1ce".into();
    let d = domains();
    let mut desk = d.tunnel("sip:bob@biloxi.com", &["2026-11"]);
    let mut alice2 = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let invite = alice2.seal(t, &p.call.invite()).unwrap();
    desk.open(t, &invite).unwrap();
    let stray = desk.seal(t, &other_device.callee_bye()).unwrap();
    assert_eq!(alice2.open(t, &stray), Err(OpenError::WrongDialog));
    // Its answer to the INVITE opens the branch; then its BYE opens too.
    let ok = desk.seal(t, &other_device.ok_invite()).unwrap();
    alice2.open(t, &ok).unwrap();
    let bye = desk.seal(t, &other_device.callee_bye()).unwrap();
    assert!(alice2.open(t, &bye).is_ok());
}

/// A pair whose bob runs with `config`, call established.
fn established_with(config: TunnelConfig) -> Pair {
    let d = domains();
    let mut p = Pair {
        alice: d.tunnel("sip:alice@atlanta.com", &["2026-11"]),
        bob: d.tunnel_with("sip:bob@biloxi.com", &["2026-11"], config),
        call: Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com"),
    };
    establish(&mut p);
    p
}

/// A call from `caller` to bob on its own Call-ID (number `i` of `kind`).
fn call_no(caller: &str, kind: &str, i: usize) -> Call {
    let mut c = Call::new(caller, "sip:bob@biloxi.com");
    c.call_id = format!("{kind:x<16}{i:08}");
    c
}

#[test]
fn flood_of_first_messages_cannot_evict_a_live_call() {
    let mut p = established_with(TunnelConfig {
        max_sessions: 6,
        max_pending: 4,
        max_pending_per_peer: 2,
        ..TunnelConfig::default()
    });
    let sid = session_of(&mut p);
    // A second later, so that alice's call is the least recently used.
    let t = now() + Duration::from_secs(1);
    // Eve floods bob with unsigned first messages, each on its own Call-ID:
    // every one opens, but unsigned newcomers only displace each other.
    let mut eve = keyless();
    for i in 0..40 {
        let o = eve
            .seal(t, &call_no("sip:alice@atlanta.com", "eve", i).invite())
            .unwrap();
        assert_eq!(p.bob.open(t, &o).unwrap().peer, PeerIdentity::Unverified);
    }
    assert_eq!(p.bob.pending_session_count(), 2);
    // Mallory floods with signed ones of her own: the same cap per peer.
    let d = domains();
    let mut mallory = d.tunnel("sip:mallory@atlanta.com", &["2026-11"]);
    for i in 0..20 {
        let o = mallory
            .seal(
                t,
                &call_no("sip:mallory@atlanta.com", "mallory", i).invite(),
            )
            .unwrap();
        p.bob.open(t, &o).unwrap();
    }
    assert_eq!(p.bob.pending_session_count(), 4);
    assert_eq!(p.bob.session_count(), 5);
    // A genuine new call still gets in (the oldest pending one makes room)
    // and bob answers it.
    let mut carol = d.tunnel("sip:carol@biloxi.com", &["2026-11"]);
    let c = call_no("sip:carol@biloxi.com", "carol", 0);
    let o = carol.seal(t, &c.invite()).unwrap();
    assert!(matches!(
        p.bob.open(t, &o).unwrap().peer,
        PeerIdentity::Verified(_)
    ));
    let o = p.bob.seal(t, &c.ringing()).unwrap();
    carol.open(t, &o).unwrap();
    assert_eq!(p.bob.pending_session_count(), 3);
    call_is_intact_at(&mut p, t, sid, 5);
}

#[test]
fn full_table_of_live_calls_refuses_newcomers() {
    let mut p = established_with(TunnelConfig {
        max_sessions: 3,
        ..TunnelConfig::default()
    });
    let sid = session_of(&mut p);
    let t = now() + Duration::from_secs(1);
    // Two more calls that bob answers: the table holds three live calls.
    let mut eve = keyless();
    for i in 0..2 {
        let c = call_no("sip:alice@atlanta.com", "answered", i);
        let o = eve.seal(t, &c.invite()).unwrap();
        p.bob.open(t, &o).unwrap();
        let o = p.bob.seal(t, &c.ringing()).unwrap();
        eve.open(t, &o).unwrap();
    }
    assert_eq!(
        (p.bob.session_count(), p.bob.pending_session_count()),
        (3, 0)
    );
    // A newcomer is refused; no live call is evicted for it.
    let o = eve
        .seal(t, &call_no("sip:alice@atlanta.com", "late", 0).invite())
        .unwrap();
    assert_eq!(p.bob.open(t, &o), Err(OpenError::TableFull));
    // Answered 503 with Retry-After when a response is allowed.
    assert_eq!(
        OpenError::TableFull.wire_action(Some("INVITE")),
        WireAction::Respond503
    );
    assert_eq!(
        OpenError::TableFull.wire_action(Some("ACK")),
        WireAction::Drop
    );
    assert_eq!(OpenError::TableFull.wire_action(None), WireAction::Drop);
    let busy = String::from_utf8(ibephone::tunnel::error_response(&o, 503).unwrap()).unwrap();
    assert!(
        busy.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{busy}"
    );
    assert!(busy.contains("\r\nRetry-After: 60\r\n"), "{busy}");
    // Bob's own new call is refused as well, by a typed error.
    let mut out = Call::new("sip:bob@biloxi.com", "sip:alice@atlanta.com");
    out.call_id = "b3V0Z29pbmdvdXRnb2luZ291".into();
    assert_eq!(p.bob.seal(t, &out.invite()), Err(SealError::TableFull));
    call_is_intact_at(&mut p, t, sid, 3);
}

#[test]
fn full_session_id_memory_refuses_rather_than_forgets() {
    let mut p = established_with(TunnelConfig {
        max_session_ids: 3,
        transaction_idle: Duration::from_secs(30),
        ..TunnelConfig::default()
    });
    let sid = session_of(&mut p);
    let t = now();
    let mut eve = keyless();
    let mut accepted = Vec::new();
    for i in 0..2 {
        let o = eve
            .seal(t, &call_no("sip:alice@atlanta.com", "mem", i).invite())
            .unwrap();
        p.bob.open(t, &o).unwrap();
        accepted.push(o);
    }
    // Three ids remembered (alice's and eve's two): the next is refused.
    let o = eve
        .seal(t, &call_no("sip:alice@atlanta.com", "mem", 2).invite())
        .unwrap();
    assert_eq!(p.bob.open(t, &o), Err(OpenError::SessionIdMemoryFull));
    assert_eq!(
        OpenError::SessionIdMemoryFull.wire_action(Some("MESSAGE")),
        WireAction::Respond503
    );
    // Eve's pending sessions expire by themselves (no call to `expire`);
    // their ids stay remembered: a replay is still recognised.
    let later = t + Duration::from_secs(100);
    let o = eve
        .seal(later, &call_no("sip:alice@atlanta.com", "mem", 3).invite())
        .unwrap();
    assert_eq!(p.bob.open(later, &o), Err(OpenError::SessionIdMemoryFull));
    assert_eq!(p.bob.session_count(), 1);
    assert_eq!(
        p.bob.open(later, &accepted[0]),
        Err(OpenError::SessionIdReused)
    );
    // After the id memory (600 s) there is room again.
    let much_later = t + Duration::from_secs(700);
    let o = eve
        .seal(
            much_later,
            &call_no("sip:alice@atlanta.com", "mem", 4).invite(),
        )
        .unwrap();
    assert!(p.bob.open(much_later, &o).is_ok());
    call_is_intact_at(&mut p, much_later, sid, 2);
}

#[test]
fn idle_sessions_expire_without_anyone_calling_expire() {
    let mut p = established_with(TunnelConfig {
        transaction_idle: Duration::from_secs(30),
        ..TunnelConfig::default()
    });
    let sid = session_of(&mut p);
    let t = now();
    let mut eve = keyless();
    for i in 0..5 {
        let o = eve
            .seal(t, &call_no("sip:alice@atlanta.com", "idle", i).invite())
            .unwrap();
        p.bob.open(t, &o).unwrap();
    }
    assert_eq!(p.bob.session_count(), 6);
    // A minute later the next message bob handles sweeps the pending ones.
    call_is_intact_at(&mut p, t + Duration::from_secs(60), sid, 1);
}

#[test]
fn signed_first_messages_rewrapped_for_someone_else_are_refused() {
    let d = domains();
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let mut carol = d.tunnel("sip:carol@biloxi.com", &["2026-11"]);
    let carol_id = identity("sip:carol@biloxi.com");
    let mallory_keys = keys_of(&d.a.0, "sip:mallory@atlanta.com");
    let to_mallory = Call::new("sip:alice@atlanta.com", "sip:mallory@atlanta.com");
    let t = now();
    // Alice signs an INVITE and a MESSAGE for mallory; mallory opens each
    // and wraps alice's SignedData, unchanged, into a first message for
    // carol within the 300 s of freshness.
    for (inner, start) in [
        (to_mallory.invite(), "INVITE sip:carol@biloxi.com SIP/2.0"),
        (
            to_mallory.message("cmV3cmFwcmV3cmFwcmV3cmFw", "meet me at noon"),
            "MESSAGE sip:carol@biloxi.com SIP/2.0",
        ),
    ] {
        let outer = alice.seal(t, &inner).unwrap();
        let (kind, content) = open_first_by_hand(&mallory_keys, &outer);
        assert_eq!(kind, ContentKind::SignedData);
        let head = outer_head(&outer, start);
        let rewrapped = first_message_by_hand(&d.b.1, &carol_id, kind, &content, &head, [0x33; 16]);
        let later = t + Duration::from_secs(60);
        assert_eq!(
            carol.open(later, &rewrapped),
            Err(OpenError::NotForUs("To"))
        );
        assert_eq!(
            OpenError::NotForUs("To").wire_action(Some("INVITE")),
            WireAction::Drop
        );
        assert_eq!(carol.session_count(), 0);
    }
    // The same re-wrapping of a message that was meant for carol opens and
    // shows alice verified: the refusal above is the recipient check.
    let to_carol = Call::new("sip:alice@atlanta.com", "sip:carol@biloxi.com");
    let outer = alice.seal(t, &to_carol.invite()).unwrap();
    let (kind, content) = open_first_by_hand(&keys_of(&d.b.0, "sip:carol@biloxi.com"), &outer);
    let head = outer_head(&outer, "INVITE sip:carol@biloxi.com SIP/2.0");
    let rewrapped = first_message_by_hand(&d.b.1, &carol_id, kind, &content, &head, [0x34; 16]);
    let opened = carol.open(t, &rewrapped).unwrap();
    assert_eq!(
        opened.peer,
        PeerIdentity::Verified(identity("sip:alice@atlanta.com"))
    );
}

#[test]
fn accepted_body_spliced_under_another_transaction_is_refused() {
    let mut p = established();
    let t = now();
    let bye = p.alice.seal(t, &p.call.bye()).unwrap();
    p.bob.open(t, &bye).unwrap();
    let soon = t + Duration::from_secs(1);
    // Within the retransmission window, the accepted body under another
    // start line, Call-ID, CSeq or To.
    for (from, to, err) in [
        ("BYE sip:", "INFO sip:", OpenError::OuterBinding),
        (CALL_ID, "b84b4c76e66710Qm9v7wXyzA", OpenError::OuterBinding),
        (
            "CSeq: 314161 BYE",
            "CSeq: 314162 BYE",
            OpenError::OuterBinding,
        ),
        (
            "t: <sip:bob@biloxi.com>",
            "t: <sip:carol@biloxi.com>",
            OpenError::Mismatch("To AOR"),
        ),
    ] {
        assert_eq!(p.bob.open(soon, &replace(&bye, from, to)), Err(err), "{to}");
    }
    // Another transaction (top Via branch) with the same body is a replay.
    let other = replace(&bye, "branch=z9hG4bKbyebye1", "branch=z9hG4bKbyebye2");
    assert!(matches!(
        p.bob.open(soon, &other),
        Err(OpenError::Replay { direction: 0, .. })
    ));
    // The genuine retransmission is still answered as one.
    assert!(p.bob.open(soon, &bye).unwrap().retransmission);
    // A response body under another status code.
    let ok = p.bob.seal(t, &p.call.ok_bye()).unwrap();
    p.alice.open(t, &ok).unwrap();
    let busy = replace(&ok, "SIP/2.0 200 OK", "SIP/2.0 486 Busy Here");
    assert_eq!(
        p.alice.open(soon, &busy),
        Err(OpenError::Mismatch("start line"))
    );
    assert!(p.alice.open(soon, &ok).unwrap().retransmission);
}

#[test]
fn unsigned_first_message_never_inherits_a_verified_identity() {
    let d = domains();
    let config = TunnelConfig {
        session_idle: Duration::from_secs(30),
        ..TunnelConfig::default()
    };
    let mut p = Pair {
        alice: d.tunnel("sip:alice@atlanta.com", &["2026-11"]),
        bob: d.tunnel_with("sip:bob@biloxi.com", &["2026-11"], config),
        call: Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com"),
    };
    establish(&mut p);
    let t = now();
    // While alice's verified call lives, an unsigned first message on its
    // Call-ID and From is refused.
    let o = keyless().seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &o), Err(OpenError::DialogCollision));
    // Once it ended, the same message opens as a session of its own, and
    // nothing of the earlier call's identity carries over.
    let later = t + Duration::from_secs(100);
    let o = keyless().seal(later, &p.call.invite()).unwrap();
    let opened = p.bob.open(later, &o).unwrap();
    assert!(opened.first_message);
    assert_eq!(opened.peer, PeerIdentity::Unverified);
    assert_eq!(p.bob.session_count(), 1);
}

/// The content kind of a sealed outer message (signed or not).
fn content_kind(outer: &[u8]) -> ContentKind {
    cms::decode_envelope(&outer[body_start(outer)..])
        .unwrap()
        .attrs
        .content
}

#[test]
fn lost_signed_180_leaves_the_callee_verified_by_the_200() {
    // Over UDP nothing retransmits a 180: the callee signs every response
    // to the first request other than 100, so the 200 proves it as well.
    let mut p = pair();
    let t = now();
    let o = p.alice.seal(t, &p.call.invite()).unwrap();
    let sid = p.bob.open(t, &o).unwrap().session_id;
    let ringing = p.bob.seal(t, &p.call.ringing()).unwrap();
    assert_eq!(content_kind(&ringing), ContentKind::SignedData);
    // The 180 is lost; the 200 arrives.
    let ok = p.bob.seal(t, &p.call.ok_invite()).unwrap();
    assert_eq!(content_kind(&ok), ContentKind::SignedData);
    let opened = p.alice.open(t, &ok).unwrap();
    assert_eq!(opened.session_id, sid);
    assert_eq!(
        opened.peer,
        PeerIdentity::Verified(identity("sip:bob@biloxi.com"))
    );
    // Had the 180 arrived after all (late), its signature names the same
    // identity and opens.
    let late = p.alice.open(t, &ringing).unwrap();
    assert_eq!(
        late.peer,
        PeerIdentity::Verified(identity("sip:bob@biloxi.com"))
    );
    // Responses to later requests are not signed.
    let o = p.alice.seal(t, &p.call.ack()).unwrap();
    p.bob.open(t, &o).unwrap();
    let o = p.alice.seal(t, &p.call.reinvite()).unwrap();
    p.bob.open(t, &o).unwrap();
    let ok_re = p.bob.seal(t, &p.call.ok_reinvite()).unwrap();
    assert_eq!(content_kind(&ok_re), ContentKind::Data);
    let opened = p.alice.open(t, &ok_re).unwrap();
    assert_eq!(
        opened.peer,
        PeerIdentity::Verified(identity("sip:bob@biloxi.com"))
    );
}

#[test]
fn a_racing_unsigned_first_message_cannot_block_the_signed_one() {
    // Eve (no keys) reads Call-ID and alice's tag off the wire and gets her
    // unsigned INVITE to bob before alice's signed one.
    let mut p = pair();
    let t = now();
    let mut eve = keyless();
    let raced = eve.seal(t, &p.call.invite()).unwrap();
    let opened = p.bob.open(t, &raced).unwrap();
    assert_eq!(opened.peer, PeerIdentity::Unverified);
    let eves = opened.session_id;
    // Bob's phone rings for it (180 in eve's session), unanswered.
    let o = p.bob.seal(t, &p.call.ringing()).unwrap();
    eve.open(t, &o).unwrap();
    // Alice's signed INVITE wins: it opens, verified, and eve's session is
    // gone.
    let invite = p.alice.seal(t, &p.call.invite()).unwrap();
    let opened = p.bob.open(t, &invite).unwrap();
    assert_eq!(
        opened.peer,
        PeerIdentity::Verified(identity("sip:alice@atlanta.com"))
    );
    assert_eq!(opened.superseded, vec![eves]);
    let sid = opened.session_id;
    // Its retransmission is answered again and supersedes nothing more.
    let again = p.bob.open(t, &invite).unwrap();
    assert!(again.retransmission && again.superseded.is_empty());
    assert_eq!(p.bob.session_count(), 1);
    // Eve's session reaches nothing any more; her first message replayed
    // is a replay; a new unsigned one collides with alice's call.
    let bye = eve.seal(t, &p.call.bye()).unwrap();
    assert_eq!(p.bob.open(t, &bye), Err(OpenError::UnknownSession));
    assert_eq!(p.bob.open(t, &raced), Err(OpenError::SessionIdReused));
    let again = keyless().seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &again), Err(OpenError::DialogCollision));
    // Alice's call proceeds in her own session.
    for inner in [p.call.ringing(), p.call.ok_invite()] {
        let o = p.bob.seal(t, &inner).unwrap();
        assert_eq!(p.alice.open(t, &o).unwrap().session_id, sid);
    }
    let o = p.alice.seal(t, &p.call.ack()).unwrap();
    assert_eq!(p.bob.open(t, &o).unwrap().session_id, sid);
    call_is_intact(&mut p, sid, 1);
}

#[test]
fn what_proved_something_or_holds_a_dialog_is_never_superseded() {
    let t = now();
    // An unsigned call bob answered with a 2xx is a dialog: alice's signed
    // INVITE on its Call-ID collides, and the unsigned call stays.
    let mut p = pair();
    let mut eve = keyless();
    let o = eve.seal(t, &p.call.invite()).unwrap();
    let eves = p.bob.open(t, &o).unwrap().session_id;
    for inner in [p.call.ringing(), p.call.ok_invite()] {
        let o = p.bob.seal(t, &inner).unwrap();
        eve.open(t, &o).unwrap();
    }
    let invite = p.alice.seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &invite), Err(OpenError::DialogCollision));
    let o = eve.seal(t, &p.call.ack()).unwrap();
    assert_eq!(p.bob.open(t, &o).unwrap().session_id, eves);
    // A signed racer (mallory, as herself, with alice's tag) proved who she
    // is: alice's INVITE does not supersede her either.
    let mut p = pair();
    let mut as_mallory = Call::new("sip:mallory@atlanta.com", "sip:bob@biloxi.com");
    as_mallory.caller_tag = p.call.caller_tag.clone();
    let mut mallory = domains().tunnel("sip:mallory@atlanta.com", &["2026-11"]);
    let o = mallory.seal(t, &as_mallory.invite()).unwrap();
    p.bob.open(t, &o).unwrap();
    let invite = p.alice.seal(t, &p.call.invite()).unwrap();
    assert_eq!(p.bob.open(t, &invite), Err(OpenError::DialogCollision));
    assert_eq!(p.bob.session_count(), 1);
    // Our own call on a Call-ID is never superseded by a peer's first
    // message, signed or not.
    let mut p = pair();
    p.alice.seal(t, &p.call.invite()).unwrap();
    let mut reverse = Call::new("sip:bob@biloxi.com", "sip:alice@atlanta.com");
    reverse.caller_tag = p.call.caller_tag.clone();
    let signed = p.bob.seal(t, &reverse.invite()).unwrap();
    assert_eq!(p.alice.open(t, &signed), Err(OpenError::DialogCollision));
}

/// `seal` never opens a second dialog on a Call-ID a live session uses (a
/// first message never joins or shadows one, on our side either):
/// `SealError::CallIdInUse`, nothing changed. Our own retry of the same
/// dialog (same From tag, e.g. after a proxy's 407) replaces our attempt.
#[test]
fn seal_refuses_a_new_dialog_on_a_call_id_in_use() {
    let mut p = established();
    let sessions = p.alice.session_count();
    let mut other = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    other.caller_tag = "another-dialog".into();
    assert!(matches!(
        p.alice.seal(now(), &other.invite()),
        Err(SealError::CallIdInUse)
    ));
    assert_eq!(p.alice.session_count(), sessions, "nothing changed");
    // The live call goes on: bob's BYE still opens at alice.
    let bye = p.bob.seal(now(), &p.call.callee_bye()).unwrap();
    assert!(p.alice.open(now(), &bye).is_ok());

    let mut q = pair();
    let t = now();
    q.alice.seal(t, &q.call.invite()).unwrap();
    q.alice.seal(t, &q.call.invite()).unwrap();
    assert_eq!(q.alice.session_count(), 1, "the retry replaced the attempt");
}
