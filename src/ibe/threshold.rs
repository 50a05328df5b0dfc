//! A threshold provider (pkg-api.md "Threshold provider"): the master
//! secret `s` shared t-of-n with Shamir's scheme over the scalar field of
//! BLS12-381, so that no server alone, nor t-1 together, can derive a key.
//!
//! Sans-I/O and free of policy: splitting (dealer mode), Lagrange
//! interpolation in the exponent (checking the servers' `P_pub_i` against
//! `p_pub`), checking one server's key share (`e(P, d_i) == e(P_pub_i, Q)`)
//! and combining t shares into the user's key. Server `i` extracts its
//! share of a key with [`super::extract`] under its [`MasterShare`]'s
//! secret; the phone combines with [`combine`] and checks the result with
//! [`super::check_key`] like any key.

use super::encoding::{b64_decode, b64_encode, g1_from_bytes_nonidentity};
use super::fixed_base::mul_variable_base;
use super::keys::{
    check_claims, check_key_against, check_keys, check_keys_against, Claim, MasterSecret,
    PreparedIdentity, PrivateKeys,
};
use super::msm::msm_u128;
use super::params::PublicParams;
use super::{random, IbeError, Identity};
use bls12_381::{G1Affine, G1Projective, G2Affine, G2Projective, Scalar};
use core::fmt;
use ff::Field;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Largest server index (and number of servers) accepted.
pub const MAX_SERVERS: u32 = 64;

/// Server `index`'s share `s_i = f(index)` of the master secret, with
/// `P_pub_i = s_i * P`. Wiped on drop, never printed.
#[derive(Clone)]
pub struct MasterShare {
    index: u32,
    secret: MasterSecret,
}

impl MasterShare {
    /// The share of server `index` from its 32-byte scalar encoding.
    pub fn from_bytes(index: u32, bytes: &[u8]) -> Result<Self, IbeError> {
        check_index(index)?;
        Ok(MasterShare {
            index,
            secret: MasterSecret::from_bytes(bytes)?,
        })
    }

    /// The server index `i` (1..=n).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `s_i` as a master secret: [`super::extract`] under it issues this
    /// server's shares `d_i = s_i * Q` of a user's keys.
    pub fn secret(&self) -> &MasterSecret {
        &self.secret
    }

    /// `P_pub_i = s_i * P`.
    pub fn p_pub_i(&self) -> G1Affine {
        self.secret.p_pub()
    }
}

impl fmt::Debug for MasterShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterShare({}, [redacted])", self.index)
    }
}

/// Dealer mode: splits `msk` t-of-n with a fresh random polynomial `f` of
/// degree `t-1`, `f(0) = s`; share `i` is `f(i)` for `i` in `1..=n`. The
/// polynomial's coefficients are wiped before returning; the caller then
/// drops `msk` (pkg-api.md: a dealer "splits and then provably forgets").
pub fn deal(msk: &MasterSecret, t: u32, n: u32) -> Result<Vec<MasterShare>, IbeError> {
    check_t_n(t, n)?;
    let mut coeffs = Vec::with_capacity(t as usize);
    coeffs.push(msk.scalar());
    for _ in 1..t {
        coeffs.push(random::nonzero_scalar()?);
    }
    let mut shares = Vec::with_capacity(n as usize);
    let mut failed = None;
    for i in 1..=n {
        let mut y = eval(&coeffs, Scalar::from(u64::from(i)));
        let bytes = y.to_bytes();
        y.zeroize();
        // A share of zero (probability 2^-255) cannot be a master secret.
        match MasterShare::from_bytes(i, &bytes) {
            Ok(s) => shares.push(s),
            Err(e) => failed = Some(e),
        }
    }
    coeffs.iter_mut().for_each(Zeroize::zeroize);
    match failed {
        Some(e) => Err(e),
        None => Ok(shares),
    }
}

fn eval(coeffs: &[Scalar], x: Scalar) -> Scalar {
    coeffs.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
}

fn check_index(index: u32) -> Result<(), IbeError> {
    if (1..=MAX_SERVERS).contains(&index) {
        Ok(())
    } else {
        Err(IbeError::InvalidParams(format!(
            "threshold server index {index} is outside 1..={MAX_SERVERS}"
        )))
    }
}

