//! Tenant identifiers: validated once, safe to use as a directory name.

use std::fmt;

use crate::error::InvalidInput;

/// The longest tenant id accepted, in bytes. The segment header reserves exactly this much.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant's name, checked once at construction.
///
/// Allowed: 1 to [`MAX_TENANT_LEN`] bytes of ASCII letters, digits, `_`, `-` and `.`, not
/// starting with `.` (so never `.`, `..` or a hidden file) and never containing `/`. Anything
/// that passes is safe as a single path component on every file system we support.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(name))
    }

    /// The tenant id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), InvalidInput> {
    let bad = |reason: &'static str| InvalidInput::TenantId {
        tenant: name.chars().take(80).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_TENANT_LEN {
        return Err(bad("it is longer than 64 bytes"));
    }
    if name.starts_with('.') {
        return Err(bad("it starts with '.'"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.chars().all(ok) {
        return Err(bad(
            "only ASCII letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", self.0)
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_that_could_escape_a_directory_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\\b", "a b", "é"] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(TenantId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn ordinary_tenant_ids_are_accepted() {
        for good in ["a", "team-a", "edge_01.eu", &"x".repeat(64)] {
            assert_eq!(TenantId::new(good).expect("valid").as_str(), good);
        }
    }
}
