//! `weir queue …`: any bus from a terminal, NDJSON in and out.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use weir_api::wire::{self, DeadLettersResponse, SeekTarget, StatsResponse};
use weir_bus::{Bus, Delivery, Message, Start, SubscribeOptions};

use crate::options::{BusOptions, parse_duration};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QueueCommand {
    /// Publish messages: the arguments, or else one message per line of stdin.
    Publish {
        #[command(flatten)]
        bus: BusOptions,
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
        bus: BusOptions,
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
        start: Start,
        /// A message not acked within this is delivered again.
        #[arg(long, value_parser = parse_duration)]
        visibility_timeout: Option<Duration>,
        /// Deliveries before a message goes to `<topic>.dlq`.
        #[arg(long)]
        max_deliveries: Option<u32>,
        /// Leave messages unacked (they return after the visibility timeout).
        #[arg(long)]
        no_ack: bool,
    },
    /// Move a group (replay or skip): to `earliest`, `latest`, the first
    /// message at or after a time in epoch milliseconds (`@1700000000000`),
    /// or one partition to an offset (`PARTITION-OFFSET`).
    Seek {
        #[command(flatten)]
        bus: BusOptions,
        topic: String,
        #[arg(long)]
        group: String,
        to: String,
    },
    /// Print topics and consumer groups with depth, in flight, acked,
    /// redelivered and dead-lettered counts.
    Stats {
        #[command(flatten)]
        bus: BusOptions,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a topic's dead letters as JSON lines (reason, origin, message),
    /// or publish them back to the topic with `--redrive`.
    Dlq {
        #[command(flatten)]
        bus: BusOptions,
        topic: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Publish the dead letters back to the topic instead of listing them.
        #[arg(long)]
        redrive: bool,
    },
}

pub(crate) async fn run(cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::Publish {
            bus,
            topic,
            messages,
            key,
            headers,
            batch,
        } => {
            let b = bus.connect().await?;
            let make = |payload: String| {
                let mut m = Message::new(payload);
                m.key = key.clone().map(Bytes::from);
                m.headers = headers.clone();
                m
            };
            let mut count = 0u64;
            if messages.is_empty() {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                let mut pending = Vec::new();
                while let Some(line) = lines.next_line().await.context("reading stdin")? {
                    pending.push(make(line));
                    if pending.len() >= batch.max(1) {
                        count += publish(&*b, &topic, std::mem::take(&mut pending)).await?;
                    }
                }
                if !pending.is_empty() {
                    count += publish(&*b, &topic, pending).await?;
                }
            } else {
                count += publish(&*b, &topic, messages.into_iter().map(make).collect()).await?;
            }
            b.close().await?;
            eprintln!("published {count} messages to {topic}");
            Ok(())
        }
        QueueCommand::Consume {
            bus,
            topic,
            group,
            consumer_id,
            max,
            idle,
            start,
            visibility_timeout,
            max_deliveries,
            no_ack,
        } => {
            let b = bus.connect().await?;
            let limit = max.unwrap_or(u64::MAX);
            let options = SubscribeOptions {
                start,
                visibility_timeout,
                max_deliveries,
                max_in_flight: limit.clamp(1, 1000) as usize,
                ..SubscribeOptions::new(consumer_id)
            };
            let mut sub = b
                .subscribe(&topic, &group, options)
                .await
                .with_context(|| format!("subscribing to {topic} as group {group}"))?;
            let acker = sub.acker();
            let mut seen = 0u64;
            while seen < limit {
                let want = (limit - seen).min(500) as usize;
                let batch = sub.receive(want, idle).await?;
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
                    let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
                    acker.ack(&ids).await?;
                }
                seen += batch.len() as u64;
            }
            drop(sub);
            b.close().await?;
            Ok(())
        }
        QueueCommand::Seek {
            bus,
            topic,
            group,
            to,
        } => {
            let target = parse_seek(&to)?;
            let b = bus.connect().await?;
            b.seek(&topic, &group, target)
                .await
                .with_context(|| format!("moving group {group} of {topic}"))?;
            b.close().await?;
            Ok(())
        }
        QueueCommand::Stats { bus, json } => {
            let b = bus.connect().await?;
            let stats = b.stats().await?;
            b.close().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&stats);
            }
            Ok(())
        }
        QueueCommand::Dlq {
            bus,
            topic,
            limit,
            redrive,
        } => dead_letters(&bus, &topic, limit, redrive).await,
    }
}

async fn publish(b: &dyn Bus, topic: &str, messages: Vec<Message>) -> anyhow::Result<u64> {
    let n = messages.len() as u64;
    b.publish_batch(topic, messages)
        .await
        .with_context(|| format!("publishing to {topic}"))?;
    Ok(n)
}

