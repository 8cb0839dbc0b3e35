//! Private keys: generated in memory, printable only as their algorithm.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
    PublicKeyData, RsaKeySize,
};

use crate::model::PublicKeyAlgorithm;

/// A key algorithm nico-identity can generate and accept.
///
/// The enum is `non_exhaustive` so that more algorithms can be added without breaking
/// callers that match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on the NIST P-256 curve, signing with SHA-256. Written `ecdsa-p256`; the default.
    EcdsaP256,
    /// ECDSA on the NIST P-384 curve, signing with SHA-384. Written `ecdsa-p384`.
    EcdsaP384,
    /// Ed25519. Written `ed25519`.
    Ed25519,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 with SHA-256. Written `rsa-2048`.
    Rsa2048,
    /// RSA with a 3072-bit modulus. Written `rsa-3072`.
    Rsa3072,
    /// RSA with a 4096-bit modulus. Written `rsa-4096`.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every supported algorithm, in the order they are listed in messages.
    pub const ALL: &'static [KeyAlgorithm] = &[
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    /// The configuration spelling, e.g. `ecdsa-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &PKCS_ED25519,
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => &PKCS_RSA_SHA256,
        }
    }

    fn rsa_size(self) -> Option<RsaKeySize> {
        match self {
            Self::Rsa2048 => Some(RsaKeySize::_2048),
            Self::Rsa3072 => Some(RsaKeySize::_3072),
            Self::Rsa4096 => Some(RsaKeySize::_4096),
            Self::EcdsaP256 | Self::EcdsaP384 | Self::Ed25519 => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm {
                presented: s.to_owned(),
            })
    }
}

/// Why a key could not be generated, loaded or named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A configuration named an algorithm that does not exist.
    #[error("unknown key algorithm {presented:?}: expected one of {}", supported())]
    UnknownAlgorithm {
        /// The presented name.
        presented: String,
    },

    /// The crypto library failed to generate a key.
    #[error("failed to generate a key of type {algorithm}")]
    Generate {
        /// The algorithm asked for.
        algorithm: KeyAlgorithm,
        /// The crypto library's error.
        #[source]
        cause: rcgen::Error,
    },

    /// The PEM text is not a PKCS#8 private key the crypto library can read.
    #[error("failed to load the private key: expected a PKCS#8 PEM block")]
    Load {
        /// The crypto library's error.
        #[source]
        cause: rcgen::Error,
    },

    /// The loaded key is valid but of an algorithm nico-identity does not use.
    #[error(
        "private key algorithm is not supported: expected one of {}",
        supported()
    )]
    UnsupportedAlgorithm,
}

fn supported() -> String {
    let names: Vec<_> = KeyAlgorithm::ALL.iter().map(|alg| alg.as_str()).collect();
    names.join(", ")
}

/// A private key held in memory. Its `Debug` output shows the algorithm only, so it can sit
/// in structs that get logged.
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    pair: KeyPair,
}

impl PrivateKey {
    /// Generates a fresh key from the operating system's randomness.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let pair = match algorithm.rsa_size() {
            Some(size) => KeyPair::generate_rsa_for(algorithm.rcgen(), size),
            None => KeyPair::generate_for(algorithm.rcgen()),
        }
        .map_err(|cause| KeyError::Generate { algorithm, cause })?;
        Ok(Self { algorithm, pair })
    }

    /// Loads a PKCS#8 PEM key, e.g. a `tls.key` written earlier by [`Self::pkcs8_pem`].
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pem(pem).map_err(|cause| KeyError::Load { cause })?;
        let spki = pair.subject_public_key_info();
        let algorithm = crate::model::spki_algorithm(&spki)
            .as_ref()
            .and_then(PublicKeyAlgorithm::key_algorithm)
            .ok_or(KeyError::UnsupportedAlgorithm)?;
        Ok(Self { algorithm, pair })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The private key as a PKCS#8 `PRIVATE KEY` PEM block, for writing `tls.key`.
    ///
    /// This is secret material: write it only to the volume it belongs to, never to a log.
    pub fn pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The public key as DER `SubjectPublicKeyInfo`, to compare with a certificate's.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>().unwrap(), *alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        let err = "rsa-1024".parse::<KeyAlgorithm>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key algorithm \"rsa-1024\": expected one of ecdsa-p256, ecdsa-p384, \
             ed25519, rsa-2048, rsa-3072, rsa-4096"
        );
        assert!("ECDSA-P256".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "PrivateKey { algorithm: EcdsaP256, .. }");
        let pem = key.pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..16]));
    }

    #[test]
    fn pem_round_trip_keeps_the_algorithm_and_public_key() {
        for &algorithm in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = key.pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let loaded = PrivateKey::from_pkcs8_pem(&pem).unwrap();
            assert_eq!(loaded.algorithm(), algorithm);
            assert_eq!(loaded.spki_der(), key.spki_der());
        }
    }

    #[test]
    fn load_refuses_garbage_and_foreign_algorithms() {
        let err = PrivateKey::from_pkcs8_pem("not a key").unwrap_err();
        assert!(matches!(err, KeyError::Load { .. }), "{err:?}");
        // P-521 keys load in the crypto library but are not an algorithm we issue for.
        let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512)
            .unwrap()
            .serialize_pem();
        let err = PrivateKey::from_pkcs8_pem(&p521).unwrap_err();
        assert!(matches!(err, KeyError::UnsupportedAlgorithm), "{err:?}");
    }
}
