use super::*;
use stun::attributes::ATTR_MESSAGE_INTEGRITY;
use stun::error_code::{ErrorCode, CODE_FORBIDDEN};

const USER: &str = "1800000000:alice";
const PASS: &str = "c2VjcmV0IHBhc3N3b3Jk";
const REALM: &str = "atlanta.test";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server() -> TurnServer {
    TurnServer::new(addr("203.0.113.10:3478"), USER.into(), PASS.into())
}

/// The long-term key as the `stun` crate derives it (the client hashes
/// it itself; both must agree).
fn key() -> MessageIntegrity {
    MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), PASS.into())
}

fn decode(raw: &[u8]) -> Message {
    let mut m = Message::new();
    m.raw = raw.to_vec();
    m.decode().unwrap();
    m
}

/// An answer of `class` to `req` with `attrs`, integrity-protected under
/// our key when `mi`.
fn answer(req: &Message, class: MessageClass, attrs: Vec<Box<dyn Setter>>, mi: bool) -> Vec<u8> {
    let mut all: Vec<Box<dyn Setter>> = vec![
        Box::new(req.transaction_id),
        Box::new(MessageType::new(req.typ.method, class)),
    ];
    all.extend(attrs);
    if mi {
        all.push(Box::new(key()));
    }
    let mut m = Message::new();
    m.build(&all).unwrap();
    m.raw
}

fn error(req: &Message, code: u16, nonce: Option<&str>) -> Vec<u8> {
    let mut attrs: Vec<Box<dyn Setter>> = vec![Box::new(ErrorCodeAttribute {
        code: ErrorCode(code),
        reason: b"why".to_vec(),
    })];
    if let Some(n) = nonce {
        attrs.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
        attrs.push(Box::new(TextAttribute::new(ATTR_NONCE, n.into())));
    }
    answer(req, CLASS_ERROR_RESPONSE, attrs, false)
}

const RELAYED: &str = "203.0.113.10:50000";
const MAPPED: &str = "203.0.113.2:40000";

fn allocate_ok(req: &Message, lifetime: u64) -> Vec<u8> {
    let r = addr(RELAYED);
    let m = addr(MAPPED);
    answer(
        req,
        CLASS_SUCCESS_RESPONSE,
        vec![
            Box::new(RelayedAddress {
                ip: r.ip(),
                port: r.port(),
            }),
            Box::new(Lifetime(Duration::from_secs(lifetime))),
            Box::new(XorMappedAddress {
                ip: m.ip(),
                port: m.port(),
            }),
        ],
        true,
    )
}

fn ok(req: &Message) -> Vec<u8> {
    answer(req, CLASS_SUCCESS_RESPONSE, vec![], true)
}

fn sent(c: &mut TurnClient) -> Message {
    decode(&c.poll_transmit().expect("a request was sent"))
}

fn is_auth(m: &Message) -> bool {
    m.contains(ATTR_MESSAGE_INTEGRITY) && key().check(&mut m.clone()).is_ok()
}

/// A client through 401 and a success: allocated at `now`.
pub(crate) fn allocated(now: Instant) -> TurnClient {
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    assert_eq!(
        c.handle_datagram(now, &allocate_ok(&second, 600)),
        TurnReceived::Handled
    );
    assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
    c
}

#[test]
fn allocate_401_then_credentials_then_relayed_address() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    assert!(c.is_allocating());
    let first = sent(&mut c);
    assert_eq!(first.typ, MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    assert!(
        !first.contains(ATTR_MESSAGE_INTEGRITY),
        "first Allocate anonymous"
    );
    let mut rt = RequestedTransport::default();
    rt.get_from(&first).unwrap();
    assert_eq!(rt.protocol, PROTO_UDP);

    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    assert!(c.poll_event().is_none());
    let second = sent(&mut c);
    assert_ne!(second.transaction_id, first.transaction_id);
    assert!(is_auth(&second), "retry under the long-term key");
    let text = |a| TextAttribute::get_from_as(&second, a).unwrap().text;
    assert_eq!(
        (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE)),
        (USER.to_string(), REALM.to_string(), "n1".to_string())
    );

    c.handle_datagram(now, &allocate_ok(&second, 600));
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: addr(RELAYED),
            mapped: Some(addr(MAPPED)),
        })
    );
    assert_eq!(c.relayed(), Some(addr(RELAYED)));
    assert!(c.poll_transmit().is_none());
    // Answered: no retransmission, the next thing due is the refresh.
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(540)));
}

