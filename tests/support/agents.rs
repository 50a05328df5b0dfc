//! In-process agents for the tests: a provider's domain with a fresh
//! master secret ([`TestDomain`]), agent configurations built from it
//! ([`ConfigBuilder`]), waiting for an agent's events ([`Wait`],
//! [`wait_event`]) and the steps every call test takes (register, dial,
//! answer, hang up).
//!
//! Self-contained (ibephone, tokio, zeroize and std only):
//! `pkg-server/tests` include this file with `#[path]` as well, so the
//! two packages share one copy.
#![allow(dead_code)]

use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::RunningAgent;
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PrivateKeys, PublicParams};
use ibephone::sip::driver;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The key period of today (UTC).
pub fn current_period() -> Period {
    Period::month_at(unix_now())
}

/// The previous and the current key period: the keys an agent holds.
pub fn recent_periods() -> Vec<Period> {
    let current = current_period();
    vec![current.previous_month().expect("a previous month"), current]
}

/// The identity string `sip:user@domain#YYYY-MM` of the current period,
/// as an agent reports a verified peer.
pub fn id_now(user: &str, domain: &str) -> String {
    format!("sip:{user}@{domain}#{}", current_period())
}

/// A provider's domain: a freshly generated master secret and its public
/// parameters (PKG URL on loopback; nothing listens there).
pub struct TestDomain {
    /// The master secret (keys are extracted with it).
    pub msk: MasterSecret,
    /// The domain's public parameters.
    pub params: PublicParams,
}

impl TestDomain {
    /// A new domain `domain` with a random master secret.
    pub fn new(domain: &str) -> Self {
        let msk = MasterSecret::generate().expect("a master secret");
        let params = PublicParams::new(domain, msk.p_pub(), "https://127.0.0.1:8443")
            .expect("valid parameters");
        TestDomain { msk, params }
    }

    /// The domain name.
    pub fn domain(&self) -> &str {
        self.params.domain()
    }

    /// The AOR `sip:user@domain`.
    pub fn aor(&self, user: &str) -> Aor {
        Aor::parse(&format!("sip:{user}@{}", self.domain())).expect("a valid AOR")
    }

    /// The private keys of `user` for `periods`.
    pub fn keys(&self, user: &str, periods: &[Period]) -> Vec<PrivateKeys> {
        let aor = self.aor(user);
        periods
            .iter()
            .map(|p| extract(&self.msk, &Identity::new(aor.clone(), p.clone())))
            .collect()
    }

    /// The embedded registrar/proxy of this domain on a free loopback
    /// port, for `users` with passwords `USER-pw`.
    pub async fn proxy(&self, users: &[&str]) -> driver::ProxyHandle {
        let passwords: Vec<String> = users.iter().map(|u| format!("{u}-pw")).collect();
        let accounts: Vec<(&str, &str)> = users
            .iter()
            .zip(&passwords)
            .map(|(u, p)| (*u, p.as_str()))
            .collect();
        driver::spawn_proxy(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.domain(),
            &accounts,
        )
        .await
        .expect("the proxy starts on loopback")
    }

    /// The configuration of `user` of this domain with outbound proxy
    /// `proxy`: password `USER-pw`, policy `require`, privacy on, keys of
    /// the previous and the current period, a free loopback port. Change
    /// what a test needs with the builder's methods.
    pub fn agent(&self, user: &str, proxy: SocketAddr) -> ConfigBuilder {
        ConfigBuilder::new(self.aor(user), self.params.clone(), proxy)
            .password(&format!("{user}-pw"))
            .keys(self.keys(user, &recent_periods()))
    }
}

/// Builds an [`AgentConfig`]; see [`TestDomain::agent`] for the usual
/// start.
pub struct ConfigBuilder {
    config: AgentConfig,
}

impl ConfigBuilder {
    /// `aor` under `params` via `proxy`: policy `require`, privacy on,
    /// listening on a free loopback port, no password and no keys yet.
    pub fn new(aor: Aor, params: PublicParams, proxy: SocketAddr) -> Self {
        ConfigBuilder {
            config: AgentConfig {
                aor,
                password: zeroize::Zeroizing::new(String::new()),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                proxy,
                policy: SecurityPolicy::Require,
                privacy: true,
                params,
                trusted: vec![],
                keys: vec![],
                sip: ibephone::agent::config::SipSettings::default(),
            },
        }
    }

    /// The digest password.
    pub fn password(mut self, password: &str) -> Self {
        self.config.password = zeroize::Zeroizing::new(password.to_string());
        self
    }

    /// The security policy towards unprotected peers.
    pub fn policy(mut self, policy: SecurityPolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// The private keys (replacing any set before).
    pub fn keys(mut self, keys: Vec<PrivateKeys>) -> Self {
        self.config.keys = keys;
        self
    }

    /// The configuration.
    pub fn build(self) -> AgentConfig {
        self.config
    }
}

/// How to wait for an agent's event: how long, and what else to do with
/// the events passed over on the way (they are listed when the wait
/// fails; `MediaStats` ticks are left out of that list).
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// The time limit of one wait.
    pub within: Duration,
    /// An `Error` event passed over fails the test at once.
    pub errors_fail: bool,
    /// Print every event passed over, prefixed with this name.
    pub echo: Option<&'static str>,
}

