//! Whether a CSR asks for what the CertificateRequest says: its key usages, extended key
//! usages and basic constraints against `spec.usages` and `spec.isCA`, compared as sets.
//!
//! An issuer that copies extensions from the CSR would otherwise grant usages the approver
//! never saw. A CSR that carries no key usage (or no extended key usage) extension asks for
//! nothing there and is not compared; empty `spec.usages` mean cert-manager's defaults,
//! `digital signature` and `key encipherment`.

use std::collections::BTreeSet;

use nico_csr::{ExtendedKeyUsage, KeyUsage, ParsedCsr};

use crate::review::Problem;

/// What one cert-manager usage means in a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Meaning {
    Key(KeyUsage),
    Extended(ExtendedKeyUsage),
}

/// cert-manager's usage names and their meaning.
fn meaning(usage: &str) -> Option<Meaning> {
    use ExtendedKeyUsage as E;
    use KeyUsage as K;
    let other = |oid: &str| Some(Meaning::Extended(E::Other(oid.to_owned())));
    Some(match usage {
        "signing" | "digital signature" => Meaning::Key(K::DigitalSignature),
        "content commitment" => Meaning::Key(K::NonRepudiation),
        "key encipherment" => Meaning::Key(K::KeyEncipherment),
        "key agreement" => Meaning::Key(K::KeyAgreement),
        "data encipherment" => Meaning::Key(K::DataEncipherment),
        "cert sign" => Meaning::Key(K::KeyCertSign),
        "crl sign" => Meaning::Key(K::CrlSign),
        "encipher only" => Meaning::Key(K::EncipherOnly),
        "decipher only" => Meaning::Key(K::DecipherOnly),
        "any" => Meaning::Extended(E::Any),
        "server auth" => Meaning::Extended(E::ServerAuth),
        "client auth" => Meaning::Extended(E::ClientAuth),
        "code signing" => Meaning::Extended(E::CodeSigning),
        "email protection" | "s/mime" => Meaning::Extended(E::EmailProtection),
        "timestamping" => Meaning::Extended(E::TimeStamping),
        "ocsp signing" => Meaning::Extended(E::OcspSigning),
        "ipsec end system" => return other("1.3.6.1.5.5.7.3.5"),
        "ipsec tunnel" => return other("1.3.6.1.5.5.7.3.6"),
        "ipsec user" => return other("1.3.6.1.5.5.7.3.7"),
        "microsoft sgc" => return other("1.3.6.1.4.1.311.10.3.3"),
        "netscape sgc" => return other("2.16.840.1.113730.4.1"),
        _ => return None,
    })
}

/// The usages cert-manager applies when `spec.usages` is empty.
const DEFAULT_USAGES: [&str; 2] = ["digital signature", "key encipherment"];

fn list<T: std::fmt::Display>(items: &BTreeSet<T>) -> String {
    let names: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(", "))
}

