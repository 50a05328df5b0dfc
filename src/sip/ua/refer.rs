//! Blind call transfer (RFC 3515 REFER, RFC 3892 Referred-By): the core
//! carries the messages, the application decides.
//!
//! - Received: an in-dialog REFER is held (like a deferred re-INVITE) and
//!   reported as [`Event::ReferReceived`]; the application answers it with
//!   [`Command::RespondRefer`] (202 to act on it, a 4xx to refuse), because
//!   only it knows who sent it (the tunnel's facts) and whether the
//!   `Refer-To` names an identity. A REFER outside any dialog is refused
//!   here (403): we transfer calls, nothing else. A second REFER while
//!   one waits for its answer gets 491.
//! - Progress: [`Command::NotifyRefer`] sends the implicit subscription's
//!   NOTIFY (`Event: refer`, `message/sipfrag`) in the call's dialog,
//!   through the filter like every in-dialog request.
//! - Sent: [`Command::Refer`] sends the REFER in the dialog; its final
//!   status comes back as [`Event::InDialogResponse`], the peer's NOTIFYs
//!   as [`Event::InDialogRequest`] (answered 200).
//!
//! [`Command::RespondRefer`]: super::Command::RespondRefer
//! [`Command::NotifyRefer`]: super::Command::NotifyRefer
//! [`Command::Refer`]: super::Command::Refer

use super::{set_body, Body, CallId, Event, UserAgent};
use crate::sip::message::Message;
use crate::sip::transaction::TxKey;
use rsip::Method;
use std::time::Instant;

/// How long the implicit subscription of a REFER we accepted lasts before
/// its final NOTIFY (RFC 3515 2.4.4 leaves it to the notifier).
const REFER_SUBSCRIPTION_SECS: u32 = 120;

impl UserAgent {
    /// An in-dialog REFER of `call` passed the dialog's checks: hold it for
    /// the application's answer.
    pub(super) fn on_refer(&mut self, now: Instant, key: TxKey, call: CallId, req: Message) {
        if self.held_refers.contains_key(&call) {
            let r = Message::response_to(&req, 491, "Request Pending", None);
            return self.respond(now, &key, r);
        }
        let targets: Vec<String> = req.header_values("Refer-To").map(str::to_string).collect();
        let [refer_to] = targets.as_slice() else {
            // RFC 3515 2.4.1: exactly one Refer-To.
            let r = Message::response_to(&req, 400, "Exactly One Refer-To", None);
            return self.respond(now, &key, r);
        };
        let refer_to = refer_to.clone();
        let referred_by = req.header("Referred-By").map(str::to_string);
        self.held_refers.insert(call, (key, req));
        self.events.push_back(Event::ReferReceived {
            call,
            refer_to,
            referred_by,
        });
    }

    /// A REFER outside any dialog: refused, we only transfer calls.
    pub(super) fn refuse_refer_outside_dialog(&mut self, now: Instant, key: TxKey, req: Message) {
        let r = Message::response_to(&req, 403, "Transfer Only Within A Call", Some(&self.tag()));
        self.respond(now, &key, r);
    }

    /// Answers the held REFER of `call` (202 accepts; anything else
    /// refuses). Ignored when none waits.
    pub(super) fn respond_refer(&mut self, now: Instant, call: CallId, status: u16) {
        let Some((key, req)) = self.held_refers.remove(&call) else {
            return;
        };
        let reason = match status {
            202 => "Accepted",
            200..=299 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            603 => "Decline",
            _ => "Refused",
        };
        let r = Message::response_to(&req, status, reason, None);
        self.respond(now, &key, r);
    }

    /// Sends a REFER in `call`'s confirmed dialog asking the peer to call
    /// `refer_to` (a URI), naming us in `Referred-By`.
    pub(super) fn send_refer(&mut self, now: Instant, call: CallId, refer_to: &str) {
        let contact = self.contact();
        let aor = self.aor();
        let Some(d) = self.calls.get_mut(&call).and_then(|c| c.confirmed_dialog()) else {
            return self.refer_not_sent(call, 481);
        };
        let mut m = d.request(Method::Refer);
        m.push_header("Refer-To", format!("<{refer_to}>"));
        m.push_header("Referred-By", format!("<{aor}>"));
        m.push_header("Contact", contact);
        set_body(&mut m, Body::default());
        match self.send_request(now, m) {
            Some(k) => {
                self.others.insert(k, (Method::Refer, Some(call)));
            }
            None => self.refer_not_sent(call, 503),
        }
    }

    /// A REFER that could not be sent is reported as failed (no dialog:
    /// 481; the filter refused it: 503), as its response would be.
    fn refer_not_sent(&mut self, call: CallId, status: u16) {
        self.events.push_back(Event::InDialogResponse {
            call,
            method: Method::Refer,
            status,
            body: Body::default(),
        });
    }

