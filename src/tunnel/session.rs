//! Tunnel sessions (spec 5.2): one per dialog or out-of-dialog transaction,
//! found by `session_id` or by dialog with exact roles (Call-ID, the
//! caller's tag and which end we are), with per-branch replay windows.
//!
//! Bounded state (every limit is a [`super::TunnelConfig`] field):
//! - Sessions that a peer opened and we have not sent in yet ("pending")
//!   are capped on their own, in total and per peer (the verified signer,
//!   or "unverified" for every unsigned first message), and evicted
//!   oldest-idle-first among themselves. A session we sent in
//!   ("established", and every session we opened ourselves) is never
//!   evicted by a newcomer: when the table is full of them, the newcomer
//!   is refused.
//! - Idle sessions expire: established dialogs (INVITE, SUBSCRIBE, REFER)
//!   after `session_idle`, everything else after `transaction_idle`.
//! - Accepted session ids are remembered for `session_id_memory` (spec 5.4)
//!   and never forgotten early: when that memory is full, new first
//!   messages are refused instead.
//! - Accepted bodies are remembered for `retransmission_window`, to answer
//!   retransmissions of the same transaction.

use super::cms::Direction;
use super::replay::ReplayWindow;
use super::Opened;
use crate::ibe::Identity;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Which end of the session we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The dialog tags of a message by role: `(caller tag, callee tag)`.
///
/// The caller's tag is the From tag of every message of a transaction the
/// caller started (its requests and the callee's responses to them) and
/// the To tag of every message of a transaction the callee started.
pub(crate) fn dialog_tags<'t>(
    is_request: bool,
    direction: Direction,
    from_tag: &'t str,
    to_tag: &'t str,
) -> (&'t str, &'t str) {
    let caller_started = is_request == (direction == Direction::CallerToCallee);
    if caller_started {
        (from_tag, to_tag)
    } else {
        (to_tag, from_tag)
    }
}

/// The methods whose first request creates a dialog (long-lived session).
pub(crate) fn creates_dialog(method: &str) -> bool {
    matches!(method, "INVITE" | "SUBSCRIBE" | "REFER")
}

/// One tunnel session.
pub(crate) struct Session {
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
    /// CSeq (number, method) of the first request: only responses to it
    /// may open a new branch (a fork, spec 5.3).
    pub initial_cseq: (u32, String),
    /// Whether the first request creates a dialog (INVITE, SUBSCRIBE,
    /// REFER) rather than one out-of-dialog transaction.
    pub dialog: bool,
    /// `SHA-256` of the first message's `encryptedKey`.
    pub session_binding: [u8; 32],
    /// Next `seq` we send.
    pub next_seq: u64,
    /// Replay windows of the peer's messages, by the peer's dialog tag
    /// (the caller's tag on the callee's side; on the caller's side one
    /// per answering device of a forked request).
    pub windows: HashMap<String, ReplayWindow>,
    /// The peer identity whose signature verified first on each branch,
    /// by peer tag; fixed once set.
    pub verified_peer: HashMap<String, Identity>,
    /// Our own dialog tags in this session (the caller's tag, or every
    /// To tag we answered with as callee).
    pub own_tags: Vec<String>,
    /// Whether we have sent in this session (always true for sessions we
    /// opened). Pending sessions can be evicted by newcomers.
    pub established: bool,
    /// Whether the dialog is established on our side: we answered the
    /// first request with a 2xx as callee (always true for sessions we
    /// opened). An unconfirmed session that no signature proved can be
    /// superseded by a signed first message on its Call-ID.
    pub confirmed: bool,
    /// Whom a pending session is charged to: the verified signer's AOR,
    /// or empty for unsigned first messages.
    pub opened_by: String,
    /// Last time the session was used.
    pub last_used: SystemTime,
}

/// Why the table cannot take a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every slot holds an established session.
    Sessions,
    /// The memory of accepted session ids is full.
    SessionIds,
}

/// Where a new session goes: the pending session it evicts, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    evict: Option<[u8; 16]>,
}

/// The limits of a [`SessionTable`].
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Most sessions held at once.
    pub max_sessions: usize,
    /// Most pending sessions (opened by peers, not answered yet).
    pub max_pending: usize,
    /// Most pending sessions charged to one peer.
    pub max_pending_per_peer: usize,
    /// Most remembered session ids.
    pub max_session_ids: usize,
    /// Idle time after which an established dialog's session is dropped.
    pub idle: Duration,
    /// Idle time after which any other session is dropped.
    pub transaction_idle: Duration,
    /// How long accepted session ids are remembered.
    pub id_memory: Duration,
    /// How long accepted bodies count as retransmissions.
    pub retransmission: Duration,
    /// Least time between two housekeeping sweeps.
    pub sweep_interval: Duration,
}

/// A body accepted recently, to answer retransmissions.
struct Recent {
    body_hash: [u8; 32],
    at: SystemTime,
    /// Top Via branch of the outer message (the transaction).
    branch: String,
    opened: Opened,
}

