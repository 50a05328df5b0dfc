//! The user-agent core: registration, calls, OPTIONS and MESSAGE, one
//! [`Command`] enum in and one [`Event`] enum out, sans-I/O.
//!
//! Every message the core originates goes through the
//! [`MessageFilter`] before the
//! transaction layer, and every message it receives goes through it after
//! the transaction layer (see `sip::filter` for why). Bodies are opaque:
//! the core carries whatever bytes and Content-Type the caller gives.
//!
//! Outer-header privacy is a [`HeaderPolicy`] with the defaults of spec
//! 5.1: compact header names, anonymous From on calls and messages, short
//! random tags and branches, 128-bit random Call-IDs in base64url, no
//! User-Agent. All requests go to one outbound proxy (`UaConfig::proxy`),
//! which is also the registrar. A request whose serialised form exceeds
//! 1300 bytes travels over TCP (RFC 3261 18.1.1).

use crate::sip::dialog::DialogId;
use crate::sip::digest::Challenge;
use crate::sip::filter::MessageFilter;
use crate::sip::message::{addr_parse, Message};
use crate::sip::transaction::{Incoming, TransactionLayer, TxEvent, TxKey};
use crate::sip::{random_token, random_uuid_urn, Dest, Transmit, Transport};
use rsip::{Method, Uri};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

mod calls;
mod netwatch;
mod refer;
mod stun_keepalive;
mod types;

pub use calls::IBESIP_DH;
pub use netwatch::{NetWatch, RouteChange, RouteProbe};
pub use types::{Body, CallId, Command, EndReason, Event, HeaderPolicy, Output, UaConfig};

#[derive(Debug)]
struct Registration {
    cseq: u32,
    call_id: String,
    tag: String,
    nc: u32,
    pending: Option<TxKey>,
    tried_nonce: Option<String>,
    unregistering: bool,
    refresh_at: Option<Instant>,
    /// Consecutive failed registrations (RFC 5626 4.5 backoff).
    failures: u32,
    /// When a failed registration is tried again.
    retry_at: Option<Instant>,
    /// Whether the registrar holds our binding now.
    registered: bool,
    /// Our address as the registrar saw it (`received`/`rport`).
    reflexive: Option<std::net::SocketAddr>,
    /// Whether the registrar's last 200 said `Require: outbound` (RFC
    /// 5626: its edge answers STUN keep-alives on UDP).
    outbound: bool,
    /// Whether `reflexive` is the source the registrar saw (its Via
    /// carried a filled-in `rport`, RFC 3581), not just our own sent-by.
    rport_filled: bool,
}

/// RFC 5626 4.4.1 / 4.5 figures: keep-alive interval, how long a pong may
/// take, and the registration retry backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Interval between keep-alives towards the outbound proxy.
    pub interval: Duration,
    /// A keep-alive without its answer (the CRLF pong on TCP/TLS, the
    /// STUN answer on UDP) within this time means the flow failed (RFC
    /// 5626 4.4.1: 10 s, the default; `[sip] pong_timeout_secs`).
    pub pong_timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// RFC 5626 4.5: base time when every flow failed.
const RETRY_BASE_SECS: u64 = 30;
/// RFC 5626 4.5: the upper bound of the wait.
const RETRY_MAX_SECS: u64 = 1800;

/// The wait before registration attempt number `failures + 1` after
/// `failures` consecutive failures (RFC 5626 4.5): `min(max, base *
/// 2^failures)`, scaled by `jitter` in [0.5, 1].
pub fn retry_backoff(failures: u32, jitter: f64) -> Duration {
    let exp = 2u64.saturating_pow(failures.min(16));
    let wait = RETRY_BASE_SECS.saturating_mul(exp).min(RETRY_MAX_SECS);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.5, 1.0)
    } else {
        1.0
    };
    Duration::from_secs_f64(wait as f64 * jitter)
}

/// A uniformly random factor in [0.5, 1] for [`retry_backoff`].
fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.75;
    }
    0.5 + f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) / 2.0
}

/// The sans-I/O user agent.
pub struct UserAgent {
    cfg: UaConfig,
    filter: Box<dyn MessageFilter>,
    tx: TransactionLayer,
    events: VecDeque<Event>,
    reg: Registration,
    calls: HashMap<CallId, calls::Call>,
    by_dialog: HashMap<DialogId, CallId>,
    by_server_tx: HashMap<TxKey, CallId>,
    by_client_tx: HashMap<TxKey, CallId>,
    /// Requests whose final response is reported as RequestCompleted,
    /// with the call of in-dialog ones (to ACK a re-INVITE's 2xx).
    others: HashMap<TxKey, (Method, Option<CallId>)>,
    next_incoming: u64,
    /// Whether re-INVITEs wait for [`Command::RespondInDialog`].
    defer_reinvites: bool,
    /// Re-INVITEs waiting for the application's answer, by call.
    held_reinvites: HashMap<CallId, (TxKey, Message)>,
    /// REFERs waiting for [`Command::RespondRefer`], by call.
    held_refers: HashMap<CallId, (TxKey, Message)>,
    /// The user part of our Contact: a random per-device token, so the
    /// proxy tells devices apart even when they share an address.
    contact_token: String,
    /// `+sip.instance` (RFC 5626): `<urn:uuid:...>`, random per start.
    instance: String,
    /// Keep-alives towards the outbound proxy (off unless set).
    keepalive: Option<KeepAlive>,
    /// When the next keep-alive is due.
    keepalive_at: Option<Instant>,
    /// A TCP ping waits for its pong until then.
    pong_deadline: Option<Instant>,
    /// The STUN keep-alive of a UDP flow (RFC 5626 4.4.2).
    stun_keepalive: stun_keepalive::StunKeepAlive,
    /// Network change detection (off unless set).
    netwatch: Option<NetWatch>,
    /// The other targets of the proxy's list, in the order they are
    /// tried when the current one stops answering (see
    /// [`UserAgent::set_fallback_proxies`]).
    fallback: Vec<Dest>,
    /// How many targets may still be tried at once before the RFC 5626
    /// backoff applies: every target once per round of failures.
    failovers_left: usize,
}

/// When and how the driver looks at the route towards the proxy (see
/// [`UserAgent::route_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCheck {
    /// When the look is due.
    pub due: Instant,
    /// The outbound proxy (the peer the route leads to).
    pub proxy: std::net::SocketAddr,
    /// The address the SIP sockets are bound to.
    pub bound: std::net::SocketAddr,
}

impl std::fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgent")
            .field("aor", &self.aor())
            .field("calls", &self.calls.len())
            .finish()
    }
}

impl UserAgent {
    /// A user agent with a message filter (use `NoFilter` for plain SIP).
    pub fn new(cfg: UaConfig, filter: Box<dyn MessageFilter>) -> UserAgent {
        let tx = TransactionLayer::new(cfg.timers, cfg.headers.form, cfg.max_transactions);
        let reg = Registration {
            cseq: 0,
            call_id: random_token(16),
            tag: random_token(cfg.headers.token_bytes),
            nc: 0,
            pending: None,
            tried_nonce: None,
            unregistering: false,
            refresh_at: None,
            failures: 0,
            retry_at: None,
            registered: false,
            reflexive: None,
            outbound: false,
            rport_filled: false,
        };
        UserAgent {
            cfg,
            filter,
            tx,
            events: VecDeque::new(),
            reg,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_server_tx: HashMap::new(),
            by_client_tx: HashMap::new(),
            others: HashMap::new(),
            next_incoming: 1 << 63,
            defer_reinvites: false,
            held_reinvites: HashMap::new(),
            held_refers: HashMap::new(),
            contact_token: random_token(12),
            instance: random_uuid_urn(),
            keepalive: None,
            keepalive_at: None,
            pong_deadline: None,
            stun_keepalive: Default::default(),
            netwatch: None,
            fallback: Vec::new(),
            failovers_left: 0,
        }
    }

    /// The other targets of the outbound proxy's list (RFC 3263 order,
    /// after the one in `UaConfig::proxy`). When a REGISTER to the
    /// current target gets no answer (408: its transaction timed out) or
    /// no connection (503), the UA moves on to the next target at once
    /// (RFC 3263 4.3, RFC 5626 4.5), reports [`Event::ProxyChanged`] and
    /// registers there; the target left goes to the end of the list.
    /// Each target is tried once per round; when every one failed, the
    /// RFC 5626 backoff applies before the next. Empty (the default):
    /// only the backoff.
    pub fn set_fallback_proxies(&mut self, targets: Vec<Dest>) {
        let current = self.proxy_flow();
        self.fallback = targets.into_iter().filter(|t| *t != current).collect();
        self.failovers_left = self.fallback.len();
    }

