//! Distributed key generation for a threshold provider without a dealer
//! (issue 16; pkg-api.md "Threshold provider"): Pedersen's joint Feldman
//! VSS over the scalar field of BLS12-381, the commitments in G1 (where
//! `P` and `P_pub` live).
//!
//! Each of the `n` servers `j` deals: a fresh random polynomial `f_j` of
//! degree `t-1`, the commitments `C_jk = a_jk * P` to its coefficients,
//! and the share `f_j(i)` for every server `i` ([`Dealing`]). Server `i`
//! checks every share it received against its dealer's commitments
//! (`f_j(i) * P == sum_k i^k * C_jk`), naming a dealer whose share fails,
//! and keeps `s_i = sum_j f_j(i)` ([`finish`]). The master secret
//! `s = sum_j f_j(0)` exists nowhere; everyone computes the same public
//! values from the commitments alone: `P_pub = sum_j C_j0` and every
//! `P_pub_m = sum_j sum_k m^k * C_jk`, so every server writes the same
//! parameters (and fingerprint).
//!
//! Sans-I/O: how dealings travel (files of an offline ceremony, shares
//! encrypted to each server) is the caller's business (`pkg-admin dkg`).
//! Known limit of joint Feldman (Gennaro et al. 1999): a dealer that sees
//! the others' commitments before choosing its own can bias `P_pub`; it
//! cannot learn `s`. The ceremony has every dealer commit its dealing in
//! one round, before any is shown to the others, which is what keeps the
//! bias out; the IBE security argument does not need a uniform `P_pub`.

use super::threshold::{MasterShare, MAX_SERVERS};
use super::{random, IbeError};
use bls12_381::{G1Affine, G1Projective, Scalar};
use ff::Field;
use group::Curve;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Why a key generation step was refused. Each names the dealer at fault
/// where there is one, so that the operators know whom to ask.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DkgError {
    /// `t`, `n` or an index outside `1 <= t <= n <= MAX_SERVERS`.
    #[error(
        "threshold {t} of {n} with server {index}: need 1 <= t <= n <= 64 and 1 <= index <= n"
    )]
    Shape {
        /// Shares needed.
        t: u32,
        /// Servers.
        n: u32,
        /// The index at fault.
        index: u32,
    },
    /// No dealing (or more than one) from this dealer.
    #[error("dealer {dealer}: {count} dealings received, exactly one needed")]
    Dealings {
        /// The dealer.
        dealer: u32,
        /// How many arrived.
        count: usize,
    },
    /// A dealing whose commitments are not `t` points other than the
    /// identity.
    #[error("dealer {dealer}: its commitments are not {t} valid points")]
    Commitments {
        /// The dealer.
        dealer: u32,
        /// Commitments expected.
        t: u32,
    },
    /// The share a dealer sent to us is not on its committed polynomial
    /// (or is not a scalar): the dealer cheated or the file was damaged.
    #[error("dealer {dealer} sent server {recipient} a share that does not match its commitments")]
    BadShare {
        /// The dealer at fault.
        dealer: u32,
        /// Us.
        recipient: u32,
    },
    /// Randomness failed, or the sum of the shares is zero (probability
    /// 2^-255).
    #[error("key generation failed: {0}")]
    Ibe(#[from] IbeError),
}

fn check_shape(t: u32, n: u32, index: u32) -> Result<(), DkgError> {
    if t == 0 || t > n || n > MAX_SERVERS || index == 0 || index > n {
        return Err(DkgError::Shape { t, n, index });
    }
    Ok(())
}

/// One server's dealing: the commitments to its polynomial (public) and
/// the shares `f(i)` for every server `i` (secret: each goes to its
/// server only). The coefficients are wiped as soon as the shares are
/// computed; the shares are wiped on drop.
pub struct Dealing {
    dealer: u32,
    commitments: Vec<G1Affine>,
    shares: Vec<Zeroizing<[u8; 32]>>,
}

impl core::fmt::Debug for Dealing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Dealing(dealer {}, [shares redacted])", self.dealer)
    }
}

