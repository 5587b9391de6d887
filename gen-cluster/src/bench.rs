//! `gen-cluster bench`: the runtime's figures, each beside a baseline measured in the same run —
//! raw loopback TCP written here for the remote paths, a bare tokio channel round trip for the
//! local path, and Erlang/OTP (the anchor script, when `erl` is on PATH) for the system users
//! would pick instead.
//!
//! The client and the server side each run on their own one-thread tokio runtime, like two
//! processes on this 2-core machine; the raw baselines run on the same two runtimes.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gen_cluster::services::dict::{self, Dict};
use gen_cluster::services::echo::{self, Echo, EchoCall, EchoReply};
use gen_cluster::services::roster::Roster;
use gen_cluster::{
    Clustered, Discovery, Leader, LeaderConfig, MemberConfig, Node, NodeConfig, NodeEvent,
    NodeName, ReconcileConfig, Seed, ServerRef, StaticPeers, Tls,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::BenchArgs;

mod leader;
mod scale;

const PAYLOAD: usize = 64;
const COOKIE: &str = "bench-cookie";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What every benchmark may use: the two runtimes and the Erlang/OTP figures of this run.
struct Bench {
    sides: Sides,
    erlang: Erlang,
}

/// A benchmark's runner: it measures, and adds its figures and their baselines to the report.
type Runner = fn(&Bench, &mut Report) -> Result<()>;

/// Every benchmark, in the order they run: its name (for `--only`) and its runner.
const BENCHMARKS: [(&str, Runner); 21] = [
    ("remote_call", remote_call),
    ("concurrent_calls", concurrent_calls),
    ("tls", tls),
    ("casts", casts),
    ("local_call", local_call),
    ("node_down", node_down),
    ("global_names", global_names),
    ("cluster_join", cluster_join),
    ("mesh_join", mesh_join),
    ("reconnect", reconnect),
    ("leader_call", leader::leader_call),
    ("leader_cold_start", leader::cold_start),
    ("leader_failover", leader::failover_kill9),
    ("leader_hung", leader::failover_hung),
    ("leader_heal", leader::heal),
    ("leader_resign", leader::resign),
    ("majority_leader_call", leader::majority_leader_call),
    ("majority_read", leader::majority_read),
    ("lease_failover", leader::lease_failover),
    // Last of the default run: it installs the process's metrics recorder (switched off when it
    // ends).
    ("metrics", metrics_cost),
    // On demand only (see `ON_DEMAND`).
    ("scale", scale::scale),
];

/// The benchmarks that take minutes: run only when named with `--only`.
const ON_DEMAND: [&str; 1] = ["scale"];

/// The benchmarks reported beside Erlang/OTP's figures: the anchor runs only when one of them
/// does.
const BESIDE_ERLANG: [&str; 5] = [
    "remote_call",
    "concurrent_calls",
    "casts",
    "local_call",
    "global_names",
];

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(only) = &args.only
        && !BENCHMARKS.iter().any(|(name, _)| name == only)
    {
        let names: Vec<&str> = BENCHMARKS.iter().map(|(name, _)| *name).collect();
        bail!(
            "unknown benchmark {only:?}; choose one of {}",
            names.join(", ")
        );
    }
    let mut report = Report {
        json: args.json,
        rows: Vec::new(),
    };
    let erlang = match args.only.as_deref() {
        Some(only) if !BESIDE_ERLANG.contains(&only) => Erlang::new(),
        _ => erlang_figures(&args.erlang_anchor, &mut report),
    };
    let bench = Bench {
        sides: Sides::new()?,
        erlang,
    };
    for (name, runner) in BENCHMARKS {
        let chosen = match args.only.as_deref() {
            Some(only) => only == name,
            None => !ON_DEMAND.contains(&name),
        };
        if chosen {
            runner(&bench, &mut report).with_context(|| format!("benchmark {name}"))?;
        }
    }
    report.finish();
    Ok(())
}

/// Two one-thread runtimes: one for the serving side, one for the calling side.
struct Sides {
    server: Runtime,
    client: Runtime,
}

