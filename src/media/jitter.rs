//! Adaptive jitter buffer with packet-loss concealment, sans-I/O: the
//! caller passes `now` to [`JitterBuffer::push`] and [`JitterBuffer::pop`]
//! and calls `pop` once per 20 ms playout tick.
//!
//! Adaptation: the target delay is one frame plus four times the RFC 3550
//! interarrival jitter estimate, within `[min_delay, max_delay]`.
//! - When the next frame is missing and nothing later is due yet, playout
//!   stalls for one frame (concealed), which grows the delay: this absorbs
//!   jitter bursts, reordering and a sender clock slower than ours.
//! - When the oldest waiting frame has waited more than the target plus two
//!   frames, it is skipped, which shrinks the delay: this absorbs a sender
//!   clock faster than ours and ends the extra delay of a past burst.
//! - A stalled tick gives [`Playout::Missing`]: the codec conceals it
//!   (`super::codec::Decoder::conceal`: a fade for G.711, FEC or the
//!   decoder's loss concealment for Opus), so the buffer holds payloads,
//!   not samples, and decoding follows playout order. When a later frame
//!   becomes due, the missing ones are declared lost (their time was
//!   already covered by the stalls) and playout resumes with it.
//!
//! Arrival jitter is measured in RTP timestamp units of the codec's clock
//! ([`JitterBuffer::set_clock_rate`], 8 kHz unless told).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// One frame's duration.
pub const FRAME: Duration = Duration::from_millis(20);
const MAX_FRAMES: usize = 50;

/// What to play at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Nothing received yet (or after a reset): silence.
    Idle,
    /// The payload of the next frame.
    Frame(Vec<u8>),
    /// The next frame is missing (lost, or not here yet): conceal it.
    Missing {
        /// The payload of the frame after it, when it has arrived
        /// already (Opus rebuilds the missing one from its FEC data).
        next: Option<Vec<u8>>,
    },
}

/// What happened to the frames so far.
#[derive(Clone, Default, PartialEq)]
pub struct JitterStats {
    /// Frames played from received packets.
    pub played: u64,
    /// Frames concealed (lost or not yet arrived).
    pub concealed: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Frames skipped to shrink the delay.
    pub skipped: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Histogram of buffer delay (arrival to playout) in ms, last bucket open.
    pub delay_hist_ms: Vec<u64>,
}

impl std::fmt::Debug for JitterStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The 1001-bucket histogram is summarised, not printed.
        f.debug_struct("JitterStats")
            .field("played", &self.played)
            .field("concealed", &self.concealed)
            .field("late", &self.late)
            .field("skipped", &self.skipped)
            .field("duplicates", &self.duplicates)
            .field("mean_delay", &self.mean_delay())
            .field("p99_delay", &self.p99_delay())
            .finish()
    }
}

impl JitterStats {
    /// Mean buffer delay of played frames.
    pub fn mean_delay(&self) -> Duration {
        let n: u64 = self.delay_hist_ms.iter().sum();
        if n == 0 {
            return Duration::ZERO;
        }
        let sum: u64 = self
            .delay_hist_ms
            .iter()
            .enumerate()
            .map(|(ms, c)| ms as u64 * c)
            .sum();
        Duration::from_micros(sum * 1000 / n)
    }

    /// The 99th percentile of the buffer delay of played frames.
    pub fn p99_delay(&self) -> Duration {
        let n: u64 = self.delay_hist_ms.iter().sum();
        let want = n.saturating_mul(99).div_ceil(100);
        let mut acc = 0;
        for (ms, c) in self.delay_hist_ms.iter().enumerate() {
            acc += c;
            if acc >= want && n > 0 {
                return Duration::from_millis(ms as u64);
            }
        }
        Duration::ZERO
    }
}

