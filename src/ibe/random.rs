//! The one place that draws randomness for this layer.

use super::IbeError;
use bls12_381::Scalar;
use ff::Field;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Fills `buf` from the operating system's generator.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), IbeError> {
    getrandom::fill(buf).map_err(|_| IbeError::Rng)
}

/// A uniformly random non-zero scalar (64 random bytes reduced mod q, so the
/// bias is below 2^-128).
pub(crate) fn nonzero_scalar() -> Result<Scalar, IbeError> {
    loop {
        let mut wide = [0u8; 64];
        fill(&mut wide)?;
        let s = Scalar::from_bytes_wide(&wide);
        wide.zeroize();
        if !bool::from(s.ct_eq(&Scalar::ZERO)) {
            return Ok(s);
        }
    }
}

/// A uniformly random non-zero 128-bit integer (a batch check's weight).
pub(crate) fn nonzero_u128() -> Result<u128, IbeError> {
    loop {
        let mut b = [0u8; 16];
        fill(&mut b)?;
        let c = u128::from_le_bytes(b);
        if c != 0 {
            return Ok(c);
        }
    }
}
