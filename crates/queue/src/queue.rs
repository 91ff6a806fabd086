//! [`Queue`]: the async API over topics and groups in one data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_log::{Fsync, Log, Record};

use crate::config::{GroupConfig, GroupOverrides, QueueConfig, SeekTo};
use crate::cursor::Settled;
use crate::error::{LogContext, QueueError, Result};
use crate::group::{Group, Settle};
use crate::message::{Delivery, Message, MessageId, Published};
use crate::name::{self, dead_letter_topic};
use crate::stats::{Stats, TopicStats};
use crate::topic::Topic;

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// An embedded durable queue. Cheap to clone: clones share one queue.
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: QueueConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: RwLock<HashMap<(String, String), Arc<Group>>>,
    background: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Woken by every append, so the background task syncs only after
    /// writes and an idle queue does not wake at all.
    unsynced: Arc<Notify>,
    _lock: std::fs::File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let background = self.background.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = background.take() {
            handle.abort();
        }
    }
}

/// Options of one consumer joining a group.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub consumer_id: String,
    pub group: GroupConfig,
}

impl Queue {
    /// Opens (or creates) the queue in `config.data_dir`, recovering every
    /// topic and group found there. Refuses a directory another process has
    /// open, and `default_partitions` of 0. Must be called inside a tokio runtime: it starts the task that
    /// syncs (`fsync = every`) and applies retention.
    pub async fn open(config: QueueConfig) -> Result<Queue> {
        if config.default_partitions == 0 {
            return Err(QueueError::InvalidSetting {
                setting: "default_partitions",
                rule: "at least 1",
            });
        }
        let config2 = config.clone();
        let shared = tokio::task::spawn_blocking(move || Shared::open(config2))
            .await
            .map_err(|e| QueueError::Io {
                context: "opening the queue".into(),
                source: std::io::Error::other(e),
            })??;
        let queue = Queue {
            shared: Arc::new(shared),
        };
        let weak = Arc::downgrade(&queue.shared);
        let unsynced = Arc::clone(&queue.shared.unsynced);
        let sync_every = match config.fsync {
            Fsync::Every(period) => Some(period.max(Duration::from_millis(1))),
            _ => None,
        };
        let handle = tokio::spawn(async move {
            let mut next_retention = Instant::now() + RETENTION_EVERY;
            loop {
                // Asleep until something is written (when syncing is ours)
                // or retention is due; then let a period's writes gather
                // and sync them together.
                let wrote = tokio::select! {
                    () = unsynced.notified(), if sync_every.is_some() => true,
                    () = tokio::time::sleep_until(next_retention) => false,
                };
                if wrote && let Some(period) = sync_every {
                    tokio::time::sleep(period).await;
                }
                let Some(shared) = weak.upgrade() else { return };
                let retention = Instant::now() >= next_retention;
                if retention {
                    next_retention = Instant::now() + RETENTION_EVERY;
                }
                let _ =
                    tokio::task::spawn_blocking(move || shared.maintain(wrote, retention)).await;
            }
        });
        *queue
            .shared
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(queue)
    }

    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Creates a topic with `partitions` (at least 1), or checks that it
    /// has them.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        if partitions == 0 {
            return Err(QueueError::InvalidSetting {
                setting: "partitions",
                rule: "at least 1",
            });
        }
        let t = self.shared.topic(topic, partitions)?;
        if t.partition_count() != partitions {
            return Err(QueueError::PartitionMismatch {
                topic: topic.to_string(),
                existing: t.partition_count(),
                requested: partitions,
            });
        }
        Ok(())
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.read_topics().keys().cloned().collect();
        names.sort();
        names
    }

    /// Publishes one message; see [`Queue::publish_batch`].
    pub async fn publish(&self, topic: &str, message: Message) -> Result<Published> {
        let mut out = self.publish_batch(topic, vec![message]).await?;
        Ok(out.pop().expect("one id per message"))
    }

    /// Publishes messages, creating the topic on first use. Keyed messages
    /// go to their key's partition; unkeyed ones of one batch go together to
    /// one partition. Returns once the batch is durable by the queue's fsync
    /// policy, with one id per message, in order.
    pub async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Published>> {
        if messages.is_empty() {
            return Err(QueueError::EmptyBatch);
        }
        let config = &self.shared.config;
        let t = self.shared.topic(topic, config.default_partitions)?;
        let now = now_ms();
        let sticky = t.next_sticky();
        let mut total = 0;
        let mut by_partition: Vec<Vec<(usize, Record)>> = vec![Vec::new(); t.partitions.len()];
        for (i, m) in messages.into_iter().enumerate() {
            let p = t.partition_for(m.key.as_deref(), sticky);
            let record = m.into_record(now);
            let size = record.encoded_len();
            if size > config.max_message_bytes {
                return Err(QueueError::MessageTooLarge {
                    size,
                    limit: config.max_message_bytes,
                });
            }
            total += size;
            by_partition[p as usize].push((i, record));
        }
        if total > config.max_batch_bytes {
            return Err(QueueError::BatchTooLarge {
                size: total,
                limit: config.max_batch_bytes,
            });
        }
        let count: usize = by_partition.iter().map(Vec::len).sum();
        let mut out = vec![None; count];
        for (p, items) in by_partition.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (positions, records): (Vec<usize>, Vec<Record>) = items.into_iter().unzip();
            let timestamps: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
            let log = Arc::clone(&t.partitions[p]);
            let appended = blocking_if(config.fsync == Fsync::Always, move || log.append(&records))
                .await?
                .ctx(|| format!("appending to topic {topic:?} partition {p}"))?;
            self.shared.unsynced.notify_one();
            for (k, (pos, ts)) in positions.into_iter().zip(timestamps).enumerate() {
                out[pos] = Some(Published {
                    id: MessageId {
                        partition: p as u32,
                        offset: appended.base_offset + k as u64,
                    },
                    timestamp: ts,
                });
            }
        }
        t.published
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        t.notify.notify_waiters();
        Ok(out
            .into_iter()
            .map(|p| p.expect("every message placed"))
            .collect())
    }

    /// Joins `group` on `topic` (both created on first use) as a consumer.
    /// The group's settings become those in `options`.
    pub fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Consumer> {
        let g = self.shared.group(topic, group, &options.group)?;
        let id: Arc<str> = Arc::from(options.consumer_id.as_str());
        g.join(&id, &options.group, Instant::now());
        Ok(Consumer {
            queue: self.clone(),
            group: g,
            id,
        })
    }

    /// The settings an existing group runs with (those of its latest
    /// subscriber), or `None` when the group is not open. Subscribers that
    /// want to keep a group's settings start from these.
    pub fn group_config(&self, topic: &str, group: &str) -> Option<GroupConfig> {
        self.shared
            .existing_group(topic, group)
            .ok()
            .map(|g| g.config())
    }

    /// The settings a subscriber joins `group` on `topic` with: `overrides`
    /// over the group's current settings (the queue's defaults for a group
    /// not open), so that a subscriber cannot reset another's visibility
    /// timeout by leaving it out. Refuses a zero visibility timeout or
    /// `max_deliveries` ([`QueueError::InvalidSetting`]).
    pub fn group_settings(
        &self,
        topic: &str,
        group: &str,
        overrides: GroupOverrides,
    ) -> Result<GroupConfig> {
        let current = self
            .group_config(topic, group)
            .unwrap_or(self.shared.config.group);
        let config = GroupConfig {
            visibility_timeout: overrides
                .visibility_timeout
                .unwrap_or(current.visibility_timeout),
            max_deliveries: overrides.max_deliveries.unwrap_or(current.max_deliveries),
            start: overrides.start,
            ..current
        };
        if config.visibility_timeout.is_zero() {
            return Err(QueueError::InvalidSetting {
                setting: "visibility_timeout",
                rule: "longer than zero",
            });
        }
        if config.max_deliveries == 0 {
            return Err(QueueError::InvalidSetting {
                setting: "max_deliveries",
                rule: "at least 1",
            });
        }
        Ok(config)
    }

    /// Acks messages of a group; one outcome per id.
    pub async fn ack(&self, topic: &str, group: &str, ids: &[MessageId]) -> Result<Vec<Settled>> {
        let g = self.shared.existing_group(topic, group)?;
        settle(&g, ids, &Settle::Ack).await
    }

    /// Gives messages back to be delivered again after `delay`.
    pub async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[MessageId],
        delay: Duration,
    ) -> Result<Vec<Settled>> {
        let g = self.shared.existing_group(topic, group)?;
        settle(&g, ids, &Settle::Nack(delay)).await
    }

    /// Sends messages straight to the dead-letter topic with `detail`.
    pub async fn reject(
        &self,
        topic: &str,
        group: &str,
        ids: &[MessageId],
        detail: &str,
    ) -> Result<Vec<Settled>> {
        let g = self.shared.existing_group(topic, group)?;
        settle(&g, ids, &Settle::Reject(detail.to_string())).await
    }

    /// Moves a group to another position (replay or skip).
    pub fn seek(&self, topic: &str, group: &str, to: SeekTo) -> Result<()> {
        self.shared.existing_group(topic, group)?.seek(to)
    }

    /// Reads a topic partition directly, outside any group.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<weir_log::StoredRecord>> {
        let t = self.shared.existing_topic(topic)?;
        t.log(partition)?
            .read(from, max_bytes)
            .ctx(|| format!("reading topic {topic:?} partition {partition}"))
    }

    /// Stats of every topic and group.
    pub fn stats(&self) -> Result<Stats> {
        let now = Instant::now();
        let now_ms = now_ms();
        let mut topics: Vec<TopicStats> = self
            .shared
            .read_topics()
            .values()
            .map(|t| TopicStats {
                topic: t.name.to_string(),
                partitions: t.partition_count(),
                messages: t
                    .partitions
                    .iter()
                    .map(|l| l.next_offset() - l.start_offset())
                    .sum(),
                bytes: t.partitions.iter().map(|l| l.size_bytes()).sum(),
                published_total: t.published.load(std::sync::atomic::Ordering::Relaxed),
                end_offsets: t.partitions.iter().map(|l| l.next_offset()).collect(),
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let groups: Vec<Arc<Group>> = self.shared.read_groups().values().cloned().collect();
        let mut group_stats = groups
            .iter()
            .map(|g| g.stats(now, now_ms))
            .collect::<Result<Vec<_>>>()?;
        group_stats.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        Ok(Stats {
            topics,
            groups: group_stats,
        })
    }

    /// Stops the background task and syncs everything.
    pub async fn close(self) -> Result<()> {
        let handle = self
            .shared
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.sync_all())
            .await
            .map_err(|e| QueueError::Io {
                context: "closing the queue".into(),
                source: std::io::Error::other(e),
            })?
    }
}

