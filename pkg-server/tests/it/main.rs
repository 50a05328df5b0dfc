//! Integration tests of `pkg-server` in one test binary: the HTTPS API
//! (`pkg`), the embedded SIP registrar/proxy (`sip`), the product chain
//! PKG -> keys -> secured call (`pkg_call`), the media relay (`relay`:
//! TURN credentials, the embedded STUN/TURN server, coturn interop) and
//! the threshold provider (`threshold`). Run one with
//! `cargo test -p pkg-server --test it NAME::`.
//!
//! Unix only: the tests spawn processes, check file modes (0600) and
//! capture on loopback; Windows builds check the library alone.
// A test binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]
#![cfg(unix)]

#[path = "../common/mod.rs"]
mod common;
// One copy of the agent fixtures for both packages.
#[path = "../../../tests/support/agents.rs"]
mod agents;

mod pkg;
mod pkg_call;
mod relay;
mod sip;
mod threshold;
