//! Known-answer vectors of the media key agreement (spec section 6),
//! written to `tests/vectors/media-v1.json` for other implementations:
//! `cargo run --example gen-media-vectors > tests/vectors/media-v1.json`.
//! `tests/it/media_vectors.rs` checks the file against this generator and
//! recomputes every value from its inputs.

use super::commit::{dh_commitment, RetainedSecret};
use super::keys::{derive_sending_key, DhKeyPair, MediaKeyError, Role, Sas, SdesKey, SrtpSuite};
use super::sdp_attrs::{b32_to_value, dh_to_value, DH_COMMIT, RS};
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
        // Version 1.1: the offer's commitment, this exchange's retained
        // secret, and the a=ibesip-rs proofs of a secret kept from an
        // earlier confirmed call (v = the raw 32 bytes of the value sent).
        let commit = dh_commitment(&caller.public_bytes());
        let retained =
            RetainedSecret::derive(&shared, &caller.public_bytes(), &callee.public_bytes());
        let previous = RetainedSecret::from_bytes(det32(&format!("previous rs {i}")));
        let offer_mac = previous.mac(&commit);
        let answer_mac = previous.mac(&callee.public_bytes());
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
            "caller_dh_commit": hex::encode(commit),
            "offer_attr_dh_commit": format!("a={}", b32_to_value(DH_COMMIT, &commit)),
            "answer_attr_dh": format!("a={}", dh_to_value(&callee.public_bytes())),
            "ack_header_ibesip_dh": format!("Ibesip-Dh: {}", &dh_to_value(&caller.public_bytes())["ibesip-dh:".len()..]),
            "retained": hex::encode(retained.as_bytes()),
            "previous_retained": hex::encode(previous.as_bytes()),
            "offer_rs_mac": hex::encode(offer_mac),
            "offer_attr_rs": format!("a={}", b32_to_value(RS, &offer_mac)),
            "answer_rs_mac": hex::encode(answer_mac),
            "answer_attr_rs": format!("a={}", b32_to_value(RS, &answer_mac)),
        }));
    }
    Ok(json!({"suite": "IBESIP-V01", "media": vectors}))
}
