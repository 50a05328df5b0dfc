//! The phone's PKG client: login, logout, parameters and key fetch over
//! HTTPS (HTTP/1.1, TLS 1.3) with a pinned certificate. Every received key
//! is checked with [`check_key`] before it is returned.
//!
//! A client keeps its last connection open (HTTP/1.1 keep-alive) and sends
//! its next request on it, so that a login, a key fetch and a logout cost
//! one TCP and TLS handshake, not three. The pin is checked in that one
//! handshake; a kept connection is the same authenticated TLS session and
//! is only ever used by the client (and its clones) that opened it. A
//! connection the server closed meanwhile is replaced by a new one, and a
//! request it never carried is sent again on the new one.

use super::api::{self, ErrorBody, KeysRequest, KeysResponse, LoginRequest, LoginResponse};
use super::tls::{client_config, provider, PinnedVerifier};
use super::PkgClientError;
use crate::ibe::encoding::b64_decode;
use crate::ibe::{check_key, Aor, Identity, Period, PrivateKeys, PublicParams};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body the client reads.
const MAX_RESPONSE: usize = 256 * 1024;
/// Time limit of one request (connect, handshake, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A logged-in session: the bearer token (secret) and the account's AOR.
#[derive(Debug, Clone)]
pub struct Session {
    /// Bearer token.
    pub token: api::SecretString,
    /// The account's canonical AOR.
    pub aor: Aor,
    /// Idle timeout announced by the server, seconds.
    pub expires_in: u64,
}

/// A client of one PKG (`https://host[:port]`). Clones share the kept
/// connection (see the module's doc).
#[derive(Clone)]
pub struct PkgClient {
    host: String,
    port: u16,
    /// Addresses to connect to instead of resolving `host` (discovery
    /// resolved it already, maybe through another nameserver).
    addrs: Vec<std::net::SocketAddr>,
    verifier: Arc<PinnedVerifier>,
    connector: TlsConnector,
    /// The connection kept open for the next request (none while a
    /// request uses it, or before the first).
    idle: Arc<std::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

impl std::fmt::Debug for PkgClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkgClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl PkgClient {
    /// A client for `base_url` (`https://host[:port]`, path ignored) that
    /// accepts only the certificate with SHA-256 fingerprint `pin`; `None`
    /// trusts the first certificate seen (read it back with
    /// [`PkgClient::pinned_fingerprint`] to show and record it).
    pub fn new(base_url: &str, pin: Option<[u8; 32]>) -> Result<Self, PkgClientError> {
        Self::with_verifier(base_url, PinnedVerifier::new(pin, provider()))
    }

    /// A client for `base_url` that accepts only a certificate chaining to
    /// `roots` for the URL's host name (pkg-api.md "Discovery", item 1;
    /// the phone passes the platform's roots). The certificate accepted is
    /// then [`PkgClient::pinned_fingerprint`]; nothing is trusted on first
    /// use.
    pub fn with_roots(
        base_url: &str,
        roots: Arc<rustls::RootCertStore>,
    ) -> Result<Self, PkgClientError> {
        let verifier = PinnedVerifier::platform(roots, provider())
            .map_err(|e| PkgClientError::Tls(e.to_string()))?;
        Self::with_verifier(base_url, verifier)
    }

    /// Whether this client checks the certificate by trusted roots
    /// ([`PkgClient::with_roots`]) rather than by a pin.
    pub fn checks_roots(&self) -> bool {
        self.verifier.checks_roots()
    }

    fn with_verifier(base_url: &str, verifier: PinnedVerifier) -> Result<Self, PkgClientError> {
        let (host, port) = parse_https_url(base_url)?;
        let verifier = Arc::new(verifier);
        let config =
            client_config(verifier.clone()).map_err(|e| PkgClientError::Tls(e.to_string()))?;
        Ok(PkgClient {
            host,
            port,
            addrs: Vec::new(),
            verifier,
            connector: TlsConnector::from(Arc::new(config)),
            idle: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The URL's host (a name, or an address literal in brackets for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same client connecting to `ips` (in order, at the URL's port)
    /// instead of resolving the URL's host; the host still names the
    /// server in TLS.
    pub fn with_addresses(mut self, ips: &[std::net::IpAddr]) -> Self {
        self.addrs = ips
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, self.port))
            .collect();
        // A connection kept for the old addresses is not reused.
        self.idle = Arc::new(std::sync::Mutex::new(None));
        self
    }

