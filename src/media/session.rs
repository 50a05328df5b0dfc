//! The media session of one call: a thin tokio driver around the sans-I/O
//! parts (SRTP channel, jitter buffer, codecs, RFC 4733). Every 20 ms it
//! sends one frame from the [`AudioSource`] as SRTP and plays one frame
//! from the jitter buffer to the [`AudioSink`]; it reports through
//! [`MediaEvent`]s and obeys [`MediaCommand`]s.
//!
//! The audio runs at the codec's rate (8 kHz for G.711, 48 kHz for Opus):
//! the driver opens the source and sink at that rate. A source or sink at
//! another rate (a re-INVITE that changed the codec) is bridged frame by
//! frame with [`convert_frame`]. RTP timestamps and telephone-event
//! durations count in the codec's clock (48 kHz for Opus, RFC 7587 4.1).
//!
//! RTCP (when the offer/answer agreed on rtcp-mux, see
//! `super::rtcp_link`): compound reports leave as SRTCP on the path the
//! RTP takes (the socket's peer, ICE's nominated pair, the TURN channel),
//! at the instants `RtcpLink::poll_timeout` names; datagrams on the
//! socket that [`is_rtcp`] recognises go to `RtcpLink::handle_datagram`,
//! all others to SRTP. The driver reads the clock through tokio
//! (`tokio::time::Instant`), the same clock as its timers.

use super::audio::{convert_frame, AudioError, AudioSink, AudioSource};
use super::codec::{frame_samples, CodecError, Decoder, Encoder};
use super::dtmf::{DtmfReceiver, DtmfSender};
use super::ice::{IceEvent, IceInput, IcePath, IceSession, Outbound};
use super::jitter::{JitterBuffer, JitterStats, Playout, FRAME};
use super::keys::Sas;
use super::relay_stream::RelayStream;
use super::rtcp::{is_rtcp, RtcpStats};
use super::rtcp_link::RtcpLink;
use super::sdp::{Codec, MediaSecurity, Negotiated};
use super::srtp::{DropCounters, SrtpChannel, SrtpError};
use rtp::header::Header;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// What the media layer tells the UI.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// The security of the media (at start and after every re-key). The UI
    /// must say so when it is not `EscrowResistant`.
    Security(MediaSecurity),
    /// The short authentication string to compare aloud.
    SasAvailable(Sas),
    /// A DTMF digit from the peer.
    Dtmf(char),
    /// The audio source has ended (a WAV file played out).
    SourceEnded,
    /// Counters, once a second (boxed: the largest event by far).
    Stats(Box<MediaStats>),
    /// An audio device or file failed; media goes on without it.
    AudioFailed(String),
    /// ICE nominated the candidate pair media flows on.
    Path(IcePath),
    /// Consent to send (RFC 7675) was lost (`false`: media paused) or
    /// regained.
    Consent(bool),
}

/// Commands from the call (the SIP agent or the UI).
#[derive(Debug)]
#[non_exhaustive]
pub enum MediaCommand {
    /// Send silence instead of the microphone.
    Mute(bool),
    /// Send one DTMF digit (RFC 4733).
    SendDtmf(char),
    /// A new offer/answer (re-INVITE: hold, resume): new keys, direction,
    /// codec or peer address (boxed: it is by far the largest command).
    Update(Box<Negotiated>),
    /// The stream moves to another socket (and ICE session) with the
    /// negotiation of the re-INVITE that moved it: after a network change,
    /// an ICE restart. The audio, codec state and counters go on.
    Restart(Box<MediaRestart>),
}

