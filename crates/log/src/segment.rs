//! One segment: a file of consecutive batches and its sparse index.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BATCH_HEADER_LEN, BatchError};
use crate::error::{LogError, Result};
use crate::index::{SealedIndex, SparseIndex};

/// Bytes read at a time while scanning a segment.
const SCAN_CHUNK: usize = 8 << 20;

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    /// Offset one past the last record in this segment.
    pub(crate) next: u64,
    /// Bytes of complete batches; appends go here.
    pub(crate) len: u64,
    pub(crate) max_ts: i64,
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) index: SparseIndex,
}

/// What a scan of a segment's bytes found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) len: u64,
    pub(crate) next: u64,
    pub(crate) max_ts: i64,
    pub(crate) index: SparseIndex,
    pub(crate) batches: u64,
    /// The first bad batch: its position and what is wrong with it.
    pub(crate) damage: Option<(u64, BatchError)>,
}

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(path: &Path) -> PathBuf {
    path.with_extension("idx")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Segment {
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        Ok(Segment::from_parts(
            path,
            file,
            base,
            0,
            base,
            i64::MIN,
            SparseIndex::default(),
        ))
    }

    fn from_parts(
        path: PathBuf,
        file: File,
        base: u64,
        len: u64,
        next: u64,
        max_ts: i64,
        index: SparseIndex,
    ) -> Segment {
        Segment {
            base,
            next,
            len,
            max_ts,
            file: Arc::new(file),
            path,
            index,
        }
    }

    fn from_scan(path: PathBuf, file: File, base: u64, scan: Scan) -> Segment {
        Segment::from_parts(
            path,
            file,
            base,
            scan.len,
            scan.next,
            scan.max_ts,
            scan.index,
        )
    }

    pub(crate) fn open_file(path: &Path) -> Result<(File, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(LogError::io(path))?;
        let len = file.metadata().map_err(LogError::io(path))?.len();
        Ok((file, len))
    }

    /// Opens a sealed segment, trusting its index file when the file is
    /// intact and matches, and otherwise rebuilding it by a full scan, in
    /// which any damage is corruption. Returns whether the index was rebuilt.
    pub(crate) fn open_sealed(
        path: PathBuf,
        base: u64,
        interval: u64,
        max_batch: usize,
    ) -> Result<(Segment, bool)> {
        let (file, file_len) = Segment::open_file(&path)?;
        let idx_path = index_path(&path);
        if let Ok(bytes) = std::fs::read(&idx_path)
            && let Some(sealed) = SealedIndex::decode(&bytes)
            && sealed.segment_len == file_len
            && sealed.next_offset >= base
        {
            let seg = Segment::from_parts(
                path,
                file,
                base,
                file_len,
                sealed.next_offset,
                sealed.max_ts,
                sealed.index,
            );
            return Ok((seg, false));
        }
        let scan = scan(&file, &path, base, file_len, interval, max_batch)?;
        if let Some((pos, err)) = scan.damage {
            return Err(LogError::corrupt(&path, pos, &err));
        }
        let seg = Segment::from_scan(path, file, base, scan);
        seg.write_index()?;
        Ok((seg, true))
    }

    /// Opens the active segment: scans it whole, truncates a torn tail, and
    /// reports damage that is followed by valid data as corruption. Returns
    /// the segment and the number of bytes truncated.
    pub(crate) fn open_active(
        path: PathBuf,
        base: u64,
        interval: u64,
        max_batch: usize,
    ) -> Result<(Segment, u64)> {
        let (file, file_len) = Segment::open_file(&path)?;
        // An index file beside the active segment is stale: it was written
        // when the segment was sealed, and the segment may grow again.
        let _ = std::fs::remove_file(index_path(&path));
        let scan = scan(&file, &path, base, file_len, interval, max_batch)?;
        let mut truncated = 0;
        if let Some((pos, err)) = &scan.damage {
            if let Some(later) =
                find_valid_batch(&file, &path, *pos, file_len, scan.next, max_batch)?
            {
                return Err(LogError::Corrupt {
                    path,
                    position: *pos,
                    reason: format!("{err}, yet a valid batch follows at byte {later}"),
                });
            }
            file.set_len(*pos).map_err(LogError::io(&path))?;
            truncated = file_len - pos;
        }
        // What an earlier process wrote may still be only in the page cache;
        // the log starts out claiming everything is synced, so make it so.
        file.sync_all().map_err(LogError::io(&path))?;
        Ok((Segment::from_scan(path, file, base, scan), truncated))
    }

    /// Records that a batch of `total_len` bytes holding offsets up to `next`
    /// was written at the current end.
    pub(crate) fn advance(&mut self, total_len: u64, next: u64, max_ts: i64, interval: u64) {
        self.index
            .note((self.next - self.base) as u32, self.len, interval);
        self.len += total_len;
        self.next = next;
        self.max_ts = self.max_ts.max(max_ts);
    }

    /// Writes the index file of a sealed segment.
    pub(crate) fn write_index(&self) -> Result<()> {
        let sealed = SealedIndex {
            index: self.index.clone(),
            segment_len: self.len,
            next_offset: self.next,
            max_ts: self.max_ts,
        };
        let idx = index_path(&self.path);
        std::fs::write(&idx, sealed.encode()).map_err(LogError::io(&idx))
    }

    /// Byte position to start reading from to find `offset`.
    pub(crate) fn position_of(&self, offset: u64) -> u64 {
        self.index.lookup(offset.saturating_sub(self.base) as u32)
    }

    /// Deletes the index first, then the segment: a crash in between
    /// leaves a segment without an index, which open rebuilds.
    pub(crate) fn remove_files(&self) -> Result<()> {
        let _ = std::fs::remove_file(index_path(&self.path));
        std::fs::remove_file(&self.path).map_err(LogError::io(&self.path))
    }
}

