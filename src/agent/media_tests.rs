use super::*;
use crate::media::sdp::Negotiated;
use crate::media::srtp::SrtpChannel;
use rtp::header::Header;

/// Ports 4000 + call, without binding anything.
struct FakePorts(u16);

impl MediaPorts for FakePorts {
    fn allocate(&mut self, call: u64) -> Result<SocketAddr, String> {
        Ok(SocketAddr::from(([127, 0, 0, 1], self.0 + call as u16)))
    }
    fn release(&mut self, _call: u64) {}
}

fn calls(base: u16, policy: MediaPolicy) -> MediaCalls {
    MediaCalls::new(policy, Box::new(FakePorts(base)))
}

fn started(m: &mut MediaCalls) -> Negotiated {
    match m.poll_action() {
        Some(MediaAction::Start { negotiated, .. })
        | Some(MediaAction::Update { negotiated, .. }) => negotiated,
        other => panic!("expected start/update, got {other:?}"),
    }
}

/// alice (call 1) calls bob (call 7): both start, keys cross, SAS equal.
fn call(alice: &mut MediaCalls, bob: &mut MediaCalls) -> (MediaInfo, MediaInfo) {
    let offer = alice.offer(1).unwrap();
    assert_eq!(offer.content_type.as_deref(), Some(SDP_CONTENT_TYPE));
    bob.incoming(7, &offer).unwrap();
    let answer = bob.answer_body(7).unwrap();
    let ia = alice.answered(1, &answer).unwrap();
    let ib = bob.answered(7, &Body::default()).unwrap();
    (ia, ib)
}

fn packet(n: &Negotiated, seq: u16) -> Vec<u8> {
    let mut ch = SrtpChannel::new(n).unwrap();
    let h = Header {
        version: 2,
        payload_type: 0,
        sequence_number: seq,
        ssrc: 9,
        ..Default::default()
    };
    ch.protect(h, &[0x55; 160]).unwrap().to_vec()
}

fn decrypts(receiver: &Negotiated, from: SocketAddr, datagram: &[u8]) -> bool {
    SrtpChannel::new(receiver)
        .unwrap()
        .unprotect(from, datagram)
        .is_ok()
}

#[test]
fn call_agrees_escrow_resistant_keys_and_sas() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let (ia, ib) = call(&mut a, &mut b);
    assert!(ia.escrow_resistant && ib.escrow_resistant);
    assert_eq!(ia.sas, ib.sas);
    assert_eq!(ia.sas.as_ref().map(String::len), Some(4));
    assert_eq!(ia.cipher, "AEAD_AES_128_GCM");
    assert_eq!(ia.codec, "opus", "both sides have Opus: it goes first");
    assert_eq!(ia.notice, None);
    let (na, nb) = (started(&mut a), started(&mut b));
    assert_eq!(na.remote, SocketAddr::from(([127, 0, 0, 1], 5007)));
    // What alice sends, bob decrypts.
    assert!(decrypts(
        &nb,
        SocketAddr::from(([127, 0, 0, 1], 4001)),
        &packet(&na, 1)
    ));
    // A second answered() (e.g. a retransmitted 2xx) starts nothing twice.
    b.answered(7, &Body::default()).unwrap();
    assert!(b.poll_action().is_none());
    b.end(7);
    assert!(matches!(
        b.poll_action(),
        Some(MediaAction::Stop { call: 7 })
    ));
}

#[test]
fn hold_and_resume_rekey() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let (ia, _) = call(&mut a, &mut b);
    let (_, nb0) = (started(&mut a), started(&mut b));
    let alice_addr = SocketAddr::from(([127, 0, 0, 1], 4001));
    // alice holds bob.
    let offer = a.hold(1, true).unwrap();
    assert!(String::from_utf8_lossy(&offer.bytes).contains("a=sendonly"));
    assert!(matches!(a.hold(1, false), Err(CallMediaError::Pending(1))));
    let (answer, ib) = b.reinvite(7, &offer).unwrap();
    assert_eq!(ib.direction, "recvonly");
    let ia1 = a.reinvite_response(1, 200, &answer).unwrap().unwrap();
    assert_eq!(ia1.direction, "sendonly");
    assert_eq!(ia1.sas, ib.sas);
    assert_ne!(ia1.sas, ia.sas, "a re-key gives a new SAS");
    let (na1, nb1) = (started(&mut a), started(&mut b));
    let held = packet(&na1, 2);
    assert!(decrypts(&nb1, alice_addr, &held));
    assert!(
        !decrypts(&nb0, alice_addr, &held),
        "old keys decrypt nothing new"
    );
    // Resume: fresh keys again, both ways.
    let offer = a.hold(1, false).unwrap();
    let (answer, ib2) = b.reinvite(7, &offer).unwrap();
    assert_eq!(ib2.direction, "sendrecv");
    a.reinvite_response(1, 200, &answer).unwrap().unwrap();
    let (na2, nb2) = (started(&mut a), started(&mut b));
    let resumed = packet(&na2, 3);
    assert!(decrypts(&nb2, alice_addr, &resumed));
    assert!(!decrypts(&nb1, alice_addr, &resumed));
    assert!(!decrypts(&nb0, alice_addr, &resumed));
    // Bob's direction follows: he sends again.
    assert!(nb2.direction.sends() && !nb1.direction.sends());
}

