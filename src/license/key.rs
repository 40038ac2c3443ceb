//! The portal key an admin pastes: grouped, case-insensitive, with a check
//! character so that a typo is caught before any network call.

use std::fmt;

/// A portal key in canonical form (upper case, no separators).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PortalKey(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the PBX key is empty")]
    Empty,
}

impl PortalKey {
    /// A new random key (the portal issues these).
    pub fn generate() -> PortalKey {
        unimplemented!()
    }
    /// Reads a key as pasted: any case, spaces, dashes and line breaks allowed.
    pub fn parse(input: &str) -> Result<PortalKey, KeyError> {
        let _ = input;
        unimplemented!()
    }
    /// Canonical, without separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Only the last group, for logs and output.
    pub fn redacted(&self) -> String {
        unimplemented!()
    }
}

impl fmt::Display for PortalKey {
    /// Grouped for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        unimplemented!()
    }
}

impl fmt::Debug for PortalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortalKey({})", self.redacted())
    }
}
