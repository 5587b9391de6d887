//! A node's settings, declared once in [`NodeSettings`]: each field is a key of the node's TOML
//! file and (with the `clap` feature, as the `gen-cluster` CLI builds it) a flag of
//! `gen-cluster node`. An application starts from the same file as the CLI with
//! [`Settings::from_toml_file`], then takes its [`NodeConfig`](Settings::node_config), its
//! election's [`LeaderConfig`](Settings::leader_config), its TLS files, and the discovery
//! sources it names (`given.discovery`, `given.seeds`) to start as it likes. `EventFormat` is
//! read for the CLI, which prints the events. The flags (and the CLI's `GEN_CLUSTER_*`
//! environment variables, which stand for them: `GEN_CLUSTER_NAME` for `--name`) override the
//! file, lists add up, and where neither gives a setting the library's default applies
//! (`NodeConfig::new`, `ReconcileConfig::default`): no default is restated here. A bad file is
//! refused at start with the line and the reason.
//!
//! ```toml
//! name = "a"                      # required, here or as --name
//! listen = "0.0.0.0:4370"         # default 127.0.0.1:0
//! advertise = "10.0.0.1:4370"     # what others dial; default the listen address (see below)
//! cluster = "default"
//! cookie_file = "/etc/gen-cluster/cookie"
//! down_after_ms = 1000
//! monitors = 5                    # how many members watch each member (same on every node)
//! forget_gone_after_s = 600       # forget a node down (or left) this long; no longer dial it
//! events = "json"                 # or "text"
//! member = "web"                  # run a cluster member of this kind
//! globals = ["scheduler"]         # global names for the echo server
//! candidates = ["a", "b", "c"]    # run the global dictionary, led by one of these
//! workers = ["w1"]                # its workers known in advance (others may join)
//! data_dir = "/var/lib/gen-cluster"   # where the election's incarnation (and term) is kept
//! election = "majority"           # or "priority" (the default)
//! election_timeout_ms = 500       # majority: stand after 1-2x this without a leader
//! leases = true                   # majority: the leader answers reads alone (default false)
//! http = "0.0.0.0:9100"           # serve /metrics, /ready, /alive
//! tls = { cert = "/etc/gen-cluster/a.pem", key = "/etc/gen-cluster/a.key", ca = "/etc/gen-cluster/ca.pem" }
//!
//! [discovery]                     # any of these sources, each kept connected
//! static = ["10.0.0.2:4370", "10.0.0.3:4370"]
//! dns_a = { name = "nodes.example.com", port = 4370, host_type = "ip" }   # or "hostname"
//! dns_srv = { name = "_gen-cluster._tcp.example.com", host_type = "hostname" }
//! nameserver = "10.0.0.53:53"     # default: the system's resolver (/etc/resolv.conf)
//! epmd = ["10.0.0.2", "10.0.0.3:4369"]   # list the nodes registered in these EPMDs
//! epmd_register = "127.0.0.1:4369"       # register this node in this EPMD
//! refresh_interval_ms = 5000      # or "infinity": discover and connect once
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use gen_cluster_proto::NodeName;
use gen_cluster_proto::liveness::LivenessConfig;
use serde::{Deserialize, Deserializer};

use crate::config::NodeConfig;
use crate::discovery::{HostType, ReconcileConfig};
use crate::leader::{ElectionMode, LeaderConfig};
use crate::transport::TlsFiles;

/// Settings that cannot start a node: the message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid settings file (the message has the line and the reason).
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line and the reason.
        message: String,
    },
    /// The settings contradict each other or miss one.
    #[error("{0}")]
    Refused(String),
}

/// Returns early with [`SettingsError::Refused`].
macro_rules! refuse {
    ($($message:tt)*) => {
        return Err(SettingsError::Refused(format!($($message)*)))
    };
}

/// How the CLI prints a node's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line: event, node, peer, reason, ts_ms, …
    Json,
}

impl std::fmt::Display for EventFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventFormat::Text => "text",
            EventFormat::Json => "json",
        })
    }
}

