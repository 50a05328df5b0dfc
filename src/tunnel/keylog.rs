//! The key log, for debugging only and off unless a [`KeyLogSink`] is
//! installed with [`Tunnel::set_key_log`](super::Tunnel::set_key_log):
//! every session's KEK and every message's CEK, so that a capture can be
//! decrypted afterwards (`ibephone pcap decrypt FILE --keylog K`). Anyone
//! holding the log reads every message it covers; it is never written
//! unless asked for, and the values live in zeroizing buffers.
//!
//! Format: UTF-8 text, one entry per line, `#` comments and blank lines
//! ignored, hex in lower or upper case:
//!
//! ```text
//! IBESIP_KEK <session_id: 32 hex> <KEK: 64 hex>
//! IBESIP_CEK <session_id: 32 hex> <direction: 0|1> <seq: decimal> <CEK: 64 hex>
//! IBESIP_SRTP <call: decimal> <tx|rx> <suite> <master key || salt: hex>
//! ```
//!
//! `direction` and `seq` are those of the message's `ibesip-seq` (0:
//! caller to callee). The first message of a session needs its CEK line
//! (the KEK is derived from it, not the other way round); every later
//! message can be opened with the KEK line alone.
//!
//! `IBESIP_SRTP` lines are written by the agent's media driver, one per
//! call, direction (`tx`: the key we send with, `rx`: the peer's) and
//! offer/answer (a re-INVITE re-keys): the SRTP master key and salt of
//! `suite`, `AEAD_AES_128_GCM` (16 + 12 bytes, 56 hex) or
//! `AES_CM_128_HMAC_SHA1_80` (16 + 14 bytes, 60 hex), as in `a=crypto`.
//! `ibephone pcap decrypt` tries them on every SRTP flow of the capture.

use super::cms::Direction;
use std::collections::HashMap;
use thiserror::Error;
use zeroize::Zeroizing;

/// Label of a session-key line.
pub const KEK_LABEL: &str = "IBESIP_KEK";
/// Label of a content-key line.
pub const CEK_LABEL: &str = "IBESIP_CEK";
/// Label of an SRTP master key line.
pub const SRTP_LABEL: &str = "IBESIP_SRTP";
/// The SRTP suites a key log line may name, with their key || salt length.
pub const SRTP_SUITES: &[(&str, usize)] =
    &[("AEAD_AES_128_GCM", 28), ("AES_CM_128_HMAC_SHA1_80", 30)];
/// The labels of the NSS key log format (TLS secrets) that may share a
/// key log file with the tunnel's lines; [`KeyLog::parse`] skips them.
pub const NSS_LABELS: &[&str] = &[
    "CLIENT_RANDOM",
    "CLIENT_EARLY_TRAFFIC_SECRET",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EARLY_EXPORTER_SECRET",
    "EXPORTER_SECRET",
];
/// The comment a new key log file starts with.
pub const HEADER: &str =
    "# ibephone key log (IBESIP-V01): these keys decrypt the calls they cover; keep it private\n";

/// One secret the tunnel used.
#[derive(Clone)]
pub enum KeyLogEntry {
    /// A session's key encryption key.
    Kek {
        /// The session.
        session_id: [u8; 16],
        /// `KEK` (spec 5.2).
        kek: Zeroizing<[u8; 32]>,
    },
    /// One message's content-encryption key.
    Cek {
        /// The session.
        session_id: [u8; 16],
        /// Who sent the message.
        direction: Direction,
        /// Its `ibesip-seq`.
        seq: u64,
        /// The CEK.
        cek: Zeroizing<[u8; 32]>,
    },
    /// One direction's SRTP master key and salt of a call.
    Srtp {
        /// The agent's call number.
        call: u64,
        /// True for the key we send with, false for the peer's.
        sending: bool,
        /// The suite's SDP name (one of [`SRTP_SUITES`]).
        suite: &'static str,
        /// Master key || master salt.
        key: Zeroizing<Vec<u8>>,
    },
}