/// Where a restarted stream runs now (see [`MediaCommand::Restart`]).
#[derive(Debug)]
pub struct MediaRestart {
    /// The new socket, bound to the address the new SDP announced.
    pub socket: UdpSocket,
    /// ICE on it, when both sides run ICE (restarted: new credentials).
    pub ice: Option<IceSession>,
    /// The connection to the TURN server of the new ICE session's relayed
    /// candidate, when that relay is reached over TCP or TLS.
    pub relay: Option<RelayStream>,
    /// The new negotiation: keys, peer address, direction, codec.
    pub negotiated: Negotiated,
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// RTP packets sent.
    pub sent: u64,
    /// Packets received and dropped, by reason.
    pub drops: DropCounters,
    /// Jitter buffer statistics.
    pub jitter: JitterStats,
    /// The candidate pair ICE nominated, if any.
    pub path: Option<IcePath>,
    /// RTCP figures: loss and jitter of the peer's stream as we measure
    /// them, loss and jitter of ours as the peer reports them, the round
    /// trip (all zero or absent without rtcp-mux).
    pub rtcp: RtcpStats,
    /// RTCP compound reports sent.
    pub rtcp_sent: u64,
    /// RTCP datagrams dropped (failed SRTCP, malformed, or without
    /// rtcp-mux).
    pub rtcp_dropped: u64,
    /// Time from the session's start (the call's 200 OK) to the first
    /// frame played from a received packet: the first audio heard,
    /// jitter-buffer delay included. `None` until then.
    pub first_audio: Option<Duration>,
}

/// Why a session could not start or ended badly.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Keys could not be installed.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
    /// The socket failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The audio source or sink failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The codec could not be set up.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The driver task ended abnormally.
    #[error("media task failed: {0}")]
    Task(String),
}

/// A running media session.
#[derive(Debug)]
pub struct MediaSession {
    commands: mpsc::UnboundedSender<MediaCommand>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<MediaStats, MediaError>>,
}

impl MediaSession {
    /// Starts sending and receiving on `socket` (bound to the address our
    /// SDP announced) for the negotiated stream. Events go to `events`.
    pub fn start(
        socket: UdpSocket,
        negotiated: Negotiated,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        Self::start_with_ice(socket, negotiated, source, sink, events, None, None)
    }

    /// [`MediaSession::start`] with ICE on the socket: media is sent only
    /// on the pair ICE nominated, while its consent holds (before a
    /// nomination, the callee's on a pair its own check found valid, see
    /// [`IceSession::path`]); STUN and SRTP
    /// share the socket. `relay` is the connection to the TURN server of
    /// ICE's relayed candidate when it is reached over TCP or TLS: what
    /// ICE routes to [`Outbound::RelayStream`] goes there.
    pub fn start_with_ice(
        socket: UdpSocket,
        negotiated: Negotiated,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        events: mpsc::UnboundedSender<MediaEvent>,
        ice: Option<IceSession>,
        relay: Option<RelayStream>,
    ) -> Result<Self, MediaError> {
        let mut channel = SrtpChannel::new(&negotiated)?;
        channel.set_latching(ice.is_none());
        let codec = CodecState::new(negotiated.codec)?;
        let mut jitter = JitterBuffer::new(FRAME, Duration::from_millis(200));
        jitter.set_clock_rate(negotiated.codec.clock_rate());
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let mut ids = [0u8; 30];
        getrandom::fill(&mut ids).map_err(|e| MediaError::Task(e.to_string()))?;
        let dtmf_tx = DtmfSender::for_clock_rate(negotiated.codec.clock_rate());
        let ssrc = u32::from_be_bytes([ids[0], ids[1], ids[2], ids[3]]);
        // RFC 7022: a random CNAME per call, nothing that names the user.
        let cname: String = ids[14..30].iter().map(|b| format!("{b:02x}")).collect();
        let rtcp = RtcpLink::new(
            ssrc,
            &cname,
            negotiated.codec.clock_rate(),
            negotiated.rtcp_mux,
            now(),
            u32::from_be_bytes([ids[10], ids[11], ids[12], ids[13]]),
        );
        let driver = Driver {
            socket,
            channel,
            negotiated,
            source,
            sink,
            events,
            jitter,
            codec,
            dtmf_tx,
            dtmf_rx: DtmfReceiver::default(),
            muted: false,
            source_ended: false,
            audio_failed: false,
            ssrc,
            seq: u16::from_be_bytes([ids[4], ids[5]]),
            timestamp: u32::from_be_bytes([ids[6], ids[7], ids[8], ids[9]]),
            dtmf_timestamp: 0,
            peer_ssrc: None,
            sent: 0,
            ice,
            relay,
            rtcp,
            started: now(),
            first_audio: None,
        };
        let task = tokio::spawn(driver.run(cmd_rx, stop_rx));
        Ok(MediaSession {
            commands,
            stop: Some(stop),
            task,
        })
    }

