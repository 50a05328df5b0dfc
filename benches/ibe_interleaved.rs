//! IBE operation costs measured interleaved, so that the ratios of issue 3
//! hold on a noisy machine: every round times each operation once, in an
//! order that rotates from round to round, so a burst of load elsewhere
//! hits all operations alike (criterion, in `benches/ibe.rs`, measures one
//! operation after the other, and a neighbour's build can land on one of
//! them only). Prints the median per operation, its ratio to one raw
//! `bls12_381::pairing` and to the peer implementation's (`ibe` crate,
//! encryption4all) KV1 encaps, and the targets.
//!
//! Issue 16's figures in the same run: issuing one server's key share
//! (`extract_share`, an extract under the server's share of the master
//! secret) against today's `extract`, and what the phone computes once
//! the keys arrived: with one PKG `check_key`; with a 2-of-3 provider two
//! share checks against the servers' `P_pub_i`, the Lagrange combination
//! and the same `check_key` (`phone_keys_2_of_3`). The network part of a
//! key fetch (logins at t servers, asked in parallel) is not in this
//! bench; the phone checks each server's share in that server's task, so
//! on two cores the share checks of a 2-of-3 fetch run side by side.
//!
//! `cargo bench --bench ibe_interleaved` (also run by `scripts/bench.sh`);
//! `ROUNDS=N` sets the number of rounds (default 300).
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use bls12_381::{pairing, G1Affine, G2Affine};
use ibe::kem::kiltz_vahlis_one::KV1;
use ibe::kem::IBKEM;
use ibe::Derive;
use ibephone::ibe::threshold::{check_key_share, combine, deal, KeyShare};
use ibephone::ibe::{
    bf, cc, check_key, extract, Aor, Identity, MasterSecret, Period, PublicParams,
};
use std::hint::black_box;
use std::time::Instant;

fn identity(aor: &str) -> Identity {
    Identity::new(
        Aor::parse(aor).expect("aor"),
        Period::month("2026-11").expect("period"),
    )
}

