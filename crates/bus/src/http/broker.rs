//! A scripted broker for this backend's tests: a thread answering each
//! connection's one request as a test says, reporting what it read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use weir_api::wire::{SettleRequest, SettleResponse, SettleResult};

use crate::http::HttpBus;
use crate::{ConnectOptions, SettleStatus};

/// A request the scripted broker read: its request line and body.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) line: String,
    pub(super) body: String,
}

/// An answer: the raw response, and whether to keep the connection
/// open afterwards (an SSE stream), reporting when the client closes it.
pub(super) type Answer = (String, bool);

/// A broker on a thread, answering each connection's one request with
/// `answer`; reports every request, and `CLOSED` when a kept-open
/// connection is closed by the client.
pub(super) fn broker(
    answer: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static,
) -> (String, std::sync::mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let (answer, tx) = (Arc::clone(&answer), tx.clone());
            std::thread::spawn(move || serve_one(n, stream.unwrap(), &*answer, &tx));
        }
    });
    (url, rx)
}

fn serve_one(
    n: usize,
    stream: TcpStream,
    answer: &(dyn Fn(usize, &Seen) -> Answer + Sync),
    tx: &std::sync::mpsc::Sender<Seen>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if header == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let seen = Seen {
        line: line.trim_end().to_string(),
        body: String::from_utf8(body).unwrap(),
    };
    let (response, keep_open) = answer(n, &seen);
    let _ = tx.send(seen);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes());
    if keep_open {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = tx.send(Seen {
            line: "CLOSED".into(),
            body: String::new(),
        });
    }
}

pub(super) fn json(status: &str, body: &str) -> Answer {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    (response, false)
}

pub(super) fn sse(events: &str, keep_open: bool) -> Answer {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{events}"
    );
    (response, keep_open)
}

pub(super) fn message_event(id: &str, payload: &str) -> String {
    format!(
        "event: message\nid: {id}\ndata: {{\"id\":\"{id}\",\"topic\":\"t\",\"payload\":\"{payload}\",\"payload_encoding\":\"text\",\"headers\":{{}},\"timestamp\":\"2025-11-23T12:13:20.123Z\",\"delivery_count\":1}}\n\n"
    )
}

/// Answers settle requests `done` per id, 400 when an id is `garbage`.
pub(super) fn settle_answer(seen: &Seen) -> Answer {
    let request: SettleRequest = serde_json::from_str(&seen.body).unwrap();
    if request.message_ids.iter().any(|id| id == "garbage") {
        return json(
            "400 Bad Request",
            r#"{"error":"bad_request","detail":"bad id"}"#,
        );
    }
    let results: Vec<SettleResult> = request
        .message_ids
        .iter()
        .map(|id| SettleResult {
            message_id: id.clone(),
            status: SettleStatus::Done,
        })
        .collect();
    json(
        "200 OK",
        &serde_json::to_string(&SettleResponse { results }).unwrap(),
    )
}

pub(super) fn bus(url: &str) -> HttpBus {
    HttpBus::new(url, &ConnectOptions::default()).unwrap()
}
