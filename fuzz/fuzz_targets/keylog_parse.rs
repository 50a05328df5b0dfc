//! Fuzzes the key log parser (`ibephone pcap decrypt --keylog`) and the
//! decryption of a tunnel body with whatever keys it yields: neither may
//! panic on any input.
#![no_main]

use ibephone::pcap::decrypt::decrypt_body;
use ibephone::tunnel::keylog::KeyLog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: length of the key log text; the rest is a tunnel body.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (text, body) = rest.split_at((cut as usize).min(rest.len()));
    if let Ok(log) = KeyLog::parse(&String::from_utf8_lossy(text)) {
        let _ = log.counts();
        let _ = decrypt_body(body, &log);
    }
});
