//! The first-run wizard: the user's address (`alice@atlanta.com`) and
//! password, nothing else (the PKG and the SIP proxy are discovered from
//! the address's domain; manual ones sit under "Advanced"); then ONE
//! fingerprint to confirm, in its short form (80 bits, the full form a
//! click away: [`super::fingerprint_view`]): the provider certificate's
//! (it authenticates the connection that carries the parameters and the
//! services), or the parameters' when the certificate chains to the
//! platform's roots for the provider's host name (pkg-api.md
//! "Discovery"); then
//! login (asking for the one-time code when the account has a second
//! factor), key fetch, the device's SIP credential and registration with
//! a visible progress bar, until the phone is ready.

use super::app::PhoneApp;
use super::backend::{ProviderProbe, Request};
use super::settings::Settings;
use crate::agent::keys::{OtpCodes, SINGLE_PKG};
use crate::ibe::fingerprint;
use crate::pkg_client::api::SecretString;
use crate::pkg_client::first_contact::FirstTrust;
use zeroize::Zeroizing;

/// Where the wizard is.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Asking for the account.
    Account,
    /// Contacting the provider for its fingerprints.
    Probing,
    /// Showing the fingerprints to confirm.
    Confirm(ProviderProbe),
    /// The provider asks for the one-time code of the account's second
    /// factor (its authenticator app shows it).
    OneTimeCode,
    /// Logging in, fetching keys, registering.
    Working {
        /// Step from 1.
        step: u32,
        /// Steps.
        of: u32,
        /// What happens.
        what: String,
    },
    /// The agent runs; waiting for the registration.
    Registering,
}

/// The wizard's fields and step.
pub struct Wizard {
    /// The user's address, `alice@atlanta.com`.
    pub address: String,
    /// The PKG's URL (Advanced; empty: discovered from the address).
    pub url: String,
    /// Password (wiped on drop).
    pub password: Zeroizing<String>,
    /// SIP proxy `ip:port` (Advanced; empty: discovered).
    pub sip_proxy: String,
    /// Our SIP address `ip:port`.
    pub sip_listen: String,
    /// One-time code of the second factor (wiped on drop).
    pub otp: Zeroizing<String>,
    /// The key servers of a threshold provider that asked for a code
    /// (each has its own seed); empty: one PKG, one code ([`Wizard::otp`]).
    pub otp_servers: Vec<u32>,
    /// One code per server of `otp_servers` (wiped on drop).
    pub server_otps: Vec<Zeroizing<String>>,
    /// The certificate and parameter fingerprints the user confirmed, for
    /// logging in again with the one-time code.
    pub confirmed: Option<([u8; 32], [u8; 32])>,
    /// The step shown.
    pub step: Step,
    /// The last error sentence.
    pub error: Option<String>,
}

impl Wizard {
    /// A wizard prefilled from saved settings (never the password). A
    /// first run (no provider yet) leaves the SIP proxy empty: discovered,
    /// not the loopback default.
    pub fn from_settings(s: &Settings) -> Self {
        let first_run = s.pkg_url.trim().is_empty();
        let address = match s.pkg_domain.as_deref() {
            Some(d) if !s.user.is_empty() => format!("{}@{d}", s.user),
            _ => String::new(),
        };
        Wizard {
            address,
            url: s.pkg_url.clone(),
            password: Zeroizing::new(String::new()),
            otp: Zeroizing::new(String::new()),
            otp_servers: Vec::new(),
            server_otps: Vec::new(),
            confirmed: None,
            sip_proxy: if first_run {
                String::new()
            } else {
                s.sip_proxy.clone()
            },
            sip_listen: s.sip_listen.clone(),
            step: Step::Account,
            error: None,
        }
    }

    /// The user part of the address (`alice` of `alice@atlanta.com`).
    pub fn user(&self) -> String {
        let a = self.address.trim();
        let a = a.strip_prefix("sip:").unwrap_or(a);
        a.rsplit_once('@').map_or(a, |(u, _)| u).to_string()
    }

    /// The settings this wizard sets up, the rest taken from `base`.
    pub fn settings(&self, base: &Settings) -> Settings {
        Settings {
            pkg_url: self.url.trim().to_string(),
            user: self.user(),
            pkg_domain: crate::pkg_client::discovery::domain_of(&self.address).ok(),
            sip_proxy: self.sip_proxy.trim().to_string(),
            sip_listen: self.sip_listen.trim().to_string(),
            ..base.clone()
        }
    }

