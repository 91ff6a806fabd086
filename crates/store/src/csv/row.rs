//! A batch as CSV rows: one buffer per kind of record and UTC day, each
//! field quoted only where RFC 4180 needs it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write as _;

use weir_telemetry::time::format_timestamp;

use crate::{Batch, JobFailure, JobResult, Result, StoreError};

/// The last time RFC 3339 can write (9999-12-31T23:59:59.999Z), in
/// milliseconds since the epoch; `format_timestamp` clamps to `0..=LAST`.
const LAST: i64 = 253_402_300_799_999;

/// What a file holds, which decides its name and header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Samples,
    Results,
    Failures,
}

impl Kind {
    pub(super) fn header(self) -> &'static str {
        match self {
            Kind::Samples => "ts,metric,value,labels",
            Kind::Results => {
                "job_id,pow,tam,init,comp,fim,tot,engine,threads,correct,generations,worker,finished_at"
            }
            Kind::Failures => "job_id,reason,error,worker,job,failed_at",
        }
    }

    /// The file of `day` (`YYYY-MM-DD`) in a topic's directory.
    pub(super) fn file_name(self, day: &str) -> String {
        match self {
            Kind::Samples => format!("{day}.csv"),
            Kind::Results => format!("{day}.results.csv"),
            Kind::Failures => format!("{day}.failures.csv"),
        }
    }
}

/// The rows of one kind and day, ready to append: `buf` starts with the
/// header line, which is written only when the file is new.
#[derive(Debug)]
pub(super) struct Rows {
    pub(super) kind: Kind,
    /// `YYYY-MM-DD`.
    pub(super) day: String,
    pub(super) buf: Vec<u8>,
    /// Length of the header line at the start of `buf`.
    pub(super) header_len: usize,
    pub(super) count: u64,
}

impl Rows {
    fn new(kind: Kind, day: &[u8; 10]) -> Rows {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(kind.header().as_bytes());
        buf.push(b'\n');
        Rows {
            kind,
            day: String::from_utf8_lossy(day).into_owned(),
            header_len: buf.len(),
            buf,
            count: 0,
        }
    }

    /// The bytes to append to a file already `len` bytes long.
    pub(super) fn bytes_for(&self, len: u64) -> &[u8] {
        if len == 0 {
            &self.buf
        } else {
            &self.buf[self.header_len..]
        }
    }
}

/// The batch's rows by kind and by the UTC day of each record's own time.
/// Refuses the whole batch if a time cannot be written in RFC 3339.
pub(super) fn encode(batch: &Batch) -> Result<Vec<Rows>> {
    let mut groups: BTreeMap<(Kind, [u8; 10]), Rows> = BTreeMap::new();
    let mut labels = Vec::new();
    for s in &batch.samples {
        let ts = time(s.ts, || format!("sample {:?}", s.metric))?;
        let rows = group(&mut groups, Kind::Samples, &ts);
        let out = &mut rows.buf;
        push_field(out, ts.as_bytes());
        out.push(b',');
        push_field(out, s.metric.as_bytes());
        out.push(b',');
        push_num(out, s.value);
        out.push(b',');
        labels.clear();
        serde_json::to_writer(&mut labels, &s.labels).expect("a map of strings is JSON");
        push_field(out, &labels);
        out.push(b'\n');
        rows.count += 1;
    }
    for r in &batch.results {
        let ts = time(r.finished_at, || {
            format!("result of job {:?} pow {}", r.job_id, r.pow)
        })?;
        let rows = group(&mut groups, Kind::Results, &ts);
        push_result(&mut rows.buf, r, &ts);
        rows.count += 1;
    }
    for f in &batch.failures {
        let ts = time(f.failed_at, || format!("failure of job {:?}", f.job_id))?;
        let rows = group(&mut groups, Kind::Failures, &ts);
        push_failure(&mut rows.buf, f, &ts);
        rows.count += 1;
    }
    Ok(groups.into_values().collect())
}

fn group<'a>(
    groups: &'a mut BTreeMap<(Kind, [u8; 10]), Rows>,
    kind: Kind,
    ts: &str,
) -> &'a mut Rows {
    let day: [u8; 10] = ts.as_bytes()[..10]
        .try_into()
        .expect("an RFC 3339 time starts with its date");
    groups
        .entry((kind, day))
        .or_insert_with(|| Rows::new(kind, &day))
}

