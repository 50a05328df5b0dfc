//! The Wireshark proof: reads a capture and tells, message by message,
//! whether what crossed the wire was tunneled (spec section 5), a plain
//! message the spec allows (5.5), or a leak, and lists every
//! identity-revealing value seen in clear.
//!
//! Pipeline: [`capture`] turns pcap/pcapng frames into transport segments
//! (IP fragments reassembled), [`stream`] reassembles TCP and frames SIP
//! messages (UDP: one per datagram; TCP: by Content-Length), `sipscan`
//! reads each message leniently (a capture may hold anything) and records
//! what is malformed, and `verdict` judges it; [`rtpflow`] judges each
//! RTP-shaped UDP flow SRTP or plain RTP. Whatever a stage cannot read is
//! kept as [`Unjudged`]: the capture is then "cannot judge", never clean.
//! [`decrypt`] opens the tunneled messages of a capture with an agent's key
//! log (`ibephone pcap decrypt`, debugging only), and [`srtp_decrypt`] the
//! SRTP flows with the log's `IBESIP_SRTP` keys. [`tls`] frames SIP over
//! TLS as TLS records (nothing in clear) and, with the TLS secrets of a
//! key log, decrypts it so the SIP inside is judged too. `turnwrap`
//! opens TURN (ChannelData, Send and Data indications): what a relay
//! carries is judged like a direct datagram (SRTP, SRTCP and STUN pass;
//! plain RTP, plain RTCP or SIP inside TURN is a leak; anything else is
//! not judged). [`dns`] judges UDP port 53: a well-formed lookup of the
//! kind the phone makes (A, AAAA, SRV, NAPTR, one question, nothing
//! after the message) is clean, since it names only the provider; any
//! other bytes on port 53 are not judged, so they can never pass as
//! clean (see that module for the rules and what they cannot see). [`icmp`]
//! judges ICMP errors by what they quote: clean when the quote is a prefix
//! of a UDP datagram the capture holds (judged on its own), else not
//! judged. TURN over TCP (RFC 8656 framing: STUN messages and padded
//! ChannelData on one stream) and DNS over TCP (2-byte length prefix) are
//! cut out of their reassembled streams by [`stream`] and judged like
//! their UDP forms.

pub mod capture;
pub mod decrypt;
pub mod dns;
pub mod icmp;
pub mod rtpflow;
pub(crate) mod sipscan;
pub mod srtp_decrypt;
pub mod stream;
pub mod tls;
pub(crate) mod turnwrap;
pub(crate) mod verdict;
pub mod write;

use thiserror::Error;

/// Why a capture could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PcapError {
    /// The file could not be opened or read.
    #[error("cannot read capture {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a pcap or pcapng capture.
    #[error("not a pcap or pcapng capture: {0}")]
    Format(String),
}

/// Something in a capture the judge could not read, so it cannot vouch for
/// it: a truncated frame, an IP fragment never completed, a TCP gap, a UDP
/// datagram that is neither SIP nor RTP, another protocol. Any such item
/// makes the verdict "cannot judge" (exit 2) unless a leak was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unjudged {
    /// Frame number (1-based) where it starts, when it has one.
    pub frame: Option<usize>,
    /// What it is and why it was not judged.
    pub why: String,
}

pub use decrypt::{decrypt_capture, Decryption};
pub use rtpflow::{MediaFlow, MediaVerdict};
pub use verdict::{
    verify_capture, verify_capture_with, Class, Finding, MessageReport, Report, Verdict,
};
