//! Calls of the user agent: INVITE as caller and callee, CANCEL, BYE, the
//! ACK of a 2xx (built by the dialog, so tunneled like any in-dialog
//! request) and the UAS's 2xx retransmission until the ACK arrives
//! (RFC 3261 13.3.1.4: T1 doubling, capped at T2, given up after 64*T1, then
//! BYE), for the initial INVITE and for every re-INVITE alike: the ACK of a
//! re-INVITE's 2xx carries the spec 6 key reveal (`Ibesip-Dh`), so a lost
//! one must be asked for again, not taken as lost for good. As UAC, a
//! retransmitted 2xx is answered with the ACK of the same INVITE (by CSeq),
//! never with another one's.

use super::{body_of, set_body, Body, CallId, EndReason, Event, UserAgent};
use crate::sip::dialog::{Dialog, DialogId, DialogState};
use crate::sip::message::{addr_parse, Message};
use crate::sip::transaction::client::cancel_for;
use crate::sip::transaction::TxKey;
use crate::sip::Dest;
use rsip::Method;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

#[derive(Debug)]
struct OkRetransmit {
    msg: Message,
    dest: Dest,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// One call.
#[derive(Debug)]
pub(super) struct Call {
    role: Role,
    dialog: Option<Dialog>,
    invite_key: Option<TxKey>,
    invite: Message,
    ringing_sent: bool,
    cancel_pending: bool,
    cancelled: bool,
    ack: Option<Message>,
    ok: Option<OkRetransmit>,
    /// UAS: the 2xx of the latest re-INVITE, retransmitted until its ACK
    /// (by CSeq number) arrives.
    reinvite_ok: Option<(u32, OkRetransmit)>,
    /// UAC: the ACK sent for the latest re-INVITE's 2xx (CSeq number,
    /// filtered ACK), sent again when that 2xx is retransmitted.
    reinvite_ack: Option<(u32, Message)>,
    bye_key: Option<TxKey>,
    /// UAS: when an unanswered call is refused (480), so an application
    /// that never answers cannot pin the call forever.
    ring_deadline: Option<Instant>,
    /// The `Ibesip-Dh` value our ACKs carry (spec 6 key reveal).
    reveal: Option<String>,
}

/// The inner header of the ACK that reveals the offerer's X25519 key
/// (spec 6, version 1.1).
pub const IBESIP_DH: &str = "Ibesip-Dh";

/// How long an incoming call may ring unanswered.
const RING_TIMEOUT: Duration = Duration::from_secs(180);

impl Call {
    /// The call's dialog once confirmed (in-dialog requests go there).
    pub(super) fn confirmed_dialog(&mut self) -> Option<&mut Dialog> {
        self.dialog
            .as_mut()
            .filter(|d| d.state == DialogState::Confirmed)
    }

    pub(super) fn set_reveal(&mut self, value: Option<String>) {
        self.reveal = value;
    }

    fn add_reveal(&self, ack: &mut Message) {
        if let Some(v) = &self.reveal {
            ack.push_header(IBESIP_DH, v.clone());
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let ok = self.ok.as_ref().map(|o| o.next.min(o.give_up));
        let re = self
            .reinvite_ok
            .as_ref()
            .map(|(_, o)| o.next.min(o.give_up));
        ok.into_iter().chain(re).chain(self.ring_deadline).min()
    }
}

impl UserAgent {
    pub(super) fn place_call(&mut self, now: Instant, call: CallId, target: &str, body: Body) {
        if self.calls.len() >= self.cfg.max_transactions || self.calls.contains_key(&call) {
            self.events.push_back(Event::Ended {
                call,
                reason: EndReason::Rejected(503),
            });
            return;
        }
        let Some(uri) = addr_parse(target) else {
            self.events.push_back(Event::Ended {
                call,
                reason: EndReason::Rejected(416),
            });
            return;
        };
        let mut m = self.new_request(Method::Invite, uri, target);
        m.push_header("Contact", self.contact());
        set_body(&mut m, body);
        let Some(key) = self.send_request(now, m.clone()) else {
            self.events.push_back(Event::Ended {
                call,
                reason: EndReason::Rejected(503),
            });
            return;
        };
        self.by_client_tx.insert(key.clone(), call);
        self.calls.insert(
            call,
            Call {
                role: Role::Uac,
                dialog: None,
                invite_key: Some(key),
                invite: m,
                ringing_sent: false,
                cancel_pending: false,
                cancelled: false,
                ack: None,
                ok: None,
                reinvite_ok: None,
                reinvite_ack: None,
                bye_key: None,
                ring_deadline: None,
                reveal: None,
            },
        );
    }

