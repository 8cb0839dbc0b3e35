//! The HTTP front: one axum fallback handler that reads the body under a size limit,
//! authenticates, routes the path, authorizes, calls the handler and writes the answer with
//! the headers a real API server sends.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::ServiceRef;
use crate::access_reviews::{self, ReviewKind};
use crate::admission::{Connections, WebhookCache};
use crate::auth::{Authenticator, UserInfo};
use crate::authz::{self, Attributes, Authorization, ResourceAttributes};
use crate::registry::{self, ResourceDef};
use crate::status::ApiError;
use crate::store::{Object, Store};
use crate::{discovery, handlers, reviews};

/// Everything a request handler may need.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) auth: Authenticator,
    pub(crate) authorization: Authorization,
    pub(crate) stamp_requester_identity: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// `host:port` the server answers on, for `/api`.
    pub(crate) server_address: String,
    /// Fixed per cluster, like the flow-control UIDs of a real server.
    pub(crate) flow_schema_uid: String,
    pub(crate) priority_level_uid: String,
    /// Where webhook Services are reached.
    pub(crate) services: RwLock<BTreeMap<ServiceRef, SocketAddr>>,
    /// The admission webhooks, read from their configurations.
    pub(crate) webhooks: WebhookCache,
    /// Kept-alive connections to admission webhooks.
    pub(crate) webhook_connections: Connections,
}

/// What a handler answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A JSON body, compact with a trailing newline.
    Json(u16, Value),
    /// A stored object, written from its shared JSON text with a trailing newline.
    Object(u16, Arc<Object>),
    /// JSON text made by the handler; the trailing newline is added.
    JsonText(u16, Vec<u8>),
    /// A body written as is.
    Raw {
        code: u16,
        content_type: &'static str,
        body: String,
    },
    /// A watch: chunked JSON lines.
    Stream(mpsc::Receiver<Result<Bytes, Infallible>>),
}

impl Reply {
    pub(crate) fn ok(value: Value) -> Reply {
        Reply::Json(200, value)
    }
}

/// A subresource the dev cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Status,
    Token,
}

/// A resource path, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) def: &'static ResourceDef,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<Sub>,
}

#[derive(Debug)]
enum Route {
    Health,
    Version,
    CoreVersions,
    CoreResources,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Resource(Target),
    TokenReview,
    SelfSubjectReview,
    AccessReview(ReviewKind),
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Some(Route::Health),
        ["version"] => Some(Route::Version),
        ["api"] => Some(Route::CoreVersions),
        ["api", "v1"] => Some(Route::CoreResources),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis"] => Some(Route::Groups),
        ["apis", g] => Some(Route::Group((*g).to_owned())),
        ["apis", g, v] => Some(Route::GroupVersion((*g).to_owned(), (*v).to_owned())),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Some(Route::TokenReview),
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => {
            Some(Route::SelfSubjectReview)
        }
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
            Some(Route::AccessReview(ReviewKind::Subject))
        }
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => Some(Route::AccessReview(ReviewKind::SelfSubject)),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "namespaces",
            ns,
            "localsubjectaccessreviews",
        ] => Some(Route::AccessReview(ReviewKind::Local((*ns).to_owned()))),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => None,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let (def, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if registry::lookup(group, version, plural).is_some_and(|d| d.namespaced) =>
        {
            (
                registry::lookup(group, version, plural)?,
                Some((*ns).to_owned()),
                tail,
            )
        }
        [plural, tail @ ..] => (registry::lookup(group, version, plural)?, None, tail),
        [] => return None,
    };
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, "status"] if def.status_subresource => (Some((*name).to_owned()), Some(Sub::Status)),
        [name, "token"] if def.plural == "serviceaccounts" && def.group.is_empty() => {
            (Some((*name).to_owned()), Some(Sub::Token))
        }
        _ => return None,
    };
    // Namespaced objects are named only inside their namespace.
    if def.namespaced && namespace.is_none() && name.is_some() {
        return None;
    }
    Some(Route::Resource(Target {
        def,
        namespace,
        name,
        sub,
    }))
}

/// The request as handlers see it.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a Arc<AppState>,
    pub(crate) user: &'a UserInfo,
    pub(crate) query: &'a HashMap<String, String>,
    pub(crate) content_type: &'a str,
    pub(crate) user_agent: &'a str,
    pub(crate) body: &'a [u8],
}

impl Ctx<'_> {
    /// A query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A boolean query parameter (`true`/`1`).
    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    /// Whether `dryRun=All` was asked for.
    pub(crate) fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    /// The field manager: `fieldManager`, else the User-Agent up to its first `/`.
    pub(crate) fn manager(&self) -> String {
        if let Some(m) = self.param("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_owned();
        }
        match self.user_agent.split('/').next() {
            Some(prefix) if !prefix.is_empty() => prefix.to_owned(),
            _ => "unknown".to_owned(),
        }
    }
}