impl Sides {
    fn new() -> Result<Self> {
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
        };
        Ok(Self {
            server: runtime("bench-server")?,
            client: runtime("bench-client")?,
        })
    }

    /// Runs `work` as a task on the client runtime's worker and waits for it.
    fn on_client<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        Ok(self.client.block_on(self.client.spawn(work))?)
    }

    /// A server node (with the echo server) and a client node connected to it.
    fn nodes(&self, tag: &str) -> Result<(Node, Node, ServerRef<Echo>)> {
        self.nodes_over(tag, None)
    }

    /// [`nodes`](Self::nodes), over TLS with certificates of the CA in `certs` when given.
    fn nodes_over(&self, tag: &str, certs: Option<&Path>) -> Result<(Node, Node, ServerRef<Echo>)> {
        let start = |name: String| {
            let certs = certs.map(Path::to_owned);
            async move {
                let config = config(&name);
                let node = match certs {
                    Some(dir) => {
                        let files = crate::certs::issue(&dir, &name, 1)?;
                        let tls = Tls::load(files, config.name.clone())?;
                        Node::start_with(config, tls).await?
                    }
                    None => Node::start(config).await?,
                };
                anyhow::Ok(node)
            }
        };
        let server_node = start(format!("server-{tag}"));
        let server = self.server.block_on(async {
            let node = server_node.await?;
            node.spawn_named(echo::NAME, Echo::default()).await?;
            anyhow::Ok(node)
        })?;
        let addr = server.listen_addr().to_string();
        let client_node = start(format!("client-{tag}"));
        let client = self.client.block_on(async move {
            let node = client_node.await?;
            node.connect(&addr).await?;
            anyhow::Ok(node)
        })?;
        let echo = ServerRef::named(server.name(), echo::NAME);
        Ok((server, client, echo))
    }

    fn stop(&self, nodes: &[&Node]) {
        for node in nodes {
            let node = (*node).clone();
            let _ = self.on_client(async move { node.shutdown().await });
        }
    }

    /// A raw TCP echo server on the server runtime: `batched` answers everything it has read
    /// before flushing; otherwise it answers each message at once.
    fn raw_echo_server(&self) -> Result<String> {
        let listener = self.server.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?.to_string();
        self.server.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(raw_echo(stream));
            }
        });
        Ok(addr)
    }
}

fn config(name: &str) -> NodeConfig {
    NodeConfig::new(
        NodeName::new(name).expect("bench node names are valid"),
        COOKIE,
    )
}

async fn raw_echo(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let mut message = [0u8; PAYLOAD];
    loop {
        read.read_exact(&mut message).await?;
        write.write_all(&message).await?;
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
}

/// One caller, one call in flight, 64-byte payload. Raw TCP ping-pong and our calls alternate in
/// batches, so both see the same machine: on a shared host, conditions drift within seconds.
fn remote_call(Bench { sides, erlang }: &Bench, report: &mut Report) -> Result<()> {
    const BATCH: usize = 1_000;
    const BATCHES: usize = 20;
    const WARMUP: usize = 2_000;
    let addr = sides.raw_echo_server()?;
    let (server, client, echo) = sides.nodes("call")?;
    let caller = client.clone();
    let (raw, ours, raw_time, ours_time) = sides.on_client(async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut message = [7u8; PAYLOAD];
        let (mut raw, mut ours) = (
            Vec::with_capacity(BATCH * BATCHES),
            Vec::with_capacity(BATCH * BATCHES),
        );
        let (mut raw_time, mut ours_time) = (Duration::ZERO, Duration::ZERO);
        for batch in 0..=BATCHES {
            let size = if batch == 0 { WARMUP } else { BATCH };
            let started = Instant::now();
            for _ in 0..size {
                let t = Instant::now();
                stream.write_all(&message).await?;
                stream.read_exact(&mut message).await?;
                raw.push(t.elapsed());
            }
            raw_time += started.elapsed();
            let started = Instant::now();
            for _ in 0..size {
                let t = Instant::now();
                caller
                    .call(&echo, EchoCall::Echo(vec![7; PAYLOAD]), CALL_TIMEOUT)
                    .await?;
                ours.push(t.elapsed());
            }
            ours_time += started.elapsed();
            if batch == 0 {
                raw.clear();
                ours.clear();
                (raw_time, ours_time) = (Duration::ZERO, Duration::ZERO);
            }
        }
        anyhow::Ok((raw, ours, raw_time, ours_time))
    })??;
    sides.stop(&[&client, &server]);
    let n = (BATCH * BATCHES) as f64;
    let (raw_p50, raw_p99) = percentiles(raw)?;
    let (p50, p99) = percentiles(ours)?;
    report.lower(
        "remote_call_p50",
        "us",
        p50,
        "raw_tcp_ping_pong_p50",
        raw_p50,
    );
    report.lower(
        "remote_call_p99",
        "us",
        p99,
        "raw_tcp_ping_pong_p99",
        raw_p99,
    );
    let rate = n / ours_time.as_secs_f64();
    report.higher(
        "remote_calls_per_s_1_caller",
        "calls/s",
        rate,
        "raw_tcp_round_trips_per_s",
        n / raw_time.as_secs_f64(),
    );
    report.against_erlang(
        erlang,
        "remote_call_latency",
        &[
            ("remote_call_p50", "us", p50, "p50_us", Better::Lower),
            ("remote_call_p99", "us", p99, "p99_us", Better::Lower),
            (
                "remote_calls_per_s_1_caller",
                "calls/s",
                rate,
                "calls_per_s",
                Better::Higher,
            ),
        ],
    );
    Ok(())
}

