//! RTCP (RFC 3550 section 6) for one audio stream, sans-I/O: what we
//! receive feeds the reception statistics (loss, RFC 3550 A.3; interarrival
//! jitter, A.8), what we send feeds the sender report, and report blocks
//! about us give the round-trip time. Packets are the `rtcp` crate's; with
//! rtcp-mux (RFC 5761) they share the RTP port and [`is_rtcp`] tells them
//! apart; SRTCP protection is [`super::srtp::SrtpChannel::protect_rtcp`].
//!
//! Time is an argument: `now: Instant` for every interval (jitter, the
//! delay since the last SR, the round trip), `wall: SystemTime` only for
//! the NTP field of our sender reports. The round trip is measured on the
//! monotonic clock (the instant each of our SRs left, matched by its NTP
//! middle bits), never by subtracting wall-clock readings.

use bytes::Bytes;
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// How many of our sender reports are remembered for round trips.
const SR_HISTORY: usize = 8;
/// A sequence jump larger than this restarts the statistics (RFC 3550
/// A.1's MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;

/// Why an RTCP packet was refused; a refused packet changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Not a compound RTCP packet the `rtcp` crate can parse.
    #[error("malformed RTCP: {0}")]
    Malformed(String),
    /// Building a report failed.
    #[error("cannot build RTCP: {0}")]
    Build(String),
}

/// Whether a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 section
/// 4: version 2 and a second byte of 192..=223, the RTCP packet types).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

/// The sender and receiver reports of a compound RTCP packet, each
/// checked against its own length fields before the `rtcp` crate reads it;
/// every other packet type (SDES, BYE, APP, feedback, XR) is framed and
/// skipped unread, since we use none of them.
///
/// Why by hand: the crate panics on some malformed packets (a padded
/// feedback packet shorter than its fixed part made it advance past the
/// end; found by the `rtcp_handle` fuzz target), and a peer's bytes must
/// never panic the media task. Padding is refused (we never send it, and
/// SRTCP needs none).
fn reports_in(compound: &[u8]) -> Result<Vec<&[u8]>, RtcpError> {
    let bad = |why: &str| RtcpError::Malformed(why.to_string());
    let mut out = Vec::new();
    let mut rest = compound;
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    while !rest.is_empty() {
        let [first, kind, len_hi, len_lo, ..] = *rest else {
            return Err(bad("short header"));
        };
        if first >> 6 != 2 {
            return Err(bad("version"));
        }
        if first & 0x20 != 0 {
            return Err(bad("padding"));
        }
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let Some(packet) = rest.get(..len) else {
            return Err(bad("length past the end"));
        };
        let count = usize::from(first & 0x1f);
        let need = match kind {
            200 => Some(28 + 24 * count),
            201 => Some(8 + 24 * count),
            _ => None,
        };
        if let Some(need) = need {
            if len < need {
                return Err(bad("report shorter than its report count"));
            }
            out.push(packet);
        }
        rest = &rest[len..];
    }
    Ok(out)
}

/// The quality figures of a call's audio, both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    /// Share of the peer's packets lost since our previous report (0..1).
    pub fraction_lost: f64,
    /// Packets of the peer lost since the start (negative with duplicates).
    pub cumulative_lost: i64,
    /// Interarrival jitter of the peer's packets, milliseconds.
    pub jitter_ms: f64,
    /// What the peer last reported about our packets: share lost.
    pub remote_fraction_lost: Option<f64>,
    /// What the peer last reported about our packets: lost since the
    /// start (negative with duplicates).
    pub remote_cumulative_lost: Option<i64>,
    /// What the peer last reported about our packets: jitter, ms.
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the peer's last report block about us.
    pub rtt_ms: Option<f64>,
    /// RTCP packets accepted from the peer.
    pub reports_received: u64,
}

#[derive(Debug, Clone)]
struct Reception {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units, times 16 (RFC 3550 A.8).
    jitter16: i64,
    last_transit: Option<i64>,
    fraction: u8,
}

