//! The phone's client of its provider's PKG (spec `pkg-api.md`): the shared
//! API types ([`api`], also used by `pkg-server`), certificate pinning
//! ([`tls`]), the HTTPS client (`client`), encryption at rest ([`seal`],
//! one sealed file beside a private key file: [`sealed_file`]), the key
//! store that keeps keys across restarts ([`store`]), the discovery of
//! the PKG and the SIP proxy from a domain ([`discovery`]), the first
//! contact with a PKG by trusted roots or a certificate to confirm
//! ([`first_contact`]) and the
//! threshold provider's per-server logins and share combining
//! ([`threshold`]) and its home server's relay credentials while a phone
//! runs ([`home_relay`]).

pub mod api;
pub(crate) mod client;
pub mod discovery;
pub mod first_contact;
pub mod home_relay;
pub mod seal;
pub mod sealed_file;
pub mod store;
pub mod threshold;
pub mod tls;
pub mod turn;

pub use client::{PkgClient, Session};
pub use store::{KeyBundle, KeyStore, Unlock};
pub use turn::{TurnCredentials, TurnError, TurnUri};

use crate::ibe::IbeError;

/// Everything that can go wrong talking to a PKG or keeping its keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkgClientError {
    /// Connecting, sending or reading failed.
    #[error("PKG unreachable: {0}")]
    Io(String),
    /// The TLS handshake failed.
    #[error("TLS with the PKG failed: {0}")]
    Tls(String),
    /// The PKG presented a certificate other than the pinned one.
    #[error("PKG certificate fingerprint {presented} does not match the pinned {pinned}")]
    PinMismatch {
        /// The pinned fingerprint (hex).
        pinned: String,
        /// The fingerprint presented (hex).
        presented: String,
    },
    /// The PKG answered with an error.
    #[error("PKG refused ({status} {code}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The `error` code (see [`api::codes`]).
        code: String,
        /// The server's message.
        message: String,
    },
    /// Too many failed logins; try again later.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    Throttled {
        /// Seconds from `Retry-After`.
        retry_after_secs: u64,
    },
    /// The PKG sent something that breaks the protocol.
    #[error("PKG protocol violation: {0}")]
    Protocol(String),
    /// A key, parameter document or identity was invalid (includes keys
    /// that fail `check_key`).
    #[error(transparent)]
    Ibe(#[from] IbeError),
    /// Encryption at rest failed (wrong passphrase, damaged file).
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The provider does not offer this service (`404` on its endpoint).
    #[error("the provider offers no {0}")]
    NotOffered(&'static str),
    /// TURN credentials that break the REST form (see [`turn`]).
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// Too few servers of a threshold provider gave good key shares; the
    /// sentence names each server and why.
    #[error("{sentence}")]
    Threshold {
        /// For people: how many servers gave good shares, and each other
        /// server with why.
        sentence: String,
        /// The servers that refused the login for its credentials (`401
        /// invalid_credentials`: a wrong password or one-time code),
        /// ascending.
        refused: Vec<u32>,
        /// Every server that gave no good share was only out of reach
        /// (no connection, no answer in time, `5xx`, throttled): none
        /// refused, answered a bad share or broke the protocol. Then, and
        /// only then, the phone may fall back to its stored keys as it
        /// does when its one PKG is down ([`PkgClientError::is_unreachable`]).
        unreachable: bool,
    },
    /// Too few servers of a threshold provider gave good key shares, but
    /// enough refused only for want of their one-time codes (each server
    /// has its own TOTP seed): ask the user for the code of each of
    /// `servers` and fetch again with them.
    #[error(
        "the key servers {servers:?} ask for the one-time codes of the account's second factor"
    )]
    OtpRequiredAt {
        /// The indices of the servers that want a code, ascending.
        servers: Vec<u32>,
    },
    /// The key store could not be read or written.
    #[error("key store: {0}")]
    Store(String),
}

impl PkgClientError {
    /// Whether the PKG refused a login only for want of the one-time code
    /// of the account's second factor (`401 otp_required`): the password
    /// was right; ask the user for the code and log in again with it.
    /// For a threshold provider ([`PkgClientError::OtpRequiredAt`]) the
    /// code of each server named.
    pub fn is_otp_required(&self) -> bool {
        match self {
            PkgClientError::Server {
                status: 401, code, ..
            } => code == api::codes::OTP_REQUIRED,
            PkgClientError::OtpRequiredAt { .. } => true,
            _ => false,
        }
    }

    /// Whether this failure means "the PKG cannot be reached" (no
    /// connection, `5xx`, throttled; for a threshold provider, every
    /// server that gave no good share was so) rather than "the PKG or its
    /// answer is wrong" (a refusal, a bad share, another certificate).
    /// Only the first lets a phone start on its stored keys; a mix of
    /// servers down and one refusing is a refusal, so that making servers
    /// look down never hides a refusal.
    pub fn is_unreachable(&self) -> bool {
        match self {
            PkgClientError::Io(_) | PkgClientError::Throttled { .. } => true,
            PkgClientError::Server { status, .. } => *status >= 500,
            PkgClientError::Threshold { unreachable, .. } => *unreachable,
            _ => false,
        }
    }
}
