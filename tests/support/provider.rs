//! Process-level harness: a real `pkg-server` (PKG + embedded SIP
//! registrar/proxy) in a temporary directory, the configurations of
//! `ibephone agent` processes that log in to it (the processes:
//! [`super::process::Agent`]), raw SIP endpoints and UDP relays (lossy,
//! recording) between an agent and the proxy. Loopback only, `.invalid`
//! domain.
//!
//! `pkg-server` and `pkg-admin` are binaries of the workspace's other
//! package: they are taken from the directory of the `ibephone` binary
//! (`cargo test --workspace` builds them; alone, run
//! `cargo build -p pkg-server` first).

use super::process::write_secret;
use super::provider_bins::{run_admin, start_server};
use ibephone::sip::digest::{Challenge, Password};
use ibephone::sip::message::{HeaderForm, Message};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The provider's domain.
pub const DOMAIN: &str = "example.invalid";

/// A workspace binary next to `ibephone`.
pub fn bin(name: &str) -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_ibephone"));
    let p = me.parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p pkg-server` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// An initialized PKG directory with users.
pub struct Provider {
    /// The PKG data directory (removed when dropped).
    pub dir: tempfile::TempDir,
    /// `pkg.toml` in it.
    pub config: PathBuf,
}

impl Provider {
    /// A PKG of [`DOMAIN`] initialized with `pkg-admin`, its SIP registrar
    /// on a free port, `users` (name, password) added.
    pub fn new(users: &[(&str, &str)]) -> Provider {
        Self::with_sip(users, "")
    }

    /// As [`Provider::new`], with `sip` (TOML lines) added to its `[sip]`
    /// section.
    pub fn with_sip(users: &[(&str, &str)], sip: &str) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pkg.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
                 [sip]\nlisten = \"127.0.0.1:0\"\nuser_refresh_secs = 1\n{sip}\n\
                 [argon2]\nm_kib = 1024\nt = 1\np = 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let p = Provider { dir, config };
        p.admin(&["init", "--domain", DOMAIN], "");
        for (u, pw) in users {
            p.admin(&["user", "add", u], &format!("{pw}\n"));
        }
        p
    }

    /// Runs `pkg-admin ARGS...` on this PKG with `stdin`; it must succeed.
    pub fn admin(&self, args: &[&str], stdin: &str) -> String {
        let out = run_admin(&bin("pkg-admin"), &self.config, args, stdin);
        assert!(
            out.status.success(),
            "pkg-admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `pkg-server` on this PKG (with its SIP registrar/proxy).
    pub fn start(&self) -> Server {
        self.start_with(&[])
    }

    /// Starts `pkg-server` with its SIP registrar/proxy also on TLS (the
    /// PKG's certificate), on a free loopback port.
    pub fn start_tls(&self) -> Server {
        let s = self.start_with(&["--sip-tls", "127.0.0.1:0"]);
        assert!(
            s.sip_tls.is_some(),
            "pkg-server did not say where SIP over TLS listens"
        );
        s
    }

    fn start_with(&self, args: &[&str]) -> Server {
        let (child, startup) = start_server(&bin("pkg-server"), &self.config, args);
        Server {
            child,
            url: startup.url,
            fingerprint: startup.fingerprint,
            sip: startup.sip.parse().unwrap(),
            sip_tls: startup.sip_tls.map(|a| a.parse().unwrap()),
        }
    }
}

/// A running `pkg-server` (killed when dropped).
pub struct Server {
    child: Child,
    /// `https://host:port` of the PKG.
    pub url: String,
    /// SHA-256 of its TLS certificate, hex.
    pub fingerprint: String,
    /// Its SIP registrar/proxy.
    pub sip: SocketAddr,
    /// Its SIP over TLS address, when started with TLS.
    pub sip_tls: Option<SocketAddr>,
}

