//! Key renewal of a running `[pkg]` agent.
//!
//! At start the agent holds the keys of the previous, current and next
//! period ([`super::keys`]). When the calendar moves on and the period after
//! the current one is no longer held, [`Renewal`] logs in to the PKG again
//! (the same rules as at start: pinned certificate, keys checked, stored
//! sealed) and hands the keys it did not hold yet to the running agent
//! through a [`KeyInbox`]. A failure is logged and retried at the next
//! check; the agent keeps working on the keys it has meanwhile. When the
//! provider asks for the one-time code of the account's second factor,
//! the codes a user types are handed in while it runs
//! ([`Renewal::run_with_codes`]) and tried at once.

use super::config::{AgentFile, KeySource, PkgSettings};
use super::key_inbox::KeyInbox;
use super::keys::{from_pkg_with_codes, now_unix, KeyError, Origin, OtpCodes, Provisioned};
use crate::ibe::{Aor, Period};
use crate::pkg_client::api::SecretString;
use std::time::Duration;

/// How often a running agent checks whether renewal is due.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// What one renewal check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The next period's key is held: nothing to do.
    NotDue,
    /// Keys for these periods were fetched and handed to the agent.
    Renewed(Vec<Period>),
    /// The PKG could not be reached; nothing new (retried later).
    Unreachable(String),
}

/// The renewal state of one `[pkg]` agent: how to reach its PKG and which
/// periods it holds keys for.
#[derive(Debug)]
pub struct Renewal {
    pkg: PkgSettings,
    aor: Aor,
    password: SecretString,
    held: Vec<Period>,
    /// For a threshold provider, the servers of the last fetch, for people.
    servers: Option<String>,
    /// Whether the last check was made with one-time codes the user gave.
    with_codes: bool,
}

impl Renewal {
    /// Renewal for the agent of `file` that started with `provisioned`;
    /// `None` when its keys come from a key file (nothing to renew from).
    pub fn for_agent(file: &AgentFile, provisioned: &Provisioned) -> Option<Self> {
        match &file.keys {
            KeySource::Pkg(pkg) => Some(Renewal::new(
                pkg.clone(),
                file.aor.clone(),
                SecretString::new(file.password.to_string()),
                provisioned
                    .keys
                    .iter()
                    .map(|k| k.identity().period().clone())
                    .collect(),
            )),
            KeySource::File(_) => None,
        }
    }

    /// Renewal from explicit parts (`held`: the periods the agent has keys for).
    pub fn new(pkg: PkgSettings, aor: Aor, password: SecretString, held: Vec<Period>) -> Self {
        Renewal {
            pkg,
            aor,
            password,
            held,
            servers: None,
            with_codes: false,
        }
    }

    /// The login of the same account for relay credentials
    /// ([`super::relay`]), held to `pin` (the PKG certificate in force).
    pub fn relay(&self, pin: Option<[u8; 32]>) -> super::relay::RelayRenewal {
        let mut pkg = self.pkg.clone();
        pkg.fingerprint = pin.or(pkg.fingerprint);
        super::relay::RelayRenewal::new(pkg, self.aor.clone(), self.password.clone())
    }

    /// The periods the agent holds keys for.
    pub fn held(&self) -> &[Period] {
        &self.held
    }

    /// For a threshold provider, which servers' shares the last renewal
    /// combined ("servers 1 and 3 of 3 (2 needed)"); `None` before one.
    pub fn servers(&self) -> Option<&str> {
        self.servers.as_deref()
    }

    /// Whether the last check was made with one-time codes the user gave
    /// ([`Renewal::run_with_codes`]).
    pub fn used_codes(&self) -> bool {
        self.with_codes
    }

    /// Whether renewal is due at Unix time `now`: the key of the period
    /// after the current one is not held.
    pub fn due(&self, now: u64) -> bool {
        Period::month_at(now)
            .next_month()
            .is_ok_and(|next| !self.held.contains(&next))
    }

    /// One check at Unix time `now`: when due, fetches the keys of the
    /// previous, current and next period and pushes those not held yet into
    /// `inbox`. A refusal (bad password, other certificate, keys that do
    /// not check) is an error; an unreachable PKG is not.
    pub async fn check(&mut self, now: u64, inbox: &KeyInbox) -> Result<RenewOutcome, KeyError> {
        self.check_with_codes(now, inbox, &OtpCodes::new()).await
    }

