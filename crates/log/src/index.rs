//! The sparse offset index of a segment.
//!
//! In memory it is a list of `(relative offset, byte position)` pairs, one per
//! `index_interval_bytes` of batches, each pointing at the start of a batch.
//! It is written to disk only when a segment is sealed, as a `.idx` file:
//!
//! ```text
//! entries      8 bytes each: u32 relative offset, u32 position
//! footer  32:  u64 segment length, u64 next offset, i64 max timestamp,
//!              u32 magic "WIDX", u32 CRC-32C of every byte before it
//! ```
//!
//! The footer ties the index to the segment it describes: an index whose
//! checksum fails, or whose segment length differs from the segment file, is
//! ignored and rebuilt by scanning the segment.

use crate::batch::{u32_at, u64_at};

const FOOTER_LEN: usize = 32;
const MAGIC: u32 = u32::from_le_bytes(*b"WIDX");

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<(u32, u32)>,
    /// Position of the last entry, while the index is still growing.
    last_position: Option<u64>,
}

/// What a sealed segment's index file says about the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedIndex {
    pub(crate) index: SparseIndex,
    pub(crate) segment_len: u64,
    pub(crate) next_offset: u64,
    pub(crate) max_ts: i64,
}

impl SparseIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        self.entries.push((relative_offset, position));
        self.last_position = Some(u64::from(position));
    }

    /// Notes a batch starting at `position`, adding an entry when the last
    /// one is at least `interval` bytes back (or there is none).
    pub(crate) fn note(&mut self, relative_offset: u32, position: u64, interval: u64) {
        if self
            .last_position
            .is_none_or(|last| position - last >= interval)
        {
            self.push(relative_offset, position as u32);
        }
    }

    /// Position of the last indexed batch starting at or before
    /// `relative_offset`, or 0.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u64 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 {
            0
        } else {
            u64::from(self.entries[i - 1].1)
        }
    }
}

impl SealedIndex {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.index.entries.len() * 8 + FOOTER_LEN);
        for &(o, p) in &self.index.entries {
            buf.extend_from_slice(&o.to_le_bytes());
            buf.extend_from_slice(&p.to_le_bytes());
        }
        buf.extend_from_slice(&self.segment_len.to_le_bytes());
        buf.extend_from_slice(&self.next_offset.to_le_bytes());
        buf.extend_from_slice(&self.max_ts.to_le_bytes());
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes an index file; `None` when it is damaged in any way.
    pub(crate) fn decode(buf: &[u8]) -> Option<SealedIndex> {
        if buf.len() < FOOTER_LEN || !(buf.len() - FOOTER_LEN).is_multiple_of(8) {
            return None;
        }
        let f = buf.len() - FOOTER_LEN;
        if u32_at(buf, f + 24) != MAGIC || u32_at(buf, f + 28) != crc32c::crc32c(&buf[..f + 28]) {
            return None;
        }
        let entries: Vec<(u32, u32)> = buf[..f]
            .chunks_exact(8)
            .map(|c| (u32_at(c, 0), u32_at(c, 4)))
            .collect();
        let sorted = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let segment_len = u64_at(buf, f);
        let inside = entries.iter().all(|&(_, p)| u64::from(p) < segment_len);
        let last_position = entries.last().map(|&(_, p)| u64::from(p));
        (sorted && inside).then(|| SealedIndex {
            index: SparseIndex {
                entries,
                last_position,
            },
            segment_len,
            next_offset: u64_at(buf, f + 8),
            max_ts: u64_at(buf, f + 16) as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedIndex {
        let mut index = SparseIndex::default();
        index.push(0, 0);
        index.push(100, 4096);
        index.push(250, 9000);
        SealedIndex {
            index,
            segment_len: 12_000,
            next_offset: 300,
            max_ts: 1_700_000_000_000,
        }
    }

    #[test]
    fn lookup_finds_the_last_entry_at_or_before() {
        let idx = sample().index;
        let cases = [
            (0, 0),
            (99, 0),
            (100, 4096),
            (249, 4096),
            (250, 9000),
            (999, 9000),
        ];
        for (offset, want) in cases {
            assert_eq!(idx.lookup(offset), want, "offset {offset}");
        }
        assert_eq!(SparseIndex::default().lookup(5), 0);
    }

    #[test]
    fn round_trip_and_any_flip_is_rejected() {
        let s = sample();
        let buf = s.encode();
        assert_eq!(SealedIndex::decode(&buf), Some(s));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert_eq!(SealedIndex::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(SealedIndex::decode(&buf[..buf.len() - 1]), None);
    }
}