/// One member of a consumer group.
#[derive(Debug)]
pub struct Consumer {
    queue: Queue,
    group: Arc<Group>,
    id: Arc<str>,
}

impl Consumer {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Leases up to `max` messages, waiting up to `wait` for the first.
    /// Returns an empty list when none came in time.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.group.topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (deliveries, wake) = self.group.try_take(Instant::now(), max.max(1), &self.id)?;
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    pub async fn ack(&self, ids: &[MessageId]) -> Result<Vec<Settled>> {
        settle(&self.group, ids, &Settle::Ack).await
    }

    pub async fn nack(&self, ids: &[MessageId], delay: Duration) -> Result<Vec<Settled>> {
        settle(&self.group, ids, &Settle::Nack(delay)).await
    }

    pub async fn reject(&self, ids: &[MessageId], detail: &str) -> Result<Vec<Settled>> {
        settle(&self.group, ids, &Settle::Reject(detail.to_string())).await
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.group.leave(&self.id);
    }
}

async fn settle(group: &Arc<Group>, ids: &[MessageId], how: &Settle) -> Result<Vec<Settled>> {
    let outcomes = group.settle(ids, how, Instant::now())?;
    if !matches!(how, Settle::Ack) {
        group.topic.notify.notify_waiters();
    }
    if group.sync_acks() {
        let journal = Arc::clone(group.journal());
        blocking_if(true, move || journal.sync())
            .await?
            .ctx(|| format!("syncing the journal of group {:?}", group.name))?;
    }
    Ok(outcomes)
}

