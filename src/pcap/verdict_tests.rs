//! Crafted captures: TURN (ChannelData, Send and Data indications) is
//! opened and its payload judged like a direct datagram; DNS on port 53
//! passes only as a well-formed lookup.

use super::*;
use crate::pcap::dns::tests::lookup;
use crate::pcap::write::udp_capture;
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::SocketAddrV4;
use stun::message::{Message, MessageType, Setter, CLASS_INDICATION, METHOD_DATA, METHOD_SEND};
use turn::proto::chandata::ChannelData;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

/// The phone (behind its NAT) and the relay's TURN port.
fn phone() -> SocketAddrV4 {
    "10.0.0.2:40000".parse().unwrap()
}

fn relay() -> SocketAddrV4 {
    "10.0.0.1:3478".parse().unwrap()
}

/// 50 G.711 RTP packets of a loud tone (20 ms each).
fn rtp_packets() -> Vec<Vec<u8>> {
    let mut enc = Vec::new();
    (0..50u16)
        .map(|i| {
            let frame: Vec<i16> = (0..160u32)
                .map(|j| {
                    let t = f64::from(u32::from(i) * 160 + j) / 8000.0;
                    (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            crate::media::g711::G711::Alaw.encode(&frame, &mut enc);
            let mut p = vec![0x80, 8];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
            p.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
            p.extend_from_slice(&enc);
            p
        })
        .collect()
}

fn srtp_packets() -> Vec<Vec<u8>> {
    let mut ctx = Context::new(
        &[7u8; 16],
        &[9u8; 12],
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
    )
    .unwrap();
    rtp_packets()
        .iter()
        .map(|p| ctx.encrypt_rtp(p).unwrap().to_vec())
        .collect()
}

fn channel(data: &[u8]) -> Vec<u8> {
    let mut cd = ChannelData {
        data: data.to_vec(),
        number: ChannelNumber(0x4000),
        raw: Vec::new(),
    };
    cd.encode();
    cd.raw
}

fn indication(method: stun::message::Method, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = MessageType::new(method, CLASS_INDICATION);
    m.write_header();
    Data(data.to_vec()).add_to(&mut m).unwrap();
    m.raw
}

/// Judges `payloads` sent from the phone to the relay.
fn judge(payloads: &[Vec<u8>]) -> Report {
    let datagrams: Vec<_> = payloads
        .iter()
        .map(|p| (phone(), relay(), p.as_slice()))
        .collect();
    verify_capture(&udp_capture(&datagrams).unwrap()).unwrap()
}

#[test]
fn channel_data_carrying_srtp_passes() {
    let report = judge(
        &srtp_packets()
            .iter()
            .map(|p| channel(p))
            .collect::<Vec<_>>(),
    );
    assert_eq!(report.channel_data, 50, "{report}");
    assert_eq!(report.media.len(), 1, "{report}");
    assert_eq!(report.media[0].verdict, MediaVerdict::Srtp, "{report}");
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
}

#[test]
fn send_and_data_indications_carrying_srtp_pass() {
    for method in [METHOD_SEND, METHOD_DATA] {
        let report = judge(
            &srtp_packets()
                .iter()
                .map(|p| indication(method, p))
                .collect::<Vec<_>>(),
        );
        assert_eq!(report.stun, 50, "{report}");
        assert_eq!(report.media[0].verdict, MediaVerdict::Srtp, "{report}");
        assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    }
}

#[test]
fn channel_data_or_indications_carrying_plain_rtp_leak() {
    let plain = rtp_packets();
    for wrapped in [
        plain.iter().map(|p| channel(p)).collect::<Vec<_>>(),
        plain.iter().map(|p| indication(METHOD_SEND, p)).collect(),
        // TURN in TURN: a Data indication inside ChannelData.
        plain
            .iter()
            .map(|p| channel(&indication(METHOD_DATA, p)))
            .collect(),
    ] {
        let report = judge(&wrapped);
        assert_eq!(report.media.len(), 1, "{report}");
        assert_eq!(report.media[0].verdict, MediaVerdict::PlainRtp, "{report}");
        assert_eq!(report.verdict(), Verdict::Leaks, "{report}");
    }
}

#[test]
fn channel_data_carrying_sip_leaks() {
    let sip = b"MESSAGE sip:bob@atlanta.test SIP/2.0\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    for wrapped in [channel(&sip), indication(METHOD_SEND, &sip)] {
        let report = judge(&[wrapped]);
        assert_eq!(report.relayed_leaks.len(), 1, "{report}");
        assert!(report.to_string().contains("LEAK: SIP inside"), "{report}");
        assert_eq!(report.verdict(), Verdict::Leaks, "{report}");
    }
}

#[test]
fn malformed_or_unknown_channel_data_cannot_pass() {
    let srtp = srtp_packets();
    let good: Vec<Vec<u8>> = srtp.iter().map(|p| channel(p)).collect();
    let mut long = good[0].clone();
    long[3] = long[3].wrapping_add(40); // a length beyond the datagram
    let mut hidden = good[1].clone();
    hidden.extend_from_slice(b"tail"); // bytes after the padding
    let reserved = {
        let mut r = good[2].clone();
        r[0] = 0x60;
        r
    };
    for bad in [long, hidden, reserved, vec![0x40, 0x00]] {
        let mut all = good.clone();
        all.push(bad);
        let report = judge(&all);
        assert_eq!(report.verdict(), Verdict::CannotJudge, "{report}");
        assert!(report.to_string().contains("ChannelData"), "{report}");
    }
    // Random bytes relayed: neither RTP nor STUN.
    let mut all = good.clone();
    all.push(channel(&[0x11; 40]));
    let report = judge(&all);
    assert_eq!(report.verdict(), Verdict::CannotJudge, "{report}");
    assert!(report.to_string().contains("relayed by TURN"), "{report}");
}

/// DNS beside SRTP: the phone's lookups pass; a non-DNS payload on port
/// 53, or a lookup with a tunnel's TXT answer, cannot pass as clean.
#[test]
fn dns_lookups_pass_and_other_bytes_on_port_53_do_not() {
    let dns_server: SocketAddrV4 = "10.0.0.1:53".parse().unwrap();
    let target = Name::from_ascii("sip.atlanta.test.").unwrap();
    let (q, r) = lookup(RecordType::SRV, RData::SRV(SRV::new(0, 0, 5061, target)));
    let (qa, ra) = lookup(RecordType::A, RData::A(A::new(10, 0, 0, 1)));
    let srtp = srtp_packets();
    let with = |extra: &[(SocketAddrV4, SocketAddrV4, &[u8])]| {
        let mut datagrams: Vec<_> = extra.to_vec();
        datagrams.extend(srtp.iter().map(|p| (phone(), relay(), p.as_slice())));
        verify_capture(&udp_capture(&datagrams).unwrap()).unwrap()
    };
    let report = with(&[
        (phone(), dns_server, &q),
        (dns_server, phone(), &r),
        (phone(), dns_server, &qa),
        (dns_server, phone(), &ra),
    ]);
    assert_eq!(report.dns, 4, "{report}");
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    let sip = b"MESSAGE sip:bob@atlanta.test SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
    let mut tail = q.clone();
    tail.extend_from_slice(&[0x42; 16]);
    for bad in [
        srtp[0].clone(),
        vec![0x11; 64],
        tail,
        q[..q.len() - 2].to_vec(),
    ] {
        let report = with(&[(phone(), dns_server, &bad)]);
        assert_ne!(report.verdict(), Verdict::Clean, "{report}");
        assert!(report.to_string().contains("port 53"), "{report}");
    }
    // SIP to port 53 is framed and judged as SIP: a leak.
    let report = with(&[(phone(), dns_server, &sip)]);
    assert_eq!(report.verdict(), Verdict::Leaks, "{report}");
}

/// A capture of one TCP connection phone -> `server` carrying `client`
/// bytes and `server` bytes back, cut into segments of `size` bytes (the
/// judge reassembles them), with both SYNs.
fn tcp_capture(server: SocketAddrV4, client: &[u8], answer: &[u8], size: usize) -> Vec<u8> {
    use crate::pcap::write::{ethernet_capture, tcp_frame};
    let (a, b) = (std::net::SocketAddr::from(phone()), server.into());
    let mut frames = vec![
        tcp_frame(a, b, 1000, true, &[]).unwrap(),
        tcp_frame(b, a, 5000, true, &[]).unwrap(),
    ];
    for (i, chunk) in client.chunks(size).enumerate() {
        frames.push(tcp_frame(a, b, 1001 + (i * size) as u32, false, chunk).unwrap());
    }
    for (i, chunk) in answer.chunks(size).enumerate() {
        frames.push(tcp_frame(b, a, 5001 + (i * size) as u32, false, chunk).unwrap());
    }
    ethernet_capture(&frames).unwrap()
}

/// A STUN request (an Allocate's shape: a binding request with no
/// attributes is enough for the framing), as a TURN client opens with.
fn stun_request() -> Vec<u8> {
    let mut m = Message::new();
    m.typ = stun::message::BINDING_REQUEST;
    m.write_header();
    m.raw
}

/// TURN over plain TCP (RFC 8656 12.5): STUN messages and ChannelData
/// padded to 4 bytes on one stream, cut in odd places; what they carry is
/// judged like over UDP: SRTP passes, plain RTP and SIP leak, bytes that
/// are no TURN message cannot pass.
#[test]
fn turn_over_tcp_is_reassembled_and_judged() {
    let stream = |payloads: &[Vec<u8>]| {
        let mut s = stun_request();
        for p in payloads {
            let mut c = channel(p);
            c.resize(c.len().next_multiple_of(4), 0);
            s.extend_from_slice(&c);
            s.extend_from_slice(&indication(METHOD_SEND, p));
        }
        s
    };
    let srtp = srtp_packets();
    let report =
        verify_capture(&tcp_capture(relay(), &stream(&srtp), &stun_request(), 37)).unwrap();
    assert_eq!(report.channel_data, 50, "{report}");
    assert_eq!(report.stun, 52, "{report}");
    assert_eq!(report.media.len(), 1, "{report}");
    assert_eq!(report.media[0].verdict, MediaVerdict::Srtp, "{report}");
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");

    let report = verify_capture(&tcp_capture(relay(), &stream(&rtp_packets()), &[], 37)).unwrap();
    assert_eq!(report.verdict(), Verdict::Leaks, "{report}");

    let sip = b"MESSAGE sip:bob@atlanta.test SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
    let report = verify_capture(&tcp_capture(relay(), &stream(&[sip]), &[], 37)).unwrap();
    assert_eq!(report.verdict(), Verdict::Leaks, "{report}");

    // After whole messages: bytes of no TURN form, a message cut by the
    // end of the capture, a reserved channel number.
    let mut cut = stream(&srtp[..2]);
    cut.extend_from_slice(&channel(&srtp[2])[..30]);
    for tail in [b"hello there".to_vec(), vec![0x60, 0, 0, 4, 1, 2, 3, 4]] {
        let mut s = stream(&srtp[..2]);
        s.extend_from_slice(&tail);
        let report = verify_capture(&tcp_capture(relay(), &s, &[], 37)).unwrap();
        assert_eq!(report.verdict(), Verdict::CannotJudge, "{report}");
        assert!(report.to_string().contains("TURN message"), "{report}");
    }
    let report = verify_capture(&tcp_capture(relay(), &cut, &[], 37)).unwrap();
    assert_eq!(report.verdict(), Verdict::CannotJudge, "{report}");
}

/// DNS over TCP (RFC 1035 4.2.2, a 2-byte length before each message):
/// the same strict rules as over UDP, message by message; a length that
/// runs past the stream, bytes after a message inside its length, or a
/// TXT answer cannot pass.
#[test]
fn dns_over_tcp_is_judged_as_strictly_as_over_udp() {
    use hickory_proto::rr::rdata::TXT;
    let dns_server: SocketAddrV4 = "10.0.0.1:53".parse().unwrap();
    let framed = |msgs: &[&[u8]]| {
        let mut s = Vec::new();
        for m in msgs {
            s.extend_from_slice(&(m.len() as u16).to_be_bytes());
            s.extend_from_slice(m);
        }
        s
    };
    let target = Name::from_ascii("sip.atlanta.test.").unwrap();
    let (q, r) = lookup(RecordType::SRV, RData::SRV(SRV::new(0, 0, 5061, target)));
    let (qa, ra) = lookup(RecordType::A, RData::A(A::new(10, 0, 0, 1)));
    let report = verify_capture(&tcp_capture(
        dns_server,
        &framed(&[&q, &qa]),
        &framed(&[&r, &ra]),
        5,
    ))
    .unwrap();
    assert_eq!(report.dns, 4, "{report}");
    assert!(report.unjudged.is_empty(), "{report}");

    let (qt, rt) = lookup(RecordType::A, RData::TXT(TXT::new(vec!["x".repeat(100)])));
    let mut tail = q.clone();
    tail.extend_from_slice(&[0x42; 16]);
    let mut short = framed(&[&q]);
    short.extend_from_slice(&[0x01, 0x00, 0x12]);
    for (client, answer) in [
        (framed(&[&qt]), framed(&[&rt])),
        (framed(&[&tail]), Vec::new()),
        (short, Vec::new()),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Vec::new()),
    ] {
        let report = verify_capture(&tcp_capture(dns_server, &client, &answer, 5)).unwrap();
        assert_ne!(report.verdict(), Verdict::Clean, "{report}");
        assert!(
            report.to_string().contains("DNS") || report.to_string().contains("port 53"),
            "{report}"
        );
    }
}
