//! [`SpiffeId`]: a strictly parsed `spiffe://<trust domain>/<path>` URI.
//!
//! The parser is hand-written on purpose: general URL parsers resolve `/a/../b`, decode
//! `%61`, lower-case hosts and drop empty ports, and each of those turns two different
//! strings into one identity. Here every accepted ID is already in its only spelling.

use std::fmt;
use std::str::FromStr;

use crate::trust_domain::{self, TrustDomain};
use crate::{MAX_ID_LEN, SCHEME, SpiffeIdError};

/// A valid SPIFFE ID; its text is exactly what was parsed, byte for byte.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    id: String,
}

impl SpiffeId {
    /// Parses a SPIFFE ID such as `spiffe://nico.local/demo/sa/web`.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        let trust_domain = check(id)?;
        Ok(Self {
            trust_domain,
            id: id.to_owned(),
        })
    }

    /// Builds an ID from parts the caller has already checked.
    pub(crate) fn from_checked_parts(trust_domain: TrustDomain, id: String) -> Self {
        Self { trust_domain, id }
    }

    /// The trust domain, e.g. `nico.local`.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path including its leading `/`, or `""` for a trust domain ID.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.trust_domain.as_str().len()..]
    }

    /// The path segments, in order; empty for a trust domain ID.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// The whole ID as text.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Consumes the ID and returns its text.
    pub fn into_string(self) -> String {
        self.id
    }

    /// Whether this ID names a workload, that is, has a non-empty path. Only workload IDs
    /// belong in an X.509 SVID.
    pub fn is_workload(&self) -> bool {
        !self.path().is_empty()
    }
}

/// Checks a whole ID and returns its trust domain.
fn check(id: &str) -> Result<TrustDomain, SpiffeIdError> {
    if id.is_empty() {
        return Err(SpiffeIdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(SpiffeIdError::TooLong { len: id.len() });
    }
    let Some(rest) = id.strip_prefix(SCHEME) else {
        return Err(SpiffeIdError::WrongScheme { id: id.to_owned() });
    };
    let (name, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain { id: id.to_owned() });
    }
    trust_domain::validate(name)?;
    validate_path(path)?;
    Ok(TrustDomain::from_validated(name))
}

/// Checks a path (`""` or `/seg/seg...`); offsets in errors are relative to `path`.
pub(crate) fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let mut offset = 0;
    for segment in path.split('/').skip(1) {
        // `offset` points at the '/' in front of this segment.
        check_segment(path, offset + 1, segment)?;
        offset += 1 + segment.len();
    }
    Ok(())
}

/// Checks one path segment that starts at byte `start` of `path`; `path` and the offsets are
/// only used to make the error point at the right place.
pub(crate) fn check_segment(path: &str, start: usize, segment: &str) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(if start == path.len() {
            SpiffeIdError::TrailingSlash {
                path: path.to_owned(),
            }
        } else {
            SpiffeIdError::EmptySegment {
                path: path.to_owned(),
                offset: start,
            }
        });
    }
    let dots = match segment {
        "." => Some("."),
        ".." => Some(".."),
        _ => None,
    };
    if let Some(segment) = dots {
        return Err(SpiffeIdError::DotSegment {
            path: path.to_owned(),
            segment,
            offset: start,
        });
    }
    match segment.char_indices().find(|&(_, ch)| !is_path_char(ch)) {
        None => Ok(()),
        Some((at, ch)) => Err(SpiffeIdError::PathChar {
            path: path.to_owned(),
            ch,
            offset: start + at,
            rule: path_rule(ch),
        }),
    }
}

