//! [`IdTemplate`]: the configured shape of workload IDs, rendered and matched both ways.
//!
//! A template is parsed once, at configuration time, into literal and placeholder segments.
//! Rendering fills in a namespace and a service account; matching is the exact inverse and
//! never guesses, so the approver and the node driver agree on every ID.

use std::fmt;
use std::str::FromStr;

use crate::id::{check_segment, is_path_char};
use crate::trust_domain::{self, TrustDomain};
use crate::{MAX_ID_LEN, SCHEME, SpiffeId, SpiffeIdError};

/// The ID shape nico-identity issues by default: `spiffe://<td>/<namespace>/sa/<account>`.
pub const DEFAULT_TEMPLATE: &str = "spiffe://{trust_domain}/{namespace}/sa/{service_account}";

/// The shape cert-manager-csi-driver-spiffe issues, for drop-in migrations.
pub const CERT_MANAGER_TEMPLATE: &str =
    "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}";

/// A value that a template substitutes into an ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{trust_domain}`: the whole trust domain, or a path segment holding its name.
    TrustDomain,
    /// `{namespace}`: the Kubernetes namespace of the workload.
    Namespace,
    /// `{service_account}`: the Kubernetes service account of the workload.
    ServiceAccount,
}

impl Placeholder {
    /// The placeholder as written in a template, braces included.
    pub fn token(self) -> &'static str {
        match self {
            Self::TrustDomain => "{trust_domain}",
            Self::Namespace => "{namespace}",
            Self::ServiceAccount => "{service_account}",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "trust_domain" => Some(Self::TrustDomain),
            "namespace" => Some(Self::Namespace),
            "service_account" => Some(Self::ServiceAccount),
            _ => None,
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Why a template string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template does not start with `spiffe://`.
    #[error("template {template:?} does not start with \"spiffe://\"")]
    WrongScheme {
        /// The presented template.
        template: String,
    },

    /// Nothing stands where the trust domain belongs.
    #[error(
        "template {template:?} has no trust domain: expected {{trust_domain}} or a trust domain \
         name after spiffe://"
    )]
    MissingTrustDomain {
        /// The presented template.
        template: String,
    },

    /// A `{...}` name that is not one of the three placeholders.
    #[error(
        "unknown placeholder {{{name}}} in template {template:?}: expected {{trust_domain}}, \
         {{namespace}} or {{service_account}}"
    )]
    UnknownPlaceholder {
        /// The presented template.
        template: String,
        /// The name between the braces.
        name: String,
    },

    /// A segment mixes a placeholder with literal text, or has unbalanced braces.
    #[error(
        "segment {segment:?} of template {template:?} mixes a placeholder with other text: \
         a placeholder must be a whole path segment or the whole trust domain"
    )]
    MixedSegment {
        /// The presented template.
        template: String,
        /// The offending segment (or trust domain part).
        segment: String,
    },

    /// A placeholder other than `{trust_domain}` stands for the trust domain.
    #[error(
        "{placeholder} cannot stand for the trust domain in template {template:?}: \
         only {{trust_domain}} can"
    )]
    MisplacedPlaceholder {
        /// The presented template.
        template: String,
        /// The misplaced placeholder.
        placeholder: Placeholder,
    },

    /// `{namespace}` or `{service_account}` is absent. Both are required: without them
    /// several workloads would share one identity.
    #[error("template {template:?} lacks {placeholder}: every workload needs its own ID")]
    MissingPlaceholder {
        /// The presented template.
        template: String,
        /// The placeholder that does not appear.
        placeholder: Placeholder,
    },

    /// The literal trust domain is not a valid trust domain.
    #[error("template {template:?} has an invalid trust domain")]
    InvalidTrustDomain {
        /// The presented template.
        template: String,
        /// What is wrong with it.
        #[source]
        reason: SpiffeIdError,
    },

    /// A literal path segment is not a valid SPIFFE path segment.
    #[error("template {template:?} has an invalid path")]
    InvalidPath {
        /// The presented template.
        template: String,
        /// What is wrong with it.
        #[source]
        reason: SpiffeIdError,
    },
}