    /// The certificate fingerprint in force (the given pin, or the one
    /// trusted on first use), if any.
    pub fn pinned_fingerprint(&self) -> Option<[u8; 32]> {
        self.verifier.pinned()
    }

    /// The fingerprint the server presented last (also after a refusal).
    pub fn last_seen_fingerprint(&self) -> Option<[u8; 32]> {
        self.verifier.last_seen()
    }

    /// `POST /v1/login` with the password alone. An account with a second
    /// factor answers an error for which
    /// [`PkgClientError::is_otp_required`] is true; then ask the user for
    /// the code and call [`PkgClient::login_with_otp`].
    pub async fn login(
        &self,
        user: &str,
        password: &api::SecretString,
    ) -> Result<Session, PkgClientError> {
        self.login_with_otp(user, password, None).await
    }

    /// `POST /v1/login` with the password and, when given, the one-time
    /// code of the account's second factor (pkg-api.md "Second factor at
    /// login").
    pub async fn login_with_otp(
        &self,
        user: &str,
        password: &api::SecretString,
        otp: Option<&api::SecretString>,
    ) -> Result<Session, PkgClientError> {
        let body = serde_json::to_vec(&LoginRequest {
            user: user.to_string(),
            password: password.clone(),
            otp: otp.cloned(),
        })
        .map_err(|e| PkgClientError::Protocol(e.to_string()))?;
        let r: LoginResponse = self
            .json(Method::POST, api::PATH_LOGIN, None, Some(body))
            .await?;
        let aor = Aor::parse(&r.aor)
            .map_err(|e| PkgClientError::Protocol(format!("server sent a bad AOR: {e}")))?;
        Ok(Session {
            token: r.token,
            aor,
            expires_in: r.expires_in,
        })
    }

    /// `POST /v1/logout`.
    pub async fn logout(&self, session: &Session) -> Result<(), PkgClientError> {
        self.request(Method::POST, api::PATH_LOGOUT, Some(&session.token), None)
            .await
            .map(|_| ())
    }

    /// `GET /v1/params`: the provider's parameters.
    pub async fn params(&self) -> Result<PublicParams, PkgClientError> {
        let body = self
            .request(Method::GET, api::PATH_PARAMS, None, None)
            .await?;
        parse_params(&body)
    }

    /// `GET /v1/params` with its `services` member (empty when absent; a
    /// malformed member is a protocol error).
    pub async fn params_and_services(
        &self,
    ) -> Result<(PublicParams, api::Services), PkgClientError> {
        let body = self
            .request(Method::GET, api::PATH_PARAMS, None, None)
            .await?;
        let params = parse_params(&body)?;
        let extra: api::ParamsServices = serde_json::from_slice(&body)
            .map_err(|e| PkgClientError::Protocol(format!("services: {e}")))?;
        Ok((params, extra.services.unwrap_or_default()))
    }

    /// `GET /v1/params/{domain}`: a trusted foreign provider's parameters;
    /// the answer must be for `domain`.
    pub async fn trusted_params(&self, domain: &str) -> Result<PublicParams, PkgClientError> {
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(PkgClientError::Protocol(format!("bad domain {domain:?}")));
        }
        let path = format!("{}/{}", api::PATH_PARAMS, domain.to_ascii_lowercase());
        let body = self.request(Method::GET, &path, None, None).await?;
        let p = parse_params(&body)?;
        if p.domain() != domain.to_ascii_lowercase() {
            return Err(PkgClientError::Protocol(format!(
                "asked for {domain}, got parameters of {}",
                p.domain()
            )));
        }
        Ok(p)
    }

