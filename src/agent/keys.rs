//! Key provisioning of an agent: where its parameters and private keys come
//! from before the SIP core starts.
//!
//! With `[pkg]` ([`KeySource::Pkg`]) the agent logs in to its provider's
//! PKG at start, fetches the parameters and the keys of the previous,
//! current and next period (each passes `check_key` in the client), keeps
//! them in the key store (one AES-256-GCM sealed file, mode 0600, in the
//! configured directory) and logs out. With `[keys]` it reads a key file.
//!
//! Decisions:
//! - the TLS certificate pin is the configured `fingerprint`; without one,
//!   the pin recorded in the key store; without either, the first
//!   certificate seen is trusted and recorded (trust on first use), and
//!   [`Provisioned::tofu`] says so for the caller to show;
//! - when the PKG cannot be reached (connection, TLS I/O, 5xx or throttled)
//!   the agent starts on the keys in its store, provided one is for the
//!   current period. A refusal that means something is wrong (bad password,
//!   disabled account, a certificate other than the pinned one, parameters
//!   or keys of another domain or user) is an error and never falls back:
//!   the user must see it;
//! - parameters the PKG serves must be for the AOR's domain, and the login
//!   must be for the AOR itself;
//! - at start (not at key renewal, which would replace the credential the
//!   running phone registers with) the agent asks the PKG for a device SIP
//!   credential (`POST /v1/sip-credentials`, device from `[pkg] device` or
//!   a random name kept in the key store) and registers with it; the PKG
//!   password never goes to the registrar. The credential is kept in the
//!   sealed key store and used when the PKG is unreachable. A PKG that
//!   does not offer device credentials (404) leaves the account password
//!   as the digest password (a registrar with its own user table, such as
//!   a Kamailio subscriber table); the user name it names must be the
//!   AOR's user;
//! - discovery (pkg-api.md "Discovery and provider services") runs before
//!   provisioning, only for what the file leaves out: without `[pkg] url`
//!   the PKG's URLs come from the SRV record `_ibephone-pkg._tcp.<domain>`
//!   (else `https://pkg.<domain>`) and the first that serves parameters of
//!   the AOR's domain is used; without `[sip] proxy` the proxy comes from
//!   that PKG's `services.sip`, else RFC 3263 on the domain, and the first
//!   UDP/TCP target is used (TLS targets are skipped until the SIP
//!   transport speaks TLS). A PKG that cannot be reached leaves its first
//!   URL (the key store then serves, as above) and RFC 3263 on the domain;
//! - from a threshold provider the per-server login secrets are derived
//!   once and kept in the sealed key store, not derived again for every
//!   fetch (three Argon2id on the phone). They are less sensitive than
//!   what the phone keeps already: the password file (0600, plaintext)
//!   opens every server and any other site where the password is reused,
//!   and the store's private keys read signaling directly; a login secret
//!   opens one server of one provider, reveals the password only to
//!   guessing at Argon2id cost, and dies with a password change (the kept
//!   one is then refused and derived anew from the password);
//! - at a threshold provider the device SIP credential and the relay
//!   credentials come from the home server (the `[pkg] url` server, found
//!   among the key servers by its pin, else its URL; see
//!   `pkg_client::threshold`), asked at start in the session of its key
//!   shares. The account password never goes to SIP there, not even when
//!   the home server gives no credential (down, or `404`): the stored
//!   credential is used, and with none stored the start fails
//!   ([`KeyError::NoDeviceCredential`]) after the keys were stored;
//! - a threshold provider none of whose servers refused but fewer than
//!   `t` of which gave good shares (the others down, timed out, `5xx`) is
//!   unreachable like one PKG that is down: the stored keys, device
//!   credential and relay credentials serve. Any refusal, bad share or
//!   protocol error among the servers is an error even with the others
//!   down, so that making servers look down never hides a refusal;
//! - relay credentials are kept in the sealed store at each start and
//!   used, while unexpired, when none fresh can be had (see `KeptTurn` in
//!   `pkg_client::store` for why keeping them is right).

