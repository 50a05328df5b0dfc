//! The PKG's database through sqlx's `Any` driver: SQLite (the default, a
//! file, nothing to install) or PostgreSQL (`postgres://`), with the same
//! migrations for both. Only portable SQL is used: `TEXT` and `BIGINT`
//! columns, `$n` placeholders, `ON CONFLICT ... DO UPDATE` and `RETURNING`.
//!
//! Everything shared by several server processes lives here: users,
//! sessions (as token hashes), throttling counters, the audit log, the
//! sealed master secret, the parameters and the trusted foreign parameters.

use crate::password::{DigestAlgorithm, PasswordRecord};
use ibephone::pkg_client::seal::SealKey;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::Row;
use std::time::Duration;
use zeroize::Zeroizing;

/// Database errors, with what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A user (or other row) of that name already exists.
    #[error("{0} already exists")]
    Duplicate(String),
    /// No such user (or other row).
    #[error("{0} not found")]
    NotFound(String),
    /// A stored value does not decode or decrypt.
    #[error("stored data is damaged or sealed under another key: {0}")]
    Corrupt(String),
}

/// The migrations, in order; each statement is idempotent.
const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS users (user_name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, \
         ha1_md5 TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, enabled BIGINT NOT NULL, created BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, \
         created BIGINT NOT NULL, last_seen BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_name)",
        "CREATE TABLE IF NOT EXISTS throttle (tkey TEXT PRIMARY KEY, failures BIGINT NOT NULL, \
         window_start BIGINT NOT NULL, locked_until BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit (at BIGINT NOT NULL, user_name TEXT NOT NULL, \
         identity TEXT NOT NULL, period TEXT NOT NULL, address TEXT NOT NULL, outcome TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS audit_user_at ON audit (user_name, at)",
        "CREATE TABLE IF NOT EXISTS trusted (domain TEXT PRIMARY KEY, params TEXT NOT NULL, added BIGINT NOT NULL)",
    ],
),
(
    2,
    &[
        // Device SIP credentials: only their sealed digest HA1s.
        "CREATE TABLE IF NOT EXISTS sip_credentials (user_name TEXT NOT NULL, device TEXT NOT NULL, \
         ha1_md5 TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, created BIGINT NOT NULL, \
         PRIMARY KEY (user_name, device))",
    ],
), (
    3,
    // The second factor: a sealed TOTP seed per account and the last
    // accepted time step (codes are single-use).
    &["CREATE TABLE IF NOT EXISTS otp (user_name TEXT PRIMARY KEY, seed_sealed TEXT NOT NULL, \
       last_step BIGINT NOT NULL)"],
)];

/// At most this many live device credentials per account.
pub const MAX_DEVICES: usize = 16;

/// One device credential as the administrator sees it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device name.
    pub device: String,
    /// Issue time, Unix seconds.
    pub created: i64,
}

/// The opened digest HA1s of one device credential (password-equivalent
/// for SIP digest: zeroized on drop, never logged).
pub struct DeviceHa1 {
    /// The device name.
    pub device: String,
    /// `MD5(user:realm:password)`, hex.
    pub ha1_md5: Zeroizing<String>,
    /// `SHA-256(user:realm:password)`, hex.
    pub ha1_sha256: Zeroizing<String>,
}

impl std::fmt::Debug for DeviceHa1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHa1")
            .field("device", &self.device)
            .field("ha1", &"[redacted]")
            .finish()
    }
}

/// A user row (without secrets other than the PHC hash).
#[derive(Debug, Clone)]
pub struct User {
    /// Account name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Whether the account may log in and get keys.
    pub enabled: bool,
    /// Creation time, Unix seconds.
    pub created: i64,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// Account that asked.
    pub user: String,
    /// Identity string asked for.
    pub identity: String,
    /// Period label.
    pub period: String,
    /// Client address (or `offline` for `pkg-admin extract`).
    pub address: String,
    /// `issued` or `denied:<reason>`.
    pub outcome: String,
}

