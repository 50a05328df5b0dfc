//! Fuzzes the capture judge (`ibephone pcap verify`) at three depths: the
//! input as a whole pcap/pcapng file; the input as the payload of a UDP
//! datagram (SIP framing, the CMS decoder, the leak rules, TURN
//! ChannelData and Send/Data indications opened), also to and from port
//! 53 (the DNS judge); and the input
//! cut into TCP segments of one stream, sent out of order and partly
//! twice (reassembly, framing by Content-Length, or by TLS records). The
//! input also rides whole in TCP segments to a TURN port and to port 53
//! (TURN over TCP: STUN and padded ChannelData cut from the stream; DNS
//! over TCP: length-prefixed messages), and as the quote of an ICMP error
//! after a datagram of its own tail (the ICMP judge). Never panics, and a
//! "clean" verdict always rests on judged messages only.
#![no_main]

use ibephone::pcap::capture::{Segment, Transport};
use ibephone::pcap::stream::{frame_messages, frame_tls};
use ibephone::pcap::tls::TlsKeys;
use ibephone::pcap::write::{ethernet_capture, ipv4_frame, tcp_frame, udp_capture, udp_frame};
use ibephone::pcap::{verify_capture, Class, Verdict};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(report) = verify_capture(bytes) {
        let _ = report.to_string();
        if report.verdict() == Verdict::Clean {
            assert!(report.unjudged.is_empty());
            assert!(report
                .messages
                .iter()
                .all(|m| !matches!(m.class, Class::Leak(_)) && m.findings.is_empty()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let a = "127.0.0.1:5070".parse().expect("address");
    let b = "127.0.0.1:5080".parse().expect("address");
    if let Ok(capture) = udp_capture(&[(a, b, data)]) {
        check(&capture);
    }
    let dns = "127.0.0.1:53".parse().expect("address");
    if let Ok(capture) = udp_capture(&[(a, dns, data), (dns, a, data)]) {
        check(&capture);
    }
    // The input as one TCP segment after the SYN, to a TURN port and to
    // port 53, with a well-formed STUN header in front for the first.
    let turn = "127.0.0.1:3478".parse().expect("address");
    let mut stun = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    for (to, head) in [(turn, &stun[..]), (dns, &[][..])] {
        let mut stream = head.to_vec();
        stream.extend_from_slice(data);
        let frames = [
            tcp_frame(a.into(), to.into(), 99, true, &[]),
            tcp_frame(a.into(), to.into(), 100, false, &stream),
        ];
        if let Ok(frames) = frames.into_iter().collect::<Result<Vec<_>, _>>() {
            if let Ok(capture) = ethernet_capture(&frames) {
                check(&capture);
            }
        }
    }
    // The input as the quote of an ICMP port unreachable, after a datagram
    // whose payload is the input past an IPv4 and UDP header.
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(data);
    let frames = [
        udp_frame(b.into(), a.into(), data.get(28..).unwrap_or_default()),
        ipv4_frame(a, b, 1, &icmp),
    ];
    if let Ok(frames) = frames.into_iter().collect::<Result<Vec<_>, _>>() {
        if let Ok(capture) = ethernet_capture(&frames) {
            check(&capture);
        }
    }
    // TCP: the first byte picks the segment size and the order.
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(shape % 61) + 1;
    let mut segments: Vec<Segment> = rest
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| Segment {
            frame: i + 2,
            transport: Transport::Tcp,
            src: a.into(),
            dst: b.into(),
            seq: 0xffff_ff00u32.wrapping_add((i * size) as u32),
            syn: false,
            payload: chunk.to_vec(),
        })
        .collect();
    if shape & 0x40 != 0 {
        segments.reverse();
    }
    if shape & 0x80 != 0 {
        let again: Vec<Segment> = segments.iter().step_by(3).cloned().collect();
        segments.extend(again);
    }
    let mut framing = frame_messages(&segments);
    let framed: usize = framing.unframed_tcp_bytes;
    assert!(framed <= rest.len() * 2);
    // A stream that starts like TLS: records paired into connections (no
    // secrets: framing only).
    let _ = frame_tls(&mut framing, Some(&TlsKeys::default()));
});
