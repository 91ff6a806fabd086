//! A topic: its partition logs, how keys pick a partition, and the signal
//! that wakes waiting consumers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;
use weir_log::{Log, LogConfig};

use crate::config::QueueConfig;
use crate::error::{LogContext, QueueError, Result};

const META: &str = "partitions";

#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: Vec<Arc<Log>>,
    /// Woken on every publish and whenever a message becomes ready again.
    pub(crate) notify: Notify,
    sticky: AtomicU32,
    pub(crate) published: AtomicU64,
}

impl Topic {
    /// Opens the topic in `dir`, creating it with `partitions` if it is new.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        partitions: u32,
        config: &QueueConfig,
    ) -> Result<Topic> {
        std::fs::create_dir_all(dir).map_err(|source| QueueError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        let meta = dir.join(META);
        let count = match std::fs::read_to_string(&meta) {
            Ok(text) => text.trim().parse::<u32>().map_err(|_| QueueError::Io {
                context: format!("reading {}", meta.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a partition count",
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&meta, &format!("{partitions}\n"))?;
                partitions
            }
            Err(source) => {
                return Err(QueueError::Io {
                    context: format!("reading {}", meta.display()),
                    source,
                });
            }
        };
        let log_config = LogConfig {
            fsync: config.fsync,
            segment_bytes: config.segment_bytes,
            max_batch_bytes: config.max_batch_bytes.max(config.max_message_bytes) + (64 << 10),
            retention_bytes: config.retention_bytes,
            retention_age: config.retention_age,
            ..LogConfig::default()
        };
        let partitions = (0..count.max(1))
            .map(|p| {
                let pdir = dir.join(p.to_string());
                Log::open(&pdir, log_config.clone())
                    .map(Arc::new)
                    .ctx(|| format!("opening topic {name:?} partition {p}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: Arc::from(name),
            partitions,
            notify: Notify::new(),
            sticky: AtomicU32::new(0),
            published: AtomicU64::new(0),
        })
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partition for a message: its key's hash, or for unkeyed messages
    /// one partition per batch, moving round-robin from batch to batch.
    pub(crate) fn partition_for(&self, key: Option<&[u8]>, batch_choice: u32) -> u32 {
        match key {
            Some(k) => (fnv1a(k) % u64::from(self.partition_count())) as u32,
            None => batch_choice,
        }
    }

    /// The partition unkeyed messages of the next batch go to.
    pub(crate) fn next_sticky(&self) -> u32 {
        self.sticky.fetch_add(1, Ordering::Relaxed) % self.partition_count()
    }

    pub(crate) fn log(&self, partition: u32) -> Result<&Arc<Log>> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| QueueError::NoSuchPartition {
                topic: self.name.to_string(),
                partitions: self.partition_count(),
                partition,
            })
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, so a key keeps its
/// partition.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes a small file so that it is either wholly there or absent.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let io = |source| QueueError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_stably() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