fn check_t_n(t: u32, n: u32) -> Result<(), IbeError> {
    if t == 0 || t > n || n > MAX_SERVERS {
        return Err(IbeError::InvalidParams(format!(
            "threshold {t} of {n}: need 1 <= t <= n <= {MAX_SERVERS}"
        )));
    }
    Ok(())
}

/// The Lagrange coefficients at `x` of the distinct non-zero `indices`:
/// `lambda_i(x) = prod_{j != i} (x - j) / (i - j)`.
pub(crate) fn lagrange_at(indices: &[u32], x: u32) -> Result<Vec<Scalar>, IbeError> {
    for (k, i) in indices.iter().enumerate() {
        check_index(*i)?;
        if indices[..k].contains(i) {
            return Err(IbeError::InvalidParams(format!(
                "threshold server index {i} given twice"
            )));
        }
    }
    let x = Scalar::from(u64::from(x));
    indices
        .iter()
        .map(|&i| {
            let xi = Scalar::from(u64::from(i));
            let (num, den) = indices.iter().filter(|&&j| j != i).fold(
                (Scalar::ONE, Scalar::ONE),
                |(num, den), &j| {
                    let xj = Scalar::from(u64::from(j));
                    (num * (x - xj), den * (xi - xj))
                },
            );
            // Distinct indices: den is non-zero.
            Option::<Scalar>::from(den.invert())
                .map(|inv| num * inv)
                .ok_or_else(|| IbeError::InvalidParams("threshold indices collide".into()))
        })
        .collect()
}

/// The Lagrange coefficients at 0 of the distinct `indices` as integers
/// over one positive common denominator `D`: `(lambda_i * D, D)`, with
/// `lambda_i(0) = prod_{j != i} j / (j - i)`; `None` when they do not fit
/// in 64 bits (many servers with large indices).
fn lagrange_integers(indices: &[u32]) -> Option<(Vec<i128>, u64)> {
    let mut nums = Vec::with_capacity(indices.len());
    let mut dens = Vec::with_capacity(indices.len());
    for &i in indices {
        let (mut num, mut den) = (1i128, 1i128);
        for &j in indices.iter().filter(|&&j| j != i) {
            num = num.checked_mul(i128::from(j))?;
            den = den.checked_mul(i128::from(j) - i128::from(i))?;
        }
        nums.push(num);
        dens.push(den);
    }
    let gcd = |mut a: i128, mut b: i128| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a.abs()
    };
    let mut common = 1i128;
    for d in &dens {
        common = common.checked_mul(d.abs() / gcd(common, *d))?;
    }
    let out: Option<Vec<i128>> = nums
        .iter()
        .zip(&dens)
        .map(|(n, d)| {
            n.checked_mul(common / d)
                .filter(|c| c.unsigned_abs() <= u128::from(u64::MAX))
        })
        .collect();
    Some((out?, u64::try_from(common).ok()?))
}

/// The value at `x` of the polynomial in the exponent through `points`
/// (`(index, f(index) * P)`): `sum lambda_i(x) * points_i`.
pub fn interpolate_g1(points: &[(u32, G1Affine)], x: u32) -> Result<G1Affine, IbeError> {
    let indices: Vec<u32> = points.iter().map(|(i, _)| *i).collect();
    let lambdas = lagrange_at(&indices, x)?;
    let sum = points
        .iter()
        .zip(&lambdas)
        .fold(G1Projective::identity(), |acc, ((_, p), l)| acc + p * l);
    Ok(G1Affine::from(sum))
}

/// Checks the servers' public shares against `p_pub` (pkg-api.md): the
/// `P_pub_i` lie on one polynomial of degree `t-1` whose value at 0 is
/// `p_pub`. Interpolates from the first `t` servers, then every other
/// `P_pub_j` must be that polynomial's value at `j`. Indices must be
/// distinct, in `1..=MAX_SERVERS`, and `t <= n`.
pub fn check_public_shares(
    p_pub: &G1Affine,
    t: u32,
    shares: &[(u32, G1Affine)],
) -> Result<(), IbeError> {
    let n = u32::try_from(shares.len()).unwrap_or(u32::MAX);
    check_t_n(t, n)?;
    let indices: Vec<u32> = shares.iter().map(|(i, _)| *i).collect();
    lagrange_at(&indices, 0)?; // distinct, in range
    let base = &shares[..t as usize];
    if interpolate_g1(base, 0)? != *p_pub {
        return Err(IbeError::InvalidParams(
            "the threshold servers' p_pub_i do not interpolate to p_pub".into(),
        ));
    }
    for (j, p_j) in &shares[t as usize..] {
        if interpolate_g1(base, *j)? != *p_j {
            return Err(IbeError::InvalidParams(format!(
                "the p_pub_i of threshold server {j} is not on the servers' polynomial"
            )));
        }
    }
    Ok(())
}

