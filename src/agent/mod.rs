//! The user agent the application talks to: SIP core + tunnel + keys,
//! speaking one [`AgentCommand`] enum in and one [`AgentEvent`] enum out
//! (JSON lines in headless mode; the desktop app and the tests are other
//! subscribers of the same stream).

pub mod config;
pub mod filter;
pub mod headless;
pub mod keylog;

use crate::sip::driver::Core;
use crate::sip::ua::{self, Body, CallId, EndReason, UserAgent};
use crate::sip::Dest;
use filter::SecurityLog;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the application asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Register with the registrar (and keep refreshing).
    Register,
    /// Remove the registration.
    Unregister,
    /// Call `to` (`bob`, `bob@biloxi.com` or a SIP URI); the agent answers
    /// with events naming the call number it chose.
    Call {
        /// Callee.
        to: String,
    },
    /// Answer an incoming call.
    Answer {
        /// Call number.
        call: u64,
    },
    /// Refuse an incoming call (default 486 Busy Here).
    Reject {
        /// Call number.
        call: u64,
        /// Status.
        #[serde(default)]
        status: Option<u16>,
    },
    /// Hang up (CANCEL, reject or BYE as needed).
    Hangup {
        /// Call number.
        call: u64,
    },
    /// Send a secure text message.
    Message {
        /// Recipient.
        to: String,
        /// Text.
        text: String,
    },
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Registered for `expires` seconds.
    Registered {
        /// Granted lifetime.
        expires: u32,
    },
    /// Registration refused or timed out.
    RegistrationFailed {
        /// Final status.
        status: u16,
    },
    /// Registration removed.
    Unregistered,
    /// We started a call.
    Calling {
        /// Call number.
        call: u64,
        /// Callee URI.
        to: String,
    },
    /// A call arrives.
    IncomingCall {
        /// Call number.
        call: u64,
        /// The caller's From (inner message when tunneled).
        from: String,
        /// The caller's identity when a signature verified it; never set
        /// for an unprotected or unsigned call.
        verified: Option<String>,
        /// Whether the call's signaling is tunneled.
        tunneled: bool,
    },
    /// The callee is ringing.
    Ringing {
        /// Call number.
        call: u64,
    },
    /// The call is up.
    Answered {
        /// Call number.
        call: u64,
        /// The peer's verified identity, if any.
        verified: Option<String>,
        /// Whether the call's signaling is tunneled.
        tunneled: bool,
    },
    /// The call ended.
    Ended {
        /// Call number.
        call: u64,
        /// Why, for people.
        reason: String,
    },
    /// A text message arrived.
    MessageReceived {
        /// From.
        from: String,
        /// Text.
        text: String,
        /// Sender's verified identity, if any.
        verified: Option<String>,
        /// Whether it was tunneled.
        tunneled: bool,
    },
    /// A MESSAGE, OPTIONS or in-dialog request we sent completed.
    RequestCompleted {
        /// Method.
        method: String,
        /// Final status.
        status: u16,
    },
    /// A message was rejected by the tunnel or the policy (logged, no state changed).
    Rejected {
        /// Why.
        reason: String,
    },
    /// Something went wrong that the user should know.
    Error {
        /// A sentence for people.
        message: String,
    },
}

/// The agent core: a [`UserAgent`] whose filter is the tunnel, plus the
/// bookkeeping that turns core events into [`AgentEvent`]s with their
/// security facts. Sans-I/O like the core it wraps.
pub struct Agent {
    ua: UserAgent,
    log: Arc<Mutex<SecurityLog>>,
    domain: String,
    calls: HashMap<u64, String>,
    next_call: u64,
    events: VecDeque<AgentEvent>,
}

impl Agent {
    /// An agent around a user agent whose filter shares `log`.
    pub fn new(ua: UserAgent, log: Arc<Mutex<SecurityLog>>, domain: &str) -> Self {
        Agent {
            ua,
            log,
            domain: domain.to_string(),
            calls: HashMap::new(),
            next_call: 1,
            events: VecDeque::new(),
        }
    }

    /// `bob` -> `sip:bob@<our domain>`, `bob@x` -> `sip:bob@x`, URIs as they are.
    pub fn target_uri(&self, to: &str) -> String {
        let to = to.trim();
        if to.starts_with("sip:") || to.starts_with("sips:") {
            to.to_string()
        } else if to.contains('@') {
            format!("sip:{to}")
        } else {
            format!("sip:{to}@{}", self.domain)
        }
    }

