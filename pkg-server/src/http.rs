//! The HTTP API of `pkg-api.md`: handlers, error answers, the metrics
//! middleware. Handlers read the clock (they are the driver); the rules
//! they apply (period window, throttling, session limits) live in the
//! store's queries and in small functions here.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ibephone::ibe::encoding::b64_encode;
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use ibephone::pkg_client::api::{
    self, codes, ErrorBody, HealthResponse, KeyEntry, KeysRequest, KeysResponse, LoginRequest,
    LoginResponse, SecretString,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Address of the client of a request (set per connection).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Everything the handlers share.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The master secret (zeroized on drop); a threshold server's share.
    pub msk: MasterSecret,
    /// A threshold server's index (its keys are shares, answered with
    /// `"index"`); `None` for a single PKG.
    pub threshold_index: Option<u32>,
    /// This PKG's parameters.
    pub params: PublicParams,
    /// Their JSON document, served as is.
    pub params_json: String,
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// Bounds concurrent Argon2id verifications (memory and CPU).
    pub argon_permits: Semaphore,
    /// Argon2id working memory reused by logins (at most one buffer per
    /// permit).
    pub argon_memory: crate::password::ArgonMemory,
    /// A hash of a random password: unknown users are verified against it
    /// so that they cost the same as known ones.
    pub dummy_phc: String,
    /// The embedded registrar's user snapshot, when this process runs one.
    pub sip_users: Option<crate::sip::UserDirectory>,
    /// TURN credential issuance, when `[turn]` is configured.
    pub turn: Option<crate::turn::Issuer>,
}

/// An error answer: status, code, message and maybe `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<i64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "database unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// The router with all endpoints, the body limit and the metrics layer.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route(api::PATH_LOGIN, post(login))
        .route(api::PATH_LOGOUT, post(logout))
        .route(api::PATH_PARAMS, get(params))
        .route("/v1/params/{domain}", get(trusted_params))
        .route(api::PATH_KEYS, post(keys))
        .route(api::PATH_SIP_CREDENTIALS, post(sip_credentials))
        .route(api::PATH_TURN_CREDENTIALS, post(turn_credentials))
        .route(api::PATH_HEALTH, get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let dt = t0.elapsed();
    st.metrics.latency.observe(dt.as_secs_f64());
    tracing::info!(%method, path = %path.chars().take(64).collect::<String>(), status = resp.status().as_u16(), ms = dt.as_millis() as u64, "request");
    resp
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                "request body too large",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "cannot read request body",
            )
        }
    })?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        )
    })
}

/// Whether `name` is an acceptable account name: 1-64 characters from
/// `A-Z a-z 0-9 . _ + -` (valid unescaped in a SIP user part).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// The AOR of an account in `domain`.
pub fn aor_of(user: &str, domain: &str) -> Option<Aor> {
    Aor::parse(&format!("sip:{user}@{domain}")).ok()
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| token_hash(t.trim()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_TOKEN,
                "missing bearer token",
            )
        })
}

async fn login(
    State(st): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LoginResponse>, ApiError> {
    let req: LoginRequest = parse_json(&headers, body)?;
    let now = now_unix();
    let valid_name = valid_user_name(&req.user);
    let user_key = format!("user:{}", if valid_name { req.user.as_str() } else { "" });
    let addr_key = format!("addr:{addr}");
    let mut locked = st.store.throttle_locked(&addr_key, now).await?;
    if valid_name {
        locked = locked.max(st.store.throttle_locked(&user_key, now).await?);
    }
    if let Some(secs) = locked {
        st.metrics.logins_failed.inc();
        tracing::warn!(%addr, "login throttled");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::TOO_MANY_ATTEMPTS,
            "too many failed logins; try later",
        );
        e.retry_after = Some(secs);
        return Err(e);
    }
    let user = if valid_name {
        st.store.user_get(&req.user).await?
    } else {
        None
    };
    // Unknown users are verified against a dummy hash: same work, same answer.
    let phc = user
        .as_ref()
        .map_or(st.dummy_phc.clone(), |u| u.password_hash.clone());
    let password = req.password.clone();
    let ok = {
        let _permit = st.argon_permits.acquire().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "shutting down",
            )
        })?;
        let st = st.clone();
        tokio::task::spawn_blocking(move || {
            st.argon_memory.verify_password(&phc, password.expose())
        })
        .await
        .unwrap_or(false)
    } && user.is_some();
    let fail = Failure {
        st: &st,
        addr,
        now,
        addr_key: &addr_key,
        user_key: valid_name.then_some(user_key.as_str()),
    };
    let Some(user) = user.filter(|_| ok) else {
        fail.count().await?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_CREDENTIALS,
            "wrong user name or password",
        ));
    };
    if !user.enabled {
        st.metrics.logins_failed.inc();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::ACCOUNT_DISABLED,
            "account disabled",
        ));
    }
    // The second factor, after the password: every refusal counts.
    if let Some((seed, last_step)) = st.store.otp_get(&user.name).await? {
        let Some(code) = &req.otp else {
            fail.count().await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::OTP_REQUIRED,
                "this account needs a one-time code",
            ));
        };
        let step = crate::otp::verify(&seed, code.expose(), now.max(0) as u64, last_step);
        let used = match step {
            Some(step) => st.store.otp_consume(&user.name, step).await?,
            None => false,
        };
        if !used {
            fail.count().await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_CREDENTIALS,
                "wrong user name, password or one-time code",
            ));
        }
    }
    let aor = aor_of(&user.name, st.params.domain()).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "bad account name",
        )
    })?;
    let raw: [u8; 32] = ibephone::pkg_client::seal::random_bytes().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "no randomness",
        )
    })?;
    let token = SecretString::new(b64_encode(&raw));
    st.store
        .session_create(&token_hash(token.expose()), &user.name, now)
        .await?;
    st.store.throttle_reset(&user_key).await?;
    st.metrics.logins_ok.inc();
    tracing::info!(user = %user.name, %addr, "login");
    Ok(Json(LoginResponse {
        token,
        aor: aor.as_str().to_string(),
        expires_in: st.config.session.idle_secs,
    }))
}

