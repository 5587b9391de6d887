//! What a node is told when it starts. Every default is documented where it is set; an invalid
//! configuration is refused by [`NodeConfig::validate`] when the node starts, never discovered
//! later.

use std::time::Duration;

use gen_cluster_proto::NodeName;
use gen_cluster_proto::liveness::{LivenessConfig, LivenessConfigError};
use gen_cluster_proto::wire::DEFAULT_MAX_FRAME;

/// The settings of one node.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node's name, unique in the cluster.
    pub name: NodeName,
    /// Where to listen. Default `127.0.0.1:0` (loopback, any free port).
    pub listen: String,
    /// The address other nodes dial to reach this one, told to each peer and passed on by the
    /// cluster view. Default: the address the listener is bound to; when that is any address
    /// (`0.0.0.0` or `::`), the same port at this host's address on its default route (the
    /// interface other hosts most likely reach it through; no packet is sent to find it). A host
    /// on several networks, or behind a NAT, sets it.
    pub advertise: Option<String>,
    /// The cluster's name: nodes of another cluster are refused at the handshake even with the
    /// same secret. Default `"default"`.
    pub cluster: String,
    /// The shared secret (cookie) every node of the cluster must hold. Never sent on the wire.
    pub cookie: Vec<u8>,
    /// Failure detection: heartbeat interval and silent deadline (defaults 200 ms and 1 s).
    pub liveness: LivenessConfig,
    /// The longest a handshake may take before the connection is dropped. Default 5 s: enough for
    /// a congested WAN link, short enough that silent connections cannot pile up.
    pub handshake_timeout: Duration,
    /// The longest a dial may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The largest frame accepted or sent, in bytes. Default 8 MiB. Must be the same on every
    /// node: a larger frame from a peer closes the connection.
    pub max_frame: usize,
    /// The bytes of messages (sends, casts, calls) that may wait in a link's queue to one peer.
    /// A sender that finds no room waits (or, from `try_cast`/`try_send`, is told busy): the
    /// back-pressure that keeps a slow peer from growing this node's memory. One message larger
    /// than the bound takes it all. Default 16 MiB: twice the largest message.
    pub send_queue_bytes: usize,
    /// The most incoming connections that have not yet proved the secret, in all. Beyond it, a
    /// new connection takes the place of the oldest one (a silent one first). Default 64.
    pub max_pending_handshakes: usize,
    /// The most such connections from one source address; beyond it, a new one from that
    /// address takes the place of its oldest. Default 16.
    pub max_pending_per_source: usize,
    /// The longest an incoming connection may take to prove the secret (Hello, Challenge,
    /// Response). Default 1 s: a few round trips even on a slow WAN, short enough that silent or
    /// stalling sockets give their place back quickly.
    pub auth_timeout: Duration,
    /// Whether to connect to every member the cluster view learns of, keeping a full mesh (as
    /// Erlang's `connect_all`). Default true; a node that should talk only to the nodes it dials
    /// itself turns it off.
    pub connect_all: bool,
    /// A hidden node — a tool or a client — connects to nodes without joining their cluster:
    /// they do not report it up or down, tell no one of it, and leave it out of their elections
    /// and names (Erlang's hidden nodes). It dials only what it is told to. Default false.
    pub hidden: bool,
    /// How long a node stays in this node's cluster view while down for it (no node it hears
    /// from is connected to it), or after it left; then it is forgotten and no longer dialed, so
    /// that nodes that come and go under new names (containers) are not held and dialed
    /// forever. A node forgotten that comes back (it dials, or a peer connected to it speaks of
    /// it) is taken again. At least [`MIN_FORGET_GONE_AFTER`]; default 10 minutes.
    pub forget_gone_after: Duration,
}

/// The shortest [`NodeConfig::forget_gone_after`] accepted (the CLI's whole seconds): a guard
/// against a unit mistake, far below any useful setting (a node that restarts is dialed again
/// only if it comes back within it).
pub const MIN_FORGET_GONE_AFTER: Duration = Duration::from_secs(1);

impl NodeConfig {
    /// The default listen address: loopback, any free port.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:0";
    /// The default cluster name.
    pub const DEFAULT_CLUSTER: &'static str = "default";

