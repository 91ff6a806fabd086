//! The DCGM parser on the sample export and on the edge cases real files
//! have: quotes inside `labels_raw`, empty fields, blank sentinels, CRLF,
//! rows spanning lines, missing fields, and headers that are not DCGM's.

use weir_sources::dcgm::{Reader, Reading, Row, RowError, gpu_key};
use weir_telemetry::Labels;

const SAMPLE: &str = include_str!("data/dcgm_sample.csv");
const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";

/// One row of a DCGM export, every field quoted as dcgm-exporter does.
fn row(value: &str, labels_raw: &str) -> String {
    let fields = [
        "2025-07-18T20:42:34Z",
        "DCGM_FI_DEV_GPU_UTIL",
        "0",
        "nvidia0",
        "GPU-1",
        "H100",
        "node-1",
        "",
        "",
        "",
        value,
        labels_raw,
    ];
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect();
    format!("{}\n", quoted.join(","))
}

/// A row as one line of text, compact enough for a table.
fn describe(item: Result<Row, RowError>) -> String {
    match item {
        Ok(Row {
            line,
            reading: Reading::Sample(s),
            ..
        }) => {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{line}: {} {} {{{}}}", s.metric, s.value, labels.join(","))
        }
        Ok(Row {
            line,
            reading: Reading::Blank(b),
            ..
        }) => format!("{line}: blank {b}"),
        Err(RowError::Bad(bad)) => format!("bad {bad}"),
        Err(RowError::Read(e)) => format!("failed {e}"),
    }
}

/// The rows of `HEADER + body`, described.
fn check(body: &str, want: &[&str]) {
    let text = format!("{HEADER}{body}");
    let reader = Reader::new(text.as_bytes()).expect("a DCGM header");
    let got: Vec<String> = reader.map(describe).collect();
    assert_eq!(got, want, "body:\n{body}");
}

/// The base labels of [`row`].
const BASE: &str = "Hostname=node-1,UUID=GPU-1,device=nvidia0,gpu=0,modelName=H100";

#[test]
fn the_sample_export() {
    let rows: Vec<Row> = Reader::new(SAMPLE.as_bytes())
        .unwrap()
        .map(|r| r.expect("every sample row is valid"))
        .collect();
    assert_eq!(rows.len(), 80);
    let samples: Vec<_> = rows
        .iter()
        .map(|r| match &r.reading {
            Reading::Sample(s) => s,
            Reading::Blank(b) => panic!("line {}: blank {b}", r.line),
        })
        .collect();
    let mut metrics: Vec<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    metrics.sort();
    metrics.dedup();
    assert_eq!(metrics.len(), 10);
    let mut gpus: Vec<&str> = samples.iter().map(|s| s.labels["UUID"].as_str()).collect();
    gpus.sort();
    gpus.dedup();
    assert_eq!(gpus.len(), 8);
    // Scrapes are runs of one timestamp.
    let mut scrapes: Vec<&str> = rows.iter().map(|r| r.timestamp.as_str()).collect();
    scrapes.dedup();
    assert_eq!(
        scrapes,
        [
            "2025-07-18T20:42:34Z",
            "2025-07-18T20:42:35Z",
            "2025-07-18T20:42:36Z",
            "2025-07-18T20:42:37Z"
        ]
    );
    assert_eq!((rows[0].line, rows[79].line), (2, 81));

    let first = samples[0];
    assert_eq!(first.metric, "DCGM_FI_DEV_GPU_UTIL");
    assert_eq!(first.value, 0.0);
    assert_eq!(first.ts, 1_752_871_354_000);
    let labels: Vec<(&str, &str)> = first
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("DCGM_FI_DRIVER_VERSION", "535.129.03"),
            ("Hostname", "mtv5-dgx1-hgpu-031"),
            ("UUID", "GPU-5fd4f087-86f3-7a43-b711-4771313afc50"),
            ("device", "nvidia0"),
            ("gpu", "0"),
            ("instance", "mtv5-dgx1-hgpu-031:9400"),
            ("job", "dgx_dcgm_exporter"),
            ("modelName", "NVIDIA H100 80GB HBM3"),
        ]
    );
    let power: Vec<f64> = samples
        .iter()
        .filter(|s| s.metric == "DCGM_FI_DEV_POWER_USAGE")
        .map(|s| s.value)
        .collect();
    assert_eq!(power[0], 156.596);
}

