//! The known-answer file `tests/vectors/ibe-v1.json`: it is exactly what the
//! generator writes, and every value in it is recomputed here from its
//! inputs through the public API (fast paths included).

use ibephone::ibe::encoding::gt_bytes;
use ibephone::ibe::hash::{hash_to_g2, DST_ENC, DST_SIG};
use ibephone::ibe::{bf, cc, extract, Aor, Identity, MasterSecret, Period, PublicParams};
use serde_json::Value;

const FILE: &str = include_str!("../vectors/ibe-v1.json");

fn doc() -> Value {
    serde_json::from_str(FILE).expect("vector file is JSON")
}

fn hex_of(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))).expect("hex")
}

#[test]
fn file_is_what_the_generator_writes() {
    let generated = ibephone::ibe::kat::generate().expect("generate");
    let text = serde_json::to_string_pretty(&generated).expect("json") + "\n";
    assert!(
        text == FILE,
        "tests/vectors/ibe-v1.json is stale: run `cargo run --example gen-vectors > tests/vectors/ibe-v1.json`"
    );
}

#[test]
fn gt_generator_encoding() {
    let d = doc();
    let want = hex_of(&d, "gt_generator");
    assert_eq!(want.len(), 576);
    let g = bls12_381::pairing(
        &bls12_381::G1Affine::generator(),
        &bls12_381::G2Affine::generator(),
    );
    assert_eq!(gt_bytes(&g).to_vec(), want);
}

#[test]
fn aor_cases() {
    let d = doc();
    let cases = d["aor_cases"].as_array().expect("aor_cases");
    assert!(cases.len() >= 12);
    for case in cases {
        let uri = case["uri"].as_str().expect("uri");
        let got = Aor::parse(uri).ok().map(|a| a.as_str().to_string());
        assert_eq!(got.as_deref(), case["aor"].as_str(), "uri {uri:?}");
    }
}

#[test]
fn vectors_recompute() {
    let d = doc();
    assert_eq!(d["suite"], "IBESIP-V01");
    let vectors = d["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 6);
    let mut domains: Vec<&str> = vectors
        .iter()
        .filter_map(|v| v["domain"].as_str())
        .collect();
    domains.dedup();
    assert!(domains.len() >= 2);
    for v in vectors {
        let domain = v["domain"].as_str().expect("domain");
        let msk = MasterSecret::from_bytes(&hex_of(v, "master_secret")).expect("msk");
        assert_eq!(msk.p_pub().to_compressed().to_vec(), hex_of(v, "p_pub"));
        let params =
            PublicParams::new(domain, msk.p_pub(), "https://pkg.example.invalid").expect("params");
        assert_eq!(
            params.fingerprint_display(),
            v["fingerprint"].as_str().expect("fp")
        );

        let aor = Aor::from_canonical(v["aor"].as_str().expect("aor")).expect("aor parses");
        assert_eq!(aor.as_str(), v["aor"].as_str().expect("aor"));
        let id = Identity::new(
            aor,
            Period::month(v["period"].as_str().expect("period")).expect("period"),
        );
        assert_eq!(id.as_str(), v["id"].as_str().expect("id"));
        let idb = id.as_str().as_bytes();
        assert_eq!(
            hash_to_g2(idb, DST_ENC).to_compressed().to_vec(),
            hex_of(v, "q_enc")
        );
        assert_eq!(
            hash_to_g2(idb, DST_SIG).to_compressed().to_vec(),
            hex_of(v, "q_sig")
        );
        let keys = extract(&msk, &id);
        assert_eq!(keys.d_enc_bytes().to_vec(), hex_of(v, "d_enc"));
        assert_eq!(keys.d_sig_bytes().to_vec(), hex_of(v, "d_sig"));
        ibephone::ibe::check_key(&params, &keys).expect("key check");

        let sigma: [u8; 32] = hex_of(v, "sigma").try_into().expect("sigma");
        let m: [u8; 32] = hex_of(v, "m").try_into().expect("m");
        let ct = hex_of(v, "ciphertext");
        assert_eq!(
            bf::encrypt_with_sigma(&params, &id, &m, &sigma)
                .expect("enc")
                .to_bytes()
                .to_vec(),
            ct
        );
        let mut cache = bf::RecipientCache::new(2);
        assert_eq!(
            cache
                .encrypt_with_sigma(&params, &id, &m, &sigma)
                .expect("enc")
                .to_bytes()
                .to_vec(),
            ct
        );
        let dk = bf::DecryptionKey::new(&keys);
        assert_eq!(*bf::decrypt(&dk, &ct).expect("dec"), m);

        let k =
            ibephone::ibe::encoding::nonzero_scalar_from_bytes("k", &hex_of(v, "k")).expect("k");
        let msg = hex_of(v, "message");
        let sig = cc::SigningKey::new(&keys)
            .sign_with_k(&msg, &k)
            .expect("sign");
        assert_eq!(sig.to_bytes().to_vec(), hex_of(v, "signature"));
        let parsed = cc::Signature::from_bytes(&hex_of(v, "signature")).expect("sig parses");
        cc::verify(&params, &id, &msg, &parsed).expect("verify");
    }
}
