//! Media security (spec section 6): SRTP keys that even the PKG cannot
//! recover, and the short authentication string that exposes a man in the
//! middle.
//!
//! This layer is sans-I/O; the RTP/SRTP transport and audio devices build
//! on it.

pub mod audio;
pub mod device;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod keys;
pub mod quality;
pub mod sdp;
pub mod sdp_attrs;
pub mod session;
pub mod srtp;

pub use keys::{
    derive_sending_key, DhKeyPair, MediaKeyError, Role, Sas, SdesKey, SrtpSendingKey, SrtpSuite,
};
