//! The phone's side of a threshold provider (pkg-api.md "Threshold
//! provider"): a per-server login secret, so that no server can replay at
//! another what it received; key shares fetched from the servers at once,
//! each checked against its server's `P_pub_i` (a bad server is named and
//! skipped); `t` good shares combined and the result checked against
//! `p_pub` like any key.

use super::api::{KeyEntry, SecretString};
use super::client::PkgClient;
use super::PkgClientError;
use crate::ibe::encoding::{b64_decode, b64_encode};
use crate::ibe::threshold::{check_key_share, combine, KeyShare, Threshold, ThresholdServer};
use crate::ibe::{check_key, Aor, Identity, Period, PrivateKeys, PublicParams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

/// Prefix of the salt of the per-server login secret.
pub const LOGIN_SALT_TAG: &[u8] = b"IBESIP-V01 threshold login";
/// Argon2id memory of the login secret, KiB (pkg-api.md).
pub const LOGIN_M_KIB: u32 = 19456;
/// Argon2id passes of the login secret.
pub const LOGIN_T: u32 = 2;
/// How long one server may take for login, key shares and logout.
pub const SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The secret sent as `password` to threshold server `index` of `domain`:
/// `base64url(Argon2id(password, salt = SHA-256("IBESIP-V01 threshold
/// login" || domain || 0x00 || decimal index), m = 19456 KiB, t = 2,
/// p = 1, 32 bytes))`. Different for every server, and the password cannot
/// be recovered from it but by guessing.
pub fn login_secret(
    password: &SecretString,
    domain: &str,
    index: u32,
) -> Result<SecretString, PkgClientError> {
    let mut h = Sha256::new();
    h.update(LOGIN_SALT_TAG);
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(index.to_string().as_bytes());
    let salt: [u8; 32] = h.finalize().into();
    let params = argon2::Params::new(LOGIN_M_KIB, LOGIN_T, 1, Some(32))
        .map_err(|e| PkgClientError::Protocol(format!("login secret parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.expose().as_bytes(), &salt, &mut out[..])
        .map_err(|e| PkgClientError::Protocol(format!("login secret: {e}")))?;
    Ok(SecretString::new(b64_encode(&out[..])))
}

/// What a threshold key fetch got: the combined keys (checked against
/// `p_pub`), the servers whose shares were combined, and those skipped
/// with why.
#[derive(Debug)]
pub struct ThresholdKeys {
    /// One key per period asked for.
    pub keys: Vec<PrivateKeys>,
    /// The indices of the servers whose shares were combined, ascending.
    pub used: Vec<u32>,
    /// Servers not used, with the reason (down, refused, bad share).
    pub skipped: Vec<(u32, String)>,
}

impl ThresholdKeys {
    /// "servers 1 and 3 of 3 (2 needed)", for people.
    pub fn describe(&self, threshold: &Threshold) -> String {
        describe_servers(&self.used, threshold)
    }
}

fn describe_servers(used: &[u32], threshold: &Threshold) -> String {
    let names: Vec<String> = used.iter().map(u32::to_string).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "none".into(),
    };
    format!(
        "server{} {list} of {} ({} needed)",
        if used.len() == 1 { "" } else { "s" },
        threshold.servers.len(),
        threshold.t
    )
}

/// A one-time code for threshold server `index` (each server has its own
/// TOTP seed), or `None` when the account has no second factor.
pub type OtpFor<'a> = &'a (dyn Fn(u32) -> Option<SecretString> + Sync);

/// Logs in to the threshold servers of `params` as `user` (a derived
/// secret per server), asks all of them at once for their shares of the
/// keys for `periods`, checks each share against the server's `P_pub_i`,
/// combines the good shares of the `t` lowest indices per period and
/// checks the result against `p_pub`. Every server is heard (or given up
/// after [`SERVER_TIMEOUT`]) so that each bad one is named every time.
/// Fails, with a sentence naming every server and why, when fewer than
/// `t` servers gave good shares.
pub async fn fetch_threshold_keys(
    params: &PublicParams,
    user: &str,
    password: &SecretString,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(params, user, Secrets::Derive(password), otp, periods).await
}

/// The login secrets of every server of `params` for `password` (one
/// Argon2id each, [`login_secret`]): derive them once and keep them,
/// instead of the password, for later fetches with
/// [`fetch_threshold_keys_with_secrets`]. Blocking (CPU).
pub fn login_secrets(
    params: &PublicParams,
    password: &SecretString,
) -> Result<BTreeMap<u32, SecretString>, PkgClientError> {
    let threshold = params
        .threshold()
        .ok_or_else(|| PkgClientError::Protocol("not a threshold provider".into()))?;
    threshold
        .servers
        .iter()
        .map(|s| Ok((s.index, login_secret(password, params.domain(), s.index)?)))
        .collect()
}

/// [`fetch_threshold_keys`] with login secrets derived before
/// ([`login_secrets`]); a server without one is skipped.
pub async fn fetch_threshold_keys_with_secrets(
    params: &PublicParams,
    user: &str,
    secrets: &BTreeMap<u32, SecretString>,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    fetch_shares(params, user, Secrets::Given(secrets), otp, periods).await
}

/// Where the per-server login secrets come from.
enum Secrets<'a> {
    /// Derived from the password, each in its server's task.
    Derive(&'a SecretString),
    /// Derived before.
    Given(&'a BTreeMap<u32, SecretString>),
}

/// One server's login secret, or what to derive it from.
enum ServerSecret {
    /// The password: derive this server's secret.
    Password(SecretString),
    /// Derived before (`None`: none was given for this server).
    Given(Option<SecretString>),
}

async fn fetch_shares(
    params: &PublicParams,
    user: &str,
    secrets: Secrets<'_>,
    otp: OtpFor<'_>,
    periods: &[Period],
) -> Result<(Aor, ThresholdKeys), PkgClientError> {
    let threshold = params
        .threshold()
        .ok_or_else(|| PkgClientError::Protocol("not a threshold provider".into()))?;
    let mut tasks = JoinSet::new();
    for server in &threshold.servers {
        let server = server.clone();
        let params = params.clone();
        let user = user.to_string();
        let secret = match &secrets {
            Secrets::Derive(pw) => ServerSecret::Password((*pw).clone()),
            Secrets::Given(map) => ServerSecret::Given(map.get(&server.index).cloned()),
        };
        let otp = otp(server.index);
        let periods = periods.to_vec();
        tasks.spawn(async move {
            let r = tokio::time::timeout(
                SERVER_TIMEOUT,
                shares_from(&server, &params, &user, secret, otp.as_ref(), &periods),
            )
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()));
            (server.index, r)
        });
    }
    let t = threshold.t as usize;
    let mut good: BTreeMap<u32, (Aor, Vec<KeyShare>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, r)) = joined else { continue };
        match r {
            Ok(x) => {
                good.insert(index, x);
            }
            Err(why) => skipped.push((index, why)),
        }
    }
    skipped.sort_by_key(|(i, _)| *i);
    if good.len() < t {
        let mut sentence = format!(
            "only {} of the {} key servers of {} gave a good key share and {} are needed, so no keys were fetched",
            good.len(),
            threshold.servers.len(),
            params.domain(),
            threshold.t
        );
        for (i, why) in &skipped {
            sentence.push_str(&format!("; server {i}: {why}"));
        }
        return Err(PkgClientError::Threshold(sentence));
    }
    // All servers must agree on the account's AOR.
    let mut aors = good.values().map(|(a, _)| a);
    let aor = aors
        .next()
        .cloned()
        .ok_or_else(|| PkgClientError::Threshold("no shares".into()))?;
    if aors.any(|a| *a != aor) {
        return Err(PkgClientError::Protocol(
            "the threshold servers disagree about the account's AOR".into(),
        ));
    }
    // The t good servers of lowest index; spare good ones are not needed.
    let chosen: Vec<&Vec<KeyShare>> = good.values().take(t).map(|(_, s)| s).collect();
    let used: Vec<u32> = good.keys().take(t).copied().collect();
    let mut keys = Vec::with_capacity(periods.len());
    for (k, _) in periods.iter().enumerate() {
        let shares: Vec<KeyShare> = chosen.iter().map(|s| s[k].clone()).collect();
        let combined = combine(&shares)?;
        check_key(params, &combined)?;
        keys.push(combined);
    }
    Ok((
        aor,
        ThresholdKeys {
            keys,
            used,
            skipped,
        },
    ))
}