    /// (verified peer, tunneled) of a dialog by SIP Call-ID.
    fn security_of(&self, sip_call_id: Option<&String>) -> (Option<String>, bool) {
        let (Some(cid), Ok(log)) = (sip_call_id, self.log.lock()) else {
            return (None, false);
        };
        if log.plain.contains(cid) {
            return (None, false);
        }
        match log.dialogs.get(cid) {
            Some(d) => (d.verified_peer.clone(), true),
            None => (None, false),
        }
    }

    fn take_log<T>(&self, f: impl FnOnce(&mut SecurityLog) -> T) -> Option<T> {
        self.log.lock().ok().map(|mut l| f(&mut l))
    }

    fn translate(&mut self, e: ua::Event) {
        let ev = match e {
            ua::Event::Registered { expires } => AgentEvent::Registered { expires },
            ua::Event::RegistrationFailed { status } => AgentEvent::RegistrationFailed { status },
            ua::Event::Unregistered => AgentEvent::Unregistered,
            ua::Event::IncomingCall { call, from, .. } => {
                let cid = self.take_log(|l| l.last_incoming_initial.take()).flatten();
                if let Some(c) = &cid {
                    self.calls.insert(call.0, c.clone());
                }
                let (verified, tunneled) = self.security_of(cid.as_ref());
                AgentEvent::IncomingCall {
                    call: call.0,
                    from,
                    verified,
                    tunneled,
                }
            }
            ua::Event::Ringing { call } => AgentEvent::Ringing { call: call.0 },
            ua::Event::Answered { call, .. } => {
                let (verified, tunneled) = self.security_of(self.calls.get(&call.0));
                AgentEvent::Answered {
                    call: call.0,
                    verified,
                    tunneled,
                }
            }
            ua::Event::Ended { call, reason } => AgentEvent::Ended {
                call: call.0,
                reason: match reason {
                    EndReason::LocalHangup => "local hangup".into(),
                    EndReason::RemoteHangup => "remote hangup".into(),
                    EndReason::Cancelled => "cancelled".into(),
                    EndReason::Rejected(s) => format!("rejected {s}"),
                    EndReason::Timeout => "timeout".into(),
                },
            },
            ua::Event::MessageReceived { from, body } => {
                let cid = self.take_log(|l| l.last_incoming_initial.take()).flatten();
                let (verified, tunneled) = self.security_of(cid.as_ref());
                AgentEvent::MessageReceived {
                    from,
                    text: String::from_utf8_lossy(&body.bytes).to_string(),
                    verified,
                    tunneled,
                }
            }
            ua::Event::RequestCompleted { method, status } => AgentEvent::RequestCompleted {
                method: method.to_string(),
                status,
            },
            ua::Event::Rejected { reason } => AgentEvent::Rejected { reason },
            ua::Event::InDialogRequest { .. } => return,
        };
        self.events.push_back(ev);
    }
}

impl Core for Agent {
    type Command = AgentCommand;
    type Event = AgentEvent;

    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        self.ua.handle_datagram(now, from, bytes);
    }

    fn handle_command(&mut self, now: Instant, cmd: AgentCommand) {
        let core = match cmd {
            AgentCommand::Register => ua::Command::Register,
            AgentCommand::Unregister => ua::Command::Unregister,
            AgentCommand::Call { to } => {
                let call = self.next_call;
                self.next_call += 1;
                let target = self.target_uri(&to);
                self.ua.handle_command(
                    now,
                    ua::Command::Call {
                        call: CallId(call),
                        target: target.clone(),
                        body: Body::default(),
                    },
                );
                if let Some(cid) = self.take_log(|l| l.last_outgoing_initial.take()).flatten() {
                    self.calls.insert(call, cid);
                    self.events
                        .push_back(AgentEvent::Calling { call, to: target });
                } else {
                    self.events.push_back(AgentEvent::Error {
                        message: format!("could not place a secured call to {target} (no keys or unknown domain)"),
                    });
                }
                return;
            }
            AgentCommand::Answer { call } => ua::Command::Answer {
                call: CallId(call),
                body: Body::default(),
            },
            AgentCommand::Reject { call, status } => ua::Command::Reject {
                call: CallId(call),
                status: status.unwrap_or(486),
            },
            AgentCommand::Hangup { call } => ua::Command::Hangup { call: CallId(call) },
            AgentCommand::Message { to, text } => ua::Command::Message {
                target: self.target_uri(&to),
                body: Body {
                    content_type: Some("text/plain;charset=utf-8".into()),
                    bytes: text.into_bytes(),
                },
            },
        };
        self.ua.handle_command(now, core);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ua.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.ua.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<crate::sip::Transmit> {
        self.ua.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<AgentEvent> {
        while let Some(e) = self.ua.poll_event() {
            self.translate(e);
        }
        self.events.pop_front()
    }
}
