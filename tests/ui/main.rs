//! The desktop window's tests (egui_kittest, CPU-rendered snapshots) and key
//! renewal against a real PKG, in one test binary. Run one with
//! `cargo test --test ui NAME::`; redraw snapshots with
//! `UPDATE_SNAPSHOTS=1 cargo test --test ui ui_snapshots::`.
//!
//! Unix only: the tests spawn processes, check file modes (0600) and
//! capture on loopback; Windows builds check the library alone.
// A test binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]
#![cfg(unix)]

#[path = "../ui_support/mod.rs"]
mod ui_support;

mod desktop;
mod first_contact;
mod key_renewal;
mod renewal_code;
mod threshold_app;
mod ui_phone;
mod ui_relay;
mod ui_snapshots;
mod ui_views;
mod wayland;
mod zero_effort;
