//! Cha-Cheon identity-based signatures (spec 3.3).
//!
//! Fast paths, identical in result to the textbook formulas:
//! - [`SigningKey`] holds fixed-base tables of one's own `Q_sig` and `d_sig`,
//!   so signing is two table multiplications and no pairing;
//! - cold verification rewrites `e(P_pub, R + h Q_sig)` as
//!   `e(P_pub, R) e(h P_pub, Q_sig)`, with `h P_pub` from the domain's
//!   table, so it is one multi-Miller loop over three pairs and one final
//!   exponentiation, with no G2 scalar multiplication;
//! - [`SignerCache`] keeps a fixed-base table of each recent signer's
//!   `Q_sig`, so `R + h Q_sig` costs 52 additions and the check is a
//!   two-pair multi-Miller loop (measured faster than the three-pair form
//!   once the table exists).

use super::encoding::{g2_from_bytes_nonidentity, G2_LEN};
use super::fixed_base::FixedBaseTable;
use super::hash::{hash_to_g2, hash_to_scalar, DST_HSIG, DST_SIG};
use super::{random, IbeError, Identity, PrivateKeys, PublicParams};
use bls12_381::{multi_miller_loop, G1Affine, G2Affine, G2Prepared, G2Projective, Gt, Scalar};
use core::fmt;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;
use zeroize::Zeroize;

/// Length of a signature `R || S`.
pub const SIGNATURE_LEN: usize = 2 * G2_LEN;

/// A signature `R (96) || S (96)`, both valid non-identity G2 points.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    r: G2Affine,
    s: G2Affine,
}

impl Signature {
    /// Parses 192 bytes, rejecting other lengths, invalid points and the
    /// identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IbeError> {
        if bytes.len() != SIGNATURE_LEN {
            return Err(IbeError::InvalidLength {
                what: "signature",
                expected: SIGNATURE_LEN,
                got: bytes.len(),
            });
        }
        Ok(Signature {
            r: g2_from_bytes_nonidentity("R", &bytes[..G2_LEN])?,
            s: g2_from_bytes_nonidentity("S", &bytes[G2_LEN..])?,
        })
    }

    /// The 192-byte encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out[..G2_LEN].copy_from_slice(&self.r.to_compressed());
        out[G2_LEN..].copy_from_slice(&self.s.to_compressed());
        out
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_bytes()))
    }
}

/// `h = hash_to_scalar(g2_bytes(R) || M, DST_HSIG)`.
fn challenge(r_bytes: &[u8; G2_LEN], msg: &[u8]) -> Scalar {
    hash_to_scalar(&[r_bytes, msg], DST_HSIG)
}

/// One's own signing key with its fixed-base tables (~350 KiB). Wiped on
/// drop, never printed.
pub struct SigningKey {
    identity: Identity,
    q_sig: FixedBaseTable<G2Projective>,
    d_sig: FixedBaseTable<G2Projective>,
}

impl SigningKey {
    /// Builds the tables for the signing half of `keys`.
    pub fn new(keys: &PrivateKeys) -> Self {
        let q = hash_to_g2(keys.identity().as_str().as_bytes(), DST_SIG);
        let mut d = G2Projective::from(*keys.d_sig());
        let key = SigningKey {
            identity: keys.identity().clone(),
            q_sig: FixedBaseTable::new(&G2Projective::from(q)),
            d_sig: FixedBaseTable::new(&d),
        };
        d.zeroize();
        key
    }

    /// The signer identity `ID_signer`.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Signs `msg` with a fresh random `k`.
    pub fn sign(&self, msg: &[u8]) -> Result<Signature, IbeError> {
        let mut k = random::nonzero_scalar()?;
        let sig = self.sign_with_k(msg, &k);
        k.zeroize();
        sig
    }

    /// Signs with a caller-chosen non-zero `k`. Deterministic; only for
    /// known-answer tests: reusing `k` for two messages reveals `d_sig`.
    pub fn sign_with_k(&self, msg: &[u8], k: &Scalar) -> Result<Signature, IbeError> {
        if *k == Scalar::zero() {
            return Err(IbeError::InvalidScalar("zero"));
        }
        let r = G2Affine::from(self.q_sig.mul(k));
        let h = challenge(&r.to_compressed(), msg);
        let mut kh = k + h;
        let s = G2Affine::from(self.d_sig.mul(&kh));
        kh.zeroize();
        Ok(Signature { r, s })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, [redacted])", self.identity)
    }
}

