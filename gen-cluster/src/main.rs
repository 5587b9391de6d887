//! `gen-cluster`: run a node, benchmark the runtime against its baselines, or watch a demo.
//! Thin by design: it parses flags and calls the `gen_cluster` library.

mod bench;
mod certs;
mod child;
mod client;
mod cookie;
mod demo;
mod http;
mod node_cmd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gen-cluster",
    version,
    about = "Clusters of Erlang-style processes across machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: listen, connect to the seeds (and reconnect when they drop), serve the echo
    /// server, print node up/down events until Ctrl-C or SIGTERM.
    Node(Box<NodeArgs>),
    /// Run the benchmark suite; each figure beside its baseline measured in the same run.
    Bench(BenchArgs),
    /// The global dictionary: three local nodes elect a leader, keys are written, the leader
    /// is killed and replaced, and comes back as a follower.
    Demo,
    /// Read and write the global dictionary of a running node (`node --candidates …`).
    Dict(DictArgs),
    /// Print a running node's view of the dictionary's election.
    Status(StatusArgs),
    /// Ask a running node's HTTP server whether it is alive (or ready): exit status 0 if so, for
    /// a container's health check.
    Health(HealthArgs),
    /// Make TLS certificates for nodes (and clients), signed by a CA kept in the directory
    /// (made on first use).
    Certs(CertsArgs),
}

/// Flags of `gen-cluster certs`.
#[derive(clap::Args)]
struct CertsArgs {
    /// Where the CA (ca.pem, ca.key) is, or is made, and the certificates are written
    /// (NAME.pem, NAME.key).
    #[arg(long)]
    dir: PathBuf,
    /// How many days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// The nodes' names, each its certificate's DNS name (a wildcard, *.clients.example, for
    /// clients that take any NAME.clients.example).
    names: Vec<String>,
}

/// Flags of `gen-cluster node`.
#[derive(clap::Args)]
struct NodeArgs {
    /// A TOML file with the node's settings; the flags below (and their environment variables)
    /// override it.
    #[arg(long, env = "GEN_CLUSTER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: gen_cluster::settings::NodeSettings,
}

/// How a client reaches a running node.
#[derive(clap::Args)]
struct ClientArgs {
    /// The node's address (required).
    #[arg(long, global = true)]
    node: Option<String>,
    /// The cluster secret's file, as for `node`.
    #[arg(long, global = true, env = "GEN_CLUSTER_COOKIE_FILE")]
    cookie_file: Option<PathBuf>,
    /// The cluster's name.
    #[arg(
        long,
        global = true,
        env = "GEN_CLUSTER_CLUSTER",
        default_value = "default"
    )]
    cluster: String,
    /// This client's node name [default: gen-cluster-client-PID]. With TLS, one its certificate
    /// is valid for (a certificate for *.clients.example serves any NAME.clients.example).
    #[arg(long, global = true)]
    name: Option<gen_cluster::NodeName>,
    /// Mutual TLS, as the node's.
    #[command(flatten)]
    tls: gen_cluster::settings::TlsSettings,
}

/// Flags of `gen-cluster dict`.
#[derive(clap::Args)]
struct DictArgs {
    #[command(subcommand)]
    op: DictOp,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum DictOp {
    /// Set a key (through the leader).
    Put {
        /// The key to set.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Print a key's value, as the node holds it (or, with --leader, as the leader does).
    Get {
        /// The key to read.
        key: String,
        /// Read through the leader. In the majority election the leader answers once a quorum
        /// confirmed it still leads: the value of the last write acknowledged anywhere.
        #[arg(long)]
        leader: bool,
    },
    /// Delete a key (through the leader).
    Del {
        /// The key to delete.
        key: String,
    },
    /// Print every key and value, as the node holds them.
    List,
}

/// Flags of `gen-cluster status`.
#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Flags of `gen-cluster health`.
#[derive(clap::Args)]
struct HealthArgs {
    /// The node's --http address (0.0.0.0 and :: are asked on loopback).
    #[arg(long, env = "GEN_CLUSTER_HTTP", value_name = "ADDR")]
    http: String,
    /// What to ask: /alive (the node runs) or /ready (joined, and following a leader).
    #[arg(long, default_value = "/alive", value_parser = ["/alive", "/ready"])]
    path: String,
}

/// Flags of `gen-cluster bench`.
#[derive(clap::Args)]
struct BenchArgs {
    /// Print one JSON object per figure instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only this benchmark (see the list in the table's first column, e.g. remote_call).
    #[arg(long)]
    only: Option<String>,
    /// The Erlang/OTP baseline script, run when `erl` is on PATH.
    #[arg(
        long,
        env = "GEN_CLUSTER_ERLANG_ANCHOR",
        default_value = "../shared/anchors/erlang/run.sh"
    )]
    erlang_anchor: PathBuf,
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    // The benchmarks and the demo kill nodes on purpose, and a client's own connection ends with
    // it: only errors are worth printing there (a client says what failed in its result).
    let default_level = match cli.command {
        Command::Bench(_)
        | Command::Demo
        | Command::Dict(_)
        | Command::Status(_)
        | Command::Certs(_)
        | Command::Health(_) => "error",
        // The DNS client warns of every UDP reply it ignores (a wrong id, another sender), which
        // anyone who can reach its port may send by the million: its own failures reach the
        // node's discovery, which says them once per cause.
        Command::Node(_) => "warn,hickory_net=error,hickory_proto=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEN_CLUSTER_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log piped to a file or a collector stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Node(args) => node_cmd::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Demo => demo::run(),
        Command::Dict(args) => client::dict(args),
        Command::Status(args) => client::status(args),
        Command::Certs(args) => certs::run(args),
        Command::Health(args) => http::probe(&args.http, &args.path),
    }
}
