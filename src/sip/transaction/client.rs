//! Client transactions (RFC 3261 17.1): INVITE (figure 5) and non-INVITE
//! (figure 6). A transaction owns the serialised request, so every
//! retransmission repeats the exact bytes that went out first (a sealed
//! tunnel body is not re-sealed).

use super::{Dest, Kind};
use crate::sip::message::{HeaderForm, Message, StartLine};
use crate::sip::timers::Timers;
use rsip::Method;
use std::time::{Duration, Instant};

/// States of figures 5 and 6 (Calling and Trying are one state here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// Request sent, no response yet (Calling / Trying).
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions.
    Completed,
    /// Done; the layer removes it.
    Terminated,
}

/// What a client transaction asks of the layer after an input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientAction {
    /// Nothing visible.
    None,
    /// Hand the response to the transaction user.
    Deliver,
    /// Timer B or F fired: the TU sees a timeout (as a 408).
    Timeout,
}

/// One client transaction.
#[derive(Debug)]
pub(crate) struct ClientTx {
    pub(crate) kind: Kind,
    pub(crate) state: ClientState,
    pub(crate) request: Message,
    pub(crate) bytes: Vec<u8>,
    pub(crate) dest: Dest,
    pub(crate) ack: Option<Vec<u8>>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
    timers: Timers,
    form: HeaderForm,
}

impl ClientTx {
    pub(crate) fn new(
        now: Instant,
        request: Message,
        bytes: Vec<u8>,
        dest: Dest,
        timers: Timers,
        form: HeaderForm,
    ) -> Self {
        let kind = if request.method() == Some(Method::Invite) {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let reliable = dest.transport.is_reliable();
        let interval = match kind {
            Kind::Invite => timers.a(),
            Kind::NonInvite => timers.e(),
        };
        let timeout = match kind {
            Kind::Invite => timers.b(),
            Kind::NonInvite => timers.f(),
        };
        ClientTx {
            kind,
            state: ClientState::Calling,
            request,
            bytes,
            dest,
            ack: None,
            interval,
            retransmit_at: (!reliable).then(|| now + interval),
            timeout_at: Some(now + timeout),
            end_at: None,
            timers,
            form,
        }
    }

    /// The earliest deadline of this transaction.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves a transaction that heard nothing yet from its next hop to
    /// `to` (a new flow of the same transport to the same device) and
    /// returns the request to send there at once; timers run on. `None`
    /// (nothing changed) once any answer came or for another transport.
    pub(crate) fn retarget(&mut self, to: Dest) -> Option<Vec<u8>> {
        if self.state != ClientState::Calling || to.transport != self.dest.transport {
            return None;
        }
        self.dest = to;
        Some(self.bytes.clone())
    }

    /// Feeds a response; `send` is called with bytes to transmit (the ACK).
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        resp: &Message,
        send: &mut dyn FnMut(&Dest, Vec<u8>),
    ) -> ClientAction {
        let Some(status) = resp.status() else {
            return ClientAction::None;
        };
        let reliable = self.dest.transport.is_reliable();
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => ClientAction::None,
            (Kind::Invite, ClientState::Completed) => {
                if status >= 300 {
                    if let Some(ack) = &self.ack {
                        send(&self.dest, ack.clone());
                    }
                }
                ClientAction::None
            }
            (Kind::NonInvite, ClientState::Completed) => ClientAction::None,
            (kind, _) if status < 200 => {
                self.state = ClientState::Proceeding;
                match kind {
                    // Timers A and B stop in Proceeding (figure 5); a
                    // ringing call is bounded by the proxy's Timer C.
                    Kind::Invite => {
                        self.retransmit_at = None;
                        self.timeout_at = None;
                    }
                    // Timer E keeps running at T2 in Proceeding.
                    Kind::NonInvite => {
                        if !reliable {
                            self.interval = self.timers.t2;
                        }
                    }
                }
                ClientAction::Deliver
            }
            (Kind::Invite, _) if status < 300 => {
                self.state = ClientState::Terminated;
                ClientAction::Deliver
            }
            (Kind::Invite, _) => {
                let ack = ack_for(&self.request, resp).to_bytes(self.form);
                send(&self.dest, ack.clone());
                self.ack = Some(ack);
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.end_at = Some(now + self.timers.d(reliable));
                ClientAction::Deliver
            }
            (Kind::NonInvite, _) => {
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.end_at = Some(now + self.timers.k(reliable));
                ClientAction::Deliver
            }
        }
    }

    /// Runs the timers due at `now`.
    pub(crate) fn on_timer(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(&Dest, Vec<u8>),
    ) -> ClientAction {
        if self.end_at.is_some_and(|t| t <= now) {
            self.state = ClientState::Terminated;
            return ClientAction::None;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.state = ClientState::Terminated;
            return ClientAction::Timeout;
        }
        if let Some(at) = self.retransmit_at {
            if at <= now {
                send(&self.dest, self.bytes.clone());
                self.interval = match self.kind {
                    Kind::Invite => self.interval * 2,
                    Kind::NonInvite if self.state == ClientState::Proceeding => self.timers.t2,
                    Kind::NonInvite => (self.interval * 2).min(self.timers.t2),
                };
                self.retransmit_at = Some(now + self.interval);
            }
        }
        ClientAction::None
    }
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): same
/// Request-URI, Call-ID, From, CSeq number and top Via as the INVITE, To
/// from the response, Route from the INVITE. Hop-by-hop, so never tunneled
/// (spec 5.5).
pub(crate) fn ack_for(invite: &Message, resp: &Message) -> Message {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => Default::default(),
    };
    let mut ack = Message::request(Method::Ack, uri);
    if let Some(v) = invite.header("Via") {
        ack.push_header("Via", v.to_string());
    }
    ack.push_header("Max-Forwards", "70");
    for (name, value) in invite.headers() {
        if matches!(name.as_str(), "From" | "Call-ID" | "Route") {
            ack.push_header(name, value.clone());
        }
    }
    if let Some(to) = resp.header("To") {
        ack.push_header("To", to.to_string());
    }
    let n = invite.cseq().map(|(n, _)| n).unwrap_or(0);
    ack.push_header("CSeq", format!("{n} ACK"));
    ack
}

/// The CANCEL of a pending request (RFC 3261 9.1): same Request-URI,
/// Call-ID, To, From, CSeq number, top Via and Route.
pub(crate) fn cancel_for(invite: &Message) -> Message {
    let uri = invite.uri().cloned().unwrap_or_default();
    let mut c = Message::request(Method::Cancel, uri);
    if let Some(v) = invite.header("Via") {
        c.push_header("Via", v.to_string());
    }
    c.push_header("Max-Forwards", "70");
    for (name, value) in invite.headers() {
        if matches!(name.as_str(), "From" | "To" | "Call-ID" | "Route") {
            c.push_header(name, value.clone());
        }
    }
    let n = invite.cseq().map(|(n, _)| n).unwrap_or(0);
    c.push_header("CSeq", format!("{n} CANCEL"));
    c
}
