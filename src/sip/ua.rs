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
use crate::sip::{random_token, Dest, Transmit, Transport};
use rsip::{Method, Uri};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

mod calls;
mod types;

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

    /// Our AOR, `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.cfg.user, self.cfg.domain)
    }

    /// Number of live calls (bounded by `max_transactions`).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    fn contact(&self) -> String {
        match self.cfg.transport {
            Transport::Udp => format!("<sip:{}>", self.cfg.local),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.cfg.local),
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
            Incoming::Stray(resp) => self.on_stray_response(now, resp),
            Incoming::Absorbed => {}
        }
    }

    /// Carries out an application command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Register => {
                self.reg.unregistering = false;
                self.reg.tried_nonce = None;
                self.send_register(now, None);
            }
            Command::Unregister => {
                self.reg.unregistering = true;
                self.reg.refresh_at = None;
                self.reg.tried_nonce = None;
                self.send_register(now, None);
            }
            Command::Call { call, target, body } => self.place_call(now, call, &target, body),
            Command::Answer { call, body } => self.answer(now, call, body),
            Command::Reject { call, status } => self.reject(now, call, status),
            Command::Hangup { call } => self.hangup(now, call),
            Command::InDialog { call, method, body } => self.in_dialog(now, call, method, body),
            Command::RespondInDialog { call, status, body } => {
                self.respond_in_dialog(now, call, status, body)
            }
            Command::Message { target, body } => {
                self.out_of_dialog(now, Method::Message, &target, body)
            }
            Command::Options { target } => {
                self.out_of_dialog(now, Method::Options, &target, Body::default())
            }
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().filter_map(calls::Call::deadline);
        self.tx
            .poll_timeout()
            .into_iter()
            .chain(self.reg.refresh_at)
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
        if self.reg.refresh_at.is_some_and(|t| t <= now) {
            self.reg.refresh_at = None;
            self.reg.tried_nonce = None;
            self.send_register(now, None);
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

    /// Filters `msg`, picks UDP or TCP by size, and starts a client
    /// transaction to the outbound proxy.
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
        m.push_header("Contact", format!("{};expires={expires}", self.contact()));
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
            let ch = Challenge::best(resp.header_values(name));
            match ch {
                Some(ch)
                    if self.reg.tried_nonce.as_deref() != Some(ch.nonce.as_str()) || ch.stale =>
                {
                    self.reg.tried_nonce = Some(ch.nonce.clone());
                    if ch.realm != self.cfg.domain {
                        tracing::warn!(realm = %ch.realm, "registrar realm differs from our domain");
                    }
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
                _ => self.events.push_back(Event::RegistrationFailed { status }),
            }
            return;
        }
        self.reg.tried_nonce = None;
        if !(200..300).contains(&status) {
            self.events.push_back(Event::RegistrationFailed { status });
            return;
        }
        if self.reg.unregistering {
            self.events.push_back(Event::Unregistered);
            return;
        }
        let granted = resp
            .header_values("Contact")
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
            Method::Cancel => self.on_cancel(now, key, req),
            Method::Options => {
                let mut r = Message::response_to(&req, 200, "OK", Some(&self.tag()));
                r.push_header(
                    "Allow",
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE",
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
    use crate::sip::message::HeaderForm;
    use crate::sip::timers::Timers;

    fn ua(headers: HeaderPolicy) -> UserAgent {
        let cfg = UaConfig {
            user: "alice".into(),
            domain: "example.invalid".into(),
            password: Password::new("pw"),
            proxy: "127.0.0.1:5060".parse().unwrap(),
            local: "ua.invalid:5062".into(),
            transport: Transport::Udp,
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
