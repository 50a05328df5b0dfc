//! `pkg-admin` commands. Each returns an [`AdminError`] whose
//! [`AdminError::exit_code`] is the process exit code (documented in the
//! README): 0 ok, 1 other failure, 2 usage, 3 not found, 4 already exists,
//! 5 invalid input, 6 file unreadable or unwritable, 7 database
//! unavailable, 8 not initialized.

use crate::config::Config;
use crate::http::{aor_of, now_unix, valid_user_name};
use crate::password::{hash_password, PasswordError};
use crate::store::{AuditRecord, Store, StoreError};
use crate::vault::{load_params, Vault};
use ibephone::ibe::encoding::b64_encode;
use ibephone::ibe::fingerprint;
use ibephone::ibe::{extract, setup, Aor, Identity, Period, PublicParams};
use ibephone::pkg_client::api::{KeyEntry, SecretString};
use ibephone::pkg_client::seal::KdfParams;
use ibephone::pkg_client::store::{write_extract_file, KeyBundle};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// A failed command, by kind.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Bad input (name, AOR, period, password, document).
    #[error("{0}")]
    Invalid(String),
    /// A file cannot be read or written.
    #[error("{0}")]
    File(String),
    /// The database is unreachable or failed.
    #[error("database: {0}")]
    Database(String),
    /// The PKG has not been initialized.
    #[error("{0}")]
    NotInitialized(String),
    /// Anything else.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl AdminError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Other(_) => 1,
            AdminError::NotFound(_) => 3,
            AdminError::AlreadyExists(_) => 4,
            AdminError::Invalid(_) => 5,
            AdminError::File(_) => 6,
            AdminError::Database(_) => 7,
            AdminError::NotInitialized(_) => 8,
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(w) => AdminError::AlreadyExists(format!("{w} already exists")),
            StoreError::NotFound(w) => AdminError::NotFound(format!("{w} not found")),
            other => AdminError::Database(other.to_string()),
        }
    }
}

impl From<PasswordError> for AdminError {
    fn from(e: PasswordError) -> Self {
        AdminError::Invalid(e.to_string())
    }
}

type Result<T> = std::result::Result<T, AdminError>;

/// Opens the database of `config`.
pub async fn open_store(config: &Config) -> Result<Store> {
    Store::connect(&config.database_url(), 4)
        .await
        .map_err(|e| AdminError::Database(e.to_string()))
}

async fn initialized(config: &Config) -> Result<(Store, PublicParams)> {
    let store = open_store(config).await?;
    let params = load_params(&store)
        .await
        .map_err(|e| AdminError::NotInitialized(format!("{e:#}")))?;
    Ok((store, params))
}

async fn with_ha1(config: &Config, store: Store) -> Result<Store> {
    let vault = Vault::unlock(config, &store).await?;
    Ok(store
        .with_ha1_key(vault.ha1_key())
        .with_otp_key(vault.otp_key()))
}

/// Reads a secret: prompted (twice when `confirm`) on a terminal, else
/// one line of standard input. Never from the command line.
pub fn read_secret(prompt: &str, confirm: bool) -> Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let a = SecretString::new(
            rpassword::prompt_password(prompt).map_err(|e| AdminError::Invalid(e.to_string()))?,
        );
        if confirm {
            let b = SecretString::new(
                rpassword::prompt_password("again: ")
                    .map_err(|e| AdminError::Invalid(e.to_string()))?,
            );
            if a != b {
                return Err(AdminError::Invalid("the two entries differ".into()));
            }
        }
        Ok(a)
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| AdminError::Invalid(format!("reading standard input: {e}")))?;
        let s = line.trim_end_matches(['\n', '\r']);
        if s.is_empty() {
            return Err(AdminError::Invalid("empty secret on standard input".into()));
        }
        Ok(SecretString::new(s.to_string()))
    }
}

