//! The media session of one call: a thin tokio driver around the sans-I/O
//! parts (SRTP channel, jitter buffer, G.711, RFC 4733). Every 20 ms it
//! sends one frame from the [`AudioSource`] as SRTP and plays one frame
//! from the jitter buffer to the [`AudioSink`]; it reports through
//! [`MediaEvent`]s and obeys [`MediaCommand`]s.

use super::audio::{AudioError, AudioSink, AudioSource};
use super::dtmf::{DtmfReceiver, DtmfSender};
use super::g711::G711;
use super::jitter::{JitterBuffer, JitterStats, FRAME, FRAME_SAMPLES};
use super::keys::Sas;
use super::sdp::{Codec, MediaSecurity, Negotiated};
use super::srtp::{DropCounters, SrtpChannel, SrtpError};
use rtp::header::Header;
use std::time::{Duration, Instant};
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
    /// Counters, once a second.
    Stats(MediaStats),
    /// An audio device or file failed; media goes on without it.
    AudioFailed(String),
}

/// Commands from the call (the SIP agent or the UI).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MediaCommand {
    /// Send silence instead of the microphone.
    Mute(bool),
    /// Send one DTMF digit (RFC 4733).
    SendDtmf(char),
    /// A new offer/answer (re-INVITE: hold, resume): new keys, direction,
    /// codec or peer address.
    Update(Negotiated),
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
        let channel = SrtpChannel::new(&negotiated)?;
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let mut ids = [0u8; 10];
        getrandom::fill(&mut ids).map_err(|e| MediaError::Task(e.to_string()))?;
        let driver = Driver {
            socket,
            channel,
            negotiated,
            source,
            sink,
            events,
            jitter: JitterBuffer::new(FRAME, Duration::from_millis(200)),
            dtmf_tx: DtmfSender::default(),
            dtmf_rx: DtmfReceiver::default(),
            muted: false,
            source_ended: false,
            audio_failed: false,
            ssrc: u32::from_be_bytes([ids[0], ids[1], ids[2], ids[3]]),
            seq: u16::from_be_bytes([ids[4], ids[5]]),
            timestamp: u32::from_be_bytes([ids[6], ids[7], ids[8], ids[9]]),
            dtmf_timestamp: 0,
            peer_ssrc: None,
            sent: 0,
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
}

fn g711(codec: Codec) -> G711 {
    match codec {
        Codec::Pcmu => G711::Ulaw,
        Codec::Pcma => G711::Alaw,
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
        let mut frame = vec![0i16; FRAME_SAMPLES];
        let mut payload = Vec::with_capacity(FRAME_SAMPLES);
        let mut pcm = Vec::with_capacity(FRAME_SAMPLES);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = self.socket.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    self.receive(Instant::now(), from, buf.get(..n).unwrap_or_default(), &mut pcm);
                }
                _ = tick.tick() => {
                    self.send_tick(&mut frame, &mut payload).await?;
                    let out = self.jitter.pop(Instant::now());
                    if self.negotiated.direction.receives() {
                        self.play(&out);
                    } else {
                        self.play(&[0; FRAME_SAMPLES]);
                    }
                }
                _ = stats_tick.tick() => {
                    let _ = self.events.send(MediaEvent::Stats(self.stats()));
                }
                Some(cmd) = commands.recv() => self.command(cmd)?,
            }
        }
        self.sink.finish()?;
        Ok(self.stats())
    }

    fn stats(&self) -> MediaStats {
        MediaStats {
            sent: self.sent,
            drops: self.channel.counters(),
            jitter: self.jitter.stats().clone(),
        }
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
            MediaCommand::Update(n) => {
                self.channel.rekey(&n)?;
                self.negotiated = n;
                self.announce_security();
            }
        }
        Ok(())
    }

    fn play(&mut self, frame: &[i16]) {
        if let Err(e) = self.sink.write_frame(frame) {
            self.audio_failure(e);
        }
    }

    fn audio_failure(&mut self, e: AudioError) {
        if !self.audio_failed {
            self.audio_failed = true;
            let _ = self.events.send(MediaEvent::AudioFailed(e.to_string()));
        }
    }

    async fn send_tick(
        &mut self,
        frame: &mut [i16],
        payload: &mut Vec<u8>,
    ) -> Result<(), MediaError> {
        let more = match self.source.read_frame(frame) {
            Ok(more) => more,
            Err(e) => {
                self.audio_failure(e);
                frame.fill(0);
                true
            }
        };
        if !more && !self.source_ended {
            self.source_ended = true;
            let _ = self.events.send(MediaEvent::SourceEnded);
        }
        let ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        if !self.negotiated.direction.sends() {
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
                    if self.muted {
                        frame.fill(0);
                    }
                    g711(self.negotiated.codec).encode(frame, payload);
                    (self.negotiated.codec.payload_type(), false, ts)
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
        // A lost datagram is no error for RTP: ICMP refusals are ignored.
        if self
            .socket
            .send_to(&wire, self.channel.remote())
            .await
            .is_ok()
        {
            self.sent += 1;
        }
        Ok(())
    }

    fn receive(
        &mut self,
        now: Instant,
        from: std::net::SocketAddr,
        datagram: &[u8],
        pcm: &mut Vec<i16>,
    ) {
        let Ok(pkt) = self.channel.unprotect(from, datagram) else {
            return;
        };
        let h = &pkt.header;
        if self.peer_ssrc != Some(h.ssrc) {
            self.peer_ssrc = Some(h.ssrc);
            self.jitter.reset();
        }
        if Some(h.payload_type) == self.negotiated.telephone_event {
            if let Some(d) = self.dtmf_rx.receive(h.timestamp, &pkt.payload) {
                let _ = self.events.send(MediaEvent::Dtmf(d));
            }
        } else if h.payload_type == self.negotiated.codec.payload_type()
            && pkt.payload.len() == FRAME_SAMPLES
        {
            g711(self.negotiated.codec).decode(&pkt.payload, pcm);
            self.jitter
                .push(now, h.sequence_number, h.timestamp, pcm.clone());
        }
    }
}
