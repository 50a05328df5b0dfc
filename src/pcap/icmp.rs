//! Judging ICMP errors (ICMPv4 destination unreachable, time exceeded,
//! parameter problem; ICMPv6 destination unreachable, packet too big,
//! time exceeded, parameter problem).
//!
//! An ICMP error quotes the start of the packet that caused it: its IP
//! header, its UDP header and as much of the payload as the router or
//! host chose (8 bytes at least; Linux quotes up to 576 bytes of IPv4 and
//! 1280 of IPv6, so a quote may hold a whole SIP message or SRTP packet).
//! On a relay or a NAT this happens daily (a port unreachable after a
//! call's allocation is gone), so the judge reads them rather than give
//! up on every capture that holds one. The only thing an error can leak
//! is what it quotes, so the rule is:
//!
//! - the quote must decode as an IP header of the error's own IP version
//!   and a whole UDP header (a TCP quote, or bytes that are no IP, are
//!   not judged);
//! - the quoted datagram was sent by the error's receiver (errors go back
//!   to the sender, RFC 792 and RFC 4443 2.4): a quote naming anyone else
//!   is not judged, whatever it holds;
//! - its quoted payload is a prefix of (or all of) a UDP datagram with
//!   the same source and destination (addresses and ports) captured
//!   before the error: then the error shows nothing the capture did not
//!   already show, and that datagram is judged on its own (a plain RTP
//!   packet is a leak there, not here). Such an error is clean.
//!
//! A quote of a datagram the capture does not hold (sent before the
//! capture started, captured on another link, or forged) is not judged:
//! the capture cannot be clean, never "quietly fine". What this cannot
//! see: an error quoting a datagram the capture holds tells that the
//! datagram was refused, which is traffic analysis, not content.

use super::capture::{Segment, Transport};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, UdpHeaderSlice};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Whether an ICMPv4 type is an error that quotes a packet (RFC 792:
/// destination unreachable 3, time exceeded 11, parameter problem 12).
pub fn is_icmpv4_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 11 | 12)
}

/// Whether an ICMPv6 type is an error that quotes a packet (RFC 4443:
/// destination unreachable 1, packet too big 2, time exceeded 3,
/// parameter problem 4).
pub fn is_icmpv6_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 1..=4)
}

/// One ICMP error found in a capture: who sent it to whom, and what it
/// quotes (the bytes after the 8-byte ICMP header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpError {
    /// Frame (1-based).
    pub frame: usize,
    /// The error's sender (a router or the refusing host).
    pub from: IpAddr,
    /// The error's receiver (the sender of the quoted packet).
    pub to: IpAddr,
    /// The quoted packet, as captured (possibly cut).
    pub quote: Vec<u8>,
}

/// The UDP datagram an error quotes: its endpoints and the quoted part of
/// its payload (`whole` when the quote holds all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    /// The quoted datagram's sender.
    pub src: SocketAddr,
    /// The quoted datagram's receiver.
    pub dst: SocketAddr,
    /// The quoted payload bytes (a prefix of the datagram's payload).
    pub payload: Vec<u8>,
}

