//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264), carrying the
//! keys of spec section 6 (`a=crypto`, `a=ibesip-dh`, `a=ibesip-dh-commit`,
//! `a=ibesip-rs`).
//!
//! Decisions where the spec is silent (pinned by tests):
//! - Exactly one `m=audio` line; any other media line is refused. Port 0
//!   (a refused stream) is refused too: a call without audio is not a call.
//! - The answerer prefers `AEAD_AES_128_GCM` whenever the offer lists it
//!   and we support it, else `AES_CM_128_HMAC_SHA1_80`
//!   (`gcm_is_chosen_when_both_offer_it`).
//! - The offerer always offers `RTP/SAVP`. A plain `RTP/AVP` offer is
//!   answered (in plain RTP) only under [`SecurityPolicy::AllowPlain`]; an
//!   answer whose profile differs from the offer is refused.
//! - Every offer and answer carries fresh SDES keys and a fresh X25519 key
//!   pair, so any re-INVITE (hold/resume) re-keys.
//! - Each of `a=ibesip-dh`, `a=ibesip-dh-commit` and `a=ibesip-rs` may
//!   appear once; a second one, or a malformed value, refuses the body.
//! - Sizes are bounded (16 KiB, 64 lines of `a=`-attributes per level).
//! - Opus is `opus/48000/2` on any dynamic payload type (96-127); the
//!   answer keeps the offer's number (RFC 3264 6.1). Its `a=fmtp` is not
//!   read: we decode mono or stereo, with or without FEC, whatever the
//!   peer sends. Our offer lists `minptime=10;useinbandfec=1` (RFC 7587 7).
//! - telephone-event is offered at 8 kHz (PT 101) when a G.711 codec is
//!   offered and at 48 kHz (PT 110) when Opus is; the answer keeps only
//!   the one whose clock is the chosen codec's (RFC 4733 2.1), so an Opus
//!   call whose peer has no `telephone-event/48000` has no DTMF
//!   (`answer_without_the_48k_event_means_no_dtmf_in_an_opus_call`).
//! - Every offer carries `a=rtcp-mux` (RFC 5761) and an answer carries it
//!   when the offer did; RTCP is sent, multiplexed on the RTP port, only
//!   when both sides said so ([`Negotiated::rtcp_mux`]). A peer without
//!   rtcp-mux gets no RTCP from us and its RTCP on port + 1 is never read:
//!   one port per call is what ICE (component 1 only) and NATs keep open,
//!   and the call's audio does not need the reports. The attribute is a
//!   plain flag outside spec section 6, which lists the key attributes
//!   and forbids no other (`rtcp_mux_is_offered_and_answered`).

use super::ice::{IceAttrs, IceError, IceParams};
use super::keys::MediaKeyError;
pub use super::negotiate::{
    answer, AnswerOutcome, Continuity, LocalMedia, MediaKeysPolicy, MediaSecurity, Negotiated,
    PendingAnswer, PendingOffer, RevealError, SdesOnlyReason, SecurityPolicy, SrtpKeys,
};
use super::sdp_attrs::{
    b32_parse, b32_to_value, dh_parse, dh_to_value, CryptoAttr, SdpAttrError, DH_COMMIT, RS,
};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Largest SDP body we read.
pub const MAX_SDP_LEN: usize = 16 * 1024;
const MAX_LINES: usize = 128;

/// Payload type we use for telephone-event at 8 kHz (RFC 4733).
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// Payload type we use for telephone-event at 48 kHz, the clock of an
/// Opus call (RFC 4733 2.1: the event clock is the audio codec's).
pub const TELEPHONE_EVENT_48K_PT: u8 = 110;

/// Dynamic payload type we offer Opus on (any dynamic one is answered).
pub const OPUS_PT: u8 = 111;