/// Runs `f` on the blocking pool when it may block for long (an fsync),
/// inline otherwise.
async fn blocking_if<T: Send + 'static>(
    block: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    if block {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| QueueError::Io {
                context: "running a blocking write".into(),
                source: std::io::Error::other(e),
            })
    } else {
        Ok(f())
    }
}

impl Shared {
    fn open(config: QueueConfig) -> Result<Shared> {
        let dir = &config.data_dir;
        let io = |what: &str, path: &Path| {
            let context = format!("{what} {}", path.display());
            move |source| QueueError::Io { context, source }
        };
        std::fs::create_dir_all(dir.join("topics")).map_err(io("creating", dir))?;
        std::fs::create_dir_all(dir.join("groups")).map_err(io("creating", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(QueueError::Locked { dir: dir.clone() });
        }
        let shared = Shared {
            config,
            topics: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            background: std::sync::Mutex::new(None),
            unsynced: Arc::new(Notify::new()),
            _lock: lock,
        };
        for topic in subdirs(&shared.config.data_dir.join("topics"))? {
            shared.topic(&topic, shared.config.default_partitions)?;
        }
        for group in subdirs(&shared.config.data_dir.join("groups"))? {
            for topic in subdirs(&shared.config.data_dir.join("groups").join(&group))? {
                shared.group(&topic, &group, &shared.config.group)?;
            }
        }
        Ok(shared)
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn read_groups(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Arc<Group>>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic, opened or created with `partitions` on first use.
    fn topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        if let Some(t) = self.read_topics().get(name) {
            return Ok(Arc::clone(t));
        }
        name::validate("topic", name)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(Arc::clone(t));
        }
        let dir = self.config.data_dir.join("topics").join(name);
        let t = Arc::new(Topic::open(&dir, name, partitions, &self.config)?);
        topics.insert(name.to_string(), Arc::clone(&t));
        Ok(t)
    }

    fn existing_topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::UnknownTopic(name.to_string()))
    }

    fn existing_group(&self, topic: &str, group: &str) -> Result<Arc<Group>> {
        self.read_groups()
            .get(&(topic.to_string(), group.to_string()))
            .cloned()
            .ok_or_else(|| QueueError::UnknownGroup {
                topic: topic.to_string(),
                group: group.to_string(),
            })
    }

    /// The group, opened or created on first use.
    fn group(&self, topic: &str, group: &str, config: &GroupConfig) -> Result<Arc<Group>> {
        let key = (topic.to_string(), group.to_string());
        if let Some(g) = self.read_groups().get(&key) {
            return Ok(Arc::clone(g));
        }
        name::validate("group", group)?;
        let t = self.topic(topic, self.config.default_partitions)?;
        let dlq = self.topic(&dead_letter_topic(topic), 1)?;
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = groups.get(&key) {
            return Ok(Arc::clone(g));
        }
        let dir: PathBuf = self.config.data_dir.join("groups").join(group).join(topic);
        let unsynced = Arc::clone(&self.unsynced);
        let g = Arc::new(Group::open(
            &dir,
            group,
            t,
            dlq,
            config,
            self.config.fsync,
            unsynced,
        )?);
        groups.insert(key, Arc::clone(&g));
        Ok(g)
    }

    fn logs(&self) -> Vec<Arc<Log>> {
        let mut logs: Vec<Arc<Log>> = self
            .read_topics()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        logs.extend(self.read_groups().values().map(|g| Arc::clone(g.journal())));
        logs
    }

    fn sync_all(&self) -> Result<()> {
        for log in self.logs() {
            log.sync()
                .ctx(|| format!("syncing {}", log.dir().display()))?;
        }
        Ok(())
    }

    /// The background task's work: periodic sync and retention. Failures
    /// are logged; the next append or ack reports them to its caller.
    fn maintain(&self, sync: bool, retention: bool) {
        if sync && let Err(e) = self.sync_all() {
            tracing::error!(error = %e, "periodic fsync failed");
        }
        if retention {
            let now = now_ms();
            for t in self.read_topics().values() {
                for log in &t.partitions {
                    match log.enforce_retention(now) {
                        Ok(r) if r.segments > 0 => tracing::info!(
                            topic = %t.name, segments = r.segments, bytes = r.bytes,
                            "retention deleted old segments"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::error!(topic = %t.name, error = %e, "retention failed"),
                    }
                }
            }
        }
    }
}

fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| QueueError::Io {
        context: format!("listing {}", dir.display()),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(name) = entry.file_name().to_str()
            && name::validate("topic", name).is_ok()
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
