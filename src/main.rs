//! The `ibephone` command: headless tools today; the desktop app and the
//! headless agent arrive with their layers.
// A binary has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ibephone::ibe::{Aor, Identity, Period, PublicParams};
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "ibephone",
    version,
    about = "Secured calls with identity-based encryption"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Desktop app, debugging only: append every call key (session KEKs,
    /// message CEKs, SRTP keys) to this file (mode 0600), for `ibephone
    /// pcap decrypt`; the window warns while it is on.
    #[arg(long, value_name = "FILE")]
    keylog: Option<std::path::PathBuf>,
    /// Desktop app: start hidden in the tray (minimised where the desktop
    /// has no tray), as the login autostart entry does.
    #[arg(long)]
    background: bool,
    /// Detail of the diagnostic log (window and agent): off, error, warn,
    /// info, debug or trace. It never holds keys, passwords or message text.
    #[arg(long, global = true, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// Write no log file (the file is in the platform's state directory,
    /// e.g. ~/.local/state/ibephone/logs, or IBEPHONE_LOG_DIR).
    #[arg(long, global = true)]
    no_log_file: bool,
}

/// Installs the diagnostic log for a phone (window or agent) as the flags
/// say; the guard must live until the program ends.
fn start_log(
    cli_level: &str,
    no_file: bool,
    name: &str,
) -> Result<ibephone::agent::logging::LogGuard> {
    let mut opts = ibephone::agent::logging::LogOptions::new(name);
    opts.level = cli_level.to_string();
    opts.file = !no_file;
    ibephone::agent::logging::init(&opts).context("starting the log")
}