#[test]
fn glare_and_refusal_keep_the_old_keys() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    call(&mut a, &mut b);
    let (_, _) = (started(&mut a), started(&mut b));
    let from_a = a.hold(1, true).unwrap();
    let from_b = b.hold(7, true).unwrap();
    // Both offered at once: each answers the other 491.
    assert!(matches!(
        a.reinvite(1, &from_b),
        Err(CallMediaError::Pending(1))
    ));
    assert!(matches!(
        b.reinvite(7, &from_a),
        Err(CallMediaError::Pending(7))
    ));
    assert!(matches!(
        a.reinvite_response(1, 491, &Body::default()),
        Err(CallMediaError::Refused(491))
    ));
    assert!(a.poll_action().is_none(), "no re-key after a refusal");
    // The offer is void: a new one may be made.
    assert!(a.hold(1, true).is_ok());
}

fn plain_offer() -> Body {
    Body {
        content_type: Some("application/sdp".into()),
        bytes: b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0\r\na=sendrecv\r\n".to_vec(),
    }
}

#[test]
fn plain_rtp_only_when_the_policy_allows_it() {
    let mut strict = calls(5000, MediaPolicy::default());
    let e = strict.incoming(7, &plain_offer()).unwrap_err();
    assert!(
        matches!(e, CallMediaError::Sdp(SdpError::PlainRefused)),
        "{e}"
    );
    let mut lax = calls(
        5000,
        MediaPolicy {
            security: SecurityPolicy::AllowPlain,
            ..MediaPolicy::default()
        },
    );
    lax.incoming(7, &plain_offer()).unwrap();
    let answer = lax.answer_body(7).unwrap();
    assert!(String::from_utf8_lossy(&answer.bytes).contains("RTP/AVP 8"));
    let i = lax.answered(7, &Body::default()).unwrap();
    assert_eq!(
        (i.cipher, i.codec, i.escrow_resistant),
        ("none", "PCMA", false)
    );
    assert!(i.notice.unwrap().contains("unencrypted"));
}

#[test]
fn peer_without_dh_and_delayed_offers() {
    let mut a = calls(4000, MediaPolicy::default());
    let mut b = calls(
        5000,
        MediaPolicy {
            media_keys: MediaKeysPolicy::ProviderRecoverable,
            ..MediaPolicy::default()
        },
    );
    let (ia, ib) = call(&mut a, &mut b);
    assert!(!ia.escrow_resistant && ia.sas.is_none());
    assert!(ia.notice.unwrap().contains("not escrow-resistant"));
    assert!(ib.notice.unwrap().contains("provider-recoverable"));
    // The offer of a provider-recoverable phone carries no a=ibesip-dh.
    let offer = b.offer(2).unwrap();
    assert!(!String::from_utf8_lossy(&offer.bytes).contains("ibesip-dh"));
    let mut c = calls(6000, MediaPolicy::default());
    assert!(matches!(
        c.incoming(3, &Body::default()),
        Err(CallMediaError::NotSdp(_))
    ));
    let text = Body {
        content_type: Some("text/plain".into()),
        bytes: plain_offer().bytes,
    };
    assert!(matches!(
        c.incoming(3, &text),
        Err(CallMediaError::NotSdp(_))
    ));
}

#[test]
fn mute_and_dtmf_need_a_running_call() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    assert!(matches!(a.mute(1, true), Err(CallMediaError::NoCall(1))));
    call(&mut a, &mut b);
    started(&mut a);
    assert!(matches!(a.dtmf(1, "12x"), Err(CallMediaError::Dtmf('x'))));
    assert!(a.poll_action().is_none(), "all digits or none");
    a.dtmf(1, "5#").unwrap();
    a.mute(1, true).unwrap();
    assert!(matches!(
        a.poll_action(),
        Some(MediaAction::Dtmf { digit: '5', .. })
    ));
    assert!(matches!(
        a.poll_action(),
        Some(MediaAction::Dtmf { digit: '#', .. })
    ));
    assert!(matches!(
        a.poll_action(),
        Some(MediaAction::Mute { on: true, .. })
    ));
}

/// Replaces the `a=ibesip-dh` value of an SDP body.
fn rewrite_dh(body: &Body, dh: &[u8; 32]) -> Body {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let text = String::from_utf8(body.bytes.clone()).unwrap();
    let out: Vec<String> = text
        .split("\r\n")
        .map(|l| {
            if l.starts_with("a=ibesip-dh:") {
                format!("a=ibesip-dh:{}", URL_SAFE_NO_PAD.encode(dh))
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(out.join("\r\n"), text, "the body had an a=ibesip-dh");
    Body {
        content_type: body.content_type.clone(),
        bytes: out.join("\r\n").into_bytes(),
    }
}

/// A man in the middle who can open and re-seal the tunnel (the PKG holds
/// both users' keys) and swaps `a=ibesip-dh` in the offer and the answer
/// for its own: each side agrees keys with Mallory, and the SAS values the
/// two users read aloud differ.
#[test]
fn a_pkg_in_the_middle_changes_the_sas() {
    use crate::media::keys::DhKeyPair;
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let mallory = DhKeyPair::generate().unwrap().public_bytes();
    let offer = rewrite_dh(&a.offer(1).unwrap(), &mallory);
    b.incoming(7, &offer).unwrap();
    let answer = rewrite_dh(&b.answer_body(7).unwrap(), &mallory);
    let ia = a.answered(1, &answer).unwrap();
    let ib = b.answered(7, &Body::default()).unwrap();
    assert!(ia.escrow_resistant && ib.escrow_resistant);
    assert_ne!(ia.sas, ib.sas);
    // Unmodified, the same exchange gives equal values (see above).
    let (ia, ib) = call(
        &mut calls(4100, MediaPolicy::default()),
        &mut calls(5100, MediaPolicy::default()),
    );
    assert_eq!(ia.sas, ib.sas);
}