impl Dealing {
    /// Server `dealer`'s dealing for a `t`-of-`n` provider, from fresh
    /// randomness.
    pub fn new(dealer: u32, t: u32, n: u32) -> Result<Self, DkgError> {
        check_shape(t, n, dealer)?;
        let mut coeffs = Vec::with_capacity(t as usize);
        for _ in 0..t {
            coeffs.push(random::nonzero_scalar()?);
        }
        let commitments = coeffs
            .iter()
            .map(|a| (G1Affine::generator() * a).to_affine())
            .collect();
        let shares = (1..=n)
            .map(|i| {
                let mut y = eval(&coeffs, Scalar::from(u64::from(i)));
                let bytes = Zeroizing::new(y.to_bytes());
                y.zeroize();
                bytes
            })
            .collect();
        coeffs.iter_mut().for_each(Zeroize::zeroize);
        Ok(Dealing {
            dealer,
            commitments,
            shares,
        })
    }

    /// The dealer's index.
    pub fn dealer(&self) -> u32 {
        self.dealer
    }

    /// `C_k = a_k * P`, `k = 0..t`: published to every server.
    pub fn commitments(&self) -> &[G1Affine] {
        &self.commitments
    }

    /// The share `f(recipient)` (32-byte scalar encoding), for
    /// `recipient` only; `None` outside `1..=n`.
    pub fn share_for(&self, recipient: u32) -> Option<&[u8; 32]> {
        let k = usize::try_from(recipient.checked_sub(1)?).ok()?;
        self.shares.get(k).map(|s| &**s)
    }
}

fn eval(coeffs: &[Scalar], x: Scalar) -> Scalar {
    coeffs.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
}

/// `sum_k x^k * C_k`: the committed polynomial's value at `x`, times `P`.
fn eval_in_exponent(commitments: &[G1Affine], x: u32) -> G1Projective {
    let x = Scalar::from(u64::from(x));
    commitments
        .iter()
        .rev()
        .fold(G1Projective::identity(), |acc, c| acc * x + c)
}

/// What server `recipient` received from one dealer: its commitments and
/// the share meant for `recipient` (decrypted by the caller).
pub struct Received {
    /// The dealer's index.
    pub dealer: u32,
    /// The dealer's commitments, `t` of them.
    pub commitments: Vec<G1Affine>,
    /// `f_dealer(recipient)`, 32-byte scalar encoding; wiped on drop.
    pub share: Zeroizing<[u8; 32]>,
}

/// The outcome of a key generation at one server.
#[derive(Debug)]
pub struct Generated {
    /// This server's share `s_i` of the master secret.
    pub share: MasterShare,
    /// `P_pub = s * P`, the provider's public key.
    pub p_pub: G1Affine,
    /// Every server's `P_pub_m` (`m = 1..=n`, in order).
    pub public_shares: Vec<(u32, G1Affine)>,
}

/// Checks that `commitments` are `t` points other than the identity.
fn check_commitments(dealer: u32, t: u32, commitments: &[G1Affine]) -> Result<(), DkgError> {
    let ok = commitments.len() == t as usize
        && commitments
            .iter()
            .all(|c| !bool::from(c.is_identity()) && bool::from(c.is_torsion_free()));
    if ok {
        Ok(())
    } else {
        Err(DkgError::Commitments { dealer, t })
    }
}

/// The public values of a key generation from every dealer's commitments
/// (`all[j]` for dealers in any order, each checked to be `t` points):
/// `P_pub` and every `P_pub_m`. Any server (or auditor) computes the same.
pub fn public_values(
    t: u32,
    n: u32,
    all: &[(u32, &[G1Affine])],
) -> Result<(G1Affine, Vec<(u32, G1Affine)>), DkgError> {
    check_shape(t, n, 1)?;
    for dealer in 1..=n {
        let count = all.iter().filter(|(d, _)| *d == dealer).count();
        if count != 1 {
            return Err(DkgError::Dealings { dealer, count });
        }
    }
    if let Some((dealer, _)) = all.iter().find(|(d, _)| *d == 0 || *d > n) {
        return Err(DkgError::Shape {
            t,
            n,
            index: *dealer,
        });
    }
    for (dealer, c) in all {
        check_commitments(*dealer, t, c)?;
    }
    let p_pub = all
        .iter()
        .fold(G1Projective::identity(), |acc, (_, c)| acc + c[0]);
    let public_shares = (1..=n)
        .map(|m| {
            let p = all.iter().fold(G1Projective::identity(), |acc, (_, c)| {
                acc + eval_in_exponent(c, m)
            });
            (m, p.to_affine())
        })
        .collect();
    Ok((p_pub.to_affine(), public_shares))
}

