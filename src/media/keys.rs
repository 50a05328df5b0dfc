//! SRTP key agreement of spec section 6: each side's SDES key material
//! (`sdes_X`) mixed with an ephemeral X25519 exchange through HKDF, and the
//! short authentication string (SAS).
//!
//! Decisions where the spec is silent or inconsistent (pinned by tests):
//! - The SAS is "the first 20 bits ... shown as 4 words or 5 base32
//!   characters". 20 bits are exactly four base32 characters of 5 bits, so
//!   we show 4 characters of the z-base-32 alphabet, as ZRTP does for its
//!   20-bit B32 SAS (RFC 6189 5.1.6); the spec gives no word list, so no
//!   word form is offered (two implementations must render the same string).
//! - An X25519 result that is all zeros (peer sent a low-order point) is
//!   rejected rather than used: it would make the "escrow-resistant" key a
//!   constant.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// What can go wrong when agreeing media keys.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaKeyError {
    /// SDES key material of the wrong length for its suite.
    #[error("SDES key material for {suite} must be {expected} bytes, got {got}")]
    SdesLength {
        /// The suite name.
        suite: &'static str,
        /// Key + salt length of the suite.
        expected: usize,
        /// What was received.
        got: usize,
    },
    /// The peer's X25519 public key is not 32 bytes.
    #[error("X25519 public key must be 32 bytes, got {0}")]
    DhLength(usize),
    /// The X25519 exchange gave the all-zero value (low-order peer key).
    #[error("peer X25519 key is of low order: refused")]
    NonContributory,
    /// The random generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// The SRTP protection profiles of section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: 16-byte key, 14-byte salt.
    AesCm128HmacSha1_80,
    /// `AEAD_AES_128_GCM` (RFC 7714): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// The SDP name of the suite.
    pub fn sdp_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite of an SDP name (case-sensitive, as RFC 4568 registers them).
    pub fn from_sdp_name(name: &str) -> Option<Self> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(SrtpSuite::AesCm128HmacSha1_80),
            "AEAD_AES_128_GCM" => Some(SrtpSuite::AeadAes128Gcm),
            _ => None,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 14,
            SrtpSuite::AeadAes128Gcm => 12,
        }
    }
}

/// Which side of the call sends with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the INVITE.
    Caller,
    /// The side that answered it.
    Callee,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
        }
    }
}

/// SDES key material (`key || salt`) of one suite, as carried in
/// `a=crypto ... inline:`. Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SdesKey {
    #[zeroize(skip)]
    suite: SrtpSuite,
    material: Vec<u8>,
}

impl SdesKey {
    /// Fresh random key material for `suite`.
    pub fn generate(suite: SrtpSuite) -> Result<Self, MediaKeyError> {
        let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
        getrandom::fill(&mut material).map_err(|_| MediaKeyError::Rng)?;
        Ok(SdesKey { suite, material })
    }

    /// Key material received from a peer; the length must match the suite.
    pub fn from_bytes(suite: SrtpSuite, bytes: &[u8]) -> Result<Self, MediaKeyError> {
        let expected = suite.key_len() + suite.salt_len();
        if bytes.len() != expected {
            return Err(MediaKeyError::SdesLength {
                suite: suite.sdp_name(),
                expected,
                got: bytes.len(),
            });
        }
        Ok(SdesKey {
            suite,
            material: bytes.to_vec(),
        })
    }

    /// The suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// `key || salt`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.material
    }
}

impl fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdesKey({}, [redacted])", self.suite.sdp_name())
    }
}

/// The SRTP master key and salt one side uses for sending.
pub type SrtpSendingKey = SdesKey;

/// An ephemeral X25519 key pair, fresh per offer/answer.
pub struct DhKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl DhKeyPair {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, MediaKeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut bytes[..]).map_err(|_| MediaKeyError::Rng)?;
        Ok(Self::from_secret_bytes(*bytes))
    }

    /// A key pair from a known secret (known-answer tests).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        DhKeyPair { secret, public }
    }

    /// The public key for `a=ibesip-dh`.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// `X25519(own secret, peer public)`; refuses a non-contributory result.
    pub fn agree(&self, peer_public: &[u8]) -> Result<Zeroizing<[u8; 32]>, MediaKeyError> {
        let peer: [u8; 32] = peer_public
            .try_into()
            .map_err(|_| MediaKeyError::DhLength(peer_public.len()))?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(MediaKeyError::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DhKeyPair(public {}, [redacted])",
            hex::encode(self.public.as_bytes())
        )
    }
}

