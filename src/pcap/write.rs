//! Writing captures: UDP datagrams between loopback endpoints as a pcap
//! file (Ethernet link type), for tests and for the proof tools' fixtures;
//! and the building blocks of hostile captures for the judge's tests and
//! fuzz seeds (TCP segments, IPv6, VLAN tags, IP fragments, frames cut by
//! a snap length).

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, PacketBuilderStep, VlanId};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// One datagram: sender, receiver, payload.
pub type Datagram<'a> = (SocketAddrV4, SocketAddrV4, &'a [u8]);

/// A pcap file holding `datagrams` as IPv4/UDP frames, 20 ms apart.
pub fn udp_capture(datagrams: &[Datagram<'_>]) -> Result<Vec<u8>, String> {
    let frames = datagrams
        .iter()
        .map(|(src, dst, payload)| udp_frame((*src).into(), (*dst).into(), payload))
        .collect::<Result<Vec<_>, _>>()?;
    ethernet_capture(&frames)
}

/// A pcap file (Ethernet link type) holding `frames` as they are, 20 ms
/// apart.
pub fn ethernet_capture(frames: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let with_lengths: Vec<(&[u8], u32)> = frames
        .iter()
        .map(|f| (f.as_slice(), f.len() as u32))
        .collect();
    capture_with_lengths(DataLink::ETHERNET, &with_lengths)
}

/// A pcap file of link type `link` holding each frame with its original
/// length on the wire (larger than the frame for a frame cut by the snap
/// length), 20 ms apart.
pub fn capture_with_lengths(link: DataLink, frames: &[(&[u8], u32)]) -> Result<Vec<u8>, String> {
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).map_err(|e| e.to_string())?;
    for (i, (frame, orig_len)) in frames.iter().enumerate() {
        let ts = Duration::from_millis(1_795_348_800_000 + 20 * i as u64);
        w.write_packet(&PcapPacket::new(ts, *orig_len, frame))
            .map_err(|e| e.to_string())?;
    }
    Ok(w.into_writer())
}

fn ip_layer(
    src: IpAddr,
    dst: IpAddr,
    vlan: Option<u16>,
) -> Result<PacketBuilderStep<IpHeaders>, String> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    Ok(match (vlan, src, dst) {
        (None, IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (None, IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        (Some(id), IpAddr::V4(s), IpAddr::V4(d)) => eth
            .single_vlan(VlanId::try_new(id).map_err(|e| format!("VLAN id: {e}"))?)
            .ipv4(s.octets(), d.octets(), 64),
        (Some(id), IpAddr::V6(s), IpAddr::V6(d)) => eth
            .single_vlan(VlanId::try_new(id).map_err(|e| format!("VLAN id: {e}"))?)
            .ipv6(s.octets(), d.octets(), 64),
        _ => return Err("source and destination are of different IP versions".into()),
    })
}

/// An Ethernet frame holding one UDP datagram (IPv4 or IPv6, after the
/// addresses).
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    vlan_udp_frame(src, dst, None, payload)
}

/// An Ethernet frame holding one UDP datagram, with an 802.1Q tag when
/// `vlan` is set.
pub fn vlan_udp_frame(
    src: SocketAddr,
    dst: SocketAddr,
    vlan: Option<u16>,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let builder = ip_layer(src.ip(), dst.ip(), vlan)?.udp(src.port(), dst.port());
    let mut frame = Vec::with_capacity(payload.len() + 66);
    builder
        .write(&mut frame, payload)
        .map_err(|e| e.to_string())?;
    Ok(frame)
}

/// An Ethernet frame holding one TCP segment (ACK set; SYN when `syn`).
pub fn tcp_frame(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let mut builder = ip_layer(src.ip(), dst.ip(), None)?
        .tcp(src.port(), dst.port(), seq, 65535)
        .ack(1);
    if syn {
        builder = builder.syn();
    }
    let mut frame = Vec::with_capacity(payload.len() + 74);
    builder
        .write(&mut frame, payload)
        .map_err(|e| e.to_string())?;
    Ok(frame)
}

/// An Ethernet frame holding an IPv4 packet of protocol `protocol` with
/// `payload` as it is (SCTP, ICMP, anything).
pub fn ipv4_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    protocol: u8,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let mut ip = Ipv4Header::new(
        payload.len() as u16,
        64,
        IpNumber(protocol),
        src.ip().octets(),
        dst.ip().octets(),
    )
    .map_err(|e| e.to_string())?;
    ip.header_checksum = ip.calc_header_checksum();
    let mut frame = ETHERNET_IPV4.to_vec();
    ip.write(&mut frame).map_err(|e| e.to_string())?;
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// The Ethernet header of every frame written here, for an IPv4 payload.
const ETHERNET_IPV4: [u8; 14] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];

/// A UDP datagram from `src` to `dst` split into IPv4 fragments of at most
/// `chunk` bytes of IP payload each (`chunk` is rounded down to a multiple
/// of 8, at least 8), identification `id`, as Ethernet frames in order.
pub fn ipv4_udp_fragments(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    chunk: usize,
    id: u16,
) -> Result<Vec<Vec<u8>>, String> {
    let whole = udp_frame(src.into(), dst.into(), payload)?;
    // Ethernet (14) + IPv4 without options (20), then the UDP datagram.
    let datagram = whole.get(34..).ok_or("frame too short")?;
    let chunk = (chunk / 8).max(1) * 8;
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < datagram.len() {
        let end = (offset + chunk).min(datagram.len());
        let mut ip = Ipv4Header::new(
            (end - offset) as u16,
            64,
            IpNumber::UDP,
            src.ip().octets(),
            dst.ip().octets(),
        )
        .map_err(|e| e.to_string())?;
        ip.identification = id;
        ip.more_fragments = end < datagram.len();
        ip.fragment_offset = ((offset / 8) as u16)
            .try_into()
            .map_err(|e| format!("fragment offset: {e}"))?;
        ip.header_checksum = ip.calc_header_checksum();
        let mut frame = ETHERNET_IPV4.to_vec();
        ip.write(&mut frame).map_err(|e| e.to_string())?;
        frame.extend_from_slice(&datagram[offset..end]);
        out.push(frame);
        offset = end;
    }
    Ok(out)
}

/// The tunnel's vector dialog ([`crate::tunnel::kat::generate`]) as UDP between 127.0.0.1:5070 (alice) and
/// 127.0.0.1:5080 (bob), as a pcap file (`tests/captures/tunnel-dialog.pcap`).
pub fn dialog_capture() -> Result<Vec<u8>, String> {
    let doc = crate::tunnel::kat::generate()?;
    let alice: std::net::SocketAddrV4 = "127.0.0.1:5070".parse().map_err(|_| "address")?;
    let bob: std::net::SocketAddrV4 = "127.0.0.1:5080".parse().map_err(|_| "address")?;
    let mut packets = Vec::new();
    for m in doc["messages"].as_array().ok_or("messages")? {
        let outer =
            hex::decode(m["outer_hex"].as_str().ok_or("outer_hex")?).map_err(|e| e.to_string())?;
        let (src, dst) = if m["direction"] == 0 {
            (alice, bob)
        } else {
            (bob, alice)
        };
        packets.push((src, dst, outer));
    }
    let refs: Vec<_> = packets
        .iter()
        .map(|(s, d, p)| (*s, *d, p.as_slice()))
        .collect();
    udp_capture(&refs)
}
