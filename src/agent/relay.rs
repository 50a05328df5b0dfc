//! The provider's media services while a phone runs: its STUN server
//! (`services.stun` of `GET /v1/params`) and relay credentials (`POST
//! /v1/turn-credentials`, pkg-api.md), fetched at every start and renewed
//! before they expire, handed to the RTP ports through a
//! [`ProviderRelay`] so that every later call's allocation uses the
//! current ones.
//!
//! [`RelaySchedule`] decides when (sans-I/O, wall-clock time in, the next
//! instant out); [`RelayRenewal::run`] is the thin driver that logs in
//! (as key renewal does: the stored password, the pinned certificate),
//! asks, keeps what it got sealed in the key store (a phone started again
//! uses them while unexpired) and sleeps.
//!
//! Decisions:
//! - credentials are renewed at [`RENEW_AT`] of their lifetime (the
//!   lifetime as it was when they arrived), never sooner than
//!   [`MIN_RENEW`] after (held credentials with less than that left,
//!   kept from an earlier run, are renewed at once:
//!   [`RelaySchedule::for_held`]); a failure is retried after [`FIRST_RETRY`],
//!   doubling up to [`MAX_RETRY`]; a provider that runs no relay (404) is
//!   not asked again while the phone runs;
//! - the schedule runs on the wall clock ([`SystemTime`]): the expiry is
//!   the provider's clock's, and a laptop that slept past the renewal
//!   renews as soon as it wakes. The driver sleeps at most
//!   [`MAX_SLEEP`] at a time and looks at the clock again;
//! - a failure never stops the phone: calls then go without a relayed
//!   candidate (or with the credentials held, until they expire);
//! - no background trust on first use: without a pinned PKG certificate
//!   nothing is fetched;
//! - at a threshold provider ([`RelayRenewal::at_threshold`]) the home
//!   key server alone is asked (the server that issued them with the
//!   keys), logged in to with its own login secret, never the password
//!   (see `pkg_client::home_relay`); the kept secret is used, a derived
//!   one kept;
//! - an account with a second factor: a renewal in the background never
//!   waits for a person. Without `[pkg] otp_command` (the desktop app) the
//!   provider's `otp_required` is reported
//!   ([`RelayOutcome::CodeNeeded`]) and asked again only after
//!   [`CODE_RETRY`], since every such answer counts as a failed login for
//!   the provider's throttling; calls meanwhile go without a relayed
//!   candidate once the held credentials expire. With `otp_command`
//!   (at a threshold provider given the home server's index, as at key
//!   fetches) the code comes from the command.

use super::config::PkgSettings;
use super::keys::otp_from_command;
use super::media_io::{turn_server, ProviderRelay};
use crate::ibe::{Aor, PublicParams};
use crate::pkg_client::api::SecretString;
use crate::pkg_client::home_relay::home_turn_credentials;
use crate::pkg_client::threshold::home_server;
use crate::pkg_client::turn::TurnScheme;
use crate::pkg_client::{
    discovery, KeyStore, PkgClient, PkgClientError, TurnCredentials, TurnUri, Unlock,
};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Share of the credentials' lifetime after which they are renewed.
pub const RENEW_AT: f64 = 0.8;
/// Shortest wait before renewing fresh credentials (a provider handing
/// out very short lifetimes is not asked in a loop).
pub const MIN_RENEW: Duration = Duration::from_secs(60);
/// Wait after the first failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between two failed attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30 * 60);
/// Longest sleep of the driver before it reads the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Wait after the provider asked for a one-time code no one could give:
/// the hourly cadence of key renewal, since each attempt counts as a
/// failed login for the provider's throttling.
pub const CODE_RETRY: Duration = Duration::from_secs(3600);

/// When the relay credentials are asked for next (sans-I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySchedule {
    next: Option<SystemTime>,
    failures: u32,
}

impl RelaySchedule {
    /// Due at `now` (a phone that holds no credentials yet).
    pub fn due_at(now: SystemTime) -> Self {
        RelaySchedule {
            next: Some(now),
            failures: 0,
        }
    }

    /// After credentials valid until `expires_at` arrived at `now`.
    pub fn after_fetch(now: SystemTime, expires_at: SystemTime) -> Self {
        let mut s = RelaySchedule::due_at(now);
        s.fetched(now, expires_at);
        s
    }

