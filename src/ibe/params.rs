//! The public parameter document (spec section 4) and its fingerprint.

use super::encoding::{b64_decode, b64_encode, g1_from_bytes_nonidentity, G1_LEN};
use super::fixed_base::FixedBaseTable;
use super::threshold::{Threshold, WireThreshold};
use super::IbeError;
use bls12_381::{G1Affine, G1Projective};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// The suite name of this version of the contract.
pub const SUITE: &str = "IBESIP-V01";
/// Prefix of the parameter fingerprint hash.
pub(crate) const FINGERPRINT_TAG: &[u8] = b"IBESIP-V01-PARAMS";

/// The provider's media key policy (spec section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaKeysPolicy {
    /// SRTP keys also depend on an ephemeral X25519 exchange (the default).
    #[default]
    EscrowResistant,
    /// SDES keys alone: the provider can recover media keys.
    ProviderRecoverable,
}

impl MediaKeysPolicy {
    /// The JSON value of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKeysPolicy::EscrowResistant => "escrow-resistant",
            MediaKeysPolicy::ProviderRecoverable => "provider-recoverable",
        }
    }
}

/// JSON form of the document; unknown members are ignored by serde.
#[derive(Serialize, Deserialize)]
struct Wire {
    suite: String,
    domain: String,
    p_pub: String,
    period: String,
    pkg_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_keys: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<WireThreshold>,
}

/// One provider's public parameters, validated: suite `IBESIP-V01`, a
/// lower-case domain name, a valid non-identity `P_pub`, the monthly period
/// rule and an `https://` PKG URL. Holds the lazily built fixed-base table
/// of `P_pub` used by encryption and verification.
#[derive(Clone)]
pub struct PublicParams {
    domain: String,
    p_pub: G1Affine,
    pkg_url: String,
    media_keys: MediaKeysPolicy,
    threshold: Option<Threshold>,
    p_pub_table: OnceLock<Arc<FixedBaseTable<G1Projective>>>,
}

impl PublicParams {
    /// Parameters for `domain` with master public key `p_pub`.
    pub fn new(domain: &str, p_pub: G1Affine, pkg_url: &str) -> Result<Self, IbeError> {
        if bool::from(p_pub.is_identity()) {
            return Err(IbeError::IdentityPoint("p_pub"));
        }
        Ok(PublicParams {
            domain: validate_domain(domain)?,
            p_pub,
            pkg_url: validate_url(pkg_url)?,
            media_keys: MediaKeysPolicy::EscrowResistant,
            threshold: None,
            p_pub_table: OnceLock::new(),
        })
    }

    /// The same parameters for a threshold provider (pkg-api.md); refused
    /// unless the servers' `P_pub_i` interpolate to `p_pub`.
    pub fn with_threshold(mut self, threshold: Threshold) -> Result<Self, IbeError> {
        self.threshold = Some(threshold.validated(&self.p_pub)?);
        Ok(self)
    }

    /// The threshold servers, when the master secret is shared among
    /// several PKGs (checked against `p_pub` when parsed).
    pub fn threshold(&self) -> Option<&Threshold> {
        self.threshold.as_ref()
    }

    /// The same parameters with another media policy.
    pub fn with_media_keys(mut self, policy: MediaKeysPolicy) -> Self {
        self.media_keys = policy;
        self
    }

    /// Parses and validates the JSON document; unknown members are ignored.
    pub fn from_json(json: &str) -> Result<Self, IbeError> {
        let wire: Wire = serde_json::from_str(json)
            .map_err(|e| IbeError::InvalidParams(format!("not a parameter document: {e}")))?;
        if wire.suite != SUITE {
            return Err(IbeError::InvalidParams(format!(
                "unsupported suite {:?} (expected {SUITE})",
                wire.suite
            )));
        }
        if wire.period != "month" {
            return Err(IbeError::InvalidParams(format!(
                "unsupported period rule {:?} (only \"month\" is defined)",
                wire.period
            )));
        }
        let p_pub_bytes = b64_decode("p_pub", &wire.p_pub)?;
        let p_pub = g1_from_bytes_nonidentity("p_pub", &p_pub_bytes)?;
        let media_keys = match wire.media_keys.as_deref() {
            None | Some("escrow-resistant") => MediaKeysPolicy::EscrowResistant,
            Some("provider-recoverable") => MediaKeysPolicy::ProviderRecoverable,
            Some(other) => {
                return Err(IbeError::InvalidParams(format!(
                    "unknown media_keys policy {other:?}"
                )))
            }
        };
        let params =
            PublicParams::new(&wire.domain, p_pub, &wire.pkg_url)?.with_media_keys(media_keys);
        match wire.threshold {
            Some(t) => params.with_threshold(t.decode()?),
            None => Ok(params),
        }
    }

    /// The JSON document (members in the order of spec section 4;
    /// `media_keys` only when not the default).
    pub fn to_json(&self) -> String {
        let wire = Wire {
            suite: SUITE.to_string(),
            domain: self.domain.clone(),
            p_pub: b64_encode(&self.p_pub.to_compressed()),
            period: "month".to_string(),
            pkg_url: self.pkg_url.clone(),
            media_keys: (self.media_keys != MediaKeysPolicy::EscrowResistant)
                .then(|| self.media_keys.as_str().to_string()),
            threshold: self.threshold.as_ref().map(WireThreshold::encode),
        };
        serde_json::to_string_pretty(&wire).unwrap_or_default()
    }

