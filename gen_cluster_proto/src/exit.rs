//! Why a process or a node connection ended. Exit reasons travel in DOWN and EXIT frames and in
//! node-down events, so they are plain serializable data.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a process stopped, or why a monitor fired.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// The process finished its work.
    Normal,
    /// The process, or its node, was asked to stop.
    Shutdown,
    /// The process was killed by a linked process's exit.
    Killed,
    /// There was no such process when the monitor was set (or it belonged to an earlier
    /// incarnation of its node).
    NoProc,
    /// The connection to the process's node was lost, so its fate is unknown.
    NoConnection,
    /// The process failed: a handler returned an error or panicked. The text says why.
    Error(String),
}

impl ExitReason {
    /// Whether this is an ordinary end ([`Normal`](Self::Normal) or
    /// [`Shutdown`](Self::Shutdown)), which does not take linked processes down with it.
    pub fn is_normal(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Killed => f.write_str("killed"),
            Self::NoProc => f.write_str("noproc"),
            Self::NoConnection => f.write_str("noconnection"),
            Self::Error(why) => write!(f, "error: {why}"),
        }
    }
}