/// The `a=fmtp` parameters of our Opus offer (RFC 7587 7): 10 ms frames
/// are the least we take, and in-band FEC is welcome (we decode it).
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// Why an SDP body or an offer/answer exchange was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not well-formed SDP of the shape we accept.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// A key attribute is malformed.
    #[error(transparent)]
    Attr(#[from] SdpAttrError),
    /// An ICE attribute is malformed.
    #[error(transparent)]
    Ice(#[from] IceError),
    /// Key agreement failed (e.g. low-order X25519 key).
    #[error(transparent)]
    Keys(#[from] MediaKeyError),
    /// The peer offered plain RTP and our policy is `require`.
    #[error("peer offered unencrypted RTP (RTP/AVP) and the media policy requires SRTP")]
    PlainRefused,
    /// No SRTP suite in common.
    #[error("peer offered no SRTP suite we support")]
    NoCommonSuite,
    /// No audio codec in common.
    #[error("peer offered no audio codec we support")]
    NoCommonCodec,
    /// The answer does not fit the offer.
    #[error("answer does not match the offer: {0}")]
    AnswerMismatch(&'static str),
}

fn bad(why: impl Into<String>) -> SdpError {
    SdpError::Malformed(why.into())
}

/// Audio codecs we can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0, 8 kHz.
    Pcmu,
    /// G.711 A-law, static payload type 8, 8 kHz.
    Pcma,
    /// Opus (RFC 7587), a dynamic payload type, RTP clock 48 kHz; we send
    /// mono speech sampled at 48 kHz.
    Opus,
}

impl Codec {
    /// The payload type we offer it on: static for G.711, [`OPUS_PT`]
    /// for Opus (an answer follows the offer's number instead).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => OPUS_PT,
        }
    }

    /// The `a=rtpmap` encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// RTP clock rate in Hz (48000 for Opus whatever the audio's rate,
    /// RFC 7587 4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48_000,
        }
    }

    /// The sample rate of the audio the codec takes and gives, which is
    /// the rate the call's audio pipeline runs at.
    pub fn audio_rate(self) -> u32 {
        self.clock_rate()
    }

    /// The `a=rtpmap` value after the payload type (`PCMU/8000`,
    /// `opus/48000/2`: Opus always says two channels, RFC 7587 7).
    pub fn rtpmap(self) -> String {
        match self {
            Codec::Opus => "opus/48000/2".into(),
            c => format!("{}/{}", c.encoding_name(), c.clock_rate()),
        }
    }

    fn from_pt(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// Media direction attribute (RFC 3264 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly` (e.g. putting the peer on hold).
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub(crate) fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The answer's direction (RFC 3264 6.1): we send only if the offerer
    /// receives and we wish to, and receive only if it sends and we wish to.
    pub fn answer_to(offered: Direction, wish: Direction) -> Direction {
        Direction::from_flags(
            offered.receives() && wish.sends(),
            offered.sends() && wish.receives(),
        )
    }
}

/// The parsed (or to-be-sent) description of one audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDescription {
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (incremented by every re-offer).
    pub session_version: u64,
    /// Where to send RTP: `c=` address and `m=` port.
    pub rtp_addr: SocketAddr,
    /// `RTP/SAVP` (true) or `RTP/AVP` (false).
    pub secure: bool,
    /// Supported codecs, most preferred first.
    pub codecs: Vec<Codec>,
    /// The payload type of Opus, when `codecs` has it.
    pub opus_pt: Option<u8>,
    /// The telephone-event payload type at 8 kHz, if offered.
    pub telephone_event: Option<u8>,
    /// The telephone-event payload type at 48 kHz (for Opus), if offered.
    pub telephone_event_48k: Option<u8>,
    /// `a=ptime` in ms.
    pub ptime: u32,
    /// `a=crypto` lines of suites we know, in order.
    pub crypto: Vec<CryptoAttr>,
    /// `a=ibesip-dh` public key (the answerer's, spec 6 version 1.1).
    pub dh: Option<[u8; 32]>,
    /// `a=ibesip-dh-commit`: the offerer's commitment to its public key.
    pub dh_commit: Option<[u8; 32]>,
    /// `a=ibesip-rs`: the MAC proving the retained secret of a confirmed
    /// earlier call with this peer.
    pub rs_mac: Option<[u8; 32]>,
    /// Direction.
    pub direction: Direction,
    /// ICE credentials and candidates (RFC 8839), when the side runs ICE.
    pub ice: Option<IceParams>,
    /// `a=rtcp-mux` (RFC 5761): the side sends and takes RTCP on the RTP
    /// port.
    pub rtcp_mux: bool,
}

impl AudioDescription {
    /// The payload type `codec` runs on in this description.
    pub fn payload_type(&self, codec: Codec) -> u8 {
        match codec {
            Codec::Opus => self.opus_pt.unwrap_or(OPUS_PT),
            c => c.payload_type(),
        }
    }

    /// The telephone-event payload type whose clock is `clock_rate`.
    pub fn telephone_event_at(&self, clock_rate: u32) -> Option<u8> {
        match clock_rate {
            8000 => self.telephone_event,
            48_000 => self.telephone_event_48k,
            _ => None,
        }
    }

