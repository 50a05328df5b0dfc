//! The I/O half of the agent's media: binds the RTP ports the core
//! announces ([`UdpPorts`]), runs one [`MediaSession`] per call as the
//! core's [`MediaAction`]s say, opens the audio of each call (WAV files or
//! sound devices, [`AudioIn`]/[`AudioOut`]) and turns the sessions'
//! reports into [`AgentEvent`]s. [`MediaDriver`] wraps the agent core so
//! the SIP driver runs both.

pub use super::gather::turn_server;
use super::gather::{gather, send_before_session, Gathered};
use super::media::{MediaAction, MediaCalls, MediaCounters, MediaPolicy, MediaPorts};
use super::{Agent, AgentCommand, AgentEvent};
use crate::media::audio::{
    AudioError, AudioSink, AudioSource, DiscardSink, SilenceSource, WavSink, WavSource,
};
use crate::media::device;
use crate::media::ice::{IceParams, LocalIce};
use crate::media::relay_stream::RelayStream;
use crate::media::sdp::Codec;
use crate::media::session::{MediaCommand, MediaEvent, MediaRestart, MediaSession, MediaStats};
use crate::media::turn_client::TurnServer;
use crate::media::turn_stream::StreamLink;
use crate::media::voice::{self, VoiceError, VoiceProcessor};
use crate::sip::driver::Core;
use crate::sip::{Dest, Transmit};
use crate::tunnel::keylog::{KeyLogEntry, KeyLogSink};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// Where a call's outgoing audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioIn {
    /// The default sound input, or the one of that name (feature `audio`).
    Device(Option<String>),
    /// A WAV file, played from its start in every call (`--audio-in`).
    Wav(PathBuf),
    /// Silence.
    Silence,
}

/// Where a call's received audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOut {
    /// The default sound output, or the one of that name (feature `audio`).
    Device(Option<String>),
    /// A WAV file (mono, at the codec's rate: 8 kHz for G.711, 48 kHz for
    /// Opus), rewritten by every call (`--audio-out`).
    Wav(PathBuf),
    /// Nowhere.
    Discard,
}

/// The address announced in SDP for a bound RTP address: the bound
/// address itself, or a mapping (a static NAT, a test's relay).
pub type Advertise = Arc<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>;

/// Media choices of one agent beyond its configuration file.
#[derive(Clone)]
pub struct MediaOptions {
    /// Codecs, most preferred first.
    pub codecs: Vec<Codec>,
    /// Audio input.
    pub audio_in: AudioIn,
    /// Audio output.
    pub audio_out: AudioOut,
    /// The address to bind RTP ports on (default: the SIP address's).
    pub rtp_ip: Option<IpAddr>,
    /// What to announce for a bound port (default: itself).
    pub advertise: Option<Advertise>,
    /// ICE (RFC 8445) on every call's socket, `None`: no ICE (the SDP's
    /// address with latching only). The headless agent turns it on from
    /// its configuration's `[media]` section (on by default).
    pub ice: Option<IceOptions>,
    /// Echo cancellation, noise suppression and gain control
    /// ([`crate::media::voice`]) on calls whose input is a sound card
    /// ([`AudioIn::Device`]); never on a WAV or silent input. On by
    /// default; a build without the feature `voice-processing` runs
    /// without it.
    pub voice_processing: bool,
    /// With [`MediaOptions::voice_processing`], run the processor on a WAV
    /// input and output too, exactly as on a sound card (48 kHz, the
    /// output's frames as its echo reference). Off by default; for the
    /// benchmarks that measure the processed path's CPU and latency
    /// without sound devices (`ibephone agent --voice-processing-on-wav`).
    pub voice_processing_on_wav: bool,
    /// The provider's STUN server and relay as fetched and renewed while
    /// the phone runs ([`super::relay`]); read at every call under ICE. Its
    /// relay replaces `ice.turn`; `ice.stun` (configured) wins over its
    /// STUN server.
    pub relay: ProviderRelay,
}

/// The provider's media services of a running phone, shared between the
/// task that fetches and renews them (writer) and the RTP ports (reader,
/// once per call). Credentials past their expiry are not handed out.
#[derive(Clone, Default)]
pub struct ProviderRelay(Arc<Mutex<RelayState>>);

