//! [`AllowedKey`]: one entry of a key allow-list (algorithm and size), matched against the
//! public key a CSR carries.

use std::fmt;
use std::str::FromStr;

use nico_csr::{EcCurve, PublicKeyAlgorithm};

/// The smallest RSA modulus an allow-list may name: smaller keys are breakable.
pub const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus an allow-list may name: larger keys only cost CPU.
pub const MAX_RSA_BITS: usize = 8192;

/// A key shape that may be approved. Written `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`,
/// `rsa-<bits>` (2048 to 8192, a multiple of 8) or `ed25519`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AllowedKey {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// ECDSA on NIST P-521.
    EcdsaP521,
    /// RSA with a modulus of exactly this many bits.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
}

/// An allow-list entry that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown key {presented:?}: expected ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519 or \
     rsa-<bits> with {MIN_RSA_BITS} to {MAX_RSA_BITS} bits in steps of 8"
)]
pub struct AllowedKeyError {
    /// The entry as written.
    pub presented: String,
}

impl AllowedKey {
    /// Whether a public key of `algorithm` has this shape.
    pub fn admits(self, algorithm: &PublicKeyAlgorithm) -> bool {
        match (self, algorithm) {
            (Self::EcdsaP256, PublicKeyAlgorithm::Ec { curve }) => *curve == EcCurve::P256,
            (Self::EcdsaP384, PublicKeyAlgorithm::Ec { curve }) => *curve == EcCurve::P384,
            (Self::EcdsaP521, PublicKeyAlgorithm::Ec { curve }) => *curve == EcCurve::P521,
            (Self::Rsa(bits), PublicKeyAlgorithm::Rsa { modulus_bits }) => bits == *modulus_bits,
            (Self::Ed25519, PublicKeyAlgorithm::Ed25519) => true,
            _ => false,
        }
    }
}

impl FromStr for AllowedKey {
    type Err = AllowedKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refused = || AllowedKeyError {
            presented: s.to_owned(),
        };
        match s {
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            "ecdsa-p384" => Ok(Self::EcdsaP384),
            "ecdsa-p521" => Ok(Self::EcdsaP521),
            "ed25519" => Ok(Self::Ed25519),
            _ => {
                let digits = s.strip_prefix("rsa-").ok_or_else(refused)?;
                // Only plain decimal digits: "+2048" or "02048" would parse but are not how
                // anyone writes a key size.
                if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refused());
                }
                let bits: usize = digits.parse().map_err(|_| refused())?;
                let sane = (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) && bits.is_multiple_of(8);
                sane.then_some(Self::Rsa(bits)).ok_or_else(refused)
            }
        }
    }
}

impl fmt::Display for AllowedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ecdsa-p256"),
            Self::EcdsaP384 => f.write_str("ecdsa-p384"),
            Self::EcdsaP521 => f.write_str("ecdsa-p521"),
            Self::Rsa(bits) => write!(f, "rsa-{bits}"),
            Self::Ed25519 => f.write_str("ed25519"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_bad_ones_are_refused() {
        for text in [
            "ecdsa-p256",
            "ecdsa-p384",
            "ecdsa-p521",
            "ed25519",
            "rsa-2048",
        ] {
            assert_eq!(text.parse::<AllowedKey>().unwrap().to_string(), text);
        }
        assert_eq!("rsa-4096".parse(), Ok(AllowedKey::Rsa(4096)));
        for bad in [
            "rsa-1024",
            "rsa-2049",
            "rsa-16384",
            "rsa-",
            "rsa-02048",
            "rsa-+2048",
            "RSA-2048",
            "ecdsa",
            "p256",
            "",
        ] {
            assert!(bad.parse::<AllowedKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_matched_by_algorithm_and_size() {
        let p256 = PublicKeyAlgorithm::Ec {
            curve: EcCurve::P256,
        };
        let rsa = |modulus_bits| PublicKeyAlgorithm::Rsa { modulus_bits };
        assert!(AllowedKey::EcdsaP256.admits(&p256));
        assert!(!AllowedKey::EcdsaP384.admits(&p256));
        assert!(AllowedKey::Rsa(2048).admits(&rsa(2048)));
        assert!(!AllowedKey::Rsa(2048).admits(&rsa(2047)));
        assert!(!AllowedKey::Rsa(2048).admits(&rsa(4096)));
        assert!(!AllowedKey::EcdsaP256.admits(&PublicKeyAlgorithm::Ec {
            curve: EcCurve::Unnamed
        }));
        assert!(AllowedKey::Ed25519.admits(&PublicKeyAlgorithm::Ed25519));
        // Every algorithm nico-identity generates has an allow-list spelling.
        for generated in nico_csr::KeyAlgorithm::ALL {
            assert!(
                generated.as_str().parse::<AllowedKey>().is_ok(),
                "{generated}"
            );
        }
    }
}