/// One server's share of a user's keys: `d_enc_i = s_i * Q_enc`,
/// `d_sig_i = s_i * Q_sig` from server `index`.
#[derive(Clone, Debug)]
pub struct KeyShare {
    index: u32,
    keys: PrivateKeys,
}

impl KeyShare {
    /// A share received from server `index` (not checked yet).
    pub fn new(index: u32, keys: PrivateKeys) -> Result<Self, IbeError> {
        check_index(index)?;
        Ok(KeyShare { index, keys })
    }

    /// The server index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The identity the share is for.
    pub fn identity(&self) -> &Identity {
        self.keys.identity()
    }
}

/// Checks one server's share against its public share:
/// `e(P, d_i) == e(P_pub_i, Q)` for both keys, and that the identity is in
/// `domain`.
pub fn check_key_share(domain: &str, p_pub_i: &G1Affine, share: &KeyShare) -> Result<(), IbeError> {
    if share.keys.identity().aor().host() != domain {
        return Err(IbeError::KeyCheckFailed);
    }
    check_key_against(p_pub_i, &share.keys)
}

/// [`check_key_share`] for several shares of one server at once (one
/// multi-Miller loop, `super::keys::check_keys_against`), each with its
/// identity prepared before. Fails when any share fails; check them one by
/// one to say which.
pub fn check_key_shares(
    domain: &str,
    p_pub_i: &G1Affine,
    shares: &[(&KeyShare, &PreparedIdentity)],
) -> Result<(), IbeError> {
    if shares
        .iter()
        .any(|(s, _)| s.keys.identity().aor().host() != domain)
    {
        return Err(IbeError::KeyCheckFailed);
    }
    let items: Vec<(&PrivateKeys, &PreparedIdentity)> =
        shares.iter().map(|(s, q)| (&s.keys, *q)).collect();
    check_keys_against(p_pub_i, &items)
}

/// Combines key shares of one identity from distinct servers with the
/// Lagrange coefficients at 0: `d = sum lambda_i * d_i`. With `t` good
/// shares this is the identity's key under `p_pub`; with fewer it is not
/// (check the result with [`super::check_key`]).
pub fn combine(shares: &[KeyShare]) -> Result<PrivateKeys, IbeError> {
    let first = shares
        .first()
        .ok_or_else(|| IbeError::InvalidParams("no key shares to combine".into()))?;
    let identity = first.keys.identity().clone();
    if shares.iter().any(|s| *s.keys.identity() != identity) {
        return Err(IbeError::InvalidParams(
            "key shares of different identities".into(),
        ));
    }
    let indices: Vec<u32> = shares.iter().map(|s| s.index).collect();
    let lambdas = lagrange_at(&indices, 0)?;
    let (mut d_enc, mut d_sig) = match lagrange_integers(&indices) {
        // The coefficients are public: small integers over one common
        // denominator D, so d = D^-1 * sum (lambda_i D) d_i costs one
        // multi-scalar multiplication with short scalars and at most one
        // full multiplication (none when D = 1, as for servers 1 and 2).
        Some((numerators, denominator)) => {
            let sum = |d: fn(&PrivateKeys) -> &G2Affine| {
                let mut terms: Vec<(G2Projective, u128)> = shares
                    .iter()
                    .zip(&numerators)
                    .map(|(s, &c)| {
                        let p = G2Projective::from(*d(&s.keys));
                        (if c < 0 { -p } else { p }, c.unsigned_abs())
                    })
                    .collect();
                let mut sum = msm_u128(&terms);
                terms.iter_mut().for_each(|(p, _)| p.zeroize());
                if denominator != 1 {
                    let inv = Scalar::from(denominator).invert().unwrap_or(Scalar::ZERO);
                    let scaled = mul_variable_base(&sum, &inv);
                    sum.zeroize();
                    sum = scaled;
                }
                sum
            };
            (sum(PrivateKeys::d_enc), sum(PrivateKeys::d_sig))
        }
        // Windowed multiplication (constant time, its table wiped).
        None => shares.iter().zip(&lambdas).fold(
            (G2Projective::identity(), G2Projective::identity()),
            |(e, g), (s, l)| {
                (
                    e + mul_variable_base(&G2Projective::from(*s.keys.d_enc()), l),
                    g + mul_variable_base(&G2Projective::from(*s.keys.d_sig()), l),
                )
            },
        ),
    };
    let mut affine = [G2Affine::identity(); 2];
    G2Projective::batch_normalize(&[d_enc, d_sig], &mut affine);
    d_enc.zeroize();
    d_sig.zeroize();
    let keys = PrivateKeys::from_points(identity, affine[0], affine[1]);
    affine.iter_mut().for_each(Zeroize::zeroize);
    keys
}

