//! Service-account tokens: ES256 JWTs signed with a key made when the dev cluster starts.
//!
//! The claims are the ones kube-apiserver puts in a bound token: `aud`, `exp`, `iat`, `iss`,
//! `jti`, `nbf`, `sub` and the `kubernetes.io` block naming the namespace, the service
//! account and the bound pod (with its node) or secret. Token text never reaches a log: it
//! lives in [`BearerToken`], whose `Debug` is redacted.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A bearer token. Its `Debug` never shows the text.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(String);

impl BearerToken {
    /// Wraps token text.
    pub(crate) fn new(text: String) -> BearerToken {
        BearerToken(text)
    }

    /// The token text, for the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why a token could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// The text is not three base64url parts holding JSON.
    #[error("token is malformed")]
    Malformed,
    /// The header names another algorithm or key.
    #[error("token was not signed by this cluster")]
    ForeignKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The key could not be generated or could not sign.
    #[error("failed to sign a token")]
    Signing,
}

/// A name and, when known, a uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NamedRef {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KubernetesClaims {
    pub(crate) namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<NamedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pod: Option<NamedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<NamedRef>,
    pub(crate) serviceaccount: NamedRef,
}

/// The claims of a service-account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) aud: Vec<String>,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) iss: String,
    pub(crate) jti: String,
    #[serde(rename = "kubernetes.io")]
    pub(crate) kubernetes: KubernetesClaims,
    pub(crate) nbf: i64,
    pub(crate) sub: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

/// Signs and verifies tokens with the cluster's key.
pub(crate) struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Generates a fresh P-256 key.
    pub(crate) fn generate() -> Result<TokenSigner, TokenError> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| TokenError::Signing)?;
        let hash = digest::digest(&digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(hash.as_ref());
        Ok(TokenSigner { key, kid })
    }

    /// Signs `claims` into a compact JWS.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<BearerToken, TokenError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let head = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let body = serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?;
        let (head, body) = (URL_SAFE_NO_PAD.encode(head), URL_SAFE_NO_PAD.encode(body));
        let input = format!("{head}.{body}");
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| TokenError::Signing)?;
        Ok(BearerToken(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        )))
    }

    /// Checks the signature and returns the claims. Time, audience and binding checks are
    /// the caller's.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed);
        let header: Header =
            serde_json::from_slice(&decode(head)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "ES256" || header.kid != self.kid {
            return Err(TokenError::ForeignKey);
        }
        let signature = decode(sig)?;
        let signed = &token[..head.len() + 1 + body.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&decode(body)?).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                node: None,
                pod: Some(NamedRef {
                    name: "p".into(),
                    uid: Some("pu".into()),
                }),
                secret: None,
                serviceaccount: NamedRef {
                    name: "sa".into(),
                    uid: Some("su".into()),
                },
            },
            nbf: 1_000_000_000,
            sub: "system:serviceaccount:ns:sa".into(),
        }
    }

    #[test]
    fn round_trip() {
        let signer = TokenSigner::generate().expect("key");
        let token = signer.sign(&claims()).expect("signed");
        assert_eq!(signer.verify(token.expose()), Ok(claims()));
    }

    #[test]
    fn tampering_is_detected() {
        let signer = TokenSigner::generate().expect("key");
        let token = signer.sign(&claims()).expect("signed");
        let parts: Vec<&str> = token.expose().split('.').collect();
        let mut forged = claims();
        forged.sub = "system:serviceaccount:ns:admin".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        let tampered = format!("{}.{}.{}", parts[0], body, parts[2]);
        assert_eq!(signer.verify(&tampered), Err(TokenError::BadSignature));
        let other = TokenSigner::generate().expect("key");
        assert_eq!(other.verify(token.expose()), Err(TokenError::ForeignKey));
        assert_eq!(signer.verify("not-a-token"), Err(TokenError::Malformed));
        assert_eq!(signer.verify("a.b.c"), Err(TokenError::Malformed));
    }

    #[test]
    fn debug_is_redacted() {
        let token = BearerToken::new("secret-text".into());
        assert!(!format!("{token:?}").contains("secret"));
    }
}
