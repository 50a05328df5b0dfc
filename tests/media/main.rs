//! Real-time audio tests in their own test binary: calls whose judged audio
//! (espeak speech, tones, baresip) must not share the two cores with the heavy
//! protocol tests of `tests/it`. Run one with `cargo test --test media NAME::`.
//!
//! Unix only: the tests spawn processes, check file modes (0600) and
//! capture on loopback; Windows builds check the library alone.
// A test binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]
#![cfg(unix)]

/// One real-time call at a time in this binary: each call's jitter buffer
/// conceals a frame when its tick comes late, so two calls at once on two
/// shared cores (plus a build) measure the scheduler, not the media path
/// (seen: baresip SNR 7.4 dB next to an Opus call). Every test that judges
/// audio holds it for the whole call.
pub static ONE_CALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[path = "../support/mod.rs"]
mod support;

mod agent_media;
mod baresip_interop;
mod media_call;
mod media_opus;
