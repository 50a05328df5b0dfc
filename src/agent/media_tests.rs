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

const ALICE: &str = "sip:alice@example.invalid#2026-12";
const BOB: &str = "sip:bob@example.invalid";

/// alice (call 1) calls bob (call 7): both start, keys cross, SAS equal.
/// alice's key travels in the ACK (`Ibesip-Dh`), as the agent sends it.
fn call(alice: &mut MediaCalls, bob: &mut MediaCalls) -> (MediaInfo, MediaInfo) {
    let offer = alice.offer(1, Some(BOB)).unwrap();
    assert_eq!(offer.content_type.as_deref(), Some(SDP_CONTENT_TYPE));
    let reveal = alice.reveal(1);
    bob.incoming(7, &offer, Some(ALICE)).unwrap();
    let answer = bob.answer_body(7).unwrap();
    alice.answered_by(1, Some("sip:bob@example.invalid#2026-12"));
    let ia = alice.answered(1, &answer).unwrap();
    assert_eq!(
        bob.ack(7, reveal.as_deref(), &Body::default()).unwrap(),
        None
    );
    let ib = bob.answered(7, &Body::default()).unwrap();
    (ia, ib)
}

/// alice re-offers (hold `on`), bob answers, alice's ACK reveals: both
/// re-key. Returns what each side shows.
fn reinvite(a: &mut MediaCalls, b: &mut MediaCalls, on: bool) -> (MediaInfo, MediaInfo) {
    let offer = a.hold(1, on).unwrap();
    let reveal = a.reveal(1);
    let (answer, shown) = b.reinvite(7, &offer).unwrap();
    assert_eq!(shown, None, "bob re-keys only once the reveal checked");
    assert!(b.poll_action().is_none());
    let ia = a.reinvite_response(1, 200, &answer).unwrap().unwrap();
    let ib = b
        .ack(7, reveal.as_deref(), &Body::default())
        .unwrap()
        .unwrap();
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
    let reveal = a.reveal(1);
    assert!(String::from_utf8_lossy(&offer.bytes).contains("a=sendonly"));
    assert!(matches!(a.hold(1, false), Err(CallMediaError::Pending(1))));
    let (answer, none) = b.reinvite(7, &offer).unwrap();
    assert_eq!(none, None);
    let ia1 = a.reinvite_response(1, 200, &answer).unwrap().unwrap();
    let ib = b
        .ack(7, reveal.as_deref(), &Body::default())
        .unwrap()
        .unwrap();
    assert_eq!(ib.direction, "recvonly");
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
    let (_, ib2) = reinvite(&mut a, &mut b, false);
    assert_eq!(ib2.direction, "sendrecv");
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
    let e = strict.incoming(7, &plain_offer(), None).unwrap_err();
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
    lax.incoming(7, &plain_offer(), None).unwrap();
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
    // The offer of a provider-recoverable phone carries no a=ibesip-dh
    // nor a=ibesip-dh-commit, and it reveals nothing in the ACK.
    let offer = b.offer(2, Some(ALICE)).unwrap();
    assert!(!String::from_utf8_lossy(&offer.bytes).contains("ibesip-dh"));
    assert_eq!(b.reveal(2), None);
    // A delayed offer (INVITE without SDP): the offer goes in our 2xx,
    // committed to our key; a provider-recoverable phone commits nothing.
    b.incoming(4, &Body::default(), Some(ALICE)).unwrap();
    let in_2xx = b.answer_body(4).unwrap();
    assert!(!String::from_utf8_lossy(&in_2xx.bytes).contains("ibesip-dh"));
    let mut c = calls(6000, MediaPolicy::default());
    c.incoming(3, &Body::default(), None).unwrap();
    let in_2xx = String::from_utf8(c.answer_body(3).unwrap().bytes).unwrap();
    assert!(in_2xx.contains("a=ibesip-dh-commit:"), "{in_2xx}");
    assert!(!in_2xx.contains("a=ibesip-dh:"), "{in_2xx}");
    let text = Body {
        content_type: Some("text/plain".into()),
        bytes: plain_offer().bytes,
    };
    assert!(matches!(
        c.incoming(5, &text, None),
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

use crate::media::commit::dh_commitment;
use crate::media::keys::{DhKeyPair, Sas};
use crate::media::sdp::RevealError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Replaces (or, with `None`, removes) the `a=<attr>:` line of an SDP
/// body, as a man in the middle who re-seals the tunnel can.
fn rewrite(body: &Body, attr: &str, value: Option<&str>) -> Body {
    let text = String::from_utf8(body.bytes.clone()).unwrap();
    let prefix = format!("a={attr}:");
    let out: Vec<String> = text
        .split("\r\n")
        .filter_map(|l| match (l.starts_with(&prefix), value) {
            (true, Some(v)) => Some(format!("{prefix}{v}")),
            (true, None) => None,
            (false, _) => Some(l.to_string()),
        })
        .collect();
    assert_ne!(out.join("\r\n"), text, "the body had an a={attr}");
    Body {
        content_type: body.content_type.clone(),
        bytes: out.join("\r\n").into_bytes(),
    }
}

fn desc(body: &Body) -> AudioDescription {
    AudioDescription::parse(std::str::from_utf8(&body.bytes).unwrap()).unwrap()
}

/// The PKG (or anyone re-sealing both tunnel directions) in the middle of
/// a committed exchange. Without the commitment, whoever sends the last
/// DH value tries ~2^20 keys until both halves show the same SAS. With
/// it, Mallory must forward a commitment to bob before bob's answer shows
/// her B, and she learns alice's A (hence alice's SAS) only from the ACK,
/// after she answered alice. The key she grinds afterwards to make bob's
/// SAS match (here only its first 4 bits, so the search is quick) is not
/// the key she committed to: bob refuses it and starts no media.
#[test]
fn a_grinding_man_in_the_middle_is_caught_by_the_commitment() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let offer = a.offer(1, Some(BOB)).unwrap();
    // What the ACK will carry; Mallory sees it only after answering alice.
    let alice_reveal = a.reveal(1).unwrap();
    let offered = desc(&offer);
    assert!(offered.dh.is_none(), "the offer hides alice's key");
    let alice_commit = offered.dh_commit.unwrap();
    // Mallory must commit towards bob before bob answers.
    let m_bob = DhKeyPair::generate().unwrap();
    let to_bob = rewrite(
        &offer,
        "ibesip-dh-commit",
        Some(&b64(&dh_commitment(&m_bob.public_bytes()))),
    );
    b.incoming(7, &to_bob, Some(ALICE)).unwrap();
    let answer = b.answer_body(7).unwrap();
    let bob_b = desc(&answer).dh.unwrap();
    // Towards alice she answers with a key of her own.
    let m_alice = DhKeyPair::generate().unwrap();
    let to_alice = rewrite(&answer, "ibesip-dh", Some(&b64(&m_alice.public_bytes())));
    let ia = a.answered(1, &to_alice).unwrap();
    // Only now does alice's ACK reveal A: alice's SAS is fixed.
    let alice_a: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&alice_reveal)
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(dh_commitment(&alice_a), alice_commit);
    let shared = m_alice.agree(&alice_a).unwrap();
    let alice_sas = Sas::compute(&shared, &alice_a, &m_alice.public_bytes());
    assert_eq!(ia.sas, Some(alice_sas.to_base32()));
    // Grinding after the fact: a key whose SAS with bob starts like alice's.
    let ground = (0..4096)
        .map(|_| DhKeyPair::generate().unwrap())
        .find(|k| {
            let sh = k.agree(&bob_b).unwrap();
            Sas::compute(&sh, &k.public_bytes(), &bob_b).bits() >> 16 == alice_sas.bits() >> 16
        })
        .expect("a 4-bit match within 4096 tries");
    assert_eq!(
        b.ack(7, Some(&b64(&ground.public_bytes())), &Body::default())
            .unwrap(),
        None
    );
    let e = b.answered(7, &Body::default()).unwrap_err();
    assert!(
        matches!(e, CallMediaError::Reveal(RevealError::Mismatch)),
        "{e}"
    );
    assert!(
        e.to_string().contains("escrow-resistant media ended"),
        "{e}"
    );
    assert!(b.poll_action().is_none(), "bob starts no media");
    // Had she forwarded alice's own commitment, only A opens it, and she
    // cannot compute bob's shared secret X25519(b, A).
    let mut b3 = calls(5200, MediaPolicy::default());
    b3.incoming(7, &offer, Some(ALICE)).unwrap();
    b3.ack(7, Some(&b64(&m_bob.public_bytes())), &Body::default())
        .unwrap();
    assert!(matches!(
        b3.answered(7, &Body::default()),
        Err(CallMediaError::Reveal(RevealError::Mismatch))
    ));
}

/// The honest reveal of Mallory's committed key is accepted, but its SAS
/// was fixed before she saw B, so it differs from alice's (a 2^-20
/// chance to match, the spec's bound).
#[test]
fn the_committed_key_of_a_man_in_the_middle_shows_a_different_sas() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let offer = a.offer(1, None).unwrap();
    let m_bob = DhKeyPair::generate().unwrap();
    let to_bob = rewrite(
        &offer,
        "ibesip-dh-commit",
        Some(&b64(&dh_commitment(&m_bob.public_bytes()))),
    );
    b.incoming(7, &to_bob, None).unwrap();
    let answer = b.answer_body(7).unwrap();
    let m_alice = DhKeyPair::generate().unwrap();
    let to_alice = rewrite(&answer, "ibesip-dh", Some(&b64(&m_alice.public_bytes())));
    let ia = a.answered(1, &to_alice).unwrap();
    b.ack(7, Some(&b64(&m_bob.public_bytes())), &Body::default())
        .unwrap();
    let ib = b.answered(7, &Body::default()).unwrap();
    assert!(ia.escrow_resistant && ib.escrow_resistant);
    assert_ne!(ia.sas, ib.sas);
}

