//! The provider's renewed certificate, shown for consent: the old and the
//! new fingerprint and why the new one may be trusted (it chains to this
//! computer's trusted roots for the PKG's host name, with unchanged
//! parameters; see
//! [`recheck_certificate`](crate::pkg_client::first_contact::recheck_certificate)).
//! Accepting pins the new one; refusing leaves the provider refused, as
//! any other changed certificate is.

use super::app::PhoneApp;
use super::backend::Request;
use crate::ibe::fingerprint::full;

/// The window's title (tests find it by it).
pub const TITLE: &str = "Your provider's certificate changed";
/// The accept button.
pub const ACCEPT: &str = "Accept the new certificate";
/// The refuse button.
pub const REFUSE: &str = "Refuse";

/// Draws the question while a renewal waits for the user's answer.
pub fn show(app: &mut PhoneApp, ctx: &egui::Context) {
    let Some(r) = app.certificate_renewal.clone() else {
        return;
    };
    let mut answer = None;
    egui::Window::new(TITLE)
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
        .show(ctx, |ui| {
            ui.add(egui::Label::new(&r.reason).wrap());
            ui.add_space(6.0);
            super::fingerprint_view::show_compact(ui, "old", "Old certificate:", &full(&r.old));
            super::fingerprint_view::show_compact(ui, "new", "New certificate:", &full(&r.new));
            ui.add_space(6.0);
            ui.add(
                egui::Label::new(
                    "If you did not expect a change, refuse and ask your provider's \
                     administrator first: until you accept, the phone does not talk to it.",
                )
                .wrap(),
            );
            ui.horizontal(|ui| {
                if ui.button(ACCEPT).clicked() {
                    answer = Some(true);
                }
                if ui.button(REFUSE).clicked() {
                    answer = Some(false);
                }
            });
        });
    match answer {
        Some(true) => {
            app.certificate_renewal = None;
            app.request(Request::AcceptCertificate {
                old: r.old,
                new: r.new,
            });
        }
        Some(false) => {
            app.certificate_renewal = None;
            app.banner(
                format!(
                    "You refused the provider's new certificate: the phone does not talk to {} \
                     until its administrator confirms the change (log out and set up again then).",
                    r.host
                ),
                true,
            );
        }
        None => {}
    }
}
