//! The location service of the embedded registrar: AOR -> bindings, each
//! with its expiry and the flow (source address and transport, as the
//! REGISTER was received) it came on, so a Contact with a `.invalid` host
//! or behind NAT is still reachable: requests for it go back over that flow
//! (RFC 5626). A binding with `+sip.instance` and `reg-id` replaces the
//! earlier binding of the same instance and reg-id (RFC 5626 6). Bounded:
//! at most `max_aors` AORs and `max_per_aor` bindings each.
//!
//! A Contact URI (user part, host and port: phones put a per-device token
//! in the user part) belongs to one AOR at a time
//! ([`LocationService::owner_of_contact`]): in-dialog requests are routed
//! by it, so another user registering the same Contact would receive them.

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
    /// `+sip.instance` of the Contact (RFC 5626), if given.
    pub instance: Option<String>,
    /// `reg-id` of the Contact (RFC 5626), if given with an instance.
    pub reg_id: Option<u32>,
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

    /// Adds or refreshes the binding of `b.contact` under `aor`. When it
    /// replaces a binding that lived on another flow (the same contact or
    /// the same instance and reg-id, RFC 5626 6, from a new address), that
    /// old flow is returned: requests under way to it will not arrive.
    pub fn update(
        &mut self,
        now: Instant,
        aor: &str,
        b: Binding,
    ) -> Result<Option<Dest>, LocationError> {
        self.purge(now);
        if !self.map.contains_key(aor) && self.map.len() >= self.max_aors {
            return Err(LocationError::Full);
        }
        let list = self.map.entry(aor.to_string()).or_default();
        let same_flow = |o: &Binding| {
            o.contact == b.contact
                || (b.instance.is_some()
                    && b.reg_id.is_some()
                    && o.instance == b.instance
                    && o.reg_id == b.reg_id)
        };
        if let Some(old) = list.iter_mut().find(|o| same_flow(o)) {
            if old.call_id == b.call_id && b.cseq <= old.cseq {
                return Err(LocationError::OutOfOrder);
            }
            let moved = (old.flow != b.flow).then_some(old.flow);
            *old = b;
            return Ok(moved);
        }
        if list.len() >= self.max_per_aor {
            return Err(LocationError::Full);
        }
        list.push(b);
        Ok(None)
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

    /// The AOR holding a live binding whose Contact URI is `contact`
    /// (compared as in [`Self::flow_of_contact`]).
    pub fn owner_of_contact(&self, now: Instant, contact: &Uri) -> Option<&str> {
        let want = contact_key(contact);
        self.map
            .iter()
            .find(|(_, l)| {
                l.iter().any(|b| {
                    b.expires_at > now
                        && Uri::try_from(b.contact.as_str()).is_ok_and(|u| contact_key(&u) == want)
                })
            })
            .map(|(aor, _)| aor.as_str())
    }

    /// Drops expired bindings.
    pub fn purge(&mut self, now: Instant) {
        self.map.retain(|_, l| {
            l.retain(|b| b.expires_at > now);
            !l.is_empty()
        });
    }
}

/// What identifies a Contact: its `ctok` parameter (the device token our
/// phones add, which survives the tunnel's removal of user parts, spec
/// 5.1) when it has one, else user, host and port.
fn contact_key(u: &Uri) -> String {
    let text = u.to_string();
    if let Some(tok) = crate::sip::message::uri_param(&text, "ctok").filter(|t| !t.is_empty()) {
        return format!("ctok:{tok}");
    }
    format!("{}@{}", u.user().unwrap_or(""), u.host_with_port).to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn b(contact: &str, cseq: u32, until: Instant) -> Binding {
        Binding {
            contact: contact.into(),
            flow: Dest::udp("127.0.0.1:5062".parse().unwrap()),
            expires_at: until,
            call_id: "c".into(),
            cseq,
            instance: None,
            reg_id: None,
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

    #[test]
    fn same_instance_and_reg_id_replace_the_old_flow() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut l = LocationService::new(10, 10);
        let with = |contact: &str, cseq: u32, port: u16| Binding {
            flow: Dest::udp(SocketAddr::from(([127, 0, 0, 1], port))),
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            ..b(contact, cseq, later)
        };
        l.update(t0, "a@x", with("sip:t1@127.0.0.1:1", 1, 1000))
            .unwrap();
        // The device came back on a new flow with a new Contact: the
        // old flow is named (requests under way to it are lost).
        assert_eq!(
            l.update(t0, "a@x", with("sip:t2@127.0.0.1:1", 2, 2000)),
            Ok(Some(Dest::udp(SocketAddr::from(([127, 0, 0, 1], 1000)))))
        );
        // A refresh on the same flow names none.
        assert_eq!(
            l.update(t0, "a@x", with("sip:t2@127.0.0.1:1", 3, 2000)),
            Ok(None)
        );
        let live = l.lookup(t0, "a@x");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].flow.addr.port(), 2000);
        let t2 = Uri::try_from("sip:t2@127.0.0.1:1").unwrap();
        let t1 = Uri::try_from("sip:t1@127.0.0.1:1").unwrap();
        assert_eq!(l.owner_of_contact(t0, &t2), Some("a@x"));
        assert_eq!(l.owner_of_contact(t0, &t1), None);
        assert!(l.flow_of_contact(t0, &t1).is_none());
        // A Contact with a `ctok` is found by it, also without its user
        // part (the tunnel strips it, spec 5.1); the token's case counts.
        l.update(t0, "a@x", with("sip:T3@127.0.0.1:1;ctok=T3", 4, 3000))
            .unwrap();
        let stripped = Uri::try_from("sip:127.0.0.1:1;ctok=T3").unwrap();
        let flow = l.flow_of_contact(t0, &stripped).unwrap();
        assert_eq!(flow.addr.port(), 3000);
        let other_case = Uri::try_from("sip:127.0.0.1:1;ctok=t3").unwrap();
        assert!(l.flow_of_contact(t0, &other_case).is_none());
    }
}