/// A missing or malformed reveal ends escrow-resistant media with a typed
/// reason, for the initial INVITE and for a re-INVITE (whose old keys
/// then stay untouched: no re-key happens).
#[test]
fn a_missing_or_wrong_reveal_ends_escrow_resistant_media() {
    for (reveal, want) in [
        (None, RevealError::Missing),
        (Some("not base64!"), RevealError::Malformed),
        (Some("AAAA"), RevealError::Malformed),
    ] {
        let (mut a, mut b) = (
            calls(4000, MediaPolicy::default()),
            calls(5000, MediaPolicy::default()),
        );
        let offer = a.offer(1, None).unwrap();
        b.incoming(7, &offer, None).unwrap();
        b.ack(7, reveal, &Body::default()).unwrap();
        let e = b.answered(7, &Body::default()).unwrap_err();
        assert!(matches!(&e, CallMediaError::Reveal(r) if *r == want), "{e}");
        assert!(b.poll_action().is_none());
    }
    // In a re-INVITE: the reveal of another key.
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    call(&mut a, &mut b);
    let (_, _) = (started(&mut a), started(&mut b));
    let offer = a.hold(1, true).unwrap();
    let (answer, _) = b.reinvite(7, &offer).unwrap();
    a.reinvite_response(1, 200, &answer).unwrap();
    let other = DhKeyPair::generate().unwrap().public_bytes();
    let e = b.ack(7, Some(&b64(&other)), &Body::default()).unwrap_err();
    assert!(
        matches!(e, CallMediaError::Reveal(RevealError::Mismatch)),
        "{e}"
    );
    assert!(b.poll_action().is_none(), "no re-key on a wrong reveal");
    // An ACK without anything pending changes nothing.
    assert_eq!(b.ack(7, None, &Body::default()).unwrap(), None);
}

