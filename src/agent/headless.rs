//! Running an agent: the thin tokio driver around [`Agent`], and the
//! headless mode (`ibephone agent --config FILE`) that speaks JSON lines:
//! one [`AgentCommand`] per line on stdin, one [`AgentEvent`] per line on
//! stdout. At the end of stdin the agent unregisters and exits.

use super::config::AgentConfig;
use super::filter::{SecurityLog, SecurityPolicy, TunnelFilter};
use super::key_inbox::KeyInbox;
use super::media::MediaPolicy;
use super::media_io::{ports_for, MediaDriver, MediaOptions};
use super::{Agent, AgentCommand, AgentEvent};
use crate::ibe::MediaKeysPolicy as ProviderMediaKeys;
use crate::media::sdp::{MediaKeysPolicy, SecurityPolicy as MediaSecurityPolicy};
use crate::sip::digest::Password;
use crate::sip::driver;
use crate::sip::timers::Timers;
use crate::sip::ua::{HeaderPolicy, KeepAlive, NetWatch, UaConfig, UserAgent};
use crate::sip::Transport;
use crate::tunnel::{Tunnel, TunnelConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// Why an agent could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// Our SIP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The keys do not fit the configuration.
    #[error("keys refused: {0}")]
    Keys(String),
    /// The key log asked for cannot be written.
    #[error(transparent)]
    KeyLog(#[from] super::keylog::KeyLogFileError),
    /// TLS towards the SIP proxy cannot be set up.
    #[error("SIP over TLS: {0}")]
    Tls(#[from] super::sip_tls::SipTlsError),
}

/// Options of an agent beyond its configuration file; the defaults are
/// the sound devices and no key log.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Media choices (audio files or devices, codecs, RTP address).
    pub media: MediaOptions,
    /// Debugging only: append every tunnel key used to this file
    /// (`--keylog`, see [`super::keylog`]); anyone reading it can decrypt
    /// the calls.
    pub keylog: Option<std::path::PathBuf>,
    /// Where renewed keys arrive while the agent runs (see
    /// [`super::key_inbox`]); none: the agent keeps its start-up keys.
    pub key_inbox: Option<KeyInbox>,
    /// Where the retained secrets of key continuity (spec 6) are sealed;
    /// none: kept in memory while the agent runs.
    pub retained: Option<super::retained::RetainedFiles>,
    /// Told each certificate the SIP proxy's TLS connection refused for
    /// not being the pin (the window offers its re-check, see
    /// `ui::backend`); none: the refusal is only the connection's error.
    pub pin_refusals: Option<crate::pkg_client::tls::PinRefusals>,
}

/// A running agent: send commands, receive events.
pub struct RunningAgent {
    /// Commands to the agent.
    pub commands: mpsc::Sender<AgentCommand>,
    /// Events from the agent.
    pub events: mpsc::Receiver<AgentEvent>,
    /// The SIP address it listens on.
    pub local: SocketAddr,
}

/// Builds the agent of `config` and runs it on the current tokio runtime,
/// with media on the default sound devices ([`MediaOptions::default`]).
pub async fn start(config: AgentConfig) -> Result<RunningAgent, StartError> {
    start_with(config, StartOptions::default()).await
}

/// The media policy of `config`: SRTP is required unless the security
/// policy lets plain peers in; `a=ibesip-dh` is sent unless our provider's
/// parameters say `provider-recoverable`.
pub fn media_policy(config: &AgentConfig, options: &MediaOptions) -> MediaPolicy {
    MediaPolicy {
        codecs: options.codecs.clone(),
        security: match config.policy {
            SecurityPolicy::Require => MediaSecurityPolicy::Require,
            SecurityPolicy::Ask | SecurityPolicy::AllowPlain => MediaSecurityPolicy::AllowPlain,
        },
        media_keys: match config.params.media_keys() {
            ProviderMediaKeys::EscrowResistant => MediaKeysPolicy::EscrowResistant,
            ProviderMediaKeys::ProviderRecoverable => MediaKeysPolicy::ProviderRecoverable,
        },
        ..MediaPolicy::default()
    }
}

/// [`start`] with the media choices of `options` (audio files or devices,
/// codecs, RTP address) and the other options off.
pub async fn start_with_media(
    config: AgentConfig,
    media: MediaOptions,
) -> Result<RunningAgent, StartError> {
    start_with(
        config,
        StartOptions {
            media,
            ..StartOptions::default()
        },
    )
    .await
}

/// [`start`] with every option of `options`.
pub async fn start_with(
    config: AgentConfig,
    options: StartOptions,
) -> Result<RunningAgent, StartError> {
    let mut tunnel = Tunnel::new(
        config.aor.clone(),
        TunnelConfig {
            privacy: config.privacy,
            ..TunnelConfig::default()
        },
    );
    tunnel.add_params(config.params.clone());
    for p in &config.trusted {
        tunnel.add_params(p.clone());
    }
    for k in &config.keys {
        tunnel
            .add_keys(k)
            .map_err(|e| StartError::Keys(e.to_string()))?;
    }
    if let Some(path) = &options.keylog {
        tunnel.set_key_log(Box::new(super::keylog::FileKeyLog::open(path)?));
        tracing::warn!(path = %path.display(), "key log on: every call key is written to this file");
    }
    let (udp, bound, tcp) = bind_sip(config.listen).await?;
    let local = advertised_addr(bound, config.proxy);
    let log = Arc::new(Mutex::new(SecurityLog::default()));
    let mut filter = TunnelFilter::new(tunnel, config.policy, log.clone());
    if let Some(inbox) = &options.key_inbox {
        filter = filter.with_key_inbox(inbox.clone());
    }
    let mut ua = UserAgent::new(
        UaConfig {
            user: config.aor.user().to_string(),
            domain: config.aor.host().to_string(),
            password: Password::new(config.password.as_str()),
            proxy: config.proxy,
            local: local.to_string(),
            transport: config.sip.transport,
            expires: config.sip.expires,
            // The tunnel writes the anonymous outer From; the inner one is true.
            headers: HeaderPolicy {
                anonymous_from: false,
                ..HeaderPolicy::default()
            },
            timers: Timers::default(),
            max_transactions: 512,
        },
        Box::new(filter),
    );
    // The rest of the proxy's list: moved on to when the proxy stops
    // answering (RFC 3263 4.3).
    ua.set_fallback_proxies(config.sip.fallback.clone());
    ua.set_keepalive(config.sip.keepalive.map(|interval| KeepAlive {
        interval,
        pong_timeout: config.sip.pong_timeout,
    }));
    // `local`: the route's address for a wildcard bind, else the bound one.
    ua.set_net_watch(
        config
            .sip
            .network_check
            .map(|every| NetWatch::new(bound, Some(local.ip()), every)),
    );
    let agent = Agent::new(ua, log, config.aor.host()).with_policy(config.policy);
    let (commands, crx) = mpsc::channel(64);
    let (etx, events) = mpsc::channel(256);
    let media = options.media;
    let policy = media_policy(&config, &media);
    let ports = ports_for(bound, config.proxy, &media);
    let mut agent = MediaDriver::new(agent, ports, policy, media, etx.clone());
    if let Some(path) = &options.keylog {
        agent = agent.with_key_log(Box::new(super::keylog::FileKeyLog::open(path)?));
    }
    if let Some(files) = &options.retained {
        // A damaged or unreadable file costs the confirmations, never the
        // agent: the user is told, and continuity starts afresh.
        let warning = match super::retained::SealedRetained::open(&files.path, &files.key_file) {
            Ok((store, warning)) => {
                agent = agent.with_retained(Box::new(store));
                warning.map(|e| e.to_string())
            }
            Err(e) => Some(format!("{e}; confirmed call keys are kept in memory only")),
        };
        if let Some(message) = warning {
            let _ = etx.try_send(AgentEvent::Error { message });
        }
    }
    // A TLS client when the proxy, or one of its fallbacks, takes TLS.
    let tls_anywhere = std::iter::once(config.sip.transport)
        .chain(config.sip.fallback.iter().map(|d| d.transport))
        .find(|t| *t == Transport::Tls);
    let tls_client = match tls_anywhere.unwrap_or(Transport::Udp) {
        Transport::Tls => {
            let key_log: Option<Arc<dyn rustls::KeyLog>> = match &options.keylog {
                Some(path) => Some(Arc::new(super::keylog::TlsKeyLog::open(path)?)),
                None => None,
            };
            let pin = config.sip.tls_pin;
            if pin.is_none() {
                tracing::info!(
                    "no certificate pin: the SIP proxy is checked by the system's trusted roots"
                );
            }
            Some(super::sip_tls::client(
                config.sip.proxy_host.as_deref(),
                config.proxy,
                pin,
                key_log,
                options.pin_refusals.clone(),
            )?)
        }
        Transport::Udp | Transport::Tcp => None,
    };
    let sockets = driver::Sockets {
        udp,
        tcp,
        tls: None,
        tls_client,
    };
    tokio::spawn(async move {
        if let Err(e) = driver::run_with(agent, sockets, crx, etx).await {
            tracing::error!(%e, "agent driver stopped");
        }
    });
    Ok(RunningAgent {
        commands,
        events,
        local,
    })
}

/// The address we name in Via, Contact and SDP for a socket bound to
/// `bound`: itself, unless it is a wildcard address; then the address of
/// the interface that routes towards `proxy` (see `super::route`). That
/// is never 0.0.0.0, and 127.0.0.1 only when the proxy is on loopback.
pub fn advertised_addr(bound: SocketAddr, proxy: SocketAddr) -> SocketAddr {
    super::route::advertised_addr(bound, proxy)
}

/// Binds UDP and TCP on one port. With port 0 a port is tried again when
/// its TCP side is taken: a tunneled INVITE with its SDP is over 1300
/// bytes and arrives over TCP (RFC 3261 18.1.1), so a phone without its
/// TCP listener could not be called.
async fn bind_sip(
    listen: SocketAddr,
) -> Result<(UdpSocket, SocketAddr, Option<TcpListener>), StartError> {
    let err = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let mut tries = if listen.port() == 0 { 8 } else { 1 };
    loop {
        let udp = UdpSocket::bind(listen).await.map_err(err)?;
        let local = udp.local_addr().map_err(err)?;
        tries -= 1;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, local, Some(tcp))),
            Err(_) if tries > 0 => continue,
            Err(_) => return Ok((udp, local, None)),
        }
    }
}

