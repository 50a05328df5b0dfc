//! Everything slow, off the UI thread: the PKG (probe, login, key fetch,
//! renewal) and the agent; the account files it reads and writes are
//! `super::account`'s.
//! The window sends [`Request`]s and polls [`Update`]s; every update
//! wakes it through the [`Waker`] (`ctx.request_repaint()`), so the window
//! never waits on the network.

use super::account::{
    keep_turn, key_periods, key_servers_sentence, load_account, load_key_servers, new_device_name,
    not_used, periods_of, renew_keys, save_account, save_key_servers, stored_turn, wipe,
};
use super::errors::pkg_error;
use super::settings::{AppDirs, Settings};
use super::UiError;
use crate::agent::config::AgentConfig;
use crate::agent::config::PkgSettings;
use crate::agent::headless::{self, RunningAgent, StartOptions};
use crate::agent::key_inbox::KeyInbox;
use crate::agent::keys::KeyError;
use crate::agent::keys::{now_unix, OtpCodes, SINGLE_PKG};
use crate::agent::media_io::{AudioIn, AudioOut, IceOptions, MediaOptions};
use crate::agent::relay::{RelayOutcome, RelayRenewal};
use crate::agent::renewal::{RenewOutcome, Renewal, CHECK_EVERY};
use crate::agent::{AgentCommand, AgentEvent};
use crate::ibe::{Aor, Period, PrivateKeys, PublicParams};
use crate::pkg_client::api::{SecretString, SipCredentialsResponse};
use crate::pkg_client::first_contact::{
    first_contact, recheck_certificate, CertificateCheck, CertificateRenewal, FirstContact,
    FirstTrust,
};
use crate::pkg_client::tls::fingerprint_hex;
use crate::pkg_client::PkgClientError;
use crate::pkg_client::TurnCredentials;
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Wakes the window when an update is waiting (`ctx.request_repaint()`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What the window asks the backend.
#[derive(Debug)]
pub enum Request {
    /// First contact with a provider: find it from the address (unless
    /// `url` is given), report its certificate fingerprint for the user to
    /// confirm and the SIP proxy found (unless `sip_proxy` is given).
    /// Nothing is stored.
    Probe {
        /// The user's address, `alice@atlanta.com`.
        address: String,
        /// The PKG's `https://host:port`; empty: discovered (DNS SRV
        /// `_ibephone-pkg._tcp`, else `https://pkg.<domain>`).
        url: String,
        /// The SIP proxy `ip:port`; empty: discovered (`services.sip`,
        /// else RFC 3263 on the domain).
        sip_proxy: String,
    },
    /// Log in with the confirmed certificate, fetch keys (previous,
    /// current and next period), store them with the pin and the
    /// password, start the agent and register.
    Setup {
        /// The settings to save and run with.
        settings: Settings,
        /// The confirmed certificate fingerprint.
        pin: [u8; 32],
        /// The confirmed parameter fingerprint.
        params_fingerprint: [u8; 32],
        /// The account password.
        password: SecretString,
        /// The one-time codes of the account's second factor, once the
        /// provider asked for them ([`Update::OtpRequired`]): the code
        /// under [`SINGLE_PKG`] for one PKG, under each server's index for
        /// a threshold provider; empty at first.
        otp: OtpCodes,
    },
    /// Start (or restart) the agent from the stored keys, renewing keys
    /// of this and the next period without asking when they are missing.
    StartStored {
        /// The settings to run with.
        settings: Settings,
    },
    /// Check PKG certificates on first contact by these roots instead of
    /// the platform's (pkg-api.md "Discovery", item 1): for a deployment
    /// with its own CA, and for tests with a test CA.
    UseTrustRoots(Arc<RootCertStore>),
    /// The PKG showed a certificate other than the pinned one: ask it
    /// again, accepting only a certificate chaining to the trusted roots
    /// for its host name with the confirmed parameters
    /// ([`recheck_certificate`]); then [`Update::CertificateRenewed`] for
    /// the user to decide, else the refusal stands ([`Update::Failed`]).
    RecheckCertificate,
    /// The SIP proxy's or the TURN relay's TLS connection refused the
    /// certificate `presented` for not being the pin: the PKG is
    /// re-checked as for [`Request::RecheckCertificate`], and its new
    /// certificate is offered only if it is `presented`
    /// ([`crate::pkg_client::first_contact::for_presented`]); otherwise
    /// the refusal is said in the window ([`Update::Failed`]).
    PinRefused {
        /// The certificate the service showed (SHA-256).
        presented: [u8; 32],
    },
    /// The user accepted the renewed certificate `new` in place of `old`:
    /// pin it (only if `old` is still the pin) and restart the phone.
    AcceptCertificate {
        /// The pin the user saw replaced.
        old: [u8; 32],
        /// The certificate accepted.
        new: [u8; 32],
    },
    /// The one-time codes the user typed for a key renewal the provider
    /// asked them for ([`Update::RenewalCodeNeeded`]): tried at once.
    RenewalCodes(OtpCodes),
    /// A command for the running agent.
    Agent(AgentCommand),
    /// Stop the agent and wipe the keys and the stored password.
    LogOut,
}

/// What a provider showed when probed: what the user must confirm before
/// logging in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderProbe {
    /// The URL probed.
    pub url: String,
    /// How its certificate was accepted: by the trusted roots for its
    /// host name (the user confirms the parameter fingerprint) or on first
    /// use (the user confirms the certificate fingerprint). The
    /// certificate seen is the pin stored either way.
    pub trust: FirstTrust,
    /// SHA-256 of its TLS certificate.
    pub cert_fingerprint: [u8; 32],
    /// Fingerprint of its parameters (as shown to people).
    pub params_fingerprint_display: String,
    /// Fingerprint of its parameters.
    pub params_fingerprint: [u8; 32],
    /// The provider's domain.
    pub domain: String,
    /// The SIP proxy found (`ip:port`), when it was not given.
    pub sip_proxy: Option<String>,
}

