//! `pkg.toml`: where the server listens, its database, its files and its
//! limits. Every member has a default; see `config/pkg.toml`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// `sqlite://FILE` (default: `pkg.db` in `data_dir`) or `postgres://...`.
    pub database: Option<String>,
    /// Directory of the TLS certificate and key and the master key file.
    pub data_dir: PathBuf,
    /// Public URL of this PKG (`pkg_url` of the parameters); set at init.
    pub pkg_url: Option<String>,
    /// Name of an environment variable holding the passphrase that protects
    /// the master secret. When unset, a 0600 key file in `data_dir` does.
    pub master_passphrase_env: Option<String>,
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// Failed-login throttling.
    pub throttle: ThrottleConfig,
    /// Argon2id cost of password hashes.
    pub argon2: Argon2Config,
    /// Database pool size.
    pub db_max_connections: u32,
    /// The embedded SIP registrar/proxy (off unless `listen` is set).
    pub sip: SipConfig,
    /// The provider's services, served as the `services` member of
    /// `GET /v1/params` (pkg-api.md "Discovery and provider services").
    pub services: ibephone::pkg_client::api::Services,
    /// The media relay: `POST /v1/turn-credentials` and the embedded
    /// STUN/TURN server (off unless the section is present).
    pub turn: Option<TurnConfig>,
}

/// The provider's media relay (`[turn]`): TURN REST credentials with a
/// shared secret (the same secret works on coturn's `use-auth-secret`)
/// and, unless `embedded = false`, an embedded STUN/TURN server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Run the embedded STUN/TURN server (false: credentials only, for an
    /// external coturn that shares the secret).
    pub embedded: bool,
    /// UDP and TCP address of the embedded server (`127.0.0.1:0` picks a
    /// free port, the same for both).
    pub listen: String,
    /// TCP address of TURN over TLS (`turns:`, usually port 5349) with the
    /// PKG's certificate; unset: no TLS listener.
    pub tls_listen: Option<String>,
    /// The address written in XOR-RELAYED-ADDRESS (default: the listen IP;
    /// required when that is a wildcard).
    pub relay_ip: Option<std::net::IpAddr>,
    /// File of the shared secret (default `turn-secret` in `data_dir`,
    /// created 0600 with 32 random bytes on first start). Give coturn the
    /// same text as `static-auth-secret`.
    pub secret_file: Option<PathBuf>,
    /// Realm of the long-term credentials (default: the PKG's domain).
    pub realm: Option<String>,
    /// Lifetime of issued credentials, seconds (the `ttl` answered).
    pub ttl_secs: u64,
    /// The URIs answered with credentials. Default: `turn:HOST:PORT` over
    /// UDP and TCP of the embedded server, HOST from `advertise` or
    /// `relay_ip`.
    pub uris: Vec<String>,
    /// `host[:port]` of the relay as the phones reach it (for the default
    /// `uris`).
    pub advertise: Option<String>,
    /// Allocations one user may hold at once (RFC 8656 486 beyond).
    pub max_allocations_per_user: u32,
    /// Allocations on the whole server (508 beyond).
    pub max_allocations: u32,
    /// Relayed bandwidth per user and direction, kbit/s (packets beyond
    /// are dropped; a token bucket of one second).
    pub user_kbps: u32,
    /// Peer addresses (CIDR) that are never relayed to, on top of the
    /// built-in loopback, private, link-local, multicast and unspecified
    /// ranges.
    pub denied_peer_ips: Vec<String>,
    /// Peer addresses (CIDR) relayed to even inside a denied range (for
    /// tests on loopback, or a lab). Empty by default.
    pub allowed_peer_ips: Vec<String>,
    /// Worker threads of the relay's own runtime (the HTTPS and SIP loops
    /// never share it).
    pub threads: usize,
    /// Announce the relay in `GET /v1/params` (`services.stun` and
    /// `services.turn`, see [`crate::turn::announced_services`]) when
    /// `[services]` does not list them itself. Default true; false keeps
    /// those members as `[services]` has them.
    pub announce: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            embedded: true,
            listen: "0.0.0.0:3478".into(),
            tls_listen: None,
            relay_ip: None,
            secret_file: None,
            realm: None,
            ttl_secs: 86_400,
            uris: Vec::new(),
            advertise: None,
            max_allocations_per_user: 8,
            max_allocations: 10_000,
            user_kbps: 2_000,
            denied_peer_ips: Vec::new(),
            allowed_peer_ips: Vec::new(),
            threads: 1,
            announce: true,
        }
    }
}

