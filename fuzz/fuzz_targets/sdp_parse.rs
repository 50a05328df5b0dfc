//! Fuzzes the SDP parser of the media layer (`AudioDescription::parse`,
//! reached with the peer's offer or answer): never panics, and a
//! description it accepts survives `to_sdp` and a second parse unchanged.
#![no_main]

use ibephone::media::sdp::AudioDescription;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(desc) = AudioDescription::parse(&text) {
        let again = AudioDescription::parse(&desc.to_sdp());
        assert!(again.is_ok(), "our own SDP does not parse: {again:?}");
    }
});