#[test]
fn labels_raw_quotes_escapes_and_overrides() {
    check(
        &row(
            "1",
            r#"k="say \"hi\", then go",Hostname="elsewhere",__name__="X""#,
        ),
        &[
            "2: DCGM_FI_DEV_GPU_UTIL 1 {Hostname=node-1,UUID=GPU-1,device=nvidia0,gpu=0,\
             k=say \"hi\", then go,modelName=H100}",
        ],
    );
    check(
        &row("1", r#"path="C:\\dcgm""#),
        &[&format!(
            r"2: DCGM_FI_DEV_GPU_UTIL 1 {{{BASE},path=C:\dcgm}}"
        )],
    );
    check(
        &row("1", ""),
        &[&format!("2: DCGM_FI_DEV_GPU_UTIL 1 {{{BASE}}}")],
    );
    check(
        &row("1", r#"k="1" j="2""#),
        &["bad line 2: labels_raw: expected `,` after the value of `k`"],
    );
}

#[test]
fn empty_fields_add_no_labels_but_labels_raw_still_counts() {
    let text = "\"2025-07-18T20:42:34Z\",\"DCGM_FI_DEV_GPU_TEMP\",\"\",\"\",\"\",\"\",\"\",\"ctr\",\"\",\"\",\"41\",\"gpu=\"\"3\"\"\"\n";
    check(text, &["2: DCGM_FI_DEV_GPU_TEMP 41 {container=ctr,gpu=3}"]);
    // Unquoted fields are fine too.
    check(
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,1,,,,,,,,42,\n",
        &["2: DCGM_FI_DEV_GPU_TEMP 42 {gpu=1}"],
    );
}

#[test]
fn blank_sentinels_are_told_apart_from_values() {
    let cases = [
        ("", "blank empty value"),
        ("<<<NULL>>>", "blank DCGM_STR_BLANK"),
        ("2147483632", "blank DCGM_INT32_BLANK"),
        ("2147483635", "blank DCGM_INT32_NOT_PERMISSIONED"),
        ("9223372036854775792", "blank DCGM_INT64_BLANK"),
        ("9223372036854775794", "blank DCGM_INT64_NOT_SUPPORTED"),
        ("140737488355328", "blank DCGM_FP64_BLANK"),
        ("140737488355329.0", "blank DCGM_FP64_NOT_FOUND"),
        ("1.40737488355331e14", "blank DCGM_FP64_NOT_PERMISSIONED"),
        // The int64 family written as floats rounds onto 2^63, where the
        // four cannot be told apart.
        ("9223372036854775792.0", "blank DCGM_INT64_BLANK"),
        ("9223372036854775795.0", "blank DCGM_INT64_BLANK"),
        ("9.2233720368547758e18", "blank DCGM_INT64_BLANK"),
        ("9.223372036854776E+18", "blank DCGM_INT64_BLANK"),
        ("9.223372036855e18", "blank DCGM_INT64_BLANK"),
        ("9223372036854775808", "blank DCGM_INT64_BLANK"),
        ("9223372036854774784.0", "blank DCGM_INT64_BLANK"),
    ];
    for (value, want) in cases {
        check(&row(value, ""), &[&format!("2: {want}")]);
    }
    // Neighbours of the sentinels are measurements; the int64 family is
    // compared as integers, not through a rounding f64.
    for value in [
        "2147483631",
        "2147483636",
        "9223372036854775791",
        "9223372036854774784",
        "9223372036854775807",
        "9.2233720368547e18",
        "140737488355332",
        "-9223372036854775792.0",
    ] {
        let got = describe(
            Reader::new(format!("{HEADER}{}", row(value, "")).as_bytes())
                .unwrap()
                .next()
                .unwrap(),
        );
        assert!(
            got.starts_with("2: DCGM_FI_DEV_GPU_UTIL "),
            "{value}: {got}"
        );
    }
}

#[test]
fn bad_rows_name_their_line_and_the_rest_is_read() {
    let good = row("5", "");
    let short = "\"2025-07-18T20:42:34Z\",\"DCGM_FI_DEV_GPU_UTIL\",\"0\",\"nvidia0\",\"GPU-1\",\"H100\",\"node-1\",\"\",\"\",\"\",\"5\"\n";
    let body = [
        good.as_str(),
        short,
        &row("abc", ""),
        &row("NaN", ""),
        &row("inf", ""),
        &good.replace("2025-07-18T20:42:34Z", "yesterday"),
        &good.replace("DCGM_FI_DEV_GPU_UTIL", ""),
        "\"unterminated\"x,1\n",
        good.as_str(),
    ]
    .concat();
    let ok = format!("DCGM_FI_DEV_GPU_UTIL 5 {{{BASE}}}");
    check(
        &body,
        &[
            &format!("2: {ok}"),
            "bad line 3: 11 fields, the header has 12",
            "bad line 4: value \"abc\" is not a number",
            "bad line 5: value \"NaN\" is not a finite number",
            "bad line 6: value \"inf\" is not a finite number",
            "bad line 7: timestamp \"yesterday\" is not an RFC 3339 time",
            "bad line 8: empty metric_name",
            "bad line 9: field 1: 'x' after a closing quote",
            &format!("10: {ok}"),
        ],
    );
}

#[test]
fn crlf_and_rows_spanning_lines() {
    let crlf = row("7", r#"a="1""#).replace('\n', "\r\n");
    check(
        &format!("{crlf}{crlf}"),
        &[
            "2: DCGM_FI_DEV_GPU_UTIL 7 {Hostname=node-1,UUID=GPU-1,a=1,device=nvidia0,gpu=0,modelName=H100}",
            "3: DCGM_FI_DEV_GPU_UTIL 7 {Hostname=node-1,UUID=GPU-1,a=1,device=nvidia0,gpu=0,modelName=H100}",
        ],
    );
    // A quoted newline inside labels_raw: the row after it is still named
    // by its own first line.
    let spanning = row("8", "note=\"two\nlines\"");
    check(
        &format!("{spanning}{}", row("9", "")),
        &[
            &format!("2: DCGM_FI_DEV_GPU_UTIL 8 {{{BASE},note=two\nlines}}"),
            &format!("4: DCGM_FI_DEV_GPU_UTIL 9 {{{BASE}}}"),
        ],
    );
    // The whole file in CRLF, header included.
    let text = SAMPLE.replace('\n', "\r\n");
    let n = Reader::new(text.as_bytes())
        .unwrap()
        .filter(|r| {
            matches!(
                r,
                Ok(Row {
                    reading: Reading::Sample(_),
                    ..
                })
            )
        })
        .count();
    assert_eq!(n, 80);
}

#[test]
fn headers_are_found_by_name_or_refused_in_one_line() {
    // Any order, extra columns ignored.
    let shuffled = "value,labels_raw,extra,timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace\n\
                    3,,x,2025-07-18T20:42:34Z,M,0,nvidia0,GPU-9,H100,h,,,\n";
    let got: Vec<String> = Reader::new(shuffled.as_bytes())
        .unwrap()
        .map(describe)
        .collect();
    assert_eq!(
        got,
        ["2: M 3 {Hostname=h,UUID=GPU-9,device=nvidia0,gpu=0,modelName=H100}"]
    );

    let cases = [
        (
            HEADER.replace(",labels_raw", ""),
            "line 1: not a DCGM export: no `labels_raw` column",
        ),
        (
            "a,b,c\n1,2,3\n".to_string(),
            "line 1: not a DCGM export: no `timestamp` column",
        ),
        (
            String::new(),
            "line 1: not a DCGM export: the file is empty",
        ),
        (
            format!("\n\n{}", HEADER.replace("uuid", "UUID")),
            "line 3: not a DCGM export: no `uuid` column",
        ),
    ];
    for (text, want) in cases {
        let err = Reader::new(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, want);
        assert!(!err.contains('\n'));
    }
}

#[test]
fn a_line_of_megabytes_is_a_bad_row_and_the_rest_is_read() {
    let good = row("5", "");
    let long = format!("\"2025-07-18T20:42:34Z\",{}\n", "x".repeat(3 << 20));
    let body = [good.as_str(), &long, &good].concat();
    let ok = format!("DCGM_FI_DEV_GPU_UTIL 5 {{{BASE}}}");
    check(
        &body,
        &[
            &format!("2: {ok}"),
            "bad line 3: the line runs past 1024 KiB without a line break (not a CSV file?)",
            &format!("4: {ok}"),
        ],
    );
}

#[test]
fn binary_files_are_not_exports() {
    // Bytes like a compressed file's: a few megabytes, no line break, and
    // the same with line breaks here and there.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let junk: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let flat: Vec<u8> = junk
        .iter()
        .map(|&b| if b == b'\n' { 0 } else { b })
        .collect();
    let cases: [(&[u8], &str); 2] = [
        (
            &flat,
            "line 1: not a DCGM export: the line runs past 1024 KiB without a line break (not a CSV file?)",
        ),
        (&junk, ": not a DCGM export: "),
    ];
    for (input, want) in cases {
        let err = Reader::new(input).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert!(err.starts_with("line ") && !err.contains('\n'), "{err}");
    }
}

#[test]
fn samples_are_keyed_by_gpu() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case; 4] = [
        (
            &[("UUID", "GPU-1"), ("Hostname", "h"), ("gpu", "0")],
            Some("GPU-1"),
        ),
        (&[("Hostname", "h"), ("gpu", "3")], Some("h/3")),
        (&[("Hostname", "h")], Some("h")),
        (&[("gpu", "3")], None),
    ];
    for (labels, want) in cases {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(gpu_key(&labels).as_deref(), want, "{labels:?}");
    }
}
