//! [`Log`]: the segments of one topic-partition behind one writer lock.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::batch::{self, Record, StoredRecord};
use crate::config::{Fsync, LogConfig};
use crate::error::{LogError, Result};
use crate::segment::{self, Segment};

/// Bytes read at least per read call, so small reads still fetch whole batches.
const MIN_READ: usize = 64 << 10;

/// An append-only, segmented, checksummed log. Cheap to share: every method
/// takes `&self`, so appenders and readers on many threads use one `Log`.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    inner: Mutex<Inner>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    failed: Mutex<Option<String>>,
    recovery: RecoveryReport,
}

#[derive(Debug)]
struct Inner {
    /// Ordered by base offset; the last one is the active segment.
    segments: Vec<Segment>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every offset below this is on stable storage.
    synced: u64,
    in_progress: bool,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    /// One past the last offset of the batch.
    pub next_offset: u64,
    pub bytes: u64,
}

/// What opening the log had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes of torn or corrupt tail cut from the active segment.
    pub truncated_bytes: u64,
    /// Sealed segments whose index file was missing or damaged and rebuilt.
    pub rebuilt_indexes: usize,
    /// Empty trailing segments removed (left by a crash during a roll).
    pub removed_empty_segments: usize,
}

/// What a full verification read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub batches: u64,
    pub bytes: u64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub segments: usize,
    pub bytes: u64,
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers it: the
    /// active segment is scanned and a torn tail truncated; sealed segments
    /// are trusted through their checksummed index files, or scanned when the
    /// index is missing or stale. Damage followed by valid data, and gaps
    /// between segments, are reported as [`LogError::Corrupt`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let mut bases = list_segments(dir)?;
        let mut report = RecoveryReport::default();
        while bases.len() > 1 {
            let last = segment::log_path(dir, *bases.last().expect("non-empty"));
            let len = std::fs::metadata(&last).map_err(LogError::io(&last))?.len();
            if len > 0 {
                break;
            }
            std::fs::remove_file(&last).map_err(LogError::io(&last))?;
            let _ = std::fs::remove_file(segment::index_path(&last));
            bases.pop();
            report.removed_empty_segments += 1;
        }
        let interval = config.index_interval_bytes;
        let max_batch = config.max_batch_bytes;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::log_path(dir, base);
            if let Some(prev) = segments.last()
                && prev.next != base
            {
                return Err(LogError::Corrupt {
                    path,
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the previous one ends at {}",
                        prev.next
                    ),
                });
            }
            let seg = if i + 1 < bases.len() {
                let (seg, rebuilt) = Segment::open_sealed(path, base, interval, max_batch)?;
                report.rebuilt_indexes += usize::from(rebuilt);
                seg
            } else {
                let (seg, truncated) = Segment::open_active(path, base, interval, max_batch)?;
                report.truncated_bytes = truncated;
                seg
            };
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
            sync_dir(dir)?;
        }
        report.segments = segments.len();
        let next = segments.last().expect("at least one segment").next;
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            inner: Mutex::new(Inner { segments }),
            sync: Mutex::new(SyncState {
                synced: next,
                in_progress: false,
            }),
            synced: Condvar::new(),
            failed: Mutex::new(None),
            recovery: report,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// What [`Log::open`] repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Appends `records` as one batch and returns the offsets they got.
    ///
    /// When this returns, the batch is in the operating system's page cache
    /// (it survives the process crashing); with [`Fsync::Always`] it is also
    /// on stable storage.
    pub fn append(&self, records: &[Record]) -> Result<Appended> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let mut buf = batch::encode_unsealed(records);
        if buf.len() > self.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size: buf.len(),
                limit: self.config.max_batch_bytes,
            });
        }
        let appended = {
            let mut inner = self.lock_inner();
            self.check_failed()?;
            let active = inner.segments.last().expect("active segment");
            if active.len > 0 && active.len + buf.len() as u64 > self.config.segment_bytes {
                self.roll(&mut inner)?;
            }
            let active = inner.segments.last_mut().expect("active segment");
            let base = active.next;
            batch::rebase(&mut buf, base);
            if let Err(e) = active.file.write_all_at(&buf, active.len) {
                // Cut back whatever part of the batch reached the file; if
                // even that fails, what is on disk is unknown.
                if let Err(cut) = active.file.set_len(active.len) {
                    self.fail(format!(
                        "write failed ({e}) and could not be undone ({cut})"
                    ));
                }
                return Err(LogError::Io {
                    path: active.path.clone(),
                    source: e,
                });
            }
            let next = base + records.len() as u64;
            let max_ts = records
                .iter()
                .map(|r| r.timestamp)
                .max()
                .unwrap_or(i64::MIN);
            active.advance(
                buf.len() as u64,
                next,
                max_ts,
                self.config.index_interval_bytes,
            );
            Appended {
                base_offset: base,
                next_offset: next,
                bytes: buf.len() as u64,
            }
        };
        if self.config.fsync == Fsync::Always {
            self.sync_to(appended.next_offset)?;
        }
        Ok(appended)
    }

    /// Forces everything appended so far to stable storage. Concurrent
    /// callers share one fsync.
    pub fn sync(&self) -> Result<()> {
        let next = self.next_offset();
        self.sync_to(next)
    }

    /// Waits until every offset below `target` is on stable storage, running
    /// the fsync itself unless another thread already is, in which case it
    /// waits for that one and checks again (group commit).
    fn sync_to(&self, target: u64) -> Result<()> {
        let mut state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.synced >= target {
                return Ok(());
            }
            if !state.in_progress {
                break;
            }
            state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.in_progress = true;
        drop(state);
        let (file, path, end) = {
            let inner = self.lock_inner();
            let active = inner.segments.last().expect("active segment");
            (Arc::clone(&active.file), active.path.clone(), active.next)
        };
        let result = file.sync_data();
        let mut state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        state.in_progress = false;
        if result.is_ok() {
            state.synced = state.synced.max(end);
        }
        drop(state);
        self.synced.notify_all();
        result.map_err(|e| {
            self.fail(format!("fsync failed: {e}"));
            LogError::Io { path, source: e }
        })?;
        self.check_failed()
    }

    /// Seals the active segment (synced, index written) and starts a new one.
    fn roll(&self, inner: &mut Inner) -> Result<()> {
        let active = inner.segments.last().expect("active segment");
        active
            .file
            .sync_data()
            .map_err(LogError::io(&active.path))?;
        active.write_index()?;
        let sealed_next = active.next;
        inner
            .segments
            .push(Segment::create(&self.dir, sealed_next)?);
        sync_dir(&self.dir)?;
        let mut state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        state.synced = state.synced.max(sealed_next);
        Ok(())
    }

    /// Reads records from offset `from` on, up to about `max_bytes` of
    /// batches (always at least one batch when any record is there).
    ///
    /// An offset below the log start reads from the start: the first record
    /// returned then shows how much retention removed. Every batch read is
    /// checked against its checksum; a bad one is [`LogError::Corrupt`].
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut next = from;
        let mut budget = max_bytes.max(1);
        while budget > 0 {
            let Some(view) = self.view(next) else { break };
            next = next.max(view.base);
            let wanted = next;
            // `buf` holds the file from `buf_pos` on; `pos` is the next batch.
            // The sparse index may point a little before `next`: batches
            // wholly below it are checked but neither returned nor charged
            // to the budget.
            let mut buf = Bytes::new();
            let mut buf_pos = view.pos;
            let mut pos = view.pos;
            while pos < view.end && budget > 0 {
                let corrupt = |e: &batch::BatchError| LogError::corrupt(&view.path, pos, e);
                let left = (view.end - pos) as usize;
                // Refill when the buffer ends inside the header or the body
                // of the next batch; a refill holds the batch whole.
                if buf_pos + (buf.len() as u64) < pos + batch::BATCH_HEADER_LEN.min(left) as u64 {
                    buf = view.fetch(pos, budget)?;
                    buf_pos = pos;
                }
                let mut at = (pos - buf_pos) as usize;
                let header = batch::peek_header(&buf[at..], self.config.max_batch_bytes)
                    .map_err(|e| corrupt(&e))?;
                if at + header.total_len > buf.len() {
                    buf = view.fetch(pos, budget.max(header.total_len))?;
                    buf_pos = pos;
                    at = 0;
                }
                // Short only when the length field runs past the segment:
                // decoding then reports the batch as truncated.
                let one = buf.slice(at..(at + header.total_len).min(buf.len()));
                let (header, records) =
                    batch::decode(&one, self.config.max_batch_bytes).map_err(|e| corrupt(&e))?;
                if header.next_offset() > next {
                    out.extend(records.into_iter().filter(|r| r.offset >= next));
                    next = header.next_offset();
                    budget = budget.saturating_sub(header.total_len);
                }
                pos += header.total_len as u64;
            }
            if next == wanted && budget > 0 {
                // The segment ended without the offset it claims to hold;
                // looking again would find the same.
                return Err(LogError::Corrupt {
                    path: view.path,
                    position: pos,
                    reason: format!("segment ends before offset {next}, which it claims to hold"),
                });
            }
        }
        Ok(out)
    }

    /// Where to read to find `offset`: `None` once `offset` is at the end.
    fn view(&self, offset: u64) -> Option<View> {
        let inner = self.lock_inner();
        let first = inner.segments.first().expect("a segment");
        let offset = offset.max(first.base);
        let i = inner.segments.partition_point(|s| s.base <= offset) - 1;
        let seg = &inner.segments[i];
        if offset >= seg.next {
            return None;
        }
        Some(View {
            file: Arc::clone(&seg.file),
            path: seg.path.clone(),
            base: seg.base,
            pos: seg.position_of(offset),
            end: seg.len,
        })
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.lock_inner().segments[0].base
    }

    /// The offset the next appended record will get.
    pub fn next_offset(&self) -> u64 {
        self.lock_inner()
            .segments
            .last()
            .expect("active segment")
            .next
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.lock_inner().segments.iter().map(|s| s.len).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.lock_inner().segments.len()
    }

    /// The first offset whose record has a timestamp at or after `ts` (ms),
    /// or the end of the log when there is none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64> {
        let candidates: Vec<(u64, u64)> = {
            let inner = self.lock_inner();
            inner
                .segments
                .iter()
                .filter(|s| s.max_ts >= ts)
                .map(|s| (s.base, s.next))
                .collect()
        };
        for (base, seg_next) in candidates {
            let mut offset = base;
            while offset < seg_next {
                let records = self.read(offset, MIN_READ)?;
                let Some(last) = records.last() else { break };
                if let Some(hit) = records.iter().find(|r| r.record.timestamp >= ts) {
                    return Ok(hit.offset);
                }
                offset = last.offset + 1;
            }
        }
        Ok(self.next_offset())
    }

    /// Deletes whole sealed segments by the configured retention: oldest
    /// first while the log exceeds `retention_bytes`, and any whose newest
    /// record is older than `retention_age` before `now_ms`.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<Removed> {
        let max_bytes = self.config.retention_bytes;
        let min_ts = self
            .config
            .retention_age
            .map(|age| now_ms.saturating_sub(age.as_millis() as i64));
        self.remove_oldest_while(|oldest, total| {
            max_bytes.is_some_and(|max| total > max)
                || min_ts.is_some_and(|min| oldest.max_ts < min)
        })
    }

    /// Deletes whole sealed segments that hold only offsets below `offset`.
    pub fn truncate_before(&self, offset: u64) -> Result<Removed> {
        self.remove_oldest_while(|oldest, _| oldest.next <= offset)
    }

    fn remove_oldest_while(
        &self,
        mut doomed: impl FnMut(&Segment, u64) -> bool,
    ) -> Result<Removed> {
        let mut inner = self.lock_inner();
        let mut removed = Removed::default();
        let mut total: u64 = inner.segments.iter().map(|s| s.len).sum();
        while inner.segments.len() > 1 && doomed(&inner.segments[0], total) {
            let seg = inner.segments.remove(0);
            seg.remove_files()?;
            // Each deletion is made durable before the next, so a power cut
            // can never leave an older segment behind a deleted newer one
            // (a gap that open would rightly call corruption).
            sync_dir(&self.dir)?;
            total -= seg.len;
            removed.segments += 1;
            removed.bytes += seg.len;
        }
        Ok(removed)
    }

    /// Reads every batch of every segment and checks checksums and offsets.
    pub fn verify(&self) -> Result<VerifyReport> {
        let segments: Vec<(PathBuf, Arc<std::fs::File>, u64, u64)> = {
            let inner = self.lock_inner();
            inner
                .segments
                .iter()
                .map(|s| (s.path.clone(), Arc::clone(&s.file), s.base, s.len))
                .collect()
        };
        let mut report = VerifyReport::default();
        for (path, file, base, len) in segments {
            let scan = segment::scan(
                &file,
                &path,
                base,
                len,
                self.config.index_interval_bytes,
                self.config.max_batch_bytes,
            )?;
            if let Some((pos, e)) = scan.damage {
                return Err(LogError::corrupt(&path, pos, &e));
            }
            report.segments += 1;
            report.batches += scan.batches;
            report.bytes += scan.len;
        }
        Ok(report)
    }

    /// Syncs what is unsynced and closes the log.
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, reason: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(reason);
    }

    fn check_failed(&self) -> Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

struct View {
    file: Arc<std::fs::File>,
    path: PathBuf,
    base: u64,
    pos: u64,
    end: u64,
}

impl View {
    /// Reads about `budget` bytes (at least [`MIN_READ`]) from `pos`, but not
    /// past the end of the segment as it was when viewed.
    fn fetch(&self, pos: u64, budget: usize) -> Result<Bytes> {
        let want = budget.max(MIN_READ).min((self.end - pos) as usize);
        let buf = segment::read_at(&self.file, &self.path, pos, want)?;
        Ok(Bytes::from(buf))
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = segment::parse_name(name) {
            bases.push(base);
        } else if let Some(stem) = name.strip_suffix(".idx") {
            // An index whose segment is gone was left by a crash mid-delete.
            if !dir.join(format!("{stem}.log")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Makes file creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}