    fn events(&self) -> impl Iterator<Item = (u8, u32)> {
        [
            self.telephone_event.map(|pt| (pt, 8000)),
            self.telephone_event_48k.map(|pt| (pt, 48_000)),
        ]
        .into_iter()
        .flatten()
    }

    /// The SDP text (CRLF line ends).
    pub fn to_sdp(&self) -> String {
        let ip = self.rtp_addr.ip();
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut s = String::new();
        let _ = write!(
            s,
            "v=0\r\no=- {} {} IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n",
            self.session_id, self.session_version
        );
        let proto = if self.secure { "RTP/SAVP" } else { "RTP/AVP" };
        let _ = write!(s, "m=audio {} {proto}", self.rtp_addr.port());
        for c in &self.codecs {
            let _ = write!(s, " {}", self.payload_type(*c));
        }
        for (pt, _) in self.events() {
            let _ = write!(s, " {pt}");
        }
        s.push_str("\r\n");
        for c in &self.codecs {
            let pt = self.payload_type(*c);
            let _ = write!(s, "a=rtpmap:{pt} {}\r\n", c.rtpmap());
            if *c == Codec::Opus {
                let _ = write!(s, "a=fmtp:{pt} {OPUS_FMTP}\r\n");
            }
        }
        for (pt, rate) in self.events() {
            let _ = write!(
                s,
                "a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-16\r\n"
            );
        }
        let _ = write!(s, "a=ptime:{}\r\n", self.ptime);
        for c in &self.crypto {
            let _ = write!(s, "a={}\r\n", c.to_value());
        }
        if let Some(commit) = &self.dh_commit {
            let _ = write!(s, "a={}\r\n", b32_to_value(DH_COMMIT, commit));
        }
        if let Some(dh) = &self.dh {
            let _ = write!(s, "a={}\r\n", dh_to_value(dh));
        }
        if let Some(mac) = &self.rs_mac {
            let _ = write!(s, "a={}\r\n", b32_to_value(RS, mac));
        }
        if let Some(ice) = &self.ice {
            s.push_str(&ice.to_sdp());
        }
        if self.rtcp_mux {
            s.push_str("a=rtcp-mux\r\n");
        }
        let _ = write!(s, "a={}\r\n", self.direction.as_str());
        s
    }