/// An offer with a bare a=ibesip-dh (version 1.0, or a man in the middle
/// who removed the commitment to grind the SAS) gets no key of ours and
/// SDES-only keys, with a notice saying why.
#[test]
fn an_offer_without_commitment_is_not_escrow_resistant() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let offer = a.offer(1, None).unwrap();
    let key = DhKeyPair::generate().unwrap().public_bytes();
    let downgraded = rewrite(&offer, "ibesip-dh-commit", None);
    let text = String::from_utf8(downgraded.bytes.clone())
        .unwrap()
        .replace(
            "a=sendrecv",
            &format!("a=ibesip-dh:{}\r\na=sendrecv", b64(&key)),
        );
    let downgraded = Body {
        content_type: downgraded.content_type,
        bytes: text.into_bytes(),
    };
    b.incoming(7, &downgraded, None).unwrap();
    let answer = b.answer_body(7).unwrap();
    assert!(desc(&answer).dh.is_none(), "no key of ours to a 1.0 offer");
    let ib = b.answered(7, &Body::default()).unwrap();
    assert!(!ib.escrow_resistant && ib.sas.is_none());
    assert!(ib.notice.unwrap().contains("without a=ibesip-dh-commit"));
    let ia = a.answered(1, &answer).unwrap();
    assert!(!ia.escrow_resistant);
    let (na, nb) = (started(&mut a), started(&mut b));
    assert_eq!(
        na.keys.unwrap().send,
        nb.keys.unwrap().recv,
        "SDES keys agree"
    );
}

fn continuity(i: &MediaInfo) -> Continuity {
    i.continuity
}

