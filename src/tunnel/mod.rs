//! The S/MIME-style SIP tunnel (spec section 5), sans-I/O: complete SIP
//! messages in, complete SIP messages out; time is an argument.
//!
//! - [`Tunnel::seal`] turns an inner message into an outer one whose body is
//!   a CMS AuthEnvelopedData (first message of a session: BF key transport
//!   to the callee identity and a Cha-Cheon signature when we hold keys;
//!   later messages: AES key wrap under the session KEK).
//! - [`Tunnel::open`] checks an outer message (CMS profile, key transport,
//!   GCM tag, replay window, outer binding, outer/inner agreement, dialog
//!   roles, recipient binding, signature, freshness) and returns the inner
//!   message byte for byte. It verifies first into an accepted value and
//!   then commits it with a step that cannot fail, so a rejected message
//!   changes no state (time-driven expiry at the given `now` aside).
//! - State is bounded and expires by itself from the `now` given to
//!   `seal`/`open` (see `session`).
//! - [`classify`] says which messages stay plain (5.5); [`OpenError::wire_action`]
//!   and [`error_response`] give the wire errors (5.6).
//! - [`keylog`]: an explicit opt-in hook ([`Tunnel::set_key_log`], off by
//!   default) that reports every KEK and CEK used, for debugging captures.
//!
//! Decisions where the spec is silent (each pinned by a test in
//! `tests/it/tunnel_dialog.rs`):
//! - The `message/sip` entity is `Content-Type: message/sip` CRLF CRLF
//!   followed by the inner message.
//! - An initial request (no To tag) always starts a new session, even when
//!   it retries an earlier one (e.g. after a 407 from a proxy).
//! - Only "cannot decrypt" failures are answered 493; replays, reflections
//!   and forgeries are dropped.
//! - A signature from a domain whose parameters we do not hold is not an
//!   error: the message is accepted and its sender is shown unverified.
//! - Unknown authenticated or signed attributes are rejected (the profile
//!   is exact).
//!
//! Decisions of issue 12 (pinned in `tests/it/tunnel_attacks.rs`, the
//! Request-URI rule in `tests/it/tunnel_dialog.rs`, fork branches in
//! `open.rs`):
//! - Dialog roles are exact: the caller's tag is the From tag of the
//!   messages of transactions the caller started (its requests, the
//!   callee's responses) and the To tag of the others; never "either tag".
//!   `seal` looks a session up the same way, by the role we have in it.
//! - A received first message whose Call-ID any live session uses (any
//!   role, any tags) is refused with [`OpenError::DialogCollision`] and
//!   dropped (5.6 keeps 493 for "cannot decrypt"; a genuine caller never
//!   reuses a live Call-ID, a retry after a proxy's 407 reaches a callee
//!   that never saw the first attempt). `seal` likewise refuses an
//!   initial request on a Call-ID used by another dialog
//!   ([`SealError::CallIdInUse`]) and replaces only our own earlier
//!   attempt of the same dialog.
//! - A message that proves nothing cannot block one that does: a first
//!   message whose signature verifies supersedes the sessions on its
//!   Call-ID when every one of them was opened by an unsigned first
//!   message and not answered with a 2xx by us (a keyless third party that
//!   read the Call-ID and tags and raced the genuine INVITE); they are
//!   removed (their session ids stay remembered) and reported in
//!   [`Opened::superseded`]. An unsigned newcomer, or any session that is
//!   ours, proved by a signature, or answered with a 2xx, still makes the
//!   newcomer a [`OpenError::DialogCollision`]. Accepted cost: a peer with
//!   valid keys of its own (and shown as itself) can likewise supersede a
//!   ringing call from a caller without keys. Pinned by
//!   `tests/tunnel_attacks.rs` `a_racing_unsigned_first_message_cannot_block_the_signed_one`.
//! - On the caller's side a new callee branch (a fork) opens only by a
//!   response to the session's first request; on the callee's side a
//!   caller message must carry a tag we answered with.
//! - A branch's verified identity is the first one a signature proved on
//!   that branch of that session; it never changes (a later signature of
//!   someone else: [`OpenError::SignerChanged`]) and never carries over
//!   to another session or branch.
//! - Signed responses (5.4 "the callee's first response other than 100",
//!   read for UDP): the callee signs *every* response other than 100 to
//!   the session's first request, provisional and final, each with the
//!   session binding. A provisional response is never retransmitted; if
//!   only the first one were signed, losing it would leave the caller
//!   unable ever to verify the callee (the 200, retransmitted until the
//!   ACK, would be unsigned). The caller verifies every signed message;
//!   the first signature on a branch fixes its identity and a later one
//!   naming anyone else is refused ([`OpenError::SignerChanged`]); an
//!   unsigned response after a signed one is still accepted (an
//!   implementation that signs only its first response) and keeps the
//!   branch's identity. Responses to later requests are not signed.
//!   Pinned by `tests/tunnel_attacks.rs`
//!   `lost_signed_180_leaves_the_callee_verified_by_the_200` and the
//!   `open.rs` tests `an_unsigned_200_after_a_signed_180_keeps_the_identity`
//!   and `a_branch_keeps_the_identity_it_proved`.
//! - Recipient binding (5.4): see [`Tunnel::set_contact_users`]; a
//!   Request-URI without a user part is not compared, one whose host is
//!   an IP address may carry our AOR's user (a registrar's retargeting).
//! - A retransmission is the same body in the same transaction (same top
//!   Via branch), answered only after the outer binding and the
//!   outer/inner agreement passed again, while its session lives.
//! - Under load, newcomers are refused ([`OpenError::TableFull`],
//!   [`OpenError::SessionIdMemoryFull`]; a request is answered `503` with
//!   `Retry-After`, plain, anything else dropped): live dialogs are never evicted
//!   and session ids never forgotten early; pending sessions are evicted
//!   among themselves, per peer first.

