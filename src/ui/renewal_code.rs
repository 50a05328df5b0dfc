//! The one-time code for a key renewal in the background (pkg-api.md
//! "Second factor at login"): when the provider asks for the code of the
//! account's second factor, the phone keeps working on the keys it holds
//! and shows this notice with a field for the code (one per key server of
//! a threshold provider, each has its own seed), instead of making the
//! user set up again. A refused code leaves everything as it was and the
//! field in place.

use super::app::PhoneApp;
use super::backend::Request;
use crate::agent::keys::{OtpCodes, SINGLE_PKG};
use crate::pkg_client::api::SecretString;
use zeroize::Zeroizing;

/// A renewal waiting for the user's one-time code(s).
#[derive(Default)]
pub struct RenewalCode {
    /// The key servers that want a code ([`SINGLE_PKG`] alone for a
    /// provider with one PKG).
    pub servers: Vec<u32>,
    /// The codes typed so far, one per server (wiped on drop).
    pub codes: Vec<Zeroizing<String>>,
    /// Why the last code was refused, for people.
    pub error: Option<String>,
    /// The codes were sent; waiting for the answer.
    pub sending: bool,
}

impl RenewalCode {
    /// A notice asking for the codes of `servers` (empty: one PKG).
    pub fn new(servers: Vec<u32>) -> Self {
        let servers = if servers.is_empty() {
            vec![SINGLE_PKG]
        } else {
            servers
        };
        RenewalCode {
            codes: servers
                .iter()
                .map(|_| Zeroizing::new(String::new()))
                .collect(),
            servers,
            error: None,
            sending: false,
        }
    }

    /// The codes asked for again after a refusal: the fields emptied (each
    /// code works once), the reason kept for the user.
    pub fn refused(&mut self, why: String) {
        self.error = Some(why);
        self.sending = false;
        for c in &mut self.codes {
            *c = Zeroizing::new(String::new());
        }
    }
}

/// Whether `code` looks like a TOTP code (6 digits).
fn well_formed(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The field's label for `server`.
fn label(server: u32) -> String {
    if server == SINGLE_PKG {
        "One-time code".to_string()
    } else {
        format!("Code for key server {server}")
    }
}

/// Draws the notice and its fields when a renewal waits for a code.
pub(crate) fn show(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let Some(r) = app.renewal_code.as_mut() else {
        return;
    };
    ui.label("Your provider asks for the one-time code from your authenticator app to fetch your next keys. The phone keeps working with the keys it has meanwhile.");
    if r.servers.len() > 1 || r.servers.first() != Some(&SINGLE_PKG) {
        ui.weak("Each key server of your provider has its own entry in your authenticator app.");
    }
    if let Some(e) = &r.error {
        ui.colored_label(egui::Color32::from_rgb(200, 40, 40), e);
    }
    for (server, code) in r.servers.iter().zip(r.codes.iter_mut()) {
        ui.horizontal(|ui| {
            let l = ui.label(label(*server));
            ui.add(
                egui::TextEdit::singleline(&mut **code)
                    .hint_text("123456")
                    .desired_width(120.0),
            )
            .labelled_by(l.id);
        });
    }
    let ready = !r.sending && r.codes.iter().all(|c| well_formed(c.trim()));
    let mut send = None;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(ready, egui::Button::new("Fetch keys with the code"))
            .clicked()
        {
            let codes: OtpCodes = r
                .servers
                .iter()
                .zip(r.codes.iter())
                .map(|(s, c)| (*s, SecretString::new(c.trim().to_string())))
                .collect();
            for c in &mut r.codes {
                *c = Zeroizing::new(String::new());
            }
            r.sending = true;
            r.error = None;
            send = Some(codes);
        }
        if r.sending {
            ui.spinner();
        }
    });
    ui.separator();
    if let Some(codes) = send {
        app.request(Request::RenewalCodes(codes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_for_one_pkg_and_one_per_threshold_server() {
        let one = RenewalCode::new(vec![]);
        assert_eq!(one.servers, [SINGLE_PKG]);
        assert_eq!(label(one.servers[0]), "One-time code");
        let t = RenewalCode::new(vec![1, 3]);
        assert_eq!(t.codes.len(), 2);
        assert_eq!(label(3), "Code for key server 3");
        assert!(well_formed("012345"));
        assert!(!well_formed("12345") && !well_formed("12345a"));
    }

    #[test]
    fn a_refusal_empties_the_fields_and_keeps_the_reason() {
        let mut r = RenewalCode::new(vec![]);
        r.codes[0] = Zeroizing::new("123456".into());
        r.sending = true;
        r.refused("wrong".into());
        assert!(r.codes[0].is_empty() && !r.sending);
        assert_eq!(r.error.as_deref(), Some("wrong"));
    }
}
