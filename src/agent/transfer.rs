//! Blind call transfer (RFC 3515 REFER, NOTIFY progress in `message/sipfrag`)
//! and call waiting (a second call while one is up; answer holds the
//! first, swap switches).
//!
//! We implement **blind transfer only**: a `Refer-To` with embedded headers
//! (`?Replaces=...`, attended transfer) or a `method` parameter other than
//! INVITE is refused (488), as is one that is not a `sip:`/`sips:` URI
//! naming an identity the strict identity parser ([`Aor::parse`]) accepts.
//! The new call goes to the canonical AOR of that identity (URI parameters
//! such as `maddr` or `transport` are dropped: every request goes to our
//! outbound proxy anyway), as a normal tunneled call keyed to it, and never
//! falls back to plain SIP, whatever the policy: the peer, not the user,
//! chose whom we call.
//!
//! Who may transfer us: a REFER is acted on only when the filter proved it
//! came tunneled, signed (or in a session opened by a signed message) by
//! the very identity verified for the call, in the call's own session (not
//! the first message of a new one). Anything else (plain under `ask` /
//! `allow-plain`, unsigned, another signer) is answered 403 and places no
//! call; so is one in a call not answered yet (an early dialog: nothing to
//! transfer). A REFER outside a dialog is refused by the SIP core (403). The
//! same rule holds for the NOTIFYs that tell us, as the transferor, how
//! the transfer went: only the verified peer's NOTIFY can end our call.

use super::filter::MessageSecurity;
use super::{Agent, AgentEvent};
use crate::ibe::identity::{Aor, Identity};
use crate::sip::ua::{self, CallId, EndReason};
use std::time::Instant;

/// Why a `Refer-To` is not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TransferError {
    /// Not a `sip:`/`sips:` URI (`tel:`, `http:`, garbage).
    #[error("the transfer target is not a sip: or sips: URI")]
    NotSip,
    /// Embedded headers (`?Replaces=...`): attended transfer, not
    /// implemented (blind transfer only).
    #[error("the transfer target carries embedded headers (attended transfer is not supported)")]
    EmbeddedHeaders,
    /// A `method` parameter other than INVITE: we only place calls.
    #[error("the transfer asks for method {0}, only INVITE is supported")]
    Method(String),
    /// The strict identity parser refuses the URI.
    #[error("the transfer target names no valid identity: {0}")]
    Identity(String),
}

/// The canonical AOR (`sip:user@host`) a `Refer-To` value (name-addr or
/// addr-spec) asks us to call, or why it is refused. Never panics.
pub(crate) fn transfer_target(refer_to: &str) -> Result<String, TransferError> {
    let s = refer_to.trim();
    let uri = match s.find('<') {
        Some(open) => {
            let rest = &s[open + 1..];
            let close = rest
                .find('>')
                .ok_or_else(|| TransferError::Identity("unterminated '<'".into()))?;
            &rest[..close]
        }
        None => s.split(';').next().unwrap_or_default(),
    };
    let scheme = uri.split(':').next().unwrap_or_default();
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips"))
        || !uri.contains(':')
    {
        return Err(TransferError::NotSip);
    }
    if uri.contains('?') {
        return Err(TransferError::EmbeddedHeaders);
    }
    for param in uri.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("method")
            && !value.trim().eq_ignore_ascii_case("INVITE")
        {
            let shown: String = value.chars().filter(|c| !c.is_control()).take(20).collect();
            return Err(TransferError::Method(shown));
        }
    }
    let aor = Aor::parse(uri).map_err(|e| TransferError::Identity(e.to_string()))?;
    Ok(aor.as_str().to_string())
}

/// The status code and reason of a `message/sipfrag` body's status line
/// (`SIP/2.0 200 OK`), if it has one.
pub(crate) fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code: u16 = code.parse().ok().filter(|c| (100..700).contains(c))?;
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    Some((code, reason))
}

/// The AOR of an identity string (`sip:bob@x#2026-12` -> `sip:bob@x`).
fn aor_of(identity: &str) -> Option<Aor> {
    Identity::parse(identity).ok().map(|i| i.aor().clone())
}

/// The reason phrase we write in a sipfrag for `status`.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Failed",
    }
}