/// Why a template could not be rendered for a given workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A namespace or service account was the empty string.
    #[error("{placeholder} is empty: a path segment needs at least one character")]
    EmptyValue {
        /// Which value was empty.
        placeholder: Placeholder,
    },

    /// A value was `.` or `..`.
    #[error("{placeholder} value {value:?} is a dot segment: '.' and '..' are not allowed")]
    DotValue {
        /// Which value was refused.
        placeholder: Placeholder,
        /// The presented value.
        value: String,
    },

    /// A value holds a character that a path segment may not contain.
    #[error(
        "invalid character {ch:?} at byte {offset} of {placeholder} value {value:?}: \
         only a-z, A-Z, 0-9, '.', '-' and '_' are allowed"
    )]
    InvalidValueChar {
        /// Which value was refused.
        placeholder: Placeholder,
        /// The presented value.
        value: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset inside the value.
        offset: usize,
    },

    /// The template names a fixed trust domain and a different one was asked for.
    #[error("template is fixed to trust domain {fixed}, cannot render for {requested}")]
    TrustDomainMismatch {
        /// The trust domain written in the template.
        fixed: TrustDomain,
        /// The trust domain passed to `render`.
        requested: TrustDomain,
    },

    /// The rendered ID would be longer than [`MAX_ID_LEN`] bytes.
    #[error("rendered spiffe id would be {len} bytes long: at most 2048 bytes are allowed")]
    TooLong {
        /// Length the ID would have had.
        len: usize,
    },
}