/// One server: login with its own secret, its shares for `periods` in
/// that order, each checked; logout. The error is a reason for people.
async fn shares_from(
    server: &ThresholdServer,
    params: &PublicParams,
    user: &str,
    secret: ServerSecret,
    otp: Option<&SecretString>,
    periods: &[Period],
) -> Result<(Aor, Vec<KeyShare>), String> {
    let client =
        PkgClient::new(&server.pkg_url, Some(server.tls_sha256)).map_err(|e| e.to_string())?;
    let secret = match secret {
        ServerSecret::Password(pw) => {
            let (domain, index) = (params.domain().to_string(), server.index);
            tokio::task::spawn_blocking(move || login_secret(&pw, &domain, index))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        }
        ServerSecret::Given(Some(given)) => given,
        ServerSecret::Given(None) => return Err("no login secret for this server".into()),
    };
    let session = client
        .login_with_otp(user, &secret, otp)
        .await
        .map_err(|e| e.to_string())?;
    let answer = client.fetch_key_entries(&session, periods).await;
    let _ = client.logout(&session).await;
    let answer = answer.map_err(|e| e.to_string())?;
    if answer.index != Some(server.index) {
        return Err(format!(
            "answered as server {:?}, not {}",
            answer.index, server.index
        ));
    }
    if answer.aor != session.aor.as_str() {
        return Err(format!(
            "shares are for {}, not {}",
            answer.aor, session.aor
        ));
    }
    let shares = shares_for(&session.aor, params, server, &answer.keys, periods)?;
    Ok((session.aor, shares))
}

