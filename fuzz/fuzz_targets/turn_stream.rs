//! Fuzzes what a TURN server sends on a TCP connection (RFC 8656 12.5
//! framing, `media::turn_stream::StreamLink` in clear): the bytes, cut
//! into chunks at the positions the first byte picks, never panic the
//! link, every message it yields is a whole frame (4..=MAX_FRAME bytes,
//! STUN or ChannelData), and each goes to a TURN client reached over TCP,
//! which never panics either.
#![no_main]

use ibephone::media::turn_client::{ServerTransport, TurnClient, TurnServer};
use ibephone::media::turn_framing::MAX_FRAME;
use ibephone::media::turn_stream::StreamLink;
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let t0 = Instant::now();
    let server = TurnServer::new(
        "203.0.113.10:3478".parse().expect("address"),
        "1800000000:alice".into(),
        "c2VjcmV0".into(),
    )
    .over(ServerTransport::Tcp);
    let mut client = TurnClient::new(server, t0);
    let mut link = StreamLink::tcp();
    while let Some(m) = client.poll_transmit() {
        assert!(link.send(&m));
    }
    for chunk in bytes.chunks(step) {
        link.receive(chunk);
        while let Some(m) = link.poll_message() {
            assert!(m.len() >= 4 && m.len() <= MAX_FRAME);
            assert!(m[0] >> 6 <= 1, "STUN or ChannelData only");
            client.handle_datagram(t0, &m);
        }
    }
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
});
