//! `Tunnel::open` on arbitrary bytes (raw) and on mutations of a genuine
//! sealed message (structured: the first byte picks a message of the
//! known-answer dialog, the rest is XORed into it). Never panics.
#![no_main]
use ibephone::tunnel::kat::{dialog, vector_time, vector_tunnel};
use libfuzzer_sys::fuzz_target;
use ibephone::tunnel::Tunnel;
use std::sync::{Mutex, OnceLock};

fn sealed() -> &'static Vec<Vec<u8>> {
    static SEALED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEALED.get_or_init(|| {
        let (mut alice, _) = vector_tunnel("alice", None).expect("alice");
        dialog()
            .into_iter()
            .filter(|(_, from_alice, _)| *from_alice)
            .filter_map(|(_, _, inner)| alice.seal(vector_time(), &inner).ok())
            .collect()
    })
}

/// One receiver for the whole run (building one costs a key extraction);
/// its session state carries over between inputs, which only widens what
/// the fuzzer reaches.
fn bob() -> &'static Mutex<Tunnel> {
    static BOB: OnceLock<Mutex<Tunnel>> = OnceLock::new();
    BOB.get_or_init(|| Mutex::new(vector_tunnel("bob", None).expect("bob").0))
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut bob) = bob().lock() else { return };
    let _ = bob.open(vector_time(), data);
    if let Some((&pick, mask)) = data.split_first() {
        let msgs = sealed();
        let mut m = msgs[pick as usize % msgs.len()].clone();
        for (i, b) in mask.iter().enumerate() {
            let at = (i * 131) % m.len();
            m[at] ^= b;
        }
        let _ = bob.open(vector_time(), &m);
    }
});
