//! RFC 3261 timer values (section 17 and table 4).
//!
//! Only durations live here; deadlines are `now + duration` computed by the
//! transactions from the `now` they are given, so tests drive them with a
//! fake clock.

use std::time::Duration;

/// The three base values from which timers A-K derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer A initial value (INVITE request retransmit, doubles).
    pub fn a(&self) -> Duration {
        self.t1
    }
    /// Timer B (INVITE transaction timeout): 64*T1.
    pub fn b(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D (wait for response retransmits): 32 s for unreliable transports.
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1 * 64)
        }
    }
    /// Timer E initial value (non-INVITE request retransmit, capped at T2).
    pub fn e(&self) -> Duration {
        self.t1
    }
    /// Timer F (non-INVITE transaction timeout): 64*T1.
    pub fn f(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer G initial value (INVITE response retransmit, capped at T2).
    pub fn g(&self) -> Duration {
        self.t1
    }
    /// Timer H (wait for ACK receipt): 64*T1.
    pub fn h(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer I (wait for ACK retransmits): T4, zero on reliable transports.
    pub fn i(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
    /// Timer J (wait for non-INVITE request retransmits): 64*T1, zero on
    /// reliable transports.
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1 * 64
        }
    }
    /// Timer K (wait for response retransmits): T4, zero on reliable transports.
    pub fn k(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
}
