//! Fuzzes the SIP parser, validation, serialisation and TCP framing, and
//! the STUN demultiplexing and binding answers of a SIP UDP port: none
//! may panic, and whatever parses must survive a write/parse round trip.
#![no_main]

use ibephone::sip::driver::take_frame;
use ibephone::sip::message::{bad_request_for, HeaderForm, Message};
use ibephone::sip::stun;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = m.validate();
        let _ = (m.branch(), m.cseq(), m.from_tag(), m.to_tag());
        for form in [HeaderForm::Full, HeaderForm::Compact] {
            let bytes = m.to_bytes(form);
            let _ = Message::parse(&bytes);
        }
    }
    let _ = bad_request_for(data);
    if stun::is_stun_message(data) {
        let source = std::net::SocketAddr::from(([203, 0, 113, 1], 40000));
        if let Some(answer) = stun::binding_success(data, source) {
            assert!(stun::is_stun_message(&answer));
        }
    }
    let mut buf = data.to_vec();
    while let Ok(Some(_)) = take_frame(&mut buf) {}
});
