//! [`Scripted`]: a bus for testing producers, whose publishes meet the
//! faults a test scripts — a refusal, a delay, a stall — and which records
//! every batch it takes. Feature `contract`, like the contract suite.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    Bus, BusError, Message, Receipt, Result, SeekTarget, Stats, SubscribeOptions, Subscription,
};

/// What a publish meets before it goes through.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The publish fails with this error.
    Refuse(BusError),
    /// The publish takes this long, then goes through.
    Delay(Duration),
    /// The publish never answers (a broker that accepted and hangs).
    Stall,
}

/// Publishes meet the next queued [`Fault`] ([`Scripted::then`]), else the
/// standing one ([`Scripted::set`]), else none; what goes through is
/// recorded and handed to the inner bus, if any.
#[derive(Debug)]
pub struct Scripted {
    inner: Option<Arc<dyn Bus>>,
    queued: Mutex<VecDeque<Fault>>,
    standing: Mutex<Option<Fault>>,
    faults: AtomicU64,
    batches: Mutex<Vec<Vec<Message>>>,
}

impl Scripted {
    /// Publishes go nowhere; everything but publishing is refused.
    pub fn sink() -> Scripted {
        Scripted::with(None)
    }

    /// Publishes go on to `inner`, and so does everything else.
    pub fn over(inner: Arc<dyn Bus>) -> Scripted {
        Scripted::with(Some(inner))
    }

    fn with(inner: Option<Arc<dyn Bus>>) -> Scripted {
        Scripted {
            inner,
            queued: Mutex::default(),
            standing: Mutex::default(),
            faults: AtomicU64::new(0),
            batches: Mutex::default(),
        }
    }

    /// The next publish not yet scripted meets `fault`.
    pub fn then(&self, fault: Fault) {
        self.queued.lock().unwrap().push_back(fault);
    }

    /// Every publish with no queued fault meets `fault` (none: goes through).
    pub fn set(&self, fault: Option<Fault>) {
        *self.standing.lock().unwrap() = fault;
    }

    /// Publishes refused or stalled so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    /// The size of every batch that went through, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Every message that went through, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.batches.lock().unwrap().concat()
    }

    fn inner(&self) -> Result<&Arc<dyn Bus>> {
        self.inner
            .as_ref()
            .ok_or_else(|| BusError::Invalid("a sink only takes publishes".into()))
    }
}

#[async_trait::async_trait]
impl Bus for Scripted {
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        let queued = self.queued.lock().unwrap().pop_front();
        let fault = queued.or_else(|| self.standing.lock().unwrap().clone());
        match fault {
            Some(Fault::Refuse(e)) => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                return Err(e);
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Stall) => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            None => {}
        }
        let receipts = match &self.inner {
            Some(inner) => inner.publish_batch(topic, messages.clone()).await?,
            None => (0..messages.len())
                .map(|i| Receipt {
                    id: i.to_string(),
                    timestamp_ms: 0,
                })
                .collect(),
        };
        self.batches.lock().unwrap().push(messages);
        Ok(receipts)
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.inner()?.subscribe(topic, group, options).await
    }

    async fn seek(&self, topic: &str, group: &str, to: SeekTarget) -> Result<()> {
        self.inner()?.seek(topic, group, to).await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner()?.stats().await
    }

    async fn close(&self) -> Result<()> {
        match &self.inner {
            Some(inner) => inner.close().await,
            None => Ok(()),
        }
    }
}
