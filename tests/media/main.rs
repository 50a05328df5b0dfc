//! Real-time audio tests in their own test binary: calls whose judged audio
//! (espeak speech, tones, baresip) must not share the two cores with the heavy
//! protocol tests of `tests/it`. Run one with `cargo test --test media NAME::`.

#[path = "../support/mod.rs"]
mod support;

mod agent_media;
mod baresip_interop;
mod media_call;
mod media_opus;
