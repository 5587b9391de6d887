//! `gen-cluster node --http ADDR`: the node's metrics and health over HTTP/1.1, for Prometheus
//! and for an orchestrator's probes.
//!
//! - `/metrics`: every metric of `gen_cluster::telemetry::METRICS`, Prometheus text (the
//!   recorder of `metrics-exporter-prometheus`, installed for the process);
//! - `/ready`: 200 once the node has joined its cluster (a peer was up, when it was given peers
//!   to find) and, when it runs the dictionary, while it follows a leader; 503 with the reason
//!   otherwise;
//! - `/alive`: 200 while the node runs.
//!
//! The server runs on a thread and a runtime of its own, so a flood of scrapes cannot starve the
//! node's links of their heartbeats; the metrics text is rendered at most once a second
//! ([`RENDER_EVERY`]), whatever the request rate. One request per connection, each connection
//! done within [`CONNECTION_TIMEOUT`], at most [`MAX_PER_SOURCE`] at once from one address (more
//! are closed at once, not queued) and [`MAX_CONNECTIONS`] in all: a connection past that bound
//! ends the oldest one served, so slow or hostile clients, however many addresses they come
//! from, cannot hold the probes out (each newcomer is served while they hold every place).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::sync::oneshot;

/// The most connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// The most connections served at once from one address.
const MAX_PER_SOURCE: usize = 8;
/// How long a client may take to send its request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may last, its answer read included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The metrics text is rendered at most this often.
const RENDER_EVERY: Duration = Duration::from_secs(1);
/// A round-trip series not updated for this long (its peer gone) leaves `/metrics`.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Whether the node is ready to serve, or why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Installs the Prometheus recorder for this process (the node's metrics go to it from now
/// on, the metrics' help included: the node describes them when it starts); then
/// [`Bound::serve`] exports it. A histogram not updated for ten minutes (the round
/// trip of a peer gone) is dropped; counters stay, so that a rate over an hour stays right.
pub fn install_recorder() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::HISTOGRAM, Some(FORGET_AFTER))
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    Ok(handle)
}

/// Binds `addr` now (before the node starts, so that a taken port stops it before it joins
/// anyone); [`Bound::serve`] starts serving.
pub fn bind(addr: &str) -> Result<Bound> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(Bound(listener))
}

/// The HTTP address, bound, not yet served.
pub struct Bound(std::net::TcpListener);

impl Bound {
    /// The address bound.
    pub fn addr(&self) -> Result<String> {
        Ok(self.0.local_addr()?.to_string())
    }

    /// Serves the endpoints on a thread of their own until the process ends.
    pub fn serve(self, metrics: PrometheusHandle, ready: Readiness) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = self.0;
        std::thread::Builder::new()
            .name("gen-cluster-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, Endpoints::new(metrics, ready)).await,
                        Err(error) => tracing::error!(%error, "cannot serve HTTP"),
                    }
                });
            })?;
        Ok(())
    }
}

/// What the requests are answered from.
struct Endpoints {
    metrics: PrometheusHandle,
    ready: Readiness,
    /// The metrics text last rendered, and when.
    rendered: Mutex<Option<(Instant, Bytes)>>,
}

impl Endpoints {
    fn new(metrics: PrometheusHandle, ready: Readiness) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            ready,
            rendered: Mutex::new(None),
        })
    }

    /// The metrics text, rendered again if the last is older than [`RENDER_EVERY`].
    fn metrics_text(&self) -> Bytes {
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        match &*rendered {
            Some((at, text)) if at.elapsed() < RENDER_EVERY => text.clone(),
            _ => {
                self.metrics.run_upkeep();
                let text = Bytes::from(self.metrics.render());
                *rendered = Some((Instant::now(), text.clone()));
                text
            }
        }
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = Response::new(Full::new(self.metrics_text()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/alive" => text(StatusCode::OK, "alive\n"),
            "/ready" => match (self.ready)() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready: {reason}\n"),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /ready or /alive\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The connections being served.
#[derive(Default)]
struct Served {
    /// Oldest first (by the order accepted): where each comes from, and what ends it when
    /// dropped.
    connections: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    accepted: u64,
}

impl Served {
    /// How many of the connections served come from `source` (at most [`MAX_CONNECTIONS`] to
    /// count).
    fn from(&self, source: IpAddr) -> usize {
        self.connections
            .values()
            .filter(|(from, _)| *from == source)
            .count()
    }
}

/// A connection's place among those served, given back when dropped (however its task ends).
struct Place {
    served: Arc<Mutex<Served>>,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        served.connections.remove(&self.id);
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, endpoints: Arc<Endpoints>) {
    let served = Arc::new(Mutex::new(Served::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let source = peer.ip();
        let (end, ended) = oneshot::channel();
        let id = {
            let mut served = served.lock().unwrap_or_else(|e| e.into_inner());
            if served.from(source) >= MAX_PER_SOURCE {
                // Closed at once: a client over its address's bound waits in no queue.
                continue;
            }
            if served.connections.len() >= MAX_CONNECTIONS {
                // Dropping its sender ends it.
                served.connections.pop_first();
            }
            let id = served.accepted;
            served.accepted += 1;
            served.connections.insert(id, (source, end));
            id
        };
        let endpoints = Arc::clone(&endpoints);
        let place = Place {
            served: Arc::clone(&served),
            id,
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| {
                let response = endpoints.respond(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
                _ = ended => {}
            }
            drop(place);
        });
    }
}

/// `gen-cluster health`: asks the node's HTTP server at `addr` for `path` and succeeds on a 200,
/// for an orchestrator's health check in an image with no HTTP client of its own. An address
/// bound to every interface (`0.0.0.0`, `::`) is asked on loopback. Bounded by
/// [`REQUEST_TIMEOUT`] to connect and as much again for the request and the whole answer (at
/// most 64 KiB read).
pub fn probe(addr: &str, path: &str) -> Result<()> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

    let mut target: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr:?} is not the node's --http ADDR"))?
        .next()
        .with_context(|| format!("{addr} has no address"))?;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    let mut stream = TcpStream::connect_timeout(&target, REQUEST_TIMEOUT)
        .with_context(|| format!("no HTTP server at {target} (is the node up, with --http?)"))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .with_context(|| format!("no whole answer from {target} in time"))
    };
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < 64 * 1024 {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("no answer from {target} in time")),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    if status.split(' ').nth(1) == Some("200") {
        return Ok(());
    }
    anyhow::bail!("{path}: {status}: {body}")
}
