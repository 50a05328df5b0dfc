//! Where the tunnel's randomness comes from: the operating system in
//! production, or a deterministic, recorded source for known-answer files
//! (so that a vector can list every random value it used, by name).

use sha2::{Digest, Sha256};

/// A source of random bytes; `what` names the value (e.g. `"cek"`).
pub trait RandomSource: Send {
    /// Fills `buf`; fails only when the operating system's generator does.
    fn fill(&mut self, what: &'static str, buf: &mut [u8]) -> Result<(), getrandom::Error>;
}

/// The operating system's generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, _what: &'static str, buf: &mut [u8]) -> Result<(), getrandom::Error> {
        getrandom::fill(buf)
    }
}

/// Deterministic bytes from a seed, recording each value drawn. For
/// known-answer vectors and tests only: it is not random.
#[derive(Debug, Clone)]
pub struct RecordedRandom {
    seed: Vec<u8>,
    counter: u64,
    /// Every value drawn, in order: (name, bytes).
    pub drawn: Vec<(&'static str, Vec<u8>)>,
}

impl RecordedRandom {
    /// A source for `seed`.
    pub fn new(seed: &[u8]) -> Self {
        RecordedRandom {
            seed: seed.to_vec(),
            counter: 0,
            drawn: Vec::new(),
        }
    }

    /// Takes the values drawn since the last call.
    pub fn take(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        std::mem::take(&mut self.drawn)
    }
}

impl RandomSource for RecordedRandom {
    fn fill(&mut self, what: &'static str, buf: &mut [u8]) -> Result<(), getrandom::Error> {
        let mut filled = 0;
        while filled < buf.len() {
            let block = Sha256::new()
                .chain_update(&self.seed)
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter += 1;
            let n = (buf.len() - filled).min(32);
            buf[filled..filled + n].copy_from_slice(&block[..n]);
            filled += n;
        }
        self.drawn.push((what, buf.to_vec()));
        Ok(())
    }
}
