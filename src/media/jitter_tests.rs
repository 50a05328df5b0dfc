use super::*;

/// The payload of packet `i`: its index + 1.
fn payload(i: usize) -> Vec<u8> {
    (i as u16 + 1).to_be_bytes().to_vec()
}

/// What a tick played: the packet's index + 1, 0 for silence or a missing
/// frame.
fn value(p: &Playout) -> i16 {
    match p {
        Playout::Frame(b) => i16::from_be_bytes([b[0], b[1]]),
        _ => 0,
    }
}

/// Runs a fake-time simulation: packet `i` (sequence `i`, timestamp
/// `160 * i`) arrives at `arrival(i)` ms (or never if `None`); playout ticks
/// every `tick_ms` from 5 ms on. Returns the buffer and every tick's playout.
fn simulate_playout(
    n: usize,
    tick_ms: f64,
    arrival: impl Fn(usize) -> Option<f64>,
) -> (JitterBuffer, Vec<Playout>) {
    let t0 = Instant::now();
    let at = |ms: f64| t0 + Duration::from_secs_f64(ms / 1000.0);
    let mut jb = JitterBuffer::new(Duration::from_millis(20), Duration::from_millis(200));
    let mut arrivals: Vec<(f64, usize)> =
        (0..n).filter_map(|i| arrival(i).map(|t| (t, i))).collect();
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut k = 0;
    let end = arrivals.last().map_or(0.0, |a| a.0) + 500.0;
    let mut tick = 5.0;
    while tick < end {
        while k < arrivals.len() && arrivals[k].0 <= tick {
            let (t, i) = arrivals[k];
            jb.push(at(t), i as u16, (i * 160) as u32, payload(i));
            k += 1;
        }
        out.push(jb.pop(at(tick)));
        tick += tick_ms;
    }
    (jb, out)
}

/// [`simulate_playout`], each tick as its [`value`].
fn simulate(
    n: usize,
    tick_ms: f64,
    arrival: impl Fn(usize) -> Option<f64>,
) -> (JitterBuffer, Vec<i16>) {
    let (jb, out) = simulate_playout(n, tick_ms, arrival);
    (jb, out.iter().map(value).collect())
}

fn played_in_order(out: &[i16]) -> Vec<i16> {
    // Missing frames play as 0: keep only new values.
    let mut seen = Vec::new();
    for &v in out {
        if v > 0 && seen.last().is_none_or(|&l| v > l) {
            seen.push(v);
        }
    }
    seen
}

#[test]
fn steady_stream_plays_everything_with_small_delay() {
    let (jb, out) = simulate(200, 20.0, |i| Some(i as f64 * 20.0));
    let s = jb.stats();
    assert_eq!(s.played, 200);
    assert_eq!(s.late, 0);
    assert_eq!(played_in_order(&out).len(), 200);
    assert!(
        s.p99_delay() <= Duration::from_millis(40),
        "{:?}",
        s.p99_delay()
    );
}

#[test]
fn reordering_is_absorbed() {
    // Every pair is swapped: 1 0 3 2 5 4 ... (the even one 25 ms late).
    let (jb, out) = simulate(200, 20.0, |i| {
        Some(i as f64 * 20.0 + if i.is_multiple_of(2) { 25.0 } else { 0.0 })
    });
    let s = jb.stats();
    assert!(s.played >= 197, "{s:?}");
    assert!(s.late <= 3, "{s:?}");
    assert_eq!(played_in_order(&out).len() as u64, s.played);
    assert!(jb.target_delay() > Duration::from_millis(20));
}

#[test]
fn loss_is_reported_missing_with_the_next_packet_when_here() {
    // Packets 50..55 are lost: 5 frames missing, with no next packet (the
    // stall waits for 50, and 51 is lost too). Packet 70 alone is lost:
    // 71 is here at its tick (its FEC data can rebuild frame 70).
    let (jb, out) = simulate_playout(100, 20.0, |i| {
        (!(50..55).contains(&i) && i != 70).then_some(i as f64 * 20.0)
    });
    let s = jb.stats();
    assert_eq!(s.played, 94);
    let at = out.iter().position(|p| value(p) == 70).unwrap();
    assert_eq!(
        &out[at..at + 3],
        &[
            Playout::Frame(payload(69)),
            Playout::Missing {
                next: Some(payload(71))
            },
            Playout::Frame(payload(71)),
        ]
    );
    let start = out.iter().position(|p| value(p) == 50).unwrap();
    let missing = |next: Option<Vec<u8>>| Playout::Missing { next };
    assert_eq!(
        &out[start..start + 7],
        &[
            Playout::Frame(payload(49)),
            missing(None),
            missing(None),
            missing(None),
            missing(None),
            missing(None),
            Playout::Frame(payload(55)),
        ]
    );
    assert_eq!(out[0], Playout::Idle, "silence before the first frame");
}

