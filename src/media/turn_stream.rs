//! One TURN connection over TCP or TLS (RFC 8656 3.1), sans-I/O: the
//! messages of a [`super::turn_client::TurnClient`] go in, the bytes to
//! write on the TCP connection come out; bytes read from the connection go
//! in, the server's messages come out. TLS is a rustls
//! `ClientConnection` driven the same way (`read_tls`/`write_tls`), so the
//! same link runs under the blocking gathering of candidates and under the
//! call's tokio driver, and a test runs it against a server in memory.
//!
//! Decisions:
//! - TLS trusts what the [`TlsClient`] given trusts: the phone builds it
//!   as for SIP over TLS (`agent::sip_tls`), pinned to the PKG's
//!   certificate, else the platform's roots for the URI's host.
//! - Messages queued before the TLS handshake ends wait in rustls (its
//!   plaintext buffer) and leave once it ends.
//! - At most [`MAX_BACKLOG`] bytes wait to be written: a relay that does
//!   not read gets later messages dropped (media is late anyway, and the
//!   client retransmits nothing on a stream but times out), never an
//!   unbounded buffer.
//! - Any framing or TLS error ends the link for good ([`StreamError`]).

use super::turn_framing::{frame, FrameDecoder, FramingError};
use crate::sip::driver::TlsClient;
use std::io::{Read, Write};
use thiserror::Error;

/// Most bytes waiting to be written before new messages are dropped.
pub const MAX_BACKLOG: usize = 256 * 1024;

/// Why a TURN stream cannot go on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The server's bytes do not frame as TURN messages.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// TLS failed (the certificate is not the pinned one, a bad record, ...).
    #[error("TLS to the TURN server: {0}")]
    Tls(String),
    /// The server closed the connection (or it broke).
    #[error("the TURN server closed the connection")]
    Closed,
    /// The connection failed.
    #[error("the connection to the TURN server failed: {0}")]
    Io(String),
}

/// The TURN messages of one TCP connection, in clear or inside TLS.
pub struct StreamLink {
    tls: Option<rustls::ClientConnection>,
    decoder: FrameDecoder,
    /// Bytes for the socket (TLS records, or frames in clear).
    out: Vec<u8>,
    failed: Option<StreamError>,
}