impl Server {
    /// Logs `user` in to the PKG with the account `password` and asks a
    /// SIP device credential for `device` (`POST /v1/sip-credentials`):
    /// the digest password the registrar accepts (the account password
    /// never is).
    pub fn sip_credential(&self, user: &str, password: &str, device: &str) -> String {
        use ibephone::pkg_client::{api::SecretString, PkgClient};
        let fp = ibephone::pkg_client::tls::parse_fingerprint(&self.fingerprint).unwrap();
        let client = PkgClient::new(&self.url, Some(fp)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let session = client
                .login(user, &SecretString::new(password.to_string()))
                .await
                .unwrap();
            let c = client.sip_credentials(&session, device).await.unwrap();
            let _ = client.logout(&session).await;
            assert_eq!(c.username, user);
            c.password.expose().to_string()
        })
    }

    /// CPU time the server process used so far (user + system, from
    /// `/proc/PID/stat`, Linux), for load figures.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces) in parens.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
        let ticks = f[11] + f[12];
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Kills the server (a PKG that went down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an agent configuration says.
#[derive(Clone, Copy)]
pub struct Spec<'a> {
    /// File names (`NAME.toml`, `NAME.password`, `NAME.keystore`).
    pub name: &'a str,
    /// The account (user part of the AOR, PKG login).
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// The agent's outbound proxy (the registrar, or a relay in front of it).
    pub proxy: SocketAddr,
    /// `require`, `ask` or `allow-plain`.
    pub policy: &'a str,
    /// Pin the PKG certificate in the config (else trust on first use).
    pub pin: bool,
    /// Reach `proxy` over TLS (`proxy = "sips:..."`).
    pub tls: bool,
}

impl<'a> Spec<'a> {
    /// Files named after `user`, policy `require`, the PKG pinned.
    pub fn new(user: &'a str, password: &'a str, proxy: SocketAddr) -> Self {
        Spec {
            name: user,
            user,
            password,
            proxy,
            policy: "require",
            pin: true,
            tls: false,
        }
    }

    /// The same over TLS to `proxy`.
    pub fn tls(self, proxy: SocketAddr) -> Self {
        Spec {
            proxy,
            tls: true,
            ..self
        }
    }
}

/// Writes an agent configuration (`[pkg]` mode) in `dir` and returns its path.
pub fn agent_config(dir: &Path, server: &Server, spec: Spec) -> PathBuf {
    let Spec {
        name,
        user,
        password,
        proxy,
        policy,
        pin,
        tls,
    } = spec;
    let proxy = if tls {
        format!("sips:{proxy}")
    } else {
        proxy.to_string()
    };
    write_secret(
        &dir.join(format!("{name}.password")),
        &format!("{password}\n"),
    );
    let fp = if pin {
        format!("fingerprint = \"{}\"\n", server.fingerprint)
    } else {
        String::new()
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[account]\naor = \"sip:{user}@{DOMAIN}\"\npassword_file = \"{name}.password\"\n\
             [sip]\nlisten = \"127.0.0.1:0\"\nproxy = \"{proxy}\"\n\
             [pkg]\nurl = \"{}\"\n{fp}store = \"{name}.keystore\"\n\
             [security]\npolicy = \"{policy}\"\nprivacy = true\n",
            server.url
        ),
    )
    .unwrap();
    path
}

/// Today's key period label (YYYY-MM, UTC).
pub fn period_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ibephone::ibe::Period::month_at(now).as_str().to_string()
}

/// Previous, current and next period labels.
pub fn period_window() -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = ibephone::ibe::Period::month_at(now);
    [
        c.previous_month().unwrap(),
        c.clone(),
        c.next_month().unwrap(),
    ]
    .iter()
    .map(|p| p.as_str().to_string())
    .collect()
}

/// A raw SIP endpoint on loopback UDP (a phone without the tunnel, or an
/// attacker).
pub struct RawPhone {
    /// Its socket.
    pub sock: UdpSocket,
    /// Its address.
    pub local: SocketAddr,
    pub proxy: SocketAddr,
    n: u32,
}

impl RawPhone {
    /// A phone on a free loopback port talking to `proxy`.
    pub fn new(proxy: SocketAddr) -> RawPhone {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = sock.local_addr().unwrap();
        RawPhone {
            sock,
            local,
            proxy,
            n: 0,
        }
    }

