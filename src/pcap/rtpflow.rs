//! Judging media without keys: is each RTP-shaped UDP flow of a capture
//! SRTP, or plain RTP that leaks the audio?
//!
//! The test, per flow (sender, receiver, SSRC) of RTP version-2 datagrams
//! (RTCP packet types 200..=204 are left out):
//!
//! 1. The payload of every packet (after the 12-byte header, CSRCs and a
//!    header extension) is pooled and its byte entropy H (bits per byte,
//!    Shannon, plug-in estimate) is computed.
//! 2. SRTP encrypts the payload with AES (counter mode or GCM) and appends
//!    an auth tag (10 bytes for AES_CM_128_HMAC_SHA1_80, 16 for
//!    AEAD_AES_128_GCM): the pooled bytes are indistinguishable from
//!    uniform, and the plug-in estimate of uniform bytes is
//!    8 - 255 / (2 n ln 2), at least 7.82 for the [`MIN_PAYLOAD_BYTES`] it
//!    needs. A flow with H below [`SRTP_MIN_ENTROPY`] (7.5) is therefore
//!    not encrypted: `LEAK: plain RTP`, whatever the codec.
//! 3. A G.711 flow (payload type 0 PCMU, 8 PCMA) with H >= 7.5 is SRTP
//!    unless its typical payload is a whole number of 10 ms frames (a
//!    multiple of 80 bytes: 20 ms = 160), which leaves no room for a tag:
//!    SRTP of 10/20/30 ms G.711 is 80 n + 10 or 80 n + 16 bytes. Real
//!    G.711 audio stays below 7.5 anyway (companded codes cluster around
//!    the quiet end: silence is a handful of codes, tones and loud noise
//!    measure 6 to 7.4 in the tests); the size rule also catches a signal
//!    that is uniform in the companded domain.
//! 4. A flow with H >= 7.5 and another payload type (a compressed codec,
//!    whose plain bytes are near-uniform too) cannot be told without keys:
//!    `undetermined`, not counted as a leak; so is a flow with fewer than
//!    [`MIN_PAYLOAD_BYTES`] of payload.
//! 5. Except when its first payload bytes give it away: a compressed codec
//!    in clear starts each payload with a frame header (Opus: the TOC byte
//!    of RFC 6716 3.1, one of a handful of values for one encoder), while
//!    ciphertext starts with a uniform byte (n packets show about
//!    256 (1 - e^(-n/256)) distinct values: 56 for 64 packets). A flow of at
//!    least [`HEADER_MIN_PACKETS`] packets whose first bytes take at most
//!    [`HEADER_MAX_DISTINCT`] values is plain RTP. The converse does not
//!    hold (a codec without a header byte looks random in clear), so many
//!    distinct first bytes leave the flow `undetermined`.

use super::stream::Datagram;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Entropy (bits per byte) below which a flow is not ciphertext.
pub const SRTP_MIN_ENTROPY: f64 = 7.5;

/// Payload bytes a flow needs before it is judged (about 8 packets of
/// 20 ms G.711).
pub const MIN_PAYLOAD_BYTES: usize = 1280;

/// Packets a compressed-codec flow needs before its first bytes are judged.
pub const HEADER_MIN_PACKETS: usize = 64;

/// At most this many distinct first payload bytes: a codec header in clear.
pub const HEADER_MAX_DISTINCT: usize = 16;

/// The verdict on one media flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaVerdict {
    /// Ciphertext carrying G.711: SRTP.
    Srtp,
    /// Not ciphertext: the audio is readable from the capture.
    PlainRtp,
    /// Too short, or a compressed codec (cannot be told without keys).
    Undetermined(&'static str),
}

/// One RTP-shaped flow and its verdict.
#[derive(Debug, Clone)]
pub struct MediaFlow {
    /// Frame of the flow's first packet.
    pub first_frame: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Synchronization source of the flow.
    pub ssrc: u32,
    /// RTP payload type of the first packet.
    pub payload_type: u8,
    /// Packets in the flow.
    pub packets: usize,
    /// The most common packet size (UDP payload bytes).
    pub typical_size: usize,
    /// Byte entropy of the pooled payloads, bits per byte.
    pub entropy: f64,
    /// SRTP, plain RTP, or undetermined.
    pub verdict: MediaVerdict,
}

