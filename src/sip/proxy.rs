//! The stateful proxy of the embedded provider (RFC 3261 16), sans-I/O,
//! with the [`Registrar`] in front of it.
//!
//! - Requests for an AOR of our domain fork to every live binding (16.6):
//!   every contact rings, the first 2xx goes upstream at once, the other
//!   branches are cancelled (a branch that has not answered 1xx yet gets
//!   its CANCEL when its 1xx arrives, RFC 3261 9.1). When every branch
//!   failed, the best final response goes upstream (6xx first, then the
//!   lowest code).
//! - Unknown user: 404; known but not registered: 480. OPTIONS and REGISTER
//!   for unknown users are throttled per source IP (dropped past the limit).
//! - Requests go to a contact over the flow its REGISTER came on (RFC
//!   5626): the same UDP 5-tuple or TCP connection, whatever their size;
//!   the proxy never opens a connection towards a phone (the driver does
//!   not connect for it, see [`crate::sip::driver::Core::connects_out`]).
//! - INVITEs get a `Record-Route` of ours with `lr`, so in-dialog requests
//!   (tunneled by the user agents) come back through the proxy, which then
//!   finds the callee's flow from the Contact in the Request-URI (its user
//!   part is the device's token, so two homes behind the same private
//!   address are told apart).
//! - Requests outside our domain are forwarded only to registered contacts
//!   (in-dialog requests); a foreign Route is refused (403): the embedded
//!   provider is not an open relay.
//! - Responses are forwarded to the address in the next Via (`received` /
//!   `rport` honoured); 2xx retransmissions and the ACK of a 2xx pass
//!   statelessly.
//!
//! The proxy never reads or changes a body: a tunneled message is routed
//! on its outer headers alone.

use crate::sip::message::{addr_parse, aor_of, param, HeaderForm, Message, StartLine};
use crate::sip::registrar::Registrar;
use crate::sip::timers::Timers;
use crate::sip::transaction::client::cancel_for;
use crate::sip::transaction::{Incoming, TransactionLayer, TxEvent, TxKey};
use crate::sip::{random_token, Dest, Transmit, Transport};
use rsip::{Method, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Configuration of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `host:port` we write in Via and Record-Route (127.0.0.1:5060 in tests).
    pub local: String,
    /// Header names written on forwarded and generated messages.
    pub form: HeaderForm,
    /// T1, T2, T4.
    pub timers: Timers,
    /// Bound of the transaction table (and of the fork table).
    pub max_transactions: usize,
}

#[derive(Debug)]
struct Branch {
    key: TxKey,
    final_status: Option<u16>,
    cancel_pending: bool,
}

#[derive(Debug)]
struct Fork {
    request: Message,
    branches: Vec<Branch>,
    best: Option<Message>,
    done: bool,
    /// Timer C (RFC 3261 16.6 step 11): when a ringing fork is given up.
    timer_c: Instant,
    /// Timer C already fired once: at the next expiry the fork is dropped.
    expired: bool,
}

/// Timer C: a fork that has no final answer after 3 minutes is cancelled;
/// 32 s later whatever is left of it is forgotten.
const TIMER_C: std::time::Duration = std::time::Duration::from_secs(180);
const TIMER_C_GRACE: std::time::Duration = std::time::Duration::from_secs(32);

/// The sans-I/O registrar + proxy.
#[derive(Debug)]
pub struct Proxy {
    cfg: ProxyConfig,
    tx: TransactionLayer,
    /// The registrar and its location service.
    pub registrar: Registrar,
    forks: HashMap<TxKey, Fork>,
    branch_of: HashMap<TxKey, TxKey>,
}

impl Proxy {
    /// A proxy with its registrar.
    pub fn new(cfg: ProxyConfig, registrar: Registrar) -> Self {
        let tx = TransactionLayer::new(cfg.timers, cfg.form, cfg.max_transactions);
        Proxy {
            cfg,
            tx,
            registrar,
            forks: HashMap::new(),
            branch_of: HashMap::new(),
        }
    }

    /// Number of live forks (bounded by `max_transactions`).
    pub fn fork_count(&self) -> usize {
        self.forks.len()
    }

