//! `tests/vectors/media-v1.json`: exactly what the generator writes, and
//! every derived value recomputed from the inputs in the file.

use ibephone::media::{derive_sending_key, DhKeyPair, Role, Sas, SdesKey, SrtpSuite};
use serde_json::Value;

const FILE: &str = include_str!("../vectors/media-v1.json");

fn hx(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap()).unwrap()
}

#[test]
fn file_is_current() {
    let text =
        serde_json::to_string_pretty(&ibephone::media::kat::generate().unwrap()).unwrap() + "\n";
    assert!(
        text == FILE,
        "stale: cargo run --example gen-media-vectors > tests/vectors/media-v1.json"
    );
}

#[test]
fn vectors_recompute() {
    let doc: Value = serde_json::from_str(FILE).unwrap();
    let vectors = doc["media"].as_array().unwrap();
    assert!(vectors.len() >= 3);
    for v in vectors {
        let suite = SrtpSuite::from_sdp_name(v["suite"].as_str().unwrap()).unwrap();
        let caller =
            DhKeyPair::from_secret_bytes(hx(v, "caller_x25519_secret").try_into().unwrap());
        let callee =
            DhKeyPair::from_secret_bytes(hx(v, "callee_x25519_secret").try_into().unwrap());
        assert_eq!(caller.public_bytes().to_vec(), hx(v, "caller_dh"));
        assert_eq!(callee.public_bytes().to_vec(), hx(v, "callee_dh"));
        let shared = callee.agree(&caller.public_bytes()).unwrap();
        assert_eq!(shared.to_vec(), hx(v, "shared"));
        let sdes_caller = SdesKey::from_bytes(suite, &hx(v, "sdes_caller")).unwrap();
        let sdes_callee = SdesKey::from_bytes(suite, &hx(v, "sdes_callee")).unwrap();
        assert_eq!(
            derive_sending_key(&shared, &sdes_caller, Role::Caller).as_bytes(),
            &hx(v, "caller_send_key_salt")[..]
        );
        assert_eq!(
            derive_sending_key(&shared, &sdes_callee, Role::Callee).as_bytes(),
            &hx(v, "callee_send_key_salt")[..]
        );
        let sas = Sas::compute(&shared, &caller.public_bytes(), &callee.public_bytes());
        assert_eq!(
            format!("{:05x}", sas.bits()),
            v["sas_bits"].as_str().unwrap()
        );
        assert_eq!(sas.to_base32(), v["sas_base32"].as_str().unwrap());
        version_1_1(v, &shared, &caller.public_bytes(), &callee.public_bytes());
    }
}

/// The values of spec 6 version 1.1, recomputed with the hash primitives
/// themselves (not the library's helpers), so the byte layout is pinned:
/// the commitment, the retained secret, and the `a=ibesip-rs` MACs over
/// the raw 32 bytes of the value sent in the same SDP.
fn version_1_1(v: &Value, shared: &[u8; 32], a: &[u8; 32], b: &[u8; 32]) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let commit = Sha256::new()
        .chain_update(b"IBESIP-V01 DH commit")
        .chain_update(a)
        .finalize();
    assert_eq!(commit.to_vec(), hx(v, "caller_dh_commit"));
    assert!(ibephone::media::commit::commitment_matches(
        &commit.into(),
        a
    ));
    assert!(!ibephone::media::commit::commitment_matches(
        &commit.into(),
        b
    ));
    assert_eq!(
        v["offer_attr_dh_commit"].as_str().unwrap(),
        format!("a=ibesip-dh-commit:{}", URL_SAFE_NO_PAD.encode(commit))
    );
    assert_eq!(
        v["answer_attr_dh"].as_str().unwrap(),
        format!("a=ibesip-dh:{}", URL_SAFE_NO_PAD.encode(b))
    );
    assert_eq!(
        v["ack_header_ibesip_dh"].as_str().unwrap(),
        format!("Ibesip-Dh: {}", URL_SAFE_NO_PAD.encode(a))
    );
    let mut salt = a.to_vec();
    salt.extend_from_slice(b);
    let mut rs = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(b"IBESIP-V01 retained", &mut rs)
        .unwrap();
    assert_eq!(rs.to_vec(), hx(v, "retained"));
    let lib = ibephone::media::commit::RetainedSecret::derive(shared, a, b);
    assert_eq!(lib.as_bytes(), &rs);
    let previous = hx(v, "previous_retained");
    let mac = |value: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&previous).unwrap();
        m.update(b"IBESIP-V01 rs");
        m.update(value);
        m.finalize().into_bytes().to_vec()
    };
    let offer_mac = mac(&commit);
    let answer_mac = mac(b);
    assert_eq!(offer_mac, hx(v, "offer_rs_mac"));
    assert_eq!(answer_mac, hx(v, "answer_rs_mac"));
    assert_eq!(
        v["offer_attr_rs"].as_str().unwrap(),
        format!("a=ibesip-rs:{}", URL_SAFE_NO_PAD.encode(&offer_mac))
    );
    assert_eq!(
        v["answer_attr_rs"].as_str().unwrap(),
        format!("a=ibesip-rs:{}", URL_SAFE_NO_PAD.encode(&answer_mac))
    );
    // v is the raw bytes, not the base64url text: a MAC over the text differs.
    let text = URL_SAFE_NO_PAD.encode(commit);
    assert_ne!(mac(text.as_bytes()), offer_mac);
}

/// RFC 7748 section 6.1: the X25519 Diffie-Hellman example.
#[test]
fn rfc7748_x25519() {
    let alice = DhKeyPair::from_secret_bytes(
        hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let bob_public =
        hex::decode("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f").unwrap();
    assert_eq!(
        hex::encode(alice.public_bytes()),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
    assert_eq!(
        hex::encode(&alice.agree(&bob_public).unwrap()[..]),
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    );
}
