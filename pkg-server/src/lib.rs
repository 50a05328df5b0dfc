//! ibephone's provider side: the PKG HTTPS server (`pkg-server`) and its
//! administrator's CLI (`pkg-admin`), on the protocol of `pkg-api.md` with
//! the API types shared with the phone (`ibephone::pkg_client::api`).
//!
//! [`store::Store`] is also the user database of the embedded SIP
//! registrar/proxy (`sip`, `[sip] listen` or `pkg-server --sip ADDR`).
//! With `[turn]` it issues TURN credentials and runs the media relay
//! ([`turn`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod bench;
pub mod config;
pub mod dkg;
pub mod http;
pub(crate) mod metrics;
pub mod otp;
pub mod password;
pub mod relay_bench;
pub mod serve;
pub(crate) mod sip;
pub mod store;
pub mod tls;
pub mod turn;
pub mod vault;