pub mod cms;
pub(crate) mod error;
pub mod kat;
pub mod keylog;
pub mod message;
pub(crate) mod oids;
mod open;
pub mod outer;
pub(crate) mod random;
pub(crate) mod replay;
mod seal;
pub(crate) mod session;
pub(crate) mod signed;

pub use cms::Direction;
pub use error::{OpenError, SealError, SignatureError, WireAction, BUSY_RETRY_AFTER_SECS};
pub use random::{OsRandom, RandomSource, RecordedRandom};
pub use session::Role;

use crate::ibe::{
    bf::{DecryptionKey, RecipientCache},
    cc::{SignerCache, SigningKey},
    check_key, Aor, IbeError, Identity, Period, PrivateKeys, PublicParams,
};
use message::{SipView, StartLine};
use session::{Limits, SessionTable};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of the `message/sip` entity.
pub const ENTITY_PREFIX: &[u8] = b"Content-Type: message/sip\r\n\r\n";
/// HKDF info of the session KEK.
pub const KEK_INFO: &[u8] = b"IBESIP-V01 session KEK";

/// Tunables with safe defaults.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Anonymous outer From and user-less Contact (spec 5.1; default on).
    pub privacy: bool,
    /// Most sessions held at once.
    pub max_sessions: usize,
    /// Most pending sessions (opened by peers, not answered by us yet);
    /// they are evicted oldest-idle-first among themselves.
    pub max_pending: usize,
    /// Most pending sessions charged to one peer (a verified signer, or
    /// all unsigned first messages together).
    pub max_pending_per_peer: usize,
    /// Most session ids remembered at once (spec 5.4); when full, first
    /// messages are refused rather than ids forgotten early.
    pub max_session_ids: usize,
    /// An established dialog's session (INVITE, SUBSCRIBE, REFER) unused
    /// this long is dropped.
    pub session_idle: Duration,
    /// Any other session (pending, or one out-of-dialog transaction)
    /// unused this long is dropped (at most `session_idle`).
    pub transaction_idle: Duration,
    /// Least time between two housekeeping sweeps made by `seal`/`open`.
    pub sweep_interval: Duration,
    /// Largest accepted distance between a first message's signingTime and
    /// our clock (spec: 300 s).
    pub max_clock_skew: Duration,
    /// How long accepted session ids are remembered (spec: at least 600 s).
    pub session_id_memory: Duration,
    /// How long the same bytes count as a retransmission rather than a
    /// replay: longer than the longest SIP transaction (64 * T1 = 32 s).
    pub retransmission_window: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            privacy: true,
            max_sessions: 4096,
            max_pending: 1024,
            max_pending_per_peer: 32,
            max_session_ids: 65_536,
            session_idle: Duration::from_secs(12 * 3600),
            transaction_idle: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(300),
            session_id_memory: Duration::from_secs(600),
            retransmission_window: Duration::from_secs(64),
        }
    }
}

/// What the user should be told about who sent a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The peer's signature verified for this identity: the first
    /// signature proved on this dialog branch of this session (never one
    /// of another session or branch).
    Verified(Identity),
    /// No verified signature: the sender must be shown as unverified.
    Unverified,
}