/// What a refused login counts against: its address and, for a
/// well-formed name, its account.
struct Failure<'a> {
    st: &'a AppState,
    addr: IpAddr,
    now: i64,
    addr_key: &'a str,
    user_key: Option<&'a str>,
}

impl Failure<'_> {
    /// Counts one failure of the address and the account (throttling).
    async fn count(&self) -> Result<(), ApiError> {
        let t = &self.st.config.throttle;
        self.st.metrics.logins_failed.inc();
        self.st
            .store
            .throttle_fail(
                self.addr_key,
                self.now,
                t.addr_max_failures,
                t.window_secs,
                t.lockout_secs,
            )
            .await?;
        if let Some(k) = self.user_key {
            self.st
                .store
                .throttle_fail(
                    k,
                    self.now,
                    t.user_max_failures,
                    t.window_secs,
                    t.lockout_secs,
                )
                .await?;
        }
        tracing::info!(addr = %self.addr, "login failed");
        Ok(())
    }
}

async fn session_user(st: &AppState, headers: &HeaderMap, now: i64) -> Result<String, ApiError> {
    let hash = bearer(headers)?;
    let s = &st.config.session;
    st.store
        .session_use(&hash, now, s.idle_secs as i64, s.absolute_secs as i64)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_TOKEN,
                "session expired or unknown",
            )
        })
}

async fn logout(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let hash = bearer(&headers)?;
    if st.store.session_end(&hash).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_TOKEN,
            "session expired or unknown",
        ))
    }
}

async fn params(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.params_json.clone(),
    )
        .into_response()
}

async fn trusted_params(
    State(st): State<Arc<AppState>>,
    Path(domain): Path<String>,
) -> Result<Response, ApiError> {
    let domain = domain.to_ascii_lowercase();
    match st.store.trusted_get(&domain).await? {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no trusted parameters for that domain",
        )),
    }
}

/// The periods a client may ask for at `now`: previous, current, next.
pub fn period_window(now: i64) -> Vec<Period> {
    let cur = Period::month_at(now.max(0) as u64);
    let mut w = vec![cur.clone()];
    if let Ok(p) = cur.previous_month() {
        w.push(p);
    }
    if let Ok(n) = cur.next_month() {
        w.push(n);
    }
    w
}

async fn keys(
    State(st): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeysResponse>, ApiError> {
    let now = now_unix();
    let user = session_user(&st, &headers, now).await?;
    let req: KeysRequest = parse_json(&headers, body)?;
    let record = |identity: String, period: String, outcome: String| AuditRecord {
        at: now,
        user: user.clone(),
        identity,
        period,
        address: addr.to_string(),
        outcome,
    };
    require_enabled(&st, &user).await?;
    let aor = aor_of(&user, st.params.domain()).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "bad account name",
        )
    })?;
    if let Some(asked) = &req.aor {
        let same = Aor::parse(asked).is_ok_and(|a| a == aor);
        if !same {
            let shown: String = asked.chars().take(200).collect();
            let records: Vec<AuditRecord> = req
                .periods
                .iter()
                .take(api::MAX_PERIODS)
                .map(|p| {
                    let p: String = p.chars().take(16).collect();
                    record(format!("{shown}#{p}"), p, "denied:identity".into())
                })
                .collect();
            st.store.audit_all(&records).await?;
            tracing::warn!(%user, %addr, "keys of another identity refused");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::IDENTITY_NOT_ALLOWED,
                "only your own keys are issued",
            ));
        }
    }
    if req.periods.is_empty() || req.periods.len() > api::MAX_PERIODS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_PERIOD,
            "ask for 1 to 3 periods",
        ));
    }
    let mut periods = Vec::with_capacity(req.periods.len());
    for p in &req.periods {
        let p = Period::month(p).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_PERIOD, e.to_string())
        })?;
        if periods.contains(&p) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_PERIOD,
                format!("period {p} asked twice"),
            ));
        }
        periods.push(p);
    }
    let window = period_window(now);
    if let Some(bad) = periods.iter().find(|p| !window.contains(p)) {
        let id = Identity::new(aor.clone(), bad.clone());
        st.store
            .audit(&record(
                id.as_str().into(),
                bad.as_str().into(),
                "denied:period".into(),
            ))
            .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::PERIOD_NOT_ALLOWED,
            format!("period {bad} is outside previous/current/next"),
        ));
    }
    let identities: Vec<Identity> = periods
        .iter()
        .map(|p| Identity::new(aor.clone(), p.clone()))
        .collect();
    let st2 = st.clone();
    let ids = identities.clone();
    let issued = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| extract(&st2.msk, id))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "extraction failed",
        )
    })?;
    // Audited before the keys leave, in one transaction: no record, no
    // keys.
    let records: Vec<AuditRecord> = identities
        .iter()
        .map(|id| {
            record(
                id.as_str().into(),
                id.period().as_str().into(),
                "issued".into(),
            )
        })
        .collect();
    st.store.audit_all(&records).await?;
    st.metrics.keys_issued.inc_by(issued.len() as u64);
    tracing::info!(%user, %addr, count = issued.len(), "keys issued");
    Ok(Json(KeysResponse {
        aor: aor.as_str().to_string(),
        keys: issued
            .iter()
            .map(|k| KeyEntry {
                period: k.identity().period().as_str().to_string(),
                d_enc: SecretString::new(b64_encode(&k.d_enc_bytes()[..])),
                d_sig: SecretString::new(b64_encode(&k.d_sig_bytes()[..])),
            })
            .collect(),
        index: st.threshold_index,
    }))
}

