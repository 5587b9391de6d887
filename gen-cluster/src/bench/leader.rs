//! The leader election's figures, each beside a floor measured in the same run: failover after
//! `kill -9` (beside the raw TCP close the kernel reports), after `SIGSTOP` (beside the failure
//! detector's deadline), the heal of a partition (beside the reconnection itself), a cold start
//! (beside forming the mesh), and `leader_call` (beside a plain remote call on the same
//! connection). The `majority` election's failovers (kill, stop, SIGTERM) are measured in the
//! same run as the `priority` one's and reported beside them, and its quorum-acknowledged
//! `leader_call` beside a plain remote call to the leader's node (voters in this process, then
//! voters as `gen-cluster node` processes). Leader leases: reads through
//! the leader beside the read index and a plain call, and the failovers beside the majority
//! election's without leases.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gen_cluster::services::dict::{self, Dict, Request, Write};
use gen_cluster::services::echo;
use gen_cluster::services::echo::{Echo, EchoCall};
use gen_cluster::{
    Discovery, ElectionMode, Leader, LeaderConfig, Node, NodeName, ReconcileConfig, ServerRef,
    StaticPeers,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Bench, COOKIE, Report, config, median, percentiles, runtime};
use crate::child::NodeProcess;

const CANDIDATES: [&str; 3] = ["a", "b", "c"];
/// A bound on each wait, only so that a broken run ends.
const STEP: Duration = Duration::from_secs(20);

/// p50, p99 and max in milliseconds; an empty sample is an error.
fn summary(samples: &[Duration]) -> Result<(f64, f64, f64)> {
    let (p50, p99) = percentiles(samples.to_vec())?;
    let max = samples.iter().max().copied().unwrap_or_default();
    Ok((p50 / 1000.0, p99 / 1000.0, max.as_secs_f64() * 1000.0))
}

/// How a trio elects its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Election {
    Priority,
    Majority,
    /// The majority election with leader leases (`--leases`).
    MajorityLeases,
}

/// Three `gen-cluster node` processes running the dictionary on fixed ports, restartable.
struct Trio {
    nodes: Vec<Option<NodeProcess>>,
    addrs: Vec<String>,
    data: std::path::PathBuf,
    down_after_ms: u64,
    mode: Election,
}