    /// With credentials held from before (kept in the key store), valid
    /// until `expires_at`: renewed as [`RelaySchedule::after_fetch`]
    /// says, unless that would be at or after their expiry (under
    /// [`MIN_RENEW`] left): then due now. The minimum keeps a provider
    /// that hands out short lifetimes from being asked in a loop; held
    /// credentials were not just handed out, and a phone started on ones
    /// about to expire would otherwise run on expired ones until the
    /// minimum passed.
    pub fn for_held(now: SystemTime, expires_at: SystemTime) -> Self {
        let s = RelaySchedule::after_fetch(now, expires_at);
        if s.next.is_some_and(|at| at >= expires_at) {
            RelaySchedule::due_at(now)
        } else {
            s
        }
    }

    /// The next attempt; `None`: never (the provider runs no relay).
    pub fn next(&self) -> Option<SystemTime> {
        self.next
    }

    /// Whether an attempt is due at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.next.is_some_and(|at| at <= now)
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Credentials valid until `expires_at` arrived at `now`: renewed at
    /// [`RENEW_AT`] of that lifetime, at least [`MIN_RENEW`] from now.
    pub fn fetched(&mut self, now: SystemTime, expires_at: SystemTime) {
        self.failures = 0;
        let lifetime = expires_at.duration_since(now).unwrap_or_default();
        let wait = lifetime.mul_f64(RENEW_AT).max(MIN_RENEW);
        self.next = Some(now + wait);
    }

    /// An attempt failed at `now`: retried after [`FIRST_RETRY`], doubled
    /// per failure in a row, at most [`MAX_RETRY`].
    pub fn failed(&mut self, now: SystemTime) {
        let wait = FIRST_RETRY
            .saturating_mul(1u32 << self.failures.min(16))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + wait);
    }

    /// The provider said it runs no relay: never asked again.
    pub fn not_offered(&mut self) {
        self.next = None;
    }

    /// The provider asked at `now` for a one-time code that could not be
    /// given: asked again after [`CODE_RETRY`] (no faster backoff).
    pub fn code_needed(&mut self, now: SystemTime) {
        self.failures = self.failures.saturating_add(1);
        self.next = Some(now + CODE_RETRY);
    }
}

/// Why the relay credentials could not be had.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The provider runs no relay (404).
    #[error("the provider runs no relay")]
    NotOffered,
    /// No pinned PKG certificate to hold the connection to.
    #[error("no pinned PKG certificate")]
    NoPin,
    /// The PKG refused, failed or could not be reached.
    #[error("PKG {url}: {source}")]
    Pkg {
        /// The PKG.
        url: String,
        /// What happened.
        source: PkgClientError,
    },
    /// The account has a second factor and no code could be had.
    #[error("one-time code: {0}")]
    Otp(String),
    /// The provider asks for the one-time code of the account's second
    /// factor and none is configured (`[pkg] otp_command`).
    #[error("the provider asks for a one-time code")]
    CodeNeeded {
        /// At a threshold provider, the home server's index; empty for
        /// one PKG.
        servers: Vec<u32>,
    },
    /// The key store could not keep them.
    #[error("key store: {0}")]
    Store(String),
}

/// What one attempt did, for the phone's log or window.
#[derive(Debug)]
pub enum RelayOutcome {
    /// Fresh credentials are in use for later calls, valid until then.
    Renewed {
        /// When they expire.
        expires_at: SystemTime,
        /// Whether a relay in them could be used (a UDP `turn:` URI that
        /// resolves).
        usable: bool,
    },
    /// The provider runs no relay: nothing more is asked.
    NotOffered,
    /// The provider asks for a one-time code that no one can give in the
    /// background; asked again at `retry` ([`CODE_RETRY`]).
    CodeNeeded {
        /// As in [`RelayError::CodeNeeded`].
        servers: Vec<u32>,
        /// When the next attempt is.
        retry: Option<SystemTime>,
    },
    /// The attempt failed; retried at `retry`.
    Failed {
        /// Why.
        error: RelayError,
        /// When the next attempt is.
        retry: Option<SystemTime>,
    },
}

/// How a running phone logs in to its PKG for relay credentials: the
/// same account, password and pinned certificate as key renewal.
#[derive(Debug, Clone)]
pub struct RelayRenewal {
    pkg: PkgSettings,
    aor: Aor,
    password: SecretString,
    refusals: Option<crate::pkg_client::tls::PinRefusals>,
    /// A threshold provider's parameters: its home server is asked.
    threshold: Option<PublicParams>,
}

impl RelayRenewal {
    /// Renewal for `aor`'s account at `pkg` (its `fingerprint` is the pin
    /// the connection is held to).
    pub fn new(pkg: PkgSettings, aor: Aor, password: SecretString) -> Self {
        RelayRenewal {
            pkg,
            aor,
            password,
            refusals: None,
            threshold: None,
        }
    }