use super::config::{
    choose_proxy, read_key_file, AgentConfig, AgentFile, ConfigError, KeySource, PkgSettings,
};
use super::renewal::Renewal;
use crate::ibe::{Aor, Period, PrivateKeys, PublicParams};
use crate::pkg_client::api::{SecretString, SipCredentialsResponse};
use crate::pkg_client::discovery::{self, DiscoveryError};
use crate::pkg_client::threshold::{
    fetch_threshold_keys, fetch_threshold_keys_and_device, fetch_threshold_keys_kept, home_server,
    DeviceRequest, LoginSecrets, ThresholdKeys,
};
use crate::pkg_client::tls::fingerprint_hex;
use crate::pkg_client::{KeyStore, PkgClient, PkgClientError, TurnCredentials, Unlock};
use crate::sip::Dest;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why an agent has no usable keys.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The configuration or key file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The PKG or the SIP proxy could not be discovered.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// The PKG refused or misbehaved (never falls back to stored keys).
    #[error("PKG {url}: {source}")]
    Pkg {
        /// The PKG.
        url: String,
        /// What happened.
        source: PkgClientError,
    },
    /// The PKG is unreachable and the store has no key for this period.
    #[error("PKG {url} unreachable ({why}) and the key store {store} has no key for {period}")]
    NoStoredKeys {
        /// The PKG.
        url: String,
        /// Why it was unreachable.
        why: String,
        /// The key store directory.
        store: String,
        /// The period that is missing.
        period: String,
    },
    /// The account has a second factor and no one-time code could be
    /// had: none configured, or `[pkg] otp_command` failed.
    #[error("PKG {url} needs a one-time code for this account: {why}")]
    Otp {
        /// The PKG.
        url: String,
        /// What is missing or failed.
        why: String,
        /// For a threshold provider, the servers that want a code (each
        /// has its own seed); empty for one PKG.
        servers: Vec<u32>,
    },
    /// One-time codes were given ([`from_pkg_with_codes`]) and the PKG
    /// refused the login: the code (or the password) is wrong or was used
    /// already. Nothing was fetched or changed.
    #[error("PKG {url} refused the one-time code (or the password): {source}")]
    OtpRefused {
        /// The PKG.
        url: String,
        /// What it answered.
        source: PkgClientError,
    },
    /// The PKG served public parameters other than the ones in the key
    /// store, which the user confirmed at set-up: nothing was stored.
    #[error(
        "PKG {url} now serves other public parameters (fingerprint {served}) than the ones \
         confirmed at set-up ({confirmed}); nothing was changed: set the account up again \
         only if your provider has announced new parameters"
    )]
    ParamsChanged {
        /// The PKG's URL.
        url: String,
        /// Short fingerprint of the stored (confirmed) parameters.
        confirmed: String,
        /// Short fingerprint of the parameters the PKG served.
        served: String,
    },
    /// At a threshold provider, the home key server gave no SIP
    /// credential for this device and none is stored: the phone does not
    /// register (the account password never authenticates SIP). The keys
    /// fetched are stored.
    #[error(
        "PKG {url}: no SIP credential for this device ({why}) and none is stored; the phone does \
         not register with the account password at a threshold provider. The keys were stored; \
         start again when the key server answers"
    )]
    NoDeviceCredential {
        /// The PKG (the home key server's URL as configured).
        url: String,
        /// Why the home key server gave none.
        why: String,
    },
    /// The key store could not be opened, read or written.
    #[error("key store {store}: {source}")]
    Store {
        /// The key store directory.
        store: String,
        /// What happened.
        source: PkgClientError,
    },
}

/// One-time codes given by the user for one fetch: server index to code,
/// for a threshold provider (each server has its own TOTP seed), or
/// [`SINGLE_PKG`] to the code of a provider with one PKG. They take the
/// place of `[pkg] otp_command`.
pub type OtpCodes = std::collections::BTreeMap<u32, SecretString>;

/// The key of [`OtpCodes`] for a provider with one PKG.
pub const SINGLE_PKG: u32 = 0;

/// Where the keys of a start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A key file.
    File,
    /// Fetched from the PKG now (and stored).
    Pkg,
    /// The key store, because the PKG was unreachable.
    Store,
}

/// The keys an agent starts with, and how they were obtained.
#[derive(Debug)]
pub struct Provisioned {
    /// The provider's parameters.
    pub params: PublicParams,
    /// Other trusted providers' parameters (key files only).
    pub trusted: Vec<PublicParams>,
    /// The private keys, each checked against `params`.
    pub keys: Vec<PrivateKeys>,
    /// Where they came from.
    pub origin: Origin,
    /// The PKG certificate pin in force (PKG mode).
    pub pin: Option<[u8; 32]>,
    /// The pin was trusted on first use in this start.
    pub tofu: bool,
    /// Why the PKG could not be used, when the keys come from the store.
    pub unreachable: Option<String>,
    /// The device's SIP digest credential (fetched now or stored); `None`
    /// with a key file or a PKG without device credentials.
    pub sip: Option<SipCredentialsResponse>,
    /// For a threshold provider, the servers whose key shares were
    /// combined ("servers 1 and 3 of 3 (2 needed)").
    pub servers: Option<String>,
    /// Relay credentials from the provider (`POST /v1/turn-credentials`,
    /// asked at start with the SIP credential), else those stored at an
    /// earlier start while unexpired (see `KeptTurn` in the key store);
    /// `None` with a key file, at a renewal, or with none to be had.
    pub turn: Option<TurnCredentials>,
}