    /// A new request `method` to `uri` from `from_user` of [`DOMAIN`] to
    /// `to` (fresh Call-ID, branch and CSeq).
    pub fn request(&mut self, method: &str, uri: &str, from_user: &str, to: &str) -> Message {
        self.n += 1;
        let p = self.local.port();
        let m = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKr{p}x{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from_user}@{DOMAIN}>;tag=f{p}\r\nTo: <{to}>\r\n\
             Call-ID: r{p}-{}@127.0.0.1\r\nCSeq: {} {method}\r\nContact: <sip:{}>\r\n\
             Content-Length: 0\r\n\r\n",
            self.local, self.n, self.n, self.n, self.local
        );
        Message::parse(m.as_bytes()).unwrap()
    }

    /// Sends `m` to `to`.
    pub fn send_to(&self, m: &Message, to: SocketAddr) {
        self.sock
            .send_to(&m.to_bytes(HeaderForm::Full), to)
            .unwrap();
    }

    /// The next SIP message within `wait`, 100 Trying skipped.
    pub fn recv(&self, wait: Duration) -> Option<(Message, SocketAddr)> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let (n, from) = self.sock.recv_from(&mut buf).ok()?;
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if m.status() != Some(100) {
                return Some((m, from));
            }
        }
    }

    /// Sends `m` to the proxy and returns the final status of its answer.
    pub fn ask(&self, m: &Message) -> Option<u16> {
        self.send_to(m, self.proxy);
        loop {
            let (r, _) = self.recv(Duration::from_secs(3))?;
            if r.call_id() == m.call_id() && r.status().is_some() {
                return r.status();
            }
        }
    }

    /// The next request of `m`'s Call-ID: same headers, a new Via branch
    /// and the next CSeq (RFC 3261 10.2.4: a UA answering a challenge
    /// keeps the Call-ID, to which the registrar binds its nonce).
    pub fn next_in_call(&mut self, m: &Message) -> Message {
        self.n += 1;
        let (seq, method) = m.cseq().unwrap();
        let mut next = m.clone();
        next.replace_first(
            "Via",
            format!(
                "SIP/2.0/UDP {};branch=z9hG4bKr{}x{};rport",
                self.local,
                self.local.port(),
                self.n
            ),
        );
        next.set_header("CSeq", format!("{} {method}", seq + 1));
        next
    }

    /// REGISTER `user` answering the digest challenge as `auth_user` with
    /// `password` (in the challenged Call-ID); the final status.
    pub fn register_as(&mut self, user: &str, auth_user: &str, password: &str) -> u16 {
        self.register_contact(user, auth_user, password, None)
    }

    /// [`RawPhone::register_as`] with `contact` (a Contact header value)
    /// instead of the phone's own address.
    pub fn register_contact(
        &mut self,
        user: &str,
        auth_user: &str,
        password: &str,
        contact: Option<&str>,
    ) -> u16 {
        let aor = format!("sip:{user}@{DOMAIN}");
        let uri = format!("sip:{DOMAIN}");
        let mut req = self.request("REGISTER", &uri, user, &aor);
        if let Some(c) = contact {
            req.set_header("Contact", c);
        }
        self.send_to(&req, self.proxy);
        let (ch, _) = self.recv(Duration::from_secs(3)).unwrap();
        assert_eq!(ch.status(), Some(401));
        let c = Challenge::best(ch.header_values("WWW-Authenticate")).unwrap();
        let mut req = self.next_in_call(&req);
        req.push_header(
            "Authorization",
            c.answer(
                auth_user,
                &Password::new(password),
                "REGISTER",
                &uri,
                1,
                "cn",
            ),
        );
        self.ask(&req).unwrap()
    }

    /// REGISTER `user` with the digest `password` (a device credential,
    /// [`Server::sip_credential`]); the final status.
    pub fn register(&mut self, user: &str, password: &str) -> u16 {
        self.register_as(user, user, password)
    }
}

