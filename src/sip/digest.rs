//! Digest authentication: RFC 3261 22 with RFC 7616 algorithms and RFC
//! 8760 SHA-256 for SIP. `qop=auth` only (SIP bodies are opaque tunnel
//! bodies; `auth-int` buys nothing there).
//!
//! Written by hand because `rsip` 0.4's digest generator uses md-5/sha2
//! 0.9 and has no server side. Server nonces are stateless: base64url of
//! an 8-byte timestamp (milliseconds since the verifier's epoch) and a
//! truncated HMAC-SHA-256 over it and the realm, so any nonce can be checked
//! without a table and expires after `max_age`. All comparisons of MACs and
//! responses are constant-time (`subtle`). A stateless nonce cannot stop the
//! replay of a whole REGISTER within its lifetime; the registrar's CSeq and
//! binding rules limit what such a replay can do.

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

    fn mac(&self, ts: &[u8; 8], realm: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Ok(mut m) = HmacSha256::new_from_slice(self.key.as_ref()) {
            m.update(ts);
            m.update(realm.as_bytes());
            out.copy_from_slice(&m.finalize().into_bytes()[..16]);
        }
        out
    }

    /// A nonce for `realm` issued at `now_ms`.
    pub fn issue(&self, realm: &str, now_ms: u64) -> String {
        let ts = now_ms.to_be_bytes();
        let mut raw = ts.to_vec();
        raw.extend_from_slice(&self.mac(&ts, realm));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce we may have issued for `realm`.
    pub fn check(&self, nonce: &str, realm: &str, now_ms: u64) -> NonceState {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceState::Invalid;
        };
        if raw.len() != 24 {
            return NonceState::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        if !bool::from(self.mac(&ts, realm).ct_eq(&raw[8..])) {
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
