//! Prints the cost of the building blocks behind the IBE operations (a quick
//! profile to decide fast paths; `scripts/bench.sh` has the real figures).
//! Run: `cargo run --release --example ibe-components`.
// An example has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use bls12_381::{
    multi_miller_loop, pairing, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Scalar,
};
use ibephone::ibe::encoding::gt_bytes;
use ibephone::ibe::fixed_base::FixedBaseTable;
use ibephone::ibe::hash::{hash_to_g2, DST_ENC};
use std::time::Instant;

fn time<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(f());
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!("{name:32} {:10.1} us", samples[2]);
}

fn main() {
    let p = G1Affine::generator();
    let q = G2Affine::generator();
    let s = Scalar::from_bytes_wide(&[3u8; 64]);
    let qp = G2Prepared::from(q);
    let ml = multi_miller_loop(&[(&p, &qp)]);
    let g1c = G1Affine::from(p * s).to_compressed();
    let g2c = G2Affine::from(q * s).to_compressed();
    let g1t = FixedBaseTable::new(&G1Projective::generator());
    let g2t = FixedBaseTable::new(&G2Projective::generator());
    let gt = pairing(&p, &q);
    let gtt = FixedBaseTable::new(&gt);
    time("pairing", 200, || pairing(&p, &q));
    time("miller loop 1 prepared", 200, || {
        multi_miller_loop(&[(&p, &qp)])
    });
    time("miller loop 2 prepared", 200, || {
        multi_miller_loop(&[(&p, &qp), (&p, &qp)])
    });
    time("miller loop 3 prepared", 200, || {
        multi_miller_loop(&[(&p, &qp), (&p, &qp), (&p, &qp)])
    });
    time("final exponentiation", 200, || ml.final_exponentiation());
    time("G2Prepared::from", 200, || G2Prepared::from(q));
    time("hash_to_g2", 200, || {
        hash_to_g2(b"sip:bob@biloxi.com#2026-11", DST_ENC)
    });
    time("G1 decompress checked", 500, || {
        G1Affine::from_compressed(&g1c).unwrap()
    });
    time("G1 decompress unchecked", 500, || {
        G1Affine::from_compressed_unchecked(&g1c).unwrap()
    });
    time("G2 decompress checked", 500, || {
        G2Affine::from_compressed(&g2c).unwrap()
    });
    time("G2 decompress unchecked", 500, || {
        G2Affine::from_compressed_unchecked(&g2c).unwrap()
    });
    time("G2 to_compressed", 500, || {
        G2Affine::from(G2Projective::generator() * s).to_compressed()
    });
    time("G1 mul plain", 200, || p * s);
    time("G1 table mul", 500, || g1t.mul(&s));
    time("G2 mul plain", 200, || q * s);
    time("G2 table mul", 500, || g2t.mul(&s));
    time("GT exp plain", 100, || gt * s);
    time("GT table mul", 200, || gtt.mul(&s));
    time("gt_bytes", 1000, || gt_bytes(&gt));
    time("G1 affine from proj", 1000, || {
        G1Affine::from(G1Projective::generator() * s)
    });
}
