//! The voice codecs behind one interface: an [`Encoder`] turns 20 ms
//! frames into RTP payloads, a [`Decoder`] turns payloads back into frames
//! and fills the frames of missing packets.
//!
//! - G.711 ([`super::g711`]) runs at 8 kHz; a missing frame repeats the
//!   last one with a fade ([`Fade`]: 1, 0.6, 0.2, then silence, as G.711
//!   Appendix I fades over 60 ms).
//! - Opus (RFC 6716, libopus through the `opus` crate) runs on mono audio
//!   at 48 kHz, 20 ms frames (960 samples), `VOIP` mode at 32 kbit/s with
//!   in-band FEC. A missing frame is rebuilt from the FEC data of the next
//!   packet when that one has arrived already, otherwise by the decoder's
//!   own loss concealment (decoding "no packet"), which also fades out.
//!   A packet of another duration than 20 ms (a peer ignoring our
//!   `a=ptime:20`) is cut or padded to one frame.

use super::g711::G711;
use super::sdp::Codec;
use thiserror::Error;

/// Samples in one 20 ms frame at `rate` Hz.
pub(crate) fn frame_samples(rate: u32) -> usize {
    usize::try_from(rate / 50).unwrap_or(0)
}

/// The bit rate of our Opus stream: wideband speech with room for FEC.
pub(crate) const OPUS_BITRATE: i32 = 32_000;

/// The packet loss the Opus encoder expects, in percent: above zero so
/// that it puts FEC data in every packet.
pub(crate) const OPUS_EXPECTED_LOSS: i32 = 5;

/// Largest Opus packet we produce or expect (RFC 6716 3.4, R5).
const MAX_OPUS_PACKET: usize = 1275;

/// Largest Opus packet duration at 48 kHz (120 ms, RFC 6716 3.2.5).
const MAX_OPUS_SAMPLES: usize = 5760;

/// Why a codec could not be set up or a frame not coded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// libopus refused (bad setting, corrupt packet).
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
}

enum EncoderKind {
    G711(G711),
    Opus(Box<opus::Encoder>),
}