    /// Sends a command; false if the session has ended.
    pub fn command(&self, cmd: MediaCommand) -> bool {
        self.commands.send(cmd).is_ok()
    }

    /// Stops the session, closes the sink and returns the final counters.
    pub async fn stop(mut self) -> Result<MediaStats, MediaError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| MediaError::Task(e.to_string()))?
    }
}

struct Driver {
    socket: UdpSocket,
    channel: SrtpChannel,
    negotiated: Negotiated,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    events: mpsc::UnboundedSender<MediaEvent>,
    jitter: JitterBuffer,
    codec: CodecState,
    dtmf_tx: DtmfSender,
    dtmf_rx: DtmfReceiver,
    muted: bool,
    source_ended: bool,
    audio_failed: bool,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    dtmf_timestamp: u32,
    peer_ssrc: Option<u32>,
    sent: u64,
    ice: Option<IceSession>,
    relay: Option<RelayStream>,
    rtcp: RtcpLink,
    /// When the session started, for [`MediaStats::first_audio`].
    started: Instant,
    first_audio: Option<Duration>,
}

/// Waits on the relay's connection, or forever without one.
async fn relay_ready(
    relay: &mut Option<RelayStream>,
) -> Result<(), super::turn_stream::StreamError> {
    match relay {
        Some(r) => r.ready().await,
        None => std::future::pending().await,
    }
}

/// The driver's clock: tokio's, so that a paused test clock drives it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A random word for RTCP's intervals (a failing source gives the middle
/// of the range: the interval is then the nominal one).
fn random_word() -> u32 {
    let mut w = [0u8; 4];
    match getrandom::fill(&mut w) {
        Ok(()) => u32::from_be_bytes(w),
        Err(_) => u32::MAX / 2,
    }
}

/// The codec of the stream and the frame buffers at its rate.
struct CodecState {
    codec: Codec,
    encoder: Encoder,
    decoder: Decoder,
    /// One frame at the codec's rate (input converted, or output decoded).
    pcm: Vec<i16>,
    /// One frame at the source's or sink's rate.
    io: Vec<i16>,
}

impl CodecState {
    fn new(codec: Codec) -> Result<Self, CodecError> {
        Ok(CodecState {
            codec,
            encoder: Encoder::new(codec)?,
            decoder: Decoder::new(codec)?,
            pcm: Vec::with_capacity(frame_samples(codec.audio_rate())),
            io: Vec::new(),
        })
    }

    /// RTP timestamp units per 20 ms frame.
    fn timestamp_step(&self) -> u32 {
        self.codec.clock_rate() / 50
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<MediaCommand>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<MediaStats, MediaError> {
        self.announce_security();
        let mut tick = tokio::time::interval(FRAME);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        stats_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut buf = vec![0u8; 2048];
        let mut payload = Vec::with_capacity(1500);
        if let Some(ice) = self.ice.as_mut() {
            ice.handle_timeout(now());
        }
        self.flush_ice().await;
        loop {
            let ice_due = self
                .ice
                .as_mut()
                .and_then(IceSession::poll_timeout)
                .unwrap_or_else(|| now() + Duration::from_secs(3600));
            let rtcp_due = self.rtcp.poll_timeout();
            tokio::select! {
                _ = &mut stop => break,
                r = self.socket.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    let d = buf.get(..n).unwrap_or_default();
                    let now = now();
                    match self.ice.as_mut().map(|ice| ice.handle_input(now, from, d)) {
                        None | Some(IceInput::Media) => self.receive(now, from, d),
                        Some(IceInput::Relayed { peer, data }) => {
                            self.receive(now, peer, &data);
                            self.flush_ice().await;
                        }
                        Some(IceInput::Consumed) => self.flush_ice().await,
                    }
                }
                r = relay_ready(&mut self.relay), if self.relay.is_some() => {
                    self.on_relay_ready(r).await;
                }
                _ = tokio::time::sleep_until(ice_due.into()), if self.ice.is_some() => {
                    if let Some(ice) = self.ice.as_mut() {
                        ice.handle_timeout(now());
                    }
                    self.flush_ice().await;
                }
                _ = tokio::time::sleep_until(rtcp_due.unwrap_or_else(now).into()), if rtcp_due.is_some() => {
                    self.send_rtcp().await;
                }
                _ = tick.tick() => {
                    self.send_tick(&mut payload).await?;
                    let out = self.jitter.pop(now());
                    self.play(out);
                }
                _ = stats_tick.tick() => {
                    let _ = self.events.send(MediaEvent::Stats(Box::new(self.stats())));
                }
                Some(cmd) = commands.recv() => {
                    self.command(cmd)?;
                    // A restart's first checks leave now.
                    self.flush_ice().await;
                }
            }
        }
        if let Some(ice) = self.ice.as_mut() {
            // Deallocates the relay, if any (sent once, not awaited).
            ice.close(now());
        }
        self.flush_ice().await;
        self.sink.finish()?;
        Ok(self.stats())
    }

