//! [`PhoneApp`]: the one state struct of the window. Each frame it takes
//! the backend's waiting updates, folds them into its state
//! ([`PhoneApp::apply`]) and draws the screen; user actions become
//! backend requests. Nothing here waits on the network.

use super::account::is_set_up;
use super::backend::{Backend, ReadyInfo, Request, Update};
use super::contacts::ContactBook;
use super::dial::{normalize, split_identity};
use super::errors;
use super::history::{CallRecord, Direction, History, Security};
use super::messages::{Conversations, MessageError, MessageStore};
use super::renewal_code::RenewalCode;
use super::settings::{AppDirs, Settings};
use super::wizard::Wizard;
use crate::agent::{AgentCommand, AgentEvent};
use std::sync::Arc;

pub use super::state::{
    Author, Banner, Call, ChatLine, Clock, MediaSecurity, Phase, Registration, Screen, Tab,
};

/// The whole window state.
pub struct PhoneApp {
    /// Where the files live.
    pub dirs: AppDirs,
    backend: Backend,
    /// The saved settings.
    pub settings: Settings,
    /// The settings being edited (saved on "Apply").
    pub settings_draft: Settings,
    /// The first-run wizard.
    pub wizard: Wizard,
    /// The screen shown.
    pub screen: Screen,
    /// The tab shown on the phone screen.
    pub tab: Tab,
    /// Start-up progress (step, of, what) while starting from stored keys.
    pub progress: Option<(u32, u32, String)>,
    /// The running phone, once ready.
    pub ready: Option<ReadyInfo>,
    /// Registration state.
    pub registration: Registration,
    /// Banners, newest last.
    pub banners: Vec<Banner>,
    /// The dial field.
    pub dial: String,
    /// The address last dialed (for error sentences).
    pub last_dialed: Option<String>,
    /// Calls in progress.
    pub calls: Vec<Call>,
    /// Address book.
    pub contacts: ContactBook,
    /// The contact form (name, address, name being edited).
    pub contact_form: (String, String, Option<String>),
    /// Call history.
    pub history: History,
    /// Secure messages per peer AOR, saved sealed in [`PhoneApp::messages`].
    pub conversations: Conversations,
    /// Where the conversations are kept.
    pub messages: MessageStore,
    /// The conversation shown.
    pub chat_peer: Option<String>,
    /// The message being typed.
    pub chat_input: String,
    /// The address typed to start a new conversation.
    pub chat_new_peer: String,
    /// The transfer address typed in the call screen.
    pub transfer_to: String,
    /// Whether the security panel is open during a call.
    pub show_security: bool,
    /// Asked to confirm logging out.
    pub confirm_logout: bool,
    /// The time shown ([`Clock::System`] unless a test freezes it).
    pub clock: Clock,
    /// The sound devices for Settings (listed when Settings first shows).
    pub devices: super::audio_devices::Devices,
    /// The ring tone while a call for us waits.
    ringer: super::ringer::Ringer,
    /// Debugging only: the file every call key is appended to.
    pub keylog: Option<std::path::PathBuf>,
    /// The last errors and refusals shown, for "Copy diagnostics".
    pub recent_errors: super::diagnostics::RecentErrors,
    /// The last diagnostics report copied (shown under the button).
    pub diagnostics_copied: Option<String>,
    /// Closing, the tray, Quit and incoming calls: where the window goes.
    pub background: super::background::Background,
    /// The tray driver's reports, once attached ([`PhoneApp::attach_tray`]).
    tray_events: Option<std::sync::mpsc::Receiver<super::background::TrayEvent>>,
    /// The running tray icon (removed when the app ends).
    _tray: Option<super::tray::Tray>,
    /// The "Start at login" entry's path (None: no config directory known).
    pub autostart_path: Option<std::path::PathBuf>,
    /// A renewed PKG certificate waiting for the user's consent.
    pub certificate_renewal: Option<crate::pkg_client::first_contact::CertificateRenewal>,
    /// A key renewal waiting for the user's one-time code(s), shown as a
    /// notice with a field on the main screen.
    pub renewal_code: Option<RenewalCode>,
}

