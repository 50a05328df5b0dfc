//! The tunnel as a [`MessageFilter`] of the SIP user agent: every message
//! the core originates is sealed (spec 5.5 decides which stay plain), every
//! message it receives is opened, and what the user must be told (who is
//! verified, which session, what was rejected) is recorded in a shared
//! [`SecurityLog`].
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
//! is a new initial request the agent marks with
//! [`SecurityLog::plain_next`]; under `require` the filter ignores that
//! mark, so nothing the agent does can send a call plain.

use super::key_inbox::KeyInbox;
use crate::sip::filter::{FilterError, MessageFilter, Reject};
use crate::sip::message::{HeaderForm, Message};
use crate::tunnel::{classify, OpenError, PeerIdentity, SealError, Treatment, Tunnel, WireAction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// What a call or message is protected by, as far as the tunnel knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogSecurity {
    /// The tunnel session, hex.
    pub session_id: String,
    /// The peer's verified identity (`ID` string), if a signature proved it.
    pub verified_peer: Option<String>,
    /// The key period of our identity that the peer encrypted to (first
    /// message received).
    pub period: Option<String>,
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

/// Shared between the filter and the agent: security facts by SIP Call-ID,
/// and the rejections to report.
#[derive(Debug, Default)]
pub struct SecurityLog {
    /// By SIP Call-ID.
    pub dialogs: HashMap<String, DialogSecurity>,
    /// Call-IDs of plain (unprotected) dialogs let through by the policy.
    pub plain: Vec<String>,
    /// Rejections since the last drain: (Call-ID, reason).
    pub rejections: Vec<(String, String)>,
    /// Call-ID of the last initial request we sent (set while the core
    /// builds it, read by the agent right after the command).
    pub last_outgoing_initial: Option<String>,
    /// Call-ID of the last initial request we received.
    pub last_incoming_initial: Option<String>,
    /// Initial requests the tunnel could not carry, by Call-ID: why (the
    /// callee's domain has no known parameters, or the callee answered
    /// `415` without `application/pkcs7-mime` in `Accept`).
    pub tunnel_refused: HashMap<String, String>,
    /// The next initial request goes plain (set by the agent for a call
    /// the policy or the user let go unprotected; consumed by the filter;
    /// ignored under `require`).
    pub plain_next: bool,
}

/// The tunnel filter of one user agent.
pub struct TunnelFilter {
    tunnel: Tunnel,
    policy: SecurityPolicy,
    log: Arc<Mutex<SecurityLog>>,
    /// Accepted tunneled requests by body hash: top Via branch and when.
    requests_seen: HashMap<[u8; 32], (String, Instant)>,
    /// Maps the core's monotonic clock to wall-clock time (key periods and
    /// signing times are calendar facts), fixed at construction so the
    /// filter itself never reads a clock.
    anchor: (Instant, SystemTime),
    /// Renewed keys pushed while the agent runs (none by default).
    inbox: Option<KeyInbox>,
}

impl TunnelFilter {
    /// A filter around `tunnel`; `anchor` pairs one `Instant` with the wall
    /// clock at that instant.
    pub fn new(
        tunnel: Tunnel,
        policy: SecurityPolicy,
        log: Arc<Mutex<SecurityLog>>,
        anchor: (Instant, SystemTime),
    ) -> Self {
        TunnelFilter {
            tunnel,
            policy,
            log,
            requests_seen: HashMap::new(),
            anchor,
            inbox: None,
        }
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

    fn wall(&self, now: Instant) -> SystemTime {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0)
    }

    fn with_log(&self, f: impl FnOnce(&mut SecurityLog)) {
        if let Ok(mut log) = self.log.lock() {
            f(&mut log);
        }
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

impl MessageFilter for TunnelFilter {
    fn outgoing(&mut self, now: Instant, msg: Message) -> Result<Message, FilterError> {
        self.adopt_renewed_keys();
        let bytes = msg.to_bytes(HeaderForm::Compact);
        if classify(&bytes, false) == Treatment::Plain {
            return Ok(msg);
        }
        let call_id = msg.call_id().unwrap_or_default().to_string();
        if self
            .log
            .lock()
            .map(|l| l.plain.contains(&call_id))
            .unwrap_or(false)
        {
            return Ok(msg);
        }
        let initial = msg.is_request() && msg.to_tag().is_none();
        if initial {
            let plain = self.policy != SecurityPolicy::Require;
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
        match self.tunnel.seal(self.wall(now), &bytes) {
            Ok(outer) => Message::parse(&outer)
                .map_err(|e| FilterError(format!("sealed message does not parse: {e}"))),
            Err(SealError::NoSession(_)) if bodyless_error(&msg, &bytes) => Ok(msg),
            Err(e @ SealError::UnknownDomain(_)) if initial => {
                self.with_log(|l| {
                    l.tunnel_refused.insert(call_id.clone(), e.to_string());
                });
                Err(FilterError(e.to_string()))
            }
            Err(e) => Err(FilterError(e.to_string())),
        }
    }

    fn incoming(&mut self, now: Instant, msg: Message) -> Result<Message, Reject> {
        self.adopt_renewed_keys();
        let bytes = msg.to_bytes(HeaderForm::Compact);
        let call_id = msg.call_id().unwrap_or_default().to_string();
        let request_method = msg
            .method()
            .filter(|_| msg.is_request())
            .map(|m| m.to_string());
        let reject = |err: &OpenError| {
            let (response, headers) = match err.wire_action(request_method.as_deref()) {
                WireAction::Respond493 => (Some((493, "Undecipherable".to_string())), vec![]),
                WireAction::Respond415 => (
                    Some((415, "Unsupported Media Type".to_string())),
                    vec![("Accept".to_string(), "application/sdp".to_string())],
                ),
                WireAction::Drop => (None, vec![]),
            };
            Reject {
                response,
                headers,
                reason: format!("tunnel: {err}"),
            }
        };
        let is_tunneled = msg
            .header("Content-Type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/pkcs7-mime"));
        if !is_tunneled {
            if let Some(reason) = refuses_tunnel(&msg) {
                self.with_log(|l| {
                    if !l.plain.contains(&call_id) {
                        l.tunnel_refused.insert(call_id.clone(), reason);
                    }
                });
            }
            if classify(&bytes, false) == Treatment::Plain || bodyless_error(&msg, &bytes) {
                return Ok(msg);
            }
            if self.policy == SecurityPolicy::Require {
                let err = OpenError::NotTunneled;
                self.with_log(|l| l.rejections.push((call_id.clone(), err.to_string())));
                return Err(reject(&err));
            }
            self.with_log(|l| {
                if !l.plain.contains(&call_id) {
                    l.plain.push(call_id.clone());
                }
                if msg.is_request() && msg.to_tag().is_none() {
                    l.last_incoming_initial = Some(call_id.clone());
                }
            });
            return Ok(msg);
        }
        let opened = match self.tunnel.open(self.wall(now), &bytes) {
            Ok(o) => o,
            Err(err) => {
                self.with_log(|l| l.rejections.push((call_id.clone(), err.to_string())));
                return Err(reject(&err));
            }
        };
        if self.request_replayed(now, &msg, opened.retransmission) {
            let reason =
                "tunnel: replayed request (a copy of an accepted request outside its transaction)";
            self.with_log(|l| l.rejections.push((call_id.clone(), reason.to_string())));
            return Err(Reject {
                response: None,
                headers: vec![],
                reason: reason.to_string(),
            });
        }
        let mut inner = Message::parse(&opened.inner).map_err(|e| Reject {
            response: None,
            headers: vec![],
            reason: format!("inner message does not parse: {e}"),
        })?;
        // Route on the outer message.
        for name in ["Via", "Record-Route"] {
            inner.remove_header(name);
            for v in msg.header_values(name) {
                inner.push_header(name, v.to_string());
            }
        }
        let verified = match &opened.peer {
            PeerIdentity::Verified(id) => Some(id.to_string()),
            PeerIdentity::Unverified => None,
        };
        let session_id = hex::encode(opened.session_id);
        let period = opened.period.as_ref().map(|p| p.to_string());
        self.with_log(|l| {
            let entry = l
                .dialogs
                .entry(call_id.clone())
                .or_insert_with(|| DialogSecurity {
                    session_id: session_id.clone(),
                    verified_peer: None,
                    period: None,
                });
            entry.session_id = session_id;
            if verified.is_some() {
                entry.verified_peer = verified;
            }
            if period.is_some() {
                entry.period = period;
            }
            if opened.first_message {
                l.last_incoming_initial = Some(call_id.clone());
            }
        });
        Ok(inner)
    }
}