#[derive(Default)]
struct RelayState {
    stun: Option<SocketAddr>,
    turn: Option<(Vec<TurnServer>, std::time::SystemTime)>,
}

impl ProviderRelay {
    /// Sets the provider's STUN server.
    pub fn set_stun(&self, stun: Option<SocketAddr>) {
        if let Ok(mut s) = self.0.lock() {
            s.stun = stun;
        }
    }

    /// Sets the relays (in the order a call tries them, see
    /// [`turn_server`]) and credentials to use from now on, until
    /// `expires_at`.
    pub fn set_turn(&self, servers: Vec<TurnServer>, expires_at: std::time::SystemTime) {
        if let Ok(mut s) = self.0.lock() {
            s.turn = Some((servers, expires_at));
        }
    }

    /// The provider's STUN server, if known.
    pub fn stun(&self) -> Option<SocketAddr> {
        self.0.lock().ok()?.stun
    }

    /// The relays with credentials valid at `now` (empty: none).
    pub fn turn(&self, now: std::time::SystemTime) -> Vec<TurnServer> {
        let Ok(s) = self.0.lock() else {
            return Vec::new();
        };
        s.turn
            .as_ref()
            .filter(|(_, expires)| *expires > now)
            .map(|(t, _)| t.clone())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for ProviderRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (stun, turn) = self.0.lock().map_or((None, None), |s| {
            (
                s.stun,
                s.turn
                    .as_ref()
                    .map(|(t, _)| t.iter().map(|t| t.addr).collect::<Vec<_>>()),
            )
        });
        f.debug_struct("ProviderRelay")
            .field("stun", &stun)
            .field("turn", &turn)
            .finish()
    }
}

/// How the agent runs ICE.
#[derive(Debug, Clone, Default)]
pub struct IceOptions {
    /// The STUN server that tells us our server-reflexive address
    /// (`[media] stun`); none: host candidates only (or the address the
    /// TURN server saw, when there is one).
    pub stun: Option<SocketAddr>,
    /// The provider's TURN relay and credentials for it (from `POST
    /// /v1/turn-credentials`, see [`turn_server`]), once per transport in
    /// the order they are tried; empty: no relayed candidate.
    pub turn: Vec<TurnServer>,
}

impl Default for MediaOptions {
    /// Opus, PCMU, then PCMA; the default sound devices.
    fn default() -> Self {
        MediaOptions {
            codecs: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            audio_in: AudioIn::Device(None),
            audio_out: AudioOut::Device(None),
            rtp_ip: None,
            advertise: None,
            ice: None,
            voice_processing: true,
            voice_processing_on_wav: false,
            relay: ProviderRelay::default(),
        }
    }
}

