//! Test harness: a PKG in a temporary directory, `pkg-admin` runs and real
//! `pkg-server` processes on 127.0.0.1 with a free port. With
//! `IBEPHONE_TEST_POSTGRES=postgres://...` every test also runs on a fresh
//! PostgreSQL database created for it.
#![allow(dead_code)]

// One copy of the process start-up for both packages.
#[path = "../../../tests/support/provider_bins.rs"]
mod provider_bins;

use provider_bins::{run_admin, start_server};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};

pub const DOMAIN: &str = "atlanta.invalid";
pub const ALICE_PW: &str = "alice secret 1";
pub const BOB_PW: &str = "bob secret 22";

/// The databases to run on: SQLite always, PostgreSQL when configured.
pub fn backends() -> Vec<Option<String>> {
    let mut v = vec![None];
    if let Ok(url) = std::env::var("IBEPHONE_TEST_POSTGRES") {
        if !url.is_empty() {
            v.push(Some(url));
        }
    }
    v
}

/// A fresh database on the server of `base` (a `postgres://` URL).
pub async fn fresh_pg_db(base: &str) -> String {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(base).await.unwrap();
    let raw: [u8; 8] = ibephone::pkg_client::seal::random_bytes().unwrap();
    let name = format!("pkgtest_{}", hex::encode(raw));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    let tail = base
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}/{name}{tail}")
}

pub struct Pkg {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// What `pkg-admin init` printed.
    pub init_stdout: String,
}

impl Pkg {
    /// An initialized PKG for DOMAIN with users alice and bob.
    pub async fn new(backend: &Option<String>, extra: &str) -> Pkg {
        Self::with_domain(backend, extra, DOMAIN, true).await
    }

    pub async fn with_domain(
        backend: &Option<String>,
        extra: &str,
        domain: &str,
        users: bool,
    ) -> Pkg {
        let dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Some(base) => format!("database = \"{}\"\n", fresh_pg_db(base).await),
            None => String::new(),
        };
        let config = dir.path().join("pkg.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{db}{extra}\n\
                 [argon2]\nm_kib = 1024\nt = 1\np = 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut pkg = Pkg {
            dir,
            config,
            init_stdout: String::new(),
        };
        let out = pkg.admin(
            &[
                "init",
                "--domain",
                domain,
                "--pkg-url",
                "https://127.0.0.1:8443",
            ],
            "",
        );
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pkg.init_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if users {
            pkg.admin_ok(&["user", "add", "alice"], &format!("{ALICE_PW}\n"));
            pkg.admin_ok(&["user", "add", "bob"], &format!("{BOB_PW}\n"));
        }
        pkg
    }

    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        run_admin(
            Path::new(env!("CARGO_BIN_EXE_pkg-admin")),
            &self.config,
            args,
            stdin,
        )
    }

    pub fn admin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.admin(args, stdin);
        assert!(
            out.status.success(),
            "pkg-admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn admin_code(&self, args: &[&str], stdin: &str) -> i32 {
        self.admin(args, stdin).status.code().unwrap()
    }

    pub fn start(&self) -> Server {
        Server::start(&self.config)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub struct Server {
    child: Child,
    pub url: String,
    pub fingerprint: [u8; 32],
    /// The embedded SIP registrar/proxy (`sip=` of the startup line).
    pub sip: Option<std::net::SocketAddr>,
    /// The embedded STUN/TURN relay, UDP and TCP (`turn=`).
    pub turn: Option<std::net::SocketAddr>,
    /// The relay's TLS listener (`turns=`).
    pub turns: Option<std::net::SocketAddr>,
}

impl Server {
    pub fn start(config: &Path) -> Server {
        Self::start_with(config, &[])
    }

    /// Starts the server with extra arguments (`--sip 127.0.0.1:0`).
    pub fn start_with(config: &Path, args: &[&str]) -> Server {
        let (child, startup) =
            start_server(Path::new(env!("CARGO_BIN_EXE_pkg-server")), config, args);
        let fingerprint =
            ibephone::pkg_client::tls::parse_fingerprint(&startup.fingerprint).unwrap();
        let sip = match startup.sip.as_str() {
            "off" => None,
            a => Some(a.parse().unwrap()),
        };
        let turn = match startup.turn.as_str() {
            "off" => None,
            a => Some(a.parse().unwrap()),
        };
        Server {
            child,
            url: startup.url,
            fingerprint,
            sip,
            turn,
            turns: startup.turns.map(|a| a.parse().unwrap()),
        }
    }

    /// The server process's id (the key_fetch bench reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> ibephone::pkg_client::PkgClient {
        ibephone::pkg_client::PkgClient::new(&self.url, Some(self.fingerprint)).unwrap()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTPS request (for malformed input): returns status and body.
pub async fn raw(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Option<String>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use std::sync::Arc;
    let verifier = Arc::new(ibephone::pkg_client::tls::PinnedVerifier::new(
        Some(server.fingerprint),
        ibephone::pkg_client::tls::provider(),
    ));
    let cfg = ibephone::pkg_client::tls::client_config(verifier).unwrap();
    let addr = server.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await;
    match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let b = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&b).into_owned(), retry)
        }
        Err(e) => (0, e.to_string(), None),
    }
}

/// [`raw`] `POST path` of a JSON `body`, with `Authorization: auth`
/// when given.
pub async fn post_json(
    server: &Server,
    path: &str,
    auth: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> (u16, String, Option<String>) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.map(|a| ("authorization", a)));
    raw(server, "POST", path, &headers, body.into()).await
}

/// The JSON body of a login.
pub fn login_body(user: &str, password: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"user": user, "password": password})).unwrap()
}

/// A `[throttle]` section: lockout after `user_max` failures of one user
/// or `addr_max` from one address within 60 s, for `lockout_secs`.
pub fn throttle(user_max: u32, addr_max: u32, lockout_secs: u32) -> String {
    format!(
        "[throttle]\nuser_max_failures = {user_max}\naddr_max_failures = {addr_max}\n\
         window_secs = 60\nlockout_secs = {lockout_secs}\n"
    )
}

pub fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"].as_str().unwrap().to_string()
}

pub fn window() -> Vec<ibephone::ibe::Period> {
    pkg_server::http::period_window(pkg_server::http::now_unix())
}

/// Deals a 2-of-3 threshold PKG for DOMAIN over three fresh server
/// directories (`pkg-admin init --threshold 2/3` run in the first, naming
/// the other two configurations); returns what `init` printed.
pub fn deal_2_of_3(pkgs: &[Pkg]) -> String {
    let others: Vec<String> = pkgs[1..]
        .iter()
        .map(|p| p.config.display().to_string())
        .collect();
    let mut args = vec!["init", "--domain", DOMAIN, "--threshold", "2/3"];
    for o in &others {
        args.extend(["--server-config", o.as_str()]);
    }
    pkgs[0].admin_ok(&args, "")
}

/// A port of 127.0.0.1 free for UDP and TCP a moment ago (a server's URL
/// or relay goes into configuration before the server starts).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP port");
        let port = udp.local_addr().expect("its address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