/// `init --domain D`: master secret, parameters, TLS certificate.
pub async fn init(config: &Config, domain: &str, pkg_url: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| AdminError::File(format!("{}: {e}", config.data_dir.display())))?;
    let store = open_store(config).await?;
    if let Some(p) = store.meta_get("params").await? {
        let d = PublicParams::from_json(&p)
            .map(|p| p.domain().to_string())
            .unwrap_or_default();
        return Err(AdminError::AlreadyExists(format!(
            "this PKG is already initialized for {d}"
        )));
    }
    let default_url = format!("https://{}:8443", domain.to_ascii_lowercase());
    let url = pkg_url
        .or(config.pkg_url.as_deref())
        .unwrap_or(&default_url);
    let (msk, params) = setup(domain, url).map_err(|e| AdminError::Invalid(e.to_string()))?;
    if config.master_passphrase_env.is_none() && config.master_key_path().exists() {
        return Err(AdminError::AlreadyExists(format!(
            "key file {} exists; remove it or use another data_dir",
            config.master_key_path().display()
        )));
    }
    let vault = Vault::create(config, &store).await?;
    vault.store_master(&store, params.domain(), &msk).await?;
    store.meta_set("params", &params.to_json(), true).await?;
    let names = crate::tls::cert_names(Some(params.pkg_url()));
    crate::tls::ensure_cert(&config.cert_path(), &config.key_path(), &names)?;
    let tls = crate::tls::load(&config.cert_path(), &config.key_path())?;
    println!("initialized PKG for {}", params.domain());
    println!(
        "parameter fingerprint: {}",
        with_short(&params.fingerprint())
    );
    println!(
        "TLS certificate SHA-256: {}  (users compare: {})",
        hex::encode(tls.fingerprint),
        fingerprint::short(&tls.fingerprint)
    );
    Ok(())
}

/// Parses a `--threshold` value `T/N` (checked further by the threshold
/// code: `1 <= t <= n <= 64`).
pub fn parse_threshold(spec: &str) -> Result<(u32, u32)> {
    spec.split_once('/')
        .and_then(|(t, n)| Some((t.trim().parse().ok()?, n.trim().parse().ok()?)))
        .ok_or_else(|| AdminError::Invalid(format!("--threshold {spec:?}: write T/N, e.g. 2/3")))
}

/// The store of a threshold server about to receive its share: refused
/// when it holds parameters already, or when a key file is in the way.
pub async fn open_uninitialized(c: &Config) -> Result<Store> {
    let store = open_store(c).await?;
    if store.meta_get("params").await?.is_some() {
        return Err(AdminError::AlreadyExists(format!(
            "the PKG of {} is already initialized",
            c.data_dir.display()
        )));
    }
    if c.master_passphrase_env.is_none() && c.master_key_path().exists() {
        return Err(AdminError::AlreadyExists(format!(
            "key file {} exists; remove it or use another data_dir",
            c.master_key_path().display()
        )));
    }
    Ok(store)
}

/// `init --domain D --threshold T/N --server-config C2 ... --server-config
/// CN` (dealer mode, for tests and trials): the configuration of `-c` is
/// server 1, the others servers 2..N in order; each must name its
/// `pkg_url`. Draws `s`, splits it t-of-n, seals each share in its
/// server's database with its own key file, creates each server's TLS
/// certificate, and stores in every database the same parameters, whose
/// `threshold` member lists the servers and says `"dealer": true`. `s`
/// and the polynomial are wiped before this returns.
pub async fn init_threshold(
    config: &Config,
    domain: &str,
    spec: &str,
    others: &[std::path::PathBuf],
) -> Result<()> {
    use ibephone::ibe::threshold::{deal, Threshold, ThresholdServer};
    let (t, n) = parse_threshold(spec)?;
    let mut configs = vec![config.clone()];
    for p in others {
        configs.push(Config::load(p).map_err(|e| AdminError::File(format!("{e:#}")))?);
    }
    if configs.len() != n as usize {
        return Err(AdminError::Invalid(format!(
            "--threshold {t}/{n} needs {n} servers: this configuration and {} --server-config, got {}",
            n.saturating_sub(1),
            configs.len().saturating_sub(1)
        )));
    }
    let mut urls = Vec::new();
    for (k, c) in configs.iter().enumerate() {
        let url = c.pkg_url.clone().ok_or_else(|| {
            AdminError::Invalid(format!(
                "server {}: its configuration has no pkg_url",
                k + 1
            ))
        })?;
        if urls.contains(&url) {
            return Err(AdminError::Invalid(format!("pkg_url {url} given twice")));
        }
        urls.push(url);
    }
    let mut stores = Vec::new();
    for c in &configs {
        std::fs::create_dir_all(&c.data_dir)
            .map_err(|e| AdminError::File(format!("{}: {e}", c.data_dir.display())))?;
        stores.push(open_uninitialized(c).await?);
    }
    let (msk, params) = setup(domain, &urls[0]).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let shares = deal(&msk, t, n).map_err(|e| AdminError::Invalid(e.to_string()))?;
    drop(msk);
    let mut servers = Vec::new();
    for ((c, store), share) in configs.iter().zip(&stores).zip(&shares) {
        let vault = Vault::create(c, store).await?;
        vault
            .store_master(store, params.domain(), share.secret())
            .await?;
        store
            .meta_set(
                crate::vault::META_THRESHOLD_INDEX,
                &share.index().to_string(),
                true,
            )
            .await?;
        let url = &urls[share.index() as usize - 1];
        let names = crate::tls::cert_names(Some(url));
        crate::tls::ensure_cert(&c.cert_path(), &c.key_path(), &names)?;
        let tls = crate::tls::load(&c.cert_path(), &c.key_path())?;
        servers.push(ThresholdServer {
            index: share.index(),
            pkg_url: url.clone(),
            p_pub_i: share.p_pub_i(),
            tls_sha256: tls.fingerprint,
        });
    }
    drop(shares);
    let params = params
        .with_threshold(Threshold {
            t,
            dealer: true,
            servers,
        })
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    for store in &stores {
        store.meta_set("params", &params.to_json(), true).await?;
    }
    println!(
        "initialized {t}-of-{n} threshold PKG for {} (dealer mode: the dealer held s and wiped it)",
        params.domain()
    );
    println!(
        "parameter fingerprint: {}",
        with_short(&params.fingerprint())
    );
    for s in params
        .threshold()
        .map(|t| t.servers.as_slice())
        .unwrap_or_default()
    {
        println!(
            "server {}: {} TLS certificate SHA-256: {}  (users compare: {})",
            s.index,
            s.pkg_url,
            hex::encode(s.tls_sha256),
            fingerprint::short(&s.tls_sha256)
        );
    }
    Ok(())
}

