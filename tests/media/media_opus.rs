//! End-to-end Opus calls: two `MediaSession`s over 127.0.0.1 UDP in one
//! process, through a relay that can drop packets and records what it
//! forwards (the "capture"); the fixture is a copy of `media_call.rs`'s
//! with the audio at 48 kHz.
//!
//! Thresholds of the recording comparison. The recording (48 kHz) is
//! compared with what alice sent (her 8 kHz file as `WavSource` gave it at
//! 48 kHz), both brought to 8 kHz the same way (the test signal's band),
//! with `media::quality::compare` (energy-weighted ρ of 200 ms windows at
//! their best lag, SNR after the best gain) and with
//! `media::quality::envelope_match` (correlation of the 10 ms loudness
//! envelopes). Opus is a perceptual codec, not waveform-exact: it codes
//! the noise-like part of speech (a third of the test signal's amplitude,
//! the unvoiced sounds of real speech) by its spectrum, not its samples,
//! so ρ and SNR stay well below G.711's 0.9999 and 37 dB whatever the
//! network does. What a listener follows, the syllables' loudness, must
//! come through almost exactly, hence the envelope threshold.
//! - Clean call: measured ρ 0.93-0.94, SNR 8.2-8.5 dB, envelope 0.97-0.99
//!   (synthetic signal and espeak sentence). We demand ρ ≥ 0.85, SNR ≥
//!   5 dB and envelope ≥ 0.95.
//! - 5 % loss: a lost frame is rebuilt from the next packet's FEC when
//!   that one is already here, else by Opus's own concealment; each costs
//!   its window more than G.711's faded repeat does ρ, since Opus's
//!   concealment is not sample-aligned either. Measured ρ 0.85-0.88, SNR
//!   3.4-4.3 dB, envelope 0.90-0.95. We demand ρ ≥ 0.7, SNR ≥ 1 dB and
//!   envelope ≥ 0.8.
//! - A broken path is far below: silence, noise or a wrong key give
//!   ρ < 0.1 and an envelope correlation < 0.5
//!   (`envelope_match_finds_the_lag_and_tells_noise_from_speech`).

use crate::support;

use ibephone::media::audio::{convert_frame, read_wav, read_wav_at, AudioSink, WavSink, WavSource};
use ibephone::media::quality::{compare, envelope_match, test_signal};
use ibephone::media::sdp::{Codec, Negotiated};
use ibephone::media::session::{MediaCommand, MediaEvent, MediaSession};
use ibephone::media::srtp::SrtpChannel;
use ibephone::pcap::write::udp_capture;
use ibephone::pcap::{verify_capture, MediaVerdict, Verdict};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::media_relay::{bind, local, negotiate, relay, wait_for, Relay};
use tokio::sync::mpsc;

struct Call {
    alice: MediaSession,
    bob: MediaSession,
    alice_ev: mpsc::UnboundedReceiver<MediaEvent>,
    bob_ev: mpsc::UnboundedReceiver<MediaEvent>,
    relay: Relay,
    sockets: [SocketAddr; 4],
    bob_negotiated: Negotiated,
}

/// A call whose audio runs at `rate` Hz on both sides (48 kHz: the Opus
/// rate; 8 kHz: a source and sink that must be bridged).
async fn start_call(
    dir: &Path,
    codecs: &[Codec],
    loss_pct: u64,
    signal: &[i16],
    rate: u32,
) -> Call {
    let (sa, sb, r1, r2) = (bind().await, bind().await, bind().await, bind().await);
    let addrs = [
        sa.local_addr().unwrap(),
        sb.local_addr().unwrap(),
        r1.local_addr().unwrap(),
        r2.local_addr().unwrap(),
    ];
    let (na, nb) = negotiate(local(addrs[2], codecs), &local(addrs[3], codecs));
    assert_eq!(na.codec, nb.codec);
    let relay = relay(r1, r2, addrs[0], addrs[1], loss_pct).await;
    // The source file is 8 kHz; WavSource resamples it to the call's rate.
    let src = dir.join("alice-in.wav");
    let mut w = WavSink::create(&src).unwrap();
    for f in signal.chunks(160) {
        let mut frame = f.to_vec();
        frame.resize(160, 0);
        w.write_frame(&frame).unwrap();
    }
    w.finish().unwrap();
    let (atx, alice_ev) = mpsc::unbounded_channel();
    let (btx, bob_ev) = mpsc::unbounded_channel();
    let alice = MediaSession::start(
        sa,
        na,
        Box::new(WavSource::open_at(&src, rate).unwrap()),
        Box::new(WavSink::create_at(&dir.join("alice-out.wav"), rate).unwrap()),
        atx,
    )
    .unwrap();
    let bob = MediaSession::start(
        sb,
        nb.clone(),
        Box::new(WavSource::from_samples_at(Vec::new(), rate)),
        Box::new(WavSink::create_at(&dir.join("bob-out.wav"), rate).unwrap()),
        btx,
    )
    .unwrap();
    Call {
        alice,
        bob,
        alice_ev,
        bob_ev,
        relay,
        sockets: addrs,
        bob_negotiated: nb,
    }
}

