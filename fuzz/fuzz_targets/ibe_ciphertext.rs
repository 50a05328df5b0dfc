//! BF ciphertext decoding and decryption of arbitrary bytes: never panics,
//! and only a well-formed ciphertext for the key could ever decrypt.
#![no_main]
use ibephone::ibe::{bf, extract, Aor, Identity, MasterSecret, Period};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static bf::DecryptionKey {
    static KEY: OnceLock<bf::DecryptionKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let msk = MasterSecret::from_bytes(&[7u8; 32]).expect("fixed fuzz master secret");
        let id = Identity::new(
            Aor::parse("sip:bob@biloxi.com").expect("fixed AOR"),
            Period::month("2026-11").expect("fixed period"),
        );
        bf::DecryptionKey::new(&extract(&msk, &id))
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = bf::Ciphertext::from_bytes(data);
    let _ = bf::decrypt(key(), data);
});
