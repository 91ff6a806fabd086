//! `weir queue …`: the embedded queue from a terminal.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use weir_queue::{
    Delivery, GroupConfig, Message, MessageId, Queue, SeekTo, StartAt, SubscribeOptions,
};

use crate::options::{QueueOptions, parse_duration};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QueueCommand {
    /// Publish messages: the arguments, or else one message per line of stdin.
    Publish {
        #[command(flatten)]
        queue: QueueOptions,
        topic: String,
        /// Message payloads; read from stdin, one per line, when absent.
        messages: Vec<String>,
        /// Key of every message (same key, same partition, in order).
        #[arg(long)]
        key: Option<String>,
        /// A header `name=value`, repeatable.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// Messages per batch when reading stdin.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Receive messages as a member of a consumer group and print them as
    /// JSON lines; acks each batch after printing it.
    Consume {
        #[command(flatten)]
        queue: QueueOptions,
        topic: String,
        #[arg(long, default_value = "weir-cli")]
        group: String,
        #[arg(long, default_value = "weir-cli")]
        consumer_id: String,
        /// Stop after this many messages.
        #[arg(long)]
        max: Option<u64>,
        /// Stop when nothing arrives for this long.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        idle: Duration,
        /// Where a new group starts: earliest or latest.
        #[arg(long, default_value = "earliest", value_parser = parse_start)]
        start: StartAt,
        /// Leave messages unacked (they return after the visibility timeout).
        #[arg(long)]
        no_ack: bool,
    },
    /// Move a group (replay or skip): to `earliest`, `latest`, the first
    /// message at or after a time in epoch milliseconds (`@1700000000000`),
    /// or one partition to an offset (`PARTITION-OFFSET`).
    Seek {
        #[command(flatten)]
        queue: QueueOptions,
        topic: String,
        #[arg(long)]
        group: String,
        to: String,
    },
    /// Print topics and consumer groups with depth, in flight, acked,
    /// redelivered and dead-lettered counts.
    Stats {
        #[command(flatten)]
        queue: QueueOptions,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::Publish {
            queue,
            topic,
            messages,
            key,
            headers,
            batch,
        } => {
            let q = queue.open().await?;
            let make = |payload: String| {
                let mut m = Message::new(payload);
                m.key = key.clone().map(Bytes::from);
                for (n, v) in &headers {
                    m = m.with_header(n.clone(), v.clone());
                }
                m
            };
            let mut count = 0u64;
            if messages.is_empty() {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                let mut pending = Vec::new();
                while let Some(line) = lines.next_line().await.context("reading stdin")? {
                    pending.push(make(line));
                    if pending.len() >= batch.max(1) {
                        count += publish(&q, &topic, std::mem::take(&mut pending)).await?;
                    }
                }
                if !pending.is_empty() {
                    count += publish(&q, &topic, pending).await?;
                }
            } else {
                count += publish(&q, &topic, messages.into_iter().map(make).collect()).await?;
            }
            q.close().await?;
            eprintln!("published {count} messages to {topic}");
            Ok(())
        }
        QueueCommand::Consume {
            queue,
            topic,
            group,
            consumer_id,
            max,
            idle,
            start,
            no_ack,
        } => {
            let q = queue.open().await?;
            let options = SubscribeOptions {
                consumer_id,
                group: GroupConfig {
                    start,
                    ..GroupConfig::default()
                },
            };
            let consumer = q.subscribe(&topic, &group, options)?;
            let mut seen = 0u64;
            let limit = max.unwrap_or(u64::MAX);
            while seen < limit {
                let want = (limit - seen).min(500) as usize;
                let batch = consumer.receive(want, idle).await?;
                if batch.is_empty() {
                    break;
                }
                let mut out = String::new();
                for d in &batch {
                    out.push_str(&delivery_json(d).to_string());
                    out.push('\n');
                }
                print!("{out}");
                if !no_ack {
                    let ids: Vec<MessageId> = batch.iter().map(|d| d.id).collect();
                    consumer.ack(&ids).await?;
                }
                seen += batch.len() as u64;
            }
            drop(consumer);
            q.close().await?;
            Ok(())
        }
        QueueCommand::Seek {
            queue,
            topic,
            group,
            to,
        } => {
            let target = parse_seek(&to)?;
            let q = queue.open().await?;
            q.seek(&topic, &group, target)?;
            q.close().await?;
            Ok(())
        }
        QueueCommand::Stats { queue, json } => {
            let q = queue.open().await?;
            let stats = q.stats()?;
            q.close().await?;
            if json {
                println!("{}", stats_json(&stats));
            } else {
                print_stats(&stats);
            }
            Ok(())
        }
    }
}

async fn publish(q: &Queue, topic: &str, messages: Vec<Message>) -> anyhow::Result<u64> {
    let n = messages.len() as u64;
    q.publish_batch(topic, messages)
        .await
        .with_context(|| format!("publishing to {topic}"))?;
    Ok(n)
}

/// A delivery as JSON: the payload inline when it is JSON, else as text.
pub(crate) fn delivery_json(d: &Delivery) -> Value {
    let payload = serde_json::from_slice::<Value>(&d.record.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.record.payload).into_owned()));
    let headers: serde_json::Map<String, Value> = d
        .record
        .headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                Value::String(String::from_utf8_lossy(&h.value).into_owned()),
            )
        })
        .collect();
    json!({
        "id": d.id.to_string(),
        "topic": &*d.topic,
        "key": d.record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "payload": payload,
        "headers": headers,
        "timestamp": d.record.timestamp,
        "delivery_count": d.delivery_count,
    })
}