/// A 48 kHz file brought to 8 kHz for the comparison. The source is
/// compared through the same path (8 kHz file, interpolated to 48 kHz by
/// `WavSource`, averaged back here), whose response falls off towards
/// 4 kHz: comparing with the 8 kHz original instead would charge that
/// fall-off to the codec (envelope 0.91 with no codec at all).
fn at_8k(path: &Path) -> Vec<i16> {
    let rec = read_wav_at(path, 48_000).unwrap();
    let mut out = Vec::new();
    convert_frame(&rec, rec.len() / 6, &mut out);
    out
}

/// The capture holds only SRTP and SRTCP: every datagram decrypts under
/// bob's receiving keys (RTP as Opus on payload type 111), and no
/// decrypted payload appears in the clear on the wire. The proof tool cannot judge a
/// compressed codec without keys: it must say so, never "plain RTP".
fn capture_is_srtp_only(relay: &Relay, sockets: &[SocketAddr; 4], bob: &Negotiated) -> usize {
    let cap = relay.capture.lock().unwrap().clone();
    let mut ch = SrtpChannel::new(bob).unwrap();
    let mut audio = 0;
    for d in &cap {
        if ibephone::media::rtcp::is_rtcp(d) {
            // RTCP (rtcp-mux): SRTCP under the same keys.
            assert!(ch.unprotect_rtcp(sockets[2], d).is_ok(), "SRTCP");
            continue;
        }
        let pkt = ch.unprotect(sockets[2], d).expect("every datagram is SRTP");
        if pkt.header.payload_type == 111 {
            audio += 1;
            let p = &pkt.payload[..pkt.payload.len().min(16)];
            assert!(
                p.len() < 8 || !d.windows(p.len()).any(|w| w == p),
                "clear Opus on the wire"
            );
        }
    }
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(v) => v,
        SocketAddr::V6(_) => unreachable!("loopback v4"),
    };
    let (from, to): (SocketAddrV4, SocketAddrV4) = (v4(sockets[0]), v4(sockets[3]));
    let datagrams: Vec<_> = cap.iter().map(|d| (from, to, d.as_slice())).collect();
    let report = verify_capture(&udp_capture(&datagrams).unwrap()).unwrap();
    // Without keys, SRTP Opus cannot be told from random bytes: the judge
    // says "cannot judge" (exit 2), never "clean"; plain Opus would be a
    // leak (its TOC byte). Every datagram was shown SRTP with the keys above.
    assert_eq!(report.verdict(), Verdict::CannotJudge, "{report}");
    assert!(!report.media.is_empty(), "{report}");
    assert!(
        report
            .media
            .iter()
            .all(|f| f.verdict != MediaVerdict::PlainRtp),
        "{report}"
    );
    audio
}