/// The adaptive jitter buffer of one received stream.
#[derive(Debug)]
pub struct JitterBuffer {
    min_delay: Duration,
    max_delay: Duration,
    frames: BTreeMap<i64, (Instant, Vec<u8>)>,
    last_seq: Option<(u16, i64)>,
    next: Option<i64>,
    base: Option<Instant>,
    last_transit: Option<f64>,
    jitter: f64,
    clock_rate: f64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer whose target delay stays within `[min_delay, max_delay]`.
    pub fn new(min_delay: Duration, max_delay: Duration) -> Self {
        JitterBuffer {
            min_delay,
            max_delay: max_delay.max(min_delay),
            frames: BTreeMap::new(),
            last_seq: None,
            next: None,
            base: None,
            last_transit: None,
            jitter: 0.0,
            clock_rate: 8000.0,
            stats: JitterStats {
                delay_hist_ms: vec![0; 1001],
                ..Default::default()
            },
        }
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        (FRAME + Duration::from_secs_f64(4.0 * self.jitter)).clamp(self.min_delay, self.max_delay)
    }

    /// The interarrival jitter estimate (RFC 3550 6.4.1).
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// Statistics so far.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Sets the RTP clock rate of the stream (a new codec) and starts afresh.
    pub fn set_clock_rate(&mut self, hz: u32) {
        self.clock_rate = f64::from(hz.max(1));
        self.reset();
    }

    /// Forgets the stream (new SSRC): the next packet starts afresh.
    pub fn reset(&mut self) {
        self.frames.clear();
        self.last_seq = None;
        self.next = None;
        self.last_transit = None;
    }

    /// Adds the payload of a 20 ms frame that arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: Vec<u8>) {
        let ext = match self.last_seq {
            None => 1 << 32,
            Some((s, e)) => e + i64::from(seq.wrapping_sub(s) as i16),
        };
        if self.last_seq.is_none_or(|(_, e)| ext > e) {
            self.last_seq = Some((seq, ext));
        }
        let base = *self.base.get_or_insert(now);
        let transit =
            now.duration_since(base).as_secs_f64() - f64::from(timestamp) / self.clock_rate;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs();
            // Timestamp jumps (a new talk spurt, a DTMF gap) are not jitter.
            if d < 1.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        if self.next.is_some_and(|n| ext < n) {
            self.stats.late += 1;
            return;
        }
        if self.frames.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.frames.insert(ext, (now, payload));
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
            self.stats.skipped += 1;
        }
    }

    /// What to play at this tick.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let target = self.target_delay();
        let waited = |t: Instant| now.saturating_duration_since(t);
        let next = match self.next {
            Some(n) => n,
            None => match self.frames.first_key_value() {
                Some((&k, (t, _))) if waited(*t) + FRAME / 2 >= target => k,
                _ => return Playout::Idle,
            },
        };
        // Shrink: skip frames that waited far longer than the target.
        let mut next = next;
        while self.frames.len() > 1 {
            match self.frames.first_key_value() {
                Some((&k, (t, _))) if k <= next && waited(*t) > target + 2 * FRAME => {
                    self.frames.pop_first();
                    self.stats.skipped += 1;
                    next = k + 1;
                }
                _ => break,
            }
        }
        // Frames before `next` can only be left by a skip above.
        while self
            .frames
            .first_key_value()
            .is_some_and(|(&k, _)| k < next)
        {
            self.frames.pop_first();
        }
        // Missing: the frames before a later one that is already due are
        // lost (their time was covered by stalls); else stall one frame.
        if !self.frames.contains_key(&next) {
            let due = self
                .frames
                .first_key_value()
                .filter(|(_, (t, _))| waited(*t) + FRAME / 2 >= target)
                .map(|(&k, _)| k);
            match due {
                Some(k) => next = k,
                None => {
                    self.next = Some(next);
                    return self.missing(next);
                }
            }
        }
        let Some((arrived, payload)) = self.frames.remove(&next) else {
            return self.missing(next);
        };
        self.next = Some(next + 1);
        let ms = waited(arrived).as_millis().min(1000) as usize;
        if let Some(b) = self.stats.delay_hist_ms.get_mut(ms) {
            *b += 1;
        }
        self.stats.played += 1;
        Playout::Frame(payload)
    }

    fn missing(&mut self, at: i64) -> Playout {
        self.stats.concealed += 1;
        Playout::Missing {
            next: self.frames.get(&(at + 1)).map(|(_, p)| p.clone()),
        }
    }
}

#[cfg(test)]
#[path = "jitter_tests.rs"]
mod tests;