impl PhoneApp {
    /// The app for the files of `dirs`, waking `ctx` on backend updates.
    /// With stored keys it starts the phone at once; otherwise the wizard.
    /// A damaged contacts or history file is kept aside (a banner says so)
    /// and the app starts with an empty one saved under another name.
    pub fn new(dirs: AppDirs, ctx: egui::Context) -> Result<Self, super::UiError> {
        Self::with_keylog(dirs, ctx, None)
    }

    /// As [`PhoneApp::new`]; with `keylog` (debugging only) every call key
    /// is appended to that file and the status bar says so in red for as
    /// long as the window is open.
    pub fn with_keylog(
        dirs: AppDirs,
        ctx: egui::Context,
        keylog: Option<std::path::PathBuf>,
    ) -> Result<Self, super::UiError> {
        let wake_ctx = ctx.clone();
        let wake: super::backend::Waker = Arc::new(move || wake_ctx.request_repaint());
        let mut banners = Vec::new();
        let backend = Backend::start_with_keylog(dirs.clone(), wake, keylog.clone())?;
        let settings = note(
            Settings::load(&dirs.settings()),
            "Your settings",
            &mut banners,
        )
        .unwrap_or_default();
        let contacts = note(
            ContactBook::load(&dirs.contacts()),
            "Your contacts",
            &mut banners,
        )
        .unwrap_or_else(|| ContactBook::empty(&dirs.root.join("contacts.recovered.json")));
        let history = note(
            History::load(&dirs.history()),
            "Your call history",
            &mut banners,
        )
        .unwrap_or_else(|| History::empty(&dirs.root.join("history.recovered.json")));
        let mut messages = MessageStore::new(&dirs);
        let conversations = match messages.load() {
            Ok(c) => c,
            Err(e) => {
                banners.push(Banner {
                    text: messages_sentence(&e),
                    error: true,
                });
                Conversations::new()
            }
        };
        let set_up = is_set_up(&dirs);
        let app = PhoneApp {
            wizard: Wizard::from_settings(&settings),
            settings_draft: settings.clone(),
            settings,
            dirs,
            backend,
            screen: if set_up {
                Screen::Starting
            } else {
                Screen::Wizard
            },
            tab: Tab::Dial,
            progress: None,
            ready: None,
            registration: Registration::NotRegistered,
            banners,
            dial: String::new(),
            last_dialed: None,
            calls: Vec::new(),
            contacts,
            contact_form: Default::default(),
            history,
            conversations,
            messages,
            chat_peer: None,
            chat_input: String::new(),
            chat_new_peer: String::new(),
            transfer_to: String::new(),
            show_security: true,
            confirm_logout: false,
            clock: Clock::System,
            devices: Default::default(),
            ringer: super::ringer::Ringer::on_devices(),
            keylog,
            recent_errors: Default::default(),
            diagnostics_copied: None,
            background: super::background::Background::new(false),
            tray_events: None,
            _tray: None,
            autostart_path: super::autostart::path(),
            certificate_renewal: None,
            renewal_code: None,
        };
        if set_up {
            app.request(Request::StartStored {
                settings: app.settings.clone(),
            });
        }
        Ok(app)
    }

    /// Sends a request to the backend.
    pub fn request(&self, r: Request) {
        self.backend.send(r);
    }

    /// Sends a command to the agent.
    pub fn command(&self, c: AgentCommand) {
        self.backend.send(Request::Agent(c));
    }

    /// Shows a banner; an error is also kept for the diagnostics report.
    pub fn banner(&mut self, text: impl Into<String>, error: bool) {
        let text = text.into();
        if error {
            self.recent_errors.push(self.clock.unix(), text.clone());
        }
        if !self.banners.iter().any(|b| b.text == text) {
            self.banners.push(Banner { text, error });
        }
    }

    /// Our provider's domain (for completing `bob`).
    pub fn domain(&self) -> String {
        self.ready
            .as_ref()
            .map(|r| r.domain.clone())
            .unwrap_or_default()
    }

    /// Whether the ring tone is playing (a call for us is waiting).
    pub fn is_ringing(&self) -> bool {
        self.ringer.is_ringing()
    }

    /// Replaces the ringer (tests give one that records instead of playing).
    pub fn set_ringer(&mut self, ringer: super::ringer::Ringer) {
        self.ringer = ringer;
    }

    /// Takes the tray's reports from `events` from now on; `tray` is kept
    /// running for as long as the app.
    pub fn attach_tray(
        &mut self,
        events: std::sync::mpsc::Receiver<super::background::TrayEvent>,
        tray: super::tray::Tray,
    ) {
        self.tray_events = Some(events);
        self._tray = Some(tray);
    }

