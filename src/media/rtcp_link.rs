//! RTCP of one call on the wire, sans-I/O: when our compound reports leave
//! (RFC 3550 6.2), how they are protected (SRTCP, RFC 3711 3.4) and what
//! a received RTCP datagram may change. Time and randomness are
//! arguments: the media driver ([`super::session`]) passes the clock and
//! random words in and sends the bytes that come out on the path its RTP
//! takes (socket, ICE pair, TURN channel).
//!
//! Decisions (pinned by the tests below):
//! - RTCP runs only when both sides said `a=rtcp-mux` (RFC 5761,
//!   [`super::sdp::Negotiated::rtcp_mux`]): without it nothing is sent and
//!   every RTCP datagram is dropped unread (we never listen on port + 1).
//! - Intervals: a two-party audio call's RFC 3550 6.2 interval
//!   (members x average RTCP size / 5 % of the session bandwidth) is under
//!   half a second for every codec we have, so the 5 s minimum decides;
//!   each interval is that minimum times a random factor in [0.5, 1.5)
//!   (6.3.5's randomisation, against synchronised reports). The first
//!   report leaves after 1 s times that factor, sooner than 6.2's halved
//!   minimum, so the round trip shows within a few seconds of the answer.
//!   No timer reconsideration: the group never grows past two.
//! - A datagram that fails SRTCP (from another source, bad tag, replay, or
//!   plain RTCP in an encrypted call) or whose reports are malformed is
//!   counted in `dropped` and changes no other figure; RTCP never moves
//!   where we send (latching happens only on authenticated SRTP).

use super::rtcp::{RtcpState, RtcpStats};
use super::srtp::{SrtpChannel, SrtpError};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// RFC 3550 6.2's minimum interval between two reports.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The interval before our first report (before randomisation).
pub(crate) const FIRST_INTERVAL: Duration = Duration::from_secs(1);

/// Why a received RTCP datagram was dropped; a drop changes no figure
/// but `dropped`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub(crate) enum RtcpDrop {
    /// The call did not negotiate rtcp-mux: RTCP is not read.
    #[error("RTCP without rtcp-mux")]
    NotMuxed,
    /// SRTCP refused it (source, tag, replay, or plain in an SRTP call).
    #[error(transparent)]
    Srtcp(#[from] SrtpError),
    /// It authenticated but its reports are malformed.
    #[error(transparent)]
    Rtcp(#[from] super::rtcp::RtcpError),
}

/// A `[0.5, 1.5)` multiple of `base` from a random word (RFC 3550 6.3.5).
fn randomized(base: Duration, random: u32) -> Duration {
    base.mul_f64(0.5 + f64::from(random) / (f64::from(u32::MAX) + 1.0))
}

/// When our next report is due.
#[derive(Debug, Clone)]
pub(crate) struct ReportTimer {
    next: Instant,
}

impl ReportTimer {
    /// The first report is due [`FIRST_INTERVAL`] x [0.5, 1.5) after `now`.
    pub(crate) fn new(now: Instant, random: u32) -> Self {
        ReportTimer {
            next: now + randomized(FIRST_INTERVAL, random),
        }
    }

    /// The instant the next report is due.
    pub(crate) fn due(&self) -> Instant {
        self.next
    }

    /// Whether a report is due at `now`; if so the following one is
    /// scheduled [`MIN_INTERVAL`] x [0.5, 1.5) later.
    pub(crate) fn fire(&mut self, now: Instant, random: u32) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + randomized(MIN_INTERVAL, random);
        true
    }
}

/// One call's RTCP: the statistics ([`RtcpState`]), the report timer and
/// the counters of what went out and what was dropped.
#[derive(Debug, Clone)]
pub(crate) struct RtcpLink {
    state: RtcpState,
    timer: ReportTimer,
    muxed: bool,
    sent: u64,
    dropped: u64,
}

impl RtcpLink {
    /// RTCP for a stream we send as `ssrc` (named `cname` in SDES) at RTP
    /// clock `clock_rate`; `muxed` is the negotiated rtcp-mux. `random`
    /// randomises the first interval.
    pub(crate) fn new(
        ssrc: u32,
        cname: &str,
        clock_rate: u32,
        muxed: bool,
        now: Instant,
        random: u32,
    ) -> Self {
        RtcpLink {
            state: RtcpState::new(ssrc, cname, clock_rate, now),
            timer: ReportTimer::new(now, random),
            muxed,
            sent: 0,
            dropped: 0,
        }
    }

    /// A new offer/answer: whether RTCP runs now, and the codec's clock.
    pub(crate) fn update(&mut self, muxed: bool, clock_rate: u32) {
        self.muxed = muxed;
        self.state.set_clock_rate(clock_rate);
    }

    /// When [`RtcpLink::handle_timeout`] wants to run next; `None` while
    /// RTCP is off (no rtcp-mux).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.muxed.then(|| self.timer.due())
    }

    /// Our next compound report (SR or RR + SDES CNAME), protected by
    /// `channel`, when one is due at `now`; `wall` is only written into the
    /// SR's NTP field, `random` randomises the next interval. The caller
    /// sends it on the path its RTP takes (or drops it when it cannot
    /// send: no pair, no consent).
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        wall: SystemTime,
        random: u32,
        channel: &mut SrtpChannel,
    ) -> Option<Bytes> {
        if !self.muxed || !self.timer.fire(now, random) {
            return None;
        }
        let plain = self.state.build_report(now, wall).ok()?;
        let wire = channel.protect_rtcp(&plain).ok()?;
        self.sent += 1;
        Some(wire)
    }

    /// Takes in one RTCP datagram (RFC 5761 demultiplexed by
    /// [`super::rtcp::is_rtcp`]) from `from` at `now`: authenticated by
    /// `channel` as SRTCP, then its reports feed the statistics. A drop is
    /// counted and changes nothing else.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        channel: &mut SrtpChannel,
    ) -> Result<(), RtcpDrop> {
        let r = self.accept(now, from, datagram, channel);
        if r.is_err() {
            self.dropped += 1;
        }
        r
    }

    fn accept(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        channel: &mut SrtpChannel,
    ) -> Result<(), RtcpDrop> {
        if !self.muxed {
            return Err(RtcpDrop::NotMuxed);
        }
        let plain = channel.unprotect_rtcp(from, datagram)?;
        Ok(self.state.handle(&plain, now)?)
    }

    /// Records one RTP packet we sent (payload bytes, its timestamp).
    pub(crate) fn on_rtp_sent(&mut self, payload_len: usize, timestamp: u32, now: Instant) {
        self.state.on_rtp_sent(payload_len, timestamp, now);
    }

    /// Records one authenticated RTP packet from the peer.
    pub(crate) fn on_rtp_received(&mut self, ssrc: u32, seq: u16, timestamp: u32, now: Instant) {
        self.state.on_rtp_received(ssrc, seq, timestamp, now);
    }

    /// The figures so far (see [`RtcpStats`]).
    pub(crate) fn stats(&self) -> RtcpStats {
        self.state.stats()
    }

    /// Compound reports sent.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// RTCP datagrams dropped (see [`RtcpDrop`]).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[path = "rtcp_link_tests.rs"]
pub(crate) mod tests;
