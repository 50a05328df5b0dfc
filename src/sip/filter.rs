//! The hook where the tunnel plugs into a user agent.
//!
//! A [`MessageFilter`] sees every message the user agent core originates
//! (after the core built it, before the transaction layer stores and sends
//! it) and every message the core receives (after the transaction layer
//! matched it and absorbed retransmissions, before the dialog layer reads
//! it). The tunnel's `seal` is `outgoing` and its `open` is `incoming`:
//! - sealing before the transaction layer means a retransmission repeats the
//!   same sealed bytes and transaction matching only ever needs the outer
//!   headers (Via branch, CSeq), which the tunnel keeps in the clear;
//! - opening after the transaction layer means a retransmitted request is
//!   absorbed without being decrypted again, and a message that fails to
//!   open never touches dialog state (spec 5.6): the core answers
//!   `Reject::response` (e.g. 493) in the request's server transaction, or
//!   drops the message when no response is possible.
//!
//! Two messages never pass the filter, both hop-by-hop and plain by spec
//! 5.5: the `100 Trying` and the ACK of a non-2xx response, which the
//! transaction layer builds from the outer headers. The filter itself
//! decides which of the other messages 5.5 keeps plain (REGISTER, CANCEL,
//! responses built by a proxy). A 2xx that matches no transaction (a
//! retransmission, a second fork) passes `incoming` too before the core
//! answers it with an ACK or BYE, so a refused one gets no answer.
//!
//! A filter fails closed: `outgoing` returns an error rather than send a
//! message it cannot protect or classify, and `incoming` refuses what it
//! cannot prove allowed (see `agent::filter` for the tunnel's rules).

use crate::sip::message::Message;
use std::time::Instant;

/// Why an incoming message was refused by a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Response to send if the message is a request: (status, reason), e.g.
    /// `(493, "Undecipherable")` or `(415, "Unsupported Media Type")`.
    pub response: Option<(u16, String)>,
    /// Extra headers for that response (e.g. `Accept: application/sdp`).
    pub headers: Vec<(String, String)>,
    /// Local log text; never sent.
    pub reason: String,
}

/// Why an outgoing message could not be transformed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("outgoing filter refused the message: {0}")]
pub struct FilterError(pub String);

/// Transforms messages on their way out of and into a user agent.
pub trait MessageFilter: Send {
    /// Called for every message the core originates; returns the message to
    /// send (e.g. the sealed outer message).
    fn outgoing(&mut self, now: Instant, msg: Message) -> Result<Message, FilterError>;
    /// Called for every message the core receives; returns the message the
    /// core acts on (e.g. the opened inner message) or a rejection.
    fn incoming(&mut self, now: Instant, msg: Message) -> Result<Message, Reject>;
    /// Whether the message [`MessageFilter::incoming`] last let through
    /// proves its sender well enough to move a dialog's remote target (a
    /// target refresh, RFC 3261 12.2.2: a peer that moved to a new
    /// address). Plain SIP (the default) takes every message's word.
    fn may_refresh_target(&self) -> bool {
        true
    }
}

/// The identity filter: plain SIP.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilter;

impl MessageFilter for NoFilter {
    fn outgoing(&mut self, _now: Instant, msg: Message) -> Result<Message, FilterError> {
        Ok(msg)
    }
    fn incoming(&mut self, _now: Instant, msg: Message) -> Result<Message, Reject> {
        Ok(msg)
    }
}
