//! Media security (spec section 6): SRTP keys that even the PKG cannot
//! recover, and the short authentication string that exposes a man in the
//! middle.
//!
//! Sans-I/O cores, each a module with one job:
//! - [`commit`]: the hash commitment to the offerer's X25519 key and the
//!   retained secret of key continuity (spec 6 version 1.1);
//! - [`sdp`]: SDP offer/answer for one audio stream (RFC 4566/3264) with
//!   the keys of [`keys`] carried by the attributes of `sdp_attrs`;
//! - [`g711`], `codec`, `dtmf`: PCMU/PCMA, Opus (RFC 7587, libopus
//!   through the `opus` crate) behind one encoder/decoder with loss
//!   concealment, and RFC 4733 telephone-event;
//! - [`srtp`]: RTP packets (`rtp`) protected by `webrtc-srtp`, with drop
//!   counters; [`jitter`]: adaptive jitter buffer with loss concealment;
//! - [`audio`], [`device`]: 20 ms frame sources and sinks at the codec's
//!   rate (8 or 48 kHz; WAV via `hound`, sound cards via cpal behind the
//!   `audio` feature);
//! - [`quality`]: recording-versus-source comparison for tests and benches;
//! - [`rtcp`]: RTCP sender/receiver reports (loss, jitter, round trip),
//!   multiplexed on the RTP port and protected as SRTCP by [`srtp`];
//!   `rtcp_link`: when reports leave and what a received one may change;
//! - [`ice`]: ICE (RFC 8445) on the call's socket (str0m's `is` agent);
//!   [`turn_client`]: a TURN client (RFC 8656) whose relayed address is
//!   one of ICE's candidates, over UDP or, through [`turn_stream`] (TCP
//!   or TLS) and [`turn_framing`] (RFC 8656 12.5), over a stream.
//!
//! The thin tokio driver is [`session::MediaSession`]: it owns the socket
//! and the 20 ms clock and reports [`session::MediaEvent`]s; a relay
//! reached over TCP or TLS is its `relay_stream::RelayStream`.
//!
//! Opus is offered first by default (`opus/48000/2` on payload type 111,
//! `a=fmtp:111 minptime=10;useinbandfec=1`, with `telephone-event/48000`),
//! then PCMU and PCMA; the answerer follows the offer's order.

pub mod audio;
pub(crate) mod codec;
pub mod commit;
pub mod device;
pub(crate) mod dtmf;
pub mod g711;
pub mod ice;
pub mod jitter;
pub mod kat;
pub mod keys;
pub(crate) mod negotiate;
pub mod quality;
pub(crate) mod relay_stream;
pub mod rtcp;
pub(crate) mod rtcp_link;
pub mod sdp;
pub(crate) mod sdp_attrs;
pub mod session;
pub mod srtp;
pub mod turn_client;
pub mod turn_framing;
pub mod turn_stream;
pub mod voice;

pub use keys::{
    derive_sending_key, DhKeyPair, MediaKeyError, Role, Sas, SdesKey, SrtpSendingKey, SrtpSuite,
};
