//! Restarts on the same data directory: each test runs the engine for one or more lives
//! (`one_life`) and checks what the next life finds in sled: state and transcript, the
//! dedup marks, and the journal (emptied once everything in it is handled, replayed only
//! for what was not).

use serde_json::json;

use crate::helpers::*;

#[test]
fn state_and_transcript_survive_a_server_restart() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let phase = |text: &'static str, mid: &'static str, expected_sends: usize| {
        one_life(&graph, &data_dir, Options::default(), async |app| {
            let body = text_message("9001", mid, text, 1_000 + expected_sends as i64);
            assert_eq!(app.post_signed(&body).await.status, 200);
            app.graph.wait_for_sends(expected_sends).await;
            app.wait_for_conversation("9001", |d| {
                outbound(d).len() == expected_sends
                    && outbound(d).iter().all(|e| e["status"] == "sent")
            })
            .await
        })
    };
    phase("before", "m.r1", 1);
    // Same data directory, new process state: everything comes from sled.
    let doc = phase("after", "m.r2", 2);
    assert_eq!(doc["state"]["messages"], 2);
    let texts: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["before", THANKS, "after", THANKS]);
    assert_eq!(
        graph.sends().len(),
        2,
        "nothing was sent twice across the restart"
    );
}

/// sled's snapshot files in a data directory, by the log position each covers.
fn snapshot_positions(data_dir: &std::path::Path) -> Vec<u64> {
    let mut positions: Vec<u64> = std::fs::read_dir(data_dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .collect();
    positions.sort_unstable();
    positions
}

#[test]
fn a_graceful_stop_folds_the_run_into_a_snapshot_so_the_next_start_replays_nothing() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let mut folded = Vec::new();
    for (life, mid) in ["m.f1", "m.f2"].into_iter().enumerate() {
        one_life(&graph, &data_dir, Options::default(), async |app| {
            let body = text_message("9051", mid, "fold", 1_000 + life as i64);
            assert_eq!(app.post_signed(&body).await.status, 200);
            app.wait_for_conversation("9051", |d| {
                outbound(d).len() == life + 1 && outbound(d).iter().all(|e| e["status"] == "sent")
            })
            .await;
        });
        let positions = snapshot_positions(&data_dir);
        assert_eq!(
            positions.len(),
            1,
            "after life {life}: one snapshot, written at the stop (a new store has none): {positions:?}"
        );
        folded.push(positions[0]);
    }
    assert!(
        folded[1] > folded[0],
        "the second stop's snapshot covers the second life's writes: {folded:?}"
    );
    let doc = one_life(&graph, &data_dir, Options::default(), async |app| {
        app.wait_for_conversation("9051", |d| outbound(d).len() == 2)
            .await
    });
    assert_eq!(
        doc["state"]["messages"], 2,
        "both lives' turns are still there"
    );
    assert_eq!(graph.sends().len(), 2);
}

#[test]
fn a_redelivery_after_a_restart_is_still_skipped() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let body = text_message("9101", "m.across", "once", 1_000);
    for round in 0..2 {
        one_life(&graph, &data_dir, Options::default(), async |app| {
            assert_eq!(app.post_signed(&body).await.status, 200);
            // A later message is the barrier: once it is answered, the redelivery was handled.
            let barrier =
                text_message("9101", &format!("m.barrier{round}"), "later", 2_000 + round);
            assert_eq!(app.post_signed(&barrier).await.status, 200);
            app.wait_for_conversation("9101", |d| {
                outbound(d).len() == 2 + round as usize
                    && outbound(d).iter().all(|e| e["status"] == "sent")
            })
            .await;
        });
    }
    let to_once = graph.sends().len();
    assert_eq!(
        to_once, 3,
        "one reply to the message and one per barrier, none to the redelivery"
    );
}

#[test]
fn a_post_of_several_events_is_one_journal_item_removed_once_all_are_handled() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        message_event("9201", "m.j1", "one", 10),
        message_event("9202", "m.j2", "two", 11),
        message_event("9201", "m.j3", "three", 12),
    ]})]);
    one_life(&graph, &data_dir, Options::default(), async |app| {
        assert_eq!(app.post_signed(&body).await.status, 200);
        app.graph.wait_for_sends(3).await;
        app.wait_for_conversation("9201", |d| outbound(d).len() == 2)
            .await;
    });
    let store = colloquy::test_support::Store::open(&data_dir).unwrap();
    assert!(store.pending_journal().unwrap().is_empty());
}

#[test]
fn a_shared_journal_item_replayed_after_a_crash_answers_only_what_was_not_handled() {
    use colloquy::test_support::{JournalRecord, Store, TurnCommit};
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    // As a crash would leave it: one POST's item with three events, the first two turns
    // committed (their dedup marks are there: the first as this build writes it, ordered
    // by the event's time; the second as earlier builds did), the third one's not.
    actix_rt::System::new().block_on({
        let data_dir = data_dir.clone();
        async move {
            let store = Store::open(&data_dir).unwrap();
            let record = |psid: &str, mid: &str| JournalRecord {
                page_id: PAGE_ID.into(),
                channel: Default::default(),
                standby: false,
                event: message_event(psid, mid, "hello", 5),
            };
            let item = vec![
                record("9301", "m.s1"),
                record("9303", "m.s3"),
                record("9302", "m.s2"),
            ];
            store.append_journal(item).await.unwrap();
            let handled = TurnCommit {
                handled: Some((PAGE_ID.into(), "m.s1".into())),
                handled_at: Some(5),
                ..TurnCommit::default()
            };
            store.commit_turn(handled, true).await.unwrap();
            let handled_by_an_earlier_build = TurnCommit {
                handled: Some((PAGE_ID.into(), "m.s3".into())),
                ..TurnCommit::default()
            };
            store
                .commit_turn(handled_by_an_earlier_build, true)
                .await
                .unwrap();
        }
    });
    wait_until_the_store_is_let_go(&data_dir);
    one_life(&graph, &data_dir, Options::default(), async |app| {
        let sends = app.graph.wait_for_sends(1).await;
        assert_eq!(sends[0].body["recipient"]["id"], "9302");
        app.wait_for_first_reply("9302", "sent").await;
    });
    assert_eq!(
        graph.sends().len(),
        1,
        "the handled events are not answered again"
    );
    let store = Store::open(&data_dir).unwrap();
    assert!(
        store.pending_journal().unwrap().is_empty(),
        "the item is gone"
    );
}
