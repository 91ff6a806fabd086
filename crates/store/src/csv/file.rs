//! Opening a day's file to append to: created with its parent directory
//! synced, or, when it exists, its header checked and a torn tail left by a
//! crash cut at the last record boundary.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::{io_error, sync_dir};
use crate::{Result, StoreError};

/// Bytes read at a time by the boundary scan.
const CHUNK: usize = 1 << 20;

/// How much of a file's start is read to find its header line.
const HEAD: u64 = 64 * 1024;

/// A file open for appending.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) file: File,
    /// Its length: every byte of it is whole records (and the header).
    pub(super) len: u64,
}

/// Opens `path` for appending rows under `header`, creating it if missing.
/// An existing file is checked and repaired unless it is `known_len` long
/// (this process checked it before and nobody else writes here).
pub(super) fn open(path: &Path, header: &str, known_len: Option<u64>) -> Result<Opened> {
    let mut options = File::options();
    options.read(true).append(true);
    let file = match options.clone().create_new(true).open(path) {
        Ok(file) => {
            let dir = path
                .parent()
                .expect("a day's file is in its topic's directory");
            sync_dir(dir)?;
            return Ok(Opened { file, len: 0 });
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options
            .open(path)
            .map_err(|e| io_error("opening", path, e))?,
        Err(e) => return Err(io_error("creating", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| io_error("reading the size of", path, e))?
        .len();
    if len == 0 || known_len == Some(len) {
        return Ok(Opened { file, len });
    }
    let complete_header = check_header(&file, path, header, len)?;
    let keep = if complete_header {
        (&file)
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_error("reading", path, e))?;
        let scan = scan(&file, CHUNK).map_err(|e| io_error("reading", path, e))?;
        scan.boundary
    } else {
        0
    };
    if keep < len {
        tracing::warn!(
            file = %path.display(),
            dropped = len - keep,
            "cutting a torn tail left by a crash: the last row was not written whole \
             (its batch was not acknowledged, so it is delivered again)"
        );
        file.set_len(keep)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("cutting the torn tail of", path, e))?;
    }
    Ok(Opened { file, len: keep })
}

/// Whether the file starts with the whole `header` line (`true`) or with
/// part of it and nothing else, a header torn by a crash (`false`);
/// anything else is another file than this sink would write there.
fn check_header(file: &File, path: &Path, header: &str, len: u64) -> Result<bool> {
    let mut head = Vec::new();
    file.take(HEAD)
        .read_to_end(&mut head)
        .map_err(|e| io_error("reading", path, e))?;
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(end) => &head[..end],
        None => {
            let whole = head.len() as u64 == len;
            let torn = whole && header.as_bytes().starts_with(&head);
            if torn {
                return Ok(false);
            }
            &head[..]
        }
    };
    if line == header.as_bytes() {
        return Ok(true);
    }
    let mut shown = String::from_utf8_lossy(line).into_owned();
    if shown.len() > 200 {
        let cut = shown.floor_char_boundary(200);
        shown.truncate(cut);
        shown.push('…');
    }
    Err(StoreError::Fatal(format!(
        "{}: its header is {shown:?} but this sink writes {header:?} there; \
         move the file away or write to another directory",
        path.display()
    )))
}

/// Where a file's records end, by RFC 4180: a newline ends a record exactly
/// when an even number of `"` come before it (a newline inside a quoted
/// field has an odd number before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scan {
    pub(super) len: u64,
    /// Just past the last newline that ends a record; 0 if none does.
    pub(super) boundary: u64,
}

/// Reads `r` to its end, `chunk` bytes at a time. Each chunk costs one
/// count of its quotes (vectorised) and a walk back from its end to its
/// last record boundary, which is near the end in any file of rows.
pub(super) fn scan(mut r: impl Read, chunk: usize) -> io::Result<Scan> {
    let mut buf = vec![0; chunk.max(1)];
    let mut offset = 0u64;
    let mut odd = false;
    let mut boundary = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        let quotes = data.iter().filter(|&&b| b == b'"').count();
        let odd_at_end = odd ^ (quotes % 2 == 1);
        // Walking back, `odd` before byte i is `odd` after it, flipped by a
        // quote; a newline is not a quote, so its parity is the one after.
        let mut odd_after = odd_at_end;
        for (i, &b) in data.iter().enumerate().rev() {
            match b {
                b'"' => odd_after = !odd_after,
                b'\n' if !odd_after => {
                    boundary = offset + i as u64 + 1;
                    break;
                }
                _ => {}
            }
        }
        odd = odd_at_end;
        offset += n as u64;
    }
    Ok(Scan {
        len: offset,
        boundary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` written with `|` where the last record boundary is (at the
    /// end when there is none), scanned in chunks of every size up to its
    /// length, so boundaries and quotes fall on every chunk edge.
    fn check(text: &str) {
        let marked = text.find('|');
        let bytes = text.replace('|', "");
        let want = Scan {
            len: bytes.len() as u64,
            boundary: marked.unwrap_or(bytes.len()) as u64,
        };
        for chunk in 1..=bytes.len().max(1) + 1 {
            let got = scan(bytes.as_bytes(), chunk).unwrap();
            assert_eq!(got, want, "{text:?} in chunks of {chunk}");
        }
    }

    #[test]
    fn csv_scan_finds_the_last_record_boundary() {
        check("");
        check("|a,b");
        check("a,b\n");
        check("a,b\nc,d\n");
        check("a,b\n|c,d");
        check("a,b\n|\"c");
        check("a,b\n|\"c\n");
        check("a,b\n|\"c\nd\n");
        check("a,\"b\nc\"\n");
        check("a,\"b\nc\"\n|d,\"e\n");
        check("a,\"b\"\"\nc\"\"\"\n|d,\"\"\"\n");
        check("a,\"\"\"\"\n");
        check("h\n|\"\"\"");
        check("h\n\"x\ny\"\n\"z\"\n");
        check("h\n|\r");
        check("\n\n\n");
    }

    #[test]
    fn csv_header_is_checked_and_a_torn_header_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let header = "ts,metric,value,labels";
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("ts,metric,value,labels\n", Ok(true)),
            ("ts,metric,value,labels\n1,2,3,4\n", Ok(true)),
            ("ts,metric,value,labels\n1,2,3", Ok(true)),
            ("ts,met", Ok(false)),
            ("ts,metric,value,labels", Ok(false)),
            (
                "ts,metric,value\n",
                Err(r#"its header is "ts,metric,value""#),
            ),
            ("ts,metric,value,labels,extra\n", Err("extra")),
            ("time", Err(r#"its header is "time""#)),
            (
                "ts,metric,value,labels\r\n",
                Err(r#""ts,metric,value,labels\r""#),
            ),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{i}.csv"));
            std::fs::write(&path, content).unwrap();
            let file = File::open(&path).unwrap();
            let got = check_header(&file, &path, header, content.len() as u64);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{content:?}"),
                (Err(e), Err(fragment)) => {
                    let text = e.to_string();
                    assert!(text.contains(fragment), "{content:?}: {text}");
                    assert!(text.contains(&path.display().to_string()), "{text}");
                    assert!(text.contains(header), "{text}");
                }
                (got, want) => panic!("{content:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