    /// This renewal at the threshold provider of `params` (its confirmed
    /// parameters): [`RelayRenewal::fetch`] logs in to the home key
    /// server alone ([`home_server`] of the pin, else of the URL) with
    /// that server's login secret, never the password.
    pub fn at_threshold(mut self, params: PublicParams) -> Self {
        self.threshold = params.threshold().is_some().then_some(params);
        self
    }

    /// This renewal, its `turns:` relays telling `refusals` each
    /// certificate they refuse for not being the pin (see
    /// [`super::gather::turn_server`]).
    pub fn reporting(mut self, refusals: Option<crate::pkg_client::tls::PinRefusals>) -> Self {
        self.refusals = refusals;
        self
    }

    async fn client(&self) -> Result<PkgClient, RelayError> {
        let pin = self.pkg.fingerprint.ok_or(RelayError::NoPin)?;
        match discovery::dns_from_env() {
            Ok(dns) => discovery::client_for(&dns, &self.pkg.url, Some(pin)).await,
            Err(_) => PkgClient::new(&self.pkg.url, Some(pin)),
        }
        .map_err(|e| self.pkg_err(e))
    }

    fn pkg_err(&self, source: PkgClientError) -> RelayError {
        RelayError::Pkg {
            url: self.pkg.url.clone(),
            source,
        }
    }

    /// The provider's STUN server (`services.stun`, the first whose host
    /// resolves); `None` when it lists none or cannot be asked.
    pub async fn stun(&self) -> Option<SocketAddr> {
        let client = self.client().await.ok()?;
        let (params, services) = client.params_and_services().await.ok()?;
        if params.domain() != self.aor.host() {
            return None;
        }
        for uri in &services.stun {
            let Ok(u) = TurnUri::parse(uri) else {
                continue;
            };
            if u.scheme != TurnScheme::Stun {
                continue;
            }
            if let Some(addr) = resolve(&u.host, u.port).await {
                return Some(addr);
            }
        }
        None
    }

    /// One login, `POST /v1/turn-credentials`, logout; at a threshold
    /// provider at its home server ([`RelayRenewal::at_threshold`]).
    pub async fn fetch(&self) -> Result<TurnCredentials, RelayError> {
        if let Some(params) = &self.threshold {
            return self.fetch_home(params).await;
        }
        let client = self.client().await?;
        let otp = match &self.pkg.otp_command {
            Some(cmd) => Some(otp_from_command(cmd).await.map_err(RelayError::Otp)?),
            None => None,
        };
        let session = client
            .login_with_otp(&self.pkg.user, &self.password, otp.as_ref())
            .await
            .map_err(|e| self.relay_err(e, Vec::new()))?;
        let got = if session.aor != self.aor {
            Err(self.pkg_err(PkgClientError::Protocol(format!(
                "PKG account {} is {}, not {}",
                self.pkg.user, session.aor, self.aor
            ))))
        } else {
            client
                .turn_credentials(&session)
                .await
                .map_err(|e| self.relay_err(e, Vec::new()))
        };
        let _ = client.logout(&session).await;
        got
    }