/// One server's shares of the identities of one fetch, one per identity
/// in the order of the identities.
#[derive(Clone, Copy, Debug)]
pub struct ServerShares<'a> {
    /// The server's public share `P_pub_i`.
    pub p_pub_i: &'a G1Affine,
    /// Its shares.
    pub shares: &'a [KeyShare],
}

/// What [`combine_checked`] found.
#[derive(Debug)]
pub enum Combined {
    /// Every share was good: the combined keys, one per identity, each
    /// checked against `p_pub`.
    Keys(Vec<PrivateKeys>),
    /// These servers gave a wrong share (server index, position of its
    /// first wrong share), ascending; the other servers' shares are good.
    Bad(Vec<(u32, usize)>),
}

/// Combines the shares of `servers` (`t` servers, distinct) into one key
/// per identity of `ids` and checks, all at once (the key module's
/// random-weighted batch: one multi-Miller loop and one final
/// exponentiation for everything), every share against its server's
/// `P_pub_i` and every combined key against `params`' `p_pub`; every
/// identity must be in `params`' domain. When that batch fails, each
/// server's shares are checked alone (one batch per server), and a failing
/// server's one by one, to name every bad server and its first bad share.
/// Errors: a server without exactly one share per identity, shares of
/// one identity from one server twice, and keys that fail although every
/// share is good (`P_pub_i` that do not interpolate to `p_pub`, which
/// [`Threshold::validated`] refuses).
pub fn combine_checked(
    params: &PublicParams,
    servers: &[ServerShares<'_>],
    ids: &[PreparedIdentity],
) -> Result<Combined, IbeError> {
    if servers.iter().any(|s| s.shares.len() != ids.len()) {
        return Err(IbeError::InvalidParams(
            "a server's key shares do not match the identities asked for".into(),
        ));
    }
    let domain = params.domain();
    // A combination may fail because of a bad share (an identity point):
    // then the bad server is still named below.
    let keys: Result<Vec<PrivateKeys>, IbeError> = (0..ids.len())
        .map(|k| {
            let shares: Vec<KeyShare> = servers.iter().map(|s| s.shares[k].clone()).collect();
            combine(&shares)
        })
        .collect();
    let in_domain = servers
        .iter()
        .flat_map(|s| s.shares)
        .all(|share| share.keys.identity().aor().host() == domain);
    if let (Ok(keys), true) = (&keys, in_domain) {
        let p_pub = params.p_pub();
        let mut claims: Vec<Claim<'_>> = Vec::with_capacity((servers.len() + 1) * ids.len());
        for s in servers {
            claims.extend(
                s.shares
                    .iter()
                    .zip(ids)
                    .map(|(x, q)| (s.p_pub_i, &x.keys, q)),
            );
        }
        claims.extend(keys.iter().zip(ids).map(|(k, q)| (&p_pub, k, q)));
        if check_claims(&claims).is_ok() {
            return Ok(Combined::Keys(keys.clone()));
        }
    }
    let mut bad: Vec<(u32, usize)> = Vec::new();
    for s in servers {
        let batch: Vec<(&KeyShare, &PreparedIdentity)> = s.shares.iter().zip(ids).collect();
        if check_key_shares(domain, s.p_pub_i, &batch).is_err() {
            let first = s
                .shares
                .iter()
                .zip(ids)
                .position(|(x, q)| check_key_shares(domain, s.p_pub_i, &[(x, q)]).is_err())
                .unwrap_or(0);
            bad.push((s.shares.first().map_or(0, KeyShare::index), first));
        }
    }
    if !bad.is_empty() {
        bad.sort_unstable();
        return Ok(Combined::Bad(bad));
    }
    let keys = keys?;
    let items: Vec<(&PrivateKeys, &PreparedIdentity)> = keys.iter().zip(ids).collect();
    check_keys(params, &items)?;
    Ok(Combined::Keys(keys))
}

/// The `threshold` member of the parameter document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// Shares needed (`t`).
    pub t: u32,
    /// Whether a dealer split `s` (and said it forgot it) instead of a
    /// distributed key generation.
    pub dealer: bool,
    /// The servers, by index.
    pub servers: Vec<ThresholdServer>,
}