/// Decodes the quote of `e`: an IP header of the same version as the
/// error's, then a UDP header. `Err` says why it is not one.
pub fn quoted_udp(e: &IcmpError) -> Result<Quoted, String> {
    let (src_ip, dst_ip, proto, rest): (IpAddr, IpAddr, u8, &[u8]) = match e.to {
        IpAddr::V4(_) => {
            let h = Ipv4HeaderSlice::from_slice(&e.quote)
                .map_err(|err| format!("the quote is no IPv4 header: {err}"))?;
            let rest = &e.quote[h.slice().len()..];
            if h.is_fragmenting_payload() && h.fragments_offset().value() != 0 {
                return Err("the quote is a later IP fragment (no UDP header)".into());
            }
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                h.protocol().0,
                rest,
            )
        }
        IpAddr::V6(_) => {
            let h = Ipv6HeaderSlice::from_slice(&e.quote)
                .map_err(|err| format!("the quote is no IPv6 header: {err}"))?;
            let rest = &e.quote[h.slice().len()..];
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                h.next_header().0,
                rest,
            )
        }
    };
    if proto != 17 {
        return Err(format!(
            "the quote is IP protocol {proto}, not UDP (only UDP quotes are judged)"
        ));
    }
    let udp = UdpHeaderSlice::from_slice(rest)
        .map_err(|err| format!("the quote has no whole UDP header: {err}"))?;
    let payload = &rest[8..];
    let claimed = usize::from(udp.length()).saturating_sub(8);
    if payload.len() > claimed {
        return Err(format!(
            "the quote holds {} payload bytes, its UDP header says {claimed}",
            payload.len()
        ));
    }
    Ok(Quoted {
        src: SocketAddr::new(src_ip, udp.source_port()),
        dst: SocketAddr::new(dst_ip, udp.destination_port()),
        payload: payload.to_vec(),
    })
}