impl Provisioned {
    /// One line for people: origin, periods, pin.
    pub fn summary(&self) -> String {
        let periods: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.identity().period().as_str())
            .collect();
        let origin = match self.origin {
            Origin::File => "key file".to_string(),
            Origin::Pkg => "fetched from the PKG".to_string(),
            Origin::Store => format!(
                "from the key store (PKG unreachable: {})",
                self.unreachable.as_deref().unwrap_or("?")
            ),
        };
        let mut s = format!(
            "keys {origin}: {} for {}",
            periods.join(", "),
            self.params.domain()
        );
        if let Some(servers) = &self.servers {
            s.push_str(&format!("; threshold PKG: combined from {servers}"));
        }
        if let Some(turn) = &self.turn {
            s.push_str(&format!(
                "; relay credentials for {} URI(s)",
                turn.uris.len()
            ));
        }
        if let Some(pin) = &self.pin {
            s.push_str(&format!(
                "; PKG certificate {} {}",
                if self.tofu {
                    "trusted on first use, pinned from now on:"
                } else {
                    "pinned:"
                },
                fingerprint_hex(pin)
            ));
        }
        s
    }
}

/// Loads the configuration at `path` and provisions its keys (from the PKG,
/// the key store or a key file).
pub async fn load(path: &Path) -> Result<(AgentConfig, Provisioned), KeyError> {
    let (config, p, _) = load_with_renewal(path).await?;
    Ok((config, p))
}

/// As [`load`], plus the [`Renewal`] that keeps a `[pkg]` agent's keys
/// ahead of the calendar while it runs (`None` for a key file).
pub async fn load_with_renewal(
    path: &Path,
) -> Result<(AgentConfig, Provisioned, Option<Renewal>), KeyError> {
    let mut file = AgentFile::load(path)?;
    let proxy = discover(&mut file).await?;
    let p = provision(&file).await?;
    let renewal = Renewal::for_agent(&file, &p);
    let mut config = file.with_keys(proxy, p.params.clone(), p.trusted.clone(), p.keys.clone());
    // The provider's SIP service presents the PKG's certificate: over TLS
    // the phone holds it to the same pin.
    config.sip.tls_pin = p.pin;
    if let Some(c) = &p.sip {
        // The registrar gets the device credential, never the PKG password.
        config.password = zeroize::Zeroizing::new(c.password.expose().to_string());
    }
    Ok((config, p, renewal))
}

