//! `split_chain` table tests: the order comes from signatures, never from positions.

use nico_csr::{Chain, ChainError, MAX_CHAIN_LEN, split_chain};
use rcgen::{DistinguishedName, DnType, KeyPair};

use crate::support::{
    Authority, ca_params_with_serial, intermediate, intermediate_with, leaf, root,
};

struct Pki {
    root: Authority,
    upper: Authority,
    lower: Authority,
    leaf: Vec<u8>,
}

fn pki() -> Pki {
    let root = root("root");
    let upper = intermediate("upper", &root);
    let lower = intermediate("lower", &upper);
    let leaf = leaf("leaf", &lower);
    Pki {
        root,
        upper,
        lower,
        leaf,
    }
}

fn expected(pki: &Pki) -> Chain {
    Chain {
        leaf: pki.leaf.clone(),
        intermediates: vec![pki.lower.der.clone(), pki.upper.der.clone()],
        roots: vec![pki.root.der.clone()],
    }
}

/// Every ordering of a small list, by Heap's algorithm.
fn permutations<T: Clone>(items: Vec<T>) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut items = items;
    let mut out = Vec::new();
    heap(items.len(), &mut items, &mut out);
    out
}

#[test]
fn any_order_and_duplicates_give_the_same_chain() {
    let pki = pki();
    let all = vec![
        pki.leaf.clone(),
        pki.lower.der.clone(),
        pki.upper.der.clone(),
        pki.root.der.clone(),
    ];
    let orders = permutations(all);
    assert_eq!(orders.len(), 24);
    for order in orders {
        assert_eq!(split_chain(order).unwrap(), expected(&pki));
    }
    let repeated = vec![
        pki.root.der.clone(),
        pki.leaf.clone(),
        pki.root.der.clone(),
        pki.upper.der.clone(),
        pki.leaf.clone(),
        pki.lower.der.clone(),
        pki.upper.der.clone(),
    ];
    assert_eq!(split_chain(repeated).unwrap(), expected(&pki));
}

#[test]
fn chains_without_a_root_or_without_intermediates() {
    let pki = pki();
    let no_root = split_chain(vec![
        pki.upper.der.clone(),
        pki.leaf.clone(),
        pki.lower.der.clone(),
    ])
    .unwrap();
    assert_eq!(
        no_root.intermediates,
        [pki.lower.der.clone(), pki.upper.der.clone()]
    );
    assert!(no_root.roots.is_empty());
    assert_eq!(no_root.roots_pem(), "");

    let alone = split_chain(vec![pki.leaf.clone()]).unwrap();
    assert_eq!(
        alone,
        Chain {
            leaf: pki.leaf.clone(),
            intermediates: vec![],
            roots: vec![]
        }
    );

    let direct = leaf("direct", &pki.root);
    let short = split_chain(vec![pki.root.der.clone(), direct.clone()]).unwrap();
    assert_eq!(
        short,
        Chain {
            leaf: direct,
            intermediates: vec![],
            roots: vec![pki.root.der.clone()]
        }
    );

    let pem = expected(&pki).certificate_chain_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    let ders = nico_csr::pem_to_ders(pem.as_bytes()).unwrap();
    assert_eq!(
        ders,
        [
            pki.leaf.clone(),
            pki.lower.der.clone(),
            pki.upper.der.clone()
        ]
    );
}

/// Certificates A and B that each issued the other, and a leaf under A.
fn cycle() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (key_a, key_b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let params_a = ca_params_with_serial("A", 1);
    let params_b = ca_params_with_serial("B", 2);
    let a_as_issuer = Authority {
        params: params_a.clone(),
        key: key_a,
        der: vec![],
    };
    let b_as_issuer = Authority {
        params: params_b.clone(),
        key: key_b,
        der: vec![],
    };
    let a = params_a
        .signed_by(&a_as_issuer.key, &b_as_issuer.issuer())
        .unwrap();
    let b = params_b
        .signed_by(&b_as_issuer.key, &a_as_issuer.issuer())
        .unwrap();
    let under_a = leaf("under A", &a_as_issuer);
    (a.der().to_vec(), b.der().to_vec(), under_a)
}