/// One server of a threshold provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdServer {
    /// Its index `i` (1..=n).
    pub index: u32,
    /// Its base URL (`https://...`).
    pub pkg_url: String,
    /// Its public share `P_pub_i = s_i * P`.
    pub p_pub_i: G1Affine,
    /// SHA-256 of its TLS certificate (the pin).
    pub tls_sha256: [u8; 32],
}

impl Threshold {
    /// Checks the member against `p_pub` ([`check_public_shares`]) and
    /// the servers' URLs; servers are kept in index order.
    pub fn validated(mut self, p_pub: &G1Affine) -> Result<Self, IbeError> {
        self.servers.sort_by_key(|s| s.index);
        for s in &self.servers {
            if !s.pkg_url.starts_with("https://") || s.pkg_url.len() <= "https://".len() {
                return Err(IbeError::InvalidParams(format!(
                    "threshold server {} pkg_url is not an https:// URL",
                    s.index
                )));
            }
        }
        let points: Vec<(u32, G1Affine)> =
            self.servers.iter().map(|s| (s.index, s.p_pub_i)).collect();
        check_public_shares(p_pub, self.t, &points)?;
        Ok(self)
    }

    /// The server of `index`.
    pub fn server(&self, index: u32) -> Option<&ThresholdServer> {
        self.servers.iter().find(|s| s.index == index)
    }
}

/// JSON form of [`Threshold`] (pkg-api.md).
#[derive(Serialize, Deserialize)]
pub(crate) struct WireThreshold {
    t: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dealer: bool,
    servers: Vec<WireServer>,
}

#[derive(Serialize, Deserialize)]
struct WireServer {
    index: u32,
    pkg_url: String,
    p_pub_i: String,
    tls_sha256: String,
}

impl WireThreshold {
    pub(crate) fn decode(self) -> Result<Threshold, IbeError> {
        let servers = self
            .servers
            .into_iter()
            .map(|w| {
                let p = b64_decode("p_pub_i", &w.p_pub_i)?;
                let mut tls = [0u8; 32];
                hex::decode_to_slice(&w.tls_sha256, &mut tls).map_err(|_| {
                    IbeError::InvalidParams(format!(
                        "threshold server {} tls_sha256 is not 64 hex digits",
                        w.index
                    ))
                })?;
                Ok(ThresholdServer {
                    index: w.index,
                    pkg_url: w.pkg_url,
                    p_pub_i: g1_from_bytes_nonidentity("p_pub_i", &p)?,
                    tls_sha256: tls,
                })
            })
            .collect::<Result<Vec<_>, IbeError>>()?;
        Ok(Threshold {
            t: self.t,
            dealer: self.dealer,
            servers,
        })
    }