impl Agent {
    /// Whether `facts` (the filter's record of the message just acted on)
    /// prove that `method` came from `call`'s verified peer in the call's
    /// own tunnel session.
    fn sent_by_verified_peer(
        &self,
        call: u64,
        method: &str,
        facts: Option<&MessageSecurity>,
    ) -> bool {
        let Some(f) = facts else { return false };
        let Some(peer) = f.verified_peer.as_deref().filter(|_| f.tunneled) else {
            return false;
        };
        let Some(ours) = self.security.get(&call).and_then(|s| s.verified.as_deref()) else {
            return false;
        };
        f.method == method
            && f.status.is_none()
            && !f.initial
            && !f.first_message
            && aor_of(peer).is_some()
            && aor_of(peer) == aor_of(ours)
    }

    /// The peer of `call` sent a REFER (held by the core): act on it or
    /// refuse it, see the module doc.
    pub(super) fn on_refer(&mut self, now: Instant, call: CallId, refer_to: &str) {
        let facts = self.current.take();
        let respond = |agent: &mut Agent, status: u16| {
            agent
                .ua
                .handle_command(now, ua::Command::RespondRefer { call, status });
        };
        if !self.sent_by_verified_peer(call.0, "REFER", facts.as_ref()) {
            respond(self, 403);
            return self.events.push_back(AgentEvent::Rejected {
                reason: format!(
                    "transfer request in call {} refused (403): not from the call's verified \
                     peer in its tunnel session",
                    call.0
                ),
            });
        }
        if !self.live.contains(&call.0) {
            // An early dialog (not answered yet): nothing to transfer.
            respond(self, 403);
            return self.events.push_back(AgentEvent::Rejected {
                reason: format!(
                    "transfer request in call {} refused (403): the call is not answered",
                    call.0
                ),
            });
        }
        if self.transfers_in.values().any(|c| *c == call.0) {
            return respond(self, 491);
        }
        let target = match transfer_target(refer_to) {
            Ok(t) => t,
            Err(e) => {
                respond(self, 488);
                return self.events.push_back(AgentEvent::Rejected {
                    reason: format!("transfer request in call {} refused (488): {e}", call.0),
                });
            }
        };
        respond(self, 202);
        let by = facts
            .and_then(|f| f.verified_peer)
            .and_then(|p| aor_of(&p))
            .map(|a| a.as_str().to_string());
        let new_call = self.next_call;
        self.next_call += 1;
        self.events.push_back(AgentEvent::TransferRequested {
            call: call.0,
            to: target.clone(),
            by,
            new_call,
        });
        self.notify_transfer(now, call.0, 100, false);
        self.transfers_in.insert(new_call, call.0);
        self.place_call(now, new_call, target, false);
        if !self.calls.contains_key(&new_call) {
            // Not placed (no keys, unknown domain): the error is reported.
            self.transfers_in.remove(&new_call);
            self.notify_transfer(now, call.0, 503, true);
        }
    }

    /// Sends the sipfrag NOTIFY `status` of the transfer of `call`.
    fn notify_transfer(&mut self, now: Instant, call: u64, status: u16, terminated: bool) {
        self.ua.handle_command(
            now,
            ua::Command::NotifyRefer {
                call: CallId(call),
                sipfrag: format!("SIP/2.0 {status} {}", reason_phrase(status)),
                terminated,
            },
        );
    }

    /// The call we placed for a transfer rings: tell the transferor.
    pub(super) fn transfer_ringing(&mut self, now: Instant, new_call: u64) {
        if let Some(orig) = self.transfers_in.get(&new_call).copied() {
            self.notify_transfer(now, orig, 180, false);
        }
    }

    /// The call we placed for a transfer is answered: the final NOTIFY,
    /// then the original call ends with BYE.
    pub(super) fn transfer_answered(&mut self, now: Instant, new_call: u64) {
        if let Some(orig) = self.transfers_in.remove(&new_call) {
            self.notify_transfer(now, orig, 200, true);
            self.ua
                .handle_command(now, ua::Command::Hangup { call: CallId(orig) });
        }
    }

