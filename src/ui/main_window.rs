//! The phone's main window: status bar (registration, keys with period
//! and expiry), banners, then the call views when a call exists, else the
//! tabs (dial, contacts, history, messages, settings).

use super::app::{Phase, PhoneApp, Registration, Tab};
use super::dial::PAD;
use super::history::{format_duration, format_time, Direction};

/// Red for warnings and errors.
pub const RED: egui::Color32 = egui::Color32::from_rgb(200, 40, 40);
/// Green for verified identities.
pub const GREEN: egui::Color32 = egui::Color32::from_rgb(30, 140, 60);

/// Draws the main window.
pub fn show(app: &mut PhoneApp, ctx: &egui::Context) {
    egui::TopBottomPanel::top("status").show(ctx, |ui| status_bar(app, ui));
    egui::CentralPanel::default().show(ctx, |ui| {
        banners(app, ui);
        if app.calls.iter().any(|c| c.phase == Phase::Incoming) {
            super::call_view::incoming(app, ui);
            ui.separator();
        }
        if app.calls.iter().any(|c| c.phase != Phase::Incoming) {
            // Scrolls: the security panel with the connection figures and
            // the SAS buttons must stay reachable in a small window.
            egui::ScrollArea::vertical().show(ui, |ui| super::call_view::in_call(app, ui));
            return;
        }
        ui.horizontal(|ui| {
            for (tab, name) in [
                (Tab::Dial, "Dial"),
                (Tab::Contacts, "Contacts"),
                (Tab::History, "History"),
                (Tab::Messages, "Messages"),
                (Tab::Settings, "Settings"),
            ] {
                ui.selectable_value(&mut app.tab, tab, name);
            }
        });
        ui.separator();
        match app.tab {
            Tab::Dial => dial_tab(app, ui),
            Tab::Contacts => super::contacts_view::contacts_tab(app, ui),
            Tab::History => history_tab(app, ui),
            Tab::Messages => super::contacts_view::messages_tab(app, ui),
            Tab::Settings => super::settings_view::show(app, ui),
        }
    });
}

fn status_bar(app: &PhoneApp, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        match &app.ready {
            Some(r) => {
                ui.strong(&r.aor);
            }
            None => {
                ui.strong("not set up");
            }
        }
        ui.separator();
        match &app.registration {
            Registration::Registered { expires } => {
                ui.colored_label(
                    GREEN,
                    format!("Ready: registered (refresh every {expires} s)"),
                );
            }
            Registration::Registering => {
                ui.spinner();
                ui.label("Registering…");
            }
            Registration::NotRegistered => {
                ui.label("Not registered");
            }
            Registration::Failed(s) => {
                ui.colored_label(RED, format!("Not registered: {s}"));
            }
        }
        if let Some(r) = &app.ready {
            ui.separator();
            ui.label(keys_line(&r.periods, &app.clock.unix()));
        }
        if let Some(path) = &app.keylog {
            ui.separator();
            ui.colored_label(RED, keylog_warning(path));
        }
    });
}

/// The status-bar warning while the key log is on.
pub fn keylog_warning(path: &std::path::Path) -> String {
    format!(
        "⚠ Key log on: every call key is written to {} — anyone with that file can read your calls. Debugging only; start ibephone without --keylog.",
        path.display()
    )
}

/// "Keys: 2026-12 (valid until 2027-01-01 00:00 UTC), next 2027-01 ready".
pub fn keys_line(periods: &[String], now_unix: &u64) -> String {
    let current = crate::ibe::Period::month_at(*now_unix);
    let next = current.next_month().ok();
    let has = |p: &str| periods.iter().any(|x| x == p);
    let mut s = if has(current.as_str()) {
        let until = next
            .as_ref()
            .map(|n| format!("{}-01 00:00 UTC", n.as_str()))
            .unwrap_or_default();
        format!("Keys: {} (valid until {until})", current.as_str())
    } else {
        format!(
            "No keys for {}: calls cannot be decrypted",
            current.as_str()
        )
    };
    if let Some(n) = next {
        if has(n.as_str()) {
            s.push_str(&format!(", next period {} ready", n.as_str()));
        } else {
            s.push_str(&format!(", next period {} not fetched yet", n.as_str()));
        }
    }
    s
}

fn banners(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let mut dismiss = None;
    for (i, b) in app.banners.iter().enumerate() {
        ui.horizontal_wrapped(|ui| {
            if b.error {
                ui.colored_label(RED, &b.text);
            } else {
                ui.label(&b.text);
            }
            if ui.small_button("OK").clicked() {
                dismiss = Some(i);
            }
        });
    }
    if let Some(i) = dismiss {
        app.banners.remove(i);
    }
    if !app.banners.is_empty() {
        ui.separator();
    }
}

fn dial_tab(app: &mut PhoneApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let l = ui.label("Call");
        let field = ui
            .add(
                egui::TextEdit::singleline(&mut app.dial)
                    .hint_text("bob, bob@biloxi.com or sip:bob@biloxi.com")
                    .desired_width(300.0),
            )
            .labelled_by(l.id);
        let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("📞 Call").clicked() || enter {
            let to = app.dial.clone();
            app.dial(&to);
        }
    });
    ui.add_space(8.0);
    egui::Grid::new("dial pad")
        .spacing([6.0, 6.0])
        .show(ui, |ui| {
            for (i, k) in PAD.iter().enumerate() {
                if ui
                    .add_sized([54.0, 40.0], egui::Button::new(k.to_string()))
                    .clicked()
                {
                    app.dial.push(*k);
                }
                if i % 3 == 2 {
                    ui.end_row();
                }
            }
        });
    if !app.dial.is_empty() && ui.button("⌫ Clear").clicked() {
        app.dial.clear();
    }
}

fn history_tab(app: &mut PhoneApp, ui: &mut egui::Ui) {
    if app.history.records().is_empty() {
        ui.label("No calls yet.");
        return;
    }
    let mut call = None;
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("history")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                ui.strong("");
                ui.strong("Peer");
                ui.strong("When");
                ui.strong("Duration");
                ui.strong("Security");
                ui.end_row();
                for r in app.history.records() {
                    ui.label(match r.direction {
                        Direction::Outgoing => "↗ out",
                        Direction::Incoming => "↙ in",
                        Direction::Missed => "✖ missed",
                    });
                    if ui.link(&r.peer).on_hover_text("Call back").clicked() {
                        call = Some(r.peer.clone());
                    }
                    ui.label(format_time(r.started_unix));
                    ui.label(
                        r.duration_secs
                            .map_or("not answered".into(), format_duration),
                    );
                    let label = r.security.label();
                    if matches!(r.security, super::history::Security::Plain) {
                        ui.colored_label(RED, label);
                    } else {
                        ui.label(label);
                    }
                    ui.end_row();
                }
            });
    });
    if let Some(peer) = call {
        app.dial(&peer);
    }
}
