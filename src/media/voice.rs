//! Voice processing on the sound-card path: acoustic echo cancellation,
//! noise suppression and automatic gain control, from WebRTC's audio
//! processing module (the `webrtc-audio-processing` crate on the system's
//! library 0.3; feature `voice-processing`, Linux).
//!
//! One [`VoiceProcessor`] serves one call. The far end's audio, as it goes
//! to the speaker, is its *render* stream (the reference the echo is
//! predicted from); the microphone's audio is its *capture* stream, which
//! comes back with the echo of the render stream removed, stationary noise
//! suppressed and its level brought to a steady target. The module works
//! on 10 ms frames at 48 kHz ([`RATE`], [`FRAME_10MS`]); the echo path's
//! delay (speaker buffer, air, microphone buffer) is estimated by the
//! library (delay-agnostic mode with the extended filter), since the
//! sound devices report none we could trust. The processed microphone
//! signal comes out about 14 ms (669 samples) late: the library's band
//! split and noise suppressor (measured by the unit tests), a part of the
//! mouth-to-ear budget.
//!
//! [`VoiceProcessor::wrap`] puts a processor between a call's source and
//! sink: what the sink plays is fed as render frames, what the source
//! captures is processed before the encoder sees it. Both wrappers run in
//! the media session's task (never in the sound card's callback, which
//! only moves samples through lock-free rings); after their first frame
//! they allocate nothing and take no lock of ours (the library serialises
//! render and capture internally).
//!
//! Without the feature (or off Linux) [`VoiceProcessor::new`] says
//! [`VoiceError::NotBuilt`] and calls run unprocessed.

use super::audio::{convert_frame, AudioError, AudioSink, AudioSource};
use super::codec::frame_samples;
use thiserror::Error;

/// The processing rate, Hz: the wrapped source and sink present frames at
/// this rate whatever their device runs at.
pub const RATE: u32 = 48_000;

/// Samples in one 10 ms processing frame at [`RATE`].
pub const FRAME_10MS: usize = 480;

/// Voice-processing failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VoiceError {
    /// Built without the feature `voice-processing` (or not on Linux).
    #[error("this build has no voice processing (feature `voice-processing`, Linux only)")]
    NotBuilt,
    /// The library refused to start or to process a frame.
    #[error("voice processing failed: {0}")]
    Library(String),
}

/// Echo cancellation, noise suppression and gain control for one call;
/// see the module documentation.
pub struct VoiceProcessor {
    capture: Half,
    render: Half,
}

impl std::fmt::Debug for VoiceProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceProcessor")
    }
}

impl VoiceProcessor {
    /// A processor with echo cancellation (moderate suppression, extended
    /// filter, delay-agnostic), noise suppression (moderate), adaptive digital
    /// gain control (target -3 dBFS, at most 9 dB of gain, limiter) and
    /// the high-pass filter on. Fails with [`VoiceError::NotBuilt`] in a
    /// build without the feature.
    pub fn new() -> Result<Self, VoiceError> {
        let (capture, render) = imp::new_halves()?;
        Ok(VoiceProcessor { capture, render })
    }

    /// Feeds far-end audio (mono, [`RATE`]) as it goes to the speaker.
    /// Any length: samples are gathered into 10 ms frames.
    pub fn render(&mut self, far: &[i16]) -> Result<(), VoiceError> {
        self.render.render(far)
    }

    /// Processes microphone audio (mono, [`RATE`]) in place. `near`
    /// should hold whole 10 ms frames (a 20 ms frame is two); samples past
    /// the last whole frame are left unprocessed.
    pub fn capture(&mut self, near: &mut [i16]) -> Result<(), VoiceError> {
        self.capture.capture(near)
    }

    /// Processes a recorded call offline: `far` (what the speaker played)
    /// and `mic` (what the microphone heard, same start), both mono at
    /// [`RATE`], 10 ms at a time, the far end's frame before the
    /// microphone's (the speaker plays before the microphone hears).
    /// Returns the processed microphone signal, as long as `mic` (a
    /// trailing part shorter than 10 ms is left as it was). For tests,
    /// benches and recordings; a call uses [`VoiceProcessor::wrap`].
    pub fn process_recording(&mut self, far: &[i16], mic: &[i16]) -> Result<Vec<i16>, VoiceError> {
        let mut out = mic.to_vec();
        let silence = [0i16; FRAME_10MS];
        for (i, m) in out.chunks_exact_mut(FRAME_10MS).enumerate() {
            let f = far
                .get(i * FRAME_10MS..(i + 1) * FRAME_10MS)
                .unwrap_or(&silence);
            self.render(f)?;
            self.capture(m)?;
        }
        Ok(out)
    }