    /// Feeds bytes that arrived from `from`. A STUN binding request on
    /// the UDP port is a phone's keep-alive (RFC 5626 8.4): it is
    /// answered with the address it came from and is no message.
    pub fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        if from.transport == Transport::Udp && crate::sip::stun::is_stun_message(bytes) {
            if let Some(answer) = crate::sip::stun::binding_success(bytes, from.addr) {
                self.tx.send_raw(answer, from);
            }
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%e, "unparseable message");
                if let Some(r) = crate::sip::message::bad_request_for(bytes) {
                    self.tx.send_stateless(&r, from);
                }
                return;
            }
        };
        if msg.validate().is_err() {
            if msg.is_request() && msg.method() != Some(Method::Ack) && msg.header("Via").is_some()
            {
                let r = Message::response_to(&msg, 400, "Bad Request", None);
                self.tx.send_stateless(&r, from);
            }
            return;
        }
        match self.tx.on_message(now, from, msg) {
            Incoming::Request(key, req) => self.on_request(now, from, key, req),
            Incoming::Ack(ack) => self.forward_stateless(now, ack),
            Incoming::Response(key, resp) => self.on_response(now, key, resp),
            Incoming::Stray(resp) => self.forward_response(resp),
            Incoming::Absorbed => {}
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self.forks.values().map(|f| f.timer_c);
        self.tx.poll_timeout().into_iter().chain(c).min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        while let Some(ev) = self.tx.poll_event() {
            if let TxEvent::Timeout(key, req) = ev {
                let resp = Message::response_to(&req, 408, "Request Timeout", None);
                self.on_response(now, key, resp);
            }
        }
        let due: Vec<TxKey> = self
            .forks
            .iter()
            .filter(|(_, f)| f.timer_c <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.on_timer_c(now, &key);
        }
    }

    fn on_timer_c(&mut self, now: Instant, key: &TxKey) {
        let Some(f) = self.forks.get_mut(key) else {
            return;
        };
        if f.expired {
            if let Some(f) = self.forks.remove(key) {
                for b in f.branches {
                    self.branch_of.remove(&b.key);
                    self.tx.forget_client(&b.key);
                }
            }
            self.tx.forget_server(key);
            return;
        }
        f.expired = true;
        f.timer_c = now + TIMER_C_GRACE;
        let answered = std::mem::replace(&mut f.done, true);
        if !answered {
            let r =
                Message::response_to(&f.request, 408, "Request Timeout", Some(&random_token(6)));
            let _ = self.tx.send_response(now, key, &r);
        }
        self.cancel_branches(now, key, None);
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    fn reply(&mut self, now: Instant, key: &TxKey, req: &Message, status: u16, reason: &str) {
        let r = Message::response_to(req, status, reason, Some(&random_token(6)));
        let _ = self.tx.send_response(now, key, &r);
    }

    fn is_us(&self, uri: &Uri) -> bool {
        uri.host_with_port
            .to_string()
            .eq_ignore_ascii_case(&self.cfg.local)
    }

    fn on_request(&mut self, now: Instant, from: Dest, key: TxKey, mut req: Message) {
        let method = req.method().unwrap_or(Method::Options);
        let max_forwards: u32 = req
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(70);
        if max_forwards == 0 {
            return self.reply(now, &key, &req, 483, "Too Many Hops");
        }
        if method == Method::Cancel {
            return self.on_cancel(now, key, req);
        }
        if req
            .header("Route")
            .and_then(addr_parse)
            .is_some_and(|r| self.is_us(&r))
        {
            req.remove_first("Route");
        }
        let uri = req.uri().cloned().unwrap_or_default();
        let ours = uri
            .host_with_port
            .host
            .to_string()
            .eq_ignore_ascii_case(self.registrar.domain());
        if method == Method::Register && ours && req.header("Route").is_none() {
            match self.registrar.handle_register(now, from, &req) {
                Some(r) => {
                    let _ = self.tx.send_response(now, &key, &r);
                }
                None => self.tx.forget_server(&key),
            }
            // A device registered from a new flow: what we forwarded to
            // its old one and nobody answered yet goes to the new one now
            // (else it would be retransmitted into a dead mapping until
            // its transaction timed out).
            for (old, new) in self.registrar.take_moved_flows() {
                let moved = self.tx.retarget_clients(old, new);
                if moved > 0 {
                    tracing::debug!(%old.addr, %new.addr, moved, "requests under way follow a device to its new flow");
                }
            }
            return;
        }
        if req.header("Route").is_some() {
            // Not an open relay: a Route to anywhere but us is refused.
            return self.reply(now, &key, &req, 403, "Forbidden");
        }
        if ours {
            let Some(user) = uri.user().map(str::to_string) else {
                return if method == Method::Options {
                    self.reply(now, &key, &req, 200, "OK")
                } else {
                    self.reply(now, &key, &req, 404, "Not Found")
                };
            };
            if !self.registrar.user_enabled(&user) {
                if method == Method::Options && !self.registrar.throttle.allow(now, from.addr.ip())
                {
                    return self.tx.forget_server(&key);
                }
                return self.reply(now, &key, &req, 404, "Not Found");
            }
            let targets: Vec<(Uri, Dest)> = self
                .registrar
                .location
                .lookup(now, &aor_of(&uri))
                .into_iter()
                .filter_map(|b| Some((Uri::try_from(b.contact.as_str()).ok()?, b.flow)))
                .collect();
            if targets.is_empty() {
                return self.reply(now, &key, &req, 480, "Temporarily Unavailable");
            }
            return self.fork(now, key, req, targets);
        }
        let flow = self.registrar.location.flow_of_contact(now, &uri);
        match flow {
            Some(d) => self.fork(now, key, req, vec![(uri, d)]),
            None => self.reply(now, &key, &req, 404, "Not Found"),
        }
    }

    /// Prepares a copy of `req` for one branch: new Request-URI, our Via,
    /// Max-Forwards minus one, Record-Route on dialog-creating INVITEs.
    fn branch_request(&self, req: &Message, target: Uri, transport: Transport) -> Message {
        let mut m = req.clone();
        if let StartLine::Request { uri, .. } = &mut m.start {
            *uri = target;
        }
        let mf: u32 = req
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(70);
        m.set_header("Max-Forwards", mf.saturating_sub(1).to_string());
        if req.method() == Some(Method::Invite) && req.to_tag().is_none() {
            m.prepend_header("Record-Route", format!("<sip:{};lr>", self.cfg.local));
        }
        m.prepend_header(
            "Via",
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK{};rport",
                transport.via_token(),
                self.cfg.local,
                random_token(8)
            ),
        );
        m
    }

    fn fork(&mut self, now: Instant, key: TxKey, req: Message, targets: Vec<(Uri, Dest)>) {
        if self.forks.len() >= self.cfg.max_transactions {
            return self.reply(now, &key, &req, 503, "Service Unavailable");
        }
        let mut branches = Vec::new();
        // Every target is a registered flow (RFC 5626 5.3): the request
        // goes over it whatever its size, never over a new connection
        // towards the phone (its NAT would refuse it). A large request on
        // a UDP flow is fragmented by IP instead (RFC 3261 18.1.1 asks for
        // a congestion-controlled transport, which the flow does not offer).
        for (uri, dest) in targets {
            let m = self.branch_request(&req, uri, dest.transport);
            if let Ok(k) = self.tx.send_request(now, m, dest) {
                self.branch_of.insert(k.clone(), key.clone());
                branches.push(Branch {
                    key: k,
                    final_status: None,
                    cancel_pending: false,
                });
            }
        }
        if branches.is_empty() {
            return self.reply(now, &key, &req, 503, "Service Unavailable");
        }
        self.forks.insert(
            key,
            Fork {
                request: req,
                branches,
                best: None,
                done: false,
                timer_c: now + TIMER_C,
                expired: false,
            },
        );
    }

    fn on_cancel(&mut self, now: Instant, key: TxKey, req: Message) {
        let invite_key = key.invite();
        if !self.tx.server_pending(&invite_key) || !self.forks.contains_key(&invite_key) {
            return self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist");
        }
        self.reply(now, &key, &req, 200, "OK");
        self.cancel_branches(now, &invite_key, None);
        if let Some(f) = self.forks.get_mut(&invite_key) {
            f.done = true;
            let r = Message::response_to(
                &f.request,
                487,
                "Request Terminated",
                Some(&random_token(6)),
            );
            let _ = self.tx.send_response(now, &invite_key, &r);
        }
    }

    fn cancel_branches(&mut self, now: Instant, fork_key: &TxKey, except: Option<&TxKey>) {
        let Some(f) = self.forks.get_mut(fork_key) else {
            return;
        };
        let mut cancels = Vec::new();
        for b in f.branches.iter_mut() {
            if b.final_status.is_some() || Some(&b.key) == except {
                continue;
            }
            if self.tx.client_proceeding(&b.key) {
                cancels.push(b.key.clone());
            } else {
                b.cancel_pending = true;
            }
        }
        for k in cancels {
            self.send_cancel(now, &k);
        }
    }

    fn send_cancel(&mut self, now: Instant, branch: &TxKey) {
        let (Some(req), Some(dest)) = (self.tx.client_request(branch), self.tx.client_dest(branch))
        else {
            return;
        };
        let c = cancel_for(req);
        let _ = self.tx.send_request(now, c, dest);
    }

    fn on_response(&mut self, now: Instant, key: TxKey, mut resp: Message) {
        let status = resp.status().unwrap_or(500);
        let Some(fork_key) = self.branch_of.get(&key).cloned() else {
            return;
        };
        resp.remove_first("Via");
        let Some(f) = self.forks.get_mut(&fork_key) else {
            return;
        };
        let Some(bi) = f.branches.iter().position(|b| b.key == key) else {
            return;
        };
        if status < 200 {
            let cancel = std::mem::take(&mut f.branches[bi].cancel_pending);
            if status > 100 && !f.done {
                let _ = self.tx.send_response(now, &fork_key, &resp);
            }
            if cancel {
                self.send_cancel(now, &key);
            }
            return;
        }
        f.branches[bi].final_status = Some(status);
        self.branch_of.remove(&key);
        if status < 300 {
            // Every 2xx goes upstream (16.7 step 5); the first ends the fork.
            let first = !f.done;
            f.done = true;
            if self.tx.send_response(now, &fork_key, &resp).is_err() {
                self.forward_response(resp);
            }
            if first {
                self.cancel_branches(now, &fork_key, Some(&key));
            }
        } else if !f.done {
            let better = match &f.best {
                None => true,
                Some(b) => {
                    let old = b.status().unwrap_or(999);
                    old < 600 && (status >= 600 || status < old)
                }
            };
            if better {
                f.best = Some(resp);
            }
        }
        self.finish_fork(now, &fork_key);
    }

    fn finish_fork(&mut self, now: Instant, fork_key: &TxKey) {
        let Some(f) = self.forks.get(fork_key) else {
            return;
        };
        if f.branches.iter().any(|b| b.final_status.is_none()) {
            return;
        }
        if let Some(f) = self.forks.remove(fork_key) {
            if !f.done {
                let r = f.best.unwrap_or_else(|| {
                    Message::response_to(&f.request, 408, "Request Timeout", None)
                });
                let _ = self.tx.send_response(now, fork_key, &r);
            }
        }
    }

    /// Forwards a response whose transaction is gone, to the next Via.
    fn forward_response(&mut self, mut resp: Message) {
        let top_is_ours = resp
            .header("Via")
            .and_then(|v| v.split(';').next())
            .is_some_and(|s| s.split_whitespace().nth(1) == Some(self.cfg.local.as_str()));
        if !top_is_ours {
            return;
        }
        resp.remove_first("Via");
        if let Some(d) = resp.header("Via").and_then(via_dest) {
            self.tx.send_stateless(&resp, d);
        }
    }

    /// Forwards the ACK of a 2xx (no transaction, RFC 3261 16.11).
    fn forward_stateless(&mut self, now: Instant, mut ack: Message) {
        if ack
            .header("Route")
            .and_then(addr_parse)
            .is_some_and(|r| self.is_us(&r))
        {
            ack.remove_first("Route");
        }
        let uri = ack.uri().cloned().unwrap_or_default();
        if ack.header("Route").is_some() {
            return;
        }
        let dest = self.registrar.location.flow_of_contact(now, &uri);
        let Some(dest) = dest else { return };
        let m = self.branch_request(&ack, uri, dest.transport);
        self.tx.send_stateless(&m, dest);
    }
}

/// Where a response goes according to a Via value (RFC 3261 18.2.2, RFC 3581).
pub fn via_dest(via: &str) -> Option<Dest> {
    let sent = via.split(';').next()?;
    let mut parts = sent.split_whitespace();
    let proto = parts.next()?;
    let sent_by = parts.next()?;
    let (host, port) = match sent_by.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || sent_by.starts_with('[') => (h, p.parse().ok()?),
        _ => (sent_by, 5060),
    };
    let host = param(via, "received")
        .unwrap_or(host)
        .trim_matches(['[', ']']);
    let port = param(via, "rport")
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    let proto = proto.to_ascii_uppercase();
    let transport = if proto.ends_with("TLS") {
        Transport::Tls
    } else if proto.ends_with("TCP") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    Some(Dest {
        addr: SocketAddr::new(host.parse().ok()?, port),
        transport,
    })
}