/// Key continuity: no secret on the first call; after both confirm the
/// SAS, the next call and each re-INVITE prove it on both sides, and each
/// verified exchange replaces it (so an old value no longer verifies).
#[test]
fn continuity_after_a_confirmed_sas() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let (ia, ib) = call(&mut a, &mut b);
    assert_eq!(
        (continuity(&ia), continuity(&ib)),
        (Continuity::NoSecret, Continuity::NoSecret)
    );
    let (_, _) = (started(&mut a), started(&mut b));
    let offer_text = String::from_utf8(a.hold(1, true).unwrap().bytes).unwrap();
    assert!(
        !offer_text.contains("a=ibesip-rs:"),
        "nothing confirmed yet"
    );
    a.reinvite_response(1, 491, &Body::default()).unwrap_err();
    assert_eq!(a.confirm_sas(1).unwrap(), "sip:bob@example.invalid");
    assert_eq!(b.confirm_sas(7).unwrap(), "sip:alice@example.invalid");
    let (ia, ib) = reinvite(&mut a, &mut b, true);
    assert_eq!(
        (continuity(&ia), continuity(&ib)),
        (Continuity::Verified, Continuity::Verified)
    );
    a.end(1);
    b.end(7);
    // A new call: the secret replaced by the verified re-INVITE is proved.
    let (ia, ib) = call(&mut a, &mut b);
    assert_eq!(
        (continuity(&ia), continuity(&ib)),
        (Continuity::Verified, Continuity::Verified)
    );
    let shown = super::continuity_text(Continuity::Verified).unwrap();
    assert!(shown.0 && shown.1.contains("same keys as your confirmed call"));
}

/// A man in the middle holds no retained secret: whatever it sends in
/// a=ibesip-rs (nothing, or a made-up value) gives a loud warning on the
/// side that checks it, and the old secret is kept.
#[test]
fn a_man_in_the_middle_without_the_secret_gets_a_warning() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    call(&mut a, &mut b);
    a.confirm_sas(1).unwrap();
    b.confirm_sas(7).unwrap();
    a.end(1);
    b.end(7);
    for forged in [None, Some(b64(&[9u8; 32]))] {
        // Mallory answers alice herself (her own key, her own proof).
        let offer = a.offer(1, Some(BOB)).unwrap();
        assert!(String::from_utf8_lossy(&offer.bytes).contains("a=ibesip-rs:"));
        let mut mallory = calls(6000, MediaPolicy::default());
        mallory.incoming(7, &offer, None).unwrap();
        let mut answer = mallory.answer_body(7).unwrap();
        if let Some(f) = &forged {
            let text = String::from_utf8(answer.bytes)
                .unwrap()
                .replace("a=sendrecv", &format!("a=ibesip-rs:{f}\r\na=sendrecv"));
            answer.bytes = text.into_bytes();
        }
        a.answered_by(1, Some("sip:bob@example.invalid#2026-12"));
        let ia = a.answered(1, &answer).unwrap();
        let want = if forged.is_some() {
            Continuity::Wrong
        } else {
            Continuity::Missing
        };
        assert_eq!(continuity(&ia), want);
        let (verified, text) = super::continuity_text(want).unwrap();
        assert!(!verified && text.starts_with("WARNING"));
        a.end(1);
        // Towards bob: an offer of her own, without alice's secret.
        let mut m2 = calls(6100, MediaPolicy::default());
        let offer = m2.offer(1, None).unwrap();
        let offer = match &forged {
            None => offer,
            Some(f) => {
                let text = String::from_utf8(offer.bytes)
                    .unwrap()
                    .replace("a=sendrecv", &format!("a=ibesip-rs:{f}\r\na=sendrecv"));
                Body {
                    content_type: offer.content_type,
                    bytes: text.into_bytes(),
                }
            }
        };
        let reveal = m2.reveal(1);
        b.incoming(7, &offer, Some(ALICE)).unwrap();
        b.ack(7, reveal.as_deref(), &Body::default()).unwrap();
        let ib = b.answered(7, &Body::default()).unwrap();
        assert_eq!(continuity(&ib), want);
        b.end(7);
    }
    // The confirmed secret survived both attempts: an honest call proves it.
    let (ia, ib) = call(&mut a, &mut b);
    assert_eq!(
        (continuity(&ia), continuity(&ib)),
        (Continuity::Verified, Continuity::Verified)
    );
}

/// Without a verified peer identity there is nothing to keep; without an
/// escrow-resistant exchange there is no SAS to confirm.
#[test]
fn confirming_needs_a_verified_peer_and_a_sas() {
    let (mut a, mut b) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let offer = a.offer(1, Some(BOB)).unwrap();
    let reveal = a.reveal(1);
    b.incoming(7, &offer, None).unwrap();
    let answer = b.answer_body(7).unwrap();
    // Answered by someone other than the AOR we called.
    a.answered_by(1, Some("sip:mallory@example.invalid#2026-12"));
    a.answered(1, &answer).unwrap();
    b.ack(7, reveal.as_deref(), &Body::default()).unwrap();
    b.answered(7, &Body::default()).unwrap();
    for (m, call) in [(&mut a, 1), (&mut b, 7)] {
        assert!(matches!(
            m.confirm_sas(call),
            Err(CallMediaError::NothingToConfirm { .. })
        ));
    }
    let (mut c, mut d) = (
        calls(4000, MediaPolicy::default()),
        calls(
            5000,
            MediaPolicy {
                media_keys: MediaKeysPolicy::ProviderRecoverable,
                ..MediaPolicy::default()
            },
        ),
    );
    call(&mut c, &mut d);
    assert!(matches!(
        c.confirm_sas(1),
        Err(CallMediaError::NothingToConfirm { .. })
    ));
    assert!(matches!(c.confirm_sas(9), Err(CallMediaError::NoCall(9))));
}

