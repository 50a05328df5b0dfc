//! Byte encodings of section 1: compressed G1 (48) and G2 (96) points,
//! little-endian scalars (32), the 576-byte GT encoding, and base64url
//! without padding for JSON members.

use super::IbeError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bls12_381::{G1Affine, G2Affine, Gt, Scalar};
use core::fmt::Write;

/// Length of a compressed G1 point.
pub const G1_LEN: usize = 48;
/// Length of a compressed G2 point.
pub const G2_LEN: usize = 96;
/// Length of a scalar.
pub const SCALAR_LEN: usize = 32;
/// Length of a GT element (twelve 48-byte base-field coefficients).
pub const GT_LEN: usize = 576;

fn fixed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], IbeError> {
    bytes.try_into().map_err(|_| IbeError::InvalidLength {
        what,
        expected: N,
        got: bytes.len(),
    })
}

/// Decodes a compressed G1 point; rejects wrong lengths, non-canonical or
/// off-curve encodings and points outside the prime-order subgroup. The
/// identity is accepted here; see [`g1_from_bytes_nonidentity`].
pub fn g1_from_bytes(what: &'static str, bytes: &[u8]) -> Result<G1Affine, IbeError> {
    let arr = fixed::<G1_LEN>(what, bytes)?;
    Option::from(G1Affine::from_compressed(&arr)).ok_or(IbeError::InvalidPoint(what))
}

/// As [`g1_from_bytes`], and also rejects the identity point.
pub fn g1_from_bytes_nonidentity(what: &'static str, bytes: &[u8]) -> Result<G1Affine, IbeError> {
    let p = g1_from_bytes(what, bytes)?;
    if bool::from(p.is_identity()) {
        return Err(IbeError::IdentityPoint(what));
    }
    Ok(p)
}

/// Decodes a compressed G2 point with the same checks as [`g1_from_bytes`].
pub fn g2_from_bytes(what: &'static str, bytes: &[u8]) -> Result<G2Affine, IbeError> {
    let arr = fixed::<G2_LEN>(what, bytes)?;
    Option::from(G2Affine::from_compressed(&arr)).ok_or(IbeError::InvalidPoint(what))
}

/// As [`g2_from_bytes`], and also rejects the identity point.
pub fn g2_from_bytes_nonidentity(what: &'static str, bytes: &[u8]) -> Result<G2Affine, IbeError> {
    let p = g2_from_bytes(what, bytes)?;
    if bool::from(p.is_identity()) {
        return Err(IbeError::IdentityPoint(what));
    }
    Ok(p)
}

/// Decodes a canonical little-endian scalar (any value, zero included).
pub fn scalar_from_bytes(what: &'static str, bytes: &[u8]) -> Result<Scalar, IbeError> {
    let arr = fixed::<SCALAR_LEN>(what, bytes)?;
    Option::from(Scalar::from_bytes(&arr)).ok_or(IbeError::InvalidScalar("not canonical"))
}

/// Decodes a canonical non-zero scalar.
pub fn nonzero_scalar_from_bytes(what: &'static str, bytes: &[u8]) -> Result<Scalar, IbeError> {
    let s = scalar_from_bytes(what, bytes)?;
    if s == Scalar::zero() {
        return Err(IbeError::InvalidScalar("zero"));
    }
    Ok(s)
}

/// Writes `gt_bytes(x)` of section 1: the twelve Fp coefficients in tower
/// order, each 48 bytes big-endian.
///
/// The crate has no GT encoder, but its `Debug` output prints exactly these
/// twelve coefficients in this order as `0x` + 96 hex digits (spec section
/// 1); this parses them out of a stack-free streaming formatter. The test
/// `gt_generator_known_value` pins the result to a known value so a change in
/// the crate's formatting cannot go unnoticed.
pub fn gt_bytes(x: &Gt) -> [u8; GT_LEN] {
    let mut sink = GtSink::default();
    // Formatting into our own sink cannot fail except through the sink.
    let _ = write!(sink, "{x:?}");
    debug_assert_eq!(sink.written, GT_LEN * 2, "GT debug format changed");
    sink.out
}

/// Collects the hex digits that follow each `0x` in a formatted GT value.
struct GtSink {
    out: [u8; GT_LEN],
    /// Hex digits written so far.
    written: usize,
    /// Digits left in the current coefficient (0 when between coefficients).
    remaining: usize,
    /// Previous character was a `0` that may start `0x`.
    saw_zero: bool,
}

