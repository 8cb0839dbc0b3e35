//! Fuzz targets: SPIFFE ID parsing against an independent statement of the rules, and ID
//! templates (parsing, and matching as the exact inverse of rendering).
//!
//! Corpora: `tests/corpus/spiffe_id/` (IDs, seeded from the shared conformance table) and
//! `tests/corpus/id_template/`. See `tests/support/fuzzing.rs` at the workspace root for how
//! the corpus is replayed and mutated; `cargo xtask fuzz --time N` runs these for longer.

#[path = "../../../tests/support/fuzzing.rs"]
mod fuzzing;

use std::path::{Path, PathBuf};

use nico_spiffe_id::{
    CERT_MANAGER_TEMPLATE, DEFAULT_TEMPLATE, IdTemplate, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN,
    SpiffeId, TrustDomain, WorkloadRef,
};
use proptest::prelude::*;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// The SPIFFE ID rules restated from the specification, without the crate's code: what the
/// parser must accept, and nothing else.
fn valid_by_the_rules(input: &str) -> bool {
    let Some(rest) = input.strip_prefix("spiffe://") else {
        return false;
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let authority_ok = !authority.is_empty()
        && authority.len() <= MAX_TRUST_DOMAIN_LEN
        && authority
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let path_ok = path.is_empty()
        || path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    input.len() <= MAX_ID_LEN && authority_ok && path_ok
}

/// The parser agrees with the rules, and whatever it accepts it keeps byte for byte.
fn check_id(input: &str) -> Result<(), TestCaseError> {
    let parsed = SpiffeId::parse(input);
    prop_assert_eq!(
        parsed.is_ok(),
        valid_by_the_rules(input),
        "{:?}: parser said {:?}",
        input,
        parsed
    );
    if let Ok(id) = parsed {
        prop_assert_eq!(id.as_str(), input);
        let rebuilt = format!("spiffe://{}{}", id.trust_domain(), id.path());
        prop_assert_eq!(rebuilt.as_str(), input);
        prop_assert_eq!(id.segments().count(), id.path().matches('/').count());
    }
    Ok(())
}

/// Templates every ID is matched against: the two shipped ones and two odd shapes.
fn match_templates() -> Vec<IdTemplate> {
    [
        DEFAULT_TEMPLATE,
        CERT_MANAGER_TEMPLATE,
        "spiffe://example.test/{namespace}/{service_account}",
        "spiffe://{trust_domain}/{trust_domain}/{namespace}/{namespace}/{service_account}",
    ]
    .iter()
    .map(|source| IdTemplate::parse(source).unwrap())
    .collect()
}

/// Matching is the inverse of rendering: an ID a template claims must be exactly the ID the
/// template renders for what it recovered, so no second spelling can pass as a workload.
fn check_match(templates: &[IdTemplate], input: &str) -> Result<(), TestCaseError> {
    let Ok(id) = SpiffeId::parse(input) else {
        return Ok(());
    };
    for template in templates {
        if let Some(WorkloadRef {
            trust_domain,
            namespace,
            service_account,
        }) = template.match_id(&id)
        {
            let rendered = template.render(&trust_domain, &namespace, &service_account);
            prop_assert_eq!(
                rendered.as_ref().map(SpiffeId::as_str),
                Ok(input),
                "{} matched {:?}",
                template.as_str(),
                input
            );
        }
    }
    // An independent statement of the default shape: `/<namespace>/sa/<account>`.
    let segments: Vec<&str> = id.segments().collect();
    let default_shape = segments.len() == 3 && segments[1] == "sa";
    prop_assert_eq!(templates[0].match_id(&id).is_some(), default_shape);
    Ok(())
}

/// A template that parses keeps its text, and renders IDs it matches back to the same
/// workload.
fn check_template(input: &str) -> Result<(), TestCaseError> {
    let Ok(template) = IdTemplate::parse(input) else {
        return Ok(());
    };
    prop_assert_eq!(template.as_str(), input);
    let trust_domain = template
        .fixed_trust_domain()
        .cloned()
        .unwrap_or_else(|| TrustDomain::parse("nico.local").unwrap());
    for (namespace, account) in [("demo", "web"), ("sa", "sa"), ("a-b.c_d", "x")] {
        let Ok(id) = template.render(&trust_domain, namespace, account) else {
            // Only a template too long to hold these values may refuse them.
            prop_assert!(
                input.len() + 20 > MAX_ID_LEN,
                "{input:?} refused {namespace}"
            );
            continue;
        };
        prop_assert_eq!(&SpiffeId::parse(id.as_str()).unwrap(), &id);
        let workload = template.match_id(&id);
        prop_assert_eq!(
            workload,
            Some(WorkloadRef {
                trust_domain: trust_domain.clone(),
                namespace: namespace.to_owned(),
                service_account: account.to_owned(),
            })
        );
    }
    Ok(())
}

fn replay(target: &str, check: impl Fn(&str) -> Result<(), TestCaseError>) {
    for (name, bytes) in fuzzing::corpus(&corpus_dir(target)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(failure) = check(&text) {
            panic!("corpus {target}/{name}: {failure}");
        }
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let templates = match_templates();
    replay("spiffe_id", check_id);
    replay("spiffe_id", |input| check_match(&templates, input));
    replay("id_template", check_template);
}

proptest! {
    #![proptest_config(fuzzing::config(2000))]

    #[test]
    fn fuzz_spiffe_id(input in fuzzing::text_inputs(
        fuzzing::seeds(&corpus_dir("spiffe_id")), 96,
    )) {
        check_id(&input)?;
    }

    #[test]
    fn fuzz_template_matching(input in fuzzing::text_inputs(
        fuzzing::seeds(&corpus_dir("spiffe_id")), 96,
    )) {
        check_match(&match_templates(), &input)?;
    }

    #[test]
    fn fuzz_id_template(input in fuzzing::text_inputs(
        fuzzing::seeds(&corpus_dir("id_template")), 96,
    )) {
        check_template(&input)?;
    }
}
