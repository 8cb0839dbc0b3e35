//! Calling one webhook: `POST <url>?timeout=<N>s` over HTTPS, trusting only the webhook's
//! `caBundle`, within its timeout.
//!
//! The dev cluster calls 127.0.0.1 only: a `url` must name 127.0.0.1 or `localhost`, and a
//! Service is reached through the routes given to the dev cluster. Errors read like the
//! ones kube-apiserver reports (kube-wire 14j), because clients show them to people.
//!
//! Connections are kept alive between calls, as kube-apiserver keeps them (Go's transport
//! holds idle connections for 90 s), one pool per address, expected server name and
//! `caBundle`: a changed bundle is a new handshake. A call on a kept connection that fails
//! is made once more on a fresh one, so a webhook that closed or went away since reads
//! exactly as it would have on a new connection.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use crate::ServiceRef;
use crate::tls;

use super::rules::Endpoint;

/// The largest answer read from a webhook.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;
/// How long an unused connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How many unused connections are kept per pool.
const MAX_IDLE: usize = 32;

/// The sending half of one HTTP/1.1 connection to a webhook.
type Sender = SendRequest<Full<Bytes>>;

/// Where connections go and whom they trust: one pool each.
type PoolKey = (SocketAddr, ServerName<'static>, Vec<u8>);

/// One pool: the TLS configuration trusting the bundle, and the unused connections with the
/// time each was last used.
struct Pool {
    config: Arc<ClientConfig>,
    idle: Vec<(Sender, Instant)>,
}

/// Kept-alive connections to webhooks.
#[derive(Default)]
pub(crate) struct Connections {
    pools: Mutex<HashMap<PoolKey, Pool>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let idle: usize = pools.values().map(|p| p.idle.len()).sum();
        f.debug_struct("Connections")
            .field("pools", &pools.len())
            .field("idle", &idle)
            .finish()
    }
}

impl Connections {
    /// The pool's TLS configuration and an unused live connection, if there is one.
    fn take(&self, key: &PoolKey) -> Result<(Arc<ClientConfig>, Option<Sender>), tls::TlsError> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = match pools.get_mut(key) {
            Some(pool) => pool,
            None => {
                let config = tls::client_config(&key.2)?;
                pools.entry(key.clone()).or_insert(Pool {
                    config,
                    idle: Vec::new(),
                })
            }
        };
        let now = Instant::now();
        pool.idle
            .retain(|(sender, used)| !sender.is_closed() && now - *used < IDLE_TIMEOUT);
        let sender = pool.idle.pop().map(|(sender, _)| sender);
        Ok((Arc::clone(&pool.config), sender))
    }

    /// Keeps a connection whose exchange finished for the next call.
    fn put_back(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get_mut(&key)
            && pool.idle.len() < MAX_IDLE
        {
            pool.idle.push((sender, Instant::now()));
        }
    }
}

/// Where one call goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL as the API server prints it, with `?timeout=`.
    pub(crate) url: String,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    host: String,
    path: String,
}

/// Why a call failed; the text follows `failed to call webhook: ` or stands alone.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The endpoint is not one the dev cluster may or can reach.
    #[error("failed to call webhook: {0}")]
    Unreachable(String),
    /// The connection, the TLS handshake or the HTTP exchange failed.
    #[error("failed to call webhook: Post {url:?}: {cause}")]
    Transport { url: String, cause: String },
    /// The webhook took longer than its timeout.
    #[error("failed to call webhook: Post {url:?}: context deadline exceeded")]
    Timeout { url: String },
    /// The webhook answered with an HTTP error.
    #[error(
        "failed to call webhook: the server responded with the status code {code} but did \
         not return more information"
    )]
    Status { code: u16 },
    /// The answer was not a valid AdmissionReview for this request.
    #[error("received invalid webhook response: {0}")]
    Invalid(String),
}

fn host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: never 127.0.0.1.
        let (host, port) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, port.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// Resolves a webhook's endpoint into where to connect and what certificate to expect.