/// Encodes 20 ms frames of one codec.
pub(crate) struct Encoder {
    kind: EncoderKind,
    samples: usize,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

fn g711(codec: Codec) -> Option<G711> {
    match codec {
        Codec::Pcmu => Some(G711::Ulaw),
        Codec::Pcma => Some(G711::Alaw),
        Codec::Opus => None,
    }
}

impl Encoder {
    /// An encoder for `codec`, taking frames at `codec.audio_rate()`.
    pub(crate) fn new(codec: Codec) -> Result<Self, CodecError> {
        let kind = match g711(codec) {
            Some(g) => EncoderKind::G711(g),
            None => {
                let mut e = opus::Encoder::new(
                    codec.audio_rate(),
                    opus::Channels::Mono,
                    opus::Application::Voip,
                )?;
                e.set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE))?;
                e.set_inband_fec(true)?;
                e.set_packet_loss_perc(OPUS_EXPECTED_LOSS)?;
                EncoderKind::Opus(Box::new(e))
            }
        };
        Ok(Encoder {
            kind,
            samples: frame_samples(codec.audio_rate()),
            scratch: vec![0; MAX_OPUS_PACKET],
        })
    }

    /// The samples of one frame this encoder takes.
    pub(crate) fn frame_samples(&self) -> usize {
        self.samples
    }

    /// Encodes one frame (cut or padded to [`Encoder::frame_samples`])
    /// into `out`, which is cleared first.
    pub(crate) fn encode(&mut self, frame: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let padded;
        let frame = if frame.len() == self.samples {
            frame
        } else {
            let mut f = frame.to_vec();
            f.resize(self.samples, 0);
            padded = f;
            &padded[..]
        };
        match &mut self.kind {
            EncoderKind::G711(g) => {
                g.encode(frame, out);
                Ok(())
            }
            EncoderKind::Opus(e) => {
                let n = e.encode(frame, &mut self.scratch)?;
                out.clear();
                out.extend_from_slice(self.scratch.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }
}

/// Repeats the last good frame with a fading gain while frames are missing.
#[derive(Debug, Clone)]
pub(crate) struct Fade {
    last: Vec<i16>,
    run: usize,
}

const FADE: [f32; 3] = [1.0, 0.6, 0.2];

impl Fade {
    /// A concealer for frames of `samples` samples (silence before the first frame).
    pub(crate) fn new(samples: usize) -> Self {
        Fade {
            last: vec![0; samples],
            run: FADE.len(),
        }
    }

    /// Remembers a frame that was played.
    pub(crate) fn played(&mut self, frame: &[i16]) {
        self.last.clear();
        self.last.extend_from_slice(frame);
        self.run = 0;
    }

    /// The frame to play for a missing one.
    pub(crate) fn conceal(&mut self, out: &mut Vec<i16>) {
        let gain = FADE.get(self.run).copied().unwrap_or(0.0);
        self.run += 1;
        out.clear();
        out.extend(self.last.iter().map(|&s| (f32::from(s) * gain) as i16));
    }
}

enum DecoderKind {
    G711(G711, Fade),
    Opus(Box<opus::Decoder>),
}

/// Decodes the payloads of one codec and conceals missing frames.
pub(crate) struct Decoder {
    kind: DecoderKind,
    samples: usize,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for `codec`, giving frames at `codec.audio_rate()`.
    pub(crate) fn new(codec: Codec) -> Result<Self, CodecError> {
        let samples = frame_samples(codec.audio_rate());
        let kind = match g711(codec) {
            Some(g) => DecoderKind::G711(g, Fade::new(samples)),
            None => DecoderKind::Opus(Box::new(opus::Decoder::new(
                codec.audio_rate(),
                opus::Channels::Mono,
            )?)),
        };
        Ok(Decoder {
            kind,
            samples,
            scratch: vec![0; MAX_OPUS_SAMPLES],
        })
    }

    /// The samples of one frame this decoder gives.
    pub(crate) fn frame_samples(&self) -> usize {
        self.samples
    }

    /// Decodes one payload into one frame (`out` is replaced). On an error
    /// `out` is left as it was; the caller conceals instead.
    pub(crate) fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        if payload.is_empty() {
            return Err(CodecError::Empty);
        }
        match &mut self.kind {
            DecoderKind::G711(g, fade) => {
                g.decode(payload, out);
                out.resize(self.samples, 0);
                fade.played(out);
            }
            DecoderKind::Opus(d) => {
                let n = d.decode(payload, &mut self.scratch, false)?;
                out.clear();
                out.extend_from_slice(self.scratch.get(..n.min(self.samples)).unwrap_or_default());
                out.resize(self.samples, 0);
            }
        }
        Ok(())
    }

    /// The frame for a missing packet (`out` is replaced). `next` is the
    /// packet after the missing one when it has arrived already: Opus
    /// rebuilds the missing frame from its FEC data.
    pub(crate) fn conceal(&mut self, next: Option<&[u8]>, out: &mut Vec<i16>) {
        let samples = self.samples;
        match &mut self.kind {
            DecoderKind::G711(_, fade) => fade.conceal(out),
            DecoderKind::Opus(d) => {
                let frame = self.scratch.get_mut(..samples).unwrap_or_default();
                let fec = next
                    .filter(|p| !p.is_empty())
                    .and_then(|p| d.decode(p, frame, true).ok());
                // No FEC: the decoder's own concealment ("no packet").
                let n = fec.or_else(|| d.decode(&[], frame, false).ok());
                out.clear();
                out.extend_from_slice(frame.get(..n.unwrap_or(0)).unwrap_or_default());
                out.resize(samples, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::quality::{compare, envelope_match};

    /// A 48 kHz speech-like signal: the 8 kHz test signal, interpolated.
    fn signal_48k(secs: f64) -> Vec<i16> {
        let s8 = crate::media::quality::test_signal(secs);
        let mut out = Vec::new();
        crate::media::audio::convert_frame(&s8, s8.len() * 6, &mut out);
        out
    }

    fn run(codec: Codec, signal: &[i16], lost: impl Fn(usize) -> bool) -> (Vec<i16>, usize) {
        let mut enc = Encoder::new(codec).unwrap();
        let mut dec = Decoder::new(codec).unwrap();
        let n = enc.frame_samples();
        let packets: Vec<Vec<u8>> = signal
            .chunks(n)
            .map(|f| {
                let mut p = Vec::new();
                enc.encode(f, &mut p).unwrap();
                p
            })
            .collect();
        let mut out = Vec::new();
        let mut frame = Vec::new();
        let mut bytes = 0;
        for (i, p) in packets.iter().enumerate() {
            bytes += p.len();
            if lost(i) {
                dec.conceal(packets.get(i + 1).map(Vec::as_slice), &mut frame);
            } else {
                dec.decode(p, &mut frame).unwrap();
            }
            assert_eq!(frame.len(), n);
            out.extend_from_slice(&frame);
        }
        (out, bytes / packets.len())
    }

    #[test]
    fn opus_round_trip_keeps_the_speech() {
        let signal = signal_48k(2.0);
        let (out, mean_bytes) = run(Codec::Opus, &signal, |_| false);
        assert_eq!(out.len(), signal.len());
        // 32 kbit/s is 80 bytes per 20 ms; VBR stays near it.
        assert!((40..=120).contains(&mean_bytes), "{mean_bytes} bytes");
        // Compared at 8 kHz (the band the test signal uses), windows
        // aligned on their best lag (the codec delay is 6.5 ms, 52 samples
        // at 8 kHz). Opus is not waveform-exact: the test signal's noise
        // part (a third of its amplitude) is coded by its spectrum, so the
        // waveform correlation stays near 0.88 where G.711 gives 0.99; the
        // loudness envelope, what a listener follows, must match closely.
        let (s8, o8) = (to_8k(&signal), to_8k(&out));
        let (rho, lag, snr) = compare(&s8, &o8, 200);
        let (env, _) = envelope_match(&s8, &o8, 80, 4);
        eprintln!("opus round trip: rho {rho:.3} lag {lag} snr {snr:.1} dB envelope {env:.3}, {mean_bytes} bytes");
        assert!(rho > 0.8, "rho {rho}");
        assert!(env > 0.97, "envelope {env}");
        assert!((40..=70).contains(&lag), "lag {lag}");
        assert!(snr > 3.0, "snr {snr}");
    }

    fn to_8k(s: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        crate::media::audio::convert_frame(s, s.len() / 6, &mut out);
        out
    }

    #[test]
    fn opus_conceals_loss_with_fec_and_plc() {
        let signal = signal_48k(3.0);
        // Every 10th frame lost: FEC from the next packet rebuilds it.
        let (fec, _) = run(Codec::Opus, &signal, |i| i % 10 == 5);
        let s8 = to_8k(&signal);
        let (rho_fec, _, _) = compare(&s8, &to_8k(&fec), 200);
        let (env_fec, _) = envelope_match(&s8, &to_8k(&fec), 80, 4);
        // Two in a row: the first by PLC alone (the next one is lost too).
        let (plc, _) = run(Codec::Opus, &signal, |i| i % 10 == 5 || i % 10 == 6);
        let (rho_plc, _, _) = compare(&s8, &to_8k(&plc), 200);
        let (env_plc, _) = envelope_match(&s8, &to_8k(&plc), 80, 4);
        eprintln!(
            "opus loss: FEC rho {rho_fec:.3} envelope {env_fec:.3}; PLC rho {rho_plc:.3} envelope {env_plc:.3}"
        );
        assert!(rho_fec > 0.75 && env_fec > 0.95, "FEC {rho_fec} {env_fec}");
        assert!(rho_plc > 0.6 && env_plc > 0.9, "PLC {rho_plc} {env_plc}");
        // Concealing without any packet (PLC only) still gives a frame of
        // the right length, and silence stays silence.
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut f = Vec::new();
        dec.conceal(None, &mut f);
        assert_eq!(f.len(), 960);
        assert!(f.iter().all(|&s| s.abs() < 50));
        // A corrupt packet is an error, not a panic, and conceal goes on.
        assert!(dec.decode(&[0xff; 3], &mut f).is_err());
        assert!(dec.decode(&[], &mut f).is_err());
        dec.conceal(Some(&[0xff, 0xff]), &mut f);
        assert_eq!(f.len(), 960);
    }

    #[test]
    fn g711_round_trip_and_fade() {
        let signal = crate::media::quality::test_signal(1.0);
        let (out, bytes) = run(Codec::Pcmu, &signal, |i| (20..25).contains(&i));
        assert_eq!(bytes, 160);
        let n = 160;
        let last = &out[19 * n..20 * n];
        assert_eq!(&out[20 * n..21 * n], last);
        let faded: Vec<i16> = last.iter().map(|&s| (f32::from(s) * 0.6) as i16).collect();
        assert_eq!(&out[21 * n..22 * n], &faded[..]);
        assert!(out[23 * n..25 * n].iter().all(|&s| s == 0));
        let mut fade = Fade::new(4);
        let mut f = Vec::new();
        fade.conceal(&mut f);
        assert_eq!(f, vec![0; 4], "silence before the first frame");
    }

    #[test]
    fn frames_of_the_wrong_length_are_fitted() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut p = Vec::new();
        enc.encode(&[100; 500], &mut p).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut f = Vec::new();
        dec.decode(&p, &mut f).unwrap();
        assert_eq!(f.len(), 960);
        let mut g = Encoder::new(Codec::Pcma).unwrap();
        g.encode(&[0; 100], &mut p).unwrap();
        assert_eq!(p.len(), 160);
    }
}