/// A verified inner message and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The inner message, byte for byte as sealed.
    pub inner: Vec<u8>,
    /// The tunnel session.
    pub session_id: [u8; 16],
    /// Who sent it.
    pub direction: Direction,
    /// Its `ibesip-seq`.
    pub seq: u64,
    /// Whether it opened a new session (BF key transport).
    pub first_message: bool,
    /// The peer's identity as far as signatures on this session and
    /// dialog branch prove it; an unsigned first message is `Unverified`.
    pub peer: PeerIdentity,
    /// The key period of our identity that decrypted the first message.
    pub period: Option<Period>,
    /// True when these exact bytes were accepted before (a retransmission).
    pub retransmission: bool,
    /// Sessions this verified first message superseded and that are gone:
    /// unsigned, unanswered first messages on its Call-ID (a racing
    /// keyless third party); their calls must end.
    pub superseded: Vec<[u8; 16]>,
}

/// One of our own identities (one key period).
struct OwnKey {
    identity: Identity,
    decryption: DecryptionKey,
    signing: SigningKey,
}

/// The tunnel of one user agent: its keys, the providers' parameters it
/// trusts, its sessions.
pub struct Tunnel {
    config: TunnelConfig,
    own_aor: Aor,
    keys: Vec<OwnKey>,
    params: HashMap<String, PublicParams>,
    /// User parts of our own Contact URIs (per-device tokens).
    contact_users: Vec<String>,
    recipients: RecipientCache,
    /// A memo of signers' public values; verification borrows it briefly.
    signers: RefCell<SignerCache>,
    sessions: SessionTable,
    rng: Box<dyn RandomSource>,
    /// Debugging only: where used keys are reported (none by default).
    key_log: Option<Box<dyn keylog::KeyLogSink>>,
}

impl Tunnel {
    /// A tunnel for `own_aor` with the operating system's randomness.
    pub fn new(own_aor: Aor, config: TunnelConfig) -> Self {
        Self::with_random(own_aor, config, Box::new(OsRandom))
    }

    /// A tunnel with a chosen random source (known-answer tests).
    pub fn with_random(own_aor: Aor, config: TunnelConfig, rng: Box<dyn RandomSource>) -> Self {
        let sessions = SessionTable::new(Limits {
            max_sessions: config.max_sessions,
            max_pending: config.max_pending,
            max_pending_per_peer: config.max_pending_per_peer,
            max_session_ids: config.max_session_ids,
            idle: config.session_idle,
            transaction_idle: config.transaction_idle,
            id_memory: config.session_id_memory,
            retransmission: config.retransmission_window,
            sweep_interval: config.sweep_interval,
        });
        Tunnel {
            config,
            own_aor,
            keys: Vec::new(),
            params: HashMap::new(),
            contact_users: Vec::new(),
            recipients: RecipientCache::new(64),
            signers: RefCell::new(SignerCache::new(64)),
            sessions,
            rng,
            key_log: None,
        }
    }

    /// Turns the key log on (debugging only; off by default): from now on
    /// every session KEK and message CEK this tunnel uses is reported to
    /// `sink` after the message was sealed or opened. Whoever reads the
    /// sink can decrypt those messages.
    pub fn set_key_log(&mut self, sink: Box<dyn keylog::KeyLogSink>) {
        self.key_log = Some(sink);
    }

    /// Reports a used key when the key log is on.
    fn log_key(&mut self, entry: impl FnOnce() -> keylog::KeyLogEntry) {
        if let Some(sink) = self.key_log.as_mut() {
            sink.record(&entry());
        }
    }

    /// Trusts a provider's parameters (our own domain, or a federated one).
    pub fn add_params(&mut self, params: PublicParams) {
        self.params.insert(params.domain().to_string(), params);
    }

    /// Adds our private keys for one period after checking them against
    /// our domain's parameters (which must be added first).
    pub fn add_keys(&mut self, keys: &PrivateKeys) -> Result<(), IbeError> {
        if keys.identity().aor() != &self.own_aor {
            return Err(IbeError::KeyCheckFailed);
        }
        let params = self.params.get(self.own_aor.host()).ok_or_else(|| {
            IbeError::InvalidParams(format!("no parameters for {}", self.own_aor.host()))
        })?;
        check_key(params, keys)?;
        self.keys.retain(|k| k.identity != *keys.identity());
        self.keys.push(OwnKey {
            identity: keys.identity().clone(),
            decryption: DecryptionKey::new(keys),
            signing: SigningKey::new(keys),
        });
        Ok(())
    }

    /// Our address of record.
    pub fn own_aor(&self) -> &Aor {
        &self.own_aor
    }

    /// Sets the user parts of our own Contact URIs (per-device contact
    /// tokens). A first request whose inner Request-URI has one of them
    /// as its user part is meant for us whatever the URI's host (spec 5.4
    /// recipient binding); any other user part must be our AOR's.
    pub fn set_contact_users<I, S>(&mut self, users: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.contact_users = users.into_iter().map(Into::into).collect();
    }