/// Continuity survives a restart: the secret confirmed in one process is
/// sealed in a 0600 file and proved by the next process's call.
#[test]
fn continuity_survives_a_restart() {
    use super::super::retained::SealedRetained;
    let dir = tempfile::tempdir().unwrap();
    let files = |who: &str| {
        (
            dir.path().join(format!("{who}.retained")),
            dir.path().join(format!("{who}.key")),
        )
    };
    let with_file = |base: u16, who: &str| {
        let (path, key) = files(who);
        let (store, warning) = SealedRetained::open(&path, &key).unwrap();
        assert!(warning.is_none());
        calls(base, MediaPolicy::default()).with_retained(Box::new(store))
    };
    {
        let (mut a, mut b) = (with_file(4000, "alice"), with_file(5000, "bob"));
        call(&mut a, &mut b);
        a.confirm_sas(1).unwrap();
        b.confirm_sas(7).unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let (path, _) = files("alice");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let (mut a, mut b) = (with_file(4000, "alice"), with_file(5000, "bob"));
    let (ia, ib) = call(&mut a, &mut b);
    assert_eq!(
        (continuity(&ia), continuity(&ib)),
        (Continuity::Verified, Continuity::Verified)
    );
    // A fresh process without the files has nothing to prove.
    let (mut c, mut d) = (
        calls(4000, MediaPolicy::default()),
        calls(5000, MediaPolicy::default()),
    );
    let (ic, _) = call(&mut c, &mut d);
    assert_eq!(continuity(&ic), Continuity::NoSecret);
}

/// bob's agent in memory (policy `allow-plain`, media on fake ports).
fn bob_agent() -> super::super::Agent {
    use super::super::filter::{SecurityLog, SecurityPolicy as Policy, TunnelFilter};
    use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
    use crate::sip::digest::Password;
    use crate::sip::timers::Timers;
    use crate::sip::ua::{HeaderPolicy, UaConfig, UserAgent};
    use crate::sip::Transport;
    use crate::tunnel::{Tunnel, TunnelConfig};
    use std::sync::{Arc, Mutex};
    use std::time::{SystemTime, UNIX_EPOCH};
    let domain = "biloxi.invalid";
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(domain, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let aor = Aor::parse(&format!("sip:bob@{domain}")).unwrap();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut tunnel = Tunnel::new(aor.clone(), TunnelConfig::default());
    tunnel.add_params(params);
    tunnel
        .add_keys(&extract(&msk, &Identity::new(aor, Period::month_at(secs))))
        .unwrap();
    let log = Arc::new(Mutex::new(SecurityLog::default()));
    let filter = TunnelFilter::new(tunnel, Policy::AllowPlain, log.clone());
    let ua = UserAgent::new(
        UaConfig {
            user: "bob".into(),
            domain: domain.into(),
            password: Password::new("pw"),
            proxy: "127.0.0.1:5060".parse().unwrap(),
            local: "127.0.0.1:5070".into(),
            transport: Transport::Udp,
            expires: 600,
            headers: HeaderPolicy {
                anonymous_from: false,
                ..HeaderPolicy::default()
            },
            timers: Timers::default(),
            max_transactions: 64,
        },
        Box::new(filter),
    );
    let mut agent = super::super::Agent::new(ua, log, domain).with_policy(Policy::AllowPlain);
    agent.enable_media(calls(5000, MediaPolicy::default()));
    agent
}

/// End to end through bob's SIP core and agent: an INVITE whose offer
/// commits to alice's key, answered, then an ACK whose `Ibesip-Dh` is
/// another key (a man in the middle swapping it). bob starts no media,
/// shows why (`media_notice`), and hangs up (BYE).
#[test]
fn an_ack_with_a_wrong_reveal_ends_the_call_with_a_notice() {
    use super::super::{AgentCommand, AgentEvent};
    use crate::sip::driver::Core;
    use crate::sip::message::Message;
    use crate::sip::{Dest, Transport};
    let mut bob = bob_agent();
    let mut alice = calls(4000, MediaPolicy::default());
    let offer = alice.offer(1, None).unwrap();
    let sdp = String::from_utf8(offer.bytes).unwrap();
    let from_proxy = Dest {
        addr: "127.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    };
    let invite = format!(
        "INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKreveal1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@biloxi.invalid>;tag=atag\r\nTo: <sip:bob@biloxi.invalid>\r\nCall-ID: reveal-test\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5062>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    bob.handle_datagram(Instant::now(), from_proxy, invite.as_bytes());
    let events: Vec<AgentEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    let Some(AgentEvent::IncomingCall { call, .. }) = events.first() else {
        panic!("{events:?}");
    };
    let call = *call;
    bob.handle_command(Instant::now(), AgentCommand::Answer { call });
    let ok = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .find(|m| m.status() == Some(200))
        .expect("200 OK");
    let tag = ok.to_tag().unwrap().to_string();
    let wrong = b64(&DhKeyPair::generate().unwrap().public_bytes());
    let ack = format!(
        "ACK sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKreveal2\r\nMax-Forwards: 70\r\nFrom: <sip:alice@biloxi.invalid>;tag=atag\r\nTo: <sip:bob@biloxi.invalid>;tag={tag}\r\nCall-ID: reveal-test\r\nCSeq: 1 ACK\r\nIbesip-Dh: {wrong}\r\nContent-Length: 0\r\n\r\n"
    );
    bob.handle_datagram(Instant::now(), from_proxy, ack.as_bytes());
    let events: Vec<AgentEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::MediaNotice { message, .. }
            if message.contains("does not match the offer's a=ibesip-dh-commit"))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AgentEvent::MediaStarted { .. })),
        "{events:?}"
    );
    assert!(bob.poll_media().is_none(), "no media session starts");
    let bye = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .any(|m| m.method() == Some(rsip::Method::Bye));
    assert!(bye, "bob hangs up");
}