    /// Reads what the relay's connection brought (after
    /// [`RelayStream::ready`] gave `r`); a failed connection is dropped
    /// (the relayed pair then loses consent, as with a lost UDP relay).
    async fn on_relay_ready(&mut self, r: Result<(), super::turn_stream::StreamError>) {
        let now = now();
        while let Some(m) = self.relay.as_mut().and_then(RelayStream::poll_message) {
            let input = self
                .ice
                .as_mut()
                .map_or(IceInput::Consumed, |ice| ice.handle_relay_message(now, &m));
            if let IceInput::Relayed { peer, data } = input {
                self.receive(now, peer, &data);
            }
        }
        if let Err(error) = r {
            tracing::warn!(%error, "the TURN relay's connection is lost");
            self.relay = None;
        }
        self.flush_ice().await;
    }

    /// Sends one message where ICE (or the session) routed it.
    async fn send_to(&mut self, to: Outbound, bytes: &[u8]) -> bool {
        match to {
            Outbound::Udp(addr) => self.socket.send_to(bytes, addr).await.is_ok(),
            Outbound::RelayStream => self.relay.as_mut().is_some_and(|r| r.send(bytes)),
        }
    }

    /// Sends what ICE has to send and acts on its events.
    async fn flush_ice(&mut self) {
        if self.ice.is_none() {
            return;
        }
        while let Some((to, bytes)) = self.ice.as_mut().and_then(IceSession::poll_transmit) {
            // A lost check is retransmitted by the agent.
            self.send_to(to, &bytes).await;
        }
        let Some(ice) = self.ice.as_mut() else {
            return;
        };
        while let Some(e) = ice.poll_event() {
            let _ = match e {
                IceEvent::Nominated(path) => {
                    self.channel.set_remote(path.destination);
                    self.events.send(MediaEvent::Path(path))
                }
                IceEvent::Consent(on) => self.events.send(MediaEvent::Consent(on)),
            };
        }
    }

    fn stats(&self) -> MediaStats {
        MediaStats {
            sent: self.sent,
            drops: self.channel.counters(),
            jitter: self.jitter.stats().clone(),
            path: self.ice.as_ref().and_then(IceSession::nominated),
            rtcp: self.rtcp.stats(),
            rtcp_sent: self.rtcp.sent(),
            rtcp_dropped: self.rtcp.dropped(),
            first_audio: self.first_audio,
        }
    }

    /// Sends our RTCP report when one is due, on the path RTP takes.
    async fn send_rtcp(&mut self) {
        let now = now();
        let wall = SystemTime::now();
        if let Some(wire) = self
            .rtcp
            .handle_timeout(now, wall, random_word(), &mut self.channel)
        {
            // A report lost for want of a path is simply not sent: the
            // next one carries the same cumulative figures.
            let _ = self.transmit(now, wire.to_vec()).await;
        }
    }

    /// Sends one protected datagram (SRTP or SRTCP) where media goes: under
    /// ICE its path while it may send (through the relay
    /// for a relayed candidate), else the SDP's (or latched) address.
    /// Whether it left.
    async fn transmit(&mut self, now: Instant, wire: Vec<u8>) -> bool {
        if self.ice.as_ref().is_some_and(|i| !i.may_send()) {
            return false;
        }
        let (to, wire) = match self.ice.as_mut() {
            Some(ice) => match ice.route_media(now, wire) {
                Some(routed) => routed,
                None => return false,
            },
            None => (Outbound::Udp(self.channel.remote()), wire),
        };
        // A lost datagram is no error for RTP: ICMP refusals are ignored.
        self.send_to(to, &wire).await
    }

