//! Attacks on the tunnel: each is rejected with its own error and leaves
//! the receiver's state unchanged (the genuine message still opens after).

mod support;

use ibephone::tunnel::{OpenError, Tunnel, TunnelConfig, WireAction};
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
    let t = now();
    let o = p.alice.seal(t, &p.call.invite()).unwrap();
    p.bob.open(t, &o).unwrap();
    for inner in [p.call.ringing(), p.call.ok_invite()] {
        let o = p.bob.seal(t, &inner).unwrap();
        p.alice.open(t, &o).unwrap();
    }
    let o = p.alice.seal(t, &p.call.ack()).unwrap();
    p.bob.open(t, &o).unwrap();
    p
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
