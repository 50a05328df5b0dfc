//! The master secret at rest: sealed with AES-256-GCM in the database (meta
//! `master_sealed`), under a key that is never in the database: a 0600 key
//! file in the data directory (default), or a passphrase from an
//! environment variable through Argon2id (salt in meta `kdf_salt`). HA1
//! values are sealed under another key derived from the same root.

use crate::config::Config;
use crate::store::Store;
use anyhow::{anyhow, bail, Context};
use ibephone::ibe::encoding::{b64_decode, b64_encode};
use ibephone::ibe::{MasterSecret, PublicParams};
use ibephone::pkg_client::seal::{random_bytes, write_secret_file, KdfParams, SealKey};

/// Labels of the keys derived from the root at-rest key.
const LABEL_MASTER: &[u8] = b"ibephone-pkg master secret v1";
const LABEL_HA1: &[u8] = b"ibephone-pkg digest ha1 v1";
const LABEL_OTP: &[u8] = b"ibephone-pkg totp seed v1";

/// The root at-rest key and what is derived from it.
pub struct Vault {
    root: SealKey,
}

impl Vault {
    /// Unlocks the vault of an initialized PKG (the key file must exist).
    pub async fn unlock(config: &Config, store: &Store) -> anyhow::Result<Vault> {
        Self::load(config, store, false).await
    }

    /// Creates the root key for `init` (key file created 0600; fails if it
    /// exists) or derives it from the passphrase with a fresh salt.
    pub async fn create(config: &Config, store: &Store) -> anyhow::Result<Vault> {
        Self::load(config, store, true).await
    }

    async fn load(config: &Config, store: &Store, create: bool) -> anyhow::Result<Vault> {
        let root = match &config.master_passphrase_env {
            Some(var) => {
                let pass = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    anyhow!("environment variable {var} (master passphrase) is not set")
                })?);
                let salt = match store.meta_get("kdf_salt").await? {
                    Some(s) => b64_decode("kdf_salt", &s)?,
                    None if create => {
                        let s: [u8; 16] = random_bytes()?;
                        store.meta_set("kdf_salt", &b64_encode(&s), false).await?;
                        s.to_vec()
                    }
                    None => {
                        bail!("database has no kdf_salt: was it initialized with a passphrase?")
                    }
                };
                SealKey::from_passphrase(pass.as_bytes(), &salt, KdfParams::FILE)?
            }
            None => {
                let path = config.master_key_path();
                if create {
                    // Raw 32 bytes, as SealKey::load_or_create_file reads them.
                    let bytes = zeroize::Zeroizing::new(random_bytes::<32>()?);
                    write_secret_file(&path, &bytes[..])
                        .with_context(|| format!("creating key file {}", path.display()))?;
                    SealKey::from_bytes(*bytes)
                } else {
                    if !path.exists() {
                        bail!("master key file {} is missing", path.display());
                    }
                    SealKey::load_or_create_file(&path)?
                }
            }
        };
        Ok(Vault { root })
    }

    /// The key that seals digest HA1 values.
    pub fn ha1_key(&self) -> SealKey {
        self.root.derive(LABEL_HA1)
    }

    /// The key that seals TOTP seeds.
    pub fn otp_key(&self) -> SealKey {
        self.root.derive(LABEL_OTP)
    }

    /// Seals and stores a new master secret (fails if one exists).
    pub async fn store_master(
        &self,
        store: &Store,
        domain: &str,
        msk: &MasterSecret,
    ) -> anyhow::Result<()> {
        let sealed = self
            .root
            .derive(LABEL_MASTER)
            .seal(&aad(domain), &msk.to_bytes()[..])?;
        store.meta_set("master_sealed", &sealed, true).await?;
        Ok(())
    }

    /// Opens the master secret and checks it against the parameters: for a
    /// threshold server, this server's share against its `P_pub_i`.
    pub async fn load_master(
        &self,
        store: &Store,
        params: &PublicParams,
    ) -> anyhow::Result<MasterSecret> {
        let sealed = store
            .meta_get("master_sealed")
            .await?
            .ok_or_else(|| anyhow!("no master secret: run `pkg-admin init` first"))?;
        let bytes = self
            .root
            .derive(LABEL_MASTER)
            .open(&aad(params.domain()), &sealed)
            .context("opening the master secret (wrong key file or passphrase?)")?;
        let msk = MasterSecret::from_bytes(&bytes)?;
        let expected = match params.threshold() {
            None => params.p_pub(),
            Some(t) => {
                let index = threshold_index(store)
                    .await?
                    .ok_or_else(|| anyhow!("threshold parameters but no server index stored"))?;
                t.server(index)
                    .ok_or_else(|| anyhow!("server index {index} is not in the parameters"))?
                    .p_pub_i
            }
        };
        if msk.p_pub() != expected {
            bail!("master secret does not match the stored parameters");
        }
        Ok(msk)
    }
}

fn aad(domain: &str) -> Vec<u8> {
    format!("ibephone-pkg master secret:{domain}").into_bytes()
}

/// The stored parameters of this PKG.
pub async fn load_params(store: &Store) -> anyhow::Result<PublicParams> {
    let json = store.meta_get("params").await?.ok_or_else(|| {
        anyhow!("database is not initialized: run `pkg-admin init --domain D` first")
    })?;
    Ok(PublicParams::from_json(&json)?)
}

/// Meta name of a threshold server's own index.
pub const META_THRESHOLD_INDEX: &str = "threshold_index";

/// This server's index among a threshold provider's servers (`None` for a
/// single PKG).
pub async fn threshold_index(store: &Store) -> anyhow::Result<Option<u32>> {
    match store.meta_get(META_THRESHOLD_INDEX).await? {
        None => Ok(None),
        Some(s) => Ok(Some(s.parse().map_err(|_| {
            anyhow!("stored threshold index {s:?} is not a number")
        })?)),
    }
}