impl Default for GtSink {
    fn default() -> Self {
        Self {
            out: [0u8; GT_LEN],
            written: 0,
            remaining: 0,
            saw_zero: false,
        }
    }
}

impl Write for GtSink {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.bytes() {
            if self.remaining > 0 {
                let v = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => return Err(core::fmt::Error),
                };
                if self.written >= GT_LEN * 2 {
                    return Err(core::fmt::Error);
                }
                let i = self.written / 2;
                if self.written.is_multiple_of(2) {
                    self.out[i] = v << 4;
                } else {
                    self.out[i] |= v;
                }
                self.written += 1;
                self.remaining -= 1;
            } else if self.saw_zero && c == b'x' {
                self.remaining = 96;
                self.saw_zero = false;
            } else {
                self.saw_zero = c == b'0';
            }
        }
        Ok(())
    }
}

/// base64url without padding (the JSON encoding of binary values).
pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `what` names the value in the error.
pub fn b64_decode(what: &'static str, s: &str) -> Result<Vec<u8>, IbeError> {
    URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(|_| IbeError::InvalidParams(format!("{what} is not base64url without padding")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bls12_381::{pairing, G1Projective, G2Projective};

    /// gt_bytes(e(P, Q)) for the two standard generators. Computed once with
    /// this function and cross-checked by hand against the crate's `Debug`
    /// string (first and last coefficient below); any change to the crate's
    /// formatting or to the tower order breaks this test.
    #[test]
    fn gt_generator_known_value() {
        let g = pairing(&G1Affine::generator(), &G2Affine::generator());
        let b = gt_bytes(&g);
        let dbg = format!("{g:?}");
        // The first coefficient c0.c0.c0 and the last c1.c2.c1 as printed.
        let first = &dbg[dbg.find("0x").unwrap() + 2..][..96];
        let last_start = dbg.rfind("0x").unwrap() + 2;
        let last = &dbg[last_start..last_start + 96];
        assert_eq!(hex::encode(&b[..48]), first);
        assert_eq!(hex::encode(&b[528..]), last);
        assert_eq!(
            hex::encode(&b[..48]),
            "1250ebd871fc0a92a7b2d83168d0d727272d441befa15c503dd8e90ce98db3e7b6d194f60839c508a84305aaca1789b6"
        );
    }

    #[test]
    fn gt_bytes_distinguishes_elements() {
        let g = pairing(&G1Affine::generator(), &G2Affine::generator());
        assert_ne!(gt_bytes(&g), gt_bytes(&(g + g)));
        assert_ne!(gt_bytes(&g), gt_bytes(&Gt::identity()));
        let one = gt_bytes(&Gt::identity());
        // The identity is 1: only c0.c0.c0 is one.
        assert_eq!(one[47], 1);
        assert!(one.iter().enumerate().all(|(i, &v)| i == 47 || v == 0));
    }

    #[test]
    fn decoders_reject_bad_points() {
        let g1 = G1Affine::from(G1Projective::generator()).to_compressed();
        assert!(g1_from_bytes("t", &g1).is_ok());
        assert!(matches!(
            g1_from_bytes("t", &g1[..47]),
            Err(IbeError::InvalidLength { .. })
        ));
        let mut bad = g1;
        bad[47] ^= 1;
        assert!(g1_from_bytes("t", &bad).is_err());
        let id = G1Affine::identity().to_compressed();
        assert!(g1_from_bytes("t", &id).is_ok());
        assert_eq!(
            g1_from_bytes_nonidentity("t", &id),
            Err(IbeError::IdentityPoint("t"))
        );
        let g2 = G2Affine::from(G2Projective::generator()).to_compressed();
        assert!(g2_from_bytes_nonidentity("t", &g2).is_ok());
        let id2 = G2Affine::identity().to_compressed();
        assert!(g2_from_bytes_nonidentity("t", &id2).is_err());
        // Compression flag cleared: an uncompressed-style header is rejected.
        let mut flag = g2;
        flag[0] &= 0x7f;
        assert!(g2_from_bytes("t", &flag).is_err());
    }

    #[test]
    fn scalar_decoding() {
        assert!(scalar_from_bytes("s", &[0u8; 32]).is_ok());
        assert!(nonzero_scalar_from_bytes("s", &[0u8; 32]).is_err());
        assert!(scalar_from_bytes("s", &[0xffu8; 32]).is_err());
        assert!(scalar_from_bytes("s", &[1u8; 31]).is_err());
    }
}
