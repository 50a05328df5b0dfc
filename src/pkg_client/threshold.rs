//! The phone's side of a threshold provider (pkg-api.md "Threshold
//! provider"): a per-server login secret, so that no server can replay at
//! another what it received; key shares fetched from the servers at once,
//! each checked against its server's `P_pub_i` (a bad server is named and
//! skipped); `t` good shares combined and the result checked against
//! `p_pub` like any key.
//!
//! Decisions (time to keys):
//! - the keys are combined from the first `t` servers whose shares are
//!   good and returned after at most [`GRACE`] more, so the slowest
//!   server never delays them; a server heard after that is still
//!   reported ([`ThresholdKeys::late`], a warning in the log), and every
//!   server still gets its logout;
//! - the login secrets (one Argon2id each) are derived once and kept by
//!   the caller ([`ThresholdKeys::secrets`], [`fetch_threshold_keys_kept`]);
//!   a kept secret refused with `401 invalid_credentials` is derived anew
//!   from the password, so a changed password needs no manual step; when
//!   the password derives the same secret (a wrong one-time code, not a
//!   changed password) it is not tried again, since every refusal counts
//!   as a failed login for the server's throttling.
//!
//! Decisions (device credentials; pkg-api.md is silent on which server
//! issues them):
//! - the "home" server ([`home_server`]: the server the phone asks for
//!   parameters, whose `services` it uses, found among the servers by its
//!   pinned certificate, else by URL) issues the device's SIP credential
//!   and the relay's credentials ([`DeviceRequest`]), in the same session
//!   as its key shares and before its logout: a one-time code is used
//!   once, so there is no second login. The account password (and every
//!   login secret) never goes to SIP: at a threshold provider the
//!   registrar's operator is one operator, and a digest of the password
//!   would give that operator every server's login secret by guessing;
//! - the keys still never wait for a slow server that is not the home
//!   server ([`GRACE`]); when a device credential is asked (a start or a
//!   set-up, never a background renewal), the fetch also waits for the
//!   home server's answer, at most [`SERVER_TIMEOUT`] in all. What it
//!   answered is [`ThresholdKeys::device`].