/// An offerless INVITE to bob (plain, as bob_agent allows) and bob's
/// answer: his 200 with its offer, parsed, and the call number.
fn offerless_call_answered(
    bob: &mut super::super::Agent,
    call_id: &str,
) -> (u64, crate::sip::message::Message, AudioDescription) {
    use super::super::{AgentCommand, AgentEvent};
    use crate::sip::driver::Core;
    use crate::sip::message::Message;
    let invite = format!(
        "INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@biloxi.invalid>;tag=atag\r\nTo: <sip:bob@biloxi.invalid>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n"
    );
    bob.handle_datagram(Instant::now(), from_proxy(), invite.as_bytes());
    let events: Vec<AgentEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    let Some(AgentEvent::IncomingCall { call, .. }) = events.first() else {
        panic!("the offerless INVITE rings: {events:?}");
    };
    let call = *call;
    bob.handle_command(Instant::now(), AgentCommand::Answer { call });
    let ok = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .find(|m| m.status().is_some_and(|s| s >= 200))
        .expect("a final response");
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert_eq!(ok.header("Content-Type"), Some(SDP_CONTENT_TYPE));
    let offer = AudioDescription::parse(std::str::from_utf8(&ok.body).unwrap()).unwrap();
    (call, ok, offer)
}

fn from_proxy() -> crate::sip::Dest {
    crate::sip::Dest {
        addr: "127.0.0.1:5060".parse().unwrap(),
        transport: crate::sip::Transport::Udp,
    }
}

/// The ACK of `ok` (call `call_id`) with `body` as its SDP.
fn ack_with(ok: &crate::sip::message::Message, call_id: &str, body: &str) -> String {
    let ctype = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {SDP_CONTENT_TYPE}\r\n")
    };
    format!(
        "ACK sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@biloxi.invalid>;tag=atag\r\nTo: <sip:bob@biloxi.invalid>;tag={}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        ok.to_tag().unwrap(),
        body.len()
    )
}