/// What the backend reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The provider answered a probe.
    Probed(ProviderProbe),
    /// Setup or start-up is at `step` of `of`.
    Progress {
        /// Current step, from 1.
        step: u32,
        /// Number of steps.
        of: u32,
        /// What is happening, for people.
        what: String,
    },
    /// The password was right but the provider asks for the one-time code
    /// of the account's second factor: the wizard asks for it and sends
    /// the same [`Request::Setup`] again with `otp`.
    OtpRequired {
        /// For a threshold provider, the key servers that want a code
        /// (each has its own seed); empty for one PKG.
        servers: Vec<u32>,
    },
    /// A key renewal in the background needs the one-time code(s) of
    /// the account's second factor: the phone keeps running on the keys
    /// it holds and shows a field for them ([`Request::RenewalCodes`]).
    RenewalCodeNeeded {
        /// As in [`Update::OtpRequired`].
        servers: Vec<u32>,
    },
    /// The codes given for a renewal were refused; nothing changed. A
    /// sentence for people.
    RenewalCodeRefused(String),
    /// Which key servers of a threshold provider the keys came from, and
    /// which were not used and why (a sentence for people; also kept for
    /// Settings across restarts).
    KeyServers(String),
    /// Probe, setup or start-up failed; a sentence for people.
    Failed {
        /// What went wrong and what to do.
        message: String,
    },
    /// The agent runs (registration follows as an agent event).
    Ready(ReadyInfo),
    /// Keys were renewed in the background.
    KeysRenewed {
        /// The periods now stored.
        periods: Vec<String>,
    },
    /// An event of the agent.
    Agent(AgentEvent),
    /// Something the user should know that does not stop the phone.
    Notice(String),
    /// The PKG's certificate changed and the trusted roots vouch for the
    /// new one: the user is shown old and new fingerprint and the reason,
    /// and may accept ([`Request::AcceptCertificate`]).
    CertificateRenewed(CertificateRenewal),
    /// Keys and password are wiped; the wizard can start over.
    LoggedOut,
}

/// The facts the window shows once the phone runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// Our canonical AOR.
    pub aor: String,
    /// Our provider's domain.
    pub domain: String,
    /// Periods we hold keys for, sorted.
    pub periods: Vec<String>,
    /// Our provider's parameter fingerprint (as shown to people).
    pub params_fingerprint: String,
    /// The pinned PKG certificate fingerprint (hex).
    pub pkg_fingerprint: Option<String>,
    /// Our SIP address.
    pub local: SocketAddr,
    /// For a threshold provider, which key servers the keys came from
    /// and which were not used, in plain words; `None` for one PKG.
    pub key_servers: Option<String>,
}

/// The window's handle on the backend.
pub struct Backend {
    runtime: Option<tokio::runtime::Runtime>,
    requests: mpsc::UnboundedSender<Request>,
    updates: std::sync::mpsc::Receiver<Update>,
}

impl Backend {
    /// Starts the backend's runtime (two worker threads) for the files of
    /// `dirs`.
    pub fn start(dirs: AppDirs, wake: Waker) -> Result<Self, UiError> {
        Self::start_with_keylog(dirs, wake, None)
    }