/// Fills in what `file` leaves to discovery (the PKG's URL, see the
/// module's decisions) and returns the outbound proxy: the configured one
/// (of several addresses of its host name, the first that answers), or
/// the discovered one. The other targets go to `file.sip.fallback`, in
/// the order the phone moves on to them when the proxy stops answering.
pub async fn discover(file: &mut AgentFile) -> Result<SocketAddr, KeyError> {
    let pkg = match (&mut file.keys, file.proxy) {
        (KeySource::Pkg(pkg), Some(first)) if !pkg.discover => {
            return Ok(configured_proxy(file, first).await)
        }
        (KeySource::Pkg(pkg), _) => pkg,
        (KeySource::File(_), Some(first)) => return Ok(configured_proxy(file, first).await),
        (KeySource::File(_), None) => {
            return Err(DiscoveryError::NotFound {
                service: "SIP proxy ([sip] proxy with [keys])",
                domain: file.aor.host().to_string(),
            }
            .into())
        }
    };
    let domain = file.aor.host().to_ascii_lowercase();
    let dns = discovery::dns_from_env()?;
    let urls = if pkg.discover {
        discovery::discover_pkg(&dns, &format!("{}@{domain}", file.aor.user())).await?
    } else {
        vec![pkg.url.clone()]
    };
    let mut services = Vec::new();
    let mut found = None;
    for url in &urls {
        let client = match discovery::client_for(&dns, url, pkg.fingerprint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%url, error = %e, "discovered PKG unusable");
                continue;
            }
        };
        match client.params_and_services().await {
            Ok((params, s)) if params.domain() == domain => {
                services = s.sip;
                found = Some(url.clone());
                break;
            }
            Ok((params, _)) => {
                tracing::warn!(%url, domain = %params.domain(), "discovered PKG is for another domain");
            }
            Err(e) => tracing::warn!(%url, error = %e, "discovered PKG did not answer"),
        }
    }
    if let Some(url) = found.or_else(|| urls.first().cloned()) {
        pkg.url = url;
    }
    if let Some(first) = file.proxy {
        return Ok(configured_proxy(file, first).await);
    }
    let targets: Vec<Dest> = discovery::discover_sip(&dns, &domain, &services)
        .await?
        .into_iter()
        .map(Dest::from)
        .collect();
    // The first target in the provider's (RFC 3263) order that answers,
    // addresses tried the RFC 8305 way (an unreachable first address
    // costs 250 ms); none answering: the first, and the registration
    // reports why. Over TLS the proxy is held to the PKG's pin (set in
    // `load_with_renewal`), so a discovered `sips:` service is as
    // trustworthy as the PKG itself; the fallbacks are the provider's
    // own list, held to the same pin.
    let (target, fallback) =
        choose_proxy(&targets)
            .await
            .ok_or_else(|| DiscoveryError::NotFound {
                service: "SIP proxy",
                domain: domain.clone(),
            })?;
    file.sip.transport = target.transport;
    file.sip.proxy_host = Some(domain);
    file.sip.fallback = fallback;
    Ok(target.addr)
}

/// The configured proxy's address to use (`first`: the first address of
/// its host): with several addresses, the first that answers
/// ([`choose_proxy`]), the others kept as `file.sip.fallback` in order.
async fn configured_proxy(file: &mut AgentFile, first: SocketAddr) -> SocketAddr {
    if file.sip.fallback.is_empty() {
        return first;
    }
    let first = Dest {
        addr: first,
        transport: file.sip.transport,
    };
    let all: Vec<Dest> = std::iter::once(first)
        .chain(file.sip.fallback.iter().copied())
        .collect();
    let (chosen, rest) = choose_proxy(&all).await.unwrap_or((first, Vec::new()));
    file.sip.fallback = rest;
    chosen.addr
}

/// Obtains the keys `file` names.
pub async fn provision(file: &AgentFile) -> Result<Provisioned, KeyError> {
    match &file.keys {
        KeySource::File(path) => {
            let (params, trusted, keys) = read_key_file(path, &file.aor)?;
            Ok(Provisioned {
                params,
                trusted,
                keys,
                origin: Origin::File,
                pin: None,
                tofu: false,
                unreachable: None,
                sip: None,
                servers: None,
                turn: None,
            })
        }
        KeySource::Pkg(pkg) => {
            let password = SecretString::new(file.password.to_string());
            let device = Some(file.device.as_deref());
            provision_pkg(
                pkg,
                &file.aor,
                &password,
                now_unix(),
                device,
                &OtpCodes::new(),
            )
            .await
        }
    }
}

/// Now, Unix seconds (0 before 1970): what key periods are reckoned from.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time `now` as a clock reading.
fn at(now: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(now)
}

/// Whether a failure means "cannot reach the PKG" (fall back to the store)
/// rather than "the PKG or its answer is wrong" (an error); at a threshold
/// provider, whether every server that gave no good share was out of
/// reach ([`PkgClientError::is_unreachable`]).
fn unreachable(e: &PkgClientError) -> bool {
    e.is_unreachable()
}

/// The keys part of [`provision`] (no SIP credential asked: for renewal),
/// at Unix time `now` (sets the periods).
pub async fn from_pkg(
    pkg: &PkgSettings,
    aor: &Aor,
    password: &SecretString,
    now: u64,
) -> Result<Provisioned, KeyError> {
    provision_pkg(pkg, aor, password, now, None, &OtpCodes::new()).await
}

/// [`from_pkg`] with one-time codes the user typed (a renewal the
/// provider asked a code for). A login refused with codes given is
/// [`KeyError::OtpRefused`]; nothing is stored then.
pub async fn from_pkg_with_codes(
    pkg: &PkgSettings,
    aor: &Aor,
    password: &SecretString,
    now: u64,
    codes: &OtpCodes,
) -> Result<Provisioned, KeyError> {
    provision_pkg(pkg, aor, password, now, None, codes).await
}