/// An SRTP master key read from a key log.
#[derive(Clone)]
pub struct SrtpLogKey {
    /// The suite's SDP name (one of [`SRTP_SUITES`]).
    pub suite: &'static str,
    /// Master key || master salt, of the suite's length.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyLogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyLogEntry::Kek { session_id, .. } => f
                .debug_struct("Kek")
                .field("session_id", &hex::encode(session_id))
                .field("kek", &"[redacted]")
                .finish(),
            KeyLogEntry::Cek {
                session_id,
                direction,
                seq,
                ..
            } => f
                .debug_struct("Cek")
                .field("session_id", &hex::encode(session_id))
                .field("direction", direction)
                .field("seq", seq)
                .field("cek", &"[redacted]")
                .finish(),
            KeyLogEntry::Srtp {
                call,
                sending,
                suite,
                ..
            } => f
                .debug_struct("Srtp")
                .field("call", call)
                .field("sending", sending)
                .field("suite", suite)
                .field("key", &"[redacted]")
                .finish(),
        }
    }
}

impl KeyLogEntry {
    /// The entry as one line of the key log format, newline included.
    pub fn line(&self) -> Zeroizing<String> {
        Zeroizing::new(match self {
            KeyLogEntry::Kek { session_id, kek } => format!(
                "{KEK_LABEL} {} {}\n",
                hex::encode(session_id),
                hex::encode(&kek[..])
            ),
            KeyLogEntry::Cek {
                session_id,
                direction,
                seq,
                cek,
            } => format!(
                "{CEK_LABEL} {} {} {seq} {}\n",
                hex::encode(session_id),
                *direction as u8,
                hex::encode(&cek[..])
            ),
            KeyLogEntry::Srtp {
                call,
                sending,
                suite,
                key,
            } => format!(
                "{SRTP_LABEL} {call} {} {suite} {}\n",
                if *sending { "tx" } else { "rx" },
                hex::encode(&key[..])
            ),
        })
    }
}

/// Where the tunnel reports the keys it uses, when asked to (debugging).
/// Called only after a message was sealed or opened successfully.
pub trait KeyLogSink: Send {
    /// Records one entry. Must not fail the tunnel: a sink that cannot
    /// write reports that its own way.
    fn record(&mut self, entry: &KeyLogEntry);
}

/// A sink that keeps entries in memory (tests, tools).
#[derive(Clone, Default)]
pub struct MemoryKeyLog(pub std::sync::Arc<std::sync::Mutex<Vec<KeyLogEntry>>>);

impl KeyLogSink for MemoryKeyLog {
    fn record(&mut self, entry: &KeyLogEntry) {
        if let Ok(mut v) = self.0.lock() {
            v.push(entry.clone());
        }
    }
}

impl MemoryKeyLog {
    /// Everything recorded so far, in the key log format.
    pub fn text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(HEADER.to_string());
        if let Ok(v) = self.0.lock() {
            for e in v.iter() {
                out.push_str(&e.line());
            }
        }
        out
    }
}

/// A line of a key log that cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("key log line {line}: {why}")]
pub struct KeyLogError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// (session id, direction, seq) of one message.
type MessageKey = ([u8; 16], u8, u64);

/// A parsed key log: KEKs by session, CEKs by (session, direction, seq)
/// (several per key when a forked dialog reused a number on two branches).
#[derive(Default)]
pub struct KeyLog {
    keks: HashMap<[u8; 16], Zeroizing<[u8; 32]>>,
    ceks: HashMap<MessageKey, Vec<Zeroizing<[u8; 32]>>>,
    srtp: Vec<SrtpLogKey>,
}

impl std::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLog")
            .field("keks", &self.keks.len())
            .field("ceks", &self.ceks.len())
            .field("srtp", &self.srtp.len())
            .finish()
    }
}

