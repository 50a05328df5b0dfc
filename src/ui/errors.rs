//! Errors as sentences a user understands, each saying what to do next.
//! The technical detail stays in the log; the window shows these.

use crate::pkg_client::api::codes;
use crate::pkg_client::PkgClientError;

/// What to tell the user when talking to the provider at `url` failed.
pub(crate) fn pkg_error(e: &PkgClientError, url: &str) -> String {
    match e {
        PkgClientError::Server { code, .. } if code == codes::INVALID_CREDENTIALS => {
            "Wrong user name or password. Check both (the password is case-sensitive) and try again.".into()
        }
        PkgClientError::Server { code, .. } if code == codes::OTP_REQUIRED => {
            "Your provider asks for the one-time code from your authenticator app. Enter it where the phone asks for it.".into()
        }
        PkgClientError::Threshold { sentence: why, .. } => format!(
            "Your keys could not be put together from your provider's key servers: {why}. Try again later, and tell your provider if it persists."
        ),
        PkgClientError::Server { code, .. } if code == codes::ACCOUNT_DISABLED => {
            "Your account is disabled. Ask your provider's administrator to enable it.".into()
        }
        PkgClientError::Server { code, .. } if code == codes::PERIOD_NOT_ALLOWED => {
            "The provider will not issue keys for this month. Check that this computer's date is right.".into()
        }
        PkgClientError::Server { status, .. } if *status >= 500 => format!(
            "The provider at {url} has a problem of its own (error {status}). Try again in a few minutes."
        ),
        PkgClientError::Server { status, message, .. } => format!(
            "The provider refused the request (error {status}: {message}). Try again, or ask its administrator."
        ),
        PkgClientError::Io(_) => format!(
            "The provider cannot be reached at {url}. Check the address and your network connection, then try again."
        ),
        PkgClientError::Tls(_) => format!(
            "No secure connection could be made to {url}. Check that the address is your provider's (it starts with https://)."
        ),
        PkgClientError::PinMismatch { .. } => format!(
            "The provider at {url} shows a different certificate than the one you confirmed. Do not continue: ask your provider's administrator whether it was changed."
        ),
        PkgClientError::Throttled { retry_after_secs } => format!(
            "Too many failed attempts. Wait {retry_after_secs} seconds, then try again."
        ),
        PkgClientError::Protocol(why) if why.starts_with("not an https:// URL") => {
            "The provider address must look like https://pkg.example.com:8443. Check what your provider gave you.".into()
        }
        PkgClientError::Protocol(_) | PkgClientError::Ibe(_) => format!(
            "The provider at {url} sent something this phone cannot trust. Do not use it, and tell its administrator."
        ),
        PkgClientError::Seal(_) | PkgClientError::Store(_) => {
            "Your keys could not be read or saved on this computer. Check free disk space and the permissions of the ibephone data folder.".into()
        }
        #[allow(unreachable_patterns)]
        _ => format!("Talking to the provider failed ({e}). Try again."),
    }
}

/// What to tell the user when a call ended for `reason` (the agent's
/// `Ended` reason) before it was answered; None for ordinary endings.
pub(crate) fn call_end(reason: &str, peer: &str) -> Option<String> {
    // "rejected 415" or "rejected 415: why ..." (the agent adds the why).
    let status = reason
        .strip_prefix("rejected ")
        .and_then(|s| s.trim().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<u16>().ok());
    match (reason, status) {
        (r, _) if r.starts_with("not placed: unprotected call declined") => Some(format!(
            "The call to {peer} was not made: it could not be protected, and you chose not to call unprotected."
        )),
        (r, _) if r.starts_with("not placed") => Some(format!(
            "{peer} cannot be called securely: its provider is not trusted here, or there are no keys for this month. Check the address; for another provider ask yours to trust it."
        )),
        (_, Some(415 | 488 | 493 | 606)) => Some(format!(
            "{peer} does not support secure calls, so the call was not made. Ask them to install a phone that does, or change the security policy in Settings."
        )),
        (_, Some(404 | 480)) => Some(format!(
            "{peer} is not online right now. Try again later or send a secure message."
        )),
        (_, Some(486 | 600)) => Some(format!("{peer} is busy. Try again later.")),
        (_, Some(603)) => Some(format!("{peer} declined the call.")),
        (_, Some(401 | 403 | 407)) => Some(
            "The network refused the call for this account. Check your user name and password (log out and set up again).".into(),
        ),
        (_, Some(s @ 502..=504)) => Some(format!(
            "{peer} cannot be reached through your provider right now (SIP {s}). Check the address; a callee at another provider needs that provider trusted by yours."
        )),
        (_, Some(s)) => Some(format!("The call to {peer} failed (SIP {s}). Try again.")),
        ("timeout", _) => Some(format!(
            "No answer from the network for the call to {peer}. Check your connection and the SIP proxy in Settings."
        )),
        _ => None,
    }
}

/// What to tell the user for the agent's `Error` event `message`.
pub(crate) fn agent_error(message: &str, peer: Option<&str>) -> String {
    if message.contains("no keys or unknown domain") {
        let who = peer.unwrap_or("This address");
        return format!(
            "{who} cannot be called securely: its provider is not trusted here, or there are no keys for this month. Check the address; for another provider ask yours to trust it."
        );
    }
    format!("{message}. Try again; if it keeps happening, restart ibephone.")
}

/// What to tell the user when registering failed with `status`.
pub(crate) fn registration_failed(status: u16, proxy: &str) -> String {
    match status {
        401 | 403 | 407 => "The network refused your user name or password. Log out and set up the phone again with the right password.".into(),
        408 | 503 | 504 => format!(
            "The network does not answer at {proxy}. Check your connection and the SIP proxy address in Settings; the phone keeps trying."
        ),
        s => format!("Registration failed (SIP {s}). Check the SIP proxy address in Settings."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_endings_with_reasons_get_sentences() {
        let s = call_end(
            "rejected 415: peer cannot decrypt; the policy `require` places no unprotected call",
            "bob",
        )
        .unwrap();
        assert!(s.contains("does not support secure calls"), "{s}");
        let s = call_end(
            "not placed: no public parameters for chicago.invalid; the policy `require` places no unprotected call",
            "carol",
        )
        .unwrap();
        assert!(s.contains("cannot be called securely"), "{s}");
        assert!(call_end("remote hangup", "bob").is_none());
    }

    #[test]
    fn sentences_name_the_fix() {
        let wrong = PkgClientError::Server {
            status: 401,
            code: codes::INVALID_CREDENTIALS.into(),
            message: "x".into(),
        };
        assert!(pkg_error(&wrong, "https://p").starts_with("Wrong user name or password"));
        let down = PkgClientError::Io("connect: refused".into());
        assert!(pkg_error(&down, "https://127.0.0.1:9")
            .contains("cannot be reached at https://127.0.0.1:9"));
        assert!(call_end("rejected 415", "bob")
            .unwrap()
            .contains("does not support secure calls"));
        assert!(call_end("remote hangup", "bob").is_none());
        assert!(agent_error(
            "could not place a secured call to sip:x@y (no keys or unknown domain)",
            Some("sip:x@y")
        )
        .contains("cannot be called securely"));
        assert!(registration_failed(403, "127.0.0.1:5060").contains("password"));
    }
}