/// Headless mode: JSON lines on stdin and stdout until stdin ends.
pub async fn run_json_lines(config: AgentConfig) -> Result<(), StartError> {
    run_json_lines_with(config, StartOptions::default()).await
}

/// [`run_json_lines`] with the media choices of `media`.
pub async fn run_json_lines_with_media(
    config: AgentConfig,
    media: MediaOptions,
) -> Result<(), StartError> {
    run_json_lines_with(
        config,
        StartOptions {
            media,
            ..StartOptions::default()
        },
    )
    .await
}

/// [`run_json_lines`] with every option of `options`.
pub async fn run_json_lines_with(
    config: AgentConfig,
    options: StartOptions,
) -> Result<(), StartError> {
    let RunningAgent {
        commands,
        mut events,
        ..
    } = start_with(config, options).await?;
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match serde_json::to_string(&e) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("cannot encode event: {err}"),
            }
            if e == AgentEvent::Unregistered {
                return;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AgentCommand>(&line) {
            Ok(cmd) => {
                if commands.send(cmd).await.is_err() {
                    break;
                }
            }
            Err(e) => println!(
                "{}",
                serde_json::to_string(&AgentEvent::Error {
                    message: format!("not a command: {e}"),
                })
                .unwrap_or_default()
            ),
        }
    }
    // End of input: leave the registrar cleanly, but do not hang on it.
    let _ = commands.send(AgentCommand::Unregister).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), printer).await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::advertised_addr;
    use std::net::SocketAddr;

    #[test]
    fn a_wildcard_listen_address_advertises_the_route_to_the_proxy() {
        let any: SocketAddr = "0.0.0.0:5062".parse().unwrap();
        // The proxy on loopback: loopback is the route, the port is ours.
        let proxy: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(
            advertised_addr(any, proxy),
            "127.0.0.1:5062".parse().unwrap()
        );
        let proxy: SocketAddr = "127.0.0.3:5060".parse().unwrap();
        assert_eq!(
            advertised_addr(any, proxy),
            "127.0.0.1:5062".parse().unwrap()
        );
        // An explicit address is kept as it is.
        let bound: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        assert_eq!(advertised_addr(bound, proxy), bound);
        // Never the wildcard itself, in IPv6 either.
        let any6: SocketAddr = "[::]:5062".parse().unwrap();
        let proxy6: SocketAddr = "[::1]:5060".parse().unwrap();
        let got = advertised_addr(any6, proxy6);
        assert!(!got.ip().is_unspecified() || std::net::UdpSocket::bind("[::1]:0").is_err());
    }
}
