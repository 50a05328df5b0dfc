//! The state the window is made of, apart from [`super::app::PhoneApp`]
//! itself: which screen and tab, registration, the calls and their media
//! facts, chat lines, banners and the clock the window reads.

use super::history::Security;
use crate::agent::keys::now_unix;
use crate::agent::media::MediaCounters;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Which screen the window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// First run (or after logging out).
    Wizard,
    /// Starting from stored keys.
    Starting,
    /// The phone.
    Phone,
}

/// The tabs of the main window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Dial field and pad.
    Dial,
    /// Address book.
    Contacts,
    /// Call history.
    History,
    /// Secure messages.
    Messages,
    /// Settings.
    Settings,
}

/// The registration as the agent last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not (yet) registered.
    NotRegistered,
    /// REGISTER sent, no answer yet.
    Registering,
    /// Registered for `expires` seconds at `since`.
    Registered {
        /// Granted lifetime, seconds.
        expires: u32,
    },
    /// The network does not answer (timeout, 503, 504); the phone keeps
    /// trying. The sentence says what to check.
    Retrying(String),
    /// Refused; the sentence says what to do.
    Failed(String),
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// We called, no answer yet.
    Calling,
    /// The callee's phone rings.
    Ringing,
    /// A call for us, not answered yet.
    Incoming,
    /// Talking since the instant.
    Active(Instant),
}

/// Media security of a call, when the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSecurity {
    /// The audio codec, e.g. `opus` or `PCMU`.
    pub codec: String,
    /// SRTP suite, e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub cipher: String,
    /// Whether the media keys are beyond the provider's reach.
    pub escrow_resistant: bool,
    /// Short authentication string to read aloud.
    pub sas: Option<String>,
    /// The user's verdict on the SAS (None: not compared yet).
    pub sas_matches: Option<bool>,
}

/// One call the phone knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The agent's call number.
    pub id: u64,
    /// The peer's address (URI).
    pub peer: String,
    /// Whether we placed it.
    pub outgoing: bool,
    /// Where it is.
    pub phase: Phase,
    /// The peer's verified identity (`ID` string), if proven.
    pub verified: Option<String>,
    /// Whether the signaling is tunneled.
    pub tunneled: bool,
    /// Start, Unix seconds (for the history).
    pub started_unix: u64,
    /// Microphone muted (local state; sent when the agent has `mute`).
    pub muted: bool,
    /// On hold (local state; sent when the agent has `hold`).
    pub held: bool,
    /// Digits typed during the call.
    pub dtmf: String,
    /// Media facts, when reported.
    pub media: Option<MediaSecurity>,
    /// Key continuity of the current media keys (spec 6), when we hold a
    /// retained secret for the peer: `(true, "same keys as your confirmed
    /// call...")` or `(false, loud warning)`.
    pub continuity: Option<(bool, String)>,
    /// The media counters of the agent's last `media_stats` event (loss,
    /// jitter, round trip), for the call screen's quality line.
    pub stats: Option<MediaCounters>,
    /// Call waiting: another call was in progress when this one arrived
    /// (it rings softly; answering it holds the other).
    pub waiting: bool,
    /// The progress of the transfer we asked for in this call, for people
    /// (`Transferring to carol: 180 Ringing`), until it ends.
    pub transfer: Option<String>,
}

impl Call {
    /// A call just placed (`Phase::Calling`) or just arrived
    /// (`Phase::Incoming`) at Unix time `now`: not verified, not tunneled,
    /// not muted or held, no media yet.
    pub fn new(id: u64, peer: String, phase: Phase, now: u64) -> Self {
        Call {
            id,
            peer,
            outgoing: !matches!(phase, Phase::Incoming),
            phase,
            verified: None,
            tunneled: false,
            started_unix: now,
            muted: false,
            held: false,
            dtmf: String::new(),
            media: None,
            continuity: None,
            stats: None,
            waiting: false,
            transfer: None,
        }
    }
}

/// Who wrote a chat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// Us.
    Me,
    /// The peer.
    Them,
}

/// One secure message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Who wrote it.
    pub author: Author,
    /// The text.
    pub text: String,
    /// Security: for received lines as reported; for sent lines tunneled
    /// by construction (the agent refuses to send otherwise under `require`).
    pub security: Security,
    /// For sent lines: None while in flight, then the final status
    /// (`messages::DELIVERY_UNKNOWN` when
    /// ibephone closed before the answer).
    pub status: Option<u16>,
}

/// The time the window shows (status bar key period, call timers, history
/// stamps): the system clock, or one frozen instant so that snapshot tests
/// and screenshots draw the same picture every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// Always `unix` seconds since 1970, and `instant` on the monotonic clock.
    Frozen {
        /// Wall-clock time, Unix seconds.
        unix: u64,
        /// The monotonic instant that stands for "now".
        instant: Instant,
    },
}

impl Clock {
    /// Now, Unix seconds.
    pub fn unix(&self) -> u64 {
        match self {
            Clock::System => now_unix(),
            Clock::Frozen { unix, .. } => *unix,
        }
    }

    /// Now, on the monotonic clock.
    pub fn instant(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Frozen { instant, .. } => *instant,
        }
    }

    /// Whole seconds from `since` to now (0 if `since` is later).
    pub fn seconds_since(&self, since: Instant) -> u64 {
        self.instant().saturating_duration_since(since).as_secs()
    }
}

/// An error or notice shown above the screen until dismissed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    /// The sentence.
    pub text: String,
    /// An error (red) or a notice.
    pub error: bool,
}
