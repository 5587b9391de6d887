//! DNS discovery: [`DnsA`] (A and AAAA records on one name, every node on a configured port) and
//! [`DnsSrv`] (SRV records, each naming a target host and its port). With [`HostType::Ip`] a
//! peer is dialed at its address; with [`HostType::Hostname`] at its host name (the PTR record of
//! an A/AAAA address, the target of an SRV record), which the dialer resolves as any host name.
//!
//! Every round asks the name server (the resolver's cache is off). What counts as a failed
//! round, so that the reconcile loop keeps the last good answer: no answer in time, NXDOMAIN, an
//! answer with no records. One lookup failing inside a round (a PTR record, an SRV target) keeps
//! that peer's last good result instead of dropping it; a warning is logged once per change.
//! Cost per round: one query, plus one per address (PTR) or per SRV target not answered in the
//! additional section, at most [`LOOKUPS_AT_ONCE`] of those at a time.
//!
//! An answer is untrusted input: the addresses built from it stop past
//! [`MAX_PEERS`](gen_cluster_proto::reconcile::MAX_PEERS) (SRV records times the addresses of
//! their targets could otherwise make millions), and the additional section is read once.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use gen_cluster_proto::reconcile::MAX_PEERS;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, ResolverBuilder, TokioResolver};
use rustc_hash::FxHashMap;

use super::{Discover, DiscoverError, LastGood};

/// How long one query may take before it is tried again, and how many tries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_ATTEMPTS: usize = 2;
/// The most lookups of one round in flight at once (PTR records, SRV targets), so that a large
/// answer does not become a flood of queries.
const LOOKUPS_AT_ONCE: usize = 16;

/// How a discovered peer is addressed (`"ip"` or `"hostname"` in a config file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostType {
    /// By IP address.
    #[default]
    Ip,
    /// By host name: the reverse lookup of an address, the target of an SRV record.
    Hostname,
}

/// The DNS resolver discovery asks, with caching off so that every round sees changes at once.
#[derive(Clone)]
pub struct Dns {
    resolver: Arc<TokioResolver>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

/// The system's resolver configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the system's DNS configuration (/etc/resolv.conf): {0}; name a server with Dns::server"
)]
pub struct DnsConfigError(String);

impl Dns {
    /// The name servers of the system's configuration (`/etc/resolv.conf`), with its search
    /// domains.
    pub fn system() -> Result<Self, DnsConfigError> {
        let builder = TokioResolver::builder_tokio().map_err(|e| DnsConfigError(e.to_string()))?;
        Self::build(builder)
    }

    /// One name server, over UDP and TCP, such as `10.0.0.2:53`; the hosts file is not read.
    pub fn server(addr: SocketAddr) -> Self {
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        let config = ResolverConfig::from_name_servers(vec![server]);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        Self::build(builder)
            .unwrap_or_else(|e| unreachable!("a resolver with one name server builds: {e}"))
    }

    /// Cache off, so that every refresh asks the server; short timeouts.
    fn build(mut builder: ResolverBuilder<TokioRuntimeProvider>) -> Result<Self, DnsConfigError> {
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = QUERY_TIMEOUT;
        options.attempts = QUERY_ATTEMPTS;
        let resolver = builder.build().map_err(|e| DnsConfigError(e.to_string()))?;
        Ok(Self {
            resolver: Arc::new(resolver),
        })
    }

    /// The addresses of `host`: from the additional section if the server sent them there,
    /// else asked.
    async fn addresses(&self, host: &Name, given: &Additionals) -> Result<Vec<IpAddr>, String> {
        if let Some(given) = given.get(host) {
            return Ok(given.clone());
        }
        let found = self
            .resolver
            .lookup_ip(host.clone())
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let found: Vec<IpAddr> = found.iter().collect();
        if found.is_empty() {
            return Err(format!("{host}: no address records"));
        }
        Ok(found)
    }

    /// The host name of `ip` (its PTR record).
    async fn host_name(&self, ip: IpAddr) -> Result<String, String> {
        let found = self
            .resolver
            .lookup(Name::from(ip), RecordType::PTR)
            .await
            .map_err(|e| format!("reverse lookup of {ip}: {e}"))?;
        found
            .answers()
            .iter()
            .find_map(|r| match &r.data {
                RData::PTR(ptr) => Some(host(&ptr.0)),
                _ => None,
            })
            .ok_or_else(|| format!("reverse lookup of {ip}: no PTR record"))
    }
}

/// The addresses an answer's additional section gives, by host name.
type Additionals = FxHashMap<Name, Vec<IpAddr>>;

fn additionals(records: &[Record]) -> Additionals {
    let mut given = Additionals::default();
    for record in records {
        if let Some(ip) = ip_of(&record.data) {
            given.entry(record.name.clone()).or_default().push(ip);
        }
    }
    given
}

