//! Deterministic timer tests in milliseconds of fake time.

use super::*;
use crate::sip::Transport;
use std::time::Duration;

fn dest() -> Dest {
    Dest::udp("127.0.0.1:5070".parse().unwrap())
}

fn request(method: Method, branch: &str) -> Message {
    let uri = rsip::Uri::try_from("sip:bob@example.invalid").unwrap();
    let mut m = Message::request(method, uri);
    m.push_header(
        "Via",
        format!("SIP/2.0/UDP 127.0.0.1:5062;branch={branch};rport"),
    );
    m.push_header("From", "<sip:alice@example.invalid>;tag=a");
    m.push_header("To", "<sip:bob@example.invalid>");
    m.push_header("Call-ID", "c1");
    m.push_header("CSeq", format!("1 {method}"));
    m
}

fn drain(l: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

/// Advances to each deadline up to `until`, returning the instants (ms from
/// t0) at which something was sent.
fn run(l: &mut TransactionLayer, t0: Instant, until: u64) -> Vec<u64> {
    let mut sent = Vec::new();
    while let Some(t) = l.poll_timeout() {
        if t > t0 + Duration::from_millis(until) {
            break;
        }
        l.handle_timeout(t);
        for _ in drain(l) {
            sent.push((t - t0).as_millis() as u64);
        }
    }
    sent
}

#[test]
fn timer_a_doubles_and_timer_b_times_out() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    l.send_request(t0, request(Method::Invite, "z9hG4bKa"), dest())
        .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    let sent = run(&mut l, t0, 40_000);
    assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
    match l.poll_event() {
        Some(TxEvent::Timeout(k, _)) => assert_eq!(k.method, "INVITE"),
        e => panic!("expected timeout, got {e:?}"),
    }
    assert!(l.is_empty());
}

#[test]
fn timer_e_is_capped_at_t2_and_f_times_out() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    l.send_request(t0, request(Method::Options, "z9hG4bKe"), dest())
        .unwrap();
    drain(&mut l);
    let sent = run(&mut l, t0, 40_000);
    assert_eq!(&sent[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
    assert!(matches!(l.poll_event(), Some(TxEvent::Timeout(..))));
    assert_eq!(*sent.last().unwrap(), 31500);
}

#[test]
fn non_2xx_gets_ack_from_transaction_and_timer_d_ends_it() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Full, 8);
    let inv = request(Method::Invite, "z9hG4bKd");
    l.send_request(t0, inv.clone(), dest()).unwrap();
    drain(&mut l);
    let resp = Message::response_to(&inv, 486, "Busy Here", Some("b"));
    assert!(matches!(
        l.on_message(t0, dest(), resp.clone()),
        Incoming::Response(..)
    ));
    let out = drain(&mut l);
    assert_eq!(out.len(), 1);
    let ack = Message::parse(&out[0].bytes).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.branch(), Some("z9hG4bKd"));
    assert_eq!(ack.to_tag(), Some("b"));
    // A retransmitted 486 is absorbed and re-ACKed.
    assert!(matches!(l.on_message(t0, dest(), resp), Incoming::Absorbed));
    assert_eq!(drain(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    l.handle_timeout(t0 + Duration::from_secs(32));
    assert!(l.is_empty());
}

#[test]
fn server_invite_timer_g_capped_h_times_out() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let inv = request(Method::Invite, "z9hG4bKg");
    let Incoming::Request(key, req) = l.on_message(t0, dest(), inv) else {
        panic!()
    };
    assert_eq!(drain(&mut l).len(), 1, "100 Trying");
    l.send_response(
        t0,
        &key,
        &Message::response_to(&req, 480, "Temporarily Unavailable", Some("x")),
    )
    .unwrap();
    drain(&mut l);
    let sent = run(&mut l, t0, 40_000);
    assert_eq!(&sent[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(sent.iter().all(|t| *t < 32_000));
    assert!(matches!(l.poll_event(), Some(TxEvent::AckTimeout(_))));
    assert!(l.is_empty());
}

#[test]
fn server_invite_ack_confirms_then_timer_i() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let inv = request(Method::Invite, "z9hG4bKi");
    let Incoming::Request(key, req) = l.on_message(t0, dest(), inv.clone()) else {
        panic!()
    };
    let resp = Message::response_to(&req, 603, "Decline", Some("x"));
    l.send_response(t0, &key, &resp).unwrap();
    drain(&mut l);
    // Retransmitted INVITE gets the 603 again.
    assert!(matches!(
        l.on_message(t0, dest(), inv.clone()),
        Incoming::Absorbed
    ));
    assert_eq!(drain(&mut l).len(), 1);
    let ack = client::ack_for(&inv, &resp);
    assert!(matches!(
        l.on_message(t0 + Duration::from_millis(10), dest(), ack),
        Incoming::Absorbed
    ));
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(5010)));
    assert!(run(&mut l, t0, 10_000).is_empty(), "no G after ACK");
    assert!(l.is_empty());
}

#[test]
fn server_non_invite_timer_j_absorbs_retransmissions() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let opt = request(Method::Options, "z9hG4bKj");
    let Incoming::Request(key, req) = l.on_message(t0, dest(), opt.clone()) else {
        panic!()
    };
    assert!(drain(&mut l).is_empty(), "no 100 for non-INVITE");
    l.send_response(t0, &key, &Message::response_to(&req, 200, "OK", Some("x")))
        .unwrap();
    drain(&mut l);
    assert!(matches!(l.on_message(t0, dest(), opt), Incoming::Absorbed));
    assert_eq!(drain(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    l.handle_timeout(t0 + Duration::from_secs(32));
    assert!(l.is_empty());
}

#[test]
fn client_non_invite_timer_k_after_final() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let opt = request(Method::Options, "z9hG4bKk");
    l.send_request(t0, opt.clone(), dest()).unwrap();
    let resp = Message::response_to(&opt, 200, "OK", Some("x"));
    assert!(matches!(
        l.on_message(t0, dest(), resp.clone()),
        Incoming::Response(..)
    ));
    assert!(matches!(l.on_message(t0, dest(), resp), Incoming::Absorbed));
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    l.handle_timeout(t0 + Duration::from_secs(5));
    assert!(l.is_empty());
}

