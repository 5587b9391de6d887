//! A `gen-cluster node` child process driven through its JSON events, for the demo and the
//! benchmarks that kill or stop nodes for real.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gen_cluster::NodeName;
use serde_json::Value;

/// A `gen-cluster node` child process, and the JSON events it prints.
pub struct NodeProcess {
    child: Child,
    events: mpsc::Receiver<Value>,
    /// Its name.
    pub name: NodeName,
    /// Where it listens.
    pub addr: String,
    /// How long a wait for one of its events may last.
    step: Duration,
}

/// The node settings of this process's environment (`GEN_CLUSTER_*` but the log filter): a node
/// started for a benchmark or the demo is given its settings as flags, and a variable left in the
/// caller's shell (`GEN_CLUSTER_HTTP`, `GEN_CLUSTER_COOKIE_FILE`, …) would override them.
pub fn settings_in_env() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            name.starts_with("GEN_CLUSTER_") && name != "GEN_CLUSTER_LOG"
        })
        .collect()
}

impl NodeProcess {
    /// Starts `gen-cluster node --name NAME --events json ARGS…` with `cookie`.
    pub fn start(name: &str, cookie: &str, args: &[&str], step: Duration) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        for name in settings_in_env() {
            command.env_remove(name);
        }
        command
            .args(["node", "--name", name, "--events", "json"])
            .args(args)
            .env("GEN_CLUSTER_COOKIE", cookie)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().context("cannot start a node process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut node = Self {
            child,
            events,
            name: NodeName::new(name)?,
            addr: String::new(),
            step,
        };
        let started = node.wait(|e| e["event"] == "started")?;
        node.addr = started["addr"].as_str().context("no address")?.to_string();
        Ok(node)
    }

    /// The next event `pick` accepts, within the step bound.
    pub fn wait(&self, pick: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + self.step;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .map_err(|_| anyhow!("{}: no expected event within {:?}", self.name, self.step))?;
            if pick(&event) {
                return Ok(event);
            }
        }
    }

    /// The next event printed, if one is waiting.
    pub fn try_event(&self) -> Option<Value> {
        self.events.try_recv().ok()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the node prints that `leader` leads its dictionary.
    pub fn wait_leader(&self, leader: &str) -> Result<()> {
        self.wait(|e| e["event"] == "leader" && e["leader"] == leader)
            .map(|_| ())
    }

    /// Waits until the node prints that some node leads its dictionary; returns its name.
    pub fn wait_any_leader(&self) -> Result<String> {
        let event = self.wait(|e| e["event"] == "leader" && e["leader"].is_string())?;
        Ok(event["leader"].as_str().unwrap_or_default().to_string())
    }

    /// Waits for the process to end (after a signal that ends it).
    pub fn wait_exit(&mut self) -> Result<()> {
        self.child.wait()?;
        Ok(())
    }

    /// SIGKILL, and wait for it to end.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal (`-STOP`, `-CONT`, …).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} {} failed", self.name);
        }
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
