//! Identifiers that are parsed once and then trusted.

use std::fmt;

/// A tenant's name: 1 to 63 lowercase ASCII letters, digits and `-`, not
/// starting or ending with `-`. It appears in the tenant's issuer URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a tenant name is 1 to 63 characters of lowercase letters, digits and '-', not starting or ending with '-'"
)]
pub struct InvalidTenantName;

impl TenantName {
    pub fn parse(name: &str) -> Result<Self, InvalidTenantName> {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if name.is_empty()
            || name.len() > 63
            || !valid_chars
            || name.starts_with('-')
            || name.ends_with('-')
        {
            return Err(InvalidTenantName);
        }
        Ok(TenantName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client identifier (RFC 6749 §2.2). Tessera generates them; they are
/// public, unique across the deployment and opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps an identifier received from a request or read from storage.
    /// Identifiers are compared exactly, so no normalisation happens here.
    pub fn new(id: impl Into<String>) -> Self {
        ClientId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(TenantName::parse("acme").is_ok());
        assert!(TenantName::parse("acme-2").is_ok());
        for bad in ["", "-a", "a-", "Acme", "a_b", "a/b", "é", &"a".repeat(64)] {
            assert_eq!(TenantName::parse(bad), Err(InvalidTenantName), "{bad}");
        }
    }
}
