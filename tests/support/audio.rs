//! WAV files of test signals.

use ibephone::media::audio::{AudioSink, WavSink};
use std::path::Path;

/// Writes `signal` (8 kHz mono) to `path` as 20 ms frames, the last one
/// padded with silence.
pub fn write_wav(path: &Path, signal: &[i16]) {
    let mut w = WavSink::create(path).unwrap();
    for f in signal.chunks(160) {
        let mut frame = f.to_vec();
        frame.resize(160, 0);
        w.write_frame(&frame).unwrap();
    }
    w.finish().unwrap();
}