#[test]
fn clock_rate_scales_the_jitter_estimate() {
    // The same arrivals with 48 kHz timestamps (960 per frame) measure no
    // jitter once the buffer knows the clock; at 8 kHz they would look
    // like a stream six times too fast.
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(Duration::from_millis(20), Duration::from_millis(200));
    jb.set_clock_rate(48_000);
    for i in 0..100u32 {
        let t = t0 + FRAME * i;
        jb.push(t, i as u16, i * 960, payload(i as usize));
        jb.pop(t + Duration::from_millis(5));
    }
    assert!(
        jb.jitter() < Duration::from_micros(100),
        "{:?}",
        jb.jitter()
    );
    assert!(jb.stats().played >= 98);
}

#[test]
fn late_packets_are_dropped_and_counted() {
    // Packet 30 arrives 300 ms late, after packet 31 was played.
    let (jb, _) = simulate(100, 20.0, |i| {
        Some(i as f64 * 20.0 + if i == 30 { 300.0 } else { 0.0 })
    });
    let s = jb.stats();
    assert_eq!(s.late, 1);
    assert_eq!(s.played, 99);
}

#[test]
fn jitter_raises_the_target_delay() {
    // Deterministic pseudo-random 0..60 ms network delay.
    let delay = |i: usize| ((i * 7919) % 61) as f64;
    let (jb, _) = simulate(500, 20.0, |i| Some(i as f64 * 20.0 + delay(i)));
    let s = jb.stats();
    assert!(jb.jitter() > Duration::from_millis(5), "{:?}", jb.jitter());
    assert!(jb.target_delay() >= Duration::from_millis(40));
    assert!(s.played >= 480, "{s:?}");
    assert!(s.p99_delay() <= Duration::from_millis(200));
}

#[test]
fn fast_sender_clock_keeps_the_delay_bounded() {
    // The sender's 20 ms are our 19.6 ms (2% drift): frames are skipped.
    let (jb, _) = simulate(1500, 20.0, |i| Some(i as f64 * 19.6));
    let s = jb.stats();
    assert!(s.skipped > 0, "{s:?}");
    assert!(
        s.p99_delay() <= Duration::from_millis(100),
        "{:?}",
        s.p99_delay()
    );
    assert!(s.played >= 1400);
}

#[test]
fn slow_sender_clock_stalls_without_losing_frames() {
    let (jb, out) = simulate(1500, 20.0, |i| Some(i as f64 * 20.4));
    let s = jb.stats();
    assert_eq!(s.played, 1500);
    assert_eq!(s.late, 0);
    assert_eq!(played_in_order(&out).len(), 1500);
    assert!(s.concealed >= 20, "stalls fill the gap: {s:?}");
}

#[test]
fn sequence_wraps_around() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(Duration::from_millis(20), Duration::from_millis(200));
    for (k, seq) in (65530u16..=65535).chain(0..6).enumerate() {
        let t = t0 + FRAME * k as u32;
        jb.push(t, seq, k as u32 * 160, payload(k));
        jb.pop(t + Duration::from_millis(5));
    }
    assert_eq!(jb.stats().late, 0);
    assert!(jb.stats().played >= 10);
}

#[test]
fn stats_percentiles() {
    let mut s = JitterStats {
        delay_hist_ms: vec![0; 1001],
        ..Default::default()
    };
    s.delay_hist_ms[10] = 99;
    s.delay_hist_ms[100] = 1;
    assert_eq!(s.p99_delay(), Duration::from_millis(10));
    assert_eq!(s.mean_delay(), Duration::from_micros(10_900));
}
