//! The `ibesip-seq` replay window of spec 5.3: a (direction, seq) already
//! accepted, or older than 64 entries behind the newest, is refused.
//!
//! Written by hand (40 lines) rather than taken from `webrtc-util`: its
//! detector couples checking and accepting in one call, while the tunnel
//! must check before the message is fully verified and accept only after,
//! so that a failed check changes no state. The logic is property-tested.

/// Window width.
pub(crate) const WINDOW: u64 = 64;

/// A sliding window of accepted sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    newest: Option<u64>,
    /// Bit i set: `newest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` would be accepted (no state change).
    pub(crate) fn check(&self, seq: u64) -> bool {
        match self.newest {
            None => true,
            Some(n) if seq > n => true,
            Some(n) => {
                let age = n - seq;
                age < WINDOW && self.seen & (1u64 << age) == 0
            }
        }
    }

    /// Records `seq` as accepted; call only after [`ReplayWindow::check`]
    /// and full verification.
    pub(crate) fn accept(&mut self, seq: u64) {
        match self.newest {
            Some(n) if seq <= n => self.seen |= 1u64 << (n - seq),
            Some(n) => {
                let shift = seq - n;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.newest = Some(seq);
            }
            None => {
                self.seen = 1;
                self.newest = Some(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn basics() {
        let mut w = ReplayWindow::default();
        assert!(w.check(0));
        w.accept(0);
        assert!(!w.check(0));
        assert!(w.check(5));
        w.accept(5);
        assert!(w.check(3));
        w.accept(100);
        assert!(!w.check(100 - 64));
        assert!(w.check(100 - 63));
        assert!(!w.check(5));
    }

    proptest! {
        /// Against a model: accept iff never accepted and within 64 of the
        /// newest accepted.
        #[test]
        fn matches_model(seqs in proptest::collection::vec(0u64..300, 0..200)) {
            let mut w = ReplayWindow::default();
            let mut accepted = HashSet::new();
            let mut newest: Option<u64> = None;
            for s in seqs {
                let model = !accepted.contains(&s) && newest.is_none_or(|n| s > n || n - s < WINDOW);
                prop_assert_eq!(w.check(s), model);
                if model {
                    w.accept(s);
                    accepted.insert(s);
                    newest = Some(newest.map_or(s, |n| n.max(s)));
                }
            }
        }
    }
}
