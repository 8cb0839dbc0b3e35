//! The checks, in the order a requester should fix things: the CSR must be readable, aimed
//! at the right issuer, the duration sane, the CSR an SVID request, the spec consistent with
//! it, the requester entitled to ask, and the identity the one it is entitled to.

use std::collections::{BTreeMap, BTreeSet};

use nico_csr::{ExtendedKeyUsage, KeyUsage, ParsedCsr, San, parse_csr_pem};
use nico_spiffe_id::SpiffeId;

use crate::duration::{format_go_duration, parse_go_duration};
use crate::{
    Decision, Denial, EXTRA_NODE_NAME, EXTRA_POD_NAME, EXTRA_POD_UID, Field, PodFacts, PodQuery,
    REQUIRED_USAGES, RequesterMode, SpiffePolicy, SpiffeRequest,
};

/// Longest piece of requester-supplied text repeated in a message.
const SHOWN: usize = 256;

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

const ALLOWED_KEY_USAGES: [KeyUsage; 2] = [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment];

/// Whose account the SPIFFE ID must name, and the field to blame when it does not.
struct Entitled<'a> {
    namespace: &'a str,
    account: &'a str,
    mismatch: Field,
    who: String,
}

impl SpiffePolicy {
    /// The pod the caller must read (in the request's namespace) and pass to
    /// [`SpiffePolicy::evaluate`]: the pod the requester's token is bound to, or in
    /// driver-account mode the pod the request's pod annotation names. `None` when the
    /// request names no pod.
    pub fn pod_to_look_up<'r>(&self, request: &SpiffeRequest<'r>) -> Option<PodQuery<'r>> {
        let name = match &self.requester {
            RequesterMode::PodAccount { .. } => {
                extra_value(request.extra, EXTRA_POD_NAME).ok().flatten()?
            }
            RequesterMode::DriverAccount { .. } => request.pod_name_annotation?,
        };
        Some(PodQuery { name })
    }

    /// Judges one request. `pod` is what the caller found for
    /// [`SpiffePolicy::pod_to_look_up`]: `None` when that pod does not exist (or no pod was
    /// asked for). Checks run in a fixed order and the first failure decides:
    ///
    /// 1. `spec.request` is a PEM CSR whose signature verifies;
    /// 2. `spec.issuerRef` names the SPIFFE issuer, defaults applied;
    /// 3. `spec.duration` is present, parses and lies within the bounds;
    /// 4. the CSR has an empty subject, only URI SANs, only SAN/KU/EKU extensions, key
    ///    usages within digitalSignature and keyEncipherment, extended key usages within
    ///    serverAuth and clientAuth, a critical SAN extension and an allowed key;
    /// 5. `spec.isCA` is false and `spec.usages` is exactly the four SVID usages;
    /// 6. the requester is entitled: in pod-account mode `spec.username` is a service
    ///    account of the request's namespace and, for a pod-bound token, the pod exists
    ///    with the bound uid and runs as that account; in driver-account mode the requester
    ///    is a driver account whose token is bound to a node, and the annotated pod exists
    ///    with the annotated uid on that node;
    /// 7. the CSR holds exactly one URI SAN, a SPIFFE ID of our trust domain equal to the
    ///    ID rendered from the template for the entitled account, and the identity
    ///    annotation, if present, equals it.
    pub fn evaluate(&self, request: &SpiffeRequest<'_>, pod: Option<&PodFacts>) -> Decision {
        match self.check(request, pod) {
            Ok(()) => Decision::Approve,
            Err(denial) => Decision::Deny(denial),
        }
    }

    fn check(&self, request: &SpiffeRequest<'_>, pod: Option<&PodFacts>) -> Result<(), Denial> {
        let csr = parse_csr_pem(request.request)
            .map_err(|err| Denial::new(Field::SpecRequest, err.to_string()))?;
        self.check_issuer(request)?;
        self.check_duration(request.duration)?;
        self.check_csr(&csr)?;
        check_spec(request)?;
        let entitled = match &self.requester {
            RequesterMode::PodAccount { require_pod_bound } => {
                pod_account(request, pod, *require_pod_bound)?
            }
            RequesterMode::DriverAccount { accounts } => driver_account(request, pod, accounts)?,
        };
        self.check_identity(request, &csr, &entitled)
    }

    fn check_issuer(&self, request: &SpiffeRequest<'_>) -> Result<(), Denial> {
        if *request.issuer != self.issuer {
            let reason = format!(
                "issuer {} is not the SPIFFE issuer: expected {}",
                clip(&request.issuer.to_string()),
                self.issuer
            );
            return Err(Denial::new(Field::SpecIssuerRef, reason));
        }
        Ok(())
    }

    fn check_duration(&self, duration: Option<&str>) -> Result<(), Denial> {
        let (min, max) = (self.durations.min(), self.durations.max());
        let range = || {
            format!(
                "between {} and {}",
                format_go_duration(min),
                format_go_duration(max)
            )
        };
        let Some(text) = duration else {
            let reason = format!("no duration requested: expected a duration {}", range());
            return Err(Denial::new(Field::SpecDuration, reason));
        };
        let requested = parse_go_duration(text)
            .map_err(|err| Denial::new(Field::SpecDuration, err.to_string()))?;
        let presented = format_go_duration(requested);
        if requested < min {
            let reason = format!(
                "requested duration {presented} is shorter than the minimum {}: expected a \
                 duration {}",
                format_go_duration(min),
                range()
            );
            return Err(Denial::new(Field::SpecDuration, reason));
        }
        if requested > max {
            let reason = format!(
                "requested duration {presented} is longer than the maximum {}: expected a \
                 duration {}",
                format_go_duration(max),
                range()
            );
            return Err(Denial::new(Field::SpecDuration, reason));
        }
        Ok(())
    }

    fn check_csr(&self, csr: &ParsedCsr) -> Result<(), Denial> {
        if !csr.subject().is_empty() {
            let reason = format!(
                "subject must be empty, presented {}",
                clip(&csr.subject().to_string())
            );
            return Err(Denial::new(Field::CsrSubject, reason));
        }

        let not_uri: Vec<String> = csr
            .sans()
            .iter()
            .filter(|san| !matches!(san, San::Uri(_)))
            .map(San::to_string)
            .collect();
        if !not_uri.is_empty() {
            let reason = format!(
                "only URI SANs are allowed, presented {}",
                clip(&not_uri.join(", "))
            );
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let mut extra: Vec<String> = Vec::new();
        if let Some(bc) = csr.basic_constraints() {
            extra.push(format!(
                "basicConstraints (CA:{})",
                if bc.is_ca { "TRUE" } else { "FALSE" }
            ));
        }
        extra.extend(csr.other_extensions().iter().map(ToString::to_string));
        if !extra.is_empty() {
            let reason = format!(
                "only subjectAltName, keyUsage and extendedKeyUsage extensions are allowed, \
                 presented {}",
                clip(&extra.join(", "))
            );
            return Err(Denial::new(Field::CsrExtensions, reason));
        }

        let bad_ku: Vec<String> = csr
            .key_usages()
            .iter()
            .filter(|usage| !ALLOWED_KEY_USAGES.contains(usage))
            .map(ToString::to_string)
            .collect();
        if !bad_ku.is_empty() {
            let reason = format!(
                "{} not allowed: expected only digitalSignature and keyEncipherment",
                is_or_are(&bad_ku)
            );
            return Err(Denial::new(Field::CsrKeyUsage, reason));
        }

        let bad_eku: Vec<String> = csr
            .extended_key_usages()
            .iter()
            .filter(|usage| {
                !matches!(
                    usage,
                    ExtendedKeyUsage::ServerAuth | ExtendedKeyUsage::ClientAuth
                )
            })
            .map(ToString::to_string)
            .collect();
        if !bad_eku.is_empty() {
            let reason = format!(
                "{} not allowed: expected only serverAuth and clientAuth",
                is_or_are(&bad_eku)
            );
            return Err(Denial::new(Field::CsrExtendedKeyUsage, reason));
        }

        if csr.san_critical() == Some(false) {
            let reason = "the subjectAltName extension is not marked critical: it must be, \
                          because the subject is empty";
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let algorithm = csr.public_key().algorithm();
        if !self.allowed_keys.iter().any(|key| key.admits(algorithm)) {
            let expected: Vec<String> = self.allowed_keys.iter().map(|k| k.to_string()).collect();
            let reason = format!(
                "key algorithm {algorithm} is not allowed: expected {}",
                expected.join(" or ")
            );
            return Err(Denial::new(Field::CsrPublicKey, reason));
        }
        Ok(())
    }

    fn check_identity(
        &self,
        request: &SpiffeRequest<'_>,
        csr: &ParsedCsr,
        entitled: &Entitled<'_>,
    ) -> Result<(), Denial> {
        let uris: Vec<&str> = csr.uri_sans().collect();
        let uri = match uris.as_slice() {
            [uri] => *uri,
            [] => {
                let reason = "expected exactly one URI SAN, presented none";
                return Err(Denial::new(Field::CsrSubjectAltName, reason));
            }
            several => {
                let reason = format!(
                    "expected exactly one URI SAN, presented {}: {}",
                    several.len(),
                    clip(&several.join(", "))
                );
                return Err(Denial::new(Field::CsrSubjectAltName, reason));
            }
        };
        let id = SpiffeId::parse(uri).map_err(|err| {
            let reason = format!("URI SAN {:?} is not a valid SPIFFE ID: {err}", clip(uri));
            Denial::new(Field::CsrSubjectAltName, reason)
        })?;
        if id.trust_domain() != &self.trust_domain {
            let reason = format!(
                "SPIFFE ID {id} is in trust domain {}, expected {}",
                id.trust_domain(),
                self.trust_domain
            );
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let expected = self
            .template
            .render(&self.trust_domain, entitled.namespace, entitled.account)
            .map_err(|err| {
                let reason = format!("cannot derive a SPIFFE ID for {}: {err}", entitled.who);
                Denial::new(entitled.mismatch, reason)
            })?;
        if id != expected {
            let reason = format!(
                "SPIFFE ID {id} does not match {} (expected {expected})",
                entitled.who
            );
            return Err(Denial::new(entitled.mismatch, reason));
        }

        if let Some(annotation) = request.identity_annotation
            && annotation != id.as_str()
        {
            let reason = format!(
                "annotation value {:?} does not match the SPIFFE ID {id} requested in the CSR",
                clip(annotation)
            );
            return Err(Denial::new(Field::IdentityAnnotation, reason));
        }
        Ok(())
    }
}

/// Pod-account mode: the requester is a service account of the request's namespace and,
/// when its token is bound to a pod, that pod exists with the bound uid and runs as it.
fn pod_account<'r>(
    request: &SpiffeRequest<'r>,
    pod: Option<&PodFacts>,
    require_pod_bound: bool,
) -> Result<Entitled<'r>, Denial> {
    let username = request.username;
    let Some((namespace, account)) = service_account(username) else {
        let reason = format!(
            "requester {:?} is not a service account: expected \
             system:serviceaccount:<namespace>:<name>",
            clip(username)
        );
        return Err(Denial::new(Field::SpecUsername, reason));
    };
    if request.namespace != namespace {
        let reason = format!(
            "request is in namespace {:?} but requester {} belongs to namespace {:?}",
            clip(request.namespace),
            clip(username),
            clip(namespace)
        );
        return Err(Denial::new(Field::MetadataNamespace, reason));
    }

    let bound = extra_value(request.extra, EXTRA_POD_NAME)
        .map_err(|reason| Denial::new(Field::SpecExtraPodName, reason))?;
    match bound {
        None if require_pod_bound => {
            let reason = "the requester's token is not bound to a pod: expected the pod's own \
                          service account token, as kubelet hands it to the CSI driver";
            return Err(Denial::new(Field::SpecExtraPodName, reason));
        }
        None => {}
        Some(name) => {
            let uid = extra_value(request.extra, EXTRA_POD_UID)
                .map_err(|reason| Denial::new(Field::SpecExtraPodUid, reason))?
                .ok_or_else(|| {
                    let reason = format!(
                        "the requester's token is bound to pod {:?} but carries no pod uid",
                        clip(name)
                    );
                    Denial::new(Field::SpecExtraPodUid, reason)
                })?;
            let pod = found(pod, namespace, name).ok_or_else(|| {
                let reason = format!(
                    "pod {namespace}/{} that the requester's token is bound to does not exist",
                    clip(name)
                );
                Denial::new(Field::SpecExtraPodName, reason)
            })?;
            if pod.uid != uid {
                let reason = format!(
                    "pod {namespace}/{name} has uid {}, but the token is bound to uid {} (the \
                     pod was replaced)",
                    pod.uid,
                    clip(uid)
                );
                return Err(Denial::new(Field::SpecExtraPodUid, reason));
            }
            if pod.service_account != account {
                let reason = format!(
                    "pod {namespace}/{name} runs as service account {:?}, not {account:?}",
                    pod.service_account
                );
                return Err(Denial::new(Field::SpecExtraPodName, reason));
            }
        }
    }
    Ok(Entitled {
        namespace,
        account,
        mismatch: Field::SpecUsername,
        who: format!("requester {}", clip(username)),
    })
}