/// Spec 6, offer in a 2xx (mirrored exchange), end to end through bob's
/// SIP core and agent: an INVITE without SDP is answered 200 with bob's
/// offer, which commits to his key (`a=ibesip-dh-commit`, no key); the
/// ACK brings alice's answer with her key; only then does bob reveal his
/// key, in the `Ibesip-Dh` header of an INFO in the dialog. The revealed
/// key matches the commitment, both sides agree the escrow-resistant keys
/// and the SAS, and bob's packets decrypt with alice's keys.
#[test]
fn an_offerless_invite_gets_the_offer_in_the_2xx_and_the_reveal_in_an_info() {
    use super::super::AgentEvent;
    use crate::media::commit::dh_commitment;
    use crate::media::sdp::{answer, LocalMedia};
    use crate::sip::driver::Core;
    use crate::sip::message::Message;
    let mut bob = bob_agent();
    let (call, ok, offer) = offerless_call_answered(&mut bob, "mirror-test");
    let commit = offer.dh_commit.expect("the offer in the 2xx commits");
    assert!(offer.dh.is_none(), "no key in the 2xx: {offer:?}");
    assert!(bob.poll_media().is_none(), "nothing starts before the ACK");

    let policy = MediaPolicy::default();
    let local = LocalMedia {
        rtp_addr: "127.0.0.1:4002".parse().unwrap(),
        codecs: policy.codecs.clone(),
        suites: policy.suites.clone(),
        policy: policy.security,
        media_keys: policy.media_keys,
        direction: crate::media::sdp::Direction::SendRecv,
        session_id: 77,
        session_version: 1,
        ice: None,
    };
    let (desc, waiting) = answer(&local, Role::Caller, &offer, None).unwrap();
    assert!(desc.dh.is_some(), "alice's answer carries her key");
    bob.handle_datagram(
        Instant::now(),
        from_proxy(),
        ack_with(&ok, "mirror-test", &desc.to_sdp()).as_bytes(),
    );
    let sent: Vec<Message> = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .collect();
    let reveal_info = sent
        .iter()
        .find(|m| m.method() == Some(rsip::Method::Info))
        .unwrap_or_else(|| panic!("bob reveals in an INFO: {sent:?}"));
    assert_eq!(reveal_info.call_id(), Some("mirror-test"));
    let value = reveal_info.header("Ibesip-Dh").expect("Ibesip-Dh");
    let key: [u8; 32] = URL_SAFE_NO_PAD.decode(value).unwrap().try_into().unwrap();
    assert_eq!(
        dh_commitment(&key),
        commit,
        "the reveal opens the commitment"
    );
    let alice_keys = waiting.finish(Some(&key)).unwrap();

    let events: Vec<AgentEvent> = std::iter::from_fn(|| bob.poll_event()).collect();
    let sas = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::MediaStarted {
                call: c,
                escrow_resistant: true,
                sas,
                ..
            } if *c == call => sas.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("escrow-resistant media with a SAS: {events:?}"));
    assert_eq!(Some(sas), info(&alice_keys).sas, "one SAS on both sides");
    let Some(MediaAction::Start { negotiated, .. }) = bob.poll_media() else {
        panic!("bob starts media");
    };
    let bob_addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
    assert!(decrypts(&alice_keys, bob_addr, &packet(&negotiated, 1)));
}

