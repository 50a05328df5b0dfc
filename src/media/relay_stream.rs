//! The connection to a TURN server reached over TCP or TLS during a call:
//! the thin tokio driver of a [`StreamLink`] (which frames, encrypts and
//! decrypts). The media session waits on [`RelayStream::ready`] beside its
//! UDP socket, gives it the messages ICE routes to
//! [`super::ice::Outbound::RelayStream`] and hands what it reads to
//! [`super::ice::IceSession::handle_relay_message`].
//!
//! Writing never blocks the call: what the kernel does not take now waits
//! in the link (bounded, see [`super::turn_stream::MAX_BACKLOG`]) until the
//! connection is writable again.

use super::turn_stream::{StreamError, StreamLink};
use std::io::ErrorKind;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes read from the connection at once.
const READ_CHUNK: usize = 16 * 1024;

/// A TURN server's connection in a call (see the module documentation).
#[derive(Debug)]
pub struct RelayStream {
    tcp: TcpStream,
    link: StreamLink,
    buf: Vec<u8>,
}

impl RelayStream {
    /// The connection `tcp` (connected, and through TLS when `link` is a
    /// TLS link, by the gathering of candidates) under the tokio runtime
    /// this is called on.
    pub fn new(tcp: std::net::TcpStream, link: StreamLink) -> std::io::Result<Self> {
        tcp.set_read_timeout(None)?;
        tcp.set_nonblocking(true)?;
        Ok(RelayStream {
            tcp: TcpStream::from_std(tcp)?,
            link,
            buf: vec![0u8; READ_CHUNK],
        })
    }

    /// Queues one TURN message and writes what the connection takes now.
    /// False when it was dropped (the link failed or is backed up).
    pub fn send(&mut self, message: &[u8]) -> bool {
        let queued = self.link.send(message);
        self.flush();
        queued
    }

    /// Waits until the connection can be read (or written, when bytes
    /// wait), then reads and writes what it can. Cancel-safe: it may be
    /// one branch of a `select!`. An error once the link has failed or the
    /// server closed the connection: the relay is gone.
    pub async fn ready(&mut self) -> Result<(), StreamError> {
        if let Some(e) = self.link.failed() {
            return Err(e.clone());
        }
        let interest = if self.link.pending().is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let ready = self
            .tcp
            .ready(interest)
            .await
            .map_err(|e| StreamError::Io(e.to_string()))?;
        if ready.is_readable() {
            match self.tcp.try_read(&mut self.buf) {
                Ok(n) => self.link.receive(self.buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.link.receive(&[]),
            }
        }
        self.flush();
        match self.link.failed() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The next message the server sent.
    pub fn poll_message(&mut self) -> Option<Vec<u8>> {
        self.link.poll_message()
    }

    fn flush(&mut self) {
        while !self.link.pending().is_empty() {
            match self.tcp.try_write(self.link.pending()) {
                Ok(n) => self.link.written(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.link.receive(&[]);
                    break;
                }
            }
        }
    }
}
