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
        "a=ibesip-dh:",
        "a=sendrecv\r\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(&round_trip(offer.offer()), offer.offer());
}

fn exchange(
    a: LocalMedia,
    b: LocalMedia,
) -> Result<(Negotiated, Negotiated, AudioDescription, AudioDescription), SdpError> {
    let pending = PendingOffer::new(a, Role::Caller)?;
    let offer = round_trip(pending.offer());
    let (ans, nb) = answer(&b, Role::Callee, &offer)?;
    let ans = round_trip(&ans);
    let na = pending.accept_answer(&ans)?;
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
    let (to_alice, _) = answer(&mallory_to_alice, Role::Callee, pending.offer()).unwrap();
    let na = pending.accept_answer(&to_alice).unwrap();
    let mallory_offer = PendingOffer::new(local(6001), Role::Caller).unwrap();
    let (_, nb) = answer(&local(5000), Role::Callee, mallory_offer.offer()).unwrap();
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
        answer(&local(5000), Role::Callee, &plain_offer()).unwrap_err(),
        SdpError::PlainRefused
    );
    let mut b = local(5000);
    b.policy = SecurityPolicy::AllowPlain;
    let (ans, nb) = answer(&b, Role::Callee, &plain_offer()).unwrap();
    assert!(ans.to_sdp().contains("RTP/AVP 0 101"));
    assert_eq!(nb.security, MediaSecurity::Plain);
    assert!(nb.keys.is_none());
}

#[test]
fn answer_that_does_not_fit_is_refused() {
    let pending = PendingOffer::new(local(4000), Role::Caller).unwrap();
    let (mut ans, _) = answer(&local(5000), Role::Callee, pending.offer()).unwrap();
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

proptest! {
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
            let _ = answer(&local(5000), Role::Callee, &d);
        }
    }

    #[test]
    fn description_round_trips(port in 1u16.., ver in any::<u64>(), dir in 0usize..4, pcma_first in any::<bool>(), dh in proptest::option::of(any::<[u8; 32]>())) {
        let dirs = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive];
        let mut d = PendingOffer::new(local(port), Role::Caller).unwrap().offer().clone();
        d.session_version = ver;
        d.direction = dirs[dir];
        d.dh = dh;
        if pcma_first { d.codecs.reverse(); }
        prop_assert_eq!(round_trip(&d), d);
    }
}