/// What a node runs with: every field optional, from the flags or the config file.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The node's name, unique in the cluster (letters, digits, `-_.@:`); required.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_NAME"))]
    pub name: Option<NodeName>,
    /// The address to listen on.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_LISTEN", help = with_default("The address to listen on", NodeConfig::DEFAULT_LISTEN)))]
    pub listen: Option<String>,
    /// The address other nodes dial to reach this one. Default: the listen address; listening
    /// on 0.0.0.0 (or ::), the same port at this host's address on its default route.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_ADVERTISE"))]
    pub advertise: Option<String>,
    /// A file holding the cluster secret. Without it: $GEN_CLUSTER_COOKIE, else
    /// ~/.gen_cluster.cookie (created with a random secret if missing).
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_COOKIE_FILE"))]
    pub cookie_file: Option<PathBuf>,
    /// The cluster's name; nodes of another cluster are refused.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_CLUSTER", help = with_default(
        "The cluster's name; nodes of another cluster are refused",
        NodeConfig::DEFAULT_CLUSTER,
    )))]
    pub cluster: Option<String>,
    /// Declare a silent peer down after this many milliseconds.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_DOWN_AFTER_MS", help = with_default(
        "Declare a silent peer down after this many milliseconds",
        LivenessConfig::default().down_after.as_millis(),
    )))]
    pub down_after_ms: Option<u64>,
    /// How many members watch each member for silence (the same on every node).
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_MONITORS", help = with_default(
        "How many members watch each member for silence (the same on every node)",
        LivenessConfig::default().monitors,
    )))]
    pub monitors: Option<usize>,
    /// Forget a node (no longer dial it) once it has been down for this node, or left, this
    /// many seconds.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_FORGET_GONE_AFTER_S", help = with_default(
        "Forget a node (no longer dial it) once it has been down for this node, or left, this many seconds",
        gen_cluster_proto::view::DEFAULT_FORGET_AFTER.as_secs(),
    )))]
    pub forget_gone_after_s: Option<u64>,
    /// How events are printed.
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_EVENTS", value_enum, help = with_default("How events are printed", EventFormat::default())))]
    pub events: Option<EventFormat>,
    /// Register this node's echo server under this global name (repeatable).
    #[cfg_attr(feature = "clap", arg(long = "global"))]
    #[serde(default)]
    pub globals: Vec<String>,
    /// Run a cluster member of this kind (in the cluster named by --cluster) that prints the
    /// member list on every join and leave; it joins through the seeds' cluster.
    #[cfg_attr(feature = "clap", arg(long))]
    pub member: Option<String>,
    /// Run the global dictionary, led by one of these nodes: comma-separated names, highest
    /// priority first, the same list on every node (a,b,c). A node not in the list is a worker.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "GEN_CLUSTER_CANDIDATES",
            value_delimiter = ',',
            value_name = "NAMES"
        )
    )]
    pub candidates: Option<Vec<NodeName>>,
    /// Workers of the dictionary known in advance, comma-separated (others may join).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "GEN_CLUSTER_WORKERS",
            value_delimiter = ',',
            value_name = "NAMES"
        )
    )]
    pub workers: Option<Vec<NodeName>>,
    /// Where the election's incarnation is kept across restarts [default: none, a random one];
    /// in the majority election, a candidate's term and vote (required there).
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_DATA_DIR"))]
    pub data_dir: Option<PathBuf>,
    /// How the dictionary's leader is chosen [default: priority].
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_ELECTION", value_enum))]
    pub election: Option<Election>,
    /// Majority election: a candidate that hears no leader for a random 1-2x this many
    /// milliseconds stands; a leader that hears no quorum within it steps down [default: 500].
    #[cfg_attr(feature = "clap", arg(long, env = "GEN_CLUSTER_ELECTION_TIMEOUT_MS"))]
    pub election_timeout_ms: Option<u64>,
    /// Majority election: leader leases. `dict get --leader` is answered by the leader alone
    /// (a round trip sooner) while a quorum answered it within 0.98x the election timeout;
    /// a leader elected after a crash or a cut serves nothing for one election timeout. The
    /// same on every node [default: false].
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "GEN_CLUSTER_LEASES",
            num_args = 0..=1,
            default_missing_value = "true",
            value_name = "BOOL"
        )
    )]
    pub leases: Option<bool>,
    /// Serve /metrics (Prometheus), /ready and /alive over HTTP on this address.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "GEN_CLUSTER_HTTP", value_name = "ADDR")
    )]
    pub http: Option<String>,
    /// Mutual TLS: the three files, or none.
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(default)]
    pub tls: TlsSettings,
    /// A node to connect to (repeatable); in the file, `static` under `[discovery]`.
    #[cfg_attr(feature = "clap", arg(long = "seed"))]
    #[serde(skip)]
    pub seeds: Vec<String>,
    /// The file's `[discovery]` table.
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(default)]
    pub discovery: DiscoverySettings,
}

