//! `ibephone::pcap` on captures built here: plain SIP with identities is
//! flagged, tunneled messages with minimal outer headers pass, TCP
//! streams split across segments (with a retransmission) are reassembled;
//! and the attacks on the judge itself: every capture below hides
//! something, and `pcap verify` must say "leak" (exit 1) or "cannot judge"
//! (exit 2), never "clean" (exit 0).
//!
//! The tunneled messages are the real ones of the committed vector dialog
//! (`tests/captures/tunnel-dialog.pcap`), so a body counts as tunneled only
//! because it decodes as the spec's AuthEnvelopedData.

use crate::support;

use ibephone::pcap::capture::read_segments;
use ibephone::pcap::write::{
    capture_with_lengths, ethernet_capture, ipv4_frame, ipv4_udp_fragments, tcp_frame, udp_capture,
    udp_frame, vlan_udp_frame,
};
use ibephone::pcap::{verify_capture, Class, Report, Verdict};
use pcap_file::DataLink;
use std::net::{SocketAddr, SocketAddrV4};
use support::process::pcap_verify_cli;

const DIALOG: &[u8] = include_bytes!("../captures/tunnel-dialog.pcap");

fn alice() -> SocketAddrV4 {
    "127.0.0.1:5070".parse().unwrap()
}

fn bob() -> SocketAddrV4 {
    "127.0.0.1:5080".parse().unwrap()
}

/// The outer messages of the vector dialog (INVITE first), as sent.
fn dialog() -> Vec<Vec<u8>> {
    read_segments(DIALOG)
        .unwrap()
        .into_iter()
        .map(|s| s.payload)
        .collect()
}

fn tunneled_invite() -> Vec<u8> {
    dialog().remove(0)
}

/// `message` with `line` inserted as a header right after the start line.
fn with_header(message: &[u8], line: &str) -> Vec<u8> {
    let eol = message.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut out = message[..eol].to_vec();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&message[eol..]);
    out
}

/// Header section and body of `message`.
fn split(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (message[..end].to_vec(), message[end + 4..].to_vec())
}

/// `message` with its body replaced and Content-Length set to `length`.
fn with_body(message: &[u8], body: &[u8], length: usize) -> Vec<u8> {
    let (head, _) = split(message);
    let head = String::from_utf8(head).unwrap();
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("l:") && !l.to_ascii_lowercase().starts_with("content-length"))
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    out.extend_from_slice(format!("l: {length}\r\n\r\n").as_bytes());
    out.extend_from_slice(body);
    out
}

/// `message` with `from` replaced by `to` in its header section only.
fn replace_in_head(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(message[..end].to_vec()).unwrap();
    assert!(head.contains(from), "{from} not in {head}");
    let mut out = head.replace(from, to).into_bytes();
    out.extend_from_slice(&message[end..]);
    out
}

fn udp_one(payload: &[u8]) -> Vec<u8> {
    udp_capture(&[(alice(), bob(), payload)]).unwrap()
}

fn verify(bytes: &[u8]) -> Report {
    verify_capture(bytes).unwrap()
}

/// The judge (library and CLI) gives `want` and prints `reason`.
fn judged(bytes: &[u8], want: Verdict, reason: &str) -> Report {
    let report = verify(bytes);
    assert_eq!(report.verdict(), want, "{report}");
    assert!(!report.clean());
    let text = report.to_string();
    assert!(text.contains(reason), "want {reason:?} in:\n{text}");
    let (code, out) = pcap_verify_cli(bytes);
    assert_eq!(code, Some(i32::from(want.exit_code())), "{out}");
    assert!(out.contains(reason), "want {reason:?} in:\n{out}");
    report
}

const PLAIN_INVITE: &str = "INVITE sip:bob@biloxi.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKy\r\nFrom: \"Alice Liddell\" <sip:alice@atlanta.invalid>;tag=9\r\nTo: <sip:bob@biloxi.invalid>\r\nCall-ID: 843817637684230@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nUser-Agent: SoftPhone 1.0\r\nContent-Type: application/sdp\r\nContent-Length: 35\r\n\r\nv=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\n";