    pub(super) fn on_invite(&mut self, now: Instant, key: TxKey, req: Message) {
        let tag = self.tag();
        if self.calls.len() >= self.cfg.max_transactions {
            let r = Message::response_to(&req, 486, "Busy Here", Some(&tag));
            return self.respond(now, &key, r);
        }
        let Ok(dialog) = Dialog::uas(&req, &tag) else {
            let r = Message::response_to(&req, 400, "Bad Request", Some(&tag));
            return self.respond(now, &key, r);
        };
        let call = CallId(self.next_incoming);
        self.next_incoming += 1;
        let mut ringing = Message::response_to(&req, 180, "Ringing", Some(&tag));
        ringing.push_header("Contact", self.contact());
        self.respond(now, &key, ringing);
        self.by_server_tx.insert(key.clone(), call);
        self.by_dialog.insert(dialog.id.clone(), call);
        let from = req.header("From").unwrap_or("").to_string();
        let body = body_of(&req);
        self.calls.insert(
            call,
            Call {
                role: Role::Uas,
                dialog: Some(dialog),
                invite_key: Some(key),
                invite: req,
                ringing_sent: true,
                cancel_pending: false,
                cancelled: false,
                ack: None,
                ok: None,
                reinvite_ok: None,
                reinvite_ack: None,
                bye_key: None,
                ring_deadline: Some(now + RING_TIMEOUT),
                reveal: None,
            },
        );
        self.events
            .push_back(Event::IncomingCall { call, from, body });
    }

    pub(super) fn answer(&mut self, now: Instant, call: CallId, body: Body) {
        let contact = self.contact();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(key), Some(d)) = (c.invite_key.clone(), c.dialog.as_mut()) else {
            return;
        };
        if c.role != Role::Uas || !self.tx.server_pending(&key) {
            return;
        }
        d.state = DialogState::Confirmed;
        c.ring_deadline = None;
        let mut ok = Message::response_to(&c.invite, 200, "OK", Some(&d.id.local_tag));
        ok.push_header("Contact", contact);
        set_body(&mut ok, body);
        let Some(dest) = self.tx.server_dest(&key) else {
            return;
        };
        let ok = match self.filter.outgoing(now, ok) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(%e, "filter refused 200"),
        };
        let _ = self.tx.send_response(now, &key, &ok);
        let t = self.cfg.timers;
        c.ok = Some(OkRetransmit {
            msg: ok,
            dest,
            next: now + t.t1,
            interval: t.t1,
            give_up: now + t.t1 * 64,
        });
    }

    /// [`super::Command::Forget`]: an unanswered incoming call ends here,
    /// nothing sent.
    pub(super) fn forget(&mut self, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(key) = c.invite_key.clone() else {
            return;
        };
        if c.role != Role::Uas || !self.tx.server_pending(&key) {
            return;
        }
        self.tx.forget_server(&key);
        self.end_call(call, EndReason::Forgotten);
    }

    pub(super) fn reject(&mut self, now: Instant, call: CallId, status: u16) {
        self.refuse(now, call, status, EndReason::Rejected(status));
    }

