//! Ordering a CA's response into leaf, intermediates and roots by who signed whom.
//!
//! CAs return certificates in whatever order suits them, sometimes with duplicates. The
//! order here comes only from the certificates themselves: an issuer's subject must equal
//! the issued certificate's issuer name AND its key must verify the issued signature.

use std::collections::BTreeSet;

use x509_parser::certificate::X509Certificate;

use crate::certificate::{CertificateError, ders_to_pem, is_self_signed, parse_x509};
use crate::model::{Subject, hex};

/// The most certificates [`split_chain`] orders; linking is quadratic in signature checks.
pub const MAX_CHAIN_LEN: usize = 16;

/// A certificate chain in its roles. DER throughout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The one certificate that issued no other certificate in the set.
    pub leaf: Vec<u8>,
    /// The certificates between the leaf and the root, leaf-upward.
    pub intermediates: Vec<Vec<u8>>,
    /// The self-signed certificate at the top of the chain, when the set contains it.
    pub roots: Vec<Vec<u8>>,
}

impl Chain {
    /// Leaf then intermediates as PEM, the content of `tls.crt`.
    pub fn certificate_chain_pem(&self) -> String {
        let mut ders = Vec::with_capacity(1 + self.intermediates.len());
        ders.push(self.leaf.as_slice());
        ders.extend(self.intermediates.iter().map(Vec::as_slice));
        ders_to_pem(&ders)
    }

    /// The roots as PEM, the content of `ca.crt`; empty when there is no root.
    pub fn roots_pem(&self) -> String {
        ders_to_pem(&self.roots)
    }
}

/// Why a set of certificates does not form one chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No certificates were given.
    #[error("no certificates to order")]
    Empty,

    /// More than [`MAX_CHAIN_LEN`] distinct certificates.
    #[error("{count} certificates given: at most {MAX_CHAIN_LEN} are ordered")]
    TooMany {
        /// Number of distinct certificates.
        count: usize,
    },

    /// A certificate does not parse.
    #[error("certificate {index} of the set could not be parsed")]
    Unparsable {
        /// Zero-based position in the input.
        index: usize,
        /// Why it did not parse.
        #[source]
        cause: CertificateError,
    },

    /// Every certificate is self-signed, so none can be the leaf.
    #[error("no leaf certificate: every certificate in the set is self-signed")]
    NoLeaf,

    /// More than one certificate issued nothing else (CA certificates only count when no
    /// single end-entity certificate stands out).
    #[error("several leaf candidates ({}): expected exactly one", candidates.join(", "))]
    SeveralLeaves {
        /// Descriptions of the candidates.
        candidates: Vec<String>,
    },

    /// Following issuers leads back to a certificate already on the path.
    #[error("the issuers form a cycle at {certificate}")]
    Cycle {
        /// Description of a certificate in the cycle.
        certificate: String,
    },

    /// More than one certificate in the set verifies as this certificate's issuer.
    #[error("{certificate} has several possible issuers in the set")]
    AmbiguousIssuer {
        /// Description of the certificate.
        certificate: String,
    },

    /// The chain stops at a certificate whose issuer is missing while other certificates of
    /// the set remain unlinked, e.g. a missing intermediate between leaf and root.
    #[error(
        "gap in the chain: no certificate in the set is named {issuer:?} and verifies the \
         signature of {certificate}, leaving {unlinked} certificate(s) unlinked"
    )]
    Gap {
        /// Description of the last certificate reached.
        certificate: String,
        /// Its issuer name.
        issuer: String,
        /// How many certificates were left out.
        unlinked: usize,
    },

    /// The chain reached its root and some certificates are not on it.
    #[error("certificates not on the leaf's chain: {}", certificates.join(", "))]
    Unlinked {
        /// Descriptions of the stray certificates.
        certificates: Vec<String>,
    },
}

struct Node<'a> {
    input_index: usize,
    cert: X509Certificate<'a>,
    self_signed: bool,
    /// Indices (into the node list) of the certificates that issued this one.
    issuers: Vec<usize>,
}

