//! Record batches: the unit that is written, checksummed and read back.
//!
//! A batch is laid out little-endian as
//!
//! ```text
//! offset  size  field
//!      0     4  length        bytes that follow this field (36 + records)
//!      4     4  crc32c        CRC-32C of every byte after this field
//!      8     1  magic         format version, currently 1
//!      9     1  flags         0 (reserved)
//!     10     2  reserved      0
//!     12     8  base_offset   offset of the first record
//!     20     4  record_count  number of records, at least 1
//!     24     8  first_ts      timestamp of the first record (ms since the epoch)
//!     32     8  max_ts        largest record timestamp in the batch
//!     40     …  records
//! ```
//!
//! and each record as
//!
//! ```text
//!   4  length         bytes that follow this field
//!   8  timestamp      ms since the epoch
//!   4  key_length     u32::MAX when there is no key
//!   …  key
//!   2  header_count
//!      per header: 2 name_length, name (UTF-8), 4 value_length, value
//!   4  payload_length
//!   …  payload
//! ```
//!
//! The offset of a record is `base_offset + its index in the batch`. The CRC
//! covers the base offset, so a batch cannot be moved without detection.

use bytes::Bytes;

/// Bytes in a batch header, the length field included.
pub const BATCH_HEADER_LEN: usize = 40;
const MAGIC: u8 = 1;
const NO_KEY: u32 = u32::MAX;
const RECORD_FIXED_LEN: usize = 4 + 8 + 4 + 2 + 4;

/// One message: what a producer appends and a reader gets back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<Header>,
    pub payload: Bytes,
}

/// A named value carried beside a record's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl Record {
    /// A record with a payload and nothing else.
    pub fn new(timestamp: i64, payload: impl Into<Bytes>) -> Self {
        Record {
            timestamp,
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// Bytes this record takes inside a batch.
    pub fn encoded_len(&self) -> usize {
        Record::encoded_len_of(self.key.as_ref(), &self.headers, &self.payload)
    }

    /// Bytes a record of these parts would take inside a batch, for callers
    /// that check sizes before they build records.
    pub fn encoded_len_of(key: Option<&Bytes>, headers: &[Header], payload: &[u8]) -> usize {
        RECORD_FIXED_LEN
            + key.map_or(0, Bytes::len)
            + headers
                .iter()
                .map(|h| 2 + h.name.len() + 4 + h.value.len())
                .sum::<usize>()
            + payload.len()
    }
}

/// A record read back from a log, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub record: Record,
}

/// The fixed fields at the start of every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Bytes of the whole batch, header included.
    pub total_len: usize,
    pub crc: u32,
    pub base_offset: u64,
    pub record_count: u32,
    pub first_ts: i64,
    pub max_ts: i64,
}

impl BatchHeader {
    /// Offset one past the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("length field {0} is impossible")]
    BadLength(u64),
    #[error("unknown format version {0}")]
    BadMagic(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed records: {0}")]
    Malformed(&'static str),
}

/// Encodes `records` as one batch starting at `base_offset`.
///
/// Panics if `records` is empty; callers check that first.
pub fn encode(base_offset: u64, records: &[Record]) -> Vec<u8> {
    let mut buf = encode_unsealed(records);
    rebase(&mut buf, base_offset);
    buf
}

/// Encodes `records` with base offset 0 and no checksum; [`rebase`] finishes
/// the batch once its offset is known.
pub(crate) fn encode_unsealed(records: &[Record]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let body: usize = records.iter().map(Record::encoded_len).sum();
    let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + body);
    let first_ts = records[0].timestamp;
    let max_ts = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(first_ts);
    buf.extend_from_slice(&((BATCH_HEADER_LEN - 4 + body) as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes()); // crc, set by rebase
    buf.extend_from_slice(&[MAGIC, 0, 0, 0]);
    buf.extend_from_slice(&0u64.to_le_bytes()); // base offset, set by rebase
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&first_ts.to_le_bytes());
    buf.extend_from_slice(&max_ts.to_le_bytes());
    for r in records {
        encode_record(&mut buf, r);
    }
    buf
}

fn encode_record(buf: &mut Vec<u8>, r: &Record) {
    buf.extend_from_slice(&((r.encoded_len() - 4) as u32).to_le_bytes());
    buf.extend_from_slice(&r.timestamp.to_le_bytes());
    match &r.key {
        Some(k) => {
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k);
        }
        None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    buf.extend_from_slice(&(r.headers.len() as u16).to_le_bytes());
    for h in &r.headers {
        buf.extend_from_slice(&(h.name.len() as u16).to_le_bytes());
        buf.extend_from_slice(h.name.as_bytes());
        buf.extend_from_slice(&(h.value.len() as u32).to_le_bytes());
        buf.extend_from_slice(&h.value);
    }
    buf.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&r.payload);
}

/// Rewrites the base offset of an encoded batch and recomputes its checksum.
pub fn rebase(buf: &mut [u8], base_offset: u64) {
    buf[12..20].copy_from_slice(&base_offset.to_le_bytes());
    seal(buf);
}

fn seal(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the header at the start of `buf` without checking the checksum.
///
/// `max_len` bounds the length field, so a corrupt length is caught before
/// anything tries to read that many bytes.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        });
    }
    let len = u32_at(buf, 0) as usize;
    if len < BATCH_HEADER_LEN - 4 + RECORD_FIXED_LEN || len + 4 > max_len {
        return Err(BatchError::BadLength(len as u64));
    }
    if buf[8] != MAGIC {
        return Err(BatchError::BadMagic(buf[8]));
    }
    let record_count = u32_at(buf, 20);
    if record_count == 0 {
        return Err(BatchError::Malformed("batch with no records"));
    }
    Ok(BatchHeader {
        total_len: len + 4,
        crc: u32_at(buf, 4),
        base_offset: u64_at(buf, 12),
        record_count,
        first_ts: i64_at(buf, 24),
        max_ts: i64_at(buf, 32),
    })
}