    /// A call ended: a transfer call that failed tells the transferor its
    /// final status (the original call stays); an original call takes its
    /// pending transfers with it.
    pub(super) fn transfer_ended(&mut self, now: Instant, call: u64, reason: &EndReason) {
        self.transfers_out.remove(&call);
        self.transfers_in.retain(|_, orig| *orig != call);
        if let Some(orig) = self.transfers_in.remove(&call) {
            // No plain fallback for it: forget why the tunnel refused it.
            if let Some(cid) = self.calls.get(&call).cloned() {
                self.take_log(|l| l.tunnel_refused.remove(&cid));
            }
            let status = match reason {
                EndReason::Rejected(s) => *s,
                EndReason::Timeout => 408,
                EndReason::Cancelled => 487,
                _ => 480,
            };
            self.notify_transfer(now, orig, status, true);
        }
    }

    /// Whether `call` is a call we placed because the peer transferred us
    /// (it never falls back to plain SIP).
    pub(super) fn is_transfer_call(&self, call: u64) -> bool {
        self.transfers_in.contains_key(&call)
    }

    /// `transfer`: ask the peer of `call` to call `to` (REFER).
    pub(super) fn transfer(&mut self, now: Instant, call: u64, to: &str) {
        let uri = self.target_uri(to);
        let target = match transfer_target(&uri) {
            Ok(t) => t,
            Err(e) => return self.error(format!("call {call}: cannot transfer to {to:?}: {e}")),
        };
        if !self.live.contains(&call) {
            return self.error(format!("call {call}: no call in progress to transfer"));
        }
        if self.transfers_out.contains_key(&call) {
            return self.error(format!("call {call}: a transfer is already in progress"));
        }
        self.transfers_out.insert(call, target.clone());
        self.ua.handle_command(
            now,
            ua::Command::Refer {
                call: CallId(call),
                refer_to: target,
            },
        );
    }

    /// The final status of our REFER.
    pub(super) fn refer_answered(&mut self, call: u64, status: u16) {
        if !self.transfers_out.contains_key(&call) {
            return;
        }
        if status >= 300 {
            self.transfers_out.remove(&call);
            self.events.push_back(AgentEvent::TransferFailed {
                call,
                status,
                reason: format!("the other side refused the transfer ({status})"),
            });
        } else {
            self.events.push_back(AgentEvent::TransferProgress {
                call,
                status,
                reason: "Accepted".into(),
                done: false,
            });
        }
    }

    /// A NOTIFY arrived in `call` (answered 200 by the core): the progress
    /// of our transfer, if it is one and comes from the verified peer.
    pub(super) fn on_notify(&mut self, now: Instant, call: u64, body: &ua::Body) {
        let facts = self.current.take();
        if !self.transfers_out.contains_key(&call) {
            return;
        }
        if !self.sent_by_verified_peer(call, "NOTIFY", facts.as_ref()) {
            return self.events.push_back(AgentEvent::Rejected {
                reason: format!(
                    "transfer progress in call {call} ignored: not from the call's verified peer"
                ),
            });
        }
        let Some((status, reason)) = sipfrag_status(&body.bytes) else {
            return;
        };
        let done = status >= 200;
        self.events.push_back(AgentEvent::TransferProgress {
            call,
            status,
            reason: reason.clone(),
            done,
        });
        if !done {
            return;
        }
        self.transfers_out.remove(&call);
        if status < 300 {
            self.ua
                .handle_command(now, ua::Command::Hangup { call: CallId(call) });
        } else {
            self.events.push_back(AgentEvent::TransferFailed {
                call,
                status,
                reason: format!("the transfer target's call failed ({status} {reason})"),
            });
        }
    }

    /// Answering `call` while others are up puts those on hold first.
    pub(super) fn hold_others(&mut self, now: Instant, call: u64) {
        let others: Vec<u64> = self
            .live
            .iter()
            .copied()
            .filter(|c| *c != call)
            .filter(|c| self.media.as_ref().is_some_and(|m| !m.holding(*c)))
            .collect();
        for other in others {
            self.media_command(now, other, |m| m.hold(other, true).map(Some));
        }
    }