/// The embedded SIP registrar/proxy of the domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP address of the registrar/proxy (`127.0.0.1:5060`);
    /// unset: no SIP service.
    pub listen: Option<String>,
    /// `host:port` written in Via and Record-Route (default: the bound
    /// address; required when `listen` is a wildcard address).
    pub advertise: Option<String>,
    /// How often the registrar reloads users from the database, seconds.
    pub user_refresh_secs: u64,
    /// Also accept SIP over TLS (RFC 3261 26.2) with the PKG's certificate
    /// (the one phones pin), on `tls_listen`.
    pub tls: bool,
    /// TLS address; default: the IP of `listen` with port 5061 (port 0,
    /// any free port, when `listen` has port 0). Setting it turns TLS on.
    pub tls_listen: Option<String>,
    /// Digest algorithms offered in challenges, in order (`"SHA-256"`,
    /// `"MD5"`); default SHA-256 then MD5 (RFC 8760). `["MD5"]` lets
    /// MD5-only clients such as SIPp 3.6 register.
    pub digest_algorithms: Vec<String>,
    /// Failed authentications per known user before a lockout.
    pub user_max_failures: u32,
    /// Failed authentications per source address (IPv6: per /64) before a
    /// lockout.
    pub addr_max_failures: u32,
    /// Counting window of failures, seconds.
    pub failure_window_secs: u64,
    /// Lockout length, seconds.
    pub lockout_secs: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        let auth = ibephone::sip::registrar::AuthConfig::default();
        SipConfig {
            listen: None,
            advertise: None,
            user_refresh_secs: 5,
            digest_algorithms: auth
                .algorithms
                .iter()
                .map(|a| a.token().to_string())
                .collect(),
            user_max_failures: auth.user_max_failures,
            addr_max_failures: auth.addr_max_failures,
            failure_window_secs: auth.failure_window.as_secs(),
            lockout_secs: auth.lockout.as_secs(),
            tls: false,
            tls_listen: None,
        }
    }
}

impl SipConfig {
    /// Where SIP over TLS listens when the UDP/TCP side is on `listen`:
    /// `tls_listen` if set, else with `tls` on the same IP and port 5061
    /// (0 when `listen`'s port is 0); `None`: no TLS.
    pub fn tls_addr(&self, listen: std::net::SocketAddr) -> Option<String> {
        match (&self.tls_listen, self.tls) {
            (Some(a), _) => Some(a.clone()),
            (None, true) => {
                let port = if listen.port() == 0 { 0 } else { 5061 };
                Some(std::net::SocketAddr::new(listen.ip(), port).to_string())
            }
            (None, false) => None,
        }
    }
}

impl SipConfig {
    /// The registrar's authentication settings; an unknown or empty
    /// algorithm list is an error naming it.
    pub fn auth(&self) -> anyhow::Result<ibephone::sip::registrar::AuthConfig> {
        use ibephone::sip::digest::Algorithm;
        let mut algorithms = Vec::new();
        for name in &self.digest_algorithms {
            let a = Algorithm::from_name(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "[sip] digest_algorithms: unknown algorithm {name:?} (SHA-256, MD5)"
                )
            })?;
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
        if algorithms.is_empty() {
            anyhow::bail!("[sip] digest_algorithms is empty");
        }
        Ok(ibephone::sip::registrar::AuthConfig {
            algorithms,
            user_max_failures: self.user_max_failures.max(1),
            addr_max_failures: self.addr_max_failures.max(1),
            failure_window: std::time::Duration::from_secs(self.failure_window_secs.max(1)),
            lockout: std::time::Duration::from_secs(self.lockout_secs),
            ..ibephone::sip::registrar::AuthConfig::default()
        })
    }
}

/// Session lifetimes in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_secs: u64,
    /// A session ends this long after login whatever its use.
    pub absolute_secs: u64,
}

/// Failed-login limits: after `max_failures` failures within
/// `window_secs`, further logins for that user (or from that address) are
/// refused with 429 for `lockout_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures per user name before lockout.
    pub user_max_failures: i64,
    /// Failures per client address before lockout.
    pub addr_max_failures: i64,
    /// Counting window.
    pub window_secs: i64,
    /// Lockout length.
    pub lockout_secs: i64,
}

