//! The provider's media relay (`[turn]`): TURN REST credentials for
//! logged-in users ([`credentials`], served as `POST /v1/turn-credentials`)
//! and the embedded STUN/TURN server ([`TurnService`]): UDP and TCP on
//! `listen`, TLS with the PKG's certificate on `tls_listen`.
//!
//! The server is the webrtc-rs `turn` crate's (the same family as the
//! phone's `webrtc-srtp`); this module adds what a provider needs on top
//! (`relay`): allocations only for REST credentials of enabled accounts,
//! quotas per user ([`policy::Quotas`]), and no relaying to loopback,
//! private or other special addresses ([`policy::PeerFilter`]). It runs on
//! its own tokio runtime (`threads` workers), so relayed media never
//! delays the HTTPS or SIP loops, nor they the media.

pub mod credentials;
pub mod policy;
pub(crate) mod relay;
pub(crate) mod stream;

use crate::config::TurnConfig;
use crate::store::Store;
use anyhow::Context;
use credentials::SharedSecret;
use policy::{PeerFilter, Quotas};
use relay::{Accounts, Allocator, GuardedListener, Pending, RestAuth};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `POST /v1/turn-credentials` needs: the secret, the lifetime and
/// the URIs to answer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The shared secret.
    pub secret: SharedSecret,
    /// Lifetime of credentials, seconds.
    pub ttl: u64,
    /// The relays' URIs.
    pub uris: Vec<String>,
}

impl Issuer {
    /// Credentials for `user` issued at Unix time `now`: user name
    /// `now + ttl:user`, its REST password.
    pub fn issue(&self, user: &str, now: u64) -> (String, zeroize::Zeroizing<String>) {
        let username = credentials::username(now.saturating_add(self.ttl), user);
        let password = self.secret.password(&username);
        (username, password)
    }
}

/// A running embedded relay; dropping it stops it (its runtime is shut
/// down in the background).
pub struct TurnService {
    /// UDP address (STUN and TURN).
    pub udp: SocketAddr,
    /// TCP address (the same port as UDP).
    pub tcp: SocketAddr,
    /// TLS address, when `tls_listen` is set.
    pub tls: Option<SocketAddr>,
    /// The quotas in force (for tests and metrics).
    pub quotas: Quotas,
    // Holds the server's command channel open; its tasks run on `runtime`.
    _server: turn::server::Server,
    runtime: Option<tokio::runtime::Runtime>,
    reload: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.reload.abort();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The URIs answered when `[turn] uris` is empty: `turn:` over UDP and TCP
/// at `advertise` (or the relay address and bound port), and `turns:` at
/// the TLS port when there is one.
pub fn default_uris(
    cfg: &TurnConfig,
    relay_ip: IpAddr,
    port: u16,
    tls: Option<u16>,
) -> Vec<String> {
    let host = |p: u16| match &cfg.advertise {
        Some(a) => a.clone(),
        None => SocketAddr::new(relay_ip, p).to_string(),
    };
    let mut v = vec![
        format!("turn:{}?transport=udp", host(port)),
        format!("turn:{}?transport=tcp", host(port)),
    ];
    if let Some(t) = tls {
        let h = match &cfg.advertise {
            Some(a) => format!("{}:{t}", a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h)),
            None => SocketAddr::new(relay_ip, t).to_string(),
        };
        v.push(format!("turns:{h}?transport=tcp"));
    }
    v
}

/// The `services` served in `GET /v1/params` when `[turn]` announces the
/// relay: `configured` (`[services]`), with its `turn` list, when empty,
/// set to the relay's URIs (`uris`, those answered with credentials) and
/// its `stun` list, when empty, to `stun:HOST:PORT` of each UDP `turn:`
/// URI among them (a TURN server answers STUN binding requests on its UDP
/// port, RFC 8656 2.1; embedded or coturn). A member `[services]` lists
/// is kept as it is: an explicit value wins.
pub fn announced_services(
    configured: &ibephone::pkg_client::api::Services,
    uris: &[String],
) -> ibephone::pkg_client::api::Services {
    let mut out = configured.clone();
    if out.turn.is_empty() {
        out.turn = uris.to_vec();
    }
    if out.stun.is_empty() {
        for uri in uris {
            let Some(rest) = uri.strip_prefix("turn:") else {
                continue;
            };
            let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
            let udp = query
                .split('&')
                .all(|p| !p.starts_with("transport=") || p.eq_ignore_ascii_case("transport=udp"));
            let stun = format!("stun:{host}");
            if udp && !host.is_empty() && !out.stun.contains(&stun) {
                out.stun.push(stun);
            }
        }
    }
    out
}

/// The IP written in XOR-RELAYED-ADDRESS: `relay_ip`, else the listen IP
/// unless that is a wildcard.
pub fn relay_ip(cfg: &TurnConfig, listen: SocketAddr) -> anyhow::Result<IpAddr> {
    match cfg.relay_ip {
        Some(ip) => Ok(ip),
        None if listen.ip().is_unspecified() => {
            anyhow::bail!("[turn] relay_ip is required when listen is a wildcard address")
        }
        None => Ok(listen.ip()),
    }
}

async fn enabled_accounts(store: &Store) -> anyhow::Result<HashSet<String>> {
    Ok(store
        .user_list()
        .await?
        .into_iter()
        .filter(|u| u.enabled)
        .map(|u| u.name)
        .collect())
}