/// Mutual TLS between nodes (and with clients): each node's certificate, signed by the
/// cluster's CA, must name the node. All three or none.
#[derive(Debug, Deserialize, Default, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// This node's TLS certificate (PEM; its DNS names must include the node's name); with
    /// --tls-key and --tls-ca, turns on mutual TLS. Reloaded on SIGHUP and when it changes.
    #[cfg_attr(
        feature = "clap",
        arg(id = "tls_cert", long = "tls-cert", value_name = "FILE", global = true)
    )]
    pub cert: Option<PathBuf>,
    /// This node's TLS private key (PEM).
    #[cfg_attr(
        feature = "clap",
        arg(id = "tls_key", long = "tls-key", value_name = "FILE", global = true)
    )]
    pub key: Option<PathBuf>,
    /// The cluster's CA certificate(s) (PEM): peers must hold a certificate signed by one.
    #[cfg_attr(
        feature = "clap",
        arg(id = "tls_ca", long = "tls-ca", value_name = "FILE", global = true)
    )]
    pub ca: Option<PathBuf>,
}

impl TlsSettings {
    /// These over `file`'s, file by file.
    fn over(self, file: TlsSettings) -> TlsSettings {
        TlsSettings {
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
            ca: self.ca.or(file.ca),
        }
    }

    /// The files, if TLS is on; an error if only some are given.
    pub fn files(&self) -> Result<Option<TlsFiles>, SettingsError> {
        match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ => refuse!(
                "TLS needs a certificate, a key and a CA: give all of --tls-cert, --tls-key and \
                 --tls-ca (in a node's config file: tls = {{ cert = \"…\", key = \"…\", \
                 ca = \"…\" }})"
            ),
        }
    }
}

/// How the dictionary's leader is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Election {
    /// The highest-priority candidate each side of a split can reach leads; the sides' writes
    /// are merged on heal.
    Priority,
    /// A leader only with a quorum of the candidates; a minority side refuses writes
    /// (NoQuorum); a write's ok means a quorum holds it.
    Majority,
}

/// The sources a node discovers its peers from, each kept connected.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySettings {
    /// Fixed addresses (the file's list; `--seed` adds to it).
    #[serde(rename = "static", default)]
    pub static_peers: Vec<String>,
    /// Peers on every address of this DNS name.
    pub dns_a: Option<DnsA>,
    /// Peers named by this DNS name's SRV records.
    pub dns_srv: Option<DnsSrv>,
    /// Default: the system's resolver.
    pub nameserver: Option<std::net::SocketAddr>,
    /// List the nodes registered in these EPMDs.
    #[serde(default)]
    pub epmd: Vec<String>,
    /// Register this node in this EPMD.
    pub epmd_register: Option<String>,
    #[serde(default, deserialize_with = "refresh")]
    refresh_interval_ms: Option<Refresh>,
}

/// Peers on every address of a DNS name's A/AAAA records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsA {
    /// The DNS name to look up.
    pub name: String,
    /// The port the peers listen on.
    pub port: u16,
    #[serde(default)]
    /// Whether a peer is dialed at its address or at its host name.
    pub host_type: HostType,
}

/// Peers named by a DNS name's SRV records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSrv {
    /// The DNS name whose SRV records name the peers.
    pub name: String,
    #[serde(default)]
    /// Whether a peer is dialed at its address or at its host name.
    pub host_type: HostType,
}

