//! Settling: each subscription's acker hands its calls to one settle task,
//! which coalesces whatever queued while the previous request was in
//! flight into one request per kind, answers each caller with its own ids'
//! statuses, and retries caller by caller when one spoils the whole.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use weir_api::wire::{SettleRequest, SettleResponse};
use weir_api::{Client, ClientError, SettleKind};

use crate::http::Shared;
use crate::http::conversion::bus_error;
use crate::message::{Settle, Settler};
use crate::{BusError, Result, SettleStatus};

/// Ids gathered into one settle request at most (a single call with more
/// still goes whole).
const MAX_IDS_PER_SETTLE: usize = 4096;
/// Settle calls queued per subscription before callers wait.
pub(super) const SETTLE_QUEUE: usize = 1024;

/// Settles ids of one topic and group by handing them to its settle task.
#[derive(Debug)]
pub(super) struct HttpSettler {
    pub(super) jobs: mpsc::Sender<Job>,
    pub(super) shared: Arc<Shared>,
}

/// One settle call waiting for its answer.
#[derive(Debug)]
pub(super) struct Job {
    ids: Vec<String>,
    how: Settle,
    reply: oneshot::Sender<Result<Vec<SettleStatus>>>,
    /// Counts the call as unanswered until the job is dropped.
    _pending: Pending,
}

/// One unanswered settle call, for `close` to wait on.
#[derive(Debug)]
struct Pending(Arc<Shared>);

impl Pending {
    fn new(shared: &Arc<Shared>) -> Pending {
        shared.settling.send_modify(|n| *n += 1);
        Pending(Arc::clone(shared))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.settling.send_modify(|n| *n -= 1);
    }
}

#[async_trait::async_trait]
impl Settler for HttpSettler {
    async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>> {
        // Counted before the check, so `close` either waits for this call
        // or this call sees the bus closed.
        let pending = Pending::new(&self.shared);
        self.shared.check_open()?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ids: ids.to_vec(),
            how,
            reply,
            _pending: pending,
        };
        self.jobs.send(job).await.map_err(|_| BusError::Closed)?;
        answer
            .await
            .map_err(|_| BusError::Internal("the settle task stopped".into()))?
    }
}

