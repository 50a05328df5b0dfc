//! The "Copy diagnostics" report: a plain-text page a person can paste
//! into a support request. It is built by one pure function,
//! [`report`], from [`Facts`] the window already shows, so what it can say
//! is fixed here: versions, OS, registration, transport and proxy, key
//! periods, where the log is, and the last errors the window showed. It
//! never holds a key, a password, a token, a message text or an SDP: none
//! of those is among the [`Facts`].

use super::app::Registration;
use super::history::format_time;
use crate::sip::proxy_uri::ProxyUri;
use crate::sip::Transport;
use std::collections::VecDeque;
use std::path::PathBuf;

/// How many recent errors the window keeps for the report.
pub(crate) const RECENT_ERRORS: usize = 20;

/// One error or refusal the window showed, with its Unix time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When, Unix seconds.
    pub unix: u64,
    /// The sentence shown (or the reason reported).
    pub text: String,
}

/// The last [`RECENT_ERRORS`] errors, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentErrors(VecDeque<RecentError>);

impl RecentErrors {
    /// Records `text` at `unix`, dropping the oldest beyond
    /// [`RECENT_ERRORS`]; the same text twice in a row is kept once.
    pub fn push(&mut self, unix: u64, text: impl Into<String>) {
        let text = text.into();
        if self.0.back().is_some_and(|e| e.text == text) {
            return;
        }
        if self.0.len() == RECENT_ERRORS {
            self.0.pop_front();
        }
        self.0.push_back(RecentError { unix, text });
    }

    /// The errors, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &RecentError> {
        self.0.iter()
    }
}

/// Everything the report says, gathered by the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts<'a> {
    /// `ibephone 0.1.0`.
    pub version: String,
    /// Operating system and architecture, e.g. `linux x86_64`.
    pub os: String,
    /// Our address of record, once set up.
    pub aor: Option<&'a str>,
    /// The provider's domain and PKG address, once set up.
    pub provider: Option<(&'a str, &'a str)>,
    /// The registration state.
    pub registration: &'a Registration,
    /// The SIP proxy as configured (`host:port`, `sip:...;transport=tcp`,
    /// `sips:...`).
    pub sip_proxy: &'a str,
    /// Our SIP address.
    pub local: Option<std::net::SocketAddr>,
    /// The security policy's name (`require`, `ask`, `allow-plain`).
    pub policy: &'a str,
    /// The periods we hold keys for.
    pub periods: &'a [String],
    /// Now, Unix seconds (the window's clock).
    pub now_unix: u64,
    /// Calls in progress.
    pub calls: usize,
    /// The key log file, when it is on.
    pub keylog: Option<&'a std::path::Path>,
    /// The diagnostic log file, when there is one.
    pub log_file: Option<PathBuf>,
    /// The window system and the tray ([`window_line`]).
    pub window: String,
    /// Recent errors.
    pub errors: &'a RecentErrors,
}

/// The window line: `wayland, tray icon shown` (or `tray starting`,
/// `no tray: <why>`), which says what closing the window does.
pub(crate) fn window_line(system: &str, tray: &super::background::TrayState) -> String {
    use super::background::TrayState;
    match tray {
        TrayState::Shown => format!("{system}, tray icon shown"),
        TrayState::Starting => format!("{system}, tray starting"),
        TrayState::Unavailable(why) => format!("{system}, no tray: {}", one_line(why)),
    }
}

/// The version line: this crate's name and version.
pub(crate) fn version() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

/// The OS line: family, OS and architecture of this build.
pub(crate) fn os() -> String {
    format!(
        "{} ({} {})",
        std::env::consts::OS,
        std::env::consts::FAMILY,
        std::env::consts::ARCH
    )
}

/// `UDP`, `TCP` or `TLS` for a configured proxy; `unknown` when the text
/// does not parse (the report still names it as written).
pub(crate) fn transport_name(sip_proxy: &str) -> &'static str {
    match ProxyUri::parse(sip_proxy.trim()).map(|p| p.transport) {
        Ok(Transport::Udp) => "UDP",
        Ok(Transport::Tcp) => "TCP",
        Ok(Transport::Tls) => "TLS",
        Err(_) => "unknown",
    }
}