    /// A configuration with every default, for the node `name` holding `cookie`.
    pub fn new(name: NodeName, cookie: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            listen: Self::DEFAULT_LISTEN.into(),
            advertise: None,
            cluster: Self::DEFAULT_CLUSTER.into(),
            cookie: cookie.into(),
            liveness: LivenessConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            send_queue_bytes: 2 * DEFAULT_MAX_FRAME,
            max_pending_handshakes: 64,
            max_pending_per_source: 16,
            auth_timeout: Duration::from_secs(1),
            connect_all: true,
            hidden: false,
            forget_gone_after: gen_cluster_proto::view::DEFAULT_FORGET_AFTER,
        }
    }

    /// Checks the configuration; the node refuses to start with an invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cookie.is_empty() {
            return Err(ConfigError::EmptyCookie);
        }
        if self.cluster.is_empty() || self.cluster.len() > 255 {
            return Err(ConfigError::ClusterName);
        }
        if let Some(addr) = &self.advertise {
            let has_port = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port || addr.len() > 255 {
                return Err(ConfigError::Advertise(addr.clone()));
            }
        }
        self.liveness.validate()?;
        if self.handshake_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.auth_timeout.is_zero()
        {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.forget_gone_after < MIN_FORGET_GONE_AFTER {
            return Err(ConfigError::ForgetGoneAfter(self.forget_gone_after));
        }
        if self.max_frame < 1024 || self.max_frame > u32::MAX as usize {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        if self.send_queue_bytes < 1024 || self.send_queue_bytes > u32::MAX as usize {
            return Err(ConfigError::SendQueueBytes(self.send_queue_bytes));
        }
        if self.max_pending_handshakes == 0 || self.max_pending_per_source == 0 {
            return Err(ConfigError::ZeroPendingHandshakes);
        }
        Ok(())
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cluster", &self.cluster)
            .field("cookie", &"<redacted>")
            .field("liveness", &self.liveness)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame", &self.max_frame)
            .field("send_queue_bytes", &self.send_queue_bytes)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field("max_pending_per_source", &self.max_pending_per_source)
            .field("auth_timeout", &self.auth_timeout)
            .field("connect_all", &self.connect_all)
            .field("hidden", &self.hidden)
            .field("forget_gone_after", &self.forget_gone_after)
            .finish()
    }
}

/// A refused [`NodeConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret: every node could join.
    #[error("the cookie is empty: give every node of the cluster the same non-empty secret")]
    EmptyCookie,
    /// The cluster name is empty or too long.
    #[error("the cluster name must be 1 to 255 bytes")]
    ClusterName,
    /// The advertised address is not `HOST:PORT` of at most 255 bytes.
    #[error("advertise {0:?} must be HOST:PORT (at most 255 bytes), e.g. 10.0.0.5:4370")]
    Advertise(String),
    /// The failure detector settings cannot work.
    #[error(transparent)]
    Liveness(#[from] LivenessConfigError),
    /// A timeout of zero would fail every connection.
    #[error("handshake_timeout, connect_timeout and auth_timeout must be greater than zero")]
    ZeroTimeout,
    /// Nodes would be forgotten before a restart could bring them back.
    #[error(
        "forget_gone_after {0:?} is too short: use at least 1 s (the default is 10 minutes; a \
         node down for that long is forgotten and no longer dialed)"
    )]
    ForgetGoneAfter(Duration),
    /// The frame cap is out of range.
    #[error("max_frame {0} is out of range: use 1 KiB to 4 GiB")]
    MaxFrame(usize),
    /// The send queue's bound is out of range.
    #[error("send_queue_bytes {0} is out of range: use 1 KiB to 4 GiB")]
    SendQueueBytes(usize),
    /// No handshake could ever run.
    #[error("max_pending_handshakes and max_pending_per_source must be at least 1")]
    ZeroPendingHandshakes,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_forget_time_below_a_second_is_refused_with_its_value() {
        let mut config = NodeConfig::new(NodeName::new("a").unwrap(), "cookie");
        config.forget_gone_after = Duration::from_millis(999);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ForgetGoneAfter(after)) if after == Duration::from_millis(999)
        ));
        config.forget_gone_after = MIN_FORGET_GONE_AFTER;
        assert!(config.validate().is_ok());
    }
}
