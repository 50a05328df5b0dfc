//! The keep-alive of a UDP flow to the outbound proxy (RFC 5626 4.4.2),
//! sans-I/O: a STUN binding request every keep-alive interval, sent again
//! after 0.5, 1.5, 3.5 and 7.5 s while unanswered (RFC 8489 6.2.1's
//! doubling, cut short by the flow-failure timeout).
//!
//! A CRLF over UDP refreshes the NAT's mapping but gets no answer, so a
//! NAT that rebooted (or gave the flow a new public port) would go
//! unnoticed until the next registration refresh, and calls to the phone
//! would go to the old mapping meanwhile. The STUN answer says both that
//! the proxy still hears us and where the NAT maps the flow now; the UA
//! treats no answer within the timeout, or an answer naming another
//! address than the one the registrar saw, as a failure of the flow and
//! registers again at once (RFC 5626 4.4.2: "If the XOR-MAPPED-ADDRESS in
//! the STUN Binding Response changes, the UA MUST treat this event as a
//! failure on the flow").
//!
//! Used only when the registrar said `Require: outbound` (it supports RFC
//! 5626, so its edge answers STUN on the SIP port); other registrars get
//! CRLF keep-alives.

use crate::sip::stun::BindingRequest;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first retransmission of an unanswered keep-alive (RFC 8489 RTO).
const FIRST_RESEND: Duration = Duration::from_millis(500);

/// What an answer to the keep-alive tells the UA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Not the answer to our pending request: ignored.
    NotOurs,
    /// The flow is alive and mapped where it was.
    Alive,
    /// The flow is alive but the NAT maps it elsewhere now: a failure of
    /// the flow (register again).
    Moved {
        /// Where the registrar (or the last answer) saw us.
        old: SocketAddr,
        /// Where the proxy sees us now.
        new: SocketAddr,
    },
}

/// What a timer of the keep-alive asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send these bytes (a retransmission) to the proxy.
    Resend(Vec<u8>),
    /// No answer within the timeout: the flow failed.
    Failed,
}

/// One unanswered request.
#[derive(Debug)]
struct Pending {
    request: BindingRequest,
    bytes: Vec<u8>,
    resend_at: Instant,
    gap: Duration,
    deadline: Instant,
}

/// The STUN keep-alive state of one flow.
#[derive(Debug, Default)]
pub(crate) struct StunKeepAlive {
    pending: Option<Pending>,
    /// Where the last answer said the flow is mapped.
    mapped: Option<SocketAddr>,
}

impl StunKeepAlive {
    /// A new request to send now, failing the flow if no answer comes
    /// within `timeout`; `None` while an earlier one is still unanswered
    /// (its retransmissions go on) or if the request cannot be built.
    pub(crate) fn start(&mut self, now: Instant, timeout: Duration) -> Option<Vec<u8>> {
        if self.pending.is_some() {
            return None;
        }
        let (request, bytes) = match BindingRequest::new() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "no STUN keep-alive");
                return None;
            }
        };
        self.pending = Some(Pending {
            request,
            bytes: bytes.clone(),
            resend_at: now + FIRST_RESEND,
            gap: FIRST_RESEND,
            deadline: now + timeout,
        });
        Some(bytes)
    }

    /// The next instant a timer is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.resend_at.min(p.deadline))
    }

    /// Runs the timer due at `now`, if any.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<Due> {
        let p = self.pending.as_mut()?;
        if p.deadline <= now {
            self.pending = None;
            return Some(Due::Failed);
        }
        if p.resend_at <= now {
            p.gap *= 2;
            p.resend_at = now + p.gap;
            return Some(Due::Resend(p.bytes.clone()));
        }
        None
    }

    /// A STUN datagram from the proxy. `registered_at` is where the
    /// registrar last saw us (`received`/`rport`), the baseline until a
    /// first answer comes.
    pub(crate) fn handle_answer(
        &mut self,
        datagram: &[u8],
        registered_at: Option<SocketAddr>,
    ) -> Answer {
        let Some(mapped) = self
            .pending
            .as_ref()
            .and_then(|p| p.request.mapped(datagram))
        else {
            return Answer::NotOurs;
        };
        self.pending = None;
        let old = self.mapped.or(registered_at);
        self.mapped = Some(mapped);
        match old {
            Some(old) if old != mapped => Answer::Moved { old, new: mapped },
            _ => Answer::Alive,
        }
    }

    /// Forgets the request under way and the mapping (a new registration
    /// sets the baseline again; keep-alives stopped).
    pub(crate) fn reset(&mut self) {
        *self = StunKeepAlive::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::stun::binding_success;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn an_answer_at_the_registered_address_keeps_the_flow() {
        let t0 = Instant::now();
        let mut ka = StunKeepAlive::default();
        let req = ka.start(t0, TIMEOUT).unwrap();
        let at = addr("203.0.113.1:40000");
        // Someone else's answer changes nothing.
        let mut other = StunKeepAlive::default();
        let foreign = binding_success(&other.start(t0, TIMEOUT).unwrap(), at).unwrap();
        assert_eq!(ka.handle_answer(&foreign, Some(at)), Answer::NotOurs);
        assert_eq!(
            ka.handle_answer(&binding_success(&req, at).unwrap(), Some(at)),
            Answer::Alive
        );
        assert_eq!(ka.poll_timeout(), None, "nothing pending");
        // The same answer twice is not ours any more.
        assert_eq!(
            ka.handle_answer(&binding_success(&req, at).unwrap(), Some(at)),
            Answer::NotOurs
        );
    }

    #[test]
    fn a_new_mapping_is_a_failed_flow() {
        let t0 = Instant::now();
        let mut ka = StunKeepAlive::default();
        let (old, new) = (addr("203.0.113.1:40000"), addr("203.0.113.1:51234"));
        let req = ka.start(t0, TIMEOUT).unwrap();
        assert_eq!(
            ka.handle_answer(&binding_success(&req, new).unwrap(), Some(old)),
            Answer::Moved { old, new }
        );
        // From then on the last answer is the baseline.
        let req = ka.start(t0, TIMEOUT).unwrap();
        assert_eq!(
            ka.handle_answer(&binding_success(&req, new).unwrap(), Some(old)),
            Answer::Alive
        );
    }

    #[test]
    fn unanswered_requests_are_resent_then_fail_the_flow() {
        let t0 = Instant::now();
        let mut ka = StunKeepAlive::default();
        let req = ka.start(t0, TIMEOUT).unwrap();
        assert_eq!(ka.start(t0, TIMEOUT), None, "one request at a time");
        let mut resent = Vec::new();
        let mut failed_at = None;
        let mut now = t0;
        while let Some(t) = ka.poll_timeout() {
            now = t;
            match ka.handle_timeout(now) {
                Some(Due::Resend(bytes)) => {
                    assert_eq!(bytes, req, "a retransmission is the same request");
                    resent.push(now - t0);
                }
                Some(Due::Failed) => failed_at = Some(now - t0),
                None => {}
            }
        }
        let ms: Vec<u128> = resent.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1500, 3500, 7500]);
        assert_eq!(failed_at, Some(TIMEOUT));
        assert!(now >= t0 + TIMEOUT);
        // A late answer after the failure is not ours.
        let at = addr("203.0.113.1:40000");
        assert_eq!(
            ka.handle_answer(&binding_success(&req, at).unwrap(), Some(at)),
            Answer::NotOurs
        );
    }
}
