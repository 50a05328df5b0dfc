//! The phone's main window: status bar in plain words ([`super::status`]:
//! "Ready", "Keys up to date"; details in tooltips and Settings), banners,
//! then the call views when a call exists, else the tabs (dial, contacts,
//! history, messages, settings).

use super::app::{Phase, PhoneApp, Tab};
use super::dial::PAD;
use super::history::{format_duration, format_time, Direction};
use super::status::{self, Tone};

/// Red for warnings and errors.
pub(crate) const RED: egui::Color32 = egui::Color32::from_rgb(200, 40, 40);
/// Green for verified identities.
pub(crate) const GREEN: egui::Color32 = egui::Color32::from_rgb(30, 140, 60);

/// A large button for the call's main actions (Call, Answer, Hang up):
/// bigger text and target, filled with `fill`, white text.
pub(crate) fn big_button(text: &str, fill: egui::Color32) -> egui::Button<'static> {
    egui::Button::new(
        egui::RichText::new(text.to_string())
            .size(18.0)
            .color(egui::Color32::WHITE),
    )
    .fill(fill)
    .min_size(egui::vec2(120.0, 40.0))
}

/// Draws the main window.
pub(crate) fn show(app: &mut PhoneApp, ctx: &egui::Context) {
    egui::TopBottomPanel::top("status").show(ctx, |ui| status_bar(app, ui));
    egui::CentralPanel::default().show(ctx, |ui| {
        banners(app, ui);
        super::renewal_code::show(app, ui);
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
            Tab::Settings => {
                egui::ScrollArea::vertical().show(ui, |ui| super::settings_view::show(app, ui));
            }
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
        let reg = status::connection(&app.registration);
        if reg.tone == Tone::Busy {
            ui.spinner();
        }
        status_item(ui, &reg);
        if let Some(r) = &app.ready {
            ui.separator();
            status_item(ui, &status::keys(&r.periods, app.clock.unix()));
        }
        if let Some(path) = &app.keylog {
            ui.separator();
            ui.colored_label(RED, keylog_warning(path));
        }
    });
}

/// One item of the status bar in its tone, the details as its tooltip.
fn status_item(ui: &mut egui::Ui, item: &status::Item) {
    let text = egui::RichText::new(&item.text);
    let r = match item.tone {
        Tone::Good => ui.label(text.color(GREEN).strong()),
        Tone::Busy => ui.label(text),
        Tone::Bad => ui.label(text.color(RED).strong()),
    };
    r.on_hover_text(&item.details);
}

/// The status-bar warning while the key log is on.
pub(crate) fn keylog_warning(path: &std::path::Path) -> String {
    format!(
        "⚠ Key log on: every call key is written to {} — anyone with that file can read your calls. Debugging only; start ibephone without --keylog.",
        path.display()
    )
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
        if ui.add(big_button("📞 Call", GREEN)).clicked() || enter {
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