/// Offset of the RTP payload, or `None` when the header does not fit.
fn payload_offset(p: &[u8]) -> Option<usize> {
    let cc = usize::from(p[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let ext = p.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (off <= p.len()).then_some(off)
}

/// True when `p` looks like an RTP (or SRTP) packet, RTCP excluded: version
/// 2 and a header (CSRCs, extension) that fits in the packet.
pub fn is_rtp_shaped(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] >> 6 == 2 && !(200..=204).contains(&p[1]) && payload_offset(p).is_some()
}

/// What an RTCP-shaped datagram (version 2, first packet type 200..=204,
/// which [`is_rtp_shaped`] leaves out) is, judged without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpShape {
    /// Its packets' length fields chain exactly to its end: a compound
    /// RTCP packet in clear (CNAME, SSRCs and reception figures readable).
    Plain,
    /// Anything else: SRTCP (RFC 3711 3.4), whose first header stays in
    /// clear while the rest is ciphertext followed by the SRTCP index and
    /// the tag, so the chain cannot close (AES-CM's 14 trailing bytes are
    /// no multiple of 4; GCM's would need random bytes to form RTCP headers
    /// whose lengths land exactly on the end).
    Srtcp,
}

/// Whether `p` is RTCP-shaped and, if so, plain RTCP or SRTCP.
pub fn rtcp_shape(p: &[u8]) -> Option<RtcpShape> {
    if p.len() < 8 || p[0] >> 6 != 2 || !(200..=204).contains(&p[1]) {
        return None;
    }
    let mut rest = p;
    while !rest.is_empty() {
        let plain_header = rest.len() >= 4 && rest[0] >> 6 == 2 && (192..=223).contains(&rest[1]);
        if !plain_header {
            return Some(RtcpShape::Srtcp);
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        match rest.get(len..) {
            Some(r) => rest = r,
            None => return Some(RtcpShape::Srtcp),
        }
    }
    Some(RtcpShape::Plain)
}

/// Shannon entropy of a byte histogram, bits per byte.
fn entropy(hist: &[u64; 256]) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

#[derive(Default)]
struct Acc {
    first_frame: usize,
    payload_type: u8,
    packets: usize,
    bytes: usize,
    hist: Option<Box<[u64; 256]>>,
    sizes: BTreeMap<usize, usize>,
    /// Which values the first payload byte took.
    first_bytes: Option<Box<[bool; 256]>>,
}

/// Groups the RTP-shaped datagrams into flows and judges each; datagrams
/// that are not RTP-shaped are ignored (the caller counts them).
pub fn judge_flows(datagrams: &[Datagram]) -> Vec<MediaFlow> {
    let mut flows: BTreeMap<(SocketAddr, SocketAddr, u32), Acc> = BTreeMap::new();
    for d in datagrams {
        let p = &d.payload;
        if !is_rtp_shaped(p) {
            continue;
        }
        let Some(off) = payload_offset(p) else {
            continue;
        };
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        let acc = flows.entry((d.src, d.dst, ssrc)).or_default();
        if acc.packets == 0 {
            acc.payload_type = p[1] & 0x7f;
            acc.first_frame = d.frame;
        }
        acc.packets += 1;
        acc.bytes += p.len() - off;
        *acc.sizes.entry(p.len()).or_default() += 1;
        if let Some(&first) = p.get(off) {
            acc.first_bytes
                .get_or_insert_with(|| Box::new([false; 256]))[usize::from(first)] = true;
        }
        let hist = acc.hist.get_or_insert_with(|| Box::new([0; 256]));
        for &b in &p[off..] {
            hist[usize::from(b)] += 1;
        }
    }
    flows
        .into_iter()
        .map(|((src, dst, ssrc), acc)| {
            let h = acc.hist.as_deref().map_or(0.0, entropy);
            let typical_size = acc
                .sizes
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or(0, |(s, _)| *s);
            let typical_payload = typical_size.saturating_sub(12);
            let verdict = if acc.bytes < MIN_PAYLOAD_BYTES {
                MediaVerdict::Undetermined("too short to judge")
            } else if h < SRTP_MIN_ENTROPY {
                MediaVerdict::PlainRtp
            } else if matches!(acc.payload_type, 0 | 8) {
                if typical_payload.is_multiple_of(80) {
                    MediaVerdict::PlainRtp
                } else {
                    MediaVerdict::Srtp
                }
            } else if acc.packets >= HEADER_MIN_PACKETS
                && acc
                    .first_bytes
                    .as_deref()
                    .map_or(0, |seen| seen.iter().filter(|&&b| b).count())
                    <= HEADER_MAX_DISTINCT
            {
                MediaVerdict::PlainRtp
            } else {
                MediaVerdict::Undetermined("compressed codec: cannot tell without keys")
            };
            MediaFlow {
                first_frame: acc.first_frame,
                src,
                dst,
                ssrc,
                payload_type: acc.payload_type,
                packets: acc.packets,
                typical_size,
                entropy: h,
                verdict,
            }
        })
        .collect()
}

impl MediaFlow {
    /// What the packet size says about a G.711 flow (evidence only).
    fn size_evidence(&self) -> &'static str {
        if !matches!(self.payload_type, 0 | 8) || self.typical_size < 12 {
            return "";
        }
        match (self.typical_size - 12) % 80 {
            0 => ", size = whole G.711 frames",
            10 => ", size = G.711 + 10-byte tag (AES_CM_128_HMAC_SHA1_80)",
            16 => ", size = G.711 + 16-byte tag (AEAD_AES_128_GCM)",
            _ => "",
        }
    }
}

