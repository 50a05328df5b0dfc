//! Boneh-Franklin FullIdent for 32-byte messages (spec 3.2): the key
//! transport of the first message of a tunnel session.
//!
//! Fast paths, all giving results identical to the textbook formulas (tests
//! below and the known-answer vectors):
//! - `U = r * P` and `r * P_pub` use fixed-base tables (generator, domain);
//! - a new recipient costs one pairing `K = e(r * P_pub, Q_enc)` instead of a
//!   GT exponentiation;
//! - [`RecipientCache`] keeps a GT fixed-base table of `g = e(P_pub, Q_enc)`
//!   per recipient so that `K = g^r` is 64 GT multiplications;
//! - [`DecryptionKey`] keeps `d_enc` in Miller-loop prepared form.

use super::encoding::{g1_from_bytes_nonidentity, gt_bytes, G1_LEN};
use super::fixed_base::{generator_g1, FixedBaseTable};
use super::hash::{hash_to_g2, hash_to_scalar, tagged_sha256, DST_ENC, DST_H3, TAG_H2, TAG_H4};
use super::{random, IbeError, Identity, PrivateKeys, PublicParams};
use bls12_381::{multi_miller_loop, pairing, G1Affine, G1Projective, G2Prepared, Gt, Scalar};
use core::fmt;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Length of a ciphertext `U || V || W`.
pub const CIPHERTEXT_LEN: usize = G1_LEN + 32 + 32;

/// A BF ciphertext `U (48) || V (32) || W (32)`; `U` is a valid
/// non-identity G1 point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ciphertext {
    u: G1Affine,
    v: [u8; 32],
    w: [u8; 32],
}

impl Ciphertext {
    /// Parses 112 bytes; any other length, an invalid `U` or the identity
    /// is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IbeError> {
        if bytes.len() != CIPHERTEXT_LEN {
            return Err(IbeError::InvalidLength {
                what: "BF ciphertext",
                expected: CIPHERTEXT_LEN,
                got: bytes.len(),
            });
        }
        let u = g1_from_bytes_nonidentity("U", &bytes[..G1_LEN])?;
        let mut v = [0u8; 32];
        let mut w = [0u8; 32];
        v.copy_from_slice(&bytes[G1_LEN..G1_LEN + 32]);
        w.copy_from_slice(&bytes[G1_LEN + 32..]);
        Ok(Ciphertext { u, v, w })
    }

    /// The 112-byte encoding.
    pub fn to_bytes(&self) -> [u8; CIPHERTEXT_LEN] {
        let mut out = [0u8; CIPHERTEXT_LEN];
        out[..G1_LEN].copy_from_slice(&self.u.to_compressed());
        out[G1_LEN..G1_LEN + 32].copy_from_slice(&self.v);
        out[G1_LEN + 32..].copy_from_slice(&self.w);
        out
    }
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({})", hex::encode(self.to_bytes()))
    }
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// `r = hash_to_scalar(sigma || m, DST_H3)`.
fn fo_scalar(sigma: &[u8; 32], m: &[u8; 32]) -> Scalar {
    hash_to_scalar(&[sigma, m], DST_H3)
}

/// How `K = e(P_pub, Q_enc)^r` is computed.
enum KeyPath<'a> {
    /// `e(r * P_pub, Q_enc)` with the domain table.
    Pairing(&'a PublicParams, &'a bls12_381::G2Affine),
    /// `g^r` with the recipient's GT table.
    GtTable(&'a FixedBaseTable<Gt>),
}

fn encrypt_inner(
    path: KeyPath<'_>,
    m: &[u8; 32],
    sigma: &[u8; 32],
) -> Result<Ciphertext, IbeError> {
    let mut r = fo_scalar(sigma, m);
    if bool::from(r.ct_eq(&Scalar::zero())) {
        return Err(IbeError::Rng);
    }
    let u = G1Affine::from(generator_g1().mul(&r));
    let k = match path {
        KeyPath::Pairing(params, q_enc) => {
            let r_ppub = G1Affine::from(params.p_pub_table().mul(&r));
            pairing(&r_ppub, q_enc)
        }
        KeyPath::GtTable(table) => table.mul(&r),
    };
    r.zeroize();
    let mut k_bytes = Zeroizing::new(gt_bytes(&k));
    let v = xor32(sigma, &tagged_sha256(TAG_H2, &k_bytes[..]));
    k_bytes.zeroize();
    let w = xor32(m, &tagged_sha256(TAG_H4, sigma));
    Ok(Ciphertext { u, v, w })
}

