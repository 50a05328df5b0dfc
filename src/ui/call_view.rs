//! The call views: an incoming call (caller with a "verified" badge only
//! when the caller's signature verified, otherwise a warning; answer or
//! reject) and the call in progress (timer, hang up, mute/hold/DTMF, and
//! the security panel).
//!
//! Mute, hold and DTMF send the agent's `mute`, `hold`/`resume` and `dtmf`
//! commands; the media facts of the security panel come from its
//! `media_started`/`media_updated` events.
//!
//! Call waiting: a call for us while another is up is drawn as a waiting
//! call (Answer puts the current call on hold, Decline answers 486 Busy);
//! with two calls up, the one not on hold is drawn in full and the other
//! gets a line with Switch (the agent's `swap`). Transfer: an address
//! field and a Transfer button (the agent's `transfer`, a blind transfer).
//! Whom the transferred call reaches is shown like any call: a new call
//! with its own verified badge.

use super::app::{Call, Phase, PhoneApp};
use super::dial::{split_identity, PAD};
use super::history::format_duration;
use super::main_window::{GREEN, RED};
use crate::agent::AgentCommand;

/// The "verified: sip:alice@…" badge, or the warning for an unproven caller.
pub fn identity_badge(ui: &mut egui::Ui, c: &Call) {
    match (&c.verified, c.tunneled) {
        (Some(id), true) => {
            let (aor, _) = split_identity(id);
            ui.colored_label(GREEN, format!("✔ verified: {aor}"));
        }
        (_, true) => {
            ui.colored_label(
                RED,
                "⚠ identity NOT verified: encrypted, but anyone could claim this name",
            );
        }
        (_, false) => {
            ui.colored_label(
                RED,
                "⚠ NOT encrypted and NOT verified: do not trust this caller's name",
            );
        }
    }
}

/// Draws every incoming call with answer and reject.
pub fn incoming(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let mut cmds = Vec::new();
    let talking = app.calls.iter().any(|c| c.phase != Phase::Incoming);
    for c in app.calls.iter().filter(|c| c.phase == Phase::Incoming) {
        ui.group(|ui| {
            if talking || c.waiting {
                ui.heading(format!("Call waiting: {}", contact_name(app, &c.peer)));
            } else {
                ui.heading(format!("Incoming call from {}", contact_name(app, &c.peer)));
            }
            identity_badge(ui, c);
            ui.horizontal(|ui| {
                if talking {
                    if ui.button("Answer (holds your call)").clicked() {
                        cmds.push(AgentCommand::Answer { call: c.id });
                    }
                    if ui.button("Decline").clicked() {
                        cmds.push(AgentCommand::Reject {
                            call: c.id,
                            status: Some(486),
                        });
                    }
                } else {
                    if ui.button("Answer").clicked() {
                        cmds.push(AgentCommand::Answer { call: c.id });
                    }
                    if ui.button("Reject").clicked() {
                        cmds.push(AgentCommand::Reject {
                            call: c.id,
                            status: Some(603),
                        });
                    }
                }
            });
        });
    }
    for c in cmds {
        app.command(c);
    }
}

fn contact_name(app: &PhoneApp, uri: &str) -> String {
    match app.contacts.find_by_uri(uri, &app.domain()) {
        Some(c) => format!("{} ({uri})", c.name),
        None => uri.to_string(),
    }
}

/// Draws the call in progress (the first one not incoming and not on
/// hold, else the first one not incoming), and a line with Switch for
/// each other call.
pub fn in_call(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let current = |c: &Call| c.phase != Phase::Incoming;
    let Some(idx) = app
        .calls
        .iter()
        .position(|c| current(c) && !c.held)
        .or_else(|| app.calls.iter().position(current))
    else {
        return;
    };
    let c = app.calls[idx].clone();
    let mut cmds = Vec::new();
    let mut local = Vec::new();
    let others: Vec<Call> = app
        .calls
        .iter()
        .filter(|o| current(o) && o.id != c.id)
        .cloned()
        .collect();
    for o in &others {
        ui.horizontal(|ui| {
            let what = if o.held { "On hold" } else { "Also in call" };
            ui.label(format!("{what}: {}", contact_name(app, &o.peer)));
            if ui.button(format!("Switch to {}", o.peer)).clicked() {
                cmds.push(AgentCommand::Swap { call: o.id });
            }
        });
    }
    if !others.is_empty() {
        ui.separator();
    }
    ui.heading(contact_name(app, &c.peer));
    match c.phase {
        Phase::Calling => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Calling…");
            });
        }
        Phase::Ringing => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Ringing…");
            });
        }
        Phase::Active(since) => {
            ui.label(format!(
                "In call {}",
                format_duration(app.clock.seconds_since(since))
            ));
        }
        Phase::Incoming => {}
    }
    if matches!(c.phase, Phase::Active(_)) {
        identity_badge(ui, &c);
    }
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        if ui
            .add(egui::Button::new("Hang up").fill(egui::Color32::from_rgb(180, 40, 40)))
            .clicked()
        {
            cmds.push(AgentCommand::Hangup { call: c.id });
        }
        if ui.button(if c.muted { "Unmute" } else { "Mute" }).clicked() {
            cmds.push(AgentCommand::Mute {
                call: c.id,
                on: !c.muted,
            });
            local.push(if c.muted {
                Local::Unmuted
            } else {
                Local::Muted
            });
        }
        if ui.button(if c.held { "Resume" } else { "Hold" }).clicked() {
            cmds.push(if c.held {
                AgentCommand::Resume { call: c.id }
            } else {
                AgentCommand::Hold { call: c.id }
            });
            local.push(if c.held { Local::Resumed } else { Local::Held });
        }
        ui.toggle_value(&mut app.show_security, "🔒 Security");
    });
    if matches!(c.phase, Phase::Active(_)) {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut app.transfer_to)
                    .hint_text("Transfer to (name or address)")
                    .desired_width(220.0),
            );
            let to = app.transfer_to.trim().to_string();
            let busy = c.transfer.is_some();
            if ui
                .add_enabled(!to.is_empty() && !busy, egui::Button::new("Transfer"))
                .clicked()
            {
                cmds.push(AgentCommand::Transfer { call: c.id, to });
                local.push(Local::Transferring);
            }
        });
        if let Some(t) = &c.transfer {
            ui.label(t);
        }
        ui.add_space(4.0);
        ui.label("Keypad (DTMF)");
        egui::Grid::new("dtmf").spacing([4.0, 4.0]).show(ui, |ui| {
            for (i, k) in PAD.iter().enumerate() {
                if ui.button(k.to_string()).clicked() {
                    cmds.push(AgentCommand::Dtmf {
                        call: c.id,
                        digits: k.to_string(),
                    });
                    local.push(Local::Digit(*k));
                }
                if i % 3 == 2 {
                    ui.end_row();
                }
            }
        });
    }
    if app.show_security && matches!(c.phase, Phase::Active(_)) {
        ui.separator();
        security_panel(app, ui, idx);
    }
    for change in local {
        let call = &mut app.calls[idx];
        match change {
            Local::Muted => call.muted = true,
            Local::Unmuted => call.muted = false,
            Local::Held => call.held = true,
            Local::Resumed => call.held = false,
            Local::Digit(k) => call.dtmf.push(k),
            Local::Transferring => {
                call.transfer = Some(format!("Transferring to {}…", app.transfer_to.trim()));
                app.transfer_to.clear();
            }
        }
    }
    for cmd in cmds {
        app.command(cmd);
    }
}

