//! Dialogs (RFC 3261 12): identity (Call-ID and tags), state, route set
//! from Record-Route, local and remote CSeq, remote target; building of
//! in-dialog requests, including the ACK of a 2xx (13.2.2.4).
//!
//! The Via of an in-dialog request is added by the user agent (it owns the
//! local address and the branch), so a dialog only fills in what RFC 3261
//! 12.2.1.1 puts in its hands.

use crate::sip::message::{addr_parse, param, Message};
use rsip::{Method, Uri};

/// Early, confirmed or terminated (RFC 3261 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialogState {
    /// Created by a 1xx with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// After BYE.
    Terminated,
}

/// Dialog ID: Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The ID of the dialog an incoming request belongs to (To tag local).
    pub(crate) fn of_incoming(req: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id()?.to_string(),
            local_tag: req.to_tag()?.to_string(),
            remote_tag: req.from_tag()?.to_string(),
        })
    }
}

/// Why a dialog refused an in-dialog request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum DialogError {
    /// The peer reused or lowered its CSeq (answer 500, RFC 3261 12.2.2).
    #[error("CSeq out of order")]
    CSeqOutOfOrder,
    /// The message lacks a header a dialog needs (Contact, tags).
    #[error("message cannot create a dialog")]
    Incomplete,
}

/// One dialog.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    /// Dialog ID.
    pub id: DialogId,
    /// State.
    pub state: DialogState,
    /// Our URI (From of our requests) without tag.
    pub local_uri: String,
    /// The peer's URI without tag.
    pub remote_uri: String,
    /// CSeq of our last request.
    pub local_cseq: u32,
    /// CSeq of the peer's last request.
    pub remote_cseq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact).
    pub remote_target: Uri,
    /// Route set, in the order our requests carry it.
    pub route_set: Vec<String>,
}

fn strip_tag(v: &str) -> String {
    v.split(";tag=").next().unwrap_or(v).to_string()
}

fn contact_uri(m: &Message) -> Option<Uri> {
    addr_parse(m.header("Contact")?)
}

