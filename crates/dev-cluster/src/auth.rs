//! Authentication: who is calling.
//!
//! Two kinds of bearer token are accepted: the static admin token (a `system:masters` user)
//! and service-account JWTs this cluster signed. A service-account token is accepted only
//! while its signature, times and audience check out and the service account, and the pod
//! or secret it is bound to, still exist with the uids in the token. A success cache (off
//! by default; kube-apiserver keeps one for 10 s) can model the grace a real server gives
//! a token whose pod was just deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
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

/// Checks bearer tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    admin: BearerToken,
    signer: TokenSigner,
    cache_ttl: Duration,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl Authenticator {
    pub(crate) fn new(admin: BearerToken, signer: TokenSigner, cache_ttl: Duration) -> Self {
        let cache = Mutex::new(HashMap::new());
        Authenticator {
            admin,
            signer,
            cache_ttl,
            cache,
        }
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
        let cache_key = (
            digest::digest(&digest::SHA256, token.as_bytes())
                .as_ref()
                .to_vec(),
            audiences.to_vec(),
        );
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.retain(|_, (_, _, until)| *until > Instant::now());
            if let Some((user, aud, _)) = cache.get(&cache_key) {
                return Ok((user.clone(), aud.clone()));
            }
        }
        let claims = self
            .signer
            .verify(token)
            .map_err(|_| AuthFailure::Invalid)?;
        let accepted = check_claims(&claims, audiences, store)?;
        if !self.cache_ttl.is_zero() {
            let until = Instant::now() + self.cache_ttl;
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.insert(cache_key, (accepted.0.clone(), accepted.1.clone(), until));
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
