//! The reading side of a replay: passes over the file on tokio's blocking
//! pool, sent in chunks of rows through a bounded channel, so a file is
//! never held in memory and a slow bus slows the reading down.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use tokio::sync::mpsc;

use super::ReplayError;
use crate::dcgm::{BadRow, Reader, Row, RowError};

/// Rows per chunk.
const CHUNK_ROWS: usize = 512;

pub(super) fn open_reader(path: &Path) -> Result<Reader<BufReader<File>>, ReplayError> {
    let file = File::open(path).map_err(|source| ReplayError::Open {
        path: path.display().to_string(),
        source,
    })?;
    Reader::new(BufReader::with_capacity(64 << 10, file)).map_err(|source| ReplayError::Dcgm {
        path: path.display().to_string(),
        source,
    })
}

/// Rows of one pass, in file order, with how far into the file they reach.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) pass: u64,
    pub(super) items: Vec<Result<Row, BadRow>>,
    /// Bytes of the file read up to the chunk's last row.
    pub(super) bytes: u64,
    /// The last chunk of its pass.
    pub(super) end: bool,
}

/// The reading thread: every pass over the file, in chunks, until the
/// passes are done, the file fails, or the receiver is gone.
pub(super) fn read_passes(
    path: &Path,
    passes: Option<u64>,
    tx: &mpsc::Sender<Result<Chunk, ReplayError>>,
) {
    for pass in 1.. {
        if passes.is_some_and(|n| pass > n) {
            return;
        }
        let mut reader = match open_reader(path) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut items = Vec::with_capacity(CHUNK_ROWS);
        loop {
            let next = reader.next();
            let end = next.is_none();
            match next {
                None => {}
                Some(Ok(row)) => items.push(Ok(row)),
                Some(Err(RowError::Bad(bad))) => items.push(Err(bad)),
                Some(Err(RowError::Read(source))) => {
                    let path = path.display().to_string();
                    let _ = tx.blocking_send(Err(ReplayError::Dcgm { path, source }));
                    return;
                }
            }
            if end || items.len() == CHUNK_ROWS {
                let chunk = Chunk {
                    pass,
                    items: std::mem::replace(&mut items, Vec::with_capacity(CHUNK_ROWS)),
                    bytes: reader.bytes(),
                    end,
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            if end {
                break;
            }
        }
    }
}
