//! Public parameter documents of arbitrary bytes never panic, and whatever
//! parses re-serialises to an equal document.
#![no_main]
use ibephone::ibe::PublicParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = PublicParams::from_json(s) {
            let again = PublicParams::from_json(&p.to_json()).expect("own output parses");
            assert_eq!(again, p);
        }
    }
});
