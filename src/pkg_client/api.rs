//! The PKG protocol's request and response bodies (spec `pkg-api.md`), the
//! one definition used by both the server (`pkg-server`) and the client.
//!
//! Unknown members are ignored when decoding (serde's default), as the spec
//! requires of clients. Secret members (passwords, tokens, private keys)
//! are [`SecretString`]s: wiped on drop and printed as `[redacted]`.

use core::fmt;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Path of the login endpoint.
pub const PATH_LOGIN: &str = "/v1/login";
/// Path of the logout endpoint.
pub const PATH_LOGOUT: &str = "/v1/logout";
/// Path of the provider's own parameters.
pub const PATH_PARAMS: &str = "/v1/params";
/// Path of the key endpoint.
pub const PATH_KEYS: &str = "/v1/keys";
/// Path of the health endpoint.
pub const PATH_HEALTH: &str = "/v1/health";
/// Path of the device SIP credential endpoint.
pub const PATH_SIP_CREDENTIALS: &str = "/v1/sip-credentials";
/// Path of the TURN credential endpoint.
pub const PATH_TURN_CREDENTIALS: &str = "/v1/turn-credentials";
/// At most this many periods per key request (previous, current, next).
pub const MAX_PERIODS: usize = 3;

/// A secret string: zeroized on drop, `[redacted]` in `Debug`, serialized
/// as a plain JSON string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretString::new(String::deserialize(d)?))
    }
}

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString::new(s.to_string())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `POST /v1/login` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The account name (the user part of the AOR).
    pub user: String,
    /// The password.
    pub password: SecretString,
    /// The current one-time code (RFC 6238), for an account with a second
    /// factor; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<SecretString>,
}

/// `POST /v1/login` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Bearer token of the new session.
    pub token: SecretString,
    /// The canonical AOR of the account.
    pub aor: String,
    /// Idle timeout of the session in seconds.
    pub expires_in: u64,
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysRequest {
    /// Period labels (`YYYY-MM`), at most [`MAX_PERIODS`].
    pub periods: Vec<String>,
    /// Optional (server extension): the AOR the caller asks keys for. A
    /// server answers `403` unless it is the caller's own AOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aor: Option<String>,
}

/// One issued key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The period label.
    pub period: String,
    /// `d_enc`, base64url of the 96-byte G2 encoding.
    pub d_enc: SecretString,
    /// `d_sig`, base64url of the 96-byte G2 encoding.
    pub d_sig: SecretString,
}

/// `POST /v1/keys` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysResponse {
    /// The caller's canonical AOR.
    pub aor: String,
    /// One entry per requested period.
    pub keys: Vec<KeyEntry>,
    /// A threshold provider's server index `i`: the keys are then its
    /// shares `s_i * Q` (pkg-api.md "Threshold provider"); absent for a
    /// single PKG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// `POST /v1/sip-credentials` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SipCredentialsRequest {
    /// The device's name (1-64 characters of `A-Z a-z 0-9 . _ + -`); a new
    /// credential for a device replaces that device's earlier one.
    pub device: String,
}

/// `POST /v1/sip-credentials` answer: a SIP digest credential that
/// authenticates the caller's AOR only, never the PKG login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SipCredentialsResponse {
    /// The digest user name the registrar expects.
    pub username: String,
    /// base64url (no padding) of 16 random bytes.
    pub password: SecretString,
    /// The device it was issued for.
    pub device: String,
}

/// The provider's services (`services` member of `GET /v1/params`,
/// pkg-api.md "Discovery and provider services"): URIs in order of
/// preference. Authenticated by the pinned TLS connection they came on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// Outbound proxies (`sips:`/`sip:` URIs, RFC 3263 resolution).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sip: Vec<String>,
    /// STUN servers (RFC 7064 URIs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stun: Vec<String>,
    /// TURN servers (RFC 7065 URIs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn: Vec<String>,
}

