//! ibephone: a softphone whose SIP signaling travels inside CMS
//! AuthEnvelopedData bodies keyed by identity-based encryption over
//! BLS12-381 (wire contract: `shared/spec/ibe-sip-tunnel.md`).
//!
//! Layers, lowest first; a layer never imports a higher one:
//! - [`ibe`]: pairing-based cryptography (sections 1-4 of the spec).
//! - [`sip`]: sans-I/O SIP stack, registrar/proxy core, tokio driver.
//! - [`tunnel`]: the CMS tunnel of section 5 (sans-I/O).
//! - [`media`]: SRTP key agreement and SAS (section 6).
//! - [`pkg_client`]: the PKG protocol client, its API types and key store.
//! - [`agent`]: SIP core + tunnel + keys behind one command/event stream.
//! - [`pcap`]: the Wireshark proof, judging captures against the spec.
//! - `ui` (feature `gui`): the desktop softphone on top of the agent.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod ibe;
pub mod media;
pub mod pcap;
pub mod pkg_client;
pub mod sip;
pub mod tunnel;
#[cfg(feature = "gui")]
pub mod ui;
