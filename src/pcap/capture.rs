//! Frames of a pcap or pcapng file, decoded down to UDP datagrams and TCP
//! segments (Ethernet, Linux cooked v1, raw IP and BSD loopback links).

use super::PcapError;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use std::net::{IpAddr, SocketAddr};

/// The transport protocol of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A TCP segment.
    Tcp,
}

/// One transport payload with its endpoints, in capture order.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Index of the frame in the capture (1-based, as Wireshark numbers).
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

/// Reads every UDP/TCP segment of a pcap or pcapng capture held in `bytes`.
/// Frames of other protocols or link types are skipped; a truncated or
/// corrupt file is an error only when nothing at all can be read.
pub fn read_segments(bytes: &[u8]) -> Result<Vec<Segment>, PcapError> {
    let mut out = Vec::new();
    let mut frame = 0usize;
    let mut push = |link: DataLink, data: &[u8], out: &mut Vec<Segment>| {
        frame += 1;
        if let Some(seg) = decode(frame, link, data) {
            out.push(seg);
        }
    };
    if bytes.len() >= 4 && bytes[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(bytes).map_err(|e| PcapError::Format(e.to_string()))?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            let Ok(block) = block else { break };
            match block {
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links
                        .get(epb.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    push(link, &epb.data, &mut out);
                }
                Block::SimplePacket(spb) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    push(link, &spb.data, &mut out);
                }
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(bytes).map_err(|e| PcapError::Format(e.to_string()))?;
        let link = reader.header().datalink;
        while let Some(packet) = reader.next_packet() {
            let Ok(packet) = packet else { break };
            push(link, &packet.data, &mut out);
        }
    }
    Ok(out)
}

fn decode(frame: usize, link: DataLink, data: &[u8]) -> Option<Segment> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        // BSD loopback: a 4-byte address family, then the IP packet.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        // Linux cooked v2: a 20-byte header, then the network packet.
        DataLink::LINUX_SLL2 => SlicedPacket::from_ip(data.get(20..)?).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    match sliced.transport.as_ref()? {
        TransportSlice::Udp(udp) => Some(Segment {
            frame,
            transport: Transport::Udp,
            src: SocketAddr::new(src_ip, udp.source_port()),
            dst: SocketAddr::new(dst_ip, udp.destination_port()),
            seq: 0,
            syn: false,
            payload: udp.payload().to_vec(),
        }),
        TransportSlice::Tcp(tcp) => Some(Segment {
            frame,
            transport: Transport::Tcp,
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            payload: tcp.payload().to_vec(),
        }),
        _ => None,
    }
}