pub(crate) fn read_at(file: &File, path: &Path, pos: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, pos)
        .map_err(LogError::io(path))?;
    Ok(buf)
}

/// A window of a file held in memory while walking it batch by batch.
struct Window<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// The bytes `[pos, pos + n)`, or `None` when the file ends first.
    fn get(&mut self, pos: u64, n: usize) -> Result<Option<&[u8]>> {
        if pos + n as u64 > self.file_len {
            return Ok(None);
        }
        let end = self.start + self.buf.len() as u64;
        if pos < self.start || pos + n as u64 > end {
            let len = n.max(SCAN_CHUNK).min((self.file_len - pos) as usize);
            self.buf = read_at(self.file, self.path, pos, len)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }
}

/// Walks every batch of a segment from the start, checking checksums and
/// that offsets follow on from `base`; stops at the first damage.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    base: u64,
    file_len: u64,
    interval: u64,
    max_batch: usize,
) -> Result<Scan> {
    let mut w = Window {
        file,
        path,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let (mut len, mut next, mut max_ts) = (0u64, base, i64::MIN);
    let mut index = SparseIndex::default();
    let mut batches = 0;
    let mut damage = None;
    while len < file_len {
        let pos = len;
        let header = match w.get(pos, BATCH_HEADER_LEN)? {
            None => Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: (file_len - pos) as usize,
            }),
            Some(bytes) => batch::peek_header(bytes, max_batch),
        };
        let checked = match header {
            Err(e) => Err(e),
            Ok(h) => match w.get(pos, h.total_len)? {
                None => Err(BatchError::Truncated {
                    needed: h.total_len,
                    available: (file_len - pos) as usize,
                }),
                Some(bytes) => batch::verify(bytes, max_batch),
            },
        };
        match checked {
            Ok(h) if h.base_offset == next => {
                index.note((next - base) as u32, pos, interval);
                len += h.total_len as u64;
                next = h.next_offset();
                max_ts = max_ts.max(h.max_ts);
                batches += 1;
            }
            Ok(_) => {
                damage = Some((pos, BatchError::Malformed("batch offset does not follow")));
                break;
            }
            Err(e) => {
                damage = Some((pos, e));
                break;
            }
        }
    }
    Ok(Scan {
        len,
        next,
        max_ts,
        index,
        batches,
        damage,
    })
}

/// Looks past damage at `from` for any valid batch that continues the log
/// (base offset at least `min_base`). Finding one means the damage is not
/// a torn tail but corruption in the middle of the data.
fn find_valid_batch(
    file: &File,
    path: &Path,
    from: u64,
    file_len: u64,
    min_base: u64,
    max_batch: usize,
) -> Result<Option<u64>> {
    let mut w = Window {
        file,
        path,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let mut pos = from + 1;
    while pos + BATCH_HEADER_LEN as u64 <= file_len {
        let Some(bytes) = w.get(pos, BATCH_HEADER_LEN)? else {
            break;
        };
        if let Ok(h) = batch::peek_header(bytes, max_batch)
            && h.base_offset >= min_base
            && let Some(bytes) = w.get(pos, h.total_len)?
            && batch::verify(bytes, max_batch).is_ok()
        {
            return Ok(Some(pos));
        }
        pos += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let p = log_path(Path::new("/x"), 1234);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000001234.log");
        assert_eq!(parse_name(name), Some(1234));
        for bad in [
            "1234.log",
            "0000000000000000123x.log",
            "00000000000000001234.idx",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
