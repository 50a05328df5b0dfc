//! The transaction layer (RFC 3261 17): matches messages to client and
//! server transactions, absorbs retransmissions, runs timers A-K from the
//! `now` it is given, and builds the ACK of non-2xx final responses.
//!
//! It works on [`Message`]s the transaction user has already passed through
//! its `MessageFilter` (see `sip::ua`): matching uses only the outer headers
//! (top Via branch, CSeq method), which the tunnel leaves in the clear, and
//! retransmissions repeat the stored bytes, so a sealed body is sealed once.
//!
//! The table is bounded ([`TransactionLayer::new`] `max`): a request that
//! would create a transaction past the bound is dropped (the peer will
//! retransmit), and a client request is refused with
//! [`TxError::TableFull`].
//!
//! Timers sit in a min-heap of deadlines, so a message or a timer costs
//! O(log n) however many transactions are live (a registrar keeps every
//! completed non-INVITE transaction for Timer J's 32 s: thousands at a few
//! hundred REGISTERs per second). An entry goes stale when its transaction
//! ends or its deadline moves; stale entries are dropped, or moved to the
//! transaction's current deadline, when they reach the top.

pub(crate) mod client;
pub(crate) mod server;

use crate::sip::message::{param, HeaderForm, Message};
use crate::sip::timers::Timers;
use crate::sip::{Dest, Transmit};
use client::{ClientAction, ClientState, ClientTx};
use rsip::Method;
use server::{ServerAction, ServerState, ServerTx};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

/// INVITE or non-INVITE: the two state machines of RFC 3261 17.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Figures 5 and 7.
    Invite,
    /// Figures 6 and 8.
    NonInvite,
}

/// Identifies a transaction: the top Via branch and the method (ACK is
/// matched to its INVITE, RFC 3261 17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TxKey {
    /// Top Via branch.
    pub branch: String,
    /// Method name, `INVITE` for ACK.
    pub method: String,
}

impl TxKey {
    /// The key of `msg` (request or response); None without a branch.
    pub(crate) fn of(msg: &Message) -> Option<TxKey> {
        let branch = msg.branch()?.to_string();
        let method = match msg.method()? {
            Method::Ack => Method::Invite,
            m => m,
        };
        Some(TxKey {
            branch,
            method: method.to_string(),
        })
    }

    /// The key of the INVITE that a CANCEL with this key cancels.
    pub(crate) fn invite(&self) -> TxKey {
        TxKey {
            branch: self.branch.clone(),
            method: Method::Invite.to_string(),
        }
    }
}

/// Why the layer refused to send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum TxError {
    /// The transaction table is at its bound.
    #[error("transaction table full")]
    TableFull,
    /// The message has no Via branch or CSeq.
    #[error("message lacks a Via branch or CSeq")]
    Unkeyed,
    /// No live server transaction for this response.
    #[error("no such transaction")]
    NoTransaction,
}

/// What an incoming message turned out to be.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A new request; a server transaction `key` was created (none for ACK).
    Request(TxKey, Message),
    /// A response for client transaction `key`.
    Response(TxKey, Message),
    /// An ACK that matched no server transaction (the ACK of a 2xx).
    Ack(Message),
    /// A response that matched no transaction (2xx retransmission, or a
    /// response a proxy forwards statelessly).
    Stray(Message),
    /// A retransmission or an ACK the layer handled itself.
    Absorbed,
}

/// Timer outcomes the transaction user must hear about.
#[derive(Debug)]
pub(crate) enum TxEvent {
    /// Timer B or F fired: treat as a 408 for `request` (RFC 3261 8.1.3.1).
    Timeout(TxKey, Box<Message>),
    /// Timer H fired: the ACK of a non-2xx response never came.
    AckTimeout(TxKey),
}

/// Which table a timer entry points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Side {
    Client,
    Server,
}

/// A timer entry: a deadline of one transaction (maybe stale).
type TimerEntry = Reverse<(Instant, Side, TxKey)>;