/// Checks the header and checksum of the batch at the start of `buf`.
pub fn verify(buf: &[u8], max_len: usize) -> Result<BatchHeader, BatchError> {
    let header = peek_header(buf, max_len)?;
    if buf.len() < header.total_len {
        return Err(BatchError::Truncated {
            needed: header.total_len,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[8..header.total_len]);
    if computed != header.crc {
        return Err(BatchError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Verifies and decodes the batch at the start of `buf`, returning its
/// header and records. Record fields share `buf`'s memory.
pub fn decode(buf: &Bytes, max_len: usize) -> Result<(BatchHeader, Vec<StoredRecord>), BatchError> {
    let header = verify(buf, max_len)?;
    let mut records = Vec::with_capacity(header.record_count as usize);
    let mut pos = BATCH_HEADER_LEN;
    let end = header.total_len;
    for i in 0..header.record_count {
        let (record, next) = decode_record(buf, pos, end)?;
        records.push(StoredRecord {
            offset: header.base_offset + u64::from(i),
            record,
        });
        pos = next;
    }
    if pos != end {
        return Err(BatchError::Malformed("bytes left after the last record"));
    }
    Ok((header, records))
}

fn decode_record(buf: &Bytes, pos: usize, end: usize) -> Result<(Record, usize), BatchError> {
    let mut c = Cursor { buf, pos, end };
    let len = c.u32()? as usize;
    let record_end = c
        .pos
        .checked_add(len)
        .filter(|&e| e <= end)
        .ok_or(BatchError::Malformed("record length runs past the batch"))?;
    c.end = record_end;
    let timestamp = c.u64()? as i64;
    let key = match c.u32()? {
        NO_KEY => None,
        n => Some(c.bytes(n as usize)?),
    };
    let header_count = c.u16()?;
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let n = c.u16()? as usize;
        let name = c.bytes(n)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| BatchError::Malformed("header name is not UTF-8"))?
            .to_owned();
        let n = c.u32()? as usize;
        let value = c.bytes(n)?;
        headers.push(Header { name, value });
    }
    let n = c.u32()? as usize;
    let payload = c.bytes(n)?;
    if c.pos != record_end {
        return Err(BatchError::Malformed(
            "record length disagrees with its fields",
        ));
    }
    Ok((
        Record {
            timestamp,
            key,
            headers,
            payload,
        },
        record_end,
    ))
}

struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<usize, BatchError> {
        let start = self.pos;
        match start.checked_add(n) {
            Some(e) if e <= self.end => {
                self.pos = e;
                Ok(start)
            }
            _ => Err(BatchError::Malformed("field runs past the record")),
        }
    }
    fn u16(&mut self) -> Result<u16, BatchError> {
        let at = self.take(2)?;
        Ok(u16::from_le_bytes([self.buf[at], self.buf[at + 1]]))
    }
    fn u32(&mut self) -> Result<u32, BatchError> {
        let at = self.take(4)?;
        Ok(u32_at(self.buf, at))
    }
    fn u64(&mut self) -> Result<u64, BatchError> {
        let at = self.take(8)?;
        Ok(u64_at(self.buf, at))
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, BatchError> {
        let at = self.take(n)?;
        Ok(self.buf.slice(at..at + n))
    }
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    u64_at(buf, at) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn sample() -> Vec<Record> {
        vec![
            Record::new(1_700_000_000_000, "hello"),
            Record {
                timestamp: 1_700_000_000_005,
                key: Some(Bytes::from_static(b"gpu-0")),
                headers: vec![Header::new("content-type", "application/json")],
                payload: Bytes::from_static(br#"{"v":1}"#),
            },
            Record {
                timestamp: 1_699_999_999_000,
                key: Some(Bytes::new()),
                headers: vec![Header::new("", ""), Header::new("a", vec![0u8, 255])],
                payload: Bytes::new(),
            },
        ]
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let records = sample();
        let buf = Bytes::from(encode(42, &records));
        let (header, decoded) = decode(&buf, MAX).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.total_len, buf.len());
        assert_eq!(header.first_ts, 1_700_000_000_000);
        assert_eq!(header.max_ts, 1_700_000_000_005);
        let offsets: Vec<u64> = decoded.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [42, 43, 44]);
        let back: Vec<Record> = decoded.into_iter().map(|r| r.record).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn rebase_moves_offsets_and_keeps_checksum_valid() {
        let mut buf = encode(0, &sample());
        rebase(&mut buf, 1000);
        let (header, decoded) = decode(&Bytes::from(buf), MAX).unwrap();
        assert_eq!(header.base_offset, 1000);
        assert_eq!(decoded[2].offset, 1002);
    }

    #[test]
    fn flipping_any_byte_is_detected() {
        let buf = encode(7, &sample());
        for i in 0..buf.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = buf.clone();
                bad[i] ^= bit;
                let result = decode(&Bytes::from(bad), MAX);
                assert!(
                    result.is_err(),
                    "flip of bit {bit:#x} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncated_batches_are_rejected() {
        let buf = encode(7, &sample());
        for cut in 0..buf.len() {
            let err = decode(&Bytes::copy_from_slice(&buf[..cut]), MAX).unwrap_err();
            assert!(
                matches!(err, BatchError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn impossible_lengths_are_rejected_before_reading() {
        let mut buf = encode(7, &sample());
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            peek_header(&buf, MAX),
            Err(BatchError::BadLength(_))
        ));
    }
}