/// One row per broken set: the certificates and a fragment of the expected message.
#[test]
fn broken_sets_are_refused() {
    let pki = pki();
    let other_root = root("other root");
    let second_leaf = leaf("second leaf", &pki.lower);
    // Same name as `lower`, different key: names link, signatures do not.
    let impostor = intermediate("lower", &pki.upper);
    // Same name and key as `lower`, new serial: two valid issuers for the leaf.
    let reissued = intermediate_with(
        ca_params_with_serial("lower", 9),
        KeyPair::from_pem(&pki.lower.key.serialize_pem()).unwrap(),
        &pki.upper,
    );
    let (a, b, under_a) = cycle();
    let many: Vec<Vec<u8>> = (0..=MAX_CHAIN_LEN)
        .map(|i| leaf(&format!("l{i}"), &pki.root))
        .collect();
    let mut renamed = DistinguishedName::new();
    renamed.push(DnType::CommonName, "x");

    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("empty", vec![], "no certificates to order"),
        (
            "garbage",
            vec![pki.leaf.clone(), vec![0x30, 0x00]],
            "certificate 1 of the set could not",
        ),
        (
            "missing intermediate",
            vec![
                pki.leaf.clone(),
                pki.upper.der.clone(),
                pki.root.der.clone(),
            ],
            "gap in the chain: no certificate in the set is named \"CN=lower\" and verifies",
        ),
        (
            "two leaves",
            vec![
                pki.leaf.clone(),
                second_leaf,
                pki.lower.der.clone(),
                pki.upper.der.clone(),
                pki.root.der.clone(),
            ],
            "several leaf candidates (certificate \"CN=leaf\"",
        ),
        (
            "stray root",
            vec![
                pki.leaf.clone(),
                pki.lower.der.clone(),
                pki.upper.der.clone(),
                pki.root.der.clone(),
                other_root.der.clone(),
            ],
            "certificates not on the leaf's chain: certificate \"CN=other root\"",
        ),
        (
            "only roots",
            vec![pki.root.der.clone(), other_root.der.clone()],
            "no leaf certificate: every certificate in the set is self-signed",
        ),
        (
            "impostor intermediate",
            vec![
                pki.leaf.clone(),
                impostor.der,
                pki.upper.der.clone(),
                pki.root.der.clone(),
            ],
            "gap in the chain: no certificate in the set is named \"CN=lower\" and verifies \
             the signature of certificate \"CN=leaf\"",
        ),
        (
            "two valid issuers",
            vec![
                pki.leaf.clone(),
                pki.lower.der.clone(),
                reissued.der,
                pki.upper.der.clone(),
                pki.root.der.clone(),
            ],
            "certificate \"CN=leaf\"",
        ),
        (
            "cycle with a leaf",
            vec![under_a, a.clone(), b.clone()],
            "the issuers form a cycle",
        ),
        ("cycle alone", vec![a, b], "the issuers form a cycle"),
        (
            "too many",
            many,
            "17 certificates given: at most 16 are ordered",
        ),
    ];
    for (name, certs, fragment) in cases {
        let err = split_chain(certs).expect_err(name);
        assert!(err.to_string().contains(fragment), "{name}: {err}");
    }
}

#[test]
fn ambiguous_issuers_are_named() {
    let pki = pki();
    let reissued = intermediate_with(
        ca_params_with_serial("lower", 9),
        KeyPair::from_pem(&pki.lower.key.serialize_pem()).unwrap(),
        &pki.upper,
    );
    let err = split_chain(vec![pki.leaf.clone(), pki.lower.der.clone(), reissued.der]).unwrap_err();
    assert!(matches!(err, ChainError::AmbiguousIssuer { .. }), "{err:?}");
}
