//! The SIP layer: a sans-I/O RFC 3261 stack and the embedded
//! registrar/proxy, plus a thin tokio driver.
//!
//! Every core here (transaction layer, [`ua::UserAgent`],
//! [`proxy::Proxy`]) takes bytes and a `now: Instant` in and hands
//! [`Transmit`]s out; none reads the clock or touches a socket. The
//! [`driver`] owns sockets and the clock. Files, lowest first:
//! - [`message`]: parsing (over `rsip`) and writing, compact forms;
//! - [`timers`], `transaction`: RFC 3261 17;
//! - `dialog`: RFC 3261 12 dialogs and in-dialog requests;
//! - [`digest`]: digest authentication (RFC 3261 22, RFC 7616, RFC 8760);
//! - [`ua`]: the user-agent core with the [`filter::MessageFilter`] hook where
//!   the tunnel seals and opens messages;
//! - `location`, [`registrar`], [`proxy`]: the embedded provider;
//! - [`driver`]: UDP, TCP and TLS over tokio;
//! - [`stun`]: STUN binding requests and answers (UDP keep-alives, RFC 5626
//!   4.4.2; the media layer's server-reflexive address);
//! - [`proxy_uri`]: the outbound proxy a phone is configured with (`sips:`,
//!   `;transport=`).

pub(crate) mod dialog;
pub mod digest;
pub mod driver;
pub mod filter;
pub(crate) mod location;
pub mod message;
pub mod proxy;
pub mod proxy_uri;
pub mod registrar;
pub mod stun;
pub mod timers;
pub(crate) mod transaction;
pub mod ua;

use std::net::SocketAddr;

/// The transport a message travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams; the transaction layer retransmits.
    Udp,
    /// A stream framed by Content-Length; no retransmissions.
    Tcp,
    /// TCP under TLS (RFC 3261 26.2, `sips:` / `;transport=tls`), framed
    /// like TCP; the driver checks the peer's certificate.
    Tls,
}

impl Transport {
    /// True for stream transports (RFC 3261 17: timers A, E, G off).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The `transport` URI parameter (RFC 3261 19.1.1), lower case.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The default port of the transport (RFC 3261 19.1.2): 5061 for TLS,
    /// 5060 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

/// A peer address and the transport to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Socket address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

impl Dest {
    /// A UDP destination.
    pub fn udp(addr: SocketAddr) -> Dest {
        Dest {
            addr,
            transport: Transport::Udp,
        }
    }
}

/// Bytes a core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: Dest,
    /// One whole SIP message.
    pub bytes: Vec<u8>,
}

/// Random token of `bytes` random bytes in base64url (no padding): tags,
/// branches (after `z9hG4bK`), Call-IDs (16 bytes = 128 bits), cnonces.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    // getrandom only fails when the OS has no entropy source at all; a
    // zeroed buffer would make Call-IDs collide, so mix in a counter then.
    if getrandom::fill(&mut buf).is_err() {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, b) in n.to_le_bytes().iter().enumerate() {
            if let Some(x) = buf.get_mut(i) {
                *x = *b;
            }
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random (version 4) UUID as a URN in angle brackets,
/// `<urn:uuid:xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx>`: an RFC 5626
/// `+sip.instance` value.
pub fn random_uuid_urn() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // As random_token: never two equal instances in one process.
        let t = random_token(16);
        b.copy_from_slice(&t.as_bytes()[..16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "<urn:uuid:{}-{}-{}-{}-{}>",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