/// Orders certificates into a [`Chain`]. Duplicates are dropped and the input order does
/// not matter; every distinct certificate must end up on the leaf's chain.
///
/// The leaf is the one certificate that is not self-signed and issued no other certificate
/// of the set; if several qualify but only one of them is not a CA, that one is the leaf and
/// the CAs are reported as a gap. From the leaf, each certificate's issuer is the single
/// other certificate whose subject equals its issuer name and whose key verifies its
/// signature. The walk stops at a self-signed certificate (the root) or where no issuer is
/// present (a chain without its root).
pub fn split_chain(certs: Vec<Vec<u8>>) -> Result<Chain, ChainError> {
    if certs.is_empty() {
        return Err(ChainError::Empty);
    }
    let mut seen = BTreeSet::new();
    let distinct: Vec<usize> = (0..certs.len())
        .filter(|&i| seen.insert(certs[i].as_slice()))
        .collect();
    if distinct.len() > MAX_CHAIN_LEN {
        return Err(ChainError::TooMany {
            count: distinct.len(),
        });
    }
    let mut nodes = Vec::with_capacity(distinct.len());
    for input_index in distinct {
        let cert = parse_x509(&certs[input_index]).map_err(|cause| ChainError::Unparsable {
            index: input_index,
            cause,
        })?;
        let self_signed = is_self_signed(&cert);
        nodes.push(Node {
            input_index,
            cert,
            self_signed,
            issuers: Vec::new(),
        });
    }
    link(&mut nodes);

    let mut issued_something = vec![false; nodes.len()];
    for node in &nodes {
        for &issuer in &node.issuers {
            issued_something[issuer] = true;
        }
    }
    let mut candidates: Vec<usize> = (0..nodes.len())
        .filter(|&i| !nodes[i].self_signed && !issued_something[i])
        .collect();
    // A CA certificate that issued nothing here is a chain whose lower part is missing,
    // not a second leaf: let the one end-entity certificate lead so the gap is reported.
    let end_entities: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| !nodes[i].cert.is_ca())
        .collect();
    if candidates.len() > 1 && end_entities.len() == 1 {
        candidates = end_entities;
    }
    let leaf = match candidates.as_slice() {
        [leaf] => *leaf,
        [] if nodes.iter().all(|node| node.self_signed) => return Err(ChainError::NoLeaf),
        [] => {
            // Every certificate that is not self-signed issued another one: the "issued"
            // relation has no end, so it loops.
            let first = nodes
                .iter()
                .find(|node| !node.self_signed)
                .unwrap_or(&nodes[0]);
            return Err(ChainError::Cycle {
                certificate: describe(&first.cert),
            });
        }
        several => {
            let candidates = several.iter().map(|&i| describe(&nodes[i].cert)).collect();
            return Err(ChainError::SeveralLeaves { candidates });
        }
    };

    let path = walk_up(&nodes, leaf)?;
    let top = path[path.len() - 1];
    let on_path: BTreeSet<usize> = path.iter().copied().collect();
    let stray: Vec<usize> = (0..nodes.len()).filter(|i| !on_path.contains(i)).collect();
    let has_root = top != leaf && nodes[top].self_signed;
    if !stray.is_empty() {
        return Err(if has_root {
            ChainError::Unlinked {
                certificates: stray.iter().map(|&i| describe(&nodes[i].cert)).collect(),
            }
        } else {
            ChainError::Gap {
                certificate: describe(&nodes[top].cert),
                issuer: nodes[top].cert.issuer().to_string(),
                unlinked: stray.len(),
            }
        });
    }

    let der_of = |i: usize| certs[nodes[i].input_index].clone();
    let (middle, roots) = if has_root {
        (&path[1..path.len() - 1], vec![der_of(top)])
    } else {
        (&path[1..], Vec::new())
    };
    Ok(Chain {
        leaf: der_of(leaf),
        intermediates: middle.iter().map(|&i| der_of(i)).collect(),
        roots,
    })
}

/// Records, for every certificate, which other certificates of the set issued it.
fn link(nodes: &mut [Node<'_>]) {
    for issued in 0..nodes.len() {
        let issuers: Vec<usize> = (0..nodes.len())
            .filter(|&issuer| issuer != issued)
            .filter(|&issuer| {
                let (child, parent) = (&nodes[issued].cert, &nodes[issuer].cert);
                child.issuer().as_raw() == parent.subject().as_raw()
                    && child.verify_signature(Some(parent.public_key())).is_ok()
            })
            .collect();
        nodes[issued].issuers = issuers;
    }
}

/// The path from the leaf up to a self-signed root or to the last issuer present.
fn walk_up(nodes: &[Node<'_>], leaf: usize) -> Result<Vec<usize>, ChainError> {
    let mut path = vec![leaf];
    let mut current = leaf;
    while !(current != leaf && nodes[current].self_signed) {
        let next = match nodes[current].issuers.as_slice() {
            [] => break,
            [next] => *next,
            _ => {
                return Err(ChainError::AmbiguousIssuer {
                    certificate: describe(&nodes[current].cert),
                });
            }
        };
        if path.contains(&next) {
            return Err(ChainError::Cycle {
                certificate: describe(&nodes[next].cert),
            });
        }
        path.push(next);
        current = next;
    }
    Ok(path)
}

/// Names a certificate in an error: its subject if it has one, and its serial.
fn describe(cert: &X509Certificate<'_>) -> String {
    let subject = Subject::from_name(cert.subject());
    let serial = hex(cert.raw_serial());
    if subject.is_empty() {
        format!("certificate with an empty subject (serial {serial})")
    } else {
        format!("certificate \"{subject}\" (serial {serial})")
    }
}