    pub(crate) fn encode(t: &Threshold) -> Self {
        WireThreshold {
            t: t.t,
            dealer: t.dealer,
            servers: t
                .servers
                .iter()
                .map(|s| WireServer {
                    index: s.index,
                    pkg_url: s.pkg_url.clone(),
                    p_pub_i: b64_encode(&s.p_pub_i.to_compressed()),
                    tls_sha256: hex::encode(s.tls_sha256),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{check_key, extract, setup, Aor, Period, PublicParams};
    use bls12_381::G2Projective;
    use proptest::prelude::*;

    fn id() -> Identity {
        Identity::new(
            Aor::parse("sip:alice@atlanta.com").unwrap(),
            Period::month("2026-11").unwrap(),
        )
    }

    fn shares_of(shares: &[MasterShare], pick: &[usize], id: &Identity) -> Vec<KeyShare> {
        pick.iter()
            .map(|&k| KeyShare::new(shares[k].index(), extract(shares[k].secret(), id)).unwrap())
            .collect()
    }

    /// Distinct positions of `k` of `n` shares, from a seed.
    fn subset(n: usize, k: usize, seed: u64) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let mut x = seed;
        for i in (1..n).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            all.swap(i, (x >> 33) as usize % (i + 1));
        }
        all.truncate(k);
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Any t shares reproduce the key; t-1 never do.
        #[test]
        fn any_t_shares_combine_and_t_minus_1_never(t in 1u32..=4, extra in 0u32..=2, seed: u64) {
            let n = t + extra;
            let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
            let shares = deal(&msk, t, n).unwrap();
            let points: Vec<_> = shares.iter().map(|s| (s.index(), s.p_pub_i())).collect();
            check_public_shares(&params.p_pub(), t, &points).unwrap();
            let id = id();
            let pick = subset(n as usize, t as usize, seed);
            let good = combine(&shares_of(&shares, &pick, &id)).unwrap();
            check_key(&params, &good).unwrap();
            prop_assert_eq!(good.d_enc_bytes(), extract(&msk, &id).d_enc_bytes());
            if t > 1 {
                let few = combine(&shares_of(&shares, &pick[..t as usize - 1], &id)).unwrap();
                prop_assert_eq!(check_key(&params, &few), Err(IbeError::KeyCheckFailed));
            }
        }
    }

    #[test]
    fn each_share_checks_against_its_own_public_share_only() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let id = id();
        let ks = shares_of(&shares, &[0, 1, 2], &id);
        for (s, k) in shares.iter().zip(&ks) {
            check_key_share("atlanta.com", &s.p_pub_i(), k).unwrap();
        }
        assert_eq!(
            check_key_share("atlanta.com", &shares[1].p_pub_i(), &ks[0]),
            Err(IbeError::KeyCheckFailed)
        );
        assert_eq!(
            check_key_share("biloxi.com", &shares[0].p_pub_i(), &ks[0]),
            Err(IbeError::KeyCheckFailed)
        );
        // A wrong share (another dealing's) spoils the combination.
        let (other, _) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let bad = KeyShare::new(2, extract(deal(&other, 2, 3).unwrap()[1].secret(), &id)).unwrap();
        let mixed = combine(&[ks[0].clone(), bad]).unwrap();
        assert_eq!(check_key(&params, &mixed), Err(IbeError::KeyCheckFailed));
        // Duplicated servers and mixed identities are refused.
        assert!(combine(&[ks[0].clone(), ks[0].clone()]).is_err());
        assert!(combine(&[]).is_err());
        let other_id = Identity::new(id.aor().clone(), Period::month("2026-12").unwrap());
        let o = KeyShare::new(2, extract(shares[1].secret(), &other_id)).unwrap();
        assert!(combine(&[ks[0].clone(), o]).is_err());
    }

    #[test]
    fn one_batch_combines_good_shares_and_names_every_bad_server() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let aor = Aor::parse("sip:alice@atlanta.com").unwrap();
        let ids: Vec<Identity> = ["2026-10", "2026-11", "2026-12"]
            .iter()
            .map(|p| Identity::new(aor.clone(), Period::month(p).unwrap()))
            .collect();
        let prepared: Vec<PreparedIdentity> = ids.iter().map(PreparedIdentity::new).collect();
        // Server k's shares of every period.
        let of = |k: usize| -> Vec<KeyShare> {
            ids.iter()
                .map(|id| {
                    KeyShare::new(shares[k].index(), extract(shares[k].secret(), id)).unwrap()
                })
                .collect()
        };
        let p: Vec<G1Affine> = shares.iter().map(MasterShare::p_pub_i).collect();
        let run = |a: &[KeyShare], ia: usize, b: &[KeyShare], ib: usize| {
            let servers = [
                ServerShares {
                    p_pub_i: &p[ia],
                    shares: a,
                },
                ServerShares {
                    p_pub_i: &p[ib],
                    shares: b,
                },
            ];
            combine_checked(&params, &servers, &prepared).unwrap()
        };
        let (s1, s2, s3) = (of(0), of(1), of(2));
        for (a, ia, b, ib) in [(&s1, 0, &s2, 1), (&s1, 0, &s3, 2), (&s3, 2, &s2, 1)] {
            let Combined::Keys(keys) = run(a, ia, b, ib) else {
                panic!("good shares refused")
            };
            for (k, id) in keys.iter().zip(&ids) {
                assert_eq!(k.d_enc_bytes(), extract(&msk, id).d_enc_bytes());
                assert_eq!(k.d_sig_bytes(), extract(&msk, id).d_sig_bytes());
            }
        }
        let shifted = |s: &KeyShare, x: G2Projective, sig: bool| {
            let (mut e, mut g) = (
                G2Projective::from(*s.keys.d_enc()),
                G2Projective::from(*s.keys.d_sig()),
            );
            if sig {
                g += x
            } else {
                e += x
            }
            KeyShare::new(
                s.index(),
                PrivateKeys::from_points(s.identity().clone(), e.into(), g.into()).unwrap(),
            )
            .unwrap()
        };
        let x = G2Projective::generator();
        // One wrong d_sig among good shares: server 2, period 2, named.
        let mut bad2 = s2.clone();
        bad2[1] = shifted(&s2[1], x, true);
        assert!(matches!(run(&s1, 0, &bad2, 1), Combined::Bad(b) if b == [(2, 1)]));
        // Both servers wrong in ways that cancel in the combination (the
        // combined keys are right) or in an unweighted sum: both named.
        let l = lagrange_at(&[1, 2], 0).unwrap();
        let inv = Option::<Scalar>::from(l[1].invert()).unwrap();
        let (mut c1, mut c2) = (s1.clone(), s2.clone());
        c1[0] = shifted(&s1[0], x, false);
        c2[0] = shifted(&s2[0], -(x * (l[0] * inv)), false);
        assert!(matches!(run(&c1, 0, &c2, 1), Combined::Bad(b) if b == [(1, 0), (2, 0)]));
        let (mut u1, mut u2) = (s1.clone(), s2.clone());
        u1[2] = shifted(&s1[2], x, true);
        u2[2] = shifted(&s2[2], -x, true);
        assert!(matches!(run(&u1, 0, &u2, 1), Combined::Bad(b) if b == [(1, 2), (2, 2)]));
        // A share that makes the combination the identity point: named.
        let mut zero = s2.clone();
        let d1 = G2Projective::from(*s1[0].keys.d_enc());
        let target = -(d1 * (l[0] * inv));
        zero[0] = shifted(
            &s2[0],
            target - G2Projective::from(*s2[0].keys.d_enc()),
            false,
        );
        assert!(matches!(run(&s1, 0, &zero, 1), Combined::Bad(b) if b == [(2, 0)]));
        // Server 3's good shares checked against server 1's P_pub_i: named.
        assert!(matches!(run(&s1, 0, &s3, 0), Combined::Bad(b) if b == [(3, 0)]));
        // Shares of another domain's identity: named, though they combine.
        let bob = Aor::parse("sip:alice@biloxi.com").unwrap();
        let foreign_ids: Vec<Identity> = ids
            .iter()
            .map(|i| Identity::new(bob.clone(), i.period().clone()))
            .collect();
        let foreign: Vec<PreparedIdentity> =
            foreign_ids.iter().map(PreparedIdentity::new).collect();
        let f = |k: usize| -> Vec<KeyShare> {
            foreign_ids
                .iter()
                .map(|id| {
                    KeyShare::new(shares[k].index(), extract(shares[k].secret(), id)).unwrap()
                })
                .collect()
        };
        let (f1, f2) = (f(0), f(1));
        let servers = [
            ServerShares {
                p_pub_i: &p[0],
                shares: &f1,
            },
            ServerShares {
                p_pub_i: &p[1],
                shares: &f2,
            },
        ];
        assert!(
            matches!(combine_checked(&params, &servers, &foreign).unwrap(), Combined::Bad(b) if b == [(1, 0), (2, 0)])
        );
        // Shapes: too few shares for the identities.
        let servers = [
            ServerShares {
                p_pub_i: &p[0],
                shares: &s1[..2],
            },
            ServerShares {
                p_pub_i: &p[1],
                shares: &s2,
            },
        ];
        assert!(combine_checked(&params, &servers, &prepared).is_err());
    }