    /// `POST /v1/keys`: the session's keys for `periods`, each checked
    /// against `params` (a key that fails the check is an error, never
    /// returned).
    pub async fn fetch_keys(
        &self,
        session: &Session,
        params: &PublicParams,
        periods: &[Period],
    ) -> Result<Vec<PrivateKeys>, PkgClientError> {
        let body = serde_json::to_vec(&KeysRequest {
            periods: periods.iter().map(|p| p.as_str().to_string()).collect(),
            aor: None,
        })
        .map_err(|e| PkgClientError::Protocol(e.to_string()))?;
        let r: KeysResponse = self
            .json(
                Method::POST,
                api::PATH_KEYS,
                Some(&session.token),
                Some(body),
            )
            .await?;
        if r.aor != session.aor.as_str() {
            return Err(PkgClientError::Protocol(format!(
                "keys are for {}, not {}",
                r.aor, session.aor
            )));
        }
        keys_from_entries(&session.aor, params, &r.keys, periods)
    }

    /// `POST /v1/keys` without decoding or checking the answer (for load
    /// tests and tools); a phone uses [`PkgClient::fetch_keys`].
    pub async fn fetch_key_entries(
        &self,
        session: &Session,
        periods: &[Period],
    ) -> Result<KeysResponse, PkgClientError> {
        let body = serde_json::to_vec(&KeysRequest {
            periods: periods.iter().map(|p| p.as_str().to_string()).collect(),
            aor: None,
        })
        .map_err(|e| PkgClientError::Protocol(e.to_string()))?;
        self.json(
            Method::POST,
            api::PATH_KEYS,
            Some(&session.token),
            Some(body),
        )
        .await
    }

    /// `POST /v1/sip-credentials`: a fresh SIP digest credential of the
    /// session's account for `device` (replacing that device's earlier
    /// one). The answer must name the same device and carry a password of
    /// 16 random bytes in base64url; anything else is a protocol error.
    pub async fn sip_credentials(
        &self,
        session: &Session,
        device: &str,
    ) -> Result<api::SipCredentialsResponse, PkgClientError> {
        if !api::valid_device_name(device) {
            return Err(PkgClientError::Protocol(format!(
                "bad device name {device:?}"
            )));
        }
        let body = serde_json::to_vec(&api::SipCredentialsRequest {
            device: device.to_string(),
        })
        .map_err(|e| PkgClientError::Protocol(e.to_string()))?;
        let r: api::SipCredentialsResponse = self
            .json(
                Method::POST,
                api::PATH_SIP_CREDENTIALS,
                Some(&session.token),
                Some(body),
            )
            .await?;
        check_sip_credential(&r, device)?;
        Ok(r)
    }

