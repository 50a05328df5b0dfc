//! Constant-time fixed-base scalar multiplication with 4-bit windows.
//!
//! A table for base `B` holds, for each of the 64 nibbles of a scalar, the
//! 16 multiples `j * 16^i * B`. Multiplying by `s` then costs 64 additions
//! instead of ~255 doublings and ~255 additions. Scalars and keys are secret,
//! so each row is read by selecting *every* entry with
//! `ConditionallySelectable` (never by a secret index) and the loop runs the
//! same 64 steps for every scalar.
//!
//! Memory per table (64 x 16 entries): G1 104 B/entry (~104 KiB), G2 200 B/entry
//! (~200 KiB), GT 576 B/entry (~576 KiB).

use bls12_381::{G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar};
use core::fmt;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroize;

const WINDOW_BITS: usize = 4;
const ROW_LEN: usize = 1 << WINDOW_BITS;
const ROWS: usize = 256 / WINDOW_BITS;

/// A group that can be used with [`FixedBaseTable`]: `Self` is the
/// accumulator form, `Entry` the (normalized) stored form.
pub trait TableGroup: Copy {
    /// Stored table entry.
    type Entry: Copy + Default + ConditionallySelectable + Zeroize;
    /// The neutral element.
    fn neutral() -> Self;
    /// `self + e`.
    fn add_entry(&self, e: &Self::Entry) -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `2 * self`.
    fn double(&self) -> Self;
    /// Converts accumulators to entries (one batched inversion for points).
    fn normalize(points: &[Self]) -> Vec<Self::Entry>;
}

impl TableGroup for G1Projective {
    type Entry = G1Affine;
    fn neutral() -> Self {
        G1Projective::identity()
    }
    fn add_entry(&self, e: &G1Affine) -> Self {
        self.add_mixed(e)
    }
    fn add(&self, other: &Self) -> Self {
        G1Projective::add(self, other)
    }
    fn double(&self) -> Self {
        G1Projective::double(self)
    }
    fn normalize(points: &[Self]) -> Vec<G1Affine> {
        let mut out = vec![G1Affine::identity(); points.len()];
        G1Projective::batch_normalize(points, &mut out);
        out
    }
}

impl TableGroup for G2Projective {
    type Entry = G2Affine;
    fn neutral() -> Self {
        G2Projective::identity()
    }
    fn add_entry(&self, e: &G2Affine) -> Self {
        self.add_mixed(e)
    }
    fn add(&self, other: &Self) -> Self {
        G2Projective::add(self, other)
    }
    fn double(&self) -> Self {
        G2Projective::double(self)
    }
    fn normalize(points: &[Self]) -> Vec<G2Affine> {
        let mut out = vec![G2Affine::identity(); points.len()];
        G2Projective::batch_normalize(points, &mut out);
        out
    }
}

impl TableGroup for Gt {
    type Entry = Gt;
    fn neutral() -> Self {
        Gt::identity()
    }
    fn add_entry(&self, e: &Gt) -> Self {
        self + e
    }
    fn add(&self, other: &Self) -> Self {
        self + other
    }
    fn double(&self) -> Self {
        Gt::double(self)
    }
    fn normalize(points: &[Self]) -> Vec<Gt> {
        points.to_vec()
    }
}

/// Precomputed multiples of one base; see the module documentation. Entries
/// are wiped on drop (tables of private keys are secrets) and never printed.
pub struct FixedBaseTable<G: TableGroup> {
    entries: Vec<G::Entry>,
}

impl<G: TableGroup> FixedBaseTable<G> {
    /// Builds the table of `base`.
    pub fn new(base: &G) -> Self {
        let mut acc = Vec::with_capacity(ROWS * ROW_LEN);
        let mut row_base = *base;
        for _ in 0..ROWS {
            let mut multiple = G::neutral();
            for _ in 0..ROW_LEN {
                acc.push(multiple);
                multiple = multiple.add(&row_base);
            }
            for _ in 0..WINDOW_BITS {
                row_base = row_base.double();
            }
        }
        FixedBaseTable {
            entries: G::normalize(&acc),
        }
    }

    /// `s * base`, in constant time with respect to `s`.
    pub fn mul(&self, s: &Scalar) -> G {
        let mut bytes = s.to_bytes();
        let mut acc = G::neutral();
        for (row_index, row) in self.entries.chunks_exact(ROW_LEN).enumerate() {
            let byte = bytes[row_index / 2];
            let nibble = if row_index % 2 == 0 {
                byte & 0x0f
            } else {
                byte >> 4
            };
            let mut chosen = G::Entry::default();
            for (j, entry) in row.iter().enumerate() {
                chosen.conditional_assign(entry, (j as u8).ct_eq(&nibble));
            }
            acc = acc.add_entry(&chosen);
            chosen.zeroize();
        }
        bytes.zeroize();
        acc
    }

    /// Approximate heap memory of the table in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * core::mem::size_of::<G::Entry>()
    }
}

impl<G: TableGroup> Drop for FixedBaseTable<G> {
    fn drop(&mut self) {
        self.entries.zeroize();
    }
}

impl<G: TableGroup> fmt::Debug for FixedBaseTable<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedBaseTable([redacted])")
    }
}

/// The table of the G1 generator `P`, built once per process.
pub fn generator_g1() -> &'static FixedBaseTable<G1Projective> {
    static TABLE: std::sync::OnceLock<FixedBaseTable<G1Projective>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| FixedBaseTable::new(&G1Projective::generator()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bls12_381::pairing;
    use ff::Field;
    use proptest::prelude::*;

    fn scalar_from(seed: [u8; 32]) -> Scalar {
        let mut wide = [0u8; 64];
        wide[..32].copy_from_slice(&seed);
        wide[32..].copy_from_slice(&seed);
        Scalar::from_bytes_wide(&wide)
    }

    #[test]
    fn edge_scalars() {
        let t = FixedBaseTable::new(&G1Projective::generator());
        assert_eq!(t.mul(&Scalar::ZERO), G1Projective::identity());
        assert_eq!(t.mul(&Scalar::ONE), G1Projective::generator());
        let minus_one = -Scalar::ONE;
        assert_eq!(t.mul(&minus_one), -G1Projective::generator());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn g1_table_matches_textbook(seed in any::<[u8; 32]>()) {
            let s = scalar_from(seed);
            let base = G1Projective::generator() * scalar_from([7u8; 32]);
            prop_assert_eq!(FixedBaseTable::new(&base).mul(&s), base * s);
            prop_assert_eq!(generator_g1().mul(&s), G1Projective::generator() * s);
        }

        #[test]
        fn g2_table_matches_textbook(seed in any::<[u8; 32]>()) {
            let s = scalar_from(seed);
            let base = G2Projective::generator() * scalar_from([9u8; 32]);
            prop_assert_eq!(FixedBaseTable::new(&base).mul(&s), base * s);
        }

        #[test]
        fn gt_table_matches_textbook(seed in any::<[u8; 32]>()) {
            let s = scalar_from(seed);
            let g = pairing(&G1Affine::generator(), &G2Affine::generator());
            prop_assert_eq!(FixedBaseTable::new(&g).mul(&s), g * s);
        }
    }
}