/// The axum entry point for every request.
pub(crate) async fn entry(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let audit_id = crate::util::new_uid();
    let span = tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        user = tracing::field::Empty,
    );
    let reply = serve(&state, req).instrument(span).await;
    let reply = reply.unwrap_or_else(|e| Reply::Json(e.code, e.to_status()));
    render(&state, reply, &audit_id)
}

/// Bodies of POST and PUT must be JSON: protobuf and CBOR get 415, after which client-go
/// falls back to JSON.
fn check_body_type(method: &Method, content_type: &str) -> Result<(), ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let binary = media.contains("protobuf") || media.contains("cbor");
    if (method == Method::POST || method == Method::PUT) && binary {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml (not {media})"
        )));
    }
    Ok(())
}

async fn serve(state: &Arc<AppState>, req: Request) -> Result<Reply, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, state.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::too_large(state.max_body_bytes));
        }
        Err(_) => return Err(ApiError::bad_request("failed to read the request body")),
    };
    let path = parts.uri.path();
    let route = route(path).ok_or_else(ApiError::no_route)?;
    if matches!(route, Route::Health) {
        return Ok(Reply::Raw {
            code: 200,
            content_type: "text/plain; charset=utf-8",
            body: "ok".into(),
        });
    }
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = state.auth.authenticate(auth_header, &state.store)?;
    tracing::Span::current().record("user", user.username.as_str());
    let query: HashMap<String, String> = axum::extract::Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|_| ApiError::bad_request("the query string could not be parsed"))?;
    let ctx = Ctx {
        state,
        user: &user,
        query: &query,
        content_type: header_str(header::CONTENT_TYPE),
        user_agent: header_str(header::USER_AGENT),
        body: &bytes,
    };
    let method = parts.method.clone();
    if !matches!(route, Route::SelfSubjectReview) {
        check_body_type(&method, ctx.content_type)?;
    }
    if matches!(
        route,
        Route::Version
            | Route::CoreVersions
            | Route::CoreResources
            | Route::Groups
            | Route::Group(_)
            | Route::GroupVersion(..)
    ) {
        let verb = method.as_str().to_ascii_lowercase();
        let attrs = Attributes::NonResource { verb: &verb, path };
        authz::authorize(state.authorization, subject(&user), &attrs, &state.store)?;
    }
    match route {
        Route::Health => Err(ApiError::no_route()),
        Route::Version => get_only(&method).map(|()| discovery::version()),
        Route::CoreVersions => get_only(&method).map(|()| discovery::core_versions(state)),
        Route::CoreResources => get_only(&method).map(|()| discovery::resource_list("", "v1")),
        Route::Groups => get_only(&method).map(|()| discovery::group_list()),
        Route::Group(g) => {
            get_only(&method)?;
            discovery::group(&g).ok_or_else(ApiError::no_route)
        }
        Route::GroupVersion(g, v) => {
            get_only(&method)?;
            if registry::group_versions().contains(&(g.as_str(), v.as_str())) {
                Ok(discovery::resource_list(&g, &v))
            } else {
                Err(ApiError::no_route())
            }
        }
        Route::TokenReview => {
            post_only(&method)?;
            authorize(
                &ctx,
                "create",
                "authentication.k8s.io",
                "tokenreviews",
                None,
                None,
                None,
            )?;
            reviews::token_review(&ctx)
        }
        Route::SelfSubjectReview => {
            post_only(&method)?;
            authorize(
                &ctx,
                "create",
                "authentication.k8s.io",
                "selfsubjectreviews",
                None,
                None,
                None,
            )?;
            reviews::self_subject_review(&ctx)
        }
        Route::AccessReview(kind) => {
            post_only(&method)?;
            let (resource, namespace) = match &kind {
                ReviewKind::Subject => ("subjectaccessreviews", None),
                ReviewKind::SelfSubject => ("selfsubjectaccessreviews", None),
                ReviewKind::Local(ns) => ("localsubjectaccessreviews", Some(ns.as_str())),
            };
            authorize(
                &ctx,
                "create",
                "authorization.k8s.io",
                resource,
                None,
                namespace,
                None,
            )?;
            access_reviews::review(&ctx, &kind)
        }
        Route::Resource(target) => resource(&ctx, &method, target).await,
    }
}

/// The parts of a user authorization looks at.
pub(crate) fn subject(user: &UserInfo) -> authz::Subject<'_> {
    authz::Subject {
        username: &user.username,
        groups: &user.groups,
    }
}