    /// Parses an SDP body with exactly one audio stream; strict, never panics.
    pub fn parse(sdp: &str) -> Result<Self, SdpError> {
        if sdp.len() > MAX_SDP_LEN {
            return Err(bad("body too large"));
        }
        let lines: Vec<&str> = sdp
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() > MAX_LINES {
            return Err(bad("too many lines"));
        }
        let mut it = lines.iter();
        if it.next() != Some(&"v=0") {
            return Err(bad("first line must be v=0"));
        }
        let mut origin = None;
        let mut conn: Option<IpAddr> = None;
        let mut media: Option<(u16, bool, Vec<u8>)> = None;
        let mut rtpmaps: Vec<(u8, String)> = Vec::new();
        let mut ptime = 20;
        let mut crypto = Vec::new();
        let mut dh = None;
        let mut dh_commit = None;
        let mut rs_mac = None;
        let mut direction = None;
        let mut ice = IceAttrs::default();
        let mut rtcp_mux = false;
        let mut saw_s = false;
        let mut saw_t = false;
        for line in it {
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or_else(|| bad("line is not <type>=<value>"))?;
            match kind {
                "o" => {
                    let f: Vec<&str> = value.split(' ').collect();
                    let [_, id, ver, "IN", _, _] = f.as_slice() else {
                        return Err(bad("bad o= line"));
                    };
                    let id = id.parse::<u64>().map_err(|_| bad("bad o= session id"))?;
                    let ver = ver.parse::<u64>().map_err(|_| bad("bad o= version"))?;
                    origin = Some((id, ver));
                }
                "s" => saw_s = true,
                "t" => saw_t = true,
                "c" => {
                    let f: Vec<&str> = value.split(' ').collect();
                    let ip: IpAddr = match f.as_slice() {
                        ["IN", "IP4", a] | ["IN", "IP6", a] => a
                            .parse()
                            .map_err(|_| bad("c= address is not an IP literal"))?,
                        _ => return Err(bad("bad c= line")),
                    };
                    if ip.is_unspecified() || ip.is_multicast() {
                        return Err(bad("c= address must be a unicast address"));
                    }
                    conn = Some(ip);
                }
                "m" => {
                    if media.is_some() {
                        return Err(bad("more than one m= line"));
                    }
                    let mut f = value.split(' ');
                    if f.next() != Some("audio") {
                        return Err(bad("only m=audio is accepted"));
                    }
                    let port = f
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("bad or zero m= port"))?;
                    let secure = match f.next() {
                        Some("RTP/SAVP") => true,
                        Some("RTP/AVP") => false,
                        _ => return Err(bad("m= profile must be RTP/SAVP or RTP/AVP")),
                    };
                    let pts = f
                        .map(|p| p.parse::<u8>().ok().filter(|p| *p < 128))
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| bad("bad m= payload type"))?;
                    if pts.is_empty() {
                        return Err(bad("m= line lists no payload type"));
                    }
                    media = Some((port, secure, pts));
                }
                "a" => {
                    if let Some(rest) = value.strip_prefix("rtpmap:") {
                        let (pt, enc) = rest.split_once(' ').ok_or_else(|| bad("bad rtpmap"))?;
                        let pt = pt
                            .parse::<u8>()
                            .map_err(|_| bad("bad rtpmap payload type"))?;
                        rtpmaps.push((pt, enc.to_ascii_lowercase()));
                    } else if let Some(p) = value.strip_prefix("ptime:") {
                        ptime = p
                            .parse::<u32>()
                            .ok()
                            .filter(|p| (10..=200).contains(p))
                            .ok_or_else(|| bad("bad ptime"))?;
                    } else if value.starts_with("crypto:") {
                        if let Some(c) = CryptoAttr::parse(value)? {
                            crypto.push(c);
                        }
                    } else if value.starts_with("ibesip-dh:") {
                        if dh.replace(dh_parse(value)?).is_some() {
                            return Err(bad("more than one a=ibesip-dh"));
                        }
                    } else if value.starts_with("ibesip-dh-commit:") {
                        if dh_commit.replace(b32_parse(DH_COMMIT, value)?).is_some() {
                            return Err(bad("more than one a=ibesip-dh-commit"));
                        }
                    } else if value.starts_with("ibesip-rs:") {
                        if rs_mac.replace(b32_parse(RS, value)?).is_some() {
                            return Err(bad("more than one a=ibesip-rs"));
                        }
                    } else if ice.attr(value)? {
                    } else if value == "rtcp-mux" {
                        rtcp_mux = true;
                    } else if let Some(d) = Direction::parse(value) {
                        if direction.replace(d).is_some() {
                            return Err(bad("more than one direction attribute"));
                        }
                    }
                    // Other attributes (fmtp, rtcp, ...) are ignored (RFC 4566 5.13).
                }
                "b" | "i" | "u" | "e" | "p" | "r" | "z" | "k" => {}
                _ => return Err(bad("unknown line type")),
            }
        }
        let (session_id, session_version) = origin.ok_or_else(|| bad("no o= line"))?;
        if !saw_s || !saw_t {
            return Err(bad("no s= or t= line"));
        }
        let ip = conn.ok_or_else(|| bad("no c= line"))?;
        let (port, secure, pts) = media.ok_or_else(|| bad("no m=audio line"))?;
        let mut codecs = Vec::new();
        let mut opus_pt = None;
        let mut telephone_event = None;
        let mut telephone_event_48k = None;
        for pt in pts {
            let map = rtpmaps
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, e)| e.as_str());
            if let Some(c) = Codec::from_pt(pt) {
                let expected = format!("{}/8000", c.encoding_name().to_ascii_lowercase());
                if map.is_none_or(|m| m == expected) && !codecs.contains(&c) {
                    codecs.push(c);
                }
            } else if pt >= 96 && map == Some("opus/48000/2") && opus_pt.is_none() {
                opus_pt = Some(pt);
                codecs.push(Codec::Opus);
            } else if map == Some("telephone-event/8000") && telephone_event.is_none() {
                telephone_event = Some(pt);
            } else if map == Some("telephone-event/48000") && telephone_event_48k.is_none() {
                telephone_event_48k = Some(pt);
            }
        }
        Ok(AudioDescription {
            session_id,
            session_version,
            rtp_addr: SocketAddr::new(ip, port),
            secure,
            codecs,
            opus_pt,
            telephone_event,
            telephone_event_48k,
            ptime,
            crypto,
            dh,
            dh_commit,
            rs_mac,
            direction: direction.unwrap_or(Direction::SendRecv),
            ice: ice.finish(),
            rtcp_mux,
        })
    }
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;
