//! ibephone: a softphone whose SIP signaling travels inside CMS
//! AuthEnvelopedData bodies keyed by identity-based encryption over
//! BLS12-381 (wire contract: `shared/spec/ibe-sip-tunnel.md`).
//!
//! Layers, lowest first; a layer never imports a higher one:
//! - [`ibe`]: pairing-based cryptography (sections 1-4 of the spec).
//! - [`pkg_client`]: the PKG protocol client, its API types and key store.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod ibe;
pub mod pkg_client;