/// The report, one fact per line, newest errors last.
pub(crate) fn report(f: &Facts<'_>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "ibephone diagnostics ({})", format_time(f.now_unix));
    let _ = writeln!(s, "version: {}", f.version);
    let _ = writeln!(s, "os: {}", f.os);
    let _ = writeln!(s, "account: {}", f.aor.unwrap_or("not set up"));
    match f.provider {
        Some((domain, url)) => {
            let _ = writeln!(s, "provider: {domain} (PKG {url})");
        }
        None => {
            let _ = writeln!(s, "provider: not set up");
        }
    }
    let registration = match f.registration {
        Registration::NotRegistered => "not registered".to_string(),
        Registration::Registering => "registering".to_string(),
        Registration::Registered { expires } => format!("registered (expires {expires} s)"),
        Registration::Retrying(why) => format!("retrying: {why}"),
        Registration::Failed(why) => format!("failed: {why}"),
    };
    let _ = writeln!(s, "registration: {registration}");
    let proxy = f.sip_proxy.trim();
    let _ = writeln!(
        s,
        "transport: {} to proxy {}",
        transport_name(proxy),
        if proxy.is_empty() { "(none)" } else { proxy }
    );
    if let Some(local) = f.local {
        let _ = writeln!(s, "this phone: {local}");
    }
    let _ = writeln!(s, "policy: {}", f.policy);
    let _ = writeln!(s, "keys: {}", key_validity(f.periods, f.now_unix));
    let _ = writeln!(s, "calls in progress: {}", f.calls);
    let _ = writeln!(
        s,
        "key log: {}",
        match f.keylog {
            Some(p) => format!("ON ({})", p.display()),
            None => "off".into(),
        }
    );
    let _ = writeln!(
        s,
        "log file: {}",
        match &f.log_file {
            Some(p) => p.display().to_string(),
            None => "none".into(),
        }
    );
    let _ = writeln!(s, "window: {}", f.window);
    let _ = writeln!(s, "recent errors (oldest first):");
    let mut any = false;
    for e in f.errors.iter() {
        any = true;
        let _ = writeln!(s, "  {}  {}", format_time(e.unix), one_line(&e.text));
    }
    if !any {
        let _ = writeln!(s, "  none");
    }
    s
}

/// "2026-11, 2026-12, 2027-01; current month 2026-12 held" or the month
/// that is missing.
fn key_validity(periods: &[String], now_unix: u64) -> String {
    if periods.is_empty() {
        return "none held".into();
    }
    let current = crate::ibe::Period::month_at(now_unix);
    let held = periods.iter().any(|p| p == current.as_str());
    format!(
        "held for {}; current month {} {}",
        periods.join(", "),
        current.as_str(),
        if held { "held" } else { "MISSING" }
    )
}

