//! The agent's configuration file (TOML) and the key file it loads.
//!
//! ```toml
//! [account]
//! aor = "sip:alice@atlanta.invalid"
//! password_file = "alice.password"   # digest password for the registrar
//!
//! [sip]
//! listen = "127.0.0.1:5071"           # our UDP/TCP address (0.0.0.0:0: any)
//! proxy = "127.0.0.1:5060"            # outbound proxy and registrar (UDP); absent
//!                                     # with [pkg]: discovered (services.sip, RFC 3263)
//! # proxy = "sips:sip.atlanta.invalid"  # the same over TLS (port 5061), or
//! # proxy = "sip:10.0.0.1:5060;transport=tcp"
//! # keepalive_secs = 25               # RFC 5626 keep-alives to the proxy (CRLF on TCP/TLS;
//!                                     # STUN on UDP when the registrar supports outbound,
//!                                     # which also notices a rebooted NAT); 0: off
//! # pong_timeout_secs = 10           # a keep-alive unanswered this long: the flow failed,
//!                                     # register again (RFC 5626 4.4.1; 1 to 120)
//! # network_check_secs = 2            # how often the route to the proxy is looked
//!                                     # at (network change: re-register, re-INVITE); 0: off
//! # expires = 600                     # registration lifetime asked of the registrar
//!                                     # (60 to 86400 s); refreshed before it runs out
//!
//! [pkg]                               # keys from the provider's PKG (default setup)
//! url = "https://127.0.0.1:8443"     # absent: discovered from the AOR's domain
//!                                     # (SRV _ibephone-pkg._tcp, else https://pkg.DOMAIN)
//! fingerprint = "<sha256 hex>"        # TLS certificate pin; absent: trust on first use
//! store = "alice.keystore"            # key store directory (default: the user's data dir)
//! # user = "alice"                    # PKG account (default: the AOR's user part)
//! # otp_command = ["oathtool", "--totp", "-b", "@alice.totp"]  # prints the current
//! #                                   # one-time code (second factor), no shell; for a
//! #                                   # threshold provider the server index is appended
//!
//! # or, instead of [pkg], a key file issued out of band:
//! # [keys]
//! # file = "alice.keys.json"          # params and private keys as issued by the PKG
//!
//! [security]
//! policy = "require"                  # require | ask | allow-plain
//! privacy = true                      # anonymous outer From
//!
//! [media]                             # optional
//! # ice = true                        # ICE (RFC 8445) on every call; false: latching only
//! # stun = "stun.atlanta.invalid:3478" # STUN server for server-reflexive candidates
//! #   (relayed candidates need no setting: with [pkg] the agent asks the
//! #   provider for TURN credentials at start, POST /v1/turn-credentials)
//! ```
//!
//! Exactly one of `[pkg]` and `[keys]` says where the keys come from
//! ([`KeySource`]). With `[pkg]` the agent logs in with the account's
//! password at start ([`crate::agent::keys`]): [`AgentFile::load`] reads
//! the file, `agent::keys::load` provisions the keys and yields the
//! [`AgentConfig`]. With `[keys]`, [`AgentConfig::load`] does both.
//!
//! Relative paths are relative to the configuration file. The key file
//! holds the provider's parameters (`params`), other trusted providers'
//! parameters (`trusted`) and the private keys per period (`keys`, the
//! `/v1/keys` answer of the PKG API): it is a secret, read only when its
//! mode is 0600.

use super::filter::SecurityPolicy;
use crate::ibe::encoding::b64_decode;
use crate::ibe::{Aor, Identity, Period, PrivateKeys, PublicParams};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What is wrong with a configuration or key file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is invalid.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    account: RawAccount,
    sip: RawSip,
    #[serde(default)]
    keys: Option<RawKeys>,
    #[serde(default)]
    pkg: Option<RawPkg>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    media: RawMedia,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    #[serde(default = "default_true")]
    ice: bool,
    #[serde(default)]
    stun: Option<String>,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            ice: true,
            stun: None,
        }
    }
}

