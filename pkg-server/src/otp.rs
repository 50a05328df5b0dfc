//! The second factor at login (pkg-api.md "Second factor at login"): TOTP
//! per RFC 6238 with SHA-1, 6 digits and a 30 s step, through `totp-rs`.
//!
//! Sans-I/O: the caller passes the Unix time and the last time step that
//! was accepted for the account; [`verify`] answers the step the code
//! matched, which the caller records so that each code (and every older
//! one) is usable once. One step of drift is allowed each way.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// Digits of a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Steps of drift accepted each way.
pub const DRIFT_STEPS: u64 = 1;
/// Bytes of a freshly drawn seed (160 bits, RFC 4226 section 4's advice).
pub const SEED_LEN: usize = 20;

/// A TOTP seed (the shared secret); zeroized on drop, never printed.
pub struct Seed(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed([redacted])")
    }
}

/// TOTP errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtpError {
    /// The seed is too short or otherwise unusable.
    #[error("TOTP seed rejected: {0}")]
    BadSeed(String),
    /// The system random generator failed.
    #[error("no randomness for a TOTP seed")]
    Rng,
}

impl Seed {
    /// A fresh random seed of [`SEED_LEN`] bytes.
    pub fn generate() -> Result<Seed, OtpError> {
        let raw: [u8; SEED_LEN] =
            ibephone::pkg_client::seal::random_bytes().map_err(|_| OtpError::Rng)?;
        let seed = Seed(Zeroizing::new(raw.to_vec()));
        let mut raw = raw;
        zeroize::Zeroize::zeroize(&mut raw);
        Ok(seed)
    }

    /// A seed from its bytes (at least 16 bytes, RFC 4226's minimum).
    pub fn from_bytes(bytes: &[u8]) -> Result<Seed, OtpError> {
        if bytes.len() < 16 {
            return Err(OtpError::BadSeed(format!(
                "{} bytes, at least 16 needed",
                bytes.len()
            )));
        }
        Ok(Seed(Zeroizing::new(bytes.to_vec())))
    }

    /// The seed's bytes (for sealing at rest).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, issuer: Option<&str>, account: &str) -> Result<TOTP, OtpError> {
        totp_with(self, DIGITS, issuer, account)
    }

    /// The code of the time step containing `unix_secs`.
    pub fn code_at(&self, unix_secs: u64) -> Result<String, OtpError> {
        Ok(self.totp(None, "")?.generate(unix_secs))
    }

    /// The `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER` URI of
    /// the enrolment (Key Uri Format; SHA-1, 6 digits, 30 s are the
    /// defaults and therefore not spelled out).
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Result<String, OtpError> {
        if issuer.contains(':') || account.contains(':') {
            return Err(OtpError::BadSeed("issuer or account contains ':'".into()));
        }
        Ok(self.totp(Some(issuer), account)?.get_url())
    }
}

fn totp_with(
    seed: &Seed,
    digits: usize,
    issuer: Option<&str>,
    account: &str,
) -> Result<TOTP, OtpError> {
    TOTP::new(
        Algorithm::SHA1,
        digits,
        DRIFT_STEPS as u8,
        STEP_SECS,
        seed.0.to_vec(),
        issuer.map(str::to_string),
        account.to_string(),
    )
    .map_err(|e| OtpError::BadSeed(e.to_string()))
}

