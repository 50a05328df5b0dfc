//! Two in-memory user agents run a whole dialog through the tunnel, and
//! both see every inner message byte for byte as it was sealed.

use crate::support;

use ibephone::tunnel::{classify, Direction, PeerIdentity, Treatment};
use support::tunnel::*;

#[test]
fn full_dialog_round_trips_byte_for_byte() {
    let d = TwoDomains::new("atlanta.com", "biloxi.com");
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let mut bob = d.tunnel("sip:bob@biloxi.com", &["2026-10", "2026-11"]);
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    let t = now();

    // INVITE: first message, signed by alice.
    let invite = call.invite();
    let outer = alice.seal(t, &invite).unwrap();
    let opened = bob.open(t, &outer).unwrap();
    assert_eq!(opened.inner, invite);
    assert!(opened.first_message);
    assert_eq!(
        (opened.direction, opened.seq),
        (Direction::CallerToCallee, 0)
    );
    assert_eq!(opened.period.as_ref().map(|p| p.as_str()), Some("2026-11"));
    match &opened.peer {
        PeerIdentity::Verified(id) => assert_eq!(id.as_str(), "sip:alice@atlanta.com#2026-11"),
        other => panic!("caller not verified: {other:?}"),
    }
    let session = opened.session_id;

    // The rest of the dialog, in both directions.
    let steps: Vec<(bool, Vec<u8>)> = vec![
        (false, call.ringing()),
        (false, call.ok_invite()),
        (true, call.ack()),
        (true, call.reinvite()),
        (false, call.ok_reinvite()),
        (true, call.bye()),
        (false, call.ok_bye()),
    ];
    let (mut a_seq, mut b_seq) = (1, 0);
    for (from_alice, inner) in steps {
        let (sender, receiver) = sides(from_alice, &mut alice, &mut bob);
        let outer = sender.seal(t, &inner).unwrap();
        let opened = receiver.open(t, &outer).unwrap();
        assert_eq!(opened.inner, inner, "{}", String::from_utf8_lossy(&inner));
        assert_eq!(opened.session_id, session);
        assert!(!opened.first_message);
        let expected = if from_alice {
            a_seq += 1;
            (Direction::CallerToCallee, a_seq - 1)
        } else {
            b_seq += 1;
            (Direction::CalleeToCaller, b_seq - 1)
        };
        assert_eq!((opened.direction, opened.seq), expected);
        // Both ends know who the other is, from the two signed messages.
        let want = if from_alice {
            "sip:alice@atlanta.com#2026-11"
        } else {
            "sip:bob@biloxi.com#2026-11"
        };
        assert_eq!(
            opened.peer,
            PeerIdentity::Verified(ibephone::ibe::Identity::parse(want).unwrap())
        );
    }

    // An out-of-dialog MESSAGE is a session of its own.
    let msg = call.message("ZmlsbGVyZmlsbGVyZmlsbGVy", "see you at noon");
    let outer = alice.seal(t, &msg).unwrap();
    let opened = bob.open(t, &outer).unwrap();
    assert_eq!(opened.inner, msg);
    assert!(opened.first_message);
    assert_ne!(opened.session_id, session);
}

#[test]
fn outer_message_reveals_only_routing() {
    let d = TwoDomains::new("atlanta.com", "biloxi.com");
    let mut alice = d.tunnel("sip:alice@atlanta.com", &["2026-11"]);
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    let outer = alice.seal(now(), &call.invite()).unwrap();
    let text = String::from_utf8_lossy(&outer);
    let head = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(head.starts_with("INVITE sip:bob@biloxi.com SIP/2.0\r\n"));
    assert!(head.contains("f: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1928301774"));
    assert!(head.contains("t: <sip:bob@biloxi.com>"));
    assert!(head.contains("m: <sip:127.0.0.1:5070>"));
    assert!(head.contains("c: application/pkcs7-mime;smime-type=authEnveloped-data;name=smime.p7m"));
    assert!(head.contains("Content-Disposition: attachment;handling=required;filename=smime.p7m"));
    for secret in [
        "alice",
        "Alice",
        "User-Agent",
        "Subject",
        "lunch",
        "v=0",
        "Bob",
    ] {
        assert!(
            !outer.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} leaked"
        );
    }
}