/// The workload a SPIFFE ID was rendered for, recovered by [`IdTemplate::match_id`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadRef {
    /// Trust domain of the ID.
    pub trust_domain: TrustDomain,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account name.
    pub service_account: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Authority {
    Placeholder,
    Fixed(TrustDomain),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// A parsed ID template such as [`DEFAULT_TEMPLATE`]; `Display` gives the source back.
#[derive(Clone, PartialEq, Eq)]
pub struct IdTemplate {
    source: String,
    authority: Authority,
    segments: Vec<Segment>,
}

impl IdTemplate {
    /// Parses a template. Each placeholder must fill a whole path segment (or, for
    /// `{trust_domain}`, the whole trust domain); literal parts follow the SPIFFE ID rules.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let Some(rest) = template.strip_prefix(SCHEME) else {
            return Err(TemplateError::WrongScheme {
                template: template.to_owned(),
            });
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority = parse_authority(template, authority)?;

        let mut segments = Vec::new();
        let mut start = 0;
        for text in path.split('/').skip(1) {
            start += 1;
            segments.push(parse_segment(template, path, start, text)?);
            start += text.len();
        }
        // "." and ".." are valid trust domains but not path segments: a fixed trust domain
        // repeated in the path must be a segment too.
        let in_path = segments.contains(&Segment::Placeholder(Placeholder::TrustDomain));
        if let Authority::Fixed(fixed) = &authority
            && in_path
        {
            check_segment(fixed.as_str(), 0, fixed.as_str()).map_err(|reason| {
                TemplateError::InvalidPath {
                    template: template.to_owned(),
                    reason,
                }
            })?;
        }
        for required in [Placeholder::Namespace, Placeholder::ServiceAccount] {
            if !segments.contains(&Segment::Placeholder(required)) {
                return Err(TemplateError::MissingPlaceholder {
                    template: template.to_owned(),
                    placeholder: required,
                });
            }
        }
        Ok(Self {
            source: template.to_owned(),
            authority,
            segments,
        })
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The trust domain written literally in the template, if it does not use
    /// `{trust_domain}` for it.
    pub fn fixed_trust_domain(&self) -> Option<&TrustDomain> {
        match &self.authority {
            Authority::Placeholder => None,
            Authority::Fixed(td) => Some(td),
        }
    }

    /// Renders the ID of a workload. `namespace` and `service_account` must each be a valid
    /// path segment; nothing is escaped or normalised.
    pub fn render(
        &self,
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, RenderError> {
        if let Authority::Fixed(fixed) = &self.authority
            && fixed != trust_domain
        {
            return Err(RenderError::TrustDomainMismatch {
                fixed: fixed.clone(),
                requested: trust_domain.clone(),
            });
        }
        check_value(Placeholder::Namespace, namespace)?;
        check_value(Placeholder::ServiceAccount, service_account)?;
        if self
            .segments
            .contains(&Segment::Placeholder(Placeholder::TrustDomain))
        {
            check_value(Placeholder::TrustDomain, trust_domain.as_str())?;
        }

        let mut id = format!("{SCHEME}{trust_domain}");
        for segment in &self.segments {
            id.push('/');
            id.push_str(match segment {
                Segment::Literal(text) => text,
                Segment::Placeholder(Placeholder::TrustDomain) => trust_domain.as_str(),
                Segment::Placeholder(Placeholder::Namespace) => namespace,
                Segment::Placeholder(Placeholder::ServiceAccount) => service_account,
            });
        }
        if id.len() > MAX_ID_LEN {
            return Err(RenderError::TooLong { len: id.len() });
        }
        // The trust domain is valid by type, every segment was checked above or at parse
        // time, and the length was just checked: the text is a valid ID.
        Ok(SpiffeId::from_checked_parts(trust_domain.clone(), id))
    }

    /// Recovers the workload an ID was rendered for, or `None` when the ID does not have
    /// this template's shape. Literal segments must match byte for byte, and a placeholder
    /// used twice must have the same value both times.
    pub fn match_id(&self, id: &SpiffeId) -> Option<WorkloadRef> {
        let trust_domain = id.trust_domain();
        if let Authority::Fixed(fixed) = &self.authority
            && fixed != trust_domain
        {
            return None;
        }
        let mut namespace = None;
        let mut service_account = None;
        let mut presented = id.segments();
        for expected in &self.segments {
            let value = presented.next()?;
            let slot = match expected {
                Segment::Literal(text) if text == value => continue,
                Segment::Literal(_) => return None,
                Segment::Placeholder(Placeholder::TrustDomain)
                    if value == trust_domain.as_str() =>
                {
                    continue;
                }
                Segment::Placeholder(Placeholder::TrustDomain) => return None,
                Segment::Placeholder(Placeholder::Namespace) => &mut namespace,
                Segment::Placeholder(Placeholder::ServiceAccount) => &mut service_account,
            };
            match slot {
                Some(earlier) if *earlier != value => return None,
                Some(_) => {}
                None => *slot = Some(value),
            }
        }
        if presented.next().is_some() {
            return None;
        }
        Some(WorkloadRef {
            trust_domain: trust_domain.clone(),
            namespace: namespace?.to_owned(),
            service_account: service_account?.to_owned(),
        })
    }
}

fn parse_authority(template: &str, text: &str) -> Result<Authority, TemplateError> {
    if text.is_empty() {
        return Err(TemplateError::MissingTrustDomain {
            template: template.to_owned(),
        });
    }
    match placeholder_in(template, text)? {
        Some(Placeholder::TrustDomain) => Ok(Authority::Placeholder),
        Some(placeholder) => Err(TemplateError::MisplacedPlaceholder {
            template: template.to_owned(),
            placeholder,
        }),
        None => match trust_domain::validate(text) {
            Ok(()) => Ok(Authority::Fixed(TrustDomain::from_validated(text))),
            Err(reason) => Err(TemplateError::InvalidTrustDomain {
                template: template.to_owned(),
                reason,
            }),
        },
    }
}

fn parse_segment(
    template: &str,
    path: &str,
    start: usize,
    text: &str,
) -> Result<Segment, TemplateError> {
    if let Some(placeholder) = placeholder_in(template, text)? {
        return Ok(Segment::Placeholder(placeholder));
    }
    match check_segment(path, start, text) {
        Ok(()) => Ok(Segment::Literal(text.to_owned())),
        Err(reason) => Err(TemplateError::InvalidPath {
            template: template.to_owned(),
            reason,
        }),
    }
}

/// `Some` when `text` is exactly one placeholder, `None` when it holds no brace at all.
fn placeholder_in(template: &str, text: &str) -> Result<Option<Placeholder>, TemplateError> {
    if !text.contains(['{', '}']) {
        return Ok(None);
    }
    let name = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .filter(|name| !name.contains(['{', '}']));
    let Some(name) = name else {
        return Err(TemplateError::MixedSegment {
            template: template.to_owned(),
            segment: text.to_owned(),
        });
    };
    match Placeholder::from_name(name) {
        Some(placeholder) => Ok(Some(placeholder)),
        None => Err(TemplateError::UnknownPlaceholder {
            template: template.to_owned(),
            name: name.to_owned(),
        }),
    }
}

fn check_value(placeholder: Placeholder, value: &str) -> Result<(), RenderError> {
    if value.is_empty() {
        return Err(RenderError::EmptyValue { placeholder });
    }
    if value == "." || value == ".." {
        return Err(RenderError::DotValue {
            placeholder,
            value: value.to_owned(),
        });
    }
    match value.char_indices().find(|&(_, ch)| !is_path_char(ch)) {
        None => Ok(()),
        Some((offset, ch)) => Err(RenderError::InvalidValueChar {
            placeholder,
            value: value.to_owned(),
            ch,
            offset,
        }),
    }
}

impl Default for IdTemplate {
    fn default() -> Self {
        // invariant: DEFAULT_TEMPLATE is a valid template; `default_templates_parse` tests it.
        Self::parse(DEFAULT_TEMPLATE).expect("DEFAULT_TEMPLATE parses")
    }
}

impl fmt::Display for IdTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for IdTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdTemplate({:?})", self.source)
    }
}

