//! The runtime's dependency rule, checked on its sources: nothing below the node façade names it.
//! The distribution layer (`src/dist/`) never names `Node` or the kernel — it is handed the parts
//! it works on; the process layer (`src/process/`) never uses the façade module; no module under
//! the façade imports `node`; and the services reach the node through its public API only.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// The code of a source file, comments removed (docs may name anything).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sources(under: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(under);
    if root.is_file() {
        return vec![root];
    }
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Whether `code` names the identifier `word` (not as part of a longer one).
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn offenders(under: &[&str], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in under {
        for file in sources(dir) {
            let code = code(&file);
            for word in forbidden {
                if names(&code, word) {
                    found.push(format!("{} names {word}", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn the_distribution_layer_never_names_the_node_or_its_kernel() {
    let found = offenders(&["dist"], &["Node", "Kernel", "kernel", "node::"]);
    assert!(found.is_empty(), "{found:#?}");
}

/// The parts below the kernel: they are handed one another, never the node.
const PARTS: [&str; 12] = [
    "clock.rs",
    "config.rs",
    "error.rs",
    "events.rs",
    "tasks.rs",
    "transport",
    "process/signal.rs",
    "process/table.rs",
    "process/watch.rs",
    "dist",
    "router.rs",
    "names.rs",
];

#[test]
fn nothing_below_the_facade_uses_the_node_module() {
    // Besides the parts: a process's task and handles, which hold a `Node` (the kernel's type).
    let below = [&PARTS[..], &["process", "kernel.rs"]].concat();
    let found = offenders(&below, &["crate::node", "super::node"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_parts_below_the_kernel_never_name_it() {
    let found = offenders(&PARTS, &["Node", "Kernel", "kernel"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn services_use_the_nodes_public_api_only() {
    let services = ["leader", "cluster.rs", "discovery", "services"];
    let found = offenders(
        &services,
        &[
            "Kernel",
            "crate::kernel",
            "crate::dist",
            "crate::router",
            "crate::names",
            "crate::tasks",
            "crate::process::signal",
            "crate::process::table",
            "crate::process::watch",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
    for dir in services {
        for file in sources(dir) {
            let code = code(&file);
            assert!(
                !code.contains("node.0") && !code.contains("node().0"),
                "{} reaches into the node's parts",
                file.display()
            );
        }
    }
}

#[test]
fn the_check_sees_a_violation() {
    assert!(names("use crate::kernel::Node;", "Node"));
    assert!(!names("use crate::events::NodeEvent;", "Node"));
    assert!(!names("let n: NodeName;", "Node"));
}