/// Driver-account mode: the requester is a driver account whose token is bound to a node,
/// and the annotated pod exists with the annotated uid on that node; the ID is the pod's
/// account's.
fn driver_account<'p>(
    request: &SpiffeRequest<'_>,
    pod: Option<&'p PodFacts>,
    accounts: &BTreeSet<String>,
) -> Result<Entitled<'p>, Denial> {
    let username = request.username;
    if !accounts.contains(username) {
        let expected: Vec<&str> = accounts.iter().map(String::as_str).collect();
        let reason = format!(
            "requester {:?} is not a CSI driver account: expected {}",
            clip(username),
            expected.join(" or ")
        );
        return Err(Denial::new(Field::SpecUsername, reason));
    }
    let node = extra_value(request.extra, EXTRA_NODE_NAME)
        .map_err(|reason| Denial::new(Field::SpecExtraNodeName, reason))?
        .ok_or_else(|| {
            let reason = "the driver's token is not bound to a node: expected the token of a \
                          driver pod";
            Denial::new(Field::SpecExtraNodeName, reason)
        })?;
    let Some(name) = request.pod_name_annotation.filter(|n| !n.is_empty()) else {
        let reason = "no pod named: expected the name of the pod the certificate is for";
        return Err(Denial::new(Field::PodNameAnnotation, reason));
    };
    let Some(uid) = request.pod_uid_annotation.filter(|u| !u.is_empty()) else {
        let reason = "no pod uid: expected the uid of the pod the certificate is for";
        return Err(Denial::new(Field::PodUidAnnotation, reason));
    };
    let namespace = request.namespace;
    let pod = found(pod, namespace, name).ok_or_else(|| {
        let reason = format!("pod {namespace}/{} does not exist", clip(name));
        Denial::new(Field::PodNameAnnotation, reason)
    })?;
    if pod.uid != uid {
        let reason = format!(
            "pod {namespace}/{name} has uid {}, but the request names uid {} (the pod was \
             replaced)",
            pod.uid,
            clip(uid)
        );
        return Err(Denial::new(Field::PodUidAnnotation, reason));
    }
    if pod.node_name != node {
        let reason = format!(
            "pod {namespace}/{name} runs on node {:?}, but the driver's token is bound to node \
             {:?}",
            pod.node_name,
            clip(node)
        );
        return Err(Denial::new(Field::PodNameAnnotation, reason));
    }
    Ok(Entitled {
        namespace: &pod.namespace,
        account: &pod.service_account,
        mismatch: Field::CsrSubjectAltName,
        who: format!(
            "pod {}/{} running as service account {:?}",
            pod.namespace, pod.name, pod.service_account
        ),
    })
}

