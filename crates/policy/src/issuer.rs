//! [`IssuerName`]: an issuer reference with cert-manager's defaults applied, so that two
//! spellings of one issuer compare equal.

use std::fmt;

/// The kind an issuer reference means when it names none.
pub const DEFAULT_ISSUER_KIND: &str = "Issuer";

/// The API group an issuer reference means when it names none.
pub const DEFAULT_ISSUER_GROUP: &str = "cert-manager.io";

/// An issuer's name, kind and group, with an absent or empty kind read as
/// [`DEFAULT_ISSUER_KIND`] and an absent or empty group as [`DEFAULT_ISSUER_GROUP`], as
/// cert-manager reads them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IssuerName {
    name: String,
    kind: String,
    group: String,
}

impl IssuerName {
    /// The issuer `name` of `kind` in `group`, defaults applied.
    pub fn new(name: impl Into<String>, kind: Option<&str>, group: Option<&str>) -> Self {
        let or_default = |value: Option<&str>, default: &str| match value {
            None | Some("") => default.to_owned(),
            Some(value) => value.to_owned(),
        };
        Self {
            name: name.into(),
            kind: or_default(kind, DEFAULT_ISSUER_KIND),
            group: or_default(group, DEFAULT_ISSUER_GROUP),
        }
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind, never empty.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The API group, never empty.
    pub fn group(&self) -> &str {
        &self.group
    }
}

impl fmt::Display for IssuerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}/{}", self.kind, self.group, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_spellings_equal() {
        let full = IssuerName::new("ca", Some("Issuer"), Some("cert-manager.io"));
        for (kind, group) in [(None, None), (Some(""), Some("")), (None, Some(""))] {
            assert_eq!(IssuerName::new("ca", kind, group), full);
        }
        assert_ne!(IssuerName::new("ca", Some("ClusterIssuer"), None), full);
        assert_eq!(full.to_string(), "Issuer.cert-manager.io/ca");
    }
}
