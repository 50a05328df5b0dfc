//! IBE operation costs, all in one run so that ratios are meaningful on a
//! noisy machine: our extract / encrypt (new and cached recipient) /
//! decrypt / sign / verify (cold and cached), one raw `bls12_381::pairing`,
//! and the peer implementation `ibe` (encryption4all) KV1 encaps/decaps.
//! `scripts/bench.sh` prints the medians and ratios as a table.
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use bls12_381::{pairing, G1Affine, G2Affine};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
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

fn bench(c: &mut Criterion) {
    let msk = MasterSecret::from_bytes(&[5u8; 32]).expect("msk");
    let params =
        PublicParams::new("biloxi.com", msk.p_pub(), "https://pkg.biloxi.com").expect("params");
    let bob = identity("sip:bob@biloxi.com");
    let keys = extract(&msk, &bob);
    let m = [9u8; 32];
    let mut g = c.benchmark_group("ibe");
    g.sample_size(40);

    g.bench_function("pairing", |b| {
        let p = G1Affine::generator();
        let q = G2Affine::generator();
        b.iter(|| pairing(black_box(&p), black_box(&q)))
    });
    g.bench_function("extract", |b| b.iter(|| extract(&msk, black_box(&bob))));

    // New recipient: only the domain's P_pub table is warm.
    let _ = bf::encrypt(&params, &bob, &m).expect("warm domain table");
    let mut n = 0u64;
    g.bench_function("encrypt_new_recipient", |b| {
        b.iter(|| {
            n += 1;
            let id = identity(&format!("sip:user{n}@biloxi.com"));
            bf::encrypt(&params, &id, &m).expect("encrypt")
        })
    });
    let mut cache = bf::RecipientCache::new(16);
    cache.encrypt(&params, &bob, &m).expect("warm recipient");
    g.bench_function("encrypt_cached_recipient", |b| {
        b.iter(|| {
            cache
                .encrypt(&params, black_box(&bob), &m)
                .expect("encrypt")
        })
    });
    let dk = bf::DecryptionKey::new(&keys);
    let ct = bf::encrypt(&params, &bob, &m).expect("encrypt").to_bytes();
    g.bench_function("decrypt", |b| {
        b.iter(|| bf::decrypt(&dk, black_box(&ct)).expect("decrypt"))
    });

    let sk = cc::SigningKey::new(&keys);
    g.bench_function("sign", |b| {
        b.iter(|| {
            sk.sign(black_box(b"INVITE sip:alice@atlanta.com"))
                .expect("sign")
        })
    });
    let sig = sk.sign(b"INVITE").expect("sign");
    g.bench_function("verify_cold", |b| {
        b.iter(|| cc::verify(&params, black_box(&bob), b"INVITE", &sig).expect("verify"))
    });
    let mut signers = cc::SignerCache::new(16);
    g.bench_function("verify_cached_signer", |b| {
        b.iter(|| {
            signers
                .verify(&params, black_box(&bob), b"INVITE", &sig)
                .expect("verify")
        })
    });

    // The peer implementation, same run.
    let mut rng = rand::thread_rng();
    let (pk, kv_sk) = KV1::setup(&mut rng);
    let kid = <KV1 as IBKEM>::Id::derive_str("sip:bob@biloxi.com#2026-11");
    let usk = KV1::extract_usk(Some(&pk), &kv_sk, &kid, &mut rng);
    g.bench_function("kv1_encaps", |b| {
        b.iter(|| KV1::encaps(&pk, black_box(&kid), &mut rng))
    });
    let (kct, _) = KV1::encaps(&pk, &kid, &mut rng);
    g.bench_function("kv1_decaps", |b| {
        b.iter(|| KV1::decaps(None, &usk, black_box(&kct)).expect("decaps"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
