//! The user agent's public vocabulary: configuration, the [`Command`] it
//! takes and the [`Event`] it reports.

use crate::sip::digest::Password;
use crate::sip::message::HeaderForm;
use crate::sip::timers::Timers;
use crate::sip::{Transmit, Transport};
use rsip::Method;
use std::net::SocketAddr;

/// Which outer headers a user agent writes.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// Full or compact header names.
    pub form: HeaderForm,
    /// Outer From of calls and messages is `"Anonymous" <sip:anonymous@anonymous.invalid>` (RFC 3323).
    pub anonymous_from: bool,
    /// A User-Agent header value, if any (default none).
    pub user_agent: Option<String>,
    /// Random bytes in tags and branches (default 6: 8 base64url chars).
    pub token_bytes: usize,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy {
            form: HeaderForm::Compact,
            anonymous_from: true,
            user_agent: None,
            token_bytes: 6,
        }
    }
}

/// Configuration of a user agent.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// User part of our AOR.
    pub user: String,
    /// Domain of our AOR (and the digest realm we expect).
    pub domain: String,
    /// Digest password.
    pub password: Password,
    /// Outbound proxy and registrar.
    pub proxy: SocketAddr,
    /// Our address as written in Via and Contact (127.0.0.1:port or a
    /// `.invalid` name with `rport` doing the rest).
    pub local: String,
    /// Default transport.
    pub transport: Transport,
    /// Requested registration lifetime, seconds.
    pub expires: u32,
    /// Outer header choices.
    pub headers: HeaderPolicy,
    /// T1, T2, T4.
    pub timers: Timers,
    /// Bound of the transaction table and of the call table.
    pub max_transactions: usize,
}

/// A call, as the application names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A body and its Content-Type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// Content-Type; None for an empty body.
    pub content_type: Option<String>,
    /// Opaque bytes.
    pub bytes: Vec<u8>,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer sent BYE.
    RemoteHangup,
    /// The INVITE was cancelled (by us or the caller).
    Cancelled,
    /// The peer or a proxy answered with this final status.
    Rejected(u16),
    /// No final response (Timer B), or no ACK for our 2xx.
    Timeout,
    /// Ended locally by [`Command::Forget`], nothing sent.
    Forgotten,
}

/// What the application asks of the user agent.
#[derive(Debug, Clone)]
pub enum Command {
    /// Register (and keep refreshing).
    Register,
    /// Remove our binding (Expires 0).
    Unregister,
    /// Place a call to `target` (a SIP URI).
    Call {
        /// Handle the application chose.
        call: CallId,
        /// Request-URI, e.g. `sip:bob@example.invalid`.
        target: String,
        /// INVITE body.
        body: Body,
    },
    /// Answer an incoming call with 200 OK.
    Answer {
        /// Which call.
        call: CallId,
        /// 200 body.
        body: Body,
    },
    /// Refuse an incoming call.
    Reject {
        /// Which call.
        call: CallId,
        /// Final status (486, 603, 415, 493...).
        status: u16,
    },
    /// End a call: CANCEL, reject or BYE as its state requires.
    Hangup {
        /// Which call.
        call: CallId,
    },
    /// Send an in-dialog request (re-INVITE, INFO, MESSAGE, UPDATE).
    InDialog {
        /// Which call.
        call: CallId,
        /// Method.
        method: Method,
        /// Body.
        body: Body,
    },
    /// Sends a tunneled `INFO` in the dialog of `call` whose only content
    /// is the inner `Ibesip-Dh` header (spec 6: the offerer of an offer
    /// made in a 2xx reveals its X25519 key this way, after the ACK
    /// brought the answer). Ignored unless the dialog is confirmed.
    RevealInInfo {
        /// Which call.
        call: CallId,
        /// The header's value (base64url of the key).
        ibesip_dh: String,
    },
    /// Answers the re-INVITE of `call` that the core held back (see
    /// [`UserAgent::defer_reinvite_answers`](super::UserAgent::defer_reinvite_answers)):
    /// a 2xx carries `body` (the SDP answer) and our Contact. Ignored when
    /// no re-INVITE of that call is waiting.
    RespondInDialog {
        /// Which call.
        call: CallId,
        /// Final status (200, 488, 491...).
        status: u16,
        /// Body of the response.
        body: Body,
    },
    /// Out-of-dialog MESSAGE.
    Message {
        /// Request-URI.
        target: String,
        /// Body.
        body: Body,
    },
    /// OPTIONS ping.
    Options {
        /// Request-URI.
        target: String,
    },
    /// Ends an incoming call not answered yet, locally and without a word
    /// on the wire: for a call none of whose messages may be sent any
    /// more (its tunnel session is gone). Its INVITE transaction is
    /// forgotten; it ends with [`EndReason::Forgotten`]. Ignored for any
    /// other call.
    Forget {
        /// Which call.
        call: CallId,
    },
    /// Sends a REFER in the confirmed dialog of `call` (blind transfer,
    /// RFC 3515): `Refer-To: <refer_to>`, `Referred-By` our AOR. Its final
    /// status comes as [`Event::InDialogResponse`] (481 at once when the
    /// call has no confirmed dialog), the peer's progress as NOTIFYs
    /// ([`Event::InDialogRequest`]).
    Refer {
        /// Which call.
        call: CallId,
        /// The transfer target, a SIP URI.
        refer_to: String,
    },
    /// Answers the REFER of `call` held since [`Event::ReferReceived`]:
    /// 202 accepts (then send [`Command::NotifyRefer`]), anything else
    /// refuses. Ignored when no REFER of that call waits.
    RespondRefer {
        /// Which call.
        call: CallId,
        /// Final status (202, 403, 488...).
        status: u16,
    },
    /// Sends a NOTIFY of the accepted REFER in the dialog of `call`
    /// (`Event: refer`, `message/sipfrag` body `sipfrag`, control
    /// characters removed); `terminated` ends the subscription (the final
    /// status of the new call). Ignored unless the dialog is confirmed.
    NotifyRefer {
        /// Which call.
        call: CallId,
        /// The new call's status line, e.g. `SIP/2.0 100 Trying`.
        sipfrag: String,
        /// Whether this is the final NOTIFY.
        terminated: bool,
    },
}

