//! The settings tab: security policy, privacy, ring volume, audio devices,
//! voice processing, start at login, SIP addresses, the provider's
//! fingerprints, logging out (which wipes the keys) and quitting. Changes
//! that the agent needs restart it.

use super::app::PhoneApp;
use super::audio_devices::{Devices, SYSTEM_DEFAULT};
use super::backend::Request;
use super::main_window::RED;
use crate::agent::filter::SecurityPolicy;
use crate::pkg_client::tls::parse_fingerprint;

/// Draws the settings.
pub(crate) fn show(app: &mut PhoneApp, ui: &mut egui::Ui) {
    app.devices.poll();
    let ctx = ui.ctx().clone();
    app.devices.start(move || ctx.request_repaint());
    let mut refresh = false;
    let mut autostart_result = None;
    let app_autostart = app.autostart_path.as_deref();
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
        ui.label("Across NATs");
        ui.checkbox(
            &mut d.ice,
            "ICE with the provider's STUN server and relay (audio behind home routers)",
        );
        ui.end_row();
        ui.label("Ring volume");
        ui.add(egui::Slider::new(&mut d.ring_volume, 0.0..=1.0).show_value(true));
        ui.end_row();
        let list = app.devices.list();
        let none = Vec::new();
        for (label, dev, names) in [
            (
                "Microphone",
                &mut d.input_device,
                list.map_or(&none, |l| &l.inputs),
            ),
            (
                "Speaker",
                &mut d.output_device,
                list.map_or(&none, |l| &l.outputs),
            ),
        ] {
            let l = ui.label(label);
            device_combo(ui, label, dev, names).labelled_by(l.id);
            ui.end_row();
        }
        ui.label("");
        ui.horizontal(|ui| match list {
            None => {
                ui.spinner();
                ui.weak("Listing the sound devices…");
            }
            Some(l) => {
                if let Some(note) = &l.note {
                    ui.weak(note);
                }
                if ui.small_button("Refresh devices").clicked() {
                    refresh = true;
                }
            }
        });
        ui.end_row();
        ui.label("Voice");
        ui.checkbox(
            &mut d.voice_processing,
            "cancel echo, reduce noise, level my voice (recommended)",
        )
        .on_hover_text("Keeps your speaker's sound out of your microphone, so the other side does not hear itself. Turn it off with a headset if your voice sounds cut.");
        ui.end_row();
        ui.label("Start at login");
        start_at_login(app_autostart, ui, &mut autostart_result);
        ui.end_row();
        let l = ui.label("SIP proxy");
        ui.text_edit_singleline(&mut d.sip_proxy).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("This phone's address");
        ui.text_edit_singleline(&mut d.sip_listen).labelled_by(l.id);
        ui.end_row();
    });
    if refresh {
        app.devices = Devices::NotListed;
    }
    match autostart_result {
        Some(Ok(true)) => app.banner("ibephone now starts in the tray when you log in.", false),
        Some(Ok(false)) => app.banner("ibephone no longer starts when you log in.", false),
        Some(Err(e)) => app.banner(format!("Start at login could not be changed ({e})."), true),
        None => {}
    }
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
        super::fingerprint_view::show_compact(
            ui,
            "params",
            "Parameter fingerprint:",
            &r.params_fingerprint,
        );
        if let Some(fp) = r.pkg_fingerprint.as_deref().and_then(parse_fingerprint) {
            super::fingerprint_view::show_compact(
                ui,
                "pkg",
                "PKG certificate:",
                &crate::ibe::fingerprint::full(&fp),
            );
        }
        if let Some(servers) = &r.key_servers {
            ui.label(format!("Key servers: {servers}"));
        }
        ui.label(format!("Keys held for: {}", r.periods.join(", ")));
        ui.label(super::status::keys_details(&r.periods, app.clock.unix()));
        ui.label(super::status::connection(&app.registration).details);
    }
    ui.separator();
    ui.horizontal(|ui| {
        if ui
            .button("Copy diagnostics")
            .on_hover_text("Versions, registration, transport, keys and recent errors, for a support request; no passwords, keys or messages.")
            .clicked()
        {
            let text = app.diagnostics();
            ui.ctx().copy_text(text.clone());
            app.diagnostics_copied = Some(text);
        }
        if app.diagnostics_copied.is_some() {
            ui.weak("Copied to the clipboard.");
        }
    });
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
    } else {
        ui.horizontal(|ui| {
            if ui.button("Log out").clicked() {
                app.confirm_logout = true;
            }
            if ui
                .button("Quit ibephone")
                .on_hover_text("Ends the phone: calls no longer reach you until you start it again (closing the window keeps it running).")
                .clicked()
            {
                app.quit();
            }
        });
    }
}

/// The "Start at login" switch: the autostart entry's presence, changed at
/// once (not on Apply: it is a file of the desktop, not a phone setting).
/// `result`: what a change did (Ok(on) or the error).
fn start_at_login(
    path: Option<&std::path::Path>,
    ui: &mut egui::Ui,
    result: &mut Option<Result<bool, super::UiError>>,
) {
    let Some(path) = path else {
        ui.weak("not available: no configuration directory (set HOME or XDG_CONFIG_HOME)");
        return;
    };
    let mut on = super::autostart::is_enabled(path);
    let r = ui
        .checkbox(&mut on, "start ibephone in the tray when I log in")
        .on_hover_text(format!("Changes at once: {}", path.display()));
    if r.changed() {
        *result = Some(
            std::env::current_exe()
                .map_err(|e| super::UiError::Input(format!("this program's path is unknown: {e}")))
                .and_then(|exe| super::autostart::set(path, on, &exe))
                .map(|()| on),
        );
    }
}

/// A combo box of "system default" and the listed `names`; a stored name
/// that is not listed (unplugged) stays selectable, marked "not found".
fn device_combo(
    ui: &mut egui::Ui,
    label: &str,
    dev: &mut Option<String>,
    names: &[String],
) -> egui::Response {
    let missing = dev.as_ref().filter(|n| !names.contains(n)).cloned();
    let shown = match (&*dev, &missing) {
        (None, _) => SYSTEM_DEFAULT.to_string(),
        (Some(n), Some(_)) => format!("{n} (not found)"),
        (Some(n), None) => n.clone(),
    };
    egui::ComboBox::from_id_salt(label)
        .selected_text(shown)
        .width(320.0)
        .show_ui(ui, |ui| {
            ui.selectable_value(dev, None, SYSTEM_DEFAULT);
            for n in names.iter().chain(&missing) {
                ui.selectable_value(dev, Some(n.clone()), n.as_str());
            }
        })
        .response
}