    /// `POST /v1/turn-credentials`: short-lived relay credentials for the
    /// session's user, checked ([`super::turn::TurnCredentials::from_response`])
    /// against the wall clock. A provider without a relay gives
    /// [`PkgClientError::NotOffered`].
    pub async fn turn_credentials(
        &self,
        session: &Session,
    ) -> Result<super::turn::TurnCredentials, PkgClientError> {
        let r: api::TurnCredentialsResponse = match self
            .json(
                Method::POST,
                api::PATH_TURN_CREDENTIALS,
                Some(&session.token),
                None,
            )
            .await
        {
            Err(PkgClientError::Server { status: 404, .. }) => {
                return Err(PkgClientError::NotOffered("TURN relay"))
            }
            other => other?,
        };
        Ok(super::turn::TurnCredentials::from_response(
            r,
            std::time::SystemTime::now(),
        )?)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<api::HealthResponse, PkgClientError> {
        self.json(Method::GET, api::PATH_HEALTH, None, None).await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&api::SecretString>,
        body: Option<Vec<u8>>,
    ) -> Result<T, PkgClientError> {
        let bytes = self.request(method, path, token, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PkgClientError::Protocol(format!("bad answer to {path}: {e}")))
    }

    /// One request (on the kept connection, else a new one); non-2xx
    /// answers become errors.
    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&api::SecretString>,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, PkgClientError> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.request_inner(method, path, token, body),
        )
        .await
        .map_err(|_| PkgClientError::Io("request timed out".into()))?
    }

    /// The kept connection when it is still open, else none.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut slot = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().filter(|s| !s.is_closed())
    }

    /// Keeps `sender` for the next request (replacing any other).
    fn keep(&self, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_closed() {
            *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        }
    }

    /// A new connection: TCP, then TLS checked by the pin (or the roots),
    /// then HTTP/1.1; its driver runs in a task that ends with the
    /// connection (when the server closes it or every sender is dropped).
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PkgClientError> {
        let tcp = if self.addrs.is_empty() {
            TcpStream::connect((self.host.trim_matches(['[', ']']), self.port)).await
        } else {
            TcpStream::connect(&self.addrs[..]).await
        }
        .map_err(|e| PkgClientError::Io(format!("connect to {}:{}: {e}", self.host, self.port)))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.trim_matches(['[', ']']).to_string())
            .map_err(|e| PkgClientError::Protocol(format!("bad host name: {e}")))?;
        let tls = match self.connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => {
                let seen = self.verifier.last_seen();
                let pinned = self.verifier.pinned();
                if let (Some(seen), Some(pinned), false) =
                    (seen, pinned, self.verifier.checks_roots())
                {
                    if seen != pinned {
                        return Err(PkgClientError::PinMismatch {
                            pinned: super::tls::fingerprint_hex(&pinned),
                            presented: super::tls::fingerprint_hex(&seen),
                        });
                    }
                }
                return Err(PkgClientError::Tls(e.to_string()));
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| PkgClientError::Io(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        token: Option<&api::SecretString>,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, PkgClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(t) = token {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", t.expose()),
            );
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| PkgClientError::Protocol(e.to_string()))?;
        let (mut sender, resp) = match self.take_idle() {
            Some(mut kept) => match kept.try_send_request(req).await {
                Ok(resp) => (kept, resp),
                // The server closed the kept connection before the
                // request went out: the same request on a new one.
                Err(mut e) => match e.take_message() {
                    Some(req) => {
                        let mut fresh = self.connect().await?;
                        let resp = fresh
                            .send_request(req)
                            .await
                            .map_err(|e| PkgClientError::Io(e.to_string()))?;
                        (fresh, resp)
                    }
                    None => return Err(PkgClientError::Io(e.into_error().to_string())),
                },
            },
            None => {
                let mut fresh = self.connect().await?;
                let resp = fresh
                    .send_request(req)
                    .await
                    .map_err(|e| PkgClientError::Io(e.to_string()))?;
                (fresh, resp)
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| PkgClientError::Io(format!("reading answer: {e}")))?
            .to_bytes();
        // The whole answer is read: the connection may carry the next.
        if sender.ready().await.is_ok() {
            self.keep(sender);
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
            error: "unknown".into(),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(PkgClientError::Throttled {
                retry_after_secs: retry_after.unwrap_or(1),
            });
        }
        Err(PkgClientError::Server {
            status: status.as_u16(),
            code: err.error,
            message: err.message,
        })
    }
}

/// Checks a credential answer: same device, a plausible user name, and a
/// password that decodes to 16 bytes.
fn check_sip_credential(
    r: &api::SipCredentialsResponse,
    device: &str,
) -> Result<(), PkgClientError> {
    if r.device != device {
        return Err(PkgClientError::Protocol(format!(
            "asked a credential for device {device}, got one for {}",
            r.device
        )));
    }
    let name_ok = !r.username.is_empty()
        && r.username.len() <= 130
        && r.username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if !name_ok {
        return Err(PkgClientError::Protocol("bad SIP user name".into()));
    }
    let decoded = b64_decode("SIP password", r.password.expose()).map(zeroize::Zeroizing::new);
    match decoded {
        Ok(b) if b.len() == 16 => Ok(()),
        _ => Err(PkgClientError::Protocol(
            "SIP password is not base64url of 16 bytes".into(),
        )),
    }
}