/// All sessions, bounded.
pub(crate) struct SessionTable {
    by_id: HashMap<[u8; 16], Session>,
    by_dialog: HashMap<(String, String, Role), [u8; 16]>,
    /// Number of live sessions per Call-ID.
    call_ids: HashMap<String, usize>,
    /// Session ids of accepted first messages, with when and the body hash.
    seen_ids: HashMap<[u8; 16], (SystemTime, [u8; 32])>,
    /// Recently accepted bodies, to answer retransmissions.
    recent: VecDeque<Recent>,
    limits: Limits,
    last_sweep: Option<SystemTime>,
}

/// Most remembered bodies (retransmission answers).
const RECENT: usize = 1024;

fn older_than(now: SystemTime, t: SystemTime, limit: Duration) -> bool {
    now.duration_since(t).is_ok_and(|d| d > limit)
}

impl SessionTable {
    /// An empty table with these limits.
    pub(crate) fn new(mut limits: Limits) -> Self {
        limits.max_sessions = limits.max_sessions.max(1);
        limits.max_pending = limits.max_pending.clamp(1, limits.max_sessions);
        limits.max_pending_per_peer = limits.max_pending_per_peer.clamp(1, limits.max_pending);
        limits.max_session_ids = limits.max_session_ids.max(1);
        SessionTable {
            by_id: HashMap::new(),
            by_dialog: HashMap::new(),
            call_ids: HashMap::new(),
            seen_ids: HashMap::new(),
            recent: VecDeque::new(),
            limits,
            last_sweep: None,
        }
    }

    /// Number of live sessions.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Number of pending sessions (opened by a peer, not answered).
    pub(crate) fn pending(&self) -> usize {
        self.by_id.values().filter(|s| !s.established).count()
    }

    /// Number of remembered session ids.
    pub(crate) fn remembered_ids(&self) -> usize {
        self.seen_ids.len()
    }

    fn idle_limit(&self, s: &Session) -> Duration {
        if s.dialog && s.established {
            self.limits.idle
        } else {
            self.limits.idle.min(self.limits.transaction_idle)
        }
    }

    /// Runs [`SessionTable::expire`] when the last sweep is at least the
    /// sweep interval before `now` (amortised housekeeping driven by the
    /// `now` of every seal and open).
    pub(crate) fn maybe_expire(&mut self, now: SystemTime) {
        let due = self.last_sweep.is_none_or(|t| {
            now.duration_since(t)
                .map_or(true, |d| d >= self.limits.sweep_interval)
        });
        if due {
            self.expire(now);
        }
    }