/// What a button changed in the call's local state.
enum Local {
    Muted,
    Unmuted,
    Held,
    Resumed,
    Digit(char),
    Transferring,
}

/// The security facts of call `idx`.
pub fn security_panel(app: &mut PhoneApp, ui: &mut egui::Ui, idx: usize) {
    let c = app.calls[idx].clone();
    let provider = app
        .ready
        .as_ref()
        .map(|r| r.params_fingerprint.clone())
        .unwrap_or_default();
    ui.heading("Security");
    egui::Grid::new("security")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            ui.label("Signaling");
            if c.tunneled {
                ui.colored_label(
                    GREEN,
                    format!(
                        "tunnel on ({}: CMS AuthEnvelopedData, AES-256-GCM, IBE over BLS12-381)",
                        crate::ibe::params::SUITE
                    ),
                );
            } else {
                ui.colored_label(RED, "NOT tunneled: anyone on the network can read it");
            }
            ui.end_row();
            ui.label(if c.outgoing {
                "Callee identity"
            } else {
                "Caller identity"
            });
            match &c.verified {
                Some(id) => ui.colored_label(GREEN, format!("verified: {}", split_identity(id).0)),
                None => ui.colored_label(RED, "not verified"),
            };
            ui.end_row();
            ui.label("Key period");
            ui.label(
                c.verified
                    .as_deref()
                    .and_then(|id| split_identity(id).1)
                    .unwrap_or("unknown"),
            );
            ui.end_row();
            ui.label("Provider fingerprint");
            ui.monospace(provider);
            ui.end_row();
            match &c.media {
                Some(m) => {
                    ui.label("Audio codec");
                    ui.label(&m.codec);
                    ui.end_row();
                    ui.label("Media cipher");
                    ui.label(&m.cipher);
                    ui.end_row();
                    ui.label("Escrow-resistant");
                    if m.escrow_resistant {
                        ui.colored_label(GREEN, "yes: the provider cannot listen in");
                    } else {
                        ui.colored_label(RED, "no: the provider could derive the media keys");
                    }
                    ui.end_row();
                }
                None => {
                    ui.label("Media");
                    ui.label("not reported by the agent for this call");
                    ui.end_row();
                }
            }
        });
    let sas = c
        .media
        .as_ref()
        .and_then(|m| m.sas.clone().map(|s| (s, m.sas_matches)));
    match &c.continuity {
        Some((true, message)) => {
            ui.add_space(6.0);
            ui.colored_label(GREEN, message);
        }
        Some((false, message)) => {
            ui.add_space(6.0);
            ui.colored_label(RED, message);
        }
        None => {}
    }
    let continued = matches!(c.continuity, Some((true, _)));
    let call_id = c.id;
    if let (Some((sas, verdict)), false) = (sas, continued) {
        ui.add_space(6.0);
        ui.label("Read this code aloud; the other side must see the same:");
        ui.heading(&sas);
        let mut set = None;
        ui.horizontal(|ui| {
            if ui.button("Matches").clicked() {
                set = Some(true);
            }
            if ui.button("Does not match").clicked() {
                set = Some(false);
            }
        });
        match verdict {
            Some(true) => {
                ui.colored_label(GREEN, "Code confirmed: nobody is in between.");
            }
            Some(false) => {
                ui.colored_label(
                    RED,
                    "The codes differ: someone may be listening. Hang up and call again.",
                );
            }
            None => {}
        }
        if let (Some(v), Some(m)) = (set, app.calls[idx].media.as_mut()) {
            m.sas_matches = Some(v);
        }
        if set == Some(true) {
            // Key continuity: later calls with this peer prove these keys.
            app.command(AgentCommand::ConfirmSas { call: call_id });
        }
    }
}
