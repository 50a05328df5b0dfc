//! The address book: named SIP addresses in `contacts.json`.

use super::dial::normalize;
use super::settings::{file_err, save_json};
use super::UiError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Display name, unique in the book.
    pub name: String,
    /// What to dial: `bob`, `bob@biloxi.com` or a SIP URI.
    pub address: String,
}

/// The contacts, kept sorted by name and saved after every change.
#[derive(Debug, Clone)]
pub struct ContactBook {
    path: PathBuf,
    contacts: Vec<Contact>,
}

impl ContactBook {
    /// Reads `path`; a missing file is an empty book.
    pub fn load(path: &Path) -> Result<Self, UiError> {
        let contacts = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| file_err(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(file_err(path, e)),
        };
        Ok(ContactBook {
            path: path.to_path_buf(),
            contacts,
        })
    }

    /// An empty book that saves to `path`.
    pub fn empty(path: &Path) -> Self {
        ContactBook {
            path: path.to_path_buf(),
            contacts: Vec::new(),
        }
    }

    /// The contacts, sorted by name.
    pub fn all(&self) -> &[Contact] {
        &self.contacts
    }

    /// The contact whose address is `uri` once both are normalized in
    /// `domain`.
    pub fn find_by_uri(&self, uri: &str, domain: &str) -> Option<&Contact> {
        let want = normalize(uri, domain).ok()?;
        self.contacts
            .iter()
            .find(|c| normalize(&c.address, domain).ok().as_deref() == Some(want.as_str()))
    }

    /// Adds a contact (name and address must be valid, the name new).
    pub fn add(&mut self, c: Contact, domain: &str) -> Result<(), UiError> {
        let c = check(c, domain)?;
        if self.contacts.iter().any(|x| x.name == c.name) {
            return Err(UiError::Input(format!(
                "There is already a contact named {}. Choose another name.",
                c.name
            )));
        }
        self.contacts.push(c);
        self.commit()
    }

    /// Replaces the contact named `old_name`.
    pub fn update(&mut self, old_name: &str, c: Contact, domain: &str) -> Result<(), UiError> {
        let c = check(c, domain)?;
        if c.name != old_name && self.contacts.iter().any(|x| x.name == c.name) {
            return Err(UiError::Input(format!(
                "There is already a contact named {}. Choose another name.",
                c.name
            )));
        }
        let slot = self
            .contacts
            .iter_mut()
            .find(|x| x.name == old_name)
            .ok_or_else(|| UiError::Input(format!("No contact named {old_name}.")))?;
        *slot = c;
        self.commit()
    }

    /// Removes the contact named `name` (no error when absent).
    pub fn remove(&mut self, name: &str) -> Result<(), UiError> {
        self.contacts.retain(|c| c.name != name);
        self.commit()
    }

    fn commit(&mut self) -> Result<(), UiError> {
        self.contacts.sort_by(|a, b| a.name.cmp(&b.name));
        save_json(&self.path, &self.contacts)
    }
}

fn check(c: Contact, domain: &str) -> Result<Contact, UiError> {
    let name = c.name.trim().to_string();
    let address = c.address.trim().to_string();
    if name.is_empty() {
        return Err(UiError::Input("Give the contact a name.".into()));
    }
    normalize(&address, domain).map_err(UiError::Input)?;
    Ok(Contact { name, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, address: &str) -> Contact {
        Contact {
            name: name.into(),
            address: address.into(),
        }
    }

    #[test]
    fn add_edit_remove_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.json");
        let d = "atlanta.invalid";
        let mut book = ContactBook::load(&path).unwrap();
        book.add(c("Carol", "carol@chicago.invalid"), d).unwrap();
        book.add(c("Bob", "bob"), d).unwrap();
        assert!(book.add(c("Bob", "bob2"), d).is_err(), "duplicate name");
        assert!(book.add(c("", "x"), d).is_err(), "empty name");
        assert!(book.add(c("X", "not an address@"), d).is_err());
        assert_eq!(book.all()[0].name, "Bob");
        book.update("Bob", c("Bobby", "sip:bob@biloxi.invalid"), d)
            .unwrap();
        assert!(book.update("Bobby", c("Carol", "x"), d).is_err());
        let again = ContactBook::load(&path).unwrap();
        assert_eq!(again.all(), book.all());
        assert_eq!(
            again
                .find_by_uri("sip:bob@biloxi.invalid", d)
                .map(|c| c.name.as_str()),
            Some("Bobby")
        );
        book.remove("Bobby").unwrap();
        assert_eq!(ContactBook::load(&path).unwrap().all().len(), 1);
    }
}