    /// The provider answered: what it found fills what the user left empty.
    pub(crate) fn probed(&mut self, probe: ProviderProbe) {
        self.error = None;
        self.url = probe.url.clone();
        if let Some(proxy) = &probe.sip_proxy {
            self.sip_proxy = proxy.clone();
        }
        self.step = Step::Confirm(probe);
    }

    pub(crate) fn progress(&mut self, step: u32, of: u32, what: String) {
        self.step = Step::Working { step, of, what };
    }

    pub(crate) fn otp_required(&mut self, servers: Vec<u32>) {
        self.error = None;
        self.otp = Zeroizing::new(String::new());
        self.server_otps = servers
            .iter()
            .map(|_| Zeroizing::new(String::new()))
            .collect();
        self.otp_servers = servers;
        self.step = Step::OneTimeCode;
    }

    /// Empties every code field (each code works once).
    fn clear_codes(&mut self) {
        self.otp = Zeroizing::new(String::new());
        for c in &mut self.server_otps {
            *c = Zeroizing::new(String::new());
        }
    }

    pub(crate) fn failed(&mut self, message: String) {
        self.error = Some(message);
        if self.step != Step::Registering {
            self.step = Step::Account;
        }
    }

    pub(crate) fn ready(&mut self) {
        self.password = Zeroizing::new(String::new());
        self.clear_codes();
        self.confirmed = None;
        self.step = Step::Registering;
    }
}

fn labelled_edit(ui: &mut egui::Ui, label: &str, value: &mut String, password: bool, hint: &str) {
    ui.horizontal(|ui| {
        let l = ui.add_sized([130.0, 20.0], egui::Label::new(label));
        ui.add(
            egui::TextEdit::singleline(value)
                .password(password)
                .hint_text(hint)
                .desired_width(320.0),
        )
        .labelled_by(l.id);
    });
}

/// Draws the wizard.
pub fn show(app: &mut PhoneApp, ctx: &egui::Context) {
    egui::CentralPanel::default().show(ctx, |ui| {
        ui.heading("Set up ibephone");
        ui.label("Your provider gives you an address and a password. Your calls are then encrypted to your contacts' addresses, with no further setup.");
        ui.separator();
        if let Some(e) = &app.wizard.error {
            ui.colored_label(egui::Color32::from_rgb(200, 40, 40), e);
            ui.add_space(6.0);
        }
        let step = app.wizard.step.clone();
        match step {
            Step::Account => account(app, ui),
            Step::Probing => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Contacting your provider…");
                });
            }
            Step::Confirm(ProviderProbe {
                url,
                trust,
                cert_fingerprint: cert,
                params_fingerprint: params,
                domain,
                ..
            }) => {
                match trust {
                    // The certificate is vouched for by the platform's
                    // roots for the provider's host name: the keys'
                    // (parameter) fingerprint is what remains to compare.
                    FirstTrust::PlatformRoots => {
                        ui.label(format!("Your provider {domain}'s keys:"));
                        ui.add_space(4.0);
                        // From the bytes the user confirms, not a string.
                        super::fingerprint_view::show(ui, "params", &fingerprint::full(&params));
                        ui.add_space(4.0);
                        ui.label(format!("{url} is certified for its name. Compare these groups with the ones your provider gave you (on paper, their web site or by phone)."));
                    }
                    FirstTrust::Certificate => {
                        ui.label(format!("Your provider {domain} at {url} shows this fingerprint. Compare it with the one your provider gave you (on paper, their web site or by phone)."));
                        ui.add_space(6.0);
                        super::fingerprint_view::show(ui, "cert", &fingerprint::full(&cert));
                    }
                }
                ui.add_space(8.0);
                ui.horizontal(|ui| {
                    if ui.button("They match: log in").clicked() {
                        app.wizard.confirmed = Some((cert, params));
                        log_in(app, OtpCodes::new());
                    }
                    if ui.button("They do not match").clicked() {
                        app.wizard.step = Step::Account;
                        app.wizard.error = Some("Do not use this provider address: someone may be in between. Ask your provider for the right address and fingerprints.".into());
                    }
                });
            }
            Step::OneTimeCode => one_time_code(app, ui),
            Step::Working { step, of, what } => {
                ui.add(
                    egui::ProgressBar::new(step as f32 / of.max(1) as f32)
                        .show_percentage()
                        .animate(true),
                );
                ui.label(format!("Step {step} of {of}: {what}…"));
            }
            Step::Registering => {
                ui.add(egui::ProgressBar::new(0.95).animate(true));
                ui.label("Keys saved. Registering with the network…");
                if let Some(servers) = app.ready.as_ref().and_then(|r| r.key_servers.clone()) {
                    ui.label(servers);
                }
                if ui.button("Continue to the phone").clicked() {
                    app.screen = super::app::Screen::Phone;
                }
            }
        }
    });
}

