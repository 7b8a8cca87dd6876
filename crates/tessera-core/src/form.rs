//! Strict parsing of `application/x-www-form-urlencoded` data (request bodies
//! and query strings).
//!
//! Hand-written because the common parsers decode invalid UTF-8 lossily and
//! merge or silently drop repeated names, while OAuth needs both to be errors:
//! RFC 6749 §3.1 and §3.2 say request parameters MUST NOT be included more than once.

use percent_encoding::percent_decode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("the form is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("parameter '{0}' is repeated")]
    Repeated(String),
}

/// The decoded name/value pairs of a form, in order.
#[derive(Debug, Default, Clone)]
pub struct FormParams(Vec<(String, String)>);

impl FormParams {
    pub fn parse(input: &[u8]) -> Result<Self, FormError> {
        let mut pairs = Vec::new();
        for part in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            pairs.push((decode_component(name)?, decode_component(value)?));
        }
        Ok(FormParams(pairs))
    }

    /// The single value of `name`. RFC 6749 §3.1: a parameter sent without a
    /// value is treated as omitted; a repeated parameter is an error.
    pub fn single(&self, name: &str) -> Result<Option<&str>, FormError> {
        let mut found = None;
        for (n, v) in &self.0 {
            if n == name && !v.is_empty() {
                if found.is_some() {
                    return Err(FormError::Repeated(name.to_owned()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// Every non-empty value of `name` (for checkbox lists).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order, as sent (empty and repeated ones included).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The first name that appears with a value more than once, if any.
    pub fn first_repeated(&self) -> Option<&str> {
        let mut seen = std::collections::HashSet::new();
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .find(|(n, _)| !seen.insert(n.as_str()))
            .map(|(n, _)| n.as_str())
    }
}

/// Decodes one name or value: `+` is a space, then percent-decoding, and the
/// result must be UTF-8. Also the encoding of the client id and secret in an
/// HTTP Basic header (RFC 6749 §2.3.1).
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    // Most components have no `+`: they are decoded straight into the
    // String, one allocation on the hot path of every token request.
    let with_spaces: Vec<u8>;
    let raw = if raw.contains(&b'+') {
        with_spaces = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        &with_spaces[..]
    } else {
        raw
    };
    // Decoded into a buffer of the encoded length, which the result never
    // exceeds: `decode_utf8` grows its copy of a component with a `%` in it
    // by `realloc`s, each of which takes a lock of the allocator.
    let mut decoded = Vec::with_capacity(raw.len());
    decoded.extend(percent_decode(raw));
    String::from_utf8(decoded).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent() {
        let form = FormParams::parse(b"a=b+c&d=%2F%20x&empty=").unwrap();
        assert_eq!(form.single("a").unwrap(), Some("b c"));
        assert_eq!(form.single("d").unwrap(), Some("/ x"));
        assert_eq!(form.single("empty").unwrap(), None);
        assert_eq!(form.single("missing").unwrap(), None);
        // With and without a `+`: the two paths of `decode_component`.
        assert_eq!(decode_component(b"a+%2Bb").unwrap(), "a +b");
        assert_eq!(decode_component(b"a%2Bb").unwrap(), "a+b");
        assert_eq!(decode_component(b"plain").unwrap(), "plain");
        assert_eq!(decode_component(b"+%FF"), Err(FormError::NotUtf8));
    }

    #[test]
    fn repeated_is_an_error() {
        let form = FormParams::parse(b"a=1&a=2&b=1&b=").unwrap();
        assert_eq!(form.single("a"), Err(FormError::Repeated("a".into())));
        assert_eq!(form.single("b").unwrap(), Some("1"));
        assert_eq!(form.first_repeated(), Some("a"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(FormParams::parse(b"a=%FF").unwrap_err(), FormError::NotUtf8);
        assert_eq!(
            FormParams::parse(b"a=\xff").unwrap_err(),
            FormError::NotUtf8
        );
    }
}
