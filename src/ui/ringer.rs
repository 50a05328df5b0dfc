//! The ring tone of an incoming call, on the speaker chosen in Settings at
//! the ring volume.
//!
//! The tone is the North American ring (440 Hz + 480 Hz, 2 s on, 4 s off),
//! synthesised, so no sound file has to ship. It plays on its own thread,
//! paced at 20 ms frames, from the moment a call for us is shown until it
//! is answered, rejected, cancelled or gone; the window never waits for the
//! sound system. No speaker (or a failing one) means a silent ring and one
//! log line, never an error for the user to clear: the call still shows.

use crate::media::audio::{AudioError, AudioSink};
use crate::media::codec::frame_samples;
use std::f64::consts::TAU;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The tone is on for this long in every cadence period.
pub const RING_ON: Duration = Duration::from_secs(2);
/// One cadence period (on, then silence).
pub const RING_PERIOD: Duration = Duration::from_secs(6);
/// The sample rate the ring tone is made at.
pub const RING_RATE: u32 = 8000;
/// The share of the ring volume a waiting call rings at (a second call
/// while we talk rings softly, not over the conversation).
pub const WAITING_RING_SHARE: f32 = 0.25;

/// The volume to ring at: `volume`, or [`WAITING_RING_SHARE`] of it while
/// another call is in progress (`talking`).
pub fn ring_volume(volume: f32, talking: bool) -> f32 {
    if talking {
        volume * WAITING_RING_SHARE
    } else {
        volume
    }
}

/// Peak of the tone at volume 1.0 (two tones of half this each).
const PEAK: f64 = 0.5 * i16::MAX as f64;

/// Opens the speaker `device` (None: the system default) at a rate.
pub type SpeakerOpener =
    Arc<dyn Fn(Option<&str>, u32) -> Result<Box<dyn AudioSink>, AudioError> + Send + Sync>;

/// Fills `out` with the ring tone at `rate` Hz from sample `start` on, at
/// `volume` (clamped to 0.0-1.0): 440 + 480 Hz during the first [`RING_ON`]
/// of every [`RING_PERIOD`], silence otherwise.
pub fn ring_tone(rate: u32, start: u64, volume: f32, out: &mut [i16]) {
    let rate_f = f64::from(rate.max(1));
    let period = RING_PERIOD.as_millis() as u64 * u64::from(rate) / 1000;
    let on = RING_ON.as_millis() as u64 * u64::from(rate) / 1000;
    let gain = f64::from(volume.clamp(0.0, 1.0)) * PEAK / 2.0;
    for (i, s) in out.iter_mut().enumerate() {
        let n = start + i as u64;
        *s = if period > 0 && n % period < on {
            let t = n as f64 / rate_f;
            (gain * ((TAU * 440.0 * t).sin() + (TAU * 480.0 * t).sin())).round() as i16
        } else {
            0
        };
    }
}

struct Playing {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Rings while told to; at most one tone at a time.
pub struct Ringer {
    open: SpeakerOpener,
    playing: Option<Playing>,
}

impl Ringer {
    /// A ringer on the sound devices of the cpal host.
    pub fn on_devices() -> Self {
        Ringer::with_opener(Arc::new(|name, rate| {
            crate::media::device::open_output(name, rate)
        }))
    }

    /// A ringer that opens its speaker with `open` (tests record frames).
    pub fn with_opener(open: SpeakerOpener) -> Self {
        Ringer {
            open,
            playing: None,
        }
    }

    /// Whether the tone is playing (or about to).
    pub fn is_ringing(&self) -> bool {
        self.playing
            .as_ref()
            .is_some_and(|p| !p.thread.is_finished())
    }

    /// Rings (`ring`) or stops; called with the app's state every frame,
    /// it starts and stops the tone only on a change. A volume of 0 rings
    /// silently: nothing is opened.
    pub fn set(&mut self, ring: bool, device: Option<&str>, volume: f32) {
        match (ring && volume > 0.0, self.playing.is_some()) {
            (true, false) => self.start(device, volume),
            (false, true) => self.stop(),
            _ => {}
        }
    }

    fn start(&mut self, device: Option<&str>, volume: f32) {
        let stop = Arc::new(AtomicBool::new(false));
        let open = self.open.clone();
        let device = device.map(str::to_string);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ibephone-ringer".into())
            .spawn(move || {
                if let Err(e) = play(&open, device.as_deref(), volume, &flag) {
                    tracing::warn!(error = %e, "the ring tone cannot play");
                }
            });
        match thread {
            Ok(thread) => self.playing = Some(Playing { stop, thread }),
            Err(e) => tracing::warn!(error = %e, "no thread for the ring tone"),
        }
    }

