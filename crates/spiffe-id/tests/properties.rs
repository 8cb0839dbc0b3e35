//! Property tests: the parser never panics, round-trips exactly, and templates invert.

use nico_spiffe_id::{CERT_MANAGER_TEMPLATE, DEFAULT_TEMPLATE, IdTemplate, SpiffeId, TrustDomain};
use proptest::prelude::*;

const TRUST_DOMAIN: &str = "[a-z0-9._-]{1,40}";
const SEGMENT: &str = "[a-zA-Z0-9._-]{1,20}";

fn segment() -> impl Strategy<Value = String> {
    SEGMENT.prop_filter("dot segments are invalid", |s| s != "." && s != "..")
}

fn valid_id() -> impl Strategy<Value = String> {
    (TRUST_DOMAIN, prop::collection::vec(segment(), 0..6)).prop_map(|(td, segments)| {
        let mut id = format!("spiffe://{td}");
        for segment in segments {
            id.push('/');
            id.push_str(&segment);
        }
        id
    })
}

/// Strings close to valid IDs, so that the interesting branches are reached often.
fn near_id() -> impl Strategy<Value = String> {
    prop_oneof![
        valid_id(),
        "spiffe://[a-zA-Z0-9._:@%/?#-]{0,30}",
        "[sS][pP]iffe:/{0,3}[a-z./%]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn whatever_parses_displays_to_the_same_bytes(input in near_id()) {
        if let Ok(id) = SpiffeId::parse(&input) {
            prop_assert_eq!(id.to_string(), input.clone());
            prop_assert_eq!(id.as_str(), input.as_str());
            let reparsed = SpiffeId::parse(id.as_str()).unwrap();
            prop_assert_eq!(&reparsed, &id);
            prop_assert!(input.len() <= 2048);
            prop_assert!(!input.contains('%'));
            prop_assert!(!input.ends_with('/'));
        }
    }

    #[test]
    fn generated_valid_ids_parse(input in valid_id()) {
        let id = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(id.is_workload(), input.matches('/').count() > 2);
        let rebuilt = format!("spiffe://{}{}", id.trust_domain(), id.path());
        prop_assert_eq!(rebuilt, input);
    }

    #[test]
    fn percent_anywhere_in_the_path_is_rejected(
        prefix in segment(), suffix in "[0-9a-fA-F]{0,2}"
    ) {
        let input = format!("spiffe://td/{prefix}%{suffix}");
        prop_assert!(SpiffeId::parse(&input).is_err());
    }

    #[test]
    fn render_then_match_round_trips(
        td in TRUST_DOMAIN, namespace in segment(), account in segment(), cm in any::<bool>()
    ) {
        let source = if cm { CERT_MANAGER_TEMPLATE } else { DEFAULT_TEMPLATE };
        let template = IdTemplate::parse(source).unwrap();
        let td = TrustDomain::parse(&td).unwrap();
        let id = template.render(&td, &namespace, &account).unwrap();
        // The rendered ID must also survive the strict parser on its own.
        prop_assert_eq!(&SpiffeId::parse(id.as_str()).unwrap(), &id);
        let workload = template.match_id(&id).unwrap();
        prop_assert_eq!(workload.trust_domain, td);
        prop_assert_eq!(workload.namespace, namespace);
        prop_assert_eq!(workload.service_account, account);
    }

    #[test]
    fn template_parser_never_panics(input in "spiffe://[a-z{}_/.%]{0,40}") {
        let _ = IdTemplate::parse(&input);
    }
}
