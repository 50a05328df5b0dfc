//! Integration tests of the library, the binaries and the provider, in one test binary
//! (one link of the whole stack instead of one per file): SIP, tunnel, agents as real
//! processes, the PKG, captures, interop with SIPp/Kamailio/tshark and the NAT lab.
//! Each module is one former `tests/*.rs` file; run one with `cargo test --test it NAME::`.
//! Shared fixtures live in `tests/support`.
//!
//! Unix only: the tests spawn processes, check file modes (0600) and
//! capture on loopback; Windows builds check the library alone.
// A test binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]
#![cfg(unix)]

#[path = "../support/mod.rs"]
mod support;

mod agent_call;
mod agent_config;
mod agent_process;
mod agent_transfer;
mod demo;
mod ibe_vectors;
mod interop_kamailio;
mod interop_sipp;
mod logging;
mod media_agent_cli;
mod media_reinvite_sip;
mod media_vectors;
mod natlab;
mod pcap_decrypt;
mod pcap_media;
mod pcap_verify;
mod provider_calls;
mod sip_calls;
mod sip_loopback;
mod sip_provider;
mod tunnel_attacks;
mod tunnel_capture;
mod tunnel_dialog;
mod tunnel_vectors;
mod voice_processing;