    /// Quit: ends the app (the window closes for good, the phone stops).
    pub fn quit(&mut self) {
        self.background.quit();
    }

    /// Takes every waiting update, rings while a call for us waits, and
    /// draws one frame.
    pub fn show(&mut self, ctx: &egui::Context) {
        while let Some(u) = self.backend.try_recv() {
            self.apply(u);
        }
        self.background_frame(ctx);
        let call_waiting = self
            .calls
            .iter()
            .any(|c| matches!(c.phase, Phase::Incoming));
        // A call for us while we talk rings softly (call waiting).
        let talking = self.calls.iter().any(|c| c.phase != Phase::Incoming);
        self.ringer.set(
            call_waiting,
            self.settings.output_device.as_deref(),
            super::ringer::ring_volume(self.settings.ring_volume, talking),
        );
        match self.screen {
            Screen::Wizard => super::wizard::show(self, ctx),
            Screen::Starting => super::wizard::show_starting(self, ctx),
            Screen::Phone => super::main_window::show(self, ctx),
        }
        super::certificate_view::show(self, ctx);
        self.background_flush(ctx);
        if self
            .calls
            .iter()
            .any(|c| matches!(c.phase, Phase::Active(_)))
        {
            // The call timer.
            ctx.request_repaint_after(std::time::Duration::from_millis(500));
        }
    }