#[derive(Clone, Copy, Debug)]
enum Refresh {
    Every(Duration),
    Once,
}

/// Milliseconds, or the word "infinity".
fn refresh<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Refresh>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Word(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Millis(0) => Err(serde::de::Error::custom(
            "refresh_interval_ms must be above 0, or \"infinity\"",
        )),
        Raw::Millis(ms) => Ok(Some(Refresh::Every(Duration::from_millis(ms)))),
        Raw::Word(word) if word == "infinity" => Ok(Some(Refresh::Once)),
        Raw::Word(word) => Err(serde::de::Error::custom(format!(
            "refresh_interval_ms must be milliseconds or \"infinity\", not {word:?}"
        ))),
    }
}

/// A flag's help with the default the library applies.
#[cfg(feature = "clap")]
fn with_default(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}]")
}

impl NodeSettings {
    /// These settings over `file`'s: a setting given here wins, lists add up.
    fn over(self, file: NodeSettings) -> NodeSettings {
        let mut seeds = file.discovery.static_peers;
        seeds.extend(self.seeds);
        NodeSettings {
            name: self.name.or(file.name),
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            cookie_file: self.cookie_file.or(file.cookie_file),
            cluster: self.cluster.or(file.cluster),
            down_after_ms: self.down_after_ms.or(file.down_after_ms),
            monitors: self.monitors.or(file.monitors),
            forget_gone_after_s: self.forget_gone_after_s.or(file.forget_gone_after_s),
            events: self.events.or(file.events),
            globals: [file.globals, self.globals].concat(),
            member: self.member.or(file.member),
            candidates: self.candidates.or(file.candidates),
            workers: self.workers.or(file.workers),
            data_dir: self.data_dir.or(file.data_dir),
            election: self.election.or(file.election),
            election_timeout_ms: self.election_timeout_ms.or(file.election_timeout_ms),
            leases: self.leases.or(file.leases),
            http: self.http.or(file.http),
            tls: self.tls.over(file.tls),
            seeds,
            discovery: DiscoverySettings {
                static_peers: Vec::new(),
                ..file.discovery
            },
        }
    }
}

/// The settings of a node about to start: the flags over the file, checked.
#[derive(Debug)]
pub struct Settings {
    /// The node's name.
    pub name: NodeName,
    /// Everything given, the flags over the file.
    pub given: NodeSettings,
}

