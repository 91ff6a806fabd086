//! Server-Sent Events: [`SseParser`], an incremental parser of the
//! `text/event-stream` format, and [`EventStream`], which runs it over a
//! response body.
//!
//! The parser follows the WHATWG "interpreting an event stream" rules: lines
//! end with `\n`, `\r\n` or `\r` (a `\r\n` split across two chunks counts
//! once); a line starting with `:` is a comment; `field: value` has one
//! leading space of its value stripped, a line without `:` is a field with an
//! empty value; `data` lines are joined with `\n`; `event` names the event
//! (`message` when absent); `id` sets the last event id, which every later
//! event carries until another `id` line changes it (an empty one clears
//! it); `retry` and unknown fields are ignored; a blank line dispatches the
//! event, unless it has no `data` line at all; a byte-order mark at the very
//! start is skipped; an event cut off by the end of the stream is dropped.
//! Lines are decoded as UTF-8 with replacement characters, as the standard
//! says.
//!
//! Invariants: chunk boundaries never change the events parsed (the tests
//! split a sample at every byte); memory is bounded by the largest event
//! (`max_event_bytes`, an error past it), never by the stream's length.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::client::ClientError;

/// The largest event [`SseParser::new`] accepts: well above the largest
/// message a broker takes (its request body limit, 32 MiB by default, holds
/// a whole batch), even base64-encoded.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, `message` when the event named none.
    pub event: String,
    /// The last event id seen on this stream (`id:` lines persist).
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed it chunks as they come,
/// pop the events they complete.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// The bytes of the line being read, without its ending.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` opening this one belongs to
    /// that line ending.
    after_cr: bool,
    /// No line has ended yet (a byte-order mark may open it).
    first_line: bool,
    event: String,
    /// Every `data` value so far, each followed by `\n`.
    data: String,
    last_id: Option<String>,
    ready: VecDeque<SseEvent>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser refusing events larger than [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> SseParser {
        SseParser::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser refusing events whose pending line and data exceed `max`
    /// bytes.
    pub fn with_max_event_bytes(max: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: String::new(),
            data: String::new(),
            last_id: None,
            ready: VecDeque::new(),
            max_event_bytes: max,
        }
    }

    /// Parses the next bytes of the stream; the events they complete are
    /// then returned by [`SseParser::pop`]. An error (an event past the size
    /// limit) leaves the parser unusable for this stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..i]);
            self.check_size()?;
            self.end_line();
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => rest = &rest[i + 2..],
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    /// The oldest event parsed and not yet taken.
    pub fn pop(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    fn check_size(&self) -> Result<(), ClientError> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(ClientError::Decode(format!(
                "a server-sent event is larger than {} bytes",
                self.max_event_bytes
            )));
        }
        Ok(())
    }

    fn end_line(&mut self) {
        let mut bytes = std::mem::take(&mut self.line);
        if std::mem::replace(&mut self.first_line, false) && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch();
        } else if !line.starts_with(':') {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "id" if !value.contains('\0') => {
                    self.last_id = (!value.is_empty()).then(|| value.to_string());
                }
                _ => {}
            }
        }
        bytes.clear();
        self.line = bytes;
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        self.ready.push_back(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            id: self.last_id.clone(),
            data,
        });
    }
}

/// The body of a byte stream, as [`EventStream::from_stream`] takes it.
type Body = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// The events of one `text/event-stream` response, read as they arrive.
pub struct EventStream {
    body: Body,
    parser: SseParser,
    idle_timeout: Option<Duration>,
    done: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("parser", &self.parser)
            .field("idle_timeout", &self.idle_timeout)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Parses events out of any byte stream (a response body, or a test's
    /// chunks).
    pub fn from_stream<S>(body: S) -> EventStream
    where
        S: Stream<Item = Result<Bytes, ClientError>> + Send + 'static,
    {
        EventStream {
            body: Box::pin(body),
            parser: SseParser::new(),
            idle_timeout: None,
            done: false,
        }
    }

    /// Fails the stream with [`ClientError::Connect`] when no byte (not even
    /// a keep-alive comment) arrives for `timeout`: the way to notice a
    /// connection that died without closing. Choose a few times the server's
    /// keep-alive interval.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> EventStream {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The next event; `None` once the stream has ended (after an error too).
    pub async fn next(&mut self) -> Option<Result<SseEvent, ClientError>> {
        loop {
            if let Some(event) = self.parser.pop() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let chunk = match self.idle_timeout {
                None => self.body.next().await,
                Some(limit) => match tokio::time::timeout(limit, self.body.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => Some(Err(ClientError::Connect(format!(
                        "no data on the event stream for {} ms",
                        limit.as_millis()
                    )))),
                },
            };
            match chunk {
                Some(Ok(bytes)) => {
                    if let Err(e) = self.parser.feed(&bytes) {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event for the tables: `(event, id, data)`.
    type Want<'a> = (&'a str, Option<&'a str>, &'a str);

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk).unwrap();
            while let Some(event) = parser.pop() {
                out.push(event);
            }
        }
        out
    }

    /// Parses `input` whole, byte by byte, and cut in two at every position,
    /// and checks each gives `want`.
    fn check(input: &str, want: &[Want<'_>]) {
        let want: Vec<SseEvent> = want
            .iter()
            .map(|&(event, id, data)| SseEvent {
                event: event.to_string(),
                id: id.map(str::to_string),
                data: data.to_string(),
            })
            .collect();
        let bytes = input.as_bytes();
        assert_eq!(parse(&[bytes]), want, "whole: {input:?}");
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse(&single), want, "byte by byte: {input:?}");
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse(&[a, &[], b]), want, "cut at {cut}: {input:?}");
        }
    }

