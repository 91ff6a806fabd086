//! The storage engine's promise in ARCHITECTURE.md: it knows no async
//! runtime, no HTTP and no wire format. Checked on its manifest, so adding
//! such a dependency fails here rather than in review.

#[test]
fn the_log_depends_on_no_runtime_http_or_json() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    assert_eq!(
        names,
        ["bytes", "crc32c", "thiserror"],
        "weir-log's dependencies changed: keep it synchronous and format-free"
    );
}