/// The `[media]` section: how calls' media crosses NATs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// ICE on every call (default); off: the SDP address with latching.
    pub ice: bool,
    /// The STUN server (`host:port`, resolved at start).
    pub stun: Option<SocketAddr>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            ice: true,
            stun: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkg {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    store: Option<PathBuf>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    device: Option<String>,
    otp_command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    aor: String,
    password_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    listen: SocketAddr,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default = "default_keepalive")]
    keepalive_secs: u64,
    #[serde(default = "default_network_check")]
    network_check_secs: u64,
    #[serde(default = "default_pong_timeout")]
    pong_timeout_secs: u64,
    #[serde(default = "default_expires")]
    expires: u32,
}

fn default_expires() -> u32 {
    SipSettings::default().expires
}

/// The shortest `[sip] expires` taken: a minute, RFC 3261 10.2.8's
/// smallest Min-Expires a registrar may ask for (shorter would be
/// refused with 423 by any registrar).
pub const MIN_EXPIRES_SECS: u32 = 60;

/// The longest `[sip] expires` taken: a day. A registrar caps what it
/// grants anyway; the phone refreshes before the granted lifetime ends.
pub const MAX_EXPIRES_SECS: u32 = 86_400;

fn default_pong_timeout() -> u64 {
    SipSettings::default().pong_timeout.as_secs()
}

/// The longest `[sip] keepalive_secs` and `network_check_secs` taken:
/// an hour. A keep-alive rarer than that keeps no NAT mapping open, and
/// a far larger value would overflow the timers' clock arithmetic.
pub const MAX_SIP_INTERVAL_SECS: u64 = 3600;

/// The longest `[sip] pong_timeout_secs` taken: two minutes. RFC 5626
/// 4.4.1 says 10 s; a flow silent for longer than this is dead for any
/// caller trying to reach the phone.
pub const MAX_PONG_TIMEOUT_SECS: u64 = 120;

impl RawSip {
    /// The keep-alive, network-check and pong figures, checked: each
    /// interval 0 (off) to [`MAX_SIP_INTERVAL_SECS`], the pong timeout 1
    /// to [`MAX_PONG_TIMEOUT_SECS`]; a sentence naming the setting
    /// otherwise.
    fn timers(
        &self,
    ) -> Result<
        (
            Option<std::time::Duration>,
            Option<std::time::Duration>,
            std::time::Duration,
        ),
        String,
    > {
        let interval = |name: &str, secs: u64| {
            if secs > MAX_SIP_INTERVAL_SECS {
                return Err(format!(
                    "[sip] {name} = {secs}: at most {MAX_SIP_INTERVAL_SECS} (seconds; 0 turns it off)"
                ));
            }
            Ok((secs > 0).then(|| std::time::Duration::from_secs(secs)))
        };
        let keepalive = interval("keepalive_secs", self.keepalive_secs)?;
        let network_check = interval("network_check_secs", self.network_check_secs)?;
        if !(1..=MAX_PONG_TIMEOUT_SECS).contains(&self.pong_timeout_secs) {
            return Err(format!(
                "[sip] pong_timeout_secs = {}: from 1 to {MAX_PONG_TIMEOUT_SECS} seconds (RFC 5626 says 10)",
                self.pong_timeout_secs
            ));
        }
        Ok((
            keepalive,
            network_check,
            std::time::Duration::from_secs(self.pong_timeout_secs),
        ))
    }

    /// The registration lifetime to ask for, checked:
    /// [`MIN_EXPIRES_SECS`] to [`MAX_EXPIRES_SECS`]; a sentence naming
    /// the setting otherwise.
    fn expires(&self) -> Result<u32, String> {
        if !(MIN_EXPIRES_SECS..=MAX_EXPIRES_SECS).contains(&self.expires) {
            return Err(format!(
                "[sip] expires = {}: from {MIN_EXPIRES_SECS} to {MAX_EXPIRES_SECS} seconds",
                self.expires
            ));
        }
        Ok(self.expires)
    }
}

fn default_network_check() -> u64 {
    SipSettings::default()
        .network_check
        .map_or(0, |d| d.as_secs())
}

fn default_keepalive() -> u64 {
    SipSettings::default().keepalive.map_or(0, |d| d.as_secs())
}