    /// The tray's reports, a close request and Ctrl+Q go through the
    /// [`Background`](super::background::Background) state machine
    /// ([`PhoneApp::background_flush`] then sends what it decided).
    fn background_frame(&mut self, ctx: &egui::Context) {
        if let Some(rx) = &self.tray_events {
            while let Ok(e) = rx.try_recv() {
                match e {
                    super::background::TrayEvent::Shown => {
                        tracing::info!("the tray shows the icon");
                    }
                    super::background::TrayEvent::ShowWindow => {
                        tracing::info!("the tray asks for the window");
                    }
                    _ => {}
                }
                self.background.tray_event(e);
            }
        }
        let quit_keys = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::Q);
        if ctx.input_mut(|i| i.consume_shortcut(&quit_keys)) {
            self.background.quit();
        }
        if ctx.input(|i| i.viewport().close_requested()) {
            let phone_running = self.screen != Screen::Wizard;
            if !self.background.close_requested(phone_running) {
                tracing::info!(
                    window = ?self.background.window(),
                    tray = ?self.background.tray(),
                    window_system = self.background.window_system().name(),
                    "the window was closed; the phone keeps running"
                );
            }
        }
    }

    /// Shows the background's sentence and sends its viewport commands,
    /// those of this frame's clicks included.
    fn background_flush(&mut self, ctx: &egui::Context) {
        if let Some(notice) = self.background.take_notice() {
            self.banner(notice, false);
        }
        for c in self.background.take_commands() {
            ctx.send_viewport_cmd(c);
        }
    }

    /// Dials `input` (after checking it), or says what to type instead.
    pub fn dial(&mut self, input: &str) {
        match normalize(input, &self.domain()) {
            Ok(uri) => {
                self.last_dialed = Some(uri.clone());
                self.command(AgentCommand::Call { to: uri });
            }
            Err(sentence) => self.banner(sentence, true),
        }
    }

    /// Sends a secure message to `peer` (a canonical AOR).
    pub fn send_message(&mut self, peer: &str, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.conversations
            .entry(peer.to_string())
            .or_default()
            .push(ChatLine {
                author: Author::Me,
                text: text.to_string(),
                security: Security::Unverified,
                status: None,
            });
        self.save_messages(peer);
        self.command(AgentCommand::Message {
            to: peer.to_string(),
            text: text.to_string(),
        });
    }

    /// Folds one backend update into the state.
    pub fn apply(&mut self, u: Update) {
        match u {
            Update::Probed(probe) => self.wizard.probed(probe),
            Update::OtpRequired { servers } => self.wizard.otp_required(servers),
            Update::RenewalCodeNeeded { servers } => {
                // Asked once; a later hourly check does not reset what the
                // user is typing.
                if self.renewal_code.is_none() {
                    self.renewal_code = Some(RenewalCode::new(servers));
                }
            }
            Update::RenewalCodeRefused(why) => match &mut self.renewal_code {
                Some(r) => r.refused(why),
                None => self.banner(why, true),
            },
            Update::KeyServers(note) => {
                if let Some(r) = &mut self.ready {
                    r.key_servers = Some(note);
                }
            }
            Update::Progress { step, of, what } => {
                if self.screen == Screen::Wizard {
                    self.wizard.progress(step, of, what);
                } else {
                    self.progress = Some((step, of, what));
                }
            }
            Update::Failed { message } => {
                if self.screen == Screen::Wizard {
                    self.wizard.failed(message);
                } else {
                    self.progress = None;
                    self.banner(message, true);
                }
            }
            Update::Ready(info) => {
                if self.screen == Screen::Wizard {
                    self.settings = self.wizard.settings(&self.settings);
                    self.settings_draft = self.settings.clone();
                }
                self.wizard.ready();
                self.ready = Some(info);
                self.registration = Registration::Registering;
                if self.screen == Screen::Starting {
                    self.screen = Screen::Phone;
                }
            }
            Update::KeysRenewed { periods } => {
                self.renewal_code = None;
                if let Some(r) = &mut self.ready {
                    r.periods = periods;
                }
            }
            Update::Notice(text) => self.banner(text, false),
            Update::CertificateRenewed(r) => self.certificate_renewal = Some(r),
            Update::LoggedOut => {
                self.ready = None;
                self.renewal_code = None;
                self.calls.clear();
                self.conversations.clear();
                self.chat_peer = None;
                if let Err(e) = self.messages.wipe() {
                    self.banner(messages_sentence(&e), true);
                }
                self.registration = Registration::NotRegistered;
                self.wizard = Wizard::from_settings(&self.settings);
                self.screen = Screen::Wizard;
                self.banner(
                    "You are logged out; your keys are wiped from this computer.",
                    false,
                );
            }
            Update::Agent(e) => self.apply_event(e),
        }
    }

    fn call_mut(&mut self, id: u64) -> Option<&mut Call> {
        self.calls.iter_mut().find(|c| c.id == id)
    }

    fn apply_event(&mut self, e: AgentEvent) {
        if let AgentEvent::MediaUpdated {
            call, direction, ..
        } = &e
        {
            // What the agent did (hold, resume, swap, call waiting), not
            // what a button asked.
            let held = direction == "sendonly" || direction == "inactive";
            if let Some(c) = self.call_mut(*call) {
                c.held = held;
            }
        }
        match e {
            AgentEvent::Registered { expires } => {
                self.registration = Registration::Registered { expires };
                if self.screen == Screen::Wizard {
                    self.screen = Screen::Phone;
                    let who = self
                        .ready
                        .as_ref()
                        .map(|r| r.aor.clone())
                        .unwrap_or_default();
                    self.banner(
                        format!("Your phone is ready: you can call and be called as {who}."),
                        false,
                    );
                }
            }
            AgentEvent::RegistrationFailed { status } => {
                let sentence = errors::registration_failed(status, &self.settings.sip_proxy);
                self.recent_errors.push(
                    self.clock.unix(),
                    format!("registration failed ({status}): {sentence}"),
                );
                if self.screen == Screen::Wizard {
                    self.wizard.failed(sentence.clone());
                }
                self.registration = if matches!(status, 408 | 503 | 504) {
                    Registration::Retrying(sentence)
                } else {
                    Registration::Failed(sentence)
                };
            }
            AgentEvent::Unregistered => self.registration = Registration::NotRegistered,
            AgentEvent::NetworkChanged { calls, .. } if !calls.is_empty() => self.banner(
                "Your network changed: your call moves to the new connection (a few seconds \
                 of silence), still encrypted and verified.",
                false,
            ),
            AgentEvent::Calling { call, to, tunneled } => {
                // A plain fallback re-announces the same call number.
                if let Some(c) = self.calls.iter_mut().find(|c| c.id == call) {
                    c.tunneled = tunneled;
                } else {
                    let mut c = Call::new(call, to, Phase::Calling, self.clock.unix());
                    c.tunneled = tunneled;
                    self.calls.push(c);
                }
            }
            AgentEvent::MediaStarted {
                call,
                codec,
                cipher,
                escrow_resistant,
                sas,
            }
            | AgentEvent::MediaUpdated {
                call,
                codec,
                cipher,
                escrow_resistant,
                sas,
                ..
            } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.id == call) {
                    c.media = Some(MediaSecurity {
                        codec,
                        cipher,
                        escrow_resistant,
                        sas,
                        sas_matches: None,
                    });
                    // New keys: continuity is reported again for them.
                    c.continuity = None;
                }
            }
            AgentEvent::MediaStats { call, stats } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.id == call) {
                    c.stats = Some(stats);
                }
            }
            AgentEvent::KeyContinuity {
                call,
                verified,
                message,
            } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.id == call) {
                    c.continuity = Some((verified, message.clone()));
                }
                if !verified {
                    self.banner(message, true);
                }
            }
            AgentEvent::IncomingCall {
                call,
                from,
                verified,
                tunneled,
                waiting,
            } => {
                let peer = verified
                    .as_deref()
                    .map(|v| split_identity(v).0.to_string())
                    .unwrap_or(from);
                let mut c = Call::new(call, peer, Phase::Incoming, self.clock.unix());
                c.verified = verified;
                c.tunneled = tunneled;
                c.waiting = waiting;
                self.calls.push(c);
                // Up from the tray (or minimised, or behind), asking for attention.
                self.background.incoming_call();
            }
            AgentEvent::TransferRequested { by, to, .. } => {
                let who = by.unwrap_or_else(|| "The other side".into());
                self.banner(
                    format!(
                        "{who} transferred your call to {to}: calling {to} (a new secured call)."
                    ),
                    false,
                );
            }
            AgentEvent::TransferProgress {
                call,
                status,
                reason,
                done,
            } => {
                if let Some(c) = self.call_mut(call) {
                    c.transfer = (!done).then(|| format!("Transferring: {status} {reason}"));
                }
                if done && (200..300).contains(&status) {
                    self.banner("Call transferred.", false);
                }
            }
            AgentEvent::TransferFailed { call, reason, .. } => {
                if let Some(c) = self.call_mut(call) {
                    c.transfer = None;
                }
                self.banner(
                    format!("The transfer did not work ({reason}); your call goes on."),
                    true,
                );
            }
            AgentEvent::Ringing { call } => {
                if let Some(c) = self.call_mut(call) {
                    c.phase = Phase::Ringing;
                }
            }
            AgentEvent::Answered {
                call,
                verified,
                tunneled,
            } => {
                let now = self.clock.instant();
                if let Some(c) = self.call_mut(call) {
                    if !matches!(c.phase, Phase::Active(_)) {
                        c.phase = Phase::Active(now);
                    }
                    if verified.is_some() {
                        c.verified = verified;
                    }
                    c.tunneled = tunneled;
                }
            }
            AgentEvent::Ended { call, reason } => {
                let Some(pos) = self.calls.iter().position(|c| c.id == call) else {
                    // A call the tunnel refused before anything was sent
                    // (no `calling` came): say why, naming what was dialed.
                    if reason.starts_with("not placed") || reason.starts_with("rejected") {
                        let peer = self
                            .last_dialed
                            .clone()
                            .unwrap_or_else(|| "The callee".into());
                        if let Some(s) = errors::call_end(&reason, &peer) {
                            self.banner(s, true);
                        }
                    }
                    return;
                };
                let c = self.calls.remove(pos);
                let (direction, duration) = match (c.phase, c.outgoing) {
                    (Phase::Active(t), true) => {
                        (Direction::Outgoing, Some(self.clock.seconds_since(t)))
                    }
                    (Phase::Active(t), false) => {
                        (Direction::Incoming, Some(self.clock.seconds_since(t)))
                    }
                    (_, true) => (Direction::Outgoing, None),
                    (_, false) => (Direction::Missed, None),
                };
                if duration.is_none() && c.outgoing {
                    if let Some(s) = errors::call_end(&reason, &c.peer) {
                        self.banner(s, true);
                    }
                }
                let record = CallRecord {
                    direction,
                    peer: c.peer.clone(),
                    started_unix: c.started_unix,
                    duration_secs: duration,
                    security: Security::from_facts(c.verified.as_deref(), c.tunneled),
                };
                if let Err(e) = self.history.push(record) {
                    self.banner(format!("The call history could not be saved ({e})."), true);
                }
            }
            AgentEvent::MessageReceived {
                from,
                text,
                verified,
                tunneled,
            } => {
                let peer = verified
                    .as_deref()
                    .map(|v| split_identity(v).0.to_string())
                    .or_else(|| normalize(&from, &self.domain()).ok())
                    .unwrap_or(from);
                self.conversations
                    .entry(peer.clone())
                    .or_default()
                    .push(ChatLine {
                        author: Author::Them,
                        text,
                        security: Security::from_facts(verified.as_deref(), tunneled),
                        status: None,
                    });
                self.save_messages(&peer);
                if self.chat_peer.is_none() {
                    self.chat_peer = Some(peer);
                }
            }
            AgentEvent::RequestCompleted { method, status } if method == "MESSAGE" => {
                let pending = self.conversations.iter_mut().find_map(|(peer, v)| {
                    v.iter_mut()
                        .find(|l| l.author == Author::Me && l.status.is_none())
                        .map(|l| (peer.clone(), l))
                });
                if let Some((peer, line)) = pending {
                    line.status = Some(status);
                    self.save_messages(&peer);
                }
                if status >= 300 {
                    let peer = self.chat_peer.clone().unwrap_or_default();
                    let sentence = errors::call_end(&format!("rejected {status}"), &peer)
                        .unwrap_or_default()
                        .replace("the call was not made", "the message was not delivered")
                        .replace("The call", "The message");
                    self.banner(sentence, true);
                }
            }
            AgentEvent::Rejected { reason } => {
                self.recent_errors
                    .push(self.clock.unix(), format!("message refused: {reason}"));
                self.banner(
                format!("An unprotected or damaged message was refused ({reason}). Nothing is needed from you."),
                false,
            )
            }
            AgentEvent::Error { message } => {
                let s = errors::agent_error(&message, self.last_dialed.as_deref());
                self.banner(s, true);
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

impl PhoneApp {
    /// The "Copy diagnostics" report of the window's state now (see
    /// `super::diagnostics`: no secrets).
    pub fn diagnostics(&self) -> String {
        use super::diagnostics as d;
        let policy = match self.settings.policy {
            crate::agent::filter::SecurityPolicy::Require => "require",
            crate::agent::filter::SecurityPolicy::Ask => "ask",
            crate::agent::filter::SecurityPolicy::AllowPlain => "allow-plain",
        };
        let no_periods = Vec::new();
        d::report(&d::Facts {
            version: d::version(),
            os: d::os(),
            aor: self.ready.as_ref().map(|r| r.aor.as_str()),
            provider: self
                .ready
                .as_ref()
                .map(|r| (r.domain.as_str(), self.settings.pkg_url.as_str())),
            registration: &self.registration,
            sip_proxy: &self.settings.sip_proxy,
            local: self.ready.as_ref().map(|r| r.local),
            policy,
            periods: self.ready.as_ref().map_or(&no_periods, |r| &r.periods),
            now_unix: self.clock.unix(),
            calls: self.calls.len(),
            keylog: self.keylog.as_deref(),
            log_file: crate::agent::logging::current_file(),
            window: d::window_line(
                self.background.window_system().name(),
                self.background.tray(),
            ),
            errors: &self.recent_errors,
        })
    }

    /// Bounds `peer`'s conversation and saves them all; a failure is a
    /// banner (once), never a stop.
    fn save_messages(&mut self, peer: &str) {
        if let Some(lines) = self.conversations.get_mut(peer) {
            super::messages::trim(lines);
        }
        match self.messages.save(&self.conversations) {
            Ok(()) | Err(MessageError::NoKey) => {}
            Err(e) => self.banner(messages_sentence(&e), true),
        }
    }
}

/// The banner for a messages file problem: the error as a sentence, and
/// what happens next.
fn messages_sentence(e: &MessageError) -> String {
    let next = match e {
        MessageError::Damaged { .. } => " New messages are saved in a fresh file.",
        _ => "",
    };
    let text = e.to_string();
    let mut chars = text.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().to_string())
        .unwrap_or_default();
    format!("{first}{}.{next}", chars.as_str())
}

fn note<T>(r: Result<T, super::UiError>, what: &str, banners: &mut Vec<Banner>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            banners.push(Banner {
                text: format!("{what} could not be read ({e}); starting without."),
                error: true,
            });
            None
        }
    }
}
