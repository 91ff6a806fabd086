//! The CSV sink: the contract suite over a fresh directory, read back by a
//! small RFC 4180 parser of this file's own, then its own cases (torn
//! tails, foreign headers, days and kinds of files, the directory lock,
//! unsafe topics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_store::csv::CsvSink;
use weir_store::{Batch, JobFailure, JobResult, Record, Sink, StoreError, StoreOptions};
use weir_telemetry::Sample;
use weir_telemetry::time::{format_timestamp, parse_timestamp};

use crate::contract::{Fixture, Probe, Row, UsageRow};

const SAMPLES_HEADER: &str = "ts,metric,value,labels";
const RESULTS_HEADER: &str =
    "job_id,pow,tam,init,comp,fim,tot,engine,threads,correct,generations,worker,finished_at";
const FAILURES_HEADER: &str = "job_id,reason,error,worker,job,failed_at";

/// 2025-07-18T20:42:34Z.
const T0: i64 = 1_752_871_354_000;
const DAY: i64 = 86_400_000;

pub(crate) async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    Fixture {
        url: format!("csv://{}", root.display()),
        options: StoreOptions::default(),
        probe: Box::new(CsvProbe { root }),
        guard: Box::new(dir),
    }
}

crate::sink_contract!(fresh);

/// Reads every file under the sink's directory.
struct CsvProbe {
    root: PathBuf,
}

#[async_trait::async_trait]
impl Probe for CsvProbe {
    async fn samples(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = read_all(&self.root).samples;
        rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        rows
    }

    async fn results(&self) -> Vec<JobResult> {
        let mut results = read_all(&self.root).results;
        results.sort_by(|a, b| (&a.job_id, a.pow).cmp(&(&b.job_id, b.pow)));
        results
    }

    async fn failures(&self) -> Vec<JobFailure> {
        let mut failures = read_all(&self.root).failures;
        failures.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        failures
    }

    async fn usage(&self) -> Option<Vec<UsageRow>> {
        None
    }

    async fn series_count(&self) -> Option<usize> {
        None
    }
}

/// Everything stored under a sink's directory.
#[derive(Debug, Default)]
struct Stored {
    samples: Vec<Row>,
    results: Vec<JobResult>,
    failures: Vec<JobFailure>,
}

/// Parses every file under `root`, checking each one's header and that
/// each row's time falls on the file's day.
fn read_all(root: &Path) -> Stored {
    let mut stored = Stored::default();
    for file in csv_files(root) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let day = &name[..10];
        let text = std::fs::read_to_string(&file).unwrap();
        let records = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (header, rows) = records.split_first().expect("a header");
        let on_day = |ts: i64| {
            assert_eq!(&format_timestamp(ts)[..10], day, "{}", file.display());
            ts
        };
        if name.ends_with(".results.csv") {
            assert_eq!(header.join(","), RESULTS_HEADER);
            for r in rows {
                let [
                    job_id,
                    pow,
                    tam,
                    init,
                    comp,
                    fim,
                    tot,
                    engine,
                    threads,
                    correct,
                    generations,
                    worker,
                    finished_at,
                ] = fields(r);
                stored.results.push(JobResult {
                    job_id,
                    pow: pow.parse().unwrap(),
                    tam: tam.parse().unwrap(),
                    init: init.parse().unwrap(),
                    comp: comp.parse().unwrap(),
                    fim: fim.parse().unwrap(),
                    tot: tot.parse().unwrap(),
                    engine,
                    threads: threads.parse().unwrap(),
                    correct: correct.parse().unwrap(),
                    generations: generations.parse().unwrap(),
                    worker,
                    finished_at: on_day(time(&finished_at)),
                });
            }
        } else if name.ends_with(".failures.csv") {
            assert_eq!(header.join(","), FAILURES_HEADER);
            for r in rows {
                let [job_id, reason, error, worker, job, failed_at] = fields(r);
                stored.failures.push(JobFailure {
                    job_id,
                    reason,
                    error,
                    worker,
                    job,
                    failed_at: on_day(time(&failed_at)),
                });
            }
        } else {
            assert_eq!(header.join(","), SAMPLES_HEADER);
            for r in rows {
                let [ts, metric, value, labels] = fields(r);
                let labels: BTreeMap<String, String> =
                    serde_json::from_str(&labels).expect("labels are a JSON object");
                let value: f64 = value.parse().expect("a number");
                stored
                    .samples
                    .push((metric, labels, on_day(time(&ts)), value));
            }
        }
    }
    stored
}

/// `DIR/<topic>/*.csv`, sorted.
fn csv_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for topic in std::fs::read_dir(root).unwrap() {
        let topic = topic.unwrap().path();
        if !topic.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&topic).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "csv") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

