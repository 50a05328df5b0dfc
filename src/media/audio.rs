//! Audio sources and sinks: 20 ms frames of mono 16-bit samples at the
//! rate each one states (8 kHz for G.711 calls, 48 kHz for Opus calls).
//! [`WavSource`]/[`WavSink`] (the `hound` crate) replace the sound card for
//! tests and scripts (`--audio-in`, `--audio-out`); the cpal devices live
//! in [`super::device`]. [`convert_frame`] bridges a source or sink whose
//! rate is not the codec's (a re-INVITE that changed the codec).

use super::jitter::FRAME_SAMPLES;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The default media sample rate (G.711).
pub const SAMPLE_RATE: u32 = 8000;

/// Audio input/output failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The WAV file could not be read or written.
    #[error("WAV file {path}: {why}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// No sound device (or none of that name).
    #[error("no audio {direction} device{}", .name.as_ref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    NoDevice {
        /// `input` or `output`.
        direction: &'static str,
        /// The name asked for.
        name: Option<String>,
    },
    /// The device exists but could not be opened or run.
    #[error("audio device {name:?} failed: {why}")]
    Device {
        /// The device.
        name: String,
        /// The backend's error.
        why: String,
    },
    /// Built without the `audio` feature.
    #[error("this build has no sound-card support (feature `audio`); use --audio-in/--audio-out WAV files")]
    NotBuilt,
}

/// Something that produces 20 ms frames of speech.
pub trait AudioSource: Send {
    /// Fills `frame` (20 ms at [`AudioSource::sample_rate`]); returns
    /// false once the source has ended (the frame is then silence).
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, AudioError>;

    /// The sample rate of the frames, Hz.
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }
}

/// Something that plays 20 ms frames.
pub trait AudioSink: Send {
    /// Plays one frame (20 ms at [`AudioSink::sample_rate`]).
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError>;

    /// The sample rate the frames must have, Hz.
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    /// Flushes and closes (a WAV file gets its final header).
    fn finish(&mut self) -> Result<(), AudioError>;
}

/// A source of silence that never ends (no microphone, a headless run).
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        frame.fill(0);
        Ok(true)
    }
}

/// A sink that drops what it is given (no speaker, a headless run).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl AudioSink for DiscardSink {
    fn write_frame(&mut self, _frame: &[i16]) -> Result<(), AudioError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}

/// Linear-interpolation resampler for mono signals. Plenty for speech into
/// an 8 kHz telephone codec (which low-passes at 4 kHz anyway); hand-written
/// because a polyphase resampler crate would be most of the media build.
#[derive(Debug, Clone)]
pub struct Resampler {
    step: f64,
    pos: f64,
    prev: f32,
}

impl Resampler {
    /// Converts from `from_hz` to `to_hz`.
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        Resampler {
            step: f64::from(from_hz.max(1)) / f64::from(to_hz.max(1)),
            pos: 0.0,
            prev: 0.0,
        }
    }

    /// Feeds input samples, appends output samples to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        // `pos` is the output position in input samples, relative to `prev`
        // at -1 and input[0] at 0.
        for (i, &x) in input.iter().enumerate() {
            while self.pos <= i as f64 {
                let frac = (self.pos - (i as f64 - 1.0)) as f32;
                let a = if i == 0 { self.prev } else { input[i - 1] };
                out.push(a + (x - a) * frac);
                self.pos += self.step;
            }
        }
        self.pos -= input.len() as f64;
        if let Some(&l) = input.last() {
            self.prev = l;
        }
    }
}

/// Converts one frame to `out_len` samples (the same 20 ms at another
/// rate) into `out`: linear interpolation up, the mean of each output
/// sample's span of input down (a box low-pass against aliasing).
/// Stateless, so the frame count stays exact; meant for the occasional
/// source or sink whose rate is not the codec's.
pub fn convert_frame(input: &[i16], out_len: usize, out: &mut Vec<i16>) {
    out.clear();
    let n = input.len();
    if n == out_len || n == 0 {
        out.extend_from_slice(input);
        out.resize(out_len, 0);
        return;
    }
    let ratio = n as f64 / out_len as f64;
    let at = |i: usize| f64::from(input.get(i.min(n - 1)).copied().unwrap_or(0));
    for j in 0..out_len {
        let pos = j as f64 * ratio;
        let v = if ratio > 1.0 {
            let a = pos as usize;
            let b = (((j + 1) as f64 * ratio) as usize).clamp(a + 1, n);
            (a..b).map(at).sum::<f64>() / (b - a) as f64
        } else {
            let i = pos as usize;
            let f = pos - i as f64;
            at(i) + (at(i + 1) - at(i)) * f
        };
        out.push(v.clamp(-32768.0, 32767.0) as i16);
    }
}

/// Reads a WAV file (any rate, any channel count, 16-bit int or 32-bit
/// float) as mono frames at a chosen rate (8 kHz unless told).
pub struct WavSource {
    samples: Vec<i16>,
    at: usize,
    rate: u32,
}