    /// Sends the NOTIFY of the REFER we accepted in `call`: `sipfrag` is
    /// the status line of the new call so far (`SIP/2.0 100 Trying`);
    /// `terminated` ends the implicit subscription (a final status).
    pub(super) fn notify_refer(
        &mut self,
        now: Instant,
        call: CallId,
        sipfrag: &str,
        terminated: bool,
    ) {
        let Some(d) = self.calls.get_mut(&call).and_then(|c| c.confirmed_dialog()) else {
            return;
        };
        let mut m = d.request(Method::Notify);
        m.push_header("Event", "refer");
        let state = if terminated {
            "terminated;reason=noresource".to_string()
        } else {
            format!("active;expires={REFER_SUBSCRIPTION_SECS}")
        };
        m.push_header("Subscription-State", state);
        let line: String = sipfrag
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        set_body(
            &mut m,
            Body {
                content_type: Some("message/sipfrag;version=2.0".into()),
                bytes: format!("{line}\r\n").into_bytes(),
            },
        );
        if let Some(k) = self.send_request(now, m) {
            self.others.insert(k, (Method::Notify, Some(call)));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Command, HeaderPolicy, UaConfig};
    use super::*;
    use crate::sip::digest::Password;
    use crate::sip::filter::NoFilter;
    use crate::sip::message::HeaderForm;
    use crate::sip::timers::Timers;
    use crate::sip::{Dest, Transport};

    const PROXY: &str = "127.0.0.1:5060";

    fn ua(user: &str, port: u16) -> UserAgent {
        let cfg = UaConfig {
            user: user.into(),
            domain: "example.invalid".into(),
            password: Password::new("pw"),
            proxy: PROXY.parse().unwrap(),
            local: format!("127.0.0.1:{port}"),
            transport: Transport::Udp,
            expires: 600,
            headers: HeaderPolicy {
                anonymous_from: false,
                ..HeaderPolicy::default()
            },
            timers: Timers::default(),
            max_transactions: 8,
        };
        UserAgent::new(cfg, Box::new(NoFilter))
    }

    fn deliver(now: Instant, from: &mut UserAgent, to: &mut UserAgent) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(t) = from.poll_transmit() {
            to.handle_datagram(now, Dest::udp(PROXY.parse().unwrap()), &t.bytes);
            out.push(Message::parse(&t.bytes).unwrap());
        }
        out
    }

    fn events(ua: &mut UserAgent) -> Vec<Event> {
        std::iter::from_fn(|| ua.poll_event()).collect()
    }

    /// alice calls bob, bob answers; returns bob's call handle.
    fn call(now: Instant, alice: &mut UserAgent, bob: &mut UserAgent) -> CallId {
        alice.handle_command(
            now,
            Command::Call {
                call: CallId(1),
                target: "sip:bob@example.invalid".into(),
                body: Body::default(),
            },
        );
        deliver(now, alice, bob);
        let Some(Event::IncomingCall { call, .. }) = events(bob).into_iter().next() else {
            panic!("no incoming call");
        };
        deliver(now, bob, alice);
        bob.handle_command(
            now,
            Command::Answer {
                call,
                body: Body::default(),
            },
        );
        deliver(now, bob, alice);
        deliver(now, alice, bob);
        events(alice);
        events(bob);
        call
    }

    fn status_of(sent: &[Message], method: Method) -> Option<u16> {
        sent.iter()
            .find(|m| m.status().is_some() && m.cseq().map(|(_, m)| m) == Some(method))
            .and_then(Message::status)
    }