/// What a relay saw: (towards the proxy, over TCP, bytes) in arrival
/// order (TCP entries are stream chunks).
pub type RelayLog = Vec<(bool, bool, Vec<u8>)>;

/// A relay between one agent and the proxy: the agent's `proxy` is
/// `front`. UDP datagrams are forwarded or dropped with probability `loss`;
/// TCP connections (large messages, RFC 3261 18.1.1) are piped both ways
/// without loss (TCP retransmits by itself). Everything is recorded.
pub struct Relay {
    /// Where the agent sends (its `proxy`).
    pub front: SocketAddr,
    /// The relay's address on the proxy side (the agent's flow at the proxy).
    pub back: SocketAddr,
    /// Everything relayed.
    pub log: Arc<Mutex<RelayLog>>,
    /// The agent's address, once it sent something.
    pub agent: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

fn pipe(from: std::net::TcpStream, to: std::net::TcpStream, up: bool, log: Arc<Mutex<RelayLog>>) {
    use std::io::Read;
    std::thread::spawn(move || {
        let (mut from, mut to) = (from, to);
        let mut buf = vec![0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    log.lock().unwrap().push((up, true, buf[..n].to_vec()));
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn tcp_forward(
    listener: std::net::TcpListener,
    target: impl Fn() -> Option<SocketAddr> + Send + 'static,
    up: bool,
    log: Arc<Mutex<RelayLog>>,
) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(a) = conn else { return };
            let Some(t) = target() else { continue };
            let Ok(b) = std::net::TcpStream::connect(t) else {
                continue;
            };
            let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            pipe(a, b, up, log.clone());
            pipe(b2, a2, !up, log.clone());
        }
    });
}

impl Relay {
    /// A relay in front of `proxy` dropping UDP datagrams with probability
    /// `loss` (seeded by `seed`).
    pub fn new(proxy: SocketAddr, loss: f64, seed: u64) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let (fa, ba) = (front.local_addr().unwrap(), back.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let agent: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        // TCP on the same ports: agent -> front -> proxy, proxy -> back -> agent.
        let tf = std::net::TcpListener::bind(fa).unwrap();
        let tb = std::net::TcpListener::bind(ba).unwrap();
        tcp_forward(tf, move || Some(proxy), true, log.clone());
        let who = agent.clone();
        tcp_forward(tb, move || *who.lock().unwrap(), false, log.clone());
        let (l, s, who) = (log.clone(), stop.clone(), agent.clone());
        std::thread::spawn(move || {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *who.lock().unwrap() = Some(from);
                    l.lock().unwrap().push((true, false, buf[..n].to_vec()));
                    if !rng.gen_bool(loss) {
                        let _ = back.send_to(&buf[..n], proxy);
                    }
                }
                if let Ok((n, _)) = back.recv_from(&mut buf) {
                    l.lock().unwrap().push((false, false, buf[..n].to_vec()));
                    let a = *who.lock().unwrap();
                    if let Some(a) = a {
                        if !rng.gen_bool(loss) {
                            let _ = front.send_to(&buf[..n], a);
                        }
                    }
                }
            }
        });
        Relay {
            front: fa,
            back: ba,
            log,
            agent,
            stop,
        }
    }

    /// SIP messages seen towards the agent (`to_agent`) or from it, UDP
    /// datagrams and TCP streams framed by Content-Length.
    pub fn messages(&self, to_agent: bool) -> Vec<Message> {
        let mut out = Vec::new();
        let mut stream = Vec::new();
        for (up, tcp, b) in self.log.lock().unwrap().iter() {
            if *up == to_agent {
                continue;
            }
            if *tcp {
                stream.extend_from_slice(b);
                while let Ok(Some(m)) = ibephone::sip::driver::take_frame(&mut stream) {
                    if let Ok(m) = Message::parse(&m) {
                        out.push(m);
                    }
                }
            } else if let Ok(m) = Message::parse(b) {
                out.push(m);
            }
        }
        out
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
