//! Writing captures: UDP datagrams between loopback endpoints as a pcap
//! file (Ethernet link type), for tests and for the proof tools' fixtures.

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::net::SocketAddrV4;
use std::time::Duration;

/// One datagram: sender, receiver, payload.
pub type Datagram<'a> = (SocketAddrV4, SocketAddrV4, &'a [u8]);

/// A pcap file holding `datagrams` as IPv4/UDP frames, 20 ms apart.
pub fn udp_capture(datagrams: &[Datagram<'_>]) -> Result<Vec<u8>, String> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).map_err(|e| e.to_string())?;
    for (i, (src, dst, payload)) in datagrams.iter().enumerate() {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.ip().octets(), dst.ip().octets(), 64)
            .udp(src.port(), dst.port());
        let mut frame = Vec::with_capacity(payload.len() + 42);
        builder
            .write(&mut frame, payload)
            .map_err(|e| e.to_string())?;
        let ts = Duration::from_millis(1_795_348_800_000 + 20 * i as u64);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
            .map_err(|e| e.to_string())?;
    }
    Ok(w.into_writer())
}
