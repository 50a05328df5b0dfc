//! Relay credentials from a threshold provider's home key server while a
//! phone runs (pkg-api.md "Threshold provider" and `POST
//! /v1/turn-credentials`): one login at the home server alone
//! ([`super::threshold::home_server`]) with that server's own login
//! secret, the credentials asked, logout.
//!
//! Decisions (pkg-api.md is silent on renewing relay credentials at a
//! threshold provider):
//! - the home server issues them, as it does at a start with the key
//!   shares: it is the server whose `services` the phone uses, and a relay
//!   credential is not a key share (no other server need agree);
//! - the login sends that server's login secret (the kept one; one
//!   derived from the password when none is kept or the kept one is
//!   refused with `401 invalid_credentials` and the password gives
//!   another), never the password: the other servers' secrets cannot be
//!   had from it but by guessing;
//! - a one-time code, when the account has a second factor, is the home
//!   server's own (each server has its own seed).

use super::api::SecretString;
use super::threshold::{credentials_refused, derive};
use super::turn::TurnCredentials;
use super::{PkgClient, PkgClientError};
use crate::ibe::{Aor, PublicParams};
use subtle::ConstantTimeEq;

/// What the home server answered: the credentials, and the login secret
/// that logged in when it was derived now (to keep in place of the kept
/// one, which is missing or stale).
#[derive(Debug)]
pub struct HomeTurn {
    /// The relay credentials.
    pub credentials: TurnCredentials,
    /// The home server's login secret, when derived in this call.
    pub derived: Option<SecretString>,
}

/// Logs in to server `home` of `params`' threshold provider as `user`
/// (`kept`: its kept login secret, tried first; `password` derives one
/// when none is kept or the kept one is refused), with the server's
/// one-time code `otp` if any; checks that the account is `aor`; asks `POST
/// /v1/turn-credentials` and logs out. The connection is held to the
/// server's `tls_sha256` from the parameters. A refusal for want of a
/// code is [`PkgClientError::is_otp_required`]; a provider without a
/// relay is [`PkgClientError::NotOffered`].
pub async fn home_turn_credentials(
    params: &PublicParams,
    home: u32,
    (user, aor): (&str, &Aor),
    (kept, password): (Option<&SecretString>, &SecretString),
    otp: Option<&SecretString>,
) -> Result<HomeTurn, PkgClientError> {
    let server = params
        .threshold()
        .and_then(|t| t.servers.iter().find(|s| s.index == home))
        .ok_or_else(|| {
            PkgClientError::Protocol(format!("{home} is not one of the provider's key servers"))
        })?;
    let client = PkgClient::new(&server.pkg_url, Some(server.tls_sha256))?;
    let fresh = || async {
        derive(password.clone(), params, home)
            .await
            .map_err(PkgClientError::Protocol)
    };
    let (session, derived) = match kept {
        Some(k) => match client.login_with_otp(user, k, otp).await {
            Ok(s) => (s, None),
            Err(e) if credentials_refused(&e) => {
                // The same secret again (the password is unchanged: a
                // wrong code, say) is not tried twice: each refusal counts
                // as a failed login for the server's throttling.
                let secret = fresh().await?;
                if bool::from(secret.expose().as_bytes().ct_eq(k.expose().as_bytes())) {
                    return Err(e);
                }
                (
                    client.login_with_otp(user, &secret, otp).await?,
                    Some(secret),
                )
            }
            Err(e) => return Err(e),
        },
        None => {
            let secret = fresh().await?;
            (
                client.login_with_otp(user, &secret, otp).await?,
                Some(secret),
            )
        }
    };
    let got = if session.aor != *aor {
        Err(PkgClientError::Protocol(format!(
            "PKG account {user} is {}, not {aor}",
            session.aor
        )))
    } else {
        client.turn_credentials(&session).await
    };
    let _ = client.logout(&session).await;
    Ok(HomeTurn {
        credentials: got?,
        derived,
    })
}