impl FromStr for IdTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for IdTemplate {
    type Error = TemplateError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::parse(name).unwrap()
    }

    fn id(text: &str) -> SpiffeId {
        SpiffeId::parse(text).unwrap()
    }

    #[test]
    fn default_templates_parse() {
        for source in [DEFAULT_TEMPLATE, CERT_MANAGER_TEMPLATE] {
            let template = IdTemplate::parse(source).unwrap();
            assert_eq!(template.to_string(), source);
            assert_eq!(template.as_str(), source);
            assert_eq!(template.fixed_trust_domain(), None);
        }
        assert_eq!(IdTemplate::default().as_str(), DEFAULT_TEMPLATE);
        assert_eq!(
            format!("{:?}", IdTemplate::default()),
            format!("IdTemplate({DEFAULT_TEMPLATE:?})")
        );
    }

    #[test]
    fn renders_and_matches_both_shapes() {
        let nico = IdTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        let cm = IdTemplate::parse(CERT_MANAGER_TEMPLATE).unwrap();
        let local = td("nico.local");

        let rendered = nico.render(&local, "demo", "web").unwrap();
        assert_eq!(rendered.as_str(), "spiffe://nico.local/demo/sa/web");
        let rendered_cm = cm.render(&local, "demo", "web").unwrap();
        assert_eq!(rendered_cm.as_str(), "spiffe://nico.local/ns/demo/sa/web");

        let expected = WorkloadRef {
            trust_domain: local.clone(),
            namespace: "demo".into(),
            service_account: "web".into(),
        };
        assert_eq!(nico.match_id(&rendered), Some(expected.clone()));
        assert_eq!(cm.match_id(&rendered_cm), Some(expected));
        // The other shape must not be mistaken for this one.
        assert_eq!(nico.match_id(&rendered_cm), None);
        assert_eq!(cm.match_id(&rendered), None);
    }

    #[test]
    fn match_id_is_strict() {
        let template = IdTemplate::parse(CERT_MANAGER_TEMPLATE).unwrap();
        for text in [
            "spiffe://td/ns/a/sa",
            "spiffe://td/ns/a/sa/b/c",
            "spiffe://td/NS/a/sa/b",
            "spiffe://td/ns/a/SA/b",
            "spiffe://td",
        ] {
            assert_eq!(template.match_id(&id(text)), None, "{text}");
        }
        assert!(
            template
                .match_id(&id("spiffe://other.td/ns/a/sa/b"))
                .is_some()
        );
    }

    #[test]
    fn fixed_trust_domain_and_repeated_placeholders() {
        let template = IdTemplate::parse(
            "spiffe://corp.example/{trust_domain}/{namespace}/{service_account}/{namespace}",
        )
        .unwrap();
        assert_eq!(template.fixed_trust_domain(), Some(&td("corp.example")));
        let corp = td("corp.example");
        let rendered = template.render(&corp, "a", "b").unwrap();
        assert_eq!(
            rendered.as_str(),
            "spiffe://corp.example/corp.example/a/b/a"
        );
        assert!(template.match_id(&rendered).is_some());
        assert_eq!(
            template.match_id(&id("spiffe://corp.example/corp.example/a/b/c")),
            None
        );
        assert_eq!(
            template.match_id(&id("spiffe://corp.example/other/a/b/a")),
            None
        );
        assert_eq!(
            template.match_id(&id("spiffe://other.example/corp.example/a/b/a")),
            None
        );
        assert_eq!(
            template
                .render(&td("other"), "a", "b")
                .unwrap_err()
                .to_string(),
            "template is fixed to trust domain corp.example, cannot render for other"
        );
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "spife://{trust_domain}/{namespace}/{service_account}",
                "does not start with",
            ),
            (
                "spiffe:///{namespace}/{service_account}",
                "has no trust domain",
            ),
            (
                "spiffe://{trust_domain}/{ns}/{service_account}",
                "unknown placeholder {ns} in",
            ),
            (
                "spiffe://{trust_domain}/{}/{namespace}/{service_account}",
                "unknown placeholder {}",
            ),
            (
                "spiffe://{trust_domain}/ns-{namespace}/{service_account}",
                "segment \"ns-{namespace}\"",
            ),
            (
                "spiffe://{trust_domain}/{namespace/{service_account}",
                "mixes a placeholder",
            ),
            (
                "spiffe://{trust_domain}/{{namespace}}/{service_account}",
                "mixes a placeholder",
            ),
            (
                "spiffe://{trust_domain}.x/{namespace}/{service_account}",
                "mixes a placeholder",
            ),
            (
                "spiffe://{namespace}/{namespace}/{service_account}",
                "{namespace} cannot stand",
            ),
            (
                "spiffe://{trust_domain}/{namespace}",
                "lacks {service_account}",
            ),
            (
                "spiffe://{trust_domain}/sa/{service_account}",
                "lacks {namespace}",
            ),
            ("spiffe://{trust_domain}", "lacks {namespace}"),
            (
                "spiffe://TD/{namespace}/{service_account}",
                "has an invalid trust domain",
            ),
            (
                "spiffe://{trust_domain}/{namespace}/{service_account}/",
                "has an invalid path",
            ),
            (
                "spiffe://{trust_domain}/../{namespace}/{service_account}",
                "has an invalid path",
            ),
            (
                "spiffe://{trust_domain}/a%2f/{namespace}/{service_account}",
                "has an invalid path",
            ),
        ];
        for (source, fragment) in cases {
            let err = IdTemplate::parse(source).unwrap_err().to_string();
            assert!(
                err.contains(fragment),
                "{source:?}: {err:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn parse_error_sources_point_into_the_template() {
        let err = IdTemplate::parse("spiffe://{trust_domain}/a%2f/{namespace}/{service_account}")
            .unwrap_err();
        let reason = err.source().unwrap().to_string();
        assert_eq!(
            reason,
            "invalid character '%' at byte 2 of path \"/a%2f/{namespace}/{service_account}\": \
             percent-encoding is not allowed"
        );
    }

    /// Found by `cargo xtask fuzz` (the spiffe-id template target): "." is a valid trust
    /// domain but not a path segment, and a template repeating the trust domain in its path
    /// rendered `spiffe://././...`, an ID that `SpiffeId::parse` refuses.
    #[test]
    fn regression_a_dot_trust_domain_never_becomes_a_path_segment() {
        let fixed = IdTemplate::parse("spiffe://./{trust_domain}/{namespace}/sa/{service_account}");
        assert!(
            matches!(fixed, Err(TemplateError::InvalidPath { .. })),
            "{fixed:?}"
        );
        let template = IdTemplate::parse(
            "spiffe://{trust_domain}/{trust_domain}/{namespace}/{service_account}",
        )
        .unwrap();
        for dots in [".", ".."] {
            let err = template
                .render(&TrustDomain::parse(dots).unwrap(), "demo", "web")
                .unwrap_err();
            assert!(matches!(err, RenderError::DotValue { .. }), "{err:?}");
        }
        let plain = IdTemplate::default()
            .render(&TrustDomain::parse(".").unwrap(), "demo", "web")
            .unwrap();
        assert_eq!(SpiffeId::parse(plain.as_str()).unwrap(), plain);
    }

    #[test]
    fn render_rejects_values_that_are_not_segments() {
        let template = IdTemplate::default();
        let local = td("nico.local");
        let cases: &[(&str, &str, &str)] = &[
            ("", "web", "{namespace} is empty"),
            ("demo", "", "{service_account} is empty"),
            ("..", "web", "{namespace} value \"..\" is a dot segment"),
            (
                "demo",
                ".",
                "{service_account} value \".\" is a dot segment",
            ),
            (
                "de/mo",
                "web",
                "invalid character '/' at byte 2 of {namespace} value \"de/mo\"",
            ),
            (
                "demo",
                "w%65b",
                "invalid character '%' at byte 1 of {service_account} value",
            ),
        ];
        for (namespace, account, fragment) in cases {
            let err = template
                .render(&local, namespace, account)
                .unwrap_err()
                .to_string();
            assert!(err.contains(fragment), "{namespace:?}/{account:?}: {err:?}");
        }
        let long = "a".repeat(MAX_ID_LEN);
        assert!(matches!(
            template.render(&local, "demo", &long),
            Err(RenderError::TooLong { .. })
        ));
    }
}