fn concurrent_calls(Bench { sides, erlang }: &Bench, report: &mut Report) -> Result<()> {
    const CALLERS: usize = 64;
    const PER_CALLER: usize = 1_000;
    const TOTAL: usize = CALLERS * PER_CALLER;
    let addr = sides.raw_echo_server()?;
    let raw_rate = sides.on_client(async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(64 * 1024, read);
        let message = [7u8; PAYLOAD];
        let mut reply = [0u8; PAYLOAD];
        let started = Instant::now();
        let mut in_flight = Vec::with_capacity(CALLERS * PAYLOAD);
        for _ in 0..CALLERS {
            in_flight.extend_from_slice(&message);
        }
        write.write_all(&in_flight).await?;
        let (mut sent, mut received) = (CALLERS, 0);
        while received < TOTAL {
            read.read_exact(&mut reply).await?;
            received += 1;
            // Answer every reply already buffered with one write, as 64 independent callers would.
            let mut burst = 1;
            while read.buffer().len() >= PAYLOAD && received < TOTAL {
                read.read_exact(&mut reply).await?;
                received += 1;
                burst += 1;
            }
            let next = burst.min(TOTAL - sent);
            if next > 0 {
                write.write_all(&in_flight[..next * PAYLOAD]).await?;
                sent += next;
            }
        }
        anyhow::Ok(TOTAL as f64 / started.elapsed().as_secs_f64())
    })??;
    let (server, client, echo) = sides.nodes("concurrent")?;
    let rate = sides.on_client(echo_call_rate(client.clone(), echo, CALLERS, PER_CALLER))??;
    sides.stop(&[&client, &server]);
    report.higher(
        "remote_calls_per_s_64_callers",
        "calls/s",
        rate,
        "raw_tcp_64_in_flight_per_s",
        raw_rate,
    );
    report.against_erlang(
        erlang,
        "remote_concurrent_calls",
        &[(
            "remote_calls_per_s_64_callers",
            "calls/s",
            rate,
            "calls_per_s",
            Better::Higher,
        )],
    );
    Ok(())
}

/// Calls over mutual TLS beside the same over plain TCP: one caller's latency and 64 callers'
/// rate, the two transports alternating in rounds so that both see the same machine.
fn tls(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    const ROUNDS: usize = 6;
    const CALLS: usize = 2_000;
    const CALLERS: usize = 64;
    const PER_CALLER: usize = 1_000;
    let certs = std::env::temp_dir().join(format!("gen-cluster-bench-tls-{}", std::process::id()));
    let plain = sides.nodes("tcp")?;
    let secure = sides.nodes_over("tls", Some(&certs));
    let _ = std::fs::remove_dir_all(&certs);
    let secure = secure?;
    let mut latencies = [Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        for (side, (_, client, echo)) in [&plain, &secure].into_iter().enumerate() {
            let (caller, echo) = (client.clone(), echo.clone());
            let (one, many) = sides.on_client(async move {
                let mut one = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let t = Instant::now();
                    caller
                        .call(&echo, EchoCall::Echo(vec![7; PAYLOAD]), CALL_TIMEOUT)
                        .await?;
                    one.push(t.elapsed());
                }
                let rate = echo_call_rate(caller, echo, CALLERS, PER_CALLER).await?;
                anyhow::Ok((one, rate))
            })??;
            // The first round warms both up.
            if round > 0 {
                latencies[side].extend(one);
                rates[side].push(many);
            }
        }
    }
    sides.stop(&[&plain.1, &plain.0, &secure.1, &secure.0]);
    let [tcp_latencies, tls_latencies] = latencies;
    let (tcp_p50, _) = percentiles(tcp_latencies)?;
    let (tls_p50, _) = percentiles(tls_latencies)?;
    report.lower(
        "tls_remote_call_p50",
        "us",
        tls_p50,
        "tcp_remote_call_p50",
        tcp_p50,
    );
    let [tcp_rates, tls_rates] = rates;
    report.higher(
        "tls_remote_calls_per_s_64_callers",
        "calls/s",
        median(tls_rates),
        "tcp_remote_calls_per_s_64_callers",
        median(tcp_rates),
    );
    Ok(())
}

