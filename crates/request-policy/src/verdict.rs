//! Many policies, one answer: approved when one applicable policy permits the request
//! entirely, denied with every policy's reasons otherwise, untouched when none applies.

use std::fmt::Write as _;

use crate::request::Violation;

/// The longest message a verdict carries: conditions are read by people, and the API
/// server bounds object sizes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The named policy permits the request.
    Approve {
        /// The first permitting policy, by name.
        policy: String,
    },
    /// Every applicable policy refuses it.
    Deny {
        /// Each policy's reasons, for the `Denied` condition.
        message: String,
    },
    /// No policy applies: the request is left for someone else (or for a policy still to
    /// come).
    NoPolicy,
}

impl Verdict {
    /// Combines the results of the applicable policies, `(name, result)` in a stable order
    /// (by name), so that replicas reach the same verdict and message.
    pub fn combine<'a>(
        results: impl IntoIterator<Item = (&'a str, Result<(), Vec<Violation>>)>,
    ) -> Self {
        let mut denials: Vec<(&str, Vec<Violation>)> = Vec::new();
        for (name, result) in results {
            match result {
                Ok(()) => {
                    return Self::Approve {
                        policy: name.to_owned(),
                    };
                }
                Err(violations) => denials.push((name, violations)),
            }
        }
        if denials.is_empty() {
            return Self::NoPolicy;
        }
        let mut message = String::from("no CertificateRequestPolicy approved this request:");
        for (name, violations) in denials {
            // invariant: writing to a String cannot fail.
            let _ = write!(message, " [{name}]");
            for (i, violation) in violations.iter().enumerate() {
                let separator = if i == 0 { " " } else { "; " };
                let _ = write!(message, "{separator}{violation}");
            }
        }
        Self::Deny {
            message: bounded(message),
        }
    }
}

fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        return message;
    }
    let mut cut = MAX_MESSAGE_LEN - 3;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &message[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(field: &'static str, reason: &str) -> Result<(), Vec<Violation>> {
        Err(vec![Violation::new(field, reason)])
    }

    #[test]
    fn one_passing_policy_approves_and_otherwise_every_reason_is_given() {
        assert_eq!(Verdict::combine([]), Verdict::NoPolicy);
        assert_eq!(
            Verdict::combine([("a", no("spec.duration", "too long")), ("b", Ok(()))]),
            Verdict::Approve {
                policy: "b".to_owned()
            }
        );
        let mut two = vec![Violation::new("spec.duration", "too long")];
        two.push(Violation::new("spec.usages", "\"cert sign\" not allowed"));
        let denied = Verdict::combine([("a", Err(two)), ("b", no("csr.publicKey", "RSA"))]);
        assert_eq!(
            denied,
            Verdict::Deny {
                message: "no CertificateRequestPolicy approved this request: [a] spec.duration: \
                          too long; spec.usages: \"cert sign\" not allowed [b] csr.publicKey: RSA"
                    .to_owned()
            }
        );
    }

    #[test]
    fn messages_are_bounded() {
        let long = "é".repeat(MAX_MESSAGE_LEN);
        let Verdict::Deny { message } = Verdict::combine([("a", no("spec", &long))]) else {
            panic!("expected a denial");
        };
        assert!(message.len() <= MAX_MESSAGE_LEN);
        assert!(message.ends_with("..."));
    }
}