    /// Stops the tone (returns at once; the thread ends within a frame).
    pub fn stop(&mut self) {
        if let Some(p) = self.playing.take() {
            p.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Ringer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plays the tone on the opened speaker until `stop` is set.
fn play(
    open: &SpeakerOpener,
    device: Option<&str>,
    volume: f32,
    stop: &AtomicBool,
) -> Result<(), AudioError> {
    let mut sink = open(device, RING_RATE)?;
    let rate = sink.sample_rate();
    let mut frame = vec![0i16; frame_samples(rate)];
    let frame_time = Duration::from_millis(20);
    let started = Instant::now();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        ring_tone(rate, u64::from(n) * frame.len() as u64, volume, &mut frame);
        sink.write_frame(&frame)?;
        n = n.saturating_add(1);
        let due = started + frame_time * n;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A speaker that records what it was given.
    struct Recorder(Arc<Mutex<Vec<i16>>>);

    impl AudioSink for Recorder {
        fn write_frame(&mut self, frame: &[i16]) -> Result<(), AudioError> {
            self.0.lock().unwrap().extend_from_slice(frame);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), AudioError> {
            Ok(())
        }
    }

    type Shared<T> = Arc<Mutex<Vec<T>>>;

    /// A ringer whose speaker records samples, and the names it opened.
    fn recording() -> (Ringer, Shared<i16>, Shared<Option<String>>) {
        let played = Arc::new(Mutex::new(Vec::new()));
        let opened = Arc::new(Mutex::new(Vec::new()));
        let (p, o) = (played.clone(), opened.clone());
        let ringer = Ringer::with_opener(Arc::new(move |name, _rate| {
            o.lock().unwrap().push(name.map(str::to_string));
            Ok(Box::new(Recorder(p.clone())) as Box<dyn AudioSink>)
        }));
        (ringer, played, opened)
    }

    fn peak(s: &[i16]) -> i16 {
        s.iter().map(|v| v.saturating_abs()).max().unwrap_or(0)
    }

    #[test]
    fn the_tone_follows_the_cadence_and_the_volume() {
        let mut on = vec![0i16; 8000];
        ring_tone(8000, 0, 1.0, &mut on);
        assert!(peak(&on) > 14_000, "{}", peak(&on));
        assert!(peak(&on) <= i16::MAX / 2 + 1);
        let mut quiet = vec![0i16; 8000];
        ring_tone(8000, 0, 0.25, &mut quiet);
        let ratio = f64::from(peak(&quiet)) / f64::from(peak(&on));
        assert!((ratio - 0.25).abs() < 0.02, "{ratio}");
        // Seconds 2 to 6 of each period are silent; second 6 rings again.
        let mut off = vec![1i16; 8000];
        ring_tone(8000, 3 * 8000, 1.0, &mut off);
        assert!(off.iter().all(|&s| s == 0));
        let mut again = vec![0i16; 800];
        ring_tone(8000, 6 * 8000, 1.0, &mut again);
        assert!(peak(&again) > 10_000);
        // Out-of-range volumes are clamped, never overflow.
        let mut loud = vec![0i16; 800];
        ring_tone(8000, 0, 7.0, &mut loud);
        assert_eq!(peak(&loud), peak(&on[..800]));
    }

    #[test]
    fn rings_on_the_chosen_speaker_until_stopped() {
        let (mut ringer, played, opened) = recording();
        ringer.set(true, Some("USB Headset"), 0.8);
        assert!(ringer.is_ringing());
        std::thread::sleep(Duration::from_millis(120));
        // Asked again every frame: still one tone.
        ringer.set(true, Some("USB Headset"), 0.8);
        let thread_of = |r: &mut Ringer| r.playing.as_ref().map(|p| p.thread.thread().id());
        let running = thread_of(&mut ringer);
        ringer.set(false, Some("USB Headset"), 0.8);
        assert!(!ringer.is_ringing());
        assert!(running.is_some());
        // The thread notices within a frame; give a loaded machine time.
        std::thread::sleep(Duration::from_millis(200));
        let n = played.lock().unwrap().len();
        assert!(n >= 2 * 160, "{n} samples");
        assert!(peak(&played.lock().unwrap()) > 10_000);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(played.lock().unwrap().len(), n, "no sound after stop");
        assert_eq!(*opened.lock().unwrap(), [Some("USB Headset".to_string())]);
    }

    #[test]
    fn a_waiting_call_rings_softly() {
        assert_eq!(ring_volume(0.8, false), 0.8);
        assert!((ring_volume(0.8, true) - 0.2).abs() < 1e-6);
        let (mut loud, mut soft) = (vec![0i16; 800], vec![0i16; 800]);
        ring_tone(8000, 0, ring_volume(1.0, false), &mut loud);
        ring_tone(8000, 0, ring_volume(1.0, true), &mut soft);
        let ratio = f64::from(peak(&soft)) / f64::from(peak(&loud));
        assert!((ratio - 0.25).abs() < 0.02, "{ratio}");
    }

    #[test]
    fn volume_zero_opens_nothing_and_a_missing_speaker_is_no_error() {
        let (mut ringer, _, opened) = recording();
        ringer.set(true, None, 0.0);
        assert!(!ringer.is_ringing());
        assert!(opened.lock().unwrap().is_empty());
        let mut broken = Ringer::with_opener(Arc::new(|_, _| Err(AudioError::NotBuilt)));
        broken.set(true, None, 1.0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while broken.is_ringing() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!broken.is_ringing(), "the thread ended quietly");
        broken.set(false, None, 1.0);
    }
}