    /// As [`Backend::start`]; with `keylog` the agent appends every call key
    /// to that file (debugging only, see [`crate::agent::keylog`]).
    pub fn start_with_keylog(
        dirs: AppDirs,
        wake: Waker,
        keylog: Option<std::path::PathBuf>,
    ) -> Result<Self, UiError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ibephone-backend")
            .enable_all()
            .build()
            .map_err(|e| UiError::Window(format!("cannot start the background runtime: {e}")))?;
        let (requests, rx) = mpsc::unbounded_channel();
        let (tx, updates) = std::sync::mpsc::channel();
        let reporter = Reporter { tx, wake };
        runtime.spawn(worker(dirs, keylog, rx, requests.clone(), reporter));
        Ok(Backend {
            runtime: Some(runtime),
            requests,
            updates,
        })
    }

    /// Queues a request (never blocks).
    pub fn send(&self, r: Request) {
        let _ = self.requests.send(r);
    }

    /// The next waiting update, if any (never blocks).
    pub fn try_recv(&self) -> Option<Update> {
        self.updates.try_recv().ok()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Leave the registrar cleanly, then stop without waiting long.
        let _ = self.requests.send(Request::Agent(AgentCommand::Unregister));
        if let Some(rt) = self.runtime.take() {
            std::thread::sleep(Duration::from_millis(100));
            rt.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

#[derive(Clone)]
struct Reporter {
    tx: std::sync::mpsc::Sender<Update>,
    wake: Waker,
}

impl Reporter {
    fn send(&self, u: Update) {
        let _ = self.tx.send(u);
        (self.wake)();
    }

    fn progress(&self, step: u32, of: u32, what: &str) {
        self.send(Update::Progress {
            step,
            of,
            what: what.into(),
        });
    }

    fn fail(&self, message: String) {
        self.send(Update::Failed { message });
    }
}

/// Why a setup stopped.
enum SetupError {
    /// The provider wants the second factor's code (of these threshold
    /// servers; empty: of the one PKG): ask, then retry.
    OtpRequired(Vec<u32>),
    /// Anything else, as a sentence for people.
    Failed(String),
}

impl From<String> for SetupError {
    fn from(s: String) -> Self {
        SetupError::Failed(s)
    }
}

impl From<&str> for SetupError {
    fn from(s: &str) -> Self {
        SetupError::Failed(s.to_string())
    }
}

struct Worker {
    dirs: AppDirs,
    /// Debugging only: the key log every agent start appends to.
    keylog: Option<std::path::PathBuf>,
    report: Reporter,
    agent: Option<mpsc::Sender<AgentCommand>>,
    /// Keeps the running agent's keys ahead of the calendar.
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// Roots given by [`Request::UseTrustRoots`]; `None`: the platform's.
    roots: Option<Arc<RootCertStore>>,
    /// Keeps the running agent's relay credentials fresh.
    relay: Option<tokio::task::JoinHandle<()>>,
    /// The worker's own queue (the renewer asks for a certificate recheck).
    requests: mpsc::UnboundedSender<Request>,
    /// Hands the user's one-time codes to the running renewer.
    renewal_codes: Option<mpsc::UnboundedSender<OtpCodes>>,
}

async fn worker(
    dirs: AppDirs,
    keylog: Option<std::path::PathBuf>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    requests: mpsc::UnboundedSender<Request>,
    report: Reporter,
) {
    let mut w = Worker {
        dirs,
        keylog,
        report,
        agent: None,
        renewer: None,
        roots: None,
        relay: None,
        requests,
        renewal_codes: None,
    };
    while let Some(r) = rx.recv().await {
        match r {
            Request::Probe {
                address,
                url,
                sip_proxy,
            } => w.probe(address, url, sip_proxy).await,
            Request::Setup {
                settings,
                pin,
                params_fingerprint,
                password,
                otp,
            } => match w
                .setup(settings, pin, params_fingerprint, password, otp)
                .await
            {
                Ok(()) => {}
                Err(SetupError::OtpRequired(servers)) => {
                    w.report.send(Update::OtpRequired { servers })
                }
                Err(SetupError::Failed(message)) => w.report.fail(message),
            },
            Request::StartStored { settings } => {
                if let Err(message) = w.start_stored(settings).await {
                    w.report.fail(message);
                }
            }
            Request::UseTrustRoots(roots) => w.roots = Some(roots),
            Request::RecheckCertificate => w.recheck_certificate(None).await,
            Request::PinRefused { presented } => w.recheck_certificate(Some(presented)).await,
            Request::AcceptCertificate { old, new } => match w.accept_certificate(old, new).await {
                Ok(settings) => {
                    w.report.send(Update::Notice(
                        "The provider's new certificate is pinned; the phone restarts with it."
                            .into(),
                    ));
                    if let Err(message) = w.start_stored(settings).await {
                        w.report.fail(message);
                    }
                }
                Err(message) => w.report.fail(message),
            },
            Request::RenewalCodes(codes) => match &w.renewal_codes {
                Some(tx) if tx.send(codes).is_ok() => {}
                _ => w.report.send(Update::RenewalCodeRefused(
                    "The phone is not running; restart ibephone and enter the code again.".into(),
                )),
            },
            Request::Agent(cmd) => match &w.agent {
                Some(a) => {
                    if a.send(cmd).await.is_err() {
                        w.report.send(Update::Notice(
                            "The phone stopped; restart ibephone.".into(),
                        ));
                    }
                }
                None => w.report.send(Update::Notice(
                    "The phone is not running yet; wait until it says Ready.".into(),
                )),
            },
            Request::LogOut => {
                w.stop_agent().await;
                match wipe(&w.dirs) {
                    Ok(()) => w.report.send(Update::LoggedOut),
                    Err(e) => w.report.fail(format!(
                        "Your keys could not be removed ({e}). Delete the folder {} by hand.",
                        w.dirs.keys().display()
                    )),
                }
            }
        }
    }
    w.stop_agent().await;
}

impl Worker {
    /// The roots a first contact checks the PKG's certificate by: those
    /// given, else the platform's; none when the platform has none (then
    /// the certificate fingerprint is confirmed).
    fn trust_roots(&self) -> Option<Arc<RootCertStore>> {
        if let Some(r) = &self.roots {
            return Some(r.clone());
        }
        match crate::agent::sip_tls::platform_roots() {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::info!(error = %e, "no trusted roots: the PKG's certificate fingerprint is confirmed instead");
                None
            }
        }
    }

    async fn probe(&mut self, address: String, url: String, sip_proxy: String) {
        match self.find_provider(&address, &url, &sip_proxy).await {
            Ok(probe) => self.report.send(Update::Probed(probe)),
            Err(sentence) => self.report.fail(sentence),
        }
    }

    /// Discovery and the first contact, as one sentence on failure.
    async fn find_provider(
        &self,
        address: &str,
        url: &str,
        sip_proxy: &str,
    ) -> Result<ProviderProbe, String> {
        use crate::pkg_client::discovery::{
            choose_sip_target, discover_pkg, discover_sip, domain_of,
        };
        let domain = domain_of(address).map_err(|_| {
            format!("{address:?} is not an address such as alice@atlanta.com. Check it.")
        })?;
        let dns = crate::pkg_client::discovery::dns_from_env().map_err(|e| {
            format!("This computer cannot look up names ({e}). Check its network settings.")
        })?;
        let urls = if url.is_empty() {
            discover_pkg(&dns, address).await.map_err(|e| {
                format!("Your provider could not be found from {domain} ({e}). Enter its address under Advanced.")
            })?
        } else {
            vec![url.to_string()]
        };
        let roots = self.trust_roots();
        let mut last = String::new();
        for url in &urls {
            let host = match crate::pkg_client::PkgClient::new(url, None) {
                Ok(c) => c.host().to_string(),
                Err(e) => {
                    last = pkg_error(&e, url);
                    continue;
                }
            };
            let ips = crate::pkg_client::discovery::host_addresses(&dns, &host).await;
            let FirstContact {
                trust,
                cert_fingerprint: fp,
                params,
                services,
            } = match first_contact(url, &ips, roots.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    last = pkg_error(&e, url);
                    continue;
                }
            };
            if params.domain() != domain {
                return Err(format!(
                    "The provider at {url} is for {}, not for {domain}. Check your address.",
                    params.domain()
                ));
            }
            let sip_proxy = if sip_proxy.is_empty() {
                let targets = discover_sip(&dns, &domain, &services.sip)
                    .await
                    .map_err(|e| {
                        format!(
                            "No SIP proxy was found for {domain} ({e}). Enter one under Advanced."
                        )
                    })?;
                // The first target in the provider's (RFC 3263) order that
                // answers, chosen as the phone's own start chooses
                // (`agent::keys::discover`); over TLS the proxy is held to
                // the PKG's pin, like the PKG.
                let t = choose_sip_target(&targets, Duration::from_secs(5))
                    .await
                    .ok_or_else(|| {
                        format!("No SIP proxy was found for {domain}. Enter one under Advanced.")
                    })?;
                Some(proxy_setting(&t))
            } else {
                None
            };
            return Ok(ProviderProbe {
                url: url.clone(),
                trust,
                cert_fingerprint: fp,
                params_fingerprint_display: params.fingerprint_display(),
                params_fingerprint: params.fingerprint(),
                domain: params.domain().to_string(),
                sip_proxy,
            });
        }
        Err(last)
    }

    async fn setup(
        &mut self,
        settings: Settings,
        pin: [u8; 32],
        params_fingerprint: [u8; 32],
        password: SecretString,
        otp: OtpCodes,
    ) -> Result<(), SetupError> {
        const STEPS: u32 = 4;
        let url = settings.pkg_url.trim().to_string();
        let pkg = |e: PkgClientError| pkg_error(&e, &url);
        self.report
            .progress(1, STEPS, "Logging in to your provider");
        let dns = crate::pkg_client::discovery::dns_from_env().map_err(|e| {
            format!("This computer cannot look up names ({e}). Check its network settings.")
        })?;
        let client = crate::pkg_client::discovery::client_for(&dns, &url, Some(pin))
            .await
            .map_err(pkg)?;
        let params = client.params().await.map_err(pkg)?;
        if params.fingerprint() != params_fingerprint {
            return Err("The provider's parameters changed since you confirmed them. Start again and compare the fingerprint with your provider's.".into());
        }
        if params.threshold().is_some() {
            // No single server stands for the account: every key server
            // gets its own login (pkg-api.md "Threshold provider").
            return self
                .setup_threshold(settings, pin, params, password, otp)
                .await;
        }
        let session = match client
            .login_with_otp(settings.user.trim(), &password, otp.get(&SINGLE_PKG))
            .await
        {
            Ok(s) => s,
            Err(e) if e.is_otp_required() => return Err(SetupError::OtpRequired(Vec::new())),
            Err(PkgClientError::Server { code, .. })
                if !otp.is_empty()
                    && code == crate::pkg_client::api::codes::INVALID_CREDENTIALS =>
            {
                return Err(WRONG_CODE.into())
            }
            Err(e) => return Err(pkg(e).into()),
        };
        self.report.progress(2, STEPS, "Fetching your keys");
        let periods = key_periods(now_unix());
        let keys = client
            .fetch_keys(&session, &params, &periods)
            .await
            .map_err(pkg)?;
        // The registrar gets this device's own credential, never the
        // account password (a provider without them answers 404: None).
        let device = new_device_name()?;
        let sip = crate::agent::keys::sip_credential(&client, &session, &device, &session.aor)
            .await
            .map_err(pkg)?;
        // The relay's credentials in the same session: the relay task then
        // needs no login of its own at set-up.
        let turn = match settings.ice {
            true => crate::agent::keys::turn_credentials(&client, &session).await,
            false => None,
        };
        let _ = client.logout(&session).await;
        self.report
            .progress(3, STEPS, "Saving your keys on this computer");
        let dirs = self.dirs.clone();
        let saved = settings.clone();
        let pw = password.clone();
        let p2 = params.clone();
        let k2 = keys.clone();
        let s2 = sip.clone();
        let t2 = turn.clone();
        tokio::task::spawn_blocking(move || {
            save_account(&dirs, &saved, pin, &p2, &k2, &pw, s2.as_ref())?;
            keep_turn(&dirs, t2.as_ref())?;
            save_key_servers(&dirs, None)
        })
        .await
        .map_err(|e| format!("Saving failed ({e}). Try again."))??;
        self.report
            .progress(4, STEPS, "Registering with the network");
        Ok(self
            .run_agent(
                &settings,
                &session.aor,
                params,
                keys,
                (&password, sip.as_ref(), turn),
                (Some(pin), None),
            )
            .await?)
    }

    /// [`Worker::setup`] at a threshold provider: logs in to its key
    /// servers (a secret per server), combines `t` good key shares
    /// ([`crate::agent::keys::threshold_keys`], as the command-line phone
    /// does), keeps the login secrets for renewal and tells the user which
    /// servers were used. A server heard only after the keys were
    /// combined is still named ([`Update::KeyServers`]).
    async fn setup_threshold(
        &mut self,
        settings: Settings,
        pin: [u8; 32],
        params: PublicParams,
        password: SecretString,
        otp: OtpCodes,
    ) -> Result<(), SetupError> {
        const STEPS: u32 = 4;
        let url = settings.pkg_url.trim().to_string();
        self.report.progress(
            2,
            STEPS,
            "Fetching your keys from your provider's key servers",
        );
        let user = settings.user.trim().to_string();
        let domain = params.domain().to_string();
        let aor = Aor::parse(&format!("sip:{user}@{domain}")).map_err(|_| {
            format!("{user:?} is not a user name your provider can have. Check your address.")
        })?;
        // The home server (the one the wizard asked, by its pin) issues
        // this device's SIP and relay credentials in the session of its
        // key shares: the account password never goes to SIP.
        let request = params
            .threshold()
            .and_then(|t| crate::pkg_client::threshold::home_server(t, Some(pin), &url))
            .map(|home| {
                new_device_name().map(|device| crate::pkg_client::threshold::DeviceRequest {
                    home,
                    device,
                    turn: settings.ice,
                })
            })
            .transpose()?;
        let mut got = match crate::agent::keys::threshold_keys(
            &params,
            &user,
            &aor,
            (&password, None),
            &otp,
            &key_periods(now_unix()),
            request.as_ref(),
        )
        .await
        {
            Ok(got) => got,
            Err(PkgClientError::OtpRequiredAt { servers }) => {
                return Err(SetupError::OtpRequired(servers))
            }
            Err(PkgClientError::Threshold {
                sentence, refused, ..
            }) if !otp.is_empty() && !refused.is_empty() => {
                return Err(format!("{WRONG_CODE} ({sentence})").into())
            }
            Err(e) => return Err(pkg_error(&e, &url).into()),
        };
        let (sip, turn) = match got.device.take() {
            Some(answer) => (answer.sip.map_err(|e| e.to_string()), answer.turn),
            None => (
                Err(format!("{url} is not one of the provider's key servers")),
                None,
            ),
        };
        // Nothing is saved without a device credential: registering with
        // the account password would hand it to the registrar's operator.
        let sip = sip.map_err(|why| {
            format!(
                "Your provider's key server gave this computer no SIP credential ({why}), and this phone never registers with your password. Nothing was saved. Try again later, and tell your provider if it persists."
            )
        })?;
        let note = key_servers_sentence(&params, &got);
        self.report
            .progress(3, STEPS, "Saving your keys on this computer");
        let dirs = self.dirs.clone();
        let saved = settings.clone();
        let pw = password.clone();
        let (p2, k2, s2) = (params.clone(), got.keys.clone(), sip.clone());
        let (secrets, n2, t2) = (got.secrets, note.clone(), turn.clone());
        tokio::task::spawn_blocking(move || {
            save_account(&dirs, &saved, pin, &p2, &k2, &pw, Some(&s2))?;
            keep_turn(&dirs, t2.as_ref())?;
            let here = |e: PkgClientError| pkg_error(&e, "this computer");
            crate::pkg_client::KeyStore::open(&dirs.keys(), crate::pkg_client::Unlock::KeyFile)
                .and_then(|mut s| s.set_login_secrets(p2.domain(), saved.user.trim(), secrets))
                .map_err(here)?;
            save_key_servers(&dirs, Some(&n2))
        })
        .await
        .map_err(|e| format!("Saving failed ({e}). Try again."))??;
        self.report_late_servers(got.late, note.clone());
        self.report
            .progress(4, STEPS, "Registering with the network");
        Ok(self
            .run_agent(
                &settings,
                &aor,
                params,
                got.keys,
                (&password, Some(&sip), turn),
                (Some(pin), Some(note)),
            )
            .await?)
    }

    /// Names every key server that fails after the keys were combined
    /// (it answered late): appended to `note`, kept for Settings and
    /// reported ([`Update::KeyServers`]).
    fn report_late_servers(
        &self,
        mut late: mpsc::UnboundedReceiver<(u32, String)>,
        mut note: String,
    ) {
        let report = self.report.clone();
        let dirs = self.dirs.clone();
        tokio::spawn(async move {
            while let Some((index, why)) = late.recv().await {
                note.push_str(&not_used(index, &why));
                let n2 = note.clone();
                let d2 = dirs.clone();
                let _ = tokio::task::spawn_blocking(move || save_key_servers(&d2, Some(&n2))).await;
                report.send(Update::KeyServers(note.clone()));
            }
        });
    }

    async fn start_stored(&mut self, settings: Settings) -> Result<(), String> {
        self.stop_agent().await;
        let dirs = self.dirs.clone();
        let opened = tokio::task::spawn_blocking(move || {
            load_account(&dirs).map(|account| (account, stored_turn(&dirs)))
        })
        .await
        .map_err(|e| format!("Reading your keys failed ({e}). Restart ibephone."))??;
        // The relay credentials kept at the last set-up, start or renewal,
        // while unexpired: calls have a relayed candidate at once, without
        // a login (the relay task renews them before they expire).
        let ((params, mut keys, pin, password, mut sip), mut turn) = opened;
        let mut key_servers = load_key_servers(&self.dirs);
        let current = Period::month_at(now_unix());
        let has =
            |keys: &[PrivateKeys], p: &Period| keys.iter().any(|k| k.identity().period() == p);
        let aor = keys
            .first()
            .map(|k| k.identity().aor().clone())
            .ok_or("No keys are stored. Log out and set up the phone again.")?;
        if !has(&keys, &current) {
            // The phone cannot decrypt calls of this month: renew first.
            self.report
                .progress(1, 2, "Fetching your keys for this month");
            match self.renew(&settings, &params, pin, &password).await {
                Ok((fresh, servers)) => {
                    keys = fresh;
                    if servers.is_some() {
                        key_servers = servers;
                    }
                    self.report.send(Update::KeysRenewed {
                        periods: periods_of(&keys),
                    });
                }
                Err(e) if e.otp_required && !keys.is_empty() => {
                    // Not blocking: the phone starts on the keys it holds
                    // and its renewer asks for the code at once (the next
                    // period is missing too, so renewal is due).
                    tracing::info!(
                        "key renewal at start needs a one-time code; asking in the background"
                    );
                }
                Err(e) => {
                    if e.pin_mismatch {
                        // Maybe a CA renewal: offered to the user if so.
                        let _ = self.requests.send(Request::RecheckCertificate);
                    }
                    return Err(format!(
                        "Your keys for {current} are missing and could not be fetched: {}",
                        e.message
                    ));
                }
            }
            self.report.progress(2, 2, "Registering with the network");
        }
        // A phone at a threshold provider set up before its home key
        // server issued device credentials asks for one now (with the
        // keys, in one session); without one it does not register.
        if params.threshold().is_some() && sip.is_none() {
            let (c, t) = super::account::threshold_device_credential(
                &self.dirs, &settings, &params, pin, &password,
            )
            .await
            .map_err(|why| format!("{NO_DEVICE_CREDENTIAL} ({why})"))?;
            sip = Some(c);
            turn = t.or(turn);
        }
        // Next month's keys are fetched ahead without asking by the agent's
        // renewer (run_agent).
        self.run_agent(
            &settings,
            &aor,
            params,
            keys,
            (&password, sip.as_ref(), turn),
            (pin, key_servers),
        )
        .await
    }

    async fn renew(
        &self,
        settings: &Settings,
        params: &PublicParams,
        pin: Option<[u8; 32]>,
        password: &SecretString,
    ) -> Result<(Vec<PrivateKeys>, Option<String>), super::account::RenewError> {
        renew_keys(&self.dirs, settings, params, pin, password).await
    }

    /// [`Request::RecheckCertificate`] (`presented` none) and
    /// [`Request::PinRefused`]: the stored pin and parameters against
    /// what the PKG shows now, by the trusted roots.
    async fn recheck_certificate(&mut self, presented: Option<[u8; 32]>) {
        let dirs = self.dirs.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(&dirs.settings()).map_err(|e| e.to_string())?;
            load_account(&dirs).map(|a| (settings, a))
        })
        .await;
        let (settings, (params, _, pin, _, _)) = match opened {
            Ok(Ok(v)) => v,
            Ok(Err(message)) => return self.report.fail(message),
            Err(e) => return self.report.fail(format!("Reading your keys failed ({e}).")),
        };
        let url = settings.pkg_url.trim().to_string();
        let Some(pin) = pin else {
            return; // Nothing pinned: nothing to re-learn.
        };
        let refused = || {
            pkg_error(
                &PkgClientError::PinMismatch {
                    pinned: fingerprint_hex(&pin),
                    presented: String::new(),
                },
                &url,
            )
        };
        let addrs = match pkg_addresses(&url).await {
            Ok(a) => a,
            Err(message) => return self.report.fail(message),
        };
        let roots = self.trust_roots();
        let check = recheck_certificate(&url, &addrs, roots, pin, params.fingerprint())
            .await
            .map(|c| match presented {
                Some(p) => crate::pkg_client::first_contact::for_presented(c, p),
                None => c,
            });
        match check {
            Ok(CertificateCheck::Renewed(r)) => self.report.send(Update::CertificateRenewed(r)),
            Ok(CertificateCheck::Unchanged) => {}
            Ok(CertificateCheck::Refused(why)) => {
                tracing::warn!(%why, "the PKG's changed certificate is refused");
                self.report.fail(refused());
            }
            Err(e) => self.report.fail(pkg_error(&e, &url)),
        }
    }

    /// [`Request::AcceptCertificate`]: pins `new` if `old` is still the
    /// pin; returns the settings to restart with.
    async fn accept_certificate(
        &mut self,
        old: [u8; 32],
        new: [u8; 32],
    ) -> Result<Settings, String> {
        self.stop_agent().await;
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || {
            let here = |e: PkgClientError| pkg_error(&e, "this computer");
            let mut s =
                crate::pkg_client::KeyStore::open(&dirs.keys(), crate::pkg_client::Unlock::KeyFile)
                    .map_err(here)?;
            if s.pkg_pin() != Some(old) {
                return Err(
                    "The pinned certificate changed meanwhile; nothing was accepted.".to_string(),
                );
            }
            s.set_pkg_pin(new).map_err(here)?;
            Settings::load(&dirs.settings()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("Saving the certificate failed ({e})."))?
    }

    async fn run_agent(
        &mut self,
        settings: &Settings,
        aor: &Aor,
        params: PublicParams,
        keys: Vec<PrivateKeys>,
        // The account password (PKG logins), the device's SIP credential
        // if the provider issued one, and relay credentials fetched in the
        // same session (None: the relay task fetches them).
        (password, sip, turn): (
            &SecretString,
            Option<&SipCredentialsResponse>,
            Option<TurnCredentials>,
        ),
        // The PKG certificate pin, and for a threshold provider which key
        // servers the keys came from (for people).
        (pin, key_servers): (Option<[u8; 32]>, Option<String>),
    ) -> Result<(), String> {
        let listen: SocketAddr = settings.sip_listen.trim().parse().map_err(|_| {
            format!(
                "The phone's own address {:?} is not an ip:port such as 127.0.0.1:5070. Correct it in Settings.",
                settings.sip_listen
            )
        })?;
        let text = settings.sip_proxy.trim().to_string();
        let (addrs, uri) =
            tokio::task::spawn_blocking(move || crate::agent::config::resolve_proxy(&text))
                .await
                .map_err(|e| format!("Looking up the SIP proxy failed ({e}). Try again."))?
                .map_err(|why| {
                    format!(
                        "The SIP proxy {:?} cannot be used ({why}). Give an ip:port such as 127.0.0.1:5060 or a sips: address in Settings.",
                        settings.sip_proxy
                    )
                })?;
        // Every address of a proxy host name, tried in order (RFC 8305);
        // the others kept to fall back on.
        let targets: Vec<crate::sip::Dest> = addrs
            .iter()
            .map(|a| crate::sip::Dest {
                addr: *a,
                transport: uri.transport,
            })
            .collect();
        let (proxy, fallback) = crate::agent::config::choose_proxy(&targets)
            .await
            .map(|(d, rest)| (d.addr, rest))
            .ok_or_else(|| format!("The SIP proxy {:?} has no address.", settings.sip_proxy))?;
        let info = ReadyInfo {
            aor: aor.as_str().to_string(),
            domain: params.domain().to_string(),
            periods: periods_of(&keys),
            params_fingerprint: params.fingerprint_display(),
            pkg_fingerprint: pin.as_ref().map(fingerprint_hex),
            local: listen,
            key_servers,
        };
        let held: Vec<Period> = keys.iter().map(|k| k.identity().period().clone()).collect();
        // A threshold provider's relay credentials are renewed at its home
        // key server alone, with that server's login secret.
        let threshold = params.threshold().is_some().then(|| params.clone());
        // The device credential when there is one; the account password
        // only for a single PKG without them, never at a threshold
        // provider (its registrar's operator is one operator).
        let digest = match (sip, threshold.is_some()) {
            (Some(c), _) => c.password.expose(),
            (None, false) => password.expose(),
            (None, true) => return Err(NO_DEVICE_CREDENTIAL.to_string()),
        };
        let inbox = KeyInbox::new();
        let config = AgentConfig {
            aor: aor.clone(),
            password: zeroize::Zeroizing::new(digest.to_string()),
            listen,
            proxy,
            policy: settings.policy,
            privacy: settings.privacy,
            params,
            trusted: vec![],
            keys,
            // Over TLS the provider's SIP service shows the PKG's
            // certificate: held to the same pin.
            sip: crate::agent::config::SipSettings {
                transport: uri.transport,
                proxy_host: Some(uri.host),
                tls_pin: pin,
                fallback,
                ..Default::default()
            },
        };
        let media = media_options(settings);
        let relay = media.relay.clone();
        let refusals = pin_refusals(self.requests.clone());
        let RunningAgent {
            commands,
            mut events,
            local,
        } = headless::start_with(
            config,
            StartOptions {
                media,
                key_inbox: Some(inbox.clone()),
                keylog: self.keylog.clone(),
                retained: Some(crate::agent::retained::RetainedFiles::in_store(
                    &self.dirs.keys(),
                )),
                pin_refusals: Some(refusals.clone()),
            },
        )
        .await
            .map_err(|e| match e {
            headless::StartError::Bind { addr, .. } => format!(
                "The phone cannot use the address {addr} (another program may use it). Choose another in Settings."
            ),
            headless::StartError::KeyLog(e) => format!(
                "The key log file cannot be written ({e}). Start ibephone without --keylog or with a writable file."
            ),
            other => format!("The stored keys do not fit this account ({other}). Log out and set up again."),
        })?;
        let report = self.report.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                report.send(Update::Agent(e));
            }
        });
        let _ = commands.send(AgentCommand::Register).await;
        self.agent = Some(commands);
        self.report.send(Update::Ready(ReadyInfo { local, ..info }));
        let pkg = PkgSettings {
            discover: false,
            url: settings.pkg_url.trim().to_string(),
            fingerprint: pin,
            store: self.dirs.keys(),
            user: settings.user.trim().to_string(),
            otp_command: None,
        };
        // Under ICE, the provider's STUN server and relay credentials
        // (those held, else fetched now: a login with the stored password
        // as key renewal does, at a threshold provider at its home key
        // server with that server's login secret) are renewed before they
        // expire; a failure leaves calls without a relayed candidate,
        // never the phone stopped. A renewal that needs a one-time code
        // says so once and never waits for it.
        if settings.ice {
            let mut login = RelayRenewal::new(pkg.clone(), aor.clone(), password.clone())
                .reporting(Some(refusals));
            if let Some(params) = threshold {
                login = login.at_threshold(params);
            }
            let report = self.report.clone();
            let mut told = false;
            self.relay = Some(tokio::spawn(login.run(relay, turn, true, move |outcome| {
                crate::agent::relay::log_outcome(outcome);
                match outcome {
                    RelayOutcome::CodeNeeded { .. } if !std::mem::replace(&mut told, true) => {
                        report.send(Update::Notice(RELAY_CODE_NEEDED.into()))
                    }
                    RelayOutcome::Renewed { .. } => told = false,
                    _ => {}
                }
            })));
        }
        // Next month's keys are fetched ahead without asking, now and
        // whenever the month changes, and handed to the running agent.
        let renewal = Renewal::new(pkg, aor.clone(), password.clone(), held);
        let report = self.report.clone();
        let url = settings.pkg_url.trim().to_string();
        let requests = self.requests.clone();
        let dirs = self.dirs.clone();
        let mut told = false;
        let (codes_tx, codes) = mpsc::unbounded_channel();
        self.renewal_codes = Some(codes_tx);
        self.renewer = Some(tokio::spawn(renewal.run_with_codes(
            inbox,
            CHECK_EVERY,
            codes,
            move |renewal, outcome| {
                let failure = match outcome {
                    Ok(RenewOutcome::NotDue) => return,
                    Ok(RenewOutcome::Renewed(_)) => {
                        told = false;
                        let mut periods: Vec<String> =
                            renewal.held().iter().map(|p| p.as_str().to_string()).collect();
                        periods.sort();
                        report.send(Update::KeysRenewed { periods });
                        if let Some(servers) = renewal.servers() {
                            let note = format!("Your keys were put together from key {servers}.");
                            let _ = save_key_servers(&dirs, Some(&note));
                            report.send(Update::KeyServers(note));
                        }
                        return;
                    }
                    Err(KeyError::Otp { servers, .. }) => {
                        // Not a failure to retry silently: the user is
                        // asked, the phone keeps running meanwhile.
                        report.send(Update::RenewalCodeNeeded { servers });
                        return;
                    }
                    Err(KeyError::OtpRefused { source, .. }) => {
                        report.send(Update::RenewalCodeRefused(format!(
                            "{WRONG_CODE} Your keys are unchanged. ({})",
                            pkg_error(&source, &url)
                        )));
                        return;
                    }
                    Err(e) if renewal.used_codes() => {
                        let why = match &e {
                            KeyError::Pkg { source, .. } => pkg_error(source, &url),
                            other => other.to_string(),
                        };
                        report.send(Update::RenewalCodeRefused(format!(
                            "The keys could not be fetched with the code ({why}). Your keys are unchanged."
                        )));
                        return;
                    }
                    Ok(RenewOutcome::Unreachable(why)) => why,
                    Err(KeyError::Pkg { source, .. }) => {
                        if matches!(source, PkgClientError::PinMismatch { .. }) && !told {
                            // Maybe a CA renewal: offered to the user if so.
                            let _ = requests.send(Request::RecheckCertificate);
                        }
                        pkg_error(&source, &url)
                    }
                    Err(e) => e.to_string(),
                };
                // Told once; retried every hour.
                if !std::mem::replace(&mut told, true) {
                    report.send(Update::Notice(format!(
                        "Next month's keys could not be fetched yet ({failure}); the phone tries again every hour."
                    )));
                }
            },
        )));
        Ok(())
    }

    async fn stop_agent(&mut self) {
        self.renewal_codes = None;
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if let Some(r) = self.relay.take() {
            r.abort();
        }
        if let Some(a) = self.agent.take() {
            let _ = a.send(AgentCommand::Unregister).await;
            // Give the un-REGISTER a moment on the wire; dropping the
            // sender then stops the driver and frees the socket.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What the wizard and a renewal say when a login with a one-time code is
/// refused.
/// Why a phone at a threshold provider does not register without a device
/// credential.
const NO_DEVICE_CREDENTIAL: &str = "This phone has no SIP credential from your provider's key server, and it never registers with your password. Start it again when your provider's key server answers.";

/// What the phone says once when a relay renewal in the background is
/// refused for want of a one-time code.
const RELAY_CODE_NEEDED: &str = "Your provider asks for a one-time code to renew this phone's relay credentials. Calls still work, but across strict firewalls they may fail without the relay; setting the phone up again (with the code) gives it new relay credentials.";

const WRONG_CODE: &str = "Wrong password or one-time code. Check the password, then use the code your authenticator app shows now (each code works once).";

/// The agent's media options from the settings: the chosen microphone and
/// speaker by name (`None`: the system default), voice processing as
/// switched, default codecs, ICE unless turned off (its STUN server and
/// relay are the provider's, filled in while the phone runs). A device
/// that is gone when a call starts is reported by the agent's
/// `audio_failed` event, not here.
fn media_options(settings: &Settings) -> MediaOptions {
    MediaOptions {
        audio_in: AudioIn::Device(settings.input_device.clone()),
        audio_out: AudioOut::Device(settings.output_device.clone()),
        voice_processing: settings.voice_processing,
        ice: settings.ice.then(IceOptions::default),
        ..MediaOptions::default()
    }
}

/// What one agent run's SIP and relay connections do with a certificate
/// they refuse for not being the pin: ask the worker to re-check the PKG
/// ([`Request::PinRefused`]), once per run (a refused proxy is retried
/// with every registration; the window asks once until the phone starts
/// again).
fn pin_refusals(requests: mpsc::UnboundedSender<Request>) -> crate::pkg_client::tls::PinRefusals {
    let asked = std::sync::atomic::AtomicBool::new(false);
    crate::pkg_client::tls::PinRefusals::new(move |presented| {
        if !asked.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("the SIP proxy or relay showed a certificate other than the pinned one: re-checking the provider");
            let _ = requests.send(Request::PinRefused { presented });
        }
    })
}

/// The Settings' "SIP proxy" text for a discovered target, in the form
/// [`crate::sip::proxy_uri::ProxyUri::parse`] reads back to the same
/// transport and address: `sips:ip:port`, `sip:ip:port;transport=tcp` or
/// `ip:port` (UDP).
fn proxy_setting(t: &crate::pkg_client::discovery::SipTarget) -> String {
    use crate::pkg_client::discovery::SipTransport;
    match t.transport {
        SipTransport::Tls => format!("sips:{}", t.addr),
        SipTransport::Tcp => format!("sip:{};transport=tcp", t.addr),
        SipTransport::Udp => t.addr.to_string(),
    }
}

/// The addresses of the PKG of `url` (empty: the client resolves it).
async fn pkg_addresses(url: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let dns = crate::pkg_client::discovery::dns_from_env().map_err(|e| {
        format!("This computer cannot look up names ({e}). Check its network settings.")
    })?;
    let host = crate::pkg_client::PkgClient::new(url, None)
        .map_err(|e| pkg_error(&e, url))?
        .host()
        .to_string();
    Ok(crate::pkg_client::discovery::host_addresses(&dns, &host).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A discovered target written into the settings reads back as the
    /// same transport, host and port (IPv6 too).
    #[test]
    fn a_discovered_proxy_reads_back_as_itself() {
        use crate::pkg_client::discovery::{SipTarget, SipTransport};
        use crate::sip::proxy_uri::ProxyUri;
        use crate::sip::Transport;
        for (transport, want, addr) in [
            (SipTransport::Tls, Transport::Tls, "[2001:db8::5]:5061"),
            (SipTransport::Tcp, Transport::Tcp, "127.0.0.1:5070"),
            (SipTransport::Udp, Transport::Udp, "127.0.0.1:5060"),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let text = proxy_setting(&SipTarget { transport, addr });
            let back = ProxyUri::parse(&text).unwrap();
            assert_eq!(back.transport, want, "{text}");
            assert_eq!(back.port, addr.port(), "{text}");
            assert_eq!(
                back.host.parse::<std::net::IpAddr>().unwrap(),
                addr.ip(),
                "{text}"
            );
        }
    }

    #[test]
    fn chosen_sound_devices_reach_the_agent() {
        let mut settings = Settings::default();
        let default = media_options(&settings);
        assert!(matches!(default.audio_in, AudioIn::Device(None)));
        assert!(matches!(default.audio_out, AudioOut::Device(None)));
        assert!(default.voice_processing);
        settings.voice_processing = false;
        assert!(!media_options(&settings).voice_processing);
        settings.input_device = Some("USB Headset Mic".into());
        settings.output_device = Some("USB Headset".into());
        let chosen = media_options(&settings);
        assert!(matches!(&chosen.audio_in, AudioIn::Device(Some(n)) if n == "USB Headset Mic"));
        assert!(matches!(&chosen.audio_out, AudioOut::Device(Some(n)) if n == "USB Headset"));
        assert_eq!(chosen.codecs, MediaOptions::default().codecs);
    }

    /// ICE is on by default, with no STUN or relay of its own: those are
    /// the provider's, filled in while the phone runs.
    #[test]
    fn ice_is_on_by_default_and_can_be_turned_off() {
        let mut settings = Settings::default();
        let ice = media_options(&settings).ice.expect("ICE on by default");
        assert!(ice.stun.is_none() && ice.turn.is_empty());
        // Settings saved before the switch existed turn it on too.
        let old: Settings = serde_json::from_str(r#"{"pkg_url":"https://x"}"#).unwrap();
        assert!(old.ice);
        settings.ice = false;
        assert!(media_options(&settings).ice.is_none());
    }
}
