//! Multi-scalar multiplication with short public scalars (Straus'
//! interleaved windows), for random-weighted batch checks: `sum c_i * B_i`
//! with 128-bit weights `c_i` costs 128 doublings shared by all terms,
//! plus 32 additions and a 14-addition table per term, instead of 255
//! doublings and additions per term.
//!
//! Variable time in the scalars only: the group operations of
//! `bls12_381` are constant time in the points, so the bases (which may be
//! key shares) do not influence the timing; the weights are fresh random
//! values used once, after the points they weigh were received. The tables
//! hold multiples of the bases and are wiped before returning.

use group::Group;
use zeroize::Zeroize;

/// Bits per window.
const W: u32 = 4;
/// Windows of a 128-bit scalar.
const WINDOWS: u32 = 128 / W;

/// `sum c * B` over `terms` (`(B, c)`); the identity for no terms.
pub(crate) fn msm_u128<G: Group + Zeroize>(terms: &[(G, u128)]) -> G {
    // tables[k][j] = j * B_k for j in 0..16.
    let mut tables: Vec<[G; 1 << W]> = terms
        .iter()
        .map(|(b, _)| {
            let mut row = [G::identity(); 1 << W];
            for j in 1..row.len() {
                row[j] = row[j - 1] + b;
            }
            row
        })
        .collect();
    let mut acc = G::identity();
    let mut started = false;
    for w in (0..WINDOWS).rev() {
        if started {
            for _ in 0..W {
                acc = acc.double();
            }
        }
        for (row, (_, c)) in tables.iter().zip(terms) {
            let digit = ((c >> (w * W)) & ((1 << W) - 1)) as usize;
            if digit != 0 {
                acc += row[digit];
                started = true;
            }
        }
    }
    for row in &mut tables {
        row.iter_mut().for_each(Zeroize::zeroize);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use bls12_381::{G1Projective, G2Projective, Scalar};

    fn scalar(c: u128) -> Scalar {
        Scalar::from_raw([c as u64, (c >> 64) as u64, 0, 0])
    }

    #[test]
    fn agrees_with_scalar_multiplication() {
        let g1 = G1Projective::generator();
        let g2 = G2Projective::generator();
        let weights: [u128; 4] = [0, 1, 0x8000_0000_0000_0000_0000_0000_0000_0001, u128::MAX];
        let b1: Vec<G1Projective> = (1..=4u64).map(|k| g1 * Scalar::from(k * 7 + 3)).collect();
        let b2: Vec<G2Projective> = (1..=4u64).map(|k| g2 * Scalar::from(k * 5 + 1)).collect();
        let t1: Vec<(G1Projective, u128)> = b1.iter().copied().zip(weights).collect();
        let t2: Vec<(G2Projective, u128)> = b2.iter().copied().zip(weights).collect();
        let e1 = b1
            .iter()
            .zip(weights)
            .fold(G1Projective::identity(), |a, (b, c)| a + b * scalar(c));
        let e2 = b2
            .iter()
            .zip(weights)
            .fold(G2Projective::identity(), |a, (b, c)| a + b * scalar(c));
        assert_eq!(msm_u128(&t1), e1);
        assert_eq!(msm_u128(&t2), e2);
        assert_eq!(msm_u128::<G1Projective>(&[]), G1Projective::identity());
        assert_eq!(msm_u128(&[(g1, 0)]), G1Projective::identity());
        assert_eq!(msm_u128(&[(g2, 1)]), g2);
    }
}