    /// [`Renewal::check`] with the one-time codes the user gave when the
    /// provider asked for them; a refused code is
    /// [`KeyError::OtpRefused`] and leaves the held keys as they were.
    pub async fn check_with_codes(
        &mut self,
        now: u64,
        inbox: &KeyInbox,
        codes: &OtpCodes,
    ) -> Result<RenewOutcome, KeyError> {
        if !self.due(now) {
            return Ok(RenewOutcome::NotDue);
        }
        let fetched = from_pkg_with_codes(&self.pkg, &self.aor, &self.password, now, codes).await?;
        if fetched.servers.is_some() {
            self.servers = fetched.servers.clone();
        }
        if fetched.origin != Origin::Pkg {
            let why = fetched.unreachable.unwrap_or_else(|| "no answer".into());
            return Ok(RenewOutcome::Unreachable(why));
        }
        let fresh: Vec<_> = fetched
            .keys
            .into_iter()
            .filter(|k| !self.held.contains(k.identity().period()))
            .collect();
        let periods: Vec<Period> = fresh
            .iter()
            .map(|k| k.identity().period().clone())
            .collect();
        inbox.push(fresh);
        self.held.extend(periods.iter().cloned());
        Ok(RenewOutcome::Renewed(periods))
    }

    /// Checks every `every` for as long as the agent runs, handing each
    /// outcome and the renewal after it (periods held, servers used) to
    /// `report` (a log line for the headless agent: [`log_outcome`]; a
    /// notice in the desktop app).
    pub async fn run(
        self,
        inbox: KeyInbox,
        every: Duration,
        report: impl FnMut(&Renewal, Result<RenewOutcome, KeyError>),
    ) {
        let (_keep, codes) = tokio::sync::mpsc::unbounded_channel();
        self.run_with_codes(inbox, every, codes, report).await
    }

    /// [`Renewal::run`], and a check at once with every set of one-time
    /// codes that arrives on `codes` (the user typed them after a
    /// [`KeyError::Otp`]); its outcome is reported like any other, with
    /// [`Renewal::used_codes`] true.
    pub async fn run_with_codes(
        mut self,
        inbox: KeyInbox,
        every: Duration,
        mut codes: tokio::sync::mpsc::UnboundedReceiver<OtpCodes>,
        mut report: impl FnMut(&Renewal, Result<RenewOutcome, KeyError>),
    ) {
        let mut tick = tokio::time::interval(every);
        let mut open = true;
        loop {
            let given = tokio::select! {
                _ = tick.tick() => None,
                c = codes.recv(), if open => match c {
                    Some(c) => Some(c),
                    None => {
                        open = false;
                        continue;
                    }
                },
            };
            self.with_codes = given.is_some();
            let outcome = match &given {
                Some(c) => self.check_with_codes(now_unix(), &inbox, c).await,
                None => self.check(now_unix(), &inbox).await,
            };
            report(&self, outcome);
        }
    }
}

/// The headless agent's report of a renewal check: one log line when
/// something happened.
pub fn log_outcome(_renewal: &Renewal, outcome: Result<RenewOutcome, KeyError>) {
    match outcome {
        Ok(RenewOutcome::NotDue) => {}
        Ok(RenewOutcome::Renewed(periods)) => {
            let periods: Vec<&str> = periods.iter().map(Period::as_str).collect();
            tracing::info!(periods = %periods.join(","), "keys renewed");
        }
        Ok(RenewOutcome::Unreachable(why)) => {
            tracing::warn!(%why, "key renewal: PKG unreachable, retrying later");
        }
        Err(e) => tracing::error!(error = %e, "key renewal refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewal(held: &[&str]) -> Renewal {
        Renewal::new(
            PkgSettings {
                discover: false,
                url: "https://127.0.0.1:9".into(),
                fingerprint: None,
                store: std::env::temp_dir().join("ibephone-renewal-never-used"),
                user: "alice".into(),
                otp_command: None,
            },
            Aor::parse("sip:alice@atlanta.invalid").unwrap(),
            SecretString::new("pw".into()),
            held.iter().map(|p| Period::month(p).unwrap()).collect(),
        )
    }

    // 2026-12-15 12:00 UTC.
    const MID_DECEMBER: u64 = 1_797_336_000;

    #[test]
    fn due_only_when_the_next_period_is_missing() {
        assert!(!renewal(&["2026-11", "2026-12", "2027-01"]).due(MID_DECEMBER));
        assert!(renewal(&["2026-11", "2026-12"]).due(MID_DECEMBER));
        // Two months later the start-up keys have run out.
        assert!(renewal(&["2026-11", "2026-12", "2027-01"]).due(MID_DECEMBER + 62 * 86_400));
    }

    #[tokio::test]
    async fn a_check_that_is_not_due_touches_nothing() {
        let mut r = renewal(&["2026-11", "2026-12", "2027-01"]);
        let inbox = KeyInbox::new();
        assert_eq!(
            r.check(MID_DECEMBER, &inbox).await.unwrap(),
            RenewOutcome::NotDue
        );
        assert_eq!(inbox.pending(), 0);
    }
}