    #[test]
    fn events_parse_alike_at_every_chunk_boundary() {
        let broker = concat!(
            "event: connected\ndata: {\"consumer_id\":\"c1\"}\n\n",
            ": keep-alive\n\n",
            "event: message\nid: 0-1\ndata: {\"id\":\"0-1\"}\n\n",
        );
        let cases: &[(&str, &[Want<'_>])] = &[
            (
                broker,
                &[
                    ("connected", None, r#"{"consumer_id":"c1"}"#),
                    ("message", Some("0-1"), r#"{"id":"0-1"}"#),
                ],
            ),
            ("data: a\n\n", &[("message", None, "a")]),
            ("data: a\r\n\r\n", &[("message", None, "a")]),
            (
                "data: a\r\rdata: b\r\r",
                &[("message", None, "a"), ("message", None, "b")],
            ),
            (
                "data: a\r\n\ndata: b\n\r\n",
                &[("message", None, "a"), ("message", None, "b")],
            ),
            (
                "data: one\ndata: two\ndata:\n\n",
                &[("message", None, "one\ntwo\n")],
            ),
            ("data:no-space\n\n", &[("message", None, "no-space")]),
            ("data:  two spaces\n\n", &[("message", None, " two spaces")]),
            ("data: a: b\n\n", &[("message", None, "a: b")]),
            ("data\n\n", &[("message", None, "")]),
            (": only a comment\n\n", &[]),
            ("event: lonely\n\ndata: x\n\n", &[("message", None, "x")]),
            ("id: 7\n\ndata: x\n\n", &[("message", Some("7"), "x")]),
            (
                "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
                &[
                    ("message", Some("1"), "a"),
                    ("message", Some("1"), "b"),
                    ("message", None, "c"),
                ],
            ),
            ("id: a\0b\ndata: x\n\n", &[("message", None, "x")]),
            (
                "retry: 10\nfoo: bar\ndata: x\n\n",
                &[("message", None, "x")],
            ),
            ("\u{feff}data: bom\n\n", &[("message", None, "bom")]),
            (
                "data: \u{feff}kept\n\n",
                &[("message", None, "\u{feff}kept")],
            ),
            ("data: grüße, 温度\n\n", &[("message", None, "grüße, 温度")]),
            (
                "data: complete\n\ndata: cut off\n",
                &[("message", None, "complete")],
            ),
            ("", &[]),
        ];
        for &(input, want) in cases {
            check(input, want);
        }
    }

    #[test]
    fn an_event_past_the_limit_is_an_error() {
        let mut parser = SseParser::with_max_event_bytes(12);
        parser.feed(b"data: 1234\n").unwrap();
        let err = parser.feed(b"data: 5678\n").unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
        let mut parser = SseParser::with_max_event_bytes(12);
        assert!(parser.feed(b"data: 123456789").is_err(), "an unended line");
    }

    fn chunks(items: Vec<Result<&'static str, ClientError>>) -> EventStream {
        let items = items
            .into_iter()
            .map(|item| item.map(|s| Bytes::from_static(s.as_bytes())));
        EventStream::from_stream(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn event_streams_yield_events_then_end() {
        let mut stream = chunks(vec![Ok("data: a\n\nda"), Ok("ta: b\n\ndata: c")]);
        assert_eq!(stream.next().await.unwrap().unwrap().data, "a");
        assert_eq!(stream.next().await.unwrap().unwrap().data, "b");
        assert!(
            stream.next().await.is_none(),
            "the cut-off event is dropped"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn event_streams_stop_at_the_first_error() {
        let reset = ClientError::Connect("reset".into());
        let mut stream = chunks(vec![
            Ok("data: a\n\n"),
            Err(reset.clone()),
            Ok("data: b\n\n"),
        ]);
        assert_eq!(stream.next().await.unwrap().unwrap().data, "a");
        assert_eq!(stream.next().await.unwrap().unwrap_err(), reset);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out() {
        let body = futures_util::stream::iter([Ok(Bytes::from_static(b": hi\n\n"))])
            .chain(futures_util::stream::pending());
        let mut stream = EventStream::from_stream(body).with_idle_timeout(Duration::from_secs(30));
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(stream.next().await.is_none());
    }
}