impl std::fmt::Debug for StreamLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLink")
            .field("tls", &self.tls.is_some())
            .field("out", &self.out.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl StreamLink {
    /// A link in clear (`turn:...?transport=tcp`).
    pub fn tcp() -> Self {
        StreamLink {
            tls: None,
            decoder: FrameDecoder::new(),
            out: Vec::new(),
            failed: None,
        }
    }

    /// A link inside TLS (`turns:`), checked as `tls` says; its
    /// ClientHello is ready in [`StreamLink::pending`].
    pub fn tls(tls: &TlsClient) -> Result<Self, StreamError> {
        let conn = rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(|e| StreamError::Tls(e.to_string()))?;
        let mut link = StreamLink {
            tls: Some(conn),
            ..StreamLink::tcp()
        };
        link.pump_tls_out();
        Ok(link)
    }

    /// Whether the link failed (then it sends and yields nothing more).
    pub fn failed(&self) -> Option<&StreamError> {
        self.failed.as_ref()
    }

    /// Queues one TURN message (framed, encrypted under TLS). False when
    /// it was dropped: the link failed or [`MAX_BACKLOG`] is reached.
    pub fn send(&mut self, message: &[u8]) -> bool {
        if self.failed.is_some() || self.out.len() >= MAX_BACKLOG {
            return false;
        }
        let framed = frame(message);
        match self.tls.as_mut() {
            None => self.out.extend_from_slice(&framed),
            Some(tls) => {
                if tls.writer().write_all(&framed).is_err() {
                    return false;
                }
                self.pump_tls_out();
            }
        }
        true
    }

    /// Bytes read from the connection; an empty slice is the server's end
    /// of stream. The messages they complete come out of
    /// [`StreamLink::poll_message`].
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if bytes.is_empty() {
            return self.fail(StreamError::Closed);
        }
        let Some(tls) = self.tls.as_mut() else {
            self.decoder.push(bytes);
            return;
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match tls.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return self.fail(StreamError::Tls(e.to_string())),
            }
            let state = match tls.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // The alert that says why goes out before we stop.
                    self.pump_tls_out();
                    return self.fail(StreamError::Tls(e.to_string()));
                }
            };
            if state.plaintext_bytes_to_read() > 0 {
                let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
                match tls.reader().read_exact(&mut plain) {
                    Ok(()) => self.decoder.push(&plain),
                    Err(e) => return self.fail(StreamError::Tls(e.to_string())),
                }
            }
            if state.peer_has_closed() {
                self.pump_tls_out();
                return self.fail(StreamError::Closed);
            }
        }
        self.pump_tls_out();
    }

    /// The next message from the server (padding removed).
    pub fn poll_message(&mut self) -> Option<Vec<u8>> {
        if self.failed.is_some() {
            return None;
        }
        match self.decoder.next_frame() {
            Ok(m) => m,
            Err(e) => {
                self.fail(e.into());
                None
            }
        }
    }

    /// Bytes waiting for the socket.
    pub fn pending(&self) -> &[u8] {
        &self.out
    }

    /// The socket took the first `n` bytes of [`StreamLink::pending`].
    pub fn written(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Whether the TLS handshake is still running (always false in clear).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    fn pump_tls_out(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                if tls.write_tls(&mut self.out).is_err() {
                    break;
                }
            }
        }
    }

    fn fail(&mut self, e: StreamError) {
        if self.failed.is_none() {
            tracing::debug!(error = %e, "TURN stream ends");
            self.failed = Some(e);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::turn_framing::frame;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{ring, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(ring::default_provider())
    }

    /// Trusts exactly one certificate (as the phone's pin does; the real
    /// pin verifier lives in the PKG client, a layer this one may not use).
    #[derive(Debug)]
    struct Exactly(Vec<u8>);

    impl ServerCertVerifier for Exactly {
        fn verify_server_cert(
            &self,
            cert: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if cert.as_ref() == self.0.as_slice() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("not the pinned certificate".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.3 only".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// A self-signed certificate and the server config serving it.
    fn server() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["relay.test".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        (der, Arc::new(config))
    }

    fn client(pinned: &[u8]) -> TlsClient {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Exactly(pinned.to_vec())))
            .with_no_client_auth();
        TlsClient {
            config: Arc::new(config),
            server_name: ServerName::try_from("relay.test").unwrap(),
        }
    }

    /// Moves bytes between the link and an in-memory TLS server until
    /// neither has more; returns what the server read in clear.
    fn exchange(link: &mut StreamLink, srv: &mut rustls::ServerConnection) -> Vec<u8> {
        let mut plain = Vec::new();
        for _ in 0..10 {
            let out = link.pending().to_vec();
            link.written(out.len());
            let mut rd = &out[..];
            while !rd.is_empty() {
                srv.read_tls(&mut rd).unwrap();
            }
            if srv.process_new_packets().is_err() {
                let mut back = Vec::new();
                while srv.wants_write() {
                    srv.write_tls(&mut back).unwrap();
                }
                link.receive(&back);
                return plain;
            }
            let _ = srv.reader().read_to_end(&mut plain);
            let mut back = Vec::new();
            while srv.wants_write() {
                srv.write_tls(&mut back).unwrap();
            }
            if !back.is_empty() {
                link.receive(&back);
            }
        }
        plain
    }

    #[test]
    fn messages_cross_tls_framed_both_ways() {
        let (cert, config) = server();
        let mut srv = rustls::ServerConnection::new(config).unwrap();
        let mut link = StreamLink::tls(&client(cert.as_ref())).unwrap();
        assert!(link.is_handshaking());
        // Queued before the handshake ends: sent once it has.
        let cd = [0x40, 0x00, 0x00, 0x03, 7, 8, 9];
        assert!(link.send(&cd));
        let plain = exchange(&mut link, &mut srv);
        assert!(!link.is_handshaking());
        assert_eq!(plain, frame(&cd), "padded to 8 on the stream");
        // The server's answer, in two records, comes out whole.
        let answer = frame(&[0x40, 0x01, 0x00, 0x02, 1, 2]);
        srv.writer().write_all(&answer[..3]).unwrap();
        srv.writer().write_all(&answer[3..]).unwrap();
        let mut back = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut back).unwrap();
        }
        link.receive(&back);
        assert_eq!(
            link.poll_message().unwrap(),
            vec![0x40, 0x01, 0x00, 0x02, 1, 2]
        );
        assert_eq!(link.poll_message(), None);
        assert!(link.failed().is_none());
    }

    /// A relay (or someone on the path) with another certificate than the
    /// pinned one: the handshake fails, and nothing we queued ever left
    /// in clear or reached the server.
    #[test]
    fn another_certificate_than_the_pinned_one_fails_the_link() {
        let (_, config) = server();
        let mut srv = rustls::ServerConnection::new(config).unwrap();
        let mut link = StreamLink::tls(&client(b"another")).unwrap();
        assert!(link.send(&[0x40, 0x00, 0x00, 0x01, 0xEE]));
        let plain = exchange(&mut link, &mut srv);
        assert!(plain.is_empty());
        assert!(
            matches!(link.failed(), Some(StreamError::Tls(e)) if e.contains("pinned")),
            "{:?}",
            link.failed()
        );
        assert!(!link.send(&[0x40, 0x00, 0x00, 0x01, 0xEE]));
        assert!(link.poll_message().is_none());
    }

    #[test]
    fn clear_links_frame_and_bound_their_backlog() {
        let mut link = StreamLink::tcp();
        assert!(link.send(&[0x40, 0x00, 0x00, 0x01, 0xAA]));
        assert_eq!(link.pending(), &[0x40, 0x00, 0x00, 0x01, 0xAA, 0, 0, 0]);
        link.written(8);
        let big = vec![0x40u8, 0, 0x05, 0xDC]
            .into_iter()
            .chain([0u8; 1500])
            .collect::<Vec<_>>();
        let mut sent = 0;
        while link.send(&big) {
            sent += 1;
        }
        assert!(link.pending().len() <= MAX_BACKLOG + big.len(), "{sent}");
        // A server out of step ends the link.
        link.receive(&[0xFF, 0, 0, 0]);
        assert!(link.poll_message().is_none());
        assert!(matches!(link.failed(), Some(StreamError::Framing(_))));
        let mut closed = StreamLink::tcp();
        closed.receive(&[]);
        assert_eq!(closed.failed(), Some(&StreamError::Closed));
    }
}