impl MediaOptions {
    /// The options of `ibephone agent --audio-in F --audio-out F --codecs
    /// opus,pcmu,pcma`: a WAV file replaces each device that is given.
    pub fn from_flags(
        audio_in: Option<PathBuf>,
        audio_out: Option<PathBuf>,
        codecs: &[String],
    ) -> Result<Self, String> {
        let codecs = codecs
            .iter()
            .map(|c| match c.trim().to_ascii_lowercase().as_str() {
                "pcmu" => Ok(Codec::Pcmu),
                "pcma" => Ok(Codec::Pcma),
                "opus" => Ok(Codec::Opus),
                other => Err(format!("unknown codec {other:?} (opus, pcmu, pcma)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if codecs.is_empty() {
            return Err("no codec to offer".into());
        }
        if let Some(p) = &audio_in {
            // Fail at start, not in the first call.
            WavSource::open(p).map_err(|e| e.to_string())?;
        }
        Ok(MediaOptions {
            codecs,
            audio_in: audio_in.map_or(AudioIn::Device(None), AudioIn::Wav),
            audio_out: audio_out.map_or(AudioOut::Device(None), AudioOut::Wav),
            ..MediaOptions::default()
        })
    }
}

impl std::fmt::Debug for MediaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaOptions")
            .field("codecs", &self.codecs)
            .field("audio_in", &self.audio_in)
            .field("audio_out", &self.audio_out)
            .field("rtp_ip", &self.rtp_ip)
            .field("advertise", &self.advertise.is_some())
            .field("ice", &self.ice)
            .field("voice_processing", &self.voice_processing)
            .field("voice_processing_on_wav", &self.voice_processing_on_wav)
            .field("relay", &self.relay)
            .finish()
    }
}

/// A call's bound socket and, under ICE, its gathered candidates (and
/// the connection to the relay, when it is reached over TCP or TLS).
struct BoundPort {
    sock: std::net::UdpSocket,
    ice: Option<LocalIce>,
    relay: Option<(std::net::TcpStream, StreamLink)>,
}

type Bound = Arc<Mutex<HashMap<u64, BoundPort>>>;

/// RTP ports bound on one address; the sockets wait for the driver.
pub struct UdpPorts {
    ip: IpAddr,
    announce: IpAddr,
    /// With a wildcard `ip`: the peer whose route names the address to
    /// announce, looked up again at every allocation (the network may
    /// have changed since the last one).
    route_peer: Option<SocketAddr>,
    /// With an explicit `ip`: the peer whose route gives the address to
    /// bind instead once `ip` is gone from the host (the network changed;
    /// the SIP sockets were rebound there too).
    fallback_peer: Option<SocketAddr>,
    advertise: Option<Advertise>,
    ice: Option<IceOptions>,
    relay: ProviderRelay,
    bound: Bound,
}

impl UdpPorts {
    /// Ports bound on `ip` (port 0: the system picks a free one per call),
    /// named `announce` in SDP (the same address unless `ip` is a
    /// wildcard), then mapped by `advertise` if given.
    pub fn new(ip: IpAddr, announce: IpAddr, advertise: Option<Advertise>) -> Self {
        UdpPorts {
            ip,
            announce,
            route_peer: None,
            fallback_peer: None,
            advertise,
            ice: None,
            relay: ProviderRelay::default(),
            bound: Arc::default(),
        }
    }

    /// Also gathers ICE candidates for every call (see [`IceOptions`]).
    pub fn with_ice(mut self, ice: Option<IceOptions>) -> Self {
        self.ice = ice;
        self
    }

    /// Under ICE, also uses the provider's STUN server and relay as
    /// `relay` holds them when each call starts (see
    /// [`MediaOptions::relay`]).
    pub fn with_relay(mut self, relay: ProviderRelay) -> Self {
        self.relay = relay;
        self
    }
}

impl MediaPorts for UdpPorts {
    fn allocate(&mut self, call: u64) -> Result<SocketAddr, String> {
        if let Some(ip) = self.route_peer.and_then(super::route::route_towards) {
            self.announce = ip;
        }
        let sock = match std::net::UdpSocket::bind(SocketAddr::new(self.ip, 0)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                let moved = self
                    .fallback_peer
                    .and_then(super::route::route_towards)
                    .ok_or_else(|| format!("binding {}: {e}", self.ip))?;
                tracing::info!(old = %self.ip, new = %moved, "RTP address gone: binding the route's");
                self.ip = moved;
                self.announce = moved;
                std::net::UdpSocket::bind(SocketAddr::new(moved, 0))
            }
            r => r,
        }
        .map_err(|e| format!("binding {}: {e}", self.ip))?;
        let port = sock.local_addr().map_err(|e| e.to_string())?.port();
        let mut addr = SocketAddr::new(self.announce, port);
        let mut relay = None;
        let ice = match &self.ice {
            Some(opts) => {
                let mut ice = LocalIce::new(addr).map_err(|e| e.to_string())?;
                // Configured STUN wins; the provider's current relay
                // credentials win over fixed ones.
                let stun = opts.stun.or_else(|| self.relay.stun());
                let mut turn = self.relay.turn(std::time::SystemTime::now());
                if turn.is_empty() {
                    turn = opts.turn.clone();
                }
                let found = if stun.is_some() || !turn.is_empty() {
                    gather(&sock, stun, &turn)
                } else {
                    Gathered::default()
                };
                if let Some(mapped) = found.mapped {
                    ice.add_server_reflexive(mapped)
                        .map_err(|e| e.to_string())?;
                }
                if let Some(turn) = found.turn {
                    match ice.add_relayed(turn) {
                        Ok(()) => relay = found.relay,
                        Err(e) => tracing::warn!(error = %e, "relayed candidate not usable"),
                    }
                }
                addr = ice.default_addr();
                Some(ice)
            }
            None => None,
        };
        self.bound
            .lock()
            .map_err(|_| "port table poisoned".to_string())?
            .insert(call, BoundPort { sock, ice, relay });
        Ok(self.advertise.as_ref().map_or(addr, |f| f(addr)))
    }

