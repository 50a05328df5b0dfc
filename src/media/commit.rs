//! The hash commitment and the key continuity of spec section 6
//! (version 1.1): the offerer commits to its X25519 key before it learns
//! the answerer's, and after a confirmed SAS both phones keep a retained
//! secret `rs` that later calls with the same peer prove knowledge of.
//!
//! Decisions where the spec is silent (pinned by `tests/it/media_vectors.rs`
//! and the tests below):
//! - `v` in `HMAC-SHA256(rs, "IBESIP-V01 rs" || v)` is the 32 raw bytes the
//!   attribute's base64url text decodes to (the commitment digest, or the
//!   X25519 public key), not the text: two encodings of one value give one
//!   MAC, and the MAC binds exactly the value the exchange uses.
//! - Every comparison of a commitment or a MAC is constant-time.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Domain label of the commitment hash.
pub const COMMIT_LABEL: &[u8] = b"IBESIP-V01 DH commit";
/// HKDF info of the retained secret.
pub const RETAINED_INFO: &[u8] = b"IBESIP-V01 retained";
/// Prefix of the `a=ibesip-rs` MAC input.
pub const RS_LABEL: &[u8] = b"IBESIP-V01 rs";

/// `SHA-256("IBESIP-V01 DH commit" || public)`: what the offerer sends in
/// `a=ibesip-dh-commit` instead of its public key.
pub fn dh_commitment(public: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMIT_LABEL);
    h.update(public);
    h.finalize().into()
}

/// Whether `revealed` is the key `commitment` was made to (constant-time).
pub fn commitment_matches(commitment: &[u8; 32], revealed: &[u8; 32]) -> bool {
    bool::from(dh_commitment(revealed).ct_eq(commitment))
}

/// The retained secret of a confirmed exchange with one peer:
/// `HKDF-SHA256(ikm = shared, salt = offer_dh || answer_dh, info =
/// "IBESIP-V01 retained")`. Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RetainedSecret(Zeroizing<[u8; 32]>);

impl RetainedSecret {
    /// Derives `rs` from an exchange (offerer's key first, as for the SAS).
    pub fn derive(shared: &[u8; 32], offer_dh: &[u8; 32], answer_dh: &[u8; 32]) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(offer_dh);
        salt[32..].copy_from_slice(answer_dh);
        let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(RETAINED_INFO, &mut out[..]);
        RetainedSecret(out)
    }

    /// A stored secret.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RetainedSecret(Zeroizing::new(bytes))
    }

    /// The raw secret (for sealing it at rest).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HMAC-SHA256(rs, "IBESIP-V01 rs" || v)`, the value of
    /// `a=ibesip-rs`; `v` is the raw value sent in the same SDP.
    pub fn mac(&self, v: &[u8; 32]) -> [u8; 32] {
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]) else {
            // HMAC takes keys of any length: never reached.
            return [0u8; 32];
        };
        m.update(RS_LABEL);
        m.update(v);
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is [`RetainedSecret::mac`] of `v` (constant-time).
    pub fn verify(&self, v: &[u8; 32], mac: &[u8; 32]) -> bool {
        bool::from(self.mac(v).ct_eq(mac))
    }
}

impl fmt::Debug for RetainedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetainedSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::keys::DhKeyPair;

    #[test]
    fn a_commitment_opens_only_to_its_key() {
        let a = DhKeyPair::generate().unwrap().public_bytes();
        let other = DhKeyPair::generate().unwrap().public_bytes();
        let c = dh_commitment(&a);
        assert!(commitment_matches(&c, &a));
        assert!(!commitment_matches(&c, &other));
        let mut flipped = a;
        flipped[31] ^= 1;
        assert!(!commitment_matches(&c, &flipped));
        // The commitment is not the key itself (it hides A until the reveal).
        assert_ne!(c, a);
    }

    #[test]
    fn rs_mac_binds_secret_and_value() {
        let rs = RetainedSecret::from_bytes([7; 32]);
        let v = [1u8; 32];
        let mac = rs.mac(&v);
        assert!(rs.verify(&v, &mac));
        assert!(!rs.verify(&[2u8; 32], &mac));
        assert!(!RetainedSecret::from_bytes([8; 32]).verify(&v, &mac));
        assert!(format!("{rs:?}").contains("redacted"));
    }
}