    /// The outbound proxy in use: `UaConfig::proxy` until a failover
    /// (see [`UserAgent::set_fallback_proxies`]).
    pub fn proxy(&self) -> Dest {
        self.proxy_flow()
    }

    /// Turns network change detection on (see [`NetWatch`]) or off. While
    /// on, the driver looks at the route towards the proxy when
    /// [`UserAgent::route_check`] says and reports it to
    /// [`UserAgent::handle_route`].
    pub fn set_net_watch(&mut self, watch: Option<NetWatch>) {
        self.netwatch = watch;
    }

    /// When the driver should next look at the local address routing
    /// towards the proxy, if detection is on.
    pub fn route_check(&self, now: Instant) -> Option<RouteCheck> {
        self.netwatch.as_ref().map(|w| RouteCheck {
            due: w.due(now),
            proxy: self.cfg.proxy,
            bound: w.bound(),
        })
    }

    /// The driver looked at the route towards the proxy. On a change the
    /// UA names the new address in Via and Contact from now on, reports
    /// [`Event::NetworkChanged`] and registers again at once (same
    /// `+sip.instance` and `reg-id`, so the registrar replaces the old
    /// binding). The driver rebinds as the returned change says and
    /// drops its stream connections.
    pub fn handle_route(&mut self, now: Instant, probe: RouteProbe) -> Option<RouteChange> {
        let change = self.netwatch.as_mut()?.observe(now, probe)?;
        tracing::info!(old = ?change.old, local = %change.local, "network changed: the route to the proxy leaves from a new address");
        self.cfg.local = change.local.to_string();
        // What the registrar saw was through the old address.
        self.reg.reflexive = None;
        self.pong_deadline = None;
        self.stun_keepalive.reset();
        self.events.push_back(Event::NetworkChanged {
            local: self.cfg.local.clone(),
            public: None,
        });
        let active = self.reg.registered
            || self.reg.pending.is_some()
            || self.reg.retry_at.is_some()
            || self.reg.refresh_at.is_some();
        if active && !self.reg.unregistering {
            // The old transaction (if any) went out through the old
            // address: its answer would not reach us.
            self.reg.pending = None;
            self.reg.retry_at = None;
            self.reg.refresh_at = None;
            self.reg.tried_nonce = None;
            self.reg.failures = 0;
            self.send_register(now, None);
        }
        Some(change)
    }

    /// Turns keep-alives towards the outbound proxy on or off. Every
    /// `interval` while registered: over TCP and TLS a double CRLF whose
    /// pong must come within `pong_timeout` (RFC 5626 4.4.1); over UDP a
    /// STUN binding request when the registrar said `Require: outbound`,
    /// which must be answered within `pong_timeout` and from the address
    /// the registrar saw (RFC 5626 4.4.2), else a CRLF (no answer
    /// expected). A keep-alive without its answer, or a STUN answer naming
    /// a new address, means the flow failed: the UA registers again at
    /// once.
    pub fn set_keepalive(&mut self, keepalive: Option<KeepAlive>) {
        self.keepalive = keepalive;
        self.keepalive_at = None;
        self.pong_deadline = None;
        self.stun_keepalive.reset();
    }

    /// Our address as the registrar last saw it (`received`/`rport` of the
    /// REGISTER response's Via), if it told us.
    pub fn reflexive_addr(&self) -> Option<std::net::SocketAddr> {
        self.reg.reflexive
    }

    /// Whether the registrar holds our binding (last REGISTER accepted,
    /// flow not known to have failed since).
    pub fn is_registered(&self) -> bool {
        self.reg.registered
    }

    /// The user part of our Contact (the per-device token).
    pub fn contact_token(&self) -> &str {
        &self.contact_token
    }

    /// A CRLF pong arrived from `from` (the driver strips it off a
    /// stream): the flow to the proxy is alive.
    pub fn handle_pong(&mut self, _now: Instant, from: Dest) {
        if from.addr == self.cfg.proxy {
            self.pong_deadline = None;
        }
    }

    /// The stream to `peer` closed. If it carried our registration, the
    /// flow failed (RFC 5626 4.4.1): register again at once.
    pub fn handle_flow_closed(&mut self, now: Instant, peer: Dest) {
        if peer.addr == self.cfg.proxy && peer.transport == self.cfg.transport {
            self.flow_failed(now);
        }
    }

    /// A connection towards `peer` could not be made (refused, timed out,
    /// or, over TLS, the certificate was not the one we trust). If it was
    /// the way to our proxy, the user is told `reason` at once
    /// ([`Event::TransportFailed`]) and a pending registration fails now
    /// instead of after its transaction timeout; it is tried again with
    /// the RFC 5626 backoff.
    pub fn handle_connect_failed(&mut self, now: Instant, peer: Dest, reason: &str) {
        if peer.addr != self.cfg.proxy || peer.transport != self.cfg.transport {
            return;
        }
        self.events.push_back(Event::TransportFailed {
            reason: reason.to_string(),
        });
        if self.reg.pending.take().is_some() && !self.reg.unregistering {
            self.reg.tried_nonce = None;
            self.registration_failed(now, 503);
        }
    }

    fn flow_failed(&mut self, now: Instant) {
        self.pong_deadline = None;
        self.stun_keepalive.reset();
        if let Some(w) = self.netwatch.as_mut() {
            w.check_now(now);
        }
        if self.reg.unregistering || (!self.reg.registered && self.reg.pending.is_none()) {
            return;
        }
        tracing::info!("flow to the registrar failed: registering again");
        if self.reg.registered {
            self.reg.registered = false;
            self.events
                .push_back(Event::RegistrationFailed { status: 430 });
        }
        if self.reg.pending.is_none() {
            self.reg.tried_nonce = None;
            self.send_register(now, None);
        }
    }

    /// With `on`, an incoming re-INVITE is reported as
    /// [`Event::InDialogRequest`] and left unanswered until the application
    /// sends [`Command::RespondInDialog`] (an offer needs an answer the core
    /// cannot write); a second one arriving meanwhile gets 500 with
    /// Retry-After (RFC 3261 14.2). Off (the default), re-INVITEs are
    /// answered 200 with an empty body at once.
    pub fn defer_reinvite_answers(&mut self, on: bool) {
        self.defer_reinvites = on;
    }