/// Calls per second of `callers` tasks each making `per_caller` echo calls in turn.
async fn echo_call_rate(
    node: Node,
    echo: ServerRef<Echo>,
    callers: usize,
    per_caller: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (node, echo) = (node.clone(), echo.clone());
        tasks.spawn(async move {
            for _ in 0..per_caller {
                node.call(&echo, EchoCall::Echo(vec![7; PAYLOAD]), CALL_TIMEOUT)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok((callers * per_caller) as f64 / started.elapsed().as_secs_f64())
}

/// A metrics recorder that can be switched off: then every metric registered is a no-op, as
/// with no recorder installed.
struct Switched {
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    inner: metrics_exporter_prometheus::PrometheusRecorder,
}

impl metrics::Recorder for Switched {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_counter(key, unit, text);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_gauge(key, unit, text);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.inner.describe_histogram(key, unit, text);
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        if self.on.load(std::sync::atomic::Ordering::Relaxed) {
            self.inner.register_counter(key, meta)
        } else {
            metrics::Counter::noop()
        }
    }

    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        if self.on.load(std::sync::atomic::Ordering::Relaxed) {
            self.inner.register_gauge(key, meta)
        } else {
            metrics::Gauge::noop()
        }
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if self.on.load(std::sync::atomic::Ordering::Relaxed) {
            self.inner.register_histogram(key, meta)
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// What recording the metrics costs: 64 callers' remote calls/s with the Prometheus recorder
/// on beside the same with it off (no-op metrics), fresh nodes each round, the two alternating.
fn metrics_cost(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    const ROUNDS: usize = 6;
    const CALLERS: usize = 64;
    const PER_CALLER: usize = 1_000;
    let on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = Switched {
        on: std::sync::Arc::clone(&on),
        inner: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
    };
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        for (side, recording) in [false, true].into_iter().enumerate() {
            on.store(recording, std::sync::atomic::Ordering::Relaxed);
            let (server, client, echo) = sides.nodes(&format!("metrics-{round}-{side}"))?;
            let rate =
                sides.on_client(echo_call_rate(client.clone(), echo, CALLERS, PER_CALLER))??;
            sides.stop(&[&client, &server]);
            // The first round warms both up.
            if round > 0 {
                rates[side].push(rate);
            }
        }
    }
    on.store(false, std::sync::atomic::Ordering::Relaxed);
    let [off, recorded] = rates;
    report.higher(
        "remote_calls_per_s_64_callers_metrics_recorded",
        "calls/s",
        median(recorded),
        "remote_calls_per_s_64_callers_no_recorder",
        median(off),
    );
    Ok(())
}

/// The middle of `samples` (not empty).
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn casts(Bench { sides, erlang }: &Bench, report: &mut Report) -> Result<()> {
    let (rate, raw_rate) = cast_rates(sides, PAYLOAD, 500_000)?;
    report.higher(
        "casts_per_s",
        "msgs/s",
        rate,
        "raw_tcp_batched_stream_msgs_per_s",
        raw_rate,
    );
    report.against_erlang(
        erlang,
        "remote_send_throughput",
        &[("casts_per_s", "msgs/s", rate, "msgs_per_s", Better::Higher)],
    );
    let (rate, raw_rate) = cast_rates(sides, 64 * 1024, 4_000)?;
    report.higher(
        "casts_64k_per_s",
        "msgs/s",
        rate,
        "raw_tcp_batched_stream_msgs_per_s",
        raw_rate,
    );
    Ok(())
}

/// Casts of `payload` bytes per second, `n` of them, through the send queue's bound and
/// beside the same bytes as a raw batched TCP stream: (casts, raw).
fn cast_rates(sides: &Sides, payload: usize, n: usize) -> Result<(f64, f64)> {
    let listener = sides.server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    sides.server.spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(64 * 1024, read);
        let mut message = vec![0u8; 4 + payload];
        for _ in 0..n {
            read.read_exact(&mut message).await?;
        }
        write.write_all(b"k").await?;
        std::io::Result::Ok(())
    });
    let raw_rate = sides.on_client(async move {
        let stream = TcpStream::connect(addr).await?;
        let (mut read, write) = stream.into_split();
        let mut write = BufWriter::with_capacity(64 * 1024, write);
        let mut message = vec![7u8; 4 + payload];
        message[..4].copy_from_slice(&(payload as u32).to_be_bytes());
        let started = Instant::now();
        for _ in 0..n {
            write.write_all(&message).await?;
        }
        write.flush().await?;
        read.read_u8().await?;
        anyhow::Ok(n as f64 / started.elapsed().as_secs_f64())
    })??;
    let (server, client, echo) = sides.nodes(&format!("casts{payload}"))?;
    let caster = client.clone();
    let rate = sides.on_client(async move {
        let started = Instant::now();
        for i in 0..n {
            caster.cast(&echo, vec![7; payload]).await?;
            if i % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let seen = caster
            .call(&echo, EchoCall::CastsSeen, Duration::from_secs(60))
            .await?;
        if seen != EchoReply::Count(n as u64) {
            bail!("the echo server saw {seen:?} casts, expected {n}");
        }
        anyhow::Ok(n as f64 / started.elapsed().as_secs_f64())
    })??;
    sides.stop(&[&client, &server]);
    Ok((rate, raw_rate))
}

fn local_call(Bench { sides, erlang }: &Bench, report: &mut Report) -> Result<()> {
    const WARMUP: usize = 10_000;
    const N: usize = 100_000;
    type Request = (Vec<u8>, tokio::sync::oneshot::Sender<Vec<u8>>);
    let raw = sides.on_client(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some((message, reply)) = rx.recv().await {
                let _ = reply.send(message);
            }
        });
        let mut samples = Vec::with_capacity(N);
        for i in 0..WARMUP + N {
            let t = Instant::now();
            let (reply, answer) = tokio::sync::oneshot::channel();
            tx.send((vec![7; PAYLOAD], reply))?;
            answer.await?;
            if i >= WARMUP {
                samples.push(t.elapsed());
            }
        }
        anyhow::Ok(samples)
    })??;
    let node = sides.client.block_on(Node::start(config("local")))?;
    let caller = node.clone();
    let ours = sides.on_client(async move {
        let echo = caller.spawn(Echo::default()).await?;
        let mut samples = Vec::with_capacity(N);
        for i in 0..WARMUP + N {
            let t = Instant::now();
            caller
                .call(&echo, EchoCall::Echo(vec![7; PAYLOAD]), CALL_TIMEOUT)
                .await?;
            if i >= WARMUP {
                samples.push(t.elapsed());
            }
        }
        anyhow::Ok(samples)
    })??;
    sides.stop(&[&node]);
    let (raw_p50, _) = percentiles(raw)?;
    let (p50, p99) = percentiles(ours)?;
    report.lower(
        "local_call_p50",
        "us",
        p50,
        "tokio_channel_round_trip_p50",
        raw_p50,
    );
    report.against_erlang(
        erlang,
        "local_call_latency",
        &[
            ("local_call_p50", "us", p50, "p50_us", Better::Lower),
            ("local_call_p99", "us", p99, "p99_us", Better::Lower),
        ],
    );
    Ok(())
}