    /// Puts this processor between a call's `source` (the microphone) and
    /// `sink` (the speaker). The returned pair present 20 ms frames at
    /// [`RATE`] (converting from and to the wrapped ones' rates, see
    /// [`convert_frame`]), so the processor always sees 48 kHz. If the
    /// library fails on a frame, that read returns the error once (the
    /// session reports it) and the audio then passes unprocessed.
    pub fn wrap(
        self,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
    ) -> (Box<dyn AudioSource>, Box<dyn AudioSink>) {
        let VoiceProcessor { capture, render } = self;
        let source = ProcessedSource {
            inner: source,
            half: capture,
            io: Vec::new(),
            conv: Vec::new(),
            failed: false,
        };
        let sink = ReferenceSink {
            inner: sink,
            half: render,
            io: Vec::new(),
            failed: false,
        };
        (Box::new(source), Box::new(sink))
    }
}

/// One side (render or capture) of a processor: the library handle and a
/// frame buffer.
struct Half {
    inner: imp::Inner,
    frame: [f32; FRAME_10MS],
    filled: usize,
}

impl Half {
    fn render(&mut self, far: &[i16]) -> Result<(), VoiceError> {
        for &s in far {
            self.frame[self.filled] = f32::from(s) / 32768.0;
            self.filled += 1;
            if self.filled == FRAME_10MS {
                self.filled = 0;
                self.inner.render(&mut self.frame)?;
            }
        }
        Ok(())
    }

    fn capture(&mut self, near: &mut [i16]) -> Result<(), VoiceError> {
        for chunk in near.chunks_exact_mut(FRAME_10MS) {
            for (f, &s) in self.frame.iter_mut().zip(chunk.iter()) {
                *f = f32::from(s) / 32768.0;
            }
            self.inner.capture(&mut self.frame)?;
            for (o, &f) in chunk.iter_mut().zip(self.frame.iter()) {
                *o = (f * 32768.0).clamp(-32768.0, 32767.0) as i16;
            }
        }
        Ok(())
    }
}

/// The microphone, processed.
struct ProcessedSource {
    inner: Box<dyn AudioSource>,
    half: Half,
    /// One frame at the inner source's rate, when it is not [`RATE`],
    /// and the same converted to [`RATE`].
    io: Vec<i16>,
    conv: Vec<i16>,
    failed: bool,
}

impl AudioSource for ProcessedSource {
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        let have = frame_samples(self.inner.sample_rate());
        let more = if have == frame.len() {
            self.inner.read_frame(frame)?
        } else {
            self.io.clear();
            self.io.resize(have, 0);
            let more = self.inner.read_frame(&mut self.io)?;
            convert_frame(&self.io, frame.len(), &mut self.conv);
            for (o, &c) in frame.iter_mut().zip(&self.conv) {
                *o = c;
            }
            more
        };
        if !self.failed {
            if let Err(e) = self.half.capture(frame) {
                self.failed = true;
                return Err(processing_failed(e));
            }
        }
        Ok(more)
    }

    fn sample_rate(&self) -> u32 {
        RATE
    }
}

/// The speaker, its frames fed to the processor as the echo reference.
struct ReferenceSink {
    inner: Box<dyn AudioSink>,
    half: Half,
    /// One frame at the inner sink's rate, when it is not [`RATE`].
    io: Vec<i16>,
    failed: bool,
}

impl AudioSink for ReferenceSink {
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        let r = if self.failed {
            Ok(())
        } else {
            self.half.render(frame).map_err(|e| {
                self.failed = true;
                processing_failed(e)
            })
        };
        let want = frame_samples(self.inner.sample_rate());
        if want == frame.len() {
            self.inner.write_frame(frame)?;
        } else {
            convert_frame(frame, want, &mut self.io);
            self.inner.write_frame(&self.io)?;
        }
        r
    }

    fn sample_rate(&self) -> u32 {
        RATE
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        self.inner.finish()
    }
}