impl Default for Wait {
    fn default() -> Self {
        Wait::secs(10)
    }
}

impl Wait {
    /// Waits of up to `secs` seconds, passing other events over silently.
    pub const fn secs(secs: u64) -> Self {
        Wait {
            within: Duration::from_secs(secs),
            errors_fail: false,
            echo: None,
        }
    }

    /// The same waits, failing on an `Error` event passed over.
    pub const fn errors_fail(self) -> Self {
        Wait {
            errors_fail: true,
            ..self
        }
    }

    /// The same waits, printing the events passed over as `name: event`.
    pub const fn echo(self, name: &'static str) -> Self {
        Wait {
            echo: Some(name),
            ..self
        }
    }

    /// The next event of `agent` for which `f` holds; panics naming
    /// `what` when none comes in time or the agent stops.
    pub async fn event(
        self,
        agent: &mut RunningAgent,
        what: &str,
        f: impl Fn(&AgentEvent) -> bool,
    ) -> AgentEvent {
        let deadline = tokio::time::Instant::now() + self.within;
        let mut skipped = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, agent.events.recv()).await {
                Ok(Some(e)) if f(&e) => return e,
                Ok(Some(AgentEvent::Error { message })) if self.errors_fail => {
                    panic!("waiting for {what}: error {message} after {skipped:?}")
                }
                Ok(Some(e)) => {
                    if let Some(name) = self.echo {
                        eprintln!("{name}: {e:?}");
                    }
                    if !matches!(e, AgentEvent::MediaStats { .. }) {
                        skipped.push(e);
                    }
                }
                other => panic!("waiting for {what}: {other:?} after {skipped:?}"),
            }
        }
    }

    /// Sends `Register` and waits for `Registered`.
    pub async fn register(self, agent: &mut RunningAgent) {
        send(agent, AgentCommand::Register).await;
        self.event(agent, "registered", |e| {
            matches!(e, AgentEvent::Registered { .. })
        })
        .await;
    }

    /// `caller` calls `to`; returns the caller's `Calling` and the
    /// `IncomingCall` at `callee`.
    pub async fn dial(
        self,
        caller: &mut RunningAgent,
        callee: &mut RunningAgent,
        to: &str,
    ) -> (AgentEvent, AgentEvent) {
        send(caller, AgentCommand::Call { to: to.into() }).await;
        let calling = self
            .event(caller, "calling", |e| {
                matches!(e, AgentEvent::Calling { .. })
            })
            .await;
        let incoming = self
            .event(callee, "incoming call", |e| {
                matches!(e, AgentEvent::IncomingCall { .. })
            })
            .await;
        (calling, incoming)
    }

    /// `callee` answers its `call`; returns the caller's `Answered`.
    pub async fn answer(
        self,
        callee: &mut RunningAgent,
        caller: &mut RunningAgent,
        call: u64,
    ) -> AgentEvent {
        send(callee, AgentCommand::Answer { call }).await;
        self.event(caller, "answered", |e| {
            matches!(e, AgentEvent::Answered { .. })
        })
        .await
    }

    /// `from` sends the MESSAGE `text` to `to`; returns the
    /// `MessageReceived` at `receiver`.
    pub async fn message(
        self,
        from: &mut RunningAgent,
        receiver: &mut RunningAgent,
        to: &str,
        text: &str,
    ) -> AgentEvent {
        let (to, text) = (to.into(), text.into());
        send(from, AgentCommand::Message { to, text }).await;
        self.event(receiver, "message", |e| {
            matches!(e, AgentEvent::MessageReceived { .. })
        })
        .await
    }

    /// `caller` hangs up its `call`: the callee's call ends with `remote
    /// hangup`, the caller's with `local hangup`.
    pub async fn hang_up(self, caller: &mut RunningAgent, callee: &mut RunningAgent, call: u64) {
        send(caller, AgentCommand::Hangup { call }).await;
        self.event(
            callee,
            "ended",
            |e| matches!(e, AgentEvent::Ended { reason, .. } if reason == "remote hangup"),
        )
        .await;
        self.event(
            caller,
            "ended",
            |e| matches!(e, AgentEvent::Ended { reason, .. } if reason == "local hangup"),
        )
        .await;
    }
}

/// The next event of `agent` for which `f` holds, within 10 s (see
/// [`Wait`] for other limits).
pub async fn wait_event(
    agent: &mut RunningAgent,
    what: &str,
    f: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    Wait::default().event(agent, what, f).await
}

/// Sends `command` to `agent` (which must still run).
pub async fn send(agent: &mut RunningAgent, command: AgentCommand) {
    agent
        .commands
        .send(command)
        .await
        .expect("the agent takes commands");
}

/// Sends `Register` and waits for `Registered`, within 10 s.
pub async fn register(agent: &mut RunningAgent) {
    Wait::default().register(agent).await;
}

/// Sends `Register` and returns how it ended: `Registered` or
/// `RegistrationFailed`, within 10 s.
pub async fn registration_outcome(agent: &mut RunningAgent) -> AgentEvent {
    send(agent, AgentCommand::Register).await;
    wait_event(agent, "registration outcome", |e| {
        matches!(
            e,
            AgentEvent::Registered { .. } | AgentEvent::RegistrationFailed { .. }
        )
    })
    .await
}
