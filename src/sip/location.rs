//! The location service of the embedded registrar: AOR -> bindings, each
//! with its expiry and the flow (source address and transport) the
//! REGISTER came from, so a Contact with a `.invalid` host or behind NAT is
//! still reachable (the RFC 5626 idea without its headers). Bounded: at most
//! `max_aors` AORs and `max_per_aor` bindings each.

use crate::sip::Dest;
use rsip::Uri;
use std::collections::HashMap;
use std::time::Instant;

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    /// Where requests for this contact are sent.
    pub flow: Dest,
    /// When the binding lapses.
    pub expires_at: Instant,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
}

/// Why a binding was not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocationError {
    /// Too many AORs or bindings.
    #[error("location table full")]
    Full,
    /// Same Call-ID with a CSeq not above the stored one (RFC 3261 10.3 step 7): a replay.
    #[error("REGISTER replayed or out of order")]
    OutOfOrder,
}

/// AOR -> bindings.
#[derive(Debug)]
pub struct LocationService {
    map: HashMap<String, Vec<Binding>>,
    max_aors: usize,
    max_per_aor: usize,
}

impl LocationService {
    /// An empty service with bounds.
    pub fn new(max_aors: usize, max_per_aor: usize) -> Self {
        LocationService {
            map: HashMap::new(),
            max_aors,
            max_per_aor,
        }
    }

    /// Adds or refreshes the binding of `b.contact` under `aor`.
    pub fn update(&mut self, now: Instant, aor: &str, b: Binding) -> Result<(), LocationError> {
        self.purge(now);
        if !self.map.contains_key(aor) && self.map.len() >= self.max_aors {
            return Err(LocationError::Full);
        }
        let list = self.map.entry(aor.to_string()).or_default();
        if let Some(old) = list.iter_mut().find(|o| o.contact == b.contact) {
            if old.call_id == b.call_id && b.cseq <= old.cseq {
                return Err(LocationError::OutOfOrder);
            }
            *old = b;
            return Ok(());
        }
        if list.len() >= self.max_per_aor {
            return Err(LocationError::Full);
        }
        list.push(b);
        Ok(())
    }

    /// Removes the binding of `contact` (or all with `None`).
    pub fn remove(&mut self, aor: &str, contact: Option<&str>) {
        if let Some(list) = self.map.get_mut(aor) {
            list.retain(|b| contact.is_some_and(|c| c != b.contact));
            if list.is_empty() {
                self.map.remove(aor);
            }
        }
    }

    /// True if a binding of `aor` was made by REGISTER `call_id` with a
    /// CSeq at or above `cseq`: a request that is a replay or out of order
    /// (RFC 3261 10.3 step 7), removals included.
    pub fn is_replay(&self, aor: &str, call_id: &str, cseq: u32) -> bool {
        self.map
            .get(aor)
            .is_some_and(|l| l.iter().any(|b| b.call_id == call_id && cseq <= b.cseq))
    }

    /// Live bindings of `aor`.
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.map
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    /// The flow of a live binding whose Contact URI is `contact` (compared
    /// on user, host and port: parameters are written differently by
    /// different stacks, e.g. `transport=tcp` / `TCP`).
    pub fn flow_of_contact(&self, now: Instant, contact: &Uri) -> Option<Dest> {
        let want = contact_key(contact);
        self.map
            .values()
            .flatten()
            .filter(|b| b.expires_at > now)
            .find(|b| Uri::try_from(b.contact.as_str()).is_ok_and(|u| contact_key(&u) == want))
            .map(|b| b.flow)
    }

    /// Drops expired bindings.
    pub fn purge(&mut self, now: Instant) {
        self.map.retain(|_, l| {
            l.retain(|b| b.expires_at > now);
            !l.is_empty()
        });
    }
}

fn contact_key(u: &Uri) -> String {
    format!("{}@{}", u.user().unwrap_or(""), u.host_with_port).to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(contact: &str, cseq: u32, until: Instant) -> Binding {
        Binding {
            contact: contact.into(),
            flow: Dest::udp("127.0.0.1:5062".parse().unwrap()),
            expires_at: until,
            call_id: "c".into(),
            cseq,
        }
    }

    #[test]
    fn bindings_expire_replays_fail_bounds_hold() {
        let t0 = Instant::now();
        let mut l = LocationService::new(1, 2);
        let later = t0 + Duration::from_secs(60);
        l.update(t0, "bob@x.invalid", b("sip:127.0.0.1:1", 1, later))
            .unwrap();
        assert_eq!(
            l.update(t0, "bob@x.invalid", b("sip:127.0.0.1:1", 1, later)),
            Err(LocationError::OutOfOrder)
        );
        l.update(t0, "bob@x.invalid", b("sip:127.0.0.1:2", 2, later))
            .unwrap();
        assert_eq!(
            l.update(t0, "bob@x.invalid", b("sip:127.0.0.1:3", 3, later)),
            Err(LocationError::Full)
        );
        assert_eq!(
            l.update(t0, "eve@x.invalid", b("sip:127.0.0.1:4", 1, later)),
            Err(LocationError::Full)
        );
        assert_eq!(l.lookup(t0, "bob@x.invalid").len(), 2);
        assert!(l.lookup(later, "bob@x.invalid").is_empty());
        let c = Uri::try_from("sip:127.0.0.1:2;transport=TCP").unwrap();
        assert!(l.flow_of_contact(t0, &c).is_some());
        assert!(l.flow_of_contact(later, &c).is_none());
        l.remove("bob@x.invalid", Some("sip:127.0.0.1:1"));
        assert_eq!(l.lookup(t0, "bob@x.invalid").len(), 1);
    }
}
