//! Hash functions and domain separation tags of section 1.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve, HashToField};
use bls12_381::{G2Affine, G2Projective, Scalar};
use sha2::{Digest, Sha256};

/// DST of `Q_enc = hash_to_g2(ID, DST_ENC)`.
pub const DST_ENC: &[u8] = b"IBESIP-V01-CS01-with-BLS12381G2_XMD:SHA-256_SSWU_RO_ENC_";
/// DST of `Q_sig = hash_to_g2(ID, DST_SIG)`.
pub const DST_SIG: &[u8] = b"IBESIP-V01-CS01-with-BLS12381G2_XMD:SHA-256_SSWU_RO_SIG_";
/// DST of the Fujisaki-Okamoto scalar `r = hash_to_scalar(sigma || m, DST_H3)`.
pub const DST_H3: &[u8] = b"IBESIP-V01-H3";
/// DST of the signature scalar `h = hash_to_scalar(R || M, DST_HSIG)`.
pub const DST_HSIG: &[u8] = b"IBESIP-V01-HSIG";
/// Prefix of the mask `SHA-256(TAG_H2 || gt_bytes(K))`.
pub const TAG_H2: &[u8] = b"IBESIP-V01-H2";
/// Prefix of the mask `SHA-256(TAG_H4 || sigma)`.
pub const TAG_H4: &[u8] = b"IBESIP-V01-H4";

/// RFC 9380 `hash_to_field` into the scalar field (expand_message_xmd with
/// SHA-256, L = 48, count 1) of the concatenation of `parts`.
pub fn hash_to_scalar(parts: &[&[u8]], dst: &[u8]) -> Scalar {
    let mut out = [Scalar::zero()];
    <Scalar as HashToField>::hash_to_field::<ExpandMsgXmd<Sha256>, _>(
        parts.iter().copied(),
        dst,
        &mut out,
    );
    out[0]
}

/// RFC 9380 `hash_to_curve` to G2, suite `BLS12381G2_XMD:SHA-256_SSWU_RO_`.
pub fn hash_to_g2(msg: &[u8], dst: &[u8]) -> G2Affine {
    let p = <G2Projective as HashToCurve<ExpandMsgXmd<Sha256>>>::hash_to_curve([msg], dst);
    G2Affine::from(p)
}

/// `SHA-256(tag || data)`.
pub fn tagged_sha256(tag: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(data);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_to_scalar_concatenates_parts() {
        let a = hash_to_scalar(&[b"ab", b"cd"], DST_H3);
        let b = hash_to_scalar(&[b"abcd"], DST_H3);
        assert_eq!(a, b);
        assert_ne!(a, hash_to_scalar(&[b"abcd"], DST_HSIG));
    }

    #[test]
    fn hash_to_g2_separates_domains() {
        let e = hash_to_g2(b"sip:bob@biloxi.com#2026-11", DST_ENC);
        let s = hash_to_g2(b"sip:bob@biloxi.com#2026-11", DST_SIG);
        assert_ne!(e, s);
        assert!(bool::from(e.is_torsion_free()));
    }
}