/// `sip_device`: `None`, no SIP credential asked; `Some(name)`, asked for
/// that device (`Some(None)`: the key store's own device name).
async fn provision_pkg(
    pkg: &PkgSettings,
    aor: &Aor,
    password: &SecretString,
    now: u64,
    sip_device: Option<Option<&str>>,
    codes: &OtpCodes,
) -> Result<Provisioned, KeyError> {
    let want_sip = sip_device.is_some();
    let store_name = pkg.store.display().to_string();
    let store_err = |source| KeyError::Store {
        store: store_name.clone(),
        source,
    };
    let mut store = KeyStore::open(&pkg.store, Unlock::KeyFile).map_err(store_err)?;
    let pin = pkg.fingerprint.or_else(|| store.pkg_pin());
    let current = Period::month_at(now);
    let pkg_err = |source| KeyError::Pkg {
        url: pkg.url.clone(),
        source,
    };
    let client = match discovery::dns_from_env() {
        Ok(dns) => discovery::client_for(&dns, &pkg.url, pin).await,
        Err(_) => PkgClient::new(&pkg.url, pin),
    }
    .map_err(pkg_err)?;
    let device = match sip_device {
        Some(configured) => Some(store.device_name(configured).map_err(store_err)?),
        None => None,
    };
    let kept = store.login_secrets(aor.host(), &pkg.user).cloned();
    // A threshold provider's stored parameters name every server: with
    // the configured one down, the others still serve the keys.
    let stored = store
        .params()
        .ok()
        .flatten()
        .filter(|p| p.threshold().is_some() && p.domain() == aor.host());
    let fetched = fetch(
        (&client, stored),
        pkg,
        aor,
        (password, kept, codes),
        &current,
        device.as_deref(),
    )
    .await;
    match fetched {
        Ok(Fetched {
            params,
            keys,
            sip,
            servers,
            turn,
            derived,
        }) => {
            // The parameters are the provider's identity: the ones in the
            // store (confirmed at set-up) stay until the user sets up
            // again. A renewal that meets others (a new master key behind
            // the same host, or a certificate the platform roots vouch for
            // in front of someone else's PKG) stores nothing and says so:
            // with other parameters every message this phone seals would
            // be readable by whoever holds their master secret.
            if let Some(confirmed) = store.params().map_err(store_err)? {
                if confirmed.fingerprint() != params.fingerprint() {
                    return Err(KeyError::ParamsChanged {
                        url: pkg.url.clone(),
                        confirmed: confirmed.fingerprint_short(),
                        served: params.fingerprint_short(),
                    });
                }
            }
            store.put_keys(&params, &keys).map_err(store_err)?;
            if let Some(secrets) = derived {
                store
                    .set_login_secrets(params.domain(), &pkg.user, secrets)
                    .map_err(store_err)?;
            }
            let sip = match sip {
                Ok(Some(c)) => {
                    store.set_sip_credential(c.clone()).map_err(store_err)?;
                    Some(c)
                }
                Ok(None) => None,
                // A threshold provider's home server gave none: the stored
                // one, else no registration (never the account password).
                Err(why) => match store.sip_credential() {
                    Some(c) => {
                        tracing::warn!(url = %pkg.url, %why, "no fresh SIP credential from the home key server; using the stored one");
                        Some(c.clone())
                    }
                    None => {
                        return Err(KeyError::NoDeviceCredential {
                            url: pkg.url.clone(),
                            why,
                        })
                    }
                },
            };
            // Relay credentials at a start: fresh ones are kept for a
            // start while the PKG is down; none fresh (the home key server
            // down, a request that failed), the stored ones while unexpired.
            let turn = match turn {
                Some(c) => {
                    store.set_turn_credentials(&c).map_err(store_err)?;
                    Some(c)
                }
                None if want_sip => store.turn_credentials(at(now)),
                None => None,
            };
            let used = client.pinned_fingerprint();
            let tofu = pin.is_none() && used.is_some();
            if let Some(fp) = used {
                if store.pkg_pin() != Some(fp) {
                    store.set_pkg_pin(fp).map_err(store_err)?;
                }
            }
            Ok(Provisioned {
                params,
                trusted: Vec::new(),
                keys,
                origin: Origin::Pkg,
                pin: used,
                tofu,
                unreachable: None,
                sip,
                servers,
                turn,
            })
        }
        Err(FetchError::Pkg(e)) if unreachable(&e) => {
            let why = e.to_string();
            let no_keys = || KeyError::NoStoredKeys {
                url: pkg.url.clone(),
                why: why.clone(),
                store: store_name.clone(),
                period: current.as_str().to_string(),
            };
            let params = store.params().map_err(store_err)?.ok_or_else(no_keys)?;
            let keys: Vec<PrivateKeys> = store
                .keys()
                .map_err(store_err)?
                .into_iter()
                .filter(|k| k.identity().aor() == aor)
                .collect();
            if params.domain() != aor.host()
                || !keys.iter().any(|k| *k.identity().period() == current)
            {
                return Err(no_keys());
            }
            tracing::warn!(url = %pkg.url, %why, "PKG unreachable; using stored keys");
            let sip = want_sip.then(|| store.sip_credential().cloned()).flatten();
            if want_sip && sip.is_none() && params.threshold().is_some() {
                return Err(KeyError::NoDeviceCredential {
                    url: pkg.url.clone(),
                    why,
                });
            }
            Ok(Provisioned {
                params,
                trusted: Vec::new(),
                keys,
                origin: Origin::Store,
                pin,
                tofu: false,
                unreachable: Some(why),
                sip,
                servers: None,
                turn: want_sip.then(|| store.turn_credentials(at(now))).flatten(),
            })
        }
        Err(FetchError::Otp(why)) => Err(KeyError::Otp {
            url: pkg.url.clone(),
            why,
            servers: Vec::new(),
        }),
        Err(FetchError::Pkg(e)) if e.is_otp_required() => Err(KeyError::Otp {
            url: pkg.url.clone(),
            why: "set [pkg] otp_command to a command that prints the current code".into(),
            servers: match e {
                PkgClientError::OtpRequiredAt { servers } => servers,
                _ => Vec::new(),
            },
        }),
        Err(FetchError::Pkg(e)) if !codes.is_empty() && login_refused(&e) => {
            Err(KeyError::OtpRefused {
                url: pkg.url.clone(),
                source: e,
            })
        }
        Err(FetchError::Pkg(e)) => Err(pkg_err(e)),
    }
}

