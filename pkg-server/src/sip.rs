//! The embedded SIP registrar/proxy of the PKG's domain (`[sip] listen` in
//! `pkg.toml` or `pkg-server --sip ADDR`): one process is the whole
//! provider of a small office. With `[sip] tls = true` (or `tls_listen`,
//! or `pkg-server --sip-tls ADDR`) it also takes SIP over TLS, port 5061 by
//! default, with the PKG's own certificate: the phones already pin it. The registrar and the stateful proxy are the
//! sans-I/O ones of `ibephone::sip` under its tokio driver; this module only
//! feeds them the PKG's user database.
//!
//! Decisions:
//! - the registrar's lookups are synchronous (the SIP core never waits), so
//!   it reads a snapshot of the users ([`UserDirectory`]): every user's
//!   enabled flag and the digest HA1s of each live device credential
//!   (`POST /v1/sip-credentials`, opened from their sealed columns),
//!   reloaded every `user_refresh_secs` (default 5). A user added, disabled,
//!   given a new password or a device revoked takes effect within that
//!   interval; a reload that fails keeps the last good snapshot (logged,
//!   never the values);
//! - the PKG password never authenticates SIP: its own HA1 columns are not
//!   loaded, so a REGISTER answered with it is refused like any wrong one;
//! - HA1 values are password-equivalent for SIP digest: the snapshot holds
//!   them in zeroizing strings and never logs them;
//! - the proxy never reads a body (a tunneled message is routed on its
//!   outer headers), and probes for unknown users (REGISTER/OPTIONS) are
//!   throttled per source address by the registrar.

use crate::store::{Store, StoreError};
use ibephone::sip::driver::{spawn_proxy_with_tls, ProxyHandle, ProxyTls};
use ibephone::sip::registrar::{AuthConfig, UserLookup, UserRecord};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// One user as the registrar sees it: one HA1 pair per live device.
struct Entry {
    enabled: bool,
    devices: Vec<(Zeroizing<String>, Zeroizing<String>)>,
}

/// A shared, periodically reloaded snapshot of the PKG's users for the
/// registrar; cheap to clone (all clones see the same snapshot).
#[derive(Clone, Default)]
pub struct UserDirectory {
    users: Arc<RwLock<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserDirectory([redacted])")
    }
}

impl UserDirectory {
    /// Replaces the snapshot with the database's current users. On error
    /// the previous snapshot stays.
    pub async fn reload(&self, store: &Store) -> Result<usize, StoreError> {
        let mut fresh = HashMap::new();
        for u in store.user_list().await? {
            // Disabled users have no credentials (revoked, and
            // sip_device_ha1s answers none for them).
            let devices = if u.enabled {
                store
                    .sip_device_ha1s(&u.name)
                    .await?
                    .into_iter()
                    .map(|d| (d.ha1_md5, d.ha1_sha256))
                    .collect()
            } else {
                Vec::new()
            };
            let entry = Entry {
                enabled: u.enabled,
                devices,
            };
            fresh.insert(u.name, entry);
        }
        let n = fresh.len();
        match self.users.write() {
            Ok(mut g) => *g = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(n)
    }

    /// Reloads one user now (after this process issued them a credential,
    /// so the phone can register at once rather than after the interval).
    pub async fn reload_user(&self, store: &Store, user: &str) -> Result<(), StoreError> {
        let entry = match store.user_get(user).await? {
            Some(u) => Some(Entry {
                enabled: u.enabled,
                devices: if u.enabled {
                    store
                        .sip_device_ha1s(user)
                        .await?
                        .into_iter()
                        .map(|d| (d.ha1_md5, d.ha1_sha256))
                        .collect()
                } else {
                    Vec::new()
                },
            }),
            None => None,
        };
        let mut g = match self.users.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match entry {
            Some(e) => g.insert(user.to_string(), e),
            None => g.remove(user),
        };
        Ok(())
    }

    /// Number of users in the snapshot.
    pub fn len(&self) -> usize {
        self.users.read().map(|g| g.len()).unwrap_or(0)
    }

    /// True when the snapshot has no users.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl UserLookup for UserDirectory {
    /// The user's enabled flag; no HA1 (the PKG password's HA1 never
    /// authenticates SIP): the credentials are in [`UserLookup::credentials`].
    fn lookup(&self, user: &str) -> Option<UserRecord> {
        let g = self.users.read().ok()?;
        let e = g.get(user)?;
        Some(UserRecord {
            ha1_md5: None,
            ha1_sha256: None,
            enabled: e.enabled,
        })
    }

    fn credentials(&self, user: &str) -> Vec<UserRecord> {
        let Ok(g) = self.users.read() else {
            return Vec::new();
        };
        let Some(e) = g.get(user).filter(|e| e.enabled) else {
            return Vec::new();
        };
        e.devices
            .iter()
            .map(|(md5, sha)| UserRecord {
                ha1_md5: Some(md5.to_string()),
                ha1_sha256: Some(sha.to_string()),
                enabled: true,
            })
            .collect()
    }
}

/// A running embedded registrar/proxy; dropping it stops the proxy and
/// the reload task.
#[derive(Debug)]
pub struct SipService {
    /// Where it listens (UDP, and TCP on the same port).
    pub addr: SocketAddr,
    /// Where it listens for SIP over TLS, when on.
    pub tls_addr: Option<SocketAddr>,
    /// The registrar's user snapshot (shared with the HTTP side, which
    /// reloads a user it issued a credential to).
    pub users: UserDirectory,
    _proxy: ProxyHandle,
    reload: tokio::task::JoinHandle<()>,
}

impl Drop for SipService {
    fn drop(&mut self) {
        self.reload.abort();
    }
}

/// Loads the users, binds `listen` (UDP and TCP, and `tls` when given:
/// SIP over TLS with the PKG's certificate) and runs the registrar and
/// proxy of `domain` on the current runtime, reloading users every
/// `refresh`; the registrar authenticates by `auth`.
pub(crate) async fn start(
    store: Store,
    domain: &str,
    listen: SocketAddr,
    advertise: Option<String>,
    tls: Option<ProxyTls>,
    refresh: Duration,
    auth: AuthConfig,
) -> anyhow::Result<SipService> {
    let users = UserDirectory::default();
    let n = users.reload(&store).await?;
    let tls_listen = tls.as_ref().map(|t| t.listen);
    let proxy = spawn_proxy_with_tls(
        listen,
        advertise,
        domain,
        Box::new(users.clone()),
        tls,
        auth,
    )
    .await
    .map_err(|e| match tls_listen {
        Some(t) => anyhow::anyhow!("SIP on {listen} (TLS on {t}): {e}"),
        None => anyhow::anyhow!("SIP on {listen}: {e}"),
    })?;
    tracing::info!(addr = %proxy.addr, tls = ?proxy.tls_addr, users = n, "SIP registrar/proxy listening");
    let refresh = refresh.max(Duration::from_millis(200));
    let shared = users.clone();
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = users.reload(&store).await {
                tracing::warn!(error = %e, "reloading SIP users failed; keeping the last snapshot");
            }
        }
    });
    Ok(SipService {
        addr: proxy.addr,
        tls_addr: proxy.tls_addr,
        users: shared,
        _proxy: proxy,
        reload,
    })
}