/// A subscription's settle task: until every acker is dropped, takes all
/// the calls queued and sends them as one request per kind.
pub(super) async fn run_settles(
    client: Client,
    topic: String,
    group: String,
    mut queued: mpsc::Receiver<Job>,
) {
    while let Some(first) = queued.recv().await {
        let mut count = first.ids.len();
        let mut jobs = vec![first];
        while count < MAX_IDS_PER_SETTLE {
            match queued.try_recv() {
                Ok(job) => {
                    count += job.ids.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        for (how, jobs) in by_kind(jobs) {
            settle_together(&client, &topic, &group, &how, jobs).await;
        }
    }
}

/// Jobs grouped by how they settle, groups in order of first appearance.
fn by_kind(jobs: Vec<Job>) -> Vec<(Settle, Vec<Job>)> {
    let mut groups: Vec<(Settle, Vec<Job>)> = Vec::new();
    for job in jobs {
        match groups.iter_mut().find(|(how, _)| *how == job.how) {
            Some((_, same)) => same.push(job),
            None => groups.push((job.how.clone(), vec![job])),
        }
    }
    groups
}

/// Sends the ids of `jobs` in one request and answers each job.
async fn settle_together(client: &Client, topic: &str, group: &str, how: &Settle, jobs: Vec<Job>) {
    let ids: Vec<String> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
    match send_settle(client, topic, group, how, ids).await {
        Ok(statuses) => {
            let mut rest = &statuses[..];
            for job in jobs {
                let (mine, others) = rest.split_at(job.ids.len());
                rest = others;
                let _ = job.reply.send(Ok(mine.to_vec()));
            }
        }
        // One job's malformed id, or the sum of them all, spoiled the
        // request: each job on its own gets its own answer.
        Err(e) if jobs.len() > 1 && matches!(e.status(), Some(400 | 413)) => {
            for job in jobs {
                let ids = job.ids.clone();
                let answer = send_settle(client, topic, group, how, ids).await;
                let _ = job.reply.send(answer.map_err(bus_error));
            }
        }
        Err(e) => {
            let e = bus_error(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One settle request; one status per id, in order.
async fn send_settle(
    client: &Client,
    topic: &str,
    group: &str,
    how: &Settle,
    ids: Vec<String>,
) -> Result<Vec<SettleStatus>, ClientError> {
    let (kind, delay_ms, reason) = match how {
        Settle::Ack => (SettleKind::Ack, None, None),
        Settle::Nack(delay) => (SettleKind::Nack, Some(delay.as_millis() as u64), None),
        Settle::Reject(reason) => (SettleKind::Reject, None, Some(reason.clone())),
    };
    let request = SettleRequest {
        topic: topic.to_string(),
        consumer_group: group.to_string(),
        message_id: None,
        message_ids: ids,
        delay_ms,
        reason,
    };
    let answer = client.settle(kind, &request).await?;
    statuses(&request.message_ids, answer)
}

/// The status of each id, in order: the broker answers in order, but a
/// reordered or deduplicated answer is matched by id.
fn statuses(ids: &[String], answer: SettleResponse) -> Result<Vec<SettleStatus>, ClientError> {
    let results = answer.results;
    if results.len() == ids.len() && results.iter().zip(ids).all(|(r, id)| r.message_id == *id) {
        return Ok(results.into_iter().map(|r| r.status).collect());
    }
    let by_id: HashMap<&str, SettleStatus> = results
        .iter()
        .map(|r| (r.message_id.as_str(), r.status))
        .collect();
    ids.iter()
        .map(|id| {
            by_id.get(id.as_str()).copied().ok_or_else(|| {
                ClientError::Decode(format!("the broker answered no status for message {id}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use weir_api::wire::SettleResult;

    use super::*;
    use crate::http::HttpBus;
    use crate::http::broker::{broker, bus, settle_answer};
    use crate::message::Acker;
    use crate::{Bus, SubscribeOptions};

    #[test]
    fn statuses_follow_the_ids_asked() {
        let ids: Vec<String> = ["0-1", "0-2", "0-1"].map(String::from).to_vec();
        let answer = |pairs: &[(&str, SettleStatus)]| SettleResponse {
            results: pairs
                .iter()
                .map(|&(id, status)| SettleResult {
                    message_id: id.into(),
                    status,
                })
                .collect(),
        };
        use SettleStatus::{AlreadyDone, Done, NotLeased};
        let in_order = answer(&[("0-1", Done), ("0-2", NotLeased), ("0-1", AlreadyDone)]);
        assert_eq!(
            statuses(&ids, in_order).unwrap(),
            [Done, NotLeased, AlreadyDone]
        );
        let by_id = answer(&[("0-2", NotLeased), ("0-1", Done)]);
        assert_eq!(statuses(&ids, by_id).unwrap(), [Done, NotLeased, Done]);
        let missing = answer(&[("0-1", Done)]);
        assert!(statuses(&ids, missing).is_err());
    }

    /// Starts the settle task of a subscription on `url` and gives its
    /// acker, as `subscribe` does.
    fn acker_on(bus: &HttpBus, url: &str) -> Acker {
        let (jobs, queued) = mpsc::channel(SETTLE_QUEUE);
        let client = Client::new(url, None).unwrap();
        tokio::spawn(run_settles(client, "t".into(), "g".into(), queued));
        Acker::new(Arc::new(HttpSettler {
            jobs,
            shared: Arc::clone(&bus.shared),
        }))
    }

    // A current-thread runtime runs every spawned call up to its queueing
    // before the settle task takes the first: the batching is deterministic.
    #[tokio::test]
    async fn concurrent_settles_share_requests_and_keep_their_own_answers() {
        let (url, seen) = broker(|_, seen| settle_answer(seen));
        let bus = bus(&url);
        let acker = acker_on(&bus, &url);
        let calls: Vec<(Vec<String>, Settle)> = vec![
            (vec!["0-1".into()], Settle::Ack),
            (vec!["0-2".into(), "0-3".into()], Settle::Ack),
            (vec!["garbage".into()], Settle::Ack),
            (vec!["0-4".into()], Settle::Nack(Duration::from_millis(5))),
            (vec!["0-5".into()], Settle::Ack),
            (vec!["0-6".into()], Settle::Nack(Duration::from_millis(5))),
            (vec!["0-7".into()], Settle::Nack(Duration::ZERO)),
            (vec!["0-8".into()], Settle::Reject("bad".into())),
        ];
        let tasks: Vec<_> = calls
            .iter()
            .map(|(ids, how)| {
                let (acker, ids, how) = (acker.clone(), ids.clone(), how.clone());
                tokio::spawn(async move { acker.settle(&ids, how).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        for ((ids, _), answer) in calls.iter().zip(&answers) {
            if ids[0] == "garbage" {
                assert!(matches!(answer, Err(BusError::Invalid(_))), "{answer:?}");
            } else {
                assert_eq!(
                    answer.as_ref().unwrap(),
                    &vec![SettleStatus::Done; ids.len()]
                );
            }
        }
        let requests: Vec<(String, SettleRequest)> = seen
            .try_iter()
            .map(|s| (s.line, serde_json::from_str(&s.body).unwrap()))
            .collect();
        let sent: Vec<(&str, Vec<&str>, Option<u64>)> = requests
            .iter()
            .map(|(line, r)| {
                let route = line.split(' ').nth(1).unwrap();
                let ids = r.message_ids.iter().map(String::as_str).collect();
                (route, ids, r.delay_ms)
            })
            .collect();
        assert_eq!(
            sent,
            [
                (
                    "/api/v1/queue/ack",
                    vec!["0-1", "0-2", "0-3", "garbage", "0-5"],
                    None
                ),
                ("/api/v1/queue/ack", vec!["0-1"], None),
                ("/api/v1/queue/ack", vec!["0-2", "0-3"], None),
                ("/api/v1/queue/ack", vec!["garbage"], None),
                ("/api/v1/queue/ack", vec!["0-5"], None),
                ("/api/v1/queue/nack", vec!["0-4", "0-6"], Some(5)),
                ("/api/v1/queue/nack", vec!["0-7"], Some(0)),
                ("/api/v1/queue/reject", vec!["0-8"], None),
            ]
        );
        assert_eq!(requests[7].1.reason.as_deref(), Some("bad"));
    }

    #[tokio::test]
    async fn close_waits_for_settles_and_refuses_what_follows() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let (url, _seen) = broker(move |_, seen| {
            gate.lock().unwrap().recv().unwrap();
            settle_answer(seen)
        });
        let bus = bus(&url);
        let acker = acker_on(&bus, &url);
        let ack = tokio::spawn({
            let acker = acker.clone();
            async move { acker.ack(&["0-1".to_string()]).await }
        });
        while *bus.shared.settling.borrow() == 0 {
            tokio::task::yield_now().await;
        }
        let close = tokio::spawn({
            let bus = bus.clone();
            async move { bus.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!close.is_finished(), "close waits for the ack in flight");
        gate_tx.send(()).unwrap();
        close.await.unwrap().unwrap();
        assert!(
            ack.is_finished(),
            "the ack was answered before close returned"
        );
        assert_eq!(ack.await.unwrap().unwrap(), [SettleStatus::Done]);
        assert_eq!(acker.ack(&["0-2".to_string()]).await, Err(BusError::Closed));
        assert_eq!(bus.stats().await.unwrap_err(), BusError::Closed);
        let err = bus.subscribe("t", "g", SubscribeOptions::new("c")).await;
        assert_eq!(err.unwrap_err(), BusError::Closed);
        bus.close().await.expect("closing twice");
    }
}