fn parse_params(body: &[u8]) -> Result<PublicParams, PkgClientError> {
    let s = std::str::from_utf8(body)
        .map_err(|_| PkgClientError::Protocol("parameters are not UTF-8".into()))?;
    Ok(PublicParams::from_json(s)?)
}

/// Decodes and checks key entries for `aor`; exactly the `periods` asked
/// for must be present.
pub(crate) fn keys_from_entries(
    aor: &Aor,
    params: &PublicParams,
    entries: &[api::KeyEntry],
    periods: &[Period],
) -> Result<Vec<PrivateKeys>, PkgClientError> {
    if aor.host() != params.domain() {
        return Err(PkgClientError::Protocol(format!(
            "{aor} is not in the parameters' domain {}",
            params.domain()
        )));
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let period = Period::month(&e.period)?;
        if !periods.is_empty() && !periods.contains(&period) {
            return Err(PkgClientError::Protocol(format!(
                "unrequested period {period}"
            )));
        }
        let d_enc = zeroize::Zeroizing::new(b64_decode("d_enc", e.d_enc.expose())?);
        let d_sig = zeroize::Zeroizing::new(b64_decode("d_sig", e.d_sig.expose())?);
        let keys = PrivateKeys::from_bytes(Identity::new(aor.clone(), period), &d_enc, &d_sig)?;
        check_key(params, &keys)?;
        out.push(keys);
    }
    if !periods.is_empty() && out.len() != periods.len() {
        return Err(PkgClientError::Protocol(format!(
            "asked for {} periods, got {}",
            periods.len(),
            out.len()
        )));
    }
    Ok(out)
}

/// `https://host[:port][/...]` to host and port (443 by default).
fn parse_https_url(url: &str) -> Result<(String, u16), PkgClientError> {
    let bad = || PkgClientError::Protocol(format!("not an https:// URL: {url:?}"));
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or_else(bad)?;
        let host = format!("[{}]", &v6[..close]);
        match &v6[close + 1..] {
            "" => (host, 443),
            p => (
                host,
                p.strip_prefix(':')
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?,
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (authority.to_string(), 443),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{extract, setup};

    #[test]
    fn urls() {
        assert_eq!(
            parse_https_url("https://pkg.example.com").unwrap(),
            ("pkg.example.com".into(), 443)
        );
        assert_eq!(
            parse_https_url("https://127.0.0.1:8443/x").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            parse_https_url("https://[::1]:9").unwrap(),
            ("[::1]".into(), 9)
        );
        assert!(parse_https_url("http://a").is_err());
        assert!(parse_https_url("https://a:x").is_err());
        assert!(parse_https_url("https://").is_err());
    }

    #[test]
    fn entries_are_checked() {
        let (msk, params) = setup("biloxi.invalid", "https://pkg.biloxi.invalid").unwrap();
        let (other, _) = setup("biloxi.invalid", "https://pkg.biloxi.invalid").unwrap();
        let aor = Aor::parse("sip:bob@biloxi.invalid").unwrap();
        let p = Period::month("2026-11").unwrap();
        let entry = |m| {
            let k = extract(m, &Identity::new(aor.clone(), p.clone()));
            api::KeyEntry {
                period: p.as_str().into(),
                d_enc: api::SecretString::new(crate::ibe::encoding::b64_encode(
                    &k.d_enc_bytes()[..],
                )),
                d_sig: api::SecretString::new(crate::ibe::encoding::b64_encode(
                    &k.d_sig_bytes()[..],
                )),
            }
        };
        assert_eq!(
            keys_from_entries(&aor, &params, &[entry(&msk)], std::slice::from_ref(&p))
                .unwrap()
                .len(),
            1
        );
        assert!(
            keys_from_entries(&aor, &params, &[entry(&other)], std::slice::from_ref(&p)).is_err()
        );
        let q = Period::month("2026-12").unwrap();
        assert!(keys_from_entries(&aor, &params, &[entry(&msk)], &[q]).is_err());
    }
}