use super::api::{KeyEntry, SecretString, SipCredentialsResponse};
use super::client::PkgClient;
use super::turn::TurnCredentials;
use super::PkgClientError;
use crate::ibe::encoding::{b64_decode, b64_encode};
use crate::ibe::threshold::{
    check_key_shares, combine_checked, Combined, KeyShare, ServerShares, Threshold, ThresholdServer,
};
use crate::ibe::{Aor, Identity, Period, PreparedIdentity, PrivateKeys, PublicParams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Prefix of the salt of the per-server login secret.
pub const LOGIN_SALT_TAG: &[u8] = b"IBESIP-V01 threshold login";
/// Argon2id memory of the login secret, KiB (pkg-api.md).
pub const LOGIN_M_KIB: u32 = 19456;
/// Argon2id passes of the login secret.
pub const LOGIN_T: u32 = 2;
/// How long one server may take for login, key shares and logout.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(20);

/// The secret sent as `password` to threshold server `index` of `domain`:
/// `base64url(Argon2id(password, salt = SHA-256("IBESIP-V01 threshold
/// login" || domain || 0x00 || decimal index), m = 19456 KiB, t = 2,
/// p = 1, 32 bytes))`. Different for every server, and the password cannot
/// be recovered from it but by guessing.
pub fn login_secret(
    password: &SecretString,
    domain: &str,
    index: u32,
) -> Result<SecretString, PkgClientError> {
    let mut h = Sha256::new();
    h.update(LOGIN_SALT_TAG);
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(index.to_string().as_bytes());
    let salt: [u8; 32] = h.finalize().into();
    let params = argon2::Params::new(LOGIN_M_KIB, LOGIN_T, 1, Some(32))
        .map_err(|e| PkgClientError::Protocol(format!("login secret parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.expose().as_bytes(), &salt, &mut out[..])
        .map_err(|e| PkgClientError::Protocol(format!("login secret: {e}")))?;
    Ok(SecretString::new(b64_encode(&out[..])))
}

/// How long a fetch that has `t` good shares still waits for the other
/// servers, only so that a bad one is named in its answer. A server heard
/// later is still reported ([`ThresholdKeys::late`] and a warning in the
/// log); the keys never wait for the slowest server.
pub const GRACE: Duration = Duration::from_millis(100);

/// What the home server ([`home_server`]) is asked beside its key shares,
/// in the same session: a SIP digest credential for `device`
/// (`POST /v1/sip-credentials`) and, when `turn`, relay credentials
/// (`POST /v1/turn-credentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The index of the home server.
    pub home: u32,
    /// The device name sent with `POST /v1/sip-credentials`.
    pub device: String,
    /// Whether relay credentials are asked too.
    pub turn: bool,
}

/// Why the home server gave no device SIP credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceRefusal {
    /// It issues none (`404`).
    #[error("key server {0} issues no device SIP credentials")]
    NotOffered(u32),
    /// It could not be reached, refused the login or the request, or
    /// answered a credential for another user.
    #[error("key server {home}: {why}")]
    Failed {
        /// The home server.
        home: u32,
        /// Why, for people.
        why: String,
    },
}

/// What the home server answered to a [`DeviceRequest`].
#[derive(Debug, Clone)]
pub struct DeviceAnswer {
    /// The device's SIP credential; its user name is the AOR's user.
    pub sip: Result<SipCredentialsResponse, DeviceRefusal>,
    /// Relay credentials, when asked and offered (none on any failure:
    /// calls then go without a relayed candidate).
    pub turn: Option<TurnCredentials>,
}

/// The index of the home server of `threshold` (the server the phone
/// talks to for parameters at `url` with certificate pin `pin`): the
/// server whose `tls_sha256` is `pin`, else the server whose `pkg_url` is
/// `url` (ASCII case and a trailing `/` ignored); `None` when neither
/// names a server.
pub fn home_server(threshold: &Threshold, pin: Option<[u8; 32]>, url: &str) -> Option<u32> {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    pin.and_then(|pin| threshold.servers.iter().find(|s| s.tls_sha256 == pin))
        .or_else(|| {
            threshold
                .servers
                .iter()
                .find(|s| norm(&s.pkg_url) == norm(url))
        })
        .map(|s| s.index)
}

/// Per-server login secrets of one account (server index to secret): what
/// a phone keeps instead of re-deriving them from the password for every
/// fetch ([`login_secrets`]).
pub type LoginSecrets = BTreeMap<u32, SecretString>;

/// What a threshold key fetch got: the combined keys (checked against
/// `p_pub`), the servers whose shares were combined, those skipped with
/// why, those not heard yet, and the login secrets that worked.
#[derive(Debug)]
pub struct ThresholdKeys {
    /// One key per period asked for.
    pub keys: Vec<PrivateKeys>,
    /// The indices of the servers whose shares were combined, ascending:
    /// the first `t` servers whose shares were good.
    pub used: Vec<u32>,
    /// Servers not used, with the reason (down, refused, bad share), among
    /// those heard before the keys were returned (at most [`GRACE`] after
    /// the `t`-th good share).
    pub skipped: Vec<(u32, String)>,
    /// Servers not heard when the keys were returned, ascending; what
    /// each of them does is reported later through `late`.
    pub pending: Vec<u32>,
    /// Every pending server that fails (down, refused, a bad share), once,
    /// as it is heard; also logged as a warning. Closed when every pending
    /// server has answered or timed out ([`SERVER_TIMEOUT`]).
    pub late: mpsc::UnboundedReceiver<(u32, String)>,
    /// The login secret that logged in at each server heard (kept, or
    /// derived from the password now), for the next fetch.
    pub secrets: LoginSecrets,
    /// Whether any secret in `secrets` was derived in this fetch (none
    /// was kept for that server, or the kept one was refused): the kept
    /// set should be replaced.
    pub derived: bool,
    /// The home server's answer to the [`DeviceRequest`]; `None` when
    /// none was made.
    pub device: Option<DeviceAnswer>,
}

impl ThresholdKeys {
    /// "servers 1 and 3 of 3 (2 needed)", for people.
    pub fn describe(&self, threshold: &Threshold) -> String {
        describe_servers(&self.used, threshold)
    }
}

fn describe_servers(used: &[u32], threshold: &Threshold) -> String {
    let names: Vec<String> = used.iter().map(u32::to_string).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "none".into(),
    };
    format!(
        "server{} {list} of {} ({} needed)",
        if used.len() == 1 { "" } else { "s" },
        threshold.servers.len(),
        threshold.t
    )
}

/// A one-time code for threshold server `index` (each server has its own
/// TOTP seed), or `None` when the account has no second factor.
pub type OtpFor<'a> = &'a (dyn Fn(u32) -> Option<SecretString> + Sync);

/// Logs in to the threshold servers of `params` as `user` (a secret
/// derived from `password` per server), asks all of them at once for
/// their shares of the keys for `periods`, checks each share against the
/// server's `P_pub_i`, combines the first `t` good servers' shares per
/// period and checks the result against `p_pub`. Returns as soon as `t`
/// servers gave good shares, after at most [`GRACE`] more for the others
/// (so that a bad one is named in the answer; one heard later comes
/// through [`ThresholdKeys::late`]). Fails, with a sentence naming every
/// server and why, when fewer than `t` servers gave good shares; that
/// failure is unreachable ([`PkgClientError::is_unreachable`]) only when
/// every server that gave no good share was out of reach (no connection,
/// no answer in time, `5xx`, throttled), never when one refused, answered
/// a bad share or broke the protocol.
pub async fn fetch_threshold_keys(
    params: &PublicParams,
    user: &str,
    password: &SecretString,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(params, user, None, Some(password), otp, periods, None).await
}

/// The login secrets of every server of `params` for `password` (one
/// Argon2id each, [`login_secret`]): derive them once and keep them,
/// instead of the password, for later fetches with
/// [`fetch_threshold_keys_with_secrets`]. Blocking (CPU).
pub fn login_secrets(
    params: &PublicParams,
    password: &SecretString,
) -> Result<LoginSecrets, PkgClientError> {
    let threshold = params
        .threshold()
        .ok_or_else(|| PkgClientError::Protocol("not a threshold provider".into()))?;
    threshold
        .servers
        .iter()
        .map(|s| Ok((s.index, login_secret(password, params.domain(), s.index)?)))
        .collect()
}

/// [`fetch_threshold_keys`] with login secrets derived before
/// ([`login_secrets`]); a server without one is skipped.
pub async fn fetch_threshold_keys_with_secrets(
    params: &PublicParams,
    user: &str,
    secrets: &LoginSecrets,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(params, user, Some(secrets), None, otp, periods, None).await
}

/// [`fetch_threshold_keys`] with the login secrets `kept` from an earlier
/// fetch ([`ThresholdKeys::secrets`]): a server without a kept secret, or
/// that refuses its kept one (`401 invalid_credentials`: the password
/// changed), gets one derived from `password` now (one more login).
/// [`ThresholdKeys::derived`] then says to keep the new set.
pub async fn fetch_threshold_keys_kept(
    params: &PublicParams,
    user: &str,
    kept: &LoginSecrets,
    password: &SecretString,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(params, user, Some(kept), Some(password), otp, periods, None).await
}

/// [`fetch_threshold_keys_kept`] (`kept` may be empty) that also asks the
/// home server for `device`'s credentials in the session of its key
/// shares, and waits for its answer ([`ThresholdKeys::device`]), at most
/// [`SERVER_TIMEOUT`]; the other servers are waited for as without it.
pub async fn fetch_threshold_keys_and_device(
    params: &PublicParams,
    user: &str,
    (kept, password): (Option<&LoginSecrets>, &SecretString),
    otp: OtpFor<'_>,
    periods: &[Period],
    device: &DeviceRequest,
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(
        params,
        user,
        kept,
        Some(password),
        otp,
        periods,
        Some(device),
    )
    .await
}

/// The identities of one fetch (one per period), hashed and prepared by
/// the first server task that knows the AOR and shared with the others and
/// the check of the combined keys.
#[derive(Default)]
struct SharedIdentities(Mutex<Option<Arc<Vec<PreparedIdentity>>>>);

impl SharedIdentities {
    /// The prepared identities of `aor` for `periods`.
    fn get(&self, aor: &Aor, periods: &[Period]) -> Arc<Vec<PreparedIdentity>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = slot.as_ref() {
            if v.first().is_some_and(|q| q.identity().aor() == aor) {
                return v.clone();
            }
        }
        let v: Arc<Vec<PreparedIdentity>> = Arc::new(
            periods
                .iter()
                .map(|p| PreparedIdentity::new(&Identity::new(aor.clone(), p.clone())))
                .collect(),
        );
        if slot.is_none() {
            *slot = Some(v.clone());
        }
        v
    }
}