#[test]
fn a_second_401_means_wrong_credentials() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    c.handle_datagram(now, &error(&second, 401, Some("n2")));
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Unauthorized {
            method: "Allocate"
        }))
    );
    assert!(c.is_done());
    assert!(c.poll_transmit().is_none());
    assert!(c.poll_timeout().is_none());
}

#[test]
fn stale_nonce_438_is_retried_with_the_new_nonce() {
    let now = Instant::now();
    let mut c = allocated(now);
    c.permit(now, "198.51.100.7".parse().unwrap());
    let req = sent(&mut c);
    assert_eq!(req.typ.method, METHOD_CREATE_PERMISSION);
    c.handle_datagram(now, &error(&req, 438, Some("n2")));
    let retry = sent(&mut c);
    assert!(is_auth(&retry));
    assert_eq!(
        TextAttribute::get_from_as(&retry, ATTR_NONCE).unwrap().text,
        "n2"
    );
    c.handle_datagram(now, &ok(&retry));
    assert!(c.poll_event().is_none());
    // Endless 438s are not followed.
    c.permit(now, "198.51.100.8".parse().unwrap());
    for i in 0..MAX_AUTH_RETRIES {
        let req = sent(&mut c);
        c.handle_datagram(now, &error(&req, 438, Some(&format!("m{i}"))));
    }
    let req = sent(&mut c);
    c.handle_datagram(now, &error(&req, 438, Some("last")));
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::PermissionRefused {
            error: TurnError::Refused { code: 438, .. },
            ..
        })
    ));
    assert_eq!(c.relayed(), Some(addr(RELAYED)), "the allocation stays");
}

#[test]
fn an_answer_without_xor_relayed_address_fails_the_allocation() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    let m = addr(MAPPED);
    let bad = answer(
        &second,
        CLASS_SUCCESS_RESPONSE,
        vec![
            Box::new(Lifetime(Duration::from_secs(600))),
            Box::new(XorMappedAddress {
                ip: m.ip(),
                port: m.port(),
            }),
        ],
        true,
    );
    c.handle_datagram(now, &bad);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Malformed {
            method: "Allocate",
            why: "no XOR-RELAYED-ADDRESS"
        }))
    );
    assert!(c.relayed().is_none());
}

#[test]
fn unusable_relayed_addresses_and_lifetimes_are_refused() {
    let now = Instant::now();
    let cases: Vec<(SocketAddr, u64, &str)> = vec![
        (addr("0.0.0.0:5000"), 600, "unusable XOR-RELAYED-ADDRESS"),
        (
            addr("[2001:db8::1]:5000"),
            600,
            "unusable XOR-RELAYED-ADDRESS",
        ),
        (addr("203.0.113.10:0"), 600, "unusable XOR-RELAYED-ADDRESS"),
        (addr(RELAYED), 0, "no or zero LIFETIME"),
    ];
    for (relayed, lifetime, why) in cases {
        let mut c = TurnClient::new(server(), now);
        let first = sent(&mut c);
        c.handle_datagram(now, &error(&first, 401, Some("n1")));
        let second = sent(&mut c);
        let bad = answer(
            &second,
            CLASS_SUCCESS_RESPONSE,
            vec![
                Box::new(RelayedAddress {
                    ip: relayed.ip(),
                    port: relayed.port(),
                }),
                Box::new(Lifetime(Duration::from_secs(lifetime))),
            ],
            true,
        );
        c.handle_datagram(now, &bad);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnError::Malformed {
                method: "Allocate",
                why
            })),
            "{relayed} {lifetime}"
        );
    }
}