    fn refuse(&mut self, now: Instant, call: CallId, status: u16, end: EndReason) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (Some(key), Some(d)) = (c.invite_key.clone(), c.dialog.as_ref()) else {
            return;
        };
        if c.role != Role::Uas || !self.tx.server_pending(&key) {
            return;
        }
        let reason = match status {
            480 => "Temporarily Unavailable",
            486 => "Busy Here",
            488 => "Not Acceptable Here",
            415 => "Unsupported Media Type",
            493 => "Undecipherable",
            _ => "Decline",
        };
        let mut r = Message::response_to(&c.invite, status, reason, Some(&d.id.local_tag));
        if status == 415 {
            // Spec 5.6: a UA without the profile says what it accepts.
            r.push_header("Accept", "application/sdp");
        }
        self.respond(now, &key, r);
        self.end_call(call, end);
    }

    pub(super) fn hangup(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let confirmed = c
            .dialog
            .as_ref()
            .is_some_and(|d| d.state == DialogState::Confirmed);
        match (c.role, confirmed) {
            (Role::Uac, false) => {
                c.cancelled = true;
                let Some(key) = c.invite_key.clone() else {
                    return;
                };
                if self.tx.client_proceeding(&key) {
                    self.send_cancel(now, &key);
                } else if let Some(c) = self.calls.get_mut(&call) {
                    // RFC 3261 9.1: no CANCEL before a provisional response.
                    c.cancel_pending = true;
                }
            }
            (Role::Uas, false) => self.reject(now, call, 603),
            (_, true) => self.send_bye(now, call),
        }
    }

    fn send_cancel(&mut self, now: Instant, invite_key: &TxKey) {
        let Some(outer) = self.tx.client_request(invite_key) else {
            return;
        };
        let cancel = cancel_for(outer);
        let dest = self.tx.client_dest(invite_key);
        // The CANCEL must carry the INVITE's Via, so it bypasses
        // `send_request` (which writes a new Via) but still passes the filter.
        match self.filter.outgoing(now, cancel) {
            Ok(m) => {
                if let Some(dest) = dest {
                    let _ = self.tx.send_request(now, m, dest);
                }
            }
            Err(e) => tracing::warn!(%e, "filter refused CANCEL"),
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_mut() else { return };
        let bye = d.request(Method::Bye);
        d.state = DialogState::Terminated;
        c.ok = None;
        c.reinvite_ok = None;
        match self.send_request(now, bye) {
            Some(k) => {
                self.by_client_tx.insert(k.clone(), call);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.bye_key = Some(k);
                }
            }
            None => self.end_call(call, EndReason::LocalHangup),
        }
    }

    pub(super) fn in_dialog(&mut self, now: Instant, call: CallId, method: Method, body: Body) {
        let contact = self.contact();
        let Some(d) = self.calls.get_mut(&call).and_then(|c| c.dialog.as_mut()) else {
            return;
        };
        if d.state != DialogState::Confirmed {
            return;
        }
        let mut m = d.request(method);
        if matches!(method, Method::Invite | Method::Update) {
            m.push_header("Contact", contact);
        }
        set_body(&mut m, body);
        if let Some(k) = self.send_request(now, m) {
            self.others.insert(k, (method, Some(call)));
        }
    }

    /// Sends an `INFO` in the dialog of `call` carrying the inner
    /// `Ibesip-Dh` header (the key reveal of an offer made in our 2xx).
    pub(super) fn reveal_in_info(&mut self, now: Instant, call: CallId, value: String) {
        let Some(d) = self.calls.get_mut(&call).and_then(|c| c.dialog.as_mut()) else {
            return;
        };
        if d.state != DialogState::Confirmed {
            return;
        }
        let mut m = d.request(Method::Info);
        m.push_header(IBESIP_DH, value);
        set_body(&mut m, Body::default());
        if let Some(k) = self.send_request(now, m) {
            self.others.insert(k, (Method::Info, Some(call)));
        }
    }

    /// Sends the final response to a held re-INVITE.
    pub(super) fn respond_in_dialog(
        &mut self,
        now: Instant,
        call: CallId,
        status: u16,
        body: Body,
    ) {
        let Some((key, req)) = self.held_reinvites.remove(&call) else {
            return;
        };
        let reason = match status {
            200..=299 => "OK",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            _ => "Error",
        };
        let mut r = Message::response_to(&req, status, reason, None);
        if (200..300).contains(&status) {
            r.push_header("Contact", self.contact());
            set_body(&mut r, body);
            return self.respond_reinvite_2xx(now, call, &key, &req, r);
        }
        self.respond(now, &key, r);
    }

    /// Sends the 2xx of a re-INVITE and retransmits it until its ACK
    /// arrives (RFC 3261 13.3.1.4), as for the initial INVITE.
    fn respond_reinvite_2xx(
        &mut self,
        now: Instant,
        call: CallId,
        key: &TxKey,
        req: &Message,
        ok: Message,
    ) {
        let Some(dest) = self.tx.server_dest(key) else {
            return;
        };
        let ok = match self.filter.outgoing(now, ok) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(%e, "filter refused re-INVITE 2xx"),
        };
        if let Err(e) = self.tx.send_response(now, key, &ok) {
            return tracing::debug!(%e, "re-INVITE 2xx not sent");
        }
        let cseq = req.cseq().map(|(n, _)| n).unwrap_or_default();
        let t = self.cfg.timers;
        if let Some(c) = self.calls.get_mut(&call) {
            c.reinvite_ok = Some((
                cseq,
                OkRetransmit {
                    msg: ok,
                    dest,
                    next: now + t.t1,
                    interval: t.t1,
                    give_up: now + t.t1 * 64,
                },
            ));
        }
    }

    /// ACKs the 2xx of a re-INVITE (RFC 3261 14.1), through the filter.
    pub(super) fn ack_reinvite(&mut self, now: Instant, call: CallId, resp: &Message) {
        let via = self.via();
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_ref() else {
            return;
        };
        let cseq = resp.cseq().map(|(n, _)| n).unwrap_or(d.local_cseq);
        let mut ack = d.ack(cseq);
        ack.set_header("Via", via);
        c.add_reveal(&mut ack);
        if let Ok(ack) = self.filter.outgoing(now, ack) {
            let dest = Dest {
                addr: self.cfg.proxy,
                transport: self.cfg.transport,
            };
            self.tx.send_stateless(&ack, dest);
            if let Some(c) = self.calls.get_mut(&call) {
                c.reinvite_ack = Some((cseq, ack));
            }
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, key: TxKey, req: Message) {
        let invite_key = key.invite();
        let call = self.by_server_tx.get(&invite_key).copied();
        let pending = self.tx.server_pending(&invite_key);
        let tag = self.tag();
        match call {
            Some(call) if pending => {
                self.respond(now, &key, Message::response_to(&req, 200, "OK", Some(&tag)));
                if let Some(c) = self.calls.get(&call) {
                    let ltag = c.dialog.as_ref().map(|d| d.id.local_tag.clone());
                    let r =
                        Message::response_to(&c.invite, 487, "Request Terminated", ltag.as_deref());
                    self.respond(now, &invite_key, r);
                }
                self.end_call(call, EndReason::Cancelled);
            }
            _ => {
                let r =
                    Message::response_to(&req, 481, "Call/Transaction Does Not Exist", Some(&tag));
                self.respond(now, &key, r);
            }
        }
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        now: Instant,
        key: TxKey,
        id: DialogId,
        req: Message,
    ) {
        let contact = self.contact();
        // Asked right after the filter let `req` through.
        let trusted = self.filter.may_refresh_target();
        let Some(call) = self.by_dialog.get(&id).copied() else {
            let r = Message::response_to(&req, 481, "Call/Transaction Does Not Exist", None);
            return self.respond(now, &key, r);
        };
        let Some(d) = self.calls.get_mut(&call).and_then(|c| c.dialog.as_mut()) else {
            return;
        };
        if d.on_request(&req, trusted).is_err() {
            let r = Message::response_to(&req, 500, "Server Internal Error", None);
            return self.respond(now, &key, r);
        }
        let method = req.method().unwrap_or(Method::Info);
        if method == Method::Refer {
            return self.on_refer(now, key, call, req);
        }
        if method == Method::Invite && self.defer_reinvites {
            if self.held_reinvites.contains_key(&call) {
                let mut r = Message::response_to(&req, 500, "Server Internal Error", None);
                r.push_header("Retry-After", "1".to_string());
                return self.respond(now, &key, r);
            }
            let body = body_of(&req);
            self.held_reinvites.insert(call, (key, req));
            self.events
                .push_back(Event::InDialogRequest { call, method, body });
            return;
        }
        let mut ok = Message::response_to(&req, 200, "OK", None);
        if method == Method::Invite {
            ok.push_header("Contact", contact);
            self.respond_reinvite_2xx(now, call, &key, &req, ok);
        } else {
            self.respond(now, &key, ok);
        }
        if method == Method::Bye {
            self.end_call(call, EndReason::RemoteHangup);
        } else {
            self.events.push_back(Event::InDialogRequest {
                call,
                method,
                body: body_of(&req),
            });
        }
    }

    pub(super) fn on_ack(&mut self, ack: Message) {
        let Some(id) = DialogId::of_incoming(&ack) else {
            return;
        };
        let Some(call) = self.by_dialog.get(&id).copied() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let cseq = ack.cseq().map(|(n, _)| n);
        if c.reinvite_ok.as_ref().map(|(n, _)| *n) == cseq {
            c.reinvite_ok = None;
        }
        self.events.push_back(Event::AckReceived {
            call,
            ibesip_dh: ack.header(IBESIP_DH).map(str::to_string),
            body: body_of(&ack),
        });
        if c.ok.take().is_some() {
            if let Some(k) = &c.invite_key {
                self.by_server_tx.remove(k);
            }
            self.events.push_back(Event::Answered {
                call,
                body: body_of(&c.invite),
            });
        }
    }

    pub(super) fn on_stray_response(&mut self, now: Instant, resp: Message) {
        let is_invite_2xx = resp.method() == Some(Method::Invite)
            && resp.status().is_some_and(|s| (200..300).contains(&s));
        if !is_invite_2xx {
            return;
        }
        let dest = Dest {
            addr: self.cfg.proxy,
            transport: self.cfg.transport,
        };
        // A retransmitted 2xx of one of our dialogs: the ACK of that very
        // INVITE again (by CSeq), or nothing when we no longer hold it.
        let cseq = resp.cseq().map(|(n, _)| n);
        let ours = self
            .calls
            .values()
            .find(|c| c.dialog.as_ref().is_some_and(|d| d.matches_response(&resp)));
        if let Some(c) = ours {
            let reinvite = c
                .reinvite_ack
                .as_ref()
                .filter(|(n, _)| Some(*n) == cseq)
                .map(|(_, a)| a);
            let initial = c.ack.as_ref().filter(|a| a.cseq().map(|(n, _)| n) == cseq);
            if let Some(ack) = reinvite.or(initial) {
                self.tx.send_stateless(ack, dest);
            }
            return;
        }
        // A 2xx from a second forked branch (RFC 3261 13.2.2.4): ACK it and
        // end that dialog with BYE; the call stays with the first answer.
        let other = self.calls.values().find(|c| {
            c.role == Role::Uac
                && c.dialog
                    .as_ref()
                    .is_some_and(|d| d.state == DialogState::Confirmed)
                && resp.call_id() == c.invite.call_id()
                && resp.from_tag() == c.invite.from_tag()
        });
        let Some(mut d) = other.and_then(|c| Dialog::uac(&c.invite, &resp).ok()) else {
            return;
        };
        let cseq = resp.cseq().map(|(n, _)| n).unwrap_or(1);
        let mut ack = d.ack(cseq);
        ack.set_header("Via", self.via());
        if let Ok(ack) = self.filter.outgoing(now, ack) {
            self.tx.send_stateless(&ack, dest);
        }
        let bye = d.request(Method::Bye);
        let _ = self.send_request(now, bye);
    }

    pub(super) fn on_call_response(
        &mut self,
        now: Instant,
        call: CallId,
        key: TxKey,
        resp: Message,
    ) {
        let status = resp.status().unwrap_or(500);
        let via = self.via();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.bye_key.as_ref() == Some(&key) {
            if status >= 200 {
                self.by_client_tx.remove(&key);
                self.end_call(call, EndReason::LocalHangup);
            }
            return;
        }
        if c.invite_key.as_ref() != Some(&key) {
            return;
        }
        if status < 200 {
            if resp.to_tag().is_some() && c.dialog.is_none() {
                c.dialog = Dialog::uac(&c.invite, &resp).ok();
            }
            let ring = (status == 180 || status == 183) && !c.ringing_sent;
            c.ringing_sent |= ring;
            let cancel = std::mem::take(&mut c.cancel_pending);
            if ring {
                self.events.push_back(Event::Ringing { call });
            }
            if cancel {
                self.send_cancel(now, &key);
            }
            return;
        }
        self.by_client_tx.remove(&key);
        if status >= 300 {
            let reason = match status {
                487 if c.cancelled => EndReason::Cancelled,
                408 => EndReason::Timeout,
                s => EndReason::Rejected(s),
            };
            return self.end_call(call, reason);
        }
        let Ok(d) = Dialog::uac(&c.invite, &resp) else {
            return self.end_call(call, EndReason::Rejected(502));
        };
        let cseq = c.invite.cseq().map(|(n, _)| n).unwrap_or(1);
        let mut ack = d.ack(cseq);
        ack.set_header("Via", via);
        c.add_reveal(&mut ack);
        c.dialog = Some(d.clone());
        self.by_dialog.insert(d.id.clone(), call);
        let ack = match self.filter.outgoing(now, ack) {
            Ok(a) => a,
            Err(e) => return tracing::warn!(%e, "filter refused ACK"),
        };
        let dest = Dest {
            addr: self.cfg.proxy,
            transport: self.cfg.transport,
        };
        self.tx.send_stateless(&ack, dest);
        let cancelled = c.cancelled;
        c.ack = Some(ack);
        if cancelled {
            // The 2xx crossed our CANCEL: the call exists, so end it with BYE.
            self.send_bye(now, call);
        } else {
            self.events.push_back(Event::Answered {
                call,
                body: body_of(&resp),
            });
        }
    }

    pub(super) fn end_call(&mut self, call: CallId, reason: EndReason) {
        self.held_reinvites.remove(&call);
        self.held_refers.remove(&call);
        if let Some(c) = self.calls.remove(&call) {
            if let Some(d) = &c.dialog {
                self.by_dialog.remove(&d.id);
            }
            if let Some(k) = &c.invite_key {
                self.by_server_tx.remove(k);
                self.by_client_tx.remove(k);
            }
            if let Some(k) = &c.bye_key {
                self.by_client_tx.remove(k);
            }
            self.events.push_back(Event::Ended { call, reason });
        }
    }

    pub(super) fn call_timers(&mut self, now: Instant) {
        let t2 = self.cfg.timers.t2;
        let unanswered: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.ring_deadline.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for call in unanswered {
            if let Some(c) = self.calls.get_mut(&call) {
                c.ring_deadline = None;
            }
            self.refuse(now, call, 480, EndReason::Timeout);
        }
        let mut expired = Vec::new();
        for (id, c) in self.calls.iter_mut() {
            let Some(ok) = c.ok.as_mut() else { continue };
            if ok.give_up <= now {
                expired.push(*id);
                continue;
            }
            if ok.next > now {
                continue;
            }
            self.tx.send_stateless(&ok.msg, ok.dest);
            ok.interval = (ok.interval * 2).min(t2);
            ok.next = now + ok.interval;
        }
        for (id, c) in self.calls.iter_mut() {
            let Some((_, ok)) = c.reinvite_ok.as_mut() else {
                continue;
            };
            if ok.give_up <= now {
                // RFC 3261 13.3.1.4: no ACK within 64*T1: end the dialog.
                c.reinvite_ok = None;
                expired.push(*id);
                continue;
            }
            if ok.next > now {
                continue;
            }
            self.tx.send_stateless(&ok.msg, ok.dest);
            ok.interval = (ok.interval * 2).min(t2);
            ok.next = now + ok.interval;
        }
        for call in expired {
            self.send_bye(now, call);
            self.end_call(call, EndReason::Timeout);
        }
    }
}