fn hex_array<const N: usize>(s: &str, what: &str) -> Result<Zeroizing<[u8; N]>, String> {
    if s.len() != 2 * N {
        return Err(format!("{what} must be {} hex digits", 2 * N));
    }
    let mut out = Zeroizing::new([0u8; N]);
    hex::decode_to_slice(s, &mut out[..]).map_err(|_| format!("{what} is not hex"))?;
    Ok(out)
}

impl KeyLog {
    /// Parses the key log format; the first bad line is an error naming it.
    pub fn parse(text: &str) -> Result<KeyLog, KeyLogError> {
        let mut log = KeyLog::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |why: String| KeyLogError { line: i + 1, why };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            // TLS secrets of the same agent (NSS key log format, see
            // `agent::keylog`): Wireshark's lines, not the tunnel's.
            if fields.first().is_some_and(|l| NSS_LABELS.contains(l)) {
                continue;
            }
            match fields.as_slice() {
                [KEK_LABEL, sid, kek] => {
                    let sid = hex_array::<16>(sid, "session id").map_err(err)?;
                    let kek = hex_array::<32>(kek, "KEK").map_err(err)?;
                    log.keks.insert(*sid, kek);
                }
                [CEK_LABEL, sid, dir, seq, cek] => {
                    let sid = hex_array::<16>(sid, "session id").map_err(err)?;
                    let dir = match *dir {
                        "0" => 0u8,
                        "1" => 1u8,
                        _ => return Err(err("direction must be 0 or 1".into())),
                    };
                    let seq: u64 = seq
                        .parse()
                        .map_err(|_| err("seq must be a decimal number".into()))?;
                    let cek = hex_array::<32>(cek, "CEK").map_err(err)?;
                    log.ceks.entry((*sid, dir, seq)).or_default().push(cek);
                }
                [SRTP_LABEL, call, dir, suite, key] => {
                    call.parse::<u64>()
                        .map_err(|_| err("call must be a decimal number".into()))?;
                    if !matches!(*dir, "tx" | "rx") {
                        return Err(err("direction must be tx or rx".into()));
                    }
                    let &(suite, len) = SRTP_SUITES
                        .iter()
                        .find(|(name, _)| name == suite)
                        .ok_or_else(|| err(format!("unknown SRTP suite {suite}")))?;
                    if key.len() != 2 * len {
                        return Err(err(format!(
                            "{suite} key || salt must be {} hex digits",
                            2 * len
                        )));
                    }
                    let key = Zeroizing::new(
                        hex::decode(key).map_err(|_| err("SRTP key is not hex".into()))?,
                    );
                    log.srtp.push(SrtpLogKey { suite, key });
                }
                [label, ..] if [KEK_LABEL, CEK_LABEL, SRTP_LABEL].contains(label) => {
                    return Err(err(format!("wrong number of fields for {label}")));
                }
                _ => return Err(err("not a key log entry".into())),
            }
        }
        Ok(log)
    }

    /// The KEK of a session, if logged.
    pub fn kek(&self, session_id: &[u8; 16]) -> Option<&[u8; 32]> {
        self.keks.get(session_id).map(|k| &**k)
    }

    /// The CEKs logged for one message.
    pub fn ceks(&self, session_id: &[u8; 16], direction: Direction, seq: u64) -> Vec<&[u8; 32]> {
        self.ceks
            .get(&(*session_id, direction as u8, seq))
            .map(|v| v.iter().map(|k| &**k).collect())
            .unwrap_or_default()
    }

    /// Every SRTP master key logged, in log order.
    pub fn srtp_keys(&self) -> &[SrtpLogKey] {
        &self.srtp
    }

    /// Number of sessions with a KEK and of messages with a CEK.
    pub fn counts(&self) -> (usize, usize) {
        (self.keks.len(), self.ceks.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let kek = KeyLogEntry::Kek {
            session_id: [1; 16],
            kek: Zeroizing::new([2; 32]),
        };
        let cek = KeyLogEntry::Cek {
            session_id: [1; 16],
            direction: Direction::CalleeToCaller,
            seq: 7,
            cek: Zeroizing::new([3; 32]),
        };
        let text = format!("{HEADER}\n{}{}", &*kek.line(), &*cek.line());
        let log = KeyLog::parse(&text).unwrap();
        assert_eq!(log.kek(&[1; 16]), Some(&[2; 32]));
        assert_eq!(
            log.ceks(&[1; 16], Direction::CalleeToCaller, 7),
            vec![&[3; 32]]
        );
        assert!(log.ceks(&[1; 16], Direction::CallerToCallee, 7).is_empty());
        assert!(!format!("{kek:?}").contains("0202"));
        let srtp = KeyLogEntry::Srtp {
            call: 3,
            sending: true,
            suite: "AEAD_AES_128_GCM",
            key: Zeroizing::new(vec![4; 28]),
        };
        assert_eq!(
            &*srtp.line(),
            &format!("IBESIP_SRTP 3 tx AEAD_AES_128_GCM {}\n", "04".repeat(28))
        );
        assert!(!format!("{srtp:?}").contains("0404"));
        let log = KeyLog::parse(&srtp.line()).unwrap();
        assert_eq!(log.srtp_keys().len(), 1);
        assert_eq!(log.srtp_keys()[0].suite, "AEAD_AES_128_GCM");
        assert_eq!(&log.srtp_keys()[0].key[..], &[4; 28]);
    }

    /// The agent's TLS secrets share the file (NSS format): they are
    /// skipped, the tunnel's lines around them still read.
    #[test]
    fn tls_lines_in_the_same_file_are_skipped() {
        let kek = KeyLogEntry::Kek {
            session_id: [9; 16],
            kek: Zeroizing::new([8; 32]),
        };
        let cr = "ab".repeat(32);
        let text = format!(
            "{HEADER}CLIENT_HANDSHAKE_TRAFFIC_SECRET {cr} {}\n{}SERVER_TRAFFIC_SECRET_0 {cr} {}\n",
            "01".repeat(48),
            &*kek.line(),
            "02".repeat(48)
        );
        let log = KeyLog::parse(&text).unwrap();
        assert_eq!(log.kek(&[9; 16]), Some(&[8; 32]));
        assert_eq!(log.counts(), (1, 0));
    }

    #[test]
    fn bad_lines_are_named() {
        let sid = "00".repeat(16);
        let key = "11".repeat(32);
        for (text, why) in [
            (format!("IBESIP_KEK {sid}"), "wrong number of fields"),
            (format!("IBESIP_KEK {sid} 11"), "KEK must be 64 hex digits"),
            (format!("IBESIP_CEK {sid} 2 0 {key}"), "direction"),
            (format!("IBESIP_CEK {sid} 0 x {key}"), "seq"),
            (format!("IBESIP_CEK zz{} 0 0 {key}", &sid[2..]), "not hex"),
            ("SERVER_RANDOM aa bb".to_string(), "not a key log entry"),
            (format!("IBESIP_SRTP x tx AEAD_AES_128_GCM {key}"), "call"),
            (
                format!("IBESIP_SRTP 1 up AEAD_AES_128_GCM {key}"),
                "tx or rx",
            ),
            (format!("IBESIP_SRTP 1 tx NULL {key}"), "unknown SRTP suite"),
            (
                format!("IBESIP_SRTP 1 tx AEAD_AES_128_GCM {key}"),
                "56 hex digits",
            ),
            (
                format!(
                    "IBESIP_SRTP 1 rx AES_CM_128_HMAC_SHA1_80 {}",
                    "zz".repeat(30)
                ),
                "not hex",
            ),
            ("IBESIP_SRTP 1 rx".to_string(), "wrong number of fields"),
        ] {
            let e = KeyLog::parse(&format!("# c\n\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 3, "{text}");
            assert!(e.why.contains(why), "{text}: {e}");
        }
    }
}