/// One server's login secret: kept from before, and/or the password to
/// derive it from; and the one-time code for this server, if any.
struct ServerSecret {
    kept: Option<SecretString>,
    password: Option<SecretString>,
    otp: Option<SecretString>,
}

/// What one server gave: its shares (checked) and the secret that logged
/// in.
struct Heard {
    aor: Aor,
    shares: Vec<KeyShare>,
    secret: SecretString,
    derived: bool,
}

/// One server's report: its index and its shares, or why not.
type Report = (u32, Result<Heard, Failure>);

/// The home server's task's side of a [`DeviceRequest`]: what to ask, the
/// go-ahead (sent once the keys are combined; dropped when they cannot
/// be, and nothing is asked), and where its answer goes.
type DeviceLink = (
    DeviceRequest,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<DeviceAnswer>,
);

async fn fetch_shares(
    params: &PublicParams,
    user: &str,
    kept: Option<&LoginSecrets>,
    password: Option<&SecretString>,
    otp: OtpFor<'_>,
    periods: &[Period],
    device: Option<&DeviceRequest>,
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    let threshold = params
        .threshold()
        .ok_or_else(|| PkgClientError::Protocol("not a threshold provider".into()))?;
    // Every server in a task of its own that outlives this call: it
    // reports its shares, then logs out, whether or not they are waited for.
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let prepared = Arc::new(SharedIdentities::default());
    // The home server asks for the device's credentials only once the
    // keys are combined: a fetch that fails (too few servers, a wrong
    // code elsewhere) uses up none of the account's device slots.
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<DeviceAnswer>();
    let mut link: Option<DeviceLink> = device.map(|d| (d.clone(), go_rx, answer_tx));
    let mut linked = false;
    for server in &threshold.servers {
        let prepared = prepared.clone();
        let server = server.clone();
        let params = params.clone();
        let user = user.to_string();
        let secret = ServerSecret {
            kept: kept.and_then(|m| m.get(&server.index).cloned()),
            password: password.cloned(),
            otp: otp(server.index),
        };
        let periods = periods.to_vec();
        let home = link
            .as_ref()
            .is_some_and(|(d, _, _)| d.home == server.index);
        let home_link = if home { link.take() } else { None };
        linked |= home_link.is_some();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut logout = None;
            let deadline = tokio::time::Instant::now() + SERVER_TIMEOUT;
            let r = tokio::time::timeout_at(
                deadline,
                shares_from(
                    &server,
                    &params,
                    &user,
                    secret,
                    &periods,
                    &prepared,
                    &mut logout,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(Failure::timed_out()));
            let why = r.as_ref().err().map(|f| f.why.clone());
            let _ = tx.send((server.index, r));
            drop(tx);
            // The home server's device credentials once the keys are
            // combined, in the same session (before its logout), within
            // the same time limit.
            if let Some((d, go, answer)) = home_link {
                let got = match &logout {
                    Some((client, session)) => match tokio::time::timeout_at(deadline, go).await {
                        Ok(Ok(())) => Some(
                            tokio::time::timeout_at(deadline, device_from(client, session, &d))
                                .await
                                .unwrap_or_else(|_| {
                                    DeviceAnswer::failed(d.home, "no answer in time")
                                }),
                        ),
                        // No keys: nothing asked.
                        Ok(Err(_)) => None,
                        Err(_) => Some(DeviceAnswer::failed(d.home, "no answer in time")),
                    },
                    None => Some(DeviceAnswer::failed(
                        d.home,
                        why.as_deref().unwrap_or("no session"),
                    )),
                };
                if let Some(got) = got {
                    let _ = answer.send(got);
                }
            }
            if let Some((client, session)) = logout {
                let _ = client.logout(&session).await;
            }
        });
    }
    drop(tx);
    let t = threshold.t as usize;
    let n = threshold.servers.len();
    let mut heard: Vec<u32> = Vec::with_capacity(n);
    // Servers that answered shares, not checked yet: as soon as there are
    // `t`, their shares and the combined keys are checked in one batch;
    // a bad server is named, dropped and replaced by the next one heard.
    let mut candidates: BTreeMap<u32, Heard> = BTreeMap::new();
    let mut tally = Tally::default();
    let (aor, keys) = loop {
        if candidates.len() == t {
            // All servers combined must agree on the account's AOR.
            let mut aors = candidates.values().map(|h| &h.aor);
            let aor = aors.next().cloned().ok_or_else(|| {
                PkgClientError::Protocol("no threshold servers to combine".into())
            })?;
            if aors.any(|a| *a != aor) {
                return Err(PkgClientError::Protocol(
                    "the threshold servers disagree about the account's AOR".into(),
                ));
            }
            let ids = prepared.get(&aor, periods);
            match combine_candidates(params, threshold, &candidates, &ids)? {
                Combined::Keys(keys) => break (aor, keys),
                Combined::Bad(bad) => {
                    for (index, position) in bad {
                        candidates.remove(&index);
                        tally.fail(index, wrong_share(periods.get(position)).into());
                    }
                    continue;
                }
            }
        }
        let Some((index, r)) = rx.recv().await else {
            // Fewer than t answered shares: those that did are checked
            // alone, so that a bad one is named.
            for (index, h) in std::mem::take(&mut candidates) {
                let ids = prepared.get(&h.aor, periods);
                match check_server(params, threshold, index, &h.shares, &ids) {
                    Ok(()) => {
                        candidates.insert(index, h);
                    }
                    Err(why) => tally.fail(index, why.into()),
                }
            }
            let unheard = threshold
                .servers
                .iter()
                .map(|s| s.index)
                .filter(|i| !heard.contains(i));
            return Err(tally.shortfall(candidates.len(), unheard, threshold, params.domain()));
        };
        heard.push(index);
        match r {
            Ok(h) => {
                candidates.insert(index, h);
            }
            Err(f) => tally.fail(index, f),
        }
    };
    let mut skipped = tally.skipped;
    let good = candidates;
    let used: Vec<u32> = good.keys().copied().collect();
    let ids = prepared.get(&aor, periods);
    // The keys are good: the home server may ask for the device's
    // credentials now, while the others get their grace.
    let _ = go.send(());
    let mut secrets: LoginSecrets = kept.cloned().unwrap_or_default();
    let mut derived = false;
    let mut keep = |index: u32, h: Heard| {
        derived |= h.derived;
        secrets.insert(index, h.secret);
    };
    for (index, h) in good {
        keep(index, h);
    }
    // A short grace for the others, only to name a bad one now.
    let deadline = tokio::time::Instant::now() + GRACE;
    while heard.len() < n {
        let Ok(Some((index, r))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        heard.push(index);
        match r.and_then(|h| {
            check_server(params, threshold, index, &h.shares, &ids)
                .map(|()| h)
                .map_err(Failure::from)
        }) {
            Ok(h) => keep(index, h),
            Err(f) => skipped.push((index, f.why)),
        }
    }
    // The home server's answer, when a device credential is asked: its
    // task ends within SERVER_TIMEOUT of the start.
    let device = match device {
        None => None,
        Some(d) if !linked => Some(DeviceAnswer::failed(d.home, "not one of the key servers")),
        Some(d) => Some(
            answer_rx
                .await
                .unwrap_or_else(|_| DeviceAnswer::failed(d.home, "no answer")),
        ),
    };
    skipped.sort_by_key(|(i, _)| *i);
    let mut pending: Vec<u32> = threshold
        .servers
        .iter()
        .map(|s| s.index)
        .filter(|i| !heard.contains(i))
        .collect();
    pending.sort_unstable();
    let (late_tx, late) = mpsc::unbounded_channel();
    if !pending.is_empty() {
        // Those still out are reported as they come: a bad share found
        // after the keys were returned is still named.
        let (params, threshold) = (params.clone(), threshold.clone());
        tokio::spawn(async move {
            while let Some((index, r)) = rx.recv().await {
                let r = r.and_then(|h| {
                    check_server(&params, &threshold, index, &h.shares, &ids).map_err(Failure::from)
                });
                if let Err(Failure { why, .. }) = r {
                    tracing::warn!(server = index, %why, "threshold PKG server failed after the keys were combined");
                    let _ = late_tx.send((index, why));
                }
            }
        });
    }
    Ok((
        aor,
        ThresholdKeys {
            keys,
            used,
            skipped,
            pending,
            late,
            secrets,
            derived,
            device,
        },
    ))
}

