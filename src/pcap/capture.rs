//! Frames of a pcap or pcapng file, decoded down to UDP datagrams and TCP
//! segments (Ethernet with or without VLAN tags, Linux cooked v1/v2, raw IP
//! and BSD loopback links; IPv4 and IPv6; IP fragments reassembled).
//!
//! Nothing is dropped silently: a frame that is not decoded to a segment
//! is either known to carry no user data (ARP) or listed as
//! [`Unjudged`] with the reason (truncated by the snap length, a protocol
//! other than UDP/TCP, an unsupported link type, fragments never completed
//! or overlapping with different bytes, a corrupt record).

use super::icmp::{is_icmpv4_error, is_icmpv6_error, IcmpError};
use super::{PcapError, Unjudged};
use etherparse::{
    IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The transport protocol of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A TCP segment.
    Tcp,
    /// A SIP message decrypted from TLS records on TCP (never a segment;
    /// see [`super::tls`]).
    Tls,
}

/// ICMPv6 types of link housekeeping: MLD query/report/done (130-132),
/// router and neighbour discovery (133-137), MLDv2 report (143).
fn is_link_housekeeping(icmpv6_type: u8) -> bool {
    matches!(icmpv6_type, 130..=137 | 143)
}

/// IGMP (IPv4's MLD, RFC 2236 and 3376) of link housekeeping: a
/// membership query (0x11), report (0x12, 0x16, 0x22) or leave (0x17),
/// addressed to a multicast group. The hosts' kernels send these when an
/// interface comes up; like MLD they carry group addresses only.
fn is_igmp_housekeeping(dst: IpAddr, igmp: &[u8]) -> bool {
    dst.is_multicast()
        && igmp
            .first()
            .is_some_and(|t| matches!(t, 0x11 | 0x12 | 0x16 | 0x17 | 0x22))
}

/// One transport payload with its endpoints, in capture order.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Index of the frame in the capture (1-based, as Wireshark numbers);
    /// for a reassembled IP packet, the frame of its first fragment.
    pub frame: usize,
    /// UDP or TCP.
    pub transport: Transport,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// TCP sequence number (0 for UDP).
    pub seq: u32,
    /// TCP SYN flag (false for UDP).
    pub syn: bool,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Everything read from a capture: the segments, and what could not be
/// decoded to one.
#[derive(Debug, Default)]
pub struct Capture {
    /// Number of frames (packet records) in the file.
    pub frames: usize,
    /// UDP datagrams and TCP segments, in capture order.
    pub segments: Vec<Segment>,
    /// ICMP errors (judged by [`super::icmp`] against the segments).
    pub icmp_errors: Vec<IcmpError>,
    /// Frames (or parts of the file) that could not be decoded.
    pub unjudged: Vec<Unjudged>,
}

/// Most fragments kept for one IP packet (a 64 KiB packet in 8-byte
/// fragments would need 8192; real ones need a few dozen).
const MAX_FRAGMENTS: usize = 1024;

/// Reads every UDP/TCP segment of a pcap or pcapng capture held in `bytes`.
/// Frames of other protocols, truncated or undecodable frames are left
/// out (see [`read_capture`], which reports them); a file that is not a
/// capture at all is an error.
pub fn read_segments(bytes: &[u8]) -> Result<Vec<Segment>, PcapError> {
    read_capture(bytes).map(|c| c.segments)
}

/// Reads a pcap or pcapng capture: every frame becomes a segment, is known
/// to carry no user data (ARP), or is listed in [`Capture::unjudged`] with
/// the reason. Fails only when `bytes` do not start as a capture file.
pub fn read_capture(bytes: &[u8]) -> Result<Capture, PcapError> {
    let mut d = Decoder::default();
    if bytes.len() >= 4 && bytes[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(bytes).map_err(|e| PcapError::Format(e.to_string()))?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    d.corrupt(&e.to_string());
                    break;
                }
            };
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links.get(epb.interface_id as usize).copied();
                    d.frame(link, &epb.data, epb.original_len as usize);
                }
                Block::Packet(pb) => {
                    let link = links.get(usize::from(pb.interface_id)).copied();
                    d.frame(link, &pb.data, pb.original_len as usize);
                }
                Block::SimplePacket(spb) => {
                    let link = links.first().copied();
                    // The block's data is padded to 32 bits.
                    let len = (spb.original_len as usize).min(spb.data.len());
                    d.frame(link, &spb.data[..len], spb.original_len as usize);
                }
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(bytes).map_err(|e| PcapError::Format(e.to_string()))?;
        let link = reader.header().datalink;
        while let Some(packet) = reader.next_packet() {
            match packet {
                Ok(p) => d.frame(Some(link), &p.data, p.orig_len as usize),
                Err(e) => {
                    d.corrupt(&e.to_string());
                    break;
                }
            }
        }
    }
    Ok(d.finish())
}

