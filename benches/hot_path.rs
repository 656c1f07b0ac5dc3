//! Micro-benchmarks of the webhook's hot path: signature verification, envelope parsing,
//! and the store's durable commit of one event (journal append, then the turn), through
//! the real committer and sled in a temporary directory.
//!
//! Run with: `cargo bench --bench hot_path`. Figures go to docs/performance.md; nothing
//! here asserts a speed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use colloquy::event::parse_envelope;
use colloquy::test_support::{sign_sha256, verify};
use colloquy::test_support::{
    ConversationKey, ConversationRecord, Direction, JournalRecord, ListFilter, Status, Store,
    TranscriptEntry, TurnCommit,
};

const SECRET: &[u8] = b"bench-app-secret";

fn envelope(events: usize) -> String {
    let items: Vec<String> = (0..events)
        .map(|i| {
            format!(
                r#"{{"sender":{{"id":"{}"}},"recipient":{{"id":"1000"}},"timestamp":{},"message":{{"mid":"m.{i}","text":"hello number {i}"}}}}"#,
                20_000 + i,
                1_700_000_000_000u64 + i as u64
            )
        })
        .collect();
    format!(
        r#"{{"object":"page","entry":[{{"id":"1000","time":1,"messaging":[{}]}}]}}"#,
        items.join(",")
    )
}

fn signature(c: &mut Criterion) {
    let body = envelope(1);
    let header = sign_sha256(SECRET, body.as_bytes());
    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify sha256, one-event body", |b| {
        b.iter(|| verify(SECRET, body.as_bytes(), Some(header.as_bytes()), None))
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_envelope");
    for events in [1, 16] {
        let body = envelope(events);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("{events} event(s)"), |b| {
            b.iter(|| parse_envelope(body.as_bytes()).expect("valid"))
        });
    }
    group.finish();
}

fn turn(seq: u64, n: u64) -> TurnCommit {
    let key = ConversationKey::new("1000", format!("{}", 20_000 + n % 64));
    let mut record = ConversationRecord::new(&key);
    let entry = record.take_entry_seq();
    TurnCommit {
        journal_seq: Some(seq),
        handled: Some(("1000".into(), format!("m.{n}"))),
        new_entries: vec![(
            entry,
            TranscriptEntry {
                direction: Direction::In,
                mid: Some(format!("m.{n}")),
                timestamp: 1,
                kind: "text".into(),
                text: Some("hello".into()),
                status: Status::Handled,
                sent_at: None,
                echo_timestamp: None,
                error: None,
                payload: None,
                late: false,
                by_operator: false,
            },
        )],
        conversation: Some(record),
        ..TurnCommit::default()
    }
}

fn store_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db")).expect("store opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let record = JournalRecord {
        page_id: "1000".into(),
        channel: Default::default(),
        standby: false,
        event: serde_json::json!({"sender": {"id": "20000"}, "message": {"mid": "m", "text": "hello"}}),
    };
    let mut n = 0u64;
    let mut group = c.benchmark_group("store");
    group.bench_function("durable journal append + durable turn (one writer)", |b| {
        b.iter_batched(
            || {
                n += 1;
                n
            },
            |n| {
                runtime.block_on(async {
                    let seq = store
                        .append_journal(vec![record.clone()])
                        .await
                        .expect("append");
                    store.commit_turn(turn(seq, n), true).await.expect("commit");
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The admin list's first page among a million conversations, from the activity index:
/// all of them, and a filter that matches one in a hundred.
fn admin_list(c: &mut Criterion) {
    const CONVERSATIONS: usize = 1_000_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db")).expect("store opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for chunk in 0..CONVERSATIONS / 10_000 {
            let commits: Vec<_> = (0..10_000)
                .map(|i| {
                    let n = chunk * 10_000 + i;
                    let key = ConversationKey::new("1000", format!("{}", 10_000_000 + n));
                    let mut record = ConversationRecord::new(&key);
                    record.last_activity = 1_700_000_000_000 + n as i64 * 10;
                    record.paused = n % 100 == 0;
                    let commit = TurnCommit {
                        conversation: Some(record),
                        ..TurnCommit::default()
                    };
                    store.commit_turn(commit, false)
                })
                .collect();
            for written in futures_util::future::join_all(commits).await {
                written.expect("written");
            }
        }
        store.flush().await.expect("flushed");
    });
    let mut group = c.benchmark_group("admin list among 1,000,000 conversations");
    let all = ListFilter::default();
    group.bench_function("first page of 50", |b| {
        b.iter(|| store.list_conversations(&all, None, 50).expect("listed"))
    });
    let paused = ListFilter {
        paused: Some(true),
        ..ListFilter::default()
    };
    group.bench_function("first page of 50 paused (1 in 100)", |b| {
        b.iter(|| store.list_conversations(&paused, None, 50).expect("listed"))
    });
    group.finish();
}

criterion_group!(benches, signature, parsing, store_commit, admin_list);
criterion_main!(benches);
