//! Server transactions (RFC 3261 17.2): INVITE (figure 7) and non-INVITE
//! (figure 8), with the Accepted state of RFC 6026. The transaction keeps the last response it sent, as bytes,
//! and repeats it when the request is retransmitted.

use super::{Dest, Kind};
use crate::sip::timers::Timers;
use std::time::{Duration, Instant};

/// States of figures 7 and 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Request received, no response sent (non-INVITE Trying).
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent.
    Completed,
    /// INVITE: the ACK arrived.
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026): retransmitted INVITEs are absorbed
    /// and further 2xx (from other forks) may still be sent, until Timer L.
    Accepted,
    /// Done; the layer removes it.
    Terminated,
}

/// What a server transaction asks of the layer after a timer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerAction {
    /// Nothing visible.
    None,
    /// Timer H fired: the ACK never came.
    AckTimeout,
}

/// One server transaction.
#[derive(Debug)]
pub(crate) struct ServerTx {
    pub(crate) kind: Kind,
    pub(crate) state: ServerState,
    pub(crate) dest: Dest,
    pub(crate) last_response: Option<(u16, Vec<u8>)>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
    timers: Timers,
}

impl ServerTx {
    pub(crate) fn new(kind: Kind, dest: Dest, timers: Timers) -> Self {
        ServerTx {
            kind,
            state: match kind {
                Kind::Invite => ServerState::Proceeding,
                Kind::NonInvite => ServerState::Trying,
            },
            dest,
            last_response: None,
            interval: timers.g(),
            retransmit_at: None,
            timeout_at: None,
            end_at: None,
            timers,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The request arrived again: repeat the last response, if any.
    pub(crate) fn on_retransmission(&mut self, send: &mut dyn FnMut(&Dest, Vec<u8>)) {
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some((_, bytes)) = &self.last_response {
                send(&self.dest, bytes.clone());
            }
        }
    }

    /// The ACK for a non-2xx final response arrived.
    pub(crate) fn on_ack(&mut self, now: Instant) {
        if self.kind == Kind::Invite && self.state == ServerState::Completed {
            self.state = ServerState::Confirmed;
            self.retransmit_at = None;
            self.timeout_at = None;
            self.end_at = Some(now + self.timers.i(self.dest.transport.is_reliable()));
        }
    }

    /// The TU sends a response. Returns false if the state forbids it.
    pub(crate) fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Vec<u8>,
        send: &mut dyn FnMut(&Dest, Vec<u8>),
    ) -> bool {
        if self.state == ServerState::Accepted && (200..300).contains(&status) {
            send(&self.dest, bytes);
            return true;
        }
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return false;
        }
        let reliable = self.dest.transport.is_reliable();
        send(&self.dest, bytes.clone());
        self.last_response = Some((status, bytes));
        if status < 200 {
            self.state = ServerState::Proceeding;
            return true;
        }
        match self.kind {
            // The TU (dialog layer) retransmits 2xx until the ACK (13.3.1.4);
            // the transaction lingers only to absorb INVITE retransmissions
            // (RFC 6026 Timer L = 64*T1).
            Kind::Invite if status < 300 => {
                self.state = ServerState::Accepted;
                self.end_at = Some(now + self.timers.t1 * 64);
            }
            Kind::Invite => {
                self.state = ServerState::Completed;
                self.interval = self.timers.g();
                self.retransmit_at = (!reliable).then(|| now + self.interval);
                self.timeout_at = Some(now + self.timers.h());
            }
            Kind::NonInvite => {
                self.state = ServerState::Completed;
                self.end_at = Some(now + self.timers.j(reliable));
            }
        }
        true
    }

    pub(crate) fn on_timer(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&Dest, Vec<u8>),
    ) -> ServerAction {
        if self.end_at.is_some_and(|t| t <= now) {
            self.state = ServerState::Terminated;
            return ServerAction::None;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.state = ServerState::Terminated;
            return ServerAction::AckTimeout;
        }
        if let Some(at) = self.retransmit_at {
            if at <= now {
                if let Some((_, bytes)) = &self.last_response {
                    send(&self.dest, bytes.clone());
                }
                self.interval = (self.interval * 2).min(self.timers.t2);
                self.retransmit_at = Some(now + self.interval);
            }
        }
        ServerAction::None
    }
}