fn get_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed())
    }
}

fn post_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed())
    }
}

fn authorize(
    ctx: &Ctx<'_>,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let attrs = Attributes::Resource(ResourceAttributes {
        verb,
        group,
        resource,
        subresource: subresource.unwrap_or(""),
        namespace: namespace.unwrap_or(""),
        name: name.unwrap_or(""),
    });
    authz::authorize(
        ctx.state.authorization,
        subject(ctx.user),
        &attrs,
        &ctx.state.store,
    )
}

async fn resource(ctx: &Ctx<'_>, method: &Method, t: Target) -> Result<Reply, ApiError> {
    let collection = t.name.is_none();
    let verb = match (method.as_str(), collection) {
        ("GET", true) if ctx.flag("watch") => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", true) => "create",
        ("POST", false) if t.sub == Some(Sub::Token) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let sub = match t.sub {
        Some(Sub::Status) => Some("status"),
        Some(Sub::Token) => Some("token"),
        None => None,
    };
    if t.sub == Some(Sub::Token) && verb != "create" {
        return Err(ApiError::method_not_allowed());
    }
    if t.def.plural == "namespaces" && verb == "deletecollection" {
        return Err(ApiError::method_not_allowed());
    }
    // A Namespace is in itself, as far as RBAC is concerned.
    let namespace = if t.def.hooks == crate::registry::Hooks::Namespace {
        t.name.as_deref()
    } else {
        t.namespace.as_deref()
    };
    authorize(
        ctx,
        verb,
        t.def.group,
        t.def.plural,
        sub,
        namespace,
        t.name.as_deref(),
    )?;
    match verb {
        "watch" => crate::watch::serve(ctx, &t),
        "list" => handlers::list(ctx, &t),
        "get" => handlers::get(ctx, &t),
        "create" if t.sub == Some(Sub::Token) => reviews::token_request(ctx, &t),
        "create" => handlers::create(ctx, &t).await,
        "update" => handlers::update(ctx, &t).await,
        "patch" => handlers::patch(ctx, &t).await,
        "delete" => handlers::delete(ctx, &t).await,
        _ => handlers::delete_collection(ctx, &t).await,
    }
}

fn render(state: &AppState, reply: Reply, audit_id: &str) -> Response {
    let (code, content_type, body) = match reply {
        Reply::Json(code, value) => {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            bytes.push(b'\n');
            (code, "application/json", Body::from(bytes))
        }
        Reply::Object(code, object) => {
            let json = object.json();
            let mut bytes = Vec::with_capacity(json.len() + 1);
            bytes.extend_from_slice(json);
            bytes.push(b'\n');
            (code, "application/json", Body::from(bytes))
        }
        Reply::JsonText(code, mut bytes) => {
            bytes.push(b'\n');
            (code, "application/json", Body::from(bytes))
        }
        Reply::Raw {
            code,
            content_type,
            body,
        } => (code, content_type, Body::from(body)),
        Reply::Stream(rx) => (
            200,
            "application/json",
            Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    let pairs = [
        ("audit-id", audit_id),
        (
            "x-kubernetes-pf-flowschema-uid",
            state.flow_schema_uid.as_str(),
        ),
        (
            "x-kubernetes-pf-prioritylevel-uid",
            state.priority_level_uid.as_str(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (String, Option<String>, Option<String>, Option<Sub>);

    fn target(path: &str) -> Option<Parsed> {
        match route(path)? {
            Route::Resource(t) => Some((t.def.plural.to_owned(), t.namespace, t.name, t.sub)),
            _ => None,
        }
    }

    #[test]
    fn paths_route_to_resources() {
        assert_eq!(
            target("/apis/cert-manager.io/v1/namespaces/ns/certificaterequests/a/status"),
            Some((
                "certificaterequests".into(),
                Some("ns".into()),
                Some("a".into()),
                Some(Sub::Status)
            ))
        );
        assert_eq!(
            target("/api/v1/namespaces/ns"),
            Some(("namespaces".into(), None, Some("ns".into()), None))
        );
        assert_eq!(
            target("/api/v1/namespaces/ns/status"),
            Some((
                "namespaces".into(),
                None,
                Some("ns".into()),
                Some(Sub::Status)
            ))
        );
        assert_eq!(
            target("/api/v1/pods"),
            Some(("pods".into(), None, None, None))
        );
        assert!(target("/api/v1/pods/name-without-namespace").is_none());
        assert!(target("/api/v1/namespaces/ns/configmaps/a/status").is_none());
        assert!(route("/apis/nope.io/v1/things").is_none());
        assert!(route("/api/v1//pods").is_none());
    }
}