    /// The SIP domain these parameters serve.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The master public key `P_pub`.
    pub fn p_pub(&self) -> G1Affine {
        self.p_pub
    }

    /// The PKG's base URL.
    pub fn pkg_url(&self) -> &str {
        &self.pkg_url
    }

    /// The provider's media key policy.
    pub fn media_keys(&self) -> MediaKeysPolicy {
        self.media_keys
    }

    /// `SHA-256("IBESIP-V01-PARAMS" || domain || 0x00 || p_pub_bytes)`.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_TAG);
        h.update(self.domain.as_bytes());
        h.update([0u8]);
        h.update(self.p_pub.to_compressed());
        h.finalize().into()
    }

    /// The fingerprint as shown to people: 16 groups of 4 lower-case hex
    /// digits separated by single spaces.
    pub fn fingerprint_display(&self) -> String {
        format_fingerprint(&self.fingerprint())
    }

    /// The short form a person compares: the first 5 groups of
    /// [`PublicParams::fingerprint_display`] (80 bits; why that is enough:
    /// [`super::fingerprint`]).
    pub fn fingerprint_short(&self) -> String {
        super::fingerprint::short(&self.fingerprint())
    }

    /// The fixed-base table of `P_pub` (built on first use, then shared).
    pub(crate) fn p_pub_table(&self) -> &FixedBaseTable<G1Projective> {
        self.p_pub_table
            .get_or_init(|| Arc::new(FixedBaseTable::new(&G1Projective::from(self.p_pub))))
    }

    /// `P_pub` bytes, used to key caches.
    pub(crate) fn p_pub_bytes(&self) -> [u8; G1_LEN] {
        self.p_pub.to_compressed()
    }
}

impl PartialEq for PublicParams {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain
            && self.p_pub == other.p_pub
            && self.pkg_url == other.pkg_url
            && self.media_keys == other.media_keys
            && self.threshold == other.threshold
    }
}

impl Eq for PublicParams {}

impl core::fmt::Debug for PublicParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PublicParams")
            .field("domain", &self.domain)
            .field("fingerprint", &self.fingerprint_display())
            .field("pkg_url", &self.pkg_url)
            .field("media_keys", &self.media_keys)
            .finish()
    }
}

/// 32 bytes as 16 groups of 4 hex digits ([`super::fingerprint::full`]).
pub(crate) fn format_fingerprint(fp: &[u8; 32]) -> String {
    super::fingerprint::full(fp)
}

fn validate_domain(domain: &str) -> Result<String, IbeError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(domain.to_string())
    } else {
        Err(IbeError::InvalidParams(format!(
            "domain {:?} is not a lower-case DNS name",
            domain.chars().take(80).collect::<String>()
        )))
    }
}

fn validate_url(url: &str) -> Result<String, IbeError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        IbeError::InvalidParams(format!(
            "pkg_url {:?} is not an https:// URL",
            url.chars().take(80).collect::<String>()
        ))
    })?;
    if rest.is_empty()
        || rest
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(IbeError::InvalidParams("pkg_url has no host".to_string()));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::keys::setup;

    #[test]
    fn json_round_trip_and_unknown_members() {
        let (_, params) = setup("atlanta.com", "https://pkg.atlanta.com:8443").unwrap();
        let json = params.to_json();
        assert!(!json.contains("media_keys"));
        assert_eq!(PublicParams::from_json(&json).unwrap(), params);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["future_member"] = serde_json::json!({"x": [1, 2]});
        v["media_keys"] = "provider-recoverable".into();
        let p = PublicParams::from_json(&v.to_string()).unwrap();
        assert_eq!(p.media_keys(), MediaKeysPolicy::ProviderRecoverable);
        assert!(p.to_json().contains("provider-recoverable"));
    }

    #[test]
    fn bad_documents_fail_clearly() {
        let (_, params) = setup("atlanta.com", "https://pkg.atlanta.com:8443").unwrap();
        let good: serde_json::Value = serde_json::from_str(&params.to_json()).unwrap();
        let with = |k: &str, val: serde_json::Value| {
            let mut v = good.clone();
            v[k] = val;
            PublicParams::from_json(&v.to_string())
                .unwrap_err()
                .to_string()
        };
        assert!(with("suite", "IBESIP-V02".into()).contains("suite"));
        assert!(with("p_pub", "AAAA".into()).contains("p_pub"));
        let mut bad_point = params.p_pub().to_compressed();
        bad_point[47] ^= 1;
        assert!(with("p_pub", b64_encode(&bad_point).into()).contains("p_pub"));
        let identity = G1Affine::identity().to_compressed();
        assert!(with("p_pub", b64_encode(&identity).into()).contains("p_pub"));
        assert!(with("period", "week".into()).contains("period"));
        assert!(with("domain", "Atlanta.COM".into()).contains("domain"));
        assert!(with("pkg_url", "http://pkg".into()).contains("https"));
        assert!(with("media_keys", "none".into()).contains("media_keys"));
        assert!(PublicParams::from_json("{").is_err());
        assert!(PublicParams::from_json("[]").is_err());
    }

    #[test]
    fn fingerprint_format() {
        let (_, params) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
        let shown = params.fingerprint_display();
        let groups: Vec<&str> = shown.split(' ').collect();
        assert_eq!(groups.len(), 16);
        assert!(groups.iter().all(|g| g.len() == 4));
        assert_eq!(shown.replace(' ', ""), hex::encode(params.fingerprint()));
    }
}
