//! A small RFC 4180 record reader over `BufRead`.
//!
//! Fields are separated by commas and records by LF or CRLF. A field that
//! starts with `"` is quoted: it ends at the next lone `"`, a doubled `""`
//! inside it is one quote, and it may hold commas and line breaks (kept as
//! they are in the file). A quote inside an unquoted field is kept as a
//! plain character, as most writers and readers do. Blank lines are not
//! records. A UTF-8 byte order mark before the first record is skipped.
//!
//! Line numbers count physical lines from 1; a record is named by the line
//! it starts on. A record that cannot be read (text after a closing quote,
//! bytes that are not UTF-8, a quoted field never closed within
//! [`MAX_RECORD_BYTES`]) is reported with its line and skipped: the reader
//! carries on with the next line, so one damaged row never ends a file.

use std::io::{self, BufRead};

/// The longest record accepted. A stray quote would otherwise swallow the
/// rest of the file into one field held in memory.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;

/// One record: its fields and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) line: u64,
    pub(crate) fields: Vec<String>,
}

/// What reading the next record gave.
#[derive(Debug)]
pub(crate) enum Read {
    Record(Record),
    /// A record that cannot be read, skipped: its line and why.
    Bad {
        line: u64,
        reason: String,
    },
    /// The input failed; nothing more can be read.
    Failed(io::Error),
}

/// Where the parser is inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    FieldStart,
    Unquoted,
    Quoted,
    /// Just read a `"` inside a quoted field: a doubled quote or the end.
    QuoteInQuoted,
}

/// Reads records one at a time.
#[derive(Debug)]
pub(crate) struct Records<R> {
    input: R,
    /// Physical lines read so far.
    line: u64,
    /// Bytes read so far, for progress.
    bytes: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R) -> Records<R> {
        Records {
            input,
            line: 0,
            bytes: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes of input consumed so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads one physical line into `buf`; false at the end of the input.
    fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let n = self.input.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        self.bytes += n as u64;
        self.line += 1;
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        Ok(true)
    }

    /// The next record, or `None` at the end of the input.
    pub(crate) fn next_record(&mut self) -> Option<Read> {
        let mut fields: Vec<String> = Vec::new();
        let mut field: Vec<u8> = Vec::new();
        let mut state = State::FieldStart;
        let mut start = 0;
        let mut size = 0;
        let mut error: Option<String> = None;
        loop {
            match self.next_line() {
                Ok(true) => {}
                Ok(false) if start == 0 => return None,
                Ok(false) => {
                    return Some(Read::Bad {
                        line: start,
                        reason: "a quoted field is never closed".into(),
                    });
                }
                Err(e) => return Some(Read::Failed(e)),
            }
            let (content, ending) = split_line_ending(&self.buf);
            if start == 0 {
                if content.iter().all(|&b| b == b' ' || b == b'\t') {
                    continue; // a blank line is not a record
                }
                start = self.line;
            }
            size += self.buf.len();
            for &b in content {
                state = match (state, b) {
                    (State::FieldStart, b'"') => State::Quoted,
                    (State::FieldStart | State::Unquoted, b',') => {
                        end_field(&mut fields, &mut field, &mut error);
                        State::FieldStart
                    }
                    (State::FieldStart | State::Unquoted, _) => {
                        field.push(b);
                        State::Unquoted
                    }
                    (State::Quoted, b'"') => State::QuoteInQuoted,
                    (State::Quoted, _) => {
                        field.push(b);
                        State::Quoted
                    }
                    (State::QuoteInQuoted, b'"') => {
                        field.push(b'"');
                        State::Quoted
                    }
                    (State::QuoteInQuoted, b',') => {
                        end_field(&mut fields, &mut field, &mut error);
                        State::FieldStart
                    }
                    (State::QuoteInQuoted, other) => {
                        let col = fields.len() + 1;
                        return Some(Read::Bad {
                            line: start,
                            reason: format!(
                                "field {col}: {:?} after a closing quote",
                                char::from(other)
                            ),
                        });
                    }
                };
            }
            if state == State::Quoted {
                if size > MAX_RECORD_BYTES {
                    return Some(Read::Bad {
                        line: start,
                        reason: format!(
                            "a quoted field runs past {} KiB (an unclosed quote?)",
                            MAX_RECORD_BYTES >> 10
                        ),
                    });
                }
                field.extend_from_slice(ending);
                continue;
            }
            end_field(&mut fields, &mut field, &mut error);
            return Some(match error {
                Some(reason) => Read::Bad {
                    line: start,
                    reason,
                },
                None => Read::Record(Record {
                    line: start,
                    fields,
                }),
            });
        }
    }
}