/// One measured operation: its name and a closure run once per round.
struct Op<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    samples: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let msk = MasterSecret::from_bytes(&[5u8; 32]).expect("msk");
    let params =
        PublicParams::new("biloxi.com", msk.p_pub(), "https://pkg.biloxi.com").expect("params");
    let bob = identity("sip:bob@biloxi.com");
    let keys = extract(&msk, &bob);
    let m = [9u8; 32];
    // New recipient: only the domain's P_pub table is warm.
    let _ = bf::encrypt(&params, &bob, &m).expect("warm domain table");
    let mut cache = bf::RecipientCache::new(16);
    cache.encrypt(&params, &bob, &m).expect("warm recipient");
    let dk = bf::DecryptionKey::new(&keys);
    let ct = bf::encrypt(&params, &bob, &m).expect("encrypt").to_bytes();
    let sk = cc::SigningKey::new(&keys);
    let sig = sk.sign(b"INVITE").expect("sign");
    let mut signers = cc::SignerCache::new(16);
    let mut rng = rand::thread_rng();
    let (pk, kv_sk) = KV1::setup(&mut rng);
    let kid = <KV1 as IBKEM>::Id::derive_str("sip:bob@biloxi.com#2026-11");
    let usk = KV1::extract_usk(Some(&pk), &kv_sk, &kid, &mut rng);
    let (kct, _) = KV1::encaps(&pk, &kid, &mut rng);
    let mut n = 0u64;
    // A 2-of-3 provider: the phone holds the shares of servers 1 and 3.
    let shares = deal(&msk, 2, 3).expect("deal");
    let (s1, s3) = (&shares[0], &shares[2]);
    let (pub1, pub3) = (s1.p_pub_i(), s3.p_pub_i());
    let got1 = KeyShare::new(1, extract(s1.secret(), &bob)).expect("share 1");
    let got3 = KeyShare::new(3, extract(s3.secret(), &bob)).expect("share 3");

    let mut ops: Vec<Op> = vec![
        Op {
            name: "pairing",
            run: Box::new(|| {
                black_box(pairing(
                    black_box(&G1Affine::generator()),
                    black_box(&G2Affine::generator()),
                ));
            }),
            samples: vec![],
        },
        Op {
            name: "extract",
            run: Box::new(|| {
                black_box(extract(&msk, black_box(&bob)));
            }),
            samples: vec![],
        },
        Op {
            name: "encrypt_new_recipient",
            run: Box::new(|| {
                n += 1;
                let id = identity(&format!("sip:user{n}@biloxi.com"));
                black_box(bf::encrypt(&params, &id, &m).expect("encrypt"));
            }),
            samples: vec![],
        },
        Op {
            name: "encrypt_cached_recipient",
            run: Box::new(|| {
                black_box(cache.encrypt(&params, &bob, &m).expect("encrypt"));
            }),
            samples: vec![],
        },
        Op {
            name: "decrypt",
            run: Box::new(|| {
                black_box(bf::decrypt(&dk, black_box(&ct)).expect("decrypt"));
            }),
            samples: vec![],
        },
        Op {
            name: "sign",
            run: Box::new(|| {
                black_box(
                    sk.sign(black_box(b"INVITE sip:alice@atlanta.com"))
                        .expect("sign"),
                );
            }),
            samples: vec![],
        },
        Op {
            name: "verify_cold",
            run: Box::new(|| {
                cc::verify(&params, black_box(&bob), b"INVITE", &sig).expect("verify");
            }),
            samples: vec![],
        },
        Op {
            name: "verify_cached_signer",
            run: Box::new(|| {
                signers
                    .verify(&params, black_box(&bob), b"INVITE", &sig)
                    .expect("verify");
            }),
            samples: vec![],
        },
        Op {
            name: "extract_share",
            run: Box::new(|| {
                black_box(extract(s1.secret(), black_box(&bob)));
            }),
            samples: vec![],
        },
        Op {
            name: "phone_keys_single",
            run: Box::new(|| {
                check_key(&params, black_box(&keys)).expect("check");
            }),
            samples: vec![],
        },
        Op {
            name: "phone_keys_2_of_3",
            run: Box::new(|| {
                check_key_share("biloxi.com", &pub1, black_box(&got1)).expect("share 1");
                check_key_share("biloxi.com", &pub3, black_box(&got3)).expect("share 3");
                let keys = combine(&[got1.clone(), got3.clone()]).expect("combine");
                check_key(&params, &keys).expect("check");
            }),
            samples: vec![],
        },
        Op {
            name: "kv1_encaps",
            run: Box::new(|| {
                black_box(KV1::encaps(&pk, black_box(&kid), &mut rng));
            }),
            samples: vec![],
        },
        Op {
            name: "kv1_decaps",
            run: Box::new(|| {
                black_box(KV1::decaps(None, &usk, black_box(&kct)).expect("decaps"));
            }),
            samples: vec![],
        },
    ];
    // Warm-up round (caches, allocator), not recorded.
    for op in ops.iter_mut() {
        (op.run)();
    }
    let count = ops.len();
    for round in 0..rounds {
        for i in 0..count {
            let op = &mut ops[(i + round) % count];
            let t = Instant::now();
            (op.run)();
            op.samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let mut medians = std::collections::HashMap::new();
    for op in ops.iter_mut() {
        medians.insert(op.name, median(&mut op.samples));
    }
    let targets: &[(&str, &str, f64)] = &[
        ("encrypt_new_recipient", "kv1_encaps", 0.5),
        ("encrypt_cached_recipient", "kv1_encaps", 0.12),
        ("decrypt", "pairing", 1.0),
        ("sign", "pairing", 0.35),
        ("verify_cached_signer", "pairing", 1.4),
        ("verify_cold", "pairing", 1.8),
        // Issue 16: a share costs what a key costs.
        ("extract_share", "extract", 1.1),
    ];
    println!("IBE operations, {rounds} interleaved rounds, medians");
    println!(
        "{:26} {:>10} {:>10} {:>13}  target",
        "operation", "median us", "x pairing", "x KV1 encaps"
    );
    let pairing_us = medians["pairing"];
    let kv1_us = medians["kv1_encaps"];
    for op in &ops {
        let us = medians[op.name];
        let target = targets
            .iter()
            .find(|(name, _, _)| *name == op.name)
            .map(|(_, base, limit)| {
                let ratio = us / medians[base];
                let verdict = if ratio <= *limit { "ok" } else { "MISSED" };
                format!("<= {limit}x {base}: {verdict}")
            })
            .unwrap_or_default();
        println!(
            "{:26} {:>10.1} {:>10.2} {:>13.2}  {target}",
            op.name,
            us,
            us / pairing_us,
            us / kv1_us
        );
    }
}