/// The secret this PKG stores a hash of for `password`: on a threshold
/// server the per-server login secret (pkg-api.md), so that what it sees
/// at login is useless at the other servers; else the password itself.
async fn login_secret_for(
    store: &Store,
    params: &PublicParams,
    password: SecretString,
) -> Result<SecretString> {
    let Some(index) = crate::vault::threshold_index(store).await? else {
        return Ok(password);
    };
    if password.expose().len() < 8 {
        return Err(AdminError::Invalid(
            "password must have at least 8 characters".into(),
        ));
    }
    let domain = params.domain().to_string();
    tokio::task::spawn_blocking(move || {
        ibephone::pkg_client::threshold::login_secret(&password, &domain, index)
    })
    .await
    .map_err(|e| AdminError::Other(e.into()))?
    .map_err(|e| AdminError::Other(e.into()))
}

fn check_name(name: &str) -> Result<()> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "bad user name {name:?}: 1-64 characters from A-Z a-z 0-9 . _ + -"
        )))
    }
}

/// `user add NAME`.
pub async fn user_add(config: &Config, name: &str) -> Result<()> {
    check_name(name)?;
    let (store, params) = initialized(config).await?;
    if store.user_get(name).await?.is_some() {
        return Err(AdminError::AlreadyExists(format!(
            "user {name} already exists"
        )));
    }
    let store = with_ha1(config, store).await?;
    let pw = read_secret(&format!("password for {name}: "), true)?;
    let pw = login_secret_for(&store, &params, pw).await?;
    let rec = hash_password(name, params.domain(), pw.expose(), &config.argon2)?;
    store.user_add(name, &rec, now_unix()).await?;
    println!(
        "added {}",
        aor_of(name, params.domain())
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// `user passwd NAME`.
pub async fn user_passwd(config: &Config, name: &str) -> Result<()> {
    check_name(name)?;
    let (store, params) = initialized(config).await?;
    if store.user_get(name).await?.is_none() {
        return Err(AdminError::NotFound(format!("unknown user {name}")));
    }
    let store = with_ha1(config, store).await?;
    let pw = read_secret(&format!("new password for {name}: "), true)?;
    let pw = login_secret_for(&store, &params, pw).await?;
    let rec = hash_password(name, params.domain(), pw.expose(), &config.argon2)?;
    store.user_set_password(name, &rec).await?;
    println!("password of {name} changed; their sessions ended");
    Ok(())
}

/// `user enable|disable NAME`.
pub async fn user_set_enabled(config: &Config, name: &str, enabled: bool) -> Result<()> {
    check_name(name)?;
    let (store, _) = initialized(config).await?;
    store
        .user_set_enabled(name, enabled)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => AdminError::NotFound(format!("unknown user {name}")),
            o => o.into(),
        })?;
    println!("{name} {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

/// `user devices NAME [--revoke DEVICE]`: lists the devices holding a SIP
/// credential (name and issue time, never a secret) or revokes one. A
/// revoked device's REGISTERs are refused once the registrar reloads
/// (`[sip] user_refresh_secs`).
pub async fn user_devices(config: &Config, name: &str, revoke: Option<&str>) -> Result<()> {
    check_name(name)?;
    let (store, _) = initialized(config).await?;
    if store.user_get(name).await?.is_none() {
        return Err(AdminError::NotFound(format!("unknown user {name}")));
    }
    if let Some(device) = revoke {
        store
            .sip_credential_revoke(name, device)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    AdminError::NotFound(format!("{name} has no device {device}"))
                }
                o => o.into(),
            })?;
        println!("SIP credential of {name}'s device {device} revoked");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for d in store.sip_devices(name).await? {
        let _ = writeln!(out, "{}\t{}", d.device, fmt_time(d.created));
    }
    Ok(())
}

