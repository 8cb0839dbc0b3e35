//! The seed's policy as shipped in `config/policies/service-tls.yaml`: it loads, and it
//! signs only service TLS certificates for Services of the request's own namespace.

use nico_csr::parse_csr_pem;
use nico_policy::IssuerName;
use nico_request_policy::{ClusterFacts, Limits, PolicyRequest, RequestPolicy};
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

const MANIFEST: &str = include_str!("../../../../config/policies/service-tls.yaml");

fn seed_policy() -> RequestPolicy {
    let first = MANIFEST.split("\n---\n").next().unwrap();
    let object: serde_json::Value = serde_saphyr::from_str(first).unwrap();
    assert_eq!(object["kind"], "CertificateRequestPolicy");
    let name = object["metadata"]["name"].as_str().unwrap();
    RequestPolicy::from_json(name, &object["spec"], Limits::default()).unwrap()
}

fn judge(namespace: &str, dns: &[&str], uris: &[&str], services: &[&str]) -> Result<(), String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let ia5 = |s: &&str| Ia5String::try_from(*s).unwrap();
    params.subject_alt_names = dns
        .iter()
        .map(|d| SanType::DnsName(ia5(d)))
        .chain(uris.iter().map(|u| SanType::URI(ia5(u))))
        .collect();
    let key = KeyPair::generate().unwrap();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr = parse_csr_pem(pem.as_bytes()).unwrap();
    let issuer = IssuerName::new("nico-service-tls", Some("ClusterIssuer"), None);
    let usages = vec!["digital signature".to_owned(), "server auth".to_owned()];
    let services: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
    let request = PolicyRequest {
        name: "webhook-tls-1",
        namespace,
        username: "system:serviceaccount:cert-manager:cert-manager",
        groups: &[],
        issuer: &issuer,
        duration: Some("2160h"),
        is_ca: false,
        usages: &usages,
        csr: &csr,
    };
    let facts = ClusterFacts {
        services: Some(&services),
    };
    seed_policy().evaluate(&request, &facts).map_err(|v| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[test]
fn the_seed_policy_loads_for_the_non_spiffe_issuer_only() {
    let policy = seed_policy();
    assert!(policy.needs_services());
    let service_tls = IssuerName::new("nico-service-tls", Some("ClusterIssuer"), None);
    let spiffe = IssuerName::new("nico-identity", Some("ClusterIssuer"), None);
    assert!(policy.selects(&service_tls, "any", None));
    assert!(!policy.selects(&spiffe, "any", None));
}

#[test]
fn only_names_of_existing_services_in_the_namespace_pass() {
    let ok = ["webhook.infra.svc", "webhook.infra.svc.cluster.local"];
    assert_eq!(judge("infra", &ok, &[], &["webhook"]), Ok(()));

    /// Name, DNS SANs, URI SANs, Services of the namespace, expected fragment.
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a str,
    );
    let rows: [Row<'_>; 6] = [
        (
            "no such service",
            &["other.infra.svc"],
            &[],
            &["webhook"],
            "other.infra.svc",
        ),
        (
            "another namespace",
            &["webhook.demo.svc"],
            &[],
            &["webhook"],
            "webhook.demo.svc",
        ),
        (
            "outside the cluster",
            &["webhook.example.com"],
            &[],
            &["webhook"],
            ".values",
        ),
        (
            "a prefix trick",
            &["x.webhook.infra.svc"],
            &[],
            &["webhook"],
            "validations[0]",
        ),
        (
            "no dns name",
            &[],
            &[],
            &["webhook"],
            "a DNS name is required",
        ),
        (
            "a uri san",
            &["webhook.infra.svc"],
            &["spiffe://nico.local/infra/sa/webhook"],
            &["webhook"],
            "csr.subjectAltName.uris",
        ),
    ];
    for (name, dns, uris, services, fragment) in rows {
        let err = judge("infra", dns, uris, services).expect_err(name);
        assert!(err.contains(fragment), "{name}: {err}");
    }
}
