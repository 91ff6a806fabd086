//! The bus contract against the embedded backend: every case on a fresh
//! queue in its own temp directory.

use std::sync::Arc;

use weir_bus::contract::Guard;
use weir_bus::{Bus, ConnectOptions};

/// `embedded://` on a new temp dir, which the guard deletes after the case.
async fn connect() -> (Arc<dyn Bus>, Guard) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("embedded://{}", dir.path().display());
    let options = ConnectOptions {
        partitions: Some(4),
        ..ConnectOptions::default()
    };
    let bus = weir_bus::connect(&url, &options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    (bus, Box::new(dir))
}

weir_bus::contract_suite!(connect);