    /// `swap`: `call` becomes the active one: the others are held, it is
    /// resumed if we held it.
    pub(super) fn swap(&mut self, now: Instant, call: u64) {
        if !self.live.contains(&call) {
            return self.error(format!("call {call}: no call in progress to switch to"));
        }
        self.hold_others(now, call);
        if self.media.as_ref().is_some_and(|m| m.holding(call)) {
            self.media_command(now, call, |m| m.hold(call, false).map(Some));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_values_are_read_strictly() {
        let ok = |s: &str| transfer_target(s);
        assert_eq!(
            ok("<sip:carol@Biloxi.Invalid>"),
            Ok("sip:carol@biloxi.invalid".into())
        );
        assert_eq!(
            ok("\"Carol\" <sips:carol@biloxi.invalid;transport=tls;method=INVITE>"),
            Ok("sip:carol@biloxi.invalid".into())
        );
        assert_eq!(
            ok("sip:carol@biloxi.invalid;x=y"),
            Ok("sip:carol@biloxi.invalid".into())
        );
        assert_eq!(ok("<tel:+15551234>"), Err(TransferError::NotSip));
        assert_eq!(ok("<http://evil.invalid/>"), Err(TransferError::NotSip));
        assert_eq!(ok("carol"), Err(TransferError::NotSip));
        assert_eq!(ok(""), Err(TransferError::NotSip));
        assert_eq!(
            ok("<sip:carol@biloxi.invalid?Replaces=a%3Bto-tag%3Db>"),
            Err(TransferError::EmbeddedHeaders)
        );
        assert_eq!(
            ok("<sip:carol@biloxi.invalid;method=BYE>"),
            Err(TransferError::Method("BYE".into()))
        );
        for bad in [
            "<sip:biloxi.invalid>",
            "<sip:carol%40evil.invalid@biloxi.invalid>",
            "<sip:carol@>",
            "<sip:carol@biloxi.invalid",
            "<sip:car\u{0}ol@biloxi.invalid>",
        ] {
            assert!(
                matches!(ok(bad), Err(TransferError::Identity(_))),
                "{bad}: {:?}",
                ok(bad)
            );
        }
    }

    /// The headless JSON names of the new commands and events; an
    /// `incoming_call` without `waiting` (an older writer) reads as false.
    #[test]
    fn json_lines_name_transfer_swap_and_waiting() {
        use crate::agent::AgentCommand;
        let t: AgentCommand =
            serde_json::from_str(r#"{"cmd":"transfer","call":1,"to":"carol"}"#).unwrap();
        assert_eq!(
            t,
            AgentCommand::Transfer {
                call: 1,
                to: "carol".into()
            }
        );
        let s: AgentCommand = serde_json::from_str(r#"{"cmd":"swap","call":2}"#).unwrap();
        assert_eq!(s, AgentCommand::Swap { call: 2 });
        let e: AgentEvent = serde_json::from_str(
            r#"{"event":"incoming_call","call":3,"from":"x","verified":null,"tunneled":true}"#,
        )
        .unwrap();
        assert!(matches!(e, AgentEvent::IncomingCall { waiting: false, .. }));
        let p = serde_json::to_string(&AgentEvent::TransferProgress {
            call: 1,
            status: 200,
            reason: "OK".into(),
            done: true,
        })
        .unwrap();
        assert_eq!(
            p,
            r#"{"event":"transfer_progress","call":1,"status":200,"reason":"OK","done":true}"#
        );
    }

    #[test]
    fn sipfrag_status_lines_are_read_and_bounded() {
        assert_eq!(
            sipfrag_status(b"SIP/2.0 200 OK\r\n"),
            Some((200, "OK".into()))
        );
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nVia: x\r\n"),
            Some((486, "Busy Here".into()))
        );
        assert_eq!(sipfrag_status(b"SIP/2.0 100"), Some((100, String::new())));
        for bad in [
            &b"SIP/2.0 99 Low"[..],
            b"SIP/2.0 700 High",
            b"INVITE sip:x SIP/2.0",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(sipfrag_status(bad), None);
        }
        let long = format!("SIP/2.0 180 {}", "a".repeat(500));
        assert_eq!(sipfrag_status(long.as_bytes()).unwrap().1.len(), 64);
    }
}
