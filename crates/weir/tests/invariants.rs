//! The dependency rules in ARCHITECTURE.md, checked on the manifests so
//! that breaking one fails here rather than in review.

/// The names under `[dependencies]` of a workspace crate.
fn dependencies(krate: &str) -> Vec<String> {
    let path = format!("{}/../{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let deps = manifest
        .split("\n[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_else(|| panic!("{path} has no [dependencies] table"));
    deps.lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_string)
        .collect()
}

const HTTP: [&str; 5] = ["axum", "hyper", "reqwest", "tower", "weir-server"];

#[test]
fn the_storage_engine_knows_no_runtime_http_or_json() {
    assert_eq!(
        dependencies("log"),
        ["bytes", "crc32c", "thiserror"],
        "weir-log's dependencies changed: keep it synchronous and format-free"
    );
}

#[test]
fn only_the_edge_crates_know_http() {
    for krate in [
        "log",
        "queue",
        "bus",
        "gol",
        "worker",
        "telemetry",
        "sources",
        "monitor",
        "store",
        "collect",
    ] {
        let deps = dependencies(krate);
        for http in HTTP {
            assert!(
                !deps.iter().any(|d| d == http),
                "weir-{krate} depends on {http}: HTTP belongs to weir-server and weir-api"
            );
        }
    }
    assert!(
        !dependencies("queue")
            .iter()
            .any(|d| d.starts_with("weir-") && d != "weir-log"),
        "weir-queue builds on weir-log alone"
    );
}

#[test]
fn components_reach_the_transport_only_through_the_bus() {
    for krate in ["worker", "sources", "monitor", "collect"] {
        let deps = dependencies(krate);
        for transport in ["weir-queue", "weir-api", "weir-log"] {
            assert!(
                !deps.iter().any(|d| d == transport),
                "weir-{krate} depends on {transport}: components use weir-bus"
            );
        }
    }
}

#[test]
fn the_sample_model_stands_alone() {
    let deps = dependencies("telemetry");
    assert!(
        !deps.iter().any(|d| d.starts_with("weir-") || d == "tokio"),
        "weir-telemetry is the shared vocabulary: no Weir crate, no runtime ({deps:?})"
    );
}

#[test]
fn the_store_knows_no_transport() {
    let deps = dependencies("store");
    assert!(
        !deps
            .iter()
            .any(|d| d.starts_with("weir-") && d != "weir-telemetry"),
        "weir-store writes and reads samples, whatever carried them ({deps:?})"
    );
}
