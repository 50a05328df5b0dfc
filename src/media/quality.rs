//! Comparing a recording with its source: the measure behind the
//! end-to-end tests and the media bench (speech quality through a call,
//! and mouth-to-ear latency as the offset of the best cross-correlation).

const RATE: f64 = 8000.0;

/// A deterministic speech-like test signal: a 200-3400 Hz chirp plus
/// pseudo-random noise under a 3 Hz syllable envelope. The noise gives
/// every window one unambiguous correlation peak, whatever the length.
pub fn test_signal(secs: f64) -> Vec<i16> {
    let n = (secs * RATE) as usize;
    let (f0, f1) = (200.0, 3400.0);
    let mut lcg: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE;
            let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * secs));
            let env = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * 3.0 * t).cos());
            lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((lcg >> 16) as u16) / 32768.0 - 1.0;
            (env * (9000.0 * phase.sin() + 4000.0 * noise)) as i16
        })
        .collect()
}

/// Σ a·b, Σ a² and Σ b² over the common length of `a` and `b`, summed
/// in index order. An index loop, not iterator adapters: it is the
/// innermost loop of the audio tests' analysis, and in a dev build whose
/// dependencies are at opt-level 0 (Cargo.toml) rustc links `Range::next`
/// and friends to those crates' unoptimised copies instead of inlining
/// them (shared generics), which doubled the audio suite's CPU time.
fn products(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < n {
        let (p, q) = (a[i], b[i]);
        ab += p * q;
        aa += p * p;
        bb += q * q;
        i += 1;
    }
    (ab, aa, bb)
}

/// Best lag of `x` in `y` (within `lags`) by normalised cross-correlation;
/// returns (ρ, lag, SNR dB after the best gain).
pub fn best_lag(x: &[f64], y: &[f64], lags: std::ops::Range<usize>) -> (f64, usize, f64) {
    let mut best = (f64::MIN, 0usize);
    for lag in lags.start..lags.end.min(y.len()) {
        let (xy, xx, yy) = products(x, &y[lag..]);
        let rho = if xx > 0.0 && yy > 0.0 {
            xy / (xx * yy).sqrt()
        } else {
            0.0
        };
        if rho > best.0 {
            best = (rho, lag);
        }
    }
    let lag = best.1;
    let n = x.len().min(y.len().saturating_sub(lag));
    let xy: f64 = (0..n).map(|i| x[i] * y[i + lag]).sum();
    let xx: f64 = (0..n).map(|i| x[i] * x[i]).sum();
    let g = if xx > 0.0 { xy / xx } else { 0.0 };
    let err: f64 = (0..n).map(|i| (y[i + lag] - g * x[i]).powi(2)).sum();
    let sig: f64 = (0..n).map(|i| (g * x[i]).powi(2)).sum();
    (best.0, lag, 10.0 * (sig / err.max(1e-9)).log10())
}

/// Compares the recording with the source in 200 ms windows, each at its
/// own best lag within `max_lag` (the jitter buffer legitimately moves
/// playout by whole frames when it stalls or skips, which would wreck a
/// single global alignment of a chirp). Returns the energy-weighted mean ρ,
/// the SNR over all windows, and the median lag in samples (the latency).
pub fn compare(src: &[i16], rec: &[i16], max_lag: usize) -> (f64, usize, f64) {
    let x: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = rec.iter().map(|&v| f64::from(v)).collect();
    let (mut wsum, mut rho_sum, mut sig, mut err) = (0.0, 0.0, 0.0, 0.0);
    let mut lags = Vec::new();
    for start in (0..x.len()).step_by(1600) {
        let w = &x[start..(start + 1600).min(x.len())];
        let e: f64 = w.iter().map(|v| v * v).sum();
        if e < 1e3 * w.len() as f64 {
            continue;
        }
        let (rho, lag, snr) = best_lag(w, y.get(start..).unwrap_or_default(), 0..max_lag);
        wsum += e;
        rho_sum += e * rho;
        let s = e;
        sig += s;
        err += s / 10f64.powf(snr / 10.0);
        lags.push(lag);
    }
    lags.sort_unstable();
    let median = lags.get(lags.len() / 2).copied().unwrap_or(0);
    (
        rho_sum / wsum.max(1.0),
        median,
        10.0 * (sig / err.max(1e-9)).log10(),
    )
}