/// Server `own`'s last step: checks each received share against its
/// dealer's commitments (the first failing dealer is named), sums them
/// into `s_own`, and computes the public values. Exactly one dealing from
/// each of the `n` servers (ourselves included) is required: a missing or
/// disqualified dealer means the ceremony is run again without it.
pub fn finish(own: u32, t: u32, n: u32, received: &[Received]) -> Result<Generated, DkgError> {
    check_shape(t, n, own)?;
    let all: Vec<(u32, &[G1Affine])> = received
        .iter()
        .map(|r| (r.dealer, r.commitments.as_slice()))
        .collect();
    let (p_pub, public_shares) = public_values(t, n, &all)?;
    let mut sum = Scalar::ZERO;
    for r in received {
        let bad = DkgError::BadShare {
            dealer: r.dealer,
            recipient: own,
        };
        let Some(mut y) = Option::<Scalar>::from(Scalar::from_bytes(&r.share)) else {
            sum.zeroize();
            return Err(bad);
        };
        let committed = eval_in_exponent(&r.commitments, own);
        if G1Affine::generator() * y != committed {
            y.zeroize();
            sum.zeroize();
            return Err(bad);
        }
        sum += y;
        y.zeroize();
    }
    let bytes = Zeroizing::new(sum.to_bytes());
    sum.zeroize();
    let share = MasterShare::from_bytes(own, &*bytes)?;
    // Our share must match our public share (it does when every check
    // above passed: a cheap guard against a bug, not an attacker).
    let ours = public_shares
        .iter()
        .find(|(m, _)| *m == own)
        .map(|(_, p)| *p);
    if ours != Some(share.p_pub_i()) {
        return Err(DkgError::Ibe(IbeError::KeyCheckFailed));
    }
    Ok(Generated {
        share,
        p_pub,
        public_shares,
    })
}

