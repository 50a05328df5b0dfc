//! Setup, extract and key check (spec 3.1).

use super::encoding::{g2_from_bytes_nonidentity, nonzero_scalar_from_bytes, G2_LEN};
use super::fixed_base::mul_variable_base;
use super::hash::{hash_to_g2, DST_ENC, DST_SIG};
use super::msm::msm_u128;
use super::params::PublicParams;
use super::{random, IbeError, Identity};
use bls12_381::{
    multi_miller_loop, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, Scalar,
};
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The provider's master secret `s` (non-zero scalar). Wiped on drop, never
/// printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret(Scalar);

impl MasterSecret {
    /// Draws a uniformly random non-zero master secret.
    pub fn generate() -> Result<Self, IbeError> {
        Ok(MasterSecret(random::nonzero_scalar()?))
    }

    /// Decodes a 32-byte little-endian scalar; zero and non-canonical values
    /// are rejected.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IbeError> {
        Ok(MasterSecret(nonzero_scalar_from_bytes(
            "master secret",
            bytes,
        )?))
    }

    /// The 32-byte encoding (wiped when the returned value is dropped).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// `P_pub = s * P`.
    pub fn p_pub(&self) -> G1Affine {
        G1Affine::from(super::fixed_base::generator_g1().mul(&self.0))
    }

    /// The scalar `s` (for splitting it; the copy is the caller's to wipe).
    pub(crate) fn scalar(&self) -> Scalar {
        self.0
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret([redacted])")
    }
}

/// Generates a provider: a fresh master secret and its public parameters
/// (monthly periods, escrow-resistant media keys).
pub fn setup(domain: &str, pkg_url: &str) -> Result<(MasterSecret, PublicParams), IbeError> {
    let msk = MasterSecret::generate()?;
    let params = PublicParams::new(domain, msk.p_pub(), pkg_url)?;
    Ok((msk, params))
}

/// A user's private keys for one identity: `d_enc = s * Q_enc`,
/// `d_sig = s * Q_sig`. Wiped on drop, never printed.
#[derive(Clone)]
pub struct PrivateKeys {
    identity: Identity,
    d_enc: G2Affine,
    d_sig: G2Affine,
}

impl PrivateKeys {
    /// Rebuilds keys from their 96-byte encodings (as the PKG sends them);
    /// rejects invalid and identity points. Does not check them against the
    /// parameters: call [`check_key`] for that.
    pub fn from_bytes(identity: Identity, d_enc: &[u8], d_sig: &[u8]) -> Result<Self, IbeError> {
        Ok(PrivateKeys {
            identity,
            d_enc: g2_from_bytes_nonidentity("d_enc", d_enc)?,
            d_sig: g2_from_bytes_nonidentity("d_sig", d_sig)?,
        })
    }

    /// Keys from points (combined shares); identity points are refused.
    pub(crate) fn from_points(
        identity: Identity,
        d_enc: G2Affine,
        d_sig: G2Affine,
    ) -> Result<Self, IbeError> {
        if bool::from(d_enc.is_identity()) {
            return Err(IbeError::IdentityPoint("d_enc"));
        }
        if bool::from(d_sig.is_identity()) {
            return Err(IbeError::IdentityPoint("d_sig"));
        }
        Ok(PrivateKeys {
            identity,
            d_enc,
            d_sig,
        })
    }

    /// The identity these keys belong to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Compressed `d_enc` (wiped when dropped).
    pub fn d_enc_bytes(&self) -> Zeroizing<[u8; G2_LEN]> {
        Zeroizing::new(self.d_enc.to_compressed())
    }

    /// Compressed `d_sig` (wiped when dropped).
    pub fn d_sig_bytes(&self) -> Zeroizing<[u8; G2_LEN]> {
        Zeroizing::new(self.d_sig.to_compressed())
    }

    pub(crate) fn d_enc(&self) -> &G2Affine {
        &self.d_enc
    }

    pub(crate) fn d_sig(&self) -> &G2Affine {
        &self.d_sig
    }
}