/// Line breaks and control characters out: one error, one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-02 12:00 UTC.
    const NOW: u64 = 1_796_212_800;

    fn facts<'a>(
        reg: &'a Registration,
        errors: &'a RecentErrors,
        periods: &'a [String],
    ) -> Facts<'a> {
        Facts {
            version: "ibephone 0.1.0".into(),
            os: "linux (unix x86_64)".into(),
            aor: Some("sip:alice@atlanta.invalid"),
            provider: Some(("atlanta.invalid", "https://pkg.atlanta.invalid")),
            registration: reg,
            sip_proxy: "sips:proxy.atlanta.invalid",
            local: "127.0.0.1:5062".parse().ok(),
            policy: "require",
            periods,
            now_unix: NOW,
            calls: 0,
            keylog: None,
            log_file: Some(PathBuf::from(
                "/home/a/.local/state/ibephone/logs/ibephone.log",
            )),
            window: window_line("wayland", &super::super::background::TrayState::Shown),
            errors,
        }
    }

    #[test]
    fn the_report_names_every_fact() {
        let reg = Registration::Registered { expires: 600 };
        let mut errors = RecentErrors::default();
        errors.push(
            NOW - 60,
            "Registration refused (403).\nCheck your password.",
        );
        errors.push(
            NOW - 30,
            "An unprotected message was refused (not tunneled).",
        );
        let periods = ["2026-11".to_string(), "2026-12".into(), "2027-01".into()];
        let r = report(&facts(&reg, &errors, &periods));
        for line in [
            "ibephone diagnostics (2026-12-02 12:00 UTC)",
            "version: ibephone 0.1.0",
            "os: linux (unix x86_64)",
            "account: sip:alice@atlanta.invalid",
            "provider: atlanta.invalid (PKG https://pkg.atlanta.invalid)",
            "registration: registered (expires 600 s)",
            "transport: TLS to proxy sips:proxy.atlanta.invalid",
            "this phone: 127.0.0.1:5062",
            "policy: require",
            "keys: held for 2026-11, 2026-12, 2027-01; current month 2026-12 held",
            "key log: off",
            "log file: /home/a/.local/state/ibephone/logs/ibephone.log",
            "window: wayland, tray icon shown",
            "  2026-12-02 11:59 UTC  Registration refused (403). Check your password.",
            "  2026-12-02 11:59 UTC  An unprotected message was refused (not tunneled).",
        ] {
            assert!(r.lines().any(|l| l == line), "no line {line:?} in\n{r}");
        }
        // Oldest first.
        let first = r.find("Registration refused").unwrap_or(usize::MAX);
        let second = r.find("An unprotected").unwrap_or(0);
        assert!(first < second, "{r}");
    }

    #[test]
    fn not_set_up_missing_keys_and_no_errors() {
        let reg = Registration::Failed("the proxy does not answer".into());
        let errors = RecentErrors::default();
        let periods = ["2026-11".to_string()];
        let mut f = facts(&reg, &errors, &periods);
        f.aor = None;
        f.provider = None;
        f.sip_proxy = "127.0.0.1:5060";
        f.log_file = None;
        f.window = window_line(
            "x11",
            &super::super::background::TrayState::Unavailable("no session bus\nat all".into()),
        );
        f.keylog = Some(std::path::Path::new("/tmp/k.log"));
        let r = report(&f);
        for line in [
            "account: not set up",
            "provider: not set up",
            "registration: failed: the proxy does not answer",
            "transport: UDP to proxy 127.0.0.1:5060",
            "keys: held for 2026-11; current month 2026-12 MISSING",
            "key log: ON (/tmp/k.log)",
            "log file: none",
            "window: x11, no tray: no session bus at all",
            "  none",
        ] {
            assert!(r.lines().any(|l| l == line), "no line {line:?} in\n{r}");
        }
        f.periods = &[];
        assert!(report(&f).contains("keys: none held"));
    }

    #[test]
    fn transports_by_proxy_form() {
        assert_eq!(transport_name("127.0.0.1:5060"), "UDP");
        assert_eq!(transport_name("sip:proxy.example;transport=tcp"), "TCP");
        assert_eq!(transport_name("sip:proxy.example;transport=tls"), "TLS");
        assert_eq!(transport_name("sips:proxy.example"), "TLS");
        assert_eq!(transport_name("sip:user@x:y"), "unknown");
    }

    #[test]
    fn recent_errors_are_bounded_and_deduplicated() {
        let mut e = RecentErrors::default();
        for i in 0..(RECENT_ERRORS as u64 + 5) {
            e.push(i, format!("error {i}"));
            e.push(i, format!("error {i}"));
        }
        let v: Vec<_> = e.iter().collect();
        assert_eq!(v.len(), RECENT_ERRORS);
        assert_eq!(v[0].text, "error 5");
        assert_eq!(
            v[RECENT_ERRORS - 1].text,
            format!("error {}", RECENT_ERRORS + 4)
        );
    }
}