    fn ice(&self, call: u64) -> Option<IceParams> {
        let bound = self.bound.lock().ok()?;
        bound.get(&call)?.ice.as_ref().map(LocalIce::params)
    }

    fn release(&mut self, call: u64) {
        let port = self.bound.lock().ok().and_then(|mut b| b.remove(&call));
        // A call that never started: its relay allocation is given back.
        if let Some(BoundPort {
            sock,
            ice: Some(mut ice),
            mut relay,
        }) = port
        {
            send_before_session(&sock, &mut relay, ice.close_relay(Instant::now()));
        }
    }
}

/// The agent core plus the media sessions of its calls: a [`Core`] the
/// SIP driver runs. Media events go straight to the event channel.
pub struct MediaDriver {
    agent: Agent,
    bound: Bound,
    sessions: HashMap<u64, MediaSession>,
    options: MediaOptions,
    events: mpsc::Sender<AgentEvent>,
    /// Events of the driver itself, reported after the core's.
    pending: VecDeque<AgentEvent>,
    /// Where the SRTP keys of each call go, when `--keylog` is on.
    key_log: Option<Box<dyn KeyLogSink>>,
}

/// The RTP ports of an agent whose SIP socket is bound to `sip` and whose
/// proxy is `proxy`. RTP binds where SIP does (or on `options.rtp_ip`);
/// when that is a wildcard, the SDP names the address of the interface
/// that routes towards the proxy (`super::route`): never 0.0.0.0, and
/// 127.0.0.1 only when the proxy is on loopback (or nothing routes).
pub fn ports_for(sip: SocketAddr, proxy: SocketAddr, options: &MediaOptions) -> UdpPorts {
    let ip = options.rtp_ip.unwrap_or(sip.ip());
    let announce = if ip.is_unspecified() {
        super::route::route_towards(proxy).unwrap_or(match ip {
            IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        })
    } else {
        ip
    };
    let mut ports = UdpPorts::new(ip, announce, options.advertise.clone())
        .with_ice(options.ice.clone())
        .with_relay(options.relay.clone());
    if ip.is_unspecified() {
        ports.route_peer = Some(proxy);
    } else {
        ports.fallback_peer = Some(proxy);
    }
    ports
}

fn counters(s: &MediaStats) -> MediaCounters {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    MediaCounters {
        sent: s.sent,
        received: s.drops.accepted,
        bad_auth: s.drops.bad_auth,
        bad_source: s.drops.bad_source,
        replayed: s.drops.replayed,
        latched: s.drops.latched,
        concealed: s.jitter.concealed,
        jitter_mean_ms: ms(s.jitter.mean_delay()),
        jitter_p99_ms: ms(s.jitter.p99_delay()),
        local_candidate: s.path.map(|p| p.local.to_string()),
        remote_candidate: s.path.map(|p| p.remote.to_string()),
        loss_permille: permille(s.rtcp.fraction_lost),
        lost: s.rtcp.cumulative_lost,
        jitter_ms: whole_ms(s.rtcp.jitter_ms),
        peer_loss_permille: s.rtcp.remote_fraction_lost.map(permille),
        peer_lost: s.rtcp.remote_cumulative_lost,
        peer_jitter_ms: s.rtcp.remote_jitter_ms.map(whole_ms),
        rtt_ms: s.rtcp.rtt_ms.map(whole_ms),
        rtcp_sent: s.rtcp_sent,
        rtcp_received: s.rtcp.reports_received,
        rtcp_dropped: s.rtcp_dropped,
        first_audio_ms: s.first_audio.map(ms),
    }
}

/// A share (0..1) in per mille, rounded.
fn permille(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * 1000.0).round() as u32
}

