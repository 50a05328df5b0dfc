//! The listener: TCP accept, TLS 1.3 handshake (tokio-rustls), HTTP/1.1
//! (hyper) into the axum router, with the client address attached to each
//! request. Written by hand (about 50 lines) because axum's own `serve` has
//! no TLS and `axum-server` would bring another rustls provider setup.

use crate::config::Config;
use crate::http::{router, AppState, ClientAddr};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::vault::{load_params, Vault};
use anyhow::Context;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A started server: where it listens and its certificate fingerprint.
pub struct Started {
    /// The bound address.
    pub addr: SocketAddr,
    /// SHA-256 of the TLS certificate.
    pub fingerprint: [u8; 32],
    /// Whether the certificate was created on this start.
    pub cert_created: bool,
    /// The embedded SIP registrar/proxy, when configured.
    pub sip: Option<crate::sip::SipService>,
    /// The embedded STUN/TURN relay, when `[turn]` is configured with
    /// `embedded = true`.
    pub turn: Option<crate::turn::TurnService>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
}

/// Opens the database, unlocks the master secret, loads (or creates) the
/// certificate and binds the listener; with `sip` (or `[sip] listen`) it
/// also starts the embedded SIP registrar/proxy of the domain.
pub async fn start(
    config: Config,
    listen: Option<String>,
    sip: Option<String>,
) -> anyhow::Result<Started> {
    start_with_tls(config, listen, sip, None).await
}

/// [`start`] with SIP over TLS on `sip_tls` (overriding `[sip] tls` /
/// `tls_listen`), with the PKG's certificate.
pub async fn start_with_tls(
    config: Config,
    listen: Option<String>,
    sip: Option<String>,
    sip_tls: Option<String>,
) -> anyhow::Result<Started> {
    let store = Store::connect(&config.database_url(), config.db_max_connections)
        .await
        .context("opening the database")?;
    let params = load_params(&store).await?;
    let vault = Vault::unlock(&config, &store).await?;
    let msk = vault.load_master(&store, &params).await?;
    let threshold_index = crate::vault::threshold_index(&store).await?;
    let store = store
        .with_ha1_key(vault.ha1_key())
        .with_otp_key(vault.otp_key());
    let own_url = threshold_index
        .and_then(|i| params.threshold()?.server(i))
        .map_or(params.pkg_url(), |s| s.pkg_url.as_str());
    let names = crate::tls::cert_names(Some(own_url));
    let cert_created = crate::tls::ensure_cert(&config.cert_path(), &config.key_path(), &names)?;
    let tls = crate::tls::load(&config.cert_path(), &config.key_path())?;
    let dummy_phc = crate::password::phc_hash("not a password of anyone", &config.argon2)?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let sip = match sip.or_else(|| config.sip.listen.clone()) {
        Some(s) => {
            let addr: SocketAddr = s
                .parse()
                .with_context(|| format!("SIP address {s:?} is not host:port"))?;
            let sip_tls = match sip_tls.or_else(|| config.sip.tls_addr(addr)) {
                Some(t) => Some(ibephone::sip::driver::ProxyTls {
                    listen: t
                        .parse()
                        .with_context(|| format!("SIP TLS address {t:?} is not host:port"))?,
                    config: tls.config.clone(),
                }),
                None => None,
            };
            Some(
                crate::sip::start(
                    store.clone(),
                    params.domain(),
                    addr,
                    config.sip.advertise.clone(),
                    sip_tls,
                    Duration::from_secs(config.sip.user_refresh_secs),
                    config.sip.auth()?,
                )
                .await?,
            )
        }
        None => None,
    };
    let (turn, turn_issuer) = match &config.turn {
        None => (None, None),
        Some(tc) => {
            let secret =
                crate::turn::credentials::SharedSecret::load_or_create(&config.turn_secret_path())?;
            let realm = tc
                .realm
                .clone()
                .unwrap_or_else(|| params.domain().to_string());
            let service = if tc.embedded {
                Some(
                    crate::turn::start(
                        tc,
                        realm,
                        secret.clone(),
                        store.clone(),
                        Some(turn_tls_config(&tls.config)),
                        Duration::from_secs(config.sip.user_refresh_secs),
                    )
                    .await?,
                )
            } else {
                None
            };
            let uris = match (&service, tc.uris.is_empty()) {
                (Some(s), true) => crate::turn::default_uris(
                    tc,
                    crate::turn::relay_ip(tc, s.udp)?,
                    s.udp.port(),
                    s.tls.map(|a| a.port()),
                ),
                (None, true) => {
                    anyhow::bail!("[turn] uris is required with embedded = false")
                }
                _ => tc.uris.clone(),
            };
            let issuer = crate::turn::Issuer {
                secret,
                ttl: tc.ttl_secs.max(1),
                uris,
            };
            (service, Some(issuer))
        }
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let services = match (&config.turn, &turn_issuer) {
        (Some(tc), Some(issuer)) if tc.announce => {
            crate::turn::announced_services(&config.services, &issuer.uris)
        }
        _ => config.services.clone(),
    };
    let params_json = served_params(&params, &services)?;
    let state = Arc::new(AppState {
        store,
        msk,
        threshold_index,
        params_json,
        params,
        metrics: Metrics::new(),
        argon_permits: tokio::sync::Semaphore::new(cores),
        argon_memory: crate::password::ArgonMemory::default(),
        dummy_phc,
        sip_users: sip.as_ref().map(|s| s.users.clone()),
        turn: turn_issuer,
        config,
    });
    Ok(Started {
        addr,
        fingerprint: tls.fingerprint,
        cert_created,
        sip,
        turn,
        listener,
        tls: tls.config,
        state,
    })
}

impl Started {
    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        // Keeps the SIP service alive as long as the HTTPS one.
        let _sip = self.sip;
        let _turn = self.turn;
        let acceptor = TlsAcceptor::from(self.tls);
        let app = router(self.state.clone());
        let purge_state = self.state.clone();
        let purge = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let s = &purge_state.config.session;
                let _ = purge_state
                    .store
                    .sessions_purge(
                        crate::http::now_unix(),
                        s.idle_secs as i64,
                        s.absolute_secs as i64,
                    )
                    .await;
            }
        });
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer.ip()));
                    app.clone().oneshot(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
        purge.abort();
    }
}

/// The parameter document as served: the fingerprinted members plus
/// `services` when the configuration lists any (a member the client's
/// parameter parser ignores; it is trusted for the pinned TLS connection).
pub fn served_params(
    params: &ibephone::ibe::PublicParams,
    services: &ibephone::pkg_client::api::Services,
) -> anyhow::Result<String> {
    let json = params.to_json();
    if services.is_empty() {
        return Ok(json);
    }
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json)?;
    doc.insert("services".into(), serde_json::to_value(services)?);
    Ok(serde_json::Value::Object(doc).to_string())
}

/// The PKG's TLS configuration for `turns:`: the same certificate, no
/// HTTP ALPN (a TURN client offers `stun.turn` or nothing).
fn turn_tls_config(https: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut c = (**https).clone();
    c.alpn_protocols.clear();
    Arc::new(c)
}
