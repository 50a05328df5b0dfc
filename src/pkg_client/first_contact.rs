//! The phone's first contact with a PKG, before anything is stored
//! (pkg-api.md "Discovery", item 1): which certificate it accepts and so
//! which fingerprint the user confirms.
//!
//! With trusted roots (the platform's), the PKG is first asked with a
//! client that accepts only a certificate chaining to those roots for the
//! PKG's host name; when that works the user confirms the *parameter*
//! fingerprint (the certificate is vouched for by the roots). Otherwise
//! (self-signed, a certificate for another name, unknown issuer, no
//! roots) the certificate is trusted on first use and the user confirms
//! the *certificate* fingerprint, as before.
//!
//! Either way the certificate seen becomes the pin stored with the keys:
//! later logins, key renewals and SIP over TLS are held to exactly that
//! certificate, so a certificate that some other trusted CA issues later
//! for the same name cannot take over the account. A pin is re-learned
//! only with the user's consent: by setting up again, or after a CA
//! renewal ([`recheck_certificate`]): when the pinned certificate is
//! refused, the PKG is asked again accepting only a certificate that
//! chains to the trusted roots for its host name and serves the confirmed
//! parameters; only that one is shown to the user (old and new
//! fingerprint, the reason) for acceptance. Anything else stays refused.

use super::api::Services;
use super::{PkgClient, PkgClientError};
use crate::ibe::PublicParams;
use rustls::RootCertStore;
use std::net::IpAddr;
use std::sync::Arc;

/// Why the phone accepted the PKG's certificate, and so which fingerprint
/// the user must confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstTrust {
    /// The certificate chains to the trusted roots for the PKG's host
    /// name: the user confirms the parameter fingerprint.
    PlatformRoots,
    /// It does not (or no roots were given): trusted on first use, the
    /// user confirms the certificate fingerprint.
    Certificate,
}

/// What the first contact found.
#[derive(Debug)]
pub struct FirstContact {
    /// How the certificate was accepted.
    pub trust: FirstTrust,
    /// SHA-256 of the certificate accepted: the pin to store once the user
    /// confirmed.
    pub cert_fingerprint: [u8; 32],
    /// The provider's parameters (`GET /v1/params`).
    pub params: PublicParams,
    /// Its `services` member (empty when absent).
    pub services: Services,
}

/// Asks the PKG at `url` (connecting to `addrs` when given, else resolving
/// its host) for its parameters: first checked by `roots` for the URL's
/// host name, when given; on a certificate the roots do not vouch for,
/// again with trust on first use. Errors other than TLS (unreachable,
/// refused, a bad document) are returned as they are.
pub async fn first_contact(
    url: &str,
    addrs: &[IpAddr],
    roots: Option<Arc<RootCertStore>>,
) -> Result<FirstContact, PkgClientError> {
    if let Some(roots) = roots {
        let client = PkgClient::with_roots(url, roots)?.with_addresses(addrs);
        match client.params_and_services().await {
            Ok((params, services)) => {
                let fp = client
                    .pinned_fingerprint()
                    .ok_or_else(|| PkgClientError::Tls("no certificate was accepted".into()))?;
                return Ok(FirstContact {
                    trust: FirstTrust::PlatformRoots,
                    cert_fingerprint: fp,
                    params,
                    services,
                });
            }
            Err(PkgClientError::Tls(why)) => {
                tracing::debug!(%url, %why, "the PKG's certificate is not vouched for by the trusted roots; trusting it on first use");
            }
            Err(e) => return Err(e),
        }
    }
    let client = PkgClient::new(url, None)?.with_addresses(addrs);
    let (params, services) = client.params_and_services().await?;
    let fp = client
        .pinned_fingerprint()
        .ok_or_else(|| PkgClientError::Tls("the PKG showed no certificate".into()))?;
    Ok(FirstContact {
        trust: FirstTrust::Certificate,
        cert_fingerprint: fp,
        params,
        services,
    })
}

/// A changed PKG certificate that the trusted roots vouch for: what the
/// user is shown before the pin may be re-learned (a CA renewal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRenewal {
    /// The PKG's host name the new certificate is valid for.
    pub host: String,
    /// The pinned fingerprint (SHA-256 of the old certificate).
    pub old: [u8; 32],
    /// The new certificate's fingerprint: the pin once accepted.
    pub new: [u8; 32],
    /// Why it may be accepted, for people.
    pub reason: String,
}

