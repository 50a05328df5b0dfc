//! The tunnel as a [`MessageFilter`] of the SIP user agent: every message
//! the core originates is sealed (spec 5.5 decides which stay plain), every
//! message it receives is opened, and what the user must be told (who is
//! verified, which session, what was rejected) is recorded in a shared
//! [`SecurityLog`].
//!
//! Identity: the filter records the security facts of the one message it
//! lets through to the core in [`SecurityLog::current`] (the peer the
//! tunnel proved for *that* message, `Opened.peer`, with its session), and
//! nothing else. The agent clears it before it hands the core a datagram
//! and reads it right after, so a call, a message or a fork is shown with
//! the identity of the message that created it, never with a fact looked up
//! by Call-ID or left over from an earlier message. An unsigned or plain
//! message proves nothing: its facts say `verified_peer: None`.
//!
//! Fail-closed rules (spec 5.5, and "one parser decides"):
//! - The SIP core parses with `rsip`; the tunnel with its strict `SipView`.
//!   A message is read the same way by both or not at all: its bytes must
//!   parse strictly and both must see the same single Call-ID, From, To and
//!   CSeq ([`strict_reading`]). An opened inner message must pass the same
//!   check, so the From the core reports is the From the signature covers.
//! - Incoming plain message: allowed only when it is provably plain by
//!   5.5 (`classify` says plain, or a body-less error response a proxy may
//!   build) and read the same way by both parsers. Under `require` anything
//!   else is refused (a readable plain request gets 415, as before; an
//!   unreadable one is dropped). Under `ask`/`allow-plain` it may open a
//!   plain dialog, but never one whose Call-ID a tunneled message used.
//! - A Call-ID that carried a tunneled message, either way, is protected:
//!   under every policy no plain message of it (other than the 5.5 ones)
//!   is accepted or sent, and it never goes on the [`SecurityLog::plain`]
//!   list. A plain 2xx for such a call is dropped before the core sees
//!   it, so nothing (no ACK, no BYE) answers it.
//! - A dialog's remote target (where in-dialog requests go, RFC 3261
//!   12.2.2) moves only on a tunneled request whose sender the tunnel
//!   verified in the dialog's own session
//!   ([`MessageFilter::may_refresh_target`]): that is how a peer whose
//!   network changed moves the call. A plain dialog (under `ask` /
//!   `allow-plain`) never moves: nothing proves who asked (the proxy
//!   still routes by the device token, so calls keep working).
//! - Outgoing: a message the strict parser cannot read is never sent
//!   plain (it is refused; sealing could not carry it either). A message of
//!   a protected Call-ID that cannot be sealed is refused, not sent plain.
//!
//! Wall clock: signing times and key periods are compared with another
//! machine's clock, so they come from a [`WallClock`] read when needed
//! (the system clock by default), never from the core's monotonic
//! `Instant`, which stops while a laptop sleeps. Transaction lifetimes
//! (the replay check below) use the monotonic clock.
//!
//! Routing after opening: the inner message is what the core acts on, but
//! proxies only ever touched the outer one, so its Via and Record-Route
//! headers replace the inner ones (RFC 3261 23.4: route on the outer).
//!
//! Retransmissions: the tunnel accepts the same body again for a while (a
//! retransmission). A request is a retransmission for SIP only within its
//! transaction: same top Via branch, within 64*T1 (32 s, Timers B/F) of the
//! first copy. The Via is outside the tunnel's protection, so a captured
//! request replayed with a new branch, or later, would otherwise reach the
//! core as a new transaction (a second call); the filter drops those as
//! replays.
//!
//! Calls to a peer outside the tunnel (spec 5.6): when sealing an initial
//! request fails because the callee's domain has no known parameters, or
//! the callee answers our tunneled INVITE with `415` whose `Accept` does
//! not list `application/pkcs7-mime` (missing `Accept` counts as not
//! listing it), the filter records the Call-ID in
//! [`SecurityLog::tunnel_refused`]; the agent then follows the policy. A
//! `493`, or a `415` that lists the tunnel's type, comes from a peer that
//! speaks the profile and is never a reason to go plain. The plain retry
//! is a new initial request (new Call-ID) the agent marks with
//! [`SecurityLog::plain_next`]; under `require` the filter ignores that
//! mark, so nothing the agent does can send a call plain.