/// Judges the ICMP errors of a capture against its UDP `segments` (as the
/// module doc says): for each error, `Ok(frame)` of the captured datagram
/// it quotes, or `Err` with why it is not judged.
pub fn judge(errors: &[IcmpError], segments: &[Segment]) -> Vec<Result<usize, String>> {
    let mut sent: HashMap<(SocketAddr, SocketAddr), Vec<&Segment>> = HashMap::new();
    for s in segments.iter().filter(|s| s.transport == Transport::Udp) {
        sent.entry((s.src, s.dst)).or_default().push(s);
    }
    errors
        .iter()
        .map(|e| {
            let q = quoted_udp(e)?;
            if q.src.ip() != e.to {
                return Err(format!(
                    "it quotes a datagram of {}, not of its receiver {}",
                    q.src.ip(),
                    e.to
                ));
            }
            sent.get(&(q.src, q.dst))
                .and_then(|list| {
                    list.iter().find(|s| {
                        s.frame < e.frame
                            && s.payload.len() >= q.payload.len()
                            && s.payload[..q.payload.len()] == q.payload[..]
                    })
                })
                .map(|s| s.frame)
                .ok_or_else(|| {
                    format!(
                        "it quotes {} bytes of a datagram {} -> {} the capture does not hold",
                        q.payload.len(),
                        q.src,
                        q.dst
                    )
                })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pcap::write::{ethernet_capture, ipv4_frame, udp_frame};
    use crate::pcap::{verify_capture, Verdict};
    use etherparse::{IpNumber, Ipv4Header, UdpHeader};
    use std::net::SocketAddrV4;

    const HOME: &str = "203.0.113.1:40000";
    const RELAY: &str = "203.0.113.10:50000";

    /// The IPv4 and UDP headers of a datagram `src` -> `dst` with
    /// `payload`, followed by its first `keep` payload bytes (a quote).
    fn quote(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], keep: usize) -> Vec<u8> {
        let udp = UdpHeader::without_ipv4_checksum(src.port(), dst.port(), payload.len()).unwrap();
        let ip = Ipv4Header::new(
            (8 + payload.len()) as u16,
            64,
            IpNumber::UDP,
            src.ip().octets(),
            dst.ip().octets(),
        )
        .unwrap();
        let mut q = Vec::new();
        ip.write(&mut q).unwrap();
        udp.write(&mut q).unwrap();
        q.extend_from_slice(&payload[..keep]);
        q
    }

    /// An ICMPv4 error frame (type, code 3) from `from` to `to` quoting
    /// `quoted`.
    fn icmp_frame(from: SocketAddrV4, to: SocketAddrV4, icmp_type: u8, quoted: &[u8]) -> Vec<u8> {
        let mut icmp = vec![icmp_type, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quoted);
        ipv4_frame(from, to, 1, &icmp).unwrap()
    }

    fn srtp_like() -> Vec<u8> {
        let mut p = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        p.extend((0..172u8).map(|b| b.wrapping_mul(37)));
        p
    }

    fn addrs() -> (SocketAddrV4, SocketAddrV4) {
        (HOME.parse().unwrap(), RELAY.parse().unwrap())
    }

    /// The relay's port unreachable quoting the home's datagram, which the
    /// capture holds: judged, clean (and the quote's payload is only ever
    /// a prefix of the captured one).
    #[test]
    fn a_port_unreachable_quoting_a_captured_datagram_is_clean() {
        let (home, relay) = addrs();
        let p = srtp_like();
        for keep in [0, 20, p.len()] {
            let frames = vec![
                udp_frame(home.into(), relay.into(), &p).unwrap(),
                icmp_frame(relay, home, 3, &quote(home, relay, &p, keep)),
            ];
            let report = verify_capture(&ethernet_capture(&frames).unwrap()).unwrap();
            assert_eq!(report.icmp_errors, 1, "{report}");
            assert!(
                !report.unjudged.iter().any(|u| u.why.contains("ICMP")),
                "keep {keep}: {report}"
            );
        }
    }

    /// What a careful judge refuses: a quote of bytes never captured (SIP
    /// in clear smuggled in an error), a quote whose bytes differ from the
    /// captured datagram, a quote of someone else's datagram, a quote of
    /// a datagram captured only after the error, an ICMP echo, TCP quotes
    /// and bytes that are no IP. None is clean.
    #[test]
    fn quotes_the_capture_does_not_vouch_for_are_not_judged() {
        let (home, relay) = addrs();
        let other: SocketAddrV4 = "203.0.113.2:40000".parse().unwrap();
        let p = srtp_like();
        let sip = b"INVITE sip:bob@atlanta.test SIP/2.0\r\n\r\n";
        let mut changed = p.clone();
        changed[30] ^= 1;
        let mut tcp_quote = quote(home, relay, &p, 8);
        tcp_quote[9] = 6; // protocol TCP (checksum not rechecked)
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "never captured",
                vec![icmp_frame(
                    relay,
                    home,
                    3,
                    &quote(home, relay, sip, sip.len()),
                )],
            ),
            (
                "other bytes",
                vec![
                    udp_frame(home.into(), relay.into(), &p).unwrap(),
                    icmp_frame(relay, home, 3, &quote(home, relay, &changed, 64)),
                ],
            ),
            (
                "someone else's",
                vec![
                    udp_frame(other.into(), relay.into(), &p).unwrap(),
                    icmp_frame(relay, home, 3, &quote(other, relay, &p, 64)),
                ],
            ),
            (
                "captured later",
                vec![
                    icmp_frame(relay, home, 11, &quote(home, relay, &p, 64)),
                    udp_frame(home.into(), relay.into(), &p).unwrap(),
                ],
            ),
            (
                "echo",
                vec![icmp_frame(relay, home, 8, &quote(home, relay, &p, 0))],
            ),
            ("tcp", vec![icmp_frame(relay, home, 3, &tcp_quote)]),
            (
                "no ip",
                vec![icmp_frame(relay, home, 3, b"not an IP packet")],
            ),
        ];
        for (what, frames) in cases {
            let report = verify_capture(&ethernet_capture(&frames).unwrap()).unwrap();
            assert_ne!(report.verdict(), Verdict::Clean, "{what}: {report}");
            assert!(
                report.unjudged.iter().any(|u| u.why.contains("ICMP")),
                "{what}: {report}"
            );
        }
    }

    /// A quote longer than its own UDP header says is refused (the extra
    /// bytes would ride unjudged).
    #[test]
    fn a_quote_longer_than_its_datagram_is_refused() {
        let (home, relay) = addrs();
        let p = srtp_like();
        let mut q = quote(home, relay, &p[..20], 20);
        q.extend_from_slice(b"INVITE sip:bob@atlanta.test SIP/2.0");
        let e = IcmpError {
            frame: 2,
            from: (*relay.ip()).into(),
            to: (*home.ip()).into(),
            quote: q,
        };
        let err = quoted_udp(&e).unwrap_err();
        assert!(err.contains("UDP header says"), "{err}");
    }
}