/// An in-dialog request as a privacy-preserving phone would send it plain:
/// anonymous From, a Request-URI without user part (the peer's Contact),
/// nothing that names anyone; only the body speaks.
fn in_dialog(method: &str, content_type: &str, body: &str) -> String {
    format!(
        "{method} sip:127.0.0.1:5080 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}\r\nMax-Forwards: 70\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=9fxced76sl\r\nt: <sip:bob@biloxi.com>;tag=8321234356\r\ni: 3848276298220188511A7Q\r\nCSeq: 2 {method}\r\n{content_type}l: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn tunneled_dialog_is_clean() {
    let messages = dialog();
    assert!(messages.len() >= 4);
    let datagrams: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i % 2 == 0 {
                (alice(), bob(), m.as_slice())
            } else {
                (bob(), alice(), m.as_slice())
            }
        })
        .collect();
    let report = verify(&udp_capture(&datagrams).unwrap());
    assert!(
        report.messages.iter().all(|m| m.class == Class::Tunneled),
        "{report}"
    );
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    let (code, out) = pcap_verify_cli(&udp_one(&tunneled_invite()));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TUNNELED"));
}

#[test]
fn plain_invite_leaks_everything() {
    let report = verify(&udp_one(PLAIN_INVITE.as_bytes()));
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
    assert_eq!(report.verdict(), Verdict::Leaks);
    assert!(report.to_string().contains("LEAKS FOUND"));
}