/// A success without (or with a wrong) MESSAGE-INTEGRITY is not the
/// server's: ignored, and the request times out.
#[test]
fn a_forged_success_is_ignored_and_the_request_times_out() {
    let mut now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    let mut forged = answer(
        &second,
        CLASS_SUCCESS_RESPONSE,
        vec![
            Box::new(RelayedAddress {
                ip: "198.51.100.66".parse().unwrap(),
                port: 6666,
            }),
            Box::new(Lifetime(Duration::from_secs(600))),
        ],
        false,
    );
    c.handle_datagram(now, &forged);
    assert!(c.relayed().is_none() && c.poll_event().is_none());
    // The same with a MESSAGE-INTEGRITY under another password.
    let mut m = decode(&forged);
    MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), "guess".into())
        .add_to(&mut m)
        .unwrap();
    forged = m.raw;
    c.handle_datagram(now, &forged);
    assert!(c.relayed().is_none() && c.poll_event().is_none());
    // Retransmissions at 0.5, 1, 2, 4, 4, 4 s, then given up.
    let mut waits = Vec::new();
    while let Some(due) = c.poll_timeout() {
        waits.push((due - now).as_millis());
        now = due;
        c.handle_timeout(now);
        if let Some(raw) = c.poll_transmit() {
            assert_eq!(raw, second.raw, "a retransmission is the same request");
        }
    }
    assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000, 4000]);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Timeout("Allocate")))
    );
}

/// With a fake clock: the allocation is refreshed 60 s before it ends,
/// permissions every 240 s (under the 300 s they last), channels every
/// 480 s (under 600 s).
#[test]
fn refresh_timers_with_a_fake_clock() {
    let t0 = Instant::now();
    let mut c = allocated(t0);
    let peer = addr("198.51.100.7:7000");
    c.permit(t0, peer.ip());
    let perm = sent(&mut c);
    c.handle_datagram(t0, &ok(&perm));
    // Data before a channel: a Send indication, and a ChannelBind starts.
    let wrapped = c.wrap(t0, peer, b"hello").unwrap();
    let ind = decode(&wrapped);
    assert_eq!(ind.typ, MessageType::new(METHOD_SEND, CLASS_INDICATION));
    let mut d = Data::default();
    d.get_from(&ind).unwrap();
    assert_eq!(d.0, b"hello");
    let bind = sent(&mut c);
    assert_eq!(bind.typ.method, METHOD_CHANNEL_BIND);
    assert!(is_auth(&bind));
    let mut num = ChannelNumber::default();
    num.get_from(&bind).unwrap();
    assert_eq!(num.0, MIN_CHANNEL_NUMBER);
    let t1 = t0 + Duration::from_secs(1);
    c.handle_datagram(t1, &ok(&bind));
    // Now ChannelData.
    let cd = c.wrap(t1, peer, b"hello").unwrap();
    assert_eq!(&cd[..2], &MIN_CHANNEL_NUMBER.to_be_bytes());
    assert_eq!(&cd[4..9], b"hello");
    assert!(is_channel_data(&cd));

    let s = Duration::from_secs;
    assert_eq!(c.poll_timeout(), Some(t0 + s(240)), "permission first");
    let mut now = t0;
    let mut seen = Vec::new();
    while now < t0 + s(1200) {
        now += s(1);
        c.handle_timeout(now);
        while let Some(raw) = c.poll_transmit() {
            let m = decode(&raw);
            assert!(is_auth(&m));
            let name = match m.typ.method {
                METHOD_CREATE_PERMISSION => "permission",
                METHOD_CHANNEL_BIND => "channel",
                METHOD_REFRESH => "refresh",
                _ => "other",
            };
            seen.push((name, (now - t0).as_secs()));
            let reply = if m.typ.method == METHOD_REFRESH {
                answer(
                    &m,
                    CLASS_SUCCESS_RESPONSE,
                    vec![Box::new(Lifetime(REQUESTED_LIFETIME))],
                    true,
                )
            } else {
                ok(&m)
            };
            c.handle_datagram(now, &reply);
        }
    }
    assert_eq!(
        seen,
        [
            ("permission", 240),
            ("permission", 480),
            ("channel", 481),
            ("refresh", 540),
            ("permission", 720),
            ("permission", 960),
            ("channel", 961),
            ("refresh", 1080),
            ("permission", 1200),
        ]
    );
    assert!(c.relayed().is_some());
}