/// The pod the caller found, if it is the one asked for.
fn found<'p>(pod: Option<&'p PodFacts>, namespace: &str, name: &str) -> Option<&'p PodFacts> {
    pod.filter(|p| p.namespace == namespace && p.name == name)
}

/// The one value of an `extra` key: `None` when absent, an error when several or empty.
fn extra_value<'r>(
    extra: &'r BTreeMap<String, Vec<String>>,
    key: &str,
) -> Result<Option<&'r str>, String> {
    match extra.get(key).map(Vec::as_slice) {
        None => Ok(None),
        Some([value]) if !value.is_empty() => Ok(Some(value)),
        Some([_]) | Some([]) => Err(format!("{key} is empty: expected one value")),
        Some(values) => Err(format!(
            "{key} has {} values: expected exactly one",
            values.len()
        )),
    }
}

fn check_spec(request: &SpiffeRequest<'_>) -> Result<(), Denial> {
    if request.is_ca {
        let reason = "a CA certificate was requested: expected isCA to be false";
        return Err(Denial::new(Field::SpecIsCa, reason));
    }
    let presented: BTreeSet<&str> = request.usages.iter().map(String::as_str).collect();
    let missing: Vec<&str> = REQUIRED_USAGES
        .iter()
        .copied()
        .filter(|usage| !presented.contains(usage))
        .collect();
    let extra: Vec<&str> = presented
        .iter()
        .copied()
        .filter(|usage| !REQUIRED_USAGES.contains(usage))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut reason = format!("expected exactly the usages {}", REQUIRED_USAGES.join(", "));
        if !missing.is_empty() {
            reason.push_str(&format!("; missing: {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            reason.push_str(&format!("; not allowed: {}", clip(&extra.join(", "))));
        }
        return Err(Denial::new(Field::SpecUsages, reason));
    }
    Ok(())
}

/// Splits `system:serviceaccount:<namespace>:<name>` into its two names.
pub(crate) fn service_account(username: &str) -> Option<(&str, &str)> {
    let (namespace, name) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')?;
    let valid = !namespace.is_empty() && !name.is_empty() && !name.contains(':');
    valid.then_some((namespace, name))
}

/// `x is` or `x, y are`, for lists of refused values.
fn is_or_are(items: &[String]) -> String {
    match items {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// Requester-supplied text, cut to a bounded length on a character boundary.
fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account("system:serviceaccount:demo:web"),
            Some(("demo", "web"))
        );
        for bad in [
            "system:serviceaccount:demo",
            "system:serviceaccount::web",
            "system:serviceaccount:demo:",
            "system:serviceaccount:demo:web:x",
            "system:serviceaccounts:demo",
            "alice",
            "",
        ] {
            assert_eq!(service_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(SHOWN + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), SHOWN + 3);
        assert!(clipped.ends_with("..."));
    }
}
