//! The layering invariants of `docs/ARCHITECTURE.md`, checked on cargo's own view of the
//! workspace: the main side never depends on the sandbox side, and the library a core embeds
//! carries no command-line or test machinery.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeSet, HashMap, VecDeque};

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId, TargetKind};

fn metadata() -> Metadata {
    MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .exec()
        .unwrap()
}

/// Every package whose code `package` links, by name: its normal dependencies (not dev- or
/// build-dependencies), theirs, and so on. A proc-macro runs in the compiler, so it is listed
/// but what it depends on is not (`prost-derive` uses `anyhow` at compile time; main's process
/// never contains it).
fn normal_closure(metadata: &Metadata, package: &str) -> BTreeSet<String> {
    walk_normal(metadata, package, usize::MAX)
}

/// `package`'s own normal dependencies, by name.
fn direct_normal(metadata: &Metadata, package: &str) -> BTreeSet<String> {
    walk_normal(metadata, package, 1)
}

fn walk_normal(metadata: &Metadata, package: &str, depth: usize) -> BTreeSet<String> {
    let resolve = metadata.resolve.as_ref().unwrap();
    let nodes: HashMap<&PackageId, _> = resolve.nodes.iter().map(|node| (&node.id, node)).collect();
    let name = |id: &PackageId| metadata[id].name.to_string();
    let root = metadata
        .workspace_packages()
        .into_iter()
        .find(|candidate| candidate.name.as_str() == package)
        .unwrap_or_else(|| panic!("no workspace package {package}"));
    let is_proc_macro = |id: &PackageId| {
        metadata[id]
            .targets
            .iter()
            .any(|target| target.kind.contains(&TargetKind::ProcMacro))
    };
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([(&root.id, 0)]);
    while let Some((id, level)) = queue.pop_front() {
        if level == depth || (level > 0 && is_proc_macro(id)) {
            continue;
        }
        for dependency in &nodes[id].deps {
            let normal = dependency
                .dep_kinds
                .iter()
                .any(|kind| kind.kind == DependencyKind::Normal);
            if normal && seen.insert(name(&dependency.pkg)) {
                queue.push_back((&dependency.pkg, level + 1));
            }
        }
    }
    seen
}

fn assert_free_of(package: &str, forbidden: &[&str]) {
    assert_set_free_of(package, &normal_closure(&metadata(), package), forbidden);
}

fn assert_set_free_of(package: &str, closure: &BTreeSet<String>, forbidden: &[&str]) {
    let found: Vec<_> = forbidden
        .iter()
        .filter(|name| closure.contains(**name))
        .collect();
    assert!(
        found.is_empty(),
        "`{package}` must not depend on {found:?} (see the invariants in docs/ARCHITECTURE.md); \
         it depends on {closure:?}"
    );
}

#[test]
fn the_host_library_links_neither_the_sandbox_side_nor_the_command_line() {
    assert_free_of(
        "sandbox-host",
        &[
            "sandbox-runtime",
            "integrations",
            "custom-example",
            "sandbox-host-cli",
            "sandbox-tests",
            "sandbox-forge",
            "sandbox-compat",
            "sandbox-mqtt-broker",
            "clap",
        ],
    );
}

#[test]
fn the_host_library_itself_uses_no_binary_or_test_crates() {
    // `tempfile` still reaches it through `sandbox-proto`, whose unix transport makes each
    // socket's private directory with it: that is main's runtime need, not a binary's.
    let direct = direct_normal(&metadata(), "sandbox-host");
    assert_set_free_of("sandbox-host", &direct, &["anyhow", "clap", "tempfile"]);
    assert!(direct.contains("sandbox-wire"), "{direct:?}");
}

#[test]
fn the_wire_conversion_knows_neither_side() {
    assert_free_of(
        "sandbox-wire",
        &["sandbox-host", "sandbox-runtime", "integrations"],
    );
}

#[test]
fn the_core_and_the_wire_know_nothing_of_sandboxes() {
    assert_free_of(
        "homecore",
        &[
            "sandbox-proto",
            "sandbox-wire",
            "sandbox-host",
            "sandbox-runtime",
        ],
    );
    assert_free_of(
        "sandbox-proto",
        &["homecore", "sandbox-host", "sandbox-runtime"],
    );
}

#[test]
fn the_sandbox_side_does_not_depend_on_main() {
    assert_free_of("sandbox-runtime", &["sandbox-host", "sandbox-host-cli"]);
    assert_free_of("integrations", &["sandbox-host", "sandbox-runtime"]);
    assert_free_of("custom-example", &["sandbox-host", "sandbox-host-cli"]);
}

#[test]
fn the_closure_follows_normal_dependencies_through_the_graph() {
    // The check must see what it checks: the CLI reaches the runtime (directly) and tokio
    // (through the host), and the host reaches tokio but not the CLI's clap.
    let metadata = metadata();
    let cli = normal_closure(&metadata, "sandbox-host-cli");
    assert!(cli.contains("sandbox-runtime") && cli.contains("clap") && cli.contains("prost"));
    let host = normal_closure(&metadata, "sandbox-host");
    assert!(host.contains("tokio") && host.contains("sandbox-wire") && host.contains("homecore"));
    // A proc-macro is listed, what it uses at compile time is not.
    assert!(
        host.contains("prost-derive") && !host.contains("anyhow"),
        "{host:?}"
    );
}