/// The `[sip]` transport settings beyond the addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// Interval of the keep-alives towards the outbound proxy (RFC 5626
    /// 4.4.1), `None` for none (`keepalive_secs = 0`). Default 25 s, below
    /// the 30 s that the shortest common UDP NAT mappings last.
    pub keepalive: Option<std::time::Duration>,
    /// How long a keep-alive may wait for its answer (the CRLF pong on
    /// TCP/TLS, the STUN answer on UDP) before the flow counts as failed
    /// and the phone registers again (`pong_timeout_secs`). Default 10 s
    /// (RFC 5626 4.4.1); 1 s to 2 min.
    pub pong_timeout: std::time::Duration,
    /// How the outbound proxy is reached: UDP (TCP for large requests),
    /// TCP, or TLS (a `sips:` / `;transport=tls` proxy URI).
    pub transport: crate::sip::Transport,
    /// The proxy's host as configured (a name or an IP address): over TLS
    /// its certificate must be for it when no pin is in force.
    pub proxy_host: Option<String>,
    /// Over TLS, the SHA-256 of the certificate the proxy must present:
    /// the PKG's pin (the provider's SIP service uses the PKG's
    /// certificate). `None`: the platform's trusted roots for
    /// `proxy_host`.
    pub tls_pin: Option<[u8; 32]>,
    /// How often the local address towards the proxy is looked at again
    /// (network change detection: a new address re-registers and
    /// re-INVITEs the calls), `None` for never (`network_check_secs =
    /// 0`). Default 2 s.
    pub network_check: Option<std::time::Duration>,
    /// The registration lifetime the phone asks for (`[sip] expires`),
    /// seconds: [`MIN_EXPIRES_SECS`] to [`MAX_EXPIRES_SECS`], default
    /// 600. The registrar may grant less; the phone refreshes at half the
    /// granted lifetime (at most 10 minutes before it ends).
    pub expires: u32,
    /// The other targets of the proxy's list (the other addresses of a
    /// `[sip] proxy` host name, the other discovered targets), in the
    /// order they are tried when the proxy in use stops answering
    /// (`sip::ua::UserAgent::set_fallback_proxies`). Empty: none.
    pub fallback: Vec<crate::sip::Dest>,
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            keepalive: Some(std::time::Duration::from_secs(25)),
            pong_timeout: crate::sip::ua::KeepAlive::default().pong_timeout,
            network_check: Some(std::time::Duration::from_secs(2)),
            transport: crate::sip::Transport::Udp,
            proxy_host: None,
            tls_pin: None,
            expires: 600,
            fallback: Vec::new(),
        }
    }
}

/// Parses a `[sip] proxy` value ([`crate::sip::proxy_uri::ProxyUri`]) and
/// resolves its host to the addresses the phone may send to: an IP
/// address as it is; a name with the system's resolver, every address,
/// IPv6 ones first, each family in the resolver's order (the phone tries
/// them in that order: [`choose_proxy`]). Never an empty list.
pub fn resolve_proxy(
    text: &str,
) -> Result<(Vec<SocketAddr>, crate::sip::proxy_uri::ProxyUri), String> {
    use std::net::ToSocketAddrs;
    let uri = crate::sip::proxy_uri::ProxyUri::parse(text).map_err(|e| e.to_string())?;
    let addrs = match uri.ip() {
        Some(ip) => vec![SocketAddr::new(ip, uri.port)],
        None => {
            let found: Vec<SocketAddr> = (uri.host.as_str(), uri.port)
                .to_socket_addrs()
                .map_err(|e| format!("proxy {}: cannot resolve: {e}", uri.host))?
                .collect();
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for a in found
                .iter()
                .filter(|a| a.is_ipv6())
                .chain(found.iter().filter(|a| a.is_ipv4()))
            {
                if !addrs.contains(a) {
                    addrs.push(*a);
                }
            }
            addrs
        }
    };
    if addrs.is_empty() {
        return Err(format!("proxy {}: no address", uri.host));
    }
    Ok((addrs, uri))
}

/// How long [`choose_proxy`] waits for a stream target's connection.
pub const PROXY_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The proxy to use among `targets` (in the order to try) and the others
/// to fall back on, in order, when it stops answering: the first target
/// that answers, tried the RFC 8305 way
/// ([`crate::pkg_client::discovery::choose_sip_target`]); none answering,
/// the first. `None` only for an empty list.
pub async fn choose_proxy(
    targets: &[crate::sip::Dest],
) -> Option<(crate::sip::Dest, Vec<crate::sip::Dest>)> {
    use crate::pkg_client::discovery::{choose_sip_target, fallbacks_after, SipTarget};
    let targets: Vec<SipTarget> = targets.iter().map(|d| SipTarget::from(*d)).collect();
    let chosen = choose_sip_target(&targets, PROXY_CONNECT_TIMEOUT).await?;
    let rest = fallbacks_after(&targets, chosen)
        .into_iter()
        .map(crate::sip::Dest::from)
        .collect();
    Some((chosen.into(), rest))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default = "default_policy")]
    policy: SecurityPolicy,
    #[serde(default = "default_true")]
    privacy: bool,
}