impl Services {
    /// True when no service is listed.
    pub fn is_empty(&self) -> bool {
        self.sip.is_empty() && self.stun.is_empty() && self.turn.is_empty()
    }
}

/// The `services` member of a parameter document, if any (the rest of the
/// document is read by `PublicParams::from_json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ParamsServices {
    /// The member; absent: none.
    #[serde(default)]
    pub services: Option<Services>,
}

/// Whether `device` is an acceptable device name: 1-64 characters from
/// `A-Z a-z 0-9 . _ + -` (the account-name alphabet).
pub fn valid_device_name(device: &str) -> bool {
    !device.is_empty()
        && device.len() <= 64
        && device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// `POST /v1/turn-credentials` answer: short-lived TURN credentials in the
/// TURN REST form (coturn's `use-auth-secret`), valid on every relay in
/// `uris` until the Unix time that starts `username`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnCredentialsResponse {
    /// `<unix expiry>:<user>`.
    pub username: String,
    /// Base64 (standard, padded) of HMAC-SHA1(shared secret, `username`).
    pub password: SecretString,
    /// Lifetime in seconds from issuance.
    pub ttl: u64,
    /// The relays these credentials work on (RFC 7064/7065 URIs).
    pub uris: Vec<String>,
}

/// `GET /v1/health` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `"ok"` or `"unavailable"`.
    pub status: String,
    /// `"ok"` when the database answered.
    pub database: String,
}

/// Every error answer: `{"error": "<code>", "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, one of [`codes`].
    pub error: String,
    /// Explanation for people.
    pub message: String,
}

/// The error codes a server sends (the `error` member).
pub mod codes {
    /// 400: body is not valid JSON of the right shape, wrong content type.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 400: a period label that is not `YYYY-MM`, duplicated, or too many.
    pub const BAD_PERIOD: &str = "bad_period";
    /// 401: user unknown or password wrong (never says which).
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    /// 401: the password is right but the account needs a one-time code
    /// (`otp`) as well.
    pub const OTP_REQUIRED: &str = "otp_required";
    /// 401: missing, unknown, expired or logged-out token.
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// 403: the account is disabled.
    pub const ACCOUNT_DISABLED: &str = "account_disabled";
    /// 403: keys of another identity were asked for.
    pub const IDENTITY_NOT_ALLOWED: &str = "identity_not_allowed";
    /// 403: a period outside previous/current/next.
    pub const PERIOD_NOT_ALLOWED: &str = "period_not_allowed";
    /// 400: a device name outside the allowed alphabet or length.
    pub const BAD_DEVICE: &str = "bad_device";
    /// 409: the account already has the maximum number of devices.
    pub const TOO_MANY_DEVICES: &str = "too_many_devices";
    /// 404: unknown path, untrusted domain, or a service this provider
    /// does not offer (no `[turn]`).
    pub const NOT_FOUND: &str = "not_found";
    /// 413: the body is larger than the server accepts.
    pub const TOO_LARGE: &str = "too_large";
    /// 429: too many failed logins; see `Retry-After`.
    pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";
    /// 500: the server failed.
    pub const INTERNAL: &str = "internal";
    /// 503: the database is unavailable.
    pub const UNAVAILABLE: &str = "unavailable";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_members_are_ignored_and_secrets_redacted() {
        let r: LoginResponse = serde_json::from_str(
            r#"{"token":"abc","aor":"sip:a@b.c","expires_in":900,"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(r.token.expose(), "abc");
        assert!(!format!("{r:?}").contains("abc"));
        let k = KeysRequest {
            periods: vec!["2026-11".into()],
            aor: None,
        };
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"periods":["2026-11"]}"#
        );
        let t: TurnCredentialsResponse = serde_json::from_str(
            r#"{"username":"1800000000:alice","password":"c2VjcmV0","ttl":86400,"uris":[],"x":1}"#,
        )
        .unwrap();
        assert_eq!(t.password.expose(), "c2VjcmV0");
        assert!(!format!("{t:?}").contains("c2VjcmV0"));
    }
}