impl Trio {
    /// The trio, once every node follows one leader.
    fn start(down_after_ms: u64, mode: Election) -> Result<Self> {
        let data =
            std::env::temp_dir().join(format!("gen-cluster-bench-{}-{mode:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut addrs = Vec::new();
        for _ in CANDIDATES {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            addrs.push(probe.local_addr()?.to_string());
        }
        let mut trio = Self {
            nodes: CANDIDATES.iter().map(|_| None).collect(),
            addrs,
            data,
            down_after_ms,
            mode,
        };
        for slot in 0..CANDIDATES.len() {
            trio.restart(slot)?;
        }
        // The first node's event names the leader (in the majority mode any of the three).
        let leader = trio.node(0)?.wait_any_leader()?;
        if mode == Election::Priority && leader != "a" {
            bail!("{leader} leads, not the first candidate");
        }
        for node in trio.nodes.iter().flatten().skip(1) {
            node.wait_leader(&leader)?;
        }
        Ok(trio)
    }

    fn restart(&mut self, slot: usize) -> Result<()> {
        let data_dir = self.data.join(CANDIDATES[slot]);
        let data_dir = data_dir
            .to_str()
            .context("a temporary path that is not UTF-8")?;
        let down_after = self.down_after_ms.to_string();
        let candidates = CANDIDATES.join(",");
        let mut args = vec![
            "--listen",
            &self.addrs[slot],
            "--candidates",
            &candidates,
            "--data-dir",
            data_dir,
            "--down-after-ms",
            &down_after,
        ];
        for (other, addr) in self.addrs.iter().enumerate() {
            if other != slot {
                args.extend(["--seed", addr]);
            }
        }
        match self.mode {
            Election::Priority => {}
            Election::Majority => args.extend(["--election", "majority"]),
            Election::MajorityLeases => args.extend(["--election", "majority", "--leases"]),
        }
        self.nodes[slot] = Some(NodeProcess::start(CANDIDATES[slot], COOKIE, &args, STEP)?);
        Ok(())
    }

    /// The leader the restarted node in `slot` follows once back.
    fn rejoined(&self, slot: usize) -> Result<usize> {
        let leader = self.node(slot)?.wait_any_leader()?;
        CANDIDATES
            .iter()
            .position(|c| *c == leader)
            .context("an unknown leader")
    }

    fn node(&self, slot: usize) -> Result<&NodeProcess> {
        self.nodes[slot].as_ref().context("the node is not running")
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A client node of the bench process, kept connected to the trio; `hidden`: not a member (a
/// tool's node: the trio's election counts it as no worker and sends it no copy).
async fn client(addrs: &[String], hidden: bool) -> Result<Node> {
    let mut config = config("bench-client");
    config.hidden = hidden;
    let client = Node::start(config).await?;
    let once_an_hour = ReconcileConfig {
        refresh_interval: Some(Duration::from_secs(3600)),
        ..ReconcileConfig::default()
    };
    Discovery::start(&client, StaticPeers(addrs.to_vec()), once_an_hour);
    Ok(client)
}

async fn connected(client: &Node, name: &str) -> Result<()> {
    let name = NodeName::new(name)?;
    tokio::time::timeout(STEP, async {
        while !client.is_connected(&name) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .context("the bench client did not reconnect")
}

/// The leader, once the client is connected to all three nodes.
async fn leader_once_connected(client: &Node) -> Result<usize> {
    for name in CANDIDATES {
        connected(client, name).await?;
    }
    leader_now(client, CANDIDATES[0]).await
}

/// Writes through `via` until a leader answers; the time it took.
async fn first_answer(client: &Node, via: &str, since: Instant) -> Result<Duration> {
    let via = Leader::<Dict>::at(client, &NodeName::new(via)?, dict::ELECTION);
    loop {
        if since.elapsed() > STEP {
            bail!("no leader answered within {STEP:?}");
        }
        let write = Request::from(Write::Put("bench".into(), "x".into()));
        if via.leader_call(write, STEP).await.is_ok() {
            return Ok(since.elapsed());
        }
    }
}

/// The leader every candidate follows, once they agree (polled: each answers its status).
async fn agreed_leader(client: &Node) -> Result<usize> {
    let deadline = Instant::now() + STEP;
    loop {
        let mut views = Vec::new();
        for name in CANDIDATES {
            views.push(leader_now(client, name).await.ok());
        }
        if let Some(Some(first)) = views.first()
            && views.iter().all(|view| *view == Some(*first))
        {
            return Ok(*first);
        }
        if Instant::now() > deadline {
            bail!("the candidates follow no single leader within {STEP:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leader_now(client: &Node, via: &str) -> Result<usize> {
    let via = Leader::<Dict>::at(client, &NodeName::new(via)?, dict::ELECTION);
    let status = via.status(STEP).await?;
    let leader = status.leader.context("no leader")?;
    CANDIDATES
        .iter()
        .position(|c| *c == leader.as_str())
        .context("an unknown leader")
}

/// `kill -9` of the leader, then the first write a new leader answers; the killed node is
/// restarted (it comes back as a follower) before the next trial. Both modes in the same run.
pub(super) fn failover_kill9(_: &Bench, report: &mut Report) -> Result<()> {
    let (priority, floor) = kill9_trials(Election::Priority).context("priority mode")?;
    let (majority, _) = kill9_trials(Election::Majority).context("majority mode")?;
    let (p50, p99, max) = summary(&priority)?;
    let (floor_p50, ..) = summary(&floor)?;
    report.lower(
        "leader_failover_kill9_p50",
        "ms",
        p50,
        "raw_tcp_close_seen_after_kill9_p50",
        floor_p50,
    );
    report.lower("leader_failover_kill9_p99", "ms", p99, "target_ms_p50", 5.0);
    report.lower("leader_failover_kill9_max", "ms", max, "target_ms_p50", 5.0);
    beside_priority(report, "failover_kill9", &majority, &priority, 50.0)
}

/// Reports the majority mode's p50, p99 and max of `name` beside the priority mode's, and the
/// p50 beside its target too.
fn beside_priority(
    report: &mut Report,
    name: &str,
    majority: &[Duration],
    priority: &[Duration],
    target_p50_ms: f64,
) -> Result<()> {
    let figure = format!("majority_{name}");
    beside(
        report,
        &figure,
        majority,
        &format!("priority_{name}"),
        priority,
    )?;
    let (p50, ..) = summary(majority)?;
    report.lower(
        &format!("{figure}_p50"),
        "ms",
        p50,
        "target_ms_p50",
        target_p50_ms,
    );
    Ok(())
}

/// Reports the p50, p99 and max of `ours` (named `figure_p50`…) beside those of `base`.
fn beside(
    report: &mut Report,
    figure: &str,
    ours: &[Duration],
    baseline: &str,
    base: &[Duration],
) -> Result<()> {
    let (p50, p99, max) = summary(ours)?;
    let (base_p50, base_p99, base_max) = summary(base)?;
    for (what, value, base_value) in [
        ("p50", p50, base_p50),
        ("p99", p99, base_p99),
        ("max", max, base_max),
    ] {
        let (name, base_name) = (format!("{figure}_{what}"), format!("{baseline}_{what}"));
        report.lower(&name, "ms", value, &base_name, base_value);
    }
    Ok(())
}

/// 100 trials of `kill -9` of the leader in `mode`: the time until a new leader answered a
/// write, and when the kernel's close of a raw connection to the killed node was seen.
fn kill9_trials(mode: Election) -> Result<(Vec<Duration>, Vec<Duration>)> {
    const TRIALS: usize = 100;
    let mut trio = Trio::start(1000, mode)?;
    let runtime = runtime()?;
    let client = runtime.block_on(client(&trio.addrs, false))?;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    let mut leader = runtime.block_on(leader_once_connected(&client))?;
    for _ in 0..TRIALS {
        let survivor = (leader + 1) % CANDIDATES.len();
        runtime.block_on(connected(&client, CANDIDATES[survivor]))?;
        let addr = trio.addrs[leader].clone();
        let raw = runtime.block_on(TcpStream::connect(&addr))?;
        let closed = runtime.spawn(async move {
            let mut raw = raw;
            let mut byte = [0u8; 1];
            let _ = raw.read(&mut byte).await;
            Instant::now()
        });
        let killed = Instant::now();
        trio.nodes[leader].as_mut().context("running")?.kill()?;
        ours.push(runtime.block_on(first_answer(&client, CANDIDATES[survivor], killed))?);
        floor.push(runtime.block_on(closed)?.duration_since(killed));
        trio.restart(leader)?;
        leader = trio.rejoined(leader)?;
    }
    runtime.block_on(client.shutdown());
    Ok((ours, floor))
}

/// SIGTERM of the leader (the node shuts down cleanly: in the majority mode its leader hands
/// over), then the first write a new leader answers; both modes in the same run.
pub(super) fn resign(_: &Bench, report: &mut Report) -> Result<()> {
    let priority = resign_trials(Election::Priority).context("priority mode")?;
    let majority = resign_trials(Election::Majority).context("majority mode")?;
    let (p50, p99, max) = summary(&priority)?;
    report.lower("leader_sigterm_p50", "ms", p50, "target_ms", 100.0);
    report.lower("leader_sigterm_p99", "ms", p99, "target_ms", 100.0);
    report.lower("leader_sigterm_max", "ms", max, "target_ms", 100.0);
    beside_priority(report, "sigterm", &majority, &priority, 10.0)
}

fn resign_trials(mode: Election) -> Result<Vec<Duration>> {
    const TRIALS: usize = 100;
    let mut trio = Trio::start(1000, mode)?;
    let runtime = runtime()?;
    let client = runtime.block_on(client(&trio.addrs, false))?;
    let mut ours = Vec::new();
    let mut leader = runtime.block_on(leader_once_connected(&client))?;
    // The trials start once the leader serves: with leases, one elected by a timeout serves
    // (and hands over) only an election timeout after it won.
    runtime.block_on(first_answer(&client, CANDIDATES[leader], Instant::now()))?;
    for _ in 0..TRIALS {
        let survivor = (leader + 1) % CANDIDATES.len();
        runtime.block_on(connected(&client, CANDIDATES[survivor]))?;
        let asked = Instant::now();
        let node = trio.nodes[leader].as_mut().context("running")?;
        node.signal("-TERM")?;
        ours.push(runtime.block_on(first_answer(&client, CANDIDATES[survivor], asked))?);
        node.wait_exit()?;
        trio.restart(leader)?;
        leader = trio.rejoined(leader)?;
    }
    runtime.block_on(client.shutdown());
    Ok(ours)
}

/// The majority election with leader leases beside it without, in the same run: `kill -9` of
/// the leader (its successor waits out the lease: one election timeout) and SIGTERM (a
/// handover: no wait), each until a new leader answered a write.
pub(super) fn lease_failover(_: &Bench, report: &mut Report) -> Result<()> {
    let (kill9, _) = kill9_trials(Election::MajorityLeases).context("with leases")?;
    let (kill9_base, _) = kill9_trials(Election::Majority).context("without leases")?;
    let sigterm = resign_trials(Election::MajorityLeases).context("with leases")?;
    let sigterm_base = resign_trials(Election::Majority).context("without leases")?;
    for (name, ours, base) in [
        ("failover_kill9", &kill9, &kill9_base),
        ("sigterm", &sigterm, &sigterm_base),
    ] {
        let baseline = format!("majority_{name}");
        beside(
            report,
            &format!("majority_leases_{name}"),
            ours,
            &baseline,
            base,
        )?;
    }
    Ok(())
}

/// `SIGSTOP` of the leader with the default settings (the failure detector's deadline 1 s;
/// the majority election's timeout 500 ms), then the first write a new leader answers; both
/// modes in the same run.
pub(super) fn failover_hung(_: &Bench, report: &mut Report) -> Result<()> {
    const DOWN_AFTER_MS: u64 = 1000;
    let priority = hung_trials(Election::Priority, DOWN_AFTER_MS).context("priority mode")?;
    let majority = hung_trials(Election::Majority, DOWN_AFTER_MS).context("majority mode")?;
    let (p50, p99, max) = summary(&priority)?;
    report.lower(
        "leader_failover_sigstop_p50",
        "ms",
        p50,
        "failure_detector_deadline_ms",
        DOWN_AFTER_MS as f64,
    );
    report.lower(
        "leader_failover_sigstop_p99",
        "ms",
        p99,
        "target_ms",
        1500.0,
    );
    report.lower(
        "leader_failover_sigstop_max",
        "ms",
        max,
        "target_ms",
        1500.0,
    );
    beside_priority(report, "failover_sigstop", &majority, &priority, 1500.0)
}

fn hung_trials(mode: Election, down_after_ms: u64) -> Result<Vec<Duration>> {
    const TRIALS: usize = 100;
    let trio = Trio::start(down_after_ms, mode)?;
    let runtime = runtime()?;
    let client = runtime.block_on(client(&trio.addrs, false))?;
    let mut ours = Vec::new();
    for _ in 0..TRIALS {
        for name in CANDIDATES {
            runtime.block_on(connected(&client, name))?;
        }
        // Resumed in the trial before, a node may still drop and redial links its own pause
        // made look silent: the trial starts once all three follow one leader.
        let leader = runtime.block_on(agreed_leader(&client))?;
        let survivor = (leader + 1) % CANDIDATES.len();
        let stopped = Instant::now();
        trio.node(leader)?.signal("-STOP")?;
        ours.push(runtime.block_on(first_answer(&client, CANDIDATES[survivor], stopped))?);
        trio.node(leader)?.signal("-CONT")?;
    }
    runtime.block_on(client.shutdown());
    Ok(ours)
}

/// Three in-process nodes running the dictionary, all connected.
async fn trio_in_process(tag: &str) -> Result<(Vec<Node>, Vec<Leader<Dict>>, Duration)> {
    let mut nodes = Vec::new();
    for name in CANDIDATES {
        nodes.push(Node::start(config(&format!("{name}{tag}"))).await?);
    }
    let meshed = Instant::now();
    for (i, from) in nodes.iter().enumerate() {
        for to in &nodes[i + 1..] {
            from.connect(to.listen_addr()).await?;
        }
    }
    let mesh = meshed.elapsed();
    let candidates: Vec<NodeName> = nodes.iter().map(|n| n.name().clone()).collect();
    let mut instances = Vec::new();
    for node in &nodes {
        let config = LeaderConfig::new(dict::ELECTION, candidates.clone());
        instances.push(Leader::start(node, config, Dict::default()).await?);
    }
    Ok((nodes, instances, mesh))
}

/// Waits until every instance names `leader`.
async fn agreed(instances: &[Leader<Dict>], leader: &NodeName) -> Result<()> {
    tokio::time::timeout(STEP, async {
        loop {
            let mut all = true;
            for instance in instances {
                all &= instance
                    .status(STEP)
                    .await
                    .ok()
                    .and_then(|s| s.leader)
                    .as_ref()
                    == Some(leader);
            }
            if all {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .context("no agreement on the leader")
}

/// Three nodes connected to each other start their instances together: the time until all
/// agree on the leader, beside the time the three connections took.
pub(super) fn cold_start(_: &Bench, report: &mut Report) -> Result<()> {
    const TRIALS: usize = 100;
    let runtime = runtime()?;
    let (ours, mesh) = runtime.block_on(async {
        let (mut ours, mut meshes) = (Vec::new(), Vec::new());
        for trial in 0..TRIALS {
            let started = Instant::now();
            let (nodes, instances, mesh) = trio_in_process(&format!("-cold{trial}")).await?;
            let begun = started + mesh;
            agreed(&instances, nodes[0].name()).await?;
            ours.push(begun.elapsed());
            meshes.push(mesh);
            for node in &nodes {
                node.shutdown().await;
            }
        }
        anyhow::Ok((ours, meshes))
    })?;
    let (p50, p99, _) = summary(&ours)?;
    let (mesh_p50, ..) = summary(&mesh)?;
    report.lower(
        "leader_cold_start_3_nodes_p50",
        "ms",
        p50,
        "mesh_of_3_connect_p50",
        mesh_p50,
    );
    report.lower(
        "leader_cold_start_3_nodes_p99",
        "ms",
        p99,
        "target_ms",
        50.0,
    );
    Ok(())
}

/// The top candidate is cut off, the others elect their own leader, then the links return:
/// the time until all three agree on the top candidate again, beside the reconnection itself.
pub(super) fn heal(_: &Bench, report: &mut Report) -> Result<()> {
    const TRIALS: usize = 100;
    let runtime = runtime()?;
    let (ours, links) = runtime.block_on(async {
        let (nodes, instances, _) = trio_in_process("-heal").await?;
        agreed(&instances, nodes[0].name()).await?;
        let (mut ours, mut links) = (Vec::new(), Vec::new());
        for _ in 0..TRIALS {
            nodes[0].disconnect(nodes[1].name());
            nodes[0].disconnect(nodes[2].name());
            agreed(&instances[1..], nodes[1].name()).await?;
            let relinking = Instant::now();
            nodes[0].connect(nodes[1].listen_addr()).await?;
            nodes[0].connect(nodes[2].listen_addr()).await?;
            let returned = Instant::now();
            links.push(returned - relinking);
            agreed(&instances, nodes[0].name()).await?;
            ours.push(returned.elapsed());
        }
        for node in &nodes {
            node.shutdown().await;
        }
        anyhow::Ok((ours, links))
    })?;
    let (p50, p99, max) = summary(&ours)?;
    let (link_p50, ..) = summary(&links)?;
    report.lower(
        "leader_heal_to_one_leader_p50",
        "ms",
        p50,
        "links_return_p50",
        link_p50,
    );
    report.lower(
        "leader_heal_to_one_leader_p99",
        "ms",
        p99,
        "target_ms",
        500.0,
    );
    report.lower(
        "leader_heal_to_one_leader_max",
        "ms",
        max,
        "target_ms",
        500.0,
    );
    Ok(())
}

/// How many calls of each kind are timed one by one; 64 callers make four times as many.
const CALLS: usize = 5_000;
const CALLERS: usize = 64;
/// How many times each rate is taken, in turn with the other (ours, plain, ours, …); each is
/// the median of its rounds, so that a moment's load on the shared machine moves neither far.
const RATE_ROUNDS: usize = 5;
/// The rate of plain remote calls in process, 64 callers.
const PLAIN_RATE: &str = "remote_calls_per_s_64_callers";

/// One caller's call times of leader calls and of the plain calls beside them, then 64 callers'
/// rates of each.
type Measured = (Vec<Duration>, Vec<Duration>, f64, f64);

/// Reports `measured`: the leader calls' p50 and p99 (`{figure}_p50`, `{figure}_p99`) beside
/// the plain calls' (`{baseline}_p50`, `{baseline}_p99`), and their rate (`rates[0]`) beside
/// the plain calls' (`rates[1]`).
fn report_calls(
    report: &mut Report,
    measured: Measured,
    figure: &str,
    baseline: &str,
    rates: [&str; 2],
) -> Result<()> {
    let (ours, plain, ours_rate, plain_rate) = measured;
    let (p50, p99) = percentiles(ours)?;
    let (plain_p50, plain_p99) = percentiles(plain)?;
    for (what, value, base_value) in [("p50", p50, plain_p50), ("p99", p99, plain_p99)] {
        let (name, base_name) = (format!("{figure}_{what}"), format!("{baseline}_{what}"));
        report.lower(&name, "us", value, &base_name, base_value);
    }
    report.higher(rates[0], "/s", ours_rate, rates[1], plain_rate);
    Ok(())
}

fn write() -> Request {
    Write::Put("k".into(), "v".into()).into()
}

fn read() -> Request {
    Request::Get("k".into())
}

/// Leader calls (`request`: a write or a read) through `instance` beside echo calls from
/// `caller` to `echo`: the times of one caller's calls of each kind, taken in turn, then the
/// rates of 64 callers of each kind, each the median of [`RATE_ROUNDS`] taken in turn.
async fn calls_beside_echo(
    instance: Leader<Dict>,
    caller: Node,
    echo: ServerRef<Echo>,
    request: fn() -> Request,
) -> Result<Measured> {
    let echo_call = || EchoCall::Echo(vec![7u8; 64]);
    instance.leader_call(write(), STEP).await?;
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..CALLS {
        let t = Instant::now();
        instance.leader_call(request(), STEP).await?;
        ours.push(t.elapsed());
        let t = Instant::now();
        caller.call(&echo, echo_call(), STEP).await?;
        plain.push(t.elapsed());
    }
    let rate = |leader_calls: bool| {
        let (instance, caller, echo) = (instance.clone(), caller.clone(), echo.clone());
        async move {
            let started = Instant::now();
            let mut callers = Vec::new();
            for _ in 0..CALLERS {
                let (instance, caller, echo) = (instance.clone(), caller.clone(), echo.clone());
                callers.push(tokio::spawn(async move {
                    for _ in 0..CALLS / CALLERS * 4 {
                        if leader_calls {
                            instance.leader_call(request(), STEP).await?;
                        } else {
                            caller.call(&echo, echo_call(), STEP).await?;
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            for caller in callers {
                caller.await??;
            }
            let calls = CALLS / CALLERS * 4 * CALLERS;
            anyhow::Ok(calls as f64 / started.elapsed().as_secs_f64())
        }
    };
    let (mut ours_rates, mut plain_rates) = (Vec::new(), Vec::new());
    for _ in 0..RATE_ROUNDS {
        ours_rates.push(rate(true).await?);
        plain_rates.push(rate(false).await?);
    }
    Ok((ours, plain, median(ours_rates), median(plain_rates)))
}

/// `leader_call` from a follower (relayed by its instance to the leader's node) beside a plain
/// remote call to the leader's node, on the same connection: one caller, then 64.
pub(super) fn leader_call(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    let (leader, follower, echo) = sides.nodes("leader")?;
    let candidates = vec![leader.name().clone()];
    let start = |node: &Node| {
        let node = node.clone();
        let candidates = candidates.clone();
        async move {
            let config = LeaderConfig::new(dict::ELECTION, candidates);
            Leader::start(&node, config, Dict::default()).await
        }
    };
    sides.server.block_on(start(&leader))?;
    let instance = sides.on_client(start(&follower))??;
    let follower_node = follower.clone();
    let measured = sides.on_client(calls_beside_echo(instance, follower, echo, write))??;
    sides.stop(&[&leader]);
    sides.stop(&[&follower_node]);
    let rates = ["leader_calls_per_s_64_callers", PLAIN_RATE];
    report_calls(
        report,
        measured,
        "leader_call",
        "remote_call_same_link",
        rates,
    )
}

/// The `majority` election's `leader_call` from a worker on the client side, answered once a
/// quorum of the three voters (on the server side) holds the write, beside a plain remote call
/// to the leader's node on the same link: one caller, then 64. Then the same with each voter a
/// `gen-cluster node` process and the calls made by a hidden node (no member: it is sent no
/// copy), straight to the leader, beside a plain remote call to the leader's process.
pub(super) fn majority_leader_call(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    let measured = quorum_calls(sides, false, write)?;
    let rates = ["majority_leader_calls_per_s_64_callers", PLAIN_RATE];
    report_calls(
        report,
        measured,
        "majority_leader_call",
        "remote_call_to_leader",
        rates,
    )?;
    let measured = quorum_calls_to_processes()?;
    let rates = [
        "majority_leader_calls_per_s_64_callers_3_processes",
        "remote_calls_per_s_64_callers_to_leader_process",
    ];
    report_calls(
        report,
        measured,
        "majority_leader_call_3_processes",
        "remote_call_to_leader_process",
        rates,
    )
}

/// Writes to the leader of three `gen-cluster node` processes in the `majority` mode from a
/// node of this process, as [`calls_beside_echo`] measures them.
fn quorum_calls_to_processes() -> Result<Measured> {
    let trio = Trio::start(1000, Election::Majority)?;
    let runtime = runtime()?;
    let client = runtime.block_on(client(&trio.addrs, true))?;
    let measured = runtime.block_on(async {
        let leader = NodeName::new(CANDIDATES[leader_once_connected(&client).await?])?;
        let instance = Leader::<Dict>::at(&client, &leader, dict::ELECTION);
        let echo = ServerRef::<Echo>::named(&leader, echo::NAME);
        calls_beside_echo(instance, client.clone(), echo, write).await
    });
    runtime.block_on(client.shutdown());
    drop(trio);
    measured
}

/// Reads through the `majority` leader (the dictionary's `Request::Get`), set up as
/// [`majority_leader_call`]: with leader leases (the leader answers alone) beside the read
/// index (a round a quorum answers first) and a plain remote call to the leader's node.
pub(super) fn majority_read(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    let leased = quorum_calls(sides, true, read)?;
    let (read_index, _, read_index_rate, _) = quorum_calls(sides, false, read)?;
    let (lease_p50, _) = percentiles(leased.0.clone())?;
    let leased_rate = leased.2;
    let rate = "lease_reads_per_s_64_callers";
    let rates = [rate, PLAIN_RATE];
    report_calls(report, leased, "lease_read", "remote_call_to_leader", rates)?;
    let (index_p50, _) = percentiles(read_index)?;
    report.lower(
        "lease_read_p50",
        "us",
        lease_p50,
        "read_index_p50",
        index_p50,
    );
    let index_rate = "read_index_reads_per_s_64_callers";
    report.higher(rate, "/s", leased_rate, index_rate, read_index_rate);
    Ok(())
}

/// Three voters of the dictionary's `majority` election on the server side (with leader leases
/// or not) and a worker on the client side: `request` through the worker's instance beside a
/// plain remote call to the leader's node, as [`calls_beside_echo`] measures them.
fn quorum_calls(sides: &super::Sides, leases: bool, request: fn() -> Request) -> Result<Measured> {
    let data =
        std::env::temp_dir().join(format!("gen-cluster-bench-quorum-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let voters = sides.server.block_on(async {
        let mut voters = Vec::new();
        for name in CANDIDATES {
            let node = Node::start(config(&format!("voter-{name}"))).await?;
            node.spawn_named(echo::NAME, Echo::default()).await?;
            voters.push(node);
        }
        for (i, from) in voters.iter().enumerate() {
            for to in &voters[i + 1..] {
                from.connect(to.listen_addr()).await?;
            }
        }
        anyhow::Ok(voters)
    })?;
    let names: Vec<NodeName> = voters.iter().map(|n| n.name().clone()).collect();
    let majority = move |node: &Node, names: Vec<NodeName>, data: std::path::PathBuf| {
        let node = node.clone();
        async move {
            let mut config = LeaderConfig::new(dict::ELECTION, names);
            config.mode = ElectionMode::Majority;
            config.leases = leases;
            config.data_dir = Some(data.join(node.name().as_str()));
            Leader::start(&node, config, Dict::default()).await
        }
    };
    for voter in &voters {
        sides
            .server
            .block_on(majority(voter, names.clone(), data.clone()))?;
    }
    let addrs: Vec<String> = voters.iter().map(|n| n.listen_addr().to_string()).collect();
    let (names_c, data_c) = (names.clone(), data.clone());
    let measured = sides.on_client(async move {
        let worker = Node::start(config("quorum-worker")).await?;
        for addr in &addrs {
            worker.connect(addr).await?;
        }
        let instance = majority(&worker, names_c, data_c).await?;
        let mut changes = instance.leader_changes().context("a local handle")?;
        let election = tokio::time::timeout(STEP, changes.wait_for(Option::is_some))
            .await
            .context("no leader elected")??
            .clone()
            .context("no leader")?;
        let echo = ServerRef::<Echo>::named(&election.leader, echo::NAME);
        let measured = calls_beside_echo(instance, worker.clone(), echo, request).await;
        worker.shutdown().await;
        measured
    })??;
    for voter in &voters {
        sides.server.block_on(voter.shutdown());
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(measured)
}