/// The master key and salt side `role` sends with:
/// `HKDF-SHA256(ikm = shared, salt = sdes_X, info = "IBESIP-V01 SRTP " || role)`
/// cut to the suite's key + salt length.
pub fn derive_sending_key(shared: &[u8; 32], sdes_own: &SdesKey, role: Role) -> SrtpSendingKey {
    let suite = sdes_own.suite();
    let hk = Hkdf::<Sha256>::new(Some(sdes_own.as_bytes()), shared);
    let mut okm = vec![0u8; suite.key_len() + suite.salt_len()];
    let info = format!("IBESIP-V01 SRTP {}", role.label());
    // 28 or 30 bytes is far below HKDF's limit of 255 * 32.
    let _ = hk.expand(info.as_bytes(), &mut okm);
    SdesKey {
        suite,
        material: okm,
    }
}

/// The short authentication string: the first 20 bits of
/// `SHA-256("IBESIP-V01 SAS" || shared || offer_dh || answer_dh)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sas(u32);

/// z-base-32 alphabet (RFC 6189 5.1.6).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

impl Sas {
    /// Computes the SAS of an exchange; both sides get the same value.
    pub fn compute(shared: &[u8; 32], offer_dh: &[u8; 32], answer_dh: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"IBESIP-V01 SAS");
        h.update(shared);
        h.update(offer_dh);
        h.update(answer_dh);
        let d = h.finalize();
        Sas((u32::from(d[0]) << 12) | (u32::from(d[1]) << 4) | (u32::from(d[2]) >> 4))
    }

    /// The 20-bit value.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Four z-base-32 characters, most significant first.
    pub fn to_base32(self) -> String {
        (0..4)
            .map(|i| ZBASE32[((self.0 >> (15 - 5 * i)) & 0x1f) as usize] as char)
            .collect()
    }
}

impl fmt::Display for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let caller = DhKeyPair::generate().unwrap();
        let callee = DhKeyPair::generate().unwrap();
        let s1 = caller.agree(&callee.public_bytes()).unwrap();
        let s2 = callee.agree(&caller.public_bytes()).unwrap();
        assert_eq!(*s1, *s2);
        let sdes_a = SdesKey::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap();
        let sdes_b = SdesKey::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap();
        // Caller's sending key as computed by caller (sender) and callee (receiver).
        let a_send = derive_sending_key(&s1, &sdes_a, Role::Caller);
        let a_recv = derive_sending_key(&s2, &sdes_a, Role::Caller);
        assert_eq!(a_send, a_recv);
        assert_eq!(a_send.as_bytes().len(), 30);
        let b_send = derive_sending_key(&s2, &sdes_b, Role::Callee);
        assert_ne!(a_send, b_send);
        // The key is not the plain SDES key the PKG could read in the tunnel.
        assert_ne!(a_send.as_bytes(), sdes_a.as_bytes());
        let sas1 = Sas::compute(&s1, &caller.public_bytes(), &callee.public_bytes());
        let sas2 = Sas::compute(&s2, &caller.public_bytes(), &callee.public_bytes());
        assert_eq!(sas1, sas2);
        assert!(sas1.bits() < (1 << 20));
        assert_eq!(sas1.to_base32().len(), 4);
    }

    #[test]
    fn gcm_lengths_and_bad_inputs() {
        let k = SdesKey::generate(SrtpSuite::AeadAes128Gcm).unwrap();
        assert_eq!(k.as_bytes().len(), 28);
        assert!(SdesKey::from_bytes(SrtpSuite::AeadAes128Gcm, &[0; 30]).is_err());
        let pair = DhKeyPair::generate().unwrap();
        assert_eq!(pair.agree(&[1; 31]), Err(MediaKeyError::DhLength(31)));
        // The identity (all zeros) is of low order.
        assert_eq!(pair.agree(&[0; 32]), Err(MediaKeyError::NonContributory));
        assert!(format!("{k:?}").contains("[redacted]"));
    }

    #[test]
    fn man_in_the_middle_changes_the_sas() {
        // Mallory (who could be the PKG, re-sealing the SDP) swaps the dh
        // values: each victim agrees with Mallory, not with each other.
        let alice = DhKeyPair::generate().unwrap();
        let bob = DhKeyPair::generate().unwrap();
        let mallory = DhKeyPair::generate().unwrap();
        let alice_shared = alice.agree(&mallory.public_bytes()).unwrap();
        let bob_shared = bob.agree(&mallory.public_bytes()).unwrap();
        let alice_sas = Sas::compute(
            &alice_shared,
            &alice.public_bytes(),
            &mallory.public_bytes(),
        );
        let bob_sas = Sas::compute(&bob_shared, &mallory.public_bytes(), &bob.public_bytes());
        assert_ne!(alice_sas, bob_sas);
    }

    #[test]
    fn sas_rendering_is_fixed() {
        assert_eq!(Sas(0).to_base32(), "yyyy");
        assert_eq!(Sas(0xfffff).to_base32(), "9999");
        assert_eq!(Sas(0b00001_00010_00011_00100).to_base32(), "bndr");
    }
}