/// Argon2id parameters for password hashes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Config {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8443".into(),
            database: None,
            data_dir: PathBuf::from("/var/lib/ibephone-pkg"),
            pkg_url: None,
            master_passphrase_env: None,
            body_limit: 16 * 1024,
            session: SessionConfig::default(),
            throttle: ThrottleConfig::default(),
            argon2: Argon2Config::default(),
            db_max_connections: 16,
            sip: SipConfig::default(),
            services: Default::default(),
            turn: None,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_secs: 900,
            absolute_secs: 12 * 3600,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            user_max_failures: 5,
            addr_max_failures: 50,
            window_secs: 900,
            lockout_secs: 300,
        }
    }
}

impl Default for Argon2Config {
    /// 19 MiB, 2 passes, 1 lane: the OWASP minimum for Argon2id; about
    /// 25 ms per login on one core of the reference machine.
    fn default() -> Self {
        Argon2Config {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// The database URL (default: SQLite file `pkg.db` in `data_dir`).
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("pkg.db").display()),
        }
    }

    /// Path of the TLS certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls-cert.pem")
    }

    /// Path of the TLS private key (PEM, 0600).
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("tls-key.pem")
    }

    /// Path of the TURN shared secret (0600).
    pub fn turn_secret_path(&self) -> PathBuf {
        self.turn
            .as_ref()
            .and_then(|t| t.secret_file.clone())
            .unwrap_or_else(|| self.data_dir.join("turn-secret"))
    }

    /// Path of the key file protecting the master secret (0600).
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let c: Config = toml::from_str(include_str!("../../config/pkg.toml")).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.session.idle_secs, d.session.idle_secs);
        assert_eq!(c.argon2.m_kib, d.argon2.m_kib);
        assert_eq!(c.throttle.user_max_failures, d.throttle.user_max_failures);
        assert_eq!(c.sip.listen, d.sip.listen);
        assert_eq!(c.sip.user_refresh_secs, d.sip.user_refresh_secs);
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
        let s: Config = toml::from_str("[sip]\nlisten = \"127.0.0.1:5060\"").unwrap();
        assert_eq!(s.sip.listen.as_deref(), Some("127.0.0.1:5060"));
        assert!(toml::from_str::<Config>("[sip]\nlisten_on = 1").is_err());
        // TLS: off unless asked; on the SIP IP at 5061 by default.
        let l: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(s.sip.tls_addr(l), None);
        let t: Config = toml::from_str("[sip]\nlisten = \"127.0.0.1:5060\"\ntls = true").unwrap();
        assert_eq!(t.sip.tls_addr(l).as_deref(), Some("127.0.0.1:5061"));
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(t.sip.tls_addr(any).as_deref(), Some("127.0.0.1:0"));
        let o: Config = toml::from_str("[sip]\ntls_listen = \"[::1]:6001\"").unwrap();
        assert_eq!(o.sip.tls_addr(l).as_deref(), Some("[::1]:6001"));
        let sv: Config =
            toml::from_str("[services]\nsip = [\"sips:sip.atlanta.invalid\"]\n").unwrap();
        assert_eq!(sv.services.sip, ["sips:sip.atlanta.invalid"]);
        assert!(sv.services.turn.is_empty());
        assert!(toml::from_str::<Config>("[services]\nsip = \"x\"").is_err());
        use ibephone::sip::digest::Algorithm;
        assert_eq!(
            d.sip.auth().unwrap().algorithms,
            [Algorithm::Sha256, Algorithm::Md5]
        );
        let md5: Config = toml::from_str("[sip]\ndigest_algorithms = [\"md5\"]").unwrap();
        assert_eq!(md5.sip.auth().unwrap().algorithms, [Algorithm::Md5]);
        for bad in ["[]", "[\"SHA-512-256\"]"] {
            let c: Config = toml::from_str(&format!("[sip]\ndigest_algorithms = {bad}")).unwrap();
            assert!(c.sip.auth().is_err(), "{bad}");
        }
        assert!(d.turn.is_none());
        let t: Config = toml::from_str("[turn]\nlisten = \"127.0.0.1:0\"").unwrap();
        let turn = t.turn.unwrap();
        assert_eq!(turn.listen, "127.0.0.1:0");
        assert!(turn.embedded);
        assert_eq!(turn.ttl_secs, TurnConfig::default().ttl_secs);
        assert!(toml::from_str::<Config>("[turn]\nsecret = \"x\"").is_err());
    }
}
