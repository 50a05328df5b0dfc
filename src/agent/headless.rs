//! Running an agent: the thin tokio driver around [`Agent`], and the
//! headless mode (`ibephone agent --config FILE`) that speaks JSON lines:
//! one [`AgentCommand`] per line on stdin, one [`AgentEvent`] per line on
//! stdout. At the end of stdin the agent unregisters and exits.

use super::config::AgentConfig;
use super::filter::{SecurityLog, TunnelFilter};
use super::{Agent, AgentCommand, AgentEvent};
use crate::sip::digest::Password;
use crate::sip::driver;
use crate::sip::timers::Timers;
use crate::sip::ua::{HeaderPolicy, UaConfig, UserAgent};
use crate::sip::Transport;
use crate::tunnel::{Tunnel, TunnelConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
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
}

/// Debugging options of an agent; all off by default.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Append every tunnel key used to this file (`--keylog`, see
    /// [`super::keylog`]); anyone reading it can decrypt the calls.
    pub keylog: Option<std::path::PathBuf>,
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

/// Builds the agent of `config` and runs it on the current tokio runtime.
pub async fn start(config: AgentConfig) -> Result<RunningAgent, StartError> {
    start_with(config, StartOptions::default()).await
}

/// [`start`] with debugging options.
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
    let udp = UdpSocket::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = udp.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let tcp = TcpListener::bind(local).await.ok();
    let log = Arc::new(Mutex::new(SecurityLog::default()));
    let filter = TunnelFilter::new(
        tunnel,
        config.policy,
        log.clone(),
        (Instant::now(), SystemTime::now()),
    );
    let ua = UserAgent::new(
        UaConfig {
            user: config.aor.user().to_string(),
            domain: config.aor.host().to_string(),
            password: Password::new(config.password.as_str()),
            proxy: config.proxy,
            local: local.to_string(),
            transport: Transport::Udp,
            expires: 600,
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
    let agent = Agent::new(ua, log, config.aor.host());
    let (commands, crx) = mpsc::channel(64);
    let (etx, events) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = driver::run(agent, udp, tcp, crx, etx).await {
            tracing::error!(%e, "agent driver stopped");
        }
    });
    Ok(RunningAgent {
        commands,
        events,
        local,
    })
}

/// Headless mode: JSON lines on stdin and stdout until stdin ends.
pub async fn run_json_lines(config: AgentConfig) -> Result<(), StartError> {
    run_json_lines_with(config, StartOptions::default()).await
}

/// [`run_json_lines`] with debugging options.
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