impl Default for RawSecurity {
    fn default() -> Self {
        RawSecurity {
            policy: default_policy(),
            privacy: true,
        }
    }
}

fn default_policy() -> SecurityPolicy {
    SecurityPolicy::Require
}

fn default_true() -> bool {
    true
}

/// Where an agent's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file (`[keys] file`), as written by [`write_key_file`].
    File(PathBuf),
    /// The provider's PKG (`[pkg]`).
    Pkg(PkgSettings),
}

/// The `[pkg]` section: how to reach the PKG and where to keep its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgSettings {
    /// `https://host:port` of the PKG. When the file names none, the
    /// spec's fallback `https://pkg.<domain>` until discovery finds the
    /// SRV record's.
    pub url: String,
    /// The file named no `url`: it is discovered from the AOR's domain
    /// (`agent::keys::load` does that).
    pub discover: bool,
    /// SHA-256 of the PKG's TLS certificate; `None`: trust on first use
    /// (the fingerprint seen is recorded in the key store and pinned from
    /// then on).
    pub fingerprint: Option<[u8; 32]>,
    /// Directory of the key store (0600 files, keys encrypted at rest).
    pub store: PathBuf,
    /// PKG account name.
    pub user: String,
    /// A command (program and arguments, run without a shell) that prints
    /// the current one-time code of the account's second factor
    /// (pkg-api.md "Second factor at login"); `None`: the account has none.
    /// For a threshold provider (one seed per server) it runs once per
    /// server with the server's index appended as the last argument.
    pub otp_command: Option<Vec<String>>,
}

/// A parsed configuration file whose keys are not loaded yet.
#[derive(Debug)]
pub struct AgentFile {
    /// Our address of record.
    pub aor: Aor,
    /// The account password: the PKG login, and the digest password only
    /// when no device SIP credential is issued (key files, Kamailio).
    pub password: zeroize::Zeroizing<String>,
    /// Local SIP address.
    pub listen: SocketAddr,
    /// Outbound proxy and registrar; `None` (only with `[pkg]`): to be
    /// discovered from the provider's services or RFC 3263 on the domain.
    pub proxy: Option<SocketAddr>,
    /// Security policy for unprotected peers.
    pub policy: SecurityPolicy,
    /// Anonymous outer From.
    pub privacy: bool,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Transport settings of `[sip]`.
    pub sip: SipSettings,
    /// `[pkg] device`: this phone's device name toward the PKG (default:
    /// a random name kept in the key store).
    pub device: Option<String>,
    /// The `[media]` section.
    pub media: MediaSettings,
}

