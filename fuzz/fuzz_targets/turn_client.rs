//! Fuzzes what a TURN server sends the phone's TURN client
//! (`TurnClient::handle_datagram`, reached with every datagram from the
//! relay's address): never panics, and nothing but a well-formed answer
//! can give it a relayed address. The input is tried twice: as it is, and
//! with our pending request's transaction id written into it, so the
//! answer paths (401, 438, success without integrity) are reached.
#![no_main]

use ibephone::media::turn_client::{TurnClient, TurnServer};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let server = TurnServer::new(
        "203.0.113.10:3478".parse().expect("address"),
        "1800000000:alice".into(),
        "c2VjcmV0".into(),
    );
    let mut c = TurnClient::new(server, t0);
    let request = c.poll_transmit().expect("the first Allocate");
    c.handle_datagram(t0, data);
    let mut patched = data.to_vec();
    if patched.len() >= 20 {
        patched[8..20].copy_from_slice(&request[8..20]);
    }
    c.handle_datagram(t0, &patched);
    c.permit(t0, "198.51.100.7".parse().expect("ip"));
    let _ = c.wrap(t0, "198.51.100.7:9".parse().expect("address"), b"x");
    c.handle_datagram(t0, data);
    for s in 1..10 {
        c.handle_timeout(t0 + Duration::from_secs(s * 100));
    }
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    c.close(t0 + Duration::from_secs(2000));
});
