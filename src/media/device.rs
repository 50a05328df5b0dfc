//! Sound-card capture and playback through cpal (feature `audio`).
//!
//! The cpal callbacks only move samples between lock-free `ringbuf` ring
//! buffers: no lock, no allocation, no log. Rate conversion between the
//! device's rate and the call's (8 kHz for G.711, 48 kHz for Opus) happens
//! on the media side, in
//! [`AudioSource::read_frame`] / [`AudioSink::write_frame`]. A cpal
//! stream is not `Send` on every platform, so each stream lives on its own
//! thread that holds it until the source or sink is dropped.

#[cfg(feature = "audio")]
use super::audio::Resampler;
use super::audio::{AudioError, AudioSink, AudioSource};

/// Capture from the default input device, or the one named `name`, as
/// frames at `rate` Hz.
#[cfg(feature = "audio")]
pub fn open_input(name: Option<&str>, rate: u32) -> Result<Box<dyn AudioSource>, AudioError> {
    imp::CpalSource::open(name, rate).map(|s| Box::new(s) as Box<dyn AudioSource>)
}

/// Playback on the default output device, or the one named `name`, of
/// frames at `rate` Hz.
#[cfg(feature = "audio")]
pub fn open_output(name: Option<&str>, rate: u32) -> Result<Box<dyn AudioSink>, AudioError> {
    imp::CpalSink::open(name, rate).map(|s| Box::new(s) as Box<dyn AudioSink>)
}

/// Without the `audio` feature there is no sound card: a clear error.
#[cfg(not(feature = "audio"))]
pub fn open_input(_name: Option<&str>, _rate: u32) -> Result<Box<dyn AudioSource>, AudioError> {
    Err(AudioError::NotBuilt)
}

/// Without the `audio` feature there is no sound card: a clear error.
#[cfg(not(feature = "audio"))]
pub fn open_output(_name: Option<&str>, _rate: u32) -> Result<Box<dyn AudioSink>, AudioError> {
    Err(AudioError::NotBuilt)
}

#[cfg(feature = "audio")]
mod imp {
    use super::*;
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use ringbuf::traits::{Consumer, Producer, Split};
    use ringbuf::{HeapCons, HeapProd, HeapRb};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// Half a second of device audio at 48 kHz stereo.
    const RING: usize = 48_000;

    fn dev_err(name: &str, e: impl ToString) -> AudioError {
        AudioError::Device {
            name: name.to_string(),
            why: e.to_string(),
        }
    }

    fn find(input: bool, name: Option<&str>) -> Result<(cpal::Device, String), AudioError> {
        let host = cpal::default_host();
        let direction = if input { "input" } else { "output" };
        let none = || AudioError::NoDevice {
            direction,
            name: name.map(str::to_string),
        };
        let dev = match name {
            None => if input {
                host.default_input_device()
            } else {
                host.default_output_device()
            }
            .ok_or_else(none)?,
            Some(n) => {
                let mut devs = if input {
                    host.input_devices()
                } else {
                    host.output_devices()
                }
                .map_err(|e| dev_err(n, e))?;
                devs.find(|d| d.description().is_ok_and(|x| x.name() == n))
                    .ok_or_else(none)?
            }
        };
        let label = dev
            .description()
            .map(|d| d.name().to_string())
            .unwrap_or_else(|_| "default".into());
        Ok((dev, label))
    }