impl AgentFile {
    /// Reads `path` and the password file it names; every error names the
    /// file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(&read(path)?).map_err(|e| invalid(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let aor = Aor::parse(&raw.account.aor).map_err(|e| invalid(path, e))?;
        let pw_path = base.join(&raw.account.password_file);
        check_private(&pw_path)?;
        let password =
            zeroize::Zeroizing::new(read(&pw_path)?.trim_end_matches(['\r', '\n']).to_string());
        let device = raw.pkg.as_ref().and_then(|p| p.device.clone());
        if let Some(d) = &device {
            if !crate::pkg_client::api::valid_device_name(d) {
                return Err(invalid(
                    path,
                    "[pkg] device: 1-64 characters of A-Z a-z 0-9 . _ + -",
                ));
            }
        }
        let keys = match (raw.keys, raw.pkg) {
            (Some(k), None) => KeySource::File(base.join(&k.file)),
            (None, Some(p)) => {
                let fingerprint = match &p.fingerprint {
                    Some(f) => {
                        Some(crate::pkg_client::tls::parse_fingerprint(f).ok_or_else(|| {
                            invalid(path, "[pkg] fingerprint is not 64 hex digits (SHA-256)")
                        })?)
                    }
                    None => None,
                };
                let store = match &p.store {
                    Some(s) => base.join(s),
                    None => crate::pkg_client::KeyStore::default_dir()
                        .ok_or_else(|| {
                            invalid(path, "no data directory for the key store: set [pkg] store")
                        })?
                        .join(format!("{}@{}", aor.user(), aor.host())),
                };
                KeySource::Pkg(PkgSettings {
                    discover: p.url.is_none(),
                    url: p
                        .url
                        .unwrap_or_else(|| format!("https://pkg.{}", aor.host())),
                    fingerprint,
                    store,
                    user: p.user.unwrap_or_else(|| aor.user().to_string()),
                    otp_command: p.otp_command,
                })
            }
            (Some(_), Some(_)) => {
                return Err(invalid(path, "give either [pkg] or [keys], not both"))
            }
            (None, None) => {
                return Err(invalid(
                    path,
                    "no keys: add [pkg] (url of the PKG) or [keys] (file)",
                ))
            }
        };
        if raw.sip.proxy.is_none() && matches!(keys, KeySource::File(_)) {
            return Err(invalid(
                path,
                "[sip] proxy is required with [keys] (only a [pkg] agent discovers it)",
            ));
        }
        let (proxy, transport, proxy_host, fallback) = match &raw.sip.proxy {
            Some(text) => {
                let (addrs, uri) = resolve_proxy(text).map_err(|e| invalid(path, e))?;
                let others = addrs
                    .iter()
                    .skip(1)
                    .map(|a| crate::sip::Dest {
                        addr: *a,
                        transport: uri.transport,
                    })
                    .collect();
                (
                    addrs.first().copied(),
                    uri.transport,
                    Some(uri.host),
                    others,
                )
            }
            None => (None, crate::sip::Transport::Udp, None, Vec::new()),
        };
        let (keepalive, network_check, pong_timeout) =
            raw.sip.timers().map_err(|why| invalid(path, why))?;
        let expires = raw.sip.expires().map_err(|why| invalid(path, why))?;
        Ok(AgentFile {
            aor,
            password,
            listen: raw.sip.listen,
            proxy,
            policy: raw.security.policy,
            privacy: raw.security.privacy,
            keys,
            sip: SipSettings {
                keepalive,
                pong_timeout,
                transport,
                proxy_host,
                tls_pin: None,
                network_check,
                expires,
                fallback,
            },
            device,
            media: MediaSettings {
                ice: raw.media.ice,
                stun: match &raw.media.stun {
                    Some(s) => Some(resolve(s).map_err(|why| invalid(path, why))?),
                    None => None,
                },
            },
        })
    }

    /// The configuration with these keys (already checked against `params`)
    /// and this outbound `proxy` (the file's, or the discovered one).
    pub fn with_keys(
        self,
        proxy: SocketAddr,
        params: PublicParams,
        trusted: Vec<PublicParams>,
        keys: Vec<PrivateKeys>,
    ) -> AgentConfig {
        AgentConfig {
            aor: self.aor,
            password: self.password,
            listen: self.listen,
            proxy,
            policy: self.policy,
            privacy: self.privacy,
            params,
            trusted,
            keys,
            sip: self.sip,
        }
    }
}

/// The first address of `host:port` (IPv4 first), as `[media] stun` names it.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("[media] stun {s:?} is not host:port that resolves: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("[media] stun {s:?} resolves to no address"))
}

/// A loaded, validated agent configuration.
#[derive(Debug)]
pub struct AgentConfig {
    /// Our address of record.
    pub aor: Aor,
    /// Digest password.
    pub password: zeroize::Zeroizing<String>,
    /// Local SIP address.
    pub listen: SocketAddr,
    /// Outbound proxy and registrar.
    pub proxy: SocketAddr,
    /// Security policy for unprotected peers.
    pub policy: SecurityPolicy,
    /// Anonymous outer From.
    pub privacy: bool,
    /// Our provider's parameters.
    pub params: PublicParams,
    /// Other trusted providers.
    pub trusted: Vec<PublicParams>,
    /// Our private keys.
    pub keys: Vec<PrivateKeys>,
    /// Transport settings of `[sip]`.
    pub sip: SipSettings,
}

