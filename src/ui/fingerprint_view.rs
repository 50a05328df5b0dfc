//! A fingerprint on screen: the short form a person compares, large and
//! wrapping at the window's edge (never cut off), with the full form one
//! click away under "Show full fingerprint". Which form and why 80 bits:
//! [`crate::ibe::fingerprint`].

use crate::ibe::fingerprint::SHORT_GROUPS;

/// The label of the folded full form.
pub const SHOW_FULL: &str = "Show full fingerprint";

/// The short form of a fingerprint shown in the spec's full form (groups
/// separated by spaces): its first [`SHORT_GROUPS`] groups.
pub fn short_of(full: &str) -> String {
    full.split_whitespace()
        .take(SHORT_GROUPS)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Draws `full`'s short form in large monospace (wrapping between groups)
/// and the full form under a folded [`SHOW_FULL`] header; `id` keeps two
/// fingerprints of one screen apart.
pub fn show(ui: &mut egui::Ui, id: &str, full: &str) {
    let short = egui::RichText::new(short_of(full))
        .monospace()
        .size(22.0)
        .strong();
    ui.add(egui::Label::new(short).wrap());
    full_form(ui, id, full);
}

/// As [`show`] in a details list (Settings): `label` and the short form in
/// normal size on one line (wrapping), the full form folded under it.
pub fn show_compact(ui: &mut egui::Ui, id: &str, label: &str, full: &str) {
    ui.horizontal_wrapped(|ui| {
        ui.label(label);
        ui.monospace(short_of(full));
    });
    full_form(ui, id, full);
}

fn full_form(ui: &mut egui::Ui, id: &str, full: &str) {
    egui::CollapsingHeader::new(SHOW_FULL)
        .id_salt(("fingerprint", id))
        .default_open(false)
        .show(ui, |ui| {
            ui.add(egui::Label::new(egui::RichText::new(full).monospace()).wrap());
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_form_of_the_full_form_is_its_first_five_groups() {
        let fp: [u8; 32] = std::array::from_fn(|i| i as u8);
        let full = crate::ibe::fingerprint::full(&fp);
        assert_eq!(short_of(&full), crate::ibe::fingerprint::short(&fp));
        assert_eq!(short_of("ab12 cd34"), "ab12 cd34");
    }
}
