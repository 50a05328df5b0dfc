//! Fuzzes the RTCP input of the media layer (`RtcpState::handle`, reached
//! with every decrypted SRTCP packet of the peer): never panics, a refused
//! packet changes no figure, and our own next report still parses.
#![no_main]

use ibephone::media::rtcp::RtcpState;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant, SystemTime};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut st = RtcpState::new(0x1234_5678, "fuzz", 8000, t0);
    st.on_rtp_sent(160, 0, t0);
    st.on_rtp_received(0x9abc_def0, 1, 0, t0);
    let before = st.stats();
    if st.handle(data, t0 + Duration::from_millis(5)).is_err() {
        assert_eq!(st.stats(), before, "a refused packet changed the figures");
    }
    let ours = st
        .build_report(t0 + Duration::from_millis(10), SystemTime::now())
        .expect("our report builds");
    let mut peer = RtcpState::new(0x9abc_def0, "peer", 8000, t0);
    peer.handle(&ours, t0).expect("our own report parses");
});