/// All transactions of one SIP element.
#[derive(Debug)]
pub(crate) struct TransactionLayer {
    timers: Timers,
    form: HeaderForm,
    max: usize,
    clients: HashMap<TxKey, ClientTx>,
    servers: HashMap<TxKey, ServerTx>,
    /// Deadlines, earliest first (see the module doc). A `RefCell` so that
    /// [`TransactionLayer::poll_timeout`] can drop stale entries behind
    /// `&self`.
    deadlines: RefCell<BinaryHeap<TimerEntry>>,
    out: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl TransactionLayer {
    /// A layer with these timers, header form, and at most `max`
    /// transactions of each kind.
    pub(crate) fn new(timers: Timers, form: HeaderForm, max: usize) -> Self {
        TransactionLayer {
            timers,
            form,
            max,
            clients: HashMap::new(),
            servers: HashMap::new(),
            deadlines: RefCell::new(BinaryHeap::new()),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current deadline of the transaction an entry points to.
    fn deadline_of(&self, side: Side, key: &TxKey) -> Option<Instant> {
        match side {
            Side::Client => self.clients.get(key).and_then(ClientTx::deadline),
            Side::Server => self.servers.get(key).and_then(ServerTx::deadline),
        }
    }

    /// Records the current deadline of a transaction whose timers may have
    /// changed (called after every change; an entry it leaves behind is
    /// stale and dropped later).
    fn schedule(&self, side: Side, key: &TxKey) {
        if let Some(at) = self.deadline_of(side, key) {
            self.deadlines
                .borrow_mut()
                .push(Reverse((at, side, key.clone())));
        }
    }

    /// Number of live (client, server) transactions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// True when no transaction is live.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    /// Sends `msg` in a new client transaction to `dest`.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        msg: Message,
        dest: Dest,
    ) -> Result<TxKey, TxError> {
        let key = TxKey::of(&msg).ok_or(TxError::Unkeyed)?;
        if self.clients.len() >= self.max {
            return Err(TxError::TableFull);
        }
        let bytes = msg.to_bytes(self.form);
        self.out.push_back(Transmit {
            dest,
            bytes: bytes.clone(),
        });
        let tx = ClientTx::new(now, msg, bytes, dest, self.timers, self.form);
        self.clients.insert(key.clone(), tx);
        self.schedule(Side::Client, &key);
        Ok(key)
    }

    /// Sends `msg` outside any transaction (ACK of a 2xx, a 2xx
    /// retransmission, a statelessly forwarded response).
    pub(crate) fn send_stateless(&mut self, msg: &Message, dest: Dest) {
        self.out.push_back(Transmit {
            dest,
            bytes: msg.to_bytes(self.form),
        });
    }

    /// Sends bytes that are no SIP message (a keep-alive) as they are.
    pub(crate) fn send_raw(&mut self, bytes: Vec<u8>, dest: Dest) {
        self.out.push_back(Transmit { dest, bytes });
    }

    /// Sends a response in server transaction `key`.
    pub(crate) fn send_response(
        &mut self,
        now: Instant,
        key: &TxKey,
        msg: &Message,
    ) -> Result<(), TxError> {
        let status = msg.status().ok_or(TxError::Unkeyed)?;
        let tx = self.servers.get_mut(key).ok_or(TxError::NoTransaction)?;
        let bytes = msg.to_bytes(self.form);
        let out = &mut self.out;
        let ok = tx.send_response(now, status, bytes, &mut |d, b| {
            out.push_back(Transmit { dest: *d, bytes: b })
        });
        if tx.state == ServerState::Terminated {
            self.servers.remove(key);
        } else {
            self.schedule(Side::Server, key);
        }
        if ok {
            Ok(())
        } else {
            Err(TxError::NoTransaction)
        }
    }

    /// Drops server transaction `key` without answering (a request the
    /// element decided to ignore, e.g. a throttled probe).
    pub(crate) fn forget_server(&mut self, key: &TxKey) {
        self.servers.remove(key);
    }

    /// Drops client transaction `key` (a branch its proxy gave up on).
    pub(crate) fn forget_client(&mut self, key: &TxKey) {
        self.clients.remove(key);
    }

    /// Where responses of server transaction `key` go.
    pub(crate) fn server_dest(&self, key: &TxKey) -> Option<Dest> {
        self.servers.get(key).map(|t| t.dest)
    }

    /// True if server transaction `key` is live and has sent no final response.
    pub(crate) fn server_pending(&self, key: &TxKey) -> bool {
        self.servers
            .get(key)
            .is_some_and(|t| matches!(t.state, ServerState::Trying | ServerState::Proceeding))
    }

    /// The request of a live client transaction.
    pub(crate) fn client_request(&self, key: &TxKey) -> Option<&Message> {
        self.clients.get(key).map(|t| &t.request)
    }

    /// Client transactions that sent to `old` and heard nothing yet are
    /// moved to `new` and send their request there at once: the device
    /// they go to registered a new flow (RFC 5626) after they left, and
    /// the old one leads nowhere (a NAT that forgot it, an address given
    /// up). Only between flows of one transport. Returns how many moved.
    pub(crate) fn retarget_clients(&mut self, old: Dest, new: Dest) -> usize {
        let mut moved = 0;
        for tx in self.clients.values_mut().filter(|t| t.dest == old) {
            if let Some(bytes) = tx.retarget(new) {
                self.out.push_back(Transmit { dest: new, bytes });
                moved += 1;
            }
        }
        moved
    }

    /// The destination of a live client transaction.
    pub(crate) fn client_dest(&self, key: &TxKey) -> Option<Dest> {
        self.clients.get(key).map(|t| t.dest)
    }

    /// True if client transaction `key` received a provisional response
    /// (so a CANCEL may be sent, RFC 3261 9.1).
    pub(crate) fn client_proceeding(&self, key: &TxKey) -> bool {
        self.clients
            .get(key)
            .is_some_and(|t| t.state == ClientState::Proceeding)
    }

    /// Feeds a parsed, validated message that arrived from `from`.
    pub(crate) fn on_message(&mut self, now: Instant, from: Dest, mut msg: Message) -> Incoming {
        let Some(key) = TxKey::of(&msg) else {
            return Incoming::Absorbed;
        };
        if !msg.is_request() {
            let Some(tx) = self.clients.get_mut(&key) else {
                return Incoming::Stray(msg);
            };
            let out = &mut self.out;
            let action = tx.on_response(now, &msg, &mut |d, b| {
                out.push_back(Transmit { dest: *d, bytes: b })
            });
            if tx.state == ClientState::Terminated {
                self.clients.remove(&key);
            } else {
                self.schedule(Side::Client, &key);
            }
            return match action {
                ClientAction::Deliver => Incoming::Response(key, msg),
                _ => Incoming::Absorbed,
            };
        }
        mark_received(&mut msg, from);
        let is_ack = msg.method() == Some(Method::Ack);
        if let Some(tx) = self.servers.get_mut(&key) {
            if is_ack {
                if tx.last_response.as_ref().is_some_and(|(s, _)| *s >= 300) {
                    tx.on_ack(now);
                    self.schedule(Side::Server, &key);
                    return Incoming::Absorbed;
                }
                return Incoming::Ack(msg);
            }
            let out = &mut self.out;
            tx.on_retransmission(&mut |d, b| out.push_back(Transmit { dest: *d, bytes: b }));
            return Incoming::Absorbed;
        }
        if is_ack {
            return Incoming::Ack(msg);
        }
        if self.servers.len() >= self.max {
            tracing::warn!("transaction table full, dropping request");
            return Incoming::Absorbed;
        }
        let dest = response_dest(&msg, from);
        let kind = if msg.method() == Some(Method::Invite) {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let mut tx = ServerTx::new(kind, dest, self.timers);
        if kind == Kind::Invite {
            // 100 Trying at once: hop-by-hop, plain (spec 5.5), and it stops
            // the caller's Timer A.
            let trying = Message::response_to(&msg, 100, "Trying", None);
            let out = &mut self.out;
            tx.send_response(now, 100, trying.to_bytes(self.form), &mut |d, b| {
                out.push_back(Transmit { dest: *d, bytes: b })
            });
        }
        self.servers.insert(key.clone(), tx);
        self.schedule(Side::Server, &key);
        Incoming::Request(key, msg)
    }

    /// The next instant at which [`Self::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut heap = self.deadlines.borrow_mut();
        while let Some(Reverse((at, side, key))) = heap.peek() {
            match self.deadline_of(*side, key) {
                Some(current) if current == *at => return Some(current),
                // Moved: keep it at its current deadline (a missed
                // `schedule` can only delay nothing).
                Some(current) => {
                    let entry = Reverse((current, *side, key.clone()));
                    heap.pop();
                    heap.push(entry);
                }
                None => {
                    heap.pop();
                }
            }
        }
        None
    }

    /// Runs every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        // The entries due now, taken out first: a timer that stays due
        // after firing waits for the next call (each transaction fires at
        // most once per call, as the transaction user expects).
        let mut due = Vec::new();
        {
            let mut heap = self.deadlines.borrow_mut();
            while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                if let Some(Reverse((at, side, key))) = heap.pop() {
                    due.push((at, side, key));
                }
            }
        }
        let mut fired = std::collections::HashSet::new();
        for (at, side, key) in due {
            match self.deadline_of(side, &key) {
                Some(current) if current <= now => {
                    if fired.insert((side, key.clone())) {
                        self.fire(now, side, &key);
                    } else {
                        self.schedule(side, &key);
                    }
                }
                Some(current) if current != at => self.schedule(side, &key),
                _ => {}
            }
        }
    }