/// What the user agent tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The registrar accepted our binding for `expires` seconds.
    Registered {
        /// Granted lifetime.
        expires: u32,
    },
    /// The registrar refused (status) or did not answer (408).
    RegistrationFailed {
        /// Final status.
        status: u16,
    },
    /// The connection to the outbound proxy could not be made (refused,
    /// timed out, or a TLS certificate we do not trust); `reason` says
    /// which, for people.
    TransportFailed {
        /// What failed.
        reason: String,
    },
    /// A 401/407 challenged us for a realm other than our domain; it was
    /// not answered (a [`Event::RegistrationFailed`] follows).
    ChallengeRefused {
        /// The realm of the challenge (as received; print it escaped).
        realm: String,
        /// Its status (401 or 407).
        status: u16,
    },
    /// Our binding is removed.
    Unregistered,
    /// The network changed under us: the local address towards the proxy
    /// (`public: None`; we registered again at once) or our public address
    /// as the registrar sees it (`public`, from a REGISTER response).
    /// Calls in progress need a re-INVITE with new media addresses.
    NetworkChanged {
        /// The address we name in Via and Contact now.
        local: String,
        /// Our new public address, when that is what moved.
        public: Option<std::net::SocketAddr>,
    },
    /// The outbound proxy did not answer a REGISTER (timeout, 408, or no
    /// connection, 503: RFC 3263 4.3): the UA moved on to the next
    /// target of its list ([`crate::sip::ua::UserAgent::set_fallback_proxies`])
    /// and is registering there now. All requests go to `proxy` from now
    /// on.
    ProxyChanged {
        /// The target that stopped answering.
        from: crate::sip::Dest,
        /// The target in use now.
        proxy: crate::sip::Dest,
        /// The status that made the UA move (408 or 503).
        status: u16,
    },
    /// A call arrives.
    IncomingCall {
        /// Handle the core chose.
        call: CallId,
        /// From header value (the inner one, when tunneled).
        from: String,
        /// INVITE body.
        body: Body,
    },
    /// The callee is ringing.
    Ringing {
        /// Which call.
        call: CallId,
    },
    /// The call is up: for the caller when the 2xx arrives (the ACK is
    /// sent), for the callee when the ACK arrives.
    Answered {
        /// Which call.
        call: CallId,
        /// Body of the 2xx (UAC) or of the INVITE (UAS).
        body: Body,
    },
    /// An ACK arrived in a call's dialog (for the 2xx of the INVITE or of
    /// a re-INVITE), reported before [`Event::Answered`] for the former.
    AckReceived {
        /// Which call.
        call: CallId,
        /// The value of its inner `Ibesip-Dh` header (spec 6), if any.
        ibesip_dh: Option<String>,
        /// Its body: the SDP answer when our 2xx carried the offer (an
        /// INVITE without one, RFC 3261 13.2.1), empty otherwise.
        body: Body,
    },
    /// The call is over.
    Ended {
        /// Which call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// An in-dialog request arrived (and was answered 200).
    InDialogRequest {
        /// Which call.
        call: CallId,
        /// Method.
        method: Method,
        /// Body.
        body: Body,
    },
    /// The final response to an in-dialog request we sent (reported in
    /// addition to [`Event::RequestCompleted`]), with its body: the SDP
    /// answer of a re-INVITE.
    InDialogResponse {
        /// Which call.
        call: CallId,
        /// Method of the request.
        method: Method,
        /// Final status (408 on timeout).
        status: u16,
        /// Body of the response.
        body: Body,
    },
    /// The peer asked in `call`'s dialog for a transfer (REFER with
    /// exactly one Refer-To). It waits for [`Command::RespondRefer`]; a
    /// second one meanwhile is answered 491.
    ReferReceived {
        /// Which call.
        call: CallId,
        /// The Refer-To value as received (not checked beyond being one).
        refer_to: String,
        /// The Referred-By value, if any (claimed, not proved).
        referred_by: Option<String>,
    },
    /// A MESSAGE arrived outside a dialog.
    MessageReceived {
        /// From header value.
        from: String,
        /// Body.
        body: Body,
    },
    /// The final status of an OPTIONS, MESSAGE or in-dialog request we sent.
    RequestCompleted {
        /// Method.
        method: Method,
        /// Final status (408 on timeout).
        status: u16,
    },
    /// The filter rejected an incoming message (logged; no state changed).
    Rejected {
        /// The filter's reason.
        reason: String,
    },
}

/// Output of [`UserAgent::poll_output`](super::UserAgent::poll_output).
#[derive(Debug)]
pub enum Output {
    /// Send these bytes.
    Transmit(Transmit),
    /// Tell the application.
    Event(Event),
}