#[test]
fn reliable_transport_has_no_retransmissions() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let d = Dest {
        addr: dest().addr,
        transport: Transport::Tcp,
    };
    l.send_request(t0, request(Method::Invite, "z9hG4bKt"), d)
        .unwrap();
    drain(&mut l);
    assert!(run(&mut l, t0, 40_000).is_empty());
    assert!(matches!(l.poll_event(), Some(TxEvent::Timeout(..))));
}

#[test]
fn table_is_bounded() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 2);
    for i in 0..5 {
        let _ = l.on_message(t0, dest(), request(Method::Options, &format!("z9hG4bK{i}")));
    }
    assert_eq!(l.len(), (0, 2));
    l.send_request(t0, request(Method::Options, "z9hG4bKc1"), dest())
        .unwrap();
    l.send_request(t0, request(Method::Options, "z9hG4bKc2"), dest())
        .unwrap();
    assert_eq!(
        l.send_request(t0, request(Method::Options, "z9hG4bKc3"), dest()),
        Err(TxError::TableFull)
    );
}

#[test]
fn rport_and_received_are_filled_in() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let from = Dest::udp("127.0.0.1:40000".parse().unwrap());
    let mut req = request(Method::Options, "z9hG4bKr");
    req.set_header("Via", "SIP/2.0/UDP ua.invalid:5062;branch=z9hG4bKr;rport");
    let Incoming::Request(key, req) = l.on_message(t0, from, req) else {
        panic!()
    };
    let via = req.header("Via").unwrap();
    assert_eq!(param(via, "rport"), Some("40000"));
    assert_eq!(param(via, "received"), Some("127.0.0.1"));
    assert_eq!(l.server_dest(&key), Some(from));
}

#[test]
fn provisional_response_stops_timers_a_and_b() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let inv = request(Method::Invite, "z9hG4bKp");
    l.send_request(t0, inv.clone(), dest()).unwrap();
    drain(&mut l);
    let ringing = Message::response_to(&inv, 180, "Ringing", Some("b"));
    assert!(matches!(
        l.on_message(t0, dest(), ringing),
        Incoming::Response(..)
    ));
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.len(), (1, 0));
}

#[test]
fn invite_retransmission_after_2xx_is_absorbed_until_timer_l() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let inv = request(Method::Invite, "z9hG4bKl");
    let Incoming::Request(key, req) = l.on_message(t0, dest(), inv.clone()) else {
        panic!()
    };
    let ok = Message::response_to(&req, 200, "OK", Some("x"));
    l.send_response(t0, &key, &ok).unwrap();
    drain(&mut l);
    assert!(matches!(
        l.on_message(t0, dest(), inv.clone()),
        Incoming::Absorbed
    ));
    assert!(
        drain(&mut l).is_empty(),
        "the TU, not the transaction, repeats 2xx"
    );
    // A second 2xx (another fork) may still pass.
    l.send_response(t0, &key, &Message::response_to(&req, 200, "OK", Some("y")))
        .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    let ack = client::ack_for(&inv, &ok);
    assert!(matches!(l.on_message(t0, dest(), ack), Incoming::Ack(_)));
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    l.handle_timeout(t0 + Duration::from_secs(32));
    assert!(l.is_empty());
}

/// A request forwarded to a flow that died (the device registered a new
/// one) follows the device: sent at once on the new flow, retransmitted
/// there, and answered from there. One that already heard a provisional
/// answer, or that goes elsewhere, stays; a move to another transport is
/// refused.
#[test]
fn unanswered_requests_follow_a_device_to_its_new_flow() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default(), HeaderForm::Compact, 8);
    let old = dest();
    let new = Dest::udp("127.0.0.1:5071".parse().unwrap());
    let elsewhere = Dest::udp("127.0.0.1:5099".parse().unwrap());
    let lost = l
        .send_request(t0, request(Method::Invite, "z9hG4bKlost"), old)
        .unwrap();
    let heard = l
        .send_request(t0, request(Method::Message, "z9hG4bKheard"), old)
        .unwrap();
    l.send_request(t0, request(Method::Options, "z9hG4bKother"), elsewhere)
        .unwrap();
    drain(&mut l);
    let trying = Message::response_to(l.client_request(&heard).unwrap(), 100, "Trying", None);
    assert!(matches!(
        l.on_message(t0, old, trying),
        Incoming::Response(..)
    ));

    let tcp = Dest {
        addr: new.addr,
        transport: Transport::Tcp,
    };
    assert_eq!(l.retarget_clients(old, tcp), 0, "another transport");
    assert_eq!(l.retarget_clients(old, new), 1);
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dest, new);
    assert_eq!(l.client_dest(&lost), Some(new));
    assert_eq!(l.client_dest(&heard), Some(old));
    // Timer A goes on towards the new flow.
    l.handle_timeout(t0 + Duration::from_millis(500));
    assert!(drain(&mut l)
        .iter()
        .any(|t| t.dest == new && t.bytes == sent[0].bytes));
    let ok = Message::response_to(l.client_request(&lost).unwrap(), 200, "OK", Some("b"));
    assert!(matches!(
        l.on_message(t0 + Duration::from_millis(600), new, ok),
        Incoming::Response(..)
    ));
}