fn fields<const N: usize>(row: &[String]) -> [String; N] {
    row.to_vec()
        .try_into()
        .unwrap_or_else(|r: Vec<String>| panic!("{N} fields expected: {r:?}"))
}

fn time(text: &str) -> i64 {
    parse_timestamp(text).unwrap_or_else(|| panic!("{text:?} is not RFC 3339"))
}

/// RFC 4180, strictly: records end with LF (the sink writes no CR outside
/// quotes); a quoted field starts at the field's start and its closing
/// quote is followed by `,` or the end of the record; the text ends at a
/// record's end.
fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    #[derive(PartialEq)]
    enum At {
        FieldStart,
        Bare,
        Quoted,
        /// Just after a quote inside a quoted field: its end, or the first
        /// of a doubled quote.
        QuoteInQuoted,
    }
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut at = At::FieldStart;
    for (i, c) in text.char_indices() {
        at = match (at, c) {
            (At::Quoted, '"') => At::QuoteInQuoted,
            (At::Quoted, c) => {
                field.push(c);
                At::Quoted
            }
            (At::QuoteInQuoted, '"') => {
                field.push('"');
                At::Quoted
            }
            (At::FieldStart, '"') => At::Quoted,
            (At::FieldStart | At::Bare | At::QuoteInQuoted, ',') => {
                record.push(std::mem::take(&mut field));
                At::FieldStart
            }
            (At::FieldStart | At::Bare | At::QuoteInQuoted, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                At::FieldStart
            }
            (At::QuoteInQuoted, c) => return Err(format!("{c:?} after a closing quote at {i}")),
            (_, '"') => return Err(format!("a quote inside a bare field at {i}")),
            (_, '\r') => return Err(format!("a bare CR at {i}")),
            (At::FieldStart | At::Bare, c) => {
                field.push(c);
                At::Bare
            }
        };
    }
    if at != At::FieldStart || !record.is_empty() {
        return Err("the text ends inside a record".into());
    }
    Ok(records)
}

