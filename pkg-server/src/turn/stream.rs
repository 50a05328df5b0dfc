//! TURN over TCP and TLS (RFC 8656 section 3.1, RFC 6062's control
//! connection): the webrtc-rs `turn` server reads datagrams, so each
//! stream listener is presented to it as one packet socket
//! ([`StreamListener`]): every framed STUN message or ChannelData of every
//! connection arrives with the connection's remote address, and an answer
//! to that address goes back on that connection.
//!
//! Only the framing lives here (RFC 8656 section 12.5: a STUN message is
//! 20 + length bytes; ChannelData 4 + length, padded to a multiple of 4 on
//! streams); the messages themselves are decoded by the `turn` crate.

use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use webrtc_util::Conn;

type UtilResult<T> = Result<T, webrtc_util::Error>;

/// Largest frame accepted from a client (a STUN message or ChannelData
/// larger than this closes the connection).
pub(crate) const MAX_FRAME: usize = 1500 + 64;
/// Connections one listener serves at once; more are refused at accept.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// A connection that completes no frame for this long is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(600);

/// Why a frame header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The first two bits are 10 or 11: neither STUN nor ChannelData.
    #[error("neither STUN nor ChannelData")]
    Unknown,
    /// Longer than [`MAX_FRAME`].
    #[error("frame too large")]
    TooLarge,
}

/// From the first 4 bytes of a frame: the bytes of the message and the
/// bytes to read in all (with ChannelData padding).
pub(crate) fn frame_len(head: [u8; 4]) -> Result<(usize, usize), FrameError> {
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let (msg, total) = match head[0] >> 6 {
        0b00 => (20 + len, 20 + len),
        0b01 => (4 + len, (4 + len).div_ceil(4) * 4),
        _ => return Err(FrameError::Unknown),
    };
    if total > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    Ok((msg, total))
}

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// A TCP (or TLS) listener presented as one packet socket.
pub(crate) struct StreamListener {
    local: SocketAddr,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Writers,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl StreamListener {
    /// Serves `listener`; with `tls`, each connection first completes a
    /// TLS handshake.
    pub(crate) fn new(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let writers: Writers = Arc::default();
        let w = writers.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if w.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_CONNECTIONS {
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                let tx = tx.clone();
                let w = w.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, peer, tx, w).await,
                        Some(acc) => {
                            if let Ok(Ok(s)) =
                                tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await
                            {
                                serve(s, peer, tx, w).await
                            }
                        }
                    }
                });
            }
        });
        Ok(StreamListener {
            local,
            inbound: tokio::sync::Mutex::new(rx),
            writers,
            accept,
        })
    }
}

/// Reads frames of one connection into `tx` and writes what is queued for
/// it, until either side ends.
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(peer, out_tx);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    loop {
        let mut head = [0u8; 4];
        match tokio::time::timeout(IDLE, rd.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let Ok((msg, total)) = frame_len(head) else {
            break;
        };
        let mut frame = vec![0u8; total];
        frame[..4].copy_from_slice(&head);
        match tokio::time::timeout(IDLE, rd.read_exact(&mut frame[4..])).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        frame.truncate(msg);
        if tx.send((frame, peer)).await.is_err() {
            break;
        }
    }
    writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&peer);
    writer.abort();
}

#[async_trait]
impl Conn for StreamListener {
    async fn connect(&self, _addr: SocketAddr) -> UtilResult<()> {
        Err(webrtc_util::Error::Other(
            "a listener does not connect".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> UtilResult<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> UtilResult<(usize, SocketAddr)> {
        let mut rx = self.inbound.lock().await;
        loop {
            let (frame, from) = rx.recv().await.ok_or(webrtc_util::Error::ErrBufferClosed)?;
            if frame.len() <= buf.len() {
                buf[..frame.len()].copy_from_slice(&frame);
                return Ok((frame.len(), from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> UtilResult<usize> {
        Err(webrtc_util::Error::Other("send_to a connection".into()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> UtilResult<usize> {
        let sender = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
            .cloned();
        let Some(sender) = sender else {
            return Err(webrtc_util::Error::Other(format!(
                "no connection from {target}"
            )));
        };
        let mut frame = buf.to_vec();
        if buf.first().is_some_and(|b| b >> 6 == 0b01) {
            frame.resize(buf.len().div_ceil(4) * 4, 0);
        }
        // A client that does not read gets its frames dropped, never a
        // stalled server.
        let _ = sender.try_send(frame);
        Ok(buf.len())
    }

    fn local_addr(&self) -> UtilResult<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> UtilResult<()> {
        self.accept.abort();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_stun_and_channel_data() {
        assert_eq!(frame_len([0x00, 0x01, 0x00, 0x08]), Ok((28, 28)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Ok((9, 12)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x04]), Ok((8, 8)));
        assert_eq!(frame_len([0x80, 0, 0, 0]), Err(FrameError::Unknown));
        assert_eq!(frame_len([0xC0, 0, 0, 0]), Err(FrameError::Unknown));
        assert_eq!(
            frame_len([0x00, 0x01, 0xFF, 0xFF]),
            Err(FrameError::TooLarge)
        );
        // Every header either frames within MAX_FRAME or is refused.
        for b0 in [0x00u8, 0x3F, 0x40, 0x7F, 0x80, 0xFF] {
            for len in [0u16, 1, 3, 1499, 1540, 1541, 1560, u16::MAX] {
                let [h, l] = len.to_be_bytes();
                if let Ok((m, t)) = frame_len([b0, 0, h, l]) {
                    assert!(4 <= m && m <= t && t <= MAX_FRAME && t - m < 4);
                }
            }
        }
    }
}
