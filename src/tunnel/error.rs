//! What can go wrong when sealing or opening, and what goes on the wire
//! then (spec 5.6).

use super::cms::CmsError;
use super::message::MessageError;
use crate::ibe::IbeError;
use thiserror::Error;

/// Why an inner message could not be sealed. Sealing changes no state on
/// failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The inner message is not a complete SIP message.
    #[error("inner message is malformed: {0}")]
    Inner(#[source] MessageError),
    /// The inner message cannot start a session or belong to one (e.g.
    /// an initial message that is not a request, a message without a
    /// From tag).
    #[error("cannot seal: {0}")]
    Unsealable(&'static str),
    /// No tunnel session belongs to this message's dialog (a message
    /// that is not an initial request and that spec 5.5 may keep plain,
    /// or one of a dialog we never tunneled).
    #[error("cannot seal: no tunnel session for this message's dialog")]
    NoSession,
    /// Sessions of both roles match the dialog. It cannot happen (a
    /// Call-ID never has sessions of both roles); sealing fails closed
    /// rather than guess.
    #[error("cannot seal: tunnel sessions of both roles match this dialog")]
    AmbiguousSession,
    /// An initial request on a Call-ID that a live session of another
    /// dialog uses (a first message never joins or shadows one).
    #[error("Call-ID already used by another tunnel session")]
    CallIdInUse,
    /// Every session slot holds an established session.
    #[error("tunnel session table full")]
    TableFull,
    /// The callee's domain has no known public parameters.
    #[error("no public parameters for domain {0}")]
    UnknownDomain(String),
    /// The callee URI has no identity (spec 2).
    #[error("callee has no identity: {0}")]
    Identity(#[source] IbeError),
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encoding(#[source] CmsError),
    /// The operating system's random generator failed while drawing the
    /// named value.
    #[error("random generator failed while drawing {what}: {source}")]
    Random {
        /// Which value was being drawn (`cek`, `gcm_nonce`, ...).
        what: &'static str,
        /// The generator's error.
        #[source]
        source: getrandom::Error,
    },
    /// The Boneh-Franklin key transport or the signature failed (an
    /// unusable parameter or key; never the peer's doing).
    #[error("IBE operation failed while sealing: {0}")]
    Ibe(#[source] IbeError),
    /// AES key wrap of the content key failed.
    #[error("AES key wrap of the content key failed")]
    KeyWrap,
    /// AES-GCM encryption failed (content too long for one GCM message).
    #[error("AES-GCM encryption failed")]
    ContentEncryption,
}

/// Why a signature was refused (spec 5.4).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// `ibesip-signer-identity` is not an identity string.
    #[error("signer identity is malformed")]
    SignerIdentity,
    /// `sid` is not the key identifier of the signer identity.
    #[error("sid does not match the signer identity")]
    SidMismatch,
    /// `messageDigest` is not the digest of the content.
    #[error("messageDigest does not match the content")]
    MessageDigest,
    /// The signature bytes do not decode.
    #[error("signature encoding invalid")]
    Encoding,
    /// The signature does not verify.
    #[error("signature does not verify")]
    DoesNotVerify,
}

/// Why an outer message was rejected. Every variant leaves the tunnel's
/// state as it was.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a tunneled message (no `application/pkcs7-mime` body).
    #[error("message is not tunneled")]
    NotTunneled,
    /// The outer message is not a SIP message the tunnel accepts.
    #[error("outer message malformed: {0}")]
    Outer(#[source] MessageError),
    /// The body is not a CMS object of this profile.
    #[error("CMS structure rejected: {0}")]
    Cms(#[source] CmsError),
    /// The key transport names an identity or period we hold no key for.
    #[error("no private key for the recipient identity of this message (unknown identity or key period)")]
    NoKeyForPeriod,
    /// The BF key transport did not decrypt.
    #[error("key transport failed to decrypt")]
    KeyTransport,
    /// A later message names a session we do not know (or that expired).
    #[error("unknown tunnel session")]
    UnknownSession,
    /// AES key unwrap failed (wrong KEK).
    #[error("key unwrap failed")]
    KeyUnwrap,
    /// GCM authentication failed: the body was changed or the key is wrong.
    #[error("content authentication failed")]
    Authentication,
    /// The (direction, seq) was already accepted or is too old.
    #[error("replayed or too old message (direction {direction}, seq {seq})")]
    Replay {
        /// 0 caller to callee, 1 back.
        direction: u8,
        /// The sequence number.
        seq: u64,
    },
    /// A message of our own direction came back to us.
    #[error("message reflected back to its sender")]
    Reflected,
    /// The outer binding does not match the outer message.
    #[error("outer binding mismatch")]
    OuterBinding,
    /// Outer and inner disagree on the named field.
    #[error("outer and inner messages disagree on {0}")]
    Mismatch(&'static str),
    /// The message belongs to another dialog than its session.
    #[error("message spliced from another dialog into this session")]
    WrongDialog,
    /// The inner message is malformed (e.g. its Content-Length lies).
    #[error("inner message malformed: {0}")]
    Inner(#[source] MessageError),
    /// The decrypted entity is not `Content-Type: message/sip`.
    #[error("entity is not Content-Type: message/sip")]
    EntityType,
    /// A first message (BF key transport) that is not an initial request
    /// from the caller.
    #[error("first message of a session is not an initial request from the caller")]
    NotInitialRequest,
    /// A first request meant for someone else (spec 5.4 recipient
    /// binding): the named inner field does not name us.
    #[error("first request is not meant for us: inner {0} names someone else")]
    NotForUs(&'static str),
    /// A first message whose Call-ID a live session already uses: it would
    /// replace, join or shadow that dialog's session (spec 5.4).
    #[error("first message collides with the Call-ID of a live tunnel session")]
    DialogCollision,
    /// Every session slot holds an established session: a newcomer is
    /// refused rather than a live dialog evicted.
    #[error("tunnel session table full")]
    TableFull,
    /// The memory of accepted session ids is full: a newcomer is refused
    /// rather than an id forgotten early (forgetting allows replays).
    #[error("session id memory full")]
    SessionIdMemoryFull,
    /// A signature on a branch whose peer already proved another identity.
    #[error("signer {signer} differs from the identity {verified} this dialog branch proved")]
    SignerChanged {
        /// The new signer's AOR.
        signer: String,
        /// The branch's verified AOR.
        verified: String,
    },
    /// The first message reuses a session id seen recently (outside the
    /// transaction it was accepted in: a replay).
    #[error("session id already used: a replayed first message")]
    SessionIdReused,
    /// The signing time of a first message is too far from our clock.
    #[error("signing time {0} s away from our clock")]
    Stale(i64),
    /// The signer identity is not the inner From (request) / To (response).
    #[error("signer {signer} is not the {expected}")]
    SignerMismatch {
        /// Signer AOR.
        signer: String,
        /// What it should have been.
        expected: String,
    },
    /// The signer's key period is neither current nor previous.
    #[error("signer key period {0} is not current or previous")]
    SignerPeriod(String),
    /// The signature or its attributes do not verify.
    #[error("signature invalid: {0}")]
    Signature(#[source] SignatureError),
    /// The response's session binding is not our first message's.
    #[error("session binding mismatch")]
    SessionBinding,
}

/// What to do on the wire after a rejection (spec 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireAction {
    /// Answer `493 Undecipherable` (requests other than ACK).
    Respond493,
    /// Answer `415 Unsupported Media Type` with `Accept: application/sdp`
    /// when the policy refuses plain messages.
    Respond415,
    /// Answer `503 Service Unavailable` with `Retry-After:`
    /// [`BUSY_RETRY_AFTER_SECS`]: a well-formed newcomer refused only
    /// because the session table or the session-id memory is full.
    Respond503,
    /// Drop silently (responses, ACK, and attacks that must not be answered).
    Drop,
}

/// The `Retry-After` (seconds) of a `503` for a full tunnel table. The
/// spec is silent; a minute lets idle pending sessions (and, later,
/// remembered session ids) age out without inviting an immediate retry
/// storm.
pub const BUSY_RETRY_AFTER_SECS: u32 = 60;

impl OpenError {
    /// The wire action for this failure on a message that was a request of
    /// `method` (`None` for a response). Only "cannot decrypt" failures
    /// (no key for the period, unknown session, authentication) are
    /// answered 493, and a refusal under load (full session table or
    /// session-id memory) is answered 503 with `Retry-After`, plain, like
    /// the other hop-by-hop errors, so a genuine caller learns to come back
    /// rather than retransmit into the full table. Replays, reflections,
    /// forgeries, collisions with live dialogs and messages meant for
    /// someone else are dropped so that the tunnel never becomes an oracle
    /// or an amplifier (a 503 is no bigger than the request it answers).
    pub fn wire_action(&self, request_method: Option<&str>) -> WireAction {
        let answerable = matches!(request_method, Some(m) if m != "ACK");
        match self {
            _ if !answerable => WireAction::Drop,
            OpenError::NotTunneled => WireAction::Respond415,
            OpenError::NoKeyForPeriod
            | OpenError::KeyTransport
            | OpenError::UnknownSession
            | OpenError::KeyUnwrap
            | OpenError::Authentication => WireAction::Respond493,
            OpenError::TableFull | OpenError::SessionIdMemoryFull => WireAction::Respond503,
            _ => WireAction::Drop,
        }
    }
}