async fn speech_call(signal: &[i16], loss_pct: u64, min_rho: f64, min_env: f64, min_snr: f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut call = start_call(
        dir.path(),
        &[Codec::Opus, Codec::Pcmu],
        loss_pct,
        signal,
        48_000,
    )
    .await;
    assert_eq!(call.bob_negotiated.codec, Codec::Opus);
    assert_eq!(call.bob_negotiated.payload_type, 111);
    assert_eq!(call.bob_negotiated.telephone_event, Some(110));
    wait_for(&mut call.alice_ev, |e| *e == MediaEvent::SourceEnded).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats_a = call.alice.stop().await.unwrap();
    let stats_b = call.bob.stop().await.unwrap();
    call.relay.stop.store(true, Ordering::Relaxed);
    let frames = signal.len() / 160;
    assert!(stats_a.sent as usize >= frames, "{stats_a:?}");
    assert_eq!(stats_b.drops.bad_auth, 0);
    assert!(stats_b.jitter.played as usize >= frames * (95 - loss_pct as usize) / 100);
    let rec = at_8k(&dir.path().join("bob-out.wav"));
    let sent = at_8k(&dir.path().join("alice-in.wav"));
    let (rho, lag, snr) = compare(&sent, &rec, 4000);
    let (env, _) = envelope_match(&sent, &rec, 80, 50);
    eprintln!(
        "opus loss {loss_pct}%: rho {rho:.4} snr {snr:.1} dB envelope {env:.3} latency {} ms, concealed {}",
        lag / 8,
        stats_b.jitter.concealed
    );
    assert!(rho >= min_rho, "rho {rho} < {min_rho}");
    assert!(env >= min_env, "envelope {env} < {min_env}");
    assert!(snr >= min_snr, "snr {snr} < {min_snr}");
    assert!(capture_is_srtp_only(&call.relay, &call.sockets, &call.bob_negotiated) >= frames);
}

#[tokio::test]
async fn opus_call_clean() {
    let _one = crate::ONE_CALL.lock().await;
    speech_call(&test_signal(3.0), 0, 0.85, 0.95, 5.0).await;
}

#[tokio::test]
async fn opus_call_5_percent_loss() {
    let _one = crate::ONE_CALL.lock().await;
    speech_call(&test_signal(3.0), 5, 0.7, 0.8, 1.0).await;
}

