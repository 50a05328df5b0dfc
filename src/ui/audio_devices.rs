//! The sound devices that Settings offers: the names of the default cpal
//! host's microphones and speakers, plus "system default". Listing them can
//! take seconds (ALSA probes every card), so it runs once on its own thread
//! when the settings are first shown, and the window is woken when it ends.
//! A machine without devices, a build without the `audio` feature, or a
//! listing that fails gives only the default and a short note: never a
//! panic, never a blocked window.

use std::sync::mpsc;

/// The choice that leaves the device to the system (stored as `None`).
pub const SYSTEM_DEFAULT: &str = "system default";

/// What the settings can offer, besides [`SYSTEM_DEFAULT`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceList {
    /// Microphones by name, in the host's order, without repeats.
    pub inputs: Vec<String>,
    /// Speakers by name, in the host's order, without repeats.
    pub outputs: Vec<String>,
    /// A short sentence when a direction has no device or could not be listed.
    pub note: Option<String>,
}

impl DeviceList {
    /// The list from the two enumeration results (names, or why not).
    pub fn from_results(
        inputs: Result<Vec<String>, String>,
        outputs: Result<Vec<String>, String>,
    ) -> Self {
        let mut notes = Vec::new();
        let mut take = |r: Result<Vec<String>, String>, what: &str| match r {
            Ok(names) => {
                let mut out: Vec<String> = Vec::new();
                for n in names.into_iter().filter(|n| !n.trim().is_empty()) {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
                if out.is_empty() {
                    notes.push(format!("no {what} found"));
                }
                out
            }
            Err(why) => {
                notes.push(format!("{what} could not be listed ({why})"));
                Vec::new()
            }
        };
        let inputs = take(inputs, "microphones");
        let outputs = take(outputs, "speakers");
        let note = (!notes.is_empty()).then(|| {
            let s = notes.join("; ");
            let mut chars = s.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            format!(
                "{}{}: the system default is used.",
                first.unwrap_or_default(),
                chars.as_str()
            )
        });
        DeviceList {
            inputs,
            outputs,
            note,
        }
    }

    /// Only the default, with `note` saying why.
    pub fn only_default(note: impl Into<String>) -> Self {
        DeviceList {
            note: Some(note.into()),
            ..DeviceList::default()
        }
    }
}

/// Lists the default host's devices. Blocking: call it off the UI thread.
#[cfg(feature = "audio")]
pub fn enumerate() -> DeviceList {
    use cpal::traits::{DeviceTrait, HostTrait};
    fn names<E: std::fmt::Display>(
        devices: Result<impl Iterator<Item = cpal::Device>, E>,
    ) -> Result<Vec<String>, String> {
        devices
            .map(|devs| {
                devs.filter_map(|d| d.description().ok().map(|d| d.name().to_string()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }
    let host = cpal::default_host();
    DeviceList::from_results(names(host.input_devices()), names(host.output_devices()))
}

/// Without the `audio` feature there is no sound card to list.
#[cfg(not(feature = "audio"))]
pub fn enumerate() -> DeviceList {
    DeviceList::only_default("This ibephone was built without sound support.")
}

/// Where the listing is.
#[derive(Debug, Default)]
pub enum Devices {
    /// Not asked for yet.
    #[default]
    NotListed,
    /// A thread is listing.
    Listing(mpsc::Receiver<DeviceList>),
    /// Done.
    Listed(DeviceList),
}

impl Devices {
    /// Starts [`enumerate`] on a thread unless a listing exists or runs;
    /// `wake` is called when it ends.
    pub fn start(&mut self, wake: impl Fn() + Send + 'static) {
        self.start_with(enumerate, wake);
    }

    /// As [`Devices::start`], listing with `list` (tests give a fake one).
    pub fn start_with(
        &mut self,
        list: impl FnOnce() -> DeviceList + Send + 'static,
        wake: impl Fn() + Send + 'static,
    ) {
        if !matches!(self, Devices::NotListed) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("ibephone-devices".into())
            .spawn(move || {
                let _ = tx.send(list());
                wake();
            });
        *self = match spawned {
            Ok(_) => Devices::Listing(rx),
            Err(e) => Devices::Listed(DeviceList::only_default(format!(
                "The sound devices could not be listed ({e}): the system default is used."
            ))),
        };
    }

    /// Takes a finished listing. A listing thread that died (a panic in
    /// the sound system) gives only the default and a note.
    pub fn poll(&mut self) {
        if let Devices::Listing(rx) = self {
            match rx.try_recv() {
                Ok(list) => *self = Devices::Listed(list),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    *self = Devices::Listed(DeviceList::only_default(
                        "The sound system failed while listing devices: the system default is used.",
                    ))
                }
            }
        }
    }

    /// The list, once done.
    pub fn list(&self) -> Option<&DeviceList> {
        match self {
            Devices::Listed(l) => Some(l),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait(d: &mut Devices) -> DeviceList {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            d.poll();
            if let Some(l) = d.list() {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "the listing did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn results_map_to_names_and_notes() {
        let l = DeviceList::from_results(
            Ok(vec![
                "USB Mic".into(),
                "USB Mic".into(),
                " ".into(),
                "Jack".into(),
            ]),
            Ok(vec!["Speakers".into()]),
        );
        assert_eq!(l.inputs, ["USB Mic", "Jack"]);
        assert_eq!(l.outputs, ["Speakers"]);
        assert_eq!(l.note, None);
        let l = DeviceList::from_results(Ok(vec![]), Err("ALSA: no card".into()));
        assert!(l.inputs.is_empty() && l.outputs.is_empty());
        assert_eq!(
            l.note.as_deref(),
            Some("No microphones found; speakers could not be listed (ALSA: no card): the system default is used.")
        );
    }

    #[test]
    fn the_real_enumeration_never_panics() {
        // Whatever this machine has (often nothing in CI): a list, and a
        // note exactly when a direction is empty.
        let mut d = Devices::NotListed;
        d.start(|| {});
        let l = wait(&mut d);
        assert_eq!(
            l.note.is_some(),
            l.inputs.is_empty() || l.outputs.is_empty(),
            "{l:?}"
        );
    }

    #[test]
    fn a_failed_listing_leaves_only_the_default() {
        let mut d = Devices::NotListed;
        d.start_with(|| panic!("sound system exploded"), || {});
        let l = wait(&mut d);
        assert!(l.inputs.is_empty() && l.outputs.is_empty());
        assert!(l.note.unwrap().contains("failed while listing"));
        // Listed once: a second start does not list again.
        let mut d = Devices::Listed(DeviceList::default());
        d.start_with(|| DeviceList::only_default("again"), || {});
        assert_eq!(d.list(), Some(&DeviceList::default()));
    }
}
