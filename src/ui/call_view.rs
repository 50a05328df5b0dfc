//! The call views: an incoming call (caller with a "verified" badge only
//! when the caller's signature verified, otherwise a warning; answer or
//! reject) and the call in progress (timer, hang up, mute/hold/DTMF, and
//! the security panel).
//!
//! Mute, hold and DTMF send the agent's `mute`, `hold`/`resume` and `dtmf`
//! commands; the media facts of the security panel come from its
//! `media_started`/`media_updated` events, the quality line (and its
//! numbers, in its tooltip and the security panel) from `media_stats`
//! ([`quality`]).
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
use super::main_window::{big_button, GREEN, RED};

/// The fill of Hang up, Reject and Decline.
const HANG_UP: egui::Color32 = egui::Color32::from_rgb(180, 40, 40);
use crate::agent::media::MediaCounters;
use crate::agent::AgentCommand;

/// How good a call's connection is, in plain words (see [`quality`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QualityLevel {
    /// No RTCP figures yet (the first reports take a few seconds) or none
    /// at all (a peer without rtcp-mux).
    Unknown,
    /// Loss under 2 %, round trip under 250 ms, jitter under 30 ms.
    Good,
    /// Loss under 5 %, round trip under 400 ms, jitter under 50 ms.
    Fair,
    /// Worse: words go missing or the delay gets in the way of talking.
    Poor,
}