fn stats_json(stats: &weir_queue::Stats) -> Value {
    json!({
        "topics": stats.topics.iter().map(|t| json!({
            "topic": t.topic, "partitions": t.partitions, "messages": t.messages,
            "bytes": t.bytes, "end_offsets": t.end_offsets,
        })).collect::<Vec<_>>(),
        "groups": stats.groups.iter().map(|g| json!({
            "group": g.group, "topic": g.topic, "depth": g.depth, "in_flight": g.in_flight,
            "acked_total": g.acked_total, "redelivered_total": g.redelivered_total,
            "dead_lettered_total": g.dead_lettered_total,
            "oldest_unacked_age_ms": g.oldest_unacked_age_ms, "committed": g.committed,
        })).collect::<Vec<_>>(),
    })
}

fn print_stats(stats: &weir_queue::Stats) {
    println!(
        "{:<32} {:>10} {:>14} {:>14}",
        "TOPIC", "PARTITIONS", "MESSAGES", "BYTES"
    );
    for t in &stats.topics {
        println!(
            "{:<32} {:>10} {:>14} {:>14}",
            t.topic, t.partitions, t.messages, t.bytes
        );
    }
    if stats.groups.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<24} {:<24} {:>10} {:>9} {:>12} {:>11} {:>9} {:>12}",
        "GROUP", "TOPIC", "DEPTH", "IN FLIGHT", "ACKED", "REDELIVERED", "DEAD", "OLDEST AGE"
    );
    for g in &stats.groups {
        let age = g.oldest_unacked_age_ms.map_or_else(
            || "-".to_string(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        println!(
            "{:<24} {:<24} {:>10} {:>9} {:>12} {:>11} {:>9} {:>12}",
            g.group,
            g.topic,
            g.depth,
            g.in_flight,
            g.acked_total,
            g.redelivered_total,
            g.dead_lettered_total,
            age
        );
    }
}

fn parse_header(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => bail!("expected a header as name=value, not {s:?}"),
    }
}

fn parse_start(s: &str) -> anyhow::Result<StartAt> {
    match s {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        _ => bail!("expected earliest or latest, not {s:?}"),
    }
}

fn parse_seek(s: &str) -> anyhow::Result<SeekTo> {
    Ok(match s {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        _ => match s.strip_prefix('@') {
            Some(ms) => SeekTo::Timestamp(
                ms.parse()
                    .with_context(|| format!("expected @<epoch milliseconds>, not {s:?}"))?,
            ),
            None => {
                let id: MessageId = s.parse()?;
                SeekTo::Offset {
                    partition: id.partition,
                    offset: id.offset,
                }
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_targets_parse() {
        assert_eq!(parse_seek("earliest").unwrap(), SeekTo::Earliest);
        assert_eq!(parse_seek("latest").unwrap(), SeekTo::Latest);
        assert_eq!(parse_seek("@1700").unwrap(), SeekTo::Timestamp(1700));
        assert_eq!(
            parse_seek("2-40").unwrap(),
            SeekTo::Offset {
                partition: 2,
                offset: 40
            }
        );
        assert!(parse_seek("yesterday").is_err());
        assert!(parse_seek("@soon").is_err());
    }

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_header("=x").is_err());
        assert!(parse_header("novalue").is_err());
    }
}