/// The master secret interpolated from `t` shares. Only for tests and
/// audits of a finished ceremony: a running provider never does this.
#[cfg(test)]
fn recover(shares: &[&MasterShare]) -> super::keys::MasterSecret {
    let indices: Vec<u32> = shares.iter().map(|s| s.index()).collect();
    let lambdas = super::threshold::lagrange_at(&indices, 0).unwrap();
    let s = shares
        .iter()
        .zip(&lambdas)
        .fold(Scalar::ZERO, |acc, (share, l)| {
            acc + share.secret().scalar() * l
        });
    super::keys::MasterSecret::from_bytes(&s.to_bytes()).unwrap()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ibe::threshold::{check_public_shares, combine, KeyShare};
    use crate::ibe::{check_key, extract, Aor, Identity, Period, PublicParams};
    use proptest::prelude::*;

    /// Runs a whole ceremony; `tamper` may change what server 2 receives.
    fn ceremony(
        t: u32,
        n: u32,
        tamper: impl Fn(u32, &mut Received),
    ) -> Vec<Result<Generated, DkgError>> {
        let dealings: Vec<Dealing> = (1..=n).map(|j| Dealing::new(j, t, n).unwrap()).collect();
        (1..=n)
            .map(|i| {
                let received: Vec<Received> = dealings
                    .iter()
                    .map(|d| {
                        let mut r = Received {
                            dealer: d.dealer(),
                            commitments: d.commitments().to_vec(),
                            share: Zeroizing::new(*d.share_for(i).unwrap()),
                        };
                        tamper(i, &mut r);
                        r
                    })
                    .collect();
                finish(i, t, n, &received)
            })
            .collect()
    }

    #[test]
    fn every_server_gets_the_same_public_values_and_keys_combine() {
        let out: Vec<Generated> = ceremony(2, 3, |_, _| {})
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for g in &out[1..] {
            assert_eq!(g.p_pub, out[0].p_pub);
            assert_eq!(g.public_shares, out[0].public_shares);
        }
        check_public_shares(&out[0].p_pub, 2, &out[0].public_shares).unwrap();
        // A user's key from two servers' shares checks under P_pub.
        let aor = Aor::parse("sip:alice@atlanta.invalid").unwrap();
        let id = Identity::new(aor, Period::month_at(1_800_000_000));
        let params =
            PublicParams::new("atlanta.invalid", out[0].p_pub, "https://pkg.invalid").unwrap();
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let shares: Vec<KeyShare> = pair
                .iter()
                .map(|&k| {
                    KeyShare::new(out[k].share.index(), extract(out[k].share.secret(), &id))
                        .unwrap()
                })
                .collect();
            let keys = combine(&shares).unwrap();
            check_key(&params, &keys).unwrap();
        }
        // The secret the shares stand for is P_pub's discrete log.
        let s = recover(&[&out[0].share, &out[2].share]);
        assert_eq!(s.p_pub(), out[0].p_pub);
    }

    #[test]
    fn a_dealer_that_sends_a_bad_share_is_named() {
        let out = ceremony(2, 3, |i, r| {
            if i == 2 && r.dealer == 3 {
                r.share[0] ^= 1;
            }
        });
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(matches!(
            out[1],
            Err(DkgError::BadShare {
                dealer: 3,
                recipient: 2
            })
        ));
    }

    #[test]
    fn commitments_that_do_not_cover_the_share_are_caught() {
        // Dealer 1 commits to another polynomial than it shares from.
        let other = Dealing::new(1, 2, 3).unwrap();
        let out = ceremony(2, 3, |_, r| {
            if r.dealer == 1 {
                r.commitments = other.commitments().to_vec();
            }
        });
        for o in out {
            assert!(matches!(o, Err(DkgError::BadShare { dealer: 1, .. })));
        }
    }

    #[test]
    fn missing_duplicate_and_malformed_dealings_are_refused() {
        let d: Vec<Dealing> = (1..=3).map(|j| Dealing::new(j, 2, 3).unwrap()).collect();
        let rec = |d: &Dealing| Received {
            dealer: d.dealer(),
            commitments: d.commitments().to_vec(),
            share: Zeroizing::new(*d.share_for(1).unwrap()),
        };
        assert_eq!(
            finish(1, 2, 3, &[rec(&d[0]), rec(&d[1])]).unwrap_err(),
            DkgError::Dealings {
                dealer: 3,
                count: 0
            }
        );
        assert_eq!(
            finish(1, 2, 3, &[rec(&d[0]), rec(&d[1]), rec(&d[1]), rec(&d[2])]).unwrap_err(),
            DkgError::Dealings {
                dealer: 2,
                count: 2
            }
        );
        let mut short = rec(&d[2]);
        short.commitments.pop();
        assert_eq!(
            finish(1, 2, 3, &[rec(&d[0]), rec(&d[1]), short]).unwrap_err(),
            DkgError::Commitments { dealer: 3, t: 2 }
        );
        let mut neutral = rec(&d[2]);
        neutral.commitments[1] = G1Affine::identity();
        assert_eq!(
            finish(1, 2, 3, &[rec(&d[0]), rec(&d[1]), neutral]).unwrap_err(),
            DkgError::Commitments { dealer: 3, t: 2 }
        );
        assert!(matches!(
            Dealing::new(4, 2, 3),
            Err(DkgError::Shape { index: 4, .. })
        ));
        assert!(matches!(
            Dealing::new(1, 4, 3),
            Err(DkgError::Shape { t: 4, .. })
        ));
        assert!(d[0].share_for(0).is_none() && d[0].share_for(4).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// t-1 shares of a generated secret never reproduce it (their
        /// interpolation at 0 is not P_pub), t of them always do.
        #[test]
        fn fewer_than_t_shares_never_reproduce_the_secret(t in 2u32..4, extra in 0u32..2) {
            let n = t + extra;
            let out: Vec<Generated> = ceremony(t, n, |_, _| {})
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let all: Vec<&MasterShare> = out.iter().map(|g| &g.share).collect();
            prop_assert_eq!(recover(&all[..t as usize]).p_pub(), out[0].p_pub);
            prop_assert_ne!(recover(&all[..t as usize - 1]).p_pub(), out[0].p_pub);
        }
    }
}
