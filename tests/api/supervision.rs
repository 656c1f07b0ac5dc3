//! The supervisor under a conversation whose storage fails: the failure stays with that
//! conversation, its acknowledged events stay in the journal, and once the fault is gone
//! a restart replays them.

use crate::helpers::*;

/// Writes garbage where a conversation's record lives, as a disk fault would.
fn corrupt_conversation(data_dir: &std::path::Path, psid: &str) {
    with_raw_tree(data_dir, |tree| {
        tree.insert(
            colloquy::test_support::keys::conversation(PAGE_ID, psid),
            &b"\xff not json"[..],
        )
        .unwrap();
    });
}

fn repair_conversation(data_dir: &std::path::Path, psid: &str) {
    with_raw_tree(data_dir, |tree| {
        tree.remove(colloquy::test_support::keys::conversation(PAGE_ID, psid))
            .unwrap();
    });
}

/// Changes the store's tree behind the engine's back, then waits until sled has let go
/// of the directory: its threads release the lock a moment after the last handle drops,
/// and on a loaded machine the next start could otherwise find it still locked.
fn with_raw_tree(data_dir: &std::path::Path, change: impl FnOnce(&sled::Tree)) {
    let db = sled::open(data_dir).unwrap();
    change(&db.open_tree("colloquy").unwrap());
    db.flush().unwrap();
    drop(db);
    wait_until_the_store_is_let_go(data_dir);
}

#[test]
fn a_failing_conversation_is_isolated_restarted_and_loses_nothing() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    corrupt_conversation(&data_dir, "16001");
    one_life(&graph, &data_dir, Options::default(), async |app| {
        let broken = text_message("16001", "m.broken", "hello?", 1_000);
        assert_eq!(
            app.post_signed(&broken).await.status,
            200,
            "acked: it is journalled"
        );
        let healthy = text_message("16002", "m.healthy", "hi", 1_001);
        assert_eq!(app.post_signed(&healthy).await.status, 200);
        let sends = app.graph.wait_for_sends(1).await;
        assert_eq!(
            sends[0].body["recipient"]["id"], "16002",
            "other conversations go on"
        );
        // Let the supervisor restart the broken one a few times (50, 100, 200 ms...).
        actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(
            app.graph.sends().len(),
            1,
            "the broken conversation never answered"
        );
    });
    // The operator repairs the record; the acknowledged event is still in the journal.
    repair_conversation(&data_dir, "16001");
    one_life(&graph, &data_dir, Options::default(), async |app| {
        let sends = app.graph.wait_for_sends(2).await;
        assert_eq!(sends[1].body["recipient"]["id"], "16001");
        assert_eq!(sends[1].body["message"]["text"], THANKS);
    });
}

#[test]
fn a_failing_conversation_holds_back_only_its_own_event_of_a_shared_journal_item() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    corrupt_conversation(&data_dir, "16101");
    // One POST, two conversations: one journal item shared by both events.
    let body = envelope(vec![
        serde_json::json!({"id": PAGE_ID, "time": 1, "messaging": [
            message_event("16101", "m.shared-broken", "hello?", 1_000),
            message_event("16102", "m.shared-healthy", "hi", 1_001),
        ]}),
    ]);
    one_life(&graph, &data_dir, Options::default(), async |app| {
        assert_eq!(app.post_signed(&body).await.status, 200);
        let sends = app.graph.wait_for_sends(1).await;
        assert_eq!(sends[0].body["recipient"]["id"], "16102");
        // Restarts replay the broken conversation's event only, never the other one.
        actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(app.graph.sends().len(), 1);
    });
    let store = colloquy::test_support::Store::open(&data_dir).unwrap();
    assert_eq!(
        store.pending_journal().unwrap().len(),
        1,
        "kept for the broken one"
    );
    drop(store);
    repair_conversation(&data_dir, "16101");
    one_life(&graph, &data_dir, Options::default(), async |app| {
        let sends = app.graph.wait_for_sends(2).await;
        assert_eq!(sends[1].body["recipient"]["id"], "16101");
        app.wait_for_first_reply("16101", "sent").await;
    });
    assert_eq!(graph.sends().len(), 2, "each event answered once");
    let store = colloquy::test_support::Store::open(&data_dir).unwrap();
    assert!(
        store.pending_journal().unwrap().is_empty(),
        "the item is gone"
    );
}