    fn announce_security(&self) {
        let sec = self.negotiated.security;
        let _ = self.events.send(MediaEvent::Security(sec));
        if let MediaSecurity::EscrowResistant { sas, .. } = sec {
            let _ = self.events.send(MediaEvent::SasAvailable(sas));
        }
    }

    fn command(&mut self, cmd: MediaCommand) -> Result<(), MediaError> {
        match cmd {
            MediaCommand::Mute(m) => self.muted = m,
            MediaCommand::SendDtmf(d) => {
                // Not a DTMF character, or 32 already queued: ignored.
                let _ = self.dtmf_tx.start(d);
            }
            MediaCommand::Restart(r) => {
                let MediaRestart {
                    socket,
                    ice,
                    relay,
                    negotiated,
                } = *r;
                // The old path's relay allocation is given back from the
                // socket it was made on (the 5-tuple the server knows;
                // lost if that address is gone, then it expires).
                if let Some(old) = self.ice.as_mut() {
                    old.close(now());
                    while let Some((to, bytes)) = old.poll_transmit() {
                        let _ = match to {
                            Outbound::Udp(addr) => self.socket.try_send_to(&bytes, addr).is_ok(),
                            Outbound::RelayStream => {
                                self.relay.as_mut().is_some_and(|r| r.send(&bytes))
                            }
                        };
                    }
                }
                self.socket = socket;
                self.relay = relay;
                self.channel.set_latching(ice.is_none());
                self.ice = ice;
                if let Some(ice) = self.ice.as_mut() {
                    ice.handle_timeout(now());
                }
                // Nothing is sent until the new ICE session nominates a
                // pair; without ICE, to the new SDP's address.
                self.channel.set_remote(negotiated.remote);
                return self.command(MediaCommand::Update(Box::new(negotiated)));
            }
            MediaCommand::Update(n) => {
                self.channel.rekey(&n)?;
                // ICE keeps its pair across a re-INVITE (no ICE restart).
                if let Some(p) = self.ice.as_ref().and_then(IceSession::nominated) {
                    self.channel.set_remote(p.destination);
                }
                self.rtcp.update(n.rtcp_mux, n.codec.clock_rate());
                if n.codec != self.codec.codec {
                    // A new codec: fresh coder state, clock and DTMF steps.
                    self.codec = CodecState::new(n.codec)?;
                    self.jitter.set_clock_rate(n.codec.clock_rate());
                    self.dtmf_tx = DtmfSender::for_clock_rate(n.codec.clock_rate());
                }
                self.negotiated = *n;
                self.announce_security();
            }
        }
        Ok(())
    }

    /// Decodes (or conceals) what the jitter buffer gave and plays it at
    /// the sink's rate.
    fn play(&mut self, out: Playout) {
        let c = &mut self.codec;
        let n = c.decoder.frame_samples();
        match out {
            _ if !self.negotiated.direction.receives() => {
                c.pcm.clear();
                c.pcm.resize(n, 0);
            }
            Playout::Idle => {
                c.pcm.clear();
                c.pcm.resize(n, 0);
            }
            Playout::Frame(p) => {
                if self.first_audio.is_none() {
                    self.first_audio = Some(now().saturating_duration_since(self.started));
                }
                if c.decoder.decode(&p, &mut c.pcm).is_err() {
                    c.decoder.conceal(None, &mut c.pcm);
                }
            }
            Playout::Missing { next } => c.decoder.conceal(next.as_deref(), &mut c.pcm),
        }
        let want = frame_samples(self.sink.sample_rate());
        let r = if want == c.pcm.len() {
            self.sink.write_frame(&c.pcm)
        } else {
            convert_frame(&c.pcm, want, &mut c.io);
            self.sink.write_frame(&c.io)
        };
        if let Err(e) = r {
            self.audio_failure(e);
        }
    }