/// What [`fetch`] got.
struct Fetched {
    /// The provider's parameters.
    params: PublicParams,
    /// Checked keys of the previous, current and next period.
    keys: Vec<PrivateKeys>,
    /// The device's SIP credential: `Ok(None)` when none was asked or a
    /// single PKG offers none (the account password is then the digest
    /// password); `Err(why)` when a threshold provider's home server gave
    /// none (the password must then never go to SIP).
    sip: Result<Option<SipCredentialsResponse>, String>,
    /// For a threshold provider, which servers' shares were combined.
    servers: Option<String>,
    /// The provider's relay credentials (asked with the SIP credential).
    turn: Option<TurnCredentials>,
    /// A threshold provider's login secrets when some were derived in
    /// this fetch (to keep in the store).
    derived: Option<LoginSecrets>,
}

/// Runs `[pkg] otp_command` (program and arguments, no shell) and returns
/// the one-time code it prints: 6 to 8 ASCII digits on the first line.
pub async fn otp_from_command(cmd: &[String]) -> Result<SecretString, String> {
    let Some((program, args)) = cmd.split_first() else {
        return Err("otp_command is empty".into());
    };
    let (program, args) = (program.clone(), args.to_vec());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("otp_command {program:?} cannot run: {e}"))
    })
    .await
    .map_err(|e| format!("otp_command: {e}"))??;
    let stdout = zeroize::Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(format!("otp_command failed ({})", out.status));
    }
    let text = std::str::from_utf8(&stdout).unwrap_or_default();
    let code = text.lines().next().unwrap_or_default().trim();
    if !(6..=8).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("otp_command did not print a code of 6 to 8 digits".into());
    }
    Ok(SecretString::new(code.to_string()))
}

/// Why [`fetch`] got no keys.
enum FetchError {
    /// The PKG (or a threshold server) refused or failed.
    Pkg(PkgClientError),
    /// `[pkg] otp_command` gave no code.
    Otp(String),
}

impl From<PkgClientError> for FetchError {
    fn from(e: PkgClientError) -> Self {
        FetchError::Pkg(e)
    }
}

impl From<crate::ibe::IbeError> for FetchError {
    fn from(e: crate::ibe::IbeError) -> Self {
        FetchError::Pkg(e.into())
    }
}