impl Reception {
    fn new(ssrc: u32, seq: u16) -> Self {
        Reception {
            ssrc,
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            jitter16: 0,
            last_transit: None,
            fraction: 0,
        }
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

/// The RTCP state of one stream: our SSRC, the peer's, both directions'
/// counters.
#[derive(Debug, Clone)]
pub struct RtcpState {
    ssrc: u32,
    cname: String,
    clock_rate: u32,
    epoch: Instant,
    sent_packets: u32,
    sent_octets: u32,
    last_sent: Option<(u32, Instant)>,
    reception: Option<Reception>,
    /// The peer's last SR: NTP middle bits and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// Our recent SRs: NTP middle bits and when they left.
    our_srs: VecDeque<(u32, Instant)>,
    stats: RtcpStats,
}

impl RtcpState {
    /// The state of a stream we send as `ssrc` with RTP clock `clock_rate`
    /// (8000 for G.711, 48000 for Opus), named `cname` in SDES; `now`
    /// starts its clock.
    pub fn new(ssrc: u32, cname: &str, clock_rate: u32, now: Instant) -> Self {
        RtcpState {
            ssrc,
            cname: cname.chars().take(255).collect(),
            clock_rate: clock_rate.max(1),
            epoch: now,
            sent_packets: 0,
            sent_octets: 0,
            last_sent: None,
            reception: None,
            last_sr: None,
            our_srs: VecDeque::new(),
            stats: RtcpStats::default(),
        }
    }

    /// Records one RTP packet we sent (payload bytes, its timestamp).
    pub fn on_rtp_sent(&mut self, payload_len: usize, timestamp: u32, now: Instant) {
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add(payload_len as u32);
        self.last_sent = Some((timestamp, now));
    }

    /// Records one authenticated RTP packet from the peer. A new SSRC
    /// restarts the reception statistics.
    pub fn on_rtp_received(&mut self, ssrc: u32, seq: u16, timestamp: u32, now: Instant) {
        let r = match &mut self.reception {
            Some(r) if r.ssrc == ssrc => {
                let delta = seq.wrapping_sub(r.max_seq);
                if delta == 0 {
                    r.received += 1; // duplicate: counted, as RFC 3550 does
                } else if delta < MAX_DROPOUT {
                    if seq < r.max_seq {
                        r.cycles = r.cycles.wrapping_add(1 << 16);
                    }
                    r.max_seq = seq;
                    r.received += 1;
                } else if delta <= u16::MAX - 100 {
                    // A jump: the sender restarted; start over.
                    *r = Reception::new(ssrc, seq);
                } else {
                    r.received += 1; // late or reordered
                }
                r
            }
            _ => self.reception.insert(Reception::new(ssrc, seq)),
        };
        // RFC 3550 A.8: arrival in timestamp units minus the RTP timestamp.
        let arrival = (now.saturating_duration_since(self.epoch).as_secs_f64()
            * f64::from(self.clock_rate)) as i64;
        let transit = arrival - i64::from(timestamp);
        if let Some(last) = r.last_transit {
            let d = (transit - last).abs();
            r.jitter16 += d - ((r.jitter16 + 8) >> 4);
        }
        r.last_transit = Some(transit);
    }

    fn report_block(&mut self, now: Instant) -> Option<ReceptionReport> {
        let r = self.reception.as_mut()?;
        let expected = r.expected();
        let expected_interval = expected.saturating_sub(r.expected_prior);
        let received_interval = r.received.saturating_sub(r.received_prior);
        r.expected_prior = expected;
        r.received_prior = r.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        r.fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        // total_lost is a signed 24-bit field.
        let lost = r.lost().clamp(-0x80_0000, 0x7F_FFFF);
        let (lsr, delay) = match self.last_sr {
            Some((middle, at)) => {
                let d = now.saturating_duration_since(at).as_secs_f64() * 65536.0;
                (middle, d.min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc: r.ssrc,
            fraction_lost: r.fraction,
            total_lost: (lost as i32 as u32) & 0x00FF_FFFF,
            last_sequence_number: r.extended_max(),
            jitter: (r.jitter16 >> 4).max(0) as u32,
            last_sender_report: lsr,
            delay,
        })
    }

    /// Builds our next compound report: an SR when we have sent media
    /// (else an RR), with the report block about the peer, and SDES CNAME.
    /// `wall` is only written into the SR's NTP field.
    pub fn build_report(&mut self, now: Instant, wall: SystemTime) -> Result<Bytes, RtcpError> {
        let block: Vec<ReceptionReport> = self.report_block(now).into_iter().collect();
        let mut packets: Vec<Box<dyn rtcp::packet::Packet + Send + Sync>> = Vec::new();
        match self.last_sent {
            Some((ts, at)) => {
                let ntp = ntp_time(wall);
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let rtp_time =
                    ts.wrapping_add((elapsed * f64::from(self.clock_rate)) as u64 as u32);
                self.our_srs.push_back((ntp_middle(ntp), now));
                while self.our_srs.len() > SR_HISTORY {
                    self.our_srs.pop_front();
                }
                packets.push(Box::new(SenderReport {
                    ssrc: self.ssrc,
                    ntp_time: ntp,
                    rtp_time,
                    packet_count: self.sent_packets,
                    octet_count: self.sent_octets,
                    reports: block,
                    profile_extensions: Bytes::new(),
                }));
            }
            None => packets.push(Box::new(ReceiverReport {
                ssrc: self.ssrc,
                reports: block,
                profile_extensions: Bytes::new(),
            })),
        }
        packets.push(Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from(self.cname.clone()),
                }],
            }],
        }));
        rtcp::packet::marshal(&packets).map_err(|e| RtcpError::Build(e.to_string()))
    }

    /// Takes in one (decrypted) compound RTCP packet from the peer at
    /// `now`: its SR is remembered for our next report block, its report
    /// block about us gives loss, jitter and the round trip. Malformed
    /// input is an error and changes nothing.
    pub fn handle(&mut self, compound: &[u8], now: Instant) -> Result<(), RtcpError> {
        let mut packets = Vec::new();
        for report in reports_in(compound)? {
            let mut buf = Bytes::copy_from_slice(report);
            packets.extend(
                rtcp::packet::unmarshal(&mut buf)
                    .map_err(|e| RtcpError::Malformed(e.to_string()))?,
            );
        }
        let mut blocks: Vec<ReceptionReport> = Vec::new();
        let mut sr = None;
        for p in &packets {
            let any = p.as_any();
            if let Some(s) = any.downcast_ref::<SenderReport>() {
                sr = Some(ntp_middle(s.ntp_time));
                blocks.extend(s.reports.iter().cloned());
            } else if let Some(r) = any.downcast_ref::<ReceiverReport>() {
                blocks.extend(r.reports.iter().cloned());
            }
        }
        // Parsed in full: now apply.
        if let Some(middle) = sr {
            self.last_sr = Some((middle, now));
        }
        for b in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
            self.stats.remote_fraction_lost = Some(f64::from(b.fraction_lost) / 256.0);
            // total_lost is a signed 24-bit field: sign-extend it.
            let total = ((b.total_lost << 8) as i32) >> 8;
            self.stats.remote_cumulative_lost = Some(i64::from(total));
            self.stats.remote_jitter_ms =
                Some(f64::from(b.jitter) * 1000.0 / f64::from(self.clock_rate));
            if b.last_sender_report != 0 {
                if let Some((_, sent)) = self
                    .our_srs
                    .iter()
                    .find(|(m, _)| *m == b.last_sender_report)
                {
                    let held = Duration::from_secs_f64(f64::from(b.delay) / 65536.0);
                    let rtt = now.saturating_duration_since(*sent).saturating_sub(held);
                    self.stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                }
            }
        }
        self.stats.reports_received += 1;
        Ok(())
    }

    /// A new RTP clock (a re-INVITE changed the codec): the jitter so far
    /// is rescaled to it and the next packet starts a new transit
    /// measurement, so the change itself is not counted as jitter.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        let rate = clock_rate.max(1);
        if rate == self.clock_rate {
            return;
        }
        if let Some(r) = &mut self.reception {
            r.jitter16 = r.jitter16 * i64::from(rate) / i64::from(self.clock_rate);
            r.last_transit = None;
        }
        self.clock_rate = rate;
    }

    /// The figures so far.
    pub fn stats(&self) -> RtcpStats {
        let mut s = self.stats;
        if let Some(r) = &self.reception {
            s.fraction_lost = f64::from(r.fraction) / 256.0;
            s.cumulative_lost = r.lost();
            s.jitter_ms = (r.jitter16 as f64 / 16.0) * 1000.0 / f64::from(self.clock_rate);
        }
        s
    }
}