impl DeviceAnswer {
    /// No credentials from `home`, for `why`.
    fn failed(home: u32, why: &str) -> Self {
        DeviceAnswer {
            sip: Err(DeviceRefusal::Failed {
                home,
                why: why.to_string(),
            }),
            turn: None,
        }
    }
}

/// Asks the home server, in `session`, for the device's SIP credential
/// (its user name must be the session's AOR's user) and, if asked, relay
/// credentials.
async fn device_from(
    client: &PkgClient,
    session: &crate::pkg_client::Session,
    d: &DeviceRequest,
) -> DeviceAnswer {
    let home = d.home;
    let sip = match client.sip_credentials(session, &d.device).await {
        Ok(c) if c.username == session.aor.user() => Ok(c),
        Ok(c) => Err(DeviceRefusal::Failed {
            home,
            why: format!(
                "SIP user name {} is not the AOR's user {}",
                c.username,
                session.aor.user()
            ),
        }),
        Err(PkgClientError::Server { status: 404, .. } | PkgClientError::NotOffered(_)) => {
            Err(DeviceRefusal::NotOffered(home))
        }
        Err(e) => Err(DeviceRefusal::Failed {
            home,
            why: e.to_string(),
        }),
    };
    let turn = match d.turn {
        false => None,
        true => match client.turn_credentials(session).await {
            Ok(c) => Some(c),
            Err(PkgClientError::NotOffered(_)) => None,
            Err(e) => {
                tracing::warn!(server = home, error = %e, "no TURN credentials from the home key server: no relayed candidates");
                None
            }
        },
    };
    DeviceAnswer { sip, turn }
}

