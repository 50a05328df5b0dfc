//! `ibephone::pcap` on captures built here: plain SIP with identities is
//! flagged, tunneled-shaped messages with minimal outer headers pass, TCP
//! streams split across segments (with a retransmission) are reassembled.

mod support;

use etherparse::PacketBuilder;
use ibephone::pcap::{verify_capture, Class};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::time::Duration;
use support::process::pcap_verify_cli;

const A: [u8; 4] = [127, 0, 0, 1];
const B: [u8; 4] = [127, 0, 0, 2];

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(A, B, 64)
        .udp(src_port, dst_port);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

fn tcp(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(A, B, 64)
        .tcp(40000, 5060, seq, 65535);
    if syn {
        builder = builder.syn();
    }
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_millis(i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
    w.into_writer()
}

/// A body that starts like a CMS ContentInfo of type authEnvelopedData.
fn cms_body() -> Vec<u8> {
    let mut body = vec![0x30, 0x82, 0x00, 0x40];
    body.extend_from_slice(&[
        0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
    ]);
    body.resize(68, 0xa5);
    body
}

fn tunneled_invite() -> Vec<u8> {
    let body = cms_body();
    let mut m = format!(
        "INVITE sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 INVITE\r\nm: <sip:127.0.0.1:5070>\r\nc: application/pkcs7-mime;smime-type=authEnveloped-data;name=smime.p7m\r\nContent-Disposition: attachment;handling=required;filename=smime.p7m\r\nl: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(&body);
    m
}

const PLAIN_INVITE: &str = "INVITE sip:bob@biloxi.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKy\r\nFrom: \"Alice Liddell\" <sip:alice@atlanta.invalid>;tag=9\r\nTo: <sip:bob@biloxi.invalid>\r\nCall-ID: 843817637684230@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nUser-Agent: SoftPhone 1.0\r\nContent-Type: application/sdp\r\nContent-Length: 31\r\n\r\nv=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\n";

#[test]
fn tunneled_message_is_clean() {
    let report = verify_capture(&pcap(&[udp(5070, 5060, &tunneled_invite())])).unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(report.messages[0].class, Class::Tunneled);
    assert!(report.messages[0].findings.is_empty(), "{report}");
    assert!(report.clean());
}

#[test]
fn plain_invite_leaks_everything() {
    let report = verify_capture(&pcap(&[udp(5070, 5060, PLAIN_INVITE.as_bytes())])).unwrap();
    let m = &report.messages[0];
    assert!(matches!(m.class, Class::Leak(_)));
    let whats: Vec<&str> = m.findings.iter().map(|f| f.what.as_str()).collect();
    for want in [
        "user-agent",
        "display name in from",
        "caller AOR in From",
        "user part in Contact",
        "host in Call-ID",
        "SDP in clear",
    ] {
        assert!(whats.contains(&want), "missing {want} in {whats:?}");
    }
    assert!(!report.clean());
    assert!(report.to_string().contains("LEAKS FOUND"));
}

#[test]
fn fake_cms_content_type_is_a_leak() {
    let m = "MESSAGE sip:bob@biloxi.invalid SIP/2.0\r\nf: <sip:anonymous@anonymous.invalid>;tag=1\r\nt: <sip:bob@biloxi.invalid>\r\nCSeq: 2 MESSAGE\r\nc: application/pkcs7-mime\r\nl: 5\r\n\r\nhello";
    let report = verify_capture(&pcap(&[udp(5070, 5060, m.as_bytes())])).unwrap();
    assert!(matches!(report.messages[0].class, Class::Leak(_)));
}

#[test]
fn allowed_plain_messages() {
    let trying = "SIP/2.0 100 Trying\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let register = "REGISTER sip:biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr\r\nf: <sip:bob@biloxi.invalid>;tag=r1\r\nt: <sip:bob@biloxi.invalid>\r\ni: r2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 REGISTER\r\nm: <sip:bob@127.0.0.1:5080>\r\nl: 0\r\n\r\n";
    let rtp = [
        0x80u8, 0x00, 0x00, 0x01, 0, 0, 0, 160, 1, 2, 3, 4, 9, 9, 9, 9,
    ];
    let report = verify_capture(&pcap(&[
        udp(5060, 5070, trying.as_bytes()),
        udp(5080, 5060, register.as_bytes()),
        udp(4000, 4002, &rtp),
    ]))
    .unwrap();
    assert!(report.clean(), "{report}");
    assert!(report
        .messages
        .iter()
        .all(|m| matches!(m.class, Class::PlainAllowed(_))));
    assert_eq!(report.rtp_shaped, 1);
}

#[test]
fn tcp_stream_is_reassembled() {
    let msg = tunneled_invite();
    let (a, b) = msg.split_at(100);
    let mut both = msg.clone();
    both.extend_from_slice(&msg);
    let isn = 1000u32;
    let frames = vec![
        tcp(isn, true, &[]),
        tcp(isn + 1, false, a),
        tcp(isn + 1, false, a), // retransmission
        tcp(isn + 1 + a.len() as u32, false, b),
        tcp(isn + 1 + msg.len() as u32, false, &both),
    ];
    let report = verify_capture(&pcap(&frames)).unwrap();
    assert_eq!(report.messages.len(), 3, "{report}");
    assert!(report.messages.iter().all(|m| m.class == Class::Tunneled));
    assert_eq!(report.unframed_tcp_bytes, 0);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(verify_capture(b"not a capture at all").is_err());
    assert!(verify_capture(&[]).is_err());
    let mut truncated = pcap(&[udp(5070, 5060, PLAIN_INVITE.as_bytes())]);
    truncated.truncate(truncated.len() - 10);
    let report = verify_capture(&truncated).unwrap();
    assert!(report.messages.is_empty());
}

/// The `ibephone pcap verify` command: exit 0 clean, 1 leak, 2 unreadable.
#[test]
fn cli_exit_codes() {
    let (code, out) = pcap_verify_cli(&pcap(&[udp(5070, 5060, &tunneled_invite())]));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TUNNELED"));
    let (code, out) = pcap_verify_cli(&pcap(&[udp(5070, 5060, PLAIN_INVITE.as_bytes())]));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("User-Agent") || out.contains("user-agent"));
    let (code, _) = pcap_verify_cli(b"garbage");
    assert_eq!(code, Some(2));
}