    /// Keeps a stream alive on its own thread until `stop` is set.
    struct StreamThread {
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Drop for StreamThread {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                h.thread().unpark();
                let _ = h.join();
            }
        }
    }

    /// Builds a stream on a fresh thread; returns once it plays (or failed).
    fn spawn_stream(
        build: impl FnOnce() -> Result<cpal::Stream, AudioError> + Send + 'static,
    ) -> Result<StreamThread, AudioError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ibephone-audio".into())
            .spawn(move || {
                let stream = match build() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(stream.play().map_err(|e| dev_err("stream", e)));
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(50));
                }
                drop(stream);
            })
            .map_err(|e| dev_err("audio thread", e))?;
        let r = rx
            .recv()
            .map_err(|_| dev_err("audio thread", "stream thread ended"))?;
        let t = StreamThread {
            stop,
            handle: Some(handle),
        };
        r.map(|()| t)
    }

    /// Microphone capture.
    pub(super) struct CpalSource {
        cons: HeapCons<f32>,
        rate: u32,
        resampler: Resampler,
        pending: Vec<f32>,
        scratch: Vec<f32>,
        _stream: StreamThread,
    }

    impl CpalSource {
        pub(super) fn open(name: Option<&str>, to: u32) -> Result<Self, AudioError> {
            let (dev, label) = find(true, name)?;
            let cfg = dev.default_input_config().map_err(|e| dev_err(&label, e))?;
            let format = cfg.sample_format();
            let config = cfg.config();
            let (prod, cons) = HeapRb::<f32>::new(RING).split();
            let channels = usize::from(config.channels.max(1));
            let rate = config.sample_rate;
            let l2 = label.clone();
            let stream =
                spawn_stream(move || build_input(&dev, &l2, config, format, channels, prod))?;
            Ok(CpalSource {
                cons,
                rate: to,
                resampler: Resampler::new(rate, to),
                pending: Vec::new(),
                scratch: vec![0.0; RING],
                _stream: stream,
            })
        }
    }

    fn build_input(
        dev: &cpal::Device,
        label: &str,
        config: cpal::StreamConfig,
        format: cpal::SampleFormat,
        channels: usize,
        mut prod: HeapProd<f32>,
    ) -> Result<cpal::Stream, AudioError> {
        let err = |_e: cpal::Error| {};
        let s = match format {
            cpal::SampleFormat::F32 => dev.build_input_stream(
                config,
                move |data: &[f32], _: &cpal::InputCallbackInfo| {
                    for f in data.chunks(channels) {
                        let _ = prod.try_push(f[0]);
                    }
                },
                err,
                None,
            ),
            cpal::SampleFormat::I16 => dev.build_input_stream(
                config,
                move |data: &[i16], _: &cpal::InputCallbackInfo| {
                    for f in data.chunks(channels) {
                        let _ = prod.try_push(f32::from(f[0]) / 32768.0);
                    }
                },
                err,
                None,
            ),
            other => {
                return Err(dev_err(
                    label,
                    format!("unsupported sample format {other:?}"),
                ))
            }
        };
        s.map_err(|e| dev_err(label, e))
    }

    impl AudioSource for CpalSource {
        fn read_frame(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
            let n = self.cons.pop_slice(&mut self.scratch);
            let input = self.scratch.get(..n).unwrap_or_default();
            self.resampler.process(input, &mut self.pending);
            frame.fill(0);
            let take = self.pending.len().min(frame.len());
            for (o, s) in frame.iter_mut().zip(self.pending.drain(..take)) {
                *o = (s * 32767.0).clamp(-32768.0, 32767.0) as i16;
            }
            // Keep at most one frame of backlog: capture must not add delay.
            let excess = self.pending.len().saturating_sub(frame.len());
            self.pending.drain(..excess);
            Ok(true)
        }

        fn sample_rate(&self) -> u32 {
            self.rate
        }
    }

    /// Speaker playback.
    pub(super) struct CpalSink {
        prod: HeapProd<f32>,
        rate: u32,
        resampler: Resampler,
        scratch: Vec<f32>,
        scratch_out: Vec<f32>,
        channels: usize,
        _stream: StreamThread,
    }

    impl CpalSink {
        pub(super) fn open(name: Option<&str>, from: u32) -> Result<Self, AudioError> {
            let (dev, label) = find(false, name)?;
            let cfg = dev
                .default_output_config()
                .map_err(|e| dev_err(&label, e))?;
            let format = cfg.sample_format();
            let config = cfg.config();
            let (prod, cons) = HeapRb::<f32>::new(RING).split();
            let channels = usize::from(config.channels.max(1));
            let rate = config.sample_rate;
            let l2 = label.clone();
            let stream =
                spawn_stream(move || build_output(&dev, &l2, config, format, channels, cons))?;
            Ok(CpalSink {
                prod,
                rate: from,
                resampler: Resampler::new(from, rate),
                scratch: Vec::new(),
                scratch_out: Vec::new(),
                channels,
                _stream: stream,
            })
        }
    }

    fn build_output(
        dev: &cpal::Device,
        label: &str,
        config: cpal::StreamConfig,
        format: cpal::SampleFormat,
        channels: usize,
        mut cons: HeapCons<f32>,
    ) -> Result<cpal::Stream, AudioError> {
        let err = |_e: cpal::Error| {};
        let s = match format {
            cpal::SampleFormat::F32 => dev.build_output_stream(
                config,
                move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                    let n = cons.pop_slice(data);
                    data[n..].fill(0.0);
                },
                err,
                None,
            ),
            cpal::SampleFormat::I16 => dev.build_output_stream(
                config,
                move |data: &mut [i16], _: &cpal::OutputCallbackInfo| {
                    for s in data.iter_mut() {
                        *s = cons.try_pop().map_or(0, |v| (v * 32767.0) as i16);
                    }
                },
                err,
                None,
            ),
            other => {
                return Err(dev_err(
                    label,
                    format!("unsupported sample format {other:?}"),
                ))
            }
        };
        let _ = channels;
        s.map_err(|e| dev_err(label, e))
    }

    impl AudioSink for CpalSink {
        fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError> {
            self.scratch.clear();
            self.scratch
                .extend(frame.iter().map(|&s| f32::from(s) / 32768.0));
            self.scratch_out.clear();
            self.resampler.process(&self.scratch, &mut self.scratch_out);
            for &s in &self.scratch_out {
                for _ in 0..self.channels {
                    // A full ring (device stalled) drops samples, never blocks.
                    let _ = self.prod.try_push(s);
                }
            }
            Ok(())
        }

        fn finish(&mut self) -> Result<(), AudioError> {
            Ok(())
        }

        fn sample_rate(&self) -> u32 {
            self.rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the default devices when there are any; on a machine without
    /// a sound card the error must be clear (and nothing panics).
    #[test]
    fn default_devices_open_or_fail_clearly() {
        match open_input(None, 48_000) {
            Ok(mut src) => {
                assert_eq!(src.sample_rate(), 48_000);
                let mut f = [0i16; 960];
                assert!(src.read_frame(&mut f).is_ok());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("audio") || msg.contains("device"), "{msg}");
            }
        }
        match open_output(None, 8000) {
            Ok(mut sink) => {
                assert!(sink.write_frame(&[0i16; 160]).is_ok());
                assert!(sink.finish().is_ok());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let e = open_input(Some("no such device.invalid"), 8000)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("no such device.invalid") || m.contains("audio")));
    }
}