#[derive(Debug, Deserialize)]
struct KeyFile {
    params: serde_json::Value,
    #[serde(default)]
    trusted: Vec<serde_json::Value>,
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
struct KeyEntry {
    period: String,
    d_enc: String,
    d_sig: String,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Refuses secret files that others can read.
///
/// Windows has no mode bits: there the file is trusted to sit in the
/// user's profile, whose ACL (the user, SYSTEM, Administrators) it
/// inherits; only its existence is checked.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    let shared = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o077 != 0
    };
    #[cfg(not(unix))]
    let shared = {
        let _ = meta;
        false
    };
    if shared {
        return Err(invalid(
            path,
            "holds secrets and must not be readable by others (chmod 600)",
        ));
    }
    Ok(())
}

impl AgentConfig {
    /// Loads `path` and the key file it names (`[keys]`); every error names
    /// the file and what is wrong. A configuration with `[pkg]` needs the
    /// PKG: load it with `agent::keys::load`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = AgentFile::load(path)?;
        let key_path = match &file.keys {
            KeySource::File(p) => p.clone(),
            KeySource::Pkg(_) => {
                return Err(invalid(
                    path,
                    "keys come from the PKG ([pkg]): load with agent::keys::load",
                ))
            }
        };
        let (params, trusted, keys) = read_key_file(&key_path, &file.aor)?;
        let proxy = file
            .proxy
            .ok_or_else(|| invalid(path, "[sip] proxy is required with [keys]"))?;
        Ok(file.with_keys(proxy, params, trusted, keys))
    }
}

/// Reads a key file for `aor`: parameters of its domain, trusted
/// parameters, and keys that pass `check_key`.
pub fn read_key_file(
    key_path: &Path,
    aor: &Aor,
) -> Result<(PublicParams, Vec<PublicParams>, Vec<PrivateKeys>), ConfigError> {
    check_private(key_path)?;
    let kf: KeyFile = serde_json::from_str(&read(key_path)?).map_err(|e| invalid(key_path, e))?;
    let params =
        PublicParams::from_json(&kf.params.to_string()).map_err(|e| invalid(key_path, e))?;
    if params.domain() != aor.host() {
        return Err(invalid(
            key_path,
            format!("params are for {}, not {}", params.domain(), aor.host()),
        ));
    }
    let trusted = kf
        .trusted
        .iter()
        .map(|v| PublicParams::from_json(&v.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key_path, e))?;
    let mut keys = Vec::new();
    for k in &kf.keys {
        let period = Period::month(&k.period).map_err(|e| invalid(key_path, e))?;
        let d_enc = b64_decode("d_enc", &k.d_enc).map_err(|e| invalid(key_path, e))?;
        let d_sig = b64_decode("d_sig", &k.d_sig).map_err(|e| invalid(key_path, e))?;
        let keys_for = PrivateKeys::from_bytes(Identity::new(aor.clone(), period), &d_enc, &d_sig)
            .map_err(|e| invalid(key_path, e))?;
        crate::ibe::check_key(&params, &keys_for)
            .map_err(|e| invalid(key_path, format!("{}: {e}", k.period)))?;
        keys.push(keys_for);
    }
    Ok((params, trusted, keys))
}

/// Writes a key file (what a PKG issues) with mode 0600; refuses to
/// overwrite an existing file.
pub fn write_key_file(
    path: &Path,
    params: &PublicParams,
    trusted: &[&PublicParams],
    keys: &[PrivateKeys],
) -> std::io::Result<()> {
    use crate::ibe::encoding::b64_encode;
    use std::io::Write;
    let parse = |p: &PublicParams| {
        serde_json::from_str::<serde_json::Value>(&p.to_json()).unwrap_or_default()
    };
    let doc = serde_json::json!({
        "params": parse(params),
        "trusted": trusted.iter().map(|p| parse(p)).collect::<Vec<_>>(),
        "keys": keys.iter().map(|k| serde_json::json!({
            "period": k.identity().period().as_str(),
            "d_enc": b64_encode(&k.d_enc_bytes()[..]),
            "d_sig": b64_encode(&k.d_sig_bytes()[..]),
        })).collect::<Vec<_>>(),
    });
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Windows: the file inherits its directory's ACL (the per-user profile).
    let mut f = options.open(path)?;
    f.write_all(
        serde_json::to_string_pretty(&doc)
            .unwrap_or_default()
            .as_bytes(),
    )
}