    /// [`RelayRenewal::fetch`] at the home server of a threshold provider.
    async fn fetch_home(&self, params: &PublicParams) -> Result<TurnCredentials, RelayError> {
        let home = params
            .threshold()
            .and_then(|t| home_server(t, self.pkg.fingerprint, &self.pkg.url))
            .ok_or_else(|| {
                self.pkg_err(PkgClientError::Protocol(format!(
                    "{} is not one of the provider's key servers",
                    self.pkg.url
                )))
            })?;
        let otp = match &self.pkg.otp_command {
            // Each server has its own seed: the command gets the index.
            Some(cmd) => {
                let mut cmd = cmd.clone();
                cmd.push(home.to_string());
                Some(otp_from_command(&cmd).await.map_err(RelayError::Otp)?)
            }
            None => None,
        };
        let (store, domain, user) = (
            self.pkg.store.clone(),
            params.domain().to_string(),
            self.pkg.user.clone(),
        );
        let kept = tokio::task::spawn_blocking(move || {
            KeyStore::open(&store, Unlock::KeyFile).ok().and_then(|s| {
                s.login_secrets(&domain, &user)
                    .and_then(|m| m.get(&home).cloned())
            })
        })
        .await
        .ok()
        .flatten();
        let got = home_turn_credentials(
            params,
            home,
            (&self.pkg.user, &self.aor),
            (kept.as_ref(), &self.password),
            otp.as_ref(),
        )
        .await
        .map_err(|e| self.relay_err(e, vec![home]))?;
        if let Some(secret) = got.derived {
            // The kept one was missing or stale: keep this one.
            let (store, domain, user) = (
                self.pkg.store.clone(),
                params.domain().to_string(),
                self.pkg.user.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let mut s = KeyStore::open(&store, Unlock::KeyFile)?;
                let mut all = s.login_secrets(&domain, &user).cloned().unwrap_or_default();
                all.insert(home, secret);
                s.set_login_secrets(&domain, &user, all)
            })
            .await
            .map_err(|e| RelayError::Store(e.to_string()))?
            .map_err(|e| RelayError::Store(e.to_string()))?;
        }
        Ok(got.credentials)
    }

    /// `e` of a login or request at `servers` (empty: one PKG).
    fn relay_err(&self, e: PkgClientError, servers: Vec<u32>) -> RelayError {
        match e {
            PkgClientError::NotOffered(_) => RelayError::NotOffered,
            e if e.is_otp_required() => RelayError::CodeNeeded { servers },
            e => self.pkg_err(e),
        }
    }

    /// Keeps `c` sealed in the key store of this account, so that a phone
    /// started again uses them while unexpired. Only into a store that
    /// holds this account's parameters (nothing is created).
    async fn keep(&self, c: &TurnCredentials) -> Result<(), RelayError> {
        let (store, c, domain) = (
            self.pkg.store.clone(),
            c.clone(),
            self.aor.host().to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let mut s = KeyStore::open(&store, Unlock::KeyFile)?;
            match s.params()? {
                Some(p) if p.domain() == domain => s.set_turn_credentials(&c),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| RelayError::Store(e.to_string()))?
        .map_err(|e| RelayError::Store(e.to_string()))
    }

    /// Keeps `relay` filled for as long as the phone runs: the provider's
    /// STUN server first (unless `want_stun` is false), then credentials:
    /// `initial` (fetched at start) until they are due, else fetched now.
    /// Each attempt's outcome goes to `report`.
    pub async fn run(
        self,
        relay: ProviderRelay,
        initial: Option<TurnCredentials>,
        want_stun: bool,
        mut report: impl FnMut(&RelayOutcome) + Send,
    ) {
        let now = SystemTime::now();
        let mut schedule = match initial {
            Some(c) => {
                let s = RelaySchedule::for_held(now, c.expires_at);
                install(&relay, &c, self.pkg.fingerprint, &self.refusals).await;
                s
            }
            None => RelaySchedule::due_at(now),
        };
        if want_stun {
            relay.set_stun(self.stun().await);
        }
        loop {
            let Some(next) = schedule.next() else {
                return;
            };
            let now = SystemTime::now();
            if !schedule.is_due(now) {
                let wait = next.duration_since(now).unwrap_or_default();
                tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                continue;
            }
            let outcome = match self.fetch().await {
                Ok(c) => {
                    schedule.fetched(SystemTime::now(), c.expires_at);
                    let usable = install(&relay, &c, self.pkg.fingerprint, &self.refusals).await;
                    if let Err(error) = self.keep(&c).await {
                        tracing::warn!(%error, "relay credentials not kept in the key store");
                    }
                    RelayOutcome::Renewed {
                        expires_at: c.expires_at,
                        usable,
                    }
                }
                Err(RelayError::NotOffered) => {
                    schedule.not_offered();
                    RelayOutcome::NotOffered
                }
                Err(RelayError::CodeNeeded { servers }) => {
                    schedule.code_needed(SystemTime::now());
                    RelayOutcome::CodeNeeded {
                        servers,
                        retry: schedule.next(),
                    }
                }
                Err(error) => {
                    schedule.failed(SystemTime::now());
                    RelayOutcome::Failed {
                        error,
                        retry: schedule.next(),
                    }
                }
            };
            report(&outcome);
        }
    }
}

/// Hands `creds`'s relay to the RTP ports; whether one was usable.
async fn install(
    relay: &ProviderRelay,
    creds: &TurnCredentials,
    pin: Option<[u8; 32]>,
    refusals: &Option<crate::pkg_client::tls::PinRefusals>,
) -> bool {
    let servers = turn_server(creds, pin, refusals.clone()).await;
    if servers.is_empty() {
        return false;
    }
    relay.set_turn(servers, creds.expires_at);
    true
}

async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, port)),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut a| a.next()),
    }
}