impl Settings {
    /// The settings in the TOML file `path`, checked, with no flag over them.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
    /// use gen_cluster::settings::Settings;
    ///
    /// let settings = Settings::from_toml_file("node.toml".as_ref())?;
    /// let cookie = std::fs::read(settings.given.cookie_file.as_ref().expect("cookie_file"))?;
    /// let node = match settings.given.tls.files()? {
    ///     Some(files) => {
    ///         let tls = gen_cluster::Tls::load(files, settings.name.clone())?;
    ///         gen_cluster::Node::start_with(settings.node_config(cookie), tls).await?
    ///     }
    ///     None => gen_cluster::Node::start(settings.node_config(cookie)).await?,
    /// };
    /// let election = settings.leader_config("dict"); // Some when the file names candidates
    /// # drop((node, election));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_toml_file(path: &Path) -> Result<Settings, SettingsError> {
        resolve(Some(path), NodeSettings::default())
    }

    /// The node's configuration: the library's defaults, with what was given.
    pub fn node_config(&self, cookie: Vec<u8>) -> NodeConfig {
        let mut config = NodeConfig::new(self.name.clone(), cookie);
        if let Some(listen) = &self.given.listen {
            config.listen.clone_from(listen);
        }
        config.advertise.clone_from(&self.given.advertise);
        config.cluster = self.cluster();
        if let Some(ms) = self.given.down_after_ms {
            let down_after = Duration::from_millis(ms);
            config.liveness = LivenessConfig {
                heartbeat_interval: down_after / 5,
                down_after,
                ..LivenessConfig::default()
            };
        }
        if let Some(monitors) = self.given.monitors {
            config.liveness.monitors = monitors;
        }
        if let Some(seconds) = self.given.forget_gone_after_s {
            config.forget_gone_after = Duration::from_secs(seconds);
        }
        config
    }

    /// The cluster's name.
    pub fn cluster(&self) -> String {
        self.given
            .cluster
            .clone()
            .unwrap_or_else(|| NodeConfig::DEFAULT_CLUSTER.into())
    }

    /// How events are printed.
    pub fn events(&self) -> EventFormat {
        self.given.events.unwrap_or_default()
    }

    /// The candidates of the dictionary (none: the node runs none).
    pub fn candidates(&self) -> &[NodeName] {
        self.given.candidates.as_deref().unwrap_or_default()
    }

    /// The dictionary's election, if the node runs one (it names candidates).
    pub fn leader_config(&self, name: &str) -> Option<LeaderConfig> {
        if self.candidates().is_empty() {
            return None;
        }
        let mut config = LeaderConfig::new(name, self.candidates().to_vec());
        config.workers = self.given.workers.clone().unwrap_or_default();
        config.data_dir = self.given.data_dir.clone();
        if self.given.election == Some(Election::Majority) {
            config.mode = ElectionMode::Majority;
        }
        if let Some(ms) = self.given.election_timeout_ms {
            config.election_timeout = Duration::from_millis(ms);
            config.heartbeat = config.election_timeout / 5;
        }
        config.leases = self.given.leases.unwrap_or(false);
        Some(config)
    }

    /// Whether the node was given peers to find (seeds or a discovery source): then it is
    /// ready only once it has found one.
    pub fn expects_peers(&self) -> bool {
        let discovery = &self.given.discovery;
        !self.given.seeds.is_empty()
            || discovery.dns_a.is_some()
            || discovery.dns_srv.is_some()
            || !discovery.epmd.is_empty()
    }

    /// How the discovery loops run.
    pub fn reconcile(&self) -> ReconcileConfig {
        let mut reconcile = ReconcileConfig::default();
        match self.given.discovery.refresh_interval_ms {
            Some(Refresh::Every(every)) => reconcile.refresh_interval = Some(every),
            Some(Refresh::Once) => reconcile.refresh_interval = None,
            None => {}
        }
        reconcile
    }
}

/// Reads the file named by `--config` (if any) and lays the flags over it.
pub fn resolve(config: Option<&Path>, flags: NodeSettings) -> Result<Settings, SettingsError> {
    let file = match config {
        Some(path) => read(path)?,
        None => NodeSettings::default(),
    };
    let given = flags.over(file);
    let Some(name) = given.name.clone() else {
        refuse!("no node name: give --name or `name = \"…\"` in the config file");
    };
    let no_candidates = given.candidates.as_ref().is_none_or(Vec::is_empty);
    if no_candidates && given.workers.as_ref().is_some_and(|w| !w.is_empty()) {
        refuse!("workers without candidates: give the candidates too (--candidates)");
    }
    if no_candidates && given.election == Some(Election::Majority) {
        refuse!("a majority election needs its voters: give the candidates (--candidates)");
    }
    if given.election_timeout_ms.is_some() && given.election != Some(Election::Majority) {
        refuse!(
            "election_timeout_ms is a setting of the majority election: give --election majority too"
        );
    }
    if given.leases == Some(true) && given.election != Some(Election::Majority) {
        refuse!("leases are a setting of the majority election: give --election majority too");
    }
    if given.election_timeout_ms.is_some_and(|ms| ms < 20) {
        refuse!("election_timeout_ms must be at least 20");
    }
    if given.down_after_ms.is_some_and(|ms| ms < 10) {
        refuse!("down_after_ms must be at least 10");
    }
    if given.monitors == Some(0) {
        refuse!("monitors must be at least 1");
    }
    if given.forget_gone_after_s == Some(0) {
        refuse!("forget_gone_after_s must be at least 1");
    }
    if given
        .data_dir
        .as_ref()
        .is_some_and(|dir| dir.as_os_str().is_empty())
    {
        refuse!("{}", crate::error::DataDirError::EmptyDataDir);
    }
    for seed in &given.seeds {
        check_seed(seed)?;
    }
    given.tls.files()?;
    Ok(Settings { name, given })
}