    /// Drops idle sessions and old memories.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        self.last_sweep = Some(now);
        let dead: Vec<[u8; 16]> = self
            .by_id
            .iter()
            .filter(|(_, s)| older_than(now, s.last_used, self.idle_limit(s)))
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.remove(&id);
        }
        let memory = self.limits.id_memory;
        self.seen_ids
            .retain(|_, (t, _)| !older_than(now, *t, memory));
        let window = self.limits.retransmission;
        self.recent.retain(|r| !older_than(now, r.at, window));
    }

    fn dialog_key(s: &Session) -> (String, String, Role) {
        (s.call_id.clone(), s.caller_tag.clone(), s.role)
    }

    /// Removes a session and everything that points to it.
    pub(crate) fn remove(&mut self, id: &[u8; 16]) {
        if let Some(s) = self.by_id.remove(id) {
            let key = Self::dialog_key(&s);
            if self.by_dialog.get(&key) == Some(id) {
                self.by_dialog.remove(&key);
            }
            if let Some(n) = self.call_ids.get_mut(&s.call_id) {
                *n -= 1;
                if *n == 0 {
                    self.call_ids.remove(&s.call_id);
                }
            }
            self.recent.retain(|r| r.opened.session_id != *id);
        }
    }

    /// Whether a live session (any role, any tags) has this Call-ID.
    pub(crate) fn call_id_in_use(&self, call_id: &str) -> bool {
        self.call_ids.contains_key(call_id)
    }

    fn oldest_pending(&self, charged_to: Option<&str>) -> Option<[u8; 16]> {
        self.by_id
            .values()
            .filter(|s| !s.established && charged_to.is_none_or(|p| s.opened_by == p))
            .min_by_key(|s| s.last_used)
            .map(|s| s.session_id)
    }

    /// Where a session that a peer opens (pending, charged to `opened_by`)
    /// would go; no state change. Evicts only pending sessions: first the
    /// same peer's oldest when it is at its own limit, then the oldest of
    /// all when the pending limit or the table is reached.
    pub(crate) fn slot_for_pending(&self, opened_by: &str) -> Result<Slot, Full> {
        if self.seen_ids.len() >= self.limits.max_session_ids {
            return Err(Full::SessionIds);
        }
        let mine = self
            .by_id
            .values()
            .filter(|s| !s.established && s.opened_by == opened_by)
            .count();
        if mine >= self.limits.max_pending_per_peer {
            return Ok(Slot {
                evict: self.oldest_pending(Some(opened_by)),
            });
        }
        if self.pending() >= self.limits.max_pending || self.by_id.len() >= self.limits.max_sessions
        {
            return match self.oldest_pending(None) {
                Some(id) => Ok(Slot { evict: Some(id) }),
                None => Err(Full::Sessions),
            };
        }
        Ok(Slot { evict: None })
    }

    /// The sessions on `call_id` when every one of them proves nothing and
    /// holds no dialog: opened by an unsigned first message from a peer
    /// (we are the callee), no signature verified on any branch, and not
    /// answered with a 2xx by us. `None` when any session on the Call-ID
    /// is ours, proved or confirmed (or there is none).
    pub(crate) fn unproven_on_call_id(&self, call_id: &str) -> Option<Vec<[u8; 16]>> {
        let on: Vec<&Session> = self
            .by_id
            .values()
            .filter(|s| s.call_id == call_id)
            .collect();
        let unproven = |s: &&Session| {
            s.role == Role::Callee
                && !s.confirmed
                && s.opened_by.is_empty()
                && s.verified_peer.is_empty()
        };
        (!on.is_empty() && on.iter().all(unproven))
            .then(|| on.iter().map(|s| s.session_id).collect())
    }

    /// Where a session that supersedes the sessions `replaced` would go
    /// (see [`SessionTable::unproven_on_call_id`]); no state change. Their
    /// removal frees at least one slot, so only the session-id memory can
    /// refuse it.
    pub(crate) fn slot_superseding(
        &self,
        opened_by: &str,
        replaced: &[[u8; 16]],
    ) -> Result<Slot, Full> {
        match self.slot_for_pending(opened_by) {
            Err(Full::Sessions) if !replaced.is_empty() => Ok(Slot { evict: None }),
            other => other,
        }
    }

    /// Where a session we open ourselves would go; no state change.
    /// `replaces` is our own earlier session of the same dialog that it
    /// takes over (a retried initial request), which frees its slot.
    pub(crate) fn slot_for_own(&self, replaces: Option<[u8; 16]>) -> Result<Slot, Full> {
        if replaces.is_some() || self.by_id.len() < self.limits.max_sessions {
            return Ok(Slot { evict: None });
        }
        match self.oldest_pending(None) {
            Some(id) => Ok(Slot { evict: Some(id) }),
            None => Err(Full::Sessions),
        }
    }

    /// Inserts a session into the slot found for it. The slot was computed
    /// on the current state, so this cannot fail.
    pub(crate) fn insert(&mut self, slot: Slot, session: Session) {
        if let Some(id) = slot.evict {
            self.remove(&id);
        }
        let key = Self::dialog_key(&session);
        if let Some(old) = self.by_dialog.get(&key).copied() {
            // Only our own earlier session of the same dialog (a retried
            // initial request): peers' first messages never get here with
            // a Call-ID in use.
            self.remove(&old);
        }
        *self.call_ids.entry(session.call_id.clone()).or_insert(0) += 1;
        self.by_dialog.insert(key, session.session_id);
        self.by_id.insert(session.session_id, session);
    }

    /// The session with this id.
    pub(crate) fn get(&self, id: &[u8; 16]) -> Option<&Session> {
        self.by_id.get(id)
    }

    /// The session with this id, mutably.
    pub(crate) fn get_mut(&mut self, id: &[u8; 16]) -> Option<&mut Session> {
        self.by_id.get_mut(id)
    }

    /// The session of the dialog with this Call-ID and caller's tag in
    /// which we have `role`.
    pub(crate) fn find_dialog(
        &self,
        call_id: &str,
        caller_tag: &str,
        role: Role,
    ) -> Option<[u8; 16]> {
        self.by_dialog
            .get(&(call_id.to_string(), caller_tag.to_string(), role))
            .copied()
    }

    /// Whether a first message with this session id was accepted within
    /// the memory period, and the hash of its body.
    pub(crate) fn seen_id(&self, id: &[u8; 16], now: SystemTime) -> Option<[u8; 32]> {
        self.seen_ids
            .get(id)
            .filter(|(t, _)| !older_than(now, *t, self.limits.id_memory))
            .map(|(_, h)| *h)
    }

    /// Records an accepted first message.
    pub(crate) fn remember_id(&mut self, id: [u8; 16], body_hash: [u8; 32], now: SystemTime) {
        self.seen_ids.insert(id, (now, body_hash));
    }

    /// The result of a body with this hash accepted within the
    /// retransmission window before `now` in the transaction whose top Via
    /// branch is `branch`, while its session is still live.
    pub(crate) fn recent(
        &self,
        body_hash: &[u8; 32],
        branch: &str,
        now: SystemTime,
    ) -> Option<&Opened> {
        self.recent
            .iter()
            .find(|r| {
                r.body_hash == *body_hash
                    && r.branch == branch
                    && !older_than(now, r.at, self.limits.retransmission)
                    && self.by_id.contains_key(&r.opened.session_id)
            })
            .map(|r| &r.opened)
    }

    /// Remembers an accepted body for retransmissions.
    pub(crate) fn remember_body(
        &mut self,
        body_hash: [u8; 32],
        branch: String,
        now: SystemTime,
        opened: Opened,
    ) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            body_hash,
            at: now,
            branch,
            opened,
        });
    }
}