/// `kamailio-export --out DIR`: the device SIP credentials as Kamailio's
/// db_text tables `version` and `subscriber` (columns `id username domain
/// password ha1 ha1b`) in `DIR`, for `config/kamailio/kamailio.cfg`
/// (`auth_db` with `calculate_ha1 no`, `password_column "ha1"`).
///
/// Decisions: one row per enabled user with the MD5 HA1 of their newest
/// device credential (Kamailio's `auth_db` checks only the first row of a
/// user name, and Kamailio challenges with MD5); the password column stays
/// empty, a NULL, so the column is declared `null` (db_text refuses an
/// empty non-null field and then loads no table at all; the PKG never
/// knows the credential, only its hashes). The
/// `subscriber` file is written 0600 (HA1 is password-equivalent for
/// digest); run it again after a phone asked for a new credential, and
/// reload Kamailio's table (`kamcmd db_text.reload`, or a restart).
pub async fn kamailio_export(config: &Config, out: &Path) -> Result<()> {
    let (store, params) = initialized(config).await?;
    let store = with_ha1(config, store).await?;
    std::fs::create_dir_all(out)
        .map_err(|e| AdminError::File(format!("{}: {e}", out.display())))?;
    let mut table = zeroize::Zeroizing::new(String::from(
        "id(int,auto) username(string) domain(string) password(string,null) ha1(string,null) ha1b(string,null) \n",
    ));
    let mut rows = 0usize;
    for u in store.user_list().await? {
        if !u.enabled {
            continue;
        }
        let newest = store
            .sip_devices(&u.name)
            .await?
            .into_iter()
            .max_by_key(|d| d.created);
        let Some(newest) = newest else { continue };
        let Some(h) = store
            .sip_device_ha1s(&u.name)
            .await?
            .into_iter()
            .find(|h| h.device == newest.device)
        else {
            continue;
        };
        rows += 1;
        table.push_str(&format!(
            "{rows}:{}:{}::{}:\n",
            u.name,
            params.domain(),
            h.ha1_md5.as_str()
        ));
    }
    let write = |name: &str, body: &str| -> Result<()> {
        let path = out.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options
            .open(&path)
            .map_err(|e| AdminError::File(format!("{}: {e}", path.display())))?;
        // An existing file keeps its mode through `truncate`: narrow it.
        // Windows: the file inherits the output directory's ACL.
        #[cfg(unix)]
        let narrowed = {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
        };
        #[cfg(not(unix))]
        let narrowed = Ok(());
        narrowed
            .and_then(|()| f.write_all(body.as_bytes()))
            .map_err(|e| AdminError::File(format!("{}: {e}", path.display())))
    };
    write(
        "version",
        "table_name(string) table_version(int) \nsubscriber:7\n",
    )?;
    write("subscriber", &table)?;
    println!(
        "{rows} subscriber(s) of {} written to {}",
        params.domain(),
        out.display()
    );
    Ok(())
}

