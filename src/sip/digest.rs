//! Digest authentication: RFC 3261 22 with RFC 7616 algorithms and RFC
//! 8760 SHA-256 for SIP. `qop=auth` only (SIP bodies are opaque tunnel
//! bodies; `auth-int` buys nothing there).
//!
//! Written by hand because `rsip` 0.4's digest generator uses md-5/sha2
//! 0.9 and has no server side. Server nonces are signed: base64url of an
//! 8-byte timestamp (milliseconds since the verifier's epoch) and a
//! truncated HMAC-SHA-256 over it and a scope (the registrar passes realm
//! and Call-ID), so a nonce is checked without a table, is good only for
//! the request it challenged, and expires after `max_age`. Its use is
//! tracked only once a response verified ([`NonceCounts`]): every use must
//! carry a higher nonce count, so a captured Authorization is never
//! accepted twice, and an unauthenticated flood allocates nothing. All
//! comparisons of MACs and responses are constant-time (`subtle`).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 3261, RFC 2617).
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760); preferred.
    Sha256,
}

impl Algorithm {
    /// Parses a configuration name (`MD5`, `SHA-256`, any case).
    pub fn from_name(s: &str) -> Option<Algorithm> {
        Algorithm::parse(s)
    }

    /// Token as written in headers.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// A password; zeroized on drop, never printed.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Password {
        Password(Zeroizing::new(s.into()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `H(user:realm:password)` in hex: what a registrar stores instead of the
/// password.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &Password) -> Zeroizing<String> {
    Zeroizing::new(alg.hex(&format!("{user}:{realm}:{}", password.0.as_str())))
}

/// The `response` value for qop=auth (RFC 7616 3.4.1).
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    alg.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// Parses `Digest k=v, k="v", ...` into pairs; None if not a Digest header.
fn parse_pairs(value: &str) -> Option<Vec<(String, String)>> {
    let v = value.trim();
    let (scheme, rest) = v.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = Vec::new();
    for part in crate::sip::message::split_list(rest) {
        let (k, v) = part.split_once('=')?;
        out.push((
            k.trim().to_ascii_lowercase(),
            v.trim().trim_matches('"').to_string(),
        ));
    }
    Some(out)
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A WWW-Authenticate / Proxy-Authenticate challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// True when the previous nonce merely expired.
    pub stale: bool,
}

impl Challenge {
    /// Parses one challenge; None for other schemes, unknown algorithms, or
    /// challenges without `qop=auth` support (we never use RFC 2069 mode).
    pub fn parse(value: &str) -> Option<Challenge> {
        let p = parse_pairs(value)?;
        let algorithm = match get(&p, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        let qop = get(&p, "qop")?;
        if !qop.split(',').any(|q| q.trim() == "auth") {
            return None;
        }
        Some(Challenge {
            realm: get(&p, "realm")?.to_string(),
            nonce: get(&p, "nonce")?.to_string(),
            opaque: get(&p, "opaque").map(str::to_string),
            algorithm,
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            self.realm,
            self.nonce,
            self.algorithm.token()
        );
        if let Some(o) = &self.opaque {
            s.push_str(&format!(", opaque=\"{o}\""));
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// Picks the strongest challenge we support among header values
    /// (RFC 8760 2.4: SHA-256 over MD5).
    pub fn best<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
        let mut all: Vec<Challenge> = values.filter_map(Challenge::parse).collect();
        all.sort_by_key(|c| c.algorithm != Algorithm::Sha256);
        all.into_iter().next()
    }

    /// The Authorization header value answering this challenge.
    pub fn answer(
        &self,
        user: &str,
        password: &Password,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let h1 = ha1(self.algorithm, user, &self.realm, password);
        let nc = format!("{nc:08x}");
        let r = response(self.algorithm, &h1, &self.nonce, &nc, cnonce, method, uri);
        let mut s = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{r}\", algorithm={}, cnonce=\"{cnonce}\", qop=auth, nc={nc}",
            self.realm,
            self.nonce,
            self.algorithm.token()
        );
        if let Some(o) = &self.opaque {
            s.push_str(&format!(", opaque=\"{o}\""));
        }
        s
    }
}

/// Credentials from an Authorization / Proxy-Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Claimed user name.
    pub username: String,
    /// Realm.
    pub realm: String,
    /// Echoed nonce.
    pub nonce: String,
    /// digest-uri.
    pub uri: String,
    /// Client response (hex).
    pub response: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Client nonce.
    pub cnonce: String,
    /// Nonce count (8 hex digits).
    pub nc: String,
}

/// Why a nonce count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceCountError {
    /// `nc` is not 8 hex digits, or is zero.
    #[error("nonce count is not 8 hex digits above zero")]
    Malformed,
    /// `nc` is not above the last accepted count of this nonce: a replay.
    #[error("nonce count {got} not above the last accepted {last}: replay")]
    Replayed {
        /// The count received.
        got: u32,
        /// The highest count accepted before.
        last: u32,
    },
    /// The table is full of live nonces: the caller must issue a new one.
    #[error("too many live nonces")]
    Full,
}

/// The last accepted nonce count of each nonce in use (RFC 7616 3.3: a
/// server tracks `nc` to detect replays). Entries are made only after a
/// response verified, and forgotten when the nonce expires.
#[derive(Debug)]
pub struct NonceCounts {
    seen: std::collections::HashMap<String, (u64, u32)>,
    max_entries: usize,
    max_age_ms: u64,
}

impl NonceCounts {
    /// A table of at most `max_entries` nonces living `max_age_ms`.
    pub fn new(max_entries: usize, max_age_ms: u64) -> NonceCounts {
        NonceCounts {
            seen: std::collections::HashMap::new(),
            max_entries,
            max_age_ms,
        }
    }

    /// Accepts `nc` (8 hex digits) for `nonce` at `now_ms` if it is above
    /// every count accepted before for that nonce, and records it; a
    /// refused count changes nothing.
    pub fn accept(&mut self, nonce: &str, nc: &str, now_ms: u64) -> Result<(), NonceCountError> {
        let n = parse_nc(nc).ok_or(NonceCountError::Malformed)?;
        if let Some((_, last)) = self.seen.get(nonce) {
            if n <= *last {
                return Err(NonceCountError::Replayed {
                    got: n,
                    last: *last,
                });
            }
        } else if self.seen.len() >= self.max_entries {
            let age = self.max_age_ms;
            self.seen
                .retain(|_, (first, _)| now_ms.saturating_sub(*first) <= age);
            if self.seen.len() >= self.max_entries {
                return Err(NonceCountError::Full);
            }
        }
        let e = self.seen.entry(nonce.to_string()).or_insert((now_ms, 0));
        e.1 = n;
        Ok(())
    }

    /// Number of tracked nonces.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn parse_nc(nc: &str) -> Option<u32> {
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok().filter(|n| *n > 0)
}

impl Credentials {
    /// Parses credentials; None if any field qop=auth needs is missing.
    pub fn parse(value: &str) -> Option<Credentials> {
        let p = parse_pairs(value)?;
        if get(&p, "qop")? != "auth" {
            return None;
        }
        Some(Credentials {
            username: get(&p, "username")?.to_string(),
            realm: get(&p, "realm")?.to_string(),
            nonce: get(&p, "nonce")?.to_string(),
            uri: get(&p, "uri")?.to_string(),
            response: get(&p, "response")?.to_string(),
            algorithm: match get(&p, "algorithm") {
                Some(a) => Algorithm::parse(a)?,
                None => Algorithm::Md5,
            },
            cnonce: get(&p, "cnonce")?.to_string(),
            nc: get(&p, "nc")?.to_string(),
        })
    }

    /// True if the response matches `ha1` (hex) for `method`; constant-time.
    pub fn verify(&self, ha1: &str, method: &str) -> bool {
        let expected = response(
            self.algorithm,
            ha1,
            &self.nonce,
            &self.nc,
            &self.cnonce,
            method,
            &self.uri,
        );
        expected
            .as_bytes()
            .ct_eq(self.response.to_ascii_lowercase().as_bytes())
            .into()
    }
}

/// Result of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Issued by us and fresh.
    Fresh,
    /// Issued by us but older than the lifetime: challenge with `stale=true`.
    Stale,
    /// Not ours.
    Invalid,
}

/// Issues and checks stateless nonces.
pub struct NonceSigner {
    key: Zeroizing<[u8; 32]>,
    max_age_ms: u64,
}

impl std::fmt::Debug for NonceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSigner")
            .field("key", &"[redacted]")
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl NonceSigner {
    /// A signer with a fresh random key; nonces live `max_age_ms`.
    pub fn new(max_age_ms: u64) -> NonceSigner {
        let mut key = Zeroizing::new([0u8; 32]);
        if getrandom::fill(key.as_mut()).is_err() {
            tracing::error!("no OS randomness for the nonce key");
        }
        NonceSigner { key, max_age_ms }
    }

    fn mac(&self, head: &[u8], scope: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Ok(mut m) = HmacSha256::new_from_slice(self.key.as_ref()) {
            m.update(head);
            m.update(scope.as_bytes());
            out.copy_from_slice(&m.finalize().into_bytes()[..16]);
        }
        out
    }

    /// A nonce for `scope` (the realm, and whatever else the nonce must be
    /// bound to) issued at `now_ms`: the time, 8 random bytes (two nonces
    /// are never equal, so their counts are never confused) and the MAC.
    pub fn issue(&self, scope: &str, now_ms: u64) -> String {
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&now_ms.to_be_bytes());
        if getrandom::fill(&mut head[8..]).is_err() {
            tracing::error!("no OS randomness for a nonce");
        }
        let mut raw = head.to_vec();
        raw.extend_from_slice(&self.mac(&head, scope));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce we may have issued for exactly `scope`.
    pub fn check(&self, nonce: &str, scope: &str, now_ms: u64) -> NonceState {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceState::Invalid;
        };
        if raw.len() != 32 {
            return NonceState::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        if !bool::from(self.mac(&raw[..16], scope).ct_eq(&raw[16..])) {
            return NonceState::Invalid;
        }
        let issued = u64::from_be_bytes(ts);
        if issued > now_ms || now_ms - issued > self.max_age_ms {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_md5_example() {
        let pw = Password::new("Circle Of Life");
        let h1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", &pw);
        let r = response(
            Algorithm::Md5,
            &h1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_examples_md5_and_sha256() {
        let pw = Password::new("Circle of Life");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let realm = "http-auth@example.org";
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let h1 = ha1(alg, "Mufasa", realm, &pw);
            let r = response(
                alg,
                &h1,
                nonce,
                "00000001",
                cnonce,
                "GET",
                "/dir/index.html",
            );
            assert_eq!(r, want);
        }
    }

    #[test]
    fn answer_verifies_and_wrong_password_does_not() {
        let signer = NonceSigner::new(300_000);
        let ch = Challenge {
            realm: "example.invalid".into(),
            nonce: signer.issue("example.invalid", 1000),
            opaque: None,
            algorithm: Algorithm::Sha256,
            stale: false,
        };
        let parsed = Challenge::parse(&ch.to_header()).unwrap();
        assert_eq!(parsed, ch);
        let pw = Password::new("secret");
        let auth = ch.answer("alice", &pw, "REGISTER", "sip:example.invalid", 1, "abc");
        let cr = Credentials::parse(&auth).unwrap();
        let stored = ha1(Algorithm::Sha256, "alice", "example.invalid", &pw);
        assert!(cr.verify(&stored, "REGISTER"));
        assert!(!cr.verify(&stored, "INVITE"));
        let wrong = ha1(
            Algorithm::Sha256,
            "alice",
            "example.invalid",
            &Password::new("x"),
        );
        assert!(!cr.verify(&wrong, "REGISTER"));
        assert_eq!(
            signer.check(&cr.nonce, "example.invalid", 2000),
            NonceState::Fresh
        );
    }

    #[test]
    fn nonces_expire_and_forgeries_fail() {
        let s = NonceSigner::new(1000);
        let n = s.issue("r", 5000);
        assert_eq!(s.check(&n, "r", 5500), NonceState::Fresh);
        assert_eq!(s.check(&n, "r", 7000), NonceState::Stale);
        assert_eq!(s.check(&n, "other", 5500), NonceState::Invalid);
        assert_eq!(
            NonceSigner::new(1000).check(&n, "r", 5500),
            NonceState::Invalid
        );
        assert_eq!(s.check("not base64!", "r", 0), NonceState::Invalid);
    }

    #[test]
    fn nonce_counts_must_increase_and_malformed_are_refused() {
        let mut t = NonceCounts::new(2, 1000);
        assert_eq!(t.accept("n1", "00000001", 0), Ok(()));
        assert_eq!(
            t.accept("n1", "00000001", 1),
            Err(NonceCountError::Replayed { got: 1, last: 1 })
        );
        assert_eq!(t.accept("n1", "00000003", 2), Ok(()));
        assert_eq!(
            t.accept("n1", "00000002", 3),
            Err(NonceCountError::Replayed { got: 2, last: 3 })
        );
        for bad in ["1", "0000000g", "00000000", "000000001", ""] {
            assert_eq!(
                t.accept("n2", bad, 4),
                Err(NonceCountError::Malformed),
                "{bad}"
            );
        }
        assert!(t.accept("n2", "00000001", 5).is_ok());
        // Full of live nonces: refused; once they expire, room again.
        assert_eq!(t.accept("n3", "00000001", 6), Err(NonceCountError::Full));
        assert_eq!(t.accept("n3", "00000001", 2000), Ok(()));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn best_challenge_prefers_sha256() {
        let md5 = "Digest realm=\"r\", nonce=\"n\", algorithm=MD5, qop=\"auth\"";
        let sha = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\"";
        let c = Challenge::best([md5, sha].into_iter()).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(Password::new("pw").fmt_is_redacted());
    }

    impl Password {
        fn fmt_is_redacted(&self) -> bool {
            format!("{self:?}") == "[redacted]"
        }
    }
}
