//! Signature decoding and verification of arbitrary bytes never panics.
#![no_main]
use ibephone::ibe::{cc, Aor, Identity, MasterSecret, Period, PublicParams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = cc::Signature::from_bytes(data) {
        let msk = MasterSecret::from_bytes(&[7u8; 32]).expect("fixed fuzz master secret");
        let params = PublicParams::new("atlanta.com", msk.p_pub(), "https://pkg.atlanta.com")
            .expect("fixed params");
        let id = Identity::new(
            Aor::parse("sip:alice@atlanta.com").expect("fixed AOR"),
            Period::month("2026-11").expect("fixed period"),
        );
        assert!(cc::verify(&params, &id, b"fuzz", &sig).is_err());
    }
});
