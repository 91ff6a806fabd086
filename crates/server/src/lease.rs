//! Per-connection in-flight accounting, so a slow SSE consumer is never
//! flooded: a connection stops being sent messages while it holds its limit
//! of unsettled ones. Settling an id (ack, nack, reject) frees it wherever it
//! is held; an id whose lease has expired frees itself, since the queue will
//! deliver it again, perhaps elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_queue::MessageId;

/// Topic and group.
type GroupKey = (String, String);

/// Every connection's holder, by topic and group.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    groups: Mutex<HashMap<GroupKey, Vec<Weak<Holder>>>>,
}

impl Leases {
    /// A new holder for one connection; it unregisters when dropped.
    pub(crate) fn register(&self, topic: &str, group: &str, limit: usize) -> Arc<Holder> {
        let holder = Arc::new(Holder {
            limit: limit.max(1),
            held: Mutex::new(Held::default()),
            freed: Notify::new(),
        });
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let list = groups
            .entry((topic.to_string(), group.to_string()))
            .or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&holder));
        holder
    }

    /// Frees settled ids from whichever connection holds them.
    pub(crate) fn release(&self, topic: &str, group: &str, ids: &[MessageId]) {
        let holders: Vec<Arc<Holder>> = {
            let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            match groups.get(&(topic.to_string(), group.to_string())) {
                Some(list) => list.iter().filter_map(Weak::upgrade).collect(),
                None => return,
            }
        };
        for h in holders {
            h.release(ids);
        }
    }
}

/// The unsettled messages of one connection.
#[derive(Debug)]
pub(crate) struct Holder {
    limit: usize,
    held: Mutex<Held>,
    /// Woken when ids are freed.
    pub(crate) freed: Notify,
}

/// Held ids with their expiry, and the same in the order they expire (one
/// connection has one visibility timeout, so holding order is expiry
/// order): `room` costs what expired, not what is held.
#[derive(Debug, Default)]
struct Held {
    by_id: HashMap<MessageId, Instant>,
    /// May also hold settled ids, skipped lazily and compacted when they
    /// outnumber the live ones.
    order: VecDeque<(Instant, MessageId)>,
}

impl Holder {
    /// Notes a message sent, held until settled or until `expires`.
    pub(crate) fn hold(&self, id: MessageId, expires: Instant) {
        let mut held = self.lock();
        held.by_id.insert(id, expires);
        held.order.push_back((expires, id));
    }

    /// How many more messages may be sent now, and when an expiry will next
    /// make room.
    pub(crate) fn room(&self, now: Instant) -> (usize, Option<Instant>) {
        let mut held = self.lock();
        while let Some(&(expires, id)) = held.order.front() {
            let live = held.by_id.get(&id) == Some(&expires);
            if live && expires > now {
                break;
            }
            if live {
                held.by_id.remove(&id);
            }
            held.order.pop_front();
        }
        let next = held.order.front().map(|(expires, _)| *expires);
        (self.limit.saturating_sub(held.by_id.len()), next)
    }

    fn release(&self, ids: &[MessageId]) {
        let mut held = self.lock();
        let before = held.by_id.len();
        for id in ids {
            held.by_id.remove(id);
        }
        let freed = held.by_id.len() < before;
        if held.order.len() > 2 * held.by_id.len() + 1024 {
            let Held { by_id, order } = &mut *held;
            order.retain(|(expires, id)| by_id.get(id) == Some(expires));
        }
        drop(held);
        if freed {
            self.freed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(offset: u64) -> MessageId {
        MessageId {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn room_shrinks_with_holds_and_grows_with_releases_and_expiry() {
        let leases = Leases::default();
        let now = Instant::now();
        let a = leases.register("t", "g", 3);
        let b = leases.register("t", "g", 3);
        let other = leases.register("t", "other", 3);
        a.hold(id(2), now + Duration::from_secs(1));
        a.hold(id(1), now + Duration::from_secs(10));
        b.hold(id(3), now + Duration::from_secs(10));
        other.hold(id(1), now + Duration::from_secs(10));
        assert_eq!(a.room(now), (1, Some(now + Duration::from_secs(1))));
        leases.release("t", "g", &[id(1), id(3), id(9)]);
        assert_eq!(a.room(now).0, 2);
        assert_eq!(b.room(now), (3, None));
        assert_eq!(other.room(now).0, 2, "another group's hold stays");
        assert_eq!(a.room(now + Duration::from_secs(2)), (3, None), "expired");
        drop(b);
        leases.release("t", "g", &[id(2)]);
        let c = leases.register("t", "g", 0);
        assert_eq!(c.room(now).0, 1, "a limit is at least one");

        // Held again (redelivered here): the later expiry counts.
        let d = leases.register("t", "d", 2);
        d.hold(id(5), now + Duration::from_secs(1));
        d.hold(id(5), now + Duration::from_secs(10));
        assert_eq!(d.room(now + Duration::from_secs(2)).0, 1);
        // Many holds settled: the expiry queue is compacted.
        for n in 0..5000 {
            d.hold(id(100 + n), now + Duration::from_secs(10));
            leases.release("t", "d", &[id(100 + n)]);
        }
        assert!(d.lock().order.len() < 2100, "{}", d.lock().order.len());
        assert_eq!(d.room(now).0, 1);
    }
}
