//! The contacts tab (add, edit, remove; call or message a contact) and the
//! messages tab (secure MESSAGE conversations per contact).

use super::app::{Author, PhoneApp, Tab};
use super::contacts::Contact;
use super::dial::normalize;
use super::main_window::{GREEN, RED};

/// Draws the address book.
pub(crate) fn contacts_tab(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let domain = app.domain();
    let editing = app.contact_form.2.clone();
    ui.horizontal(|ui| {
        let l = ui.label("Name");
        ui.add(egui::TextEdit::singleline(&mut app.contact_form.0).desired_width(140.0))
            .labelled_by(l.id);
        let l = ui.label("Address");
        ui.add(
            egui::TextEdit::singleline(&mut app.contact_form.1)
                .hint_text("bob@biloxi.com")
                .desired_width(200.0),
        )
        .labelled_by(l.id);
        let label = if editing.is_some() {
            "Save contact"
        } else {
            "Add contact"
        };
        if ui.button(label).clicked() {
            let c = Contact {
                name: app.contact_form.0.clone(),
                address: app.contact_form.1.clone(),
            };
            let r = match &editing {
                Some(old) => app.contacts.update(old, c, &domain),
                None => app.contacts.add(c, &domain),
            };
            match r {
                Ok(()) => app.contact_form = Default::default(),
                Err(e) => app.banner(e.to_string(), true),
            }
        }
        if editing.is_some() && ui.button("Cancel").clicked() {
            app.contact_form = Default::default();
        }
    });
    ui.separator();
    if app.contacts.all().is_empty() {
        ui.label("No contacts yet: add one above.");
        return;
    }
    let mut action: Option<(&'static str, Contact)> = None;
    egui::Grid::new("contacts")
        .striped(true)
        .num_columns(4)
        .show(ui, |ui| {
            for c in app.contacts.all() {
                super::avatar::show(ui, &c.name, 28.0);
                ui.strong(&c.name);
                ui.label(&c.address);
                ui.horizontal(|ui| {
                    for what in ["Call", "Message", "Edit", "Remove"] {
                        if ui
                            .small_button(what)
                            .on_hover_text(format!("{what} {}", c.name))
                            .clicked()
                        {
                            action = Some((what, c.clone()));
                        }
                    }
                });
                ui.end_row();
            }
        });
    match action {
        Some(("Call", c)) => app.dial(&c.address),
        Some(("Message", c)) => match normalize(&c.address, &domain) {
            Ok(peer) => {
                app.conversations.entry(peer.clone()).or_default();
                app.chat_peer = Some(peer);
                app.tab = Tab::Messages;
            }
            Err(s) => app.banner(s, true),
        },
        Some(("Edit", c)) => app.contact_form = (c.name.clone(), c.address.clone(), Some(c.name)),
        Some(("Remove", c)) => {
            if let Err(e) = app.contacts.remove(&c.name) {
                app.banner(e.to_string(), true);
            }
        }
        _ => {}
    }
}

/// Draws the conversations: a list of peers, then the selected one.
pub(crate) fn messages_tab(app: &mut PhoneApp, ui: &mut egui::Ui) {
    let domain = app.domain();
    ui.horizontal(|ui| {
        let l = ui.label("New conversation with");
        ui.add(
            egui::TextEdit::singleline(&mut app.chat_new_peer)
                .hint_text("bob")
                .desired_width(180.0),
        )
        .labelled_by(l.id);
        if ui.button("Open").clicked() {
            match normalize(&app.chat_new_peer, &domain) {
                Ok(peer) => {
                    app.conversations.entry(peer.clone()).or_default();
                    app.chat_peer = Some(peer);
                    app.chat_new_peer.clear();
                }
                Err(s) => app.banner(s, true),
            }
        }
    });
    ui.separator();
    let peers: Vec<String> = app.conversations.keys().cloned().collect();
    if peers.is_empty() {
        ui.label(
            "No messages yet. Messages are end-to-end tunneled and kept sealed on this computer until you log out.",
        );
        return;
    }
    if app.chat_peer.is_none() {
        // After a restart no conversation is chosen yet: show the first.
        app.chat_peer = peers.first().cloned();
    }
    ui.horizontal_wrapped(|ui| {
        for p in &peers {
            let name = app
                .contacts
                .find_by_uri(p, &domain)
                .map_or(p.clone(), |c| c.name.clone());
            if ui
                .selectable_label(app.chat_peer.as_deref() == Some(p), name)
                .clicked()
            {
                app.chat_peer = Some(p.clone());
            }
        }
    });
    let Some(peer) = app.chat_peer.clone() else {
        return;
    };
    ui.separator();
    ui.strong(&peer);
    egui::ScrollArea::vertical()
        .max_height(260.0)
        .stick_to_bottom(true)
        .show(ui, |ui| {
            for line in app.conversations.get(&peer).into_iter().flatten() {
                ui.horizontal_wrapped(|ui| match line.author {
                    Author::Me => {
                        ui.strong("me:");
                        ui.label(&line.text);
                        match line.status {
                            None => ui.weak("sending…"),
                            Some(super::messages::DELIVERY_UNKNOWN) => {
                                ui.weak("delivery unknown (ibephone was closed)")
                            }
                            Some(s) if s < 300 => ui.weak("✔ delivered"),
                            Some(s) => ui.colored_label(RED, format!("not delivered ({s})")),
                        };
                    }
                    Author::Them => {
                        ui.strong("them:");
                        ui.label(&line.text);
                        match &line.security {
                            super::history::Security::Verified(_) => {
                                ui.colored_label(GREEN, "✔ verified")
                            }
                            s => ui.colored_label(RED, format!("⚠ {}", s.label())),
                        };
                    }
                });
            }
        });
    ui.horizontal(|ui| {
        let l = ui.label("Message");
        let r = ui
            .add(egui::TextEdit::singleline(&mut app.chat_input).desired_width(320.0))
            .labelled_by(l.id);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Send").clicked() || enter {
            let text = std::mem::take(&mut app.chat_input);
            app.send_message(&peer, &text);
        }
    });
}