    fn audio_failure(&mut self, e: AudioError) {
        if !self.audio_failed {
            self.audio_failed = true;
            let _ = self.events.send(MediaEvent::AudioFailed(e.to_string()));
        }
    }

    /// Reads one frame from the source into `self.codec.pcm`, at the
    /// codec's rate.
    fn read_source(&mut self) {
        let c = &mut self.codec;
        let n = c.encoder.frame_samples();
        let have = frame_samples(self.source.sample_rate());
        c.io.clear();
        c.io.resize(have, 0);
        let more = match self.source.read_frame(&mut c.io) {
            Ok(more) => more,
            Err(e) => {
                c.io.fill(0);
                self.audio_failure(e);
                true
            }
        };
        let c = &mut self.codec;
        convert_frame(&c.io, n, &mut c.pcm);
        if !more && !self.source_ended {
            self.source_ended = true;
            let _ = self.events.send(MediaEvent::SourceEnded);
        }
    }

    async fn send_tick(&mut self, payload: &mut Vec<u8>) -> Result<(), MediaError> {
        if self.ice.as_ref().is_some_and(|i| i.path().is_none()) {
            // ICE is still checking: the source waits, so the first words
            // are heard once the path is up rather than lost.
            return Ok(());
        }
        self.read_source();
        let ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.codec.timestamp_step());
        if !self.negotiated.direction.sends() || self.ice.as_ref().is_some_and(|i| !i.may_send()) {
            // Not sending, or ICE has no pair with consent (RFC 7675).
            return Ok(());
        }
        let (pt, marker, timestamp) =
            match (self.negotiated.telephone_event, self.dtmf_tx.next_packet()) {
                (Some(pt), Some(p)) => {
                    if p.marker {
                        self.dtmf_timestamp = ts;
                    }
                    payload.clear();
                    payload.extend_from_slice(&p.event.encode());
                    (pt, p.marker, self.dtmf_timestamp)
                }
                _ => {
                    let c = &mut self.codec;
                    if self.muted {
                        c.pcm.fill(0);
                    }
                    if c.encoder.encode(&c.pcm, payload).is_err() {
                        // libopus refused this frame: nothing to send.
                        return Ok(());
                    }
                    (self.negotiated.payload_type, false, ts)
                }
            };
        let header = Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: self.seq,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.seq = self.seq.wrapping_add(1);
        let wire = self.channel.protect(header, payload)?;
        let now = now();
        if self.transmit(now, wire.to_vec()).await {
            self.sent += 1;
            self.rtcp.on_rtp_sent(payload.len(), ts, now);
        }
        Ok(())
    }

    fn receive(&mut self, now: Instant, from: std::net::SocketAddr, datagram: &[u8]) {
        if is_rtcp(datagram) {
            // RFC 5761 4: RTCP on the RTP port. Refused ones are counted
            // by the link and change nothing else.
            let _ = self
                .rtcp
                .handle_datagram(now, from, datagram, &mut self.channel);
            return;
        }
        let Ok(pkt) = self.channel.unprotect(from, datagram) else {
            return;
        };
        let h = &pkt.header;
        self.rtcp
            .on_rtp_received(h.ssrc, h.sequence_number, h.timestamp, now);
        if self.peer_ssrc != Some(h.ssrc) {
            self.peer_ssrc = Some(h.ssrc);
            self.jitter.reset();
        }
        if Some(h.payload_type) == self.negotiated.telephone_event {
            if let Some(d) = self.dtmf_rx.receive(h.timestamp, &pkt.payload) {
                let _ = self.events.send(MediaEvent::Dtmf(d));
            }
        } else if h.payload_type == self.negotiated.payload_type && self.fits(&pkt.payload) {
            self.jitter
                .push(now, h.sequence_number, h.timestamp, pkt.payload.to_vec());
        }
    }

    /// Whether a payload can be one 20 ms frame of the codec: 160 bytes of
    /// G.711, or a non-empty Opus packet (decoded at playout).
    fn fits(&self, payload: &[u8]) -> bool {
        match self.codec.codec {
            Codec::Pcmu | Codec::Pcma => payload.len() == frame_samples(8000),
            Codec::Opus => !payload.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::{DiscardSink, SilenceSource};
    use crate::media::rtcp;
    use crate::media::rtcp_link::tests::negotiate_between;

    /// The instants (from the start) at which alice's session sent RTCP
    /// to a peer socket over `secs` seconds, and how many RTP packets; each
    /// RTCP datagram must open as SRTCP under alice's key.
    async fn rtcp_instants(mux: bool, secs: u64) -> (Vec<Duration>, usize) {
        let sa = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = (sa.local_addr().unwrap(), peer.local_addr().unwrap());
        let (na, nb) = negotiate_between(a, b, mux);
        let mut bob = SrtpChannel::new(&nb).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let t0 = tokio::time::Instant::now();
        let session =
            MediaSession::start(sa, na, Box::new(SilenceSource), Box::new(DiscardSink), tx)
                .unwrap();
        let mut buf = vec![0u8; 2048];
        let (mut rtcp, mut rtp) = (Vec::new(), 0);
        let end = t0 + Duration::from_secs(secs);
        while let Ok(r) = tokio::time::timeout_at(end, peer.recv_from(&mut buf)).await {
            let (n, from) = r.unwrap();
            let d = &buf[..n];
            if rtcp::is_rtcp(d) {
                assert!(
                    bob.unprotect_rtcp(from, d).is_ok(),
                    "SRTCP under alice's key"
                );
                rtcp.push(t0.elapsed());
            } else {
                assert!(bob.unprotect(from, d).is_ok());
                rtp += 1;
            }
        }
        let stats = session.stop().await.unwrap();
        assert_eq!(stats.rtcp_sent, rtcp.len() as u64);
        (rtcp, rtp)
    }

    /// The driver, on the real clock for 10 s (the first report and one
    /// interval at their latest end by 9 s): SRTCP leaves on the RTP socket, the
    /// first report about 0.5-1.5 s after the start, the next 2.5-7.5 s
    /// later (bounds widened by 300 ms for a loaded machine), never one
    /// per 20 ms tick; none at all when the answer lacked rtcp-mux.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_session_sends_srtcp_at_rfc3550_intervals() {
        let ((at, rtp), (none, rtp_plain)) =
            tokio::join!(rtcp_instants(true, 10), rtcp_instants(false, 10));
        assert!(rtp >= 300 && rtp_plain >= 300, "{rtp} {rtp_plain}");
        assert!((2..=4).contains(&at.len()), "{at:?}");
        let ms = Duration::from_millis;
        assert!((ms(200)..ms(1800)).contains(&at[0]), "{at:?}");
        for gap in at.windows(2).map(|w| w[1] - w[0]) {
            assert!((ms(2200)..ms(7800)).contains(&gap), "{at:?}");
        }
        assert!(none.is_empty(), "RTCP without rtcp-mux: {none:?}");
    }

    /// `first_audio` is the start-to-first-played-frame time: absent while
    /// nothing arrives, then at least one frame (the first packet is sent
    /// on the first tick and played after the jitter buffer's delay) and
    /// well under the time the session has run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_audio_is_the_time_to_the_first_played_frame() {
        let sa = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sb = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        let (na, nb) = negotiate_between(a, b, true);
        let (tx, _rx) = mpsc::unbounded_channel();
        // Bob alone first: nobody sends to him, so no audio is heard.
        let bob = MediaSession::start(
            sb,
            nb.clone(),
            Box::new(SilenceSource),
            Box::new(DiscardSink),
            tx.clone(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let silent = bob.stop().await.unwrap();
        assert_eq!(silent.first_audio, None, "{silent:?}");

        let sb = UdpSocket::bind(b).await.unwrap();
        let start = tokio::time::Instant::now();
        let bob = MediaSession::start(
            sb,
            nb,
            Box::new(SilenceSource),
            Box::new(DiscardSink),
            tx.clone(),
        )
        .unwrap();
        let alice = MediaSession::start(sa, na, Box::new(SilenceSource), Box::new(DiscardSink), tx)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let heard = bob.stop().await.unwrap();
        let ran = start.elapsed();
        alice.stop().await.unwrap();
        let first = heard.first_audio.expect("audio heard");
        assert!(first >= FRAME && first < ran, "{first:?} of {ran:?}");
        assert!(heard.jitter.played > 0, "{heard:?}");
    }
}
