//! EPMD discovery, with Erlang's own port-mapper daemon: [`Node::register_in_epmd`] keeps this
//! node registered (name and listen port) in the EPMD of its host, and [`Epmd`] lists the nodes
//! registered in the EPMD of each given host. A listed node is only a candidate: Erlang nodes
//! and nodes of other clusters share the same EPMD, and the handshake refuses them (a wrong
//! cluster secret or name never connects). The bytes are built and parsed by
//! `gen_cluster_proto::epmd`; this module only moves them, each exchange within a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use gen_cluster_proto::epmd::{self, DEFAULT_PORT, MAX_NAMES_REPLY};
use gen_cluster_proto::reconcile::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Discover, DiscoverError, LastGood};
use crate::Node;

/// The longest one exchange with an EPMD may take.
const EPMD_TIMEOUT: Duration = Duration::from_secs(2);
/// The extra bytes of our EPMD records, telling an operator's `epmd -names` what we are.
const RECORD_EXTRA: &[u8] = b"gen_cluster";
/// Retries of a failed or lost registration: from 100 ms, doubling, up to 5 s.
const REGISTER_RETRY_MIN: Duration = Duration::from_millis(100);
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(5);

/// Every node registered in the EPMD of each host. A host that does not answer keeps what it
/// listed last; the round fails only if no host ever answered.
#[derive(Debug)]
pub struct Epmd {
    hosts: Vec<(String, u16)>,
    /// Per EPMD, the addresses of the nodes it listed.
    listed: LastGood<String, Vec<String>>,
}

impl Epmd {
    /// The EPMDs of `hosts`, each `host` or `host:port` (port 4369 if not given).
    pub fn new<H: AsRef<str>>(hosts: impl IntoIterator<Item = H>) -> Self {
        Self {
            hosts: hosts
                .into_iter()
                .map(|h| host_and_port(h.as_ref()))
                .collect(),
            listed: LastGood::new("EPMD"),
        }
    }

    /// The EPMD of this host.
    pub fn local() -> Self {
        Self::new(["127.0.0.1"])
    }
}

impl Discover for Epmd {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        let listed = join_all(self.hosts.iter().map(|(host, port)| async move {
            let names = names(host, *port).await?;
            Ok(names
                .into_iter()
                .map(|(_, node_port)| address(host, node_port))
                .collect())
        }))
        .await;
        let asked = self.hosts.iter().map(|(host, port)| address(host, *port));
        let settled = self.listed.settle(asked.zip(listed));
        if settled.is_empty() {
            return Err(DiscoverError(format!(
                "no EPMD answered ({} hosts asked)",
                self.hosts.len()
            )));
        }
        Ok(settled.into_iter().flat_map(|(_, peers)| peers).collect())
    }
}

/// `host` or `host:port`, a bare IPv6 address, or `[ipv6]:port`.
fn host_and_port(given: &str) -> (String, u16) {
    if let Ok(addr) = given.parse::<SocketAddr>() {
        return (addr.ip().to_string(), addr.port());
    }
    if given.parse::<IpAddr>().is_ok() {
        return (given.to_string(), DEFAULT_PORT);
    }
    match given.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            (host.to_string(), port.parse().unwrap_or(DEFAULT_PORT))
        }
        _ => (given.to_string(), DEFAULT_PORT),
    }
}

/// The dialable address of `port` on `host`.
fn address(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// The names registered in the EPMD at `host:port`.
async fn names(host: &str, port: u16) -> Result<Vec<(String, u16)>, String> {
    let at = address(host, port);
    let exchange = async {
        let mut stream = TcpStream::connect(&at).await?;
        stream.write_all(&epmd::names_request()).await?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(MAX_NAMES_REPLY as u64 + 1)
            .read_to_end(&mut reply)
            .await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(EPMD_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("EPMD at {at}: no answer within {EPMD_TIMEOUT:?}"))?
        .map_err(|e| format!("EPMD at {at}: {e}"))?;
    epmd::parse_names(&reply).map_err(|e| format!("EPMD at {at}: {e}"))
}

impl Epmd {
    /// Registers `node`, by name and listen port, in the EPMD at `epmd` (`host:port`, usually
    /// `127.0.0.1:4369`), and keeps it registered until the node shuts down: the registration
    /// lasts as long as its connection, and is made again if EPMD restarts.
    pub fn register(node: &Node, epmd: &str) {
        let (host, port) = host_and_port(epmd);
        let epmd = address(&host, port);
        let span = tracing::info_span!("epmd", %epmd);
        node.spawn_task(span, stay_registered(node.clone(), epmd));
    }
}

async fn stay_registered(node: Node, epmd: String) {
    let mut backoff = Backoff::new(REGISTER_RETRY_MIN, 0.2, crate::clock::seed());
    let mut failures = 0;
    let mut last_error = None;
    loop {
        let outcome = tokio::select! {
            _ = node.shutting_down() => return,
            outcome = register_and_hold(&node, &epmd) => outcome,
        };
        match outcome {
            Ok(()) => {
                tracing::warn!(%epmd, "EPMD closed the registration; registering again");
                failures = 1;
                last_error = None;
            }
            Err(error) => {
                failures += 1;
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(%epmd, %error, "cannot register in EPMD; retrying");
                    metrics::counter!(crate::telemetry::EPMD_REGISTER_FAILURES).increment(1);
                    last_error = Some(error);
                }
            }
        }
        let delay = backoff.delay(failures, REGISTER_RETRY_MAX);
        tokio::select! {
            _ = node.shutting_down() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Registers, then holds the connection until EPMD closes it (`Ok`), or fails.
async fn register_and_hold(node: &Node, epmd: &str) -> Result<(), String> {
    let port = node
        .listen_addr()
        .parse::<SocketAddr>()
        .map_err(|_| format!("the listen address {} has no port", node.listen_addr()))?
        .port();
    let request = epmd::register_request(node.name().as_str(), port, RECORD_EXTRA)
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let mut stream = TcpStream::connect(epmd).await.map_err(|e| e.to_string())?;
        stream
            .write_all(&request)
            .await
            .map_err(|e| e.to_string())?;
        let tag = stream.read_u8().await.map_err(|e| e.to_string())?;
        let mut reply = vec![tag; epmd::register_reply_len(tag).map_err(|e| e.to_string())?];
        stream
            .read_exact(&mut reply[1..])
            .await
            .map_err(|e| e.to_string())?;
        let creation = epmd::parse_register_reply(&reply).map_err(|e| e.to_string())?;
        Ok::<_, String>((stream, creation))
    };
    let (mut stream, creation) = tokio::time::timeout(EPMD_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {EPMD_TIMEOUT:?}"))??;
    tracing::info!(%epmd, port, creation, "registered in EPMD");
    // EPMD sends nothing more; the registration ends when the connection does.
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).await.is_ok_and(|n| n > 0) {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_with_or_without_a_port() {
        assert_eq!(host_and_port("10.0.0.1"), ("10.0.0.1".into(), 4369));
        assert_eq!(host_and_port("10.0.0.1:5000"), ("10.0.0.1".into(), 5000));
        assert_eq!(host_and_port("::1"), ("::1".into(), 4369));
        assert_eq!(host_and_port("[::1]:5000"), ("::1".into(), 5000));
        assert_eq!(host_and_port("db-1.local"), ("db-1.local".into(), 4369));
        assert_eq!(host_and_port("db-1.local:7"), ("db-1.local".into(), 7));
        assert_eq!(address("::1", 7), "[::1]:7");
        assert_eq!(address("db-1.local", 7), "db-1.local:7");
    }
}