/// In-dialog requests go to the peer's Contact, which has no user part
/// (spec 5.1): that does not make them requests "to a server". A plain
/// MESSAGE/INFO/BYE leaks, with or without a body.
#[test]
fn plain_in_dialog_requests_leak() {
    for (method, ct, body) in [
        ("MESSAGE", "c: text/plain\r\n", "meet me at the docks at 5"),
        (
            "INFO",
            "c: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        ),
        ("BYE", "", ""),
        ("UPDATE", "", ""),
        ("OPTIONS", "", ""),
    ] {
        let m = in_dialog(method, ct, body);
        let report = judged(&udp_one(m.as_bytes()), Verdict::Leaks, "LEAK");
        assert!(
            matches!(&report.messages[0].class, Class::Leak(why) if why.contains(if body.is_empty() { method } else { "body bytes in clear" })),
            "{report}"
        );
    }
}

/// The messages spec 5.5 lets travel plain may not carry a body either.
#[test]
fn text_body_on_an_allowed_plain_message_leaks() {
    let register = "REGISTER sip:biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr\r\nf: <sip:bob@biloxi.invalid>;tag=r1\r\nt: <sip:bob@biloxi.invalid>\r\ni: r2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 REGISTER\r\nm: <sip:bob@127.0.0.1:5080>\r\nc: text/plain\r\nl: 20\r\n\r\ncall me, it's alice!";
    let cancel = in_dialog("CANCEL", "", "alice was here");
    let error = "SIP/2.0 486 Busy Here\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>;tag=b\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 INVITE\r\nl: 24\r\n\r\nbob is talking to carol.";
    for m in [register, cancel.as_str(), error] {
        judged(
            &udp_one(m.as_bytes()),
            Verdict::Leaks,
            "body bytes in clear",
        );
    }
}

/// RFC 3261 7.5: receivers ignore CRLFs before the start line, so the
/// judge must too.
#[test]
fn plain_invite_after_crlf_leaks() {
    for prefix in ["\r\n", "\r\n\r\n", "\n"] {
        let m = format!("{prefix}{PLAIN_INVITE}");
        judged(&udp_one(m.as_bytes()), Verdict::Leaks, "plain INVITE");
    }
    let m = format!("\r\n\r\n{PLAIN_INVITE}");
    let frames = [
        tcp_frame(alice().into(), bob().into(), 1000, true, &[]).unwrap(),
        tcp_frame(alice().into(), bob().into(), 1001, false, m.as_bytes()).unwrap(),
    ];
    judged(
        &ethernet_capture(&frames).unwrap(),
        Verdict::Leaks,
        "plain INVITE",
    );
}

/// A Content-Length that does not match the datagram: the bytes still
/// crossed the wire in clear.
#[test]
fn content_length_mismatch_in_a_datagram_leaks() {
    let invite = tunneled_invite();
    let (_, body) = split(&invite);
    let past_end = with_body(&invite, &body, body.len() + 400);
    judged(
        &udp_one(&past_end),
        Verdict::Leaks,
        "past the datagram's end",
    );
    // A real tunneled INVITE with a plain one smuggled after its body.
    let mut smuggled = invite.clone();
    smuggled.extend_from_slice(PLAIN_INVITE.as_bytes());
    judged(&udp_one(&smuggled), Verdict::Leaks, "bytes after the body");
    let twice = with_header(&invite, "Content-Length: 0");
    judged(
        &udp_one(&twice),
        Verdict::Leaks,
        "Content-Length headers disagree",
    );
    let nan = replace_in_head(&with_body(&invite, &body, 0), "l: 0", "l: lots");
    judged(&udp_one(&nan), Verdict::Leaks, "not a number");
}

/// A body merely starting like a CMS ContentInfo of type
/// authEnvelopedData is not the tunnel.
#[test]
fn fake_cms_bodies_leak() {
    let invite = tunneled_invite();
    let (_, real) = split(&invite);
    let mut oid_only = vec![0x30, 0x82, 0x00, 0x40];
    oid_only.extend_from_slice(&[
        0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
    ]);
    oid_only.extend_from_slice(b"hello, this is alice; call me at home");
    oid_only.resize(68, b' ');
    let mut trailing = real.clone();
    trailing.extend_from_slice(b"alice");
    let mut truncated = real.clone();
    truncated.truncate(real.len() - 1);
    for body in [oid_only, trailing, truncated, b"hello".to_vec()] {
        let m = with_body(&invite, &body, body.len());
        judged(
            &udp_one(&m),
            Verdict::Leaks,
            "not the spec's AuthEnvelopedData",
        );
    }
    // gzip or multipart around the envelope is not the profile either.
    let gz = with_header(
        &with_body(&invite, b"\x1f\x8b\x08\x00alice", 9),
        "Content-Encoding: gzip",
    );
    judged(&udp_one(&gz), Verdict::Leaks, "LEAK");
    let mut multipart = b"--b\r\nContent-Type: application/pkcs7-mime\r\n\r\n".to_vec();
    multipart.extend_from_slice(&real);
    multipart
        .extend_from_slice(b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nalice here\r\n--b--\r\n");
    let mp = replace_in_head(
        &with_body(&invite, &multipart, multipart.len()),
        "c: application/pkcs7-mime;smime-type=authEnveloped-data;name=smime.p7m",
        "c: multipart/mixed;boundary=b",
    );
    judged(&udp_one(&mp), Verdict::Leaks, "body bytes in clear");
    // Two Content-Types: a receiver may read the other one.
    let two = with_header(&invite, "Content-Type: text/plain");
    judged(&udp_one(&two), Verdict::Leaks, "Content-Type headers");
}

/// Spec 5.1: the outer message carries only routing headers; anything
/// else, or a line that is not a header, is reported even on a tunneled
/// message.
#[test]
fn extra_outer_headers_leak() {
    let invite = tunneled_invite();
    let extra = with_header(&invite, "X-Caller: alice@atlanta.com");
    let report = judged(
        &udp_one(&extra),
        Verdict::Leaks,
        "x-caller: alice@atlanta.com",
    );
    assert_eq!(report.messages[0].class, Class::Tunneled);
    let compact = with_header(&invite, "s: lunch with alice");
    judged(&udp_one(&compact), Verdict::Leaks, "subject");
    let no_colon = with_header(&invite, "alice calls bob about the money");
    judged(&udp_one(&no_colon), Verdict::Leaks, "not 'name: value'");
}

/// IP fragments are reassembled and judged; fragments that never complete
/// or that disagree cannot be judged.
#[test]
fn ip_fragments() {
    let plain = ipv4_udp_fragments(alice(), bob(), PLAIN_INVITE.as_bytes(), 96, 7).unwrap();
    assert!(plain.len() > 3);
    judged(
        &ethernet_capture(&plain).unwrap(),
        Verdict::Leaks,
        "user-agent",
    );
    // Out of order is fine.
    let mut reversed = plain.clone();
    reversed.reverse();
    judged(
        &ethernet_capture(&reversed).unwrap(),
        Verdict::Leaks,
        "user-agent",
    );
    let invite = tunneled_invite();
    let tunneled = ipv4_udp_fragments(alice(), bob(), &invite, 1480, 8).unwrap();
    assert!(tunneled.len() > 1);
    let report = verify(&ethernet_capture(&tunneled).unwrap());
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    assert_eq!(report.messages.len(), 1);
    let mut missing = plain.clone();
    missing.remove(1);
    judged(
        &ethernet_capture(&missing).unwrap(),
        Verdict::CannotJudge,
        "never completed",
    );
    // A second copy of a fragment with other bytes.
    let mut overlap = tunneled.clone();
    let mut evil = tunneled[0].clone();
    let n = evil.len();
    evil[n - 20..].copy_from_slice(b"alice@atlanta.com!!!");
    overlap.insert(1, evil);
    judged(
        &ethernet_capture(&overlap).unwrap(),
        Verdict::CannotJudge,
        "overlap with different bytes",
    );
}

/// Frames cut by the snap length and a file cut in the middle of a record
/// hide bytes: cannot judge.
#[test]
fn truncated_frames_and_files() {
    let invite = tunneled_invite();
    let frame = udp_frame(alice().into(), bob().into(), &invite).unwrap();
    let cut = &frame[..200];
    let bytes = capture_with_lengths(DataLink::ETHERNET, &[(cut, frame.len() as u32)]).unwrap();
    judged(&bytes, Verdict::CannotJudge, "frame truncated");
    let mut file = udp_one(&invite);
    file.extend_from_slice(&udp_one(PLAIN_INVITE.as_bytes())[24..]);
    file.truncate(file.len() - 40);
    judged(&file, Verdict::CannotJudge, "truncated or corrupt");
}

#[test]
fn empty_captures_are_nothing_to_judge() {
    judged(
        &ethernet_capture(&[]).unwrap(),
        Verdict::CannotJudge,
        "nothing to judge",
    );
    // CRLF keep-alives only.
    judged(
        &udp_one(b"\r\n\r\n"),
        Verdict::CannotJudge,
        "nothing to judge",
    );
}

/// TCP: bytes that never form a message, gaps, and retransmissions that
/// differ cannot be judged; reordered, split and batched messages are.
#[test]
fn tcp_streams() {
    let (a, b): (SocketAddr, SocketAddr) = (alice().into(), bob().into());
    let invite = tunneled_invite();
    let isn = 4_294_967_000u32; // wraps around during the stream
    let capture = |segments: &[(u32, &[u8])]| {
        let mut frames = vec![tcp_frame(a, b, isn, true, &[]).unwrap()];
        frames.extend(
            segments
                .iter()
                .map(|(off, p)| tcp_frame(a, b, isn.wrapping_add(1 + off), false, p).unwrap()),
        );
        ethernet_capture(&frames).unwrap()
    };
    // Split, reordered, retransmitted, and two messages in one segment.
    let (x, y) = invite.split_at(500);
    let mut both = invite.clone();
    both.extend_from_slice(&invite);
    let n = invite.len() as u32;
    let good = capture(&[(500, y), (0, x), (0, x), (n, both.as_slice())]);
    let report = verify(&good);
    assert_eq!(report.messages.len(), 3, "{report}");
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    // A plain INVITE batched after a tunneled one.
    let mut batch = invite.clone();
    batch.extend_from_slice(PLAIN_INVITE.as_bytes());
    judged(
        &capture(&[(0, batch.as_slice())]),
        Verdict::Leaks,
        "plain INVITE",
    );
    // A TLS record cut short (it says 512 bytes): not a whole record, so
    // nothing vouches for what it hides.
    judged(
        &capture(&[(0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03alice")]),
        Verdict::CannotJudge,
        "not a whole TLS record",
    );
    // Whole TLS records (SIP over TLS): nothing in clear.
    let tls = capture(&[(0, b"\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03\x00\x03abc")]);
    let report = verify(&tls);
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    assert_eq!(report.tls.len(), 1, "{report}");
    assert_eq!(report.tls[0].records, 2, "{report}");
    // TLS records followed by SIP in clear on the same stream: the SIP
    // is judged (a leak), not hidden behind the records.
    let mut mixed = b"\x17\x03\x03\x00\x03abc".to_vec();
    mixed.extend_from_slice(PLAIN_INVITE.as_bytes());
    judged(
        &capture(&[(0, mixed.as_slice())]),
        Verdict::Leaks,
        "plain INVITE",
    );
    // A message the capture ends in the middle of.
    judged(
        &capture(&[(0, x)]),
        Verdict::CannotJudge,
        "incomplete SIP message",
    );
    // A gap: the segment with bytes 500.. is missing.
    judged(
        &capture(&[(0, x), (n, invite.as_slice())]),
        Verdict::CannotJudge,
        "missing from the capture",
    );
    // A "retransmission" with other bytes: which copy did the peer read?
    let mut other = x.to_vec();
    other[400..405].copy_from_slice(b"alice");
    judged(
        &capture(&[(0, x), (0, other.as_slice()), (500, y)]),
        Verdict::CannotJudge,
        "retransmission carries other bytes",
    );
}

/// Other transports, other protocols, other links: never clean.
#[test]
fn other_protocols_cannot_be_judged() {
    // SIP over SCTP (protocol 132), as text in the packet.
    let sctp = ipv4_frame(alice(), bob(), 132, PLAIN_INVITE.as_bytes()).unwrap();
    judged(
        &ethernet_capture(&[sctp]).unwrap(),
        Verdict::CannotJudge,
        "IP protocol 132",
    );
    // A UDP datagram that is neither SIP nor RTP (nor STUN, DNS or TURN).
    judged(
        &udp_one(b"0 hello bob, it's alice: call me at home"),
        Verdict::CannotJudge,
        "neither SIP, RTP, STUN, TURN nor DNS",
    );
    // Text whose first byte falls in TURN's ChannelData range (64..=127)
    // and that is not SIP: opened as ChannelData, found malformed, and
    // still never called clean.
    judged(
        &udp_one(b"hello bob, it's alice: call me at home"),
        Verdict::CannotJudge,
        "malformed ChannelData",
    );
    // SIP after a prefix no receiver skips.
    let prefixed = format!("  {PLAIN_INVITE}");
    judged(
        &udp_one(prefixed.as_bytes()),
        Verdict::CannotJudge,
        "neither SIP, RTP, STUN, TURN nor DNS",
    );
    // A link type the reader does not decode.
    let frame = udp_frame(alice().into(), bob().into(), PLAIN_INVITE.as_bytes()).unwrap();
    let wifi = capture_with_lengths(DataLink::IEEE802_11, &[(&frame, frame.len() as u32)]).unwrap();
    judged(&wifi, Verdict::CannotJudge, "link type");
    // Not IP at all (an unknown ether type).
    let mut raw = frame.clone();
    raw[12..14].copy_from_slice(&[0x88, 0xb5]);
    judged(
        &ethernet_capture(&[raw]).unwrap(),
        Verdict::CannotJudge,
        "not an IP packet",
    );
    // A few RTP packets: too short to tell SRTP from RTP.
    let mut rtp = vec![0x80u8, 0x00, 0x00, 0x01, 0, 0, 0, 160, 1, 2, 3, 4];
    rtp.extend_from_slice(b"alice's voice");
    judged(&udp_one(&rtp), Verdict::CannotJudge, "too short to judge");
}

/// Odd ports, IPv6 and VLAN tags do not hide SIP from the judge.
#[test]
fn odd_ports_ipv6_and_vlan_are_judged() {
    let v6a: SocketAddr = "[::1]:9".parse().unwrap();
    let v6b: SocketAddr = "[::1]:31337".parse().unwrap();
    let invite = tunneled_invite();
    for (vlan, payload, want) in [
        (None, PLAIN_INVITE.as_bytes(), Verdict::Leaks),
        (Some(42), PLAIN_INVITE.as_bytes(), Verdict::Leaks),
        (Some(42), invite.as_slice(), Verdict::Clean),
    ] {
        let frame = vlan_udp_frame(v6a, v6b, vlan, payload).unwrap();
        let report = verify(&ethernet_capture(&[frame]).unwrap());
        assert_eq!(report.verdict(), want, "{report}");
        assert_eq!(report.messages.len(), 1, "{report}");
    }
    let odd = udp_capture(&[(
        alice(),
        "127.0.0.1:53".parse().unwrap(),
        PLAIN_INVITE.as_bytes(),
    )])
    .unwrap();
    judged(&odd, Verdict::Leaks, "plain INVITE");
}

#[test]
fn allowed_plain_messages() {
    let trying = "SIP/2.0 100 Trying\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let register = "REGISTER sip:biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr\r\nf: <sip:bob@biloxi.invalid>;tag=r1\r\nt: <sip:bob@biloxi.invalid>\r\ni: r2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 REGISTER\r\nm: <sip:bob@127.0.0.1:5080>\r\nl: 0\r\n\r\n";
    let busy = "SIP/2.0 480 Temporarily Unavailable\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>;tag=p\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let ack = "ACK sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nf: <sip:anonymous@anonymous.invalid>;tag=a1\r\nt: <sip:bob@biloxi.invalid>;tag=p\r\ni: q2Vb0mZ4TgC1u1pDk9vW7A\r\nCSeq: 1 ACK\r\nl: 0\r\n\r\n";
    let report = verify(
        &udp_capture(&[
            (bob(), alice(), trying.as_bytes()),
            (bob(), alice(), register.as_bytes()),
            (bob(), alice(), busy.as_bytes()),
            (alice(), bob(), ack.as_bytes()),
            (alice(), bob(), b"\r\n\r\n"),
        ])
        .unwrap(),
    );
    assert_eq!(report.verdict(), Verdict::Clean, "{report}");
    assert_eq!(report.messages.len(), 4);
    assert!(report
        .messages
        .iter()
        .all(|m| matches!(m.class, Class::PlainAllowed(_))));
    // The same ACK without the failed INVITE before it acknowledges a 2xx.
    judged(&udp_one(ack.as_bytes()), Verdict::Leaks, "ACK of a 2xx");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(verify_capture(b"not a capture at all").is_err());
    assert!(verify_capture(&[]).is_err());
    let (code, _) = pcap_verify_cli(b"garbage");
    assert_eq!(code, Some(2));
}