/// The time step of `unix_secs`.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// Checks `code` at `unix_secs`: the step (current, one before or one
/// after) whose code it is, if that step is later than `last_used` (the
/// last accepted step of the account, 0 when none). Codes of a step at or
/// before `last_used` are refused, so a code is usable once and an older
/// one never after a newer one. Compares in constant time and tries every
/// candidate step whatever the outcome.
pub fn verify(seed: &Seed, code: &str, unix_secs: u64, last_used: u64) -> Option<u64> {
    let totp = seed.totp(None, "").ok()?;
    let now = step_of(unix_secs);
    let mut found = None;
    for step in now.saturating_sub(DRIFT_STEPS)..=now + DRIFT_STEPS {
        let expected = Zeroizing::new(totp.generate(step * STEP_SECS));
        let same =
            expected.len() == code.len() && bool::from(expected.as_bytes().ct_eq(code.as_bytes()));
        if same && step > last_used && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The QR code of `text` drawn for a terminal with Unicode half blocks
/// (two modules per character cell, dark on light, with a quiet zone).
pub fn qr_for_terminal(text: &str) -> Result<String, OtpError> {
    let code =
        qrcode::QrCode::new(text.as_bytes()).map_err(|e| OtpError::BadSeed(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: seed "12345678901234567890",
    /// 8 digits, 30 s step.
    const RFC6238_SHA1: &[(u64, &str)] = &[
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    fn rfc_seed() -> Seed {
        Seed::from_bytes(b"12345678901234567890").unwrap()
    }

    #[test]
    fn rfc6238_test_vectors() {
        let seed = rfc_seed();
        let totp = totp_with(&seed, 8, None, "").unwrap();
        for (t, code) in RFC6238_SHA1 {
            assert_eq!(totp.generate(*t), *code, "T = {t}");
            // The 6-digit code is the low 6 digits of the same truncation.
            assert_eq!(seed.code_at(*t).unwrap(), code[2..], "T = {t}");
        }
    }

    #[test]
    fn drift_of_one_step_each_way_and_no_more() {
        let seed = rfc_seed();
        let t = 1_234_567_890;
        let s = step_of(t);
        let code = seed.code_at(t).unwrap();
        assert_eq!(verify(&seed, &code, t, 0), Some(s));
        assert_eq!(verify(&seed, &code, t + STEP_SECS, 0), Some(s));
        assert_eq!(verify(&seed, &code, t - STEP_SECS, 0), Some(s));
        assert_eq!(verify(&seed, &code, t + 2 * STEP_SECS, 0), None);
        assert_eq!(verify(&seed, &code, t - 2 * STEP_SECS, 0), None);
    }

    #[test]
    fn codes_are_single_use_and_never_older_than_the_last() {
        let seed = rfc_seed();
        let t = 2_000_000_000;
        let s = step_of(t);
        let code = seed.code_at(t).unwrap();
        assert_eq!(verify(&seed, &code, t, 0), Some(s));
        // The same code again, once step s was recorded.
        assert_eq!(verify(&seed, &code, t, s), None);
        // The previous step's code (still inside the drift) after it.
        let older = seed.code_at(t - STEP_SECS).unwrap();
        assert_eq!(verify(&seed, &older, t, s), None);
        // The next step's code is still good.
        let newer = seed.code_at(t + STEP_SECS).unwrap();
        assert_eq!(verify(&seed, &newer, t, s), Some(s + 1));
    }

    #[test]
    fn malformed_codes_and_seeds_are_refused() {
        let seed = rfc_seed();
        let t = 1_111_111_111;
        let code = seed.code_at(t).unwrap();
        for bad in [
            "",
            "12345",
            "1234567",
            "abcdef",
            &format!("{code} "),
            &code[..5],
        ] {
            assert_eq!(verify(&seed, bad, t, 0), None, "{bad:?}");
        }
        assert!(Seed::from_bytes(&[7u8; 15]).is_err());
        assert!(!format!("{seed:?}").contains("1234"));
    }

    #[test]
    fn uri_and_qr() {
        let seed = rfc_seed();
        let uri = seed.otpauth_uri("atlanta.com", "alice").unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/atlanta.com:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=atlanta.com"
        );
        assert!(seed.otpauth_uri("a:b", "alice").is_err());
        let qr = qr_for_terminal(&uri).unwrap();
        assert!(qr.lines().count() > 20, "{qr}");
        assert!(qr.contains('▀') || qr.contains('▄'));
    }
}