/// Fragments of one IP packet being reassembled.
struct Fragments {
    first_frame: usize,
    /// (byte offset, payload) as captured.
    parts: Vec<(usize, Vec<u8>)>,
    /// Total length, known once the last fragment (MF = 0) arrived.
    end: Option<usize>,
    /// Why this packet can no longer be reassembled.
    broken: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Default)]
struct Decoder {
    frames: usize,
    segments: Vec<Segment>,
    icmp_errors: Vec<IcmpError>,
    unjudged: Vec<Unjudged>,
    fragments: HashMap<FragKey, Fragments>,
    /// Keys of `fragments` in the order they were first seen.
    fragment_order: Vec<FragKey>,
}

impl Decoder {
    fn unjudged(&mut self, frame: usize, why: String) {
        self.unjudged.push(Unjudged {
            frame: Some(frame),
            why,
        });
    }

    fn corrupt(&mut self, error: &str) {
        self.unjudged.push(Unjudged {
            frame: None,
            why: format!(
                "the capture is truncated or corrupt after frame {}: {error}",
                self.frames
            ),
        });
    }

    fn frame(&mut self, link: Option<DataLink>, data: &[u8], original_len: usize) {
        self.frames += 1;
        let frame = self.frames;
        if data.len() < original_len {
            return self.unjudged(
                frame,
                format!(
                    "frame truncated: {} of {original_len} bytes captured (snap length)",
                    data.len()
                ),
            );
        }
        let Some(link) = link else {
            return self.unjudged(frame, "packet on an undeclared pcapng interface".into());
        };
        let sliced = match link {
            DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
            DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
            // BSD loopback: a 4-byte address family, then the IP packet.
            DataLink::NULL | DataLink::LOOP => match data.get(4..) {
                Some(ip) => SlicedPacket::from_ip(ip),
                None => return self.unjudged(frame, "loopback frame shorter than 4 bytes".into()),
            },
            // Linux cooked v2: a 20-byte header, then the network packet.
            DataLink::LINUX_SLL2 => match data.get(20..) {
                Some(ip) => SlicedPacket::from_ip(ip),
                None => {
                    return self
                        .unjudged(frame, "Linux cooked v2 frame shorter than 20 bytes".into())
                }
            },
            other => return self.unjudged(frame, format!("link type {other:?} is not supported")),
        };
        let sliced = match sliced {
            Ok(s) => s,
            Err(e) => return self.unjudged(frame, format!("undecodable frame: {e}")),
        };
        let (src_ip, dst_ip, payload): (IpAddr, IpAddr, _) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
                v4.payload(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
                v6.payload(),
            ),
            // ARP carries addresses only, nothing a user typed or said.
            Some(NetSlice::Arp(_)) => return,
            None => {
                let what = sliced
                    .payload_ether_type()
                    .map_or_else(|| "unknown".to_string(), |t| format!("{t:?}"));
                return self.unjudged(frame, format!("not an IP packet (ether type {what})"));
            }
        };
        if payload.fragmented {
            return self.fragment(frame, &sliced, src_ip, dst_ip);
        }
        match &sliced.transport {
            Some(TransportSlice::Udp(udp)) => {
                let extra = payload.payload.len().saturating_sub(udp.slice().len());
                if extra > 0 {
                    self.unjudged(
                        frame,
                        format!("{extra} bytes after the UDP datagram in the IP packet"),
                    );
                }
                self.push_udp(frame, src_ip, dst_ip, udp)
            }
            Some(TransportSlice::Tcp(tcp)) => self.push_tcp(frame, src_ip, dst_ip, tcp),
            // IPv6 link housekeeping (multicast listener reports, router
            // and neighbour discovery): made by the hosts' kernels, they
            // carry no payload of the phones; any other ICMPv6 (errors
            // quote the packet that caused them) stays unjudged.
            Some(TransportSlice::Icmpv6(icmp)) if is_link_housekeeping(icmp.type_u8()) => {}
            // ICMP errors quote a packet: judged by what they quote.
            Some(TransportSlice::Icmpv4(icmp)) if is_icmpv4_error(icmp.type_u8()) => {
                self.icmp_errors.push(IcmpError {
                    frame,
                    from: src_ip,
                    to: dst_ip,
                    quote: icmp.payload().to_vec(),
                });
            }
            Some(TransportSlice::Icmpv6(icmp)) if is_icmpv6_error(icmp.type_u8()) => {
                self.icmp_errors.push(IcmpError {
                    frame,
                    from: src_ip,
                    to: dst_ip,
                    quote: icmp.payload().to_vec(),
                });
            }
            // The same housekeeping over IPv4.
            _ if payload.ip_number == IpNumber::IGMP
                && is_igmp_housekeeping(dst_ip, payload.payload) => {}
            _ => {
                let proto = payload.ip_number;
                self.unjudged(
                    frame,
                    format!(
                        "IP protocol {} ({}) is not judged",
                        proto.0,
                        proto.keyword_str().unwrap_or("unknown")
                    ),
                );
            }
        }
    }

    fn push_udp(&mut self, frame: usize, src: IpAddr, dst: IpAddr, udp: &UdpSlice<'_>) {
        self.segments.push(Segment {
            frame,
            transport: Transport::Udp,
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            seq: 0,
            syn: false,
            payload: udp.payload().to_vec(),
        });
    }

    fn push_tcp(&mut self, frame: usize, src: IpAddr, dst: IpAddr, tcp: &TcpSlice<'_>) {
        self.segments.push(Segment {
            frame,
            transport: Transport::Tcp,
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            payload: tcp.payload().to_vec(),
        });
    }

    fn fragment(&mut self, frame: usize, sliced: &SlicedPacket<'_>, src: IpAddr, dst: IpAddr) {
        let (id, offset, more, payload) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                (
                    u32::from(h.identification()),
                    usize::from(h.fragments_offset().byte_offset()),
                    h.more_fragments(),
                    v4.payload(),
                )
            }
            Some(NetSlice::Ipv6(v6)) => {
                let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                    Ipv6ExtensionSlice::Fragment(f) => Some(f),
                    _ => None,
                });
                let Some(f) = frag else {
                    return self.unjudged(frame, "IPv6 fragment without a fragment header".into());
                };
                (
                    f.identification(),
                    usize::from(f.fragment_offset().byte_offset()),
                    f.more_fragments(),
                    v6.payload(),
                )
            }
            _ => return,
        };
        let key = FragKey {
            src,
            dst,
            id,
            proto: payload.ip_number.0,
        };
        if !self.fragments.contains_key(&key) {
            self.fragment_order.push(key.clone());
        }
        let entry = self.fragments.entry(key.clone()).or_insert(Fragments {
            first_frame: frame,
            parts: Vec::new(),
            end: None,
            broken: None,
        });
        if entry.broken.is_some() {
            return;
        }
        let data = payload.payload;
        let end = offset + data.len();
        if offset == 0 {
            entry.first_frame = frame;
        }
        if !more {
            match entry.end {
                Some(e) if e != end => {
                    entry.broken = Some(format!(
                        "IP fragments disagree on the packet's length ({e} and {end} bytes)"
                    ));
                    return;
                }
                _ => entry.end = Some(end),
            }
        }
        if entry.parts.len() >= MAX_FRAGMENTS {
            entry.broken = Some(format!("more than {MAX_FRAGMENTS} IP fragments"));
            return;
        }
        entry.parts.push((offset, data.to_vec()));
        match assemble(entry) {
            Ok(Some(whole)) => {
                let first = entry.first_frame;
                self.fragments.remove(&key);
                self.fragment_order.retain(|k| k != &key);
                self.reassembled(first, src, dst, payload.ip_number, &whole);
            }
            Ok(None) => {}
            Err(why) => entry.broken = Some(why),
        }
    }

    fn reassembled(&mut self, frame: usize, src: IpAddr, dst: IpAddr, proto: IpNumber, p: &[u8]) {
        match proto {
            IpNumber::UDP => match UdpSlice::from_slice(p) {
                Ok(udp) => {
                    let extra = p.len() - udp.slice().len();
                    if extra > 0 {
                        self.unjudged(
                            frame,
                            format!("{extra} bytes after the UDP datagram in the IP packet"),
                        );
                    }
                    self.push_udp(frame, src, dst, &udp)
                }
                Err(e) => self.unjudged(frame, format!("reassembled UDP datagram: {e}")),
            },
            IpNumber::TCP => match TcpSlice::from_slice(p) {
                Ok(tcp) => self.push_tcp(frame, src, dst, &tcp),
                Err(e) => self.unjudged(frame, format!("reassembled TCP segment: {e}")),
            },
            other => self.unjudged(
                frame,
                format!(
                    "IP protocol {} ({}) is not judged",
                    other.0,
                    other.keyword_str().unwrap_or("unknown")
                ),
            ),
        }
    }

    fn finish(mut self) -> Capture {
        for key in std::mem::take(&mut self.fragment_order) {
            if let Some(f) = self.fragments.remove(&key) {
                let why = f.broken.unwrap_or_else(|| {
                    format!(
                        "IP packet from {} never completed: {} fragments, bytes missing",
                        key.src,
                        f.parts.len()
                    )
                });
                self.unjudged(f.first_frame, why);
            }
        }
        Capture {
            frames: self.frames,
            segments: self.segments,
            icmp_errors: self.icmp_errors,
            unjudged: self.unjudged,
        }
    }
}