/// The quality line of a call: its level, one short sentence for the call
/// screen and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quality {
    /// The level.
    pub level: QualityLevel,
    /// E.g. "Good connection · 42 ms" or "Poor connection: 8% loss".
    pub line: String,
    /// The figures, e.g. "round trip 42 ms · you receive: 0.0% lost (0
    /// packets), jitter 1 ms · they receive: 0.0% lost (0 packets), jitter 1 ms".
    pub details: String,
    /// The same figures as (label, value) rows for the security panel.
    pub rows: [(&'static str, String); 3],
}

fn percent(permille: u32) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// Judges a call's connection from its media counters. The loss is the
/// worse of the two directions (what we measure of the peer's stream,
/// what the peer reports of ours), so a call that sounds bad on either
/// side says so. The thresholds follow the usual VoIP rules of thumb
/// (ITU-T G.114's 400 ms for the round trip in two halves, a few percent
/// of loss for G.711 with concealment).
pub(crate) fn quality(s: &MediaCounters) -> Quality {
    let loss = s.loss_permille.max(s.peer_loss_permille.unwrap_or(0));
    let jitter = s.jitter_ms.max(s.peer_jitter_ms.unwrap_or(0));
    let measured = s.rtt_ms.is_some() || s.peer_loss_permille.is_some();
    let level = if !measured {
        QualityLevel::Unknown
    } else if loss >= 50 || s.rtt_ms.is_some_and(|r| r >= 400) || jitter >= 50 {
        QualityLevel::Poor
    } else if loss >= 20 || s.rtt_ms.is_some_and(|r| r >= 250) || jitter >= 30 {
        QualityLevel::Fair
    } else {
        QualityLevel::Good
    };
    let rounded = (loss + 5) / 10;
    let why = if loss >= 20 {
        format!("{rounded}% loss")
    } else if jitter >= 30 && s.rtt_ms.is_none_or(|r| r < 250) {
        format!("{jitter} ms jitter")
    } else {
        match s.rtt_ms {
            Some(r) => format!("{r} ms"),
            None => format!("{rounded}% loss"),
        }
    };
    let line = match level {
        QualityLevel::Unknown => "Connection quality: measuring…".to_string(),
        QualityLevel::Good => format!("Good connection · {why}"),
        QualityLevel::Fair => format!("Fair connection: {why}"),
        QualityLevel::Poor => format!("Poor connection: {why}"),
    };
    let rtt = match s.rtt_ms {
        Some(r) => format!("{r} ms"),
        None => "not measured yet".to_string(),
    };
    let ours = format!(
        "{} lost ({} packets), jitter {} ms",
        percent(s.loss_permille),
        s.lost,
        s.jitter_ms
    );
    let theirs = match s.peer_loss_permille {
        Some(p) => format!(
            "{} lost ({} packets), jitter {} ms",
            percent(p),
            s.peer_lost.unwrap_or(0),
            s.peer_jitter_ms.unwrap_or(0)
        ),
        None => "no report yet".to_string(),
    };
    let details = format!("round trip {rtt} · you receive: {ours} · they receive: {theirs}");
    Quality {
        level,
        line,
        details,
        rows: [
            ("Round trip", rtt),
            ("You receive", ours),
            ("They receive", theirs),
        ],
    }
}

/// The quality line of call `c` with its numbers as a tooltip.
fn quality_line(ui: &mut egui::Ui, c: &Call) {
    let Some(stats) = &c.stats else {
        return;
    };
    let q = quality(stats);
    let color = match q.level {
        QualityLevel::Unknown => ui.visuals().weak_text_color(),
        QualityLevel::Good => GREEN,
        QualityLevel::Fair => egui::Color32::from_rgb(220, 170, 40),
        QualityLevel::Poor => RED,
    };
    ui.colored_label(color, q.line).on_hover_text(q.details);
}

/// The "verified: sip:alice@…" badge, or the warning for an unproven caller.
pub(crate) fn identity_badge(ui: &mut egui::Ui, c: &Call) {
    match (&c.verified, c.tunneled) {
        (Some(id), true) => {
            // The one prominent security signal: a filled badge.
            let (aor, _) = split_identity(id);
            egui::Frame::new()
                .fill(GREEN)
                .corner_radius(6.0)
                .inner_margin(egui::Margin::symmetric(10, 5))
                .show(ui, |ui| {
                    ui.label(
                        egui::RichText::new(format!("✔ verified: {aor}"))
                            .size(16.0)
                            .strong()
                            .color(egui::Color32::WHITE),
                    );
                });
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
pub(crate) fn incoming(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let mut cmds = Vec::new();
    let talking = app.calls.iter().any(|c| c.phase != Phase::Incoming);
    for c in app.calls.iter().filter(|c| c.phase == Phase::Incoming) {
        ui.group(|ui| {
            ui.horizontal(|ui| {
                super::avatar::show(ui, &display_name(app, &c.peer), 40.0);
                if talking || c.waiting {
                    ui.heading(format!("Call waiting: {}", contact_name(app, &c.peer)));
                } else {
                    ui.heading(format!("Incoming call from {}", contact_name(app, &c.peer)));
                }
            });
            identity_badge(ui, c);
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                if talking {
                    if ui
                        .add(big_button("Answer (holds your call)", GREEN))
                        .clicked()
                    {
                        cmds.push(AgentCommand::Answer { call: c.id });
                    }
                    if ui.add(big_button("Decline", HANG_UP)).clicked() {
                        cmds.push(AgentCommand::Reject {
                            call: c.id,
                            status: Some(486),
                        });
                    }
                } else {
                    if ui.add(big_button("Answer", GREEN)).clicked() {
                        cmds.push(AgentCommand::Answer { call: c.id });
                    }
                    if ui.add(big_button("Reject", HANG_UP)).clicked() {
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

/// The name an avatar's initials come from: the contact's name, else the
/// address.
fn display_name(app: &PhoneApp, uri: &str) -> String {
    app.contacts
        .find_by_uri(uri, &app.domain())
        .map_or_else(|| uri.to_string(), |c| c.name.clone())
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
pub(crate) fn in_call(app: &mut PhoneApp, ui: &mut egui::Ui) {
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
    ui.horizontal(|ui| {
        super::avatar::show(ui, &display_name(app, &c.peer), 48.0);
        ui.heading(contact_name(app, &c.peer));
    });
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
        quality_line(ui, &c);
    }
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        if ui.add(big_button("Hang up", HANG_UP)).clicked() {
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
pub(crate) fn security_panel(app: &mut PhoneApp, ui: &mut egui::Ui, idx: usize) {
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
            // The short form fits the panel; the full one on hover.
            ui.label("Provider fingerprint");
            ui.monospace(super::fingerprint_view::short_of(&provider))
                .on_hover_text(provider.as_str());
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
            if let Some(stats) = &c.stats {
                for (label, value) in quality(stats).rows {
                    ui.label(label);
                    ui.label(value);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(loss: u32, peer: Option<u32>, rtt: Option<u64>, jitter: u64) -> MediaCounters {
        MediaCounters {
            loss_permille: loss,
            lost: i64::from(loss) / 2,
            jitter_ms: jitter,
            peer_loss_permille: peer,
            peer_lost: peer.map(|p| i64::from(p) / 2),
            peer_jitter_ms: peer.map(|_| 1),
            rtt_ms: rtt,
            ..MediaCounters::default()
        }
    }

    #[test]
    fn quality_in_plain_words() {
        let q = quality(&stats(0, Some(0), Some(42), 1));
        assert_eq!(q.level, QualityLevel::Good);
        assert_eq!(q.line, "Good connection · 42 ms");
        assert_eq!(
            q.details,
            "round trip 42 ms · you receive: 0.0% lost (0 packets), jitter 1 ms · \
             they receive: 0.0% lost (0 packets), jitter 1 ms"
        );
        // Loss on either side counts: the peer hears 8 % less of us.
        let q = quality(&stats(0, Some(80), Some(42), 1));
        assert_eq!(
            (q.level, q.line.as_str()),
            (QualityLevel::Poor, "Poor connection: 8% loss")
        );
        let q = quality(&stats(102, Some(0), Some(42), 1));
        assert_eq!(q.line, "Poor connection: 10% loss");
        assert!(q.details.contains("you receive: 10.2% lost (51 packets)"));
        let q = quality(&stats(30, Some(10), Some(60), 1));
        assert_eq!(
            (q.level, q.line.as_str()),
            (QualityLevel::Fair, "Fair connection: 3% loss")
        );
        let q = quality(&stats(0, Some(0), Some(450), 1));
        assert_eq!(q.line, "Poor connection: 450 ms");
        let q = quality(&stats(0, Some(0), Some(40), 60));
        assert_eq!(q.line, "Poor connection: 60 ms jitter");
        // Nothing measured yet (or a peer without rtcp-mux).
        let q = quality(&stats(0, None, None, 0));
        assert_eq!(q.level, QualityLevel::Unknown);
        assert!(q.details.contains("not measured yet") && q.details.contains("no report yet"));
    }
}
