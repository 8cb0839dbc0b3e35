//! Judging one request against one policy: every violation is collected, so the requester
//! learns everything to fix at once.

use nico_csr::{EcCurve, PublicKeyAlgorithm, San};
use nico_policy::duration::{format_go_duration, parse_go_duration};

use crate::cel::Variables;
use crate::policy::{FieldRule, KeyFamily, RequestPolicy, SUBJECT_FIELDS};
use crate::request::{ClusterFacts, PolicyRequest, Violation};

/// Longest piece of requester-supplied text repeated in a message.
const SHOWN: usize = 256;

impl RequestPolicy {
    /// Judges `request`. `facts` must hold the namespace's Services when
    /// [`RequestPolicy::needs_services`]. `Ok` when the policy permits the request
    /// entirely, otherwise every violation found.
    pub fn evaluate(
        &self,
        request: &PolicyRequest<'_>,
        facts: &ClusterFacts<'_>,
    ) -> Result<(), Vec<Violation>> {
        let mut out = Vec::new();
        match Variables::new(
            request.name,
            request.namespace,
            request.username,
            request.groups,
            facts.services,
        ) {
            Ok(variables) => self.check_allowed(request, &variables, &mut out),
            Err(reason) => out.push(Violation::new("spec", reason)),
        }
        self.check_constraints(request, &mut out);
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    fn check_allowed(
        &self,
        request: &PolicyRequest<'_>,
        variables: &Variables,
        out: &mut Vec<Violation>,
    ) {
        let allowed = &self.allowed;
        let csr = request.csr;

        let mut dns = Vec::new();
        let mut ips = Vec::new();
        let mut uris = Vec::new();
        let mut emails = Vec::new();
        let mut others = Vec::new();
        for san in csr.sans() {
            match san {
                San::Dns(name) => dns.push(name.clone()),
                San::Ip(ip) => ips.push(ip.to_string()),
                San::Uri(uri) => uris.push(uri.clone()),
                San::Email(email) => emails.push(email.clone()),
                San::Other(what) => others.push(what.clone()),
            }
        }
        if !others.is_empty() {
            out.push(Violation::new(
                "csr.subjectAltName",
                format!(
                    "{} not allowed: only DNS, IP, URI and e-mail names can be allowed",
                    shown(&others)
                ),
            ));
        }
        let sans = [
            (
                "csr.subjectAltName.dnsNames",
                "DNS name",
                &allowed.dns_names,
                &dns,
            ),
            (
                "csr.subjectAltName.ipAddresses",
                "IP address",
                &allowed.ip_addresses,
                &ips,
            ),
            ("csr.subjectAltName.uris", "URI", &allowed.uris, &uris),
            (
                "csr.subjectAltName.emailAddresses",
                "e-mail address",
                &allowed.email_addresses,
                &emails,
            ),
        ];
        for (field, what, rule, values) in sans {
            judge(field, what, rule.as_ref(), values, variables, out);
        }

        let mut common_names = Vec::new();
        let mut by_kind: Vec<(&str, Vec<String>)> = Vec::new();
        let mut unknown = Vec::new();
        for attribute in csr.subject().attributes() {
            let kind = attribute.kind.as_str();
            if kind == "CN" {
                common_names.push(attribute.value.clone());
            } else if kind == "serialNumber" || SUBJECT_FIELDS.iter().any(|f| f.short == kind) {
                match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, values)) => values.push(attribute.value.clone()),
                    None => by_kind.push((kind, vec![attribute.value.clone()])),
                }
            } else {
                unknown.push(attribute.to_string());
            }
        }
        if !unknown.is_empty() {
            out.push(Violation::new(
                "csr.subject",
                format!(
                    "{} not allowed: no policy field allows these attributes",
                    shown(&unknown)
                ),
            ));
        }
        if common_names.len() > 1 {
            out.push(Violation::new(
                "csr.subject.commonName",
                format!(
                    "{} common names presented, at most one is allowed",
                    common_names.len()
                ),
            ));
        }
        judge(
            "csr.subject.commonName",
            "common name",
            allowed.common_name.as_ref(),
            &common_names,
            variables,
            out,
        );
        for field in SUBJECT_FIELDS {
            let values = by_kind
                .iter()
                .find(|(k, _)| *k == field.short)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            let rule = allowed.subject.get(field.short);
            judge(field.request, field.word, rule, values, variables, out);
        }
        let serials = by_kind
            .iter()
            .find(|(k, _)| *k == "serialNumber")
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default();
        if serials.len() > 1 {
            out.push(Violation::new(
                "csr.subject.serialNumber",
                format!(
                    "{} serial numbers presented, at most one is allowed",
                    serials.len()
                ),
            ));
        }
        judge(
            "csr.subject.serialNumber",
            "serial number",
            allowed.subject.get("serialNumber"),
            serials,
            variables,
            out,
        );

        if !allowed.is_ca {
            if request.is_ca {
                out.push(Violation::new(
                    "spec.isCA",
                    "a CA certificate was requested, but spec.allowed.isCA is not true",
                ));
            } else if csr.is_ca() {
                out.push(Violation::new(
                    "csr.basicConstraints",
                    "the CSR asks for a CA certificate, but spec.allowed.isCA is not true",
                ));
            }
        }

        let refused: Vec<String> = request
            .usages
            .iter()
            .filter(|u| !allowed.usages.contains(u.as_str()))
            .cloned()
            .collect();
        if !refused.is_empty() {
            let reason = if allowed.usages.is_empty() {
                format!(
                    "{} not allowed: spec.allowed.usages allows none",
                    shown(&refused)
                )
            } else {
                let allowed: Vec<String> = allowed.usages.iter().cloned().collect();
                format!(
                    "{} not allowed by spec.allowed.usages: expected only {}",
                    shown(&refused),
                    allowed.join(", ")
                )
            };
            out.push(Violation::new("spec.usages", reason));
        }
    }

    fn check_constraints(&self, request: &PolicyRequest<'_>, out: &mut Vec<Violation>) {
        let c = &self.constraints;
        if c.min_duration.is_some() || c.max_duration.is_some() {
            match request.duration.map(parse_go_duration) {
                None => out.push(Violation::new(
                    "spec.duration",
                    "no duration requested: spec.constraints bound the duration",
                )),
                Some(Err(e)) => out.push(Violation::new("spec.duration", e.to_string())),
                Some(Ok(requested)) => {
                    let presented = format_go_duration(requested);
                    if let Some(min) = c.min_duration
                        && requested < min
                    {
                        out.push(Violation::new(
                            "spec.duration",
                            format!(
                                "requested duration {presented} is shorter than \
                                 spec.constraints.minDuration {}",
                                format_go_duration(min)
                            ),
                        ));
                    }
                    if let Some(max) = c.max_duration
                        && requested > max
                    {
                        out.push(Violation::new(
                            "spec.duration",
                            format!(
                                "requested duration {presented} is longer than \
                                 spec.constraints.maxDuration {}",
                                format_go_duration(max)
                            ),
                        ));
                    }
                }
            }
        }

        let algorithm = request.csr.public_key().algorithm();
        let (family, size) = match algorithm {
            PublicKeyAlgorithm::Rsa { modulus_bits } => (Some(KeyFamily::Rsa), Some(*modulus_bits)),
            PublicKeyAlgorithm::Ec { curve } => (
                Some(KeyFamily::Ecdsa),
                match curve {
                    EcCurve::P256 => Some(256),
                    EcCurve::P384 => Some(384),
                    EcCurve::P521 => Some(521),
                    EcCurve::Other(_) | EcCurve::Unnamed => None,
                },
            ),
            PublicKeyAlgorithm::Ed25519 => (Some(KeyFamily::Ed25519), None),
            PublicKeyAlgorithm::Unknown { .. } => (None, None),
        };
        if let Some(wanted) = c.key_family
            && family != Some(wanted)
        {
            out.push(Violation::new(
                "csr.publicKey",
                format!(
                    "key algorithm {algorithm} is not allowed: spec.constraints.privateKey.\
                     algorithm is {}",
                    wanted.as_str()
                ),
            ));
        }
        // Ed25519 keys have one size; cert-manager ignores size constraints for them.
        if (c.min_key_size.is_some() || c.max_key_size.is_some())
            && family != Some(KeyFamily::Ed25519)
        {
            match size {
                None => out.push(Violation::new(
                    "csr.publicKey",
                    format!(
                        "the size of a {algorithm} key is unknown, but spec.constraints.\
                         privateKey bounds it"
                    ),
                )),
                Some(size) => {
                    if let Some(min) = c.min_key_size
                        && size < min
                    {
                        out.push(Violation::new(
                            "csr.publicKey",
                            format!(
                                "key size {size} is smaller than spec.constraints.privateKey.\
                                 minSize {min}"
                            ),
                        ));
                    }
                    if let Some(max) = c.max_key_size
                        && size > max
                    {
                        out.push(Violation::new(
                            "csr.publicKey",
                            format!(
                                "key size {size} is larger than spec.constraints.privateKey.\
                                 maxSize {max}"
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// Judges the values of one request field against its `allowed` entry.
fn judge(
    field: &'static str,
    what: &str,
    rule: Option<&FieldRule>,
    values: &[String],
    variables: &Variables,
    out: &mut Vec<Violation>,
) {
    let Some(rule) = rule else {
        if !values.is_empty() {
            out.push(Violation::new(
                field,
                format!(
                    "{what} {} not allowed: the policy allows none",
                    shown_quoted(values)
                ),
            ));
        }
        return;
    };
    if rule.required && values.is_empty() {
        out.push(Violation::new(
            field,
            format!("a {what} is required by {}.required", rule.path),
        ));
    }
    if rule.patterns.is_none() && rule.rules.is_empty() {
        if !values.is_empty() {
            out.push(Violation::new(
                field,
                format!(
                    "{what} {} not allowed: {} sets neither values nor validations",
                    shown_quoted(values),
                    rule.path
                ),
            ));
        }
        return;
    }
    if let Some(patterns) = &rule.patterns {
        let refused: Vec<String> = values
            .iter()
            .filter(|v| !patterns.iter().any(|p| p.matches(v)))
            .cloned()
            .collect();
        if !refused.is_empty() {
            let expected: Vec<String> = patterns.iter().map(|p| p.as_str().to_owned()).collect();
            let suffix = if rule.single { "value" } else { "values" };
            out.push(Violation::new(
                field,
                format!(
                    "{what} {} not allowed by {}.{suffix}: expected {}",
                    shown_quoted(&refused),
                    rule.path,
                    if expected.is_empty() {
                        "none".to_owned()
                    } else {
                        clip(&expected.join(", "))
                    }
                ),
            ));
        }
    }
    for (i, cel) in rule.rules.iter().enumerate() {
        for value in values {
            let reason = match cel.passes(value, variables) {
                Ok(true) => continue,
                Ok(false) => cel.failure(),
                Err(e) => e,
            };
            out.push(Violation::new(
                field,
                format!(
                    "{what} {:?} failed {}.validations[{i}]: {reason}",
                    clip(value),
                    rule.path
                ),
            ));
        }
    }
}

/// `"a"` or `"a", "b"`, bounded in length.
fn shown_quoted(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    clip(&quoted.join(", "))
}

/// `a` or `a, b`, bounded in length.
fn shown(values: &[String]) -> String {
    clip(&values.join(", "))
}

/// Requester-supplied text, cut to a bounded length on a character boundary.
fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