/// `kill -9` a node running as its own OS process: how long until this node reports it down,
/// against how long a raw TCP connection to the same process takes to see the close.
fn node_down(Bench { sides, .. }: &Bench, report: &mut Report) -> Result<()> {
    const TRIALS: usize = 10;
    let exe = std::env::current_exe()?;
    let node = sides.client.block_on(Node::start(config("watcher")))?;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for trial in 0..TRIALS {
        let mut child = tokio::process::Command::new(&exe);
        for name in crate::child::settings_in_env() {
            child.env_remove(name);
        }
        child
            .args([
                "node",
                "--name",
                &format!("victim{trial}"),
                "--events",
                "json",
            ])
            .env("GEN_CLUSTER_COOKIE", COOKIE)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let watcher = node.clone();
        let (to_ours, to_raw) = sides.on_client(async move {
            let mut child = child.spawn()?;
            let stdout = child.stdout.take().context("child stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).await?;
            let started: Value = serde_json::from_str(&line)?;
            let addr = started["addr"]
                .as_str()
                .context("the child printed no address")?
                .to_string();
            let mut events = watcher.subscribe();
            let peer = watcher.connect(&addr).await?;
            let mut raw = TcpStream::connect(&addr).await?;
            child.start_kill()?;
            let killed = Instant::now();
            let raw_closed = async {
                let mut byte = [0u8; 1];
                let _ = raw.read(&mut byte).await;
                killed.elapsed()
            };
            let down = async {
                loop {
                    match events.recv().await {
                        Ok(NodeEvent::NodeDown { peer: p, .. }) if p == peer => {
                            return killed.elapsed();
                        }
                        Ok(_) => {}
                        Err(_) => return Duration::MAX,
                    }
                }
            };
            let (to_raw, to_ours) = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(raw_closed, down)
            })
            .await
            .context("no down event within 10 s of kill -9")?;
            let _ = child.wait().await;
            anyhow::Ok((to_ours, to_raw))
        })??;
        ours.push(to_ours);
        raw.push(to_raw);
    }
    sides.stop(&[&node]);
    let (p50, _) = percentiles(ours.clone())?;
    let (raw_p50, _) = percentiles(raw)?;
    report.lower(
        "node_down_after_kill9_p50",
        "ms",
        p50 / 1000.0,
        "raw_tcp_close_seen_after_kill9_p50",
        raw_p50 / 1000.0,
    );
    let worst = ours.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0;
    report.lower("node_down_after_kill9_max", "ms", worst, "target_ms", 100.0);
    Ok(())
}

/// Register and unregister a global name while one other node is connected: the registration
/// waits for that node's answer, so its floor is one round trip.
fn global_names(Bench { sides, erlang }: &Bench, report: &mut Report) -> Result<()> {
    const N: usize = 2_000;
    let addr = sides.raw_echo_server()?;
    let (server, client, _) = sides.nodes("global")?;
    let node = client.clone();
    let (per_pair, round_trip) = sides.on_client(async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut message = [7u8; PAYLOAD];
        let started = Instant::now();
        for _ in 0..N {
            stream.write_all(&message).await?;
            stream.read_exact(&mut message).await?;
        }
        let round_trip = started.elapsed() / N as u32;
        let holder = node.mailbox::<()>();
        let started = Instant::now();
        for i in 0..N {
            let name = format!("bench-{i}");
            node.globals().register(&name, holder.pid()).await?;
            if !node.globals().unregister(&name).await {
                bail!("{name} was not registered");
            }
        }
        anyhow::Ok((started.elapsed() / N as u32, round_trip))
    })??;
    sides.stop(&[&client, &server]);
    let us = per_pair.as_secs_f64() * 1e6;
    report.lower(
        "global_register_unregister",
        "us",
        us,
        "raw_tcp_round_trip",
        round_trip.as_secs_f64() * 1e6,
    );
    report.against_erlang(
        erlang,
        "global_register_unregister",
        &[(
            "global_register_unregister",
            "us",
            us,
            "us_per_register_unregister",
            Better::Lower,
        )],
    );
    Ok(())
}

