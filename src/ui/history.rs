//! The call history: one record per call (direction, peer, start time,
//! duration, security), newest first, in `history.json`, at most
//! [`MAX_RECORDS`] records.

use super::settings::{file_err, save_json};
use super::UiError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Records kept; older ones are dropped.
pub const MAX_RECORDS: usize = 200;

/// Who started the call and whether it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We called.
    Outgoing,
    /// They called and we answered.
    Incoming,
    /// They called and we did not answer.
    Missed,
}

/// How a call was protected, as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Tunneled, and the peer's signature verified this identity.
    Verified(String),
    /// Tunneled, but the peer's identity was not proven.
    Unverified,
    /// Not tunneled (let through by the policy).
    Plain,
}

impl Security {
    /// From the agent's `verified` and `tunneled` facts.
    pub fn from_facts(verified: Option<&str>, tunneled: bool) -> Self {
        match (verified, tunneled) {
            (Some(v), true) => Security::Verified(v.to_string()),
            (_, true) => Security::Unverified,
            (_, false) => Security::Plain,
        }
    }

    /// A short label for lists.
    pub fn label(&self) -> String {
        match self {
            Security::Verified(id) => format!("verified {}", super::dial::split_identity(id).0),
            Security::Unverified => "encrypted, identity not verified".into(),
            Security::Plain => "NOT encrypted".into(),
        }
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Direction.
    pub direction: Direction,
    /// The peer's address.
    pub peer: String,
    /// Start, Unix seconds.
    pub started_unix: u64,
    /// Seconds talked (None: never answered).
    pub duration_secs: Option<u64>,
    /// Security of the call.
    pub security: Security,
}

/// The history file.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    records: Vec<CallRecord>,
}

impl History {
    /// Reads `path`; a missing file is an empty history.
    pub fn load(path: &Path) -> Result<Self, UiError> {
        let records = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| file_err(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(file_err(path, e)),
        };
        Ok(History {
            path: path.to_path_buf(),
            records,
        })
    }

    /// An empty history that saves to `path`.
    pub fn empty(path: &Path) -> Self {
        History {
            path: path.to_path_buf(),
            records: Vec::new(),
        }
    }

    /// Newest first.
    pub fn records(&self) -> &[CallRecord] {
        &self.records
    }

    /// Adds a finished call and saves.
    pub fn push(&mut self, r: CallRecord) -> Result<(), UiError> {
        self.records.insert(0, r);
        self.records.truncate(MAX_RECORDS);
        save_json(&self.path, &self.records)
    }

    /// Forgets every call and saves.
    pub fn clear(&mut self) -> Result<(), UiError> {
        self.records.clear();
        save_json(&self.path, &self.records)
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of Unix seconds.
pub fn format_time(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60
    )
}

/// `M:SS` or `H:MM:SS`.
pub fn format_duration(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_persist_newest_first_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let mut h = History::load(&path).unwrap();
        for i in 0..(MAX_RECORDS as u64 + 5) {
            h.push(CallRecord {
                direction: Direction::Outgoing,
                peer: format!("sip:u{i}@atlanta.invalid"),
                started_unix: i,
                duration_secs: Some(i),
                security: Security::from_facts(Some("sip:u@atlanta.invalid#2026-12"), true),
            })
            .unwrap();
        }
        let h2 = History::load(&path).unwrap();
        assert_eq!(h2.records().len(), MAX_RECORDS);
        assert_eq!(h2.records()[0].started_unix, MAX_RECORDS as u64 + 4);
        assert_eq!(
            h2.records()[0].security.label(),
            "verified sip:u@atlanta.invalid"
        );
        assert_eq!(Security::from_facts(None, false), Security::Plain);
        assert_eq!(Security::from_facts(Some("x"), false), Security::Plain);
    }

    #[test]
    fn time_formats() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_796_083_200 + 3_723), "2026-12-01 01:02 UTC");
        assert_eq!(format_duration(65), "1:05");
        assert_eq!(format_duration(3_725), "1:02:05");
    }
}