    /// Whether a live session (ours or a peer's, pending or established)
    /// is on `call_id`. Established sessions are never evicted to make
    /// room (only pending ones are), so a dialog the tunnel carries stays
    /// visible here for as long as it lives, whatever a flood of first
    /// messages does.
    pub fn call_id_in_use(&self, call_id: &str) -> bool {
        self.sessions.call_id_in_use(call_id)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of pending sessions: opened by a peer, not answered by us.
    pub fn pending_session_count(&self) -> usize {
        self.sessions.pending()
    }

    /// Drops idle sessions and expired memories now. `seal` and `open`
    /// also do it by themselves, at most once per `sweep_interval` of the
    /// `now` they are given (and whenever the table or the session-id
    /// memory is full), so calling this is never required.
    pub fn expire(&mut self, now: SystemTime) {
        self.sessions.expire(now);
    }

    /// Time-driven housekeeping at the start of `seal` and `open`.
    fn housekeeping(&mut self, now: SystemTime) {
        if self.sessions.len() >= self.config.max_sessions
            || self.sessions.remembered_ids() >= self.config.max_session_ids
        {
            self.sessions.expire(now);
        } else {
            self.sessions.maybe_expire(now);
        }
    }

    fn current_period(now: SystemTime) -> Period {
        Period::month_at(unix_secs(now))
    }

    /// The current and previous periods at `now`.
    fn accepted_periods(now: SystemTime) -> Vec<Period> {
        let current = Self::current_period(now);
        let mut out = vec![current.clone()];
        if let Ok(prev) = current.previous_month() {
            out.push(prev);
        }
        out
    }

    fn own_key_for_period(&self, period: &Period) -> Option<&OwnKey> {
        self.keys.iter().find(|k| k.identity.period() == period)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How a message must travel (spec 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Between the two user agents of a protected dialog: sealed.
    Tunnel,
    /// Hop-by-hop or registrar traffic: plain.
    Plain,
}

/// Which treatment a message gets. `ack_of_non_2xx` must be set by the
/// transaction layer for the ACK it generates for a non-2xx final response.
///
/// Fails closed: only a message the strict parser reads and that spec 5.5
/// names is plain. Bytes that do not parse as a SIP message are
/// [`Treatment::Tunnel`], so a caller never lets them through (or sends
/// them) unprotected because they could not be read; sealing or opening
/// them then fails with a typed error.
pub fn classify(message: &[u8], ack_of_non_2xx: bool) -> Treatment {
    let Ok(view) = SipView::parse(message) else {
        return Treatment::Tunnel;
    };
    match &view.start {
        StartLine::Request { method, .. } => match method.as_str() {
            "REGISTER" | "CANCEL" => Treatment::Plain,
            "ACK" if ack_of_non_2xx => Treatment::Plain,
            _ => Treatment::Tunnel,
        },
        StartLine::Response { code } => {
            let method = view.cseq().map(|(_, m)| m.to_string()).unwrap_or_default();
            if *code == 100 || method == "CANCEL" || method == "REGISTER" {
                Treatment::Plain
            } else {
                Treatment::Tunnel
            }
        }
    }
}

/// A plain error response to an outer request (415 with `Accept:
/// application/sdp`, 493, or 503 with `Retry-After`), carrying only the
/// outer routing headers.
pub fn error_response(outer_request: &[u8], code: u16) -> Option<Vec<u8>> {
    let view = SipView::parse(outer_request).ok()?;
    if !view.is_request() || view.method().ok()? == "ACK" {
        return None;
    }
    let reason = match code {
        415 => "Unsupported Media Type",
        493 => "Undecipherable",
        503 => "Service Unavailable",
        _ => return None,
    };
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in view.all("via") {
        out.push_str(&format!("v: {via}\r\n"));
    }
    let to = view.one("to").ok()?;
    out.push_str(&format!("f: {}\r\n", view.one("from").ok()?));
    if message::NameAddr::parse(to).ok()?.tag().is_some() {
        out.push_str(&format!("t: {to}\r\n"));
    } else {
        // Our own tag for this error response: random, short.
        let mut tag = [0u8; 6];
        getrandom::fill(&mut tag).ok()?;
        out.push_str(&format!("t: {to};tag={}\r\n", hex::encode(tag)));
    }
    out.push_str(&format!("i: {}\r\n", view.call_id().ok()?));
    out.push_str(&format!("CSeq: {}\r\n", view.one("cseq").ok()?));
    if code == 415 {
        out.push_str("Accept: application/sdp\r\n");
    }
    if code == 503 {
        out.push_str(&format!("Retry-After: {BUSY_RETRY_AFTER_SECS}\r\n"));
    }
    out.push_str("l: 0\r\n\r\n");
    Some(out.into_bytes())
}
