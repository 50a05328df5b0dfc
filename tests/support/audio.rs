//! Test audio: WAV files of test signals, and what of a signal must
//! never be seen in clear on the wire.

use super::tools::gate;
use ibephone::media::audio::{read_wav_at, AudioSink, WavSink};
use ibephone::media::g711::G711;
use ibephone::media::sdp::Codec;
use std::collections::HashSet;
use std::path::Path;

/// Writes `signal` (8 kHz mono) to `path` as 20 ms frames, the last one
/// padded with silence.
pub fn write_wav(path: &Path, signal: &[i16]) {
    let mut w = WavSink::create(path).unwrap();
    for f in signal.chunks(160) {
        let mut frame = f.to_vec();
        frame.resize(160, 0);
        w.write_frame(&frame).unwrap();
    }
    w.finish().unwrap();
}

/// `text` as espeak-ng says it (read at 8 kHz; over 2 s), when
/// `IBEPHONE_TEST_ESPEAK=1`; else `None` and the test says it is skipped.
pub fn espeak(text: &str) -> Option<Vec<i16>> {
    espeak_voice(text, None, 8000)
}

/// `text` as espeak-ng says it in `voice` (its `-v`, e.g. `en-us` or
/// `en+f3`; `None`: its default), read at `rate` Hz (over 2 s), when
/// `IBEPHONE_TEST_ESPEAK=1`; else `None` and the test says it is skipped.
pub fn espeak_voice(text: &str, voice: Option<&str>, rate: u32) -> Option<Vec<i16>> {
    if !gate("IBEPHONE_TEST_ESPEAK", "espeak-ng") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("sentence.wav");
    let mut cmd = std::process::Command::new("espeak-ng");
    if let Some(v) = voice {
        cmd.arg("-v").arg(v);
    }
    let ok = cmd
        .arg("-w")
        .arg(&wav)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    // espeak-ng writes 22050 Hz; read_wav_at resamples.
    let speech = read_wav_at(&wav, rate).unwrap();
    assert!(speech.len() > rate as usize * 2);
    Some(speech)
}

/// The first 16 bytes of every 20 ms frame of `signal` with some sound
/// in it, encoded with `g` in clear: what must never be on the wire.
pub fn clear_frames(signal: &[i16], g: G711) -> HashSet<Vec<u8>> {
    let mut clear = HashSet::new();
    let mut enc = Vec::new();
    for f in signal
        .chunks(160)
        .filter(|f| f.iter().any(|&s| s.abs() > 200))
    {
        g.encode(f, &mut enc);
        clear.insert(enc[..16].to_vec());
    }
    clear
}

/// Whether `datagram` holds one of the `clear` frames.
pub fn holds_clear(datagram: &[u8], clear: &HashSet<Vec<u8>>) -> bool {
    datagram.windows(16).any(|w| clear.contains(w))
}

/// The wire carries SRTP only: no datagram of `capture` holds a frame of
/// `signal` encoded with `codec` (PCMU or PCMA) in clear.
pub fn assert_no_clear_audio(signal: &[i16], codec: Codec, capture: &[Vec<u8>]) {
    let g = if codec == Codec::Pcmu {
        G711::Ulaw
    } else {
        G711::Alaw
    };
    let clear = clear_frames(signal, g);
    for d in capture {
        assert!(!holds_clear(d, &clear), "clear G.711 on the wire");
    }
}
