//! `pkg-admin`: the PKG administrator's CLI. Exit codes: 0 ok, 1 other
//! failure, 2 usage, 3 not found, 4 already exists, 5 invalid input,
//! 6 file unreadable or unwritable, 7 database unavailable, 8 not
//! initialized. Secrets are read from a prompt or standard input, never
//! from the command line.
// A binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use clap::{Parser, Subcommand};
use pkg_server::admin::{self, AdminError};
use pkg_server::config::Config;
use std::path::PathBuf;
use std::time::Duration;

/// ibephone PKG administration.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, default_value = "/etc/ibephone/pkg.toml")]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates the master secret, the parameters and the TLS certificate.
    Init {
        /// The SIP domain this PKG serves.
        #[arg(long)]
        domain: String,
        /// Public URL of the PKG (default `https://DOMAIN:8443`).
        #[arg(long)]
        pkg_url: Option<String>,
        /// Dealer mode of a threshold provider: `T/N` (e.g. 2/3); this
        /// configuration is server 1, `--server-config` gives the others.
        #[arg(long)]
        threshold: Option<String>,
        /// Configuration of threshold server 2, 3, ... (in order).
        #[arg(long = "server-config")]
        server_config: Vec<PathBuf>,
    },
    /// Sets up a threshold provider without a dealer: an offline
    /// ceremony in three steps, run by every server's operator (join,
    /// then start, then finish; the files are exchanged between steps).
    #[command(subcommand)]
    Dkg(DkgCmd),
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Issues one identity's keys into a passphrase-protected file (offline).
    Extract {
        /// The AOR, e.g. sip:alice@atlanta.com.
        aor: String,
        /// The key period, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Output file (created 0600; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the device SIP credentials as Kamailio db_text tables
    /// (`version`, `subscriber`: MD5 HA1 of each user's newest device).
    KamailioExport {
        /// Directory of the tables (Kamailio's DBURL text://DIR).
        #[arg(long)]
        out: PathBuf,
    },
    /// Public parameters.
    #[command(subcommand)]
    Params(ParamsCmd),
    /// Federation: other domains' parameters.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Shows the key issuance audit log.
    Audit {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only records since (Unix seconds, YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// Relay throughput: N concurrent relayed calls (20 ms packets both
    /// ways) through a running TURN server with REST credentials made from
    /// the shared secret (embedded relay or coturn).
    RelayBench {
        /// The relay's UDP address.
        #[arg(long)]
        relay: std::net::SocketAddr,
        /// File of the shared secret (default: the configuration's).
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
        /// Account name in the credentials (an enabled user for the
        /// embedded relay).
        #[arg(long, default_value = "alice")]
        user: String,
        /// Concurrent calls (two allocations each).
        #[arg(long, default_value_t = 50)]
        calls: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Process id of the relay (its CPU time gives packets per core).
        #[arg(long)]
        pid: Option<u32>,
        /// Label of the printed line.
        #[arg(long, default_value = "relay")]
        label: String,
    },
    /// Load test against a running server (creates users bench-0..N-1).
    Bench {
        /// Server URL, e.g. https://127.0.0.1:8443.
        #[arg(long)]
        url: String,
        /// Pinned certificate SHA-256 (hex); trust on first use if absent.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Concurrent users.
        #[arg(long, default_value_t = 10)]
        users: usize,
        /// Spread user start times over this many seconds.
        #[arg(long, default_value_t = 0.0)]
        ramp_secs: f64,
        /// Key requests (3 keys each) in the issuance phase.
        #[arg(long, default_value_t = 300)]
        key_requests: usize,
    },
}

/// What names one key generation ceremony (`dkg start` and `finish`).
#[derive(clap::Args)]
struct Ceremony {
    /// The SIP domain.
    #[arg(long)]
    domain: String,
    /// `T/N`, e.g. 2/3.
    #[arg(long)]
    threshold: String,
    /// Every server's member file (this one's included).
    #[arg(long = "member", required = true)]
    members: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum DkgCmd {
    /// Step 1: this server's TLS certificate and ceremony key; writes the
    /// member file to send to the other operators.
    Join {
        /// This server's index (1..=n).
        #[arg(long)]
        index: u32,
        /// The member file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Step 2: this server's dealing (commitments, and a share encrypted
    /// to every server), from every member file.
    Start {
        #[command(flatten)]
        ceremony: Ceremony,
        /// The dealing file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Step 3: checks every dealing's share for this server (naming a
    /// dealer whose share fails) and stores this server's share and the
    /// parameters.
    Finish {
        #[command(flatten)]
        ceremony: Ceremony,
        /// Every server's dealing file.
        #[arg(long = "dealing", required = true)]
        dealings: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Adds an account (password from prompt or stdin).
    Add { name: String },
    /// Lists accounts.
    List,
    /// Disables an account, ends its sessions and revokes its SIP credentials.
    Disable { name: String },
    /// Enables an account.
    Enable { name: String },
    /// Lists the devices holding a SIP credential, or revokes one.
    Devices {
        name: String,
        /// Revoke this device's SIP credential.
        #[arg(long)]
        revoke: Option<String>,
    },
    /// Sets a new password (prompt or stdin); ends sessions, revokes SIP credentials.
    Passwd { name: String },
    /// Enrols the account in the second factor (TOTP, RFC 6238): prints the
    /// otpauth:// URI and a QR code; a new enrolment replaces the old.
    Otp {
        name: String,
        /// Removes the second factor instead.
        #[arg(long)]
        disable: bool,
    },
}

#[derive(Subcommand)]
enum ParamsCmd {
    /// Prints the parameter document (stdout or --out) and its fingerprint.
    Export {
        /// Write to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrustCmd {
    /// Trusts another domain's parameter file after showing its fingerprint.
    Add {
        /// The parameter document.
        file: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Lists trusted domains with fingerprints.
    List,
    /// Stops trusting a domain.
    Remove { domain: String },
}

async fn run(cli: Cli) -> Result<(), AdminError> {
    let config = Config::load(&cli.config).map_err(|e| AdminError::File(format!("{e:#}")))?;
    match cli.cmd {
        Cmd::Init {
            domain,
            pkg_url,
            threshold: Some(spec),
            server_config,
        } => {
            let mut config = config;
            if pkg_url.is_some() {
                config.pkg_url = pkg_url;
            }
            admin::init_threshold(&config, &domain, &spec, &server_config).await
        }
        Cmd::Init {
            domain,
            pkg_url,
            threshold: None,
            server_config,
        } => {
            if !server_config.is_empty() {
                return Err(AdminError::Invalid(
                    "--server-config goes with --threshold".into(),
                ));
            }
            admin::init(&config, &domain, pkg_url.as_deref()).await
        }
        Cmd::Dkg(DkgCmd::Join { index, out }) => pkg_server::dkg::join(&config, index, &out),
        Cmd::Dkg(DkgCmd::Start { ceremony: c, out }) => {
            pkg_server::dkg::start(&config, &c.domain, &c.threshold, &c.members, &out)
        }
        Cmd::Dkg(DkgCmd::Finish {
            ceremony: c,
            dealings,
        }) => {
            pkg_server::dkg::finish(&config, &c.domain, &c.threshold, &c.members, &dealings).await
        }
        Cmd::User(UserCmd::Add { name }) => admin::user_add(&config, &name).await,
        Cmd::User(UserCmd::List) => admin::user_list(&config).await,
        Cmd::User(UserCmd::Disable { name }) => {
            admin::user_set_enabled(&config, &name, false).await
        }
        Cmd::User(UserCmd::Enable { name }) => admin::user_set_enabled(&config, &name, true).await,
        Cmd::User(UserCmd::Devices { name, revoke }) => {
            admin::user_devices(&config, &name, revoke.as_deref()).await
        }
        Cmd::User(UserCmd::Passwd { name }) => admin::user_passwd(&config, &name).await,
        Cmd::User(UserCmd::Otp { name, disable }) => admin::user_otp(&config, &name, disable).await,
        Cmd::Extract { aor, period, out } => {
            admin::extract_offline(&config, &aor, &period, &out).await
        }
        Cmd::KamailioExport { out } => admin::kamailio_export(&config, &out).await,
        Cmd::Params(ParamsCmd::Export { out }) => {
            admin::params_export(&config, out.as_deref()).await
        }
        Cmd::Trust(TrustCmd::Add { file, yes }) => admin::trust_add(&config, &file, yes).await,
        Cmd::Trust(TrustCmd::List) => admin::trust_list(&config).await,
        Cmd::Trust(TrustCmd::Remove { domain }) => admin::trust_remove(&config, &domain).await,
        Cmd::Audit { user, since } => {
            admin::audit(&config, user.as_deref(), since.as_deref()).await
        }
        Cmd::RelayBench {
            relay,
            secret_file,
            user,
            calls,
            seconds,
            pid,
            label,
        } => {
            let path = secret_file.unwrap_or_else(|| config.turn_secret_path());
            let secret = pkg_server::turn::credentials::SharedSecret::load_or_create(&path)
                .map_err(AdminError::Other)?;
            pkg_server::relay_bench::run(pkg_server::relay_bench::RelayBenchOptions {
                relay,
                secret,
                user,
                calls,
                duration: Duration::from_secs_f64(seconds.max(0.1)),
                pid,
                label,
            })
            .await
            .map(|_| ())
            .map_err(AdminError::Other)
        }
        Cmd::Bench {
            url,
            fingerprint,
            users,
            ramp_secs,
            key_requests,
        } => {
            let pin = match fingerprint {
                Some(f) => Some(
                    ibephone::pkg_client::tls::parse_fingerprint(&f)
                        .ok_or_else(|| AdminError::Invalid(format!("bad fingerprint {f:?}")))?,
                ),
                None => None,
            };
            let password = admin::bench_users(&config, users).await?;
            pkg_server::bench::run(pkg_server::bench::BenchOptions {
                url,
                pin,
                users,
                password,
                ramp: Duration::from_secs_f64(ramp_secs.max(0.0)),
                key_requests,
            })
            .await
            .map_err(AdminError::Other)
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("pkg-admin: {e}");
        std::process::exit(e.exit_code());
    }
}
