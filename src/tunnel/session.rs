//! Tunnel sessions (spec 5.2): one per dialog or out-of-dialog transaction,
//! found by `session_id` or by dialog (Call-ID and the caller's tag), with
//! per-branch replay windows, bounded in number and expired when idle by
//! the `now` passed in. Also the memory of recently accepted session ids
//! (spec 5.4 freshness) and of recently accepted bodies (retransmissions).

use super::cms::Direction;
use super::replay::ReplayWindow;
use super::Opened;
use crate::ibe::Identity;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Which end of the session we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the first request.
    Caller,
    /// We received it.
    Callee,
}

impl Role {
    /// The direction of the messages we send.
    pub fn sending(self) -> Direction {
        match self {
            Role::Caller => Direction::CallerToCallee,
            Role::Callee => Direction::CalleeToCaller,
        }
    }
}

/// One tunnel session.
pub struct Session {
    /// `session_id`.
    pub session_id: [u8; 16],
    /// The session KEK.
    pub kek: Zeroizing<[u8; 32]>,
    /// Our role.
    pub role: Role,
    /// Call-ID of the dialog.
    pub call_id: String,
    /// The caller's tag (From tag of the first request).
    pub caller_tag: String,
    /// `SHA-256` of the first message's `encryptedKey`.
    pub session_binding: [u8; 32],
    /// Next `seq` we send.
    pub next_seq: u64,
    /// Replay windows of the peer's messages, by the peer's dialog tag
    /// (a forked INVITE has one per answering device; the callee keeps
    /// one under the empty tag).
    pub windows: HashMap<String, ReplayWindow>,
    /// The peer identity whose signature verified, by peer tag.
    pub verified_peer: HashMap<String, Identity>,
    /// Our own tags that have already sent their signed first response.
    pub signed_tags: Vec<String>,
    /// Last time the session was used.
    pub last_used: SystemTime,
}

impl Session {
    /// The key under which the peer's replay window for a message lives.
    pub fn peer_tag(&self, from_tag: &str, to_tag: &str) -> String {
        match self.role {
            Role::Callee => String::new(),
            Role::Caller if from_tag == self.caller_tag => to_tag.to_string(),
            Role::Caller => from_tag.to_string(),
        }
    }
}

/// All sessions, bounded.
pub struct SessionTable {
    by_id: HashMap<[u8; 16], Session>,
    by_dialog: HashMap<(String, String), [u8; 16]>,
    /// Session ids of accepted first messages, with when and the body hash.
    seen_ids: HashMap<[u8; 16], (SystemTime, [u8; 32])>,
    /// Recently accepted bodies, to answer retransmissions.
    recent: VecDeque<([u8; 32], SystemTime, Opened)>,
    max_sessions: usize,
    idle: Duration,
    id_memory: Duration,
    retransmission: Duration,
}

const RECENT: usize = 256;

impl SessionTable {
    /// An empty table holding at most `max_sessions` sessions, dropping
    /// sessions idle for `idle`, remembering session ids for `id_memory`
    /// and accepted bodies for `retransmission`.
    pub fn new(
        max_sessions: usize,
        idle: Duration,
        id_memory: Duration,
        retransmission: Duration,
    ) -> Self {
        SessionTable {
            by_id: HashMap::new(),
            by_dialog: HashMap::new(),
            seen_ids: HashMap::new(),
            recent: VecDeque::new(),
            max_sessions: max_sessions.max(1),
            idle,
            id_memory,
            retransmission,
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Drops idle sessions and old memories.
    pub fn expire(&mut self, now: SystemTime) {
        let idle = self.idle;
        let stale = |t: SystemTime| now.duration_since(t).is_ok_and(|d| d > idle);
        let dead: Vec<[u8; 16]> = self
            .by_id
            .iter()
            .filter(|(_, s)| stale(s.last_used))
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.remove(&id);
        }
        let memory = self.id_memory;
        self.seen_ids
            .retain(|_, (t, _)| now.duration_since(*t).map_or(true, |d| d <= memory));
        let window = self.retransmission;
        self.recent
            .retain(|(_, t, _)| now.duration_since(*t).map_or(true, |d| d <= window));
    }

    fn remove(&mut self, id: &[u8; 16]) {
        if let Some(s) = self.by_id.remove(id) {
            let key = (s.call_id.clone(), s.caller_tag.clone());
            if self.by_dialog.get(&key) == Some(id) {
                self.by_dialog.remove(&key);
            }
        }
    }

    /// Inserts a session, replacing any older session of the same dialog
    /// and evicting the least recently used one when full.
    pub fn insert(&mut self, session: Session) {
        let key = (session.call_id.clone(), session.caller_tag.clone());
        if let Some(old) = self.by_dialog.get(&key).copied() {
            self.remove(&old);
        }
        if self.by_id.len() >= self.max_sessions {
            if let Some(oldest) = self
                .by_id
                .values()
                .min_by_key(|s| s.last_used)
                .map(|s| s.session_id)
            {
                self.remove(&oldest);
            }
        }
        self.by_dialog.insert(key, session.session_id);
        self.by_id.insert(session.session_id, session);
    }

    /// The session with this id.
    pub fn get(&self, id: &[u8; 16]) -> Option<&Session> {
        self.by_id.get(id)
    }

    /// The session with this id, mutably.
    pub fn get_mut(&mut self, id: &[u8; 16]) -> Option<&mut Session> {
        self.by_id.get_mut(id)
    }

    /// The session of a dialog: tried with each of the message's tags as
    /// the caller's tag.
    pub fn find_dialog(&self, call_id: &str, from_tag: &str, to_tag: &str) -> Option<[u8; 16]> {
        [from_tag, to_tag].iter().find_map(|tag| {
            self.by_dialog
                .get(&(call_id.to_string(), tag.to_string()))
                .copied()
        })
    }

    /// Whether a first message with this session id was accepted within
    /// the memory period, and the hash of its body.
    pub fn seen_id(&self, id: &[u8; 16], now: SystemTime) -> Option<[u8; 32]> {
        self.seen_ids
            .get(id)
            .filter(|(t, _)| now.duration_since(*t).map_or(true, |d| d <= self.id_memory))
            .map(|(_, h)| *h)
    }

    /// Records an accepted first message.
    pub fn remember_id(&mut self, id: [u8; 16], body_hash: [u8; 32], now: SystemTime) {
        self.seen_ids.insert(id, (now, body_hash));
    }

    /// The result of a body with this hash accepted within the
    /// retransmission window before `now`.
    pub fn recent(&self, body_hash: &[u8; 32], now: SystemTime) -> Option<&Opened> {
        let window = self.retransmission;
        self.recent
            .iter()
            .find(|(h, t, _)| {
                h == body_hash && now.duration_since(*t).map_or(true, |d| d <= window)
            })
            .map(|(_, _, o)| o)
    }

    /// Remembers an accepted body for retransmissions.
    pub fn remember_body(&mut self, body_hash: [u8; 32], now: SystemTime, opened: Opened) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((body_hash, now, opened));
    }
}