/// N members on N nodes (one process, loopback TCP, a 2-thread runtime) all join through one
/// seed at once: the time until every member holds all N, against one remote call round trip
/// measured on the same nodes.
fn cluster_join(_: &Bench, report: &mut Report) -> Result<()> {
    let runtime = runtime()?;
    for n in [3usize, 10, 20, 50] {
        let (converged, round_trip) = runtime.block_on(async move {
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                // Members connect to each other's nodes themselves, as before the view. Every
                // dial comes from 127.0.0.1: the per-address admission bound is lifted.
                let mut config = config(&format!("join{n}-{i}"));
                config.connect_all = false;
                config.max_pending_per_source = config.max_pending_handshakes;
                nodes.push(Node::start(config).await?);
            }
            for node in &nodes[1..] {
                node.connect(nodes[0].listen_addr()).await?;
            }
            nodes[1].spawn_named(echo::NAME, Echo::default()).await?;
            let echo = ServerRef::<Echo>::named(nodes[1].name(), echo::NAME);
            let started = Instant::now();
            for _ in 0..200 {
                nodes[0]
                    .call(&echo, EchoCall::Echo(vec![7; PAYLOAD]), CALL_TIMEOUT)
                    .await?;
            }
            let round_trip = started.elapsed() / 200;
            let (changes, _) = tokio::sync::mpsc::unbounded_channel();
            let seed = Clustered::start(
                &nodes[0],
                MemberConfig::new("bench", "m", Seed::First),
                Roster::new(changes),
            )
            .await?;
            let seed = Seed::Member(seed.pid().context("a started member has a pid")?);
            let started = Instant::now();
            let mut joins = tokio::task::JoinSet::new();
            for node in nodes.iter().skip(1).cloned() {
                let seed = seed.clone();
                joins.spawn(async move {
                    let (changes, _) = tokio::sync::mpsc::unbounded_channel();
                    let member = Clustered::start(
                        &node,
                        MemberConfig::new("bench", "m", seed),
                        Roster::new(changes),
                    )
                    .await?;
                    anyhow::Ok((node, member))
                });
            }
            let mut started_members = Vec::with_capacity(n);
            while let Some(joined) = joins.join_next().await {
                started_members.push(joined??);
            }
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let mut all = true;
                    for (node, member) in &started_members {
                        let groups = node.call(member, (), CALL_TIMEOUT).await?;
                        all &= groups.iter().map(|(_, pids)| pids.len()).sum::<usize>() == n;
                    }
                    if all {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .context("members did not converge within 60 s")??;
            let converged = started.elapsed();
            for node in &nodes {
                node.shutdown().await;
            }
            anyhow::Ok((converged, round_trip))
        })?;
        report.lower(
            &format!("cluster_{n}_members_converged"),
            "ms",
            converged.as_secs_f64() * 1000.0,
            "remote_call_round_trip",
            round_trip.as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}

/// N nodes each given only the first node's address, each running the dictionary's election
/// with all N as candidates, come to a full mesh in one group of the cluster view (every node
/// knows, and is connected to, every other) and agree on one leader (mostly the first node),
/// against the same N nodes each given every address and dialing them all (the floor: no
/// learning, no election, only connecting).
/// Loopback: every dial comes from 127.0.0.1, so the per-address admission bound is lifted.
fn mesh_join(_: &Bench, report: &mut Report) -> Result<()> {
    let runtime = runtime()?;
    let start = |name: String, connect_all: bool| {
        let mut config = config(&name);
        config.connect_all = connect_all;
        config.max_pending_per_source = config.max_pending_handshakes;
        Node::start(config)
    };
    for n in [3usize, 10, 20, 50] {
        let (meshed, floor) = runtime.block_on(async move {
            // The floor: every address given, every pair dialed.
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                nodes.push(start(format!("all{n}-{i}"), false).await?);
            }
            let started = Instant::now();
            let mut dials = tokio::task::JoinSet::new();
            for (i, node) in nodes.iter().enumerate() {
                for other in &nodes[i + 1..] {
                    let (node, addr) = (node.clone(), other.listen_addr().to_string());
                    dials.spawn(async move { node.connect(&addr).await });
                }
            }
            while let Some(dialed) = dials.join_next().await {
                dialed??;
            }
            wait_all(&nodes, |node| node.peers().len() == n - 1).await?;
            let floor = started.elapsed();
            for node in &nodes {
                node.shutdown().await;
            }
            // Seeded with one: the view does the rest.
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                nodes.push(start(format!("mesh{n}-{i}"), true).await?);
            }
            let candidates: Vec<NodeName> = nodes.iter().map(|n| n.name().clone()).collect();
            let started = Instant::now();
            let mut elections = Vec::with_capacity(n);
            for node in &nodes {
                let config = LeaderConfig::new(dict::ELECTION, candidates.clone());
                elections.push(Leader::start(node, config, Dict::default()).await?);
            }
            let mut dials = tokio::task::JoinSet::new();
            let seed = nodes[0].listen_addr().to_string();
            for node in &nodes[1..] {
                let (node, seed) = (node.clone(), seed.clone());
                dials.spawn(async move { node.connect(&seed).await });
            }
            while let Some(dialed) = dials.join_next().await {
                dialed??;
            }
            wait_all(&nodes, |node| node.view().group.len() == n).await?;
            // One leader followed by all: usually the first candidate; another when the first
            // was not yet alive to it at the end of its start grace (no failback: it is kept).
            let follows = |election: &Leader<Dict>| {
                election
                    .leader_changes()
                    .and_then(|changes| changes.borrow().clone())
            };
            let one_leader = || {
                let first = follows(&elections[0]);
                (first.is_some() && elections.iter().all(|e| follows(e) == first)).then_some(first)
            };
            let agreed = tokio::time::timeout(Duration::from_secs(60), async {
                while one_leader().is_none() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            if agreed.is_err() {
                // Which nodes follow which leader, and what their views hold: what a failed
                // run needs to be understood.
                let nodes: Vec<String> = nodes
                    .iter()
                    .zip(&elections)
                    .map(|(node, election)| {
                        format!(
                            "{} follows {:?}, its group has {} nodes, {} peers",
                            node.name(),
                            follows(election),
                            node.view().group.len(),
                            node.peers().len()
                        )
                    })
                    .collect();
                bail!(
                    "no agreement on one leader within 60 s: {}",
                    nodes.join("; ")
                );
            }
            let meshed = started.elapsed();
            for node in &nodes {
                node.shutdown().await;
            }
            anyhow::Ok((meshed, floor))
        })?;
        report.lower(
            &format!("mesh_{n}_nodes_seeded_with_one_to_one_leader"),
            "ms",
            meshed.as_secs_f64() * 1000.0,
            "every_address_given_all_dialed",
            floor.as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}

/// The runtime of the in-process benchmarks: two worker threads, as the machine has two cores.
fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Waits (at most 60 s) until `done` holds on every node.
async fn wait_all(nodes: &[Node], done: impl Fn(&Node) -> bool) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !nodes.iter().all(&done) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .context("not reached within 60 s")
}

/// A discovered peer restarts (down 100 ms, then listening again at the same address): the time
/// from its listening to this node's node-up, against a fresh dial and handshake to it.
fn reconnect(_: &Bench, report: &mut Report) -> Result<()> {
    const TRIALS: usize = 20;
    let runtime = runtime()?;
    let (ours, floor) = runtime.block_on(async {
        let watcher = Node::start(config("watcher")).await?;
        let mut peer = Node::start(config("restarting")).await?;
        let addr = peer.listen_addr().to_string();
        let static_peers = ReconcileConfig {
            refresh_interval: Some(Duration::from_secs(3600)),
            ..ReconcileConfig::default()
        };
        Discovery::start(&watcher, StaticPeers(vec![addr.clone()]), static_peers);
        // Trials start from a connected peer: what is measured is a reconnection.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !watcher.is_connected(peer.name()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .context("the watcher did not connect to the peer within 10 s")?;
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..TRIALS {
            let mut events = watcher.subscribe();
            peer.shutdown().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut restarted = config("restarting");
            restarted.listen = addr.clone();
            peer = Node::start(restarted).await?;
            let listening = Instant::now();
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Ok(NodeEvent::NodeUp { peer: up, .. }) = events.recv().await
                        && &up == peer.name()
                    {
                        return;
                    }
                }
            })
            .await
            .context("no reconnect within 10 s of the restart")?;
            ours.push(listening.elapsed());
            let probe = Node::start(config("probe")).await?;
            let dial = Instant::now();
            probe.connect(&addr).await?;
            floor.push(dial.elapsed());
            probe.shutdown().await;
        }
        watcher.shutdown().await;
        peer.shutdown().await;
        anyhow::Ok((ours, floor))
    })?;
    let worst = ours.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0;
    let (p50, _) = percentiles(ours)?;
    let (floor_p50, _) = percentiles(floor)?;
    report.lower(
        "reconnect_after_restart_p50",
        "ms",
        p50 / 1000.0,
        "fresh_dial_and_handshake_p50",
        floor_p50 / 1000.0,
    );
    report.lower(
        "reconnect_after_restart_max",
        "ms",
        worst,
        "target_ms",
        50.0,
    );
    Ok(())
}