fn wav_err(path: &Path, e: impl ToString) -> AudioError {
    AudioError::Wav {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

impl WavSource {
    /// Opens and converts the whole file to 8 kHz (speech files are small).
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        Self::open_at(path, SAMPLE_RATE)
    }

    /// Opens and converts the whole file to `rate` Hz.
    pub fn open_at(path: &Path, rate: u32) -> Result<Self, AudioError> {
        let reader = hound::WavReader::open(path).map_err(|e| wav_err(path, e))?;
        let spec = reader.spec();
        let ch = usize::from(spec.channels.max(1));
        let raw: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => reader
                .into_samples::<i16>()
                .map(|s| s.map(f32::from))
                .collect::<Result<_, _>>(),
            (hound::SampleFormat::Float, 32) => reader
                .into_samples::<f32>()
                .map(|s| s.map(|v| v * 32767.0))
                .collect(),
            (f, b) => {
                return Err(wav_err(
                    path,
                    format!("unsupported sample format {f:?}/{b} bits"),
                ))
            }
        }
        .map_err(|e| wav_err(path, e))?;
        let mono: Vec<f32> = raw
            .chunks(ch)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let mut out = Vec::with_capacity(mono.len());
        if spec.sample_rate == rate {
            out = mono;
        } else {
            Resampler::new(spec.sample_rate, rate).process(&mono, &mut out);
        }
        Ok(WavSource {
            samples: out
                .iter()
                .map(|&v| v.clamp(-32768.0, 32767.0) as i16)
                .collect(),
            at: 0,
            rate,
        })
    }

    /// A source over samples already in memory (8 kHz mono).
    pub fn from_samples(samples: Vec<i16>) -> Self {
        Self::from_samples_at(samples, SAMPLE_RATE)
    }

    /// A source over mono samples at `rate` Hz already in memory.
    pub fn from_samples_at(samples: Vec<i16>, rate: u32) -> Self {
        WavSource {
            samples,
            at: 0,
            rate,
        }
    }
}

impl AudioSource for WavSource {
    fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        frame.fill(0);
        let rest = self.samples.get(self.at..).unwrap_or_default();
        let n = rest.len().min(frame.len());
        frame[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n > 0)
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }
}

/// Writes received audio to a mono 16-bit WAV file (8 kHz unless told).
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    rate: u32,
}

impl WavSink {
    /// Creates (or truncates) an 8 kHz file.
    pub fn create(path: &Path) -> Result<Self, AudioError> {
        Self::create_at(path, SAMPLE_RATE)
    }

    /// Creates (or truncates) a file of `rate` Hz.
    pub fn create_at(path: &Path, rate: u32) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| wav_err(path, e))?;
        Ok(WavSink {
            path: path.to_path_buf(),
            writer: Some(writer),
            rate,
        })
    }
}

impl AudioSink for WavSink {
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| wav_err(&self.path, "already finished"))?;
        for &s in frame {
            w.write_sample(s).map_err(|e| wav_err(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| wav_err(&self.path, e)),
            None => Ok(()),
        }
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Reads a whole WAV file as 8 kHz mono samples (for comparisons).
pub fn read_wav(path: &Path) -> Result<Vec<i16>, AudioError> {
    read_wav_at(path, SAMPLE_RATE)
}

/// Reads a whole WAV file as mono samples at `rate` Hz.
pub fn read_wav_at(path: &Path, rate: u32) -> Result<Vec<i16>, AudioError> {
    let mut src = WavSource::open_at(path, rate)?;
    Ok(std::mem::take(&mut src.samples))
}

const _: () = assert!(FRAME_SAMPLES == 160);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip_and_resampling() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let mut sink = WavSink::create(&p).unwrap();
        let frame: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();
        sink.write_frame(&frame).unwrap();
        sink.write_frame(&frame).unwrap();
        sink.finish().unwrap();
        let mut src = WavSource::open(&p).unwrap();
        let mut f = [0i16; 160];
        assert!(src.read_frame(&mut f).unwrap());
        assert_eq!(&f[..], &frame[..]);
        assert!(src.read_frame(&mut f).unwrap());
        assert!(!src.read_frame(&mut f).unwrap());
        assert!(f.iter().all(|&s| s == 0));
        // 16 kHz stereo ramp halves to 8 kHz mono.
        let q = dir.path().join("b.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&q, spec).unwrap();
        for i in 0..1600 {
            w.write_sample((i * 10) as i16).unwrap();
            w.write_sample((i * 10) as i16).unwrap();
        }
        w.finalize().unwrap();
        let s = read_wav(&q).unwrap();
        assert!((799..=801).contains(&s.len()), "{}", s.len());
        assert_eq!(s[100], 2000);
        assert!(WavSource::open(&dir.path().join("missing.wav")).is_err());
        // The same file read at 48 kHz, and a 48 kHz sink that says so.
        let s48 = read_wav_at(&q, 48_000).unwrap();
        assert!((4795..=4801).contains(&s48.len()), "{}", s48.len());
        let sink = WavSink::create_at(&dir.path().join("c.wav"), 48_000).unwrap();
        assert_eq!(sink.sample_rate(), 48_000);
    }

    #[test]
    fn frames_convert_between_rates() {
        let ramp: Vec<i16> = (0..160).map(|i| i * 10).collect();
        let mut up = Vec::new();
        convert_frame(&ramp, 960, &mut up);
        assert_eq!(up.len(), 960);
        assert_eq!((up[0], up[6], up[3]), (0, 10, 5));
        let mut down = Vec::new();
        convert_frame(&up, 160, &mut down);
        assert_eq!(down.len(), 160);
        // The mean of six interpolated samples lags by 2.5 of them.
        assert!(down
            .iter()
            .zip(&ramp)
            .skip(1)
            .take(150)
            .all(|(d, r)| (d - r - 4).abs() <= 1));
        convert_frame(&[], 4, &mut down);
        assert_eq!(down, vec![0; 4]);
    }
}
