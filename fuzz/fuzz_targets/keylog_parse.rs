//! Fuzzes the key log parser (`ibephone pcap decrypt --keylog`) and the
//! decryption of a tunnel body, and of the same bytes as an SRTP packet,
//! with whatever keys it yields (`IBESIP_SRTP` lines included): none may
//! panic on any input.
#![no_main]

use ibephone::pcap::decrypt::decrypt_body;
use ibephone::pcap::srtp_decrypt::decrypt_flows;
use ibephone::pcap::stream::Datagram;
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
        let datagram = Datagram {
            frame: 1,
            src: ([127, 0, 0, 1], 4000).into(),
            dst: ([127, 0, 0, 1], 4002).into(),
            payload: body.to_vec(),
        };
        let _ = decrypt_flows(&[datagram], &log);
    }
});