/// The headless agent's report: one log line per attempt.
pub fn log_outcome(outcome: &RelayOutcome) {
    match outcome {
        RelayOutcome::Renewed { usable: true, .. } => {
            tracing::info!("relay credentials fetched")
        }
        RelayOutcome::Renewed { usable: false, .. } => {
            tracing::warn!("relay credentials fetched, but no relay in them can be used")
        }
        RelayOutcome::NotOffered => tracing::info!("the provider runs no relay"),
        RelayOutcome::CodeNeeded { servers, .. } => tracing::warn!(
            ?servers,
            "relay credentials: the provider asks for a one-time code (set [pkg] otp_command); calls go without a relay until then"
        ),
        RelayOutcome::Failed { error, .. } => {
            tracing::warn!(%error, "relay credentials: not fetched, retrying later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    #[test]
    fn renewed_at_80_percent_of_the_lifetime() {
        let s = RelaySchedule::after_fetch(at(0), at(86_400));
        assert_eq!(s.next(), Some(at(69_120)));
        assert!(!s.is_due(at(69_119)));
        assert!(s.is_due(at(69_120)));
        // Lifetimes as they were when the credentials arrived.
        let late = RelaySchedule::after_fetch(at(1000), at(11_000));
        assert_eq!(late.next(), Some(at(9000)));
    }

    #[test]
    fn short_or_expired_lifetimes_wait_the_minimum() {
        let s = RelaySchedule::after_fetch(at(0), at(10));
        assert_eq!(s.next(), Some(at(60)));
        // Expired on arrival (clocks apart): not asked in a loop either.
        let s = RelaySchedule::after_fetch(at(100), at(50));
        assert_eq!(s.next(), Some(at(160)));
    }

    /// Noticed in the ninth session: a phone started on kept credentials
    /// with under 75 s left renewed them at the 60 s minimum, after they
    /// had expired.
    #[test]
    fn held_credentials_about_to_expire_are_renewed_at_once() {
        // 30 s left: the minimum would renew them at +60 s, 30 s late.
        assert_eq!(
            RelaySchedule::after_fetch(at(0), at(30)).next(),
            Some(at(60))
        );
        let s = RelaySchedule::for_held(at(0), at(30));
        assert!(s.is_due(at(0)));
        // Exactly the minimum left: due now too (renewed at expiry is late).
        assert!(RelaySchedule::for_held(at(0), at(60)).is_due(at(0)));
        // 70 s left: the minimum comes before the expiry.
        assert_eq!(RelaySchedule::for_held(at(0), at(70)).next(), Some(at(60)));
        // Hours left: as after a fetch (80 % of what is left).
        assert_eq!(
            RelaySchedule::for_held(at(0), at(36_000)).next(),
            Some(at(28_800))
        );
    }

    #[test]
    fn failures_back_off_doubling_to_a_cap_and_success_resets() {
        let mut s = RelaySchedule::due_at(at(0));
        assert!(s.is_due(at(0)));
        let mut now = at(0);
        let mut waits = Vec::new();
        for _ in 0..10 {
            s.failed(now);
            let next = s.next().unwrap();
            waits.push(next.duration_since(now).unwrap().as_secs());
            now = next;
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800, 1800, 1800, 1800]);
        assert_eq!(s.failures(), 10);
        s.fetched(now, now + Duration::from_secs(1000));
        assert_eq!(s.failures(), 0);
        s.failed(now);
        assert_eq!(s.next(), Some(now + FIRST_RETRY), "backoff starts over");
    }

    #[test]
    fn a_provider_without_relay_is_not_asked_again() {
        let mut s = RelaySchedule::due_at(at(0));
        s.not_offered();
        assert_eq!(s.next(), None);
        assert!(!s.is_due(at(1_000_000)));
    }

    #[test]
    fn a_code_needed_waits_an_hour_not_the_backoff() {
        // Every attempt without a code counts as a failed login at the
        // provider: never the 30 s first retry.
        let mut s = RelaySchedule::due_at(at(0));
        s.code_needed(at(0));
        assert_eq!(s.next(), Some(at(3600)));
        assert!(!s.is_due(at(3599)));
        s.code_needed(at(3600));
        assert_eq!(s.next(), Some(at(7200)), "not doubled either");
        s.fetched(at(7200), at(7200 + 86_400));
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn a_huge_failure_count_does_not_overflow() {
        let mut s = RelaySchedule::due_at(at(0));
        for _ in 0..100 {
            s.failed(at(0));
        }
        assert_eq!(s.next(), Some(at(0) + MAX_RETRY));
    }
}
