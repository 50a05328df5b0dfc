//! URI to identity of arbitrary strings never panics, and a canonical AOR
//! always has the `sip:user@host` shape with a lower-case host.
#![no_main]
use ibephone::ibe::{Aor, Identity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(aor) = Aor::parse(s) {
            assert!(aor.as_str().starts_with("sip:"));
            assert!(!aor.user().is_empty());
            assert_eq!(aor.host(), aor.host().to_ascii_lowercase());
        }
        let _ = Identity::parse(s);
    }
});
