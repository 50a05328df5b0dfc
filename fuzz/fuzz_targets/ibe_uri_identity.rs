//! URI to identity of arbitrary strings never panics, and a canonical AOR is
//! a fixed point of canonicalisation.
#![no_main]
use ibephone::ibe::{Aor, Identity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(aor) = Aor::parse(s) {
            let again = Aor::parse(aor.as_str()).expect("canonical AOR parses");
            assert_eq!(again, aor);
        }
        let _ = Identity::parse(s);
    }
});