/// Encrypts the 32-byte `m` to `identity` under `params` with fresh
/// randomness (a new recipient: no cache).
pub fn encrypt(
    params: &PublicParams,
    identity: &Identity,
    m: &[u8; 32],
) -> Result<Ciphertext, IbeError> {
    let mut sigma = Zeroizing::new([0u8; 32]);
    loop {
        random::fill(&mut sigma[..])?;
        match encrypt_with_sigma(params, identity, m, &sigma) {
            Err(IbeError::Rng) => continue, // r == 0: draw again (spec 3.2 step 2)
            other => return other,
        }
    }
}

/// Encrypts with a caller-chosen `sigma`. Deterministic; only for
/// known-answer tests and vector generation: reusing `sigma` breaks security.
pub fn encrypt_with_sigma(
    params: &PublicParams,
    identity: &Identity,
    m: &[u8; 32],
    sigma: &[u8; 32],
) -> Result<Ciphertext, IbeError> {
    check_domain(params, identity)?;
    let q_enc = hash_to_g2(identity.as_str().as_bytes(), DST_ENC);
    encrypt_inner(KeyPath::Pairing(params, &q_enc), m, sigma)
}

fn check_domain(params: &PublicParams, identity: &Identity) -> Result<(), IbeError> {
    if identity.aor().host() != params.domain() {
        return Err(IbeError::InvalidParams(format!(
            "identity {} is not in domain {}",
            identity,
            params.domain()
        )));
    }
    Ok(())
}

/// A bounded cache of per-recipient GT tables (`g = e(P_pub, Q_enc)`), so
/// that encrypting again to a recent recipient needs no pairing. Each entry
/// holds ~500 KiB; the least recently used entry is evicted when full.
pub struct RecipientCache {
    entries: LruCache<(Vec<u8>, String), Arc<FixedBaseTable<Gt>>>,
}

impl RecipientCache {
    /// A cache holding at most `capacity` recipients (at least one).
    pub fn new(capacity: usize) -> Self {
        RecipientCache {
            entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Number of cached recipients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate memory held by the cached tables.
    pub fn memory_bytes(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.memory_bytes()).sum()
    }

    /// Encrypts `m` to `identity`, building and caching the recipient's
    /// table on first use.
    pub fn encrypt(
        &mut self,
        params: &PublicParams,
        identity: &Identity,
        m: &[u8; 32],
    ) -> Result<Ciphertext, IbeError> {
        let mut sigma = Zeroizing::new([0u8; 32]);
        loop {
            random::fill(&mut sigma[..])?;
            match self.encrypt_with_sigma(params, identity, m, &sigma) {
                Err(IbeError::Rng) => continue,
                other => return other,
            }
        }
    }

    /// As [`RecipientCache::encrypt`] with a caller-chosen `sigma` (tests).
    pub fn encrypt_with_sigma(
        &mut self,
        params: &PublicParams,
        identity: &Identity,
        m: &[u8; 32],
        sigma: &[u8; 32],
    ) -> Result<Ciphertext, IbeError> {
        check_domain(params, identity)?;
        let table = self.table(params, identity);
        encrypt_inner(KeyPath::GtTable(&table), m, sigma)
    }

    fn table(&mut self, params: &PublicParams, identity: &Identity) -> Arc<FixedBaseTable<Gt>> {
        let key = (params.p_pub_bytes().to_vec(), identity.as_str().to_string());
        let table = self.entries.get_or_insert(key, || {
            let q_enc = hash_to_g2(identity.as_str().as_bytes(), DST_ENC);
            Arc::new(FixedBaseTable::new(&pairing(&params.p_pub(), &q_enc)))
        });
        Arc::clone(table)
    }
}

impl fmt::Debug for RecipientCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RecipientCache({} of {})",
            self.entries.len(),
            self.entries.cap()
        )
    }
}

