use std::collections::BTreeSet;
use std::time::Duration;

use weir_queue::{Message, MessageId};

use crate::{member, open, rules};

#[tokio::test]
async fn group_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let all: BTreeSet<String> = (0..100).map(|i| format!("m{i}")).collect();
    let acked: BTreeSet<String>;
    let in_flight: Vec<(MessageId, u32)>;
    {
        let q = open(dir.path()).await;
        let msgs = all.iter().map(|p| Message::new(p.clone())).collect();
        q.publish_batch("t", msgs).await.unwrap();
        let c = q
            .subscribe("t", "g", member("c", rules(Duration::from_secs(60), 5)))
            .unwrap();
        let got = c.receive(60, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 60);
        let (ack, keep) = got.split_at(40);
        c.ack(&ack.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
        acked = ack
            .iter()
            .map(|d| String::from_utf8(d.record.payload.to_vec()).unwrap())
            .collect();
        in_flight = keep.iter().map(|d| (d.id, d.delivery_count)).collect();
        drop(c);
        q.close().await.unwrap();
    }
    let q = open(dir.path()).await;
    let c = q
        .subscribe("t", "g", member("c2", rules(Duration::from_secs(60), 5)))
        .unwrap();
    let mut seen = BTreeSet::new();
    loop {
        let got = c.receive(100, Duration::from_millis(100)).await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in &got {
            let payload = String::from_utf8(d.record.payload.to_vec()).unwrap();
            assert!(!acked.contains(&payload), "acked {payload} came back");
            if let Some((_, count)) = in_flight.iter().find(|(id, _)| *id == d.id) {
                assert_eq!(
                    d.delivery_count,
                    count + 1,
                    "delivery count kept across restart"
                );
            }
            seen.insert(payload);
        }
        c.ack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let expected: BTreeSet<String> = all.difference(&acked).cloned().collect();
    assert_eq!(
        seen, expected,
        "everything unacked delivered again, nothing lost"
    );
    let stats = q.stats().unwrap();
    assert_eq!(
        stats.groups.iter().find(|g| g.topic == "t").unwrap().depth,
        0
    );
}