/// Signs `msg` with `keys` (builds the tables each call; keep a
/// [`SigningKey`] to sign repeatedly).
pub fn sign(keys: &PrivateKeys, msg: &[u8]) -> Result<Signature, IbeError> {
    SigningKey::new(keys).sign(msg)
}

/// Verifies `sig` on `msg` by `identity` under `params` (cold: hashes the
/// signer's `Q_sig`). The identity must belong to the parameters' domain.
pub fn verify(
    params: &PublicParams,
    identity: &Identity,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), IbeError> {
    check_domain(params, identity)?;
    let q = G2Prepared::from(hash_to_g2(identity.as_str().as_bytes(), DST_SIG));
    verify_prepared(params, &q, msg, sig)
}

fn check_domain(params: &PublicParams, identity: &Identity) -> Result<(), IbeError> {
    if identity.aor().host() == params.domain() {
        Ok(())
    } else {
        Err(IbeError::InvalidSignature)
    }
}

/// `e(P, S) e(-P_pub, R) e(-h P_pub, Q_sig) == 1`.
fn verify_prepared(
    params: &PublicParams,
    q_sig: &G2Prepared,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), IbeError> {
    let h = challenge(&sig.r.to_compressed(), msg);
    let neg_h_ppub = G1Affine::from(params.p_pub_table().mul(&-h));
    let neg_ppub = -params.p_pub();
    let s = G2Prepared::from(sig.s);
    let r = G2Prepared::from(sig.r);
    let p = G1Affine::generator();
    let result = multi_miller_loop(&[(&p, &s), (&neg_ppub, &r), (&neg_h_ppub, q_sig)])
        .final_exponentiation();
    if result == Gt::identity() {
        Ok(())
    } else {
        Err(IbeError::InvalidSignature)
    }
}

/// `e(P, S) e(-P_pub, R + h Q_sig) == 1` with `h Q_sig` from the signer's
/// table.
fn verify_with_table(
    params: &PublicParams,
    q_sig: &FixedBaseTable<G2Projective>,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), IbeError> {
    let h = challenge(&sig.r.to_compressed(), msg);
    let rhq = G2Prepared::from(G2Affine::from(q_sig.mul(&h) + sig.r));
    let s = G2Prepared::from(sig.s);
    let neg_ppub = -params.p_pub();
    let p = G1Affine::generator();
    let result = multi_miller_loop(&[(&p, &s), (&neg_ppub, &rhq)]).final_exponentiation();
    if result == Gt::identity() {
        Ok(())
    } else {
        Err(IbeError::InvalidSignature)
    }
}

/// A bounded cache of recent signers' `Q_sig` fixed-base tables (~173 KiB
/// each); the least recently used entry is evicted when full.
pub struct SignerCache {
    entries: LruCache<String, Arc<FixedBaseTable<G2Projective>>>,
}