/// `d_enc` prepared for decryption. Wiped on drop as far as the curve
/// crate allows: the prepared Miller-loop coefficients are private to
/// `bls12_381` and cannot be zeroized from here (the crate's own `pairing`
/// leaves the same values on the stack).
pub struct DecryptionKey {
    identity: Identity,
    prepared: G2Prepared,
}

impl DecryptionKey {
    /// Prepares the decryption half of `keys`.
    pub fn new(keys: &PrivateKeys) -> Self {
        DecryptionKey {
            identity: keys.identity().clone(),
            prepared: G2Prepared::from(*keys.d_enc()),
        }
    }

    /// The identity this key decrypts for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptionKey({}, [redacted])", self.identity)
    }
}

/// Parses a ciphertext without the subgroup check of `U`: the
/// Fujisaki-Okamoto check `r * P == U` in [`decrypt`] only accepts a `U` in
/// the prime-order subgroup, so checking it twice would only cost time. `U`
/// is still on the curve (decompression) and not the identity.
fn parse_for_decryption(bytes: &[u8]) -> Option<Ciphertext> {
    if bytes.len() != CIPHERTEXT_LEN {
        return None;
    }
    let u_bytes: [u8; G1_LEN] = bytes[..G1_LEN].try_into().ok()?;
    let u = Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&u_bytes))?;
    if bool::from(u.is_identity()) {
        return None;
    }
    let mut v = [0u8; 32];
    let mut w = [0u8; 32];
    v.copy_from_slice(&bytes[G1_LEN..G1_LEN + 32]);
    w.copy_from_slice(&bytes[G1_LEN + 32..]);
    Some(Ciphertext { u, v, w })
}

