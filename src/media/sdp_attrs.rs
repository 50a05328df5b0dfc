//! The SDP attributes of spec section 6: `a=crypto` (RFC 4568 SDES,
//! inline key only), `a=ibesip-dh` (base64url X25519 public key),
//! `a=ibesip-dh-commit` (base64url SHA-256 commitment to the offerer's key)
//! and `a=ibesip-rs` (base64url HMAC of the retained secret).

use super::keys::{SdesKey, SrtpSuite};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use thiserror::Error;

/// Why an attribute could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpAttrError {
    /// Not an `a=crypto` / `a=ibesip-dh` line of the expected shape.
    #[error("malformed {attr} attribute: {why}")]
    Malformed {
        /// Which attribute.
        attr: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn malformed(attr: &'static str, why: impl Into<String>) -> SdpAttrError {
    SdpAttrError::Malformed {
        attr,
        why: why.into(),
    }
}

/// One `a=crypto` line with a suite this profile knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag (RFC 4568 `tag`).
    pub tag: u32,
    /// The key material (its suite is the line's suite).
    pub key: SdesKey,
}

impl CryptoAttr {
    /// Formats `a=crypto:<tag> <suite> inline:<base64>` (without `a=`).
    pub fn to_value(&self) -> String {
        format!(
            "crypto:{} {} inline:{}",
            self.tag,
            self.key.suite().sdp_name(),
            STANDARD.encode(self.key.as_bytes())
        )
    }

    /// Reads the value of an `a=crypto` attribute (what follows `a=`).
    /// Returns `Ok(None)` for a well-formed line of a suite we do not
    /// support (the offerer may list others; RFC 4568 says to skip them).
    pub fn parse(value: &str) -> Result<Option<Self>, SdpAttrError> {
        const A: &str = "crypto";
        let rest = value
            .strip_prefix("crypto:")
            .ok_or_else(|| malformed(A, "no crypto: prefix"))?;
        let mut parts = rest.split_whitespace();
        let tag = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t < 1_000_000_000)
            .ok_or_else(|| malformed(A, "bad tag"))?;
        let suite_name = parts.next().ok_or_else(|| malformed(A, "no suite"))?;
        let key_params = parts
            .next()
            .ok_or_else(|| malformed(A, "no key parameters"))?;
        let Some(suite) = SrtpSuite::from_sdp_name(suite_name) else {
            return Ok(None);
        };
        // One key; lifetime and MKI after '|' are ignored (RFC 4568 6.1).
        let inline = key_params
            .split(';')
            .next()
            .and_then(|k| k.strip_prefix("inline:"))
            .ok_or_else(|| malformed(A, "key method is not inline"))?;
        let b64 = inline.split('|').next().unwrap_or_default();
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| malformed(A, "key is not base64"))?;
        let key = SdesKey::from_bytes(suite, &bytes).map_err(|e| malformed(A, e.to_string()))?;
        Ok(Some(CryptoAttr { tag, key }))
    }
}

/// Formats the value of `a=ibesip-dh` (without `a=`).
pub(crate) fn dh_to_value(public: &[u8; 32]) -> String {
    b32_to_value(DH, public)
}

/// Reads the value of an `a=ibesip-dh` attribute.
pub(crate) fn dh_parse(value: &str) -> Result<[u8; 32], SdpAttrError> {
    b32_parse(DH, value)
}

/// Name of the attribute carrying an X25519 public key.
pub(crate) const DH: &str = "ibesip-dh";
/// Name of the attribute carrying the offerer's commitment.
pub(crate) const DH_COMMIT: &str = "ibesip-dh-commit";
/// Name of the attribute carrying the retained-secret MAC.
pub(crate) const RS: &str = "ibesip-rs";

/// Formats `<attr>:<base64url, no padding, of 32 bytes>` (without `a=`).
pub(crate) fn b32_to_value(attr: &'static str, bytes: &[u8; 32]) -> String {
    format!("{attr}:{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads `<attr>:<base64url of 32 bytes>`; anything else is malformed.
pub(crate) fn b32_parse(attr: &'static str, value: &str) -> Result<[u8; 32], SdpAttrError> {
    let b64 = value
        .strip_prefix(attr)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| malformed(attr, format!("no {attr}: prefix")))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim())
        .map_err(|_| malformed(attr, "not base64url without padding"))?;
    bytes
        .try_into()
        .map_err(|_| malformed(attr, "not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4568_example_shape() {
        let v = "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";
        let a = CryptoAttr::parse(v).unwrap().unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.key.as_bytes().len(), 30);
        assert!(
            CryptoAttr::parse("crypto:2 F8_128_HMAC_SHA1_80 inline:AAAA")
                .unwrap()
                .is_none()
        );
        assert!(CryptoAttr::parse("crypto:x AES_CM_128_HMAC_SHA1_80 inline:AAAA").is_err());
        assert!(CryptoAttr::parse("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA").is_err());
        assert!(CryptoAttr::parse("crypto:1 AES_CM_128_HMAC_SHA1_80").is_err());
    }

    proptest! {
        #[test]
        fn crypto_round_trip(tag in 0u32..1000, bytes in proptest::collection::vec(any::<u8>(), 28..=28), gcm in any::<bool>()) {
            let (suite, material) = if gcm {
                (SrtpSuite::AeadAes128Gcm, bytes.clone())
            } else {
                let mut b = bytes.clone();
                b.extend_from_slice(&[7, 7]);
                (SrtpSuite::AesCm128HmacSha1_80, b)
            };
            let attr = CryptoAttr { tag, key: SdesKey::from_bytes(suite, &material).unwrap() };
            prop_assert_eq!(CryptoAttr::parse(&attr.to_value()).unwrap(), Some(attr));
        }

        #[test]
        fn dh_round_trip(key in any::<[u8; 32]>()) {
            prop_assert_eq!(dh_parse(&dh_to_value(&key)).unwrap(), key);
            prop_assert_eq!(b32_parse(DH_COMMIT, &b32_to_value(DH_COMMIT, &key)).unwrap(), key);
            // One attribute is never read as another.
            prop_assert!(dh_parse(&b32_to_value(DH_COMMIT, &key)).is_err());
            prop_assert!(b32_parse(DH_COMMIT, &dh_to_value(&key)).is_err());
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = CryptoAttr::parse(&s);
            let _ = dh_parse(&s);
            let _ = b32_parse(DH_COMMIT, &s);
            let _ = b32_parse(RS, &format!("ibesip-rs:{s}"));
            let _ = CryptoAttr::parse(&format!("crypto:{s}"));
        }
    }
}
