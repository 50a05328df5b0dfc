//! Constant-time fixed-base scalar multiplication with signed 5-bit windows.
//!
//! A scalar is recoded into 52 signed digits `d_i` in `[-16, 15]` (base 32,
//! constant-time carry propagation). The table for base `B` holds, for each
//! digit position, the 17 multiples `j * 32^i * B` for `j = 0..=16`;
//! multiplying by `s` then costs 52 additions instead of ~255 doublings and
//! ~255 additions. Scalars and keys are secret, so each row is read by
//! selecting *every* entry with `ConditionallySelectable` (never by a secret
//! index), the sign is applied with a conditional negation, and the loop
//! runs the same 52 steps for every scalar.
//!
//! Memory per table (52 x 17 entries): G1 104 B/entry (~90 KiB), G2 200 B/entry
//! (~173 KiB), GT 576 B/entry (~497 KiB).

use bls12_381::{G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar};
use core::fmt;
use subtle::{Choice, ConditionallyNegatable, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroize;

const WINDOW_BITS: usize = 5;
/// Entries per row: `0..=2^(w-1)`.
const ROW_LEN: usize = (1 << (WINDOW_BITS - 1)) + 1;
/// Digits of a 255-bit scalar plus the final carry.
const ROWS: usize = 255 / WINDOW_BITS + 1;

/// A group that can be used with [`FixedBaseTable`]: `Self` is the
/// accumulator form, `Entry` the (normalized) stored form.
pub trait TableGroup: Copy {
    /// Stored table entry.
    type Entry: Copy + Default + ConditionallySelectable + ConditionallyNegatable + Zeroize;
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
        let mut digits = signed_digits(s);
        let mut acc = G::neutral();
        for (row, &digit) in self.entries.chunks_exact(ROW_LEN).zip(digits.iter()) {
            acc = add_signed_entry::<G>(&acc, row, digit);
        }
        digits.zeroize();
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

/// `acc + digit * B` where `row[j] = j * B`: selects every entry of the row
/// (no secret index) and applies the sign by a conditional negation.
fn add_signed_entry<G: TableGroup>(acc: &G, row: &[G::Entry], digit: i8) -> G {
    let negative = ((digit as u8) >> 7) & 1;
    let magnitude = ((digit as u8) ^ 0u8.wrapping_sub(negative)).wrapping_add(negative);
    let mut chosen = G::Entry::default();
    for (j, entry) in row.iter().enumerate() {
        chosen.conditional_assign(entry, (j as u8).ct_eq(&magnitude));
    }
    chosen.conditional_negate(Choice::from(negative));
    let sum = acc.add_entry(&chosen);
    chosen.zeroize();
    sum
}

/// `s * base` for a base used once (no stored table), in constant time
/// with respect to `s`: 17 multiples of `base` are computed on the fly,
/// then Horner's rule over the signed base-32 digits costs 255 doublings
/// and 52 additions, against ~255 additions more for double-and-add.
pub fn mul_variable_base<G: TableGroup>(base: &G, s: &Scalar) -> G {
    let mut multiples = Vec::with_capacity(ROW_LEN);
    let mut m = G::neutral();
    for _ in 0..ROW_LEN {
        multiples.push(m);
        m = m.add(base);
    }
    let mut row = G::normalize(&multiples);
    let mut digits = signed_digits(s);
    let mut acc = G::neutral();
    for &digit in digits.iter().rev() {
        for _ in 0..WINDOW_BITS {
            acc = acc.double();
        }
        acc = add_signed_entry::<G>(&acc, &row, digit);
    }
    digits.zeroize();
    row.zeroize();
    acc
}

/// Recodes `s` (< 2^255) into `ROWS` signed base-32 digits in `[-16, 15]`
/// with `s = sum d_i 32^i`, without secret-dependent branches or indices.
fn signed_digits(s: &Scalar) -> [i8; ROWS] {
    let mut bytes = s.to_bytes();
    let mut digits = [0i8; ROWS];
    let mut carry = 0u8;
    for (i, digit) in digits.iter_mut().enumerate().take(ROWS - 1) {
        let bit = i * WINDOW_BITS;
        let lo = u16::from(bytes[bit / 8]);
        let hi = u16::from(*bytes.get(bit / 8 + 1).unwrap_or(&0));
        let window = (((lo | (hi << 8)) >> (bit % 8)) & 0x1f) as u8;
        let d = window + carry; // 0..=32
        carry = (d + 16) >> 5; // 1 when d >= 16
        *digit = (d as i8).wrapping_sub((carry << 5) as i8);
    }
    digits[ROWS - 1] = carry as i8;
    bytes.zeroize();
    digits
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
    fn signed_digits_reconstruct_the_scalar() {
        for s in [
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            scalar_from([0xff; 32]),
            scalar_from([0x10; 32]),
        ] {
            let digits = signed_digits(&s);
            let mut acc = Scalar::ZERO;
            let base = Scalar::from(32u64);
            for &d in digits.iter().rev() {
                assert!((-16..=16).contains(&d));
                let term = if d < 0 {
                    -Scalar::from(u64::from(d.unsigned_abs()))
                } else {
                    Scalar::from(d as u64)
                };
                acc = acc * base + term;
            }
            assert_eq!(acc, s);
        }
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
        fn variable_base_matches_textbook(seed in any::<[u8; 32]>()) {
            let s = scalar_from(seed);
            let g2 = G2Projective::generator() * scalar_from([5u8; 32]);
            prop_assert_eq!(mul_variable_base(&g2, &s), g2 * s);
            let g1 = G1Projective::generator() * scalar_from([6u8; 32]);
            prop_assert_eq!(mul_variable_base(&g1, &s), g1 * s);
        }

        #[test]
        fn gt_table_matches_textbook(seed in any::<[u8; 32]>()) {
            let s = scalar_from(seed);
            let g = pairing(&G1Affine::generator(), &G2Affine::generator());
            prop_assert_eq!(FixedBaseTable::new(&g).mul(&s), g * s);
        }
    }
}