/// Decrypts a 112-byte BF ciphertext. Every failure (length, invalid `U`,
/// Fujisaki-Okamoto check) is the same [`IbeError::DecryptionFailed`].
pub fn decrypt(key: &DecryptionKey, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, IbeError> {
    let c = parse_for_decryption(ciphertext).ok_or(IbeError::DecryptionFailed)?;
    let k = multi_miller_loop(&[(&c.u, &key.prepared)]).final_exponentiation();
    let k_bytes = Zeroizing::new(gt_bytes(&k));
    let sigma = Zeroizing::new(xor32(&c.v, &tagged_sha256(TAG_H2, &k_bytes[..])));
    let m = Zeroizing::new(xor32(&c.w, &tagged_sha256(TAG_H4, &sigma[..])));
    let mut r = fo_scalar(&sigma, &m);
    let expected_u: G1Projective = generator_g1().mul(&r);
    r.zeroize();
    if bool::from(expected_u.ct_eq(&G1Projective::from(c.u))) {
        Ok(m)
    } else {
        Err(IbeError::DecryptionFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{extract, setup, Aor, Period};
    use proptest::prelude::*;

    fn id(s: &str, p: &str) -> Identity {
        Identity::new(Aor::parse(s).unwrap(), Period::month(p).unwrap())
    }

    /// Textbook FullIdent encryption (GT exponentiation, plain scalar
    /// multiplications) to check every fast path against.
    fn textbook_encrypt(
        params: &PublicParams,
        identity: &Identity,
        m: &[u8; 32],
        sigma: &[u8; 32],
    ) -> [u8; 112] {
        let r = fo_scalar(sigma, m);
        let u = G1Affine::from(G1Affine::generator() * r);
        let q = hash_to_g2(identity.as_str().as_bytes(), DST_ENC);
        let k = pairing(&params.p_pub(), &q) * r;
        let v = xor32(sigma, &tagged_sha256(TAG_H2, &gt_bytes(&k)));
        let w = xor32(m, &tagged_sha256(TAG_H4, sigma));
        Ciphertext { u, v, w }.to_bytes()
    }

    #[test]
    fn round_trip_and_rejections() {
        let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        let bob = id("sip:bob@biloxi.com", "2026-11");
        let key = DecryptionKey::new(&extract(&msk, &bob));
        let m = [42u8; 32];
        let c = encrypt(&params, &bob, &m).unwrap().to_bytes();
        assert_eq!(*decrypt(&key, &c).unwrap(), m);
        // Every single byte flip is rejected with the one opaque error.
        for i in 0..c.len() {
            let mut bad = c;
            bad[i] ^= 0x01;
            assert_eq!(
                decrypt(&key, &bad),
                Err(IbeError::DecryptionFailed),
                "byte {i}"
            );
        }
        assert_eq!(decrypt(&key, &c[..111]), Err(IbeError::DecryptionFailed));
        let mut longer = c.to_vec();
        longer.push(0);
        assert_eq!(decrypt(&key, &longer), Err(IbeError::DecryptionFailed));
        // Wrong identity, wrong period, wrong domain.
        for other in [
            id("sip:alice@biloxi.com", "2026-11"),
            id("sip:bob@biloxi.com", "2026-10"),
        ] {
            let k = DecryptionKey::new(&extract(&msk, &other));
            assert_eq!(decrypt(&k, &c), Err(IbeError::DecryptionFailed));
        }
        let (msk2, _) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
        let k = DecryptionKey::new(&extract(&msk2, &id("sip:bob@atlanta.com", "2026-11")));
        assert_eq!(decrypt(&k, &c), Err(IbeError::DecryptionFailed));
        // Encrypting to an identity of another domain is refused.
        assert!(encrypt(&params, &id("sip:bob@atlanta.com", "2026-11"), &m).is_err());
    }

    #[test]
    fn u_outside_the_subgroup_is_rejected() {
        let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        let bob = id("sip:bob@biloxi.com", "2026-11");
        let key = DecryptionKey::new(&extract(&msk, &bob));
        let c = encrypt(&params, &bob, &[3u8; 32]).unwrap().to_bytes();
        // Find an x whose point is on the curve but not in the subgroup.
        let mut x = [0u8; 48];
        x[0] = 0x80; // compressed flag
        let mut found = None;
        for i in 0..=255u8 {
            x[47] = i;
            if let Some(p) = Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&x)) {
                if !bool::from(p.is_torsion_free()) {
                    found = Some(p);
                    break;
                }
            }
        }
        let p = found.expect("a point outside the subgroup");
        let mut bad = c;
        bad[..48].copy_from_slice(&p.to_compressed());
        assert_eq!(
            Ciphertext::from_bytes(&bad),
            Err(IbeError::InvalidPoint("U"))
        );
        assert_eq!(decrypt(&key, &bad), Err(IbeError::DecryptionFailed));
    }

    #[test]
    fn cache_is_bounded() {
        let (_, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        let mut cache = RecipientCache::new(2);
        for user in ["a", "b", "c"] {
            cache
                .encrypt(
                    &params,
                    &id(&format!("sip:{user}@biloxi.com"), "2026-11"),
                    &[1; 32],
                )
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.memory_bytes() >= 2 * 52 * 17 * 576);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn fast_paths_equal_textbook(m in any::<[u8; 32]>(), sigma in any::<[u8; 32]>()) {
            let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
            let bob = id("sip:bob@biloxi.com", "2026-11");
            let want = textbook_encrypt(&params, &bob, &m, &sigma);
            prop_assert_eq!(encrypt_with_sigma(&params, &bob, &m, &sigma).unwrap().to_bytes(), want);
            let mut cache = RecipientCache::new(4);
            prop_assert_eq!(cache.encrypt_with_sigma(&params, &bob, &m, &sigma).unwrap().to_bytes(), want);
            prop_assert_eq!(cache.encrypt_with_sigma(&params, &bob, &m, &sigma).unwrap().to_bytes(), want);
            let key = DecryptionKey::new(&extract(&msk, &bob));
            prop_assert_eq!(*decrypt(&key, &want).unwrap(), m);
        }

        #[test]
        fn ciphertext_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ciphertext::from_bytes(&bytes);
        }
    }
}