pub(crate) fn is_path_char(ch: char) -> bool {
    matches!(ch, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')
}

fn path_rule(ch: char) -> &'static str {
    match ch {
        '%' => "percent-encoding is not allowed",
        '?' => "a query is not allowed",
        '#' => "a fragment is not allowed",
        _ => "only a-z, A-Z, 0-9, '.', '-' and '_' are allowed",
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let trust_domain = check(&id)?;
        Ok(Self { trust_domain, id })
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> Self {
        id.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
        assert_eq!(id.trust_domain().as_str(), "nico.local");
        assert_eq!(id.path(), "/demo/sa/web");
        assert_eq!(id.segments().collect::<Vec<_>>(), ["demo", "sa", "web"]);
        assert_eq!(id.as_str(), "spiffe://nico.local/demo/sa/web");
        assert_eq!(id.to_string(), id.as_str());
        assert!(id.is_workload());
        assert_eq!(
            format!("{id:?}"),
            "SpiffeId(\"spiffe://nico.local/demo/sa/web\")"
        );
        assert_eq!(String::from(id.clone()), id.into_string());

        let td = SpiffeId::parse("spiffe://nico.local").unwrap();
        assert_eq!(td.path(), "");
        assert_eq!(td.segments().count(), 0);
        assert!(!td.is_workload());
    }

    /// One row per rule: the input and the exact message a user will read.
    #[test]
    fn error_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                "spiffe id is empty: expected spiffe://<trust domain>/<path>",
            ),
            (
                "SPIFFE://td/a",
                "\"SPIFFE://td/a\" does not start with \"spiffe://\": \
              the scheme must be exactly spiffe://",
            ),
            (
                "spiffe:/td/a",
                "\"spiffe:/td/a\" does not start with \"spiffe://\": \
              the scheme must be exactly spiffe://",
            ),
            (
                "spiffe:///a",
                "spiffe id \"spiffe:///a\" has no trust domain: \
              expected spiffe://<trust domain>/<path>",
            ),
            (
                "spiffe://td:1/a",
                "invalid character ':' at byte 2 of trust domain \"td:1\": \
              a port is not allowed",
            ),
            (
                "spiffe://nico.local/demo/def%61ult",
                "invalid character '%' at byte 9 of path \
              \"/demo/def%61ult\": percent-encoding is not allowed",
            ),
            (
                "spiffe://td/a?x=1",
                "invalid character '?' at byte 2 of path \"/a?x=1\": \
              a query is not allowed",
            ),
            (
                "spiffe://td/a#f",
                "invalid character '#' at byte 2 of path \"/a#f\": \
              a fragment is not allowed",
            ),
            (
                "spiffe://td/a@b",
                "invalid character '@' at byte 2 of path \"/a@b\": \
              only a-z, A-Z, 0-9, '.', '-' and '_' are allowed",
            ),
            (
                "spiffe://td/",
                "path \"/\" ends with '/': a trailing slash is not allowed",
            ),
            (
                "spiffe://td/a/",
                "path \"/a/\" ends with '/': a trailing slash is not allowed",
            ),
            (
                "spiffe://td//a",
                "empty segment at byte 1 of path \"//a\": \
              segments must not be empty",
            ),
            (
                "spiffe://td/a//b",
                "empty segment at byte 3 of path \"/a//b\": \
              segments must not be empty",
            ),
            (
                "spiffe://td/a/../b",
                "segment \"..\" at byte 3 of path \"/a/../b\": \
              '.' and '..' segments are not allowed",
            ),
            (
                "spiffe://td/./a",
                "segment \".\" at byte 1 of path \"/./a\": \
              '.' and '..' segments are not allowed",
            ),
        ];
        for (input, expected) in cases {
            let err = SpiffeId::parse(input).unwrap_err().to_string();
            assert_eq!(&err, expected, "input {input:?}");
        }
    }

    #[test]
    fn dots_inside_segments_are_fine() {
        for id in [
            "spiffe://td/...",
            "spiffe://td/.a",
            "spiffe://td/a..b",
            "spiffe://td/a.",
        ] {
            assert!(SpiffeId::parse(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn length_limit_is_2048_bytes() {
        let prefix = "spiffe://td/";
        let at_limit = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(at_limit.len(), MAX_ID_LEN);
        assert!(SpiffeId::parse(&at_limit).is_ok());
        let over = format!("{at_limit}b");
        assert_eq!(
            SpiffeId::parse(&over).unwrap_err(),
            SpiffeIdError::TooLong { len: 2049 }
        );
    }

    #[test]
    fn owned_and_borrowed_constructors_agree() {
        let text = "spiffe://td/a/b";
        assert_eq!(
            SpiffeId::try_from(text.to_owned()),
            SpiffeId::try_from(text)
        );
        assert_eq!(text.parse::<SpiffeId>(), SpiffeId::parse(text));
        assert!(SpiffeId::try_from("spiffe://td/a%20".to_owned()).is_err());
    }
}
