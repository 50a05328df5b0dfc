//! The settings tab: security policy, privacy, ring volume, audio devices,
//! SIP addresses, the provider's fingerprints, and logging out (which
//! wipes the keys). Changes that the agent needs restart it.

use super::app::PhoneApp;
use super::backend::Request;
use super::main_window::RED;
use crate::agent::filter::SecurityPolicy;

/// Draws the settings.
pub fn show(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let d = &mut app.settings_draft;
    egui::Grid::new("settings").num_columns(2).show(ui, |ui| {
        ui.label("Unprotected calls");
        ui.vertical(|ui| {
            ui.radio_value(
                &mut d.policy,
                SecurityPolicy::Require,
                "require: refuse them (recommended)",
            );
            ui.radio_value(
                &mut d.policy,
                SecurityPolicy::Ask,
                "ask: let them ring, marked unprotected",
            );
            ui.radio_value(
                &mut d.policy,
                SecurityPolicy::AllowPlain,
                "allow-plain: accept them, marked unprotected",
            );
        });
        ui.end_row();
        ui.label("Privacy");
        ui.checkbox(
            &mut d.privacy,
            "hide who I call from the network (anonymous outer From)",
        );
        ui.end_row();
        ui.label("Ring volume");
        ui.add(egui::Slider::new(&mut d.ring_volume, 0.0..=1.0).show_value(true));
        ui.end_row();
        for (label, dev) in [
            ("Microphone", &mut d.input_device),
            ("Speaker", &mut d.output_device),
        ] {
            let l = ui.label(label);
            let mut name = dev.clone().unwrap_or_default();
            if ui
                .add(egui::TextEdit::singleline(&mut name).hint_text("system default"))
                .labelled_by(l.id)
                .changed()
            {
                *dev = Some(name.trim().to_string()).filter(|n| !n.is_empty());
            }
            ui.end_row();
        }
        let l = ui.label("SIP proxy");
        ui.text_edit_singleline(&mut d.sip_proxy).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("This phone's address");
        ui.text_edit_singleline(&mut d.sip_listen).labelled_by(l.id);
        ui.end_row();
    });
    let changed = app.settings_draft != app.settings;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(changed, egui::Button::new("Apply"))
            .clicked()
        {
            match app.settings_draft.save(&app.dirs.settings()) {
                Ok(()) => {
                    app.settings = app.settings_draft.clone();
                    app.request(Request::StartStored {
                        settings: app.settings.clone(),
                    });
                    app.calls.clear();
                    app.banner("Settings saved; the phone restarts with them.", false);
                }
                Err(e) => app.banner(format!("The settings could not be saved ({e})."), true),
            }
        }
        if changed && ui.button("Undo changes").clicked() {
            app.settings_draft = app.settings.clone();
        }
    });
    ui.separator();
    if let Some(r) = &app.ready {
        ui.label(format!("Provider: {} ({})", r.domain, app.settings.pkg_url));
        ui.label(format!("Parameter fingerprint: {}", r.params_fingerprint));
        if let Some(fp) = &r.pkg_fingerprint {
            ui.label(format!("PKG certificate: {}", super::wizard::group_hex(fp)));
        }
        ui.label(format!("Keys held for: {}", r.periods.join(", ")));
    }
    ui.separator();
    if app.confirm_logout {
        ui.colored_label(RED, "Log out? Your keys are wiped from this computer; you need your password to set up again.");
        ui.horizontal(|ui| {
            if ui.button("Yes, log out and wipe keys").clicked() {
                app.confirm_logout = false;
                app.request(Request::LogOut);
            }
            if ui.button("Cancel").clicked() {
                app.confirm_logout = false;
            }
        });
    } else if ui.button("Log out").clicked() {
        app.confirm_logout = true;
    }
}
