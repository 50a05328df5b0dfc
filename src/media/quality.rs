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

/// Best lag of `x` in `y` (within `lags`) by normalised cross-correlation;
/// returns (ρ, lag, SNR dB after the best gain).
pub fn best_lag(x: &[f64], y: &[f64], lags: std::ops::Range<usize>) -> (f64, usize, f64) {
    let mut best = (f64::MIN, 0usize);
    for lag in lags.start..lags.end.min(y.len()) {
        let n = x.len().min(y.len() - lag);
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let (a, b) = (x[i], y[i + lag]);
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
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
}