    #[test]
    fn integer_lagrange_coefficients_match_the_field_ones() {
        for indices in [
            &[1u32, 2][..],
            &[1, 3],
            &[3, 2],
            &[2, 5, 7],
            &[1, 2, 3, 4],
            &[64, 63, 1],
        ] {
            let (nums, d) = lagrange_integers(indices).unwrap();
            let field = lagrange_at(indices, 0).unwrap();
            let inv = Option::<Scalar>::from(Scalar::from(d).invert()).unwrap();
            for (n, l) in nums.iter().zip(&field) {
                let mag = Scalar::from(u64::try_from(n.unsigned_abs()).unwrap());
                let signed = if *n < 0 { -mag } else { mag };
                assert_eq!(signed * inv, *l, "{indices:?}");
            }
        }
        assert_eq!(lagrange_integers(&[1, 2]).unwrap(), (vec![2, -1], 1));
        assert_eq!(lagrange_integers(&[1, 3]).unwrap(), (vec![3, -1], 2));
        // Too many large indices: None (combine then multiplies in full).
        let many: Vec<u32> = (40..=64).collect();
        assert!(lagrange_integers(&many).is_none());
        // ... and the combination is still the key.
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 25, 64).unwrap();
        let pick: Vec<usize> = (39..64).collect();
        let key = combine(&shares_of(&shares, &pick, &id())).unwrap();
        check_key(&params, &key).unwrap();
        assert_eq!(key.d_sig_bytes(), extract(&msk, &id()).d_sig_bytes());
    }

    #[test]
    fn public_shares_off_the_polynomial_are_refused() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let mut points: Vec<_> = shares.iter().map(|s| (s.index(), s.p_pub_i())).collect();
        check_public_shares(&params.p_pub(), 2, &points).unwrap();
        // Another p_pub.
        let (_, other) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        assert!(check_public_shares(&other.p_pub(), 2, &points).is_err());
        // The third share replaced: the first two still give p_pub, but the
        // third is off their line.
        let (o, _) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        points[2].1 = o.p_pub();
        let e = check_public_shares(&params.p_pub(), 2, &points).unwrap_err();
        assert!(e.to_string().contains("server 3"), "{e}");
        // Bad shapes.
        points[2] = (1, shares[0].p_pub_i());
        assert!(check_public_shares(&params.p_pub(), 2, &points).is_err());
        assert!(check_public_shares(&params.p_pub(), 4, &points).is_err());
        assert!(check_public_shares(&params.p_pub(), 0, &points).is_err());
        assert!(deal(&msk, 3, 2).is_err());
        assert!(MasterShare::from_bytes(0, &msk.to_bytes()[..]).is_err());
        assert!(format!("{:?}", shares[0]).contains("[redacted]"));
    }

    #[test]
    fn threshold_member_round_trips_and_is_checked_on_parse() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let member = Threshold {
            t: 2,
            dealer: true,
            servers: shares
                .iter()
                .map(|s| ThresholdServer {
                    index: s.index(),
                    pkg_url: format!("https://pkg{}.atlanta.com", s.index()),
                    p_pub_i: s.p_pub_i(),
                    tls_sha256: [s.index() as u8; 32],
                })
                .collect(),
        };
        let p = params.clone().with_threshold(member.clone()).unwrap();
        let json = p.to_json();
        assert!(json.contains("\"dealer\": true"), "{json}");
        let back = PublicParams::from_json(&json).unwrap();
        assert_eq!(back.threshold(), Some(&member));
        assert_eq!(back.fingerprint(), params.fingerprint());
        // A document whose p_pub_i do not interpolate to p_pub is refused.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let (o, _) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        v["threshold"]["servers"][1]["p_pub_i"] = b64_encode(&o.p_pub().to_compressed()).into();
        let e = PublicParams::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("interpolate"), "{e}");
        v["threshold"]["servers"][1]["p_pub_i"] = "AAAA".into();
        assert!(PublicParams::from_json(&v.to_string()).is_err());
    }
}