#[test]
fn csv_the_test_parser_reads_rfc_4180() {
    let check = |text: &str, want: Result<Vec<Vec<&str>>, &str>| match (parse(text), want) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{text:?}"),
        (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{text:?}: {e}"),
        (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
    };
    check("", Ok(vec![]));
    check("a,b\n", Ok(vec![vec!["a", "b"]]));
    check(",\n", Ok(vec![vec!["", ""]]));
    check(
        "\"a,b\",\"say \"\"hi\"\"\"\n",
        Ok(vec![vec!["a,b", "say \"hi\""]]),
    );
    check(
        "\"one\ntwo\",x\ny\n",
        Ok(vec![vec!["one\ntwo", "x"], vec!["y"]]),
    );
    check("\"\"\n", Ok(vec![vec![""]]));
    check("a,b", Err("ends inside a record"));
    check("a,\"b\nc\n", Err("ends inside a record"));
    check("a\"b\n", Err("a quote inside a bare field"));
    check("\"a\"b\n", Err("after a closing quote"));
    check("a\r\n", Err("a bare CR"));
}

// The CSV sink's own cases.

async fn open(dir: &Path) -> CsvSink {
    CsvSink::open(dir)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

async fn write(sink: &CsvSink, batch: Batch) -> weir_store::Written {
    sink.write(Arc::new(batch)).await.expect("write")
}

fn batch(topic: &str, records: impl IntoIterator<Item = Record>) -> Batch {
    let mut b = Batch::new(topic);
    for r in records {
        b.push(r);
    }
    b
}

fn sample(ts: i64, value: f64) -> Record {
    Record::Sample(
        Sample::new("m", value, ts)
            .label("note", "a \"quoted\", multi\nline label")
            .label("gpu", "0"),
    )
}

fn result(job_id: &str, pow: u32, finished_at: i64) -> JobResult {
    JobResult {
        job_id: job_id.into(),
        pow,
        tam: 1 << pow,
        init: 0.001,
        comp: 0.5,
        fim: 1e-7,
        tot: 0.501_000_1,
        engine: "dense, \"fast\"".into(),
        threads: 4,
        correct: pow.is_multiple_of(2),
        generations: 100,
        worker: "w1".into(),
        finished_at,
    }
}

fn failure(job_id: &str, failed_at: i64) -> JobFailure {
    JobFailure {
        job_id: job_id.into(),
        reason: "shape".into(),
        error: "expected an object,\nfound \"[\"".into(),
        worker: "w2".into(),
        job: r#"[1,2]"#.into(),
        failed_at,
    }
}

/// Lines of a file that are exactly `header`.
fn headers(path: &Path, header: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter(|l| *l == header).count()
}

#[tokio::test]
async fn csv_a_torn_tail_is_cut_when_the_file_is_next_written() {
    let day = &format_timestamp(T0)[..10];
    let torn_tails = [
        // Half a row.
        format!("{day}T20:42:35.000Z,m,1"),
        // A row cut inside a quoted field, just after a newline in it: the
        // file ends with `\n`, but not at a record boundary.
        format!("{day}T20:42:35.000Z,m,1,\"{{\"\"note\"\":\"\"one\n"),
        // Cut right after a field's opening quote.
        format!("{day}T20:42:35.000Z,\""),
        // Cut after the closing quote of a field but before the newline.
        format!("{day}T20:42:35.000Z,m,1,\"{{\"\"a\"\":\"\"b\"\"}}\""),
    ];
    for tail in torn_tails {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<Record> = (0..3).map(|i| sample(T0 + i, i as f64)).collect();
        let sink = open(dir.path()).await;
        write(&sink, batch("t", first)).await;
        sink.close().await.unwrap();

        let path = dir.path().join("t").join(format!("{day}.csv"));
        let whole = std::fs::read(&path).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(tail.as_bytes());
        std::fs::write(&path, &torn).unwrap();
        assert!(
            parse(&String::from_utf8(torn).unwrap()).is_err(),
            "{tail:?} is torn"
        );

        let sink = open(dir.path()).await;
        write(&sink, batch("t", [sample(T0 + 10, 10.0)])).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.as_bytes().starts_with(&whole),
            "{tail:?}: what was whole stays"
        );
        let records = parse(&text).unwrap_or_else(|e| panic!("{tail:?}: {e}\n{text}"));
        assert_eq!(records.len(), 1 + 4, "{tail:?}: the header and four rows");
        let times: Vec<i64> = read_all(dir.path()).samples.iter().map(|r| r.2).collect();
        assert_eq!(times, [T0, T0 + 1, T0 + 2, T0 + 10], "{tail:?}");
        sink.close().await.unwrap();
    }
}

#[tokio::test]
async fn csv_a_torn_header_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let day = &format_timestamp(T0)[..10];
    let path = dir.path().join("t").join(format!("{day}.csv"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "ts,metr").unwrap();
    let sink = open(dir.path()).await;
    write(&sink, batch("t", [sample(T0, 1.0)])).await;
    assert_eq!(read_all(dir.path()).samples.len(), 1);
    assert_eq!(headers(&path, SAMPLES_HEADER), 1);
}

#[tokio::test]
async fn csv_a_file_with_another_header_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let day = &format_timestamp(T0)[..10];
    let path = dir.path().join("t").join(format!("{day}.csv"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let foreign = "time,name,value\n1,2,3\n4,5";
    std::fs::write(&path, foreign).unwrap();

    let sink = open(dir.path()).await;
    let before = sample(T0 - 2 * DAY, 1.0);
    write(&sink, batch("t", [before])).await;
    let two_days_before = dir.path().join("t/2025-07-16.csv");
    let kept = std::fs::read(&two_days_before).unwrap();

    // The batch's rows of the days before, in order before the foreign
    // file, are taken back: a failed write leaves nothing behind.
    let three_days = [
        sample(T0 - 2 * DAY, 2.0),
        sample(T0 - DAY, 3.0),
        sample(T0, 4.0),
    ];
    let e = sink
        .write(Arc::new(batch("t", three_days)))
        .await
        .expect_err("another header");
    assert!(matches!(e, StoreError::Fatal(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("time,name,value"), "its header: {text}");
    assert!(text.contains(SAMPLES_HEADER), "the expected one: {text}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        foreign,
        "left alone"
    );
    assert_eq!(
        std::fs::read(&two_days_before).unwrap(),
        kept,
        "rolled back"
    );
    assert!(
        !dir.path().join("t/2025-07-17.csv").exists(),
        "created, then removed"
    );

    // Other days, kinds and topics are still written.
    write(
        &sink,
        batch("t", [sample(T0 - 2 * DAY, 5.0), sample(T0 + DAY, 6.0)]),
    )
    .await;
    write(&sink, batch("u", [sample(T0, 7.0)])).await;
    std::fs::remove_file(&path).unwrap();
    let mut values: Vec<f64> = read_all(dir.path()).samples.iter().map(|r| r.3).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [1.0, 5.0, 6.0, 7.0]);
    sink.close().await.unwrap();
}

#[tokio::test]
async fn csv_files_of_older_days_are_closed_and_reopened_without_a_second_header() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(dir.path()).await;
    // Four days, one at a time, then each again: only two days' files stay
    // open, the others are reopened at the length this process left them.
    for round in 0..2 {
        for d in 0..4 {
            write(
                &sink,
                batch("t", [sample(T0 + d * DAY, (round * 4 + d) as f64)]),
            )
            .await;
        }
    }
    // And all four in one batch.
    write(
        &sink,
        batch("t", (0..4).map(|d| sample(T0 + d * DAY + 1, 8.0))),
    )
    .await;
    sink.close().await.unwrap();
    let files = csv_files(dir.path());
    assert_eq!(files.len(), 4);
    for file in &files {
        assert_eq!(headers(file, SAMPLES_HEADER), 1, "{}", file.display());
    }
    assert_eq!(read_all(dir.path()).samples.len(), 12);
}

#[tokio::test]
async fn csv_samples_of_two_utc_days_go_to_two_files_with_one_header_each() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(dir.path()).await;
    // 2025-07-18T23:59:59.999Z and the next millisecond, in one batch.
    let midnight = T0 - T0 % DAY + DAY;
    let written = write(
        &sink,
        batch("t", [sample(midnight - 1, 1.0), sample(midnight, 2.0)]),
    )
    .await;
    assert_eq!((written.samples, written.duplicates), (2, 0));
    // Again, so each file is appended to once more.
    write(
        &sink,
        batch("t", [sample(midnight - 2, 3.0), sample(midnight + 1, 4.0)]),
    )
    .await;
    sink.close().await.unwrap();

    let topic = dir.path().join("t");
    let files = csv_files(dir.path());
    assert_eq!(
        files,
        [topic.join("2025-07-18.csv"), topic.join("2025-07-19.csv")]
    );
    for file in &files {
        assert_eq!(headers(file, SAMPLES_HEADER), 1, "{}", file.display());
        assert!(
            std::fs::read_to_string(file)
                .unwrap()
                .starts_with(SAMPLES_HEADER)
        );
    }
    let times: Vec<i64> = read_all(dir.path()).samples.iter().map(|r| r.2).collect();
    assert_eq!(times.len(), 4);
}

#[tokio::test]
async fn csv_results_and_failures_go_to_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(dir.path()).await;
    let records = [
        Record::Result(result("1-1", 3, T0)),
        Record::Result(result("1-1", 4, T0 + DAY)),
        Record::Failure(failure("1-2", T0)),
    ];
    let written = write(&sink, batch("gol.results", records)).await;
    assert_eq!(
        (written.samples, written.results, written.failures),
        (0, 2, 1)
    );
    sink.close().await.unwrap();

    let topic = dir.path().join("gol.results");
    assert_eq!(
        csv_files(dir.path()),
        [
            topic.join("2025-07-18.failures.csv"),
            topic.join("2025-07-18.results.csv"),
            topic.join("2025-07-19.results.csv"),
        ]
    );
    assert_eq!(
        headers(&topic.join("2025-07-18.results.csv"), RESULTS_HEADER),
        1
    );
    assert_eq!(
        headers(&topic.join("2025-07-18.failures.csv"), FAILURES_HEADER),
        1
    );
    let stored = read_all(dir.path());
    assert!(stored.samples.is_empty());
    assert_eq!(
        stored.results,
        [result("1-1", 3, T0), result("1-1", 4, T0 + DAY)]
    );
    assert_eq!(stored.failures, [failure("1-2", T0)]);
}

