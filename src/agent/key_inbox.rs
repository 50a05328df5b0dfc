//! Keys handed to a running agent: renewal while it runs.
//!
//! An agent starts with the keys of the previous, current and next period;
//! one that runs past the end of the next period would otherwise stop
//! decrypting calls. Whoever renews (the desktop app's backend, the
//! headless `[pkg]` agent's renewal task) pushes fresh keys into a
//! [`KeyInbox`]; the agent's tunnel filter takes them before it handles its
//! next message, so the SIP core itself never waits for the PKG.

use crate::ibe::PrivateKeys;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A shared, unbounded-in-time but small queue of private keys for one
/// running agent. Cloning shares the queue. Keys wait here only until the
/// agent's next message (they zeroize on drop like every [`PrivateKeys`]).
#[derive(Clone, Default)]
pub struct KeyInbox(Arc<Mutex<Vec<PrivateKeys>>>);

impl KeyInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands `keys` to the agent. They are checked against the agent's own
    /// identity and domain parameters when taken; keys that fail are
    /// refused there (logged) and change nothing.
    pub fn push(&self, keys: impl IntoIterator<Item = PrivateKeys>) {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(keys);
    }

    /// Takes every pending key (the agent's side).
    pub(crate) fn take(&self) -> Vec<PrivateKeys> {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Number of keys waiting.
    pub fn pending(&self) -> usize {
        self.0.lock().map_or(0, |p| p.len())
    }
}

impl fmt::Debug for KeyInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyInbox({} pending, [redacted])", self.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::filter::{SecurityLog, SecurityPolicy, TunnelFilter};
    use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
    use crate::sip::filter::MessageFilter;
    use crate::sip::message::Message;
    use crate::tunnel::{Tunnel, TunnelConfig};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    const DOMAIN: &str = "biloxi.invalid";

    fn invite(n: u32) -> Vec<u8> {
        format!(
            "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-renew-{n}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=a{n}\r\n\
             To: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: Yp3qV7cM2rT9wK4xZ6bN8dF1hJ5sL0a{n}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@127.0.0.1:5070>\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// Alice's tunnel (keys of this month), bob's filter holding only last
    /// month's key, and what bob would need to decrypt this month.
    struct World {
        msk: MasterSecret,
        alice: Tunnel,
        bob: TunnelFilter,
        inbox: KeyInbox,
        current: Period,
        wall: SystemTime,
    }

    fn world() -> World {
        let msk = MasterSecret::generate().unwrap();
        let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
        let wall = SystemTime::now();
        let current = Period::month_at(wall.duration_since(UNIX_EPOCH).unwrap().as_secs());
        let aor = |u: &str| Aor::parse(&format!("sip:{u}@{DOMAIN}")).unwrap();
        let mut alice = Tunnel::new(aor("alice"), TunnelConfig::default());
        alice.add_params(params.clone());
        alice
            .add_keys(&extract(
                &msk,
                &Identity::new(aor("alice"), current.clone()),
            ))
            .unwrap();
        let mut bob = Tunnel::new(aor("bob"), TunnelConfig::default());
        bob.add_params(params);
        let last_month = current.previous_month().unwrap();
        bob.add_keys(&extract(&msk, &Identity::new(aor("bob"), last_month)))
            .unwrap();
        let inbox = KeyInbox::new();
        let bob = TunnelFilter::new(
            bob,
            SecurityPolicy::Require,
            Arc::new(Mutex::new(SecurityLog::default())),
        )
        .with_key_inbox(inbox.clone());
        World {
            msk,
            alice,
            bob,
            inbox,
            current,
            wall,
        }
    }

    impl World {
        fn alice_calls(&mut self, n: u32) -> Result<Message, crate::sip::filter::Reject> {
            let outer = self.alice.seal(self.wall, &invite(n)).unwrap();
            self.bob
                .incoming(Instant::now(), Message::parse(&outer).unwrap())
        }

        fn keys_of(&self, user: &str) -> PrivateKeys {
            let aor = Aor::parse(&format!("sip:{user}@{DOMAIN}")).unwrap();
            extract(&self.msk, &Identity::new(aor, self.current.clone()))
        }
    }

    #[test]
    fn a_running_filter_decrypts_with_keys_pushed_after_it_started() {
        let mut w = world();
        let refused = w.alice_calls(1).unwrap_err();
        assert_eq!(refused.response.map(|r| r.0), Some(493));
        w.inbox.push([w.keys_of("bob")]);
        assert_eq!(w.inbox.pending(), 1);
        let opened = w.alice_calls(2).unwrap();
        assert_eq!(opened.method(), Some(rsip::Method::Invite));
        assert_eq!(opened.call_id(), Some("Yp3qV7cM2rT9wK4xZ6bN8dF1hJ5sL0a2"));
        assert_eq!(w.inbox.pending(), 0);
    }

    #[test]
    fn keys_of_another_user_are_refused_and_change_nothing() {
        let mut w = world();
        w.inbox.push([w.keys_of("alice")]);
        let refused = w.alice_calls(1).unwrap_err();
        assert_eq!(refused.response.map(|r| r.0), Some(493));
        assert_eq!(w.inbox.pending(), 0);
        // The right keys still work afterwards.
        w.inbox.push([w.keys_of("bob")]);
        assert!(w.alice_calls(2).is_ok());
    }

    #[test]
    fn debug_never_shows_keys() {
        let w = world();
        w.inbox.push([w.keys_of("bob")]);
        assert_eq!(format!("{:?}", w.inbox), "KeyInbox(1 pending, [redacted])");
    }
}