#[test]
fn relayed_data_in_channel_data_and_data_indications() {
    let now = Instant::now();
    let mut c = allocated(now);
    let peer = addr("198.51.100.7:7000");
    let stranger = addr("192.0.2.99:9");
    c.permit(now, peer.ip());
    let perm = sent(&mut c);
    c.handle_datagram(now, &ok(&perm));
    // A Data indication from the permitted peer is relayed data.
    let data_ind = |from: SocketAddr| {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: from.ip(),
                port: from.port(),
            }),
            Box::new(Data(b"srtp".to_vec())),
        ])
        .unwrap();
        m.raw
    };
    assert_eq!(
        c.handle_datagram(now, &data_ind(peer)),
        TurnReceived::Data {
            peer,
            data: b"srtp".to_vec()
        }
    );
    assert_eq!(
        c.handle_datagram(now, &data_ind(stranger)),
        TurnReceived::Handled
    );
    // ChannelData on an unknown channel is dropped; on ours it is data.
    c.wrap(now, peer, b"x").unwrap();
    let bind = sent(&mut c);
    let mut cd = ChannelData {
        data: b"rtp!".to_vec(),
        number: ChannelNumber(MIN_CHANNEL_NUMBER),
        raw: Vec::new(),
    };
    cd.encode();
    assert_eq!(
        c.handle_datagram(now, &cd.raw),
        TurnReceived::Handled,
        "not yet bound"
    );
    c.handle_datagram(now, &ok(&bind));
    assert_eq!(
        c.handle_datagram(now, &cd.raw),
        TurnReceived::Data {
            peer,
            data: b"rtp!".to_vec()
        }
    );
    cd.number = ChannelNumber(MIN_CHANNEL_NUMBER + 5);
    cd.encode();
    assert_eq!(c.handle_datagram(now, &cd.raw), TurnReceived::Handled);
    // Not TURN at all: SRTP.
    assert_eq!(c.handle_datagram(now, &[0x80; 40]), TurnReceived::NotTurn);
}

#[test]
fn a_refused_permission_drops_data_to_that_peer() {
    let now = Instant::now();
    let mut c = allocated(now);
    let private = addr("192.168.1.10:5000");
    c.permit(now, private.ip());
    let req = sent(&mut c);
    c.handle_datagram(now, &error(&req, CODE_FORBIDDEN.0, None));
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::PermissionRefused { peer, error: TurnError::Refused { code: 403, .. } })
            if peer == private.ip()
    ));
    assert!(c.wrap(now, private, b"x").is_none());
    c.permit(now, private.ip());
    assert!(c.poll_transmit().is_none(), "never asked again");
    assert_eq!(c.relayed(), Some(addr(RELAYED)));
}

#[test]
fn permissions_asked_before_the_allocation_are_sent_after_it() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    c.permit(now, "198.51.100.7".parse().unwrap());
    assert!(
        c.wrap(now, addr("198.51.100.7:1"), b"x").is_none(),
        "no relay yet"
    );
    let first = sent(&mut c);
    assert!(c.poll_transmit().is_none());
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    c.handle_datagram(now, &allocate_ok(&second, 600));
    let perm = sent(&mut c);
    assert_eq!(perm.typ.method, METHOD_CREATE_PERMISSION);
    let mut p = PeerAddress::default();
    p.get_from(&perm).unwrap();
    assert_eq!(p.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
}

#[test]
fn close_deallocates_with_lifetime_zero_once() {
    let now = Instant::now();
    let mut c = allocated(now);
    c.close(now);
    let m = sent(&mut c);
    assert_eq!(m.typ, MessageType::new(METHOD_REFRESH, CLASS_REQUEST));
    assert!(is_auth(&m));
    let mut l = Lifetime::default();
    l.get_from(&m).unwrap();
    assert!(l.0.is_zero());
    assert!(c.is_done() && c.relayed().is_none());
    assert!(c.poll_timeout().is_none(), "not retransmitted");
    assert!(c.wrap(now, addr("198.51.100.7:1"), b"x").is_none());
    // Closing before any allocation sends nothing.
    let mut c = TurnClient::new(server(), now);
    c.poll_transmit();
    c.close(now);
    assert!(c.poll_transmit().is_none());
}

#[test]
fn a_lost_allocation_437_on_refresh_fails() {
    let t0 = Instant::now();
    let mut c = allocated(t0);
    let t = t0 + Duration::from_secs(540);
    c.handle_timeout(t);
    let refresh = sent(&mut c);
    c.handle_datagram(t, &error(&refresh, 437, None));
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Refused { code: 437, .. }))
    ));
    assert!(c.relayed().is_none());
}

#[test]
fn the_password_is_never_printed() {
    let now = Instant::now();
    let c = allocated(now);
    let shown = format!("{c:?} {:?}", server());
    assert!(!shown.contains(PASS), "{shown}");
    assert!(shown.contains("[redacted]"));
}

