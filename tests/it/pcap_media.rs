//! `ibephone pcap verify` on media: a capture written with
//! `ibephone::pcap::write` holding plain G.711 RTP is a leak (exit 1), the
//! same packets with the payload and a 16-byte tag encrypted by SRTP
//! (AEAD_AES_128_GCM, as the agent sends them) are judged SRTP (exit 0);
//! a flow that cannot be told apart without keys (a few packets, or a
//! compressed codec whose bytes look random) is "cannot judge" (exit 2),
//! never clean.

use crate::support;

use ibephone::media::g711::G711;
use ibephone::pcap::write::udp_capture;
use ibephone::pcap::{verify_capture, MediaVerdict};
use std::net::SocketAddrV4;
use support::process::pcap_verify_cli;

fn tone(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

fn rtp_packets(codec: G711) -> Vec<Vec<u8>> {
    let mut enc = Vec::new();
    tone(160 * 50)
        .chunks(160)
        .enumerate()
        .map(|(i, frame)| {
            codec.encode(frame, &mut enc);
            let pt = if codec == G711::Ulaw { 0 } else { 8 };
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * 160).to_be_bytes());
            p.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
            p.extend_from_slice(&enc);
            p
        })
        .collect()
}

fn capture(packets: &[Vec<u8>]) -> Vec<u8> {
    let a: SocketAddrV4 = "127.0.0.1:40000".parse().unwrap();
    let b: SocketAddrV4 = "127.0.0.1:40002".parse().unwrap();
    let datagrams: Vec<_> = packets.iter().map(|p| (a, b, p.as_slice())).collect();
    udp_capture(&datagrams).unwrap()
}

#[test]
fn plain_g711_rtp_is_a_leak() {
    for codec in [G711::Ulaw, G711::Alaw] {
        let bytes = capture(&rtp_packets(codec));
        let report = verify_capture(&bytes).unwrap();
        assert_eq!(report.media.len(), 1, "{report}");
        assert_eq!(report.media[0].verdict, MediaVerdict::PlainRtp, "{report}");
        assert!(!report.clean());
        let (code, out) = pcap_verify_cli(&bytes);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("LEAK: plain RTP"), "{out}");
    }
}

#[test]
fn srtp_of_the_same_audio_is_judged_srtp() {
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let mut ctx = Context::new(
        &[7u8; 16],
        &[9u8; 12],
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
    )
    .unwrap();
    let packets: Vec<Vec<u8>> = rtp_packets(G711::Alaw)
        .iter()
        .map(|p| ctx.encrypt_rtp(p).unwrap().to_vec())
        .collect();
    assert_eq!(packets[0].len(), 12 + 160 + 16);
    let (code, out) = pcap_verify_cli(&capture(&packets));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[SRTP]") && out.contains("AEAD_AES_128_GCM"),
        "{out}"
    );
}

/// Opus SRTP and plain Opus of a codec without a telltale header byte look
/// the same without keys; a handful of G.711 packets is too short to
/// measure. Neither may pass as clean.
#[test]
fn undetermined_flows_cannot_be_judged() {
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let mut ctx = Context::new(
        &[7u8; 16],
        &[9u8; 12],
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
    )
    .unwrap();
    // Payload type 111 (Opus), 80 packets of 60 bytes encrypted: random
    // first bytes, high entropy.
    let opus: Vec<Vec<u8>> = (0..80u16)
        .map(|i| {
            let mut p = vec![0x80, 111];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
            p.extend_from_slice(&0x0bad_f00du32.to_be_bytes());
            p.extend_from_slice(&[0x78; 60]);
            ctx.encrypt_rtp(&p).unwrap().to_vec()
        })
        .collect();
    let report = verify_capture(&capture(&opus)).unwrap();
    assert!(
        matches!(report.media[0].verdict, MediaVerdict::Undetermined(_)),
        "{report}"
    );
    let (code, out) = pcap_verify_cli(&capture(&opus));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("CANNOT JUDGE"), "{out}");
    let short = &rtp_packets(G711::Ulaw)[..3];
    let (code, out) = pcap_verify_cli(&capture(short));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("too short to judge"), "{out}");
}

/// RTCP beside the SRTP of a call: the reports the media session sends
/// (SR + SDES CNAME, protected as SRTCP under both suites) leave the
/// capture clean; the same compound in clear is a leak (its CNAME and
/// reception figures are readable), alone or between the SRTP.
#[test]
fn srtcp_is_judged_and_plain_rtcp_is_a_leak() {
    use ibephone::media::rtcp::RtcpState;
    use std::time::{Duration, Instant, SystemTime};
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    for (profile, key, salt) in [
        (ProtectionProfile::AeadAes128Gcm, [7u8; 16], &[9u8; 12][..]),
        (
            ProtectionProfile::Aes128CmHmacSha1_80,
            [7u8; 16],
            &[9u8; 14][..],
        ),
    ] {
        let mut ctx = Context::new(&key, salt, profile, None, None).unwrap();
        let t0 = Instant::now();
        let mut state = RtcpState::new(0x0bad_cafe, "alice@homeA.invalid", 8000, t0);
        let mut srtp = Vec::new();
        let mut plain_rtcp = Vec::new();
        for (i, p) in rtp_packets(G711::Alaw).iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            srtp.push(ctx.encrypt_rtp(p).unwrap().to_vec());
            state.on_rtp_sent(160, i as u32 * 160, now);
            state.on_rtp_received(0x1234_5678, i as u16, i as u32 * 160, now);
            if i % 10 == 9 {
                let report = state.build_report(now, SystemTime::now()).unwrap();
                plain_rtcp.push(report.to_vec());
                srtp.push(ctx.encrypt_rtcp(&report).unwrap().to_vec());
            }
        }
        let report = verify_capture(&capture(&srtp)).unwrap();
        assert_eq!((report.srtcp, report.plain_rtcp.len()), (5, 0), "{report}");
        let (code, out) = pcap_verify_cli(&capture(&srtp));
        assert_eq!(code, Some(0), "{profile:?}: {out}");
        assert!(out.contains("5 SRTCP, 0 plain RTCP"), "{out}");

        // One report in clear among the SRTP: a leak.
        let mut leaky = srtp.clone();
        leaky.insert(20, plain_rtcp[0].clone());
        let report = verify_capture(&capture(&leaky)).unwrap();
        assert_eq!(report.plain_rtcp.len(), 1, "{report}");
        let (code, out) = pcap_verify_cli(&capture(&leaky));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("LEAK: plain RTCP"), "{out}");
    }
    // A bare receiver report (no SDES) in clear is a leak too.
    let rr = [0x80u8, 201, 0, 1, 0x0b, 0xad, 0xca, 0xfe];
    let (code, out) = pcap_verify_cli(&capture(&[rr.to_vec()]));
    assert_eq!(code, Some(1), "{out}");
}