use super::key_inbox::KeyInbox;
use crate::sip::filter::{FilterError, MessageFilter, Reject};
use crate::sip::message::{HeaderForm, Message, ParseError};
use crate::tunnel::message::{MessageError, SipView};
use crate::tunnel::{classify, OpenError, PeerIdentity, SealError, Treatment, Tunnel, WireAction};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// The wall clock the filter reads for everything compared with another
/// machine's clock (signing times, key periods).
pub trait WallClock: Send {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Security facts of one message the filter let through to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSecurity {
    /// Its SIP Call-ID (as the core reads it).
    pub call_id: String,
    /// Its method (a request) or CSeq method (a response).
    pub method: String,
    /// Its status code (responses only).
    pub status: Option<u16>,
    /// Whether it is a request without To tag (a new dialog or transaction).
    pub initial: bool,
    /// Its From header value, as the core reads it.
    pub from: String,
    /// Whether it arrived tunneled (and opened).
    pub tunneled: bool,
    /// The tunnel session that carried it, hex.
    pub session_id: Option<String>,
    /// The peer identity the tunnel proved for this message (`Opened.peer`:
    /// its own signature, or the signed message that opened its session
    /// and dialog); `None` for unsigned and plain messages.
    pub verified_peer: Option<String>,
    /// The key period of our identity the session's first message was
    /// encrypted to (first messages only).
    pub period: Option<String>,
    /// Whether it opened a new tunnel session.
    pub first_message: bool,
}

/// Security facts of one tunnel session we accepted, by session id (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSecurity {
    /// Call-ID of the dialog (or transaction) the session protects.
    pub call_id: String,
    /// The peer proved by the session's first signed message from it.
    pub verified_peer: Option<String>,
}

/// The security policy for messages that arrive unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityPolicy {
    /// Refuse unprotected calls and messages (415 with `Accept`).
    Require,
    /// Let them through, marked unprotected, for the user to decide.
    Ask,
    /// Let them through, marked unprotected.
    AllowPlain,
}