impl Drop for PrivateKeys {
    fn drop(&mut self) {
        self.d_enc.zeroize();
        self.d_sig.zeroize();
    }
}

impl fmt::Debug for PrivateKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKeys({}, [redacted])", self.identity)
    }
}

/// `Extract(ID)`: the private keys of `identity` under `msk` (constant time
/// in the master secret).
pub fn extract(msk: &MasterSecret, identity: &Identity) -> PrivateKeys {
    let q_enc = hash_to_g2(identity.as_str().as_bytes(), DST_ENC);
    let q_sig = hash_to_g2(identity.as_str().as_bytes(), DST_SIG);
    let d_enc = mul_variable_base(&G2Projective::from(q_enc), &msk.0);
    let d_sig = mul_variable_base(&G2Projective::from(q_sig), &msk.0);
    // One inversion for both points.
    let mut affine = [G2Affine::identity(); 2];
    G2Projective::batch_normalize(&[d_enc, d_sig], &mut affine);
    PrivateKeys {
        identity: identity.clone(),
        d_enc: affine[0],
        d_sig: affine[1],
    }
}

/// Checks received keys: `e(P, d) == e(P_pub, Q)` for both keys, in one
/// multi-Miller loop and one final exponentiation. Also checks that the keys'
/// domain is the parameters' domain.
pub fn check_key(params: &PublicParams, keys: &PrivateKeys) -> Result<(), IbeError> {
    if keys.identity.aor().host() != params.domain() {
        return Err(IbeError::KeyCheckFailed);
    }
    check_key_against(&params.p_pub(), keys)
}

/// `e(P, d) == e(p_pub, Q)` for both keys of `keys` (the pairing part of
/// [`check_key`]; with a server's `P_pub_i` it checks a key share).
pub(crate) fn check_key_against(p_pub: &G1Affine, keys: &PrivateKeys) -> Result<(), IbeError> {
    let q = PreparedIdentity::new(keys.identity());
    check_keys_against(p_pub, &[(keys, &q)])
}

/// `Q_enc` and `Q_sig` of one identity, hashed to G2 and prepared for the
/// Miller loop once, for checking several keys or key shares of that
/// identity (a threshold fetch checks `t` shares and their combination).
#[derive(Clone, Debug)]
pub struct PreparedIdentity {
    identity: Identity,
    q_enc: G2Prepared,
    q_sig: G2Prepared,
}

