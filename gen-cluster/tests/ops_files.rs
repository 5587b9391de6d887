//! The monitoring files shipped in `ops/` and the README's metric table against the metrics the
//! node exports (`gen_cluster::telemetry::METRICS`): the dashboard is Grafana JSON, the alert
//! rules are a Prometheus rule file, the four alerts the operators need are there, and every
//! `gen_cluster_…` name any of them uses exists.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;

use gen_cluster::telemetry::METRICS;
use serde::Deserialize;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `gen_cluster_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("gen_cluster_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn assert_exported(file: &str, names: &BTreeSet<String>) {
    let known: BTreeSet<&str> = METRICS.iter().map(|metric| metric.name).collect();
    for name in names {
        assert!(
            known.contains(name.as_str()),
            "{file} names {name}, which the node does not export"
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    pending: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[test]
fn the_alert_rules_parse_and_name_only_exported_metrics() {
    let text = repo_file("ops/prometheus-alerts.yml");
    let rules: RuleFile = serde_yaml_ng::from_str(&text).unwrap();
    let rules: Vec<&Rule> = rules
        .groups
        .iter()
        .inspect(|group| assert!(!group.name.is_empty()))
        .flat_map(|group| &group.rules)
        .collect();
    let find = |name: &str| {
        rules
            .iter()
            .find(|rule| rule.alert == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    assert_eq!(find("GenClusterNoLeader").pending.as_deref(), Some("10s"));
    let flapping = &find("GenClusterLeaderFlapping").expr;
    assert!(
        flapping.contains("[1h]") && flapping.ends_with("> 3"),
        "{flapping}"
    );
    assert_eq!(
        find("GenClusterPeerUnreachable").pending.as_deref(),
        Some("1m")
    );
    assert!(
        find("GenClusterSendQueueFull")
            .expr
            .contains("gen_cluster_send_queue_bound_bytes")
    );
    for rule in &rules {
        assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
        assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
        let names = metric_names(&rule.expr);
        assert!(!names.is_empty(), "{} names no metric", rule.alert);
        assert_exported("ops/prometheus-alerts.yml", &names);
    }
}

#[test]
fn the_dashboard_parses_and_names_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("ops/grafana-dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "gen-cluster");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut used = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let names = metric_names(target["expr"].as_str().unwrap());
            assert!(!names.is_empty(), "{}", panel["title"]);
            used.extend(names);
        }
    }
    assert_exported("ops/grafana-dashboard.json", &used);
    for needed in [
        "gen_cluster_leader_present",
        "gen_cluster_links_up",
        "gen_cluster_nodes",
        "gen_cluster_send_queue_bytes",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }
}

#[test]
fn the_readme_lists_every_exported_metric() {
    let readme = repo_file("README.md");
    for metric in METRICS {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", metric.name)))
            .unwrap_or_else(|| panic!("the README's metric table lacks {}", metric.name));
        assert!(
            row.contains(&format!("| {} |", metric.help)),
            "the README's row of {} does not say what the node says: {}",
            metric.name,
            metric.help
        );
        for label in metric.labels {
            assert!(row.contains(&format!("`{label}`")), "{row} lacks {label}");
        }
    }
    // The protocol crate's name reads like a metric's.
    let mut named = metric_names(&readme);
    named.remove("gen_cluster_proto");
    assert_exported("README.md", &named);
}
