//! Known-answer vectors of the media key agreement (spec section 6),
//! written to `tests/vectors/media-v1.json` for other implementations:
//! `cargo run --example gen-media-vectors > tests/vectors/media-v1.json`.
//! `tests/media_vectors.rs` checks the file against this generator and
//! recomputes every value from its inputs.

use super::keys::{derive_sending_key, DhKeyPair, MediaKeyError, Role, Sas, SdesKey, SrtpSuite};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn det(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(
            format!("IBESIP-V01 media vector {label} {i}").as_bytes(),
        ));
        i += 1;
    }
    out.truncate(len);
    out
}

fn det32(label: &str) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&det(label, 32));
    a
}

/// Builds the media known-answer document.
pub fn generate() -> Result<Value, MediaKeyError> {
    let mut vectors = Vec::new();
    for (i, suite) in [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80,
    ]
    .into_iter()
    .enumerate()
    {
        let caller_secret = det32(&format!("caller secret {i}"));
        let callee_secret = det32(&format!("callee secret {i}"));
        let caller = DhKeyPair::from_secret_bytes(caller_secret);
        let callee = DhKeyPair::from_secret_bytes(callee_secret);
        let shared = caller.agree(&callee.public_bytes())?;
        let len = suite.key_len() + suite.salt_len();
        let sdes_caller = SdesKey::from_bytes(suite, &det(&format!("sdes caller {i}"), len))?;
        let sdes_callee = SdesKey::from_bytes(suite, &det(&format!("sdes callee {i}"), len))?;
        let caller_send = derive_sending_key(&shared, &sdes_caller, Role::Caller);
        let callee_send = derive_sending_key(&shared, &sdes_callee, Role::Callee);
        // The caller made the offer.
        let sas = Sas::compute(&shared, &caller.public_bytes(), &callee.public_bytes());
        vectors.push(json!({
            "suite": suite.sdp_name(),
            "caller_x25519_secret": hex::encode(caller_secret),
            "caller_dh": hex::encode(caller.public_bytes()),
            "callee_x25519_secret": hex::encode(callee_secret),
            "callee_dh": hex::encode(callee.public_bytes()),
            "shared": hex::encode(&shared[..]),
            "sdes_caller": hex::encode(sdes_caller.as_bytes()),
            "sdes_callee": hex::encode(sdes_callee.as_bytes()),
            "caller_send_key_salt": hex::encode(caller_send.as_bytes()),
            "callee_send_key_salt": hex::encode(callee_send.as_bytes()),
            "sas_bits": format!("{:05x}", sas.bits()),
            "sas_base32": sas.to_base32(),
        }));
    }
    Ok(json!({"suite": "IBESIP-V01", "media": vectors}))
}