fn processing_failed(e: VoiceError) -> AudioError {
    AudioError::Device {
        name: "voice processing".into(),
        why: format!("{e}; the call goes on unprocessed"),
    }
}

#[cfg(all(feature = "voice-processing", target_os = "linux"))]
mod imp {
    use super::{Half, VoiceError, FRAME_10MS};
    use webrtc_audio_processing as wap;

    /// A handle on the shared library processor (its clones share one).
    pub(super) struct Inner(wap::Processor);

    const _: () = assert!(wap::NUM_SAMPLES_PER_FRAME as usize == FRAME_10MS);

    fn lib_err(e: wap::Error) -> VoiceError {
        VoiceError::Library(e.to_string())
    }

    pub(super) fn new_halves() -> Result<(Half, Half), VoiceError> {
        let mut p = wap::Processor::new(&wap::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..Default::default()
        })
        .map_err(lib_err)?;
        p.set_config(wap::Config {
            echo_cancellation: Some(wap::EchoCancellation {
                suppression_level: wap::EchoCancellationSuppressionLevel::Moderate,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: None,
            }),
            gain_control: Some(wap::GainControl {
                mode: wap::GainControlMode::AdaptiveDigital,
                target_level_dbfs: 3,
                compression_gain_db: 9,
                enable_limiter: true,
            }),
            noise_suppression: Some(wap::NoiseSuppression {
                suppression_level: wap::NoiseSuppressionLevel::Moderate,
            }),
            voice_detection: None,
            enable_transient_suppressor: false,
            enable_high_pass_filter: true,
        });
        let half = |p: wap::Processor| Half {
            inner: Inner(p),
            frame: [0.0; FRAME_10MS],
            filled: 0,
        };
        Ok((half(p.clone()), half(p)))
    }

    impl Inner {
        pub(super) fn render(&mut self, frame: &mut [f32; FRAME_10MS]) -> Result<(), VoiceError> {
            self.0.process_render_frame(frame).map_err(lib_err)
        }

        pub(super) fn capture(&mut self, frame: &mut [f32; FRAME_10MS]) -> Result<(), VoiceError> {
            self.0.process_capture_frame(frame).map_err(lib_err)
        }
    }
}

#[cfg(not(all(feature = "voice-processing", target_os = "linux")))]
mod imp {
    use super::{Half, VoiceError, FRAME_10MS};

    /// No library in this build: no value of this type exists.
    pub(super) enum Inner {}

    pub(super) fn new_halves() -> Result<(Half, Half), VoiceError> {
        Err(VoiceError::NotBuilt)
    }

    impl Inner {
        pub(super) fn render(&mut self, _: &mut [f32; FRAME_10MS]) -> Result<(), VoiceError> {
            match *self {}
        }

        pub(super) fn capture(&mut self, _: &mut [f32; FRAME_10MS]) -> Result<(), VoiceError> {
            match *self {}
        }
    }
}