/// A seed is one `HOST:PORT` (an IPv6 host in brackets): refused with the expected form
/// otherwise, so that a missing port or a comma-separated list is not dialed for ever.
fn check_seed(seed: &str) -> Result<(), SettingsError> {
    let expected = "expected HOST:PORT, e.g. 10.0.0.2:4370 (repeat --seed for several seeds)";
    if seed.contains(',') || seed.contains(char::is_whitespace) {
        refuse!("the seed {seed:?} holds several addresses: {expected}");
    }
    let port = seed
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && (!host.contains(':') || host.starts_with('[')))
        .map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port > 0 => Ok(()),
        _ => refuse!("the seed {seed:?} has no port: {expected}"),
    }
}

fn read(path: &Path) -> Result<NodeSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| SettingsError::Invalid {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod seed_tests {
    use super::check_seed;

    #[test]
    fn seeds_are_one_host_and_port_each() {
        for good in ["10.0.0.2:4370", "node-a.example.com:4370", "[::1]:4370"] {
            assert!(check_seed(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.2",
            "10.0.0.2:",
            "10.0.0.2:0",
            "10.0.0.2:99999",
            ":4370",
            "::1:4370",
            "10.0.0.2:4370,10.0.0.3:4370",
            "10.0.0.2:4370 10.0.0.3:4370",
        ] {
            let error = check_seed(bad).unwrap_err().to_string();
            assert!(error.contains("HOST:PORT"), "{bad}: {error}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod file_tests {
    use std::time::Duration;

    use super::{Settings, SettingsError};
    use crate::leader::ElectionMode;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gen-cluster-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_application_starts_from_the_clis_file() {
        let path = file(
            "node.toml",
            "name = \"a\"\nlisten = \"127.0.0.1:4370\"\ndown_after_ms = 2000\nmonitors = 3\n\
             forget_gone_after_s = 120\n\
             candidates = [\"a\", \"b\", \"c\"]\nelection = \"majority\"\ndata_dir = \"/var/lib/x\"\n\
             leases = true\n\
             tls = { cert = \"a.pem\", key = \"a.key\", ca = \"ca.pem\" }\n\
             [discovery]\nstatic = [\"10.0.0.2:4370\"]\nrefresh_interval_ms = \"infinity\"\n",
        );
        let settings = Settings::from_toml_file(&path).unwrap();
        let config = settings.node_config(b"cookie".to_vec());
        assert_eq!(config.name.as_str(), "a");
        assert_eq!(config.listen, "127.0.0.1:4370");
        assert_eq!(config.liveness.down_after, Duration::from_secs(2));
        assert_eq!(config.liveness.monitors, 3);
        assert_eq!(config.forget_gone_after, Duration::from_secs(120));
        let leader = settings.leader_config("dict").unwrap();
        assert_eq!(leader.mode, ElectionMode::Majority);
        assert!(leader.leases);
        assert_eq!(leader.candidates.len(), 3);
        assert_eq!(settings.given.seeds, ["10.0.0.2:4370"]);
        assert!(settings.expects_peers());
        assert_eq!(settings.reconcile().refresh_interval, None);
        let tls = settings.given.tls.files().unwrap().unwrap();
        assert_eq!(tls.ca, std::path::Path::new("ca.pem"));
    }

    #[test]
    fn a_bad_file_says_its_line_and_what_to_change() {
        let typo = file("typo.toml", "name = \"a\"\nlisen = \"x\"\n");
        let error = Settings::from_toml_file(&typo).unwrap_err();
        assert!(matches!(error, SettingsError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("line 2"), "{error}");
        let half_tls = file("tls.toml", "name = \"a\"\ntls = { cert = \"a.pem\" }\n");
        let error = Settings::from_toml_file(&half_tls).unwrap_err();
        assert!(matches!(error, SettingsError::Refused(_)), "{error}");
        let missing = Settings::from_toml_file(std::path::Path::new("/no/such/file.toml"));
        assert!(matches!(missing, Err(SettingsError::Read { .. })));
    }
}