/// Offer in our 2xx, and an ACK without the answer (RFC 3261 13.2.1
/// requires it there): no media starts, no key is revealed, and bob ends
/// the call.
#[test]
fn an_ack_without_the_answer_to_our_2xx_offer_ends_the_call() {
    use crate::sip::driver::Core;
    use crate::sip::message::Message;
    let mut bob = bob_agent();
    let (_, ok, _) = offerless_call_answered(&mut bob, "mirror-noanswer");
    bob.handle_datagram(
        Instant::now(),
        from_proxy(),
        ack_with(&ok, "mirror-noanswer", "").as_bytes(),
    );
    let sent: Vec<Message> = std::iter::from_fn(|| bob.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .collect();
    assert!(
        !sent.iter().any(|m| m.header("Ibesip-Dh").is_some()),
        "no reveal: {sent:?}"
    );
    assert!(
        sent.iter().any(|m| m.method() == Some(rsip::Method::Bye)),
        "bob hangs up: {sent:?}"
    );
    assert!(bob.poll_media().is_none());
}

/// Ports that move: every allocation a new port with new ICE credentials
/// (host candidate only), as after a network change.
struct MovingPorts {
    base: u16,
    n: u16,
    ice: HashMap<u64, IceParams>,
}

impl MovingPorts {
    fn new(base: u16) -> Self {
        MovingPorts {
            base,
            n: 0,
            ice: HashMap::new(),
        }
    }
}

impl MediaPorts for MovingPorts {
    fn allocate(&mut self, call: u64) -> Result<SocketAddr, String> {
        self.n += 1;
        let a = SocketAddr::from(([127, 0, 0, 1], self.base + self.n));
        let ice = crate::media::ice::LocalIce::new(a).map_err(|e| e.to_string())?;
        self.ice.insert(call, ice.params());
        Ok(a)
    }
    fn release(&mut self, _call: u64) {}
    fn ice(&self, call: u64) -> Option<IceParams> {
        self.ice.get(&call).cloned()
    }
}

/// A network change: alice's restart offer names a new port and new ICE
/// credentials, with a fresh commitment; bob sees an ICE restart and
/// answers from a new port with new credentials too; the exchange
/// completes as any re-INVITE (same SAS both sides, escrow-resistant) and
/// both move their session (`Restart`), where a hold only re-keys in
/// place (`Update`). A refused restart leaves the old media in force.
#[test]
fn a_restart_moves_both_sides_to_new_ports_with_new_ice_credentials() {
    let mut a = MediaCalls::new(MediaPolicy::default(), Box::new(MovingPorts::new(4000)));
    let mut b = MediaCalls::new(MediaPolicy::default(), Box::new(MovingPorts::new(5000)));
    call(&mut a, &mut b);
    let (na0, nb0) = (started(&mut a), started(&mut b));
    let (alice_ice, bob_ice) = (nb0.remote_ice.unwrap(), na0.remote_ice.unwrap());
    // Hold and resume: same ports, same credentials, re-keyed in place.
    for on in [true, false] {
        reinvite(&mut a, &mut b, on);
        assert!(matches!(a.poll_action(), Some(MediaAction::Update { .. })));
        assert!(matches!(b.poll_action(), Some(MediaAction::Update { .. })));
    }
    assert_eq!(a.running(), vec![1]);
    let offer = a.restart(1).unwrap();
    let od = desc(&offer);
    assert_eq!(od.rtp_addr, SocketAddr::from(([127, 0, 0, 1], 4002)));
    let offered_ice = od.ice.clone().unwrap();
    assert_ne!(offered_ice.ufrag, alice_ice.ufrag);
    assert_ne!(offered_ice.pwd, alice_ice.pwd);
    assert!(od.dh_commit.is_some(), "the restart commits to a fresh key");
    assert_eq!(od.direction, Direction::SendRecv);
    let reveal = a.reveal(1);
    let (answer, shown) = b.reinvite(7, &offer).unwrap();
    assert_eq!(shown, None, "bob moves only once the reveal checked");
    assert!(b.poll_action().is_none());
    let ad = desc(&answer);
    assert_eq!(ad.rtp_addr, SocketAddr::from(([127, 0, 0, 1], 5002)));
    let answered_ice = ad.ice.clone().unwrap();
    assert_ne!(answered_ice.ufrag, bob_ice.ufrag, "bob restarts too");
    let ia = a.reinvite_response(1, 200, &answer).unwrap().unwrap();
    let ib = b
        .ack(7, reveal.as_deref(), &Body::default())
        .unwrap()
        .unwrap();
    assert!(ia.escrow_resistant && ib.escrow_resistant);
    assert_eq!(ia.sas, ib.sas);
    match (a.poll_action(), b.poll_action()) {
        (
            Some(MediaAction::Restart {
                call: 1,
                negotiated: na,
            }),
            Some(MediaAction::Restart {
                call: 7,
                negotiated: nb,
            }),
        ) => {
            assert_eq!(na.remote, ad.rtp_addr);
            assert_eq!(na.remote_ice, Some(answered_ice));
            assert!(na.ice_controlling);
            assert_eq!(nb.remote, od.rtp_addr);
            assert_eq!(nb.remote_ice, Some(offered_ice));
            assert!(!nb.ice_controlling);
        }
        other => panic!("expected two restarts, got {other:?}"),
    }
    // A refused restart: the old port and credentials stay ours.
    let offer = a.restart(1).unwrap();
    assert_eq!(desc(&offer).rtp_addr.port(), 4003);
    assert!(matches!(
        a.reinvite_response(1, 488, &Body::default()),
        Err(CallMediaError::Refused(488))
    ));
    assert!(a.poll_action().is_none());
    let held = desc(&a.hold(1, true).unwrap());
    assert_eq!(held.rtp_addr.port(), 4002);
    assert_eq!(held.ice.unwrap().ufrag, od.ice.unwrap().ufrag);
}

/// A move that cannot go at once is remembered: while our hold offer is
/// pending the restart waits (`restart_wanted` once the hold completed);
/// a refused restart gives its port back and is wanted again (the agent
/// retries after glare or a timeout, drops it otherwise).
#[test]
fn a_move_waits_for_the_exchange_in_flight() {
    let mut a = MediaCalls::new(MediaPolicy::default(), Box::new(MovingPorts::new(4000)));
    let mut b = MediaCalls::new(MediaPolicy::default(), Box::new(MovingPorts::new(5000)));
    call(&mut a, &mut b);
    started(&mut a);
    started(&mut b);
    let offer = a.hold(1, true).unwrap();
    let reveal = a.reveal(1);
    assert!(matches!(a.restart(1), Err(CallMediaError::Pending(1))));
    assert!(!a.restart_wanted(1), "not while the hold is in flight");
    let (answer, _) = b.reinvite(7, &offer).unwrap();
    a.reinvite_response(1, 200, &answer).unwrap();
    b.ack(7, reveal.as_deref(), &Body::default()).unwrap();
    assert!(a.restart_wanted(1), "the hold is done: the move goes now");
    let offer = a.restart(1).unwrap();
    assert!(!a.restart_wanted(1));
    assert_eq!(desc(&offer).direction, Direction::SendOnly, "still held");
    assert!(matches!(
        a.reinvite_response(1, 491, &Body::default()),
        Err(CallMediaError::Refused(491))
    ));
    assert!(a.restart_wanted(1), "glare: to try again");
    a.drop_restart(1);
    assert!(!a.restart_wanted(1));
    assert!(a.is_caller(1) && !b.is_caller(7));
}