impl Dialog {
    /// The UAC side, from our INVITE and a 1xx/2xx with a To tag.
    pub(crate) fn uac(invite: &Message, resp: &Message) -> Result<Dialog, DialogError> {
        let status = resp.status().unwrap_or(0);
        let mut route_set: Vec<String> = resp
            .header_values("Record-Route")
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id().ok_or(DialogError::Incomplete)?.into(),
                local_tag: invite.from_tag().ok_or(DialogError::Incomplete)?.into(),
                remote_tag: resp.to_tag().ok_or(DialogError::Incomplete)?.into(),
            },
            state: if status >= 200 {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_uri: strip_tag(invite.header("From").unwrap_or("")),
            remote_uri: strip_tag(invite.header("To").unwrap_or("")),
            local_cseq: invite.cseq().map(|(n, _)| n).unwrap_or(1),
            remote_cseq: None,
            remote_target: contact_uri(resp).ok_or(DialogError::Incomplete)?,
            route_set,
        })
    }

    /// The UAS side, from an incoming INVITE and the tag we chose.
    pub(crate) fn uas(invite: &Message, local_tag: &str) -> Result<Dialog, DialogError> {
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id().ok_or(DialogError::Incomplete)?.into(),
                local_tag: local_tag.to_string(),
                remote_tag: invite.from_tag().ok_or(DialogError::Incomplete)?.into(),
            },
            state: DialogState::Early,
            local_uri: strip_tag(invite.header("To").unwrap_or("")),
            remote_uri: strip_tag(invite.header("From").unwrap_or("")),
            local_cseq: 0,
            remote_cseq: invite.cseq().map(|(n, _)| n),
            remote_target: contact_uri(invite).ok_or(DialogError::Incomplete)?,
            route_set: invite
                .header_values("Record-Route")
                .map(str::to_string)
                .collect(),
        })
    }

    /// Checks and records an in-dialog request from the peer (12.2.2);
    /// a target refresh (re-INVITE, UPDATE) updates the remote target when
    /// `trusted` says its sender is proved to be the peer (the message
    /// filter's word: a tunneled dialog moves only on a verified tunneled
    /// request, never on a plain or unopened one).
    pub(crate) fn on_request(&mut self, req: &Message, trusted: bool) -> Result<(), DialogError> {
        let (n, method) = req.cseq().ok_or(DialogError::Incomplete)?;
        if method != Method::Ack {
            if self.remote_cseq.is_some_and(|r| n <= r) {
                return Err(DialogError::CSeqOutOfOrder);
            }
            self.remote_cseq = Some(n);
        }
        if trusted && matches!(method, Method::Invite | Method::Update) {
            if let Some(t) = contact_uri(req) {
                self.remote_target = t;
            }
        }
        if method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// A new in-dialog request (RFC 3261 12.2.1.1) without Via; increments
    /// the local CSeq. For ACK use [`Dialog::ack`].
    pub(crate) fn request(&mut self, method: Method) -> Message {
        self.local_cseq += 1;
        self.build(method, self.local_cseq)
    }

    /// The ACK of a 2xx to our INVITE with CSeq `invite_cseq` (13.2.2.4).
    pub(crate) fn ack(&self, invite_cseq: u32) -> Message {
        self.build(Method::Ack, invite_cseq)
    }

    fn build(&self, method: Method, cseq: u32) -> Message {
        let mut m = Message::request(method, self.remote_target.clone());
        m.push_header("Max-Forwards", "70");
        for r in &self.route_set {
            m.push_header("Route", r.clone());
        }
        m.push_header(
            "From",
            format!("{};tag={}", self.local_uri, self.id.local_tag),
        );
        m.push_header(
            "To",
            format!("{};tag={}", self.remote_uri, self.id.remote_tag),
        );
        m.push_header("Call-ID", self.id.call_id.clone());
        m.push_header("CSeq", format!("{cseq} {method}"));
        m
    }

    /// True if `resp` (to our request) belongs to this dialog.
    pub(crate) fn matches_response(&self, resp: &Message) -> bool {
        resp.call_id() == Some(self.id.call_id.as_str())
            && resp.from_tag() == Some(self.id.local_tag.as_str())
            && resp
                .header("To")
                .and_then(|t| param(t, "tag"))
                .is_some_and(|t| t == self.id.remote_tag)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn invite() -> Message {
        let mut m = Message::request(
            Method::Invite,
            Uri::try_from("sip:bob@example.invalid").unwrap(),
        );
        m.push_header("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1");
        m.push_header("From", "<sip:alice@example.invalid>;tag=a");
        m.push_header("To", "<sip:bob@example.invalid>");
        m.push_header("Call-ID", "cid");
        m.push_header("CSeq", "7 INVITE");
        m.push_header("Contact", "<sip:127.0.0.1:5062>");
        m.push_header(
            "Record-Route",
            "<sip:127.0.0.1:5060;lr>, <sip:p2.invalid;lr>",
        );
        m
    }

    #[test]
    fn uac_dialog_reverses_route_set_and_counts_cseq() {
        let inv = invite();
        let mut ok = Message::response_to(&inv, 200, "OK", Some("b"));
        ok.push_header("Contact", "<sip:127.0.0.1:5064>");
        let mut d = Dialog::uac(&inv, &ok).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(
            d.route_set,
            vec!["<sip:p2.invalid;lr>", "<sip:127.0.0.1:5060;lr>"]
        );
        let bye = d.request(Method::Bye);
        assert_eq!(bye.cseq(), Some((8, Method::Bye)));
        assert_eq!(bye.to_tag(), Some("b"));
        assert_eq!(bye.uri().unwrap().to_string(), "sip:127.0.0.1:5064");
        assert_eq!(d.ack(7).cseq(), Some((7, Method::Ack)));
        assert!(d.matches_response(&ok));
    }

    #[test]
    fn uas_dialog_rejects_old_cseq() {
        let inv = invite();
        let mut d = Dialog::uas(&inv, "b").unwrap();
        assert_eq!(d.route_set.len(), 2);
        let mut bye = inv.clone();
        bye.set_header("CSeq", "7 BYE");
        assert_eq!(d.on_request(&bye, true), Err(DialogError::CSeqOutOfOrder));
        bye.set_header("CSeq", "8 BYE");
        d.on_request(&bye, true).unwrap();
        assert_eq!(d.state, DialogState::Terminated);
    }

    /// A re-INVITE with a new Contact moves the remote target (RFC 3261
    /// 12.2.2) only when its sender is proved; either way its CSeq counts.
    #[test]
    fn a_target_refresh_moves_the_target_only_when_trusted() {
        let inv = invite();
        let mut d = Dialog::uas(&inv, "b").unwrap();
        let mut re = inv.clone();
        re.set_header("CSeq", "8 INVITE");
        re.set_header("Contact", "<sip:tok@10.0.0.7:5062;ctok=tok>");
        d.on_request(&re, false).unwrap();
        assert_eq!(d.remote_target.to_string(), "sip:127.0.0.1:5062");
        assert_eq!(d.remote_cseq, Some(8));
        re.set_header("CSeq", "9 INVITE");
        d.on_request(&re, true).unwrap();
        assert_eq!(
            d.remote_target.to_string(),
            "sip:tok@10.0.0.7:5062;ctok=tok"
        );
        assert_eq!(
            d.request(Method::Bye).uri().unwrap().to_string(),
            "sip:tok@10.0.0.7:5062;ctok=tok"
        );
    }
}
