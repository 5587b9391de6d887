//! A node's settings: a TOML file (`--config`), then the command-line flags over it, then the
//! defaults. A bad file is refused at start with the line and the reason.
//!
//! ```toml
//! name = "a"                      # required, here or as --name
//! listen = "0.0.0.0:4370"         # default 127.0.0.1:0
//! cluster = "default"
//! cookie_file = "/etc/gen-cluster/cookie"
//! down_after_ms = 1000
//! events = "json"                 # or "text"
//! member = "web"                  # run a cluster member of this kind
//! globals = ["scheduler"]         # global names for the echo server
//! candidates = ["a", "b", "c"]    # run the global dictionary, led by one of these
//! workers = ["w1"]                # its workers known in advance (others may join)
//! data_dir = "/var/lib/gen-cluster"   # where the election's incarnation is kept
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

use anyhow::{Context, Result, bail};
use gen_cluster::{HostType, NodeName};
use serde::{Deserialize, Deserializer};

use crate::{EventFormat, NodeArgs};

/// What a node runs with.
pub struct Settings {
    pub name: NodeName,
    pub listen: String,
    pub cluster: String,
    pub cookie_file: Option<PathBuf>,
    pub down_after: Duration,
    pub events: EventFormat,
    pub globals: Vec<String>,
    pub candidates: Vec<NodeName>,
    pub workers: Vec<NodeName>,
    pub data_dir: Option<PathBuf>,
    pub member: Option<String>,
    pub seeds: Vec<String>,
    pub dns_a: Option<DnsA>,
    pub dns_srv: Option<DnsSrv>,
    pub nameserver: Option<std::net::SocketAddr>,
    pub epmd: Vec<String>,
    pub epmd_register: Option<String>,
    /// `None`: discover once.
    pub refresh_interval: Option<Duration>,
}

/// Peers on every address of a DNS name's A/AAAA records.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsA {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub host_type: HostType,
}

/// Peers named by a DNS name's SRV records.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSrv {
    pub name: String,
    #[serde(default)]
    pub host_type: HostType,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<NodeName>,
    listen: Option<String>,
    cluster: Option<String>,
    cookie_file: Option<PathBuf>,
    down_after_ms: Option<u64>,
    events: Option<EventFormat>,
    globals: Option<Vec<String>>,
    candidates: Option<Vec<NodeName>>,
    workers: Option<Vec<NodeName>>,
    data_dir: Option<PathBuf>,
    member: Option<String>,
    #[serde(default)]
    discovery: Discovery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Discovery {
    #[serde(rename = "static", default)]
    static_peers: Vec<String>,
    dns_a: Option<DnsA>,
    dns_srv: Option<DnsSrv>,
    nameserver: Option<std::net::SocketAddr>,
    #[serde(default)]
    epmd: Vec<String>,
    epmd_register: Option<String>,
    #[serde(default, deserialize_with = "refresh")]
    refresh_interval_ms: Option<Refresh>,
}

#[derive(Clone, Copy)]
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

/// The default refresh interval of discovery.
const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// Reads the file named by `--config` (if any) and lays the flags over it.
pub fn resolve(args: &NodeArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(path) => read(path)?,
        None => File::default(),
    };
    let name = match (&args.name, file.name) {
        (Some(name), _) => NodeName::new(name.as_str())?,
        (None, Some(name)) => name,
        (None, None) => bail!("no node name: give --name or `name = \"…\"` in the config file"),
    };
    let mut seeds = file.discovery.static_peers;
    seeds.extend(args.seeds.iter().cloned());
    let mut globals = file.globals.unwrap_or_default();
    globals.extend(args.globals.iter().cloned());
    let names = |flag: &[String]| -> Result<Option<Vec<NodeName>>> {
        if flag.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            flag.iter()
                .map(|n| NodeName::new(n.as_str()))
                .collect::<Result<_, _>>()?,
        ))
    };
    let candidates = names(&args.candidates)?
        .or(file.candidates)
        .unwrap_or_default();
    let workers = names(&args.workers)?.or(file.workers).unwrap_or_default();
    if candidates.is_empty() && !workers.is_empty() {
        bail!("workers without candidates: give the candidates too (--candidates)");
    }
    let down_after_ms = args.down_after_ms.or(file.down_after_ms).unwrap_or(1000);
    if down_after_ms < 10 {
        bail!("down_after_ms must be at least 10");
    }
    Ok(Settings {
        name,
        listen: args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:0".into()),
        cluster: args
            .cluster
            .clone()
            .or(file.cluster)
            .unwrap_or_else(|| "default".into()),
        cookie_file: args.cookie_file.clone().or(file.cookie_file),
        down_after: Duration::from_millis(down_after_ms),
        events: args.events.or(file.events).unwrap_or(EventFormat::Text),
        globals,
        candidates,
        workers,
        data_dir: args.data_dir.clone().or(file.data_dir),
        member: args.member.clone().or(file.member),
        seeds,
        dns_a: file.discovery.dns_a,
        dns_srv: file.discovery.dns_srv,
        nameserver: file.discovery.nameserver,
        epmd: file.discovery.epmd,
        epmd_register: file.discovery.epmd_register,
        refresh_interval: match file.discovery.refresh_interval_ms {
            Some(Refresh::Every(every)) => Some(every),
            Some(Refresh::Once) => None,
            None => Some(DEFAULT_REFRESH),
        },
    })
}

fn read(path: &Path) -> Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|error| anyhow::anyhow!("invalid config file {}: {error}", path.display()))
}
