//! [`TrustDomain`]: the authority part of a SPIFFE ID, lower case and never normalised.

use std::fmt;
use std::str::FromStr;

use crate::{MAX_TRUST_DOMAIN_LEN, SCHEME, SpiffeId, SpiffeIdError};

/// A trust domain name such as `nico.local`: 1 to 255 bytes of `[a-z0-9._-]`.
///
/// Upper case is refused rather than folded: two spellings of one trust domain must never
/// both be accepted, or an ID could match a policy in one place and miss it in another.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (without `spiffe://`).
    pub fn parse(name: &str) -> Result<Self, SpiffeIdError> {
        validate(name)?;
        Ok(Self(name.to_owned()))
    }

    /// Wraps a name that [`validate`] has already accepted.
    pub(crate) fn from_validated(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The trust domain name, e.g. `nico.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>`, which has no path and is
    /// therefore not a workload ID.
    pub fn id(&self) -> SpiffeId {
        SpiffeId::from_checked_parts(self.clone(), format!("{SCHEME}{}", self.0))
    }
}

/// Checks a trust domain name; offsets in errors are relative to `name`.
pub(crate) fn validate(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: name.len() });
    }
    // User info is reported first: in `user:pw@host` the ':' would otherwise be blamed on a
    // port, which sends the reader in the wrong direction.
    let bad = name.char_indices().find(|&(_, ch)| ch == '@').or_else(|| {
        name.char_indices()
            .find(|&(_, ch)| !is_trust_domain_char(ch))
    });
    match bad {
        None => Ok(()),
        Some((offset, ch)) => Err(SpiffeIdError::TrustDomainChar {
            trust_domain: name.to_owned(),
            ch,
            offset,
            rule: trust_domain_rule(ch),
        }),
    }
}

fn is_trust_domain_char(ch: char) -> bool {
    matches!(ch, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn trust_domain_rule(ch: char) -> &'static str {
    match ch {
        'A'..='Z' => "upper case is not allowed in a trust domain",
        '@' => "user info is not allowed",
        ':' => "a port is not allowed",
        '?' => "a query is not allowed",
        '#' => "a fragment is not allowed",
        '%' => "percent-encoding is not allowed",
        _ => "only a-z, 0-9, '.', '-' and '_' are allowed",
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(Self(s))
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        let td = TrustDomain::parse("a-b_c.d0-9").unwrap();
        assert_eq!(td.as_str(), "a-b_c.d0-9");
        assert_eq!(td.id().as_str(), "spiffe://a-b_c.d0-9");
        assert!(!td.id().is_workload());
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "trust domain is empty"),
            (
                "Nico.local",
                "invalid character 'N' at byte 0 of trust domain \"Nico.local\": \
              upper case is not allowed in a trust domain",
            ),
            (
                "td:443",
                "invalid character ':' at byte 2 of trust domain \"td:443\": \
              a port is not allowed",
            ),
            (
                "u:p@td",
                "invalid character '@' at byte 3 of trust domain \"u:p@td\": \
              user info is not allowed",
            ),
            (
                "t d",
                "invalid character ' ' at byte 1 of trust domain \"t d\": \
              only a-z, 0-9, '.', '-' and '_' are allowed",
            ),
            ("t%64", "percent-encoding is not allowed"),
            ("tö", "invalid character 'ö' at byte 1"),
            ("t/d", "invalid character '/' at byte 1"),
        ];
        for (input, fragment) in cases {
            let err = TrustDomain::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(fragment),
                "{input:?}: {err:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn length_limit_is_255_bytes() {
        let max = "a".repeat(MAX_TRUST_DOMAIN_LEN);
        assert!(TrustDomain::parse(&max).is_ok());
        let err = TrustDomain::parse(&format!("{max}a")).unwrap_err();
        assert_eq!(err, SpiffeIdError::TrustDomainTooLong { len: 256 });
    }

    #[test]
    fn owned_and_borrowed_constructors_agree() {
        assert_eq!(
            TrustDomain::try_from("x".to_owned()),
            TrustDomain::try_from("x")
        );
        assert!(TrustDomain::try_from("X".to_owned()).is_err());
        assert_eq!("x".parse::<TrustDomain>().unwrap().to_string(), "x");
        assert_eq!(
            format!("{:?}", TrustDomain::parse("x").unwrap()),
            "TrustDomain(\"x\")"
        );
    }
}