#[test]
fn plain_and_tunneled_messages() {
    let call = Call::new("sip:alice@atlanta.com", "sip:bob@biloxi.com");
    assert_eq!(classify(&call.invite(), false), Treatment::Tunnel);
    assert_eq!(classify(&call.ack(), false), Treatment::Tunnel);
    assert_eq!(classify(&call.ack(), true), Treatment::Plain);
    assert_eq!(classify(&call.bye(), false), Treatment::Tunnel);
    assert_eq!(classify(&call.ringing(), false), Treatment::Tunnel);
    let trying = String::from_utf8(call.ringing())
        .unwrap()
        .replace("180 Ringing", "100 Trying");
    assert_eq!(classify(trying.as_bytes(), false), Treatment::Plain);
    let cancel = String::from_utf8(call.invite())
        .unwrap()
        .replacen("INVITE sip", "CANCEL sip", 1);
    assert_eq!(classify(cancel.as_bytes(), false), Treatment::Plain);
}

/// A first request for carol (inner To carol) with Request-URI `uri`,
/// unsigned, BF-encrypted to carol's identity; `n` makes it unique.
fn to_carol_via(d: &TwoDomains, uri: &str, n: u8) -> Vec<u8> {
    let call_id = format!("cmVxdWVzdHVyaXJlcXVlc3{n:02}");
    let via = format!("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKruri{n}");
    let inner = sip(
        &format!("INVITE {uri} SIP/2.0"),
        &[
            format!("Via: {via}"),
            "Max-Forwards: 70".into(),
            "To: <sip:carol@biloxi.com>".into(),
            format!("From: <sip:alice@atlanta.com>;tag=ru{n}"),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 INVITE".into(),
        ],
        "",
    );
    let head = format!(
        "INVITE {uri} SIP/2.0\r\nv: {via}\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=ru{n}\r\nt: <sip:carol@biloxi.com>\r\ni: {call_id}\r\nCSeq: 1 INVITE\r\nc: {}\r\n",
        ibephone::tunnel::outer::OUTER_CONTENT_TYPE
    );
    first_message_by_hand(
        &d.b.1,
        &identity("sip:carol@biloxi.com"),
        ibephone::tunnel::cms::ContentKind::Data,
        &entity(&inner),
        &head,
        [n; 16],
    )
}

/// Decision (spec 5.4 recipient binding): the inner Request-URI of a first
/// request names us when it has no user part, is our AOR, has one of our
/// contact tokens as its user part (any host), or has our AOR's user at a
/// host that is an IP address (a contact a registrar retargeted to).
/// Anything else is refused, like a To of someone else.
#[test]
fn first_request_must_name_us_in_its_request_uri() {
    use ibephone::tunnel::OpenError;
    let d = TwoDomains::new("atlanta.com", "biloxi.com");
    let mut carol = d.tunnel("sip:carol@biloxi.com", &["2026-11"]);
    let t = now();
    let cases: [(&str, Result<(), OpenError>); 7] = [
        ("sip:carol@biloxi.com", Ok(())),
        ("sip:127.0.0.1:5090", Ok(())),
        ("sip:carol@127.0.0.1:5090", Ok(())),
        ("sip:carol@[::1]:5090", Ok(())),
        (
            "sip:dave@biloxi.com",
            Err(OpenError::NotForUs("Request-URI")),
        ),
        (
            "sip:carol@atlanta.com",
            Err(OpenError::NotForUs("Request-URI")),
        ),
        (
            "sip:k7t0ken@127.0.0.1:5090",
            Err(OpenError::NotForUs("Request-URI")),
        ),
    ];
    for (n, (uri, want)) in cases.into_iter().enumerate() {
        let got = carol.open(t, &to_carol_via(&d, uri, n as u8)).map(|_| ());
        assert_eq!(got, want, "{uri}");
    }
    // Once carol's tunnel knows its contact token, it names her at any host.
    carol.set_contact_users(["k7t0ken"]);
    for (n, uri) in ["sip:k7t0ken@127.0.0.1:5090", "sip:k7t0ken@biloxi.com"]
        .into_iter()
        .enumerate()
    {
        let opened = carol.open(t, &to_carol_via(&d, uri, 20 + n as u8)).unwrap();
        assert_eq!(opened.peer, PeerIdentity::Unverified);
    }
}
