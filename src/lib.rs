//! ibephone: a softphone whose SIP signaling travels inside CMS
//! AuthEnvelopedData bodies keyed by identity-based encryption over
//! BLS12-381 (wire contract: `shared/spec/ibe-sip-tunnel.md`).
//!
//! Layers, lowest first; a layer never imports a higher one:
//! - [`ibe`]: pairing-based cryptography (sections 1-4 of the spec).
//! - [`sip`]: sans-I/O SIP stack, registrar/proxy core, tokio driver.
//! - [`tunnel`]: the CMS tunnel of section 5 (sans-I/O).
//! - [`media`]: SRTP key agreement and SAS (section 6).
//! - [`pkg_client`]: the PKG protocol client, its API types and key store.
//! - [`agent`]: SIP core + tunnel + keys behind one command/event stream.
//! - [`pcap`]: the Wireshark proof, judging captures against the spec.
//! - `ui` (feature `gui`): the desktop softphone on top of the agent.
//!
//! The map of the layers, the data path and the invariants is
//! `ARCHITECTURE.md` at the repository root.
//!
//! # Sealing and opening a message
//!
//! Two users of one provider; the provider's master secret is a fixed test
//! value here (a real PKG draws it at random and only hands out extracted
//! keys). Time is an argument: the tunnel never reads the clock.
//!
//! ```
//! use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
//! use ibephone::tunnel::{OpenError, PeerIdentity, Tunnel, TunnelConfig};
//! use std::time::{Duration, UNIX_EPOCH};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let msk = MasterSecret::from_bytes(&[7; 32])?;
//! let params = PublicParams::new("example.invalid", msk.p_pub(), "https://127.0.0.1:8443")?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800); // 2026-11-22T12:00Z
//! let period = Period::month("2026-11")?;
//!
//! // Each party trusts the provider's parameters and holds its own keys.
//! let party = |aor: &Aor| -> Result<Tunnel, Box<dyn std::error::Error>> {
//!     let mut tunnel = Tunnel::new(aor.clone(), TunnelConfig::default());
//!     tunnel.add_params(params.clone());
//!     tunnel.add_keys(&extract(&msk, &Identity::new(aor.clone(), period.clone())))?;
//!     Ok(tunnel)
//! };
//! let alice_aor = Aor::parse("sip:alice@example.invalid")?;
//! let mut alice = party(&alice_aor)?;
//! let mut bob = party(&Aor::parse("sip:bob@example.invalid")?)?;
//!
//! let invite = b"INVITE sip:bob@example.invalid SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n\
//!     Max-Forwards: 70\r\n\
//!     To: Bob <sip:bob@example.invalid>\r\n\
//!     From: Alice <sip:alice@example.invalid>;tag=1928301774\r\n\
//!     Call-ID: a84b4c76e66710Qm9v7wXyzA\r\n\
//!     CSeq: 314159 INVITE\r\n\
//!     Contact: <sip:alice@127.0.0.1:5070>\r\n\
//!     Subject: lunch?\r\n\
//!     Content-Length: 0\r\n\r\n";
//!
//! // Alice seals: the outer message carries a CMS body, not the inner headers.
//! let outer = alice.seal(now, invite)?;
//! assert!(!outer.windows(6).any(|w| w == b"lunch?"));
//!
//! // Bob opens: the inner message byte for byte, and who signed it.
//! let opened = bob.open(now, &outer)?;
//! assert_eq!(opened.inner, invite.to_vec());
//! assert_eq!(opened.peer, PeerIdentity::Verified(Identity::new(alice_aor, period)));
//!
//! // A changed byte of the body is refused with a typed error.
//! let mut forged = outer.clone();
//! let last = forged.len() - 1;
//! forged[last] ^= 1;
//! let refused: OpenError = match bob.open(now, &forged) {
//!     Ok(_) => return Err("a forged message was accepted".into()),
//!     Err(e) => e,
//! };
//! println!("refused: {refused}");
//! # Ok(())
//! # }
//! ```
//!
//! # Building an agent
//!
//! An [`agent::Agent`] is the SIP user agent with the tunnel as its message
//! filter; it is sans-I/O too (`now` in, [`sip::Transmit`]s and
//! [`agent::AgentEvent`]s out). `agent::headless` wraps it in sockets and a
//! clock; here the example drives it by hand.
//!
//! ```
//! use ibephone::agent::filter::{SecurityLog, SecurityPolicy, TunnelFilter};
//! use ibephone::agent::{Agent, AgentCommand, AgentEvent};
//! use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
//! use ibephone::sip::digest::Password;
//! use ibephone::sip::driver::Core;
//! use ibephone::sip::timers::Timers;
//! use ibephone::sip::ua::{HeaderPolicy, UaConfig, UserAgent};
//! use ibephone::sip::Transport;
//! use ibephone::tunnel::{Tunnel, TunnelConfig};
//! use std::sync::{Arc, Mutex};
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let msk = MasterSecret::from_bytes(&[7; 32])?;
//! let params = PublicParams::new("example.invalid", msk.p_pub(), "https://127.0.0.1:8443")?;
//! let aor = Aor::parse("sip:alice@example.invalid")?;
//! let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
//!
//! let mut tunnel = Tunnel::new(aor.clone(), TunnelConfig::default());
//! tunnel.add_params(params);
//! tunnel.add_keys(&extract(&msk, &Identity::new(aor.clone(), Period::month_at(unix))))?;
//!
//! let log = Arc::new(Mutex::new(SecurityLog::default()));
//! let policy = SecurityPolicy::Require;
//! let filter = TunnelFilter::new(tunnel, policy, log.clone());
//! let ua = UserAgent::new(
//!     UaConfig {
//!         user: aor.user().to_string(),
//!         domain: aor.host().to_string(),
//!         password: Password::new("account password"),
//!         proxy: "127.0.0.1:5060".parse()?,
//!         local: "127.0.0.1:5070".into(),
//!         transport: Transport::Udp,
//!         expires: 600,
//!         // The tunnel writes the anonymous outer From; the inner one is true.
//!         headers: HeaderPolicy { anonymous_from: false, ..HeaderPolicy::default() },
//!         timers: Timers::default(),
//!         max_transactions: 64,
//!     },
//!     Box::new(filter),
//! );
//! let mut agent = Agent::new(ua, log, aor.host()).with_policy(policy);
//!
//! agent.handle_command(Instant::now(), AgentCommand::Call { to: "bob".into() });
//! let invite = agent.poll_transmit().ok_or("no INVITE sent")?;
//! let wire = String::from_utf8_lossy(&invite.bytes);
//! assert!(wire.starts_with("INVITE sip:bob@example.invalid SIP/2.0\r\n"));
//! assert!(wire.contains("application/pkcs7-mime"), "the INVITE leaves tunneled");
//! assert!(matches!(
//!     agent.poll_event(),
//!     Some(AgentEvent::Calling { call: 1, tunneled: true, .. })
//! ));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "agent")]
pub mod agent;
pub mod ibe;
#[cfg(feature = "media")]
pub mod media;
#[cfg(feature = "pcap")]
pub mod pcap;
#[cfg(feature = "pkg-client")]
pub mod pkg_client;
pub mod sip;
pub mod tunnel;
#[cfg(feature = "gui")]
pub mod ui;