impl SignerCache {
    /// A cache of at most `capacity` signers (at least one).
    pub fn new(capacity: usize) -> Self {
        SignerCache {
            entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Number of cached signers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// As [`verify`], caching the signer's prepared `Q_sig`.
    pub fn verify(
        &mut self,
        params: &PublicParams,
        identity: &Identity,
        msg: &[u8],
        sig: &Signature,
    ) -> Result<(), IbeError> {
        check_domain(params, identity)?;
        let q = self
            .entries
            .get_or_insert(identity.as_str().to_string(), || {
                let q = hash_to_g2(identity.as_str().as_bytes(), DST_SIG);
                Arc::new(FixedBaseTable::new(&G2Projective::from(q)))
            });
        let q = Arc::clone(q);
        verify_with_table(params, &q, msg, sig)
    }
}

impl fmt::Debug for SignerCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignerCache({} of {})",
            self.entries.len(),
            self.entries.cap()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{extract, setup, Aor, Period};
    use bls12_381::pairing;
    use proptest::prelude::*;

    fn id(s: &str, p: &str) -> Identity {
        Identity::new(Aor::parse(s).unwrap(), Period::month(p).unwrap())
    }

    fn scalar(seed: [u8; 32]) -> Scalar {
        let mut wide = [0u8; 64];
        wide[..32].copy_from_slice(&seed);
        Scalar::from_bytes_wide(&wide)
    }

    /// Textbook Cha-Cheon, plain scalar multiplications and two pairings.
    fn textbook_sign(keys: &PrivateKeys, msg: &[u8], k: &Scalar) -> [u8; 192] {
        let q = hash_to_g2(keys.identity().as_str().as_bytes(), DST_SIG);
        let r = G2Affine::from(q * k);
        let h = challenge(&r.to_compressed(), msg);
        let s = G2Affine::from(keys.d_sig() * (k + h));
        Signature { r, s }.to_bytes()
    }

    fn textbook_verify(
        params: &PublicParams,
        identity: &Identity,
        msg: &[u8],
        sig: &Signature,
    ) -> bool {
        let q = hash_to_g2(identity.as_str().as_bytes(), DST_SIG);
        let h = challenge(&sig.r.to_compressed(), msg);
        pairing(&G1Affine::generator(), &sig.s)
            == pairing(&params.p_pub(), &G2Affine::from(sig.r + q * h))
    }

    #[test]
    fn sign_verify_and_rejections() {
        let (msk, params) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
        let alice = id("sip:alice@atlanta.com", "2026-11");
        let key = SigningKey::new(&extract(&msk, &alice));
        let sig = key.sign(b"INVITE").unwrap();
        verify(&params, &alice, b"INVITE", &sig).unwrap();
        let mut cache = SignerCache::new(2);
        cache.verify(&params, &alice, b"INVITE", &sig).unwrap();
        cache.verify(&params, &alice, b"INVITE", &sig).unwrap();
        assert_eq!(
            verify(&params, &alice, b"INVITe", &sig),
            Err(IbeError::InvalidSignature)
        );
        // Another identity, period or domain does not verify.
        for other in [
            id("sip:bob@atlanta.com", "2026-11"),
            id("sip:alice@atlanta.com", "2026-10"),
        ] {
            assert_eq!(
                verify(&params, &other, b"INVITE", &sig),
                Err(IbeError::InvalidSignature)
            );
            assert_eq!(
                cache.verify(&params, &other, b"INVITE", &sig),
                Err(IbeError::InvalidSignature)
            );
        }
        let (_, params2) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
        assert_eq!(
            verify(&params2, &alice, b"INVITE", &sig),
            Err(IbeError::InvalidSignature)
        );
        // Every single byte flip is rejected (at parse or at verification).
        let bytes = sig.to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            let ok =
                Signature::from_bytes(&bad).map(|s| verify(&params, &alice, b"INVITE", &s).is_ok());
            assert!(!matches!(ok, Ok(true)), "byte {i}");
        }
        assert!(Signature::from_bytes(&bytes[..191]).is_err());
        let mut ident = bytes;
        ident[96..].copy_from_slice(&G2Affine::identity().to_compressed());
        assert!(Signature::from_bytes(&ident).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn fast_paths_equal_textbook(msg in proptest::collection::vec(any::<u8>(), 0..64), seed in any::<[u8; 32]>()) {
            let (msk, params) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
            let alice = id("sip:alice@atlanta.com", "2026-11");
            let keys = extract(&msk, &alice);
            let k = scalar(seed);
            prop_assume!(k != Scalar::zero());
            let sig = SigningKey::new(&keys).sign_with_k(&msg, &k).unwrap();
            prop_assert_eq!(sig.to_bytes(), textbook_sign(&keys, &msg, &k));
            prop_assert!(textbook_verify(&params, &alice, &msg, &sig));
            prop_assert!(verify(&params, &alice, &msg, &sig).is_ok());
            let mut cache = SignerCache::new(1);
            prop_assert!(cache.verify(&params, &alice, &msg, &sig).is_ok());
            let mut other = msg.clone();
            other.push(0);
            prop_assert!(!textbook_verify(&params, &alice, &other, &sig));
            prop_assert!(verify(&params, &alice, &other, &sig).is_err());
            prop_assert!(cache.verify(&params, &alice, &other, &sig).is_err());
        }

        #[test]
        fn signature_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Signature::from_bytes(&bytes);
        }
    }
}
