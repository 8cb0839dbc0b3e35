//! Authentication: who is calling.
//!
//! Two kinds of bearer token are accepted: the static admin token (a `system:masters` user)
//! and service-account JWTs this cluster signed. A service-account token is accepted only
//! while its signature, times and audience check out and the service account, and the pod
//! or secret it is bound to, still exist with the uids in the token. A success cache (off
//! by default; kube-apiserver keeps one for 10 s) can model the grace a real server gives
//! a token whose pod was just deleted.
//!
//! A signature, once verified, is remembered (by the token's SHA-256): it cannot stop being
//! valid, and verifying it again on every request was most of the cost of a request made
//! with a service-account token. Everything else is checked on every request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use serde_json::{Map, Value, json};

use crate::status::ApiError;
use crate::store::{Store, key};
use crate::tokens::{BearerToken, Claims, TokenSigner};
use crate::util::meta_str;

/// The audience (and issuer) of tokens meant for this API server.
pub(crate) const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The admin user's name.
pub(crate) const ADMIN_USER: &str = "nico-dev-admin";

/// An authenticated user, as TokenReview and admission report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub(crate) username: String,
    pub(crate) uid: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn admin() -> UserInfo {
        UserInfo {
            username: ADMIN_USER.into(),
            uid: None,
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// `{username, uid, groups, extra}` with empty parts left out.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("username".into(), self.username.clone().into());
        if let Some(uid) = &self.uid {
            map.insert("uid".into(), uid.clone().into());
        }
        map.insert("groups".into(), json!(self.groups));
        if !self.extra.is_empty() {
            map.insert("extra".into(), json!(self.extra));
        }
        Value::Object(map)
    }
}

/// Why a token was not accepted; the texts are TokenReview's `status.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthFailure {
    /// Not a token of this cluster at all.
    #[error("invalid bearer token")]
    Invalid,
    /// Valid, but for other audiences.
    #[error(
        "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
        go_quoted(.token),
        go_quoted(.wanted)
    )]
    Audience {
        token: Vec<String>,
        wanted: Vec<String>,
    },
    /// Past its `exp`.
    #[error("[invalid bearer token, service account token has expired]")]
    Expired,
    /// Its service account, pod or secret is gone or was recreated.
    #[error("[invalid bearer token, service account token has been invalidated]")]
    Invalidated,
}

/// A string list the way Go's `%q` prints it: `["a" "b"]`.
fn go_quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

type CacheKey = (Vec<u8>, Vec<String>);
/// A remembered success: the user, the audiences accepted, and until when.
type CacheEntry = (UserInfo, Vec<String>, Instant);
/// The SHA-256 of a token's text.
type TokenDigest = [u8; 32];

/// How many verified signatures are remembered; past this the memory starts over.
const VERIFIED_CAPACITY: usize = 4096;

/// Checks bearer tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    admin: BearerToken,
    signer: TokenSigner,
    cache_ttl: Duration,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
    /// The claims of tokens whose signature was verified.
    verified: Mutex<HashMap<TokenDigest, Arc<Claims>>>,
}

fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl Authenticator {
    pub(crate) fn new(admin: BearerToken, signer: TokenSigner, cache_ttl: Duration) -> Self {
        Authenticator {
            admin,
            signer,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of a token this cluster signed, its signature verified once.
    fn verified_claims(&self, token: &str) -> Result<Arc<Claims>, AuthFailure> {
        let digest = token_digest(token);
        let lock = || self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(claims) = lock().get(&digest) {
            return Ok(Arc::clone(claims));
        }
        let claims = Arc::new(
            self.signer
                .verify(token)
                .map_err(|_| AuthFailure::Invalid)?,
        );
        let mut verified = lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(digest, Arc::clone(&claims));
        Ok(claims)
    }

    /// Signs service-account token claims.
    pub(crate) fn issue(&self, claims: &Claims) -> Result<BearerToken, ApiError> {
        self.signer
            .sign(claims)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Authenticates an API request from its `Authorization` header (401 on failure).
    pub(crate) fn authenticate(
        &self,
        header: Option<&str>,
        store: &Store,
    ) -> Result<UserInfo, ApiError> {
        // Anonymous requests are not enabled: no credential is 401.
        let header = header.ok_or_else(ApiError::unauthorized)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or_else(ApiError::unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::unauthorized());
        }
        self.review(token, &[API_AUDIENCE.to_owned()], store)
            .map(|(user, _)| user)
            .map_err(|_| ApiError::unauthorized())
    }

    /// Reviews a token for `audiences`: the user and the audiences it was accepted for.
    pub(crate) fn review(
        &self,
        token: &str,
        audiences: &[String],
        store: &Store,
    ) -> Result<(UserInfo, Vec<String>), AuthFailure> {
        if token == self.admin.expose() {
            return Ok((UserInfo::admin(), audiences.to_vec()));
        }
        let cache_key = || (token_digest(token).to_vec(), audiences.to_vec());
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.retain(|_, (_, _, until)| *until > Instant::now());
            if let Some((user, aud, _)) = cache.get(&cache_key()) {
                return Ok((user.clone(), aud.clone()));
            }
        }
        let claims = self.verified_claims(token)?;
        let accepted = check_claims(&claims, audiences, store)?;
        if !self.cache_ttl.is_zero() {
            let until = Instant::now() + self.cache_ttl;
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.insert(cache_key(), (accepted.0.clone(), accepted.1.clone(), until));
        }
        Ok(accepted)
    }
}

fn check_claims(
    claims: &Claims,
    audiences: &[String],
    store: &Store,
) -> Result<(UserInfo, Vec<String>), AuthFailure> {
    if claims.iss != API_AUDIENCE {
        return Err(AuthFailure::Invalid);
    }
    let matched: Vec<String> = audiences
        .iter()
        .filter(|a| claims.aud.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Err(AuthFailure::Audience {
            token: claims.aud.clone(),
            wanted: audiences.to_vec(),
        });
    }
    let now = jiff::Timestamp::now().as_second();
    if now < claims.nbf - 60 {
        return Err(AuthFailure::Invalid);
    }
    if now >= claims.exp {
        return Err(AuthFailure::Expired);
    }
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    let state = store.lock();
    let uid_of = |storage: &str, namespace: Option<&str>, name: &str| {
        state
            .get(storage, &key(namespace, name))
            .map(|o| meta_str(o, "uid").to_owned())
    };
    let sa_uid = uid_of("serviceaccounts", Some(ns), &k.serviceaccount.name);
    if sa_uid.is_none() || sa_uid != k.serviceaccount.uid {
        return Err(AuthFailure::Invalidated);
    }
    for (storage, bound) in [("pods", &k.pod), ("secrets", &k.secret)] {
        if let Some(bound) = bound {
            let uid = uid_of(storage, Some(ns), &bound.name);
            if uid.is_none() || (bound.uid.is_some() && uid != bound.uid) {
                return Err(AuthFailure::Invalidated);
            }
        }
    }
    drop(state);
    let sa = &k.serviceaccount.name;
    let mut extra = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        extra.insert(
            format!("authentication.kubernetes.io/{key}"),
            vec![value.to_owned()],
        );
    };
    put("credential-id", &format!("JTI={}", claims.jti));
    if let Some(node) = &k.node {
        put("node-name", &node.name);
        if let Some(uid) = &node.uid {
            put("node-uid", uid);
        }
    }
    if let Some(pod) = &k.pod {
        put("pod-name", &pod.name);
        if let Some(uid) = &pod.uid {
            put("pod-uid", uid);
        }
    }
    let user = UserInfo {
        username: format!("system:serviceaccount:{ns}:{sa}"),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra,
    };
    Ok((user, matched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{KubernetesClaims, NamedRef};

    fn claims(pod_uid: &str, sa_uid: &str) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            aud: vec![API_AUDIENCE.to_owned()],
            exp: now + 3600,
            iat: now,
            iss: API_AUDIENCE.to_owned(),
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                node: None,
                pod: Some(NamedRef {
                    name: "p".into(),
                    uid: Some(pod_uid.into()),
                }),
                secret: None,
                serviceaccount: NamedRef {
                    name: "sa".into(),
                    uid: Some(sa_uid.into()),
                },
            },
            nbf: now,
            sub: "system:serviceaccount:ns:sa".into(),
        }
    }

    #[test]
    fn a_remembered_signature_still_gets_every_other_check() {
        let store = Store::new(10);
        {
            let mut st = store.lock();
            let sa = json!({"metadata": {"name": "sa", "namespace": "ns", "uid": "sa-1"}});
            let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "pod-1"}});
            st.insert("serviceaccounts", key(Some("ns"), "sa"), sa);
            st.insert("pods", key(Some("ns"), "p"), pod);
        }
        let signer = TokenSigner::generate().expect("a key");
        let other = TokenSigner::generate().expect("a key");
        let auth = Authenticator::new(BearerToken::new("admin".into()), signer, Duration::ZERO);
        let token = auth.issue(&claims("pod-1", "sa-1")).expect("signed");
        let aud = [API_AUDIENCE.to_owned()];
        for _ in 0..2 {
            let (user, _) = auth.review(token.expose(), &aud, &store).expect("accepted");
            assert_eq!(user.username, "system:serviceaccount:ns:sa");
        }
        let forged = other.sign(&claims("pod-1", "sa-1")).expect("signed");
        assert_eq!(
            auth.review(forged.expose(), &aud, &store).map(|_| ()),
            Err(AuthFailure::Invalid),
            "another key's signature is never taken for a remembered one"
        );
        let other_aud = ["https://vault".to_owned()];
        assert!(matches!(
            auth.review(token.expose(), &other_aud, &store),
            Err(AuthFailure::Audience { .. })
        ));
        store.lock().remove("pods", &key(Some("ns"), "p"));
        assert_eq!(
            auth.review(token.expose(), &aud, &store).map(|_| ()),
            Err(AuthFailure::Invalidated),
            "the bound pod is looked up again"
        );
    }

    #[test]
    fn audience_error_reads_like_go() {
        let e = AuthFailure::Audience {
            token: vec!["a".into()],
            wanted: vec!["b".into(), "c".into()],
        };
        assert_eq!(
            e.to_string(),
            "[invalid bearer token, token audiences [\"a\"] is invalid for the target audiences \
             [\"b\" \"c\"]]"
        );
    }
}
