//! The fixtures of the root integration tests, one module a job. The test
//! binaries `tests/it` and `tests/media` declare it once in their `main.rs`;
//! a test module takes it with `use crate::support;` and the `use support::...`
//! it needs. Each binary compiles the whole tree, so nothing here is dead
//! code just because one binary leaves it unused.
//!
//! - [`agents`]: in-process agents (configurations, waiting for events,
//!   register/dial/answer/hang up); shared with `pkg-server/tests`.
//! - [`process`]: `ibephone agent` processes speaking JSON lines, and the
//!   configuration files (`[keys]`) they start from.
//! - [`provider`]: a real `pkg-server` (PKG + registrar/proxy), agent
//!   configurations of its users (`[pkg]`), raw SIP phones and relays.
//! - [`provider_bins`]: starting `pkg-server`, running `pkg-admin`; shared
//!   with `pkg-server/tests`.
//! - [`capture`]: tshark on loopback (`IBEPHONE_TEST_TSHARK=1`).
//! - [`kamailio`]: Kamailio with `config/kamailio/kamailio.cfg` in the
//!   foreground (loopback or a lab namespace).
//! - [`tools`]: gates of the tests that need an installed tool, tool
//!   paths, free ports.
//! - [`audio`]: WAV files of test signals.
//! - [`media_relay`]: a lossy, capturing relay between two media sessions.
//! - [`natlab`]: the NAT lab of namespaces, its provider and phones.
//! - [`tunnel`]: tunnels with fixed keys and the inner messages of a call.
//! - [`sip_net`]: the in-memory SIP network (fake clock, lossy queue).
#![allow(dead_code)]

pub mod agents;
pub mod audio;
pub mod capture;
pub mod kamailio;
pub mod media_relay;
pub mod natlab;
pub mod process;
pub mod provider;
pub mod provider_bins;
pub mod sip_net;
pub mod tools;
pub mod tunnel;