/// Starts the embedded relay of `realm` on its own runtime. `tls` is the
/// PKG's certificate for `tls_listen`; `refresh` is how often the enabled
/// accounts are reloaded from `store`.
pub async fn start(
    cfg: &TurnConfig,
    realm: String,
    secret: SharedSecret,
    store: Store,
    tls: Option<Arc<rustls::ServerConfig>>,
    refresh: Duration,
) -> anyhow::Result<TurnService> {
    let listen: SocketAddr = cfg
        .listen
        .parse()
        .with_context(|| format!("[turn] listen {:?} is not host:port", cfg.listen))?;
    let relay_ip = relay_ip(cfg, listen)?;
    let filter = Arc::new(PeerFilter::new(
        &cfg.denied_peer_ips,
        &cfg.allowed_peer_ips,
    )?);
    let quotas = Quotas::new(
        cfg.max_allocations_per_user.max(1),
        cfg.max_allocations.max(1),
        cfg.user_kbps.max(1),
    );
    let accounts = Arc::new(Accounts::default());
    accounts.replace(enabled_accounts(&store).await?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .thread_name("turn")
        .enable_all()
        .build()
        .context("starting the relay's runtime")?;
    let tls_listen: Option<SocketAddr> = match &cfg.tls_listen {
        Some(s) => Some(
            s.parse()
                .with_context(|| format!("[turn] tls_listen {s:?} is not host:port"))?,
        ),
        None => None,
    };
    let auth = Arc::new(RestAuth {
        secret,
        realm: realm.clone(),
        accounts: accounts.clone(),
    });
    let q = quotas.clone();
    let bind_ip = listen.ip();
    let started = runtime.spawn(async move {
        let udp = tokio::net::UdpSocket::bind(listen).await?;
        let udp_addr = udp.local_addr()?;
        // TCP on the same port as UDP.
        let tcp = tokio::net::TcpListener::bind(udp_addr).await?;
        let tcp_addr = tcp.local_addr()?;
        let mut conns: Vec<Arc<dyn webrtc_util::Conn + Send + Sync>> = vec![
            Arc::new(udp),
            Arc::new(stream::StreamListener::new(tcp, None)?),
        ];
        let mut tls_addr = None;
        if let (Some(addr), Some(tls)) = (tls_listen, tls) {
            let l = tokio::net::TcpListener::bind(addr).await?;
            tls_addr = Some(l.local_addr()?);
            conns.push(Arc::new(stream::StreamListener::new(
                l,
                Some(tokio_rustls::TlsAcceptor::from(tls)),
            )?));
        }
        let conn_configs = conns
            .into_iter()
            .map(|inner| {
                let pending = Arc::new(Mutex::new(Pending::default()));
                turn::server::config::ConnConfig {
                    conn: Arc::new(GuardedListener::new(inner, filter.clone(), pending.clone())),
                    relay_addr_generator: Box::new(Allocator {
                        relay_ip,
                        bind_ip,
                        filter: filter.clone(),
                        quotas: q.clone(),
                        pending,
                    }),
                }
            })
            .collect();
        let server = turn::server::Server::new(turn::server::config::ServerConfig {
            conn_configs,
            realm,
            auth_handler: auth,
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("TURN server: {e}"))?;
        Ok::<_, anyhow::Error>((server, udp_addr, tcp_addr, tls_addr))
    });
    let (server, udp, tcp, tls) = started.await.context("relay start-up task")??;
    tracing::info!(%udp, %tcp, tls = ?tls, "STUN/TURN relay listening");
    let refresh = refresh.max(Duration::from_millis(200));
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match enabled_accounts(&store).await {
                Ok(a) => accounts.replace(a),
                Err(e) => {
                    tracing::warn!(error = %e, "reloading TURN accounts failed; keeping the last set")
                }
            }
        }
    });
    Ok(TurnService {
        udp,
        tcp,
        tls,
        quotas,
        _server: server,
        runtime: Some(runtime),
        reload,
    })
}

#[cfg(test)]
mod tests {
    use super::announced_services;
    use ibephone::pkg_client::api::Services;

    fn uris() -> Vec<String> {
        [
            "turn:203.0.113.9:3478?transport=udp",
            "turn:203.0.113.9:3478?transport=tcp",
            "turns:203.0.113.9:5349?transport=tcp",
            "turn:[2001:db8::9]:3478",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_relay_is_announced_for_stun_and_turn_unless_configured() {
        let s = announced_services(&Services::default(), &uris());
        assert_eq!(s.turn, uris());
        assert_eq!(s.stun, ["stun:203.0.113.9:3478", "stun:[2001:db8::9]:3478"]);
        let configured = Services {
            sip: vec!["sips:sip.atlanta.invalid".into()],
            stun: vec!["stun:stun.atlanta.invalid".into()],
            turn: Vec::new(),
        };
        let s = announced_services(&configured, &uris());
        assert_eq!(s.sip, configured.sip);
        assert_eq!(s.stun, configured.stun, "an explicit value wins");
        assert_eq!(s.turn, uris());
        // TCP and TLS URIs only: no STUN to announce.
        let s = announced_services(&Services::default(), &uris()[1..3]);
        assert!(s.stun.is_empty(), "{s:?}");
    }
}
