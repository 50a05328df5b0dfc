//! The S/MIME-style SIP tunnel (spec section 5), sans-I/O: complete SIP
//! messages in, complete SIP messages out; time is an argument.
//!
//! - [`Tunnel::seal`] turns an inner message into an outer one whose body is
//!   a CMS AuthEnvelopedData (first message of a session: BF key transport
//!   to the callee identity and a Cha-Cheon signature when we hold keys;
//!   later messages: AES key wrap under the session KEK).
//! - [`Tunnel::open`] checks an outer message (CMS profile, key transport,
//!   GCM tag, replay window, outer binding, outer/inner agreement,
//!   signature, freshness) and returns the inner message byte for byte.
//!   A rejected message changes no state.
//! - [`classify`] says which messages stay plain (5.5); [`OpenError::wire_action`]
//!   and [`error_response`] give the wire errors (5.6).
//! - [`keylog`]: an explicit opt-in hook ([`Tunnel::set_key_log`], off by
//!   default) that reports every KEK and CEK used, for debugging captures.
//!
//! Decisions where the spec is silent (each pinned by a test in
//! `tests/tunnel_dialog.rs`):
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

pub mod cms;
pub mod error;
pub mod kat;
pub mod keylog;
pub mod message;
pub mod oids;
mod open;
pub mod outer;
pub mod random;
pub mod replay;
mod seal;
pub mod session;
pub mod signed;

pub use cms::Direction;
pub use error::{OpenError, SealError, WireAction};
pub use random::{OsRandom, RandomSource, RecordedRandom};
pub use session::Role;

use crate::ibe::{
    bf::{DecryptionKey, RecipientCache},
    cc::{SignerCache, SigningKey},
    check_key, Aor, IbeError, Identity, Period, PrivateKeys, PublicParams,
};
use message::{SipView, StartLine};
use session::SessionTable;
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
    /// A session unused this long is dropped.
    pub session_idle: Duration,
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
            session_idle: Duration::from_secs(12 * 3600),
            max_clock_skew: Duration::from_secs(300),
            session_id_memory: Duration::from_secs(600),
            retransmission_window: Duration::from_secs(64),
        }
    }
}

/// What the user should be told about who sent a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The peer's signature verified for this identity (this message or
    /// the session's signed message from this peer).
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
    /// The peer's identity as far as signatures prove it.
    pub peer: PeerIdentity,
    /// The key period of our identity that decrypted the first message.
    pub period: Option<Period>,
    /// True when these exact bytes were accepted before (a retransmission).
    pub retransmission: bool,
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
    recipients: RecipientCache,
    signers: SignerCache,
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
        let sessions = SessionTable::new(
            config.max_sessions,
            config.session_idle,
            config.session_id_memory,
            config.retransmission_window,
        );
        Tunnel {
            config,
            own_aor,
            keys: Vec::new(),
            params: HashMap::new(),
            recipients: RecipientCache::new(64),
            signers: SignerCache::new(64),
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

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Drops idle sessions and expired memories; call from time to time.
    pub fn expire(&mut self, now: SystemTime) {
        self.sessions.expire(now);
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
/// application/sdp`, or 493), carrying only the outer routing headers.
pub fn error_response(outer_request: &[u8], code: u16) -> Option<Vec<u8>> {
    let view = SipView::parse(outer_request).ok()?;
    if !view.is_request() || view.method().ok()? == "ACK" {
        return None;
    }
    let reason = match code {
        415 => "Unsupported Media Type",
        493 => "Undecipherable",
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
    out.push_str("l: 0\r\n\r\n");
    Some(out.into_bytes())
}