/// `[pkg] otp_command` run once per server of a threshold provider, with
/// the server's index appended (each server has its own TOTP seed).
async fn threshold_codes(params: &PublicParams, cmd: &[String]) -> Result<OtpCodes, String> {
    let mut codes = OtpCodes::new();
    for s in params
        .threshold()
        .map(|t| t.servers.as_slice())
        .unwrap_or_default()
    {
        let mut c = cmd.to_vec();
        c.push(s.index.to_string());
        codes.insert(s.index, otp_from_command(&c).await?);
    }
    Ok(codes)
}

/// A threshold provider's keys for `periods` as the phone fetches them
/// (pkg-api.md "Threshold provider"): the login secrets `kept` from an
/// earlier fetch used first, the password deriving any missing or
/// refused; `codes` the one-time code of each server that wants one. The
/// account must be `aor`. With `device`, the home server is also asked
/// for the device's credentials in the same session (waited for,
/// [`ThresholdKeys::device`]). Servers skipped are logged; the answer
/// says which were used ([`ThresholdKeys::describe`]) and carries the
/// login secrets to keep when some were derived.
pub async fn threshold_keys(
    params: &PublicParams,
    user: &str,
    aor: &Aor,
    (password, kept): (&SecretString, Option<&LoginSecrets>),
    codes: &OtpCodes,
    periods: &[Period],
    device: Option<&DeviceRequest>,
) -> Result<ThresholdKeys, PkgClientError> {
    let otp_for = |i: u32| codes.get(&i).cloned();
    let (got_aor, got) = match (kept, device) {
        (kept, Some(d)) => {
            fetch_threshold_keys_and_device(params, user, (kept, password), &otp_for, periods, d)
                .await?
        }
        (Some(kept), None) => {
            fetch_threshold_keys_kept(params, user, kept, password, &otp_for, periods).await?
        }
        (None, None) => fetch_threshold_keys(params, user, password, &otp_for, periods).await?,
    };
    if got_aor != *aor {
        return Err(PkgClientError::Protocol(format!(
            "PKG account {user} is {got_aor}, not {aor}"
        )));
    }
    for (i, why) in &got.skipped {
        tracing::warn!(server = i, %why, "threshold PKG server skipped");
    }
    Ok(got)
}

/// Whether `e` is a login refused for its credentials (a wrong password or
/// one-time code), at one PKG or at too many threshold servers.
fn login_refused(e: &PkgClientError) -> bool {
    match e {
        PkgClientError::Server {
            status: 401, code, ..
        } => code == crate::pkg_client::api::codes::INVALID_CREDENTIALS,
        PkgClientError::Threshold { refused, .. } => !refused.is_empty(),
        _ => false,
    }
}