    /// Runs the due timers of one transaction, then records its next
    /// deadline or drops it when it ended.
    fn fire(&mut self, now: Instant, side: Side, key: &TxKey) {
        let out = &mut self.out;
        let mut send = |d: &Dest, b: Vec<u8>| out.push_back(Transmit { dest: *d, bytes: b });
        let ended = match side {
            Side::Client => {
                let Some(tx) = self.clients.get_mut(key) else {
                    return;
                };
                if tx.on_timer(now, &mut send) == ClientAction::Timeout {
                    self.events
                        .push_back(TxEvent::Timeout(key.clone(), Box::new(tx.request.clone())));
                }
                let ended = tx.state == ClientState::Terminated;
                if ended {
                    self.clients.remove(key);
                }
                ended
            }
            Side::Server => {
                let Some(tx) = self.servers.get_mut(key) else {
                    return;
                };
                if tx.on_timer(now, &mut send) == ServerAction::AckTimeout {
                    self.events.push_back(TxEvent::AckTimeout(key.clone()));
                }
                let ended = tx.state == ServerState::Terminated;
                if ended {
                    self.servers.remove(key);
                }
                ended
            }
        };
        if !ended {
            self.schedule(side, key);
        }
    }

    /// Next datagram or stream message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next timer event for the transaction user.
    pub(crate) fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }
}