/// What [`recheck_certificate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateCheck {
    /// The PKG still shows the pinned certificate: nothing to re-learn.
    Unchanged,
    /// Another certificate, vouched for by the roots for the PKG's host
    /// name, with the same parameters: may be pinned with consent.
    Renewed(CertificateRenewal),
    /// Another certificate the roots do not vouch for (self-signed, an
    /// unknown issuer, another name), no roots, or other parameters: the
    /// pin stands and the PKG stays refused. The reason, for the log.
    Refused(String),
}

/// After a pin mismatch: asks the PKG at `url` (connecting to `addrs`
/// when given) again, this time accepting only a certificate that chains
/// to `roots` for the URL's host name, and compares its parameters with
/// the confirmed `params_fingerprint`. Only then is the new certificate
/// offered ([`CertificateCheck::Renewed`]); the pin is never changed here.
/// Errors other than TLS (unreachable, a bad answer) are returned.
pub async fn recheck_certificate(
    url: &str,
    addrs: &[IpAddr],
    roots: Option<Arc<RootCertStore>>,
    pinned: [u8; 32],
    params_fingerprint: [u8; 32],
) -> Result<CertificateCheck, PkgClientError> {
    let Some(roots) = roots else {
        return Ok(CertificateCheck::Refused(
            "no trusted roots on this computer".into(),
        ));
    };
    let client = PkgClient::with_roots(url, roots)?.with_addresses(addrs);
    let params = match client.params().await {
        Ok(p) => p,
        Err(PkgClientError::Tls(why)) => {
            return Ok(CertificateCheck::Refused(format!(
                "the new certificate is not vouched for by the trusted roots: {why}"
            )))
        }
        Err(e) => return Err(e),
    };
    let new = client
        .pinned_fingerprint()
        .ok_or_else(|| PkgClientError::Tls("no certificate was accepted".into()))?;
    if bool::from(subtle::ConstantTimeEq::ct_eq(&new[..], &pinned[..])) {
        return Ok(CertificateCheck::Unchanged);
    }
    if params.fingerprint() != params_fingerprint {
        return Ok(CertificateCheck::Refused(
            "the provider's parameters changed as well: not a certificate renewal".into(),
        ));
    }
    let host = client.host().to_string();
    Ok(CertificateCheck::Renewed(CertificateRenewal {
        reason: format!(
            "Its new certificate is issued for {host} by a certificate authority this computer \
             trusts, and the provider's keys (its parameter fingerprint) are unchanged: this \
             looks like a routine certificate renewal."
        ),
        host,
        old: pinned,
        new,
    }))
}

/// A re-check ([`recheck_certificate`]) made because the provider's SIP
/// proxy or TURN relay, held to the same pin, presented the certificate
/// `presented`: a renewal is offered only when the PKG's new certificate
/// is that very one (the services show the PKG's certificate); a PKG
/// still on the pin, or renewed to another certificate, means the service
/// shows one the PKG does not vouch for, and the refusal stands.
pub fn for_presented(check: CertificateCheck, presented: [u8; 32]) -> CertificateCheck {
    use subtle::ConstantTimeEq;
    match check {
        CertificateCheck::Renewed(r) if bool::from(r.new.ct_eq(&presented)) => {
            CertificateCheck::Renewed(r)
        }
        CertificateCheck::Renewed(_) | CertificateCheck::Unchanged => CertificateCheck::Refused(
            "the SIP proxy or relay shows a certificate the PKG does not show".into(),
        ),
        refused @ CertificateCheck::Refused(_) => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(new: [u8; 32]) -> CertificateCheck {
        CertificateCheck::Renewed(CertificateRenewal {
            host: "pkg.atlanta.invalid".into(),
            old: [1; 32],
            new,
            reason: "renewed".into(),
        })
    }

    /// The attack: a proxy (or relay) showing its own certificate at the
    /// moment the PKG renews may not ride on the PKG's renewal, nor on a
    /// PKG that kept its pin.
    #[test]
    fn a_service_is_offered_only_the_certificate_the_pkg_shows() {
        assert_eq!(for_presented(renewed([2; 32]), [2; 32]), renewed([2; 32]));
        assert!(matches!(
            for_presented(renewed([2; 32]), [3; 32]),
            CertificateCheck::Refused(why) if why.contains("does not show")
        ));
        assert!(matches!(
            for_presented(CertificateCheck::Unchanged, [3; 32]),
            CertificateCheck::Refused(_)
        ));
        let refused = CertificateCheck::Refused("not vouched for".into());
        assert_eq!(for_presented(refused.clone(), [2; 32]), refused);
    }
}