/// 64-bit NTP time of a wall-clock instant.
fn ntp_time(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (LSR, RFC 3550 6.4.1).
fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {

    /// A padded feedback packet whose length holds only the header and
    /// the padding count (found by the `rtcp_handle` fuzz target: the
    /// `rtcp` crate advanced past the end and panicked) is refused, and
    /// changes no figure; so are the other framings the crate never sees.
    #[test]
    fn malformed_compounds_are_refused_not_panicked_on() {
        let t0 = Instant::now();
        let mut st = RtcpState::new(0x1234_5678, "fuzz", 8000, t0);
        let before = st.stats();
        let mut fuzz = vec![0xa4, 0xce, 0x00, 0x01];
        fuzz.extend(std::iter::repeat_n(1u8, 91));
        fuzz.push(0);
        let cases: [&[u8]; 6] = [
            &fuzz,
            &[],
            &[0x80, 0xc9],
            &[0x40, 0xc9, 0x00, 0x01, 0, 0, 0, 0],
            // RR claiming one report block in a packet of the bare header.
            &[0x81, 0xc9, 0x00, 0x01, 0, 0, 0, 1],
            // Length past the end.
            &[0x80, 0xc9, 0x00, 0x07, 0, 0, 0, 1],
        ];
        for c in cases {
            assert!(st.handle(c, t0).is_err(), "{c:?}");
            assert_eq!(st.stats(), before);
        }
        // A feedback packet beside a good report is skipped unread.
        let mut peer = RtcpState::new(0x9abc_def0, "peer", 8000, t0);
        let mut good = peer.build_report(t0, SystemTime::now()).unwrap().to_vec();
        good.extend([0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert!(st.handle(&good, t0).is_ok());
        assert_eq!(st.stats().reports_received, 1);
    }

    use super::*;

    #[test]
    fn demux_of_rtp_and_rtcp() {
        let mut a = RtcpState::new(1, "a", 8000, Instant::now());
        let sr = a.build_report(Instant::now(), SystemTime::now()).unwrap();
        assert!(is_rtcp(&sr));
        // RTP with payload types 0 (PCMU), 111 (Opus), marker set.
        for pt in [0u8, 111, 0x80 | 111] {
            let rtp = [0x80, pt, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
            assert!(!is_rtcp(&rtp), "{pt}");
        }
        assert!(!is_rtcp(&[0x80, 200]));
    }

    #[test]
    fn loss_and_sequence_wrap() {
        let t0 = Instant::now();
        let mut s = RtcpState::new(1, "a", 8000, t0);
        // 65500..=65535 then 0..=63 with every tenth packet missing.
        let mut seq: u16 = 65500;
        let mut sent = 0u32;
        for i in 0..100u32 {
            if i % 10 != 3 {
                let t = t0 + Duration::from_millis(20 * u64::from(i));
                s.on_rtp_received(7, seq, i * 160, t);
            }
            seq = seq.wrapping_add(1);
            sent += 1;
        }
        let st = s.stats();
        assert_eq!(st.cumulative_lost, 10);
        let rr = s.report_block(t0).unwrap();
        assert_eq!(rr.last_sequence_number, (1 << 16) + 63);
        assert_eq!(rr.fraction_lost, (10 * 256 / sent) as u8);
        assert_eq!(rr.total_lost, 10);
        // The next interval, without loss: fraction back to 0, total kept.
        for i in 0..10u16 {
            s.on_rtp_received(7, 64 + i, 0, t0);
        }
        let rr = s.report_block(t0).unwrap();
        assert_eq!((rr.fraction_lost, rr.total_lost), (0, 10));
        // A new SSRC starts over.
        s.on_rtp_received(8, 5, 0, t0);
        assert_eq!(s.stats().cumulative_lost, 0);
    }

    #[test]
    fn jitter_zero_when_regular_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut s = RtcpState::new(1, "a", 8000, t0);
        for i in 0..50u32 {
            s.on_rtp_received(
                7,
                i as u16,
                i * 160,
                t0 + Duration::from_millis(20 * u64::from(i)),
            );
        }
        assert!(s.stats().jitter_ms < 0.2, "{}", s.stats().jitter_ms);
        // Alternately 10 ms late: |D| = 10 ms each packet, J -> 10 ms.
        for i in 50..400u32 {
            let late = if i % 2 == 0 { 10 } else { 0 };
            let t = t0 + Duration::from_millis(20 * u64::from(i) + late);
            s.on_rtp_received(7, i as u16, i * 160, t);
        }
        let j = s.stats().jitter_ms;
        assert!((9.0..=10.5).contains(&j), "{j}");
    }

    #[test]
    fn round_trip_from_sender_and_receiver_reports() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = RtcpState::new(0xA, "alice", 8000, t0);
        let mut b = RtcpState::new(0xB, "bob", 8000, t0);
        a.on_rtp_sent(160, 1000, t0);
        b.on_rtp_received(0xA, 1, 1000, t0);
        // A's SR travels 40 ms; B holds it 25 ms; B's report travels 35 ms.
        let sr = a.build_report(t0, wall).unwrap();
        b.handle(&sr, t0 + Duration::from_millis(40)).unwrap();
        let rr = b
            .build_report(
                t0 + Duration::from_millis(65),
                wall + Duration::from_secs(3600),
            )
            .unwrap();
        a.handle(&rr, t0 + Duration::from_millis(100)).unwrap();
        let rtt = a.stats().rtt_ms.unwrap();
        assert!((74.9..=75.1).contains(&rtt), "{rtt}");
        assert_eq!(a.stats().remote_fraction_lost, Some(0.0));
        assert_eq!(a.stats().reports_received, 1);
        // B sent no media: its report is an RR, and no RTT on its side.
        assert!(b.stats().rtt_ms.is_none());
    }

    #[test]
    fn malformed_reports_change_nothing() {
        let t0 = Instant::now();
        let mut a = RtcpState::new(0xA, "alice", 8000, t0);
        a.on_rtp_sent(160, 0, t0);
        let before = a.stats();
        for bad in [
            &b""[..],
            &[0x80, 200, 0, 1][..],
            &[0x80, 201, 0xFF, 0xFF, 0, 0, 0, 0][..],
        ] {
            assert!(a.handle(bad, t0).is_err());
        }
        // A valid SR followed by garbage: refused whole, no LSR taken.
        let mut b = RtcpState::new(0xB, "bob", 8000, t0);
        b.on_rtp_sent(160, 0, t0);
        let mut sr = b.build_report(t0, SystemTime::now()).unwrap().to_vec();
        sr.extend_from_slice(&[0x80, 201, 0x00, 0x09]);
        assert!(a.handle(&sr, t0).is_err());
        assert!(a.last_sr.is_none());
        assert_eq!(a.stats(), before);
    }
}
