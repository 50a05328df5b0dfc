//! Fuzzes the RTP jitter buffer with arbitrary arrival patterns: the input
//! is a list of operations (push a frame with any sequence number and
//! timestamp after some delay, pop a playout tick, change the clock rate,
//! reset); none may panic, and playout never hands out more frames than
//! were pushed.
#![no_main]

use ibephone::media::jitter::{JitterBuffer, Playout};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&delays, mut ops)) = data.split_first() else {
        return;
    };
    let min = Duration::from_millis(u64::from(delays & 0x0f) * 10);
    let max = Duration::from_millis(u64::from(delays >> 4) * 40);
    let mut jb = JitterBuffer::new(min, max);
    let mut now = Instant::now();
    let (mut pushed, mut played) = (0usize, 0usize);
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 4 {
            0 | 1 => {
                let Some((head, rest)) = ops.split_first_chunk::<8>() else {
                    return;
                };
                ops = rest;
                now += Duration::from_millis(u64::from(head[0]));
                let seq = u16::from_be_bytes([head[1], head[2]]);
                let ts = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
                jb.push(now, seq, ts, vec![head[7]; usize::from(head[7] % 16)]);
                pushed += 1;
            }
            2 => {
                now += Duration::from_millis(u64::from(op >> 2));
                if let Playout::Frame(_) = jb.pop(now) {
                    played += 1;
                }
                assert!(played <= pushed, "played {played} of {pushed} frames");
            }
            _ => {
                if op & 0x80 != 0 {
                    jb.reset();
                } else {
                    jb.set_clock_rate(u32::from(op) * 1000);
                }
            }
        }
    }
    let _ = (jb.target_delay(), jb.jitter());
    let _ = (jb.stats().mean_delay(), jb.stats().p99_delay());
});