/// Sends the setup with the confirmed fingerprints (and the one-time code
/// once asked for).
fn log_in(app: &mut PhoneApp, otp: OtpCodes) {
    let Some((pin, params_fingerprint)) = app.wizard.confirmed else {
        app.wizard.step = Step::Account;
        return;
    };
    let settings = app.wizard.settings(&app.settings);
    let password = crate::pkg_client::api::SecretString::new(app.wizard.password.to_string());
    app.wizard.step = Step::Working {
        step: 0,
        of: 4,
        what: "Starting".into(),
    };
    app.request(Request::Setup {
        settings,
        pin,
        params_fingerprint,
        password,
        otp,
    });
}

fn one_time_code(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let six = |c: &str| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit());
    let w = &mut app.wizard;
    let ready = if w.otp_servers.is_empty() {
        ui.label("Your account has a second factor. Enter the 6-digit code your authenticator app shows now.");
        ui.add_space(6.0);
        labelled_edit(ui, "One-time code", &mut w.otp, false, "123456");
        six(w.otp.trim())
    } else {
        ui.label("Your account has a second factor at each of your provider's key servers. Enter the 6-digit code your authenticator app shows now for each server.");
        ui.add_space(6.0);
        for (server, code) in w.otp_servers.iter().zip(w.server_otps.iter_mut()) {
            labelled_edit(
                ui,
                &format!("Code for key server {server}"),
                code,
                false,
                "123456",
            );
        }
        w.server_otps.iter().all(|c| six(c.trim()))
    };
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        if ui
            .add_enabled(ready, egui::Button::new("Log in with the code"))
            .clicked()
        {
            let w = &mut app.wizard;
            let codes: OtpCodes = if w.otp_servers.is_empty() {
                [(SINGLE_PKG, SecretString::new(w.otp.trim().to_string()))].into()
            } else {
                w.otp_servers
                    .iter()
                    .zip(&w.server_otps)
                    .map(|(s, c)| (*s, SecretString::new(c.trim().to_string())))
                    .collect()
            };
            w.clear_codes();
            log_in(app, codes);
        }
        if ui.button("Cancel").clicked() {
            app.wizard.clear_codes();
            app.wizard.step = Step::Account;
        }
    });
    if !ready {
        ui.weak("The code has 6 digits.");
    }
}

fn account(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let w = &mut app.wizard;
    labelled_edit(
        ui,
        "Your address",
        &mut w.address,
        false,
        "alice@atlanta.com",
    );
    labelled_edit(ui, "Password", &mut w.password, true, "");
    egui::CollapsingHeader::new("Advanced: provider and SIP network")
        .default_open(false)
        .show(ui, |ui| {
            labelled_edit(
                ui,
                "Provider address",
                &mut w.url,
                false,
                "found from your address",
            );
            labelled_edit(
                ui,
                "SIP proxy",
                &mut w.sip_proxy,
                false,
                "found from your address",
            );
            labelled_edit(
                ui,
                "This phone's address",
                &mut w.sip_listen,
                false,
                "127.0.0.1:0",
            );
        });
    ui.add_space(8.0);
    let ready = w.address.contains('@') && !w.password.is_empty();
    if ui
        .add_enabled(ready, egui::Button::new("Connect"))
        .clicked()
    {
        let probe = Request::Probe {
            address: w.address.trim().to_string(),
            url: w.url.trim().to_string(),
            sip_proxy: w.sip_proxy.trim().to_string(),
        };
        w.error = None;
        w.step = Step::Probing;
        app.request(probe);
    }
    if !ready {
        ui.weak("Fill in your address (such as alice@atlanta.com) and your password.");
    }
}

/// Draws the start-up screen while the phone starts from stored keys.
pub fn show_starting(app: &mut PhoneApp, ctx: &egui::Context) {
    egui::CentralPanel::default().show(ctx, |ui| {
        ui.heading("ibephone");
        for b in &app.banners {
            let color = if b.error {
                egui::Color32::from_rgb(200, 40, 40)
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, &b.text);
        }
        match &app.progress {
            Some((step, of, what)) => {
                ui.add(egui::ProgressBar::new(*step as f32 / (*of).max(1) as f32).animate(true));
                ui.label(format!("{what}…"));
            }
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Starting with your stored keys…");
                });
            }
        }
        if ui.button("Log out and set up again").clicked() {
            app.request(Request::LogOut);
        }
    });
}
