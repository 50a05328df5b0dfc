//! Known-answer vectors of suite `IBESIP-V01` (sections 1-4), written to
//! `tests/vectors/ibe-v1.json` for other implementations.
//!
//! Regenerate with `cargo run --example gen-vectors > tests/vectors/ibe-v1.json`;
//! the test `tests/it/ibe_vectors.rs` checks that the file is exactly what this
//! module produces and, independently, recomputes every value in it.
//!
//! Everything is derived from fixed labels with SHA-256 / `hash_to_scalar`,
//! so the output is the same on every machine.

use super::bf::encrypt_with_sigma;
use super::encoding::gt_bytes;
use super::hash::{hash_to_g2, hash_to_scalar, DST_ENC, DST_SIG};
use super::{extract, Aor, IbeError, Identity, MasterSecret, Period, PublicParams, SigningKey};
use bls12_381::{pairing, G1Affine, G2Affine, Scalar};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// URI inputs and their canonical AOR (`None`: the input has no identity),
/// checked by the unit tests and written to the known-answer file.
pub const AOR_CASES: &[(&str, Option<&str>)] = &[
    ("sip:bob@biloxi.com", Some("sip:bob@biloxi.com")),
    ("sip:Bob@BILOXI.com", Some("sip:Bob@biloxi.com")),
    ("SIPS:alice@Atlanta.COM:5061", Some("sip:alice@atlanta.com")),
    (
        "sip:alice%20smith@atlanta.com",
        Some("sip:alice smith@atlanta.com"),
    ),
    ("sip:%61lice@atlanta.com", Some("sip:alice@atlanta.com")),
    (
        "sip:bob:secret@biloxi.com;transport=tcp",
        Some("sip:bob@biloxi.com"),
    ),
    (
        "sip:bob@biloxi.com;user=phone?subject=hi",
        Some("sip:bob@biloxi.com"),
    ),
    (
        "\"Bob Biloxi\" <sip:bob@biloxi.com:5060;transport=udp>;tag=1928301774",
        Some("sip:bob@biloxi.com"),
    ),
    (
        "<sips:carol@Chicago.Example.com>",
        Some("sip:carol@chicago.example.com"),
    ),
    (
        "sip:+1-212-555-1234@gw.atlanta.com",
        Some("sip:+1-212-555-1234@gw.atlanta.com"),
    ),
    ("sip:bob@[2001:DB8::1]:5060", Some("sip:bob@[2001:db8::1]")),
    (
        "sip:what?now@biloxi.com?subject=x",
        Some("sip:what?now@biloxi.com"),
    ),
    ("sip:biloxi.com", None),
    ("sip:@biloxi.com", None),
    ("tel:+1-212-555-1234", None),
    ("mailto:bob@biloxi.com", None),
    ("", None),
    ("garbage", None),
    ("sip:bob@", None),
    ("\"Bob\" <sip:bob@biloxi.com", None),
    ("sip:bo b@biloxi.com", None),
    ("sip:bob%ff@biloxi.com", None),
    ("sip:bob@bil oxi.com", None),
    ("sip:bob@biloxi.com:99999", None),
];

/// The identities of the vectors: (domain, user, period, message).
const VECTOR_CASES: &[(&str, &str, &str, &str)] = &[
    (
        "atlanta.com",
        "alice",
        "2026-11",
        "INVITE sip:bob@biloxi.com SIP/2.0",
    ),
    (
        "atlanta.com",
        "Alice",
        "2026-11",
        "case is kept in the user part",
    ),
    ("atlanta.com", "alice", "2026-12", "next period"),
    ("atlanta.com", "+1-404-555-0100", "2026-10", ""),
    ("biloxi.com", "bob", "2026-11", "SIP/2.0 200 OK"),
    (
        "biloxi.com",
        "carol smith",
        "2026-11",
        "percent-decoded user with a space",
    ),
    ("biloxi.com", "bob", "2027-01", "year boundary"),
];

/// A deterministic 32-byte value for `label`.
fn det_bytes(label: &str) -> [u8; 32] {
    Sha256::digest(format!("IBESIP-V01 test vector {label}").as_bytes()).into()
}

/// A deterministic non-zero scalar for `label`.
fn det_scalar(label: &str) -> Scalar {
    hash_to_scalar(&[label.as_bytes()], b"IBESIP-V01-TEST-VECTORS")
}

/// The master secret of a test domain.
pub fn master_secret(domain: &str) -> Result<MasterSecret, IbeError> {
    MasterSecret::from_bytes(&det_scalar(&format!("master secret {domain}")).to_bytes())
}

/// Builds the whole known-answer document.
pub fn generate() -> Result<Value, IbeError> {
    let gt = gt_bytes(&pairing(&G1Affine::generator(), &G2Affine::generator()));
    let aor_cases: Vec<Value> = AOR_CASES
        .iter()
        .map(|(uri, aor)| json!({"uri": uri, "aor": aor}))
        .collect();
    let mut vectors = Vec::new();
    for (i, (domain, user, period, message)) in VECTOR_CASES.iter().enumerate() {
        let msk = master_secret(domain)?;
        let params = PublicParams::new(domain, msk.p_pub(), &format!("https://pkg.{domain}:8443"))?;
        let aor = Aor::parse(&format!("sip:{}@{domain}", user.replace(' ', "%20")))?;
        let id = Identity::new(aor, Period::month(period)?);
        let keys = extract(&msk, &id);
        let sigma = det_bytes(&format!("sigma {i}"));
        let m = det_bytes(&format!("m {i}"));
        let k = det_scalar(&format!("k {i}"));
        let ct = encrypt_with_sigma(&params, &id, &m, &sigma)?;
        let sig = SigningKey::new(&keys).sign_with_k(message.as_bytes(), &k)?;
        vectors.push(json!({
            "domain": domain,
            "master_secret": hex::encode(&msk.to_bytes()[..]),
            "p_pub": hex::encode(params.p_pub().to_compressed()),
            "fingerprint": params.fingerprint_display(),
            "aor": id.aor().as_str(),
            "period": id.period().as_str(),
            "id": id.as_str(),
            "q_enc": hex::encode(hash_to_g2(id.as_str().as_bytes(), DST_ENC).to_compressed()),
            "d_enc": hex::encode(&keys.d_enc_bytes()[..]),
            "q_sig": hex::encode(hash_to_g2(id.as_str().as_bytes(), DST_SIG).to_compressed()),
            "d_sig": hex::encode(&keys.d_sig_bytes()[..]),
            "sigma": hex::encode(sigma),
            "m": hex::encode(m),
            "ciphertext": hex::encode(ct.to_bytes()),
            "k": hex::encode(k.to_bytes()),
            "message": hex::encode(message.as_bytes()),
            "signature": hex::encode(sig.to_bytes()),
        }));
    }
    Ok(json!({
        "suite": super::SUITE,
        "gt_generator": hex::encode(gt),
        "aor_cases": aor_cases,
        "vectors": vectors,
    }))
}