/// p50 and p99 in microseconds; an empty sample is an error (the benchmark measured nothing).
fn percentiles(mut samples: Vec<Duration>) -> Result<(f64, f64)> {
    if samples.is_empty() {
        bail!("no samples: the benchmark measured nothing");
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let index = ((samples.len() as f64 * p).round() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1e6
    };
    Ok((at(0.50), at(0.99)))
}

type Erlang = HashMap<String, Value>;

/// Runs the Erlang/OTP anchor when `erl` is on PATH; its figures keyed by metric.
fn erlang_figures(anchor: &Path, report: &mut Report) -> Erlang {
    let mut figures = Erlang::new();
    if !anchor.exists() {
        report.note(&format!(
            "Erlang anchor {} not found: Erlang/OTP figures skipped",
            anchor.display()
        ));
        return figures;
    }
    let has_erl = std::process::Command::new("erl")
        .args(["-noshell", "-eval", "halt()."])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_erl {
        report.note("erl not on PATH: Erlang/OTP figures skipped (apt-get install -y erlang-base)");
        return figures;
    }
    let output = std::process::Command::new("bash")
        .arg(anchor)
        .arg(PAYLOAD.to_string())
        .stderr(Stdio::inherit())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                if let Ok(value) = serde_json::from_str::<Value>(line)
                    && let Some(metric) = value["metric"].as_str()
                {
                    figures.insert(metric.to_string(), value.clone());
                }
            }
        }
        Ok(output) => report.note(&format!(
            "Erlang anchor failed ({}): figures skipped",
            output.status
        )),
        Err(error) => report.note(&format!(
            "Erlang anchor did not run ({error}): figures skipped"
        )),
    }
    figures
}