/// Why the filter refused an incoming message. Every refusal leaves the
/// core, the tunnel and the security log's facts as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The tunnel rejected it.
    #[error("tunnel: {0}")]
    Tunnel(#[from] OpenError),
    /// A plain message (not one spec 5.5 keeps plain) of a Call-ID that a
    /// tunneled message used: dropped under every policy.
    #[error("plain {0} in a dialog protected by the tunnel")]
    PlainInProtectedDialog(String),
    /// A message the strict parser cannot read, or reads differently from
    /// the SIP core: a plain one is dropped under `require`, a tunneled one
    /// under every policy.
    #[error("plain message the strict SIP parser cannot read: {0}")]
    Unreadable(#[source] Misreading),
    /// A copy of an accepted tunneled request outside its transaction.
    #[error("tunnel: replayed request (a copy of an accepted request outside its transaction)")]
    ReplayedRequest,
    /// The opened inner message does not parse, or the two parsers read
    /// it differently.
    #[error("inner message rejected: {0}")]
    Inner(#[source] Misreading),
}

/// Why the filter refused to send a message the core built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Withheld {
    /// The strict parser cannot read it: it is never sent plain.
    #[error("the strict SIP parser cannot read it, so it is never sent plain: {0}")]
    Unreadable(#[source] Misreading),
    /// Sealing failed.
    #[error("{0}")]
    Seal(#[from] SealError),
    /// The sealed message does not parse (an internal failure).
    #[error("sealed message does not parse: {0}")]
    Sealed(#[source] ParseError),
}

/// How many refusals the log keeps (the oldest are dropped).
const MAX_LOGGED: usize = 256;
/// Bound of the protected Call-ID memory and of the session facts.
pub const MAX_PROTECTED: usize = 8192;

/// Shared between the filter and the agent: the facts of the message the
/// core is acting on, the sessions accepted, and the rejections to report.
#[derive(Debug, Default)]
pub struct SecurityLog {
    /// Facts of the message the filter last let through to the core. The
    /// agent sets it to `None` before each datagram and takes it right
    /// after, so it only ever describes the message of that datagram.
    pub current: Option<MessageSecurity>,
    /// Sessions accepted from peers (first messages), by session id hex;
    /// bounded, for reports.
    pub sessions: HashMap<String, SessionSecurity>,
    /// Call-IDs of plain (unprotected) dialogs let through by the policy;
    /// never a Call-ID a tunneled message used.
    pub plain: Vec<String>,
    /// Incoming refusals (Call-ID, reason), the latest 256 (`MAX_LOGGED`).
    pub rejections: VecDeque<(String, Refusal)>,
    /// Outgoing refusals (Call-ID, reason), the latest 256 (`MAX_LOGGED`).
    pub withheld: VecDeque<(String, Withheld)>,
    /// Call-ID of the last initial request we sent: set while the core
    /// builds it, cleared and read by the agent around the command that
    /// placed the call (which call it is; it never decides identity).
    pub last_outgoing_initial: Option<String>,
    /// Initial requests the tunnel could not carry, by Call-ID: why (the
    /// callee's domain has no known parameters, or the callee answered
    /// `415` without `application/pkcs7-mime` in `Accept`).
    pub tunnel_refused: HashMap<String, String>,
    /// The next initial request goes plain (set by the agent for a call
    /// the policy or the user let go unprotected; consumed by the filter;
    /// ignored under `require`).
    pub plain_next: bool,
    /// Tunnel sessions (hex) that a verified first message superseded
    /// (unsigned, unanswered first messages on its Call-ID, see
    /// [`crate::tunnel::Opened::superseded`]): the agent ends their calls
    /// and drains this; the latest 256 (`MAX_LOGGED`).
    pub superseded: VecDeque<String>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() >= MAX_LOGGED {
        q.pop_front();
    }
    q.push_back(item);
}

/// The tunnel filter of one user agent.
pub struct TunnelFilter {
    tunnel: Tunnel,
    policy: SecurityPolicy,
    log: Arc<Mutex<SecurityLog>>,
    /// Accepted tunneled requests by body hash: top Via branch and when.
    requests_seen: HashMap<[u8; 32], (String, Instant)>,
    /// Call-IDs that carried a tunneled message (either way), oldest first.
    protected: HashSet<String>,
    protected_order: VecDeque<String>,
    /// Bound of `protected` ([`MAX_PROTECTED`]; smaller in tests).
    protected_limit: usize,
    /// Where signing times and key periods are read from.
    clock: Box<dyn WallClock>,
    /// Renewed keys pushed while the agent runs (none by default).
    inbox: Option<KeyInbox>,
    /// Whether the message last let through was tunneled and its sender
    /// verified (the only kind that may move a dialog's remote target).
    last_verified: bool,
}

impl TunnelFilter {
    /// A filter around `tunnel` on the system's wall clock.
    pub fn new(tunnel: Tunnel, policy: SecurityPolicy, log: Arc<Mutex<SecurityLog>>) -> Self {
        TunnelFilter {
            tunnel,
            policy,
            log,
            requests_seen: HashMap::new(),
            protected: HashSet::new(),
            protected_order: VecDeque::new(),
            protected_limit: MAX_PROTECTED,
            clock: Box::new(SystemClock),
            inbox: None,
            last_verified: false,
        }
    }

    /// Reads wall-clock time from `clock` instead of the system clock.
    pub fn with_wall_clock(mut self, clock: Box<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes renewed keys from `inbox` before each message from now on.
    pub fn with_key_inbox(mut self, inbox: KeyInbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Adds the keys waiting in the inbox to the tunnel; a key that does not
    /// check against our identity and parameters is refused and logged.
    fn adopt_renewed_keys(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        for keys in inbox.take() {
            let period = keys.identity().period().to_string();
            match self.tunnel.add_keys(&keys) {
                Ok(()) => tracing::info!(%period, "renewed keys in use"),
                Err(e) => tracing::warn!(%period, error = %e, "renewed keys refused"),
            }
        }
    }

    fn with_log(&self, f: impl FnOnce(&mut SecurityLog)) {
        if let Ok(mut log) = self.log.lock() {
            f(&mut log);
        }
    }

    /// Keeps at most `limit` Call-IDs in the protected memory (at least
    /// one); the default is [`MAX_PROTECTED`].
    pub fn with_protected_limit(mut self, limit: usize) -> Self {
        self.protected_limit = limit.max(1);
        self
    }

    /// Whether `call_id` carried a tunneled message: remembered (bounded,
    /// oldest forgotten first) or, whatever that memory forgot, on a live
    /// tunnel session. The second keeps a live dialog protected when a
    /// flood of keyless first messages on fresh Call-IDs has pushed its
    /// Call-ID out of the memory: the tunnel never evicts an established
    /// session to make room.
    fn is_protected(&self, call_id: &str) -> bool {
        self.protected.contains(call_id) || self.tunnel.call_id_in_use(call_id)
    }

    /// Marks `call_id` as carried by the tunnel: from now on no plain
    /// message of it passes (other than the 5.5 ones).
    fn protect(&mut self, call_id: &str) {
        if self.protected.contains(call_id) {
            return;
        }
        if self.protected_order.len() >= self.protected_limit {
            if let Some(old) = self.protected_order.pop_front() {
                self.protected.remove(&old);
            }
        }
        self.protected.insert(call_id.to_string());
        self.protected_order.push_back(call_id.to_string());
        self.with_log(|l| l.plain.retain(|c| c != call_id));
    }

    fn refuse(&self, call_id: &str, refusal: Refusal) {
        self.with_log(|l| {
            l.current = None;
            push_bounded(&mut l.rejections, (call_id.to_string(), refusal));
        });
    }

    fn withhold(&self, call_id: &str, why: Withheld) -> FilterError {
        let text = why.to_string();
        self.with_log(|l| push_bounded(&mut l.withheld, (call_id.to_string(), why)));
        FilterError(text)
    }
}

/// How long a request's copies count as retransmissions (64*T1, RFC 3261
/// Timers B and F).
const REQUEST_RETRANSMISSIONS: std::time::Duration = std::time::Duration::from_secs(32);
/// Bound of the table of accepted requests.
const MAX_REQUESTS_SEEN: usize = 4096;

impl TunnelFilter {
    /// Whether a tunneled request is a replay at the SIP level: a copy of an
    /// accepted body in another transaction or after its lifetime.
    /// Records first copies.
    fn request_replayed(&mut self, now: Instant, msg: &Message, retransmission: bool) -> bool {
        use sha2::Digest;
        if !msg.is_request() {
            return false;
        }
        let hash: [u8; 32] = sha2::Sha256::digest(&msg.body).into();
        let branch = msg.branch().unwrap_or_default().to_string();
        match (retransmission, self.requests_seen.get(&hash)) {
            (true, Some((b, at))) => {
                *b != branch || now.saturating_duration_since(*at) > REQUEST_RETRANSMISSIONS
            }
            // The tunnel's record outlived ours: no transaction to match.
            (true, None) => true,
            (false, _) => {
                if self.requests_seen.len() >= MAX_REQUESTS_SEEN {
                    self.requests_seen.retain(|_, (_, at)| {
                        now.saturating_duration_since(*at) <= REQUEST_RETRANSMISSIONS
                    });
                    if self.requests_seen.len() >= MAX_REQUESTS_SEEN {
                        self.requests_seen.clear();
                    }
                }
                self.requests_seen.insert(hash, (branch, now));
                false
            }
        }
    }
}

/// Where the strict parser of the tunnel and the SIP core part ways on one
/// message (a parser differential an attacker could use to make the two
/// layers see different messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misreading {
    /// The SIP core cannot parse the bytes at all.
    #[error("the SIP core cannot parse it: {0}")]
    Core(#[source] ParseError),
    /// The strict parser refuses the bytes (e.g. a NUL or bare CR in a
    /// header value, a missing or repeated core header).
    #[error("{0}")]
    Strict(#[source] MessageError),
    /// One parser reads a request where the other reads a response.
    #[error("start line read differently")]
    StartLine,
    /// The two parsers read the named core header differently.
    #[error("{0} read differently by the two parsers")]
    Header(&'static str),
}

/// Whether the strict parser reads `bytes` (the serialised `msg`) as the
/// SIP core reads `msg`: it parses, and both see the same start line kind
/// and exactly one, equal, Call-ID, From, To and CSeq. `Err` says where
/// they part.
pub fn strict_reading(msg: &Message, bytes: &[u8]) -> Result<(), Misreading> {
    let view = SipView::parse(bytes).map_err(Misreading::Strict)?;
    if view.is_request() != msg.is_request() {
        return Err(Misreading::StartLine);
    }
    for (strict, core) in [
        ("call-id", "Call-ID"),
        ("from", "From"),
        ("to", "To"),
        ("cseq", "CSeq"),
    ] {
        let value = view.one(strict).map_err(Misreading::Strict)?;
        let core_values: Vec<&str> = msg.header_values(core).collect();
        if core_values != [value] {
            return Err(Misreading::Header(core));
        }
    }
    Ok(())
}

/// An error response without body: what a proxy or registrar sends, or a
/// UA for a request that belongs to no session (481, or 486 to a plain
/// INVITE the policy let through). Such responses may travel plain.
fn bodyless_error(msg: &Message, bytes: &[u8]) -> bool {
    msg.status().is_some_and(|s| s >= 300) && bytes.ends_with(b"\r\n\r\n")
}

/// Whether `msg` is a `415` to an INVITE from a callee outside the tunnel
/// (its `Accept`, if any, does not list `application/pkcs7-mime`); the
/// reason to report.
fn refuses_tunnel(msg: &Message) -> Option<String> {
    if msg.status() != Some(415) || msg.cseq().map(|(_, m)| m) != Some(rsip::Method::Invite) {
        return None;
    }
    let accept: Vec<&str> = msg
        .header_values("Accept")
        .flat_map(crate::sip::message::split_list)
        .collect();
    let speaks_tunnel = accept.iter().any(|a| {
        a.trim()
            .to_ascii_lowercase()
            .starts_with("application/pkcs7-mime")
    });
    (!speaks_tunnel).then(|| {
        format!(
            "the callee does not take tunneled calls (415, Accept: {})",
            if accept.is_empty() {
                "none".to_string()
            } else {
                accept.join(", ")
            }
        )
    })
}

/// What a message is, for logs: its method, or status and CSeq method.
fn what(msg: &Message) -> String {
    let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
    match msg.status() {
        Some(s) => format!("{s} to {method}"),
        None => method,
    }
}

/// The plain facts of `msg` (nothing proved).
fn plain_facts(msg: &Message) -> MessageSecurity {
    MessageSecurity {
        call_id: msg.call_id().unwrap_or_default().to_string(),
        method: msg.method().map(|m| m.to_string()).unwrap_or_default(),
        status: msg.status(),
        initial: msg.is_request() && msg.to_tag().is_none(),
        from: msg.header("From").unwrap_or_default().to_string(),
        tunneled: false,
        session_id: None,
        verified_peer: None,
        period: None,
        first_message: false,
    }
}

impl MessageFilter for TunnelFilter {
    fn outgoing(&mut self, _now: Instant, msg: Message) -> Result<Message, FilterError> {
        self.adopt_renewed_keys();
        let bytes = msg.to_bytes(HeaderForm::Compact);
        let call_id = msg.call_id().unwrap_or_default().to_string();
        if let Err(why) = strict_reading(&msg, &bytes) {
            return Err(self.withhold(&call_id, Withheld::Unreadable(why)));
        }
        if classify(&bytes, false) == Treatment::Plain {
            return Ok(msg);
        }
        let protected = self.is_protected(&call_id);
        if !protected
            && self
                .log
                .lock()
                .map(|l| l.plain.contains(&call_id))
                .unwrap_or(false)
        {
            return Ok(msg);
        }
        let initial = msg.is_request() && msg.to_tag().is_none();
        if initial {
            let plain = self.policy != SecurityPolicy::Require && !protected;
            let mut sent_plain = false;
            self.with_log(|l| {
                l.last_outgoing_initial = Some(call_id.clone());
                if std::mem::take(&mut l.plain_next) && plain {
                    l.plain.push(call_id.clone());
                    sent_plain = true;
                }
            });
            if sent_plain {
                return Ok(msg);
            }
        }
        match self.tunnel.seal(self.clock.now(), &bytes) {
            Ok(outer) => {
                let sealed = Message::parse(&outer)
                    .map_err(|e| self.withhold(&call_id, Withheld::Sealed(e)))?;
                self.protect(&call_id);
                Ok(sealed)
            }
            Err(SealError::NoSession) if !protected && bodyless_error(&msg, &bytes) => Ok(msg),
            Err(e @ SealError::UnknownDomain(_)) if initial => {
                self.with_log(|l| {
                    l.tunnel_refused.insert(call_id.clone(), e.to_string());
                });
                Err(self.withhold(&call_id, e.into()))
            }
            Err(e) => Err(self.withhold(&call_id, e.into())),
        }
    }

    /// Only a tunneled message whose sender the tunnel verified, in the
    /// session that already carries its dialog: a plain message, an
    /// unsigned one, one that did not open, or the first message of a new
    /// session (another user's signature on our dialog's tags) never
    /// moves a dialog (an attacker would redirect the call's signaling).
    fn may_refresh_target(&self) -> bool {
        self.last_verified
    }

    fn incoming(&mut self, now: Instant, msg: Message) -> Result<Message, Reject> {
        self.adopt_renewed_keys();
        self.last_verified = false;
        self.with_log(|l| l.current = None);
        let bytes = msg.to_bytes(HeaderForm::Compact);
        let call_id = msg.call_id().unwrap_or_default().to_string();
        let request_method = msg
            .method()
            .filter(|_| msg.is_request())
            .map(|m| m.to_string());
        let silent = |refusal: &Refusal| Reject {
            response: None,
            headers: vec![],
            reason: refusal.to_string(),
        };
        let reject = |err: &OpenError| {
            let (response, headers) = match err.wire_action(request_method.as_deref()) {
                WireAction::Respond493 => (Some((493, "Undecipherable".to_string())), vec![]),
                WireAction::Respond415 => (
                    Some((415, "Unsupported Media Type".to_string())),
                    vec![("Accept".to_string(), "application/sdp".to_string())],
                ),
                WireAction::Respond503 => (
                    Some((503, "Service Unavailable".to_string())),
                    vec![(
                        "Retry-After".to_string(),
                        crate::tunnel::BUSY_RETRY_AFTER_SECS.to_string(),
                    )],
                ),
                WireAction::Drop => (None, vec![]),
            };
            Reject {
                response,
                headers,
                reason: Refusal::Tunnel(err.clone()).to_string(),
            }
        };
        let is_tunneled = msg
            .header("Content-Type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/pkcs7-mime"));
        if !is_tunneled {
            let readable = strict_reading(&msg, &bytes);
            let spec_plain = readable.is_ok()
                && (classify(&bytes, false) == Treatment::Plain || bodyless_error(&msg, &bytes));
            if spec_plain {
                if let Some(reason) = refuses_tunnel(&msg) {
                    self.with_log(|l| {
                        if !l.plain.contains(&call_id) {
                            l.tunnel_refused.insert(call_id.clone(), reason);
                        }
                    });
                }
                self.with_log(|l| l.current = Some(plain_facts(&msg)));
                return Ok(msg);
            }
            if self.is_protected(&call_id) {
                let refusal = Refusal::PlainInProtectedDialog(what(&msg));
                let rej = silent(&refusal);
                self.refuse(&call_id, refusal);
                return Err(rej);
            }
            if self.policy == SecurityPolicy::Require {
                return Err(match readable {
                    Err(why) => {
                        let refusal = Refusal::Unreadable(why);
                        let rej = silent(&refusal);
                        self.refuse(&call_id, refusal);
                        rej
                    }
                    Ok(()) => {
                        let err = OpenError::NotTunneled;
                        let rej = reject(&err);
                        self.refuse(&call_id, err.into());
                        rej
                    }
                });
            }
            self.with_log(|l| {
                if !l.plain.contains(&call_id) {
                    l.plain.push(call_id.clone());
                }
                l.current = Some(plain_facts(&msg));
            });
            return Ok(msg);
        }
        if let Err(why) = strict_reading(&msg, &bytes) {
            let refusal = Refusal::Unreadable(why);
            let rej = silent(&refusal);
            self.refuse(&call_id, refusal);
            return Err(rej);
        }
        let opened = match self.tunnel.open(self.clock.now(), &bytes) {
            Ok(o) => o,
            Err(err) => {
                let rej = reject(&err);
                self.refuse(&call_id, err.into());
                return Err(rej);
            }
        };
        if self.request_replayed(now, &msg, opened.retransmission) {
            let refusal = Refusal::ReplayedRequest;
            let rej = silent(&refusal);
            self.refuse(&call_id, refusal);
            return Err(rej);
        }
        let inner = Message::parse(&opened.inner)
            .map_err(Misreading::Core)
            .and_then(|m| strict_reading(&m, &opened.inner).map(|()| m));
        let mut inner = match inner {
            Ok(m) => m,
            Err(why) => {
                let refusal = Refusal::Inner(why);
                let rej = silent(&refusal);
                self.refuse(&call_id, refusal);
                return Err(rej);
            }
        };
        // Route on the outer message.
        for name in ["Via", "Record-Route"] {
            inner.remove_header(name);
            for v in msg.header_values(name) {
                inner.push_header(name, v.to_string());
            }
        }
        self.protect(&call_id);
        let verified = match &opened.peer {
            PeerIdentity::Verified(id) => Some(id.to_string()),
            PeerIdentity::Unverified => None,
        };
        let sender_verified = verified.is_some();
        let session_id = hex::encode(opened.session_id);
        let facts = MessageSecurity {
            tunneled: true,
            session_id: Some(session_id.clone()),
            verified_peer: verified.clone(),
            period: opened.period.as_ref().map(|p| p.to_string()),
            first_message: opened.first_message,
            ..plain_facts(&inner)
        };
        self.with_log(|l| {
            for gone in &opened.superseded {
                let gone = hex::encode(gone);
                l.sessions.remove(&gone);
                push_bounded(&mut l.superseded, gone);
            }
            if opened.first_message {
                if l.sessions.len() >= MAX_PROTECTED {
                    l.sessions.clear();
                }
                l.sessions.insert(
                    session_id,
                    SessionSecurity {
                        call_id: call_id.clone(),
                        verified_peer: verified,
                    },
                );
            }
            l.current = Some(facts);
        });
        // Only in the dialog's own session: a first message is someone
        // else's session (a signer who is not our peer in this dialog).
        self.last_verified = sender_verified && !opened.first_message;
        Ok(inner)
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod filter_tests;
