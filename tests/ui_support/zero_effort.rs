//! "Zero effort" (issue 15's figure): a new user's way from the first
//! start to the first secured call, driven through the window by the
//! labels a user sees, every input counted. The provider is found as on a
//! real network, by DNS alone ([`TestDns`] on the loopback answers the
//! PKG's SRV record and RFC 3263's `_sip._udp` for the test domain), so
//! nothing is typed under "Advanced". Used by `tests/ui/zero_effort.rs`
//! (the inputs, an assertion) and `benches/first_call.rs` (the time, a
//! printed median).

use super::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};

/// The domain of the scenario's provider: reserved (RFC 6761) like the
/// other tests' `atlanta.invalid`, but one a resolver does look up.
pub const FOUND_DOMAIN: &str = "atlanta.test";

/// A DNS server on 127.0.0.1 (UDP) answering from a table set by the test;
/// names it does not hold get an empty answer.
pub struct TestDns {
    /// Where it listens.
    pub addr: SocketAddr,
    table: Arc<Mutex<Vec<(String, RData)>>>,
}

impl TestDns {
    fn start() -> TestDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let table: Arc<Mutex<Vec<(String, RData)>>> = Arc::default();
        let t = table.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.authoritative = true;
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.response_code = ResponseCode::NoError;
                for query in &q.queries {
                    r.add_query(query.clone());
                    let name = query.name().to_ascii().to_ascii_lowercase();
                    let name = name.trim_end_matches('.');
                    for (owner, data) in t.lock().unwrap().iter() {
                        if owner == name && data.record_type() == query.query_type() {
                            r.add_answer(Record::from_rdata(
                                query.name().clone(),
                                60,
                                data.clone(),
                            ));
                        }
                    }
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        TestDns { addr, table }
    }

    /// The records of [`FOUND_DOMAIN`] for `p` (a provider of that
    /// domain) as its operator would publish them:
    /// the PKG by SRV `_ibephone-pkg._tcp` at `pkg.<domain>`, the SIP
    /// proxy (UDP) by SRV `_sip._udp` at `sip.<domain>`, both 127.0.0.1.
    /// Replaces what was there.
    pub fn serve(&self, p: &Provider) {
        let port = |url: &str| url.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
        let host = |h: &str| Name::from_ascii(format!("{h}.{FOUND_DOMAIN}.")).unwrap();
        let a = RData::A(A(Ipv4Addr::LOCALHOST));
        *self.table.lock().unwrap() = vec![
            (format!("pkg.{FOUND_DOMAIN}"), a.clone()),
            (format!("sip.{FOUND_DOMAIN}"), a),
            (
                format!("_ibephone-pkg._tcp.{FOUND_DOMAIN}"),
                RData::SRV(SRV::new(0, 0, port(&p.url), host("pkg"))),
            ),
            (
                format!("_sip._udp.{FOUND_DOMAIN}"),
                RData::SRV(SRV::new(0, 0, p.proxy.port(), host("sip"))),
            ),
        ];
    }
}

/// The one DNS server of this process. The phone's resolver is chosen by
/// `IBEPHONE_DNS` (`pkg_client::discovery::dns_from_env`), read at every
/// lookup by the wizard and by the phone it starts, so the variable is
/// set once, here, for the whole process: the other tests of the binary
/// give the PKG and proxy as address literals, which are never looked up,
/// and names this server does not hold get an empty answer (the client
/// then resolves them itself, as without the variable).
pub fn process_dns() -> &'static TestDns {
    static DNS: OnceLock<TestDns> = OnceLock::new();
    DNS.get_or_init(|| {
        let dns = TestDns::start();
        std::env::set_var("IBEPHONE_DNS", dns.addr.to_string());
        dns
    })
}

/// What a user did, in order: each text typed into a field and each
/// click, by its label.
#[derive(Debug, Default)]
pub struct Inputs(pub Vec<String>);

impl Inputs {
    /// Types `text` into the field labelled `label` (one input).
    pub fn type_into(&mut self, h: &mut Harness<'_, PhoneApp>, label: &str, text: &str) {
        self.0.push(format!("type {label}"));
        type_into(h, label, text);
    }

    /// Clicks the widget labelled `label` (one input).
    pub fn click(&mut self, h: &mut Harness<'_, PhoneApp>, label: &str) {
        self.0.push(format!("click {label}"));
        h.get_by_label(label).click();
        h.run_steps(2);
    }
}

/// The way from a first start to a ready phone for `user`: the wizard
/// with nothing but the address, the password and the fingerprint
/// confirmation, the provider found by DNS. Returns the inputs it took.
pub fn set_up_by_dns(h: &mut Harness<'_, PhoneApp>, user: &str, pw: &str) -> Inputs {
    let mut inputs = Inputs::default();
    inputs.type_into(h, "Your address", &format!("{user}@{FOUND_DOMAIN}"));
    inputs.type_into(h, "Password", pw);
    inputs.click(h, "Connect");
    wait_for(h, "They match: log in", 20);
    inputs.click(h, "They match: log in");
    wait_for(h, "Ready", 30);
    inputs
}

/// One run of the scenario and what it took.
#[derive(Debug)]
pub struct FirstCall {
    /// alice's inputs from the first start until the phone is ready.
    pub setup: Inputs,
    /// alice's inputs from ready until the call is up.
    pub call: Inputs,
    /// First start to "Ready" (discovery, first contact, login, key fetch).
    pub to_ready: Duration,
    /// First start to the call answered and shown as verified.
    pub to_call: Duration,
    /// The PKG URL and SIP proxy the wizard stored (found by DNS).
    pub found: (String, String),
}

/// bob (set up by DNS first) waits; alice starts the phone for the first
/// time on a fresh directory, sets it up, calls bob, bob answers; ends
/// when alice's window shows the call in progress with bob verified.
/// `p` is a provider of [`FOUND_DOMAIN`] ([`Provider::start_for`]).
pub fn first_secured_call(p: &Provider) -> FirstCall {
    process_dns().serve(p);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bob = phone(AppDirs::at(db.path()));
    set_up_by_dns(&mut bob, "bob", BOB_PW);
    let t0 = Instant::now();
    let mut alice = phone(AppDirs::at(da.path()));
    let setup = set_up_by_dns(&mut alice, "alice", ALICE_PW);
    let to_ready = t0.elapsed();
    let mut call = Inputs::default();
    call.type_into(&mut alice, "Call", "bob");
    call.click(&mut alice, "📞 Call");
    wait_for(
        &mut bob,
        &format!("Incoming call from sip:alice@{FOUND_DOMAIN}"),
        15,
    );
    bob.get_by_label("Answer").click();
    bob.run_steps(2);
    wait_for(&mut alice, "In call", 15);
    wait_for(
        &mut alice,
        &format!("✔ verified: sip:bob@{FOUND_DOMAIN}"),
        5,
    );
    let to_call = t0.elapsed();
    let s = &alice.state().settings;
    let found = (s.pkg_url.clone(), s.sip_proxy.clone());
    alice.get_by_label("Hang up").click();
    alice.run_steps(2);
    FirstCall {
        setup,
        call,
        to_ready,
        to_call,
        found,
    }
}