/// `login`: the password, a threshold provider's login secrets kept in
/// the store (used first; the password derives any missing or refused),
/// and one-time codes the user gave (before `[pkg] otp_command`).
async fn fetch(
    (client, stored): (&PkgClient, Option<PublicParams>),
    pkg: &PkgSettings,
    aor: &Aor,
    (password, kept, given): (&SecretString, Option<LoginSecrets>, &OtpCodes),
    current: &Period,
    device: Option<&str>,
) -> Result<Fetched, FetchError> {
    let params = match client.params().await {
        Ok(p) => p,
        Err(e) if unreachable(&e) && stored.is_some() => {
            tracing::warn!(url = %pkg.url, error = %e, "threshold PKG server unreachable; asking the others with the stored parameters");
            stored.ok_or(e)?
        }
        Err(e) => return Err(e.into()),
    };
    if params.domain() != aor.host() {
        return Err(PkgClientError::Protocol(format!(
            "the PKG serves parameters of {}, not of {}",
            params.domain(),
            aor.host()
        ))
        .into());
    }
    let periods = [
        current.previous_month()?,
        current.clone(),
        current.next_month()?,
    ];
    if params.threshold().is_some() {
        // Each server has its own TOTP seed: the command gets the index.
        let codes = match &pkg.otp_command {
            Some(cmd) if given.is_empty() => threshold_codes(&params, cmd)
                .await
                .map_err(FetchError::Otp)?,
            _ => given.clone(),
        };
        // The home server (the one asked for the parameters) issues the
        // device's credentials in the session of its key shares.
        let request = match (device, params.threshold()) {
            (Some(d), Some(t)) => Some(
                home_server(t, client.pinned_fingerprint(), &pkg.url)
                    .map(|home| DeviceRequest {
                        home,
                        device: d.to_string(),
                        turn: true,
                    })
                    .ok_or_else(|| format!("{} is not one of the provider's key servers", pkg.url)),
            ),
            _ => None,
        };
        let got = threshold_keys(
            &params,
            &pkg.user,
            aor,
            (password, kept.as_ref()),
            &codes,
            &periods,
            request.as_ref().and_then(|r| r.as_ref().ok()),
        )
        .await?;
        let servers = params
            .threshold()
            .map(|t| got.describe(t))
            .unwrap_or_default();
        let (sip, turn) = match (request, got.device) {
            (None, _) => (Ok(None), None),
            (Some(Err(why)), _) => (Err(why), None),
            (Some(Ok(_)), Some(answer)) => {
                (answer.sip.map(Some).map_err(|e| e.to_string()), answer.turn)
            }
            (Some(Ok(r)), None) => (Err(format!("key server {}: no answer", r.home)), None),
        };
        return Ok(Fetched {
            params,
            keys: got.keys,
            sip,
            servers: Some(servers),
            turn,
            derived: got.derived.then_some(got.secrets),
        });
    }
    let otp = match (given.get(&SINGLE_PKG), &pkg.otp_command) {
        (Some(code), _) => Some(code.clone()),
        (None, Some(cmd)) => Some(otp_from_command(cmd).await.map_err(FetchError::Otp)?),
        (None, None) => None,
    };
    let session = client
        .login_with_otp(&pkg.user, password, otp.as_ref())
        .await?;
    if session.aor != *aor {
        let _ = client.logout(&session).await;
        return Err(PkgClientError::Protocol(format!(
            "PKG account {} is {}, not {aor}",
            pkg.user, session.aor
        ))
        .into());
    }
    let keys = client.fetch_keys(&session, &params, &periods).await;
    let sip = match (&keys, device) {
        (Ok(_), Some(d)) => sip_credential(client, &session, d, aor).await,
        _ => Ok(None),
    };
    let turn = match (&keys, device) {
        (Ok(_), Some(_)) => turn_credentials(client, &session).await,
        _ => None,
    };
    let _ = client.logout(&session).await;
    Ok(Fetched {
        params,
        keys: keys?,
        sip: Ok(sip?),
        servers: None,
        turn,
        derived: None,
    })
}

/// The provider's relay credentials; `None` when it runs no relay (404),
/// or when asking failed: the phone then calls without a relayed
/// candidate rather than not at all.
pub(crate) async fn turn_credentials(
    client: &PkgClient,
    session: &crate::pkg_client::Session,
) -> Option<TurnCredentials> {
    match client.turn_credentials(session).await {
        Ok(c) => Some(c),
        Err(PkgClientError::NotOffered(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "no TURN credentials from the provider: no relayed candidates");
            None
        }
    }
}

/// The device's SIP credential; `None` when the PKG offers none (404).
pub async fn sip_credential(
    client: &PkgClient,
    session: &crate::pkg_client::Session,
    device: &str,
    aor: &Aor,
) -> Result<Option<SipCredentialsResponse>, PkgClientError> {
    match client.sip_credentials(session, device).await {
        Ok(c) if c.username == aor.user() => Ok(Some(c)),
        Ok(c) => Err(PkgClientError::Protocol(format!(
            "SIP user name {} is not the AOR's user {}",
            c.username,
            aor.user()
        ))),
        Err(PkgClientError::Server { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_pkg_falls_back_to_stored_keys() {
        let server = |status: u16| PkgClientError::Server {
            status,
            code: "x".into(),
            message: "x".into(),
        };
        assert!(unreachable(&PkgClientError::Io("refused".into())));
        assert!(unreachable(&PkgClientError::Throttled {
            retry_after_secs: 5
        }));
        assert!(unreachable(&server(503)));
        let threshold = |unreachable| PkgClientError::Threshold {
            sentence: "only 0 of the 3 key servers".into(),
            refused: Vec::new(),
            unreachable,
        };
        // Every threshold server out of reach: as one PKG down.
        assert!(unreachable(&threshold(true)));
        assert!(!unreachable(&threshold(false)));
        for refusal in [
            server(401),
            server(403),
            PkgClientError::PinMismatch {
                pinned: "a".into(),
                presented: "b".into(),
            },
            PkgClientError::Protocol("keys of another user".into()),
            PkgClientError::Tls("bad handshake signature".into()),
        ] {
            assert!(!unreachable(&refusal), "{refusal}");
        }
    }
}
