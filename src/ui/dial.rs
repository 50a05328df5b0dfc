//! What the dial field accepts: `bob` (a user of our own provider),
//! `bob@biloxi.com` or a full SIP URI / name-addr. The agent places the
//! call with the same rule; this module only checks the input early, so
//! the user gets a sentence instead of a failed call, and gives the
//! canonical address shown in the window and the history.

use crate::ibe::Aor;

/// The canonical AOR (`sip:bob@biloxi.com`) that `input` dials from a
/// phone of `domain`, or a sentence saying what to type instead.
pub(crate) fn normalize(input: &str, domain: &str) -> Result<String, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err(
            "Type a name such as bob, an address such as bob@biloxi.com, or a SIP address.".into(),
        );
    }
    if let Some((scheme, _)) = s.split_once(':') {
        let is_scheme = !scheme.contains('@') && scheme.bytes().all(|b| b.is_ascii_alphabetic());
        if is_scheme && !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips")
        {
            return Err(format!("{s} is not a SIP address; this phone calls SIP addresses only, such as bob@biloxi.com."));
        }
    }
    let uri = if s.contains('<') || s.starts_with("sip:") || s.starts_with("sips:") {
        s.to_string()
    } else if s.contains('@') {
        format!("sip:{s}")
    } else {
        format!("sip:{s}@{domain}")
    };
    Aor::parse(&uri).map(|a| a.as_str().to_string()).map_err(|_| {
        format!("{s} is not an address that can be called. Type a name such as bob, an address such as bob@biloxi.com, or a SIP address.")
    })
}

/// The AOR part of an identity string `sip:alice@atlanta.com#2026-12`
/// and its key period.
pub(crate) fn split_identity(id: &str) -> (&str, Option<&str>) {
    match id.rsplit_once('#') {
        Some((aor, period)) => (aor, Some(period)),
        None => (id, None),
    }
}

/// The keys of the dial pad, in reading order (DTMF digits).
pub(crate) const PAD: [char; 12] = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        let d = "atlanta.invalid";
        assert_eq!(normalize("bob", d).unwrap(), "sip:bob@atlanta.invalid");
        assert_eq!(
            normalize(" bob@Biloxi.Invalid ", d).unwrap(),
            "sip:bob@biloxi.invalid"
        );
        assert_eq!(
            normalize("sip:bob@biloxi.invalid;transport=tcp", d).unwrap(),
            "sip:bob@biloxi.invalid"
        );
        assert_eq!(
            normalize("\"Bob\" <sip:bob@biloxi.invalid>", d).unwrap(),
            "sip:bob@biloxi.invalid"
        );
        assert!(normalize("", d).unwrap_err().contains("Type a name"));
        assert!(normalize("tel:+123", d).is_err());
        assert!(normalize("bob@", d).is_err());
    }

    #[test]
    fn identity_split() {
        assert_eq!(
            split_identity("sip:alice@atlanta.invalid#2026-12"),
            ("sip:alice@atlanta.invalid", Some("2026-12"))
        );
        assert_eq!(split_identity("sip:a@b"), ("sip:a@b", None));
    }
}
