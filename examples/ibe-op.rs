//! Runs one IBE operation N times (for instruction counting with
//! `valgrind --tool=callgrind`, which is repeatable on a busy machine).
//! Usage: `ibe-op OP N` with OP one of pairing, encrypt_new, encrypt_cached,
//! decrypt, sign, verify_cold, verify_cached, kv1_encaps, setup.

use ibe::kem::kiltz_vahlis_one::KV1;
use ibe::kem::IBKEM;
use ibe::Derive;
use ibephone::ibe::{bf, cc, extract, Aor, Identity, MasterSecret, Period, PublicParams};

fn identity(aor: &str) -> Identity {
    Identity::new(
        Aor::parse(aor).expect("aor"),
        Period::month("2026-11").expect("period"),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("setup");
    let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let msk = MasterSecret::from_bytes(&[5u8; 32]).expect("msk");
    let params =
        PublicParams::new("biloxi.com", msk.p_pub(), "https://pkg.biloxi.com").expect("params");
    let bob = identity("sip:bob@biloxi.com");
    let keys = extract(&msk, &bob);
    let m = [9u8; 32];
    let _ = bf::encrypt(&params, &bob, &m).expect("warm");
    let mut cache = bf::RecipientCache::new(4);
    cache.encrypt(&params, &bob, &m).expect("warm");
    let dk = bf::DecryptionKey::new(&keys);
    let ct = bf::encrypt(&params, &bob, &m).expect("encrypt").to_bytes();
    let sk = cc::SigningKey::new(&keys);
    let sig = sk.sign(b"INVITE").expect("sign");
    let mut signers = cc::SignerCache::new(4);
    signers
        .verify(&params, &bob, b"INVITE", &sig)
        .expect("verify");
    let mut rng = rand::thread_rng();
    let (pk, _) = KV1::setup(&mut rng);
    let kid = <KV1 as IBKEM>::Id::derive_str("sip:bob@biloxi.com#2026-11");
    for i in 0..n {
        match op {
            "pairing" => {
                std::hint::black_box(bls12_381::pairing(
                    &bls12_381::G1Affine::generator(),
                    &bls12_381::G2Affine::generator(),
                ));
            }
            "encrypt_new" => {
                std::hint::black_box(
                    bf::encrypt(&params, &identity(&format!("sip:u{i}@biloxi.com")), &m)
                        .expect("e"),
                );
            }
            "encrypt_cached" => {
                std::hint::black_box(cache.encrypt(&params, &bob, &m).expect("e"));
            }
            "decrypt" => {
                std::hint::black_box(bf::decrypt(&dk, &ct).expect("d"));
            }
            "sign" => {
                std::hint::black_box(sk.sign(b"INVITE").expect("s"));
            }
            "verify_cold" => cc::verify(&params, &bob, b"INVITE", &sig).expect("v"),
            "verify_cached" => signers.verify(&params, &bob, b"INVITE", &sig).expect("v"),
            "kv1_encaps" => {
                std::hint::black_box(KV1::encaps(&pk, &kid, &mut rng));
            }
            _ => {}
        }
    }
}