/// Compares the loudness envelopes of recording and source: the RMS of
/// each `window` samples, the recording shifted by its best whole-window
/// lag (up to `max_lag` windows), and the correlation of the two
/// envelopes. For codecs that are not waveform-exact (Opus codes the
/// noise-like parts of speech by their spectrum, not their samples), this
/// says whether the syllables came through where waveform correlation
/// undersells it. Returns (correlation, lag in windows).
pub fn envelope_match(src: &[i16], rec: &[i16], window: usize, max_lag: usize) -> (f64, usize) {
    let env = |s: &[i16]| -> Vec<f64> {
        s.chunks(window.max(1))
            .map(|w| (w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
            .collect()
    };
    let (x, y) = (env(src), env(rec));
    let mut best = (f64::MIN, 0);
    for lag in 0..=max_lag.min(y.len()) {
        let n = x.len().min(y.len() - lag);
        if n < 2 {
            break;
        }
        let (a, b) = (&x[..n], &y[lag..lag + n]);
        let (ma, mb) = (
            a.iter().sum::<f64>() / n as f64,
            b.iter().sum::<f64>() / n as f64,
        );
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (p, q) in a.iter().zip(b) {
            ab += (p - ma) * (q - mb);
            aa += (p - ma).powi(2);
            bb += (q - mb).powi(2);
        }
        let r = if aa > 0.0 && bb > 0.0 {
            ab / (aa * bb).sqrt()
        } else {
            0.0
        };
        if r > best.0 {
            best = (r, lag);
        }
    }
    best
}

/// A simulated loudspeaker-to-microphone path, for echo-cancellation
/// tests and benches: the far end's signal delayed, low-pass filtered
/// (one pole: a small speaker and the room lose the highs) and attenuated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPath {
    /// Sample rate of the signals, Hz.
    pub rate: u32,
    /// Delay from the speaker's frame to its echo in the microphone, ms.
    pub delay_ms: f64,
    /// Corner frequency of the one-pole low-pass, Hz.
    pub cutoff_hz: f64,
    /// Gain of the path, dB (negative: the echo is quieter than the far end).
    pub gain_db: f64,
}

impl EchoPath {
    /// The echo path every test and bench of echo cancellation uses: a
    /// laptop's speaker and microphone, 40 ms apart, a 3 kHz low-pass and
    /// -6 dB, at `rate`.
    pub fn laptop(rate: u32) -> Self {
        EchoPath {
            rate,
            delay_ms: 40.0,
            cutoff_hz: 3000.0,
            gain_db: -6.0,
        }
    }

    /// The echo of `far` as the microphone hears it (same length).
    pub fn echo(&self, far: &[i16]) -> Vec<f64> {
        let rate = f64::from(self.rate.max(1));
        let delay = (self.delay_ms * rate / 1000.0).round() as usize;
        let alpha = 1.0 - (-2.0 * std::f64::consts::PI * self.cutoff_hz / rate).exp();
        let gain = 10f64.powf(self.gain_db / 20.0);
        let mut y = 0.0;
        (0..far.len())
            .map(|i| {
                let x = i
                    .checked_sub(delay)
                    .and_then(|j| far.get(j))
                    .map_or(0.0, |&v| f64::from(v));
                y += alpha * (x - y);
                gain * y
            })
            .collect()
    }

    /// The microphone's signal: the echo of `far` plus `near` (the local
    /// talker, shorter or as long), clipped to 16 bits.
    pub fn microphone(&self, far: &[i16], near: &[i16]) -> Vec<i16> {
        self.echo(far)
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = near.get(i).map_or(0.0, |&v| f64::from(v));
                (e + n).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }
}

/// How well `rec` keeps `src` when `rec` is `src` processed with a fixed
/// delay (of at most `max_delay` samples) plus whatever else was added or
/// removed: the delay of the best cross-correlation over the whole
/// signal, then the energy-weighted ρ of [`compare`]'s windows at that
/// delay (each window free to move by 1 ms at 48 kHz). One delay for all
/// windows: per-window lags over a wide range would lock voiced windows
/// onto other pitch periods. Returns (ρ, delay in samples).
pub fn delayed_match(src: &[i16], rec: &[i16], max_delay: usize) -> (f64, usize) {
    let x: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = rec.iter().map(|&v| f64::from(v)).collect();
    let (_, delay, _) = best_lag(&x, &y, 0..max_delay);
    let n = src.len().min(rec.len().saturating_sub(delay));
    let (rho, _, _) = compare(&src[..n], &rec[delay..delay + n], 48);
    (rho, delay)
}

/// Echo return loss enhancement, dB: how much quieter the canceller's
/// output `out` is than its input `mic` over a stretch where only the far
/// end talks (so all of `mic` is echo). 0 dB: nothing removed.
pub fn erle_db(mic: &[i16], out: &[i16]) -> f64 {
    let power = |s: &[i16]| s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
    let n = mic.len().min(out.len());
    let (p_in, p_out) = (power(&mic[..n]), power(&out[..n]));
    10.0 * (p_in.max(1.0) / p_out.max(1.0)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_match_finds_the_lag_and_tells_noise_from_speech() {
        let s = test_signal(2.0);
        let mut delayed = vec![0i16; 240];
        delayed.extend(s.iter().map(|&v| v / 2));
        let (r, lag) = envelope_match(&s, &delayed, 80, 10);
        assert!(r > 0.99, "{r}");
        assert_eq!(lag, 3);
        // A steady noise has none of the syllable envelope.
        let mut lcg: u32 = 7;
        let noise: Vec<i16> = (0..s.len())
            .map(|_| {
                lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((lcg >> 16) as i16) / 4
            })
            .collect();
        assert!(envelope_match(&s, &noise, 80, 10).0 < 0.5);
    }

    #[test]
    fn the_echo_path_delays_filters_and_attenuates() {
        let path = EchoPath::laptop(48_000);
        let mut far = vec![0i16; 4800];
        far[100] = 10_000;
        let echo = path.echo(&far);
        // Nothing before the impulse's delayed arrival, a peak at it.
        assert!(echo[..100 + 1920].iter().all(|&v| v == 0.0));
        let peak = echo
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(peak, Some(100 + 1920));
        assert!(echo[2020] < 10_000.0 * 0.5 && echo[2020] > 0.0);
        // A steady low tone passes at the path's gain.
        let tone: Vec<i16> = (0..48_000)
            .map(|i| {
                (8000.0 * (i as f64 * 2.0 * std::f64::consts::PI * 100.0 / 48_000.0).sin()) as i16
            })
            .collect();
        let mic = path.microphone(&tone, &[]);
        let db = erle_db(&tone[4800..], &mic[4800..]);
        assert!((db - 6.0).abs() < 0.5, "{db}");
        assert_eq!(erle_db(&tone, &tone), 0.0);
        // A delayed, halved copy plus a little noise matches at its delay.
        let s = test_signal(1.0);
        let mut late = vec![0i16; 37];
        late.extend(
            s.iter()
                .enumerate()
                .map(|(i, &v)| v / 2 + (i % 7) as i16 * 20),
        );
        let (rho, delay) = delayed_match(&s, &late, 100);
        assert_eq!(delay, 37);
        assert!(rho > 0.95, "{rho}");
        assert!(delayed_match(&s, &vec![0; s.len()], 100).0 < 0.1);
    }
}