/// Milliseconds rounded to a whole number (negative or not a number: 0).
fn whole_ms(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ms.round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Opens the audio input at `rate` Hz (the codec's audio rate).
fn open_in(a: &AudioIn, rate: u32) -> Result<Box<dyn AudioSource>, AudioError> {
    match a {
        AudioIn::Device(name) => device::open_input(name.as_deref(), rate),
        AudioIn::Wav(p) => Ok(Box::new(WavSource::open_at(p, rate)?)),
        AudioIn::Silence => Ok(Box::new(SilenceSource)),
    }
}

/// Opens the audio output at `rate` Hz (the codec's audio rate).
fn open_out(a: &AudioOut, rate: u32) -> Result<Box<dyn AudioSink>, AudioError> {
    match a {
        AudioOut::Device(name) => device::open_output(name.as_deref(), rate),
        AudioOut::Wav(p) => Ok(Box::new(WavSink::create_at(p, rate)?)),
        AudioOut::Discard => Ok(Box::new(DiscardSink)),
    }
}

impl MediaDriver {
    /// Enables media under `policy` on `agent`, with RTP on `ports` (see
    /// [`ports_for`]); the sessions report to `events`, the channel the
    /// SIP driver sends the core's events to.
    pub fn new(
        mut agent: Agent,
        ports: UdpPorts,
        policy: MediaPolicy,
        options: MediaOptions,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        let bound = ports.bound.clone();
        agent.enable_media(MediaCalls::new(policy, Box::new(ports)));
        MediaDriver {
            agent,
            bound,
            sessions: HashMap::new(),
            options,
            events,
            pending: VecDeque::new(),
            key_log: None,
        }
    }

    /// Also writes every call's SRTP master keys (both directions, on
    /// every start and re-key) to `sink` as `IBESIP_SRTP` lines
    /// ([`crate::tunnel::keylog`]); debugging only.
    pub fn with_key_log(mut self, sink: Box<dyn KeyLogSink>) -> Self {
        self.key_log = Some(sink);
        self
    }

    /// Keeps the retained secrets of key continuity in `store` (sealed
    /// at rest, see [`super::retained`]).
    pub fn with_retained(mut self, store: Box<dyn super::media::RetainedStore>) -> Self {
        self.agent.set_retained_store(store);
        self
    }

    fn log_keys(&mut self, call: u64, negotiated: &crate::media::sdp::Negotiated) {
        let (Some(sink), Some(keys)) = (self.key_log.as_mut(), negotiated.keys.as_ref()) else {
            return;
        };
        for (sending, key) in [(true, &keys.send), (false, &keys.recv)] {
            sink.record(&KeyLogEntry::Srtp {
                call,
                sending,
                suite: key.suite().sdp_name(),
                key: zeroize::Zeroizing::new(key.as_bytes().to_vec()),
            });
        }
    }

    fn emit(&mut self, e: AgentEvent) {
        self.pending.push_back(e);
    }

    fn run_actions(&mut self) {
        while let Some(a) = self.agent.poll_media() {
            match a {
                MediaAction::Start { call, negotiated } => {
                    self.log_keys(call, &negotiated);
                    if let Err(message) = self.start(call, negotiated) {
                        self.emit(AgentEvent::Error {
                            message: format!("call {call}: media did not start: {message}"),
                        });
                    }
                }
                MediaAction::Update { call, negotiated } => {
                    self.log_keys(call, &negotiated);
                    self.command(call, MediaCommand::Update(Box::new(negotiated)))
                }
                MediaAction::Restart { call, negotiated } => {
                    self.log_keys(call, &negotiated);
                    if let Err(message) = self.restart(call, negotiated) {
                        self.emit(AgentEvent::Error {
                            message: format!("call {call}: media did not move: {message}"),
                        });
                    }
                }
                MediaAction::Mute { call, on } => self.command(call, MediaCommand::Mute(on)),
                MediaAction::Dtmf { call, digit } => {
                    self.command(call, MediaCommand::SendDtmf(digit))
                }
                MediaAction::Stop { call } => {
                    if let Some(s) = self.sessions.remove(&call) {
                        let events = self.events.clone();
                        tokio::spawn(async move {
                            let ev = match s.stop().await {
                                Ok(stats) => AgentEvent::MediaStopped {
                                    call,
                                    stats: counters(&stats),
                                },
                                Err(e) => AgentEvent::AudioFailed {
                                    call,
                                    message: e.to_string(),
                                },
                            };
                            let _ = events.send(ev).await;
                        });
                    }
                }
            }
        }
    }

    fn command(&self, call: u64, cmd: MediaCommand) {
        if let Some(s) = self.sessions.get(&call) {
            s.command(cmd);
        }
    }

    /// The port bound for `call` (and its ICE state), taken out of the
    /// table to run a session on.
    fn take_bound(&self, call: u64) -> Result<BoundPort, String> {
        self.bound
            .lock()
            .map_err(|_| "port table poisoned".to_string())?
            .remove(&call)
            .ok_or_else(|| "no bound RTP port".to_string())
    }

    /// Moves a running session to the port allocated anew for `call`
    /// (a restart after a network change), ICE restarted on it.
    fn restart(
        &mut self,
        call: u64,
        negotiated: crate::media::sdp::Negotiated,
    ) -> Result<(), String> {
        let BoundPort { sock, ice, relay } = self.take_bound(call)?;
        let session = self.sessions.get(&call).ok_or("no media session")?;
        let ice = ice
            .zip(negotiated.remote_ice.as_ref())
            .map(|(local, remote)| local.start(remote, negotiated.ice_controlling));
        sock.set_read_timeout(None).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let socket = tokio::net::UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
        let relay = match (&ice, relay) {
            (Some(_), Some((tcp, link))) => {
                Some(RelayStream::new(tcp, link).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let moved = MediaRestart {
            socket,
            ice,
            relay,
            negotiated,
        };
        if !session.command(MediaCommand::Restart(Box::new(moved))) {
            return Err("the media session has ended".into());
        }
        Ok(())
    }

    /// Opens the call's audio at `rate` Hz (the codec's), or at the voice
    /// processor's 48 kHz with the processor between source and sink when
    /// [`MediaOptions::voice_processing`] applies (the session converts to
    /// the codec's rate). A device that fails to open is replaced by
    /// silence or nothing, and said in an event.
    fn open_audio(&mut self, call: u64, rate: u32) -> (Box<dyn AudioSource>, Box<dyn AudioSink>) {
        let processor = if self.options.voice_processing
            && (matches!(self.options.audio_in, AudioIn::Device(_))
                || self.options.voice_processing_on_wav)
        {
            match VoiceProcessor::new() {
                Ok(p) => Some(p),
                Err(VoiceError::NotBuilt) => None,
                Err(e) => {
                    self.emit(AgentEvent::AudioFailed {
                        call,
                        message: format!("{e}; the call goes on without echo cancellation"),
                    });
                    None
                }
            }
        } else {
            None
        };
        let rate = if processor.is_some() {
            voice::RATE
        } else {
            rate
        };
        let source = open_in(&self.options.audio_in, rate).unwrap_or_else(|e| {
            self.emit(AgentEvent::AudioFailed {
                call,
                message: format!("audio input: {e}; sending silence"),
            });
            Box::new(SilenceSource)
        });
        let sink = open_out(&self.options.audio_out, rate).unwrap_or_else(|e| {
            self.emit(AgentEvent::AudioFailed {
                call,
                message: format!("audio output: {e}; received audio is not played"),
            });
            Box::new(DiscardSink)
        });
        match processor {
            Some(p) => p.wrap(source, sink),
            None => (source, sink),
        }
    }

    fn start(
        &mut self,
        call: u64,
        negotiated: crate::media::sdp::Negotiated,
    ) -> Result<(), String> {
        let BoundPort {
            sock,
            ice,
            mut relay,
        } = self.take_bound(call)?;
        // ICE runs when both sides offered it; else the SDP address, latched
        // (and a relay allocated for nothing is given back at once).
        let ice = match (ice, negotiated.remote_ice.as_ref()) {
            (Some(local), Some(remote)) => Some(local.start(remote, negotiated.ice_controlling)),
            (Some(mut local), None) => {
                send_before_session(&sock, &mut relay, local.close_relay(Instant::now()));
                relay = None;
                None
            }
            (None, _) => None,
        };
        let relay = match (&ice, relay) {
            (Some(_), Some((tcp, link))) => {
                Some(RelayStream::new(tcp, link).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        sock.set_read_timeout(None).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let sock = tokio::net::UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
        let (source, sink) = self.open_audio(call, negotiated.codec.audio_rate());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = MediaSession::start_with_ice(sock, negotiated, source, sink, tx, ice, relay)
            .map_err(|e| e.to_string())?;
        self.sessions.insert(call, session);
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let ev = match e {
                    MediaEvent::Dtmf(digit) => AgentEvent::Dtmf { call, digit },
                    MediaEvent::SourceEnded => AgentEvent::AudioSourceEnded { call },
                    MediaEvent::Stats(s) => AgentEvent::MediaStats {
                        call,
                        stats: counters(&s),
                    },
                    MediaEvent::AudioFailed(message) => AgentEvent::AudioFailed { call, message },
                    MediaEvent::Path(p) => AgentEvent::MediaPath {
                        call,
                        local: p.local.to_string(),
                        remote: p.remote.to_string(),
                    },
                    MediaEvent::Consent(false) => AgentEvent::MediaNotice {
                        call,
                        message:
                            "media paused: the peer stopped answering ICE consent checks (RFC 7675)"
                                .into(),
                    },
                    MediaEvent::Consent(true) => AgentEvent::MediaNotice {
                        call,
                        message: "media flows: ICE consent to send".into(),
                    },
                    // Security and SAS were reported by the core with the answer.
                    _ => continue,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

impl Core for MediaDriver {
    type Command = AgentCommand;
    type Event = AgentEvent;

    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        self.agent.handle_datagram(now, from, bytes);
        self.run_actions();
    }

    fn handle_command(&mut self, now: Instant, cmd: AgentCommand) {
        self.agent.handle_command(now, cmd);
        self.run_actions();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
        self.run_actions();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.agent.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<AgentEvent> {
        self.agent.poll_event().or_else(|| self.pending.pop_front())
    }

    fn handle_pong(&mut self, now: Instant, from: Dest) {
        self.agent.handle_pong(now, from);
    }

    fn handle_flow_closed(&mut self, now: Instant, peer: Dest) {
        self.agent.handle_flow_closed(now, peer);
        self.run_actions();
    }

    fn handle_connect_failed(&mut self, now: Instant, peer: Dest, reason: &str) {
        self.agent.handle_connect_failed(now, peer, reason);
        self.run_actions();
    }

    fn route_check(&self, now: Instant) -> Option<crate::sip::ua::RouteCheck> {
        self.agent.route_check(now)
    }

    fn handle_route(
        &mut self,
        now: Instant,
        probe: crate::sip::ua::RouteProbe,
    ) -> Option<crate::sip::ua::RouteChange> {
        let change = self.agent.handle_route(now, probe);
        self.run_actions();
        change
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::ice::is_stun;

    const PROXY: &str = "127.0.0.1:5060";

    /// A STUN server on loopback that answers every binding request with
    /// `mapped` (what a NAT would show), `answers` times.
    fn stun_server(mapped: SocketAddr, answers: usize) -> SocketAddr {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..answers {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert!(is_stun(&buf[..n]));
                let reply = crate::media::ice::stun_reply_for_tests(&buf[..n], mapped);
                sock.send_to(&reply, from).unwrap();
            }
        });
        addr
    }

    /// Listening on a wildcard, the RTP socket binds the wildcard too, and
    /// the SDP names the interface towards the proxy: never 0.0.0.0.
    #[test]
    fn a_wildcard_binds_rtp_on_the_wildcard_and_names_the_route() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut ports = ports_for(any, PROXY.parse().unwrap(), &MediaOptions::default());
        let named = ports.allocate(1).unwrap();
        assert_eq!(
            named.ip(),
            IpAddr::from([127, 0, 0, 1]),
            "the route to the proxy"
        );
        let bound = ports.bound.lock().unwrap();
        let sock = &bound.get(&1).unwrap().sock;
        assert!(sock.local_addr().unwrap().ip().is_unspecified());
        assert_eq!(sock.local_addr().unwrap().port(), named.port());
        assert!(bound.get(&1).unwrap().ice.is_none(), "no ICE unless asked");
    }

    /// An explicit RTP address is bound and named as it is.
    #[test]
    fn an_explicit_address_is_named_as_it_is() {
        let sip: SocketAddr = "127.0.0.2:5062".parse().unwrap();
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &MediaOptions::default());
        assert_eq!(ports.allocate(1).unwrap().ip(), sip.ip());
    }

    /// An explicit RTP address that is gone from the host (the network
    /// changed) gives way to the address that routes towards the proxy.
    #[test]
    fn a_gone_explicit_address_falls_back_to_the_route() {
        // TEST-NET-1: on no interface of this host.
        let sip: SocketAddr = "192.0.2.1:5062".parse().unwrap();
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &MediaOptions::default());
        let named = ports.allocate(1).unwrap();
        assert_eq!(named.ip(), IpAddr::from([127, 0, 0, 1]));
        let bound = ports.bound.lock().unwrap();
        assert_eq!(
            bound.get(&1).unwrap().sock.local_addr().unwrap().ip(),
            named.ip()
        );
    }

    /// Under ICE with a STUN server the SDP's address is the
    /// server-reflexive one and both candidates are offered.
    #[test]
    fn ice_gathers_host_and_server_reflexive_candidates() {
        let mapped: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let stun = stun_server(mapped, 1);
        let options = MediaOptions {
            ice: Some(IceOptions {
                stun: Some(stun),
                turn: Vec::new(),
            }),
            ..MediaOptions::default()
        };
        let sip: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &options);
        assert_eq!(ports.allocate(7).unwrap(), mapped);
        let ice = ports.ice(7).unwrap();
        assert_eq!(ice.candidates.len(), 2, "{ice:?}");
        assert!(ice.candidates[0].contains("typ host"));
        assert!(ice.candidates[1].contains("203.0.113.7 40000 typ srflx"));
        assert!(ports.ice(8).is_none(), "no such call");
    }

    /// Without a configured STUN server the provider's (as the relay task
    /// found it) is asked; a configured one wins over it.
    #[test]
    fn the_providers_stun_server_serves_unless_one_is_configured() {
        let provider_view: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let relay = ProviderRelay::default();
        relay.set_stun(Some(stun_server(provider_view, 1)));
        let options = MediaOptions {
            ice: Some(IceOptions::default()),
            relay: relay.clone(),
            ..MediaOptions::default()
        };
        let sip: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &options);
        assert_eq!(ports.allocate(1).unwrap(), provider_view);
        let configured_view: SocketAddr = "203.0.113.8:40000".parse().unwrap();
        let options = MediaOptions {
            ice: Some(IceOptions {
                stun: Some(stun_server(configured_view, 1)),
                turn: Vec::new(),
            }),
            relay,
            ..MediaOptions::default()
        };
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &options);
        assert_eq!(ports.allocate(2).unwrap(), configured_view);
    }

    /// Relay credentials are handed out until they expire, and the newest
    /// ones replace the older.
    #[test]
    fn the_provider_relay_hands_out_only_live_credentials() {
        let relay = ProviderRelay::default();
        let now = std::time::SystemTime::now();
        assert!(relay.turn(now).is_empty());
        let server = |user: &str| {
            TurnServer::new("127.0.0.1:3478".parse().unwrap(), user.into(), "pw".into())
        };
        let hour = std::time::Duration::from_secs(3600);
        relay.set_turn(vec![server("1:alice")], now + hour);
        assert_eq!(relay.turn(now)[0].username, "1:alice");
        assert!(relay.turn(now + hour).is_empty(), "expired");
        relay.set_turn(vec![server("2:alice")], now + 2 * hour);
        assert_eq!(relay.turn(now + hour)[0].username, "2:alice");
        assert!(!format!("{relay:?}").contains("pw"));
    }

    /// A silent STUN server costs a bounded wait, then host candidates only.
    #[test]
    fn a_silent_stun_server_leaves_host_candidates() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let options = MediaOptions {
            ice: Some(IceOptions {
                stun: Some(silent.local_addr().unwrap()),
                turn: Vec::new(),
            }),
            ..MediaOptions::default()
        };
        let sip: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let mut ports = ports_for(sip, PROXY.parse().unwrap(), &options);
        let named = ports.allocate(1).unwrap();
        assert_eq!(named.ip(), sip.ip());
        assert_eq!(ports.ice(1).unwrap().candidates.len(), 1);
        let mut buf = [0u8; 1500];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert!(is_stun(&buf[..n]), "a binding request was sent");
    }
}