/// `user otp NAME [--disable]`: enrols the account in the second factor
/// with a fresh TOTP seed (replacing any earlier one) and prints the
/// `otpauth://` URI and its QR code; with `disable`, removes it.
pub async fn user_otp(config: &Config, name: &str, disable: bool) -> Result<()> {
    check_name(name)?;
    let (store, params) = initialized(config).await?;
    if store.user_get(name).await?.is_none() {
        return Err(AdminError::NotFound(format!("unknown user {name}")));
    }
    let store = with_ha1(config, store).await?;
    if disable {
        if store.otp_remove(name).await? {
            println!("second factor of {name} removed");
        } else {
            println!("{name} had no second factor");
        }
        return Ok(());
    }
    let seed = crate::otp::Seed::generate().map_err(|e| AdminError::Other(e.into()))?;
    let uri = zeroize::Zeroizing::new(
        seed.otpauth_uri(params.domain(), name)
            .map_err(|e| AdminError::Invalid(e.to_string()))?,
    );
    let qr = zeroize::Zeroizing::new(
        crate::otp::qr_for_terminal(&uri).map_err(|e| AdminError::Other(e.into()))?,
    );
    store.otp_set(name, &seed).await?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", uri.as_str());
    let _ = writeln!(out, "{}", qr.as_str());
    let _ = writeln!(
        out,
        "second factor of {name} enrolled: scan the code (or enter the URI) in an authenticator app"
    );
    Ok(())
}

/// `user list`.
pub async fn user_list(config: &Config) -> Result<()> {
    let (store, params) = initialized(config).await?;
    let mut out = std::io::stdout().lock();
    for u in store.user_list().await? {
        let aor = aor_of(&u.name, params.domain())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}",
            u.name,
            aor,
            if u.enabled { "enabled" } else { "disabled" },
            fmt_time(u.created)
        );
    }
    Ok(())
}

/// `extract AOR --period P --out FILE`: offline issuance, passphrase file.
pub async fn extract_offline(config: &Config, aor: &str, period: &str, out: &Path) -> Result<()> {
    let aor = Aor::parse(aor).map_err(|e| AdminError::Invalid(format!("bad AOR: {e}")))?;
    let period =
        Period::month(period).map_err(|e| AdminError::Invalid(format!("bad period: {e}")))?;
    let (store, params) = initialized(config).await?;
    if params.threshold().is_some() {
        return Err(AdminError::Invalid(
            "a threshold server holds only a share of the master secret: its keys are shares; \
             the phone combines them from the servers"
                .into(),
        ));
    }
    if aor.host() != params.domain() {
        return Err(AdminError::Invalid(format!(
            "{aor} is not in this PKG's domain {}",
            params.domain()
        )));
    }
    match store.user_get(aor.user()).await? {
        None => return Err(AdminError::NotFound(format!("unknown user {}", aor.user()))),
        Some(u) if !u.enabled => {
            return Err(AdminError::Invalid(format!("user {} is disabled", u.name)))
        }
        Some(_) => {}
    }
    if out.exists() {
        return Err(AdminError::AlreadyExists(format!(
            "{} exists",
            out.display()
        )));
    }
    let vault = Vault::unlock(config, &store).await?;
    let msk = vault.load_master(&store, &params).await?;
    let pass = read_secret("passphrase for the key file: ", true)?;
    if pass.expose().len() < 8 {
        return Err(AdminError::Invalid(
            "passphrase must have at least 8 characters".into(),
        ));
    }
    let id = Identity::new(aor.clone(), period.clone());
    let keys = extract(&msk, &id);
    let bundle = KeyBundle {
        aor: aor.to_string(),
        params: params.to_json(),
        keys: vec![KeyEntry {
            period: period.to_string(),
            d_enc: SecretString::new(b64_encode(&keys.d_enc_bytes()[..])),
            d_sig: SecretString::new(b64_encode(&keys.d_sig_bytes()[..])),
        }],
        ..KeyBundle::default()
    };
    store
        .audit(&AuditRecord {
            at: now_unix(),
            user: aor.user().to_string(),
            identity: id.to_string(),
            period: period.to_string(),
            address: "offline".into(),
            outcome: "issued:extract".into(),
        })
        .await?;
    write_extract_file(out, &bundle, &pass, KdfParams::FILE)
        .map_err(|e| AdminError::File(e.to_string()))?;
    println!("wrote keys of {id} to {}", out.display());
    Ok(())
}

/// A fingerprint as the operator reads it: the spec's full form (16 groups)
/// and, beside it, the short form the phone shows its user (the first 5
/// groups, 80 bits; see `ibephone::ibe::fingerprint`), so either can be
/// compared with what the phone shows.
pub fn with_short(fp: &[u8; 32]) -> String {
    format!(
        "{}  (users compare: {})",
        fingerprint::full(fp),
        fingerprint::short(fp)
    )
}