#[tokio::test]
async fn csv_one_sink_writes_to_a_directory_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let e = CsvSink::open(dir.path()).await.expect_err("locked");
    assert!(e.is_retryable(), "{e}");
    let text = e.to_string();
    assert!(text.contains("another collector"), "{text}");
    assert!(
        text.contains(&dir.path().join(".lock").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );

    first.close().await.unwrap();
    let e = first
        .write(Arc::new(batch("t", [sample(T0, 1.0)])))
        .await
        .expect_err("closed");
    assert!(e.to_string().contains("closed"), "{e}");

    let second = open(dir.path()).await;
    write(&second, batch("t", [sample(T0, 1.0)])).await;
    drop(second);
    let third = open(dir.path()).await;
    write(&third, batch("t", [sample(T0 + 1, 1.0)])).await;
    assert_eq!(read_all(dir.path()).samples.len(), 2);
    third.close().await.unwrap();
}

#[tokio::test]
async fn csv_unsafe_topics_and_unwritable_times_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(dir.path()).await;
    for topic in ["", ".", "..", ".lock", "a/b", "../escape", "a\\b", "a\0b"] {
        let e = sink
            .write(Arc::new(batch(topic, [sample(T0, 1.0)])))
            .await
            .expect_err(topic);
        assert!(matches!(e, StoreError::Invalid(_)), "{topic:?}: {e}");
        assert!(e.to_string().contains("topic"), "{e}");
    }
    let e = sink
        .write(Arc::new(batch("t", [sample(T0, 1.0), sample(-1, 1.0)])))
        .await
        .expect_err("before 1970");
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert!(csv_files(dir.path()).is_empty(), "nothing written");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".lock"], "no directory made");
    assert!(
        !dir.path().parent().unwrap().join("escape").exists(),
        "nothing outside"
    );
    sink.close().await.unwrap();
}
