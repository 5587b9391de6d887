//! `gen-cluster node --http ADDR`: the node's metrics and health over HTTP/1.1, for Prometheus
//! and for an orchestrator's probes.
//!
//! - `/metrics`: every metric of `gen_cluster::telemetry::METRICS`, Prometheus text (the
//!   recorder of `metrics-exporter-prometheus`, installed for the process);
//! - `/ready`: 200 once the node is in its cluster (a peer is up, or it was given no peer to
//!   find) and, when it runs the dictionary, follows a leader; 503 with the reason otherwise;
//! - `/alive`: 200 while the node runs.
//!
//! A scrape or a probe is small: a connection may take 5 s to send its request and at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the kernel's backlog), so a slow or
//! hostile client cannot hold the node up.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The most connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the node is ready to serve, or why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Installs the Prometheus recorder for this process (the node's metrics go to it from now
/// on); then [`serve`] exports it.
pub fn install_recorder() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    gen_cluster::telemetry::describe();
    Ok(handle)
}

/// Binds `addr` and serves the endpoints in the background; returns the bound address.
pub async fn serve(addr: &str, metrics: PrometheusHandle, ready: Readiness) -> Result<String> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    let bound = listener.local_addr()?.to_string();
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&room).acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, ready) = (metrics.clone(), Arc::clone(&ready));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &metrics, &ready);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => {
            metrics.run_upkeep();
            (StatusCode::OK, metrics.render())
        }
        "/alive" => (StatusCode::OK, "alive\n".to_string()),
        "/ready" => match ready() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /ready or /alive\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
