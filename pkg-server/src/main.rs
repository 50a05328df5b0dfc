//! `pkg-server`: the PKG HTTPS server. Prints one machine-readable line on
//! stdout once it listens:
//! `PKG-SERVER listening=ADDR fingerprint=SHA256HEX sip=ADDR sip_tls=ADDR turn=ADDR`
//! (`sip=off`, `sip_tls=off`, `turn=off` without the embedded SIP
//! registrar/proxy, its TLS side, or the relay; `turn=` is the UDP
//! address, TCP is on the same port; ` turns=ADDR` follows when the relay
//! has TLS).
// A binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use clap::Parser;
use pkg_server::config::Config;
use std::io::Write;
use std::path::PathBuf;

/// ibephone PKG server.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, default_value = "/etc/ibephone/pkg.toml")]
    config: PathBuf,
    /// Listen address, overriding the configuration (`127.0.0.1:0` = any free port).
    #[arg(long)]
    listen: Option<String>,
    /// Also run the domain's SIP registrar/proxy on this UDP/TCP address,
    /// overriding `[sip] listen` (`127.0.0.1:0` = any free port).
    #[arg(long)]
    sip: Option<String>,
    /// Also take SIP over TLS (with the PKG's certificate) on this address,
    /// overriding `[sip] tls` / `tls_listen`; needs `--sip` or `[sip] listen`.
    #[arg(long)]
    sip_tls: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PKG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = Config::load(&args.config)?;
    let started =
        pkg_server::serve::start_with_tls(config, args.listen, args.sip, args.sip_tls).await?;
    let fp = hex::encode(started.fingerprint);
    if started.cert_created {
        eprintln!(
            "created a self-signed TLS certificate; users pin its SHA-256 fingerprint {fp} (the phone shows its first 5 groups: {})",
            ibephone::ibe::fingerprint::short(&started.fingerprint)
        );
    }
    {
        let mut out = std::io::stdout().lock();
        let sip = started
            .sip
            .as_ref()
            .map_or_else(|| "off".to_string(), |s| s.addr.to_string());
        let sip_tls = started
            .sip
            .as_ref()
            .and_then(|s| s.tls_addr)
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        let turn = started
            .turn
            .as_ref()
            .map_or_else(|| "off".to_string(), |t| t.udp.to_string());
        let turns = match started.turn.as_ref().and_then(|t| t.tls) {
            Some(a) => format!(" turns={a}"),
            None => String::new(),
        };
        writeln!(
            out,
            "PKG-SERVER listening={} fingerprint={fp} sip={sip} sip_tls={sip_tls} turn={turn}{turns}",
            started.addr
        )?;
        out.flush()?;
    }
    tracing::info!(addr = %started.addr, fingerprint = %fp, "listening");
    started
        .serve(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = ctrl_c.await;
                            return;
                        }
                    };
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
        })
        .await;
    Ok(())
}
