//! The cluster backend against real NATS servers: three `nats-server` processes with
//! JetStream, clustered on loopback (tests/cluster/nats.rs).
//!
//! Partition leases: one holder at a time, taken over only once run out, and a node
//! fenced out by a takeover cannot write under its old lease, even while it still
//! believes it holds it; the leases survive losing any one NATS server.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "cluster/nats.rs"]
mod nats;
#[path = "support/ports.rs"]
mod ports;

use std::time::{Duration, Instant};

use bytes::Bytes;
use colloquy::test_support::{
    cluster_connect, lease_subject, state_stream, LeaseError, LeaseTable, Ownership,
};
use nats::NatsCluster;
use ports::free_port;

/// The state stream once the cluster has elected its JetStream leaders (a few seconds
/// after the servers start, or after one is lost).
async fn table(cluster: &NatsCluster, node: &str, ttl: Duration) -> LeaseTable {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jetstream = cluster_connect(&cluster.urls()).await.expect("connects");
        match state_stream(&jetstream).await {
            Ok(stream) => return LeaseTable::new(jetstream, stream, node, ttl),
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for JetStream: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("JetStream never became ready: {error}"),
        }
    }
}

/// The events stream once the cluster has elected its JetStream leaders.
async fn events(
    cluster: &NatsCluster,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::stream::Stream,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
        match colloquy::test_support::events_stream(&jetstream).await {
            Ok(stream) => return (jetstream, stream),
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Retries `attempt` while the cluster has no leader for the stream (after a server is
/// killed), up to 30 s.
async fn patiently<T>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, LeaseError>,
) -> Result<T, LeaseError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Err(LeaseError::Nats(error)) if Instant::now() < deadline => {
                eprintln!("{what}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_partition_has_one_holder_until_its_lease_runs_out() {
    let cluster = NatsCluster::start();
    let ttl = Duration::from_millis(1_500);
    let a = table(&cluster, "node-a", ttl).await;
    let b = table(&cluster, "node-b", ttl).await;

    let lease = a.acquire(3).await.expect("a free partition is taken");
    match b.acquire(3).await {
        Err(LeaseError::Held { node, .. }) => assert_eq!(node, "node-a"),
        other => panic!("b took a held partition: {other:?}"),
    }
    // Another partition is independent.
    b.acquire(4).await.expect("b takes a free partition");
    // Renewing moves the token forward and keeps b out.
    let renewed = a.renew(&lease).await.unwrap();
    assert!(renewed.token > lease.token);
    assert!(matches!(b.acquire(3).await, Err(LeaseError::Held { .. })));

    // Once a stops renewing and the lease runs out, b takes it over.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let taken = b.acquire(3).await.expect("an expired lease is taken over");
    assert!(taken.token > renewed.token);
    assert_eq!(
        b.holder(3).await.unwrap().record.unwrap().node,
        "node-b",
        "the lease message names the new holder"
    );
}

#[tokio::test]
async fn a_node_fenced_out_by_a_takeover_can_neither_renew_nor_write() {
    let cluster = NatsCluster::start();
    let ttl = Duration::from_millis(800);
    let old = table(&cluster, "old", ttl).await;
    let new = table(&cluster, "new", ttl).await;
    let subject = "colloquy.conv.7.page-user".to_string();

    let lease = old.acquire(7).await.unwrap();
    old.publish_fenced(&lease, subject.clone(), Bytes::from_static(b"turn 1"))
        .await
        .expect("the holder writes under its lease");

    // The old holder stalls (a GC pause, a partition from NATS) past its lease...
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let takeover = new.acquire(7).await.unwrap();
    // ...and comes back still holding its old lease: the server refuses its writes.
    let refused = old
        .publish_fenced(
            &lease,
            subject.clone(),
            Bytes::from_static(b"turn 2 (stale)"),
        )
        .await;
    assert!(
        matches!(refused, Err(LeaseError::Fenced { partition: 7 })),
        "{refused:?}"
    );
    assert!(matches!(
        old.renew(&lease).await,
        Err(LeaseError::Fenced { .. })
    ));
    // The new holder writes; a renewal of its own moves the token, and a write under the
    // token it held before that is refused too.
    new.publish_fenced(&takeover, subject.clone(), Bytes::from_static(b"turn 2"))
        .await
        .expect("the new holder writes");
    let renewed = new.renew(&takeover).await.unwrap();
    assert!(matches!(
        new.publish_fenced(&takeover, subject.clone(), Bytes::new())
            .await,
        Err(LeaseError::Fenced { .. })
    ));
    new.publish_fenced(&renewed, subject, Bytes::from_static(b"turn 3"))
        .await
        .unwrap();
    // Giving the lease back frees it at once.
    new.release(&renewed).await.unwrap();
    old.acquire(7).await.expect("a released lease is free");
}

#[tokio::test]
async fn leases_survive_losing_one_nats_server() {
    let mut cluster = NatsCluster::start();
    let ttl = Duration::from_secs(30);
    let a = table(&cluster, "node-a", ttl).await;
    let lease = a.acquire(1).await.unwrap();
    assert_eq!(
        lease_subject(1),
        "colloquy.lease.1",
        "the subject scripts read"
    );

    cluster.kill_server(0);
    // Replicated three ways: the two survivors still know who holds the partition, and
    // the holder keeps renewing through them.
    let b = table(&cluster, "node-b", ttl).await;
    let held = patiently("acquire", || b.acquire(1)).await;
    assert!(
        matches!(held, Err(LeaseError::Held { ref node, .. }) if node == "node-a"),
        "{held:?}"
    );
    let renewed = patiently("renew", || a.renew(&lease)).await.unwrap();
    assert!(renewed.token > lease.token);

    cluster.start_server(0);
    let after = patiently("renew after the restart", || a.renew(&renewed))
        .await
        .unwrap();
    assert!(after.token > renewed.token);
}

/// Every partition's holder, as the lease messages say (`None`: free or run out).
async fn holders(table: &LeaseTable, partitions: u32) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for partition in 0..partitions {
        holders.push(live_holder(table.holder(partition).await.unwrap()));
    }
    holders
}

/// The node a lease names while it has not run out (`None`: free or run out).
fn live_holder(holder: colloquy::test_support::Holder) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    holder
        .record
        .filter(|r| !r.node.is_empty() && r.until > now)
        .map(|r| r.node)
}

async fn ownership(cluster: &NatsCluster, node: &str, ttl: Duration) -> Ownership {
    let table = table(cluster, node, ttl).await;
    let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
    let stream = state_stream(&jetstream).await.unwrap();
    Ownership::new(table, stream, PARTITIONS)
}

const PARTITIONS: u32 = 6;

/// Runs a round on each node until `settled` says the table is as wanted; how long it
/// took.
async fn rounds_until(
    nodes: &mut [&mut Ownership],
    observer: &LeaseTable,
    settled: impl Fn(&[Option<String>]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        for node in nodes.iter_mut() {
            node.round().await.expect("a round");
        }
        let table = holders(observer, PARTITIONS).await;
        if settled(&table) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never settled: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(table: &[Option<String>], node: &str) -> usize {
    table.iter().filter(|h| h.as_deref() == Some(node)).count()
}

#[tokio::test]
async fn nodes_share_the_partitions_a_dead_nodes_go_to_the_survivors_and_a_new_node_gets_its_share()
{
    let cluster = NatsCluster::start();
    let ttl = Duration::from_millis(1_500);
    let observer = table(&cluster, "observer", ttl).await;
    let mut a = ownership(&cluster, "a", ttl).await;
    let mut b = ownership(&cluster, "b", ttl).await;
    let mut c = ownership(&cluster, "c", ttl).await;

    rounds_until(&mut [&mut a, &mut b, &mut c], &observer, |table| {
        ["a", "b", "c"].iter().all(|node| count(table, node) == 2)
    })
    .await;
    let mut all: Vec<u32> = [a.held(), b.held(), c.held()].concat();
    all.sort();
    assert_eq!(all, (0..PARTITIONS).collect::<Vec<_>>(), "each held once");
    // The node's writers see exactly the leases held, with their current tokens.
    {
        let shared = a.shared();
        let shared = shared.read().unwrap();
        let mut seen: Vec<u32> = shared.keys().copied().collect();
        seen.sort();
        assert_eq!(seen, a.held());
        for (partition, held) in shared.iter() {
            assert_eq!(Some(&held.lease), a.lease(*partition));
        }
    }

    // c dies without a word: once its heartbeat and leases run out, a and b share its
    // partitions.
    let c_held = c.held();
    drop(c);
    let failover = rounds_until(&mut [&mut a, &mut b], &observer, |table| {
        count(table, "a") == 3 && count(table, "b") == 3
    })
    .await;
    eprintln!("failover of {c_held:?} took {failover:?} (lease ttl {ttl:?})");
    assert!(c_held
        .iter()
        .all(|p| a.held().contains(p) || b.held().contains(p)));

    // d joins: a and b give back what exceeds the new share, and d takes it.
    let mut d = ownership(&cluster, "d", ttl).await;
    rounds_until(&mut [&mut a, &mut b, &mut d], &observer, |table| {
        ["a", "b", "d"].iter().all(|node| count(table, node) == 2)
    })
    .await;

    // A clean stop gives the leases back at once: no waiting for them to run out.
    d.release_all().await.unwrap();
    let table = holders(&observer, PARTITIONS).await;
    assert_eq!(count(&table, "d"), 0);
    assert_eq!(table.iter().filter(|h| h.is_none()).count(), 2);
}

/// Every renewal and heartbeat is a message: a node prunes the ones it superseded (all
/// but the last of each of its subjects), so the state stream does not grow with time,
/// and its leases stay what fenced writes are checked against.
#[tokio::test]
async fn superseded_lease_and_heartbeat_messages_are_pruned() {
    use futures_util::TryStreamExt;

    let cluster = NatsCluster::start();
    let ttl = Duration::from_secs(30);
    let mut node = ownership(&cluster, "a", ttl).await;
    for _ in 0..60 {
        node.round().await.expect("a round");
    }
    assert_eq!(node.held().len(), PARTITIONS as usize);
    let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
    let stream = state_stream(&jetstream).await.unwrap();
    let counts: Vec<(String, usize)> = stream
        .info_with_subjects("colloquy.>")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(counts.len(), PARTITIONS as usize + 1, "{counts:?}");
    // 61 messages each without pruning (a take or a heartbeat, then 60 renewals or
    // heartbeats); pruned every 40 rounds, at most 21.
    for (subject, count) in &counts {
        assert!(*count <= 21, "{subject}: {count} messages kept");
    }
    // The leases are intact: renewals still succeed, and so does a write fenced by one.
    node.round().await.expect("a round after pruning");
    let lease = node.lease(0).unwrap().clone();
    let table = table(&cluster, "a", ttl).await;
    table
        .publish_fenced(&lease, "colloquy.conv.0.x".into(), "{}".into())
        .await
        .expect("a write under the current lease");
}

#[tokio::test]
async fn intake_stores_each_event_once_on_its_conversations_partition_even_without_a_server() {
    use colloquy::event::{parse_envelope, Channel};
    use colloquy::test_support::{events_subject, partition_of, publish_events};

    let mut cluster = NatsCluster::start();
    let (jetstream, stream) = events(&cluster).await;
    let body = |first: u32| {
        let items: Vec<serde_json::Value> = (first..first + 10)
            .map(|i| {
                serde_json::json!({"sender": {"id": format!("u{}", i % 3)}, "recipient": {"id": "1001"},
                    "timestamp": 1_000 + i, "message": {"mid": format!("m.{i}"), "text": "hi"}})
            })
            .collect();
        serde_json::json!({"object": "page", "entry": [{"id": "1001", "time": 1, "messaging": items}]})
            .to_string()
    };
    let events = parse_envelope(body(0).as_bytes()).unwrap();
    assert_eq!(publish_events(&jetstream, &events, 4).await.unwrap(), 10);
    // Meta redelivers the same POST: the server drops every event of it.
    assert_eq!(publish_events(&jetstream, &events, 4).await.unwrap(), 0);

    // Each conversation's events are on its own partition's subject, in order.
    for user in ["u0", "u1", "u2"] {
        let partition = partition_of(Channel::Messenger, "1001", user, 4);
        let last = stream
            .get_last_raw_message_by_subject(&events_subject(partition))
            .await
            .unwrap();
        let record: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(record["page_id"], "1001");
    }
    let mut info = stream.clone();
    assert_eq!(info.info().await.unwrap().state.messages, 10);

    // With one NATS server gone, the other two still take (and acknowledge) events.
    cluster.kill_server(2);
    let more = parse_envelope(body(10).as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match publish_events(&jetstream, &more, 4).await {
            Ok(_) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    assert_eq!(info.info().await.unwrap().state.messages, 20);
}

#[tokio::test]
async fn a_new_owner_replays_a_partitions_turns_and_the_fenced_owner_commits_nothing() {
    use colloquy::test_support::{
        publish_turn, replay_partition, ConversationKey, ConversationRecord, Store,
        TranscriptEntry, TurnCommit,
    };

    let cluster = NatsCluster::start();
    let ttl = Duration::from_millis(800);
    let a = table(&cluster, "a", ttl).await;
    let lease = a.acquire(2).await.unwrap();
    let key = ConversationKey::new("1001", "u-7");
    let mut record = ConversationRecord::new(&key);
    let mut turn = |n: i64| {
        record.state = serde_json::json!({ "n": n });
        let seq = record.take_entry_seq();
        let entry = TranscriptEntry::queued_out("text", Some(format!("reply {n}")), 1_000 + n);
        TurnCommit {
            conversation: Some(record.clone()),
            new_entries: vec![(seq, entry)],
            ..TurnCommit::default()
        }
    };
    for n in 1..=3 {
        publish_turn(&a, &lease, &turn(n))
            .await
            .expect("a turn under the lease");
    }

    // a stalls past its lease; b takes the partition over; a's next turn is refused.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let b = table(&cluster, "b", ttl).await;
    b.acquire(2).await.unwrap();
    let stale = publish_turn(&a, &lease, &turn(4)).await;
    assert!(
        matches!(stale, Err(LeaseError::Fenced { partition: 2 })),
        "{stale:?}"
    );

    // b rebuilds the partition in its own store from the stream: the three committed
    // turns, in order, and nothing of the refused one.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
    let stream = state_stream(&jetstream).await.unwrap();
    assert_eq!(replay_partition(&stream, 2, &store).await.unwrap(), 3);
    let replayed = store.conversation(&key).unwrap().expect("the conversation");
    assert_eq!(replayed.state, serde_json::json!({ "n": 3 }));
    assert_eq!(replayed.next_entry, 3);
    let texts: Vec<Option<String>> = store
        .transcript(&key)
        .unwrap()
        .into_iter()
        .map(|(_, entry)| entry.text)
        .collect();
    assert_eq!(
        texts,
        ["reply 1", "reply 2", "reply 3"].map(|t| Some(t.to_string()))
    );
    assert_eq!(replay_partition(&stream, 5, &store).await.unwrap(), 0);
}

#[tokio::test]
async fn cluster_status_shows_the_nodes_and_who_holds_each_partition() {
    let cluster = NatsCluster::start();
    let ttl = Duration::from_secs(30);
    let mut a = ownership(&cluster, "node-a", ttl).await;
    a.round().await.unwrap();
    assert_eq!(
        a.held(),
        (0..PARTITIONS).collect::<Vec<_>>(),
        "alone, it holds all"
    );
    // Partition 2's consumer has three events it has not handled: its lag.
    let (jetstream, events_stream) = events(&cluster).await;
    let waiting: Vec<_> = (0..3)
        .map(|n| {
            let body = helpers::text_message("lagging", &format!("m.lag{n}"), "hi", n);
            colloquy::event::parse_envelope(body.as_bytes())
                .unwrap()
                .remove(0)
        })
        .collect();
    let lagging = colloquy::test_support::partition_of(
        colloquy::event::Channel::Messenger,
        helpers::PAGE_ID,
        "lagging",
        8,
    );
    // A new stream may not be known yet to the server this connection asks (CI saw "no
    // stream found for given subject"); each event carries its id, so a retry adds
    // nothing twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = colloquy::test_support::publish_events(&jetstream, &waiting, 8).await {
        assert!(Instant::now() < deadline, "{error}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    colloquy::test_support::PartitionEvents::open(&events_stream, lagging, Duration::from_secs(5))
        .await
        .unwrap();

    let urls = cluster.urls();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .args(["cluster", "status", "--cluster", &urls, "--partitions", "8"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("node-a"), "{out}");
    assert!(out.contains("alive ("), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 8, "{out}");
    for (partition, row) in rows.iter().enumerate() {
        let lag = row.split_whitespace().nth(2).unwrap();
        let expected = if partition as u32 == lagging {
            "3"
        } else {
            "-"
        };
        assert_eq!(lag, expected, "{row}");
    }
    for row in &rows[..6] {
        assert!(row.contains("node-a") && row.contains("held,"), "{row}");
    }
    for row in &rows[6..] {
        assert!(row.ends_with("free"), "{row}");
    }
}

#[tokio::test]
async fn a_replayed_outbox_owes_only_the_replies_whose_send_never_ended() {
    use colloquy::test_support::{
        publish_outcome, publish_turn, replay_partition, ConversationKey, ConversationRecord,
        OutboxRecord, Outgoing, SendOutcome, Store, TranscriptEntry, TurnCommit,
    };

    let cluster = NatsCluster::start();
    let a = table(&cluster, "a", Duration::from_secs(30)).await;
    let lease = a.acquire(1).await.unwrap();
    let key = ConversationKey::new("1001", "u-out");
    let mut record = ConversationRecord::new(&key);
    let mut turn_with_reply = |text: &str| {
        let entry = record.take_entry_seq();
        let item = OutboxRecord {
            page_id: key.page_id.clone(),
            psid: key.psid.clone(),
            entry,
            outgoing: Outgoing::Callback {
                url: "http://127.0.0.1:9/hook".into(),
                body: serde_json::json!({ "text": text }),
            },
            attempts: 0,
            created_at: 1_000,
            channel: Default::default(),
        };
        let commit = TurnCommit {
            conversation: Some(record.clone()),
            new_entries: vec![(
                entry,
                TranscriptEntry::queued_out("callback", Some(text.into()), 1_000),
            )],
            // The owner's local id: replay gives the item one of its own store's.
            outbox: vec![(900 + entry, item.clone())],
            ..TurnCommit::default()
        };
        (commit, item)
    };
    let (first, first_item) = turn_with_reply("first");
    let (second, _) = turn_with_reply("second");
    publish_turn(&a, &lease, &first).await.unwrap();
    let sent = SendOutcome::Sent {
        message_id: Some("m_sent_1".into()),
        at: 2_000,
    };
    publish_outcome(&a, &lease, &first_item, &sent)
        .await
        .unwrap();
    // The owner dies with the second reply decided but its send never ended.
    publish_turn(&a, &lease, &second).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
    let stream = state_stream(&jetstream).await.unwrap();
    assert_eq!(replay_partition(&stream, 1, &store).await.unwrap(), 3);

    let owed = store.pending_outbox().unwrap();
    assert_eq!(
        owed.len(),
        1,
        "only the reply whose send never ended: {owed:?}"
    );
    assert_eq!(owed[0].1.entry, 1);
    let transcript = store.transcript(&key).unwrap();
    assert_eq!(transcript[0].1.status, colloquy::test_support::Status::Sent);
    assert_eq!(transcript[0].1.mid.as_deref(), Some("m_sent_1"));
    assert_eq!(
        transcript[1].1.status,
        colloquy::test_support::Status::Queued
    );
}

#[tokio::test]
async fn a_partitions_consumer_delivers_in_order_and_a_new_owner_gets_only_what_was_not_acked() {
    use colloquy::event::parse_envelope;
    use colloquy::test_support::{publish_events, PartitionEvents};

    let cluster = NatsCluster::start();
    let (jetstream, stream) = events(&cluster).await;
    let items: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({"sender": {"id": format!("u{}", i % 3)}, "recipient": {"id": "1001"},
                "timestamp": 1_000 + i, "message": {"mid": format!("m.c{i}"), "text": format!("n{i}")}})
        })
        .collect();
    let body = serde_json::json!({"object": "page", "entry": [{"id": "1001", "time": 1, "messaging": items}]})
        .to_string();
    let events = parse_envelope(body.as_bytes()).unwrap();
    // One partition: every event on it, in the order published.
    publish_events(&jetstream, &events, 1).await.unwrap();

    let ack_wait = Duration::from_secs(1);
    let mut owner = PartitionEvents::open(&stream, 0, ack_wait).await.unwrap();
    assert_eq!(owner.lag().await.unwrap(), 10);
    let batch = owner.next_batch(100, Duration::from_secs(2)).await.unwrap();
    let texts: Vec<&str> = batch.iter().filter_map(|d| d.event.text()).collect();
    assert_eq!(texts, (0..10).map(|i| format!("n{i}")).collect::<Vec<_>>());
    assert!(batch.iter().all(|d| !d.redelivered));
    for delivered in &batch[..6] {
        delivered.ack().await.unwrap();
    }
    // The owner dies with four events unfinished; the next owner opens the same durable
    // consumer and gets exactly those, once the ack wait ran out.
    drop(batch);
    drop(owner);
    let next = PartitionEvents::open(&stream, 0, ack_wait).await.unwrap();
    let again = fetch_at_least(&next, 4).await;
    let texts: Vec<&str> = again.iter().filter_map(|d| d.event.text()).collect();
    assert_eq!(texts, ["n6", "n7", "n8", "n9"]);
    assert!(again.iter().all(|d| d.redelivered));
    // Handed back (a turn failed): the server confirms each, and they come again, in
    // order, ahead of anything later.
    for (_, receipt) in again.into_iter().map(|d| d.split()) {
        receipt
            .nak_confirmed()
            .await
            .expect("the server confirms a hand-back");
    }
    let again = fetch_at_least(&next, 4).await;
    let texts: Vec<&str> = again.iter().filter_map(|d| d.event.text()).collect();
    assert_eq!(texts, ["n6", "n7", "n8", "n9"]);
    for delivered in &again {
        delivered.ack().await.unwrap();
    }
    let nothing = next
        .next_batch(100, Duration::from_millis(1_500))
        .await
        .unwrap();
    assert!(nothing.is_empty(), "acknowledged events never come again");
    // A work queue: what every consumer acknowledged is gone from the stream, and a
    // redelivery of it within the duplicate window is still dropped.
    let mut info = stream.clone();
    assert_eq!(info.info().await.unwrap().state.messages, 0);
    assert_eq!(publish_events(&jetstream, &events, 1).await.unwrap(), 0);
    assert_eq!(info.info().await.unwrap().state.messages, 0);
}

/// A partition lost and taken back is a new holding: until the node has taken it over
/// anew (replayed, its actors retired: `Serving` names the new holding), it runs no turn
/// and starts no send under it, so events and actor state of the earlier holding never
/// commit under the new lease.
#[actix_web::test]
async fn a_partition_taken_back_is_not_served_until_taken_over_anew() {
    use colloquy::event::Channel;
    use colloquy::test_support::{
        ConversationKey, ConversationRecord, HeldLease, HeldLeases, LeaseReplicator, Replicator,
        SendPermission, Serving, TurnCommit,
    };

    let cluster = NatsCluster::start();
    let node = table(&cluster, "n1", Duration::from_secs(30)).await;
    let leases: HeldLeases = Default::default();
    let serving = Serving::default();
    let replicator =
        LeaseReplicator::new(node.clone(), leases.clone(), 1).with_serving(serving.clone());
    let key = ConversationKey::new("1001".to_string(), "u-held".to_string());
    let turn = TurnCommit {
        conversation: Some(ConversationRecord::new(&key)),
        ..TurnCommit::default()
    };
    let hold = |holding: u64, lease| {
        let held = HeldLease { lease, holding };
        leases.write().unwrap().insert(0, held);
    };

    hold(1, node.acquire(0).await.unwrap());
    assert!(
        !replicator.owns(Channel::Messenger, &key),
        "held, not yet served"
    );
    serving.serve(0, 1);
    assert!(replicator.owns(Channel::Messenger, &key));
    assert_eq!(
        replicator.may_send(Channel::Messenger, &key),
        SendPermission::Now
    );
    assert!(replicator.replicate_turn(&turn).await.is_ok());

    // Lost and taken back (a new lease, a new holding) before the node took it over anew.
    let first = leases.read().unwrap()[&0].lease.clone();
    let renewed = node.renew(&first).await.unwrap();
    hold(2, renewed);
    assert!(!replicator.owns(Channel::Messenger, &key));
    assert_eq!(
        replicator.may_send(Channel::Messenger, &key),
        SendPermission::Never
    );
    let refused = replicator.replicate_turn(&turn).await.unwrap_err();
    assert!(refused.contains("does not serve partition 0"), "{refused}");

    serving.serve(0, 2);
    assert!(replicator.owns(Channel::Messenger, &key));
    assert!(replicator.replicate_turn(&turn).await.is_ok());
}

/// What `consumer` delivers until it has `count` events (or 15 s passed).
async fn fetch_at_least(
    consumer: &colloquy::test_support::PartitionEvents,
    count: usize,
) -> Vec<colloquy::test_support::Delivered> {
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered.len() < count && Instant::now() < deadline {
        let batch = consumer.next_batch(100, Duration::from_millis(500));
        delivered.extend(batch.await.unwrap());
    }
    delivered
}

/// The engine with a replicator: every turn and send outcome goes to the cluster under the
/// partition's lease before the node's sled applies it; another node replays the same
/// conversation from the stream; once the lease moved on, the node commits nothing.
#[actix_web::test]
async fn an_engine_node_replicates_each_turn_and_outcome_and_commits_nothing_once_fenced() {
    use std::sync::Arc;

    use colloquy::test_support::{
        partition_of, replay_partition, start_replicated, ConversationKey, HeldLease, HeldLeases,
        LeaseReplicator, Store,
    };
    use helpers::*;

    const NODE_PARTITIONS: u32 = 4;
    let cluster = NatsCluster::start();
    let ttl = Duration::from_secs(3);
    let node = table(&cluster, "n1", ttl).await;
    let leases: HeldLeases = Default::default();
    for partition in 0..NODE_PARTITIONS {
        let lease = node.acquire(partition).await.unwrap();
        let held = HeldLease { lease, holding: 1 };
        leases.write().unwrap().insert(partition, held);
    }
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    let config = test_config(&graph, &dir.path().join("db"), &options);
    let replicator = LeaseReplicator::new(node.clone(), leases.clone(), NODE_PARTITIONS);
    let app = start_replicated(config, options.flow, Some(Arc::new(replicator)))
        .await
        .expect("the node starts");
    let base = format!("http://{}", app.addr());
    let post = |body: String| {
        let url = format!("{base}/webhook");
        async move {
            let signature =
                colloquy::test_support::sign_sha256(APP_SECRET.as_bytes(), body.as_bytes());
            awc::Client::new()
                .post(url)
                .insert_header(("X-Hub-Signature-256", signature))
                .insert_header(("Content-Type", "application/json"))
                .send_body(body)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(text_message("u-rep", "m.rep1", "hello", 1_000)).await,
        200
    );
    graph.wait_for_sends(1).await;
    let document = || async {
        awc::Client::new()
            .get(format!(
                "http://{}/admin/conversations/u-rep",
                app.admin_addr()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    // The node records the reply sent only once the cluster took the outcome.
    let deadline = Instant::now() + Duration::from_secs(15);
    while document().await["transcript"][1]["status"] != "sent" {
        assert!(Instant::now() < deadline, "{}", document().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another node rebuilds the conversation from the stream alone: the message, the
    // reply, and the reply's outcome (sent), with nothing left owed.
    let key = ConversationKey::new(PAGE_ID, "u-rep");
    let partition = partition_of(
        colloquy::event::Channel::Messenger,
        PAGE_ID,
        "u-rep",
        NODE_PARTITIONS,
    );
    let jetstream = cluster_connect(&cluster.urls()).await.unwrap();
    let stream = state_stream(&jetstream).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let replica = Store::open(&other.path().join("db")).unwrap();
    assert_eq!(
        replay_partition(&stream, partition, &replica)
            .await
            .unwrap(),
        2
    );
    let transcript = replica.transcript(&key).unwrap();
    assert_eq!(transcript.len(), 2, "{transcript:?}");
    assert_eq!(transcript[1].1.status, colloquy::test_support::Status::Sent);
    assert!(replica.pending_outbox().unwrap().is_empty());

    // The lease runs out and another node takes the partition: this node's next turn for
    // the conversation is refused by the cluster, so nothing is committed or sent.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let taker = table(&cluster, "n2", ttl).await;
    taker.acquire(partition).await.unwrap();
    assert_eq!(
        post(text_message("u-rep", "m.rep2", "again", 2_000)).await,
        200
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        graph.sends().len(),
        1,
        "a fenced-out node sends nothing new"
    );
    let doc = document().await;
    assert_eq!(
        doc["transcript"].as_array().unwrap().len(),
        2,
        "the refused turn is not in the node's store: {doc}"
    );

    // Once the node knows the partition is gone, an operator's action on the
    // conversation is refused as moving between nodes (503, try again), not failed.
    leases.write().unwrap().remove(&partition);
    let mut answer = awc::Client::new()
        .post(format!(
            "http://{}/admin/conversations/u-rep/pause",
            app.admin_addr()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    assert_eq!(answer.headers().get("retry-after").unwrap(), "1");
    assert!(answer.headers().contains_key("x-colloquy-not-served-here"));
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("moving between cluster nodes"),
        "{body}"
    );
    assert_eq!(document().await["paused"], false);
    app.stop().await.unwrap();
}

/// A cluster node on `cluster`, serving the echo flow with its own store in `dir`.
async fn start_node(
    cluster: &NatsCluster,
    graph: &helpers::MockGraph,
    dir: &std::path::Path,
    name: &str,
    partitions: u32,
    lease: Duration,
) -> colloquy::RunningApp {
    let options = helpers::Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..helpers::Options::default()
    };
    let config = helpers::test_config(graph, &dir.join(name), &options);
    let settings = colloquy::test_support::NodeSettings {
        urls: cluster.urls(),
        node: name.into(),
        partitions,
        lease_ttl: lease,
    };
    colloquy::test_support::start_node(config, options.flow, settings)
        .await
        .expect("the node starts")
}

/// POSTs a signed webhook body to `app`; the status.
async fn post_to(app: &colloquy::RunningApp, body: String) -> u16 {
    let signature =
        colloquy::test_support::sign_sha256(helpers::APP_SECRET.as_bytes(), body.as_bytes());
    awc::Client::new()
        .post(format!("http://{}/webhook", app.addr()))
        .insert_header(("X-Hub-Signature-256", signature))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body)
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// The texts the mock Graph API was asked to send to each user, in the order it got them.
fn replies_by_user(graph: &helpers::MockGraph) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut replies: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for send in graph.sends() {
        let user = send.body["recipient"]["id"].as_str().unwrap_or_default();
        let text = send.body["message"]["text"].as_str().unwrap_or_default();
        replies
            .entry(user.to_string())
            .or_default()
            .push(text.to_string());
    }
    replies
}

#[actix_web::test]
async fn nodes_take_webhooks_on_any_node_and_answer_each_message_once_in_order() {
    use helpers::*;
    const PARTITIONS: u32 = 6;
    const USERS: usize = 12;
    const MESSAGES: usize = 4;
    init_logging();
    let cluster = NatsCluster::start();
    table(&cluster, "ready", Duration::from_secs(1)).await;
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_millis(1500);
    let one = start_node(&cluster, &graph, dir.path(), "n1", PARTITIONS, lease).await;
    let two = start_node(&cluster, &graph, dir.path(), "n2", PARTITIONS, lease).await;
    let nodes = [&one, &two];
    for round in 0..MESSAGES {
        for user in 0..USERS {
            let body = text_message(
                &format!("u{user}"),
                &format!("m.{user}.{round}"),
                &format!("say {round}"),
                1_000 + round as i64,
            );
            // Each message to another node than the last: any node takes any event.
            let node = nodes[(user + round) % 2];
            assert_eq!(post_to(node, body).await, 200);
        }
    }
    sends_within(&graph, USERS * MESSAGES, Duration::from_secs(60)).await;
    // A little longer: a second send of any message would show here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies = replies_by_user(&graph);
    assert_eq!(replies.len(), USERS, "{replies:?}");
    for (user, texts) in &replies {
        let expected: Vec<String> = (0..MESSAGES).map(|round| format!("say {round}")).collect();
        assert_eq!(texts, &expected, "{user}'s replies, in the order sent");
    }
    // The partitions spread over both nodes (the second joined after the first took
    // them all), and each says how many it serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owned = [
            node_metric(&one, "colloquy_cluster_partitions_owned").await,
            node_metric(&two, "colloquy_cluster_partitions_owned").await,
        ];
        if owned == [3.0, 3.0] {
            break;
        }
        assert!(Instant::now() < deadline, "partitions owned: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Either node answers for every conversation: the one serving it from its store,
    // the other by forwarding to it.
    let wait_for_directory = Instant::now() + Duration::from_secs(20);
    for user in 0..USERS {
        let psid = format!("u{user}");
        for node in nodes {
            let (status, document) = loop {
                let (status, document) = admin_call(node, "GET", &psid, "").await;
                let complete =
                    document["transcript"].as_array().map_or(0, Vec::len) == 2 * MESSAGES;
                if complete || Instant::now() > wait_for_directory {
                    break (status, document);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(status, 200, "{document}");
            let transcript = document["transcript"].as_array().unwrap();
            assert_eq!(
                transcript.len(),
                2 * MESSAGES,
                "{psid} via {}: {document}",
                node.port()
            );
        }
    }
    // An operator's action through either node lands on the node serving the user.
    for user in ["u0", "u1", "u2"] {
        let (status, document) = admin_call(&one, "POST", &format!("{user}/pause"), "").await;
        assert_eq!(status, 200, "{document}");
        for node in nodes {
            let (_, document) = admin_call(node, "GET", user, "").await;
            assert_eq!(document["paused"], true, "{user}: {document}");
        }
    }
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// A request to a node's admin API about one conversation: its status and JSON.
async fn admin_call(
    node: &colloquy::RunningApp,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let url = format!("http://{}/admin/conversations/{path}", node.admin_addr());
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut response = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
        .request(method, url)
        .bearer_auth(helpers::ADMIN_TOKEN)
        .send_body(body.to_string())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let document = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, document)
}

/// One figure of a node's `/metrics`.
async fn node_metric(node: &colloquy::RunningApp, name: &str) -> f64 {
    let body = awc::Client::new()
        .get(format!("http://{}/metrics", node.admin_addr()))
        .bearer_auth(helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    helpers::metric_value(&String::from_utf8_lossy(&body), name)
}

/// Waits until the mock Graph API got `n` sends (a loaded machine running several NATS
/// clusters at once is slow; nothing here measures speed).
async fn sends_within(graph: &helpers::MockGraph, n: usize, patience: Duration) {
    let deadline = Instant::now() + patience;
    while graph.sends().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} sends: {:?}",
            graph.sends().len(),
            replies_by_user(graph)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `colloquy serve --cluster` process of the chaos test.
struct NodeProcess {
    name: String,
    port: u16,
    admin_port: u16,
    child: Option<std::process::Child>,
    log: Option<std::path::PathBuf>,
}

impl NodeProcess {
    fn new(name: &str) -> NodeProcess {
        NodeProcess {
            name: name.into(),
            port: free_port(),
            admin_port: free_port(),
            child: None,
            log: None,
        }
    }

    /// Starts (or restarts, on the same data directory) the node's process.
    fn start(&mut self, cluster: &NatsCluster, graph: &helpers::MockGraph, dir: &std::path::Path) {
        use helpers::*;
        let log_path = dir.join(format!("{}.log", self.name));
        let log = std::fs::File::create(&log_path).unwrap();
        self.log = Some(log_path);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .args(["serve", "--flow", "echo", "--node", &self.name])
            .env("COLLOQUY_NATS_URL", cluster.urls())
            .env("COLLOQUY_PARTITIONS", CHAOS_PARTITIONS.to_string())
            .env("COLLOQUY_LEASE_MS", "3000")
            .env("MESSENGER_VERIFY_TOKEN", VERIFY_TOKEN)
            .env("MESSENGER_APP_SECRET", APP_SECRET)
            .env("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("MESSENGER_GRAPH_URL", &graph.url)
            .env("COLLOQUY_BIND", format!("127.0.0.1:{}", self.port))
            .env(
                "COLLOQUY_ADMIN_BIND",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .env("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COLLOQUY_DATA", dir.join(&self.name))
            .env("COLLOQUY_WORKERS", "1")
            .env(
                "RUST_LOG",
                "colloquy=info,colloquy::engine::sender=debug,colloquy::engine::conversation=debug",
            )
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the node starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Everything the node's process logged so far (empty before it started).
    fn log_text(&self) -> String {
        let log = self.log.as_ref();
        log.and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The last lines of the node's log.
    fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The node's log lines about `user`'s conversation and about partitions.
    fn log_about(&self, user: &str) -> String {
        let needle = format!("psid {user}:");
        let lines: Vec<String> = self
            .log_text()
            .lines()
            .filter(|line| line.contains(&needle) || line.contains("partition"))
            .map(|line| format!("{}| {line}", self.name))
            .collect();
        lines.join("\n")
    }

    async fn wait_ready(&self) {
        let url = format!(
            "http://127.0.0.1:{}/webhook?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1",
            self.port,
            helpers::VERIFY_TOKEN
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = awc::Client::new().get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became ready; its log ends:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's document of a conversation, from its admin API.
    async fn conversation(&self, psid: &str) -> Option<serde_json::Value> {
        let mut response = awc::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/admin/conversations/{psid}",
                self.admin_port
            ))
            .bearer_auth(helpers::ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

const CHAOS_PARTITIONS: u32 = 6;

/// One user writing to the cluster as Facebook would: each message POSTed until some
/// node answers 200 (a refused or unanswered POST is redelivered, to another node), the
/// next only after. Returns the messages acknowledged, in order.
async fn write_until(
    user: String,
    ports: Vec<u16>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut acked = Vec::new();
    let mut attempt = 0usize;
    for n in 0.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let text = format!("{user} says {n}");
        let body = helpers::text_message(&user, &format!("m.{user}.{n}"), &text, 1_000 + n);
        let signature =
            colloquy::test_support::sign_sha256(helpers::APP_SECRET.as_bytes(), body.as_bytes());
        loop {
            attempt += 1;
            let port = ports[attempt % ports.len()];
            let answer = client
                .post(format!("http://127.0.0.1:{port}/webhook"))
                .insert_header(("X-Hub-Signature-256", signature.clone()))
                .insert_header(("Content-Type", "application/json"))
                .send_body(body.clone())
                .await;
            if answer.is_ok_and(|response| response.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked.push(text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acked
}

/// How many replies first left after a reply to a later message (each counted once).
fn overtaken(firsts: &[&String], written: &[String]) -> usize {
    let order = |text: &String| written.iter().position(|t| t == text).unwrap_or(usize::MAX);
    let mut latest = None;
    let mut late = 0;
    for text in firsts {
        let at = order(text);
        if latest.is_some_and(|latest| at < latest) {
            late += 1;
        } else {
            latest = Some(at);
        }
    }
    late
}

/// Every node's log lines about `user` and about partitions, for a failure's message.
fn nodes_log_about(nodes: &[NodeProcess], user: &str) -> String {
    nodes
        .iter()
        .map(|node| node.log_about(user))
        .collect::<Vec<_>>()
        .join("\n")
}

/// While `observing`, polls the partitions' leases every 100 ms and counts, per partition, the
/// times its holder went away: replaced by another node, or its lease run out. A poll
/// that cannot read the leases (a NATS server down) is skipped.
async fn count_handovers(
    table: LeaseTable,
    observing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<usize> {
    let mut last: Vec<Option<String>> = vec![None; CHAOS_PARTITIONS as usize];
    let mut went_away = vec![0; CHAOS_PARTITIONS as usize];
    while observing.load(std::sync::atomic::Ordering::Relaxed) {
        for partition in 0..CHAOS_PARTITIONS {
            let Ok(holder) = table.holder(partition).await else {
                continue;
            };
            let holder = live_holder(holder);
            let slot = partition as usize;
            if last[slot].is_some() && holder != last[slot] {
                went_away[slot] += 1;
            }
            last[slot] = holder;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    went_away
}

/// How long until every partition has a live holder among `live`, polling the leases.
async fn partitions_held_by(table: &LeaseTable, live: &[&str]) -> Duration {
    let started = Instant::now();
    loop {
        let holders = holders(table, CHAOS_PARTITIONS).await;
        if holders
            .iter()
            .all(|holder| holder.as_deref().is_some_and(|node| live.contains(&node)))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "partitions never moved to {live:?}: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_cluster_loses_a_node_then_a_nats_server_and_no_acknowledged_message_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const USERS: usize = 12;
    let mut cluster = NatsCluster::start();
    let leases = table(&cluster, "observer", Duration::from_secs(3)).await;
    let graph = helpers::MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<NodeProcess> = ["c1", "c2", "c3"]
        .iter()
        .map(|n| NodeProcess::new(n))
        .collect();
    for node in nodes.iter_mut() {
        node.start(&cluster, &graph, dir.path());
    }
    for node in &nodes {
        node.wait_ready().await;
    }
    partitions_held_by(&leases, &["c1", "c2", "c3"]).await;

    // Signed webhook load spread over every node, while the chaos happens; and an
    // observer counting every time a partition's holder went away (replaced, or its
    // lease ran out), which is what bounds repeated sends.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let observing = std::sync::Arc::new(AtomicBool::new(true));
    let handovers = actix_rt::spawn(count_handovers(leases.clone(), observing.clone()));
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let writers: Vec<_> = (0..USERS)
        .map(|user| {
            let mut ports = ports.clone();
            ports.rotate_left(user % 3);
            actix_rt::spawn(write_until(format!("u{user}"), ports, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. A colloquy node dies: its partitions move to the two others.
    nodes[1].kill();
    let failover = partitions_held_by(&leases, &["c1", "c3"]).await;
    eprintln!("failover after SIGKILL of a node (lease 3 s): {failover:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. Later, a NATS server dies: the streams keep their majority.
    cluster.kill_server(2);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 3. Both come back: the node rejoins and gets its share again.
    cluster.start_server(2);
    nodes[1].start(&cluster, &graph, dir.path());
    nodes[1].wait_ready().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = std::collections::BTreeMap::new();
    for (user, writer) in writers.into_iter().enumerate() {
        acked.insert(format!("u{user}"), writer.await.unwrap());
    }
    let total: usize = acked.values().map(Vec::len).sum();
    eprintln!("{total} messages acknowledged by the cluster");

    // Every acknowledged message is answered.
    let deadline = Instant::now() + Duration::from_secs(120);
    let missing = |replies: &std::collections::BTreeMap<String, Vec<String>>| {
        acked
            .iter()
            .flat_map(|(user, texts)| {
                let sent = replies.get(user).cloned().unwrap_or_default();
                texts
                    .iter()
                    .filter(move |text| !sent.contains(text))
                    .map(|text| text.to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<String>>()
    };
    loop {
        let unanswered = missing(&replies_by_user(&graph));
        if unanswered.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let user = unanswered[0].split(' ').next().unwrap_or_default();
            panic!(
                "{} acknowledged messages never answered, e.g. {:?}\n{}",
                unanswered.len(),
                &unanswered[..unanswered.len().min(5)],
                nodes_log_about(&nodes, user)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    observing.store(false, Ordering::Relaxed);
    let handovers = handovers.await.unwrap();
    eprintln!("holders went away per partition: {handovers:?}");
    let replies = replies_by_user(&graph);
    let (mut duplicates, mut overtaken_total) = (0, 0);
    for (user, texts) in &acked {
        let sent = &replies[user];
        // Each conversation's replies left in the order its messages were handled
        // (which is the order they were written), but for the sends in flight when its
        // partition's holder went away: such a send may arrive after the next holder's
        // and be repeated by it. One per handover at most, plus one for an outcome
        // write lost with the NATS server that died.
        let partition = colloquy::test_support::partition_of(
            colloquy::event::Channel::Messenger,
            helpers::PAGE_ID,
            user,
            CHAOS_PARTITIONS,
        );
        let bound = handovers[partition as usize] + 1;
        let mut firsts: Vec<&String> = Vec::new();
        for text in sent {
            if !firsts.contains(&text) {
                firsts.push(text);
            }
        }
        let mut sorted = firsts.clone();
        sorted.sort_by_key(|text| texts.iter().position(|t| t == *text));
        let expected: Vec<&String> = texts.iter().collect();
        assert_eq!(sorted, expected, "{user}: every reply sent");
        let overtaken = overtaken(&firsts, texts);
        if overtaken > bound {
            let logs: Vec<String> = nodes.iter().map(|node| node.log_about(user)).collect();
            panic!(
                "{user}: {overtaken} replies left after a later one (bound {bound}): \
                 {firsts:?}\n{}",
                logs.join("\n")
            );
        }
        overtaken_total += overtaken;
        let repeated = sent.len() - firsts.len();
        assert!(
            repeated <= bound,
            "{user}: {repeated} replies sent twice (bound {bound}): {sent:?}"
        );
        duplicates += repeated;
    }
    eprintln!(
        "{duplicates} repeated sends, {overtaken_total} replies overtaken, over {USERS} conversations"
    );

    // The transcript of each conversation is complete on the node holding it now.
    let holders = holders(&leases, CHAOS_PARTITIONS).await;
    for (user, texts) in &acked {
        let partition = colloquy::test_support::partition_of(
            colloquy::event::Channel::Messenger,
            helpers::PAGE_ID,
            user,
            CHAOS_PARTITIONS,
        );
        let owner = holders[partition as usize].clone().expect("a holder");
        let node = nodes.iter().find(|node| node.name == owner).unwrap();
        let document = node.conversation(user).await.expect("the owner has it");
        let transcript = document["transcript"].as_array().unwrap();
        let inbound: Vec<&str> = transcript
            .iter()
            .filter(|entry| entry["direction"] == "in")
            .filter_map(|entry| entry["text"].as_str())
            .collect();
        let expected: Vec<&str> = texts.iter().map(String::as_str).collect();
        if inbound != expected {
            let first_out_of_order = inbound
                .iter()
                .zip(&expected)
                .position(|(got, wanted)| got != wanted);
            panic!(
                "{user}'s transcript on {owner} differs from what was acknowledged from entry \
                 {first_out_of_order:?}:\n got: {:?}\nwanted: {:?}\n{}",
                &inbound[first_out_of_order.unwrap_or(0).saturating_sub(3)..],
                &expected[first_out_of_order.unwrap_or(0).saturating_sub(3)..],
                nodes_log_about(&nodes, user)
            );
        }
        let unsent = transcript
            .iter()
            .filter(|entry| entry["direction"] == "out" && entry["status"] != "sent")
            .count();
        assert_eq!(unsent, 0, "{user} on {owner}: {document}");
    }
}

#[actix_web::test]
async fn concurrent_writes_under_one_lease_all_land() {
    // A clustered stream replicates one write checked against a given subject at a time
    // and refuses the others meanwhile (code 10164): that is contention, not fencing.
    let cluster = NatsCluster::start();
    let node = table(&cluster, "n1", Duration::from_secs(30)).await;
    let lease = node.acquire(0).await.unwrap();
    let writes = (0..24).map(|n| {
        let (node, lease) = (node.clone(), lease.clone());
        async move {
            node.publish_fenced(&lease, format!("colloquy.conv.0.c{n}"), Bytes::from("x"))
                .await
        }
    });
    let sequences = futures_util::future::join_all(writes).await;
    let mut landed: Vec<u64> = sequences
        .into_iter()
        .map(|written| written.expect("every write lands"))
        .collect();
    landed.sort_unstable();
    landed.dedup();
    assert_eq!(landed.len(), 24);
}