pub(crate) fn target(
    endpoint: &Endpoint,
    timeout: Duration,
    services: &BTreeMap<ServiceRef, SocketAddr>,
) -> Result<Target, CallError> {
    let query = format!("timeout={}s", timeout.as_secs());
    match endpoint {
        Endpoint::Url(url) => {
            let rest = url
                .strip_prefix("https://")
                .ok_or_else(|| CallError::Unreachable(format!("{url:?} is not an https URL")))?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = host_port(authority);
            let port: u16 = match port {
                Some(p) => p
                    .parse()
                    .map_err(|_| CallError::Unreachable(format!("{url:?} has a bad port")))?,
                None => 443,
            };
            let server_name = match host {
                "localhost" => ServerName::try_from("localhost".to_owned()).ok(),
                h => match h.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) if ip == Ipv4Addr::LOCALHOST => {
                        Some(ServerName::IpAddress(IpAddr::V4(ip).into()))
                    }
                    _ => None,
                },
            }
            .ok_or_else(|| {
                CallError::Unreachable(format!(
                    "the dev cluster calls webhooks on 127.0.0.1 only, not {host:?}"
                ))
            })?;
            Ok(Target {
                url: format!("{url}?{query}"),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                server_name,
                host: authority.to_owned(),
                path: format!("{path}?{query}"),
            })
        }
        Endpoint::Service {
            namespace,
            name,
            port,
            path,
        } => {
            let dns = format!("{name}.{namespace}.svc");
            let path = if path.is_empty() { "/" } else { path.as_str() };
            let key = ServiceRef::new(namespace.clone(), name.clone(), *port);
            let addr = *services.get(&key).ok_or_else(|| {
                CallError::Unreachable(format!("no endpoints available for service {name:?}"))
            })?;
            let server_name = ServerName::try_from(dns.clone()).map_err(|_| {
                CallError::Unreachable(format!("{dns:?} is not a valid server name"))
            })?;
            Ok(Target {
                url: format!("https://{dns}:{port}{path}?{query}"),
                addr,
                server_name,
                host: format!("{dns}:{port}"),
                path: format!("{path}?{query}"),
            })
        }
    }
}

/// Go's words for a TLS failure, as a client would see them.
fn tls_failure(error: &std::io::Error) -> String {
    let rustls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_owned()
        }
        Some(rustls::Error::InvalidCertificate(cert)) => {
            format!("tls: failed to verify certificate: x509: {cert:?}")
        }
        Some(other) => format!("tls: {other}"),
        None => format!("tls: {error}"),
    }
}

fn dial_failure(addr: SocketAddr, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        _ => format!("dial tcp {addr}: {error}"),
    }
}

/// POSTs `body` and returns the answer's body; the whole call is bounded by `timeout`.
pub(crate) async fn post(
    connections: &Connections,
    target: &Target,
    ca_bundle: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    let call = exchange(connections, target, ca_bundle, Bytes::from(body));
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout {
            url: target.url.clone(),
        }),
    }
}

async fn exchange(
    connections: &Connections,
    target: &Target,
    ca_bundle: &[u8],
    body: Bytes,
) -> Result<Vec<u8>, CallError> {
    let transport = |cause: String| CallError::Transport {
        url: target.url.clone(),
        cause,
    };
    let key: PoolKey = (target.addr, target.server_name.clone(), ca_bundle.to_vec());
    // Without a caBundle nothing is trusted: the dev cluster has no system roots.
    let (config, kept) = connections.take(&key).map_err(|_| {
        transport(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into(),
        )
    })?;
    if let Some(sender) = kept
        && let Ok((sender, answer)) = send(sender, target, body.clone()).await
    {
        connections.put_back(key, sender);
        return answer;
    }
    let sender = connect(target, config).await?;
    let (sender, answer) = send(sender, target, body).await?;
    connections.put_back(key, sender);
    answer
}

/// Opens a connection: TCP, the TLS handshake trusting `config`, HTTP/1.1.
async fn connect(target: &Target, config: Arc<ClientConfig>) -> Result<Sender, CallError> {
    let transport = |cause: String| CallError::Transport {
        url: target.url.clone(),
        cause,
    };
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| transport(dial_failure(target.addr, &e)))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector
        .connect(target.server_name.clone(), tcp)
        .await
        .map_err(|e| transport(tls_failure(&e)))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(e.to_string()))?;
    tokio::spawn(async move {
        // The connection ends when its senders are gone or the webhook closes it; an error
        // on an exchange reached that exchange.
        let _ = connection.await;
    });
    Ok(sender)
}