/// The problems between `csr` and the request's `usages` and `is_ca`.
pub(crate) fn check(csr: &ParsedCsr, usages: &[String], is_ca: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut key = BTreeSet::new();
    let mut extended = BTreeSet::new();
    let named: Vec<&str> = if usages.is_empty() {
        DEFAULT_USAGES.to_vec()
    } else {
        usages.iter().map(String::as_str).collect()
    };
    for (i, usage) in named.iter().enumerate() {
        match meaning(usage) {
            Some(Meaning::Key(k)) => drop(key.insert(k)),
            Some(Meaning::Extended(e)) => drop(extended.insert(e)),
            None => problems.push(Problem::new(
                format!("spec.usages[{i}]"),
                format!("unknown usage {usage:?}"),
            )),
        }
    }
    if csr.is_ca() != is_ca {
        problems.push(Problem::new(
            "spec.isCA",
            format!(
                "is {is_ca} but the CSR's basic constraints ask for {}",
                if csr.is_ca() {
                    "a CA certificate"
                } else {
                    "no CA certificate"
                }
            ),
        ));
    }
    // A CA certificate signs certificates whatever the usages say.
    let mut requested_key = csr.key_usages().clone();
    if is_ca {
        key.remove(&KeyUsage::KeyCertSign);
        requested_key.remove(&KeyUsage::KeyCertSign);
    }
    if !csr.key_usages().is_empty() && requested_key != key {
        problems.push(Problem::new(
            "spec.usages",
            format!(
                "key usages {} do not agree with the CSR's {}",
                list(&key),
                list(&requested_key)
            ),
        ));
    }
    let requested_extended = csr.extended_key_usages();
    if !requested_extended.is_empty() && *requested_extended != extended {
        problems.push(Problem::new(
            "spec.usages",
            format!(
                "extended key usages {} do not agree with the CSR's {}",
                list(&extended),
                list(requested_extended)
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair,
        KeyUsagePurpose as Ku,
    };

    fn csr(ku: &[Ku], eku: &[Eku], ca: bool) -> ParsedCsr {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.key_usages = ku.to_vec();
        params.extended_key_usages = eku.to_vec();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let der = params.serialize_request(&key).unwrap();
        nico_csr::parse_csr(der.der()).unwrap()
    }

    fn strings(usages: &[&str]) -> Vec<String> {
        usages.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn usages_and_the_csr_are_compared_as_sets() {
        let svid = csr(
            &[Ku::DigitalSignature, Ku::KeyEncipherment],
            &[Eku::ServerAuth, Eku::ClientAuth],
            false,
        );
        let spiffe = [
            "client auth",
            "key encipherment",
            "server auth",
            "digital signature",
        ];
        // (csr, usages, isCA, problem fields)
        let cases: Vec<(&ParsedCsr, Vec<String>, bool, Vec<&str>)> = vec![
            (&svid, strings(&spiffe), false, vec![]),
            (
                &svid,
                strings(&["signing", "key encipherment", "server auth", "client auth"]),
                false,
                vec![],
            ),
            (
                &svid,
                strings(&["digital signature", "server auth", "client auth"]),
                false,
                vec!["spec.usages"],
            ),
            (
                &svid,
                strings(&["digital signature", "key encipherment", "client auth"]),
                false,
                vec!["spec.usages"],
            ),
            (
                &svid,
                strings(&[
                    "digital signature",
                    "key encipherment",
                    "server auth",
                    "client auth",
                    "code signing",
                ]),
                false,
                vec!["spec.usages"],
            ),
            (&svid, strings(&spiffe), true, vec!["spec.isCA"]),
            (
                &svid,
                strings(&["world domination"]),
                false,
                vec!["spec.usages[0]", "spec.usages", "spec.usages"],
            ),
            (&svid, vec![], false, vec!["spec.usages"]),
        ];
        for (csr, usages, is_ca, expected) in cases {
            let fields: Vec<String> = check(csr, &usages, is_ca)
                .into_iter()
                .map(|p| p.field)
                .collect();
            assert_eq!(fields, expected, "{usages:?} isCA={is_ca}");
        }
    }

    #[test]
    fn defaults_absent_extensions_and_ca_requests() {
        let defaults = csr(&[Ku::DigitalSignature, Ku::KeyEncipherment], &[], false);
        assert!(check(&defaults, &[], false).is_empty());
        let nothing = csr(&[], &[], false);
        assert!(check(&nothing, &strings(&["server auth", "cert sign"]), false).is_empty());
        let ca = csr(&[Ku::KeyCertSign, Ku::DigitalSignature], &[], true);
        assert!(check(&ca, &strings(&["digital signature"]), true).is_empty());
        assert!(check(&ca, &strings(&["digital signature", "cert sign"]), true).is_empty());
        let problems = check(&ca, &strings(&["digital signature"]), false);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["spec.isCA", "spec.usages"]);
        assert_eq!(
            problems[1].message,
            "key usages [digitalSignature] do not agree with the CSR's \
             [digitalSignature, keyCertSign]"
        );
        let ipsec = csr(&[], &[Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])], false);
        assert!(check(&ipsec, &strings(&["ipsec tunnel"]), false).is_empty());
        assert!(!check(&ipsec, &strings(&["ipsec user"]), false).is_empty());
    }
}