impl PreparedIdentity {
    /// Hashes and prepares `identity`'s two public keys.
    pub fn new(identity: &Identity) -> Self {
        let id = identity.as_str().as_bytes();
        PreparedIdentity {
            identity: identity.clone(),
            q_enc: G2Prepared::from(hash_to_g2(id, DST_ENC)),
            q_sig: G2Prepared::from(hash_to_g2(id, DST_SIG)),
        }
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// Every key of `items` checked against `p_pub` at once
/// ([`check_claims`] with `p_pub` for every key). Fails when any key
/// fails, or when a key's identity is not the one its `Q`s were made for.
pub(crate) fn check_keys_against(
    p_pub: &G1Affine,
    items: &[(&PrivateKeys, &PreparedIdentity)],
) -> Result<(), IbeError> {
    let claims: Vec<Claim<'_>> = items.iter().map(|(k, q)| (p_pub, *k, *q)).collect();
    check_claims(&claims)
}

/// A claim `(x, keys, q)`: `e(P, d_enc) == e(x, Q_enc)` and `e(P, d_sig)
/// == e(x, Q_sig)`, where the `Q`s are `q`'s and `x` is `p_pub` (a key)
/// or a threshold server's `P_pub_i` (a key share).
pub(crate) type Claim<'a> = (&'a G1Affine, &'a PrivateKeys, &'a PreparedIdentity);

/// Every equation of `claims` at once, in one multi-Miller loop of
/// `1 + 2 * (distinct identities)` pairs and one final exponentiation:
/// each equation weighted by its own random non-zero 128-bit scalar `c`,
/// `e(P, sum c * d) * prod_Q e(-sum c * x, Q) == 1`. That holds only if
/// every equation holds (but with probability below 2^-127: a false
/// equation contributes a non-identity element of a group of prime order
/// `r`, and at most one weight in `2^128 - 1` cancels it). Fails when any
/// equation fails, or when a key's identity is not the one its `Q`s were
/// made for; does not say which (check them one by one for that).
pub(crate) fn check_claims(claims: &[Claim<'_>]) -> Result<(), IbeError> {
    if claims.iter().any(|(_, k, q)| k.identity != q.identity) {
        return Err(IbeError::KeyCheckFailed);
    }
    // The distinct identities, with the weighted x of their Q_enc and
    // Q_sig equations.
    let mut qs: Vec<&PreparedIdentity> = Vec::new();
    let mut x_terms: Vec<[Vec<(G1Projective, u128)>; 2]> = Vec::new();
    let mut d_terms: Vec<(G2Projective, u128)> = Vec::with_capacity(claims.len() * 2);
    for (x, keys, q) in claims {
        let slot = match qs.iter().position(|p| p.identity == q.identity) {
            Some(i) => i,
            None => {
                qs.push(q);
                x_terms.push([Vec::new(), Vec::new()]);
                qs.len() - 1
            }
        };
        for (j, d) in [keys.d_enc, keys.d_sig].into_iter().enumerate() {
            let c = random::nonzero_u128()?;
            d_terms.push((G2Projective::from(d), c));
            x_terms[slot][j].push((G1Projective::from(*x), c));
        }
    }
    // sum c * d mixes secret keys: wiped once prepared.
    let mut sum = msm_u128(&d_terms);
    d_terms.iter_mut().for_each(|(d, _)| d.zeroize());
    let mut sum_affine = G2Affine::from(sum);
    sum.zeroize();
    let sum_prepared = G2Prepared::from(sum_affine);
    sum_affine.zeroize();
    let neg_x: Vec<G1Projective> = x_terms
        .iter()
        .flat_map(|[enc, sig]| [-msm_u128(enc), -msm_u128(sig)])
        .collect();
    let mut neg_x_affine = vec![G1Affine::identity(); neg_x.len()];
    G1Projective::batch_normalize(&neg_x, &mut neg_x_affine);
    let p = G1Affine::generator();
    let mut pairs: Vec<(&G1Affine, &G2Prepared)> = Vec::with_capacity(1 + 2 * qs.len());
    pairs.push((&p, &sum_prepared));
    for (q, x) in qs.iter().zip(neg_x_affine.chunks(2)) {
        pairs.push((&x[0], &q.q_enc));
        pairs.push((&x[1], &q.q_sig));
    }
    if multi_miller_loop(&pairs).final_exponentiation() == Gt::identity() {
        Ok(())
    } else {
        Err(IbeError::KeyCheckFailed)
    }
}

/// [`check_key`] for several keys at once (`check_keys_against`), each
/// with its identity prepared before.
pub fn check_keys(
    params: &PublicParams,
    items: &[(&PrivateKeys, &PreparedIdentity)],
) -> Result<(), IbeError> {
    if items
        .iter()
        .any(|(k, _)| k.identity.aor().host() != params.domain())
    {
        return Err(IbeError::KeyCheckFailed);
    }
    check_keys_against(&params.p_pub(), items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{Aor, Period};

    fn id(s: &str) -> Identity {
        Identity::new(Aor::parse(s).unwrap(), Period::month("2026-11").unwrap())
    }

    #[test]
    fn extracted_keys_check() {
        let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com:8443").unwrap();
        let keys = extract(&msk, &id("sip:bob@biloxi.com"));
        check_key(&params, &keys).unwrap();
        let round = PrivateKeys::from_bytes(
            keys.identity().clone(),
            &keys.d_enc_bytes()[..],
            &keys.d_sig_bytes()[..],
        )
        .unwrap();
        check_key(&params, &round).unwrap();
    }

    #[test]
    fn wrong_keys_fail_check() {
        let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        let (other, _) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        assert_eq!(
            check_key(&params, &extract(&other, &id("sip:bob@biloxi.com"))),
            Err(IbeError::KeyCheckFailed)
        );
        // Keys of bob relabelled as alice's.
        let bob = extract(&msk, &id("sip:bob@biloxi.com"));
        let fake = PrivateKeys::from_bytes(
            id("sip:alice@biloxi.com"),
            &bob.d_enc_bytes()[..],
            &bob.d_sig_bytes()[..],
        )
        .unwrap();
        assert_eq!(check_key(&params, &fake), Err(IbeError::KeyCheckFailed));
        // Only one of the two keys wrong.
        let alice = extract(&msk, &id("sip:alice@biloxi.com"));
        let half = PrivateKeys::from_bytes(
            id("sip:alice@biloxi.com"),
            &alice.d_enc_bytes()[..],
            &bob.d_sig_bytes()[..],
        )
        .unwrap();
        assert_eq!(check_key(&params, &half), Err(IbeError::KeyCheckFailed));
        // Keys of another domain.
        let foreign = extract(&msk, &id("sip:bob@atlanta.com"));
        assert_eq!(check_key(&params, &foreign), Err(IbeError::KeyCheckFailed));
    }

    #[test]
    fn a_batch_fails_when_any_key_fails_even_when_errors_cancel() {
        let (msk, params) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        let ids: Vec<Identity> = ["2026-10", "2026-11", "2026-12"]
            .iter()
            .map(|p| {
                Identity::new(
                    Aor::parse("sip:bob@biloxi.com").unwrap(),
                    Period::month(p).unwrap(),
                )
            })
            .collect();
        let keys: Vec<PrivateKeys> = ids.iter().map(|i| extract(&msk, i)).collect();
        let qs: Vec<PreparedIdentity> = ids.iter().map(PreparedIdentity::new).collect();
        let batch = |k: &[PrivateKeys]| {
            let items: Vec<(&PrivateKeys, &PreparedIdentity)> = k.iter().zip(&qs).collect();
            check_keys(&params, &items)
        };
        batch(&keys).unwrap();
        // One wrong d_sig in the middle.
        let mut one = keys.clone();
        one[1] = PrivateKeys::from_points(ids[1].clone(), keys[1].d_enc, keys[0].d_sig).unwrap();
        assert_eq!(batch(&one), Err(IbeError::KeyCheckFailed));
        // Two wrong keys whose errors cancel in an unweighted product:
        // d_enc of one period shifted by +X, of another by -X
        // (e(P, X) e(P, -X) = 1).
        let x = G2Projective::generator();
        let mut cancel = keys.clone();
        cancel[0] = PrivateKeys::from_points(
            ids[0].clone(),
            G2Affine::from(G2Projective::from(keys[0].d_enc) + x),
            keys[0].d_sig,
        )
        .unwrap();
        cancel[2] = PrivateKeys::from_points(
            ids[2].clone(),
            G2Affine::from(G2Projective::from(keys[2].d_enc) - x),
            keys[2].d_sig,
        )
        .unwrap();
        assert_eq!(batch(&cancel), Err(IbeError::KeyCheckFailed));
        // Q prepared for another identity than the key's.
        let swapped = [(&keys[0], &qs[1])];
        assert_eq!(check_keys(&params, &swapped), Err(IbeError::KeyCheckFailed));
        // Another domain.
        let (_, other) = setup("atlanta.com", "https://pkg.atlanta.com").unwrap();
        let items: Vec<(&PrivateKeys, &PreparedIdentity)> = keys.iter().zip(&qs).collect();
        assert_eq!(check_keys(&other, &items), Err(IbeError::KeyCheckFailed));
    }

    #[test]
    fn secrets_are_redacted() {
        let (msk, _) = setup("biloxi.com", "https://pkg.biloxi.com").unwrap();
        assert_eq!(format!("{msk:?}"), "MasterSecret([redacted])");
        let keys = extract(&msk, &id("sip:bob@biloxi.com"));
        assert!(format!("{keys:?}").contains("[redacted]"));
        assert!(MasterSecret::from_bytes(&[0u8; 32]).is_err());
        let again = MasterSecret::from_bytes(&msk.to_bytes()[..]).unwrap();
        assert_eq!(again.p_pub(), msk.p_pub());
    }
}
