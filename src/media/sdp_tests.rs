use super::*;
use crate::media::keys::{Role, SrtpSuite};
use proptest::prelude::*;

fn local(port: u16) -> LocalMedia {
    LocalMedia {
        rtp_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        suites: vec![SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80],
        policy: SecurityPolicy::Require,
        media_keys: MediaKeysPolicy::EscrowResistant,
        direction: Direction::SendRecv,
        session_id: 42,
        session_version: 1,
        ice: None,
    }
}

fn round_trip(d: &AudioDescription) -> AudioDescription {
    AudioDescription::parse(&d.to_sdp()).unwrap()
}

#[test]
fn offer_text_has_every_line() {
    let offer = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let text = offer.offer().to_sdp();
    for needle in [
        "v=0\r\n",
        "c=IN IP4 127.0.0.1\r\n",
        "m=audio 4000 RTP/SAVP 0 8 101\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:8 PCMA/8000\r\n",
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=fmtp:101 0-16\r\n",
        "a=ptime:20\r\n",
        "a=crypto:1 AEAD_AES_128_GCM inline:",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:",
        "a=ibesip-dh-commit:",
        "a=sendrecv\r\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(&round_trip(offer.offer()), offer.offer());
    // Version 1.1: the offer commits to its key and does not show it.
    assert!(!text.contains("a=ibesip-dh:"), "{text}");
    assert!(
        !text.contains("a=ibesip-rs:"),
        "no retained secret held: {text}"
    );
}

fn exchange(
    a: LocalMedia,
    b: LocalMedia,
) -> Result<(Negotiated, Negotiated, AudioDescription, AudioDescription), SdpError> {
    let pending = PendingOffer::new(a, Role::Caller)?;
    let offer = round_trip(pending.offer());
    let (ans, nb) = answer(&b, Role::Callee, &offer, None)?;
    let ans = round_trip(&ans);
    let reveal = pending.reveal();
    let na = pending.accept_answer(&ans)?;
    let nb = nb
        .finish(reveal.as_ref())
        .map_err(|_| SdpError::AnswerMismatch("reveal"))?;
    Ok((na, nb, offer, ans))
}

#[test]
fn both_sides_agree_keys_and_sas() {
    let (na, nb, _, _) = exchange(local(4000), local(5000)).unwrap();
    let (ka, kb) = (na.keys.clone().unwrap(), nb.keys.clone().unwrap());
    assert_eq!(ka.send, kb.recv);
    assert_eq!(ka.recv, kb.send);
    assert_ne!(ka.send, ka.recv);
    let (
        MediaSecurity::EscrowResistant { sas: sa, .. },
        MediaSecurity::EscrowResistant { sas: sb, .. },
    ) = (na.security, nb.security)
    else {
        panic!("expected escrow-resistant keys: {:?}", na.security);
    };
    assert_eq!(sa, sb);
    assert_eq!(na.remote.port(), 5000);
    assert_eq!(nb.remote.port(), 4000);
    assert_eq!(na.codec, Codec::Pcmu);
    assert_eq!(na.telephone_event, Some(101));
}

#[test]
fn gcm_is_chosen_when_both_offer_it() {
    let (na, _, _, ans) = exchange(local(4000), local(5000)).unwrap();
    assert_eq!(ans.crypto.len(), 1);
    assert_eq!(ans.crypto[0].key.suite(), SrtpSuite::AeadAes128Gcm);
    assert!(matches!(
        na.security,
        MediaSecurity::EscrowResistant {
            suite: SrtpSuite::AeadAes128Gcm,
            ..
        }
    ));
    let mut b = local(5000);
    b.suites = vec![SrtpSuite::AesCm128HmacSha1_80];
    let (na, _, _, _) = exchange(local(4000), b).unwrap();
    assert_eq!(
        na.keys.unwrap().send.suite(),
        SrtpSuite::AesCm128HmacSha1_80
    );
}

#[test]
fn codec_follows_the_offerers_preference() {
    let mut a = local(4000);
    a.codecs = vec![Codec::Pcma, Codec::Pcmu];
    let (na, nb, _, _) = exchange(a, local(5000)).unwrap();
    assert_eq!((na.codec, nb.codec), (Codec::Pcma, Codec::Pcma));
    let mut b = local(5000);
    b.codecs = vec![];
    assert_eq!(
        exchange(local(4000), b).unwrap_err(),
        SdpError::NoCommonCodec
    );
}

#[test]
fn man_in_the_middle_rewriting_dh_changes_the_sas() {
    // Mallory (e.g. the PKG re-sealing the tunnel) replaces a=ibesip-dh in
    // both directions with her own keys and answers each side herself.
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let mallory_to_alice = local(6000);
    let (to_alice, _) = answer(&mallory_to_alice, Role::Callee, pending.offer(), None).unwrap();
    let na = pending.accept_answer(&to_alice).unwrap();
    let mallory_offer = PendingOffer::new(local(6001), Role::Caller).unwrap();
    let (_, nb) = answer(&local(5000), Role::Callee, mallory_offer.offer(), None).unwrap();
    let nb = nb.finish(mallory_offer.reveal().as_ref()).unwrap();
    let (
        MediaSecurity::EscrowResistant { sas: sa, .. },
        MediaSecurity::EscrowResistant { sas: sb, .. },
    ) = (na.security, nb.security)
    else {
        panic!("expected escrow-resistant keys");
    };
    assert_ne!(
        sa, sb,
        "a rewritten a=ibesip-dh must show as different SAS values"
    );
}

#[test]
fn peer_without_dh_gets_sdes_only() {
    let mut b = local(5000);
    b.media_keys = MediaKeysPolicy::ProviderRecoverable;
    let (na, nb, _, ans) = exchange(local(4000), b).unwrap();
    assert!(
        ans.dh.is_none(),
        "provider-recoverable never sends ibesip-dh"
    );
    assert!(!ans.to_sdp().contains("ibesip-dh"));
    assert!(matches!(
        na.security,
        MediaSecurity::SdesOnly {
            reason: SdesOnlyReason::PeerWithoutDh,
            ..
        }
    ));
    assert!(matches!(
        nb.security,
        MediaSecurity::SdesOnly {
            reason: SdesOnlyReason::OwnProviderRecoverable,
            ..
        }
    ));
    let (ka, kb) = (na.keys.unwrap(), nb.keys.unwrap());
    assert_eq!(ka.send, kb.recv);
    assert_eq!(ka.recv, kb.send);
}

fn plain_offer() -> AudioDescription {
    let mut o = PendingOffer::new(local(4000), Role::Caller)
        .unwrap()
        .offer()
        .clone();
    o.secure = false;
    o.crypto.clear();
    o.dh = None;
    round_trip(&o)
}

#[test]
fn plain_offer_needs_allow_plain() {
    assert_eq!(
        answer(&local(5000), Role::Callee, &plain_offer(), None).unwrap_err(),
        SdpError::PlainRefused
    );
    let mut b = local(5000);
    b.policy = SecurityPolicy::AllowPlain;
    let (ans, nb) = answer(&b, Role::Callee, &plain_offer(), None).unwrap();
    let nb = nb.finish(None).unwrap();
    assert!(ans.to_sdp().contains("RTP/AVP 0 101"));
    assert_eq!(nb.security, MediaSecurity::Plain);
    assert!(nb.keys.is_none());
}

#[test]
fn answer_that_does_not_fit_is_refused() {
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let (mut ans, _) = answer(&local(5000), Role::Callee, pending.offer(), None).unwrap();
    ans.crypto[0].tag = 9;
    assert!(matches!(
        pending.accept_answer(&ans),
        Err(SdpError::AnswerMismatch(_))
    ));
}

#[test]
fn hold_directions() {
    assert_eq!(
        Direction::answer_to(Direction::SendOnly, Direction::SendRecv),
        Direction::RecvOnly
    );
    assert_eq!(
        Direction::answer_to(Direction::RecvOnly, Direction::SendRecv),
        Direction::SendOnly
    );
    assert_eq!(
        Direction::answer_to(Direction::Inactive, Direction::SendRecv),
        Direction::Inactive
    );
    assert_eq!(
        Direction::answer_to(Direction::SendRecv, Direction::SendRecv),
        Direction::SendRecv
    );
    let mut a = local(4000);
    a.direction = Direction::SendOnly;
    let (na, nb, _, ans) = exchange(a, local(5000)).unwrap();
    assert_eq!(ans.direction, Direction::RecvOnly);
    assert_eq!(
        (na.direction, nb.direction),
        (Direction::SendOnly, Direction::RecvOnly)
    );
}

#[test]
fn rekeying_gives_new_keys() {
    let (n1, _, _, _) = exchange(local(4000), local(5000)).unwrap();
    let mut a = local(4000);
    a.session_version = 2;
    let (n2, _, _, _) = exchange(a, local(5000)).unwrap();
    assert_ne!(n1.keys.unwrap().send, n2.keys.unwrap().send);
}

#[test]
fn strict_parser_refusals() {
    let good = PendingOffer::new(local(4000), Role::Caller)
        .unwrap()
        .offer()
        .to_sdp();
    let cases = [
        good.replace("v=0", "v=1"),
        good.replace("m=audio 4000", "m=audio 0"),
        good.replace("m=audio", "m=video"),
        good.replace("RTP/SAVP", "UDP/TLS/RTP/SAVPF"),
        good.replace("c=IN IP4 127.0.0.1", "c=IN IP4 host.invalid"),
        good.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
        good.replace("a=sendrecv", "a=sendrecv\r\na=sendonly"),
        format!("{good}m=audio 5 RTP/SAVP 0\r\n"),
        good.replace("a=ptime:20", "a=ptime:0"),
        good.replace("s=-\r\n", ""),
        good.replace("c=IN IP4 127.0.0.1\r\n", ""),
        good.replace("inline:", "inline:!"),
        good.replace("\r\nt=0 0", "\r\nxx=0 0"),
        "x".repeat(MAX_SDP_LEN + 1),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(
            AudioDescription::parse(c).is_err(),
            "case {i} accepted:\n{c}"
        );
    }
}

#[test]
fn plain_rtpmap_mismatch_is_ignored() {
    // PT 0 claimed as something else is not PCMU.
    let good = PendingOffer::new(local(4000), Role::Caller)
        .unwrap()
        .offer()
        .to_sdp();
    let d = AudioDescription::parse(&good.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 opus/48000"))
        .unwrap();
    assert_eq!(d.codecs, vec![Codec::Pcma]);
}

fn local_opus(port: u16) -> LocalMedia {
    let mut l = local(port);
    l.codecs = vec![Codec::Opus, Codec::Pcmu, Codec::Pcma];
    l
}

#[test]
fn opus_offer_text() {
    let offer = PendingOffer::new(local_opus(4000), Role::Caller).unwrap();
    let text = offer.offer().to_sdp();
    for needle in [
        "m=audio 4000 RTP/SAVP 111 0 8 101 110\r\n",
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-16\r\n",
        "a=ptime:20\r\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(&round_trip(offer.offer()), offer.offer());
    // Opus alone: no 8 kHz telephone-event.
    let mut only = local(4000);
    only.codecs = vec![Codec::Opus];
    let text = PendingOffer::new(only, Role::Caller)
        .unwrap()
        .offer()
        .to_sdp();
    assert!(text.contains("m=audio 4000 RTP/SAVP 111 110\r\n"), "{text}");
    assert!(!text.contains("telephone-event/8000"), "{text}");
}

#[test]
fn opus_is_chosen_when_both_have_it_with_its_telephone_event() {
    let (na, nb, _, ans) = exchange(local_opus(4000), local_opus(5000)).unwrap();
    assert_eq!((na.codec, nb.codec), (Codec::Opus, Codec::Opus));
    assert_eq!((na.payload_type, nb.payload_type), (111, 111));
    assert_eq!(
        (na.telephone_event, nb.telephone_event),
        (Some(110), Some(110))
    );
    let text = ans.to_sdp();
    assert!(text.contains("m=audio 5000 RTP/SAVP 111 110\r\n"), "{text}");
    assert!(
        text.contains("a=fmtp:111 minptime=10;useinbandfec=1"),
        "{text}"
    );
    assert!(!text.contains("telephone-event/8000"), "{text}");
}

#[test]
fn g711_peer_gets_g711_and_the_8k_telephone_event() {
    // We offer Opus first; a peer without it answers PCMU.
    let (na, nb, _, ans) = exchange(local_opus(4000), local(5000)).unwrap();
    assert_eq!((na.codec, nb.codec), (Codec::Pcmu, Codec::Pcmu));
    assert_eq!((na.payload_type, na.telephone_event), (0, Some(101)));
    assert_eq!(ans.telephone_event_48k, None);
    // A G.711-only offer to an Opus-first answerer.
    let (na, nb, _, _) = exchange(local(4000), local_opus(5000)).unwrap();
    assert_eq!((na.codec, nb.codec), (Codec::Pcmu, Codec::Pcmu));
    // The offerer's order decides: PCMA first over our Opus.
    let mut a = local_opus(4000);
    a.codecs = vec![Codec::Pcma, Codec::Opus];
    let (na, nb, _, _) = exchange(a, local_opus(5000)).unwrap();
    assert_eq!((na.codec, nb.codec), (Codec::Pcma, Codec::Pcma));
}

#[test]
fn opus_on_a_foreign_payload_type_is_answered_on_it() {
    // A peer (baresip, a WebRTC gateway) may put Opus on 96 and its
    // 48 kHz telephone-event on 97.
    let pending = PendingOffer::new(local_opus(4000), Role::Caller).unwrap();
    let text = pending
        .offer()
        .to_sdp()
        .replace("111", "96")
        .replace(" 110", " 97")
        .replace(":110", ":97");
    let offer = AudioDescription::parse(&text).unwrap();
    assert_eq!(offer.opus_pt, Some(96));
    assert_eq!(offer.telephone_event_48k, Some(97));
    let (ans, nb) = answer(&local_opus(5000), Role::Callee, &offer, None).unwrap();
    let AnswerOutcome::AwaitingReveal(nb) = nb else {
        panic!("a committed offer waits for the reveal");
    };
    let nb = nb.reveal(pending.reveal().as_ref()).unwrap();
    assert_eq!(
        (nb.codec, nb.payload_type, nb.telephone_event),
        (Codec::Opus, 96, Some(97))
    );
    let t = ans.to_sdp();
    assert!(
        t.contains("RTP/SAVP 96 97\r\n") && t.contains("a=rtpmap:96 opus/48000/2"),
        "{t}"
    );
    // Opus claimed on a static type, or at another rate, is not Opus.
    for bad in ["a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus/16000/2"] {
        let t = text.replace("a=rtpmap:96 opus/48000/2", &bad.replace("96", "3"));
        let d = AudioDescription::parse(&t).unwrap();
        assert!(!d.codecs.contains(&Codec::Opus), "{bad}");
        assert_eq!(d.opus_pt, None);
    }
    let d = AudioDescription::parse(&text.replace("opus/48000/2", "opus/16000/2")).unwrap();
    assert!(!d.codecs.contains(&Codec::Opus));
}

#[test]
fn answer_without_the_48k_event_means_no_dtmf_in_an_opus_call() {
    let pending = PendingOffer::new(local_opus(4000), Role::Caller).unwrap();
    let (mut ans, _) = answer(&local_opus(5000), Role::Callee, pending.offer(), None).unwrap();
    ans.telephone_event_48k = None;
    ans.telephone_event = Some(101);
    let na = pending.accept_answer(&round_trip(&ans)).unwrap();
    assert_eq!((na.codec, na.telephone_event), (Codec::Opus, None));
}

proptest! {
    #[test]
    fn any_codec_order_negotiates_a_common_codec(
        a in proptest::sample::subsequence(vec![Codec::Opus, Codec::Pcmu, Codec::Pcma], 1..=3),
        b in proptest::sample::subsequence(vec![Codec::Opus, Codec::Pcmu, Codec::Pcma], 1..=3),
        rot_a in 0usize..3,
        rot_b in 0usize..3,
    ) {
        let (mut a, mut b) = (a, b);
        let (ra, rb) = (rot_a % a.len(), rot_b % b.len());
        a.rotate_left(ra);
        b.rotate_left(rb);
        let (mut la, mut lb) = (local(4000), local(5000));
        la.codecs = a.clone();
        lb.codecs = b.clone();
        match exchange(la, lb) {
            Ok((na, nb, _, ans)) => {
                // The offerer's first codec the answerer has.
                let want = a.iter().copied().find(|c| b.contains(c));
                prop_assert_eq!(Some(na.codec), want);
                prop_assert_eq!(na.codec, nb.codec);
                prop_assert_eq!(na.payload_type, nb.payload_type);
                prop_assert_eq!(na.telephone_event, nb.telephone_event);
                let te = if na.codec == Codec::Opus { 110 } else { 101 };
                prop_assert_eq!(na.telephone_event, Some(te));
                prop_assert_eq!(ans.codecs.len(), 1);
            }
            Err(e) => {
                prop_assert_eq!(e, SdpError::NoCommonCodec);
                prop_assert!(a.iter().all(|c| !b.contains(c)));
            }
        }
    }

    #[test]
    fn parse_never_panics(s in "\\PC*") {
        let _ = AudioDescription::parse(&s);
    }

    #[test]
    fn mutated_offers_never_panic(cut in 0usize..2000, junk in "[ -~]{0,12}") {
        let good = PendingOffer::new(local(4000), Role::Caller).unwrap().offer().to_sdp();
        let at = good.char_indices().map(|(i, _)| i).nth(cut % good.len()).unwrap_or(0);
        let mut m = good.clone();
        m.insert_str(at, &junk);
        if let Ok(d) = AudioDescription::parse(&m) {
            let _ = answer(&local(5000), Role::Callee, &d, None);
        }
    }

    #[test]
    fn description_round_trips(port in 1u16.., ver in any::<u64>(), dir in 0usize..4, pcma_first in any::<bool>(), opus in any::<bool>(), dh in proptest::option::of(any::<[u8; 32]>())) {
        let dirs = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive];
        let l = if opus { local_opus(port) } else { local(port) };
        let mut d = PendingOffer::new(l, Role::Caller).unwrap().offer().clone();
        d.session_version = ver;
        d.direction = dirs[dir];
        d.dh = dh;
        if pcma_first { d.codecs.reverse(); }
        prop_assert_eq!(round_trip(&d), d);
    }
}

#[test]
fn committed_exchange_checks_the_reveal_and_proves_rs() {
    use crate::media::commit::{dh_commitment, RetainedSecret};
    let rs = RetainedSecret::from_bytes([5; 32]);
    let pending = PendingOffer::with_retained(local(4000), Role::Caller, Some(rs.clone())).unwrap();
    let offer = round_trip(pending.offer());
    let a = pending.reveal().unwrap();
    assert_eq!(offer.dh_commit, Some(dh_commitment(&a)));
    assert_eq!(offer.rs_mac, Some(rs.mac(&dh_commitment(&a))));
    let (ans, waiting) = answer(&local(5000), Role::Callee, &offer, Some(&rs)).unwrap();
    let ans = round_trip(&ans);
    let b = ans.dh.unwrap();
    assert_eq!(ans.rs_mac, Some(rs.mac(&b)));
    assert!(ans.dh_commit.is_none());
    let AnswerOutcome::AwaitingReveal(p) = waiting else {
        panic!("a committed offer waits for its reveal");
    };
    assert_eq!(p.continuity(), Continuity::Verified);
    let na = pending.accept_answer(&ans).unwrap();
    let mut wrong = a;
    wrong[0] ^= 1;
    let (_, again) = answer(&local(5000), Role::Callee, &offer, None).unwrap();
    assert_eq!(
        again.finish(Some(&wrong)).unwrap_err(),
        RevealError::Mismatch
    );
    let (_, again) = answer(&local(5000), Role::Callee, &offer, None).unwrap();
    assert_eq!(again.finish(None).unwrap_err(), RevealError::Missing);
    let nb = p.reveal(Some(&a)).unwrap();
    assert_eq!(
        na.keys.as_ref().unwrap().send,
        nb.keys.as_ref().unwrap().recv
    );
    assert_eq!(na.retained, nb.retained, "both keep the same rs");
    assert!(na.retained.is_some());
    for n in [&na, &nb] {
        assert!(matches!(
            n.security,
            MediaSecurity::EscrowResistant {
                continuity: Continuity::Verified,
                ..
            }
        ));
    }
}

#[test]
fn duplicate_or_malformed_commitments_are_refused() {
    let text = PendingOffer::new(local(4000), Role::Caller)
        .unwrap()
        .offer()
        .to_sdp();
    let line = text
        .lines()
        .find(|l| l.starts_with("a=ibesip-dh-commit:"))
        .unwrap()
        .to_string();
    let twice = text.replace(&line, &format!("{line}\r\n{line}"));
    assert!(AudioDescription::parse(&twice).is_err());
    let short = text.replace(&line, "a=ibesip-dh-commit:AAAA");
    assert!(matches!(
        AudioDescription::parse(&short),
        Err(SdpError::Attr(_))
    ));
    let rs_twice = text.replace(
        &line,
        &format!("{line}\r\na=ibesip-rs:{0}\r\na=ibesip-rs:{0}", &line[19..]),
    );
    assert!(AudioDescription::parse(&rs_twice).is_err());
}

fn with_ice(port: u16) -> LocalMedia {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    LocalMedia {
        ice: Some(crate::media::ice::LocalIce::new(addr).unwrap().params()),
        ..local(port)
    }
}

/// ICE runs only when both sides offer it; the offerer controls.
#[test]
fn ice_is_negotiated_only_when_both_sides_run_it() {
    // Both: each side learns the other's parameters, through the text.
    let pending = PendingOffer::new(with_ice(4000), Role::Caller).unwrap();
    let offer = round_trip(pending.offer());
    assert_eq!(offer.ice, pending.offer().ice);
    let (ans, outcome) = answer(&with_ice(5000), Role::Callee, &offer, None).unwrap();
    let ans = round_trip(&ans);
    let nb = outcome.finish(pending.reveal().as_ref()).unwrap();
    assert_eq!(nb.remote_ice, offer.ice);
    assert!(!nb.ice_controlling);
    let na = pending.accept_answer(&ans).unwrap();
    assert_eq!(na.remote_ice, ans.ice);
    assert!(na.remote_ice.is_some() && na.ice_controlling);

    // Offer without ICE (an old phone): the answer carries none.
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let (ans, outcome) = answer(&with_ice(5000), Role::Callee, pending.offer(), None).unwrap();
    assert!(ans.ice.is_none() && !ans.to_sdp().contains("a=ice-"));
    assert!(outcome
        .finish(pending.reveal().as_ref())
        .unwrap()
        .remote_ice
        .is_none());

    // Answer without ICE to our ICE offer: none used.
    let pending = PendingOffer::new(with_ice(4000), Role::Caller).unwrap();
    let (ans, _) = answer(&local(5000), Role::Callee, pending.offer(), None).unwrap();
    assert!(pending.accept_answer(&ans).unwrap().remote_ice.is_none());
}

#[test]
fn malformed_ice_credentials_refuse_the_body() {
    let text = PendingOffer::new(with_ice(4000), Role::Caller)
        .unwrap()
        .offer()
        .to_sdp();
    assert!(AudioDescription::parse(&text).is_ok());
    let twice = text.replace("a=sendrecv", "a=ice-ufrag:zzzz\r\na=sendrecv");
    assert!(matches!(
        AudioDescription::parse(&twice),
        Err(SdpError::Ice(_))
    ));
    let bad = text.replace("a=ice-ufrag:", "a=ice-ufrag:bad!");
    assert!(matches!(
        AudioDescription::parse(&bad),
        Err(SdpError::Ice(_))
    ));
}

/// RFC 5761: our offer says `a=rtcp-mux`, through the text; the answer
/// says it only when the offer did; RTCP is negotiated only when both did.
#[test]
fn rtcp_mux_is_offered_and_answered() {
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let text = pending.offer().to_sdp();
    assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
    let offer = round_trip(pending.offer());
    assert!(offer.rtcp_mux);
    let (ans, outcome) = answer(&local(5000), Role::Callee, &offer, None).unwrap();
    assert!(ans.to_sdp().contains("a=rtcp-mux\r\n"));
    let ans = round_trip(&ans);
    assert!(ans.rtcp_mux);
    assert!(outcome.finish(pending.reveal().as_ref()).unwrap().rtcp_mux);
    assert!(pending.accept_answer(&ans).unwrap().rtcp_mux);

    // An answer without it (baresip with `rtcp_mux no`): no RTCP.
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let (ans, _) = answer(&local(5000), Role::Callee, pending.offer(), None).unwrap();
    let stripped = ans.to_sdp().replace("a=rtcp-mux\r\n", "");
    let ans = AudioDescription::parse(&stripped).unwrap();
    assert!(!ans.rtcp_mux);
    assert!(!pending.accept_answer(&ans).unwrap().rtcp_mux);

    // An offer without it: the answer does not say it either.
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let stripped = pending.offer().to_sdp().replace("a=rtcp-mux\r\n", "");
    let offer = AudioDescription::parse(&stripped).unwrap();
    let (ans, outcome) = answer(&local(5000), Role::Callee, &offer, None).unwrap();
    assert!(!ans.rtcp_mux && !ans.to_sdp().contains("rtcp-mux"));
    assert!(!outcome.finish(pending.reveal().as_ref()).unwrap().rtcp_mux);

    // Only the exact flag counts (`a=rtcp-mux-only` is another attribute,
    // RFC 8858).
    let other = text.replace("a=rtcp-mux\r\n", "a=rtcp-mux-only\r\n");
    assert!(!AudioDescription::parse(&other).unwrap().rtcp_mux);
}