#[cfg(all(test, feature = "voice-processing", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::media::quality::{delayed_match, erle_db, EchoPath};

    const SEC: usize = RATE as usize;

    /// A voiced, speech-like talker at 48 kHz: harmonics of a gliding
    /// pitch up to 3.6 kHz (falling as 1/k) under a syllable envelope,
    /// with a pause every few syllables; `seed` varies the pauses.
    fn talker(secs: f64, f0: f64, syllables_hz: f64, seed: u32) -> Vec<i16> {
        let n = (secs * f64::from(RATE)) as usize;
        let mut phase = 0.0f64;
        let tau = 2.0 * std::f64::consts::PI;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(RATE);
                let pitch = f0 * (1.0 + 0.2 * (tau * 0.6 * t).sin());
                phase += tau * pitch / f64::from(RATE);
                let s: f64 = (1..)
                    .take_while(|&k| f64::from(k) * pitch < 3600.0)
                    .map(|k| (f64::from(k) * phase).sin() / f64::from(k))
                    .sum();
                let cycle = t * syllables_hz;
                // One syllable in four (by a hash of its index) is a pause.
                let h = (cycle as u32 ^ seed).wrapping_mul(2_654_435_761) >> 30;
                let gate = if h == 0 { 0.0 } else { 1.0 };
                let env = 0.5 * (1.0 - (tau * cycle).cos());
                (6000.0 * gate * env * s) as i16
            })
            .collect()
    }

    /// Far end alone for 6 s, then both talk for 4 s, through a 40 ms,
    /// 3 kHz low-passed, -6 dB echo path.
    fn scene() -> (Vec<i16>, Vec<i16>, Vec<i16>) {
        let far = talker(10.0, 120.0, 3.5, 1);
        let mut near = vec![0i16; 6 * SEC];
        near.extend(talker(4.0, 210.0, 4.3, 2));
        let path = EchoPath::laptop(RATE);
        let mic = path.microphone(&far, &near);
        (far, near, mic)
    }

    #[test]
    fn echo_is_cancelled_and_the_near_end_kept() {
        let (far, near, mic) = scene();
        let mut p = VoiceProcessor::new().unwrap();
        let out = p.process_recording(&far, &mic).unwrap();
        let erle = erle_db(&mic[2 * SEC..6 * SEC], &out[2 * SEC..6 * SEC]);
        // The processor delays the microphone by its filter banks (about
        // 14 ms); ρ is taken at that delay (see tests/it/voice_processing.rs
        // for the threshold).
        let (rho, delay) = delayed_match(&near[6 * SEC..], &out[6 * SEC..], 960);
        let (rho_mic, _) = delayed_match(&near[6 * SEC..], &mic[6 * SEC..], 960);
        eprintln!(
            "ERLE {erle:.1} dB; near-end rho {rho:.3} at {delay} samples (unprocessed {rho_mic:.3})"
        );
        assert!(erle >= 20.0, "ERLE {erle:.1} dB");
        assert!(rho >= 0.7, "near-end rho {rho:.3}");
        // A far end shorter than the microphone counts as silence.
        let short = VoiceProcessor::new()
            .unwrap()
            .process_recording(&far[..SEC], &mic[..2 * SEC + 100])
            .unwrap();
        assert_eq!(short.len(), 2 * SEC + 100);
        assert_eq!(short[2 * SEC..], mic[2 * SEC..2 * SEC + 100]);
    }

    /// A sink that keeps what it is given.
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<i16>>>, u32);

    impl AudioSink for Recorder {
        fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError> {
            let mut played = self.0.lock().map_err(|_| AudioError::Device {
                name: "recorder".into(),
                why: "poisoned".into(),
            })?;
            played.extend_from_slice(frame);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), AudioError> {
            Ok(())
        }
        fn sample_rate(&self) -> u32 {
            self.1
        }
    }

    #[test]
    fn wrapped_devices_cancel_the_echo_of_what_the_sink_played() {
        use crate::media::audio::WavSource;
        let (far, _, mic) = scene();
        let played = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut source, mut sink) = VoiceProcessor::new().unwrap().wrap(
            Box::new(WavSource::from_samples_at(mic[..6 * SEC].to_vec(), RATE)),
            Box::new(Recorder(played.clone(), RATE)),
        );
        assert_eq!((source.sample_rate(), sink.sample_rate()), (RATE, RATE));
        let mut out = Vec::new();
        let mut frame = [0i16; 960];
        for f in far[..6 * SEC].chunks_exact(960) {
            sink.write_frame(f).unwrap();
            assert!(source.read_frame(&mut frame).unwrap());
            out.extend_from_slice(&frame);
        }
        // The speaker plays the far end untouched; the microphone's echo
        // of it is gone.
        assert_eq!(played.lock().unwrap()[..], far[..6 * SEC]);
        let erle = erle_db(&mic[2 * SEC..6 * SEC], &out[2 * SEC..6 * SEC]);
        assert!(erle >= 20.0, "ERLE {erle:.1} dB");
        // Devices at 8 kHz (a G.711 call's) are bridged to 48 kHz frames.
        let narrow = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut source, mut sink) = VoiceProcessor::new().unwrap().wrap(
            Box::new(WavSource::from_samples_at(vec![1000; 320], 8000)),
            Box::new(Recorder(narrow.clone(), 8000)),
        );
        sink.write_frame(&[0; 960]).unwrap();
        assert_eq!(narrow.lock().unwrap().len(), 160);
        assert!(source.read_frame(&mut frame).unwrap());
        assert!(source.read_frame(&mut frame).unwrap());
        assert!(!source.read_frame(&mut frame).unwrap());
    }
}
