//! The status bar in plain words: "Ready", "Keys up to date", "Can't
//! reach your provider - retrying". The technical details (registration
//! lifetime, key periods and their end) go to the item's tooltip and to
//! Settings, never to the bar itself.

use super::state::Registration;

/// How an item of the status bar is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// All is well (green).
    Good,
    /// Something is under way (spinner, normal text).
    Busy,
    /// The phone cannot do its job until this is fixed (red).
    Bad,
}

/// One item of the status bar: short words, how to draw them, and the
/// details for its tooltip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// What the bar says.
    pub text: String,
    /// How it is drawn.
    pub tone: Tone,
    /// The details (tooltip).
    pub details: String,
}

/// The registration as the bar says it.
pub(crate) fn connection(reg: &Registration) -> Item {
    let (text, tone, details) = match reg {
        Registration::Registered { expires } => (
            "Ready".to_string(),
            Tone::Good,
            format!("Registered with the network; renewed every {expires} s."),
        ),
        Registration::Registering => (
            "Connecting…".to_string(),
            Tone::Busy,
            "Registering with the network.".to_string(),
        ),
        Registration::NotRegistered => (
            "Offline".to_string(),
            Tone::Bad,
            "Not registered: calls cannot reach you.".to_string(),
        ),
        Registration::Retrying(why) => (
            "Can't reach your provider - retrying".to_string(),
            Tone::Bad,
            why.clone(),
        ),
        Registration::Failed(why) => ("Not connected".to_string(), Tone::Bad, why.clone()),
    };
    Item {
        text,
        tone,
        details,
    }
}

/// The keys as the bar says them: up to date while this month's keys are
/// held (next month's are fetched ahead without asking).
pub(crate) fn keys(periods: &[String], now_unix: u64) -> Item {
    let current = crate::ibe::Period::month_at(now_unix);
    let details = keys_details(periods, now_unix);
    if periods.iter().any(|p| p == current.as_str()) {
        Item {
            text: "Keys up to date".into(),
            tone: Tone::Good,
            details,
        }
    } else {
        Item {
            text: "Keys missing - calls can't be decrypted".into(),
            tone: Tone::Bad,
            details,
        }
    }
}

/// "Keys: 2026-12 (valid until 2027-01-01 00:00 UTC), next period 2027-01
/// ready": the key periods for the tooltip and Settings.
pub(crate) fn keys_details(periods: &[String], now_unix: u64) -> String {
    let current = crate::ibe::Period::month_at(now_unix);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-15 12:00 UTC.
    const NOW: u64 = 1_797_336_000;

    #[test]
    fn the_bar_says_ready_and_keeps_the_lifetime_for_the_tooltip() {
        let i = connection(&Registration::Registered { expires: 600 });
        assert_eq!((i.text.as_str(), i.tone), ("Ready", Tone::Good));
        assert!(!i.text.contains("600"));
        assert!(i.details.contains("600 s"), "{}", i.details);
        let i = connection(&Registration::Retrying("no answer at 10.0.0.1".into()));
        assert_eq!(i.text, "Can't reach your provider - retrying");
        assert_eq!(i.details, "no answer at 10.0.0.1");
        assert_eq!(
            connection(&Registration::Failed("wrong password".into())).tone,
            Tone::Bad
        );
    }

    #[test]
    fn keys_are_up_to_date_while_this_months_are_held() {
        let held = vec!["2026-11".to_string(), "2026-12".into(), "2027-01".into()];
        let i = keys(&held, NOW);
        assert_eq!((i.text.as_str(), i.tone), ("Keys up to date", Tone::Good));
        assert!(!i.text.contains("UTC"));
        assert_eq!(
            i.details,
            "Keys: 2026-12 (valid until 2027-01-01 00:00 UTC), next period 2027-01 ready"
        );
        // Next month's not fetched yet: still up to date, the tooltip says it.
        let i = keys(&held[..2], NOW);
        assert_eq!(i.tone, Tone::Good);
        assert!(
            i.details.contains("2027-01 not fetched yet"),
            "{}",
            i.details
        );
        let i = keys(&["2026-11".to_string()], NOW);
        assert_eq!(i.tone, Tone::Bad);
        assert!(i.text.contains("can't be decrypted"), "{}", i.text);
    }
}