    /// Puts `value` in the inner `Ibesip-Dh` header ([`IBESIP_DH`]) of
    /// the ACKs `call` sends from now on (the offerer's key reveal of spec
    /// 6); `None` stops it. Ignored for an unknown call.
    pub fn set_ack_reveal(&mut self, call: CallId, value: Option<String>) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.set_reveal(value);
        }
    }

    /// Our AOR, `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.cfg.user, self.cfg.domain)
    }

    /// Number of live calls (bounded by `max_transactions`).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Our Contact: the device token as user part and again as the
    /// `ctok` URI parameter. The tunnel's privacy rule (spec 5.1) strips
    /// user parts from outer Contacts and in-dialog Request-URIs but keeps
    /// URI parameters, so the proxy routes by `ctok`.
    fn contact(&self) -> String {
        let token = &self.contact_token;
        let local = &self.cfg.local;
        match self.cfg.transport {
            Transport::Udp => format!("<sip:{token}@{local};ctok={token}>"),
            t => format!(
                "<sip:{token}@{local};ctok={token};transport={}>",
                t.uri_param()
            ),
        }
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{};rport",
            self.cfg.transport.via_token(),
            self.cfg.local,
            random_token(self.cfg.headers.token_bytes)
        )
    }

    fn tag(&self) -> String {
        random_token(self.cfg.headers.token_bytes)
    }

    /// Feeds bytes that arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        if from.transport == Transport::Udp && crate::sip::stun::is_stun_message(bytes) {
            self.on_stun(now, from, bytes);
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%e, "unparseable message");
                if let Some(r) = crate::sip::message::bad_request_for(bytes) {
                    self.tx.send_stateless(&r, from);
                }
                return;
            }
        };
        if let Err(e) = msg.validate() {
            tracing::debug!(%e, "malformed message");
            if msg.is_request() && msg.method() != Some(Method::Ack) && msg.header("Via").is_some()
            {
                let resp = Message::response_to(&msg, 400, "Bad Request", None);
                self.tx.send_stateless(&resp, from);
            }
            return;
        }
        match self.tx.on_message(now, from, msg) {
            Incoming::Request(key, req) => match self.filter.incoming(now, req.clone()) {
                Ok(inner) => self.on_request(now, key, inner),
                Err(rej) => {
                    self.events.push_back(Event::Rejected {
                        reason: rej.reason.clone(),
                    });
                    if let Some((status, reason)) = rej.response {
                        let mut resp =
                            Message::response_to(&req, status, &reason, Some(&self.tag()));
                        for (n, v) in rej.headers {
                            resp.push_header(&n, v);
                        }
                        let _ = self.tx.send_response(now, &key, &resp);
                    }
                }
            },
            Incoming::Response(key, resp) => match self.filter.incoming(now, resp) {
                Ok(inner) => self.on_response(now, key, inner),
                Err(rej) => self
                    .events
                    .push_back(Event::Rejected { reason: rej.reason }),
            },
            Incoming::Ack(ack) => match self.filter.incoming(now, ack) {
                Ok(inner) => self.on_ack(inner),
                Err(rej) => self
                    .events
                    .push_back(Event::Rejected { reason: rej.reason }),
            },
            // A 2xx outside any transaction (a fork, a retransmission)
            // passes the filter like any response before it is answered.
            Incoming::Stray(resp) => match self.filter.incoming(now, resp) {
                Ok(inner) => self.on_stray_response(now, inner),
                Err(rej) => self
                    .events
                    .push_back(Event::Rejected { reason: rej.reason }),
            },
            Incoming::Absorbed => {}
        }
    }

    /// Carries out an application command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Register => {
                self.reg.unregistering = false;
                self.reg.tried_nonce = None;
                self.reg.retry_at = None;
                self.send_register(now, None);
            }
            Command::Unregister => {
                self.reg.unregistering = true;
                self.reg.refresh_at = None;
                self.reg.retry_at = None;
                self.keepalive_at = None;
                self.pong_deadline = None;
                self.stun_keepalive.reset();
                self.reg.tried_nonce = None;
                self.send_register(now, None);
            }
            Command::Call { call, target, body } => self.place_call(now, call, &target, body),
            Command::Answer { call, body } => self.answer(now, call, body),
            Command::Reject { call, status } => self.reject(now, call, status),
            Command::Hangup { call } => self.hangup(now, call),
            Command::InDialog { call, method, body } => self.in_dialog(now, call, method, body),
            Command::RevealInInfo { call, ibesip_dh } => self.reveal_in_info(now, call, ibesip_dh),
            Command::RespondInDialog { call, status, body } => {
                self.respond_in_dialog(now, call, status, body)
            }
            Command::Message { target, body } => {
                self.out_of_dialog(now, Method::Message, &target, body)
            }
            Command::Options { target } => {
                self.out_of_dialog(now, Method::Options, &target, Body::default())
            }
            Command::Forget { call } => self.forget(call),
            Command::Refer { call, refer_to } => self.send_refer(now, call, &refer_to),
            Command::RespondRefer { call, status } => self.respond_refer(now, call, status),
            Command::NotifyRefer {
                call,
                sipfrag,
                terminated,
            } => self.notify_refer(now, call, &sipfrag, terminated),
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().filter_map(calls::Call::deadline);
        self.tx
            .poll_timeout()
            .into_iter()
            .chain(self.reg.refresh_at)
            .chain(self.reg.retry_at)
            .chain(self.keepalive_at)
            .chain(self.pong_deadline)
            .chain(self.stun_keepalive.poll_timeout())
            .chain(calls)
            .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Timeout(key, req) => {
                    let resp = Message::response_to(&req, 408, "Request Timeout", None);
                    self.on_response(now, key, resp);
                }
                TxEvent::AckTimeout(key) => {
                    if let Some(call) = self.by_server_tx.remove(&key) {
                        self.end_call(call, EndReason::Timeout);
                    }
                }
            }
        }
        if self.reg.refresh_at.is_some_and(|t| t <= now)
            || self.reg.retry_at.is_some_and(|t| t <= now)
        {
            self.reg.refresh_at = None;
            self.reg.retry_at = None;
            self.reg.tried_nonce = None;
            if self.reg.pending.is_none() {
                self.send_register(now, None);
            }
        }
        if self.pong_deadline.is_some_and(|t| t <= now) {
            self.flow_failed(now);
        }
        match self.stun_keepalive.handle_timeout(now) {
            Some(stun_keepalive::Due::Resend(bytes)) => self.tx.send_raw(bytes, self.proxy_flow()),
            Some(stun_keepalive::Due::Failed) => {
                tracing::info!("no answer to the STUN keep-alive");
                self.flow_failed(now);
            }
            None => {}
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.send_keepalive(now);
        }
        self.call_timers(now);
    }

    /// Next thing to send or report.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(t) = self.tx.poll_transmit() {
            return Some(Output::Transmit(t));
        }
        self.events.pop_front().map(Output::Event)
    }

    /// Next datagram to send (transmits only).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    /// Next event (events only).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Filters `msg`, picks the transport (the configured one; over UDP,
    /// TCP for a message over 1300 bytes), and starts a client transaction
    /// to the outbound proxy.
    fn send_request(&mut self, now: Instant, mut msg: Message) -> Option<TxKey> {
        msg.set_header("Via", self.via());
        if let Some(ua) = &self.cfg.headers.user_agent {
            msg.set_header("User-Agent", ua.clone());
        }
        let mut msg = match self.filter.outgoing(now, msg) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%e, "filter refused outgoing request");
                return None;
            }
        };
        let mut transport = self.cfg.transport;
        if transport == Transport::Udp && msg.to_bytes(self.cfg.headers.form).len() > 1300 {
            transport = Transport::Tcp;
            if let Some(v) = msg.header("Via") {
                let v = v.replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1);
                msg.replace_first("Via", v);
            }
        }
        let dest = Dest {
            addr: self.cfg.proxy,
            transport,
        };
        match self.tx.send_request(now, msg, dest) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(%e, "cannot send request");
                None
            }
        }
    }

    /// Filters and sends a response in server transaction `key`.
    fn respond(&mut self, now: Instant, key: &TxKey, resp: Message) {
        match self.filter.outgoing(now, resp) {
            Ok(m) => {
                if let Err(e) = self.tx.send_response(now, key, &m) {
                    tracing::debug!(%e, "response not sent");
                }
            }
            Err(e) => tracing::warn!(%e, "filter refused response"),
        }
    }

    /// Our flow to the outbound proxy.
    fn proxy_flow(&self) -> Dest {
        Dest {
            addr: self.cfg.proxy,
            transport: self.cfg.transport,
        }
    }

    /// A STUN datagram on the UDP port: the answer to our keep-alive
    /// from the proxy, or nothing of ours.
    fn on_stun(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        if from.addr != self.cfg.proxy {
            return;
        }
        let registrar_saw = self.reg.reflexive.filter(|_| self.reg.rport_filled);
        match self.stun_keepalive.handle_answer(bytes, registrar_saw) {
            stun_keepalive::Answer::NotOurs | stun_keepalive::Answer::Alive => {}
            stun_keepalive::Answer::Moved { old, new } => {
                tracing::info!(%old, %new, "STUN keep-alive: the NAT maps our flow elsewhere now");
                self.flow_failed(now);
            }
        }
    }

    /// Sends a keep-alive to the outbound proxy over our flow (see
    /// [`Self::set_keepalive`]) and arms the next one, and the deadline of
    /// its answer.
    fn send_keepalive(&mut self, now: Instant) {
        let Some(ka) = self.keepalive else {
            self.keepalive_at = None;
            return;
        };
        self.keepalive_at = Some(now + ka.interval);
        if !self.reg.registered {
            return;
        }
        let dest = self.proxy_flow();
        if self.cfg.transport == Transport::Udp && self.reg.outbound {
            if let Some(bytes) = self.stun_keepalive.start(now, ka.pong_timeout) {
                self.tx.send_raw(bytes, dest);
            }
            return;
        }
        self.tx.send_raw(b"\r\n\r\n".to_vec(), dest);
        if self.cfg.transport.is_reliable() && self.pong_deadline.is_none() {
            self.pong_deadline = Some(now + ka.pong_timeout);
        }
    }

    fn registration_failed(&mut self, now: Instant, status: u16) {
        self.reg.registered = false;
        self.reg.refresh_at = None;
        self.events.push_back(Event::RegistrationFailed { status });
        if self.reg.unregistering {
            return;
        }
        if matches!(status, 408 | 503) && self.fail_over(now, status) {
            return;
        }
        // RFC 5626 4.5: try again after an exponential, jittered wait.
        let wait = retry_backoff(self.reg.failures, random_jitter());
        self.reg.failures = self.reg.failures.saturating_add(1);
        tracing::info!(
            status,
            wait_secs = wait.as_secs(),
            "registration failed; retrying later"
        );
        self.reg.retry_at = Some(now + wait);
    }

    /// The current target did not answer: moves on to the next of
    /// [`Self::fallback`] and registers there, unless every target was
    /// tried in this round (then `false`: the backoff applies).
    fn fail_over(&mut self, now: Instant, status: u16) -> bool {
        if self.failovers_left == 0 || self.fallback.is_empty() {
            // A new round after the backoff.
            self.failovers_left = self.fallback.len();
            return false;
        }
        self.failovers_left -= 1;
        let from = self.proxy_flow();
        let next = self.fallback.remove(0);
        self.fallback.push(from);
        tracing::info!(%status, from = %from.addr, to = %next.addr, "SIP proxy does not answer: trying the next one");
        self.cfg.proxy = next.addr;
        self.cfg.transport = next.transport;
        // Nothing of the old flow holds for the new one.
        self.reg.reflexive = None;
        self.reg.rport_filled = false;
        self.reg.outbound = false;
        self.reg.tried_nonce = None;
        self.reg.retry_at = None;
        self.pong_deadline = None;
        self.stun_keepalive.reset();
        if let Some(w) = self.netwatch.as_mut() {
            // The route towards the new target may leave from elsewhere.
            w.check_now(now);
        }
        self.events.push_back(Event::ProxyChanged {
            from,
            proxy: next,
            status,
        });
        self.send_register(now, None);
        true
    }

    fn send_register(&mut self, now: Instant, auth: Option<String>) {
        let Ok(uri) = Uri::try_from(format!("sip:{}", self.cfg.domain).as_str()) else {
            self.events
                .push_back(Event::RegistrationFailed { status: 400 });
            return;
        };
        self.reg.cseq += 1;
        let expires = if self.reg.unregistering {
            0
        } else {
            self.cfg.expires
        };
        let mut m = Message::request(Method::Register, uri);
        m.push_header("Max-Forwards", "70");
        m.push_header("From", format!("<{}>;tag={}", self.aor(), self.reg.tag));
        m.push_header("To", format!("<{}>", self.aor()));
        m.push_header("Call-ID", self.reg.call_id.clone());
        m.push_header("CSeq", format!("{} REGISTER", self.reg.cseq));
        // RFC 5626 4.2: the instance and the flow's reg-id.
        m.push_header(
            "Contact",
            format!(
                "{};+sip.instance=\"{}\";reg-id=1;expires={expires}",
                self.contact(),
                self.instance
            ),
        );
        m.push_header("Supported", "outbound, path");
        m.push_header("Expires", expires.to_string());
        if let Some(a) = auth {
            m.push_header("Authorization", a);
        }
        self.reg.pending = self.send_request(now, m);
    }

    fn on_register_response(&mut self, now: Instant, resp: Message) {
        let status = resp.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        self.reg.pending = None;
        if status == 401 || status == 407 {
            let name = if status == 401 {
                "WWW-Authenticate"
            } else {
                "Proxy-Authenticate"
            };
            // Only our own provider's realm gets an answer: a digest answer
            // for another realm would hand its holder an offline guess at
            // our password, or let it register us elsewhere.
            let domain = self.cfg.domain.clone();
            let own = resp.header_values(name).filter(|v| {
                Challenge::parse(v).is_some_and(|c| c.realm.eq_ignore_ascii_case(&domain))
            });
            let ch = Challenge::best(own);
            if ch.is_none() {
                if let Some(foreign) = resp.header_values(name).find_map(Challenge::parse) {
                    tracing::warn!(realm = %foreign.realm, "challenge for a foreign realm not answered");
                    self.events.push_back(Event::ChallengeRefused {
                        realm: foreign.realm,
                        status,
                    });
                    self.events.push_back(Event::RegistrationFailed { status });
                    return;
                }
            }
            match ch {
                Some(ch)
                    if self.reg.tried_nonce.as_deref() != Some(ch.nonce.as_str()) || ch.stale =>
                {
                    self.reg.tried_nonce = Some(ch.nonce.clone());
                    self.reg.nc += 1;
                    let uri = format!("sip:{}", self.cfg.domain);
                    let a = ch.answer(
                        &self.cfg.user,
                        &self.cfg.password,
                        "REGISTER",
                        &uri,
                        self.reg.nc,
                        &random_token(12),
                    );
                    self.send_register(now, Some(a));
                }
                _ => self.registration_failed(now, status),
            }
            return;
        }
        self.reg.tried_nonce = None;
        if status == 423 && self.adopt_min_expires(&resp) {
            self.send_register(now, None);
            return;
        }
        if !(200..300).contains(&status) {
            self.registration_failed(now, status);
            return;
        }
        if self.reg.unregistering {
            self.reg.registered = false;
            self.events.push_back(Event::Unregistered);
            return;
        }
        let seen = resp.header("Via").and_then(crate::sip::proxy::via_dest);
        if let Some(seen) = seen.map(|d| d.addr) {
            if self.reg.reflexive != Some(seen) {
                tracing::info!(%seen, "the registrar sees us at this address");
            }
            if let Some(old) = self.reg.reflexive.filter(|o| self.public_moved(*o, seen)) {
                // A NAT rebooted or renumbered: the calls' media mappings
                // went with it.
                tracing::info!(%old, new = %seen, "network changed: our public address moved");
                self.events.push_back(Event::NetworkChanged {
                    local: self.cfg.local.clone(),
                    public: Some(seen),
                });
            }
            self.reg.reflexive = Some(seen);
        }
        self.reg.failures = 0;
        self.failovers_left = self.fallback.len();
        self.reg.registered = true;
        self.reg.rport_filled = resp
            .header("Via")
            .and_then(|v| crate::sip::message::param(v, "rport"))
            .is_some_and(|p| p.parse::<u16>().is_ok());
        self.reg.outbound = resp
            .header_values("Require")
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("outbound"));
        // The registrar's view is the baseline of the STUN keep-alives.
        self.stun_keepalive.reset();
        if let (Some(ka), None) = (self.keepalive, self.keepalive_at) {
            self.keepalive_at = Some(now + ka.interval);
        }
        // Our own binding's lifetime: the 200 lists every device's.
        let mine = format!("sip:{}@", self.contact_token);
        let granted = resp
            .header_values("Contact")
            .filter(|c| crate::sip::message::addr_uri(c).starts_with(&mine))
            .filter_map(|c| crate::sip::message::param(c, "expires"))
            .filter_map(|e| e.parse::<u32>().ok())
            .next()
            .or_else(|| resp.header("Expires").and_then(|e| e.parse().ok()))
            .unwrap_or(self.cfg.expires);
        // Refresh at half the lifetime, at most 10 minutes before expiry.
        let lead = (granted / 2).min(600);
        self.reg.refresh_at = Some(now + Duration::from_secs(u64::from(granted - lead)));
        self.events
            .push_back(Event::Registered { expires: granted });
    }

    /// A 423 (Interval Too Brief, RFC 3261 10.2.8): asks for the
    /// registrar's `Min-Expires` from now on, when that is longer than
    /// what we asked and at most a day (a registrar asking more is
    /// refused as a failure). `false`: nothing to adopt, the 423 is a
    /// failure; so a registrar repeating 423 cannot make the UA loop.
    fn adopt_min_expires(&mut self, resp: &Message) -> bool {
        const MAX_ADOPTED: u32 = 86_400;
        let Some(min) = resp
            .header("Min-Expires")
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            return false;
        };
        if min <= self.cfg.expires || min > MAX_ADOPTED || self.reg.unregistering {
            return false;
        }
        tracing::info!(
            asked = self.cfg.expires,
            min,
            "registrar asks a longer registration"
        );
        self.cfg.expires = min;
        true
    }

    /// Whether our public address moved from `old` to `new`: over UDP
    /// the address or port (the NAT's mapping of our one socket), over a
    /// stream only the address (each connection has its own port).
    fn public_moved(&self, old: std::net::SocketAddr, new: std::net::SocketAddr) -> bool {
        if self.cfg.transport.is_reliable() {
            old.ip() != new.ip()
        } else {
            old != new
        }
    }

    fn out_of_dialog(&mut self, now: Instant, method: Method, target: &str, body: Body) {
        let Some(uri) = addr_parse(target) else {
            self.events.push_back(Event::RequestCompleted {
                method,
                status: 416,
            });
            return;
        };
        let mut m = self.new_request(method, uri, target);
        set_body(&mut m, body);
        if let Some(k) = self.send_request(now, m) {
            self.others.insert(k, (method, None));
        }
    }

    fn outer_from(&self) -> String {
        if self.cfg.headers.anonymous_from {
            format!(
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
                self.tag()
            )
        } else {
            format!("<{}>;tag={}", self.aor(), self.tag())
        }
    }

    fn new_request(&self, method: Method, uri: Uri, target: &str) -> Message {
        let mut m = Message::request(method, uri);
        m.push_header("Max-Forwards", "70");
        m.push_header("From", self.outer_from());
        m.push_header("To", format!("<{}>", crate::sip::message::addr_uri(target)));
        m.push_header("Call-ID", random_token(16));
        m.push_header("CSeq", format!("1 {method}"));
        m
    }

    fn on_request(&mut self, now: Instant, key: TxKey, req: Message) {
        let method = req.method().unwrap_or(Method::Options);
        if let Some(id) = DialogId::of_incoming(&req) {
            return self.on_in_dialog_request(now, key, id, req);
        }
        match method {
            Method::Invite => self.on_invite(now, key, req),
            Method::Refer => self.refuse_refer_outside_dialog(now, key, req),
            Method::Cancel => self.on_cancel(now, key, req),
            Method::Options => {
                let mut r = Message::response_to(&req, 200, "OK", Some(&self.tag()));
                r.push_header(
                    "Allow",
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, REFER, NOTIFY",
                );
                r.push_header("Accept", "application/pkcs7-mime, application/sdp");
                self.respond(now, &key, r);
            }
            Method::Message => {
                let from = req.header("From").unwrap_or("").to_string();
                let body = body_of(&req);
                let r = Message::response_to(&req, 200, "OK", Some(&self.tag()));
                self.respond(now, &key, r);
                self.events.push_back(Event::MessageReceived { from, body });
            }
            Method::Bye | Method::Info | Method::Update => {
                let r = Message::response_to(
                    &req,
                    481,
                    "Call/Transaction Does Not Exist",
                    Some(&self.tag()),
                );
                self.respond(now, &key, r);
            }
            _ => {
                let r = Message::response_to(&req, 405, "Method Not Allowed", Some(&self.tag()));
                self.respond(now, &key, r);
            }
        }
    }

    fn on_response(&mut self, now: Instant, key: TxKey, resp: Message) {
        if self.reg.pending.as_ref() == Some(&key) {
            return self.on_register_response(now, resp);
        }
        if let Some(call) = self.by_client_tx.get(&key).copied() {
            return self.on_call_response(now, call, key, resp);
        }
        let status = resp.status().unwrap_or(500);
        if status >= 200 {
            if let Some((method, call)) = self.others.remove(&key) {
                if let (Method::Invite, Some(call), true) = (method, call, status < 300) {
                    self.ack_reinvite(now, call, &resp);
                }
                if let Some(call) = call {
                    self.events.push_back(Event::InDialogResponse {
                        call,
                        method,
                        status,
                        body: body_of(&resp),
                    });
                }
                self.events
                    .push_back(Event::RequestCompleted { method, status });
            }
        }
    }
}