/// Decodes one server's entries, exactly one per period in `periods`'
/// order, each checked against the server's `P_pub_i`.
fn shares_for(
    aor: &Aor,
    params: &PublicParams,
    server: &ThresholdServer,
    entries: &[KeyEntry],
    periods: &[Period],
) -> Result<Vec<KeyShare>, String> {
    if entries.len() != periods.len() {
        return Err(format!(
            "asked for {} periods, got {}",
            periods.len(),
            entries.len()
        ));
    }
    let mut out = Vec::with_capacity(periods.len());
    for period in periods {
        let e = entries
            .iter()
            .find(|e| e.period == period.as_str())
            .ok_or_else(|| format!("no share for {period}"))?;
        let d_enc =
            Zeroizing::new(b64_decode("d_enc", e.d_enc.expose()).map_err(|e| e.to_string())?);
        let d_sig =
            Zeroizing::new(b64_decode("d_sig", e.d_sig.expose()).map_err(|e| e.to_string())?);
        let keys =
            PrivateKeys::from_bytes(Identity::new(aor.clone(), period.clone()), &d_enc, &d_sig)
                .map_err(|e| format!("bad key share: {e}"))?;
        let share = KeyShare::new(server.index, keys).map_err(|e| e.to_string())?;
        check_key_share(params.domain(), &server.p_pub_i, &share).map_err(|_| {
            format!("its key share for {period} is wrong (does not match its p_pub_i)")
        })?;
        out.push(share);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::threshold::{deal, ThresholdServer};
    use crate::ibe::{extract, setup};

    #[test]
    fn login_secrets_differ_per_server_and_domain_and_are_stable() {
        let pw = SecretString::from("correct horse");
        let a1 = login_secret(&pw, "atlanta.com", 1).unwrap();
        assert_eq!(a1, login_secret(&pw, "atlanta.com", 1).unwrap());
        assert_ne!(a1, login_secret(&pw, "atlanta.com", 2).unwrap());
        assert_ne!(a1, login_secret(&pw, "biloxi.com", 1).unwrap());
        assert_ne!(
            a1,
            login_secret(&"correct horsf".into(), "atlanta.com", 1).unwrap()
        );
        assert_eq!(a1.expose().len(), 43); // 32 bytes, base64url unpadded
                                           // Index 1 and 11 do not collide through the decimal encoding.
        assert_ne!(
            login_secret(&pw, "atlanta.com1", 1).unwrap(),
            login_secret(&pw, "atlanta.com", 11).unwrap()
        );
    }

    #[test]
    fn a_wrong_share_is_named_and_a_good_one_accepted() {
        let (msk, params) = setup("atlanta.com", "https://pkg1.atlanta.com").unwrap();
        let shares = deal(&msk, 2, 3).unwrap();
        let servers: Vec<ThresholdServer> = shares
            .iter()
            .map(|s| ThresholdServer {
                index: s.index(),
                pkg_url: format!("https://pkg{}.atlanta.com", s.index()),
                p_pub_i: s.p_pub_i(),
                tls_sha256: [0; 32],
            })
            .collect();
        let aor = Aor::parse("sip:alice@atlanta.com").unwrap();
        let p = Period::month("2026-11").unwrap();
        let entry = |m: &crate::ibe::MasterSecret| {
            let k = extract(m, &Identity::new(aor.clone(), p.clone()));
            KeyEntry {
                period: p.as_str().into(),
                d_enc: SecretString::new(b64_encode(&k.d_enc_bytes()[..])),
                d_sig: SecretString::new(b64_encode(&k.d_sig_bytes()[..])),
            }
        };
        let periods = [p.clone()];
        assert!(shares_for(
            &aor,
            &params,
            &servers[1],
            &[entry(shares[1].secret())],
            &periods
        )
        .is_ok());
        let e = shares_for(
            &aor,
            &params,
            &servers[1],
            &[entry(shares[0].secret())],
            &periods,
        )
        .unwrap_err();
        assert!(e.contains("wrong"), "{e}");
        assert!(shares_for(&aor, &params, &servers[1], &[], &periods).is_err());
        let t = Threshold {
            t: 2,
            dealer: true,
            servers,
        };
        assert_eq!(
            describe_servers(&[1, 3], &t),
            "servers 1 and 3 of 3 (2 needed)"
        );
        assert_eq!(describe_servers(&[2], &t), "server 2 of 3 (2 needed)");
    }
}