/// Dead letters are an operation of the broker (or, embedded, of the queue
/// itself), not of the bus contract.
async fn dead_letters(
    bus: &BusOptions,
    topic: &str,
    limit: usize,
    redrive: bool,
) -> anyhow::Result<()> {
    let (listed, redriven): (Option<DeadLettersResponse>, usize) =
        if let Some(path) = bus.url().strip_prefix("embedded://") {
            let b = weir_bus::embedded::EmbeddedBus::open(path, &bus.connect_options()).await?;
            let out = if redrive {
                let n = weir_server::redrive_dead_letters(b.queue(), topic, Some(limit)).await?;
                (None, n)
            } else {
                (
                    Some(weir_server::list_dead_letters(b.queue(), topic, limit)?),
                    0,
                )
            };
            b.close().await?;
            out
        } else {
            let client = weir_api::Client::new(bus.url(), bus.auth_token.clone())?;
            if redrive {
                let request = wire::RedriveRequest {
                    topic: topic.to_string(),
                    max: Some(limit),
                };
                (None, client.redrive(&request).await?.redriven)
            } else {
                (Some(client.dead_letters(topic, Some(limit)).await?), 0)
            }
        };
    match listed {
        Some(list) => {
            let mut out = String::new();
            for letter in &list.messages {
                out.push_str(&serde_json::to_string(letter)?);
                out.push('\n');
            }
            print!("{out}");
        }
        None => eprintln!("redrove {redriven} dead letters to {topic}"),
    }
    Ok(())
}

/// A delivery as one JSON line: the payload inline when it is JSON, else
/// as text (or base64, with `payload_encoding` saying which).
pub(crate) fn delivery_json(d: &Delivery) -> Value {
    let (payload, encoding) = wire::encode_payload(&d.payload);
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let mut line = json!({
        "id": d.id,
        "topic": d.topic,
        "key": d.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "payload": payload,
        "headers": headers,
        "timestamp": wire::format_timestamp(d.timestamp_ms),
        "delivery_count": d.delivery_count,
    });
    if !encoding.is_json() {
        line["payload_encoding"] = json!(encoding);
    }
    line
}

fn print_stats(stats: &StatsResponse) {
    println!(
        "{:<32} {:>10} {:>12} {:>12} {:>14} {:>10} {:>10}",
        "TOPIC", "PARTITIONS", "MESSAGES", "DEPTH", "BYTES", "DEAD", "PUB/S"
    );
    for t in &stats.topics {
        println!(
            "{:<32} {:>10} {:>12} {:>12} {:>14} {:>10} {:>10.0}",
            t.topic,
            t.partitions,
            t.messages,
            t.queue_depth,
            t.bytes,
            t.dead_letter_count,
            t.publish_rate
        );
    }
    if stats.consumer_groups.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<24} {:<24} {:>9} {:>10} {:>9} {:>12} {:>11} {:>9} {:>12}",
        "GROUP",
        "TOPIC",
        "CONSUMERS",
        "PENDING",
        "IN FLIGHT",
        "ACKED",
        "REDELIVERED",
        "DEAD",
        "OLDEST AGE"
    );
    for g in &stats.consumer_groups {
        let age = g.oldest_unacked_age_ms.map_or_else(
            || "-".to_string(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        println!(
            "{:<24} {:<24} {:>9} {:>10} {:>9} {:>12} {:>11} {:>9} {:>12}",
            g.consumer_group,
            g.topic,
            g.consumer_count,
            g.pending_messages,
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

fn parse_start(s: &str) -> anyhow::Result<Start> {
    match s {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        _ => bail!("expected earliest or latest, not {s:?}"),
    }
}

fn parse_seek(s: &str) -> anyhow::Result<SeekTarget> {
    Ok(match s {
        "earliest" => SeekTarget::Earliest,
        "latest" => SeekTarget::Latest,
        _ => match s.strip_prefix('@') {
            Some(ms) => SeekTarget::TimestampMs(
                ms.parse()
                    .with_context(|| format!("expected @<epoch milliseconds>, not {s:?}"))?,
            ),
            None => {
                let id: weir_queue::MessageId = s.parse()?;
                SeekTarget::Offset {
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
        assert_eq!(parse_seek("earliest").unwrap(), SeekTarget::Earliest);
        assert_eq!(parse_seek("latest").unwrap(), SeekTarget::Latest);
        assert_eq!(parse_seek("@1700").unwrap(), SeekTarget::TimestampMs(1700));
        assert_eq!(
            parse_seek("2-40").unwrap(),
            SeekTarget::Offset {
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