fn set_body(m: &mut Message, body: Body) {
    if let Some(ct) = body.content_type {
        m.set_header("Content-Type", ct);
    }
    m.body = body.bytes;
}

fn body_of(m: &Message) -> Body {
    Body {
        content_type: m.header("Content-Type").map(str::to_string),
        bytes: m.body.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sip::digest::Password;
    use crate::sip::filter::NoFilter;
    use crate::sip::message::{addr_uri, param, HeaderForm};
    use crate::sip::timers::Timers;

    fn ua(headers: HeaderPolicy) -> UserAgent {
        ua_over(headers, Transport::Udp)
    }

    fn ua_over(headers: HeaderPolicy, transport: Transport) -> UserAgent {
        let cfg = UaConfig {
            user: "alice".into(),
            domain: "example.invalid".into(),
            password: Password::new("pw"),
            proxy: "127.0.0.1:5060".parse().unwrap(),
            local: "ua.invalid:5062".into(),
            transport,
            expires: 600,
            headers,
            timers: Timers::default(),
            max_transactions: 8,
        };
        UserAgent::new(cfg, Box::new(NoFilter))
    }

    fn first_request(ua: &mut UserAgent) -> String {
        let now = Instant::now();
        ua.handle_command(
            now,
            Command::Options {
                target: "sip:bob@example.invalid".into(),
            },
        );
        String::from_utf8(ua.poll_transmit().unwrap().bytes).unwrap()
    }

    #[test]
    fn default_outer_headers_are_minimal() {
        let text = first_request(&mut ua(HeaderPolicy::default()));
        assert!(text.contains("\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag="));
        assert!(text.contains("\r\nv: SIP/2.0/UDP ua.invalid:5062;branch=z9hG4bK"));
        assert!(!text.contains("alice"));
        assert!(!text.to_ascii_lowercase().contains("user-agent"));
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(
            m.call_id().unwrap().len(),
            22,
            "16 random bytes in base64url"
        );
        assert_eq!(m.from_tag().unwrap().len(), 8);
    }

    const PROXY: &str = "127.0.0.1:5060";

    /// The REGISTER the UA sent, answered `status` by the registrar, which
    /// saw it from 127.0.0.7:40000 (`received`/`rport`).
    fn answer_register(ua: &mut UserAgent, now: Instant, status: u16) -> Message {
        answer_register_from(ua, now, status, false)
    }

    /// [`answer_register`] by a registrar that says `Require: outbound`
    /// when `outbound`.
    fn answer_register_from(
        ua: &mut UserAgent,
        now: Instant,
        status: u16,
        outbound: bool,
    ) -> Message {
        let t = ua.poll_transmit().unwrap();
        assert_eq!(t.dest.addr, PROXY.parse().unwrap());
        let req = Message::parse(&t.bytes).unwrap();
        assert_eq!(req.method(), Some(Method::Register));
        let mut r = Message::response_to(&req, status, "X", Some("rt"));
        let via = req
            .header("Via")
            .unwrap()
            .replace(";rport", ";rport=40000;received=127.0.0.7");
        r.replace_first("Via", via);
        if status == 200 {
            // Another device of ours first: the UA takes its own lifetime.
            r.push_header("Contact", "<sip:other@127.0.0.1:1>;expires=30");
            let mine = addr_uri(req.header("Contact").unwrap()).to_string();
            r.push_header("Contact", format!("<{mine}>;expires=600"));
            if outbound {
                r.push_header("Require", "outbound");
            }
        }
        let from = Dest {
            addr: PROXY.parse().unwrap(),
            transport: t.dest.transport,
        };
        ua.handle_datagram(now, from, &r.to_bytes(HeaderForm::Full));
        req
    }

    fn events(ua: &mut UserAgent) -> Vec<Event> {
        std::iter::from_fn(|| ua.poll_event()).collect()
    }

    #[test]
    fn register_names_the_instance_and_token_reads_rport_and_keeps_alive() {
        let mut ua = ua(HeaderPolicy::default());
        ua.set_keepalive(Some(KeepAlive::default()));
        let now = Instant::now();
        ua.handle_command(now, Command::Register);
        let req = answer_register(&mut ua, now, 200);
        let contact = req.header("Contact").unwrap();
        let token = ua.contact_token().to_string();
        assert!(token.len() >= 16, "{token}");
        assert!(
            contact.starts_with(&format!(
                "<sip:{token}@ua.invalid:5062;ctok={token}>;+sip.instance=\"<urn:uuid:"
            )),
            "{contact}"
        );
        assert_eq!(param(contact, "reg-id"), Some("1"));
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);
        assert!(ua.is_registered());
        assert_eq!(
            ua.reflexive_addr(),
            Some("127.0.0.7:40000".parse().unwrap())
        );
        // A double CRLF to the proxy every 25 s while registered.
        let due = now + Duration::from_secs(25);
        assert!(ua.poll_timeout().unwrap() <= due);
        ua.handle_timeout(due - Duration::from_secs(1));
        assert!(ua.poll_transmit().is_none());
        ua.handle_timeout(due);
        let ka = ua.poll_transmit().unwrap();
        assert_eq!(ka.bytes, b"\r\n\r\n");
        assert_eq!(ka.dest, Dest::udp(PROXY.parse().unwrap()));
        assert_eq!(ua.poll_timeout(), Some(due + Duration::from_secs(25)));
        // A second UA gets another token and instance.
        let other = self::ua(HeaderPolicy::default());
        assert_ne!(other.contact_token(), token);
    }

    /// Registered over UDP with a registrar of RFC 5626: the keep-alive
    /// is a STUN binding request; the answer from where the registrar saw
    /// us keeps the flow, an answer naming a new address (a NAT that
    /// rebooted) or no answer within the pong timeout makes the UA
    /// register again at once; an answer from anyone but the proxy
    /// counts for nothing.
    #[test]
    fn udp_keepalives_are_stun_and_detect_a_rebooted_nat() {
        use crate::sip::stun::binding_success;
        let mut ua = ua(HeaderPolicy::default());
        ua.set_keepalive(Some(KeepAlive::default()));
        let t0 = Instant::now();
        ua.handle_command(t0, Command::Register);
        answer_register_from(&mut ua, t0, 200, true);
        events(&mut ua);
        let proxy = Dest::udp(PROXY.parse().unwrap());
        let seen: std::net::SocketAddr = "127.0.0.7:40000".parse().unwrap();
        let keepalive = |ua: &mut UserAgent, at: Instant| {
            ua.handle_timeout(at);
            let t = ua.poll_transmit().expect("a keep-alive");
            assert_eq!(t.dest, proxy);
            assert!(crate::sip::stun::is_stun_message(&t.bytes), "{:?}", t.bytes);
            t.bytes
        };
        // Answered from where the registrar saw us: nothing happens.
        let t1 = t0 + Duration::from_secs(25);
        let req = keepalive(&mut ua, t1);
        ua.handle_datagram(t1, proxy, &binding_success(&req, seen).unwrap());
        ua.handle_timeout(t1 + Duration::from_secs(11));
        assert!(ua.poll_transmit().is_none(), "no resend, no REGISTER");
        assert!(ua.is_registered());

        // The NAT rebooted: the answer names a new port. An answer from
        // someone else than the proxy is ignored first.
        let t2 = t1 + Duration::from_secs(25);
        let req = keepalive(&mut ua, t2);
        let moved: std::net::SocketAddr = "127.0.0.7:51111".parse().unwrap();
        let stranger = Dest::udp("127.0.0.9:5060".parse().unwrap());
        ua.handle_datagram(t2, stranger, &binding_success(&req, moved).unwrap());
        assert!(ua.poll_transmit().is_none());
        assert!(ua.is_registered());
        ua.handle_datagram(t2, proxy, &binding_success(&req, moved).unwrap());
        assert!(!ua.is_registered());
        assert_eq!(
            events(&mut ua),
            vec![Event::RegistrationFailed { status: 430 }]
        );
        answer_register_from(&mut ua, t2, 200, true);
        assert!(ua.is_registered());

        // No answer at all: resent, then the flow fails after 10 s.
        let t3 = t2 + Duration::from_secs(25);
        let req = keepalive(&mut ua, t3);
        let mut now = t3;
        let mut resends = 0;
        while ua.is_registered() {
            now = ua.poll_timeout().unwrap();
            ua.handle_timeout(now);
            while let Some(t) = ua.poll_transmit() {
                if t.bytes == req {
                    resends += 1;
                } else {
                    assert!(Message::parse(&t.bytes).unwrap().method() == Some(Method::Register));
                }
            }
        }
        assert_eq!(resends, 4);
        assert_eq!(now - t3, Duration::from_secs(10));
    }

    /// A registrar without `Require: outbound` gets CRLF keep-alives over
    /// UDP (it may not answer STUN), and a STUN-looking datagram from it
    /// changes nothing.
    #[test]
    fn udp_keepalives_to_a_plain_registrar_are_crlf() {
        let mut ua = ua(HeaderPolicy::default());
        ua.set_keepalive(Some(KeepAlive::default()));
        let t0 = Instant::now();
        ua.handle_command(t0, Command::Register);
        answer_register_from(&mut ua, t0, 200, false);
        events(&mut ua);
        let t1 = t0 + Duration::from_secs(25);
        ua.handle_timeout(t1);
        assert_eq!(ua.poll_transmit().unwrap().bytes, b"\r\n\r\n");
        let (_, req) = crate::sip::stun::BindingRequest::new().unwrap();
        let answer = crate::sip::stun::binding_success(&req, "127.0.0.7:1".parse().unwrap());
        ua.handle_datagram(t1, Dest::udp(PROXY.parse().unwrap()), &answer.unwrap());
        ua.handle_timeout(t1 + Duration::from_secs(24));
        assert!(ua.poll_transmit().is_none());
        assert!(ua.is_registered());
        assert!(events(&mut ua).is_empty());
    }

    /// A new address towards the proxy: Via and Contact name it, the UA
    /// registers again at once with the same instance and reg-id (the
    /// registrar replaces the binding), and says so; a new public address
    /// in a later REGISTER response is a network change too.
    #[test]
    fn a_network_change_re_registers_at_once_with_the_same_instance() {
        let mut ua = ua(HeaderPolicy::default());
        let bound: std::net::SocketAddr = "0.0.0.0:5062".parse().unwrap();
        let every = Duration::from_secs(2);
        ua.set_net_watch(Some(NetWatch::new(
            bound,
            Some("192.168.1.10".parse().unwrap()),
            every,
        )));
        let now = Instant::now();
        let check = ua.route_check(now).unwrap();
        assert_eq!(check.due, now);
        assert_eq!(check.proxy, PROXY.parse().unwrap());
        assert_eq!(check.bound, bound);
        ua.handle_command(now, Command::Register);
        let first = answer_register(&mut ua, now, 200);
        events(&mut ua);
        let same = RouteProbe {
            route: Some("192.168.1.10".parse().unwrap()),
            bound_alive: true,
        };
        assert_eq!(ua.handle_route(now, same), None);
        assert!(ua.poll_transmit().is_none());
        assert_eq!(ua.route_check(now).unwrap().due, now + every);
        let t1 = now + every;
        let moved = RouteProbe {
            route: Some("10.0.0.7".parse().unwrap()),
            bound_alive: true,
        };
        let change = ua.handle_route(t1, moved).unwrap();
        assert_eq!(change.rebind, None);
        assert_eq!(
            events(&mut ua),
            vec![Event::NetworkChanged {
                local: "10.0.0.7:5062".into(),
                public: None
            }]
        );
        let again = answer_register(&mut ua, t1, 200);
        let (c1, c2) = (
            first.header("Contact").unwrap(),
            again.header("Contact").unwrap(),
        );
        assert!(c2.contains("@10.0.0.7:5062;"), "{c2}");
        assert!(again.header("Via").unwrap().contains(" 10.0.0.7:5062;"));
        assert_eq!(param(c1, "+sip.instance"), param(c2, "+sip.instance"));
        assert_eq!(param(c2, "reg-id"), Some("1"));
        assert_eq!(first.call_id(), again.call_id(), "the same registration");
        assert!(again.cseq().unwrap().0 > first.cseq().unwrap().0);
        // The registrar saw us from where it saw us before the change:
        // that is no second change (the old public address was forgotten).
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);
        // A refresh answered from another public address: a NAT reboot.
        ua.handle_command(t1, Command::Register);
        let t = ua.poll_transmit().unwrap();
        let req = Message::parse(&t.bytes).unwrap();
        let mut r = Message::response_to(&req, 200, "OK", Some("rt"));
        let via = req
            .header("Via")
            .unwrap()
            .replace(";rport", ";rport=41000;received=127.0.0.8");
        r.replace_first("Via", via);
        ua.handle_datagram(t1, t.dest, &r.to_bytes(HeaderForm::Full));
        assert_eq!(
            events(&mut ua),
            vec![
                Event::NetworkChanged {
                    local: "10.0.0.7:5062".into(),
                    public: Some("127.0.0.8:41000".parse().unwrap())
                },
                Event::Registered { expires: 600 }
            ]
        );
    }

    #[test]
    fn failed_registration_is_retried_with_jittered_backoff() {
        let mut ua = ua(HeaderPolicy::default());
        let now = Instant::now();
        ua.handle_command(now, Command::Register);
        answer_register(&mut ua, now, 503);
        assert_eq!(
            events(&mut ua),
            vec![Event::RegistrationFailed { status: 503 }]
        );
        assert!(!ua.is_registered());
        // RFC 5626 4.5: 30 s * 2^0, jittered into [15 s, 30 s] (after the
        // transaction's own Timer K).
        ua.handle_timeout(now + Duration::from_secs(6));
        assert!(ua.poll_transmit().is_none());
        let retry = ua.poll_timeout().unwrap();
        assert!(retry >= now + Duration::from_secs(15) && retry <= now + Duration::from_secs(30));
        ua.handle_timeout(retry);
        answer_register(&mut ua, retry, 503);
        // Second failure: 60 s, jittered into [30 s, 60 s].
        ua.handle_timeout(retry + Duration::from_secs(6));
        let again = ua.poll_timeout().unwrap();
        assert!(
            again >= retry + Duration::from_secs(30) && again <= retry + Duration::from_secs(60)
        );
        ua.handle_timeout(again);
        answer_register(&mut ua, again, 200);
        assert!(ua.is_registered());
        assert_eq!(retry_backoff(0, 1.0), Duration::from_secs(30));
        assert_eq!(retry_backoff(3, 0.5), Duration::from_secs(120));
        assert_eq!(retry_backoff(40, 1.0), Duration::from_secs(1800));
        assert_eq!(retry_backoff(1, f64::NAN), Duration::from_secs(60));
    }

    #[test]
    fn a_failed_stream_flow_is_registered_again_at_once() {
        for transport in [Transport::Tcp, Transport::Tls] {
            a_failed_flow_is_registered_again(transport);
        }
    }

    fn a_failed_flow_is_registered_again(transport: Transport) {
        let mut ua = ua_over(HeaderPolicy::default(), transport);
        ua.set_keepalive(Some(KeepAlive::default()));
        let now = Instant::now();
        let proxy = Dest {
            addr: PROXY.parse().unwrap(),
            transport,
        };
        ua.handle_command(now, Command::Register);
        answer_register(&mut ua, now, 200);
        events(&mut ua);
        // The connection to the proxy closes: re-REGISTER now.
        ua.handle_flow_closed(now, proxy);
        assert_eq!(
            events(&mut ua),
            vec![Event::RegistrationFailed { status: 430 }]
        );
        answer_register(&mut ua, now, 200);
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);
        // A ping answered by its pong keeps the flow; one left unanswered
        // for 10 s means it failed.
        let t1 = now + Duration::from_secs(25);
        ua.handle_timeout(t1);
        assert_eq!(ua.poll_transmit().unwrap().bytes, b"\r\n\r\n");
        ua.handle_pong(t1, proxy);
        let t2 = t1 + Duration::from_secs(25);
        ua.handle_timeout(t2);
        assert_eq!(ua.poll_transmit().unwrap().bytes, b"\r\n\r\n");
        assert!(ua.poll_transmit().is_none());
        assert_eq!(ua.poll_timeout(), Some(t2 + Duration::from_secs(10)));
        ua.handle_timeout(t2 + Duration::from_secs(10));
        assert_eq!(
            events(&mut ua),
            vec![Event::RegistrationFailed { status: 430 }]
        );
        answer_register(&mut ua, t2 + Duration::from_secs(10), 200);
        assert!(ua.is_registered());
    }

    /// The pong timeout is the configured one, not a fixed 10 s: with 3 s
    /// a ping unanswered for 2.999 s still holds the flow, at 3 s it
    /// failed and the UA registers again; the same over UDP's STUN.
    #[test]
    fn the_pong_timeout_is_the_configured_one() {
        for (transport, outbound) in [(Transport::Tls, false), (Transport::Udp, true)] {
            let mut ua = ua_over(HeaderPolicy::default(), transport);
            let ka = KeepAlive {
                interval: Duration::from_secs(25),
                pong_timeout: Duration::from_secs(3),
            };
            ua.set_keepalive(Some(ka));
            let now = Instant::now();
            ua.handle_command(now, Command::Register);
            answer_register_from(&mut ua, now, 200, outbound);
            events(&mut ua);
            let t = now + ka.interval;
            ua.handle_timeout(t);
            assert!(ua.poll_transmit().is_some(), "{transport:?}: the ping");
            if transport.is_reliable() {
                assert_eq!(ua.poll_timeout(), Some(t + ka.pong_timeout));
            }
            // (Over UDP the STUN request is sent again meanwhile.)
            ua.handle_timeout(t + ka.pong_timeout - Duration::from_millis(1));
            assert!(ua.is_registered(), "{transport:?}");
            assert!(events(&mut ua).is_empty(), "{transport:?}");
            while let Some(x) = ua.poll_transmit() {
                assert!(!x.bytes.starts_with(b"REGISTER"), "{transport:?}");
            }
            ua.handle_timeout(t + ka.pong_timeout);
            assert_eq!(
                events(&mut ua),
                vec![Event::RegistrationFailed { status: 430 }],
                "{transport:?}"
            );
            let again = Message::parse(&ua.poll_transmit().unwrap().bytes).unwrap();
            assert_eq!(again.method(), Some(Method::Register), "{transport:?}");
        }
    }

    /// Over TLS: Via `SIP/2.0/TLS`, a Contact with `transport=tls`, and
    /// a tunneled-size request stays on the TLS flow (never falls back to
    /// TCP in clear); a connection to the proxy that cannot be made (a
    /// certificate refused) is reported at once and the pending
    /// registration fails now, to be retried with backoff.
    /// Answers the REGISTER of transmit `t` with `status` from where it
    /// went (`Require: outbound` on a 200).
    fn answer_at(ua: &mut UserAgent, now: Instant, t: &Transmit, status: u16) {
        let req = Message::parse(&t.bytes).unwrap();
        assert_eq!(req.method(), Some(Method::Register));
        let mut r = Message::response_to(&req, status, "X", Some("rt"));
        if status == 200 {
            let mine = addr_uri(req.header("Contact").unwrap()).to_string();
            r.push_header("Contact", format!("<{mine}>;expires=600"));
            r.push_header("Require", "outbound");
        }
        ua.handle_datagram(now, t.dest, &r.to_bytes(HeaderForm::Full));
    }

    /// Runs the UA's timers from `now` until it sends a REGISTER to
    /// `to` (within `limit`); every other transmit is dropped (the dead
    /// proxy hears nothing). Returns the time and the REGISTER.
    fn until_register_to(
        ua: &mut UserAgent,
        mut now: Instant,
        to: Dest,
        limit: Duration,
    ) -> (Instant, Transmit) {
        let end = now + limit;
        loop {
            while let Some(t) = ua.poll_transmit() {
                let is_register =
                    Message::parse(&t.bytes).is_ok_and(|m| m.method() == Some(Method::Register));
                if t.dest == to && is_register {
                    return (now, t);
                }
            }
            now = ua.poll_timeout().unwrap();
            assert!(now <= end, "no REGISTER to {to:?} within {limit:?}");
            ua.handle_timeout(now);
        }
    }

    /// 423 Interval Too Brief (RFC 3261 10.2.8): the UA asks again with
    /// the registrar's Min-Expires, once; a 423 without one, or one
    /// naming no longer lifetime, or an absurd one, is a failure (no loop).
    #[test]
    fn interval_too_brief_is_asked_again_with_min_expires() {
        let expires_of = |t: &Transmit| {
            Message::parse(&t.bytes)
                .unwrap()
                .header("Expires")
                .unwrap()
                .to_string()
        };
        let too_brief = |ua: &mut UserAgent, now, min: Option<&str>| {
            let t = ua.poll_transmit().unwrap();
            let req = Message::parse(&t.bytes).unwrap();
            let mut r = Message::response_to(&req, 423, "Interval Too Brief", Some("rt"));
            if let Some(m) = min {
                r.push_header("Min-Expires", m);
            }
            ua.handle_datagram(now, t.dest, &r.to_bytes(HeaderForm::Full));
        };
        let now = Instant::now();
        let mut ua = ua(HeaderPolicy::default());
        ua.handle_command(now, Command::Register);
        too_brief(&mut ua, now, Some("3600"));
        let again = ua.poll_transmit().unwrap();
        assert_eq!(expires_of(&again), "3600");
        // The same answer again: no longer lifetime to adopt, a failure.
        let req = Message::parse(&again.bytes).unwrap();
        let mut r = Message::response_to(&req, 423, "Interval Too Brief", Some("rt"));
        r.push_header("Min-Expires", "3600");
        ua.handle_datagram(now, again.dest, &r.to_bytes(HeaderForm::Full));
        assert!(ua.poll_transmit().is_none());
        assert_eq!(
            events(&mut ua),
            vec![Event::RegistrationFailed { status: 423 }]
        );
        for bad in [None, Some("86401"), Some("soon"), Some("60")] {
            let mut ua = ua_over(HeaderPolicy::default(), Transport::Udp);
            ua.handle_command(now, Command::Register);
            too_brief(&mut ua, now, bad);
            assert!(ua.poll_transmit().is_none(), "{bad:?}");
            assert_eq!(
                events(&mut ua),
                vec![Event::RegistrationFailed { status: 423 }],
                "{bad:?}"
            );
        }
    }

    /// RFC 3263 4.3 / RFC 5626 4.5 at run time: the proxy in use dies
    /// after registering. The STUN keep-alive finds the flow failed, the
    /// re-REGISTER to it times out (408): the UA moves on to the next
    /// target of its list at once, reports it, and registers there (same
    /// instance). Each target is tried once per round (a 503 answer or a
    /// refused connection moves on too); when all failed, the RFC 5626
    /// backoff applies instead of a loop.
    #[test]
    fn a_proxy_that_stops_answering_is_left_for_the_next_target() {
        let mut ua = ua(HeaderPolicy::default());
        ua.set_keepalive(Some(KeepAlive::default()));
        let a = Dest::udp(PROXY.parse().unwrap());
        let b = Dest::udp("127.0.0.2:5060".parse().unwrap());
        let c = Dest {
            addr: "127.0.0.3:5060".parse().unwrap(),
            transport: Transport::Tcp,
        };
        // The proxy in use is dropped from its own fallback list.
        ua.set_fallback_proxies(vec![a, b, c]);
        let now = Instant::now();
        ua.handle_command(now, Command::Register);
        let first = ua.poll_transmit().unwrap();
        assert_eq!(first.dest, a);
        answer_at(&mut ua, now, &first, 200);
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);

        // A dies: keep-alive unanswered, then the REGISTER unanswered.
        let (t, to_b) = until_register_to(&mut ua, now, b, Duration::from_secs(120));
        assert_eq!(
            events(&mut ua),
            vec![
                Event::RegistrationFailed { status: 430 },
                Event::RegistrationFailed { status: 408 },
                Event::ProxyChanged {
                    from: a,
                    proxy: b,
                    status: 408
                },
            ]
        );
        // Not before the flow failed (25 s + 10 s) and the REGISTER's
        // Timer F (32 s) ran out.
        assert!(
            t >= now + Duration::from_secs(25 + 10 + 32),
            "{:?}",
            t - now
        );
        let contact = |t: &Transmit| {
            let m = Message::parse(&t.bytes).unwrap();
            param(m.header("Contact").unwrap(), "+sip.instance").map(str::to_string)
        };
        assert_eq!(contact(&to_b), contact(&first));
        assert_eq!(ua.proxy(), b);
        answer_at(&mut ua, t, &to_b, 200);
        assert!(ua.is_registered());
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);
        // The keep-alives follow: to b now.
        let ka = t + Duration::from_secs(25);
        ua.handle_timeout(ka);
        assert_eq!(ua.poll_transmit().unwrap().dest, b);

        // b answers 503: on to c; c cannot be connected: on to a (once
        // in this round); a times out too: back off, no fourth try now.
        let refresh = ka + Duration::from_secs(300);
        ua.handle_timeout(refresh);
        let (t, again) = until_register_to(&mut ua, refresh, b, Duration::from_secs(1));
        answer_at(&mut ua, t, &again, 503);
        let to_c = ua.poll_transmit().unwrap();
        assert_eq!(to_c.dest, c);
        ua.handle_connect_failed(t, c, "connection refused");
        let (t, to_a) = until_register_to(&mut ua, t, a, Duration::from_secs(1));
        assert_eq!(ua.proxy(), a);
        answer_at(&mut ua, t, &to_a, 503);
        let changes: Vec<(Dest, Dest)> = events(&mut ua)
            .into_iter()
            .filter_map(|e| match e {
                Event::ProxyChanged { from, proxy, .. } => Some((from, proxy)),
                _ => None,
            })
            .collect();
        assert_eq!(changes, vec![(b, c), (c, a)]);
        assert!(ua.poll_transmit().is_none(), "every target tried: backoff");
        let retry = ua.poll_timeout().unwrap();
        assert!(retry >= t + Duration::from_secs(5), "{:?}", retry - t);
    }

    #[test]
    fn tls_flows_stay_tls_and_a_refused_handshake_fails_the_registration() {
        let mut ua = ua_over(HeaderPolicy::default(), Transport::Tls);
        let now = Instant::now();
        let proxy = Dest {
            addr: PROXY.parse().unwrap(),
            transport: Transport::Tls,
        };
        ua.handle_command(now, Command::Register);
        let t = ua.poll_transmit().unwrap();
        assert_eq!(t.dest, proxy);
        let req = Message::parse(&t.bytes).unwrap();
        assert!(req.header("Via").unwrap().starts_with("SIP/2.0/TLS "));
        assert!(req.header("Contact").unwrap().contains(";transport=tls>"));
        // Another peer's failure is not ours; a TCP failure to the same
        // address is not our TLS flow either.
        let other = Dest {
            addr: "127.0.0.1:5999".parse().unwrap(),
            transport: Transport::Tls,
        };
        ua.handle_connect_failed(now, other, "x");
        ua.handle_connect_failed(
            now,
            Dest {
                transport: Transport::Tcp,
                ..proxy
            },
            "x",
        );
        assert!(events(&mut ua).is_empty());
        ua.handle_connect_failed(now, proxy, "certificate is not the pinned one");
        assert_eq!(
            events(&mut ua),
            vec![
                Event::TransportFailed {
                    reason: "certificate is not the pinned one".into()
                },
                Event::RegistrationFailed { status: 503 }
            ]
        );
        let retry = ua.poll_timeout().unwrap();
        assert!(
            retry >= now + Duration::from_secs(15),
            "retried with backoff"
        );
        ua.handle_timeout(retry);
        let m = answer_register(&mut ua, retry, 200);
        assert!(m.header("Via").unwrap().starts_with("SIP/2.0/TLS "));
        assert!(ua.is_registered());
        // The abandoned transaction's own timeout (timer F, 32 s) later is
        // not a second failure.
        ua.handle_timeout(now + Duration::from_secs(40));
        assert_eq!(events(&mut ua), vec![Event::Registered { expires: 600 }]);
        assert!(ua.is_registered());
        let big = Body {
            content_type: Some("application/octet-stream".into()),
            bytes: vec![b'x'; 4000],
        };
        ua.handle_command(
            retry,
            Command::Message {
                target: "sip:bob@example.invalid".into(),
                body: big,
            },
        );
        let t = ua.poll_transmit().unwrap();
        assert_eq!(t.dest, proxy);
        assert!(String::from_utf8_lossy(&t.bytes).contains("SIP/2.0/TLS "));
    }

    /// Sends REGISTER, answers it with a 401 carrying `challenges`, and
    /// returns what the UA sent next (if anything) and its events.
    fn challenged(challenges: &[&str]) -> (Option<Message>, Vec<Event>) {
        let mut ua = ua(HeaderPolicy::default());
        let now = Instant::now();
        ua.handle_command(now, Command::Register);
        let reg = Message::parse(&ua.poll_transmit().unwrap().bytes).unwrap();
        let mut resp = Message::response_to(&reg, 401, "Unauthorized", Some("t"));
        for c in challenges {
            resp.push_header("WWW-Authenticate", *c);
        }
        let proxy = Dest::udp("127.0.0.1:5060".parse().unwrap());
        ua.handle_datagram(now, proxy, &resp.to_bytes(HeaderForm::Full));
        let next = ua
            .poll_transmit()
            .map(|t| Message::parse(&t.bytes).unwrap());
        let mut events = Vec::new();
        while let Some(e) = ua.poll_event() {
            events.push(e);
        }
        (next, events)
    }

    #[test]
    fn challenges_of_a_foreign_realm_are_not_answered() {
        let foreign = "Digest realm=\"evil.invalid\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"";
        let (next, events) = challenged(&[foreign]);
        assert!(next.is_none(), "answered a foreign realm: {next:?}");
        assert_eq!(
            events,
            [
                Event::ChallengeRefused {
                    realm: "evil.invalid".into(),
                    status: 401
                },
                Event::RegistrationFailed { status: 401 }
            ]
        );
        // Beside our own realm's challenge, the foreign one is ignored even
        // when it offers the stronger algorithm.
        let own = "Digest realm=\"example.invalid\", nonce=\"n2\", algorithm=MD5, qop=\"auth\"";
        let strong_foreign =
            "Digest realm=\"evil.invalid\", nonce=\"n3\", algorithm=SHA-256, qop=\"auth\"";
        let (next, events) = challenged(&[strong_foreign, own]);
        let next = next.unwrap();
        let auth = next.header("Authorization").unwrap();
        assert!(auth.contains("realm=\"example.invalid\""), "{auth}");
        assert!(auth.contains("nonce=\"n2\""), "{auth}");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn header_choices_are_configurable() {
        let policy = HeaderPolicy {
            form: HeaderForm::Full,
            anonymous_from: false,
            user_agent: Some("ibephone".into()),
            token_bytes: 12,
        };
        let text = first_request(&mut ua(policy));
        assert!(text.contains("\r\nFrom: <sip:alice@example.invalid>;tag="));
        assert!(text.contains("\r\nUser-Agent: ibephone\r\n"));
        assert!(text.contains("\r\nCall-ID: "));
    }
}