#[derive(Subcommand)]
enum Command {
    /// Check captures: is everything on the wire tunneled?
    Pcap {
        #[command(subcommand)]
        command: PcapCommand,
    },
    /// Run a phone without a window: JSON-line commands on stdin, events on stdout.
    Agent {
        /// The agent configuration (see config/alice.toml).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Play this WAV file into every call instead of the microphone.
        #[arg(long)]
        audio_in: Option<std::path::PathBuf>,
        /// Record each call's received audio to this WAV file (mono, 8 kHz
        /// for G.711, 48 kHz for Opus) instead of playing it on the speaker.
        #[arg(long)]
        audio_out: Option<std::path::PathBuf>,
        /// Codecs to offer, most preferred first: opus, pcmu, pcma.
        #[arg(long, value_delimiter = ',', default_value = "opus,pcmu,pcma")]
        codecs: Vec<String>,
        /// No sound devices: send silence (unless --audio-in) and discard
        /// received audio (unless --audio-out). For scripts, demos and CI.
        #[arg(long)]
        no_audio: bool,
        /// No echo cancellation, noise suppression or gain control on the
        /// microphone (they are on for a sound card, never for --audio-in).
        #[arg(long)]
        no_voice_processing: bool,
        /// Benchmarks only: run the voice processing on --audio-in and
        /// --audio-out as on a sound card (its CPU and latency measured
        /// without sound devices).
        #[arg(long, hide = true)]
        voice_processing_on_wav: bool,
        /// Debugging only: append every tunnel key (session KEKs, message
        /// CEKs) to this file (mode 0600), for `ibephone pcap decrypt`.
        #[arg(long, value_name = "FILE")]
        keylog: Option<std::path::PathBuf>,
    },
    /// The main job on this machine: provider and two phones on loopback,
    /// a secured call, a capture of the whole run checked for leaks.
    Demo {
        /// Where to write the capture.
        #[arg(long, default_value = "target/demo.pcap")]
        pcap: std::path::PathBuf,
        /// Seconds to stay in the call.
        #[arg(long, default_value_t = 3)]
        hold: u64,
    },
    /// Print the identity string of a SIP URI for a key period.
    Identity {
        /// A sip: or sips: URI, or a name-addr such as "Bob" <sip:bob@biloxi.com>.
        uri: String,
        /// Key period YYYY-MM (default: the current UTC month).
        #[arg(long)]
        period: Option<String>,
    },
    /// Print the fingerprint of a provider's public parameters (JSON file).
    Fingerprint {
        /// The parameter document.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum PcapCommand {
    /// Judge every SIP message of a pcap/pcapng capture; exit code 0 only
    /// when every frame was judged and nothing leaked, 1 when something
    /// leaked, 2 when something could not be judged, the capture is empty,
    /// or the file cannot be read. SIP over TLS is judged by its TLS
    /// record framing; with `--keylog` (the TLS secrets an agent wrote with
    /// `--keylog`) the SIP inside each connection it covers is judged too.
    Verify {
        /// The capture file.
        file: std::path::PathBuf,
        /// A key log with TLS secrets (NSS key log lines).
        #[arg(long, value_name = "FILE")]
        keylog: Option<std::path::PathBuf>,
    },
    /// Print the inner SIP messages of a capture, decrypted with the key
    /// log an agent wrote (`ibephone agent --keylog`); exit code 1 when a
    /// tunneled message could not be decrypted.
    Decrypt {
        /// The capture file.
        file: std::path::PathBuf,
        /// The key log.
        #[arg(long, value_name = "FILE")]
        keylog: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ibephone: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            #[cfg(feature = "gui")]
            {
                let _log = start_log(&cli.log_level, cli.no_log_file, "ibephone.log")?;
                if let Some(path) = &cli.keylog {
                    // Fail now, not at the first call.
                    ibephone::agent::keylog::FileKeyLog::open(path)?;
                    eprintln!(
                        "warning: key log on: every call key goes to {} (debugging only)",
                        path.display()
                    );
                }
                ibephone::ui::run_desktop(cli.keylog, cli.background)?;
                Ok(ExitCode::SUCCESS)
            }
            #[cfg(not(feature = "gui"))]
            {
                eprintln!("This build has no desktop app (feature `gui`); see `ibephone --help` for the tools.");
                Ok(ExitCode::from(2))
            }
        }
        Some(Command::Pcap {
            command: PcapCommand::Verify { file, keylog },
        }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let keys = match &keylog {
                Some(k) => {
                    let text = std::fs::read_to_string(k)
                        .with_context(|| format!("reading {}", k.display()))?;
                    let keys = ibephone::pcap::tls::TlsKeys::parse(&text);
                    if keys.is_empty() {
                        anyhow::bail!("{} holds no TLS secrets (NSS key log lines)", k.display());
                    }
                    Some(keys)
                }
                None => None,
            };
            let report = ibephone::pcap::verify_capture_with(&bytes, keys.as_ref())?;
            println!("{report}");
            // 0 clean, 1 leaks, 2 cannot judge (as for an unreadable file).
            Ok(ExitCode::from(report.verdict().exit_code()))
        }
        Some(Command::Pcap {
            command: PcapCommand::Decrypt { file, keylog },
        }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let text = std::fs::read_to_string(&keylog)
                .with_context(|| format!("reading {}", keylog.display()))?;
            let log = ibephone::tunnel::keylog::KeyLog::parse(&text)
                .with_context(|| format!("in {}", keylog.display()))?;
            let tls = ibephone::pcap::tls::TlsKeys::parse(&text);
            let tls = (!tls.is_empty()).then_some(tls);
            let out = ibephone::pcap::decrypt::decrypt_capture_with(&bytes, &log, tls.as_ref())?;
            println!("{out}");
            Ok(if out.failures() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Command::Agent {
            config,
            audio_in,
            audio_out,
            codecs,
            keylog,
            no_audio,
            no_voice_processing,
            voice_processing_on_wav,
        }) => {
            let _log = start_log(&cli.log_level, cli.no_log_file, "agent.log")?;
            use ibephone::agent::media_io::{AudioIn, AudioOut, MediaOptions};
            let (silent_in, silent_out) = (
                no_audio && audio_in.is_none(),
                no_audio && audio_out.is_none(),
            );
            let mut media = MediaOptions::from_flags(audio_in, audio_out, &codecs)
                .map_err(anyhow::Error::msg)?;
            if silent_in {
                media.audio_in = AudioIn::Silence;
            }
            if silent_out {
                media.audio_out = AudioOut::Discard;
            }
            media.voice_processing = !no_voice_processing;
            media.voice_processing_on_wav = voice_processing_on_wav;
            // Confirmed call keys (spec 6 continuity) live beside the keys.
            let file = ibephone::agent::config::AgentFile::load(&config);
            let retained = file
                .as_ref()
                .ok()
                .map(|f| ibephone::agent::retained::RetainedFiles::beside(&f.keys));
            // [media]: ICE on unless turned off, with its STUN server.
            media.ice = match &file {
                Ok(f) if !f.media.ice => None,
                Ok(f) => Some(ibephone::agent::media_io::IceOptions {
                    stun: f.media.stun,
                    turn: Vec::new(),
                }),
                Err(_) => Some(Default::default()),
            };
            let rt = runtime()?;
            let (config, keys, renewal) =
                rt.block_on(ibephone::agent::keys::load_with_renewal(&config))?;
            eprintln!("{}", keys.summary());
            // The provider's STUN server (unless [media] names one) and
            // relay: fetched now when provisioning did not, renewed before
            // they expire, used by every later call.
            // At a threshold provider they are renewed at the home key
            // server alone, with its own login secret (never the password).
            if let (Some(ice), Some(r)) = (media.ice.as_ref(), renewal.as_ref()) {
                let relay = r.relay(keys.pin).at_threshold(keys.params.clone());
                rt.spawn(relay.run(
                    media.relay.clone(),
                    keys.turn.clone(),
                    ice.stun.is_none(),
                    ibephone::agent::relay::log_outcome,
                ));
            }
            if let Some(path) = &keylog {
                eprintln!(
                    "warning: key log on: every call key goes to {} (debugging only)",
                    path.display()
                );
            }
            // A `[pkg]` agent renews its keys while it runs.
            let key_inbox = renewal.map(|renewal| {
                let inbox = ibephone::agent::key_inbox::KeyInbox::new();
                rt.spawn(renewal.run(
                    inbox.clone(),
                    ibephone::agent::renewal::CHECK_EVERY,
                    ibephone::agent::renewal::log_outcome,
                ));
                inbox
            });
            let options = ibephone::agent::headless::StartOptions {
                media,
                keylog,
                key_inbox,
                retained,
                pin_refusals: None,
            };
            rt.block_on(ibephone::agent::headless::run_json_lines_with(
                config, options,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Demo { pcap, hold }) => {
            let ok =
                runtime()?.block_on(cli::demo::run(pcap, std::time::Duration::from_secs(hold)))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Command::Identity { uri, period }) => {
            let period = match period {
                Some(p) => Period::month(&p)?,
                None => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .context("system clock before 1970")?;
                    Period::month_at(now.as_secs())
                }
            };
            println!("{}", Identity::new(Aor::parse(&uri)?, period));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Fingerprint { file }) => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let params = PublicParams::from_json(&json)?;
            println!("{}  {}", params.domain(), params.fingerprint_display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