/// The servers that failed in one fetch, as they are heard.
struct Tally {
    /// Each failed server with why, for people.
    skipped: Vec<(u32, String)>,
    /// Those that refused the login for its credentials.
    refused: Vec<u32>,
    /// Those that want their one-time code.
    otp_at: Vec<u32>,
    /// Whether every failure so far was only "out of reach".
    all_down: bool,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            skipped: Vec::new(),
            refused: Vec::new(),
            otp_at: Vec::new(),
            all_down: true,
        }
    }
}

impl Tally {
    /// Server `index` gave no good shares, for `f`.
    fn fail(&mut self, index: u32, f: Failure) {
        if f.otp_required {
            self.otp_at.push(index);
        }
        if f.refused {
            self.refused.push(index);
        }
        self.all_down &= f.down;
        self.skipped.push((index, f.why));
    }

    /// The error of a fetch that got `good` (fewer than `t`) good shares,
    /// `unheard` the servers that never reported: [`PkgClientError::OtpRequiredAt`]
    /// when enough servers want only their one-time codes, else
    /// [`PkgClientError::Threshold`] naming every server, `unreachable`
    /// only when every failure was "out of reach" (an unheard server is
    /// not known to be down, so it counts as a refusal).
    fn shortfall(
        mut self,
        good: usize,
        unheard: impl Iterator<Item = u32>,
        threshold: &Threshold,
        domain: &str,
    ) -> PkgClientError {
        // Enough servers know the password but want their one-time codes:
        // the caller asks the user for those codes and fetches again.
        if !self.otp_at.is_empty() && good + self.otp_at.len() >= threshold.t as usize {
            self.otp_at.sort_unstable();
            return PkgClientError::OtpRequiredAt {
                servers: self.otp_at,
            };
        }
        for index in unheard {
            self.all_down = false;
            self.skipped.push((index, "no answer".into()));
        }
        self.skipped.sort_by_key(|(i, _)| *i);
        self.refused.sort_unstable();
        let mut sentence = format!(
            "only {good} of the {} key servers of {domain} gave a good key share and {} are needed, so no keys were fetched",
            threshold.servers.len(),
            threshold.t
        );
        for (i, why) in &self.skipped {
            sentence.push_str(&format!("; server {i}: {why}"));
        }
        PkgClientError::Threshold {
            sentence,
            refused: self.refused,
            unreachable: self.all_down,
        }
    }
}

/// Why one server gave no shares: a reason for people, and whether it
/// refused the login only for want of its one-time code.
struct Failure {
    why: String,
    otp_required: bool,
    /// The login was refused for its credentials (`401
    /// invalid_credentials`: a wrong password or one-time code).
    refused: bool,
    /// The server was only out of reach ([`PkgClientError::is_unreachable`],
    /// or no answer in time); anything else it did is not (a reason
    /// given as text never is).
    down: bool,
}

impl Failure {
    /// A refused or failed login.
    fn login(e: PkgClientError) -> Self {
        Failure {
            otp_required: e.is_otp_required(),
            refused: credentials_refused(&e),
            down: e.is_unreachable(),
            why: e.to_string(),
        }
    }

