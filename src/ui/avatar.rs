//! A contact's avatar: a colored circle with the contact's initials, the
//! same color for the same name on every start (no pictures to fetch or
//! store). Used in the contact list and on the call screen.

/// The initials of a display name or address, at most two, upper case:
/// "Alice Smith" -> "AS", "carol" -> "C",
/// "sip:dave@atlanta.com" -> "D", "+1 555" -> "1"; "?" when nothing is
/// left to take a letter or digit from.
pub(crate) fn initials(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_prefix("sips:").unwrap_or(name);
    let name = name.strip_prefix("sip:").unwrap_or(name);
    // An address: its user part only.
    let name = name.split('@').next().unwrap_or(name);
    let words = name
        .split(|c: char| c.is_whitespace() || matches!(c, '.' | '_' | '-'))
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()));
    let s: String = words.take(2).flat_map(char::to_uppercase).collect();
    if s.is_empty() {
        "?".into()
    } else {
        s
    }
}

/// Palette of the circles: mid-tone colors that carry white text on both
/// the light and the dark theme.
const PALETTE: [egui::Color32; 8] = [
    egui::Color32::from_rgb(0x3b, 0x6e, 0xb4),
    egui::Color32::from_rgb(0x8e, 0x44, 0xad),
    egui::Color32::from_rgb(0x16, 0x8a, 0x7a),
    egui::Color32::from_rgb(0xc0, 0x5a, 0x1c),
    egui::Color32::from_rgb(0x5d, 0x6d, 0x7e),
    egui::Color32::from_rgb(0xb0, 0x3a, 0x6e),
    egui::Color32::from_rgb(0x2e, 0x7d, 0x32),
    egui::Color32::from_rgb(0x6a, 0x5a, 0xcd),
];

/// The circle's color for `name` (a stable hash of its initials' source:
/// the same name gives the same color).
pub(crate) fn color(name: &str) -> egui::Color32 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let h = name
        .trim()
        .to_lowercase()
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    PALETTE[(h % PALETTE.len() as u32) as usize]
}

/// Draws the avatar of `name` as a circle of `size` points.
pub(crate) fn show(ui: &mut egui::Ui, name: &str, size: f32) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
    if ui.is_rect_visible(rect) {
        let painter = ui.painter();
        painter.circle_filled(rect.center(), size / 2.0, color(name));
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            initials(name),
            egui::FontId::proportional(size * 0.42),
            egui::Color32::WHITE,
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_of_names_and_addresses() {
        assert_eq!(initials("Alice Smith"), "AS");
        assert_eq!(initials("alice"), "A");
        assert_eq!(initials("Mary Ann Lee"), "MA");
        assert_eq!(initials("sip:dave@atlanta.invalid"), "D");
        assert_eq!(initials("carol.jones@chicago.invalid"), "CJ");
        assert_eq!(initials("  émile zola "), "ÉZ");
        assert_eq!(initials("+1 555"), "15");
        assert_eq!(initials(""), "?");
        assert_eq!(initials("@@"), "?");
    }

    #[test]
    fn the_same_name_keeps_its_color() {
        assert_eq!(color("Alice"), color(" alice "));
        let distinct: std::collections::HashSet<_> = ["Alice", "Bob", "Carol", "Dave", "Erin"]
            .iter()
            .map(|n| color(n))
            .collect();
        assert!(distinct.len() >= 3, "names spread over the palette");
    }
}