/// Which way a figure improves.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

struct Row {
    metric: String,
    unit: &'static str,
    value: f64,
    baseline: String,
    baseline_value: f64,
    better: Better,
}

struct Report {
    json: bool,
    rows: Vec<Row>,
}

impl Report {
    fn lower(
        &mut self,
        metric: &str,
        unit: &'static str,
        value: f64,
        baseline: &str,
        baseline_value: f64,
    ) {
        self.add(metric, unit, value, baseline, baseline_value, Better::Lower);
    }

    fn higher(
        &mut self,
        metric: &str,
        unit: &'static str,
        value: f64,
        baseline: &str,
        baseline_value: f64,
    ) {
        self.add(
            metric,
            unit,
            value,
            baseline,
            baseline_value,
            Better::Higher,
        );
    }

    fn add(
        &mut self,
        metric: &str,
        unit: &'static str,
        value: f64,
        baseline: &str,
        baseline_value: f64,
        better: Better,
    ) {
        let row = Row {
            metric: metric.into(),
            unit,
            value,
            baseline: baseline.into(),
            baseline_value,
            better,
        };
        if self.json {
            println!(
                "{}",
                json!({
                    "metric": row.metric, "unit": row.unit, "value": round(row.value),
                    "baseline": row.baseline, "baseline_value": round(row.baseline_value),
                    "ratio": round(row.value / row.baseline_value), "better": row.better.as_str(),
                })
            );
        } else if self.rows.is_empty() {
            println!(
                "{:<30} {:>12} {:<8} {:<42} {:>12} {:>7}",
                "metric", "value", "unit", "baseline", "baseline", "ratio"
            );
        }
        if !self.json {
            println!(
                "{:<30} {:>12.2} {:<8} {:<42} {:>12.2} {:>7.3}",
                row.metric,
                row.value,
                row.unit,
                row.baseline,
                row.baseline_value,
                row.value / row.baseline_value
            );
        }
        let _ = std::io::stdout().flush();
        self.rows.push(row);
    }

    /// Adds rows comparing our figures with the fields of one Erlang anchor metric, if it ran:
    /// (our metric, unit, our value, the anchor's field, which way is better).
    fn against_erlang(
        &mut self,
        erlang: &Erlang,
        anchor_metric: &str,
        rows: &[(&str, &'static str, f64, &str, Better)],
    ) {
        let Some(figures) = erlang.get(anchor_metric) else {
            return;
        };
        for &(metric, unit, value, field, better) in rows {
            let baseline = format!("erlang_otp_{metric}");
            let erlang_value = figures[field].as_f64().unwrap_or(f64::NAN);
            self.add(metric, unit, value, &baseline, erlang_value, better);
        }
    }

    fn note(&mut self, text: &str) {
        if self.json {
            println!("{}", json!({ "note": text }));
        } else {
            println!("note: {text}");
        }
    }

    fn finish(&self) {
        if !self.json {
            println!(
                "ratio = value / baseline; for 'us' and 'ms' lower is better, for '/s' higher is better."
            );
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_an_empty_sample_are_an_error_not_a_panic() {
        assert!(percentiles(Vec::new()).is_err());
        let samples = (1..=100).map(Duration::from_micros).collect();
        let (p50, p99) = percentiles(samples).expect("a sample");
        assert_eq!((p50.round(), p99.round()), (50.0, 99.0));
    }

    #[test]
    fn the_benchmarks_beside_erlang_are_benchmarks() {
        let names: Vec<&str> = BENCHMARKS.iter().map(|(name, _)| *name).collect();
        assert!(BESIDE_ERLANG.iter().all(|name| names.contains(name)));
    }
}
