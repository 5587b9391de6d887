//! `gen-cluster node --config FILE`: a good file starts a node with its discovery; a bad one is
//! refused at start with the line and the reason. And the clients' refusals: no cookie given
//! (none is made), a port where no node answers (said within a second).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `gen-cluster node --config CONFIG` (on a free port), which must refuse to start; its
/// error output.
fn refused(config: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
        .args(["node", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("GEN_CLUSTER_COOKIE", "c")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{} refused", config.display());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gen-cluster-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_bad_config_file_is_refused_with_its_line_and_reason() {
    let dir = scratch();
    let cases = [
        (
            "typo.toml",
            "name = \"a\"\nlisen = \"127.0.0.1:0\"\n",
            "line 2",
            "unknown field `lisen`",
        ),
        (
            "refresh.toml",
            "name = \"a\"\n[discovery]\nrefresh_interval_ms = \"soon\"\n",
            "line 3",
            "\"infinity\"",
        ),
        (
            "host_type.toml",
            "name = \"a\"\n[discovery]\ndns_srv = { name = \"_x._tcp.example\", host_type = \"dns\" }\n",
            "line 3",
            "unknown variant `dns`",
        ),
        (
            "name.toml",
            "name = \"not a name\"\n",
            "line 1",
            "invalid node name",
        ),
    ];
    for (file, text, line, reason) in cases {
        let path = write(&dir, file, text);
        let stderr = refused(&path);
        assert!(
            stderr.contains(line) && stderr.contains(reason),
            "{file}: {stderr}"
        );
    }
}

#[test]
fn a_config_file_starts_a_node_that_connects_to_its_static_peers() {
    let dir = scratch();
    let spawn = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
            .args(args)
            .env("GEN_CLUSTER_COOKIE", "config-test")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    let (mut seed, mut seed_lines) = spawn(&["node", "--name", "cfg-seed", "--events", "json"]);
    let started: serde_json::Value =
        serde_json::from_str(&seed_lines.next().unwrap().unwrap()).unwrap();
    let addr = started["addr"].as_str().unwrap();
    let config = write(
        &dir,
        "good.toml",
        &format!(
            "name = \"cfg-node\"\nevents = \"json\"\n[discovery]\nstatic = [\"{addr}\"]\nrefresh_interval_ms = \"infinity\"\n"
        ),
    );
    let (mut node, lines) = spawn(&["node", "--config", config.to_str().unwrap()]);
    // A watchdog ends the node after the hang bound, which closes its output and fails the test.
    let pid = node.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let connected = lines.map_while(Result::ok).any(|line| {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        event["event"] == "node_up" && event["peer"] == "cfg-seed" && event["node"] == "cfg-node"
    });
    assert!(
        connected,
        "the node connected to its static peer before the hang bound"
    );
    for child in [&mut node, &mut seed] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn an_empty_data_dir_is_refused_and_an_exposed_cookie_file_is_warned_of() {
    let dir = scratch();
    let config = write(&dir, "data_dir.toml", "name = \"a\"\ndata_dir = \"\"\n");
    let stderr = refused(&config);
    assert!(stderr.contains("data directory is empty"), "{stderr}");

    let cookie = write(&dir, "cookie", "exposed-secret\n");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&cookie, mode).unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
        .args([
            "node",
            "--name",
            "exposed",
            "--events",
            "json",
            "--cookie-file",
        ])
        .arg(&cookie)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = BufReader::new(node.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        started.contains("\"started\""),
        "the node starts: {started}"
    );
    node.kill().unwrap();
    node.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn a_majority_election_that_cannot_run_is_refused_at_start_with_what_to_give() {
    let dir = scratch();
    let cases = [
        (
            "majority_without_candidates.toml",
            "name = \"a\"\nelection = \"majority\"\n",
            "give the candidates",
        ),
        (
            "majority_without_data_dir.toml",
            "name = \"a\"\nelection = \"majority\"\ncandidates = [\"a\", \"b\", \"c\"]\n",
            "needs a data directory",
        ),
        (
            "unknown_election.toml",
            "name = \"a\"\nelection = \"raft\"\ncandidates = [\"a\"]\n",
            "unknown variant `raft`",
        ),
        (
            "timeout_without_majority.toml",
            "name = \"a\"\nelection_timeout_ms = 500\ncandidates = [\"a\"]\n",
            "setting of the majority election",
        ),
        (
            "leases_without_majority.toml",
            "name = \"a\"\nleases = true\ncandidates = [\"a\"]\n",
            "leases are a setting of the majority election",
        ),
        (
            "tiny_timeout.toml",
            "name = \"a\"\nelection = \"majority\"\nelection_timeout_ms = 5\ncandidates = [\"a\"]\n",
            "at least 20",
        ),
    ];
    for (file, text, reason) in cases {
        let path = write(&dir, file, text);
        let stderr = refused(&path);
        assert!(stderr.contains(reason), "{file}: {stderr}");
    }
}

/// A client with no cookie given and none in `~/.gen_cluster.cookie` says where to give one,
/// and makes no cookie file: a fresh secret could reach no node.
#[test]
fn a_client_without_a_cookie_says_so_and_makes_none() {
    let home = scratch().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
        .args(["status", "--node", "127.0.0.1:9"])
        .env("HOME", &home)
        .env_remove("GEN_CLUSTER_COOKIE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no cookie") && stderr.contains("GEN_CLUSTER_COOKIE"),
        "{stderr}"
    );
    assert!(!home.join(".gen_cluster.cookie").exists());
}

/// `status` against a port where something listens but no gen-cluster node answers fails
/// within the client's 1 s handshake deadline (bounded here at 3 s, against hangs), saying
/// what the address should be.
#[test]
fn a_client_facing_a_silent_port_says_so_within_a_second() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
        .args(["status", "--node", &addr])
        .env("GEN_CLUSTER_COOKIE", "c")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot reach a gen-cluster node"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(silent);
}

/// `gen-cluster certs` refuses what would break the CA or make a certificate no node can use.
#[test]
fn certs_refuses_names_and_validities_it_cannot_honour() {
    let dir = scratch().join("certs");
    let certs = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
            .args(["certs", "--dir", dir.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(certs(&["a"]).status.success());
    let ca = std::fs::read(dir.join("ca.key")).unwrap();
    for (args, said) in [
        (&["ca"][..], "overwrite the CA"),
        (&["A"][..], "DNS name"),
        (&["a@host"][..], "DNS name"),
        (&["--days", "0", "b"][..], "--days"),
        (&["--days", "99999999999", "b"][..], "--days"),
        (&["--days", "3651", "b"][..], "--days"),
    ] {
        let output = certs(args);
        assert!(!output.status.success(), "{args:?}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains(said), "{args:?}: {error}");
    }
    assert_eq!(
        std::fs::read(dir.join("ca.key")).unwrap(),
        ca,
        "the CA is untouched"
    );
    std::fs::remove_file(dir.join("ca.key")).unwrap();
    let output = certs(&["b"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("without its key"));
}