impl fmt::Display for MediaFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            MediaVerdict::Srtp => "SRTP".to_string(),
            MediaVerdict::PlainRtp => "LEAK: plain RTP".to_string(),
            MediaVerdict::Undetermined(why) => format!("undetermined: {why}"),
        };
        write!(
            f,
            "media {} -> {} ssrc {:08x} pt {}: {} packets of {} bytes, payload entropy {:.2} bits/byte{}  [{verdict}]",
            self.src,
            self.dst,
            self.ssrc,
            self.payload_type,
            self.packets,
            self.typical_size,
            self.entropy,
            self.size_evidence(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::G711;

    fn flow(payloads: &[Vec<u8>]) -> Vec<Datagram> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Datagram {
                frame: i + 1,
                src: "127.0.0.1:4000".parse().unwrap(),
                dst: "127.0.0.1:4002".parse().unwrap(),
                payload: p.clone(),
            })
            .collect()
    }

    fn rtp(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// Loud speech-like audio: a sum of tones plus pseudo-random noise at
    /// full scale, the hardest case for the entropy test.
    fn loud_audio(n: usize) -> Vec<i16> {
        let mut x: u32 = 1;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f64 / 8000.0;
                let tone = 9000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 6000.0 * (2.0 * std::f64::consts::PI * 1230.0 * t).sin();
                let noise = ((x >> 16) as f64 / 65536.0 - 0.5) * 30000.0;
                (tone + noise).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    #[test]
    fn plain_g711_of_loud_audio_is_a_leak() {
        for codec in [G711::Ulaw, G711::Alaw] {
            let pt = if codec == G711::Ulaw { 0 } else { 8 };
            let audio = loud_audio(160 * 50);
            let mut enc = Vec::new();
            let packets: Vec<Vec<u8>> = audio
                .chunks(160)
                .enumerate()
                .map(|(i, f)| {
                    codec.encode(f, &mut enc);
                    rtp(pt, i as u16, &enc)
                })
                .collect();
            let flows = judge_flows(&flow(&packets));
            assert_eq!(flows.len(), 1);
            assert_eq!(flows[0].verdict, MediaVerdict::PlainRtp, "{}", flows[0]);
            assert!(flows[0].entropy < SRTP_MIN_ENTROPY, "{}", flows[0]);
            assert!(flows[0].to_string().contains("whole G.711 frames"));
        }
    }

    #[test]
    fn g711_uniform_in_the_companded_domain_is_caught_by_its_size() {
        // Every code equally often: entropy 8, but 160 bytes = no tag.
        let packets: Vec<Vec<u8>> = (0..20u16)
            .map(|i| {
                let body: Vec<u8> = (0..160).map(|j| (j * 37 + i * 11) as u8).collect();
                rtp(0, i, &body)
            })
            .collect();
        let flows = judge_flows(&flow(&packets));
        assert!(flows[0].entropy > 7.9, "{}", flows[0]);
        assert_eq!(flows[0].verdict, MediaVerdict::PlainRtp, "{}", flows[0]);
    }

    #[test]
    fn random_payload_with_tag_is_srtp() {
        let mut x: u64 = 7;
        let packets: Vec<Vec<u8>> = (0..10u16)
            .map(|i| {
                let body: Vec<u8> = (0..176)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                rtp(8, i, &body)
            })
            .collect();
        let flows = judge_flows(&flow(&packets));
        assert_eq!(flows[0].verdict, MediaVerdict::Srtp, "{}", flows[0]);
        assert!(flows[0].to_string().contains("AEAD_AES_128_GCM"));
    }

    #[test]
    fn short_flows_rtcp_and_compressed_codecs_are_not_judged() {
        let short = judge_flows(&flow(&[rtp(0, 1, &[0xff; 160])]));
        assert!(matches!(short[0].verdict, MediaVerdict::Undetermined(_)));
        let rtcp = vec![0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(judge_flows(&flow(&[rtcp])).is_empty());
        let mut x: u32 = 3;
        let opus: Vec<Vec<u8>> = (0..20u16)
            .map(|i| {
                let body: Vec<u8> = (0..100)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 24) as u8
                    })
                    .collect();
                rtp(111, i, &body)
            })
            .collect();
        let flows = judge_flows(&flow(&opus));
        assert!(matches!(flows[0].verdict, MediaVerdict::Undetermined(_)));
    }

    /// Opus-like payloads: a fixed TOC byte, then compressed (random) bytes.
    fn compressed_flow(packets: u16, toc: impl Fn(u16) -> u8) -> Vec<Datagram> {
        let mut x: u32 = 7;
        let pkts: Vec<Vec<u8>> = (0..packets)
            .map(|i| {
                let mut body = vec![toc(i)];
                body.extend((0..80).map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 24) as u8
                }));
                rtp(111, i, &body)
            })
            .collect();
        flow(&pkts)
    }

    #[test]
    fn plain_opus_gives_itself_away_by_its_toc_byte() {
        // SILK wideband 20 ms mono (config 9), with the odd CELT frame.
        let flows = judge_flows(&compressed_flow(200, |i| {
            if i.is_multiple_of(17) {
                0xfc
            } else {
                0x48
            }
        }));
        assert_eq!(flows[0].verdict, MediaVerdict::PlainRtp, "{}", flows[0]);
        assert!(flows[0].entropy >= SRTP_MIN_ENTROPY, "{}", flows[0]);
    }

    #[test]
    fn random_first_bytes_stay_undetermined() {
        let mut y: u32 = 99;
        let flows = judge_flows(
            &compressed_flow(200, |_| 0)
                .into_iter()
                .map(|mut d| {
                    y = y.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    d.payload[12] = (y >> 24) as u8;
                    d
                })
                .collect::<Vec<_>>(),
        );
        assert!(
            matches!(flows[0].verdict, MediaVerdict::Undetermined(_)),
            "{}",
            flows[0]
        );
        // Too few packets to judge the first bytes.
        let short = judge_flows(&compressed_flow(40, |_| 0x48));
        assert!(
            matches!(short[0].verdict, MediaVerdict::Undetermined(_)),
            "{}",
            short[0]
        );
    }

    #[test]
    fn truncated_extension_header_is_skipped() {
        let mut p = rtp(0, 1, &[]);
        p[0] |= 0x10;
        assert!(judge_flows(&flow(&[p])).is_empty());
    }
}