    /// A failed request after the login (down or not, never "refused for
    /// its credentials").
    fn request(e: PkgClientError) -> Self {
        Failure {
            otp_required: false,
            refused: false,
            down: e.is_unreachable(),
            why: e.to_string(),
        }
    }

    /// No answer within [`SERVER_TIMEOUT`]: out of reach.
    fn timed_out() -> Self {
        Failure {
            why: "no answer in time".into(),
            otp_required: false,
            refused: false,
            down: true,
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure {
            why,
            otp_required: false,
            refused: false,
            down: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Self {
        why.to_string().into()
    }
}

/// Whether `e` is a login refused for its credentials (not for want of a
/// one-time code).
pub(super) fn credentials_refused(e: &PkgClientError) -> bool {
    matches!(e, PkgClientError::Server { status: 401, code, .. } if code == super::api::codes::INVALID_CREDENTIALS)
}

/// This server's login secret derived from `password` (Argon2id, off the
/// async threads).
pub(super) async fn derive(
    password: SecretString,
    params: &PublicParams,
    index: u32,
) -> Result<SecretString, String> {
    let domain = params.domain().to_string();
    tokio::task::spawn_blocking(move || login_secret(&password, &domain, index))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// One server: login with its own secret (the kept one; one derived from
/// the password when none is kept or the kept one is refused), its shares
/// for `periods` in that order, each checked. The session is left in
/// `logout` for the caller to end after reporting. The error is a reason
/// for people.
async fn shares_from(
    server: &ThresholdServer,
    params: &PublicParams,
    user: &str,
    secret: ServerSecret,
    periods: &[Period],
    prepared: &SharedIdentities,
    logout: &mut Option<(PkgClient, crate::pkg_client::Session)>,
) -> Result<Heard, Failure> {
    let client =
        PkgClient::new(&server.pkg_url, Some(server.tls_sha256)).map_err(|e| e.to_string())?;
    let otp = secret.otp.as_ref();
    let (session, secret, derived) = match (secret.kept, secret.password) {
        (Some(kept), password) => match client.login_with_otp(user, &kept, otp).await {
            Ok(s) => (s, kept, false),
            Err(e) if credentials_refused(&e) && password.is_some() => {
                let pw = password.ok_or_else(|| e.to_string())?;
                let fresh = derive(pw, params, server.index).await?;
                // The same secret (the password unchanged: a wrong code,
                // say) is not tried twice: each refusal counts as a failed
                // login for the server's throttling.
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    fresh.expose().as_bytes(),
                    kept.expose().as_bytes(),
                )) {
                    return Err(Failure::login(e));
                }
                let s = client
                    .login_with_otp(user, &fresh, otp)
                    .await
                    .map_err(Failure::login)?;
                (s, fresh, true)
            }
            Err(e) => return Err(Failure::login(e)),
        },
        (None, Some(pw)) => {
            let fresh = derive(pw, params, server.index).await?;
            let s = client
                .login_with_otp(user, &fresh, otp)
                .await
                .map_err(Failure::login)?;
            (s, fresh, true)
        }
        (None, None) => return Err("no login secret for this server".into()),
    };
    let answer = client.fetch_key_entries(&session, periods).await;
    let aor = session.aor.clone();
    *logout = Some((client, session));
    let answer = answer.map_err(Failure::request)?;
    if answer.index != Some(server.index) {
        return Err(format!(
            "answered as server {:?}, not {}",
            answer.index, server.index
        )
        .into());
    }
    if answer.aor != aor.as_str() {
        return Err(format!("shares are for {}, not {aor}", answer.aor).into());
    }
    // Hashed and prepared here by the first server task that knows the
    // AOR, while the others are still answering.
    let _ = prepared.get(&aor, periods);
    let shares = shares_for(&aor, server, &answer.keys, periods)?;
    Ok(Heard {
        aor,
        shares,
        secret,
        derived,
    })
}

/// Decodes one server's entries, exactly one per period in `periods`'
/// order; not checked yet ([`combine_candidates`], [`check_server`]).
fn shares_for(
    aor: &Aor,
    server: &ThresholdServer,
    entries: &[KeyEntry],
    periods: &[Period],
) -> Result<Vec<KeyShare>, String> {
    if entries.len() != periods.len() {
        return Err(format!(
            "asked for {} periods, got {}",
            periods.len(),
            entries.len()
        ));
    }
    let mut out = Vec::with_capacity(periods.len());
    for period in periods {
        let e = entries
            .iter()
            .find(|e| e.period == period.as_str())
            .ok_or_else(|| format!("no share for {period}"))?;
        let d_enc =
            Zeroizing::new(b64_decode("d_enc", e.d_enc.expose()).map_err(|e| e.to_string())?);
        let d_sig =
            Zeroizing::new(b64_decode("d_sig", e.d_sig.expose()).map_err(|e| e.to_string())?);
        let keys =
            PrivateKeys::from_bytes(Identity::new(aor.clone(), period.clone()), &d_enc, &d_sig)
                .map_err(|e| format!("bad key share: {e}"))?;
        out.push(KeyShare::new(server.index, keys).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Why a server is skipped whose share for `period` is wrong.
fn wrong_share(period: Option<&Period>) -> String {
    let period = period.map_or("?", Period::as_str);
    format!("its key share for {period} is wrong (does not match its p_pub_i)")
}

/// Server `index`'s shares checked alone against its `P_pub_i` (one
/// batch; when that fails, one by one to name the period).
fn check_server(
    params: &PublicParams,
    threshold: &Threshold,
    index: u32,
    shares: &[KeyShare],
    ids: &[PreparedIdentity],
) -> Result<(), String> {
    let server = threshold
        .server(index)
        .ok_or_else(|| format!("server {index} is not in the parameters"))?;
    if shares.len() != ids.len() {
        return Err(format!("{} shares for {} periods", shares.len(), ids.len()));
    }
    let (domain, p) = (params.domain(), &server.p_pub_i);
    let batch: Vec<(&KeyShare, &PreparedIdentity)> = shares.iter().zip(ids).collect();
    if check_key_shares(domain, p, &batch).is_ok() {
        return Ok(());
    }
    let bad = batch
        .iter()
        .find(|(s, q)| check_key_shares(domain, p, &[(s, q)]).is_err())
        .map(|(s, _)| s.identity().period());
    Err(wrong_share(bad))
}

/// The `t` candidates' shares combined and checked, with the combined
/// keys, in one batch ([`combine_checked`]).
fn combine_candidates(
    params: &PublicParams,
    threshold: &Threshold,
    candidates: &BTreeMap<u32, Heard>,
    ids: &[PreparedIdentity],
) -> Result<Combined, PkgClientError> {
    let servers = candidates
        .iter()
        .map(|(index, h)| {
            let s = threshold
                .server(*index)
                .ok_or_else(|| PkgClientError::Protocol(format!("no threshold server {index}")))?;
            Ok(ServerShares {
                p_pub_i: &s.p_pub_i,
                shares: &h.shares,
            })
        })
        .collect::<Result<Vec<_>, PkgClientError>>()?;
    Ok(combine_checked(params, &servers, ids)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::threshold::{deal, ThresholdServer};
    use crate::ibe::{extract, setup};

    #[test]
    fn login_secrets_differ_per_server_and_domain_and_are_stable() {
        let pw = SecretString::from("correct horse");
        let a1 = login_secret(&pw, "atlanta.com", 1).unwrap();
        assert_eq!(a1, login_secret(&pw, "atlanta.com", 1).unwrap());
        assert_ne!(a1, login_secret(&pw, "atlanta.com", 2).unwrap());
        assert_ne!(a1, login_secret(&pw, "biloxi.com", 1).unwrap());
        assert_ne!(
            a1,
            login_secret(&"correct horsf".into(), "atlanta.com", 1).unwrap()
        );
        assert_eq!(a1.expose().len(), 43); // 32 bytes, base64url unpadded
                                           // Index 1 and 11 do not collide through the decimal encoding.
        assert_ne!(
            login_secret(&pw, "atlanta.com1", 1).unwrap(),
            login_secret(&pw, "atlanta.com", 11).unwrap()
        );
    }

    #[test]
    fn a_wrong_share_is_named_and_a_good_one_accepted() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let servers = servers_of(&shares);
        let aor = Aor::parse("sip:alice@atlanta.com").unwrap();
        let p = Period::month("2026-11").unwrap();
        let entry = |m: &crate::ibe::MasterSecret| {
            let k = extract(m, &Identity::new(aor.clone(), p.clone()));
            KeyEntry {
                period: p.as_str().into(),
                d_enc: SecretString::new(b64_encode(&k.d_enc_bytes()[..])),
                d_sig: SecretString::new(b64_encode(&k.d_sig_bytes()[..])),
            }
        };
        let periods = [p.clone()];
        let ids = [PreparedIdentity::new(&Identity::new(
            aor.clone(),
            p.clone(),
        ))];
        let t = Threshold {
            t: 2,
            dealer: true,
            servers: servers.clone(),
        };
        let good = shares_for(&aor, &servers[1], &[entry(shares[1].secret())], &periods).unwrap();
        check_server(&params, &t, 2, &good, &ids).unwrap();
        let wrong = shares_for(&aor, &servers[1], &[entry(shares[0].secret())], &periods).unwrap();
        let e = check_server(&params, &t, 2, &wrong, &ids).unwrap_err();
        assert!(e.contains("wrong") && e.contains("2026-11"), "{e}");
        // Server 1's shares are good against its own P_pub_i only.
        check_server(&params, &t, 1, &wrong, &ids).unwrap();
        assert!(check_server(&params, &t, 4, &good, &ids).is_err());
        assert!(shares_for(&aor, &servers[1], &[], &periods).is_err());
        assert_eq!(
            describe_servers(&[1, 3], &t),
            "servers 1 and 3 of 3 (2 needed)"
        );
        assert_eq!(describe_servers(&[2], &t), "server 2 of 3 (2 needed)");
    }

    fn two_of_three() -> Threshold {
        let (msk, _) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        Threshold {
            t: 2,
            dealer: true,
            servers: servers_of(&deal(&msk, 2, 3).unwrap()),
        }
    }

    /// The servers of atlanta.com holding `shares` (pkgN.atlanta.com).
    fn servers_of(shares: &[crate::ibe::threshold::MasterShare]) -> Vec<ThresholdServer> {
        shares
            .iter()
            .map(|s| ThresholdServer {
                index: s.index(),
                pkg_url: format!("https://pkg{}.atlanta.com", s.index()),
                p_pub_i: s.p_pub_i(),
                tls_sha256: [0; 32],
            })
            .collect()
    }

    fn server(status: u16, code: &str) -> PkgClientError {
        PkgClientError::Server {
            status,
            code: code.into(),
            message: "x".into(),
        }
    }

    /// The error of a fetch with `good` good shares and these failures
    /// (servers 1.. in order), `unheard` never reporting.
    fn outcome(good: usize, failures: Vec<Failure>, unheard: &[u32]) -> PkgClientError {
        let mut tally = Tally::default();
        for (i, f) in failures.into_iter().enumerate() {
            tally.fail(i as u32 + 1, f);
        }
        tally.shortfall(
            good,
            unheard.iter().copied(),
            &two_of_three(),
            "atlanta.com",
        )
    }

    fn is_down(e: &PkgClientError) -> bool {
        matches!(e, PkgClientError::Threshold { .. }) && e.is_unreachable()
    }

    #[test]
    fn only_servers_all_out_of_reach_make_a_threshold_fetch_unreachable() {
        use crate::pkg_client::api::codes;
        let io = || Failure::login(PkgClientError::Io("connection refused".into()));
        // Every server down, timed out, 5xx or throttled (one good share
        // is not enough): out of reach, like one PKG that is down.
        for failures in [
            vec![io(), io(), io()],
            vec![
                Failure::timed_out(),
                Failure::login(server(503, "x")),
                Failure::login(PkgClientError::Throttled {
                    retry_after_secs: 5,
                }),
            ],
            vec![io(), Failure::request(server(500, "x"))],
        ] {
            let e = outcome(3 - failures.len(), failures, &[]);
            assert!(is_down(&e), "{e:?}");
        }
        // One server refusing, answering a bad share or breaking the
        // protocol among servers down: an error, never the stored keys
        // (making the others look down must not hide a refusal).
        for refusal in [
            Failure::login(server(401, codes::INVALID_CREDENTIALS)),
            Failure::login(server(403, codes::ACCOUNT_DISABLED)),
            Failure::login(PkgClientError::PinMismatch {
                pinned: "a".into(),
                presented: "b".into(),
            }),
            Failure::login(PkgClientError::Tls("bad handshake signature".into())),
            Failure::request(server(403, "period_not_allowed")),
            Failure::request(PkgClientError::Protocol("not JSON".into())),
            Failure::from("its key share for 2026-11 is wrong (does not match its p_pub_i)"),
            Failure::from("answered as server Some(1), not 2"),
        ] {
            let why = refusal.why.clone();
            for failures in [
                vec![refusal, io(), io()],
                vec![io(), io(), Failure::from(why.clone())],
            ] {
                let e = outcome(0, failures, &[]);
                assert!(!is_down(&e), "{why}: {e:?}");
                assert!(e.to_string().contains("only 0 of the 3"), "{e}");
            }
        }
        // A server that never reported is not known to be down.
        let e = outcome(0, vec![io(), io()], &[3]);
        assert!(!is_down(&e), "{e:?}");
        assert!(e.to_string().contains("server 3: no answer"), "{e}");
        // Servers wanting only their codes: ask for them, as before.
        let otp = || Failure::login(server(401, codes::OTP_REQUIRED));
        let e = outcome(0, vec![otp(), otp(), io()], &[]);
        assert!(matches!(&e, PkgClientError::OtpRequiredAt { servers } if *servers == [1, 2]));
        assert!(!e.is_unreachable());
        // One wants a code, the others are down: not enough to ask, and
        // not "down" either.
        let e = outcome(0, vec![otp(), io(), io()], &[]);
        assert!(!is_down(&e), "{e:?}");
    }

    #[test]
    fn the_home_server_is_found_by_its_pin_else_by_its_url() {
        let server = |index: u32, fp: u8| ThresholdServer {
            index,
            pkg_url: format!("https://pkg{index}.atlanta.com"),
            p_pub_i: crate::ibe::threshold::deal(
                &setup("atlanta.com", "https://x").unwrap().0,
                2,
                3,
            )
            .unwrap()[0]
                .p_pub_i(),
            tls_sha256: [fp; 32],
        };
        let t = Threshold {
            t: 2,
            dealer: true,
            servers: vec![server(1, 1), server(2, 2), server(3, 3)],
        };
        // The pin wins over the URL: the server the phone talks to is the
        // one whose certificate it pinned.
        assert_eq!(
            home_server(&t, Some([2; 32]), "https://pkg1.atlanta.com"),
            Some(2)
        );
        assert_eq!(home_server(&t, None, "HTTPS://pkg3.atlanta.com/"), Some(3));
        assert_eq!(
            home_server(&t, Some([9; 32]), "https://pkg1.atlanta.com"),
            Some(1)
        );
        assert_eq!(
            home_server(&t, Some([9; 32]), "https://pkg9.atlanta.com"),
            None
        );
        assert_eq!(home_server(&t, None, "https://pkg.atlanta.com"), None);
    }
}