/// A line without its ending (`\n` or `\r\n`), and the ending.
fn split_line_ending(line: &[u8]) -> (&[u8], &[u8]) {
    let cut = if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    };
    line.split_at(line.len() - cut)
}

fn end_field(fields: &mut Vec<String>, field: &mut Vec<u8>, error: &mut Option<String>) {
    let bytes = std::mem::take(field);
    match String::from_utf8(bytes) {
        Ok(text) => fields.push(text),
        Err(_) => {
            if error.is_none() {
                *error = Some(format!("field {} is not UTF-8", fields.len() + 1));
            }
            fields.push(String::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `input`, as `line: field|field` or `line: bad: why`.
    fn check(input: &[u8], want: &[&str]) {
        let mut records = Records::new(input);
        let mut got = Vec::new();
        while let Some(read) = records.next_record() {
            got.push(match read {
                Read::Record(r) => format!("{}: {}", r.line, r.fields.join("|")),
                Read::Bad { line, reason } => format!("{line}: bad: {reason}"),
                Read::Failed(e) => format!("failed: {e}"),
            });
        }
        assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        assert_eq!(records.bytes(), input.len() as u64);
    }

    #[test]
    fn reads_rfc_4180() {
        check(b"a,b,c\n1,2,3\n", &["1: a|b|c", "2: 1|2|3"]);
        check(b"a,b\r\n1,2\r\n", &["1: a|b", "2: 1|2"]);
        check(b"a,b\n1,2", &["1: a|b", "2: 1|2"]);
        check(b"a,,\n,,\n", &["1: a||", "2: ||"]);
        check(b"\"a\",\"\"\n", &["1: a|"]);
        check(b"\"say \"\"hi\"\"\",x\n", &["1: say \"hi\"|x"]);
        check(b"\"a,b\",c\n", &["1: a,b|c"]);
        check(b"ab\"c,d\n", &["1: ab\"c|d"]);
        check(b"\xEF\xBB\xBFa,b\n", &["1: a|b"]);
        check(b"", &[]);
    }

    #[test]
    fn quoted_fields_span_lines_and_records_keep_their_first_line() {
        check(
            b"h\n\"one\ntwo\",x\nnext,y\n",
            &["1: h", "2: one\ntwo|x", "4: next|y"],
        );
        check(b"\"a\r\nb\",c\r\nd,e\r\n", &["1: a\r\nb|c", "3: d|e"]);
        check(b"a\n\n  \nb\n", &["1: a", "4: b"]);
    }

    #[test]
    fn damaged_records_are_reported_and_skipped() {
        check(
            b"a,b\n\"x\"y,z\nc,d\n",
            &[
                "1: a|b",
                "2: bad: field 1: 'y' after a closing quote",
                "3: c|d",
            ],
        );
        check(
            b"a,\xff\xfe\nc,d\n",
            &["1: bad: field 2 is not UTF-8", "2: c|d"],
        );
        check(
            b"a,b\n\"never closed,x\nc,d\n",
            &["1: a|b", "2: bad: a quoted field is never closed"],
        );
    }

    #[test]
    fn a_runaway_quote_is_cut_off() {
        let mut input = b"\"open\n".to_vec();
        let line = [b'x'; 1000];
        for _ in 0..(MAX_RECORD_BYTES / 1000 + 2) {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        input.extend_from_slice(b"\"\nafter,1\n");
        let mut records = Records::new(&input[..]);
        let Some(Read::Bad { line, reason }) = records.next_record() else {
            panic!("the runaway record is reported");
        };
        assert_eq!(line, 1);
        assert!(reason.contains("unclosed quote"), "{reason}");
    }
}