/// The results of `lookup` for each of `keys`, in order, at most [`LOOKUPS_AT_ONCE`] at a time.
async fn look_up_each<K, T, F>(keys: impl IntoIterator<Item = K>, lookup: impl Fn(K) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    stream::iter(keys)
        .map(lookup)
        .buffered(LOOKUPS_AT_ONCE)
        .collect()
        .await
}

/// The first addresses given, until one past [`MAX_PEERS`]: enough for the reconcile loop to
/// keep its share and tell that the answer overflowed.
fn bounded(addresses: impl Iterator<Item = String>) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    for addr in addresses {
        if kept.len() > MAX_PEERS {
            break;
        }
        kept.insert(addr);
    }
    kept
}

fn ip_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// A host name as the dialer takes it: without the root's trailing dot.
fn host(name: &Name) -> String {
    name.to_utf8().trim_end_matches('.').to_string()
}

/// Every address of the A and AAAA records of `name`, each at `port`.
#[derive(Debug)]
pub struct DnsA {
    dns: Dns,
    name: String,
    port: u16,
    host_type: HostType,
    host_names: LastGood<IpAddr, String>,
}

impl DnsA {
    /// Peers at `port` on every address of `name`.
    pub fn new(dns: Dns, name: impl Into<String>, port: u16, host_type: HostType) -> Self {
        Self {
            dns,
            name: name.into(),
            port,
            host_type,
            host_names: LastGood::new("reverse lookup"),
        }
    }
}

impl Discover for DnsA {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        let found = self
            .dns
            .resolver
            .lookup_ip(self.name.as_str())
            .await
            .map_err(|e| DiscoverError(format!("{}: {e}", self.name)))?;
        let ips: BTreeSet<IpAddr> = found.iter().take(MAX_PEERS + 1).collect();
        if ips.is_empty() {
            return Err(DiscoverError(format!("{}: no address records", self.name)));
        }
        Ok(match self.host_type {
            HostType::Ip => ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.port).to_string())
                .collect(),
            HostType::Hostname => {
                let names = look_up_each(ips.iter().copied(), |ip| self.dns.host_name(ip)).await;
                let hosts: BTreeSet<String> = self
                    .host_names
                    .settle(ips.into_iter().zip(names))
                    .into_iter()
                    .map(|(_, host)| format!("{host}:{}", self.port))
                    .collect();
                hosts.into_iter().collect()
            }
        })
    }
}

/// Every target of the SRV records of `name`, at the port of its record.
#[derive(Debug)]
pub struct DnsSrv {
    dns: Dns,
    name: String,
    host_type: HostType,
    addresses: LastGood<Name, Vec<IpAddr>>,
}

impl DnsSrv {
    /// Peers named by the SRV records of `name`, such as `_gen-cluster._tcp.example.com`.
    pub fn new(dns: Dns, name: impl Into<String>, host_type: HostType) -> Self {
        Self {
            dns,
            name: name.into(),
            host_type,
            addresses: LastGood::new("SRV target"),
        }
    }
}

impl Discover for DnsSrv {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        let found = self
            .dns
            .resolver
            .lookup(self.name.as_str(), RecordType::SRV)
            .await
            .map_err(|e| DiscoverError(format!("{}: {e}", self.name)))?;
        let targets: BTreeSet<(Name, u16)> = found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((srv.target.clone(), srv.port)),
                _ => None,
            })
            .take(MAX_PEERS + 1)
            .collect();
        if targets.is_empty() {
            return Err(DiscoverError(format!("{}: no SRV records", self.name)));
        }
        if self.host_type == HostType::Hostname {
            return Ok(targets
                .iter()
                .map(|(target, port)| format!("{}:{port}", host(target)))
                .collect());
        }
        let hosts: BTreeSet<Name> = targets.iter().map(|(target, _)| target.clone()).collect();
        let given = &additionals(found.additionals());
        let resolved = look_up_each(hosts.clone(), |host| async move {
            self.dns.addresses(&host, given).await
        })
        .await;
        let addresses: FxHashMap<Name, Vec<IpAddr>> = self
            .addresses
            .settle(hosts.into_iter().zip(resolved))
            .into_iter()
            .collect();
        let peers = bounded(
            targets
                .iter()
                .filter_map(|(target, port)| Some((addresses.get(target)?, *port)))
                .flat_map(|(ips, port)| {
                    ips.iter()
                        .map(move |ip| SocketAddr::new(*ip, port).to_string())
                }),
        );
        if peers.is_empty() {
            return Err(DiscoverError(format!(
                "{}: no SRV target resolves",
                self.name
            )));
        }
        Ok(peers.into_iter().collect())
    }
}