/// Answers a hostile server may send: error answers without ERROR-CODE or
/// NONCE, truncated and garbled messages; none panics, none allocates.
#[test]
fn hostile_answers_are_refused_without_panic() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    // 401 without NONCE.
    let no_nonce = answer(
        &first,
        CLASS_ERROR_RESPONSE,
        vec![Box::new(ErrorCodeAttribute {
            code: CODE_UNAUTHORIZED,
            reason: vec![0xff, 0x00, b'x'],
        })],
        false,
    );
    let good = allocate_ok(&first, 600);
    for bytes in [
        &good[..10],
        &good[..good.len() - 3],
        &[0u8; 20][..],
        &[0x40, 0x00, 0xff, 0xff][..],
        &[][..],
    ] {
        c.handle_datagram(now, bytes);
    }
    assert!(c.poll_event().is_none());
    c.handle_datagram(now, &no_nonce);
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Malformed {
            why: "401/438 without NONCE",
            ..
        }))
    ));
    // Error answer without ERROR-CODE.
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    c.handle_datagram(now, &answer(&first, CLASS_ERROR_RESPONSE, vec![], false));
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Malformed { .. }))
    ));
    // An answer to a transaction we never sent.
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    let mut other = decode(&first.raw);
    other.transaction_id = TransactionId::new();
    other.write_transaction_id();
    c.handle_datagram(now, &error(&other, 401, Some("n")));
    assert!(c.poll_transmit().is_none() && c.poll_event().is_none());
}

proptest::proptest! {
    /// Any bytes from the server, in any state, leave the client usable.
    #[test]
    fn arbitrary_datagrams_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        first in 0u8..0x50,
    ) {
        let now = Instant::now();
        let mut fresh = TurnClient::new(server(), now);
        let mut done = allocated(now);
        done.permit(now, "198.51.100.7".parse().unwrap());
        let mut b = bytes.clone();
        if let Some(x) = b.first_mut() {
            *x = first;
        }
        for c in [&mut fresh, &mut done] {
            c.handle_datagram(now, &bytes);
            c.handle_datagram(now, &b);
            c.handle_timeout(now + Duration::from_secs(1));
            while c.poll_transmit().is_some() {}
        }
    }
}

/// A success answer to the first Allocate, which carried no credentials,
/// is ignored (only a relay without login, or someone on the path, sends
/// one): the request is retransmitted, no relayed address is taken, and
/// the genuine 401 that follows still leads to the allocation.
#[test]
fn a_success_to_the_anonymous_allocate_is_ignored() {
    let now = Instant::now();
    let mut c = TurnClient::new(server(), now);
    let first = sent(&mut c);
    assert!(!is_auth(&first));
    c.handle_datagram(now, &allocate_ok(&first, 600));
    assert!(c.relayed().is_none() && c.poll_event().is_none());
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    assert!(is_auth(&second));
    c.handle_datagram(now, &allocate_ok(&second, 600));
    assert!(c.relayed().is_some());
}

/// Over a stream (TCP or TLS) a request is sent once, never again
/// (RFC 8489 6.2.2), and given up after Ti = 39.5 s; the allocation's
/// XOR-MAPPED-ADDRESS (the TCP mapping) is not offered as the UDP
/// server-reflexive address.
#[test]
fn over_a_stream_requests_are_sent_once_and_the_tcp_mapping_is_not_reported() {
    let now = Instant::now();
    let mut c = TurnClient::new(server().over(ServerTransport::Tcp), now);
    assert!(c.transport().is_stream());
    let first = sent(&mut c);
    for s in 1..39 {
        c.handle_timeout(now + Duration::from_secs(s));
        assert!(c.poll_transmit().is_none(), "retransmitted after {s} s");
    }
    assert_eq!(c.poll_timeout(), Some(now + STREAM_TIMEOUT));
    c.handle_datagram(now, &error(&first, 401, Some("n1")));
    let second = sent(&mut c);
    c.handle_datagram(now, &allocate_ok(&second, 600));
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: addr(RELAYED),
            mapped: None,
        })
    );
    // An unanswered request on a stream times out at Ti.
    let mut c = TurnClient::new(server().over(ServerTransport::Tcp), now);
    sent(&mut c);
    c.handle_timeout(now + STREAM_TIMEOUT - Duration::from_millis(1));
    assert!(c.poll_event().is_none());
    c.handle_timeout(now + STREAM_TIMEOUT);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnError::Timeout("Allocate")))
    );
    assert!(c.poll_transmit().is_none());
}