/// `POST /v1/sip-credentials`: a fresh random digest credential for the
/// caller's device. The user name is the account name (the registrar
/// accepts any live credential of the account); only the HA1s are kept.
async fn sip_credentials(
    State(st): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<api::SipCredentialsResponse>, ApiError> {
    let now = now_unix();
    let user = session_user(&st, &headers, now).await?;
    let req: api::SipCredentialsRequest = parse_json(&headers, body)?;
    if !api::valid_device_name(&req.device) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_DEVICE,
            "device name: 1-64 characters of A-Z a-z 0-9 . _ + -",
        ));
    }
    require_enabled(&st, &user).await?;
    let raw: zeroize::Zeroizing<[u8; 16]> =
        zeroize::Zeroizing::new(ibephone::pkg_client::seal::random_bytes().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "no randomness",
            )
        })?);
    let password = SecretString::new(b64_encode(&raw[..]));
    let (md5, sha) = crate::password::digest_ha1s(&user, st.params.domain(), password.expose());
    match st
        .store
        .sip_credential_put(&user, &req.device, &md5, &sha, now)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::TOO_MANY_DEVICES,
                format!(
                    "at most {} devices; ask the administrator to revoke one",
                    crate::store::MAX_DEVICES
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = &st.sip_users {
        if let Err(e) = dir.reload_user(&st.store, &user).await {
            tracing::warn!(error = %e, "registrar reload after a new credential failed");
        }
    }
    tracing::info!(%user, device = %req.device, %addr, "SIP credential issued");
    Ok(Json(api::SipCredentialsResponse {
        username: user,
        password,
        device: req.device,
    }))
}

/// `403 account_disabled` unless `user` exists and is enabled (a session
/// outlives neither, but the check is made at each issuance).
async fn require_enabled(st: &AppState, user: &str) -> Result<(), ApiError> {
    match st.store.user_get(user).await? {
        Some(u) if u.enabled => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::ACCOUNT_DISABLED,
            "account disabled",
        )),
    }
}

/// `POST /v1/turn-credentials`: REST credentials for the session's user
/// (enabled accounts only); `404` when this provider runs no relay.
async fn turn_credentials(
    State(st): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<Json<api::TurnCredentialsResponse>, ApiError> {
    let now = now_unix();
    let user = session_user(&st, &headers, now).await?;
    let Some(issuer) = &st.turn else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "this provider runs no TURN relay",
        ));
    };
    require_enabled(&st, &user).await?;
    let (username, password) = issuer.issue(&user, now.max(0) as u64);
    st.metrics.turn_credentials.inc();
    tracing::info!(%user, %addr, "TURN credentials issued");
    Ok(Json(api::TurnCredentialsResponse {
        username,
        password: SecretString::new(password.to_string()),
        ttl: issuer.ttl,
        uris: issuer.uris.clone(),
    }))
}

async fn health(State(st): State<Arc<AppState>>) -> (StatusCode, Json<HealthResponse>) {
    if st.store.ping().await {
        (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ok".into(),
                database: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "unavailable".into(),
                database: "unreachable".into(),
            }),
        )
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_window() {
        assert!(valid_user_name("alice.b+1"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("a b"));
        assert!(!valid_user_name("a@b"));
        assert!(!valid_user_name(&"a".repeat(65)));
        // 2026-11-22T00:00:00Z
        let w: Vec<String> = period_window(1_795_305_600)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(w, ["2026-11", "2026-10", "2026-12"]);
    }
}