    /// The REFER is held for the application and answered as it says; the
    /// NOTIFYs carry the sipfrag in the dialog; a REFER outside any dialog
    /// is refused and reported to nobody.
    #[test]
    fn a_refer_waits_for_the_application_and_notifies_follow() {
        let now = Instant::now();
        let mut alice = ua("alice", 5070);
        let mut bob = ua("bob", 5072);
        let bcall = call(now, &mut alice, &mut bob);
        bob.handle_command(
            now,
            Command::Refer {
                call: bcall,
                refer_to: "sip:carol@example.invalid".into(),
            },
        );
        let sent = deliver(now, &mut bob, &mut alice);
        let refer = sent
            .iter()
            .find(|m| m.method() == Some(Method::Refer))
            .unwrap();
        assert_eq!(
            refer.header("Refer-To"),
            Some("<sip:carol@example.invalid>")
        );
        assert_eq!(
            refer.header("Referred-By"),
            Some("<sip:bob@example.invalid>")
        );
        assert_eq!(
            events(&mut alice),
            vec![Event::ReferReceived {
                call: CallId(1),
                refer_to: "<sip:carol@example.invalid>".into(),
                referred_by: Some("<sip:bob@example.invalid>".into()),
            }]
        );
        assert!(alice.poll_transmit().is_none(), "held, not answered");
        alice.handle_command(
            now,
            Command::RespondRefer {
                call: CallId(1),
                status: 202,
            },
        );
        alice.handle_command(
            now,
            Command::NotifyRefer {
                call: CallId(1),
                sipfrag: "SIP/2.0 100 Trying".into(),
                terminated: false,
            },
        );
        let sent = deliver(now, &mut alice, &mut bob);
        assert_eq!(status_of(&sent, Method::Refer), Some(202));
        let notify = sent
            .iter()
            .find(|m| m.method() == Some(Method::Notify))
            .unwrap();
        assert_eq!(notify.header("Event"), Some("refer"));
        assert!(notify
            .header("Subscription-State")
            .unwrap()
            .starts_with("active"));
        assert_eq!(notify.body, b"SIP/2.0 100 Trying\r\n");
        let ev = events(&mut bob);
        assert!(ev.contains(&Event::InDialogResponse {
            call: bcall,
            method: Method::Refer,
            status: 202,
            body: Body::default()
        }));
        assert!(ev.iter().any(|e| matches!(e,
            Event::InDialogRequest { call, method: Method::Notify, body }
                if *call == bcall && body.bytes == b"SIP/2.0 100 Trying\r\n"
                && body.content_type.as_deref() == Some("message/sipfrag;version=2.0"))));
        // A second answer to the same REFER sends nothing.
        deliver(now, &mut bob, &mut alice);
        alice.handle_command(
            now,
            Command::RespondRefer {
                call: CallId(1),
                status: 202,
            },
        );
        assert!(alice.poll_transmit().is_none());
        events(&mut alice);

        // Out of dialog: 403, no event.
        let mut m = bob.new_request(
            Method::Refer,
            rsip::Uri::try_from("sip:alice@example.invalid").unwrap(),
            "sip:alice@example.invalid",
        );
        m.push_header("Refer-To", "<sip:carol@example.invalid>");
        m.set_header("Via", bob.via());
        alice.handle_datagram(
            now,
            Dest::udp(PROXY.parse().unwrap()),
            &m.to_bytes(HeaderForm::Full),
        );
        let answer = Message::parse(&alice.poll_transmit().unwrap().bytes).unwrap();
        assert_eq!(answer.status(), Some(403));
        assert!(events(&mut alice).is_empty());
    }

    /// Two Refer-To headers (or none) are a bad request; a second REFER
    /// while the first waits is 491.
    #[test]
    fn malformed_or_overlapping_refers_are_refused_in_the_core() {
        let now = Instant::now();
        let mut alice = ua("alice", 5070);
        let mut bob = ua("bob", 5072);
        let bcall = call(now, &mut alice, &mut bob);
        let refer = |bob: &mut UserAgent, targets: &[&str]| {
            let d = bob
                .calls
                .get_mut(&bcall)
                .and_then(|c| c.confirmed_dialog())
                .unwrap();
            let mut m = d.request(Method::Refer);
            for t in targets {
                m.push_header("Refer-To", *t);
            }
            bob.send_request(now, m).unwrap();
        };
        refer(&mut bob, &[]);
        refer(
            &mut bob,
            &["<sip:carol@example.invalid>", "<sip:dave@example.invalid>"],
        );
        let sent = deliver(now, &mut bob, &mut alice);
        assert_eq!(sent.len(), 2);
        let answers = deliver(now, &mut alice, &mut bob);
        let statuses: Vec<_> = answers.iter().filter_map(Message::status).collect();
        assert_eq!(statuses, vec![400, 400]);
        assert!(events(&mut alice).is_empty());
        refer(&mut bob, &["<sip:carol@example.invalid>"]);
        refer(&mut bob, &["<sip:dave@example.invalid>"]);
        deliver(now, &mut bob, &mut alice);
        let answers = deliver(now, &mut alice, &mut bob);
        let statuses: Vec<_> = answers.iter().filter_map(Message::status).collect();
        assert_eq!(statuses, vec![491]);
        assert_eq!(events(&mut alice).len(), 1);
    }

    /// A REFER in a call that is gone is reported failed at once.
    #[test]
    fn a_refer_without_a_dialog_is_reported_failed() {
        let now = Instant::now();
        let mut bob = ua("bob", 5072);
        bob.handle_command(
            now,
            Command::Refer {
                call: CallId(9),
                refer_to: "sip:carol@example.invalid".into(),
            },
        );
        assert!(bob.poll_transmit().is_none());
        assert_eq!(
            events(&mut bob),
            vec![Event::InDialogResponse {
                call: CallId(9),
                method: Method::Refer,
                status: 481,
                body: Body::default()
            }]
        );
    }
}
