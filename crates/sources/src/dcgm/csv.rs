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
//! [`MAX_RECORD_BYTES`], a physical line longer than that) is reported with
//! its line and skipped: the reader carries on with the next line, so one
//! damaged row never ends a file.
//!
//! Memory is bounded whatever the input: a line is read at most
//! [`MAX_RECORD_BYTES`] at a time, and the rest of a longer one (a
//! compressed file, a file with no line breaks) is skipped up to the next
//! line break without being held.

use std::io::{self, BufRead, Read as _};

/// The longest record, and the longest physical line, accepted. A stray
/// quote or a file without line breaks would otherwise be read whole into
/// memory.
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
    /// The longest record and the longest line, in bytes.
    limit: usize,
}

/// What reading a physical line gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// A line is in `buf`.
    Read,
    /// The line ran past the limit; it was skipped up to its line break.
    TooLong,
    End,
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R) -> Records<R> {
        Records::with_limit(input, MAX_RECORD_BYTES)
    }

    /// A reader refusing records and lines longer than `limit` bytes.
    pub(crate) fn with_limit(input: R, limit: usize) -> Records<R> {
        Records {
            input,
            line: 0,
            bytes: 0,
            buf: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Bytes of input consumed so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads one physical line into `buf`, at most `limit` bytes of it
    /// (line break included).
    fn next_line(&mut self) -> io::Result<Line> {
        self.buf.clear();
        let most = self.limit as u64 + 1;
        let n = (&mut self.input)
            .take(most)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(Line::End);
        }
        self.bytes += n as u64;
        self.line += 1;
        if n > self.limit && !self.buf.ends_with(b"\n") {
            self.buf.clear();
            self.skip_line()?;
            return Ok(Line::TooLong);
        }
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        Ok(Line::Read)
    }

    /// Consumes input up to and including the next line break, holding
    /// none of it.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            let available = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(());
            }
            let (used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            self.input.consume(used);
            self.bytes += used as u64;
            if done {
                return Ok(());
            }
        }
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
                Ok(Line::Read) => {}
                Ok(Line::TooLong) => {
                    // Name the long line when the record started before it.
                    let (line, which) = match start {
                        0 => (self.line, "the line".to_string()),
                        start => (start, format!("line {}", self.line)),
                    };
                    return Some(Read::Bad {
                        line,
                        reason: format!(
                            "{which} runs past {} without a line break (not a CSV file?)",
                            size_text(self.limit)
                        ),
                    });
                }
                Ok(Line::End) if start == 0 => return None,
                Ok(Line::End) => {
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
                if size > self.limit {
                    return Some(Read::Bad {
                        line: start,
                        reason: format!(
                            "a quoted field runs past {} (an unclosed quote?)",
                            size_text(self.limit)
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

/// `1024 KiB`, or `100 bytes` below a KiB.
fn size_text(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
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
        check_with(MAX_RECORD_BYTES, input, want);
    }

    /// [`check`] with records and lines of at most `limit` bytes.
    fn check_with(limit: usize, input: &[u8], want: &[&str]) {
        let mut records = Records::with_limit(input, limit);
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

    #[test]
    fn overlong_lines_are_reported_and_skipped() {
        let long = |n: usize| vec![b'x'; n];
        let too_long = "runs past 16 bytes without a line break (not a CSV file?)";
        let cases: [(Vec<u8>, Vec<String>); 5] = [
            // 16 bytes and the line break fit; 17 do not.
            (
                [&long(16)[..], b"\na,b\n"].concat(),
                vec!["1: xxxxxxxxxxxxxxxx".into(), "2: a|b".into()],
            ),
            (
                [b"a,b\n", &long(17)[..], b"\nc,d\n"].concat(),
                vec![
                    "1: a|b".into(),
                    format!("2: bad: the line {too_long}"),
                    "3: c|d".into(),
                ],
            ),
            // The last line, without a line break.
            (
                [b"a,b\n", &long(100)[..]].concat(),
                vec!["1: a|b".into(), format!("2: bad: the line {too_long}")],
            ),
            // Inside a quoted field: the record is named by its first line.
            (
                [b"\"a\n", &long(40)[..], b"\nc,d\n"].concat(),
                vec![format!("1: bad: line 2 {too_long}"), "3: c|d".into()],
            ),
            (
                [&long(20)[..], b"\r\n", &long(20)[..], b"\r\n"].concat(),
                vec![
                    format!("1: bad: the line {too_long}"),
                    format!("2: bad: the line {too_long}"),
                ],
            ),
        ];
        for (input, want) in cases {
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            check_with(16, &input, &want);
        }
    }

    #[test]
    fn a_line_of_megabytes_is_never_held_whole() {
        let mut input = b"a,b\n".to_vec();
        input.resize(input.len() + 8 * MAX_RECORD_BYTES, b'x');
        input.extend_from_slice(b"\nc,d\n");
        let mut records = Records::new(&input[..]);
        let mut got = Vec::new();
        while let Some(read) = records.next_record() {
            got.push(match read {
                Read::Record(r) => format!("{}: {}", r.line, r.fields.join("|")),
                Read::Bad { line, reason } => format!("{line}: bad: {reason}"),
                Read::Failed(e) => format!("failed: {e}"),
            });
            assert!(records.buf.capacity() <= 2 * MAX_RECORD_BYTES + 2);
        }
        assert_eq!(
            got,
            [
                "1: a|b",
                "2: bad: the line runs past 1024 KiB without a line break (not a CSV file?)",
                "3: c|d"
            ]
        );
        assert_eq!(records.bytes(), input.len() as u64);
    }
}
