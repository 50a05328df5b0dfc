//! Seal and open time per message, first (IBE key transport + signature)
//! and later (AES key wrap) messages, on the typical call of
//! `tunnel::kat::typical_call`: `cargo bench --bench tunnel`.
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ibephone::tunnel::kat::{typical_call, vector_time, vector_tunnel};

fn bench(c: &mut Criterion) {
    let call = typical_call();
    let invite = call[0].2.clone();
    let ack = call[3].2.clone();
    let now = vector_time();
    let (mut alice, _) = vector_tunnel("alice", None).expect("alice");
    let (mut bob, _) = vector_tunnel("bob", None).expect("bob");
    let mut g = c.benchmark_group("tunnel");
    g.sample_size(30);

    // The first INVITE to bob builds his GT table; measure the steady state.
    let first = alice.seal(now, &invite).expect("seal");
    bob.open(now, &first).expect("open");
    g.bench_function("seal_first_message", |b| {
        b.iter(|| alice.seal(now, &invite).expect("seal"))
    });
    g.bench_function("open_first_message", |b| {
        b.iter_batched(
            || alice.seal(now, &invite).expect("seal"),
            |outer| bob.open(now, &outer).expect("open"),
            BatchSize::SmallInput,
        )
    });

    // A later message in an established dialog.
    let outer = alice.seal(now, &invite).expect("seal");
    bob.open(now, &outer).expect("open");
    for inner in [&call[1].2, &call[2].2] {
        let o = bob.seal(now, inner).expect("seal");
        alice.open(now, &o).expect("open");
    }
    g.bench_function("seal_later_message", |b| {
        b.iter(|| alice.seal(now, &ack).expect("seal"))
    });
    g.bench_function("open_later_message", |b| {
        b.iter_batched(
            || alice.seal(now, &ack).expect("seal"),
            |outer| bob.open(now, &outer).expect("open"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