/// The whole packet once every byte from 0 to the end is there; an error
/// when two fragments carry different bytes for the same offset (receivers
/// differ on which copy wins, so the judge cannot tell what was read).
fn assemble(f: &Fragments) -> Result<Option<Vec<u8>>, String> {
    let Some(end) = f.end else {
        return Ok(None);
    };
    let mut parts: Vec<&(usize, Vec<u8>)> = f.parts.iter().collect();
    parts.sort_by_key(|(off, _)| *off);
    if parts.iter().any(|(off, data)| off + data.len() > end) {
        return Err("an IP fragment extends past the packet's end".into());
    }
    let mut whole: Vec<u8> = Vec::with_capacity(end);
    for (off, data) in parts {
        if *off > whole.len() {
            return Ok(None); // a hole, for now
        }
        let overlap = (whole.len() - off).min(data.len());
        if whole[*off..*off + overlap] != data[..overlap] {
            return Err("IP fragments overlap with different bytes".into());
        }
        whole.extend_from_slice(&data[overlap..]);
    }
    Ok((whole.len() == end).then_some(whole))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, PacketBuilder};

    fn icmpv6(t: Icmpv6Type) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(
                [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                255,
            )
            .icmpv6(t);
        let payload = [0u8; 16];
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// Neighbour and router discovery on the link are the kernels'
    /// housekeeping: judged as nothing of the phones. An echo request (or
    /// an error quoting a packet) is still not judged.
    #[test]
    fn link_housekeeping_is_judged_other_icmpv6_is_not() {
        let ns = icmpv6(Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        });
        let rs = icmpv6(Icmpv6Type::Unknown {
            type_u8: 133,
            code_u8: 0,
            bytes5to8: [0; 4],
        });
        let echo = icmpv6(Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
            id: 1,
            seq: 1,
        }));
        let pcap = crate::pcap::write::ethernet_capture(&[ns, rs, echo]).unwrap();
        let c = read_capture(&pcap).unwrap();
        assert_eq!(c.unjudged.len(), 1, "{:?}", c.unjudged);
        assert_eq!(c.unjudged[0].frame, Some(3));
    }

    fn ipv4(protocol: IpNumber, dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([203, 0, 113, 1], dst, 1);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, protocol, payload).unwrap();
        out
    }

    /// An IGMP membership report to a group (a kernel bringing an
    /// interface up) is housekeeping like MLD; IGMP of another type, or
    /// sent to a unicast address, and any other unknown protocol are not
    /// judged.
    #[test]
    fn igmp_membership_messages_are_housekeeping() {
        let report = ipv4(
            IpNumber::IGMP,
            [224, 0, 0, 22],
            &[0x22, 0, 0xfa, 0xfd, 0, 0, 0, 0],
        );
        let leave = ipv4(
            IpNumber::IGMP,
            [224, 0, 0, 2],
            &[0x17, 0, 0, 0, 239, 1, 2, 3],
        );
        let odd_type = ipv4(IpNumber::IGMP, [224, 0, 0, 1], &[0x42, 0, 0, 0, 0, 0, 0, 0]);
        let unicast = ipv4(
            IpNumber::IGMP,
            [203, 0, 113, 10],
            &[0x16, 0, 0, 0, 0, 0, 0, 0],
        );
        let gre = ipv4(IpNumber::GRE, [224, 0, 0, 22], &[0x22, 0, 0, 0]);
        let pcap =
            crate::pcap::write::ethernet_capture(&[report, leave, odd_type, unicast, gre]).unwrap();
        let c = read_capture(&pcap).unwrap();
        let frames: Vec<_> = c.unjudged.iter().map(|u| u.frame).collect();
        assert_eq!(frames, [Some(3), Some(4), Some(5)], "{:?}", c.unjudged);
    }
}