/// DTMF in an Opus call: telephone-event/48000, durations in 48 kHz
/// units (960 per 20 ms packet), and the digits reach the peer.
#[tokio::test]
async fn dtmf_in_an_opus_call_counts_48k() {
    let _one = crate::ONE_CALL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut call = start_call(dir.path(), &[Codec::Opus], 0, &test_signal(2.0), 48_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for d in ['1', '#'] {
        call.alice.command(MediaCommand::SendDtmf(d));
    }
    for d in ['1', '#'] {
        let ev = wait_for(&mut call.bob_ev, |e| matches!(e, MediaEvent::Dtmf(_))).await;
        assert_eq!(ev.last(), Some(&MediaEvent::Dtmf(d)));
    }
    // The second digit's last packets are still on their way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.alice.stop().await.unwrap();
    call.bob.stop().await.unwrap();
    call.relay.stop.store(true, Ordering::Relaxed);
    let cap = call.relay.capture.lock().unwrap().clone();
    let mut ch = SrtpChannel::new(&call.bob_negotiated).unwrap();
    let events: Vec<(u32, u16)> = cap
        .iter()
        .filter_map(|d| ch.unprotect(call.sockets[2], d).ok())
        .filter(|p| p.header.payload_type == 110)
        .map(|p| {
            (
                p.header.timestamp,
                u16::from_be_bytes([p.payload[2], p.payload[3]]),
            )
        })
        .collect();
    assert_eq!(events.len(), 2 * (4 + 3), "{events:?}");
    let durations: Vec<u16> = events.iter().take(7).map(|e| e.1).collect();
    assert_eq!(durations, [960, 1920, 2880, 3840, 4800, 4800, 4800]);
    // The second digit starts a whole number of 20 ms frames later.
    let gap = events[7].0.wrapping_sub(events[0].0);
    assert!(gap > 0 && gap.is_multiple_of(960), "{gap}");
}

/// A source and sink at 8 kHz in an Opus call (what a re-INVITE to Opus
/// leaves behind): the session bridges the rates, the speech comes through.
/// The bridge (linear interpolation up, a 6-sample mean down) falls off
/// towards 4 kHz, -8 dB at 3.4 kHz, which the 8 kHz original is compared
/// against here: measured ρ 0.86, envelope 0.91 (the bridge alone without
/// the codec gives envelope 0.91); we demand 0.75 and 0.85.
#[tokio::test]
async fn opus_call_with_8k_audio_is_bridged() {
    let _one = crate::ONE_CALL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let signal = test_signal(2.0);
    let mut call = start_call(dir.path(), &[Codec::Opus], 0, &signal, 8000).await;
    wait_for(&mut call.alice_ev, |e| *e == MediaEvent::SourceEnded).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.alice.stop().await.unwrap();
    call.bob.stop().await.unwrap();
    call.relay.stop.store(true, Ordering::Relaxed);
    let rec = read_wav(&dir.path().join("bob-out.wav")).unwrap();
    let (rho, _, _) = compare(&signal, &rec, 4000);
    let (env, _) = envelope_match(&signal, &rec, 80, 50);
    eprintln!("opus with 8 kHz audio: rho {rho:.3} envelope {env:.3}");
    assert!(rho >= 0.75 && env >= 0.85, "rho {rho} envelope {env}");
}

/// A re-INVITE from PCMU to Opus mid-call: both sides switch codec, clock
/// and payload type, and the audio goes on.
#[tokio::test]
async fn reinvite_switches_from_pcmu_to_opus() {
    let _one = crate::ONE_CALL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let signal = test_signal(4.0);
    let call = start_call(dir.path(), &[Codec::Pcmu], 0, &signal, 8000).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut a = local(call.sockets[2], &[Codec::Opus, Codec::Pcmu]);
    a.session_version = 2;
    let mut b = local(call.sockets[3], &[Codec::Opus, Codec::Pcmu]);
    b.session_version = 2;
    let (na, nb) = negotiate(a, &b);
    assert_eq!(na.codec, Codec::Opus);
    call.bob.command(MediaCommand::Update(Box::new(nb.clone())));
    call.alice.command(MediaCommand::Update(Box::new(na)));
    let mark = call.relay.capture.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats_b = call.bob.stop().await.unwrap();
    call.alice.stop().await.unwrap();
    call.relay.stop.store(true, Ordering::Relaxed);
    let cap = call.relay.capture.lock().unwrap().clone();
    let mut ch = SrtpChannel::new(&nb).unwrap();
    let after: Vec<_> = cap[mark + 5..]
        .iter()
        .filter_map(|d| ch.unprotect(call.sockets[2], d).ok())
        .collect();
    assert!(after.len() > 50);
    assert!(after.iter().all(|p| p.header.payload_type == 111));
    let steps: Vec<u32> = after
        .windows(2)
        .map(|w| w[1].header.timestamp.wrapping_sub(w[0].header.timestamp))
        .collect();
    assert!(
        steps.iter().all(|&s| s == 960),
        "48 kHz timestamps: {steps:?}"
    );
    assert!(stats_b.drops.bad_auth <= 10, "{:?}", stats_b.drops);
    // The recording (8 kHz, bridged after the switch) is speech throughout.
    let rec = read_wav(&dir.path().join("bob-out.wav")).unwrap();
    let (env, _) = envelope_match(&signal, &rec, 80, 50);
    assert!(env >= 0.8, "envelope {env}");
}

/// The sentence of issue 7, spoken by espeak-ng, through an Opus call with
/// and without 5 % loss (gated: needs the `espeak-ng` package; run with
/// `IBEPHONE_TEST_ESPEAK=1`). Same thresholds as the synthetic signal.
#[tokio::test]
async fn espeak_sentence_through_an_opus_call() {
    let _one = crate::ONE_CALL.lock().await;
    if std::env::var("IBEPHONE_TEST_ESPEAK").as_deref() != Ok("1") {
        eprintln!("skipped: set IBEPHONE_TEST_ESPEAK=1 (needs espeak-ng)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("sentence.wav");
    let ok = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("A secured call must carry speech, encrypted, with keys that even the key generator cannot recover.")
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    let speech = read_wav(&wav).unwrap();
    assert!(speech.len() > 8000 * 2);
    speech_call(&speech, 0, 0.85, 0.95, 5.0).await;
    speech_call(&speech, 5, 0.7, 0.8, 1.0).await;
}