/// `ms` as RFC 3339, or why it cannot be written without changing it.
fn time(ms: i64, what: impl FnOnce() -> String) -> Result<String> {
    if (0..=LAST).contains(&ms) {
        Ok(format_timestamp(ms))
    } else {
        Err(StoreError::Invalid(format!(
            "{} at {ms} ms since the epoch: the CSV sink writes times as RFC 3339, \
             which holds 1970-01-01 to 9999-12-31",
            what()
        )))
    }
}

fn push_result(out: &mut Vec<u8>, r: &JobResult, ts: &str) {
    push_field(out, r.job_id.as_bytes());
    for n in [r.pow.into(), r.tam] {
        out.push(b',');
        push_num(out, n);
    }
    for x in [r.init, r.comp, r.fim, r.tot] {
        out.push(b',');
        push_num(out, x);
    }
    out.push(b',');
    push_field(out, r.engine.as_bytes());
    out.push(b',');
    push_num(out, r.threads);
    out.push(b',');
    push_num(out, r.correct);
    out.push(b',');
    push_num(out, r.generations);
    out.push(b',');
    push_field(out, r.worker.as_bytes());
    out.push(b',');
    push_field(out, ts.as_bytes());
    out.push(b'\n');
}

fn push_failure(out: &mut Vec<u8>, f: &JobFailure, ts: &str) {
    for field in [&f.job_id, &f.reason, &f.error, &f.worker, &f.job] {
        push_field(out, field.as_bytes());
        out.push(b',');
    }
    push_field(out, ts.as_bytes());
    out.push(b'\n');
}

/// A number or boolean by `Display`: for floats the shortest text that
/// parses back to the same value, never quoted (no `,`, `"` or newline).
fn push_num(out: &mut Vec<u8>, x: impl Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{x}");
}

/// One field, quoted (inner quotes doubled) when it holds `,`, `"`, CR or
/// LF, as RFC 4180 says; otherwise as it is.
pub(super) fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    if !field
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use weir_telemetry::Sample;

    use super::*;
    use crate::Record;

    fn check(field: &str, want: &str) {
        let mut out = Vec::new();
        push_field(&mut out, field.as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), want, "field {field:?}");
    }

    #[test]
    fn csv_fields_are_quoted_only_where_rfc_4180_needs_it() {
        check("", "");
        check("plain", "plain");
        check("with space", "with space");
        check("temp °C ✓", "temp °C ✓");
        check("a,b", r#""a,b""#);
        check(r#"say "hi""#, r#""say ""hi""""#);
        check(r#"""#, r#""""""#);
        check("one\ntwo", "\"one\ntwo\"");
        check("cr\r", "\"cr\r\"");
        check(r#"{"a":"b","c":"d"}"#, r#""{""a"":""b"",""c"":""d""}""#);
    }

    #[test]
    fn csv_rows_go_to_one_buffer_per_kind_and_day() {
        let t0 = 1_752_871_354_123;
        let mut batch = Batch::new("t");
        for s in [
            Sample::new("m", 0.1 + 0.2, t0).label("k", "v,w"),
            Sample::new("m", 1e21, t0 + 86_400_000),
            Sample::new("m", -0.5, t0 + 1),
        ] {
            batch.push(Record::Sample(s));
        }
        let groups = encode(&batch).unwrap();
        let got: Vec<(Kind, &str, u64, &str)> = groups
            .iter()
            .map(|g| {
                let text = std::str::from_utf8(&g.buf).unwrap();
                (g.kind, g.day.as_str(), g.count, text)
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    Kind::Samples,
                    "2025-07-18",
                    2,
                    "ts,metric,value,labels\n\
                     2025-07-18T20:42:34.123Z,m,0.30000000000000004,\"{\"\"k\"\":\"\"v,w\"\"}\"\n\
                     2025-07-18T20:42:34.124Z,m,-0.5,{}\n"
                ),
                (
                    Kind::Samples,
                    "2025-07-19",
                    1,
                    "ts,metric,value,labels\n2025-07-19T20:42:34.123Z,m,1000000000000000000000,{}\n"
                ),
            ]
        );
        assert_eq!(groups[0].bytes_for(0), groups[0].buf);
        assert!(
            groups[0]
                .bytes_for(9)
                .starts_with(b"2025-07-18T20:42:34.123Z")
        );
    }

    #[test]
    fn csv_times_rfc_3339_cannot_hold_are_refused() {
        let mut batch = Batch::new("t");
        batch.push(Record::Sample(Sample::new("m", 1.0, -1)));
        let e = encode(&batch).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("sample \"m\" at -1 ms"), "{e}");
    }
}