/// RFC 3261 18.2.1 and RFC 3581 3: records where the request really came
/// from in the top Via (`received`, and `rport` filled in when asked for).
fn mark_received(msg: &mut Message, from: Dest) {
    let Some(via) = msg.header("Via") else { return };
    let ip = from.addr.ip().to_string();
    let mut new = String::new();
    let mut parts = via.split(';');
    new.push_str(parts.next().unwrap_or("").trim());
    let mut has_received = false;
    for p in parts {
        let p = p.trim();
        let name = p.split('=').next().unwrap_or("");
        if name.eq_ignore_ascii_case("rport") {
            new.push_str(&format!(";rport={}", from.addr.port()));
        } else if name.eq_ignore_ascii_case("received") {
            has_received = true;
            new.push_str(&format!(";received={ip}"));
        } else if !p.is_empty() {
            new.push(';');
            new.push_str(p);
        }
    }
    let sent_by_host = via
        .split(';')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']'))
        .unwrap_or("");
    if !has_received && sent_by_host != ip {
        new.push_str(&format!(";received={ip}"));
    }
    msg.replace_first("Via", new);
}

/// Where the responses to `req` go (RFC 3261 18.2.2, RFC 3581 4): the source
/// address when `rport` is present or the transport is reliable, otherwise
/// the source IP and the sent-by port.
fn response_dest(req: &Message, from: Dest) -> Dest {
    let via = req.header("Via").unwrap_or("");
    if from.transport.is_reliable() || param(via, "rport").is_some() {
        return from;
    }
    let port = via
        .split(';')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5060);
    Dest {
        addr: std::net::SocketAddr::new(from.addr.ip(), port),
        transport: from.transport,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