/// `params export [--out FILE]`: the JSON document and its fingerprint.
pub async fn params_export(config: &Config, out: Option<&Path>) -> Result<()> {
    let (_, params) = initialized(config).await?;
    let json = params.to_json();
    match out {
        Some(p) => std::fs::write(p, format!("{json}\n"))
            .map_err(|e| AdminError::File(format!("{}: {e}", p.display())))?,
        None => println!("{json}"),
    }
    eprintln!("fingerprint: {}", with_short(&params.fingerprint()));
    Ok(())
}

/// `trust add FILE`: shows the domain and fingerprint, asks unless `yes`.
pub async fn trust_add(config: &Config, file: &Path, yes: bool) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| AdminError::File(format!("cannot read {}: {e}", file.display())))?;
    let p = PublicParams::from_json(&text)
        .map_err(|e| AdminError::Invalid(format!("{}: {e}", file.display())))?;
    let (store, own) = initialized(config).await?;
    if p.domain() == own.domain() {
        return Err(AdminError::Invalid(format!(
            "{} is this PKG's own domain",
            p.domain()
        )));
    }
    println!("domain:      {}", p.domain());
    println!("fingerprint: {}", with_short(&p.fingerprint()));
    if !yes {
        print!("compare the fingerprint with the other administrator; trust it? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(AdminError::Invalid(
                "not trusted (answer was not yes)".into(),
            ));
        }
    }
    store
        .trusted_put(p.domain(), &p.to_json(), now_unix())
        .await?;
    println!("trusted {}", p.domain());
    Ok(())
}

/// `trust list`.
pub async fn trust_list(config: &Config) -> Result<()> {
    let (store, _) = initialized(config).await?;
    for (domain, json) in store.trusted_list().await? {
        let fp = PublicParams::from_json(&json)
            .map(|p| p.fingerprint_display())
            .unwrap_or_else(|e| format!("(damaged: {e})"));
        println!("{domain}\t{fp}");
    }
    Ok(())
}

/// `trust remove DOMAIN`.
pub async fn trust_remove(config: &Config, domain: &str) -> Result<()> {
    let (store, _) = initialized(config).await?;
    store
        .trusted_remove(&domain.to_ascii_lowercase())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => AdminError::NotFound(format!("{domain} is not trusted")),
            o => o.into(),
        })?;
    println!("removed {domain}");
    Ok(())
}

/// Parses `--since`: Unix seconds, `YYYY-MM-DD` or RFC 3339.
pub fn parse_since(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|_| {
        AdminError::Invalid(format!(
            "bad time {s:?}: use Unix seconds, YYYY-MM-DD or RFC 3339"
        ))
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

/// `audit [--user U] [--since T]`.
pub async fn audit(config: &Config, user: Option<&str>, since: Option<&str>) -> Result<()> {
    let since = since.map(parse_since).transpose()?.unwrap_or(0);
    let (store, _) = initialized(config).await?;
    if let Some(u) = user {
        if store.user_get(u).await?.is_none() {
            return Err(AdminError::NotFound(format!("unknown user {u}")));
        }
    }
    let mut out = std::io::stdout().lock();
    for r in store.audit_list(user, since).await? {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            fmt_time(r.at),
            r.user,
            r.identity,
            r.period,
            r.address,
            r.outcome
        );
    }
    Ok(())
}

fn fmt_time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Creates (or resets) users `bench-0` ... `bench-{n-1}` with one random
/// password (one Argon2id hash shared by all) and returns it.
pub async fn bench_users(config: &Config, n: usize) -> Result<SecretString> {
    let (store, params) = initialized(config).await?;
    let store = with_ha1(config, store).await?;
    let raw: [u8; 18] =
        ibephone::pkg_client::seal::random_bytes().map_err(|e| AdminError::Other(e.into()))?;
    let pw = SecretString::new(b64_encode(&raw));
    let phc = crate::password::phc_hash(pw.expose(), &config.argon2)?;
    for i in 0..n {
        let name = format!("bench-{i}");
        let rec =
            crate::password::record_with_phc(&name, params.domain(), pw.expose(), phc.clone());
        if store.user_get(&name).await?.is_some() {
            store.user_set_password(&name, &rec).await?;
            store.user_set_enabled(&name, true).await?;
        } else {
            store.user_add(&name, &rec, now_unix()).await?;
        }
    }
    Ok(pw)
}