/// One exchange on a connection. The outer error is the transport's (the connection is
/// then dropped); the inner result is the webhook's answer, the connection handed back
/// for the next call.
async fn send(
    mut sender: Sender,
    target: &Target,
    body: Bytes,
) -> Result<(Sender, Result<Vec<u8>, CallError>), CallError> {
    let transport = |cause: String| CallError::Transport {
        url: target.url.clone(),
        cause,
    };
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(&target.path)
        .header(http::header::HOST, &target.host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .header(http::header::USER_AGENT, "kube-apiserver-admission")
        .body(Full::new(body))
        .map_err(|e| transport(e.to_string()))?;
    sender.ready().await.map_err(|e| transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let code = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| transport(e.to_string()))?
        .to_bytes();
    if !(200..300).contains(&code) {
        return Ok((sender, Err(CallError::Status { code })));
    }
    Ok((sender, Ok(bytes.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_to_loopback_only() {
        let none = BTreeMap::new();
        let t = Duration::from_secs(5);
        let ok = target(
            &Endpoint::Url("https://127.0.0.1:40943/mutate".into()),
            t,
            &none,
        )
        .expect("loopback");
        assert_eq!(ok.url, "https://127.0.0.1:40943/mutate?timeout=5s");
        assert_eq!(ok.path, "/mutate?timeout=5s");
        assert_eq!(ok.addr, SocketAddr::from(([127, 0, 0, 1], 40943)));
        let local =
            target(&Endpoint::Url("https://localhost/x".into()), t, &none).expect("localhost");
        assert_eq!(local.addr.port(), 443);
        for far in [
            "https://10.0.0.1/x",
            "https://example.com/x",
            "https://[::1]:8443/x",
            "http://127.0.0.1/x",
        ] {
            assert!(
                matches!(
                    target(&Endpoint::Url(far.into()), t, &none),
                    Err(CallError::Unreachable(_))
                ),
                "{far}"
            );
        }
    }

    #[test]
    fn services_resolve_through_routes() {
        let service = Endpoint::Service {
            namespace: "nico".into(),
            name: "webhook".into(),
            port: 443,
            path: "/validate".into(),
        };
        let t = Duration::from_secs(10);
        let err = target(&service, t, &BTreeMap::new()).expect_err("no route");
        assert_eq!(
            err.to_string(),
            "failed to call webhook: no endpoints available for service \"webhook\""
        );
        let mut routes = BTreeMap::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], 9443));
        routes.insert(ServiceRef::new("nico", "webhook", 443), addr);
        let ok = target(&service, t, &routes).expect("routed");
        assert_eq!(ok.url, "https://webhook.nico.svc:443/validate?timeout=10s");
        assert_eq!(ok.addr, addr);
        assert_eq!(
            ok.server_name,
            ServerName::try_from("webhook.nico.svc").expect("valid")
        );
    }

    /// Counts the TCP connections a test server accepts.
    #[derive(Clone)]
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl<I, S> axum_server::accept::Accept<I, S> for Counting {
        type Stream = I;
        type Service = S;
        type Future = std::future::Ready<std::io::Result<(I, S)>>;

        fn accept(&self, stream: I, service: S) -> Self::Future {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok((stream, service)))
        }
    }

    /// An HTTPS server on `listener` answering `{}` to everything.
    fn serve(
        listener: std::net::TcpListener,
        tls: &tls::ServingTls,
        accepted: &Counting,
    ) -> (axum_server::Handle<SocketAddr>, tokio::task::JoinHandle<()>) {
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::clone(&tls.config)),
        )
        .acceptor(accepted.clone());
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp(listener)
            .expect("a server")
            .acceptor(acceptor)
            .handle(handle.clone());
        let app = axum::Router::new().fallback(|| async { "{}" });
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        (handle, task)
    }

    #[tokio::test]
    async fn connections_are_kept_per_bundle_and_replaced_when_closed() {
        let tls = tls::ServingTls::generate().expect("a CA");
        let accepted = Counting(Arc::default());
        let count = || accepted.0.load(std::sync::atomic::Ordering::SeqCst);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (handle, task) = serve(listener, &tls, &accepted);
        let t = Duration::from_secs(5);
        let url = format!("https://127.0.0.1:{}/mutate", addr.port());
        let to = target(&Endpoint::Url(url), t, &BTreeMap::new()).expect("loopback");
        let pool = Connections::default();
        let ca = tls.ca_pem.as_bytes();
        for _ in 0..3 {
            let answer = post(&pool, &to, ca, b"{}".to_vec(), t).await;
            assert_eq!(answer.expect("answered"), b"{}");
        }
        assert_eq!(count(), 1, "three calls, one connection");
        let twice = format!("{0}{0}", tls.ca_pem);
        post(&pool, &to, twice.as_bytes(), b"{}".to_vec(), t)
            .await
            .expect("answered");
        assert_eq!(count(), 2, "another caBundle, another connection");
        handle.shutdown();
        task.await.expect("the server stopped");
        let listener = std::net::TcpListener::bind(addr).expect("the same port again");
        let (_handle, _task) = serve(listener, &tls, &accepted);
        post(&pool, &to, ca, b"{}".to_vec(), t)
            .await
            .expect("answered on a new connection");
        assert_eq!(count(), 3, "the closed connection was replaced");
    }

    #[tokio::test]
    async fn a_closed_port_reads_like_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let url = format!("https://127.0.0.1:{port}/mutate");
        let t = Duration::from_secs(5);
        let to = target(&Endpoint::Url(url.clone()), t, &BTreeMap::new()).expect("loopback");
        let tls = tls::ServingTls::generate().expect("a CA");
        let err = post(
            &Connections::default(),
            &to,
            tls.ca_pem.as_bytes(),
            b"{}".to_vec(),
            t,
        )
        .await
        .expect_err("nothing listens");
        assert_eq!(
            err.to_string(),
            format!(
                "failed to call webhook: Post \"{url}?timeout=5s\": dial tcp 127.0.0.1:{port}: \
                 connect: connection refused"
            )
        );
    }
}