/// The database handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    ha1_key: Option<SealKey>,
    otp_key: Option<SealKey>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await?;
        if sqlite {
            // Readers do not block the writer; persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await?;
        }
        let store = Store {
            pool,
            ha1_key: None,
            otp_key: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The same store, able to seal and open digest HA1 values with `key`.
    pub fn with_ha1_key(mut self, key: SealKey) -> Store {
        self.ha1_key = Some(key);
        self
    }

    /// The same store, able to seal and open TOTP seeds with `key`.
    pub fn with_otp_key(mut self, key: SealKey) -> Store {
        self.otp_key = Some(key);
        self
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        for (version, stmts) in MIGRATIONS {
            let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&self.pool)
                .await?;
            if done.is_some() {
                continue;
            }
            for s in *stmts {
                sqlx::query(s).execute(&self.pool).await?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING",
            )
            .bind(*version)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// `SELECT 1`: is the database reachable?
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }

    /// A value of the `meta` table.
    pub async fn meta_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Sets a `meta` value; with `create_only`, fails if it exists.
    pub async fn meta_set(
        &self,
        name: &str,
        value: &str,
        create_only: bool,
    ) -> Result<(), StoreError> {
        let sql = if create_only {
            "INSERT INTO meta (name, value) VALUES ($1, $2)"
        } else {
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        };
        sqlx::query(sql)
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(|e| dup_or(e, name))?;
        Ok(())
    }

    // ---- users ----

    /// Adds an enabled user.
    pub async fn user_add(
        &self,
        name: &str,
        rec: &PasswordRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let (md5, sha) = self.seal_ha1(name, rec)?;
        sqlx::query(
            "INSERT INTO users (user_name, password_hash, ha1_md5, ha1_sha256, enabled, created) \
             VALUES ($1, $2, $3, $4, 1, $5)",
        )
        .bind(name)
        .bind(rec.phc.as_str())
        .bind(md5)
        .bind(sha)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| dup_or(e, &format!("user {name}")))?;
        Ok(())
    }

    /// Replaces a user's password (and HA1 values); ends their sessions.
    pub async fn user_set_password(
        &self,
        name: &str,
        rec: &PasswordRecord,
    ) -> Result<(), StoreError> {
        let (md5, sha) = self.seal_ha1(name, rec)?;
        let r = sqlx::query(
            "UPDATE users SET password_hash = $2, ha1_md5 = $3, ha1_sha256 = $4 WHERE user_name = $1",
        )
        .bind(name)
        .bind(rec.phc.as_str())
        .bind(md5)
        .bind(sha)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        self.sip_credentials_revoke_all(name).await?;
        self.sessions_end_user(name).await
    }

    /// Enables or disables a user; disabling ends their sessions.
    pub async fn user_set_enabled(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE users SET enabled = $2 WHERE user_name = $1")
            .bind(name)
            .bind(i64::from(enabled))
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        if !enabled {
            self.sip_credentials_revoke_all(name).await?;
            self.sessions_end_user(name).await?;
        }
        Ok(())
    }

    /// One user.
    pub async fn user_get(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT user_name, password_hash, enabled, created FROM users WHERE user_name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// All users, by name.
    pub async fn user_list(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_name, password_hash, enabled, created FROM users ORDER BY user_name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Whether `user` exists and is enabled (for an embedded SIP registrar).
    pub async fn user_enabled(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.user_get(user).await?.is_some_and(|u| u.enabled))
    }

    /// The digest HA1 (`H(user:realm:password)`, lower-case hex) of an
    /// enabled user for `algorithm`, for an embedded SIP registrar. HA1 is
    /// password-equivalent for SIP digest: it is stored sealed under a key
    /// derived from the at-rest key and opened only here.
    pub async fn digest_ha1(
        &self,
        user: &str,
        algorithm: DigestAlgorithm,
    ) -> Result<Option<Zeroizing<String>>, StoreError> {
        let key = self
            .ha1_key
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no HA1 key configured".into()))?;
        let row =
            sqlx::query("SELECT ha1_md5, ha1_sha256, enabled FROM users WHERE user_name = $1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<i64, _>(2)? == 0 {
            return Ok(None);
        }
        let col = match algorithm {
            DigestAlgorithm::Md5 => 0,
            DigestAlgorithm::Sha256 => 1,
        };
        let sealed: String = row.try_get(col)?;
        let plain = key
            .open(&ha1_aad(user, algorithm), &sealed)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let s = String::from_utf8(plain.to_vec()).map_err(|_| StoreError::Corrupt("HA1".into()))?;
        Ok(Some(Zeroizing::new(s)))
    }

    fn seal_ha1(&self, name: &str, rec: &PasswordRecord) -> Result<(String, String), StoreError> {
        let key = self
            .ha1_key
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no HA1 key configured".into()))?;
        let seal = |alg, v: &str| {
            key.seal(&ha1_aad(name, alg), v.as_bytes())
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        Ok((
            seal(DigestAlgorithm::Md5, &rec.ha1_md5)?,
            seal(DigestAlgorithm::Sha256, &rec.ha1_sha256)?,
        ))
    }

    // ---- device SIP credentials ----

    /// Stores the digest HA1s (sealed) of a new credential of `user` for
    /// `device`, replacing that device's earlier one. Refuses a new device
    /// beyond [`MAX_DEVICES`] with `StoreError::Duplicate("devices")`.
    pub async fn sip_credential_put(
        &self,
        user: &str,
        device: &str,
        ha1_md5: &str,
        ha1_sha256: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = self
            .ha1_key
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no HA1 key configured".into()))?;
        let seal = |alg, v: &str| {
            key.seal(&device_aad(user, device, alg), v.as_bytes())
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let md5 = seal(DigestAlgorithm::Md5, ha1_md5)?;
        let sha = seal(DigestAlgorithm::Sha256, ha1_sha256)?;
        let existing = self.sip_devices(user).await?;
        if existing.len() >= MAX_DEVICES && !existing.iter().any(|d| d.device == device) {
            return Err(StoreError::Duplicate("devices".into()));
        }
        sqlx::query(
            "INSERT INTO sip_credentials (user_name, device, ha1_md5, ha1_sha256, created) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_name, device) DO UPDATE SET \
             ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256, created = excluded.created",
        )
        .bind(user)
        .bind(device)
        .bind(md5)
        .bind(sha)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The devices of `user` with a live credential, by name.
    pub async fn sip_devices(&self, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, created FROM sip_credentials WHERE user_name = $1 ORDER BY device",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceRecord {
                    device: r.try_get(0)?,
                    created: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// The opened HA1s of every live credential of `user` (none for a
    /// disabled or unknown user), for the registrar.
    pub async fn sip_device_ha1s(&self, user: &str) -> Result<Vec<DeviceHa1>, StoreError> {
        let key = self
            .ha1_key
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no HA1 key configured".into()))?;
        if !self.user_enabled(user).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT device, ha1_md5, ha1_sha256 FROM sip_credentials WHERE user_name = $1 ORDER BY device",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let device: String = r.try_get(0)?;
            let open = |alg, col: usize| -> Result<Zeroizing<String>, StoreError> {
                let sealed: String = r.try_get(col)?;
                let plain = key
                    .open(&device_aad(user, &device, alg), &sealed)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                String::from_utf8(plain.to_vec())
                    .map(Zeroizing::new)
                    .map_err(|_| StoreError::Corrupt("HA1".into()))
            };
            let ha1_md5 = open(DigestAlgorithm::Md5, 1)?;
            let ha1_sha256 = open(DigestAlgorithm::Sha256, 2)?;
            out.push(DeviceHa1 {
                device,
                ha1_md5,
                ha1_sha256,
            });
        }
        Ok(out)
    }

    /// Revokes the credential of one device of `user`.
    pub async fn sip_credential_revoke(&self, user: &str, device: &str) -> Result<(), StoreError> {
        let r = sqlx::query("DELETE FROM sip_credentials WHERE user_name = $1 AND device = $2")
            .bind(user)
            .bind(device)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("device {device} of {user}")));
        }
        Ok(())
    }

    /// Revokes every device credential of `user`.
    pub async fn sip_credentials_revoke_all(&self, user: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM sip_credentials WHERE user_name = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    // ---- second factor ----

    fn otp_key(&self) -> Result<&SealKey, StoreError> {
        self.otp_key
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no TOTP key configured".into()))
    }

    /// Enrols (or re-enrols) `user` with a TOTP seed, sealed at rest; no
    /// step has been used yet.
    pub async fn otp_set(&self, user: &str, seed: &crate::otp::Seed) -> Result<(), StoreError> {
        let sealed = self
            .otp_key()?
            .seal(&otp_aad(user), seed.expose())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO otp (user_name, seed_sealed, last_step) VALUES ($1, $2, 0) \
             ON CONFLICT (user_name) DO UPDATE SET seed_sealed = excluded.seed_sealed, last_step = 0",
        )
        .bind(user)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes `user`'s second factor; true when there was one.
    pub async fn otp_remove(&self, user: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM otp WHERE user_name = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// `user`'s TOTP seed and last accepted step, if enrolled.
    pub async fn otp_get(&self, user: &str) -> Result<Option<(crate::otp::Seed, u64)>, StoreError> {
        let row = sqlx::query("SELECT seed_sealed, last_step FROM otp WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get(0)?;
        let last: i64 = row.try_get(1)?;
        let plain = self
            .otp_key()?
            .open(&otp_aad(user), &sealed)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let seed =
            crate::otp::Seed::from_bytes(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((seed, last.max(0) as u64)))
    }

    /// Records that `user` used the code of `step`; false when that step
    /// (or a later one) was used already, so that of two logins racing
    /// with one code (even on two servers of one database) one wins.
    pub async fn otp_consume(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("TOTP step".into()))?;
        let r =
            sqlx::query("UPDATE otp SET last_step = $2 WHERE user_name = $1 AND last_step < $2")
                .bind(user)
                .bind(step)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Whether `user` has a second factor.
    pub async fn otp_enabled(&self, user: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT user_name FROM otp WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    // ---- sessions ----

    /// Records a new session under the hash of its token.
    pub async fn session_create(
        &self,
        token_hash: &str,
        user: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, created, last_seen) VALUES ($1, $2, $3, $3)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user of a live session (idle and absolute limits checked), and
    /// marks it used at `now`.
    pub async fn session_use(
        &self,
        token_hash: &str,
        now: i64,
        idle: i64,
        absolute: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET last_seen = $2 WHERE token_hash = $1 \
             AND last_seen + $3 > $2 AND created + $4 > $2 RETURNING user_name",
        )
        .bind(token_hash)
        .bind(now)
        .bind(idle)
        .bind(absolute)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Ends a session; true when it existed.
    pub async fn session_end(&self, token_hash: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn sessions_end_user(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE user_name = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes sessions dead for more than `absolute` seconds.
    pub async fn sessions_purge(
        &self,
        now: i64,
        idle: i64,
        absolute: i64,
    ) -> Result<u64, StoreError> {
        let r =
            sqlx::query("DELETE FROM sessions WHERE last_seen + $2 <= $1 OR created + $3 <= $1")
                .bind(now)
                .bind(idle)
                .bind(absolute)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }

    // ---- throttling ----

    /// Seconds until `key` may try again, if it is locked out.
    pub async fn throttle_locked(&self, key: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT locked_until FROM throttle WHERE tkey = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let until: i64 = match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        };
        Ok((until > now).then_some(until - now))
    }

    /// Counts a failure of `key`; locks it out for `lockout` seconds when it
    /// reaches `max` failures within `window` seconds.
    pub async fn throttle_fail(
        &self,
        key: &str,
        now: i64,
        max: i64,
        window: i64,
        lockout: i64,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(
            "INSERT INTO throttle (tkey, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
             ON CONFLICT (tkey) DO UPDATE SET \
             failures = CASE WHEN throttle.window_start + $3 <= $2 THEN 1 ELSE throttle.failures + 1 END, \
             window_start = CASE WHEN throttle.window_start + $3 <= $2 THEN $2 ELSE throttle.window_start END \
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .bind(window)
        .fetch_one(&self.pool)
        .await?;
        let failures: i64 = row.try_get(0)?;
        if failures >= max {
            sqlx::query(
                "UPDATE throttle SET locked_until = $2, failures = 0, window_start = $3 WHERE tkey = $1",
            )
            .bind(key)
            .bind(now + lockout)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Forgets the failures of `key` (after a successful login).
    pub async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM throttle WHERE tkey = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- audit ----

    /// Appends an audit record.
    pub async fn audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        self.audit_all(std::slice::from_ref(rec)).await
    }

    /// Appends audit records in one transaction (one commit, one sync of
    /// the journal): all of them or, on an error, none.
    pub async fn audit_all(&self, recs: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for rec in recs {
            sqlx::query(
                "INSERT INTO audit (at, user_name, identity, period, address, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(rec.at)
            .bind(rec.user.as_str())
            .bind(rec.identity.as_str())
            .bind(rec.period.as_str())
            .bind(rec.address.as_str())
            .bind(rec.outcome.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Audit records, oldest first, optionally of one user and since a time.
    pub async fn audit_list(
        &self,
        user: Option<&str>,
        since: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, user_name, identity, period, address, outcome FROM audit \
             WHERE at >= $1 AND ($2 = '' OR user_name = $2) ORDER BY at, user_name, period",
        )
        .bind(since)
        .bind(user.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    at: r.try_get(0)?,
                    user: r.try_get(1)?,
                    identity: r.try_get(2)?,
                    period: r.try_get(3)?,
                    address: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                })
            })
            .collect()
    }

    // ---- trusted foreign parameters ----

    /// Stores (or replaces) a trusted domain's parameter document.
    pub async fn trusted_put(
        &self,
        domain: &str,
        params_json: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO trusted (domain, params, added) VALUES ($1, $2, $3) \
             ON CONFLICT (domain) DO UPDATE SET params = excluded.params, added = excluded.added",
        )
        .bind(domain)
        .bind(params_json)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A trusted domain's parameter document.
    pub async fn trusted_get(&self, domain: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT params FROM trusted WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// All trusted domains with their documents.
    pub async fn trusted_list(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT domain, params FROM trusted ORDER BY domain")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Removes a trusted domain.
    pub async fn trusted_remove(&self, domain: &str) -> Result<(), StoreError> {
        let r = sqlx::query("DELETE FROM trusted WHERE domain = $1")
            .bind(domain)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("trusted domain {domain}")));
        }
        Ok(())
    }
}

fn ha1_aad(user: &str, alg: DigestAlgorithm) -> Vec<u8> {
    format!("ibephone-pkg-ha1:{}:{user}", alg.name()).into_bytes()
}

fn device_aad(user: &str, device: &str, alg: DigestAlgorithm) -> Vec<u8> {
    format!("ibephone-pkg-device-ha1:{}:{user}:{device}", alg.name()).into_bytes()
}

fn otp_aad(user: &str) -> Vec<u8> {
    format!("ibephone-pkg-otp:{user}").into_bytes()
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User, StoreError> {
    Ok(User {
        name: r.try_get(0)?,
        password_hash: r.try_get(1)?,
        enabled: r.try_get::<i64, _>(2)? != 0,
        created: r.try_get(3)?,
    })
}

fn dup_or(e: sqlx::Error, what: &str) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Duplicate(what.to_string());
        }
    }
    StoreError::Db(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(period: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            at: 1_800_000_000,
            user: "alice".into(),
            identity: format!("sip:alice@atlanta.invalid|{period}"),
            period: period.into(),
            address: "127.0.0.1".into(),
            outcome: outcome.into(),
        }
    }

    /// `audit_all` writes one key request's records in one transaction:
    /// when one of them cannot be written, none is, and the caller gets
    /// the error (http.rs writes them before any key leaves, so no key is
    /// issued unaudited and no audit shows half a request). The failure is
    /// forced midway by a trigger refusing the second record.
    #[test]
    fn one_requests_audit_records_land_together_or_not_at_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}", dir.path().join("pkg.db").display());
            let store = Store::connect(&url, 1).await.unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse_second BEFORE INSERT ON audit WHEN NEW.period = '2026-12' \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            )
            .execute(&store.pool)
            .await
            .unwrap();
            let request = [record("2026-11", "issued"), record("2026-12", "issued")];
            assert!(store.audit_all(&request).await.is_err());
            assert_eq!(
                store.audit_list(None, 0).await.unwrap().len(),
                0,
                "half a request audited"
            );

            sqlx::query("DROP TRIGGER refuse_second")
                .execute(&store.pool)
                .await
                .unwrap();
            store.audit_all(&request).await.unwrap();
            assert_eq!(store.audit_list(Some("alice"), 0).await.unwrap().len(), 2);
        });
    }
}
