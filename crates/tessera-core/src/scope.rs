//! Scopes (RFC 6749 §3.3).

use std::collections::BTreeSet;
use std::fmt;

/// One scope token: `1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a scope is one or more printable ASCII characters other than space, '\"' and '\\'")]
pub struct InvalidScope;

impl Scope {
    pub fn parse(token: &str) -> Result<Self, InvalidScope> {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let valid = !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if valid {
            Ok(Scope(token.to_owned()))
        } else {
            Err(InvalidScope)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes; its text form is the space-delimited list of RFC 6749 §3.3,
/// in a stable (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-delimited scope list. Repeated spaces are tolerated;
    /// an empty string is the empty set.
    pub fn parse(list: &str) -> Result<Self, InvalidScope> {
        list.split(' ')
            .filter(|token| !token.is_empty())
            .map(Scope::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(ScopeSet)
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        ScopeSet(scopes.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sorted() {
        let set = ScopeSet::parse("write  read").unwrap();
        assert_eq!(set.to_string(), "read write");
        assert!(ScopeSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_forbidden_characters() {
        assert_eq!(ScopeSet::parse("a\"b"), Err(InvalidScope));
        assert_eq!(ScopeSet::parse("a\\b"), Err(InvalidScope));
        assert_eq!(ScopeSet::parse("caf\u{e9}"), Err(InvalidScope));
        assert_eq!(ScopeSet::parse("tab\there"), Err(InvalidScope));
    }

    #[test]
    fn subset_and_intersection() {
        let all = ScopeSet::parse("a b c").unwrap();
        let some = ScopeSet::parse("b z").unwrap();
        assert!(!some.is_subset_of(&all));
        assert_eq!(some.intersection(&all).to_string(), "b");
    }
}
